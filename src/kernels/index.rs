//! Index kernels: `topk` selection, `gather`, `scatter` and `index_select`.
//!
//! Every index is checked before it is used: an index outside its dimension is an `Err` naming
//! it (the op's output is then poisoned, R3.12), never an out-of-bounds access. The data kernels
//! only copy elements, so they are generic over any `Copy` element (`I32` included) and exact.
//! Nothing here knows of streams or tensors.

use std::cmp::Ordering;

use super::kind::IndexDims;
use crate::dtype::Element;

/// `index` as a position in `0..len`, or the error of R3.12 naming where it was found.
#[inline]
fn checked(index: i32, len: usize, at: usize) -> Result<usize, String> {
    usize::try_from(index)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| {
            format!(
                "index {index} (element {at} of the index tensor) is out of range for a \
                 dimension of size {len}"
            )
        })
}

/// `out[o, j, i] = src[o, index[o, j, i], i]` (torch's `gather`; `index` and `out` have the
/// geometry `[outer, idx_len, inner]`, `src` has `[outer, src_len, inner]`).
pub(crate) fn gather<T: Copy>(
    src: &[T],
    index: &[i32],
    out: &mut [T],
    d: IndexDims,
) -> Result<(), String> {
    let IndexDims {
        outer,
        src_len,
        idx_len,
        inner,
    } = d;
    assert!(
        src.len() == outer * src_len * inner
            && index.len() == outer * idx_len * inner
            && out.len() == index.len(),
        "gather: slice lengths do not match {d:?}"
    );
    for (at, (o, &ix)) in out.iter_mut().zip(index).enumerate() {
        let (row, i) = (at / (idx_len * inner), at % inner);
        let j = checked(ix, src_len, at)?;
        *o = src[(row * src_len + j) * inner + i];
    }
    Ok(())
}

/// `out[o, j, i] = src[o, index[j], i]` (torch's `index_select` with a 1-D `index` of
/// `idx_len` positions): whole `inner`-long runs are copied, so an embedding lookup is one
/// `memcpy` per token.
pub(crate) fn index_select<T: Copy>(
    src: &[T],
    index: &[i32],
    out: &mut [T],
    d: IndexDims,
) -> Result<(), String> {
    let IndexDims {
        outer,
        src_len,
        idx_len,
        inner,
    } = d;
    assert!(
        src.len() == outer * src_len * inner
            && index.len() == idx_len
            && out.len() == outer * idx_len * inner,
        "index_select: slice lengths do not match {d:?}"
    );
    let rows: Vec<usize> = index
        .iter()
        .enumerate()
        .map(|(at, &ix)| checked(ix, src_len, at))
        .collect::<Result<_, _>>()?;
    if inner == 0 {
        return Ok(());
    }
    for (o, out_block) in out.chunks_exact_mut(idx_len * inner).enumerate() {
        for (run, &j) in out_block.chunks_exact_mut(inner).zip(&rows) {
            let start = (o * src_len + j) * inner;
            run.copy_from_slice(&src[start..start + inner]);
        }
    }
    Ok(())
}

/// A copy of `dst` with `src[o, j, i]` written at `[o, index[o, j, i], i]`, in the index
/// tensor's row-major order, so that of repeated indices the last one wins (issue 13, on every
/// backend). Every index is checked before anything is written.
pub(crate) fn scatter<T: Copy>(
    dst: &[T],
    index: &[i32],
    src: &[T],
    out: &mut [T],
    d: IndexDims,
) -> Result<(), String> {
    let IndexDims {
        outer,
        src_len,
        idx_len,
        inner,
    } = d;
    assert!(
        dst.len() == outer * src_len * inner
            && index.len() == outer * idx_len * inner
            && src.len() == index.len()
            && out.len() == dst.len(),
        "scatter: slice lengths do not match {d:?}"
    );
    for (at, &ix) in index.iter().enumerate() {
        checked(ix, src_len, at)?;
    }
    out.copy_from_slice(dst);
    for (at, (&ix, &v)) in index.iter().zip(src).enumerate() {
        let (row, i) = (at / (idx_len * inner), at % inner);
        // In range: checked above (and `ix >= 0`).
        let j = ix as usize;
        out[(row * src_len + j) * inner + i] = v;
    }
    Ok(())
}

