//! MCP client (protocol revisions 2025-06-18 and 2026-07-28, [`crate::mcp_era`]): each
//! configured server is a child process speaking newline-delimited JSON-RPC on its
//! stdin/stdout (stdio), or a URL speaking Streamable HTTP ([`crate::mcp_http`]).
//!
//! Duties:
//! 1. start every server in the background at boot (the agent listens at once), find out
//!    which generation it speaks (`initialize` and `notifications/initialized`, or the
//!    stateless `server/discover`), and list its tools (`tools/list`, following
//!    `nextCursor`); offer them as `SERVER_TOOL`;
//! 2. carry out `tools/call`, joining text content and marking `isError` results; an
//!    image a tool returns (a browser's screenshot) becomes a file of the workspace the
//!    model can send on or look into, named by its content;
//! 3. bound everything: a server that will not start, dies or stops answering gives a
//!    clear tool error within its timeout, is killed (its whole process group) and is
//!    started again on the next call; a cancel ends a call at once;
//! 4. answer the server's own requests (`ping`, `roots/list`; a question for the user,
//!    [`crate::mcp_input`], by asking the user of the reply the call is for; anything else:
//!    method not found), and
//!    list the tools again before the next model request when the server says they
//!    changed (`notifications/tools/list_changed`) or their `ttlMs` has passed, and its
//!    prompts before the next look at the command menu when it says they changed;
//! 5. keep the agent's own keys from the servers: agent.json and mcp.json are files the
//!    model can write, so a server is a command run on its behalf, as `bash` is;
//! 6. run a server's prompt when a message names it (`/SERVER_PROMPT`, listed then, so
//!    always current; [`crate::mcp_prompts`]);
//! 7. sign in to a remote server that asks for it ([`sign_in`]): its tokens go with every
//!    request, are refreshed when they expire or are refused, and until the user has
//!    signed in the model is offered one tool that asks them to.
//!
//! One reader thread per running server pairs responses with requests (the
//! [`Correlator`]); calls to one server are serialised by its connection lock.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{at, never, select, Receiver};
use serde::Deserialize;
use serde_json::{json, Value};
use tether::rpc::{Correlator, Message, Messages};

use crate::elicit::{Unanswered, User};
use crate::llm::ToolSpec;
use crate::mcp_era::{Era, ParamHeader};
use crate::mcp_input::{Desk, NoInput, Question};
use crate::mcp_prompts::{Asked, Prompt};
use crate::mcp_resources::ResourceTool;
use crate::tools::Outcome;

mod sign_in;
mod status;

/// The MCP revision we speak with a server that wants a handshake (the newest of the
/// stateless kind is [`crate::mcp_era::MODERN`]).
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Longest wait for `initialize` and each `tools/list` page.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for one `tools/call`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A server that failed to start is tried again after this long at the earliest.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// `tools/list` pages followed at most.
const MAX_PAGES: usize = 50;
/// Longest `/skills` waits for a server's prompts ([`McpServers::prompts`]).
pub const LISTING_WAIT: Duration = Duration::from_secs(5);
/// How long a server's question waits for the user's answer (the call's own timeout
/// stands still meanwhile). The agent stays awake while it waits.
pub const ASK_WAIT: Duration = Duration::from_secs(300);

/// Who answers a server's question during a request, and for which server: the user of
/// the chat a reply is for. A scheduled task's run, or the agent's own requests (listing
/// tools), have nobody.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    server: &'a str,
    user: &'a dyn User,
}

impl Asker<'_> {
    /// Put a handshake server's question `q`, which came while a request waits until
    /// `deadline`, and send the answer back with `reply` (`cancel` when there is none).
    /// The time the user took is added to `deadline`: it is not the server's. An error
    /// when no answer came, which ends the request.
    pub fn answer(
        &self,
        q: Question,
        deadline: &mut Instant,
        reply: impl FnOnce(Value, &Value) -> Result<(), McpError>,
    ) -> Result<(), McpError> {
        let asked_at = Instant::now();
        let answer = crate::elicit::put(self.server, &q.params, self.user).map_err(McpError::Unanswered);
        *deadline += asked_at.elapsed();
        reply(q.id, answer.as_ref().unwrap_or(&crate::elicit::cancelled()))?;
        answer.map(drop)
    }
}

/// What a request waits on besides its answer, over either transport: the reply's cancel,
/// its timeout, and the server's questions, put to `asker`'s user when there is one.
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    pub method: &'static str,
    pub timeout: Duration,
    pub cancel: &'a Receiver<()>,
    pub asker: Option<Asker<'a>>,
}

impl Wait<'_> {
    /// Take `desk`'s questions, when someone can answer them, until the guard is dropped
    /// (opened before the request goes out, so an early question finds it).
    pub fn open<'d>(&self, desk: &'d Desk) -> (Option<crate::mcp_input::Open<'d>>, Receiver<Question>) {
        match self.asker {
            Some(_) => {
                let (open, q) = desk.open();
                (Some(open), q)
            }
            None => (None, never()),
        }
    }

    /// What `answer` brings (as `read` makes of it), or why nothing came: a question
    /// arriving on `questions` meanwhile is put and answered with `reply` (its time added
    /// to the timeout); `give_up` tells the server why the request is abandoned.
    pub fn for_answer<T>(
        &self,
        answer: &Receiver<T>,
        read: impl FnOnce(Result<T, crossbeam_channel::RecvError>) -> Result<Value, McpError>,
        (questions, reply): (
            &Receiver<Question>,
            impl Fn(Value, &Value) -> Result<(), McpError>,
        ),
        give_up: impl Fn(&'static str),
    ) -> Result<Value, McpError> {
        let mut deadline = Instant::now() + self.timeout;
        loop {
            select! {
                recv(answer) -> r => return read(r),
                recv(questions) -> q => {
                    let (Ok(q), Some(asker)) = (q, self.asker) else { continue };
                    if let Err(e) = asker.answer(q, &mut deadline, &reply) {
                        give_up("the user did not answer");
                        return Err(e);
                    }
                }
                recv(self.cancel) -> _ => {
                    give_up("the user stopped the reply");
                    return Err(McpError::Cancelled);
                }
                recv(at(deadline)) -> _ => {
                    give_up("timed out");
                    return Err(McpError::Timeout(self.method, self.timeout));
                }
            }
        }
    }
}
/// The notification of a server whose tools changed.
pub const TOOLS_CHANGED: &str = "notifications/tools/list_changed";
/// The notification of a server whose prompts changed.
pub const PROMPTS_CHANGED: &str = "notifications/prompts/list_changed";

/// What a server said changed since its lists were taken.
#[derive(Debug, Default)]
pub struct Changes {
    /// Its tools: listed again before they are offered.
    pub tools: AtomicBool,
    /// Its prompts: listed again before the command menu is looked at.
    pub prompts: AtomicBool,
}

impl Changes {
    /// A notification `method` from the server.
    pub fn heard(&self, method: &str) {
        match method {
            TOOLS_CHANGED => self.tools.store(true, Ordering::SeqCst),
            PROMPTS_CHANGED => self.prompts.store(true, Ordering::SeqCst),
            _ => {}
        }
    }
}

/// Characters of a server's `instructions` put into the system prompt: enough for a real
/// server's (AegisVM's `aegis-mcp-guest` gives about 900), not for one that would crowd
/// out the conversation.
const MAX_INSTRUCTIONS: usize = 4000;
/// The workspace folder images returned by tools are kept in.
const IMAGES: &str = "mcp";

/// How to run one server (agent.json `mcp`, `.aegis/mcp.json` `servers`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ServerConfig {
    /// Program to run (stdio).
    #[serde(default)]
    pub command: String,
    /// [ours] The server's Streamable HTTP endpoint, instead of a program.
    #[serde(default)]
    pub url: Option<String>,
    /// [ours] Headers sent to `url` (`Authorization`); `${VAR}` takes a variable's value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `stdio` or `http` (`streamable-http`), as other clients' files say; optional.
    #[serde(default, rename = "type")]
    pub transport: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// [ours] Longest `tools/call`, in seconds (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// [ours] How to sign in to `url` when it asks (OAuth); optional.
    #[serde(default)]
    pub oauth: Option<crate::mcp_oauth::OAuthConfig>,
}

