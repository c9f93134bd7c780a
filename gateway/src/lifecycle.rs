//! The gateway's own lifecycle: when to stop, reload or leave.
//!
//! One watcher thread polls the config file (every 2 s: a change is applied within
//! 5 s) and, in per-instance mode, asks aegisd for the instance (every 5 s); signals
//! arrive on another thread. Both report on one channel to `main`, which reloads by
//! re-executing itself: every bot's state is on disk (offsets, cursors, replies in
//! progress), so a reload resumes exactly like a restart, losing and repeating nothing.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use tether::AegisClient;

/// Config file poll interval.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// Instance check interval in per-instance mode.
const INSTANCE_POLL: Duration = Duration::from_secs(5);
/// Failed checks in a row before aegisd counts as gone (a restarting aegisd is not).
const GONE_AFTER: u32 = 3;

/// What `main` should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM or SIGINT: leave.
    Stop(i32),
    /// SIGHUP, or the config file changed: apply it.
    Reload(&'static str),
    /// The instance was deleted or aegisd is gone: leave with status 0 ("do not restart").
    Gone(String),
}

/// Start the watcher (and the signal thread); events arrive on the returned channel.
pub fn start(
    config: PathBuf,
    instance: Option<String>,
    aegis: AegisClient,
) -> std::io::Result<Receiver<Event>> {
    let (tx, rx) = unbounded();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    let stx = tx.clone();
    thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            let ev = if sig == signal_hook::consts::SIGHUP {
                Event::Reload("SIGHUP")
            } else {
                Event::Stop(sig)
            };
            if stx.send(ev).is_err() {
                return;
            }
        }
    })?;
    thread::Builder::new()
        .name("watcher".into())
        .stack_size(128 * 1024)
        .spawn(move || watch(&config, instance.as_deref(), &aegis, &tx))?;
    Ok(rx)
}

fn watch(config: &std::path::Path, instance: Option<&str>, aegis: &AegisClient, tx: &Sender<Event>) {
    let read = || std::fs::read(config).ok();
    let mut seen = read();
    let mut failures = 0;
    let mut since_check = Duration::ZERO;
    loop {
        thread::sleep(CONFIG_POLL);
        let now = read();
        if now != seen {
            seen = now;
            if tx.send(Event::Reload("the config file changed")).is_err() {
                return;
            }
        }
        let Some(handle) = instance else { continue };
        since_check += CONFIG_POLL;
        if since_check < INSTANCE_POLL {
            continue;
        }
        since_check = Duration::ZERO;
        let path = format!("/v1/instances/{}", tether::client::encode_segment(handle));
        match aegis.request("GET", &path, None) {
            Ok(_) => failures = 0,
            Err(e) if e.status() == Some(404) => {
                let _ = tx.send(Event::Gone(format!("instance {handle} was deleted")));
                return;
            }
            Err(e) => {
                failures += 1;
                log::debug!("instance check failed ({failures}/{GONE_AFTER}): {e}");
                if failures >= GONE_AFTER {
                    let _ = tx.send(Event::Gone(format!("aegisd is gone ({e})")));
                    return;
                }
            }
        }
    }
}
