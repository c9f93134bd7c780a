//! Scheduled tasks: the `<workspace>/.aegis/cron.json` file the agent's cron tools write
//! and the host reads (upstream's shape), and its 5-field schedule expressions.
//!
//! The file is the contract between a guest that may sleep and the host that wakes it, so
//! both sides use this one parser: what the agent accepts, the host fires.
//!
//! Expressions: `minute hour day-of-month month day-of-week`, each `*`, `N`, `N-M`, `*/S`,
//! `N-M/S` or a comma list of those; day of week 0-6 with 0 = Sunday (7 is taken as
//! Sunday too). When both day fields are restricted, a day matching either runs the task,
//! as in every Unix cron. Names (`MON`, `JAN`) and `@daily`-style shortcuts are refused
//! with a message saying so.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frame::{kind, Session, User, UserMessage};
use crate::Frame;

mod words;

/// Most entries a file may hold; the host ignores the rest.
pub const MAX_ENTRIES: usize = 20;
/// Longest task text.
pub const MAX_TEXT: usize = 1000;
/// Largest cron.json the host reads.
pub const MAX_FILE: u64 = 256 * 1024;

/// What to do when a task is due while its previous run is unanswered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Drop this run.
    #[default]
    Skip,
    /// Send it anyway; it waits behind the running one.
    Queue,
}

/// One task (upstream's fields, plus `reply_to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `cron-N`.
    pub id: String,
    /// The schedule expression.
    pub schedule: String,
    /// The text sent as the user message when it runs.
    pub message: String,
    /// Session id on channel `cron` that keeps the task's conversation.
    pub session: String,
    /// Skip or queue a run due while the previous one is unanswered.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Off: kept but never run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
    /// [ours] The chat the task was created from: its replies are shown there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Session>,
    /// [ours] The user whose message asked for the task: its runs get that person's tools
    /// (the agent's `AEGIS_TRUSTED_USERS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// [ours] A one-time task: when it runs ([`crate::at::At`]); `schedule` then only
    /// describes it ("once at ..."), for upstream's tools, which cannot fire it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// [ours] A run a chat asked for now (`/tasks run ID`), until it is answered: its
    /// `msg_id` ([`now_msg_id`]), so an agent that stopped before answering sends it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now: Option<String>,
}

fn yes() -> bool {
    true
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CronFile {
    /// Tasks.
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// Number of the next `cron-N` id.
    #[serde(default)]
    pub next_id: u64,
}

/// [ours] The host that fires the tasks tells the agent what it alone knows
/// (`.aegis/cron-next.json`, rewritten when it changes): the time zone it evaluates them
/// in, which may be the host's own, and when each runs next. Only for showing: a file the
/// guest can write decides nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NextRuns {
    /// The zone's name (`Europe/Paris`), or how far from UTC it is when the host's own
    /// has no name (`UTC+01:00`).
    #[serde(default)]
    pub zone: String,
    /// Why that is not agent.json's `timezone` when agent.json names one (a name the
    /// host's time zone database does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// By task id, the enabled tasks that run again within [`NEXT_HORIZON_DAYS`].
    #[serde(default)]
    pub tasks: std::collections::BTreeMap<String, NextRun>,
}

/// When one task runs next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextRun {
    /// The task's `schedule` (or `at`) this was worked out from: a task changed since
    /// is not shown this time.
    pub when: String,
    /// Unix seconds.
    pub unix: i64,
    /// The wall time in the zone, `Tue 2026-12-08 09:00`.
    pub local: String,
}

/// [ours] Chats the host's gateway can no longer write to (the user blocked the bot, a
/// group removed it), in the workspace's `.aegis`: `{"chats": {"42": {"since": RFC3339,
/// "why": "Forbidden: bot was blocked by the user"}}}`, by the chat part of a session id.
/// A task whose replies go to one is not run (the agent's worker).
pub const GONE_FILE: &str = "gone-chats.json";

/// Where [`NextRuns`] is kept, in the workspace's `.aegis`.
pub const NEXT_FILE: &str = "cron-next.json";
/// How far ahead a next run is looked for (a task for 29 February runs within 8 years).
pub const NEXT_HORIZON_DAYS: i64 = 8 * 366;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

impl ScheduleError {
    pub(crate) fn new(why: String) -> ScheduleError {
        ScheduleError(why)
    }
}

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_any: bool,
    dow_any: bool,
}

/// A wall-clock minute in the schedule's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minute {
    /// 0-59.
    pub minute: u8,
    /// 0-23.
    pub hour: u8,
    /// 1-31.
    pub day: u8,
    /// 1-12.
    pub month: u8,
    /// 0-6, 0 = Sunday.
    pub weekday: u8,
}

