//! JSON-RPC 2.0 over newline-delimited JSON: the control channel of PROTOCOL.md §3.
//!
//! 1. `Message` is one line: a request, a notification or a response. Parameters and
//!    results stay raw JSON so a `tether.frame` notification is parsed once, as a frame.
//! 2. `Correlator` pairs responses with the requests that threads sharing one connection
//!    sent, each caller blocking on its own channel.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::frame::Frame;

/// Method name of the notification that carries tether frames both ways.
pub const TETHER_FRAME: &str = "tether.frame";

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// Error code (-32700 parse error, -32601 method not found, ...).
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Optional details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// One JSON-RPC message.
#[derive(Debug, Clone)]
pub enum Message {
    /// Has `method` and `id`: the peer expects a response.
    Request {
        /// Correlation id (number or string).
        id: Value,
        /// Method name.
        method: String,
        /// Raw parameters.
        params: Option<Box<RawValue>>,
    },
    /// Has `method` and no `id`: fire and forget.
    Notification {
        /// Method name.
        method: String,
        /// Raw parameters.
        params: Option<Box<RawValue>>,
    },
    /// Has `id` and no `method`.
    Response {
        /// The id of the request answered.
        id: Value,
        /// `result` or `error`.
        outcome: Result<Box<RawValue>, RpcError>,
    },
}

/// Why a line is not a JSON-RPC message.
#[derive(Debug)]
pub enum DecodeError {
    /// Not JSON or not an object of the expected shape.
    Json(serde_json::Error),
    /// `jsonrpc` is missing or not "2.0".
    WrongVersion(Option<String>),
    /// Neither `method` nor `id`, or a response with neither `result` nor `error`.
    Shape(&'static str),
    /// Nested deeper than [`crate::depth::MAX_NESTING`] (this many levels).
    TooDeep(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "invalid JSON-RPC line: {e}"),
            DecodeError::WrongVersion(v) => write!(f, "jsonrpc must be \"2.0\", got {v:?}"),
            DecodeError::Shape(s) => write!(f, "invalid JSON-RPC message: {s}"),
            DecodeError::TooDeep(d) => write!(
                f,
                "a message nested {d} levels deep, more than the {} read",
                crate::depth::MAX_NESTING
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

#[derive(Deserialize)]
struct Wire {
    jsonrpc: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<RpcError>,
}

#[derive(Serialize)]
struct WireOut<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
}

impl Message {
    /// A notification whose params are `params` serialised.
    pub fn notification<T: Serialize + ?Sized>(method: &str, params: &T) -> Message {
        Message::Notification {
            method: method.to_string(),
            params: Some(to_raw(params)),
        }
    }

    /// The `tether.frame` notification carrying `frame`.
    pub fn tether_frame(frame: &Frame) -> Message {
        Message::notification(TETHER_FRAME, frame)
    }

    /// A request with id `id`.
    pub fn request<T: Serialize + ?Sized>(id: u64, method: &str, params: &T) -> Message {
        Message::Request {
            id: Value::from(id),
            method: method.to_string(),
            params: Some(to_raw(params)),
        }
    }

    /// A success response.
    pub fn result<T: Serialize + ?Sized>(id: Value, result: &T) -> Message {
        Message::Response {
            id,
            outcome: Ok(to_raw(result)),
        }
    }

    /// An error response.
    pub fn error(id: Value, code: i64, message: impl Into<String>) -> Message {
        Message::Response {
            id,
            outcome: Err(RpcError {
                code,
                message: message.into(),
                data: None,
            }),
        }
    }

    /// If this is a `tether.frame` notification, its frame (validated).
    pub fn as_tether_frame(&self) -> Option<Result<Frame, crate::frame::FrameError>> {
        match self {
            Message::Notification { method, params } if method == TETHER_FRAME => {
                let raw = params.as_ref().map(|p| p.get()).unwrap_or("null");
                // The message's params: measured with the line it came in.
                Some(Frame::parse_measured(raw.as_bytes()))
            }
            _ => None,
        }
    }

    /// Decode one line (without its newline).
    pub fn decode(line: &[u8]) -> Result<Message, DecodeError> {
        crate::depth::check(line).map_err(DecodeError::TooDeep)?;
        let w: Wire = serde_json::from_slice(line).map_err(DecodeError::Json)?;
        if w.jsonrpc.as_deref() != Some("2.0") {
            return Err(DecodeError::WrongVersion(w.jsonrpc));
        }
        match (w.method, w.id) {
            (Some(method), Some(id)) => Ok(Message::Request {
                id,
                method,
                params: w.params,
            }),
            (Some(method), None) => Ok(Message::Notification {
                method,
                params: w.params,
            }),
            (None, Some(id)) => {
                let outcome = match (w.result, w.error) {
                    (_, Some(e)) => Err(e),
                    (Some(r), None) => Ok(r),
                    (None, None) => return Err(DecodeError::Shape("response without result or error")),
                };
                Ok(Message::Response { id, outcome })
            }
            (None, None) => Err(DecodeError::Shape("neither method nor id")),
        }
    }

    /// Encode as one line including the trailing `\n`.
    pub fn encode(&self) -> Vec<u8> {
        let out = match self {
            Message::Request { id, method, params } => WireOut {
                jsonrpc: "2.0",
                id: Some(id),
                method: Some(method),
                params: params.as_deref(),
                result: None,
                error: None,
            },
            Message::Notification { method, params } => WireOut {
                jsonrpc: "2.0",
                id: None,
                method: Some(method),
                params: params.as_deref(),
                result: None,
                error: None,
            },
            Message::Response { id, outcome } => WireOut {
                jsonrpc: "2.0",
                id: Some(id),
                method: None,
                params: None,
                result: outcome.as_ref().ok().map(|r| &**r),
                error: outcome.as_ref().err(),
            },
        };
        let mut line = serde_json::to_vec(&out).expect("rpc message serialises");
        line.push(b'\n');
        line
    }
}

fn to_raw<T: Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).expect("params serialise")
}

