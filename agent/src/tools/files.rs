//! File tools: `read_file`, `write_file`, `edit_file`, `list_files`. Every path goes
//! through [`Workspace::resolve`]; every failure is an `Err` text for the model.

use std::fs;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::paths::Workspace;
use super::{arg_str, arg_usize, cap_text};

/// Bytes of a file `read_file` returns.
pub const READ_CAP: usize = 50_000;
/// Largest file `read_file` with a line range or `edit_file` loads.
const LOAD_CAP: u64 = 20 * 1024 * 1024;
/// Largest content `write_file` accepts.
const WRITE_CAP: usize = 10 * 1024 * 1024;
/// Entries `list_files` shows.
const LIST_CAP: usize = 1000;

fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0)
}

fn load(ws: &Workspace, path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let shown = ws.display(path);
    let meta = fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{shown} is a directory (use list_files)"));
    }
    if meta.len() > limit {
        return Err(format!("{shown} is too large ({} bytes)", meta.len()));
    }
    let mut bytes = Vec::new();
    crate::regular::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut bytes))
        .map_err(|e| format!("{shown}: {e}"))?;
    if is_binary(&bytes) {
        return Err(format!("{shown} is a binary file ({} bytes)", meta.len()));
    }
    Ok(bytes)
}

fn partial(ws: &Workspace, path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    crate::regular::open(path)
        .and_then(|f| f.take(READ_CAP as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", ws.display(path)))?;
    if is_binary(&bytes) {
        return Err(format!("{} is a binary file", ws.display(path)));
    }
    Ok(bytes)
}

/// Largest PDF `read_file` shows the model: its base64 goes in every request of the reply
/// (a third larger), and the providers take 32 MB a request.
pub const PDF_CAP: u64 = 10 * 1024 * 1024;
/// Largest image `read_file` shows the model: Anthropic's API refuses larger ones.
pub const IMAGE_CAP: u64 = 5 * 1024 * 1024;

/// A file `read_file` shows the model rather than reads to it as text, known by its
/// first bytes whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visual {
    /// `%PDF-`: its pages, as text and images.
    Pdf,
    /// A PNG, JPEG, GIF or WebP image (its media type).
    Image(&'static str),
}

impl Visual {
    /// What the file's first bytes say it is, if one of these.
    pub fn of(head: &[u8]) -> Option<Visual> {
        if head.starts_with(b"%PDF-") {
            return Some(Visual::Pdf);
        }
        crate::blobs::sniff(head).map(Visual::Image)
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Visual::Pdf => "application/pdf",
            Visual::Image(t) => t,
        }
    }

    /// Largest file of the kind shown.
    pub fn cap(self) -> u64 {
        match self {
            Visual::Pdf => PDF_CAP,
            Visual::Image(_) => IMAGE_CAP,
        }
    }

    /// The kind in words, for the model: "a PDF", "a PNG image".
    pub fn described(self) -> String {
        match self {
            Visual::Pdf => "a PDF".into(),
            Visual::Image(t) => format!("a {} image", crate::blobs::extension(t).to_uppercase()),
        }
    }

    /// The result's words for such a file of `size` bytes named `shown`, attached to it.
    pub fn attached_note(self, shown: &str, size: u64) -> String {
        let how = match self {
            Visual::Pdf => " whole (its pages as text and images)",
            Visual::Image(_) => "",
        };
        format!(
            "{shown}: {} of {} KB, attached to this result{how}.",
            self.described(),
            size.div_ceil(1024)
        )
    }

    /// What the model can do instead when the file is not shown.
    fn instead(self) -> &'static str {
        match self {
            Visual::Pdf => "extract its text with a command if the workspace has one (pdftotext)",
            Visual::Image(_) => {
                "describe it from its name and context, or make a smaller copy with a command if the workspace has one (convert -resize)"
            }
        }
    }
}

