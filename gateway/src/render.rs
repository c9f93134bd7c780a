//! The renderer's decisions, free of I/O and clocks (callers pass `Instant`s): how tether
//! egress frames become Telegram messages.
//!
//! Private chats stream as a native draft when the Bot API has `sendMessageDraft`
//! (`stream_mode` auto or draft): an empty draft ("Thinking…") when the reply starts, the
//! text as it grows, formatted as it will end (at most once a second, and again every 20 s
//! so the ephemeral preview stays), then one `sendMessage` per part with the final text.
//! A draft shows Telegram's stop button; its id is the id of the message the reply
//! answers, which is how a press names the reply to cancel. A finished part with a table
//! (`rich_messages`) goes as a rich message, which Telegram renders from the Markdown
//! itself, and its draft as a rich draft, so the table is one while it streams. Groups, edit mode, and servers that do not know the method (remembered after
//! the first refusal) use the messages-and-edits scheme below.
//!
//! Per reply (a chat and the `msg_id` it answers): the first delta → `sendMessage`; later
//! deltas → `editMessageText` at most once a second per chat; `assistant.done` → the final
//! edit with the full text. Every step is formatted when its Markdown converts; text past
//! 4096 characters continues in new messages split at paragraph, line, sentence or word
//! boundaries (a code block or a table cut there reads on in the next message). Per chat:
//! a typing indicator every 3 s from the user's message until the reply completes, for as
//! long as the agent is heard from: it and a draft's refresh stop 2 minutes after the
//! reply's last frame (a reasoning model's thoughts count; they are not shown, Telegram's
//! "Thinking…" stands for them). Frames at or below the cursor are
//! replays and are ignored, so a reconnect or a restart never renders anything twice.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tether::frame::{kind, Command, Commands, Done, ErrorPayload, FileRef, Image, Presence};
use tether::Frame;

use crate::markdown;

/// Telegram's message length limit, in characters.
pub const MAX_MESSAGE: usize = 4096;
/// Edits per chat at most this often.
pub const EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// Typing indicator refresh.
pub const TYPING_EVERY: Duration = Duration::from_secs(3);
/// Typing indicator and draft refreshes stop this long after the agent was last heard from.
pub const TYPING_MAX: Duration = Duration::from_secs(120);
/// A draft unchanged this long is sent again, so Telegram's ~30 s preview never lapses.
pub const DRAFT_REFRESH: Duration = Duration::from_secs(20);
/// Replayed frames without `seq` (old aegisd) remembered for de-duplication.
const SEEN_LIMIT: usize = 4096;
/// Of those, how many a snapshot keeps (aegisd replays its last 50 frames).
const SNAPSHOT_SEEN: usize = 256;

/// Identifies a reply: chat id and the `msg_id` answered ("" for an old agent).
pub type ReplyKey = (i64, String);

/// The `msg_id` of Telegram message `id` of `chat`, as the gateway names what it passes on.
pub fn msg_id_of(chat: i64, id: i64) -> String {
    format!("tg-{chat}-{id}")
}

/// The `msg_id` of message `id` of `chat` as its sender edited it at `date`: each version
/// is a message of its own to the agent.
pub fn msg_id_of_edit(chat: i64, id: i64, date: i64) -> String {
    format!("tg-{chat}-{id}-edit-{date}")
}

/// Whether `msg_id` names an edited message.
pub fn is_edit(msg_id: &str) -> bool {
    msg_id.starts_with("tg-") && msg_id.contains("-edit-")
}

/// The Telegram message of `chat` a reply answers (any version of it), if its `msg_id`
/// names one.
pub fn answered(chat: i64, msg_id: &str) -> Option<i64> {
    let rest = msg_id.strip_prefix(&format!("tg-{chat}-"))?;
    let id = rest.split_once("-edit-").map_or(rest, |(id, _)| id);
    id.parse().ok().filter(|id| *id > 0)
}

/// Something for the Telegram sender to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `sendMessage`; the sender reports the new message id as `Sent`.
    Send {
        /// Reply the message belongs to (None for notices).
        key: Option<ReplyKey>,
        /// Part index within the reply.
        part: usize,
        /// Chat.
        chat: i64,
        /// Topic of the chat (`message_thread_id`), if any.
        topic: Option<i64>,
        /// Plain text.
        text: String,
        /// The same as Telegram HTML, when it has formatting.
        html: Option<String>,
        /// Sent as a rich message (`sendRichMessage`, the text as its Markdown) when the Bot
        /// API takes them; else as HTML or plain text.
        rich: bool,
        /// The answers to pick under it (the reply's last part ends with a question).
        keyboard: Answers,
    },
    /// `editMessageText`. Should the message be gone (deleted, or left behind in a group
    /// that became a supergroup), the sender sends the text anew and reports the new
    /// message as `Sent` for `key`'s `part`.
    Edit {
        /// Reply.
        key: ReplyKey,
        /// Part index.
        part: usize,
        /// Chat.
        chat: i64,
        /// Its topic, for a message sent anew.
        topic: Option<i64>,
        /// Message to edit.
        message_id: i64,
        /// Plain text.
        text: String,
        /// The same as Telegram HTML, when it has formatting.
        html: Option<String>,
        /// Edited into a rich message (`rich_message`) when the Bot API takes them.
        rich: bool,
        /// The answers to pick under it; none removes them.
        keyboard: Answers,
    },
    /// `sendChatAction`: typing, or what the agent's tool is making.
    Typing {
        /// Chat.
        chat: i64,
        /// Topic of the chat, if any.
        topic: Option<i64>,
        /// What the chat shows.
        busy: Busy,
    },
    /// `sendPhoto`, `sendDocument` or `sendVoice`, once the reply's text is shown; the
    /// sender reports `AttachmentSent`.
    Attach {
        /// Reply it belongs to.
        key: ReplyKey,
        /// Index among the reply's attachments (its images, files, voice messages).
        index: usize,
        /// Chat.
        chat: i64,
        /// Topic of the chat, if any.
        topic: Option<i64>,
        /// What to send.
        item: Attachment,
    },
    /// `setMyCommands`: the bot's command menu is now these.
    Menu(Vec<Command>),
    /// `sendMessageDraft`: show `text` as the reply being written (empty: "Thinking…").
    Draft {
        /// Chat.
        chat: i64,
        /// Topic of the chat, if any.
        topic: Option<i64>,
        /// Non-zero id, one per reply.
        draft_id: i64,
        /// Plain text so far (the part being written).
        text: String,
        /// The same as Telegram HTML, when it has formatting (see [`formatted`]).
        html: Option<String>,
        /// The draft shows a stop button (`can_stop`); pressed, Telegram sends an update
        /// naming `draft_id`.
        can_stop: bool,
        /// Streamed as a rich message (`sendRichMessageDraft`, `text` as its Markdown)
        /// when the Bot API has them: the part will end as one, and a table shows as a
        /// table while it streams.
        rich: bool,
    },
}

impl Action {
    /// A message of the gateway's own in `chat` (in `topic` of it), not part of a reply
    /// (`html` when formatted).
    pub fn notice(chat: i64, topic: Option<i64>, text: String, html: Option<String>) -> Action {
        Action::Send {
            key: None,
            part: 0,
            chat,
            topic,
            text,
            html,
            rich: false,
            keyboard: Answers::default(),
        }
    }
}

/// The answers a question offers, as buttons, and whose pick counts (anyone's: `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub labels: Vec<String>,
    pub by: Option<String>,
}

/// What a chat shows while the agent works on its reply (`sendChatAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Busy {
    /// "typing…": thinking, writing, most tools.
    #[default]
    Typing,
    /// "recording a voice message…": `respond_with_voice` runs.
    RecordingVoice,
    /// "sending a photo…": `image_generate` runs (it takes up to a minute).
    SendingPhoto,
}

impl Busy {
    /// The Bot API's name for it.
    pub fn action(self) -> &'static str {
        match self {
            Busy::Typing => "typing",
            Busy::RecordingVoice => "record_voice",
            Busy::SendingPhoto => "upload_photo",
        }
    }

    /// What an agent's presence state (`thinking`, `tool: NAME`) shows.
    fn of(state: &str) -> Busy {
        match state.strip_prefix("tool: ") {
            Some("respond_with_voice") => Busy::RecordingVoice,
            Some("image_generate") => Busy::SendingPhoto,
            _ => Busy::Typing,
        }
    }
}

/// Something a reply sends after its text.
#[derive(Debug, Clone, PartialEq)]
pub enum Attachment {
    /// An image (bytes inline), as a photo.
    Photo(Image),
    /// A file of the workspace blob store, as a document.
    File(FileRef),
    /// A recording of the workspace blob store (Ogg Opus), as a voice message.
    Voice(FileRef),
}

/// How replies stream (config `stream_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// Drafts in private chats when the Bot API has them, else edits.
    #[default]
    Auto,
    /// Drafts in private chats (still falls back when the method is refused).
    Draft,
    /// Send and edit messages, as Bot APIs before drafts.
    Edit,
}

/// Which finished replies go out as rich messages (config `rich_messages`; Bot API 10.1),
/// which Telegram renders from the reply's own Markdown: tables, headings, lists, quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RichMode {
    /// A part with a table, which a classic message can only show as rows of pipes.
    #[default]
    Auto,
    /// Every part.
    Always,
    /// None: classic messages only.
    Off,
}

