//! The tether frame (PROTOCOL.md §1).
//!
//! A frame is one JSON object. This module owns three duties:
//! 1. decoding and encoding frames so that unknown fields and unknown types pass through
//!    unchanged (the payload is kept as raw JSON and parsed only when someone asks);
//! 2. typed views of the payloads this kit understands;
//! 3. validation with errors that name the problem, so a host can answer 400 with a reason.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The only protocol version in use.
pub const VERSION: u64 = 1;

/// Frame types this kit produces or consumes.
pub mod kind {
    /// User input, host → guest.
    pub const USER_MESSAGE: &str = "user.message";
    /// Cancel the in-flight reply of a session, host → guest.
    pub const CONTROL_CANCEL: &str = "control.cancel";
    /// Next chunk of a reply, guest → host.
    pub const ASSISTANT_DELTA: &str = "assistant.delta";
    /// The complete reply, guest → host.
    pub const ASSISTANT_DONE: &str = "assistant.done";
    /// Next chunk of a reasoning model's thoughts, guest → host (never part of the reply).
    pub const REASONING_DELTA: &str = "reasoning.delta";
    /// The thoughts are over and the reply (or a tool call) follows, guest → host.
    pub const REASONING_DONE: &str = "reasoning.done";
    /// Thinking / tool / idle indicator, guest → host.
    pub const STATUS_PRESENCE: &str = "status.presence";
    /// Acknowledges an ingress frame, guest → host.
    pub const EVENT_ACK: &str = "event.ack";
    /// A reply that failed, guest → host.
    pub const ERROR: &str = "error";
    /// [ours] The commands the agent answers besides the gateway's (its skills, its MCP
    /// servers' prompts), for the chat's command menu, guest → host.
    pub const STATUS_COMMANDS: &str = "status.commands";
}

/// Which way a frame flows; decided by the type prefix alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host → guest: `user.*` and `control.*`.
    Ingress,
    /// Guest → host: everything else.
    Egress,
}

impl Direction {
    /// The direction of a frame type. Unknown types follow the same prefix rule.
    pub fn of(frame_type: &str) -> Direction {
        if frame_type.starts_with("user.") || frame_type.starts_with("control.") {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }
}

/// One conversation: a channel (`telegram`) and an id within it (the chat id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    /// Messaging channel, e.g. `telegram`.
    pub channel: String,
    /// Conversation id within the channel.
    pub id: String,
    /// Fields a newer peer added; kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Session {
    /// A session with no extra fields.
    pub fn new(channel: impl Into<String>, id: impl Into<String>) -> Session {
        Session {
            channel: channel.into(),
            id: id.into(),
            extra: Map::new(),
        }
    }
}

/// A tether frame. Field order on the wire follows PROTOCOL.md; unknown top-level fields
/// are kept in `extra` and the payload is kept verbatim.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Protocol version; decoding keeps whatever the peer sent, `validate` insists on 1.
    pub v: u64,
    /// Frame type such as `user.message`; unknown types are carried.
    pub kind: String,
    /// RFC 3339 UTC timestamp with milliseconds, if the sender stamped one.
    pub ts: Option<String>,
    /// The conversation this frame belongs to.
    pub session: Option<Session>,
    /// Sender-chosen id; acks and cancels refer to it.
    pub msg_id: Option<String>,
    /// [ours] Per-instance egress sequence number stamped by the host.
    pub seq: Option<u64>,
    /// The payload exactly as received (or as built), parsed lazily by typed views.
    pub payload: Option<Box<RawValue>>,
    /// Top-level fields this kit does not know; written back unchanged.
    pub extra: Map<String, Value>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.v == other.v
            && self.kind == other.kind
            && self.ts == other.ts
            && self.session == other.session
            && self.msg_id == other.msg_id
            && self.seq == other.seq
            && self.payload.as_ref().map(|p| p.get()) == other.payload.as_ref().map(|p| p.get())
            && self.extra == other.extra
    }
}

