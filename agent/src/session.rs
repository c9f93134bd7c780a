//! Conversation history on disk (PROTOCOL.md §6): one JSONL file per session under
//! `$AEGIS_WORKSPACE/sessions`, one turn per line.
//!
//! Duties:
//! 1. map a session (channel, id chosen by the outside world) to a file name that can
//!    neither escape the folder nor collide with another session's;
//! 2. load a history, skipping torn or corrupt lines with a warning;
//! 3. append a turn as one whole line, so a crash never leaves half a turn behind;
//!
//! Which turns reach the model is `context.rs`'s job.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether::Session;

/// Longest part of a file name taken verbatim from a channel or id.
const MAX_NAME_PART: usize = 64;

/// Who spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person (or people) in the chat.
    User,
    /// The model.
    Assistant,
    /// The result of one tool call (`tool_call_id` names the call).
    Tool,
}

/// One block of a structured turn, in upstream's line shape (and Anthropic's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text the model wrote before or between tool calls.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call the model made.
    ToolUse {
        /// Call id, echoed by the result turn's `tool_call_id`.
        id: String,
        /// Tool name as offered.
        name: String,
        /// Arguments (an object).
        input: serde_json::Value,
    },
    /// An image (sent by the user, or attached by a tool), by blob-store name.
    Image {
        /// `image/png`, ...
        media_type: String,
        /// Name in `<workspace>/.aegis/blobs`.
        blob: String,
        /// The bytes as base64, filled in just before a request; never stored.
        #[serde(skip)]
        data: Option<String>,
    },
    /// Anthropic extended thinking that led to tool calls, signed by the API, which wants
    /// it back unchanged before those calls while the reply goes on. Kept in memory for
    /// that; never written to the session file (see [`Turn::without_thoughts`]), so never
    /// read from one either (such a line would read as `Other`).
    #[serde(skip_deserializing)]
    Thinking {
        /// The thoughts.
        thinking: String,
        /// The API's signature over them.
        signature: String,
    },
    /// Extended thinking the API withheld (encrypted), likewise sent back unchanged.
    #[serde(skip_deserializing)]
    RedactedThinking {
        /// As the API gave it.
        data: String,
    },
    /// A block of a tool Anthropic ran itself (its web search: `server_tool_use`,
    /// `web_search_tool_result`), as the API gave it: wanted back unchanged while the
    /// reply goes on (a paused turn, a client tool called beside it), like thinking.
    /// Kept in memory for that, never written to the session file.
    #[serde(skip_deserializing)]
    Server {
        /// The block, whole.
        block: serde_json::Value,
    },
    /// A block this agent does not use: kept out of the context rather than failing the
    /// whole line.
    #[serde(other)]
    Other,
}

/// What an image costs in the context budget, in characters.
const IMAGE_COST: usize = 1000;

/// A turn's content: plain text, or blocks (an assistant turn that called tools).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and tool-use blocks.
    Blocks(Vec<Block>),
}

