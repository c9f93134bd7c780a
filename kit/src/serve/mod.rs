//! `aegis-kit serve`: a standalone tether host speaking the subset of the aegisd API the
//! kit uses (PROTOCOL.md §2) on `~/.aegis/aegisd.sock`, running each instance as a
//! supervised local process with wake-on-message, pause on idle and scale to zero.
//!
//! Threads: the API accept loop (one short-lived thread per request, long-lived for
//! streams), one supervisor per instance (see `supervisor`), the scheduler of the
//! instances' tasks (see `cron`), and a signal thread that turns SIGTERM/SIGINT into an
//! orderly shutdown of every instance.

pub mod api;
pub mod chosen_workspace;
pub mod cron;
pub mod daemons;
pub mod exec;
pub mod host_llm;
pub mod registry;
pub mod secrets;
pub mod supervisor;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether::EgressStore;

use registry::{InstanceDef, Registry};
use secrets::Secrets;
use supervisor::{Handle, Timing};

/// A command for a process serve supervises: a clean environment with only what it
/// needs from serve's (paths, locale, time zone, log level, certificates, proxies), no stdin,
/// stdout and stderr to `log`, a process group of its own.
pub fn supervised_command(program: &Path, log: &fs::File) -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .process_group(0);
    let basics = ["PATH", "HOME", "LANG", "TZ", "RUST_LOG"];
    for var in basics.iter().chain(tether::http::NETWORK_VARS) {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    Ok(cmd)
}

/// An error answered as `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Message for the client.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// Settings of one serve process.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The API socket.
    pub socket: PathBuf,
    /// Where instances and secrets live.
    pub state_dir: PathBuf,
    /// Lifecycle timing.
    pub timing: Timing,
    /// The agent binary run for `aegis-agent` commands.
    pub agent_bin: PathBuf,
    /// How instances are sandboxed.
    pub sandbox: Arc<SandboxSettings>,
    /// Model servers on this machine that `host:` models reach (`--host-llm`).
    pub host_models: Arc<host_llm::HostModels>,
    /// The workspaces chosen for instances, which the other instances' sandboxes hide.
    pub chosen: chosen_workspace::Chosen,
}

/// Serve's sandbox defaults and what the kernel offers.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Default level (`serve --sandbox`).
    pub level: crate::sandbox::Level,
    /// What the kernel offers (probed once at start).
    pub probe: crate::sandbox::Probe,
    /// This executable, which runs `__sandbox`.
    pub exe: PathBuf,
    /// Folders no instance may see (serve's state).
    pub hide_dirs: Vec<PathBuf>,
    /// Files no instance may use (the API socket when outside those folders).
    pub hide_files: Vec<PathBuf>,
}

