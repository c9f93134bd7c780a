//! The poller's journal, `poll.json`, shared by the poller and the chats' workers.
//!
//! Chats are handled side by side, so a message can be read from Telegram long before
//! the one read before it is handled (a 20 MB file still downloading in another chat).
//! Telegram forgets every update below the offset of the next `getUpdates`, so each
//! update is written here, synced to disk, before that call, and leaves when it is
//! handled: a crash (or a power loss) at any point loses nothing, and the next run hands
//! out what is left first. One sync per batch read, none while idle. What
//! handling a message changed (`/new`, `/exec`, a migrated group) is saved in the same
//! write that removes it, so it is applied once, and an `/exec` command starts only
//! after that write: it runs at most once, as a message to the agent arrives at least
//! once (and is de-duplicated there by its `msg_id`).

use std::io;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::state::{self, Change, PollState};
use crate::telegram::{parse_updates, Update};

/// `poll.json` and the poller's state in it.
pub struct Journal {
    path: PathBuf,
    state: Mutex<Kept>,
    /// Signalled when a unit leaves (the poller may be waiting for room).
    room: Condvar,
}

struct Kept {
    st: PollState,
    /// Changed since the last successful write.
    dirty: bool,
    /// Units added since the last write synced to disk: until then a power loss (which
    /// keeps only what was synced) would lose them once Telegram forgot them.
    unsynced: bool,
}

