//! `host:` models (`host:ollama/NAME`): the real `aegis-agent` reaches a model server on
//! the host through a harness of current AegisVM (stand-in: `aegis_e2e::host_llm`), never
//! over its own network.

use std::time::Duration;

use aegis_e2e::agent::{done_text, kinds, message, start_agent_with, texts, T};
use aegis_e2e::harness::{collect_until_done, FakeHarness, FakeTetherHost};
use aegis_e2e::host_llm::{HostModels, Order};
use aegis_e2e::llm::{
    last_user_text, openai_sse, openai_tool_sse, reasoning_sse, tool_results, unstamped, FakeLlm, Reply,
};
use aegis_e2e::proc::{command, temp_dir, Proc, TempDir};

/// A harness whose host has one model server, `ollama`, at `llm`.
fn harness(llm: &FakeLlm, order: Order) -> FakeHarness {
    FakeHarness::with_host_models(HostModels::new(&[("ollama", llm.url())], order))
}

fn requests(h: &FakeHarness) -> Vec<serde_json::Value> {
    h.host_models.as_ref().unwrap().requests.lock().unwrap().clone()
}

#[test]
fn a_host_model_streams_through_the_harness_and_runs_tools() {
    let llm = FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse(
            "Checking.",
            &[("call_1", "bash", r#"{"command": "echo from-the-vm"}"#)],
            3,
        )),
        Reply::sse(openai_sse(&["It printed ", "from-the-vm."])),
        // Ollama's thinking models, as upstream's agent reads them through the harness.
        Reply::sse(reasoning_sse("reasoning", &["Nothing", " to run."], &["Done."])),
    ]);
    let ws = temp_dir("host-llm");
    // A key and a base URL in the environment do not matter: the model names the route,
    // and no key goes to the host.
    let a = start_agent_with(
        &ws,
        &[
            ("AEGIS_MODEL", "host:ollama/qwen3.5:9b"),
            ("OPENAI_API_KEY", "sk-must-not-travel"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ],
        harness(&llm, Order::AsSent),
    );
    assert!(
        a.proc
            .log()
            .contains("LLM provider: host:ollama (model qwen3.5:9b, through the host)"),
        "{}",
        a.proc.log()
    );
    a.send(&message("1", "run it", "m1"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "Checking.\n\nIt printed from-the-vm.");
    assert_eq!(
        texts(&frames, "assistant.delta").concat(),
        "Checking.\n\nIt printed from-the-vm."
    );
    // Two rounds, each one llm.chat in the shape aegisd reads.
    let chats = requests(&a.harness);
    assert_eq!(chats.len(), 2);
    for c in &chats {
        assert_eq!(c["provider"], "ollama");
        assert_eq!(c["model"], "qwen3.5:9b");
        assert!(c["req_id"].as_str().unwrap().starts_with("llm-"));
        assert_eq!(c["body"]["model"], "qwen3.5:9b");
        assert_eq!(c["body"]["stream"], true);
    }
    assert_ne!(chats[0]["req_id"], chats[1]["req_id"]);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("authorization"), None, "no key goes to the host");
    assert_eq!(last_user_text(&reqs[0]), "run it");
    assert_eq!(
        tool_results(&reqs[1]),
        vec![("call_1".to_string(), "from-the-vm\nexit status: 0".to_string())]
    );

    a.send(&message("1", "anything else?", "m2"));
    let frames = a.reply();
    assert_eq!(texts(&frames, "reasoning.delta").concat(), "Nothing to run.");
    assert_eq!(
        kinds(&frames)[4..],
        ["reasoning.done", "assistant.delta", "assistant.done"]
    );
    assert_eq!(done_text(&frames), "Done.");
}

