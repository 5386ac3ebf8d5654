//! The serial reference of semantics R6.5, and the tolerance checks of R6.6–R6.9.
//!
//! Single-threaded and single-stream: each function evaluates its formula one element at a time
//! in f32 (the matmul bound in f64), using the same scalar `exp`/`erfc` as the kernels, and
//! rounds the result to the output dtype. Inputs are host values already representable in that
//! dtype (e.g. from [`Tensor::to_vec_f32`](crate::Tensor::to_vec_f32)). Tests, the CLI and users
//! compare runtime outputs against it.
//!
//! ```
//! use tagstream::reference::{self, BinaryOp};
//! use tagstream::DType;
//! let y = reference::binary(BinaryOp::Add, &[1.0, 65504.0], &[2.0, 65504.0], DType::F16);
//! assert_eq!(y, vec![3.0, f32::INFINITY]); // rounded to f16: overflow becomes inf (R6.1)
//! ```

use crate::kernels::scalar;
pub use crate::kernels::{BinaryOp, IndexDims, MatmulDims, ReduceDims, ReduceOp, UnaryOp};
use crate::tensor::DType;

/// `a op b` elementwise, rounded to `dtype`.
pub fn binary(op: BinaryOp, a: &[f32], b: &[f32], dtype: DType) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| dtype.round_f32(op.apply_f32(x, y)))
        .collect()
}

/// A reduction of `a` (seen as `[outer, len, inner]`) over its middle dimension, one output
/// element at a time, folding left to right in f32 and rounding to `dtype` (R6.4). An empty sum
/// is 0 and an empty mean NaN.
pub fn reduce(a: &[f32], dims: ReduceDims, dtype: DType) -> Vec<f32> {
    let ReduceDims {
        op,
        outer,
        len,
        inner,
    } = dims;
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let x = |j: usize| a[(o * len + j) * inner + i];
            let v = match op {
                _ if len == 0 => {
                    if op == ReduceOp::Mean {
                        f32::NAN
                    } else {
                        0.0
                    }
                }
                ReduceOp::Sum | ReduceOp::Mean => {
                    let s = (1..len).fold(x(0), |s, j| s + x(j));
                    if op == ReduceOp::Mean {
                        s / len as f32
                    } else {
                        s
                    }
                }
                ReduceOp::Max => (1..len).fold(x(0), |m, j| {
                    let y = x(j);
                    if y > m || y.is_nan() { y } else { m }
                }),
            };
            out.push(dtype.round_f32(v));
        }
    }
    out
}

/// `op(a)` elementwise, rounded to `dtype`.
pub fn unary(op: UnaryOp, a: &[f32], dtype: DType) -> Vec<f32> {
    let f = match op {
        UnaryOp::Relu => scalar::relu,
        UnaryOp::Silu => scalar::silu,
        UnaryOp::Gelu => scalar::gelu,
        UnaryOp::Exp => scalar::exp,
    };
    a.iter().map(|&x| dtype.round_f32(f(x))).collect()
}

/// Softmax over rows of length `n` with plain left-to-right sums, rounded to `dtype`.
pub fn softmax(a: &[f32], n: usize, dtype: DType) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(a.len());
    for row in a.chunks_exact(n) {
        let m = row.iter().fold(
            f32::NEG_INFINITY,
            |m, &x| if x > m || x.is_nan() { x } else { m },
        );
        let mut s = 0f32;
        for &x in row {
            s += scalar::exp(x - m);
        }
        out.extend(row.iter().map(|&x| dtype.round_f32(scalar::exp(x - m) / s)));
    }
    out
}

/// Softmax of `a` (shape `shape`) over dimension `dim`, one row of that dimension at a time with
/// the formula and plain left-to-right sums of [`softmax`], rounded to `dtype`.
pub fn softmax_dim(a: &[f32], shape: &[usize], dim: usize, dtype: DType) -> Vec<f32> {
    let len = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let mut out = vec![0f32; a.len()];
    if len == 0 || inner == 0 {
        return out;
    }
    for block in 0..a.len() / (len * inner) {
        for i in 0..inner {
            let at = |j: usize| block * len * inner + j * inner + i;
            let row: Vec<f32> = (0..len).map(|j| a[at(j)]).collect();
            for (j, y) in softmax(&row, len, dtype).into_iter().enumerate() {
                out[at(j)] = y;
            }
        }
    }
    out
}

/// Row-major index of each element of `shape`, one at a time (the reference's loop order).
fn indices(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let n: usize = shape.iter().product();
    (0..n).map(move |mut flat| {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
        idx
    })
}

