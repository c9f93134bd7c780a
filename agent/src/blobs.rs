//! The workspace blob store (`<workspace>/.aegis/blobs/<sha256>.<ext>`, upstream's
//! layout): images that arrive with messages are kept here once, and session lines refer
//! to them by name instead of carrying their bytes; so are what replies attach (generated
//! images, spoken answers, files for `send_file`) until the gateway has sent them.
//!
//! [ours] The store keeps within `MAX_BYTES`: each blob written (or written again) counts
//! as the newest, and past the budget the oldest go, but never one of the last
//! `SPARED` (the gateway may still have to send it, and the conversation is using it).
//! Upstream's store grows for ever: an image a day is gigabytes in a few years, on hosts
//! with little disk. A session that refers to a blob gone shows the model "[image no
//! longer available]".

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;

/// Largest image stored from a message.
pub const MAX_IMAGE: usize = 10 * 1024 * 1024;
/// Bytes the store keeps, past those of the last `SPARED`.
pub const MAX_BYTES: u64 = 512 * 1024 * 1024;
/// How long a blob written or used is kept whatever the budget.
pub const SPARED: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

fn dir(workspace: &Path) -> PathBuf {
    workspace.join(".aegis/blobs")
}

/// The file extension for an image type.
pub fn extension(media_type: &str) -> &'static str {
    match media_type {
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "jpg",
    }
}

/// The image type of a file name's extension, if it is an image.
pub fn media_type(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

/// The image type of `bytes` by their first bytes (PNG, JPEG, GIF, WebP), if an image.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Whether `name` is a plain blob name (no path, no dot file).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Store base64 `data` of `media_type`; the blob's name.
pub fn store_base64(workspace: &Path, media_type: &str, data: &str) -> io::Result<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("image data is not base64: {e}"),
            )
        })?;
    store(workspace, media_type, &bytes)
}

/// Store `bytes` of `media_type` (written under a temporary name, then renamed, so a
/// reader never sees half a blob); the blob's name.
pub fn store(workspace: &Path, media_type: &str, bytes: &[u8]) -> io::Result<String> {
    if bytes.len() > MAX_IMAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("image of {} bytes is too large", bytes.len()),
        ));
    }
    store_as(workspace, extension(media_type), bytes)
}

/// Store `bytes` (a recording, of any size the caller allows) as `<sha256>.<ext>`,
/// written as [`store`] writes; the blob's name.
pub fn store_as(workspace: &Path, ext: &str, bytes: &[u8]) -> io::Result<String> {
    let name = format!("{}.{ext}", sha256_hex(bytes));
    let d = dir(workspace);
    fs::create_dir_all(&d)?;
    let path = d.join(&name);
    if !path.exists() {
        let tmp = d.join(format!(".{name}.tmp"));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &path)?;
    }
    kept(&path, MAX_BYTES);
    Ok(name)
}

/// Whether `name` is one the store gives: `<sha256 hex>.<ext>`.
fn is_blob(name: &str) -> bool {
    name.split_once('.').is_some_and(|(hash, ext)| {
        hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && (1..=5).contains(&ext.len())
            && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The blob at `path` was just written or used again: it counts as the newest, and the
/// oldest past `max` bytes go (none of the last `SPARED`).
fn kept(path: &Path, max: u64) {
    crate::copies::touch(path);
    let Some(folder) = path.parent() else { return };
    let spared = std::time::SystemTime::now()
        .checked_sub(SPARED)
        .unwrap_or(std::time::UNIX_EPOCH);
    if let Err(e) = crate::copies::keep_newest(folder, is_blob, max, path, spared) {
        log::debug!("cannot look for old blobs in {}: {e}", folder.display());
    }
}

/// Store a copy of the file at `src` (at most `cap` bytes), as it is now, whatever
/// becomes of `src` later; its blob's name (`<sha256>.bin`) and size. A FIFO or a device
/// is refused rather than waited on.
pub fn store_file(workspace: &Path, src: &Path, cap: u64) -> io::Result<(String, u64)> {
    use std::io::{Read, Write};
    let mut from = crate::regular::open(src)?;
    let d = dir(workspace);
    fs::create_dir_all(&d)?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = d.join(format!(".file-{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut to = fs::File::create(&tmp)?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let got = from.read(&mut buf)?;
            if got == 0 {
                break;
            }
            size += got as u64;
            if size > cap {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("larger than {cap} bytes"),
                ));
            }
            hash.update(&buf[..got]);
            to.write_all(&buf[..got])?;
        }
        let name = format!("{}.bin", hex(hash.finish().as_ref()));
        fs::rename(&tmp, d.join(&name))?;
        kept(&d.join(&name), MAX_BYTES);
        Ok((name, size))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Put a copy of the blob `name` at `dest` (a path already confined to the workspace),
/// unless a regular file there holds the same bytes. A copy, not a link: a tool that
/// edits the copy in place must not change the picture the session refers to.
pub fn copy_to(workspace: &Path, name: &str, dest: &Path) -> io::Result<()> {
    if !valid_name(name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a blob name"));
    }
    let bytes = fs::read(dir(workspace).join(name))?;
    put(&bytes, dest)
}

/// Write `bytes` at `dest` (a path already confined to the workspace), unless a regular
/// file there holds them already; under a temporary name first, so no reader sees half.
pub fn put(bytes: &[u8], dest: &Path) -> io::Result<()> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_file() && m.len() == bytes.len() as u64 && fs::read(dest)? == bytes => return Ok(()),
        _ => {}
    }
    let folder = dest
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no folder"))?;
    fs::create_dir_all(folder)?;
    let tmp = folder.join(format!(".{name}.tmp"));
    let written = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, dest));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The blob `name` as base64, if it exists and is at most `cap` bytes.
