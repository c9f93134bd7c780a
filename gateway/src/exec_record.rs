//! The `/exec` commands running now, kept in the bot's state folder (`exec.json`), so a
//! gateway that was killed or restarted while one ran tells its chat that the output is
//! lost, instead of leaving the user waiting for it. The command itself may have been
//! stopped with the connection (`aegis-kit serve` stops it) or may run on (aegisd).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::state;

/// The longest part of a command line repeated in the notice.
const SHOWN: usize = 100;

/// One command that was running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// Its chat.
    pub chat: i64,
    /// And topic there, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<i64>,
    /// Its command line (the first characters).
    pub command: String,
}

/// The record, shared by the threads that run commands. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    path: PathBuf,
    /// Running commands by a number of their own.
    running: Arc<Mutex<(u64, BTreeMap<u64, Running>)>>,
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
        let left: BTreeMap<u64, Running> = state::load(&self.path);
        if !left.is_empty() {
            self.save(&BTreeMap::new());
        }
        left.into_values().collect()
    }

    /// `command` starts in `chat`'s `topic`; the number to give `finished`.
    pub fn started(&self, chat: i64, topic: Option<i64>, command: &str) -> u64 {
        let mut r = self.running.lock().expect("exec record lock");
        r.0 += 1;
        let id = r.0;
        let command = command.chars().take(SHOWN).collect();
        r.1.insert(id, Running { chat, topic, command });
        self.save(&r.1);
        id
    }

    /// Command `id` finished and its output was handed to the sender.
    pub fn finished(&self, id: u64) {
        let mut r = self.running.lock().expect("exec record lock");
        if r.1.remove(&id).is_some() {
            self.save(&r.1);
        }
    }

    fn save(&self, running: &BTreeMap<u64, Running>) {
        if let Err(e) = state::save(&self.path, running) {
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

    #[test]
    fn commands_running_when_the_gateway_stops_are_found_once_by_the_next_run() {
        let dir = aegis_e2e::proc::TempDir::new("gw-exec-record");
        let path = dir.join("exec.json");
        let rec = ExecRecord::new(path.clone());
        let a = rec.started(7, None, "sleep 60");
        let b = rec.started(-100, Some(45), &"x".repeat(300));
        rec.finished(a);
        // The gateway dies here; the next one finds what still ran, once.
        let next = ExecRecord::new(path.clone());
        let left = next.left_over();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].chat, left[0].topic), (-100, Some(45)));
        assert!(lost_notice(&left[0]).ends_with(&format!("{}…", "x".repeat(100))));
        assert!(next.left_over().is_empty());
        let _ = b;
    }
}