/// Which [`Visual`] files the model is shown (its server takes them, or agent.json says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelSees {
    /// PDFs, whole.
    pub pdf: bool,
    /// Images, as pictures.
    pub images: bool,
}

impl ModelSees {
    /// Whether a file of `kind` is shown to the model.
    pub fn sees(self, kind: Visual) -> bool {
        match kind {
            Visual::Pdf => self.pdf,
            Visual::Image(_) => self.images,
        }
    }
}

/// A `kind` file named `name` that came as `bytes` (`web_fetch` got it), kept in the blob
/// store: the document the model is shown with the result.
pub fn document_of(
    ws: &Workspace,
    kind: Visual,
    name: String,
    bytes: &[u8],
) -> Result<crate::session::Document, String> {
    let blob =
        crate::blobs::store_as(ws.root(), "bin", bytes).map_err(|e| format!("cannot keep {name}: {e}"))?;
    Ok(crate::session::Document::new(kind.media_type(), name, blob))
}

/// The file `read_file {path}` names, when it is one it shows ([`Visual`]); any problem
/// with the path is left for `read_file` to report.
pub fn visual_at(ws: &Workspace, args: &Value) -> Option<(std::path::PathBuf, Visual)> {
    let path = ws.resolve(arg_str(args, "path").ok()?).ok()?;
    visual_of(&path).map(|v| (path, v))
}

/// What the file at `path` is by its first bytes, when one [`Visual`].
pub fn visual_of(path: &Path) -> Option<Visual> {
    let mut head = Vec::with_capacity(12);
    crate::regular::open(path)
        .ok()?
        .take(12)
        .read_to_end(&mut head)
        .ok()?;
    Visual::of(&head)
}

/// Why `read_file` does not show the `kind` file at `path` to this model.
pub fn not_shown(ws: &Workspace, path: &Path, kind: Visual) -> String {
    let switch = match kind {
        Visual::Pdf => "pdf",
        Visual::Image(_) => "images",
    };
    format!(
        "{} is {}, which this model's server is not sent (Anthropic's, OpenAI's and OpenRouter's \
         are; agent.json tools.read_file.{switch} turns it on for another); {}",
        ws.display(path),
        kind.described(),
        kind.instead()
    )
}

/// The name of the file at `path` (`shown` when it has none).
fn file_name(path: &Path, shown: &str) -> String {
    path.file_name()
        .map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned())
}

/// `read_file` of the `kind` file at `path`: kept in the blob store as it is now, the
/// document the model is shown with the result, and the result's text.
pub fn show(ws: &Workspace, path: &Path, kind: Visual) -> Result<(crate::session::Document, String), String> {
    let shown = ws.display(path);
    let (blob, size) = crate::blobs::store_file(ws.root(), path, kind.cap()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            format!(
                "{shown} is {} too large to show you{} (at most {} MB); {}",
                kind.described(),
                if kind == Visual::Pdf { " whole" } else { "" },
                kind.cap() >> 20,
                kind.instead()
            )
        } else {
            format!("{shown}: {e}")
        }
    })?;
    let document = crate::session::Document::new(kind.media_type(), file_name(path, &shown), blob);
    Ok((document, kind.attached_note(&shown, size)))
}

