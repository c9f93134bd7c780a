//! Footprint of the release `aegis-agent`: `cargo bench -p aegis-e2e --bench agent`.
//!
//! Builds the static release binaries (scripts/release.sh), then measures binary size,
//! exec → listening time, idle RSS, the same from an empty page cache (time, major faults,
//! bytes read), and the per-delta overhead from an SSE chunk leaving
//! a local LLM server to its `assistant.delta` frame arriving at a direct-tether host, with
//! the peak RSS after that reply (plain HTTP, then HTTPS through a TLS front);
//! exec → listening with three MCP servers configured; and the tool overhead: the end of
//! a model response asking for a tool → the next model request (a no-op `bash`, a
//! `web_fetch` of a local page by address and by name, its address checks included, an MCP
//! call over stdio, one over Streamable HTTP, each with a server of the handshake
//! revision and one of the stateless 2026-07-28); what recaps of a long conversation cost:
//! their share of model requests and request bytes, and reply time with them on; and how
//! much of a long chat's input Claude's and OpenAI's prompt caches would serve, and what
//! Claude would bill for it, with the messages all at once, at a messaging pace and hours
//! apart (`aegis_e2e::prompt_cache`); what 64 skills in the workspace add to each
//! message's first model request (time and bytes); what a sign-in to a remote MCP server
//! costs once the user sent the address back; and what an MCP server's question for
//! the user adds: the user's answer sent → the agent's next model request, for a server of
//! each revision over stdio (the form read, the server answered or asked again, the result
//! stored).

use std::io::BufReader;
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aegis_e2e::bench::{
    cached_kib, evict_from_page_cache, major_faults, read_ahead_kib, release_dir, rss_kib, stats,
};
use aegis_e2e::http::{Responder, Server};
use aegis_e2e::proc::{free_port, temp_dir};
use aegis_e2e::tls::{self, TlsFront};
use tether::lines::LineReader;
use tether::rpc::Message;
use tether::{Frame, Session};

/// Deltas in the streamed reply.
const N: usize = 2000;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = release_dir();
    let agent = dir.join("aegis-agent");
    println!("binary: {}", agent.display());
    println!(
        "{:<44} {} bytes",
        "aegis-agent static release size",
        std::fs::metadata(&agent).unwrap().len()
    );

    // exec → listening, and idle RSS.
    let ws = temp_dir("bench-agent");
    let (startup, rss) = time_startup(&agent, &ws, 30, 5);
    stats("exec -> listening (harness mode)", "ms", startup);
    stats("idle RSS (harness mode)", "MiB", rss);
    cold_start(&agent, &ws);

    // Per-delta overhead, direct mode over a unix socket.
    let llm = Server::start(|_req, resp| {
        let mut r = resp.start_chunked(200, "text/event-stream");
        for _ in 0..N {
            std::thread::sleep(Duration::from_micros(500));
            let t = epoch().elapsed().as_nanos().to_string();
            let data = serde_json::json!({"choices":[{"delta":{"content": format!("{t} ")}}]});
            r.chunk(format!("data: {data}\n\n").as_bytes());
        }
        r.chunk(b"data: [DONE]\n\n");
        r.finish();
    });
    let lat = streamed_reply(&agent, &ws, &llm.url, &[], "");
    // The same over HTTPS (a TLS front, the test CA trusted through SSL_CERT_FILE), as a
    // hosted model is reached: what TLS adds to the agent's memory.
    let front = TlsFront::start(&llm.url);
    let ca = tls::fixture("ca.pem");
    let tls_lat = streamed_reply(
        &agent,
        &ws,
        &front.url,
        &[("SSL_CERT_FILE", ca.as_os_str())],
        ", over HTTPS",
    );
    stats("SSE chunk sent -> delta, over HTTPS (+ relay)", "µs", tls_lat);
    stats("SSE chunk sent -> delta frame received", "µs", lat.clone());
    // Baseline: the same stream read straight from the fake LLM by a plain SSE reader in
    // this process. The difference of medians is what the agent adds.
    let base = baseline_sse(&llm.url);
    stats("SSE chunk sent -> read directly (baseline)", "µs", base.clone());
    println!(
        "{:<44} {:.1} µs (difference of medians)",
        "added by the agent per delta",
        median(lat) - median(base)
    );
    cancel_latency(&agent);
    cancel_reaches_the_model(&agent);
    recap_cost(&agent, "1");
    recap_cost(&agent, "0");
    prompt_cache(&agent, Api::Claude, None);
    prompt_cache(&agent, Api::OpenAi, None);
    prompt_cache(&agent, Api::Claude, Some(("messaging pace", messaging_pace())));
    prompt_cache(&agent, Api::Claude, Some(("hours apart", hours_apart())));
    prompt_cache(&agent, Api::ClaudeRouted, None);
    prompt_cache(
        &agent,
        Api::ClaudeRouted,
        Some(("messaging pace", messaging_pace())),
    );
    history_load(&agent);
    skills_cost(&agent, 0);
    skills_cost(&agent, 64);
    startup_with_mcp(&agent);
    tool_overhead(&agent, "bash", r#"{"command": "true"}"#, None);
    background_job_told(&agent);
    web_fetch_overhead(&agent, "127.0.0.1");
    web_fetch_overhead(&agent, "localhost");
    fetches_in_one_round(&agent);
    pdf_shown(&agent);
    image_shown(&agent);
    cancel_during_tool(&agent);
    let stdio = serde_json::json!({"command": env!("CARGO_BIN_EXE_fake-mcp")});
    tool_overhead(
        &agent,
        "fake_echo",
        r#"{"text": "hi"}"#,
        Some(("MCP call", stdio)),
    );
    let remote = aegis_e2e::mcp_http::FakeMcpHttp::start(None);
    let http = serde_json::json!({"url": remote.url()});
    tool_overhead(
        &agent,
        "fake_echo",
        r#"{"text": "hi"}"#,
        Some(("MCP call over HTTP", http)),
    );
    let modern =
        serde_json::json!({"command": env!("CARGO_BIN_EXE_fake-mcp"), "env": {"FAKE_MCP_ERA": "modern"}});
    tool_overhead(
        &agent,
        "fake_echo",
        r#"{"text": "hi"}"#,
        Some(("MCP call, 2026-07-28", modern)),
    );
    let stateless = aegis_e2e::mcp_modern::FakeMcpModern::start(aegis_e2e::mcp_modern::Speaks::default());
    let http = serde_json::json!({"url": stateless.url()});
    tool_overhead(
        &agent,
        "fake_echo",
        r#"{"text": "hi"}"#,
        Some(("MCP call over HTTP, 2026-07-28", http)),
    );
    let stdio = serde_json::json!({"command": env!("CARGO_BIN_EXE_fake-mcp")});
    question_overhead(&agent, "2025-06-18", stdio);
    let modern =
        serde_json::json!({"command": env!("CARGO_BIN_EXE_fake-mcp"), "env": {"FAKE_MCP_ERA": "modern"}});
    question_overhead(&agent, "2026-07-28", modern);
    sign_in_overhead(&agent);
}