/// Why a request to a server failed.
#[derive(Debug)]
pub enum McpError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// Writing to its stdin failed (it exited).
    Write(std::io::Error),
    /// No answer within the timeout.
    Timeout(&'static str, Duration),
    /// The server exited or closed its stdout.
    Gone,
    /// It answered with a JSON-RPC error.
    Rpc(tether::rpc::RpcError),
    /// Its answer is not what the protocol says.
    Protocol(String),
    /// The reply was cancelled meanwhile.
    Cancelled,
    /// The server could not be reached, or the connection broke.
    Transport(String),
    /// It refused a message with this HTTP status (and its words).
    Http(u16, String),
    /// It refused a message with this HTTP status and a JSON-RPC error.
    HttpRpc(u16, tether::rpc::RpcError),
    /// It no longer knows the session (HTTP 404): a new one is needed.
    SessionEnded,
    /// Its configuration cannot be used.
    Config(String),
    /// It asks for input the agent cannot give (a modern server's `input_required`).
    NeedsInput(String),
    /// It asked the user, who stopped the reply or did not answer.
    Unanswered(Unanswered),
    /// A modern server that cannot be spoken to (it speaks only other versions): no use
    /// trying the handshake.
    Unusable(String),
    /// It refused the request's token, or its lack of one (HTTP 401, or 403 for a scope
    /// the token lacks), saying this, in these words. Boxed: every result of a request
    /// carries an `McpError`'s room, on threads with small stacks.
    Unauthorized(Box<crate::oauth_discovery::Challenge>, String),
    /// The user must sign in first, with this tool; `more`: again, to allow more than
    /// they did.
    SignIn { tool: String, more: bool },
}

impl fmt::Display for McpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McpError::Spawn(e) => write!(f, "cannot start: {e}"),
            McpError::Write(e) => write!(f, "cannot send to it: {e}"),
            McpError::Timeout(what, d) => write!(f, "no answer to {what} within {} s", d.as_secs()),
            McpError::Gone => f.write_str("it exited"),
            McpError::Rpc(e) => write!(f, "{e}"),
            McpError::Protocol(e) => write!(f, "unexpected answer: {e}"),
            McpError::Cancelled => f.write_str("cancelled"),
            McpError::Transport(e) => write!(f, "the connection failed: {e}"),
            McpError::Http(401 | 403, e) => write!(
                f,
                "it refused the credentials ({e}); agent.json `headers` can carry a token: \"Authorization\": \"Bearer ${{TOKEN_VARIABLE}}\""
            ),
            McpError::Http(status, e) if e.is_empty() => write!(f, "HTTP {status}"),
            McpError::Http(status, e) => write!(f, "HTTP {status}: {e}"),
            McpError::HttpRpc(status, e) => McpError::Http(*status, e.message.clone()).fmt(f),
            McpError::SessionEnded => f.write_str("it ended the session"),
            McpError::Config(e) => f.write_str(e),
            McpError::NeedsInput(asked) => write!(f, "the server asks for input the agent cannot give ({asked})"),
            McpError::Unanswered(Unanswered::Stopped) => f.write_str("the user stopped the reply instead of answering its question"),
            McpError::Unanswered(Unanswered::Silent) => write!(
                f,
                "the user did not answer its question within {} minutes",
                ASK_WAIT.as_secs() / 60
            ),
            McpError::Unusable(why) => f.write_str(why),
            McpError::Unauthorized(c, words) => McpError::Http(
                if c.insufficient_scope() { 403 } else { 401 },
                words.clone(),
            )
            .fmt(f),
            McpError::SignIn { tool, more: false } => write!(
                f,
                "the user has to sign in to it first: call {tool}, which asks them in the chat"
            ),
            McpError::SignIn { tool, more: true } => write!(
                f,
                "it needs more access than the user allowed: call {tool}, which asks them to sign in again in the chat"
            ),
        }
    }
}

/// One tool of a server.
#[derive(Debug, Clone)]
struct RemoteTool {
    /// The name the server knows it by.
    remote: String,
    /// As offered to the model (`SERVER_TOOL`).
    spec: ToolSpec,
    /// The arguments a modern server over HTTP wants mirrored into headers.
    marks: Vec<ParamHeader>,
    /// One of the two tools for the server's resources, not a tool of its own.
    resource: Option<ResourceTool>,
}

/// A running server process.
struct StdioConn {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    correlator: Arc<Correlator>,
    /// Cleared by the reader thread when stdout ends.
    alive: Arc<AtomicBool>,
    /// Where the reader thread leaves the server's questions for the call in flight.
    desk: Arc<Desk>,
}

impl Drop for StdioConn {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the server's own process group; no memory involved.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        self.correlator.fail_all("the MCP server was stopped");
    }
}

impl StdioConn {
    /// Request `wait.method` and wait for its answer as `wait` says.
    fn request(&self, params: &Value, wait: Wait) -> Result<Value, McpError> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(McpError::Gone);
        }
        let (_open, questions) = wait.open(&self.desk);
        let (msg, rx) = self.correlator.start(wait.method, params);
        self.send(&msg)?;
        let read = |r: Result<tether::rpc::Outcome, _>| match r {
            Ok(Ok(raw)) => serde_json::from_str(raw.get()).map_err(|e| McpError::Protocol(e.to_string())),
            Ok(Err(e)) if e.code == -32000 && !self.alive.load(Ordering::SeqCst) => Err(McpError::Gone),
            Ok(Err(e)) => Err(McpError::Rpc(e)),
            Err(_) => Err(McpError::Gone),
        };
        let reply = |id, r: &Value| self.send(&Message::result(id, r));
        wait.for_answer(&rx, read, (&questions, reply), |reason| {
            // The server may stop its work; its late answer is dropped.
            let id = msg_id(&msg);
            self.correlator.abandon(&id);
            let _ = self.send(&Message::notification(
                "notifications/cancelled",
                &json!({"requestId": id, "reason": reason}),
            ));
        })
    }

    fn send(&self, msg: &Message) -> Result<(), McpError> {
        let mut stdin = self.stdin.lock().expect("mcp stdin lock");
        stdin
            .write_all(&msg.encode())
            .and_then(|()| stdin.flush())
            .map_err(McpError::Write)
    }
}

/// `name` with every character but ASCII letters, digits, `_` and `-` made `_`: fit for a
/// tool name and a file name.
fn plain(name: &str) -> impl Iterator<Item = char> + '_ {
    name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        }
    })
}

fn msg_id(msg: &Message) -> Value {
    match msg {
        Message::Request { id, .. } => id.clone(),
        _ => Value::Null,
    }
}

/// A server's link, by transport.
enum Link {
    Stdio(StdioConn),
    Http(crate::mcp_http::HttpConn),
}

impl Link {
    /// Request `method` as a server of `era` expects it (with `headers` too, over HTTP);
    /// its result if complete. Nobody is asked anything meanwhile.
    fn request(
        &self,
        era: Era,
        method: &'static str,
        params: &Value,
        headers: Vec<(String, String)>,
        timeout: Duration,
        cancel: &Receiver<()>,
    ) -> Result<Value, McpError> {
        let result = self.exchange(era, method, params, headers, (timeout, cancel), None)?;
        crate::mcp_era::complete(result)
    }

    /// Request `method`, whatever its result says it is (a modern server's
    /// `input_required` too), a handshake server's questions put to `asker`'s user.
    fn exchange(
        &self,
        era: Era,
        method: &'static str,
        params: &Value,
        headers: Vec<(String, String)>,
        (timeout, cancel): (Duration, &Receiver<()>),
        asker: Option<Asker>,
    ) -> Result<Value, McpError> {
        let params = match era {
            Era::Modern => crate::mcp_era::with_meta(params, asker.is_some()),
            Era::Legacy => params.clone(),
        };
        let wait = Wait {
            method,
            timeout,
            cancel,
            asker,
        };
        match self {
            Link::Stdio(c) => c.request(&params, wait),
            Link::Http(c) => c.request(&params, headers, wait),
        }
    }

