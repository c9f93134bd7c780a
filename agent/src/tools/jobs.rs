//! Background jobs: `bash` with `background: true` runs a command past the call (a build,
//! a test suite, a download, a training run), and when it ends its chat gets a message
//! saying how it ended, with the end of its output, which the model answers like any
//! other: "the tests passed", sent to the chat that asked, minutes or hours later.
//!
//! Duties:
//! 1. start the command as `bash` does (the workspace, its own process group, without the
//!    agent's keys), its stdout and stderr into one pipe that a thread copies into
//!    `.aegis/jobs/job-N.log` (the first [`LOG_CAP`] bytes) while keeping the last
//!    [`TAIL`] for the message; at most [`MAX_RUNNING`] at once;
//! 2. keep the host from pausing the instance while a job runs (the keepalive lease), and
//!    kill the job's process group when it outlives its timeout;
//! 3. tell its chat exactly once, also across a crash: `.aegis/jobs/jobs.json` records a
//!    job before it starts and again when it ends; the message's `msg_id` is the job's,
//!    which the worker answers once, and the record goes once it has been. A job that was
//!    running when the agent stopped cannot be followed any more (its output pipe died
//!    with the agent): the next start kills what is left of it and tells its chat so.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{after, bounded, select, Sender};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tether::frame::User;
use tether::{Frame, Session};

use super::shell::{exit_of, kill_group, Shell};
use crate::keepalive::{Busy, Keepalive};

/// Jobs running at once, at most.
pub const MAX_RUNNING: usize = 3;
/// Longest run of a job, unless agent.json says (`tools.bash.background_timeout_secs`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Bytes of a job's output its log keeps (the first ones).
pub const LOG_CAP: u64 = 1 << 20;
/// Bytes of the end of a job's output its message shows.
pub const TAIL: usize = 3000;
/// Logs kept: a new job removes the log of the job this many before it.
const LOGS_KEPT: u64 = 20;
/// How long a job's output may stay open after its shell exited (a daemon it started).
const PIPE_GRACE: Duration = Duration::from_millis(500);
/// The name its messages come under.
const SENDER: &str = "Background job";

/// What `.aegis/jobs/jobs.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    next_id: u64,
    jobs: Vec<Job>,
}

/// One job, from its start until its chat has been told how it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    id: String,
    command: String,
    /// The chat whose reply started it, told when it ends.
    chat: Session,
    /// On whose behalf it runs (the reply's): its message is theirs, for tools and limits.
    user: Option<String>,
    pid: u32,
    /// With the pid, which process is the job's ([`tether::process::start_time`]).
    start_time: Option<u64>,
    /// Unix seconds.
    started: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<Ended>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ended {
    /// `exit status 0`, `killed by signal 9`, ...
    how: String,
    secs: u64,
    /// The last [`TAIL`] bytes of its output.
    tail: String,
    /// Bytes of output in all.
    total: u64,
}

/// The agent's background jobs.
pub struct Jobs {
    dir: PathBuf,
    shell: Shell,
    timeout: Duration,
    /// Serialises the readers and writers of `jobs.json`.
    book: Mutex<()>,
    /// Jobs stopped from their chat (`/jobs stop`), so their message says so.
    stopped: Mutex<Vec<String>>,
    /// The output of each job this process follows, for `/jobs` to show its last line.
    live: Mutex<Vec<(String, Arc<Mutex<Output>>)>>,
    /// Where a job's message goes: the router, as if the host had sent it.
    tell: Sender<Frame>,
    keepalive: Keepalive,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("dir", &self.dir).finish()
    }
}

/// How a watched job ended.
enum End {
    Exited(ExitStatus),
    TimedOut,
    /// Its exit could not be waited for: it was stopped.
    Lost,
}

impl Jobs {
    /// Jobs of `shell`'s workspace, each ended after `timeout`, their messages sent on
    /// `tell`; a running job holds `keepalive`.
    pub fn new(shell: Shell, timeout: Duration, tell: Sender<Frame>, keepalive: Keepalive) -> Arc<Jobs> {
        Arc::new(Jobs {
            dir: shell.dir.join(".aegis/jobs"),
            shell,
            timeout,
            book: Mutex::new(()),
            stopped: Mutex::default(),
            live: Mutex::default(),
            tell,
            keepalive,
        })
    }

