//! TEMPORARY serial reference; replaced by the full reference module.
#![allow(missing_docs)]
pub use crate::kernels::{BinaryOp, MatmulDims, UnaryOp};
use crate::tensor::DType;
pub fn binary(op: BinaryOp, a: &[f32], b: &[f32], dtype: DType) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| dtype.round_f32(match op { BinaryOp::Add => x + y, BinaryOp::Sub => x - y, BinaryOp::Mul => x * y, BinaryOp::Div => x / y })).collect()
}
pub fn first_mismatch(a: &[f32], b: &[f32]) -> Option<usize> {
    if a.len() != b.len() { return Some(a.len().min(b.len())); }
    a.iter().zip(b).position(|(x, y)| !(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())))
}
pub fn check_matmul(a: &[f32], b: &[f32], c: &[f32], d: MatmulDims, dtype: DType) -> Result<f64, String> {
    let u = 2f64.powi(-24); let k = d.k as f64; let g = k * u / (1.0 - k * u);
    let mut maxe: f64 = 0.0;
    for i in 0..d.m { for j in 0..d.n { let (mut s, mut sa) = (0f64, 0f64); for p in 0..d.k { let x = a[i*d.k+p] as f64 * b[p*d.n+j] as f64; s += x; sa += x.abs(); }
        let e = (c[i*d.n+j] as f64 - s).abs(); maxe = maxe.max(e);
        let bound = (1.0 + dtype.unit_roundoff()) * g * sa + dtype.unit_roundoff() * s.abs() + dtype.half_min_subnormal();
        if e > bound { return Err(format!("({i},{j}): {} vs {s}", c[i*d.n+j])); } } }
    Ok(maxe)
}
