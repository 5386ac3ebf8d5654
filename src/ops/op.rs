//! [`Op`]: the one description of a tensor operation that every path shares.
//!
//! Owns shape/dtype validation (semantics R6.11 and §7 rows E3–E7). Validation runs on the host
//! before anything is issued (R3.9); a backend runs the op later and only ever sees operands
//! that passed validation. This module does not know which stream or backend runs an op, or how
//! it is ordered.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::{BinaryOp, MatmulDims, UnaryOp};

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
        if crate::dtype::checked_len(&out_shape, a.1).is_none() {
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
