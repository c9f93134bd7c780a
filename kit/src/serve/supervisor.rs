//! One supervisor thread per instance: the owner of its state machine
//! (stopped → starting → running ⇄ paused → stopped, PROTOCOL.md §5).
//!
//! Duties:
//! 1. wake on message: an ingress frame boots a stopped instance or resumes (SIGCONT) a
//!    paused one, and is queued, in order and bounded, until the agent's direct tether
//!    connection is up; over the bound the caller gets 503, never a silent drop;
//! 2. idle: pause (SIGSTOP: zero CPU) after `pause_after` without ingress or egress, stop
//!    after `stop_after` more; timers are deadlines, so an idle instance wakes nobody;
//! 3. crashes: a user message the agent took but never answered is delivered again after
//!    an unexpected exit; 5 crashes within 2 minutes refuse further boots;
//! 4. stop and shutdown: SIGTERM to the process group, SIGKILL after a grace period.
//!
//! Events reach it on one channel: API commands, agent connections and disconnections
//! (from the accept and reader threads) and child exits (from a waiter thread).

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;
use tether::frame::{kind, Direction};
use tether::rpc::{Message, Messages};
use tether::{Addr, EgressStore, Frame, Listener, Stream};

use super::host_llm::{self, HostModels};
use super::registry::InstanceDef;
use super::secrets::Secrets;
use super::ApiError;
use super::{SandboxSettings, ServeConfig};
use crate::sandbox::{Level, Limits, Net, Policy};

/// Crashes within `CRASH_WINDOW` that refuse further boots.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(120);
/// Grace period between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Largest instance log kept before it is rotated at boot.
const MAX_LOG: u64 = 10 << 20;

/// Lifecycle timing, configurable per serve.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Idle time before SIGSTOP (zero disables pausing).
    pub pause_after: Duration,
    /// Further idle time before the instance is stopped.
    pub stop_after: Duration,
    /// How long a boot may take before the wake fails.
    pub boot: Duration,
    /// Frames queued while booting before callers get 503.
    pub queue_limit: usize,
}

/// Lifecycle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No process.
    Stopped,
    /// Process spawned, tether not yet connected.
    Starting,
    /// Connected and running.
    Running,
    /// SIGSTOPped.
    Paused,
    /// SIGTERM sent, waiting for exit.
    Stopping,
    /// Refuses to boot after repeated crashes.
    Crashloop,
}

/// What `instance info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// The definition.
    #[serde(flatten)]
    pub def: InstanceDef,
    /// Current state.
    pub state: State,
    /// Process id while a process exists.
    pub pid: Option<u32>,
    /// Seconds since the last ingress or egress.
    pub idle_secs: u64,
    /// Frames waiting for the agent.
    pub queued: usize,
    /// User messages delivered but not yet answered.
    pub unanswered: usize,
    /// Crashes in the last two minutes.
    pub recent_crashes: usize,
    /// Newest egress seq.
    pub last_seq: u64,
    /// The instance's folder.
    pub dir: PathBuf,
    /// Its workspace on the host (upstream's field: a gateway reads image blobs there).
    pub workspace: PathBuf,
    /// The sandbox in force (or that would be, for a stopped instance).
    pub sandbox_in_force: String,
}

/// Where the outcome of a request goes.
pub type Waiter = Sender<Result<(), ApiError>>;

/// Messages to a supervisor.
pub enum Cmd {
    /// Deliver an ingress frame (wake if needed); answered once delivered or failed.
    Ingress(Frame, Waiter),
    /// Boot now (clears a crash loop).
    Start(Waiter),
    /// Stop now.
    Stop(Waiter),
    /// Pause now.
    Pause(Waiter),
    /// Report state.
    Info(Sender<Info>),
    /// Stop the process and end the thread.
    Shutdown(Sender<()>),
    /// The agent connected (connection number, writing half).
    Connected(u64, Stream),
    /// That connection ended.
    Disconnected(u64),
    /// `assistant.done` seen for this `msg_id`.
    Answered(String),
    /// The process exited (pid, exit code if not killed by a signal).
    Exited(u32, Option<i32>),
    /// Whether a user message whose `msg_id` starts with this is queued or unanswered.
    Owes(String, Sender<bool>),
    /// The agent holds a keepalive lease for this long (`keepalive` notification), or
    /// released it (`keepalive.release`).
    Lease(Option<Duration>),
    /// Write this message on that connection (a `host:` model's chunks, an answer).
    Notify(u64, Message),
    /// The agent asked to be restarted (`self.restart`, after its `self_restart` tool).
    Restart,
    /// Prepare the command of an exec request (`argv`, not empty).
    Exec(Vec<String>, Sender<Result<std::process::Command, ApiError>>),
}

/// What the API keeps per instance.
#[derive(Clone)]
pub struct Handle {
    /// The definition (immutable after creation).
    pub def: InstanceDef,
    /// The supervisor's inbox.
    pub tx: Sender<Cmd>,
    /// Egress history, shared with the connection readers and stream clients.
    pub store: Arc<EgressStore>,
}

/// Milliseconds since serve started, for lock-free activity stamps.
fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

struct Child {
    pid: u32,
    /// Connection counter value at spawn, to ignore events of older connections.
    since_conn: u64,
}

