//! The Telegram sender: one thread per bot that performs every Bot API call in order.
//!
//! It honours `retry_after` for all calls (a 429 pauses the bot, then the same call is
//! tried again, so no edit and no final text is lost), retries 5xx and network errors
//! with backoff, treats "message is not modified" as success, falls back from a rich
//! message to HTML, and from HTML to plain text, when Telegram rejects the formatting, and
//! drops an edit that a newer edit of the same message has already superseded. A failing
//! `sendChatAction` is logged and forgotten.

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

use crate::bot::Event;
use crate::render::{Action, Attachment, DraftsRefused};
use crate::telegram::{Telegram, TgError};
use crate::workspace::InstanceWorkspace;

/// Largest file sent as a document (the Bot API takes 50 MB).
const MAX_DOCUMENT: u64 = 50 * 1024 * 1024;

/// How long one call is retried through transient failures before it is given up.
const GIVE_UP: Duration = Duration::from_secs(300);

/// Run until `actions` closes; a refused draft is noted in `drafts` for `/exec`. Files of
/// replies are read from `workspace`.
pub fn run(
    tg: Telegram,
    actions: Receiver<Action>,
    events: Sender<Event>,
    drafts: DraftsRefused,
    workspace: &InstanceWorkspace,
) {
    let mut queue: VecDeque<Action> = VecDeque::new();
    let mut moved = Moved::default();
    let mut rich = RichMessages::default();
    loop {
        if queue.is_empty() {
            match actions.recv() {
                Ok(a) => queue.push_back(a),
                Err(_) => return,
            }
        }
        queue.extend(actions.try_iter());
        let Some(action) = queue.pop_front() else { continue };
        if let Action::Edit { chat, message_id, .. } = &action {
            let superseded = queue.iter().any(
                |a| matches!(a, Action::Edit { chat: c, message_id: m, .. } if c == chat && m == message_id),
            );
            if superseded {
                continue;
            }
        }
        execute(&tg, action, &events, &drafts, (&mut moved, &mut rich), workspace);
    }
}

/// What the Bot API has shown of rich messages (Bot API 10.1).
#[derive(Default)]
struct RichMessages {
    /// It does not know them (an older server): classic messages from now on.
    unknown: bool,
}

/// Messages of replies that were gone when edited, and the ones sent in their place.
#[derive(Default)]
struct Moved {
    /// (chat, old message id) → new message id, newest last.
    to: VecDeque<((i64, i64), i64)>,
}

impl Moved {
    /// Replacements remembered: more than the edits that can be queued for old ids.
    const KEEP: usize = 256;

    /// Where an edit of `message_id` goes now.
    fn current(&self, chat: i64, message_id: i64) -> i64 {
        self.to
            .iter()
            .rev()
            .find(|(from, _)| *from == (chat, message_id))
            .map_or(message_id, |(_, to)| *to)
    }

    /// Whether `message_id` was itself sent in place of a gone one.
    fn is_replacement(&self, chat: i64, message_id: i64) -> bool {
        self.to.iter().any(|((c, _), to)| *c == chat && *to == message_id)
    }

    fn note(&mut self, chat: i64, from: i64, to: i64) {
        if self.to.len() == Self::KEEP {
            self.to.pop_front();
        }
        self.to.push_back(((chat, from), to));
    }
}

fn body(chat: i64, text: &str, html: Option<&str>) -> Value {
    match html {
        Some(h) => {
            json!({"chat_id": chat, "text": h, "parse_mode": "HTML", "disable_web_page_preview": true})
        }
        None => json!({"chat_id": chat, "text": text, "disable_web_page_preview": true}),
    }
}

/// `body` addressed to `topic` of its chat (`message_thread_id`), when there is one.
fn in_topic(mut body: Value, topic: Option<i64>) -> Value {
    if let Some(t) = topic {
        body["message_thread_id"] = json!(t);
    }
    body
}