    fn load(&self) -> Result<Book, String> {
        crate::json_file::load(&self.dir.join("jobs.json"))
    }

    fn save(&self, book: &Book) -> Result<(), String> {
        crate::json_file::save(&self.dir.join("jobs.json"), book)
    }

    /// `bash {command, background: true}` in a reply to `chat` on behalf of `user`: the
    /// job started, or why not.
    pub fn start(
        self: &Arc<Self>,
        command: &str,
        chat: &Session,
        user: Option<&str>,
    ) -> Result<String, String> {
        let _guard = self.book.lock().expect("jobs lock");
        let mut book = self.load()?;
        let running = book.jobs.iter().filter(|j| j.ended.is_none()).count();
        if running >= MAX_RUNNING {
            return Err(format!(
                "{running} background jobs are running, the most at once: wait for one to end, or stop one (kill -- -PID)"
            ));
        }
        fs::create_dir_all(&self.dir).map_err(|e| format!("cannot make {}: {e}", self.dir.display()))?;
        // The model can put a link where the folder was: logs are written inside only.
        if fs::symlink_metadata(&self.dir).is_ok_and(|m| !m.is_dir()) {
            return Err(format!("{} is not a folder", self.dir.display()));
        }
        let number = book.next_id.max(1);
        book.next_id = number + 1;
        let id = format!("job-{number}");
        if let Some(old) = number.checked_sub(LOGS_KEPT) {
            let _ = fs::remove_file(self.dir.join(format!("job-{old}.log")));
        }
        let log_path = self.dir.join(format!("{id}.log"));
        let log = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
        let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let mut cmd = self.shell.command(command);
        let second = writer
            .try_clone()
            .map_err(|e| format!("cannot make a pipe: {e}"))?;
        cmd.stdout(writer).stderr(second);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
        // The command holds the pipe's writing ends: dropped, the job's exit closes it.
        drop(cmd);
        let pid = child.id();
        let job = Job {
            id: id.clone(),
            command: command.to_string(),
            chat: chat.clone(),
            user: user.map(str::to_string),
            pid,
            start_time: tether::process::start_time(pid),
            started: unix_now(),
            ended: None,
        };
        book.jobs.push(job.clone());
        // Unrecorded, it could never be told: it does not run.
        if let Err(e) = self.save(&book) {
            kill_group(pid as i32);
            let _ = child.wait();
            return Err(e);
        }
        let busy = self.keepalive.busy();
        let jobs = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("job".into())
            .stack_size(128 * 1024)
            .spawn(move || jobs.watch(job, child, reader, log, busy));
        if let Err(e) = spawned {
            log::error!("{id}: cannot watch the job ({e}); it is told as lost at the next start");
        }
        log::info!("{id} started in the background for {}/{}", chat.channel, chat.id);
        Ok(json!({
            "ok": true,
            "job": id,
            "pid": pid,
            "log": format!(".aegis/jobs/{id}.log"),
            "note": format!(
                "runs in the background (at most {}); a message in this chat tells you when it ends, with the end of its output. Stop it with kill -- -PID.",
                tether::time::duration_in_words(self.timeout.as_secs())
            ),
        })
        .to_string())
    }

