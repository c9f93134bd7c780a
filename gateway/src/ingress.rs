//! What a message to the bot becomes: a `user.message` frame posted to the instance
//! (with its images, files and recording fetched from Telegram), a `control.cancel`, a
//! bot command answered here, or a shell command in `/exec` mode.
//!
//! In groups the bot answers only what is addressed to it: a message mentioning
//! `@username` (any of the bot's active usernames, learned with `getMe`, and removed from
//! the text), a reply to one of its messages, or a command addressed to it
//! (`/new@username`), unless `group_mode` is `all`. The frame's `msg_id` is derived from
//! the Telegram message (`tg-{chat}-{message_id}`, and `...-edit-{edit_date}` for each
//! edited version), so a message handled again after a crash is recognised downstream.
//! An edited message is passed on again, marked as an edit; if it is the last its chat
//! passed on, the reply to its old words is cancelled first. While the instance wakes
//! (503), the post is retried with backoff; after that the user is told the agent is
//! unavailable.

use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use tether::frame::{kind, Audio, Cancel, Image, Session, User, UserMessage};
use tether::{AegisClient, Frame};

use crate::bot::Event;
use crate::config::BotConfig;
use crate::journal::Journal;
use crate::render::Action;
use crate::state::Change;
use crate::telegram::{GenerationStopped, Message, Telegram, Update};
use crate::workspace::InstanceWorkspace;

/// Characters of a replied-to message put before the reply.
const MAX_QUOTE: usize = 500;
/// Attempts to deliver one message while the instance is unavailable (about a minute).
const DELIVERY_ATTEMPTS: u32 = 7;

/// Text shown when the instance cannot be reached.
pub const UNAVAILABLE: &str = "⚠️ The agent is unavailable right now. Please try again in a moment.";

/// The answer to `/start`.
pub const GREETING: &str = "👋 Hi! I'm an AI agent. Send me a message and I'll answer. /new starts a fresh conversation, /stop stops a reply in progress.";

/// What the model reads before the text of an edited message.
pub const EDITED: &str = "[edited message: it replaces its earlier version]";

/// The text of a message that is only an image.
const IMAGE_TEXT: &str = "[image]";
/// The text of a message that is only a file (replaced by the file's text or note).
const FILE_TEXT: &str = "[file]";

/// Everything handling a message needs; shared by the chats' threads.
pub struct Ingress {
    /// This bot's settings.
    pub bot: BotConfig,
    /// Bot API client.
    pub tg: Telegram,
    /// aegisd client.
    pub aegis: AegisClient,
    /// To the renderer (typing starts with a user message).
    pub events: Sender<Event>,
    /// To the Telegram sender (notices).
    pub actions: Sender<Action>,
    /// The bot's usernames, lowercased, once `getMe` answered: its `username` first, then
    /// the other active ones (collectible usernames, Bot API 10.5 `active_usernames`).
    pub usernames: OnceLock<Vec<String>>,
    /// Who runs shell commands instead of talking to the agent (`/exec`).
    pub exec: crate::exec::ExecMode,
    /// The instance's workspace on this host (files sent to the bot are saved there).
    pub workspace: Arc<InstanceWorkspace>,
    /// The words of the bot's command menu: in a group, a bare `/word` of it is the bot's.
    pub menu_words: crate::menu::Words,
}

/// What handling a message left to do once it is marked handled.
#[derive(Default)]
struct Handled {
    /// Saved with the mark.
    change: Option<Change>,
    /// Started after the mark is saved.
    command: Option<crate::exec::Command>,
}

impl Handled {
    fn change(change: Option<Change>) -> Handled {
        Handled {
            change,
            command: None,
        }
    }
}

/// What a message (or an album) brings, read before anything is fetched.
struct Incoming<'a> {
    /// The first message (an album's caption may be on another).
    m: &'a Message,
    album: &'a [&'a Message],
    /// Bytes each image may have: an album's images share the tether line.
    cap: u64,
    /// Images to fetch (file id, media type), or the size of one too large.
    picked: Vec<Result<(String, String), u64>>,
    files: Vec<crate::documents::Attached>,
    recording: Option<crate::voice::Recorded>,
    /// The recording's label, or why it is left out.
    recording_text: Option<String>,
}