/// Whether the Bot API refused `sendMessageDraft`, shared by the threads that send drafts
/// (the sender learns it; `/exec`'s runs read it). Once refused, always refused: a Bot
/// API server does not gain methods while the gateway runs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DraftsRefused(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl DraftsRefused {
    /// The Bot API refused a draft.
    pub fn note(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether it did.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One Telegram message of a reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Part {
    /// Set once `sendMessage` returned.
    pub message_id: Option<i64>,
    /// What the message currently shows (its HTML when formatted, else plain text).
    pub shown: String,
    /// A `sendMessage` is in flight.
    #[serde(skip)]
    pub sending: bool,
}

/// A reply being rendered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// Text so far (all deltas, or the final text once done).
    pub text: String,
    /// The messages showing it.
    pub parts: Vec<Part>,
    /// `assistant.done` arrived.
    pub done: bool,
    /// An `error` frame's message, shown if the reply ends without text.
    pub error: Option<String>,
    /// A message shows less than it should (an edit waits for the throttle), as the
    /// last `progress` found; saves recomputing the parts on every loop.
    #[serde(skip)]
    pub behind: bool,
    /// Streaming as a native draft with this id (no message exists until done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<i64>,
    /// The draft text last sent, and when.
    #[serde(skip)]
    pub draft_shown: Option<(String, Instant)>,
    /// Images of the `assistant.done`, sent as photos after the text; kept in the
    /// snapshot until sent so a restart neither loses nor repeats one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// Files of the `assistant.done` (by blob), sent as documents after the photos.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRef>,
    /// Voice messages of the `assistant.done` (by blob), sent after the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voice: Vec<FileRef>,
    /// The answers the reply's question offers (`assistant.done` `answers`), shown as
    /// buttons under its last message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// Whose pick of them counts (`assistant.done` `answerer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answerer: Option<String>,
    /// Attachments sent so far (they go out in order: images, files, voice messages).
    #[serde(default, rename = "photos_sent")]
    pub attachments_sent: usize,
    /// A `sendPhoto` or `sendDocument` is in flight.
    #[serde(skip)]
    pub attaching: bool,
    /// The topic of the chat it answers in (its session's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<i64>,
    /// When the reply's last frame arrived: its draft is refreshed for 2 minutes after it,
    /// so an agent that died mid-reply does not keep "Thinking…" up for ever.
    #[serde(skip)]
    pub heard: Option<Instant>,
}

impl Reply {
    /// Attachment `index`: its images first, then its files, then its voice messages.
    fn attachment(&self, index: usize) -> Option<Attachment> {
        let (images, files) = (self.images.len(), self.files.len());
        if let Some(image) = self.images.get(index) {
            return Some(Attachment::Photo(image.clone()));
        }
        if let Some(file) = self.files.get(index - images) {
            return Some(Attachment::File(file.clone()));
        }
        self.voice
            .get(index - images - files)
            .cloned()
            .map(Attachment::Voice)
    }
}

#[derive(Debug, Clone)]
struct Typing {
    until: Instant,
    next: Instant,
    busy: Busy,
}

/// What a restart needs to carry on exactly where the last run stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Newest egress seq rendered.
    pub cursor: Option<u64>,
    /// Replies in progress, by "chat/msg_id".
    pub replies: BTreeMap<String, Reply>,
    /// Fingerprints of the newest seq-less frames, so an old aegisd's replay after a
    /// gateway restart is recognised too.
    #[serde(default)]
    pub seen: Vec<u64>,
    /// The commands the agent last said it answers (`status.commands`), for the menu
    /// after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_commands: Vec<Command>,
}

/// The renderer of one bot.
#[derive(Debug, Default)]
pub struct Renderer {
    /// Replies in progress.
    replies: BTreeMap<ReplyKey, Reply>,
    /// Per-chat time of the last edit, for the throttle.
    last_edit: BTreeMap<i64, Instant>,
    /// Typing indicator per chat and topic.
    typing: BTreeMap<(i64, Option<i64>), Typing>,
    /// Newest seq rendered.
    cursor: Option<u64>,
    /// Fingerprints of seq-less frames already rendered (old aegisd replays them).
    seen: HashSet<u64>,
    /// Order of `seen`, to forget the oldest.
    seen_order: VecDeque<u64>,
    /// State changed in a way a restart must know (a message id, a finished reply).
    dirty: bool,
    /// Per session, the key of the reply an old agent (no `msg_id`) is streaming (per
    /// session, not chat, so two topics of one chat answering at once stay apart).
    open_anon: BTreeMap<String, String>,
    /// Numbers those keys; starts at the clock so keys stay unique across restarts.
    anon_counter: u64,
    /// Frames accepted (not replays).
    frames_taken: u64,
    /// Drafts or edits.
    mode: StreamMode,
    /// Which finished parts are rich messages.
    rich: RichMode,
    /// The Bot API refused `sendMessageDraft`: edits from now on.
    drafts_refused: bool,
    /// The commands the agent last said it answers.
    agent_commands: Vec<Command>,
    /// The menu's words, for the ingress.
    menu_words: crate::menu::Words,
}

/// The chat and topic of a session id (`PollState::session_id`): `"123"`, `"123:2"`
/// after `/new`, `"123:t45"` in a topic, `"123:t45:2"`.
pub fn place_of(session_id: &str) -> Option<(i64, Option<i64>)> {
    let mut parts = session_id.split(':');
    let chat = parts.next()?.parse().ok()?;
    let topic = parts.next().and_then(|p| p.strip_prefix('t')?.parse().ok());
    Some((chat, topic))
}

fn fingerprint(f: &Frame) -> u64 {
    // FNV-1a over the frame JSON: stable and cheap; collisions only cost a skipped frame.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in f.to_json().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Split `text` into messages of at most `max` characters, preferring a paragraph break,
/// then a line break, then a sentence end, then a space, in the last half of each piece.
/// A code block or a table cut in two reads on in the next message: the block is closed
/// at the cut and opened again, in its language, after it (its lines keep their indent);
/// the table's header and delimiter rows come again above its next rows.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.to_string();
    while rest.chars().count() > max {
        let (part, next) = piece(&rest, max);
        parts.push(part);
        rest = next;
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.trim_end().to_string());
    }
    parts
}

/// The first piece of `rest` (at most `max` characters), closed if it cuts a code block,
/// and what is left, opening again what the cut left open. What is left is always
/// shorter than `rest`.
fn piece(rest: &str, max: usize) -> (String, String) {
    const CLOSE: &str = "\n```";
    let mut at = cut(rest, max);
    let mut part = rest[..at].trim_end();
    if matches!(markdown::open_at_end(part), Some(markdown::Open::Code(_)))
        && part.chars().count() + CLOSE.len() > max
    {
        // Room for the closing fence.
        at = cut(rest, max.saturating_sub(CLOSE.len()).max(1));
        part = rest[..at].trim_end();
    }
    let consumed = rest[..at].chars().count();
    let mut next = &rest[at..];
    let mut reopen = String::new();
    let mut closed = part.to_string();
    match markdown::open_at_end(part) {
        Some(markdown::Open::Code(fence)) if closed.chars().count() + CLOSE.len() <= max => {
            closed.push_str(CLOSE);
            next = next.trim_start_matches('\n');
            let (first, after) = next.split_once('\n').unwrap_or((next, ""));
            if first.trim() == "```" {
                // The block ends right at the cut: its closing fence is the one added.
                next = after;
            } else {
                reopen = format!("{}\n", if fence.len() <= 64 { fence } else { "```" });
            }
        }
        Some(markdown::Open::Table(head, delimiter)) => {
            next = next.trim_start_matches(['\n', ' ']);
            if next.lines().next().is_some_and(|row| row.contains('|')) {
                reopen = format!("{head}\n{delimiter}\n");
            }
        }
        _ => next = next.trim_start_matches(['\n', ' ']),
    }
    if next.trim().is_empty() {
        next = "";
    }
    // What is left must shrink: a header as long as half the piece is not repeated. Nor
    // is anything opened again for nothing.
    if reopen.chars().count() * 2 > consumed || next.is_empty() {
        reopen.clear();
    }
    (closed, reopen + next)
}

/// Where to end a piece of `rest` of at most `max` characters: the last paragraph break,
/// line break, sentence end or space in its second half, else at `max`.
fn cut(rest: &str, max: usize) -> usize {
    let cut_byte = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
    let window = &rest[..cut_byte];
    let half = window.char_indices().nth(max / 2).map_or(0, |(i, _)| i);
    ["\n\n", "\n", ". ", " "]
        .iter()
        .find_map(|sep| window[half..].rfind(sep).map(|i| half + i + sep.len()))
        .unwrap_or(cut_byte)
}

impl Renderer {
    /// A renderer continuing from `snap`.
    pub fn restore(snap: Snapshot) -> Renderer {
        let mut r = Renderer {
            seen: snap.seen.iter().copied().collect(),
            seen_order: snap.seen.iter().copied().collect(),
            cursor: snap.cursor,
            agent_commands: snap.agent_commands,
            anon_counter: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            ..Default::default()
        };
        for (k, mut reply) in snap.replies {
            // A message whose creation was in flight at the snapshot is sent again.
            while reply.parts.last().is_some_and(|p| p.message_id.is_none()) {
                reply.parts.pop();
            }
            // So is a photo or a file.
            reply.attaching = false;
            // Let the first tick compare what is shown with what should be.
            reply.behind = true;
            if let Some((chat, id)) = k.split_once('/') {
                if let Ok(chat) = chat.parse() {
                    r.replies.insert((chat, id.to_string()), reply);
                }
            }
        }
        r
    }

