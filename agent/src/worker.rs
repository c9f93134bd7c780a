//! One worker thread per active session: answers that session's messages in order.
//!
//! For each `user.message`: the user turn appended to the session file,
//! `status.presence thinking` (with the explicit restart signal, so a host that shows a
//! previous attempt's text starts over), then up to `max_rounds` model calls: each
//! round's text is relayed as `assistant.delta`s; if the model asks for tools, the calls
//! and their results are appended to the session and run one after another, each
//! announced by `status.presence tool: NAME`, and the next round starts. The reply ends
//! with `assistant.done` carrying all the text the user saw. A cancel (delivered on a
//! channel installed for the reply in flight) stops the stream or the tool at once; the
//! partial reply is kept, marked cancelled. While the reply runs, the worker holds a
//! share of the keepalive lease. A tool's server may ask the user something mid-way: the
//! reply then moves on to the answer's message ([`crate::asking`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use tether::frame::{kind, ErrorPayload, Presence, UserMessage};
use tether::{Frame, Session};

use crate::asking::ChatAsker;
use crate::context::{context, stamped, Budget};
use crate::keepalive::Keepalive;
use crate::llm::{Chunk, ErrorKind, Llm, LlmError, ToolCall, ToolSpec};
use crate::mcp_prompts::Asked;
use crate::session::{user_content, Block, Content, Role, SessionStore, Turn};
use crate::tools::files::PDF_CAP;
use crate::tools::guests::Allowed;
use crate::tools::{together, Attachments, Builtin, CallContext, Outcome, Toolbox};

/// The reply text when no provider is configured.
pub const NO_PROVIDER: &str = "⚠️ No LLM is configured for this agent. Set ANTHROPIC_API_KEY or \
OPENAI_API_KEY (or OPENAI_BASE_URL for an OpenAI-compatible server such as Ollama) in the agent's \
environment and restart it.";

/// The answer to a guest's `/mcp sign_out`.
const GUESTS_SIGN_OUT: &str =
    "⚠️ Only the agent's trusted users (AEGIS_TRUSTED_USERS) can sign it out of an MCP server.";

/// What a guest's `/usage` says instead of the agent's record.
const GUESTS_USAGE: &str = "The agent's usage is shown to its trusted users (AEGIS_TRUSTED_USERS).";

/// The answer to a guest's `/model NAME`.
const GUESTS_MODEL: &str = "⚠️ Only the agent's trusted users (AEGIS_TRUSTED_USERS) can pick the model this chat talks to; /model shows it.";

/// Shown when a reply is cancelled before any text arrived.
pub const CANCELLED: &str = "⏹ Reply cancelled.";

/// The result recorded for a tool call the cancel did not let run.
const CALL_CANCELLED: &str = "error: cancelled by the user before the tool finished";

/// What every worker shares.
#[derive(Debug)]
pub struct Shared {
    /// The LLM clients (the agent's model, and those chats chose), if configured.
    pub models: Option<crate::chat_model::Models>,
    /// What the model's requests cost, added up (`/usage`).
    pub usage: std::sync::Arc<crate::usage::Ledger>,
    /// The daily limits on what the model's requests take.
    pub limits: Arc<crate::limits::Limits>,
    /// Session files.
    pub sessions: SessionStore,
    /// System prompt.
    pub system_prompt: String,
    /// Context limits.
    pub budget: Budget,
    /// Recaps of what fell out of the window.
    pub recaps: std::sync::Arc<crate::recap::Recaps>,
    /// Egress frames, in order, to the host.
    pub egress: Sender<Frame>,
    /// The tools on offer.
    pub tools: Toolbox,
    /// Model calls per message at most.
    pub max_rounds: usize,
    /// The lease that keeps the host from pausing a busy agent.
    pub keepalive: Keepalive,
    /// The workspace (blob store of images).
    pub workspace: std::path::PathBuf,
    /// Long-term memory, for the prompt.
    pub memory: std::sync::Arc<crate::memory::MemoryStore>,
    /// Restarts the agent when `self_restart` asks.
    pub restarter: crate::restart::Restarter,
    /// Writes down voice messages.
    pub voice: crate::transcribe::Voice,
}

/// The reply in flight for one session, so a cancel can reach it.
#[derive(Debug)]
pub struct InFlight {
    /// `msg_id` of the message being answered.
    pub msg_id: Option<String>,
    /// Fires the cancel.
    pub cancel: Sender<()>,
}

/// A question put to the user, waiting for their next message.
#[derive(Debug)]
pub struct Waiting {
    /// Whose message answers (`None`: anyone's).
    pub user: Option<String>,
    /// Where the router hands the answer.
    pub answer: Sender<Frame>,
}

