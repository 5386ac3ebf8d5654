//! Kernel correctness against the serial reference (bit-exact where R6.6 demands it) and against
//! plain f64 computations, for every op and dtype, including odd sizes and special values.

use half::{bf16, f16};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};

use super::bf16::{bf16_to_f32, f32_to_bf16};
use super::f16c::{f16_to_f32, f32_to_f16};
use super::*;
use crate::dtype::{DType, Element};
use crate::reference;

const SIZES: [usize; 6] = [0, 1, 7, 1023, 1024, 4097];

/// Deterministic values in `[-scale, scale]`, representable in `dtype`, plus special values.
fn values(n: usize, seed: u64, scale: f32, dtype: DType) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| dtype.round_f32(rng.random_range(-scale..=scale)))
        .collect()
}

fn specials(dtype: DType) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,             // f32 subnormal
        -2.0f32.powi(-24), // smallest f16 subnormal
        6.0e-5,            // near the f16 normal limit
        65504.0,           // f16 max
        -65520.0,          // rounds to -inf in f16
        3.0e38,
        88.7,   // exp overflow boundary
        -103.9, // exp underflow into subnormals
        -20.0,
        20.0,
        1.0,
        -1.0,
    ];
    v.iter_mut().for_each(|x| *x = dtype.round_f32(*x));
    v
}

fn to_f32<T: Element>(v: &[T]) -> Vec<f32> {
    let mut o = vec![0.0; v.len()];
    T::load_f32(v, &mut o);
    o
}

macro_rules! run_typed {
    ($dtype:expr, |$t:ident| $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F16 => {
                type $t = f16;
                $body
            }
            DType::BF16 => {
                type $t = bf16;
                $body
            }
            DType::I32 => unreachable!("the float kernels' tests take float dtypes only"),
        }
    };
}

fn typed<T: Element>(v: &[f32]) -> Vec<T> {
    let mut o = vec![T::default(); v.len()];
    T::store_f32(v, &mut o);
    o
}

fn kernel_binary(op: BinaryOp, a: &[f32], b: &[f32], dtype: DType) -> Vec<f32> {
    run_typed!(dtype, |T| {
        let mut o = vec![T::default(); a.len()];
        binary::<T>(op, &typed(a), &typed(b), &mut o);
        to_f32(&o)
    })
}

fn kernel_unary(op: UnaryOp, a: &[f32], dtype: DType) -> Vec<f32> {
    run_typed!(dtype, |T| {
        let mut o = vec![T::default(); a.len()];
        unary::<T>(op, &typed(a), &mut o);
        to_f32(&o)
    })
}

fn kernel_matmul(a: &[f32], b: &[f32], d: MatmulDims, dtype: DType, threads: usize) -> Vec<f32> {
    run_typed!(dtype, |T| {
        // NaN-filled output: any element the kernel read instead of overwriting shows up.
        let mut o = vec![T::from_f32(f32::NAN); d.batch * d.m * d.n];
        matmul::<T>(&typed(a), &typed(b), &mut o, d, threads);
        to_f32(&o)
    })
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    if let Some(i) = reference::first_mismatch(got, want) {
        panic!(
            "{what}: element {i}: got {:?}, reference {:?}",
            got.get(i),
            want.get(i)
        );
    }
}

#[test]
fn elementwise_binary_is_bit_exact_for_every_dtype_and_size_r6_6() {
    for dtype in DType::FLOATS {
        for (i, &n) in SIZES.iter().enumerate() {
            let mut a = values(n, i as u64, 10.0, dtype);
            let mut b = values(n, 100 + i as u64, 10.0, dtype);
            if n > 20 {
                let s = specials(dtype);
                a[..s.len()].copy_from_slice(&s);
                b[3..3 + s.len()].copy_from_slice(&s);
            }
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let got = kernel_binary(op, &a, &b, dtype);
                assert_bits(
                    &got,
                    &reference::binary(op, &a, &b, dtype),
                    &format!("{op:?} {dtype} n={n}"),
                );
            }
        }
    }
}

#[test]
fn elementwise_unary_is_bit_exact_for_every_dtype_and_size_r6_6() {
    for dtype in DType::FLOATS {
        for (i, &n) in SIZES.iter().enumerate() {
            let mut a = values(n, 7 + i as u64, 12.0, dtype);
            if n > 20 {
                let s = specials(dtype);
                a[..s.len()].copy_from_slice(&s);
            }
            for op in [UnaryOp::Relu, UnaryOp::Silu, UnaryOp::Gelu, UnaryOp::Exp] {
                let got = kernel_unary(op, &a, dtype);
                assert_bits(
                    &got,
                    &reference::unary(op, &a, dtype),
                    &format!("{op:?} {dtype} n={n}"),
                );
            }
        }
    }
}

/// Largest difference allowed between a kernel result and the f64 truth rounded to `dtype`:
/// the f32 evaluation (R6.2) plus one rounding to the output dtype.
fn close_to_f64(got: f32, truth: f64, dtype: DType, rel: f64, abs: f64) -> bool {
    if truth.is_nan() {
        return got.is_nan();
    }
    let rounded = f64::from(dtype.round_f32(truth as f32));
    if rounded.is_infinite() || got.is_infinite() {
        return f64::from(got) == rounded || (truth.abs() > 6.0e4 && dtype == DType::F16);
    }
    let ulp = 2.0 * dtype.unit_roundoff().max(2f64.powi(-24));
    (f64::from(got) - truth).abs()
        <= (ulp + rel) * truth.abs() + abs + 2.0 * dtype.half_min_subnormal() + 1e-37
}

#[test]
fn elementwise_kernels_agree_with_plain_f64() {
    for dtype in DType::FLOATS {
        for (i, &n) in SIZES.iter().enumerate() {
            let a = values(n, 50 + i as u64, 30.0, dtype);
            let b: Vec<f32> = values(n, 60 + i as u64, 30.0, dtype)
                .iter()
                .map(|&x| if x == 0.0 { 1.0 } else { x })
                .collect();
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let got = kernel_binary(op, &a, &b, dtype);
                for j in 0..n {
                    let (x, y) = (f64::from(a[j]), f64::from(b[j]));
                    let truth = match op {
                        BinaryOp::Add => x + y,
                        BinaryOp::Sub => x - y,
                        BinaryOp::Mul => x * y,
                        BinaryOp::Div => x / y,
                    };
                    assert!(
                        close_to_f64(got[j], truth, dtype, 0.0, 0.0),
                        "{op:?} {dtype}: {x} {y} -> {} vs {truth}",
                        got[j]
                    );
                }
            }
            for op in [UnaryOp::Relu, UnaryOp::Exp, UnaryOp::Silu, UnaryOp::Gelu] {
                let got = kernel_unary(op, &a, dtype);
                for j in 0..n {
                    let x = f64::from(a[j]);
                    let truth = match op {
                        UnaryOp::Relu => x.max(0.0),
                        UnaryOp::Exp => x.exp(),
                        UnaryOp::Silu => x / (1.0 + (-x).exp()),
                        UnaryOp::Gelu => gelu_f64(x),
                    };
                    // R6.10's relative bounds, plus output rounding.
                    assert!(
                        close_to_f64(got[j], truth, dtype, 2f64.powi(-20), 2f64.powi(-22)),
                        "{op:?} {dtype}: {x} -> {} vs {truth}",
                        got[j]
                    );
                }
            }
        }
    }
}

