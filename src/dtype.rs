//! Element types: [`DType`], and the [`Element`] trait that lets one generic kernel serve
//! `f32`, `f16` and `bf16`.
//!
//! Conversions follow semantics R6.1: to `F16`/`BF16` round to nearest with ties to even,
//! overflow becomes ±inf, NaN stays NaN, subnormals are kept; to `F32` is exact. The `half` crate
//! does the bit work for scalars. Slices go through `kernels`: f16 with F16C on x86-64 (one CPU
//! check per slice instead of one per 8 elements), bf16 with loops that vectorize; both give
//! `half`'s bits.

use std::fmt;
use std::str::FromStr;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::Error;
use crate::kernels::bf16 as bf16_slices;
use crate::kernels::f16c;

/// The element type of a tensor.
///
/// ```
/// use tagstream::DType;
/// assert_eq!("bf16".parse::<DType>().unwrap(), DType::BF16);
/// assert!("f64".parse::<DType>().is_err());
/// assert_eq!(DType::F16.size_in_bytes(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (8 exponent bits, 7 mantissa bits).
    BF16,
    /// 32-bit signed integers, for indices only (R6.1): made by
    /// [`topk`](crate::Tensor::topk) or [`from_vec`](crate::Tensor::from_vec), read by the index
    /// ops; every other op refuses it with [`Error::DTypeMismatch`].
    I32,
}

impl DType {
    /// All dtypes, in a fixed order.
    pub const ALL: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::I32];

    /// The floating-point dtypes, the ones arithmetic ops take.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Whether this is a floating-point dtype (every dtype but [`I32`](DType::I32)).
    pub fn is_float(self) -> bool {
        self != DType::I32
    }

    /// The lower-case name (`f32`, `f16`, `bf16`, `i32`), as accepted by [`str::parse`].
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Rounds an f32 value to this dtype and back (R6.1), e.g. to build reference values. For
    /// [`I32`](DType::I32): toward zero, saturating at the `i32` range, NaN to 0 (Rust's `as`).
    pub fn round_f32(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
            DType::I32 => x as i32 as f32,
        }
    }

    /// The largest finite value.
    pub fn max_finite(self) -> f32 {
        match self {
            DType::F32 => f32::MAX,
            DType::F16 => f16::MAX.to_f32(),
            DType::BF16 => bf16::MAX.to_f32(),
            DType::I32 => i32::MAX as f32,
        }
    }

    /// Unit roundoff of this dtype as an output type (`u_out` of R6.7).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F32 | DType::I32 => 0.0,
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
        }
    }

    /// Half the smallest positive subnormal (`η_out` of R6.7).
    pub fn half_min_subnormal(self) -> f64 {
        match self {
            DType::F32 | DType::I32 => 0.0,
            DType::F16 => 2f64.powi(-25),
            DType::BF16 => 2f64.powi(-134),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "i32" | "int32" => Ok(DType::I32),
            _ => Err(Error::UnknownDType {
                name: s.to_string(),
            }),
        }
    }
}

/// A storage element type. Kernels are generic over it and compute in f32 (R6.2).
///
/// Conversions go through whole slices so that `half` can use vector instructions.
pub(crate) trait Element: Copy + Send + Sync + Default + fmt::Debug + 'static {
    /// Rounding to nearest, ties to even (R6.1).
    fn from_f32(x: f32) -> Self;
    /// `dst[i] = src[i] as f32`, exact. Slices have equal length.
    fn load_f32(src: &[Self], dst: &mut [f32]);
    /// `dst[i] = round(src[i])`. Slices have equal length.
    fn store_f32(src: &[f32], dst: &mut [Self]);
    /// The slice itself when `Self` is `f32`, so kernels can skip the conversion round trip.
    #[inline]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    /// Mutable counterpart of [`as_f32`](Element::as_f32).
    #[inline]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    /// The slice itself when `Self` is `f16`, so kernels can take the fused f16 path.
    #[inline]
    fn as_f16(_: &[Self]) -> Option<&[f16]> {
        None
    }
    /// Mutable counterpart of [`as_f16`](Element::as_f16).
    #[inline]
    fn as_f16_mut(_: &mut [Self]) -> Option<&mut [f16]> {
        None
    }
    /// The slice itself when `Self` is `bf16`, so matmul can take the bf16 dot-product path.
    #[inline]
    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }
    /// Mutable counterpart of [`as_bf16`](Element::as_bf16).
    #[inline]
    fn as_bf16_mut(_: &mut [Self]) -> Option<&mut [bf16]> {
        None
    }
}

impl Element for f32 {
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline]
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    #[inline]
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline]
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl Element for f16 {
    #[inline]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline]
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        if !f16c::f16_to_f32(src, dst) {
            src.convert_to_f32_slice(dst);
        }
    }
    #[inline]
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        if !f16c::f32_to_f16(src, dst) {
            dst.convert_from_f32_slice(src);
        }
    }
    #[inline]
    fn as_f16(s: &[Self]) -> Option<&[f16]> {
        Some(s)
    }
    #[inline]
    fn as_f16_mut(s: &mut [Self]) -> Option<&mut [f16]> {
        Some(s)
    }
}

impl Element for bf16 {
    #[inline]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    #[inline]
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        bf16_slices::bf16_to_f32(src, dst);
    }
    #[inline]
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        bf16_slices::f32_to_bf16(src, dst);
    }
    #[inline]
    fn as_bf16(s: &[Self]) -> Option<&[bf16]> {
        Some(s)
    }
    #[inline]
    fn as_bf16_mut(s: &mut [Self]) -> Option<&mut [bf16]> {
        Some(s)
    }
}

/// Number of elements of `shape`, or `None` if it overflows or its byte size in `dtype`
/// exceeds `isize::MAX` (the most any allocation can hold). A zero dimension anywhere makes
/// the tensor empty, whatever the other dimensions.
pub(crate) fn checked_len(shape: &[usize], dtype: DType) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bytes = n.checked_mul(dtype.size_in_bytes())?;
    (bytes <= isize::MAX as usize).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_reject_unknown() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        let err = "int8".parse::<DType>().unwrap_err();
        assert_eq!(
            err,
            Error::UnknownDType {
                name: "int8".into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"int8\"") && msg.contains("f32, f16, bf16, i32"),
            "{msg}"
        );
    }

    #[test]
    fn conversions_follow_r6_1() {
        // Overflow → inf, NaN stays NaN, subnormals kept, ties to even.
        assert_eq!(DType::F16.round_f32(1e6), f32::INFINITY);
        assert_eq!(DType::F16.round_f32(-1e6), f32::NEG_INFINITY);
        assert!(DType::BF16.round_f32(f32::NAN).is_nan());
        let sub = 2f32.powi(-24); // smallest f16 subnormal
        assert_eq!(DType::F16.round_f32(sub), sub);
        // 1 + 2^-11 is exactly between 1 and 1 + 2^-10 in f16: ties to even gives 1.
        assert_eq!(DType::F16.round_f32(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(DType::BF16.round_f32(1.0 + 2f32.powi(-8)), 1.0);
        // Slice conversions agree with scalar ones.
        let src: Vec<f32> = (0..37).map(|i| (i as f32 - 18.3) * 0.731).collect();
        let mut h = vec![f16::ZERO; src.len()];
        f16::store_f32(&src, &mut h);
        let mut back = vec![0.0; src.len()];
        f16::load_f32(&h, &mut back);
        for (x, y) in src.iter().zip(&back) {
            assert_eq!(DType::F16.round_f32(*x), *y);
        }
    }
}
