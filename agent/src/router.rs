//! The router: one thread that receives every ingress frame, acknowledges it, and hands
//! it to the worker of its session (starting one if needed), so sessions run in
//! parallel while each session's messages are answered in order. Cancels bypass the
//! queue and go straight to the reply in flight.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, unbounded, Receiver, Sender};
use tether::frame::{kind, Ack, Cancel};
use tether::{Frame, Session};

use crate::worker::{self, SessionState, Shared};

/// A worker idle this long is retired (its history is reloaded from disk when needed).
const WORKER_IDLE: Duration = Duration::from_secs(300);

struct Worker {
    work: Sender<Frame>,
    state: Arc<SessionState>,
    last_used: Instant,
}

/// Route frames from `ingress` until it closes.
pub fn run(ingress: Receiver<Frame>, shared: Arc<Shared>) {
    let mut workers: HashMap<Session, Worker> = HashMap::new();
    let sweep = tick(Duration::from_secs(30));
    loop {
        select! {
            recv(ingress) -> frame => match frame {
                Ok(frame) => route(frame, &mut workers, &shared),
                Err(_) => return,
            },
            recv(sweep) -> _ => {
                // Retire only idle workers: nothing queued, nothing in flight.
                workers.retain(|_, w| {
                    w.state.pending.load(Ordering::SeqCst) > 0 || w.last_used.elapsed() < WORKER_IDLE
                });
            }
        }
    }
}

fn route(frame: Frame, workers: &mut HashMap<Session, Worker>, shared: &Arc<Shared>) {
    let Some(session) = frame.session.clone() else {
        log::warn!("ignoring {} frame without session", frame.kind);
        return;
    };
    match frame.kind.as_str() {
        kind::USER_MESSAGE => {
            let mut ack = Frame::new(kind::EVENT_ACK, Some(session.clone())).with_payload(&Ack {
                msg_id: frame.msg_id.clone(),
            });
            ack.msg_id = frame.msg_id.clone();
            let _ = shared.egress.send(ack);
            let w = workers.entry(session.clone()).or_insert_with(|| spawn(&session, shared));
            w.last_used = Instant::now();
            w.state.pending.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = w.work.send(frame) {
                // The worker thread died (it cannot have been retired: pending was > 0).
                log::error!("worker for {}/{} is gone; restarting it", session.channel, session.id);
                let fresh = spawn(&session, shared);
                fresh.state.pending.fetch_add(1, Ordering::SeqCst);
                let _ = fresh.work.send(e.into_inner());
                workers.insert(session, fresh);
            }
        }
        kind::CONTROL_CANCEL => {
            let target = frame.payload_as::<Cancel>().ok().and_then(|c| c.msg_id).or(frame.msg_id.clone());
            cancel(workers.get(&session), target.as_deref(), &session);
        }
        other => log::debug!("ignoring {other} frame"),
    }
}

fn cancel(worker: Option<&Worker>, target: Option<&str>, session: &Session) {
    let Some(w) = worker else {
        log::info!("cancel for {}/{}: nothing in flight", session.channel, session.id);
        return;
    };
    let inflight = w.state.inflight.lock().expect("inflight lock");
    match (&*inflight, target) {
        (Some(f), None) => {
            let _ = f.cancel.try_send(());
        }
        (Some(f), Some(t)) if f.msg_id.as_deref() == Some(t) => {
            let _ = f.cancel.try_send(());
        }
        (_, Some(t)) if w.state.pending.load(Ordering::SeqCst) > 0 => {
            // Not started yet: the worker skips it when its turn comes.
            w.state.skip.lock().expect("skip lock").insert(t.to_string());
        }
        _ => log::info!("cancel for {}/{}: nothing in flight", session.channel, session.id),
    }
}

fn spawn(session: &Session, shared: &Arc<Shared>) -> Worker {
    let (tx, rx) = unbounded();
    let state = Arc::new(SessionState::default());
    let (s, st, sh) = (session.clone(), Arc::clone(&state), Arc::clone(shared));
    thread::Builder::new()
        .name(format!("session-{}", session.id.chars().take(8).collect::<String>()))
        .stack_size(256 * 1024)
        .spawn(move || worker::run(s, st, rx, sh))
        .expect("spawn session worker");
    Worker {
        work: tx,
        state,
        last_used: Instant::now(),
    }
}