const FIELDS: [(&str, u8, u8); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

impl Schedule {
    /// Parse `expr`; the error names the field and the problem.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let err = |m: String| ScheduleError(m);
        if expr.trim_start().starts_with('@') {
            return Err(err(format!(
                "{expr:?}: shortcuts like @daily are not supported; write the 5 fields (e.g. \"0 9 * * *\")"
            )));
        }
        let parts: Vec<&str> = expr.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!(
                "{expr:?} has {} fields; a schedule has 5: minute hour day-of-month month day-of-week",
                parts.len()
            )));
        }
        let mut sets = [0u64; 5];
        for (i, (part, (name, lo, hi))) in parts.iter().zip(FIELDS).enumerate() {
            sets[i] = field(part, lo, hi).map_err(|m| err(format!("{name} {part:?}: {m}")))?;
        }
        // 7 is Sunday as well.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] & !(1 << 7)) | 1;
        }
        Ok(Schedule {
            minute: sets[0],
            hour: sets[1],
            dom: sets[2],
            month: sets[3],
            dow: sets[4],
            dom_any: parts[2].starts_with('*'),
            dow_any: parts[4].starts_with('*'),
        })
    }

    /// Whether the task runs in minute `m`.
    pub fn matches(&self, m: Minute) -> bool {
        self.runs_on(m) && bit(self.hour, m.hour) && bit(self.minute, m.minute)
    }

    /// Whether the task runs on `m`'s day (its month, day of month and day of week).
    pub fn runs_on(&self, m: Minute) -> bool {
        let dom = bit(self.dom, m.day);
        let dow = bit(self.dow, m.weekday);
        let day = match (self.dom_any, self.dow_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        };
        bit(self.month, m.month) && day
    }

    /// Whether the task runs in some minute of `m`'s hour, on a day it runs.
    pub fn runs_in_hour(&self, m: Minute) -> bool {
        self.runs_on(m) && bit(self.hour, m.hour)
    }
}

fn bit(set: u64, v: u8) -> bool {
    set & (1u64 << v) != 0
}

/// The bit set of one field.
fn field(text: &str, lo: u8, hi: u8) -> Result<u64, String> {
    // Quartz's and some crons' marks: a model that knows them reaches for them first.
    if text.contains(['L', 'W', '#', '?']) {
        return Err(
            "L (last), W (weekday), # (nth weekday) and ? are not supported; for the last day \
             of the month, run on days 28-31 and have the task check whether tomorrow is the 1st"
                .into(),
        );
    }
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u8 = s.parse().map_err(|_| format!("step {s:?} is not a number"))?;
                if s == 0 {
                    return Err("a step of 0".into());
                }
                (r, s)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, lo, hi)?, number(b, lo, hi)?)
        } else {
            let n = number(range, lo, hi)?;
            // `N/S` means from N to the end, stepping S.
            (n, if step > 1 { hi } else { n })
        };
        if from > to {
            return Err(format!("range {from}-{to} runs backwards"));
        }
        let mut v = from;
        while v <= to {
            set |= 1 << v;
            v = match v.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    Ok(set)
}

fn number(s: &str, lo: u8, hi: u8) -> Result<u8, String> {
    if s.is_empty() {
        return Err("an empty value".into());
    }
    if s.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(format!("{s:?}: names are not supported, use numbers"));
    }
    let n: u8 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if n < lo || n > hi {
        return Err(format!("{n} is outside {lo}-{hi}"));
    }
    Ok(n)
}

/// The `msg_id` of the run of task `id` due at `unix_minute` (seconds / 60): the same on
/// every host and after every restart, so a run is recognised when it is sent twice.
pub fn run_msg_id(id: &str, unix_minute: i64) -> String {
    format!("cron-{id}-{unix_minute}")
}

/// The `user.message` of a run of `entry` under `msg_id`: channel `cron`, the task's
/// session, user "Scheduled Task", the chat to answer in.
pub fn run_frame(entry: &Entry, msg_id: String) -> Frame {
    Frame::new(kind::USER_MESSAGE, Some(Session::new("cron", &entry.session)))
        .with_payload(&UserMessage {
            text: entry.message.clone(),
            user: Some(User {
                id: Some("cron".into()),
                username: None,
                name: Some("Scheduled Task".into()),
            }),
            reply_to: entry.reply_to.clone(),
            ..UserMessage::default()
        })
        .with_msg_id(msg_id)
}

/// [ours] The `msg_id` of a run of task `id` a chat asked for at unix second `secs`: never
/// one a host sends, so neither is taken for a copy of the other.
pub fn now_msg_id(id: &str, secs: i64) -> String {
    format!("cron-{id}-now{secs}")
}

/// Whether `msg_id` is a run a chat asked for ([`now_msg_id`]).
pub fn is_run_now(msg_id: &str) -> bool {
    task_of_msg_id(msg_id).is_some() && msg_id.rsplit_once('-').is_some_and(|(_, t)| t.starts_with("now"))
}

