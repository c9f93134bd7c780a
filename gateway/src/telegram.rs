//! The Telegram Bot API: the types we read and a blocking client for the calls we make
//! (getMe, setMyCommands, getUpdates, sendMessage, editMessageText, sendChatAction, the
//! drafts, rich messages and files; answerCallbackQuery and editMessageReplyMarkup for a
//! question's answer buttons).
//!
//! The token is part of every URL, so no error leaving this module may carry a URL:
//! every message passes through `redact` first.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// One update from `getUpdates`.
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    /// Monotonic id; the next poll asks for `offset = update_id + 1`.
    pub update_id: i64,
    /// A new message.
    #[serde(default)]
    pub message: Option<Message>,
    /// The user pressed the stop button of a draft.
    #[serde(default)]
    pub stopped_message_generation: Option<GenerationStopped>,
    /// A message its sender edited (asked for only when the gateway answers edits); moved
    /// to `message` by [`parse_updates`], marked by its `edit_date`.
    #[serde(default)]
    pub edited_message: Option<Message>,
    /// A tap on an inline button of the bot's: one of a question's answers becomes, by
    /// [`parse_updates`], the `message` of the user who tapped, replying to the question.
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
    /// The bot's own membership of a chat changed (`ChatMemberUpdated`): `kicked` when a
    /// user blocks it, `member` when they unblock it; `left` or `kicked` when a group
    /// removes it. Only `chat.id` and `new_chat_member.status` are read.
    #[serde(default)]
    pub my_chat_member: Option<Value>,
    /// The update as Telegram sent it, for the poller's journal: what is written there is
    /// read back by the next run as it came, fields we do not know included.
    #[serde(skip)]
    pub raw: Value,
}

/// A tap on an inline button (`CallbackQuery`), kept as it came where it becomes a message.
#[derive(Debug, Clone, Deserialize)]
pub struct CallbackQuery {
    /// Answered with `answerCallbackQuery`, so the user's app stops waiting.
    pub id: String,
    /// Who tapped (a `User`).
    pub from: Value,
    /// The bot's message the button belongs to (absent when too old for Telegram).
    #[serde(default)]
    pub message: Option<Value>,
    /// The button's `callback_data`.
    #[serde(default)]
    pub data: Option<String>,
}

/// Prefix of the `callback_data` of a question's answer buttons (then the answer's index).
pub const ANSWER_DATA: &str = "answer:";

impl CallbackQuery {
    /// The message the tap stands for: the tapped answer's text from the user who tapped,
    /// as a reply to the question (so a group in mention mode passes it on); `None` for a
    /// button that is not an answer of ours.
    pub fn as_message(&self) -> Option<Message> {
        let question = self.message.as_ref()?;
        let data = self.data.as_deref().filter(|d| d.starts_with(ANSWER_DATA))?;
        if self.for_someone_else() {
            return None;
        }
        let label = question["reply_markup"]["inline_keyboard"]
            .as_array()?
            .iter()
            .filter_map(Value::as_array)
            .flatten()
            .find(|b| b["callback_data"] == data)?["text"]
            .as_str()?;
        let mut m = json!({
            "message_id": question["message_id"],
            "date": question["date"],
            "chat": question["chat"],
            "from": self.from,
            "text": label,
            "reply_to_message": question,
        });
        for field in ["message_thread_id", "is_topic_message"] {
            if let Some(v) = question.get(field) {
                m[field] = v.clone();
            }
        }
        let mut m: Message = serde_json::from_value(m).ok()?;
        m.tapped = true;
        Some(m)
    }

    /// A tap on an answer meant for another user (a bystander in a group): no answer.
    pub fn for_someone_else(&self) -> bool {
        let asked = self
            .data
            .as_deref()
            .and_then(|d| d.strip_prefix(ANSWER_DATA))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, user)| user);
        let tapper = self.from["id"].as_i64().map(|id| id.to_string());
        asked.is_some_and(|user| tapper.as_deref() != Some(user))
    }

    /// Where the question is: (chat, message id).
    pub fn question(&self) -> Option<(i64, i64)> {
        let m = self.message.as_ref()?;
        Some((m["chat"]["id"].as_i64()?, m["message_id"].as_i64()?))
    }
}

