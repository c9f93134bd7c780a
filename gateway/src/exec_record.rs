//! The `/exec` commands running now, kept in the bot's state folder (`exec-running`), so a
//! gateway that was killed or restarted while one ran tells its chat that the output is
//! lost, instead of leaving the user waiting for it. The command itself may have been
//! stopped with the connection (`aegis-kit serve` stops it) or may run on (aegisd).
//!
//! One line per command, `CHAT TAB TOPIC-or-dash TAB COMMAND` (the command's tabs and line
//! breaks as spaces): the gateway's JSON state types would cost 20 KB of serde code for
//! three fields.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The longest part of a command line repeated in the notice.
const SHOWN: usize = 100;

/// One command that was running.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// Its chat.
    pub chat: i64,
    /// And topic there, if any.
    pub topic: Option<i64>,
    /// Its command line (the first characters, on one line).
    pub command: String,
}

impl Running {
    fn line(&self) -> String {
        let topic = self.topic.map_or("-".to_string(), |t| t.to_string());
        format!("{}\t{topic}\t{}\n", self.chat, self.command)
    }

    fn parse(line: &str) -> Option<Running> {
        let mut f = line.splitn(3, '\t');
        let chat = f.next()?.parse().ok()?;
        let topic = match f.next()? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let command = f.next()?.to_string();
        Some(Running { chat, topic, command })
    }
}

/// The running commands by numbers of their own (a handful at most, `MAX_RUNNING`: a list
/// does), and the last number given.
#[derive(Debug, Default)]
struct Numbered {
    last: u64,
    running: Vec<(u64, Running)>,
}

/// The record, shared by the threads that run commands. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    path: PathBuf,
    running: Arc<Mutex<Numbered>>,
}

impl ExecRecord {
    /// The record in `path`, empty.
    pub fn new(path: PathBuf) -> ExecRecord {
        ExecRecord {
            path,
            running: Arc::default(),
        }
    }

    /// Commands a previous run of the gateway left running, which are forgotten now.
    pub fn left_over(&self) -> Vec<Running> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let left: Vec<Running> = text.lines().filter_map(Running::parse).collect();
        if !text.is_empty() {
            self.save(&[]);
        }
        left
    }

    /// `command` starts in `chat`'s `topic`; the number to give `finished`.
    pub fn started(&self, chat: i64, topic: Option<i64>, command: &str) -> u64 {
        let mut r = self.running.lock().expect("exec record lock");
        r.last += 1;
        let id = r.last;
        let command = command
            .chars()
            .take(SHOWN)
            .map(|c| if c == '\t' || c.is_control() { ' ' } else { c })
            .collect();
        r.running.push((id, Running { chat, topic, command }));
        self.save(&r.running);
        id
    }

    /// Command `id` finished and its output was handed to the sender.
    pub fn finished(&self, id: u64) {
        let mut r = self.running.lock().expect("exec record lock");
        let before = r.running.len();
        r.running.retain(|(n, _)| *n != id);
        if r.running.len() != before {
            self.save(&r.running);
        }
    }

    fn save(&self, running: &[(u64, Running)]) {
        let text: String = running.iter().map(|(_, r)| r.line()).collect();
        if let Err(e) = tether::fsutil::replace(&self.path, text.as_bytes()) {
            log::error!("cannot save {}: {e}", self.path.display());
        }
    }
}

/// What the chat of a command left running is told.
pub fn lost_notice(r: &Running) -> String {
    let ellipsis = if r.command.chars().count() >= SHOWN {
        "…"
    } else {
        ""
    };
    format!(
        "⚠️ The gateway restarted while this command ran, so its output is lost (the command may have been stopped, or may still be running):\n{}{ellipsis}",
        r.command
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the command line, its record reads back as written, one line each.
        #[test]
        fn a_record_line_reads_back(chat in proptest::prelude::any::<i64>(),
                topic in proptest::option::of(proptest::prelude::any::<i64>()),
                command in "\\PC{0,40}") {
            let command: String = command.chars().map(|c| if c == '\t' || c.is_control() { ' ' } else { c }).collect();
            let r = Running { chat, topic, command };
            let line = r.line();
            proptest::prop_assert_eq!(line.matches('\n').count(), 1);
            proptest::prop_assert_eq!(Running::parse(line.trim_end_matches('\n')), Some(r));
        }
    }

    #[test]
    fn commands_running_when_the_gateway_stops_are_found_once_by_the_next_run() {
        let dir = aegis_e2e::proc::TempDir::new("gw-exec-record");
        let path = dir.join("exec-running");
        let rec = ExecRecord::new(path.clone());
        let a = rec.started(7, None, "sleep 60");
        let b = rec.started(-100, Some(45), &format!("a\tb\nc{}", "x".repeat(300)));
        rec.finished(a);
        // The gateway dies here; the next one finds what still ran, once.
        let next = ExecRecord::new(path.clone());
        let left = next.left_over();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].chat, left[0].topic), (-100, Some(45)));
        assert!(
            lost_notice(&left[0]).ends_with(&format!("\na b c{}…", "x".repeat(95))),
            "{}",
            lost_notice(&left[0])
        );
        assert!(next.left_over().is_empty());
        let _ = b;
    }
}
