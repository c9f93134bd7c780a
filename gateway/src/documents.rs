//! Files sent to the bot that are not images. A small text file (a log, a CSV, a script)
//! reaches the agent inside the message, fenced, so the model reads it whatever tools it
//! has; any other file is saved into the workspace ([`crate::inbox`]) for its tools, and
//! the message says where. One that cannot be had is named in the message as left out,
//! so the model can say so rather than answer as if it had seen it.

use crate::telegram::{Document, Message};

/// Largest text file passed inline (its UTF-8 bytes).
pub const MAX_TEXT_FILE: u64 = 32 * 1024;

/// Name extensions of text files whose type apps often send as `application/octet-stream`.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "md", "csv", "tsv", "json", "jsonl", "yaml", "yml", "toml", "xml", "log", "ini", "conf", "cfg",
    "env", "sql", "html", "css", "js", "ts", "py", "rs", "go", "java", "c", "h", "cpp", "rb", "php", "sh",
    "diff", "patch",
];

/// What to do with a message's document.
#[derive(Debug, PartialEq)]
pub enum Attached {
    /// Text to read: (file id, name).
    Text(String, String),
    /// To save into the workspace.
    Save(ToSave),
    /// Not passed on; the note for the model says why.
    LeftOut(String),
}

/// A file to save into the workspace.
#[derive(Debug, PartialEq)]
pub struct ToSave {
    /// For `getFile`.
    pub file_id: String,
    /// Its name in the inbox ([`crate::inbox::safe_name`]).
    pub name: String,
    /// How the message describes it: `application/pdf, 1,204 KB`.
    pub about: String,
    /// Bytes, when Telegram says.
    pub size: Option<u64>,
}

impl ToSave {
    /// The note for the model once saved as `saved`.
    pub fn saved(&self, saved: &crate::inbox::Saved) -> String {
        format!(
            "[file {} ({}) saved in the workspace as {}]",
            self.name, self.about, saved.path
        )
    }

    /// The note for the model when it was not saved, and why.
    pub fn not_saved(&self, why: &str) -> String {
        format!("[file {} ({}) not passed on: {why}]", self.name, self.about)
    }
}

/// The document of `m` that is not an image of at most `cap` bytes (those go the photo
/// way), if any.
pub fn attached(m: &Message, cap: u64) -> Option<Attached> {
    let d = m.document.as_ref()?;
    let mime = d.mime_type.as_deref().unwrap_or("");
    // An image that fits the line (`cap`, its share of it) goes to the model as an image;
    // a larger one is saved like any file.
    if mime.starts_with("image/") && matches!(crate::images::pick(m, cap), Some(Ok(_))) {
        return None;
    }
    let name = crate::inbox::safe_name(d.file_name.as_deref());
    let kind = if mime.is_empty() { "unknown type" } else { mime };
    let about = match d.file_size {
        Some(s) => format!("{kind}, {} KB", s.div_ceil(1024)),
        None => kind.to_string(),
    };
    if is_text(d) && d.file_size.is_none_or(|s| s <= MAX_TEXT_FILE) {
        return Some(Attached::Text(d.file_id.clone(), name));
    }
    if d.file_size.is_some_and(|s| s > crate::inbox::MAX_FILE) {
        return Some(Attached::LeftOut(format!(
            "[file {name} ({about}) not passed on: bots can fetch files of at most {} MB]",
            crate::inbox::MAX_FILE / (1024 * 1024)
        )));
    }
    Some(Attached::Save(ToSave {
        file_id: d.file_id.clone(),
        name,
        about,
        size: d.file_size,
    }))
}

/// Whether `d` is text, by its type or, for a generic type, by its name.
fn is_text(d: &Document) -> bool {
    let mime = d.mime_type.as_deref().unwrap_or("").to_ascii_lowercase();
    let by_type = mime.starts_with("text/")
        || ["json", "xml", "yaml", "toml", "javascript", "x-sh", "sql", "csv"]
            .iter()
            .any(|t| mime.starts_with("application/") && mime.contains(t));
    let by_name = d
        .file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(_, ext)| TEXT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
    by_type || (by_name && matches!(mime.as_str(), "" | "application/octet-stream"))
}