struct Supervisor {
    def: InstanceDef,
    dir: PathBuf,
    timing: Timing,
    secrets: Arc<Secrets>,
    agent_bin: PathBuf,
    tx: Sender<Cmd>,
    store: Arc<EgressStore>,
    state: State,
    child: Option<Child>,
    /// The agent's tether connection and its number.
    conn: Option<(u64, Stream)>,
    /// Numbers connections so stale disconnect events are ignored.
    conn_counter: Arc<AtomicU64>,
    /// Ingress waiting for the agent, with the callers waiting for the outcome.
    queue: VecDeque<(Frame, Option<Waiter>)>,
    /// Delivered user messages without an `assistant.done` yet.
    unanswered: VecDeque<Frame>,
    /// Recent unexpected exits.
    crashes: VecDeque<Instant>,
    /// Last ingress or egress, ms since `epoch` (egress readers update it).
    activity: Arc<AtomicU64>,
    epoch: Instant,
    /// When a boot or a stop gives up.
    deadline: Option<Instant>,
    /// Start requests waiting for the agent to connect.
    start_waiters: Vec<Waiter>,
    /// Tells the accept thread to end.
    listener_closed: Option<Arc<AtomicBool>>,
    /// Assigns `msg_id`s to ingress frames that came without one.
    next_msg: u64,
    /// Until when the agent's keepalive lease holds off pause and stop.
    lease_until: Option<Instant>,
    /// Serve's sandbox defaults and the kernel's features.
    sandbox: Arc<SandboxSettings>,
    /// Model servers for `host:` models.
    host_models: Arc<HostModels>,
    /// The workspaces chosen for instances: the others' are hidden from this one.
    chosen: super::chosen_workspace::Chosen,
    /// The agent asked for a restart: boot again as soon as it has exited.
    restart_requested: bool,
}

/// `AEGIS_TOOLS` for an agent serve starts: everything but the shell and file tools.
pub const UNSANDBOXED_TOOLS: &str = "all,-shell,-files";

/// Start the supervisor thread of `def`; `store` is the instance's egress history.
pub fn spawn(
    def: InstanceDef,
    dir: PathBuf,
    config: &ServeConfig,
    secrets: Arc<Secrets>,
    store: Arc<EgressStore>,
) -> std::io::Result<Handle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let epoch = Instant::now();
    kill_orphan(&dir);
    let owed = load_unanswered(&dir);
    let sup = Supervisor {
        def: def.clone(),
        dir,
        timing: config.timing,
        secrets,
        agent_bin: config.agent_bin.clone(),
        tx: tx.clone(),
        store: Arc::clone(&store),
        state: State::Stopped,
        child: None,
        conn: None,
        conn_counter: Arc::new(AtomicU64::new(0)),
        queue: VecDeque::new(),
        unanswered: owed,
        crashes: VecDeque::new(),
        activity: Arc::new(AtomicU64::new(0)),
        epoch,
        deadline: None,
        start_waiters: Vec::new(),
        listener_closed: None,
        next_msg: 0,
        lease_until: None,
        sandbox: Arc::clone(&config.sandbox),
        host_models: Arc::clone(&config.host_models),
        chosen: config.chosen.clone(),
        restart_requested: false,
    };
    thread::Builder::new()
        .name("supervisor".into())
        .stack_size(128 * 1024)
        .spawn(move || sup.run(rx))?;
    Ok(Handle { def, tx, store })
}

/// A previous serve killed with SIGKILL may have left a process behind: end it.
fn kill_orphan(dir: &Path) {
    let pidfile = dir.join("pid");
    let Ok(text) = fs::read_to_string(&pidfile) else {
        return;
    };
    let mut words = text.split_whitespace();
    if let Some(pid) = words.next().and_then(|w| w.parse::<i32>().ok()) {
        // Only our own children: the pid file names the process group we created, and
        // when it started (a pid is used again once its process is gone).
        let ours = match words.next().and_then(|w| w.parse::<u64>().ok()) {
            Some(started) => tether::process::start_time(pid as u32) == Some(started),
            // Written by an older serve: the agent's environment names its tether.
            None => {
                let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let marker = format!("AEGIS_TETHER=unix:{}", dir.join("tether.sock").display());
                environ.windows(marker.len()).any(|w| w == marker.as_bytes())
            }
        };
        if pid > 1 && ours {
            log::warn!("killing orphaned instance process group {pid}");
            signal_group(pid as u32, libc::SIGKILL);
        }
    }
    let _ = fs::remove_file(pidfile);
}

pub(super) fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created with
    // process_group(0); it has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// Whether the instance's command is the agent, which dials the tether; other commands
/// (a debug shell) run without one and are `running` as soon as they are spawned.
fn speaks_tether(def: &InstanceDef) -> bool {
    def.command
        .first()
        .is_none_or(|c| Path::new(c).file_name().is_some_and(|n| n == "aegis-agent"))
}

