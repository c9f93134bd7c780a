//! Fake LLM APIs speaking the real streaming wire formats: OpenAI Chat Completions SSE
//! (`data: {...}` chunks, `data: [DONE]`) and Anthropic Messages SSE (`event:` lines,
//! `ping`, `error` events), plus their HTTP errors (429 with `retry-after`, 500,
//! 529 `overloaded_error`) and broken streams (cut mid-event, malformed JSON, stalls).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{Request, Responder, Server};

/// How a streamed reply ends.
#[derive(Debug, Clone)]
pub enum End {
    /// Properly terminated chunked body.
    Finish,
    /// The connection is cut after the last piece.
    Cut,
    /// Nothing more is sent for this long, then the connection closes.
    Hang(Duration),
}

/// A switch a test flips to let a held reply go on (`Reply::Held`).
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    /// Let every reply held at this gate go on.
    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Wait until opened, `max` at most.
    pub(crate) fn wait(&self, max: Duration) {
        let (lock, cv) = &*self.0;
        let open = lock.lock().unwrap();
        let _ = cv.wait_timeout_while(open, max, |open| !*open).unwrap();
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A plain HTTP response.
    Status {
        /// Status code.
        code: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// JSON body text.
        body: String,
    },
    /// An SSE stream: each piece is written and flushed separately, `delay` apart.
    Sse {
        /// Raw pieces of the event stream (may split events anywhere).
        pieces: Vec<String>,
        /// Pause before each piece.
        delay: Duration,
        /// How it ends.
        end: End,
    },
    /// An SSE stream that sends `first`, waits until the test opens `gate` (a minute at
    /// most), then sends `rest` and finishes: the reply is half written for exactly as
    /// long as the test needs, however slow the machine.
    Held {
        /// Sent at once.
        first: Vec<String>,
        /// Opened by the test.
        gate: Gate,
        /// Sent after.
        rest: Vec<String>,
    },
    /// An SSE stream that sends `first` and then nothing, as a model does while it thinks
    /// before its first visible token, until the client closes the connection (counted
    /// in [`FakeLlm::abandoned`]) or a minute passes.
    Quiet {
        /// Sent at once.
        first: Vec<String>,
    },
}

impl Reply {
    /// An OpenAI stream of `before`, held at `gate`, then `after`.
    pub fn held(before: &[&str], gate: &Gate, after: &[&str]) -> Reply {
        let all: Vec<&str> = before.iter().chain(after).copied().collect();
        let mut pieces = openai_sse(&all);
        let rest = pieces.split_off(1 + before.len());
        Reply::Held {
            first: pieces,
            gate: gate.clone(),
            rest,
        }
    }

    /// A stream of `pieces` with no delay, properly finished.
    pub fn sse(pieces: Vec<String>) -> Reply {
        Reply::Sse {
            pieces,
            delay: Duration::ZERO,
            end: End::Finish,
        }
    }

    /// An OpenAI stream that sends `text` as its first delta and then goes silent (the
    /// reply is in flight for as long as a test needs: a cancel, a kill).
    pub fn stalls_after(text: &str) -> Reply {
        Reply::Sse {
            pieces: openai_sse(&[text])[..2].to_vec(),
            delay: Duration::ZERO,
            end: End::Hang(Duration::from_secs(60)),
        }
    }

    /// Response headers, then nothing at all (an LLM that never starts answering).
    pub fn silent() -> Reply {
        Reply::Sse {
            pieces: vec![],
            delay: Duration::ZERO,
            end: End::Hang(Duration::from_secs(30)),
        }
    }

    /// Response headers, then silence until the client goes away (see [`Reply::Quiet`]).
    pub fn quiet() -> Reply {
        Reply::Quiet { first: vec![] }
    }

    /// HTTP 429 with `retry-after` seconds, OpenAI's body.
    pub fn rate_limited(retry_after: u32) -> Reply {
        Reply::Status {
            code: 429,
            headers: vec![("retry-after".into(), retry_after.to_string())],
            body: json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}).to_string(),
        }
    }

    /// Anthropic's HTTP 529.
    pub fn overloaded() -> Reply {
        Reply::Status {
            code: 529,
            headers: vec![],
            body: json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                .to_string(),
        }
    }

    /// HTTP 500 with an OpenAI-style error body.
    pub fn server_error() -> Reply {
        Reply::Status {
            code: 500,
            headers: vec![],
            body: json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}).to_string(),
        }
    }

    /// OpenAI's 404 for a model it does not have (or no longer has).
    pub fn openai_model_not_found(model: &str) -> Reply {
        Reply::Status {
            code: 404,
            headers: vec![],
            body: json!({"error": {"message": format!("The model `{model}` does not exist or you do not have access to it."),
                "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
            .to_string(),
        }
    }

    /// Anthropic's 404 for a model it does not have (or no longer has).
    pub fn anthropic_model_not_found(model: &str) -> Reply {
        Reply::Status {
            code: 404,
            headers: vec![],
            body: json!({"type": "error", "error": {"type": "not_found_error", "message": format!("model: {model}")}})
                .to_string(),
        }
    }

    /// OpenAI's 400 for an image sent to a model without vision (`o3-mini`).
    pub fn openai_no_vision() -> Reply {
        Reply::Status {
            code: 400,
            headers: vec![],
            body: json!({"error": {"message": "Invalid content type. image_url is only supported by certain models.",
                "type": "invalid_request_error", "param": "messages.[3].content.[1].type", "code": null}})
            .to_string(),
        }
    }

    /// HTTP 401 for a bad key.
    pub fn unauthorized() -> Reply {
        Reply::Status {
            code: 401,
            headers: vec![],
            body: json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}).to_string(),
        }
    }
}

