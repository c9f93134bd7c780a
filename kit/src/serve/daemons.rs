//! Per-instance daemons (current AegisVM's `instance_daemons`): for an instance made
//! from a kit whose manifest lists them (the agent kit: `aegis-gateway`), serve runs one
//! of each beside the instance, with `AEGIS_INSTANCE=<name>` and `AEGIS_SOCKET`.
//!
//! One thread per daemon owns its process: start it once its per-instance config
//! (`~/.aegis/kits/<name>/gateway.json`) exists, restart it after a crash with a
//! growing backoff, give up after 5 crashes within 2 minutes, leave it down after an
//! exit with status 0 ("do not restart"), and stop it (SIGTERM, then SIGKILL) when the
//! instance is deleted or serve stops. Output goes to `daemon-<name>.log` in the
//! instance's folder.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, bounded, select, Receiver, Sender};

use super::registry::InstanceDef;
use super::secrets::Secrets;

/// Crashes within `CRASH_WINDOW` that make serve give up on a daemon.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(120);
/// How often a daemon without its config is looked at again.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// The running daemons of one instance; dropping it stops them.
pub struct Daemons {
    /// Closed to stop every daemon thread.
    stop: Option<Sender<()>>,
    /// The threads, joined on drop so a deleted instance leaves no process behind.
    threads: Vec<thread::JoinHandle<()>>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one daemon needs.
#[derive(Clone)]
struct Spec {
    instance: InstanceDef,
    program: PathBuf,
    label: String,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    secrets: Arc<Secrets>,
}

/// Start the daemons `names` of `def` (none: `None`).
pub fn start(
    def: &InstanceDef,
    names: &[String],
    dir: &std::path::Path,
    socket: &std::path::Path,
    secrets: &Arc<Secrets>,
) -> Option<Daemons> {
    if names.is_empty() {
        return None;
    }
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let mut threads = Vec::new();
    for name in names {
        let label = std::path::Path::new(name)
            .file_name()
            .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
        let spec = Spec {
            instance: def.clone(),
            program: crate::sibling_binary(name),
            config: tether::paths::aegis_home()
                .join("kits")
                .join(&def.name)
                .join("gateway.json"),
            socket: socket.to_path_buf(),
            log: dir.join(format!("daemon-{label}.log")),
            label,
            secrets: Arc::clone(secrets),
        };
        let rx = stop_rx.clone();
        match thread::Builder::new()
            .name("daemon".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&spec, &rx))
        {
            Ok(t) => threads.push(t),
            Err(e) => log::error!("{}: cannot start a daemon thread: {e}", def.name),
        }
    }
    Some(Daemons {
        stop: Some(stop_tx),
        threads,
    })
}

fn run(spec: &Spec, stop: &Receiver<()>) {
    let who = format!("{}: daemon {}", spec.instance.name, spec.label);
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        if !spec.config.exists() {
            // Like `up`: no config, no daemon; looked at again until it appears.
            select! {
                recv(stop) -> _ => return,
                recv(after(CONFIG_POLL)) -> _ => continue,
            }
        }
        let mut child = match spawn(spec) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{who}: cannot start {}: {e}", spec.program.display());
                return;
            }
        };
        let pid = child.id();
        log::info!("{who} started (pid {pid})");
        let (exit_tx, exit_rx) = bounded(1);
        let waiter = thread::Builder::new()
            .name("daemon-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = exit_tx.send(child.wait().ok().and_then(|s| s.code()));
            });
        if waiter.is_err() {
            signal(pid, libc::SIGKILL);
            return;
        }
        let code = select! {
            recv(exit_rx) -> c => c.ok().flatten(),
            recv(stop) -> _ => {
                signal(pid, libc::SIGTERM);
                if exit_rx.recv_timeout(Duration::from_secs(5)).is_err() {
                    signal(pid, libc::SIGKILL);
                    let _ = exit_rx.recv_timeout(Duration::from_secs(5));
                }
                log::info!("{who} stopped");
                return;
            }
        };
        if code == Some(0) {
            log::info!("{who} exited with status 0: not restarting");
            // It may come back only with a new instance or a new serve.
            let _ = stop.recv();
            return;
        }
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            crashes.pop_front();
        }
        if crashes.len() >= CRASH_LIMIT {
            log::error!(
                "{who} crashed {CRASH_LIMIT} times within 2 minutes; giving up (see {})",
                spec.log.display()
            );
            let _ = stop.recv();
            return;
        }
        log::warn!("{who} exited ({code:?}); restarting in {backoff:?}");
        select! {
            recv(stop) -> _ => return,
            recv(after(backoff)) -> _ => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn spawn(spec: &Spec) -> std::io::Result<std::process::Child> {
    let log = OpenOptions::new().create(true).append(true).open(&spec.log)?;
    let mut cmd = super::supervised_command(&spec.program, &log)?;
    if let Some(home) = std::env::var_os("AEGIS_HOME") {
        cmd.env("AEGIS_HOME", home);
    }
    // serve fires scheduled tasks itself (see `cron`); the gateway must not as well.
    if super::cron::host_fires() {
        cmd.env("AEGIS_HOST_SCHEDULES", "1");
    }
    cmd.env("AEGIS_INSTANCE", &spec.instance.name)
        .env("AEGIS_SOCKET", &spec.socket)
        .envs(spec.instance.env.iter());
    // The instance's secrets (the bot token among them) reach its daemons too.
    for name in &spec.instance.secrets {
        match spec.secrets.get(name) {
            Ok(v) => {
                cmd.env(name, v);
            }
            Err(e) => log::warn!(
                "{}: secret {name} for daemon {}: {e}",
                spec.instance.name,
                spec.label
            ),
        }
    }
    // SAFETY: prctl is async-signal-safe: the daemon dies with serve.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: a signal to the daemon's own process group.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}
