//! The scalar f32 math shared by the kernels and the serial reference (R6.5): kernels call these
//! very functions in their loops, which is what makes elementwise results bit-exact (R6.6).

use std::f32::consts::FRAC_1_SQRT_2;

/// `x` if `x > 0`, else `+0`; NaN stays NaN.
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() { x } else { 0.0 }
}

/// `exp(x)` in plain f32 arithmetic with no branches and no library call, so loops over it
/// vectorize (even with only SSE2) and the serial reference computes the very same bits.
///
/// Strategy: `x = k·ln2 + r` with `k = round(x·log2 e)` and `|r| ≤ ln2/2` (Cody–Waite: `ln2` split
/// in a 15-bit head, so `k·LN2_HI` is exact for `|k| < 512`, and a tail); `e^r` by its degree-7
/// Taylor polynomial (truncation below 6e-9 relative); then `·2^k`, applied as two factors
/// `2^(k/2)`, `2^(k−k/2)` that are both normal floats, so a subnormal result is rounded once.
/// Error: about 2 ulp, inside R6.10's `2^-21` relative bound (tested over the whole finite range).
/// `x` is clamped to `[-104, 89]` first: below, the result rounds to `+0`; above, to `+inf`;
/// NaN passes through the clamp and stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0.693145751953125, 15 significant bits
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer (ties to even) for
    // |v| < 2^22, with adds only (`round_ties_even` needs SSE4.1 to vectorize).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-104.0, 89.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // k is in [-150, 129] here (NaN casts to 0, and then p is NaN anyway).
    let ki = k as i32;
    let k1 = ki >> 1;
    let k2 = ki - k1;
    p * pow2(k1) * pow2(k2)
}

/// `2^n` for `n` in `[-126, 127]`, built from its exponent bits.
#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
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