/// Descending order with NaN above every number (torch's `topk`), ties broken by the lower
/// position first: a total order, so the selection never depends on the sort's algorithm.
#[inline]
fn before(a: (f32, u32), b: (f32, u32)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Neither is NaN; -0.0 and +0.0 compare equal and fall to the position.
        _ => b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal),
    };
    by_value.then(a.1.cmp(&b.1))
}

/// For each row of `n` elements of `x`, the positions of its `k` largest values, largest first
/// (ties: lower position first; NaN counts as the largest), written to `out` (`k` per row).
/// Rows are widened to f32 exactly (R6.1), so the order is the order of the stored values.
pub(crate) fn topk_indices<T: Element>(x: &[T], out: &mut [i32], n: usize, k: usize) {
    assert!(
        k <= n
            && (n == 0 || x.len().is_multiple_of(n))
            && out.len() == x.len().checked_div(n).unwrap_or(0) * k,
        "topk: slice lengths do not match n = {n}, k = {k}"
    );
    if k == 0 || n == 0 {
        return;
    }
    let mut row = vec![0.0f32; n];
    let mut keys: Vec<(f32, u32)> = Vec::with_capacity(n);
    for (xs, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(k)) {
        T::load_f32(xs, &mut row);
        keys.clear();
        // Positions fit in u32 and i32: validation caps the dimension at i32::MAX.
        keys.extend(row.iter().enumerate().map(|(j, &v)| (v, j as u32)));
        if k < n {
            keys.select_nth_unstable_by(k - 1, |a, b| before(*a, *b));
        }
        let top = &mut keys[..k];
        top.sort_unstable_by(|a, b| before(*a, *b));
        for (slot, &(_, j)) in o.iter_mut().zip(top.iter()) {
            *slot = j as i32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(outer: usize, src_len: usize, idx_len: usize, inner: usize) -> IndexDims {
        IndexDims {
            outer,
            src_len,
            idx_len,
            inner,
        }
    }

    #[test]
    fn topk_orders_ties_and_nan() {
        let x = [1.0f32, 3.0, 3.0, f32::NAN, -0.0, 0.0];
        let mut out = [0i32; 4];
        topk_indices(&x, &mut out, 6, 4);
        assert_eq!(out, [3, 1, 2, 0]);
        // Two rows, k = 1; equal zeros keep the lower position.
        let mut out = [0i32; 2];
        topk_indices(&[-0.0f32, 0.0, 5.0, 7.0], &mut out, 2, 1);
        assert_eq!(out, [0, 1]);
    }

    #[test]
    fn gather_scatter_select_and_refusals() {
        // src [2, 3]: gather along dim 1 with index [2, 2].
        let src = [10, 11, 12, 20, 21, 22];
        let mut out = [0; 4];
        gather(&src, &[2, 0, 1, 1], &mut out, dims(2, 3, 2, 1)).unwrap();
        assert_eq!(out, [12, 10, 21, 21]);
        let err = gather(&src, &[3, 0, 1, 1], &mut out, dims(2, 3, 2, 1)).unwrap_err();
        assert!(err.contains("index 3") && err.contains("size 3"), "{err}");
        assert!(gather(&src, &[-1, 0, 1, 1], &mut out, dims(2, 3, 2, 1)).is_err());
        // Repeated indices: the last in row-major order wins.
        let mut out = [0; 6];
        scatter(
            &src,
            &[1, 1, 0, 0],
            &[7, 8, 5, 6],
            &mut out,
            dims(2, 3, 2, 1),
        )
        .unwrap();
        assert_eq!(out, [10, 8, 12, 6, 21, 22]);
        // A bad index writes nothing.
        let mut out = [0; 6];
        assert!(
            scatter(
                &src,
                &[1, 9, 0, 0],
                &[7, 8, 5, 6],
                &mut out,
                dims(2, 3, 2, 1)
            )
            .is_err()
        );
        assert_eq!(out, [0; 6]);
        // index_select rows of [3, 2] (an embedding lookup).
        let table = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0.0f32; 6];
        index_select(&table, &[2, 0, 2], &mut out, dims(1, 3, 3, 2)).unwrap();
        assert_eq!(out, [5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
        assert!(index_select(&table, &[3], &mut out[..2], dims(1, 3, 1, 2)).is_err());
    }
}