/// The inline keyboard of a question's `answers`: short ones side by side (three at most),
/// else one a row; each button's data names its answer by index, and the user whose pick
/// counts when there is one (`answer:1:42`).
pub fn answer_keyboard(answers: &[String], by: Option<&str>) -> Value {
    let data = |i: usize| match by {
        Some(user) => format!("{ANSWER_DATA}{i}:{user}"),
        None => format!("{ANSWER_DATA}{i}"),
    };
    let button = |(i, a): (usize, &String)| json!({"text": a, "callback_data": data(i)});
    let buttons: Vec<Value> = answers.iter().enumerate().map(button).collect();
    let side_by_side = answers.len() <= 3 && answers.iter().all(|a| a.chars().count() <= 12);
    let rows: Vec<Value> = match side_by_side {
        true => vec![Value::Array(buttons)],
        false => buttons.into_iter().map(|b| json!([b])).collect(),
    };
    json!({"inline_keyboard": rows})
}

/// A user stopped a reply with its draft's stop button (`MessageGenerationStopped`).
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationStopped {
    /// The private chat.
    pub chat: Chat,
    /// Its topic, if the draft was in one.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// The draft's id.
    pub draft_id: i64,
}

/// A message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// Id within the chat.
    pub message_id: i64,
    /// The chat it was sent in.
    pub chat: Chat,
    /// Sender (absent for channel posts).
    #[serde(default)]
    pub from: Option<TgUser>,
    /// The chat it was sent on behalf of: a group's anonymous admin writes as the group
    /// (`from` is then Telegram's GroupAnonymousBot, the same user in every group), a
    /// channel's owner as the channel.
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    /// Text (absent for stickers, photos without caption...).
    #[serde(default)]
    pub text: Option<String>,
    /// Caption of a photo or document.
    #[serde(default)]
    pub caption: Option<String>,
    /// The message this one replies to.
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
    /// Made of a tap on one of a question's answers ([`CallbackQuery::as_message`]): its
    /// text is the answer alone, the question it replies to not quoted.
    #[serde(skip)]
    pub tapped: bool,
    /// The part of it the user quoted, if they chose one.
    #[serde(default)]
    pub quote: Option<TextQuote>,
    /// A photo, in the sizes Telegram keeps (smallest first).
    #[serde(default)]
    pub photo: Vec<PhotoSize>,
    /// A file sent as a document (an image sent uncompressed, for example).
    #[serde(default)]
    pub document: Option<Document>,
    /// A voice message (Opus in Ogg).
    #[serde(default)]
    pub voice: Option<Document>,
    /// An audio file sent as music (MP3, M4A, ...).
    #[serde(default)]
    pub audio: Option<Document>,
    /// A video message (the round ones; MP4).
    #[serde(default)]
    pub video_note: Option<Document>,
    /// A video (its sound is what reaches the agent).
    #[serde(default)]
    pub video: Option<Document>,
    /// A sticker.
    #[serde(default)]
    pub sticker: Option<Sticker>,
    /// A GIF or a silent video clip (only its presence matters, so nothing of it is kept).
    #[serde(default)]
    pub animation: Option<serde::de::IgnoredAny>,
    /// Where a forwarded message came from.
    #[serde(default)]
    pub forward_origin: Option<Origin>,
    /// A shared location.
    #[serde(default)]
    pub location: Option<Location>,
    /// A shared place (a location with a name and an address).
    #[serde(default)]
    pub venue: Option<Venue>,
    /// A shared contact card, a poll (or quiz), a thrown dice, a checklist (Bot API 9.1):
    /// rare, and only written out for the model (`annotate`), so kept as JSON rather than
    /// given derived deserializers (about 20 KiB of code for the four).
    #[serde(default)]
    pub contact: Option<Value>,
    /// See `contact`.
    #[serde(default)]
    pub poll: Option<Value>,
    /// See `contact`.
    #[serde(default)]
    pub dice: Option<Value>,
    /// See `contact`.
    #[serde(default)]
    pub checklist: Option<Value>,
    /// The message this one replies to when it is in another chat (or a topic of its
    /// own): who wrote it, and what it shares besides words (its words are in `quote`).
    #[serde(default)]
    pub external_reply: Option<ExternalReply>,
    /// The thread it belongs to: a topic of a forum supergroup or of a private chat with
    /// topics on (Bot API 9.3), or, in a plain group, the reply thread.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// Sent in a topic (as opposed to a reply thread of a plain group).
    #[serde(default)]
    pub is_topic_message: bool,
    /// Set on each message of an album (photos sent together), the same for all of them.
    #[serde(default)]
    pub media_group_id: Option<String>,
    /// When its sender last edited it (unix time): set on an edited message.
    #[serde(default)]
    pub edit_date: Option<i64>,
    /// Service message in a group that became the supergroup of this id.
    #[serde(default)]
    pub migrate_to_chat_id: Option<i64>,
    /// Service message in a supergroup that was the group of this id.
    #[serde(default)]
    pub migrate_from_chat_id: Option<i64>,
}

