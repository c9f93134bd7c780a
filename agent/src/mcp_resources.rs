//! An MCP server's resources (files, records, documents it exposes by URI) as two tools
//! for the model, as coding agents offer them: `SERVER_list_resources` and
//! `SERVER_read_resource`. Offered for a server that declares the `resources`
//! capability, unless it has tools of those names itself. [`crate::mcp`] makes the
//! requests; this module says what the tools are and what the model reads back.

use serde_json::{json, Value};

use crate::llm::ToolSpec;

/// Resources and templates listed per call, at most (the rest: ask again with the cursor).
pub const MAX_LISTED: usize = 200;
/// Characters of a resource's text the model reads, at most (as `read_file`'s bytes).
pub const MAX_TEXT: usize = 50_000;

/// Which of the two tools.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResourceTool {
    /// `resources/list` (and `resources/templates/list`).
    List,
    /// `resources/read`.
    Read,
}

impl ResourceTool {
    /// The name the server would have to give a tool of its own to take this one's place.
    pub fn name(self) -> &'static str {
        match self {
            ResourceTool::List => "list_resources",
            ResourceTool::Read => "read_resource",
        }
    }

    /// The tool as offered for `server`, under `exposed`.
    pub fn spec(self, server: &str, exposed: String) -> ToolSpec {
        let (description, input_schema) = match self {
            ResourceTool::List => (
                format!(
                    "List the resources (files, records, documents) MCP server {server} offers, \
                     with their URIs and the URI templates it reads; read one with \
                     {server}_read_resource. Give `cursor` to see the next page."
                ),
                json!({"type": "object", "properties": {"cursor": {"type": "string",
                    "description": "The cursor a previous listing ended with"}}}),
            ),
            ResourceTool::Read => (
                format!(
                    "Read a resource of MCP server {server} by its URI (one {server}_list_resources \
                     listed, or one made from a template it listed)."
                ),
                json!({"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]}),
            ),
        };
        ToolSpec {
            name: exposed,
            description,
            input_schema,
        }
    }
}

/// What the model reads for a `resources/list` result and, when the server lists them,
/// a `resources/templates/list` one.
pub fn listing(resources: &Value, templates: Option<&Value>) -> String {
    let mut lines = Vec::new();
    let listed = resources["resources"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for r in listed.iter().take(MAX_LISTED) {
        let mut line = format!(
            "{} — {}",
            r["uri"].as_str().unwrap_or("?"),
            r["title"].as_str().or(r["name"].as_str()).unwrap_or("?")
        );
        let facts: Vec<String> = [
            r["mimeType"].as_str().map(str::to_string),
            r["size"].as_u64().map(|n| format!("{n} bytes")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !facts.is_empty() {
            line.push_str(&format!(" ({})", facts.join(", ")));
        }
        if let Some(d) = r["description"].as_str().filter(|d| !d.is_empty()) {
            line.push_str(&format!(": {d}"));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push("no resources".to_string());
    }
    let shown = templates
        .and_then(|t| t["resourceTemplates"].as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !shown.is_empty() {
        lines.push("templates (fill in the {names} to make a URI):".to_string());
        for t in shown.iter().take(MAX_LISTED) {
            let mut line = format!(
                "{} — {}",
                t["uriTemplate"].as_str().unwrap_or("?"),
                t["title"].as_str().or(t["name"].as_str()).unwrap_or("?")
            );
            if let Some(d) = t["description"].as_str().filter(|d| !d.is_empty()) {
                line.push_str(&format!(": {d}"));
            }
            lines.push(line);
        }
    }
    let cut = listed.len() > MAX_LISTED;
    match resources["nextCursor"].as_str().filter(|c| !c.is_empty()) {
        Some(c) if !cut => lines.push(format!("(more: list again with cursor {c:?})")),
        _ if cut => lines.push(format!("(the first {MAX_LISTED} of {} shown)", listed.len())),
        _ => {}
    }
    lines.join("\n")
}

/// Keeps a blob a resource holds (base64 data, media type); where, in the workspace.
pub type SaveBlob<'a> = dyn Fn(&str, &str) -> Result<String, String> + 'a;

/// What the model reads for a `resources/read` result: each content's text (at most
/// [`MAX_TEXT`] characters in all), an image kept as a workspace file through `save`,
/// another blob named with its size.
pub fn contents(result: &Value, save: &SaveBlob) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut room = MAX_TEXT;
    for c in result["contents"].as_array().into_iter().flatten() {
        let uri = c["uri"].as_str().unwrap_or("?");
        let mime = c["mimeType"].as_str().unwrap_or("application/octet-stream");
        if let Some(text) = c["text"].as_str() {
            let n = text.chars().count();
            if n <= room {
                parts.push(text.to_string());
                room -= n;
            } else {
                let kept: String = text.chars().take(room).collect();
                parts.push(format!(
                    "{kept}\n[… {} more characters of {uri} not shown]",
                    n - room
                ));
                room = 0;
            }
        } else if let Some(blob) = c["blob"].as_str() {
            let bytes = blob.trim().len() / 4 * 3;
            parts.push(if mime.starts_with("image/") {
                match save(blob, mime) {
                    Ok(path) => format!("[{mime} resource {uri}, saved in the workspace as {path}]"),
                    Err(why) => format!("[{mime} resource {uri}, not saved: {why}]"),
                }
            } else {
                format!("[{mime} resource {uri}, about {bytes} bytes, not shown]")
            });
        }
    }
    if parts.is_empty() {
        "the resource is empty".to_string()
    } else {
        parts.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_names_each_resource_and_template_and_the_next_page() {
        let resources = json!({"resources": [
            {"uri": "file:///r/a.md", "name": "a.md", "title": "Notes", "mimeType": "text/markdown", "size": 12, "description": "the notes"},
            {"uri": "db://t/users", "name": "users"}],
            "nextCursor": "p2"});
        let templates = json!({"resourceTemplates": [{"uriTemplate": "db://t/{table}", "name": "table", "description": "any table"}]});
        assert_eq!(
            listing(&resources, Some(&templates)),
            "file:///r/a.md — Notes (text/markdown, 12 bytes): the notes\ndb://t/users — users\n\
             templates (fill in the {names} to make a URI):\ndb://t/{table} — table: any table\n\
             (more: list again with cursor \"p2\")"
        );
        assert_eq!(listing(&json!({"resources": []}), None), "no resources");
        let many: Vec<Value> = (0..250)
            .map(|i| json!({"uri": format!("x://{i}"), "name": "n"}))
            .collect();
        let text = listing(&json!({"resources": many}), None);
        assert_eq!(text.lines().count(), MAX_LISTED + 1);
        assert!(text.ends_with("(the first 200 of 250 shown)"));
    }

    #[test]
    fn contents_are_text_within_a_bound_and_blobs_named_or_kept() {
        let saved = |_: &str, _: &str| Ok("mcp/s-1.png".to_string());
        let r = json!({"contents": [
            {"uri": "file:///a", "mimeType": "text/plain", "text": "hello"},
            {"uri": "file:///p.png", "mimeType": "image/png", "blob": "iVBORw0KGgo="},
            {"uri": "file:///z.zip", "mimeType": "application/zip", "blob": "UEsDBAo="}]});
        assert_eq!(
            contents(&r, &saved),
            "hello\n[image/png resource file:///p.png, saved in the workspace as mcp/s-1.png]\n\
             [application/zip resource file:///z.zip, about 6 bytes, not shown]"
        );
        let long = json!({"contents": [{"uri": "file:///big", "text": "x".repeat(MAX_TEXT + 5)}]});
        let text = contents(&long, &saved);
        assert!(text.ends_with("[… 5 more characters of file:///big not shown]"));
        assert_eq!(text.chars().filter(|c| *c == 'x').count(), MAX_TEXT);
        assert_eq!(
            contents(&json!({"contents": []}), &saved),
            "the resource is empty"
        );
    }
}