/// State shared by the router and one session's worker.
#[derive(Debug, Default)]
pub struct SessionState {
    /// The reply being streamed, if any.
    pub inflight: Mutex<Option<InFlight>>,
    /// The question a reply waits on the answer to, if any.
    pub waiting: Mutex<Option<Waiting>>,
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
        if let Some(id) = &frame.msg_id {
            shared.tools.answered(id);
        }
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

/// A cancelled reply's end: the `error` (`why`), then the `assistant.done` with the text
/// the user saw and the notice.
fn send_cancelled(shared: &Shared, out: &Session, msg_id: &Option<String>, why: &str, shown: &str) {
    send_error(shared, out, msg_id, "cancelled", why);
    let done = if shown.is_empty() {
        CANCELLED.to_string()
    } else {
        format!("{shown}\n\n{CANCELLED}")
    };
    send_text(shared, kind::ASSISTANT_DONE, out, msg_id, &done);
}

/// The end of a reasoning model's thoughts (no payload, as upstream's agent sends it).
fn send_reasoning_done(shared: &Shared, session: &Session, msg_id: &Option<String>) {
    let _ = shared
        .egress
        .send(reply_frame(kind::REASONING_DONE, session, msg_id));
}

/// The `assistant.done` of a reply, with the images, files and voice messages tools
/// attached to it, and, when it ends with a question, the answers to pick and whose pick
/// counts ([`crate::asking`]).
pub fn send_done(
    shared: &Shared,
    session: &Session,
    msg_id: &Option<String>,
    text: &str,
    (attached, answers, answerer): (Attachments, Vec<String>, Option<String>),
) {
    if attached.is_empty() && answers.is_empty() {
        return send_text(shared, kind::ASSISTANT_DONE, session, msg_id, text);
    }
    let f = reply_frame(kind::ASSISTANT_DONE, session, msg_id).with_payload(&tether::frame::Done {
        text: text.to_string(),
        images: attached.images,
        files: attached.files,
        voice: attached.voice,
        answers,
        answerer,
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
    let kept = turn.without_thoughts();
    // A paused turn that said nothing yet holds only what the API ran for itself: nothing
    // of the conversation to write down.
    let nothing = matches!(&kept.content, crate::session::Content::Blocks(b) if b.is_empty());
    if nothing {
        history.push(turn);
        return;
    }
    if let Err(e) = shared.sessions.append(session, &kept) {
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

/// The agent's own commands, for the chat's menu, when they changed since last told.
fn send_menu(shared: &Shared, session: &Session, msg_id: &Option<String>) {
    if let Some(commands) = shared.tools.menu_changed() {
        let f = reply_frame(kind::STATUS_COMMANDS, session, msg_id)
            .with_payload(&tether::frame::Commands { commands });
        let _ = shared.egress.send(f);
    }
}

fn send_presence(shared: &Shared, session: &Session, msg_id: &Option<String>, p: &Presence) {
    let _ = shared
        .egress
        .send(reply_frame(kind::STATUS_PRESENCE, session, msg_id).with_payload(p));
}

/// How a reply ended; each carries the text the user has seen.
enum Ending {
    Complete(String),
    Failed(LlmError, String),
    Cancelled(String),
    /// Ended before its next model request, with a note kept as the model's words: the
    /// rounds a message may take, or a daily limit, are used up.
    Stopped(String, String),
    /// `self_restart` was called: the reply ends after its tools, then the agent restarts.
    Restart(String),
    /// A question to the user went unanswered: its message ended what was shown, and
    /// there is no message to answer any more.
    Unanswered,
}

/// How one model call ended.
enum Round {
    Calls(Vec<ToolCall>),
    Failed(LlmError),
    Cancelled,
}

/// Whether `text` is the command `name` alone (`/usage`, `/usage@bot` in a group).
fn is_command(text: &str, name: &str) -> bool {
    let text = text.trim();
    text.split('@').next() == Some(name) && !text.contains(char::is_whitespace)
}

/// Whether the message of `history[i]` (a user turn) got its final answer: a later
/// assistant turn that calls no tool and was not paused, or a later question (the talk
/// moved on).
fn answered(history: &[Turn], i: usize) -> bool {
    history[i + 1..].iter().any(|t| {
        let answer = t.role == Role::Assistant && t.content.tool_uses().next().is_none() && !t.paused;
        t.role == Role::User || answer
    })
}

fn handle(session: &Session, state: &SessionState, shared: &Shared, history: &mut Vec<Turn>, frame: &Frame) {
    let msg_id = frame.msg_id.clone();
    let msg: UserMessage = match frame.payload_as() {
        Ok(m) => m,
        Err(e) => {
            log::warn!("dropping user.message: {e}");
            return;
        }
    };
    // A scheduled task's run keeps its own conversation, and its reply goes to the chat
    // that created the task.
    let out = match (&msg.reply_to, session.channel.as_str()) {
        (Some(chat), "cron") => chat,
        _ => session,
    };
    // Whose daily limits the reply counts against: the chat's, and the sender's. A
    // scheduled run is nobody's message (hosts name its sender `cron`): its chat's only.
    let sender = msg.user.as_ref().filter(|_| session.channel != "cron");
    let payer = crate::limits::Payer::of(out, sender);
    // Whom the reply acts for, and so which tools it may use (`AEGIS_TRUSTED_USERS`): a
    // scheduled run's creator, found before a one-time task's run deletes it.
    let task = msg_id
        .as_deref()
        .and_then(tether::cron::task_of_msg_id)
        .filter(|_| session.channel == "cron");
    let on_behalf = shared
        .tools
        .acting_for(msg.user.as_ref().and_then(|u| u.id.as_deref()), task);
    let allowed = shared.tools.allowed_for(out, on_behalf.as_deref());
    // Where memories are kept and recalled, and whether the one speaking is a guest.
    let here = crate::memory::Here::new(out, msg.user.as_ref().and_then(|u| u.id.as_deref()))
        .for_guest(allowed != Allowed::All);
    if let Some(id) = &msg_id {
        if state.skip.lock().expect("skip lock").remove(id) {
            send_cancelled(shared, out, &msg_id, "cancelled before it started", "");
            return;
        }
    }
    // Answered from the record, without the model, and kept out of the conversation: a
    // copy delivered again is answered again, with the same numbers.
    if is_command(&msg.text, "/usage") {
        // What the agent spends, model by model, is the operator's business, not a
        // stranger's; a guest still sees the daily limits that hold them.
        let mut summary = match allowed {
            Allowed::All => shared.usage.summary(&crate::usage::today()),
            Allowed::Guest(_) => GUESTS_USAGE.to_string(),
        };
        if let Some(limits) = shared.limits.summary(payer) {
            summary = format!("{summary}\n\n{limits}");
        }
        send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, &summary);
        return;
    }
    // A message can arrive twice: a host redelivers it after a crash, a gateway re-reads
    // it after a restart. Answered already: drop it. Stored but unanswered (perhaps
    // halfway through its tools): answer it, without storing it a second time.
    let earlier = msg_id.as_ref().and_then(|id| {
        history
            .iter()
            .rposition(|t| t.role == Role::User && t.msg_id.as_ref() == Some(id))
    });
    // From here a cancel reaches this message (a recording being written down included),
    // and the host does not pause the agent.
    let _busy = shared.keepalive.busy();
    let (cancel_tx, cancel_rx) = bounded::<()>(1);
    let inflight = InFlightGuard::set(state, &msg_id, cancel_tx);
    // Answered without the model and kept out of the conversation, as `/usage`; listing
    // the servers' prompts can take a while, so `/stop` reaches it.
    if is_command(&msg.text, "/skills") {
        match shared.tools.skills_list(&cancel_rx) {
            Some(list) => send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, &list),
            None => send_cancelled(shared, out, &msg_id, "the reply was cancelled", ""),
        }
        send_menu(shared, out, &msg_id);
        return;
    }
    // The chat's scheduled tasks, as `/usage`. A run it asks for is queued once the
    // answer is on its way, so the run's reply never shows before "Running now".
    if let Some((_, rest)) = crate::text::slash_command(&msg.text).filter(|(w, _)| w == "tasks") {
        let (answer, run) = shared
            .tools
            .tasks_command(rest, out, on_behalf.as_deref(), &allowed);
        send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, &answer);
        if let Some(run) = run {
            shared.tools.start_task_run(run);
        }
        return;
    }
    // The MCP servers' state, and signing out of one (which revokes its tokens over the
    // network, hence after the busy mark, and until `/stop`), are the agent's own, as
    // `/usage`; so is `/model`, which may list the server's models first, and a sign-in's
    // address that arrives when no sign-in waits for it: its code stays out of the
    // conversation. `Some(None)`: `/stop` ended the wait.
    let own = match crate::text::slash_command(&msg.text) {
        // Signing the agent out of a server is the trusted people's to do.
        Some((word, rest))
            if word == "mcp" && rest.trim_start().starts_with("sign_out") && allowed != Allowed::All =>
        {
            Some(Some(GUESTS_SIGN_OUT.to_string()))
        }
        Some((word, rest)) if word == "mcp" => Some(Some(shared.tools.mcp_command(rest, &cancel_rx))),
        Some((word, rest)) if word == "jobs" => Some(Some(shared.tools.jobs_command(rest, out, &allowed))),
        Some((word, rest)) if word == "memory" => {
            Some(Some(shared.tools.memory_command(rest, out, &here, &allowed)))
        }
        // As is picking the model a whole group talks to (seeing it is anyone's).
        Some((word, rest)) if word == "model" && !rest.trim().is_empty() && allowed != Allowed::All => {
            Some(Some(GUESTS_MODEL.to_string()))
        }
        Some((word, rest)) if word == "model" => Some(match &shared.models {
            Some(models) => models.command(out, rest, &cancel_rx),
            None => Some(NO_PROVIDER.to_string()),
        }),
        _ => shared.tools.late_sign_in(&msg.text).map(Some),
    };
    match own {
        Some(Some(answer)) => return send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, &answer),
        Some(None) => return send_cancelled(shared, out, &msg_id, "the reply was cancelled", ""),
        None => {}
    }
    // A host's run of a task whose chat the bot can no longer write to (the user blocked
    // it, the group removed it): not run, so the model and its tools are not paid for a
    // reply nobody can see. The gateway lifts that once the chat writes again.
    let host_run = msg_id.as_deref().filter(|id| !tether::cron::is_run_now(id));
    if let (Some(task), Some(id), true) = (task, host_run, session != out) {
        if let Some(why) = shared.tools.chat_gone(out) {
            log::info!(
                "task {task}: run not sent to the model: its chat {}/{} cannot be written to ({why})",
                out.channel,
                out.id
            );
            shared.tools.task_ran(id);
            return send_text(shared, kind::ASSISTANT_DONE, session, &msg_id, "");
        }
    }
    // A daily limit used up: the message is not taken (nor its recording written down);
    // a copy answered already is dropped below, as ever.
    if !earlier.is_some_and(|i| answered(history, i)) {
        if let Some(reached) = shared.limits.reached(payer) {
            return over_limit(shared, session, out, &msg_id, &msg.text, reached);
        }
    }
    // Whom the reply's tools (and a prompt's server) may ask; a question moves the reply
    // on to the answer's message.
    let asker = ChatAsker::new(
        shared,
        state,
        out,
        (msg_id.clone(), msg.user.as_ref().and_then(|u| u.id.clone())),
        &cancel_rx,
    );
    // A scheduled task's run has nobody to ask: its chat's messages are another session's.
    let user: Option<&dyn crate::elicit::User> = (session == out).then_some(&asker);
    // A skill the message asks for by `/NAME` comes with it (and a prompt of that name
    // gives way to it).
    let skill_asked = shared.tools.skill_asked(&msg.text);
    // What memories are chosen by: the words of the message, a recording's included.
    let mut words = msg.text.clone();
    match earlier {
        Some(i) if answered(history, i) => {
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
            // A recording is written down once, before the turn is stored: a redelivered
            // message finds the transcript in its history.
            let Some(said) = written_down(shared, out, &msg_id, &msg, &cancel_rx) else {
                log::info!(
                    "{}/{}: cancelled while a recording was written down",
                    session.channel,
                    session.id
                );
                send_cancelled(shared, out, &msg_id, "the reply was cancelled", "");
                return;
            };
            // `/SERVER_PROMPT`: the turn says what the server's prompt says, and later turns
            // still have it. A prompt that cannot run is answered here, and not stored.
            let prompt = (skill_asked.is_none() && allowed.mcp())
                .then(|| shared.tools.prompt_asked(&said, &cancel_rx, user))
                .flatten();
            if asker.ended() {
                // The server's question went unanswered: its message ended the reply.
                return;
            }
            let turn_text = match prompt {
                None => said.clone(),
                // What the user answered the server is part of what they asked.
                Some(Asked::Expanded(text)) => match asker.take_moved() {
                    Some(heard) => format!("{text}\n\n{}", heard.join("\n\n")),
                    None => text,
                },
                Some(Asked::Answer(answer)) => {
                    send_text(shared, kind::ASSISTANT_DONE, out, &asker.msg_id(), &answer);
                    return;
                }
                Some(Asked::Cancelled) => {
                    send_cancelled(shared, out, &asker.msg_id(), "the reply was cancelled", "");
                    return;
                }
            };
            let text = user_content(&turn_text, msg.user.as_ref());
            words = said;
            let mut turn = Turn::new(Role::User, user_turn(shared, text, &msg.images));
            turn.msg_id = msg_id.clone();
            persist(shared, session, history, turn);
            if let Some(id) = msg_id.as_deref().filter(|_| session.channel == "cron") {
                shared.tools.task_ran(id);
            }
        }
    }
    // A prompt's question may have moved the reply to the answer's message.
    let msg_id = asker.msg_id();
    send_presence(shared, out, &msg_id, &Presence::restart(""));
    let Some(models) = &shared.models else {
        send_error(shared, out, &msg_id, "no_provider", NO_PROVIDER);
        send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, NO_PROVIDER);
        return;
    };
    // A scheduled task's run talks to the model of the chat it answers.
    let llm = &models.for_chat(out);

