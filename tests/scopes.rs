//! Stream scopes: LIFO nesting, `"default"`, out-of-order drops (semantics §2, R2.1–R2.10, E13).

use tagstream::Error;
use tagstream::scope::{current_stream, stream_switch};
use tagstream::{DType, Tensor, stream_activity, synchronize};

/// exp(1) as the serial reference computes it (R6.5).
fn exp_of_one() -> Vec<f32> {
    tagstream::reference::unary(tagstream::reference::UnaryOp::Exp, &[1.0; 4], DType::F32)
}

fn issued(tag: &str) -> u64 {
    stream_activity()
        .iter()
        .find(|s| s.tag == tag)
        .map_or(0, |s| s.issued)
}

#[test]
fn ops_go_to_the_innermost_scope_and_lifo_restores_r2_5_r2_6() {
    let x = Tensor::full(&[4], 1.0, DType::F32).unwrap();
    let main_before = issued("default");
    {
        let _a = stream_switch("sc-a").unwrap();
        x.exp().unwrap();
        assert_eq!(issued("sc-a"), 1);
        {
            let _b = stream_switch("sc-b").unwrap();
            assert_eq!(current_stream(), "sc-b");
            x.exp().unwrap();
            assert_eq!(issued("sc-b"), 1);
            {
                let _m = stream_switch("default").unwrap(); // R2.4
                x.exp().unwrap();
            }
            assert_eq!(current_stream(), "sc-b");
        }
        assert_eq!(current_stream(), "sc-a");
    }
    assert_eq!(current_stream(), "default");
    assert_eq!(issued("default"), main_before + 1);
    assert_eq!(issued("sc-a"), 1);
}

#[test]
fn same_tag_same_stream_r2_2() {
    let x = Tensor::full(&[4], 1.0, DType::F32).unwrap();
    let p = {
        let _s = stream_switch("sc-same").unwrap();
        x.relu().unwrap()
    };
    let _ = x.exp().unwrap(); // something on main in between
    // Entering "sc-same" again reaches the same stream, so stream order covers `p` (SC7).
    let q = {
        let _s = stream_switch("sc-same").unwrap();
        p.exp().unwrap()
    };
    assert_eq!(q.to_vec_f32().unwrap(), exp_of_one());
    // And from another host thread, too.
    let p2 = p.clone();
    let r = std::thread::spawn(move || {
        let _s = stream_switch("sc-same").unwrap();
        p2.add(&p2).unwrap().to_vec_f32().unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(r, vec![2.0; 4]);
}

#[test]
fn out_of_order_drop_sc30_r2_8_e13() {
    let x = Tensor::full(&[4], 1.0, DType::F32).unwrap();
    let g1 = stream_switch("1").unwrap();
    let g2 = stream_switch("2").unwrap();
    drop(g1);
    assert_eq!(current_stream(), "default");
    let err = x.exp().unwrap_err();
    assert_eq!(
        err,
        Error::UnbalancedStreamSwitch {
            dropped: Some("1".into()),
            innermost: Some("2".into()),
            open: vec![]
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"1\"") && msg.contains("\"2\""),
        "message names both tags: {msg}"
    );
    drop(g2); // inert
    assert_eq!(current_stream(), "default");
    // The error was reported once; later ops run on main.
    let before = issued("default");
    let y = x.exp().unwrap();
    assert_eq!(issued("default"), before + 1);
    assert_eq!(y.to_vec_f32().unwrap(), exp_of_one());
}

#[test]
fn the_pending_error_is_returned_by_any_next_call_r2_8() {
    let g1 = stream_switch("sc-p1").unwrap();
    let _g2 = stream_switch("sc-p2").unwrap();
    drop(g1);
    assert!(matches!(
        synchronize().unwrap_err(),
        Error::UnbalancedStreamSwitch { .. }
    ));
    synchronize().unwrap();
    let g1 = stream_switch("sc-p1").unwrap();
    let _g2 = stream_switch("sc-p2").unwrap();
    drop(g1);
    assert!(matches!(
        Tensor::zeros(&[1], DType::F32).unwrap_err(),
        Error::UnbalancedStreamSwitch { .. }
    ));
}

#[test]
fn guard_drop_during_unwinding_restores_the_scope() {
    let r = std::panic::catch_unwind(|| {
        let _g = stream_switch("sc-unwind").unwrap();
        panic!("user code panics inside a scope");
    });
    assert!(r.is_err());
    assert_eq!(current_stream(), "default");
}

#[test]
fn a_pending_scope_error_comes_before_validation_errors_r2_8() {
    let (a, b) = (
        Tensor::zeros(&[2], DType::F32).unwrap(),
        Tensor::zeros(&[3], DType::F16).unwrap(),
    );
    let g1 = stream_switch("sc-v1").unwrap();
    let _g2 = stream_switch("sc-v2").unwrap();
    drop(g1);
    // The add is invalid (shape and dtype), but the pending error is reported first...
    assert!(matches!(
        a.add(&b).unwrap_err(),
        Error::UnbalancedStreamSwitch { .. }
    ));
    // ...and then the add's own error.
    assert!(matches!(
        a.add(&b).unwrap_err(),
        Error::ShapeMismatch { op: "add", .. }
    ));
}
