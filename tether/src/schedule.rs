//! The evaluation of scheduled tasks, for the host programs that fire them (`aegis-kit
//! serve`, and `aegis-gateway` in per-instance mode under AegisVM): which runs of a
//! workspace's `cron.json` are due, in which time zone, and the record of the newest
//! minute evaluated that makes a restart catch up without sending a run twice.
//!
//! Missed runs are caught up to an hour back, each task's coalesced into its latest; a
//! task never runs for a minute before it was created; a wall time that repeats when
//! clocks go back runs once, one that is skipped when they go forward does not run.
//! [ours] A one-time task (`at`) runs in its minute, or late, up to a day, when the host
//! was down then; the recorded minute keeps it from running twice.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::at::At;
use crate::cron::{
    CronFile, Entry, Minute, NextRun, NextRuns, Schedule, MAX_ENTRIES, MAX_FILE, NEXT_FILE, NEXT_HORIZON_DAYS,
};
use crate::dirfd;
use crate::Frame;

/// How far back a restarted host catches up on runs it missed.
pub const CATCH_UP_MINUTES: i64 = 60;
/// The same for a one-time task (a reminder): late is better than never, within a day.
pub const CATCH_UP_ONCE_MINUTES: i64 = 24 * 60;

/// The host's clock: the real one, or for tests a fast one (`AEGIS_KIT_CLOCK`).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Virtual unix time (ms) at `anchor_ms` of real time.
    start_ms: i64,
    anchor_ms: i64,
    speed: i64,
}

fn real_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Clock {
    /// The real clock.
    pub fn real() -> Clock {
        Clock {
            start_ms: 0,
            anchor_ms: 0,
            speed: 1,
        }
    }

    /// `AEGIS_KIT_CLOCK=VIRTUAL_UNIX_SECS,REAL_ANCHOR_UNIX_MS,SPEED`: time runs from the
    /// virtual start at the real anchor, SPEED times faster. Every serve given the same
    /// value shares one timeline, so a test can restart serve mid-schedule.
    pub fn from_env() -> Result<Clock, String> {
        let Ok(v) = std::env::var("AEGIS_KIT_CLOCK") else {
            return Ok(Clock::real());
        };
        let bad = || format!("AEGIS_KIT_CLOCK={v:?}: expected VIRTUAL_UNIX_SECS,REAL_ANCHOR_UNIX_MS,SPEED");
        let parts: Vec<i64> = v
            .split(',')
            .map(|p| p.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [start, anchor, speed] if speed >= 1 => Ok(Clock {
                start_ms: start * 1000,
                anchor_ms: anchor,
                speed,
            }),
            _ => Err(bad()),
        }
    }

    /// Whether this is the real clock.
    pub fn is_real(&self) -> bool {
        self.speed == 1 && self.start_ms == 0
    }

    /// Unix time in ms.
    pub fn now_ms(&self) -> i64 {
        self.start_ms + (real_ms() - self.anchor_ms) * self.speed
    }

    /// Real time until virtual unix second `t`.
    pub fn until(&self, t: i64) -> Duration {
        let ms = (t * 1000 - self.now_ms()).max(0) / self.speed;
        Duration::from_millis(ms as u64)
    }
}

/// The newest minute evaluated for an instance.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    last_minute: Option<i64>,
}

/// The runs of one workspace due now, and how to record that they were sent.
#[derive(Debug)]
pub struct Due {
    /// Each task due, with the minute of its run.
    pub runs: Vec<(Entry, i64)>,
    /// Problems worth a log line (bad schedules, too many tasks).
    pub problems: Vec<String>,
    state_path: PathBuf,
    minute: i64,
}

impl Due {
    /// Record the minute as evaluated: call once every run was accepted (a run not
    /// accepted is tried again next minute under the same `msg_id`).
    pub fn commit(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&State {
            last_minute: Some(self.minute),
        })
        .map_err(std::io::Error::other)?;
        crate::fsutil::replace_synced(&self.state_path, &bytes)
    }
}

