//! Row reductions: softmax (over any dimension) and rms_norm over the last dimension, and
//! `sum`/`mean`/`max` over one dimension.
//!
//! Each row is widened into an f32 scratch row (one allocation per call), reduced with
//! [`LANES`] independent partial sums that are combined in a fixed order (so the loop
//! vectorizes and the summation order depends on `n` only, R6.4), and rounded once.

use super::kind::{ReduceDims, ReduceOp};
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
        softmax_row(&mut row);
        T::store_f32(&row, o);
    }
}

/// The one softmax formula and order of every row, contiguous or strided (R6.4).
#[inline]
fn softmax_row(row: &mut [f32]) {
    let m = row_max(row);
    row.iter_mut().for_each(|x| *x = scalar::exp(*x - m));
    let s = lane_sum(row, |x| x);
    row.iter_mut().for_each(|x| *x /= s);
}

/// Softmax of `a`, seen as `[outer, len, inner]`, over its middle dimension: each of the
/// `outer · inner` rows (stride `inner`) is gathered, run through exactly the row formula of
/// [`softmax`] and scattered back, so the bits equal `softmax` of the transposed tensor.
pub(crate) fn softmax_strided<T: Element>(
    a: &[T],
    out: &mut [T],
    outer: usize,
    len: usize,
    inner: usize,
) {
    assert_eq!(a.len(), outer * len * inner, "softmax: operand length");
    assert_eq!(
        a.len(),
        out.len(),
        "softmax: operand length differs from output"
    );
    if a.is_empty() {
        return;
    }
    let mut gathered = vec![T::default(); len];
    let mut row = vec![0f32; len];
    for (a, o) in a
        .chunks_exact(len * inner)
        .zip(out.chunks_exact_mut(len * inner))
    {
        for i in 0..inner {
            gathered
                .iter_mut()
                .zip(a[i..].iter().step_by(inner))
                .for_each(|(g, x)| *g = *x);
            T::load_f32(&gathered, &mut row);
            softmax_row(&mut row);
            T::store_f32(&row, &mut gathered);
            o[i..]
                .iter_mut()
                .step_by(inner)
                .zip(&gathered)
                .for_each(|(o, g)| *o = *g);
        }
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

/// A reduction of `a`, seen as `[outer, len, inner]`, over its middle dimension into `out`
/// (`[outer, inner]`). Each output element folds its `len` inputs left to right in f32, whatever
/// the threads (R6.4): `sum` starts from the first element (0 when `len` is 0), `mean` divides the
/// sum by `len`, `max` propagates NaN. One rounding at the end.
pub(crate) fn reduce<T: Element>(a: &[T], out: &mut [T], dims: ReduceDims) {
    let ReduceDims {
        op,
        outer,
        len,
        inner,
    } = dims;
    assert_eq!(
        a.len(),
        outer * len * inner,
        "{}: operand length",
        op.name()
    );
    assert_eq!(out.len(), outer * inner, "{}: output length", op.name());
    if out.is_empty() {
        return;
    }
    let mut acc = vec![0f32; inner];
    if len == 0 {
        // Empty sums are 0, empty means 0/0 = NaN (max over 0 elements is refused upfront).
        let v = if op == ReduceOp::Mean { f32::NAN } else { 0.0 };
        acc.iter_mut().for_each(|s| *s = v);
        out.chunks_exact_mut(inner)
            .for_each(|o| T::store_f32(&acc, o));
        return;
    }
    let mut row = vec![0f32; inner];
    for (block, o) in a.chunks_exact(len * inner).zip(out.chunks_exact_mut(inner)) {
        let mut rows = block.chunks_exact(inner);
        if let Some(first) = rows.next() {
            T::load_f32(first, &mut acc);
        }
        for r in rows {
            T::load_f32(r, &mut row);
            match op {
                ReduceOp::Sum | ReduceOp::Mean => {
                    acc.iter_mut().zip(&row).for_each(|(s, x)| *s += x);
                }
                ReduceOp::Max => acc.iter_mut().zip(&row).for_each(|(m, &x)| {
                    if x > *m || x.is_nan() {
                        *m = x;
                    }
                }),
            }
        }
        if op == ReduceOp::Mean {
            acc.iter_mut().for_each(|s| *s /= len as f32);
        }
        T::store_f32(&acc, o);
    }
}