impl<'a> Incoming<'a> {
    /// What `album` brings, and its text (a caption, or what stands in for the missing
    /// words); `None` for a message with nothing to pass on.
    fn read(album: &'a [&'a Message]) -> Option<(Incoming<'a>, String)> {
        let m = *album.first()?;
        let cap = crate::images::MAX_IMAGE_IN / album.len() as u64;
        // An image sent as a file too large for the line is saved into the workspace
        // instead (below), where the agent's `read_file` can show it.
        let picked: Vec<_> = album
            .iter()
            .filter_map(|a| match crate::images::pick(a, cap) {
                Some(Err(_)) if a.photo.is_empty() => None,
                picked => picked,
            })
            .collect();
        // Files sent together arrive as an album too.
        let files: Vec<_> = album
            .iter()
            .filter_map(|a| crate::documents::attached(a, cap))
            .collect();
        let recording = crate::voice::recorded(m).filter(|_| album.len() == 1);
        let recording_text = recording.as_ref().map(|r| match r {
            crate::voice::Recorded::Pass(s) => s.label.clone(),
            crate::voice::Recorded::LeftOut(note) => note.clone(),
        });
        let aside = crate::annotate::shared(m).or_else(|| crate::annotate::wordless(m));
        let text = album
            .iter()
            .find_map(|a| {
                let t = a.text.as_deref().or(a.caption.as_deref())?.trim();
                (!t.is_empty()).then_some(t)
            })
            .or((!picked.is_empty()).then_some(IMAGE_TEXT))
            .or((!files.is_empty()).then_some(FILE_TEXT))
            .or(recording_text.as_deref())
            .or(aside.as_deref())?
            .to_string();
        let incoming = Incoming {
            m,
            album,
            cap,
            picked,
            files,
            recording,
            recording_text,
        };
        Some((incoming, text))
    }
}

impl Ingress {
    /// Whether `chat` is answered: `allowed_chats` names it, or the group it was before it
    /// became a supergroup.
    fn allows(&self, chat: i64, st: &crate::state::PollState) -> bool {
        self.bot.allows(chat) || st.migrated.get(&chat).is_some_and(|old| self.bot.allows(*old))
    }

    /// Whether this bot sent `m` (its id is the token's prefix).
    fn by_bot(&self, m: &Message) -> bool {
        let bot_id: i64 = self.tg.bot_id().parse().unwrap_or(0);
        m.from.as_ref().is_some_and(|u| u.id == bot_id)
    }

    /// In a group, whether `m` is for this bot, and its text without the mention.
    fn addressed(&self, m: &Message, text: &str) -> Option<String> {
        if !m.chat.is_group() || self.bot.group_all {
            return Some(text.to_string());
        }
        let reply_to_bot = m.reply_to_message.as_deref().is_some_and(|r| self.by_bot(r));
        let names = self.usernames.get().map_or(&[][..], Vec::as_slice);
        let mentioned = names
            .iter()
            .any(|u| !mention_at(text, &format!("@{u}")).is_empty());
        // A command of the bot's menu without `@bot`, as Telegram sends one picked from
        // the menu in a group where the bot is the only one: the bot's. (`/new@other_bot`
        // is the other bot's.)
        let first = text.split_whitespace().next().unwrap_or("");
        let bare_command =
            m.forward_origin.is_none() && first.strip_prefix('/').is_some_and(|w| self.menu_words.has(w));
        if !reply_to_bot && !mentioned && !bare_command {
            return None;
        }
        Some(strip_mentions(text, names))
    }

    /// Whether `m` asks to stop the reply running now (`/stop`, `/cancel`, `@bot /stop` in
    /// a group): it must not wait behind what its chat has queued (a file still
    /// downloading), which it does not mean. Whether it may stop anything is for `take`.
    pub fn stops(&self, m: &Message) -> bool {
        m.edit_date.is_none() && stops(m, self.usernames.get().map_or(&[][..], Vec::as_slice))
    }

    /// Handle `unit` (updates handled as one) and mark it handled in `journal`, with what
    /// it changed; a command starts only once that is saved, so it runs at most once,
    /// where a message to the agent is delivered at least once (and de-duplicated there).
    pub fn take(&self, unit: &[Update], journal: &Journal) {
        let Some(first) = unit.first() else {
            return;
        };
        if let Some(tap) = &first.callback_query {
            // Before the answer goes on: the user's app stops waiting at once (even while
            // a stopped instance wakes), and the buttons are gone before any reply to the
            // answer can show, so nobody taps a second answer under a question answered.
            self.tapped(tap, first.message.is_some());
        }
        if let Some(change) = &first.my_chat_member {
            self.tg.membership_changed(change);
        }
        let album: Vec<&Message> = unit.iter().filter_map(|u| u.message.as_ref()).collect();
        // Whatever a chat sends (a user pressing Start after unblocking the bot, a group's
        // note that the bot joined again) says it is reachable.
        if let Some(m) = album.first() {
            self.tg.chat_back(m.chat.id);
        }
        let handled = match &first.stopped_message_generation {
            Some(stop) => self.stop_pressed(stop, journal),
            None => self.handle(&album, first.update_id, journal),
        };
        let saved = journal.done(first.update_id, handled.change, handled.command.is_some());
        if let Err(e) = &saved {
            log::error!("cannot save {}: {e}", journal.path().display());
        }
        if let Some(c) = handled.command {
            match saved {
                Ok(()) => {
                    let (aegis, instance) = (self.aegis.clone(), self.bot.instance.clone());
                    self.exec.run(aegis, instance, c, self.actions.clone());
                }
                Err(e) => self.notice(
                    (c.chat, c.topic),
                    &format!("⚠️ Not run: the gateway cannot save its state ({e}), so it could not make sure the command runs only once."),
                ),
            }
        }
    }

