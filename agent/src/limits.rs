//! [ours] Daily limits on what the model's requests may take, so a busy group, a loop of
//! tools or a task set to run every minute cannot run up a bill: the agent's (every
//! chat, scheduled task, recap, image and transcript, as `usage.json` counts them) and
//! each chat's (its replies, the images they make, its voice messages written down and
//! its scheduled tasks' runs; a chat's topics and the conversations `/new` starts in it
//! count together) and each person's (the same for their messages, in every chat), per
//! UTC day. A chat's recaps are the chat's too.
//!
//! A token counts as the provider counted it, but one read from the prompt cache counts a
//! tenth, as Anthropic and OpenAI's newer models bill it: a limit then follows the bill
//! rather than the length of a conversation that the cache mostly serves. A message that
//! finds a limit used up is answered with a note and not sent to the model (nor written
//! down, if a recording); a reply that uses one up stops before its next model request.
//! Each chat's and person's count is kept in `.aegis/usage-chats.json` (today's only), so a restart,
//! which a paused or stopped instance goes through often, does not reset it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tether::frame::Session;

use crate::usage::{grouped, today, Ledger, Tokens};

/// Where each chat's count of today is kept, under the workspace.
const FILE: &str = ".aegis/usage-chats.json";
/// Largest file read (the model can write in `.aegis`; a planted giant is not read whole).
const MAX_FILE: u64 = 1024 * 1024;
/// What a token read from the prompt cache counts, in tenths of one.
const CACHED_TENTHS: u64 = 1;

/// The limits the operator set (`AEGIS_DAILY_TOKENS`, `AEGIS_CHAT_DAILY_TOKENS`, agent.json
/// `limits`); `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitConfig {
    /// Tokens a UTC day, all chats together.
    pub daily: Option<u64>,
    /// Tokens a UTC day, each chat.
    pub chat_daily: Option<u64>,
    /// Tokens a UTC day, the replies to each person's messages.
    pub user_daily: Option<u64>,
}

/// Whose limit is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// The agent's, for every chat.
    Agent,
    /// The chat's own.
    Chat,
    /// The person's whose message is answered.
    User,
}

/// A limit used up: whose, what today's requests took, the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub whose: Whose,
    pub used: u64,
    pub limit: u64,
}

impl Reached {
    /// `this chat has used its daily limit (301,245 of 300,000 tokens today)`.
    fn what(&self) -> String {
        let who = match self.whose {
            Whose::Agent => "the agent has used its",
            Whose::Chat => "this chat has used its",
            Whose::User => "you have used your",
        };
        format!(
            "{who} daily limit ({} of {} tokens today)",
            grouped(self.used),
            grouped(self.limit)
        )
    }

    /// The answer to a message that finds the limit used up.
    pub fn refusal(&self, now: SystemTime) -> String {
        format!(
            "⚠️ Not sent to the model: {}. Send it again after 00:00 UTC ({}).",
            self.what(),
            until_midnight(now)
        )
    }

    /// The note that ends a reply that used the limit up.
    pub fn stop_note(&self, now: SystemTime) -> String {
        format!(
            "⚠️ Stopped: {}. Send a message after 00:00 UTC ({}) to let the agent continue.",
            self.what(),
            until_midnight(now)
        )
    }

    /// What a chat is told of a scheduled task of its that did not run: the task's text,
    /// so a reminder still reaches it.
    pub fn task_note(&self, text: &str) -> String {
        format!(
            "⚠️ A scheduled task did not run: {}. Its text: {}",
            self.what(),
            crate::text::clip(text, 500)
        )
    }
}

/// What the tokens `t` count against a limit.
pub fn weight(t: &Tokens) -> u64 {
    let cached = t.cache_read.min(t.input);
    (t.input - cached)
        .saturating_add((cached.saturating_mul(CACHED_TENTHS)).div_ceil(10))
        .saturating_add(t.output)
}

