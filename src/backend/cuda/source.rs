//! The CUDA C source of tagstream's own kernels, compiled once per process by NVRTC.
//!
//! Owns the kernel names and the one source string. Header-free (NVRTC 13 has no built-in
//! `cuda_fp16.h`): f16 and bf16 are `unsigned short` bit patterns converted in integer C with
//! the exact rounding of `half` and of `kernels::bf16` (ties to even, NaNs quieted), so every
//! elementwise kernel runs the same f32 operation sequence as `kernels::scalar` (R10.8): our own
//! `exp` with the constants' bits taken from the same Rust expressions, a port of libm's
//! `erfcf`/`expf`/`scalbnf` for gelu, and no fused multiply-add (`--fmad=false`, see
//! [`OPTIONS`]).

use crate::dtype::DType;
use crate::kernels::{BinaryOp, ReduceOp, UnaryOp};

/// NVRTC options: no contraction into fma, IEEE division and square root, no flush to zero.
pub(crate) const OPTIONS: &[&str] = &[
    "--fmad=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--ftz=false",
];

/// The architecture the kernels are compiled for in the GPU-less NVRTC test (the lent H100/H200).
#[cfg(test)]
pub(crate) const TEST_ARCH: &str = "sm_90";

/// Threads per block of the elementwise and row kernels.
pub(crate) const BLOCK: u32 = 256;

fn suffix(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I32 => "i32",
    }
}

fn ctype(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F16 | DType::BF16 => "u16",
        DType::I32 => "int",
    }
}

/// Kernel name of a binary op on `d`.
pub(crate) fn binary_name(op: BinaryOp, d: DType) -> String {
    format!("ts_{}_{}", op.name(), suffix(d))
}

/// Kernel name of a unary op on `d`.
pub(crate) fn unary_name(op: UnaryOp, d: DType) -> String {
    format!("ts_{}_{}", op.name(), suffix(d))
}

/// Kernel name of the conversion `from` → `to`.
pub(crate) fn convert_name(from: DType, to: DType) -> String {
    format!("ts_to_{}_{}", suffix(from), suffix(to))
}

/// Kernel name of a row kernel (softmax, rms_norm) or of a kernel family on `d`.
pub(crate) fn row_name(op: &str, d: DType) -> String {
    format!("ts_{op}_{}", suffix(d))
}

/// Kernel name of a broadcasting binary op on `d`.
pub(crate) fn broadcast_name(op: BinaryOp, d: DType) -> String {
    format!("ts_{}_bcast_{}", op.name(), suffix(d))
}

/// Kernel name of `a op scalar` on `d`.
pub(crate) fn scalar_name(op: BinaryOp, d: DType) -> String {
    format!("ts_{}_scalar_{}", op.name(), suffix(d))
}

/// Kernel name of a reduction over one dimension on `d`.
pub(crate) fn reduce_name(op: ReduceOp, d: DType) -> String {
    format!("ts_reduce_{}_{}", op.name(), suffix(d))
}

/// The kernel families of any dtype (`I32` included): they only move elements.
pub(crate) const COPY_FAMILIES: [&str; 5] =
    ["strided_copy", "cat", "gather", "scatter", "index_select"];

/// The row kernels of float dtypes besides softmax / rms_norm.
pub(crate) const FLOAT_FAMILIES: [&str; 2] = ["softmax_dim", "topk"];

/// Threads per block of the top-k kernel (one block per row).
pub(crate) const TOPK_BLOCK: u32 = 128;

/// The most dimensions a broadcast or strided-copy kernel takes (its shape and strides are
/// passed by value in the kernel's parameters: `1 + 3 · 64` words, under the 4 KiB limit).
pub(crate) const MAX_RANK: usize = 64;

/// The binary ops and their C operators, for every kernel family that computes one.
const BINARY_OPS: [(BinaryOp, &str); 4] = [
    (BinaryOp::Add, "+"),
    (BinaryOp::Sub, "-"),
    (BinaryOp::Mul, "*"),
    (BinaryOp::Div, "/"),
];

