//! The context window: which turns of a session reach the model, and in what shape.
//!
//! Duties:
//! 1. keep tool chains whole: an assistant turn that called tools travels with one result
//!    per call, in call order. A chain cut mid-tool (the agent was killed, the VM paused)
//!    gets a placeholder result for each missing call; a result whose call is gone is
//!    dropped; so every request is valid for both providers;
//! 2. fit the budget: the newest whole units (a turn, or a call with its results) within
//!    the turn and character limits; big tool results are trimmed here, never in the file;
//! 3. never collapse to the bare system prompt: the newest unit always goes, trimmed to
//!    the budget if it alone is larger;
//! 4. start with a user turn (Anthropic requires it): if the window would open with the
//!    model speaking, the nearest earlier user turn is put in front, trimmed if needed;
//! 5. say when each user turn was sent ([`stamped`]): a model knows no date of its own,
//!    and "remind me in an hour" or "what did I ask yesterday" need one;
//! 6. [ours] start where the last request started, as long as that fits: providers reuse
//!    the prefix of a request they saw (prompt caching, a local server's KV cache), and a
//!    window that slid by one turn with every message would share none. Once the history
//!    no longer fits, the window starts at an *anchor* (about one question in four, chosen
//!    by its words, so the choice never changes), giving up at most a quarter of the
//!    budget for it; the start then stays while the conversation grows, and jumps to the
//!    next anchor only when it must.

use crate::session::{Block, Content, Role, Turn};

/// Context budget: the newest turns within both limits.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// At most this many turns.
    pub turns: usize,
    /// At most this many characters of turn content.
    pub chars: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            turns: 50,
            chars: 24_000,
        }
    }
}

/// What a call whose result never arrived is answered with.
pub const INTERRUPTED: &str = "error: the tool did not finish (the agent was stopped while it ran)";

/// Smallest share of the budget a trimmed text keeps.
const MIN_TRIMMED: usize = 200;

/// Tools whose results are instructions the model is to follow (a skill's), which a cut
/// in their middle would break: the cap on one result does not apply to them, the budget
/// still does.
const WHOLE_RESULTS: [&str; 1] = [crate::tools::ACTIVATE_SKILL];

/// The turns to send for `history` within `budget`, oldest first.
pub fn context(history: &[Turn], budget: Budget) -> Vec<Turn> {
    window(history, budget).0
}

/// [`context`], and how many turns at the start of `history` fell out of it (whole units;
/// the question put in front by duty 4 counts as fallen out: it goes trimmed, if at all).
pub fn window(history: &[Turn], budget: Budget) -> (Vec<Turn>, usize) {
    let cap = tool_result_cap(budget);
    let (starts, units): (Vec<usize>, Vec<Vec<Turn>>) = repair(history)
        .into_iter()
        .map(|(at, mut u)| {
            let whole: Vec<String> = u[0]
                .content
                .tool_uses()
                .filter(|(_, name, _)| WHOLE_RESULTS.contains(name))
                .map(|(id, _, _)| id.to_string())
                .collect();
            for t in u.iter_mut().filter(|t| t.role == Role::Tool) {
                if !t.tool_call_id.as_ref().is_some_and(|id| whole.contains(id)) {
                    trim_content(&mut t.content, cap);
                }
            }
            (at, u)
        })
        .unzip();

    let mut chars = 0;
    let mut turns = 0;
    let mut start = units.len();
    while start > 0 {
        let u = &units[start - 1];
        let size: usize = u.iter().map(|t| t.content.size()).sum();
        let fits = turns + u.len() <= budget.turns && chars + size <= budget.chars;
        if !fits && start < units.len() {
            break;
        }
        chars += size;
        turns += u.len();
        start -= 1;
        if !fits {
            break; // the newest unit alone is over budget: it goes, trimmed below
        }
    }
    if start > 0 {
        let (steady, skipped_chars) = steady_start(&units, start, budget);
        start = steady;
        chars -= skipped_chars;
    }
    let mut fell_out = starts.get(start).copied().unwrap_or(history.len());
    let mut out: Vec<Turn> = units[start..].iter().flatten().cloned().collect();
    if chars > budget.chars {
        shrink_to(&mut out, budget.chars);
    }
    if out.first().is_some_and(|t| t.role != Role::User) {
        match out.iter().position(|t| t.role == Role::User) {
            // The window holds a question: start there (whole units go before it).
            Some(first_user) => {
                out.drain(..first_user);
                // A user turn is a unit of its own: the window now starts at one.
                if let Some(k) = units[start..].iter().position(|u| u[0].role == Role::User) {
                    fell_out = starts[start + k];
                }
            }
            // The window is all model and tools (one long tool loop): the question that
            // started it is worth more than the budget's last few characters.
            None => {
                if let Some(user) = units[..start]
                    .iter()
                    .rev()
                    .flatten()
                    .find(|t| t.role == Role::User)
                {
                    let mut user = user.clone();
                    let room = budget.chars.saturating_sub(chars).max(MIN_TRIMMED * 5);
                    trim_content(&mut user.content, room);
                    out.insert(0, user);
                } else {
                    out.clear();
                }
            }
        }
    }
    (out, fell_out)
}

