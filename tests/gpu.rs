//! GPU-only checks and the issue 11 figures: everything here skips with a printed reason where
//! no CUDA driver or device exists (CI). `scripts/gpu-check.sh` builds this binary for the lent
//! GPU machine, where it runs the tests, the sanitizer passes (`sanitizer_seed`) and the ignored
//! `gpu_bench` that prints the figures beside PyTorch's (scripts/compare-pytorch-cuda.py).

use std::time::{Duration, Instant};

use tagstream::ops::create_tagged_event;
use tagstream::scope::stream_switch;
use tagstream::{
    CompileConfig, DType, Device, Error, Mode, Result, Tensor, compile, cuda_is_available, models,
    synchronize,
};

const GPU: Device = Device::Cuda(0);

fn gpu_or_skip(what: &str) -> bool {
    if cuda_is_available() {
        return true;
    }
    println!("skipped: {what}: no CUDA driver or device on this machine");
    false
}

fn to_gpu(ts: Vec<Tensor>) -> Vec<Tensor> {
    ts.into_iter().map(|t| t.to_device(GPU).unwrap()).collect()
}

fn ro() -> CompileConfig {
    CompileConfig::default().mode(Mode::ReduceOverhead)
}

/// R10.9: without a GPU every CUDA request is `NoGpu` naming what is missing; never a panic.
#[test]
fn no_gpu_is_an_error_value_r10_9() {
    if cuda_is_available() {
        println!("skipped: no_gpu_is_an_error_value_r10_9: this machine has a GPU");
        return;
    }
    let x = Tensor::zeros(&[2], DType::F32).unwrap();
    for d in [Device::Cuda(0), Device::Cuda(3)] {
        let err = x.to_device(d).unwrap_err();
        match &err {
            Error::NoGpu { what } => assert!(what.contains(&d.to_string()), "{what}"),
            other => panic!("{other}"),
        }
    }
    // The CPU keeps working after the refusals.
    assert_eq!(x.add(&x).unwrap().to_vec_f32().unwrap(), vec![0.0, 0.0]);
}

/// A device index beyond the device count is `NoGpu` naming the index and the count (E18).
#[test]
fn device_index_out_of_range_r10_9() {
    if !gpu_or_skip("device_index_out_of_range_r10_9") {
        return;
    }
    let x = Tensor::zeros(&[2], DType::F32).unwrap();
    let err = x.to_device(Device::Cuda(4096)).unwrap_err();
    assert!(
        matches!(&err, Error::NoGpu { what } if what.contains("4096")),
        "{err}"
    );
}

/// The seed on the GPU in eager and replay equals the CPU's bits for the elementwise outputs
/// and meets R6.9 for the matmuls (here: equal between eager and replay, R10.8).
#[test]
fn seed_on_the_gpu_eager_and_replay_r10_6_r10_8() {
    if !gpu_or_skip("seed_on_the_gpu_eager_and_replay_r10_6_r10_8") {
        return;
    }
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let cpu_in = models::seed_inputs(96, dtype).unwrap();
        let gpu_in = to_gpu(cpu_in.clone());
        let ev = create_tagged_event(&format!("gpu-seed-{dtype}")).unwrap();
        let ev2 = create_tagged_event(&format!("gpu-seed-eager-{dtype}")).unwrap();
        let side = format!("gpu-seed-side-{dtype}");
        let mut replay = compile(models::seed_model(ev, &side), ro());
        let mut eager = compile(
            models::seed_model(ev2, &side),
            CompileConfig::default().mode(Mode::Eager),
        );
        let r1 = replay.run(&gpu_in).unwrap();
        let r2 = replay.run(&gpu_in).unwrap();
        let e = eager.run(&gpu_in).unwrap();
        let c = cpu_in[0].add(&cpu_in[1]).unwrap();
        for (i, ((a, b), c)) in r1.iter().zip(&r2).zip(&e).enumerate() {
            assert_eq!(a.device(), GPU);
            let bits = |t: &Tensor| -> Vec<u32> {
                t.to_vec_f32()
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect()
            };
            assert_eq!(bits(a), bits(b), "{dtype} output {i}: replay twice");
            assert_eq!(bits(a), bits(c), "{dtype} output {i}: replay vs eager");
        }
        assert_eq!(
            r1[0].to_vec_f32().unwrap(),
            c.to_vec_f32().unwrap(),
            "{dtype}: add equals the CPU's bits"
        );
        synchronize().unwrap();
    }
}

