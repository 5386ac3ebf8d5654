//! Conformance: one body per behaviour, run on every backend (candle's `test_device!` pattern).
//!
//! Each body takes the device under test and moves its inputs there with `to_device`. The
//! `conformance!` macro makes one `#[test]` per body and backend; a backend this machine cannot
//! run prints why and returns (CI has no GPU), so the CPU rows always run and the CUDA rows run
//! wherever a GPU exists. Rule numbers refer to `docs/semantics.md`.

mod common;

use common::{eager, ro, tensor_bits};
use tagstream::models::seed_model;
use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{DType, Device, Error, Result, Tensor, compile, synchronize};

/// Makes `cpu::NAME` and `cuda::NAME` tests for each body `NAME(device)`.
macro_rules! conformance {
    ($($body:ident),* $(,)?) => {
        mod cpu {
            $(#[test]
            fn $body() {
                super::$body(tagstream::Device::Cpu);
            })*
        }
        mod cuda {
            $(#[test]
            fn $body() {
                if !tagstream::cuda_is_available() {
                    eprintln!(
                        "skipped: {} on cuda:0: no CUDA driver or device on this machine",
                        stringify!($body)
                    );
                    return;
                }
                super::$body(tagstream::Device::Cuda(0));
            })*
        }
    };
}

conformance!(
    ops_run_on_their_operands_device_r10_1,
    record_wait_orders_a_cross_stream_read_r1_8_r3_5,
    unordered_cross_stream_read_is_refused_r3_5,
    seed_replay_equals_eager_and_serial_r5_6,
    held_outputs_are_never_overwritten_r5_5,
    a_failure_poisons_only_what_depends_on_it_r3_12,
    to_device_round_trip_r10_4,
    elementwise_bits_equal_the_cpu_backend_r10_8,
    a_capture_stays_on_its_device_r10_7,
    broadcast_and_scalar_ops_equal_the_cpu_r6_6_r10_8,
    reductions_equal_the_cpu_r6_4,
    softmax_over_a_middle_dim_equals_the_cpu_r6_8,
    shape_copies_and_cat_equal_the_cpu_r6_11,
    topk_equals_the_cpu_r6_12,
    index_ops_equal_the_cpu_r6_12,
    out_of_range_indices_fail_only_their_dependents_r3_12_r6_12,
);

/// Host data moved to `dev`.
fn on(dev: Device, t: Tensor) -> Tensor {
    t.to_device(dev).unwrap()
}

fn randn(dev: Device, shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    on(dev, Tensor::randn(shape, dtype, seed).unwrap())
}

/// A unique tag per test and device (tags are process-wide).
fn tag(dev: Device, what: &str) -> String {
    format!("conf-{dev}-{what}")
}

fn ops_run_on_their_operands_device_r10_1(dev: Device) {
    let x = randn(dev, &[8, 8], DType::F32, 1);
    for y in [
        x.add(&x),
        x.matmul(&x),
        x.exp(),
        x.softmax(),
        x.to_dtype(DType::F16),
    ] {
        assert_eq!(y.unwrap().device(), dev);
    }
}

fn record_wait_orders_a_cross_stream_read_r1_8_r3_5(dev: Device) {
    let ev = create_tagged_event(&tag(dev, "rw-ev")).unwrap();
    let x = randn(dev, &[16, 16], DType::F32, 2);
    let y = x.exp().unwrap();
    tagged_event_record(&ev).unwrap();
    let z = {
        let _s = stream_switch(&tag(dev, "rw-side")).unwrap();
        tagged_event_wait(&ev).unwrap();
        y.mul(&y).unwrap()
    };
    let host: Vec<f32> = y.to_vec_f32().unwrap().iter().map(|v| v * v).collect();
    assert_eq!(z.to_vec_f32().unwrap(), host);
}

fn unordered_cross_stream_read_is_refused_r3_5(dev: Device) {
    let x = randn(dev, &[4], DType::F32, 3);
    let y = x.exp().unwrap();
    let side = tag(dev, "race-side");
    let _s = stream_switch(&side).unwrap();
    let err = y.add(&y).unwrap_err();
    assert!(
        matches!(&err, Error::DataRace { reader_stream, producer_stream, .. }
            if *reader_stream == side && producer_stream == "default"),
        "{err}"
    );
}

