//! Indices and routing (issue 13): `DType::I32` (R6.1), `topk`, `gather`, `scatter` and
//! `index_select` in every dtype, against the serial reference, eager == replay bit for bit, on
//! two streams ordered by tagged events, and an out-of-range index poisoning only its output
//! (R3.12) in eager and replayed runs.

mod common;

use common::{ro, tensor_bits};
use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::reference::{self, IndexDims};
use tagstream::scope::stream_switch;
use tagstream::{DType, Error, Tensor, compile};

/// Deterministic values in [-4, 4) with repeats (so `topk` meets ties), representable in
/// `dtype`.
fn values(n: usize, seed: u32, dtype: DType) -> Vec<f32> {
    common::grid_values(n, seed, dtype, 64, 8.0, -4.0)
}

fn indices(n: usize, below: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747_796_405).wrapping_add(3);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as usize % below) as f32
        })
        .collect()
}

fn dims(shape: &[usize], dim: usize, idx_len: usize) -> IndexDims {
    IndexDims {
        outer: shape[..dim].iter().product(),
        src_len: shape[dim],
        idx_len,
        inner: shape[dim + 1..].iter().product(),
    }
}

fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// R6.1: I32 holds integral values only, reads back exactly, and every computing op refuses
/// it with `DTypeMismatch` (so does `to_dtype` either way).
#[test]
fn i32_tensors_hold_indices_only() {
    let ix = Tensor::from_vec(vec![0.0, 7.0, -3.0, 2_000_000.0], &[4], DType::I32).unwrap();
    assert_eq!(ix.dtype(), DType::I32);
    assert_eq!(ix.to_vec_f32().unwrap(), vec![0.0, 7.0, -3.0, 2_000_000.0]);
    for bad in [0.5, f32::NAN, f32::INFINITY, 2_147_483_648.0] {
        let err = Tensor::from_vec(vec![1.0, bad], &[2], DType::I32).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidValue { op: "from_vec", reason } if reason.contains("index 1")),
            "{bad}: {err}"
        );
    }
    assert!(matches!(
        Tensor::full(&[2], 1.5, DType::I32),
        Err(Error::InvalidValue { op: "full", .. })
    ));
    assert_eq!(
        Tensor::full(&[2], -4.0, DType::I32)
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        vec![-4.0; 2]
    );
    assert!(matches!(
        Tensor::randn(&[2], DType::I32, 1),
        Err(Error::InvalidValue { op: "randn", .. })
    ));
    assert_eq!("int32".parse::<DType>().unwrap(), DType::I32);
    let refusals: [(&str, tagstream::Result<Tensor>); 9] = [
        ("add", ix.add(&ix)),
        ("add_scalar", ix.add_scalar(1.0)),
        ("exp", ix.exp()),
        ("sum", ix.sum(0, false)),
        ("softmax", ix.softmax()),
        (
            "matmul",
            ix.reshape(&[2, 2])
                .unwrap()
                .matmul(&ix.reshape(&[2, 2]).unwrap()),
        ),
        ("to_dtype", ix.to_dtype(DType::F32)),
        (
            "to_dtype",
            Tensor::zeros(&[1], DType::F32)
                .unwrap()
                .to_dtype(DType::I32),
        ),
        ("topk", ix.topk(1).map(|(v, _)| v)),
    ];
    for (op, result) in refusals {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::DTypeMismatch { op: o, .. } if *o == op),
            "{op}: {err}"
        );
        if op != "to_dtype" {
            assert!(err.to_string().contains("indices only"), "{err}");
        }
    }
}

/// topk: sorted values, ties keep the lower position, exact copies; eager == replay; the
/// indices equal the stable-sort reference.
#[test]
fn topk_matches_stable_sort_reference() {
    for dtype in DType::FLOATS {
        for (shape, k) in [
            (&[5usize, 8][..], 2usize),
            (&[3, 4, 13], 5),
            (&[7], 7),
            (&[2, 3], 0),
        ] {
            let n = *shape.last().unwrap();
            let len: usize = shape.iter().product();
            let v = values(len, k as u32 + 1, dtype);
            let x = Tensor::from_vec(v.clone(), shape, dtype).unwrap();
            let (vals, ix) = x.topk(k).unwrap();
            let (want_v, want_i) = reference::topk(&v, n, k);
            let mut out_shape = shape.to_vec();
            *out_shape.last_mut().unwrap() = k;
            assert_eq!((vals.shape(), ix.shape()), (&out_shape[..], &out_shape[..]));
            assert_eq!(ix.to_vec_f32().unwrap(), want_i, "{dtype} {shape:?} k={k}");
            assert_eq!(tensor_bits(&vals), f32_bits(&want_v), "{dtype} {shape:?}");
            let mut c = compile(
                move |x| {
                    let (v, i) = x[0].topk(k)?;
                    Ok(vec![v, i])
                },
                ro(),
            );
            for _ in 0..2 {
                let r = c.run(std::slice::from_ref(&x)).unwrap();
                assert_eq!(tensor_bits(&r[0]), tensor_bits(&vals));
                assert_eq!(r[1].to_vec_f32().unwrap(), want_i);
            }
        }
    }
    let x = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    assert!(matches!(
        x.topk(4),
        Err(Error::ShapeMismatch { op: "topk", .. })
    ));
}

