//! A fake Telegram Bot API server with the real JSON shapes and errors: `getMe` (a
//! `BotFullInfo` with `active_usernames`, Bot API 10.5), long-polling `getUpdates` (offset confirms, timeout waits), `sendMessage`,
//! `editMessageText` (400 "message is not modified", "message to edit not found"),
//! `sendChatAction`, `setMyCommands`, `sendMessageDraft` (on demand; private chats only,
//! non-zero id, HTML like messages; its stop button, pressed, is a
//! `stopped_message_generation` update), HTML `parse_mode` validation (400 "can't parse
//! entities", also injected once with [`Fault::BadEntities`]), the 4096 character limit,
//! 401 for a wrong token, and injected 429 (`retry_after`) and 5xx.
//! Photos: messages with `photo` sizes or an image `document`, `getFile` (400 "invalid
//! file_id", "file is too big" past 20 MB), downloads from `/file/bot<token>/<path>`, and
//! `sendPhoto` as multipart/form-data (400 "there is no photo in the request",
//! "IMAGE_PROCESS_FAILED" for bytes that are no image), `sendDocument` likewise (400
//! "there is no document in the request", 413 "Request Entity Too Large" past 50 MB), and
//! `sendVoice` (400 "there is no voice in the request", and "VOICE_MESSAGES_FORBIDDEN"
//! for a user whose privacy settings refuse voice messages). Rich messages (Bot API 10.1,
//! on demand, like drafts): `sendRichMessage` and `editMessageText` with `rich_message`
//! (its `markdown` or `html`, exactly one), and `sendRichMessageDraft` when drafts are
//! on too (private chats, a non-zero id, checked as a message); a table of more than 20 columns, past the
//! documented limit, is refused with a 400 (its wording ours). A server without them
//! answers `sendRichMessage` with 404 "method not found" and, ignoring `rich_message`,
//! an edit with 400 "message text is empty".

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{multipart, FormPart, Request, Responder, Server};

/// A fault to answer the next call of a method with.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `parameters.retry_after`.
    RetryAfter(u64),
    /// 500 Internal Server Error.
    Internal,
    /// 502 with an HTML body, as a proxy in front of the API would.
    BadGateway,
    /// 409 Conflict: another program is calling getUpdates with the same token.
    Conflict,
    /// 400 "can't parse entities", as Telegram answers formatting its parser reads
    /// otherwise than ours; only a call with `parse_mode` meets it.
    BadEntities,
}

/// One message as the user sees it.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Message id.
    pub id: i64,
    /// Raw text as last set.
    pub text: String,
    /// `parse_mode` of the last set.
    pub parse_mode: Option<String>,
    /// How many successful edits it had.
    pub edits: usize,
    /// The topic it was sent to (`message_thread_id`).
    pub thread: Option<i64>,
    /// A rich message (`text` is its Markdown or HTML source).
    pub rich: bool,
    /// Its inline keyboard, row by row: (button text, callback data).
    pub buttons: Keyboard,
}

/// An inline keyboard, row by row: (button text, callback data).
pub type Keyboard = Vec<Vec<(String, String)>>;

impl Msg {
    /// The text as displayed (HTML tags removed and entities decoded).
    pub fn visible(&self) -> String {
        match self.parse_mode.as_deref() {
            Some("HTML") => visible_html(&self.text),
            _ => self.text.clone(),
        }
    }
}

/// One recorded API call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Method name.
    pub method: String,
    /// JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, µs since the Unix epoch (comparable with other processes).
    pub wall_us: u64,
    /// HTTP status answered (0 while a long poll is still waiting).
    pub status: u16,
}

#[derive(Default)]
struct State {
    updates: Vec<Value>,
    next_update: i64,
    next_message: i64,
    chats: BTreeMap<i64, Vec<Msg>>,
    /// Topics that exist, as (chat, thread id): those users wrote in.
    topics: std::collections::HashSet<(i64, i64)>,
    /// Groups that became supergroups: old id → new id.
    migrated: BTreeMap<i64, i64>,
    /// Topics the user deleted: a message still arriving from one does not revive it.
    deleted_topics: std::collections::HashSet<(i64, i64)>,
    calls: Vec<Call>,
    faults: VecDeque<(String, Fault)>,
    empty_at_once: bool,
    no_chat_action: bool,
    /// `sendMessageDraft` is known (off: like a Bot API server from before drafts).
    drafts: bool,
    /// Rich messages are known (off: like a Bot API server from before 10.1).
    rich: bool,
    /// Update kinds the bot asked for (`allowed_updates`); empty: all.
    allowed_updates: Vec<String>,
    /// Per chat, the draft shown now (id, text as displayed); a sent message replaces it.
    draft_now: BTreeMap<i64, (i64, String)>,
    /// Uploaded files by `file_id`: (file_path, bytes).
    files: BTreeMap<String, (String, Vec<u8>)>,
    /// Photos the bot sent, per chat: (content type of the part, bytes).
    photos: BTreeMap<i64, Vec<(String, Vec<u8>)>>,
    /// Documents sent, by chat: (file name, bytes).
    documents: BTreeMap<i64, Vec<(String, Vec<u8>)>>,
    /// Voice messages sent, by chat: (content type of the part, bytes).
    voices: BTreeMap<i64, Vec<(String, Vec<u8>)>>,
    /// Chats whose user refuses voice messages.
    no_voice: std::collections::HashSet<i64>,
    /// Chats whose user blocked the bot, or groups that removed it: every call for them
    /// is refused with 403, as on Telegram.
    blocked: std::collections::HashSet<i64>,
    /// File downloads wait while set (a large file on a slow line).
    hold_downloads: bool,
    /// File downloads asked for so far.
    downloads: usize,
    /// The bot's other active usernames (collectible ones), after `test_bot`.
    more_usernames: Vec<String>,
    /// Commands a menu may hold before `BOT_COMMANDS_TOO_MUCH` (100 when unset; users
    /// report refusals of smaller menus whose text is long).
    menu_cap: Option<usize>,
    /// Callback queries pushed and not yet answered (`answerCallbackQuery`), by id.
    open_callbacks: std::collections::HashSet<String>,
}

