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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
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