#[test]
fn relu_keeps_nan_and_maps_negative_zero_to_positive_zero() {
    let got = kernel_unary(UnaryOp::Relu, &[f32::NAN, -0.0, -3.0, 2.5], DType::F32);
    assert!(got[0].is_nan());
    assert_eq!(got[1].to_bits(), 0.0f32.to_bits());
    assert_eq!(&got[2..], &[0.0, 2.5]);
}

#[test]
fn conversions_between_all_dtype_pairs_are_exact_r6_1() {
    let mut a = values(4097, 3, 70000.0, DType::F32);
    let s = specials(DType::F32);
    a[..s.len()].copy_from_slice(&s);
    for from in DType::FLOATS {
        let src: Vec<f32> = a.iter().map(|&x| from.round_f32(x)).collect();
        for to in DType::FLOATS {
            let got = run_typed!(from, |S| {
                let s_vals: Vec<S> = typed(&src);
                run_typed!(to, |D| {
                    let mut o = vec![D::default(); src.len()];
                    convert::<S, D>(&s_vals, &mut o);
                    to_f32(&o)
                })
            });
            let want: Vec<f32> = src.iter().map(|&x| to.round_f32(x)).collect();
            assert_bits(&got, &want, &format!("{from} -> {to}"));
        }
    }
}

/// f64 truth for the accuracy rules of R6.10.
fn gelu_f64(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
}

#[test]
fn scalar_functions_meet_r6_10() {
    let mut xs: Vec<f32> = (0..100_000)
        .map(|i| -20.0 + 40.0 * i as f32 / 100_000.0)
        .collect();
    xs.extend([0.0, -0.0, 1e-30, -1e-30, 80.0, -80.0, 1e-8]);
    for &x in &xs {
        let xd = f64::from(x);
        let e = f64::from(scalar::exp(x));
        let e_true = xd.exp();
        assert!(
            (e - e_true).abs() <= 2f64.powi(-21) * e_true.abs(),
            "exp({x}) = {e}, true {e_true}"
        );
        let s = f64::from(scalar::silu(x));
        let s_true = xd / (1.0 + (-xd).exp());
        assert!(
            (s - s_true).abs() <= 2f64.powi(-20) * s_true.abs() + 2f64.powi(-22),
            "silu({x})"
        );
        let g = f64::from(scalar::gelu(x));
        let g_true = gelu_f64(xd);
        assert!(
            (g - g_true).abs() <= 2f64.powi(-20) * g_true.abs() + 2f64.powi(-22),
            "gelu({x}) = {g}, true {g_true}"
        );
    }
}

