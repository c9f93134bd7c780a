//! Waiting for slow work the user may stop waiting for (`/stop`): the work runs on a
//! thread of its own and a cancel ends the wait at once; the work then runs out on its
//! thread, bounded by its own timeouts, and what it gives is dropped.

use crossbeam_channel::{bounded, select, Receiver};

/// What `work` gives, run on a thread called `name`; `None` when `cancel` fired first.
/// Without a thread to spare, it runs here, and the wait cannot be cut short.
pub fn wait<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
    cancel: &Receiver<()>,
) -> Option<T> {
    let (tx, rx) = bounded(1);
    let work = std::sync::Arc::new(std::sync::Mutex::new(Some(work)));
    let on_thread = std::sync::Arc::clone(&work);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let job = on_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(job) = job {
                let _ = tx.send(job());
            }
        });
    if let Err(e) = spawned {
        log::warn!("no thread for {name} ({e}); waiting for it here");
        let job = work.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        return Some(job());
    }
    select! {
        recv(rx) -> given => given.ok(),
        recv(cancel) -> _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_work_is_waited_for_until_a_cancel() {
        let (_keep, never) = bounded::<()>(1);
        assert_eq!(wait("quick", || 7, &never), Some(7));
        let (stop, cancel) = bounded::<()>(1);
        stop.send(()).unwrap();
        let (release, held) = bounded::<()>(1);
        let slow = move || {
            let _ = held.recv_timeout(Duration::from_secs(10));
            8
        };
        assert_eq!(wait("slow", slow, &cancel), None, "not waited for");
        drop(release);
    }
}
