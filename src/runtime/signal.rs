//! [`Progress`]: how far a stream has executed, published by its worker and awaited by other
//! workers (event waits) and by the host (`to_vec_f32`, `synchronize`).
//!
//! # Why this exists
//! A tagged-event record is an entry at position `(s, k)`; every wait bound to it needs "stream
//! `s` has executed its first `k` entries". Streams run their entries in FIFO order, so one
//! monotonic counter per stream answers every such question, for any number of events, with no
//! per-record allocation. A record therefore publishes its event simply by completing, and a
//! wait is "block until `done(s) ≥ k`" (the event generation of design.md §3 is the position).
//!
//! # Strategy: spin, then park (style §7)
//! 1. Fast path: one acquire load; if the position is reached, no lock is touched.
//! 2. Spin with [`Backoff`]: doubling pause hints, then a few yields.
//! 3. Park: under `lock`, register in `sleepers`, re-check `done`, and `Condvar::wait` in a
//!    loop (wake-ups may be spurious).
//! 4. The publisher stores `done`, then pays for a wake-up only if `sleepers != 0`; it takes and
//!    drops `lock` before notifying.
//!
//! # Memory ordering, and why no wake-up is lost
//! `done` is stored by the worker after the entry's effects (its output `OnceLock` is set before),
//! and waiters load it with acquire, so everything the entry wrote is visible to whoever sees the
//! new value. For parking, the publisher does `done.store(SeqCst)` then `sleepers.load(SeqCst)`;
//! the waiter, holding `lock`, does `sleepers.fetch_add(SeqCst)` then `done.load(SeqCst)`. In the
//! single total order of SeqCst operations either (a) the publisher's load comes after the
//! waiter's increment, so the publisher sees `sleepers != 0`, acquires `lock` (which the waiter
//! holds until `Condvar::wait` atomically releases it) and notifies a waiter that is already
//! waiting; or (b) it comes before, so the waiter's later load of `done` sees the store and it
//! never sleeps. Either way the waiter cannot sleep through the store.

use super::sync::{AtomicU64, AtomicUsize, Backoff, Condvar, Mutex, Ordering, lock, wait};

/// The executed-entry counter of one stream, with spin-then-park waiting.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    done: AtomicU64,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Progress {
    /// Publishes that the first `k` entries of the stream have executed. `k` never decreases.
    #[inline]
    pub(crate) fn publish(&self, k: u64) {
        self.done.store(k, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        // Taking the lock orders this notify after any waiter that registered has started
        // waiting (see the module docs).
        drop(lock(&self.lock));
        self.cv.notify_all();
    }

    /// How many entries have executed.
    #[inline]
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Blocks until at least `k` entries have executed.
    #[inline]
    pub(crate) fn wait_until(&self, k: u64) {
        if self.done() >= k {
            return;
        }
        self.wait_until_cold(k);
    }

    #[cold]
    fn wait_until_cold(&self, k: u64) {
        let mut backoff = Backoff::default();
        while backoff.snooze() {
            if self.done() >= k {
                return;
            }
        }
        let mut guard = lock(&self.lock);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.done.load(Ordering::SeqCst) < k {
            guard = wait(&self.cv, guard);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wait_returns_at_once_when_reached() {
        let p = Progress::default();
        p.publish(3);
        p.wait_until(2);
        p.wait_until(3);
        assert_eq!(p.done(), 3);
    }

    #[test]
    fn parked_waiters_are_woken() {
        let p = Arc::new(Progress::default());
        let waiters: Vec<_> = (1..=4)
            .map(|k| {
                let p = p.clone();
                std::thread::spawn(move || p.wait_until(k))
            })
            .collect();
        // Give the waiters time to exhaust their spin budget and park.
        std::thread::sleep(Duration::from_millis(50));
        for k in 1..=4 {
            p.publish(k);
        }
        for w in waiters {
            w.join().expect("waiter thread must not panic");
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn record_before_and_after_wait() {
        loom::model(|| {
            let p = Arc::new(Progress::default());
            let p2 = p.clone();
            let t = loom::thread::spawn(move || p2.publish(1));
            p.wait_until(1);
            t.join().unwrap();
        });
    }
}
