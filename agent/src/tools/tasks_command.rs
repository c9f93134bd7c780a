//! `/tasks` in a chat: the scheduled tasks whose replies go to it, and deleting, pausing
//! or resuming one. Answered by the agent without the model, so it works past a daily
//! limit, which a task that runs too often may be what used up.

use tether::cron::Entry;
use tether::Session;

use super::cron::CronTools;

/// Characters of a task's text in the list.
const TEXT_SHOWN: usize = 150;

/// How to use the command, said after the list and for words it does not know.
const USAGE: &str = "`/tasks run ID` runs one now; `/tasks delete ID` deletes one; `/tasks pause ID` and \
     `/tasks resume ID` stop and restart one.";

/// Who asks: the person whose message it is, and whether they are one of the agent's
/// trusted users (everyone is when none are named).
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// Their user id on the channel, when it says.
    pub user: Option<&'a str>,
    /// A trusted user changes any task of the chat; a guest only those they asked for.
    pub trusted: bool,
}

/// What `/tasks WORD ID` does to a task.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    Delete,
    Pause,
    Resume,
    /// Run it now, as if it were due (to try a new task, or do a reminder early).
    Run,
}

/// A run asked for with `/tasks run ID`, recorded in `cron.json` and not yet queued:
/// queued ([`CronTools::start_run`]) once the command's answer is on its way, so the
/// run's reply (or its note past a daily limit) never shows before that answer.
#[derive(Debug)]
pub struct RunAsked {
    entry: Entry,
    msg_id: String,
}

impl CronTools {
    /// The answer to `/tasks REST` in `chat`, asked by `asker`, with the run it starts
    /// at once.
    #[cfg(test)]
    pub fn command(&self, rest: &str, chat: &Session, asker: Asker) -> String {
        let (said, run) = self.command_then(rest, chat, asker);
        if let Some(run) = run {
            self.start_run(run);
        }
        said
    }

    /// The answer to `/tasks REST` in `chat`, asked by `asker`, and the run it asks for,
    /// for the caller to start after sending the answer.
    pub fn command_then(&self, rest: &str, chat: &Session, asker: Asker) -> (String, Option<RunAsked>) {
        let mut words = rest.split_whitespace();
        let change = match words.next() {
            None => return (self.listing(chat, asker), None),
            Some(w) => match w.to_ascii_lowercase().as_str() {
                "delete" | "remove" => Change::Delete,
                "pause" | "disable" => Change::Pause,
                "resume" | "enable" => Change::Resume,
                "run" | "now" => Change::Run,
                _ => return (format!("/tasks does not know {w:?}. {USAGE}"), None),
            },
        };
        let (Some(id), None) = (words.next(), words.next()) else {
            return (
                format!("Name one task by its id, as /tasks lists them. {USAGE}"),
                None,
            );
        };
        let id = crate::text::full_id(id, "cron-");
        match self.change(&id, change, chat, asker) {
            Ok(said) => said,
            Err(why) => (format!("⚠️ {why}"), None),
        }
    }

    /// Queue a run asked for. One that cannot be queued (the agent is stopping) stays
    /// recorded, and is sent at the next start.
    pub fn start_run(&self, run: RunAsked) {
        if let Err(why) = self.send_run(&run.entry, &run.msg_id) {
            log::warn!(
                "task {}: its run asked for is sent at the next start ({why})",
                run.entry.id
            );
        }
    }

    fn listing(&self, chat: &Session, asker: Asker) -> String {
        let entries = match self.entries() {
            Ok(e) => e,
            Err(why) => return format!("⚠️ The scheduled tasks cannot be read: {why}"),
        };
        let (here, elsewhere): (Vec<&Entry>, Vec<&Entry>) =
            entries.iter().partition(|e| e.reply_to.as_ref() == Some(chat));
        let mut out = if here.is_empty() {
            "No scheduled tasks reply to this chat. Ask the agent for one (\"every weekday at 9, \
             summarise my open issues\", \"remind me in 20 minutes to call Bob\")."
                .to_string()
        } else {
            let host = self.host_says();
            let mut out = format!("Scheduled tasks of this chat ({}):", self.zone_note_of(&host));
            let now = std::time::SystemTime::now();
            let secs = super::cron::now_secs();
            for e in &here {
                // A reminder set for an instant says how soon already.
                let instant = matches!(
                    e.at.as_deref().map(tether::at::At::parse),
                    Some(Ok(tether::at::At::Instant(_)))
                );
                let next = CronTools::next_run(e, &host, secs)
                    .filter(|_| !instant)
                    .map(|(local, unix)| next_text(local, unix, secs));
                out.push_str(&format!(
                    "\n{}",
                    line(e, next.as_deref(), self.last_ran(e, now).as_deref())
                ));
            }
            out.push_str(&format!("\n{USAGE}"));
            out
        };
        // Other chats' tasks are the operator's to know of, not a guest's.
        if asker.trusted && !elsewhere.is_empty() {
            out.push_str(&format!(
                "\n({} more reply to other chats or to none; the agent's cron_list shows every task.)",
                elsewhere.len()
            ));
        }
        out
    }

