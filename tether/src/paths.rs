//! Where the kit keeps its files: `~/.aegis` unless `AEGIS_HOME` says otherwise.

use std::path::PathBuf;

/// The aegis state folder: `$AEGIS_HOME`, else `$HOME/.aegis`, else `./.aegis`.
pub fn aegis_home() -> PathBuf {
    if let Some(h) = std::env::var_os("AEGIS_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".aegis"))
        .unwrap_or_else(|| PathBuf::from(".aegis"))
}
