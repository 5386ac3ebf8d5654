//! [`Op`]: the one description of a tensor operation that every path shares.
//!
//! Owns shape/dtype validation (semantics R6.11 and §7 rows E3–E7). Validation runs on the host
//! before anything is issued (R3.9); a backend runs the op later and only ever sees operands
//! that passed validation. This module does not know which stream or backend runs an op, or how
//! it is ordered.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::{BinaryOp, IndexDims, MatmulDims, ReduceDims, ReduceOp, UnaryOp};

/// What an op computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum OpKind {
    /// Operands of identical shape.
    Binary(BinaryOp),
    /// Operands of different shapes, broadcast to `out_shape`: bit `d` of `mask[i]` is set
    /// where operand `i`, padded with leading 1s to the output rank, has size 1 in dimension
    /// `d` (a mask rather than strides keeps `Op` and each kept instruction small).
    Broadcast {
        op: BinaryOp,
        mask: [u64; 2],
    },
    /// `a op value`, computed in f32 (R6.2).
    Scalar {
        op: BinaryOp,
        value: f32,
    },
    Unary(UnaryOp),
    Reduce(ReduceDims),
    Softmax,
    RmsNorm {
        eps: f32,
    },
    Matmul(MatmulDims),
    ToDType(DType),
    /// The `I32` positions of the `k` largest of each row of `n` (the indices half of `topk`;
    /// its values are a `Gather` of them).
    TopkIndices {
        n: usize,
        k: usize,
    },
    /// Operands: data, `I32` index of the output's shape.
    Gather(IndexDims),
    /// Operands: data, `I32` index, src (the index's shape); the output is the data's shape.
    Scatter(IndexDims),
    /// Operands: data, 1-D `I32` index.
    IndexSelect(IndexDims),
    /// Softmax over dimension `dim`, which is not the last (the last is [`OpKind::Softmax`]).
    SoftmaxDim {
        dim: usize,
    },
    /// A copy of the input with dimensions `d0` and `d1` swapped (`out_shape` is the swapped
    /// shape).
    Transpose {
        d0: usize,
        d1: usize,
    },
    /// A copy of `out_shape[dim]` elements of dimension `dim` (of size `in_len` in the input)
    /// from index `start`.
    Narrow {
        dim: usize,
        start: usize,
        in_len: usize,
    },
    /// The input, padded with leading 1s to the output rank, repeated along every dimension
    /// whose bit is set in `mask` (its size is 1 in the input: stride 0).
    Expand {
        mask: u64,
    },
    /// Two operands joined along `dim`; the first has size `split` there.
    Cat {
        dim: usize,
        split: usize,
    },
}

/// What a shape op turned out to be: a copy-free view (a new handle on the same elements, with
/// this shape: same element count, same row-major order) or an op that copies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shaped {
    View(Vec<usize>),
    Copy(Op),
}

/// A validated op: its kind and its output's shape and dtype.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Op {
    pub(crate) kind: OpKind,
    pub(crate) out_shape: Vec<usize>,
    pub(crate) out_dtype: DType,
}

/// The most operands an op reads (`scatter`: self, index, src).
pub(crate) const MAX_OPERANDS: usize = 3;

/// The largest output rank a broadcast op takes (one mask bit per dimension).
pub(crate) const MAX_BROADCAST_RANK: usize = 64;

/// The largest rank a copying shape op takes (its stride walk lives on the stack).
pub(crate) const MAX_COPY_RANK: usize = crate::kernels::MAX_RANK;

/// A tensor's shape and dtype, all validation needs to know about an operand.
pub(crate) type Meta<'a> = (&'a [usize], DType);

