//! `aegis-kit serve` under measurement: `cargo bench -p aegis-e2e --bench serve`.
//!
//! 1. wake latency, POST → the agent's `event.ack` back on the stream, from stopped (cold
//!    start), paused (resume) and running; in the default sandbox and without one;
//! 2. egress stream throughput to 1 and to 10 readers (a stand-in agent blasts frames);
//! 3. serve RSS and CPU with 1,000 idle (stopped) instances;
//! 4. a model on the host (`host:` through serve's proxy) against the same server reached
//!    directly: a 500-delta reply, first delta and whole reply.

use std::path::Path;
use std::time::{Duration, Instant};

use aegis_e2e::bench::{cpu_ticks, maybe_blast, release_dir, rss_kib, stats};
use aegis_e2e::llm::{openai_sse, FakeLlm, Reply};
use aegis_e2e::proc::{temp_dir, without_network_vars, Proc, TempDir};
use serde_json::json;
use tether::frame::Session;
use tether::{AegisClient, Frame};

fn serve(dir: &Path, home: &Path, agent: &Path, extra: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new(dir.join("aegis-kit"));
    without_network_vars(&mut cmd)
        .env("AEGIS_HOME", home)
        .env("RUST_LOG", "warn")
        .arg("--socket")
        .arg(home.join("aegisd.sock"))
        .arg("serve")
        .arg("--agent")
        .arg(agent)
        .args(extra);
    let p = Proc::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(home.join("aegisd.sock")).is_err() {
        assert!(Instant::now() < deadline, "serve did not start: {}", p.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

fn wait_state(c: &AegisClient, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.request("GET", &format!("/v1/instances/{name}"), None).unwrap()["state"] != state {
        assert!(Instant::now() < deadline, "{name} never {state}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wake_latency(dir: &Path, extra: &[&str], label: &str) {
    let home = temp_dir("bench-wake");
    let _s = serve(dir, &home, &dir.join("aegis-agent"), extra);
    let c = AegisClient::new(home.join("aegisd.sock"));
    c.request("POST", "/v1/instances", Some(&json!({"name": "a"})))
        .unwrap();
    let mut stream = c.stream("a", None).unwrap();
    let mut one = |i: usize| -> f64 {
        let f = Frame::user_message(Session::new("bench", "1"), "ping", None).with_msg_id(format!("w{i}"));
        let t = Instant::now();
        c.post_frame("a", &f).unwrap();
        loop {
            let fr = stream.next().unwrap().unwrap();
            if fr.kind == "event.ack" && fr.msg_id.as_deref() == Some(&format!("w{i}")) {
                return t.elapsed().as_secs_f64() * 1000.0;
            }
        }
    };
    let (mut cold, mut resume, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..60 {
        match i % 3 {
            0 => {
                c.request("POST", "/v1/instances/a/stop", None).unwrap();
                wait_state(&c, "a", "stopped");
                cold.push(one(i));
            }
            1 => {
                c.request("POST", "/v1/instances/a/pause", None).unwrap();
                resume.push(one(i));
            }
            _ => warm.push(one(i)),
        }
        // Let the reply (no LLM configured: an immediate notice) drain.
        std::thread::sleep(Duration::from_millis(30));
    }
    stats(&format!("{label}: POST -> agent ack, cold start"), "ms", cold);
    stats(&format!("{label}: POST -> agent ack, resume"), "ms", resume);
    stats(&format!("{label}: POST -> agent ack, running"), "ms", warm);
}

fn throughput(dir: &Path) {
    // The stand-in agent is this bench binary, under the name serve expects.
    let home = temp_dir("bench-tput");
    let fake = home.join("aegis-agent");
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &fake).unwrap();
    let _s = serve(dir, &home, &fake, &[]);
    let c = AegisClient::new(home.join("aegisd.sock"));
    const N: usize = 9_000; // within the store's 10,000-frame history
    for readers in [1usize, 10] {
        let name = format!("blast{readers}");
        c.request(
            "POST",
            "/v1/instances",
            Some(&json!({"name": name, "env": {"BENCH_BLAST": N.to_string()}})),
        )
        .unwrap();
        let start = c.request("GET", &format!("/v1/instances/{name}"), None).unwrap()["last_seq"]
            .as_u64()
            .unwrap();
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let (c, name) = (c.clone(), name.clone());
                std::thread::spawn(move || {
                    let s = c.stream(&name, Some(start)).unwrap();
                    let mut t0 = None;
                    let mut n = 0;
                    for f in s {
                        f.unwrap();
                        t0.get_or_insert_with(Instant::now);
                        n += 1;
                        if n == N {
                            break;
                        }
                    }
                    N as f64 / t0.unwrap().elapsed().as_secs_f64()
                })
            })
            .collect();
        c.request("POST", &format!("/v1/instances/{name}/start"), None)
            .unwrap();
        let rates: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let total: f64 = rates.iter().sum();
        stats(
            &format!("egress stream, {readers} reader(s), per reader"),
            "frames/s",
            rates,
        );
        println!(
            "{:<46} {:.0} frames/s delivered in total",
            format!("egress stream, {readers} reader(s)"),
            total
        );
        c.request("POST", &format!("/v1/instances/{name}/stop"), None)
            .unwrap();
    }
}

fn idle_instances(dir: &Path) {
    let home = temp_dir("bench-idle");
    let s = serve(dir, &home, &dir.join("aegis-agent"), &[]);
    let c = AegisClient::new(home.join("aegisd.sock"));
    let before = rss_kib(s.pid());
    for i in 0..1000 {
        c.request(
            "POST",
            "/v1/instances",
            Some(&json!({"name": format!("idle-{i}")})),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let t0 = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(10));
    let ticks = cpu_ticks(s.pid()) - t0;
    println!(
        "{:<46} {:.2} MiB (empty serve: {:.2} MiB)",
        "serve RSS with 1,000 stopped instances",
        rss_kib(s.pid()) as f64 / 1024.0,
        before as f64 / 1024.0
    );
    println!(
        "{:<46} {:.2} % of one core over 10 s ({ticks} ticks)",
        "serve CPU with 1,000 stopped instances",
        ticks as f64 / 10.0
    );
    drop(s);
    // A restart re-adopts all of them.
    let t = Instant::now();
    let _s = serve(dir, &home, &dir.join("aegis-agent"), &[]);
    while c.request("GET", "/v1/instances", None).unwrap()["instances"]
        .as_array()
        .map_or(0, Vec::len)
        < 1000
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "{:<46} {:.1} ms",
        "serve restart until 1,000 instances are listed",
        t.elapsed().as_secs_f64() * 1000.0
    );
}

fn host_model(dir: &Path) {
    const DELTAS: usize = 500;
    let words: Vec<String> = (0..DELTAS).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let llm = FakeLlm::scripted(vec![Reply::sse(openai_sse(&refs))]);
    let (home, _s) = serve_with_host_model(dir, &llm, "bench-host-llm");
    let c = AegisClient::new(home.join("aegisd.sock"));
    c.put_secret("OPENAI_API_KEY", "sk-bench").unwrap();
    let make = |name: &str, env: serde_json::Value| {
        let body = json!({"name": name, "secrets": ["OPENAI_API_KEY"], "env": env});
        c.request("POST", "/v1/instances", Some(&body)).unwrap();
    };
    make(
        "direct",
        json!({"OPENAI_BASE_URL": llm.url(), "RUST_LOG": "warn"}),
    );
    make(
        "via-host",
        json!({"AEGIS_MODEL": "host:local/m", "RUST_LOG": "warn"}),
    );
    let mut streams = [
        ("direct", c.stream("direct", None).unwrap()),
        ("via-host", c.stream("via-host", None).unwrap()),
    ];
    let mut first = [Vec::new(), Vec::new()];
    let mut whole = [Vec::new(), Vec::new()];
    for i in 0..22 {
        for (k, (name, stream)) in streams.iter_mut().enumerate() {
            // A fresh session each time: the context stays one message long.
            let f = Frame::user_message(Session::new("bench", format!("{i}")), "go", None)
                .with_msg_id(format!("h{i}"));
            let t = Instant::now();
            c.post_frame(name, &f).unwrap();
            let mut seen_first = None;
            loop {
                let fr = stream.next().unwrap().unwrap();
                if fr.msg_id.as_deref() != Some(&format!("h{i}")) {
                    continue;
                }
                if fr.kind == "assistant.delta" && seen_first.is_none() {
                    seen_first = Some(t.elapsed().as_secs_f64() * 1000.0);
                }
                if fr.kind == "assistant.done" {
                    assert!(fr.text_payload().unwrap().ends_with(&format!("w{} ", DELTAS - 1)));
                    break;
                }
            }
            // The first two are warm-up (boot, first connection).
            if i >= 2 {
                first[k].push(seen_first.unwrap());
                whole[k].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, h) = (median(&whole[0]), median(&whole[1]));
    for (k, label) in ["model reached directly", "host: model through serve"]
        .iter()
        .enumerate()
    {
        stats(&format!("{label}: POST -> first delta"), "ms", first[k].clone());
        stats(
            &format!("{label}: POST -> done ({DELTAS} deltas)"),
            "ms",
            whole[k].clone(),
        );
    }
    println!(
        "{:<46} {:.1} µs (difference of medians / {DELTAS})",
        "added per delta by the host route",
        (h - d) * 1000.0 / DELTAS as f64
    );
}

/// A fresh home and a serve in it whose `host:local` model server is `llm` (bind them in
/// this order: the serve must go before its home).
fn serve_with_host_model(dir: &Path, llm: &FakeLlm, name: &str) -> (TempDir, Proc) {
    let home = temp_dir(name);
    let s = serve(
        dir,
        &home,
        &dir.join("aegis-agent"),
        &["--host-llm", &format!("local={}", llm.url())],
    );
    (home, s)
}

/// A reply from a `host:` model stopped by the user: how soon the model server sees its
/// client go (and so stops generating), and how soon the chat has its cancelled reply.
fn host_model_cancel(dir: &Path) {
    const TOKEN_MS: u64 = 10;
    let tokens = vec!["tok "; 2000];
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&tokens),
        delay: Duration::from_millis(TOKEN_MS),
        end: aegis_e2e::llm::End::Finish,
    }]);
    if let Some((gone, done)) = cancelled_replies(dir, &llm, "bench-host-cancel") {
        stats("host: model, cancel -> cancelled reply done", "ms", done);
        stats(
            &format!("host: model, cancel -> server sees its client go ({TOKEN_MS} ms/token)"),
            "ms",
            gone,
        );
    }
    // A model that says nothing after its first token (thinking, or loading): before
    // 2026-12-06 (eighth stop) serve closed its connection only at its next line.
    let quiet = FakeLlm::scripted(vec![Reply::Quiet {
        first: openai_sse(&["tok "])[..2].to_vec(),
    }]);
    if let Some((gone, _)) = cancelled_replies(dir, &quiet, "bench-host-cancel-quiet") {
        stats(
            "host: model, cancel -> server sees its client go (silent model)",
            "ms",
            gone,
        );
    }
}

/// Twelve replies of a `host:` model served by `llm`, each cancelled after its first
/// delta: (cancel → the server sees its client go, cancel → the cancelled reply's
/// `assistant.done`) in ms, the first two left out; `None` when a server never saw its
/// client go (a build from before 2026-12-06, eighth stop, with a silent model).
fn cancelled_replies(dir: &Path, llm: &FakeLlm, name: &str) -> Option<(Vec<f64>, Vec<f64>)> {
    let (home, _s) = serve_with_host_model(dir, llm, name);
    let c = AegisClient::new(home.join("aegisd.sock"));
    let body = json!({"name": "a", "env": {"AEGIS_MODEL": "host:local/m", "RUST_LOG": "warn"}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let mut stream = c.stream("a", None).unwrap();
    let (mut gone, mut done) = (Vec::new(), Vec::new());
    for i in 0..12 {
        let session = Session::new("bench", format!("{i}"));
        let f = Frame::user_message(session.clone(), "go", None).with_msg_id(format!("c{i}"));
        c.post_frame("a", &f).unwrap();
        while stream.next().unwrap().unwrap().kind != "assistant.delta" {}
        let before = llm.abandoned();
        let t = Instant::now();
        let cancel = Frame::new("control.cancel", Some(session)).with_msg_id(format!("x{i}"));
        let (gone_at, done_at) = std::thread::scope(|scope| {
            // The server's side is watched on a thread of its own: it may come first.
            let watcher = scope.spawn(|| {
                while llm.abandoned() == before {
                    if t.elapsed() > Duration::from_secs(10) {
                        return None; // an older build: not before its read timeout
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Some(t.elapsed().as_secs_f64() * 1000.0)
            });
            c.post_frame("a", &cancel).unwrap();
            while stream.next().unwrap().unwrap().kind != "assistant.done" {}
            let done_at = t.elapsed().as_secs_f64() * 1000.0;
            (watcher.join().unwrap(), done_at)
        });
        let Some(gone_at) = gone_at else {
            println!("{name}: the server never saw its client go within 10 s");
            return None;
        };
        if i >= 2 {
            gone.push(gone_at);
            done.push(done_at);
        }
    }
    Some((gone, done))
}

/// `POST .../exec` of `true` until its `done` line: the sandbox's start and end, and
/// the stream around them.
fn exec_latency(dir: &Path) {
    use std::io::BufRead;
    let home = temp_dir("bench-exec");
    let _s = serve(dir, &home, &dir.join("aegis-agent"), &[]);
    let c = AegisClient::new(home.join("aegisd.sock"));
    c.request("POST", "/v1/instances", Some(&json!({"name": "a"})))
        .unwrap();
    let mut times = Vec::new();
    for i in 0..22 {
        let t = Instant::now();
        let r = c.exec("a", &["true"], Duration::from_secs(30)).unwrap();
        let done = std::io::BufReader::new(r)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("\"done\":true"));
        assert!(done);
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    stats("exec `true` in a sandboxed instance, POST -> done", "ms", times);
}

fn main() {
    maybe_blast();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench -p aegis-e2e --bench serve -- NAME` runs the measurements whose name
    // contains NAME.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let dir = release_dir();
    if run("wake_latency") {
        wake_latency(&dir, &[], "sandboxed");
        wake_latency(&dir, &["--sandbox", "none"], "no sandbox");
    }
    if run("throughput") {
        throughput(&dir);
    }
    if run("idle_instances") {
        idle_instances(&dir);
    }
    if run("host_model") {
        host_model(&dir);
    }
    if run("host_model_cancel") {
        host_model_cancel(&dir);
    }
    if run("exec_latency") {
        exec_latency(&dir);
    }
}