/// OpenAI chunks for `texts`, then `[DONE]`.
pub fn openai_sse(texts: &[&str]) -> Vec<String> {
    let mut out = vec![format!(
        "data: {}\n\n",
        json!({"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})
    )];
    for t in texts {
        out.push(format!(
            "data: {}\n\n",
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":t},"finish_reason":null}]})
        ));
    }
    out.push(format!(
        "data: {}\n\n",
        json!({"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})
    ));
    out.push("data: [DONE]\n\n".into());
    out
}

/// Chat Completions' refusal of a model it does not serve (the pro and codex models).
pub fn responses_only() -> Reply {
    Reply::Status {
        code: 404,
        headers: vec![],
        body: json!({"error": {"message": "This model is only supported in v1/responses and not in v1/chat/completions.",
            "type": "invalid_request_error", "param": "model", "code": null}})
        .to_string(),
    }
}

/// One event of a Responses API stream, as OpenAI writes it (`event:` and `data:`).
fn responses_event(data: serde_json::Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("message")
    )
}

/// A Responses API stream: a reasoning summary (`thoughts`, if any, its item done with
/// `encrypted_content` `enc:` and the thoughts, as a request that `include`s it gets), the
/// answer in `texts`, then tool `calls` (id, name, arguments, each sent in two pieces),
/// ending with `response.completed` and its usage (`usage`: input, cached, output).
pub fn responses_sse(
    thoughts: &[&str],
    texts: &[&str],
    calls: &[(&str, &str, &str)],
    usage: (u64, u64, u64),
) -> Vec<String> {
    let mut out = vec![responses_created()];
    let mut index = 0;
    if !thoughts.is_empty() {
        responses_reasoning(&mut out, index, "rs_1", thoughts);
        index += 1;
    }
    if !texts.is_empty() {
        responses_message(&mut out, index, texts, &[]);
        index += 1;
    }
    responses_calls(&mut out, index, calls);
    out.push(responses_completed(usage));
    out
}

/// A Responses API stream of a model that searches with OpenAI's `web_search` tool, as
/// the API streams it: reasoning (`thought`, encrypted as in [`responses_sse`]), each
/// search of `queries` (its item added, `in_progress`, `searching`, `completed`, its item
/// done with the action), more reasoning after them, then the answer in `texts` with
/// `citations` (URL, title): each an `annotation.added` after the text, spanning the
/// link to the URL where the text writes one (as OpenAI's answers do), else the whole
/// text; all again on the message's item when done. Then tool `calls`, the end.
pub fn responses_search_sse(
    thought: &str,
    queries: &[&str],
    texts: &[&str],
    citations: &[(&str, &str)],
    calls: &[(&str, &str, &str)],
) -> Vec<String> {
    let mut out = vec![responses_created()];
    let mut index = 0;
    if !thought.is_empty() {
        responses_reasoning(&mut out, index, "rs_1", &[thought]);
        index += 1;
    }
    for (n, query) in queries.iter().enumerate() {
        let id = format!("ws_{n}");
        out.push(responses_event(
            json!({"type": "response.output_item.added", "output_index": index,
            "item": {"id": id, "type": "web_search_call", "status": "in_progress"}}),
        ));
        for stage in ["in_progress", "searching", "completed"] {
            out.push(responses_event(
                json!({"type": format!("response.web_search_call.{stage}"),
                "output_index": index, "item_id": id}),
            ));
        }
        out.push(responses_event(
            json!({"type": "response.output_item.done", "output_index": index,
            "item": {"id": id, "type": "web_search_call", "status": "completed",
                "action": {"type": "search", "query": query}}}),
        ));
        index += 1;
    }
    if !thought.is_empty() && !queries.is_empty() {
        responses_reasoning(&mut out, index, "rs_2", &["Found it."]);
        index += 1;
    }
    if !texts.is_empty() {
        let text = texts.concat();
        let annotations: Vec<Value> = citations
            .iter()
            .map(|(url, title)| {
                let (start, end) = match text.find(url) {
                    Some(at) => {
                        let open = text[..at].rfind('[').unwrap_or(0);
                        (open, at + url.len() + 1)
                    }
                    None => (0, text.len()),
                };
                json!({"type": "url_citation", "start_index": start, "end_index": end, "url": url, "title": title})
            })
            .collect();
        responses_message(&mut out, index, texts, &annotations);
        index += 1;
    }
    responses_calls(&mut out, index, calls);
    out.push(responses_completed((900, 0, 60)));
    out
}

fn responses_created() -> String {
    responses_event(
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "in_progress"}}),
    )
}

/// A reasoning item at `index`: its summary streamed, then done with it encrypted.
fn responses_reasoning(out: &mut Vec<String>, index: usize, id: &str, thoughts: &[&str]) {
    out.push(responses_event(
        json!({"type": "response.output_item.added", "output_index": index,
        "item": {"id": id, "type": "reasoning", "summary": []}}),
    ));
    for t in thoughts {
        out.push(responses_event(
            json!({"type": "response.reasoning_summary_text.delta",
            "item_id": id, "output_index": index, "summary_index": 0, "delta": t}),
        ));
    }
    let all = thoughts.concat();
    out.push(responses_event(
        json!({"type": "response.output_item.done", "output_index": index,
        "item": {"id": id, "type": "reasoning", "encrypted_content": format!("enc:{all}"),
            "summary": [{"type": "summary_text", "text": all}]}}),
    ));
}