/// A workspace's tasks as read once a minute: its `cron.json`, and the zone they are
/// evaluated in (agent.json's `timezone`, else the host's), for both what is due
/// ([`Tasks::due`]) and what the agent is told ([`Tasks::publish_next`]).
pub struct Tasks {
    file: CronFile,
    tz: TimeZone,
    /// Why the zone is not agent.json's, when it names one the host does not know.
    zone_problem: Option<String>,
}

/// `workspace`'s tasks; `None` when it has none.
pub fn tasks(workspace: &Path) -> Result<Option<Tasks>, String> {
    let Some(file) = read_cron_file(&workspace.join(".aegis/cron.json"))? else {
        return Ok(None);
    };
    let (tz, problems) = time_zone(workspace);
    Ok(Some(Tasks {
        file,
        tz,
        zone_problem: problems.into_iter().next(),
    }))
}

/// The runs of `workspace`'s tasks due at unix `minute` (see [`Tasks::due`]).
#[cfg(test)]
fn due(workspace: &Path, state_path: &Path, minute: i64, clock: &Clock) -> Result<Option<Due>, String> {
    Ok(tasks(workspace)?.and_then(|t| t.due(state_path, minute, clock)))
}

/// Tell the agent of `workspace` when its tasks run next (see [`Tasks::publish_next`]).
pub fn publish_next(workspace: &Path, minute: i64) -> Result<(), String> {
    match tasks(workspace)? {
        Some(t) => t.publish_next(workspace, minute),
        None => Ok(()),
    }
}

impl Tasks {
    /// The runs due at unix `minute` and in the minutes missed since the last evaluation
    /// recorded in `state_path`; `None` when the minute was evaluated already.
    pub fn due(&self, state_path: &Path, minute: i64, clock: &Clock) -> Option<Due> {
        let (file, tz) = (&self.file, &self.tz);
        let state: State = fs::read(state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if state.last_minute.is_some_and(|l| l >= minute) {
            return None;
        }
        let from = |catch_up: i64| {
            state
                .last_minute
                .map_or(minute, |l| (l + 1).max(minute - catch_up + 1))
        };
        let mut problems: Vec<String> = self.zone_problem.iter().cloned().collect();
        if file.entries.len() > MAX_ENTRIES {
            problems.push(format!(
                "cron.json has {} tasks; only the first {MAX_ENTRIES} run",
                file.entries.len()
            ));
        }
        let mut runs = Vec::new();
        for entry in file.entries.iter().take(MAX_ENTRIES).filter(|e| e.enabled) {
            // A task never runs for a minute before it existed (catching up after a pause).
            // The agent stamps tasks with real time, so a test clock cannot compare.
            let created = humantime::parse_rfc3339_weak(&entry.created_at)
                .ok()
                .filter(|_| clock.is_real())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(i64::MIN, |d| d.as_secs() as i64 / 60);
            if let Some(at) = &entry.at {
                match once_minute(at, tz) {
                    // Once the minute is evaluated, the state never lets it be sent again.
                    Ok(m) if (from(CATCH_UP_ONCE_MINUTES)..=minute).contains(&m) && m >= created => {
                        runs.push((entry.clone(), m))
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!("task {}: {e}", entry.id)),
                }
                continue;
            }
            let schedule = match Schedule::parse(&entry.schedule) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("task {}: {e}", entry.id));
                    continue;
                }
            };
            if let Some(m) = (from(CATCH_UP_MINUTES)..=minute)
                .rev()
                .find(|m| *m >= created && due_at(&schedule, *m, tz))
            {
                runs.push((entry.clone(), m));
            }
        }
        Some(Due {
            runs,
            problems,
            state_path: state_path.to_path_buf(),
            minute,
        })
    }

    /// Tell the agent of `workspace` in which time zone its tasks are evaluated and when each
    /// runs next after unix `minute` ([`NextRuns`] in `.aegis/cron-next.json`), when that
    /// changed: the guest cannot know the host's zone, and a reminder an hour off is found
    /// out only when it comes. The file is the guest's folder's: written through a
    /// descriptor of `.aegis`, never through a link put there.
    pub fn publish_next(&self, workspace: &Path, minute: i64) -> Result<(), String> {
        let tz = &self.tz;
        let mut next = NextRuns {
            zone: zone_name(tz, minute),
            problem: self.zone_problem.clone(),
            tasks: Default::default(),
        };
        for entry in self.file.entries.iter().take(MAX_ENTRIES).filter(|e| e.enabled) {
            let (when, m) = match &entry.at {
                Some(at) => (at.clone(), once_minute(at, tz).ok().filter(|m| *m > minute)),
                None => {
                    let m = Schedule::parse(&entry.schedule)
                        .ok()
                        .and_then(|s| next_minute(&s, minute, tz));
                    (entry.schedule.clone(), m)
                }
            };
            if let Some((m, local)) = m.and_then(|m| Some((m, local_text(m, tz)?))) {
                next.tasks.insert(
                    entry.id.clone(),
                    NextRun {
                        when,
                        unix: m * 60,
                        local,
                    },
                );
            }
        }
        let bytes = serde_json::to_vec(&next).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| format!("{}: {e}", workspace.join(".aegis").join(NEXT_FILE).display());
        let aegis = dirfd::subdir(&dirfd::open_dir(workspace).map_err(io)?, ".aegis").map_err(io)?;
        // Unchanged most minutes: nothing written then. What cannot be read (a link planted
        // there) is replaced.
        if dirfd::read_file(&aegis, NEXT_FILE, MAX_FILE)
            .ok()
            .flatten()
            .as_deref()
            == Some(&bytes[..])
        {
            return Ok(());
        }
        dirfd::replace_at(&aegis, NEXT_FILE, &bytes).map_err(io)
    }
}

