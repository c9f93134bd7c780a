//! The instance's workspace on this host (`GET /v1/instances/{id}` → `workspace`), where
//! files sent to the bot are saved and where the blobs of a reply's images and files are
//! read. The guest owns that folder, so a blob is opened only when the path the open
//! reached is the blob store's own file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tether::AegisClient;

/// The workspace of one instance, asked of aegisd until it answers, then kept.
pub struct InstanceWorkspace {
    aegis: AegisClient,
    instance: String,
    known: OnceLock<PathBuf>,
}

impl InstanceWorkspace {
    /// For `instance`.
    pub fn new(aegis: AegisClient, instance: &str) -> InstanceWorkspace {
        InstanceWorkspace {
            aegis,
            instance: instance.to_string(),
            known: OnceLock::new(),
        }
    }

    /// A workspace known from the start (tests).
    #[cfg(test)]
    pub fn at(path: &Path) -> InstanceWorkspace {
        let ws = InstanceWorkspace::new(AegisClient::new("/nonexistent.sock"), "i");
        let _ = ws.known.set(path.to_path_buf());
        ws
    }

    /// The folder, or `None` when aegisd does not say (no workspace, or not reachable).
    pub fn get(&self) -> Option<&Path> {
        if let Some(ws) = self.known.get() {
            return Some(ws);
        }
        match self.aegis.instance_workspace(&self.instance) {
            Ok(Some(ws)) => Some(self.known.get_or_init(|| ws)),
            Ok(None) => None,
            Err(e) => {
                log::warn!("cannot look up the workspace of {}: {e}", self.instance);
                None
            }
        }
    }
}

/// Whether `name` is a blob name as agents write them: `<sha256 hex>.<ext>`, an image's
/// extension, `bin` (a file `send_file` stored), or `ogg`/`mp3` (a `respond_with_voice`
/// recording).
pub fn valid_blob_name(name: &str) -> bool {
    let Some((hash, ext)) = name.split_once('.') else {
        return false;
    };
    hash.len() == 64
        && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && matches!(ext, "png" | "jpg" | "gif" | "webp" | "bin" | "ogg" | "mp3")
}

/// Open blob `name` of `workspace` (at most `cap` bytes), refusing anything that is not a
/// regular file inside `<workspace>/.aegis/blobs`: the guest could plant a link to a host
/// file there, which must never reach a chat.
pub fn open_blob(workspace: &Path, name: &str, cap: u64) -> Result<File, String> {
    if !valid_blob_name(name) {
        return Err(format!("{name:?} is not a blob name"));
    }
    let ws = workspace
        .canonicalize()
        .map_err(|e| format!("workspace {}: {e}", workspace.display()))?;
    let expected = ws.join(".aegis/blobs").join(name);
    // Non-blocking: a FIFO planted under the name must not hang the gateway.
    let file = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().read(true),
        libc::O_NONBLOCK,
    )
    .open(&expected)
    .map_err(|e| format!("blob {name}: {e}"))?;
    // The path the open actually reached, whatever links were on the way.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| format!("blob {name}: {e}"))?;
    if real != expected {
        return Err(format!("blob {name} leads outside the workspace blob store"));
    }
    let meta = file.metadata().map_err(|e| format!("blob {name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("blob {name} is not a file"));
    }
    if meta.len() > cap {
        return Err(format!("blob {name} is too large ({} bytes)", meta.len()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_are_hashes_with_an_image_or_file_extension() {
        let h = "a".repeat(64);
        assert!(valid_blob_name(&format!("{h}.png")));
        assert!(valid_blob_name(&format!("{h}.bin")));
        assert!(valid_blob_name(&format!("{h}.ogg")));
        assert!(!valid_blob_name(&format!("{h}.txt")));
        assert!(!valid_blob_name("../../etc/passwd"));
        assert!(!valid_blob_name(&format!("../{}.png", "a".repeat(61))));
        assert!(!valid_blob_name(&format!("{}.png", "A".repeat(64))));
    }

    #[test]
    fn a_fifo_or_an_oversized_blob_is_refused_without_waiting() {
        let base = std::env::temp_dir().join(format!("aegis-gw-unit-open-blob-{}", std::process::id()));
        let blobs = base.join(".aegis/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let fifo = format!("{}.bin", "4".repeat(64));
        let path = std::ffi::CString::new(blobs.join(&fifo).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        let fifo_open = open_blob(&base, &fifo, 10);
        let big = format!("{}.bin", "5".repeat(64));
        std::fs::write(blobs.join(&big), [0u8; 11]).unwrap();
        let big_open = open_blob(&base, &big, 10);
        let fits = open_blob(&base, &big, 11).is_ok();
        std::fs::remove_dir_all(&base).unwrap();
        assert!(fifo_open.unwrap_err().contains("not a file"));
        assert!(big_open.unwrap_err().contains("too large"));
        assert!(fits);
    }
}