#[test]
fn exp_edge_cases() {
    assert_eq!(scalar::exp(0.0), 1.0);
    assert_eq!(scalar::exp(-0.0), 1.0);
    assert_eq!(scalar::exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(scalar::exp(89.0), f32::INFINITY);
    assert_eq!(scalar::exp(88.8), f32::INFINITY);
    assert!(scalar::exp(88.72).is_finite());
    assert_eq!(scalar::exp(f32::NEG_INFINITY).to_bits(), 0.0f32.to_bits());
    assert_eq!(scalar::exp(-104.0).to_bits(), 0.0f32.to_bits());
    assert!(scalar::exp(f32::NAN).is_nan());
    // Subnormal results: within one subnormal step of the truth, never flushed to zero.
    for x in [-88.0f32, -95.0, -100.0, -103.0] {
        let got = f64::from(scalar::exp(x));
        let truth = f64::from(x).exp();
        assert!(
            got > 0.0 && (got - truth).abs() <= 2f64.powi(-149),
            "exp({x}) = {got:e}, true {truth:e}"
        );
    }
    // Monotone across a reduction boundary.
    let c = 10.0 * std::f32::consts::LN_2;
    assert!(
        scalar::exp(c.next_down()) <= scalar::exp(c) && scalar::exp(c) <= scalar::exp(c.next_up())
    );
}

#[test]
fn softmax_and_rms_norm_meet_r6_8_against_reference_and_f64() {
    for dtype in DType::FLOATS {
        for (rows, n) in [(1, 1), (3, 7), (2, 1023), (4, 9)] {
            let a = values(rows * n, (rows * n) as u64, 8.0, dtype);
            let w = values(n, 5, 2.0, dtype);
            let (sm, rn) = run_typed!(dtype, |T| {
                let mut o = vec![T::default(); a.len()];
                softmax::<T>(&typed(&a), &mut o, n);
                let sm = to_f32(&o);
                rms_norm::<T>(&typed(&a), &typed(&w), 1e-6, &mut o, n);
                (sm, to_f32(&o))
            });
            let what = format!("{dtype} {rows}x{n}");
            reference::check_reduction(&sm, &reference::softmax(&a, n, dtype), n, dtype)
                .unwrap_or_else(|e| panic!("softmax {what}: {e}"));
            reference::check_reduction(&rn, &reference::rms_norm(&a, &w, 1e-6, n, dtype), n, dtype)
                .unwrap_or_else(|e| panic!("rms_norm {what}: {e}"));
            // Against f64 truth: f32 evaluation error plus up to two output ulps (R6.8 allows a
            // neighbour of the rounded reference), and an absolute term for subnormal outputs.
            let tol = 4.0 * n as f64 * 2f64.powi(-24) + 4.0 * dtype.unit_roundoff();
            let abs_tol = 4.0 * dtype.half_min_subnormal() + 1e-30;
            for (r, row) in a.chunks(n).enumerate() {
                let m = row
                    .iter()
                    .map(|&x| f64::from(x))
                    .fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = row.iter().map(|&x| (f64::from(x) - m).exp()).sum();
                let ss: f64 = row.iter().map(|&x| f64::from(x).powi(2)).sum();
                let d = (ss / n as f64 + 1e-6).sqrt();
                for j in 0..n {
                    let x = f64::from(row[j]);
                    let sm_true = (x - m).exp() / s;
                    let rn_true = x / d * f64::from(w[j]);
                    assert!(
                        (f64::from(sm[r * n + j]) - sm_true).abs() <= tol * sm_true.abs() + abs_tol,
                        "softmax {what}"
                    );
                    assert!(
                        (f64::from(rn[r * n + j]) - rn_true).abs() <= tol * rn_true.abs() + abs_tol,
                        "rms_norm {what}"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_meets_r6_9_for_every_dtype_and_shape() {
    let shapes = [
        (1, 1, 1),
        (7, 5, 3),
        (3, 1023, 2),
        (64, 64, 64),
        (130, 257, 67),
    ];
    for dtype in DType::FLOATS {
        for &(m, k, n) in &shapes {
            for (batch, rhs_batched) in [(1, false), (3, true), (2, false)] {
                let d = MatmulDims {
                    batch,
                    m,
                    k,
                    n,
                    rhs_batched,
                };
                let a = values(batch * m * k, (m * k) as u64, 2.0, dtype);
                let b = values(
                    if rhs_batched { batch } else { 1 } * k * n,
                    (k * n + 1) as u64,
                    2.0,
                    dtype,
                );
                let c = kernel_matmul(&a, &b, d, dtype, 1);
                reference::check_matmul(&a, &b, &c, d, dtype)
                    .unwrap_or_else(|e| panic!("{dtype} {d:?}: {e}"));
            }
        }
    }
}

#[test]
fn matmul_edge_shapes() {
    let d = MatmulDims {
        batch: 1,
        m: 2,
        k: 0,
        n: 3,
        rhs_batched: false,
    };
    let mut o = vec![f32::NAN; 6];
    matmul::<f32>(&[], &[], &mut o, d, 1);
    assert_eq!(o, vec![0.0; 6], "k = 0 gives zeros");
    let d = MatmulDims {
        batch: 1,
        m: 0,
        k: 4,
        n: 3,
        rhs_batched: false,
    };
    matmul::<f32>(&[], &[0.0; 12], &mut [], d, 2);
}

#[test]
fn matmul_bits_do_not_depend_on_thread_count_r6_4() {
    for (dtype, (m, k, n)) in [
        (DType::F32, (256, 512, 384)),
        (DType::F16, (1000, 1000, 1000)),
    ] {
        let d = MatmulDims {
            batch: 1,
            m,
            k,
            n,
            rhs_batched: false,
        };
        let a = values(m * k, 11, 1.0, dtype);
        let b = values(k * n, 12, 1.0, dtype);
        let one = kernel_matmul(&a, &b, d, dtype, 1);
        // 8 > cores here: more gemm jobs than pool threads (what adaptive threads would use).
        for threads in [2, 4, 8] {
            assert_bits(
                &kernel_matmul(&a, &b, d, dtype, threads),
                &one,
                &format!("{dtype} threads={threads}"),
            );
        }
    }
}

#[test]
fn matmul_bits_do_not_depend_on_thread_count_batched_r6_4() {
    // Batched products just above gemm's threading threshold go through tagstream's pool with
    // threads > 1; the same products below it run on the calling thread. Same bits either way.
    for dtype in [DType::F32, DType::BF16] {
        for (m, k, n) in [(96, 256, 97), (8, 8, 8)] {
            let d = MatmulDims {
                batch: 3,
                m,
                k,
                n,
                rhs_batched: true,
            };
            let a = values(3 * m * k, 21, 1.0, dtype);
            let b = values(3 * k * n, 22, 1.0, dtype);
            let one = kernel_matmul(&a, &b, d, dtype, 1);
            assert_bits(
                &kernel_matmul(&a, &b, d, dtype, 2),
                &one,
                &format!("{dtype} {d:?} threads=2"),
            );
        }
    }
}

/// Issue 10 item 6: the per-thread f16/bf16 scratch keeps at most `SCRATCH_KEEP_BYTES`. A
/// medium product's scratch is kept and reused (no allocation in steady-state replay); a large
/// one gets its own buffer, freed when it returns, instead of growing the kept one for good.
#[test]
fn matmul_scratch_kept_per_thread_is_capped() {
    use matmul::{SCRATCH_KEEP_BYTES, kept_scratch_bytes};
    // A fresh thread, so no other test's products are in its scratch.
    std::thread::spawn(|| {
        let run = |m: usize, k: usize, n: usize, threads: usize| {
            let d = MatmulDims {
                batch: 1,
                m,
                k,
                n,
                rhs_batched: false,
            };
            let a = vec![f16::from_f32(0.5); m * k];
            let b = vec![f16::from_f32(0.25); k * n];
            let mut o = vec![f16::NAN; m * n];
            matmul::<f16>(&a, &b, &mut o, d, threads);
            // 0.5 · 0.25 · k is exact in f16 for these k: every element must be it.
            let want = f16::from_f32(0.125 * k as f32);
            assert!(o.iter().all(|&x| x == want), "[{m},{k}]x[{k},{n}]");
        };
        assert_eq!(kept_scratch_bytes(), 0);
        run(512, 512, 512, 1);
        let medium = kept_scratch_bytes();
        assert!(
            (3 * 512 * 512 * 4..=SCRATCH_KEEP_BYTES).contains(&medium),
            "a 512^3 product keeps its 3 MiB of scratch: {medium} B"
        );
        run(512, 512, 512, 2);
        assert_eq!(kept_scratch_bytes(), medium, "the kept scratch is reused");
        // 2048x2048 · 2048x64 needs (4 Mi + 2 · 128 Ki) f32 = 17.0 MiB > 16 MiB.
        run(2048, 2048, 64, 2);
        let after = kept_scratch_bytes();
        eprintln!("kept f32 scratch: {medium} B after 512^3, {after} B after 2048x2048x64");
        assert_eq!(after, medium, "a large product's scratch is not kept");
    })
    .join()
    .expect("the scratch test thread");
}

/// Every f16 bit pattern, in order (NaNs and subnormals included).
fn all_f16() -> Vec<f16> {
    (0..=u16::MAX).map(f16::from_bits).collect()
}

/// Same bits, or both NaN.
fn same_f16(got: f16, want: f16) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

/// The F16C slice conversions against `half`'s software conversions (`*_const`, which never
/// use F16C): exhaustive for f16 → f32, and for f32 → f16 every f16 value, every midpoint
/// between neighbours (ties to even), one f32 ulp either side of it, NaN payloads, overflow
/// and f32 subnormals; every length 0..=40 exercises the padded tail.
#[test]
fn f16c_conversions_match_half_software_bit_for_bit() {
    let all = all_f16();
    let mut wide = vec![0f32; all.len()];
    if !f16_to_f32(&all, &mut wide) {
        eprintln!("no F16C on this CPU: the portable path is tested by the other kernel tests");
        return;
    }
    for (h, w) in all.iter().zip(&wide) {
        assert_eq!(
            w.to_bits(),
            h.to_f32_const().to_bits(),
            "widening {:#06x}",
            h.to_bits()
        );
    }
    let mut xs: Vec<f32> = Vec::new();
    for bits in 0..=u16::MAX {
        let (lo, hi) = (f16::from_bits(bits), f16::from_bits(bits.wrapping_add(1)));
        let (lo, hi) = (lo.to_f32_const(), hi.to_f32_const());
        xs.push(lo);
        if lo.is_finite() && hi.is_finite() && (lo < 0.0) == (hi < 0.0) {
            let mid = f32::midpoint(lo, hi);
            xs.extend([
                mid,
                f32::from_bits(mid.to_bits() - 1),
                f32::from_bits(mid.to_bits() + 1),
            ]);
        }
    }
    xs.extend([
        f32::from_bits(0x7fc0_0001),
        f32::from_bits(0x7f80_2001), // signalling NaN with a payload in the kept bits
        f32::from_bits(0xffff_ffff),
        65520.0,
        -65519.99,
        f32::MAX,
        1e-40,
        -1e-45,
    ]);
    let mut narrow = vec![f16::ZERO; xs.len()];
    assert!(f32_to_f16(&xs, &mut narrow));
    for (x, h) in xs.iter().zip(&narrow) {
        let want = f16::from_f32_const(*x);
        // Exact bits, NaN payloads included.
        assert!(
            h.to_bits() == want.to_bits(),
            "rounding {x:e}: got {:#06x}, want {:#06x}",
            h.to_bits(),
            want.to_bits()
        );
    }
    for n in 0..=40 {
        let mut w = vec![f32::NAN; n];
        assert!(f16_to_f32(&all[1000..1000 + n], &mut w));
        assert_bits(&w, &wide[1000..1000 + n], &format!("widening n={n}"));
        let mut h = vec![f16::NAN; n];
        assert!(f32_to_f16(&xs[5000..5000 + n], &mut h));
        assert_eq!(h, narrow[5000..5000 + n], "rounding n={n}");
    }
}

/// The bf16 slice conversions against `half`'s software conversions: exhaustive for
/// bf16 → f32; for f32 → bf16 every upper half combined with the lower halves that decide the
/// rounding (zero, one, just below, at and just above the tie, the top), which covers ties to
/// even, carries into the exponent, overflow to inf and every NaN class.
#[test]
fn bf16_conversions_match_half_bit_for_bit() {
    let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let mut wide = vec![0f32; all.len()];
    bf16_to_f32(&all, &mut wide);
    for (h, w) in all.iter().zip(&wide) {
        assert_eq!(
            w.to_bits(),
            h.to_f32_const().to_bits(),
            "widening {:#06x}",
            h.to_bits()
        );
    }
    let lows = [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff];
    let xs: Vec<f32> = (0..=u32::from(u16::MAX))
        .flat_map(|hi| lows.map(|lo| f32::from_bits(hi << 16 | lo)))
        .collect();
    let mut narrow = vec![bf16::ZERO; xs.len()];
    f32_to_bf16(&xs, &mut narrow);
    for (x, h) in xs.iter().zip(&narrow) {
        let want = bf16::from_f32_const(*x);
        assert_eq!(
            h.to_bits(),
            want.to_bits(),
            "rounding {:#010x}",
            x.to_bits()
        );
    }
    // Short and ragged lengths (vector tails), from places with ties, the top of the finite
    // range and NaNs; the element after each piece must stay untouched.
    for start in [0, 7 * 0x3f80, 7 * 0x7f7f, 7 * 0x7fc0 + 3, 7 * 0xff80] {
        for n in [1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63] {
            let x = &xs[start..start + n];
            let mut out = vec![bf16::from_bits(0x1234); n + 1];
            f32_to_bf16(x, &mut out[..n]);
            for (i, (x, h)) in x.iter().zip(&out).enumerate() {
                assert_eq!(
                    h.to_bits(),
                    bf16::from_f32_const(*x).to_bits(),
                    "rounding {:#010x}, element {i} of {n} from {start}",
                    x.to_bits()
                );
            }
            assert_eq!(out[n].to_bits(), 0x1234, "wrote past {n} elements");
        }
    }
}

/// The fused bf16 binary kernels against the definition computed element by element with
/// `half`'s software conversions: every bf16 value as `a` against a shuffled `b` (every class
/// meets every other: NaN, inf, zero, subnormal, ties when rounding back), and short lengths
/// for the vector tails. Same bits, or both NaN (R6.2, R6.6).
#[test]
fn bf16_binary_matches_the_scalar_definition_for_every_bf16() {
    let a: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let b: Vec<bf16> = (0..a.len())
        .map(|i| a[(i * 40_503 + 17) % a.len()])
        .collect();
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        let f = |x: f32, y: f32| op.apply_f32(x, y);
        for n in [a.len(), 0, 1, 15, 16, 17, 31, 33, 63] {
            let mut o = vec![bf16::ZERO; n];
            if !super::bf16::binary(op, &a[..n], &b[..n], &mut o) {
                eprintln!("no AVX2 on this CPU: bf16 binary ops go through f32 chunks");
                return;
            }
            for i in 0..n {
                let want = bf16::from_f32_const(f(a[i].to_f32_const(), b[i].to_f32_const()));
                assert!(
                    o[i].to_bits() == want.to_bits() || (o[i].is_nan() && want.is_nan()),
                    "{op:?} n={n}: {:#06x} {:#06x} -> {:#06x}, want {:#06x}",
                    a[i].to_bits(),
                    b[i].to_bits(),
                    o[i].to_bits(),
                    want.to_bits()
                );
            }
        }
    }
}

/// The fused f16 elementwise kernels against the definition computed element by element
/// with `half`'s software conversions: every f16 value as `a` (against a shuffled `b`) and
/// as the unary operand.
#[test]
fn f16c_elementwise_matches_the_scalar_definition_for_every_f16() {
    let a = all_f16();
    // b: a fixed shuffle of the same values, so every pair class (NaN, inf, zero, subnormal)
    // meets every other.
    let b: Vec<f16> = (0..a.len())
        .map(|i| a[(i * 40_503 + 17) % a.len()])
        .collect();
    let mut o = vec![f16::ZERO; a.len()];
    if !f16c::binary(BinaryOp::Add, &a, &b, &mut o) {
        eprintln!("no F16C on this CPU: the portable path is tested by the other kernel tests");
        return;
    }
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        let f = |x: f32, y: f32| op.apply_f32(x, y);
        for n in [a.len(), 0, 1, 7, 8, 9, 15, 16, 17, 63] {
            let mut o = vec![f16::ZERO; n];
            assert!(f16c::binary(op, &a[..n], &b[..n], &mut o));
            for i in 0..n {
                let want = f16::from_f32_const(f(a[i].to_f32_const(), b[i].to_f32_const()));
                assert!(
                    same_f16(o[i], want),
                    "{op:?} n={n}: {:#06x} {:#06x} -> {:#06x}, want {:#06x}",
                    a[i].to_bits(),
                    b[i].to_bits(),
                    o[i].to_bits(),
                    want.to_bits()
                );
            }
        }
    }
    for op in [UnaryOp::Relu, UnaryOp::Silu, UnaryOp::Gelu, UnaryOp::Exp] {
        let f = match op {
            UnaryOp::Relu => scalar::relu,
            UnaryOp::Silu => scalar::silu,
            UnaryOp::Gelu => scalar::gelu,
            UnaryOp::Exp => scalar::exp,
        };
        for n in [a.len(), 0, 1, 7, 8, 9, 17] {
            let mut o = vec![f16::ZERO; n];
            assert!(f16c::unary(op, &a[..n], &mut o));
            for i in 0..n {
                let want = f16::from_f32_const(f(a[i].to_f32_const()));
                assert!(
                    same_f16(o[i], want),
                    "{op:?} n={n}: {:#06x} -> {:#06x}, want {:#06x}",
                    a[i].to_bits(),
                    o[i].to_bits(),
                    want.to_bits()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn f32_roundtrips_through_half_types(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        for dtype in [DType::F16, DType::BF16] {
            let once = dtype.round_f32(x);
            // Rounding is idempotent, and the slice conversion agrees with the scalar one.
            let twice = dtype.round_f32(once);
            prop_assert!(once.to_bits() == twice.to_bits() || (once.is_nan() && twice.is_nan()));
            let got = kernel_unary(UnaryOp::Relu, &[once], dtype)[0];
            let want = reference::unary(UnaryOp::Relu, &[once], dtype)[0];
            prop_assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()));
            let c = run_typed!(dtype, |T| { let mut o = vec![T::default(); 1]; convert::<f32, T>(&[x], &mut o); to_f32(&o)[0] });
            prop_assert!(c.to_bits() == once.to_bits() || (c.is_nan() && once.is_nan()));
        }
    }
}

/// On-CPU time of the calling thread in ns (Linux schedstat), `None` elsewhere: on a loaded
/// machine the single-threaded figure is read from it instead of the wall clock.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Issue 12 preview: the 1000³ f32 GEMM time on 1 and 2 threads (median of 9 after a warm-up;
/// with 1 thread also the calling thread's on-CPU time, which a busy machine distorts less).
/// Prints figures only: `cargo test --release --lib gemm_1000_timing -- --ignored --nocapture`.
#[test]
#[ignore = "prints timings; run alone on an idle machine"]
fn gemm_1000_timing() {
    let n = 1000;
    let d = MatmulDims {
        batch: 1,
        m: n,
        k: n,
        n,
        rhs_batched: false,
    };
    let a = values(n * n, 31, 1.0, DType::F32);
    let b = values(n * n, 32, 1.0, DType::F32);
    let mut o = vec![0f32; n * n];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    for threads in [1, 2] {
        matmul::<f32>(&a, &b, &mut o, d, threads);
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let (t, c) = (std::time::Instant::now(), thread_cpu_ns());
            matmul::<f32>(&a, &b, &mut o, d, threads);
            wall.push(t.elapsed().as_secs_f64() * 1e3);
            if let (Some(c0), Some(c1)) = (c, thread_cpu_ns()) {
                cpu.push((c1 - c0) as f64 / 1e6);
            }
        }
        let (w, w_min) = median(wall);
        let cpu = if threads == 1 && !cpu.is_empty() {
            format!(", on-CPU median {:.2} ms", median(cpu).0)
        } else {
            String::new()
        };
        // A checksum of the bits: equal across threads (R6.4); a different kernel path (the
        // AVX-512 one) may block its reductions differently and change it.
        let bits = o.iter().fold(0u64, |h, x| {
            (h ^ u64::from(x.to_bits())).wrapping_mul(0x100_0000_01b3)
        });
        println!(
            "gemm 1000^3 f32, {threads} thread(s): wall median {w:.2} ms (min {w_min:.2}){cpu}, bits {bits:016x}"
        );
    }
}

mod small_m {
    //! The small-`m` kernel (`matmul_small`): R6.9, one fixed FMA order per element whatever the
    //! instruction set, tiling or thread count (R6.3, R6.4).

    use super::*;
    use crate::kernels::matmul::matmul_gemm;
    use crate::kernels::matmul_small::{self as small, Isa};

    /// Every path this CPU can run: each must give the reference chain's bits.
    fn isas() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|&i| small::detect().is_some_and(|best| best <= i))
            .collect()
    }

    fn run<T: Element>(isa: Isa, a: &[f32], b: &[f32], d: MatmulDims, threads: usize) -> Vec<f32> {
        let mut o = vec![T::from_f32(f32::NAN); d.batch * d.m * d.n];
        small::matmul_with::<T>(isa, &typed(a), &typed(b), &mut o, d, threads);
        to_f32(&o)
    }

    fn check<T: Element>(dtype: DType, d: MatmulDims) {
        let rb = if d.rhs_batched { d.batch } else { 1 };
        let seed = (d.m * 1000 + d.k * 10 + d.n) as u64;
        let a = values(d.batch * d.m * d.k, seed, 2.0, dtype);
        let b = values(rb * d.k * d.n, seed + 1, 2.0, dtype);
        // The order-defining scalar chain, rounded once to the dtype (R6.3).
        let (ta, tb) = (typed::<T>(&a), typed::<T>(&b));
        let mut want = Vec::new();
        for bt in 0..d.batch {
            let bb = if d.rhs_batched { bt } else { 0 };
            let c = small::reference(
                &ta[bt * d.m * d.k..(bt + 1) * d.m * d.k],
                &tb[bb * d.k * d.n..(bb + 1) * d.k * d.n],
                d.m,
                d.k,
                d.n,
            );
            want.extend(c.iter().map(|&x| dtype.round_f32(x)));
        }
        for isa in isas() {
            for threads in [1, 2, 3] {
                let got = run::<T>(isa, &a, &b, d, threads);
                assert_bits(
                    &got,
                    &want,
                    &format!("{dtype} {d:?} {isa:?} threads={threads}"),
                );
            }
        }
        reference::check_matmul(&a, &b, &want, d, dtype)
            .unwrap_or_else(|e| panic!("R6.9 {dtype} {d:?}: {e}"));
    }

    /// Every m ≤ 16 and column counts around every strip and block width (tails of every size),
    /// batched and not: both SIMD paths and 1–3 threads equal the scalar chain bit for bit.
    #[test]
    fn small_m_bits_equal_the_fma_chain_on_every_path_r6_4() {
        if isas().is_empty() {
            eprintln!("no AVX2/FMA: the small-m kernel is not used on this CPU");
            return;
        }
        for m in 1..=small::MAX_M {
            for (k, n) in [
                (1, 1),
                (5, 7),
                (33, 8),
                (17, 15),
                (64, 16),
                (9, 33),
                (3, 130),
            ] {
                for (batch, rhs_batched) in [(1, false), (2, true), (2, false)] {
                    let d = MatmulDims {
                        batch,
                        m,
                        k,
                        n,
                        rhs_batched,
                    };
                    check::<f32>(DType::F32, d);
                    check::<f16>(DType::F16, d);
                    check::<bf16>(DType::BF16, d);
                }
            }
        }
    }

    /// Large enough to go through the pool with 2+ threads (blocks claimed dynamically).
    #[test]
    fn small_m_threaded_products_keep_their_bits_r6_4() {
        if isas().is_empty() {
            return;
        }
        for m in [1, 5, 16] {
            let d = MatmulDims {
                batch: 3,
                m,
                k: 700,
                n: 300,
                rhs_batched: true,
            };
            check::<bf16>(DType::BF16, d);
            check::<f16>(DType::F16, d);
        }
    }

    /// Special values go through: NaN and ±inf propagate, an overflow rounds to inf, subnormal
    /// inputs and products are kept (no flush to zero).
    #[test]
    fn small_m_special_values() {
        let Some(isa) = small::detect() else { return };
        let d = MatmulDims {
            batch: 1,
            m: 2,
            k: 2,
            n: 17,
            rhs_batched: false,
        };
        let tiny = f32::from_bits(1); // the smallest f32 subnormal
        let a = [1.0, 0.0, 0.5, 1.0];
        let mut b = vec![1.0f32; 2 * 17];
        b[0] = f32::NAN;
        b[1] = f32::INFINITY;
        b[2] = f32::MAX;
        b[17 + 2] = f32::MAX;
        b[3] = tiny;
        b[17 + 3] = 0.0;
        let got = run::<f32>(isa, &a, &b, d, 1);
        assert!(got[0].is_nan() && got[17].is_nan(), "NaN propagates");
        assert_eq!((got[1], got[18]), (f32::INFINITY, f32::INFINITY));
        assert_eq!(got[2], f32::MAX, "1·MAX + 0·MAX");
        assert_eq!(got[19], f32::INFINITY, "0.5·MAX + MAX overflows");
        assert_eq!((got[3], got[20]), (tiny, 0.0), "a subnormal survives");
        // bf16: the smallest subnormal times 1 is kept (AVX-512 BF16 dot products would flush it).
        let sub = f32::from_bits(1 << 16);
        let mut b = vec![0.0f32; 2 * 17];
        b[5] = sub;
        let got = run::<bf16>(isa, &a, &b, d, 1);
        assert_eq!(got[5], sub);
    }

    /// Issue 12 figures: the MoE decode shapes (issue 13) in bf16 and the seed's 1000³ in
    /// f16/bf16/f32, 2 threads, the path `matmul` takes against the widen-then-`gemm` path (the
    /// one every shape took before). Median of 15 after a warm-up, in ms.
    /// `cargo test --release --lib small_m_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "prints timings; run alone on an idle machine"]
    fn small_m_timing() {
        fn median(mut f: impl FnMut()) -> f64 {
            f();
            let mut v: Vec<f64> = (0..15)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        }
        fn shape<T: Element>(name: &str, dtype: DType, d: MatmulDims, threads: usize) {
            let rb = if d.rhs_batched { d.batch } else { 1 };
            let a: Vec<T> = typed(&values(d.batch * d.m * d.k, 1, 1.0, dtype));
            let b: Vec<T> = typed(&values(rb * d.k * d.n, 2, 1.0, dtype));
            let mut o = vec![T::from_f32(0.0); d.batch * d.m * d.n];
            if let (Some(a16), Some(b16)) = (T::as_bf16(&a), T::as_bf16(&b)) {
                let mut o16 = vec![bf16::ZERO; o.len()];
                let dot = median(|| {
                    assert!(crate::kernels::matmul_bf16::matmul_bf16_dot(
                        a16, b16, &mut o16, d, threads
                    ))
                });
                let sm = (d.m <= small::MAX_M).then(|| {
                    median(|| {
                        assert!(small::matmul_small_m(a16, b16, &mut o16, d, threads));
                    })
                });
                println!("{name:<34} bf16 {threads} thr: dot {dot:8.3} ms | small-m {sm:?} ms");
            }
            let new = median(|| matmul::<T>(&a, &b, &mut o, d, threads));
            let old = median(|| matmul_gemm::<T>(&a, &b, &mut o, d, threads));
            println!(
                "{name:<34} {dtype:<4} {threads} thr: matmul {new:8.3} ms | widen+gemm {old:8.3} ms | {:5.2}x",
                old / new
            );
        }
        let dims = |batch, m, k, n, rhs_batched| MatmulDims {
            batch,
            m,
            k,
            n,
            rhs_batched,
        };
        println!("small-m path: {:?}", small::detect());
        for threads in [2, 1] {
            let moe = [
                (
                    "experts up [8,16,2048]x[8,2048,1408]",
                    dims(8, 16, 2048, 1408, true),
                ),
                (
                    "experts down [8,16,1408]x[8,1408,2048]",
                    dims(8, 16, 1408, 2048, true),
                ),
                (
                    "shared up [16,2048]x[2048,2816]",
                    dims(1, 16, 2048, 2816, false),
                ),
                (
                    "shared down [16,2816]x[2816,2048]",
                    dims(1, 16, 2816, 2048, false),
                ),
            ];
            for (name, d) in moe {
                shape::<bf16>(name, DType::BF16, d, threads);
            }
            let (name, d) = moe[0];
            shape::<f32>(name, DType::F32, d, threads);
            let sq = dims(1, 1000, 1000, 1000, false);
            shape::<f16>("seed 1000^3", DType::F16, sq, threads);
            shape::<bf16>("seed 1000^3", DType::BF16, sq, threads);
            shape::<f32>("seed 1000^3", DType::F32, sq, threads);
        }
    }
}

/// Issue 12, round 2: one thread, the fastest of 31 runs after a warm-up (ms; on a loaded
/// shared machine the minimum is the run that was not preempted; schedstat's on-CPU time is
/// tick-quantized on some VMs, so it is not used here): the small-m shapes (the
/// AVX-512 tile width and prefetch), the seed's 1000³ through `gemm` (its `x86-v4` kernels) and
/// what widening the f16/bf16 operands and narrowing the output cost there (the most that
/// panel-wise widening could save).
/// `cargo test --release --lib matmul_cpu_timing -- --ignored --nocapture`
#[test]
#[ignore = "prints timings"]
fn matmul_cpu_timing() {
    fn min_cpu(mut f: impl FnMut()) -> f64 {
        f();
        (0..31)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    }
    fn shape<T: Element>(name: &str, dtype: DType, d: MatmulDims) {
        let rb = if d.rhs_batched { d.batch } else { 1 };
        let a: Vec<T> = typed(&values(d.batch * d.m * d.k, 1, 1.0, dtype));
        let b: Vec<T> = typed(&values(rb * d.k * d.n, 2, 1.0, dtype));
        let mut o = vec![T::from_f32(0.0); d.batch * d.m * d.n];
        let t = min_cpu(|| matmul::<T>(&a, &b, &mut o, d, 1));
        println!("{name:<40} {dtype:<4} 1 thr wall min {t:8.3} ms");
    }
    let dims = |batch, m, k, n, rhs_batched| MatmulDims {
        batch,
        m,
        k,
        n,
        rhs_batched,
    };
    println!(
        "small-m path {:?}, load {}",
        crate::kernels::matmul_small::detect(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    shape::<bf16>(
        "experts up [8,16,2048]x[8,2048,1408]",
        DType::BF16,
        dims(8, 16, 2048, 1408, true),
    );
    shape::<bf16>(
        "shared down [16,2816]x[2816,2048]",
        DType::BF16,
        dims(1, 16, 2816, 2048, false),
    );
    shape::<f16>(
        "experts up [8,16,2048]x[8,2048,1408]",
        DType::F16,
        dims(8, 16, 2048, 1408, true),
    );
    shape::<f32>(
        "experts up [8,16,2048]x[8,2048,1408]",
        DType::F32,
        dims(8, 16, 2048, 1408, true),
    );
    let sq = dims(1, 1000, 1000, 1000, false);
    shape::<f32>("seed 1000^3", DType::F32, sq);
    shape::<f16>("seed 1000^3", DType::F16, sq);
    shape::<bf16>("seed 1000^3", DType::BF16, sq);
    // Widening both 1000² operands and narrowing the output: the f16/bf16 path's extra passes.
    let mut wide = vec![0f32; 1_000_000];
    let h: Vec<f16> = typed(&values(1_000_000, 3, 1.0, DType::F16));
    let mut h_out = h.clone();
    let t = min_cpu(|| {
        f16::load_f32(&h, &mut wide);
        f16::load_f32(&h, &mut wide);
        f16::store_f32(&wide, &mut h_out);
    });
    println!("widen 2 x 1000^2 f16 + narrow 1000^2: wall min {t:8.3} ms");
    let h: Vec<bf16> = typed(&values(1_000_000, 3, 1.0, DType::BF16));
    let mut h_out = h.clone();
    let t = min_cpu(|| {
        bf16::load_f32(&h, &mut wide);
        bf16::load_f32(&h, &mut wide);
        bf16::store_f32(&wide, &mut h_out);
    });
    println!("widen 2 x 1000^2 bf16 + narrow 1000^2: wall min {t:8.3} ms");
}

mod bf16_dot {
    //! The AVX512-BF16 dot-product path (`matmul_bf16`): R6.9 on every tail of its tiling, bits
    //! independent of the thread count (R6.4), and the guard that keeps subnormals from being
    //! flushed (R6.1, R6.3).

    use super::*;
    use crate::kernels::matmul_bf16::{self as dot, matmul_bf16_dot};

    fn dims(batch: usize, m: usize, k: usize, n: usize, rhs_batched: bool) -> MatmulDims {
        MatmulDims {
            batch,
            m,
            k,
            n,
            rhs_batched,
        }
    }

    /// `Some(output)` when the dot path took the product, `None` when it declined.
    fn run(a: &[f32], b: &[f32], d: MatmulDims, threads: usize) -> Option<Vec<f32>> {
        let mut o = vec![bf16::NAN; d.batch * d.m * d.n];
        matmul_bf16_dot(&typed(a), &typed(b), &mut o, d, threads).then(|| to_f32(&o))
    }

    fn skip() -> bool {
        if dot::available() {
            return false;
        }
        eprintln!("no AVX512-BF16 on this CPU: the bf16 dot-product path is not used here");
        true
    }

    /// Tails of every tiling level: rows around the 8-row tile, columns around the 48-column
    /// panel and the 192-column unit, odd `k` and `k` around the 512-pair block; batched and not.
    #[test]
    fn dot_meets_r6_9_and_keeps_its_bits_across_threads_r6_4() {
        if skip() {
            return;
        }
        let shapes = [
            (1, 1, 32),
            (7, 3, 47),
            (8, 2, 48),
            (9, 31, 49),
            (17, 64, 191),
            (33, 129, 192),
            (40, 1024, 193),
            (13, 1025, 100),
            (24, 2100, 64),
            (200, 40, 48),
        ];
        for &(m, k, n) in &shapes {
            for (batch, rhs_batched) in [(1, false), (3, true), (2, false)] {
                let d = dims(batch, m, k, n, rhs_batched);
                let rb = if rhs_batched { batch } else { 1 };
                let seed = (m * 7919 + k * 31 + n) as u64;
                let a = values(batch * m * k, seed, 2.0, DType::BF16);
                let b = values(rb * k * n, seed + 1, 2.0, DType::BF16);
                let one = run(&a, &b, d, 1)
                    .unwrap_or_else(|| panic!("{d:?}: the dot path declined normal operands"));
                reference::check_matmul(&a, &b, &one, d, DType::BF16)
                    .unwrap_or_else(|e| panic!("R6.9 {d:?}: {e}"));
                for threads in [2, 3, 8] {
                    let got = run(&a, &b, d, threads).expect("same operands, same decision");
                    assert_bits(&got, &one, &format!("{d:?} threads={threads}"));
                }
                // The dispatcher takes this path for bf16 (same bits).
                assert_bits(
                    &kernel_matmul(&a, &b, d, DType::BF16, 2),
                    &one,
                    &format!("{d:?} through matmul"),
                );
            }
        }
    }

    /// A thread keeps a column block of `B` packed for the product's next row chunk: results
    /// stay exact when products of one shape but other `B` follow each other on the same
    /// threads, and when the kept block failed the guard.
    #[test]
    fn dot_reuses_packed_columns_only_within_a_product() {
        if skip() {
            return;
        }
        // 25 row tiles, one 96-column block, `k` one block: six row chunks on 2+ threads.
        let d = dims(1, 200, 64, 96, false);
        let a = values(200 * 64, 3, 2.0, DType::BF16);
        for seed in 0..4u64 {
            let b = values(64 * 96, 10 + seed, 2.0, DType::BF16);
            let one = run(&a, &b, d, 1).expect("normal operands");
            reference::check_matmul(&a, &b, &one, d, DType::BF16).expect("R6.9");
            for threads in [2, 3] {
                let got = run(&a, &b, d, threads).expect("same decision");
                assert_bits(&got, &one, &format!("B seed {seed}, {threads} threads"));
            }
        }
        let mut b = values(64 * 96, 20, 2.0, DType::BF16);
        b[5] = 2f32.powi(-130);
        assert!(run(&a, &b, d, 2).is_none(), "a subnormal in B declines");
    }

    /// Special values pass through as IEEE arithmetic would: inf·x, NaN, ±0, and cancellation
    /// of large terms.
    #[test]
    fn dot_handles_inf_nan_and_cancellation() {
        if skip() {
            return;
        }
        let d = dims(1, 2, 4, 32, false);
        let mut a = vec![1.0f32; 8];
        a[4..].copy_from_slice(&[1e30, -1e30, 1.0, 0.0]);
        let mut b = vec![0.5f32; 4 * 32];
        b[0] = f32::INFINITY; // column 0, k = 0
        b[32 + 1] = f32::NAN; // column 1, k = 1
        let got = run(&a, &b, d, 1).expect("normal exponents");
        assert_eq!(got[0], f32::INFINITY);
        assert!(got[1].is_nan());
        assert_eq!(got[2], 2.0);
        // Row 1: 1e30·0.5 − 1e30·0.5 + 0.5 + 0 = 0.5 exactly in any order of pairs.
        assert_eq!(got[32 + 2], 0.5);
        reference::check_matmul(&a, &b, &got, d, DType::BF16).expect("R6.9");
    }

    /// The guard: a subnormal operand, or exponents whose products could leave a subnormal
    /// partial sum, send the product to the general path, which keeps subnormals (R6.1).
    #[test]
    fn dot_declines_where_the_instruction_would_flush_subnormals() {
        if skip() {
            return;
        }
        let d = dims(1, 1, 2, 32, false);
        let p = |e: i32| 2f32.powi(e);
        // Exponent keys sum to 142 (2^-60 has key 67, 2^-52 key 75): taken, and exact.
        let b = vec![p(-52); 2 * 32];
        let got = run(&[p(-60), p(-60)], &b, d, 1).expect("keys sum to 142");
        assert_eq!(got[0], p(-111));
        // 141: declined.
        assert!(run(&[p(-61), p(-61)], &b, d, 1).is_none());
        // A subnormal in A or in B: declined, however large the other side.
        let sub = f32::from_bits(1 << 16);
        assert!(run(&[sub, 1.0], &vec![1.0; 64], d, 1).is_none());
        let mut b1 = vec![1.0f32; 64];
        b1[40] = sub;
        assert!(run(&[1.0, 1.0], &b1, d, 1).is_none());
        // Through `matmul`: a product that is itself subnormal is kept, not flushed.
        let d = dims(1, 16, 1, 32, false);
        let got = kernel_matmul(&[p(-64); 16], &[p(-64); 32], d, DType::BF16, 2);
        assert!(
            got.iter().all(|&x| x == p(-128)),
            "2^-64·2^-64 kept: {got:?}"
        );
        // A declined product is rewritten whole by the general path (the dot path may have
        // written some units before one failed the guard).
        let d = dims(1, 64, 8, 400, false);
        let a = values(64 * 8, 5, 1.0, DType::BF16);
        let mut b = values(8 * 400, 6, 1.0, DType::BF16);
        b[8 * 400 - 1] = p(-130);
        let got = kernel_matmul(&a, &b, d, DType::BF16, 2);
        reference::check_matmul(&a, &b, &got, d, DType::BF16).expect("R6.9 after the fallback");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Operands scaled towards the guard's edge from both sides: whichever path `matmul`
        /// takes, the result meets R6.9 (its `η_out` term included).
        #[test]
        fn matmul_bf16_meets_r6_9_near_the_subnormal_edge(
            sa in -70i32..0, sb in -70i32..0, m in 1usize..24, k in 1usize..40,
            n in 30usize..70, seed in 0u64..1000,
        ) {
            let d = dims(1, m, k, n, false);
            let scale = |v: Vec<f32>, s: i32| -> Vec<f32> {
                v.into_iter().map(|x| x * 2f32.powi(s)).collect()
            };
            let a = scale(values(m * k, seed, 2.0, DType::BF16), sa);
            let b = scale(values(k * n, seed + 1, 2.0, DType::BF16), sb);
            let (a, b) = (to_f32(&typed::<bf16>(&a)), to_f32(&typed::<bf16>(&b)));
            let got = kernel_matmul(&a, &b, d, DType::BF16, 2);
            prop_assert!(reference::check_matmul(&a, &b, &got, d, DType::BF16).is_ok());
        }
    }
}

/// The operands of the 1000³ bf16 timing tests.
fn bf16_1000_operands() -> (MatmulDims, Vec<bf16>, Vec<bf16>) {
    let d = MatmulDims {
        batch: 1,
        m: 1000,
        k: 1000,
        n: 1000,
        rhs_batched: false,
    };
    let a = typed(&values(1_000_000, 1, 1.0, DType::BF16));
    let b = typed(&values(1_000_000, 2, 1.0, DType::BF16));
    (d, a, b)
}

/// Two 1000³ bf16 products at once from two threads (the seed's two streams) against one after
/// the other, 2 threads each, median of 11 (ms).
/// `cargo test --release --lib concurrent_bf16_timing -- --ignored --nocapture`
#[test]
#[ignore = "prints timings"]
fn concurrent_bf16_timing() {
    let (d, a, b) = bf16_1000_operands();
    let median = |f: &dyn Fn()| {
        f();
        let mut v: Vec<f64> = (0..11)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[5]
    };
    let one = || {
        let mut o = vec![bf16::ZERO; 1_000_000];
        matmul::<bf16>(&a, &b, &mut o, d, 2);
    };
    let seq = median(&|| {
        one();
        one();
    });
    let par = median(&|| {
        std::thread::scope(|s| {
            s.spawn(one);
            s.spawn(one);
        })
    });
    println!("two 1000^3 bf16 products: one after the other {seq:.3} ms, at once {par:.3} ms");
}

/// Elementwise `add` of 1M elements in each dtype, one thread, the fastest of 31 (ms).
/// `cargo test --release --lib add_dtype_timing -- --ignored --nocapture`
#[test]
#[ignore = "prints timings"]
fn add_dtype_timing() {
    fn time<T: Element>(dtype: DType) {
        let a: Vec<T> = typed(&values(1 << 20, 1, 1.0, dtype));
        let b: Vec<T> = typed(&values(1 << 20, 2, 1.0, dtype));
        let mut o = vec![T::default(); 1 << 20];
        let t = (0..31)
            .map(|_| {
                let t = std::time::Instant::now();
                binary::<T>(BinaryOp::Add, &a, &b, &mut o);
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min);
        println!("add 1M {dtype}: {t:.3} ms");
    }
    time::<f32>(DType::F32);
    time::<f16>(DType::F16);
    time::<bf16>(DType::BF16);
}

/// One 1000³ bf16 product on one and on two threads, the median and fastest of 21 (ms): `cargo test --release --lib bf16_gemm_timing -- --ignored --nocapture`.
#[test]
#[ignore = "prints timings"]
fn bf16_gemm_timing() {
    let (d, a, b) = bf16_1000_operands();
    let mut o = vec![bf16::ZERO; 1_000_000];
    for threads in [1, 2] {
        matmul::<bf16>(&a, &b, &mut o, d, threads);
        let mut v: Vec<f64> = (0..21)
            .map(|_| {
                let t = std::time::Instant::now();
                matmul::<bf16>(&a, &b, &mut o, d, threads);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        v.sort_by(f64::total_cmp);
        println!(
            "1000^3 bf16, {threads} thread(s): median {:.3} ms, min {:.3} ms",
            v[10], v[0]
        );
    }
}

/// Elementwise ops split across the pool keep every element's bits, whatever the thread count,
/// for pieces that end mid-vector (R6.4); each piece sees the same slice offsets as the output.
#[test]
fn elementwise_pieces_keep_their_bits_across_threads_r6_4() {
    fn check<T: Element>(dtype: DType) {
        let n = 3 * super::elementwise::PARALLEL_MIN_ELEMENTS + 37;
        let a: Vec<T> = typed(&values(n, 41, 3.0, dtype));
        let b: Vec<T> = typed(&values(n, 42, 3.0, dtype));
        let run = |threads: usize| {
            let mut sum = vec![T::default(); n];
            in_pieces(&mut sum, threads, |at, o| {
                binary(BinaryOp::Div, &a[at..][..o.len()], &b[at..][..o.len()], o);
            });
            let mut act = vec![T::default(); n];
            in_pieces(&mut act, threads, |at, o| {
                unary(UnaryOp::Silu, &a[at..][..o.len()], o);
            });
            let mut scaled = vec![T::default(); n];
            in_pieces(&mut scaled, threads, |at, o| {
                binary_scalar(BinaryOp::Mul, &a[at..][..o.len()], 0.3, o);
            });
            (sum, act, scaled)
        };
        let one = run(1);
        for threads in [2, 3, 4] {
            let got = run(threads);
            for (g, w, what) in [
                (got.0, &one.0, "div"),
                (got.1, &one.1, "silu"),
                (got.2, &one.2, "mul"),
            ] {
                assert_bits(
                    &to_f32(&g),
                    &to_f32(w),
                    &format!("{dtype} {what}, {threads} threads"),
                );
            }
        }
        // And the split equals the unsplit kernel.
        let mut whole = vec![T::default(); n];
        binary(BinaryOp::Div, &a, &b, &mut whole);
        assert_bits(
            &to_f32(&whole),
            &to_f32(&one.0),
            &format!("{dtype}: split vs whole"),
        );
    }
    check::<f32>(DType::F32);
    check::<f16>(DType::F16);
    check::<bf16>(DType::BF16);
}

/// `claim_units`: every unit runs exactly once, whatever the threads and however many kernels
/// claim at once from several callers; a failing unit stops the claiming and is reported; a
/// panicking unit reaches the caller and leaves the pool's counts as they were.
mod claims {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::kernels::matmul::KernelPool;

    fn counters(n: usize) -> Vec<AtomicUsize> {
        (0..n).map(|_| AtomicUsize::new(0)).collect()
    }

    fn each_once(runs: &[AtomicUsize], what: &str) {
        for (u, r) in runs.iter().enumerate() {
            assert_eq!(r.load(Ordering::Relaxed), 1, "{what}: unit {u}");
        }
    }

    #[test]
    fn every_unit_runs_once_for_any_threads() {
        let pool = KernelPool::new(3).expect("threads");
        for threads in 1..=5 {
            for units in [0, 1, 2, 7, 300] {
                let runs = counters(units);
                let work = |u: usize| {
                    runs[u].fetch_add(1, Ordering::Relaxed);
                    true
                };
                assert!(pool.install(|| pool.claim_units(threads, units, &work)));
                each_once(&runs, &format!("{threads} threads, {units} units"));
            }
        }
        assert_eq!(pool.counts(), [0, 0, 0]);
    }

    #[test]
    fn kernels_claiming_at_once_each_finish_every_unit() {
        let pool = KernelPool::new(2).expect("threads");
        let kernels: Vec<Vec<AtomicUsize>> = (0..4).map(|_| counters(64)).collect();
        std::thread::scope(|s| {
            for runs in &kernels {
                let pool = &pool;
                s.spawn(move || {
                    let work = |u: usize| {
                        runs[u].fetch_add(1, Ordering::Relaxed);
                        // Long enough for the other kernels to arrive mid-way.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        true
                    };
                    assert!(pool.install(|| pool.claim_units(2, runs.len(), &work)));
                });
            }
        });
        for (i, runs) in kernels.iter().enumerate() {
            each_once(runs, &format!("kernel {i}"));
        }
        assert_eq!(pool.counts(), [0, 0, 0]);
    }

    #[test]
    fn a_failing_unit_stops_the_claims_and_a_panic_reaches_the_caller() {
        let pool = KernelPool::new(2).expect("threads");
        let runs = counters(200);
        let work = |u: usize| runs[u].fetch_add(1, Ordering::Relaxed) == 0 && u != 5;
        assert!(!pool.install(|| pool.claim_units(2, 200, &work)));
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) <= 1));
        let work = |u: usize| {
            assert!(u != 7, "unit 7 fails");
            true
        };
        let caught = catch_unwind(AssertUnwindSafe(|| {
            pool.install(|| pool.claim_units(2, 50, &work))
        }));
        assert!(caught.is_err(), "the panic reaches the caller");
        assert_eq!(pool.counts(), [0, 0, 0]);
        let runs = counters(10);
        let work = |u: usize| {
            runs[u].fetch_add(1, Ordering::Relaxed);
            true
        };
        assert!(pool.install(|| pool.claim_units(2, 10, &work)));
        each_once(&runs, "after the panic");
    }
}
