//! `/exec` mode, as upstream's gateway has it: each message of a user in exec mode runs as
//! `sh -c TEXT` in the instance through aegisd's exec API (`POST /v1/instances/{id}/exec`,
//! which wakes a stopped instance), without the model; the output comes back as one
//! message with the exit status. `/exit` returns to chat mode.
//!
//! A shell in the instance reads its secrets and workspace, so exec mode is only for the
//! Telegram users `exec_users` names (none by default), and it belongs to the user, not to
//! the chat: in a group, another member's messages still go to the agent. Who is in exec
//! mode is saved with the poller's state, so a restart or a config reload does not turn
//! the next command into a message to the model; a command starts only after its message
//! is marked handled, so one re-read after a crash never runs twice.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Sender};
use tether::client::{ExecEvent, ExecStream};
use tether::lines::LineError;
use tether::slots::Slots;
use tether::AegisClient;

use crate::markdown::escape;
use crate::render::{Action, DraftsRefused};

/// The answer to `/exec`.
pub const ENTER: &str = "⚡ Exec mode. Each command runs in a fresh shell.\nUse && to chain: cd /workspace && ls -la\nSend /exit to return to chat.";
/// The answer to `/exit` in exec mode.
pub const LEAVE: &str = "💬 Back to chat mode.";
/// The answer to `/exec` from a user `exec_users` does not name.
pub const REFUSED: &str =
    "⛔ Running commands is not enabled for you on this bot (gateway.json: exec_users).";
/// Commands of one bot running at once.
pub const MAX_RUNNING: usize = 4;
/// How long the gateway waits for a command's output (under aegisd the command itself may
/// run on); a little over serve's own limit, so serve's "killed" line gets through.
pub const WAIT: Duration = Duration::from_secs(630);
/// Characters of output shown (the end of it: where errors and results are).
const SHOWN: usize = 3500;
/// Output kept while a command runs.
const KEPT: usize = 64 * 1024;
/// Telegram shows "typing…" for 5 s.
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Drafts of a running command's output, at most this often (as replies stream).
const DRAFT_EVERY: Duration = Duration::from_secs(1);

/// A command a user in exec mode sent.
#[derive(Debug, PartialEq)]
pub struct Command {
    /// Chat it came from, where its output goes.
    pub chat: i64,
    /// And the topic there, if any.
    pub topic: Option<i64>,
    /// The command line, for `sh -c`.
    pub text: String,
    /// Whether its output may show as a draft (a private chat, `stream_mode` not `edit`).
    pub drafts: bool,
}

/// The commands of one bot: how many run, and whether their output may show as drafts.
/// Who is in exec mode is the poller's state (`PollState::exec`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecMode {
    running: Slots,
    /// What runs, on disk, for the next run of the gateway should this one die.
    record: crate::exec_record::ExecRecord,
    /// Set by the sender when the Bot API refuses drafts: output then shows only at the end.
    drafts_refused: DraftsRefused,
}

impl ExecMode {
    /// No command running yet; `drafts_refused` is the bot's (the sender's) flag; what
    /// runs is recorded in `record` (a file of the bot's state folder).
    pub fn new(drafts_refused: DraftsRefused, record: std::path::PathBuf) -> ExecMode {
        ExecMode {
            running: Slots::new(MAX_RUNNING),
            drafts_refused,
            record: crate::exec_record::ExecRecord::new(record),
        }
    }

    /// Tell the chats of commands that were running when the last run of the gateway
    /// stopped that their output is lost.
    pub fn recover(&self, actions: &Sender<Action>) {
        for r in self.record.left_over() {
            log::warn!(
                "chat {}: a command was running when the gateway stopped: its output is lost",
                r.chat
            );
            let text = crate::exec_record::lost_notice(&r);
            let _ = actions.send(Action::notice(r.chat, r.topic, text, None));
        }
    }

    /// Run `command` in `instance` on a thread of its own; its result goes to its chat
    /// (with `drafts`, its output also shows as a draft while it runs). A command over the
    /// bot's `MAX_RUNNING` is refused at once.
    pub fn run(&self, aegis: AegisClient, instance: String, command: Command, actions: Sender<Action>) {
        let Command {
            chat,
            topic,
            text,
            drafts,
        } = command;
        let say = |text: String| {
            let _ = actions.send(Action::notice(chat, topic, text, None));
        };
        let Some(slot) = self.running.take() else {
            return say(format!(
                "⏳ {MAX_RUNNING} commands are still running; send this again when one has finished."
            ));
        };
        let actions2 = actions.clone();
        let refused = self.drafts_refused.clone();
        let record = self.record.clone();
        let id = record.started(chat, topic, &text);
        let spawned = thread::Builder::new()
            .name("exec".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let drafts = drafts.then_some(&refused);
                let (text, html) = run(&aegis, &instance, (chat, topic), &text, drafts, &actions2);
                let _ = actions2.send(Action::notice(chat, topic, text, html));
                record.finished(id);
                drop(slot);
            });
        if let Err(e) = spawned {
            self.record.finished(id);
            say(format!("exec failed: {e}"));
        }
    }
}

