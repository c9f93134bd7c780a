//! `cron_create`, `cron_list`, `cron_delete`, `cron_enable`, `cron_disable`: the
//! scheduled tasks in `<workspace>/.aegis/cron.json`. The agent only writes the file; the
//! host reads it and sends each run as a `user.message`, so the instance may sleep
//! between runs (see `tether::cron`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crossbeam_channel::Sender;

use serde_json::{json, Value};
use tether::at::At;
use tether::cron::{CronFile, Entry, OnConflict, Schedule, MAX_ENTRIES, MAX_TEXT, NEXT_FILE};
use tether::{Frame, Session};

use super::arg_str;

/// The zone the host said it evaluates the tasks in, if it said.
fn host_zone(host: &Value) -> Option<&str> {
    host["zone"].as_str().filter(|z| !z.is_empty())
}

/// Largest file the host writes for the agent read (next runs: 20 tasks take about 3 KB).
const MAX_HOST_FILE: u64 = 64 * 1024;

/// The task file and the lock that serialises its writers.
#[derive(Debug)]
pub struct CronTools {
    path: PathBuf,
    lock: Mutex<()>,
    /// agent.json's `timezone`, which the host evaluates schedules in.
    timezone: Option<String>,
    /// Where a run a chat asks for now goes: the router's queue of the agent's own
    /// messages (set once the router exists).
    tell: OnceLock<Sender<Frame>>,
}

impl CronTools {
    /// The tasks of `workspace`; `timezone` is agent.json's (else the host's local time).
    pub fn new(workspace: &Path, timezone: Option<&str>) -> CronTools {
        CronTools {
            path: workspace.join(".aegis/cron.json"),
            lock: Mutex::new(()),
            timezone: timezone.map(str::to_string),
            tell: OnceLock::new(),
        }
    }

    /// Runs asked for now (`/tasks run ID`) go to `tell`, the router's own queue.
    pub fn send_runs_to(&self, tell: Sender<Frame>) {
        let _ = self.tell.set(tell);
    }

    /// Whether runs asked for now can be queued (the router's queue is known).
    pub(super) fn starts_runs(&self) -> bool {
        self.tell.get().is_some()
    }

    /// Queue the run of `entry` asked for now under its `run_now` id.
    pub(super) fn send_run(&self, entry: &Entry, msg_id: &str) -> Result<(), String> {
        let tell = self.tell.get().ok_or("this agent cannot start runs itself")?;
        tell.send(tether::cron::run_frame(entry, msg_id.to_string()))
            .map_err(|_| "the agent is stopping".to_string())
    }

    /// At the agent's start: send again the runs asked for now that were not answered
    /// when it stopped (a stored but unanswered one is answered; one answered already,
    /// its record not yet cleared, is recognised and dropped).
    pub fn recover_runs(&self) {
        let Ok(file) = self.load() else { return };
        for e in &file.entries {
            if let Some(msg_id) = &e.run_now {
                log::info!("task {}: sending again the run asked for ({msg_id})", e.id);
                if let Err(why) = self.send_run(e, msg_id) {
                    log::warn!("task {}: run asked for not sent again: {why}", e.id);
                }
            }
        }
    }

    /// The run asked for as `msg_id` is answered: its record goes, and a one-time task
    /// with it, as after a run its host sent.
    pub fn run_answered(&self, msg_id: &str) -> Result<(), String> {
        self.forget_run(msg_id, true)
    }

    /// Clear the record of the run asked for as `msg_id`; `done`: it ran, and a one-time
    /// task is deleted.
    pub(super) fn forget_run(&self, msg_id: &str, done: bool) -> Result<(), String> {
        self.edit(|file| {
            file.entries
                .retain(|e| !done || e.run_now.as_deref() != Some(msg_id) || e.at.is_none());
            if let Some(e) = file
                .entries
                .iter_mut()
                .find(|e| e.run_now.as_deref() == Some(msg_id))
            {
                e.run_now = None;
            }
            Ok(())
        })
    }

    fn load(&self) -> Result<CronFile, String> {
        crate::json_file::load(&self.path)
    }