impl Content {
    /// The text of the content: the string, or the text blocks joined.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Blocks(b) => b
                .iter()
                .filter_map(|b| match b {
                    Block::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }

    /// The tool calls among the blocks.
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &serde_json::Value)> {
        let blocks: &[Block] = match self {
            Content::Blocks(b) => b,
            Content::Text(_) => &[],
        };
        blocks.iter().filter_map(|b| match b {
            Block::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }

    /// Characters this content costs in the context budget.
    pub fn size(&self) -> usize {
        match self {
            Content::Text(t) => t.chars().count(),
            Content::Blocks(b) => b
                .iter()
                .map(|b| match b {
                    Block::Text { text } => text.chars().count(),
                    Block::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
                    Block::Image { .. } => IMAGE_COST,
                    // The API strips thoughts of earlier turns; those of the turn going on
                    // count against the model's budget, not this one.
                    Block::Thinking { .. }
                    | Block::RedactedThinking { .. }
                    | Block::Server { .. }
                    | Block::Other => 0,
                })
                .sum(),
        }
    }
}

impl From<String> for Content {
    fn from(t: String) -> Content {
        Content::Text(t)
    }
}

impl From<&str> for Content {
    fn from(t: &str) -> Content {
        Content::Text(t.to_string())
    }
}

/// One line of a session file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// What was said; user turns carry the `[name]: ` prefix.
    pub content: Content,
    /// When, RFC 3339.
    #[serde(default)]
    pub ts: String,
    /// For a tool result: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// [ours] The reply was cut short by `control.cancel`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// [ours] The API paused this turn of the model's (`pause_turn`, a long run of the
    /// tools it runs itself) and the model carries on in the next: not an answer yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// [ours] `msg_id` of the ingress frame, so a message the host delivers again after
    /// a crash is not stored twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// [ours] On tool calls of a reasoning model behind Chat Completions: its thoughts
    /// that led to them, which its server wants back with every later request
    /// ([`crate::carry::Carried`]: DeepSeek's `reasoning_content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// [ours] Likewise OpenRouter's `reasoning_details` (Gemini's thought signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_details: Option<serde_json::Value>,
    /// [ours] Likewise each call's `extra_content` by call id (Gemini's thought signature
    /// on Google's OpenAI-compatible API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<serde_json::Value>,
    /// [ours] On a tool result: documents the tool showed the model (a PDF or an image
    /// `read_file` or `web_fetch` opened, an image an MCP tool returned), by blob. They go
    /// to the model with the reply they belong to only; later requests name them (see
    /// [`Document`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<Document>,
}

/// A document shown to the model whole (a PDF, whose pages its server reads as text and
/// images, or an image), kept in the workspace blob store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// `application/pdf`, `image/png`, ...
    pub media_type: String,
    /// The file's name, for the model (`report.pdf`, `chart.png`).
    pub name: String,
    /// Name in `<workspace>/.aegis/blobs`.
    pub blob: String,
    /// The bytes as base64, filled in just before a request of the reply it belongs to;
    /// never stored. Without them the document is named, not shown.
    #[serde(skip)]
    pub data: Option<String>,
    /// The same file was attached earlier in the reply: named, not sent twice.
    #[serde(skip)]
    pub repeat: bool,
    /// The model's server refused a request with it attached (why): named, not sent.
    #[serde(skip)]
    pub refused: Option<String>,
}

impl Document {
    /// The document of `media_type` named `name`, kept as blob `blob`, not yet filled in.
    pub fn new(media_type: &str, name: String, blob: String) -> Document {
        Document {
            media_type: media_type.into(),
            name,
            blob,
            data: None,
            repeat: false,
            refused: None,
        }
    }

    /// What a request says in the document's place when it is not attached: once its
    /// reply is over (or its blob is gone), or when an earlier result of the reply holds
    /// the same file.
    pub fn note(&self) -> String {
        if let Some(why) = &self.refused {
            format!(
                "[{} could not be shown to you: the model's server refused the request with it attached ({why})]",
                self.name
            )
        } else if self.repeat {
            format!("[{}: the same file as attached above]", self.name)
        } else {
            format!(
                "[{} was shown to you here; it is no longer attached (read it again to see it)]",
                self.name
            )
        }
    }
}

impl Turn {
    /// A turn stamped now.
    pub fn new(role: Role, content: impl Into<Content>) -> Turn {
        Turn {
            role,
            content: content.into(),
            ts: tether::time::now_rfc3339(),
            tool_call_id: None,
            cancelled: false,
            paused: false,
            msg_id: None,
            reasoning_content: None,
            reasoning_details: None,
            extra_content: None,
            documents: Vec::new(),
        }
    }

    /// The same turn carrying `carried` (see [`crate::carry::Carried`]).
    pub fn carrying(mut self, carried: crate::carry::Carried) -> Turn {
        self.reasoning_content = carried.content;
        self.reasoning_details =
            (!carried.details.is_empty()).then_some(serde_json::Value::Array(carried.details));
        self.extra_content = (!carried.calls.is_empty()).then_some(serde_json::Value::Object(carried.calls));
        self
    }

    /// The result of tool call `id`.
    pub fn tool_result(id: &str, text: String) -> Turn {
        let mut t = Turn::new(Role::Tool, text);
        t.tool_call_id = Some(id.to_string());
        t
    }

    /// An assistant turn that called tools, without thoughts.
    #[cfg(test)]
    pub fn tool_calls(text: &str, calls: &[crate::llm::ToolCall]) -> Turn {
        Turn::tool_calls_after(Vec::new(), text, calls)
    }

    /// An assistant turn that called tools, as upstream writes it, after the signed thoughts
    /// (`Thinking`, `RedactedThinking`, and the API's own tools' blocks with the text in
    /// its place among them) that led to them.
    pub fn tool_calls_after(thoughts: Vec<Block>, text: &str, calls: &[crate::llm::ToolCall]) -> Turn {
        // Thoughts that hold the round's text (around the API's own tools' blocks) have
        // it in its place already.
        let placed = thoughts.iter().any(|b| matches!(b, Block::Text { .. }));
        let mut blocks = thoughts;
        if !text.is_empty() && !placed {
            blocks.push(Block::Text {
                text: text.to_string(),
            });
        }
        blocks.extend(calls.iter().map(|c| Block::ToolUse {
            id: c.id.clone(),
            name: c.name.clone(),
            input: c.input.clone(),
        }));
        Turn::new(Role::Assistant, Content::Blocks(blocks))
    }

