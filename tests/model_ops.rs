//! The first real-model ops (issue 13): broadcasting `add sub mul div` (R6.11), `add_scalar` /
//! `mul_scalar` (R6.2, R6.3), `sum` / `mean` / `max` over one dim (R6.4), and the shape ops
//! `reshape unsqueeze transpose narrow expand cat` and `softmax_dim` (R6.11, R6.4, R6.8), in every
//! dtype, against the serial reference, and eager == replay bit for bit.

mod common;

use common::{issued, ro, tensor_bits};
use tagstream::reference::{self, BinaryOp, ReduceDims, ReduceOp};
use tagstream::{DType, Error, Tensor, compile};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Deterministic values in [-4, 4), already representable in `dtype`.
fn values(n: usize, seed: u32, dtype: DType) -> Vec<f32> {
    common::grid_values(n, seed, dtype, 8192, 1024.0, -4.0)
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

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `f` eagerly and as a compiled replay (twice) on `inputs`; returns the eager outputs
/// after checking that every replay gives the same shapes and bits.
fn eager_and_replay(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> tagstream::Result<Vec<Tensor>> + Send + 'static + Clone,
) -> Vec<Tensor> {
    let eager = f(inputs).unwrap();
    let mut c = compile(f, ro());
    for _ in 0..2 {
        let r = c.run(inputs).unwrap();
        assert_eq!(r.len(), eager.len());
        for (r, e) in r.iter().zip(&eager) {
            assert_eq!(r.shape(), e.shape(), "replay shape");
            assert_eq!(tensor_bits(r), tensor_bits(e), "replay bits");
        }
    }
    eager
}

/// R6.11: transpose, narrow and expand (copies and views alike) give the reference's elements
/// exactly, in every dtype, eager and replayed.
#[test]
fn layout_ops_match_reference_and_replay() {
    let shape = [3usize, 4, 5];
    for dtype in DTYPES {
        let v = values(60, 21, dtype);
        let x = Tensor::from_vec(v.clone(), &shape, dtype).unwrap();
        type Case = (
            &'static str,
            fn(&Tensor) -> tagstream::Result<Tensor>,
            Vec<usize>,
            fn(&[f32]) -> Vec<f32>,
        );
        let cases: Vec<Case> = vec![
            (
                "t02",
                |t| t.transpose(0, 2),
                vec![5, 4, 3],
                |v| reference::transpose(v, &[3, 4, 5], 0, 2),
            ),
            (
                "t21",
                |t| t.transpose(2, 1),
                vec![3, 5, 4],
                |v| reference::transpose(v, &[3, 4, 5], 2, 1),
            ),
            ("t11", |t| t.transpose(1, 1), vec![3, 4, 5], |v| v.to_vec()),
            (
                "n1",
                |t| t.narrow(1, 1, 2),
                vec![3, 2, 5],
                |v| reference::narrow(v, &[3, 4, 5], 1, 1, 2),
            ),
            (
                "n2",
                |t| t.narrow(2, 4, 1),
                vec![3, 4, 1],
                |v| reference::narrow(v, &[3, 4, 5], 2, 4, 1),
            ),
            (
                "n0-all",
                |t| t.narrow(0, 0, 3),
                vec![3, 4, 5],
                |v| v.to_vec(),
            ),
            ("n0-empty", |t| t.narrow(0, 3, 0), vec![0, 4, 5], |_| vec![]),
            (
                "expand",
                |t| t.narrow(1, 2, 1)?.expand(&[2, 3, 4, 5]),
                vec![2, 3, 4, 5],
                |v| {
                    reference::expand(
                        &reference::narrow(v, &[3, 4, 5], 1, 2, 1),
                        &[3, 1, 5],
                        &[2, 3, 4, 5],
                    )
                },
            ),
            (
                "unsqueeze-expand",
                |t| t.reshape(&[60])?.unsqueeze(0)?.expand(&[3, 60]),
                vec![3, 60],
                |v| reference::expand(v, &[1, 60], &[3, 60]),
            ),
            (
                "expand-view",
                |t| t.expand(&[1, 3, 4, 5]),
                vec![1, 3, 4, 5],
                |v| v.to_vec(),
            ),
            (
                "transpose-of-size-1",
                |t| t.unsqueeze(1)?.transpose(0, 1),
                vec![1, 3, 4, 5],
                |v| v.to_vec(),
            ),
        ];
        for (name, f, want_shape, reference) in cases {
            let out = eager_and_replay(std::slice::from_ref(&x), move |x| Ok(vec![f(&x[0])?]));
            assert_eq!(out[0].shape(), &want_shape[..], "{name} {dtype}");
            assert_eq!(
                tensor_bits(&out[0]),
                bits_of(&reference(&v)),
                "{name} {dtype}"
            );
        }
    }
}

/// R6.11: cat of 1..=5 parts along each dim equals the reference, eager and replayed; n parts
/// cost n − 1 entries on the current stream.
#[test]
fn cat_matches_reference_and_replay() {
    for dtype in DTYPES {
        for dim in 0..3 {
            for n in 1..=5usize {
                let shapes: Vec<Vec<usize>> = (0..n)
                    .map(|i| {
                        let mut s = vec![2, 3, 4];
                        s[dim] = i % 3 + 1;
                        s
                    })
                    .collect();
                let vals: Vec<Vec<f32>> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| values(s.iter().product(), 40 + i as u32, dtype))
                    .collect();
                let parts: Vec<Tensor> = vals
                    .iter()
                    .zip(&shapes)
                    .map(|(v, s)| Tensor::from_vec(v.clone(), s, dtype).unwrap())
                    .collect();
                let refs: Vec<(&[f32], &[usize])> = vals
                    .iter()
                    .zip(&shapes)
                    .map(|(v, s)| (&v[..], &s[..]))
                    .collect();
                let want = reference::cat(&refs, dim);
                // On a stream of its own: other tests issue on the main stream meanwhile.
                let tag = "model-ops-cat-count";
                let before = issued(tag).unwrap_or(0);
                let y = {
                    let _s = tagstream::scope::stream_switch(tag).unwrap();
                    Tensor::cat(&parts, dim).unwrap()
                };
                assert_eq!(issued(tag).unwrap_or(0) - before, n as u64 - 1);
                let mut s = shapes[0].clone();
                s[dim] = shapes.iter().map(|s| s[dim]).sum();
                assert_eq!(y.shape(), &s[..]);
                assert_eq!(
                    tensor_bits(&y),
                    bits_of(&want),
                    "cat of {n} dim {dim} {dtype}"
                );
                let out = eager_and_replay(&parts, move |x| Ok(vec![Tensor::cat(x, dim)?]));
                assert_eq!(tensor_bits(&out[0]), bits_of(&want));
            }
        }
    }
}

