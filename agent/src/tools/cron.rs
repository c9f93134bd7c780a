//! `cron_create`, `cron_list`, `cron_delete`, `cron_enable`, `cron_disable`: the
//! scheduled tasks in `<workspace>/.aegis/cron.json`. The agent only writes the file; the
//! host reads it and sends each run as a `user.message`, so the instance may sleep
//! between runs (see `tether::cron`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};
use tether::cron::{CronFile, Entry, OnConflict, Schedule, MAX_ENTRIES, MAX_TEXT};
use tether::Session;

use super::arg_str;

/// The task file and the lock that serialises its writers.
#[derive(Debug)]
pub struct CronTools {
    path: PathBuf,
    lock: Mutex<()>,
    /// Said with every schedule so the model knows what "9:00" means.
    zone_note: String,
}

impl CronTools {
    /// The tasks of `workspace`; `timezone` is agent.json's (else the host's local time).
    pub fn new(workspace: &Path, timezone: Option<&str>) -> CronTools {
        CronTools {
            path: workspace.join(".aegis/cron.json"),
            lock: Mutex::new(()),
            zone_note: match timezone {
                Some(tz) => format!("schedules are evaluated in the {tz} time zone (agent.json timezone)"),
                None => "schedules are evaluated in the host's local time".into(),
            },
        }
    }

    fn load(&self) -> Result<CronFile, String> {
        match fs::read_to_string(&self.path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{} is damaged: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CronFile::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Write the file whole: temporary file, fsync, rename, so the host never reads half.
    fn save(&self, file: &CronFile) -> Result<(), String> {
        serde_json::to_string_pretty(file)
            .map_err(std::io::Error::other)
            .and_then(|text| tether::fsutil::replace_synced(&self.path, text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// `cron_create {schedule, text (or message), session?, on_conflict?}` from `origin`,
    /// the chat whose message is being answered: the task's replies go there.
    pub fn create(&self, args: &Value, origin: &Session) -> Result<String, String> {
        let schedule = arg_str(args, "schedule")?.trim().to_string();
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
        Schedule::parse(&schedule).map_err(|e| format!("invalid schedule: {e}"))?;
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
            message: text,
            session,
            on_conflict,
            enabled: true,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            reply_to,
        });
        self.save(&file)?;
        Ok(json!({"ok": true, "id": id, "schedule": schedule, "note": self.zone_note}).to_string())
    }

    /// `cron_list {}`.
    pub fn list(&self) -> Result<String, String> {
        let file = self.load()?;
        Ok(json!({"count": file.entries.len(), "entries": file.entries, "note": self.zone_note}).to_string())
    }

    /// `cron_delete {id}`.
    pub fn delete(&self, args: &Value) -> Result<String, String> {
        let id = arg_str(args, "id")?;
        let _guard = self.lock.lock().expect("cron lock");
        let mut file = self.load()?;
        let before = file.entries.len();
        file.entries.retain(|e| e.id != id);
        if file.entries.len() == before {
            return Err(format!("no scheduled task {id:?}"));
        }
        self.save(&file)?;
        Ok(json!({"ok": true}).to_string())
    }

    /// `cron_enable {id}` / `cron_disable {id}`.
    pub fn set_enabled(&self, args: &Value, enabled: bool) -> Result<String, String> {
        let id = arg_str(args, "id")?;
        let _guard = self.lock.lock().expect("cron lock");
        let mut file = self.load()?;
        let entry = file
            .entries
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or_else(|| format!("no scheduled task {id:?}"))?;
        entry.enabled = enabled;
        self.save(&file)?;
        Ok(json!({"ok": true, "enabled": enabled}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn tasks_are_created_listed_toggled_and_deleted() {
        let d = TempDir::new("cron-tools");
        let c = CronTools::new(d.path(), Some("Europe/Paris"));
        let chat = Session::new("telegram", "42");
        let out = c
            .create(
                &json!({"schedule": "0 9 * * 1-5", "text": "Standup summary"}),
                &chat,
            )
            .unwrap();
        assert!(
            out.contains("\"id\":\"cron-1\"") && out.contains("Europe/Paris"),
            "{out}"
        );
        // Upstream's argument name works too.
        c.create(
            &json!({"schedule": "*/5 * * * *", "message": "ping", "on_conflict": "queue"}),
            &chat,
        )
        .unwrap();
        let file: CronFile =
            serde_json::from_str(&fs::read_to_string(d.path().join(".aegis/cron.json")).unwrap()).unwrap();
        assert_eq!(file.entries.len(), 2);
        assert_eq!(file.entries[0].reply_to, Some(chat.clone()));
        assert_eq!(file.entries[0].session, "cron-1");
        assert_eq!(file.entries[1].on_conflict, OnConflict::Queue);
        c.set_enabled(&json!({"id": "cron-1"}), false).unwrap();
        assert!(c.list().unwrap().contains("\"enabled\":false"));
        c.delete(&json!({"id": "cron-1"})).unwrap();
        assert!(c
            .delete(&json!({"id": "cron-1"}))
            .unwrap_err()
            .contains("no scheduled task"));
        // Ids are never reused.
        let out = c
            .create(&json!({"schedule": "0 0 * * *", "text": "x"}), &chat)
            .unwrap();
        assert!(out.contains("cron-3"), "{out}");
    }

    #[test]
    fn bad_tasks_are_refused_with_a_reason() {
        let d = TempDir::new("cron-tools-bad");
        let c = CronTools::new(d.path(), None);
        let chat = Session::new("telegram", "42");
        let e = |args: Value| c.create(&args, &chat).unwrap_err();
        assert!(e(json!({"schedule": "0 25 * * *", "text": "x"})).contains("hour"));
        assert!(e(json!({"schedule": "0 9 * * *"})).contains("text is required"));
        assert!(
            e(json!({"schedule": "0 9 * * *", "text": "x", "on_conflict": "later"})).contains("on_conflict")
        );
        assert!(e(json!({"schedule": "0 9 * * *", "text": "y".repeat(1001)})).contains("longer"));
        for i in 0..MAX_ENTRIES {
            c.create(&json!({"schedule": "0 9 * * *", "text": format!("t{i}")}), &chat)
                .unwrap();
        }
        assert!(e(json!({"schedule": "0 9 * * *", "text": "one more"})).contains("already 20"));
    }
}