fn seed_replay_equals_eager_and_serial_r5_6(dev: Device) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let name = format!("seed-{dtype}");
        let ev = create_tagged_event(&tag(dev, &format!("{name}-ev"))).unwrap();
        let ev2 = create_tagged_event(&tag(dev, &format!("{name}-ev2"))).unwrap();
        let side = tag(dev, &format!("{name}-side"));
        let x: Vec<Tensor> = (0..4)
            .map(|i| randn(dev, &[48, 48], dtype, 10 + i))
            .collect();
        let mut replayed = compile(seed_model(ev, &side), ro());
        let mut eager_run = compile(seed_model(ev2, &side), eager());
        let first = replayed.run(&x).unwrap();
        let second = replayed.run(&x).unwrap();
        let eager_out = eager_run.run(&x).unwrap();
        assert_eq!(replayed.stats().replays, 1);
        // The serial single-stream run of the same ops (R6.4: bits do not depend on streams).
        let serial = [
            x[0].add(&x[1]).unwrap(),
            x[2].matmul(&x[3]).unwrap(),
            x[2].matmul(&x[3]).unwrap(),
            x[2].add(&x[3]).unwrap(),
        ];
        for i in 0..4 {
            let want = tensor_bits(&serial[i]);
            assert_eq!(
                tensor_bits(&first[i]),
                want,
                "{dtype} output {i}, capture call"
            );
            assert_eq!(tensor_bits(&second[i]), want, "{dtype} output {i}, replay");
            assert_eq!(
                tensor_bits(&eager_out[i]),
                want,
                "{dtype} output {i}, eager"
            );
            assert_eq!(first[i].device(), dev);
        }
    }
}

fn held_outputs_are_never_overwritten_r5_5(dev: Device) {
    let mut c = compile(|x: &[Tensor]| Ok(vec![x[0].exp()?]), ro());
    let a = randn(dev, &[32], DType::F32, 20);
    let b = randn(dev, &[32], DType::F32, 21);
    let held = c.run(std::slice::from_ref(&a)).unwrap();
    let held_bits = tensor_bits(&held[0]);
    for _ in 0..5 {
        let other = c.run(std::slice::from_ref(&b)).unwrap();
        assert_ne!(tensor_bits(&other[0]), held_bits);
    }
    assert_eq!(
        tensor_bits(&held[0]),
        held_bits,
        "a held output was overwritten"
    );
}

/// A matmul whose output cannot be allocated at run time: `[2^21, 1] x [1, 2^20]` F32 is 8 TiB,
/// within `isize::MAX` so validation accepts it, beyond any machine's memory.
fn huge_matmul_inputs(dev: Device) -> (Tensor, Tensor) {
    (
        on(dev, Tensor::full(&[1 << 21, 1], 1.0, DType::F32).unwrap()),
        on(dev, Tensor::full(&[1, 1 << 20], 1.0, DType::F32).unwrap()),
    )
}

/// The bodies that expect `synchronize` to report their failure run one at a time (failures
/// are process-wide; the other bodies never call `synchronize`).
static SYNCHRONIZE_CHECKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn a_failure_poisons_only_what_depends_on_it_r3_12(dev: Device) {
    let _one_at_a_time = SYNCHRONIZE_CHECKS.lock().unwrap_or_else(|p| p.into_inner());
    let (a, b) = huge_matmul_inputs(dev);
    let small = randn(dev, &[8], DType::F32, 30);
    let want = tensor_bits(&small.exp().unwrap());
    let side = tag(dev, "poison-side");
    let model = move |x: &[Tensor]| -> Result<Vec<Tensor>> {
        let big = x[0].matmul(&x[1])?; // fails when it runs
        let dependent = big.relu()?;
        let independent = {
            let _s = stream_switch(&side)?;
            x[2].exp()?
        };
        Ok(vec![big, dependent, independent])
    };
    let inputs = [a, b, small];
    synchronize().ok();
    let mut eager_model = compile(model.clone(), eager());
    let mut replayed = compile(model, ro());
    for mode in ["eager", "capture call", "replay", "replay"] {
        let outputs = match mode {
            "eager" => eager_model.run(&inputs),
            _ => replayed.run(&inputs),
        }
        .unwrap();
        let failure = outputs[0].to_vec_f32().unwrap_err();
        assert!(
            matches!(&failure, Error::ExecutionFailed { op, message, .. }
                if op == "matmul" && message.contains("out of memory")),
            "{mode}: {failure}"
        );
        assert_eq!(outputs[1].to_vec_f32().unwrap_err(), failure, "{mode}");
        assert_eq!(
            tensor_bits(&outputs[2]),
            want,
            "{mode}: an independent value failed"
        );
        // `synchronize` reports the failure once, then the slate is clean (R3.12).
        assert!(synchronize().is_err(), "{mode}");
        synchronize().unwrap();
    }
}