/// Questions one in about this many are anchors.
const ANCHOR_EVERY: u64 = 4;

/// Whether a window may start at `unit`: a question whose words hash to an anchor.
fn is_anchor(unit: &[Turn]) -> bool {
    unit.first().is_some_and(|t| {
        t.role == Role::User
            && crate::session::fnv1a(t.content.text().as_bytes()).is_multiple_of(ANCHOR_EVERY)
    })
}

/// The first anchor from unit `fit` on (the oldest start that fits), skipping at most a
/// quarter of the budget and never the newest unit; else `fit`. With the characters
/// skipped.
fn steady_start(units: &[Vec<Turn>], fit: usize, budget: Budget) -> (usize, usize) {
    let (mut turns, mut chars) = (0, 0);
    for (k, u) in units
        .iter()
        .enumerate()
        .take(units.len().saturating_sub(1))
        .skip(fit)
    {
        if is_anchor(u) {
            return (k, chars);
        }
        turns += u.len();
        chars += u.iter().map(|t| t.content.size()).sum::<usize>();
        if turns > budget.turns / 4 || chars > budget.chars / 4 {
            break;
        }
    }
    (fit, 0)
}

/// `turns` with each user turn's text opened by the minute it was sent, from its stored
/// `ts` (`[Wed 2026-12-02 19:20 UTC] `). Derived from the turn, not from the clock, so a
/// turn reads the same in every later request and providers' prompt caches keep working;
/// the session file keeps the text as it came.
pub fn stamped(mut turns: Vec<Turn>) -> Vec<Turn> {
    for t in turns.iter_mut().filter(|t| t.role == Role::User) {
        let Some(stamp) = stamp(&t.ts) else { continue };
        match &mut t.content {
            Content::Text(text) => text.insert_str(0, &stamp),
            Content::Blocks(blocks) => match blocks.iter_mut().find_map(|b| match b {
                Block::Text { text } => Some(text),
                _ => None,
            }) {
                Some(text) => text.insert_str(0, &stamp),
                None => blocks.insert(0, Block::Text { text: stamp }),
            },
        }
    }
    turns
}

/// `[Wed 2026-12-02 19:20 UTC] ` for an RFC 3339 time in UTC; `None` for anything else.
fn stamp(ts: &str) -> Option<String> {
    let t = humantime::parse_rfc3339_weak(ts).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    // 1970-01-01 was a Thursday.
    let day = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(secs / 86_400 % 7) as usize];
    let utc = humantime::format_rfc3339_seconds(t).to_string();
    Some(format!("[{day} {} {} UTC] ", &utc[..10], &utc[11..16]))
}

/// The largest a single tool result may be in the context.
fn tool_result_cap(budget: Budget) -> usize {
    (budget.chars / 4).clamp(MIN_TRIMMED, 10_000)
}