/// `read_file {path, start_line?, end_line?}`.
pub fn read_file(ws: &Workspace, args: &Value) -> Result<String, String> {
    let path = ws.resolve(arg_str(args, "path")?).map_err(|e| e.to_string())?;
    let start = arg_usize(args, "start_line")?.filter(|&n| n > 0);
    let end = arg_usize(args, "end_line")?.filter(|&n| n > 0);
    if start.is_none() && end.is_none() {
        // Without a range a large file is read in part, not refused.
        let size = fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", ws.display(&path)))?
            .len();
        let bytes = load(ws, &path, size.min(READ_CAP as u64 + 1).max(1)).or_else(|e| {
            if size > READ_CAP as u64 && e.contains("too large") {
                partial(ws, &path)
            } else {
                Err(e)
            }
        })?;
        return Ok(cap_text(
            String::from_utf8_lossy(&bytes).into_owned(),
            READ_CAP,
            size as usize,
        ));
    }
    let bytes = load(ws, &path, LOAD_CAP)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    let first = start.unwrap_or(1);
    let last = end.unwrap_or(lines.len()).min(lines.len());
    if first > lines.len() {
        return Err(format!(
            "start_line {first} is past the end of the file ({} lines)",
            lines.len()
        ));
    }
    if last < first {
        return Err(format!("end_line {last} is before start_line {first}"));
    }
    let mut out = format!("({} lines total, showing {first}-{last})\n", lines.len());
    for (i, line) in lines[first - 1..last].iter().enumerate() {
        out.push_str(&format!("{:4} | {line}\n", first + i));
    }
    Ok(cap_text(out.clone(), READ_CAP, out.len()))
}

/// `write_file {path, content}`: creates parent folders.
pub fn write_file(ws: &Workspace, args: &Value) -> Result<String, String> {
    let given = arg_str(args, "path")?;
    let content = arg_str(args, "content")?;
    if content.len() > WRITE_CAP {
        return Err(format!(
            "content is too large ({} bytes; at most {WRITE_CAP})",
            content.len()
        ));
    }
    let path = ws.resolve(given).map_err(|e| e.to_string())?;
    if path == ws.root() || path.is_dir() {
        return Err(format!("{given} is a directory"));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", ws.display(parent)))?;
    }
    // The folders may have changed while they were created: check again where they lead.
    let path = ws.resolve(given).map_err(|e| e.to_string())?;
    fs::write(&path, content).map_err(|e| format!("{given}: {e}"))?;
    Ok(format!("wrote {} bytes to {}", content.len(), ws.display(&path)))
}

/// `edit_file {path, old_text, new_text, occurrence?}` or
/// `edit_file {path, start_line, end_line?, new_text}`; returns a unified diff.
pub fn edit_file(ws: &Workspace, args: &Value) -> Result<String, String> {
    let given = arg_str(args, "path")?;
    let path = ws.resolve(given).map_err(|e| e.to_string())?;
    let new_text = arg_str(args, "new_text")?;
    let original = String::from_utf8(load(ws, &path, LOAD_CAP)?)
        .map_err(|_| format!("{given} is not valid UTF-8 text; edit it with bash"))?;
    let old_text = args
        .get("old_text")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let updated = if let Some(old) = old_text {
        let count = original.matches(old).count();
        let occurrence = arg_usize(args, "occurrence")?;
        match (count, occurrence) {
            (0, _) => return Err("old_text was not found in the file".into()),
            (n, None) if n > 1 => {
                return Err(format!(
                    "old_text was found {n} times; give more context or an occurrence (1-{n})"
                ))
            }
            (n, Some(k)) if k == 0 || k > n => {
                return Err(format!("occurrence {k} requested; old_text is found {n} times"))
            }
            (_, k) => {
                let k = k.unwrap_or(1);
                let (at, _) = original.match_indices(old).nth(k - 1).expect("counted above");
                format!("{}{new_text}{}", &original[..at], &original[at + old.len()..])
            }
        }
    } else if let Some(start) = arg_usize(args, "start_line")?.filter(|&n| n > 0) {
        let lines: Vec<&str> = original.split('\n').collect();
        let end = arg_usize(args, "end_line")?.unwrap_or(start);
        if start > lines.len() || end > lines.len() || end < start {
            return Err(format!(
                "invalid line range {start}-{end} (the file has {} lines)",
                lines.len()
            ));
        }
        let mut out: Vec<&str> = lines[..start - 1].to_vec();
        out.extend(new_text.split('\n'));
        out.extend(&lines[end..]);
        out.join("\n")
    } else {
        return Err("give old_text (text to replace) or start_line (a line range)".into());
    };
    if updated == original {
        return Ok("no change: the new text is the same as the old".into());
    }
    fs::write(&path, &updated).map_err(|e| format!("{given}: {e}"))?;
    Ok(unified_diff(&ws.display(&path), &original, &updated))
}

