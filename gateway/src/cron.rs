//! Scheduled tasks under AegisVM, where aegisd does not fire them: in per-instance mode
//! the gateway evaluates its instance's `cron.json` (in the workspace aegisd reports)
//! once a minute and posts each run due as a `user.message` on channel `cron`, which
//! wakes the instance (see `tether::schedule`). `aegis-kit serve` fires tasks itself
//! and tells its per-instance gateways so (`AEGIS_HOST_SCHEDULES=1`).
//!
//! The newest minute evaluated is kept in `~/.aegis/kits/<handle>/cron-state.json`, so a
//! restarted gateway catches up without sending a run twice.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use tether::cron::OnConflict;
use tether::schedule::{self, Clock};
use tether::AegisClient;

/// Runs posted whose `assistant.done` has not been seen on the egress stream. Kept for
/// the process, like the stream itself: a restart assumes nothing is running.
static ACTIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The egress stream saw the end of the reply to `msg_id`.
pub fn answered(msg_id: &str) {
    if msg_id.starts_with("cron-") {
        ACTIVE.lock().expect("cron lock").remove(msg_id);
    }
}

fn running(task: &str) -> bool {
    let prefix = format!("cron-{task}-");
    ACTIVE
        .lock()
        .expect("cron lock")
        .iter()
        .any(|m| m.starts_with(&prefix))
}

/// Start the scheduler of `instance` (state in `state_dir`).
pub fn start(aegis: AegisClient, instance: String, state_dir: PathBuf, clock: Clock) -> std::io::Result<()> {
    thread::Builder::new().name("cron".into()).spawn(move || {
        let state = state_dir.join("cron-state.json");
        let mut workspace: Option<PathBuf> = None;
        loop {
            let minute = clock.now_ms().div_euclid(60_000);
            if workspace.is_none() {
                workspace = match aegis.instance_workspace(&instance) {
                    Ok(ws) => ws,
                    Err(e) => {
                        log::debug!("scheduled tasks: cannot look up the workspace: {e}");
                        None
                    }
                };
            }
            if let Some(ws) = &workspace {
                tick(&aegis, &instance, ws, &state, minute, &clock);
            }
            thread::sleep(clock.until((minute + 1) * 60) + Duration::from_millis(5));
        }
    })?;
    Ok(())
}

fn tick(
    aegis: &AegisClient,
    instance: &str,
    ws: &std::path::Path,
    state: &std::path::Path,
    minute: i64,
    clock: &Clock,
) {
    // One read of the task file (and agent.json) for both.
    let tasks = match schedule::tasks(ws) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            log::warn!("scheduled tasks: {e}");
            return;
        }
    };
    if let Err(e) = tasks.publish_next(ws, minute) {
        log::debug!("scheduled tasks: cannot tell the agent their next runs: {e}");
    }
    let Some(due) = tasks.due(state, minute, clock) else {
        return;
    };
    for p in &due.problems {
        log::warn!("scheduled tasks: {p}");
    }
    let mut all_accepted = true;
    for (entry, m) in &due.runs {
        if entry.on_conflict == OnConflict::Skip && running(&entry.id) {
            log::info!("task {} skipped: its previous run is not answered yet", entry.id);
            continue;
        }
        let frame = schedule::run_frame(entry, *m);
        let id = frame.msg_id.clone().unwrap_or_default();
        match aegis.post_frame(instance, &frame) {
            Ok(()) => {
                log::info!("task {} runs ({id}) in session cron/{}", entry.id, entry.session);
                ACTIVE.lock().expect("cron lock").insert(id);
            }
            Err(e) => {
                all_accepted = false;
                log::warn!(
                    "task {} could not be sent ({e}); trying again next minute",
                    entry.id
                );
            }
        }
    }
    if all_accepted {
        if let Err(e) = due.commit() {
            log::error!("cannot save {}: {e}", state.display());
        }
    }
}