    fn change(
        &self,
        id: &str,
        change: Change,
        chat: &Session,
        asker: Asker,
    ) -> Result<(String, Option<RunAsked>), String> {
        if change == Change::Run && !self.starts_runs() {
            return Err(format!(
                "{id} cannot run now: this agent cannot start runs itself"
            ));
        }
        let mut run = None;
        let said = self.edit(|file| {
            let Some(i) = file
                .entries
                .iter()
                .position(|e| e.id == id && e.reply_to.as_ref() == Some(chat))
            else {
                return Err(format!("No task {id} replies to this chat (/tasks lists them)."));
            };
            let entry = &mut file.entries[i];
            if !asker.trusted && (asker.user.is_none() || entry.created_by.as_deref() != asker.user) {
                return Err(format!(
                    "{id} was scheduled by someone else: only they or the agent's trusted users can change it."
                ));
            }
            let text = shortened(&entry.message);
            Ok(match change {
                Change::Delete => {
                    file.entries.remove(i);
                    format!("🗑 Deleted {id}: {text}")
                }
                Change::Pause => {
                    entry.enabled = false;
                    format!("⏸ Paused {id}: it does not run until `/tasks resume {id}`.")
                }
                Change::Resume => {
                    entry.enabled = true;
                    format!("▶️ Resumed {id}: {}", when(entry))
                }
                Change::Run => {
                    if entry.run_now.is_some() {
                        return Err(format!("{id} is running already at a chat's request; its reply follows."));
                    }
                    // Recorded before it is sent, so an agent that stops first sends it again.
                    let msg_id = tether::cron::now_msg_id(id, super::cron::now_secs());
                    entry.run_now = Some(msg_id.clone());
                    run = Some(RunAsked {
                        entry: entry.clone(),
                        msg_id,
                    });
                    let once = if entry.at.is_some() {
                        " (a one-time task: done once this run is answered)"
                    } else {
                        ""
                    };
                    format!("▶️ Running {id} now{once}: {text}")
                }
            })
        })?;
        Ok((said, run))
    }
}

/// A task as one line of the list: its id (monospace, which Telegram copies on a tap),
/// when it runs, when next (as the host said), how long ago it last did, and what it does.
fn line(e: &Entry, next: Option<&str>, last: Option<&str>) -> String {
    let paused = if e.enabled { "" } else { " (paused)" };
    let next = next.map_or_else(String::new, |n| format!(", next {n}"));
    let last = last.map_or_else(String::new, |ago| format!(", last ran {ago}"));
    format!(
        "`{}` {}{paused}{next}{last}: {}",
        e.id,
        when(e),
        shortened(&e.message)
    )
}

/// `Tue 2026-12-08 09:00 (in 9 h 12 min)`: the wall time `local` of unix second `unix`,
/// seen at unix second `now`.
fn next_text(local: &str, unix: i64, now: i64) -> String {
    let wait = (unix - now).max(0) as u64;
    format!("{local} ({})", tether::time::wait_in_words(wait))
}

/// Turns at the end of a task's conversation looked through for its last run (a run's
/// rounds of tools follow its question).
const LAST_TURNS: usize = 64;

impl CronTools {
    /// How long ago `e` last ran ("3 h 12 min ago"): its conversation's newest question,
    /// which is a run's (the host's or one asked for now).
    fn last_ran(&self, e: &Entry, now: std::time::SystemTime) -> Option<String> {
        let session = Session::new("cron", &e.session);
        let turns = crate::session::SessionStore::new(self.workspace())
            .load(&session, LAST_TURNS)
            .ok()?;
        let asked = turns
            .iter()
            .rev()
            .find(|t| t.role == crate::session::Role::User)?;
        let at = humantime::parse_rfc3339_weak(&asked.ts).ok()?;
        let ago = now.duration_since(at).ok()?.as_secs();
        Some(format!("{} ago", tether::time::duration_in_words(ago)))
    }
}