/// A unified diff of one contiguous change (what `edit_file` makes), 3 lines of context.
pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.split('\n').collect();
    let b: Vec<&str> = new.split('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let ctx_start = prefix.saturating_sub(3);
    let a_end = (a.len() - suffix + 3).min(a.len());
    let b_end = (b.len() - suffix + 3).min(b.len());
    let mut out = format!("--- a/{name}\n+++ b/{name}\n");
    let range = |start: usize, end: usize| {
        let n = end - start;
        if n == 0 {
            format!("{start},0")
        } else {
            format!("{},{n}", start + 1)
        }
    };
    out.push_str(&format!(
        "@@ -{} +{} @@\n",
        range(ctx_start, a_end),
        range(ctx_start, b_end)
    ));
    for l in &a[ctx_start..prefix] {
        out.push_str(&format!(" {l}\n"));
    }
    for l in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("-{l}\n"));
    }
    for l in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("+{l}\n"));
    }
    for l in &a[a.len() - suffix..a_end] {
        out.push_str(&format!(" {l}\n"));
    }
    out
}

/// Images `image_generate` makes a picture from, at most (OpenAI's limit).
const EDIT_INPUTS: usize = 16;
/// Largest image it sends (OpenAI takes 50 MB; a photo from a chat is well under 1 MB).
const EDIT_CAP: u64 = 20 * 1024 * 1024;

/// `image_generate`'s `images`: each a PNG, JPEG or WebP file of the workspace (by its
/// first bytes), read for the form field `field`. None given: none.
pub fn edit_inputs(
    ws: &Workspace,
    args: &Value,
    field: &'static str,
) -> Result<Vec<super::retry::Upload>, String> {
    let paths = match args.get("images") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("images must be a list of workspace paths, got {other}")),
    };
    if paths.len() > EDIT_INPUTS {
        return Err(format!("at most {EDIT_INPUTS} images, not {}", paths.len()));
    }
    paths
        .iter()
        .map(|p| {
            let given = p
                .as_str()
                .ok_or_else(|| format!("images must be paths (strings), got {p}"))?;
            let path = ws.resolve(given).map_err(|e| e.to_string())?;
            let shown = ws.display(&path);
            let mut bytes = Vec::new();
            crate::regular::open(&path)
                .and_then(|f| f.take(EDIT_CAP + 1).read_to_end(&mut bytes))
                .map_err(|e| format!("{shown}: {e}"))?;
            if bytes.len() as u64 > EDIT_CAP {
                return Err(format!("{shown} is larger than {} MB", EDIT_CAP >> 20));
            }
            let media_type = match crate::blobs::sniff(&bytes) {
                Some(t @ ("image/png" | "image/jpeg" | "image/webp")) => t,
                Some(t) => return Err(format!("{shown} is {t}; make a PNG of it first (convert)")),
                None => return Err(format!("{shown} is not a PNG, JPEG or WebP image")),
            };
            Ok(super::retry::Upload {
                field,
                name: file_name(&path, &shown),
                media_type,
                bytes,
            })
        })
        .collect()
}

/// Largest image `respond_with_image` attaches: its base64 must fit a 1 MiB tether line.
pub const ATTACH_CAP: u64 = 700 * 1024;

