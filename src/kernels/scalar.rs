//! The scalar f32 math shared by the kernels and the serial reference (R6.5): kernels call these
//! very functions in their loops, which is what makes elementwise results bit-exact (R6.6).

use std::f32::consts::FRAC_1_SQRT_2;

/// `x` if `x > 0`, else `+0`; NaN stays NaN.
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() { x } else { 0.0 }
}

/// `exp(x)` (the platform's correctly-rounded-or-close `expf`, R6.10).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    x.exp()
}

/// `x / (1 + exp(-x))`.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `0.5·x·(1 + erf(x/√2))`, computed as `0.5·x·erfc(−x/√2)`: the same function, but `erfc`
/// keeps full relative accuracy for negative `x`, where `1 + erf` would cancel (R6.10).
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * libm::erfcf(-x * FRAC_1_SQRT_2)
}
