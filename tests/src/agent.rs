//! The real `aegis-agent` in harness mode against the harness stand-in: start it, send
//! it messages, read its replies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tether::frame::Session;
use tether::Frame;

use crate::harness::{collect_until_done, post_to_agent, FakeHarness};
use crate::proc::{command, free_port, Proc};

/// The image `fake-mcp`'s `screenshot` tool returns (base64 in an `image` content).
pub const MCP_SCREENSHOT: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR a fake screenshot";

/// How long a reply may take in a test.
pub const T: Duration = Duration::from_secs(20);

/// A running `aegis-agent` in harness mode, with its harness stand-in.
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: String,
    /// Where its egress goes.
    pub harness: FakeHarness,
    /// Its workspace.
    pub workspace: PathBuf,
}

/// Start the agent on `workspace` with extra environment `env`.
pub fn start_agent(workspace: &Path, env: &[(&str, &str)]) -> Agent {
    start_agent_with(workspace, env, FakeHarness::start())
}

/// The same, with a given harness stand-in.
pub fn start_agent_with(workspace: &Path, env: &[(&str, &str)], harness: FakeHarness) -> Agent {
    // A port found free can be taken by a parallel test's server before the agent binds
    // it: then again on another.
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = command("aegis-agent");
        cmd.env("AEGIS_AGENT_ADDR", &addr)
            .env("AEGIS_HARNESS_URL", harness.url())
            .env("AEGIS_WORKSPACE", workspace);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(m) = &harness.host_models {
            *m.agent_addr.lock().unwrap() = Some(addr.clone());
        }
        let proc = Proc::spawn(cmd);
        let listening = format!("agent listening on {addr}");
        if proc.wait_for_any(&[&listening, "Address already in use"], T) == 0 {
            return Agent {
                proc,
                addr,
                harness,
                workspace: workspace.to_path_buf(),
            };
        }
    }
    panic!("no free port for the agent in 5 tries")
}

/// A `user.message` on telegram chat `chat`.
pub fn message(chat: &str, text: &str, msg_id: &str) -> Frame {
    Frame::user_message(Session::new("telegram", chat), text, None).with_msg_id(msg_id)
}

impl Agent {
    /// Deliver `f` to the agent (expects 202).
    pub fn send(&self, f: &Frame) {
        let (status, body) = post_to_agent(&self.addr, &f.to_json());
        assert_eq!(status, 202, "{body}");
    }

    /// The frames of the next reply, through its `assistant.done`.
    pub fn reply(&self) -> Vec<Frame> {
        collect_until_done(self.harness.frames(), 1, T)
    }

    /// Deliver `f`, and the text of the reply's `assistant.done`.
    pub fn answer(&self, f: &Frame) -> String {
        self.send(f);
        done_text(&self.reply())
    }
}

/// The frame types, in order.
pub fn kinds(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.kind.clone()).collect()
}

/// The texts of the frames of one type.
pub fn texts(frames: &[Frame], kind: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.text_payload().unwrap())
        .collect()
}

/// The text of the (last) `assistant.done`.
pub fn done_text(frames: &[Frame]) -> String {
    texts(frames, "assistant.done").pop().expect("a done frame")
}

/// Today's totals in the agent's usage record (`.aegis/usage.json` of `workspace`), by
/// model; `Null` when there is no record.
pub fn usage_today(workspace: &Path) -> serde_json::Value {
    let file: serde_json::Value = std::fs::read(workspace.join(".aegis/usage.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    file[&tether::time::now_rfc3339()[..10]].clone()
}

/// A conversation of telegram chat `chat` in `workspace` in which another model (as
/// upstream's agent writes its lines) called a tool: no thoughts kept with the call.
pub fn write_session_with_tool_calls(workspace: &Path, chat: &str) {
    let lines = [
        serde_json::json!({"role": "user", "content": "list", "ts": "2026-12-06T10:00:00Z"}),
        serde_json::json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "bash",
            "input": {"command": "ls"}}], "ts": "2026-12-06T10:00:01Z"}),
        serde_json::json!({"role": "tool", "content": "a.txt", "tool_call_id": "t1", "ts": "2026-12-06T10:00:02Z"}),
        serde_json::json!({"role": "assistant", "content": "One file.", "ts": "2026-12-06T10:00:03Z"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::create_dir_all(workspace.join("sessions")).unwrap();
    std::fs::write(workspace.join(format!("sessions/telegram_{chat}.jsonl")), text).unwrap();
}
