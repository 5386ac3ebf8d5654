//! Shape, dtype and name errors: semantics §7 rows E3–E8, each with the variant and a message
//! that names the op and the values (R7.2). Also R3.9: a refused call issues nothing.

use tagstream::scope::stream_switch;
use tagstream::{DType, Error, Tensor, stream_activity};

mod common;
use common::assert_mentions;

fn t(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype).unwrap()
}

/// Entries issued so far on the stream tagged `tag` (0 before its first).
fn issued_on(tag: &str) -> u64 {
    stream_activity()
        .iter()
        .find(|s| s.tag == tag)
        .map_or(0, |s| s.issued)
}

#[test]
fn elementwise_shape_mismatch_e3() {
    let (a, b) = (t(&[2, 3], DType::F32), t(&[3, 2], DType::F32));
    for (name, r) in [
        ("add", a.add(&b)),
        ("sub", a.sub(&b)),
        ("mul", a.mul(&b)),
        ("div", a.div(&b)),
    ] {
        let e = r.unwrap_err();
        assert!(
            matches!(&e, Error::ShapeMismatch { op, lhs, rhs, .. } if *op == name && lhs == &[2, 3] && rhs == &[3, 2])
        );
        assert_mentions(&e, &[name, "[2, 3]", "[3, 2]"]);
    }
}

#[test]
fn matmul_shape_mismatch_e4_sc40() {
    let cases: [(&[usize], &[usize], &str); 5] = [
        (&[4, 5], &[6, 7], "inner dimensions differ"),
        (&[4], &[4, 4], "matmul takes"),
        (&[2, 3, 4], &[3, 4, 5], "batch sizes differ"),
        (&[2, 3, 4, 5], &[5, 2], "matmul takes"),
        (&[2, 3, 4], &[2, 5, 6], "inner dimensions differ"),
    ];
    // The refused calls run on a stream of this test's own: the other tests of this binary
    // issue on the main stream at the same time, so its count proves nothing.
    let tag = "errors-e4-matmul";
    for (l, r, why) in cases {
        let (a, b) = (t(l, DType::F16), t(r, DType::F16));
        let before = issued_on(tag);
        let e = {
            let _scope = stream_switch(tag).unwrap();
            a.matmul(&b).unwrap_err()
        };
        assert!(
            matches!(&e, Error::ShapeMismatch { op: "matmul", .. }),
            "{e:?}"
        );
        assert_mentions(&e, &["matmul", &format!("{l:?}"), &format!("{r:?}"), why]);
        assert_eq!(issued_on(tag), before, "R3.9: nothing issued");
    }
}

#[test]
fn reduction_shape_errors_e5() {
    let scalar = t(&[], DType::F32);
    let e = scalar.softmax().unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "softmax", .. }));
    assert_mentions(&e, &["softmax", "rank"]);
    let e = scalar.rms_norm(&t(&[1], DType::F32), 1e-6).unwrap_err();
    assert_mentions(&e, &["rms_norm", "rank"]);
    let e = t(&[2, 8], DType::F32)
        .rms_norm(&t(&[4], DType::F32), 1e-6)
        .unwrap_err();
    assert!(
        matches!(&e, Error::ShapeMismatch { op: "rms_norm", lhs, rhs, .. } if lhs == &[2, 8] && rhs == &[4])
    );
    assert_mentions(&e, &["rms_norm", "[2, 8]", "[4]", "[8]"]);
}

#[test]
fn from_vec_length_and_overflow_e6() {
    let e = Tensor::from_vec(vec![1.0; 5], &[2, 3], DType::F32).unwrap_err();
    assert_eq!(
        e,
        Error::ShapeMismatch {
            op: "from_vec",
            lhs: vec![2, 3],
            rhs: vec![5],
            reason: "the shape needs 6 elements but the data has 5".into()
        }
    );
    assert_mentions(&e, &["from_vec", "[2, 3]", "5"]);
    let e = Tensor::from_vec(vec![], &[usize::MAX, 2], DType::F16).unwrap_err();
    assert_mentions(&e, &["from_vec", "overflow"]);
    let e = Tensor::zeros(&[usize::MAX, 3], DType::F16).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "zeros", .. }));
}

#[test]
fn dtype_mismatch_e7_sc40() {
    let (h, f) = (t(&[2, 2], DType::F16), t(&[2, 2], DType::F32));
    let e = h.add(&f).unwrap_err();
    assert_eq!(
        e,
        Error::DTypeMismatch {
            op: "add",
            lhs: DType::F16,
            rhs: DType::F32
        }
    );
    assert_mentions(&e, &["add", "F16", "F32", "to_dtype"]);
    // Fixed by to_dtype.
    assert!(h.add(&f.to_dtype(DType::F16).unwrap()).is_ok());
    let e = h.matmul(&t(&[2, 2], DType::BF16)).unwrap_err();
    assert_eq!(
        e,
        Error::DTypeMismatch {
            op: "matmul",
            lhs: DType::F16,
            rhs: DType::BF16
        }
    );
    let e = h.rms_norm(&t(&[2], DType::F32), 1e-6).unwrap_err();
    assert_eq!(
        e,
        Error::DTypeMismatch {
            op: "rms_norm",
            lhs: DType::F16,
            rhs: DType::F32
        }
    );
}

#[test]
fn unknown_dtype_e8() {
    let e = "float64".parse::<DType>().unwrap_err();
    assert_eq!(
        e,
        Error::UnknownDType {
            name: "float64".into()
        }
    );
    assert_mentions(&e, &["\"float64\"", "f32", "f16", "bf16"]);
}

#[test]
fn zero_sized_dimensions_give_empty_results_r6_11() {
    let a = t(&[0, 3], DType::F32);
    assert_eq!(a.exp().unwrap().to_vec_f32().unwrap(), Vec::<f32>::new());
    let m = t(&[2, 0], DType::F16)
        .matmul(&t(&[0, 3], DType::F16))
        .unwrap();
    assert_eq!(m.shape(), &[2, 3]);
    assert_eq!(m.to_vec_f32().unwrap(), vec![0.0; 6], "k = 0 gives zeros");
    assert_eq!(
        t(&[3, 0], DType::BF16)
            .softmax()
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        Vec::<f32>::new()
    );
}