/// A 3-stream pipeline on the GPU (for the sanitizer too): stage k on stream k, handed over by
/// events, equals the same ops on one stream.
#[test]
fn three_stream_pipeline() {
    if !gpu_or_skip("three_stream_pipeline") {
        return;
    }
    let x = Tensor::randn(&[64, 64], DType::F16, 5)
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let evs: Vec<_> = (0..3)
        .map(|i| create_tagged_event(&format!("gpu-pipe-ev{i}")).unwrap())
        .collect();
    let mut y = x.clone();
    for (k, ev) in evs.iter().enumerate() {
        let _s = stream_switch(&format!("gpu-pipe-{k}")).unwrap();
        if k > 0 {
            tagstream::ops::tagged_event_wait(&evs[k - 1]).unwrap();
        }
        y = y.matmul(&x).unwrap().relu().unwrap();
        tagstream::ops::tagged_event_record(ev).unwrap();
    }
    tagstream::ops::tagged_event_wait(&evs[2]).unwrap();
    let mut z = x.clone();
    for _ in 0..3 {
        z = z.matmul(&x).unwrap().relu().unwrap();
    }
    assert_eq!(y.to_vec_f32().unwrap(), z.to_vec_f32().unwrap());
}

/// A few iterations of the seed in eager and in replay: what compute-sanitizer runs.
#[test]
fn sanitizer_seed() {
    if !gpu_or_skip("sanitizer_seed") {
        return;
    }
    let inputs = to_gpu(models::seed_inputs(128, DType::F16).unwrap());
    for (name, mode) in [("eager", Mode::Eager), ("replay", Mode::ReduceOverhead)] {
        let ev = create_tagged_event(&format!("san-{name}")).unwrap();
        let mut m = compile(
            models::seed_model(ev, &format!("san-side-{name}")),
            CompileConfig::default().mode(mode),
        );
        for _ in 0..3 {
            let out = m.run(&inputs).unwrap();
            out[1].to_vec_f32().unwrap();
        }
    }
    synchronize().unwrap();
}

/// Every round-2 kernel once, eager and replayed, including out-of-range indices (which must
/// read and write nothing out of bounds): what compute-sanitizer runs for the new ops. The
/// results themselves are checked against the CPU by the `cuda::` rows of tests/conformance.rs.
#[test]
fn sanitizer_round2_ops() {
    if !gpu_or_skip("sanitizer_round2_ops") {
        return;
    }
    let model = |x: &[Tensor]| -> Result<Vec<Tensor>> {
        let (a, b, idx, bad, sel) = (&x[0], &x[1], &x[2], &x[3], &x[4]);
        let (vals, pos) = a.topk(3)?;
        Ok(vec![
            a.add(b)?,
            a.mul_scalar(0.5)?,
            a.sum(1, false)?,
            a.mean(0, true)?,
            a.max(2, false)?,
            a.softmax_dim(1)?,
            a.transpose(0, 2)?,
            a.narrow(1, 2, 5)?,
            b.expand(&[3, 9, 260])?,
            Tensor::cat(&[a.clone(), a.clone()], 1)?,
            vals,
            pos.clone(),
            a.gather(2, &pos)?,
            a.gather(1, idx)?,
            a.scatter(1, idx, &a.narrow(1, 0, 4)?)?,
            a.index_select(2, sel)?,
            pos.transpose(0, 1)?,
            a.gather(1, bad)?,
            a.scatter(1, bad, &a.narrow(1, 0, 4)?)?,
            a.index_select(0, &bad.narrow(0, 0, 1)?.reshape(&[260 * 4])?)?,
        ])
    };
    let idx: Vec<f32> = (0..3 * 4 * 260).map(|i| (i % 9) as f32).collect();
    let bad: Vec<f32> = (0..3 * 4 * 260)
        .map(|i| if i % 5 == 0 { 1e6 } else { -((i % 3) as f32) })
        .collect();
    let sel: Vec<f32> = (0..300).map(|i| ((i * 7) % 260) as f32).collect();
    let inputs = to_gpu(vec![
        Tensor::randn(&[3, 9, 260], DType::F16, 90).unwrap(),
        Tensor::randn(&[9, 1], DType::F16, 91).unwrap(),
        Tensor::from_vec(idx, &[3, 4, 260], DType::I32).unwrap(),
        Tensor::from_vec(bad, &[3, 4, 260], DType::I32).unwrap(),
        Tensor::from_vec(sel, &[300], DType::I32).unwrap(),
    ]);
    for (name, mode) in [("eager", Mode::Eager), ("replay", Mode::ReduceOverhead)] {
        let mut m = compile(model, CompileConfig::default().mode(mode));
        for _ in 0..2 {
            let out = m.run(&inputs).unwrap();
            let n = out.len();
            for (i, t) in out.iter().enumerate() {
                let r = t.to_vec_f32();
                assert_eq!(r.is_err(), i >= n - 3, "{name}: output {i}: {r:?}");
            }
        }
        assert!(
            synchronize().is_err(),
            "{name}: the bad indices are reported"
        );
        synchronize().unwrap();
    }
}