    let recap = shared.recaps.prompt(&shared.sessions.path(session));
    // The skills' list and the servers' word on their tools close the fixed part: the same
    // from one reply to the next (until a skill comes or goes), so the prompt cache still
    // serves it.
    let fixed = format!(
        "{}{}{}",
        shared.system_prompt,
        shared.tools.skills_prompt(),
        shared.tools.mcp_instructions()
    );
    let cache_key = crate::prompt_cache::conversation_key(&session.channel, &session.id);
    let memories = shared.memory.inject(&words, &here);
    // The skill asked for, then which skills the model loaded fell out of view
    // (recently: within one window's turns), then the memories.
    let notes: Vec<String> = [
        skill_asked.unwrap_or_default(),
        shared.tools.skills_out_of_view(history, shared.budget),
        memories.trim_start().to_string(),
    ]
    .into_iter()
    .filter(|n| !n.is_empty())
    .collect();
    let notes = notes.join("\n\n");
    // The skills were just looked at: the chat's menu follows them.
    send_menu(shared, out, &msg_id);
    let r = ReplyCtx {
        shared,
        session,
        out,
        payer,
        here: &here,
        asker: &asker,
        user,
        allowed: &allowed,
        on_behalf: on_behalf.as_deref(),
        prompt: crate::llm::Prompt {
            fixed: &fixed,
            recap: &recap,
            notes: &notes,
            // Decided for each round (`rounds`).
            cache: None,
            cache_key: Some(&cache_key),
            // The provider's own search is `web_search`, which a guest may lack.
            reply: allowed.builtin(Builtin::WebSearch),
        },
    };
    let mut used = crate::usage::Totals::default();
    let ending = rounds(llm, r, history, &cancel_rx, &mut used);
    drop(inflight);
    // A question may have moved the reply to the answer's message.
    let msg_id = asker.msg_id();
    let attached = asker.take_attachments();
    if used.requests > 0 {
        log::info!(
            "reply for {}/{}: {} model request{}, {}",
            session.channel,
            session.id,
            used.requests,
            if used.requests == 1 { "" } else { "s" },
            used.tokens()
        );
    }