/// Every kernel name the source defines (what the module must export).
pub(crate) fn all_names() -> Vec<String> {
    let mut names = Vec::new();
    for d in DType::FLOATS {
        for (op, _) in BINARY_OPS {
            names.push(binary_name(op, d));
        }
        for op in [UnaryOp::Relu, UnaryOp::Silu, UnaryOp::Gelu, UnaryOp::Exp] {
            names.push(unary_name(op, d));
        }
        for to in DType::FLOATS {
            names.push(convert_name(d, to));
        }
        names.push(row_name("softmax", d));
        names.push(row_name("rms_norm", d));
        for (op, _) in BINARY_OPS {
            names.push(broadcast_name(op, d));
            names.push(scalar_name(op, d));
        }
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
            names.push(reduce_name(op, d));
        }
        for f in FLOAT_FAMILIES {
            names.push(row_name(f, d));
        }
    }
    for d in DType::ALL {
        for f in COPY_FAMILIES {
            names.push(row_name(f, d));
        }
    }
    names
}

/// Grid and block of an elementwise launch over `n` elements (grid-stride loop, so the grid is
/// capped; every element is covered by `grid * block` threads striding).
pub(crate) fn elementwise_config(n: usize) -> (u32, u32) {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 132 * 32);
    (blocks as u32, BLOCK)
}

/// `f32` bits as a C expression.
fn lit(x: f32) -> String {
    format!("bits_f(0x{:08x}u)", x.to_bits())
}

fn helpers() -> String {
    // The exp constants are the same Rust expressions as in `kernels::scalar::exp`.
    let exp = format!(
        r#"
__device__ __forceinline__ float ts_exp(float x) {{
  x = x < -104.0f ? -104.0f : x;
  x = x > 89.0f ? 89.0f : x;
  float k = (x * {log2e} + {round}) - {round};
  float r = (x - k * {ln2hi}) - k * {ln2lo};
  float p = 1.0f + r * (1.0f + r * (0.5f + r * ({c6} + r * ({c24} + r * ({c120} + r * ({c720} + r * {c5040}))))));
  int ki = (int)k;
  int k1 = ki >> 1;
  int k2 = ki - k1;
  return p * pow2i(k1) * pow2i(k2);
}}
"#,
        log2e = lit(std::f32::consts::LOG2_E),
        round = lit(12_582_912.0),
        ln2hi = lit(f32::from_bits(0x3f31_7200)),
        ln2lo = lit(1.428_606_8e-6),
        c6 = lit(1.0f32 / 6.0),
        c24 = lit(1.0f32 / 24.0),
        c120 = lit(1.0f32 / 120.0),
        c720 = lit(1.0f32 / 720.0),
        c5040 = lit(1.0f32 / 5040.0),
    );
    let gelu_c = lit(std::f32::consts::FRAC_1_SQRT_2);
    format!(
        r#"typedef unsigned short u16;
typedef unsigned int u32;
__device__ __forceinline__ float bits_f(u32 b) {{ union {{ u32 u; float f; }} v; v.u = b; return v.f; }}
__device__ __forceinline__ u32 f_bits(float f) {{ union {{ u32 u; float f; }} v; v.f = f; return v.u; }}
__device__ __forceinline__ float pow2i(int n) {{ return bits_f(((u32)(n + 127)) << 23); }}

/* f16 -> f32: exact, NaNs quieted (as F16C and half). */
__device__ __forceinline__ float ld_f16(u16 h) {{
  u32 sign = ((u32)(h & 0x8000u)) << 16;
  u32 e = (h >> 10) & 0x1fu;
  u32 m = h & 0x3ffu;
  u32 r;
  if (e == 0x1fu) {{
    r = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u);
  }} else if (e == 0u) {{
    if (m == 0u) {{
      r = sign;
    }} else {{
      u32 ex = 113u;
      while ((m & 0x400u) == 0u) {{ m <<= 1; ex -= 1u; }}
      r = sign | (ex << 23) | ((m & 0x3ffu) << 13);
    }}
  }} else {{
    r = sign | ((e + 112u) << 23) | (m << 13);
  }}
  return bits_f(r);
}}

/* f32 -> f16: to nearest, ties to even; NaN keeps its top payload bits and is quieted. */
__device__ __forceinline__ u16 st_f16(float f) {{
  u32 x = f_bits(f);
  u32 sign = (x >> 16) & 0x8000u;
  u32 e = (x >> 23) & 0xffu;
  u32 m = x & 0x7fffffu;
  if (e == 0xffu) return (u16)(m ? (sign | 0x7e00u | (m >> 13)) : (sign | 0x7c00u));
  int he = (int)e - 112;
  if (he >= 0x1f) return (u16)(sign | 0x7c00u);
  if (he <= 0) {{
    u32 shift = (u32)(14 - he);
    if (shift > 24u) return (u16)sign;
    u32 full = m | 0x800000u;
    u32 h = full >> shift;
    u32 rem = full & ((1u << shift) - 1u);
    u32 mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (h & 1u))) h += 1u;
    return (u16)(sign | h);
  }}
  u32 h = ((u32)he << 10) | (m >> 13);
  u32 rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h += 1u;
  return (u16)(sign | h);
}}

