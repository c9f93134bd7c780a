//! [ours] The conversation before the context window, in brief. Turns that no longer fit
//! the window (`context_turns`, `context_chars`) would otherwise be forgotten in a long
//! chat: once enough of them have fallen out, the model writes them down, with the brief
//! it wrote before, as one short recap, which goes into the system prompt of every later
//! request of that session.
//!
//! The recap lives beside the session, in `sessions/<name>.recap.json`
//! (`{"through": {...}, "text": "...", "session": INODE}`), replaced whole; the session
//! file itself is untouched, so upstream's agent still reads it. `through` names the last
//! turn it covers by its time, role and id; `session` is the session file it was written
//! for, so a session file removed (to forget a conversation) and begun again does not
//! inherit the recap of the old one. It is written after a reply, on a thread of its own
//! that holds the agent awake: the user never waits for it, and a reply that starts
//! meanwhile uses the brief there is.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::context::Budget;
use crate::llm::{Chunk, Llm};
use crate::session::{Block, Content, Role, Turn};
use crate::text::clip;
use crate::usage::Tokens;

/// Longest recap kept, in characters: it rides along with every request.
pub const MAX_TEXT: usize = 3_000;
/// Longest recap file read.
const MAX_FILE: u64 = 64 * 1024;
/// Most characters of transcript one recap request sends.
const MAX_TRANSCRIPT: usize = 40_000;
/// Most characters of one turn's text in the transcript; tool calls and results get less.
const MAX_TURN: usize = 2_000;
const MAX_TOOL: usize = 300;
/// Longest wait for the model's recap.
const TIMEOUT: Duration = Duration::from_secs(180);

/// What the model is asked to do.
pub const INSTRUCTIONS: &str = "You keep the memory of a long chat between a user and an AI assistant. \
Older messages no longer fit what the assistant can see; write them down so the conversation can go on \
as if they were still there. Given the recap so far (if any) and the messages that came after it, write \
one new recap that replaces both: who the user is, what was asked and decided, facts, names, numbers, \
files and commands that matter, promises and open questions, in the order they came. Leave out greetings \
and small talk. Plain text, at most 250 words, no preamble.";

/// How a recap opens in the system prompt.
const PREFACE: &str = "\n\nThis conversation began before the messages you see. What came before, in brief \
(written by you earlier; the messages you see are newer):\n";

/// The last turn a recap covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    ts: String,
    role: Role,
    /// The turn's `msg_id` or `tool_call_id`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

impl Mark {
    fn of(turn: &Turn) -> Mark {
        Mark {
            ts: turn.ts.clone(),
            role: turn.role,
            id: turn.msg_id.clone().or_else(|| turn.tool_call_id.clone()),
        }
    }
}

/// A session's recap, as its file holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recap {
    /// The newest turn it covers.
    pub through: Mark,
    /// What the model wrote.
    pub text: String,
    /// The inode of the session file it was written for.
    #[serde(default)]
    pub session: Option<u64>,
}

/// Recaps on or off (agent.json `context_recap`), and the sessions being recapped now.
#[derive(Debug, Default)]
pub struct Recaps {
    on: bool,
    running: Mutex<HashSet<PathBuf>>,
}

impl Recaps {
    /// Recaps, if `on`.
    pub fn new(on: bool) -> Recaps {
        Recaps {
            on,
            running: Mutex::default(),
        }
    }

    /// What to add to the system prompt for the session kept in `session_file`.
    pub fn prompt(&self, session_file: &Path) -> String {
        match self.on.then(|| current(session_file)).flatten() {
            Some(r) => format!("{PREFACE}{}", r.text),
            None => String::new(),
        }
    }

