//! Chaos mode: seeded random delays on the stream workers (semantics SC37, R3.10, R5.6).
//!
//! Owns the process-wide chaos setting and each worker's delay generator. When chaos is on,
//! every worker stalls at random before each entry it runs and, inside a replay segment, before
//! each instruction: sometimes a `yield_now`, sometimes a short spin, sometimes a sleep of up to
//! a fraction of a millisecond. Results must not change (tagstream decides ordering at issue
//! time, never by timing), so a test runs the same program with and without chaos and compares
//! bits. It never touches what an entry computes.
//!
//! *Fast path*: when chaos is off, a delay point is one relaxed atomic load.
//!
//! Turn it on with [`set_chaos`](crate::set_chaos) or the environment variable
//! `TAGSTREAM_CHAOS=<seed>` (read when the runtime starts).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The chaos seed, `0` when chaos is off.
static SEED: AtomicU64 = AtomicU64::new(0);

/// Delay points passed with chaos on (tests check that chaos really perturbs the workers).
static POINTS: AtomicU64 = AtomicU64::new(0);

/// Turns chaos on with `seed` (`Some`) or off (`None`). A seed of 0 is mapped to 1.
pub(crate) fn set(seed: Option<u64>) {
    SEED.store(seed.map_or(0, |s| s.max(1)), Ordering::Relaxed);
}

/// Reads `TAGSTREAM_CHAOS` once, when the runtime starts.
pub(crate) fn init_from_env() {
    if let Some(seed) = std::env::var("TAGSTREAM_CHAOS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        set(Some(seed));
    }
}

thread_local! {
    /// (the seed this thread's generator was started from, its state).
    static RNG: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// SplitMix64: a tiny, well-mixed generator; quality matters less than being cheap and
/// reproducible per (seed, thread).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A delay point. `salt` distinguishes the workers (their stream id), so each stream draws its
/// own seeded sequence.
#[inline]
pub(crate) fn point(salt: u64) {
    let seed = SEED.load(Ordering::Relaxed);
    if seed != 0 {
        delay(seed, salt);
    }
}

#[cold]
fn delay(seed: u64, salt: u64) {
    POINTS.fetch_add(1, Ordering::Relaxed);
    let r = RNG.with(|cell| {
        let (from, mut state) = cell.get();
        if from != seed {
            state = seed ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        }
        let r = next(&mut state);
        cell.set((seed, state));
        r
    });
    match r % 16 {
        0..=7 => {}
        8..=11 => std::thread::yield_now(),
        12..=14 => {
            // Spin for 1–32 µs: long enough to reorder work across streams, short enough that
            // thousands of replays stay fast.
            let until = Instant::now() + Duration::from_micros(1 + (r >> 8) % 32);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        _ => std::thread::sleep(Duration::from_micros(10 + (r >> 8) % 200)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With chaos on, the workers pass delay points for entries and replay instructions.
    #[test]
    fn chaos_reaches_the_workers_sc37() {
        let before = POINTS.load(Ordering::Relaxed);
        crate::set_chaos(Some(3));
        let x = crate::Tensor::full(&[8], 2.0, crate::DType::F32).unwrap();
        let mut y = x.clone();
        for _ in 0..20 {
            y = y.mul(&x).unwrap();
        }
        let got = y.to_vec_f32().unwrap();
        crate::set_chaos(None);
        assert_eq!(got, vec![2f32.powi(21); 8]);
        assert!(POINTS.load(Ordering::Relaxed) >= before + 20);
    }

    #[test]
    fn generator_is_reproducible_per_seed() {
        let draw = |seed: u64| {
            let mut s = seed;
            (0..4).map(|_| next(&mut s)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
