//! The copies the agent makes for its tools (a photo in `inbox/photo-HASH.jpg`, an image
//! an MCP tool returned in `mcp/SERVER-HASH.png`) stay within a budget per folder: a
//! browser server that screenshots every step would otherwise fill the instance's disk
//! over weeks, and with it the session files. The newest are kept; the session keeps
//! its own copy of each photo (in the blob store), so only the tools' copy goes.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Bytes of copies one folder keeps, at most.
pub const MAX_BYTES: u64 = 100 * 1024 * 1024;

/// Whether `name` is one of our copies: `STEM-HASH.EXT` with a 12-digit lowercase hex
/// hash, starting with `prefix`.
pub fn ours(name: &str, prefix: &str) -> bool {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    let Some((_, hash)) = stem.rsplit_once('-') else {
        return false;
    };
    name.starts_with(prefix)
        && hash.len() == 12
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (1..=5).contains(&ext.len())
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The copy at `dest` (named `PREFIX…-HASH.EXT`) was just written, or found already
/// there: it counts as the newest, and the oldest of its folder go past `MAX_BYTES`.
pub fn kept(dest: &Path, prefix: &str) {
    touch(dest);
    let Some(folder) = dest.parent() else { return };
    let mine = |n: &str| ours(n, prefix);
    if let Err(e) = keep_newest(folder, mine, MAX_BYTES, dest, SystemTime::now()) {
        log::debug!("cannot look for old copies in {}: {e}", folder.display());
    }
}

/// The file at `path` counts as the newest.
pub fn touch(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // Never through a link planted in its place since it was checked.
    let touched = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        log::debug!("cannot mark {} as used now: {e}", path.display());
    }
}

/// Remove the oldest copies in `folder` (names `ours` accepts) while they take more than
/// `max` bytes in all; `newest`, and any changed since `spared`, stay whatever their size.
/// Only regular files directly in the folder are looked at: never a link, a folder, or a
/// file the name does not claim. How many were removed.
pub fn keep_newest(
    folder: &Path,
    ours: impl Fn(&str) -> bool,
    max: u64,
    newest: &Path,
    spared: SystemTime,
) -> io::Result<usize> {
    let mut copies = Vec::new();
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| ours(n)) else {
            continue;
        };
        // The entry's own metadata: a link is a link here, not what it points to.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        let path = folder.join(name);
        let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let first = path == newest;
        copies.push((first, when, meta.len(), path));
    }
    // The one just written first, then newest to oldest.
    copies.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut total = 0u64;
    let mut removed = 0;
    for (first, when, len, path) in copies {
        total = total.saturating_add(len);
        if total <= max || first || when >= spared {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) => log::debug!("cannot remove the old copy {}: {e}", path.display()),
        }
    }
    if removed > 0 {
        log::info!(
            "removed the {removed} oldest files of {} (kept within {} MB)",
            folder.display(),
            max / (1024 * 1024)
        );
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(dir: &Path, name: &str, len: u64, age_secs: u64) -> std::path::PathBuf {
        let p = dir.join(name);
        let f = fs::File::create(&p).unwrap();
        f.set_len(len).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        p
    }

    #[test]
    fn names_of_our_copies() {
        assert!(ours("photo-1e8f927ea0c2.jpg", "photo-"));
        assert!(ours("browser-0123456789ab.png", ""));
        assert!(ours("my-server-0123456789ab.webp", ""));
        assert!(!ours("report.pdf", ""));
        assert!(!ours("photo-1e8f927ea0c2.jpg", "shot-"));
        assert!(!ours("photo-1E8F927EA0C2.jpg", "photo-"), "ours are lowercase");
        assert!(!ours("photo-1e8f927ea0c.jpg", "photo-"));
        assert!(!ours("photo-1e8f927ea0c2.tar.gz", "photo-"));
        assert!(!ours("photo-1e8f927ea0c2.", "photo-"));
        assert!(!ours("photo-1e8f927ea0c2", "photo-"));
    }

    #[test]
    fn the_oldest_copies_go_and_nothing_else() {
        let dir = crate::testutil::TempDir::new("copies");
        let d = dir.path();
        let outside = crate::testutil::TempDir::new("copies-outside");
        let old = file(d, "s-000000000001.png", 40, 300);
        let mid = file(d, "s-000000000002.png", 40, 200);
        let recent = file(d, "s-000000000003.png", 40, 100);
        let users = file(d, "notes.png", 500, 400);
        let target = file(outside.path(), "s-000000000009.png", 40, 500);
        std::os::unix::fs::symlink(&target, d.join("s-000000000004.png")).unwrap();
        fs::create_dir(d.join("s-000000000005.png")).unwrap();
        let new = file(d, "s-000000000006.png", 40, 0);

        let kept = |p: &Path| p.exists();
        let now = SystemTime::now();
        assert_eq!(keep_newest(d, |n| ours(n, ""), 100, &new, now).unwrap(), 2);
        assert!(kept(&new) && kept(&recent), "the newest within 100 bytes");
        assert!(!kept(&old) && !kept(&mid));
        assert!(kept(&users), "not a name of ours");
        assert!(
            kept(&target) && d.join("s-000000000004.png").symlink_metadata().is_ok(),
            "a link is left alone, and what it points to"
        );
        assert!(d.join("s-000000000005.png").is_dir());

        // The one just written stays even when it alone is over.
        let big = file(d, "s-00000000000a.png", 1000, 0);
        assert_eq!(keep_newest(d, |n| ours(n, ""), 100, &big, now).unwrap(), 2);
        assert!(kept(&big) && !kept(&new) && !kept(&recent));
    }

    #[test]
    fn a_copy_used_again_counts_as_new() {
        let dir = crate::testutil::TempDir::new("copies-touch");
        let d = dir.path();
        let again = file(d, "photo-000000000001.jpg", 60, 900);
        let other = file(d, "photo-000000000002.jpg", 60, 100);
        touch(&again);
        let new = file(d, "photo-000000000003.jpg", 10, 0);
        keep_newest(d, |n| ours(n, "photo-"), 80, &new, SystemTime::now()).unwrap();
        assert!(again.exists() && !other.exists());
    }
}