/* bf16 <-> f32 exactly as kernels::bf16. */
__device__ __forceinline__ float ld_bf16(u16 b) {{
  u32 h = (u32)b;
  u32 quiet = (h & 0x7fffu) > 0x7f80u ? 0x40u : 0u;
  return bits_f((h | quiet) << 16);
}}
__device__ __forceinline__ u16 st_bf16(float f) {{
  u32 x = f_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40u);
  u32 up = ((x & 0x8000u) != 0u && (x & 0x17fffu) != 0u) ? 1u : 0u;
  return (u16)((x >> 16) + up);
}}
__device__ __forceinline__ float ld_f32(float x) {{ return x; }}
__device__ __forceinline__ float st_f32(float x) {{ return x; }}

{exp}
/* libm 0.2 (musl) scalbnf, expf and erfcf, operation for operation. */
__device__ float ts_scalbnf(float x, int n) {{
  float y = x;
  if (n > 127) {{
    y *= bits_f(0x7f000000u); n -= 127;
    if (n > 127) {{ y *= bits_f(0x7f000000u); n -= 127; if (n > 127) n = 127; }}
  }} else if (n < -126) {{
    y *= bits_f(0x00800000u) * bits_f(0x4b800000u); n += 126 - 24;
    if (n < -126) {{ y *= bits_f(0x00800000u) * bits_f(0x4b800000u); n += 126 - 24; if (n < -126) n = -126; }}
  }}
  return y * bits_f(((u32)(0x7f + n)) << 23);
}}
__device__ float ts_expf(float x) {{
  u32 hx = f_bits(x);
  int sign = (int)(hx >> 31);
  hx &= 0x7fffffffu;
  if (hx >= 0x42aeac50u) {{
    if (hx > 0x7f800000u) return x;
    if (hx >= 0x42b17218u && !sign) {{ x *= bits_f(0x7f000000u); return x; }}
    if (sign && hx >= 0x42cff1b5u) return 0.0f;
  }}
  int k; float hi, lo;
  if (hx > 0x3eb17218u) {{
    if (hx > 0x3f851592u) {{
      k = (int)(bits_f(0x3fb8aa3bu) * x + (sign ? -0.5f : 0.5f));
    }} else {{
      k = 1 - sign - sign;
    }}
    float kf = (float)k;
    hi = x - kf * bits_f(0x3f317200u);
    lo = kf * bits_f(0x35bfbe8eu);
    x = hi - lo;
  }} else if (hx > 0x39000000u) {{
    k = 0; hi = x; lo = 0.0f;
  }} else {{
    return 1.0f + x;
  }}
  float xx = x * x;
  float c = x - xx * (bits_f(0x3e2aaa8fu) + xx * bits_f(0xbb355215u));
  float y = 1.0f + (x * c / (2.0f - c) - lo + hi);
  return k == 0 ? y : ts_scalbnf(y, k);
}}
__device__ float ts_erfc1(float x) {{
  float s = fabsf(x) - 1.0f;
  float p = bits_f(0xbb1acdc6u) + s * (bits_f(0x3ed46805u) + s * (bits_f(0xbebe9208u) + s * (bits_f(0x3ea2fe54u) + s * (bits_f(0xbde31cc2u) + s * (bits_f(0x3d1151b3u) + s * bits_f(0xbb0df9c0u))))));
  float q = 1.0f + s * (bits_f(0x3dd9f331u) + s * (bits_f(0x3f0a5785u) + s * (bits_f(0x3d931ae7u) + s * (bits_f(0x3e013307u) + s * (bits_f(0x3c5f6e13u) + s * bits_f(0x3c445aa3u))))));
  return 1.0f - bits_f(0x3f58560bu) - p / q;
}}
__device__ float ts_erfc2(u32 ix, float x) {{
  if (ix < 0x3fa00000u) return ts_erfc1(x);
  x = fabsf(x);
  float s = 1.0f / (x * x);
  float r, big_s;
  if (ix < 0x4036db6du) {{
    r = bits_f(0xbc21a093u) + s * (bits_f(0xbf31a0b7u) + s * (bits_f(0xc128f022u) + s * (bits_f(0xc2798057u) + s * (bits_f(0xc322658cu) + s * (bits_f(0xc3389ae7u) + s * (bits_f(0xc2a2932bu) + s * bits_f(0xc11d077eu)))))));
    big_s = 1.0f + s * (bits_f(0x419d35ceu) + s * (bits_f(0x4309a863u) + s * (bits_f(0x43d9486fu) + s * (bits_f(0x442158c9u) + s * (bits_f(0x43d6810bu) + s * (bits_f(0x42d9451fu) + s * (bits_f(0x40d23f7cu) + s * bits_f(0xbd777f97u))))))));
  }} else {{
    r = bits_f(0xbc21a092u) + s * (bits_f(0xbf4c9dd4u) + s * (bits_f(0xc18e104bu) + s * (bits_f(0xc320a2eau) + s * (bits_f(0xc41f6441u) + s * (bits_f(0xc480230bu) + s * bits_f(0xc3f1c275u))))));
    big_s = 1.0f + s * (bits_f(0x41f2b459u) + s * (bits_f(0x43a2e571u) + s * (bits_f(0x44c01759u) + s * (bits_f(0x4547fdbbu) + s * (bits_f(0x451f90ceu) + s * (bits_f(0x43ed43a7u) + s * bits_f(0xc1b38712u)))))));
  }}
  float z = bits_f(f_bits(x) & 0xffffe000u);
  return ts_expf(-z * z - 0.5625f) * ts_expf((z - x) * (z + x) + r / big_s) / x;
}}
__device__ float ts_erfcf(float x) {{
  u32 ix = f_bits(x);
  int sign = (int)(ix >> 31);
  ix &= 0x7fffffffu;
  if (ix >= 0x7f800000u) return 2.0f * (float)sign + 1.0f / x;
  if (ix < 0x3f580000u) {{
    if (ix < 0x23800000u) return 1.0f - x;
    float z = x * x;
    float r = bits_f(0x3e0375d4u) + z * (bits_f(0xbea66bebu) + z * (bits_f(0xbce9528fu) + z * (bits_f(0xbbbd1489u) + z * bits_f(0xb7c756b1u))));
    float s = 1.0f + z * (bits_f(0x3ecbbbceu) + z * (bits_f(0x3d852a63u) + z * (bits_f(0x3ba68116u) + z * (bits_f(0x390aee49u) + z * bits_f(0xb684e21au)))));
    float y = r / s;
    if (sign || ix < 0x3e800000u) return 1.0f - (x + x * y);
    return 0.5f - (x - 0.5f + x * y);
  }}
  if (ix < 0x41e00000u) return sign ? 2.0f - ts_erfc2(ix, x) : ts_erfc2(ix, x);
  return sign ? 2.0f - bits_f(0x03800000u) : bits_f(0x03800000u) * bits_f(0x03800000u);
}}
__device__ __forceinline__ float ts_relu(float x) {{ return (x > 0.0f || x != x) ? x : 0.0f; }}
__device__ __forceinline__ float ts_silu(float x) {{ return x / (1.0f + ts_exp(-x)); }}
__device__ __forceinline__ float ts_gelu(float x) {{ return 0.5f * x * ts_erfcf(-x * {gelu_c}); }}