/// The address the user's browser went to after a sign-in (a remote MCP server's OAuth,
/// stand-ins for the server and its authorization server) sent → the agent's next model
/// request, over 30 sign-ins (direct mode): the code traded for tokens, the tokens kept, a
/// new session with the server and its tool list.
fn sign_in_overhead(agent: &Path) {
    let auth = aegis_e2e::oauth::FakeAuth::start();
    let remote = aegis_e2e::mcp_http::FakeMcpHttp::start_protected(&auth);
    let landed = |asked: &str| {
        let link = asked
            .lines()
            .find(|l| l.contains("/authorize?"))
            .expect("a sign-in page");
        let page = link.trim_end_matches(')').split_once("](").expect("a link").1;
        aegis_e2e::oauth::FakeAuth::browse(page)
    };
    let servers = serde_json::json!({"linear": {"url": remote.url()}});
    let samples = answer_overhead(agent, servers, "linear_sign_in", 30, landed);
    stats("MCP sign-in: address sent -> next model request", "ms", samples);
}

/// The user's answer to MCP server `fake`'s question (its `ask` tool, `server` its entry)
/// sent → the agent's next model request arrives, over 50 messages (direct mode): what the
/// agent and the server take between the answer and the model.
fn question_overhead(agent: &Path, revision: &str, server: serde_json::Value) {
    let servers = serde_json::json!({"fake": server});
    let samples = answer_overhead(agent, servers, "fake_ask", 50, |_| "account: octocat".into());
    stats(
        &format!("MCP question, {revision}: answer -> next model request"),
        "ms",
        samples,
    );
}

