//! The `bash` tool: `sh -c COMMAND` in the workspace, in a process group of its own.
//!
//! Duties:
//! 1. capture stdout and stderr on a reader thread each, keeping the first `OUTPUT_CAP`
//!    bytes and draining the rest, so a chatty command can neither block on a full pipe
//!    nor fill the agent's memory;
//! 2. end the run on exit, on the timeout or on a cancel; the latter two kill the whole
//!    process group (the shell and everything it started that stayed in the group);
//! 3. never wait forever for output: a background process that keeps the pipes open
//!    after the shell exited gets a short grace, then the tool returns what it has.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{after, bounded, select, Receiver};

use super::{cap_text, Outcome};

/// Bytes of output returned to the model.
pub const OUTPUT_CAP: usize = 10_000;
/// How long output pipes may stay open after the shell exited.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// Settings of the `bash` tool.
#[derive(Debug, Clone)]
pub struct Shell {
    /// Working folder (the workspace).
    pub dir: PathBuf,
    /// Longest run.
    pub timeout: Duration,
    /// Variables the command must not see (the agent's own API key).
    pub hidden_env: Vec<String>,
}

/// One captured stream: its first bytes and how many there were in all.
struct Captured {
    head: Vec<u8>,
    total: usize,
}

fn capture(mut pipe: impl Read) -> Captured {
    let mut head = Vec::new();
    let mut total = 0;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                let room = (OUTPUT_CAP + 1).saturating_sub(head.len());
                head.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    Captured { head, total }
}

/// How the run ended.
enum End {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

impl Shell {
    /// `sh -c command` in the workspace, in a process group of its own, with no input
    /// and without the agent's keys; its output is the caller's to direct.
    pub(super) fn command(&self, command: &str) -> Command {
        let mut cmd = self.program("sh");
        cmd.arg("-c").arg(command);
        cmd
    }

    /// `program` as the model's commands run: in the workspace, in a process group of its
    /// own, with no input and without the agent's keys.
    pub(super) fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir).stdin(Stdio::null()).process_group(0);
        for k in &self.hidden_env {
            cmd.env_remove(k);
        }
        cmd
    }

    /// Run `command`. A cancel on `cancel` kills it and returns `Outcome::Cancelled`.
    pub fn run(&self, command: &str, cancel: &Receiver<()>) -> Outcome {
        let mut cmd = self.command(command);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Done(format!("error: cannot start sh: {e}")),
        };
        let pgid = child.id() as i32;
        let (out_tx, out_rx) = bounded(2);
        for (slot, pipe) in [
            (
                0,
                child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
            (
                1,
                child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            let tx = out_tx.clone();
            let spawned = thread::Builder::new()
                .name("bash-output".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let _ = tx.send((slot, capture(pipe)));
                });
            if let Err(e) = spawned {
                kill_group(pgid);
                let _ = child.wait();
                return Outcome::Done(format!("error: cannot start an output reader: {e}"));
            }
        }
        drop(out_tx);
        let exit_rx = match exit_of(child) {
            Ok(rx) => rx,
            Err(e) => {
                kill_group(pgid);
                return Outcome::Done(format!("error: cannot wait for the command: {e}"));
            }
        };

        let end = select! {
            recv(exit_rx) -> s => match s {
                Ok(Ok(status)) => End::Exited(status),
                _ => End::Exited(ExitStatus::from_raw(0xff00)),
            },
            recv(cancel) -> _ => End::Cancelled,
            recv(after(self.timeout)) -> _ => End::TimedOut,
        };
        if !matches!(end, End::Exited(_)) {
            kill_group(pgid);
            let _ = exit_rx.recv_timeout(Duration::from_secs(5));
        }
        if matches!(end, End::Cancelled) {
            log::info!("bash: cancelled; process group {pgid} killed");
            return Outcome::Cancelled;
        }

        let mut streams: [Option<Captured>; 2] = [None, None];
        let deadline = after(PIPE_GRACE);
        while streams.iter().any(Option::is_none) {
            select! {
                recv(out_rx) -> m => match m {
                    Ok((slot, c)) => streams[slot] = Some(c),
                    Err(_) => break,
                },
                recv(deadline) -> _ => break,
            }
        }
        let [stdout, stderr] = streams;
        Outcome::Done(render(stdout, stderr, &end, self.timeout))
    }
}

/// `child`'s exit, waited for on a thread of its own, so the caller can wait for it and
/// for a timeout or a cancel at once.
pub(super) fn exit_of(mut child: Child) -> std::io::Result<Receiver<std::io::Result<ExitStatus>>> {
    let (exit_tx, exit_rx) = bounded(1);
    thread::Builder::new()
        .name("command-wait".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = exit_tx.send(child.wait());
        })?;
    Ok(exit_rx)
}

pub(super) fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn render(stdout: Option<Captured>, stderr: Option<Captured>, end: &End, timeout: Duration) -> String {
    let mut text = String::new();
    let mut total = 0;
    if let Some(c) = stdout.filter(|c| c.total > 0) {
        total += c.total;
        text.push_str(&String::from_utf8_lossy(&c.head));
    }
    if let Some(c) = stderr.filter(|c| c.total > 0) {
        total += c.total;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("stderr:\n");
        text.push_str(&String::from_utf8_lossy(&c.head));
    }
    let mut text = cap_text(text, OUTPUT_CAP, total);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    match end {
        End::Exited(s) => match (s.code(), s.signal()) {
            (Some(code), _) => text.push_str(&format!("exit status: {code}")),
            (None, Some(sig)) => text.push_str(&format!("killed by signal {sig}")),
            _ => text.push_str("exit status: unknown"),
        },
        End::TimedOut => text.push_str(&format!(
            "error: timed out after {} s; the command and its processes were killed",
            timeout.as_secs()
        )),
        End::Cancelled => {}
    }
    text
}