/// gather, scatter and index_select equal the reference in every dtype (I32 data included),
/// along every dim, eager and replayed; scatter's repeated indices resolve to the last.
#[test]
fn index_ops_match_reference_and_replay() {
    let shape = [3usize, 4, 5];
    let len: usize = shape.iter().product();
    for dtype in DType::ALL {
        let v: Vec<f32> = values(len, 5, DType::F32)
            .into_iter()
            .map(|x| {
                if dtype == DType::I32 {
                    (x * 8.0).round()
                } else {
                    dtype.round_f32(x)
                }
            })
            .collect();
        let x = Tensor::from_vec(v.clone(), &shape, dtype).unwrap();
        for dim in 0..3 {
            // gather / scatter with an index of 2 positions along `dim` (repeats likely).
            let mut ishape = shape.to_vec();
            ishape[dim] = 2;
            let ilen: usize = ishape.iter().product();
            let iv = indices(ilen, shape[dim], dim as u32);
            let ix = Tensor::from_vec(iv.clone(), &ishape, DType::I32).unwrap();
            let d = dims(&shape, dim, 2);
            let g = x.gather(dim, &ix).unwrap();
            let want_g = reference::gather(&v, &iv, d).unwrap();
            assert_eq!(g.shape(), &ishape[..]);
            assert_eq!(
                tensor_bits(&g),
                f32_bits(&want_g),
                "gather {dtype} dim {dim}"
            );
            let src_v: Vec<f32> = v[..ilen].iter().map(|x| 0.0 - x).collect();
            let src = Tensor::from_vec(src_v.clone(), &ishape, dtype).unwrap();
            let s = x.scatter(dim, &ix, &src).unwrap();
            let want_s = reference::scatter(&v, &iv, &src_v, d).unwrap();
            assert_eq!(
                tensor_bits(&s),
                f32_bits(&want_s),
                "scatter {dtype} dim {dim}"
            );
            // index_select of 3 positions.
            let sv = indices(3, shape[dim], 10 + dim as u32);
            let sel = Tensor::from_vec(sv.clone(), &[3], DType::I32).unwrap();
            let is = x.index_select(dim, &sel).unwrap();
            let want_is = reference::index_select(&v, &sv, dims(&shape, dim, 3)).unwrap();
            assert_eq!(
                tensor_bits(&is),
                f32_bits(&want_is),
                "index_select {dtype} dim {dim}"
            );
            let mut c = compile(
                move |t| {
                    Ok(vec![
                        t[0].gather(dim, &t[1])?,
                        t[0].scatter(dim, &t[1], &t[2])?,
                        t[0].index_select(dim, &t[3])?,
                    ])
                },
                ro(),
            );
            for _ in 0..2 {
                let r = c
                    .run(&[x.clone(), ix.clone(), src.clone(), sel.clone()])
                    .unwrap();
                assert_eq!(tensor_bits(&r[0]), tensor_bits(&g));
                assert_eq!(tensor_bits(&r[1]), tensor_bits(&s));
                assert_eq!(tensor_bits(&r[2]), tensor_bits(&is));
            }
        }
    }
    // Last write wins, explicitly.
    let z = Tensor::zeros(&[1, 3], DType::F32).unwrap();
    let ix = Tensor::from_vec(vec![2.0, 2.0, 2.0], &[1, 3], DType::I32).unwrap();
    let src = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 3], DType::F32).unwrap();
    assert_eq!(
        z.scatter(1, &ix, &src).unwrap().to_vec_f32().unwrap(),
        vec![0.0, 0.0, 3.0]
    );
}

/// Shape and dtype refusals name the op and the rule.
#[test]
fn index_ops_refuse_bad_operands() {
    let x = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let fix = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let ix = Tensor::zeros(&[2, 2], DType::I32).unwrap();
    let err = x.gather(1, &fix).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DTypeMismatch {
                op: "gather",
                lhs: DType::F32,
                rhs: DType::I32
            }
        ),
        "{err}"
    );
    let err = x.gather(2, &ix).unwrap_err();
    assert!(err.to_string().contains("dim 2 is out of range"), "{err}");
    let err = x.gather(0, &ix).unwrap_err(); // dim 1 differs: 2 vs 3
    assert!(err.to_string().contains("dimension 1 is 2 vs 3"), "{err}");
    let src = Tensor::zeros(&[2, 3], DType::F32).unwrap();
    let err = x.scatter(1, &ix, &src).unwrap_err();
    assert!(
        err.to_string().contains("src must have the index's shape"),
        "{err}"
    );
    let src16 = Tensor::zeros(&[2, 2], DType::F16).unwrap();
    assert!(matches!(
        x.scatter(1, &ix, &src16),
        Err(Error::DTypeMismatch { op: "scatter", .. })
    ));
    let err = x.index_select(0, &ix).unwrap_err();
    assert!(err.to_string().contains("must be 1-D"), "{err}");
}

