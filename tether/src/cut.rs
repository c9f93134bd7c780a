//! Stopping an HTTP request in flight from another thread.
//!
//! A thread blocked reading a response cannot be told to stop, and until it reads
//! something it never looks at a flag: a model thinking before its first token, or an MCP
//! server working on a call, keeps that read blocked for minutes after the user gave up.
//! ureq can shut an agent down, which closes every connection the agent holds, the one
//! the read waits on included: the read ends at once, and the server sees the connection
//! close, which is how an LLM API learns to stop generating (and billing) and how MCP's
//! stateless revision cancels a request.
//!
//! Shutting down a shared agent would end every other request it carries, so a request
//! that may be given up borrows an agent of its own from [`Lanes`], under a [`Cut`] its
//! owner fires. A request that ends normally gives its agent back, with the connection
//! still open for the next one (a TLS handshake saved); a cut one takes its agent down.

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use ureq::config::Config;
use ureq::Agent;

/// Agents kept for the next requests: as many as ureq keeps connections per host.
const MAX_IDLE: usize = 3;

/// What a [`Cut`] knows: whether it fired, and the agents its requests run on now.
#[derive(Default)]
struct State {
    fired: bool,
    armed: Vec<(u64, Agent)>,
    next: u64,
}

/// The switch that stops the requests in flight under it (and any later one): cheap to
/// clone, fired from any thread.
#[derive(Clone, Default)]
pub struct Cut(Arc<Mutex<State>>);

impl std::fmt::Debug for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cut").field("fired", &self.fired()).finish()
    }
}

impl Cut {
    /// A switch not fired yet.
    pub fn new() -> Cut {
        Cut::default()
    }

    /// Stop the requests running under this cut now, and refuse any later one.
    pub fn fire(&self) {
        let armed = {
            let mut s = self.state();
            s.fired = true;
            std::mem::take(&mut s.armed)
        };
        for (_, agent) in armed {
            agent.shutdown();
        }
    }

    /// Whether [`Cut::fire`] was called: an error after it is the cut's doing.
    pub fn fired(&self) -> bool {
        self.state().fired
    }