fn to_device_round_trip_r10_4(dev: Device) {
    let x = Tensor::randn(&[5, 3], DType::F16, 40).unwrap();
    let there = x.to_device(dev).unwrap();
    assert_eq!(
        (there.device(), there.shape(), there.dtype()),
        (dev, &[5, 3][..], DType::F16)
    );
    let back = there.exp().unwrap().to_device(Device::Cpu).unwrap();
    assert_eq!(back.device(), Device::Cpu);
    assert_eq!(tensor_bits(&back), tensor_bits(&x.exp().unwrap()));
    // A device that does not exist is refused, never a panic (R10.9).
    let err = x.to_device(Device::Cuda(99)).unwrap_err();
    assert!(matches!(err, Error::NoGpu { .. }), "{err}");
}

/// R10.8: every elementwise op on `dev` gives the CPU backend's bits, over all f16 values (and
/// their bf16 roundings) and random f32s including specials. On the CPU row both sides run on
/// the CPU, so that row checks only that the CPU kernels are reproducible.
fn elementwise_bits_equal_the_cpu_backend_r10_8(dev: Device) {
    let all_f16: Vec<f32> = (0..=u16::MAX)
        .map(|b| half::f16::from_bits(b).to_f32())
        .collect();
    let mut f32s: Vec<f32> = Tensor::randn(&[1 << 16], DType::F32, 77)
        .unwrap()
        .to_vec_f32()
        .unwrap()
        .into_iter()
        .map(|x| x * 40.0)
        .collect();
    f32s[..8].copy_from_slice(&[
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -1e-45,
        88.7,
    ]);
    for (dtype, values) in [
        (DType::F16, &all_f16),
        (DType::BF16, &all_f16),
        (DType::F32, &f32s),
        (DType::F32, &all_f16),
    ] {
        let n = values.len();
        let a_cpu = Tensor::from_vec(values.clone(), &[n], dtype).unwrap();
        let rev: Vec<f32> = values.iter().rev().copied().collect();
        let b_cpu = Tensor::from_vec(rev, &[n], dtype).unwrap();
        let (a, b) = (on(dev, a_cpu.clone()), on(dev, b_cpu.clone()));
        type Case = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>);
        let cases: [Case; 11] = [
            ("add", |a, b| a.add(b)),
            ("sub", |a, b| a.sub(b)),
            ("mul", |a, b| a.mul(b)),
            ("div", |a, b| a.div(b)),
            ("relu", |a, _| a.relu()),
            ("silu", |a, _| a.silu()),
            ("gelu", |a, _| a.gelu()),
            ("exp", |a, _| a.exp()),
            ("to f32", |a, _| a.to_dtype(DType::F32)),
            ("to f16", |a, _| a.to_dtype(DType::F16)),
            ("to bf16", |a, _| a.to_dtype(DType::BF16)),
        ];
        for (name, f) in cases {
            let want = tensor_bits(&f(&a_cpu, &b_cpu).unwrap());
            let got = tensor_bits(&f(&a, &b).unwrap());
            let bad = want.iter().zip(&got).position(|(w, g)| w != g);
            assert!(
                bad.is_none(),
                "{name} on {dtype}: first difference at input {:e}: cpu {:08x}, {dev} {:08x}",
                values[bad.unwrap()],
                want[bad.unwrap()],
                got[bad.unwrap()]
            );
        }
    }
}

/// R10.7: a capture runs on its inputs' device: moving a value to another device inside it is
/// refused with `DeviceMismatch`, while host-built constants are placed on the inputs' device.
fn a_capture_stays_on_its_device_r10_7(dev: Device) {
    let other = if dev.is_cpu() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let x = vec![randn(dev, &[4, 4], DType::F32, 50)];
    let mut moves = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![x[0].to_device(other)?]) },
        ro(),
    );
    let err = moves.run(&x).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    let mut constant = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let c = Tensor::full(&[4, 4], 2.0, DType::F32)?;
            Ok(vec![x[0].mul(&c)?])
        },
        ro(),
    );
    for _ in 0..2 {
        let out = constant.run(&x).unwrap();
        assert_eq!(out[0].device(), dev);
        let want: Vec<f32> = x[0].to_vec_f32().unwrap().iter().map(|v| v * 2.0).collect();
        assert_eq!(out[0].to_vec_f32().unwrap(), want);
    }
}

