//! Files replaced whole: the new content is written beside the file, then renamed over
//! it, so a reader or a crash sees the old content or the new, never half of either.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

fn temp_of(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replace `path` with `bytes` (its folder is created). Survives the writer's crash; a
/// power loss may leave the old content.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = temp_of(path);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// As [`replace`], and synced to disk (file, then folder) before returning, so the new
/// content also survives a power loss.
pub fn replace_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = temp_of(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_replace_whole_files_and_leave_no_temporary() {
        let d = std::env::temp_dir().join(format!("tether-unit-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let f = d.join("sub/state.json");
        replace(&f, b"one").unwrap();
        replace_synced(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        fs::remove_dir_all(&d).unwrap();
    }
}
