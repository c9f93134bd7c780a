//! What the gateway remembers across restarts, per bot, under
//! `~/.aegis/gateway/{bot id}/`: `poll.json` (the next `getUpdates` offset, each chat's
//! session number and who is in `/exec` mode, written by the poller) and `render.json` (the egress cursor and
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
    /// Next `getUpdates` offset (last handled `update_id` + 1).
    pub offset: i64,
    /// Session number per chat; `/new` increments it.
    #[serde(default)]
    pub sessions: BTreeMap<i64, u32>,
    /// (chat, user) pairs in `/exec` mode. Kept across restarts and config reloads, so a
    /// command typed after one still runs as a command rather than reaching the model as
    /// a chat message.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exec: BTreeSet<(i64, i64)>,
}

impl PollState {
    /// The tether session id of `chat`: `"123"`, or `"123:2"` after `/new`.
    pub fn session_id(&self, chat: i64) -> String {
        match self.sessions.get(&chat) {
            Some(n) if *n > 0 => format!("{chat}:{n}"),
            _ => chat.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_mode_is_saved_and_older_files_still_load() {
        // A poll.json from before exec mode was kept.
        let old: PollState = serde_json::from_str(r#"{"offset": 42, "sessions": {"7": 2}}"#).unwrap();
        assert_eq!((old.offset, old.session_id(7)), (42, "7:2".to_string()));
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
}