/// Why a frame was refused.
#[derive(Debug)]
pub enum FrameError {
    /// Not JSON, not an object, or a field of the wrong JSON type.
    Json(serde_json::Error),
    /// `v` is not 1.
    WrongVersion(u64),
    /// `type` is absent or empty.
    MissingType,
    /// `session` is present but its channel or id is empty.
    EmptySession,
    /// A frame type that needs a session has none.
    MissingSession(String),
    /// The payload of a known type does not have the required shape.
    BadPayload {
        /// The frame type whose payload is wrong.
        kind: String,
        /// What is wrong, e.g. "text must be a non-empty string".
        reason: String,
    },
    /// Nested deeper than [`crate::depth::MAX_NESTING`] (this many levels).
    TooDeep(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Json(e) => write!(f, "invalid frame JSON: {e}"),
            FrameError::WrongVersion(v) => write!(f, "unsupported frame version {v} (expected 1)"),
            FrameError::MissingType => write!(f, "frame has no type"),
            FrameError::EmptySession => write!(f, "session channel and id must be non-empty"),
            FrameError::MissingSession(k) => write!(f, "{k} frame has no session"),
            FrameError::BadPayload { kind, reason } => write!(f, "{kind} payload: {reason}"),
            FrameError::TooDeep(d) => write!(
                f,
                "frame nested {d} levels deep, more than the {} read",
                crate::depth::MAX_NESTING
            ),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> FrameError {
        // The visitor reports a missing `type` as a custom error; give it its own variant.
        if e.to_string().starts_with("missing field `type`") {
            FrameError::MissingType
        } else {
            FrameError::Json(e)
        }
    }
}

/// `user.message` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserMessage {
    /// What the user wrote; never empty.
    pub text: String,
    /// Who wrote it, for group chats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Images sent with the message (a photo and its caption).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// [ours] Recordings sent with it (a voice message): the agent writes down what is
    /// said. `text` then names the recording, for an agent that does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio: Vec<Audio>,
    /// [ours] On channel `cron`: the chat the scheduled task belongs to; the agent sends
    /// its reply frames there (the run's conversation stays in the cron session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Session>,
}

/// An image in a `user.message` or an `assistant.done` (upstream's `images` entries).
/// Upstream names a file of the guest's blob store (`blob`); a host that cannot write
/// into the guest carries the bytes inline instead (`data`, base64) **[ours]**.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `image/jpeg`, `image/png`, ...
    pub media_type: String,
    /// A file of the workspace blob store (`.aegis/blobs/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// [ours] The bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// [ours] A file an `assistant.done` sends the user as a document: a report, an archive,
/// code. Only its name travels; the bytes stay in the workspace blob store, where the
/// host's gateway reads them (files may be far larger than a tether line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    /// The name the user sees (`report.pdf`).
    pub name: String,
    /// A file of the workspace blob store (`.aegis/blobs/NAME`).
    pub blob: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// [ours] A recording in a `user.message`: a voice message, an audio file, the sound of a
/// video message. The bytes travel inline, as an image's do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Audio {
    /// `audio/ogg` (Telegram's voice messages: Opus), `audio/mpeg`, `video/mp4`, ...
    #[serde(default)]
    pub media_type: String,
    /// The bytes, base64 (a recording without them is reported, not fatal to the message).
    #[serde(default)]
    pub data: String,
    /// A recording too large for a tether line, saved into the workspace instead: its path
    /// there (`inbox/voice-12.ogg`); `data` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Length in seconds, when the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

/// `assistant.done` payload with images (the plain form is [`Text`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// The whole reply.
    pub text: String,
    /// Images that go with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// [ours] Files that go with it, after the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRef>,
    /// [ours] Voice messages (Ogg Opus) that go with it, after the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voice: Vec<FileRef>,
    /// [ours] The reply ends with a question: answers the user may pick instead of typing
    /// one, each coming back as the user's message with exactly this text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// [ours] Whose pick of `answers` counts (the user id of the message the reply
    /// answers); absent: anyone's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answerer: Option<String>,
}

/// Identity of the person behind a `user.message`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Channel-specific user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Handle, e.g. Telegram username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl User {
    /// The name the model sees: display name, else username.
    pub fn display(&self) -> Option<&str> {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.username.as_deref().filter(|n| !n.is_empty()))
    }
}

