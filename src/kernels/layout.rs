//! Layout kernels: the strided copy behind `transpose`, `narrow` and `expand`, and the block
//! copy behind `cat`.
//!
//! They move elements and never compute, so they are generic over any `Copy` element (the
//! float dtypes and integer index dtypes alike) and give the input's bits exactly.
//!
//! *Strategy*: the output is walked in row-major order; an odometer over all dimensions but the
//! last keeps the input offset (`Σ index_d · stride_d`) up to date with one add per step, and the
//! last dimension is one `copy_from_slice` when its stride is 1, a fill when it is 0 (an
//! expanded dimension) and a strided gather otherwise.

/// The most dimensions a layout op takes (the odometer lives on the stack).
pub(crate) const MAX_RANK: usize = 64;

/// `out[i] = src[offset + Σ_d i_d · strides[d]]` for every row-major output index
/// `(i_0, …, i_{r-1})` of `shape`. A stride of 0 repeats an element (expand).
pub(crate) fn strided_copy<T: Copy>(
    src: &[T],
    out: &mut [T],
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) {
    assert_eq!(shape.len(), strides.len(), "strided_copy: rank of strides");
    assert!(
        shape.len() <= MAX_RANK,
        "strided_copy: rank {}",
        shape.len()
    );
    let n: usize = shape.iter().product();
    assert_eq!(out.len(), n, "strided_copy: output length");
    if n == 0 {
        return;
    }
    // The last element read must be inside `src`: every later index is in bounds then.
    let last = offset
        + shape
            .iter()
            .zip(strides)
            .map(|(d, s)| (d - 1) * s)
            .sum::<usize>();
    assert!(last < src.len(), "strided_copy: reads past the operand");
    let Some((&inner, outer_shape)) = shape.split_last() else {
        out[0] = src[offset];
        return;
    };
    let inner_stride = strides[shape.len() - 1];
    let outer_strides = &strides[..outer_shape.len()];
    let mut index = [0usize; MAX_RANK];
    let mut base = offset;
    for row in out.chunks_exact_mut(inner) {
        match inner_stride {
            1 => row.copy_from_slice(&src[base..base + inner]),
            0 => row.fill(src[base]),
            s => row
                .iter_mut()
                .zip(src[base..].iter().step_by(s))
                .for_each(|(o, x)| *o = *x),
        }
        // Advance the odometer over the outer dimensions, last fastest.
        for d in (0..outer_shape.len()).rev() {
            index[d] += 1;
            base += outer_strides[d];
            if index[d] < outer_shape[d] {
                break;
            }
            base -= outer_strides[d] * outer_shape[d];
            index[d] = 0;
        }
    }
}

/// `cat` of two operands seen as `[outer, a_inner]` and `[outer, b_inner]` (`*_inner` is the
/// operand's size in the cat dimension times the sizes after it): each output row is the `a`
/// row followed by the `b` row.
pub(crate) fn cat2<T: Copy>(a: &[T], b: &[T], out: &mut [T], a_inner: usize, b_inner: usize) {
    let row = a_inner + b_inner;
    assert_eq!(
        a.len() * row,
        out.len() * a_inner,
        "cat: first operand length"
    );
    assert_eq!(
        b.len() * row,
        out.len() * b_inner,
        "cat: second operand length"
    );
    if row == 0 {
        return;
    }
    for (i, o) in out.chunks_exact_mut(row).enumerate() {
        let (oa, ob) = o.split_at_mut(a_inner);
        oa.copy_from_slice(&a[i * a_inner..(i + 1) * a_inner]);
        ob.copy_from_slice(&b[i * b_inner..(i + 1) * b_inner]);
    }
}

/// Row-major strides of `shape` (in elements), written into `out[..shape.len()]`.
pub(crate) fn contiguous_strides(shape: &[usize], out: &mut [usize]) {
    let mut step = 1usize;
    for (s, &d) in out[..shape.len()].iter_mut().zip(shape).rev() {
        *s = step;
        step = step.saturating_mul(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain nested-loop transpose of a [2,3,4] tensor against the strided copy.
    #[test]
    fn transpose_narrow_expand_by_strides() {
        let src: Vec<i32> = (0..24).collect();
        // transpose(0, 2): out [4,3,2], out[k][j][i] = src[i][j][k].
        let mut out = vec![0; 24];
        strided_copy(&src, &mut out, &[4, 3, 2], &[1, 4, 12], 0);
        let mut want = Vec::new();
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..2 {
                    want.push(src[i * 12 + j * 4 + k]);
                }
            }
        }
        assert_eq!(out, want);
        // narrow(1, 1, 2): out [2,2,4] starting at row 1.
        let mut out = vec![0; 16];
        strided_copy(&src, &mut out, &[2, 2, 4], &[12, 4, 1], 4);
        assert_eq!(&out[..8], &src[4..12]);
        assert_eq!(&out[8..], &src[16..24]);
        // expand [3] -> [2,3] and [2,1] -> [2,3].
        let mut out = vec![0; 6];
        strided_copy(&[7, 8, 9], &mut out, &[2, 3], &[0, 1], 0);
        assert_eq!(out, [7, 8, 9, 7, 8, 9]);
        strided_copy(&[5, 6], &mut out, &[2, 3], &[1, 0], 0);
        assert_eq!(out, [5, 5, 5, 6, 6, 6]);
        // Rank 0 and empty.
        let mut one = [0];
        strided_copy(&[42], &mut one, &[], &[], 0);
        assert_eq!(one, [42]);
        strided_copy::<i32>(&[], &mut [], &[0, 3], &[3, 1], 0);
    }

    #[test]
    #[should_panic(expected = "reads past the operand")]
    fn strided_copy_refuses_out_of_bounds_reads() {
        let mut out = [0u8; 4];
        strided_copy(&[1u8, 2, 3], &mut out, &[2, 2], &[2, 1], 0);
    }

    #[test]
    fn cat_interleaves_rows() {
        let a = [1, 2, 3, 4]; // [2, 2]
        let b = [9, 8, 7, 6, 5, 4]; // [2, 3]
        let mut out = [0; 10];
        cat2(&a, &b, &mut out, 2, 3);
        assert_eq!(out, [1, 2, 9, 8, 7, 3, 4, 6, 5, 4]);
        let mut strides = [0; 3];
        contiguous_strides(&[2, 3, 4], &mut strides);
        assert_eq!(strides, [12, 4, 1]);
    }
}