/// R3.12: an out-of-range index fails the op's output (eager and replay, every index op),
/// what reads it fails with the same cause, and independent work is unaffected.
#[test]
fn out_of_range_index_poisons_only_its_output() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32).unwrap();
    let bad = Tensor::from_vec(vec![0.0, 2.0, 1.0, -1.0], &[2, 2], DType::I32).unwrap();
    let bad1 = Tensor::from_vec(vec![5.0], &[1], DType::I32).unwrap();
    type Op = Box<dyn Fn(&[Tensor]) -> tagstream::Result<Tensor> + Send>;
    let cases: [(&str, Op); 3] = [
        ("gather", Box::new(|t: &[Tensor]| t[0].gather(1, &t[1]))),
        (
            "scatter",
            Box::new(|t: &[Tensor]| t[0].scatter(1, &t[1], &t[0])),
        ),
        (
            "index_select",
            Box::new(|t: &[Tensor]| t[0].index_select(0, &t[2])),
        ),
    ];
    for (name, f) in cases {
        let args = [x.clone(), bad.clone(), bad1.clone()];
        let y = f(&args).unwrap();
        let err = y.exp().unwrap().to_vec_f32().unwrap_err();
        assert!(
            matches!(&err, Error::ExecutionFailed { op, message, .. }
                if op == name && message.contains("out of range")),
            "{name}: {err}"
        );
        // Independent work on the same stream still runs.
        assert_eq!(x.add(&x).unwrap().to_vec_f32().unwrap()[3], 8.0);
        let _ = tagstream::synchronize();
        let mut c = compile(move |t| Ok(vec![f(t)?.exp()?, t[0].mul(&t[0])?]), ro());
        for _ in 0..2 {
            let r = c.run(&args).unwrap();
            let err = r[0].to_vec_f32().unwrap_err();
            assert!(
                err.to_string().contains("out of range"),
                "{name} replay: {err}"
            );
            assert_eq!(r[1].to_vec_f32().unwrap(), vec![1.0, 4.0, 9.0, 16.0]);
            let _ = tagstream::synchronize();
        }
    }
}

/// A three-operand op reads operands made on two streams: ordered by a tagged event it runs
/// (eager and replay); without the wait its third operand is a data race (R3.5, R4.8).
#[test]
fn scatter_operands_from_two_streams_need_an_event() {
    let ev = create_tagged_event("index-ops-scatter-ev").unwrap();
    let z = Tensor::zeros(&[2, 4], DType::F32).unwrap();
    let ix = Tensor::from_vec(vec![0.0, 3.0, 1.0, 2.0], &[2, 2], DType::I32).unwrap();
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F32).unwrap();
    let ev2 = ev.clone();
    let program = move |t: &[Tensor]| -> tagstream::Result<Vec<Tensor>> {
        let src = {
            let _s = stream_switch("index-ops-side")?;
            let s = t[2].mul_scalar(10.0)?;
            tagged_event_record(&ev2)?;
            s
        };
        tagged_event_wait(&ev2)?;
        Ok(vec![t[0].scatter(1, &t[1], &src)?])
    };
    let want = vec![10.0, 0.0, 0.0, 20.0, 0.0, 30.0, 40.0, 0.0];
    let eager = program(&[z.clone(), ix.clone(), w.clone()]).unwrap();
    assert_eq!(eager[0].to_vec_f32().unwrap(), want);
    let mut c = compile(program, ro());
    for _ in 0..2 {
        let r = c.run(&[z.clone(), ix.clone(), w.clone()]).unwrap();
        assert_eq!(r[0].to_vec_f32().unwrap(), want);
    }
    // Without the wait: the src operand (the third) races.
    let src = {
        let _s = stream_switch("index-ops-side").unwrap();
        w.mul_scalar(10.0).unwrap()
    };
    let err = z.scatter(1, &ix, &src).unwrap_err();
    assert!(matches!(err, Error::DataRace { .. }), "{err}");
    drop(ev);
}

/// The shape ops only move elements, so they take I32 (a routing table reshaped, transposed or
/// joined); softmax_dim computes and refuses it.
#[test]
fn shape_ops_move_i32_indices() {
    let ix = Tensor::from_vec(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3], DType::I32).unwrap();
    let t = ix.transpose(0, 1).unwrap();
    assert_eq!(t.to_vec_f32().unwrap(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let r = ix.reshape(&[3, 2]).unwrap().narrow(0, 1, 2).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![2.0, 3.0, 4.0, 5.0]);
    let c = Tensor::cat(&[ix.clone(), ix.clone()], 1).unwrap();
    assert_eq!(c.shape(), &[2, 6]);
    assert_eq!(c.dtype(), DType::I32);
    let e = ix.unsqueeze(0).unwrap().expand(&[2, 2, 3]).unwrap();
    assert_eq!(e.to_vec_f32().unwrap()[6..], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(matches!(
        ix.softmax_dim(0),
        Err(Error::DTypeMismatch {
            op: "softmax_dim",
            ..
        })
    ));
}