fn execute(
    tg: &Telegram,
    action: Action,
    events: &Sender<Event>,
    drafts: &DraftsRefused,
    (moved, rich_messages): (&mut Moved, &mut RichMessages),
    workspace: &InstanceWorkspace,
) {
    match action {
        Action::Menu(commands) => {
            crate::menu::set(commands, |body| call_retrying(tg, "setMyCommands", body));
        }
        Action::Typing { chat, topic, busy } => {
            let body = in_topic(json!({"chat_id": chat, "action": busy.action()}), topic);
            if let Err(e) = call_once_honouring_429(tg, "sendChatAction", &body) {
                log::debug!("chat {chat}: typing indicator failed: {e}");
            }
        }
        Action::Send {
            key,
            part,
            chat,
            topic,
            text,
            html,
            rich,
            keyboard,
        } => {
            // In a group, the first message of a reply answers the user's message; so does
            // an edit's anywhere: the words it answers may be far up the chat.
            let reply_to = key
                .as_ref()
                .filter(|(_, msg_id)| part == 0 && (chat < 0 || crate::render::is_edit(msg_id)))
                .and_then(|(_, msg_id)| crate::render::answered(chat, msg_id));
            let look = (text.as_str(), html.as_deref(), rich);
            let result = call_formatted(tg, "sendMessage", chat, look, rich_messages, |mut b| {
                if let Some(id) = reply_to {
                    b["reply_parameters"] = json!({"message_id": id, "allow_sending_without_reply": true});
                }
                with_answers(in_topic(b, topic), &keyboard)
            });
            match result {
                Ok(v) => {
                    if let (Some(key), Some(id)) = (key, v["message_id"].as_i64()) {
                        let _ = events.send(Event::Sent {
                            key,
                            part,
                            message_id: id,
                        });
                    }
                }
                Err(e) => {
                    log::error!("chat {chat}: sendMessage failed: {e}");
                    if let Some(key) = key {
                        let _ = events.send(Event::SendFailed { key, part });
                    }
                }
            }
        }
        Action::Attach {
            key,
            index,
            chat,
            topic,
            item: Attachment::Photo(image),
        } => {
            let sent = crate::images::decode(&image)
                .map_err(|e| TgError::Rejected(400, e))
                .and_then(|bytes| retrying(|| tg.send_photo(chat, topic, &image.media_type, &bytes)));
            if let Err(e) = sent {
                log::error!("chat {chat}: sendPhoto failed, the image is left out: {e}");
            }
            let _ = events.send(Event::AttachmentSent { key, index });
        }
        // A file or a voice message: a blob of the workspace.
        Action::Attach {
            key,
            index,
            chat,
            topic,
            item,
        } => {
            send_blob(tg, workspace, chat, topic, &item);
            let _ = events.send(Event::AttachmentSent { key, index });
        }
        Action::Draft {
            chat,
            topic,
            draft_id,
            text,
            html,
            can_stop,
            rich,
        } => {
            // A draft is a preview: one attempt (after a 429's wait); the next update or
            // the final message supersedes a lost one.
            let ask = |method: &str, mut body: Value| {
                if can_stop {
                    // The stopped draft stays up until the reply's final message replaces it.
                    body["can_stop"] = json!(true);
                    body["keep_on_stop"] = json!(true);
                }
                call_once_honouring_429(tg, method, &in_topic(body, topic))
            };
            if rich && !rich_messages.unknown {
                let body = json!({"chat_id": chat, "draft_id": draft_id, "rich_message": {"markdown": text}});
                match ask("sendRichMessageDraft", body) {
                    Ok(_) | Err(TgError::RetryAfter(_) | TgError::Transient(_)) => return,
                    // Rich drafts came with rich messages (Bot API 10.1).
                    Err(TgError::Rejected(404, e)) => known_unknown(rich_messages, &e),
                    // A part Telegram does not take as a rich message (too many columns)
                    // streams as a classic draft, as it will end as a classic message.
                    Err(e) => log::debug!("chat {chat}: rich draft refused ({e}); a classic one instead"),
                }
            }
            let draft = |html: Option<&str>| {
                let mut body = json!({"chat_id": chat, "draft_id": draft_id, "text": html.unwrap_or(&text)});
                if html.is_some() {
                    body["parse_mode"] = json!("HTML");
                }
                ask("sendMessageDraft", body)
            };
            let mut result = draft(html.as_deref());
            if let (Err(TgError::BadEntities(e)), Some(_)) = (&result, &html) {
                // Formatting refused is no reason to give drafts up: this one goes plain.
                log::warn!("chat {chat}: draft formatting rejected ({e}); sending it plain");
                result = draft(None);
            }
            match result {
                Ok(_) | Err(TgError::RetryAfter(_) | TgError::Transient(_)) => {}
                Err(e) => {
                    // 404 method not found (an older Bot API server), or a chat where
                    // drafts are not allowed: stream with edits instead.
                    log::debug!("chat {chat}: sendMessageDraft refused: {e}");
                    drafts.note();
                    let _ = events.send(Event::DraftRefused { chat });
                }
            }
        }
        Action::Edit {
            key,
            part,
            chat,
            topic,
            message_id,
            text,
            html,
            rich,
            keyboard,
        } => {
            // An edit queued before its message was replaced goes to the replacement.
            let current = moved.current(chat, message_id);
            let look = (text.as_str(), html.as_deref(), rich);
            let result = call_formatted(tg, "editMessageText", chat, look, rich_messages, |mut b| {
                b["message_id"] = json!(current);
                with_answers(b, &keyboard)
            });
            match result {
                Ok(_) | Err(TgError::NotModified) => {}
                // Once per message: a replacement that is gone too is left alone.
                Err(TgError::MessageGone) if !moved.is_replacement(chat, current) => {
                    log::warn!(
                        "chat {chat}: message {current} is gone (deleted, or the group moved); sending the text anew"
                    );
                    let sent = call_formatted(tg, "sendMessage", chat, look, rich_messages, |b| {
                        with_answers(in_topic(b, topic), &keyboard)
                    });
                    match sent.map(|v| v["message_id"].as_i64()) {
                        Ok(Some(id)) => {
                            moved.note(chat, current, id);
                            let _ = events.send(Event::Sent {
                                key,
                                part,
                                message_id: id,
                            });
                        }
                        Ok(None) => log::error!("chat {chat}: sendMessage returned no message id"),
                        Err(e) => log::error!("chat {chat}: sendMessage in place of {current} failed: {e}"),
                    }
                }
                Err(e) => log::error!("chat {chat}: editMessageText {current} failed: {e}"),
            }
        }
    }
}

