//! What the gateway remembers across restarts, per bot, under
//! `~/.aegis/gateway/{bot id}/`: `poll.json` (the next `getUpdates` offset and each
//! chat's session number, written by the poller) and `render.json` (the egress cursor and
//! the replies in progress, written by the renderer). Each file has one writer and is
//! replaced atomically, so a crash leaves either the old or the new version.

use std::collections::BTreeMap;
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
