//! OpenAI's Responses API (`POST {base}/responses`), for the models that speak nothing
//! else: Chat Completions refuses the pro and codex models with a 404, "This model is only
//! supported in v1/responses and not in v1/chat/completions." The client learns that
//! from the refusal (no setting), and from then on asks there.
//!
//! A request is built as for Chat Completions and translated here ([`request`]), so what
//! the client knows about building one (the prompt's order for the cache, the cache key,
//! notes, images, tool turns) holds unchanged; the stream's events become the same steps
//! as Chat Completions chunks ([`step`]). Requests go with `store: false`: OpenAI keeps no
//! copy of the conversation, which lives in the session file as before. So the model's
//! reasoning before a tool call is asked for encrypted (`include`), kept with the call as
//! the thoughts other servers want back are ([`crate::carry`], in `reasoning_details`),
//! and sent back before the call in the next rounds, as OpenAI asks of a stateless client.
//! The searches OpenAI runs itself (its `web_search` tool, [`crate::native_search`]) go
//! back the same way, in the order they came among the reasoning.

use serde_json::{json, Map, Value};

use crate::llm::{ErrorKind, LlmError};

/// What Chat Completions answers for a model it does not serve, in its words.
const ONLY_HERE: &str = "v1/responses";

/// Whether `err` is Chat Completions saying the model is served by the Responses API only.
pub fn wanted(err: &LlmError) -> bool {
    err.kind == ErrorKind::Request && err.detail.contains(ONLY_HERE) && err.detail.contains("only")
}

/// What `include` asks for: the reasoning, encrypted, to be sent back with tool calls.
const ENCRYPTED: &str = "reasoning.encrypted_content";

/// What a request asks for beside the answer, unless refused before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asks {
    /// The reasoning, encrypted, to send back with tool calls.
    pub encrypted: bool,
    /// Summaries of the reasoning as it goes, shown as thoughts (`reasoning.summary`); an
    /// organization OpenAI has not verified is refused them.
    pub summaries: bool,
}

/// Whether `err` refuses reasoning summaries (an organization OpenAI has not verified:
/// 400 "Your organization must be verified to generate reasoning summaries", param
/// `reasoning.summary`; or a model that does not reason).
pub fn refuses_summaries(err: &LlmError) -> bool {
    let d = &err.detail;
    err.kind == ErrorKind::Request && (d.contains("reasoning.summary") || d.contains("reasoning summaries"))
}

/// Whether `err` refuses the encrypted reasoning asked for (a model that does not reason).
pub fn refuses_encrypted(err: &LlmError) -> bool {
    let d = &err.detail;
    let about = d.contains("encrypted_content")
        || d.contains("include") && d.to_ascii_lowercase().contains("encrypted");
    err.kind == ErrorKind::Request && about
}

/// The Responses request for the Chat Completions request `chat`, asking for what `asks`
/// says beside the answer.
pub fn request(chat: &Value, asks: Asks) -> Value {
    let mut out = json!({
        "model": chat["model"],
        "input": input(chat["messages"].as_array().map_or(&[][..], Vec::as_slice)),
        "stream": true,
        "store": false,
    });
    if asks.encrypted {
        out["include"] = json!([ENCRYPTED]);
    }
    if asks.summaries {
        out["reasoning"] = json!({"summary": "auto"});
    }
    let limit = chat
        .get("max_completion_tokens")
        .or_else(|| chat.get("max_tokens"));
    if let Some(m) = limit {
        out["max_output_tokens"] = m.clone();
    }
    if let Some(e) = chat.get("reasoning_effort") {
        out["reasoning"]["effort"] = e.clone();
    }
    if let Some(k) = chat.get("prompt_cache_key") {
        out["prompt_cache_key"] = k.clone();
    }
    if let Some(n) = chat.get("max_tool_calls") {
        out["max_tool_calls"] = n.clone();
    }
    if let Some(tools) = chat["tools"].as_array() {
        out["tools"] = tools.iter().map(tool).collect();
    }
    out
}

/// A Chat Completions tool as a Responses one; a tool OpenAI runs itself (its web search)
/// is already one. `strict` is off: it is on unless said, and then a schema must name
/// every property as required and forbid any other, which MCP servers' schemas rarely do.
fn tool(t: &Value) -> Value {
    if t["type"] != "function" {
        return t.clone();
    }
    let f = &t["function"];
    json!({"type": "function", "name": f["name"], "description": f["description"],
        "parameters": f["parameters"], "strict": false})
}

