//! Helpers shared by the capture/replay integration tests (each test file is its own crate and
//! uses a subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use tagstream::{
    CompileConfig, CompileStats, Compiled, DType, Error, Mode, Tensor, stream_activity,
};

/// `Mode::ReduceOverhead` with the default capture limit.
pub(crate) fn ro() -> CompileConfig {
    CompileConfig::default().mode(Mode::ReduceOverhead)
}

/// `Mode::Eager`.
pub(crate) fn eager() -> CompileConfig {
    CompileConfig::default().mode(Mode::Eager)
}

/// The bits of one tensor (waits for it).
pub(crate) fn tensor_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// The bits of every tensor (waits for each).
pub(crate) fn bits(outputs: &[Tensor]) -> Vec<Vec<u32>> {
    outputs.iter().map(tensor_bits).collect()
}

/// `n` `[64, 64]` F16 inputs with seeds `first_seed..first_seed + n`.
pub(crate) fn inputs(n: u64, first_seed: u64) -> Vec<Tensor> {
    (first_seed..first_seed + n)
        .map(|s| Tensor::randn(&[64, 64], DType::F16, s).unwrap())
        .collect()
}

/// `(captures, replays, eager_runs, fell_back_to_eager)` of `c`.
pub(crate) fn counters(c: &Compiled) -> (u64, u64, u64, bool) {
    stats_tuple(c.stats())
}

/// `(captures, replays, eager_runs, fell_back_to_eager)`.
pub(crate) fn stats_tuple(s: CompileStats) -> (u64, u64, u64, bool) {
    (s.captures, s.replays, s.eager_runs, s.fell_back_to_eager)
}

/// Entries issued so far on the stream `tag`; `None` if the stream does not exist.
pub(crate) fn issued(tag: &str) -> Option<u64> {
    stream_activity()
        .iter()
        .find(|s| s.tag == tag)
        .map(|s| s.issued)
}

/// Asserts that `err`'s message contains every needle.
pub(crate) fn assert_mentions(err: &Error, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(
            msg.contains(n),
            "message of {err:?} should contain {n:?}: {msg}"
        );
    }
}

/// `n` deterministic pseudo-random values `(x % levels) / scale + offset` (xorshift32 from
/// `seed`), rounded to `dtype`: test inputs already representable in their dtype.
pub(crate) fn grid_values(
    n: usize,
    seed: u32,
    dtype: DType,
    levels: u32,
    scale: f32,
    offset: f32,
) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            dtype.round_f32((s % levels) as f32 / scale + offset)
        })
        .collect()
}
