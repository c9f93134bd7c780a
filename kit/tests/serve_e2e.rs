//! The real `aegis-kit serve` running real `aegis-agent` processes against a local LLM
//! server: wake from stopped and paused, idle pause/stop, cursor resume, crashes, serve
//! restarts, bad requests and file permissions.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aegis_e2e::llm::{openai_sse, reasoning_sse, FakeLlm, Reply};
use aegis_e2e::proc::{bin, command, temp_dir, Proc};
use crossbeam_channel::{unbounded, Receiver};
use serde_json::{json, Value};
use tether::frame::Session;
use tether::{AegisClient, Frame};

const T: Duration = Duration::from_secs(20);

struct Serve {
    proc: Proc,
    home: PathBuf,
    socket: PathBuf,
}

fn start_serve(home: &Path, args: &[&str]) -> Serve {
    start_serve_with(home, &bin("aegis-agent"), &[], args)
}

/// serve with its own agent binary and extra environment.
fn start_serve_with(home: &Path, agent: &Path, env: &[(&str, &str)], args: &[&str]) -> Serve {
    let socket = home.join("aegisd.sock");
    let mut cmd = command("aegis-kit");
    cmd.env("AEGIS_HOME", home)
        .envs(env.iter().copied())
        .arg("--socket")
        .arg(&socket)
        .arg("serve")
        .arg("--agent")
        .arg(agent)
        .args(args);
    let proc = Proc::spawn(cmd);
    proc.wait_for("aegis-kit serve listening", T);
    Serve {
        proc,
        home: home.to_path_buf(),
        socket,
    }
}

impl Serve {
    fn client(&self) -> AegisClient {
        AegisClient::new(&self.socket)
    }

    fn create_agent(&self, name: &str, llm: &FakeLlm) {
        let c = self.client();
        c.put_secret("OPENAI_API_KEY", "sk-kit-test").unwrap();
        let body =
            json!({"name": name, "secrets": ["OPENAI_API_KEY"], "env": {"OPENAI_BASE_URL": llm.url()}});
        c.request("POST", "/v1/instances", Some(&body)).unwrap();
    }

    fn info(&self, name: &str) -> Value {
        self.client()
            .request("GET", &format!("/v1/instances/{name}"), None)
            .unwrap()
    }

    fn wait_state(&self, name: &str, state: &str) -> Value {
        let deadline = Instant::now() + T;
        loop {
            let i = self.info(name);
            if i["state"] == state {
                return i;
            }
            assert!(Instant::now() < deadline, "{name} never became {state}: {i}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kit(&self, args: &[&str]) -> std::process::Output {
        command("aegis-kit")
            .env("AEGIS_HOME", &self.home)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }
}

fn msg(chat: &str, text: &str, id: &str) -> Frame {
    Frame::user_message(Session::new("test", chat), text, None).with_msg_id(id)
}

/// Egress frames of `name` on a channel, from `after`.
fn stream(c: &AegisClient, name: &str, after: Option<u64>) -> Receiver<Frame> {
    let (tx, rx) = unbounded();
    let s = c.stream(name, after).unwrap();
    std::thread::spawn(move || {
        for f in s.flatten() {
            if tx.send(f).is_err() {
                break;
            }
        }
    });
    rx
}

fn until_done(rx: &Receiver<Frame>, msg_id: &str) -> Vec<Frame> {
    let mut out = Vec::new();
    loop {
        let f = rx
            .recv_timeout(T)
            .unwrap_or_else(|_| panic!("no done for {msg_id}; got {out:#?}"));
        let done = f.kind == "assistant.done" && f.msg_id.as_deref() == Some(msg_id);
        out.push(f);
        if done {
            return out;
        }
    }
}

fn done_text(frames: &[Frame]) -> String {
    frames
        .iter()
        .rev()
        .find(|f| f.kind == "assistant.done")
        .unwrap()
        .text_payload()
        .unwrap()
}

fn proc_state(pid: u64) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(") ")
        .next()
        .and_then(|s| s.chars().next())
        .unwrap_or('?')
}

#[test]
fn wake_from_stopped_streams_the_reply_with_increasing_seqs() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-wake");
    let s = start_serve(&home, &[]);
    s.create_agent("my-agent", &llm);
    assert_eq!(s.info("my-agent")["state"], "stopped");
    let c = s.client();
    let rx = stream(&c, "my-agent", None);
    c.post_frame("my-agent", &msg("1", "hi", "m1")).unwrap();
    let frames = until_done(&rx, "m1");
    assert_eq!(done_text(&frames), "echo: hi");
    let seqs: Vec<u64> = frames.iter().map(|f| f.seq.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(s.info("my-agent")["state"], "running");
    // The key reached the agent only as an environment variable, and no log shows it.
    assert_eq!(
        llm.requests()[0].header("authorization"),
        Some("Bearer sk-kit-test")
    );
    assert!(!s.proc.log().contains("sk-kit-test"));
    let logs = s.kit(&["logs", "my-agent"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("aegis-agent starting"), "{logs}");
    assert!(!logs.contains("sk-kit-test"));
    // The curl example of the kit docs: a frame without msg_id or ts is accepted.
    let raw =
        r#"{"v":1,"type":"user.message","session":{"channel":"test","id":"1"},"payload":{"text":"Hello!"}}"#;
    c.request(
        "POST",
        "/v1/instances/my-agent/tether",
        Some(&serde_json::from_str(raw).unwrap()),
    )
    .unwrap();
    let f = rx.recv_timeout(T).unwrap();
    assert_eq!(f.kind, "event.ack");
    assert!(f.msg_id.unwrap().starts_with("kit-"));
    // `logs -f` follows the log as it grows.
    let mut follow = command("aegis-kit");
    follow
        .env("AEGIS_HOME", &s.home)
        .arg("--socket")
        .arg(&s.socket)
        .args(["logs", "my-agent", "-f"]);
    let follower = Proc::spawn(follow);
    follower.wait_for("aegis-agent starting", T);
    c.post_frame("my-agent", &msg("2", "more", "m-follow")).unwrap();
    follower.wait_for("m-follow", T);
}

#[test]
fn idle_instance_pauses_stops_and_wakes_on_message() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-idle");
    let s = start_serve(&home, &["--pause-after", "1", "--stop-after", "2"]);
    s.create_agent("a", &llm);
    let c = s.client();
    let rx = stream(&c, "a", None);
    c.post_frame("a", &msg("1", "one", "m1")).unwrap();
    until_done(&rx, "m1");
    let paused = s.wait_state("a", "paused");
    let pid = paused["pid"].as_u64().unwrap();
    assert_eq!(proc_state(pid), 'T', "a paused agent is SIGSTOPped");
    // Resume on message.
    c.post_frame("a", &msg("1", "two", "m2")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m2")), "echo: two");
    assert_eq!(s.info("a")["pid"].as_u64(), Some(pid), "resumed, not rebooted");
    // Then scale to zero, and boot again on the next message, history intact.
    s.wait_state("a", "stopped");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || proc_state(pid) == 'Z');
    c.post_frame("a", &msg("1", "three", "m3")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m3")), "echo: three");
    let last = llm.requests().last().unwrap().json();
    assert_eq!(last["messages"].as_array().unwrap().len(), 6, "{last}");
}

#[test]
fn cursor_resume_gets_exactly_the_later_frames() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-cursor");
    let s = start_serve(&home, &[]);
    s.create_agent("a", &llm);
    let c = s.client();
    let rx = stream(&c, "a", None);
    c.post_frame("a", &msg("1", "x", "m1")).unwrap();
    let all = until_done(&rx, "m1");
    let cut = all[1].seq.unwrap();
    let again: Vec<Frame> = c
        .stream("a", Some(cut))
        .unwrap()
        .take(all.len() - 2)
        .map(Result::unwrap)
        .collect();
    let want: Vec<u64> = all[2..].iter().map(|f| f.seq.unwrap()).collect();
    assert_eq!(again.iter().map(|f| f.seq.unwrap()).collect::<Vec<_>>(), want);
    // Without a cursor the recent history is replayed.
    let replay: Vec<Frame> = c
        .stream("a", None)
        .unwrap()
        .take(all.len())
        .map(Result::unwrap)
        .collect();
    assert_eq!(replay.first().unwrap().seq, all.first().unwrap().seq);
}

#[test]
fn killed_agent_mid_reply_is_restarted_and_the_message_answered_once() {
    let llm = FakeLlm::scripted(vec![
        Reply::stalls_after("par"),
        Reply::sse(openai_sse(&["full ", "answer"])),
    ]);
    let home = temp_dir("serve-kill");
    let s = start_serve(&home, &[]);
    s.create_agent("a", &llm);
    let c = s.client();
    let rx = stream(&c, "a", None);
    c.post_frame("a", &msg("1", "question", "m1")).unwrap();
    loop {
        if rx.recv_timeout(T).unwrap().kind == "assistant.delta" {
            break;
        }
    }
    let pid = s.info("a")["pid"].as_i64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let frames = until_done(&rx, "m1");
    assert_eq!(done_text(&frames), "full answer");
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing after the one done"
    );
    let info = s.info("a");
    assert_ne!(info["pid"].as_i64().unwrap(), pid);
    assert_eq!(info["recent_crashes"], 1);
    // The agent's history holds the question once.
    let hist = std::fs::read_to_string(home.join("kit/instances/a/workspace/sessions/test_1.jsonl")).unwrap();
    assert_eq!(hist.matches("question").count(), 1, "{hist}");
}