#[test]
fn the_last_words_arrive_when_done_overtakes_them() {
    // The AegisVM harness forwards each frame on a goroutine of its own.
    // Without the finish chunk, the overtaken delta is the one with the last words.
    let mut pieces = openai_sse(&["one ", "two ", "three"]);
    pieces.remove(pieces.len() - 2);
    let llm = FakeLlm::scripted(vec![Reply::sse(pieces)]);
    let ws = temp_dir("host-llm-order");
    let a = start_agent_with(
        &ws,
        &[("AEGIS_MODEL", "host:ollama/m")],
        harness(&llm, Order::DoneOvertakesLastDelta),
    );
    a.send(&message("1", "count", "m1"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "one two three");
    assert_eq!(texts(&frames, "assistant.delta").concat(), "one two three");
}

#[test]
fn host_errors_reach_the_user_once_with_their_reason() {
    // A server name the host does not know: refused at once, not retried.
    let llm = FakeLlm::echo_openai();
    let ws = temp_dir("host-llm-unknown");
    let a = start_agent_with(
        &ws,
        &[("AEGIS_MODEL", "host:olama/m"), ("AEGIS_LLM_RETRIES", "3")],
        harness(&llm, Order::AsSent),
    );
    a.send(&message("1", "hi", "m1"));
    let frames = a.reply();
    assert_eq!(
        kinds(&frames).iter().filter(|k| *k == "assistant.done").count(),
        1
    );
    let done = done_text(&frames);
    assert!(
        done.contains(r#"the host has no model server named "olama""#),
        "{done}"
    );
    assert_eq!(requests(&a.harness).len(), 1);
    assert!(llm.requests().is_empty());

    // The server refuses the model (Ollama's 404): the user reads the server's words.
    let missing =
        r#"{"error":{"message":"model \"qwen9\" not found, try pulling it first","type":"api_error"}}"#;
    let llm = FakeLlm::scripted(vec![Reply::Status {
        code: 404,
        headers: vec![],
        body: missing.into(),
    }]);
    let ws = temp_dir("host-llm-404");
    let a = start_agent_with(
        &ws,
        &[("AEGIS_MODEL", "host:ollama/qwen9"), ("AEGIS_LLM_RETRIES", "3")],
        harness(&llm, Order::AsSent),
    );
    a.send(&message("1", "hi", "m1"));
    let done = done_text(&a.reply());
    assert!(
        done.contains(
            r#"refused the request (host:ollama: HTTP 404: model "qwen9" not found, try pulling it first)"#
        ),
        "{done}"
    );
    assert_eq!(llm.requests().len(), 1, "a 404 is not retried");

    // A busy server (503) is retried, and the retry's reply is the one the user sees.
    let llm = FakeLlm::scripted(vec![Reply::server_error(), Reply::sse(openai_sse(&["ok"]))]);
    let ws = temp_dir("host-llm-503");
    let a = start_agent_with(
        &ws,
        &[("AEGIS_MODEL", "host:ollama/m"), ("AEGIS_LLM_RETRIES", "3")],
        harness(&llm, Order::AsSent),
    );
    a.send(&message("1", "hi", "m1"));
    assert_eq!(done_text(&a.reply()), "ok");
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn an_older_harness_without_host_models_gets_a_clear_answer() {
    let ws = temp_dir("host-llm-old");
    let a = start_agent_with(
        &ws,
        &[("AEGIS_MODEL", "host:ollama/m"), ("AEGIS_LLM_RETRIES", "3")],
        FakeHarness::start(),
    );
    a.send(&message("1", "hi", "m1"));
    let done = done_text(&a.reply());
    assert!(done.contains("host:ollama needs a newer AegisVM"), "{done}");
}

#[test]
fn a_stream_that_stops_times_out_instead_of_hanging() {
    let llm = FakeLlm::scripted(vec![Reply::stalls_after("Hal")]);
    let ws = temp_dir("host-llm-stall");
    let a = start_agent_with(
        &ws,
        &[
            ("AEGIS_MODEL", "host:ollama/m"),
            ("AEGIS_LLM_RETRIES", "1"),
            ("AEGIS_LLM_READ_TIMEOUT", "1"),
        ],
        harness(&llm, Order::AsSent),
    );
    a.send(&message("1", "hi", "m1"));
    let frames = a.reply();
    assert_eq!(texts(&frames, "assistant.delta").concat(), "Hal");
    assert!(
        done_text(&frames).contains("stopped responding"),
        "{}",
        done_text(&frames)
    );
}

#[test]
fn a_malformed_host_model_is_refused_at_start() {
    for bad in ["host:ollama", "host:/m", "host:Ollama/m", "host:a b/m"] {
        let ws = temp_dir("host-llm-bad");
        let out = command("aegis-agent")
            .env("AEGIS_WORKSPACE", ws.path())
            .env("AEGIS_MODEL", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("expected host:SERVER/MODEL"), "{bad}: {err}");
    }
}

/// The next `llm.chat` the agent sent on its direct tether: (req_id, params).
fn next_chat(host: &FakeTetherHost) -> (String, serde_json::Value) {
    // One deadline for all: keepalive renewals arrive in between.
    let deadline = std::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let m = host.responses().recv_timeout(left).expect("an llm.chat in time");
        if let tether::Message::Notification { method, params } = m {
            if method == "llm.chat" {
                let p: serde_json::Value = serde_json::from_str(params.unwrap().get()).unwrap();
                return (p["req_id"].as_str().unwrap().to_string(), p);
            }
        }
    }
}

fn llm_frame(host: &FakeTetherHost, frame: serde_json::Value) {
    host.send_line(&tether::Message::notification("llm.frame", &frame).encode());
}

fn chunk(text: &str) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
}

/// An agent with the `host:ollama/m` model on a direct tether to a host stand-in, in
/// a workspace of its own (named `name`), once connected.
fn on_a_direct_tether(name: &str) -> (FakeTetherHost, Proc, TempDir) {
    let dir = temp_dir(name);
    let sock = dir.join("tether.sock");
    let host = FakeTetherHost::bind(&sock);
    let mut cmd = command("aegis-agent");
    cmd.env("AEGIS_TETHER", format!("unix:{}", sock.display()))
        .env("AEGIS_WORKSPACE", dir.path())
        .env("AEGIS_MODEL", "host:ollama/m");
    let agent = Proc::spawn(cmd);
    host.wait_connected(1, T);
    (host, agent, dir)
}

#[test]
fn on_a_direct_tether_a_stream_lost_with_its_connection_is_asked_again_and_answered_once() {
    let (host, _agent, _dir) = on_a_direct_tether("host-llm-direct");
    host.send(&message("1", "hi", "m-1"));
    let (first, params) = next_chat(&host);
    assert_eq!(
        (params["provider"].as_str(), params["model"].as_str()),
        (Some("ollama"), Some("m"))
    );
    assert_eq!(
        unstamped(params["body"]["messages"][1]["content"].as_str().unwrap()),
        "hi"
    );
    llm_frame(
        &host,
        serde_json::json!({"type": "llm.delta", "req_id": first, "data": chunk("Hel")}),
    );
    // The host goes away mid-stream: its stream is gone with it.
    host.drop_connection();
    host.wait_connected(2, T);
    let (second, _) = next_chat(&host);
    assert_ne!(first, second);
    // A straggler of the lost stream must not reach the user.
    llm_frame(
        &host,
        serde_json::json!({"type": "llm.delta", "req_id": first, "data": chunk("STALE")}),
    );
    llm_frame(
        &host,
        serde_json::json!({"type": "llm.delta", "req_id": second, "data": chunk("Hello")}),
    );
    llm_frame(&host, serde_json::json!({"type": "llm.done", "req_id": second}));
    let frames = collect_until_done(host.frames(), 1, T);
    assert_eq!(done_text(&frames), "Hello");
    assert!(
        frames.iter().all(|f| !f.to_json().contains("STALE")),
        "{frames:#?}"
    );
    assert!(
        host.frames().recv_timeout(Duration::from_millis(300)).is_err(),
        "one reply only"
    );
}

#[test]
fn a_cancel_tells_the_host_at_once_even_while_no_chunk_comes() {
    // The host's model may think for minutes before its first chunk: the agent must not
    // wait for one to notice that the user stopped the reply.
    let (host, _agent, _dir) = on_a_direct_tether("host-llm-cancel");
    host.send(&message("1", "think hard", "m-1"));
    let (req_id, _) = next_chat(&host);
    host.send(&tether::Frame::new(
        "control.cancel",
        Some(tether::Session::new("telegram", "1")),
    ));
    let deadline = std::time::Instant::now() + T;
    let cancelled = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match host.responses().recv_timeout(left) {
            Ok(tether::Message::Notification { method, params }) if method == "llm.cancel" => {
                let p: serde_json::Value = serde_json::from_str(params.unwrap().get()).unwrap();
                break p["req_id"].as_str().map(str::to_string);
            }
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert_eq!(
        cancelled.as_deref(),
        Some(req_id.as_str()),
        "llm.cancel for the stream"
    );
    let frames = collect_until_done(host.frames(), 1, T);
    assert_eq!(done_text(&frames), "⏹ Reply cancelled.");
}