pub fn load_base64(workspace: &Path, name: &str, cap: usize) -> Option<String> {
    if !valid_name(name) {
        return None;
    }
    let bytes = fs::read(dir(workspace).join(name)).ok()?;
    (bytes.len() <= cap).then(|| base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `bytes` as base64.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The SHA-256 of `bytes` in lowercase hex, by ring (which TLS links in anyway).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_sha256_of_the_content_as_upstream_names_them() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn blobs_are_content_addressed_and_names_cannot_escape() {
        let tmp = crate::testutil::TempDir::new("blobs");
        let ws = tmp.path();
        let name = store_base64(ws, "image/png", &encode(b"\\x89PNG fake")).unwrap();
        assert!(name.ends_with(".png") && name.len() == 64 + 4, "{name}");
        assert_eq!(
            store_base64(ws, "image/png", &encode(b"\\x89PNG fake")).unwrap(),
            name
        );
        assert_eq!(load_base64(ws, &name, 1024), Some(encode(b"\\x89PNG fake")));
        assert_eq!(load_base64(ws, "../../etc/passwd", 1024), None);
        assert!(store_base64(ws, "image/png", "not base64!").is_err());
    }

    #[test]
    fn a_file_is_stored_as_it_is_capped_and_a_fifo_is_not_waited_on() {
        let tmp = crate::testutil::TempDir::new("blob-files");
        let ws = tmp.path();
        let src = ws.join("report.pdf");
        fs::write(&src, b"abc").unwrap();
        let (name, size) = store_file(ws, &src, 3).unwrap();
        assert_eq!(name, format!("{}.bin", sha256_hex(b"abc")));
        assert_eq!(size, 3);
        fs::write(&src, b"later").unwrap();
        assert_eq!(
            fs::read(dir(ws).join(&name)).unwrap(),
            b"abc",
            "a copy, not a link"
        );
        let e = store_file(ws, &src, 4).unwrap_err();
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
        let fifo = std::ffi::CString::new(ws.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let e = store_file(ws, &ws.join("pipe"), 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let left: Vec<_> = fs::read_dir(dir(ws))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(&name)], "no temporary left");
    }

    #[test]
    fn a_copy_is_written_once_per_content_and_replaced_when_it_differs() {
        use std::os::unix::fs::MetadataExt;
        let tmp = crate::testutil::TempDir::new("blob-copies");
        let ws = tmp.path();
        let name = store(ws, "image/png", b"png bytes").unwrap();
        let dest = ws.join("inbox/photo.png");
        copy_to(ws, &name, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"png bytes");
        let inode = fs::metadata(&dest).unwrap().ino();
        copy_to(ws, &name, &dest).unwrap();
        assert_eq!(
            fs::metadata(&dest).unwrap().ino(),
            inode,
            "the same bytes: left alone"
        );
        fs::write(&dest, b"png bytes, edited").unwrap();
        copy_to(ws, &name, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"png bytes");
        assert!(copy_to(ws, "../secret", &dest).is_err());
        assert_eq!(
            fs::read_dir(ws.join("inbox")).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn images_are_told_by_their_first_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10]), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn the_store_keeps_its_budget_but_never_a_blob_of_the_last_week() {
        use std::time::{Duration, SystemTime};
        let tmp = crate::testutil::TempDir::new("blob-budget");
        let ws = tmp.path();
        let day = Duration::from_secs(24 * 3600);
        let aged = |bytes: &[u8], days: u32| {
            let name = store_as(ws, "bin", bytes).unwrap();
            let path = dir(ws).join(&name);
            let f = fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::now() - day * days).unwrap();
            path
        };
        let old = aged(&[1; 400], 30);
        let older_used = aged(&[2; 400], 40);
        let recent = aged(&[3; 400], 6);
        let foreign = dir(ws).join("notes.txt");
        fs::write(&foreign, [0; 5000]).unwrap();
        // Used again (a photo sent twice): it counts as new.
        store_as(ws, "bin", &[2; 400]).unwrap();
        assert!(old.exists(), "within the budget nothing goes");
        let newest = dir(ws).join(store_as(ws, "bin", &[4; 10]).unwrap());
        kept(&newest, 900);
        assert!(!old.exists(), "the oldest past 900 bytes went");
        assert!(older_used.exists() && recent.exists() && newest.exists());
        assert!(foreign.exists(), "not a blob name: never removed");
        // Past the budget, a blob of the last week stays all the same.
        kept(&newest, 10);
        assert!(recent.exists() && older_used.exists() && newest.exists());
        assert!(is_blob(&format!("{}.ogg", "a".repeat(64))));
        assert!(!is_blob(&format!("{}.ogg", "A".repeat(64))));
        assert!(!is_blob(&format!(".{}.ogg.tmp", "a".repeat(64))));
        assert!(!is_blob("abc.png"));
    }
}