#[test]
fn crash_loop_refuses_to_boot_with_a_clear_error() {
    let home = temp_dir("serve-crash");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "bad", "command": ["aegis-agent", "--no-such-flag"]})),
    )
    .unwrap();
    let err = c.post_frame("bad", &msg("1", "hi", "m1")).unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    s.wait_state("bad", "crashloop");
    let err = c.post_frame("bad", &msg("1", "hi", "m2")).unwrap_err();
    assert!(err.to_string().contains("crash-looping"), "{err}");
}

#[test]
fn serve_restart_keeps_instances_stops_children_and_continues_seqs() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-restart");
    let mut s = start_serve(&home, &[]);
    s.create_agent("a", &llm);
    let c = s.client();
    let rx = stream(&c, "a", None);
    c.post_frame("a", &msg("1", "before", "m1")).unwrap();
    let before = until_done(&rx, "m1");
    let last_seq = before.last().unwrap().seq.unwrap();
    let pid = s.info("a")["pid"].as_u64().unwrap();
    assert!(s.proc.terminate(T).is_some(), "serve exits on SIGTERM");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || proc_state(pid) == 'Z',
        "child stopped with serve"
    );
    let s2 = start_serve(&home, &[]);
    assert_eq!(s2.info("a")["state"], "stopped");
    let rx = stream(&s2.client(), "a", Some(last_seq));
    s2.client().post_frame("a", &msg("1", "after", "m2")).unwrap();
    let after = until_done(&rx, "m2");
    assert!(
        after[0].seq.unwrap() > last_seq,
        "seqs continue above the old cursor"
    );
    assert_eq!(done_text(&after), "echo: after");
    // kill -9 of serve takes its children with it; the next serve finds no orphan.
    let mut s2 = s2;
    let pid = s2.info("a")["pid"].as_u64().unwrap();
    s2.proc.kill9();
    let deadline = Instant::now() + T;
    while Path::new(&format!("/proc/{pid}")).exists() && proc_state(pid) != 'Z' {
        assert!(Instant::now() < deadline, "orphan {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s3 = start_serve(&home, &[]);
    assert_eq!(s3.info("a")["state"], "stopped");
}

#[test]
fn bad_requests_get_json_errors() {
    let home = temp_dir("serve-bad");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "a", "command": ["sleep", "60"]})),
    )
    .unwrap();
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/v1/instances/nope/tether",
            Some(
                json!({"v":1,"type":"user.message","session":{"channel":"t","id":"1"},"payload":{"text":"x"}}),
            ),
            404,
            "not found",
        ),
        (
            "POST",
            "/v1/instances/a/tether",
            Some(json!({"v":1,"type":"assistant.done","payload":{"text":"x"}})),
            400,
            "egress frame type",
        ),
        (
            "POST",
            "/v1/instances/a/tether",
            Some(json!({"v":1,"session":{"channel":"t","id":"1"}})),
            400,
            "no type",
        ),
        (
            "POST",
            "/v1/instances/a/tether",
            Some(json!([1])),
            400,
            "invalid frame JSON",
        ),
        (
            "POST",
            "/v1/instances",
            Some(json!({"name": "../x"})),
            400,
            "invalid instance name",
        ),
        (
            "POST",
            "/v1/instances",
            Some(json!({"name": "a"})),
            409,
            "already exists",
        ),
        (
            "POST",
            "/v1/instances",
            Some(json!({"name": "b", "secrets": ["MISSING"]})),
            400,
            "not found",
        ),
        ("GET", "/v1/secrets/bad%2Fname", None, 400, "invalid secret name"),
        ("GET", "/v1/secrets/NOPE", None, 404, "not found"),
        ("GET", "/v1/nothing", None, 404, "no route"),
        (
            "GET",
            "/v1/instances/a/tether/stream?after=abc",
            None,
            400,
            "after",
        ),
    ];
    for (m, path, body, status, want) in cases {
        let err = c.request(m, path, body.as_ref()).unwrap_err();
        assert_eq!(err.status(), Some(status), "{m} {path}: {err}");
        assert!(err.to_string().contains(want), "{m} {path}: {err}");
    }
    let huge = json!({"v":1,"type":"user.message","session":{"channel":"t","id":"1"},"payload":{"text":"x".repeat(2 << 20)}});
    assert_eq!(
        c.request("POST", "/v1/instances/a/tether", Some(&huge))
            .unwrap_err()
            .status(),
        Some(413)
    );
    // Sockets and key files are private.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.socket), 0o600);
    c.put_secret("X", "y").unwrap();
    assert_eq!(mode(&home.join("kit/master.key")), 0o600);
    assert_eq!(mode(&home.join("kit/secrets.json")), 0o600);
    // A second serve on the same socket refuses to start.
    let out = command("aegis-kit")
        .env("AEGIS_HOME", &home)
        .arg("--socket")
        .arg(&s.socket)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
}