    /// Write the file whole, so the host never reads half.
    fn save(&self, file: &CronFile) -> Result<(), String> {
        crate::json_file::save(&self.path, file)
    }

    /// `cron_create {schedule | at | in_minutes, text (or message), session?,
    /// on_conflict?, id?}` from `origin`, the chat whose message is being answered: the
    /// task's replies go there.
    /// `creator` is whose message asked for it: its runs get that person's tools.
    /// [ours] With `id`, that task is changed instead: its new time and text, its
    /// conversation, chat and creator kept.
    pub fn create(&self, args: &Value, origin: &Session, creator: Option<&str>) -> Result<String, String> {
        let when = When::from_args(args, now_secs())?;
        let text = match (args.get("text"), args.get("message")) {
            (Some(_), _) => arg_str(args, "text")?,
            (None, _) => arg_str(args, "message").map_err(|_| "text is required".to_string())?,
        }
        .trim()
        .to_string();
        if text.is_empty() {
            return Err("text is empty".into());
        }
        if text.chars().count() > MAX_TEXT {
            return Err(format!("text is longer than {MAX_TEXT} characters"));
        }
        let on_conflict = match args.get("on_conflict").and_then(Value::as_str) {
            None | Some("skip") => OnConflict::Skip,
            Some("queue") => OnConflict::Queue,
            Some(other) => {
                return Err(format!(
                    "on_conflict must be \"skip\" or \"queue\", not {other:?}"
                ))
            }
        };
        let _guard = self.lock.lock().expect("cron lock");
        let mut file = self.load()?;
        let (schedule, at) = match &when {
            When::Every(expr) => (expr.clone(), None),
            When::Once(at) => (format!("once at {at}"), Some(at.to_string())),
        };
        let changing = match args.get("id").and_then(Value::as_str).map(str::trim) {
            Some(given) if !given.is_empty() => Some(crate::text::full_id(given, "cron-")),
            _ => None,
        };
        if let Some(id) = changing {
            let entry = file
                .entries
                .iter_mut()
                .find(|e| e.id == id)
                .ok_or_else(|| format!("no scheduled task {id:?} to change (cron_list lists them)"))?;
            entry.schedule = schedule.clone();
            entry.at = at.clone();
            entry.message = text;
            entry.on_conflict = on_conflict;
            entry.enabled = true;
            // The host runs a task for no minute before this: a new time never fires for
            // one that passed while the task said otherwise.
            entry.created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            self.save(&file)?;
            return Ok(Self::made(&id, &when, at, &schedule, &self.zone_note(), true));
        }
        if file.entries.len() >= MAX_ENTRIES {
            return Err(format!(
                "there are already {MAX_ENTRIES} scheduled tasks, the most allowed; delete one first"
            ));
        }
        let number = file.next_id.max(1);
        file.next_id = number + 1;
        let id = format!("cron-{number}");
        let session = match args.get("session").and_then(Value::as_str).map(str::trim) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => id.clone(),
        };
        // Replies go to the chat the task came from, unless that was itself a task run.
        let reply_to = (origin.channel != "cron").then(|| origin.clone());
        file.entries.push(Entry {
            id: id.clone(),
            schedule: schedule.clone(),
            at: at.clone(),
            message: text,
            session,
            on_conflict,
            enabled: true,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            reply_to,
            created_by: creator.map(str::to_string),
            run_now: None,
        });
        self.save(&file)?;
        Ok(Self::made(&id, &when, at, &schedule, &self.zone_note(), false))
    }

    /// `cron_create`'s answer for task `id`, made or `changed`.
    fn made(
        id: &str,
        when: &When,
        at: Option<String>,
        schedule: &str,
        zone_note: &str,
        changed: bool,
    ) -> String {
        let mut out = match (when, at) {
            (When::Once(At::Instant(_)), Some(at)) => {
                json!({"ok": true, "id": id, "runs_once_at": at, "note": "a time in UTC; the task is deleted once it has run"})
            }
            (When::Once(_), Some(at)) => json!({"ok": true, "id": id, "runs_once_at": at,
                "note": format!("{zone_note}; the task is deleted once it has run")}),
            _ => json!({"ok": true, "id": id, "schedule": schedule, "runs": in_words(schedule),
                "note": format!("{zone_note}; tell the user when it runs, in words")}),
        };
        if changed {
            out["changed"] = true.into();
        }
        out.to_string()
    }

    /// Who asked for task `id` (`None`: nobody recorded, or no such task).
    pub fn creator(&self, id: &str) -> Option<String> {
        let file = self.load().ok()?;
        file.entries.into_iter().find(|e| e.id == id)?.created_by
    }

    /// Delete one-time task `id` once its run has reached the agent; false when it is not
    /// one (a recurring task stays).
    pub fn ran(&self, id: &str) -> Result<bool, String> {
        let _guard = self.lock.lock().expect("cron lock");
        let mut file = self.load()?;
        let before = file.entries.len();
        file.entries.retain(|e| e.id != id || e.at.is_none());
        if file.entries.len() == before {
            return Ok(false);
        }
        self.save(&file)?;
        Ok(true)
    }

    /// The workspace the tasks are of.
    pub(super) fn workspace(&self) -> &Path {
        self.path
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| Path::new("."))
    }

    /// Every task, as the file holds them.
    pub(super) fn entries(&self) -> Result<Vec<Entry>, String> {
        Ok(self.load()?.entries)
    }

    /// What schedules are evaluated in, said with them so the model knows what "9:00"
    /// means: agent.json's zone, else the host's as the host says (once it has evaluated
    /// the tasks; see `tether::cron::NextRuns`).
    pub(super) fn zone_note(&self) -> String {
        self.zone_note_of(&self.host_says())
    }

    /// [`CronTools::zone_note`] from what the host said (`host`), read once by a caller
    /// that shows the next runs too.
    pub(super) fn zone_note_of(&self, host: &Value) -> String {
        // The host's word goes first: it evaluates them, and reads agent.json afresh.
        match (
            self.timezone.as_deref(),
            host_zone(host),
            host["problem"].as_str(),
        ) {
            (_, Some(zone), Some(why)) => format!("schedules are evaluated in the {zone} time zone ({why})"),
            (Some(tz), Some(zone), _) if tz != zone => {
                format!("schedules are evaluated in the {zone} time zone, as the host says")
            }
            (Some(tz), _, _) => {
                format!("schedules are evaluated in the {tz} time zone (agent.json timezone)")
            }
            (None, Some(zone), _) => format!(
                "schedules are evaluated in the host's time zone, {zone} (agent.json timezone sets another)"
            ),
            (None, None, _) => "schedules are evaluated in the host's local time".into(),
        }
    }

    /// What the host that fires the tasks last said of them (`tether::cron::NextRuns`):
    /// its zone and their next runs; `Null` under a host that does not say (upstream's).
    /// Read as JSON: the typed form's deserializers would cost the guest 7 KiB of code.
    pub(super) fn host_says(&self) -> Value {
        // The model can put a FIFO there: never waited on.
        crate::regular::read(&self.path.with_file_name(NEXT_FILE), MAX_HOST_FILE)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Why `chat` cannot be written to, as the host's gateway said
    /// (`.aegis/gone-chats.json`, `tether::cron::GONE_FILE`): its words and since when.
    pub(super) fn chat_gone(&self, chat: &Session) -> Option<String> {
        if chat.channel != "telegram" {
            return None;
        }
        let path = self.path.with_file_name(tether::cron::GONE_FILE);
        // The model can put a FIFO there: never waited on.
        let bytes = crate::regular::read(&path, MAX_HOST_FILE).ok()?;
        let file: Value = serde_json::from_slice(&bytes).ok()?;
        // `42`, `42:3` after /new, `-100:t7` in a topic: the chat is the first part.
        let id = chat.id.split(':').next()?;
        let gone = &file["chats"][id];
        let why = gone["why"].as_str()?;
        Some(format!("{why}, since {}", gone["since"].as_str().unwrap_or("?")))
    }

    /// When `e` runs next, as the host said (`host`), seen at unix second `now`: the wall
    /// time and the unix second; `None` for a paused task, one changed since the host
    /// looked, or a time gone by (the host is down, or has not looked since).
    pub(super) fn next_run<'a>(e: &Entry, host: &'a Value, now: i64) -> Option<(&'a str, i64)> {
        let next = &host["tasks"][&e.id];
        let when = e.at.as_deref().unwrap_or(&e.schedule);
        let (local, unix) = (next["local"].as_str()?, next["unix"].as_i64()?);
        (e.enabled && next["when"] == when && unix > now).then_some((local, unix))
    }

    /// Change the file under the lock: `change` edits it, and it is written when that
    /// succeeds.
    pub(super) fn edit<T>(
        &self,
        change: impl FnOnce(&mut CronFile) -> Result<T, String>,
    ) -> Result<T, String> {
        let _guard = self.lock.lock().expect("cron lock");
        let mut file = self.load()?;
        let out = change(&mut file)?;
        self.save(&file)?;
        Ok(out)
    }

    /// `cron_list {}`.
    pub fn list(&self) -> Result<String, String> {
        let file = self.load()?;
        let host = self.host_says();
        let zone = host_zone(&host).unwrap_or_default();
        let now = now_secs();
        let entries: Vec<Value> = file
            .entries
            .iter()
            .map(|e| {
                let mut v = json!(e);
                if e.at.is_none() {
                    v["runs"] = json!(in_words(&e.schedule));
                }
                if let Some((local, _)) = Self::next_run(e, &host, now) {
                    v["next_run"] = json!(format!("{local} {zone}"));
                }
                v
            })
            .collect();
        let note = self.zone_note_of(&host);
        Ok(json!({"count": entries.len(), "entries": entries, "note": note}).to_string())
    }

    /// `cron_delete {id}`.
    pub fn delete(&self, args: &Value) -> Result<String, String> {
        let id = arg_str(args, "id")?;
        self.edit(|file| {
            let before = file.entries.len();
            file.entries.retain(|e| e.id != id);
            match file.entries.len() == before {
                true => Err(format!("no scheduled task {id:?}")),
                false => Ok(json!({"ok": true}).to_string()),
            }
        })
    }

    /// `cron_enable {id}` / `cron_disable {id}`.
    pub fn set_enabled(&self, args: &Value, enabled: bool) -> Result<String, String> {
        let id = arg_str(args, "id")?;
        self.edit(|file| {
            let entry = file
                .entries
                .iter_mut()
                .find(|e| e.id == id)
                .ok_or_else(|| format!("no scheduled task {id:?}"))?;
            entry.enabled = enabled;
            Ok(json!({"ok": true, "enabled": enabled}).to_string())
        })
    }
}

