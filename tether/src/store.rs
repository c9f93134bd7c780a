//! The egress store: per instance, every egress frame stamped with a strictly increasing
//! `seq` [ours], kept in a bounded history, read by any number of subscribers.
//!
//! Subscribers pull with a cursor (the last `seq` they saw), so a slow reader never holds
//! back the appender or another reader: it simply reads later, from where it was. With a
//! [`DiskLog`] attached, every frame is also written to disk and a reader behind the
//! in-memory window is served from there. Only a reader that falls behind the whole
//! history loses frames, and it is told so (`StoreError::Lagged`) instead of silently
//! skipping them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::disklog::DiskLog;
use crate::frame::Frame;

/// Frames kept per instance by default.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Frames a subscriber without a cursor is first sent (upstream aegisd sends the last 50).
pub const DEFAULT_REPLAY: usize = 50;

/// One stored egress frame.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The `seq` stamped into the frame.
    pub seq: u64,
    /// The frame as compact JSON, shared by every reader.
    pub json: Arc<str>,
}

/// Why a subscriber got no frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store was closed (instance deleted or host shutting down).
    Closed,
    /// Frames after the cursor were evicted before this reader got them.
    Lagged {
        /// First `seq` the reader missed.
        missed_from: u64,
        /// Oldest `seq` still held; the cursor now points just before it.
        oldest: u64,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Closed => write!(f, "egress store closed"),
            StoreError::Lagged { missed_from, oldest } => write!(
                f,
                "reader fell behind: frames {missed_from}..{} were evicted",
                oldest - 1
            ),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(Debug)]
struct Inner {
    /// `seq` the next append gets.
    next_seq: u64,
    /// The newest frames, oldest first, seqs contiguous.
    entries: VecDeque<Entry>,
    /// Set once by `close`; readers drain nothing more after it.
    closed: bool,
    /// Readers blocked on `appended`; an append only pays for a wake-up when one waits.
    waiting: usize,
}

/// Bounded, sequenced history of one instance's egress frames.
#[derive(Debug)]
pub struct EgressStore {
    /// Serialises appenders while they encode, so readers never wait on JSON encoding.
    append_order: Mutex<()>,
    /// History and counters; held only to push or copy out entries.
    inner: Mutex<Inner>,
    /// Wakes readers blocked at the head when a frame is appended or the store closes.
    appended: Condvar,
    /// Frames kept before the oldest is evicted.
    capacity: usize,
    /// Frames replayed to a subscriber without a cursor.
    replay: usize,
    /// The durable history behind the window, if any; written under `append_order`.
    disk: Option<Mutex<DiskLog>>,
}

impl EgressStore {
    /// A store with default capacity and replay whose first frame gets `seq` 1.
    pub fn new() -> Arc<EgressStore> {
        EgressStore::with_limits(DEFAULT_CAPACITY, DEFAULT_REPLAY, 1)
    }

    /// A store with explicit limits. `first_seq` lets a restarted host continue numbering
    /// above every seq it handed out before, so readers' cursors stay meaningful.
    pub fn with_limits(capacity: usize, replay: usize, first_seq: u64) -> Arc<EgressStore> {
        Arc::new(EgressStore {
            append_order: Mutex::new(()),
            inner: Mutex::new(Inner {
                next_seq: first_seq.max(1),
                entries: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
                waiting: 0,
            }),
            appended: Condvar::new(),
            capacity: capacity.max(1),
            replay,
            disk: None,
        })
    }

