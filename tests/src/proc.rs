//! Running the real binaries: find them, start them with a clean environment, capture
//! their logs, wait for a log line, kill them (politely or with SIGKILL).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`aegis-agent`, `aegis-gateway`, `aegis-kit`) built by
/// `cargo test --workspace` / `cargo build` next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/test-hash → target/debug/name
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A fresh, empty temporary folder unique to this test, removed with its contents
/// when the returned guard drops (also when the test fails).
pub fn temp_dir(name: &str) -> TempDir {
    TempDir(fresh_dir(name))
}

fn fresh_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("aegis-e2e-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A temporary folder removed with everything in it when dropped (also when the test
/// fails and unwinds).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty folder unique to this test.
    pub fn new(name: &str) -> TempDir {
        TempDir(fresh_dir(name))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Processes whose command line contains `marker` (a unique argument such as
/// `sleep 30.731`), so a test can prove none was left behind.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Variables of the machine's network setup that change where HTTPS clients connect and
/// what they trust; a test that wants one sets it.
pub use tether::http::NETWORK_VARS;

/// Remove the machine's [`NETWORK_VARS`] from `cmd`'s environment (a bench measures the
/// binaries as deployed, not with this machine's 145-certificate `SSL_CERT_FILE`).
pub fn without_network_vars(cmd: &mut Command) -> &mut Command {
    for var in NETWORK_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// A command for `name` with an environment free of the developer's keys and settings
/// and of the machine's proxies and certificate bundles.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    without_network_vars(&mut c);
    for (k, _) in std::env::vars() {
        if k.starts_with("AEGIS_")
            || k.starts_with("OPENAI_")
            || k.starts_with("ANTHROPIC_")
            || k.starts_with("TELEGRAM_")
            || k.starts_with("BRAVE_")
        {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "debug");
    c
}

/// A running child process whose output is captured.
pub struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Start `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Proc { child, log }
    }

    /// Everything printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the output contains `needle`; panics with the log on timeout.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        self.wait_for_any(&[needle], timeout);
    }

    /// Wait until the output contains one of `needles`: which one (the first in the list
    /// when several did); panics with the log on timeout.
    pub fn wait_for_any(&self, needles: &[&str], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(i) = needles.iter().position(|n| log.contains(n)) {
                return i;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {needles:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process holds still (its sockets stay open, nothing answers) until
    /// the guard returned is dropped, also when a test fails in between.
    pub fn pause(&self) -> Paused {
        signal(self.pid(), "-STOP");
        Paused(self.pid())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then wait up to `timeout` for exit; returns the exit status if it exited.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        signal(self.pid(), "-TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// A process stopped by [`Proc::pause`]; it goes on (SIGCONT) when this is dropped.
#[must_use = "the process goes on as soon as this is dropped"]
pub struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // A failing test shows what the process said last (the harness prints it).
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" ureq")).collect();
            eprintln!("--- last lines of {:?} ---", self.child.id());
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// A free TCP port on loopback (bound then released: another process may take it before
/// the one it is for binds it, so a caller starting a server on it retries on a new one
/// when that happens, as [`crate::agent::start_agent_with`] does).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
