//! What an MCP server asks of the agent while it serves a request: the user's answer to a
//! question (`elicitation/create`, [`crate::elicit`]) and the agent's roots (`roots/list`:
//! the workspace). A server of the stateless revision asks in its result
//! (`input_required`) and is asked again with the answers ([`input_responses`]); one of
//! the handshake revisions sends a request of its own while ours is open, which the
//! reader of its connection hands to the waiting caller through the [`Desk`].
//!
//! The agent declares what it answers: roots always; questions only where a user can
//! answer (a chat's reply, not a scheduled task's run), which for a handshake server is
//! its connection's capability, so a question that finds nobody is answered `cancel`.
//! It runs no model for a server (`sampling/createMessage`): not declared, refused.

use std::path::Path;
use std::sync::Mutex;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde_json::{json, Map, Value};

use crate::elicit::{Unanswered, User};

/// `input_required` results answered for one request at most: a server that keeps asking
/// is given up on.
pub const MAX_ROUNDS: usize = 8;

/// The capabilities a request of the stateless revision declares.
pub fn capabilities(can_ask: bool) -> Value {
    match can_ask {
        true => json!({"roots": {}, "elicitation": {"form": {}, "url": {}}}),
        false => json!({"roots": {}}),
    }
}

/// The capabilities `initialize` declares (2025-06-18: forms only).
pub fn handshake_capabilities() -> Value {
    json!({"roots": {}, "elicitation": {}})
}

/// The `roots/list` result: the workspace, the one folder the agent's tools work in.
pub fn roots(workspace: &Path) -> Value {
    json!({"roots": [{"uri": file_uri(workspace), "name": "workspace"}]})
}

/// `path` as a `file://` URI, its bytes outside the unreserved set and `/` escaped.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => uri.push(b as char),
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri
}

/// Why a server's request for input went unanswered.
#[derive(Debug, Clone, PartialEq)]
pub enum NoInput {
    /// The user stopped the reply, or did not answer in time.
    Unanswered(Unanswered),
    /// It asks for what the agent does not give (a model's completion); the text names it.
    Unsupported(String),
}

/// The `inputResponses` for a stateless server's `input_required` `result`, the user
/// answering its questions. Without a user the request declared no questions, so a
/// server that asks one anyway is not answered.
pub fn input_responses(
    server: &str,
    result: &Value,
    workspace: &Path,
    user: Option<&dyn User>,
) -> Result<Value, NoInput> {
    let mut answers = Map::new();
    for (key, request) in result["inputRequests"].as_object().into_iter().flatten() {
        let answer = match (request["method"].as_str().unwrap_or(""), user) {
            ("roots/list", _) => roots(workspace),
            ("elicitation/create", Some(u)) => {
                crate::elicit::put(server, &request["params"], u).map_err(NoInput::Unanswered)?
            }
            (other, _) => {
                let what = match request["params"]["message"].as_str() {
                    Some(m) => format!("{other}: {m}"),
                    None => other.to_string(),
                };
                return Err(NoInput::Unsupported(what));
            }
        };
        answers.insert(key.clone(), answer);
    }
    Ok(Value::Object(answers))
}

