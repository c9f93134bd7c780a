//! [ours] A reasoning model's thoughts that its Chat Completions server wants back on the
//! assistant message of the tool calls they led to, in every later request:
//! - DeepSeek's thinking mode (its default since V4) answers 400 without the call's
//!   `reasoning_content` ("The `reasoning_content` in the thinking mode must be passed back
//!   to the API."); so do Moonshot's Kimi, and Qwen's chat template renders it;
//! - Gemini ("Function call is missing a thought_signature") without the signature it gave
//!   with the call, which OpenRouter passes in `reasoning_details` and Google's own
//!   OpenAI-compatible API in each call's `extra_content`.
//!
//! Each goes back only to the server that gave it, where it gave it: the session keeps it on
//! the tool calls' line (fields upstream's agent reads past). Tool calls the session kept
//! none for (another model made them, or upstream's agent) get what the server accepts in
//! its place once it has asked: an empty `reasoning_content`, or Google's
//! `skip_thought_signature_validator`. A server that refuses the fields gets none again.

use serde_json::{json, Map, Value};

use crate::llm::{ErrorKind, LlmError};
use crate::session::Turn;

/// What a round's stream gave that the server wants back with its tool calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carried {
    /// `reasoning_content`, as streamed.
    pub content: Option<String>,
    /// `reasoning_details`, its streamed pieces put together by `index`.
    pub details: Vec<Value>,
    /// Each call's `extra_content`, by call id.
    pub calls: Map<String, Value>,
}

impl Carried {
    /// Nothing to carry.
    pub fn is_empty(&self) -> bool {
        self.content.is_none() && self.details.is_empty() && self.calls.is_empty()
    }

    /// Take in a streamed piece of `reasoning_details`: a piece with the `index` of an
    /// earlier one continues it (its `text` or `summary` appended, other fields set).
    pub fn add_detail(&mut self, piece: &Value) {
        let Some(fields) = piece.as_object() else {
            return;
        };
        let same = |d: &&mut Value| piece.get("index").is_some() && d.get("index") == piece.get("index");
        let Some(known) = self.details.iter_mut().find(same) else {
            self.details.push(piece.clone());
            return;
        };
        for (key, value) in fields {
            match (known.get_mut(key), value) {
                (Some(Value::String(have)), Value::String(more)) if key == "text" || key == "summary" => {
                    have.push_str(more)
                }
                _ => known[key] = value.clone(),
            }
        }
    }
}

/// What stands in for thoughts a server wants back on tool calls the session kept none
/// for, once it has said so; or that it wants nothing carried back at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StandIn {
    /// Nothing yet.
    Nothing = 0,
    /// The server refused what was carried back: nothing is, from then on.
    Refused = 4,
    /// An empty `reasoning_content` (DeepSeek).
    EmptyReasoning = 1,
    /// Google's `skip_thought_signature_validator` on the first call (`extra_content`).
    SkipSignature = 2,
    /// The same as an OpenRouter `reasoning_details` entry.
    RouterSkipSignature = 3,
}

impl StandIn {
    /// The value kept in an atomic.
    pub fn from_u8(n: u8) -> StandIn {
        match n {
            1 => StandIn::EmptyReasoning,
            2 => StandIn::SkipSignature,
            3 => StandIn::RouterSkipSignature,
            4 => StandIn::Refused,
            _ => StandIn::Nothing,
        }
    }

    /// What stands in for the thoughts `err` says are missing, if it says so.
    pub fn asked_by(err: &LlmError) -> Option<StandIn> {
        if err.kind != ErrorKind::Request {
            return None;
        }
        let d = &err.detail;
        if d.contains("reasoning_content") && (d.contains("passed back") || d.contains("Missing")) {
            Some(StandIn::EmptyReasoning)
        } else if d.contains("OpenRouter reasoning details") {
            // OpenRouter's words before Gemini's (which a long refusal's cut may lose).
            Some(StandIn::RouterSkipSignature)
        } else if d.contains("missing a thought_signature") {
            Some(StandIn::SkipSignature)
        } else {
            None
        }
    }