/// The JSON-RPC messages arriving on a byte stream, in order. Lines that are too long or
/// do not decode are logged and skipped (the stream stays usable); iteration ends when
/// the stream ends or fails.
pub struct Messages<R> {
    /// Newline framing with the size limit.
    lines: crate::lines::LineReader<R>,
}

impl<R: std::io::BufRead> Messages<R> {
    /// Messages read from `reader`.
    pub fn new(reader: R) -> Messages<R> {
        Messages {
            lines: crate::lines::LineReader::new(reader),
        }
    }
}

impl<R: std::io::BufRead> Messages<R> {
    /// The next message, or the next line that does not decode, with why (a reader that
    /// must answer a refused line, not only skip it); lines too long are logged and
    /// skipped; `None` when the stream ends or fails.
    pub fn next_decoded(&mut self) -> Option<Result<Message, DecodeError>> {
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => return Some(Message::decode(line)),
                Ok(None) => return None,
                Err(e) if e.is_recoverable() => log::warn!("tether: {e}"),
                Err(e) => {
                    log::debug!("tether read ended: {e}");
                    return None;
                }
            }
        }
    }
}

impl<R: std::io::BufRead> Iterator for Messages<R> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        loop {
            match self.next_decoded()? {
                Ok(m) => return Some(m),
                Err(e) => log::warn!("tether: {e}"),
            }
        }
    }
}

/// The outcome a waiting caller receives.
pub type Outcome = Result<Box<RawValue>, RpcError>;

/// Pairs responses with requests sent by several threads over one connection.
#[derive(Debug, Default)]
pub struct Correlator {
    /// Next request id; ids are never reused on one connection.
    next_id: AtomicU64,
    /// Callers waiting for a response, by request id.
    pending: Mutex<HashMap<u64, Sender<Outcome>>>,
}

