//! The small-`m` matmul kernel (issue 12) through the public API: R6.9 against f64, the same bits
//! eager and replayed and for 1 and 2 threads per stream (R6.4), for every float dtype, plain and
//! batched, at sizes that split the product across threads.

mod common;

use common::{ro, tensor_bits};
use tagstream::reference::{self, MatmulDims};
use tagstream::{DType, Tensor, compile, set_threads_per_stream};

/// Deterministic values in [-2, 2), already representable in `dtype`.
fn values(n: usize, seed: u32, dtype: DType) -> Vec<f32> {
    common::grid_values(n, seed, dtype, 8192, 2048.0, -2.0)
}

/// One product, eager and replayed twice, on `threads` threads per stream: its bits.
fn product(a: &Tensor, b: &Tensor, threads: usize) -> Vec<u32> {
    set_threads_per_stream(threads);
    let eager = tensor_bits(&a.matmul(b).unwrap());
    let mut c = compile(|x| Ok(vec![x[0].matmul(&x[1])?]), ro());
    for round in 0..2 {
        let r = c.run(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            tensor_bits(&r[0]),
            eager,
            "replay {round} differs from eager (R6.4)"
        );
    }
    eager
}

/// MoE decode shapes, scaled down (issue 13: 16 tokens; `[8,16,2048]×[8,2048,1408]` there):
/// every `m` up to the kernel's 16 rows, `k` over two of its panels, `n` over two column blocks
/// with a ragged tail. R6.9 vs f64; 1 thread == 2 threads; eager == replay.
#[test]
fn small_m_products_meet_r6_9_and_keep_their_bits_r6_4() {
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for (batch, m, k, n, rhs_batched) in [
            (1, 16, 600, 300, false),
            (3, 16, 520, 280, true),
            (2, 5, 300, 260, false),
            (4, 1, 700, 330, true),
        ] {
            let dims = MatmulDims {
                batch,
                m,
                k,
                n,
                rhs_batched,
            };
            let rb = if rhs_batched { batch } else { 1 };
            let av = values(batch * m * k, (m * k) as u32, dtype);
            let bv = values(rb * k * n, (k * n) as u32 + 7, dtype);
            let a_shape = if batch > 1 {
                vec![batch, m, k]
            } else {
                vec![m, k]
            };
            let b_shape = if rhs_batched {
                vec![batch, k, n]
            } else {
                vec![k, n]
            };
            let a = Tensor::from_vec(av.clone(), &a_shape, dtype).unwrap();
            let b = Tensor::from_vec(bv.clone(), &b_shape, dtype).unwrap();
            let one = product(&a, &b, 1);
            let two = product(&a, &b, 2);
            assert_eq!(one, two, "{dtype} {dims:?}: 1 vs 2 threads (R6.4)");
            let c: Vec<f32> = one.iter().map(|&x| f32::from_bits(x)).collect();
            reference::check_matmul(&av, &bv, &c, dims, dtype)
                .unwrap_or_else(|e| panic!("R6.9 {dtype} {dims:?}: {e}"));
        }
    }
    set_threads_per_stream(0);
}