/// Chat Completions messages as Responses input items.
fn input(messages: &[Value]) -> Vec<Value> {
    let mut items = Vec::with_capacity(messages.len());
    for m in messages {
        let role = m["role"].as_str().unwrap_or("user");
        match role {
            "tool" => items.push(json!({
                "type": "function_call_output",
                "call_id": m["tool_call_id"],
                "output": text_of(&m["content"]),
            })),
            "assistant" => {
                // The reasoning (and the searches among it) that led to the calls, as it
                // came, before them.
                let thoughts = m["reasoning_details"].as_array().into_iter().flatten();
                let ours = |d: &&Value| d["type"] == "reasoning" || d["type"] == "web_search_call";
                items.extend(thoughts.filter(ours).cloned());
                let text = text_of(&m["content"]);
                if !text.is_empty() {
                    items.push(json!({"role": "assistant", "content": text}));
                }
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    items.push(json!({
                        "type": "function_call",
                        "call_id": c["id"],
                        "name": c["function"]["name"],
                        "arguments": c["function"]["arguments"],
                    }));
                }
            }
            _ => items.push(json!({"role": role, "content": content(&m["content"])})),
        }
    }
    items
}

/// A system or user message's content: its text, or its parts as input parts.
fn content(c: &Value) -> Value {
    let Some(parts) = c.as_array() else {
        return Value::String(text_of(c));
    };
    let parts: Vec<Value> = parts
        .iter()
        .filter_map(|p| match p["type"].as_str() {
            Some("text") => Some(json!({"type": "input_text", "text": p["text"]})),
            Some("image_url") => Some(json!({"type": "input_image", "image_url": p["image_url"]["url"]})),
            Some("file") => Some(json!({"type": "input_file", "filename": p["file"]["filename"],
                "file_data": p["file"]["file_data"]})),
            _ => None,
        })
        .collect();
    Value::Array(parts)
}

/// The text of a message's content, a string or text parts.
fn text_of(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// What one event of a Responses stream means, in the terms of a Chat Completions chunk:
/// the reply's text and thoughts, a tool call's pieces (by `output_index`), the usage,
/// the end.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Text of the answer.
    Text(String),
    /// A summary of the model's reasoning (shown, never stored).
    Reasoning(String),
    /// A tool call begins at this output index, with its call id and name.
    Call(u64, String, String),
    /// More of the arguments of the call at this index.
    Arguments(u64, String),
    /// The whole arguments of the call at this index (they replace the pieces).
    AllArguments(u64, String),
    /// A reasoning item, encrypted, to go back with the calls it led to.
    Thought(Value),
    /// OpenAI begins a search of its own.
    Searching,
    /// A search OpenAI ran (the `web_search_call` item, as it came).
    Searched(Value),
    /// The answer cites web pages (`url_citation` annotations: `url`, `title`), one as it
    /// is streamed, or all of a message when it is done (the same again, or the ones a
    /// server did not stream).
    Cited(Vec<Value>),
    /// The reply is over (complete, or cut short by its token limit), with its usage
    /// in Chat Completions' terms.
    Done(Option<Value>),
    /// Nothing the reply needs.
    Nothing,
}

