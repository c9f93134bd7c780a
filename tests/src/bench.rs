//! Helpers shared by the benchmark binaries: release builds, statistics, /proc readings,
//! and a stand-in agent that blasts egress frames over the direct tether.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether::frame::{kind, Session};
use tether::rpc::Message;
use tether::{Addr, Frame, Stream};

/// Build the static release binaries (scripts/release.sh) and return their folder.
pub fn release_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/release.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/release.sh");
    assert!(out.status.success(), "release build failed");
    root.join(String::from_utf8(out.stdout).unwrap().trim())
}

/// Print median, p90, p99, min and max of `v`.
pub fn stats(name: &str, unit: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<46} median {:>9.3} {unit}  p90 {:>9.3}  p99 {:>9.3}  min {:>9.3}  max {:>9.3}  (n={})",
        q(0.5),
        q(0.9),
        q(0.99),
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of `pid` in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(") ").next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime [11], stime [12].
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Microseconds since the Unix epoch (comparable across processes on one machine).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// If this process was started by serve as a stand-in agent (`BENCH_BLAST` set), act as
/// one and never return: connect to `AEGIS_TETHER`, then write `BENCH_BLAST` egress
/// frames. With `BENCH_GAP_MS`, each frame is a new reply's first delta stamped with the
/// send time (for latency); otherwise deltas as fast as possible (for throughput).
pub fn maybe_blast() {
    let Ok(n) = std::env::var("BENCH_BLAST") else {
        return;
    };
    let n: usize = n.parse().unwrap();
    let gap = std::env::var("BENCH_GAP_MS")
        .ok()
        .and_then(|g| g.parse::<u64>().ok());
    let addr: Addr = std::env::var("AEGIS_TETHER").unwrap().parse().unwrap();
    let mut s = Stream::connect(&addr, Duration::from_secs(5)).unwrap();
    let session = Session::new("telegram", "777");
    let mut buf = Vec::new();
    for i in 0..n {
        let text = match gap {
            Some(_) => format!("{}", now_us()),
            None => format!("chunk {i} of a streamed reply"),
        };
        let f = Frame::text(kind::ASSISTANT_DELTA, session.clone(), &text).with_msg_id(format!("bench-{i}"));
        buf.extend_from_slice(&Message::tether_frame(&f).encode());
        if let Some(g) = gap {
            s.write_all(&buf).unwrap();
            buf.clear();
            std::thread::sleep(Duration::from_millis(g));
        } else if buf.len() > 64 * 1024 {
            s.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    s.write_all(&buf).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
    std::process::exit(0);
}