/// When it runs, in words, with the expression for those who know cron.
fn when(e: &Entry) -> String {
    match &e.at {
        Some(at) => format!("once at {at}{}", how_soon(at, super::cron::now_secs())),
        None => format!("{} (`{}`)", super::cron::in_words(&e.schedule), e.schedule),
    }
}

/// How soon a one-time task at `at` runs, seen at unix second `now`: " (in 12 min)" for
/// an instant ("remind me in 20 minutes" makes one); nothing for a wall time, which only
/// the host's time zone places.
fn how_soon(at: &str, now: i64) -> String {
    match tether::at::At::parse(at) {
        Ok(tether::at::At::Instant(secs)) if secs > now => {
            format!(" ({})", tether::time::wait_in_words((secs - now) as u64))
        }
        Ok(tether::at::At::Instant(_)) => " (due now)".into(),
        _ => String::new(),
    }
}

fn shortened(text: &str) -> String {
    crate::text::one_line(text, TEXT_SHOWN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use serde_json::json;

    fn trusted() -> Asker<'static> {
        Asker {
            user: Some("1"),
            trusted: true,
        }
    }

    #[test]
    fn the_next_runs_and_zone_the_host_said_are_shown_while_they_hold() {
        let d = TempDir::new("tasks-next");
        let c = CronTools::new(d.path(), None);
        let chat = Session::new("telegram", "1");
        for args in [
            json!({"schedule": "0 9 * * 1-5", "text": "standup"}),
            json!({"schedule": "0 18 * * *", "text": "changed since"}),
            json!({"schedule": "0 7 * * *", "text": "gone by"}),
            json!({"at": "2099-01-01T09:00", "text": "Call Bob"}),
            json!({"in_minutes": 30, "text": "tea"}),
            json!({"schedule": "0 8 * * *", "text": "paused"}),
        ] {
            c.create(&args, &chat, Some("1")).unwrap();
        }
        c.set_enabled(&json!({"id": "cron-6"}), false).unwrap();
        let before = c.command("", &chat, trusted());
        assert!(
            before.starts_with(
                "Scheduled tasks of this chat (schedules are evaluated in the host's local time):"
            ),
            "{before}"
        );
        assert!(!before.contains(", next "), "nothing said yet: {before}");

        let now = super::super::cron::now_secs();
        let tea = c.entries().unwrap()[4].at.clone().unwrap();
        let run = |when: &str, unix: i64, local: &str| json!({"when": when, "unix": unix, "local": local});
        let host = json!({"zone": "Asia/Tokyo", "tasks": {
            "cron-1": run("0 9 * * 1-5", now + 9 * 3600 + 720, "Tue 2026-12-08 09:00"),
            "cron-2": run("0 19 * * *", now + 3600, "Mon 2026-12-07 19:00"),
            "cron-3": run("0 7 * * *", now - 120, "Mon 2026-12-07 07:00"),
            "cron-4": run("2099-01-01T09:00", 4_070_944_800, "Thu 2099-01-01 09:00"),
            "cron-5": run(&tea, now + 1800, "Mon 2026-12-07 10:30"),
            "cron-6": run("0 8 * * *", now + 3600, "Tue 2026-12-08 08:00"),
        }});
        std::fs::write(d.path().join(".aegis/cron-next.json"), host.to_string()).unwrap();
        let list = c.command("", &chat, trusted());
        assert!(
            list.starts_with(
                "Scheduled tasks of this chat (schedules are evaluated in the host's time zone, Asia/Tokyo (agent.json timezone sets another)):"
            ),
            "{list}"
        );
        let lines: Vec<&str> = list.lines().collect();
        assert!(
            lines[1].starts_with(
                "`cron-1` at 09:00, Monday to Friday (`0 9 * * 1-5`), next Tue 2026-12-08 09:00 (in 9 h 1"
            ),
            "{list}"
        );
        assert!(
            !lines[2].contains("next"),
            "cron-2 was changed since the host looked: {list}"
        );
        assert!(!lines[3].contains("next"), "cron-3's time has gone by: {list}");
        assert!(
            lines[4].contains("once at 2099-01-01T09:00, next Thu 2099-01-01 09:00 (in "),
            "{list}"
        );
        assert!(
            !lines[5].contains("next"),
            "a reminder at an instant says how soon already: {list}"
        );
        assert!(!lines[6].contains("next"), "a paused task: {list}");
        // The model is told the same.
        let listed: serde_json::Value = serde_json::from_str(&c.list().unwrap()).unwrap();
        assert_eq!(
            listed["entries"][0]["next_run"],
            "Tue 2026-12-08 09:00 Asia/Tokyo"
        );
        assert_eq!(listed["entries"][1].get("next_run"), None);
        assert!(listed["note"]
            .as_str()
            .unwrap()
            .contains("host's time zone, Asia/Tokyo"));
        let made = c
            .create(&json!({"schedule": "0 10 * * *", "text": "x"}), &chat, None)
            .unwrap();
        assert!(made.contains("host's time zone, Asia/Tokyo"), "{made}");
        // With agent.json's zone, the host's word goes first: it reads agent.json afresh
        // (the model may have changed it since the start), and says when it cannot use it.
        let c = CronTools::new(d.path(), Some("Europe/Paris"));
        let mut said = host.clone();
        said["zone"] = json!("Asia/Tokyo");
        std::fs::write(d.path().join(".aegis/cron-next.json"), said.to_string()).unwrap();
        assert!(c
            .command("", &chat, trusted())
            .contains("(schedules are evaluated in the Asia/Tokyo time zone, as the host says)"));
        said["zone"] = json!("Europe/Paris");
        assert!(
            c.command("", &chat, trusted())
                .contains("evaluated in the Asia/Tokyo"),
            "file not yet rewritten"
        );
        std::fs::write(d.path().join(".aegis/cron-next.json"), said.to_string()).unwrap();
        assert!(c
            .command("", &chat, trusted())
            .contains("(schedules are evaluated in the Europe/Paris time zone (agent.json timezone))"));
        said["zone"] = json!("UTC");
        said["problem"] = json!(
            "agent.json timezone \"Europe/Pariss\" is not in the host's time zone database; using the host's"
        );
        std::fs::write(d.path().join(".aegis/cron-next.json"), said.to_string()).unwrap();
        assert!(
            c.command("", &chat, trusted()).contains(
                "(schedules are evaluated in the UTC time zone (agent.json timezone \"Europe/Pariss\" is not in the host's time zone database; using the host's))"
            ),
            "{}",
            c.command("", &chat, trusted())
        );
        // A FIFO the model put under the file's name is not waited on.
        let next = d.path().join(".aegis/cron-next.json");
        std::fs::remove_file(&next).unwrap();
        crate::regular::tests::mkfifo(&next);
        let c = CronTools::new(d.path(), None);
        let list = crate::regular::tests::within_5s(move || c.command("", &chat, trusted()));
        assert!(list.contains("host's local time"), "{list}");
    }

    #[test]
    fn a_chat_lists_and_changes_its_own_tasks_only() {
        let d = TempDir::new("tasks-command");
        let c = CronTools::new(d.path(), Some("Europe/Paris"));
        let private = Session::new("telegram", "1");
        let group = Session::new("telegram", "-100");
        c.create(
            &json!({"schedule": "0 9 * * 1-5", "text": "Summarise\nmy issues"}),
            &private,
            Some("1"),
        )
        .unwrap();
        c.create(
            &json!({"at": "2099-01-01T09:00", "text": "Call Bob"}),
            &group,
            Some("7"),
        )
        .unwrap();
        c.create(
            &json!({"schedule": "*/5 * * * *", "text": "x".repeat(400)}),
            &group,
            Some("1"),
        )
        .unwrap();

        // cron-1 ran 3 h 5 min ago: its conversation's last question says when.
        let ran = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600 + 300);
        std::fs::create_dir_all(d.path().join("sessions")).unwrap();
        std::fs::write(
            d.path().join("sessions/cron_cron-1.jsonl"),
            format!(
                "{}\n{}\n{}\n",
                json!({"role": "user", "content": "Summarise", "ts": "2026-01-05T09:00:00Z"}),
                json!({"role": "user", "content": "Summarise", "ts": tether::time::rfc3339(ran)}),
                json!({"role": "assistant", "content": "Done.", "ts": tether::time::now_rfc3339()})
            ),
        )
        .unwrap();
        let list = c.command("", &private, trusted());
        assert!(
            list.starts_with("Scheduled tasks of this chat (schedules are evaluated in the Europe/Paris"),
            "{list}"
        );
        assert!(
            list.contains(
                "\n`cron-1` at 09:00, Monday to Friday (`0 9 * * 1-5`), last ran 3 h 5 min ago: Summarise my issues\n"
            ),
            "{list}"
        );
        assert!(!list.contains("Call Bob"), "{list}");
        assert!(list.contains("(2 more reply to other chats"), "{list}");
        let guest = Asker {
            user: Some("7"),
            trusted: false,
        };
        let seen_by_guest = c.command("", &group, guest);
        assert!(
            seen_by_guest.contains("`cron-2` once at 2099-01-01T09:00: Call Bob"),
            "{seen_by_guest}"
        );
        assert!(seen_by_guest.contains(&format!(
            "`cron-3` every 5 minutes (`*/5 * * * *`): {}…",
            "x".repeat(150)
        )));
        assert!(
            !seen_by_guest.contains("more reply to other chats"),
            "{seen_by_guest}"
        );

        // Only this chat's tasks, and a guest only their own.
        assert_eq!(
            c.command("delete cron-1", &group, trusted()),
            "⚠️ No task cron-1 replies to this chat (/tasks lists them)."
        );
        assert!(c
            .command("pause 3", &group, guest)
            .contains("scheduled by someone else"));
        let nobody = Asker {
            user: None,
            trusted: false,
        };
        assert!(c.command("pause 2", &group, nobody).contains("someone else"));
        // Nobody's task (written by hand) is no one's to change but the trusted users'.
        c.create(&json!({"schedule": "0 0 * * *", "text": "nightly"}), &group, None)
            .unwrap();
        assert!(c.command("delete 4", &group, nobody).contains("someone else"));
        assert!(c
            .command("delete 4", &group, trusted())
            .starts_with("🗑 Deleted cron-4"));
        assert_eq!(
            c.command("pause 2", &group, guest),
            "⏸ Paused cron-2: it does not run until `/tasks resume cron-2`."
        );
        assert!(c
            .command("", &group, guest)
            .contains("`cron-2` once at 2099-01-01T09:00 (paused): Call Bob"));
        assert_eq!(
            c.command("RESUME cron-2", &group, guest),
            "▶️ Resumed cron-2: once at 2099-01-01T09:00"
        );
        c.command("pause 1", &private, trusted());
        assert_eq!(
            c.command("resume 1", &private, trusted()),
            "▶️ Resumed cron-1: at 09:00, Monday to Friday (`0 9 * * 1-5`)"
        );
        assert_eq!(
            c.command("delete cron-3", &group, trusted()),
            format!("🗑 Deleted cron-3: {}…", "x".repeat(150))
        );
        let file = std::fs::read_to_string(d.path().join(".aegis/cron.json")).unwrap();
        assert!(!file.contains("xxxx") && file.contains("Call Bob"), "{file}");

        assert!(c
            .command("snooze 2", &group, guest)
            .starts_with("/tasks does not know \"snooze\""));
        assert!(c.command("delete", &group, guest).starts_with("Name one task"));
        assert!(c
            .command("delete 2 3", &group, guest)
            .starts_with("Name one task"));
        let empty = c.command("", &Session::new("telegram", "5"), guest);
        assert!(
            empty.starts_with("No scheduled tasks reply to this chat."),
            "{empty}"
        );
    }

    #[test]
    fn a_task_written_by_hand_that_never_runs_says_so() {
        let d = TempDir::new("tasks-by-hand");
        let chat = json!({"channel": "telegram", "id": "1"});
        std::fs::create_dir_all(d.path().join(".aegis")).unwrap();
        std::fs::write(
            d.path().join(".aegis/cron.json"),
            json!({"entries": [
                {"id": "cron-1", "schedule": "0 9 31 4 *", "message": "April's end", "session": "cron-1", "reply_to": chat},
                {"id": "cron-2", "schedule": "61 * * * *", "message": "typo", "session": "cron-2", "reply_to": chat}
            ], "next_id": 3})
            .to_string(),
        )
        .unwrap();
        let c = CronTools::new(d.path(), None);
        let list = c.command("", &Session::new("telegram", "1"), trusted());
        assert!(
            list.contains("`cron-1` never: at 09:00, on the 31st, in April, a date no month has (`0 9 31 4 *`): April's end"),
            "{list}"
        );
        assert!(
            list.contains("`cron-2` never: minute \"61\": 61 is outside 0-59 (`61 * * * *`): typo"),
            "{list}"
        );
    }

    #[test]
    fn a_task_run_now_is_sent_once_until_answered_and_again_after_a_stop() {
        let d = TempDir::new("tasks-run-now");
        let chat = Session::new("telegram", "1");
        let c = CronTools::new(d.path(), None);
        c.create(
            &json!({"schedule": "0 9 * * 1-5", "text": "Summarise"}),
            &chat,
            Some("1"),
        )
        .unwrap();
        c.create(&json!({"in_minutes": 60, "text": "Call Bob"}), &chat, Some("1"))
            .unwrap();
        let listed = c.command("", &chat, trusted());
        assert!(
            listed.contains("`cron-2` once at ") && listed.contains(" (in 1 h): Call Bob"),
            "{listed}"
        );
        // Without the router's queue, it says so and keeps no record.
        assert_eq!(
            c.command("run 1", &chat, trusted()),
            "⚠️ cron-1 cannot run now: this agent cannot start runs itself"
        );
        assert!(c.entries().unwrap()[0].run_now.is_none());

        let (tx, rx) = crossbeam_channel::unbounded();
        c.send_runs_to(tx);
        let guest = Asker {
            user: Some("9"),
            trusted: false,
        };
        assert!(c
            .command("run 1", &chat, guest)
            .contains("scheduled by someone else"));
        assert!(rx.try_recv().is_err());
        assert_eq!(
            c.command("run 1", &chat, trusted()),
            "▶️ Running cron-1 now: Summarise"
        );
        let run = rx.try_recv().unwrap();
        let msg_id = run.msg_id.clone().unwrap();
        assert!(msg_id.starts_with("cron-cron-1-now"), "{msg_id}");
        assert_eq!(run.session, Some(Session::new("cron", "cron-1")));
        let msg: tether::frame::UserMessage = run.payload_as().unwrap();
        assert_eq!(
            (msg.text.as_str(), msg.reply_to),
            ("Summarise", Some(chat.clone()))
        );
        // Once on its way, not twice.
        assert!(c.command("now 1", &chat, trusted()).contains("running already"));
        assert!(rx.try_recv().is_err());

        // An agent that stopped before answering sends it again, under the same id.
        let again = CronTools::new(d.path(), None);
        let (tx2, rx2) = crossbeam_channel::unbounded();
        again.send_runs_to(tx2);
        again.recover_runs();
        assert_eq!(rx2.try_recv().unwrap().msg_id, Some(msg_id.clone()));
        // Answered: the record goes, the recurring task stays.
        again.run_answered(&msg_id).unwrap();
        again.recover_runs();
        assert!(rx2.try_recv().is_err());
        assert_eq!(again.entries().unwrap().len(), 2);
        assert!(again
            .command("run 1", &chat, trusted())
            .starts_with("▶️ Running cron-1 now"));

        // A one-time task run now is done with once answered.
        assert_eq!(
            again.command("run 2", &chat, trusted()),
            "▶️ Running cron-2 now (a one-time task: done once this run is answered): Call Bob"
        );
        let _ = rx2.try_recv().unwrap();
        let once = rx2.try_recv().unwrap().msg_id.unwrap();
        again.run_answered(&once).unwrap();
        let left: Vec<String> = again.entries().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(left, ["cron-1"]);
    }

    #[test]
    fn a_reminder_at_an_instant_says_how_soon() {
        let now = 1_796_284_800; // 2026-12-03T08:00:00Z
        assert_eq!(how_soon("2026-12-03T08:20:00Z", now), " (in 20 min)");
        assert_eq!(how_soon("2026-12-03T10:05:00+01:00", now), " (in 1 h 5 min)");
        assert_eq!(how_soon("2026-12-03T07:59:00Z", now), " (due now)");
        assert_eq!(
            how_soon("2026-12-03T09:00", now),
            "",
            "a wall time the host places"
        );
        assert_eq!(how_soon("tomorrow", now), "");
    }
}
