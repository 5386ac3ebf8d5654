//! The Rust half of `examples/bench.py`: the same workloads from Rust, to compare with Python.
//!
//! `cargo run --release --example bench_rust` (from python/). Prints medians:
//! - eager `add` on 16-element f32 tensors, per op (a 1000-add chain, issue + run + sync);
//! - seed model (reduce-overhead, replay): the `Compiled::run` call alone, and run + synchronize.

use std::hint::black_box;
use std::time::Instant;

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{CompileConfig, DType, Mode, Result, Tensor, compile, synchronize};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let x = Tensor::randn(&[16], DType::F32, 1)?;
    let chain = || -> Result<f64> {
        let start = Instant::now();
        let mut y = x.clone();
        for _ in 0..1000 {
            y = y.add(&x)?;
        }
        synchronize()?;
        black_box(y);
        Ok(start.elapsed().as_secs_f64() * 1e9 / 1000.0)
    };
    for _ in 0..5 {
        chain()?;
    }
    let per_op: Vec<f64> = (0..101).map(|_| chain()).collect::<Result<_>>()?;
    println!(
        "rust eager add [16] f32, per op (1000-add chain + sync): {:.0} ns",
        median(per_op)
    );

    for n in [64usize, 1000] {
        let ev = create_tagged_event(&format!("bench-rust-66-{n}"))?;
        let side = format!("bench-rust-1-{n}");
        let mut model = compile(
            move |x: &[Tensor]| {
                let add = x[0].add(&x[1])?;
                tagged_event_record(&ev)?;
                let mm = {
                    let _s = stream_switch(&side)?;
                    tagged_event_wait(&ev)?;
                    x[2].matmul(&x[3])?
                };
                Ok(vec![add, mm, x[2].matmul(&x[3])?, x[2].add(&x[3])?])
            },
            CompileConfig::default().mode(Mode::ReduceOverhead),
        );
        let xs: Vec<Tensor> = (0..4)
            .map(|i| Tensor::randn(&[n, n], DType::F16, i))
            .collect::<Result<_>>()?;
        model.run(&xs)?;
        synchronize()?;
        let rounds = if n == 1000 { 30 } else { 300 };
        let (mut run_us, mut total_ms) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = Instant::now();
            let out = model.run(&xs)?;
            let t1 = Instant::now();
            synchronize()?;
            run_us.push((t1 - t0).as_secs_f64() * 1e6);
            total_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            black_box(out);
        }
        println!(
            "rust seed {n}x{n} f16 replay: run() {:.1} us, run + synchronize {:.3} ms",
            median(run_us),
            median(total_ms)
        );
    }
    Ok(())
}