/// `params` of a request asked again after `input_required` `result`: with the answers,
/// and the server's state echoed exactly when it gave one.
pub fn retried(params: &Value, result: &Value, answers: Value) -> Value {
    let mut p = match params {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    p.remove("requestState");
    p.remove("inputResponses");
    if answers.as_object().is_some_and(|a| !a.is_empty()) {
        p.insert("inputResponses".into(), answers);
    }
    if let Some(state) = result.get("requestState").filter(|s| s.is_string()) {
        p.insert("requestState".into(), state.clone());
    }
    Value::Object(p)
}

/// A question a handshake server sent (its request's id and params).
#[derive(Debug)]
pub struct Question {
    pub id: Value,
    pub params: Value,
}

/// Where a connection's reader leaves a server's question for the request waiting on
/// that connection (calls to one server take turns, so there is at most one).
#[derive(Debug, Default)]
pub struct Desk(Mutex<Option<Sender<Question>>>);

impl Desk {
    /// Take questions until the returned guard is dropped.
    pub fn open(&self) -> (Open<'_>, Receiver<Question>) {
        let (tx, rx) = bounded(1);
        *self.0.lock().expect("mcp desk lock") = Some(tx);
        (Open(self), rx)
    }

    /// Hand `q` to the waiting request; back when nobody takes it.
    pub fn hand(&self, q: Question) -> Result<(), Question> {
        match &*self.0.lock().expect("mcp desk lock") {
            Some(tx) => tx.try_send(q).map_err(|e| e.into_inner()),
            None => Err(q),
        }
    }
}

/// Questions reach the request while it lives.
pub struct Open<'a>(&'a Desk);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        *self.0 .0.lock().expect("mcp desk lock") = None;
    }
}

/// The answer to a handshake server's request `method` that needs nobody (`ping`, the
/// roots); `None` for a question (the caller's) or one the agent does not answer.
pub fn answered_alone(method: &str, workspace: &Path) -> Option<Value> {
    match method {
        "ping" => Some(json!({})),
        "roots/list" => Some(roots(workspace)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elicit::Heard;

    struct Says(&'static str);
    impl User for Says {
        fn ask(&self, _: &str, _: &[String]) -> Heard {
            Heard::Said(self.0.into())
        }
    }

    #[test]
    fn a_stateless_servers_requests_are_answered_by_key() {
        let result = json!({"resultType": "input_required", "requestState": "s1", "inputRequests": {
            "who": {"method": "elicitation/create", "params": {"message": "Name?",
                "requestedSchema": {"properties": {"name": {"type": "string"}}}}},
            "where": {"method": "roots/list"}}});
        let ws = Path::new("/work space/ü");
        let answers = input_responses("s", &result, ws, Some(&Says("octocat"))).unwrap();
        assert_eq!(
            answers,
            json!({"who": {"action": "accept", "content": {"name": "octocat"}},
                "where": {"roots": [{"uri": "file:///work%20space/%C3%BC", "name": "workspace"}]}})
        );
        assert_eq!(
            input_responses("s", &result, ws, None),
            Err(NoInput::Unsupported("elicitation/create: Name?".into())),
            "not declared without a user"
        );
        let params = json!({"name": "t", "arguments": {}, "requestState": "old"});
        assert_eq!(
            retried(&params, &result, answers.clone()),
            json!({"name": "t", "arguments": {}, "inputResponses": answers, "requestState": "s1"})
        );
        // No state given: none sent, not even the one of an earlier round.
        let stateless = json!({"inputRequests": {}});
        assert_eq!(
            retried(&params, &stateless, json!({})),
            json!({"name": "t", "arguments": {}})
        );
        let sampling = json!({"inputRequests": {"c": {"method": "sampling/createMessage", "params": {}}}});
        assert_eq!(
            input_responses("s", &sampling, ws, None),
            Err(NoInput::Unsupported("sampling/createMessage".into()))
        );
    }

    #[test]
    fn the_desk_hands_questions_only_while_open() {
        let desk = Desk::default();
        assert!(desk
            .hand(Question {
                id: json!(1),
                params: json!({})
            })
            .is_err());
        {
            let (_open, rx) = desk.open();
            desk.hand(Question {
                id: json!(2),
                params: json!({}),
            })
            .unwrap();
            assert_eq!(rx.try_recv().unwrap().id, json!(2));
        }
        assert!(desk
            .hand(Question {
                id: json!(3),
                params: json!({})
            })
            .is_err());
        assert_eq!(answered_alone("ping", Path::new("/w")), Some(json!({})));
        assert_eq!(answered_alone("elicitation/create", Path::new("/w")), None);
    }
}