/// The answer's message at `index`: its text in `texts`' pieces, each of `annotations`
/// after them, the text and the message done (with the annotations).
fn responses_message(out: &mut Vec<String>, index: usize, texts: &[&str], annotations: &[Value]) {
    out.push(responses_event(json!({"type": "response.output_item.added", "output_index": index,
        "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}})));
    for t in texts {
        out.push(responses_event(
            json!({"type": "response.output_text.delta", "item_id": "msg_1",
            "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
        ));
    }
    for (n, a) in annotations.iter().enumerate() {
        out.push(responses_event(
            json!({"type": "response.output_text.annotation.added", "item_id": "msg_1",
            "output_index": index, "content_index": 0, "annotation_index": n, "annotation": a}),
        ));
    }
    let text = texts.concat();
    out.push(responses_event(
        json!({"type": "response.output_text.done", "item_id": "msg_1",
        "output_index": index, "content_index": 0, "text": text}),
    ));
    let part = json!({"type": "output_text", "text": text, "annotations": annotations});
    out.push(responses_event(
        json!({"type": "response.output_item.done", "output_index": index,
        "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
            "content": [part]}}),
    ));
}

/// Function calls from `index` on: each added, its arguments in two pieces, done.
fn responses_calls(out: &mut Vec<String>, mut index: usize, calls: &[(&str, &str, &str)]) {
    for (id, name, args) in calls {
        out.push(responses_event(
            json!({"type": "response.output_item.added", "output_index": index,
            "item": {"id": format!("fc_{id}"), "type": "function_call", "status": "in_progress",
                "call_id": id, "name": name, "arguments": ""}}),
        ));
        let half = args.len() / 2;
        let half = (0..=half).rev().find(|&i| args.is_char_boundary(i)).unwrap_or(0);
        for piece in [&args[..half], &args[half..]] {
            out.push(responses_event(
                json!({"type": "response.function_call_arguments.delta",
                "item_id": format!("fc_{id}"), "output_index": index, "delta": piece}),
            ));
        }
        out.push(responses_event(
            json!({"type": "response.function_call_arguments.done",
            "item_id": format!("fc_{id}"), "output_index": index, "arguments": args}),
        ));
        index += 1;
    }
}

fn responses_completed((input, cached, output): (u64, u64, u64)) -> String {
    responses_event(json!({"type": "response.completed", "response": {"id": "resp_1",
        "status": "completed", "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output}}}))
}

/// The Responses API's refusal of reasoning summaries to an organization OpenAI has not
/// verified, when `body` asks for them.
pub fn unverified_summaries(body: &serde_json::Value) -> Option<Reply> {
    body["reasoning"].get("summary")?;
    Some(Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"error": {"message": "Your organization must be verified to generate reasoning summaries. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization. If you just verified, it can take up to 15 minutes for access to propagate.",
            "type": "invalid_request_error", "param": "reasoning.summary", "code": "unsupported_value"}})
        .to_string(),
    })
}

/// What the Responses API refuses in `body`, in its words: Chat Completions' `messages`,
/// a request without `input`, reasoning or a search sent back by an id alone (the request
/// is not stored) or a search without its action, web search offered to a model that
/// cannot search (the nano models), or a function tool left strict (the default) whose
/// schema strict mode cannot take (not every property required, or other properties
/// allowed).
pub fn responses_refusal(body: &serde_json::Value) -> Option<Reply> {
    let refuse = |message: String, param: &str, code: &str| {
        Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
            .to_string(),
    }
    };
    if body.get("messages").is_some() {
        return Some(refuse(
            "Unsupported parameter: 'messages'. In the Responses API, this parameter has moved to 'input'. Try again with the new parameter. See the API documentation for more information: https://platform.openai.com/docs/api-reference/responses/create.".into(),
            "messages",
            "unsupported_parameter",
        ));
    }
    if !body["input"].is_array() && !body["input"].is_string() {
        return Some(refuse(
            "Missing required parameter: 'input'.".into(),
            "input",
            "missing_required_parameter",
        ));
    }
    // Without `store`, an item is known by what it carries, never by its id.
    let forgotten = body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["type"] == "reasoning" && !i["encrypted_content"].is_string());
    if let Some(item) = forgotten {
        return Some(not_persisted(item["id"].as_str().unwrap_or("?")));
    }
    // A search OpenAI ran goes back as what it did: its id names an item a request that
    // is not stored cannot refer to (OpenAI's own stateless client sends none).
    let items = body["input"].as_array().into_iter().flatten().enumerate();
    for (n, item) in items.filter(|(_, i)| i["type"] == "web_search_call") {
        if let Some(id) = item["id"].as_str() {
            return Some(not_persisted(id));
        }
        if !item["action"].is_object() {
            return Some(refuse(
                format!("Missing required parameter: 'input[{n}].action'."),
                &format!("input[{n}].action"),
                "missing_required_parameter",
            ));
        }
    }
    let searches = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["type"] == "web_search");
    let model = body["model"].as_str().unwrap_or_default();
    if searches && model.contains("nano") {
        return Some(refuse(
            format!("Hosted tool 'web_search' is not supported with {model}."),
            "tools",
            "invalid_value",
        ));
    }
    // The search tool's own settings: `filters` takes allowed domains only.
    let tools = body["tools"].as_array().into_iter().flatten().enumerate();
    for (n, t) in tools.filter(|(_, t)| t["type"] == "web_search") {
        let known = ["type", "filters", "user_location", "search_context_size"];
        let filters = t["filters"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| format!("filters.{k}"));
        let keys = t.as_object().into_iter().flatten().map(|(k, _)| k.clone());
        let odd = keys
            .filter(|k| !known.contains(&k.as_str()))
            .chain(filters.filter(|k| k != "filters.allowed_domains"))
            .next();
        if let Some(k) = odd {
            return Some(refuse(
                format!("Unknown parameter: 'tools[{n}].{k}'."),
                &format!("tools[{n}].{k}"),
                "unknown_parameter",
            ));
        }
        if t.get("user_location").is_some_and(|l| l["type"] != "approximate") {
            return Some(refuse(
                format!("Missing required parameter: 'tools[{n}].user_location.type'."),
                &format!("tools[{n}].user_location.type"),
                "missing_required_parameter",
            ));
        }
    }
    for t in body["tools"].as_array().into_iter().flatten() {
        if t["type"] != "function" {
            continue;
        }
        let strict = t["strict"].as_bool().unwrap_or(true);
        let p = &t["parameters"];
        let props = p["properties"].as_object().map_or(0, |o| o.len());
        let required = p["required"].as_array().map_or(0, |r| r.len());
        if strict && (p["additionalProperties"] != json!(false) || required != props) {
            let name = t["name"].as_str().unwrap_or("?");
            return Some(refuse(
                format!("Invalid schema for function '{name}': In context=(), 'additionalProperties' is required to be supplied and to be false."),
                "tools[0].parameters",
                "invalid_function_parameters",
            ));
        }
    }
    None
}

/// The Responses API's answer to an item sent back by its `id` alone when nothing is
/// stored (`store: false`).
fn not_persisted(id: &str) -> Reply {
    Reply::Status {
        code: 404,
        headers: vec![],
        body: json!({"error": {"message": format!("Item with id '{id}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input."),
            "type": "invalid_request_error", "param": "input", "code": null}})
        .to_string(),
    }
}

/// `pieces` (an OpenAI stream) with the chunk a request asking
/// `stream_options.include_usage` gets last, before `[DONE]`: no choices, the usage.
pub fn with_openai_usage(mut pieces: Vec<String>, prompt: u64, cached: u64, completion: u64) -> Vec<String> {
    let chunk = json!({"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o","choices":[],
        "usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt + completion,
            "prompt_tokens_details":{"cached_tokens":cached,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,
                "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}});
    let done = pieces.len().saturating_sub(1);
    pieces.insert(done, format!("data: {chunk}\n\n"));
    pieces
}

/// OpenAI's refusal of a request argument it does not know, as older deployments (and
/// Azure's) answer `stream_options`.
pub fn openai_unknown_argument(name: &str) -> Reply {
    Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"error": {"message": format!("Unrecognized request argument supplied: {name}"),
            "type": "invalid_request_error", "param": null, "code": null}})
        .to_string(),
    }
}

/// A reasoning model's chunks as Ollama's `/v1/chat/completions` streams them: the
/// thoughts in `delta.reasoning` (`field`; DeepSeek and vLLM name it `reasoning_content`)
/// with an empty `content`, then the answer in `content`, then `[DONE]`.
pub fn reasoning_sse(field: &str, thoughts: &[&str], texts: &[&str]) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        format!(
            "data: {}\n\n",
            json!({"id":"chatcmpl-42","object":"chat.completion.chunk","created":1764662400,
                "model":"qwen3:8b","system_fingerprint":"fp_ollama",
                "choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
        )
    };
    let mut out = Vec::new();
    for (i, t) in thoughts.iter().enumerate() {
        let mut delta = json!({"content": "", field: t});
        if i == 0 {
            delta["role"] = "assistant".into();
        }
        out.push(chunk(delta, serde_json::Value::Null));
    }
    for t in texts {
        out.push(chunk(
            json!({"role": "assistant", "content": t}),
            serde_json::Value::Null,
        ));
    }
    out.push(chunk(json!({"role": "assistant", "content": ""}), "stop".into()));
    out.push("data: [DONE]\n\n".into());
    out
}

/// A model that, asked once, says `text`, sets agent.json's `system_prompt` to "You are
/// restarted." with `write_file` and calls `self_restart`; asked again, answers `then`.
pub fn reconfigures_and_restarts(text: &str, then: &str) -> FakeLlm {
    let agent_json =
        r#"{"path": ".aegis/agent.json", "content": "{\"system_prompt\": \"You are restarted.\"}"}"#;
    FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse(
            text,
            &[("c1", "write_file", agent_json), ("c2", "self_restart", "")],
            4,
        )),
        Reply::sse(openai_sse(&[then])),
    ])
}