/// When a new task runs, from `cron_create`'s arguments.
#[derive(Debug, PartialEq)]
enum When {
    /// A 5-field expression.
    Every(String),
    /// Once.
    Once(At),
}

/// The longest `in_minutes`: a year.
const MAX_IN_MINUTES: u64 = 366 * 24 * 60;

impl When {
    /// Exactly one of `schedule`, `at`, `in_minutes`, checked against unix time `now`.
    fn from_args(args: &Value, now: i64) -> Result<When, String> {
        let given: Vec<&str> = ["schedule", "at", "in_minutes"]
            .into_iter()
            .filter(|k| args.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        match given[..] {
            ["schedule"] => {
                let expr = arg_str(args, "schedule")?.trim().to_string();
                let schedule = Schedule::parse(&expr).map_err(|e| format!("invalid schedule: {e}"))?;
                // Kept, it would stay silent for ever while the user waits for it.
                if schedule.never_runs() {
                    return Err(format!(
                        "schedule {expr:?} never runs: no month has the day it names ({})",
                        schedule.in_words()
                    ));
                }
                Ok(When::Every(expr))
            }
            ["at"] => {
                let at = At::parse(arg_str(args, "at")?).map_err(|e| format!("invalid at: {e}"))?;
                let past = match at {
                    At::Instant(secs) => secs.div_euclid(60) <= now.div_euclid(60),
                    // A wall time is placed by the host, in the tasks' zone; any zone is
                    // within 14 hours of UTC.
                    At::Local(c) => c.unix_seconds_as_utc() + 14 * 3600 <= now,
                };
                if past {
                    return Err(format!(
                        "at {at} has passed: it is now {} (UTC)",
                        At::Instant(now)
                    ));
                }
                Ok(When::Once(at))
            }
            ["in_minutes"] => match args["in_minutes"].as_u64() {
                Some(n @ 1..=MAX_IN_MINUTES) => Ok(When::Once(At::Instant(now + n as i64 * 60))),
                _ => Err(format!(
                    "in_minutes must be a whole number of minutes from 1 to {MAX_IN_MINUTES}"
                )),
            },
            [] => Err("say when: schedule (recurring), at or in_minutes (once)".into()),
            _ => Err(format!(
                "give only one of schedule, at and in_minutes, not {}",
                given.join(" and ")
            )),
        }
    }
}

/// A recurring task's schedule in words ("at 09:00, Monday to Friday"); one that never
/// runs (a file edited by hand) says so, as the host logs it.
pub(super) fn in_words(expr: &str) -> String {
    match Schedule::parse(expr) {
        Ok(s) if s.never_runs() => format!("never: {}, a date no month has", s.in_words()),
        Ok(s) => s.in_words(),
        Err(e) => format!("never: {e}"),
    }
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_chat_the_gateway_cannot_write_to_is_found_under_every_session_of_it() {
        let d = TempDir::new("cron-gone");
        let c = CronTools::new(d.path(), None);
        let chat = |id: &str| Session::new("telegram", id);
        assert_eq!(c.chat_gone(&chat("42")), None, "no file");
        std::fs::create_dir_all(d.path().join(".aegis")).unwrap();
        let file = d.path().join(".aegis").join(tether::cron::GONE_FILE);
        std::fs::write(
            &file,
            json!({"chats": {"42": {"since": "2026-12-08T00:00:00Z", "why": "Forbidden: bot was blocked by the user"},
                "-100": {"since": "2026-12-08T00:00:00Z", "why": "Forbidden: bot was kicked from the supergroup chat"}}})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            c.chat_gone(&chat("42")).as_deref(),
            Some("Forbidden: bot was blocked by the user, since 2026-12-08T00:00:00Z")
        );
        assert!(c.chat_gone(&chat("42:3")).is_some(), "after /new");
        assert!(c.chat_gone(&chat("-100:t7:2")).is_some(), "a topic");
        assert_eq!(c.chat_gone(&chat("4242")), None);
        assert_eq!(
            c.chat_gone(&Session::new("kit", "42")),
            None,
            "the file names Telegram's chats"
        );
        // A FIFO the model put there is not waited on.
        std::fs::remove_file(&file).unwrap();
        crate::regular::tests::mkfifo(&file);
        let gone = crate::regular::tests::within_5s(move || c.chat_gone(&chat("42")));
        assert_eq!(gone, None);
    }

    #[test]
    fn tasks_are_created_listed_toggled_and_deleted() {
        let d = TempDir::new("cron-tools");
        let c = CronTools::new(d.path(), Some("Europe/Paris"));
        let chat = Session::new("telegram", "42");
        let out = c
            .create(
                &json!({"schedule": "0 9 * * 1-5", "text": "Standup summary"}),
                &chat,
                Some("7"),
            )
            .unwrap();
        assert!(
            out.contains("\"id\":\"cron-1\"") && out.contains("Europe/Paris"),
            "{out}"
        );
        // Said back in words, so the model can see what it scheduled.
        assert!(out.contains("\"runs\":\"at 09:00, Monday to Friday\""), "{out}");
        // Upstream's argument name works too.
        c.create(
            &json!({"schedule": "*/5 * * * *", "message": "ping", "on_conflict": "queue"}),
            &chat,
            None,
        )
        .unwrap();
        let file: CronFile =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(".aegis/cron.json")).unwrap())
                .unwrap();
        assert_eq!(file.entries.len(), 2);
        assert_eq!(file.entries[0].reply_to, Some(chat.clone()));
        assert_eq!(file.entries[0].session, "cron-1");
        assert_eq!(file.entries[1].on_conflict, OnConflict::Queue);
        // Whose message asked for each is kept, for its runs' tools.
        assert_eq!(
            (c.creator("cron-1").as_deref(), c.creator("cron-2")),
            (Some("7"), None)
        );
        assert_eq!(c.creator("cron-9"), None);
        c.set_enabled(&json!({"id": "cron-1"}), false).unwrap();
        let list = c.list().unwrap();
        assert!(list.contains("\"enabled\":false"), "{list}");
        assert!(list.contains("\"runs\":\"every 5 minutes\""), "{list}");
        // A date no month has would stay silent for ever: refused, and said why.
        assert_eq!(
            c.create(&json!({"schedule": "0 9 30 2 *", "text": "never"}), &chat, None),
            Err(
                "schedule \"0 9 30 2 *\" never runs: no month has the day it names \
                 (at 09:00, on the 30th, in February)"
                    .into()
            )
        );
        c.delete(&json!({"id": "cron-1"})).unwrap();
        assert!(c
            .delete(&json!({"id": "cron-1"}))
            .unwrap_err()
            .contains("no scheduled task"));
        // Ids are never reused.
        let out = c
            .create(&json!({"schedule": "0 0 * * *", "text": "x"}), &chat, None)
            .unwrap();
        assert!(out.contains("cron-3"), "{out}");
    }

    #[test]
    fn a_task_changed_by_id_keeps_its_conversation_chat_and_creator() {
        let d = TempDir::new("cron-change");
        let c = CronTools::new(d.path(), None);
        let chat = Session::new("telegram", "42");
        c.create(
            &json!({"schedule": "0 9 * * 1-5", "text": "Standup"}),
            &chat,
            Some("7"),
        )
        .unwrap();
        // Twenty tasks, the most: changing one still works.
        for i in 2..=20 {
            c.create(
                &json!({"schedule": "0 0 * * *", "text": format!("t{i}")}),
                &chat,
                None,
            )
            .unwrap();
        }
        // Paused, and made long ago.
        c.set_enabled(&json!({"id": "cron-1"}), false).unwrap();
        let path = d.path().join(".aegis/cron.json");
        let old = std::fs::read_to_string(&path).unwrap();
        let made = serde_json::from_str::<CronFile>(&old).unwrap().entries[0]
            .created_at
            .clone();
        std::fs::write(&path, old.replace(&made, "2026-01-05T00:00:00Z")).unwrap();
        let other = Session::new("telegram", "99");
        let out = c
            .create(
                &json!({"id": "1", "schedule": "30 8 * * 1-5", "text": "Standup, earlier"}),
                &other,
                Some("8"),
            )
            .unwrap();
        let said: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (&said["id"], &said["changed"], &said["runs"]),
            (
                &json!("cron-1"),
                &json!(true),
                &json!("at 08:30, Monday to Friday")
            ),
            "{said}"
        );
        let file: CronFile =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(".aegis/cron.json")).unwrap())
                .unwrap();
        let e = &file.entries[0];
        assert_eq!(file.entries.len(), 20);
        assert_eq!(file.next_id, 21, "no id taken");
        assert_eq!(
            (e.schedule.as_str(), e.message.as_str(), e.session.as_str()),
            ("30 8 * * 1-5", "Standup, earlier", "cron-1")
        );
        assert_eq!(
            (e.reply_to.as_ref(), e.created_by.as_deref()),
            (Some(&chat), Some("7"))
        );
        // On again, and made now for the host: no minute before the change runs it.
        assert!(e.enabled);
        assert!(e.created_at.as_str() > "2026-01-05T00:00:00Z", "{}", e.created_at);
        // Into a reminder, and an id that is no task.
        let once = c
            .create(
                &json!({"id": "cron-1", "in_minutes": 5, "text": "Call"}),
                &chat,
                None,
            )
            .unwrap();
        assert!(
            once.contains("\"runs_once_at\"") && once.contains("\"changed\":true"),
            "{once}"
        );
        assert_eq!(
            c.create(
                &json!({"id": "cron-77", "in_minutes": 5, "text": "x"}),
                &chat,
                None
            ),
            Err("no scheduled task \"cron-77\" to change (cron_list lists them)".into())
        );
    }

    #[test]
    fn a_one_time_task_is_given_by_time_or_delay_and_deleted_once_it_ran() {
        let now = 1_796_284_800; // 2026-12-03T08:00:00Z
        let when = |args: Value| When::from_args(&args, now);
        assert_eq!(
            when(json!({"in_minutes": 20})),
            Ok(When::Once(At::Instant(now + 1200)))
        );
        assert_eq!(
            when(json!({"at": "2026-12-03T09:00+01:00", "schedule": null})),
            Err("at 2026-12-03T08:00:00Z has passed: it is now 2026-12-03T08:00:00Z (UTC)".into())
        );
        assert_eq!(
            when(json!({"at": "2026-12-03T08:01Z"})),
            Ok(When::Once(At::Instant(now + 60)))
        );
        // A wall time is the host's to place: only one past in every zone is refused.
        assert!(when(json!({"at": "2026-12-02T19:00"})).is_ok());
        assert!(when(json!({"at": "2026-12-02T17:59"}))
            .unwrap_err()
            .contains("has passed"));
        for (args, why) in [
            (json!({"in_minutes": 0}), "from 1 to"),
            (json!({"in_minutes": 2.5}), "whole number"),
            (json!({"in_minutes": "20"}), "whole number"),
            (json!({"in_minutes": 600_000}), "from 1 to 527040"),
            (json!({"at": "tomorrow 9am"}), "invalid at"),
            (json!({"at": "2026-12-04T09:00", "in_minutes": 5}), "only one of"),
            (json!({}), "say when"),
        ] {
            let e = when(args.clone()).unwrap_err();
            assert!(e.contains(why), "{args}: {e}");
        }

        let d = TempDir::new("cron-tools-once");
        let c = CronTools::new(d.path(), None);
        let chat = Session::new("telegram", "42");
        let out = c
            .create(&json!({"in_minutes": 5, "text": "tea"}), &chat, None)
            .unwrap();
        assert!(
            out.contains("runs_once_at") && out.contains("deleted once it has run"),
            "{out}"
        );
        c.create(&json!({"schedule": "0 9 * * *", "text": "daily"}), &chat, None)
            .unwrap();
        let file: CronFile =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(".aegis/cron.json")).unwrap())
                .unwrap();
        let at = file.entries[0].at.clone().unwrap();
        assert_eq!(file.entries[0].schedule, format!("once at {at}"));
        assert_eq!(file.entries[1].at, None);
        assert_eq!(c.ran("cron-2"), Ok(false), "a recurring task stays");
        assert_eq!(c.ran("cron-1"), Ok(true));
        assert_eq!(c.ran("cron-1"), Ok(false));
        assert!(!c.list().unwrap().contains("tea"));
    }

    #[test]
    fn bad_tasks_are_refused_with_a_reason() {
        let d = TempDir::new("cron-tools-bad");
        let c = CronTools::new(d.path(), None);
        let chat = Session::new("telegram", "42");
        let e = |args: Value| c.create(&args, &chat, None).unwrap_err();
        assert!(e(json!({"schedule": "0 25 * * *", "text": "x"})).contains("hour"));
        assert!(e(json!({"schedule": "0 9 * * *"})).contains("text is required"));
        assert!(
            e(json!({"schedule": "0 9 * * *", "text": "x", "on_conflict": "later"})).contains("on_conflict")
        );
        assert!(e(json!({"schedule": "0 9 * * *", "text": "y".repeat(1001)})).contains("longer"));
        for i in 0..MAX_ENTRIES {
            c.create(
                &json!({"schedule": "0 9 * * *", "text": format!("t{i}")}),
                &chat,
                None,
            )
            .unwrap();
        }
        assert!(e(json!({"schedule": "0 9 * * *", "text": "one more"})).contains("already 20"));
    }
}