    /// Put it on the tool calls' `message` where nothing kept is; whether it did.
    fn fill(self, message: &mut Value) -> bool {
        match self {
            StandIn::Nothing | StandIn::Refused => false,
            StandIn::EmptyReasoning if message.get("reasoning_content").is_none() => {
                message["reasoning_content"] = "".into();
                true
            }
            StandIn::SkipSignature => {
                let Some(calls) = message["tool_calls"].as_array_mut() else {
                    return false;
                };
                let unsigned = calls.iter().all(|c| c.get("extra_content").is_none());
                match calls.first_mut().filter(|_| unsigned) {
                    Some(first) => {
                        first["extra_content"] = json!({"google": {"thought_signature": SKIP_SIGNATURE}});
                        true
                    }
                    None => false,
                }
            }
            StandIn::RouterSkipSignature if message.get("reasoning_details").is_none() => {
                let first_call = message["tool_calls"][0]["id"].clone();
                message["reasoning_details"] = json!([{"type": "reasoning.encrypted", "data": SKIP_SIGNATURE,
                    "id": first_call, "format": "google-gemini-v1", "index": 0}]);
                true
            }
            _ => false,
        }
    }
}

/// Google's word for a tool call whose thought signature is not known: Gemini then skips
/// checking it.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// On the assistant messages of tool calls (`messages`, one per turn of `turns`), what
/// their server wants back; where a turn kept nothing, `stand_in` (nothing at all when
/// the server refused it).
pub fn carry(messages: &mut [Value], turns: &[Turn], stand_in: StandIn) {
    if stand_in == StandIn::Refused {
        return;
    }
    for (m, t) in messages.iter_mut().zip(turns) {
        if m.get("tool_calls").is_none() {
            continue;
        }
        if let Some(c) = &t.reasoning_content {
            m["reasoning_content"] = c.as_str().into();
        }
        if let Some(d) = &t.reasoning_details {
            m["reasoning_details"] = d.clone();
        }
        let extras = t.extra_content.as_ref().and_then(Value::as_object);
        for call in m["tool_calls"].as_array_mut().into_iter().flatten() {
            let kept = call["id"].as_str().and_then(|id| extras?.get(id));
            if let Some(extra) = kept {
                call["extra_content"] = extra.clone();
            }
        }
        stand_in.fill(m);
    }
}

/// `body` with `stand_in` on the tool calls that kept nothing; `None` when there are none.
pub fn with_stand_ins(body: &Value, stand_in: StandIn) -> Option<Value> {
    let mut filled = body.clone();
    let mut any = false;
    for m in filled["messages"].as_array_mut().into_iter().flatten() {
        if m.get("tool_calls").is_some() {
            any |= stand_in.fill(m);
        }
    }
    any.then_some(filled)
}

