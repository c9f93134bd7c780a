//! [ours] Direct tether: without a harness, the agent dials the control channel itself
//! (unix socket, TCP or vsock from `AEGIS_TETHER`) and exchanges `tether.frame`
//! notifications (PROTOCOL.md §3), the `llm.frame`s of `host:` models (`host_llm`), and
//! the responses to the agent's own requests (`uplink::TetherLink::call`).
//!
//! The connection thread owns the writing side: it writes egress frames and answers to
//! host requests, and reconnects with backoff when the host goes away. A reader thread
//! per connection turns lines into ingress frames and requests. A frame whose write
//! failed is written again on the next connection, so none is lost to a host restart.

use std::io::{BufReader, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use tether::rpc::{Correlator, Message, Messages};
use tether::{Addr, Frame, Stream};

use crate::host_llm::{LlmFrame, Routes};

/// What the reader thread reports.
enum Inbound {
    /// A JSON-RPC request needing a response.
    Request(Message),
    /// The connection ended.
    Closed,
}

/// Keep a connection to `addr` up until `egress` closes. `notices` carries the agent's
/// own messages to the host (the keepalive lease, `llm.chat`, requests); `llm.frame`s go
/// to `routes`, responses to `calls`.
pub fn run(
    addr: &Addr,
    egress: Receiver<Frame>,
    notices: Receiver<Message>,
    ingress: Sender<Frame>,
    routes: &Routes,
    calls: &Arc<Correlator>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut unsent: Option<Vec<u8>> = None;
    loop {
        let stream = match Stream::connect(addr, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot reach tether host at {addr}: {e}; retrying in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        log::info!("tether connected to {addr}");
        let (inbound_tx, inbound_rx) = unbounded();
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(e) => {
                log::error!("cannot clone tether socket: {e}");
                continue;
            }
        };
        let (ingress2, routes2, calls2) = (ingress.clone(), routes.clone(), Arc::clone(calls));
        let spawned = thread::Builder::new()
            .name("tether-reader".into())
            .spawn(move || read_loop(reader, ingress2, &routes2, &calls2, inbound_tx));
        if let Err(e) = spawned {
            log::error!("cannot start the tether reader: {e}; retrying in {backoff:?}");
            thread::sleep(backoff);
            continue;
        }
        let ended = write_loop(stream, &egress, &notices, &inbound_rx, &mut unsent);
        // The host's streams and answers ended with the connection; their replies try again.
        routes.fail_all("the tether connection to the host was lost");
        calls.fail_all("the tether connection to the host was lost");
        match ended {
            Ok(()) => return,
            Err(e) => log::warn!("tether connection lost: {e}; reconnecting"),
        }
    }
}

fn write_loop(
    mut stream: Stream,
    egress: &Receiver<Frame>,
    notices: &Receiver<Message>,
    inbound: &Receiver<Inbound>,
    unsent: &mut Option<Vec<u8>>,
) -> std::io::Result<()> {
    if let Some(line) = unsent.as_ref() {
        stream.write_all(line)?;
        *unsent = None;
    }
    loop {
        let (line, resend) = select! {
            recv(egress) -> f => match f {
                Ok(frame) => (Message::tether_frame(&frame).encode(), true),
                Err(_) => {
                    let _ = stream.shutdown();
                    return Ok(());
                }
            },
            recv(notices) -> n => match n {
                Ok(m) => (m.encode(), resend_after_loss(&m)),
                Err(_) => continue,
            },
            recv(inbound) -> m => match m {
                Ok(Inbound::Request(Message::Request { id, method, .. })) => match method.as_str() {
                    "health" => (Message::result(id, &serde_json::json!({"status": "ok"})).encode(), false),
                    other => (Message::error(id, -32601, format!("method {other} not supported by aegis-agent")).encode(), false),
                },
                Ok(_) | Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "host closed the connection")),
            },
        };
        if let Err(e) = stream.write_all(&line) {
            if resend {
                *unsent = Some(line);
            }
            let _ = stream.shutdown();
            return Err(e);
        }
    }
}

/// Whether a message whose write failed with its connection is written again on the next
/// one. Frames are (nothing lost), and so is `self.restart` (else the agent would run on
/// its old configuration). Not what the loss already settled: an `llm.chat` (its reply
/// asks again with a new `req_id`; sent again, the host would generate an answer nobody
/// reads), a request (its caller got an error), an `llm.cancel` (the stream ended with the
/// connection), a lease notice (renewed soon, or a release the lease's expiry makes good).
fn resend_after_loss(m: &Message) -> bool {
    match m {
        Message::Notification { method, .. } => method == "self.restart",
        Message::Request { .. } | Message::Response { .. } => false,
    }
}

fn read_loop(
    stream: Stream,
    ingress: Sender<Frame>,
    routes: &Routes,
    calls: &Correlator,
    inbound: Sender<Inbound>,
) {
    for m in Messages::new(BufReader::new(stream)) {
        match m.as_tether_frame() {
            Some(Ok(frame)) => {
                if ingress.send(frame).is_err() {
                    break;
                }
            }
            Some(Err(e)) => log::warn!("tether: invalid frame: {e}"),
            None if matches!(m, Message::Request { .. }) => {
                let _ = inbound.send(Inbound::Request(m));
            }
            None => match m {
                Message::Response { id, outcome } => {
                    if !calls.complete(&id, outcome) {
                        log::debug!("tether: a response to {id} came after its caller gave up");
                    }
                }
                Message::Notification { method, params } if method == "llm.frame" => {
                    let parsed = params.as_ref().map(|p| LlmFrame::parse(p.get().as_bytes()));
                    match parsed {
                        Some(Ok(frame)) => {
                            routes.deliver(frame);
                        }
                        _ => log::warn!("tether: invalid llm.frame"),
                    }
                }
                other => log::debug!("tether: ignoring message {other:?}"),
            },
        }
    }
    let _ = inbound.send(Inbound::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_lost_connection_did_not_settle_is_written_again() {
        let note = |m: &str| Message::notification(m, &serde_json::json!({}));
        assert!(resend_after_loss(&note("self.restart")));
        for settled in ["llm.chat", "llm.cancel", "keepalive", "keepalive.release"] {
            assert!(!resend_after_loss(&note(settled)), "{settled}");
        }
        assert!(!resend_after_loss(&Message::request(1, "guest.self_info", &())));
    }
}