/* Block-wide sum / max of one value per thread (blockDim.x == {block}). */
__device__ float block_reduce(float v, float* sh, int is_max) {{
  unsigned t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (unsigned w = blockDim.x / 2u; w > 0u; w >>= 1) {{
    if (t < w) sh[t] = is_max ? fmaxf(sh[t], sh[t + w]) : sh[t] + sh[t + w];
    __syncthreads();
  }}
  float r = sh[0];
  __syncthreads();
  return r;
}}
"#,
        block = BLOCK
    )
}

fn loop_head() -> &'static str {
    "  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x)"
}

/// The whole kernel source: every kernel of [`all_names`].
pub(crate) fn source() -> String {
    let mut s = helpers();
    for d in DType::FLOATS {
        let (t, sf) = (ctype(d), suffix(d));
        for (op, sym) in BINARY_OPS {
            s += &format!(
                "extern \"C\" __global__ void {name}(const {t}* a, const {t}* b, {t}* o, unsigned long long n) {{\n{head} o[i] = st_{sf}(ld_{sf}(a[i]) {sym} ld_{sf}(b[i]));\n}}\n",
                name = binary_name(op, d),
                head = loop_head()
            );
        }
        for op in [UnaryOp::Relu, UnaryOp::Silu, UnaryOp::Gelu, UnaryOp::Exp] {
            s += &format!(
                "extern \"C\" __global__ void {name}(const {t}* a, {t}* o, unsigned long long n) {{\n{head} o[i] = st_{sf}(ts_{f}(ld_{sf}(a[i])));\n}}\n",
                name = unary_name(op, d),
                f = op.name(),
                head = loop_head()
            );
        }
        for to in DType::FLOATS {
            s += &format!(
                "extern \"C\" __global__ void {name}(const {t}* a, {tt}* o, unsigned long long n) {{\n{head} o[i] = st_{st}(ld_{sf}(a[i]));\n}}\n",
                name = convert_name(d, to),
                tt = ctype(to),
                st = suffix(to),
                head = loop_head()
            );
        }
        // One block per row; f32 inside, one rounding at the store (R6.8 tolerances).
        s += &format!(
            r#"extern "C" __global__ void {name}(const {t}* a, {t}* o, unsigned long long rows, unsigned long long n) {{
  __shared__ float sh[{block}];
  for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {{
    const {t}* x = a + row * n;
    {t}* y = o + row * n;
    float m = bits_f(0xff800000u);
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, ld_{sf}(x[j]));
    m = block_reduce(m, sh, 1);
    float acc = 0.0f;
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) acc += ts_exp(ld_{sf}(x[j]) - m);
    float total = block_reduce(acc, sh, 0);
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) y[j] = st_{sf}(ts_exp(ld_{sf}(x[j]) - m) / total);
  }}
}}
"#,
            name = row_name("softmax", d),
            block = BLOCK
        );
        s += &format!(
            r#"extern "C" __global__ void {name}(const {t}* a, const {t}* w, {t}* o, unsigned long long rows, unsigned long long n, float eps) {{
  __shared__ float sh[{block}];
  for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {{
    const {t}* x = a + row * n;
    {t}* y = o + row * n;
    float acc = 0.0f;
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) {{ float v = ld_{sf}(x[j]); acc += v * v; }}
    float d = sqrtf(block_reduce(acc, sh, 0) / (float)n + eps);
    for (unsigned long long j = threadIdx.x; j < n; j += blockDim.x) y[j] = st_{sf}(ld_{sf}(x[j]) / d * ld_{sf}(w[j]));
  }}
}}
"#,
            name = row_name("rms_norm", d),
            block = BLOCK
        );
    }
    s += &round2_kernels();
    s
}

