//! Throughput of the tether hot paths: `cargo bench -p tether`.
//!
//! Prints frames per second for frame encode+decode, the JSON-RPC line codec, and store
//! append with fan-out to 4 subscribers. Each figure is the median of 5 runs, with the
//! min and max to show the spread.

use std::io::{BufReader, Cursor};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::frame::{kind, Frame, Session};
use tether::lines::LineReader;
use tether::rpc::Message;
use tether::store::EgressStore;

const N: usize = 200_000;

fn sample() -> Frame {
    let mut f = Frame::text(
        kind::ASSISTANT_DELTA,
        Session::new("telegram", "123456789"),
        "Hello there, this is a streamed chunk.",
    );
    f.msg_id = Some("m-42".into());
    f.seq = Some(1234);
    f
}

fn report(name: &str, mut runs: Vec<f64>) {
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<40} median {:>10.0} frames/s   (min {:.0}, max {:.0}, {} runs)",
        runs[runs.len() / 2],
        runs[0],
        runs[runs.len() - 1],
        runs.len()
    );
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn frame_codec() -> f64 {
    let f = sample();
    let t = Instant::now();
    for _ in 0..N {
        let json = f.to_json();
        let back = Frame::parse(json.as_bytes()).unwrap();
        std::hint::black_box(back);
    }
    rate(N, t.elapsed())
}

fn rpc_codec() -> f64 {
    let f = sample();
    let t = Instant::now();
    let mut wire = Vec::with_capacity(N * 200);
    for _ in 0..N {
        wire.extend_from_slice(&Message::tether_frame(&f).encode());
    }
    let mut r = LineReader::new(BufReader::new(Cursor::new(wire)));
    let mut n = 0;
    while let Some(line) = r.next_line().unwrap() {
        let m = Message::decode(line).unwrap();
        std::hint::black_box(m.as_tether_frame().unwrap().unwrap());
        n += 1;
    }
    assert_eq!(n, N);
    rate(N, t.elapsed())
}

fn store_fanout(subscribers: usize) -> f64 {
    let store = EgressStore::with_limits(N, 0, 1);
    let readers: Vec<_> = (0..subscribers)
        .map(|_| {
            let mut sub = store.subscribe(Some(0));
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < N {
                    seen += sub.next_batch(1024, Duration::from_secs(5)).unwrap().len();
                }
            })
        })
        .collect();
    let f = sample();
    let t = Instant::now();
    for _ in 0..N {
        store.append(f.clone());
    }
    for r in readers {
        r.join().unwrap();
    }
    let _ = Arc::strong_count(&store);
    rate(N, t.elapsed())
}

/// What working out the next runs costs the host each minute (`schedule::publish_next`),
/// for 20 tasks in Europe/Paris, among them one for 29 February (the longest search):
/// the first call, which writes the file, and the usual minute, which finds it unchanged.
#[cfg(feature = "schedule")]
fn next_runs() {
    let ws = std::env::temp_dir().join(format!("tether-bench-next-{}", std::process::id()));
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    let schedules = [
        "0 9 * * *",
        "0 9 * * 1-5",
        "*/15 * * * *",
        "0 9 29 2 *",
        "30 18 31 * *",
        "0 0 1 1 *",
        "5 4 * * 0",
    ];
    let entries: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            serde_json::json!({"id": format!("cron-{i}"), "schedule": schedules[i % schedules.len()],
                "message": "x", "session": format!("cron-{i}")})
        })
        .collect();
    let cron = serde_json::json!({"entries": entries, "next_id": 21});
    std::fs::write(ws.join(".aegis/cron.json"), cron.to_string()).unwrap();
    std::fs::write(ws.join(".aegis/agent.json"), r#"{"timezone": "Europe/Paris"}"#).unwrap();
    let minute = 1_795_424_400 / 60; // 2026-11-23 09:00 UTC
    let mut first = Vec::new();
    let mut same = Vec::new();
    for i in 0..21 {
        let _ = std::fs::remove_file(ws.join(".aegis/cron-next.json"));
        let t = Instant::now();
        tether::schedule::publish_next(&ws, minute + i).unwrap();
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        tether::schedule::publish_next(&ws, minute + i).unwrap();
        same.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for (name, mut runs) in [
        ("next runs of 20 tasks, written", first),
        ("next runs of 20 tasks, unchanged", same),
    ] {
        runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name:<40} median {:>8.2} ms   (min {:.2}, max {:.2}, {} runs)",
            runs[runs.len() / 2],
            runs[0],
            runs[runs.len() - 1],
            runs.len()
        );
    }
    std::fs::remove_dir_all(&ws).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    #[cfg(feature = "schedule")]
    next_runs();
    report("frame encode+decode", (0..5).map(|_| frame_codec()).collect());
    report(
        "json-rpc line encode+read+decode",
        (0..5).map(|_| rpc_codec()).collect(),
    );
    report(
        "store append, no readers",
        (0..5).map(|_| store_fanout(0)).collect(),
    );
    report(
        "store append + fan-out to 4 readers",
        (0..5).map(|_| store_fanout(4)).collect(),
    );
}