/// `respond_with_image {path}`: the image to attach, and the text for the model.
pub fn attach_image(ws: &Workspace, args: &Value) -> Result<(tether::frame::Image, String), String> {
    let given = arg_str(args, "path")?;
    let path = ws.resolve(given).map_err(|e| e.to_string())?;
    let media_type = crate::blobs::media_type(&path)
        .ok_or_else(|| format!("{given} is not a .png, .jpg, .gif or .webp image"))?;
    let size = fs::metadata(&path).map_err(|e| format!("{given}: {e}"))?.len();
    if size > ATTACH_CAP {
        return Err(format!(
            "{given} is too large to send ({size} bytes; at most {ATTACH_CAP})"
        ));
    }
    let bytes = crate::regular::read(&path, ATTACH_CAP).map_err(|e| format!("{given}: {e}"))?;
    // Also in the blob store: a gateway that reads blobs from the workspace (upstream's)
    // finds it there; ours uses the inline bytes.
    let blob = crate::blobs::store(ws.root(), media_type, &bytes).map_err(|e| format!("{given}: {e}"))?;
    let image = tether::frame::Image {
        media_type: media_type.to_string(),
        blob: Some(blob),
        data: Some(crate::blobs::encode(&bytes)),
        size: Some(bytes.len() as u64),
    };
    Ok((image, format!("{} attached to the reply", ws.display(&path))))
}

/// Largest file `send_file` sends: the Bot API takes documents of at most 50 MB.
pub const SEND_CAP: u64 = 50 * 1024 * 1024;

/// `send_file {path}`: the file to send with the reply (kept in the blob store, so what
/// the user gets is the file as it was now), and the text for the model.
pub fn attach_file(ws: &Workspace, args: &Value) -> Result<(tether::frame::FileRef, String), String> {
    let given = arg_str(args, "path")?;
    let path = ws.resolve(given).map_err(|e| e.to_string())?;
    let shown = ws.display(&path);
    let meta = fs::metadata(&path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.len() > SEND_CAP {
        return Err(format!(
            "{shown} is too large to send ({} bytes; at most {SEND_CAP})",
            meta.len()
        ));
    }
    let (blob, size) =
        crate::blobs::store_file(ws.root(), &path, SEND_CAP).map_err(|e| format!("{shown}: {e}"))?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let file = tether::frame::FileRef {
        name,
        blob,
        size: Some(size),
    };
    Ok((
        file,
        format!("{shown} ({size} bytes) will be sent after your reply's text"),
    ))
}

/// `list_files {path?}`: one entry per line, folders with a trailing `/`.
pub fn list_files(ws: &Workspace, args: &Value) -> Result<String, String> {
    let given = args.get("path").and_then(Value::as_str).unwrap_or("");
    let path = ws.resolve(given).map_err(|e| e.to_string())?;
    let shown = ws.display(&path);
    let mut entries: Vec<(String, String)> = fs::read_dir(&path)
        .map_err(|e| format!("{shown}: {e}"))?
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let line = match e.file_type() {
                Ok(t) if t.is_dir() => format!("{name}/"),
                Ok(t) if t.is_symlink() => match fs::read_link(e.path()) {
                    Ok(target) => format!("{name} -> {}", target.display()),
                    Err(_) => format!("{name} -> ?"),
                },
                _ => match e.metadata() {
                    Ok(m) => format!("{name} ({} bytes)", m.len()),
                    Err(_) => name.clone(),
                },
            };
            (name, line)
        })
        .collect();
    if entries.is_empty() {
        return Ok(format!("{shown} is empty"));
    }
    entries.sort_unstable();
    let total = entries.len();
    let mut out: Vec<String> = entries.into_iter().take(LIST_CAP).map(|(_, l)| l).collect();
    if total > LIST_CAP {
        out.push(format!("... and {} more", total - LIST_CAP));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_of_a_middle_change_has_context_and_counts() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9";
        let d = unified_diff("f.txt", old, new);
        assert_eq!(
            d,
            "--- a/f.txt\n+++ b/f.txt\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn diff_of_an_insertion_at_the_start() {
        let d = unified_diff("f", "a\nb", "new\na\nb");
        assert_eq!(d, "--- a/f\n+++ b/f\n@@ -1,2 +1,3 @@\n+new\n a\n b\n");
    }
}