    /// A store backed by `disk`: the window starts with the newest frames on disk, and
    /// seqs continue after the last one there (else from `first_seq`).
    pub fn with_disk(capacity: usize, replay: usize, first_seq: u64, disk: DiskLog) -> Arc<EgressStore> {
        let tail = disk.tail(capacity.max(1)).unwrap_or_else(|e| {
            log::error!("cannot read the egress log: {e}");
            Vec::new()
        });
        let next_seq = disk.last_seq().map_or(first_seq.max(1), |s| s + 1);
        Arc::new(EgressStore {
            append_order: Mutex::new(()),
            inner: Mutex::new(Inner {
                next_seq,
                entries: tail.into(),
                closed: false,
                waiting: 0,
            }),
            appended: Condvar::new(),
            capacity: capacity.max(1),
            replay,
            disk: Some(Mutex::new(disk)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent data (push/pop only).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stamp `frame` with the next seq, store it and wake readers. Returns the entry.
    pub fn append(&self, mut frame: Frame) -> Entry {
        let _order = self.append_order.lock().unwrap_or_else(|p| p.into_inner());
        // Only appenders change next_seq and they hold `append_order`, so reading it
        // here and pushing below keeps seqs contiguous and in order.
        let seq = self.lock().next_seq;
        frame.seq = Some(seq);
        let entry = Entry {
            seq,
            json: Arc::from(frame.to_json()),
        };
        if let Some(disk) = &self.disk {
            let mut disk = disk.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = disk.append(seq, &entry.json) {
                // The frame still reaches live readers; only its durable copy is missing.
                log::error!("egress log: cannot write frame {seq}: {e}");
            }
        }
        let mut inner = self.lock();
        inner.next_seq = seq + 1;
        if inner.entries.len() == self.capacity {
            inner.entries.pop_front();
        }
        inner.entries.push_back(entry.clone());
        let wake = inner.waiting > 0;
        drop(inner);
        if wake {
            self.appended.notify_all();
        }
        entry
    }

    /// The seq of the newest frame, 0 if none was ever appended.
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Close the store: blocked and future reads end with `StoreError::Closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.appended.notify_all();
    }

    /// Read from the store. With `after`, exactly the frames with a larger seq; without,
    /// the last `replay` frames then live ones.
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Subscription {
        let cursor = match after {
            Some(a) => a,
            None => {
                let inner = self.lock();
                let last = inner.next_seq - 1;
                let oldest = inner.entries.front().map_or(inner.next_seq, |e| e.seq);
                last.saturating_sub(self.replay as u64).max(oldest - 1)
            }
        };
        Subscription {
            store: Arc::clone(self),
            cursor,
        }
    }
}

/// A reader's position in one store.
#[derive(Debug)]
pub struct Subscription {
    /// The store read from.
    store: Arc<EgressStore>,
    /// Seq of the last frame handed out.
    cursor: u64,
}

impl Subscription {
    /// Seq of the last frame this subscription returned (or its starting cursor).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Up to `max` frames after the cursor, waiting at most `timeout` for the first.
    /// An empty vector means the timeout passed with nothing new.
    pub fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Entry>, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.store.lock();
        loop {
            if inner.closed {
                return Err(StoreError::Closed);
            }
            let next = self.cursor + 1;
            if let Some(front) = inner.entries.front() {
                if next < front.seq {
                    let oldest = front.seq;
                    drop(inner);
                    if let Some(found) = self.read_disk(max, oldest)? {
                        return Ok(found);
                    }
                    self.cursor = oldest - 1;
                    return Err(StoreError::Lagged {
                        missed_from: next,
                        oldest,
                    });
                }
                let start = (next - front.seq) as usize;
                if start < inner.entries.len() {
                    let out: Vec<Entry> = inner.entries.range(start..).take(max.max(1)).cloned().collect();
                    self.cursor = out.last().map_or(self.cursor, |e| e.seq);
                    return Ok(out);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            inner.waiting += 1;
            inner = self
                .store
                .appended
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            inner.waiting -= 1;
        }
    }

    /// Frames after the cursor from the disk log, when the window no longer has them.
    /// `Ok(None)`: there is no disk log. A gap (frames gone from disk too) is `Lagged`.
    fn read_disk(&mut self, max: usize, window_front: u64) -> Result<Option<Vec<Entry>>, StoreError> {
        let Some(disk) = &self.store.disk else {
            return Ok(None);
        };
        let next = self.cursor + 1;
        let found = {
            let disk = disk.lock().unwrap_or_else(|p| p.into_inner());
            disk.read_after(self.cursor, max.max(1))
        };
        let found: Vec<Entry> = match found {
            Ok(f) => f.into_iter().filter(|e| e.seq < window_front).collect(),
            Err(e) => {
                log::error!("egress log: cannot read after {}: {e}", self.cursor);
                Vec::new()
            }
        };
        match found.first() {
            Some(first) if first.seq == next => {
                self.cursor = found.last().map_or(self.cursor, |e| e.seq);
                Ok(Some(found))
            }
            Some(first) => {
                let oldest = first.seq;
                self.cursor = oldest - 1;
                Err(StoreError::Lagged {
                    missed_from: next,
                    oldest,
                })
            }
            None => Ok(None),
        }
    }

    /// The next frame after the cursor, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Entry>, StoreError> {
        Ok(self.next_batch(1, timeout)?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{kind, Session};

    fn delta(i: usize) -> Frame {
        Frame::text(kind::ASSISTANT_DELTA, Session::new("t", "1"), &i.to_string())
    }

    const T: Duration = Duration::from_millis(200);

    #[test]
    fn seqs_increase_and_are_stamped_into_the_json() {
        let s = EgressStore::new();
        let a = s.append(delta(0));
        let b = s.append(delta(1));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(b.json.contains("\"seq\":2"));
        assert_eq!(s.last_seq(), 2);
    }

    #[test]
    fn subscribe_without_cursor_replays_the_last_frames_then_live() {
        let s = EgressStore::with_limits(100, 3, 1);
        for i in 0..10 {
            s.append(delta(i));
        }
        let mut sub = s.subscribe(None);
        let got: Vec<u64> = sub.next_batch(100, T).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![8, 9, 10]);
        assert!(sub.next(Duration::from_millis(10)).unwrap().is_none());
        s.append(delta(10));
        assert_eq!(sub.next(T).unwrap().unwrap().seq, 11);
    }

    #[test]
    fn reconnect_resumes_after_last_seq_without_duplicates() {
        let s = EgressStore::new();
        for i in 0..5 {
            s.append(delta(i));
        }
        let mut sub = s.subscribe(Some(3));
        let got: Vec<u64> = sub.next_batch(100, T).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![4, 5]);
    }

    #[test]
    fn reader_behind_the_history_is_told_what_it_lost() {
        let s = EgressStore::with_limits(4, 50, 1);
        for i in 0..10 {
            s.append(delta(i));
        }
        let mut sub = s.subscribe(Some(2));
        assert_eq!(
            sub.next(T).unwrap_err(),
            StoreError::Lagged {
                missed_from: 3,
                oldest: 7
            }
        );
        assert_eq!(sub.next(T).unwrap().unwrap().seq, 7);
    }

    #[test]
    fn close_wakes_blocked_readers() {
        let s = EgressStore::new();
        let mut sub = s.subscribe(None);
        let t = std::thread::spawn(move || sub.next(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.close();
        assert_eq!(t.join().unwrap().unwrap_err(), StoreError::Closed);
    }

    #[test]
    fn concurrent_appenders_and_slow_readers_see_every_frame_once_in_order() {
        let s = EgressStore::with_limits(100_000, 0, 1);
        let readers: Vec<_> = (0..4)
            .map(|r| {
                let mut sub = s.subscribe(Some(0));
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while seen.len() < 4000 {
                        if r == 0 {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        for e in sub.next_batch(7, Duration::from_secs(5)).unwrap() {
                            seen.push(e.seq);
                        }
                    }
                    seen
                })
            })
            .collect();
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        s.append(delta(i));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for r in readers {
            assert_eq!(r.join().unwrap(), (1..=4000).collect::<Vec<u64>>());
        }
    }

    #[test]
    fn restarted_store_continues_numbering() {
        let s = EgressStore::with_limits(10, 50, 501);
        assert_eq!(s.append(delta(0)).seq, 501);
        let mut sub = s.subscribe(Some(500));
        assert_eq!(sub.next(T).unwrap().unwrap().seq, 501);
    }
}