/// Why serve could not start.
#[derive(Debug)]
pub enum ServeError {
    /// Another server answers on the socket.
    AlreadyRunning(PathBuf),
    /// Filesystem or socket setup failed.
    Setup(String),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::AlreadyRunning(p) => write!(f, "a server is already listening on {}", p.display()),
            ServeError::Setup(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ServeError {}

/// State shared by the request handlers.
pub struct Host {
    /// Instances by name.
    pub instances: RwLock<BTreeMap<String, Handle>>,
    /// Definitions on disk.
    pub registry: Registry,
    /// Encrypted secrets.
    pub secrets: Arc<Secrets>,
    /// Settings.
    pub config: ServeConfig,
    /// Per-instance daemons, by instance name; dropping an entry stops them.
    pub daemons: std::sync::Mutex<BTreeMap<String, daemons::Daemons>>,
    /// Held while an instance is created or its folder removed: two requests naming one
    /// instance (or overlapping workspaces) cannot both pass the checks before either
    /// acts, and a removal cannot delete what a create just wrote.
    pub changing: std::sync::Mutex<()>,
}

/// First egress seq of a store created now: microseconds since the epoch. Seqs then stay
/// above any handed out by an earlier serve (fewer than a million frames a second), so
/// a gateway's `after` cursor stays valid across serve restarts.
pub fn first_seq() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

impl Host {
    /// Find an instance by name or id.
    pub fn find(&self, key: &str) -> Option<Handle> {
        let map = self.instances.read().expect("instances lock");
        map.get(key)
            .cloned()
            .or_else(|| map.values().find(|h| h.def.id == key).cloned())
    }

    /// Every instance, by name.
    pub fn handles(&self) -> Vec<Handle> {
        self.instances
            .read()
            .expect("instances lock")
            .values()
            .cloned()
            .collect()
    }

    /// Start supervising `def` (not booting it).
    pub fn adopt(&self, def: InstanceDef) -> std::io::Result<Handle> {
        let dir = self.registry.instance_dir(&def.name);
        // Egress goes to disk too, so replies survive a long gateway outage and a serve
        // crash; without a usable folder the instance still runs, memory only.
        let store = match tether::disklog::DiskLog::open(
            &dir.join("egress"),
            tether::disklog::Retention::default(),
        ) {
            Ok(disk) => EgressStore::with_disk(
                tether::store::DEFAULT_CAPACITY,
                tether::store::DEFAULT_REPLAY,
                first_seq(),
                disk,
            ),
            Err(e) => {
                log::error!(
                    "{}: no egress log ({e}); undelivered replies will not survive a restart",
                    def.name
                );
                EgressStore::with_limits(
                    tether::store::DEFAULT_CAPACITY,
                    tether::store::DEFAULT_REPLAY,
                    first_seq(),
                )
            }
        };
        self.config.chosen.set(&def.name, def.workspace.as_deref());
        let h = supervisor::spawn(
            def.clone(),
            self.registry.instance_dir(&def.name),
            &self.config,
            Arc::clone(&self.secrets),
            store,
        )?;
        self.instances
            .write()
            .expect("instances lock")
            .insert(def.name.clone(), h.clone());
        let names = def
            .kit
            .as_deref()
            .and_then(|k| crate::manifest::load_installed(k).ok())
            .map(|m| m.instance_daemons)
            .unwrap_or_default();
        if let Some(d) = daemons::start(&def, &names, &dir, &self.config.socket, &self.secrets) {
            self.daemons
                .lock()
                .expect("daemons lock")
                .insert(def.name.clone(), d);
        }
        Ok(h)
    }

    /// Stop the daemons of `name` (deleted) and wait until they are gone.
    pub fn stop_daemons(&self, name: &str) {
        let d = self.daemons.lock().expect("daemons lock").remove(name);
        drop(d);
    }
}

/// Run serve until SIGTERM/SIGINT; returns after every instance has stopped.
pub fn run(config: ServeConfig) -> Result<(), ServeError> {
    let setup =
        |what: &str, p: &Path, e: std::io::Error| ServeError::Setup(format!("{what} {}: {e}", p.display()));
    if let Some(parent) = config.socket.parent() {
        fs::create_dir_all(parent).map_err(|e| setup("cannot create", parent, e))?;
    }
    if config.socket.exists() {
        if std::os::unix::net::UnixStream::connect(&config.socket).is_ok() {
            return Err(ServeError::AlreadyRunning(config.socket.clone()));
        }
        fs::remove_file(&config.socket).map_err(|e| setup("cannot remove stale", &config.socket, e))?;
    }
    fs::create_dir_all(&config.state_dir).map_err(|e| setup("cannot create", &config.state_dir, e))?;
    let secrets = Secrets::open(&config.state_dir).map_err(|e| ServeError::Setup(e.to_string()))?;
    let server = tiny_http::Server::http_unix(&config.socket)
        .map_err(|e| ServeError::Setup(format!("cannot listen on {}: {e}", config.socket.display())))?;
    fs::set_permissions(&config.socket, fs::Permissions::from_mode(0o600))
        .map_err(|e| setup("cannot restrict", &config.socket, e))?;
    let host = Arc::new(Host {
        instances: RwLock::new(BTreeMap::new()),
        registry: Registry::new(&config.state_dir),
        secrets: Arc::new(secrets),
        config: config.clone(),
        daemons: std::sync::Mutex::new(BTreeMap::new()),
        changing: std::sync::Mutex::new(()),
    });
    let clock = tether::schedule::Clock::from_env().map_err(ServeError::Setup)?;
    for def in host.registry.load_all() {
        if let Err(e) = host.adopt(def) {
            log::error!("cannot supervise instance: {e}");
        }
    }
    if cron::host_fires() {
        cron::start(Arc::clone(&host), clock)
            .map_err(|e| ServeError::Setup(format!("cannot start the scheduler: {e}")))?;
    } else {
        log::info!("scheduled tasks: left to per-instance gateways (AEGIS_KIT_CRON=off)");
    }
    let server = Arc::new(server);
    let signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .map_err(|e| ServeError::Setup(format!("cannot install signal handlers: {e}")))?;
    {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            let mut signals = signals;
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: shutting down");
                server.unblock();
            }
        });
    }
    log::info!(
        "aegis-kit serve listening on {} ({} instances)",
        config.socket.display(),
        host.instances.read().expect("instances lock").len()
    );
    api::serve(&server, &host);
    shutdown(&host);
    let _ = fs::remove_file(&config.socket);
    // `up` wrote our pid file; a foreground serve has none of its own to remove.
    let pid_file = tether::paths::aegis_home().join("serve.pid");
    if fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string()) {
        let _ = fs::remove_file(pid_file);
    }
    log::info!("aegis-kit serve stopped");
    Ok(())
}

fn shutdown(host: &Host) {
    // Daemons first: a gateway would see its instance go and exit by itself anyway.
    let all = std::mem::take(&mut *host.daemons.lock().expect("daemons lock"));
    drop(all);
    let handles = host.handles();
    let waits: Vec<_> = handles
        .iter()
        .filter_map(|h| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            h.tx.send(supervisor::Cmd::Shutdown(tx)).ok().map(|_| rx)
        })
        .collect();
    for rx in waits {
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }
    for h in handles {
        h.store.close();
    }
}