/// One server-sent event of Anthropic's stream.
fn anthropic_event(name: &str, data: serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The `message_start` event of message `id`, as the API opens a stream.
fn anthropic_message_start(id: &str) -> String {
    anthropic_event(
        "message_start",
        json!({"type":"message_start","message":{"id":id,"type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-6","stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}}),
    )
}

/// `pieces` (an Anthropic stream) whose `message_start` counts `usage` (`input_tokens`,
/// `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`).
pub fn with_anthropic_usage(mut pieces: Vec<String>, usage: serde_json::Value) -> Vec<String> {
    pieces[0] = anthropic_event(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_u","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-6","stop_reason":null,"usage":usage}}),
    );
    pieces
}

/// The Anthropic event sequence for `texts`, with a `ping` as the real API sends.
pub fn anthropic_sse(texts: &[&str]) -> Vec<String> {
    let mut out = vec![
        anthropic_message_start("msg_1"),
        anthropic_event(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        anthropic_event("ping", json!({"type":"ping"})),
    ];
    for t in texts {
        out.push(anthropic_event(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}),
        ));
    }
    out.push(anthropic_block_stop(0));
    out.push(anthropic_event("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}})));
    out.push(anthropic_event("message_stop", json!({"type":"message_stop"})));
    out
}

/// One search of [`anthropic_search_sse`]: the query, and the results (URL, title).
#[derive(Clone, Copy)]
pub struct Search<'a> {
    pub query: &'a str,
    pub results: &'a [(&'a str, &'a str)],
}

/// A text block at `index`: its start, the citation it makes (if any, as a
/// `citations_delta` before the text, as the API sends it), its text, its stop.
fn anthropic_text_block(out: &mut Vec<String>, index: usize, text: &str, citation: Option<Value>) {
    let mut start = json!({"type":"text","text":""});
    if citation.is_some() {
        start["citations"] = json!([]);
    }
    out.push(anthropic_event(
        "content_block_start",
        json!({"type":"content_block_start","index":index,"content_block":start}),
    ));
    if let Some(c) = citation {
        out.push(anthropic_event(
            "content_block_delta",
            json!({"type":"content_block_delta","index":index,"delta":{"type":"citations_delta","citation":c}}),
        ));
    }
    out.push(anthropic_event(
        "content_block_delta",
        json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":text}}),
    ));
    out.push(anthropic_block_stop(index));
}

/// The end of the block at `index`.
fn anthropic_block_stop(index: usize) -> String {
    anthropic_event(
        "content_block_stop",
        json!({"type":"content_block_stop","index":index}),
    )
}

/// A tool call's block at `index` (`block`: a `tool_use` or `server_tool_use` with an
/// empty input): its start, a ping, its `input` as `input_json_delta` pieces of `split`
/// characters, its stop.
fn anthropic_input_block(out: &mut Vec<String>, index: usize, block: Value, input: &str, split: usize) {
    out.push(anthropic_event(
        "content_block_start",
        json!({"type":"content_block_start","index":index,"content_block":block}),
    ));
    out.push(anthropic_event("ping", json!({"type": "ping"})));
    for piece in pieces_of(input, split) {
        out.push(anthropic_event(
            "content_block_delta",
            json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":piece}}),
        ));
    }
    out.push(anthropic_block_stop(index));
}

/// An Anthropic stream in which Claude searches the web with Anthropic's own tool, as
/// the Messages API streams it: `intro` as a text block (when not empty); the
/// `server_tool_use` (id `srvtoolu_N`, its query in pieces) and, unless `unanswered`,
/// its `web_search_tool_result` (each result with its `encrypted_content`), for each
/// search; then the answer's passages, each citing the result it names (search, result)
/// with a `citations_delta` before its text; then the client tool `calls`; ending with
/// `stop` (`end_turn`, `pause_turn`, `tool_use`) and the searches counted in the usage.
pub fn anthropic_search_sse(
    intro: &str,
    searches: &[Search],
    unanswered: bool,
    answer: &[(&str, Option<(usize, usize)>)],
    calls: &[(&str, &str, &str)],
    stop: &str,
) -> Vec<String> {
    let mut out = vec![anthropic_message_start("msg_s")];
    let mut index = 0;
    if !intro.is_empty() {
        anthropic_text_block(&mut out, index, intro, None);
        index += 1;
    }
    for (n, search) in searches.iter().enumerate() {
        let id = format!("srvtoolu_{n}");
        let block = json!({"type":"server_tool_use","id":id,"name":"web_search","input":{}});
        let query = json!({"query": search.query}).to_string();
        anthropic_input_block(&mut out, index, block, &query, 7);
        index += 1;
        if unanswered {
            continue;
        }
        let results: Vec<Value> = search
            .results
            .iter()
            .map(|(url, title)| {
                json!({"type":"web_search_result","url":url,"title":title,
                    "encrypted_content":format!("EqgfCioIARgB-{title}"),"page_age":"April 30, 2025"})
            })
            .collect();
        out.push(anthropic_event(
            "content_block_start",
            json!({"type":"content_block_start","index":index,"content_block":{"type":"web_search_tool_result","tool_use_id":id,"content":results}}),
        ));
        out.push(anthropic_block_stop(index));
        index += 1;
    }
    for (text, cites) in answer {
        let citation = cites.map(|(s, r)| {
            let (url, title) = searches[s].results[r];
            json!({"type":"web_search_result_location","url":url,"title":title,
                "encrypted_index":"Eo8BCioIAhgBIiQ","cited_text":"..."})
        });
        anthropic_text_block(&mut out, index, text, citation);
        index += 1;
    }
    for (id, name, input) in calls {
        let block = json!({"type":"tool_use","id":id,"name":name,"input":{}});
        anthropic_input_block(&mut out, index, block, input, usize::MAX);
        index += 1;
    }
    out.push(anthropic_event(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},
            "usage":{"output_tokens":40,"server_tool_use":{"web_search_requests":searches.len()}}}),
    ));
    out.push(anthropic_event("message_stop", json!({"type":"message_stop"})));
    out
}

/// Split `s` into pieces of at most `n` characters (tool arguments arrive like this).
fn pieces_of(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

/// An OpenAI stream that says `text` (if any), then asks for `calls` (id, name,
/// arguments JSON) in one round, each call's arguments split into `split`-character
/// pieces, ending with `finish_reason: "tool_calls"` and `[DONE]`.
pub fn openai_tool_sse(text: &str, calls: &[(&str, &str, &str)], split: usize) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        format!(
            "data: {}\n\n",
            json!({"id":"chatcmpl-2","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
        )
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": null}), json!(null))];
    if !text.is_empty() {
        out.push(chunk(json!({"content": text}), json!(null)));
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            json!(null),
        ));
        for piece in pieces_of(args, split) {
            out.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                json!(null),
            ));
        }
    }
    out.push(chunk(json!({}), json!("tool_calls")));
    out.push("data: [DONE]\n\n".into());
    out
}