/// One op of a round-2 family, on the inputs of its family.
type Case = (&'static str, fn(&[Tensor]) -> Result<Tensor>);

/// Bits with every NaN written as one NaN (R6.6: any NaN equals any NaN; a GPU's NaN payloads
/// differ from x86's).
fn canonical_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32()
        .unwrap()
        .into_iter()
        .map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() })
        .collect()
}

/// Each case on `dev`, eager and replayed in one captured graph (capture call and a replay),
/// gives the CPU backend's eager bits (R10.8; R6.4: replay equals eager). On the CPU row the
/// eager side compares the CPU with itself, so that row checks replay against eager.
fn equals_the_cpu(dev: Device, what: &str, inputs: &[Tensor], cases: &[Case]) {
    let want: Vec<Vec<u32>> = cases
        .iter()
        .map(|(name, f)| {
            let t = f(inputs).unwrap_or_else(|e| panic!("{what} {name} on the cpu: {e}"));
            canonical_bits(&t)
        })
        .collect();
    let there: Vec<Tensor> = inputs.iter().map(|t| on(dev, t.clone())).collect();
    let fs: Vec<_> = cases.iter().map(|c| c.1).collect();
    let mut graph = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> { fs.iter().map(|f| f(x)).collect() },
        ro(),
    );
    let eager_out: Vec<Tensor> = cases.iter().map(|c| c.1(&there).unwrap()).collect();
    let captured = graph.run(&there).unwrap();
    let replayed = graph.run(&there).unwrap();
    for (mode, outs) in [
        ("eager", &eager_out),
        ("capture call", &captured),
        ("replay", &replayed),
    ] {
        for (i, (name, _)) in cases.iter().enumerate() {
            assert_eq!(outs[i].device(), dev, "{what} {name} {mode}");
            let got = canonical_bits(&outs[i]);
            let bad = want[i].iter().zip(&got).position(|(w, g)| w != g);
            assert!(
                got.len() == want[i].len() && bad.is_none(),
                "{what} {name} on {dev} ({mode}): first difference at element {bad:?} of {}",
                got.len()
            );
        }
    }
}

/// `n` values with specials (±0, ±inf, NaN) and ties mixed into random ones, as `dtype`.
fn with_specials(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let mut v = Tensor::randn(shape, DType::F32, seed)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.5,
        1.5,
    ];
    for (i, x) in v.iter_mut().enumerate() {
        if i % 11 == 3 {
            *x = specials[(i / 11) % specials.len()];
        } else if i % 7 == 0 {
            *x = (*x * 2.0).round(); // ties
        }
    }
    Tensor::from_vec(v, shape, dtype).unwrap()
}

/// An `I32` tensor of `shape` with values in `0..bound` (`bound` 0: any small integers).
fn ints(shape: &[usize], bound: u64, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match bound {
                0 => (state % 2001) as f32 - 1000.0,
                b => (state % b) as f32,
            }
        })
        .collect();
    Tensor::from_vec(v, shape, DType::I32).unwrap()
}

fn broadcast_and_scalar_ops_equal_the_cpu_r6_6_r10_8(dev: Device) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // [4,37,33] against [37,1] and [4,1,33]: both operands repeat along some dimension.
        let inputs = [
            with_specials(&[4, 37, 33], dtype, 60),
            with_specials(&[37, 1], dtype, 61),
            with_specials(&[4, 1, 33], dtype, 62),
        ];
        let cases: [Case; 7] = [
            ("add [37,1]", |x| x[0].add(&x[1])),
            ("sub [4,1,33]", |x| x[0].sub(&x[2])),
            ("mul [37,1] by [4,37,33]", |x| x[1].mul(&x[0])),
            ("div [4,1,33] by [37,1]", |x| x[2].div(&x[1])),
            ("add_scalar", |x| x[0].add_scalar(0.3)),
            ("mul_scalar", |x| x[0].mul_scalar(-1.7)),
            ("mul_scalar 1e-30", |x| x[0].mul_scalar(1e-30)),
        ];
        equals_the_cpu(dev, &format!("{dtype}"), &inputs, &cases);
    }
}