/// The text of file `name` for the message, fenced so that nothing in it can end the
/// fence early; `Err` (the note for the model) when it is not UTF-8 text.
pub fn fenced(name: &str, bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| format!("[file {name} not passed on: it is not UTF-8 text]"))?;
    Ok(format!("[file {name}]\n{}", tether::quote::fenced(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::MAX_IMAGE_IN;

    fn doc(name: Option<&str>, mime: Option<&str>, size: Option<u64>) -> Message {
        serde_json::from_value(serde_json::json!({
            "message_id": 1, "chat": {"id": 5},
            "document": {"file_id": "f", "file_name": name, "mime_type": mime, "file_size": size},
        }))
        .unwrap()
    }

    fn saved_as(a: Option<Attached>) -> Option<String> {
        match a? {
            Attached::Save(s) => Some(format!("{} ({})", s.name, s.about)),
            _ => None,
        }
    }

    #[test]
    fn text_files_are_read_and_the_rest_is_saved_unless_too_large() {
        let text = |n, m| attached(&doc(n, m, Some(100)), MAX_IMAGE_IN);
        assert_eq!(
            text(Some("app.log"), Some("text/plain")),
            Some(Attached::Text("f".into(), "app.log".into()))
        );
        assert!(matches!(
            text(Some("a.json"), Some("application/json")),
            Some(Attached::Text(..))
        ));
        assert!(matches!(
            text(Some("main.rs"), Some("application/octet-stream")),
            Some(Attached::Text(..))
        ));
        // Any other file is saved into the workspace.
        assert_eq!(
            saved_as(text(Some("report.pdf"), Some("application/pdf"))).as_deref(),
            Some("report.pdf (application/pdf, 1 KB)")
        );
        // A binary type keeps a text-like name from passing as text.
        assert!(saved_as(text(Some("x.txt"), Some("application/zip"))).is_some());
        let big = attached(
            &doc(Some("big.csv"), Some("text/csv"), Some(MAX_TEXT_FILE + 1)),
            MAX_IMAGE_IN,
        );
        assert_eq!(saved_as(big).as_deref(), Some("big.csv (text/csv, 33 KB)"));
        let huge = attached(
            &doc(Some("a.iso"), None, Some(crate::inbox::MAX_FILE + 1)),
            MAX_IMAGE_IN,
        );
        assert!(
            matches!(&huge, Some(Attached::LeftOut(n)) if n == "[file a.iso (unknown type, 20481 KB) not passed on: bots can fetch files of at most 20 MB]"),
            "{huge:?}"
        );
        // Images go the photo way.
        assert_eq!(
            attached(&doc(Some("a.png"), Some("image/png"), Some(100)), MAX_IMAGE_IN),
            None
        );
        // Too large for the line: saved, for `read_file` to show.
        let big_png = attached(
            &doc(Some("shot.png"), Some("image/png"), Some(MAX_IMAGE_IN + 1)),
            MAX_IMAGE_IN,
        );
        assert!(
            matches!(&big_png, Some(Attached::Save(f)) if f.name == "shot.png" && f.about == "image/png, 701 KB"),
            "{big_png:?}"
        );
        // A name cannot break the message's lines or fences.
        let odd = attached(
            &doc(Some("a\n```b.txt"), Some("text/plain"), Some(1)),
            MAX_IMAGE_IN,
        );
        assert_eq!(odd, Some(Attached::Text("f".into(), "ab.txt".into())));
    }

    #[test]
    fn the_fence_outlasts_any_backticks_inside() {
        assert_eq!(fenced("a.txt", b"hi\n").unwrap(), "[file a.txt]\n```\nhi\n```");
        let inner = fenced("b.md", b"```rust\nx\n```\n````").unwrap();
        assert!(inner.starts_with("[file b.md]\n`````\n"), "{inner}");
        assert!(inner.ends_with("\n`````"), "{inner}");
        assert!(fenced("c.bin", b"\xff\xfe").unwrap_err().contains("not UTF-8"));
        assert!(fenced("d.txt", b"a\0b").is_err());
    }

    proptest::proptest! {
        /// Whatever the file holds, the fenced block opens and closes with the same fence
        /// and nothing inside matches it.
        #[test]
        fn fenced_text_never_escapes(text in ".{0,200}") {
            if let Ok(block) = fenced("f.txt", text.as_bytes()) {
                let mut lines = block.lines().skip(1);
                let fence = lines.next().unwrap().to_string();
                proptest::prop_assert!(block.ends_with(&fence));
                let body = &block[block.find('\n').unwrap() + 1 + fence.len()..block.len() - fence.len()];
                proptest::prop_assert!(!body.contains(&fence));
            }
        }
    }
}