    /// After a reply: when enough of `history` (kept in `session_file`) has fallen out of
    /// the window since its recap was written, write a new one on a thread of its own
    /// (one per session at a time). `awake` is held until it is written; `spent` is told
    /// what the request was counted (the chat's daily limits).
    pub fn after_reply<A: Send + 'static>(
        self: &Arc<Self>,
        llm: &Llm,
        session_file: &Path,
        history: &[Turn],
        budget: Budget,
        (awake, spent): (impl FnOnce() -> A, impl Fn(&Tokens) + Send + 'static),
    ) {
        if !self.on {
            return;
        }
        let (_, fell_out) = crate::context::window(history, budget);
        let previous = current(session_file);
        let fresh = uncovered(&history[..fell_out], previous.as_ref());
        if !due(fresh, budget) {
            return;
        }
        let path = recap_file(session_file);
        if !self.lock().insert(path.clone()) {
            return; // one is being written; the next reply looks again
        }
        let session = inode(session_file);
        let (me, llm, turns, key) = (self.clone(), llm.clone(), fresh.to_vec(), path.clone());
        let guard = awake();
        let spawned = thread::Builder::new()
            .name("recap".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _awake = guard;
                me.write(&llm, &path, session, previous, &turns, &spent);
                me.lock().remove(&path);
            });
        if let Err(e) = spawned {
            log::warn!("no thread for a recap: {e}");
            self.lock().remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(
        &self,
        llm: &Llm,
        path: &Path,
        session: Option<u64>,
        previous: Option<Recap>,
        turns: &[Turn],
        spent: &dyn Fn(&Tokens),
    ) {
        let Some(last) = turns.last() else { return };
        let started = Instant::now();
        let request = Turn::new(Role::User, request_text(previous.as_ref(), turns));
        match ask(llm, &request, spent) {
            Ok(text) => {
                let recap = Recap {
                    through: Mark::of(last),
                    text: bounded(&text),
                    session,
                };
                let json = serde_json::to_vec(&recap).expect("a recap serialises");
                match tether::fsutil::replace(path, &json) {
                    Ok(()) => log::info!(
                        "{}: recap of {} earlier turns written ({} characters, {} ms)",
                        path.display(),
                        turns.len(),
                        recap.text.chars().count(),
                        started.elapsed().as_millis()
                    ),
                    Err(e) => log::warn!("cannot write {}: {e}", path.display()),
                }
            }
            Err(e) => log::warn!("{}: no recap this time: {e}", path.display()),
        }
    }
}

/// Where the recap of the session kept in `session_file` (`NAME.jsonl`) lives.
pub fn recap_file(session_file: &Path) -> PathBuf {
    session_file.with_extension("recap.json")
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The recap of the session kept in `session_file`, unless it was written for another
/// file of that name (the session was removed and begun again).
fn current(session_file: &Path) -> Option<Recap> {
    let recap = load(&recap_file(session_file))?;
    if recap.session.is_some() && recap.session != inode(session_file) {
        log::info!(
            "{}: the session file was begun again since its recap; recap not used",
            session_file.display()
        );
        return None;
    }
    Some(recap)
}

/// The recap at `path`, if there is a readable one.
pub fn load(path: &Path) -> Option<Recap> {
    use std::io::Read;
    let file = match crate::regular::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("cannot read {}: {e}", path.display());
            return None;
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_FILE).read_to_end(&mut bytes) {
        log::warn!("cannot read {}: {e}", path.display());
        return None;
    }
    match serde_json::from_slice::<Recap>(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            log::warn!("{}: not a recap ({e}); ignored", path.display());
            None
        }
    }
}

/// The turns of `fallen` (what fell out of the window) that `recap` does not cover: those
/// after its mark, or all when the mark is not among them (older than the turns at hand).
pub fn uncovered<'h>(fallen: &'h [Turn], recap: Option<&Recap>) -> &'h [Turn] {
    let Some(recap) = recap else { return fallen };
    match fallen.iter().rposition(|t| Mark::of(t) == recap.through) {
        Some(i) => &fallen[i + 1..],
        // Times are RFC 3339 in UTC with milliseconds: their text sorts as they do.
        None => {
            let newer = fallen
                .iter()
                .position(|t| t.ts > recap.through.ts)
                .unwrap_or(fallen.len());
            &fallen[newer..]
        }
    }
}

/// Whether `fresh` is worth a recap: a quarter of the window's characters or turns. Less
/// would cost a request every few messages for a few lines.
pub fn due(fresh: &[Turn], budget: Budget) -> bool {
    if !fresh.iter().any(|t| t.role == Role::User) {
        return false;
    }
    let chars: usize = fresh.iter().map(|t| t.content.size()).sum();
    chars >= budget.chars / 4 || fresh.len() >= (budget.turns / 4).max(1)
}

/// The one message a recap request sends: the recap so far and the turns after it.
pub fn request_text(previous: Option<&Recap>, turns: &[Turn]) -> String {
    let mut out = String::new();
    if let Some(r) = previous {
        out.push_str("Recap so far:\n");
        out.push_str(&r.text);
        out.push_str("\n\n");
    }
    out.push_str("Messages after it:\n");
    out.push_str(&transcript(turns));
    out
}

/// `turns` as plain lines for the model to read, newest last, at most `MAX_TRANSCRIPT`
/// characters (the oldest go first when there is more).
pub fn transcript(turns: &[Turn]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for t in turns {
        let at = t.ts.get(..16).unwrap_or("").replace('T', " ");
        match t.role {
            Role::User => lines.push(format!("[{at}] user: {}", clip(&text_of(&t.content), MAX_TURN))),
            Role::Assistant => {
                let said = t.content.text();
                if !said.trim().is_empty() {
                    lines.push(format!("[{at}] assistant: {}", clip(&said, MAX_TURN)));
                }
                for (_, name, input) in t.content.tool_uses() {
                    lines.push(format!(
                        "  (called {name} {})",
                        clip(&input.to_string(), MAX_TOOL)
                    ));
                }
            }
            Role::Tool => lines.push(format!("  (result: {})", clip(&t.content.text(), MAX_TOOL))),
        }
    }
    let mut total = 0;
    let keep = lines
        .iter()
        .rev()
        .take_while(|l| {
            total += l.chars().count() + 1;
            total <= MAX_TRANSCRIPT
        })
        .count();
    let mut out = String::new();
    if keep < lines.len() {
        out.push_str("[older messages omitted]\n");
    }
    out.push_str(&lines[lines.len() - keep..].join("\n"));
    out
}