/// R6.4, R6.8: softmax_dim over the last dim is softmax's bits; over another dim it is
/// softmax of the transposed tensor bit for bit and within R6.8 of the serial reference.
#[test]
fn softmax_dim_matches_softmax_and_reference() {
    let shape = [3usize, 37, 6];
    for dtype in DTYPES {
        let v = values(shape.iter().product(), 77, dtype);
        let x = Tensor::from_vec(v.clone(), &shape, dtype).unwrap();
        assert_eq!(
            tensor_bits(&x.softmax_dim(2).unwrap()),
            tensor_bits(&x.softmax().unwrap())
        );
        for dim in 0..3 {
            let out = eager_and_replay(std::slice::from_ref(&x), move |x| {
                Ok(vec![
                    x[0].softmax_dim(dim)?,
                    x[0].transpose(dim, 2)?.softmax()?.transpose(dim, 2)?,
                ])
            });
            assert_eq!(out[0].shape(), &shape[..]);
            assert_eq!(
                tensor_bits(&out[0]),
                tensor_bits(&out[1]),
                "dim {dim} {dtype}"
            );
            let want = reference::softmax_dim(&v, &shape, dim, dtype);
            reference::check_reduction(&out[0].to_vec_f32().unwrap(), &want, shape[dim], dtype)
                .unwrap_or_else(|e| panic!("softmax_dim({dim}) {dtype}: {e}"));
        }
    }
    let e = Tensor::zeros(&[0, 3], DType::F32).unwrap();
    assert_eq!(e.softmax_dim(0).unwrap().shape(), &[0, 3]);
}

