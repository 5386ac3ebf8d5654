//! 1000x1000 matmul for every dtype (default thread split), and two independent single-thread
//! f32 matmul branches ([`models::matmul_branches`]) on one stream vs on two (target: two
//! streams at least 1.7x faster on 2 cores). Throughput in floating-point operations
//! (`2·m·n·k` per product), which criterion prints as elements per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use tagstream::{DType, Tensor, models, set_threads_per_stream};

use super::timed;

pub(crate) fn benches(c: &mut Criterion) {
    let n = 1000usize;
    let flops = 2 * (n as u64).pow(3);
    let mut g = c.benchmark_group("matmul_1000");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops));
    for dtype in DType::FLOATS {
        let a = Tensor::randn(&[n, n], dtype, 1).expect("input");
        let b = Tensor::randn(&[n, n], dtype, 2).expect("input");
        g.bench_function(format!("cpu_matmul_{dtype}"), |bch| {
            bch.iter_custom(|iters| timed(iters, 1, || drop(black_box(a.matmul(&b).expect("mm")))))
        });
    }
    let x: Vec<Tensor> = (0..2)
        .map(|i| Tensor::randn(&[n, n], DType::F32, 20 + i).expect("input"))
        .collect();
    g.throughput(Throughput::Elements(2 * flops));
    set_threads_per_stream(1);
    for (name, sides) in [
        ("1stream", ["default", "default"]),
        ("2streams", ["bench-branch-1", "bench-branch-2"]),
    ] {
        let mut branches = models::matmul_branches(1, sides);
        g.bench_function(format!("cpu_matmul_branches_{name}_f32"), |bch| {
            bch.iter_custom(|iters| {
                timed(iters, 1, || {
                    drop(black_box(branches(&x).expect("branches")))
                })
            })
        });
    }
    set_threads_per_stream(0);
    g.finish();
}
