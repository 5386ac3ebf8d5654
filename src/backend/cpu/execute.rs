//! The CPU kernels' dispatch: a validated [`Op`] run on typed slices.
//!
//! Owns the dtype dispatch from an op to its generic kernel in `kernels`, eager execution of an
//! entry (allocating its output) and execution into a pre-planned replay output. A failed
//! input, an operand that does not match the op (a bug) or a kernel panic becomes an error
//! value, never a panic on the worker. It knows nothing of streams or ordering.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::dtype::Element;
use crate::error::Error;
use crate::kernels;
use crate::ops::op::{MAX_OPERANDS, Op, OpKind};
use crate::tensor::storage::{Buffer, Data, DataMut, DataRef};

/// Runs `$body` with `$a` and `$o` bound to the typed slices of one input and the output,
/// instantiating the generic kernel once per dtype.
macro_rules! typed1 {
    ($a:expr, $out:expr, |$x:ident, $o:ident| $body:expr) => {
        match ($a, $out) {
            (DataRef::F32($x), DataMut::F32($o)) => $body,
            (DataRef::F16($x), DataMut::F16($o)) => $body,
            (DataRef::BF16($x), DataMut::BF16($o)) => $body,
            (a, o) => return Err(format!("operand {} vs output {}", a.dtype(), o.dtype())),
        }
    };
}

/// As [`typed1!`], for two inputs of the output's dtype.
macro_rules! typed2 {
    ($a:expr, $b:expr, $out:expr, |$x:ident, $y:ident, $o:ident| $body:expr) => {
        match ($a, $b, $out) {
            (DataRef::F32($x), DataRef::F32($y), DataMut::F32($o)) => $body,
            (DataRef::F16($x), DataRef::F16($y), DataMut::F16($o)) => $body,
            (DataRef::BF16($x), DataRef::BF16($y), DataMut::BF16($o)) => $body,
            (a, b, o) => {
                return Err(format!(
                    "operands {}, {} vs output {}",
                    a.dtype(),
                    b.dtype(),
                    o.dtype()
                ));
            }
        }
    };
}

/// As [`typed1!`]/[`typed2!`] for the layout and index ops, which move elements without computing: the
/// body is generic over any `Copy` element, so every dtype gets an arm (a new dtype adds one).
macro_rules! typed_copy {
    ([$($in:expr),+], $out:expr, |[$($x:ident),+], $o:ident| $body:expr) => {
        match ($($in,)+ $out) {
            ($(DataRef::F32($x),)+ DataMut::F32($o)) => $body,
            ($(DataRef::F16($x),)+ DataMut::F16($o)) => $body,
            ($(DataRef::BF16($x),)+ DataMut::BF16($o)) => $body,
            ($(DataRef::I32($x),)+ DataMut::I32($o)) => $body,
            _ => return Err("operand dtypes differ from the output's".to_string()),
        }
    };
}

/// The `I32` index operand of an index op.
fn index_operand<'a>(op: &Op, index: DataRef<'a>) -> Result<&'a [i32], String> {
    match index {
        DataRef::I32(ix) => Ok(ix),
        other => Err(format!(
            "{}: an index of dtype {}",
            op.name(),
            other.dtype()
        )),
    }
}

/// The error of an op whose output cannot be allocated (eager or replay): the one place its
/// message is built.
pub(crate) fn out_of_memory(op: &Op, stream: &str) -> Error {
    Error::ExecutionFailed {
        op: op.name().to_string(),
        stream: stream.to_string(),
        message: format!(
            "out of memory: cannot allocate {} bytes for the output",
            op.out_len().saturating_mul(op.out_dtype.size_in_bytes())
        ),
    }
}

/// Runs `op` eagerly on `stream`: reads its inputs (a failed input makes the output fail with
/// the same cause), allocates the output and runs the kernel with `threads` threads.
pub(crate) fn execute(
    stream: &str,
    op: &Op,
    inputs: &[Arc<Buffer>],
    threads: usize,
) -> Result<Data, Error> {
    let mut views = [None; MAX_OPERANDS];
    for (slot, input) in views.iter_mut().zip(inputs) {
        match input.get() {
            Some(Ok(d)) => *slot = Some(d.view()),
            // An input that failed makes this output fail with the same cause (R3.12).
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(failed(
                    op,
                    stream,
                    "an input was not produced yet: the happens-before invariant is broken".into(),
                ));
            }
        }
    }
    let Some(views) = OperandViews::new(views) else {
        return Err(failed(op, stream, "an op with no operands".into()));
    };
    let mut out =
        Data::try_zeroed(op.out_dtype, op.out_len()).ok_or_else(|| out_of_memory(op, stream))?;
    let Some(out_view) = out.view_mut() else {
        return Err(failed(
            op,
            stream,
            "a fresh output is not owned memory".into(),
        ));
    };
    run_kernel(stream, op, views.as_slice(), out_view, threads)?;
    Ok(out)
}

