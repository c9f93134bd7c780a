//! Telegram ingress: one thread per bot long-polls `getUpdates` and turns each text
//! message from an allowed chat into a `user.message` frame posted to the instance.
//!
//! Delivery is at least once and ordered: the offset is saved only after the frame was
//! accepted (202), and the frame's `msg_id` is derived from the Telegram message
//! (`tg-{chat}-{message_id}`), so a message re-read after a crash is recognised
//! downstream. While the instance wakes (503), the post is retried with backoff; after
//! that the user is told the agent is unavailable.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tether::frame::{kind, Cancel, Session, User};
use tether::{AegisClient, Frame};

use crate::bot::Event;
use crate::config::BotConfig;
use crate::render::Action;
use crate::state::{self, PollState};
use crate::telegram::{parse_updates, Message, Telegram, TgError};

/// Long-poll timeout asked of Telegram.
const POLL_TIMEOUT_SECS: u64 = 30;
/// Attempts to deliver one message while the instance is unavailable (about a minute).
const DELIVERY_ATTEMPTS: u32 = 7;

/// Text shown when the instance cannot be reached.
pub const UNAVAILABLE: &str = "⚠️ The agent is unavailable right now. Please try again in a moment.";

/// Everything the poller needs.
pub struct Poller {
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
    /// `poll.json`.
    pub state_path: PathBuf,
}

impl Poller {
    /// Poll forever.
    pub fn run(self) {
        let mut st: PollState = state::load(&self.state_path);
        let mut backoff = Duration::from_secs(1);
        let mut idle = Duration::from_millis(50);
        loop {
            let asked = Instant::now();
            match self.tg.get_updates(st.offset, POLL_TIMEOUT_SECS) {
                Ok(result) => {
                    backoff = Duration::from_secs(1);
                    let (updates, skipped) = parse_updates(&result);
                    for id in skipped {
                        log::warn!("skipping update {id}: unexpected shape");
                        st.offset = st.offset.max(id + 1);
                    }
                    if updates.is_empty() && skipped_none(&result) && asked.elapsed() < Duration::from_secs(1)
                    {
                        // A server that answers a long poll at once with nothing (local Bot
                        // API servers, emulators) must not make us spin.
                        thread::sleep(idle);
                        idle = (idle * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    idle = Duration::from_millis(50);
                    for u in updates {
                        if let Some(m) = &u.message {
                            self.handle(m, &mut st);
                        }
                        st.offset = st.offset.max(u.update_id + 1);
                        if let Err(e) = state::save(&self.state_path, &st) {
                            log::error!("cannot save {}: {e}", self.state_path.display());
                        }
                    }
                }
                Err(TgError::RetryAfter(d)) => thread::sleep(d),
                Err(e) => {
                    log::warn!("getUpdates failed: {e}; retrying in {backoff:?}");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn handle(&self, m: &Message, st: &mut PollState) {
        let chat = m.chat.id;
        let Some(text) = m
            .text
            .as_deref()
            .or(m.caption.as_deref())
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            log::debug!("chat {chat}: ignoring a message without text");
            return;
        };
        if !self.bot.allows(chat) {
            log::info!("ignoring message from chat {chat} (not in allowed_chats)");
            return;
        }
        let session = Session::new("telegram", st.session_id(chat));
        let command = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        match command {
            "/stop" | "/cancel" => {
                let cancel = Frame::new(kind::CONTROL_CANCEL, Some(session))
                    .with_payload(&Cancel::default())
                    .with_msg_id(format!("tg-{chat}-{}", m.message_id));
                self.deliver(chat, &cancel);
                return;
            }
            "/new" => {
                *st.sessions.entry(chat).or_insert(0) += 1;
                self.notice(chat, "🆕 New conversation started.");
                return;
            }
            _ => {}
        }
        let user = m.from.as_ref().map(|u| User {
            id: Some(u.id.to_string()),
            username: u.username.clone(),
            name: Some(u.full_name()).filter(|n| !n.is_empty()),
        });
        let frame =
            Frame::user_message(session, text, user).with_msg_id(format!("tg-{chat}-{}", m.message_id));
        let _ = self.events.send(Event::UserMessage(chat));
        self.deliver(chat, &frame);
    }

    fn notice(&self, chat: i64, text: &str) {
        let _ = self.actions.send(Action::Send {
            key: None,
            part: 0,
            chat,
            text: text.to_string(),
            html: None,
        });
    }

    fn deliver(&self, chat: i64, frame: &Frame) {
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
                    self.notice(chat, UNAVAILABLE);
                    let _ = self.events.send(Event::Delivered(chat));
                    return;
                }
            }
        }
    }
}

fn skipped_none(result: &serde_json::Value) -> bool {
    result.as_array().is_none_or(|a| a.is_empty())
}