    /// The turn as the session file keeps it: thoughts, and the blocks of tools the API
    /// ran, are not part of the conversation.
    pub fn without_thoughts(&self) -> std::borrow::Cow<'_, Turn> {
        let Content::Blocks(blocks) = &self.content else {
            return std::borrow::Cow::Borrowed(self);
        };
        let thought = |b: &Block| {
            matches!(
                b,
                Block::Thinking { .. } | Block::RedactedThinking { .. } | Block::Server { .. }
            )
        };
        if !blocks.iter().any(thought) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut kept = self.clone();
        kept.content = Content::Blocks(blocks.iter().filter(|b| !thought(b)).cloned().collect());
        std::borrow::Cow::Owned(kept)
    }
}

/// The file name (without folder) for a session: `{channel}_{id}.jsonl` when both are
/// plain (`[A-Za-z0-9.-]`, at most 64 bytes), as upstream names them. Anything else is
/// replaced by `-` and followed by `~` and a hash of the original, so distinct sessions
/// never share a file and no name contains `/`, `_` from outside, or NUL.
pub fn file_name(session: &Session) -> String {
    format!("{}_{}.jsonl", clean(&session.channel), clean(&session.id))
}

fn clean(part: &str) -> String {
    let plain = !part.is_empty()
        && part.len() <= MAX_NAME_PART
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !part.starts_with('.');
    if plain {
        return part.to_string();
    }
    let mut out: String = part
        .chars()
        .take(MAX_NAME_PART)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.push_str(&format!("~{:016x}", fnv1a(part.as_bytes())));
    out
}

/// FNV-1a, 64 bit: stable across builds and platforms, which file names must be.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The sessions folder and its files.
#[derive(Debug, Clone)]
pub struct SessionStore {
    /// `$AEGIS_WORKSPACE/sessions`.
    dir: PathBuf,
}

impl SessionStore {
    /// A store rooted at `workspace/sessions` (created on first write).
    pub fn new(workspace: &Path) -> SessionStore {
        SessionStore {
            dir: workspace.join("sessions"),
        }
    }

    /// The file for `session`.
    pub fn path(&self, session: &Session) -> PathBuf {
        self.dir.join(file_name(session))
    }

    /// The newest `keep` readable turns of `session`, oldest first; a missing file is an
    /// empty history. Reads the file from its end, so the first message of a long-lived
    /// session costs time and memory for the turns it needs, not for the whole history.
    pub fn load(&self, session: &Session, keep: usize) -> io::Result<Vec<Turn>> {
        let path = self.path(session);
        let mut file = match crate::regular::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut window: u64 = 64 * 1024;
        loop {
            let start = len.saturating_sub(window);
            file.seek(SeekFrom::Start(start))?;
            let mut buf = Vec::with_capacity((len - start) as usize);
            // Read what the file held when we looked, not whatever it may become.
            (&mut file).take(len - start).read_to_end(&mut buf)?;
            let mut lines: Vec<&[u8]> = buf
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .collect();
            if start > 0 && !lines.is_empty() {
                lines.remove(0); // begins mid-line
            }
            if lines.len() >= keep || start == 0 {
                let from = lines.len().saturating_sub(keep);
                let mut turns = Vec::with_capacity(lines.len() - from);
                for line in &lines[from..] {
                    match serde_json::from_slice::<Turn>(line) {
                        Ok(t) => turns.push(t),
                        Err(e) => log::warn!("{}: skipping a corrupt line: {e}", path.display()),
                    }
                }
                return Ok(turns);
            }
            window *= 4;
        }
    }

    /// Append `turn` as one line. If an earlier crash left a torn last line, a newline is
    /// written first so the torn part stays a separate (skipped) line.
    pub fn append(&self, session: &Session, turn: &Turn) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(session);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let mut line = Vec::with_capacity(turn.content.size() + 64);
        if !ends_with_newline(&mut f)? {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, turn).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write of the whole line: O_APPEND places it atomically at the end.
        f.write_all(&line)?;
        f.sync_data()
    }
}

fn ends_with_newline(f: &mut File) -> io::Result<bool> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