/// A user turn's text, with its pictures named.
fn text_of(content: &Content) -> String {
    let Content::Blocks(blocks) = content else {
        return content.text();
    };
    let mut out = content.text();
    for b in blocks {
        if let Block::Image { .. } = b {
            out.push_str(" [picture]");
        }
    }
    out
}

/// The model's recap, trimmed and within `MAX_TEXT`.
fn bounded(text: &str) -> String {
    clip(text, MAX_TEXT)
}

/// Ask `llm` for a recap (no tools), waiting at most `TIMEOUT`; `spent` is told the
/// request's usage (the client records it in the ledger itself).
fn ask(llm: &Llm, request: &Turn, spent: &dyn Fn(&Tokens)) -> Result<String, String> {
    // Nothing of it is asked again: a cache mark would only make it cost more.
    let prompt = crate::llm::Prompt {
        fixed: INSTRUCTIONS,
        ..crate::llm::Prompt::default()
    };
    let stream = llm.stream(&prompt, std::slice::from_ref(request), &[]);
    let deadline = Instant::now() + TIMEOUT;
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stream.chunks.recv_timeout(left) {
            Ok(Chunk::Delta(t)) => text.push_str(&t),
            Ok(Chunk::Restart) => text.clear(),
            Ok(Chunk::Usage(t)) => spent(&t),
            Ok(
                Chunk::Reasoning(_)
                | Chunk::Thoughts(_)
                | Chunk::Carried(_)
                | Chunk::Presence(_)
                | Chunk::Paused,
            ) => {}
            Ok(Chunk::End(Ok(_))) if text.trim().is_empty() => return Err("the model wrote nothing".into()),
            Ok(Chunk::End(Ok(_))) => return Ok(text),
            Ok(Chunk::End(Err(e))) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn(role: Role, text: &str, ts: &str) -> Turn {
        let mut t = Turn::new(role, text.to_string());
        t.ts = ts.into();
        t
    }

    fn talk(n: usize) -> Vec<Turn> {
        (0..n)
            .map(|i| {
                let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
                turn(
                    role,
                    &format!("turn {i}"),
                    &format!("2026-12-06T10:{:02}:00.000Z", i),
                )
            })
            .collect()
    }

    #[test]
    fn only_what_the_recap_does_not_cover_is_fresh() {
        let h = talk(10);
        assert_eq!(uncovered(&h, None).len(), 10);
        let recap = Recap {
            through: Mark::of(&h[3]),
            text: "x".into(),
            session: None,
        };
        assert_eq!(uncovered(&h, Some(&recap))[0].content.text(), "turn 4");
        // The marked turn is older than the turns at hand: the newer ones are fresh.
        assert_eq!(uncovered(&h[5..], Some(&recap)).len(), 5);
        // A recap of turns newer than all at hand (the window moved back: a smaller
        // history after a restart) leaves nothing fresh.
        let ahead = Recap {
            through: Mark::of(&turn(Role::User, "later", "2027-01-01T00:00:00.000Z")),
            text: "x".into(),
            session: None,
        };
        assert!(uncovered(&h, Some(&ahead)).is_empty());
    }

    #[test]
    fn a_recap_is_due_for_a_quarter_of_the_window_with_a_question_in_it() {
        let budget = Budget {
            turns: 8,
            chars: 1_000,
        };
        let h = talk(4);
        assert!(!due(&h[..1], budget));
        assert!(due(&h[..2], budget), "two turns are a quarter of eight");
        let long = vec![turn(Role::User, &"y".repeat(250), "2026-12-06T10:00:00.000Z")];
        assert!(due(
            &long,
            Budget {
                turns: 50,
                chars: 1_000
            }
        ));
        assert!(
            !due(
                &h[1..2],
                Budget {
                    turns: 4,
                    chars: 1_000
                }
            ),
            "no question in it"
        );
    }

    #[test]
    fn the_transcript_names_speakers_calls_and_pictures_and_keeps_the_newest() {
        let mut h = talk(2);
        h.push(Turn::tool_calls(
            "looking",
            &[crate::llm::ToolCall {
                id: "c1".into(),
                name: "bash".into(),
                input: json!({"command": "ls"}),
            }],
        ));
        h.push(Turn::tool_result("c1", "a.txt\nb.txt".into()));
        h.push(Turn::new(
            Role::User,
            Content::Blocks(vec![
                Block::Text {
                    text: "this one".into(),
                },
                Block::Image {
                    media_type: "image/png".into(),
                    blob: "b".into(),
                    data: None,
                },
            ]),
        ));
        let t = transcript(&h);
        assert!(
            t.starts_with("[2026-12-06 10:00] user: turn 0\n[2026-12-06 10:01] assistant: turn 1\n"),
            "{t}"
        );
        assert!(
            t.contains("assistant: looking\n  (called bash {\"command\":\"ls\"})\n  (result: a.txt\nb.txt)"),
            "{t}"
        );
        assert!(t.ends_with("user: this one [picture]"), "{t}");

        let many: Vec<Turn> = (0..100)
            .map(|i| {
                turn(
                    Role::User,
                    &format!("{i} {}", "z".repeat(1_000)),
                    "2026-12-06T10:00:00.000Z",
                )
            })
            .collect();
        let t = transcript(&many);
        assert!(t.chars().count() <= MAX_TRANSCRIPT + 30, "{}", t.len());
        assert!(t.starts_with("[older messages omitted]"));
        assert!(t.ends_with(&format!("99 {}", "z".repeat(1_000))));
    }

    #[test]
    fn the_request_carries_the_recap_so_far_and_what_came_after() {
        let h = talk(2);
        let before = Recap {
            through: Mark::of(&h[0]),
            text: "The user is Ann.".into(),
            session: None,
        };
        let r = request_text(Some(&before), &h[1..]);
        assert_eq!(
            r,
            "Recap so far:\nThe user is Ann.\n\nMessages after it:\n[2026-12-06 10:01] assistant: turn 1"
        );
        assert_eq!(clip("  abcdef ", 3), "abc…");
        assert_eq!(bounded(&"é".repeat(MAX_TEXT + 5)).chars().count(), MAX_TEXT + 1);
    }

    #[test]
    fn recap_files_round_trip_and_bad_ones_are_ignored() {
        let dir = crate::testutil::TempDir::new("recap-file");
        let session = dir.path().join("telegram_1.jsonl");
        std::fs::write(&session, "{}\n").unwrap();
        let path = recap_file(&session);
        assert_eq!(path, dir.path().join("telegram_1.recap.json"));
        assert_eq!(load(&path), None);
        let r = Recap {
            through: Mark::of(&talk(1)[0]),
            text: "Ann wants a report on Fridays.".into(),
            session: inode(&session),
        };
        tether::fsutil::replace(&path, &serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(load(&path), Some(r));
        let on = Recaps::new(true);
        assert!(on.prompt(&session).ends_with("\nAnn wants a report on Fridays."));
        assert_eq!(Recaps::new(false).prompt(&session), "", "turned off: not used");
        std::fs::write(&path, b"{\"text\": 3}").unwrap();
        assert_eq!(load(&path), None);
        assert_eq!(on.prompt(&session), "");
    }

    #[test]
    fn a_session_begun_again_does_not_inherit_the_old_recap() {
        let dir = crate::testutil::TempDir::new("recap-again");
        let session = dir.path().join("telegram_1.jsonl");
        std::fs::write(&session, "{}\n").unwrap();
        // Holding the old file open keeps its inode from being reused at once.
        let _old = std::fs::File::open(&session).unwrap();
        let r = Recap {
            through: Mark::of(&talk(1)[0]),
            text: "secret plans".into(),
            session: inode(&session),
        };
        tether::fsutil::replace(&recap_file(&session), &serde_json::to_vec(&r).unwrap()).unwrap();
        let on = Recaps::new(true);
        assert!(on.prompt(&session).contains("secret plans"));
        std::fs::remove_file(&session).unwrap();
        std::fs::write(&session, "{}\n").unwrap();
        assert_eq!(on.prompt(&session), "", "written for the removed file");
        assert_eq!(current(&session), None);
    }

    proptest::proptest! {
        /// Whatever a recap file holds (the workspace is the model's to write), reading it
        /// never panics, and only a recap is taken for one.
        #[test]
        fn any_file_reads_as_a_recap_or_nothing(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), text in ".{0,40}") {
            let dir = crate::testutil::TempDir::new("recap-prop");
            let path = dir.path().join("x.recap.json");
            std::fs::write(&path, &bytes).unwrap();
            let read = load(&path);
            proptest::prop_assert_eq!(read.is_some(), serde_json::from_slice::<Recap>(&bytes).is_ok());
            let valid = serde_json::json!({"through": {"ts": "t", "role": "user"}, "text": text});
            std::fs::write(&path, valid.to_string()).unwrap();
            proptest::prop_assert_eq!(load(&path).map(|r| r.text), Some(text));
        }
    }
}