impl Message {
    /// Who sent it, as one person: the chat it was sent on behalf of (a group's
    /// anonymous admins, a channel), each its own sender, rather than the placeholder
    /// user Telegram puts in `from` for all of them; else `from`.
    pub fn sender(&self) -> Option<TgUser> {
        match &self.sender_chat {
            Some(c) => Some(TgUser {
                id: c.id,
                first_name: c.title.clone().unwrap_or_default(),
                last_name: None,
                username: None,
            }),
            None => self.from.clone(),
        }
    }

    /// The message this one answers, unless that is only its topic's first message (every
    /// message of a forum topic is a reply to it) or it is a question the user answered
    /// with a tap.
    pub fn replied_to(&self) -> Option<&Message> {
        if self.tapped {
            return None;
        }
        let r = self.reply_to_message.as_deref()?;
        (Some(r.message_id) != self.message_thread_id).then_some(r)
    }

    /// The (group, supergroup) ids of a migration this service message announces: a
    /// group becomes a supergroup with a new id when topics, a public link or more members
    /// are turned on.
    pub fn migration(&self) -> Option<(i64, i64)> {
        match (self.migrate_to_chat_id, self.migrate_from_chat_id) {
            (Some(new), _) => Some((self.chat.id, new)),
            (None, Some(old)) => Some((old, self.chat.id)),
            (None, None) => None,
        }
    }

    /// The topic it was sent in, where the answer must go too; `None` outside topics
    /// (and in a forum's General topic, which takes messages without a thread id).
    pub fn topic(&self) -> Option<i64> {
        self.message_thread_id.filter(|_| self.is_topic_message)
    }
}

/// The quoted part of a replied-to message.
#[derive(Debug, Clone, Deserialize)]
pub struct TextQuote {
    /// The quoted text.
    pub text: String,
}

/// One size of a photo.
#[derive(Debug, Clone, Deserialize)]
pub struct PhotoSize {
    /// For `getFile`.
    pub file_id: String,
    /// Pixels.
    #[serde(default)]
    pub width: u32,
    /// Pixels.
    #[serde(default)]
    pub height: u32,
    /// Bytes, when Telegram says.
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// A file sent with a message: the fields that matter here of Telegram's `Document`,
/// `Voice`, `Audio`, `Video` and `VideoNote`, which share them.
#[derive(Debug, Clone, Deserialize)]
pub struct Document {
    /// For `getFile`.
    pub file_id: String,
    /// The file's name, when the sender's app gave one.
    #[serde(default)]
    pub file_name: Option<String>,
    /// MIME type, when Telegram says (never for a video message).
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Bytes, when Telegram says.
    #[serde(default)]
    pub file_size: Option<u64>,
    /// A recording's length in seconds, as the sender's app says (0 for a document).
    #[serde(default)]
    pub duration: u64,
}

/// Where a forwarded message came from (Telegram's `MessageOrigin`: `user`,
/// `hidden_user`, `chat` or `channel`).
#[derive(Debug, Clone, Deserialize)]
pub struct Origin {
    /// Which kind of origin.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `user`: who wrote it.
    #[serde(default)]
    pub sender_user: Option<TgUser>,
    /// `hidden_user`: the name of someone who hides their account.
    #[serde(default)]
    pub sender_user_name: Option<String>,
    /// `chat`: the group it was sent on behalf of.
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    /// `channel`: the channel it was posted in.
    #[serde(default)]
    pub chat: Option<Chat>,
}

/// A sticker: what it means is its emoji.
#[derive(Debug, Clone, Deserialize)]
pub struct Sticker {
    /// The emoji it stands for.
    #[serde(default)]
    pub emoji: Option<String>,
}

/// A point on the map. Only ever written out, so kept as JSON numbers: printing an
/// `f64` would link Rust's float formatting (about 5 KiB) for this alone.
#[derive(Debug, Clone, Deserialize)]
pub struct Location {
    /// Degrees north.
    pub latitude: serde_json::Number,
    /// Degrees east.
    pub longitude: serde_json::Number,
}

/// A named place.
#[derive(Debug, Clone, Deserialize)]
pub struct Venue {
    /// Where it is.
    pub location: Location,
    /// Its name.
    #[serde(default)]
    pub title: String,
    /// Its address.
    #[serde(default)]
    pub address: String,
}

/// A message of another chat replied to (`ExternalReplyInfo`): the fields that matter
/// here; the part quoted is the replying message's `quote`.
#[derive(Debug, Clone, Deserialize)]
pub struct ExternalReply {
    /// Who wrote it.
    #[serde(default)]
    pub origin: Option<Origin>,
    /// A shared location.
    #[serde(default)]
    pub location: Option<Location>,
    /// A shared place.
    #[serde(default)]
    pub venue: Option<Venue>,
    /// A contact card, as `Message`'s.
    #[serde(default)]
    pub contact: Option<Value>,
    /// A poll, as `Message`'s.
    #[serde(default)]
    pub poll: Option<Value>,
    /// A dice, as `Message`'s.
    #[serde(default)]
    pub dice: Option<Value>,
    /// A checklist, as `Message`'s.
    #[serde(default)]
    pub checklist: Option<Value>,
}

/// A chat.
#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    /// Chat id (negative for groups).
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A group's or channel's title.
    #[serde(default)]
    pub title: Option<String>,
}

