//! [ours] Where a Messages API request tells Anthropic what to cache. Claude reuses a
//! prefix of a request (tools, system, messages, in that order) only up to a block marked
//! `cache_control`, and bills what it reads from the cache at a tenth of the price; a
//! request without marks (upstream's agent sends none) pays for the tool definitions, the
//! system prompt and the whole conversation again on every message and every tool round.
//!
//! Three marks of the four allowed, each on what the next request will send again:
//! 1. the end of the fixed system prompt (it caches the tools too: they come first); the
//!    session's recap follows unmarked, so a new recap costs only itself;
//! 2. the end of the newest question, before the notes that came with it (memories chosen
//!    by its words, different for every message): the next message's request repeats the
//!    conversation up to here, and Anthropic looks back from its own marks for it;
//! 3. in a tool loop, the end of the newest tool results: the next round repeats all that.
//!
//! A mark costs: Claude bills what it writes to the cache at 1.25 times the input price
//! when asked to keep it 5 minutes from its last use, at twice the price for an hour; a
//! read costs a tenth. Which to ask for follows the conversation's pace, the time between
//! the newest question and the turn before it ([`cache_marks`]):
//! - under 5 minutes (a conversation going on): 5 minutes, the cheaper write;
//! - 5 minutes to an hour (a chat answered now and then, the usual pace of a messaging
//!   agent): an hour, so the next message finds the conversation still cached: with the
//!   5-minute kind every such message paid the whole conversation again;
//! - over an hour, or a first message: no mark on the first request of the reply: the
//!   cache would be gone before anyone read it, and a mark would only add to the price.
//!
//! A tool round is always marked (the next round comes within seconds). The system prompt
//! (with the tools), the same in every session of the agent, is kept an hour whenever the
//! pace is under an hour: once written it is refreshed by every read, so the hour costs
//! only its first write, and a chat resumed after a pause, or another chat, finds it.
//! Anthropic wants the longer marks first; the system prompt comes first. A request with
//! a mark kept an hour carries the beta header that allows it; a server that refuses
//! `ttl` anyway gets 5-minute marks from then on (`llm.rs`).
//!
//! OpenAI and OpenAI-compatible servers cache the longest prefix they saw on their own;
//! what they need, the same order (notes last), `llm.rs` gives every provider. Claude
//! behind an OpenAI-compatible router (OpenRouter, LiteLLM, Portkey) caches only what is
//! marked, as at Anthropic: the router turns Chat Completions messages into Messages API
//! blocks and passes a `cache_control` on a message part on to its block. Such a request
//! gets the same marks as message parts ([`openai_system`], [`mark_openai`]).

use std::time::Duration;

/// The `prompt_cache_key` of a conversation (channel and id): OpenAI routes requests with
/// the same key and prefix to the same cache, so a chat's next message finds its
/// conversation there even when other chats share the system prompt; gateways (Mistral,
/// routers) use it the same way. A hash: no chat id leaves the agent.
pub fn conversation_key(channel: &str, id: &str) -> String {
    let mut named = channel.as_bytes().to_vec();
    named.push(0);
    named.extend_from_slice(id.as_bytes());
    format!("aegis-{:016x}", crate::session::fnv1a(&named))
}

use serde_json::{json, Value};

use crate::session::{Role, Turn};

/// How long Claude is asked to keep what a mark writes, from its last use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The default: a write costs 1.25 times the input price.
    Minutes5,
    /// `"ttl": "1h"`: a write costs twice the input price.
    Hour,
}

impl Ttl {
    fn lasts(self) -> Duration {
        match self {
            Ttl::Minutes5 => Duration::from_secs(5 * 60),
            Ttl::Hour => Duration::from_secs(60 * 60),
        }
    }
}

/// The beta that lets a mark ask for an hour (sent with requests that do).
pub const HOUR_BETA: &str = "extended-cache-ttl-2025-04-11";

/// How long the marks of a request keep what they write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// The mark at the end of the system prompt (tools and fixed prompt).
    pub system: Ttl,
    /// The marks in the conversation (the question, tool results).
    pub conversation: Ttl,
}

impl Marks {
    /// Every mark kept `ttl`.
    pub fn all(ttl: Ttl) -> Marks {
        Marks {
            system: ttl,
            conversation: ttl,
        }
    }
}

