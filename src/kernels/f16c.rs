//! f16 conversions and elementwise kernels compiled for F16C, chosen at run time (x86-64).
//!
//! # Why this exists
//! `half`'s slice conversions (2.7) ask the CPU-feature cache on every call, then convert 8
//! elements per call of an out-of-line `#[target_feature]` function (it cannot inline into
//! code compiled without F16C). A 16-element f16 op made three such slice calls (widen `a`,
//! widen `b`, round `out`), six conversion calls in all, plus the f32 staging buffers between
//! them. Profiled on the replay of a 1000-op chain of 16-element f16 ops, that was most of the
//! gap to f32 (about 80–120 ns per op against 48 ns).
//!
//! # Strategy
//! Each entry point checks the CPU once ([`std::arch::is_x86_feature_detected`], a cached
//! load), then calls a function compiled with `avx,f16c` in which the whole loop inlines: 8
//! lanes are widened with `vcvtph2ps`, computed in f32 registers with the very scalar functions
//! of [`super::scalar`] (or `+ - * /`), and rounded with `vcvtps2ph`. A tail shorter than 8 is
//! padded with zeros, computed, and only its own lanes are stored. Without F16C (or off x86-64)
//! the entry points return `false` and the caller takes the portable path.
//!
//! # Numerics
//! Bit-identical to the portable path (R6.6): `vcvtph2ps` is exact, and `vcvtps2ph` with
//! immediate 0 rounds to nearest with ties to even regardless of MXCSR (R6.1), overflows to ±inf,
//! keeps subnormals and quiets NaNs keeping the payload's top bits, exactly as `half` does
//! (which uses the same instructions when F16C is present, and a bit-exact software version
//! otherwise). The f32 arithmetic in between is the same IEEE operations, unfused, so compiling
//! it with AVX changes no bits. Tested exhaustively over all f16 inputs in `tests.rs`.

use half::f16;

use super::kind::{BinaryOp, UnaryOp};

/// Whether the CPU can run this module's kernels.
#[inline]
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[i] = src[i] as f32` (exact). Returns `false`, writing nothing, when the CPU lacks F16C.
#[inline]
pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) -> bool {
    assert_eq!(src.len(), dst.len(), "f16 widening: slice lengths differ");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `available()` just checked that the CPU has AVX and F16C, the only
        // precondition of calling a `#[target_feature(enable = "avx,f16c")]` function.
        unsafe { x86::to_f32(src, dst) };
        return true;
    }
    false
}

/// `dst[i] = round(src[i])` (R6.1). Returns `false`, writing nothing, when the CPU lacks F16C.
#[inline]
pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) -> bool {
    assert_eq!(src.len(), dst.len(), "f16 rounding: slice lengths differ");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `f16_to_f32`: AVX and F16C were detected just above.
        unsafe { x86::from_f32(src, dst) };
        return true;
    }
    false
}

/// `out[i] = round(a[i] op b[i])` (slices of equal length). Returns `false`, writing nothing,
/// when the CPU lacks F16C.
#[inline]
pub(super) fn binary(op: BinaryOp, a: &[f16], b: &[f16], out: &mut [f16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `f16_to_f32`: AVX and F16C were detected just above.
        unsafe { x86::binary(op, a, b, out) };
        return true;
    }
    let _ = (op, a, b, out);
    false
}