/// The chat a conversation is in: `channel/` and the chat's id, without the topic and
/// `/new`'s number our gateway adds after a `:` (`telegram/-100123:t5:2`).
pub fn chat_of(s: &Session) -> String {
    let id = s.id.split(':').next().unwrap_or_default();
    format!("{}/{id}", s.channel)
}

/// Who is counted: the chat, the person whose message is answered (`None` in a scheduled
/// task's run, or from a host that does not say).
#[derive(Debug, Clone, Copy)]
pub struct Payer<'a> {
    pub chat: &'a Session,
    pub user: Option<&'a str>,
}

impl<'a> Payer<'a> {
    /// Chat `chat`, where `user` wrote (the host's word for them, if any).
    pub fn of(chat: &'a Session, user: Option<&'a tether::frame::User>) -> Payer<'a> {
        Payer {
            chat,
            user: user.and_then(|u| u.id.as_deref()),
        }
    }

    /// The person's key: `channel/` and their id.
    fn user_key(&self) -> Option<String> {
        self.user.map(|u| format!("{}/{u}", self.chat.channel))
    }
}

/// Each chat's and person's count of one day, as the file keeps it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChatsToday {
    day: String,
    #[serde(default)]
    chats: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    users: BTreeMap<String, u64>,
}

/// The limits and what each chat took today.
#[derive(Debug)]
pub struct Limits {
    config: LimitConfig,
    /// The agent's requests of every day, by model.
    ledger: Arc<Ledger>,
    /// `.aegis/usage-chats.json`.
    file: PathBuf,
    /// Read at the first use (an agent without a chat limit never reads it).
    chats: Mutex<Option<ChatsToday>>,
    /// The scheduled tasks a chat was told of today (`day/task`), so a task set to run
    /// every minute tells it once.
    told: Mutex<HashSet<String>>,
}

impl Limits {
    /// `config`'s limits for the agent of `workspace`, whose requests `ledger` counts.
    pub fn new(config: LimitConfig, ledger: Arc<Ledger>, workspace: &Path) -> Limits {
        Limits {
            config,
            ledger,
            file: workspace.join(FILE),
            chats: Mutex::new(None),
            told: Mutex::new(HashSet::new()),
        }
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.config.daily.is_some() || self.counted()
    }

    /// Whether chats or people are counted (the agent's total is the ledger's).
    fn counted(&self) -> bool {
        self.config.chat_daily.is_some() || self.config.user_daily.is_some()
    }

    /// Count a request made today for `payer`.
    pub fn spend(&self, payer: Payer, t: &Tokens) {
        self.spend_on(&today(), payer, t);
    }

    fn spend_on(&self, day: &str, payer: Payer, t: &Tokens) {
        if !self.counted() || t.is_empty() {
            return;
        }
        self.with_day(day, |today| {
            let add = |n: &mut u64| *n = n.saturating_add(weight(t));
            add(today.chats.entry(chat_of(payer.chat)).or_default());
            if let Some(user) = payer.user_key() {
                add(today.users.entry(user).or_default());
            }
            let json = serde_json::to_vec(today).expect("counts serialise");
            if let Err(e) = tether::fsutil::replace(&self.file, &json) {
                log::warn!("cannot write {}: {e}", self.file.display());
            }
        });
    }

    /// The limit `payer` finds used up today: the agent's, the chat's, then the person's.
    pub fn reached(&self, payer: Payer) -> Option<Reached> {
        if !self.any() {
            // Asked several times a message: without a limit, no clock read, no lock.
            return None;
        }
        self.reached_on(&today(), payer)
    }

    fn reached_on(&self, day: &str, payer: Payer) -> Option<Reached> {
        self.used_on(day, payer).into_iter().find(|r| r.used >= r.limit)
    }

