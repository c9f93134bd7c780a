//! Harness-mode egress: one thread POSTs each egress frame, in order, to
//! `{harness}/v1/tether/send` (PROTOCOL.md §4).
//!
//! The harness may be briefly unreachable (booting, restarting): a frame is retried with
//! backoff for up to `GIVE_UP` before it is dropped with an error log, and frames behind
//! it wait, so order is kept.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tether::Frame;

/// How long one frame is retried before it is given up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// POST frames from `rx` to the harness until `rx` closes.
pub fn run(rx: Receiver<Frame>, harness: &str) {
    let url = format!("{harness}/v1/tether/send");
    let agent: ureq::Agent = tether::http::agent_config(harness)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    for frame in rx {
        let body = frame.to_json();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let outcome = agent.post(&url).content_type("application/json").send(&body);
            let err = match outcome {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().is_client_error() => {
                    // The harness refused this frame; retrying cannot help.
                    log::error!(
                        "harness refused {} frame: HTTP {}",
                        frame.kind,
                        r.status().as_u16()
                    );
                    break;
                }
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > GIVE_UP {
                log::error!(
                    "dropping {} frame: harness unreachable for {GIVE_UP:?} ({err})",
                    frame.kind
                );
                break;
            }
            log::warn!("harness send failed ({err}); retrying in {backoff:?}");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