    /// After a tap on a button: the user's app stops waiting, and a question's answers go
    /// once one was picked (it was passed on as the user's message, `answered`), so the
    /// question is answered once.
    fn tapped(&self, tap: &crate::telegram::CallbackQuery, answered: bool) {
        let mut body = serde_json::json!({"callback_query_id": tap.id});
        if tap.for_someone_else() {
            // Shown to the one who tapped, briefly, as Telegram shows such answers.
            body["text"] = serde_json::json!("This question is for the person it asks.");
        }
        if let Err(e) = self.tg.call("answerCallbackQuery", &body) {
            log::debug!("answerCallbackQuery failed: {e}");
        }
        let Some((chat, message_id)) = tap.question().filter(|_| answered) else {
            return;
        };
        let body = serde_json::json!({"chat_id": chat, "message_id": message_id, "reply_markup": {"inline_keyboard": []}});
        if let Err(e) = self.tg.call("editMessageReplyMarkup", &body) {
            log::debug!("chat {chat}: removing the answers of message {message_id} failed: {e}");
        }
    }

    /// `unit` was given up: `tries` runs of the gateway began handling it and none lived
    /// through it. Its chat is told, so the user can send it again.
    pub fn given_up(&self, unit: &[Update], tries: u32, journal: &Journal) {
        let Some(m) = unit.iter().find_map(|u| u.message.as_ref()) else {
            return;
        };
        let chat = m.chat.id;
        log::error!(
            "chat {chat}: giving up message {}: the gateway stopped while handling it {} times",
            m.message_id,
            tries - 1
        );
        if journal.read(|st| self.allows(chat, st)) {
            self.notice(
                (chat, m.topic()),
                "⚠️ A message you sent could not be handled: the gateway stopped each time it tried. Please send it again, perhaps in another form.",
            );
        }
    }

    /// The stop button of a reply's draft: cancel that very reply, named by the draft's id,
    /// which is the id of the message it answers (`render.rs`), even if another has begun.
    fn stop_pressed(&self, stop: &GenerationStopped, journal: &Journal) -> Handled {
        let (chat, answered) = (stop.chat.id, stop.draft_id);
        let at = (chat, stop.message_thread_id);
        let (allowed, session_id) = journal.read(|st| (self.allows(chat, st), st.session_id(chat, at.1)));
        if !allowed {
            return Handled::default();
        }
        log::info!("chat {chat}: the stop button of the reply to message {answered} was pressed");
        let latest = Self::latest_of(journal, at, answered);
        let target = Cancel {
            msg_id: Some(latest.unwrap_or_else(|| crate::render::msg_id_of(chat, answered))),
        };
        let cancel = Frame::new(kind::CONTROL_CANCEL, Some(Session::new("telegram", session_id)))
            .with_payload(&target)
            .with_msg_id(format!("tg-{chat}-stop-{answered}"));
        self.deliver(at, &cancel);
        Handled::default()
    }

