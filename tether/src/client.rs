//! Client of the aegisd HTTP API on its unix socket (PROTOCOL.md §2), shared by the
//! gateway and the `aegis-kit` CLI. Works against the real aegisd and `aegis-kit serve`.
//!
//! Requests have connect and overall timeouts; the egress stream has none, because it is
//! meant to stay open for as long as the instance lives.

use std::fmt;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ureq::Agent;

use crate::frame::{Frame, FrameError};
use crate::lines::{LineError, LineReader};
use crate::unix_http::{NoResolver, UnixConnector};

/// Timeout for establishing a connection to the socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Overall timeout for one request, including a wake-on-message (aegisd allows 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// Largest response body read into memory.
const MAX_BODY: u64 = 16 << 20;

/// What went wrong talking to aegisd.
#[derive(Debug)]
pub enum ClientError {
    /// The socket could not be reached or the connection broke.
    Transport {
        /// Socket path, so the message says where we looked.
        socket: PathBuf,
        /// The underlying error.
        source: ureq::Error,
    },
    /// aegisd answered with an error status; `message` is its `{"error": ...}` text.
    Status {
        /// HTTP status code.
        code: u16,
        /// The server's error message, or the raw body if it was not JSON.
        message: String,
    },
    /// A response body was not what the API promises.
    Body(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport { socket, source } => {
                write!(f, "aegisd at {} unreachable: {source}", socket.display())
            }
            ClientError::Status { code, message } => write!(f, "aegisd answered {code}: {message}"),
            ClientError::Body(m) => write!(f, "unexpected aegisd response: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The HTTP status, if aegisd answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (connection trouble, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Status { code, .. } => *code >= 500,
            ClientError::Body(_) => false,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

#[derive(Serialize, Deserialize)]
struct SecretBody {
    value: String,
}

/// A client bound to one aegisd socket. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct AegisClient {
    /// ureq agent whose only transport is the unix socket.
    agent: Agent,
    /// The socket path, for error messages.
    socket: PathBuf,
}

/// The default socket: `~/.aegis/aegisd.sock`.
pub fn default_socket() -> PathBuf {
    crate::paths::aegis_home().join("aegisd.sock")
}

impl AegisClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> AegisClient {
        let socket = socket.into();
        let config = crate::http::agent_config("http://localhost")
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            // One connection per request. An idle keep-alive connection pins a server
            // thread in tiny_http (which serves `aegis-kit serve`), and its task pool can
            // leave a new connection queued behind such threads indefinitely (seen: a
            // gateway's POST unanswered for 30 s). A unix-socket connect costs ~20 µs.
            .max_idle_connections(0)
            .build();
        let agent = Agent::with_parts(config, UnixConnector { path: socket.clone() }, NoResolver);
        AegisClient { agent, socket }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn url(path: &str) -> String {
        format!("http://aegis{path}")
    }

    fn transport(&self, source: ureq::Error) -> ClientError {
        ClientError::Transport {
            socket: self.socket.clone(),
            source,
        }
    }

    /// Send `method path` with an optional JSON body; return the parsed JSON body of a 2xx.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let text = self.request_text(method, path, body.map(|b| b.to_string()))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Body(format!("{method} {path}: {e}")))
    }

    fn request_text(&self, method: &str, path: &str, body: Option<String>) -> Result<String, ClientError> {
        let url = Self::url(path);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", Some(b)) => self.agent.post(&url).content_type("application/json").send(b),
            ("POST", None) => self.agent.post(&url).send_empty(),
            ("PUT", Some(b)) => self.agent.put(&url).content_type("application/json").send(b),
            ("PUT", None) => self.agent.put(&url).send_empty(),
            _ => return Err(ClientError::Body(format!("unsupported method {method}"))),
        };
        let resp = result.map_err(|e| self.transport(e))?;
        let code = resp.status().as_u16();
        let text = resp
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        if (200..300).contains(&code) {
            Ok(text)
        } else {
            Err(status_error(code, &text))
        }
    }

    /// `POST /v1/instances/{instance}/tether`: deliver one ingress frame (202 expected).
    pub fn post_frame(&self, instance: &str, frame: &Frame) -> Result<(), ClientError> {
        let path = format!("/v1/instances/{}/tether", encode_segment(instance));
        self.request_text("POST", &path, Some(frame.to_json())).map(drop)
    }

