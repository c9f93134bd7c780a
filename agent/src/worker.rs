//! One worker thread per active session: answers that session's messages in order.
//!
//! For each `user.message`: `status.presence thinking`, the user turn appended to the
//! session file, the LLM stream relayed as `assistant.delta`s, the reply appended, then
//! `assistant.done`. A cancel (delivered on a channel installed for the reply in flight)
//! stops the stream at once; the partial reply is kept, marked cancelled.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use tether::frame::{kind, ErrorPayload, Presence, UserMessage};
use tether::{Frame, Session};

use crate::llm::{Chunk, ErrorKind, Llm, LlmError};
use crate::session::{context, user_content, Budget, Role, SessionStore, Turn};

/// The reply text when no provider is configured.
pub const NO_PROVIDER: &str = "⚠️ No LLM is configured for this agent. Set ANTHROPIC_API_KEY or \
OPENAI_API_KEY (or OPENAI_BASE_URL for an OpenAI-compatible server such as Ollama) in the agent's \
environment and restart it.";

/// Shown when a reply is cancelled before any text arrived.
pub const CANCELLED: &str = "⏹ Reply cancelled.";

/// What every worker shares.
#[derive(Debug)]
pub struct Shared {
    /// The LLM client, if configured.
    pub llm: Option<Llm>,
    /// Session files.
    pub sessions: SessionStore,
    /// System prompt.
    pub system_prompt: String,
    /// Context limits.
    pub budget: Budget,
    /// Egress frames, in order, to the host.
    pub egress: Sender<Frame>,
}

/// The reply in flight for one session, so a cancel can reach it.
#[derive(Debug)]
pub struct InFlight {
    /// `msg_id` of the message being answered.
    pub msg_id: Option<String>,
    /// Fires the cancel.
    pub cancel: Sender<()>,
}

/// State shared by the router and one session's worker.
#[derive(Debug, Default)]
pub struct SessionState {
    /// The reply being streamed, if any.
    pub inflight: Mutex<Option<InFlight>>,
    /// Queued messages cancelled before they started.
    pub skip: Mutex<HashSet<String>>,
    /// Messages queued or being handled; the router retires a worker only at zero.
    pub pending: AtomicUsize,
}

