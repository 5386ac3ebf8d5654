//! The seed model (two adds, two matmuls, one event, two streams) at 1000x1000, replayed and
//! eager, for every dtype. Throughput in floating-point operations of its two matmuls.

use criterion::{Criterion, Throughput};
use tagstream::{CompileConfig, DType, Mode, compile, models, ops};

use super::timed_calls;

pub(crate) fn benches(c: &mut Criterion) {
    let n = 1000usize;
    let mut g = c.benchmark_group("seed_1000");
    g.sample_size(10);
    g.throughput(Throughput::Elements(4 * (n as u64).pow(3)));
    let ev = ops::create_tagged_event("bench-seed-66").expect("event");
    for dtype in DType::FLOATS {
        let inputs = models::seed_inputs(n, dtype).expect("inputs");
        for (name, mode) in [("replay", Mode::ReduceOverhead), ("eager", Mode::Eager)] {
            let mut model = compile(
                models::seed_model(ev.clone(), "bench-seed-1"),
                CompileConfig::default().mode(mode),
            );
            timed_calls(1, &mut model, &inputs); // the capture, in reduce-overhead mode
            g.bench_function(format!("cpu_seed_{name}_{dtype}"), |b| {
                b.iter_custom(|iters| timed_calls(iters, &mut model, &inputs))
            });
        }
    }
    g.finish();
}
