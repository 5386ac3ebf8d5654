//! Elementwise kernels and dtype conversion.
//!
//! *Strategy*: f32 slices are processed in place with zipped iterators (no bounds checks, so
//! the simple ops auto-vectorize). f16 on x86-64 with F16C takes the fused kernels of
//! [`f16c`](super::f16c): widen 8 lanes, compute, round, all in registers. Otherwise f16/bf16
//! go through [`CHUNK`]-sized f32 stack buffers using the slice conversions of
//! [`Element`]: widen, compute, round. Tensors of at most [`SMALL`] elements use
//! [`SMALL`]-sized buffers instead, so a tiny op does not pay for zeroing 4 KiB of stack per
//! buffer (that memset once dominated a 16-element f16 op).

use super::kind::{BinaryOp, CHUNK, UnaryOp};
use super::{f16c, scalar};
use crate::dtype::Element;

/// Buffer size for tiny tensors (see the module docs).
const SMALL: usize = 64;

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
    if let (Some(a), Some(b)) = (T::as_f16(a), T::as_f16(b))
        && let Some(o) = T::as_f16_mut(out)
        && f16c::binary(op, a, b, o)
    {
        return;
    }
    if out.len() <= SMALL {
        binary_chunks::<T, SMALL>(op, a, b, out);
    } else {
        binary_chunks::<T, CHUNK>(op, a, b, out);
    }
}

fn binary_chunks<T: Element, const N: usize>(op: BinaryOp, a: &[T], b: &[T], out: &mut [T]) {
    let (mut xa, mut xb, mut xo) = ([0f32; N], [0f32; N], [0f32; N]);
    for ((a, b), o) in a.chunks(N).zip(b.chunks(N)).zip(out.chunks_mut(N)) {
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
    if let Some(a) = T::as_f16(a)
        && let Some(o) = T::as_f16_mut(out)
        && f16c::unary(op, a, o)
    {
        return;
    }
    if out.len() <= SMALL {
        unary_chunks::<T, SMALL>(op, a, out);
    } else {
        unary_chunks::<T, CHUNK>(op, a, out);
    }
}

fn unary_chunks<T: Element, const N: usize>(op: UnaryOp, a: &[T], out: &mut [T]) {
    let (mut xa, mut xo) = ([0f32; N], [0f32; N]);
    for (a, o) in a.chunks(N).zip(out.chunks_mut(N)) {
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
    if out.len() <= SMALL {
        convert_chunks::<S, D, SMALL>(a, out);
    } else {
        convert_chunks::<S, D, CHUNK>(a, out);
    }
}

fn convert_chunks<S: Element, D: Element, const N: usize>(a: &[S], out: &mut [D]) {
    let mut x = [0f32; N];
    for (a, o) in a.chunks(N).zip(out.chunks_mut(N)) {
        let n = a.len();
        S::load_f32(a, &mut x[..n]);
        D::store_f32(&x[..n], o);
    }
}