/// `method` (`sendMessage`, `editMessageText`) with retries, for a part's (text, HTML,
/// rich): as a rich message (`sendRichMessage`, or the edit's `rich_message`, the text as
/// its Markdown) when it is one and the Bot API takes them, else as HTML, else as plain
/// text. A refused rich message was not sent, so the classic one never doubles it.
fn call_formatted(
    tg: &Telegram,
    method: &str,
    chat: i64,
    (text, html, rich): (&str, Option<&str>, bool),
    known: &mut RichMessages,
    extra: impl Fn(Value) -> Value,
) -> Result<Value, TgError> {
    if rich && !known.unknown {
        let rich_method = if method == "sendMessage" {
            "sendRichMessage"
        } else {
            method
        };
        let body = extra(json!({"chat_id": chat, "rich_message": {"markdown": text}}));
        match call_retrying(tg, rich_method, &body) {
            // An older server: it lacks the method, or ignores `rich_message` and finds no
            // text to edit with.
            Err(TgError::Rejected(404, e)) => known_unknown(known, &e),
            Err(TgError::Rejected(400, e)) if e.contains("text is empty") => known_unknown(known, &e),
            Err(TgError::Rejected(400, e) | TgError::BadEntities(e)) => {
                log::warn!("chat {chat}: rich message refused ({e}); sending it as a classic message");
            }
            other => return other,
        }
    }
    call_with_fallback(tg, method, chat, text, html, extra)
}

fn known_unknown(known: &mut RichMessages, why: &str) {
    log::info!("the Bot API has no rich messages ({why}); classic messages from now on");
    known.unknown = true;
}

/// Call with retries; if Telegram rejects the HTML, send the plain text instead.
fn call_with_fallback(
    tg: &Telegram,
    method: &str,
    chat: i64,
    text: &str,
    html: Option<&str>,
    extra: impl Fn(Value) -> Value,
) -> Result<Value, TgError> {
    match call_retrying(tg, method, &extra(body(chat, text, html))) {
        Err(TgError::BadEntities(e)) if html.is_some() => {
            log::warn!("chat {chat}: formatting rejected ({e}); sending plain text");
            call_retrying(tg, method, &extra(body(chat, text, None)))
        }
        other => other,
    }
}