    /// `GET /v1/secrets/{name}`: the decrypted secret value.
    pub fn get_secret(&self, name: &str) -> Result<String, ClientError> {
        let v = self.request("GET", &format!("/v1/secrets/{}", encode_segment(name)), None)?;
        v.get("value")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ClientError::Body(format!("secret {name}: no string \"value\" in the response")))
    }

    /// `PUT /v1/secrets/{name}`.
    pub fn put_secret(&self, name: &str, value: &str) -> Result<(), ClientError> {
        let body = serde_json::to_value(SecretBody {
            value: value.to_string(),
        })
        .expect("json");
        self.request(
            "PUT",
            &format!("/v1/secrets/{}", encode_segment(name)),
            Some(&body),
        )
        .map(drop)
    }

    /// `DELETE /v1/secrets/{name}`.
    pub fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        self.request("DELETE", &format!("/v1/secrets/{}", encode_segment(name)), None)
            .map(drop)
    }

    /// The host path of `instance`'s workspace (`workspace` of `GET /v1/instances/{id}`),
    /// if aegisd reports one.
    pub fn instance_workspace(&self, instance: &str) -> Result<Option<std::path::PathBuf>, ClientError> {
        let v = self.request(
            "GET",
            &format!("/v1/instances/{}", encode_segment(instance)),
            None,
        )?;
        Ok(v["workspace"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from))
    }

    /// `GET /v1/instances/{instance}/tether/stream[?after=SEQ]`: a blocking iterator of
    /// egress frames that ends when the server closes the stream.
    pub fn stream(&self, instance: &str, after: Option<u64>) -> Result<FrameStream, ClientError> {
        let mut path = format!("/v1/instances/{}/tether/stream", encode_segment(instance));
        if let Some(a) = after {
            path.push_str(&format!("?after={a}"));
        }
        Ok(FrameStream::from_reader(self.get_reader(&path)?))
    }

    /// `GET path` of a long-lived response (a stream): the body as a reader, no timeout.
    pub fn get_reader(&self, path: &str) -> Result<Box<dyn Read + Send>, ClientError> {
        let resp = self
            .agent
            .get(Self::url(path))
            .config()
            .timeout_global(None)
            .build()
            .call()
            .map_err(|e| self.transport(e))?;
        self.reader(resp)
    }

    /// `POST /v1/instances/{instance}/exec` `{"command": [...]}` (aegisd's exec API): the
    /// NDJSON stream of the command's output lines (`{"line", "stream", "exec_id"}`) and
    /// its end (`{"exit_code", "done": true}`), read for at most `limit`.
    pub fn exec(
        &self,
        instance: &str,
        command: &[&str],
        limit: std::time::Duration,
    ) -> Result<Box<dyn Read + Send>, ClientError> {
        let path = format!("/v1/instances/{}/exec", encode_segment(instance));
        let body = serde_json::json!({ "command": command }).to_string();
        let resp = self
            .agent
            .post(Self::url(&path))
            .config()
            .timeout_global(Some(limit))
            .build()
            .content_type("application/json")
            .send(body)
            .map_err(|e| self.transport(e))?;
        self.reader(resp)
    }

    fn reader(&self, resp: ureq::http::Response<ureq::Body>) -> Result<Box<dyn Read + Send>, ClientError> {
        let code = resp.status().as_u16();
        if !(200..300).contains(&code) {
            let text = resp.into_body().read_to_string().unwrap_or_default();
            return Err(status_error(code, &text));
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }
}

fn status_error(code: u16, body: &str) -> ClientError {
    let message = serde_json::from_str::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| body.trim().chars().take(200).collect());
    ClientError::Status { code, message }
}

/// Percent-encode one path segment (names come from users and config files).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One item of the egress stream.
#[derive(Debug)]
pub enum StreamError {
    /// The connection failed; the caller should reconnect with its cursor.
    Line(LineError),
    /// One line was not a valid frame; the stream goes on.
    Frame(FrameError),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Line(e) => write!(f, "egress stream: {e}"),
            StreamError::Frame(e) => write!(f, "egress stream: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Egress frames read from an NDJSON stream.
pub struct FrameStream {
    /// Lines of the chunked response body.
    lines: LineReader<BufReader<Box<dyn Read + Send>>>,
    /// Set after an error the stream cannot recover from: iteration is over.
    ended: bool,
}

impl fmt::Debug for FrameStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameStream").finish()
    }
}

impl FrameStream {
    /// Read frames from any NDJSON byte source (used by tests and tools).
    pub fn from_reader(r: Box<dyn Read + Send>) -> FrameStream {
        FrameStream {
            lines: LineReader::new(BufReader::new(r)),
            ended: false,
        }
    }
}

