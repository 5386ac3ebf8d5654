//! Matrix product through the `gemm` crate.
//!
//! f32 operands go straight to `gemm::gemm::<f32>`. f16/bf16 operands are widened to f32
//! scratch, multiplied in f32 and rounded once: gemm-f16 0.19 rounds its f16 destination after
//! every k-block, which would round more than once (R6.3). Widening costs O(mk + kn) against the
//! product's O(mkn). The f32 scratch is per thread and reused, so steady-state replays
//! allocate nothing.
//!
//! Threads: `1` runs on the calling thread (`Parallelism::None`); more uses that many rayon
//! threads. gemm splits output tiles across threads and keeps its k-blocking a function of the
//! shape, so the bits do not depend on the thread count (R6.4, tested below).

use gemm::Parallelism;

use super::MatmulDims;
use crate::dtype::Element;

/// `out[b] = a[b] × rhs(b)` for every batch `b`.
pub(crate) fn matmul<T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    dims: MatmulDims,
    threads: usize,
) {
    let MatmulDims {
        batch,
        m,
        k,
        n,
        rhs_batched,
    } = dims;
    let rhs_batches = if rhs_batched { batch } else { 1 };
    assert!(
        a.len() == batch * m * k && b.len() == rhs_batches * k * n && out.len() == batch * m * n,
        "matmul: slice lengths do not match {dims:?}"
    );
    if out.is_empty() {
        return;
    }
    if k == 0 {
        out.fill(T::from_f32(0.0));
        return;
    }
    match (T::as_f32(a), T::as_f32(b)) {
        (Some(a32), Some(b32)) => {
            let o32 = T::as_f32_mut(out).expect("an f32 operand implies an f32 output");
            batched_f32(a32, b32, o32, dims, threads);
        }
        _ => {
            with_scratch(a.len() + b.len() + out.len(), |scratch| {
                let (a32, rest) = scratch.split_at_mut(a.len());
                let (b32, o32) = rest.split_at_mut(b.len());
                T::load_f32(a, a32);
                T::load_f32(b, b32);
                batched_f32(a32, b32, o32, dims, threads);
                T::store_f32(o32, out);
            });
        }
    }
}

/// Runs `f` on `len` f32 of this thread's scratch. The scratch only grows, so a stream worker
/// that replays the same graph allocates nothing after the first run (its contents are
/// overwritten by `load_f32` before they are read).
fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < len {
                scratch.resize(len, 0.0);
            }
            f(&mut scratch[..len]);
        }
        // Re-entered (a kernel never calls matmul from inside matmul, but stay safe): fall
        // back to a one-off buffer.
        Err(_) => f(&mut vec![0.0; len]),
    });
}

fn batched_f32(a: &[f32], b: &[f32], out: &mut [f32], dims: MatmulDims, threads: usize) {
    let MatmulDims {
        m,
        k,
        n,
        rhs_batched,
        ..
    } = dims;
    for (i, (a, o)) in a
        .chunks_exact(m * k)
        .zip(out.chunks_exact_mut(m * n))
        .enumerate()
    {
        let b = if rhs_batched {
            &b[i * k * n..(i + 1) * k * n]
        } else {
            b
        };
        gemm_f32(a, b, o, m, k, n, threads);
    }
}

/// `out = a × b` for row-major `a: [m,k]`, `b: [k,n]`, `out: [m,n]`, all non-empty.
fn gemm_f32(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize, threads: usize) {
    assert!(
        m > 0 && k > 0 && n > 0 && a.len() == m * k && b.len() == k * n && out.len() == m * n,
        "gemm_f32: slices do not match [{m},{k}]x[{k},{n}]"
    );
    let parallelism = if threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    };
    let (k_i, n_i) = (to_isize(k), to_isize(n));
    // SAFETY: the assert above established a.len() == m*k, b.len() == k*n, out.len() == m*n.
    // With row-major strides (column stride 1, row stride k for a, n for b and out), the last
    // element gemm touches is at (m-1)*k + (k-1) < m*k in a, (k-1)*n + (n-1) < k*n in b and
    // (m-1)*n + (n-1) < m*n in out, so every access is in bounds. `out` is borrowed mutably, so
    // it aliases neither input; `read_dst = false` means its prior contents are never read.
    // The strides fit in isize because the slices exist (a slice is at most isize::MAX bytes).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n_i,
            false,
            a.as_ptr(),
            1,
            k_i,
            b.as_ptr(),
            1,
            n_i,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn to_isize(x: usize) -> isize {
    isize::try_from(x).expect("a dimension of an existing slice fits in isize")
}
