//! The on-disk egress log behind an [`EgressStore`](crate::store::EgressStore)'s
//! in-memory window: every egress frame is appended here too, so a reader that was away
//! for longer than the window (a gateway down for hours) resumes from disk, and a host
//! restarted even after `kill -9` still has the frames it had not delivered.
//!
//! Layout: a folder of segments `SEQ.log` (SEQ: the first seq inside, zero-padded),
//! each line `SEQ<TAB>FRAME-JSON`. A segment is closed at [`SEGMENT_BYTES`]; whole
//! segments are deleted, oldest first, while the log is over its byte limit or older
//! than its age limit.
//!
//! Sync policy: every append is one `write(2)` of a whole line, so it survives the death
//! of the process at any point (the page cache keeps it); a segment is `fsync`ed when it
//! is closed. A crash of the whole machine can lose the frames of the open segment that
//! the kernel had not written back yet (typically the last few seconds). A torn last
//! line (the machine died mid-write) is skipped when the log is read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::store::Entry;

/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// How much history to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Total bytes of all segments.
    pub max_bytes: u64,
    /// Segments whose newest frame is older than this are deleted.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One instance's on-disk egress log.
#[derive(Debug)]
pub struct DiskLog {
    /// The folder of segments.
    dir: PathBuf,
    /// Limits.
    retention: Retention,
    /// First seqs of the segments, oldest first.
    segments: Vec<u64>,
    /// The segment being appended to, and its size.
    open: Option<(File, u64)>,
    /// Seq of the newest line on disk (0: none).
    last_seq: u64,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn parse_line(line: &[u8]) -> Option<(u64, &[u8])> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    let seq = std::str::from_utf8(&line[..tab]).ok()?.parse().ok()?;
    let json = &line[tab + 1..];
    (!json.is_empty() && json[0] == b'{' && json[json.len() - 1] == b'}').then_some((seq, json))
}

