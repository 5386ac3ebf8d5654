//! Eager cost per tiny op with the system allocator (the library as a Rust or Python user gets
//! it; the `tagstream` CLI links mimalloc): a 1000-op chain of 16-element f32 ops on one stream,
//! median of 101 runs per round, 5 rounds.
//!
//! `cargo run --release --example eager_cost`

use std::hint::black_box;
use std::time::Instant;

use tagstream::{CompileConfig, DType, compile, models, synchronize};

fn main() -> tagstream::Result<()> {
    let n = 1000;
    let inputs = models::tiny_inputs(16, DType::F32)?;
    let mut eager = compile(models::tiny_chain(n, "default"), CompileConfig::default());
    for _ in 0..10 {
        black_box(eager.run(&inputs)?);
        synchronize()?;
    }
    for round in 0..5 {
        let mut per_op = Vec::with_capacity(101);
        for _ in 0..101 {
            let t = Instant::now();
            black_box(eager.run(&inputs)?);
            synchronize()?;
            per_op.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        per_op.sort_by(f64::total_cmp);
        println!(
            "round {round}: eager cost per op, {n}-op chain [16] f32, system allocator: median {:.0} ns (p25 {:.0}, p75 {:.0})",
            per_op[50], per_op[25], per_op[75]
        );
    }
    Ok(())
}
