//! The router: one thread that receives every ingress frame, acknowledges it, and hands
//! it to the worker of its session (starting one if needed), so sessions run in
//! parallel while each session's messages are answered in order. Cancels bypass the
//! queue and go straight to the reply in flight, as does the answer to a question that
//! reply put to the user ([`crate::asking`]).

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

/// Route frames from `ingress` until it closes, and the agent's own messages from `own`
/// (a background job's end), which no host sent and so none is acknowledged.
pub fn run(ingress: Receiver<Frame>, own: Receiver<Frame>, shared: Arc<Shared>) {
    let mut workers: HashMap<Session, Worker> = HashMap::new();
    let sweep = tick(Duration::from_secs(30));
    loop {
        select! {
            recv(ingress) -> frame => match frame {
                Ok(frame) => {
                    acknowledge(&frame, &shared);
                    route(frame, &mut workers, &shared);
                }
                Err(_) => return,
            },
            recv(own) -> frame => if let Ok(frame) = frame {
                route(frame, &mut workers, &shared);
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

/// Tell the host a user message of its has arrived (upstream's `event.ack`).
fn acknowledge(frame: &Frame, shared: &Shared) {
    if frame.kind != kind::USER_MESSAGE {
        return;
    }
    let Some(session) = frame.session.clone() else {
        return;
    };
    let mut ack = Frame::new(kind::EVENT_ACK, Some(session)).with_payload(&Ack {
        msg_id: frame.msg_id.clone(),
    });
    ack.msg_id = frame.msg_id.clone();
    let _ = shared.egress.send(ack);
}

fn route(frame: Frame, workers: &mut HashMap<Session, Worker>, shared: &Arc<Shared>) {
    log::debug!("ingress {} frame (msg_id {:?})", frame.kind, frame.msg_id);
    let Some(session) = frame.session.clone() else {
        log::warn!("ignoring {} frame without session", frame.kind);
        return;
    };
    match frame.kind.as_str() {
        kind::USER_MESSAGE => {
            // The answer to a question the reply in flight put to this user.
            let frame = match workers.get(&session) {
                Some(w) => match w.state.hand_answer(frame) {
                    None => return,
                    Some(frame) => frame,
                },
                None => frame,
            };
            if !workers.contains_key(&session) {
                match spawn(shared) {
                    Ok(w) => {
                        workers.insert(session.clone(), w);
                    }
                    Err(e) => return refuse(&frame, &session, shared, &e),
                }
            }
            let w = workers.get_mut(&session).expect("worker just ensured");
            w.last_used = Instant::now();
            w.state.pending.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = w.work.send(frame) {
                // The worker thread died (it cannot have been retired: pending was > 0).
                log::error!(
                    "worker for {}/{} is gone; restarting it",
                    session.channel,
                    session.id
                );
                let fresh = match spawn(shared) {
                    Ok(w) => w,
                    Err(err) => return refuse(&e.into_inner(), &session, shared, &err),
                };
                fresh.state.pending.fetch_add(1, Ordering::SeqCst);
                let _ = fresh.work.send(e.into_inner());
                workers.insert(session, fresh);
            }
        }
        kind::CONTROL_CANCEL => {
            // The frame's own msg_id names the cancel itself; the target is in the payload.
            let target = frame.payload_as::<Cancel>().ok().and_then(|c| c.msg_id);
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

/// Start a worker whose session arrives with its first frame. The thread name is fixed:
/// session ids come from outside and may hold anything, NUL included.
fn spawn(shared: &Arc<Shared>) -> std::io::Result<Worker> {
    let (tx, rx) = unbounded::<Frame>();
    let state = Arc::new(SessionState::default());
    let (st, sh) = (Arc::clone(&state), Arc::clone(shared));
    thread::Builder::new()
        .name("session".into())
        .stack_size(256 * 1024)
        .spawn(move || worker::run(st, rx, sh))?;
    Ok(Worker {
        work: tx,
        state,
        last_used: Instant::now(),
    })
}

/// Tell the user their message cannot be handled now (no thread could be started).
fn refuse(frame: &Frame, session: &Session, shared: &Shared, err: &std::io::Error) {
    log::error!(
        "cannot start a worker for {}/{}: {err}",
        session.channel,
        session.id
    );
    let text = "⚠️ The agent is out of resources and cannot answer right now. Please try again later.";
    let mut done = Frame::text(kind::ASSISTANT_DONE, session.clone(), text);
    done.msg_id = frame.msg_id.clone();
    let _ = shared.egress.send(done);
}