/// The Anthropic event sequence that says `text` (if any), then calls `calls` (id, name,
/// input JSON) with `input_json_delta` pieces of `split` characters; `stop_reason`
/// `tool_use`.
pub fn anthropic_tool_sse(text: &str, calls: &[(&str, &str, &str)], split: usize) -> Vec<String> {
    let mut out = vec![anthropic_message_start("msg_2")];
    let mut index = 0;
    if !text.is_empty() {
        anthropic_text_block(&mut out, 0, text, None);
        index = 1;
    }
    for (id, name, input) in calls {
        let block = json!({"type":"tool_use","id":id,"name":name,"input":{}});
        anthropic_input_block(&mut out, index, block, input, split);
        index += 1;
    }
    out.push(anthropic_event("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}})));
    out.push(anthropic_event("message_stop", json!({"type":"message_stop"})));
    out
}

/// The Anthropic event sequence of extended thinking that leads to tool calls: a
/// `thinking` block streamed as `thoughts` and signed with `signature`, a
/// `redacted_thinking` block with `redacted` (when given), then `calls` as in
/// [`anthropic_tool_sse`].
pub fn anthropic_thinking_tool_sse(
    thoughts: &[&str],
    signature: &str,
    redacted: Option<&str>,
    calls: &[(&str, &str, &str)],
) -> Vec<String> {
    let mut out = vec![
        anthropic_message_start("msg_3"),
        anthropic_event(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        ),
    ];
    for t in thoughts {
        out.push(anthropic_event(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":t}}),
        ));
    }
    out.push(anthropic_event(
        "content_block_delta",
        json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":signature}}),
    ));
    out.push(anthropic_block_stop(0));
    let mut index = 1;
    if let Some(data) = redacted {
        out.push(anthropic_event(
            "content_block_start",
            json!({"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":data}}),
        ));
        out.push(anthropic_event(
            "content_block_stop",
            json!({"type":"content_block_stop","index":1}),
        ));
        index = 2;
    }
    // The tool calls, their block indices after the thoughts.
    let tools = anthropic_tool_sse("", calls, 1000);
    for e in &tools[1..] {
        let Some((head, data)) = e.split_once("data: ") else {
            continue;
        };
        let mut v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
        if let Some(i) = v["index"].as_u64() {
            v["index"] = json!(i + index);
        }
        out.push(format!("{head}data: {v}\n\n"));
    }
    out
}

/// Anthropic's rule for extended thinking with tools, as its API enforces it: with
/// `thinking` on, the last assistant message that calls tools must start with the
/// thinking blocks of that turn, unchanged. The 400 it answers otherwise, else `None`.
pub fn anthropic_thinking_refusal(body: &serde_json::Value) -> Option<Reply> {
    body.get("thinking")?;
    let messages = body["messages"].as_array()?;
    let (i, last) = messages.iter().enumerate().rev().find(|(_, m)| {
        m["role"] == "assistant"
            && m["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_use"))
    })?;
    let first = &last["content"][0]["type"];
    if first == "thinking" || first == "redacted_thinking" {
        return None;
    }
    Some(Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!(
            "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking",
            first.as_str().unwrap_or("text"))}})
        .to_string(),
    })
}