/// The user turn text the model sees: `[name]: text` when the sender is known.
pub fn user_content(text: &str, user: Option<&tether::frame::User>) -> String {
    match user.and_then(|u| u.display()) {
        Some(name) => format!("[{name}]: {text}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn tmp(name: &str) -> crate::testutil::TempDir {
        crate::testutil::TempDir::new(&format!("session-{name}"))
    }

    fn s(c: &str, i: &str) -> Session {
        Session::new(c, i)
    }

    #[test]
    fn plain_names_match_upstream() {
        assert_eq!(file_name(&s("telegram", "123456")), "telegram_123456.jsonl");
        assert_eq!(file_name(&s("telegram", "-100123")), "telegram_-100123.jsonl");
    }

    #[test]
    fn hostile_names_stay_inside_and_distinct() {
        let hostile = [
            s("..", ".."),
            s("../../etc", "passwd"),
            s("telegram", "/"),
            s("telegram", "a\0b"),
            s("telegram", &"x".repeat(10_000)),
            s("a_b", "c"),
            s("a", "b_c"),
            s("telegram", "1/2"),
            s("telegram", "1-2"),
            s("télé", "gram"),
        ];
        let mut seen = HashSet::new();
        for h in &hostile {
            let name = file_name(h);
            assert!(!name.contains('/') && !name.contains('\0'), "{name}");
            assert!(!name.starts_with('.'), "{name}");
            assert!(name.len() < 200, "{}", name.len());
            assert!(seen.insert(name.clone()), "collision: {name}");
        }
    }

    #[test]
    fn append_then_load_survives_a_torn_line() {
        let tmp = tmp("torn");
        let dir = tmp.path();
        let store = SessionStore::new(dir);
        let sess = s("test", "1");
        store.append(&sess, &Turn::new(Role::User, "hi")).unwrap();
        // A crash mid-write leaves half a line without newline.
        let mut f = OpenOptions::new().append(true).open(store.path(&sess)).unwrap();
        f.write_all(b"{\"role\":\"assis").unwrap();
        store.append(&sess, &Turn::new(Role::User, "again")).unwrap();
        fs::write(dir.join("sessions/other_x.jsonl"), b"garbage\n").unwrap();
        let turns = store.load(&sess, 100).unwrap();
        assert_eq!(
            turns.iter().map(|t| t.content.text()).collect::<Vec<_>>(),
            vec!["hi", "again"]
        );
        assert!(store.load(&s("other", "x"), 100).unwrap().is_empty());
    }

    #[test]
    fn load_reads_only_the_newest_turns_of_a_long_history() {
        let tmp = tmp("tail");
        let dir = tmp.path();
        let store = SessionStore::new(dir);
        let sess = s("test", "long");
        fs::create_dir_all(dir.join("sessions")).unwrap();
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(
                &serde_json::to_string(&Turn::new(Role::User, format!("{i} {}", "x".repeat(100)))).unwrap(),
            );
            text.push('\n');
        }
        fs::write(store.path(&sess), text).unwrap();
        let turns = store.load(&sess, 70).unwrap();
        assert_eq!(turns.len(), 70);
        assert!(turns[0].content.text().starts_with("4930 "));
        assert!(turns[69].content.text().starts_with("4999 "));
        assert_eq!(store.load(&sess, 10_000).unwrap().len(), 5000);
    }

    #[test]
    fn user_prefix_uses_name_then_username() {
        use tether::frame::User;
        let u = User {
            id: None,
            username: Some("johndoe".into()),
            name: Some("John".into()),
        };
        assert_eq!(user_content("hi", Some(&u)), "[John]: hi");
        let u = User {
            id: None,
            username: Some("johndoe".into()),
            name: None,
        };
        assert_eq!(user_content("hi", Some(&u)), "[johndoe]: hi");
        assert_eq!(user_content("hi", None), "hi");
    }

    proptest! {
        #[test]
        fn sanitised_names_are_safe_and_injective(a in ".{0,80}", b in ".{0,80}", c in ".{0,80}", d in ".{0,80}") {
            let (x, y) = (file_name(&s(&a, &b)), file_name(&s(&c, &d)));
            for n in [&x, &y] {
                prop_assert!(!n.contains('/') && !n.contains('\0') && !n.starts_with('.'));
                prop_assert!(n.len() <= 2 * (MAX_NAME_PART + 17) + 7);
            }
            if (a.clone(), b.clone()) != (c.clone(), d.clone()) {
                prop_assert_ne!(x, y);
            }
        }
    }
}
