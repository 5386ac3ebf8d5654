//! Issue 10 item 2: a capture whose values need more bytes than the address space holds is
//! refused with `OutOfMemory` (it cannot be allocated, R3.12's last sentence), never a panic or
//! a wrapped byte sum. Inputs `[2^30, 0]` and `[0, 2^30]` F32 are empty, but their product is
//! `[2^30, 2^30]` F32: 2^62 bytes per intermediate, so four of them overflow `usize`.

use tagstream::{DType, Error, Result, Tensor, compile};

mod common;
use common::{counters, ro};

fn inputs() -> Vec<Tensor> {
    let big = 1usize << 30;
    vec![
        Tensor::zeros(&[big, 0], DType::F32).unwrap(),
        Tensor::zeros(&[0, big], DType::F32).unwrap(),
    ]
}

/// `v = x0.matmul(x1)` then `relus` ReLUs; returns the last value, or every value.
fn chain(relus: usize, return_all: bool) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> {
    move |x: &[Tensor]| {
        let mut v = vec![x[0].matmul(&x[1])?];
        for _ in 0..relus {
            v.push(v.last().unwrap().relu()?);
        }
        Ok(if return_all { v } else { v.split_off(relus) })
    }
}

fn assert_out_of_memory(err: &Error) {
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
}

/// The reproducer: 1–3 intermediates were `OutOfMemory` (the arena), 4 or more panicked in the
/// planner ("total value size overflows usize").
#[test]
fn huge_intermediates_are_out_of_memory_not_a_panic() {
    for relus in [1, 2, 3, 4, 5, 8] {
        let mut c = compile(chain(relus, false), ro());
        let err = c.run(&inputs()).unwrap_err();
        assert_out_of_memory(&err);
        // R4.12: nothing cached, no counter moved; a second call is refused the same way.
        assert_eq!((counters(&c), c.cached_graphs()), ((0, 0, 0, false), 0));
        assert_eq!(c.run(&inputs()).unwrap_err(), err);
    }
}

/// The sibling: returned outputs are summed for `memory_stats().output_bytes`; four outputs
/// of 2^62 bytes overflowed that sum (a panic in debug builds, 0 in release).
#[test]
fn huge_outputs_are_out_of_memory_not_a_wrapped_sum() {
    for relus in [3, 6] {
        let mut c = compile(chain(relus, true), ro());
        assert_out_of_memory(&c.run(&inputs()).unwrap_err());
        assert_eq!(c.cached_graphs(), 0);
    }
}

/// The refusal names the capture and says why, in words.
#[test]
fn the_refusal_says_the_values_do_not_fit() {
    let mut c = compile(chain(4, false), ro());
    let msg = c.run(&inputs()).unwrap_err().to_string();
    assert!(
        msg.starts_with(
            "capture (its values need more than usize::MAX bytes in all): out of memory"
        ),
        "{msg}"
    );
}