    match ending {
        Ending::Complete(text) => send_done(shared, out, &msg_id, &text, (attached, Vec::new(), None)),
        Ending::Failed(e, text) => {
            log::warn!("reply for {}/{} failed: {e}", session.channel, session.id);
            let notice = e.user_message();
            send_error(shared, out, &msg_id, e.code(), &notice);
            let done = if text.is_empty() {
                notice
            } else {
                format!("{text}\n\n{notice}")
            };
            send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, &done);
        }
        Ending::Cancelled(text) => {
            log::info!("reply for {}/{} cancelled", session.channel, session.id);
            send_cancelled(shared, out, &msg_id, "the reply was cancelled", &text);
        }
        Ending::Restart(text) => {
            // A restart ends the jobs it cannot follow: whoever asked for it should know.
            let note = match shared.tools.running_jobs() {
                jobs if jobs.is_empty() => crate::restart::RESTARTING.to_string(),
                jobs => format!(
                    "{} It stops the background jobs that run ({}); their chats are told how they ended.",
                    crate::restart::RESTARTING,
                    jobs.join(", ")
                ),
            };
            persist(shared, session, history, Turn::new(Role::Assistant, note.clone()));
            let done = if text.is_empty() {
                note
            } else {
                format!("{text}\n\n{note}")
            };
            send_done(shared, out, &msg_id, &done, (attached, Vec::new(), None));
            shared.restarter.request(out, &shared.egress);
        }
        Ending::Stopped(text, note) => {
            persist(shared, session, history, Turn::new(Role::Assistant, note.clone()));
            let done = if text.is_empty() {
                note
            } else {
                format!("{text}\n\n{note}")
            };
            send_text(shared, kind::ASSISTANT_DONE, out, &msg_id, &done);
        }
        Ending::Unanswered => log::info!(
            "reply for {}/{} ended with a question unanswered",
            session.channel,
            session.id
        ),
    }
    // A recap waits for a reply within the limits (what fell out stays uncovered until
    // then, and is recapped with what falls out next).
    if shared.limits.reached(payer).is_some() {
        return;
    }
    // The recap is the chat's, and the sender's, as the reply was.
    let (limits, chat, user) = (
        Arc::clone(&shared.limits),
        out.clone(),
        payer.user.map(str::to_string),
    );
    let spent = move |t: &crate::usage::Tokens| {
        let payer = crate::limits::Payer {
            chat: &chat,
            user: user.as_deref(),
        };
        limits.spend(payer, t);
    };
    shared.recaps.after_reply(
        llm,
        &shared.sessions.path(session),
        history,
        shared.budget,
        (|| shared.keepalive.busy(), spent),
    );
}