#[test]
fn cli_manages_secrets_and_instances_and_chats_one_shot() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-cli");
    let s = start_serve(&home, &[]);
    let mut set = command("aegis-kit");
    set.env("AEGIS_HOME", &home)
        .arg("--socket")
        .arg(&s.socket)
        .args(["secret", "set", "OPENAI_API_KEY"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"sk-from-stdin\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(s.client().get_secret("OPENAI_API_KEY").unwrap(), "sk-from-stdin");
    let out = s.kit(&["secret", "ls"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OPENAI_API_KEY");
    let base = format!("OPENAI_BASE_URL={}", llm.url());
    let out = s.kit(&[
        "instance",
        "start",
        "--kit",
        "agent",
        "--name",
        "my-agent",
        "--secret",
        "OPENAI_API_KEY",
        "--env",
        &base,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("instance my-agent: running"));
    let info = s.info("my-agent");
    assert_eq!(info["kit"], "agent");
    assert_eq!(info["image"], "python:3.12-alpine");
    assert_eq!(info["command"], json!(["aegis-agent"]));
    let out = s.kit(&["chat", "my-agent", "-m", "hello there"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echo: hello there");
    let out = s.kit(&["instance", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("my-agent") && list.contains("running"), "{list}");
    // `--kit agent -- CMD` overrides the preset's command.
    let out = s.kit(&[
        "instance", "start", "--kit", "agent", "--name", "shell", "--", "sh", "-c", "sleep 30",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.info("shell")["command"], json!(["sh", "-c", "sleep 30"]));
    let out = s.kit(&["instance", "rm", "shell"]);
    assert!(out.status.success());
    assert_eq!(
        s.client()
            .request("GET", "/v1/instances/shell", None)
            .unwrap_err()
            .status(),
        Some(404)
    );
    // Errors name the problem.
    let out = s.kit(&["instance", "info", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance \"ghost\" not found"));
    let out = command("aegis-kit")
        .args(["--socket", "/nonexistent.sock", "instance", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `aegis-kit serve` (or aegisd) running?"));
}

/// A reasoning model's thoughts reach the egress stream (serve carries the frames the
/// agent sends), and `chat` shows them on stderr: stdout is the answer alone.
#[test]
fn chat_shows_a_reasoning_models_thoughts_apart_from_the_answer() {
    let llm = FakeLlm::scripted(vec![Reply::sse(reasoning_sse(
        "reasoning",
        &["The user", " wants a capital."],
        &["Paris", "."],
    ))]);
    let home = temp_dir("serve-reasoning");
    let s = start_serve(&home, &[]);
    s.create_agent("thinker", &llm);
    let out = s.kit(&["chat", "thinker", "-m", "Capital of France?"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Paris.\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("💭 The user wants a capital.\n"), "{err}");
}

#[test]
fn chat_names_a_file_and_a_voice_message_the_agent_sends_and_where_they_are() {
    use aegis_e2e::llm::openai_tool_sse;
    use aegis_e2e::openai_audio::{spoken_audio, FakeSpeech};
    let speech = FakeSpeech::start(None);
    let llm = FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse(
            "",
            &[
                ("c1", "send_file", r#"{"path":"notes.txt"}"#),
                ("c2", "respond_with_voice", r#"{"text":"Here are your notes."}"#),
            ],
            7,
        )),
        Reply::sse(openai_sse(&["Sent."])),
    ]);
    let home = temp_dir("serve-chat-file");
    let s = start_serve(&home, &[]);
    let body = json!({"name": "writer", "env": {"OPENAI_BASE_URL": llm.url(), "OPENAI_AUDIO_BASE_URL": speech.base_url()}});
    s.client().request("POST", "/v1/instances", Some(&body)).unwrap();
    let ws = home.path().join("kit/instances/writer/workspace");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("notes.txt"), "hello").unwrap();
    let out = s.kit(&["chat", "writer", "-m", "send me the notes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Sent.\n");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("📎 notes.txt (5 bytes): "))
        .unwrap_or_else(|| panic!("{err}"));
    let path = line.rsplit(": ").next().unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "hello");
    let spoken = spoken_audio("Here are your notes.", "opus");
    let line = err
        .lines()
        .find(|l| l.starts_with(&format!("🔊 voice.ogg ({} bytes): ", spoken.len())))
        .unwrap_or_else(|| panic!("{err}"));
    let path = line.rsplit(": ").next().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), spoken);
}

#[test]
fn cancel_through_serve_stops_the_reply_in_flight() {
    let llm = FakeLlm::scripted(vec![Reply::stalls_after("partial")]);
    let home = temp_dir("serve-cancel");
    let s = start_serve(&home, &[]);
    s.create_agent("a", &llm);
    let c = s.client();
    let rx = stream(&c, "a", None);
    c.post_frame("a", &msg("1", "go", "m1")).unwrap();
    loop {
        if rx.recv_timeout(T).unwrap().kind == "assistant.delta" {
            break;
        }
    }
    let cancel = Frame::new("control.cancel", Some(Session::new("test", "1"))).with_msg_id("c1");
    c.post_frame("a", &cancel).unwrap();
    let frames = until_done(&rx, "m1");
    assert_eq!(done_text(&frames), "partial\n\n⏹ Reply cancelled.");
}

#[test]
fn interactive_chat_streams_live_and_ctrl_c_cancels_the_reply() {
    let llm = FakeLlm::scripted(vec![
        Reply::stalls_after("partial"),
        Reply::sse(openai_sse(&["second ", "answer"])),
    ]);
    let home = temp_dir("serve-chat");
    let s = start_serve(&home, &[]);
    s.create_agent("a", &llm);
    let mut t = Terminal::open(&home, &s.socket, "a");
    t.type_line("first question");
    t.wait_out("partial"); // streamed before the reply is complete
    std::process::Command::new("kill")
        .args(["-INT", &t.child.id().to_string()])
        .status()
        .unwrap();
    t.wait_out("Reply cancelled");
    t.type_line("again");
    t.wait_out("second answer");
    assert!(t.close().success());
}

/// [ours] A reply nobody typed for (a background job's end) shows in an open terminal
/// chat when it is done, between the replies asked for; a one-shot chat prints its own
/// reply only.
#[test]
fn an_open_chat_shows_a_background_jobs_end() {
    let job = json!({"command": "sleep 1; echo built", "background": true}).to_string();
    let llm = FakeLlm::scripted(vec![
        Reply::sse(aegis_e2e::llm::openai_tool_sse("", &[("b1", "bash", &job)], 100)),
        Reply::sse(openai_sse(&["Started."])),
        Reply::sse(openai_sse(&["The build is done."])),
        Reply::sse(openai_sse(&["Yes, all good."])),
    ]);
    let home = temp_dir("serve-chat-job");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.put_secret("OPENAI_API_KEY", "sk-kit-test").unwrap();
    let body = json!({"name": "a", "secrets": ["OPENAI_API_KEY"],
        "env": {"OPENAI_BASE_URL": llm.url(), "AEGIS_TOOLS": "all"}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let mut t = Terminal::open(&home, &s.socket, "a");
    t.type_line("build it");
    t.wait_out("Started.");
    t.wait_out("The build is done.");
    t.type_line("all good?");
    t.wait_out("Yes, all good.");
    assert!(t.close().success());
    let out = t.out.lock().unwrap().clone();
    assert_eq!(out.matches("The build is done.").count(), 1, "{out}");
}

/// `aegis-kit chat NAME` at a terminal: what is typed into it, and what it prints as it
/// comes; killed if a test ends first.
struct Terminal {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Terminal {
    fn open(home: &std::path::Path, socket: &std::path::Path, name: &str) -> Terminal {
        use std::io::Read;
        use std::process::Stdio;
        let mut child = command("aegis-kit")
            .env("AEGIS_HOME", home)
            .arg("--socket")
            .arg(socket)
            .args(["chat", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = std::sync::Arc::clone(&out);
        std::thread::spawn(move || {
            let mut b = [0u8; 256];
            while let Ok(n) = stdout.read(&mut b) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&b[..n]));
            }
        });
        let stdin = child.stdin.take();
        Terminal { child, stdin, out }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn wait_out(&self, needle: &str) {
        let deadline = Instant::now() + T;
        while !self.out.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {:?}",
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// End of input: the chat quits.
    fn close(&mut self) -> std::process::ExitStatus {
        self.stdin.take();
        self.child.wait().unwrap()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/new` in the terminal starts a fresh conversation, as in Telegram, and the next `chat`
/// goes on with it; `--session local` still reaches the first one.
#[test]
fn removing_an_instance_keeps_its_workspace_for_the_next_of_its_name_unless_purged() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-rm-keeps");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.put_secret("OPENAI_API_KEY", "sk-kit-test").unwrap();
    let base = format!("OPENAI_BASE_URL={}", llm.url());
    let said = |args: &[&str]| {
        let out = s.kit(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let start = [
        "instance",
        "start",
        "--name",
        "a",
        "--secret",
        "OPENAI_API_KEY",
        "--env",
        &base,
    ];
    assert!(said(&start).starts_with("instance a created\n"));
    said(&["chat", "a", "-m", "my name is Ann"]);
    let workspace = PathBuf::from(s.info("a")["workspace"].as_str().unwrap());

    let out = said(&["instance", "rm", "a"]);
    assert!(
        out.contains(&format!("its workspace is kept at {}", workspace.display()))
            && out.contains("instance rm a --purge"),
        "{out}"
    );
    let dir = home.join("kit/instances/a");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["workspace"], "the instance's own files are gone");
    assert!(workspace.join("sessions").is_dir(), "the conversation is not");
    let gone = c.request("GET", "/v1/instances/a", None).unwrap_err();
    assert_eq!(gone.status(), Some(404));
    let list = said(&["instance", "list"]);
    assert!(
        !list.lines().any(|l| l.starts_with("a ")),
        "no longer listed: {list}"
    );
    let kept = format!("  a                    {}", workspace.display());
    assert!(
        list.contains("workspaces removed instances left") && list.lines().any(|l| l == kept),
        "its workspace is: {list}"
    );

    let out = said(&start);
    assert!(out.contains("with the workspace an earlier a left"), "{out}");
    said(&["chat", "a", "-m", "who am I?"]);
    let history = llm.requests().last().unwrap().json()["messages"].to_string();
    assert!(
        history.contains("my name is Ann"),
        "the conversation goes on: {history}"
    );

    let out = said(&["instance", "rm", "a", "--purge"]);
    assert_eq!(out, "instance a deleted, with its workspace");
    assert!(!dir.exists());

    // A workspace kept earlier is purged by its name; then nothing is left to delete.
    s.create_agent("b", &llm);
    said(&["instance", "rm", "b"]);
    let out = s.kit(&["instance", "rm", "b"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("instance rm b --purge"),
        "{err}"
    );
    let out = said(&["instance", "rm", "b", "--purge"]);
    assert!(
        out.starts_with("the workspace instance b left is deleted"),
        "{out}"
    );
    assert!(!home.join("kit/instances/b").exists());
    let out = s.kit(&["instance", "rm", "b", "--purge"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = s.kit(&["instance", "stop", "a", "--purge"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--purge"),
        "only rm takes it"
    );

    // A name is a path under the instances folder: `..` (which would be serve's whole
    // state, here with a `workspace` folder in it) is never one.
    std::fs::create_dir_all(home.join("kit/workspace")).unwrap();
    for path in ["/v1/instances/..?purge=1", "/v1/instances/%2e%2e?purge=1"] {
        let err = c.request("DELETE", path, None).unwrap_err();
        assert_eq!(err.status(), Some(404), "{path}");
    }
    assert!(home.join("kit/instances").is_dir() && home.join("kit/workspace").is_dir());
    let err = c
        .request("DELETE", "/v1/instances/x?purge=yes", None)
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

#[test]
fn an_instance_works_in_a_chosen_folder_that_never_holds_what_confines_it() {
    let home = temp_dir("serve-chosen");
    let root = temp_dir("serve-chosen-projects");
    let root = root.canonicalize().unwrap();
    // serve's agent is named through a linked folder (`alias` → `bins`) and is a link
    // there, to a link in `deep`: each folder the path passes through holds a program
    // serve runs, as much as the folder of the file it leads to does.
    let (bins, deep) = (root.join("bins"), root.join("deep"));
    std::fs::create_dir_all(&bins).unwrap();
    std::fs::create_dir_all(&deep).unwrap();
    std::os::unix::fs::symlink(bin("aegis-agent"), deep.join("aegis-agent")).unwrap();
    std::os::unix::fs::symlink("../deep/aegis-agent", bins.join("aegis-agent")).unwrap();
    std::os::unix::fs::symlink(&bins, root.join("alias")).unwrap();
    let s = start_serve_with(&home, &root.join("alias/aegis-agent"), &[], &[]);
    let c = s.client();
    let proj = root.join("projects/proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("README.txt"), "hello\n").unwrap();

    // A relative folder is taken from where the command is typed.
    let out = command("aegis-kit")
        .env("AEGIS_HOME", &home)
        .current_dir(root.join("projects"))
        .args([
            "--socket",
            s.socket.to_str().unwrap(),
            "instance",
            "start",
            "--name",
            "w",
        ])
        .args([
            "--workspace",
            "./proj",
            "--",
            "sh",
            "-c",
            "cat README.txt > copy.txt; sleep 30",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("working in {}", proj.display())), "{said}");
    assert_eq!(s.info("w")["workspace"], json!(proj));
    let deadline = Instant::now() + T;
    while std::fs::read_to_string(proj.join("copy.txt")).unwrap_or_default() != "hello\n" {
        assert!(
            Instant::now() < deadline,
            "the instance never worked in its folder"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let refused = |workspace: &str| {
        let body = json!({"name": "x", "command": ["sh", "-c", "sleep 30"], "workspace": workspace});
        let err = c.request("POST", "/v1/instances", Some(&body)).unwrap_err();
        (err.status().unwrap(), err.to_string())
    };
    let link = root.join("link");
    std::os::unix::fs::symlink(home.join("kit"), &link).unwrap();
    let cases = [
        (bins.to_str().unwrap().to_string(), 400, "a program serve runs"),
        (
            root.join("alias").to_str().unwrap().to_string(),
            400,
            "a program serve runs",
        ),
        (deep.to_str().unwrap().to_string(), 400, "a program serve runs"),
        (home.to_str().unwrap().to_string(), 400, "serve's state"),
        (
            home.join("kit/instances/w").to_str().unwrap().to_string(),
            400,
            "serve's state",
        ),
        (link.to_str().unwrap().to_string(), 400, "serve's state"),
        (
            home.parent().unwrap().to_str().unwrap().to_string(),
            400,
            "serve's state: secrets",
        ),
        ("/".into(), 400, "the whole filesystem"),
        ("rel/dir".into(), 400, "neither a name nor an absolute path"),
        ("bad name".into(), 400, "invalid"),
        (proj.to_str().unwrap().to_string(), 409, "instance w's workspace"),
        (
            proj.join("sub").to_str().unwrap().to_string(),
            409,
            "instance w's workspace",
        ),
        (
            root.join("projects").to_str().unwrap().to_string(),
            409,
            "instance w's workspace",
        ),
        (root.to_str().unwrap().to_string(), 400, "a program serve runs"),
    ];
    for (workspace, status, why) in cases {
        let (got, message) = refused(&workspace);
        assert_eq!(got, status, "{workspace}: {message}");
        assert!(message.contains(why), "{workspace}: {message}");
    }
    assert!(
        s.client().request("GET", "/v1/instances/x", None).is_err(),
        "none was made"
    );

    // A named workspace is serve's, one instance's at a time, and outlives it.
    let create = |name: &str, workspace: &str| {
        let body = json!({"name": name, "command": ["sh", "-c", "echo one > one.txt; sleep 30"], "workspace": workspace});
        c.request("POST", "/v1/instances", Some(&body))
    };
    create("n1", "shared").unwrap();
    c.request("POST", "/v1/instances/n1/start", None).unwrap();
    let shared = home.join("kit/workspaces/shared");
    let deadline = Instant::now() + T;
    while !shared.join("one.txt").exists() {
        assert!(
            Instant::now() < deadline,
            "n1 never wrote into its named workspace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(create("n2", "shared").unwrap_err().status(), Some(409));
    let out = s.kit(&["instance", "rm", "n1", "--purge"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("was chosen with --workspace and stays"), "{said}");
    assert!(
        shared.join("one.txt").is_file(),
        "purge leaves a chosen workspace"
    );
    assert!(!home.join("kit/instances/n1").exists(), "nothing else is left");
    create("n2", "shared").unwrap();
    let list = String::from_utf8_lossy(&s.kit(&["instance", "list"]).stdout).to_string();
    assert!(
        list.lines()
            .any(|l| l.starts_with("  shared ") && l.ends_with("(used by n2)")),
        "{list}"
    );
    // `workspace rm` deletes one no instance uses, and nothing else.
    let rm = |name: &str| {
        let out = s.kit(&["workspace", "rm", name]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let (ok, said) = rm("shared");
    assert!(!ok && said.contains("is instance n2's"), "{said}");
    assert!(shared.join("one.txt").is_file());
    s.kit(&["instance", "rm", "n2"]);
    let (ok, said) = rm("shared");
    assert!(ok && said.contains("workspace shared deleted"), "{said}");
    assert!(!shared.exists());
    let (ok, said) = rm("shared");
    assert!(!ok && said.contains("no named workspace"), "{said}");
    let (ok, said) = rm("..");
    assert!(!ok && said.contains("workspace name"), "{said}");
    assert!(home.join("kit/workspaces").is_dir());
    let kept = root.join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("keep.txt"), "mine").unwrap();
    std::os::unix::fs::symlink(&kept, home.join("kit/workspaces/trap")).unwrap();
    let (ok, said) = rm("trap");
    assert!(ok, "{said}");
    assert!(!home.join("kit/workspaces/trap").exists());
    assert!(
        kept.join("keep.txt").is_file(),
        "a link goes, never what it points to"
    );

    s.kit(&["instance", "rm", "w"]);
    assert!(proj.join("copy.txt").is_file() && proj.join("README.txt").is_file());
    assert!(!home.join("kit/instances/w").exists());

    // A chosen folder turned into a link (here into serve's state) is not booted into.
    let later = root.join("later");
    create("l", later.to_str().unwrap()).unwrap();
    std::fs::remove_dir(&later).unwrap();
    std::os::unix::fs::symlink(home.join("kit"), &later).unwrap();
    let err = c.request("POST", "/v1/instances/l/start", None).unwrap_err();
    assert!(err.to_string().contains("not the folder it was"), "{err}");
    assert_ne!(s.info("l")["state"], "running");
}

#[test]
fn requests_creating_one_instance_at_once_make_it_once() {
    let home = temp_dir("serve-create-race");
    let s = start_serve(&home, &[]);
    for round in 0..5 {
        let name = format!("twin{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let answers: Vec<Option<u16>> = (0..8)
            .map(|i| {
                let (c, barrier, name) = (s.client(), barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    let body = json!({"name": name, "command": ["sh", "-c", format!("sleep 30 # {i}")]});
                    barrier.wait();
                    match c.request("POST", "/v1/instances", Some(&body)) {
                        Ok(_) => Some(201),
                        Err(e) => e.status(),
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let made = answers.iter().filter(|a| **a == Some(201)).count();
        assert_eq!(made, 1, "round {round}: {answers:?}");
        assert!(
            answers.iter().all(|a| matches!(a, Some(201 | 409))),
            "{answers:?}"
        );
    }
    let list = s.client().request("GET", "/v1/instances", None).unwrap();
    assert_eq!(list["instances"].as_array().unwrap().len(), 5, "{list}");
}

#[test]
fn chat_new_starts_a_fresh_conversation_that_later_chats_continue() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-chat-new");
    let s = start_serve(&home, &[]);
    s.create_agent("a", &llm);
    let said = |args: &[&str]| {
        let out = s.kit(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let history = |n: usize| -> Vec<String> {
        let req = &llm.requests()[n];
        req.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .map(|m| aegis_e2e::llm::unstamped(m["content"].as_str().unwrap()).to_string())
            .collect()
    };
    assert_eq!(
        said(&["chat", "a", "-m", "my name is Ann"]).0,
        "echo: my name is Ann"
    );
    let (out, err) = said(&["chat", "a", "-m", "/new"]);
    assert_eq!(out, "", "nothing reached the agent");
    assert!(err.contains("New conversation started"), "{err}");
    assert_eq!(llm.requests().len(), 1);
    said(&["chat", "a", "-m", "who am I?"]);
    assert_eq!(history(1), ["who am I?"], "a fresh conversation");
    said(&["chat", "a", "-m", "and now?"]);
    assert_eq!(
        history(2),
        ["who am I?", "echo: who am I?", "and now?"],
        "it goes on"
    );
    said(&["chat", "a", "--session", "local", "-m", "back"]);
    assert_eq!(history(3)[0], "my name is Ann", "the first one is still there");
    let (_, err) = said(&["chat", "a", "-m", "/stop"]);
    assert!(err.contains("Nothing to stop"), "{err}");
    assert_eq!(llm.requests().len(), 4);
}

#[test]
fn sandboxed_instances_get_every_tool_and_unsandboxed_ones_must_opt_in() {
    use aegis_e2e::llm::offered_tools;
    let llm = FakeLlm::echo_openai();
    let home = aegis_e2e::proc::TempDir::new("serve-tools");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.put_secret("OPENAI_API_KEY", "sk-kit-test").unwrap();
    let make = |name: &str, sandbox: Value, env: Value| {
        let mut e = json!({"OPENAI_BASE_URL": llm.url()});
        e.as_object_mut()
            .unwrap()
            .extend(env.as_object().unwrap().clone());
        let body = json!({"name": name, "secrets": ["OPENAI_API_KEY"], "env": e, "sandbox": sandbox});
        c.request("POST", "/v1/instances", Some(&body)).unwrap()
    };
    let boxed = make("boxed", json!({}), json!({}));
    assert!(
        boxed["sandbox_in_force"].as_str().unwrap().contains("namespaces"),
        "{boxed}"
    );
    make("plain", json!({"level": "none"}), json!({}));
    make("trusted", json!({"level": "none"}), json!({"AEGIS_TOOLS": "all"}));
    for name in ["boxed", "plain", "trusted"] {
        let rx = stream(&c, name, None);
        c.post_frame(name, &msg("1", "hi", "m1")).unwrap();
        until_done(&rx, "m1");
    }
    let reqs = llm.requests();
    assert!(
        offered_tools(&reqs[0]).contains(&"bash".to_string()),
        "{:?}",
        offered_tools(&reqs[0])
    );
    // Unsandboxed: no shell, no file tools; web, memory and tasks (files of its own
    // .aegis only) stay.
    // (activate_skill is on, but not offered: the workspace has no skill.)
    let plain = offered_tools(&reqs[1]);
    assert_eq!(plain[0], "web_fetch");
    assert!(
        plain.iter().all(|t| ![
            "bash",
            "read_file",
            "write_file",
            "respond_with_image",
            "send_file"
        ]
        .contains(&t.as_str())),
        "{plain:?}"
    );
    assert!(plain.contains(&"memory_store".to_string()) && plain.contains(&"cron_create".to_string()));
    assert!(offered_tools(&reqs[2]).contains(&"bash".to_string()));
    let log = std::fs::read_to_string(home.join("kit/instances/plain/instance.log")).unwrap_or_default();
    assert!(
        log.contains("tools: activate_skill, web_fetch"),
        "the agent logs which tools are on: {log}"
    );
    assert_eq!(
        s.info("plain")["sandbox_in_force"],
        "none (opted out): the instance runs with serve's rights"
    );
}

/// The model's commands run without the agent's keys, and cannot read them where the
/// kernel keeps them either: the environment every process of the instance started with
/// (`/proc/PID/environ`: the agent's, and the sandbox's PID 1, which started it) and their
/// memory (`/proc/PID/mem`).
#[test]
fn the_models_commands_cannot_read_the_agents_keys_from_any_process() {
    use aegis_e2e::llm::{openai_tool_sse, tool_results};
    const KEY: &str = "sk-kit-never-shown-4711";
    let look = "echo \"[$OPENAI_API_KEY]\"; for p in /proc/[0-9]*; do echo \"$p $(cat $p/cmdline | tr '\\0' ' ')\"; \
        cat $p/environ | tr '\\0' '\\n' | grep API_KEY; \
        grep -a -c sk-kit $p/mem; done 2>&1; echo end";
    let call = serde_json::to_string(&json!({"command": look})).unwrap();
    let llm = FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse("", &[("c1", "bash", &call)], 8)),
        Reply::sse(openai_sse(&["done"])),
    ]);
    let home = aegis_e2e::proc::TempDir::new("serve-keys");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.put_secret("OPENAI_API_KEY", KEY).unwrap();
    let body = json!({"name": "keys", "secrets": ["OPENAI_API_KEY"], "env": {"OPENAI_BASE_URL": llm.url()}});
    let made = c.request("POST", "/v1/instances", Some(&body)).unwrap();
    assert!(
        made["sandbox_in_force"].as_str().unwrap().contains("namespaces"),
        "{made}"
    );
    let rx = stream(&c, "keys", None);
    c.post_frame("keys", &msg("1", "look around", "m1")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m1")), "done");
    let seen = &tool_results(&llm.requests()[1])[0].1;
    assert!(
        seen.contains("[]") && seen.contains("aegis-agent") && seen.contains("end"),
        "{seen}"
    );
    assert!(!seen.contains(KEY), "a command read the key: {seen}");
}

#[test]
fn a_long_tool_run_completes_and_the_instance_pauses_afterwards() {
    use aegis_e2e::llm::{openai_tool_sse, tool_results};
    let llm = FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse(
            "",
            &[("c1", "bash", r#"{"command": "sleep 2.5; echo slept"}"#)],
            8,
        )),
        Reply::sse(openai_sse(&["done"])),
    ]);
    let home = aegis_e2e::proc::TempDir::new("serve-long-tool");
    let s = start_serve(&home, &["--pause-after", "1", "--stop-after", "1"]);
    let c = s.client();
    c.put_secret("OPENAI_API_KEY", "sk-kit-test").unwrap();
    let body = json!({"name": "worker", "secrets": ["OPENAI_API_KEY"],
        "env": {"OPENAI_BASE_URL": llm.url(), "AEGIS_TOOLS": "all"}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let rx = stream(&c, "worker", None);
    c.post_frame("worker", &msg("1", "work", "m1")).unwrap();
    // The tether is silent for 2.5 s while the tool runs, longer than pause-after.
    assert_eq!(done_text(&until_done(&rx, "m1")), "done");
    assert_eq!(tool_results(&llm.requests()[1])[0].1, "slept\nexit status: 0");
    s.wait_state("worker", "paused");
}

#[test]
fn a_keepalive_lease_holds_off_the_idle_pause_until_released() {
    let home = aegis_e2e::proc::TempDir::new("serve-lease");
    let s = start_serve_with(
        home.path(),
        &bin("lease-agent"),
        &[],
        &["--pause-after", "1", "--stop-after", "30"],
    );
    let c = s.client();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "held", "env": {"LEASE_TTL_MS": "4000", "LEASE_HOLD_MS": "2500"}})),
    )
    .unwrap();
    c.request("POST", "/v1/instances/held/start", None).unwrap();
    s.wait_state("held", "running");
    // Silent for 2 s with a 1 s pause-after: only the lease keeps it running.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.info("held")["state"], "running", "paused despite the lease");
    // Released at 2.5 s: the usual idle pause follows.
    s.wait_state("held", "paused");
}

/// A guest's message nested as deep as JSON is read is handled like any other: it must
/// not overflow the stack of the thread that reads the tether, which would abort serve
/// and every instance with it.
#[test]
fn a_guests_deepest_message_does_not_take_serve_down() {
    let home = aegis_e2e::proc::TempDir::new("serve-deep");
    let s = start_serve_with(home.path(), &bin("lease-agent"), &[], &["--pause-after", "30"]);
    let c = s.client();
    let body = json!({"name": "deep", "env": {"LEASE_DEEP": "1", "LEASE_HOLD_MS": "500"}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    c.request("POST", "/v1/instances/deep/start", None).unwrap();
    s.wait_state("deep", "running");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.info("deep")["state"], "running", "serve still answers");
}

#[test]
fn requests_past_the_cap_get_a_503_with_a_json_error_and_the_cap_frees_up() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let home = aegis_e2e::proc::TempDir::new("serve-cap");
    let s = start_serve(&home, &[]);
    let c = s.client();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "a", "command": ["sh", "-c", "sleep 60"]})),
    )
    .unwrap();
    // Hold the cap's worth of egress streams open.
    let open = |n: usize| -> Vec<UnixStream> {
        (0..n)
            .map(|_| {
                let mut st = UnixStream::connect(&s.socket).unwrap();
                st.write_all(b"GET /v1/instances/a/tether/stream HTTP/1.1\r\nHost: aegis\r\n\r\n")
                    .unwrap();
                let mut head = [0u8; 12];
                st.read_exact(&mut head).unwrap();
                assert_eq!(&head, b"HTTP/1.1 200", "a stream within the cap opens");
                st
            })
            .collect()
    };
    let streams = open(256);
    let err = c.request("GET", "/v1/instances/a", None).unwrap_err().to_string();
    assert!(err.contains("503") && err.contains("busy"), "{err}");
    drop(streams);
    // Closed streams end their threads (at their next wake-up), and the cap frees up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.request("GET", "/v1/instances/a", None).is_err() {
        assert!(Instant::now() < deadline, "the cap never freed up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every frame after `after` until `count` frames came: (seqs, texts).
fn read_stream(c: &AegisClient, name: &str, after: u64, count: usize) -> Vec<u64> {
    let s = c.stream(name, Some(after)).unwrap();
    let mut seqs = Vec::with_capacity(count);
    for f in s {
        seqs.push(f.unwrap().seq.unwrap());
        if seqs.len() == count {
            break;
        }
    }
    seqs
}

#[test]
fn a_reader_away_for_20000_frames_and_a_serve_killed_in_between_lose_nothing() {
    const N: usize = 20_000;
    let home = aegis_e2e::proc::TempDir::new("serve-durable");
    let mut s = start_serve(&home, &[]);
    let c = s.client();
    let body = json!({"name": "b", "command": [bin("blast-agent")], "env": {"BENCH_BLAST": N.to_string()}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let before = s.info("b")["last_seq"].as_u64().unwrap();
    c.request("POST", "/v1/instances/b/start", None).unwrap();
    // Nobody reads while the frames pass: twice the in-memory window.
    let deadline = Instant::now() + T;
    while s.info("b")["last_seq"].as_u64().unwrap() < before + N as u64 {
        assert!(Instant::now() < deadline, "the frames never all arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let expected: Vec<u64> = (before + 1..=before + N as u64).collect();
    assert_eq!(
        read_stream(&c, "b", before, N),
        expected,
        "every frame, in order, once"
    );
    // kill -9 of serve: the frames are still there after a restart, and seqs continue.
    s.proc.kill9();
    s = start_serve(&home, &[]);
    let c = s.client();
    assert_eq!(read_stream(&c, "b", before, N), expected, "after a serve crash");
    assert_eq!(s.info("b")["last_seq"].as_u64().unwrap(), before + N as u64);
    // A deleted instance takes its log with it.
    c.request("DELETE", "/v1/instances/b", None).unwrap();
    assert!(!home.join("kit/instances/b/egress").exists());
}

#[test]
fn an_instance_that_cannot_boot_does_not_hold_up_another_instances_tasks() {
    use std::collections::BTreeSet;
    use std::time::{SystemTime, UNIX_EPOCH};
    // A fast clock (a minute every 3 s) and two instances with a task every minute. serve
    // visits instances in name order, so the one that never boots comes first: its run
    // waits out the whole boot timeout (8 s, nearly three minutes of this clock).
    const START: i64 = 1_795_424_340; // 2026-11-23 08:59:00 UTC
    const SPEED: i64 = 20;
    let anchor = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-cron-stuck");
    let stuck = home.join("stuck/aegis-agent");
    std::fs::create_dir_all(stuck.parent().unwrap()).unwrap();
    std::fs::write(&stuck, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o755)).unwrap();
    let clock = format!("{START},{anchor},{SPEED}");
    let s = start_serve_with(
        &home,
        &bin("aegis-agent"),
        &[("AEGIS_KIT_CLOCK", &clock)],
        &["--boot-timeout", "8", "--sandbox", "none"],
    );
    s.create_agent("b-good", &llm);
    s.client()
        .request(
            "POST",
            "/v1/instances",
            Some(&json!({"name": "a-stuck", "command": [stuck.to_str().unwrap()]})),
        )
        .unwrap();
    let every_minute = json!({"entries": [{"id": "cron-1", "schedule": "* * * * *",
        "message": "tick", "session": "cron-1", "on_conflict": "queue"}], "next_id": 2});
    for name in ["a-stuck", "b-good"] {
        let aegis = home.join(format!("kit/instances/{name}/workspace/.aegis"));
        std::fs::create_dir_all(&aegis).unwrap();
        std::fs::write(aegis.join("cron.json"), every_minute.to_string()).unwrap();
    }

    // Five minutes of this clock: b-good's task runs in every one of them.
    let rx = stream(&s.client(), "b-good", None);
    let mut minutes = BTreeSet::new();
    let until = Instant::now() + Duration::from_millis((5 * 60 * 1000 / SPEED) as u64);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(f) = rx.recv_timeout(left) else { break };
        if f.kind != "assistant.done" {
            continue;
        }
        let id = f.msg_id.clone().unwrap_or_default();
        if let Some(m) = id.strip_prefix("cron-cron-1-") {
            assert_eq!(
                done_text(std::slice::from_ref(&f)),
                "echo: [Scheduled Task]: tick"
            );
            minutes.insert(m.parse::<i64>().unwrap());
        }
    }
    let minutes: Vec<i64> = minutes.into_iter().collect();
    assert!(minutes.len() >= 4, "runs in minutes {minutes:?}");
    assert!(
        minutes.windows(2).all(|w| w[1] == w[0] + 1),
        "a minute was skipped or merged: {minutes:?}"
    );
    // The stuck instance's runs failed in the open, and were not recorded as sent.
    assert!(
        s.proc
            .log()
            .contains("a-stuck: task cron-1 could not be delivered"),
        "{}",
        s.proc.log()
    );
}

#[test]
fn an_instance_without_network_reaches_a_model_on_the_host_through_serve() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-host-llm");
    let s = start_serve(&home, &["--host-llm", &format!("local={}/", llm.url())]);
    assert!(
        s.proc.log().contains(&format!(
            "models on the host (host:NAME/MODEL): lmstudio=http://localhost:1234/v1, local={}, ollama=",
            llm.url()
        )),
        "{}",
        s.proc.log()
    );
    let c = s.client();
    c.put_secret("OPENAI_API_KEY", "sk-kit-test").unwrap();
    let make = |name: &str, env: Value| {
        let body =
            json!({"name": name, "secrets": ["OPENAI_API_KEY"], "env": env, "sandbox": {"net": "none"}});
        c.request("POST", "/v1/instances", Some(&body)).unwrap();
    };
    // The same model server, straight over the network: `--net none` cuts it off...
    make(
        "cut-off",
        json!({"OPENAI_BASE_URL": llm.url(), "AEGIS_LLM_RETRIES": "1", "AEGIS_LLM_CONNECT_TIMEOUT": "2"}),
    );
    // ...while through serve it answers, streamed, without the key.
    make("via-host", json!({"AEGIS_MODEL": "host:local/tiny"}));
    make(
        "misnamed",
        json!({"AEGIS_MODEL": "host:nope/tiny", "AEGIS_LLM_RETRIES": "3"}),
    );

    let rx = stream(&c, "cut-off", None);
    c.post_frame("cut-off", &msg("1", "hi", "m1")).unwrap();
    let cut = done_text(&until_done(&rx, "m1"));
    assert!(cut.contains("unavailable"), "{cut}");
    assert!(llm.requests().is_empty());

    let rx = stream(&c, "via-host", None);
    c.post_frame("via-host", &msg("1", "hello there", "m1")).unwrap();
    let frames = until_done(&rx, "m1");
    assert_eq!(done_text(&frames), "echo: hello there");
    let deltas: Vec<String> = frames
        .iter()
        .filter(|f| f.kind == "assistant.delta")
        .map(|f| f.text_payload().unwrap())
        .collect();
    assert_eq!(deltas, vec!["echo: ", "hello there"]);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/chat/completions");
    assert_eq!(reqs[0].json()["model"], "tiny");
    assert_eq!(reqs[0].header("authorization"), None);
    // A second message: a fresh stream, with the first reply in its context.
    c.post_frame("via-host", &msg("1", "again", "m2")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m2")), "echo: again");

    // A name serve does not know is refused once, not retried, and said plainly.
    let rx = stream(&c, "misnamed", None);
    c.post_frame("misnamed", &msg("1", "hi", "m1")).unwrap();
    let refused = done_text(&until_done(&rx, "m1"));
    assert!(
        refused.contains(r#"the host has no model server named "nope""#),
        "{refused}"
    );
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn bad_host_llm_flags_are_refused_by_name() {
    let home = temp_dir("serve-host-llm-flag");
    for (flag, says) in [
        ("ollama", "expected NAME=URL"),
        ("x=https://example.com/v1", "must start with http://"),
        ("Big=http://localhost:1/v1", "NAME must be lower-case"),
    ] {
        let out = command("aegis-kit")
            .env("AEGIS_HOME", home.path())
            .args(["--socket", "/nonexistent/s", "serve", "--host-llm", flag])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag}: {err}");
    }
}

#[test]
fn self_restart_under_serve_boots_a_new_agent_on_the_new_configuration() {
    let llm = aegis_e2e::llm::reconfigures_and_restarts("", "hello again");
    let home = temp_dir("serve-restart");
    let s = start_serve(&home, &[]);
    s.create_agent("me", &llm);
    let c = s.client();
    let rx = stream(&c, "me", None);
    c.post_frame("me", &msg("1", "reconfigure", "m1")).unwrap();
    assert_eq!(
        done_text(&until_done(&rx, "m1")),
        "Restarting to apply configuration changes..."
    );
    let before = s.info("me")["pid"].as_u64();
    assert!(before.is_some(), "still the first process");
    // The new process says it is back, in the same chat.
    let back = loop {
        let f = rx.recv_timeout(T).expect("the restarted agent speaks");
        if f.kind == "assistant.done" {
            break f;
        }
    };
    assert_eq!(
        back.text_payload().unwrap(),
        "Restart complete. New configuration loaded."
    );
    assert_eq!(back.session, Some(Session::new("test", "1")));
    let info = s.wait_state("me", "running");
    assert_ne!(info["pid"].as_u64(), before, "a new process");
    assert_eq!(info["recent_crashes"], 0, "a restart is not a crash: {info}");
    assert!(s.proc.log().contains("me: the agent asked to be restarted"));
    c.post_frame("me", &msg("1", "hi", "m2")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m2")), "hello again");
    let system = llm.requests()[1].json()["messages"][0]["content"].clone();
    assert!(
        system.as_str().unwrap().starts_with("You are restarted."),
        "{system}"
    );
}

#[test]
fn self_info_under_serve_names_the_instance_over_the_tether() {
    use aegis_e2e::llm::{openai_tool_sse, tool_results};
    let llm = FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse("", &[("i1", "self_info", "{}")], 5)),
        Reply::sse(openai_sse(&["I am me."])),
    ]);
    let home = temp_dir("serve-selfinfo");
    let s = start_serve(&home, &[]);
    s.create_agent("me", &llm);
    let c = s.client();
    let rx = stream(&c, "me", None);
    c.post_frame("me", &msg("1", "who are you?", "m1")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m1")), "I am me.");
    let answered: Value = serde_json::from_str(&tool_results(&llm.requests()[1])[0].1).unwrap();
    let id = s.info("me")["id"].clone();
    assert!(id.as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(
        answered,
        json!({"id": id, "handle": "me", "state": "running", "image": "", "parent_id": "",
               "kit": null, "host": "aegis-kit serve"})
    );
}

#[test]
fn a_cancelled_reply_stops_the_host_models_generation() {
    // A local model generating a token every 20 ms for 20 s, unless its client goes away.
    let tokens: Vec<&str> = vec!["tok "; 1000];
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&tokens),
        delay: Duration::from_millis(20),
        end: aegis_e2e::llm::End::Finish,
    }]);
    let home = temp_dir("serve-host-cancel");
    let s = start_serve(&home, &["--host-llm", &format!("local={}", llm.url())]);
    let c = s.client();
    let body = json!({"name": "a", "env": {"AEGIS_MODEL": "host:local/tiny"}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let rx = stream(&c, "a", None);
    c.post_frame("a", &msg("1", "go on forever", "m1")).unwrap();
    while rx.recv_timeout(T).unwrap().kind != "assistant.delta" {}
    let cancel = Frame::new("control.cancel", Some(Session::new("test", "1"))).with_msg_id("c1");
    c.post_frame("a", &cancel).unwrap();
    assert!(done_text(&until_done(&rx, "m1")).ends_with("⏹ Reply cancelled."));
    // The model server sees its client go, long before the 20 s of tokens are out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while llm.abandoned() == 0 {
        assert!(
            Instant::now() < deadline,
            "the host model still generates after the cancel"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The NDJSON entries of an exec stream, read to its end.
fn exec_entries(c: &AegisClient, name: &str, script: &str) -> Vec<Value> {
    use std::io::BufRead;
    let r = c.exec(name, &["sh", "-c", script], T).unwrap();
    std::io::BufReader::new(r)
        .lines()
        .map(Result::unwrap)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

#[test]
fn exec_runs_in_the_instance_sandbox_without_its_secrets_and_dies_with_its_client() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-exec");
    let s = start_serve(&home, &[]);
    s.create_agent("me", &llm);
    let c = s.client();
    let workspace = s.info("me")["workspace"].as_str().unwrap().to_string();

    // aegisd's stream: who it is, each line with its stream, the exit status.
    let all = exec_entries(
        &c,
        "me",
        "echo hi; pwd; echo oops >&2; echo \"[$OPENAI_API_KEY]\"; exit 4",
    );
    let exec_id = all[0]["exec_id"].as_str().unwrap().to_string();
    assert!(all[0]["started_at"].is_string(), "{all:?}");
    let mut lines: Vec<(String, String)> = all[1..all.len() - 1]
        .iter()
        .map(|e| {
            assert_eq!(e["exec_id"], exec_id.as_str());
            (
                e["stream"].as_str().unwrap().into(),
                e["line"].as_str().unwrap().into(),
            )
        })
        .collect();
    lines.sort();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    let mut want = vec![
        pair("stderr", "oops"),
        pair("stdout", "[]"),
        pair("stdout", &workspace),
        pair("stdout", "hi"),
    ];
    want.sort();
    assert_eq!(
        lines, want,
        "the instance's secret is not in a command's environment"
    );
    assert_eq!(
        all.last().unwrap(),
        &json!({"exec_id": exec_id, "exit_code": 4, "done": true})
    );

    // Confined as the agent is: serve's state is hidden, the host read-only, and the
    // workspace (also by a relative path) writable.
    let secrets = home.join("kit/secrets.json");
    assert!(secrets.exists());
    let escape = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("exec-escape-{}", std::process::id()));
    let script = format!(
        "cat {} && echo READ; echo x > {} && echo WROTE; touch made-here",
        secrets.display(),
        escape.display()
    );
    let all = exec_entries(&c, "me", &script);
    let wrote = escape.exists();
    let _ = std::fs::remove_file(&escape);
    let text = format!("{all:?}");
    assert!(
        !text.contains("READ") && !text.contains("WROTE") && !wrote,
        "{text}"
    );
    assert!(
        Path::new(&workspace).join("made-here").exists(),
        "the workspace is writable"
    );

    // The CLI: output as it comes, stderr on stderr, the command's status as its own.
    let out = s.kit(&[
        "instance",
        "exec",
        "me",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(3), "out\n", "err\n")
    );
    let out = s.kit(&["instance", "exec", "me"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance exec needs a command after --"));

    // A client that goes away takes its command with it.
    let marker = "57.125";
    let mut r = std::io::BufReader::new(
        c.exec("me", &["sh", "-c", &format!("echo started; sleep {marker}")], T)
            .unwrap(),
    );
    let mut first = String::new();
    while !first.contains("started\"") {
        first.clear();
        std::io::BufRead::read_line(&mut r, &mut first).unwrap();
    }
    // The launcher, the namespace's init, the shell and the sleep.
    assert!(!aegis_e2e::proc::processes_with(marker).is_empty());
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !aegis_e2e::proc::processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the command outlived its client");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Bad requests, and an instance without the sandbox: clear refusals.
    let err = |name: &str, body: Value| {
        c.request("POST", &format!("/v1/instances/{name}/exec"), Some(&body))
            .unwrap_err()
            .to_string()
    };
    assert!(err("me", json!({})).contains("command is required"));
    assert!(err("me", json!({"command": "ls"})).contains("command must be a list of strings"));
    assert!(err("nobody", json!({"command": ["ls"]})).contains("not found"));
    let body = json!({"name": "bare", "sandbox": {"level": "none"}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let refused = err("bare", json!({"command": ["id"]}));
    assert!(refused.contains("exec needs the sandbox"), "{refused}");
}

/// [ours] A server the model started dies when the idle instance is stopped; the
/// executable scripts of `.aegis/startup/` bring it back: they run at each start of the
/// instance, in name order (a script without `#!` as a shell script), as the model's
/// commands run (without the agent's key, which the instance's environment holds), their
/// output in a log beside them; one that is not executable is named in the log, not run.
/// With `bash` off they are not run at all: they are the model's code.
#[test]
fn startup_scripts_bring_services_back_at_each_start_without_the_keys() {
    let llm = FakeLlm::echo_openai();
    let home = temp_dir("serve-startup");
    let s = start_serve(&home, &[]);
    let c = s.client();
    for name in ["svc", "nobash"] {
        s.create_agent(name, &llm);
        let dir = home.join(format!("kit/instances/{name}/workspace/.aegis/startup"));
        std::fs::create_dir_all(&dir).unwrap();
        let script = |file: &str, text: &str, mode: u32| {
            std::fs::write(dir.join(file), text).unwrap();
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(mode)).unwrap();
        };
        script(
            "10-app.start",
            "#!/bin/sh\necho \"boot\" >> boots.txt\nenv > env.txt\necho app up\n",
            0o755,
        );
        script("20-plain.start", "echo second >> boots.txt", 0o755);
        script("30-draft.start", "echo never >> boots.txt", 0o644);
    }
    std::fs::write(
        home.join("kit/instances/nobash/workspace/.aegis/agent.json"),
        json!({"tools": {"bash": {"enabled": false}}}).to_string(),
    )
    .unwrap();
    let (rx, quiet) = (stream(&c, "svc", None), stream(&c, "nobash", None));
    let ws = home.join("kit/instances/svc/workspace");
    let boots = || std::fs::read_to_string(ws.join("boots.txt")).unwrap_or_default();
    let wait_boots = |want: &str| {
        let deadline = Instant::now() + T;
        while boots() != want {
            assert!(Instant::now() < deadline, "boots.txt: {:?}", boots());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    c.post_frame("svc", &msg("1", "hi", "m1")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m1")), "echo: hi");
    wait_boots("boot\nsecond\n");
    let env = std::fs::read_to_string(ws.join("env.txt")).unwrap();
    assert!(env.contains("OPENAI_BASE_URL="), "{env}");
    assert!(
        !env.contains("OPENAI_API_KEY") && !env.contains("sk-kit-test"),
        "{env}"
    );
    let log = std::fs::read_to_string(ws.join(".aegis/startup/10-app.start.log")).unwrap();
    assert_eq!(log, "app up\n");
    // Stopped (as an idle instance is) and started again by the next message.
    c.request("POST", "/v1/instances/svc/stop", None).unwrap();
    s.wait_state("svc", "stopped");
    c.post_frame("svc", &msg("1", "again", "m2")).unwrap();
    assert_eq!(done_text(&until_done(&rx, "m2")), "echo: again");
    wait_boots("boot\nsecond\nboot\nsecond\n");
    let logs = String::from_utf8_lossy(&s.kit(&["logs", "svc"]).stdout).into_owned();
    assert!(logs.contains("startup: 10-app.start exited 0 after"), "{logs}");
    assert!(
        logs.contains(
            "startup: 30-draft.start not run: not executable (chmod +x .aegis/startup/30-draft.start)"
        ),
        "{logs}"
    );
    c.post_frame("nobash", &msg("1", "hi", "m3")).unwrap();
    assert_eq!(done_text(&until_done(&quiet, "m3")), "echo: hi");
    let logs = String::from_utf8_lossy(&s.kit(&["logs", "nobash"]).stdout).into_owned();
    assert!(
        logs.contains("startup: the scripts of .aegis/startup are not run: the bash tool is off"),
        "{logs}"
    );
    assert!(!home.join("kit/instances/nobash/workspace/boots.txt").exists());
}