/// Views in a capture: a reshaped value or input returned from the closure, a reshaped value
/// read on another stream after an event, a reshaped constant, and to_device of a view all
/// keep their shapes and elements (replay == eager).
#[test]
fn views_through_capture_and_replay() {
    use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
    use tagstream::scope::stream_switch;
    let w = Tensor::from_vec(values(6, 5, DType::F32), &[6], DType::F32).unwrap();
    let ev = create_tagged_event("model-ops-view-ev").unwrap();
    let f = move |x: &[Tensor]| -> tagstream::Result<Vec<Tensor>> {
        let a = x[0].exp()?; // [2, 3]
        let flat = a.reshape(&[6])?;
        tagged_event_record(&ev)?;
        let side = {
            let _s = stream_switch("model-ops-view-side")?;
            tagged_event_wait(&ev)?;
            flat.add(&w.reshape(&[6])?)?.unsqueeze(1)?
        };
        Ok(vec![
            flat,
            a.clone(),
            x[0].reshape(&[3, 2])?,
            x[0].clone(),
            side,
            w.reshape(&[2, 3])?,
        ])
    };
    let x = Tensor::from_vec(values(6, 9, DType::F32), &[2, 3], DType::F32).unwrap();
    let eager = f(std::slice::from_ref(&x)).unwrap();
    let mut c = compile(f, ro());
    for _ in 0..3 {
        let r = c.run(std::slice::from_ref(&x)).unwrap();
        let shapes: Vec<&[usize]> = r.iter().map(Tensor::shape).collect();
        assert_eq!(
            shapes,
            [&[6][..], &[2, 3], &[3, 2], &[2, 3], &[6, 1], &[2, 3]]
        );
        for (r, e) in r.iter().zip(&eager) {
            assert_eq!(r.shape(), e.shape());
            assert_eq!(tensor_bits(r), tensor_bits(e));
        }
        let moved = r[0].to_device(tagstream::Device::Cpu).unwrap();
        assert_eq!(moved.shape(), &[6]);
        // A view of an output feeds later eager work like the output itself.
        let again = r[4].reshape(&[2, 3]).unwrap().add(&r[1]).unwrap();
        assert_eq!(again.shape(), &[2, 3]);
    }
    assert_eq!(c.stats().replays, 2);
}

/// R6.11, R7.1: bad dims and sizes are `ShapeMismatch` (never a panic), with the op's name;
/// cat checks every part before issuing anything (R3.9).
#[test]
fn shape_op_errors() {
    let x = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let h = Tensor::zeros(&[2, 3], DType::F16).unwrap();
    let shape_err = |r: tagstream::Result<Tensor>, op: &str| match r {
        Err(Error::ShapeMismatch { op: o, reason, .. }) => {
            assert_eq!(o, op, "{reason}");
            reason
        }
        other => panic!("{op}: expected ShapeMismatch, got {other:?}"),
    };
    shape_err(x.reshape(&[4]), "reshape");
    let r = shape_err(x.reshape(&[usize::MAX, 2]), "reshape");
    assert!(r.contains("isize::MAX"), "{r}");
    shape_err(x.unsqueeze(3), "unsqueeze");
    shape_err(x.transpose(0, 2), "transpose");
    shape_err(x.narrow(2, 0, 1), "narrow");
    shape_err(x.narrow(1, 2, 2), "narrow");
    shape_err(x.narrow(1, usize::MAX, 2), "narrow");
    shape_err(x.expand(&[3]), "expand");
    shape_err(x.expand(&[2, 4]), "expand");
    shape_err(
        x.unsqueeze(0).unwrap().expand(&[usize::MAX, 2, 3]),
        "expand",
    );
    shape_err(x.softmax_dim(2), "softmax_dim");
    shape_err(Tensor::cat(&[], 0), "cat");
    shape_err(Tensor::cat(&[x.clone(), x.clone()], 2), "cat");
    shape_err(
        Tensor::cat(&[x.clone(), Tensor::zeros(&[3, 3], DType::F32).unwrap()], 1),
        "cat",
    );
    shape_err(
        Tensor::cat(
            &[x.clone(), Tensor::zeros(&[2, 3, 1], DType::F32).unwrap()],
            0,
        ),
        "cat",
    );
    assert!(matches!(
        Tensor::cat(&[x.clone(), h], 0),
        Err(Error::DTypeMismatch { op: "cat", .. })
    ));
    // A racing third part refuses the whole cat before its first step is issued.
    let racy = {
        let _s = tagstream::scope::stream_switch("model-ops-cat-race").unwrap();
        x.exp().unwrap()
    };
    let tag = "model-ops-cat-refused";
    let guard = tagstream::scope::stream_switch(tag).unwrap();
    let before = issued(tag).unwrap_or(0);
    let err = Tensor::cat(&[x.clone(), x.clone(), racy], 0).unwrap_err();
    assert!(matches!(err, Error::DataRace { .. }), "{err}");
    assert_eq!(issued(tag).unwrap_or(0), before);
    drop(guard);
    tagstream::synchronize().unwrap();
}

/// R4.1: a graph value kept after its capture cannot be reshaped (a view is a use).
#[test]
fn views_of_foreign_graph_values_are_refused() {
    let leak = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = leak.clone();
    let mut c = compile(
        move |x| {
            *keep.lock().unwrap() = Some(x[0].clone());
            Ok(vec![x[0].exp()?])
        },
        ro(),
    );
    let x = Tensor::zeros(&[4], DType::F32).unwrap();
    c.run(std::slice::from_ref(&x)).unwrap();
    let kept = leak.lock().unwrap().take().unwrap();
    for r in [
        kept.reshape(&[2, 2]),
        kept.unsqueeze(0),
        kept.transpose(0, 0),
    ] {
        assert!(matches!(r, Err(Error::ForeignGraphValue { .. })), "{r:?}");
    }
}
