//! # tether
//!
//! The Aegis tether protocol, shared by `aegis-agent`, `aegis-gateway` and `aegis-kit`
//! (see PROTOCOL.md in the project's shared docs):
//!
//! - [`frame`]: the frame model, typed payloads, validation;
//! - [`rpc`] and [`lines`]: JSON-RPC 2.0 over newline-delimited JSON, with a size limit,
//!   and [`depth`], the nesting limit every message is held to;
//! - [`transport`] and [`hybrid`]: unix socket, TCP and AF_VSOCK streams, and the host
//!   side of Firecracker-style hybrid vsock;
//! - [`store`]: the per-instance egress history with sequence cursors, and [`disklog`],
//!   its durable on-disk continuation;
//! - [`client`]: the aegisd HTTP API over its unix socket, and [`http`], the settings
//!   every HTTP client of the kit starts from, [`cut`], stopping a request in flight
//!   from another thread, and (feature `tls`) [`trust`], the certificate authorities
//!   they trust;
//! - [`cron`]: scheduled tasks, the `cron.json` the agent writes and the host fires,
//!   [`at`], when a one-time task runs, and (feature `schedule`) `schedule`, which runs
//!   are due when.
//!
//! The library starts no threads of its own.

pub mod at;
pub mod client;
pub mod cron;
pub mod cut;
pub mod depth;
// Hosts that write into a guest's workspace are the ones that fire its tasks.
#[cfg(feature = "schedule")]
pub mod dirfd;
pub mod disklog;
pub mod frame;
pub mod fsutil;
pub mod http;
pub mod hybrid;
pub mod lines;
pub mod paths;
pub mod process;
pub mod quote;
pub mod rpc;
#[cfg(feature = "schedule")]
pub mod schedule;
pub mod slots;
pub mod store;
pub mod time;
pub mod transport;
#[cfg(feature = "tls")]
pub mod trust;
pub mod unix_http;

pub use client::{AegisClient, ClientError};
pub use frame::{Direction, Frame, FrameError, Session};
pub use rpc::Message;
pub use store::EgressStore;
pub use transport::{Addr, Listener, Stream};