/// Row-major offset of `idx` in `shape`.
fn offset(shape: &[usize], idx: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |o, (&i, &d)| o * d + i)
}

/// `a` (shape `shape`) with dimensions `d0` and `d1` swapped, element by element.
pub fn transpose(a: &[f32], shape: &[usize], d0: usize, d1: usize) -> Vec<f32> {
    let mut out_shape = shape.to_vec();
    out_shape.swap(d0, d1);
    indices(&out_shape)
        .map(|mut idx| {
            idx.swap(d0, d1);
            a[offset(shape, &idx)]
        })
        .collect()
}

/// Indices `start..start + len` of dimension `dim` of `a` (shape `shape`).
pub fn narrow(a: &[f32], shape: &[usize], dim: usize, start: usize, len: usize) -> Vec<f32> {
    let mut out_shape = shape.to_vec();
    out_shape[dim] = len;
    indices(&out_shape)
        .map(|mut idx| {
            idx[dim] += start;
            a[offset(shape, &idx)]
        })
        .collect()
}

/// `a` (shape `shape`) repeated to `to` by torch's expand rules (aligned from the right; size-1
/// dimensions and new leading ones repeat).
pub fn expand(a: &[f32], shape: &[usize], to: &[usize]) -> Vec<f32> {
    let pad = to.len() - shape.len();
    indices(to)
        .map(|idx| {
            let src: Vec<usize> = (0..shape.len())
                .map(|d| if shape[d] == 1 { 0 } else { idx[d + pad] })
                .collect();
            a[offset(shape, &src)]
        })
        .collect()
}

/// `parts` (each `(values, shape)`) joined along `dim`, element by element.
pub fn cat(parts: &[(&[f32], &[usize])], dim: usize) -> Vec<f32> {
    let mut out_shape = parts[0].1.to_vec();
    out_shape[dim] = parts.iter().map(|p| p.1[dim]).sum();
    indices(&out_shape)
        .map(|mut idx| {
            let mut part = 0;
            while idx[dim] >= parts[part].1[dim] {
                idx[dim] -= parts[part].1[dim];
                part += 1;
            }
            parts[part].0[offset(parts[part].1, &idx)]
        })
        .collect()
}

/// RMS norm over rows of length `n` with plain left-to-right sums, rounded to `dtype`.
pub fn rms_norm(a: &[f32], w: &[f32], eps: f32, n: usize, dtype: DType) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(a.len());
    for row in a.chunks_exact(n) {
        let mut s = 0f32;
        for &x in row {
            s += x * x;
        }
        let d = (s / n as f32 + eps).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(&x, &wi)| dtype.round_f32(x / d * wi)),
        );
    }
    out
}

/// The exact product `c*` (f64) and `|A|·|B|` for output element `(b, i, j)`.
fn exact_entry(a: &[f32], b: &[f32], d: MatmulDims, bt: usize, i: usize, j: usize) -> (f64, f64) {
    let a_off = bt * d.m * d.k + i * d.k;
    let b_off = if d.rhs_batched { bt * d.k * d.n } else { 0 };
    let (mut s, mut abs) = (0f64, 0f64);
    for p in 0..d.k {
        let x = f64::from(a[a_off + p]) * f64::from(b[b_off + p * d.n + j]);
        s += x;
        abs += x.abs();
    }
    (s, abs)
}

/// R6.9 check of `c` (kernel output as f32) against the exact f64 product of `a` and `b`.
///
/// Each element must satisfy `|c − c*| ≤ (1 + u_out)·γ_k·(|A|·|B|)_ij + u_out·|c*_ij| + η_out`
/// with `γ_k = k·u / (1 − k·u)`; elements whose `c*` is beyond the dtype's finite range are
/// skipped, as are NaN ones. Returns the largest `|c − c*|`.
///
/// # Errors
/// A description of the first element that breaks the bound.
pub fn check_matmul(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    dims: MatmulDims,
    dtype: DType,
) -> Result<f64, String> {
    let u = 2f64.powi(-24);
    let k = dims.k as f64;
    let gamma = k * u / (1.0 - k * u);
    let (u_out, eta) = (dtype.unit_roundoff(), dtype.half_min_subnormal());
    let max_finite = f64::from(dtype.max_finite());
    let mut worst = 0f64;
    for bt in 0..dims.batch {
        for i in 0..dims.m {
            for j in 0..dims.n {
                let (exact, abs) = exact_entry(a, b, dims, bt, i, j);
                // R6.9 bounds only a `c*` in the finite range: NaN (from an inf or NaN
                // operand) is outside it as much as an overflow is.
                if exact.is_nan() || exact.abs() > max_finite {
                    continue;
                }
                let got = f64::from(c[bt * dims.m * dims.n + i * dims.n + j]);
                let err = (got - exact).abs();
                let bound = (1.0 + u_out) * gamma * abs + u_out * exact.abs() + eta;
                if err > bound || err.is_nan() {
                    return Err(format!(
                        "element [{bt}, {i}, {j}]: got {got}, exact {exact}, |err| {err:e} > bound {bound:e}"
                    ));
                }
                worst = worst.max(err);
            }
        }
    }
    Ok(worst)
}