impl Chat {
    /// A group or supergroup (where the bot answers only when addressed).
    pub fn is_group(&self) -> bool {
        matches!(self.kind.as_deref(), Some("group" | "supergroup"))
    }
}

/// A Telegram user.
#[derive(Debug, Clone, Deserialize)]
pub struct TgUser {
    /// User id.
    pub id: i64,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// @username without the @.
    #[serde(default)]
    pub username: Option<String>,
}

impl TgUser {
    /// "First Last".
    pub fn full_name(&self) -> String {
        match &self.last_name {
            Some(l) if !l.is_empty() => format!("{} {l}", self.first_name),
            _ => self.first_name.clone(),
        }
    }
}

/// The usernames of `getMe`'s answer (a `User`, or since Bot API 10.5 a `BotFullInfo`),
/// lowercased: `username` first, then the other `active_usernames` (a bot can own more,
/// collectible ones, and be mentioned by any), each once.
pub fn usernames(me: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let active = me["active_usernames"].as_array().into_iter().flatten();
    for name in std::iter::once(&me["username"])
        .chain(active)
        .filter_map(Value::as_str)
    {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Parse a `getUpdates` result array, skipping (and counting) entries that do not parse,
/// so one odd update never blocks the ones after it.
pub fn parse_updates(result: &Value) -> (Vec<Update>, Vec<i64>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for item in result.as_array().into_iter().flatten() {
        match serde_json::from_value::<Update>(item.clone()) {
            Ok(mut u) => {
                u.raw = item.clone();
                if let (None, Some(mut edited)) = (&u.message, u.edited_message.take()) {
                    // Telegram sets it; a message without one must still read as an edit.
                    edited.edit_date.get_or_insert(0);
                    u.message = Some(edited);
                }
                if u.message.is_none() {
                    u.message = u.callback_query.as_ref().and_then(CallbackQuery::as_message);
                }
                ok.push(u);
            }
            Err(_) => {
                if let Some(id) = item.get("update_id").and_then(Value::as_i64) {
                    skipped.push(id);
                }
            }
        }
    }
    (ok, skipped)
}

/// A failed Bot API call.
#[derive(Debug, Clone)]
pub enum TgError {
    /// HTTP 429: wait this long before any further call.
    RetryAfter(Duration),
    /// 400 "message is not modified": the edit was a no-op.
    NotModified,
    /// 400 "can't parse entities": the formatted text was rejected.
    BadEntities(String),
    /// 400 "message thread not found": the topic is gone (the user deleted it).
    ThreadNotFound,
    /// 400 "message to edit not found": the message was deleted, or stayed behind in a
    /// group that became a supergroup.
    MessageGone,
    /// 400 "group chat was upgraded to a supergroup chat": it lives on under this id.
    Migrated(i64),
    /// Another 4xx: retrying will not help (message says why).
    Rejected(u16, String),
    /// 5xx or a network error: retry with backoff.
    Transient(String),
}

impl fmt::Display for TgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TgError::RetryAfter(d) => write!(f, "rate limited, retry after {d:?}"),
            TgError::NotModified => write!(f, "message is not modified"),
            TgError::BadEntities(m) => write!(f, "formatting rejected: {m}"),
            TgError::ThreadNotFound => write!(f, "message thread not found"),
            TgError::MessageGone => write!(f, "message to edit not found"),
            TgError::Migrated(id) => write!(f, "the group is now the supergroup {id}"),
            TgError::Rejected(c, m) => write!(f, "Telegram refused ({c}): {m}"),
            TgError::Transient(m) => write!(f, "Telegram unreachable: {m}"),
        }
    }
}

