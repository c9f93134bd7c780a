//! Chats the bot can no longer reach: a user who blocked it, a group that removed it.
//! Telegram says so only when the bot writes there (403, "bot was blocked by the user"),
//! and every scheduled task replying there would still run, the model and its tools paid
//! for, its reply refused. So the chat is written into the instance's
//! `.aegis/gone-chats.json`, which the agent reads before a task's run, and taken out as
//! soon as the chat writes again (a user who unblocks the bot presses Start; a group that
//! adds it back sends the service message of its joining).
//!
//! The workspace is the guest's: the file is read and replaced through a descriptor of
//! `.aegis` (`tether::dirfd`), never through a link put there.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tether::cron::{GONE_FILE, MAX_FILE};
use tether::dirfd;

use crate::workspace::InstanceWorkspace;

/// Whether Telegram's refusal `description` (of a 403) says the chat is out of reach for
/// good, rather than the call being wrong.
pub fn says_gone(description: &str) -> bool {
    [
        "bot was blocked by the user",
        "bot was kicked",
        "user is deactivated",
        "bot is not a member",
    ]
    .iter()
    .any(|s| description.contains(s))
}

/// The gone chats of one instance's workspace.
pub struct GoneChats {
    workspace: Arc<InstanceWorkspace>,
    /// The file's `chats`, once read (`None` until the workspace is known): by chat id
    /// (as sessions name chats: `42`, `-1001234`), `{"since": RFC3339, "why": ...}`. Kept
    /// as JSON: derived (de)serializers would be 8 KiB of the gateway for this.
    known: Mutex<Option<Map<String, Value>>>,
}

impl GoneChats {
    /// For the instance whose workspace `workspace` finds.
    pub fn new(workspace: Arc<InstanceWorkspace>) -> GoneChats {
        GoneChats {
            workspace,
            known: Mutex::new(None),
        }
    }

    /// Telegram refused to write to `chat` for good (`why`).
    pub fn gone(&self, chat: i64, why: &str) {
        self.change(|chats| {
            let key = chat.to_string();
            if chats.contains_key(&key) {
                return false;
            }
            log::warn!("chat {chat}: {why}; its scheduled tasks are not run until it writes again");
            chats.insert(key, json!({"since": tether::time::now_rfc3339(), "why": why}));
            true
        });
    }

    /// `chat` wrote to the bot: it is reachable again, if it was gone.
    pub fn back(&self, chat: i64) {
        self.change(|chats| {
            let back = chats.remove(&chat.to_string()).is_some();
            if back {
                log::info!("chat {chat} writes again; its scheduled tasks run again");
            }
            back
        });
    }

    /// Apply `change` to the chats (read from the file the first time), and write the
    /// file when it says it changed them.
    fn change(&self, change: impl FnOnce(&mut Map<String, Value>) -> bool) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(ws) = self.workspace.get() else {
            return; // logged by the lookup; the next message tries again
        };
        let aegis = match dirfd::open_dir(ws).and_then(|d| dirfd::subdir(&d, ".aegis")) {
            Ok(a) => a,
            // No `.aegis` yet: no task either, so nothing to keep from running.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                log::warn!("{}/.aegis: {e}", ws.display());
                return;
            }
        };
        let chats = known.get_or_insert_with(|| {
            dirfd::read_file(&aegis, GONE_FILE, MAX_FILE)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|mut v| match v["chats"].take() {
                    Value::Object(chats) => Some(chats),
                    _ => None,
                })
                .unwrap_or_default()
        });
        if !change(chats) {
            return;
        }
        let file = json!({"chats": chats});
        let written = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| dirfd::replace_at(&aegis, GONE_FILE, &bytes));
        if let Err(e) = written {
            log::warn!("{}/.aegis/{GONE_FILE}: {e}", ws.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_for_good_make_a_chat_gone() {
        for why in [
            "Forbidden: bot was blocked by the user",
            "Forbidden: bot was kicked from the supergroup chat",
            "Forbidden: user is deactivated",
            "Forbidden: bot is not a member of the channel chat",
        ] {
            assert!(says_gone(why), "{why}");
        }
        assert!(!says_gone(
            "Forbidden: not enough rights to send text messages to the chat"
        ));
        assert!(!says_gone("Bad Request: message is not modified"));
    }

    #[test]
    fn a_chat_is_written_once_when_gone_and_taken_out_when_back() {
        let d = std::env::temp_dir().join(format!("gateway-unit-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(".aegis")).unwrap();
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(d.clone());
        let file = d.join(".aegis").join(GONE_FILE);
        let read =
            || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
        let chats = GoneChats::new(Arc::new(InstanceWorkspace::at(&d)));
        chats.back(42);
        assert!(!file.exists(), "nothing gone, nothing written");
        chats.gone(42, "Forbidden: bot was blocked by the user");
        let first = read();
        assert_eq!(
            first["chats"]["42"]["why"],
            "Forbidden: bot was blocked by the user"
        );
        chats.gone(42, "Forbidden: user is deactivated");
        assert_eq!(read(), first, "kept as it first went");
        // A gateway started again knows it from the file, and lifts it.
        let again = GoneChats::new(Arc::new(InstanceWorkspace::at(&d)));
        again.gone(-100, "Forbidden: bot was kicked from the supergroup chat");
        assert!(
            read()["chats"].get("42").is_some(),
            "read first, not written over"
        );
        again.back(42);
        let now = read();
        assert!(now["chats"].get("42").is_none(), "{now}");
        assert!(now["chats"].get("-100").is_some(), "{now}");

        // Telegram's word of the bot's membership (`my_chat_member`).
        let mut tg = crate::telegram::Telegram::new("http://127.0.0.1:9", "1:x");
        tg.watch_gone(Arc::new(GoneChats::new(Arc::new(InstanceWorkspace::at(&d)))));
        let status = |chat: i64, status: &str| {
            tg.membership_changed(
                &serde_json::json!({"chat": {"id": chat}, "new_chat_member": {"status": status}}),
            )
        };
        status(-200, "left");
        status(7, "kicked");
        let now = read();
        assert_eq!(now["chats"]["-200"]["why"], "the bot was removed from the group");
        assert_eq!(now["chats"]["7"]["why"], "the user blocked the bot");
        status(-100, "administrator");
        status(7, "member");
        let now = read();
        let left: Vec<&String> = now["chats"].as_object().unwrap().keys().collect();
        assert_eq!(left, ["-200"]);
    }
}
