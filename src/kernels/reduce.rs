//! Row reductions over the last dimension: softmax and rms_norm.
//!
//! Each row is widened into an f32 scratch row (one allocation per call), reduced with
//! [`LANES`] independent partial sums that are combined in a fixed order (so the loop
//! vectorizes and the summation order depends on `n` only, R6.4), and rounded once.

use super::scalar;
use crate::dtype::Element;

/// Partial accumulators per reduction.
const LANES: usize = 8;

/// Sum of `f(x)` over `xs` in a fixed order: lane `j` adds elements `j, j+8, …`, then the lanes
/// and the tail are added left to right.
#[inline]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += f(c[j]);
        }
    }
    let mut s = 0f32;
    for a in acc {
        s += a;
    }
    for &x in tail {
        s += f(x);
    }
    s
}

fn row_max(xs: &[f32]) -> f32 {
    // NaN propagates: softmax of a row with a NaN is all NaN, as in the reference.
    xs.iter().fold(
        f32::NEG_INFINITY,
        |m, &x| if x > m || x.is_nan() { x } else { m },
    )
}

/// Softmax over rows of length `n`: `y_i = exp(x_i − m) / Σ_j exp(x_j − m)`, `m = max_j x_j`.
pub(crate) fn softmax<T: Element>(a: &[T], out: &mut [T], n: usize) {
    assert_eq!(
        a.len(),
        out.len(),
        "softmax: operand length differs from output"
    );
    if n == 0 || a.is_empty() {
        return;
    }
    let mut row = vec![0f32; n];
    for (a, o) in a.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        T::load_f32(a, &mut row);
        let m = row_max(&row);
        row.iter_mut().for_each(|x| *x = scalar::exp(*x - m));
        let s = lane_sum(&row, |x| x);
        row.iter_mut().for_each(|x| *x /= s);
        T::store_f32(&row, o);
    }
}

/// RMS norm over rows of length `n`: `y_i = x_i / sqrt(Σ_j x_j² / n + eps) · w_i`.
pub(crate) fn rms_norm<T: Element>(a: &[T], w: &[T], eps: f32, out: &mut [T], n: usize) {
    assert_eq!(
        a.len(),
        out.len(),
        "rms_norm: operand length differs from output"
    );
    assert_eq!(
        w.len(),
        n,
        "rms_norm: weight length differs from the last dimension"
    );
    if n == 0 || a.is_empty() {
        return;
    }
    let mut weight = vec![0f32; n];
    T::load_f32(w, &mut weight);
    let mut row = vec![0f32; n];
    for (a, o) in a.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        T::load_f32(a, &mut row);
        let d = (lane_sum(&row, |x| x * x) / n as f32 + eps).sqrt();
        row.iter_mut()
            .zip(&weight)
            .for_each(|(x, w)| *x = *x / d * w);
        T::store_f32(&row, o);
    }
}