/// `n` times: a message the model answers by calling `tool` of the MCP `servers`, which
/// asks the user something; the answer `answer_to` gives for the question is sent, and the
/// time until the agent's next model request (with the tool's result) arrives is taken,
/// in ms.
fn answer_overhead(
    agent: &Path,
    servers: serde_json::Value,
    tool: &'static str,
    n: usize,
    answer_to: impl Fn(&str) -> String,
) -> Vec<f64> {
    use std::sync::{Arc, Mutex};
    let ws = temp_dir("bench-answer");
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    std::fs::write(
        ws.join(".aegis/agent.json"),
        serde_json::json!({"mcp": servers}).to_string(),
    )
    .unwrap();
    // When each model request with the tool's result arrived.
    let arrived: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&arrived);
    let llm = Server::start(move |req, resp| {
        let at = Instant::now();
        let body = req.json();
        let after_tool = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool");
        if after_tool {
            log.lock().unwrap().push(at);
        }
        tool_then_ok(resp, usize::from(after_tool), &[(tool, "{}")]);
    });
    let (mut child, conn) = direct_agent(agent, &ws, Some(&llm.url));
    let mut w = conn.try_clone().unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    let mut answered = Vec::new();
    for i in 0..n {
        let chat = Session::new("bench", "1");
        let go = Frame::user_message(chat.clone(), "go", None).with_msg_id(format!("m{i}"));
        let asked = exchange(&mut w, &mut lines, &go, "assistant.done")
            .text_payload()
            .unwrap_or_default();
        let answer = Frame::user_message(chat, &answer_to(&asked), None).with_msg_id(format!("a{i}"));
        answered.push(Instant::now());
        exchange(&mut w, &mut lines, &answer, "assistant.done");
    }
    let _ = child.kill();
    let _ = child.wait();
    let arrived = arrived.lock().unwrap().clone();
    answered
        .iter()
        .filter_map(|sent| {
            let next = arrived.iter().find(|at| *at >= sent)?;
            Some(next.duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// One {N}-delta reply from `url` in direct mode: prints the agent's peak RSS after it and
/// returns each delta's latency (SSE chunk sent → frame received), in µs.
fn streamed_reply(
    agent: &Path,
    ws: &Path,
    url: &str,
    env: &[(&str, &std::ffi::OsStr)],
    label: &str,
) -> Vec<f64> {
    let (mut child, conn) = direct_agent_with(agent, ws, Some(url), env);
    let mut writer = conn.try_clone().unwrap();
    let f = Frame::user_message(Session::new("bench", "1"), "go", None);
    std::io::Write::write_all(&mut writer, &Message::tether_frame(&f).encode()).unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    let mut lat = Vec::new();
    while let Ok(Some(line)) = lines.next_line() {
        let now = epoch().elapsed().as_nanos();
        // Skip the agent's other notifications (the keepalive lease).
        let Some(Ok(frame)) = Message::decode(line).unwrap().as_tether_frame() else {
            continue;
        };
        match frame.kind.as_str() {
            "assistant.delta" => {
                let sent: u128 = frame.text_payload().unwrap().trim().parse().unwrap();
                lat.push((now - sent) as f64 / 1000.0);
            }
            "assistant.done" => break,
            _ => {}
        }
    }
    // The anonymous part is the agent's own memory; the rest is code and data of the
    // binary mapped from the page cache. At the done, threads of the reply (the model's
    // stream reader) may still be ending, their stacks counted: a moment later they are not.
    let rss = |pid: u32| {
        format!(
            "{:.2} MiB (anon {} KiB)",
            rss_kib(pid) as f64 / 1024.0,
            aegis_e2e::bench::status_kib(pid, "RssAnon")
        )
    };
    let at_done = rss(child.id());
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "peak RSS after a {N}-delta reply{label}: {at_done}; 0.3 s later {}",
        rss(child.id())
    );
    let _ = child.kill();
    let _ = child.wait();
    lat
}

/// `control.cancel` written while `bash` runs `sleep 30` → `assistant.done` back (the
/// process group is killed first).
fn cancel_during_tool(agent: &Path) {
    let llm = Server::start(|_req, resp| {
        let mut r = resp.start_chunked(200, "text/event-stream");
        for p in aegis_e2e::llm::openai_tool_sse("", &[("c1", "bash", r#"{"command": "sleep 30"}"#)], 1000) {
            r.chunk(p.as_bytes());
        }
        r.finish();
    });
    measure_cancel(
        agent,
        &llm,
        "control.cancel -> assistant.done (bash sleep 30)",
        Duration::from_millis(20),
        |f| f.kind == "status.presence" && f.payload.as_ref().is_some_and(|p| p.get().contains("tool: bash")),
    );
}

/// Send 20 messages; when `ready` says the reply is under way, wait `settle` (so a tool's
/// process is running), write a cancel and time it until the `assistant.done`.
fn measure_cancel(agent: &Path, llm: &Server, label: &str, settle: Duration, ready: fn(&Frame) -> bool) {
    let times = cancelled_replies(agent, llm, settle, ready, |_| true);
    stats(label, "ms", times);
}

/// Up to 20 replies of the agent at `llm`, each cancelled once `ready` says it is under way
/// (after `settle`): cancel → `assistant.done` in ms. `after(cancel sent)` runs once each
/// reply is done; false ends the runs.
fn cancelled_replies(
    agent: &Path,
    llm: &Server,
    settle: Duration,
    ready: fn(&Frame) -> bool,
    mut after: impl FnMut(Instant) -> bool,
) -> Vec<f64> {
    let ws = temp_dir("bench-cancel");
    let (mut child, conn) = direct_agent(agent, &ws, Some(&llm.url));
    let mut w = conn.try_clone().unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    let mut times = Vec::new();
    for i in 0..20 {
        let f = Frame::user_message(Session::new("bench", "1"), "go", None).with_msg_id(format!("m{i}"));
        std::io::Write::write_all(&mut w, &Message::tether_frame(&f).encode()).unwrap();
        let mut sent = None;
        while let Ok(Some(line)) = lines.next_line() {
            let Some(Ok(fr)) = Message::decode(line).unwrap().as_tether_frame() else {
                continue;
            };
            if sent.is_none() && ready(&fr) {
                std::thread::sleep(settle);
                let c = Frame::new("control.cancel", Some(Session::new("bench", "1")));
                sent = Some(Instant::now());
                std::io::Write::write_all(&mut w, &Message::tether_frame(&c).encode()).unwrap();
            } else if fr.kind == "assistant.done" {
                break;
            }
        }
        let sent = sent.unwrap();
        times.push(sent.elapsed().as_secs_f64() * 1000.0);
        if !after(sent) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    times
}

/// Start the agent `n` times on `ws` (harness mode): exec → listening in ms, and for the
/// first `rss_runs` the idle RSS in MiB after 300 ms.
fn time_startup(agent: &Path, ws: &Path, n: usize, rss_runs: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut startup, mut rss) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        let mut child = start_listening(agent, ws);
        startup.push(t.elapsed().as_secs_f64() * 1000.0);
        if i < rss_runs {
            std::thread::sleep(Duration::from_millis(300));
            rss.push(rss_kib(child.id()) as f64 / 1024.0);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    (startup, rss)
}

/// Start the agent on `ws` in harness mode, with a provider configured as deployed (its
/// client is built at start; nothing is sent); returns once it listens.
fn start_listening(agent: &Path, ws: &Path) -> Child {
    let port = free_port();
    let child = Command::new(agent)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AEGIS_AGENT_ADDR", format!("127.0.0.1:{port}"))
        .env("AEGIS_WORKSPACE", ws)
        .env("OPENAI_API_KEY", "sk-bench")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_micros(50));
    }
    child
}

/// exec → listening with the binary dropped from the page cache first, as a cold-booted VM
/// finds it: the time, the page faults that read the disk, and how much of the file idling
/// needed read in (readahead included), over 20 runs.
fn cold_start(agent: &Path, ws: &Path) {
    let (mut times, mut faults, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        if let Err(e) = evict_from_page_cache(agent) {
            println!(
                "cold start: cannot drop {} from the page cache: {e}",
                agent.display()
            );
            return;
        }
        let t = Instant::now();
        let mut child = start_listening(agent, ws);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(300));
        faults.push(major_faults(child.id()) as f64);
        read.push(cached_kib(agent).unwrap_or(0) as f64);
        let _ = child.kill();
        let _ = child.wait();
    }
    stats("cold exec -> listening (not in page cache)", "ms", times);
    stats("cold start: major page faults until idle", "", faults);
    stats("cold start: binary read until idle", "KiB", read);
    match read_ahead_kib(agent) {
        Some(kib) => println!("(read-ahead of the binary's disk: {kib} KiB)"),
        None => println!("(read-ahead of the binary's disk: unknown)"),
    }
}

/// exec → listening with three MCP servers in agent.json (they start in the background).
fn startup_with_mcp(agent: &Path) {
    let ws = temp_dir("bench-mcp-start");
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    let server = serde_json::json!({"command": env!("CARGO_BIN_EXE_fake-mcp"), "env": {"FAKE_MCP_SLOW_START_MS": "200"}});
    std::fs::write(
        ws.join(".aegis/agent.json"),
        serde_json::json!({"mcp": {"one": server, "two": server, "three": server}}).to_string(),
    )
    .unwrap();
    let (startup, _) = time_startup(agent, &ws, 30, 0);
    stats("exec -> listening, 3 MCP servers configured", "ms", startup);
}

/// Model response asking for `tool` fully sent → the agent's next model request
/// arrives, over 50 messages (direct mode). Each sample includes running the tool.
/// The time the agent takes around `tool` (no-op bash, or the tool of MCP server `fake`
/// configured as `mcp`'s entry, named by its label).
fn tool_overhead(agent: &Path, tool: &str, args: &str, mcp: Option<(&str, serde_json::Value)>) {
    let kind = mcp.as_ref().map_or("no-op bash", |(label, _)| *label).to_string();
    let ws = temp_dir("bench-tool");
    if let Some((_, server)) = &mcp {
        std::fs::create_dir_all(ws.join(".aegis")).unwrap();
        std::fs::write(
            ws.join(".aegis/agent.json"),
            serde_json::json!({"mcp": {"fake": server}}).to_string(),
        )
        .unwrap();
    }
    tool_overhead_with(agent, &ws, &[(tool, args)], &kind, &[]);
}

/// A background job's end → the model asked about it, over 20 jobs (direct mode): the
/// job prints the time it ends (`date +%s%N`), and the model's request that brings its
/// message arrives; in between the agent reaps it, records it (`jobs.json`, synced),
/// makes its message and answers it as any.
fn background_job_told(agent: &Path) {
    use std::sync::{Arc, Mutex};
    use std::time::{SystemTime, UNIX_EPOCH};
    let ws = temp_dir("bench-job");
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let log = Arc::clone(&seen);
    let llm = Server::start(move |req, resp| {
        let arrived = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        // Answered by what the request ends with, not by counting (a request sent again on
        // a fresh connection counts twice).
        let body = req.json();
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        let said = aegis_e2e::llm::last_user_text(&req);
        let pieces = if last["role"] == "tool" {
            aegis_e2e::llm::openai_sse(&["ok"])
        } else if said.starts_with("[Background job") {
            let ended: Option<u128> = said.lines().find_map(|l| l.trim().parse().ok());
            if let Some(ended) = ended {
                log.lock()
                    .unwrap()
                    .push(arrived.saturating_sub(ended) as f64 / 1e6);
            }
            aegis_e2e::llm::openai_sse(&["ok"])
        } else {
            let args = r#"{"command": "date +%s%N", "background": true}"#;
            aegis_e2e::llm::openai_tool_sse("", &[("c1", "bash", args)], 1000)
        };
        let mut r = resp.start_chunked(200, "text/event-stream");
        for p in pieces {
            r.chunk(p.as_bytes());
        }
        r.finish();
    });
    let (mut child, conn) = direct_agent(agent, &ws, Some(&llm.url));
    // An agent without background jobs (an older build) never tells: given up after 10 s.
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    for i in 0..20 {
        let f = Frame::user_message(Session::new("bench", "1"), "go", None).with_msg_id(format!("m{i}"));
        exchange(&mut w, &mut lines, &f, "assistant.done");
        // Then the job's own reply.
        let mut told = false;
        while let Ok(Some(line)) = lines.next_line() {
            let Some(Ok(fr)) = Message::decode(line).unwrap().as_tether_frame() else {
                continue;
            };
            if fr.kind == "assistant.done" && fr.msg_id.as_deref().is_some_and(|m| m.starts_with("job-")) {
                told = true;
                break;
            }
        }
        if !told {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let samples = seen.lock().unwrap().clone();
    if samples.is_empty() {
        return println!("background job ends -> model asked about it: this build has no background jobs");
    }
    stats("background job ends -> model asked about it", "ms", samples);
}

/// `web_fetch` of a small page on this machine, named by `host` (opened with
/// `AEGIS_WEB_PRIVATE_HOSTS`): the tool's own cost, its address checks included.
fn web_fetch_overhead(agent: &Path, host: &str) {
    let page = Server::start(|_req, resp| {
        resp.send(
            200,
            &[("content-type", "text/html")],
            b"<html><body><p>A page.</p></body></html>",
        )
    });
    let args = serde_json::json!({"url": format!("http://{host}:{}/", page.port())}).to_string();
    let open = std::ffi::OsStr::new("127.0.0.1,localhost");
    let kind = format!("web_fetch by {host}");
    tool_overhead_with(
        agent,
        &temp_dir("bench-tool"),
        &[("web_fetch", &args)],
        &kind,
        &[("AEGIS_WEB_PRIVATE_HOSTS", open)],
    );
}

/// Three `web_fetch` calls the model asks for in one round, each page taking 200 ms to
/// answer: the time from the model's request that asked for them to its next one. Run
/// one after another they take the sum; at once, the slowest.
fn fetches_in_one_round(agent: &Path) {
    let page = Server::start(|_req, resp| {
        std::thread::sleep(Duration::from_millis(200));
        resp.send(
            200,
            &[("content-type", "text/html")],
            b"<html><body><p>A slow page.</p></body></html>",
        )
    });
    let args: Vec<String> = (1..=3)
        .map(|i| serde_json::json!({"url": format!("http://127.0.0.1:{}/{i}", page.port())}).to_string())
        .collect();
    let calls: Vec<(&str, &str)> = args.iter().map(|a| ("web_fetch", a.as_str())).collect();
    let open = std::ffi::OsStr::new("127.0.0.1");
    tool_overhead_with(
        agent,
        &temp_dir("bench-tool"),
        &calls,
        "three 200 ms pages in one round",
        &[("AEGIS_WEB_PRIVATE_HOSTS", open)],
    );
}

/// `read_file` of a 2 MB PDF shown whole (agent.json turns PDFs on for the stand-in): the
/// copy into the blob store, its base64 and the request that carries it, from the
/// response asking for it to the request with it.
fn pdf_shown(agent: &Path) {
    let ws = temp_dir("bench-tool");
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend((0u32..2 * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(ws.join("report.pdf"), pdf).unwrap();
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    std::fs::write(
        ws.join(".aegis/agent.json"),
        serde_json::json!({"tools": {"read_file": {"pdf": true}}}).to_string(),
    )
    .unwrap();
    tool_overhead_with(
        agent,
        &ws,
        &[("read_file", r#"{"path": "report.pdf"}"#)],
        "a 2 MB PDF shown whole",
        &[],
    );
}

/// `read_file` of a 1 MB PNG shown as a picture (agent.json turns images on for the
/// stand-in), timed as [`pdf_shown`].
fn image_shown(agent: &Path) {
    let ws = temp_dir("bench-tool");
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend((0u32..1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(ws.join("chart.png"), png).unwrap();
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    std::fs::write(
        ws.join(".aegis/agent.json"),
        serde_json::json!({"tools": {"read_file": {"images": true}}}).to_string(),
    )
    .unwrap();
    tool_overhead_with(
        agent,
        &ws,
        &[("read_file", r#"{"path": "chart.png"}"#)],
        "a 1 MB PNG shown",
        &[],
    );
}

/// The time from the model's response asking for `calls` to the request with their
/// results, over 50 messages, in the workspace `ws` (set up by the caller).
fn tool_overhead_with(
    agent: &Path,
    ws: &Path,
    calls: &[(&str, &str)],
    kind: &str,
    env: &[(&str, &std::ffi::OsStr)],
) {
    use std::sync::{Arc, Mutex};
    // Per request in the order they arrived: whether it brings the tools' results, when it
    // arrived, when its response was written. The next request can arrive before the
    // handler of this one is done, so each is told apart by what it brings.
    type Times = Vec<(bool, Instant, Option<Instant>)>;
    let times: Arc<Mutex<Times>> = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&times);
    let label = format!("tool overhead, {kind} ({})", calls[0].0);
    let calls: Vec<(String, String)> = calls
        .iter()
        .map(|(t, a)| (t.to_string(), a.to_string()))
        .collect();
    let llm = Server::start(move |req, resp| {
        let arrived = Instant::now();
        // The round's results end the request, or a message showing the documents they
        // attached follows them.
        let attaching = |m: &&serde_json::Value| {
            m["role"] == "user"
                && m["content"].as_array().is_some_and(|parts| {
                    parts
                        .iter()
                        .any(|p| p["type"] == "file" || p["type"] == "image_url")
                })
        };
        let after_tool = req.json()["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| !attaching(m)))
            .is_some_and(|m| m["role"] == "tool");
        let n = {
            let mut log = log.lock().unwrap();
            log.push((after_tool, arrived, None));
            log.len() - 1
        };
        let calls: Vec<(&str, &str)> = calls.iter().map(|(t, a)| (t.as_str(), a.as_str())).collect();
        tool_then_ok(resp, usize::from(after_tool), &calls);
        log.lock().unwrap()[n].2 = Some(Instant::now());
    });
    let (mut child, conn) = direct_agent_with(agent, ws, Some(&llm.url), env);
    let mut w = conn.try_clone().unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    for i in 0..50 {
        let f = Frame::user_message(Session::new("bench", "1"), "go", None).with_msg_id(format!("m{i}"));
        exchange(&mut w, &mut lines, &f, "assistant.done");
    }
    let _ = child.kill();
    let _ = child.wait();
    let t = times.lock().unwrap().clone();
    let samples: Vec<f64> = t
        .windows(2)
        .filter_map(|p| match (p[0], p[1]) {
            ((false, _, Some(asked)), (true, arrived, _)) => {
                Some(arrived.duration_since(asked).as_secs_f64() * 1000.0)
            }
            _ => None,
        })
        .collect();
    stats(&label, "ms", samples);
}

/// What skills in the workspace cost each message: the time from the user message leaving
/// the host to the model's request arriving (the skills are looked for again in between,
/// and their list ends the system prompt), and the bytes of that request, with `n` skills
/// of a realistic description (about 200 characters) against none.
fn skills_cost(agent: &Path, n: usize) {
    use std::sync::{Arc, Mutex};
    let ws = temp_dir("bench-skills");
    for i in 0..n {
        let dir = ws.join(format!(".agents/skills/skill-{i:02}"));
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(
            dir.join("SKILL.md"),
            format!(
                "---\nname: skill-{i:02}\ndescription: Turn a spreadsheet of sales figures into a short weekly report with totals per region and the three biggest changes. Use when: the user sends an .xlsx or .csv of sales, or asks for report number {i}.\n---\n# Instructions\n\n{}\n",
                "Step. ".repeat(400)
            ),
        )
        .unwrap();
        std::fs::write(dir.join("scripts/run.py"), "print('hi')\n").unwrap();
    }
    // (request arrived, its body's bytes) per request, in order.
    let log: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    let llm = Server::start(move |req, resp| {
        seen.lock().unwrap().push((Instant::now(), req.body.len()));
        let mut r = resp.start_chunked(200, "text/event-stream");
        for p in aegis_e2e::llm::openai_sse(&["ok"]) {
            r.chunk(p.as_bytes());
        }
        r.finish();
    });
    let (mut child, conn) = direct_agent(agent, &ws, Some(&llm.url));
    let mut w = conn.try_clone().unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    let mut sent = Vec::new();
    for i in 0..50 {
        // A session each: the request holds the system prompt and this one message.
        let f = Frame::user_message(Session::new("bench", i.to_string()), "go", None)
            .with_msg_id(format!("m{i}"));
        sent.push(Instant::now());
        exchange(&mut w, &mut lines, &f, "assistant.done");
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().unwrap().clone();
    let samples: Vec<f64> = sent
        .iter()
        .zip(&log)
        .map(|(s, (arrived, _))| arrived.duration_since(*s).as_secs_f64() * 1000.0)
        .collect();
    stats(&format!("message -> model request, {n} skills"), "ms", samples);
    println!(
        "{:<46} {} bytes",
        format!("request size, {n} skills"),
        log.first().map_or(0, |(_, b)| *b)
    );
}

/// Start the agent in direct mode against a unix socket in `ws`; returns the process and
/// the accepted tether connection.
fn direct_agent(agent: &Path, ws: &Path, llm: Option<&str>) -> (std::process::Child, UnixStream) {
    direct_agent_with(agent, ws, llm, &[])
}

fn direct_agent_with(
    agent: &Path,
    ws: &Path,
    llm: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, UnixStream) {
    let sock = ws.join("tether.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let mut cmd = Command::new(agent);
    cmd.env_clear()
        .env("AEGIS_TETHER", format!("unix:{}", sock.display()))
        .env("AEGIS_WORKSPACE", ws)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null());
    if let Some(url) = llm {
        cmd.env("OPENAI_BASE_URL", url);
    }
    cmd.envs(env.iter().copied());
    let child = cmd.spawn().unwrap();
    let (conn, _) = listener.accept().unwrap();
    (child, conn)
}

/// Write `f` on the tether `w`, then read `lines` up to the first frame of `kind`.
/// The model's answer to request `n` of a message's two: `calls` (tool, arguments) in
/// one round, then "ok".
fn tool_then_ok(resp: Responder, n: usize, calls: &[(&str, &str)]) {
    let ids: Vec<String> = (1..=calls.len()).map(|i| format!("c{i}")).collect();
    let calls: Vec<(&str, &str, &str)> = ids
        .iter()
        .zip(calls)
        .map(|(id, (tool, args))| (id.as_str(), *tool, *args))
        .collect();
    let pieces = if n.is_multiple_of(2) {
        aegis_e2e::llm::openai_tool_sse("", &calls, 1000)
    } else {
        aegis_e2e::llm::openai_sse(&["ok"])
    };
    let mut r = resp.start_chunked(200, "text/event-stream");
    for p in pieces {
        r.chunk(p.as_bytes());
    }
    r.finish();
}

/// Send `f` and wait for the first frame of `kind` for it, which is returned.
fn exchange(
    w: &mut UnixStream,
    lines: &mut LineReader<BufReader<UnixStream>>,
    f: &Frame,
    kind: &str,
) -> Frame {
    std::io::Write::write_all(w, &Message::tether_frame(f).encode()).unwrap();
    while let Ok(Some(line)) = lines.next_line() {
        let Some(Ok(fr)) = Message::decode(line).unwrap().as_tether_frame() else {
            continue;
        };
        // A restarted agent may send again what it had sent before: only this one's.
        if fr.kind == kind && (f.msg_id.is_none() || fr.msg_id == f.msg_id) {
            return fr;
        }
    }
    panic!("the agent closed the connection before {kind}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn baseline_sse(url: &str) -> Vec<f64> {
    use std::io::BufRead;
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let resp = agent.post(format!("{url}/chat/completions")).send("{}").unwrap();
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut lat = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let now = epoch().elapsed().as_nanos();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let sent: u128 = v["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        lat.push((now - sent) as f64 / 1000.0);
    }
    lat
}

/// A conversation of 120 messages (a 60-character question, a 400-character answer) with
/// the default window (50 turns, 24,000 characters): how many model requests are recaps,
/// their share of request bytes, and user.message → assistant.done with recaps
/// (`AEGIS_CONTEXT_RECAP`) on or off.
fn recap_cost(agent: &Path, on: &str) {
    use std::sync::{Arc, Mutex};
    let ws = temp_dir("bench-recap");
    // (recap?, request body bytes) per request.
    let seen: Arc<Mutex<Vec<(bool, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let llm = Server::start(move |req, resp| {
        let recap = String::from_utf8_lossy(&req.body).contains("You keep the memory of a long chat");
        log.lock().unwrap().push((recap, req.body.len()));
        let text = if recap {
            "The user asked about numbers. ".repeat(20)
        } else {
            "word ".repeat(80)
        };
        let mut r = resp.start_chunked(200, "text/event-stream");
        for p in aegis_e2e::llm::openai_sse(&[&text]) {
            r.chunk(p.as_bytes());
        }
        r.finish();
    });
    let env = [
        ("AEGIS_CONTEXT_RECAP", std::ffi::OsStr::new(on)),
        ("AEGIS_TOOLS", std::ffi::OsStr::new("none")),
    ];
    let (mut child, conn) = direct_agent_with(agent, &ws, Some(&llm.url), &env);
    let mut w = conn.try_clone().unwrap();
    let mut lines = LineReader::new(BufReader::new(conn));
    let mut times = Vec::new();
    for i in 0..120 {
        let text = format!(
            "question {i:03}: what is {i} times {i}, and why? {}",
            "-".repeat(20)
        );
        let f = Frame::user_message(Session::new("bench", "1"), &text, None).with_msg_id(format!("m{i}"));
        let t = Instant::now();
        exchange(&mut w, &mut lines, &f, "assistant.done");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // The last recap may still be on its way.
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.lock().unwrap().clone();
    let recaps: Vec<usize> = seen.iter().filter(|(r, _)| *r).map(|(_, n)| *n).collect();
    let all: usize = seen.iter().map(|(_, n)| n).sum();
    let label = if on == "1" { "on" } else { "off" };
    stats(
        &format!("reply time, 120-message chat, recaps {label}"),
        "ms",
        times,
    );
    println!(
        "{:<44} {} of {} model requests, {:.1} % of request bytes ({} KiB of {} KiB)",
        format!("recap requests, recaps {label}"),
        recaps.len(),
        seen.len(),
        100.0 * recaps.iter().sum::<usize>() as f64 / all as f64,
        recaps.iter().sum::<usize>() / 1024,
        all / 1024
    );
}

/// A chat of 120 messages with every tool on, 20 memories (each message's words choose
/// some), a 400-character answer and, every fourth message, a tool round: how much of
/// the input Claude's cache or OpenAI's would serve (by `api`), and what Claude would bill.
/// `pace`: the pause before each message, in seconds; `None`: all at once. With pauses,
/// the agent is started for each message and the session's times moved back by the
/// pause, so it sees the pace (the cache stand-in's clock moves with them, and the time
/// stamps the moved times change in old turns are taken out before counting).
fn prompt_cache(agent: &Path, api: Api, pace: Option<(&str, Vec<u64>)>) {
    use aegis_e2e::llm::{anthropic_sse, anthropic_tool_sse, openai_sse, openai_tool_sse};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let ws = temp_dir("bench-cache");
    let topics = [
        "teal", "Lyon", "invoices", "Rust", "garden", "piano", "Berlin", "backups", "cats", "tennis",
        "Kafka", "coffee", "budget", "Friday", "Postgres", "bicycle", "Japan", "printer", "tax", "chess",
    ];
    std::fs::create_dir_all(ws.join(".aegis/memory")).unwrap();
    let memories: String = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let m = serde_json::json!({"id": format!("m-{i}"), "scope": "workspace",
                "text": format!("The user cares about {t} and wants short answers on {t}"), "tags": [], "ts": "2026-12-01T10:00:00Z"});
            format!("{m}\n")
        })
        .collect();
    std::fs::write(ws.join(".aegis/memory/memories.jsonl"), memories).unwrap();
    let clock = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let bodies: Arc<Mutex<Vec<(serde_json::Value, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let (log, now, busy) = (Arc::clone(&bodies), Arc::clone(&clock), Arc::clone(&in_flight));
    let llm = Server::start(move |req, resp| {
        busy.fetch_add(1, Ordering::SeqCst);
        let body = req.json();
        let text = body.to_string();
        log.lock().unwrap().push((body, now.load(Ordering::SeqCst)));
        let answered_tool = text
            .rfind("tool_result")
            .max(text.rfind("\"role\":\"tool\""))
            .unwrap_or(0);
        let recap = text.contains("You keep the memory of a long chat");
        let wants_tool = !recap && text.rfind("run it").is_some_and(|at| at > answered_tool);
        let answer = "The answer, in some detail. ".repeat(14);
        let call = [("c1", "bash", r#"{"command": "true"}"#)];
        let pieces = match (api == Api::Claude, wants_tool) {
            (true, true) => anthropic_tool_sse("", &call, 1000),
            (true, false) => anthropic_sse(&[&answer]),
            (false, true) => openai_tool_sse("", &call, 1000),
            (false, false) => openai_sse(&[&answer]),
        };
        let mut r = resp.start_chunked(200, "text/event-stream");
        for p in pieces {
            r.chunk(p.as_bytes());
        }
        r.finish();
        busy.fetch_sub(1, Ordering::SeqCst);
    });
    let mut env: Vec<(&str, &std::ffi::OsStr)> = Vec::new();
    let url = llm.url.clone();
    match api {
        Api::Claude => {
            env.push(("ANTHROPIC_API_KEY", std::ffi::OsStr::new("k")));
            env.push(("ANTHROPIC_BASE_URL", std::ffi::OsStr::new(&url)));
        }
        // A router's name for Claude, in the Chat Completions dialect (the stand-in is
        // not at openrouter.ai: `openai/` picks the dialect).
        Api::ClaudeRouted => env.push((
            "AEGIS_MODEL",
            std::ffi::OsStr::new("openai/anthropic/claude-sonnet-4.6"),
        )),
        Api::OpenAi => {}
    }
    let start = || direct_agent_with(agent, &ws, (api != Api::Claude).then_some(url.as_str()), &env);
    let stop = |mut child: Child| {
        // Until the recap a reply may start is written.
        let mut quiet = 0;
        while quiet < 4 {
            std::thread::sleep(Duration::from_millis(50));
            quiet = if in_flight.load(Ordering::SeqCst) == 0 {
                quiet + 1
            } else {
                0
            };
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut running = None;
    for i in 0..120 {
        if let Some((_, gaps)) = &pace {
            if let Some((child, _)) = running.take() {
                stop(child);
            }
            clock.fetch_add(gaps[i], Ordering::SeqCst);
            move_times_back(&ws.join("sessions"), gaps[i]);
        }
        let (child, conn) = running.take().unwrap_or_else(start);
        let mut w = conn.try_clone().unwrap();
        let mut lines = LineReader::new(BufReader::new(conn.try_clone().unwrap()));
        let tool = if i % 4 == 3 { " run it" } else { "" };
        let text = format!(
            "message {i}: tell me about {} please{tool}",
            topics[i * 7 % topics.len()]
        );
        let f = Frame::user_message(Session::new("bench", "1"), &text, None).with_msg_id(format!("m{i}"));
        exchange(&mut w, &mut lines, &f, "assistant.done");
        running = Some((child, conn));
    }
    if let Some((child, _)) = running {
        stop(child);
    }
    let bodies = bodies.lock().unwrap().clone();
    let (name, usage) = match api {
        Api::Claude | Api::ClaudeRouted => {
            let mut cache = aegis_e2e::prompt_cache::Anthropic::default();
            bodies.iter().for_each(|(b, at)| {
                let b = without_stamps(b);
                // What the router sends Anthropic.
                let b = match api {
                    Api::ClaudeRouted => aegis_e2e::prompt_cache::anthropic_of_openai(&b),
                    _ => b,
                };
                cache.request_at(&b, *at);
            });
            let name = if api == Api::Claude {
                "Claude"
            } else {
                "Claude via a router"
            };
            (name, cache.usage)
        }
        Api::OpenAi => {
            let mut cache = aegis_e2e::prompt_cache::OpenAi::default();
            bodies.iter().for_each(|(b, _)| {
                cache.request(b);
            });
            ("OpenAI", cache.usage)
        }
    };
    let billed = if api == Api::OpenAi {
        String::new()
    } else {
        format!(", billed {:.2}× input", usage.claude_cost())
    };
    let paced = pace.map_or(String::new(), |(what, _)| format!(", {what}"));
    println!(
        "{:<44} {:.1} % of {} KiB input read from the cache, {:.1} % written{billed} ({} requests)",
        format!("prompt cache, {name}, 120-message chat{paced}"),
        usage.read_percent(),
        usage.input / 1024,
        100.0 * usage.written as f64 / usage.input.max(1) as f64,
        bodies.len()
    );
}

/// Which API the prompt cache bench speaks and whose cache it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// Anthropic's Messages API.
    Claude,
    /// OpenAI's Chat Completions.
    OpenAi,
    /// Claude through an OpenAI-compatible router (OpenRouter): Chat Completions, the
    /// router's conversion counted against Claude's cache.
    ClaudeRouted,
}

/// The pauses before 120 messages of a chat over a messaging app: mostly within minutes,
/// often after a quarter of an hour or so, now and then after hours (a fixed sequence).
fn messaging_pace() -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..120)
        .map(|_| match next(10) {
            0..=5 => 20 + next(220),         // 20 s to 4 min
            6..=8 => 6 * 60 + next(44 * 60), // 6 to 50 min
            _ => 2 * 3600 + next(10 * 3600), // 2 to 12 h
        })
        .collect()
}

/// The pauses before 120 messages of a chat whose messages come hours apart.
fn hours_apart() -> Vec<u64> {
    (0..120u64).map(|i| 3 * 3600 + i * 7919 % (17 * 3600)).collect()
}

/// The times in the session files under `dir` (turns, a recap's mark) moved `secs` back.
fn move_times_back(dir: &Path, secs: u64) {
    fn shift(v: &mut serde_json::Value, secs: u64) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, v) in o.iter_mut() {
                    match (k.as_str(), v.as_str().map(humantime::parse_rfc3339_weak)) {
                        ("ts", Some(Ok(t))) => {
                            *v = tether::time::rfc3339(t - Duration::from_secs(secs)).into()
                        }
                        _ => shift(v, secs),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| shift(v, secs)),
            _ => {}
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap();
        let moved: String = text
            .lines()
            .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(mut v) => {
                    shift(&mut v, secs);
                    format!("{v}\n")
                }
                Err(_) => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&path, moved).unwrap();
    }
}

/// `body` with the sending times the agent opens user turns with taken out.
fn without_stamps(body: &serde_json::Value) -> serde_json::Value {
    match body {
        serde_json::Value::String(s) => aegis_e2e::llm::unstamped(s).into(),
        serde_json::Value::Array(a) => a.iter().map(without_stamps).collect(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), without_stamps(v))).collect(),
        other => other.clone(),
    }
}

/// `control.cancel` written → `assistant.done` back, while the LLM stream is stalled
/// (the worst case: nothing arrives that would wake the reader).
fn cancel_latency(agent: &Path) {
    let llm = Server::start(|_req, resp| {
        let mut r = resp.start_chunked(200, "text/event-stream");
        r.chunk(b"data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n");
        std::thread::sleep(Duration::from_secs(20));
    });
    measure_cancel(
        agent,
        &llm,
        "control.cancel -> assistant.done (stalled stream)",
        Duration::ZERO,
        |f| f.kind == "assistant.delta",
    );
}

/// `control.cancel` written → the model's server sees its connection close, while the
/// model sends nothing (a reasoning model thinking): how soon it can stop generating.
/// Builds before 2026-12-06 (eighth stop) close it only at the read timeout.
fn cancel_reaches_the_model(agent: &Path) {
    let (tx, closed) = std::sync::mpsc::channel::<Instant>();
    let llm = Server::start(move |_req, resp| {
        let mut r = resp.start_chunked(200, "text/event-stream");
        r.chunk(b"data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n");
        if r.closed_within(Duration::from_secs(20)) {
            let _ = tx.send(Instant::now());
        }
    });
    let mut times = Vec::new();
    let delta = |f: &Frame| f.kind == "assistant.delta";
    cancelled_replies(agent, &llm, Duration::ZERO, delta, |sent| {
        match closed.recv_timeout(Duration::from_secs(10)) {
            Ok(at) => {
                times.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                true
            }
            Err(_) => {
                println!("control.cancel -> model sees its connection close: not within 10 s");
                false
            }
        }
    });
    if !times.is_empty() {
        stats(
            "control.cancel -> model sees its connection close (silent model)",
            "ms",
            times,
        );
    }
}

/// First message of a session after a cold start, as its history grows: user.message
/// written → `status.presence` back (sent once the history is loaded and the turn stored).
fn history_load(agent: &Path) {
    for turns in [1usize, 100, 10_000] {
        let ws = temp_dir(&format!("bench-hist-{turns}"));
        std::fs::create_dir_all(ws.join("sessions")).unwrap();
        let mut file = String::new();
        for i in 0..turns {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let content = format!("turn {i}: {}", "lorem ipsum dolor sit amet ".repeat(4));
            file.push_str(
                &serde_json::json!({"role": role, "content": content, "ts": "2026-01-01T00:00:00.000Z"})
                    .to_string(),
            );
            file.push('\n');
        }
        std::fs::write(ws.join("sessions/bench_1.jsonl"), &file).unwrap();
        let mut times = Vec::new();
        for _ in 0..10 {
            let (mut child, conn) = direct_agent(agent, &ws, None);
            let mut w = conn.try_clone().unwrap();
            let f = Frame::user_message(Session::new("bench", "1"), "hi", None);
            let t = Instant::now();
            let mut lines = LineReader::new(BufReader::new(conn));
            exchange(&mut w, &mut lines, &f, "status.presence");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let _ = child.kill();
            let _ = child.wait();
            // Keep the file at its size: drop the turns this run appended.
            std::fs::write(ws.join("sessions/bench_1.jsonl"), &file).unwrap();
        }
        stats(
            &format!(
                "first message, history of {turns} turns ({} KiB)",
                file.len() / 1024
            ),
            "ms",
            times,
        );
    }
}
