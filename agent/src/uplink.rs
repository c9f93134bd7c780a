//! How the agent asks its host for something besides delivering frames (a keepalive
//! lease, a `host:` model's request, a restart, its instance's details): the AegisVM
//! harness's guest API over HTTP, or JSON-RPC messages written by the direct tether
//! connection.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use serde::Serialize;
use serde_json::value::RawValue;
use tether::rpc::Correlator;
use tether::Message;

/// The way to the host.
#[derive(Debug, Clone)]
pub enum Uplink {
    /// The harness guest API at this base URL.
    Harness(String),
    /// Messages written by the direct tether connection.
    Tether(TetherLink),
}

/// The agent's side of a direct tether, for everything but frames.
#[derive(Debug, Clone)]
pub struct TetherLink {
    /// Messages for the connection thread to write.
    pub out: Sender<Message>,
    /// Requests waiting for the host's response (the reader completes them).
    pub calls: Arc<Correlator>,
}

impl TetherLink {
    /// A link writing to `out`.
    pub fn new(out: Sender<Message>) -> TetherLink {
        TetherLink {
            out,
            calls: Arc::new(Correlator::new()),
        }
    }

    /// Send notification `method`.
    pub fn notify<T: Serialize + ?Sized>(&self, method: &str, params: &T) -> Result<(), String> {
        self.out
            .send(Message::notification(method, params))
            .map_err(|_| "the tether connection is closed".to_string())
    }

    /// Ask the host `method` and wait at most `timeout` for its result.
    pub fn call<T: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &T,
        timeout: Duration,
    ) -> Result<Box<RawValue>, String> {
        let (msg, answer) = self.calls.start(method, params);
        let id = match &msg {
            Message::Request { id, .. } => id.clone(),
            _ => serde_json::Value::Null,
        };
        let outcome = match self.out.send(msg) {
            Ok(()) => answer.recv_timeout(timeout).ok(),
            Err(_) => {
                self.calls.abandon(&id);
                return Err("the tether connection is closed".to_string());
            }
        };
        match outcome {
            Some(Ok(result)) => Ok(result),
            Some(Err(e)) if e.code == -32601 => Err(format!("the host does not know {method}")),
            Some(Err(e)) => Err(e.message),
            None => {
                self.calls.abandon(&id);
                Err(format!("the host did not answer {method} within {timeout:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;
    use tether::rpc::RpcError;

    #[test]
    fn a_call_gets_its_answer_and_a_given_up_call_leaves_nothing_waiting() {
        let (tx, rx) = unbounded();
        let link = TetherLink::new(tx);
        // The host answers the request it reads.
        let calls = Arc::clone(&link.calls);
        let host = std::thread::spawn(move || {
            let Ok(Message::Request { id, method, .. }) = rx.recv() else {
                panic!("a request")
            };
            assert_eq!(method, "guest.self_info");
            let result = RawValue::from_string(r#"{"id":"i-1"}"#.into()).unwrap();
            assert!(calls.complete(&id, Ok(result)));
            let Ok(Message::Request { id, .. }) = rx.recv() else {
                panic!("a request")
            };
            let unknown = RpcError {
                code: -32601,
                message: "method not found".into(),
                data: None,
            };
            assert!(calls.complete(&id, Err(unknown)));
            rx.recv().ok() // read, never answered
        });
        let t = Duration::from_secs(5);
        assert_eq!(
            link.call("guest.self_info", &(), t).unwrap().get(),
            r#"{"id":"i-1"}"#
        );
        assert_eq!(
            link.call("guest.other", &(), t).unwrap_err(),
            "the host does not know guest.other"
        );
        let e = link
            .call("guest.slow", &(), Duration::from_millis(50))
            .unwrap_err();
        assert!(e.starts_with("the host did not answer guest.slow"), "{e}");
        assert_eq!(link.calls.pending(), 0, "the timed-out call was forgotten");
        host.join().unwrap();
        // The connection thread is gone: refused at once, nothing left waiting.
        assert_eq!(
            link.call("guest.self_info", &(), t).unwrap_err(),
            "the tether connection is closed"
        );
        assert_eq!(link.calls.pending(), 0);
    }
}
