//! `aegis-kit chat NAME`: talk to an instance from the terminal over the same API the
//! gateway uses. A line in, the reply streamed out as deltas arrive; Ctrl-C cancels the
//! reply in flight (`control.cancel`) and, when nothing is in flight, quits. Tool activity
//! and a reasoning model's thoughts go to stderr, so stdout is the reply alone.
//!
//! `/new` starts a fresh conversation, as in Telegram: the terminal's session of each
//! instance is kept in `~/.aegis/kit/chat-sessions.json`, so the next `chat` goes on with
//! it (`--session ID` picks another; the first is `local`).
//!
//! Threads: stdin lines, egress frames, and Ctrl-C each feed a channel; the main loop
//! selects over them and owns the terminal.

use std::io::{BufRead, Write};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{select, unbounded, Receiver};
use tether::frame::{kind, ErrorPayload, Session};
use tether::{AegisClient, Frame};

use crate::CliError;

/// Options of `chat`.
#[derive(Debug)]
pub struct ChatOpts {
    /// Instance name.
    pub instance: String,
    /// One-shot message (`-m`): send it, print the reply, exit.
    pub message: Option<String>,
    /// Session id (channel `terminal`), if given; else the instance's current one.
    pub session: Option<String>,
}

/// Where the terminal's current session of each instance is kept.
fn sessions_file() -> std::path::PathBuf {
    tether::paths::aegis_home().join("kit/chat-sessions.json")
}

/// The sessions file's content: instance name → session id (`{}` when unreadable).
fn saved_sessions() -> serde_json::Value {
    std::fs::read(sessions_file())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The terminal's current session with `instance`: the one `/new` began last, else `local`.
fn current_session(instance: &str) -> String {
    saved_sessions()[instance]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .unwrap_or("local")
        .to_string()
}

/// Begin a new session with `instance` and keep it as the current one.
fn new_session(instance: &str) -> Result<String, CliError> {
    let path = sessions_file();
    let mut all = saved_sessions();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let id = format!("local-{secs}");
    all[instance] = id.clone().into();
    tether::fsutil::replace(&path, all.to_string().as_bytes())
        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    Ok(id)
}

fn now_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("chat-{}-{}", std::process::id(), t.as_micros())
}

/// Run the chat until EOF, Ctrl-C at the prompt, or the one-shot reply.
pub fn run(c: &AegisClient, o: &ChatOpts) -> Result<(), CliError> {
    let info = c.request(
        "GET",
        &format!("/v1/instances/{}", tether::client::encode_segment(&o.instance)),
        None,
    )?;
    // Only frames newer than now: the reply to what we are about to send.
    let after = info["last_seq"].as_u64();
    let frames = spawn_stream(c.clone(), o.instance.clone(), after);
    let mut session = Session::new(
        "terminal",
        o.session.clone().unwrap_or_else(|| current_session(&o.instance)),
    );
    let interrupts = interrupts()?;

    let lines = match &o.message {
        Some(m) => {
            let (tx, rx) = unbounded();
            let _ = tx.send(m.clone());
            drop(tx);
            rx
        }
        None => {
            eprintln!(
                "chatting with {} (Ctrl-C cancels a reply, Ctrl-D quits)",
                o.instance
            );
            stdin_lines()
        }
    };
    let interactive = o.message.is_none();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        // Between replies, a reply nobody typed for (a background job's end, a scheduled
        // task's) is shown when it is done.
        let text = loop {
            select! {
                recv(lines) -> l => match l { Ok(l) => break l, Err(_) => return Ok(()) },
                recv(interrupts) -> _ => { eprintln!(); return Ok(()) },
                recv(frames) -> f => match f {
                    Ok(Ok(f)) => {
                        if show_unasked(c, o, &session, &f) {
                            eprint!("> ");
                            let _ = std::io::stderr().flush();
                        }
                    }
                    Ok(Err(e)) => return Err(CliError::Other(e)),
                    Err(_) => return Err(CliError::Other("the egress stream ended".into())),
                },
            }
        };
        match text.trim() {
            "" => continue,
            "/new" => {
                session = Session::new("terminal", new_session(&o.instance)?);
                eprintln!("🆕 New conversation started.");
                if interactive {
                    continue;
                }
                return Ok(());
            }
            "/stop" | "/cancel" => {
                eprintln!("Nothing to stop: Ctrl-C stops a reply while it is written.");
                if interactive {
                    continue;
                }
                return Ok(());
            }
            _ => {}
        }
        let msg_id = now_id();
        let frame = Frame::user_message(session.clone(), text.trim(), None).with_msg_id(msg_id.clone());
        c.post_frame(&o.instance, &frame)?;
        let ok = print_reply(c, o, &session, &msg_id, &frames, &interrupts)?;
        if !interactive {
            return if ok {
                Ok(())
            } else {
                Err(CliError::Other("the reply failed".into()))
            };
        }
    }
}