/// The `user.message` of the run of `entry` at unix `minute`: channel `cron`, the task's
/// session, user "Scheduled Task", the chat to answer in, `msg_id` `cron-<id>-<minute>`.
pub fn run_frame(entry: &Entry, minute: i64) -> Frame {
    crate::cron::run_frame(entry, crate::cron::run_msg_id(&entry.id, minute))
}

/// The first unix minute after `after` in which `schedule` runs in `tz`, within
/// [`NEXT_HORIZON_DAYS`]. Days and hours it does not run in are skipped whole, so a task
/// for 29 February is found in a few thousand steps.
fn next_minute(schedule: &Schedule, after: i64, tz: &TimeZone) -> Option<i64> {
    let end = after + NEXT_HORIZON_DAYS * 24 * 60;
    let mut m = after + 1;
    while m <= end {
        let w = wall(m, tz)?;
        if !schedule.runs_on(w) {
            // To the next midnight, an hour short while more than an hour is left: a day
            // is 23 hours long when clocks go forward, and overshooting would skip one.
            let left = (23 - i64::from(w.hour)) * 60 + (60 - i64::from(w.minute));
            m += if left > 60 { left - 60 } else { left };
        } else if !schedule.runs_in_hour(w) {
            m += 60 - i64::from(w.minute);
        } else if due_at(schedule, m, tz) {
            return Some(m);
        } else {
            m += 1;
        }
    }
    None
}

/// Unix minute `m` as a wall time in `tz`: `Tue 2026-12-08 09:00`.
fn local_text(m: i64, tz: &TimeZone) -> Option<String> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let z = jiff::Timestamp::from_second(m * 60).ok()?.to_zoned(tz.clone());
    Some(format!(
        "{} {:04}-{:02}-{:02} {:02}:{:02}",
        DAYS[z.weekday().to_sunday_zero_offset() as usize],
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute()
    ))
}