    /// Follow job `job` (`child`, its output on `pipe`) to its end, then tell its chat.
    fn watch(&self, job: Job, child: Child, pipe: std::io::PipeReader, log: File, busy: Busy) {
        let begun = Instant::now();
        let output = Arc::new(Mutex::new(Output::default()));
        self.live
            .lock()
            .expect("live jobs")
            .push((job.id.clone(), Arc::clone(&output)));
        let (eof_tx, eof_rx) = bounded::<()>(1);
        let copier = Arc::clone(&output);
        let _ = thread::Builder::new()
            .name("job-output".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                copy(pipe, log, &copier);
                let _ = eof_tx.send(());
            });
        let pid = child.id();
        let exit_rx = match exit_of(child) {
            Ok(rx) => rx,
            Err(e) => {
                // Not followed, it could never be told: it does not run.
                log::error!("{}: cannot wait for the job ({e}); stopping it", job.id);
                kill_group(pid as i32);
                bounded(0).1
            }
        };
        let end = select! {
            recv(exit_rx) -> s => match s {
                Ok(Ok(status)) => End::Exited(status),
                _ => End::Lost,
            },
            recv(after(self.timeout)) -> _ => End::TimedOut,
        };
        if matches!(end, End::TimedOut) {
            kill_group(pid as i32);
            let _ = exit_rx.recv_timeout(Duration::from_secs(5));
        }
        let _ = eof_rx.recv_timeout(PIPE_GRACE);
        let stopped = {
            let mut stopped = self.stopped.lock().expect("stopped jobs");
            let was = stopped.contains(&job.id);
            stopped.retain(|id| *id != job.id);
            was
        };
        let how = match end {
            End::Exited(_) if stopped => "stopped from the chat (/jobs stop)".into(),
            End::Exited(s) => exit_words(s),
            End::Lost => "stopped: the agent could not follow it".into(),
            End::TimedOut => {
                "stopped at the longest a job may run (agent.json tools.bash.background_timeout_secs)".into()
            }
        };
        let (tail, total) = output.lock().expect("job output").tail_and_total();
        self.live
            .lock()
            .expect("live jobs")
            .retain(|(id, _)| *id != job.id);
        self.ended(
            &job.id,
            Ended {
                how,
                secs: begun.elapsed().as_secs_f64().round() as u64,
                tail,
                total,
            },
        );
        drop(busy);
    }

    /// Record how job `id` ended and tell its chat.
    fn ended(&self, id: &str, ended: Ended) {
        let _guard = self.book.lock().expect("jobs lock");
        let mut book = match self.load() {
            Ok(b) => b,
            Err(e) => return log::error!("{id} ended ({}), but {e}", ended.how),
        };
        let Some(job) = book.jobs.iter_mut().find(|j| j.id == id) else {
            return log::warn!("{id} ended ({}), but jobs.json no longer has it", ended.how);
        };
        log::info!("{id} ended: {}", ended.how);
        job.ended = Some(ended);
        let job = job.clone();
        if let Err(e) = self.save(&book) {
            log::error!("{id}: {e}");
        }
        let _ = self.tell.send(message(&job));
    }

    /// At the agent's start: a job that was running cannot be followed any more, so what
    /// is left of it is killed and its chat told; every job whose chat was not told yet
    /// (the agent stopped first) is told now.
    pub fn recover(&self) {
        let _guard = self.book.lock().expect("jobs lock");
        let mut book = match self.load() {
            Ok(b) if !b.jobs.is_empty() => b,
            Ok(_) => return,
            Err(e) => return log::error!("background jobs: {e}"),
        };
        for job in book.jobs.iter_mut().filter(|j| j.ended.is_none()) {
            if job.start_time.is_some() && tether::process::start_time(job.pid) == job.start_time {
                kill_group(job.pid as i32);
            }
            let (tail, total) = log_tail(&self.dir.join(format!("{}.log", job.id)));
            log::warn!("{}: was running when the agent stopped; telling its chat", job.id);
            job.ended = Some(Ended {
                how: "stopped: the agent restarted while it ran".into(),
                secs: unix_now().saturating_sub(job.started),
                tail,
                total,
            });
        }
        if let Err(e) = self.save(&book) {
            log::error!("background jobs: {e}");
        }
        for job in &book.jobs {
            let _ = self.tell.send(message(job));
        }
    }

    /// The ids of every job that runs.
    pub fn running(&self) -> Vec<String> {
        let _guard = self.book.lock().expect("jobs lock");
        self.load()
            .map(|b| {
                b.jobs
                    .into_iter()
                    .filter(|j| j.ended.is_none())
                    .map(|j| j.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The jobs of `chat` that run.
    pub(super) fn running_in(&self, chat: &Session) -> Result<Vec<Running>, String> {
        let _guard = self.book.lock().expect("jobs lock");
        let live = self.live.lock().expect("live jobs");
        Ok(self
            .load()?
            .jobs
            .into_iter()
            .filter(|j| j.ended.is_none() && j.chat == *chat)
            .map(|j| Running {
                last_line: live
                    .iter()
                    .find(|(id, _)| *id == j.id)
                    .and_then(|(_, o)| o.lock().expect("job output").last_line()),
                id: j.id,
                command: j.command,
                started: j.started,
            })
            .collect())
    }

    /// Stop job `id` of `chat` (its whole process group); its message then says so.
    pub(super) fn stop(&self, id: &str, chat: &Session) -> Result<(), String> {
        let _guard = self.book.lock().expect("jobs lock");
        let book = self.load()?;
        let Some(job) = book
            .jobs
            .iter()
            .find(|j| j.id == id && j.chat == *chat && j.ended.is_none())
        else {
            return Err(format!("No job {id} runs for this chat (/jobs lists them)."));
        };
        // A pid is the job's only while it has the job's start time.
        if job.start_time.is_none() || tether::process::start_time(job.pid) != job.start_time {
            return Err(format!("{id} is ending already."));
        }
        self.stopped.lock().expect("stopped jobs").push(id.to_string());
        kill_group(job.pid as i32);
        log::info!("{id} stopped from its chat");
        Ok(())
    }

    /// The reply to message `msg_id` is done: when it was a job's, the job is forgotten.
    pub fn answered(&self, msg_id: &str) {
        let Some(id) = job_of_msg_id(msg_id) else {
            return;
        };
        let _guard = self.book.lock().expect("jobs lock");
        let Ok(mut book) = self.load() else { return };
        let before = book.jobs.len();
        book.jobs.retain(|j| j.id != id || j.ended.is_none());
        if book.jobs.len() != before {
            if let Err(e) = self.save(&book) {
                log::error!("{id}: {e}");
            }
        }
    }
}

/// The job whose end message `msg_id` names (`job-3@1796651910`), if it is one.
pub fn job_of_msg_id(msg_id: &str) -> Option<&str> {
    msg_id
        .split_once('@')
        .map(|(id, _)| id)
        .filter(|id| id.strip_prefix("job-").is_some_and(|n| n.parse::<u64>().is_ok()))
}

/// The message telling `job`'s chat how it ended. Its id is the job's and its start, so a
/// copy is answered once, and a `jobs.json` begun afresh never reuses an answered one.
fn message(job: &Job) -> Frame {
    let ended = job.ended.as_ref().expect("an ended job");
    let shown = match ended.total {
        0 => "It wrote no output.".to_string(),
        n if n as usize <= ended.tail.len() => format!("Its output ({n} bytes):"),
        n => format!(
            "The last {} of its {n} bytes of output (the first {} KiB are in .aegis/jobs/{}.log):",
            ended.tail.len(),
            LOG_CAP / 1024,
            job.id
        ),
    };
    let mut text = format!(
        "[{SENDER} {} ended: {}, after {}.]\nCommand: {}\n{shown}",
        job.id,
        ended.how,
        tether::time::duration_in_words(ended.secs),
        tether::quote::fenced(&job.command),
    );
    if ended.total > 0 {
        text.push('\n');
        text.push_str(&tether::quote::fenced(&ended.tail));
    }
    // Unnamed: the text says whose it is, where a name would label it a person's words.
    let user = User {
        id: job.user.clone(),
        ..User::default()
    };
    Frame::user_message(job.chat.clone(), &text, Some(user))
        .with_msg_id(format!("{}@{}", job.id, job.started))
}

fn exit_words(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// A job that runs, as `/jobs` shows it.
pub(super) struct Running {
    pub id: String,
    pub command: String,
    /// Unix seconds.
    pub started: u64,
    /// The last line it wrote, if any: how far it got.
    pub last_line: Option<String>,
}

/// A job's output as it is copied: how much, and its end.
#[derive(Default)]
struct Output {
    total: u64,
    tail: Vec<u8>,
}

impl Output {
    fn add(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        // Trimmed in bulk, not at every read.
        if self.tail.len() > 2 * TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
    }

    fn tail_and_total(&self) -> (String, u64) {
        (text_of_tail(&self.tail), self.total)
    }

    /// The last line with something on it; a progress bar redrawn with `\r` shows as
    /// it is now.
    fn last_line(&self) -> Option<String> {
        let tail = text_of_tail(&self.tail);
        let line = tail.lines().rev().find(|l| !l.trim().is_empty())?;
        let now = line.rsplit('\r').find(|p| !p.trim().is_empty())?;
        Some(now.trim().to_string())
    }
}

/// The last [`TAIL`] bytes of `bytes` as text, from a character's start.
fn text_of_tail(bytes: &[u8]) -> String {
    let from = bytes.len().saturating_sub(TAIL);
    let text = String::from_utf8_lossy(&bytes[from..]);
    // A cut through a character shows as one replacement at the start: dropped.
    text.trim_start_matches('\u{fffd}').to_string()
}

/// Copy `pipe` into `log` (its first [`LOG_CAP`] bytes) and `output`, until the pipe ends.
fn copy(pipe: impl Read, log: File, output: &Mutex<Output>) {
    log_head(pipe, log, |bytes| output.lock().expect("job output").add(bytes));
}

/// Copy `pipe` into `log` until the pipe ends: its first [`LOG_CAP`] bytes, then a note
/// that the rest was not kept; `seen` sees every byte. The pipe is read to its end, so
/// the writer never blocks on it.
pub(super) fn log_head(mut pipe: impl Read, mut log: File, mut seen: impl FnMut(&[u8])) {
    let mut buf = [0u8; 8192];
    let mut logged = 0u64;
    let mut full = false;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen(&buf[..n]);
        let room = (LOG_CAP - logged).min(n as u64) as usize;
        if room > 0 {
            let _ = log.write_all(&buf[..room]);
            logged += room as u64;
        }
        if room < n && !full {
            full = true;
            let _ = log.write_all(b"\n[the log keeps the first 1 MiB; the rest was not kept]\n");
        }
    }
}

/// The end of a log file that was being written when the agent stopped, and its length.
fn log_tail(path: &std::path::Path) -> (String, u64) {
    let Ok(mut f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return (String::new(), 0);
    };
    let mut bytes = Vec::new();
    let _ = Read::by_ref(&mut f).take(LOG_CAP + 1024).read_to_end(&mut bytes);
    (text_of_tail(&bytes), bytes.len() as u64)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_log_keeps_its_first_mebibyte_and_the_message_the_last_bytes() {
        let d = TempDir::new("jobs-copy");
        let path = d.path().join("job.log");
        let mut text = "é".repeat(600_000).into_bytes();
        text.extend_from_slice(b"the end.\n");
        let output = Mutex::new(Output::default());
        copy(&text[..], File::create(&path).unwrap(), &output);
        let log = fs::read(&path).unwrap();
        let note = b"\n[the log keeps the first 1 MiB; the rest was not kept]\n";
        assert_eq!(log.len() as u64, LOG_CAP + note.len() as u64);
        assert!(log.ends_with(note));
        assert_eq!(&log[..LOG_CAP as usize], &text[..LOG_CAP as usize]);
        let (tail, total) = output.lock().unwrap().tail_and_total();
        assert_eq!(total, text.len() as u64);
        // 3,000 bytes from the end fall inside a character: the tail starts at the next.
        assert!(
            tail.ends_with("ééthe end.\n") && tail.starts_with('é'),
            "{tail:.20}"
        );
        assert_eq!(tail.len(), TAIL - 1);
        let (from_file, length) = log_tail(&path);
        assert_eq!(length, log.len() as u64);
        assert!(from_file.ends_with("the rest was not kept]\n"), "{from_file:.20}");
    }

    #[test]
    fn the_last_line_is_where_a_job_got_to() {
        let mut o = Output::default();
        assert_eq!(o.last_line(), None);
        o.add(b"Downloading model\n 10%\r 55%\r");
        assert_eq!(o.last_line().as_deref(), Some("55%"));
        o.add(b"\n\n  \n");
        assert_eq!(o.last_line().as_deref(), Some("55%"));
        o.add(b"saved to out.bin\n");
        assert_eq!(o.last_line().as_deref(), Some("saved to out.bin"));
    }

    #[test]
    fn an_exit_is_said_as_its_status_or_its_signal() {
        assert_eq!(exit_words(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(exit_words(ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