impl Correlator {
    /// A correlator whose first id is 1.
    pub fn new() -> Correlator {
        Correlator {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Build a request and register interest in its response.
    pub fn start<T: Serialize + ?Sized>(&self, method: &str, params: &T) -> (Message, Receiver<Outcome>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        self.pending.lock().expect("correlator lock").insert(id, tx);
        (Message::request(id, method, params), rx)
    }

    /// Deliver a response to its waiter. Returns false for an unknown or non-numeric id.
    pub fn complete(&self, id: &Value, outcome: Outcome) -> bool {
        let Some(id) = id.as_u64() else { return false };
        let waiter = self.pending.lock().expect("correlator lock").remove(&id);
        match waiter {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Stop waiting for the response to `id` (its caller gave up); a late one is dropped.
    pub fn abandon(&self, id: &Value) {
        if let Some(id) = id.as_u64() {
            self.pending.lock().expect("correlator lock").remove(&id);
        }
    }

    /// Fail every waiting request, e.g. when the connection drops.
    pub fn fail_all(&self, message: &str) {
        let drained: Vec<_> = self.pending.lock().expect("correlator lock").drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Err(RpcError {
                code: -32000,
                message: message.to_string(),
                data: None,
            }));
        }
    }

    /// How many requests await a response.
    pub fn pending(&self) -> usize {
        self.pending.lock().expect("correlator lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Session;

    #[test]
    fn kinds_are_told_apart_by_method_and_id() {
        let req = Message::decode(br#"{"jsonrpc":"2.0","id":7,"method":"health"}"#).unwrap();
        assert!(matches!(req, Message::Request { ref method, .. } if method == "health"));
        let note = Message::decode(br#"{"jsonrpc":"2.0","method":"log","params":{"line":"x"}}"#).unwrap();
        assert!(matches!(note, Message::Notification { .. }));
        let ok = Message::decode(br#"{"jsonrpc":"2.0","id":7,"result":{"status":"ok"}}"#).unwrap();
        assert!(matches!(ok, Message::Response { outcome: Ok(_), .. }));
        let err =
            Message::decode(br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"nope"}}"#).unwrap();
        assert!(matches!(
            err,
            Message::Response {
                outcome: Err(RpcError { code: -32601, .. }),
                ..
            }
        ));
    }

    #[test]
    fn bad_lines_get_typed_errors() {
        assert!(matches!(Message::decode(b"{nope"), Err(DecodeError::Json(_))));
        assert!(matches!(
            Message::decode(br#"{"id":1,"method":"x"}"#),
            Err(DecodeError::WrongVersion(None))
        ));
        assert!(matches!(
            Message::decode(br#"{"jsonrpc":"2.0"}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            Message::decode(br#"{"jsonrpc":"2.0","id":1}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            Message::decode(br#"{"jsonrpc":"2.0","method":5}"#),
            Err(DecodeError::Json(_))
        ));
        let deep = |n: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"x","params":{{"a":{}1{}}}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(Message::decode(deep(62).as_bytes()).is_ok(), "64 levels in all");
        assert!(matches!(
            Message::decode(deep(63).as_bytes()),
            Err(DecodeError::TooDeep(65))
        ));
    }

    #[test]
    fn tether_frame_notification_round_trips() {
        let f = Frame::user_message(Session::new("t", "1"), "hi", None);
        let line = Message::tether_frame(&f).encode();
        assert_eq!(*line.last().unwrap(), b'\n');
        let back = Message::decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(back.as_tether_frame().unwrap().unwrap(), f);
    }

    #[test]
    fn messages_skip_bad_lines_and_end_with_the_stream() {
        let src = b"{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\nnot json\n\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1}\n{\"jsonrpc\"";
        let got: Vec<Message> = Messages::new(&src[..]).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Message::Notification { .. }));
        assert!(matches!(got[1], Message::Response { .. }));
    }

    #[test]
    fn correlator_routes_responses_to_their_callers() {
        let c = std::sync::Arc::new(Correlator::new());
        let (m1, r1) = c.start("health", &());
        let (m2, r2) = c.start("run", &serde_json::json!({"command":["sh"]}));
        let id = |m: &Message| match m {
            Message::Request { id, .. } => id.clone(),
            _ => unreachable!(),
        };
        assert!(c.complete(&id(&m2), Ok(to_raw(&2))));
        assert!(c.complete(&id(&m1), Ok(to_raw(&1))));
        assert!(
            !c.complete(&id(&m1), Ok(to_raw(&1))),
            "second answer to one id is refused"
        );
        assert_eq!(r1.recv().unwrap().unwrap().get(), "1");
        assert_eq!(r2.recv().unwrap().unwrap().get(), "2");
        let (_m3, r3) = c.start("exec", &());
        c.fail_all("connection lost");
        assert_eq!(r3.recv().unwrap().unwrap_err().message, "connection lost");
        assert_eq!(c.pending(), 0);
    }
}