    /// Deliver the message (or answer it); a command of a user in exec mode is returned
    /// instead, to be started once the message is marked handled.
    ///
    /// `album` is one message, or the messages of an album (photos sent together, which
    /// Telegram delivers one by one): they reach the agent as one message with all its
    /// images and its caption, answered once. `update` (the first update's id) names it
    /// for `rate_limit`'s count.
    fn handle(&self, album: &[&Message], update: i64, journal: &Journal) -> Handled {
        let Some(&m) = album.first() else {
            return Handled::default();
        };
        let chat = m.chat.id;
        // Answers go where the message was: its chat, and its topic there.
        let at = (chat, m.topic());
        if let Some((old, new)) = m.migration() {
            return Handled::change(self.migrated(journal, old, new));
        }
        let Some((incoming, text)) = Incoming::read(album) else {
            log::debug!("chat {chat}: ignoring a message without text");
            return Handled::default();
        };
        let user_id = m.sender().map_or(chat, |u| u.id);
        let (allowed, session_id, in_exec) = journal.read(|st| {
            (
                self.allows(chat, st),
                st.session_id(chat, m.topic()),
                st.exec.contains(&(chat, user_id)),
            )
        });
        if !allowed {
            log::info!("ignoring message from chat {chat} (not in allowed_chats)");
            return Handled::default();
        }
        let Some(text) = self.addressed(m, &text) else {
            log::debug!("chat {chat}: group message not addressed to the bot; ignored");
            return Handled::default();
        };
        let text = text.as_str();
        if text.is_empty() {
            return Handled::default();
        }
        let session = Session::new("telegram", session_id);
        let command = command_word(m, text);
        let msg_id = match m.edit_date {
            Some(date) => crate::render::msg_id_of_edit(chat, m.message_id, date),
            None => crate::render::msg_id_of(chat, m.message_id),
        };
        if m.edit_date.is_some() {
            // A command acts once, when sent; so does a line typed in exec mode.
            if !self.bot.answer_edits || command.starts_with('/') || in_exec {
                log::info!(
                    "chat {chat}: message {} was edited; not passed on again",
                    m.message_id
                );
                return Handled::default();
            }
        }
        let mut change = None;
        match command {
            "/exec" => {
                if self.bot.may_exec(user_id) {
                    log::info!("chat {chat}: user {user_id} entered exec mode");
                    self.notice(at, crate::exec::ENTER);
                    return Handled::change(Some(Change::EnterExec(chat, user_id)));
                }
                log::warn!("chat {chat}: user {user_id} asked for /exec (not in exec_users)");
                self.notice(at, crate::exec::REFUSED);
                return Handled::default();
            }
            "/exit" if in_exec => {
                self.notice(at, crate::exec::LEAVE);
                return Handled::change(Some(Change::LeaveExec(chat, user_id)));
            }
            // Exec mode runs what is typed (`/usr/bin/env` too); the bot's own commands keep
            // their meaning (`/usage`, `/skills`, `/mcp`, `/model`, `/tasks`, `/jobs` and `/memory` are the agent's).
            c if !matches!(
                c,
                "/stop"
                    | "/cancel"
                    | "/new"
                    | "/start"
                    | "/exit"
                    | "/usage"
                    | "/skills"
                    | "/mcp"
                    | "/model"
                    | "/tasks"
                    | "/jobs"
                    | "/memory"
            ) && m.text.is_some()
                && m.forward_origin.is_none()
                && in_exec =>
            {
                // The list may have changed under a running gateway's feet: ask again.
                if self.bot.may_exec(user_id) {
                    return Handled {
                        change: None,
                        command: Some(crate::exec::Command {
                            chat,
                            topic: m.topic(),
                            text: text.to_string(),
                            // Drafts exist in private chats only.
                            drafts: !m.chat.is_group()
                                && self.bot.stream_mode != crate::render::StreamMode::Edit,
                        }),
                    };
                }
                change = Some(Change::LeaveExec(chat, user_id));
            }
            "/stop" | "/cancel" => {
                let cancel = Frame::new(kind::CONTROL_CANCEL, Some(session))
                    .with_payload(&Cancel::default())
                    .with_msg_id(crate::render::msg_id_of(chat, m.message_id));
                self.deliver(at, &cancel);
                return Handled::default();
            }
            "/new" => {
                self.notice(at, "🆕 New conversation started.");
                return Handled::change(Some(Change::NewSession(chat, m.topic())));
            }
            "/start" => {
                self.notice(at, GREETING);
                return Handled::default();
            }
            _ => {}
        }
        // A tap answers a question a reply is waiting on: holding it back would hold the
        // reply.
        if !m.tapped && self.held_back(journal, m, user_id, update) {
            return Handled {
                change,
                command: None,
            };
        }
        // Only an edit that goes on stops the reply to its old words.
        if m.edit_date.is_some() {
            self.steer(journal, at, &session, m.message_id, &msg_id);
        }
        // Typing from now: fetching a large file takes a while on a slow line.
        let _ = self.events.send(Event::UserMessage(at.0, at.1));
        let id = m.message_id;
        match self.pass_on(incoming, at, (session, &msg_id), text) {
            // Kept with the message's handling (the same write): an edit after a restart
            // still finds it.
            Some(()) => journal.note(|st| st.passed(at.0, at.1, id, &msg_id)),
            None => {
                let _ = self.events.send(Event::Delivered(at.0, at.1));
            }
        }
        Handled {
            change,
            command: None,
        }
    }

