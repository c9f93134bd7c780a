//! What the gateway remembers across restarts, per bot, under
//! `~/.aegis/gateway/{bot id}/`: `poll.json` (the next `getUpdates` offset, the updates
//! read but not handled yet, each chat's session number, who is in `/exec` mode and the
//! groups that became supergroups, written through the poller's journal) and `render.json` (the egress cursor and
//! the replies in progress, written by the renderer). Each file has one writer and is
//! replaced atomically, so a crash leaves either the old or the new version.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The poller's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PollState {
    /// Next `getUpdates` offset: every update before it is handled or in `pending`.
    pub offset: i64,
    /// What was read from Telegram and is not handled yet, in the order read: each entry
    /// the updates handled as one (a message, or an album's photos), as Telegram sent them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Vec<serde_json::Value>>,
    /// How many runs began with each unit of `pending` (by its first `update_id`) still
    /// there: one that keeps a gateway from living through its handling is given up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tries: BTreeMap<i64, u32>,
    /// Session number per chat; `/new` increments it.
    #[serde(default)]
    pub sessions: BTreeMap<i64, u32>,
    /// Session number per topic (`"{chat}:t{topic}"`); `/new` in a topic increments it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, u32>,
    /// Supergroups that were groups (new id → old id): answered as the old group was
    /// (`allowed_chats`), and what the sender learns at start-up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub migrated: BTreeMap<i64, i64>,
    /// (chat, user) pairs in `/exec` mode. Kept across restarts and config reloads, so a
    /// command typed after one still runs as a command rather than reaching the model as
    /// a chat message.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exec: BTreeSet<(i64, i64)>,
    /// [ours] The message last passed on per chat (`"123"`) and topic (`"123:t45"`): its
    /// Telegram id and the `msg_id` it went as (an edit's, once edited). An edit of it
    /// stops the reply running for its old words, and a draft's stop button names the
    /// version answered, also after a restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latest: BTreeMap<String, (i64, String)>,
    /// [ours] What each sender sent lately, by Telegram user id, for `rate_limit`
    /// ([`crate::rate`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rates: BTreeMap<i64, crate::rate::Sent>,
}

impl PollState {
    /// The tether session id of `chat`, or of `topic` in it: `"123"`, or `"123:2"` after
    /// `/new`; in a topic `"123:t45"`, then `"123:t45:2"` (each topic a conversation of
    /// its own, as Telegram shows it).
    pub fn session_id(&self, chat: i64, topic: Option<i64>) -> String {
        let (base, n) = match topic {
            None => (chat.to_string(), self.sessions.get(&chat)),
            Some(t) => {
                let base = place(chat, Some(t));
                let n = self.topics.get(&base);
                (base, n)
            }
        };
        match n {
            Some(n) if *n > 0 => format!("{base}:{n}"),
            _ => base,
        }
    }

    /// Message `id` went to the instance as `msg_id`, the last at (`chat`, `topic`).
    pub fn passed(&mut self, chat: i64, topic: Option<i64>, id: i64, msg_id: &str) {
        self.latest.insert(place(chat, topic), (id, msg_id.to_string()));
    }

    /// The `msg_id` message `id` last went as, if it is the last passed on at (`chat`,
    /// `topic`).
    pub fn last_passed(&self, chat: i64, topic: Option<i64>, id: i64) -> Option<String> {
        self.latest
            .get(&place(chat, topic))
            .filter(|(last, _)| *last == id)
            .map(|(_, msg_id)| msg_id.clone())
    }

    /// `/new` in `chat` (or in `topic` of it): the next message starts a new session.
    pub fn new_session(&mut self, chat: i64, topic: Option<i64>) {
        let n = match topic {
            None => self.sessions.entry(chat).or_insert(0),
            Some(t) => self.topics.entry(place(chat, Some(t))).or_insert(0),
        };
        *n += 1;
    }
}

/// The key of a chat (`"123"`) or of a topic in it (`"123:t45"`).
fn place(chat: i64, topic: Option<i64>) -> String {
    match topic {
        None => chat.to_string(),
        Some(t) => format!("{chat}:t{t}"),
    }
}

/// What handling a message changed, saved in the same write that marks it handled (so a
/// crash never applies it twice, nor the message's notice without it).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `/exec`: (chat, user) now runs commands.
    EnterExec(i64, i64),
    /// `/exit`, or a user no longer in `exec_users`: (chat, user) talks to the agent again.
    LeaveExec(i64, i64),
    /// `/new` in (chat, topic).
    NewSession(i64, Option<i64>),
    /// Group `old` became the supergroup `new`.
    Migrated {
        /// The group's id.
        old: i64,
        /// The supergroup's id.
        new: i64,
    },
}

impl PollState {
    /// Apply what handling a message changed.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::EnterExec(chat, user) => {
                self.exec.insert((chat, user));
            }
            Change::LeaveExec(chat, user) => {
                self.exec.remove(&(chat, user));
            }
            Change::NewSession(chat, topic) => self.new_session(chat, topic),
            Change::Migrated { old, new } => {
                self.migrated.insert(new, old);
            }
        }
    }
}

/// The state folder of one bot.
pub fn dir(bot_id: &str) -> PathBuf {
    tether::paths::aegis_home().join("gateway").join(bot_id)
}

/// Read a state file; a missing file is the default, a corrupt one is reported and reset.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> T {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            log::warn!("{}: unreadable ({e}); starting fresh", path.display());
            T::default()
        }),
        Err(_) => T::default(),
    }
}

/// Replace a state file atomically.
pub fn save<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    // Saved often while replies stream: crash-safe, not synced (a power loss costs at
    // most a repeated edit).
    tether::fsutil::replace(path, &serde_json::to_vec(value).map_err(io::Error::other)?)
}

/// Replace a state file atomically and durably (it survives a power loss too): for what
/// no one else keeps, such as updates Telegram was told to forget.
pub fn save_synced<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    tether::fsutil::replace_synced(path, &serde_json::to_vec(value).map_err(io::Error::other)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_mode_is_saved_and_older_files_still_load() {
        // A poll.json from before exec mode was kept.
        let old: PollState = serde_json::from_str(r#"{"offset": 42, "sessions": {"7": 2}}"#).unwrap();
        assert_eq!((old.offset, old.session_id(7, None)), (42, "7:2".to_string()));
        assert!(old.exec.is_empty());
        assert!(
            !serde_json::to_string(&old).unwrap().contains("exec"),
            "nobody in exec mode: the file keeps its old shape"
        );
        let mut st = old;
        st.exec.insert((-100, 7));
        st.exec.insert((7, 7));
        let json = serde_json::to_string(&st).unwrap();
        let back: PollState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st, "{json}");
        assert!(back.exec.contains(&(-100, 7)) && !back.exec.contains(&(-100, 8)));
    }

    #[test]
    fn each_topic_is_a_conversation_of_its_own() {
        let mut st = PollState::default();
        assert_eq!(st.session_id(-100, Some(45)), "-100:t45");
        st.new_session(-100, Some(45));
        assert_eq!(st.session_id(-100, Some(45)), "-100:t45:1");
        // Neither the chat outside topics nor another topic moved.
        assert_eq!(st.session_id(-100, None), "-100");
        assert_eq!(st.session_id(-100, Some(46)), "-100:t46");
        st.new_session(-100, None);
        assert_eq!(st.session_id(-100, None), "-100:1");
        assert_eq!(st.session_id(-100, Some(45)), "-100:t45:1");
        let back: PollState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }
}