impl std::error::Error for TgError {}

/// A Bot API client for one token.
#[derive(Clone)]
pub struct Telegram {
    /// `{api}/bot{token}`; never logged.
    base: String,
    /// The token, to scrub it from error texts.
    token: String,
    /// HTTP client.
    agent: ureq::Agent,
    /// Groups that became supergroups (old id → new id): calls for them go to the new.
    moved: std::sync::Arc<std::sync::Mutex<HashMap<i64, i64>>>,
    /// Told of a chat Telegram refuses to write to for good (blocked, removed).
    gone: Option<std::sync::Arc<crate::gone::GoneChats>>,
}

impl fmt::Debug for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telegram").field("token", &"<redacted>").finish()
    }
}

/// Remove `token` from `text`.
pub fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, "<token>")
    }
}

impl Telegram {
    /// A client for `token` at `api_url` (`https://api.telegram.org` or a local server).
    pub fn new(api_url: &str, token: &str) -> Telegram {
        let agent: ureq::Agent = tether::http::agent_config(api_url)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Telegram {
            base: format!("{}/bot{token}", api_url.trim_end_matches('/')),
            token: token.to_string(),
            agent,
            moved: Default::default(),
            gone: None,
        }
    }

    /// Tell `gone` of each chat Telegram refuses to write to for good, and of each that
    /// writes again ([`Telegram::chat_back`]).
    pub fn watch_gone(&mut self, gone: std::sync::Arc<crate::gone::GoneChats>) {
        self.gone = Some(gone);
    }

    /// The bot's membership of a chat changed (a `my_chat_member` update): gone when it
    /// was blocked or removed, back when it is a member again.
    pub fn membership_changed(&self, change: &Value) {
        let (Some(g), Some(chat)) = (&self.gone, change["chat"]["id"].as_i64()) else {
            return;
        };
        match change["new_chat_member"]["status"].as_str() {
            Some("kicked" | "left") if chat > 0 => g.gone(chat, "the user blocked the bot"),
            Some("kicked" | "left") => g.gone(chat, "the bot was removed from the group"),
            Some(_) => g.back(chat),
            None => {}
        }
    }

    /// `chat` wrote to the bot: reachable, if it was gone.
    pub fn chat_back(&self, chat: i64) {
        if let Some(g) = &self.gone {
            g.back(chat);
        }
    }

    /// From now on, calls for chat `old` go to `new` (the supergroup it became).
    pub fn follow_migration(&self, old: i64, new: i64) {
        self.moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(old, new);
    }

    /// Where calls for `chat` go.
    fn current(&self, chat: i64) -> i64 {
        let moved = self.moved.lock().unwrap_or_else(|e| e.into_inner());
        moved.get(&chat).copied().unwrap_or(chat)
    }

    /// `call(chat, topic)` where they live now: a group that became a supergroup is
    /// followed (and remembered, once Telegram says so), and a topic the user deleted is
    /// left for the chat itself, so an answer lands somewhere rather than nowhere.
    fn in_current(
        &self,
        chat: i64,
        topic: Option<i64>,
        call: impl Fn(i64, Option<i64>) -> Result<Value, TgError>,
    ) -> Result<Value, TgError> {
        let (mut at, mut topic) = (self.current(chat), topic);
        // At most one move of each kind.
        for _ in 0..2 {
            match call(at, topic) {
                Err(TgError::Migrated(new)) if new != at => {
                    log::warn!("chat {at} became the supergroup {new}; sending there");
                    self.follow_migration(chat, new);
                    at = new;
                }
                Err(TgError::ThreadNotFound) if topic.is_some() => {
                    log::warn!(
                        "chat {at}: topic {} is gone; sending to the chat itself",
                        topic.unwrap_or_default()
                    );
                    topic = None;
                }
                other => return other,
            }
        }
        call(at, topic)
    }

    /// The bot's numeric id (the token's prefix); not secret, used to name state files.
    pub fn bot_id(&self) -> &str {
        self.token.split(':').next().unwrap_or("bot")
    }