/// Shared definitions of the round-2 kernels: the by-value layout parameters, the top-k order
/// and the index-error flag.
fn round2_helpers() -> String {
    format!(
        r#"
typedef unsigned long long u64;
/* Strided copy: out[i] = a[offset + sum_d i_d * stride[d]] (transpose, narrow, expand). */
struct ts_layout {{ u64 rank; u64 offset; u64 shape[{r}]; u64 stride[{r}]; }};
/* Broadcast: per output dimension, each operand's element stride (0 where it is repeated). */
struct ts_bcast {{ u64 rank; u64 shape[{r}]; u64 sa[{r}]; u64 sb[{r}]; }};

/* kernels::index's topk order: NaN above every number, larger first, ties by lower position. */
__device__ __forceinline__ int ts_before(float av, u64 ai, float bv, u64 bi) {{
  int an = av != av, bn = bv != bv;
  if (an || bn) return an && bn ? ai < bi : an;
  if (av > bv) return 1;
  if (av < bv) return 0;
  return ai < bi;
}}

/* An index outside 0..len: the flag word (initially all ones) keeps the smallest
   (position << 32 | index bits), which is the first bad index the CPU kernel reports. */
__device__ __forceinline__ int ts_bad(int ix, u64 len, u64 at, u64* flag) {{
  if (ix >= 0 && (u64)ix < len) return 0;
  u64 pos = at < 0xfffffffeull ? at : 0xfffffffeull;
  atomicMin(flag, (pos << 32) | (u64)(u32)ix);
  return 1;
}}
"#,
        r = MAX_RANK
    )
}