/// The fake server.
pub struct FakeTelegram {
    server: Server,
    token: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

fn ok(result: Value) -> (u16, Value) {
    (200, json!({"ok": true, "result": result}))
}

fn bad(status: u16, description: &str) -> (u16, Value) {
    (
        status,
        json!({"ok": false, "error_code": status, "description": description}),
    )
}

/// Strip the tags Telegram's HTML mode accepts and decode its entities.
pub fn visible_html(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Telegram's check of an HTML text: known tags, properly nested, entities escaped.
fn html_error(s: &str) -> Option<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['<', '&']) {
        if rest[i..].starts_with('&') {
            let ok = ["&lt;", "&gt;", "&amp;", "&quot;"]
                .iter()
                .any(|e| rest[i..].starts_with(e));
            if !ok {
                return Some(format!(
                    "Bad Request: can't parse entities: unsupported entity at byte offset {i}"
                ));
            }
            rest = &rest[i + 1..];
            continue;
        }
        let Some(j) = rest[i..].find('>') else {
            return Some("Bad Request: can't parse entities: unclosed start tag".into());
        };
        let tag = &rest[i + 1..i + j];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(name) {
                return Some(format!(
                    "Bad Request: can't parse entities: unmatched end tag \"{name}\""
                ));
            }
        } else {
            let name = tag.split(' ').next().unwrap_or("");
            if ![
                "b",
                "strong",
                "i",
                "em",
                "u",
                "s",
                "code",
                "pre",
                "a",
                "blockquote",
                "tg-spoiler",
            ]
            .contains(&name)
            {
                return Some(format!(
                    "Bad Request: can't parse entities: unsupported start tag \"{name}\""
                ));
            }
            stack.push(name.to_string());
        }
        rest = &rest[i + j + 1..];
    }
    stack.pop().map(|t| {
        format!("Bad Request: can't parse entities: can't find end tag corresponding to start tag \"{t}\"")
    })
}