impl Journal {
    /// The journal at `path`, as the last run left it (fresh when missing or unreadable).
    pub fn open(path: PathBuf) -> Journal {
        let st: PollState = state::load(&path);
        Journal {
            path,
            state: Mutex::new(Kept {
                st,
                dirty: false,
                unsynced: false,
            }),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A worker that panicked left the state whole: each change is one assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where it is kept.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Read the state (what a message's handling decides on).
    pub fn read<R>(&self, f: impl FnOnce(&PollState) -> R) -> R {
        f(&self.lock().st)
    }

    /// The next `getUpdates` offset.
    pub fn offset(&self) -> i64 {
        self.lock().st.offset
    }

    /// What the last run read and did not handle, in the order read, to handle now; each
    /// counts one more try (written by the next `sync`, which must come before handling).
    /// A unit this run would be the `max_tries`th to begin is given up instead (returned
    /// second): a message whose handling ends the gateway (a bug, a kill each time) must
    /// not keep the bot from every other chat for good. A unit this version cannot read
    /// (an edited file) is dropped with a warning.
    pub fn resume(&self, max_tries: u32) -> (Vec<Vec<Update>>, Vec<Vec<Update>>) {
        let mut kept = self.lock();
        let Kept { st, dirty, unsynced } = &mut *kept;
        let (mut units, mut given_up) = (Vec::new(), Vec::new());
        st.pending.retain(|raw| {
            let (unit, _) = parse_updates(&serde_json::Value::Array(raw.clone()));
            let Some(first) = unit.first().map(|u| u.update_id) else {
                // Its id, not its content: the words are the user's.
                let id = first_id(raw);
                log::warn!("dropping an update the journal kept that cannot be read (update_id {id:?})");
                return false;
            };
            let tries = st.tries.entry(first).or_insert(0);
            *tries += 1;
            if *tries >= max_tries {
                given_up.push(unit);
                return false;
            }
            units.push(unit);
            true
        });
        let left: std::collections::BTreeSet<i64> = units
            .iter()
            .filter_map(|u| u.first())
            .map(|u| u.update_id)
            .collect();
        st.tries.retain(|id, _| left.contains(id));
        *dirty = true;
        *unsynced |= !units.is_empty() || !given_up.is_empty();
        (units, given_up)
    }

    /// Units in the journal now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().st.pending.len()
    }

    /// `unit` (updates handled as one) was read: it stays until `done`. Written by the
    /// next `sync` at the latest. False when it was read before (already here, or
    /// handled): it is not to be handed out again.
    pub fn add(&self, unit: &[Update]) -> bool {
        let (Some(first), Some(last)) = (unit.first(), unit.last()) else {
            return false;
        };
        let mut kept = self.lock();
        if first.update_id < kept.st.offset {
            return false;
        }
        kept.st.pending.push(unit.iter().map(|u| u.raw.clone()).collect());
        kept.st.offset = last.update_id + 1;
        kept.dirty = true;
        kept.unsynced = true;
        true
    }

    /// Change the state in memory, deciding on it under the same lock (no other chat's
    /// handling in between): written with the next `done` (the handling of the message
    /// that changed it) or `sync`.
    pub fn note<R>(&self, change: impl FnOnce(&mut PollState) -> R) -> R {
        let mut kept = self.lock();
        let r = change(&mut kept.st);
        kept.dirty = true;
        r
    }

    /// Update `id` will not be handled (a shape we do not read): not asked for again.
    pub fn skip(&self, id: i64) {
        let mut kept = self.lock();
        if id >= kept.st.offset {
            kept.st.offset = id + 1;
            kept.dirty = true;
        }
    }

    /// Write what changed, synced to disk when units were added; before a `getUpdates`
    /// that confirms what was read, this must have succeeded.
    pub fn sync(&self) -> io::Result<()> {
        let mut kept = self.lock();
        match (kept.unsynced, kept.dirty) {
            (true, _) => self.write(&mut kept, true),
            (false, true) => self.write(&mut kept, false),
            (false, false) => Ok(()),
        }
    }

    /// Write the state, synced to disk when `durable`; what it saved is no longer to be
    /// written.
    fn write(&self, kept: &mut Kept, durable: bool) -> io::Result<()> {
        match durable {
            true => state::save_synced(&self.path, &kept.st)?,
            false => state::save(&self.path, &kept.st)?,
        }
        kept.dirty = false;
        kept.unsynced &= !durable;
        Ok(())
    }

    /// The unit that starts with update `first_id` is handled, with `change`: both saved
    /// in one write, synced to disk when `durable` (a command starts next: after a power
    /// loss it must not run again). An error means the file still holds it (a crash
    /// would handle it again), so a command must not start.
    pub fn done(&self, first_id: i64, change: Option<Change>, durable: bool) -> io::Result<()> {
        let mut kept = self.lock();
        kept.st
            .pending
            .retain(|unit| self::first_id(unit) != Some(first_id));
        kept.st.tries.remove(&first_id);
        if let Some(change) = change {
            kept.st.apply(change);
        }
        kept.dirty = true;
        let saved = self.write(&mut kept, durable);
        drop(kept);
        self.room.notify_all();
        saved
    }

    /// Wait until fewer than `max` units wait to be handled: what Telegram keeps for us
    /// (a day) need not be read yet, and the journal stays small.
    pub fn wait_for_room(&self, max: usize) {
        let mut kept = self.lock();
        while kept.st.pending.len() >= max {
            kept = self.room.wait(kept).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The `update_id` a journaled unit (raw updates) starts with.
fn first_id(raw: &[serde_json::Value]) -> Option<i64> {
    raw.first()?.get("update_id")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unit(ids: &[i64], chat: i64) -> Vec<Update> {
        let raw: Vec<_> = ids
            .iter()
            .map(|&id| {
                json!({"update_id": id, "message": {"message_id": id, "chat": {"id": chat}, "text": "hi"}, "extra": id})
            })
            .collect();
        parse_updates(&serde_json::Value::Array(raw)).0
    }

    #[test]
    fn what_was_read_survives_until_handled_and_changes_land_with_it() {
        let dir = aegis_e2e::proc::TempDir::new("journal");
        let path = dir.path().join("poll.json");
        let j = Journal::open(path.clone());
        j.add(&unit(&[10], 1));
        j.add(&unit(&[11, 12], 2));
        j.add(&unit(&[10], 1)); // read again: kept once
        j.skip(13);
        assert_eq!(j.offset(), 14);
        // Not written yet: a crash now re-reads from Telegram, which still has them.
        assert_eq!(Journal::open(path.clone()).offset(), 0);
        j.sync().unwrap();

        // Handled out of order: the other chat's message stays.
        j.done(11, Some(Change::NewSession(2, None)), false).unwrap();
        let again = Journal::open(path.clone());
        assert_eq!(again.offset(), 14);
        let (left, _) = again.resume(5);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0][0].update_id, 10);
        assert_eq!(left[0][0].raw["extra"], 10, "kept as Telegram sent it");
        assert_eq!(again.read(|st| st.session_id(2, None)), "2:1");
        j.done(10, None, true).unwrap();
        assert!(Journal::open(path).resume(5).0.is_empty());
    }

    #[test]
    fn an_unreadable_unit_is_dropped_not_kept_for_good() {
        let dir = aegis_e2e::proc::TempDir::new("journal-odd");
        let path = dir.path().join("poll.json");
        std::fs::write(
            &path,
            r#"{"offset": 9, "pending": [[{"update_id": "x"}], [{"update_id": 8}]]}"#,
        )
        .unwrap();
        let j = Journal::open(path.clone());
        let (units, _) = j.resume(5);
        assert_eq!(units.len(), 1);
        assert_eq!(units[0][0].update_id, 8);
        j.sync().unwrap();
        assert_eq!(Journal::open(path).resume(5).0.len(), 1, "and forgotten on disk");
    }

    #[test]
    fn a_message_every_run_dies_on_is_given_up_and_the_others_go_on() {
        let dir = aegis_e2e::proc::TempDir::new("journal-tries");
        let path = dir.path().join("poll.json");
        let j = Journal::open(path.clone());
        j.add(&unit(&[1], 1));
        j.add(&unit(&[2], 2));
        j.sync().unwrap();
        // The first run dies while handling both.
        let first = Journal::open(path.clone());
        assert_eq!(first.resume(3).0.len(), 2);
        first.sync().unwrap();
        // The second handles update 2, and dies on update 1.
        let second = Journal::open(path.clone());
        let (units, given_up) = second.resume(3);
        assert_eq!((units.len(), given_up.len()), (2, 0));
        second.sync().unwrap();
        second.done(2, None, false).unwrap();
        // The third would be the third to begin update 1: it gives it up.
        let third = Journal::open(path.clone());
        let (units, given_up) = third.resume(3);
        assert!(units.is_empty(), "{units:?}");
        assert_eq!(given_up.len(), 1);
        assert_eq!(given_up[0][0].update_id, 1);
        third.sync().unwrap();
        let st: PollState = state::load(&path);
        assert!(st.pending.is_empty() && st.tries.is_empty(), "{st:?}");
    }

    #[test]
    fn a_journal_that_cannot_be_written_says_so() {
        let dir = aegis_e2e::proc::TempDir::new("journal-ro");
        // A folder where the file should be: no write can replace it.
        let path = dir.path().join("poll.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "").unwrap();
        let j = Journal::open(path);
        j.add(&unit(&[1], 1));
        assert!(j.sync().is_err());
        assert!(j.done(1, None, true).is_err(), "a command must not start");
        assert!(j.sync().is_err(), "still to be written");
    }

    #[test]
    fn the_poller_waits_for_room() {
        let dir = aegis_e2e::proc::TempDir::new("journal-room");
        let j = std::sync::Arc::new(Journal::open(dir.path().join("poll.json")));
        j.add(&unit(&[1], 1));
        j.add(&unit(&[2], 2));
        let j2 = j.clone();
        let waiter = std::thread::spawn(move || {
            j2.wait_for_room(2);
            j2.len()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "two units wait: no room for more");
        j.done(2, None, false).unwrap();
        assert_eq!(waiter.join().unwrap(), 1);
    }
}
