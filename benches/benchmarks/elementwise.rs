//! Elementwise ops on 1M elements, through the public API on the main stream (one thread: the
//! elementwise kernels do not split), for every dtype.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use tagstream::{DType, Result, Tensor};

use super::timed;

/// A unary tensor method, e.g. `Tensor::exp`.
type UnaryFn = fn(&Tensor) -> Result<Tensor>;

pub(crate) fn benches(c: &mut Criterion) {
    let len = 1usize << 20;
    let mut g = c.benchmark_group("elementwise_1m");
    let unary: [(&str, UnaryFn); 3] = [
        ("relu", Tensor::relu),
        ("exp", Tensor::exp),
        ("gelu", Tensor::gelu),
    ];
    for dtype in DType::FLOATS {
        let a = Tensor::randn(&[len], dtype, 1).expect("input");
        let b = Tensor::randn(&[len], dtype, 2).expect("input");
        // Bytes read and written per op: operands plus output.
        let bytes = |tensors: usize| (tensors * len * dtype.size_in_bytes()) as u64;
        g.throughput(Throughput::Bytes(bytes(3)));
        g.bench_function(format!("cpu_add_{dtype}"), |bch| {
            bch.iter_custom(|iters| timed(iters, 16, || drop(black_box(a.add(&b).expect("add")))))
        });
        g.throughput(Throughput::Bytes(bytes(2)));
        for (name, op) in unary {
            g.bench_function(format!("cpu_{name}_{dtype}"), |bch| {
                bch.iter_custom(|iters| timed(iters, 16, || drop(black_box(op(&a).expect("op")))))
            });
        }
    }
    g.finish();
}