impl DiskLog {
    /// Open (creating) the log in `dir`.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<DiskLog> {
        fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let mut log = DiskLog {
            dir: dir.to_path_buf(),
            retention,
            segments,
            open: None,
            last_seq: 0,
        };
        if let Some(&last) = log.segments.last() {
            log.last_seq = log
                .read_segment(last, 0, usize::MAX)?
                .last()
                .map_or(last.saturating_sub(1), |e| e.seq);
        }
        Ok(log)
    }

    /// Seq of the newest frame on disk, if any.
    pub fn last_seq(&self) -> Option<u64> {
        (self.last_seq > 0).then_some(self.last_seq)
    }

    /// Oldest seq still on disk, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments.first().copied()
    }

    /// Append one frame line. Seqs must increase.
    pub fn append(&mut self, seq: u64, json: &str) -> io::Result<()> {
        if self.open.as_ref().is_none_or(|(_, size)| *size >= SEGMENT_BYTES) {
            self.rotate(seq)?;
        }
        let (file, size) = self.open.as_mut().expect("rotated above");
        let mut line = Vec::with_capacity(json.len() + 24);
        line.extend_from_slice(seq.to_string().as_bytes());
        line.push(b'\t');
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        file.write_all(&line)?;
        *size += line.len() as u64;
        self.last_seq = seq;
        Ok(())
    }

    fn rotate(&mut self, first: u64) -> io::Result<()> {
        if let Some((file, _)) = self.open.take() {
            file.sync_data()?;
        }
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        if self.segments.last() != Some(&first) {
            self.segments.push(first);
        }
        self.open = Some((file, size));
        self.enforce_retention();
        Ok(())
    }

    /// Delete the oldest closed segments while over the limits.
    fn enforce_retention(&mut self) {
        let now = SystemTime::now();
        loop {
            if self.segments.len() <= 1 {
                return;
            }
            let sizes: u64 = self
                .segments
                .iter()
                .filter_map(|s| fs::metadata(self.dir.join(segment_name(*s))).ok())
                .map(|m| m.len())
                .sum();
            let oldest = self.dir.join(segment_name(self.segments[0]));
            let too_old = fs::metadata(&oldest)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > self.retention.max_age);
            if sizes <= self.retention.max_bytes && !too_old {
                return;
            }
            if let Err(e) = fs::remove_file(&oldest) {
                log::warn!("cannot delete {}: {e}", oldest.display());
                return;
            }
            self.segments.remove(0);
        }
    }

    /// Up to `max` frames with seq > `after`, oldest first.
    pub fn read_after(&self, after: u64, max: usize) -> io::Result<Vec<Entry>> {
        // The segment holding after+1: the last one starting at or before it.
        let start = match self.segments.partition_point(|&s| s <= after + 1) {
            0 => 0,
            i => i - 1,
        };
        let mut out = Vec::new();
        for &seg in &self.segments[start..] {
            out.extend(self.read_segment(seg, after, max - out.len())?);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Up to the newest `n` frames, oldest first (to fill the memory window at start).
    pub fn tail(&self, n: usize) -> io::Result<Vec<Entry>> {
        let mut chunks: Vec<Vec<Entry>> = Vec::new();
        let mut have = 0;
        for &seg in self.segments.iter().rev() {
            let entries = self.read_segment(seg, 0, usize::MAX)?;
            have += entries.len();
            chunks.push(entries);
            if have >= n {
                break;
            }
        }
        let mut all: Vec<Entry> = chunks.into_iter().rev().flatten().collect();
        let drop = all.len().saturating_sub(n);
        all.drain(..drop);
        Ok(all)
    }

    fn read_segment(&self, first: u64, after: u64, max: usize) -> io::Result<Vec<Entry>> {
        let path = self.dir.join(segment_name(first));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                break; // torn last line
            }
            line.pop();
            let Some((seq, json)) = parse_line(&line) else {
                log::warn!("{}: skipping a damaged line", path.display());
                continue;
            };
            if seq > after {
                let json = String::from_utf8_lossy(json);
                out.push(Entry {
                    seq,
                    json: Arc::from(json.as_ref()),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("tether-disklog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        Dir(d)
    }

    fn frame(seq: u64) -> String {
        format!(
            "{{\"v\":1,\"type\":\"assistant.delta\",\"seq\":{seq},\"payload\":{{\"text\":\"{}\"}}}}",
            "x".repeat(100)
        )
    }

    #[test]
    fn frames_survive_reopening_and_are_read_after_a_cursor() {
        let d = dir("reopen");
        let mut log = DiskLog::open(&d.0, Retention::default()).unwrap();
        for s in 1..=100 {
            log.append(s, &frame(s)).unwrap();
        }
        drop(log);
        let log = DiskLog::open(&d.0, Retention::default()).unwrap();
        assert_eq!(log.last_seq(), Some(100));
        let got: Vec<u64> = log.read_after(40, 5).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![41, 42, 43, 44, 45]);
        assert_eq!(
            log.tail(3).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![98, 99, 100]
        );
    }

    #[test]
    fn segments_rotate_and_the_oldest_go_past_the_byte_limit() {
        let d = dir("rotate");
        let retention = Retention {
            max_bytes: 3 * SEGMENT_BYTES,
            max_age: Duration::from_secs(3600),
        };
        let mut log = DiskLog::open(&d.0, retention).unwrap();
        let per_segment = SEGMENT_BYTES / (frame(1).len() as u64 + 8) + 1;
        let total = per_segment * 6;
        for s in 1..=total {
            log.append(s, &frame(s)).unwrap();
        }
        assert!(log.segments.len() <= 4, "{} segments", log.segments.len());
        let first = log.first_seq().unwrap();
        assert!(first > 1, "old segments deleted");
        // Reading from before the oldest kept frame starts at the oldest kept frame.
        assert_eq!(log.read_after(0, 1).unwrap()[0].seq, first);
        // A read crossing a segment boundary is contiguous.
        let boundary = log.segments[1];
        let got: Vec<u64> = log
            .read_after(boundary - 3, 6)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, (boundary - 2..boundary + 4).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let d = dir("torn");
        let mut log = DiskLog::open(&d.0, Retention::default()).unwrap();
        log.append(1, &frame(1)).unwrap();
        log.append(2, &frame(2)).unwrap();
        drop(log);
        let seg = d.0.join(segment_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"3\t{\"v\":1,\"ty").unwrap();
        let log = DiskLog::open(&d.0, Retention::default()).unwrap();
        assert_eq!(log.last_seq(), Some(2));
        assert_eq!(log.read_after(0, 10).unwrap().len(), 2);
    }
}