/// `body` with the buttons of a question's `answers`, when it has any.
fn with_answers(mut body: Value, answers: &crate::render::Answers) -> Value {
    if !answers.labels.is_empty() {
        body["reply_markup"] = crate::telegram::answer_keyboard(&answers.labels, answers.by.as_deref());
    }
    body
}

fn call_once_honouring_429(tg: &Telegram, method: &str, body: &Value) -> Result<Value, TgError> {
    let r = tg.call(method, body);
    if let Err(TgError::RetryAfter(d)) = &r {
        log::warn!("Telegram rate limit: pausing {d:?}");
        thread::sleep(*d);
    }
    r
}

fn call_retrying(tg: &Telegram, method: &str, body: &Value) -> Result<Value, TgError> {
    retrying(|| tg.call(method, body))
}

/// Send the blob of `item` from the instance's workspace: a voice message, or a document.
/// A user whose privacy settings refuse voice messages gets the recording as a file; a
/// failure is told to the chat, as the reply's text promised the attachment.
fn send_blob(tg: &Telegram, workspace: &InstanceWorkspace, chat: i64, topic: Option<i64>, item: &Attachment) {
    let (file, voice) = match item {
        Attachment::File(file) => (file, false),
        Attachment::Voice(file) => (file, true),
        Attachment::Photo(_) => return,
    };
    // The agent's name for it, fit for a header and a message.
    let name = crate::inbox::safe_name(Some(&file.name));
    let sent = workspace
        .get()
        .ok_or_else(|| "the instance's workspace is unknown".to_string())
        .and_then(|ws| crate::workspace::open_blob(ws, &file.blob, MAX_DOCUMENT))
        .and_then(|f| {
            let as_document = || retrying(|| tg.send_document(chat, topic, &name, &f));
            let sent = match voice.then(|| retrying(|| tg.send_voice(chat, topic, &f))) {
                Some(Err(TgError::Rejected(400, d))) if d.contains("VOICE_MESSAGES_FORBIDDEN") => {
                    log::info!(
                        "chat {chat}: the user does not take voice messages; sending {name} as a file"
                    );
                    as_document()
                }
                Some(sent) => sent,
                None => as_document(),
            };
            sent.map_err(|e| e.to_string())
        });
    if let Err(e) = sent {
        let what = if voice { "voice message" } else { "file" };
        log::error!("chat {chat}: the {what} {name} could not be sent: {e}");
        let text = match voice {
            true => format!("⚠️ The voice message could not be sent ({e})."),
            false => format!("⚠️ The file {name} could not be sent ({e})."),
        };
        let _ = retrying(|| {
            tg.call(
                "sendMessage",
                &in_topic(json!({"chat_id": chat, "text": text}), topic),
            )
        });
    }
}

/// `call` again after a 429's wait, and through transient failures for a while.
fn retrying(call: impl Fn() -> Result<Value, TgError>) -> Result<Value, TgError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(500);
    loop {
        match call() {
            Err(TgError::RetryAfter(d)) => {
                log::warn!("Telegram rate limit: waiting {d:?}");
                thread::sleep(d);
            }
            Err(TgError::Transient(e)) if started.elapsed() < GIVE_UP => {
                log::warn!("Bot API call failed ({e}); retrying in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Moved;

    #[test]
    fn edits_follow_a_replaced_message_and_a_replacement_is_replaced_at_most_once() {
        let mut m = Moved::default();
        assert_eq!(m.current(5, 100), 100);
        m.note(5, 100, 101);
        assert_eq!(m.current(5, 100), 101, "queued edits go to the new message");
        assert_eq!(m.current(6, 100), 100, "per chat");
        assert!(m.is_replacement(5, 101));
        assert!(!m.is_replacement(5, 100) && !m.is_replacement(6, 101));
        for i in 0..Moved::KEEP as i64 {
            m.note(7, i, 1000 + i);
        }
        assert_eq!(m.current(5, 100), 100, "the oldest is forgotten");
        assert_eq!(m.current(7, 0), 1000);
    }
}
