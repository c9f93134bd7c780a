//! Helpers shared by the benchmark binaries: release builds, statistics, /proc readings,
//! and a stand-in agent that blasts egress frames over the direct tether.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether::frame::{kind, Session};
use tether::rpc::Message;
use tether::{Addr, Frame, Stream};

/// Build the static release binaries (scripts/release.sh) and return their folder; or,
/// with `AEGIS_BENCH_BINARIES` set, that folder as it is (to compare two builds).
pub fn release_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AEGIS_BENCH_BINARIES") {
        return PathBuf::from(dir);
    }
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
    status_kib(pid, "VmRSS")
}

/// A KiB field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, ...); 0 when absent.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The numeric fields of `/proc/<pid>/stat` after the command (state is [0]); empty when
/// the process is gone, and a field that is not a number reads 0.
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(") ").next().unwrap_or("");
    after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect()
}

/// CPU time (user + system) of `pid` in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(pid);
    f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)
}

/// Page faults of `pid` that had to read from the disk.
pub fn major_faults(pid: u32) -> u64 {
    stat_fields(pid).get(9).copied().unwrap_or(0)
}

/// Drop `path` from the page cache (written back first), as a VM's cold boot finds it.
/// Pages a running process maps stay.
pub fn evict_from_page_cache(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    file.sync_data()?;
    // SAFETY: a plain advice call on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    match rc {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// The read-ahead of the disk `path` is on, in KiB (what a page fault reads at least), when
/// the file system sits on a block device.
pub fn read_ahead_kib(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ));
    // A partition has no queue of its own: its disk's is one level up.
    [
        sys.join("queue/read_ahead_kb"),
        sys.join("../queue/read_ahead_kb"),
    ]
    .iter()
    .find_map(|f| std::fs::read_to_string(f).ok())
    .and_then(|v| v.trim().parse().ok())
}

/// How much of `path` is in the page cache, in KiB (what a run read from the disk, after
/// `evict_from_page_cache`).
pub fn cached_kib(path: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped before returning;
    // mincore only reads the page tables.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut resident = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(addr, len, resident.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(addr, len);
        if rc != 0 {
            return Err(err);
        }
        let pages = resident.iter().filter(|r| *r & 1 == 1).count();
        Ok((pages * page / 1024) as u64)
    }
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
    // With BENCH_FILE_OUT, a reply that sends the blob named in the file BENCH_FILE_OUT
    // names (relative to the workspace), once it appears.
    if let Ok(trigger) = std::env::var("BENCH_FILE_OUT") {
        let path = std::path::Path::new(&std::env::var("AEGIS_WORKSPACE").unwrap()).join(trigger);
        let blob = loop {
            match std::fs::read_to_string(&path) {
                Ok(b) if !b.is_empty() => break b,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let done = tether::frame::Done {
            text: "the file".into(),
            images: vec![],
            files: vec![tether::frame::FileRef {
                name: "big.bin".into(),
                blob: blob.trim().to_string(),
                size: None,
            }],
            ..Default::default()
        };
        let f = Frame::new(kind::ASSISTANT_DONE, Some(session))
            .with_payload(&done)
            .with_msg_id("bench-file");
        s.write_all(&Message::tether_frame(&f).encode()).unwrap();
    }
    std::thread::sleep(Duration::from_secs(3600));
    std::process::exit(0);
}
