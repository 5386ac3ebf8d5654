//! [`Op`]: the one description of a tensor operation that every path shares.
//!
//! Owns shape/dtype validation (semantics R6.11 and §7 rows E3–E7) and the dispatch from a
//! validated op to the dtype-specific kernel. Validation runs on the host before anything is
//! issued (R3.9); execution runs on a stream worker and only ever sees operands that passed
//! validation. This module does not know which stream runs an op or how it is ordered.

use crate::error::{Error, Result};
use crate::kernels::{self, BinaryOp, MatmulDims, UnaryOp};
use crate::tensor::storage::{Data, DataMut, DataRef};
use crate::tensor::{DType, Element};

/// What an op computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum OpKind {
    Binary(BinaryOp),
    Unary(UnaryOp),
    Softmax,
    RmsNorm { eps: f32 },
    Matmul(MatmulDims),
    ToDType(DType),
}

/// A validated op: its kind and its output's shape and dtype.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Op {
    pub(crate) kind: OpKind,
    pub(crate) out_shape: Vec<usize>,
    pub(crate) out_dtype: DType,
}

/// A tensor's shape and dtype, all validation needs to know about an operand.
pub(crate) type Meta<'a> = (&'a [usize], DType);

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

impl Op {
    /// The op's user-facing name, used in every error message.
    pub(crate) fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether the kernel can use several threads (only matmul does), so callers ask the core
    /// split only then.
    pub(crate) fn is_multithreaded(&self) -> bool {
        matches!(self.kind, OpKind::Matmul(_))
    }

