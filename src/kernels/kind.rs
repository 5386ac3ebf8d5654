//! What a kernel computes: the op kinds and matmul dimensions every kernel file shares.
//!
//! A leaf of `kernels`: the kernel files import their kinds from here, not from `kernels`
//! itself, so no kernel file depends on the module that re-exports it.
//!
//! The kinds are `pub` for `reference`, which re-exports them with the `workloads` feature;
//! without it they are reachable from nowhere outside the crate.
#![cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]

/// An elementwise op of two tensors of equal shape and dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
}

impl BinaryOp {
    /// The op's name as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }

    /// The op on one pair of f32 (the definition every kernel's bits are checked against, in
    /// `reference` and the tests; the kernels keep one loop per op, so that each vectorises).
    #[cfg(any(test, feature = "workloads"))]
    pub(crate) fn apply_f32(self, x: f32, y: f32) -> f32 {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
        }
    }
}

/// An elementwise op of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `max(x, 0)`, NaN stays NaN.
    Relu,
    /// `x / (1 + exp(-x))`
    Silu,
    /// `0.5·x·(1 + erf(x/√2))`
    Gelu,
    /// `exp(x)`
    Exp,
}

impl UnaryOp {
    /// The op's name as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Relu => "relu",
            UnaryOp::Silu => "silu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Exp => "exp",
        }
    }
}

/// A reduction over one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum, left to right in f32.
    Sum,
    /// The sum divided by the reduced length.
    Mean,
    /// The largest value; NaN propagates.
    Max,
}

impl ReduceOp {
    /// The op's name as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
        }
    }
}

/// A reduction of a tensor seen as `[outer, len, inner]` over its middle dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReduceDims {
    /// What is computed.
    pub op: ReduceOp,
    /// Product of the dimensions before the reduced one.
    pub outer: usize,
    /// The reduced dimension's size.
    pub len: usize,
    /// Product of the dimensions after the reduced one.
    pub inner: usize,
}

/// The dimensions of a (batched) matrix product: `[batch, m, k] × [batch?, k, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDims {
    /// Number of products (1 for a plain 2-D matmul).
    pub batch: usize,
    /// Rows of the left operand and of the output.
    pub m: usize,
    /// The reduced dimension.
    pub k: usize,
    /// Columns of the right operand and of the output.
    pub n: usize,
    /// Whether the right operand has its own batch dimension (`[b,k,n]`) or is shared (`[k,n]`).
    pub rhs_batched: bool,
}

/// Elements per conversion chunk: 4 KiB of f32 per buffer, so a chunk's inputs and output stay
/// in L1 while f16/bf16 go through f32.
pub(crate) const CHUNK: usize = 1024;

/// The geometry of an index op (`gather`, `scatter`, `index_select`): the data tensor seen as
/// `[outer, src_len, inner]` around the indexed dimension, the index (and output) selecting
/// `idx_len` positions along it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexDims {
    /// Product of the dimensions before the indexed one.
    pub outer: usize,
    /// The indexed dimension's size in the data tensor: every index must be in `0..src_len`.
    pub src_len: usize,
    /// The indexed dimension's size in the index (and the output of `gather`/`index_select`).
    pub idx_len: usize,
    /// Product of the dimensions after the indexed one.
    pub inner: usize,
}