/// `assistant.delta` and `assistant.done` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    /// A chunk (delta) or the whole reply (done).
    pub text: String,
}

/// [ours] `status.commands` payload: every command the agent answers of its own, in the
/// order to show them. Sent when the list changes (and after a start), on the session of
/// the message being answered; the whole list each time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    pub commands: Vec<Command>,
}

/// One command: its word without `/` (as Telegram writes commands: `csv_report`) and what
/// it does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub command: String,
    #[serde(default)]
    pub description: String,
}

/// `status.presence` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// `thinking`, `tool: NAME` or `idle`.
    pub state: String,
    /// [ours] The explicit restart signal: `true` says the reply's text so far is void
    /// and is now exactly `text` (a new attempt at the message, or a model stream retried
    /// after it broke); later deltas continue from there. `false` says the text stands
    /// (a tool runs mid-reply). Absent: an old agent; renderers leave the text alone and
    /// rely on `assistant.done`, which always carries the whole reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<bool>,
    /// [ours] With `restart: true`, the text that stands (default empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Presence {
    /// A presence that leaves the reply's text as it is.
    pub fn state(state: impl Into<String>) -> Presence {
        Presence {
            state: state.into(),
            restart: Some(false),
            text: None,
        }
    }

    /// `thinking`, with the reply's text starting over from `text`.
    pub fn restart(text: impl Into<String>) -> Presence {
        Presence {
            state: "thinking".into(),
            restart: Some(true),
            text: Some(text.into()),
        }
    }
}

/// `event.ack` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// [ours] `msg_id` of the acknowledged ingress frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
}

/// `control.cancel` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// [ours] the message whose reply to cancel; absent means whatever is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
}

