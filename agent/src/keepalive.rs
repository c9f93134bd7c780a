//! The keepalive lease: while any reply or tool runs, the agent asks its host not to
//! pause or stop it. The seed's aegisd pauses a VM after 60 s without activity and does
//! not see CPU used by tool processes, so a long `pip install` would otherwise freeze.
//!
//! One thread owns the count of busy replies. When it goes from 0 to 1 the lease is
//! acquired (TTL `TTL`), it is renewed every `TTL / 2` while the count stays above 0,
//! and released when it drops to 0. How the lease reaches the host depends on the mode:
//! the harness guest API (`POST`/`DELETE /v1/self/keepalive`), or the JSON-RPC
//! notifications `keepalive` / `keepalive.release` on a direct tether. A host that does
//! not know the lease (an old harness answers 404) is logged once and otherwise ignored.

use std::thread;
use std::time::Duration;

use crossbeam_channel::{never, select, tick, unbounded, Receiver, Sender};
use serde_json::json;

use crate::uplink::Uplink;

/// Lease length.
pub const TTL: Duration = Duration::from_secs(30);

/// Holds the lease while alive; cheap to clone into every worker.
#[derive(Debug, Clone)]
pub struct Keepalive {
    tx: Sender<bool>,
}

/// A reply in progress; dropping it ends its share of the lease.
#[derive(Debug)]
pub struct Busy {
    tx: Sender<bool>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.tx.send(false);
    }
}

impl Keepalive {
    /// Start the lease thread, asking through `channel`.
    pub fn start(channel: Uplink) -> Keepalive {
        let (tx, rx) = unbounded();
        let spawned = thread::Builder::new()
            .name("keepalive".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&rx, &channel));
        if let Err(e) = spawned {
            log::error!("cannot start the keepalive thread: {e}; the host may pause long tool runs");
        }
        Keepalive { tx }
    }

    /// Mark one reply as running until the returned guard drops.
    pub fn busy(&self) -> Busy {
        let _ = self.tx.send(true);
        Busy { tx: self.tx.clone() }
    }
}

fn run(rx: &Receiver<bool>, channel: &Uplink) {
    // Built on first use: an idle agent that never replies pays nothing for it.
    let mut agent: Option<ureq::Agent> = None;
    let mut busy = 0usize;
    let mut warned = false;
    let mut renew = never();
    loop {
        select! {
            recv(rx) -> m => match m {
                Ok(true) => {
                    busy += 1;
                    if busy == 1 {
                        send(channel, &mut agent, true, &mut warned);
                        renew = tick(TTL / 2);
                    }
                }
                Ok(false) => {
                    busy = busy.saturating_sub(1);
                    if busy == 0 {
                        send(channel, &mut agent, false, &mut warned);
                        renew = never();
                    }
                }
                Err(_) => return,
            },
            recv(renew) -> _ => send(channel, &mut agent, true, &mut warned),
        }
    }
}

fn send(channel: &Uplink, agent: &mut Option<ureq::Agent>, hold: bool, warned: &mut bool) {
    let body = json!({"ttl_ms": TTL.as_millis() as u64, "reason": "agent reply in progress"});
    match channel {
        Uplink::Harness(base) => {
            let agent = agent.get_or_insert_with(|| {
                tether::http::agent_config(base)
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    // No idle connection may stay open: the seed's harness counts an
                    // open connection as activity, which would keep the VM awake.
                    .max_idle_connections(0)
                    .build()
                    .into()
            });
            let url = format!("{base}/v1/self/keepalive");
            let result = if hold {
                agent
                    .post(&url)
                    .content_type("application/json")
                    .send(body.to_string())
            } else {
                agent.delete(&url).call()
            };
            let problem = match result {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Some(e.to_string()),
            };
            if let Some(p) = problem {
                if !*warned {
                    log::info!(
                        "keepalive lease not available from the harness ({p}); long tool runs may be paused"
                    );
                    *warned = true;
                }
            }
        }
        Uplink::Tether(link) => {
            let _ = if hold {
                link.notify("keepalive", &body)
            } else {
                link.notify("keepalive.release", &json!({}))
            };
        }
    }
}
