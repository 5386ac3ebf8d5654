//! The first real-model ops (issue 13): broadcasting `add sub mul div` (R6.11), `add_scalar` /
//! `mul_scalar` (R6.2, R6.3) and `sum` / `mean` / `max` over one dim (R6.4), in every dtype,
//! against the serial reference, and eager == replay bit for bit.

mod common;

use common::{ro, tensor_bits};
use tagstream::reference::{self, BinaryOp, ReduceDims, ReduceOp};
use tagstream::{DType, Error, Tensor, compile};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Deterministic values in [-4, 4), already representable in `dtype`.
fn values(n: usize, seed: u32, dtype: DType) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            dtype.round_f32((s % 8192) as f32 / 1024.0 - 4.0)
        })
        .collect()
}

/// `x` of shape `from` expanded to `to` (right-aligned, 1s repeated): the explicit reference.
fn expand(x: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    let n: usize = to.iter().product();
    let pad = to.len() - from.len();
    (0..n)
        .map(|mut i| {
            let (mut off, mut stride) = (0, 1);
            for d in (0..to.len()).rev() {
                let k = i % to[d];
                i /= to[d];
                if d >= pad {
                    let f = from[d - pad];
                    if f != 1 {
                        off += k * stride;
                    }
                    stride *= f;
                }
            }
            x[off]
        })
        .collect()
}

const OPS: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];

fn apply(op: BinaryOp, a: &Tensor, b: &Tensor) -> tagstream::Result<Tensor> {
    match op {
        BinaryOp::Add => a.add(b),
        BinaryOp::Sub => a.sub(b),
        BinaryOp::Mul => a.mul(b),
        BinaryOp::Div => a.div(b),
    }
}

/// R6.11: broadcast results equal the reference on expanded operands bit for bit, eager and
/// replayed.
#[test]
fn broadcast_matches_expanded_reference_and_replay() {
    let cases: [(&[usize], &[usize], &[usize]); 7] = [
        (&[2, 3], &[3], &[2, 3]),
        (&[2, 1], &[1, 3], &[2, 3]),
        (&[4, 1, 5], &[3, 1], &[4, 3, 5]),
        (&[], &[2, 2], &[2, 2]),
        (&[1], &[3, 1, 2], &[3, 1, 2]),
        (&[0, 3], &[1, 3], &[0, 3]),
        (&[3, 1300], &[1300], &[3, 1300]), // crosses a kernel chunk
    ];
    for dtype in DTYPES {
        for (i, (sa, sb, so)) in cases.iter().enumerate() {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let (va, vb) = (
                values(na, i as u32, dtype),
                values(nb, 100 + i as u32, dtype),
            );
            let a = Tensor::from_vec(va.clone(), sa, dtype).unwrap();
            let b = Tensor::from_vec(vb.clone(), sb, dtype).unwrap();
            let (ea, eb) = (expand(&va, sa, so), expand(&vb, sb, so));
            for op in OPS {
                let y = apply(op, &a, &b).unwrap();
                assert_eq!(y.shape(), *so, "{op:?} {sa:?} {sb:?}");
                let want: Vec<u32> = reference::binary(op, &ea, &eb, dtype)
                    .into_iter()
                    .map(f32::to_bits)
                    .collect();
                assert_eq!(tensor_bits(&y), want, "{op:?} {sa:?} {sb:?} {dtype}");
                // Swapped operands broadcast the same way.
                let z = apply(op, &b, &a).unwrap();
                let want: Vec<u32> = reference::binary(op, &eb, &ea, dtype)
                    .into_iter()
                    .map(f32::to_bits)
                    .collect();
                assert_eq!(tensor_bits(&z), want, "{op:?} {sb:?} {sa:?} {dtype}");
                let mut c = compile(move |x| Ok(vec![apply(op, &x[0], &x[1])?]), ro());
                for _ in 0..2 {
                    let r = c.run(&[a.clone(), b.clone()]).unwrap();
                    assert_eq!(tensor_bits(&r[0]), tensor_bits(&y), "replay {op:?} {dtype}");
                }
            }
        }
    }
}

/// R6.11: shapes that do not broadcast are refused naming both shapes.
#[test]
fn non_broadcastable_shapes_are_refused() {
    let a = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let b = Tensor::zeros(&[4, 1, 2], DType::F32).unwrap();
    let err = a.mul(&b).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { op: "mul", lhs, rhs, .. }
            if lhs == &[2, 3] && rhs == &[4, 1, 2]),
        "{err}"
    );
    assert!(err.to_string().contains("[2, 3] and [4, 1, 2]"), "{err}");
}