impl FakeTelegram {
    /// Serve the API for `token`.
    pub fn start(token: &str) -> FakeTelegram {
        let state = Arc::new((
            Mutex::new(State {
                next_update: 1,
                next_message: 1,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let st = Arc::clone(&state);
        let tok = token.to_string();
        // Each piece written at once, as Telegram's servers answer (a head and a body
        // held back by Nagle until the client's delayed acknowledgement would add 40 ms
        // to every long poll's answer, which no real bot sees).
        let server = Server::start_nodelay(move |req: Request, resp: Responder| {
            if let Some(rest) = req.path.strip_prefix("/file/bot") {
                return download(&st, &tok, rest, resp);
            }
            let (status, body) = handle(&st, &tok, &req);
            resp.json(status, &body);
        });
        FakeTelegram {
            server,
            token: token.to_string(),
            state,
        }
    }

    /// API base URL (what `TELEGRAM_API_URL` should be).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The token it accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A user writes `text` in `chat`; returns the update id.
    pub fn push_text(&self, chat: i64, user_id: i64, name: &str, text: &str) -> i64 {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let id = s.next_update;
        s.next_update += 1;
        let message_id = 10_000 + id;
        let kind = if chat < 0 { "group" } else { "private" };
        s.updates.push(json!({
            "update_id": id,
            "message": {
                "message_id": message_id,
                "date": 1_700_000_000,
                "chat": {"id": chat, "type": kind},
                "from": {"id": user_id, "is_bot": false, "first_name": name, "username": name.to_lowercase()},
                "text": text,
            }
        }));
        cv.notify_all();
        id
    }

    /// The user presses the stop button of draft `draft_id` in private `chat` (an update
    /// `stopped_message_generation`, Bot API 10.3), if the draft offered one.
    pub fn press_stop(&self, chat: i64, draft_id: i64) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let offered = s.calls.iter().any(|c| {
            matches!(c.method.as_str(), "sendMessageDraft" | "sendRichMessageDraft")
                && c.body["draft_id"] == draft_id
                && c.body["can_stop"] == true
        });
        assert!(offered, "draft {draft_id} showed no stop button");
        let id = s.next_update;
        s.next_update += 1;
        s.updates
            .push(json!({"update_id": id, "stopped_message_generation": {
            "chat": {"id": chat, "type": "private", "first_name": "Ann"}, "draft_id": draft_id}}));
        cv.notify_all();
    }

    /// User `user_id` taps the inline button `text` of the bot's message `message_id` in
    /// `chat`: a `callback_query` update carrying the message as Telegram does (its text
    /// and keyboard) and the button's data. Returns the query's id.
    pub fn press_button(&self, chat: i64, message_id: i64, user_id: i64, text: &str) -> String {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let m = s
            .chats
            .get(&chat)
            .and_then(|c| c.iter().find(|m| m.id == message_id))
            .cloned()
            .unwrap_or_else(|| panic!("no message {message_id} in chat {chat}"));
        let data = m
            .buttons
            .iter()
            .flatten()
            .find(|(t, _)| t == text)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("message {message_id} has no button {text:?}: {:?}", m.buttons));
        let id = s.next_update;
        s.next_update += 1;
        let query = format!("cb-{id}");
        s.open_callbacks.insert(query.clone());
        let kind = if chat < 0 { "group" } else { "private" };
        let keyboard: Vec<Vec<Value>> = m
            .buttons
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(t, d)| json!({"text": t, "callback_data": d}))
                    .collect()
            })
            .collect();
        s.updates.push(json!({"update_id": id, "callback_query": {
            "id": query,
            "from": {"id": user_id, "is_bot": false, "first_name": "Ann", "username": "ann"},
            "chat_instance": "42",
            "message": {"message_id": message_id, "date": 1_700_000_000,
                "chat": {"id": chat, "type": kind},
                "from": {"id": 123456, "is_bot": true, "first_name": "Test Bot", "username": "test_bot"},
                "text": m.visible(), "reply_markup": {"inline_keyboard": keyboard}},
            "data": data}}));
        cv.notify_all();
        query
    }

    /// Callback queries not answered yet.
    pub fn open_callbacks(&self) -> Vec<String> {
        let s = self.state.0.lock().unwrap();
        s.open_callbacks.iter().cloned().collect()
    }

    /// A message with any fields (`chat`, `from`, `text`, `reply_to_message`, ...)
    /// arrives as an update; `message_id` and `date` are filled in. Returns the message id.
    pub fn push_message(&self, mut message: Value) -> i64 {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let id = s.next_update;
        s.next_update += 1;
        let message_id = 10_000 + id;
        message["message_id"] = json!(message_id);
        message["date"] = json!(1_700_000_000);
        if let (Some(chat), Some(thread), true) = (
            message["chat"]["id"].as_i64(),
            message["message_thread_id"].as_i64(),
            message["is_topic_message"] == json!(true),
        ) {
            if !s.deleted_topics.contains(&(chat, thread)) {
                s.topics.insert((chat, thread));
            }
        }
        s.updates.push(json!({"update_id": id, "message": message}));
        cv.notify_all();
        message_id
    }

    /// The sender of `message` (as pushed, with its `message_id`) edits it to `text`: an
    /// `edited_message` update with `edit_date`, delivered only to a bot that asks for
    /// that kind, as on Telegram.
    pub fn push_edit(&self, mut message: Value, text: &str) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        let id = s.next_update;
        s.next_update += 1;
        message["date"] = json!(1_700_000_000);
        message["edit_date"] = json!(1_700_000_000 + id);
        message["text"] = json!(text);
        s.updates
            .push(json!({"update_id": id, "edited_message": message}));
        cv.notify_all();
    }

    /// Group `old` becomes the supergroup `new` (as when topics are turned on): both
    /// service messages arrive, and calls for `old` are refused with the new id from now.
    pub fn migrate_group(&self, old: i64, new: i64) {
        self.push_message(json!({"chat": {"id": old, "type": "group", "title": "Team"},
            "from": {"id": 7, "is_bot": false, "first_name": "Ann"}, "migrate_to_chat_id": new}));
        self.push_message(json!({"chat": {"id": new, "type": "supergroup", "title": "Team"},
            "from": {"id": 1087968824, "is_bot": true, "first_name": "Group"}, "migrate_from_chat_id": old}));
        self.state.0.lock().unwrap().migrated.insert(old, new);
    }

    /// The user deletes topic `thread` of `chat`: sending there is refused from now on
    /// ("message thread not found"), also for messages already on their way.
    pub fn delete_topic(&self, chat: i64, thread: i64) {
        let mut s = self.state.0.lock().unwrap();
        s.topics.remove(&(chat, thread));
        s.deleted_topics.insert((chat, thread));
    }

    /// Refuse command menus of more than `cap` commands (`BOT_COMMANDS_TOO_MUCH`).
    pub fn cap_menu(&self, cap: usize) {
        self.state.0.lock().unwrap().menu_cap = Some(cap);
    }

    /// The commands of the menu last set (`setMyCommands` answered `true`).
    pub fn menu(&self) -> Vec<String> {
        let s = self.state.0.lock().unwrap();
        s.calls
            .iter()
            .rev()
            .find(|c| c.method == "setMyCommands" && c.status == 200)
            .map(|c| {
                c.body["commands"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["command"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Someone deletes message `id` of `chat` (an admin, or the user in a private chat):
    /// editing it is refused from now on ("message to edit not found").
    pub fn delete_message(&self, chat: i64, id: i64) {
        let mut s = self.state.0.lock().unwrap();
        if let Some(c) = s.chats.get_mut(&chat) {
            c.retain(|m| m.id != id);
        }
    }

    /// A user sends a photo (Telegram's sizes, smallest first) with an optional caption;
    /// returns the message id.
    pub fn push_photo(&self, chat: i64, user_id: i64, sizes: &[Vec<u8>], caption: Option<&str>) -> i64 {
        self.push_message(self.photo_message(chat, user_id, sizes, caption))
    }

    /// One photo of an album (photos sent together): Telegram delivers each as a message
    /// of its own with the album's `media_group_id`, the caption on the first.
    pub fn push_album_photo(
        &self,
        chat: i64,
        user_id: i64,
        sizes: &[Vec<u8>],
        caption: Option<&str>,
        album: &str,
    ) -> i64 {
        let mut m = self.photo_message(chat, user_id, sizes, caption);
        m["media_group_id"] = json!(album);
        self.push_message(m)
    }

    /// Telegram's sizes of a photo whose files are `sizes` (smallest first), for a message
    /// built by hand.
    pub fn photo_sizes(&self, sizes: &[Vec<u8>]) -> Value {
        let photo: Vec<Value> = sizes
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let side = 90 * (i as u64 + 1);
                let id = self.add_file("photos", "jpg", bytes);
                json!({"file_id": id, "file_unique_id": format!("u{id}"), "width": side, "height": side, "file_size": bytes.len()})
            })
            .collect();
        Value::Array(photo)
    }

    fn photo_message(&self, chat: i64, user_id: i64, sizes: &[Vec<u8>], caption: Option<&str>) -> Value {
        let mut m = json!({
            "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
            "from": {"id": user_id, "is_bot": false, "first_name": "Pat"},
            "photo": self.photo_sizes(sizes),
        });
        if let Some(c) = caption {
            m["caption"] = json!(c);
        }
        m
    }

    /// A user sends a file as a document (e.g. an uncompressed image).
    pub fn push_document(
        &self,
        chat: i64,
        user_id: i64,
        mime_type: &str,
        bytes: &[u8],
        caption: Option<&str>,
    ) -> i64 {
        self.push_file(chat, user_id, "picture", mime_type, bytes, caption)
    }

    /// A user sends a file named `name`.
    pub fn push_file(
        &self,
        chat: i64,
        user_id: i64,
        name: &str,
        mime_type: &str,
        bytes: &[u8],
        caption: Option<&str>,
    ) -> i64 {
        self.push_message(self.file_message(chat, user_id, name, mime_type, bytes, caption))
    }

    /// One file of several sent together: Telegram delivers each as a message of its own
    /// with the group's `media_group_id`.
    pub fn push_album_file(&self, chat: i64, user_id: i64, name: &str, bytes: &[u8], album: &str) -> i64 {
        let mut m = self.file_message(chat, user_id, name, "application/octet-stream", bytes, None);
        m["media_group_id"] = json!(album);
        self.push_message(m)
    }

    fn file_message(
        &self,
        chat: i64,
        user_id: i64,
        name: &str,
        mime_type: &str,
        bytes: &[u8],
        caption: Option<&str>,
    ) -> Value {
        let id = self.add_file("documents", "bin", bytes);
        let mut m = json!({
            "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
            "from": {"id": user_id, "is_bot": false, "first_name": "Pat"},
            "document": {"file_id": id, "file_unique_id": format!("u{id}"), "file_name": name, "mime_type": mime_type, "file_size": bytes.len()},
        });
        if let Some(c) = caption {
            m["caption"] = json!(c);
        }
        m
    }

    /// A user records a voice message (Opus in Ogg) of `duration` seconds.
    pub fn push_voice(&self, chat: i64, user_id: i64, bytes: &[u8], duration: u64) -> i64 {
        let id = self.add_file("voice", "oga", bytes);
        self.push_message(json!({
            "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
            "from": {"id": user_id, "is_bot": false, "first_name": "Pat"},
            "voice": {"file_id": id, "file_unique_id": format!("u{id}"), "duration": duration,
                "mime_type": "audio/ogg", "file_size": bytes.len()},
        }))
    }

    /// A user sends a video (MP4) of `duration` seconds.
    pub fn push_video(&self, chat: i64, user_id: i64, bytes: &[u8], duration: u64) -> i64 {
        let id = self.add_file("videos", "mp4", bytes);
        self.push_message(json!({
            "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
            "from": {"id": user_id, "is_bot": false, "first_name": "Pat"},
            "video": {"file_id": id, "file_unique_id": format!("u{id}"), "width": 640, "height": 360,
                "duration": duration, "mime_type": "video/mp4", "file_size": bytes.len()},
        }))
    }

    fn add_file(&self, folder: &str, ext: &str, bytes: &[u8]) -> String {
        let mut s = self.state.0.lock().unwrap();
        let n = s.files.len();
        let id = format!("AgACAgIAAx{n:04}");
        s.files
            .insert(id.clone(), (format!("{folder}/file_{n}.{ext}"), bytes.to_vec()));
        id
    }

    /// Photos the bot sent to `chat`: (part content type, bytes).
    pub fn photos(&self, chat: i64) -> Vec<(String, Vec<u8>)> {
        self.state
            .0
            .lock()
            .unwrap()
            .photos
            .get(&chat)
            .cloned()
            .unwrap_or_default()
    }

    /// Voice messages the bot sent to `chat`: (content type of the part, bytes).
    pub fn voices(&self, chat: i64) -> Vec<(String, Vec<u8>)> {
        let s = self.state.0.lock().unwrap();
        s.voices.get(&chat).cloned().unwrap_or_default()
    }

    /// The user of `chat` refuses voice messages from bots (a privacy setting).
    pub fn refuse_voice(&self, chat: i64) {
        self.state.0.lock().unwrap().no_voice.insert(chat);
    }

    /// The user of `chat` blocks the bot (a group: removes it), or no longer does; with
    /// `tell`, the bot gets the `my_chat_member` update Telegram sends (`kicked`, or
    /// `member`), without it only refusals (as for a bot that was down for longer than
    /// Telegram keeps updates).
    pub fn block(&self, chat: i64, blocked: bool, tell: bool) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        match blocked {
            true => s.blocked.insert(chat),
            false => s.blocked.remove(&chat),
        };
        if tell {
            let id = s.next_update;
            s.next_update += 1;
            let kind = if chat > 0 { "private" } else { "supergroup" };
            let status = if blocked { "kicked" } else { "member" };
            let bot = json!({"id": 123456, "is_bot": true, "first_name": "Test Bot", "username": "test_bot"});
            s.updates.push(json!({"update_id": id, "my_chat_member": {
                "chat": {"id": chat, "type": kind}, "from": {"id": chat.abs(), "is_bot": false, "first_name": "Ann"},
                "date": 1_700_000_000, "old_chat_member": {"status": "member", "user": bot},
                "new_chat_member": {"status": status, "user": bot}}}));
            cv.notify_all();
        }
    }

    /// Documents sent to `chat`: (file name, bytes).
    pub fn documents(&self, chat: i64) -> Vec<(String, Vec<u8>)> {
        self.state
            .0
            .lock()
            .unwrap()
            .documents
            .get(&chat)
            .cloned()
            .unwrap_or_default()
    }

    /// Answer the next call of `method` with `fault`.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.state
            .0
            .lock()
            .unwrap()
            .faults
            .push_back((method.to_string(), fault));
    }

    /// Know `sendMessageDraft`, as the current Bot API does (off by default, like a
    /// local Bot API server from before drafts, so the fallback runs everywhere else).
    pub fn enable_drafts(&self) {
        self.state.0.lock().unwrap().drafts = true;
    }

    /// Give the bot more active usernames (collectible ones, bought on Fragment), as
    /// `getMe` lists them since Bot API 10.5.
    pub fn add_usernames(&self, names: &[&str]) {
        let mut st = self.state.0.lock().unwrap();
        st.more_usernames.extend(names.iter().map(|n| n.to_string()));
    }

    /// Know rich messages, as the Bot API does since 10.1 (off by default, like a local
    /// Bot API server from before them).
    pub fn enable_rich_messages(&self) {
        self.state.0.lock().unwrap().rich = true;
    }

    /// The draft a chat shows now, if any: (draft id, text).
    pub fn draft(&self, chat: i64) -> Option<(i64, String)> {
        self.state.0.lock().unwrap().draft_now.get(&chat).cloned()
    }

    /// Answer `getUpdates` at once even when there is nothing (as emulators do).
    pub fn answer_empty_at_once(&self, on: bool) {
        self.state.0.lock().unwrap().empty_at_once = on;
    }

    /// Make `sendChatAction` unknown (404), as some Bot API servers are.
    pub fn without_chat_action(&self) {
        self.state.0.lock().unwrap().no_chat_action = true;
    }

    /// The messages in `chat`, oldest first.
    pub fn messages(&self, chat: i64) -> Vec<Msg> {
        self.state
            .0
            .lock()
            .unwrap()
            .chats
            .get(&chat)
            .cloned()
            .unwrap_or_default()
    }

    /// Make file downloads wait (`true`), as a large file on a slow line does, until
    /// released (`false`; also when the server is dropped).
    pub fn hold_downloads(&self, hold: bool) {
        let (lock, cv) = &*self.state;
        // Also from `drop` after a failed test: never a second panic.
        lock.lock().unwrap_or_else(|e| e.into_inner()).hold_downloads = hold;
        cv.notify_all();
    }

    /// Wait until `n` file downloads were asked for (held ones included).
    pub fn wait_downloads(&self, n: usize, timeout: Duration) {
        let (lock, cv) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut s = lock.lock().unwrap();
        while s.downloads < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let asked = s.downloads;
                drop(s); // not poisoned for the servers' threads
                panic!("{asked} downloads asked for, not {n}");
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.0.lock().unwrap().calls.clone()
    }

    /// Calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method).collect()
    }

    /// Wait until `pred(messages of chat)` holds; panics with the messages on timeout.
    pub fn wait_chat(&self, chat: i64, timeout: Duration, pred: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages(chat);
            if pred(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!("chat {chat} never reached the expected state; messages: {m:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        // No server thread stays waiting on a download nobody will release.
        self.hold_downloads(false);
    }
}

fn handle(state: &Arc<(Mutex<State>, Condvar)>, token: &str, req: &Request) -> (u16, Value) {
    let Some(rest) = req.path.strip_prefix("/bot") else {
        return bad(404, "Not Found");
    };
    let Some((tok, method)) = rest.split_once('/') else {
        return bad(404, "Not Found");
    };
    let multipart = multipart(req);
    let body = match &multipart {
        // Recorded as JSON: the text fields, and each file's size.
        Some(parts) => Value::Object(
            parts
                .iter()
                .map(|p| match &p.filename {
                    Some(_) => (p.name.clone(), json!({"bytes": p.data.len()})),
                    None => (p.name.clone(), json!(String::from_utf8_lossy(&p.data))),
                })
                .collect(),
        ),
        None => req.json(),
    };
    let (lock, cv) = &**state;
    let mut s = lock.lock().unwrap();
    // Recorded on arrival (a long poll may take a while to answer); status set at the end.
    let index = s.calls.len();
    s.calls.push(Call {
        method: method.to_string(),
        body: body.clone(),
        at: Instant::now(),
        wall_us: crate::bench::now_us(),
        status: 0,
    });
    let result = if tok != token {
        bad(401, "Unauthorized")
    } else if let Some(pos) = s.faults.iter().position(|(m, f)| {
        m == method && (!matches!(f, Fault::BadEntities) || body["parse_mode"].is_string())
    }) {
        let (_, f) = s.faults.remove(pos).unwrap();
        match f {
            Fault::RetryAfter(n) => (
                429,
                json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {n}"), "parameters": {"retry_after": n}}),
            ),
            Fault::Internal => bad(500, "Internal Server Error"),
            Fault::BadGateway => (502, Value::Null),
            Fault::Conflict => bad(
                409,
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
            ),
            Fault::BadEntities => bad(
                400,
                "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
            ),
        }
    } else if let Some(chat) = body["chat_id"].as_i64().filter(|c| s.blocked.contains(c)) {
        match chat > 0 {
            true => bad(403, "Forbidden: bot was blocked by the user"),
            false => bad(403, "Forbidden: bot was kicked from the supergroup chat"),
        }
    } else if let Some(e) = migrated_chat(&s, &body, multipart.as_deref()) {
        e
    } else if let Some(e) = unknown_thread(&s, method, &body, multipart.as_deref()) {
        e
    } else {
        match method {
            // A `BotFullInfo`, as since Bot API 10.5: the bot's own settings left `User`.
            "getMe" => {
                let active: Vec<&str> = std::iter::once("test_bot")
                    .chain(s.more_usernames.iter().map(String::as_str))
                    .collect();
                ok(
                    json!({"id": 123456, "is_bot": true, "first_name": "Test Bot", "username": "test_bot",
                    "active_usernames": active, "can_join_groups": true,
                    "can_read_all_group_messages": false, "supports_inline_queries": false}),
                )
            }
            "getUpdates" => {
                let offset = body["offset"].as_i64().unwrap_or(0);
                let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(50));
                // The kinds asked for are kept for later calls, as on Telegram; the others
                // are never delivered.
                if let Some(kinds) = body["allowed_updates"].as_array() {
                    s.allowed_updates = kinds
                        .iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect();
                }
                // An offset confirms every update before it, as on Telegram.
                let allowed = s.allowed_updates.clone();
                let wanted = |u: &Value| {
                    let kind = u
                        .as_object()
                        .and_then(|o| o.keys().find(|k| *k != "update_id").cloned());
                    allowed.is_empty() || kind.is_some_and(|k| allowed.contains(&k))
                };
                s.updates
                    .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset && wanted(u));
                let deadline = Instant::now() + timeout;
                while s.updates.is_empty() && !s.empty_at_once && Instant::now() < deadline {
                    s = cv.wait_timeout(s, deadline - Instant::now()).unwrap().0;
                    s.updates.retain(|u| wanted(u));
                }
                ok(Value::Array(s.updates.iter().take(100).cloned().collect()))
            }
            "sendRichMessage" if !s.rich => bad(404, "Not Found: method not found"),
            "sendRichMessage" => send_rich(&mut s, &body),
            "editMessageText" if s.rich && body.get("rich_message").is_some() => send_rich(&mut s, &body),
            "sendMessage" | "editMessageText" => send_or_edit(&mut s, method, &body),
            "answerCallbackQuery" => {
                let id = body["callback_query_id"].as_str().unwrap_or("");
                if s.open_callbacks.remove(id) {
                    ok(json!(true))
                } else {
                    bad(
                        400,
                        "Bad Request: query is too old and response timeout expired or query ID is invalid",
                    )
                }
            }
            "editMessageReplyMarkup" => {
                let chat = body["chat_id"].as_i64().unwrap_or(0);
                let id = body["message_id"].as_i64().unwrap_or(0);
                match keyboard_of(&body) {
                    Err(e) => e,
                    Ok(buttons) => match s
                        .chats
                        .get_mut(&chat)
                        .and_then(|c| c.iter_mut().find(|m| m.id == id))
                    {
                        None => bad(400, "Bad Request: message to edit not found"),
                        Some(m) if m.buttons == buttons => bad(
                            400,
                            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                        ),
                        Some(m) => {
                            m.buttons = buttons;
                            ok(json!({"message_id": id, "chat": {"id": chat}}))
                        }
                    },
                }
            }
            "getFile" => match s.files.get(body["file_id"].as_str().unwrap_or("")) {
                None => bad(400, "Bad Request: invalid file_id"),
                Some((_, bytes)) if bytes.len() > 20 << 20 => bad(400, "Bad Request: file is too big"),
                Some((path, bytes)) => ok(json!({
                    "file_id": body["file_id"],
                    "file_unique_id": "u",
                    "file_size": bytes.len(),
                    "file_path": path,
                })),
            },
            "sendPhoto" => send_photo(&mut s, multipart.as_deref().unwrap_or(&[])),
            "sendDocument" => send_document(&mut s, multipart.as_deref().unwrap_or(&[])),
            "sendVoice" => send_voice(&mut s, multipart.as_deref().unwrap_or(&[])),
            "sendChatAction" if s.no_chat_action => bad(404, "Not Found: method not found"),
            "sendChatAction" => match body["action"].as_str() {
                Some(
                    "typing" | "upload_photo" | "record_video" | "upload_video" | "record_voice"
                    | "upload_voice" | "upload_document" | "choose_sticker" | "find_location"
                    | "record_video_note" | "upload_video_note",
                ) => ok(json!(true)),
                _ => bad(400, "Bad Request: wrong parameter action in request"),
            },
            "sendRichMessageDraft" if !s.drafts || !s.rich => bad(404, "Not Found: method not found"),
            "sendRichMessageDraft" => {
                let chat = body["chat_id"].as_i64().unwrap_or(0);
                let id = body["draft_id"].as_i64().unwrap_or(0);
                if chat <= 0 {
                    bad(
                        400,
                        "Bad Request: sendRichMessageDraft can be used only in private chats",
                    )
                } else if id == 0 {
                    bad(400, "Bad Request: draft_id must be non-zero")
                } else {
                    match rich_source(&body) {
                        Ok(text) => {
                            s.draft_now.insert(chat, (id, text));
                            ok(json!(true))
                        }
                        Err(e) => e,
                    }
                }
            }
            "sendMessageDraft" if !s.drafts => bad(404, "Not Found: method not found"),
            "sendMessageDraft" => {
                let chat = body["chat_id"].as_i64().unwrap_or(0);
                let id = body["draft_id"].as_i64().unwrap_or(0);
                let text = body["text"].as_str().unwrap_or("").to_string();
                let html = body["parse_mode"] == "HTML";
                let visible = if html { visible_html(&text) } else { text.clone() };
                if chat <= 0 {
                    bad(
                        400,
                        "Bad Request: sendMessageDraft can be used only in private chats",
                    )
                } else if id == 0 {
                    bad(400, "Bad Request: draft_id must be non-zero")
                } else if let Some(e) = html.then(|| html_error(&text)).flatten() {
                    bad(400, &e)
                } else if visible.chars().count() > 4096 {
                    bad(400, "Bad Request: text is too long")
                } else {
                    s.draft_now.insert(chat, (id, visible));
                    ok(json!(true))
                }
            }
            "setMyCommands" => match body["commands"].as_array() {
                Some(c)
                    if c.iter()
                        .all(|c| c["command"].is_string() && c["description"].is_string()) =>
                {
                    // As Telegram checks them: 1-32 lowercase letters, digits and `_`; a
                    // description of 1-256 characters; 100 commands at most.
                    let command_fits = |c: &Value| {
                        let command = c["command"].as_str().unwrap_or("");
                        (1..=32).contains(&command.len())
                            && command
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    };
                    let described = |c: &Value| {
                        (1..=256).contains(&c["description"].as_str().unwrap_or("").chars().count())
                    };
                    let cap = s.menu_cap.unwrap_or(100);
                    if c.len() > cap {
                        bad(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
                    } else if !c.iter().all(command_fits) {
                        bad(400, "Bad Request: BOT_COMMAND_INVALID")
                    } else if !c.iter().all(described) {
                        bad(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
                    } else {
                        ok(json!(true))
                    }
                }
                _ => bad(400, "Bad Request: commands must be an array of BotCommand"),
            },
            _ => bad(404, "Not Found: method not found"),
        }
    };
    s.calls[index].status = result.0;
    result
}

/// A call for a group that became a supergroup is refused with the new id, as Telegram
/// refuses it.
fn migrated_chat(s: &State, body: &Value, parts: Option<&[FormPart]>) -> Option<(u16, Value)> {
    let from_form = || {
        let p = parts?.iter().find(|p| p.name == "chat_id")?;
        String::from_utf8_lossy(&p.data).parse::<i64>().ok()
    };
    let chat = body["chat_id"].as_i64().or_else(from_form)?;
    let new = s.migrated.get(&chat)?;
    Some((
        400,
        json!({"ok": false, "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": new}}),
    ))
}