    /// The state to persist.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            seen: self
                .seen_order
                .iter()
                .rev()
                .take(SNAPSHOT_SEEN)
                .rev()
                .copied()
                .collect(),
            cursor: self.cursor,
            agent_commands: self.agent_commands.clone(),
            replies: self
                .replies
                .iter()
                .map(|((chat, id), r)| (format!("{chat}/{id}"), r.clone()))
                .collect(),
        }
    }

    /// Use `mode` for new replies.
    pub fn set_stream_mode(&mut self, mode: StreamMode) {
        self.mode = mode;
    }

    /// Send finished parts as rich messages as `mode` says.
    pub fn set_rich_mode(&mut self, mode: RichMode) {
        self.rich = mode;
    }

    /// The Bot API does not know `sendMessageDraft` (or refused it in `chat`): every
    /// reply streaming as a draft continues with messages and edits.
    pub fn draft_refused(&mut self, chat: i64, now: Instant, out: &mut Vec<Action>) {
        if !self.drafts_refused {
            log::info!("sendMessageDraft refused (chat {chat}); streaming with message edits");
        }
        self.drafts_refused = true;
        let keys: Vec<ReplyKey> = self.replies.keys().cloned().collect();
        for k in keys {
            if let Some(r) = self.replies.get_mut(&k) {
                r.draft = None;
                r.draft_shown = None;
            }
            self.progress(&k, now, out);
        }
    }

    /// Whether the new reply `key` streams as a draft, and with which id: the id of the
    /// message it answers (`tg-CHAT-ID`), so the draft's stop button names the reply to
    /// cancel (`ingress.rs`); else one of a counter.
    fn draft_for(&mut self, key: &ReplyKey) -> Option<i64> {
        let chat = key.0;
        let private = chat > 0;
        if !private || self.mode == StreamMode::Edit || self.drafts_refused {
            return None;
        }
        if let Some(id) = answered(chat, &key.1) {
            return Some(id);
        }
        self.anon_counter += 1;
        // Non-zero and distinct per reply; the counter starts at the clock.
        Some((self.anon_counter % (i32::MAX as u64 - 1) + 1) as i64)
    }

    /// The reply of `key`, created (with its streaming mode, in `topic`) if new.
    fn reply_entry(&mut self, key: &ReplyKey, topic: Option<i64>, now: Instant) -> &mut Reply {
        if !self.replies.contains_key(key) {
            let draft = self.draft_for(key);
            self.replies.insert(
                key.clone(),
                Reply {
                    draft,
                    topic,
                    heard: Some(now),
                    ..Reply::default()
                },
            );
        }
        self.replies.get_mut(key).expect("inserted above")
    }

    /// Frames taken in so far (with or without seq), to tell when to save.
    pub fn frames_taken(&self) -> u64 {
        self.frames_taken
    }

    /// Whether state worth persisting changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Replies in progress.
    #[cfg(test)]
    pub fn in_progress(&self) -> usize {
        self.replies.len()
    }

    /// A user message arrived in `chat` (in `topic` of it): show typing there until the
    /// reply completes.
    pub fn user_message(&mut self, chat: i64, topic: Option<i64>, now: Instant, out: &mut Vec<Action>) {
        self.typing.insert(
            (chat, topic),
            Typing {
                until: now + TYPING_MAX,
                next: now + TYPING_EVERY,
                busy: Busy::Typing,
            },
        );
        out.push(Action::Typing {
            chat,
            topic,
            busy: Busy::Typing,
        });
    }

    /// Stop the typing indicator of `chat`'s `topic` (its message could not be delivered).
    pub fn stop_typing(&mut self, chat: i64, topic: Option<i64>) {
        self.typing.remove(&(chat, topic));
    }

    /// An egress frame.
    pub fn frame(&mut self, f: &Frame, now: Instant, out: &mut Vec<Action>) {
        if !self.accept(f) {
            return;
        }
        self.frames_taken += 1;
        self.render(f, now, out);
    }

    /// Whether `f` is new (not a replay), remembering it.
    fn accept(&mut self, f: &Frame) -> bool {
        match f.seq {
            Some(seq) => {
                if self.cursor.is_some_and(|c| seq <= c) {
                    return false; // a replay
                }
                self.cursor = Some(seq);
            }
            // aegisd streams a reasoning model's thoughts live and never replays them, and
            // nothing of them is shown: remembering them would only push out of the window
            // the frames a replay can repeat.
            None if matches!(f.kind.as_str(), kind::REASONING_DELTA | kind::REASONING_DONE) => {}
            None => {
                let fp = fingerprint(f);
                if !self.seen.insert(fp) {
                    return false;
                }
                self.seen_order.push_back(fp);
                if self.seen_order.len() > SEEN_LIMIT {
                    if let Some(old) = self.seen_order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
            }
        }
        true
    }

    /// The bot's command menu as it should be now (the poller sets it at the start, from
    /// the agent's commands as last heard, kept across restarts; this, when they change);
    /// its words go to `words`, from now on and whenever it changes.
    pub fn share_menu(&mut self, words: crate::menu::Words) {
        words.set(&crate::menu::merged(&self.agent_commands));
        self.menu_words = words;
    }

    fn menu(&self) -> Action {
        let menu = crate::menu::merged(&self.agent_commands);
        self.menu_words.set(&menu);
        Action::Menu(menu)
    }

    fn render(&mut self, f: &Frame, now: Instant, out: &mut Vec<Action>) {
        // The agent's, not a chat's, whichever session carries it.
        if f.kind == kind::STATUS_COMMANDS {
            match f.payload_as::<Commands>() {
                Ok(c) if c.commands != self.agent_commands => {
                    log::info!("the agent answers {} commands of its own", c.commands.len());
                    self.agent_commands = c.commands;
                    self.dirty = true;
                    out.push(self.menu());
                }
                Ok(_) => {}
                Err(e) => log::warn!("status.commands: {e}"),
            }
            return;
        }
        let Some(session) = &f.session else { return };
        if session.channel != "telegram" {
            return;
        }
        let Some((chat, topic)) = place_of(&session.id) else {
            return;
        };
        let key = match &f.msg_id {
            Some(id) => (chat, id.clone()),
            // An old agent names no message: each reply is a run of deltas closed by a
            // done, and gets a key of its own so back-to-back replies never share one.
            None if matches!(f.kind.as_str(), kind::ASSISTANT_DELTA | kind::ASSISTANT_DONE) => {
                let id = match self.open_anon.get(&session.id) {
                    Some(id) => id.clone(),
                    None => {
                        self.anon_counter += 1;
                        let id = format!("#{}", self.anon_counter);
                        self.open_anon.insert(session.id.clone(), id.clone());
                        id
                    }
                };
                if f.kind == kind::ASSISTANT_DONE {
                    self.open_anon.remove(&session.id);
                }
                (chat, id)
            }
            None => (chat, String::new()),
        };
        // The agent is at work on this reply (thinking, running a tool, writing).
        if let Some(t) = self.typing.get_mut(&(chat, topic)) {
            t.until = t.until.max(now + TYPING_MAX);
        }
        if let Some(r) = self.replies.get_mut(&key) {
            r.heard = Some(now);
        }
        match f.kind.as_str() {
            kind::ASSISTANT_DELTA => {
                let t = f.text_payload().unwrap_or_default();
                let reply = self.reply_entry(&key, topic, now);
                if reply.done {
                    return;
                }
                reply.text.push_str(&t);
            }
            kind::ASSISTANT_DONE => {
                let t = f.text_payload().unwrap_or_default();
                let done = f.payload_as::<Done>().unwrap_or_default();
                let reply = self.reply_entry(&key, topic, now);
                reply.images = done.images.into_iter().filter(|i| i.data.is_some()).collect();
                reply.files = done.files;
                reply.voice = done.voice;
                reply.answers = done.answers;
                reply.answerer = done.answerer;
                reply.text = if !t.is_empty() {
                    t
                } else if let Some(e) = &reply.error {
                    format!("⚠️ {e}")
                } else {
                    reply.text.clone()
                };
                reply.done = true;
                self.typing.remove(&(chat, topic));
            }
            kind::ERROR => {
                if let Ok(e) = f.payload_as::<ErrorPayload>() {
                    log::info!("chat {chat}: agent error {}: {}", e.code, e.message);
                    // Only an error about a reply is shown, and only if the reply has no text.
                    if f.msg_id.is_some() {
                        let reply = self.replies.entry(key.clone()).or_insert_with(|| Reply {
                            topic,
                            ..Reply::default()
                        });
                        reply.error = Some(e.message);
                    }
                }
                return;
            }
            kind::STATUS_PRESENCE => {
                // Only the explicit restart signal touches the text: a new attempt at the
                // message (the agent restarted) or a model stream retried after it broke.
                // The text then stands as the signal says, in the same messages; the next
                // delta or the done shows it. A tool running mid-reply (`restart: false`)
                // and old agents' presences (no field) leave the text alone: the
                // `assistant.done` carries the whole reply in any case.
                let p = f.payload_as::<Presence>().unwrap_or_default();
                // A voice being recorded, a picture being drawn: the chat says so.
                if let Some(t) = self.typing.get_mut(&(chat, topic)) {
                    let busy = Busy::of(&p.state);
                    if busy != t.busy {
                        t.busy = busy;
                        t.next = now + TYPING_EVERY;
                        out.push(Action::Typing { chat, topic, busy });
                    }
                }
                if p.restart == Some(true) {
                    if let Some(r) = self.replies.get_mut(&key) {
                        if !r.done {
                            r.text = p.text.unwrap_or_default();
                        }
                    }
                }
                // A reply starting in a private chat shows "Thinking…" as a draft.
                if !self.replies.contains_key(&key) && !key.1.is_empty() {
                    if let Some(id) = self.draft_for(&key) {
                        self.replies.insert(
                            key.clone(),
                            Reply {
                                draft: Some(id),
                                draft_shown: Some((String::new(), now)),
                                topic,
                                heard: Some(now),
                                ..Reply::default()
                            },
                        );
                        out.push(Action::Draft {
                            chat,
                            topic,
                            draft_id: id,
                            text: String::new(),
                            html: None,
                            can_stop: true,
                            rich: false,
                        });
                        self.last_edit.insert(chat, now);
                    }
                }
                return;
            }
            _ => return,
        }
        self.progress(&key, now, out);
    }

    /// The sender created the message of `part` of reply `key`.
    pub fn sent(
        &mut self,
        key: &ReplyKey,
        part: usize,
        message_id: i64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(p) = self.replies.get_mut(key).and_then(|r| r.parts.get_mut(part)) {
            p.message_id = Some(message_id);
            p.sending = false;
            self.dirty = true;
        }
        self.last_edit.insert(key.0, now);
        self.progress(key, now, out);
    }

    /// The sender is done with attachment `index` of reply `key` (sent, or given up on).
    pub fn attachment_sent(&mut self, key: &ReplyKey, index: usize, now: Instant, out: &mut Vec<Action>) {
        if let Some(r) = self.replies.get_mut(key) {
            if r.attachments_sent == index {
                r.attachments_sent += 1;
                r.attaching = false;
                self.dirty = true;
            }
        }
        self.progress(key, now, out);
    }

    /// The sender could not create a message (Telegram refused it for good, e.g. the bot
    /// was blocked): the reply cannot be shown, so it is dropped.
    pub fn send_failed(&mut self, key: &ReplyKey, part: usize) {
        log::error!(
            "chat {}: giving up on reply {:?} (part {part} could not be sent)",
            key.0,
            key.1
        );
        self.replies.remove(key);
        self.dirty = true;
    }

    /// Time passed: typing refreshes and throttled edits.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.typing.retain(|_, t| now < t.until);
        for (&(chat, topic), t) in self.typing.iter_mut() {
            if now >= t.next {
                out.push(Action::Typing {
                    chat,
                    topic,
                    busy: t.busy,
                });
                t.next = now + TYPING_EVERY;
            }
        }
        let keys: Vec<ReplyKey> = self.replies.keys().cloned().collect();
        for k in keys {
            self.progress(&k, now, out);
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let typing = self.typing.values().map(|t| t.next.min(t.until));
        let drafts = self
            .replies
            .iter()
            .filter(|(_, r)| r.draft.is_some() && !r.done)
            .filter_map(|((chat, _), r)| {
                let throttle = self
                    .last_edit
                    .get(chat)
                    .map_or_else(Instant::now, |t| *t + EDIT_INTERVAL);
                match &r.draft_shown {
                    Some(_) if !r.behind => refresh_due(r).map(|at| at.max(throttle)),
                    _ => Some(throttle),
                }
            });
        let edits = self.replies.iter().filter_map(|((chat, _), r)| {
            let pending = r.behind && r.parts.iter().any(|p| p.message_id.is_some());
            pending.then(|| {
                self.last_edit
                    .get(chat)
                    .map_or_else(Instant::now, |t| *t + EDIT_INTERVAL)
            })
        });
        typing.chain(edits).chain(drafts).min()
    }

    /// Move reply `key` one step closer to showing its text.
    fn progress(&mut self, key: &ReplyKey, now: Instant, out: &mut Vec<Action>) {
        let chat = key.0;
        let rich = self.rich;
        let may_edit = self
            .last_edit
            .get(&chat)
            .is_none_or(|t| now >= *t + EDIT_INTERVAL);
        let Some(r) = self.replies.get_mut(key) else {
            return;
        };
        if let (Some(id), false) = (r.draft, r.done) {
            // The part being written, as a draft (empty: "Thinking…"); earlier parts of a
            // long reply are sent as messages when it is done.
            let text = split(&r.text, MAX_MESSAGE).pop().unwrap_or_default();
            r.behind = r.draft_shown.as_ref().is_none_or(|(t, _)| *t != text);
            let stale = r.behind || refresh_due(r).is_some_and(|at| now >= at);
            if stale && may_edit {
                r.draft_shown = Some((text.clone(), now));
                r.behind = false;
                out.push(Action::Draft {
                    chat,
                    topic: r.topic,
                    draft_id: id,
                    html: formatted(&text),
                    rich: rich_part(&text, rich),
                    text,
                    can_stop: true,
                });
                self.last_edit.insert(chat, now);
            }
            return;
        }
        if r.text.is_empty() && !r.done {
            return;
        }
        let desired = desired_parts(r, rich);
        let mut edited = false;
        for (i, look) in desired.iter().enumerate() {
            let shown = &look.shown();
            if i >= r.parts.len() {
                // Parts are created in order, one sendMessage at a time.
                if r.parts.iter().any(|p| p.sending) {
                    break;
                }
                r.parts.push(Part {
                    message_id: None,
                    shown: shown.clone(),
                    sending: true,
                });
                out.push(Action::Send {
                    key: Some(key.clone()),
                    part: i,
                    chat,
                    topic: r.topic,
                    text: look.text.clone(),
                    html: look.html.clone(),
                    rich: look.rich,
                    keyboard: look.keyboard.clone(),
                });
                break;
            }
            let p = &mut r.parts[i];
            if let Some(id) = p.message_id {
                if &p.shown != shown && (may_edit || edited) {
                    p.shown = shown.clone();
                    out.push(Action::Edit {
                        key: key.clone(),
                        part: i,
                        chat,
                        topic: r.topic,
                        message_id: id,
                        text: look.text.clone(),
                        html: look.html.clone(),
                        rich: look.rich,
                        keyboard: look.keyboard.clone(),
                    });
                    edited = true;
                }
            }
        }
        if edited {
            self.last_edit.insert(chat, now);
        }
        r.behind = desired.len() > r.parts.len()
            || r.parts
                .iter()
                .zip(&desired)
                .any(|(p, look)| p.message_id.is_some() && p.shown != look.shown());
        let text_shown = r.done
            && !r.behind
            && r.parts.len() == desired.len()
            && r.parts.iter().all(|p| p.message_id.is_some());
        if let Some(item) = text_shown.then(|| r.attachment(r.attachments_sent)).flatten() {
            if !r.attaching {
                r.attaching = true;
                out.push(Action::Attach {
                    key: key.clone(),
                    index: r.attachments_sent,
                    chat,
                    topic: r.topic,
                    item,
                });
            }
            return;
        }
        if text_shown {
            self.replies.remove(key);
            self.dirty = true;
        }
    }
}