    /// Number of output elements.
    pub(crate) fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }

    pub(crate) fn binary(op: BinaryOp, a: Meta<'_>, b: Meta<'_>) -> Result<Op> {
        let name = op.name();
        if a.0 != b.0 {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: a.0.to_vec(),
                rhs: b.0.to_vec(),
                reason: "elementwise ops need identical shapes (no broadcasting, R6.11)".into(),
            });
        }
        same_dtype(name, a.1, b.1)?;
        Ok(Op {
            kind: OpKind::Binary(op),
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    pub(crate) fn unary(op: UnaryOp, a: Meta<'_>) -> Op {
        Op {
            kind: OpKind::Unary(op),
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        }
    }

    pub(crate) fn to_dtype(a: Meta<'_>, dtype: DType) -> Op {
        Op {
            kind: OpKind::ToDType(dtype),
            out_shape: a.0.to_vec(),
            out_dtype: dtype,
        }
    }

    pub(crate) fn softmax(a: Meta<'_>) -> Result<Op> {
        if a.0.is_empty() {
            return Err(Error::ShapeMismatch {
                op: "softmax",
                lhs: vec![],
                rhs: vec![],
                reason: "softmax needs rank >= 1 (it reduces over the last dimension)".into(),
            });
        }
        Ok(Op {
            kind: OpKind::Softmax,
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    pub(crate) fn rms_norm(a: Meta<'_>, w: Meta<'_>, eps: f32) -> Result<Op> {
        let Some(&last) = a.0.last() else {
            return Err(Error::ShapeMismatch {
                op: "rms_norm",
                lhs: vec![],
                rhs: w.0.to_vec(),
                reason: "rms_norm needs rank >= 1 (it reduces over the last dimension)".into(),
            });
        };
        if w.0 != [last] {
            return Err(Error::ShapeMismatch {
                op: "rms_norm",
                lhs: a.0.to_vec(),
                rhs: w.0.to_vec(),
                reason: format!("the weight must have shape [{last}] (the input's last dimension)"),
            });
        }
        same_dtype("rms_norm", a.1, w.1)?;
        Ok(Op {
            kind: OpKind::RmsNorm { eps },
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// `[m,k]×[k,n]`, `[b,m,k]×[b,k,n]` or `[b,m,k]×[k,n]` (R6.11).
    pub(crate) fn matmul(a: Meta<'_>, b: Meta<'_>) -> Result<Op> {
        let mismatch = |reason: String| Error::ShapeMismatch {
            op: "matmul",
            lhs: a.0.to_vec(),
            rhs: b.0.to_vec(),
            reason,
        };
        let (batch, m, k, rhs_batched, kb, n) = match (a.0, b.0) {
            (&[m, k], &[kb, n]) => (1, m, k, false, kb, n),
            (&[bt, m, k], &[kb, n]) => (bt, m, k, false, kb, n),
            (&[bt, m, k], &[bb, kb, n]) => {
                if bt != bb {
                    return Err(mismatch(format!("batch sizes differ ({bt} vs {bb})")));
                }
                (bt, m, k, true, kb, n)
            }
            _ => {
                return Err(mismatch(
                    "matmul takes [m,k]x[k,n], [b,m,k]x[b,k,n] or [b,m,k]x[k,n]".into(),
                ));
            }
        };
        if k != kb {
            return Err(mismatch(format!("inner dimensions differ ({k} vs {kb})")));
        }
        same_dtype("matmul", a.1, b.1)?;
        let out_shape = if a.0.len() == 3 {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        if crate::tensor::checked_len(&out_shape, a.1).is_none() {
            return Err(mismatch(format!(
                "the output {out_shape:?} would hold more than isize::MAX bytes"
            )));
        }
        let dims = MatmulDims {
            batch,
            m,
            k,
            n,
            rhs_batched,
        };
        Ok(Op {
            kind: OpKind::Matmul(dims),
            out_shape,
            out_dtype: a.1,
        })
    }

    /// Runs the kernel on validated operands and returns a freshly allocated output (eager).
    ///
    /// `threads` is the number of cores a matmul may use (the runtime's core split).
    /// Returns `Err` with a description only if an operand does not match the validated op,
    /// which would be a tagstream bug.
    pub(crate) fn execute(&self, inputs: &[DataRef<'_>], threads: usize) -> Result<Data, String> {
        let mut out = Data::try_zeroed(self.out_dtype, self.out_len()).ok_or_else(|| {
            format!(
                "out of memory: cannot allocate {} bytes for the output",
                self.out_len() * self.out_dtype.size_in_bytes()
            )
        })?;
        self.execute_into(inputs, out.view_mut(), threads)?;
        Ok(out)
    }

    /// Runs the kernel on validated operands, writing every element of `out` (its previous
    /// contents are never read, so a reused replay buffer needs no clearing). Allocates nothing
    /// once the calling thread's scratch has grown to the op's size.
    ///
    /// # Errors
    /// A description if an operand or the output does not match the validated op (a bug).
    pub(crate) fn execute_into(
        &self,
        inputs: &[DataRef<'_>],
        out: DataMut<'_>,
        threads: usize,
    ) -> Result<(), String> {
        if out.dtype() != self.out_dtype || out.len() != self.out_len() {
            return Err(format!(
                "{}: output is {} x{}, the op writes {} x{}",
                self.name(),
                out.dtype(),
                out.len(),
                self.out_dtype,
                self.out_len()
            ));
        }
        let mut out = out;
        match (self.kind, inputs) {
            (OpKind::Binary(op), [a, b]) => {
                typed2!(*a, *b, &mut out, |a, b, o| kernels::binary(op, a, b, o))
            }
            (OpKind::Unary(op), [a]) => typed1!(*a, &mut out, |a, o| kernels::unary(op, a, o)),
            (OpKind::Softmax, [a]) => {
                let n = self.out_shape.last().copied().unwrap_or(0);
                typed1!(*a, &mut out, |a, o| kernels::softmax(a, o, n))
            }
            (OpKind::RmsNorm { eps }, [a, w]) => {
                let n = self.out_shape.last().copied().unwrap_or(0);
                typed2!(*a, *w, &mut out, |a, w, o| kernels::rms_norm(
                    a, w, eps, o, n
                ))
            }
            (OpKind::Matmul(dims), [a, b]) => {
                typed2!(*a, *b, &mut out, |a, b, o| kernels::matmul(
                    a, b, o, dims, threads
                ))
            }
            (OpKind::ToDType(_), [a]) => convert(*a, out),
            _ => return Err(format!("{} got {} operands", self.name(), inputs.len())),
        }
        Ok(())
    }
}

impl OpKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OpKind::Binary(op) => op.name(),
            OpKind::Unary(op) => op.name(),
            OpKind::Softmax => "softmax",
            OpKind::RmsNorm { .. } => "rms_norm",
            OpKind::Matmul(_) => "matmul",
            OpKind::ToDType(_) => "to_dtype",
        }
    }
}

fn same_dtype(op: &'static str, lhs: DType, rhs: DType) -> Result<()> {
    if lhs == rhs {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs, rhs })
    }
}

fn convert(a: DataRef<'_>, out: DataMut<'_>) {
    fn go<S: Element>(a: &[S], out: DataMut<'_>) {
        match out {
            DataMut::F32(o) => kernels::convert(a, o),
            DataMut::F16(o) => kernels::convert(a, o),
            DataMut::BF16(o) => kernels::convert(a, o),
        }
    }
    match a {
        DataRef::F32(a) => go(a, out),
        DataRef::F16(a) => go(a, out),
        DataRef::BF16(a) => go(a, out),
    }
}
