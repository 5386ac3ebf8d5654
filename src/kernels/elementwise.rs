//! Elementwise kernels and dtype conversion.
//!
//! *Strategy*: f32 slices are processed in place with zipped iterators (no bounds checks, so
//! the simple ops auto-vectorize). f16 on x86-64 with F16C takes the fused kernels of
//! [`f16c`](super::f16c): widen 8 lanes, compute, round, all in registers. Otherwise f16/bf16
//! go through [`CHUNK`]-sized f32 stack buffers using the slice conversions of
//! [`Element`]: widen, compute, round. Tensors of at most [`SMALL`] elements use
//! [`SMALL`]-sized buffers instead, so a tiny op does not pay for zeroing 4 KiB of stack per
//! buffer (that memset once dominated a 16-element f16 op).

use rayon::prelude::*;

use super::kind::{BinaryOp, CHUNK, UnaryOp};
use super::matmul::gemm_pool;
use super::{f16c, scalar};
use crate::dtype::Element;

/// Elements per thread below which an elementwise op is not split: handing pieces to the
/// kernels' pool costs a few microseconds, about what 128K elements take on one core.
pub(super) const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

/// Runs `f(start, piece)` over consecutive pieces of `out` (`start` is the piece's first
/// index) on up to `threads` threads of the kernels' pool, or once over all of `out`, on the
/// calling thread, when it is too small to split or the pool is busy (a product on another
/// stream: queueing behind it would cost far more than the split saves). Every element is
/// computed by the same per-element formula whichever piece it falls in, so the bits never
/// depend on `threads` or on the pool (R6.4).
pub(crate) fn in_pieces<T: Send>(
    out: &mut [T],
    threads: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    let pieces = threads.min(out.len() / PARALLEL_MIN_ELEMENTS);
    // `pieces` first: a tiny op never touches the pool.
    match (pieces > 1)
        .then(gemm_pool)
        .flatten()
        .filter(|pool| !pool.is_busy())
    {
        Some(pool) => {
            // Whole cache lines per piece (64 elements cover one at any dtype).
            let len = out.len().div_ceil(pieces).next_multiple_of(64);
            pool.install(|| {
                out.par_chunks_mut(len)
                    .enumerate()
                    .for_each(|(i, piece)| f(i * len, piece));
            });
        }
        None => f(0, out),
    }
}

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
    if let (Some(a), Some(b)) = (T::as_bf16(a), T::as_bf16(b))
        && let Some(o) = T::as_bf16_mut(out)
        && super::bf16::binary(op, a, b, o)
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

/// `out[i] = a[ia] op b[ib]` for operands broadcast to `shape`: bit `d` of `mask[k]` is set
/// where operand `k` (padded with leading 1s to the rank of `shape`, at most 64) has size 1 in
/// dimension `d`. The same f32 op and rounding as [`binary`], so each element has the bits of
/// the identical-shape kernel on expanded operands.
pub(crate) fn binary_broadcast<T: Element>(
    op: BinaryOp,
    a: &[T],
    b: &[T],
    out: &mut [T],
    shape: &[usize],
    mask: [u64; 2],
) {
    const MAX_RANK: usize = 64;
    let rank = shape.len();
    assert!(rank <= MAX_RANK, "{}: rank {rank} > {MAX_RANK}", op.name());
    assert_eq!(
        shape.iter().product::<usize>(),
        out.len(),
        "{}: output length differs from its shape",
        op.name()
    );
    if out.is_empty() {
        return;
    }
    // Row-major element strides of each operand, 0 along its broadcast dimensions.
    let mut strides = [[0usize; 2]; MAX_RANK];
    let mut next = [1usize; 2];
    for d in (0..rank).rev() {
        for k in 0..2 {
            if mask[k] >> d & 1 == 0 {
                strides[d][k] = next[k];
                next[k] *= shape[d];
            }
        }
    }
    assert!(
        next[0] == a.len() && next[1] == b.len(),
        "{}: operand lengths differ from the broadcast shapes",
        op.name()
    );
    let strides = &strides[..rank];
    let (mut ta, mut tb) = ([T::default(); CHUNK], [T::default(); CHUNK]);
    let (mut xa, mut xb, mut xo) = ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    // Odometer over the output index, with each operand's offset kept alongside.
    let mut idx = [0usize; MAX_RANK];
    let (mut oa, mut ob) = (0usize, 0usize);
    for o in out.chunks_mut(CHUNK) {
        let n = o.len();
        for i in 0..n {
            ta[i] = a[oa];
            tb[i] = b[ob];
            for d in (0..rank).rev() {
                idx[d] += 1;
                oa += strides[d][0];
                ob += strides[d][1];
                if idx[d] < shape[d] {
                    break;
                }
                oa -= strides[d][0] * shape[d];
                ob -= strides[d][1] * shape[d];
                idx[d] = 0;
            }
        }
        T::load_f32(&ta[..n], &mut xa[..n]);
        T::load_f32(&tb[..n], &mut xb[..n]);
        binary_f32(op, &xa[..n], &xb[..n], &mut xo[..n]);
        T::store_f32(&xo[..n], o);
    }
}

/// `out[i] = a[i] op value`, in f32 and rounded once (R6.2, R6.3).
pub(crate) fn binary_scalar<T: Element>(op: BinaryOp, a: &[T], value: f32, out: &mut [T]) {
    assert_eq!(
        a.len(),
        out.len(),
        "{}: operand length differs from output",
        op.name()
    );
    let (mut xa, xb, mut xo) = ([0f32; CHUNK], [value; CHUNK], [0f32; CHUNK]);
    for (a, o) in a.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let n = a.len();
        T::load_f32(a, &mut xa[..n]);
        binary_f32(op, &xa[..n], &xb[..n], &mut xo[..n]);
        T::store_f32(&xo[..n], o);
    }
}