/// A message sent to a topic that does not exist is refused, as Telegram refuses it.
fn unknown_thread(s: &State, method: &str, body: &Value, parts: Option<&[FormPart]>) -> Option<(u16, Value)> {
    if !matches!(
        method,
        "sendMessage"
            | "sendRichMessage"
            | "sendPhoto"
            | "sendDocument"
            | "sendChatAction"
            | "sendMessageDraft"
            | "sendRichMessageDraft"
    ) {
        return None;
    }
    let field = |n: &str| {
        let p = parts?.iter().find(|p| p.name == n)?;
        String::from_utf8_lossy(&p.data).parse::<i64>().ok()
    };
    let chat = body["chat_id"].as_i64().or_else(|| field("chat_id"))?;
    let thread = body["message_thread_id"]
        .as_i64()
        .or_else(|| field("message_thread_id"))?;
    (!s.topics.contains(&(chat, thread))).then(|| bad(400, "Bad Request: message thread not found"))
}

fn send_or_edit(s: &mut State, method: &str, body: &Value) -> (u16, Value) {
    let Some(chat) = body["chat_id"].as_i64() else {
        return bad(400, "Bad Request: chat_id is empty");
    };
    let text = body["text"].as_str().unwrap_or("").to_string();
    let parse_mode = body["parse_mode"].as_str().map(str::to_string);
    if text.trim().is_empty() {
        return bad(400, "Bad Request: message text is empty");
    }
    let visible = if parse_mode.as_deref() == Some("HTML") {
        if let Some(e) = html_error(&text) {
            return bad(400, &e);
        }
        visible_html(&text)
    } else {
        text.clone()
    };
    if visible.chars().count() > 4096 {
        return bad(400, "Bad Request: message is too long");
    }
    let buttons = match keyboard_of(body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if method == "sendMessage" {
        s.draft_now.remove(&chat);
        let id = s.next_message;
        s.next_message += 1;
        s.chats.entry(chat).or_default().push(Msg {
            id,
            text: text.clone(),
            parse_mode,
            edits: 0,
            thread: body["message_thread_id"].as_i64(),
            rich: false,
            buttons,
        });
        return ok(json!({"message_id": id, "date": 1_700_000_000, "chat": {"id": chat}, "text": visible}));
    }
    edit(
        s,
        chat,
        body,
        (text, parse_mode, false, buttons),
        ("text", json!(visible)),
    )
}

/// Edit message `body.message_id` of `chat` to show `text` (with `parse_mode`, or `rich`);
/// the answer's message has the field `shown`.
fn edit(
    s: &mut State,
    chat: i64,
    body: &Value,
    (text, parse_mode, rich, buttons): (String, Option<String>, bool, Keyboard),
    shown: (&str, Value),
) -> (u16, Value) {
    let Some(id) = body["message_id"].as_i64() else {
        return bad(400, "Bad Request: message_id is empty");
    };
    let Some(m) = s
        .chats
        .get_mut(&chat)
        .and_then(|c| c.iter_mut().find(|m| m.id == id))
    else {
        return bad(400, "Bad Request: message to edit not found");
    };
    // An edit without a keyboard removes the message's, as on Telegram.
    if (&m.text, &m.parse_mode, m.rich, &m.buttons) == (&text, &parse_mode, rich, &buttons) {
        return bad(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        );
    }
    m.text = text;
    m.parse_mode = parse_mode;
    m.rich = rich;
    m.buttons = buttons;
    m.edits += 1;
    let mut answer = json!({"message_id": id, "chat": {"id": chat}});
    answer[shown.0] = shown.1;
    ok(answer)
}

/// The columns of the widest table of rich Markdown (its delimiter rows: `|---|:-:|`).
fn widest_table(md: &str) -> usize {
    md.lines()
        .map(str::trim)
        .filter(|l| l.contains('|') && l.contains('-') && l.chars().all(|c| "|-: ".contains(c)))
        .map(|l| l.trim_matches('|').split('|').count())
        .max()
        .unwrap_or(0)
}

/// `sendRichMessage`, or `editMessageText` with `rich_message`.
fn send_rich(s: &mut State, body: &Value) -> (u16, Value) {
    let Some(chat) = body["chat_id"].as_i64() else {
        return bad(400, "Bad Request: chat_id is empty");
    };
    let text = match rich_source(body) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let buttons = match keyboard_of(body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if body.get("message_id").is_none() {
        s.draft_now.remove(&chat);
        let id = s.next_message;
        s.next_message += 1;
        s.chats.entry(chat).or_default().push(Msg {
            id,
            text,
            parse_mode: None,
            edits: 0,
            thread: body["message_thread_id"].as_i64(),
            rich: true,
            buttons,
        });
        return ok(
            json!({"message_id": id, "date": 1_700_000_000, "chat": {"id": chat}, "rich_message": {"blocks": []}}),
        );
    }
    edit(
        s,
        chat,
        body,
        (text, None, true, buttons),
        ("rich_message", json!({"blocks": []})),
    )
}

/// A request's inline keyboard (`reply_markup.inline_keyboard`), checked as Telegram checks
/// it: rows of buttons, each with a text and 1-64 bytes of `callback_data`; none: empty.
fn keyboard_of(body: &Value) -> Result<Keyboard, (u16, Value)> {
    let Some(markup) = body.get("reply_markup") else {
        return Ok(Vec::new());
    };
    let Some(rows) = markup["inline_keyboard"].as_array() else {
        return Err(bad(
            400,
            "Bad Request: can't parse reply keyboard markup JSON object",
        ));
    };
    rows.iter()
        .map(|row| {
            row.as_array()
                .ok_or_else(|| bad(400, "Bad Request: can't parse inline keyboard button: row is not an array"))?
                .iter()
                .map(|b| match (b["text"].as_str(), b["callback_data"].as_str()) {
                    (Some(""), _) => Err(bad(400, "Bad Request: text buttons are unallowed in the inline keyboard")),
                    (Some(t), Some(d)) if (1..=64).contains(&d.len()) => Ok((t.to_string(), d.to_string())),
                    (Some(_), Some(_)) => Err(bad(400, "Bad Request: BUTTON_DATA_INVALID")),
                    _ => Err(bad(400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")),
                })
                .collect()
        })
        .collect()
}

/// The source of a request's `rich_message`, checked as Telegram checks it (a message
/// and a draft alike), or the refusal.
fn rich_source(body: &Value) -> Result<String, (u16, Value)> {
    let rich = &body["rich_message"];
    let source = match (rich["markdown"].as_str(), rich["html"].as_str()) {
        (Some(md), None) => md,
        (None, Some(html)) => html,
        _ => {
            return Err(bad(
                400,
                "Bad Request: exactly one of html and markdown must be specified",
            ))
        }
    };
    if source.trim().is_empty() {
        return Err(bad(400, "Bad Request: message text is empty"));
    }
    if source.chars().count() > 32_768 {
        return Err(bad(400, "Bad Request: rich message is too long"));
    }
    if widest_table(source) > 20 {
        return Err(bad(400, "Bad Request: too many table columns"));
    }
    Ok(source.to_string())
}

/// Whether `b` starts like a JPEG, PNG, GIF or WebP file.
fn is_image(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8, 0xFF])
        || b.starts_with(b"\x89PNG\r\n\x1a\n")
        || b.starts_with(b"GIF8")
        || (b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP")
}

/// The chat and the file part `field` of an upload (`sendPhoto`, `sendDocument`), or
/// Telegram's answer when either is missing.
fn upload<'a>(parts: &'a [FormPart], field: &str) -> Result<(i64, &'a FormPart), (u16, Value)> {
    let part = |n: &str| parts.iter().find(|p| p.name == n);
    let Some(chat) = part("chat_id").and_then(|p| String::from_utf8_lossy(&p.data).parse::<i64>().ok())
    else {
        return Err(bad(400, "Bad Request: chat_id is empty"));
    };
    match part(field).filter(|p| p.filename.is_some()) {
        Some(file) => Ok((chat, file)),
        None => Err(bad(
            400,
            &format!("Bad Request: there is no {field} in the request"),
        )),
    }
}

/// A new message id for an upload to `chat`, which ends the chat's draft.
fn next_upload(s: &mut State, chat: i64) -> i64 {
    s.draft_now.remove(&chat);
    s.next_message += 1;
    s.next_message - 1
}

fn send_photo(s: &mut State, parts: &[FormPart]) -> (u16, Value) {
    let (chat, photo) = match upload(parts, "photo") {
        Ok(u) => u,
        Err(answer) => return answer,
    };
    if photo.data.len() > 10 << 20 {
        return bad(400, "Bad Request: PHOTO_INVALID_DIMENSIONS");
    }
    if !is_image(&photo.data) {
        return bad(400, "Bad Request: IMAGE_PROCESS_FAILED");
    }
    let id = next_upload(s, chat);
    s.photos
        .entry(chat)
        .or_default()
        .push((photo.content_type.clone().unwrap_or_default(), photo.data.clone()));
    ok(
        json!({"message_id": id, "date": 1_700_000_000, "chat": {"id": chat},
        "photo": [{"file_id": format!("sent{id}"), "file_unique_id": "s", "width": 90, "height": 90, "file_size": photo.data.len()}]}),
    )
}

fn send_document(s: &mut State, parts: &[FormPart]) -> (u16, Value) {
    let (chat, doc) = match upload(parts, "document") {
        Ok(u) => u,
        Err(answer) => return answer,
    };
    if doc.data.len() > 50 << 20 {
        return bad(413, "Request Entity Too Large");
    }
    if doc.data.is_empty() {
        return bad(400, "Bad Request: file must be non-empty");
    }
    let id = next_upload(s, chat);
    let name = doc.filename.clone().unwrap_or_default();
    s.documents
        .entry(chat)
        .or_default()
        .push((name.clone(), doc.data.clone()));
    ok(
        json!({"message_id": id, "date": 1_700_000_000, "chat": {"id": chat},
        "document": {"file_id": format!("sent{id}"), "file_unique_id": "d", "file_name": name, "file_size": doc.data.len()}}),
    )
}

fn send_voice(s: &mut State, parts: &[FormPart]) -> (u16, Value) {
    let (chat, voice) = match upload(parts, "voice") {
        Ok(u) => u,
        Err(answer) => return answer,
    };
    if s.no_voice.contains(&chat) {
        return bad(400, "Bad Request: VOICE_MESSAGES_FORBIDDEN");
    }
    if voice.data.is_empty() {
        return bad(400, "Bad Request: file must be non-empty");
    }
    let id = next_upload(s, chat);
    s.voices
        .entry(chat)
        .or_default()
        .push((voice.content_type.clone().unwrap_or_default(), voice.data.clone()));
    ok(
        json!({"message_id": id, "date": 1_700_000_000, "chat": {"id": chat},
        "voice": {"file_id": format!("sent{id}"), "file_unique_id": "v", "duration": 1, "mime_type": "audio/ogg", "file_size": voice.data.len()}}),
    )
}

/// `GET /file/bot<token>/<file_path>`: the file's bytes.
fn download(state: &Arc<(Mutex<State>, Condvar)>, token: &str, rest: &str, resp: Responder) {
    let Some((tok, path)) = rest.split_once('/') else {
        return resp.json(
            404,
            &json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        );
    };
    if tok != token {
        return resp.json(
            401,
            &json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        );
    }
    let (lock, cv) = &**state;
    let mut s = lock.lock().unwrap();
    s.downloads += 1;
    cv.notify_all();
    while s.hold_downloads {
        s = cv.wait(s).unwrap();
    }
    match s.files.values().find(|(p, _)| p == path) {
        Some((_, bytes)) => {
            let bytes = bytes.clone();
            drop(s);
            resp.send(200, &[("Content-Type", "application/octet-stream")], &bytes);
        }
        None => resp.json(
            404,
            &json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ),
    }
}
