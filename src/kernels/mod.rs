//! TEMPORARY scalar kernels; replaced by the tuned kernels module.
#![allow(missing_docs)]
use crate::tensor::Element;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp { Add, Sub, Mul, Div }
impl BinaryOp { pub(crate) fn name(self) -> &'static str { match self { BinaryOp::Add => "add", BinaryOp::Sub => "sub", BinaryOp::Mul => "mul", BinaryOp::Div => "div" } } }
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp { Relu, Silu, Gelu, Exp }
impl UnaryOp { pub(crate) fn name(self) -> &'static str { match self { UnaryOp::Relu => "relu", UnaryOp::Silu => "silu", UnaryOp::Gelu => "gelu", UnaryOp::Exp => "exp" } } }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDims { pub batch: usize, pub m: usize, pub k: usize, pub n: usize, pub rhs_batched: bool }
pub(crate) fn binary<T: Element>(op: BinaryOp, a: &[T], b: &[T], out: &mut [T]) {
    for i in 0..out.len() { let (x, y) = (a[i].to_f32(), b[i].to_f32()); out[i] = T::from_f32(match op { BinaryOp::Add => x + y, BinaryOp::Sub => x - y, BinaryOp::Mul => x * y, BinaryOp::Div => x / y }); }
}
pub(crate) fn unary<T: Element>(op: UnaryOp, a: &[T], out: &mut [T]) {
    for i in 0..out.len() { let x = a[i].to_f32(); out[i] = T::from_f32(match op { UnaryOp::Relu => if x > 0.0 || x.is_nan() { x } else { 0.0 }, UnaryOp::Silu => x / (1.0 + (-x).exp()), UnaryOp::Gelu => 0.5 * x * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2), UnaryOp::Exp => x.exp() }); }
}
pub(crate) fn convert<S: Element, D: Element>(a: &[S], out: &mut [D]) { for i in 0..out.len() { out[i] = D::from_f32(a[i].to_f32()); } }
pub(crate) fn softmax<T: Element>(a: &[T], out: &mut [T], n: usize) { if n == 0 { return; } for (r, o) in a.chunks(n).zip(out.chunks_mut(n)) { let m = r.iter().map(|x| x.to_f32()).fold(f32::NEG_INFINITY, f32::max); let s: f32 = r.iter().map(|x| (x.to_f32() - m).exp()).sum(); for (x, y) in r.iter().zip(o) { *y = T::from_f32((x.to_f32() - m).exp() / s); } } }
pub(crate) fn rms_norm<T: Element>(a: &[T], w: &[T], eps: f32, out: &mut [T], n: usize) { if n == 0 { return; } for (r, o) in a.chunks(n).zip(out.chunks_mut(n)) { let s: f32 = r.iter().map(|x| x.to_f32() * x.to_f32()).sum(); let d = (s / n as f32 + eps).sqrt(); for i in 0..n { o[i] = T::from_f32(r[i].to_f32() / d * w[i].to_f32()); } } }
pub(crate) fn matmul<T: Element>(a: &[T], b: &[T], out: &mut [T], d: MatmulDims, _threads: usize) {
    for bt in 0..d.batch { for i in 0..d.m { for j in 0..d.n { let mut s = 0f32; for p in 0..d.k { let bb = if d.rhs_batched { bt * d.k * d.n } else { 0 }; s += a[bt * d.m * d.k + i * d.k + p].to_f32() * b[bb + p * d.n + j].to_f32(); } out[bt * d.m * d.n + i * d.n + j] = T::from_f32(s); } } }
}