    /// Fetch what the message brings (images, files, a recording) and deliver it to the
    /// instance as `text` in `session`, named `msg_id`; `None` when something could not be
    /// fetched (the chat at `at` was told).
    fn pass_on(
        &self,
        incoming: Incoming<'_>,
        at: (i64, Option<i64>),
        (session, msg_id): (Session, &str),
        text: &str,
    ) -> Option<()> {
        let Incoming {
            m,
            album,
            cap,
            mut picked,
            files,
            recording,
            recording_text,
        } = incoming;
        // What a reply answers is part of the question: "@bot what is this?" under a photo
        // or under someone's message means that photo, that message.
        let replied = m.replied_to();
        // A recording takes the line's room a replied-to photo would need.
        if picked.is_empty() && recording.is_none() {
            picked.extend(replied.and_then(|r| crate::images::pick(r, cap)));
        }
        let mut notes = Vec::new();
        for file in files {
            notes.push(match file {
                crate::documents::Attached::LeftOut(note) => note,
                crate::documents::Attached::Text(file_id, name) => {
                    let bytes = self.download(at, &file_id, crate::documents::MAX_TEXT_FILE, "file")?;
                    crate::documents::fenced(&name, &bytes).unwrap_or_else(|note| note)
                }
                crate::documents::Attached::Save(file) => self.save_file(at, &file),
            });
        }
        let file_text = (!notes.is_empty()).then(|| notes.join("\n\n"));
        let text = match file_text {
            Some(f) if text == FILE_TEXT => f,
            Some(f) => format!("{text}\n\n{f}"),
            None => text.to_string(),
        };
        // A caption goes first; the recording is named after it.
        let text = match recording_text {
            Some(r) if r != text => format!("{text}\n{r}"),
            _ => text,
        };
        let mut audio = Vec::new();
        let mut text = text;
        match recording {
            // Too large for the tether line: through the workspace, by path.
            Some(crate::voice::Recorded::Pass(s)) if s.by_file() => {
                match self.save_to_inbox(at, &s.file_name, &s.file_id, s.size) {
                    Ok(saved) => {
                        text = format!("{text}\n[saved in the workspace as {}]", saved.path);
                        audio.push(Audio {
                            media_type: s.media_type,
                            data: String::new(),
                            path: Some(saved.path),
                            duration: Some(s.duration).filter(|d| *d > 0),
                        });
                    }
                    Err(why) => {
                        text = format!(
                            "{text}\n[{} not passed on: {why}]",
                            &s.label[1..s.label.len() - 1]
                        );
                    }
                }
            }
            Some(crate::voice::Recorded::Pass(s)) => {
                let bytes = self.download(at, &s.file_id, crate::voice::MAX_RECORDING, "recording")?;
                audio.push(Audio {
                    media_type: s.media_type,
                    data: crate::images::encode(&bytes),
                    path: None,
                    duration: Some(s.duration).filter(|d| *d > 0),
                });
            }
            _ => {}
        }
        let text = match self.quoted(m, replied) {
            Some(q) => format!("{q}\n{text}"),
            None => text.to_string(),
        };
        // Someone else's words, which the user passes on.
        let text = match crate::annotate::forwarded(m) {
            Some(f) => format!("{f}\n{text}"),
            None => text,
        };
        let text = match m.edit_date {
            Some(_) => format!("{EDITED}\n{text}"),
            None => text,
        };
        let text = text.as_str();
        let user = m.sender().map(|u| User {
            id: Some(u.id.to_string()),
            username: u.username.clone(),
            name: Some(u.full_name()).filter(|n| !n.is_empty()),
        });
        let too_large: Vec<u64> = picked.iter().filter_map(|p| p.as_ref().err().copied()).collect();
        if let [size] = too_large[..] {
            if album.len() == 1 {
                self.notice(
                    at,
                    &format!(
                        "⚠️ This image is too large for the agent ({} KB; at most {} KB). Send it as a compressed photo.",
                        size / 1024,
                        cap / 1024
                    ),
                );
                return None;
            }
        }
        if !too_large.is_empty() {
            self.notice(
                at,
                &format!(
                    "⚠️ {} of these {} images are too large for the agent (at most {} KB each when {} are sent together); {}.",
                    too_large.len(),
                    album.len(),
                    cap / 1024,
                    album.len(),
                    if too_large.len() == picked.len() { "nothing was passed on" } else { "the others go on" }
                ),
            );
            if too_large.len() == picked.len() {
                return None;
            }
        }
        let mut images = Vec::new();
        for (file_id, media_type) in picked.into_iter().filter_map(Result::ok) {
            let bytes = self.download(at, &file_id, cap, "image")?;
            images.push(Image {
                media_type,
                blob: None,
                size: Some(bytes.len() as u64),
                data: Some(crate::images::encode(&bytes)),
            });
        }
        let payload = UserMessage {
            text: text.to_string(),
            user,
            images,
            audio,
            ..UserMessage::default()
        };
        let frame = Frame::new(kind::USER_MESSAGE, Some(session))
            .with_payload(&payload)
            .with_msg_id(msg_id);
        self.deliver(at, &frame);
        Some(())
    }

    /// The `msg_id` of the version of message `id` last passed on at `at`, if it is the
    /// last message passed on there.
    fn latest_of(journal: &Journal, at: (i64, Option<i64>), id: i64) -> Option<String> {
        journal.read(|st| st.last_passed(at.0, at.1, id))
    }

    /// Message `id`, edited into `edit` (its new `msg_id`), was the last passed on at `at`:
    /// the reply running or waiting for its words answers what the user has since changed,
    /// so it stops, and the edit is answered instead. (An earlier message's edit stops
    /// nothing: a later one's reply runs, and the edit is answered in its turn.)
    fn steer(&self, journal: &Journal, at: (i64, Option<i64>), session: &Session, id: i64, edit: &str) {
        let Some(running) = Self::latest_of(journal, at, id) else {
            return;
        };
        log::info!("chat {}: message {id} was edited; its reply stops", at.0);
        let cancel = Frame::new(kind::CONTROL_CANCEL, Some(session.clone()))
            .with_payload(&Cancel {
                msg_id: Some(running),
            })
            .with_msg_id(format!("{edit}-steer"));
        self.deliver(at, &cancel);
    }

