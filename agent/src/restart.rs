//! `self_restart`: the agent restarts itself to load configuration it changed (an MCP
//! server added to agent.json), as upstream's does. The reply that asked for it ends
//! first ("Restarting to apply configuration changes..."); a marker in the workspace
//! names the chat; once the egress queue is empty the host is asked to restart the
//! process (the harness's `POST /v1/self/restart`, or a `self.restart` notification on a
//! direct tether, which `aegis-kit serve` honours). The new process finds the marker and
//! tells that chat it is back.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use tether::frame::kind;
use tether::{Frame, Session};

use crate::session::{Role, SessionStore, Turn};
use crate::uplink::Uplink;

/// Where the chat to tell is kept across the restart (upstream's path).
pub const MARKER: &str = ".aegis/restart-pending.json";
/// The last words before the restart (upstream's).
pub const RESTARTING: &str = "Restarting to apply configuration changes...";
/// The first words after it (upstream's).
pub const RESTARTED: &str = "Restart complete. New configuration loaded.";
/// Told instead when the host cannot restart the agent.
pub const UNAVAILABLE: &str =
    "⚠️ This host cannot restart the agent; the changes apply when the instance is restarted.";
/// Longest wait for the egress queue to empty before the restart goes ahead anyway.
const DRAIN: Duration = Duration::from_secs(5);
/// After it emptied: time for the last frame to leave (its POST or write).
const SETTLE: Duration = Duration::from_millis(500);

/// Carries out restart requests.
pub struct Restarter {
    host: Uplink,
    workspace: PathBuf,
}

impl std::fmt::Debug for Restarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Restarter")
    }
}

impl Restarter {
    /// Restarts through `host`; the marker goes in `workspace`.
    pub fn new(host: Uplink, workspace: &Path) -> Restarter {
        Restarter {
            host,
            workspace: workspace.to_path_buf(),
        }
    }

    /// Restart once `egress` has drained; `chat` hears back from the new process.
    pub fn request(&self, chat: &Session, egress: &Sender<Frame>) {
        let marker = self.workspace.join(MARKER);
        let written = marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&marker, serde_json::to_vec(chat).unwrap_or_default()));
        if let Err(e) = written {
            log::warn!("self_restart: cannot write {}: {e}", marker.display());
        }
        let deadline = Instant::now() + DRAIN;
        while !egress.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(SETTLE);
        log::info!("self_restart: asking the host to restart the agent");
        let refused = match &self.host {
            Uplink::Tether(link) => link.notify("self.restart", &serde_json::json!({})).err(),
            Uplink::Harness(base) => {
                let agent: ureq::Agent = tether::http::agent_config(base)
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .max_idle_connections(0)
                    .build()
                    .into();
                match agent.post(format!("{base}/v1/self/restart")).send_empty() {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        if let Some(why) = refused {
            log::warn!("self_restart: the host did not take the request ({why})");
            let _ = std::fs::remove_file(&marker);
            let _ = egress
                .send(Frame::text(kind::ASSISTANT_DONE, chat.clone(), UNAVAILABLE).with_msg_id(message_id()));
        }
    }
}

/// At start: if the previous process restarted itself, tell its chat and record it.
pub fn announce(workspace: &Path, sessions: &SessionStore, egress: &Sender<Frame>) {
    let marker = workspace.join(MARKER);
    let Ok(bytes) = std::fs::read(&marker) else {
        return;
    };
    let _ = std::fs::remove_file(&marker);
    let chat: Session = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => return log::warn!("{}: {e}; nobody to tell about the restart", marker.display()),
    };
    log::info!("restarted by self_restart; telling {}/{}", chat.channel, chat.id);
    if let Err(e) = sessions.append(&chat, &Turn::new(Role::Assistant, RESTARTED.to_string())) {
        log::error!("cannot write {}: {e}", sessions.path(&chat).display());
    }
    let _ = egress.send(Frame::text(kind::ASSISTANT_DONE, chat, RESTARTED).with_msg_id(message_id()));
}

/// A message id of its own, so a gateway shows it as a message of its own.
fn message_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("restart-{ms}")
}
