//! The compute kernels: pure functions on slices.
//!
//! Owns elementwise ops, dtype conversion, softmax and rms_norm, reductions, the layout copies of
//! the shape ops (generic over any `Copy` element), and matmul (the `gemm` crate, a small-`m`
//! kernel, and a bf16 dot-product kernel). Every function writes into an `out` slice passed in and allocates at most bounded
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

pub(crate) mod bf16;
mod elementwise;
pub(crate) mod f16c;
mod index;
mod kind;
mod layout;
mod matmul;
mod matmul_bf16;
mod matmul_small;
mod reduce;
pub(crate) mod scalar;

pub(crate) use elementwise::{binary, binary_broadcast, binary_scalar, convert, in_pieces, unary};
// `pub` for `reference`, which re-exports them when the `workloads` feature is on.
pub(crate) use index::{gather, index_select, scatter, topk_indices};
#[cfg_attr(not(any(test, feature = "workloads")), allow(unreachable_pub))]
pub use kind::{BinaryOp, IndexDims, MatmulDims, ReduceDims, ReduceOp, UnaryOp};
pub(crate) use layout::{MAX_RANK, cat2, contiguous_strides, strided_copy};
pub(crate) use matmul::matmul;
pub(crate) use reduce::{reduce, rms_norm, softmax, softmax_strided};

/// Whether some kernel runs in the kernels' thread pool now (a racy hint: speed only).
pub(crate) fn pool_busy() -> bool {
    matmul::gemm_pool().is_some_and(|pool| pool.is_busy())
}

#[cfg(test)]
mod tests;
