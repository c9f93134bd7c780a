//! Telegram ingress: one thread per bot long-polls `getUpdates`, groups an album's photos
//! (which Telegram delivers one by one) into one unit, writes each unit to the journal
//! and hands it to its chat's queue ([`crate::ingress`] handles it there).
//!
//! Chats are handled side by side and each chat in order: a 20 MB file downloading in
//! one chat, or a message waiting for its instance to wake, holds no other chat. Only a
//! `/stop` goes ahead of its chat's queue, as it is about the reply running now. The
//! journal keeps what was read until it is handled, so a crash loses nothing even though
//! Telegram is told to forget updates as soon as they are read; what a crash left is
//! handed out first by the next run.
//!
//! Bot API trouble: a wrong token (401) ends the gateway with a message saying so;
//! another poller on the same token (409) and an unreachable API are retried with
//! backoff, logged once per outage rather than on every attempt.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::chat_queues::ChatQueues;
use crate::ingress::Ingress;
use crate::journal::Journal;
use crate::telegram::{parse_updates, TgError, Update};

/// Long-poll timeout asked of Telegram.
const POLL_TIMEOUT_SECS: u64 = 30;
/// How long to wait for more photos of an album that ends a batch of updates, at most
/// `ALBUM_POLLS` times.
const ALBUM_WAIT: Duration = Duration::from_millis(700);
const ALBUM_POLLS: u32 = 3;
/// Photos in one album, at most (Telegram's limit).
const MAX_ALBUM: usize = 10;
/// Chats handled at once per bot, at most.
const MAX_CHAT_THREADS: usize = 8;
/// Units read and not handled yet, at most: past that the poller waits (Telegram keeps
/// updates for a day).
const MAX_PENDING: usize = 100;

/// Runs that may begin handling one message: the last of them gives it up.
const MAX_TRIES: u32 = 5;

/// The update kinds read: messages, the drafts' stop button, taps on a question's
/// answers, the bot's own membership of a chat (blocked, removed, back), and edited
/// messages when the bot answers edits (`edited_messages`).
const KINDS: [&str; 5] = [
    "message",
    "stopped_message_generation",
    "callback_query",
    "my_chat_member",
    "edited_message",
];

/// Exit status when Telegram rejects the token (a configuration error).
pub const EXIT_BAD_TOKEN: i32 = 2;

/// One bot's reader of updates.
pub struct Poller {
    ingress: Arc<Ingress>,
    journal: Arc<Journal>,
    queues: ChatQueues<Vec<Update>>,
    /// The command menu to set before polling.
    menu: Vec<tether::frame::Command>,
}

impl Poller {
    /// A poller handing what it reads to `ingress`, with `journal` as its memory, that
    /// sets the bot's command `menu` first.
    pub fn new(ingress: Ingress, journal: Journal, menu: Vec<tether::frame::Command>) -> Poller {
        let (ingress, journal) = (Arc::new(ingress), Arc::new(journal));
        let (i, j) = (ingress.clone(), journal.clone());
        let queues = ChatQueues::new(MAX_CHAT_THREADS, move |unit: Vec<Update>| i.take(&unit, &j));
        Poller {
            ingress,
            journal,
            queues,
            menu,
        }
    }