/// Broadcast, scalar, reduce, softmax over a middle dimension, top-k, and the copy kernels
/// (strided copy, cat, gather, scatter, index_select) of every dtype.
fn round2_kernels() -> String {
    let mut s = round2_helpers();
    let head = loop_head();
    for d in DType::FLOATS {
        let (t, sf) = (ctype(d), suffix(d));
        for (op, sym) in BINARY_OPS {
            // Each output element's operand offsets from its row-major index; the same f32 op
            // and rounding as the identical-shape kernel (kernels::binary_broadcast).
            s += &format!(
                r#"extern "C" __global__ void {name}(const {t}* a, const {t}* b, {t}* o, u64 n, struct ts_bcast l) {{
{head} {{
    u64 rem = i, ia = 0, ib = 0;
    for (int d = (int)l.rank - 1; d >= 0; --d) {{ u64 x = rem % l.shape[d]; rem /= l.shape[d]; ia += x * l.sa[d]; ib += x * l.sb[d]; }}
    o[i] = st_{sf}(ld_{sf}(a[ia]) {sym} ld_{sf}(b[ib]));
  }}
}}
extern "C" __global__ void {sname}(const {t}* a, {t}* o, u64 n, float v) {{
{head} o[i] = st_{sf}(ld_{sf}(a[i]) {sym} v);
}}
"#,
                name = broadcast_name(op, d),
                sname = scalar_name(op, d),
            );
        }
        // One thread per output element folds its `len` inputs left to right, exactly as
        // kernels::reduce (sum from the first element; mean divides once; max keeps NaN).
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
            let (empty, step, finish) = match op {
                ReduceOp::Sum => ("0.0f", "acc += v;", ""),
                ReduceOp::Mean => ("bits_f(0x7fc00000u)", "acc += v;", "acc /= (float)len;"),
                ReduceOp::Max => ("0.0f", "if (v > acc || v != v) acc = v;", ""),
            };
            s += &format!(
                r#"extern "C" __global__ void {name}(const {t}* a, {t}* o, u64 outer, u64 len, u64 inner) {{
  u64 n = outer * inner;
{head} {{
    const {t}* x = a + (i / inner) * len * inner + i % inner;
    float acc = {empty};
    if (len > 0) {{
      acc = ld_{sf}(x[0]);
      for (u64 r = 1; r < len; ++r) {{ float v = ld_{sf}(x[r * inner]); {step} }}
      {finish}
    }}
    o[i] = st_{sf}(acc);
  }}
}}
"#,
                name = reduce_name(op, d),
            );
        }
        // Softmax over a middle dimension: one thread per (outer, inner) row, running
        // kernels::reduce's row formula in its order (max fold, 8 lane sums then the tail,
        // divide), so the bits equal the CPU's.
        s += &format!(
            r#"extern "C" __global__ void {name}(const {t}* a, {t}* o, u64 outer, u64 len, u64 inner) {{
  u64 n = outer * inner;
{head} {{
    u64 base = (i / inner) * len * inner + i % inner;
    const {t}* x = a + base;
    {t}* y = o + base;
    float m = bits_f(0xff800000u);
    for (u64 j = 0; j < len; ++j) {{ float v = ld_{sf}(x[j * inner]); if (v > m || v != v) m = v; }}
    float acc[8] = {{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}};
    u64 full = len / 8u * 8u;
    for (u64 j = 0; j < full; j += 8u) {{
      for (int l = 0; l < 8; ++l) acc[l] += ts_exp(ld_{sf}(x[(j + l) * inner]) - m);
    }}
    float sum = 0.0f;
    for (int l = 0; l < 8; ++l) sum += acc[l];
    for (u64 j = full; j < len; ++j) sum += ts_exp(ld_{sf}(x[j * inner]) - m);
    for (u64 j = 0; j < len; ++j) y[j * inner] = st_{sf}(ts_exp(ld_{sf}(x[j * inner]) - m) / sum);
  }}
}}
"#,
            name = row_name("softmax_dim", d),
        );
        // Top-k positions: one block per row; k rounds, each picks the first element (in the
        // total order of ts_before) after the previous pick, by a block-wide arg-best.
        s += &format!(
            r#"extern "C" __global__ void {name}(const {t}* a, int* o, u64 rows, u64 n, u64 k) {{
  __shared__ float sv[{tb}];
  __shared__ u64 si[{tb}];
  const u64 none = ~0ull;
  unsigned t = threadIdx.x;
  for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {{
    const {t}* x = a + row * n;
    float pv = 0.0f;
    u64 pi = none;
    for (u64 s = 0; s < k; ++s) {{
      float bv = 0.0f;
      u64 bi = none;
      for (u64 j = t; j < n; j += blockDim.x) {{
        float v = ld_{sf}(x[j]);
        if ((pi == none || ts_before(pv, pi, v, j)) && (bi == none || ts_before(v, j, bv, bi))) {{ bv = v; bi = j; }}
      }}
      sv[t] = bv; si[t] = bi;
      __syncthreads();
      for (unsigned w = blockDim.x / 2u; w > 0u; w >>= 1) {{
        if (t < w) {{
          float ov = sv[t + w]; u64 oi = si[t + w];
          if (oi != none && (si[t] == none || ts_before(ov, oi, sv[t], si[t]))) {{ sv[t] = ov; si[t] = oi; }}
        }}
        __syncthreads();
      }}
      pv = sv[0]; pi = si[0];
      __syncthreads();
      if (t == 0u) o[row * k + s] = (int)pi;
    }}
  }}
}}
"#,
            name = row_name("topk", d),
            tb = TOPK_BLOCK,
        );
    }
    for d in DType::ALL {
        let t = ctype(d);
        s += &format!(
            r#"extern "C" __global__ void {copy}(const {t}* a, {t}* o, u64 n, struct ts_layout l) {{
{head} {{
    u64 rem = i, off = l.offset;
    for (int d = (int)l.rank - 1; d >= 0; --d) {{ off += (rem % l.shape[d]) * l.stride[d]; rem /= l.shape[d]; }}
    o[i] = a[off];
  }}
}}
extern "C" __global__ void {cat}(const {t}* a, const {t}* b, {t}* o, u64 n, u64 ai, u64 bi) {{
{head} {{
    u64 row = i / (ai + bi), c = i % (ai + bi);
    o[i] = c < ai ? a[row * ai + c] : b[row * bi + (c - ai)];
  }}
}}
/* n: output elements = index elements. A bad index writes a zero element and sets the flag. */
extern "C" __global__ void {gather}(const {t}* src, const int* idx, {t}* o, u64 n, u64 src_len, u64 idx_len, u64 inner, u64* flag) {{
{head} {{
    int ix = idx[i];
    u64 row = i / (idx_len * inner);
    o[i] = ts_bad(ix, src_len, i, flag) ? ({t})0 : src[(row * src_len + (u64)ix) * inner + i % inner];
  }}
}}
/* n: max(output elements, idx_len); every index is checked even when the output is empty. */
extern "C" __global__ void {select}(const {t}* src, const int* idx, {t}* o, u64 n, u64 out_len, u64 src_len, u64 idx_len, u64 inner, u64* flag) {{
{head} {{
    if (i < idx_len) ts_bad(idx[i], src_len, i, flag);
    if (i < out_len) {{
      u64 j = (i / inner) % idx_len, row = i / (idx_len * inner);
      int ix = idx[j];
      o[i] = (ix < 0 || (u64)ix >= src_len) ? ({t})0 : src[(row * src_len + (u64)ix) * inner + i % inner];
    }}
  }}
}}
/* n: outer * inner columns, one thread each: the column is copied, then the index rows are
   written in row-major order (the last repeated position wins); a bad index writes nothing. */