/// R6.2/R6.3: the scalar ops widen, compute in f32 with the f32 scalar, and round once.
#[test]
fn scalar_ops_round_once() {
    for dtype in DTYPES {
        let v = values(2000, 7, dtype);
        let a = Tensor::from_vec(v.clone(), &[2000], dtype).unwrap();
        for (op, s) in [(BinaryOp::Add, 0.1f32), (BinaryOp::Mul, 1.0 / 3.0)] {
            let y = match op {
                BinaryOp::Add => a.add_scalar(s).unwrap(),
                _ => a.mul_scalar(s).unwrap(),
            };
            let want: Vec<u32> = reference::binary(op, &v, &vec![s; v.len()], dtype)
                .into_iter()
                .map(f32::to_bits)
                .collect();
            assert_eq!(tensor_bits(&y), want, "{op:?} {dtype}");
            let mut c = compile(
                move |x| {
                    Ok(vec![match op {
                        BinaryOp::Add => x[0].add_scalar(s)?,
                        _ => x[0].mul_scalar(s)?,
                    }])
                },
                ro(),
            );
            for _ in 0..2 {
                assert_eq!(
                    tensor_bits(&c.run(std::slice::from_ref(&a)).unwrap()[0]),
                    want
                );
            }
        }
    }
}

fn reduce(t: &Tensor, op: ReduceOp, dim: usize, keepdim: bool) -> tagstream::Result<Tensor> {
    match op {
        ReduceOp::Sum => t.sum(dim, keepdim),
        ReduceOp::Mean => t.mean(dim, keepdim),
        ReduceOp::Max => t.max(dim, keepdim),
    }
}

/// R6.4: reductions equal the serial left-to-right reference bit for bit, are within f64
/// rounding of the exact value, keep or drop the dim, and replay with the same bits.
#[test]
fn reductions_match_reference_and_replay() {
    let shape = [3usize, 5, 70];
    let n: usize = shape.iter().product();
    for dtype in DTYPES {
        let v = values(n, 11, dtype);
        let a = Tensor::from_vec(v.clone(), &shape, dtype).unwrap();
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
            for dim in 0..3 {
                let dims = ReduceDims {
                    op,
                    outer: shape[..dim].iter().product(),
                    len: shape[dim],
                    inner: shape[dim + 1..].iter().product(),
                };
                let want = reference::reduce(&v, dims, dtype);
                for keepdim in [false, true] {
                    let y = reduce(&a, op, dim, keepdim).unwrap();
                    let mut s = shape.to_vec();
                    if keepdim {
                        s[dim] = 1;
                    } else {
                        s.remove(dim);
                    }
                    assert_eq!(y.shape(), &s[..]);
                    let got = y.to_vec_f32().unwrap();
                    let bits: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(tensor_bits(&y), bits, "{op:?} dim {dim} {dtype}");
                    // Against an f64 computation: within the output rounding plus f32 summation.
                    for (o, g) in got.iter().enumerate() {
                        let (outer, inner) = (o / dims.inner, o % dims.inner);
                        let xs = (0..dims.len)
                            .map(|j| v[(outer * dims.len + j) * dims.inner + inner] as f64);
                        let exact = match op {
                            ReduceOp::Sum => xs.sum::<f64>(),
                            ReduceOp::Mean => xs.sum::<f64>() / dims.len as f64,
                            ReduceOp::Max => xs.fold(f64::NEG_INFINITY, f64::max),
                        };
                        let tol = 1e-5 * 4.0 * dims.len as f64 + 2.0 * exact.abs() * 2f64.powi(-8);
                        assert!(
                            (*g as f64 - exact).abs() <= tol,
                            "{op:?} {dtype}: {g} vs {exact}"
                        );
                    }
                    let mut c = compile(move |x| Ok(vec![reduce(&x[0], op, dim, keepdim)?]), ro());
                    for _ in 0..2 {
                        let r = c.run(std::slice::from_ref(&a)).unwrap();
                        assert_eq!(tensor_bits(&r[0]), bits, "replay {op:?} dim {dim}");
                    }
                }
            }
        }
    }
}

/// R6.4/R6.11: dim out of range and max over an empty dim are refused; NaN propagates through
/// max; empty sums are 0.
#[test]
fn reduction_edges() {
    let a = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
        let err = reduce(&a, op, 2, false).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    }
    let e = Tensor::zeros(&[2, 0], DType::F32).unwrap();
    assert!(matches!(
        e.max(1, false),
        Err(Error::ShapeMismatch { op: "max", .. })
    ));
    assert_eq!(
        e.sum(1, false).unwrap().to_vec_f32().unwrap(),
        vec![0.0, 0.0]
    );
    assert!(e.mean(1, false).unwrap().to_vec_f32().unwrap()[0].is_nan());
    let x = Tensor::from_vec(vec![1.0, f32::NAN, 3.0, 2.0], &[2, 2], DType::F32).unwrap();
    let m = x.max(1, false).unwrap().to_vec_f32().unwrap();
    assert!(m[0].is_nan());
    assert_eq!(m[1], 3.0);
}