fn err(status: u16, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// User messages delivered but not answered when serve last stopped (or died).
fn load_unanswered(dir: &Path) -> VecDeque<Frame> {
    let text = fs::read_to_string(dir.join("unanswered.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| Frame::parse(l.as_bytes()).ok())
        .collect()
}

impl Supervisor {
    /// Mirror `unanswered` to disk, so messages owed a reply survive a serve crash too.
    fn save_unanswered(&self) {
        let path = self.dir.join("unanswered.jsonl");
        if self.unanswered.is_empty() {
            let _ = fs::remove_file(&path);
            return;
        }
        let mut text = String::new();
        for f in &self.unanswered {
            text.push_str(&f.to_json());
            text.push('\n');
        }
        if let Err(e) = tether::fsutil::replace(&path, text.as_bytes()) {
            log::error!("{}: cannot save {}: {e}", self.def.name, path.display());
        }
    }

    fn run(mut self, rx: Receiver<Cmd>) {
        // Messages owed from before a restart are delivered first.
        if !self.unanswered.is_empty() {
            log::warn!(
                "{}: {} message(s) owed a reply from before the restart",
                self.def.name,
                self.unanswered.len()
            );
            let owed: Vec<_> = self.unanswered.drain(..).map(|f| (f, None)).collect();
            self.queue.extend(owed);
            if let Err(e) = self.boot() {
                self.fail_queue(e.status, &e.message);
            }
        }
        loop {
            let cmd = match self.next_deadline() {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return self.stop_now(),
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return self.stop_now(),
                },
            };
            match cmd {
                Some(Cmd::Shutdown(reply)) => {
                    self.stop_now();
                    let _ = reply.send(());
                    return;
                }
                Some(c) => self.handle(c),
                None => self.on_timer(),
            }
        }
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.activity.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        self.activity.store(now_ms(self.epoch), Ordering::Relaxed);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle_since();
        match self.state {
            State::Starting | State::Stopping => self.deadline,
            State::Running if !self.timing.pause_after.is_zero() => Some(idle + self.timing.pause_after),
            State::Running | State::Paused => Some(idle + self.timing.pause_after + self.timing.stop_after),
            State::Stopped | State::Crashloop => None,
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        match self.state {
            State::Starting if self.deadline.is_some_and(|d| now >= d) => {
                let msg = format!(
                    "wake failed: {} did not connect within {:?}",
                    self.def.name, self.timing.boot
                );
                log::error!("{msg}");
                self.fail_queue(503, &msg);
                self.terminate(libc::SIGKILL);
            }
            State::Stopping if self.deadline.is_some_and(|d| now >= d) => {
                log::warn!("{} ignored SIGTERM; killing it", self.def.name);
                if let Some(c) = &self.child {
                    signal_group(c.pid, libc::SIGKILL);
                }
                self.deadline = None;
            }
            // A reply or tool is running in the agent (it may use no tether for minutes,
            // and its tool processes' CPU is no activity we can see): no pause, no stop.
            State::Running if self.lease_until.is_some_and(|u| now < u) => self.touch(),
            State::Running | State::Paused => {
                let idle = now.saturating_duration_since(self.idle_since());
                let busy = !self.unanswered.is_empty() || !self.queue.is_empty();
                if idle >= self.timing.pause_after + self.timing.stop_after && !busy {
                    log::info!("{}: idle for {idle:?}, stopping", self.def.name);
                    self.terminate(libc::SIGTERM);
                } else if self.state == State::Running
                    && !self.timing.pause_after.is_zero()
                    && idle >= self.timing.pause_after
                {
                    if busy {
                        // A reply is still owed: count its wait as activity.
                        self.touch();
                    } else if let Some(c) = &self.child {
                        log::info!("{}: idle for {idle:?}, pausing", self.def.name);
                        signal_group(c.pid, libc::SIGSTOP);
                        self.state = State::Paused;
                    }
                }
            }
            _ => {}
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Ingress(frame, reply) => self.ingress(frame, reply),
            Cmd::Start(reply) => {
                self.crashes.clear();
                match self.state {
                    State::Stopped | State::Crashloop => match self.boot() {
                        Ok(()) if !speaks_tether(&self.def) => {
                            let _ = reply.send(Ok(()));
                        }
                        Ok(()) => self.start_waiters.push(reply),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                    State::Starting => self.start_waiters.push(reply),
                    State::Paused => {
                        self.resume();
                        let _ = reply.send(Ok(()));
                    }
                    State::Running => {
                        let _ = reply.send(Ok(()));
                    }
                    State::Stopping => {
                        let _ = reply.send(Err(err(409, "instance is stopping; try again")));
                    }
                }
            }
            Cmd::Stop(reply) => {
                self.fail_queue(503, "instance stopped");
                if self.state == State::Crashloop {
                    self.state = State::Stopped;
                }
                self.unanswered.clear();
                self.save_unanswered();
                self.terminate(libc::SIGTERM);
                let _ = reply.send(Ok(()));
            }
            Cmd::Pause(reply) => {
                let r = match (&self.child, self.state) {
                    (Some(c), State::Running) => {
                        signal_group(c.pid, libc::SIGSTOP);
                        self.state = State::Paused;
                        Ok(())
                    }
                    (_, State::Paused) => Ok(()),
                    _ => Err(err(
                        409,
                        format!("instance is {:?}, not running", self.state).to_lowercase(),
                    )),
                };
                let _ = reply.send(r);
            }
            Cmd::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Cmd::Shutdown(_) => unreachable!("handled in run"),
            Cmd::Connected(n, stream) => self.connected(n, stream),
            Cmd::Disconnected(n) => {
                if self.conn.as_ref().is_some_and(|(c, _)| *c == n) {
                    log::info!("{}: tether connection closed", self.def.name);
                    self.conn = None;
                    if self.state == State::Running {
                        // The process may still live and reconnect; wait for it.
                        self.state = State::Starting;
                        self.deadline = Some(Instant::now() + self.timing.boot);
                    }
                }
            }
            Cmd::Answered(id) => {
                self.unanswered
                    .retain(|f| f.msg_id.as_deref() != Some(id.as_str()));
                self.save_unanswered();
            }
            Cmd::Exited(pid, code) => self.exited(pid, code),
            Cmd::Exec(argv, reply) => {
                let _ = reply.send(self.exec_command(&argv));
            }
            Cmd::Owes(prefix, reply) => {
                let owed = |f: &Frame| f.msg_id.as_deref().is_some_and(|m| m.starts_with(&prefix));
                let _ =
                    reply.send(self.unanswered.iter().any(owed) || self.queue.iter().any(|(f, _)| owed(f)));
            }
            Cmd::Lease(ttl) => {
                self.lease_until = ttl.map(|t| Instant::now() + t);
                self.touch();
            }
            Cmd::Restart => {
                if self.state == State::Running || self.state == State::Paused {
                    log::info!("{}: the agent asked to be restarted", self.def.name);
                    self.restart_requested = true;
                    self.terminate(libc::SIGTERM);
                }
            }
            Cmd::Notify(n, msg) => match &mut self.conn {
                // Chunks for an older connection have nobody to go to: its agent retries.
                Some((c, s)) if *c == n => {
                    if let Err(e) = s.write_all(&msg.encode()) {
                        log::warn!(
                            "{}: tether write failed ({e}); dropping the connection",
                            self.def.name
                        );
                        let _ = s.shutdown();
                    }
                }
                _ => {}
            },
        }
    }

    fn ingress(&mut self, mut frame: Frame, reply: Waiter) {
        if self.state == State::Crashloop {
            let _ = reply.send(Err(err(
                503,
                format!(
                    "instance {} is crash-looping ({CRASH_LIMIT} crashes within 2 minutes); see `aegis-kit logs {}`, then `aegis-kit instance start {}`",
                    self.def.name, self.def.name, self.def.name
                ),
            )));
            return;
        }
        if !speaks_tether(&self.def) {
            let _ = reply.send(Err(err(
                409,
                format!(
                    "instance {} runs {:?}, which does not speak the tether",
                    self.def.name, self.def.command
                ),
            )));
            return;
        }
        if frame.kind == kind::USER_MESSAGE && frame.msg_id.is_none() {
            self.next_msg += 1;
            frame.msg_id = Some(format!("kit-{}-{}", now_ms(self.epoch), self.next_msg));
        }
        self.touch();
        match self.state {
            State::Paused => {
                self.resume();
                self.deliver(frame, Some(reply));
            }
            State::Running => self.deliver(frame, Some(reply)),
            State::Stopped | State::Starting | State::Stopping => {
                if frame.kind == kind::CONTROL_CANCEL && self.state != State::Starting {
                    // Nothing runs, so nothing is in flight to cancel.
                    let _ = reply.send(Ok(()));
                    return;
                }
                if self.queue.len() >= self.timing.queue_limit {
                    let _ = reply.send(Err(err(
                        503,
                        format!(
                            "instance {} is starting and {} frames are already queued",
                            self.def.name,
                            self.queue.len()
                        ),
                    )));
                    return;
                }
                self.queue.push_back((frame, Some(reply)));
                if self.state == State::Stopped {
                    if let Err(e) = self.boot() {
                        self.fail_queue(e.status, &e.message);
                    }
                }
            }
            State::Crashloop => unreachable!(),
        }
    }

    fn resume(&mut self) {
        if let Some(c) = &self.child {
            signal_group(c.pid, libc::SIGCONT);
        }
        self.state = State::Running;
        self.touch();
    }

    /// Write `frame` to the agent, or queue it if the connection just failed.
    fn deliver(&mut self, frame: Frame, reply: Option<Waiter>) {
        let line = Message::tether_frame(&frame).encode();
        let written = match &mut self.conn {
            Some((_, s)) => s.write_all(&line).is_ok(),
            None => false,
        };
        if written {
            if frame.kind == kind::USER_MESSAGE {
                self.unanswered.push_back(frame);
                self.save_unanswered();
            }
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
        } else {
            log::warn!(
                "{}: tether write failed; waiting for the agent to reconnect",
                self.def.name
            );
            self.conn = None;
            self.queue.push_back((frame, reply));
            self.state = State::Starting;
            self.deadline = Some(Instant::now() + self.timing.boot);
        }
    }

    fn connected(&mut self, n: u64, stream: Stream) {
        let Some(child) = &self.child else { return };
        if n <= child.since_conn {
            return;
        }
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        log::info!("{}: agent connected", self.def.name);
        self.conn = Some((n, stream));
        if matches!(self.state, State::Starting) {
            self.state = State::Running;
            self.deadline = None;
        }
        self.touch();
        for w in self.start_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        let queued: Vec<_> = self.queue.drain(..).collect();
        for (f, r) in queued {
            self.deliver(f, r);
        }
    }

    fn exited(&mut self, pid: u32, code: Option<i32>) {
        if self.child.as_ref().map(|c| c.pid) != Some(pid) {
            return;
        }
        let expected = self.state == State::Stopping;
        self.child = None;
        self.conn = None;
        self.lease_until = None;
        self.deadline = None;
        self.close_listener();
        let _ = fs::remove_file(self.dir.join("pid"));
        let crashed = !expected && code != Some(0);
        log::info!(
            "{}: process {pid} exited ({})",
            self.def.name,
            code.map_or("killed by a signal".to_string(), |c| format!("code {c}"))
        );
        self.state = State::Stopped;
        if std::mem::take(&mut self.restart_requested) {
            // As after a crash, messages other sessions were waiting on are delivered again.
            let owed: Vec<_> = self.unanswered.drain(..).map(|f| (f, None)).collect();
            for item in owed.into_iter().rev() {
                self.queue.push_front(item);
            }
            if let Err(e) = self.boot() {
                log::error!("{}: restart failed: {e}", self.def.name);
                self.fail_queue(e.status, &e.message);
            }
            return;
        }
        if !crashed {
            if !self.queue.is_empty() {
                if let Err(e) = self.boot() {
                    self.fail_queue(e.status, &e.message);
                }
            }
            return;
        }
        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() >= CRASH_LIMIT {
            log::error!(
                "{}: {} crashes within 2 minutes; refusing to boot",
                self.def.name,
                self.crashes.len()
            );
            self.state = State::Crashloop;
            self.unanswered.clear();
            self.save_unanswered();
            self.fail_queue(503, &format!("instance {} is crash-looping", self.def.name));
            for w in self.start_waiters.drain(..) {
                let _ = w.send(Err(err(503, "instance is crash-looping")));
            }
            return;
        }
        // Messages the agent took but never answered go first, then what was queued.
        let owed: Vec<_> = self.unanswered.drain(..).map(|f| (f, None)).collect();
        if !owed.is_empty() {
            log::warn!(
                "{}: redelivering {} unanswered message(s) after a crash",
                self.def.name,
                owed.len()
            );
        }
        for item in owed.into_iter().rev() {
            self.queue.push_front(item);
        }
        if !self.queue.is_empty() || !self.start_waiters.is_empty() {
            if let Err(e) = self.boot() {
                self.fail_queue(e.status, &e.message);
            }
        }
    }

    fn fail_queue(&mut self, status: u16, message: &str) {
        for (_, r) in self.queue.drain(..) {
            if let Some(r) = r {
                let _ = r.send(Err(err(status, message)));
            }
        }
        for w in self.start_waiters.drain(..) {
            let _ = w.send(Err(err(status, message)));
        }
    }

    fn terminate(&mut self, sig: i32) {
        match &self.child {
            Some(c) => {
                signal_group(c.pid, sig);
                // A stopped process only acts on SIGTERM once continued.
                signal_group(c.pid, libc::SIGCONT);
                self.state = State::Stopping;
                self.deadline = Some(Instant::now() + STOP_GRACE);
            }
            None => {
                if self.state != State::Crashloop {
                    self.state = State::Stopped;
                }
                self.deadline = None;
            }
        }
        self.conn = None;
    }

    /// Stop synchronously (serve shutting down).
    fn stop_now(&mut self) {
        self.fail_queue(503, "aegis-kit serve is shutting down");
        if let Some(c) = self.child.take() {
            signal_group(c.pid, libc::SIGTERM);
            signal_group(c.pid, libc::SIGCONT);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && Path::new(&format!("/proc/{}", c.pid)).exists() {
                if fs::read_to_string(format!("/proc/{}/stat", c.pid))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
                {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            signal_group(c.pid, libc::SIGKILL);
            let _ = fs::remove_file(self.dir.join("pid"));
        }
        self.close_listener();
    }

    fn close_listener(&mut self) {
        if let Some(flag) = self.listener_closed.take() {
            flag.store(true, Ordering::SeqCst);
            // Wake the accept thread so it sees the flag.
            let _ = std::os::unix::net::UnixStream::connect(self.dir.join("tether.sock"));
        }
    }

    fn boot(&mut self) -> Result<(), ApiError> {
        let sock = self.dir.join("tether.sock");
        self.close_listener();
        // The path is ours alone; the previous listener (just told to close) may still
        // hold it, and the new one must own it.
        let _ = fs::remove_file(&sock);
        let listener = Listener::bind(&Addr::Unix(sock.clone())).map_err(|e| {
            err(
                503,
                format!("wake failed: cannot listen on {}: {e}", sock.display()),
            )
        })?;
        let closed = Arc::new(AtomicBool::new(false));
        self.listener_closed = Some(Arc::clone(&closed));
        let since_conn = self.conn_counter.load(Ordering::SeqCst);
        spawn_acceptor(
            listener,
            closed,
            Arc::clone(&self.conn_counter),
            Readers {
                tx: self.tx.clone(),
                store: Arc::clone(&self.store),
                activity: Arc::clone(&self.activity),
                epoch: self.epoch,
                host_models: Arc::clone(&self.host_models),
                self_info: Arc::new(self_info(&self.def)),
            },
        );

        let mut env: Vec<(String, String)> = Vec::new();
        for name in &self.def.secrets {
            let value = self
                .secrets
                .get(name)
                .map_err(|e| err(503, format!("wake failed: {e}")))?;
            env.push((name.clone(), value));
        }
        let log_path = self.dir.join("instance.log");
        if fs::metadata(&log_path).is_ok_and(|m| m.len() > MAX_LOG) {
            let _ = fs::rename(&log_path, self.dir.join("instance.log.1"));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(503, format!("wake failed: {}: {e}", log_path.display())))?;
        let workspace = self.workspace("wake failed")?;

        let program = match self.def.command.first().map(String::as_str) {
            Some("aegis-agent") | None => self.agent_bin.clone(),
            Some(p) => PathBuf::from(p),
        };
        let level = self.level();
        let mut cmd = self.confined(&program, &workspace, Some(&sock), &log, "wake failed")?;
        cmd.args(self.def.command.iter().skip(1)).current_dir(&workspace);
        // Without the namespaces the agent's shell and file tools would act with serve's
        // rights, so they are off unless the instance opts in (its own AEGIS_TOOLS,
        // set below, wins).
        if !self.sandbox.probe.isolates(level) {
            cmd.env("AEGIS_TOOLS", UNSANDBOXED_TOOLS);
        }
        cmd.env("AEGIS_TETHER", format!("unix:{}", sock.display()))
            .env("AEGIS_WORKSPACE", &workspace)
            .env("AEGIS_INSTANCE", &self.def.name)
            .envs(self.def.env.iter())
            .envs(env);
        log::info!("{}: sandbox: {}", self.def.name, self.sandbox_line());
        let mut child = cmd
            .spawn()
            .map_err(|e| err(503, format!("wake failed: cannot run {}: {e}", program.display())))?;
        let pid = child.id();
        let started = tether::process::start_time(pid).map_or(String::new(), |t| format!(" {t}"));
        let _ = fs::write(self.dir.join("pid"), format!("{pid}{started}"));
        log::info!("{}: started {} (pid {pid})", self.def.name, program.display());
        let tx = self.tx.clone();
        thread::Builder::new()
            .name("waiter".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let code = child.wait().ok().and_then(|s| s.code());
                let _ = tx.send(Cmd::Exited(pid, code));
            })
            .map_err(|e| err(503, format!("wake failed: {e}")))?;
        self.child = Some(Child { pid, since_conn });
        if speaks_tether(&self.def) {
            self.state = State::Starting;
            self.deadline = Some(Instant::now() + self.timing.boot);
        } else {
            self.state = State::Running;
        }
        self.touch();
        Ok(())
    }

    /// `program` as this instance runs it: in its sandbox (`__sandbox POLICY -- PROGRAM`)
    /// unless its level is `none`, with the environment built from scratch, the CA
    /// bundle serve hands on, output to `log`, its own process group. `tether` is the
    /// socket to keep reachable inside; `why` starts error messages.
    fn confined(
        &self,
        program: &Path,
        workspace: &Path,
        tether: Option<&Path>,
        log: &fs::File,
        why: &str,
    ) -> Result<std::process::Command, ApiError> {
        let level = self.level();
        if level == Level::Strict {
            let missing = self.sandbox.probe.missing();
            if !missing.is_empty() {
                return Err(err(
                    503,
                    format!(
                        "{why}: {} needs a strict sandbox, and this kernel lacks: {}",
                        self.def.name,
                        missing.join("; ")
                    ),
                ));
            }
        }
        let spawn_err = |e: std::io::Error| err(503, format!("{why}: {e}"));
        // The CA bundle serve hands on must be readable inside the sandbox, which replaces
        // /tmp and serve's state folder: kept visible as its real file, named by that path.
        let cert_file = std::env::var_os("SSL_CERT_FILE")
            .filter(|_| level != Level::None)
            .and_then(|f| fs::canonicalize(f).ok())
            .filter(|f| f.is_file());
        let cert_dirs = std::env::var_os("SSL_CERT_DIR")
            .filter(|_| level != Level::None)
            .map(|dirs| cert_dirs(&dirs, &self.sandbox.hide_dirs));
        let mut cmd = if level == Level::None {
            super::supervised_command(program, log).map_err(spawn_err)?
        } else {
            // The real file, so it can be shown inside even when it lives in /tmp or
            // behind a symlink there (a bare name is looked up on PATH inside instead).
            let program = if program.is_absolute() {
                program.canonicalize().unwrap_or(program.to_path_buf())
            } else {
                program.to_path_buf()
            };
            let policy = Policy {
                level,
                net: self.net(),
                limits: self.limits(),
                workspace: workspace
                    .canonicalize()
                    .unwrap_or_else(|_| workspace.to_path_buf()),
                tether: tether.map(|t| t.canonicalize().unwrap_or_else(|_| t.to_path_buf())),
                hide_dirs: self
                    .sandbox
                    .hide_dirs
                    .iter()
                    .cloned()
                    .chain(self.chosen.others(&self.def.name))
                    .collect(),
                hide_files: self.sandbox.hide_files.clone(),
                keep_files: program
                    .is_absolute()
                    .then(|| program.clone())
                    .into_iter()
                    .chain(cert_file.clone())
                    .collect(),
                keep_dirs: cert_dirs.as_ref().map(|d| d.keep.clone()).unwrap_or_default(),
                hostname: format!("aegis-{}", self.def.name),
            };
            let mut c = super::supervised_command(&self.sandbox.exe, log).map_err(spawn_err)?;
            c.arg("__sandbox")
                .arg(serde_json::to_string(&policy).unwrap_or_default())
                .arg("--")
                .arg(&program);
            c
        };
        if let Some(f) = &cert_file {
            cmd.env("SSL_CERT_FILE", f);
        }
        if let Some(d) = &cert_dirs {
            cmd.env("SSL_CERT_DIR", &d.value);
        }
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill the process if
        // serve dies without stopping it, so a serve restart finds no orphans.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// The workspace, created if missing. A chosen one must still be the folder that was
    /// checked when the instance was created: a link put in its place (by anyone who can
    /// write its parent) would take the sandbox's one writable mount wherever it points,
    /// serve's state included.
    fn workspace(&self, why: &str) -> Result<PathBuf, ApiError> {
        let workspace = self.def.workspace_in(&self.dir);
        let _ = fs::create_dir_all(&workspace);
        if self.def.workspace.is_some() && workspace.canonicalize().ok().as_ref() != Some(&workspace) {
            return Err(err(
                503,
                format!(
                    "{why}: the workspace {} is not the folder it was when {} was created \
                     (a link now, or gone)",
                    workspace.display(),
                    self.def.name
                ),
            ));
        }
        Ok(workspace)
    }

    /// The command of an exec request (aegisd's `POST /v1/instances/{id}/exec`): `argv`
    /// in the instance's sandbox, in its workspace, with its environment but not its
    /// secrets. Refused for an instance the sandbox does not isolate: there it would be a
    /// shell on this machine with serve's rights.
    fn exec_command(&self, argv: &[String]) -> Result<std::process::Command, ApiError> {
        if !self.sandbox.probe.isolates(self.level()) {
            return Err(err(
                403,
                format!(
                    "exec needs the sandbox, and {} runs without it ({})",
                    self.def.name,
                    self.sandbox_line()
                ),
            ));
        }
        let workspace = self.workspace("exec failed")?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("instance.log"))
            .map_err(|e| err(503, format!("exec failed: instance.log: {e}")))?;
        let mut cmd = self.confined(Path::new(&argv[0]), &workspace, None, &log, "exec failed")?;
        cmd.args(&argv[1..])
            .current_dir(&workspace)
            .env("AEGIS_WORKSPACE", &workspace)
            .env("AEGIS_INSTANCE", &self.def.name)
            .envs(self.def.env.iter());
        Ok(cmd)
    }

    /// The instance's sandbox level: its own, else serve's.
    fn level(&self) -> Level {
        self.def.sandbox.level.unwrap_or(self.sandbox.level)
    }

    fn net(&self) -> Net {
        self.def.sandbox.net.clone().unwrap_or_default()
    }

    fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            memory_mb: self.def.sandbox.memory_mb.unwrap_or(d.memory_mb),
            max_procs: self.def.sandbox.max_procs.unwrap_or(d.max_procs),
            ..d
        }
    }

    /// `user+mount+pid+ipc+uts namespaces, landlock v7, seccomp, net: host` and so on.
    fn sandbox_line(&self) -> String {
        self.sandbox.probe.describe(self.level(), &self.net())
    }

    fn info(&self) -> Info {
        let now = Instant::now();
        Info {
            def: self.def.clone(),
            state: self.state,
            pid: self.child.as_ref().map(|c| c.pid),
            idle_secs: now.saturating_duration_since(self.idle_since()).as_secs(),
            queued: self.queue.len(),
            unanswered: self.unanswered.len(),
            recent_crashes: self
                .crashes
                .iter()
                .filter(|t| now.duration_since(**t) <= CRASH_WINDOW)
                .count(),
            last_seq: self.store.last_seq(),
            dir: self.dir.clone(),
            workspace: self.def.workspace_in(&self.dir),
            sandbox_in_force: self.sandbox_line(),
        }
    }
}

/// What every connection's reader needs.
#[derive(Clone)]
struct Readers {
    tx: Sender<Cmd>,
    store: Arc<EgressStore>,
    activity: Arc<AtomicU64>,
    epoch: Instant,
    host_models: Arc<HostModels>,
    /// The answer to `guest.self_info`.
    self_info: Arc<serde_json::Value>,
}

/// Accept the agent's tether connections until `closed` is set.
fn spawn_acceptor(listener: Listener, closed: Arc<AtomicBool>, counter: Arc<AtomicU64>, readers: Readers) {
    let spawned = thread::Builder::new()
        .name("tether-accept".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while let Ok(stream) = listener.accept() {
                if closed.load(Ordering::SeqCst) {
                    return;
                }
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(writer) = stream.try_clone() else { continue };
                let r = readers.clone();
                let reader = thread::Builder::new()
                    .name("tether-read".into())
                    .stack_size(128 * 1024)
                    .spawn(move || read_egress(stream, n, &r));
                if reader.is_ok() && readers.tx.send(Cmd::Connected(n, writer)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start tether acceptor: {e}");
    }
}

/// What `guest.self_info` tells the agent of its instance: aegisd's fields (the agent is
/// asking, so it runs; serve exposes no ports and spawns no children) and the kit.
fn self_info(def: &InstanceDef) -> serde_json::Value {
    serde_json::json!({
        "id": def.id,
        "handle": def.name,
        "state": "running",
        "image": def.image.as_deref().unwrap_or(""),
        "parent_id": "",
        "kit": def.kit,
        "host": "aegis-kit serve",
    })
}

/// Append the agent's egress frames to the store until the connection ends; start the
/// streams of `host:` models it asks for; answer its requests.
fn read_egress(stream: Stream, n: u64, r: &Readers) {
    let (tx, store, activity, epoch) = (&r.tx, &*r.store, &*r.activity, r.epoch);
    let host_conn = {
        let (tx, activity) = (tx.clone(), Arc::clone(&r.activity));
        host_llm::Conn {
            // A chunk on its way is activity: a stream must not be paused half-way.
            send: Arc::new(move |m| {
                activity.store(now_ms(epoch), Ordering::Relaxed);
                let _ = tx.send(Cmd::Notify(n, m));
            }),
            closed: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(host_llm::Streams::default()),
        }
    };
    for msg in Messages::new(BufReader::new(stream)) {
        activity.store(now_ms(epoch), Ordering::Relaxed);
        match msg.as_tether_frame() {
            Some(Ok(frame)) if frame.direction() == Direction::Egress => {
                let answered = (frame.kind == kind::ASSISTANT_DONE)
                    .then(|| frame.msg_id.clone())
                    .flatten();
                store.append(frame);
                if let Some(id) = answered {
                    let _ = tx.send(Cmd::Answered(id));
                }
            }
            Some(Ok(frame)) => log::warn!(
                "tether: ignoring ingress-type frame {} from the agent",
                frame.kind
            ),
            Some(Err(e)) => log::warn!("tether: invalid frame from the agent: {e}"),
            None => match &msg {
                Message::Notification { method, params } if method == "keepalive" => {
                    let ttl = params
                        .as_ref()
                        .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
                        .and_then(|v| v["ttl_ms"].as_u64())
                        .unwrap_or(30_000)
                        .min(10 * 60 * 1000);
                    let _ = tx.send(Cmd::Lease(Some(Duration::from_millis(ttl))));
                }
                Message::Notification { method, .. } if method == "keepalive.release" => {
                    let _ = tx.send(Cmd::Lease(None));
                }
                Message::Notification { method, .. } if method == "self.restart" => {
                    let _ = tx.send(Cmd::Restart);
                }
                Message::Notification { method, params } if method == "llm.chat" => {
                    r.host_models.start(params.as_deref(), &host_conn);
                }
                Message::Notification { method, params } if method == "llm.cancel" => {
                    HostModels::cancel(params.as_deref(), &host_conn);
                }
                Message::Request { id, method, .. } => {
                    let answer = if method == "guest.self_info" {
                        Message::result(id.clone(), &*r.self_info)
                    } else {
                        Message::error(
                            id.clone(),
                            -32601,
                            format!("method {method} not supported by aegis-kit serve"),
                        )
                    };
                    let _ = tx.send(Cmd::Notify(n, answer));
                }
                _ => {} // log, activity: any message already counted as activity
            },
        }
    }
    host_conn.closed.store(true, Ordering::SeqCst);
    host_conn.streams.cancel_all();
    let _ = tx.send(Cmd::Disconnected(n));
}

/// `SSL_CERT_DIR` as a sandboxed instance gets it.
struct CertDirs {
    /// The variable's value, each folder by its real path (what stays visible inside).
    value: std::ffi::OsString,
    /// The folders the sandbox must keep visible: those in the `/tmp` or `/var/tmp` it
    /// replaces. Never one in or around serve's state (`hide`): a kept folder is readable by
    /// the instance's model through its tools, and `SSL_CERT_DIR=~/.aegis` would otherwise
    /// hand it every secret. Those stay hidden, and the agent says which folder it lacks.
    keep: Vec<PathBuf>,
}

fn cert_dirs(value: &std::ffi::OsStr, hide: &[PathBuf]) -> CertDirs {
    let mut keep = Vec::new();
    let mut real = Vec::new();
    for dir in std::env::split_paths(value).filter(|d| !d.as_os_str().is_empty()) {
        let Ok(canonical) = fs::canonicalize(&dir) else {
            real.push(dir);
            continue;
        };
        let replaced = ["/tmp", "/var/tmp"]
            .iter()
            .any(|t| canonical.starts_with(t) && canonical != Path::new(t));
        let near_state = hide
            .iter()
            .any(|h| canonical.starts_with(h) || h.starts_with(&canonical));
        if canonical.is_dir() && replaced && !near_state {
            keep.push(canonical.clone());
        }
        real.push(canonical);
    }
    CertDirs {
        value: std::env::join_paths(real).unwrap_or_else(|_| value.to_owned()),
        keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder under /tmp (which the sandbox replaces), removed when dropped.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A process group leader that is nobody's orphan until killed.
    struct Sleeper(std::process::Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn an_orphan_is_known_by_its_pid_and_start_time_and_nothing_else_is_killed() {
        let dir = Scratch(PathBuf::from(format!("/tmp/aegis-orphan-{}", std::process::id())));
        fs::create_dir_all(&dir.0).unwrap();
        let spawn = || {
            Sleeper(
                std::process::Command::new("sleep")
                    .arg("30")
                    .process_group(0)
                    .spawn()
                    .unwrap(),
            )
        };
        // SIGKILL is sent before kill_orphan returns: the process is gone within moments.
        let gone = |s: &mut Sleeper, within: Duration| {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if s.0.try_wait().unwrap().is_some() {
                    return true;
                }
                thread::sleep(Duration::from_millis(10));
            }
            false
        };
        let mut other = spawn();
        let pid = other.0.id();
        let started = tether::process::start_time(pid).expect("a live process has a start time");
        assert_eq!(
            tether::process::start_time(pid),
            Some(started),
            "the same process, the same time"
        );
        // The pid names a process that started at another time: someone else's.
        fs::write(dir.0.join("pid"), format!("{pid} {}", started + 1)).unwrap();
        kill_orphan(&dir.0);
        assert!(
            !gone(&mut other, Duration::from_millis(300)),
            "a process that is not ours was killed"
        );
        assert!(!dir.0.join("pid").exists(), "the stale pid file is removed");
        // An older serve's file, and a process whose environment names no tether of ours.
        fs::write(dir.0.join("pid"), pid.to_string()).unwrap();
        kill_orphan(&dir.0);
        assert!(other.0.try_wait().unwrap().is_none(), "killed without a marker");
        // Ours: the pid and its start time.
        let mut orphan = spawn();
        let pid = orphan.0.id();
        fs::write(
            dir.0.join("pid"),
            format!("{pid} {}", tether::process::start_time(pid).unwrap()),
        )
        .unwrap();
        kill_orphan(&dir.0);
        assert!(gone(&mut orphan, Duration::from_secs(10)), "the orphan lives on");
        assert!(other.0.try_wait().unwrap().is_none());
    }

    #[test]
    fn cert_dirs_keeps_folders_in_tmp_but_never_near_serves_state() {
        let root = Scratch(PathBuf::from(format!(
            "/tmp/aegis-cert-dirs-{}",
            std::process::id()
        )));
        let (certs, state) = (root.0.join("certs"), root.0.join("home"));
        let in_state = state.join("certs");
        fs::create_dir_all(&certs).unwrap();
        fs::create_dir_all(&in_state).unwrap();
        let link = root.0.join("link");
        std::os::unix::fs::symlink(&certs, &link).unwrap();
        let missing = root.0.join("missing");
        let list = |dirs: &[&Path]| std::env::join_paths(dirs).unwrap();
        let hide = [state.clone()];

        // A folder in /tmp is kept, by its real path, also when named through a link.
        let got = cert_dirs(&list(&[&link, Path::new("/etc")]), &hide);
        assert_eq!(got.keep, std::slice::from_ref(&certs));
        assert_eq!(got.value, list(&[&certs, Path::new("/etc")]));
        // Never serve's state, a folder in it or around it, /tmp itself or one that is
        // not there; each is still passed on (the agent names what it cannot read).
        let near = [&in_state, &state, &root.0, Path::new("/tmp"), &missing];
        let got = cert_dirs(&list(&near), &hide);
        assert!(got.keep.is_empty(), "{:?}", got.keep);
        assert_eq!(got.value, list(&near));
        // Empty entries (a stray `:`) are dropped.
        let got = cert_dirs(std::ffi::OsStr::new(&format!(":{}:", certs.display())), &hide);
        assert_eq!(
            (got.keep, got.value),
            (vec![certs.clone()], certs.into_os_string())
        );
    }
}