    /// What was taken on `day` against each limit set that applies to `payer` (a
    /// person's only where a message has one).
    fn used_on(&self, day: &str, payer: Payer) -> Vec<Reached> {
        let mut out = Vec::new();
        if let Some(limit) = self.config.daily {
            let used = self
                .ledger
                .on_day(day)
                .iter()
                .fold(0u64, |n, t| n.saturating_add(weight(&t.tokens())));
            out.push(Reached {
                whose: Whose::Agent,
                used,
                limit,
            });
        }
        let user = payer.user_key();
        self.with_day(day, |today| {
            if let Some(limit) = self.config.chat_daily {
                let used = today.chats.get(&chat_of(payer.chat)).copied().unwrap_or(0);
                out.push(Reached {
                    whose: Whose::Chat,
                    used,
                    limit,
                });
            }
            if let (Some(limit), Some(user)) = (self.config.user_daily, user) {
                let used = today.users.get(&user).copied().unwrap_or(0);
                out.push(Reached {
                    whose: Whose::User,
                    used,
                    limit,
                });
            }
        });
        out
    }

    /// The line `/usage` ends with for `payer`, when a limit is set.
    pub fn summary(&self, payer: Payer) -> Option<String> {
        self.summary_on(&today(), payer)
    }

    fn summary_on(&self, day: &str, payer: Payer) -> Option<String> {
        if !self.any() {
            return None;
        }
        let parts: Vec<String> = self
            .used_on(day, payer)
            .into_iter()
            .map(|r| {
                let who = match r.whose {
                    Whose::Agent => "the agent",
                    Whose::Chat => "this chat",
                    Whose::User => "you",
                };
                format!("{who} {} of {} tokens", grouped(r.used), grouped(r.limit))
            })
            .collect();
        Some(format!(
            "Daily limits (UTC; a token read from the prompt cache counts a tenth): {}.",
            parts.join("; ")
        ))
    }

    /// Whether scheduled task `task` is to be told of today (the first time only).
    pub fn first_telling(&self, task: &str) -> bool {
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        let day = today();
        told.retain(|k| k.starts_with(&day));
        told.insert(format!("{day}/{task}"))
    }

    /// `f` on the counts of `day`, read first if they have not been (a file of another
    /// day, or none, is a day without requests).
    fn with_day<R>(&self, day: &str, f: impl FnOnce(&mut ChatsToday) -> R) -> R {
        let mut chats = self.chats.lock().unwrap_or_else(|p| p.into_inner());
        let held = chats.get_or_insert_with(|| read(&self.file));
        if held.day != day {
            *held = ChatsToday {
                day: day.to_string(),
                ..ChatsToday::default()
            };
        }
        f(held)
    }
}

/// The counts in the file at `path`: none when it is missing or not counts (logged).
fn read(path: &Path) -> ChatsToday {
    let Ok(bytes) = crate::regular::read(path, MAX_FILE + 1) else {
        return ChatsToday::default();
    };
    let parsed = match bytes.len() as u64 > MAX_FILE {
        true => Err(format!("larger than {} MB", MAX_FILE / (1024 * 1024))),
        false => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    };
    parsed.unwrap_or_else(|e| {
        log::warn!(
            "{} is not a count of tokens ({e}); counting afresh",
            path.display()
        );
        ChatsToday::default()
    })
}