    fn notify(&self, method: &str, params: &Value) -> Result<(), McpError> {
        match self {
            Link::Stdio(c) => c.send(&Message::notification(method, params)),
            Link::Http(c) => c.notify(method, params),
        }
    }

    fn alive(&self) -> bool {
        match self {
            Link::Stdio(c) => c.alive.load(Ordering::SeqCst),
            Link::Http(c) => c.alive(),
        }
    }
}

/// A running server (a process, or a URL) and the generation of MCP it speaks.
struct Conn {
    link: Link,
    era: Era,
}

impl Conn {
    fn alive(&self) -> bool {
        self.link.alive()
    }

    fn stdio(&self) -> bool {
        matches!(self.link, Link::Stdio(_))
    }
}

/// One configured server: its connection (started on demand) and its tool list.
struct Server {
    name: String,
    config: ServerConfig,
    workspace: PathBuf,
    /// The agent's own keys: never passed to the server.
    hidden_env: Arc<[String]>,
    /// The running process; held while starting and during a call.
    conn: Mutex<Option<Conn>>,
    /// Tools from the last successful `tools/list`, offered even while the server is down
    /// (a call starts it again).
    tools: Mutex<Vec<RemoteTool>>,
    /// What the server said changed: its tools are listed again before they are offered,
    /// its prompts before the command menu is looked at.
    changed: Arc<Changes>,
    /// Until when the listed tools are fresh, as a modern server says (`ttlMs`): listed
    /// again before they are offered after it.
    fresh_until: Mutex<Option<Instant>>,
    /// The generation a server at a URL was found to speak (a process is asked anew each
    /// time it starts): the next connection goes straight to it.
    era: Mutex<Option<Era>>,
    /// What the server says about using its tools (`instructions`), for the system prompt.
    instructions: Mutex<Option<String>>,
    /// It declared the `resources` capability: its resources are offered as two tools.
    resources: AtomicBool,
    /// It declared the `prompts` capability: its prompts are chat commands.
    prompts: AtomicBool,
    /// Its prompts as last listed (when it started, and whenever a message named one),
    /// for the chat's command menu.
    prompts_seen: Mutex<Vec<Prompt>>,
    /// When the last start failed, to pace retries.
    failed_at: Mutex<Option<Instant>>,
    /// Why it failed then (for `/mcp`).
    last_error: Mutex<Option<String>>,
    /// The connection is to go at its next use (the user signed out: it carries the old
    /// token).
    reconnect: AtomicBool,
    /// While a background start runs: disconnects when it is over.
    starting: Mutex<Option<Receiver<()>>>,
    /// The sign-ins kept, every server's.
    grants: Arc<crate::oauth_store::Store>,
    /// It wants the user to sign in, as its refusal said: the sign-in tool is offered.
    sign_in: Mutex<Option<crate::oauth_discovery::Challenge>>,
}

impl Server {
    /// Start the process, or open the session, and run the handshake, once (see
    /// [`Server::connect`]). Caller holds `conn`.
    fn connect_once(&self) -> Result<Conn, McpError> {
        let transport = self.config.transport.as_deref().map(str::to_ascii_lowercase);
        let conn = match (transport.as_deref(), &self.config.url) {
            (Some("sse"), _) => {
                return Err(McpError::Config(
                    "the HTTP+SSE transport of MCP 2024-11-05 is not supported: give the server's Streamable HTTP endpoint".into(),
                ))
            }
            (None | Some("http" | "streamable-http" | "streamable_http"), Some(url)) => self.open(url)?,
            (None | Some("stdio"), None) if !self.config.command.is_empty() => Link::Stdio(self.spawn()?),
            (Some("http" | "streamable-http" | "streamable_http"), None) => {
                return Err(McpError::Config("`url` is missing".into()))
            }
            (None | Some("stdio"), _) => {
                return Err(McpError::Config(
                    "neither `command` nor `url` is given".into(),
                ))
            }
            (Some(other), _) => {
                return Err(McpError::Config(format!(
                    "unknown `type` {other:?} (stdio or http)"
                )))
            }
        };
        let era = match &conn {
            Link::Stdio(_) => self.agree_stdio(&conn)?,
            Link::Http(http) => self.agree_http(&conn, http)?,
        };
        let conn = Conn { link: conn, era };
        self.list_tools(&conn)?;
        if self.prompts.load(Ordering::SeqCst) {
            self.list_prompts_on(&conn);
        }
        if let (Era::Modern, Link::Stdio(c)) = (era, &conn.link) {
            listen_for_changes(c, self.prompts.load(Ordering::SeqCst));
        }
        Ok(conn)
    }

    /// Which generation a process speaks. `initialize` first: a handshake server (most,
    /// and AegisVM's `aegis-mcp-guest`, which leaves any other first message unanswered)
    /// takes it at once, so probing it costs no wait; a modern one refuses it, and then
    /// answers `server/discover`.
    fn agree_stdio(&self, link: &Link) -> Result<Era, McpError> {
        let refusal = match self.initialize(link) {
            Ok(()) => return Ok(Era::Legacy),
            Err(McpError::Rpc(e)) => e,
            Err(e) => return Err(e),
        };
        match self.discover(link) {
            Ok(Era::Modern) => Ok(Era::Modern),
            Ok(Era::Legacy) => Err(McpError::Rpc(refusal)),
            Err(e @ McpError::Unusable(_)) => Err(e),
            Err(e) => {
                log::debug!("MCP [{}]: server/discover: {e}", self.name);
                Err(McpError::Rpc(refusal))
            }
        }
    }

    /// Which generation a server at a URL speaks: a modern request first, as the
    /// 2026-07-28 revision asks; a refusal that is not a modern server's error means a
    /// handshake server, and a session is opened. What was found is remembered.
    fn agree_http(&self, link: &Link, http: &crate::mcp_http::HttpConn) -> Result<Era, McpError> {
        let known = *self.era.lock().expect("mcp era lock");
        if known != Some(Era::Legacy) {
            http.set_modern(true);
            let fallback = match self.discover(link) {
                Ok(Era::Modern) => {
                    *self.era.lock().expect("mcp era lock") = Some(Era::Modern);
                    return Ok(Era::Modern);
                }
                Ok(Era::Legacy) => None,
                Err(
                    e @ (McpError::Http(401 | 403, _)
                    | McpError::HttpRpc(401 | 403, _)
                    | McpError::Unauthorized(..)),
                ) => return Err(e),
                Err(
                    e @ (McpError::Transport(_)
                    | McpError::Timeout(..)
                    | McpError::Spawn(_)
                    | McpError::Unusable(_)),
                ) => return Err(e),
                Err(e) => Some(e),
            };
            if let Some(e) = &fallback {
                log::debug!(
                    "MCP [{}]: not a {} server ({e}); opening a session",
                    self.name,
                    crate::mcp_era::MODERN
                );
            }
            http.set_modern(false);
        }
        self.initialize(link)?;
        *self.era.lock().expect("mcp era lock") = Some(Era::Legacy);
        Ok(Era::Legacy)
    }