/// Median per-call time of `calls` back-to-back calls then one synchronize, over `rounds`.
fn time(rounds: usize, calls: usize, mut f: impl FnMut() -> Result<()>) -> Duration {
    f().unwrap();
    synchronize().unwrap();
    let mut per = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..calls {
            f().unwrap();
        }
        synchronize().unwrap();
        per.push(t.elapsed() / calls as u32);
    }
    per.sort();
    per[rounds / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The issue 11 figures (prints; no timed asserts).
#[test]
#[ignore = "benchmark: run by scripts/gpu-check.sh on the GPU machine"]
fn gpu_bench() {
    if !gpu_or_skip("gpu_bench") {
        return;
    }
    // First call: capture + instantiate (kernels compiled in this process) after the context.
    let inputs = to_gpu(models::seed_inputs(1000, DType::F16).unwrap());
    let ev = create_tagged_event("bench-seed").unwrap();
    let mut seed = compile(models::seed_model(ev, "bench-side"), ro());
    let t = Instant::now();
    seed.run(&inputs).unwrap();
    synchronize().unwrap();
    println!(
        "FIGURE seed_first_call_ms {:.1}",
        t.elapsed().as_secs_f64() * 1e3
    );
    let d = time(20, 50, || seed.run(&inputs).map(drop));
    println!("FIGURE seed_replay_copyin_owned_us {:.1}", us(d));
    let ev = create_tagged_event("bench-seed-eager").unwrap();
    let mut eager = compile(
        models::seed_model(ev, "bench-side-e"),
        CompileConfig::default().mode(Mode::Eager),
    );
    let d = time(20, 50, || eager.run(&inputs).map(drop));
    println!("FIGURE seed_eager_2streams_us {:.1}", us(d));

    let x = to_gpu(vec![Tensor::randn(&[16], DType::F32, 3).unwrap()]);
    let chain = |x: &[Tensor]| -> Result<Vec<Tensor>> {
        let mut y = x[0].clone();
        for _ in 0..1000 {
            y = y.add(&x[0])?;
        }
        Ok(vec![y])
    };
    let d = time(10, 5, || chain(&x).map(drop));
    println!("FIGURE adds_eager_us_per_op {:.2}", us(d) / 1000.0);
    let mut c = compile(chain, ro());
    let d = time(10, 5, || c.run(&x).map(drop));
    println!("FIGURE adds_replay_us_per_op {:.3}", us(d) / 1000.0);

    let x = to_gpu(
        (0..2)
            .map(|i| Tensor::randn(&[256, 256], DType::F16, 20 + i).unwrap())
            .collect(),
    );
    let mut one = compile(models::matmul_branches(8, ["mb-a", "mb-a"]), ro());
    let mut two = compile(models::matmul_branches(8, ["mb-b", "mb-c"]), ro());
    let d1 = time(20, 50, || one.run(&x).map(drop));
    let d2 = time(20, 50, || two.run(&x).map(drop));
    println!(
        "FIGURE branches_1stream_us {:.1} branches_2streams_us {:.1} speedup {:.2}",
        us(d1),
        us(d2),
        d1.as_secs_f64() / d2.as_secs_f64()
    );
}
