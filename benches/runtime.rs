//! Criterion benchmarks of the CPU backend, one module per area (`benchmarks/`): elementwise
//! kernels, matmul (and two single-thread branches on one vs two streams), replay vs eager cost
//! per op of a 1000-op chain of 16-element ops, the cross-stream event hand-off, and the seed
//! model. Run with `cargo bench --bench runtime [-- FILTER]`.
//!
//! Streams run asynchronously, so every bench uses `iter_custom` and synchronizes before it
//! reads the clock. Names are `backend_op_dtype`; each group sets a `Throughput`. These are
//! for profiling and for comparing commits; the issue-6 table with targets and spreads is
//! `tagstream bench` (same programs, from `tagstream::models`). Nothing here is a pass/fail
//! threshold.

mod benchmarks;

use criterion::Criterion;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benchmarks::elementwise::benches(&mut c);
    benchmarks::replay::benches(&mut c);
    benchmarks::handoff::benches(&mut c);
    benchmarks::matmul::benches(&mut c);
    benchmarks::seed::benches(&mut c);
    c.final_summary();
}
