//! The benchmark areas; each module exposes `benches(&mut Criterion)`.

use std::time::{Duration, Instant};

use tagstream::{Compiled, Tensor, synchronize};

pub(crate) mod elementwise;
pub(crate) mod handoff;
pub(crate) mod matmul;
pub(crate) mod replay;
pub(crate) mod seed;

/// Time of `iters` calls of `issue`, with a `synchronize` after every `batch` calls and at the
/// end, so the clock covers the work and no more than `batch` results are ever queued.
pub(crate) fn timed(iters: u64, batch: u64, mut issue: impl FnMut()) -> Duration {
    let start = Instant::now();
    for i in 1..=iters {
        issue();
        if i.is_multiple_of(batch) {
            synchronize().expect("synchronize");
        }
    }
    synchronize().expect("synchronize");
    start.elapsed()
}

/// Time of `iters` calls of a compiled model, each followed by `synchronize` (as in
/// `tagstream bench`).
pub(crate) fn timed_calls(iters: u64, model: &mut Compiled, inputs: &[Tensor]) -> Duration {
    timed(iters, 1, || {
        std::hint::black_box(model.run(inputs).expect("model run"));
    })
}