/// `tz`'s name, or for a host zone without one its distance from UTC at unix minute `m`.
fn zone_name(tz: &TimeZone, m: i64) -> String {
    if let Some(name) = tz.iana_name() {
        return name.to_string();
    }
    let offset = jiff::Timestamp::from_second(m * 60)
        .map(|t| tz.to_offset(t).seconds())
        .unwrap_or(0);
    let sign = if offset < 0 { '-' } else { '+' };
    let (h, mm) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
    format!("UTC{sign}{h:02}:{mm:02}")
}

/// The unix minute a one-time task runs in: an instant's, or a wall time's in `tz` (a
/// time skipped when clocks go forward runs just after the gap, one that repeats when
/// they go back runs the first time).
fn once_minute(at: &str, tz: &TimeZone) -> Result<i64, String> {
    match At::parse(at).map_err(|e| e.to_string())? {
        At::Instant(secs) => Ok(secs.div_euclid(60)),
        At::Local(c) => jiff::civil::DateTime::new(
            c.year as i16,
            c.month as i8,
            c.day as i8,
            c.hour as i8,
            c.minute as i8,
            0,
            0,
        )
        .and_then(|t| t.to_zoned(tz.clone()))
        .map(|z| z.timestamp().as_second().div_euclid(60))
        .map_err(|_| format!("{at:?} is not a date and time that exists")),
    }
}

/// Whether `schedule` is due at unix minute `m` in `tz`. A wall time that repeats when
/// clocks go back (the same time an hour earlier) counts once.
fn due_at(schedule: &Schedule, m: i64, tz: &TimeZone) -> bool {
    let Some(now) = wall(m, tz) else { return false };
    schedule.matches(now) && wall(m - 60, tz) != Some(now)
}

fn wall(m: i64, tz: &TimeZone) -> Option<Minute> {
    let z = jiff::Timestamp::from_second(m * 60).ok()?.to_zoned(tz.clone());
    Some(Minute {
        minute: z.minute() as u8,
        hour: z.hour() as u8,
        day: z.day() as u8,
        month: z.month() as u8,
        weekday: z.weekday().to_sunday_zero_offset() as u8,
    })
}

/// agent.json's `timezone`, else the host's (with a problem when the name is unknown).
fn time_zone(workspace: &Path) -> (TimeZone, Vec<String>) {
    let name = read_guest_file(&workspace.join(".aegis/agent.json"))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["timezone"].as_str().map(str::to_string));
    match name {
        Some(n) => match TimeZone::get(&n) {
            Ok(tz) => (tz, Vec::new()),
            // Not jiff's own words: its error formatting is 14 KiB of each host's code.
            Err(_) => (
                TimeZone::system(),
                vec![format!(
                    "agent.json timezone {n:?} is not in the host's time zone database; using the host's"
                )],
            ),
        },
        None => (TimeZone::system(), Vec::new()),
    }
}

