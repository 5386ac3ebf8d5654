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

fn a_failure_poisons_only_what_depends_on_it_r3_12(dev: Device) {
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
