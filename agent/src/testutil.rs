//! Helpers for the unit tests.

use std::path::{Path, PathBuf};

/// A fresh folder in the temp directory, removed on drop (also when a test panics).
pub struct TempDir(PathBuf);

impl TempDir {
    /// `aegis-agent-unit-NAME-PID`, empty.
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("aegis-agent-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create a temp dir");
        TempDir(d)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