/// R6.8 check of a softmax/rms_norm output `y` against the reference `y_ref` (rows of `n`):
/// for f32, `|y − y_ref| ≤ 2·n·u·|y_ref|`; for f16/bf16, `y` is `y_ref` or one of its two
/// neighbours in the dtype. An infinity or NaN on either side must be matched exactly (any NaN
/// matches any NaN): a tolerance measured from an infinity is infinite and would accept
/// anything, and an overflow is not a rounding step. Returns the largest `|y − y_ref|`.
///
/// # Errors
/// A description of the first element out of tolerance.
pub fn check_reduction(y: &[f32], y_ref: &[f32], n: usize, dtype: DType) -> Result<f64, String> {
    if y.len() != y_ref.len() {
        return Err(format!("length {} vs reference {}", y.len(), y_ref.len()));
    }
    let mut worst = 0f64;
    for (i, (&got, &want)) in y.iter().zip(y_ref).enumerate() {
        if got.is_nan() && want.is_nan() || got == want {
            continue;
        }
        if !got.is_finite() || !want.is_finite() {
            return Err(format!(
                "element {i}: got {got}, reference {want} (infinities and NaN must match)"
            ));
        }
        let err = (f64::from(got) - f64::from(want)).abs();
        let ok = match dtype {
            DType::F32 => err <= 2.0 * n as f64 * 2f64.powi(-24) * f64::from(want).abs(),
            _ => neighbours(want, dtype).contains(&got),
        };
        if !ok {
            return Err(format!("element {i}: got {got}, reference {want}"));
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

/// The values adjacent to `x` in `dtype` (below, above).
fn neighbours(x: f32, dtype: DType) -> [f32; 2] {
    match dtype {
        DType::F32 => [x.next_down(), x.next_up()],
        DType::F16 => {
            let b = half::f16::from_f32(x).to_bits();
            [
                half::f16::from_bits(step16(b, false)).to_f32(),
                half::f16::from_bits(step16(b, true)).to_f32(),
            ]
        }
        DType::BF16 => {
            let b = half::bf16::from_f32(x).to_bits();
            [
                half::bf16::from_bits(step16(b, false)).to_f32(),
                half::bf16::from_bits(step16(b, true)).to_f32(),
            ]
        }
        DType::I32 => [x - 1.0, x + 1.0],
    }
}

/// The next 16-bit float (sign-magnitude encoding) up or down from `bits`, for finite values.
fn step16(bits: u16, up: bool) -> u16 {
    let negative = bits & 0x8000 != 0;
    let magnitude = bits & 0x7fff;
    match (negative, up) {
        (false, true) => bits + 1,
        (false, false) if magnitude == 0 => 0x8001,
        (false, false) => bits - 1,
        (true, true) if magnitude == 0 => 0x0001,
        (true, true) => bits - 1,
        (true, false) => bits + 1,
    }
}

/// Bitwise comparison where any NaN equals any NaN (and `+0 ≠ −0`): the index of the first
/// difference, or of the end of the shorter slice if the lengths differ.
pub fn first_mismatch(a: &[f32], b: &[f32]) -> Option<usize> {
    if let Some(i) = a
        .iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
    {
        return Some(i);
    }
    (a.len() != b.len()).then(|| a.len().min(b.len()))
}

/// The reference of `gather` along the middle of `dims` (indices as exact f32 values):
/// `None` if an index is out of range.
pub fn gather(src: &[f32], index: &[f32], dims: IndexDims) -> Option<Vec<f32>> {
    let IndexDims {
        src_len,
        idx_len,
        inner,
        ..
    } = dims;
    let mut out = Vec::with_capacity(index.len());
    for (at, &ix) in index.iter().enumerate() {
        let (o, i) = (at / (idx_len * inner), at % inner);
        let j = in_range(ix, src_len)?;
        out.push(src[(o * src_len + j) * inner + i]);
    }
    Some(out)
}

/// The reference of `scatter`: a copy of `dst` with `src` written at `index` in row-major
/// order (the last repeated index wins); `None` if an index is out of range.
pub fn scatter(dst: &[f32], index: &[f32], src: &[f32], dims: IndexDims) -> Option<Vec<f32>> {
    let IndexDims {
        src_len,
        idx_len,
        inner,
        ..
    } = dims;
    let mut out = dst.to_vec();
    for (at, (&ix, &v)) in index.iter().zip(src).enumerate() {
        let (o, i) = (at / (idx_len * inner), at % inner);
        let j = in_range(ix, src_len)?;
        out[(o * src_len + j) * inner + i] = v;
    }
    Some(out)
}

/// The reference of `index_select` with a 1-D `index`; `None` if an index is out of range.
pub fn index_select(src: &[f32], index: &[f32], dims: IndexDims) -> Option<Vec<f32>> {
    let IndexDims {
        outer,
        src_len,
        inner,
        ..
    } = dims;
    let mut out = Vec::with_capacity(outer * index.len() * inner);
    for o in 0..outer {
        for &ix in index {
            let j = in_range(ix, src_len)?;
            out.extend_from_slice(&src[(o * src_len + j) * inner..][..inner]);
        }
    }
    Some(out)
}

/// The reference of `topk(k)` over rows of `n`: (values, positions as f32), by a stable sort
/// of each row, largest first, NaN above every number.
pub fn topk(x: &[f32], n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut values, mut positions) = (Vec::new(), Vec::new());
    if n == 0 {
        return (values, positions);
    }
    for row in x.chunks_exact(n) {
        let mut order: Vec<usize> = (0..n).collect();
        // Stable: equal values keep the lower position first.
        order.sort_by(|&a, &b| {
            let (x, y) = (row[a], row[b]);
            match (x.is_nan(), y.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
            }
        });
        for &j in &order[..k] {
            values.push(row[j]);
            positions.push(j as f32);
        }
    }
    (values, positions)
}

fn in_range(ix: f32, len: usize) -> Option<usize> {
    (ix >= 0.0 && (ix as usize) < len).then_some(ix as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10 item 7: a finite result where the reference is ±inf (or NaN) fails R6.8, as do
    /// an infinity or NaN where the reference is finite, in every dtype; matching specials pass.
    #[test]
    fn check_reduction_requires_infinities_and_nan_to_match_r6_8() {
        let (inf, max16) = (f32::INFINITY, 65504.0);
        for dtype in DType::FLOATS {
            let max = dtype.max_finite();
            for (got, want) in [
                (max, inf),
                (-max, -inf),
                (1.0, inf),
                (-inf, inf),
                (inf, -inf),
                (1.0, f32::NAN),
                (f32::NAN, 1.0),
                (inf, max),
                (f32::NAN, inf),
            ] {
                let r = check_reduction(&[0.5, got], &[0.5, want], 8, dtype);
                let err = r.expect_err(&format!("{dtype}: got {got} for reference {want}"));
                assert!(err.starts_with("element 1:"), "{dtype}: {err}");
            }
            for (got, want) in [(inf, inf), (-inf, -inf), (f32::NAN, -f32::NAN), (0.5, 0.5)] {
                check_reduction(&[got], &[want], 8, dtype)
                    .unwrap_or_else(|e| panic!("{dtype}: {got} vs {want}: {e}"));
            }
        }
        // Finite neighbours still pass (R6.8 unchanged for finite values).
        let next = half::f16::from_bits(half::f16::from_f32(max16).to_bits() - 1).to_f32();
        assert!(check_reduction(&[next], &[max16], 8, DType::F16).is_ok());
        assert!(check_reduction(&[1.0 + 2f32.powi(-23)], &[1.0], 8, DType::F32).is_ok());
    }

    /// R6.9 applies where `c*` is finite: a NaN `c*` (inf × 0) is skipped like an overflow,
    /// while a finite `c*` still bounds its element.
    #[test]
    fn check_matmul_skips_a_nan_exact_product_r6_9() {
        let dims = MatmulDims {
            batch: 1,
            m: 1,
            k: 2,
            n: 1,
            rhs_batched: false,
        };
        let (a, b) = ([f32::INFINITY, 1.0], [0.0, 2.0]);
        assert!(check_matmul(&a, &b, &[f32::NAN], dims, DType::F32).is_ok());
        let (a, b) = ([1.0, 1.0], [0.0, 2.0]);
        assert!(check_matmul(&a, &b, &[2.0], dims, DType::F32).is_ok());
        assert!(check_matmul(&a, &b, &[f32::NAN], dims, DType::F32).is_err());
        assert!(check_matmul(&a, &b, &[2.5], dims, DType::F32).is_err());
    }
}