/// Read one event's data (`type` names it).
pub fn step(data: &str) -> Result<Event, LlmError> {
    let v: Value = serde_json::from_str(data.trim())
        .map_err(|e| LlmError::new(ErrorKind::Malformed, format!("malformed event: {e}")))?;
    let index = || v["output_index"].as_u64().unwrap_or(0);
    let text = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    Ok(match v["type"].as_str().unwrap_or_default() {
        "response.output_text.delta" => Event::Text(text("delta")),
        "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
            Event::Reasoning(text("delta"))
        }
        "response.output_item.added" if v["item"]["type"] == "function_call" => Event::Call(
            index(),
            v["item"]["call_id"].as_str().unwrap_or_default().to_string(),
            v["item"]["name"].as_str().unwrap_or_default().to_string(),
        ),
        "response.output_item.added" if v["item"]["type"] == "web_search_call" => Event::Searching,
        "response.output_item.done" if v["item"]["type"] == "web_search_call" => {
            Event::Searched(v["item"].clone())
        }
        "response.output_text.annotation.added" if v["annotation"]["type"] == "url_citation" => {
            Event::Cited(vec![v["annotation"].clone()])
        }
        "response.output_item.done" if v["item"]["type"] == "message" => {
            let parts = v["item"]["content"].as_array().into_iter().flatten();
            let notes = parts.flat_map(|p| p["annotations"].as_array().into_iter().flatten());
            let cited: Vec<Value> = notes.filter(|a| a["type"] == "url_citation").cloned().collect();
            match cited.is_empty() {
                true => Event::Nothing,
                false => Event::Cited(cited),
            }
        }
        "response.function_call_arguments.delta" => Event::Arguments(index(), text("delta")),
        "response.function_call_arguments.done" => Event::AllArguments(index(), text("arguments")),
        "response.output_item.done"
            if v["item"]["type"] == "reasoning" && v["item"]["encrypted_content"].is_string() =>
        {
            let item = &v["item"];
            let summary = item.get("summary").filter(|s| s.is_array()).cloned();
            Event::Thought(json!({"type": "reasoning", "id": item["id"],
                "encrypted_content": item["encrypted_content"], "summary": summary.unwrap_or(json!([]))}))
        }
        "response.completed" | "response.incomplete" => Event::Done(usage(&v["response"]["usage"])),
        "response.failed" => {
            let e = &v["response"]["error"];
            return Err(failure(e["code"].as_str(), e["message"].as_str()));
        }
        "error" => return Err(failure(v["code"].as_str(), v["message"].as_str())),
        _ => Event::Nothing,
    })
}

/// A failure the stream reported: retried like a server error, unless it says the request
/// itself is wrong.
fn failure(code: Option<&str>, message: Option<&str>) -> LlmError {
    let code = code.unwrap_or("server_error");
    let kind = match code {
        c if c.contains("rate_limit") => ErrorKind::RateLimited,
        c if c.starts_with("invalid") || c.contains("not_found") => ErrorKind::Request,
        _ => ErrorKind::Server,
    };
    LlmError::new(
        kind,
        format!("{code}: {}", message.unwrap_or("the response failed")),
    )
}

