//! How the agent asks its host for something besides delivering frames (a keepalive
//! lease, a `host:` model's request, a restart): the AegisVM harness's guest API over
//! HTTP, or JSON-RPC notifications written by the direct tether connection.

use crossbeam_channel::Sender;
use tether::Message;

/// The way to the host.
#[derive(Debug, Clone)]
pub enum Uplink {
    /// The harness guest API at this base URL.
    Harness(String),
    /// Notifications written by the direct tether connection.
    Tether(Sender<Message>),
}