    /// Save `file` into the instance's workspace: the note for the model, saying where or
    /// why not (a file Telegram would not give, or a disk too full, is the model's to
    /// explain, with the caption it came with).
    fn save_file(&self, at: (i64, Option<i64>), file: &crate::documents::ToSave) -> String {
        match self.save_to_inbox(at, &file.name, &file.file_id, file.size) {
            Ok(saved) => file.saved(&saved),
            Err(why) => file.not_saved(&why),
        }
    }

    /// Telegram's file `file_id` saved into the instance's inbox as `name` (or the next
    /// free name); why not, for the model, when it cannot be.
    fn save_to_inbox(
        &self,
        at: (i64, Option<i64>),
        name: &str,
        file_id: &str,
        size: Option<u64>,
    ) -> Result<crate::inbox::Saved, String> {
        let Some(ws) = self.workspace.get() else {
            return Err("the gateway does not know the instance's workspace".into());
        };
        let saved = crate::inbox::save(ws, name, size, self.bot.inbox_max, |out| {
            self.tg
                .download_to(file_id, crate::inbox::MAX_FILE, out)
                .map(drop)
                .map_err(|e| format!("Telegram would not give it ({e})"))
        });
        match saved {
            Ok(saved) => {
                log::info!(
                    "chat {}: file saved as {} ({} bytes)",
                    at.0,
                    saved.path,
                    saved.size
                );
                Ok(saved)
            }
            Err(e) => {
                log::warn!("chat {}: file {name} not saved: {e}", at.0);
                Err(e.to_string())
            }
        }
    }

    /// File `file_id` (an image or a file: `what`), at most `cap` bytes; `None` when it
    /// cannot be had, which the chat at `at` is told.
    fn download(&self, at: (i64, Option<i64>), file_id: &str, cap: u64, what: &str) -> Option<Vec<u8>> {
        match self.tg.download(file_id, cap) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::warn!("chat {}: cannot download {what} {file_id}: {e}", at.0);
                self.notice(
                    at,
                    &format!("⚠️ The {what} could not be fetched from Telegram ({e})."),
                );
                None
            }
        }
    }

    /// The message `m` replies to (`replied`, in this chat, or one of another chat), as a
    /// quote to put before `m`'s text: the part the user quoted, else the message's text
    /// or caption (at most `MAX_QUOTE` characters) or what it shares (a location, a
    /// poll...), with who wrote it (`you` for the bot itself); `None` when there is
    /// nothing to quote.
    fn quoted(&self, m: &Message, replied: Option<&Message>) -> Option<String> {
        let chosen = m.quote.as_ref().map(|q| q.text.trim()).filter(|q| !q.is_empty());
        let (who, text) = match (replied, &m.external_reply) {
            (Some(r), _) => {
                let who = match r.sender() {
                    _ if self.by_bot(r) => "you".to_string(),
                    Some(u) => u.full_name(),
                    None => "someone".to_string(),
                };
                let whole = r.text.as_deref().or(r.caption.as_deref()).map(str::trim);
                let text = match chosen.or(whole.filter(|t| !t.is_empty())) {
                    Some(t) => t.to_string(),
                    None => crate::annotate::shared(r)?,
                };
                (who, text)
            }
            // Another chat's message: its words come only as the part quoted.
            (None, Some(x)) => {
                let who = x
                    .origin
                    .as_ref()
                    .map(crate::annotate::origin_name)
                    .unwrap_or_default();
                let who = if who.is_empty() {
                    "someone".to_string()
                } else {
                    who
                };
                let text = chosen
                    .map(str::to_string)
                    .or_else(|| crate::annotate::shared(x))
                    .unwrap_or_else(|| "[a message the agent cannot see]".to_string());
                (format!("{who} (in another chat)"), text)
            }
            (None, None) => return None,
        };
        let mut shown: String = text.chars().take(MAX_QUOTE).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        Some(format!("> {who}: {}", shown.replace('\n', "\n> ")))
    }

    /// Group `old` became the supergroup `new` (Telegram does that when topics, a public
    /// link or many members are turned on): the supergroup is answered as the group was,
    /// and replies on their way to the group go to it. A new chat id is a new chat, so its
    /// conversation starts afresh (memories stay).
    fn migrated(&self, journal: &Journal, old: i64, new: i64) -> Option<Change> {
        if journal.read(|st| st.migrated.get(&new) == Some(&old)) {
            return None; // each migration is announced in both chats
        }
        self.tg.follow_migration(old, new);
        if self.bot.allows(old) && !self.bot.allows(new) {
            log::warn!(
                "group {old} became the supergroup {new}; answering it as allowed_chats allows {old} (add {new} to allowed_chats to say so in the config)"
            );
        } else {
            log::info!("group {old} became the supergroup {new}");
        }
        Some(Change::Migrated { old, new })
    }

    /// Whether `rate_limit` holds back message `m` of `user` (update `update`): then it
    /// goes no further, and its sender is told the first time.
    fn held_back(&self, journal: &Journal, m: &Message, user: i64, update: i64) -> bool {
        let now = crate::rate::now();
        let verdict = journal.note(|st| self.bot.rate.admit(&mut st.rates, user, update, now));
        let crate::rate::Verdict::Refuse { rule, wait, tell } = verdict else {
            return false;
        };
        let chat = m.chat.id;
        log::info!(
            "chat {chat}: message {} of user {user} not passed on: {} messages in {} min, the rate_limit ({wait} s to wait)",
            m.message_id,
            rule.messages,
            rule.minutes
        );
        if tell {
            let sender = m.sender().filter(|_| m.chat.is_group());
            let name = sender
                .as_ref()
                .map(|u| u.first_name.as_str())
                .filter(|n| !n.is_empty());
            self.notice((chat, m.topic()), &crate::rate::refusal(rule, wait, name));
        }
        true
    }

    /// A message of the gateway's own at `at` (chat, topic).
    fn notice(&self, at: (i64, Option<i64>), text: &str) {
        let _ = self
            .actions
            .send(Action::notice(at.0, at.1, text.to_string(), None));
    }

    /// Post `frame`, from a message at `at` (chat, topic), to the instance.
    fn deliver(&self, at: (i64, Option<i64>), frame: &Frame) {
        let chat = at.0;
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=DELIVERY_ATTEMPTS {
            match self.aegis.post_frame(&self.bot.instance, frame) {
                Ok(()) => return,
                Err(e) if e.is_transient() && attempt < DELIVERY_ATTEMPTS => {
                    log::warn!(
                        "chat {chat}: delivery to {} failed ({e}); retrying in {wait:?}",
                        self.bot.instance
                    );
                    thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(16));
                }
                Err(e) => {
                    log::error!("chat {chat}: cannot deliver to {}: {e}", self.bot.instance);
                    self.notice(at, UNAVAILABLE);
                    let _ = self.events.send(Event::Delivered(chat, at.1));
                    return;
                }
            }
        }
    }
}