    /// `server/discover`, as a modern server expects it: the era its answer shows. A
    /// modern server's refusal (it speaks other versions) says which it speaks.
    fn discover(&self, link: &Link) -> Result<Era, McpError> {
        let answer = link.request(
            Era::Modern,
            "server/discover",
            &json!({}),
            Vec::new(),
            START_TIMEOUT,
            &never(),
        );
        match answer {
            Ok(result) => {
                let era = crate::mcp_era::discovered(&result)?;
                if era == Era::Modern {
                    self.keep_instructions(&result);
                    self.keep_capabilities(&result);
                    let server = &result["_meta"]["io.modelcontextprotocol/serverInfo"];
                    log::info!(
                        "MCP [{}]: server {} {} speaks {}",
                        self.name,
                        server["name"].as_str().unwrap_or("?"),
                        server["version"].as_str().unwrap_or("?"),
                        crate::mcp_era::MODERN
                    );
                }
                Ok(era)
            }
            Err(McpError::Rpc(e) | McpError::HttpRpc(_, e)) if crate::mcp_era::is_modern_error(e.code) => {
                match crate::mcp_era::supported(&e) {
                    Some(v) if v.iter().any(|v| v.as_str() < crate::mcp_era::MODERN) => Ok(Era::Legacy),
                    Some(v) => Err(crate::mcp_era::unspoken(
                        &v.iter().map(String::as_str).collect::<Vec<_>>(),
                    )),
                    None => Err(McpError::Unusable(format!(
                        "it refused server/discover: {}",
                        e.message
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Keep the `instructions` of an `initialize` or `server/discover` result, at most
    /// [`MAX_INSTRUCTIONS`] characters of them.
    fn keep_instructions(&self, result: &Value) {
        let text = result["instructions"]
            .as_str()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let kept = text.map(|t| crate::text::clip(t, MAX_INSTRUCTIONS));
        *self.instructions.lock().expect("mcp instructions lock") = kept;
    }

    /// What an `initialize` or `server/discover` result says the server has besides tools.
    fn keep_capabilities(&self, result: &Value) {
        let has = |what: &str| result["capabilities"][what].is_object();
        self.resources.store(has("resources"), Ordering::SeqCst);
        self.prompts.store(has("prompts"), Ordering::SeqCst);
    }

    /// `text` of the configuration (`what`) with its variables' values.
    fn expand(&self, what: &str, text: &str) -> Result<String, McpError> {
        let var = |name: &str| std::env::var(name).ok();
        crate::mcp_http::expand(text, &self.hidden_env, var)
            .map_err(|e| McpError::Config(format!("{what}: {e}")))
    }

    /// The endpoint of a server at a URL, its variables expanded.
    fn endpoint(&self, url: &str) -> Result<String, McpError> {
        let url = self.expand("url", url)?;
        if !crate::oauth_discovery::is_http_url(&url) {
            return Err(McpError::Config(
                "`url` must start with http:// or https://".into(),
            ));
        }
        Ok(url)
    }

    /// A session with the server at `url`.
    fn open(&self, url: &str) -> Result<Link, McpError> {
        let url = self.endpoint(url)?;
        let mut headers = self
            .config
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.expand(&format!("header {k}"), v)?)))
            .collect::<Result<Vec<_>, McpError>>()?;
        if let Some(token) = self.signed_in_token(&url) {
            headers.push(("authorization".into(), format!("Bearer {token}")));
        }
        Ok(Link::Http(crate::mcp_http::HttpConn::new(
            &self.name,
            &url,
            headers,
            self.call_timeout().max(START_TIMEOUT) + ASK_WAIT,
            Arc::clone(&self.changed),
            self.workspace.clone(),
        )))
    }

    /// Keep image `data` (base64) of type `mime` a tool returned as
    /// `mcp/SERVER-HASH.EXT` in the workspace (resolved as every file tool's path); where.
    fn save_image(&self, data: &str, mime: &str) -> Result<String, String> {
        self.keep_image(data, mime).map(|(at, _)| at)
    }

    /// [`Self::save_image`], with the image's bytes.
    fn keep_image(&self, data: &str, mime: &str) -> Result<(String, Vec<u8>), String> {
        use base64::Engine;
        if data.len() / 4 * 3 > crate::blobs::MAX_IMAGE {
            return Err(format!(
                "larger than {} MB",
                crate::blobs::MAX_IMAGE / (1024 * 1024)
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let ext = match crate::blobs::sniff(&bytes) {
            Some(t) => crate::blobs::extension(t),
            None if mime == "image/svg+xml" => "svg",
            None => "img",
        };
        let server: String = plain(&self.name).collect();
        let hash = crate::blobs::sha256_hex(&bytes);
        let rel = format!("{IMAGES}/{server}-{}.{ext}", &hash[..12]);
        let ws = crate::tools::paths::Workspace::new(&self.workspace).map_err(|e| e.to_string())?;
        let dest = ws.resolve(&rel).map_err(|e| e.to_string())?;
        crate::blobs::put(&bytes, &dest).map_err(|e| format!("{rel}: {e}"))?;
        crate::copies::kept(&dest, "");
        Ok((rel, bytes))
    }

    fn call_timeout(&self) -> Duration {
        self.config.timeout_secs.map_or(CALL_TIMEOUT, Duration::from_secs)
    }

    /// Start the server's process.
    fn spawn(&self) -> Result<StdioConn, McpError> {
        let mut cmd = Command::new(&self.config.command);
        for key in self
            .hidden_env
            .iter()
            .filter(|k| !self.config.env.contains_key(*k))
        {
            cmd.env_remove(key);
        }
        cmd.args(&self.config.args)
            .envs(&self.config.env)
            .current_dir(&self.workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = cmd.spawn().map_err(McpError::Spawn)?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let conn = StdioConn {
            child,
            stdin: Arc::new(Mutex::new(stdin)),
            correlator: Arc::new(Correlator::new()),
            alive: Arc::new(AtomicBool::new(true)),
            desk: Arc::new(Desk::default()),
        };
        let reader = Reader {
            name: self.name.clone(),
            correlator: Arc::clone(&conn.correlator),
            stdin: Arc::clone(&conn.stdin),
            alive: Arc::clone(&conn.alive),
            changed: Arc::clone(&self.changed),
            desk: Arc::clone(&conn.desk),
            workspace: self.workspace.clone(),
        };
        thread::Builder::new()
            .name("mcp-reader".into())
            .stack_size(128 * 1024)
            .spawn(move || reader.run(stdout))
            .map_err(McpError::Spawn)?;
        Ok(conn)
    }

    /// `initialize` and `notifications/initialized`.
    fn initialize(&self, link: &Link) -> Result<(), McpError> {
        let none = never();
        let init = link.request(
            Era::Legacy,
            "initialize",
            &json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": crate::mcp_input::handshake_capabilities(),
                "clientInfo": {"name": "aegis-agent", "version": env!("CARGO_PKG_VERSION")},
            }),
            Vec::new(),
            START_TIMEOUT,
            &none,
        )?;
        let agreed = match init["protocolVersion"].as_str() {
            Some(PROTOCOL_VERSION) => PROTOCOL_VERSION,
            Some(other) => {
                log::info!("MCP [{}]: server speaks revision {other}", self.name);
                other
            }
            None => {
                return Err(McpError::Protocol(
                    "initialize result has no protocolVersion".into(),
                ))
            }
        };
        if let Link::Http(c) = link {
            c.agreed(agreed);
        }
        self.keep_instructions(&init);
        self.keep_capabilities(&init);
        link.notify("notifications/initialized", &json!({}))
    }

    /// `tools/list`, every page: the tools offered from now on.
    fn list_tools(&self, conn: &Conn) -> Result<(), McpError> {
        let none = never();
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page =
                conn.link
                    .request(conn.era, "tools/list", &params, Vec::new(), START_TIMEOUT, &none)?;
            let listed = page["tools"]
                .as_array()
                .ok_or_else(|| McpError::Protocol("tools/list result has no tools".into()))?;
            let marked = conn.era == Era::Modern && !conn.stdio();
            tools.extend(listed.iter().filter_map(|t| self.remote_tool(t, marked)));
            // A modern server says how long its list stays fresh; the first page's word
            // stands for the list (a second at least, so one turn lists it once).
            if cursor.is_none() {
                let ttl = page["ttlMs"]
                    .as_u64()
                    .map(|ms| Duration::from_millis(ms.max(1000)));
                *self.fresh_until.lock().expect("mcp fresh lock") = ttl.map(|t| Instant::now() + t);
            }
            cursor = page["nextCursor"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        if self.resources.load(Ordering::SeqCst) {
            // The server's own tools of those names come first.
            for kind in [ResourceTool::List, ResourceTool::Read] {
                if !tools.iter().any(|t| t.remote == kind.name()) {
                    let exposed: String = plain(&format!("{}_{}", self.name, kind.name()))
                        .take(64)
                        .collect();
                    tools.push(RemoteTool {
                        remote: kind.name().to_string(),
                        spec: kind.spec(&self.name, exposed),
                        marks: Vec::new(),
                        resource: Some(kind),
                    });
                }
            }
        }
        log::info!("MCP [{}]: {} tools", self.name, tools.len());
        *self.tools.lock().expect("mcp tools lock") = tools;
        Ok(())
    }

    /// A listed tool as offered; with `marked` (a modern server over HTTP), its
    /// `x-mcp-header` marks, and none at all if they break the rules.
    fn remote_tool(&self, t: &Value, marked: bool) -> Option<RemoteTool> {
        let remote = t["name"].as_str()?.to_string();
        let exposed: String = plain(&format!("{}_{}", self.name, remote)).take(64).collect();
        let schema = match &t["inputSchema"] {
            s @ Value::Object(_) => s.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        let marks = if marked {
            match crate::mcp_era::param_headers(&schema) {
                Ok(m) => m,
                Err(why) => {
                    log::warn!("MCP [{}]: tool {remote} left out: {why}", self.name);
                    return None;
                }
            }
        } else {
            Vec::new()
        };
        Some(RemoteTool {
            marks,
            resource: None,
            remote,
            spec: ToolSpec {
                name: exposed,
                description: t["description"].as_str().unwrap_or("").to_string(),
                input_schema: schema,
            },
        })
    }

    /// Make sure the server runs; on failure remember when, and say why.
    fn ensure(&self, conn: &mut Option<Conn>) -> Result<(), McpError> {
        let reconnect = self.reconnect.swap(false, Ordering::SeqCst);
        if !reconnect && conn.as_ref().is_some_and(Conn::alive) {
            return Ok(());
        }
        *conn = None; // reaps a dead one
        match self.connect() {
            Ok(c) => {
                *conn = Some(c);
                *self.failed_at.lock().expect("mcp failed lock") = None;
                *self.last_error.lock().expect("mcp error lock") = None;
                Ok(())
            }
            Err(e) => {
                log::warn!("MCP [{}]: {e}", self.name);
                *self.failed_at.lock().expect("mcp failed lock") = Some(Instant::now());
                *self.last_error.lock().expect("mcp error lock") = Some(e.to_string());
                // What it was found to speak may be what failed: ask again next time.
                *self.era.lock().expect("mcp era lock") = None;
                Err(e)
            }
        }
    }

    fn call(
        &self,
        remote: &str,
        args: &Value,
        cancel: &Receiver<()>,
        user: Option<&dyn User>,
        saved: &Saved,
    ) -> Outcome {
        let params = json!({"name": remote, "arguments": args});
        match self.ask("tools/call", &params, Some((remote, args)), cancel, user) {
            Ok(result) => Outcome::Done(call_text(&result, &|d, t| self.save_image_into(d, t, saved))),
            Err(outcome) => outcome,
        }
    }

    /// [`Self::keep_image`], noting where it went and its bytes in `saved`.
    fn save_image_into(&self, data: &str, mime: &str, saved: &Saved) -> Result<String, String> {
        let (at, bytes) = self.keep_image(data, mime)?;
        saved.borrow_mut().push((at.clone(), bytes));
        Ok(at)
    }

    /// One of the resource tools ([`crate::mcp_resources`]).
    fn resource_call(
        &self,
        tool: ResourceTool,
        args: &Value,
        cancel: &Receiver<()>,
        user: Option<&dyn User>,
        saved: &Saved,
    ) -> Outcome {
        match tool {
            ResourceTool::List => {
                let cursor = args["cursor"].as_str().filter(|c| !c.is_empty());
                let params = cursor.map_or_else(|| json!({}), |c| json!({"cursor": c}));
                let resources = match self.ask("resources/list", &params, None, cancel, None) {
                    Ok(r) => r,
                    Err(outcome) => return outcome,
                };
                // With the first page, the templates, from a server that has them.
                let templates = cursor
                    .is_none()
                    .then(|| {
                        self.ask("resources/templates/list", &json!({}), None, cancel, None)
                            .ok()
                    })
                    .flatten();
                Outcome::Done(crate::mcp_resources::listing(&resources, templates.as_ref()))
            }
            ResourceTool::Read => {
                let Some(uri) = args["uri"].as_str().filter(|u| !u.is_empty()) else {
                    return Outcome::Done("error: `uri` is required".into());
                };
                match self.ask("resources/read", &json!({"uri": uri}), None, cancel, user) {
                    Ok(r) => Outcome::Done(crate::mcp_resources::contents(&r, &|d, t| {
                        self.save_image_into(d, t, saved)
                    })),
                    Err(outcome) => outcome,
                }
            }
        }
    }

    /// Request `method` of the server, starting it first if need be, within the call
    /// timeout; `marked` (a tool and its arguments) adds the headers the tool's marks ask
    /// for. What the server asks meanwhile is answered (`user`, when there is one, answers
    /// its questions), and a stateless server asked again with the answers. Its result, or
    /// what the model is told instead (cancelled, or why it failed).
    fn ask(
        &self,
        method: &'static str,
        params: &Value,
        marked: Option<(&str, &Value)>,
        cancel: &Receiver<()>,
        user: Option<&dyn User>,
    ) -> Result<Value, Outcome> {
        let asker = user.map(|user| Asker {
            server: &self.name,
            user,
        });
        let failed = |e: McpError| Outcome::Done(format!("error: MCP server {} failed: {e}", self.name));
        let mut params = params.clone();
        for _ in 0..crate::mcp_input::MAX_ROUNDS {
            let result = self.ask_once(method, &params, marked, cancel, asker)?;
            if result["resultType"] != "input_required" {
                return crate::mcp_era::complete(result).map_err(failed);
            }
            // The connection is free while the user thinks: other chats' calls go on.
            let answers = crate::mcp_input::input_responses(&self.name, &result, &self.workspace, user);
            params = match answers {
                Ok(answers) => crate::mcp_input::retried(&params, &result, answers),
                Err(NoInput::Unanswered(Unanswered::Stopped)) => return Err(Outcome::Cancelled),
                Err(NoInput::Unanswered(why)) => return Err(failed(McpError::Unanswered(why))),
                Err(NoInput::Unsupported(what)) => return Err(failed(McpError::NeedsInput(what))),
            };
        }
        Err(Outcome::Done(format!(
            "error: MCP server {} asked for input {} times in a row; given up",
            self.name,
            crate::mcp_input::MAX_ROUNDS
        )))
    }

    /// One request of [`Server::ask`]: its result as it came, whatever it says it is.
    fn ask_once(
        &self,
        method: &'static str,
        params: &Value,
        marked: Option<(&str, &Value)>,
        cancel: &Receiver<()>,
        asker: Option<Asker>,
    ) -> Result<Value, Outcome> {
        let mut conn = self.conn.lock().expect("mcp conn lock");
        for attempt in 0..2 {
            if let Err(e) = self.ensure(&mut conn) {
                return Err(Outcome::Done(format!(
                    "error: MCP server {} is unavailable: {e}",
                    self.name
                )));
            }
            let c = conn.as_ref().expect("ensured");
            let stdio = c.stdio();
            let marks = marked
                .and_then(|(remote, args)| {
                    let tools = self.tools.lock().expect("mcp tools lock");
                    let tool = tools.iter().find(|t| t.remote == remote)?;
                    Some(crate::mcp_era::header_values(&tool.marks, args))
                })
                .unwrap_or_default();
            let e = match c
                .link
                .exchange(c.era, method, params, marks, (self.call_timeout(), cancel), asker)
            {
                Ok(result) => return Ok(result),
                Err(McpError::Cancelled | McpError::Unanswered(Unanswered::Stopped)) => {
                    return Err(Outcome::Cancelled)
                }
                Err(McpError::Unauthorized(c, _)) if c.insufficient_scope() && self.oauth() => {
                    // The token is good but allows too little for this call: the user
                    // decides whether to allow more (a step-up).
                    self.needs_sign_in(*c)
                }
                Err(McpError::Unauthorized(..)) if attempt == 0 && self.oauth() => {
                    // The token expired or was revoked meanwhile: a new connection
                    // refreshes it (or says the user must sign in again).
                    log::info!(
                        "MCP [{}]: the server refused the token; connecting again",
                        self.name
                    );
                    *conn = None;
                    continue;
                }
                Err(McpError::SessionEnded) if attempt == 0 => {
                    // The server forgot the session (it restarted, or expired it), so the
                    // call never ran there: a new session runs it.
                    log::info!(
                        "MCP [{}]: the server ended the session; starting a new one",
                        self.name
                    );
                    *conn = None;
                    continue;
                }
                Err(McpError::Rpc(e) | McpError::HttpRpc(_, e))
                    if attempt == 0 && e.code == crate::mcp_era::HEADER_MISMATCH =>
                {
                    // The tool's header marks changed since it was listed (the call was
                    // refused before it ran): list again, and call as it now asks.
                    log::info!("MCP [{}]: {}; listing the tools again", self.name, e.message);
                    match self.list_tools(c) {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                }
                Err(McpError::Rpc(e) | McpError::HttpRpc(_, e))
                    if attempt == 0 && e.code == crate::mcp_era::UNSUPPORTED_VERSION =>
                {
                    // It no longer speaks what it was found to (it was updated): find out
                    // again on a new connection, which runs the call.
                    log::info!("MCP [{}]: {}; connecting again", self.name, e.message);
                    *self.era.lock().expect("mcp era lock") = None;
                    *conn = None;
                    continue;
                }
                Err(e) => e,
            };
            // A dead process, or one that stopped answering: stop it; the next call starts
            // it again. An HTTP session stands until the server cannot be reached or ends
            // it: a slow call or a cut stream leaves it usable.
            let broken = if stdio {
                matches!(e, McpError::Gone | McpError::Write(_) | McpError::Timeout(..))
            } else {
                !c.alive()
            };
            if broken {
                *conn = None;
            }
            let next = match (conn.is_none(), stdio) {
                (false, _) => "",
                (true, true) => " (it will be restarted on the next call)",
                (true, false) => " (it will be connected again on the next call)",
            };
            return Err(Outcome::Done(format!(
                "error: MCP server {} failed: {e}{next}",
                self.name
            )));
        }
        Err(Outcome::Done(format!(
            "error: MCP server {} ended two sessions in a row",
            self.name
        )))
    }
}

/// Ask a modern process to say when its tools change, and its prompts when it has them
/// (`subscriptions/listen`): its notifications arrive on stdout like any other, and
/// [`read_loop`] sees them. The subscription lasts as long as the process; nothing waits
/// for its end.
fn listen_for_changes(c: &StdioConn, prompts: bool) {
    let params = crate::mcp_era::with_meta(
        &json!({"notifications": {"toolsListChanged": true, "promptsListChanged": prompts}}),
        false,
    );
    let (msg, ended) = c.correlator.start("subscriptions/listen", &params);
    drop(ended);
    if let Err(e) = c.send(&msg) {
        log::debug!("MCP: subscriptions/listen: {e}");
    }
}

/// A server process's stdout, read on a thread of its own: responses go to the requests
/// waiting for them, questions to the call in flight, notifications to what changed.
struct Reader {
    name: String,
    correlator: Arc<Correlator>,
    stdin: Arc<Mutex<ChildStdin>>,
    alive: Arc<AtomicBool>,
    changed: Arc<Changes>,
    desk: Arc<Desk>,
    /// The roots the server is told of.
    workspace: PathBuf,
}

impl Reader {
    fn run(self, stdout: std::process::ChildStdout) {
        let Reader {
            name,
            correlator,
            stdin,
            alive,
            changed,
            desk,
            workspace,
        } = self;
        let name = name.as_str();
        let mut messages = Messages::new(BufReader::new(stdout));
        while let Some(decoded) = messages.next_decoded() {
            let m = match decoded {
                Ok(m) => m,
                Err(e @ tether::rpc::DecodeError::TooDeep(_)) => {
                    // Whichever request it answers must not wait for its timeout: a server
                    // that sends such a thing is told of in every call in flight.
                    log::warn!("MCP [{name}]: {e}");
                    correlator.fail_all(&format!("the server sent {e}"));
                    continue;
                }
                Err(e) => {
                    log::warn!("MCP [{name}]: {e}");
                    continue;
                }
            };
            match m {
                Message::Response { id, outcome } => {
                    if !correlator.complete(&id, outcome) {
                        log::debug!("MCP [{name}]: response to unknown request {id}");
                    }
                }
                Message::Request { id, method, params } => {
                    let reply = match crate::mcp_input::answered_alone(&method, &workspace) {
                        Some(result) => Message::result(id, &result),
                        None if method == "elicitation/create" => {
                            let params = params.and_then(|p| serde_json::from_str(p.get()).ok());
                            let q = Question {
                                id,
                                params: params.unwrap_or(Value::Null),
                            };
                            match desk.hand(q) {
                                Ok(()) => continue,
                                Err(q) => {
                                    log::info!(
                                        "MCP [{name}]: a question with no user to ask (answered cancel)"
                                    );
                                    Message::result(q.id, &crate::elicit::cancelled())
                                }
                            }
                        }
                        None => Message::error(
                            id,
                            -32601,
                            format!("method {method} is not supported by aegis-agent"),
                        ),
                    };
                    let mut w = stdin.lock().expect("mcp stdin lock");
                    let _ = w.write_all(&reply.encode()).and_then(|()| w.flush());
                }
                Message::Notification { method, .. } => {
                    log::debug!("MCP [{name}]: notification {method}");
                    changed.heard(&method);
                }
            }
        }
        alive.store(false, Ordering::SeqCst);
        correlator.fail_all("the MCP server exited");
        log::info!("MCP [{name}]: server exited");
    }
}

/// Keeps an image a tool returned (base64 data, media type); where, in the workspace.
type SaveImage<'a> = dyn Fn(&str, &str) -> Result<String, String> + 'a;

/// The images a call returned: where each was saved in the workspace, and its bytes (for
/// the caller to show them to the model without reading them back).
pub type Saved = std::cell::RefCell<Vec<(String, Vec<u8>)>>;

/// The text the model sees for a `tools/call` result; images go through `save`.
fn call_text(result: &Value, save: &SaveImage) -> String {
    let mut parts: Vec<String> = result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| content_text(c, "the tool", save))
        .collect();
    if parts.is_empty() {
        if let Some(s) = result.get("structuredContent") {
            parts.push(s.to_string());
        }
    }
    let text = parts.join("\n");
    if result["isError"].as_bool() == Some(true) {
        format!("error: {text}")
    } else {
        text
    }
}

/// The text the model sees for one content item (of a tool's result, or a prompt's
/// message, as `from` says); images go through `save`.
fn content_text(c: &Value, from: &str, save: &SaveImage) -> Option<String> {
    Some(match c["type"].as_str()? {
        "text" => c["text"].as_str().unwrap_or("").to_string(),
        "image" => {
            let mime = c["mimeType"].as_str().unwrap_or("image");
            match save(c["data"].as_str().unwrap_or(""), mime) {
                Ok(path) => format!("[{mime} image from {from}, saved in the workspace as {path}]"),
                Err(why) => format!("[{mime} image from {from}, not saved: {why}]"),
            }
        }
        "resource_link" => format!(
            "[resource {}: {}]",
            c["name"].as_str().unwrap_or("?"),
            c["uri"].as_str().unwrap_or("?")
        ),
        "resource" => c["resource"]["text"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("[resource {}]", c["resource"]["uri"].as_str().unwrap_or("?"))),
        other => format!("[{other} content]"),
    })
}

/// The servers' prompts for `/skills` ([`McpServers::prompts`]).
pub struct Listed {
    /// Each with its server's name.
    pub prompts: Vec<(String, Prompt)>,
    /// The servers that did not answer in time (their prompts are as last listed).
    pub late: Vec<String>,
}

/// Every MCP server of the agent.
#[derive(Default)]
pub struct McpServers {
    servers: Vec<Arc<Server>>,
}

impl McpServers {
    /// The servers of `configs`, not started yet (see [`McpServers::start_all`]).
    pub fn new(
        configs: BTreeMap<String, ServerConfig>,
        workspace: &Path,
        hidden_env: &[String],
    ) -> McpServers {
        let hidden_env: Arc<[String]> = hidden_env.into();
        let grants = Arc::new(crate::oauth_store::Store::new(workspace));
        let servers: Vec<Arc<Server>> = configs
            .into_iter()
            .map(|(name, config)| {
                Arc::new(Server {
                    name,
                    config,
                    workspace: workspace.to_path_buf(),
                    hidden_env: Arc::clone(&hidden_env),
                    changed: Arc::default(),
                    fresh_until: Mutex::new(None),
                    era: Mutex::new(None),
                    instructions: Mutex::new(None),
                    resources: AtomicBool::new(false),
                    prompts: AtomicBool::new(false),
                    prompts_seen: Mutex::new(Vec::new()),
                    conn: Mutex::new(None),
                    tools: Mutex::new(Vec::new()),
                    failed_at: Mutex::new(None),
                    last_error: Mutex::new(None),
                    reconnect: AtomicBool::new(false),
                    starting: Mutex::new(None),
                    grants: Arc::clone(&grants),
                    sign_in: Mutex::new(None),
                })
            })
            .collect();
        McpServers { servers }
    }

    /// Start every server in the background (tools are listed as each comes up). Called
    /// once the agent listens, so starting servers never delays that.
    pub fn start_all(&self) {
        for s in &self.servers {
            start_in_background(s);
        }
    }

    /// No server configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Names of the servers.
    pub fn names(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.name.as_str()).collect()
    }

    /// Wait for the servers still starting, each bounded by its start timeouts.
    pub fn wait_started(&self) {
        let deadline = Instant::now() + START_TIMEOUT + Duration::from_secs(5);
        for s in &self.servers {
            let starting = s.starting.lock().expect("mcp starting lock").clone();
            if let Some(done) = starting {
                let _ = done.recv_deadline(deadline);
            }
        }
    }

    /// What the servers say about using their tools, as a section for the end of the
    /// system prompt (empty when none says anything). Servers still starting are waited
    /// for, so the first reply after a start has it too.
    pub fn instructions(&self) -> String {
        self.wait_started();
        let mut section = String::new();
        for s in &self.servers {
            if let Some(text) = s.instructions.lock().expect("mcp instructions lock").as_deref() {
                if section.is_empty() {
                    section.push_str("\n\n# Instructions from the MCP servers whose tools you have\n");
                }
                section.push_str(&format!("\n## {}\n{text}\n", s.name));
            }
        }
        section
    }

    /// Every server's tools. Waits for servers still starting (each bounded by its start
    /// timeouts); a server that failed is tried again in the background now and then.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = Vec::new();
        self.wait_started();
        for s in &self.servers {
            let running = s.conn.lock().expect("mcp conn lock").is_some();
            let failed_long_ago = s
                .failed_at
                .lock()
                .expect("mcp failed lock")
                .is_some_and(|t| t.elapsed() > RETRY_AFTER);
            // One waiting for the user to sign in would only be refused again.
            let signing_in = s.sign_in.lock().expect("mcp sign-in lock").is_some();
            if !running && failed_long_ago && !signing_in {
                start_in_background(s);
            }
            let stale = s
                .fresh_until
                .lock()
                .expect("mcp fresh lock")
                .is_some_and(|t| Instant::now() >= t);
            if running && (s.changed.tools.swap(false, Ordering::SeqCst) || stale) {
                s.list_again();
            }
            let tools = s.tools.lock().expect("mcp tools lock");
            specs.extend(tools.iter().map(|t| t.spec.clone()));
            if let Some(spec) = s.sign_in_spec() {
                if !tools.iter().any(|t| t.spec.name == spec.name) {
                    specs.push(spec);
                }
            }
        }
        specs
    }

    /// The prompts of every server that has them (for `/skills`), listed now, every
    /// server at once. One that has not answered within [`LISTING_WAIT`] is given with its
    /// prompts as last listed, and named in the second list (a server hung on something
    /// else would otherwise hold the answer up to its call timeout); one that cannot list
    /// them is left out (the log says why). `None` when cancelled.
    pub fn prompts(&self, cancel: &Receiver<()>) -> Option<Listed> {
        let servers = self.with_prompts(|_| true);
        let (tx, rx) = crossbeam_channel::unbounded();
        for (i, s) in servers.iter().enumerate() {
            let (s, tx) = (Arc::clone(s), tx.clone());
            // Left to end on its own when nobody waits any more: the call's timeout
            // bounds it.
            let spawned = thread::Builder::new()
                .name("mcp-prompts".into())
                .stack_size(256 * 1024)
                .spawn(move || drop(tx.send((i, s.list_prompts(&never())))));
            if let Err(e) = spawned {
                log::error!("MCP [{}]: cannot start a thread: {e}", servers[i].name);
            }
        }
        drop(tx);
        let mut answered: Vec<Option<Result<Vec<Prompt>, Outcome>>> = servers.iter().map(|_| None).collect();
        let deadline = at(Instant::now() + LISTING_WAIT);
        for _ in 0..servers.len() {
            select! {
                recv(rx) -> got => match got {
                    Ok((i, listed)) => answered[i] = Some(listed),
                    Err(_) => break,
                },
                recv(cancel) -> _ => return None,
                recv(deadline) -> _ => break,
            }
        }
        let (mut all, mut late) = (Vec::new(), Vec::new());
        for (s, got) in servers.iter().zip(answered) {
            let list = match got {
                Some(Ok(list)) => list,
                Some(Err(Outcome::Done(why))) => {
                    log::warn!("MCP [{}]: listing its prompts: {why}", s.name);
                    continue;
                }
                Some(Err(Outcome::Cancelled)) => continue,
                None => {
                    log::warn!(
                        "MCP [{}]: its prompts were not listed within {} s; showing them as last listed",
                        s.name,
                        LISTING_WAIT.as_secs()
                    );
                    late.push(s.name.clone());
                    s.prompts_seen.lock().expect("mcp prompts lock").clone()
                }
            };
            all.extend(list.into_iter().map(|p| (s.name.clone(), p)));
        }
        Some(Listed { prompts: all, late })
    }

    /// For a message starting with `/SERVER_PROMPT`: that prompt run (see
    /// [`Server::run_prompt`]), `user` answering what the server asks meanwhile; `None`
    /// when it names no prompt. Only servers whose name the command starts with are asked,
    /// so `/start` or `/weather` cost nothing.
    pub fn prompt_asked(&self, text: &str, cancel: &Receiver<()>, user: Option<&dyn User>) -> Option<Asked> {
        let (word, _) = crate::text::slash_command(text)?;
        let mut unlisted = None;
        for s in self.with_prompts(|name| word.starts_with(&crate::mcp_prompts::command(name, ""))) {
            match s.list_prompts(cancel) {
                Ok(list) => {
                    if let Some(p) = list.iter().find(|p| p.command == word) {
                        return Some(s.run_prompt(p, text, cancel, user));
                    }
                }
                Err(Outcome::Cancelled) => return Some(Asked::Cancelled),
                Err(Outcome::Done(why)) => {
                    unlisted = Some(format!(
                        "/{word} did not run: its prompts could not be listed ({})",
                        why.trim_start_matches("error: ")
                    ));
                }
            }
        }
        unlisted.map(Asked::Answer)
    }

    /// Every server's prompts as last listed (for the command menu); those of a server
    /// that said they changed are listed again first, unless a call holds it (then at
    /// the next look).
    pub fn prompts_seen(&self) -> Vec<Prompt> {
        for s in &self.servers {
            if s.changed.prompts.swap(false, Ordering::SeqCst) {
                match s.conn.try_lock() {
                    Ok(conn) => {
                        if let Some(c) = conn.as_ref() {
                            s.list_prompts_on(c);
                        }
                    }
                    Err(_) => s.changed.prompts.store(true, Ordering::SeqCst),
                }
            }
        }
        self.servers
            .iter()
            .flat_map(|s| s.prompts_seen.lock().expect("mcp prompts lock").clone())
            .collect()
    }

    /// The servers whose name `named` accepts and that have prompts (servers still
    /// starting are waited for, as only then is it known).
    fn with_prompts(&self, named: impl Fn(&str) -> bool) -> Vec<&Arc<Server>> {
        let named: Vec<&Arc<Server>> = self.servers.iter().filter(|s| named(&s.name)).collect();
        if !named.is_empty() {
            self.wait_started();
        }
        named
            .into_iter()
            .filter(|s| s.prompts.load(Ordering::SeqCst))
            .collect()
    }

    /// Run `name` if a server offers it; `None` if none does. `user`, when there is one,
    /// answers the server's questions.
    pub fn call(
        &self,
        name: &str,
        args: &Value,
        cancel: &Receiver<()>,
        user: Option<&dyn User>,
        saved: &Saved,
    ) -> Option<Outcome> {
        for s in &self.servers {
            let found = s
                .tools
                .lock()
                .expect("mcp tools lock")
                .iter()
                .find(|t| t.spec.name == name)
                .map(|t| (t.remote.clone(), t.resource));
            match found {
                Some((_, Some(kind))) => return Some(s.resource_call(kind, args, cancel, user, saved)),
                Some((remote, None)) => return Some(s.call(&remote, args, cancel, user, saved)),
                None if s.oauth() && name == s.sign_in_tool() => return Some(s.sign_in(user)),
                None => {}
            }
        }
        None
    }
}

impl Server {
    /// Its prompts, listed now: asked for when a message names one, so always the
    /// server's current list.
    fn list_prompts(&self, cancel: &Receiver<()>) -> Result<Vec<Prompt>, Outcome> {
        self.page_prompts(|params| self.ask("prompts/list", params, None, cancel, None))
    }

    /// Its prompts listed on `conn`, which the caller holds, for the command menu; a
    /// server that cannot list them still has its tools.
    fn list_prompts_on(&self, conn: &Conn) {
        let none = never();
        let listed = self.page_prompts(|params| {
            conn.link
                .request(conn.era, "prompts/list", params, Vec::new(), START_TIMEOUT, &none)
        });
        match listed {
            Ok(p) => log::info!("MCP [{}]: {} prompts", self.name, p.len()),
            Err(e) => log::warn!("MCP [{}]: listing its prompts: {e}", self.name),
        }
    }

    /// Its prompts as `request` lists them (every page, [`crate::mcp_prompts::MAX_PROMPTS`]
    /// at most), kept for the command menu.
    fn page_prompts<E>(&self, mut request: impl FnMut(&Value) -> Result<Value, E>) -> Result<Vec<Prompt>, E> {
        let mut prompts = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.map_or_else(|| json!({}), |c| json!({"cursor": c}));
            let page = request(&params)?;
            prompts.extend(crate::mcp_prompts::listed(&page, &self.name));
            cursor = page["nextCursor"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cursor.is_none() || prompts.len() >= crate::mcp_prompts::MAX_PROMPTS {
                break;
            }
        }
        prompts.truncate(crate::mcp_prompts::MAX_PROMPTS);
        *self.prompts_seen.lock().expect("mcp prompts lock") = prompts.clone();
        Ok(prompts)
    }

    /// `/COMMAND` of one of its prompts, as sent in `text`: what the user's turn says, or
    /// the answer the user gets instead (how to give the arguments, why it failed). The
    /// server may ask `user` something first (which repository?), as a tool call may.
    fn run_prompt(
        &self,
        prompt: &Prompt,
        text: &str,
        cancel: &Receiver<()>,
        user: Option<&dyn User>,
    ) -> Asked {
        let rest = crate::text::slash_command(text).map_or("", |(_, rest)| rest);
        let given = match crate::mcp_prompts::arguments(prompt, rest) {
            Ok(g) => g,
            Err(usage) => return Asked::Answer(usage),
        };
        log::info!(
            "MCP [{}]: the message runs the prompt {}",
            self.name,
            prompt.remote
        );
        let params = json!({"name": prompt.remote, "arguments": given.args});
        match self.ask("prompts/get", &params, None, cancel, user) {
            Ok(result) => {
                let save = |d: &str, t: &str| self.save_image(d, t);
                let part = |c: &Value| content_text(c, "the prompt", &save);
                Asked::Expanded(crate::mcp_prompts::expansion(
                    text, &self.name, prompt, &given, &result, &part,
                ))
            }
            Err(Outcome::Cancelled) => Asked::Cancelled,
            Err(Outcome::Done(why)) => Asked::Answer(format!(
                "/{} did not run: {}",
                prompt.command,
                why.trim_start_matches("error: ")
            )),
        }
    }

    /// The tools listed again, unless a call holds the connection: then at the next turn.
    fn list_again(&self) {
        let Ok(conn) = self.conn.try_lock() else {
            self.changed.tools.store(true, Ordering::SeqCst);
            return;
        };
        if let Some(c) = conn.as_ref() {
            if let Err(e) = self.list_tools(c) {
                log::warn!("MCP [{}]: listing the changed tools failed: {e}", self.name);
            }
        }
    }
}

fn start_in_background(server: &Arc<Server>) {
    let s = Arc::clone(server);
    *s.failed_at.lock().expect("mcp failed lock") = None;
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    *s.starting.lock().expect("mcp starting lock") = Some(done_rx);
    let spawned = thread::Builder::new()
        .name("mcp-start".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut conn = s.conn.lock().expect("mcp conn lock");
            let _ = s.ensure(&mut conn);
            *s.starting.lock().expect("mcp starting lock") = None;
            drop(done_tx);
        });
    if let Err(e) = spawned {
        log::error!("MCP [{}]: cannot start a thread: {e}", server.name);
    }
}

/// The servers named in `<workspace>/.aegis/mcp.json` (`{"servers": {NAME: {...}}}`).
pub fn servers_file(workspace: &Path) -> BTreeMap<String, ServerConfig> {
    let path = workspace.join(".aegis/mcp.json");
    let Ok(text) = crate::regular::read_to_string(&path, crate::regular::CONFIG_CAP) else {
        return BTreeMap::new();
    };
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        servers: BTreeMap<String, ServerConfig>,
    }
    match serde_json::from_str::<File>(&text) {
        Ok(f) => f.servers,
        Err(e) => {
            log::error!("{}: {e}; its MCP servers are not attached", path.display());
            BTreeMap::new()
        }
    }
}

/// `aegis-mcp-guest` on PATH, if any (attached as server `aegis`).
pub fn guest_server() -> Option<ServerConfig> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("aegis-mcp-guest"))
        .find(|p| p.is_file())
        .map(|p| ServerConfig {
            command: p.to_string_lossy().into_owned(),
            ..ServerConfig::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_results_join_text_and_mark_errors() {
        let saved = |data: &str, _: &str| match data {
            "x" => Ok("mcp/s-0123.png".to_string()),
            _ => Err("not base64".to_string()),
        };
        let r = json!({"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "x", "mimeType": "image/png"},
            {"type": "image", "data": "?", "mimeType": "image/jpeg"}, {"type": "audio", "data": "x"},
            {"type": "resource_link", "uri": "file:///r.txt", "name": "r.txt"}, {"type": "text", "text": "b"}]});
        assert_eq!(
            call_text(&r, &saved),
            "a\n[image/png image from the tool, saved in the workspace as mcp/s-0123.png]\n\
             [image/jpeg image from the tool, not saved: not base64]\n[audio content]\n[resource r.txt: file:///r.txt]\nb"
        );
        let r = json!({"content": [{"type": "text", "text": "no such city"}], "isError": true});
        assert_eq!(call_text(&r, &saved), "error: no such city");
        assert_eq!(
            call_text(&json!({"content": [], "structuredContent": {"t": 1}}), &saved),
            "{\"t\":1}"
        );
    }
}