/// Answer a message that found a daily limit used up. A scheduled task's run tells its
/// chat what the task was to do, once a day per task (a task set to run every minute
/// would fill the chat otherwise); a later run's end goes to the task's own session,
/// where no chat sees it but the host learns the run is over. A one-time task is done.
fn over_limit(
    shared: &Shared,
    session: &Session,
    out: &Session,
    msg_id: &Option<String>,
    text: &str,
    reached: crate::limits::Reached,
) {
    log::info!(
        "{}/{}: daily limit used up ({} of {} tokens); not sent to the model",
        session.channel,
        session.id,
        reached.used,
        reached.limit
    );
    let task = msg_id
        .as_deref()
        .and_then(tether::cron::task_of_msg_id)
        .filter(|_| session.channel == "cron");
    match task {
        Some(task) => {
            // Done with before the run's `assistant.done` says so (a one-time task then
            // is gone by the time its host hears the run ended).
            let id = msg_id.as_deref().unwrap_or_default();
            shared.tools.task_ran(id);
            // A run asked for in the chat is told every time: someone waits for it.
            if tether::cron::is_run_now(id) || shared.limits.first_telling(task) {
                send_text(
                    shared,
                    kind::ASSISTANT_DONE,
                    out,
                    msg_id,
                    &reached.task_note(text),
                );
            } else {
                send_text(shared, kind::ASSISTANT_DONE, session, msg_id, "");
            }
        }
        None => {
            let mut note = reached.refusal(std::time::SystemTime::now());
            // A job's end would otherwise go unsaid: its chat gets the first line.
            let job = msg_id.as_deref().and_then(crate::tools::jobs::job_of_msg_id);
            if let (Some(_), Some(head)) = (job, text.lines().next()) {
                note = format!("{head}\n{note}");
            }
            send_text(shared, kind::ASSISTANT_DONE, out, msg_id, &note)
        }
    }
}

/// The reply of a session's message that a cancel can reach, for as long as it lives.
struct InFlightGuard<'a>(&'a SessionState);

impl<'a> InFlightGuard<'a> {
    fn set(state: &'a SessionState, msg_id: &Option<String>, cancel: Sender<()>) -> Self {
        *state.inflight.lock().expect("inflight lock") = Some(InFlight {
            msg_id: msg_id.clone(),
            cancel,
        });
        InFlightGuard(state)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        *self.0.inflight.lock().expect("inflight lock") = None;
    }
}

/// The message's text with its recordings written down (`transcribe.rs`), on a thread of
/// its own so a cancel ends the wait at once; `None` when cancelled (the request runs out
/// on its thread, bounded by its timeout, and its answer is dropped).
pub fn written_down(
    shared: &Shared,
    out: &Session,
    msg_id: &Option<String>,
    msg: &UserMessage,
    cancel: &Receiver<()>,
) -> Option<String> {
    if msg.audio.is_empty() {
        return Some(msg.text.clone());
    }
    // The user sees the reply begin ("Thinking…") while the service listens.
    send_presence(shared, out, msg_id, &Presence::restart(""));
    let (tx, rx) = bounded(1);
    let (voice, text, audio) = (shared.voice.clone(), msg.text.clone(), msg.audio.clone());
    let workspace = shared.workspace.clone();
    let cut = tether::cut::Cut::new();
    let listening = cut.clone();
    let spawned = std::thread::Builder::new()
        .name("transcribe".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = tx.send(voice.text_with(&workspace, &text, &audio, &listening));
        });
    if let Err(e) = spawned {
        return Some(format!("{}\n[not transcribed: no thread: {e}]", msg.text));
    }
    select! {
        recv(rx) -> said => Some(match said {
            Ok((said, spent)) => {
                // What the service counted is the sender's and the chat's, as the reply's.
                shared.limits.spend(crate::limits::Payer::of(out, msg.user.as_ref()), &spent);
                said
            }
            Err(_) => format!("{}\n[not transcribed: it failed]", msg.text),
        }),
        recv(cancel) -> _ => {
            cut.fire();
            None
        }
    }
}

