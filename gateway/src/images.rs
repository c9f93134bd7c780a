//! Images between Telegram and the tether: which photo of a message goes to the agent,
//! and the bytes of an image an agent names only by its workspace blob (upstream's
//! agent does that; ours also carries the bytes inline).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use tether::frame::{kind, Done, Image};
use tether::Frame;

use crate::telegram::Message;
use crate::workspace::InstanceWorkspace;

/// Largest image passed to the agent: its base64 must fit the 1 MiB tether line.
pub const MAX_IMAGE_IN: u64 = 700 * 1024;

/// Largest image sent to Telegram (`sendPhoto` takes 10 MB).
pub const MAX_IMAGE_OUT: u64 = 10 * 1024 * 1024;

/// The image of `m` to pass on, as (file id, media type), if it has one, at most `cap`
/// bytes (an album's photos share [`MAX_IMAGE_IN`]); `Err(size)` when even its smallest
/// form is larger.
pub fn pick(m: &Message, cap: u64) -> Option<Result<(String, String), u64>> {
    if !m.photo.is_empty() {
        let fits = |p: &&crate::telegram::PhotoSize| p.file_size.is_none_or(|s| s <= cap);
        // Telegram re-encodes photos as JPEG; the largest size that fits is the best view.
        return Some(
            match m
                .photo
                .iter()
                .filter(fits)
                .max_by_key(|p| u64::from(p.width) * u64::from(p.height))
            {
                Some(p) => Ok((p.file_id.clone(), "image/jpeg".to_string())),
                None => Err(m.photo.iter().filter_map(|p| p.file_size).min().unwrap_or(0)),
            },
        );
    }
    let doc = m.document.as_ref()?;
    let media = doc
        .mime_type
        .as_deref()
        .filter(|t| matches!(*t, "image/jpeg" | "image/png" | "image/gif" | "image/webp"))?;
    Some(match doc.file_size {
        Some(s) if s > cap => Err(s),
        _ => Ok((doc.file_id.clone(), media.to_string())),
    })
}

/// An image's bytes (from its inline base64).
pub fn decode(image: &Image) -> Result<Vec<u8>, String> {
    let data = image.data.as_deref().ok_or("the image has no data")?;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("the image data is not base64: {e}"))
}

/// `bytes` as base64.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Read blob `name` of `workspace` ([`crate::workspace::open_blob`]: only a regular file
/// of the blob store itself).
pub fn read_blob(workspace: &Path, name: &str) -> Result<Vec<u8>, String> {
    let file = crate::workspace::open_blob(workspace, name, MAX_IMAGE_OUT)?;
    let mut bytes = Vec::new();
    file.take(MAX_IMAGE_OUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("blob {name}: {e}"))?;
    Ok(bytes)
}

/// Fills in the bytes of images an `assistant.done` names only by blob, from the
/// instance's workspace as aegisd reports it (`GET /v1/instances/{id}` → `workspace`).
pub struct BlobReader {
    workspace: Arc<InstanceWorkspace>,
}

impl BlobReader {
    /// For the instance whose workspace is `workspace`.
    pub fn new(workspace: Arc<InstanceWorkspace>) -> BlobReader {
        BlobReader { workspace }
    }

    /// Give every blob-only image of `f` (an `assistant.done`) its bytes; an image that
    /// cannot be read is dropped with a log line.
    pub fn inline(&mut self, f: &mut Frame) {
        if f.kind != kind::ASSISTANT_DONE {
            return;
        }
        let Ok(mut done) = f.payload_as::<Done>() else {
            return;
        };
        if done.images.iter().all(|i| i.data.is_some()) {
            return;
        }
        let ws = self.workspace.get();
        done.images.retain_mut(|img| {
            if img.data.is_some() {
                return true;
            }
            let read = match (&ws, &img.blob) {
                (Some(ws), Some(name)) => read_blob(ws, name),
                (None, _) => Err("the instance's workspace is unknown".to_string()),
                (_, None) => Err("the image has neither data nor blob".to_string()),
            };
            match read {
                Ok(bytes) => {
                    img.data = Some(encode(&bytes));
                    true
                }
                Err(e) => {
                    log::warn!("an image of a reply is left out: {e}");
                    false
                }
            }
        });
        *f = f.clone().with_payload(&done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_blob_linked_outside_the_workspace_is_refused() {
        let base = std::env::temp_dir().join(format!("aegis-gw-unit-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let _d = Dir(base.clone());
        let ws = base.join("ws");
        let blobs = ws.join(".aegis/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(base.join("host-secret"), "secret").unwrap();
        let good = format!("{}.png", "1".repeat(64));
        std::fs::write(blobs.join(&good), "png").unwrap();
        assert_eq!(read_blob(&ws, &good).unwrap(), b"png");
        // A planted link to a host file.
        let evil = format!("{}.png", "2".repeat(64));
        std::os::unix::fs::symlink(base.join("host-secret"), blobs.join(&evil)).unwrap();
        let e = read_blob(&ws, &evil).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        // The blob folder itself replaced by a link.
        std::fs::remove_dir_all(ws.join(".aegis")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere/blobs")).unwrap();
        std::fs::write(base.join("elsewhere/blobs").join(&good), "outside").unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), ws.join(".aegis")).unwrap();
        assert!(read_blob(&ws, &good).unwrap_err().contains("outside"));
        // A folder where a file should be.
        std::fs::remove_file(ws.join(".aegis")).unwrap();
        std::fs::create_dir_all(blobs.join(&good)).unwrap();
        assert!(read_blob(&ws, &good).is_err());
    }

    #[test]
    fn blob_only_images_of_a_reply_get_their_bytes_and_unreadable_ones_are_dropped() {
        let base = std::env::temp_dir().join(format!("aegis-gw-unit-inline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let _d = Dir(base.clone());
        let blobs = base.join(".aegis/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let name = format!("{}.png", "3".repeat(64));
        std::fs::write(blobs.join(&name), "png bytes").unwrap();
        let mut reader = BlobReader::new(Arc::new(InstanceWorkspace::at(&base)));
        let img = |blob: &str| Image {
            media_type: "image/png".into(),
            blob: Some(blob.into()),
            ..Image::default()
        };
        let done = Done {
            text: "two pictures".into(),
            images: vec![img(&name), img("../secret.png")],
            ..Done::default()
        };
        let mut f =
            Frame::new(kind::ASSISTANT_DONE, Some(tether::Session::new("telegram", "1"))).with_payload(&done);
        reader.inline(&mut f);
        let out: Done = f.payload_as().unwrap();
        assert_eq!(out.text, "two pictures");
        assert_eq!(out.images.len(), 1);
        assert_eq!(decode(&out.images[0]).unwrap(), b"png bytes");
    }
}
