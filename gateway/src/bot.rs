//! One bot's thread pipeline:
//!
//! ```text
//! poller (getUpdates, journal) ──units──▶ chat threads ──frames──▶ aegisd ──egress──▶ stream thread
//!                                         (each chat in order)                          │ frames
//!                                               │ user message                          ▼
//!                                               └──────▶ renderer (every chat's reply state,
//!                                                        throttle, typing) ◀────────────┘
//!                                                  actions │      ▲ message ids
//!                                                          ▼      │
//!                                      sender (serialises Bot API calls, honours retry_after)
//! ```

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use tether::{AegisClient, Frame};

use crate::config::BotConfig;
use crate::ingress::Ingress;
use crate::journal::Journal;
use crate::poller::Poller;
use crate::render::{Action, DraftsRefused, Renderer, ReplyKey, Snapshot};
use crate::state;
use crate::telegram::Telegram;
use crate::workspace::InstanceWorkspace;

/// What reaches the renderer.
#[derive(Debug)]
pub enum Event {
    /// A user wrote in this chat (typing starts).
    UserMessage(i64, Option<i64>),
    /// The user's message could not be delivered; typing stops.
    Delivered(i64, Option<i64>),
    /// An egress frame.
    Frame(Frame),
    /// The sender created a reply message.
    Sent {
        /// Reply.
        key: ReplyKey,
        /// Part index.
        part: usize,
        /// Telegram message id.
        message_id: i64,
    },
    /// The Bot API refused `sendMessageDraft` in this chat (for a reply, or for `/exec`'s
    /// output).
    DraftRefused {
        /// Chat.
        chat: i64,
    },
    /// The sender is done with a photo or file of a reply (sent, or given up on).
    AttachmentSent {
        /// Reply.
        key: ReplyKey,
        /// Attachment index.
        index: usize,
    },
    /// The sender could not create it.
    SendFailed {
        /// Reply.
        key: ReplyKey,
        /// Part index.
        part: usize,
    },
}

/// Start every thread of one bot.
pub fn start(bot: BotConfig, tg: Telegram, aegis: AegisClient) -> std::io::Result<()> {
    let dir = state::dir(tg.bot_id());
    let render_path = dir.join("render.json");
    let snapshot: Snapshot = state::load(&render_path);
    let cursor = snapshot.cursor;
    // Set by the poller before it polls, on its own connection: a call from the sender
    // at the start would hold a second TLS connection (and its buffers) for good.
    let menu = crate::menu::merged(&snapshot.agent_commands);
    let (events_tx, events_rx) = unbounded();
    let (actions_tx, actions_rx) = unbounded();

    let workspace = Arc::new(InstanceWorkspace::new(aegis.clone(), &bot.instance));
    let mut tg = tg;
    tg.watch_gone(Arc::new(crate::gone::GoneChats::new(workspace.clone())));
    let tg2 = tg.clone();
    let ev = events_tx.clone();
    let drafts_refused = DraftsRefused::default();
    let refused = drafts_refused.clone();
    let ws = workspace.clone();
    thread::Builder::new()
        .name("tg-sender".into())
        .spawn(move || crate::sender::run(tg2, actions_rx, ev, refused, &ws))?;

    let acts = actions_tx.clone();
    let mut renderer = Renderer::restore(snapshot);
    let menu_words = crate::menu::Words::default();
    renderer.share_menu(menu_words.clone());
    renderer.set_stream_mode(bot.stream_mode);
    renderer.set_rich_mode(bot.rich_mode);
    thread::Builder::new()
        .name("renderer".into())
        .spawn(move || render_loop(renderer, &events_rx, &acts, &render_path))?;

    let (a2, inst, ev, ws) = (
        aegis.clone(),
        bot.instance.clone(),
        events_tx.clone(),
        workspace.clone(),
    );
    thread::Builder::new()
        .name("egress".into())
        .spawn(move || stream_loop(&a2, &inst, cursor, &ev, ws))?;

    let ingress = Ingress {
        bot,
        tg,
        aegis,
        events: events_tx,
        actions: actions_tx,
        usernames: std::sync::OnceLock::new(),
        exec: crate::exec::ExecMode::new(drafts_refused, dir.join("exec-running")),
        workspace,
        menu_words,
    };
    let poller = Poller::new(ingress, Journal::open(dir.join("poll.json")), menu);
    thread::Builder::new()
        .name("poller".into())
        .spawn(move || poller.run())?;
    Ok(())
}

fn render_loop(mut r: Renderer, events: &Receiver<Event>, actions: &Sender<Action>, path: &Path) {
    let mut out = Vec::new();
    let mut saved_frames = r.frames_taken();
    let mut last_save = Instant::now();
    loop {
        let wait = r
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        select! {
            recv(events) -> ev => {
                let now = Instant::now();
                match ev {
                    Ok(Event::UserMessage(chat, topic)) => r.user_message(chat, topic, now, &mut out),
                    Ok(Event::Delivered(chat, topic)) => r.stop_typing(chat, topic),
                    Ok(Event::Frame(f)) => r.frame(&f, now, &mut out),
                    Ok(Event::Sent { key, part, message_id }) => r.sent(&key, part, message_id, now, &mut out),
                    Ok(Event::SendFailed { key, part }) => r.send_failed(&key, part),
                    Ok(Event::AttachmentSent { key, index }) => r.attachment_sent(&key, index, now, &mut out),
                    Ok(Event::DraftRefused { chat }) => r.draft_refused(chat, now, &mut out),
                    Err(_) => return,
                }
            },
            default(wait) => r.tick(Instant::now(), &mut out),
        }
        for a in out.drain(..) {
            let _ = actions.send(a);
        }
        // Save whenever a restart would otherwise repeat a Telegram side effect, and
        // every few seconds while the cursor moves.
        let moved = r.frames_taken() != saved_frames && last_save.elapsed() >= Duration::from_secs(2);
        if r.take_dirty() || moved {
            if let Err(e) = state::save(path, &r.snapshot()) {
                log::error!("cannot save {}: {e}", path.display());
            }
            saved_frames = r.frames_taken();
            last_save = Instant::now();
        }
    }
}

fn stream_loop(
    aegis: &AegisClient,
    instance: &str,
    mut cursor: Option<u64>,
    events: &Sender<Event>,
    workspace: Arc<InstanceWorkspace>,
) {
    let mut images = crate::images::BlobReader::new(workspace);
    let mut backoff = Duration::from_millis(200);
    loop {
        match aegis.stream(instance, cursor) {
            Ok(stream) => {
                log::info!("egress stream of {instance} connected (after {cursor:?})");
                backoff = Duration::from_millis(200);
                for item in stream {
                    match item {
                        Ok(mut f) => {
                            if f.seq.is_some() {
                                cursor = f.seq;
                            }
                            images.inline(&mut f);
                            if f.kind == tether::frame::kind::ASSISTANT_DONE {
                                crate::cron::answered(f.msg_id.as_deref().unwrap_or(""));
                            }
                            if events.send(Event::Frame(f)).is_err() {
                                return;
                            }
                        }
                        Err(tether::client::StreamError::Frame(e)) => log::warn!("egress: {e}"),
                        Err(e) => {
                            log::warn!("egress stream of {instance} broke: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => log::warn!("egress stream of {instance}: {e}"),
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
