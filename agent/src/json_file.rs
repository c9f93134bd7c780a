//! A small JSON file the agent keeps in the workspace and rewrites whole (`cron.json`,
//! `jobs.json`): read as a regular file (never waited on), absent read as empty, written
//! through a synced temporary file and a rename, so a reader (the host) never sees half.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The file at `path`; `T::default()` when there is none.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, String> {
    match crate::regular::read_to_string(path, crate::regular::CONFIG_CAP) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{} is damaged: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Write `value` to `path` whole.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    serde_json::to_string_pretty(value)
        .map_err(std::io::Error::other)
        .and_then(|text| tether::fsutil::replace_synced(path, text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
