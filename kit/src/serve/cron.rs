//! The host side of scheduled tasks in serve: once a minute, every instance's
//! `workspace/.aegis/cron.json` is evaluated (see `tether::schedule`) and each run due is
//! sent to the instance as a `user.message` on channel `cron`, which wakes it. The guest
//! can sleep between runs. The newest minute evaluated is kept per instance in
//! `cron-state.json`, saved once the runs were accepted, so a serve killed around a
//! minute boundary catches up on start and never sends a run twice (a run is named
//! `cron-<task id>-<unix minute>`, and the agent ignores a copy it answered).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use tether::cron::OnConflict;
use tether::schedule::{self, Clock};

use super::supervisor::{Cmd, Handle};
use super::{ApiError, Host};

/// Whether serve fires scheduled tasks: yes unless `AEGIS_KIT_CRON=off`, which leaves
/// them to per-instance gateways as under AegisVM (aegisd does not fire them).
pub fn host_fires() -> bool {
    std::env::var("AEGIS_KIT_CRON").map_or(true, |v| v != "off")
}

/// How long a run may take to be accepted (a stopped instance boots first).
const ACCEPT_WAIT: Duration = Duration::from_secs(60);

/// Start the scheduler thread.
///
/// Runs are sent to every instance before any acceptance is awaited, and each instance's
/// acceptances are awaited on a thread of their own: an instance that takes its whole
/// boot timeout to fail delays nobody else's runs. An instance whose previous runs are
/// still unsettled is left out of a minute; the minutes it missed are caught up once they
/// settle (nothing was recorded as sent).
pub fn start(host: Arc<Host>, clock: Clock) -> std::io::Result<()> {
    if !clock.is_real() {
        log::warn!("scheduled tasks use a test clock (AEGIS_KIT_CLOCK)");
    }
    let unsettled: Arc<Mutex<HashSet<String>>> = Arc::default();
    thread::Builder::new().name("cron".into()).spawn(move || loop {
        let minute = clock.now_ms().div_euclid(60_000);
        for h in host.handles() {
            let name = &h.def.name;
            if unsettled.lock().expect("cron lock").contains(name) {
                log::debug!("{name}: scheduled tasks: earlier runs not settled yet");
                continue;
            }
            let dir = host.registry.instance_dir(name);
            let Some(batch) = send_due(&h, &dir, minute, &clock) else {
                continue;
            };
            if batch.waits.is_empty() {
                // Nothing sent (the usual minute): just record it, no thread needed.
                batch.settle();
                continue;
            }
            unsettled.lock().expect("cron lock").insert(name.clone());
            let settled = Arc::clone(&unsettled);
            let spawned = thread::Builder::new()
                .name(format!("cron-{name}"))
                .spawn(move || {
                    let name = batch.name.clone();
                    batch.settle();
                    settled.lock().expect("cron lock").remove(&name);
                });
            if let Err(e) = spawned {
                // Nothing was recorded as sent: the runs go again next minute, same msg_id.
                log::error!("scheduled tasks: cannot start a thread: {e}");
                unsettled.lock().expect("cron lock").remove(name);
            }
        }
        // A little past the boundary, so the next minute has surely begun.
        thread::sleep(clock.until((minute + 1) * 60) + Duration::from_millis(5));
    })?;
    Ok(())
}

/// Runs sent to one instance, waiting to be accepted.
struct Batch {
    name: String,
    due: schedule::Due,
    waits: Vec<(String, Receiver<Result<(), ApiError>>)>,
}

/// Send one instance's runs due at `minute` (and any it missed); `None` when none are.
fn send_due(h: &Handle, dir: &Path, minute: i64, clock: &Clock) -> Option<Batch> {
    let workspace = h.def.workspace_in(dir);
    // One read of the task file (and agent.json) for both.
    let tasks = match schedule::tasks(&workspace) {
        Ok(t) => t?,
        Err(e) => {
            log::warn!("{}: scheduled tasks: {e}", h.def.name);
            return None;
        }
    };
    if let Err(e) = tasks.publish_next(&workspace, minute) {
        log::debug!(
            "{}: scheduled tasks: cannot tell the agent their next runs: {e}",
            h.def.name
        );
    }
    let due = tasks.due(&dir.join("cron-state.json"), minute, clock)?;
    for p in &due.problems {
        log::warn!("{}: scheduled tasks: {p}", h.def.name);
    }
    let mut waits = Vec::new();
    for (entry, m) in &due.runs {
        if entry.on_conflict == OnConflict::Skip && owes(h, &entry.id) {
            log::info!(
                "{}: task {} skipped: its previous run is not answered yet",
                h.def.name,
                entry.id
            );
            continue;
        }
        let frame = schedule::run_frame(entry, *m);
        log::info!(
            "{}: task {} runs ({}) in session cron/{}",
            h.def.name,
            entry.id,
            frame.msg_id.as_deref().unwrap_or(""),
            entry.session
        );
        let (tx, rx) = bounded(1);
        if h.tx.send(Cmd::Ingress(frame, tx)).is_ok() {
            waits.push((entry.id.clone(), rx));
        }
    }
    Some(Batch {
        name: h.def.name.clone(),
        due,
        waits,
    })
}

impl Batch {
    /// Wait for every run to be accepted, then record the minute as done; a run not
    /// accepted leaves it unrecorded, so it is sent again (same `msg_id`) next minute.
    fn settle(self) {
        let deadline = Instant::now() + ACCEPT_WAIT;
        let mut all_accepted = true;
        for (id, rx) in self.waits {
            let problem = match rx.recv_deadline(deadline) {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "not accepted in time".to_string(),
            };
            all_accepted = false;
            log::warn!(
                "{}: task {id} could not be delivered ({problem}); trying again next minute",
                self.name
            );
        }
        if all_accepted {
            if let Err(e) = self.due.commit() {
                log::error!("{}: cannot save cron-state.json: {e}", self.name);
            }
        }
    }
}

/// Whether the instance still owes an answer to a run of task `id`.
fn owes(h: &Handle, id: &str) -> bool {
    let (tx, rx) = bounded(1);
    if h.tx.send(Cmd::Owes(format!("cron-{id}-"), tx)).is_err() {
        return false;
    }
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
}