/// How long until the next UTC day, for people: `in 5 h 12 min`.
fn until_midnight(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    tether::time::wait_in_words(86_400 - secs % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(dir: &Path, config: LimitConfig) -> Limits {
        Limits::new(config, Arc::new(Ledger::open(dir)), dir)
    }

    fn tokens(input: u64, cache_read: u64, output: u64) -> Tokens {
        Tokens {
            input,
            cache_read,
            output,
            ..Tokens::default()
        }
    }

    #[test]
    fn a_cached_token_counts_a_tenth_and_nothing_overflows() {
        assert_eq!(weight(&tokens(10_000, 9_000, 500)), 1_000 + 900 + 500);
        assert_eq!(weight(&tokens(10, 1, 0)), 9 + 1, "a part of a token counts whole");
        assert_eq!(
            weight(&tokens(5, 50, 0)),
            1,
            "a server's cache count above its input"
        );
        assert_eq!(weight(&tokens(u64::MAX, 0, u64::MAX)), u64::MAX);
    }

    #[test]
    fn a_chats_topics_and_new_conversations_are_one_chat() {
        for id in ["-100123", "-100123:2", "-100123:t5", "-100123:t5:3"] {
            assert_eq!(chat_of(&Session::new("telegram", id)), "telegram/-100123", "{id}");
        }
        assert_eq!(chat_of(&Session::new("ui", "default")), "ui/default");
    }

    /// The chat `s`, nobody in particular.
    fn chat(s: &Session) -> Payer<'_> {
        Payer { chat: s, user: None }
    }

    #[test]
    fn each_chat_and_the_agent_have_their_limit_and_a_new_day_starts_afresh() {
        let dir = crate::testutil::TempDir::new("limits-count");
        let config = LimitConfig {
            daily: Some(3_000),
            chat_daily: Some(1_000),
            user_daily: None,
        };
        let l = limits(dir.path(), config);
        let (a, a_topic, b) = (
            Session::new("telegram", "1"),
            Session::new("telegram", "1:t7"),
            Session::new("telegram", "2"),
        );
        let day = "2026-12-07";
        l.spend_on(day, chat(&a), &tokens(600, 0, 100));
        l.ledger.record_on(day, "m", &tokens(600, 0, 100));
        assert_eq!(l.reached_on(day, chat(&a)), None);
        l.spend_on(day, chat(&a_topic), &tokens(300, 0, 0));
        l.ledger.record_on(day, "m", &tokens(300, 0, 0));
        let used_up = Reached {
            whose: Whose::Chat,
            used: 1_000,
            limit: 1_000,
        };
        assert_eq!(
            l.reached_on(day, chat(&a)),
            Some(used_up),
            "the topic counts for its chat"
        );
        assert_eq!(l.reached_on(day, chat(&b)), None, "another chat has its own");
        // Images, recaps, transcripts: the ledger's, the agent's only.
        l.ledger.record_on(day, "gpt-image-1", &tokens(0, 0, 2_500));
        let agent = l.reached_on(day, chat(&b)).expect("the agent's limit");
        assert_eq!((agent.whose, agent.used), (Whose::Agent, 3_500));
        assert_eq!(
            l.reached_on(day, chat(&a)).map(|r| r.whose),
            Some(Whose::Agent),
            "the agent's first"
        );
        // Kept across a restart; another day starts afresh.
        let again = limits(dir.path(), config);
        let used: Vec<u64> = again.used_on(day, chat(&a)).iter().map(|r| r.used).collect();
        assert_eq!(used, [3_500, 1_000]);
        assert_eq!(again.reached_on("2026-12-08", chat(&a)), None);
        assert!(
            std::fs::read_to_string(dir.path().join(FILE))
                .unwrap()
                .contains("2026-12-07"),
            "only a request rewrites the file"
        );
        again.spend_on("2026-12-08", chat(&a), &tokens(1, 0, 0));
        let file = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(file, r#"{"day":"2026-12-08","chats":{"telegram/1":1}}"#);
    }

    #[test]
    fn each_person_has_their_limit_in_every_chat() {
        let dir = crate::testutil::TempDir::new("limits-person");
        let config = LimitConfig {
            user_daily: Some(500),
            ..LimitConfig::default()
        };
        let l = limits(dir.path(), config);
        let (group, private) = (Session::new("telegram", "-100"), Session::new("telegram", "42"));
        let alice = |chat| Payer {
            chat,
            user: Some("42"),
        };
        let bob = Payer {
            chat: &group,
            user: Some("7"),
        };
        let day = "2026-12-07";
        l.spend_on(day, alice(&group), &tokens(300, 0, 0));
        l.spend_on(day, alice(&private), &tokens(200, 0, 0));
        let used_up = Reached {
            whose: Whose::User,
            used: 500,
            limit: 500,
        };
        assert_eq!(
            l.reached_on(day, alice(&group)),
            Some(used_up),
            "both chats count"
        );
        assert_eq!(l.reached_on(day, bob), None, "Bob has his own");
        assert_eq!(
            l.reached_on(day, chat(&group)),
            None,
            "a scheduled run, which nobody sent"
        );
        let file = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(file.contains(r#""users":{"telegram/42":500}"#), "{file}");
        assert_eq!(
            l.summary_on(day, alice(&private)).unwrap(),
            "Daily limits (UTC; a token read from the prompt cache counts a tenth): you 500 of 500 tokens."
        );
    }

    #[test]
    fn without_a_chat_limit_nothing_is_counted_or_written() {
        let dir = crate::testutil::TempDir::new("limits-off");
        let l = limits(
            dir.path(),
            LimitConfig {
                daily: Some(10),
                ..LimitConfig::default()
            },
        );
        let one = Session::new("telegram", "1");
        l.spend(chat(&one), &tokens(100, 0, 0));
        assert!(!dir.path().join(FILE).exists());
        let none = limits(dir.path(), LimitConfig::default());
        assert!(!none.any());
        assert_eq!(none.summary(chat(&one)), None);
        assert_eq!(none.reached(chat(&one)), None);
    }

    #[test]
    fn a_file_that_is_not_counts_is_a_day_without_requests() {
        let dir = crate::testutil::TempDir::new("limits-bad");
        let config = LimitConfig {
            chat_daily: Some(5),
            ..LimitConfig::default()
        };
        std::fs::create_dir_all(dir.path().join(".aegis")).unwrap();
        let one = Session::new("telegram", "1");
        for bad in [
            "[1]".to_string(),
            "{\"day\": 3}".into(),
            " ".repeat(MAX_FILE as usize + 2),
        ] {
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            let l = limits(dir.path(), config);
            assert_eq!(l.used_on(&today(), chat(&one))[0].used, 0);
        }
    }

    #[test]
    fn usage_shows_each_limit_set() {
        let dir = crate::testutil::TempDir::new("limits-usage");
        let l = limits(
            dir.path(),
            LimitConfig {
                daily: Some(2_000_000),
                chat_daily: Some(300_000),
                user_daily: Some(100_000),
            },
        );
        let group = Session::new("telegram", "1");
        let alice = Payer {
            chat: &group,
            user: Some("42"),
        };
        l.spend_on("2026-12-07", alice, &tokens(41_020, 0, 0));
        l.ledger.record_on("2026-12-07", "m", &tokens(412_300, 0, 0));
        assert_eq!(
            l.summary_on("2026-12-07", alice).unwrap(),
            "Daily limits (UTC; a token read from the prompt cache counts a tenth): the agent 412,300 of \
             2,000,000 tokens; this chat 41,020 of 300,000 tokens; you 41,020 of 100,000 tokens."
        );
    }

    #[test]
    fn a_task_is_told_of_once_a_day() {
        let dir = crate::testutil::TempDir::new("limits-told");
        let l = limits(dir.path(), LimitConfig::default());
        assert!(l.first_telling("t1"));
        assert!(!l.first_telling("t1"));
        assert!(l.first_telling("t2"));
    }

    #[test]
    fn notes_say_whose_limit_and_when_it_starts_afresh() {
        let r = Reached {
            whose: Whose::Chat,
            used: 301_245,
            limit: 300_000,
        };
        let at = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 18 * 3600 + 48 * 60);
        assert_eq!(
            r.refusal(at),
            "⚠️ Not sent to the model: this chat has used its daily limit (301,245 of 300,000 tokens \
             today). Send it again after 00:00 UTC (in 5 h 12 min)."
        );
        let agent = Reached {
            whose: Whose::Agent,
            ..r
        };
        assert!(agent
            .stop_note(at)
            .starts_with("⚠️ Stopped: the agent has used its daily limit"));
        assert!(r.task_note("call mom").ends_with("Its text: call mom"));
        assert_eq!(
            until_midnight(at + Duration::from_secs(5 * 3600 + 11 * 60 + 30)),
            "in 30 s"
        );
        assert_eq!(
            until_midnight(UNIX_EPOCH + Duration::from_secs(86_400 - 120)),
            "in 2 min"
        );
        assert_eq!(until_midnight(UNIX_EPOCH), "in 24 h");
    }
}
