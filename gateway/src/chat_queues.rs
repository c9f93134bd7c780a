//! Work kept in order within a chat and run side by side across chats: a slow job in one
//! chat (a 20 MB download, an instance still waking) holds that chat only.
//!
//! At most `max` threads, started when work arrives and ended when none waits, so an
//! idle bot has none. A chat with more waiting gives its thread up to a waiting chat
//! after each job, so a busy chat cannot starve the others when all threads are taken.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

/// Jobs of type `J`, each for a chat, run by `run`.
pub struct ChatQueues<J> {
    inner: Arc<Inner<J>>,
}

impl<J> Clone for ChatQueues<J> {
    fn clone(&self) -> Self {
        ChatQueues {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<J> {
    queues: Mutex<Queues<J>>,
    run: Box<dyn Fn(J) + Send + Sync>,
    max: usize,
}

struct Queues<J> {
    /// Jobs not started, per chat, in arrival order.
    waiting: HashMap<i64, VecDeque<J>>,
    /// Chats with jobs waiting and no thread on them, in the order they became so.
    ready: VecDeque<i64>,
    /// Chats a thread is running a job of.
    busy: HashSet<i64>,
    threads: usize,
}

impl<J: Send + 'static> ChatQueues<J> {
    /// Run jobs with `run`, on at most `max` threads (at least one).
    pub fn new(max: usize, run: impl Fn(J) + Send + Sync + 'static) -> ChatQueues<J> {
        ChatQueues {
            inner: Arc::new(Inner {
                queues: Mutex::new(Queues {
                    waiting: HashMap::new(),
                    ready: VecDeque::new(),
                    busy: HashSet::new(),
                    threads: 0,
                }),
                run: Box::new(run),
                max: max.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues<J>> {
        self.inner.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `job` after the jobs of `chat` already given.
    pub fn push(&self, chat: i64, job: J) {
        let mut q = self.lock();
        q.waiting.entry(chat).or_default().push_back(job);
        if !q.busy.contains(&chat) && !q.ready.contains(&chat) {
            q.ready.push_back(chat);
        }
        if q.ready.is_empty() || q.threads >= self.inner.max {
            return;
        }
        q.threads += 1;
        drop(q);
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name("tg-chat".into())
            .spawn(move || me.work());
        if let Err(e) = spawned {
            // Slower, but nothing waits for a thread that will not come: this one does
            // the work of the one counted.
            log::warn!("cannot start a thread for a chat ({e}); handling it on the poller's");
            self.work();
        }
    }

    /// Run jobs until none waits.
    fn work(&self) {
        let mut q = self.lock();
        loop {
            let Some(chat) = q.ready.pop_front() else {
                q.threads -= 1;
                return;
            };
            q.busy.insert(chat);
            loop {
                let Some(job) = q.waiting.get_mut(&chat).and_then(VecDeque::pop_front) else {
                    q.waiting.remove(&chat);
                    q.busy.remove(&chat);
                    break;
                };
                drop(q);
                (self.inner.run)(job);
                q = self.lock();
                if !q.ready.is_empty() && q.waiting.get(&chat).is_some_and(|w| !w.is_empty()) {
                    // Others wait for a thread: this chat's next job waits its turn.
                    q.busy.remove(&chat);
                    q.ready.push_back(chat);
                    break;
                }
            }
        }
    }

    /// Threads running now.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.lock().threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{bounded, unbounded, Receiver};
    use std::time::Duration;

    /// A job: (chat, number, gate to wait on before finishing).
    type Job = (i64, u32, Option<Receiver<()>>);

    fn recorder(max: usize) -> (ChatQueues<Job>, Receiver<(i64, u32)>) {
        let (done_tx, done_rx) = unbounded();
        let q = ChatQueues::new(max, move |(chat, n, gate): Job| {
            if let Some(g) = gate {
                let _ = g.recv();
            }
            let _ = done_tx.send((chat, n));
        });
        (q, done_rx)
    }

    fn wait_idle<J: Send + 'static>(q: &ChatQueues<J>) {
        for _ in 0..500 {
            if q.threads() == 0 {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        panic!("threads never ended");
    }

    #[test]
    fn a_held_chat_holds_only_itself_and_keeps_its_order() {
        let (q, done) = recorder(4);
        let (open, gate) = bounded(0);
        q.push(1, (1, 1, Some(gate)));
        q.push(1, (1, 2, None));
        q.push(2, (2, 1, None));
        q.push(2, (2, 2, None));
        let t = Duration::from_secs(5);
        assert_eq!(done.recv_timeout(t), Ok((2, 1)), "chat 2 is not behind chat 1");
        assert_eq!(done.recv_timeout(t), Ok((2, 2)));
        assert!(
            done.recv_timeout(Duration::from_millis(50)).is_err(),
            "chat 1's second waits for its first"
        );
        open.send(()).unwrap();
        assert_eq!(done.recv_timeout(t), Ok((1, 1)));
        assert_eq!(done.recv_timeout(t), Ok((1, 2)));
        wait_idle(&q);
    }

    #[test]
    fn threads_are_capped_and_taken_in_turn() {
        let (q, done) = recorder(1);
        let (open, gate) = bounded(0);
        q.push(1, (1, 1, Some(gate)));
        q.push(1, (1, 2, None));
        q.push(1, (1, 3, None));
        q.push(2, (2, 1, None));
        assert_eq!(q.threads(), 1, "one thread at most");
        open.send(()).unwrap();
        let order: Vec<_> = (0..4)
            .map(|_| done.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        // Chat 2 runs after chat 1's first job, not after all of chat 1's.
        assert_eq!(order, vec![(1, 1), (2, 1), (1, 2), (1, 3)]);
        wait_idle(&q);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever the chats, timings and ceiling: every job runs once, each chat's in the
        /// order given, never more threads than allowed, none left at the end.
        #[test]
        fn every_job_runs_once_in_its_chats_order(
            jobs in proptest::collection::vec((0i64..5, 0u64..300), 1..40),
            max in 1usize..5,
        ) {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let running = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let (done_tx, done_rx) = unbounded();
            let (r, m) = (running.clone(), most.clone());
            let q = ChatQueues::new(max, move |(chat, n, pause): (i64, usize, u64)| {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_micros(pause));
                r.fetch_sub(1, Ordering::SeqCst);
                let _ = done_tx.send((chat, n));
            });
            for (n, &(chat, pause)) in jobs.iter().enumerate() {
                q.push(chat, (chat, n, pause));
            }
            let mut seen: Vec<(i64, usize)> = (0..jobs.len())
                .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).expect("a job never ran"))
                .collect();
            proptest::prop_assert!(done_rx.recv_timeout(Duration::from_millis(5)).is_err(), "a job ran twice");
            for chat in 0..5 {
                let order: Vec<usize> = seen.iter().filter(|(c, _)| *c == chat).map(|(_, n)| *n).collect();
                proptest::prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "chat {} ran out of order: {:?}", chat, order);
            }
            seen.sort();
            let all: Vec<(i64, usize)> = jobs.iter().enumerate().map(|(n, &(c, _))| (c, n)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            proptest::prop_assert_eq!(seen, all);
            proptest::prop_assert!(most.load(Ordering::SeqCst) <= max);
            wait_idle(&q);
        }
    }

    #[test]
    fn no_thread_stays_once_the_work_is_done_and_new_work_starts_one() {
        let (q, done) = recorder(8);
        for chat in 0..20 {
            q.push(chat, (chat, 0, None));
        }
        let mut seen: Vec<_> = (0..20)
            .map(|_| done.recv_timeout(Duration::from_secs(5)).unwrap().0)
            .collect();
        seen.sort();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "every job ran once");
        wait_idle(&q);
        q.push(5, (5, 1, None));
        assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok((5, 1)));
        wait_idle(&q);
    }
}