/// The command `text` (of message `m`) starts with (`/new` of `/new@bot hi`), or "".
/// A forwarded message is someone else's words: never a command, nor a shell line in
/// exec mode.
fn command_word<'t>(m: &Message, text: &'t str) -> &'t str {
    if m.forward_origin.is_some() {
        return "";
    }
    let word = text.split_whitespace().next().unwrap_or("");
    word.split('@').next().unwrap_or("")
}

/// Whether `m` starts with `/stop` or `/cancel`, once the bot's `usernames` (those known)
/// are taken out of it.
fn stops(m: &Message, usernames: &[String]) -> bool {
    let text = strip_mentions(m.text.as_deref().unwrap_or(""), usernames);
    matches!(command_word(m, &text), "/stop" | "/cancel")
}

/// Byte offsets where `mention` (ASCII, as Telegram usernames are) stands in `text` as
/// a whole name, ignoring ASCII case. ASCII matches sit on character boundaries.
fn mention_at(text: &str, mention: &str) -> Vec<usize> {
    let (t, m) = (text.as_bytes(), mention.as_bytes());
    if m.is_empty() || t.len() < m.len() {
        return Vec::new();
    }
    (0..=t.len() - m.len())
        .filter(|&i| t[i..i + m.len()].eq_ignore_ascii_case(m))
        // Only the whole name: `@bot` in `@botany` is someone else.
        .filter(|&i| {
            t.get(i + m.len())
                .is_none_or(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
        })
        .collect()
}

/// `text` without any `@username` mention (case-insensitive) and the spaces around it
/// (one stays between the words it stood between), trimmed. Every other space and line
/// break stays as written: code sent to the bot in a group keeps its lines and indents.
pub fn strip_mention(text: &str, mention: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    for at in mention_at(text, mention) {
        if at < i {
            continue;
        }
        out.push_str(&text[i..at]);
        out.truncate(out.trim_end_matches([' ', '\t']).len());
        let rest = &text[at + mention.len()..];
        let after = rest.trim_start_matches([' ', '\t']);
        i = text.len() - after.len();
        if !out.is_empty() && !out.ends_with('\n') && !after.is_empty() && !after.starts_with(['\n', '\r']) {
            out.push(' ');
        }
    }
    out.push_str(&text[i..]);
    out.trim().to_string()
}

/// `text` without a mention of any of `usernames` (without their `@`); see
/// [`strip_mention`].
fn strip_mentions(text: &str, usernames: &[String]) -> String {
    usernames.iter().fold(text.trim().to_string(), |t, u| {
        strip_mention(&t, &format!("@{u}"))
    })
}

#[cfg(test)]
mod tests {
    use super::{mention_at, strip_mention};
    use proptest::strategy::Strategy;

    #[test]
    fn stop_is_told_from_other_words() {
        let m = |text: &str, forwarded: bool| -> crate::telegram::Message {
            let mut v = serde_json::json!({"message_id": 1, "chat": {"id": 5}, "text": text});
            if forwarded {
                v["forward_origin"] =
                    serde_json::json!({"type": "hidden_user", "date": 0, "sender_user_name": "X"});
            }
            serde_json::from_value(v).unwrap()
        };
        let names = ["test_bot".to_string(), "aegishelperbot".to_string()];
        let stops = |m: crate::telegram::Message| super::stops(&m, &names);
        assert!(stops(m("/stop", false)));
        assert!(stops(m("/cancel@test_bot now", false)));
        assert!(stops(m("@Test_Bot /stop", false)), "in a group");
        assert!(
            stops(m("@AegisHelperBot /stop", false)),
            "by another active username"
        );
        assert!(stops(m("/stop@aegishelperbot", false)));
        assert!(super::stops(&m("/stop", false), &[]), "before getMe");
        assert!(!stops(m("@test_botany /stop", false)));
        assert!(!stops(m("/stopwatch", false)));
        assert!(!stops(m("please /stop", false)));
        assert!(!stops(m("/stop", true)), "someone else's words");
    }

    #[test]
    fn mentions_are_removed_whole_and_in_any_case() {
        assert_eq!(
            strip_mention("@Test_Bot what is 2+2?", "@test_bot"),
            "what is 2+2?"
        );
        assert_eq!(strip_mention("/new@test_bot", "@test_bot"), "/new");
        assert_eq!(
            strip_mention("hey @test_botany and @test_bot!", "@test_bot"),
            "hey @test_botany and !"
        );
        assert_eq!(strip_mention("@test_bot", "@test_bot"), "");
        assert_eq!(strip_mention("İstanbul @TEST_BOT ok", "@test_bot"), "İstanbul ok");
        // Lines and indents stay as written.
        assert_eq!(
            strip_mention(
                "@test_bot fix this:\n```\nfn main() {\n    run();\n}\n```",
                "@test_bot"
            ),
            "fix this:\n```\nfn main() {\n    run();\n}\n```"
        );
        assert_eq!(
            strip_mention("first line\n@test_bot\nthird", "@test_bot"),
            "first line\n\nthird"
        );
        assert_eq!(
            strip_mention("a  @test_bot   @test_bot  b\n  c", "@test_bot"),
            "a b\n  c"
        );
    }

    proptest::proptest! {
        /// Words around mentions survive in order; no whole mention survives.
        #[test]
        fn stripping_keeps_every_other_word(parts in proptest::collection::vec(
            proptest::prop_oneof![
                "[a-zé]{1,6}".prop_map(|w| w),
                proptest::strategy::Just("@test_bot".to_string()),
                proptest::strategy::Just("@TEST_Bot".to_string()),
                proptest::strategy::Just("@test_botany".to_string()),
            ], 0..10)) {
            let text = parts.join(" ");
            let out = strip_mention(&text, "@test_bot");
            let kept: Vec<&str> = parts.iter().map(String::as_str).filter(|p| !p.eq_ignore_ascii_case("@test_bot")).collect();
            proptest::prop_assert_eq!(out, kept.join(" "));
        }

        /// A text without the mention comes back as written, but for the ends' spaces.
        #[test]
        fn a_text_without_the_mention_is_left_as_written(text in "[ a-z\n\t{}();@]{0,60}") {
            proptest::prop_assume!(mention_at(&text, "@test_bot").is_empty());
            proptest::prop_assert_eq!(strip_mention(&text, "@test_bot"), text.trim());
        }

        /// Around mentions anywhere, the words and line breaks between them stay.
        #[test]
        fn line_breaks_and_words_stay(lines in proptest::collection::vec(proptest::collection::vec(
            proptest::prop_oneof!["[a-z]{1,5}".prop_map(|w| w), proptest::strategy::Just("@test_bot".to_string())],
            1..5), 1..5)) {
            let text = lines.iter().map(|l| l.join(" ")).collect::<Vec<_>>().join("\n");
            let out = strip_mention(&text, "@test_bot");
            let words = |t: &str| t.split_whitespace().filter(|w| !w.eq_ignore_ascii_case("@test_bot")).map(str::to_string).collect::<Vec<_>>();
            proptest::prop_assert_eq!(words(&out), words(&text));
            // Line breaks between the first and the last word (a line of only the mention
            // at either end goes with the ends' spaces).
            let breaks = |t: &str| {
                let worded: Vec<usize> = t.split('\n').enumerate().filter(|(_, l)| !words(l).is_empty()).map(|(i, _)| i).collect();
                worded.last().map_or(0, |last| last - worded[0])
            };
            proptest::prop_assert_eq!(breaks(&out), breaks(&text));
        }
    }
}