/// `error` payload [ours].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// Machine-readable code, e.g. `llm_unavailable`, `cancelled`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Frame {
    /// A new version-1 frame of `kind`, stamped with the current time.
    pub fn new(kind: &str, session: Option<Session>) -> Frame {
        Frame {
            v: VERSION,
            kind: kind.to_string(),
            ts: Some(crate::time::now_rfc3339()),
            session,
            msg_id: None,
            seq: None,
            payload: None,
            extra: Map::new(),
        }
    }

    /// Builder: set the payload from any serialisable value.
    pub fn with_payload<T: Serialize>(mut self, payload: &T) -> Frame {
        // Serialising our own payload structs into a string cannot fail.
        let raw = serde_json::value::to_raw_value(payload).expect("payload serialises");
        self.payload = Some(raw);
        self
    }

    /// Builder: set `msg_id`.
    pub fn with_msg_id(mut self, id: impl Into<String>) -> Frame {
        self.msg_id = Some(id.into());
        self
    }

    /// A `user.message` from `text`.
    pub fn user_message(session: Session, text: &str, user: Option<User>) -> Frame {
        Frame::user_message_with_images(session, text, user, Vec::new())
    }

    /// A `user.message` with images.
    pub fn user_message_with_images(
        session: Session,
        text: &str,
        user: Option<User>,
        images: Vec<Image>,
    ) -> Frame {
        Frame::new(kind::USER_MESSAGE, Some(session)).with_payload(&UserMessage {
            text: text.to_string(),
            user,
            images,
            ..UserMessage::default()
        })
    }

    /// An `assistant.delta` or `assistant.done` carrying `text`.
    pub fn text(kind: &str, session: Session, text: &str) -> Frame {
        Frame::new(kind, Some(session)).with_payload(&Text {
            text: text.to_string(),
        })
    }

    /// Which way the frame flows.
    pub fn direction(&self) -> Direction {
        Direction::of(&self.kind)
    }

    /// Decode and validate one frame from JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Frame, FrameError> {
        crate::depth::check(bytes).map_err(FrameError::TooDeep)?;
        Frame::parse_measured(bytes)
    }

    /// [`Frame::parse`] for bytes already held to the nesting limit (a frame inside a
    /// JSON-RPC message that [`crate::rpc::Message::decode`] measured whole).
    pub(crate) fn parse_measured(bytes: &[u8]) -> Result<Frame, FrameError> {
        let frame: Frame = serde_json::from_slice(bytes)?;
        frame.validate()?;
        Ok(frame)
    }

    /// Encode the frame as compact JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        // A Frame holds only strings, numbers, maps and raw JSON: encoding cannot fail.
        serde_json::to_string(self).expect("frame serialises")
    }

    /// Parse the payload as `T`; a missing payload is parsed as `{}`.
    pub fn payload_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        let raw = self.payload.as_ref().map(|p| p.get()).unwrap_or("{}");
        serde_json::from_str(raw).map_err(|e| FrameError::BadPayload {
            kind: self.kind.clone(),
            reason: e.to_string(),
        })
    }

    /// The `text` of a delta/done/user message, if the payload has one.
    pub fn text_payload(&self) -> Option<String> {
        self.payload_as::<Text>().ok().map(|t| t.text)
    }

    /// Check the rules of PROTOCOL.md §1 for this frame.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.v != VERSION {
            return Err(FrameError::WrongVersion(self.v));
        }
        if self.kind.is_empty() {
            return Err(FrameError::MissingType);
        }
        if let Some(s) = &self.session {
            if s.channel.is_empty() || s.id.is_empty() {
                return Err(FrameError::EmptySession);
            }
        }
        let bad = |reason: &str| FrameError::BadPayload {
            kind: self.kind.clone(),
            reason: reason.to_string(),
        };
        match self.kind.as_str() {
            kind::USER_MESSAGE => {
                if self.session.is_none() {
                    return Err(FrameError::MissingSession(self.kind.clone()));
                }
                let m: UserMessage = self
                    .payload_as()
                    .map_err(|_| bad("text must be a non-empty string"))?;
                if m.text.is_empty() {
                    return Err(bad("text must be a non-empty string"));
                }
            }
            kind::CONTROL_CANCEL => {
                if self.session.is_none() {
                    return Err(FrameError::MissingSession(self.kind.clone()));
                }
                self.payload_as::<Cancel>()
                    .map_err(|_| bad("msg_id must be a string"))?;
            }
            kind::ASSISTANT_DELTA | kind::ASSISTANT_DONE | kind::REASONING_DELTA => {
                self.payload_as::<Text>()
                    .map_err(|_| bad("text must be a string"))?;
            }
            kind::STATUS_PRESENCE => {
                self.payload_as::<Presence>()
                    .map_err(|_| bad("state must be a string"))?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("v", &self.v)?;
        map.serialize_entry("type", &self.kind)?;
        if let Some(ts) = &self.ts {
            map.serialize_entry("ts", ts)?;
        }
        if let Some(s) = &self.session {
            map.serialize_entry("session", s)?;
        }
        if let Some(id) = &self.msg_id {
            map.serialize_entry("msg_id", id)?;
        }
        if let Some(seq) = self.seq {
            map.serialize_entry("seq", &seq)?;
        }
        if let Some(p) = &self.payload {
            map.serialize_entry("payload", p)?;
        }
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Frame, D::Error> {
        deserializer.deserialize_map(FrameVisitor)
    }
}

/// Hand-written so the payload can stay raw JSON (serde's `flatten` would buffer it and
/// cannot hold a `RawValue`) while unknown fields are still collected.
struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tether frame object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let mut v = None;
        let mut kind: Option<String> = None;
        let mut ts = None;
        let mut session = None;
        let mut msg_id = None;
        let mut seq = None;
        let mut payload: Option<Box<RawValue>> = None;
        let mut extra = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "v" => v = Some(map.next_value::<u64>()?),
                "type" => kind = Some(map.next_value()?),
                "ts" => ts = map.next_value()?,
                "session" => session = map.next_value()?,
                "msg_id" => msg_id = map.next_value()?,
                "seq" => seq = map.next_value()?,
                "payload" => {
                    let raw: Box<RawValue> = map.next_value()?;
                    // A literal `null` payload means "no payload".
                    payload = (raw.get() != "null").then_some(raw);
                }
                _ => {
                    let value: Value = map.next_value()?;
                    extra.insert(key, value);
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        Ok(Frame {
            // An absent `v` is read as 1: upstream peers always send it, and a frame
            // that omits it is otherwise well-formed.
            v: v.unwrap_or(VERSION),
            kind,
            ts,
            session,
            msg_id,
            seq,
            payload,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"v":1,"type":"user.message","ts":"2026-02-22T00:00:00.000Z","session":{"channel":"telegram","id":"123456"},"msg_id":"m1","seq":1,"payload":{"text":"Hello!","user":{"id":"123","username":"johndoe","name":"John"}}}"#;

    #[test]
    fn a_frame_nested_too_deep_is_refused_before_it_is_read() {
        let deep = SAMPLE.replace(
            r#""text":"Hello!""#,
            &format!(r#""text":"Hello!","x":{}1{}"#, "[".repeat(62), "]".repeat(62)),
        );
        assert!(Frame::parse(deep.as_bytes()).is_ok(), "64 levels are read...");
        let deeper = deep.replacen('[', "[[", 1).replacen(']', "]]", 1);
        let e = Frame::parse(deeper.as_bytes()).unwrap_err();
        assert!(matches!(e, FrameError::TooDeep(65)), "...65 are not");
        assert_eq!(
            e.to_string(),
            "frame nested 65 levels deep, more than the 64 read"
        );
    }

    #[test]
    fn sample_frame_round_trips_byte_for_byte() {
        let f = Frame::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(f.kind, "user.message");
        assert_eq!(f.direction(), Direction::Ingress);
        let m: UserMessage = f.payload_as().unwrap();
        assert_eq!(m.user.unwrap().display(), Some("John"));
        assert_eq!(f.to_json(), SAMPLE);
    }

    #[test]
    fn unknown_type_and_fields_are_carried() {
        let src = r#"{"v":1,"type":"tool.call","future":{"a":[1,2]},"session":{"channel":"x","id":"1","thread":"t"},"payload":{"anything":true}}"#;
        let f = Frame::parse(src.as_bytes()).unwrap();
        assert_eq!(f.direction(), Direction::Egress);
        let json = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(json(&f.to_json()), json(src));
    }

    #[test]
    fn direction_follows_prefix() {
        assert_eq!(Direction::of("control.cancel"), Direction::Ingress);
        assert_eq!(Direction::of("user.edit"), Direction::Ingress);
        assert_eq!(Direction::of("assistant.delta"), Direction::Egress);
        assert_eq!(Direction::of("error"), Direction::Egress);
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let cases = [
            (r#"{"v":1}"#, "frame has no type"),
            (
                r#"{"v":2,"type":"assistant.done","payload":{"text":"x"}}"#,
                "unsupported frame version 2",
            ),
            (
                r#"{"v":1,"type":"user.message","session":{"channel":"","id":"1"},"payload":{"text":"x"}}"#,
                "session channel and id must be non-empty",
            ),
            (
                r#"{"v":1,"type":"user.message","session":{"channel":"t","id":"1"},"payload":{"text":5}}"#,
                "text must be a non-empty string",
            ),
            (
                r#"{"v":1,"type":"user.message","session":{"channel":"t","id":"1"},"payload":{"text":""}}"#,
                "text must be a non-empty string",
            ),
            (
                r#"{"v":1,"type":"user.message","payload":{"text":"hi"}}"#,
                "user.message frame has no session",
            ),
            (r#"[1,2]"#, "invalid frame JSON"),
            (r#"{"v":1,"type":"user.message""#, "invalid frame JSON"),
            (r#"{"v":"1","type":"x"}"#, "invalid frame JSON"),
        ];
        for (src, want) in cases {
            let err = Frame::parse(src.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{src}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_a_json_error() {
        let err = Frame::parse(b"{\"v\":1,\"type\":\"a\xff\"}").unwrap_err();
        assert!(matches!(err, FrameError::Json(_)), "{err:?}");
    }

    #[test]
    fn builders_produce_valid_frames() {
        let f = Frame::user_message(Session::new("test", "1"), "hi", None).with_msg_id("m");
        f.validate().unwrap();
        let back = Frame::parse(f.to_json().as_bytes()).unwrap();
        assert_eq!(back, f);
        let ts = f.ts.unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    }
}
