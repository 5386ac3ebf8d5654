//! The compute kernels: pure functions on slices.
//!
//! Owns elementwise ops, dtype conversion, softmax and rms_norm, and matmul (through the `gemm`
//! crate). Every function writes into an `out` slice passed in and allocates at most bounded
//! scratch. Kernels know nothing of streams, tensors or errors: operands were validated before
//! the op was issued, so a length mismatch here is a tagstream bug and panics with a message
//! (the stream worker turns a panic into `Error::ExecutionFailed`).
//!
//! Numerics (semantics §6): f16/bf16 inputs are widened to f32 exactly, computed in f32 and
//! rounded once (R6.2, R6.3); on x86-64 with F16C, f16 conversions and f16 elementwise ops
//! run in [`f16c`], and bf16 conversions are the vectorizing loops of [`bf16`](mod@bf16), with
//! the same bits as `half`'s. Elementwise kernels run exactly the scalar functions of
//! [`scalar`], so they equal the serial reference bit for bit (R6.6). Reductions use a fixed
//! number of partial sums combined in a fixed order, and matmul splits only output elements
//! across threads, so bits depend on shapes only (R6.4).

mod bf16;
mod elementwise;
mod f16c;
mod matmul;
mod reduce;
pub(crate) mod scalar;

pub(crate) use bf16::{bf16_to_f32, f32_to_bf16};
pub(crate) use elementwise::{binary, convert, unary};
pub(crate) use f16c::{f16_to_f32, f32_to_f16};
pub(crate) use matmul::matmul;
pub(crate) use reduce::{rms_norm, softmax};

/// An elementwise op of two tensors of equal shape and dtype.
// `pub` for `reference`, which re-exports it when the `workloads` feature is on.
#[cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]
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

#[cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]
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
}

/// An elementwise op of one tensor.
#[cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]
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

#[cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]
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

/// The dimensions of a (batched) matrix product: `[batch, m, k] × [batch?, k, n]`.
#[cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]
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

#[cfg(test)]
mod tests;