extern "C" __global__ void {scatter}(const {t}* dst, const int* idx, const {t}* src, {t}* o, u64 n, u64 src_len, u64 idx_len, u64 inner, u64* flag) {{
{head} {{
    u64 row = i / inner, c = i % inner;
    for (u64 r = 0; r < src_len; ++r) o[(row * src_len + r) * inner + c] = dst[(row * src_len + r) * inner + c];
    for (u64 j = 0; j < idx_len; ++j) {{
      u64 at = (row * idx_len + j) * inner + c;
      int ix = idx[at];
      if (!ts_bad(ix, src_len, at, flag)) o[(row * src_len + (u64)ix) * inner + c] = src[at];
    }}
  }}
}}
"#,
            copy = row_name("strided_copy", d),
            cat = row_name("cat", d),
            gather = row_name("gather", d),
            select = row_name("index_select", d),
            scatter = row_name("scatter", d),
        );
    }
    s
}

/// Compiles [`source`] for `arch` (`sm_90`, ...) to PTX with [`OPTIONS`]: the NVRTC log on
/// failure. Needs `libnvrtc.so.13` (only call it after the probe, or in tests that check for
/// the library first: cudarc panics when it is missing).
pub(crate) fn compile(arch: &'static str) -> Result<String, String> {
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        options: OPTIONS.iter().map(|o| o.to_string()).collect(),
        name: Some("tagstream_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source(), opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| format!("{e:?}"))
}

/// Grid and block of a row kernel over `rows` rows.
pub(crate) fn row_config(rows: usize) -> (u32, u32) {
    (rows.clamp(1, 65_535) as u32, BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_kernel_is_defined_once() {
        let src = source();
        for name in all_names() {
            let decl = format!("void {name}(");
            assert_eq!(src.matches(&decl).count(), 1, "{name}");
        }
        assert!(!src.contains("#include"), "header-free (gpu.md: NVRTC 13)");
    }

    #[test]
    fn launch_configs_cover_every_element() {
        for n in [0, 1, 255, 256, 257, 1_000_000, 1 << 30] {
            let (g, b) = elementwise_config(n);
            assert!(g >= 1 && b == BLOCK);
            // Grid-stride: any grid ≥ 1 covers n; the cap keeps the grid launchable.
            assert!(g as usize <= 132 * 32);
            if n <= 132 * 32 * BLOCK as usize {
                assert!(
                    g as usize * b as usize >= n,
                    "one element per thread for n = {n}"
                );
            }
        }
        assert_eq!(row_config(0), (1, BLOCK));
        assert_eq!(row_config(70_000).0, 65_535);
    }

    /// Every kernel compiles through NVRTC to sm_90 PTX with no GPU (gpu.md "Without a GPU").
    /// Needs `libnvrtc.so.13` on the loader path (`pip install nvidia-cuda-nvrtc==13.0.*`,
    /// then its `nvidia/cu13/lib` on `LD_LIBRARY_PATH`); skips with a printed reason without.
    #[test]
    fn kernels_compile_through_nvrtc_without_a_gpu() {
        // SAFETY: only tries to dlopen the library cudarc would use.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            println!("SKIPPED: libnvrtc.so.13 not found (pip install nvidia-cuda-nvrtc==13.0.*)");
            return;
        }
        let t = std::time::Instant::now();
        let ptx = compile(TEST_ARCH).unwrap_or_else(|log| panic!("NVRTC failed:\n{log}"));
        println!(
            "NVRTC compiled {} kernels in {:?}",
            all_names().len(),
            t.elapsed()
        );
        assert!(ptx.contains(".target sm_90"), "PTX for sm_90");
        for name in all_names() {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{name} in the PTX"
            );
        }
        // No fused multiply-add anywhere (R10.8: the CPU sequence has none).
        assert!(!ptx.contains("fma.rn.f32"), "fma found in the PTX");
    }

    /// The exp constants written into the source are the bits of `kernels::scalar::exp`'s.
    #[test]
    fn exp_constants_match_the_cpu_expression() {
        let src = source();
        assert!(src.contains(&format!("0x{:08x}u", (1.0f32 / 6.0).to_bits())));
        assert!(src.contains(&format!("0x{:08x}u", std::f32::consts::LOG2_E.to_bits())));
    }
}