fn reductions_equal_the_cpu_r6_4(dev: Device) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let inputs = [
            Tensor::randn(&[4, 37, 33], dtype, 63).unwrap(),
            with_specials(&[5, 9, 3], dtype, 64),
            Tensor::zeros(&[3, 0, 2], dtype).unwrap(),
        ];
        let cases: [Case; 11] = [
            ("sum 0", |x| x[0].sum(0, false)),
            ("sum 1", |x| x[0].sum(1, true)),
            ("sum 2", |x| x[0].sum(2, false)),
            ("mean 1", |x| x[0].mean(1, false)),
            ("mean 2", |x| x[0].mean(2, true)),
            ("max 0", |x| x[0].max(0, false)),
            ("max 2", |x| x[0].max(2, false)),
            ("max with specials", |x| x[1].max(1, false)),
            ("sum with specials", |x| x[1].sum(2, false)),
            ("sum over 0 elements", |x| x[2].sum(1, false)),
            ("mean over 0 elements", |x| x[2].mean(1, true)),
        ];
        equals_the_cpu(dev, &format!("{dtype}"), &inputs, &cases);
    }
}

/// The CUDA kernel runs the CPU's row formula in its order, so even softmax (R6.8 allows
/// neighbours) gives the CPU's bits here.
fn softmax_over_a_middle_dim_equals_the_cpu_r6_8(dev: Device) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let inputs = [
            Tensor::randn(&[4, 37, 33], dtype, 65)
                .unwrap()
                .mul_scalar(4.0)
                .unwrap(),
            with_specials(&[3, 17, 2, 1], dtype, 66),
        ];
        let cases: [Case; 4] = [
            ("dim 0", |x| x[0].softmax_dim(0)),
            ("dim 1", |x| x[0].softmax_dim(1)),
            ("dim 1 with specials", |x| x[1].softmax_dim(1)),
            ("dim 2 (inner 1)", |x| x[1].softmax_dim(2)),
        ];
        equals_the_cpu(dev, &format!("{dtype}"), &inputs, &cases);
    }
}

fn shape_copies_and_cat_equal_the_cpu_r6_11(dev: Device) {
    for dtype in DType::ALL {
        let data = |shape: &[usize], seed| match dtype {
            DType::I32 => ints(shape, 0, seed),
            d => with_specials(shape, d, seed),
        };
        let inputs = [
            data(&[4, 37, 33], 67),
            data(&[37, 1], 68),
            data(&[4, 5, 33], 69),
        ];
        let cases: [Case; 8] = [
            ("transpose 0 2", |x| x[0].transpose(0, 2)),
            ("transpose 1 2", |x| x[0].transpose(1, 2)),
            ("narrow 1", |x| x[0].narrow(1, 3, 20)),
            ("narrow 2", |x| x[0].narrow(2, 1, 31)),
            ("expand", |x| x[1].expand(&[4, 37, 6])),
            ("cat 1", |x| Tensor::cat(&[x[0].clone(), x[2].clone()], 1)),
            ("cat 0", |x| Tensor::cat(&[x[2].clone(), x[2].clone()], 0)),
            ("cat of three", |x| {
                Tensor::cat(&[x[2].clone(), x[0].clone(), x[2].clone()], 1)
            }),
        ];
        equals_the_cpu(dev, &format!("{dtype}"), &inputs, &cases);
    }
}

fn topk_equals_the_cpu_r6_12(dev: Device) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let inputs = [
            with_specials(&[4, 37, 33], dtype, 70),
            with_specials(&[3, 1000], dtype, 71),
        ];
        let cases: [Case; 5] = [
            ("indices k=5", |x| Ok(x[0].topk(5)?.1)),
            ("values k=5", |x| Ok(x[0].topk(5)?.0)),
            ("indices k=33 (all)", |x| Ok(x[0].topk(33)?.1)),
            ("indices of 1000, k=40", |x| Ok(x[1].topk(40)?.1)),
            ("k=0", |x| Ok(x[1].topk(0)?.1)),
        ];
        equals_the_cpu(dev, &format!("{dtype}"), &inputs, &cases);
    }
}