/// A user turn's content: the text, plus the images stored in the blob store (an image
/// that cannot be stored is mentioned instead, never fatal).
fn user_turn(shared: &Shared, text: String, images: &[tether::frame::Image]) -> Content {
    if images.is_empty() {
        return Content::Text(text);
    }
    let mut notes = String::new();
    let mut blocks = vec![Block::Text { text: String::new() }];
    for img in images {
        let stored = match (&img.data, &img.blob) {
            (Some(data), _) => crate::blobs::store_base64(&shared.workspace, &img.media_type, data),
            (None, Some(name)) if crate::blobs::valid_name(name) => Ok(name.clone()),
            _ => Err(std::io::Error::other("neither data nor a valid blob name")),
        };
        match stored {
            Ok(blob) => {
                match shared.tools.share_photo(&blob) {
                    Some(Ok(path)) => notes.push_str(&format!("\n[photo saved in the workspace as {path}]")),
                    Some(Err(e)) => {
                        log::warn!("cannot copy a photo for the tools: {e}");
                        notes.push_str(&format!("\n[photo not saved in the workspace: {e}]"));
                    }
                    None => {}
                }
                blocks.push(Block::Image {
                    media_type: img.media_type.clone(),
                    blob,
                    data: None,
                })
            }
            Err(e) => {
                log::warn!("cannot keep an image ({}): {e}", img.media_type);
                blocks.push(Block::Text {
                    text: format!("\n[an image could not be received: {e}]"),
                });
            }
        }
    }
    blocks[0] = Block::Text { text: text + &notes };
    Content::Blocks(blocks)
}

/// Run `batch`, calls that only read, at once ([`together`]) and record their results
/// in order; whether the reply was cancelled meanwhile.
fn run_together(r: ReplyCtx, batch: &[ToolCall], cancel: &Receiver<()>, history: &mut Vec<Turn>) -> bool {
    let names: Vec<&str> = batch.iter().map(|c| c.name.as_str()).collect();
    send_presence(
        r.shared,
        r.out,
        &r.asker.msg_id(),
        &Presence::state(format!("tool: {}", names.join(", "))),
    );
    let started = std::time::Instant::now();
    let ran = together::run(&r.shared.tools, batch, cancel, r.out, r.here, r.on_behalf);
    let mut cancelled = ran.cancelled;
    for (call, (outcome, shown)) in batch.iter().zip(ran.outcomes) {
        let (result, shown) = match outcome {
            Outcome::Done(text) => (text, shown),
            Outcome::Cancelled => {
                cancelled = true;
                (CALL_CANCELLED.to_string(), Vec::new())
            }
        };
        log::info!(
            "{}/{}: tool {} took {:?} (with {} more at once), {} bytes of result",
            r.session.channel,
            r.session.id,
            call.name,
            started.elapsed(),
            batch.len() - 1,
            result.len()
        );
        let mut turn = Turn::tool_result(&call.id, result);
        turn.documents = shown;
        persist(r.shared, r.session, history, turn);
    }
    cancelled
}

/// Fill the image blocks of `turns` with their bytes for a request, and the documents of
/// the reply going on (see [`crate::shown`]); `refused`: the model's server refused them
/// (why), so they are named instead.
fn with_blob_data(shared: &Shared, mut turns: Vec<Turn>, refused: Option<&str>) -> Vec<Turn> {
    // Documents go with the reply they belong to only (the turns after its question):
    // sent with every later request they would cost their pages' tokens each time. A file
    // read again in the same reply goes once.
    let question = turns.iter().rposition(|t| t.role == Role::User);
    let mut attached = HashSet::new();
    for (i, t) in turns.iter_mut().enumerate() {
        if let Content::Blocks(blocks) = &mut t.content {
            for b in blocks {
                if let Block::Image { blob, data, .. } = b {
                    *data = crate::blobs::load_base64(&shared.workspace, blob, crate::blobs::MAX_IMAGE);
                }
            }
        }
        if question.is_some_and(|q| i > q) {
            for d in &mut t.documents {
                d.repeat = !attached.insert(d.blob.clone());
                if let Some(why) = refused {
                    d.refused = Some(why.to_string());
                } else if !d.repeat {
                    d.data = crate::blobs::load_base64(&shared.workspace, &d.blob, PDF_CAP as usize);
                }
            }
        }
    }
    turns
}

/// The note that ends a reply whose model kept calling tools.
pub fn round_limit_note(rounds: usize) -> String {
    format!(
        "⚠️ Stopped after {rounds} rounds of tool use without a final answer. Send a message to let the agent continue."
    )
}