/// The task file, if there is one.
fn read_cron_file(path: &Path) -> Result<Option<CronFile>, String> {
    let Some(bytes) = read_guest_file(path)? else {
        return Ok(None);
    };
    // Only the position of a syntax error is reported, never the file's content.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        format!(
            "cron.json is not valid (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// A file of the guest's `.aegis` (cron.json, agent.json), if there is one. The guest
/// owns the workspace, so the file is opened without following a link and without
/// waiting (a FIFO there would stop every instance's tasks), must be a regular file, and
/// is read up to [`MAX_FILE`].
fn read_guest_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {name}: {e}")),
    };
    let meta = f.metadata().map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name} is not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{name} is larger than {MAX_FILE} bytes"));
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn workspace(name: &str, cron: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("tether-unit-schedule-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join(".aegis")).unwrap();
        fs::write(d.join(".aegis/cron.json"), cron).unwrap();
        fs::write(d.join(".aegis/agent.json"), r#"{"timezone": "UTC"}"#).unwrap();
        Dir(d)
    }

    #[test]
    fn missed_minutes_are_caught_up_once_and_recorded() {
        let cron = r#"{"entries": [
            {"id": "cron-1", "schedule": "0 9 * * *", "message": "standup", "session": "cron-1", "created_at": "2026-11-01T00:00:00Z"},
            {"id": "cron-2", "schedule": "*/1 * * * *", "message": "tick", "session": "cron-2", "created_at": "2026-11-23T09:05:30Z"},
            {"id": "cron-3", "schedule": "0 9 * * *", "message": "off", "session": "cron-3", "enabled": false},
            {"id": "cron-4", "schedule": "61 * * * *", "message": "bad", "session": "cron-4"}
        ], "next_id": 5}"#;
        let d = workspace("catch-up", cron);
        let state = d.0.join("state.json");
        let clock = Clock::real();
        let nine = 1_795_424_400 / 60; // 2026-11-23 09:00 UTC
                                       // First sight: only the current minute counts.
        let due0 = due(&d.0, &state, nine - 5, &clock).unwrap().unwrap();
        assert!(due0.runs.is_empty());
        assert!(
            due0.problems.iter().any(|p| p.contains("cron-4")),
            "{:?}",
            due0.problems
        );
        due0.commit().unwrap();
        // Down from 08:56 to 09:10: the 09:00 run once; the every-minute task only from
        // its creation, coalesced into the latest minute.
        let due1 = due(&d.0, &state, nine + 10, &clock).unwrap().unwrap();
        let runs: Vec<(&str, i64)> = due1.runs.iter().map(|(e, m)| (e.id.as_str(), *m)).collect();
        assert_eq!(runs, vec![("cron-1", nine), ("cron-2", nine + 10)]);
        // Not committed (a run was not accepted): the same runs, the same msg_ids.
        let again = due(&d.0, &state, nine + 10, &clock).unwrap().unwrap();
        assert_eq!(again.runs.len(), 2);
        assert_eq!(
            run_frame(&again.runs[0].0, again.runs[0].1).msg_id.unwrap(),
            format!("cron-cron-1-{nine}")
        );
        again.commit().unwrap();
        assert!(
            due(&d.0, &state, nine + 10, &clock).unwrap().is_none(),
            "evaluated already"
        );
        // Down for a day: at most an hour back.
        let late = due(&d.0, &state, nine + 24 * 60 + 90, &clock).unwrap().unwrap();
        assert!(late.runs.iter().all(|(e, _)| e.id == "cron-2"));
    }

    #[test]
    fn a_one_time_task_runs_once_at_its_minute_or_late_within_a_day() {
        let nine = 1_795_424_400 / 60; // 2026-11-23 09:00 UTC = 10:00 in Paris
        let cron = r#"{"entries": [
            {"id": "cron-1", "schedule": "once at 2026-11-23T09:00:00Z", "at": "2026-11-23T09:00:00Z", "message": "call Bob", "session": "cron-1", "created_at": "2026-11-23T08:00:00Z"},
            {"id": "cron-2", "schedule": "once at 2026-11-23T10:05", "at": "2026-11-23T10:05", "message": "in Paris", "session": "cron-2", "created_at": "2026-11-23T08:00:00Z"},
            {"id": "cron-3", "schedule": "once", "at": "2026-11-23T09:01:00Z", "message": "before it existed", "session": "cron-3", "created_at": "2026-11-23T09:30:00Z"},
            {"id": "cron-4", "schedule": "once", "at": "tomorrow", "message": "bad", "session": "cron-4"},
            {"id": "cron-5", "schedule": "once", "at": "2026-11-23T09:02:00Z", "message": "off", "session": "cron-5", "enabled": false}
        ], "next_id": 6}"#;
        let d = workspace("once", cron);
        fs::write(d.0.join(".aegis/agent.json"), r#"{"timezone": "Europe/Paris"}"#).unwrap();
        let state = d.0.join("state.json");
        let clock = Clock::real();
        let runs = |m: i64| {
            let due = due(&d.0, &state, m, &clock).unwrap().unwrap();
            due.commit().unwrap();
            let runs: Vec<(String, i64)> = due.runs.iter().map(|(e, m)| (e.id.clone(), *m)).collect();
            (runs, due.problems)
        };
        let (before, problems) = runs(nine - 1);
        assert!(before.is_empty(), "{before:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("cron-4") && p.contains("\"tomorrow\"")),
            "{problems:?}"
        );
        assert_eq!(runs(nine).0, [("cron-1".to_string(), nine)]);
        assert!(runs(nine + 1).0.is_empty(), "once only");
        // The wall time, in the tasks' zone: 10:05 in Paris is 09:05 UTC.
        assert!(runs(nine + 4).0.is_empty());
        assert_eq!(runs(nine + 5).0, [("cron-2".to_string(), nine + 5)]);
        assert!(runs(nine + 6).0.is_empty());

        // A host down over a task's minute sends it late, within a day, then never again.
        let late = r#"{"entries": [
            {"id": "cron-6", "schedule": "once", "at": "2026-11-23T12:00:00Z", "message": "over a day ago", "session": "cron-6"},
            {"id": "cron-7", "schedule": "once", "at": "2026-11-23T13:00:00Z", "message": "under a day ago", "session": "cron-7"}
        ], "next_id": 8}"#;
        fs::write(d.0.join(".aegis/cron.json"), late).unwrap();
        let next_day = nine + 4 * 60 + 24 * 60 - 30; // 2026-11-24 12:30 UTC
        assert_eq!(runs(next_day).0, [("cron-7".to_string(), nine + 4 * 60)]);
        assert!(runs(next_day + 1).0.is_empty());
    }

    #[test]
    fn a_planted_link_or_a_huge_file_is_refused() {
        let d = workspace("hostile", "{}");
        let f = d.0.join(".aegis/cron.json");
        fs::remove_file(&f).unwrap();
        fs::write(d.0.join("outside.json"), r#"{"entries": []}"#).unwrap();
        std::os::unix::fs::symlink(d.0.join("outside.json"), &f).unwrap();
        let e = due(&d.0, &d.0.join("s"), 1, &Clock::real()).unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        fs::remove_file(&f).unwrap();
        fs::write(&f, vec![b' '; MAX_FILE as usize + 1]).unwrap();
        assert!(due(&d.0, &d.0.join("s"), 1, &Clock::real())
            .unwrap_err()
            .contains("larger"));
        fs::write(&f, "{\"entries\": [secret").unwrap();
        let e = due(&d.0, &d.0.join("s"), 1, &Clock::real()).unwrap_err();
        assert!(e.contains("line 1") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn a_repeated_wall_time_runs_once_and_a_skipped_one_not_at_all() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let s = Schedule::parse("30 2 * * *").unwrap();
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let first = jiff::civil::date(2026, 10, 25)
            .at(0, 30, 0, 0)
            .to_zoned(TimeZone::UTC)
            .unwrap();
        let m0 = first.timestamp().as_second() / 60;
        let runs: Vec<i64> = (m0..m0 + 120).filter(|m| due_at(&s, *m, &tz)).collect();
        assert_eq!(runs, vec![m0], "once, at the first 02:30");
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let day = jiff::civil::date(2026, 3, 29)
            .at(0, 0, 0, 0)
            .to_zoned(TimeZone::UTC)
            .unwrap();
        let d0 = day.timestamp().as_second() / 60;
        assert!((d0..d0 + 24 * 60).all(|m| !due_at(&s, m, &tz)));
    }

    #[test]
    fn the_test_clock_runs_fast_from_its_start() {
        let c = Clock {
            start_ms: 1_000_000,
            anchor_ms: real_ms(),
            speed: 60,
        };
        let n = c.now_ms();
        assert!((1_000_000..1_000_000 + 60_000).contains(&n), "{n}");
        assert!(c.until(n / 1000 + 60) <= Duration::from_secs(1));
    }

    /// The first run after `after` found minute by minute, up to `limit` minutes ahead.
    fn next_by_minutes(s: &Schedule, after: i64, tz: &TimeZone, limit: i64) -> Option<i64> {
        (after + 1..=after + limit).find(|m| due_at(s, *m, tz))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Skipping whole days and hours finds the run a minute-by-minute search finds,
        /// across clock changes and in zones half an hour off whole hours.
        #[test]
        fn the_next_run_skips_nothing(
            minute in proptest::sample::select(vec!["*", "0", "30", "*/15", "5,45"]),
            hour in proptest::sample::select(vec!["*", "9", "2", "0-6", "*/6", "23"]),
            dom in proptest::sample::select(vec!["*", "1", "15", "29", "31"]),
            month in proptest::sample::select(vec!["*", "3", "3,10", "11", "4"]),
            dow in proptest::sample::select(vec!["*", "1-5", "0", "6"]),
            zone in proptest::sample::select(vec!["UTC", "Europe/Paris", "Asia/Kolkata", "Australia/Lord_Howe", "America/New_York"]),
            // 2026-01-01 plus up to a year, in minutes.
            offset in 0i64..366 * 24 * 60,
        ) {
            let s = Schedule::parse(&format!("{minute} {hour} {dom} {month} {dow}")).unwrap();
            let tz = TimeZone::get(zone).unwrap();
            let after = 1_767_225_600 / 60 + offset;
            const LIMIT: i64 = 62 * 24 * 60;
            let fast = next_minute(&s, after, &tz);
            match next_by_minutes(&s, after, &tz, LIMIT) {
                Some(m) => proptest::prop_assert_eq!(fast, Some(m)),
                None => proptest::prop_assert!(fast.is_none_or(|m| m > after + LIMIT)),
            }
        }
    }

    #[test]
    fn a_host_zone_without_a_name_is_said_as_its_distance_from_utc() {
        let fixed = |secs| TimeZone::fixed(jiff::tz::Offset::from_seconds(secs).unwrap());
        assert_eq!(zone_name(&fixed(5 * 3600 + 1800), 0), "UTC+05:30");
        assert_eq!(zone_name(&fixed(-(3 * 3600 + 1800)), 0), "UTC-03:30");
        assert_eq!(
            zone_name(&TimeZone::get("Europe/Paris").unwrap(), 0),
            "Europe/Paris"
        );
    }

    #[test]
    fn a_task_for_29_february_is_found_years_ahead_and_one_that_never_runs_is_not() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let after = 1_795_424_400 / 60; // 2026-11-23 09:00 UTC
        let leap = next_minute(&Schedule::parse("0 9 29 2 *").unwrap(), after, &tz).unwrap();
        assert_eq!(local_text(leap, &tz).unwrap(), "Tue 2028-02-29 09:00");
        assert_eq!(
            next_minute(&Schedule::parse("0 9 30 2 *").unwrap(), after, &tz),
            None
        );
        // 2026-03-29 is 23 hours long in Paris: from 01:00 that day, midnight is 22 hours
        // away, not 23.
        let one_am = jiff::civil::date(2026, 3, 29)
            .at(1, 0, 0, 0)
            .to_zoned(tz.clone())
            .unwrap();
        let after = one_am.timestamp().as_second() / 60 - 1;
        let midnight = next_minute(&Schedule::parse("0 0 30 3 *").unwrap(), after, &tz).unwrap();
        assert_eq!(local_text(midnight, &tz).unwrap(), "Mon 2026-03-30 00:00");
        // 02:30 happens twice on 2026-10-25 and runs the first time only: after it, the
        // next run is the next day's.
        let first = jiff::civil::date(2026, 10, 25)
            .at(0, 30, 0, 0)
            .to_zoned(TimeZone::UTC)
            .unwrap();
        let after = first.timestamp().as_second() / 60;
        let next = next_minute(&Schedule::parse("30 2 * * *").unwrap(), after, &tz).unwrap();
        assert_eq!(local_text(next, &tz).unwrap(), "Mon 2026-10-26 02:30");
    }

    #[test]
    fn the_agent_is_told_the_zone_and_each_tasks_next_run_once_it_changes() {
        let cron = r#"{"entries": [
            {"id": "cron-1", "schedule": "0 9 * * 1-5", "message": "standup", "session": "cron-1"},
            {"id": "cron-2", "schedule": "0 9 * * *", "message": "off", "session": "cron-2", "enabled": false},
            {"id": "cron-3", "schedule": "once at 2026-11-24T08:30", "at": "2026-11-24T08:30", "message": "call", "session": "cron-3"},
            {"id": "cron-4", "schedule": "once", "at": "2026-11-20T08:30", "message": "past", "session": "cron-4"}
        ], "next_id": 5}"#;
        let d = workspace("next", cron);
        fs::write(d.0.join(".aegis/agent.json"), r#"{"timezone": "Europe/Paris"}"#).unwrap();
        let path = d.0.join(".aegis").join(NEXT_FILE);
        // Monday 2026-11-23 09:00 UTC, 10:00 in Paris: today's standup is over.
        let minute = 1_795_424_400 / 60;
        publish_next(&d.0, minute).unwrap();
        let next: NextRuns = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(next.zone, "Europe/Paris");
        let ids: Vec<&str> = next.tasks.keys().map(String::as_str).collect();
        assert_eq!(
            ids,
            ["cron-1", "cron-3"],
            "nothing for a paused task or one run already"
        );
        let standup = &next.tasks["cron-1"];
        assert_eq!(standup.local, "Tue 2026-11-24 09:00");
        assert_eq!(standup.when, "0 9 * * 1-5");
        assert_eq!(standup.unix, 1_795_507_200, "08:00 UTC");
        assert_eq!(next.tasks["cron-3"].local, "Tue 2026-11-24 08:30");
        assert_eq!(next.tasks["cron-3"].when, "2026-11-24T08:30");

        // Unchanged: not written again.
        let before = fs::metadata(&path).unwrap();
        publish_next(&d.0, minute + 1).unwrap();
        let after = fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (before.ino(), before.mtime_nsec()),
            (after.ino(), after.mtime_nsec())
        );

        // A link the guest planted under the name: replaced, the host file untouched.
        let host_file = d.0.join("host-file");
        fs::write(&host_file, "host").unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&host_file, &path).unwrap();
        publish_next(&d.0, minute).unwrap();
        assert_eq!(fs::read_to_string(&host_file).unwrap(), "host");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());

        // A zone the host does not know: the host's own, and why.
        fs::write(d.0.join(".aegis/agent.json"), r#"{"timezone": "Europe/Pariss"}"#).unwrap();
        publish_next(&d.0, minute).unwrap();
        let next: NextRuns = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(next.zone, zone_name(&TimeZone::system(), minute));
        let problem = next.problem.unwrap();
        assert!(
            problem
                .starts_with("agent.json timezone \"Europe/Pariss\" is not in the host's time zone database"),
            "{problem}"
        );
    }

    #[test]
    fn a_fifo_the_guest_put_in_aegis_stops_nothing() {
        let cron = r#"{"entries": [{"id": "cron-1", "schedule": "* * * * *", "message": "tick", "session": "cron-1"}], "next_id": 2}"#;
        let d = workspace("fifo", cron);
        let agent_json = d.0.join(".aegis/agent.json");
        fs::remove_file(&agent_json).unwrap();
        let c = std::ffi::CString::new(agent_json.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let ws = d.0.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let minute = 1_795_424_400 / 60;
            let due =
                due(&ws, &ws.join("state.json"), minute, &Clock::real()).map(|d| d.map(|d| d.runs.len()));
            let _ = tx.send((due, publish_next(&ws, minute)));
        });
        let (due, published) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the host waited on a FIFO");
        assert_eq!(due, Ok(Some(1)), "the task still runs, in the host's zone");
        assert_eq!(published, Ok(()));
    }
}