/// The operand views of an op (at most [`MAX_OPERANDS`]), on the stack: executing an op
/// allocates only its output.
pub(crate) struct OperandViews<'a> {
    views: [DataRef<'a>; MAX_OPERANDS],
    len: usize,
}

impl<'a> OperandViews<'a> {
    /// The operands read in order (`None` where an op has fewer); `None` for no operand.
    pub(crate) fn new(views: [Option<DataRef<'a>>; MAX_OPERANDS]) -> Option<OperandViews<'a>> {
        match views {
            [Some(a), Some(b), Some(c)] => Some(OperandViews {
                views: [a, b, c],
                len: 3,
            }),
            [Some(a), Some(b), None] => Some(OperandViews {
                views: [a, b, b],
                len: 2,
            }),
            [Some(a), None, None] => Some(OperandViews {
                views: [a, a, a],
                len: 1,
            }),
            _ => None,
        }
    }

    pub(crate) fn as_slice(&self) -> &[DataRef<'a>] {
        &self.views[..self.len]
    }
}

/// Runs the kernel of `op` into `out`, catching a kernel panic.
pub(crate) fn run_kernel(
    stream: &str,
    op: &Op,
    inputs: &[DataRef<'_>],
    out: DataMut<'_>,
    threads: usize,
) -> Result<(), Error> {
    match catch_unwind(AssertUnwindSafe(|| execute_into(op, inputs, out, threads))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(failed(op, stream, msg)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(failed(op, stream, format!("kernel panicked: {msg}")))
        }
    }
}

fn failed(op: &Op, stream: &str, message: String) -> Error {
    Error::ExecutionFailed {
        op: op.name().to_string(),
        stream: stream.to_string(),
        message,
    }
}

/// Runs the kernel on validated operands, writing every element of `out` (its previous
/// contents are never read, so a reused replay buffer needs no clearing). Allocates nothing
/// once the calling thread's scratch has grown to the op's size.
///
/// # Errors
/// A description if an operand or the output does not match the validated op (a bug).
pub(crate) fn execute_into(
    op: &Op,
    inputs: &[DataRef<'_>],
    out: DataMut<'_>,
    threads: usize,
) -> Result<(), String> {
    if out.dtype() != op.out_dtype || out.len() != op.out_len() {
        return Err(format!(
            "{}: output is {} x{}, the op writes {} x{}",
            op.name(),
            out.dtype(),
            out.len(),
            op.out_dtype,
            op.out_len()
        ));
    }
    let mut out = out;
    match (op.kind, inputs) {
        (OpKind::Binary(kind), [a, b]) => {
            typed2!(*a, *b, &mut out, |a, b, o| kernels::in_pieces(
                o,
                threads,
                |at, o| kernels::binary(kind, &a[at..][..o.len()], &b[at..][..o.len()], o)
            ))
        }
        (OpKind::Broadcast { op: kind, mask }, [a, b]) => {
            typed2!(*a, *b, &mut out, |a, b, o| kernels::binary_broadcast(
                kind,
                a,
                b,
                o,
                &op.out_shape,
                mask
            ))
        }
        (OpKind::Scalar { op: kind, value }, [a]) => {
            typed1!(*a, &mut out, |a, o| kernels::in_pieces(
                o,
                threads,
                |at, o| { kernels::binary_scalar(kind, &a[at..][..o.len()], value, o) }
            ))
        }
        (OpKind::Reduce(dims), [a]) => typed1!(*a, &mut out, |a, o| kernels::reduce(a, o, dims)),
        (OpKind::Unary(kind), [a]) => typed1!(*a, &mut out, |a, o| kernels::in_pieces(
            o,
            threads,
            |at, o| kernels::unary(kind, &a[at..][..o.len()], o)
        )),
        (OpKind::Softmax, [a]) => {
            let n = op.out_shape.last().copied().unwrap_or(0);
            typed1!(*a, &mut out, |a, o| kernels::softmax(a, o, n))
        }
        (OpKind::RmsNorm { eps }, [a, w]) => {
            let n = op.out_shape.last().copied().unwrap_or(0);
            typed2!(*a, *w, &mut out, |a, w, o| kernels::rms_norm(
                a, w, eps, o, n
            ))
        }
        (OpKind::Matmul(dims), [a, b]) => {
            typed2!(*a, *b, &mut out, |a, b, o| kernels::matmul(
                a, b, o, dims, threads
            ))
        }
        (OpKind::ToDType(_), [a]) => convert(*a, out, threads)?,
        (OpKind::TopkIndices { n, k }, [a]) => {
            let DataMut::I32(o) = &mut out else {
                return Err(format!("topk: an output of dtype {}", out.dtype()));
            };
            match *a {
                DataRef::F32(x) => kernels::topk_indices(x, o, n, k),
                DataRef::F16(x) => kernels::topk_indices(x, o, n, k),
                DataRef::BF16(x) => kernels::topk_indices(x, o, n, k),
                DataRef::I32(_) => return Err("topk: an I32 operand".into()),
            }
        }
        (OpKind::Gather(dims), [a, index]) => {
            let index = index_operand(op, *index)?;
            typed_copy!([*a], &mut out, |[a], o| kernels::gather(a, index, o, dims))?
        }
        (OpKind::IndexSelect(dims), [a, index]) => {
            let index = index_operand(op, *index)?;
            typed_copy!([*a], &mut out, |[a], o| kernels::index_select(
                a, index, o, dims
            ))?
        }
        (OpKind::Scatter(dims), [a, index, src]) => {
            let index = index_operand(op, *index)?;
            typed_copy!([*a, *src], &mut out, |[a, s], o| kernels::scatter(
                a, index, s, o, dims
            ))?
        }
        (OpKind::SoftmaxDim { dim }, [a]) => {
            let s = &op.out_shape;
            let (outer, inner) = (s[..dim].iter().product(), s[dim + 1..].iter().product());
            typed1!(*a, &mut out, |a, o| kernels::softmax_strided(
                a, o, outer, s[dim], inner
            ))
        }
        (OpKind::Transpose { .. } | OpKind::Narrow { .. } | OpKind::Expand { .. }, [a]) => {
            let mut strides = [0usize; kernels::MAX_RANK];
            let Some(offset) = op.copy_layout(&mut strides) else {
                return Err(format!(
                    "{}: rank {} is too large",
                    op.name(),
                    op.out_shape.len()
                ));
            };
            let strides = &strides[..op.out_shape.len()];
            typed_copy!([*a], &mut out, |[a], o| kernels::strided_copy(
                a,
                o,
                &op.out_shape,
                strides,
                offset
            ))
        }
        (OpKind::Cat { dim, split }, [a, b]) => {
            let s = &op.out_shape;
            let inner: usize = s[dim + 1..].iter().product();
            let (a_inner, b_inner) = (split * inner, (s[dim] - split) * inner);
            typed_copy!([*a, *b], &mut out, |[a, b], o| kernels::cat2(
                a, b, o, a_inner, b_inner
            ))
        }
        _ => return Err(format!("{} got {} operands", op.name(), inputs.len())),
    }
    Ok(())
}

fn convert(a: DataRef<'_>, out: DataMut<'_>, threads: usize) -> Result<(), String> {
    fn go<S: Element>(a: &[S], out: DataMut<'_>, threads: usize) -> Result<(), String> {
        fn pieces<S: Element, D: Element>(a: &[S], o: &mut [D], threads: usize) {
            kernels::in_pieces(o, threads, |at, o| {
                kernels::convert(&a[at..][..o.len()], o);
            });
        }
        match out {
            DataMut::F32(o) => pieces(a, o, threads),
            DataMut::F16(o) => pieces(a, o, threads),
            DataMut::BF16(o) => pieces(a, o, threads),
            DataMut::I32(_) => return Err("to_dtype: an I32 output passed validation".into()),
        }
        Ok(())
    }
    match a {
        DataRef::F32(a) => go(a, out, threads),
        DataRef::F16(a) => go(a, out, threads),
        DataRef::BF16(a) => go(a, out, threads),
        DataRef::I32(_) => Err("to_dtype: an I32 operand passed validation".into()),
    }
}