/// Group `history` into units, each with the index of its first turn, and mend broken
/// tool chains.
fn repair(history: &[Turn]) -> Vec<(usize, Vec<Turn>)> {
    let mut units = Vec::new();
    let mut i = 0;
    while i < history.len() {
        let at = i;
        let turn = &history[i];
        i += 1;
        match turn.role {
            Role::Tool => continue, // a result whose call is not in front of it
            Role::User => units.push((at, vec![turn.clone()])),
            Role::Assistant => {
                let calls: Vec<(String, String)> = turn
                    .content
                    .tool_uses()
                    .map(|(id, name, _)| (id.to_string(), name.to_string()))
                    .collect();
                if calls.is_empty() {
                    units.push((at, vec![turn.clone()]));
                    continue;
                }
                let mut results = Vec::new();
                while i < history.len() && history[i].role == Role::Tool {
                    results.push(&history[i]);
                    i += 1;
                }
                let mut unit = vec![turn.clone()];
                for (id, _) in &calls {
                    match results.iter().find(|r| r.tool_call_id.as_deref() == Some(id)) {
                        Some(r) => unit.push((*r).clone()),
                        None => unit.push(Turn::tool_result(id, INTERRUPTED.to_string())),
                    }
                }
                units.push((at, unit));
            }
        }
    }
    units
}

/// Shorten the largest texts of `turns` until they fit `limit` characters in all.
fn shrink_to(turns: &mut [Turn], limit: usize) {
    loop {
        let total: usize = turns.iter().map(|t| t.content.size()).sum();
        if total <= limit {
            return;
        }
        let Some(biggest) = turns.iter_mut().max_by_key(|t| t.content.size()) else {
            return;
        };
        let size = biggest.content.size();
        let target = size.saturating_sub(total - limit).max(MIN_TRIMMED);
        if target >= size {
            return; // nothing more to gain without emptying a turn
        }
        trim_content(&mut biggest.content, target);
    }
}

/// Trim the text of `content` to about `max` characters, keeping its start and end.
fn trim_content(content: &mut Content, max: usize) {
    match content {
        Content::Text(t) => trim_text(t, max),
        Content::Blocks(blocks) => {
            for b in blocks {
                if let Block::Text { text } = b {
                    trim_text(text, max);
                }
            }
        }
    }
}

