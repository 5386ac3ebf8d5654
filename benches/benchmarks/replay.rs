//! Cost per op of a 1000-op chain of 16-element ops on one stream (`models::tiny_chain` with a
//! "default" side scope), replayed (`Mode::ReduceOverhead`) and eager, for every dtype. The
//! throughput is in ops, so criterion's time per element is the cost per op (target: replay
//! at most 100 ns per op, eager/replay at least 10x).

use criterion::{Criterion, Throughput};
use tagstream::{CompileConfig, DType, Mode, compile, models};

use super::timed_calls;

pub(crate) fn benches(c: &mut Criterion) {
    let ops = 1000;
    let mut g = c.benchmark_group("chain1000_16");
    g.throughput(Throughput::Elements(ops as u64));
    for dtype in DType::FLOATS {
        let inputs = models::tiny_inputs(16, dtype).expect("inputs");
        for (name, mode) in [("replay", Mode::ReduceOverhead), ("eager", Mode::Eager)] {
            let mut model = compile(
                models::tiny_chain(ops, "default"),
                CompileConfig::default().mode(mode),
            );
            timed_calls(1, &mut model, &inputs); // the capture, in reduce-overhead mode
            g.bench_function(format!("cpu_{name}_{dtype}"), |b| {
                b.iter_custom(|iters| timed_calls(iters, &mut model, &inputs))
            });
        }
    }
    g.finish();
}
