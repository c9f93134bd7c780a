//! Background processes started by `up` and `quickstart` (serve and kit daemons): each is
//! detached into its own process group with a pid file and a log under `~/.aegis/`, so a
//! later `up` sees it running and `down` stops it.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::CliError;

/// `~/.aegis/NAME.pid`.
pub fn pid_file(name: &str) -> PathBuf {
    tether::paths::aegis_home().join(format!("{name}.pid"))
}

/// `~/.aegis/NAME.log`.
pub fn log_file(name: &str) -> PathBuf {
    tether::paths::aegis_home().join(format!("{name}.log"))
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; it counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

/// The pid of daemon `name` if its pid file names a live process.
pub fn running(name: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(name)).ok()?.trim().parse().ok()?;
    (pid > 1 && alive(pid)).then_some(pid)
}

/// Start `program args` detached as daemon `name`; returns its pid.
pub fn start(name: &str, program: &Path, args: &[&str]) -> Result<i32, CliError> {
    let home = tether::paths::aegis_home();
    fs::create_dir_all(&home).map_err(|e| CliError::Other(format!("{}: {e}", home.display())))?;
    let log_path = log_file(name);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError::Other(format!("{}: {e}", log_path.display())))?;
    let err = log.try_clone().map_err(|e| CliError::Other(e.to_string()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0) // not killed by the terminal's Ctrl-C
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot start {}: {e}", program.display())))?;
    let pid = child.id() as i32;
    fs::write(pid_file(name), pid.to_string()).map_err(|e| CliError::Other(format!("pid file: {e}")))?;
    Ok(pid)
}

/// Stop daemon `name` (SIGTERM, then SIGKILL after 10 s); false if it was not running.
pub fn stop(name: &str) -> bool {
    let Some(pid) = running(name) else {
        let _ = fs::remove_file(pid_file(name));
        return false;
    };
    // SAFETY: kill(2) on a pid we started; no memory is involved.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = fs::remove_file(pid_file(name));
    true
}

/// Start serve unless something answers on `socket`; true if it was started now.
pub fn ensure_serve(socket: &Path) -> Result<bool, CliError> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Ok(false);
    }
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.to_string()))?;
    let sock = socket.to_string_lossy().into_owned();
    start("serve", &exe, &["--socket", &sock, "serve"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "aegis-kit serve did not come up; see {}",
                log_file("serve").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// A kit binary: beside this executable, else the first executable match on PATH.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    beside
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        }))
        .find(|p| executable(p))
}