impl Op {
    /// The op's user-facing name, used in every error message.
    pub(crate) fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether the kernel can use several threads (matmul, elementwise ops and dtype
    /// conversions; the kernel itself decides whether a size is worth splitting), so callers
    /// ask the core split only then.
    pub(crate) fn is_multithreaded(&self) -> bool {
        matches!(
            self.kind,
            OpKind::Matmul(_)
                | OpKind::Binary(_)
                | OpKind::Scalar { .. }
                | OpKind::Unary(_)
                | OpKind::ToDType(_)
        )
    }

    /// Number of output elements.
    pub(crate) fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// Elementwise `a op b` with NumPy/torch broadcasting (R6.11): shapes are aligned from the
    /// right and each pair of dimensions must be equal or contain a 1. Identical shapes keep the
    /// plain kernel.
    pub(crate) fn binary(op: BinaryOp, a: Meta<'_>, b: Meta<'_>) -> Result<Op> {
        let name = op.name();
        if a.0 == b.0 {
            same_dtype(name, a.1, b.1)?;
            float_only(name, a.1)?;
            return Ok(Op {
                kind: OpKind::Binary(op),
                out_shape: a.0.to_vec(),
                out_dtype: a.1,
            });
        }
        let rank = a.0.len().max(b.0.len());
        // Each operand's shape padded on the left with 1s to the output rank.
        let dim = |s: &[usize], d: usize| (d + s.len()).checked_sub(rank).map_or(1, |i| s[i]);
        let mut out_shape = Vec::with_capacity(rank);
        for d in 0..rank {
            let (x, y) = (dim(a.0, d), dim(b.0, d));
            out_shape.push(match (x, y) {
                _ if x == y => x,
                (1, _) => y,
                (_, 1) => x,
                _ => {
                    return Err(Error::ShapeMismatch {
                        op: name,
                        lhs: a.0.to_vec(),
                        rhs: b.0.to_vec(),
                        reason: format!(
                            "the shapes do not broadcast: dimension {d} of the aligned shapes is \
                             {x} vs {y} (R6.11: aligned from the right, equal or 1)"
                        ),
                    });
                }
            });
        }
        same_dtype(name, a.1, b.1)?;
        float_only(name, a.1)?;
        if crate::dtype::checked_len(&out_shape, a.1).is_none() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: a.0.to_vec(),
                rhs: b.0.to_vec(),
                reason: format!("the output {out_shape:?} would hold more than isize::MAX bytes"),
            });
        }
        if rank > MAX_BROADCAST_RANK {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: a.0.to_vec(),
                rhs: b.0.to_vec(),
                reason: format!("broadcasting supports rank <= {MAX_BROADCAST_RANK}"),
            });
        }
        let mut mask = [0u64; 2];
        for d in 0..rank {
            mask[0] |= u64::from(dim(a.0, d) == 1) << d;
            mask[1] |= u64::from(dim(b.0, d) == 1) << d;
        }
        Ok(Op {
            kind: OpKind::Broadcast { op, mask },
            out_shape,
            out_dtype: a.1,
        })
    }

    /// Elementwise `a op value`, in f32 then rounded once (R6.2, R6.3).
    pub(crate) fn scalar(op: BinaryOp, a: Meta<'_>, value: f32) -> Result<Op> {
        let kind = OpKind::Scalar { op, value };
        float_only(kind.name(), a.1)?;
        Ok(Op {
            kind,
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// A reduction over dimension `dim` of `a`, keeping it as size 1 when `keepdim` (R6.4).
    pub(crate) fn reduce(op: ReduceOp, a: Meta<'_>, dim: usize, keepdim: bool) -> Result<Op> {
        let name = op.name();
        float_only(name, a.1)?;
        let mismatch = |reason: String| Error::ShapeMismatch {
            op: name,
            lhs: a.0.to_vec(),
            rhs: vec![],
            reason,
        };
        if dim >= a.0.len() {
            return Err(mismatch(format!(
                "dim {dim} is out of range for a tensor of rank {}",
                a.0.len()
            )));
        }
        let len = a.0[dim];
        if len == 0 && op == ReduceOp::Max {
            return Err(mismatch(format!(
                "max over dimension {dim} of size 0 has no identity"
            )));
        }
        let dims = ReduceDims {
            op,
            outer: a.0[..dim].iter().product(),
            len,
            inner: a.0[dim + 1..].iter().product(),
        };
        let mut out_shape = a.0.to_vec();
        if keepdim {
            out_shape[dim] = 1;
        } else {
            out_shape.remove(dim);
        }
        Ok(Op {
            kind: OpKind::Reduce(dims),
            out_shape,
            out_dtype: a.1,
        })
    }

    pub(crate) fn unary(op: UnaryOp, a: Meta<'_>) -> Result<Op> {
        float_only(op.name(), a.1)?;
        Ok(Op {
            kind: OpKind::Unary(op),
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// A conversion between float dtypes (R6.1 refuses `I32` on either side).
    pub(crate) fn to_dtype(a: Meta<'_>, dtype: DType) -> Result<Op> {
        if !a.1.is_float() || !dtype.is_float() {
            return Err(Error::DTypeMismatch {
                op: "to_dtype",
                lhs: a.1,
                rhs: dtype,
            });
        }
        Ok(Op {
            kind: OpKind::ToDType(dtype),
            out_shape: a.0.to_vec(),
            out_dtype: dtype,
        })
    }

    pub(crate) fn softmax(a: Meta<'_>) -> Result<Op> {
        float_only("softmax", a.1)?;
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
        float_only("rms_norm", a.1)?;
        Ok(Op {
            kind: OpKind::RmsNorm { eps },
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// The indices half of `topk(k)` over the last dimension (design.md §1).
    pub(crate) fn topk_indices(a: Meta<'_>, k: usize) -> Result<Op> {
        float_only("topk", a.1)?;
        let mismatch = |reason: String| Error::ShapeMismatch {
            op: "topk",
            lhs: a.0.to_vec(),
            rhs: vec![k],
            reason,
        };
        let Some(&n) = a.0.last() else {
            return Err(mismatch(
                "topk needs rank >= 1 (it selects over the last dimension)".into(),
            ));
        };
        if k > n {
            return Err(mismatch(format!(
                "k = {k} is larger than the last dimension ({n})"
            )));
        }
        if i32::try_from(n).is_err() {
            return Err(mismatch(format!(
                "the last dimension ({n}) has positions beyond the I32 range"
            )));
        }
        let mut out_shape = a.0.to_vec();
        out_shape[a.0.len() - 1] = k;
        Ok(Op {
            kind: OpKind::TopkIndices { n, k },
            out_shape,
            out_dtype: DType::I32,
        })
    }

    /// `gather(dim, index)`: the output has the index's shape and the data's dtype.
    pub(crate) fn gather(a: Meta<'_>, dim: usize, index: Meta<'_>) -> Result<Op> {
        let dims = index_geometry("gather", a, dim, index, true)?;
        Ok(Op {
            kind: OpKind::Gather(dims),
            out_shape: index.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// `scatter(dim, index, src)`: a copy of the data with `src` (the index's shape, the data's
    /// dtype) written at `index`.
    pub(crate) fn scatter(a: Meta<'_>, dim: usize, index: Meta<'_>, src: Meta<'_>) -> Result<Op> {
        let dims = index_geometry("scatter", a, dim, index, true)?;
        same_dtype("scatter", a.1, src.1)?;
        if src.0 != index.0 {
            return Err(Error::ShapeMismatch {
                op: "scatter",
                lhs: index.0.to_vec(),
                rhs: src.0.to_vec(),
                reason: "src must have the index's shape".into(),
            });
        }
        Ok(Op {
            kind: OpKind::Scatter(dims),
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// `index_select(dim, index)` with a 1-D index: the data's shape with `dim` resized.
    pub(crate) fn index_select(a: Meta<'_>, dim: usize, index: Meta<'_>) -> Result<Op> {
        let dims = index_geometry("index_select", a, dim, index, false)?;
        let mut out_shape = a.0.to_vec();
        out_shape[dim] = dims.idx_len;
        if crate::dtype::checked_len(&out_shape, a.1).is_none() {
            return Err(Error::ShapeMismatch {
                op: "index_select",
                lhs: a.0.to_vec(),
                rhs: index.0.to_vec(),
                reason: format!("the output {out_shape:?} would hold more than isize::MAX bytes"),
            });
        }
        Ok(Op {
            kind: OpKind::IndexSelect(dims),
            out_shape,
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
        float_only("matmul", a.1)?;
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

    /// Softmax over dimension `dim` (R6.11): the last dimension is exactly [`Op::softmax`].
    pub(crate) fn softmax_dim(a: Meta<'_>, dim: usize) -> Result<Op> {
        float_only("softmax_dim", a.1)?;
        let rank = a.0.len();
        if dim >= rank {
            return Err(shape_error(
                "softmax_dim",
                a.0,
                &[],
                format!("dim {dim} is out of range for a tensor of rank {rank}"),
            ));
        }
        if dim + 1 == rank {
            return Op::softmax(a);
        }
        Ok(Op {
            kind: OpKind::SoftmaxDim { dim },
            out_shape: a.0.to_vec(),
            out_dtype: a.1,
        })
    }

    /// `reshape(shape)`: always a view; the element counts must match (R6.11).
    pub(crate) fn reshape(a: Meta<'_>, shape: &[usize]) -> Result<Shaped> {
        let Some(n) = crate::dtype::checked_len(shape, a.1) else {
            return Err(shape_error(
                "reshape",
                a.0,
                shape,
                format!("the shape {shape:?} would hold more than isize::MAX bytes"),
            ));
        };
        let have: usize = a.0.iter().product();
        if n != have {
            return Err(shape_error(
                "reshape",
                a.0,
                shape,
                format!("the new shape has {n} elements, the tensor {have}"),
            ));
        }
        Ok(Shaped::View(shape.to_vec()))
    }

    /// `unsqueeze(dim)`: a size-1 dimension inserted before `dim` (`dim <= rank`); a view.
    pub(crate) fn unsqueeze(a: Meta<'_>, dim: usize) -> Result<Shaped> {
        if dim > a.0.len() {
            return Err(shape_error(
                "unsqueeze",
                a.0,
                &[],
                format!(
                    "dim {dim} is out of range for unsqueeze of a tensor of rank {} (at most {})",
                    a.0.len(),
                    a.0.len()
                ),
            ));
        }
        let mut shape = a.0.to_vec();
        shape.insert(dim, 1);
        Ok(Shaped::View(shape))
    }

    /// `transpose(d0, d1)`: a view when the swap keeps the row-major order of the elements
    /// (equal dims, or every dimension from `d0` to `d1` but one has size 1, or no elements),
    /// else a copy.
    pub(crate) fn transpose(a: Meta<'_>, d0: usize, d1: usize) -> Result<Shaped> {
        let rank = a.0.len();
        if d0 >= rank || d1 >= rank {
            return Err(shape_error(
                "transpose",
                a.0,
                &[],
                format!("dims ({d0}, {d1}) are out of range for a tensor of rank {rank}"),
            ));
        }
        let mut shape = a.0.to_vec();
        shape.swap(d0, d1);
        let (lo, hi) = (d0.min(d1), d0.max(d1));
        let moved = a.0[lo..=hi].iter().filter(|&&d| d != 1).count();
        if moved <= 1 || a.0.contains(&0) {
            return Ok(Shaped::View(shape));
        }
        copy_rank("transpose", a.0)?;
        Ok(Shaped::Copy(Op {
            kind: OpKind::Transpose { d0, d1 },
            out_shape: shape,
            out_dtype: a.1,
        }))
    }

    /// `narrow(dim, start, len)`: indices `start..start + len` of dimension `dim`; the whole
    /// dimension is a view, anything else a copy.
    pub(crate) fn narrow(a: Meta<'_>, dim: usize, start: usize, len: usize) -> Result<Shaped> {
        let rank = a.0.len();
        if dim >= rank {
            return Err(shape_error(
                "narrow",
                a.0,
                &[],
                format!("dim {dim} is out of range for a tensor of rank {rank}"),
            ));
        }
        let size = a.0[dim];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(shape_error(
                "narrow",
                a.0,
                &[],
                format!("start {start} + length {len} exceeds dimension {dim} of size {size}"),
            ));
        }
        let mut shape = a.0.to_vec();
        shape[dim] = len;
        if len == size {
            return Ok(Shaped::View(shape));
        }
        copy_rank("narrow", a.0)?;
        Ok(Shaped::Copy(Op {
            kind: OpKind::Narrow {
                dim,
                start,
                in_len: size,
            },
            out_shape: shape,
            out_dtype: a.1,
        }))
    }

    /// `expand(shape)` by torch's rules: `shape` has at least the input's rank; aligned from the
    /// right, each input dimension equals the new size or is 1; new leading dimensions take any
    /// size. A view when nothing is repeated (same element count), else a copy.
    pub(crate) fn expand(a: Meta<'_>, shape: &[usize]) -> Result<Shaped> {
        let (rank, pad) = (shape.len(), shape.len().checked_sub(a.0.len()));
        let Some(pad) = pad else {
            return Err(shape_error(
                "expand",
                a.0,
                shape,
                format!(
                    "the new shape has rank {rank}, less than the tensor's {}",
                    a.0.len()
                ),
            ));
        };
        let mut mask = 0u64;
        for d in 0..rank {
            let from = if d < pad { 1 } else { a.0[d - pad] };
            if from != shape[d] && from != 1 {
                return Err(shape_error(
                    "expand",
                    a.0,
                    shape,
                    format!(
                        "dimension {} of size {from} can only expand from size 1 (to {})",
                        d - pad,
                        shape[d]
                    ),
                ));
            }
            if from == 1 && d < 64 {
                mask |= 1 << d;
            }
        }
        let Some(n) = crate::dtype::checked_len(shape, a.1) else {
            return Err(shape_error(
                "expand",
                a.0,
                shape,
                format!("the shape {shape:?} would hold more than isize::MAX bytes"),
            ));
        };
        if n == a.0.iter().product::<usize>() {
            return Ok(Shaped::View(shape.to_vec()));
        }
        copy_rank("expand", shape)?;
        Ok(Shaped::Copy(Op {
            kind: OpKind::Expand { mask },
            out_shape: shape.to_vec(),
            out_dtype: a.1,
        }))
    }

    /// The output shape of `cat` of `parts` along `dim`: same rank and dtype, equal sizes off
    /// `dim` (R6.11). Checked for every part up front, so the two-operand steps cannot fail.
    pub(crate) fn cat_shape(parts: &[Meta<'_>], dim: usize) -> Result<Vec<usize>> {
        let Some(first) = parts.first() else {
            return Err(shape_error(
                "cat",
                &[],
                &[],
                "cat needs at least one tensor".into(),
            ));
        };
        let rank = first.0.len();
        if dim >= rank {
            return Err(shape_error(
                "cat",
                first.0,
                &[],
                format!("dim {dim} is out of range for tensors of rank {rank}"),
            ));
        }
        let mut shape = first.0.to_vec();
        for (i, p) in parts.iter().enumerate().skip(1) {
            same_dtype("cat", first.1, p.1)?;
            let same_rest =
                p.0.len() == rank && (0..rank).all(|d| d == dim || p.0[d] == first.0[d]);
            if !same_rest {
                return Err(shape_error(
                    "cat",
                    first.0,
                    p.0,
                    format!(
                        "tensor {i} must match tensor 0 in every dimension but {dim} (and in rank)"
                    ),
                ));
            }
            shape[dim] = shape[dim].checked_add(p.0[dim]).ok_or_else(|| {
                shape_error(
                    "cat",
                    first.0,
                    p.0,
                    format!("the sizes in dimension {dim} overflow"),
                )
            })?;
        }
        if crate::dtype::checked_len(&shape, first.1).is_none() {
            return Err(shape_error(
                "cat",
                first.0,
                &[],
                format!("the output {shape:?} would hold more than isize::MAX bytes"),
            ));
        }
        Ok(shape)
    }

    /// One step of `cat`: `a` then `b` along `dim`.
    pub(crate) fn cat2(a: Meta<'_>, b: Meta<'_>, dim: usize) -> Result<Op> {
        let out_shape = Op::cat_shape(&[a, b], dim)?;
        Ok(Op {
            kind: OpKind::Cat {
                dim,
                split: a.0[dim],
            },
            out_shape,
            out_dtype: a.1,
        })
    }

    /// For a strided-copy op (transpose, narrow, expand): the input's element strides for each
    /// output dimension, written into `strides[..rank]`, and the offset of the first element.
    /// `None` for every other op.
    pub(crate) fn copy_layout(&self, strides: &mut [usize]) -> Option<usize> {
        let out = &self.out_shape;
        let rank = out.len();
        if rank > strides.len() {
            return None;
        }
        let mut input = [0usize; MAX_COPY_RANK];
        let input = &mut input[..rank];
        input.copy_from_slice(out);
        let offset = match self.kind {
            OpKind::Transpose { d0, d1 } => {
                input.swap(d0, d1);
                crate::kernels::contiguous_strides(input, strides);
                strides.swap(d0, d1);
                0
            }
            OpKind::Narrow { dim, start, in_len } => {
                input[dim] = in_len;
                crate::kernels::contiguous_strides(input, strides);
                start * strides[dim]
            }
            OpKind::Expand { mask } => {
                let repeated = |d: usize| mask >> d & 1 == 1;
                for (d, x) in input.iter_mut().enumerate() {
                    if repeated(d) {
                        *x = 1;
                    }
                }
                crate::kernels::contiguous_strides(input, strides);
                for (d, s) in strides[..rank].iter_mut().enumerate() {
                    if repeated(d) {
                        *s = 0;
                    }
                }
                0
            }
            _ => return None,
        };
        Some(offset)
    }
}

impl OpKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OpKind::Binary(op) | OpKind::Broadcast { op, .. } => op.name(),
            OpKind::Scalar { op, .. } => match op {
                BinaryOp::Add => "add_scalar",
                BinaryOp::Sub => "sub_scalar",
                BinaryOp::Mul => "mul_scalar",
                BinaryOp::Div => "div_scalar",
            },
            OpKind::Unary(op) => op.name(),
            OpKind::Reduce(d) => d.op.name(),
            OpKind::Softmax => "softmax",
            OpKind::RmsNorm { .. } => "rms_norm",
            OpKind::Matmul(_) => "matmul",
            OpKind::ToDType(_) => "to_dtype",
            OpKind::TopkIndices { .. } => "topk",
            OpKind::Gather(_) => "gather",
            OpKind::Scatter(_) => "scatter",
            OpKind::IndexSelect(_) => "index_select",
            OpKind::SoftmaxDim { .. } => "softmax_dim",
            OpKind::Transpose { .. } => "transpose",
            OpKind::Narrow { .. } => "narrow",
            OpKind::Expand { .. } => "expand",
            OpKind::Cat { .. } => "cat",
        }
    }
}

/// The checks every index op shares: an `I32` index, `dim < rank` of the data, and (for
/// `gather`/`scatter`) an index of the data's rank whose sizes equal the data's in every other
/// dimension. Returns the geometry around `dim`.
fn index_geometry(
    name: &'static str,
    data: Meta<'_>,
    dim: usize,
    index: Meta<'_>,
    same_rank: bool,
) -> Result<IndexDims> {
    let mismatch = |reason: String| Error::ShapeMismatch {
        op: name,
        lhs: data.0.to_vec(),
        rhs: index.0.to_vec(),
        reason,
    };
    if index.1 != DType::I32 {
        return Err(Error::DTypeMismatch {
            op: name,
            lhs: index.1,
            rhs: DType::I32,
        });
    }
    let rank = data.0.len();
    if dim >= rank {
        return Err(mismatch(format!(
            "dim {dim} is out of range for a tensor of rank {rank}"
        )));
    }
    let idx_len = if same_rank {
        if index.0.len() != rank {
            return Err(mismatch(format!(
                "the index must have the data's rank ({rank}), it has rank {}",
                index.0.len()
            )));
        }
        if let Some(d) = (0..rank).find(|&d| d != dim && index.0[d] != data.0[d]) {
            return Err(mismatch(format!(
                "the index must match the data in every dimension but {dim}; dimension {d} \
                 is {} vs {}",
                index.0[d], data.0[d]
            )));
        }
        index.0[dim]
    } else {
        match index.0 {
            [n] => *n,
            _ => {
                return Err(mismatch(format!(
                    "the index must be 1-D, it has rank {}",
                    index.0.len()
                )));
            }
        }
    };
    Ok(IndexDims {
        outer: data.0[..dim].iter().product(),
        src_len: data.0[dim],
        idx_len,
        inner: data.0[dim + 1..].iter().product(),
    })
}

/// Refuses an `I32` operand of an op that computes (R6.1: `I32` holds indices only).
fn float_only(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::DTypeMismatch {
            op,
            lhs: dtype,
            rhs: DType::F32,
        })
    }
}

fn shape_error(op: &'static str, lhs: &[usize], rhs: &[usize], reason: String) -> Error {
    Error::ShapeMismatch {
        op,
        lhs: lhs.to_vec(),
        rhs: rhs.to_vec(),
        reason,
    }
}

/// A copying shape op walks its strides on the stack: at most [`MAX_COPY_RANK`] dimensions.
fn copy_rank(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_COPY_RANK {
        return Err(shape_error(
            op,
            shape,
            &[],
            format!("{op} copies tensors of rank <= {MAX_COPY_RANK}"),
        ));
    }
    Ok(())
}

fn same_dtype(op: &'static str, lhs: DType, rhs: DType) -> Result<()> {
    if lhs == rhs {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs, rhs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R6.11: shapes align from the right; the mask marks each operand's size-1 dimensions.
    #[test]
    fn broadcast_shape_and_strides() {
        let op = Op::binary(
            BinaryOp::Add,
            (&[4, 1, 5], DType::F32),
            (&[3, 1], DType::F32),
        )
        .unwrap();
        assert_eq!(op.out_shape, [4, 3, 5]);
        // [4,1,5] is size 1 in dim 1; [3,1] padded to [1,3,1] in dims 0 and 2.
        let mask = [0b010, 0b101];
        assert_eq!(
            op.kind,
            OpKind::Broadcast {
                op: BinaryOp::Add,
                mask
            }
        );
        // Identical shapes keep the plain kind.
        let same = Op::binary(BinaryOp::Mul, (&[2, 3], DType::F16), (&[2, 3], DType::F16));
        assert_eq!(same.unwrap().kind, OpKind::Binary(BinaryOp::Mul));
        // A zero-sized dim broadcasts against 1 only.
        let z = Op::binary(BinaryOp::Sub, (&[0, 3], DType::F32), (&[1], DType::F32)).unwrap();
        assert_eq!(z.out_shape, [0, 3]);
        assert!(Op::binary(BinaryOp::Sub, (&[0], DType::F32), (&[2], DType::F32)).is_err());
    }

    /// R6.4: reduce geometry, keepdim, and the refusals.
    #[test]
    fn reduce_shapes() {
        let op = Op::reduce(ReduceOp::Sum, (&[2, 3, 4], DType::F32), 1, false).unwrap();
        assert_eq!(op.out_shape, [2, 4]);
        let dims = ReduceDims {
            op: ReduceOp::Sum,
            outer: 2,
            len: 3,
            inner: 4,
        };
        assert_eq!(op.kind, OpKind::Reduce(dims));
        let kept = Op::reduce(ReduceOp::Mean, (&[2, 3, 4], DType::F32), 2, true).unwrap();
        assert_eq!(kept.out_shape, [2, 3, 1]);
        assert!(Op::reduce(ReduceOp::Max, (&[2, 3], DType::F32), 2, false).is_err());
        assert!(Op::reduce(ReduceOp::Max, (&[2, 0], DType::F32), 1, false).is_err());
        assert!(Op::reduce(ReduceOp::Sum, (&[2, 0], DType::F32), 1, false).is_ok());
    }

    /// R6.11: which shape ops are copy-free views and which copy, and their copy layouts.
    #[test]
    fn views_and_copies() {
        let m = (&[2usize, 1, 3][..], DType::F32);
        let view = |r: Result<Shaped>| match r.unwrap() {
            Shaped::View(s) => s,
            Shaped::Copy(op) => panic!("expected a view, got {op:?}"),
        };
        let copy = |r: Result<Shaped>| match r.unwrap() {
            Shaped::Copy(op) => op,
            Shaped::View(s) => panic!("expected a copy, got a view {s:?}"),
        };
        assert_eq!(view(Op::reshape(m, &[3, 2])), [3, 2]);
        assert_eq!(view(Op::unsqueeze(m, 3)), [2, 1, 3, 1]);
        // Swapping around a size-1 dim keeps the order only when at most one size > 1 moves.
        assert_eq!(view(Op::transpose(m, 0, 1)), [1, 2, 3]);
        assert_eq!(view(Op::transpose(m, 1, 2)), [2, 3, 1]);
        let t = copy(Op::transpose(m, 0, 2));
        let mut strides = [0; MAX_COPY_RANK];
        assert_eq!(t.copy_layout(&mut strides), Some(0));
        assert_eq!(
            (t.out_shape.as_slice(), &strides[..3]),
            (&[3, 1, 2][..], &[1, 3, 3][..])
        );
        assert_eq!(view(Op::narrow(m, 2, 0, 3)), [2, 1, 3]);
        let n = copy(Op::narrow(m, 2, 1, 2));
        assert_eq!(n.copy_layout(&mut strides), Some(1));
        assert_eq!(&strides[..3], &[3, 3, 1]);
        assert_eq!(view(Op::expand(m, &[1, 2, 1, 3])), [1, 2, 1, 3]);
        let e = copy(Op::expand(m, &[4, 2, 5, 3]));
        assert_eq!(e.kind, OpKind::Expand { mask: 0b0101 });
        assert_eq!(e.copy_layout(&mut strides), Some(0));
        assert_eq!(&strides[..4], &[0, 3, 0, 1]);
        assert_eq!(
            Op::softmax_dim(m, 2).unwrap().kind,
            OpKind::Softmax,
            "the last dim is softmax itself"
        );
        assert_eq!(
            Op::softmax_dim(m, 0).unwrap().kind,
            OpKind::SoftmaxDim { dim: 0 }
        );
        let c = Op::cat2(m, (&[2, 4, 3], DType::F32), 1).unwrap();
        assert_eq!(
            (c.out_shape.as_slice(), c.kind),
            (&[2, 5, 3][..], OpKind::Cat { dim: 1, split: 1 })
        );
        // Too many dims for a copy is an error, not a panic.
        let mut deep = vec![1usize; MAX_COPY_RANK + 1];
        deep[..2].copy_from_slice(&[2, 2]);
        assert!(Op::transpose((&deep, DType::F32), 0, 1).is_err());
        // A view of any rank is fine.
        assert_eq!(view(Op::reshape((&deep, DType::F32), &[4])), [4]);
        assert_eq!(
            view(Op::transpose((&deep, DType::F32), 2, 3)).len(),
            deep.len()
        );
    }
}