/// The marks round `round` (from 0) of the reply to the newest question of `history`
/// should carry, by the pace the module doc describes; `None`: no marks at all.
pub fn cache_marks(history: &[Turn], round: usize) -> Option<Marks> {
    let at = |t: &Turn| humantime::parse_rfc3339_weak(&t.ts).ok();
    let pace = history.iter().rposition(|t| t.role == Role::User).and_then(|q| {
        let before = at(history.get(q.checked_sub(1)?)?)?;
        at(&history[q])?.duration_since(before).ok()
    });
    match pace {
        Some(gap) if gap < Ttl::Minutes5.lasts() => Some(Marks {
            system: Ttl::Hour,
            conversation: Ttl::Minutes5,
        }),
        Some(gap) if gap < Ttl::Hour.lasts() => Some(Marks::all(Ttl::Hour)),
        _ if round > 0 => Some(Marks::all(Ttl::Minutes5)),
        _ => None,
    }
}

/// The `cache_control` of a mark kept `ttl`.
fn cache_control(ttl: Ttl) -> Value {
    match ttl {
        Ttl::Minutes5 => json!({"type": "ephemeral"}),
        Ttl::Hour => json!({"type": "ephemeral", "ttl": "1h"}),
    }
}

/// The `system` field: the fixed prompt (marked `mark`, if any), then the recap.
pub fn anthropic_system(fixed: &str, recap: &str, mark: Option<Ttl>) -> Value {
    let mut blocks = Vec::new();
    if !fixed.is_empty() {
        let mut block = json!({"type": "text", "text": fixed});
        if let Some(ttl) = mark {
            block["cache_control"] = cache_control(ttl);
        }
        blocks.push(block);
    }
    if !recap.is_empty() {
        blocks.push(json!({"type": "text", "text": recap}));
    }
    Value::Array(blocks)
}

/// Mark `sides` (role, content blocks of each message), kept `ttl`: the block
/// `question_end` (message, block) where the newest question ends, and the last block of
/// the last message when it is another one of the user's side (tool results).
pub fn mark_anthropic(sides: &mut [(&str, Vec<Value>)], question_end: Option<(usize, usize)>, ttl: Ttl) {
    if let Some((m, b)) = question_end {
        sides[m].1[b]["cache_control"] = cache_control(ttl);
    }
    let Some(last) = sides.len().checked_sub(1) else {
        return;
    };
    // The question is the newest user turn: in its own message only its notes follow it,
    // and it is marked already.
    if question_end.is_some_and(|(m, _)| m == last) {
        return;
    }
    let (role, blocks) = &mut sides[last];
    if let (true, Some(end)) = (*role == "user", blocks.last_mut()) {
        end["cache_control"] = cache_control(ttl);
    }
}

/// The system message's `content` for Claude behind a router: the fixed prompt as a part
/// marked `mark`, then the recap unmarked (without a fixed prompt, the recap as text).
pub fn openai_system(fixed: &str, recap: &str, mark: Ttl) -> Value {
    if fixed.is_empty() {
        return recap.into();
    }
    anthropic_system(fixed, recap, Some(mark))
}

/// Mark Chat Completions `messages` for Claude behind a router, kept `ttl`, as
/// [`mark_anthropic`] marks blocks: the end of the newest question (message `question`),
/// after which its `notes` follow as a part of their own, and the newest tool result when
/// the messages end with one (a tool round). A part a mark cannot go on (empty text) is
/// left unmarked.
pub fn mark_openai(messages: &mut [Value], question: Option<usize>, notes: &str, ttl: Ttl) {
    fn mark_last(message: &mut Value, ttl: Ttl) {
        let parts = match message["content"].take() {
            Value::String(text) if text.is_empty() => Vec::new(),
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(parts) => parts,
            _ => Vec::new(),
        };
        message["content"] = Value::Array(parts);
        if let Some(end) = message["content"].as_array_mut().and_then(|p| p.last_mut()) {
            let markable = end["type"] == "image_url" || end["text"].as_str().is_some_and(|t| !t.is_empty());
            if markable {
                end["cache_control"] = cache_control(ttl);
            }
        }
    }
    if let Some(q) = question {
        mark_last(&mut messages[q], ttl);
        if !notes.is_empty() {
            if let Some(parts) = messages[q]["content"].as_array_mut() {
                parts.push(json!({"type": "text", "text": notes}));
            }
        }
    }
    let last = messages.len().checked_sub(1);
    if let Some(last) = last.filter(|&l| Some(l) != question && messages[l]["role"] == "tool") {
        mark_last(&mut messages[last], ttl);
    }
}