/// When a draft showing what it should is sent again so Telegram's preview does not
/// lapse: 20 s after it was, if the agent was heard from within 2 minutes before then.
fn refresh_due(r: &Reply) -> Option<Instant> {
    let (_, at) = r.draft_shown.as_ref()?;
    let due = *at + DRAFT_REFRESH;
    (due < r.heard? + TYPING_MAX).then_some(due)
}

/// How one message of a reply should look.
#[derive(Debug, Clone, PartialEq)]
struct Look {
    /// Its text (Markdown once done).
    text: String,
    /// As Telegram HTML, when it converts.
    html: Option<String>,
    /// Sent as a rich message.
    rich: bool,
    /// Answers to pick, as buttons under it.
    keyboard: Answers,
}

impl Look {
    /// What the message shows, to compare with what it should: its HTML when formatted,
    /// else its text; a rich message's text marked apart from the same text shown plain
    /// while streaming, so the finished part is edited into a rich one; the answers under
    /// it too, so a part that already shows the question's text gets them.
    fn shown(&self) -> String {
        let mut shown = match (&self.html, self.rich) {
            (_, true) => format!("\u{1}rich\u{1}{}", self.text),
            (Some(html), false) => html.clone(),
            (None, false) => self.text.clone(),
        };
        for a in &self.keyboard.labels {
            shown.push_str(&format!("\u{1}answer\u{1}{a}"));
        }
        shown
    }
}

/// The messages a reply should show now: plain text while streaming; once done, each
/// part also as HTML when its Markdown converts, and rich as `mode` says.
/// `text` (one part) as Telegram HTML, when it has formatting and fits: an aligned table's
/// padding may lengthen a part past the limit, which goes plain then. Text still being
/// written converts too: a marker without its partner stays literal until its partner
/// arrives, and an unclosed code block runs to the end, so a reply looks formatted as it
/// streams instead of showing its Markdown until the end.
fn formatted(text: &str) -> Option<String> {
    markdown::to_html(text).filter(|h| markdown::visible_len(h) <= MAX_MESSAGE)
}

/// Whether a part with `text` is a rich message under `mode` (once finished; its draft
/// is one already).
fn rich_part(text: &str, mode: RichMode) -> bool {
    match mode {
        RichMode::Auto => markdown::has_table(text),
        RichMode::Always => !text.is_empty(),
        RichMode::Off => false,
    }
}