    /// Call `method` with a JSON body; the `result` on success. A call for a group that
    /// became a supergroup goes to the supergroup, one for a deleted topic to its chat.
    pub fn call(&self, method: &str, body: &Value) -> Result<Value, TgError> {
        let Some(chat) = body["chat_id"].as_i64() else {
            return self.call_as_is(method, body);
        };
        let topic = body["message_thread_id"].as_i64();
        let result = self.in_current(chat, topic, |at, t| {
            if (at, t) == (chat, topic) {
                return self.call_as_is(method, body);
            }
            let mut moved = body.clone();
            moved["chat_id"] = at.into();
            if let (None, Some(fields)) = (t, moved.as_object_mut()) {
                fields.remove("message_thread_id");
            }
            self.call_as_is(method, &moved)
        });
        if let (Err(TgError::Rejected(403, why)), Some(g)) = (&result, &self.gone) {
            if crate::gone::says_gone(why) {
                g.gone(chat, why);
            }
        }
        result
    }

    fn call_as_is(&self, method: &str, body: &Value) -> Result<Value, TgError> {
        let resp = self
            .agent
            .post(format!("{}/{method}", self.base))
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| TgError::Transient(redact(&e.to_string(), &self.token)))?;
        self.answer(resp)
    }

    /// The `result` of a Bot API response, or its error sorted by what to do about it.
    fn answer(&self, resp: ureq::http::Response<ureq::Body>) -> Result<Value, TgError> {
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .into_with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| TgError::Transient(redact(&e.to_string(), &self.token)))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && v["ok"] == true {
            return Ok(v["result"].clone());
        }
        let desc = redact(
            v["description"].as_str().unwrap_or(if text.is_empty() {
                "no body"
            } else {
                "unexpected body"
            }),
            &self.token,
        );
        Err(match status {
            429 => TgError::RetryAfter(Duration::from_secs(
                v["parameters"]["retry_after"].as_u64().unwrap_or(1).max(1),
            )),
            400 if desc.contains("message is not modified") => TgError::NotModified,
            400 if desc.contains("can't parse entities") => TgError::BadEntities(desc),
            400 if desc.contains("message thread not found") => TgError::ThreadNotFound,
            400 if desc.contains("message to edit not found") => TgError::MessageGone,
            400 if v["parameters"]["migrate_to_chat_id"].is_i64() => {
                TgError::Migrated(v["parameters"]["migrate_to_chat_id"].as_i64().unwrap_or_default())
            }
            400..=499 => TgError::Rejected(status, desc),
            _ => TgError::Transient(format!("HTTP {status}: {desc}")),
        })
    }

    /// `getMe`: the bot's usernames, lowercased, its `username` first.
    pub fn get_me(&self) -> Result<Vec<String>, TgError> {
        Ok(usernames(&self.call("getMe", &json!({}))?))
    }

    /// `getFile` then the download of the file: its bytes (at most `cap`).
    pub fn download(&self, file_id: &str, cap: u64) -> Result<Vec<u8>, TgError> {
        let mut bytes = Vec::new();
        self.download_to(file_id, cap, &mut bytes)?;
        Ok(bytes)
    }

    /// `getFile` then the download of the file into `out`, at most `cap` bytes; a larger
    /// file is an error (413) once `cap` bytes have been written.
    pub fn download_to(&self, file_id: &str, cap: u64, out: &mut dyn std::io::Write) -> Result<u64, TgError> {
        let file = self.call("getFile", &json!({"file_id": file_id}))?;
        let path = file["file_path"]
            .as_str()
            .ok_or_else(|| TgError::Rejected(400, "getFile returned no file_path".into()))?;
        // Files live at `{api}/file/bot{token}/{file_path}`.
        let api = &self.base[..self.base.len() - self.token.len() - "/bot".len()];
        let file_base = format!("{api}/file/bot{}", self.token);
        let resp = self
            .agent
            .get(format!("{file_base}/{path}"))
            .call()
            .map_err(|e| TgError::Transient(redact(&e.to_string(), &self.token)))?;
        if resp.status().as_u16() != 200 {
            return Err(TgError::Rejected(
                resp.status().as_u16(),
                "file download refused".into(),
            ));
        }
        let mut body = std::io::Read::take(resp.into_body().into_reader(), cap + 1);
        let n = std::io::copy(&mut body, out)
            .map_err(|e| TgError::Transient(redact(&e.to_string(), &self.token)))?;
        if n > cap {
            return Err(TgError::Rejected(
                413,
                format!("the file is larger than {cap} bytes"),
            ));
        }
        Ok(n)
    }

    /// `sendPhoto` with the image uploaded from memory.
    pub fn send_photo(
        &self,
        chat: i64,
        topic: Option<i64>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Value, TgError> {
        self.in_current(chat, topic, |at, t| {
            self.send_photo_as_is(at, t, media_type, bytes)
        })
    }

    fn send_photo_as_is(
        &self,
        chat: i64,
        topic: Option<i64>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Value, TgError> {
        use ureq::unversioned::multipart::{Form, Part};
        let (chat_id, thread) = (chat.to_string(), topic.map(|t| t.to_string()));
        let name = format!("image.{}", media_type.rsplit('/').next().unwrap_or("jpg"));
        let part = Part::bytes(bytes)
            .file_name(&name)
            .mime_str(media_type)
            .map_err(|e| TgError::Rejected(400, e.to_string()))?;
        let mut form = Form::new().text("chat_id", &chat_id);
        if let Some(t) = &thread {
            form = form.text("message_thread_id", t);
        }
        let form = form.part("photo", part);
        let resp = self
            .agent
            .post(format!("{}/sendPhoto", self.base))
            .send(form)
            .map_err(|e| TgError::Transient(redact(&e.to_string(), &self.token)))?;
        self.answer(resp)
    }

    /// `sendDocument` with `file` uploaded as `name`, streamed from the file with its
    /// length known, so no more than a buffer of it is in memory.
    pub fn send_document(
        &self,
        chat: i64,
        topic: Option<i64>,
        name: &str,
        file: &std::fs::File,
    ) -> Result<Value, TgError> {
        self.upload(crate::upload::Kind::Document, chat, topic, name, file)
    }

    /// `sendVoice` of the recording `file` (Ogg Opus) as a voice message.
    pub fn send_voice(&self, chat: i64, topic: Option<i64>, file: &std::fs::File) -> Result<Value, TgError> {
        self.upload(crate::upload::Kind::Voice, chat, topic, "voice.ogg", file)
    }

    fn upload(
        &self,
        kind: crate::upload::Kind,
        chat: i64,
        topic: Option<i64>,
        name: &str,
        file: &std::fs::File,
    ) -> Result<Value, TgError> {
        self.in_current(chat, topic, |at, t| {
            // The descriptor's own path: the file already opened (and checked), read from
            // its start on every attempt.
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            let body = std::fs::File::open(&path)
                .and_then(|f| crate::upload::Upload::new(kind, at, t, name, f))
                .map_err(|e| TgError::Rejected(400, format!("cannot read the file: {e}")))?;
            let resp = self
                .agent
                .post(format!("{}/{}", self.base, kind.method()))
                .header("Content-Type", body.content_type())
                .header("Content-Length", body.len())
                .send(ureq::SendBody::from_owned_reader(body.into_reader()))
                .map_err(|e| TgError::Transient(redact(&e.to_string(), &self.token)))?;
            self.answer(resp)
        })
    }

    /// `getUpdates` long poll for updates of `kinds` (`allowed_updates`).
    pub fn get_updates(&self, offset: i64, timeout_secs: u64, kinds: &[&str]) -> Result<Value, TgError> {
        self.call(
            "getUpdates",
            &json!({"offset": offset, "timeout": timeout_secs, "allowed_updates": kinds}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_on_an_answer_is_the_tappers_reply_with_that_answer() {
        let question = json!({"message_id": 9, "date": 1, "chat": {"id": -5, "type": "group"},
            "from": {"id": 1, "is_bot": true, "first_name": "Bot"}, "text": "Delete?",
            "message_thread_id": 3,
            "reply_markup": answer_keyboard(&["Yes".into(), "No".into(), "/decline".into()], None)});
        let tap = |data: &str| CallbackQuery {
            id: "q".into(),
            from: json!({"id": 7, "is_bot": false, "first_name": "Ann"}),
            message: Some(question.clone()),
            data: Some(data.into()),
        };
        let m = tap("answer:1").as_message().unwrap();
        assert_eq!((m.message_id, m.chat.id, m.text.as_deref()), (9, -5, Some("No")));
        assert_eq!(m.from.as_ref().map(|u| u.id), Some(7));
        assert_eq!(m.message_thread_id, Some(3));
        assert!(
            m.reply_to_message.is_some() && m.replied_to().is_none(),
            "a reply, not quoted"
        );
        assert!(tap("answer:7").as_message().is_none(), "no such button");
        assert!(tap("vote:1").as_message().is_none(), "not an answer of ours");
        assert_eq!(tap("answer:0").question(), Some((-5, 9)));
        let gone = CallbackQuery {
            message: None,
            ..tap("answer:0")
        };
        assert!(gone.as_message().is_none() && gone.question().is_none());
    }

    #[test]
    fn only_the_user_asked_answers_by_a_tap() {
        let keyboard = answer_keyboard(&["Yes".into(), "No".into()], Some("7"));
        assert_eq!(keyboard["inline_keyboard"][0][1]["callback_data"], "answer:1:7");
        let question = json!({"message_id": 9, "date": 1, "chat": {"id": -5, "type": "group"},
            "text": "Delete?", "reply_markup": keyboard});
        let tap = |who: i64| CallbackQuery {
            id: "q".into(),
            from: json!({"id": who, "is_bot": false, "first_name": "X"}),
            message: Some(question.clone()),
            data: Some("answer:1:7".into()),
        };
        assert_eq!(tap(7).as_message().and_then(|m| m.text), Some("No".into()));
        assert!(!tap(7).for_someone_else());
        assert!(
            tap(8).for_someone_else() && tap(8).as_message().is_none(),
            "a bystander's tap"
        );
        assert!(tap(77).for_someone_else(), "not a prefix match");
    }

    #[test]
    fn short_answers_sit_side_by_side_long_ones_a_row_each() {
        let row = |k: &Value, i: usize| k["inline_keyboard"][i].as_array().unwrap().len();
        let short = answer_keyboard(&["Yes".into(), "No".into(), "/decline".into()], None);
        assert_eq!(short["inline_keyboard"].as_array().unwrap().len(), 1);
        assert_eq!(row(&short, 0), 3);
        assert_eq!(short["inline_keyboard"][0][2]["callback_data"], "answer:2");
        let long = answer_keyboard(&["Staging environment".into(), "Production".into()], None);
        assert_eq!(long["inline_keyboard"].as_array().unwrap().len(), 2);
        let four: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            answer_keyboard(&four, None)["inline_keyboard"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
    use proptest::prelude::*;

    #[test]
    fn usernames_come_from_a_user_or_a_bot_full_info() {
        let old = json!({"id": 1, "is_bot": true, "first_name": "B", "username": "Test_Bot"});
        assert_eq!(usernames(&old), ["test_bot"]);
        let full = json!({"id": 1, "is_bot": true, "first_name": "B", "username": "Test_Bot",
            "active_usernames": ["test_bot", "AegisHelperBot", "", 7, "aegishelperbot"]});
        assert_eq!(usernames(&full), ["test_bot", "aegishelperbot"]);
        assert!(
            usernames(&json!({"id": 1})).is_empty(),
            "no name: no mention can match"
        );
    }

    #[test]
    fn updates_parse_and_odd_ones_are_skipped() {
        let v = json!([
            {"update_id": 1, "message": {"message_id": 5, "chat": {"id": -100, "type": "group"},
                "from": {"id": 7, "first_name": "John", "last_name": "Doe", "username": "jd"}, "text": "hi"}},
            {"update_id": 2, "message_reaction": {"message_id": 5}},
            {"update_id": 3, "message": {"message_id": "bad"}},
            {"no_id": true},
            {"update_id": 4, "edited_message": {"message_id": 5, "chat": {"id": -100},
                "text": "hi!", "edit_date": 1700000100}},
            {"update_id": 5, "edited_message": {"message_id": 6, "chat": {"id": -100}, "text": "x"}}
        ]);
        let (ok, skipped) = parse_updates(&v);
        assert_eq!(ok.len(), 4);
        assert_eq!(
            ok[0].message.as_ref().unwrap().from.as_ref().unwrap().full_name(),
            "John Doe"
        );
        assert!(ok[1].message.is_none());
        assert_eq!(skipped, vec![3]);
        assert_eq!(ok[1].raw, v[1], "kept whole, the field we do not read too");
        // An edit reads as its message, marked by when it was edited.
        let edited = ok[2].message.as_ref().unwrap();
        assert_eq!((edited.message_id, edited.edit_date), (5, Some(1700000100)));
        assert_eq!(ok[2].raw, v[4]);
        assert_eq!(
            ok[3].message.as_ref().unwrap().edit_date,
            Some(0),
            "an edit without a date"
        );
    }

    #[test]
    fn redaction_removes_the_token() {
        let t = "123456:ABC-secret";
        assert_eq!(
            redact(&format!("GET https://x/bot{t}/getMe failed"), t),
            "GET https://x/bot<token>/getMe failed"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z_]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("update_id".to_string()),
                        Just("message".to_string()),
                        Just("chat".to_string()),
                        Just("id".to_string()),
                        Just("text".to_string()),
                        Just("from".to_string()),
                        "[a-z]{1,5}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn update_parser_never_panics(v in json_value()) {
            let (ok, skipped) = parse_updates(&Value::Array(vec![v.clone()]));
            prop_assert!(ok.len() + skipped.len() <= 1);
            let _ = parse_updates(&v);
        }
    }
}