/// `out[i] = round(op(a[i]))` (slices of equal length). Returns `false`, writing nothing, when
/// the CPU lacks F16C.
#[inline]
pub(super) fn unary(op: UnaryOp, a: &[f16], out: &mut [f16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `f16_to_f32`: AVX and F16C were detected just above.
        unsafe { x86::unary(op, a, out) };
        return true;
    }
    let _ = (op, a, out);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The loops, compiled with AVX and F16C. Every function here is safe in itself (lanes
    //! move through `bytemuck` casts, no pointers); only calling one from code compiled
    //! without those features needs the CPU check, which the entry points above make.

    use std::arch::x86_64::{
        __m128i, __m256, _MM_FROUND_TO_NEAREST_INT, _mm256_cvtph_ps, _mm256_cvtps_ph,
    };

    use half::f16;

    use super::super::kind::{BinaryOp, UnaryOp};
    use super::super::scalar;

    /// Lanes per conversion instruction.
    const LANES: usize = 8;

    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn widen(h: [f16; LANES]) -> [f32; LANES] {
        let v: __m128i = bytemuck::cast(h);
        bytemuck::cast(_mm256_cvtph_ps(v))
    }

    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn narrow(x: [f32; LANES]) -> [f16; LANES] {
        let v: __m256 = bytemuck::cast(x);
        // Immediate 0: round to nearest, ties to even, whatever MXCSR says (R6.1).
        bytemuck::cast(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v))
    }

    /// `src` zero-padded to a full block.
    #[inline]
    fn pad<T: Copy + Default>(src: &[T]) -> [T; LANES] {
        let mut block = [T::default(); LANES];
        block[..src.len()].copy_from_slice(src);
        block
    }

    #[target_feature(enable = "avx,f16c")]
    pub(super) fn to_f32(src: &[f16], dst: &mut [f32]) {
        let (sb, st) = src.as_chunks::<LANES>();
        let (db, dt) = dst.as_chunks_mut::<LANES>();
        for (s, d) in sb.iter().zip(db) {
            *d = widen(*s);
        }
        if !st.is_empty() {
            dt.copy_from_slice(&widen(pad(st))[..st.len()]);
        }
    }

    #[target_feature(enable = "avx,f16c")]
    pub(super) fn from_f32(src: &[f32], dst: &mut [f16]) {
        let (sb, st) = src.as_chunks::<LANES>();
        let (db, dt) = dst.as_chunks_mut::<LANES>();
        for (s, d) in sb.iter().zip(db) {
            *d = narrow(*s);
        }
        if !st.is_empty() {
            dt.copy_from_slice(&narrow(pad(st))[..st.len()]);
        }
    }

    /// `out[i] = round(f(a[i], b[i]))`, 8 lanes at a time.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn map2(a: &[f16], b: &[f16], out: &mut [f16], f: impl Fn(f32, f32) -> f32) {
        assert!(
            a.len() == out.len() && b.len() == out.len(),
            "f16 binary kernel: operand lengths differ"
        );
        let lanes = |x: [f16; LANES], y: [f16; LANES]| {
            let (x, y) = (widen(x), widen(y));
            let mut r = [0f32; LANES];
            for i in 0..LANES {
                r[i] = f(x[i], y[i]);
            }
            narrow(r)
        };
        let (ab, at) = a.as_chunks::<LANES>();
        let (bb, bt) = b.as_chunks::<LANES>();
        let (ob, ot) = out.as_chunks_mut::<LANES>();
        for ((x, y), o) in ab.iter().zip(bb).zip(ob) {
            *o = lanes(*x, *y);
        }
        if !ot.is_empty() {
            let n = ot.len();
            ot.copy_from_slice(&lanes(pad(at), pad(bt))[..n]);
        }
    }

    /// `out[i] = round(f(a[i]))`, 8 lanes at a time.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn map1(a: &[f16], out: &mut [f16], f: impl Fn(f32) -> f32) {
        assert_eq!(
            a.len(),
            out.len(),
            "f16 unary kernel: operand length differs from output"
        );
        let lanes = |x: [f16; LANES]| {
            let x = widen(x);
            let mut r = [0f32; LANES];
            for i in 0..LANES {
                r[i] = f(x[i]);
            }
            narrow(r)
        };
        let (ab, at) = a.as_chunks::<LANES>();
        let (ob, ot) = out.as_chunks_mut::<LANES>();
        for (x, o) in ab.iter().zip(ob) {
            *o = lanes(*x);
        }
        if !ot.is_empty() {
            let n = ot.len();
            ot.copy_from_slice(&lanes(pad(at))[..n]);
        }
    }

    #[target_feature(enable = "avx,f16c")]
    pub(super) fn binary(op: BinaryOp, a: &[f16], b: &[f16], out: &mut [f16]) {
        match op {
            BinaryOp::Add => map2(a, b, out, |x, y| x + y),
            BinaryOp::Sub => map2(a, b, out, |x, y| x - y),
            BinaryOp::Mul => map2(a, b, out, |x, y| x * y),
            BinaryOp::Div => map2(a, b, out, |x, y| x / y),
        }
    }

    #[target_feature(enable = "avx,f16c")]
    pub(super) fn unary(op: UnaryOp, a: &[f16], out: &mut [f16]) {
        match op {
            UnaryOp::Relu => map1(a, out, scalar::relu),
            UnaryOp::Silu => map1(a, out, scalar::silu),
            UnaryOp::Gelu => map1(a, out, scalar::gelu),
            UnaryOp::Exp => map1(a, out, scalar::exp),
        }
    }
}