    /// Run a request on `agent` under this cut: firing it shuts `agent` down until the
    /// returned guard drops. `None` when the cut fired already (start nothing).
    pub fn arm(&self, agent: &Agent) -> Option<Armed> {
        let mut s = self.state();
        if s.fired {
            return None;
        }
        let id = s.next;
        s.next += 1;
        s.armed.push((id, agent.clone()));
        Some(Armed {
            cut: self.clone(),
            id,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, consistent whatever a panicking holder did.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An agent armed on a [`Cut`]; dropped, the cut no longer reaches it.
#[must_use = "dropping it disarms the cut at once"]
pub struct Armed {
    cut: Cut,
    id: u64,
}

impl Armed {
    /// Disarm; true when the cut fired meanwhile (the agent is shut down).
    pub fn disarm(self) -> bool {
        let fired = self.cut.fired();
        drop(self);
        fired
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.cut.state().armed.retain(|(id, _)| *id != self.id);
    }
}

/// Agents built from one configuration, lent one request at a time (see the module's
/// documentation). Clones share the agents.
#[derive(Clone)]
pub struct Lanes {
    inner: Arc<LanesInner>,
}

struct LanesInner {
    config: Config,
    idle: Mutex<Vec<Agent>>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").finish_non_exhaustive()
    }
}

impl Lanes {
    /// Lanes whose agents all have `config`.
    pub fn new(config: Config) -> Lanes {
        Lanes {
            inner: Arc::new(LanesInner {
                config,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// An agent for one request under `cut`, or `None` when `cut` has fired.
    pub fn lend(&self, cut: &Cut) -> Option<Lane> {
        let kept = self.inner.idle().pop();
        let agent = kept.unwrap_or_else(|| self.inner.config.new_agent());
        let armed = cut.arm(&agent)?;
        Some(Lane {
            agent: Some(agent),
            armed: Some(armed),
            lanes: Arc::clone(&self.inner),
        })
    }

    /// An agent for a request nothing will cut.
    pub fn any(&self) -> Lane {
        self.lend(&Cut::new()).expect("a new cut has not fired")
    }

    /// Agents waiting for a request (tests).
    pub fn idle(&self) -> usize {
        self.inner.idle().len()
    }
}

impl LanesInner {
    fn idle(&self) -> MutexGuard<'_, Vec<Agent>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An agent lent by [`Lanes`]: given back when dropped, unless its cut fired.
pub struct Lane {
    agent: Option<Agent>,
    armed: Option<Armed>,
    lanes: Arc<LanesInner>,
}

impl Deref for Lane {
    type Target = Agent;

    fn deref(&self) -> &Agent {
        self.agent.as_ref().expect("an agent until dropped")
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let fired = self.armed.take().is_some_and(Armed::disarm);
        let Some(agent) = self.agent.take() else { return };
        // A response dropped halfway never goes back to the agent's pool, so what comes
        // back here holds no connection in an unknown state.
        let mut idle = self.lanes.idle();
        if !fired && idle.len() < MAX_IDLE {
            idle.push(agent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// What the server saw of one connection.
    #[derive(Debug, PartialEq)]
    enum Seen {
        /// The client closed the connection while the server held the response.
        Closed,
        /// The server gave up holding (the client never closed).
        HeldOut,
    }

    /// A server that answers `/quick` with a short body and `/hold` with headers and then
    /// nothing, until the client closes or 20 s pass. It tells the test each connection it
    /// accepts and how each held response ended.
    struct Server {
        url: String,
        accepted: mpsc::Receiver<()>,
        held: mpsc::Receiver<Seen>,
    }

    impl Server {
        /// A held response's client closes, within 10 s.
        fn sees_close(&self) {
            assert_eq!(
                self.held.recv_timeout(Duration::from_secs(10)).unwrap(),
                Seen::Closed
            );
        }
    }

    fn server() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (acc_tx, accepted) = mpsc::channel();
        let (held_tx, held) = mpsc::channel();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if acc_tx.send(()).is_err() {
                    return;
                }
                let held_tx = held_tx.clone();
                thread::spawn(move || serve(conn, &held_tx));
            }
        });
        Server { url, accepted, held }
    }

    fn serve(conn: TcpStream, held: &mpsc::Sender<Seen>) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut writer = conn;
        loop {
            let mut first = String::new();
            if reader.read_line(&mut first).unwrap_or(0) == 0 {
                return;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
            }
            if first.contains("/quick") {
                let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                continue;
            }
            let _ = writer.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let seen = match reader.read(&mut [0u8; 1]) {
                Ok(0) => Seen::Closed,
                _ => Seen::HeldOut,
            };
            let _ = held.send(seen);
            return;
        }
    }

    /// The body of `/quick`, asked on `agent`.
    fn quick(agent: &Agent, url: &str) -> String {
        let resp = agent.get(format!("{url}/quick")).call().unwrap();
        resp.into_body().read_to_string().unwrap()
    }

    fn lanes() -> Lanes {
        Lanes::new(crate::http::agent_config("http://127.0.0.1/").build())
    }

    /// Send `/hold` on a lane under `cut` from another thread; the thread's result says
    /// whether reading the body failed.
    fn hold(lanes: &Lanes, cut: &Cut, url: &str) -> thread::JoinHandle<bool> {
        hold_on(lanes.lend(cut).expect("not fired"), url)
    }

    /// Send `/hold` on `agent` (a lane, or an agent) from another thread; the thread's
    /// result says whether reading the body failed.
    fn hold_on(agent: impl Deref<Target = Agent> + Send + 'static, url: &str) -> thread::JoinHandle<bool> {
        let url = format!("{url}/hold");
        thread::spawn(move || {
            let resp = agent.get(&url).call().expect("headers");
            let mut body = Vec::new();
            resp.into_body().into_reader().read_to_end(&mut body).is_err()
        })
    }

    #[test]
    fn firing_a_cut_ends_a_blocked_read_and_closes_the_connection() {
        let s = server();
        let lanes = lanes();
        let cut = Cut::new();
        let reading = hold(&lanes, &cut, &s.url);
        s.accepted.recv_timeout(Duration::from_secs(10)).unwrap();
        // Without the shutdown the server would hold its 20 s and then see no close.
        thread::sleep(Duration::from_millis(100));
        cut.fire();
        s.sees_close();
        assert!(reading.join().unwrap(), "the read fails instead of waiting");
        assert!(cut.fired());
        assert_eq!(lanes.idle(), 0, "a cut agent is not lent again");
        assert!(lanes.lend(&cut).is_none(), "nothing starts under a fired cut");
    }

    #[test]
    fn a_cut_stops_only_its_own_request() {
        let s = server();
        let lanes = lanes();
        let (mine, other) = (Cut::new(), Cut::new());
        let cut_one = hold(&lanes, &mine, &s.url);
        let left_one = hold(&lanes, &other, &s.url);
        for _ in 0..2 {
            s.accepted.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        mine.fire();
        s.sees_close();
        assert!(cut_one.join().unwrap());
        assert!(
            s.held.recv_timeout(Duration::from_secs(1)).is_err(),
            "the other request is still held"
        );
        other.fire();
        s.sees_close();
        assert!(left_one.join().unwrap());
    }

    #[test]
    fn a_request_that_ends_gives_its_agent_and_connection_back() {
        let s = server();
        let lanes = lanes();
        let cut = Cut::new();
        for _ in 0..3 {
            assert_eq!(quick(&lanes.lend(&cut).unwrap(), &s.url), "ok");
        }
        assert_eq!(lanes.idle(), 1);
        s.accepted.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            s.accepted.try_recv().is_err(),
            "three requests in a row share one connection"
        );
        // A cut fired once its requests are over reaches no agent: the next request on the
        // agent it gave back still works.
        cut.fire();
        assert_eq!(quick(&lanes.any(), &s.url), "ok");
    }

    #[test]
    fn a_cut_stops_every_request_armed_under_it_and_no_disarmed_one() {
        let s = server();
        let cut = Cut::new();
        let agents: Vec<Agent> = (0..3)
            .map(|_| crate::http::agent_config(&s.url).build().new_agent())
            .collect();
        let armed: Vec<Armed> = agents.iter().map(|a| cut.arm(a).unwrap()).collect();
        let mut armed = armed.into_iter();
        // The first is disarmed: its request is over before the cut.
        assert!(!armed.next().unwrap().disarm());
        let held: Vec<_> = agents[1..]
            .iter()
            .map(|a| hold_on(Box::new(a.clone()), &s.url))
            .collect();
        for _ in 0..2 {
            s.accepted.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        cut.fire();
        for _ in 0..2 {
            s.sees_close();
        }
        assert!(held.into_iter().all(|h| h.join().unwrap()));
        assert_eq!(quick(&agents[0], &s.url), "ok", "the disarmed agent still works");
        assert!(armed.all(Armed::disarm), "the others know they were cut");
        assert!(cut.arm(&agents[0]).is_none());
    }

    #[test]
    fn no_more_agents_are_kept_than_a_host_keeps_connections() {
        let lanes = lanes();
        let lent: Vec<Lane> = (0..MAX_IDLE + 2).map(|_| lanes.any()).collect();
        drop(lent);
        assert_eq!(lanes.idle(), MAX_IDLE);
    }
}
