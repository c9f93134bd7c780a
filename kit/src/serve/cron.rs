//! The host side of scheduled tasks in serve: once a minute, every instance's
//! `workspace/.aegis/cron.json` is evaluated (see `tether::schedule`) and each run due is
//! sent to the instance as a `user.message` on channel `cron`, which wakes it. The guest
//! can sleep between runs. The newest minute evaluated is kept per instance in
//! `cron-state.json`, saved once the runs were accepted, so a serve killed around a
//! minute boundary catches up on start and never sends a run twice (a run is named
//! `cron-<task id>-<unix minute>`, and the agent ignores a copy it answered).

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::bounded;
use tether::cron::OnConflict;
use tether::schedule::{self, Clock};

use super::supervisor::{Cmd, Handle};
use super::Host;

/// Whether serve fires scheduled tasks: yes unless `AEGIS_KIT_CRON=off`, which leaves
/// them to per-instance gateways as under AegisVM (aegisd does not fire them).
pub fn host_fires() -> bool {
    std::env::var("AEGIS_KIT_CRON").map_or(true, |v| v != "off")
}

/// How long a run may take to be accepted (a stopped instance boots first).
const ACCEPT_WAIT: Duration = Duration::from_secs(60);

/// Start the scheduler thread.
pub fn start(host: Arc<Host>, clock: Clock) -> std::io::Result<()> {
    if !clock.is_real() {
        log::warn!("scheduled tasks use a test clock (AEGIS_KIT_CLOCK)");
    }
    thread::Builder::new().name("cron".into()).spawn(move || loop {
        let minute = clock.now_ms().div_euclid(60_000);
        for h in host.handles() {
            let dir = host.registry.instance_dir(&h.def.name);
            run_instance(&h, &dir, minute, &clock);
        }
        // A little past the boundary, so the next minute has surely begun.
        thread::sleep(clock.until((minute + 1) * 60) + Duration::from_millis(5));
    })?;
    Ok(())
}

/// Send one instance's runs due at `minute` (and any it missed).
fn run_instance(h: &Handle, dir: &Path, minute: i64, clock: &Clock) {
    let due = match schedule::due(
        &dir.join("workspace"),
        &dir.join("cron-state.json"),
        minute,
        clock,
    ) {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            log::warn!("{}: scheduled tasks: {e}", h.def.name);
            return;
        }
    };
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
    let mut all_accepted = true;
    for (id, rx) in waits {
        let problem = match rx.recv_timeout(ACCEPT_WAIT) {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "not accepted in time".to_string(),
        };
        all_accepted = false;
        log::warn!(
            "{}: task {id} could not be delivered ({problem}); trying again next minute",
            h.def.name
        );
    }
    if all_accepted {
        if let Err(e) = due.commit() {
            log::error!("{}: cannot save cron-state.json: {e}", h.def.name);
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
