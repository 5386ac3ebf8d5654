//! The seed model run eagerly on two streams equals the single-stream serial reference for every
//! dtype (SC3; elementwise bit-exact R6.6, matmul within R6.9), and overlaps its branches.

use tagstream::models::{SEED_OUTPUTS, check_seed, seed_inputs, seed_model};
use tagstream::ops::create_tagged_event;
use tagstream::{DType, Tensor, stream_activity};

fn run_and_check(size: usize, dtype: DType, event_tag: &str, side: &str) {
    let ev = create_tagged_event(event_tag).unwrap();
    let mut model = seed_model(ev, side);
    let inputs = seed_inputs(size, dtype).unwrap();
    let before = stream_activity();
    let outputs = model(&inputs).unwrap();
    assert_eq!(outputs.len(), 4);
    for o in &outputs {
        assert_eq!((o.shape(), o.dtype()), (&[size, size][..], dtype));
    }
    let host_in: Vec<Vec<f32>> = inputs.iter().map(|t| t.to_vec_f32().unwrap()).collect();
    let host_out: Vec<Vec<f32>> = outputs
        .iter()
        .map(Tensor::to_vec_f32)
        .collect::<Result<_, _>>()
        .unwrap();
    for check in check_seed(&host_in, &host_out, size, dtype) {
        assert!(
            check.failure.is_none(),
            "{dtype} {size}: {} failed: {:?}",
            check.name,
            check.failure
        );
        if check.rule.starts_with("bit-exact") {
            assert_eq!(check.max_abs_err, 0.0);
        }
    }
    // mm and mm1 are the same product computed on two streams: identical bits (R6.4).
    assert_eq!(
        host_out[1], host_out[2],
        "matmul bits must not depend on the stream"
    );
    // SC3: the side stream got exactly wait("66") and matmul; no closure entries in plain eager.
    let after = stream_activity();
    let side_issued = after.iter().find(|s| s.tag == side).map_or(0, |s| s.issued)
        - before
            .iter()
            .find(|s| s.tag == side)
            .map_or(0, |s| s.issued);
    assert_eq!(side_issued, 2, "side stream holds wait + matmul");
    assert_eq!(SEED_OUTPUTS, ["add", "mm", "mm1", "add2"]);
}

#[test]
fn seed_f32_equals_reference() {
    run_and_check(128, DType::F32, "seed-f32", "seed-side-f32");
}

#[test]
fn seed_f16_equals_reference() {
    run_and_check(128, DType::F16, "seed-f16", "seed-side-f16");
}

#[test]
fn seed_bf16_equals_reference() {
    run_and_check(128, DType::BF16, "seed-bf16", "seed-side-bf16");
}

#[test]
fn seed_f16_full_size_equals_reference() {
    run_and_check(1000, DType::F16, "seed-f16-1000", "seed-side-1000");
}

#[test]
fn seed_odd_size_equals_reference() {
    run_and_check(7, DType::BF16, "seed-odd", "seed-side-odd");
}