/// The task id of a run's `msg_id` (a host's or one asked for now), if it is one.
pub fn task_of_msg_id(msg_id: &str) -> Option<&str> {
    let rest = msg_id.strip_prefix("cron-")?;
    let (id, minute) = rest.rsplit_once('-')?;
    let minute = minute.strip_prefix("now").unwrap_or(minute);
    (!minute.starts_with(['+', '-']) && minute.parse::<i64>().is_ok()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(minute: u8, hour: u8, day: u8, month: u8, weekday: u8) -> Minute {
        Minute {
            minute,
            hour,
            day,
            month,
            weekday,
        }
    }

    #[test]
    fn common_schedules() {
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        assert!(every5.matches(at(0, 3, 1, 1, 0)) && every5.matches(at(55, 3, 1, 1, 0)));
        assert!(!every5.matches(at(7, 3, 1, 1, 0)));
        let weekdays9 = Schedule::parse("0 9 * * 1-5").unwrap();
        assert!(weekdays9.matches(at(0, 9, 14, 3, 1)));
        assert!(!weekdays9.matches(at(0, 9, 14, 3, 0)), "Sunday");
        assert!(!weekdays9.matches(at(1, 9, 14, 3, 1)));
        let list = Schedule::parse("15,45 8-10/2 * * *").unwrap();
        assert!(list.matches(at(45, 10, 1, 1, 1)) && !list.matches(at(45, 9, 1, 1, 1)));
        let sunday7 = Schedule::parse("0 0 * * 7").unwrap();
        assert!(sunday7.matches(at(0, 0, 5, 5, 0)));
        // Both day fields restricted: either one.
        let either = Schedule::parse("0 0 1 * 1").unwrap();
        assert!(either.matches(at(0, 0, 1, 6, 3)) && either.matches(at(0, 0, 9, 6, 1)));
        assert!(!either.matches(at(0, 0, 9, 6, 3)));
        let from = Schedule::parse("10/20 * * * *").unwrap();
        assert!(from.matches(at(10, 0, 1, 1, 0)) && from.matches(at(50, 0, 1, 1, 0)));
        assert!(!from.matches(at(0, 0, 1, 1, 0)));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let e = |s: &str| Schedule::parse(s).unwrap_err().to_string();
        assert!(e("* * * *").contains("has 4 fields"));
        assert!(e("60 * * * *").contains("minute \"60\": 60 is outside 0-59"));
        assert!(e("0 9 * * MON").contains("names are not supported"));
        assert!(e("@daily").contains("shortcuts"));
        assert!(e("*/0 * * * *").contains("step of 0"));
        assert!(e("5-1 * * * *").contains("backwards"));
        assert!(e("0 0 0 * *").contains("day of month"));
        assert!(e("1,,2 * * * *").contains("empty"));
        assert!(e("0 9 L * *").contains("L (last), W (weekday), # (nth weekday) and ? are not supported"));
        assert!(e("0 9 ? * 1#2").contains("not supported"));
    }

    #[test]
    fn run_ids_round_trip() {
        assert_eq!(run_msg_id("cron-3", 29_000_000), "cron-cron-3-29000000");
        assert_eq!(task_of_msg_id("cron-cron-3-29000000"), Some("cron-3"));
        assert_eq!(task_of_msg_id("tg-1-2"), None);
        let now = now_msg_id("cron-3", 1_796_284_800);
        assert_eq!(now, "cron-cron-3-now1796284800");
        assert_eq!(task_of_msg_id(&now), Some("cron-3"));
        assert!(is_run_now(&now) && !is_run_now("cron-cron-3-29000000"));
        assert!(!is_run_now("tg-now-now1") && task_of_msg_id("cron-cron-3-now").is_none());
        assert_eq!(task_of_msg_id("cron-cron-3-now+5"), None);
    }

    proptest! {
        #[test]
        fn run_ids_name_their_task_whatever_the_id(id in "[a-z0-9-]{1,20}", n in 0i64..i64::MAX) {
            let (host, now) = (run_msg_id(&id, n), now_msg_id(&id, n));
            prop_assert_eq!(task_of_msg_id(&host), Some(id.as_str()));
            prop_assert_eq!(task_of_msg_id(&now), Some(id.as_str()));
            prop_assert!(is_run_now(&now) && !is_run_now(&host));
        }

        #[test]
        fn any_msg_id_is_read_without_panicking(s in "\\PC{0,60}") {
            let _ = (task_of_msg_id(&s), is_run_now(&s));
        }

        #[test]
        fn any_text_parses_or_errors_without_panicking(s in "\\PC{0,40}") {
            let _ = Schedule::parse(&s);
        }

        #[test]
        fn fields_from_numbers_never_panic(a in 0u32..300, b in 0u32..300, c in 0u32..70) {
            let _ = Schedule::parse(&format!("{a}-{b}/{c} * * * *"));
            let _ = Schedule::parse(&format!("*/{c} {a} {b} * *"));
        }

        #[test]
        fn a_parsed_exact_minute_matches_only_itself(m in 0u8..60, h in 0u8..24, other in 0u8..60) {
            let s = Schedule::parse(&format!("{m} {h} * * *")).unwrap();
            prop_assert!(s.matches(at(m, h, 1, 1, 0)));
            prop_assert_eq!(s.matches(at(other, h, 1, 1, 0)), other == m);
        }
    }
}