/// Anthropic's rule for the tools it runs itself, as its API enforces it: each
/// `server_tool_use` has its result (a `*_tool_result` block naming it) in the same
/// assistant message, but in the message the request carries on (the last one, or the
/// one the tool results sent back answer: a search beside a client tool runs then). The
/// 400 it answers otherwise, else `None`.
pub fn anthropic_search_refusal(body: &serde_json::Value) -> Option<Reply> {
    let invalid = |message: String| Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
            .to_string(),
    };
    // The search tool takes one list of sites or the other, and an approximate place.
    for (n, t) in body["tools"].as_array().into_iter().flatten().enumerate() {
        if !t["type"].as_str().is_some_and(|k| k.starts_with("web_search_")) {
            continue;
        }
        if t.get("allowed_domains").is_some() && t.get("blocked_domains").is_some() {
            return Some(invalid(format!(
                "tools.{n}.web_search_20250305: cannot specify both allowed_domains and blocked_domains"
            )));
        }
        if t.get("user_location").is_some_and(|l| l["type"] != "approximate") {
            return Some(invalid(format!(
                "tools.{n}.web_search_20250305.user_location.type: Input should be 'approximate'"
            )));
        }
    }
    let messages = body["messages"].as_array()?;
    let n = messages.len();
    let open = (1..=2.min(n))
        .map(|back| n - back)
        .find(|&i| messages[i]["role"] == "assistant");
    for (i, m) in messages.iter().enumerate() {
        let blocks = m["content"].as_array();
        if m["role"] != "assistant" || Some(i) == open || blocks.is_none() {
            continue;
        }
        let blocks = blocks.unwrap();
        for b in blocks.iter().filter(|b| b["type"] == "server_tool_use") {
            let answered = blocks.iter().any(|r| {
                r["type"].as_str().is_some_and(|t| t.ends_with("_tool_result")) && r["tool_use_id"] == b["id"]
            });
            if !answered {
                let name = b["name"].as_str().unwrap_or_default();
                return Some(Reply::Status {
                    code: 400,
                    headers: vec![],
                    body: json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!(
                        "messages.{i}: `{name}` tool use with id `{}` was found without a corresponding `{name}_tool_result` block",
                        b["id"].as_str().unwrap_or_default())}})
                    .to_string(),
                });
            }
        }
    }
    None
}