/// A session worker's loop: runs until the router drops the sending side.
pub fn run(state: Arc<SessionState>, work: Receiver<Frame>, shared: Arc<Shared>) {
    let mut history: Option<Vec<Turn>> = None;
    for frame in work {
        // The router only queues frames that carry a session.
        let Some(session) = frame.session.clone() else {
            continue;
        };
        let history = history.get_or_insert_with(|| match shared.sessions.load(&session, keep(&shared)) {
            Ok(h) => h,
            Err(e) => {
                log::error!(
                    "cannot read history of {}: {e}",
                    shared.sessions.path(&session).display()
                );
                Vec::new()
            }
        });
        handle(&session, &state, &shared, history, &frame);
        state.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reply_frame(kind: &str, session: &Session, msg_id: &Option<String>) -> Frame {
    let mut f = Frame::new(kind, Some(session.clone()));
    f.msg_id = msg_id.clone();
    f
}

fn send_text(shared: &Shared, kind: &str, session: &Session, msg_id: &Option<String>, text: &str) {
    let f = reply_frame(kind, session, msg_id).with_payload(&tether::frame::Text {
        text: text.to_string(),
    });
    let _ = shared.egress.send(f);
}

fn send_error(shared: &Shared, session: &Session, msg_id: &Option<String>, code: &str, message: &str) {
    let f = reply_frame(kind::ERROR, session, msg_id).with_payload(&ErrorPayload {
        code: code.to_string(),
        message: message.to_string(),
    });
    let _ = shared.egress.send(f);
}

/// Turns kept in memory: the context window plus a margin for recognising repeated
/// messages. Older turns stay on disk only.
fn keep(shared: &Shared) -> usize {
    shared.budget.turns + 16
}

fn persist(shared: &Shared, session: &Session, history: &mut Vec<Turn>, turn: Turn) {
    if let Err(e) = shared.sessions.append(session, &turn) {
        // The reply still goes out; only the record of it is missing. The error frame
        // carries no msg_id: it is about the session, not a failed reply.
        log::error!("cannot write {}: {e}", shared.sessions.path(session).display());
        send_error(
            shared,
            session,
            &None,
            "storage",
            &format!("history could not be saved: {e}"),
        );
    }
    history.push(turn);
    let keep = keep(shared);
    if history.len() > 2 * keep {
        history.drain(..history.len() - keep);
    }
}

/// How a streamed reply ended.
enum Ending {
    Complete,
    Failed(LlmError),
    Cancelled,
}

fn handle(session: &Session, state: &SessionState, shared: &Shared, history: &mut Vec<Turn>, frame: &Frame) {
    let msg_id = frame.msg_id.clone();
    if let Some(id) = &msg_id {
        if state.skip.lock().expect("skip lock").remove(id) {
            send_error(
                shared,
                session,
                &msg_id,
                "cancelled",
                "cancelled before it started",
            );
            send_text(shared, kind::ASSISTANT_DONE, session, &msg_id, CANCELLED);
            return;
        }
    }
    let msg: UserMessage = match frame.payload_as() {
        Ok(m) => m,
        Err(e) => {
            log::warn!("dropping user.message: {e}");
            return;
        }
    };
    // A message can arrive twice: a host redelivers it after a crash, a gateway re-reads
    // it after a restart. Answered already (an assistant turn follows it): drop it.
    // Stored but unanswered: answer it, without storing it a second time.
    let earlier = msg_id.as_ref().and_then(|id| {
        history
            .iter()
            .rposition(|t| t.role == Role::User && t.msg_id.as_ref() == Some(id))
    });
    match earlier {
        Some(i) if history[i + 1..].iter().any(|t| t.role == Role::Assistant) => {
            log::info!(
                "{}/{}: message {:?} was already answered; ignoring the copy",
                session.channel,
                session.id,
                msg_id
            );
            return;
        }
        Some(_) => log::info!(
            "{}/{}: answering redelivered message {:?}",
            session.channel,
            session.id,
            msg_id
        ),
        None => {
            let mut turn = Turn::new(Role::User, user_content(&msg.text, msg.user.as_ref()));
            turn.msg_id = msg_id.clone();
            persist(shared, session, history, turn);
        }
    }
    let presence = reply_frame(kind::STATUS_PRESENCE, session, &msg_id).with_payload(&Presence {
        state: "thinking".into(),
    });
    let _ = shared.egress.send(presence);
    let Some(llm) = &shared.llm else {
        send_error(shared, session, &msg_id, "no_provider", NO_PROVIDER);
        send_text(shared, kind::ASSISTANT_DONE, session, &msg_id, NO_PROVIDER);
        return;
    };

    let (cancel_tx, cancel_rx) = bounded::<()>(1);
    *state.inflight.lock().expect("inflight lock") = Some(InFlight {
        msg_id: msg_id.clone(),
        cancel: cancel_tx,
    });
    let stream = llm.stream(&shared.system_prompt, context(history, shared.budget));
    let mut text = String::new();
    let ending = loop {
        select! {
            recv(stream.chunks) -> chunk => match chunk {
                Ok(Chunk::Delta(t)) => {
                    send_text(shared, kind::ASSISTANT_DELTA, session, &msg_id, &t);
                    text.push_str(&t);
                }
                Ok(Chunk::End(Ok(()))) => break Ending::Complete,
                Ok(Chunk::End(Err(e))) => break Ending::Failed(e),
                Err(_) => break Ending::Failed(LlmError {
                    kind: ErrorKind::Cut,
                    detail: "the LLM reader stopped".into(),
                    retry_after: None,
                }),
            },
            recv(cancel_rx) -> _ => break Ending::Cancelled,
        }
    };
    *state.inflight.lock().expect("inflight lock") = None;
    drop(stream); // stops the reader thread if it is still running

    match ending {
        Ending::Complete => {
            persist(shared, session, history, Turn::new(Role::Assistant, text.clone()));
            send_text(shared, kind::ASSISTANT_DONE, session, &msg_id, &text);
        }
        Ending::Failed(e) => {
            log::warn!("reply for {}/{} failed: {e}", session.channel, session.id);
            let notice = e.user_message();
            send_error(shared, session, &msg_id, e.code(), &notice);
            let done = if text.is_empty() {
                notice
            } else {
                persist(shared, session, history, Turn::new(Role::Assistant, text.clone()));
                format!("{text}\n\n{notice}")
            };
            send_text(shared, kind::ASSISTANT_DONE, session, &msg_id, &done);
        }
        Ending::Cancelled => {
            log::info!("reply for {}/{} cancelled", session.channel, session.id);
            send_error(shared, session, &msg_id, "cancelled", "the reply was cancelled");
            let done = if text.is_empty() {
                CANCELLED.to_string()
            } else {
                let mut turn = Turn::new(Role::Assistant, text.clone());
                turn.cancelled = true;
                persist(shared, session, history, turn);
                format!("{text}\n\n{CANCELLED}")
            };
            send_text(shared, kind::ASSISTANT_DONE, session, &msg_id, &done);
        }
    }
}