/// A Responses usage as Chat Completions tells it (`prompt_tokens` with their cached
/// part, `completion_tokens`), for the usage record.
fn usage(u: &Value) -> Option<Value> {
    let input = u["input_tokens"].as_u64()?;
    let mut out = Map::new();
    out.insert("prompt_tokens".into(), input.into());
    out.insert(
        "completion_tokens".into(),
        u["output_tokens"].as_u64().unwrap_or(0).into(),
    );
    if let Some(cached) = u["input_tokens_details"]["cached_tokens"].as_u64() {
        out.insert("prompt_tokens_details".into(), json!({"cached_tokens": cached}));
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_becomes_a_responses_request() {
        let chat = json!({
            "model": "gpt-5.5-pro", "stream": true, "stream_options": {"include_usage": true},
            "max_completion_tokens": 900, "reasoning_effort": "low", "prompt_cache_key": "aegis-1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": "Let me look.", "reasoning_content": "hmm",
                    "reasoning_details": [{"type": "reasoning", "id": "rs_1", "encrypted_content": "e1", "summary": []},
                        {"type": "reasoning.text", "text": "a router's"}],
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_2", "type": "function",
                    "function": {"name": "read_file", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_2", "content": "hello"},
                {"role": "user", "content": "And now?"}
            ],
            "tools": [{"type": "function", "function": {"name": "bash", "description": "Run",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
        });
        let all = Asks {
            encrypted: true,
            summaries: true,
        };
        let r = request(&chat, all);
        assert_eq!(
            r,
            json!({
                "model": "gpt-5.5-pro", "stream": true, "store": false, "max_output_tokens": 900,
                "include": ["reasoning.encrypted_content"],
                "reasoning": {"effort": "low", "summary": "auto"}, "prompt_cache_key": "aegis-1",
                "input": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
                    {"type": "reasoning", "id": "rs_1", "encrypted_content": "e1", "summary": []},
                    {"role": "assistant", "content": "Let me look."},
                    {"type": "function_call", "call_id": "call_1", "name": "bash", "arguments": "{\"command\":\"ls\"}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
                    {"type": "function_call", "call_id": "call_2", "name": "read_file", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_2", "output": "hello"},
                    {"role": "user", "content": "And now?"}
                ],
                "tools": [{"type": "function", "name": "bash", "description": "Run", "strict": false,
                    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}]
            })
        );
        let none = Asks {
            encrypted: false,
            summaries: false,
        };
        let plain = request(&json!({"model": "m", "messages": [], "max_tokens": 5}), none);
        assert_eq!(plain["max_output_tokens"], 5);
        assert!(
            plain.get("reasoning").is_none()
                && plain.get("tools").is_none()
                && plain.get("include").is_none()
        );
    }

    #[test]
    fn stream_events_map_to_steps() {
        let e = |data: Value| step(&data.to_string());
        assert_eq!(
            e(
                json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 1,
                "content_index": 0, "delta": "Hel", "sequence_number": 4})
            )
            .unwrap(),
            Event::Text("Hel".into())
        );
        assert_eq!(
            e(json!({"type": "response.reasoning_summary_text.delta", "delta": "Thinking", "output_index": 0}))
                .unwrap(),
            Event::Reasoning("Thinking".into())
        );
        assert_eq!(
            e(json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "function_call",
                "id": "fc_1", "call_id": "call_9", "name": "bash", "arguments": "", "status": "in_progress"}}))
            .unwrap(),
            Event::Call(2, "call_9".into(), "bash".into())
        );
        assert_eq!(
            e(json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning"}}))
                .unwrap(),
            Event::Nothing
        );
        assert_eq!(
            e(json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{\"a"}))
                .unwrap(),
            Event::Arguments(2, "{\"a".into())
        );
        assert_eq!(
            e(json!({"type": "response.function_call_arguments.done", "output_index": 2, "arguments": "{\"a\":1}"}))
                .unwrap(),
            Event::AllArguments(2, "{\"a\":1}".into())
        );
        let done = e(
            json!({"type": "response.completed", "response": {"status": "completed", "usage": {
            "input_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
            "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 150}}}),
        )
        .unwrap();
        assert_eq!(
            done,
            Event::Done(Some(json!({"prompt_tokens": 120, "completion_tokens": 30,
                "prompt_tokens_details": {"cached_tokens": 100}})))
        );
        assert_eq!(
            e(json!({"type": "response.incomplete", "response": {"incomplete_details": {"reason": "max_output_tokens"}}}))
                .unwrap(),
            Event::Done(None)
        );
        let failed = e(
            json!({"type": "response.failed", "response": {"error": {"code": "server_error",
            "message": "The server had an error."}}}),
        )
        .unwrap_err();
        assert_eq!(failed.kind, ErrorKind::Server);
        assert!(failed.detail.contains("The server had an error."));
        let limited =
            e(json!({"type": "error", "code": "rate_limit_exceeded", "message": "Slow down"})).unwrap_err();
        assert_eq!(limited.kind, ErrorKind::RateLimited);
        assert_eq!(
            e(json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "reasoning",
                "id": "rs_7", "encrypted_content": "gAAA", "summary": [{"type": "summary_text", "text": "t"}]}}))
            .unwrap(),
            Event::Thought(json!({"type": "reasoning", "id": "rs_7", "encrypted_content": "gAAA",
                "summary": [{"type": "summary_text", "text": "t"}]}))
        );
        assert_eq!(
            e(json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "reasoning", "id": "rs_8"}}))
                .unwrap(),
            Event::Nothing,
            "nothing to send back without its encrypted content"
        );
        assert_eq!(e(json!({"type": "response.created"})).unwrap(), Event::Nothing);
        assert_eq!(step("{oops").unwrap_err().kind, ErrorKind::Malformed);
    }

    #[test]
    fn openais_own_search_goes_in_the_request_and_comes_back_among_the_reasoning() {
        let search = json!({"type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": "rust 1.95"}});
        let chat = json!({
            "model": "gpt-5.5", "max_tool_calls": 3,
            "messages": [
                {"role": "user", "content": "news?"},
                {"role": "assistant", "content": null,
                    "reasoning_details": [{"type": "reasoning", "id": "rs_1", "encrypted_content": "e1", "summary": []},
                        search, {"type": "reasoning", "id": "rs_2", "encrypted_content": "e2", "summary": []}],
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "bash", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "bash", "description": "Run",
                "parameters": {"type": "object"}}}, {"type": "web_search"}]
        });
        let asks = Asks {
            encrypted: true,
            summaries: false,
        };
        let r = request(&chat, asks);
        assert_eq!(r["max_tool_calls"], 3);
        assert_eq!(r["tools"][1], json!({"type": "web_search"}), "as it is");
        assert_eq!(r["tools"][0]["name"], "bash");
        let kinds: Vec<&str> = r["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap_or("message"))
            .collect();
        assert_eq!(
            kinds,
            [
                "message",
                "reasoning",
                "web_search_call",
                "reasoning",
                "function_call",
                "function_call_output"
            ]
        );
        assert_eq!(r["input"][2], search);
    }

    #[test]
    fn openais_search_events_map_to_steps() {
        let e = |data: Value| step(&data.to_string()).unwrap();
        assert_eq!(
            e(json!({"type": "response.output_item.added", "output_index": 1,
                "item": {"id": "ws_1", "type": "web_search_call", "status": "in_progress"}})),
            Event::Searching
        );
        let done = json!({"id": "ws_1", "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": "q"}});
        assert_eq!(
            e(json!({"type": "response.output_item.done", "output_index": 1, "item": done})),
            Event::Searched(done.clone())
        );
        assert_eq!(
            e(json!({"type": "response.web_search_call.searching", "output_index": 1, "item_id": "ws_1"})),
            Event::Nothing
        );
        let cite = json!({"type": "url_citation", "start_index": 0, "end_index": 9,
            "url": "https://a.example/", "title": "A"});
        assert_eq!(
            e(
                json!({"type": "response.output_text.annotation.added", "item_id": "msg_1",
                "output_index": 2, "content_index": 0, "annotation_index": 0, "annotation": cite})
            ),
            Event::Cited(vec![cite.clone()])
        );
        assert_eq!(
            e(json!({"type": "response.output_text.annotation.added",
                "annotation": {"type": "file_citation", "file_id": "f"}})),
            Event::Nothing
        );
        let file = json!({"type": "file_citation", "file_id": "f", "index": 0});
        assert_eq!(
            e(
                json!({"type": "response.output_item.done", "output_index": 2, "item": {"type": "message",
                "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "…",
                "annotations": [cite, file]}]}})
            ),
            Event::Cited(vec![cite])
        );
        assert_eq!(
            e(
                json!({"type": "response.output_item.done", "output_index": 2, "item": {"type": "message",
                "content": [{"type": "output_text", "text": "plain", "annotations": []}]}})
            ),
            Event::Nothing
        );
    }

    #[test]
    fn a_refusal_of_reasoning_summaries_is_recognised() {
        let refused = LlmError::new(
            ErrorKind::Request,
            "HTTP 400: Your organization must be verified to generate reasoning summaries. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization. (param: reasoning.summary)",
        );
        assert!(refuses_summaries(&refused));
        assert!(!refuses_summaries(&LlmError::new(
            ErrorKind::Request,
            "HTTP 400: bad tools"
        )));
        assert!(!refuses_summaries(&LlmError::new(
            ErrorKind::Server,
            "reasoning summaries"
        )));
    }

    #[test]
    fn a_refusal_of_encrypted_reasoning_is_recognised() {
        let refused = LlmError::new(
            ErrorKind::Request,
            "HTTP 400: Encrypted content is not supported with this model. (param: include)",
        );
        assert!(refuses_encrypted(&refused));
        assert!(!refuses_encrypted(&LlmError::new(
            ErrorKind::Request,
            "HTTP 400: bad tools"
        )));
    }

    #[test]
    fn the_refusal_that_sends_a_model_here_is_recognised() {
        let refused = |detail: &str| LlmError::new(ErrorKind::Request, detail);
        assert!(wanted(&refused(
            "HTTP 404: This model is only supported in v1/responses and not in v1/chat/completions."
        )));
        assert!(!wanted(&refused("HTTP 404: The model `x` does not exist")));
        assert!(!wanted(&LlmError::new(ErrorKind::Server, "only v1/responses")));
    }
}