fn index_ops_equal_the_cpu_r6_12(dev: Device) {
    for dtype in DType::ALL {
        let data = |shape: &[usize], seed| match dtype {
            DType::I32 => ints(shape, 0, seed),
            d => with_specials(shape, d, seed),
        };
        let inputs = [
            data(&[4, 37, 33], 72),
            // gather/scatter index [4,50,33] into dim 1 (size 37): many repeated positions.
            ints(&[4, 50, 33], 37, 73),
            data(&[4, 50, 33], 74),
            ints(&[45], 37, 75),
            ints(&[4, 37, 9], 33, 76),
            data(&[4, 37, 9], 77),
            ints(&[6], 4, 78),
        ];
        let cases: [Case; 6] = [
            ("gather 1", |x| x[0].gather(1, &x[1])),
            ("scatter 1 (last write wins)", |x| {
                x[0].scatter(1, &x[1], &x[2])
            }),
            ("index_select 1", |x| x[0].index_select(1, &x[3])),
            ("index_select 0", |x| x[0].index_select(0, &x[6])),
            ("gather 2", |x| x[0].gather(2, &x[4])),
            ("scatter 2", |x| x[0].scatter(2, &x[4], &x[5])),
        ];
        equals_the_cpu(dev, &format!("{dtype}"), &inputs, &cases);
    }
}

/// R3.12 / R6.12: an index outside its dimension fails that op with the CPU's message (the
/// first bad element), poisons what is computed from it (on the device and copied to the host),
/// leaves independent values alone, reads and writes nothing out of bounds, and `synchronize`
/// reports it once; eager, at the capture call and on replay alike.
fn out_of_range_indices_fail_only_their_dependents_r3_12_r6_12(dev: Device) {
    let _one_at_a_time = SYNCHRONIZE_CHECKS.lock().unwrap_or_else(|p| p.into_inner());
    let data: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let inputs = vec![
        on(dev, Tensor::from_vec(data, &[2, 3], DType::F32).unwrap()),
        // Element 1 is 7 (dim size 3); element 3 is -4.
        on(
            dev,
            Tensor::from_vec(vec![0.0, 7.0, 1.0, -4.0], &[2, 2], DType::I32).unwrap(),
        ),
        on(
            dev,
            Tensor::from_vec(vec![2.0, -1.0, 9.0], &[3], DType::I32).unwrap(),
        ),
        on(dev, Tensor::full(&[2, 2], 5.0, DType::F32).unwrap()),
    ];
    let want_ok = tensor_bits(&inputs[0].exp().unwrap());
    let model = |x: &[Tensor]| -> Result<Vec<Tensor>> {
        let g = x[0].gather(1, &x[1])?;
        let dependent = g.mul_scalar(2.0)?.exp()?;
        let selected = x[0].index_select(1, &x[2])?;
        let scattered = x[0].scatter(1, &x[1], &x[3])?;
        let independent = x[0].exp()?;
        Ok(vec![g, dependent, selected, scattered, independent])
    };
    synchronize().ok();
    let mut eager_model = compile(model, eager());
    let mut replayed = compile(model, ro());
    let expect = |e: &Error, op_name: &str, text: &str, mode: &str| {
        assert!(
            matches!(e, Error::ExecutionFailed { op, message, .. }
                if op == op_name && message.contains(text)),
            "{mode}: {e}"
        );
    };
    for mode in ["eager", "capture call", "replay", "replay"] {
        let outs = match mode {
            "eager" => eager_model.run(&inputs),
            _ => replayed.run(&inputs),
        }
        .unwrap();
        let failure = outs[0].to_vec_f32().unwrap_err();
        expect(
            &failure,
            "gather",
            "index 7 (element 1 of the index tensor) is out of range for a dimension of size 3",
            mode,
        );
        assert_eq!(outs[1].to_vec_f32().unwrap_err(), failure, "{mode}");
        let host = outs[1].to_device(Device::Cpu).unwrap();
        assert_eq!(
            host.to_vec_f32().unwrap_err(),
            failure,
            "{mode}: on the host"
        );
        let e = outs[2].to_vec_f32().unwrap_err();
        expect(&e, "index_select", "index -1 (element 1 of", mode);
        let e = outs[3].to_vec_f32().unwrap_err();
        expect(&e, "scatter", "index 7 (element 1 of", mode);
        assert_eq!(
            tensor_bits(&outs[4]),
            want_ok,
            "{mode}: an independent value"
        );
        assert!(synchronize().is_err(), "{mode}");
        synchronize().unwrap();
    }
}