/// `body` without any cache mark; `None` when it had none.
pub fn without_marks(body: &Value) -> Option<Value> {
    let mut out = body.clone();
    let mut any = false;
    let mut unmark = |block: &mut Value| {
        if let Some(o) = block.as_object_mut() {
            any |= o.remove("cache_control").is_some();
        }
    };
    each_block(&mut out, &mut unmark);
    any.then_some(out)
}

/// Apply `f` to every block or part of `body` a mark can be on, in either dialect.
fn each_block(body: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    for key in ["tools", "system"] {
        body[key].as_array_mut().into_iter().flatten().for_each(&mut *f);
    }
    for m in body["messages"].as_array_mut().into_iter().flatten() {
        m["content"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .for_each(&mut *f);
    }
}

/// `body` with every mark asking for the default 5 minutes: for a server that refuses
/// `ttl` (an Anthropic-compatible one, or a proxy that drops the beta header).
pub fn without_ttl(body: &Value) -> Option<Value> {
    let mut out = body.clone();
    let mut any = false;
    let mut shorten = |block: &mut Value| {
        if let Some(c) = block.get_mut("cache_control").and_then(Value::as_object_mut) {
            any |= c.remove("ttl").is_some();
        }
    };
    each_block(&mut out, &mut shorten);
    any.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(sides: &[(&str, Vec<Value>)]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (m, (_, blocks)) in sides.iter().enumerate() {
            for (b, block) in blocks.iter().enumerate() {
                if block.get("cache_control").is_some() {
                    out.push((m, b));
                }
            }
        }
        out
    }

    fn text(t: &str) -> Value {
        json!({"type": "text", "text": t})
    }

    #[test]
    fn a_conversation_key_is_stable_its_own_and_names_no_chat() {
        let key = conversation_key("telegram", "123456789");
        assert_eq!(key, conversation_key("telegram", "123456789"));
        assert_ne!(key, conversation_key("telegram", "123456780"));
        assert_ne!(conversation_key("a", "bc"), conversation_key("ab", "c"));
        assert!(key.starts_with("aegis-") && key.len() == 22 && !key.contains("123456789"));
    }

    #[test]
    fn the_system_prompt_is_marked_and_the_recap_follows_unmarked() {
        assert_eq!(
            anthropic_system("Be brief.", "", Some(Ttl::Hour)),
            json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
        );
        assert_eq!(
            anthropic_system("Be brief.", "", Some(Ttl::Minutes5))[0]["cache_control"],
            json!({"type": "ephemeral"}),
            "the default needs no ttl (and no beta)"
        );
        let both = anthropic_system("Be brief.", "\n\nEarlier: ...", Some(Ttl::Hour));
        assert_eq!(both[1], json!({"type": "text", "text": "\n\nEarlier: ..."}));
        assert_eq!(
            anthropic_system("", "", Some(Ttl::Hour)),
            json!([]),
            "no empty block: Anthropic refuses them"
        );
        assert_eq!(
            anthropic_system("Be brief.", "", None),
            json!([{"type": "text", "text": "Be brief."}])
        );
    }

    /// The pace of the conversation chooses: 5 minutes while it goes on (the system prompt
    /// an hour), an hour for a chat answered now and then, nothing after a longer pause
    /// (a tool round, 5 minutes).
    #[test]
    fn the_pace_of_the_conversation_chooses_how_long_marks_are_kept() {
        let going = Some(Marks {
            system: Ttl::Hour,
            conversation: Ttl::Minutes5,
        });
        let (hour, short) = (Some(Marks::all(Ttl::Hour)), Some(Marks::all(Ttl::Minutes5)));
        let turn = |role, ts: &str| {
            let mut t = Turn::new(role, "x");
            t.ts = ts.into();
            t
        };
        let answered = turn(Role::Assistant, "2026-12-06T10:00:00.000Z");
        let asked = |ts| [answered.clone(), turn(Role::User, ts)];
        let going_on = asked("2026-12-06T10:04:59.000Z");
        let now_and_then = asked("2026-12-06T10:05:00.000Z");
        let within_the_hour = asked("2026-12-06T10:59:59.000Z");
        let hours_later = asked("2026-12-06T11:00:00.000Z");
        assert_eq!(cache_marks(&going_on, 0), going);
        assert_eq!(cache_marks(&now_and_then, 0), hour);
        assert_eq!(cache_marks(&within_the_hour, 0), hour);
        assert_eq!(
            cache_marks(&within_the_hour, 2),
            hour,
            "kept for the next message"
        );
        assert_eq!(cache_marks(&hours_later, 0), None, "read by no one: only a cost");
        assert_eq!(cache_marks(&hours_later, 1), short, "the next round reads it");
        assert_eq!(cache_marks(&hours_later[1..], 0), None, "a first message");
        assert_eq!(cache_marks(&hours_later[1..], 1), short);
        let mut round = going_on.to_vec();
        round.push(Turn::tool_result("c1", "ok".into()));
        assert_eq!(
            cache_marks(&round, 0),
            going,
            "the question, not the newest turn, is looked at"
        );
        let mut unreadable = now_and_then.to_vec();
        unreadable[0].ts = "yesterday".into();
        assert_eq!(cache_marks(&unreadable, 0), None);
    }

    #[test]
    fn a_server_that_refuses_ttl_gets_the_default_marks() {
        let body = json!({
            "system": [{"type": "text", "text": "S", "cache_control": cache_control(Ttl::Hour)}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": cache_control(Ttl::Hour)}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "x",
                    "input": {"cache_control": {"ttl": "1h"}}}]},
                {"role": "user", "content": "plain"},
            ],
        });
        let short = without_ttl(&body).expect("it had marks for an hour");
        assert_eq!(short["system"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(
            short["messages"][0]["content"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(
            short["messages"][1], body["messages"][1],
            "a tool's input is the model's, left as it is"
        );
        assert_eq!(
            without_ttl(&short),
            None,
            "nothing left to change: the refusal is not about it"
        );
    }

    #[test]
    fn the_question_is_marked_before_its_notes_and_tool_results_at_their_end() {
        // A question with notes, nothing after it: only the question's end.
        let mut s = vec![
            ("user", vec![text("hi")]),
            ("assistant", vec![text("hello")]),
            ("user", vec![text("q"), text("[Memories]")]),
        ];
        mark_anthropic(&mut s, Some((2, 0)), Ttl::Minutes5);
        assert_eq!(marks(&s), [(2, 0)]);
        // The same without notes: the end of the question is the end of the message.
        let mut s = vec![("user", vec![text("q")])];
        mark_anthropic(&mut s, Some((0, 0)), Ttl::Minutes5);
        assert_eq!(marks(&s), [(0, 0)]);
        // A tool round: the question, and the newest results.
        let mut s = vec![
            ("user", vec![text("q"), text("[Memories]")]),
            (
                "assistant",
                vec![json!({"type": "tool_use", "id": "a", "name": "bash", "input": {}})],
            ),
            (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": "a", "content": "ok"})],
            ),
        ];
        mark_anthropic(&mut s, Some((0, 0)), Ttl::Minutes5);
        assert_eq!(marks(&s), [(0, 0), (2, 0)]);
        // Results of an interrupted chain merged before the question: still the question.
        let mut s = vec![(
            "user",
            vec![
                json!({"type": "tool_result", "tool_use_id": "a", "content": "x"}),
                text("q"),
            ],
        )];
        mark_anthropic(&mut s, Some((0, 1)), Ttl::Hour);
        assert_eq!(marks(&s), [(0, 1)]);
        assert_eq!(
            s[0].1[1]["cache_control"],
            json!({"type": "ephemeral", "ttl": "1h"})
        );
        let mut none: Vec<(&str, Vec<Value>)> = Vec::new();
        mark_anthropic(&mut none, None, Ttl::Hour);
    }
}
