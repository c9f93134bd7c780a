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
//! A mark costs: Claude bills what it writes to the cache at 1.25 times the input price,
//! and keeps it 5 minutes from its last use. So the first request of a reply is marked only
//! when the conversation is going on (its previous turn is less than 5 minutes old: the
//! cache it wrote is likely still there to read, and the next message likely to come):
//! in a chat whose messages come hours apart, marks would only add a quarter to every
//! request. A tool round is always marked: the next round comes within seconds.
//!
//! OpenAI and OpenAI-compatible servers cache the longest prefix they saw on their own;
//! what they need, the same order (notes last), `llm.rs` gives every provider.

use std::time::Duration;

use serde_json::{json, Value};

use crate::session::{Role, Turn};

/// How long Anthropic keeps a cached prefix after its last use.
const TTL: Duration = Duration::from_secs(5 * 60);

/// Whether round `round` (from 0) of the reply to the newest question of `history` should
/// mark what it repeats: a tool round always; the first round when the turn before the
/// question is less than `TTL` older than it.
pub fn worth_marking(history: &[Turn], round: usize) -> bool {
    if round > 0 {
        return true;
    }
    let Some(q) = history.iter().rposition(|t| t.role == Role::User) else {
        return false;
    };
    let at = |t: &Turn| humantime::parse_rfc3339_weak(&t.ts).ok();
    match (q.checked_sub(1).and_then(|p| at(&history[p])), at(&history[q])) {
        (Some(before), Some(asked)) => asked.duration_since(before).is_ok_and(|gap| gap < TTL),
        _ => false,
    }
}

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// The `system` field: the fixed prompt (marked, if `mark`), then the recap.
pub fn anthropic_system(fixed: &str, recap: &str, mark: bool) -> Value {
    let mut blocks = Vec::new();
    if !fixed.is_empty() {
        let mut block = json!({"type": "text", "text": fixed});
        if mark {
            block["cache_control"] = ephemeral();
        }
        blocks.push(block);
    }
    if !recap.is_empty() {
        blocks.push(json!({"type": "text", "text": recap}));
    }
    Value::Array(blocks)
}

/// Mark `sides` (role, content blocks of each message): the block `question_end` (message,
/// block) where the newest question ends, and the last block of the last message when it
/// is another one of the user's side (tool results).
pub fn mark_anthropic(sides: &mut [(&str, Vec<Value>)], question_end: Option<(usize, usize)>) {
    if let Some((m, b)) = question_end {
        sides[m].1[b]["cache_control"] = ephemeral();
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
        end["cache_control"] = ephemeral();
    }
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
    fn the_system_prompt_is_marked_and_the_recap_follows_unmarked() {
        assert_eq!(
            anthropic_system("Be brief.", "", true),
            json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
        );
        let both = anthropic_system("Be brief.", "\n\nEarlier: ...", true);
        assert_eq!(both[1], json!({"type": "text", "text": "\n\nEarlier: ..."}));
        assert_eq!(
            anthropic_system("", "", true),
            json!([]),
            "no empty block: Anthropic refuses them"
        );
        assert_eq!(
            anthropic_system("Be brief.", "", false),
            json!([{"type": "text", "text": "Be brief."}])
        );
    }

    /// A mark is worth its price when the cache will be read: in a tool round, and when
    /// the conversation is going on; not for a message that comes after a long pause.
    #[test]
    fn marks_are_for_tool_rounds_and_conversations_going_on() {
        let turn = |role, ts: &str| {
            let mut t = Turn::new(role, "x");
            t.ts = ts.into();
            t
        };
        let answered = turn(Role::Assistant, "2026-12-06T10:00:00.000Z");
        let soon = [answered.clone(), turn(Role::User, "2026-12-06T10:04:59.000Z")];
        let late = [answered, turn(Role::User, "2026-12-06T10:05:00.000Z")];
        assert!(worth_marking(&soon, 0));
        assert!(!worth_marking(&late, 0), "the cache is gone, the pace is slow");
        assert!(worth_marking(&late, 1), "a tool round reads it seconds later");
        assert!(!worth_marking(&late[1..], 0), "a first message");
        let mut round = soon.to_vec();
        round.push(Turn::tool_result("c1", "ok".into()));
        assert!(
            worth_marking(&round, 0),
            "the question, not the newest turn, is looked at"
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
        mark_anthropic(&mut s, Some((2, 0)));
        assert_eq!(marks(&s), [(2, 0)]);
        // The same without notes: the end of the question is the end of the message.
        let mut s = vec![("user", vec![text("q")])];
        mark_anthropic(&mut s, Some((0, 0)));
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
        mark_anthropic(&mut s, Some((0, 0)));
        assert_eq!(marks(&s), [(0, 0), (2, 0)]);
        // Results of an interrupted chain merged before the question: still the question.
        let mut s = vec![(
            "user",
            vec![
                json!({"type": "tool_result", "tool_use_id": "a", "content": "x"}),
                text("q"),
            ],
        )];
        mark_anthropic(&mut s, Some((0, 1)));
        assert_eq!(marks(&s), [(0, 1)]);
        let mut none: Vec<(&str, Vec<Value>)> = Vec::new();
        mark_anthropic(&mut none, None);
    }
}
