//! Documents a tool showed the model (a PDF or an image `read_file` or `web_fetch`
//! opened, see `tools::files`; an image an MCP tool returned), in each API's terms. Only
//! the reply they belong to carries their bytes (the worker fills them in for the turns
//! after its question); elsewhere they are named in the result's text, so a later request
//! costs none of their pages.
//!
//! - Messages API: `document` (a PDF) and `image` blocks inside the `tool_result`, after
//!   its text;
//! - Chat Completions (OpenAI, OpenRouter): a tool message holds text only, so a user
//!   message with `file` and `image_url` parts follows the round's tool messages;
//! - Responses API: the same message, its parts as `input_file` and `input_image` (see
//!   `responses.rs`).

use serde_json::{json, Value};

use crate::session::{Document, Turn};

/// A tool result's text, with a note for each of its documents not attached.
pub fn result_text(t: &Turn) -> String {
    let mut text = t.content.text();
    for d in t.documents.iter().filter(|d| d.data.is_none()) {
        text.push_str("\n\n");
        text.push_str(&d.note());
    }
    text
}

/// Whether `d` is a picture (else a PDF).
fn is_image(d: &Document) -> bool {
    d.media_type.starts_with("image/")
}

/// A tool result's `content` for the Messages API: its text, or with documents attached,
/// the text then a `document` or `image` block each.
pub fn anthropic_result(t: &Turn) -> Value {
    let text = result_text(t);
    let mut blocks = Vec::new();
    for d in &t.documents {
        if let Some(data) = &d.data {
            let source = json!({"type": "base64", "media_type": d.media_type, "data": data});
            blocks.push(if is_image(d) {
                json!({"type": "image", "source": source})
            } else {
                json!({"type": "document", "title": d.name, "source": source})
            });
        }
    }
    if blocks.is_empty() {
        return Value::String(text);
    }
    blocks.insert(0, json!({"type": "text", "text": text}));
    Value::Array(blocks)
}

/// After each run of tool messages in `messages` (the system prompt, then one message per
/// turn of `turns`) whose turns attached documents, a user message showing them.
pub fn openai_follow_ups(messages: &mut Vec<Value>, turns: &[Turn]) {
    if messages.len() != turns.len() + 1 {
        log::warn!("documents not attached: the messages do not match the turns");
        return;
    }
    // (index of the run's last tool message, the names and parts to show after it)
    let mut after: Vec<(usize, Vec<(String, Value)>)> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let parts: Vec<(String, Value)> = t
            .documents
            .iter()
            .filter_map(|d| {
                let url = format!("data:{};base64,{}", d.media_type, d.data.as_ref()?);
                let part = if is_image(d) {
                    json!({"type": "image_url", "image_url": {"url": url}})
                } else {
                    json!({"type": "file", "file": {"filename": d.name, "file_data": url}})
                };
                Some((d.name.clone(), part))
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        let mut end = i + 1;
        while messages.get(end + 1).is_some_and(|m| m["role"] == "tool") {
            end += 1;
        }
        match after.last_mut() {
            Some((at, shown)) if *at == end => shown.extend(parts),
            _ => after.push((end, parts)),
        }
    }
    for (end, files) in after.into_iter().rev() {
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        let mut parts = vec![json!({"type": "text",
            "text": format!("[attached by the tool results above: {}]", names.join(", "))})];
        parts.extend(files.into_iter().map(|(_, part)| part));
        messages.insert(end + 1, json!({"role": "user", "content": parts}));
    }
}
