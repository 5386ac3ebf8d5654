//! Elementwise kernels and dtype conversion.
//!
//! *Strategy*: f32 slices are processed in place with zipped iterators (no bounds checks, so
//! the simple ops auto-vectorize). f16/bf16 go through [`CHUNK`]-sized f32 stack buffers using
//! `half`'s slice conversions (F16C on x86 when present): widen, compute, round.

use super::scalar;
use super::{BinaryOp, CHUNK, UnaryOp};
use crate::tensor::Element;

fn binary_f32(op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) {
    let it = out.iter_mut().zip(a.iter().zip(b));
    match op {
        BinaryOp::Add => it.for_each(|(o, (x, y))| *o = x + y),
        BinaryOp::Sub => it.for_each(|(o, (x, y))| *o = x - y),
        BinaryOp::Mul => it.for_each(|(o, (x, y))| *o = x * y),
        BinaryOp::Div => it.for_each(|(o, (x, y))| *o = x / y),
    }
}

fn unary_f32(op: UnaryOp, a: &[f32], out: &mut [f32]) {
    let it = out.iter_mut().zip(a);
    match op {
        UnaryOp::Relu => it.for_each(|(o, x)| *o = scalar::relu(*x)),
        UnaryOp::Silu => it.for_each(|(o, x)| *o = scalar::silu(*x)),
        UnaryOp::Gelu => it.for_each(|(o, x)| *o = scalar::gelu(*x)),
        UnaryOp::Exp => it.for_each(|(o, x)| *o = scalar::exp(*x)),
    }
}

/// `out[i] = a[i] op b[i]`.
pub(crate) fn binary<T: Element>(op: BinaryOp, a: &[T], b: &[T], out: &mut [T]) {
    assert!(
        a.len() == out.len() && b.len() == out.len(),
        "{}: operand lengths differ",
        op.name()
    );
    if let (Some(a), Some(b)) = (T::as_f32(a), T::as_f32(b))
        && let Some(o) = T::as_f32_mut(out)
    {
        return binary_f32(op, a, b, o);
    }
    let (mut xa, mut xb, mut xo) = ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    for ((a, b), o) in a
        .chunks(CHUNK)
        .zip(b.chunks(CHUNK))
        .zip(out.chunks_mut(CHUNK))
    {
        let n = a.len();
        T::load_f32(a, &mut xa[..n]);
        T::load_f32(b, &mut xb[..n]);
        binary_f32(op, &xa[..n], &xb[..n], &mut xo[..n]);
        T::store_f32(&xo[..n], o);
    }
}

/// `out[i] = op(a[i])`.
pub(crate) fn unary<T: Element>(op: UnaryOp, a: &[T], out: &mut [T]) {
    assert_eq!(
        a.len(),
        out.len(),
        "{}: operand length differs from output",
        op.name()
    );
    if let Some(a) = T::as_f32(a)
        && let Some(o) = T::as_f32_mut(out)
    {
        return unary_f32(op, a, o);
    }
    let (mut xa, mut xo) = ([0f32; CHUNK], [0f32; CHUNK]);
    for (a, o) in a.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let n = a.len();
        T::load_f32(a, &mut xa[..n]);
        unary_f32(op, &xa[..n], &mut xo[..n]);
        T::store_f32(&xo[..n], o);
    }
}

/// `out[i] = D::from_f32(a[i].to_f32())`: exact widening, one rounding (R6.1).
pub(crate) fn convert<S: Element, D: Element>(a: &[S], out: &mut [D]) {
    assert_eq!(
        a.len(),
        out.len(),
        "to_dtype: operand length differs from output"
    );
    let mut x = [0f32; CHUNK];
    for (a, o) in a.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let n = a.len();
        S::load_f32(a, &mut x[..n]);
        D::store_f32(&x[..n], o);
    }
}