/// The refusal the newest Claude models (Opus 4.7 and later, the Claude 5 family) answer a
/// request that asks for extended thinking with a budget, in the API's words.
pub fn anthropic_budget_refusal(body: &serde_json::Value) -> Option<Reply> {
    (body["thinking"]["type"] == "enabled").then(|| Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"type": "error", "error": {"type": "invalid_request_error", "message":
            "\"thinking.type.enabled\" is not supported for this model. Use \"thinking.type.adaptive\" and \"output_config.effort\" to control thinking behavior."}})
        .to_string(),
    })
}

/// The names of the tools a request offers (OpenAI `function.name` or Anthropic `name`).
pub fn offered_tools(req: &Request) -> Vec<String> {
    req.json()["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            t["function"]["name"]
                .as_str()
                .or(t["name"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// The tool results in a request, in order: OpenAI `role: tool` messages or Anthropic
/// `tool_result` blocks, as (call id, content).
pub fn tool_results(req: &Request) -> Vec<(String, String)> {
    let body = req.json();
    let mut out = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        if m["role"] == "tool" {
            out.push((
                m["tool_call_id"].as_str().unwrap_or("").to_string(),
                m["content"].as_str().unwrap_or("").to_string(),
            ));
        }
        for b in m["content"].as_array().into_iter().flatten() {
            if b["type"] == "tool_result" {
                out.push((
                    b["tool_use_id"].as_str().unwrap_or("").to_string(),
                    b["content"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// An Anthropic `error` event mid-stream.
pub fn anthropic_error_event(kind: &str, message: &str) -> String {
    format!(
        "event: error\ndata: {}\n\n",
        json!({"type":"error","error":{"type":kind,"message":message}})
    )
}

/// The content of the last message of a chat request (a string, or a list of parts),
/// its text without the sending time the agent opens a user turn with ([`unstamped`]).
pub fn last_content(req: &Request) -> serde_json::Value {
    let mut content = req.json()["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map_or(serde_json::Value::Null, |m| m["content"].clone());
    let text = match &mut content {
        serde_json::Value::Array(parts) => parts.iter_mut().find_map(|p| p.get_mut("text")),
        c => Some(c),
    };
    if let Some(t) = text {
        if let Some(words) = t.as_str().map(|s| unstamped(s).to_string()) {
            *t = words.into();
        }
    }
    content
}

/// The text of the newest user message of a chat-completions request ("" if none),
/// without the sending time the agent opens it with.
pub fn last_user_text(req: &Request) -> String {
    unstamped(&last_user_text_stamped(req)).to_string()
}

/// The same, with the `[Wed 2026-12-02 19:20 UTC] ` the agent opens each user turn with.
pub fn last_user_text_stamped(req: &Request) -> String {
    req.json()["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            // With images the content is a list of parts; its text parts count.
            serde_json::Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            c => c.as_str().unwrap_or("").to_string(),
        })
        .unwrap_or_default()
}

/// `text` without the sending time the agent opens a user turn with, when it has one of
/// exactly that shape (`[Wed 2026-12-02 19:20 UTC] `).
pub fn unstamped(text: &str) -> &str {
    let shape = "[Aaa 0000-00-00 00:00 UTC] ";
    let stamped = text.len() >= shape.len()
        && text.bytes().zip(shape.bytes()).all(|(b, s)| match s {
            b'0' => b.is_ascii_digit(),
            b'A' => b.is_ascii_uppercase(),
            b'a' => b.is_ascii_lowercase(),
            _ => b == s,
        });
    if stamped {
        &text[shape.len()..]
    } else {
        text
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A fake LLM server recording every request.
pub struct FakeLlm {
    server: Server,
    requests: Arc<Mutex<Vec<Request>>>,
    abandoned: Arc<AtomicUsize>,
}

impl FakeLlm {
    /// Answer with `replies` in order; the last one repeats.
    pub fn scripted(replies: Vec<Reply>) -> FakeLlm {
        let queue = Mutex::new(VecDeque::from(replies));
        FakeLlm::with(move |_| {
            let mut q = queue.lock().unwrap();
            if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                q.front().cloned().expect("at least one reply")
            }
        })
    }

    /// Answer every request with `f(request)`.
    pub fn with(f: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeLlm {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let (rec, gone) = (Arc::clone(&requests), Arc::clone(&abandoned));
        let f: Arc<Handler> = Arc::new(f);
        let server = Server::start(move |req, resp| {
            rec.lock().unwrap().push(req.clone());
            // As the Messages API does, whatever the test's answer would have been.
            let refused = req
                .path
                .ends_with("/v1/messages")
                .then(|| crate::prompt_cache::anthropic_cache_refusal(&req.json()))
                .flatten();
            let reply = match refused {
                Some(why) => Reply::Status {
                    code: 400,
                    headers: vec![],
                    body:
                        json!({"type": "error", "error": {"type": "invalid_request_error", "message": why}})
                            .to_string(),
                },
                None => f(&req),
            };
            if !respond(reply, resp) {
                gone.fetch_add(1, Ordering::SeqCst);
            }
        });
        FakeLlm {
            server,
            requests,
            abandoned,
        }
    }

    /// OpenAI-compatible server that answers `echo: <last user message>` in pieces.
    pub fn echo_openai() -> FakeLlm {
        FakeLlm::prefixing("echo: ", Duration::ZERO)
    }

    /// Answers `{prefix}<last user message>` as two deltas, `delay` before each piece.
    pub fn prefixing(prefix: &'static str, delay: Duration) -> FakeLlm {
        FakeLlm::with(move |req| Reply::Sse {
            pieces: openai_sse(&[prefix, &last_user_text(req)]),
            delay,
            end: End::Finish,
        })
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The `n`-th request (from 1), once it has come; panics after `timeout`.
    pub fn wait_request(&self, n: usize, timeout: Duration) -> Request {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests.lock().unwrap().get(n - 1) {
                return r.clone();
            }
            assert!(std::time::Instant::now() < deadline, "request {n} never came");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Streams whose client went away before their end (a write failed), as a model
    /// server notices a client that stopped listening and stops generating.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }
}

/// Send `reply`; false when the client went away before its last piece.
fn respond(reply: Reply, resp: Responder) -> bool {
    match reply {
        Reply::Status { code, headers, body } => {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            h.push(("Content-Type", "application/json"));
            resp.send(code, &h, body.as_bytes());
        }
        Reply::Held { first, gate, rest } => {
            let mut r = resp.start_chunked(200, "text/event-stream");
            for p in first {
                if !r.chunk(p.as_bytes()) {
                    return false;
                }
            }
            gate.wait(Duration::from_secs(60));
            for p in rest {
                if !r.chunk(p.as_bytes()) {
                    return false;
                }
            }
            r.finish();
        }
        Reply::Quiet { first } => {
            let mut r = resp.start_chunked(200, "text/event-stream");
            for p in first {
                if !r.chunk(p.as_bytes()) {
                    return false;
                }
            }
            if r.closed_within(Duration::from_secs(60)) {
                return false;
            }
            r.cut();
        }
        Reply::Sse { pieces, delay, end } => {
            let mut r = resp.start_chunked(200, "text/event-stream");
            for p in pieces {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                if !r.chunk(p.as_bytes()) {
                    return false;
                }
            }
            match end {
                End::Finish => r.finish(),
                End::Cut => r.cut(),
                End::Hang(d) => {
                    std::thread::sleep(d);
                    r.cut();
                }
            }
        }
    }
    true
}

/// DeepSeek's refusal of a request whose tool calls lack the thoughts that led to them
/// (thinking mode, on by default since V4).
pub fn deepseek_thinking_refusal(body: &serde_json::Value) -> Option<Reply> {
    let missing = body["messages"].as_array()?.iter().any(|m| {
        m["role"] == "assistant" && m.get("tool_calls").is_some() && !m["reasoning_content"].is_string()
    });
    missing.then(|| Reply::Status {
        code: 400,
        headers: vec![],
        body: json!({"error": {"message": "The `reasoning_content` in the thinking mode must be passed back to the API.",
            "type": "invalid_request_error", "param": null, "code": "invalid_request_error"}})
        .to_string(),
    })
}

/// A DeepSeek stream in thinking mode: `thoughts` as `reasoning_content` pieces, then
/// `text`, or, with `call`, that tool call (id, name, arguments).
pub fn deepseek_sse(thoughts: &[&str], text: &str, call: Option<(&str, &str, &str)>) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        format!(
            "data: {}\n\n",
            json!({"id":"9c1","object":"chat.completion.chunk","created":1764662400,"model":"deepseek-v4-flash",
                "system_fingerprint":"fp_ds","choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]})
        )
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": null, "reasoning_content": ""}),
        json!(null),
    )];
    for t in thoughts {
        out.push(chunk(
            json!({"content": null, "reasoning_content": t}),
            json!(null),
        ));
    }
    match call {
        Some((id, name, args)) => {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": args}}]}),
                json!(null),
            ));
            out.push(chunk(json!({"content": null}), json!("tool_calls")));
        }
        None => {
            out.push(chunk(
                json!({"content": text, "reasoning_content": null}),
                json!(null),
            ));
            out.push(chunk(json!({"content": ""}), json!("stop")));
        }
    }
    out.push("data: [DONE]\n\n".into());
    out
}