fn trim_text(text: &mut String, max: usize) {
    let n = text.chars().count();
    if n <= max {
        return;
    }
    let keep = max.saturating_sub(60).max(2);
    let head: String = text.chars().take(keep * 2 / 3).collect();
    let tail: String = text.chars().skip(n - keep / 3).collect();
    *text = format!("{head}\n[... {} characters trimmed ...]\n{tail}", n - keep);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn user_turns_are_stamped_with_the_minute_they_were_sent_and_nothing_else_is() {
        let at = |role: Role, content: Content, ts: &str| Turn {
            ts: ts.into(),
            ..Turn::new(role, content)
        };
        let image = Block::Image {
            media_type: "image/png".into(),
            blob: "b.png".into(),
            data: None,
        };
        let turns = stamped(vec![
            at(Role::User, "[Ann]: hi".into(), "2026-12-02T19:20:31.123Z"),
            at(Role::Assistant, "hello".into(), "2026-12-02T19:20:33Z"),
            at(
                Role::User,
                Content::Blocks(vec![image.clone(), Block::Text { text: "this?".into() }]),
                "2024-02-29T23:59:59Z",
            ),
            at(
                Role::User,
                Content::Blocks(vec![image.clone()]),
                "1970-01-01T00:00:00Z",
            ),
            at(Role::User, "no time".into(), ""),
            at(Role::User, "an offset".into(), "2026-12-02T20:20:31+01:00"),
        ]);
        assert_eq!(turns[0].content.text(), "[Wed 2026-12-02 19:20 UTC] [Ann]: hi");
        assert_eq!(turns[1].content.text(), "hello");
        assert_eq!(
            turns[2].content,
            Content::Blocks(vec![
                image.clone(),
                Block::Text {
                    text: "[Thu 2024-02-29 23:59 UTC] this?".into()
                }
            ])
        );
        assert_eq!(
            turns[3].content,
            Content::Blocks(vec![
                Block::Text {
                    text: "[Thu 1970-01-01 00:00 UTC] ".into()
                },
                image
            ])
        );
        assert_eq!(turns[4].content.text(), "no time");
        assert_eq!(turns[5].content.text(), "an offset");
    }

    fn t(role: Role, n: usize) -> Turn {
        Turn::new(role, "x".repeat(n))
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "bash".into(),
            input: json!({"command": "ls"}),
        }
    }

    fn b(turns: usize, chars: usize) -> Budget {
        Budget { turns, chars }
    }

    #[test]
    fn respects_both_budgets_and_starts_with_a_user_turn() {
        use Role::*;
        let h = vec![t(User, 10), t(Assistant, 10), t(User, 10), t(Assistant, 10)];
        assert_eq!(context(&h, b(50, 1000)).len(), 4);
        // 3 turns fit, but the oldest of them is an orphan assistant turn.
        let (c, fell_out) = window(&h, b(3, 1000));
        assert_eq!(c[0].role, User);
        assert_eq!(c.len(), 2);
        assert_eq!(fell_out, 2, "the orphan answer fell out with its question");
        assert_eq!(window(&h, b(50, 1000)).1, 0);
        assert_eq!(context(&h, b(50, 25)).len(), 2);
    }

    /// Once a long chat no longer fits, its window does not slide with every message (no
    /// request would share a prefix with the one before): it starts at an anchor and
    /// stays there until it must move, losing at most a quarter of the budget.
    #[test]
    fn a_full_window_moves_from_anchor_to_anchor_not_every_message() {
        let budget = b(50, 1_000_000);
        let mut h = Vec::new();
        let mut starts = Vec::new();
        for i in 0..300 {
            h.push(Turn::new(Role::User, format!("question {i}: what about it?")));
            h.push(Turn::new(Role::Assistant, format!("answer {i}")));
            let (c, fell_out) = window(&h, budget);
            assert!(c.len() <= 50, "{}", c.len());
            if fell_out > 0 {
                assert!(
                    c.len() >= 50 - 50 / 4 - 1,
                    "at most a quarter given up: {}",
                    c.len()
                );
                starts.push(c[0].content.text());
            }
        }
        let moves = starts.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            moves * 3 < starts.len(),
            "the start moved {moves} times in {} messages",
            starts.len()
        );
        assert!(moves > starts.len() / 12, "it does move on ({moves})");
    }

    #[test]
    fn the_newest_turn_is_trimmed_rather_than_dropped() {
        let h = vec![t(Role::User, 10), t(Role::Assistant, 10), t(Role::User, 5000)];
        let c = context(&h, b(50, 1000));
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].content.size() <= 1000, "{}", c[0].content.size());
        assert!(c[0].content.text().contains("characters trimmed"));
    }

    #[test]
    fn a_chain_cut_mid_tool_gets_placeholder_results() {
        let mut user = t(Role::User, 5);
        user.msg_id = Some("m1".into());
        let h = vec![
            user,
            Turn::tool_calls("let me look", &[call("a"), call("b")]),
            Turn::tool_result("a", "file1".into()),
            // the agent died before b's result; the next message came in
            t(Role::User, 5),
        ];
        let c = context(&h, b(50, 10_000));
        let roles: Vec<Role> = c.iter().map(|t| t.role).collect();
        assert_eq!(
            roles,
            vec![Role::User, Role::Assistant, Role::Tool, Role::Tool, Role::User]
        );
        assert_eq!(c[2].tool_call_id.as_deref(), Some("a"));
        assert_eq!(c[3].tool_call_id.as_deref(), Some("b"));
        assert_eq!(c[3].content.text(), INTERRUPTED);
    }

    #[test]
    fn orphan_results_are_dropped_and_chains_never_split() {
        let h = vec![
            Turn::tool_result("zz", "orphan".into()),
            t(Role::User, 5),
            Turn::tool_calls("", &[call("a")]),
            Turn::tool_result("a", "r".repeat(50)),
            t(Role::Assistant, 5),
        ];
        let c = context(&h, b(50, 10_000));
        assert!(c.iter().all(|t| t.tool_call_id.as_deref() != Some("zz")));
        // A budget of 2 turns cannot hold the chain (2 turns) plus the answer: the chain
        // is not split, and the answer alone gets its question in front.
        let c = context(&h, b(2, 10_000));
        assert!(c.iter().all(|t| t.role != Role::Tool), "{c:?}");
        assert_eq!(c[0].role, Role::User);
        assert_eq!(c.len(), 2);
        // The current round of a long tool loop keeps the question that started it.
        let c = context(&h[2..], b(50, 10_000));
        assert!(c.is_empty(), "no question anywhere: nothing to answer");
        let c = context(&h[..4], b(2, 10_000));
        assert_eq!(
            c.iter().map(|t| t.role).collect::<Vec<_>>(),
            vec![Role::User, Role::Assistant, Role::Tool]
        );
    }

    #[test]
    fn big_tool_results_are_trimmed_in_the_context_only() {
        let h = vec![
            t(Role::User, 5),
            Turn::tool_calls("", &[call("a")]),
            Turn::tool_result("a", "r".repeat(100_000)),
        ];
        let c = context(&h, b(50, 24_000));
        assert!(c[2].content.size() <= 6_000, "{}", c[2].content.size());
        assert_eq!(h[2].content.size(), 100_000);
        assert_eq!(c[0].role, Role::User);
    }

    #[test]
    fn a_skills_instructions_are_not_cut_by_the_cap_on_one_result() {
        let skill = ToolCall {
            id: "s".into(),
            name: "activate_skill".into(),
            input: json!({"name": "docx"}),
        };
        let h = vec![
            t(Role::User, 5),
            Turn::tool_calls("", &[skill, call("a")]),
            Turn::tool_result("s", "i".repeat(15_000)),
            Turn::tool_result("a", "r".repeat(15_000)),
        ];
        let c = context(&h, b(50, 24_000));
        assert_eq!(
            c[2].content.text(),
            "i".repeat(15_000),
            "the skill's instructions whole"
        );
        assert!(c[3].content.size() <= 6_000, "{}", c[3].content.size());
        // The budget still bounds them.
        let c = context(&h, b(50, 8_000));
        assert!(c[2].content.size() < 8_000, "{}", c[2].content.size());
    }

    fn arb_turn() -> impl Strategy<Value = Turn> {
        prop_oneof![
            (0usize..300).prop_map(|n| t(Role::User, n)),
            (0usize..300).prop_map(|n| t(Role::Assistant, n)),
            prop::collection::vec("[ab]", 1..3).prop_map(|ids| {
                let calls: Vec<ToolCall> = ids.iter().map(|i| call(i)).collect();
                Turn::tool_calls("", &calls)
            }),
            ("[abc]", 0usize..3000).prop_map(|(id, n)| Turn::tool_result(&id, "y".repeat(n))),
        ]
    }

    proptest! {
        /// Whatever the history, the window is a valid request: it starts with a user turn,
        /// every call is followed by exactly its results, and no result is orphaned.
        #[test]
        fn any_history_gives_a_valid_window(h in prop::collection::vec(arb_turn(), 0..40), turns in 1usize..60, chars in 1usize..5000) {
            let c = context(&h, b(turns, chars));
            if let Some(first) = c.first() {
                prop_assert_eq!(first.role, Role::User);
            }
            let mut i = 0;
            while i < c.len() {
                let ids: Vec<String> = c[i].content.tool_uses().map(|(id, _, _)| id.to_string()).collect();
                prop_assert!(c[i].role != Role::Tool, "orphan result at {}", i);
                for (k, id) in ids.iter().enumerate() {
                    prop_assert_eq!(c.get(i + 1 + k).and_then(|t| t.tool_call_id.clone()), Some(id.clone()));
                }
                i += 1 + ids.len();
            }
            if h.iter().any(|t| t.role == Role::User) {
                prop_assert!(!c.is_empty());
            }
            // What fell out is a prefix, and the window's questions are those after it
            // (or, when none is, the one put in front).
            let (_, fell_out) = window(&h, b(turns, chars));
            prop_assert!(fell_out <= h.len());
            let users = |ts: &[Turn]| ts.iter().filter(|t| t.role == Role::User).count();
            let after = users(&h[fell_out..]);
            prop_assert_eq!(users(&c), if after == 0 { usize::from(!c.is_empty()) } else { after });
        }
    }
}
