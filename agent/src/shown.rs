//! Documents a tool showed the model (a PDF `read_file` opened, see `tools::files`), in
//! each API's terms. Only the reply they belong to carries their bytes (the worker fills
//! them in for the turns after its question); elsewhere they are named in the result's
//! text, so a later request costs none of their pages.
//!
//! - Messages API: `document` blocks inside the `tool_result`, after its text;
//! - Chat Completions (OpenAI, OpenRouter): a tool message holds text only, so a user
//!   message with `file` parts follows the round's tool messages;
//! - Responses API: the same message, its parts as `input_file` (see `responses.rs`).

use serde_json::{json, Value};

use crate::session::Turn;

/// A tool result's text, with a note for each of its documents not attached.
pub fn result_text(t: &Turn) -> String {
    let mut text = t.content.text();
    for d in t.documents.iter().filter(|d| d.data.is_none()) {
        text.push_str("\n\n");
        text.push_str(&d.note());
    }
    text
}

/// A tool result's `content` for the Messages API: its text, or with documents attached,
/// the text then a `document` block each.
pub fn anthropic_result(t: &Turn) -> Value {
    let text = result_text(t);
    let mut blocks = Vec::new();
    for d in &t.documents {
        if let Some(data) = &d.data {
            blocks.push(json!({"type": "document", "title": d.name,
                "source": {"type": "base64", "media_type": d.media_type, "data": data}}));
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
    // (index of the run's last tool message, the parts to show after it)
    let mut after: Vec<(usize, Vec<Value>)> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let parts: Vec<Value> = t
            .documents
            .iter()
            .filter_map(|d| {
                let data = d.data.as_ref()?;
                Some(json!({"type": "file", "file": {"filename": d.name,
                    "file_data": format!("data:{};base64,{data}", d.media_type)}}))
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
        let names: Vec<&str> = files
            .iter()
            .filter_map(|f| f["file"]["filename"].as_str())
            .collect();
        let mut parts = vec![json!({"type": "text",
            "text": format!("[attached by the tool results above: {}]", names.join(", "))})];
        parts.extend(files);
        messages.insert(end + 1, json!({"role": "user", "content": parts}));
    }
}