impl Iterator for FrameStream {
    type Item = Result<Frame, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.lines.next_line() {
            Ok(None) => None,
            Ok(Some(line)) => Some(Frame::parse(line).map_err(StreamError::Frame)),
            Err(e) => {
                // An oversized line is reported and reading goes on; after any other
                // error the stream is over, even for a caller that keeps iterating.
                self.ended = !e.is_recoverable();
                Some(Err(StreamError::Line(e)))
            }
        }
    }
}

/// One event of aegisd's exec stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// A line the command wrote, without its newline.
    Line {
        /// Written to stderr (else stdout).
        stderr: bool,
        /// The text.
        text: String,
    },
    /// The command ended with this status.
    Done(i64),
}

/// aegisd's exec stream (`POST /v1/instances/{id}/exec`): a first line `{exec_id,
/// started_at}`, log entries `{line, stream}`, then `{exit_code, done: true}`. Lines that
/// are none of these (keep-alive newlines) and oversized ones are skipped; iteration ends
/// after `Done`, at the end of the body, or with the error that broke it.
pub struct ExecStream {
    lines: LineReader<BufReader<Box<dyn Read + Send>>>,
    ended: bool,
}

impl fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecStream").finish()
    }
}

impl ExecStream {
    /// Read events from the body `AegisClient::exec` returned (or any NDJSON source).
    pub fn from_reader(r: Box<dyn Read + Send>) -> ExecStream {
        ExecStream {
            lines: LineReader::new(BufReader::new(r)),
            ended: false,
        }
    }
}

impl Iterator for ExecStream {
    type Item = Result<ExecEvent, crate::lines::LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ended {
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) if e.is_recoverable() => continue,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            };
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if v["done"] == true {
                self.ended = true;
                return Some(Ok(ExecEvent::Done(v["exit_code"].as_i64().unwrap_or(-1))));
            }
            if let Some(text) = v["line"].as_str() {
                let stderr = v["stream"] == "stderr";
                let text = text.to_string();
                return Some(Ok(ExecEvent::Line { stderr, text }));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_stream_gives_lines_then_the_status() {
        let src = concat!(
            "{\"exec_id\":\"e1\",\"started_at\":\"2026-12-02T08:00:00Z\"}\n",
            "{\"stream\":\"stdout\",\"line\":\"hi\",\"exec_id\":\"e1\"}\n",
            "\n",
            "{\"stream\":\"stderr\",\"line\":\"oops\"}\n",
            "{\"exec_id\":\"e1\",\"exit_code\":3,\"done\":true}\n",
            "{\"line\":\"after done\"}\n",
        );
        let events: Vec<_> = ExecStream::from_reader(Box::new(src.as_bytes()))
            .map(Result::unwrap)
            .collect();
        let line = |stderr, text: &str| ExecEvent::Line {
            stderr,
            text: text.into(),
        };
        assert_eq!(
            events,
            vec![line(false, "hi"), line(true, "oops"), ExecEvent::Done(3)]
        );
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("my-agent"), "my-agent");
        assert_eq!(encode_segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn error_bodies_become_messages() {
        let e = status_error(404, r#"{"error":"instance \"x\" not found"}"#);
        assert_eq!(e.to_string(), "aegisd answered 404: instance \"x\" not found");
        assert!(!e.is_transient());
        assert!(status_error(503, "wake failed").is_transient());
    }

    #[test]
    fn frame_stream_reads_ndjson_and_survives_a_bad_line() {
        let src = b"{\"v\":1,\"type\":\"assistant.delta\",\"seq\":1,\"payload\":{\"text\":\"a\"}}\nnot json\n{\"v\":1,\"type\":\"assistant.done\",\"seq\":2,\"payload\":{\"text\":\"ab\"}}\n";
        let items: Vec<_> = FrameStream::from_reader(Box::new(&src[..])).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().seq, Some(1));
        assert!(matches!(items[1], Err(StreamError::Frame(_))));
        assert_eq!(items[2].as_ref().unwrap().text_payload().as_deref(), Some("ab"));
    }

    #[test]
    fn frame_stream_ends_after_a_broken_connection() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::ConnectionReset.into())
            }
        }
        let mut s = FrameStream::from_reader(Box::new(Broken));
        assert!(matches!(s.next(), Some(Err(StreamError::Line(_)))));
        assert!(
            s.next().is_none(),
            "no endless errors for a caller that keeps iterating"
        );
    }
}