fn desired_parts(r: &Reply, mode: RichMode) -> Vec<Look> {
    if r.text.is_empty() && r.done && r.attachment(0).is_some() {
        return Vec::new(); // the photos or files are the reply
    }
    let text = if r.text.is_empty() && r.done {
        "…".to_string()
    } else {
        r.text.clone()
    };
    let mut looks: Vec<Look> = split(&text, MAX_MESSAGE)
        .into_iter()
        .map(|text| {
            let html = formatted(&text);
            let rich = r.done && rich_part(&text, mode);
            Look {
                text,
                html,
                rich,
                keyboard: Answers::default(),
            }
        })
        .collect();
    if let (true, Some(last)) = (r.done, looks.last_mut()) {
        last.keyboard = Answers {
            labels: r.answers.clone(),
            by: r.answerer.clone(),
        };
    }
    looks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages-and-edits scheme (these tests predate drafts and prove it).
    fn edit_mode() -> Renderer {
        let mut r = Renderer::default();
        r.set_stream_mode(StreamMode::Edit);
        r
    }
    use tether::frame::Session;

    #[test]
    fn a_reply_names_the_message_it_answers_whichever_version() {
        assert_eq!(answered(-5, &msg_id_of(-5, 42)), Some(42));
        let edit = msg_id_of_edit(-5, 42, 1_700_000_100);
        assert_eq!(edit, "tg--5-42-edit-1700000100");
        assert_eq!(answered(-5, &edit), Some(42));
        assert!(is_edit(&edit) && !is_edit(&msg_id_of(-5, 42)));
        assert_eq!(answered(-6, &edit), None, "another chat's");
        assert_eq!(answered(-5, "tg--5-stop-42"), None);
        assert_eq!(answered(-5, "cron-1"), None);
    }

    fn delta(chat: &str, id: &str, seq: u64, t: &str) -> Frame {
        let mut f = Frame::text(kind::ASSISTANT_DELTA, Session::new("telegram", chat), t).with_msg_id(id);
        f.seq = Some(seq);
        f
    }

    fn done(chat: &str, id: &str, seq: u64, t: &str) -> Frame {
        let mut f = Frame::text(kind::ASSISTANT_DONE, Session::new("telegram", chat), t).with_msg_id(id);
        f.seq = Some(seq);
        f
    }

    #[test]
    fn a_questions_answers_go_under_its_last_message_and_survive_a_restart() {
        let question = |seq: u64, text: &str| {
            let mut f = Frame::new(kind::ASSISTANT_DONE, Some(Session::new("telegram", "5")))
                .with_msg_id("m")
                .with_payload(&Done {
                    text: text.into(),
                    answers: vec!["Yes".into(), "No".into()],
                    ..Done::default()
                });
            f.seq = Some(seq);
            f
        };
        let keyboards = |out: &[Action]| -> Vec<(usize, Vec<String>)> {
            out.iter()
                .filter_map(|a| match a {
                    Action::Send { part, keyboard, .. } | Action::Edit { part, keyboard, .. } => {
                        Some((*part, keyboard.labels.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let yes_no = vec!["Yes".to_string(), "No".to_string()];
        // Streamed, then done: the edit that ends it brings the answers, even when the
        // text is already shown.
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&delta("5", "m", 1, "Delete?"), t0, &mut out);
        assert_eq!(keyboards(&out), [(0, vec![])], "none while it streams");
        out.clear();
        r.sent(&(5, "m".into()), 0, 100, t0, &mut out);
        let mut r = Renderer::restore(r.snapshot());
        r.frame(&question(2, "Delete?"), t0 + Duration::from_secs(2), &mut out);
        r.tick(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(keyboards(&out), [(0, yes_no.clone())]);
        // A question longer than one message: the answers go under the last part only.
        let mut r = edit_mode();
        let mut out = Vec::new();
        let long = format!("{}\n\nDelete?", "x".repeat(MAX_MESSAGE));
        r.frame(&question(1, &long), t0, &mut out);
        assert_eq!(keyboards(&out), [(0, vec![])]);
        out.clear();
        r.sent(&(5, "m".into()), 0, 100, t0, &mut out);
        r.tick(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(keyboards(&out), [(1, yes_no)]);
    }

    #[test]
    fn first_delta_sends_later_deltas_edit_at_most_once_a_second() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&delta("5", "m", 1, "Hel"), t0, &mut out);
        assert_eq!(
            out,
            vec![Action::Send {
                key: Some((5, "m".into())),
                part: 0,
                chat: 5,
                topic: None,
                text: "Hel".into(),
                html: None,
                rich: false,
                keyboard: Answers::default()
            }]
        );
        out.clear();
        r.sent(&(5, "m".into()), 0, 100, t0, &mut out);
        assert!(out.is_empty());
        r.frame(
            &delta("5", "m", 2, "lo"),
            t0 + Duration::from_millis(300),
            &mut out,
        );
        assert!(out.is_empty(), "throttled");
        assert_eq!(r.next_deadline(), Some(t0 + EDIT_INTERVAL));
        r.tick(t0 + EDIT_INTERVAL, &mut out);
        assert_eq!(
            out,
            vec![Action::Edit {
                key: (5, "m".into()),
                part: 0,
                chat: 5,
                topic: None,
                message_id: 100,
                text: "Hello".into(),
                html: None,
                rich: false,
                keyboard: Answers::default()
            }]
        );
        out.clear();
        r.frame(
            &done("5", "m", 3, "Hello **world**"),
            t0 + Duration::from_millis(1500),
            &mut out,
        );
        assert!(out.is_empty(), "the final edit also respects the throttle");
        r.tick(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(
            out,
            vec![Action::Edit {
                key: (5, "m".into()),
                part: 0,
                chat: 5,
                topic: None,
                message_id: 100,
                text: "Hello **world**".into(),
                html: Some("Hello <b>world</b>".into()),
                rich: false,
                keyboard: Answers::default()
            }]
        );
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn replays_at_or_below_the_cursor_are_ignored() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&delta("5", "m", 10, "a"), t0, &mut out);
        r.frame(&delta("5", "m", 10, "a"), t0, &mut out);
        r.frame(&delta("5", "m", 9, "z"), t0, &mut out);
        assert_eq!(out.len(), 1);
        let snap = r.snapshot();
        assert_eq!(snap.cursor, Some(10));
        let mut again = Renderer::restore(snap);
        again.frame(&delta("5", "m", 10, "a"), t0, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn back_to_back_replies_of_an_old_agent_get_their_own_messages() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let anon = |k: &str, seq: u64, t: &str| {
            let mut f = Frame::text(k, Session::new("telegram", "5"), t);
            f.seq = Some(seq);
            f
        };
        r.frame(&anon(kind::ASSISTANT_DELTA, 1, "one"), t0, &mut out);
        r.frame(&anon(kind::ASSISTANT_DONE, 2, "one"), t0, &mut out);
        r.frame(&anon(kind::ASSISTANT_DELTA, 3, "two"), t0, &mut out);
        r.frame(&anon(kind::ASSISTANT_DONE, 4, "two"), t0, &mut out);
        let sends: Vec<&str> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sends, vec!["one", "two"]);
    }

    #[test]
    fn an_old_agent_answering_in_two_topics_at_once_keeps_them_apart() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let anon = |session: &str, k: &str, seq: u64, t: &str| {
            let mut f = Frame::text(k, Session::new("telegram", session), t);
            f.seq = Some(seq);
            f
        };
        r.frame(&anon("-100:t5", kind::ASSISTANT_DELTA, 1, "five"), t0, &mut out);
        r.frame(&anon("-100:t9", kind::ASSISTANT_DELTA, 2, "nine"), t0, &mut out);
        r.frame(
            &anon("-100:t5", kind::ASSISTANT_DONE, 3, "five, done"),
            t0,
            &mut out,
        );
        r.frame(
            &anon("-100:t9", kind::ASSISTANT_DONE, 4, "nine, done"),
            t0,
            &mut out,
        );
        r.tick(t0 + Duration::from_secs(5), &mut out);
        let mut shown: Vec<(Option<i64>, String)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send { topic, text, .. } => Some((*topic, text.clone())),
                _ => None,
            })
            .collect();
        shown.sort();
        assert_eq!(
            shown,
            vec![(Some(5), "five".to_string()), (Some(9), "nine".to_string())],
            "{out:?}"
        );
        assert_eq!(r.in_progress(), 2, "each waits for its own message id");
    }

    #[test]
    fn seqless_replays_from_an_old_aegisd_are_recognised() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut f = delta("5", "m", 0, "a");
        f.seq = None;
        r.frame(&f, t0, &mut out);
        r.frame(&f, t0, &mut out);
        assert_eq!(out.len(), 1);
        // Also after a restart from the saved state.
        let mut again = Renderer::restore(r.snapshot());
        again.frame(&f, t0, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn restart_mid_reply_edits_the_same_message() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&delta("5", "m", 1, "Hel"), t0, &mut out);
        r.sent(&(5, "m".into()), 0, 100, t0, &mut out);
        assert!(r.take_dirty());
        let mut r2 = Renderer::restore(r.snapshot());
        out.clear();
        r2.frame(&done("5", "m", 2, "Hello"), t0 + Duration::from_secs(5), &mut out);
        assert_eq!(
            out,
            vec![Action::Edit {
                key: (5, "m".into()),
                part: 0,
                chat: 5,
                topic: None,
                message_id: 100,
                text: "Hello".into(),
                html: None,
                rich: false,
                keyboard: Answers::default()
            }]
        );
    }

    #[test]
    fn long_replies_continue_in_new_messages() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let para = "word ".repeat(600); // 3000 chars
        let text = format!("{para}\n\n{para}");
        r.frame(&done("5", "m", 1, &text), t0, &mut out);
        assert!(matches!(&out[0], Action::Send { part: 0, .. }));
        out.clear();
        r.sent(&(5, "m".into()), 0, 1, t0, &mut out);
        let Action::Send {
            part: 1,
            text: second,
            ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert!(second.starts_with("word"));
        out.clear();
        r.sent(&(5, "m".into()), 1, 2, t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn a_new_attempt_restarts_the_text_in_the_same_message() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&delta("5", "m", 1, "par"), t0, &mut out);
        r.sent(&(5, "m".into()), 0, 100, t0, &mut out);
        // A tool presence mid-reply and an old agent's presence leave the text alone.
        for (seq, p) in [
            (2, Presence::state("tool: bash")),
            (
                3,
                Presence {
                    state: "thinking".into(),
                    restart: None,
                    text: None,
                },
            ),
        ] {
            let mut f = Frame::new(kind::STATUS_PRESENCE, Some(Session::new("telegram", "5")))
                .with_msg_id("m")
                .with_payload(&p);
            f.seq = Some(seq);
            r.frame(&f, t0, &mut out);
        }
        assert_eq!(r.replies[&(5, "m".to_string())].text, "par");
        let mut restart = Frame::new(kind::STATUS_PRESENCE, Some(Session::new("telegram", "5")))
            .with_msg_id("m")
            .with_payload(&Presence::restart(""));
        restart.seq = Some(4);
        r.frame(&restart, t0, &mut out);
        r.frame(
            &delta("5", "m", 5, "full "),
            t0 + Duration::from_secs(2),
            &mut out,
        );
        out.clear();
        r.frame(
            &delta("5", "m", 6, "answer"),
            t0 + Duration::from_secs(4),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Action::Edit {
                key: (5, "m".into()),
                part: 0,
                chat: 5,
                topic: None,
                message_id: 100,
                text: "full answer".into(),
                html: None,
                rich: false,
                keyboard: Answers::default()
            }]
        );
    }

    #[test]
    fn split_prefers_boundaries_and_respects_the_limit() {
        let parts = split(&format!("{}\n\n{}", "a".repeat(3000), "b".repeat(3000)), 4096);
        assert_eq!(parts, vec!["a".repeat(3000), "b".repeat(3000)]);
        let parts = split(&"x".repeat(9000), 4096);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![4096, 4096, 808]
        );
        let parts = split(&"é".repeat(5000), 4096);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        assert_eq!(split("", 10), vec![""]);
    }

    #[test]
    fn a_code_block_cut_in_two_is_closed_and_opened_again() {
        let code: Vec<String> = (0..500).map(|i| format!("    x{i} = {i}  # indented")).collect();
        let text = format!(
            "Here:\n\n```python\ndef f():\n{}\n```\n\nAfter the *code*.",
            code.join("\n")
        );
        let parts = split(&text, 4096);
        assert!(parts.len() >= 3, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(p.chars().count() <= 4096);
            assert_eq!(markdown::open_at_end(p), None, "part {i} leaves nothing open");
            let html = markdown::to_html(p).unwrap();
            if i > 0 {
                assert!(
                    p.starts_with("```python\n    x"),
                    "opened again, indent kept: {p:.40}"
                );
            }
            if i + 1 < parts.len() {
                assert!(p.ends_with("\n```"));
                assert!(html.ends_with("</code></pre>") && !html.contains("After"));
            }
        }
        let last = markdown::to_html(parts.last().unwrap()).unwrap();
        assert!(
            last.ends_with("</code></pre>\n\nAfter the <i>code</i>."),
            "{last}"
        );
        // Every line of code is in exactly one part.
        let all = parts.join("\n");
        assert!(code.iter().all(|l| all.matches(&format!("{l}\n")).count() == 1));
    }

    #[test]
    fn a_code_block_ending_at_the_cut_is_not_opened_again() {
        let body = "y".repeat(60);
        let lines: Vec<&str> = std::iter::repeat_n(body.as_str(), 40).collect();
        let code = format!("```\n{}", lines.join("\n"));
        // The piece ends at the line break before the closing fence, with just the room
        // to close the block there.
        let max = code.chars().count() + "\n```".len();
        let parts = split(&format!("{code}\n```\n{}", "z ".repeat(200)), max);
        assert_eq!(
            parts,
            [format!("{code}\n```"), "z ".repeat(200).trim_end().to_string()]
        );
        // So with nothing after it but spaces: no empty block, no empty message.
        let parts = split(&format!("{code}\n```   \n \n"), max);
        assert_eq!(parts, [format!("{code}\n```")]);
    }

    #[test]
    fn a_table_cut_in_two_has_its_header_again() {
        let rows: Vec<String> = (0..200).map(|i| format!("| row {i} | {} |", i * i)).collect();
        let text = format!("Squares:\n\n| n | n² |\n|---|--:|\n{}\n\nDone.", rows.join("\n"));
        let parts = split(&text, 1000);
        assert!(parts.len() >= 4, "{}", parts.len());
        for p in &parts[1..parts.len() - 1] {
            assert!(p.starts_with("| n | n² |\n|---|--:|\n| row"), "{p:.40}");
            assert!(markdown::has_table(p));
        }
        let all = parts.join("\n");
        assert!(rows.iter().all(|r| all.matches(&format!("{r}\n")).count() == 1));
    }

    proptest::proptest! {
        /// Whatever the text, the pieces fit, nothing of it is lost, and none ends inside
        /// a code block (the cut closes it).
        #[test]
        fn split_fits_loses_nothing_and_closes_code(
            lines in proptest::collection::vec("(```[a-z]{0,3}|\\| [a-z]{1,5} \\| [a-z]{1,5} \\||\\|--\\|--\\||[a-z .]{0,30}|)", 0..120),
            max in 40usize..300,
        ) {
            let text = lines.join("\n");
            let parts = split(&text, max);
            for p in &parts {
                proptest::prop_assert!(p.chars().count() <= max, "{} > {max}: {p:?}", p.chars().count());
            }
            for p in &parts[..parts.len() - 1] {
                let open = markdown::open_at_end(p);
                proptest::prop_assert!(!matches!(open, Some(markdown::Open::Code(_))), "{p:?}");
            }
            // Every non-space character of the text, in order, in the pieces.
            let mut all = parts.concat().chars().filter(|c| !c.is_whitespace()).collect::<Vec<_>>().into_iter();
            for c in text.chars().filter(|c| !c.is_whitespace()) {
                proptest::prop_assert!(all.any(|d| d == c), "lost {c:?} of {text:?} in {parts:?}");
            }
        }
    }

    #[test]
    fn typing_repeats_every_3s_until_done_and_stops_after_2_minutes() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.user_message(5, None, t0, &mut out);
        assert_eq!(
            out,
            vec![Action::Typing {
                chat: 5,
                topic: None,
                busy: Busy::Typing
            }]
        );
        out.clear();
        r.tick(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(
            out,
            vec![Action::Typing {
                chat: 5,
                topic: None,
                busy: Busy::Typing
            }]
        );
        out.clear();
        r.tick(t0 + Duration::from_secs(121), &mut out);
        assert!(out.is_empty());
        r.user_message(6, None, t0, &mut out);
        out.clear();
        r.frame(&done("6", "m", 1, "ok"), t0, &mut out);
        out.clear();
        r.tick(t0 + Duration::from_secs(3), &mut out);
        assert!(!out.contains(&Action::Typing {
            chat: 6,
            topic: None,
            busy: Busy::Typing
        }));
    }

    #[test]
    fn the_chat_shows_a_voice_being_recorded_and_a_picture_being_made() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let busy = |b: Busy| Action::Typing {
            chat: 5,
            topic: None,
            busy: b,
        };
        let state = |s: &str, seq: u64| {
            let mut f = Frame::new(kind::STATUS_PRESENCE, Some(Session::new("telegram", "5")))
                .with_msg_id("m")
                .with_payload(&Presence::state(s));
            f.seq = Some(seq);
            f
        };
        r.user_message(5, None, t0, &mut out);
        out.clear();
        r.frame(&state("thinking", 1), t0, &mut out);
        assert!(
            !out.contains(&busy(Busy::Typing)),
            "no change, nothing sent: {out:?}"
        );
        out.clear();
        r.frame(&state("tool: respond_with_voice", 2), t0, &mut out);
        assert_eq!(out, vec![busy(Busy::RecordingVoice)], "at once");
        out.clear();
        r.tick(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(out, vec![busy(Busy::RecordingVoice)], "and while it lasts");
        out.clear();
        r.frame(&state("tool: image_generate", 3), t0, &mut out);
        assert_eq!(out, vec![busy(Busy::SendingPhoto)]);
        out.clear();
        r.frame(&state("tool: bash", 4), t0, &mut out);
        assert_eq!(out, vec![busy(Busy::Typing)]);
        assert_eq!(
            (Busy::RecordingVoice.action(), Busy::SendingPhoto.action()),
            ("record_voice", "upload_photo")
        );
    }

    fn presence(chat: &str, msg: &str, seq: u64) -> Frame {
        let mut f = Frame::new(kind::STATUS_PRESENCE, Some(Session::new("telegram", chat)))
            .with_msg_id(msg)
            .with_payload(&Presence::restart(""));
        f.seq = Some(seq);
        f
    }

    #[test]
    fn a_part_that_will_end_rich_streams_as_a_rich_draft() {
        let table = "Prices:\n\n| fruit | € |\n|---|---|\n| apple | 1 |";
        for (mode, text, rich) in [
            (RichMode::Auto, table, true),
            (RichMode::Auto, "no table here", false),
            (RichMode::Always, "no table here", true),
            (RichMode::Off, table, false),
        ] {
            let mut r = Renderer::default();
            r.set_rich_mode(mode);
            let t0 = Instant::now();
            let mut out = Vec::new();
            r.frame(&presence("5", "m", 1), t0, &mut out);
            assert!(
                matches!(&out[..], [Action::Draft { rich: false, .. }]),
                "Thinking… is classic"
            );
            out.clear();
            r.frame(&delta("5", "m", 2, text), t0 + Duration::from_secs(1), &mut out);
            let drafts: Vec<bool> = out
                .iter()
                .filter_map(|a| match a {
                    Action::Draft { rich, .. } => Some(*rich),
                    _ => None,
                })
                .collect();
            assert_eq!(drafts, [rich], "{mode:?} {text:?}");
        }
    }

    #[test]
    fn private_replies_stream_as_a_draft_then_one_final_message() {
        let mut r = Renderer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&presence("5", "m", 1), t0, &mut out);
        let Action::Draft { draft_id, text, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(*draft_id != 0 && text.is_empty(), "Thinking… first");
        let id = *draft_id;
        out.clear();
        r.frame(
            &delta("5", "m", 2, "Hel"),
            t0 + Duration::from_millis(100),
            &mut out,
        );
        assert!(out.is_empty(), "throttled: {out:?}");
        r.tick(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(
            out,
            vec![Action::Draft {
                chat: 5,
                topic: None,
                draft_id: id,
                text: "Hel".into(),
                html: None,
                can_stop: true,
                rich: false
            }]
        );
        out.clear();
        // Unchanged for 20 s: sent again so the preview does not lapse.
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(21)));
        r.tick(t0 + Duration::from_secs(21), &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        let mut done = Frame::text(
            kind::ASSISTANT_DONE,
            Session::new("telegram", "5"),
            "Hello **there**",
        )
        .with_msg_id("m");
        done.seq = Some(3);
        r.frame(&done, t0 + Duration::from_secs(22), &mut out);
        assert_eq!(
            out,
            vec![Action::Send {
                key: Some((5, "m".into())),
                part: 0,
                chat: 5,
                topic: None,
                text: "Hello **there**".into(),
                html: Some("Hello <b>there</b>".into()),
                rich: false,
                keyboard: Answers::default()
            }]
        );
        out.clear();
        r.sent(&(5, "m".into()), 0, 77, t0 + Duration::from_secs(22), &mut out);
        assert!(out.is_empty(), "no edits in draft mode: {out:?}");
        assert_eq!(r.in_progress(), 0);
    }

    /// What a reply shows while it streams, as (text, html) of each draft, send or edit.
    fn streamed(mode: StreamMode, deltas: &[&str]) -> Vec<(String, Option<String>)> {
        let mut r = Renderer::default();
        r.set_stream_mode(mode);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, d) in deltas.iter().enumerate() {
            let at = t0 + Duration::from_secs(2 * i as u64);
            r.frame(&delta("5", "m", i as u64 + 1, d), at, &mut out);
            r.tick(at + Duration::from_secs(1), &mut out);
            if let Some(Action::Send { key: Some(k), .. }) = out.last() {
                let k = k.clone();
                r.sent(&k, 0, 77, at + Duration::from_secs(1), &mut out);
            }
        }
        out.into_iter()
            .filter_map(|a| match a {
                Action::Draft { text, html, .. }
                | Action::Send { text, html, .. }
                | Action::Edit { text, html, .. } => Some((text, html)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reply_is_formatted_while_it_streams_in_drafts_and_in_edits() {
        let deltas = ["Use **bo", "ld** and", " `x`\n```sh\nls"];
        for mode in [StreamMode::Draft, StreamMode::Edit] {
            let shown = streamed(mode, &deltas);
            let html: Vec<Option<&str>> = shown.iter().map(|(_, h)| h.as_deref()).collect();
            assert_eq!(
                &html[html.len() - 3..],
                [
                    // A marker without its partner yet stays literal (and plain).
                    None,
                    Some("Use <b>bold</b> and"),
                    // An unclosed code block runs to the end, as it will when closed.
                    Some("Use <b>bold</b> and <code>x</code>\n<pre><code class=\"language-sh\">ls</code></pre>"),
                ],
                "{mode:?}: {shown:?}"
            );
            assert_eq!(shown.last().unwrap().0, "Use **bold** and `x`\n```sh\nls");
        }
    }

    /// The rich flag of each message the renderer sends or edits for a reply whose deltas
    /// are `text` then done, in `stream`/`rich` modes.
    fn rich_flags(stream: StreamMode, rich: RichMode, chat: &str, text: &str) -> Vec<(String, bool)> {
        let mut r = Renderer::default();
        r.set_stream_mode(stream);
        r.set_rich_mode(rich);
        let key = (chat.parse::<i64>().unwrap(), "m".to_string());
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&delta(chat, "m", 1, text), t0, &mut out);
        for a in &out {
            if let Action::Send { part, .. } = a {
                r.sent(&key, *part, 100 + *part as i64, t0, &mut Vec::new());
            }
        }
        let mut seen = Vec::new();
        r.frame(&done(chat, "m", 2, text), t0 + Duration::from_secs(2), &mut out);
        for step in 0..6u64 {
            for a in std::mem::take(&mut out) {
                match a {
                    Action::Send { part, text, rich, .. } => {
                        seen.push((format!("send {text}"), rich));
                        r.sent(&key, part, 100 + part as i64, t0, &mut out);
                    }
                    Action::Edit { text, rich, .. } => seen.push((format!("edit {text}"), rich)),
                    _ => {}
                }
            }
            r.tick(t0 + Duration::from_secs(3 + step), &mut out);
        }
        assert_eq!(r.in_progress(), 0, "{seen:?}");
        seen
    }

    #[test]
    fn a_finished_part_with_a_table_goes_as_a_rich_message() {
        let table = "Plans:\n\n| Plan | Price |\n|---|--:|\n| Pro | 20 |";
        let send = |t: &str, rich| (format!("send {t}"), rich);
        let edit = |t: &str, rich| (format!("edit {t}"), rich);
        // Edit mode: streamed as plain text, then edited into a rich message.
        assert_eq!(
            rich_flags(StreamMode::Edit, RichMode::Auto, "-5", table),
            [send(table, false), edit(table, true)]
        );
        // A draft: one final message, rich.
        assert_eq!(
            rich_flags(StreamMode::Auto, RichMode::Auto, "5", table),
            [send(table, true)]
        );
        // Without a table, classic; `always` makes any text rich; `off` none.
        assert_eq!(
            rich_flags(StreamMode::Auto, RichMode::Auto, "5", "Just **text**"),
            [send("Just **text**", false)]
        );
        assert_eq!(
            rich_flags(StreamMode::Edit, RichMode::Always, "-5", "Just text"),
            [send("Just text", false), edit("Just text", true)]
        );
        assert_eq!(
            rich_flags(StreamMode::Auto, RichMode::Off, "5", table),
            [send(table, false)]
        );
        // A long reply: only the part holding the table is rich.
        let long = format!("{}\n\n{table}", "word ".repeat(1000));
        let flags: Vec<bool> = rich_flags(StreamMode::Auto, RichMode::Auto, "5", &long)
            .into_iter()
            .map(|(_, rich)| rich)
            .collect();
        assert_eq!(flags, [false, true]);
    }

    #[test]
    fn a_drafts_id_is_the_id_of_the_message_it_answers() {
        let mut r = Renderer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&presence("5", "tg-5-812", 1), t0, &mut out);
        r.frame(&presence("5", "cron-7", 2), t0, &mut out);
        let ids: Vec<(i64, bool)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Draft {
                    draft_id, can_stop, ..
                } => Some((*draft_id, *can_stop)),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 2, "{out:?}");
        assert_eq!(ids[0], (812, true));
        assert!(
            ids[1].0 > 0 && ids[1].0 != 812 && ids[1].1,
            "a counter's for another reply"
        );
    }

    #[test]
    fn a_part_its_aligned_table_would_lengthen_past_the_limit_goes_plain() {
        let table = |rows: usize| {
            let mut t = String::from("| key | value |\n|---|---|\n");
            for i in 0..rows {
                let key = if i % 2 == 0 { "k".repeat(20) } else { "k".repeat(4) };
                t.push_str(&format!("| {key} | {} |\n", "v".repeat(10)));
            }
            t
        };
        let look = |text: String| {
            let r = Reply {
                text,
                done: true,
                ..Reply::default()
            };
            desired_parts(&r, RichMode::Off)
        };
        let small = look(table(3));
        assert!(
            small[0]
                .html
                .as_deref()
                .is_some_and(|h| h.starts_with("<pre>key ")),
            "{small:?}"
        );
        let big = table(130);
        assert!(big.chars().count() <= MAX_MESSAGE);
        let parts = look(big);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].html, None, "padded, it would pass 4096 characters");
    }

    fn thought(chat: &str, msg: &str, seq: Option<u64>, t: &str) -> Frame {
        let mut f = Frame::text(kind::REASONING_DELTA, Session::new("telegram", chat), t).with_msg_id(msg);
        f.seq = seq;
        f
    }

    /// A reasoning model thinking for minutes: "Thinking…" and typing stay up while its
    /// thoughts arrive (never shown), and lapse 2 minutes after the agent falls silent.
    #[test]
    fn thinking_and_typing_last_while_the_agent_is_heard_from() {
        let mut r = Renderer::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut out = Vec::new();
        r.user_message(5, None, t0, &mut out);
        r.frame(&presence("5", "m", 1), t0, &mut out);
        let mut seq = 1;
        let mut drafts = Vec::new();
        let mut typing = Vec::new();
        let mut collect = |out: &mut Vec<Action>, s: u64| {
            for a in out.drain(..) {
                match a {
                    Action::Draft { text, .. } => {
                        assert_eq!(text, "", "thoughts are never shown");
                        drafts.push(s);
                    }
                    Action::Typing { .. } => typing.push(s),
                    other => panic!("{other:?}"),
                }
            }
        };
        collect(&mut out, 0);
        for s in 1..=400 {
            if s <= 200 && s % 10 == 0 {
                seq += 1;
                r.frame(&thought("5", "m", Some(seq), "hmm"), at(s), &mut out);
            }
            r.tick(at(s), &mut out);
            collect(&mut out, s);
            if let Some(d) = r.next_deadline() {
                assert!(d > at(s), "a deadline already passed would spin the loop");
            }
        }
        assert_eq!(
            drafts,
            [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300]
        );
        assert_eq!(*typing.last().unwrap(), 318, "{typing:?}");
        assert!(typing.windows(2).all(|w| w[1] - w[0] == 3), "{typing:?}");
        assert!(r.next_deadline().is_none());
        // The answer then arrives as usual.
        r.frame(&delta("5", "m", seq + 1, "Yes"), at(401), &mut out);
        assert!(
            matches!(&out[..], [Action::Draft { text, .. }] if text == "Yes"),
            "{out:?}"
        );
    }

    /// An old aegisd (no seq) never replays thoughts: they take no room in the window
    /// that recognises the frames it does replay.
    #[test]
    fn seqless_thoughts_do_not_push_replays_out_of_the_window() {
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut d = delta("5", "m1", 0, "one");
        d.seq = None;
        let mut fin = done("5", "m1", 0, "one");
        fin.seq = None;
        r.frame(&d, t0, &mut out);
        r.frame(&fin, t0, &mut out);
        r.sent(&(5, "m1".into()), 0, 7, t0, &mut out);
        let sends = |out: &[Action]| out.iter().filter(|a| matches!(a, Action::Send { .. })).count();
        assert_eq!(sends(&out), 1);
        for i in 0..2 * SEEN_LIMIT {
            r.frame(&thought("5", "m2", None, &i.to_string()), t0, &mut out);
        }
        r.frame(&fin, t0, &mut out);
        assert_eq!(sends(&out), 1, "the replayed done was rendered again");
    }

    #[test]
    fn a_refused_draft_falls_back_to_edits_for_good() {
        let mut r = Renderer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&presence("5", "m", 1), t0, &mut out);
        r.frame(&delta("5", "m", 2, "Hi"), t0 + Duration::from_secs(2), &mut out);
        out.clear();
        r.draft_refused(5, t0 + Duration::from_secs(2), &mut out);
        assert!(
            matches!(&out[..], [Action::Send { part: 0, text, .. }] if text == "Hi"),
            "{out:?}"
        );
        out.clear();
        // The next reply goes straight to messages.
        r.frame(&delta("5", "m2", 3, "Yo"), t0 + Duration::from_secs(9), &mut out);
        assert!(matches!(&out[..], [Action::Send { .. }]), "{out:?}");
    }

    #[test]
    fn groups_never_use_drafts() {
        let mut r = Renderer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&presence("-100", "m", 1), t0, &mut out);
        assert!(out.is_empty());
        r.frame(&delta("-100", "m", 2, "Hi"), t0, &mut out);
        assert!(matches!(&out[..], [Action::Send { .. }]), "{out:?}");
    }

    #[test]
    fn a_reply_in_a_topic_goes_to_that_topic_and_survives_a_restart() {
        let mut r = Renderer::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // A private chat with topics on: typing, the draft and the message all in topic 45.
        r.user_message(5, Some(45), t0, &mut out);
        r.frame(&presence("5:t45", "m", 1), t0, &mut out);
        assert!(
            matches!(
                &out[..],
                [
                    Action::Typing { topic: Some(45), .. },
                    Action::Draft { topic: Some(45), .. }
                ]
            ),
            "{out:?}"
        );
        out.clear();
        r.frame(
            &delta("5:t45:2", "m", 2, "Hi"),
            t0 + Duration::from_secs(2),
            &mut out,
        );
        let snap = r.snapshot();
        let mut r = Renderer::restore(snap);
        out.clear();
        r.frame(
            &done("5:t45:2", "m", 3, "Hi there"),
            t0 + Duration::from_secs(3),
            &mut out,
        );
        assert!(
            matches!(&out[..], [Action::Send { chat: 5, topic: Some(45), text, .. }] if text == "Hi there"),
            "{out:?}"
        );
        // A forum's other topic, and outside topics, are told apart.
        out.clear();
        r.frame(
            &delta("-100:t7", "g", 4, "Yo"),
            t0 + Duration::from_secs(4),
            &mut out,
        );
        r.frame(
            &delta("-100", "h", 5, "Hey"),
            t0 + Duration::from_secs(5),
            &mut out,
        );
        let topics: Vec<Option<i64>> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send { topic, .. } => Some(*topic),
                _ => None,
            })
            .collect();
        assert_eq!(topics, vec![Some(7), None]);
    }

    #[test]
    fn session_ids_name_their_chat_and_topic() {
        assert_eq!(place_of("123"), Some((123, None)));
        assert_eq!(place_of("-100123:2"), Some((-100123, None)));
        assert_eq!(place_of("-100123:t45"), Some((-100123, Some(45))));
        assert_eq!(place_of("5:t45:3"), Some((5, Some(45))));
        assert_eq!(place_of("cron"), None);
        assert_eq!(place_of("5:tx"), Some((5, None)));
    }

    proptest::proptest! {
        /// Every session id the poller makes names its own chat and topic back; anything
        /// else parses without a panic.
        #[test]
        fn place_of_reads_back_what_the_poller_wrote(
            chat in proptest::num::i64::ANY,
            topic in proptest::option::of(1i64..i64::MAX),
            news in 0u32..3,
            junk in ".{0,40}",
        ) {
            let mut st = crate::state::PollState::default();
            for _ in 0..news {
                st.new_session(chat, topic);
            }
            proptest::prop_assert_eq!(place_of(&st.session_id(chat, topic)), Some((chat, topic)));
            let _ = place_of(&junk);
        }
    }

    #[test]
    fn images_files_and_voice_of_a_reply_go_out_one_at_a_time_after_its_text_and_survive_a_restart() {
        let img = |d: &str| Image {
            media_type: "image/png".into(),
            data: Some(d.into()),
            ..Image::default()
        };
        let file = FileRef {
            name: "report.pdf".into(),
            blob: format!("{}.bin", "a".repeat(64)),
            size: Some(3),
        };
        let voice = FileRef {
            name: "voice.ogg".into(),
            blob: format!("{}.ogg", "b".repeat(64)),
            size: Some(9),
        };
        let mut f = Frame::new(kind::ASSISTANT_DONE, Some(Session::new("telegram", "5")))
            .with_msg_id("m")
            .with_payload(&Done {
                text: "two charts".into(),
                images: vec![img("AAAA"), img("BBBB")],
                files: vec![file.clone()],
                voice: vec![voice.clone()],
                ..Done::default()
            });
        f.seq = Some(1);
        let key: ReplyKey = (5, "m".into());
        let photo = |index: usize, d: &str| Action::Attach {
            key: key.clone(),
            index,
            chat: 5,
            topic: None,
            item: Attachment::Photo(img(d)),
        };
        let mut r = edit_mode();
        let t0 = Instant::now();
        let mut out = Vec::new();
        r.frame(&f, t0, &mut out);
        assert!(
            matches!(out.as_slice(), [Action::Send { .. }]),
            "text first: {out:?}"
        );
        out.clear();
        r.sent(&key, 0, 100, t0, &mut out);
        assert_eq!(out, vec![photo(0, "AAAA")]);
        out.clear();
        r.tick(t0 + Duration::from_secs(5), &mut out);
        assert!(out.is_empty(), "one sendPhoto at a time");
        // A restart with the first photo in flight sends it again, then the second.
        let mut r = Renderer::restore(r.snapshot());
        r.tick(t0, &mut out);
        assert_eq!(out, vec![photo(0, "AAAA")]);
        out.clear();
        r.attachment_sent(&key, 0, t0, &mut out);
        assert_eq!(out, vec![photo(1, "BBBB")]);
        out.clear();
        r.attachment_sent(&key, 0, t0, &mut out);
        assert!(out.is_empty(), "a stale report changes nothing");
        r.attachment_sent(&key, 1, t0, &mut out);
        let document = Action::Attach {
            key: key.clone(),
            index: 2,
            chat: 5,
            topic: None,
            item: Attachment::File(file.clone()),
        };
        assert_eq!(out, vec![document.clone()]);
        out.clear();
        // So does a restart with the file in flight.
        let mut r = Renderer::restore(r.snapshot());
        r.tick(t0, &mut out);
        assert_eq!(out, vec![document]);
        out.clear();
        r.attachment_sent(&key, 2, t0, &mut out);
        let spoken = Action::Attach {
            key: key.clone(),
            index: 3,
            chat: 5,
            topic: None,
            item: Attachment::Voice(voice),
        };
        assert_eq!(out, vec![spoken.clone()], "the voice message last");
        out.clear();
        let mut r = Renderer::restore(r.snapshot());
        r.tick(t0, &mut out);
        assert_eq!(out, vec![spoken], "and again after a restart with it in flight");
        out.clear();
        r.attachment_sent(&key, 3, t0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(r.in_progress(), 0);
        // A reply that is only a file sends no text message.
        let mut f = Frame::new(kind::ASSISTANT_DONE, Some(Session::new("telegram", "5")))
            .with_msg_id("n")
            .with_payload(&Done {
                text: String::new(),
                files: vec![file],
                ..Done::default()
            });
        f.seq = Some(2);
        r.frame(&f, t0, &mut out);
        assert!(
            matches!(out.as_slice(), [Action::Attach { index: 0, .. }]),
            "{out:?}"
        );
    }
}
