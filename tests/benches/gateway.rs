//! `aegis-gateway` under measurement: `cargo bench -p aegis-e2e --bench gateway`.
//!
//! Static binary size; RSS and CPU while idle (blocked in a long poll); and the latency
//! from a stand-in agent writing a reply's first `assistant.delta` to the gateway's
//! `sendMessage` reaching Telegram, next to the same path ending at a plain stream
//! reader instead of the gateway: the difference is what the gateway adds. Then files:
//! a 20 MB file sent to the bot until it is in the workspace's inbox, and a 50 MB file
//! a reply sends until Telegram has it, each with the gateway's peak RSS after. Last,
//! chats side by side: how long a text in one chat waits while a file on a slow line
//! (held 1.5 s) downloads in another.

use std::time::{Duration, Instant};

use aegis_e2e::bench::{cpu_ticks, maybe_blast, now_us, release_dir, rss_kib, stats};
use aegis_e2e::proc::{temp_dir, without_network_vars, Proc};
use aegis_e2e::telegram::FakeTelegram;
use serde_json::json;
use tether::AegisClient;

const N: usize = 60;

fn main() {
    maybe_blast();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = release_dir();
    println!(
        "{:<46} {} bytes",
        "aegis-gateway static release size",
        std::fs::metadata(dir.join("aegis-gateway")).unwrap().len()
    );
    println!(
        "{:<46} {} bytes",
        "aegis-kit static release size",
        std::fs::metadata(dir.join("aegis-kit")).unwrap().len()
    );

    let home = temp_dir("bench-gw");
    let fake = home.join("aegis-agent");
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &fake).unwrap();
    let sock = home.join("aegisd.sock");
    let mut cmd = std::process::Command::new(dir.join("aegis-kit"));
    without_network_vars(&mut cmd)
        .env("AEGIS_HOME", &home)
        .env("RUST_LOG", "warn")
        .arg("--socket")
        .arg(&sock)
        .arg("serve")
        .arg("--agent")
        .arg(&fake);
    let _serve = Proc::spawn(cmd);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = AegisClient::new(&sock);
    let tg = FakeTelegram::start("555:bench-token");
    c.put_secret("TELEGRAM_BOT_TOKEN", tg.token()).unwrap();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "a", "env": {"BENCH_BLAST": N.to_string(), "BENCH_GAP_MS": "150", "BENCH_FILE_OUT": "send-now"}})),
    )
    .unwrap();
    let cfg = home.join("gateway.json");
    let conf = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "a", "allowed_chats": ["*"], "api_url": tg.url()}});
    std::fs::write(&cfg, conf.to_string()).unwrap();
    let mut gcmd = std::process::Command::new(dir.join("aegis-gateway"));
    without_network_vars(&mut gcmd)
        .env("AEGIS_HOME", &home)
        .env("RUST_LOG", "warn")
        .arg("--socket")
        .arg(&sock)
        .arg("--config")
        .arg(&cfg);
    let gw = Proc::spawn(gcmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tg.calls_of("getUpdates").is_empty() {
        assert!(Instant::now() < deadline, "gateway did not start: {}", gw.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    let t0 = cpu_ticks(gw.pid());
    std::thread::sleep(Duration::from_secs(10));
    let ticks = cpu_ticks(gw.pid()) - t0;
    println!(
        "{:<46} {:.2} MiB",
        "gateway idle RSS (long-polling)",
        rss_kib(gw.pid()) as f64 / 1024.0
    );
    println!(
        "{:<46} {:.2} % of one core over 10 s ({ticks} ticks)",
        "gateway idle CPU",
        ticks as f64 / 10.0
    );

    // A plain reader of the same stream, for the baseline.
    let last = c.request("GET", "/v1/instances/a", None).unwrap()["last_seq"]
        .as_u64()
        .unwrap();
    let reader = {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            for f in c.stream("a", Some(last)).unwrap() {
                let f = f.unwrap();
                let now = now_us();
                if let Some(sent) = f.text_payload().and_then(|t| t.parse::<u64>().ok()) {
                    lat.push((now - sent) as f64 / 1000.0);
                }
                if lat.len() == N {
                    break;
                }
            }
            lat
        })
    };
    c.request("POST", "/v1/instances/a/start", None).unwrap();
    let base = reader.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tg.calls_of("sendMessage").len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} messages",
            tg.calls_of("sendMessage").len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gw_lat: Vec<f64> = tg
        .calls_of("sendMessage")
        .iter()
        .filter_map(|call| {
            let sent: u64 = call.body["text"].as_str()?.parse().ok()?;
            Some((call.wall_us - sent) as f64 / 1000.0)
        })
        .collect();
    stats(
        "agent delta -> plain stream reader (baseline)",
        "ms",
        base.clone(),
    );
    stats(
        "agent delta -> gateway sendMessage at Telegram",
        "ms",
        gw_lat.clone(),
    );
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!(
        "{:<46} {:.3} ms (difference of medians)",
        "added by the gateway",
        med(gw_lat) - med(base)
    );

    // Files: streamed both ways, so the peak RSS should not grow by their size.
    let hwm = |what: &str| {
        println!(
            "{:<46} {:.2} MiB",
            format!("gateway peak RSS {what}"),
            aegis_e2e::bench::status_kib(gw.pid(), "VmHWM") as f64 / 1024.0
        );
    };
    hwm("before files");
    let ws = home.join("kit/instances/a/workspace");
    let body: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    tg.push_file(777, 1, "big.bin", "application/octet-stream", &body, None);
    let saved = ws.join("inbox/big.bin");
    while std::fs::metadata(&saved).map_or(0, |m| m.len()) != body.len() as u64 {
        assert!(t.elapsed() < Duration::from_secs(60), "not saved: {}", gw.log());
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "{:<46} {:.1} ms",
        "20 MB file to the bot -> saved in inbox/",
        t.elapsed().as_secs_f64() * 1000.0
    );
    hwm("after saving it");
    let blob = format!("{}.bin", "b".repeat(64));
    std::fs::create_dir_all(ws.join(".aegis/blobs")).unwrap();
    let big: Vec<u8> = (0..(50u32 << 20) - 4096).map(|i| (i % 253) as u8).collect();
    std::fs::write(ws.join(".aegis/blobs").join(&blob), &big).unwrap();
    let t = Instant::now();
    std::fs::write(ws.join("send-now"), &blob).unwrap();
    while tg.documents(777).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "not sent: {}", gw.log());
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "{:<46} {:.1} ms (with the reply's text first)",
        "50 MB file of a reply -> sendDocument received",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(tg.documents(777)[0].1.len(), big.len());
    hwm("after sending it");

    // Chats side by side: the text's typing indicator (sent as the message is delivered),
    // with nothing else going on, then against a download held for 1.5 s in another chat.
    let mut alone = Vec::new();
    for round in 0..5 {
        let chat = 950 + round;
        alone.push(until_typing(
            &tg,
            chat,
            || _ = tg.push_text(chat, 1, "Bo", "hi"),
            || (),
        ));
    }
    stats("text, nothing else going on -> typing", "ms", alone);
    let mut waited = Vec::new();
    for round in 0..5 {
        tg.hold_downloads(true);
        tg.push_file(
            800 + round,
            1,
            "slow.bin",
            "application/octet-stream",
            &[7; 4096],
            None,
        );
        tg.wait_downloads(2 + round as usize, Duration::from_secs(10));
        let release = Instant::now() + Duration::from_millis(1500);
        let chat = 900 + round;
        waited.push(until_typing(
            &tg,
            chat,
            || _ = tg.push_text(chat, 1, "Bo", "hi"),
            || {
                if Instant::now() >= release {
                    tg.hold_downloads(false);
                }
            },
        ));
        tg.hold_downloads(false);
    }
    stats("text while a download is held 1.5 s -> typing", "ms", waited);
}

/// Milliseconds from `send` (a user writing in `chat`) to the gateway's typing indicator
/// there, which it sends as the message is delivered; `tick` runs while waiting.
fn until_typing(tg: &FakeTelegram, chat: i64, send: impl FnOnce(), mut tick: impl FnMut()) -> f64 {
    let t = Instant::now();
    send();
    loop {
        let calls = tg.calls_of("sendChatAction");
        if calls.iter().any(|c| c.body["chat_id"] == chat) {
            return t.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "chat {chat} never got its message through"
        );
        tick();
        std::thread::sleep(Duration::from_millis(1));
    }
}