/// Print the reply to `msg_id` as it streams; true if it completed without an error.
fn print_reply(
    c: &AegisClient,
    o: &ChatOpts,
    session: &Session,
    msg_id: &str,
    frames: &Receiver<Result<Frame, String>>,
    interrupts: &Receiver<()>,
) -> Result<bool, CliError> {
    let mut out = std::io::stdout();
    let mut shown = String::new();
    let mut failed = false;
    // A reasoning model's thoughts are being printed (on stderr).
    let mut thinking = false;
    loop {
        select! {
            recv(frames) -> f => {
                let f = match f {
                    Ok(Ok(f)) => f,
                    Ok(Err(e)) => return Err(CliError::Other(e)),
                    Err(_) => return Err(CliError::Other("the egress stream ended".into())),
                };
                if f.session.as_ref() != Some(session) || f.msg_id.as_deref() != Some(msg_id) {
                    show_unasked(c, o, session, &f);
                    continue;
                }
                if thinking && f.kind != kind::REASONING_DELTA {
                    eprintln!();
                    thinking = false;
                }
                match f.kind.as_str() {
                    kind::REASONING_DELTA => {
                        let t = f.text_payload().unwrap_or_default();
                        if !std::mem::replace(&mut thinking, true) {
                            eprint!("💭 ");
                        }
                        eprint!("{t}");
                    }
                    kind::ASSISTANT_DELTA => {
                        let t = f.text_payload().unwrap_or_default();
                        shown.push_str(&t);
                        let _ = write!(out, "{t}");
                        let _ = out.flush();
                    }
                    kind::STATUS_PRESENCE => {
                        let p: tether::frame::Presence = f.payload_as().unwrap_or_default();
                        if p.restart == Some(true) && !shown.is_empty() {
                            // A new attempt: say so, then show what stands.
                            let kept = p.text.unwrap_or_default();
                            let _ = write!(out, "\n↻ (the reply starts over)\n{kept}");
                            let _ = out.flush();
                            shown = kept;
                        } else if let Some(tool) = p.state.strip_prefix("tool: ") {
                            // Tool activity goes to stderr: stdout stays the reply.
                            eprintln!("\n⚙ {tool}");
                        }
                    }
                    kind::ERROR => failed = f.payload_as::<ErrorPayload>().map(|e| e.code != "cancelled").unwrap_or(true),
                    kind::ASSISTANT_DONE => {
                        let full = f.text_payload().unwrap_or_default();
                        // The final text may add to what streamed (an error notice).
                        match full.strip_prefix(shown.as_str()) {
                            Some(rest) => { let _ = writeln!(out, "{rest}"); }
                            None => { let _ = writeln!(out, "\n{full}"); }
                        }
                        attachments(c, o, &f);
                        return Ok(!failed);
                    }
                    _ => {}
                }
            },
            recv(interrupts) -> _ => {
                let mut cancel = Frame::new(kind::CONTROL_CANCEL, Some(session.clone()))
                    .with_payload(&tether::frame::Cancel { msg_id: Some(msg_id.to_string()) });
                cancel.msg_id = Some(now_id());
                c.post_frame(&o.instance, &cancel)?;
            },
        }
    }
}

/// Print `f` when it completes a reply of `session` that no message typed in a terminal
/// asked for (theirs are `chat-…`): a background job's end, a scheduled task's run. True
/// when it printed.
fn show_unasked(c: &AegisClient, o: &ChatOpts, session: &Session, f: &Frame) -> bool {
    // A one-shot chat's stdout is its one reply.
    let unasked = o.message.is_none()
        && f.session.as_ref() == Some(session)
        && f.kind == kind::ASSISTANT_DONE
        && f.msg_id.as_deref().is_some_and(|m| !m.starts_with("chat-"));
    if !unasked {
        return false;
    }
    let text = f.text_payload().unwrap_or_default();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "\n{text}");
    let _ = out.flush();
    attachments(c, o, f);
    true
}

/// Name on stderr the images, files and voice messages a reply attached, with where
/// they are on this
/// host (the terminal cannot show them).
fn attachments(c: &AegisClient, o: &ChatOpts, done: &Frame) {
    let Ok(d) = done.payload_as::<tether::frame::Done>() else {
        return;
    };
    let blobs = d
        .images
        .iter()
        .filter_map(|i| Some(("🖼", "image", i.blob.as_deref()?, i.size)))
        .chain(
            d.files
                .iter()
                .map(|f| ("📎", f.name.as_str(), f.blob.as_str(), f.size)),
        )
        .chain(
            d.voice
                .iter()
                .map(|f| ("🔊", f.name.as_str(), f.blob.as_str(), f.size)),
        );
    let mut workspace = None;
    for (icon, name, blob, size) in blobs {
        let ws = workspace.get_or_insert_with(|| c.instance_workspace(&o.instance).ok().flatten());
        let at = match ws {
            Some(ws) => ws.join(".aegis/blobs").join(blob).display().to_string(),
            None => format!("the instance's .aegis/blobs/{blob}"),
        };
        let size = size.map_or(String::new(), |s| format!(" ({s} bytes)"));
        eprintln!("{icon} {name}{size}: {at}");
    }
}

fn spawn_stream(c: AegisClient, instance: String, after: Option<u64>) -> Receiver<Result<Frame, String>> {
    let (tx, rx) = unbounded();
    thread::spawn(move || {
        let mut cursor = after;
        loop {
            match c.stream(&instance, cursor) {
                Ok(stream) => {
                    for item in stream {
                        match item {
                            Ok(f) => {
                                cursor = f.seq.or(cursor);
                                if tx.send(Ok(f)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => log::debug!("{e}"),
                        }
                    }
                }
                Err(e) if e.is_transient() => log::debug!("egress stream: {e}"),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
            // Reconnect from the cursor, so nothing is missed or repeated.
            thread::sleep(Duration::from_millis(200));
        }
    });
    rx
}

fn stdin_lines() -> Receiver<String> {
    let (tx, rx) = unbounded();
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn interrupts() -> Result<Receiver<()>, CliError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
        .map_err(|e| CliError::Other(format!("cannot catch Ctrl-C: {e}")))?;
    let (tx, rx) = unbounded();
    thread::spawn(move || {
        for _ in signals.forever() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
