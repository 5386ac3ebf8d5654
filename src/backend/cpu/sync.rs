//! The synchronisation primitives the runtime's signalling is built from, in one place, so that
//! a `loom` build (`RUSTFLAGS="--cfg loom"`) can swap every atomic, lock and condvar for loom's
//! model-checked versions without touching the protocol code.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

/// A CPU pause hint (a no-op under loom, where spinning is modelled by `yield_now`).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Locks `m`, ignoring poisoning: the data behind the runtime's locks stays consistent even if
/// a holder panicked, because every critical section validates before it mutates (R3.9).
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `cv`, ignoring poisoning (see [`lock`]).
#[inline]
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Staged back-off for the spin phase of a wait: pause hints that double up to a small cap,
/// then a few `yield_now` rounds, then "stop spinning, park" (style §7.2).
///
/// The budget is kept short because on a 2-core machine a spinning waiter occupies the core its
/// producer needs; `benches/runtime.rs` (event hand-off) is where it is tuned.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
    /// Skip the yield rounds ([`Backoff::spin_only`]).
    no_yield: bool,
}

impl Backoff {
    const SPIN_LIMIT: u32 = 6; // up to 2^6 = 64 pause hints per round
    const YIELD_LIMIT: u32 = 10;

    /// One back-off round. Returns `false` once the budget is spent and the caller should park.
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        if self.step <= Self::SPIN_LIMIT {
            for _ in 0..(1u32 << self.step) {
                spin_hint();
            }
        } else if self.step <= Self::SPIN_LIMIT + Self::YIELD_LIMIT && !self.no_yield {
            yield_now();
        } else {
            return false;
        }
        self.step += 1;
        true
    }

    /// A back-off without the yield rounds: pause hints only, then "park". For a waiter whose
    /// core busy kernel threads want: a thread that yields to them can wait behind them for a
    /// scheduler slice (milliseconds) after its condition holds, while a parked one is woken
    /// with the scheduler's wake-up preference.
    pub(crate) fn spin_only() -> Backoff {
        Backoff {
            step: 0,
            no_yield: true,
        }
    }
}

/// Runs a loom model with the runtime's bounds: three preemptions, and up to 10,000 branches
/// per execution (each back-off round is a yield, i.e. a branch: two waiters' spins and a
/// publisher's polling exceed loom's default of 1,000). Shared by every loom test module.
#[cfg(all(test, loom))]
pub(crate) fn loom_check(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.max_branches = 10_000;
    builder.check(f);
}