    /// The update kinds this bot asks Telegram for.
    fn kinds(&self) -> &'static [&'static str] {
        if self.ingress.bot.answer_edits {
            &KINDS
        } else {
            &KINDS[..4]
        }
    }

    /// Poll forever.
    pub fn run(self) {
        let tg = &self.ingress.tg;
        for (new, old) in self.journal.read(|st| st.migrated.clone()) {
            tg.follow_migration(old, new);
        }
        let mut backoff = Duration::from_secs(1);
        let mut idle = Duration::from_millis(50);
        let mut failures = 0u32;
        crate::menu::set(self.menu.clone(), |body| tg.call("setMyCommands", body));
        self.ingress.exec.recover(&self.ingress.actions);
        let (left, given_up) = self.journal.resume(MAX_TRIES);
        if !left.is_empty() {
            log::info!(
                "bot {}: handling {} messages the last run read and left",
                tg.bot_id(),
                left.len()
            );
        }
        for unit in &given_up {
            self.ingress.given_up(unit, MAX_TRIES, &self.journal);
        }
        // The tries counted must be on disk before handling begins.
        while let Err(e) = self.journal.sync() {
            log::error!("cannot save {}: {e}; retrying", self.journal.path().display());
            thread::sleep(Duration::from_secs(5));
        }
        for unit in left {
            self.dispatch(unit);
        }
        loop {
            self.journal.wait_for_room(MAX_PENDING);
            // Telegram forgets what the next call confirms: it must be on disk first.
            if let Err(e) = self.journal.sync() {
                log::error!(
                    "cannot save {}: {e}; not reading Telegram until it can be",
                    self.journal.path().display()
                );
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
            if self.ingress.usernames.get().is_none() {
                match tg.get_me() {
                    Ok(names) => {
                        let _ = self.ingress.usernames.set(names);
                    }
                    Err(e) => self.trouble(&e, &mut failures, &mut backoff),
                }
            }
            let asked = Instant::now();
            match tg.get_updates(self.journal.offset(), POLL_TIMEOUT_SECS, self.kinds()) {
                Ok(result) => {
                    backoff = Duration::from_secs(1);
                    if failures > 0 {
                        log::info!(
                            "bot {}: Telegram reachable again after {failures} failed attempts",
                            tg.bot_id()
                        );
                        failures = 0;
                    }
                    let (updates, skipped) = parse_updates(&result);
                    if updates.is_empty() && skipped_none(&result) && asked.elapsed() < Duration::from_secs(1)
                    {
                        // A server that answers a long poll at once with nothing (local Bot
                        // API servers, emulators) must not make us spin.
                        thread::sleep(idle);
                        idle = (idle * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    idle = Duration::from_millis(50);
                    self.take(updates);
                    for id in skipped {
                        log::warn!("skipping update {id}: unexpected shape");
                        self.journal.skip(id);
                    }
                }
                Err(e) => self.trouble(&e, &mut failures, &mut backoff),
            }
        }
    }

    /// Group `updates` into units (an album's photos are one), journal each and hand it
    /// to its chat.
    fn take(&self, mut updates: Vec<Update>) {
        let (mut i, mut polls) = (0, 0);
        while i < updates.len() {
            let n = album_len(&updates[i..]);
            let album_open = n > 1 || is_album(&updates[i]);
            // Reading again from the album's first photo confirms what came before it:
            // only once that is on disk.
            if album_open && i + n == updates.len() && polls < ALBUM_POLLS && self.journal.sync().is_ok() {
                // Telegram delivers an album's photos one by one, and the rest may still
                // be on its way: read again from its first photo until it stops growing.
                polls += 1;
                thread::sleep(ALBUM_WAIT);
                if let Ok(again) = self.ingress.tg.get_updates(updates[i].update_id, 0, self.kinds()) {
                    let (more, _) = parse_updates(&again);
                    if more.first().map(|u| u.update_id) == Some(updates[i].update_id) {
                        if album_len(&more) == n {
                            polls = ALBUM_POLLS;
                        }
                        updates.truncate(i);
                        updates.extend(more);
                    }
                }
                continue;
            }
            let unit: Vec<Update> = updates[i..i + n].to_vec();
            i += n;
            if self.journal.add(&unit) {
                self.dispatch(unit);
            }
        }
    }

    /// Hand `unit` to its chat's queue; a `/stop` is handled at once, on a thread of its
    /// own: it means the reply running now, not one after what waits in its chat.
    fn dispatch(&self, unit: Vec<Update>) {
        let first = unit.first().and_then(|u| u.message.as_ref());
        let stop_button = unit.first().and_then(|u| u.stopped_message_generation.as_ref());
        let membership = unit.first().and_then(|u| u.my_chat_member.as_ref());
        let chat = first
            .map(|m| m.chat.id)
            .or(stop_button.map(|s| s.chat.id))
            .or(membership.and_then(|c| c["chat"]["id"].as_i64()))
            .unwrap_or(0);
        if unit.len() == 1 && (first.is_some_and(|m| self.ingress.stops(m)) || stop_button.is_some()) {
            let (ingress, journal, stop) = (self.ingress.clone(), self.journal.clone(), unit.clone());
            let spawned = thread::Builder::new()
                .name("tg-stop".into())
                .spawn(move || ingress.take(&stop, &journal));
            match spawned {
                Ok(_) => return,
                Err(e) => log::warn!("cannot start a thread for /stop ({e}); it waits its turn"),
            }
        }
        self.queues.push(chat, unit);
    }

    /// React to a failed Bot API call: exit on a wrong token, else wait (429's wait,
    /// or a growing backoff), logging an outage once rather than on every attempt.
    fn trouble(&self, e: &TgError, failures: &mut u32, backoff: &mut Duration) {
        let bot = self.ingress.tg.bot_id();
        match e {
            TgError::RetryAfter(d) => {
                thread::sleep(*d);
                return;
            }
            TgError::Rejected(401, d) => {
                log::error!(
                    "bot {bot}: Telegram rejected the bot token ({d}); check bot_token_secret / bot_token / TELEGRAM_BOT_TOKEN"
                );
                eprintln!("aegis-gateway: bot {bot}: the bot token is wrong (Telegram answered 401 Unauthorized)");
                std::process::exit(EXIT_BAD_TOKEN);
            }
            TgError::Rejected(409, d) => log::error!(
                "bot {bot}: another program is polling this bot ({d}); only one poller per token can run. Retrying in {backoff:?}"
            ),
            other if *failures == 0 => log::warn!(
                "bot {bot}: Telegram call failed: {other}; retrying with backoff (repeats are logged at debug level)"
            ),
            other => log::debug!("bot {bot}: Telegram call failed again: {other}; retrying in {backoff:?}"),
        }
        *failures += 1;
        thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(60));
    }
}

/// Whether `u` is a photo of an album (as sent: an edited one stands alone).
fn is_album(u: &Update) -> bool {
    u.message
        .as_ref()
        .is_some_and(|m| m.media_group_id.is_some() && m.edit_date.is_none())
}

/// How many updates from the first are one album (the same chat and `media_group_id`, at
/// most Telegram's 10); 1 for anything else, 0 for none.
fn album_len(updates: &[Update]) -> usize {
    let key = |u: &Update| {
        let m = u.message.as_ref().filter(|m| m.edit_date.is_none())?;
        Some((m.chat.id, m.media_group_id.clone()?))
    };
    match updates.first().map(key) {
        None => 0,
        Some(None) => 1,
        Some(k) => updates.iter().take(MAX_ALBUM).take_while(|u| key(u) == k).count(),
    }
}

fn skipped_none(result: &serde_json::Value) -> bool {
    result.as_array().is_none_or(|a| a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::album_len;
    use crate::telegram::Update;

    #[test]
    fn an_album_is_the_run_of_its_photos_in_one_chat() {
        let u = |id: i64, chat: i64, group: Option<&str>| -> Update {
            let mut m = serde_json::json!({"message_id": id, "chat": {"id": chat}, "photo": []});
            if let Some(g) = group {
                m["media_group_id"] = g.into();
            }
            serde_json::from_value(serde_json::json!({"update_id": id, "message": m})).unwrap()
        };
        let batch = [
            u(1, 5, Some("a")),
            u(2, 5, Some("a")),
            u(3, 6, Some("a")), // the same id in another chat is another album
            u(4, 6, None),
            u(5, 5, Some("b")),
        ];
        assert_eq!(album_len(&batch), 2);
        assert_eq!(album_len(&batch[2..]), 1);
        assert_eq!(album_len(&batch[3..]), 1);
        assert_eq!(album_len(&batch[4..]), 1);
        assert_eq!(album_len(&[]), 0);
        let many: Vec<Update> = (0..14).map(|i| u(i, 5, Some("c"))).collect();
        assert_eq!(album_len(&many), 10, "Telegram's albums hold 10 at most");
    }
}