/// `body` without anything carried back, when `err` refuses it (a server that checks what
/// a message may hold); `None` when it is not such a refusal or nothing was carried.
pub fn without_carried(body: &Value, err: &LlmError) -> Option<Value> {
    const FIELDS: [&str; 3] = ["reasoning_content", "reasoning_details", "extra_content"];
    let about = err.kind == ErrorKind::Request && FIELDS.iter().any(|f| err.detail.contains(f));
    if !about || StandIn::asked_by(err).is_some() {
        return None;
    }
    let mut plain = body.clone();
    let mut any = false;
    for m in plain["messages"].as_array_mut().into_iter().flatten() {
        if let Some(o) = m.as_object_mut() {
            any |= o.remove("reasoning_content").is_some();
            any |= o.remove("reasoning_details").is_some();
        }
        for call in m["tool_calls"].as_array_mut().into_iter().flatten() {
            any |= call
                .as_object_mut()
                .is_some_and(|c| c.remove("extra_content").is_some());
        }
    }
    any.then_some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(detail: &str) -> LlmError {
        LlmError {
            kind: ErrorKind::Request,
            detail: detail.into(),
            retry_after: None,
        }
    }

    fn calls_message() -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]})
    }

    #[test]
    fn each_servers_refusal_gets_the_stand_in_it_accepts() {
        let deepseek =
            "HTTP 400: The `reasoning_content` in the thinking mode must be passed back to the API.";
        let older_deepseek =
            "HTTP 400: Missing `reasoning_content` field in the assistant message at message index 2.";
        let google = "HTTP 400: Function call is missing a thought_signature in functionCall parts.";
        let router = "HTTP 400: Provider returned error (Google AI Studio: Gemini models require OpenRouter reasoning details to be preserved in each request. Please refer to our docs: https://openrouter.ai/docs/guides/best-practices/reasoning-tokens#preserving-reasoning-blo)";
        assert_eq!(
            StandIn::asked_by(&refusal(deepseek)),
            Some(StandIn::EmptyReasoning)
        );
        assert_eq!(
            StandIn::asked_by(&refusal(older_deepseek)),
            Some(StandIn::EmptyReasoning)
        );
        assert_eq!(StandIn::asked_by(&refusal(google)), Some(StandIn::SkipSignature));
        assert_eq!(
            StandIn::asked_by(&refusal(router)),
            Some(StandIn::RouterSkipSignature)
        );
        assert_eq!(
            StandIn::asked_by(&refusal("HTTP 400: unknown field `reasoning_content`")),
            None
        );
        let overloaded = LlmError {
            kind: ErrorKind::Overloaded,
            ..refusal(deepseek)
        };
        assert_eq!(StandIn::asked_by(&overloaded), None);
        for s in [
            StandIn::Nothing,
            StandIn::EmptyReasoning,
            StandIn::SkipSignature,
            StandIn::RouterSkipSignature,
            StandIn::Refused,
        ] {
            assert_eq!(StandIn::from_u8(s as u8), s);
        }

        let body = json!({"messages": [{"role": "user", "content": "q"}, calls_message()]});
        let filled = with_stand_ins(&body, StandIn::EmptyReasoning).unwrap();
        assert_eq!(filled["messages"][1]["reasoning_content"], "");
        assert!(with_stand_ins(&filled, StandIn::EmptyReasoning).is_none(), "once");
        let signed = with_stand_ins(&body, StandIn::SkipSignature).unwrap();
        let calls = &signed["messages"][1]["tool_calls"];
        assert_eq!(
            calls[0]["extra_content"]["google"]["thought_signature"],
            SKIP_SIGNATURE
        );
        assert!(calls[1].get("extra_content").is_none(), "the first call only");
        assert!(with_stand_ins(&signed, StandIn::SkipSignature).is_none());
        let routed = with_stand_ins(&body, StandIn::RouterSkipSignature).unwrap();
        assert_eq!(
            routed["messages"][1]["reasoning_details"],
            json!([{"type": "reasoning.encrypted", "data": SKIP_SIGNATURE, "id": "c1", "format": "google-gemini-v1", "index": 0}])
        );
        assert!(with_stand_ins(&body, StandIn::Nothing).is_none());
        assert!(with_stand_ins(
            &json!({"messages": [{"role": "user", "content": "q"}]}),
            StandIn::EmptyReasoning
        )
        .is_none());

        // A refusal of the fields themselves takes every one of them off.
        let unknown = refusal("HTTP 400: messages[1].tool_calls[0]: unknown field `extra_content`");
        let plain = without_carried(&signed, &unknown).unwrap();
        assert!(!plain.to_string().contains("extra_content"), "{plain}");
        assert!(
            without_carried(&signed, &refusal(google)).is_none(),
            "asked for, not refused"
        );
        assert!(without_carried(&body, &unknown).is_none(), "nothing to take off");
    }
}