/// What a stream told: the output's end, its size, the exit status if it came.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    output: String,
    total: usize,
    exit: Option<i64>,
    /// Why the stream ended without a status.
    broken: Option<String>,
}

/// Run `text` and return the message to send (plain, and HTML when formatted), keeping
/// the typing indicator up `at` (chat, topic) meanwhile and, with `drafts`, showing the
/// output's end as a draft while it grows (until the Bot API refuses one).
fn run(
    aegis: &AegisClient,
    instance: &str,
    at: (i64, Option<i64>),
    text: &str,
    drafts: Option<&DraftsRefused>,
    actions: &Sender<Action>,
) -> (String, Option<String>) {
    let (chat, topic) = at;
    // sh -c, so builtins (cd, export), pipes and redirections work: the user types shell.
    let reader = match aegis.exec(instance, &["sh", "-c", text], WAIT) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("chat {chat}: exec in {instance} failed: {e}");
            return (format!("exec failed: {e}"), None);
        }
    };
    let (lines_tx, lines_rx) = unbounded::<String>();
    let (done_tx, done_rx) = bounded(1);
    let spawned = thread::Builder::new()
        .name("exec-read".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let outcome = read(ExecStream::from_reader(reader), &mut |l| {
                let _ = lines_tx.send(l.to_string());
            });
            let _ = done_tx.send(outcome);
        });
    if let Err(e) = spawned {
        return (format!("exec failed: {e}"), None);
    }
    let draft_id = draft_id(chat);
    let mut live = String::new();
    let (mut changed, mut typed, mut drafted) = (false, None::<Instant>, None::<Instant>);
    let outcome = loop {
        select! {
            recv(done_rx) -> o => break o.unwrap_or_default(),
            recv(lines_rx) -> l => {
                if let Ok(l) = l {
                    live.push_str(&l);
                    live.push('\n');
                    keep_end(&mut live, 2 * SHOWN);
                    changed = true;
                }
            }
            default(Duration::from_millis(250)) => {}
        }
        let now = Instant::now();
        if typed.is_none_or(|t| now - t >= TYPING_EVERY) {
            let _ = actions.send(Action::Typing {
                chat,
                topic,
                busy: crate::render::Busy::Typing,
            });
            typed = Some(now);
        }
        let may_draft = drafts.is_some_and(|refused| !refused.is_set());
        if may_draft && changed && drafted.is_none_or(|t| now - t >= DRAFT_EVERY) {
            let _ = actions.send(Action::Draft {
                chat,
                topic,
                draft_id,
                // Monospace, as the output will be shown when the command ends.
                html: Some(format!("<pre>{}</pre>", escape(&tail(&live)))),
                text: tail(&live),
                // A command runs to its end (or its timeout); only the agent stops.
                can_stop: false,
                rich: false,
            });
            drafted = Some(now);
            changed = false;
        }
    };
    log::info!(
        "chat {chat}: exec in {instance}: {} bytes of output, exit {:?}",
        outcome.total,
        outcome.exit
    );
    format(&outcome)
}

/// A draft id of its own for one command (non-zero, as Telegram wants).
fn draft_id(chat: i64) -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as i64);
    ((nanos ^ chat) & i64::MAX).max(1)
}

/// `s` without its beginning, so it holds at most about `max` bytes (on a character
/// boundary).
fn keep_end(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = s.len() - max;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}

/// The last `SHOWN` characters of `s`.
fn tail(s: &str) -> String {
    let chars = s.chars().count();
    s.chars().skip(chars.saturating_sub(SHOWN)).collect()
}