/// Who a reply is for: the session whose history it extends, the session its frames go
/// to (a scheduled task's chat), the message it answers, the prompt around the turns.
#[derive(Clone, Copy)]
struct ReplyCtx<'a> {
    shared: &'a Shared,
    session: &'a Session,
    out: &'a Session,
    /// Whose daily limits the reply counts against.
    payer: crate::limits::Payer<'a>,
    /// Where memories are kept and recalled: the chat, and who wrote the message.
    here: &'a crate::memory::Here,
    /// The message answered (a question moves it on), and the user the tools may ask.
    asker: &'a ChatAsker<'a>,
    /// That user, where there is one to ask (not in a scheduled task's run).
    user: Option<&'a dyn crate::elicit::User>,
    /// The tools the reply may use (a guest's, or all).
    allowed: &'a Allowed,
    /// On whose behalf it acts (the sender, a scheduled run's creator).
    on_behalf: Option<&'a str>,
    prompt: crate::llm::Prompt<'a>,
}

/// The model rounds of one reply: stream, run the tools asked for, repeat.
fn rounds(
    llm: &Llm,
    r: ReplyCtx,
    history: &mut Vec<Turn>,
    cancel: &Receiver<()>,
    used: &mut crate::usage::Totals,
) -> Ending {
    let ReplyCtx {
        shared,
        session,
        out,
        payer,
        here,
        asker,
        user,
        allowed,
        on_behalf,
        prompt,
    } = r;
    // All the text the user has seen, across rounds.
    let mut shown = String::new();
    // Why the model's server refused a request that carried the tools' documents (a
    // model without vision sent an image): the reply goes on with them named instead.
    let mut refused: Option<String> = None;
    for round in 0..shared.max_rounds {
        // Asked each round: a tool may have made an MCP server change its tools.
        let specs: Vec<ToolSpec> = shared.tools.specs_for(allowed);
        let msg_id = &asker.msg_id();
        let round_start = shown.len();
        let mut text = String::new();
        // A reasoning model's thoughts are streaming; they end where the text begins.
        let mut thinking = false;
        // Signed thoughts that led to this round's tool calls (Anthropic), or those a
        // Chat Completions server wants back with them.
        let mut thoughts = Vec::new();
        let mut carried = crate::carry::Carried::default();
        // Anthropic paused a long turn of the tools it runs itself.
        let mut paused = false;
        let window = with_blob_data(
            shared,
            stamped(context(history, shared.budget)),
            refused.as_deref(),
        );
        let attached = window
            .iter()
            .any(|t| t.documents.iter().any(|d| d.data.is_some()));
        let prompt = crate::llm::Prompt {
            cache: crate::prompt_cache::cache_marks(history, round),
            ..prompt
        };
        let stream = llm.stream(&prompt, &window, &specs);
        let round = loop {
            select! {
                recv(stream.chunks) -> chunk => match chunk {
                    Ok(Chunk::Delta(t)) => {
                        if std::mem::take(&mut thinking) {
                            send_reasoning_done(shared, out, msg_id);
                        }
                        if text.is_empty() && !shown.is_empty() {
                            // The text of a new round begins a new paragraph.
                            send_text(shared, kind::ASSISTANT_DELTA, out, msg_id, "\n\n");
                            shown.push_str("\n\n");
                        }
                        send_text(shared, kind::ASSISTANT_DELTA, out, msg_id, &t);
                        text.push_str(&t);
                        shown.push_str(&t);
                    }
                    Ok(Chunk::Reasoning(t)) => {
                        // Shown as it comes, never stored: the session keeps answers.
                        send_text(shared, kind::REASONING_DELTA, out, msg_id, &t);
                        thinking = true;
                    }
                    Ok(Chunk::Thoughts(blocks)) => thoughts = blocks,
                    Ok(Chunk::Carried(c)) => carried = c,
                    Ok(Chunk::Presence(state)) => send_presence(shared, out, msg_id, &Presence::state(state)),
                    Ok(Chunk::Paused) => paused = true,
                    Ok(Chunk::Usage(t)) => {
                        used.add(&t);
                        shared.limits.spend(payer, &t);
                    }
                    Ok(Chunk::Restart) => {
                        shown.truncate(round_start);
                        text.clear();
                        thoughts.clear();
                        carried = Default::default();
                        paused = false;
                        send_presence(shared, out, msg_id, &Presence::restart(shown.clone()));
                    }
                    Ok(Chunk::End(Ok(calls))) => break Round::Calls(calls),
                    Ok(Chunk::End(Err(e))) => break Round::Failed(e),
                    Err(_) => break Round::Failed(LlmError {
                        kind: ErrorKind::Cut,
                        detail: "the LLM reader stopped".into(),
                        retry_after: None,
                    }),
                },
                recv(cancel) -> _ => break Round::Cancelled,
            }
        };
        drop(stream); // stops the reader thread if it is still running
        if thinking {
            // Thoughts that led to tool calls, or to nothing.
            send_reasoning_done(shared, out, msg_id);
        }

        let calls = match round {
            Round::Calls(calls) if calls.is_empty() && paused => {
                // The turn so far goes back as it came (the searches and their results
                // with it), and the model carries on from there in the next round.
                log::info!(
                    "{}/{}: the API paused the model's turn; continuing it",
                    session.channel,
                    session.id
                );
                let mut turn = Turn::tool_calls_after(thoughts, &text, &[]);
                turn.paused = true;
                persist(shared, session, history, turn);
                continue;
            }
            Round::Calls(calls) if calls.is_empty() => {
                persist(shared, session, history, Turn::new(Role::Assistant, text));
                return Ending::Complete(shown);
            }
            Round::Calls(calls) => calls,
            Round::Failed(e) if attached && text.is_empty() && e.kind == ErrorKind::Request => {
                log::warn!(
                    "{}/{}: the model's server refused the request with the tools' files attached \
                     ({}); asking again without them",
                    session.channel,
                    session.id,
                    e.detail
                );
                refused = Some(crate::text::clip(&e.detail, 300));
                continue;
            }
            Round::Failed(e) => {
                if !text.is_empty() {
                    persist(shared, session, history, Turn::new(Role::Assistant, text));
                }
                return Ending::Failed(e, shown);
            }
            Round::Cancelled => {
                if !text.is_empty() {
                    let mut turn = Turn::new(Role::Assistant, text);
                    turn.cancelled = true;
                    persist(shared, session, history, turn);
                }
                return Ending::Cancelled(shown);
            }
        };
        persist(
            shared,
            session,
            history,
            Turn::tool_calls_after(thoughts, &text, &calls).carrying(carried),
        );
        let mut cancelled = false;
        let mut restart = false;
        let mut next = 0;
        while let Some(call) = calls.get(next) {
            if cancelled {
                persist(
                    shared,
                    session,
                    history,
                    Turn::tool_result(&call.id, CALL_CANCELLED.into()),
                );
                next += 1;
                continue;
            }
            let batch = together::leading(&calls[next..], |c| {
                shared.tools.runs_together(&c.name) && shared.tools.permits(&c.name, allowed)
            });
            if batch > 1 {
                cancelled = run_together(r, &calls[next..next + batch], cancel, history);
                next += batch;
                continue;
            }
            next += 1;
            send_presence(
                shared,
                out,
                &asker.msg_id(),
                &Presence::state(format!("tool: {}", call.name)),
            );
            let started = std::time::Instant::now();
            let mut ctx = CallContext {
                cancel,
                origin: out,
                here,
                on_behalf,
                attachments: Attachments::default(),
                spent: Default::default(),
                restart: false,
                user,
                shown: Vec::new(),
            };
            asker.set_shown(&shown);
            // Offered or not: a guest's model may name a tool it saw earlier in the chat.
            let outcome = match shared.tools.permits(&call.name, allowed) {
                true => shared.tools.run(call, &mut ctx),
                false => {
                    log::warn!(
                        "{}/{}: {} refused: not a guest's tool (AEGIS_GUEST_TOOLS)",
                        session.channel,
                        session.id,
                        call.name
                    );
                    Outcome::Done(format!(
                        "error: {} is not available in this conversation: the operator keeps it for trusted users",
                        call.name
                    ))
                }
            };
            asker.attach(std::mem::take(&mut ctx.attachments));
            shared.limits.spend(payer, &ctx.spent);
            restart |= ctx.restart;
            let mut result = match outcome {
                Outcome::Done(r) => r,
                Outcome::Cancelled => {
                    cancelled = true;
                    CALL_CANCELLED.to_string()
                }
            };
            if let Some(heard) = asker.take_moved() {
                // The user's answer began a new message: what it shows starts there.
                shown.clear();
                result = format!("{}\n\n{result}", heard.join("\n\n"));
            }
            if asker.ended() {
                cancelled = true;
            }
            log::info!(
                "{}/{}: tool {} took {:?}, {} bytes of result",
                session.channel,
                session.id,
                call.name,
                started.elapsed(),
                result.len()
            );
            let mut turn = Turn::tool_result(&call.id, result);
            if !cancelled {
                turn.documents = std::mem::take(&mut ctx.shown);
            }
            persist(shared, session, history, turn);
        }
        if asker.ended() {
            return Ending::Unanswered;
        }
        if cancelled {
            return Ending::Cancelled(shown);
        }
        if restart {
            return Ending::Restart(shown);
        }
        // A limit this reply used up ends it before its next request.
        if let Some(reached) = shared.limits.reached(payer) {
            log::info!(
                "{}/{}: daily limit used up; reply stopped",
                session.channel,
                session.id
            );
            return Ending::Stopped(shown, reached.stop_note(std::time::SystemTime::now()));
        }
        send_presence(shared, out, &asker.msg_id(), &Presence::state("thinking"));
    }
    Ending::Stopped(shown, round_limit_note(shared.max_rounds))
}

#[cfg(test)]
mod tests {
    use crate::session::{Role, Turn};

    #[test]
    fn a_paused_turn_is_no_answer_yet() {
        let mut paused = Turn::new(Role::Assistant, "Searching.");
        paused.paused = true;
        let history = vec![Turn::new(Role::User, "q"), paused];
        assert!(!super::answered(&history, 0));
        let mut done = history.clone();
        done.push(Turn::new(Role::Assistant, "Found it."));
        assert!(super::answered(&done, 0));
    }

    #[test]
    fn usage_is_the_command_alone_or_addressed_to_a_bot() {
        for text in ["/usage", " /usage\n", "/usage@my_bot"] {
            assert!(super::is_command(text, "/usage"), "{text:?}");
        }
        for text in [
            "/usage please",
            "/usage@my_bot please",
            "usage",
            "/usages",
            "what is /usage",
        ] {
            assert!(!super::is_command(text, "/usage"), "{text:?}");
        }
    }
}