/// Read an exec stream to its `done` line (or its end); `on_line` sees each output line.
fn read(events: ExecStream, on_line: &mut dyn FnMut(&str)) -> Outcome {
    let mut o = Outcome::default();
    for event in events {
        match event {
            Ok(ExecEvent::Done(code)) => {
                o.exit = Some(code);
                return o;
            }
            Ok(ExecEvent::Line { text, .. }) => {
                on_line(&text);
                o.total += text.len() + 1;
                o.output.push_str(&text);
                o.output.push('\n');
                if o.output.len() > 2 * KEPT {
                    keep_end(&mut o.output, KEPT);
                }
            }
            Err(LineError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                o.broken = Some(format!(
                    "stopped waiting after {} min; the command may still run",
                    WAIT.as_secs() / 60
                ));
                return o;
            }
            Err(e) => {
                o.broken = Some(format!("the output stream broke: {e}"));
                return o;
            }
        }
    }
    o.broken
        .get_or_insert_with(|| "the output stream ended without an exit status".into());
    o
}

/// The message for an outcome: the output's last `SHOWN` characters in a code block, then
/// the exit status (marked when not 0).
fn format(o: &Outcome) -> (String, Option<String>) {
    let status = match (o.exit, &o.broken) {
        (Some(0), _) => "exit: 0".to_string(),
        (Some(code), _) => format!("⚠️ exit: {code}"),
        (None, Some(why)) => format!("⚠️ {why}"),
        (None, None) => "⚠️ no exit status".to_string(),
    };
    let body = o.output.trim_end_matches('\n');
    if body.is_empty() {
        return (status, None);
    }
    let chars = body.chars().count();
    let (shown, note) = if chars > SHOWN {
        let tail: String = body.chars().skip(chars - SHOWN).collect();
        (
            tail,
            format!("… ({} bytes of output; the last {SHOWN} characters)\n", o.total),
        )
    } else {
        (body.to_string(), String::new())
    };
    let plain = format!("{note}{shown}\n{status}");
    let html = format!(
        "{}<pre>{}</pre>\n{}",
        escape(&note),
        escape(&shown),
        escape(&status)
    );
    (plain, Some(html))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of `ndjson`, its last line terminated as aegisd terminates every line.
    fn outcome(ndjson: &str) -> Outcome {
        let body = format!("{}\n", ndjson.trim_end_matches('\n')).into_bytes();
        read(
            ExecStream::from_reader(Box::new(std::io::Cursor::new(body))),
            &mut |_| {},
        )
    }

    #[test]
    fn the_stream_gives_the_output_and_the_exit_status() {
        let o = outcome(concat!(
            r#"{"exec_id":"e1","started_at":"2026-12-02T08:00:00Z"}"#,
            "\n",
            r#"{"ts":"2026-12-02T08:00:00Z","stream":"stdout","line":"hi <b>","exec_id":"e1"}"#,
            "\n",
            "not json\n",
            r#"{"ts":"2026-12-02T08:00:00Z","stream":"stderr","line":"oops & more","exec_id":"e1"}"#,
            "\n",
            r#"{"exec_id":"e1","exit_code":3,"done":true}"#,
            "\n",
            r#"{"line":"after done"}"#,
            "\n",
        ));
        assert_eq!(o.output, "hi <b>\noops & more\n");
        assert_eq!(o.exit, Some(3));
        let (plain, html) = format(&o);
        assert_eq!(plain, "hi <b>\noops & more\n⚠️ exit: 3");
        assert_eq!(
            html.unwrap(),
            "<pre>hi &lt;b&gt;\noops &amp; more</pre>\n⚠️ exit: 3"
        );
        assert_eq!(
            format(&outcome(r#"{"exit_code":0,"done":true}"#)),
            ("exit: 0".into(), None)
        );
    }

    #[test]
    fn a_stream_without_an_end_says_so_and_long_output_shows_its_end() {
        let o = outcome(r#"{"line":"partial"}"#);
        assert_eq!(o.exit, None);
        assert_eq!(
            format(&o).0,
            "partial\n⚠️ the output stream ended without an exit status"
        );
        let lines: String = (0..30_000)
            .map(|i| format!("{{\"line\":\"line {i}\"}}\n"))
            .collect();
        let o = outcome(&(lines + r#"{"exit_code":0,"done":true}"#));
        assert!(
            o.output.len() <= 2 * KEPT,
            "bounded while reading: {}",
            o.output.len()
        );
        let (plain, _) = format(&o);
        assert!(
            plain.starts_with("… (318890 bytes of output; the last 3500 characters)\n"),
            "{}",
            &plain[..80]
        );
        assert!(plain.ends_with("line 29999\nexit: 0"), "the end is kept");
        assert!(plain.chars().count() < 3700);
    }
}
