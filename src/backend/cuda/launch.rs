//! What one op launches on CUDA, decided in plain Rust (tested without a driver): the kernel
//! name, the grid and the arguments, from the validated [`Op`] and its operands' pointers.
//!
//! Owns the argument layouts the kernels of `source` expect, including the by-value
//! `ts_layout` / `ts_bcast` parameter structs (rank, shape and strides as 64-bit words).

use std::ffi::c_void;

use super::Operand;
use super::source::{self, MAX_RANK};
use crate::kernels::MatmulDims;
use crate::ops::op::{Op, OpKind};

/// One kernel argument, kept alive while its address is passed to the launch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    /// A device pointer.
    P(u64),
    /// A count (`unsigned long long`).
    U(u64),
    F(f32),
    /// A by-value struct of 64-bit words (`ts_layout`, `ts_bcast`).
    Words(Vec<u64>),
}

impl Arg {
    pub(super) fn as_param(&mut self) -> *mut c_void {
        match self {
            Arg::P(p) | Arg::U(p) => (p as *mut u64).cast(),
            Arg::F(f) => (f as *mut f32).cast(),
            Arg::Words(w) => w.as_mut_ptr().cast(),
        }
    }
}

/// A kernel launch: name, `(grid, block)` and arguments.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Launch {
    pub(super) kernel: String,
    pub(super) grid: (u32, u32),
    pub(super) args: Vec<Arg>,
}

/// What an op needs on the device.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Spec {
    Kernel(Launch),
    Gemm(MatmulDims),
    /// Nothing to compute (an empty output, and for index ops no index to check).
    Nothing,
}

/// Whether `op` checks indices and so needs an error flag word (R3.12, R6.12).
pub(super) fn needs_flag(op: &Op) -> bool {
    matches!(
        op.kind,
        OpKind::Gather(_) | OpKind::Scatter(_) | OpKind::IndexSelect(_)
    )
}

fn product(xs: &[usize]) -> usize {
    xs.iter().product()
}

/// The launch of `op` reading `ins` and writing `out`; `flag` is the device address of the
/// op's error word (index ops only, see [`needs_flag`]).
///
/// # Errors
/// A description when the operands do not fit the op (a tagstream bug: validation ran).
pub(super) fn spec(op: &Op, ins: &[Operand], out: u64, flag: u64) -> Result<Spec, String> {
    let n = op.out_len();
    let dtype = op.out_dtype;
    let want = match op.kind {
        OpKind::Scatter(_) => 3,
        OpKind::Binary(_)
        | OpKind::Broadcast { .. }
        | OpKind::RmsNorm { .. }
        | OpKind::Matmul(_)
        | OpKind::Gather(_)
        | OpKind::IndexSelect(_)
        | OpKind::Cat { .. } => 2,
        _ => 1,
    };
    if ins.len() != want {
        return Err(format!("{} got {} operands", op.name(), ins.len()));
    }
    if needs_flag(op) && flag == 0 {
        return Err(format!("{}: no error flag", op.name()));
    }
    let p = |i: usize| Arg::P(ins[i].ptr);
    let u = |x: usize| Arg::U(x as u64);
    let flat = source::elementwise_config;
    let kernel = |kernel: String, grid: (u32, u32), args: Vec<Arg>| {
        Spec::Kernel(Launch { kernel, grid, args })
    };
    let last = op.out_shape.last().copied().unwrap_or(1).max(1);
    // Work items: 0 means nothing to launch.
    let (work, spec) = match op.kind {
        OpKind::Binary(b) => (
            n,
            kernel(
                source::binary_name(b, dtype),
                flat(n),
                vec![p(0), p(1), Arg::P(out), u(n)],
            ),
        ),
        OpKind::Unary(un) => (
            n,
            kernel(
                source::unary_name(un, dtype),
                flat(n),
                vec![p(0), Arg::P(out), u(n)],
            ),
        ),
        OpKind::ToDType(to) => (
            n,
            kernel(
                source::convert_name(ins[0].dtype, to),
                flat(n),
                vec![p(0), Arg::P(out), u(n)],
            ),
        ),
        OpKind::Softmax => (
            n,
            kernel(
                source::row_name("softmax", dtype),
                source::row_config(n / last),
                vec![p(0), Arg::P(out), u(n / last), u(last)],
            ),
        ),
        OpKind::RmsNorm { eps } => (
            n,
            kernel(
                source::row_name("rms_norm", dtype),
                source::row_config(n / last),
                vec![p(0), p(1), Arg::P(out), u(n / last), u(last), Arg::F(eps)],
            ),
        ),
        OpKind::Matmul(dims) => (1, Spec::Gemm(dims)),
        OpKind::Broadcast { op: b, mask } => {
            let shape = &op.out_shape;
            let rank = shape.len();
            if rank > MAX_RANK {
                return Err(format!("{}: rank {rank} > {MAX_RANK}", op.name()));
            }
            // ts_bcast: rank, shape, then each operand's strides (0 where it repeats), as
            // kernels::binary_broadcast computes them.
            let mut w = vec![0u64; 1 + 3 * MAX_RANK];
            w[0] = rank as u64;
            let mut next = [1u64; 2];
            for d in (0..rank).rev() {
                w[1 + d] = shape[d] as u64;
                for k in 0..2 {
                    if mask[k] >> d & 1 == 0 {
                        w[1 + (1 + k) * MAX_RANK + d] = next[k];
                        next[k] *= shape[d] as u64;
                    }
                }
            }
            (
                n,
                kernel(
                    source::broadcast_name(b, dtype),
                    flat(n),
                    vec![p(0), p(1), Arg::P(out), u(n), Arg::Words(w)],
                ),
            )
        }
        OpKind::Scalar { op: b, value } => (
            n,
            kernel(
                source::scalar_name(b, dtype),
                flat(n),
                vec![p(0), Arg::P(out), u(n), Arg::F(value)],
            ),
        ),
        OpKind::Reduce(d) => (
            n,
            kernel(
                source::reduce_name(d.op, dtype),
                flat(n),
                vec![p(0), Arg::P(out), u(d.outer), u(d.len), u(d.inner)],
            ),
        ),
        OpKind::SoftmaxDim { dim } => {
            let s = &op.out_shape;
            let (outer, inner) = (product(&s[..dim]), product(&s[dim + 1..]));
            (
                n,
                kernel(
                    source::row_name("softmax_dim", dtype),
                    flat(outer * inner),
                    vec![p(0), Arg::P(out), u(outer), u(s[dim]), u(inner)],
                ),
            )
        }
        OpKind::TopkIndices { n: len, k } => {
            let rows = n.checked_div(k).unwrap_or(0);
            (
                n,
                kernel(
                    source::row_name("topk", ins[0].dtype),
                    (rows.clamp(1, 65_535) as u32, source::TOPK_BLOCK),
                    vec![p(0), Arg::P(out), u(rows), u(len), u(k)],
                ),
            )
        }
        OpKind::Transpose { .. } | OpKind::Narrow { .. } | OpKind::Expand { .. } => {
            let rank = op.out_shape.len();
            let mut strides = [0usize; MAX_RANK];
            let offset = op
                .copy_layout(&mut strides)
                .ok_or_else(|| format!("{}: rank {rank} > {MAX_RANK}", op.name()))?;
            // ts_layout: rank, offset, shape, strides.
            let mut w = vec![0u64; 2 + 2 * MAX_RANK];
            w[0] = rank as u64;
            w[1] = offset as u64;
            for d in 0..rank {
                w[2 + d] = op.out_shape[d] as u64;
                w[2 + MAX_RANK + d] = strides[d] as u64;
            }
            (
                n,
                kernel(
                    source::row_name("strided_copy", dtype),
                    flat(n),
                    vec![p(0), Arg::P(out), u(n), Arg::Words(w)],
                ),
            )
        }
        OpKind::Cat { dim, split } => {
            let s = &op.out_shape;
            let inner = product(&s[dim + 1..]);
            let (ai, bi) = (split * inner, (s[dim] - split) * inner);
            (
                n,
                kernel(
                    source::row_name("cat", dtype),
                    flat(n),
                    vec![p(0), p(1), Arg::P(out), u(n), u(ai), u(bi)],
                ),
            )
        }
        OpKind::Gather(d) => (
            n,
            kernel(
                source::row_name("gather", dtype),
                flat(n),
                vec![
                    p(0),
                    p(1),
                    Arg::P(out),
                    u(n),
                    u(d.src_len),
                    u(d.idx_len),
                    u(d.inner),
                    Arg::P(flag),
                ],
            ),
        ),
        OpKind::IndexSelect(d) => {
            // Every index is checked even when the output is empty (as kernels::index_select).
            let items = n.max(d.idx_len);
            (
                items,
                kernel(
                    source::row_name("index_select", dtype),
                    flat(items),
                    vec![
                        p(0),
                        p(1),
                        Arg::P(out),
                        u(items),
                        u(n),
                        u(d.src_len),
                        u(d.idx_len),
                        u(d.inner),
                        Arg::P(flag),
                    ],
                ),
            )
        }
        OpKind::Scatter(d) => {
            // One thread per (outer, inner) column, looping over the index rows in order.
            let cols = d.outer * d.inner;
            (
                cols,
                kernel(
                    source::row_name("scatter", dtype),
                    flat(cols),
                    vec![
                        p(0),
                        p(1),
                        p(2),
                        Arg::P(out),
                        u(cols),
                        u(d.src_len),
                        u(d.idx_len),
                        u(d.inner),
                        Arg::P(flag),
                    ],
                ),
            )
        }
    };
    Ok(if work == 0 { Spec::Nothing } else { spec })
}

/// The `u64` an index op's flag word holds when no index was out of range.
pub(super) const FLAG_CLEAR: u64 = u64::MAX;

/// The CPU's message (kernels::index) for a flag word that is not [`FLAG_CLEAR`]: the first bad
/// index (position in the index tensor, its value) for a dimension of `len`.
pub(super) fn flag_message(word: u64, len: usize) -> Option<String> {
    (word != FLAG_CLEAR).then(|| {
        let (at, index) = (word >> 32, word as u32 as i32);
        let at = if at >= 0xffff_fffe {
            format!("at or after element {at}")
        } else {
            format!("element {at}")
        };
        format!(
            "index {index} ({at} of the index tensor) is out of range for a dimension of size {len}"
        )
    })
}

/// The size of the indexed dimension of an index op (for its error message).
pub(super) fn indexed_len(op: &Op) -> usize {
    match op.kind {
        OpKind::Gather(d) | OpKind::Scatter(d) | OpKind::IndexSelect(d) => d.src_len,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::kernels::{BinaryOp, ReduceOp};
    use crate::ops::op::Shaped;

    fn ops(d: DType) -> Vec<Op> {
        let m = |s: &'static [usize]| (s, d);
        let i = |s: &'static [usize]| (s, DType::I32);
        let copy = |s: crate::error::Result<Shaped>| match s.unwrap() {
            Shaped::Copy(op) => op,
            Shaped::View(v) => panic!("a view {v:?}"),
        };
        let mut v = vec![
            copy(Op::transpose(m(&[2, 3, 4]), 0, 2)),
            copy(Op::narrow(m(&[2, 3, 4]), 1, 1, 2)),
            copy(Op::expand(m(&[3, 1]), &[2, 3, 5])),
            Op::cat2(m(&[2, 3]), m(&[2, 1]), 1).unwrap(),
            Op::gather(m(&[2, 3]), 1, i(&[2, 4])).unwrap(),
            Op::scatter(m(&[2, 3]), 1, i(&[2, 4]), m(&[2, 4])).unwrap(),
            Op::index_select(m(&[5, 3]), 0, i(&[7])).unwrap(),
        ];
        if d.is_float() {
            v.extend([
                Op::binary(BinaryOp::Div, m(&[4, 1, 5]), m(&[3, 1])).unwrap(),
                Op::scalar(BinaryOp::Sub, m(&[4]), 2.5).unwrap(),
                Op::reduce(ReduceOp::Mean, m(&[2, 3, 4]), 1, false).unwrap(),
                Op::softmax_dim(m(&[2, 3, 4]), 1).unwrap(),
                Op::topk_indices(m(&[3, 9]), 4).unwrap(),
            ]);
        }
        v
    }

    fn operands(op: &Op, d: DType) -> Vec<Operand> {
        let count = match op.kind {
            OpKind::Scatter(_) => 3,
            OpKind::Gather(_)
            | OpKind::IndexSelect(_)
            | OpKind::Cat { .. }
            | OpKind::Broadcast { .. } => 2,
            _ => 1,
        };
        (0..count)
            .map(|i| Operand {
                ptr: 0x1000 * (i as u64 + 1),
                dtype: if i == 1 && needs_flag(op) {
                    DType::I32
                } else {
                    d
                },
            })
            .collect()
    }

    /// Every round-2 op on every dtype it takes launches a kernel the source defines, with a
    /// grid that covers its work and the flag only where it checks indices.
    #[test]
    fn every_new_op_launches_a_defined_kernel() {
        let names = source::all_names();
        for d in DType::ALL {
            for op in ops(d) {
                let ins = operands(&op, d);
                let flag = if needs_flag(&op) { 0xf1a6 } else { 0 };
                let Spec::Kernel(l) = spec(&op, &ins, 0x9000, flag).unwrap() else {
                    panic!("{op:?}: no kernel");
                };
                assert!(names.contains(&l.kernel), "{} not in all_names", l.kernel);
                assert!(l.grid.0 >= 1 && l.grid.1 >= 1);
                assert_eq!(l.args.contains(&Arg::P(0xf1a6)), needs_flag(&op), "{op:?}");
                if needs_flag(&op) {
                    assert!(
                        spec(&op, &ins, 0x9000, 0).is_err(),
                        "an index op needs a flag"
                    );
                }
                if ins.len() > 1 {
                    let fewer = &ins[..ins.len() - 1];
                    assert!(spec(&op, fewer, 0x9000, flag).is_err(), "{op:?}");
                }
            }
        }
    }

    /// The by-value layouts hold what kernels::strided_copy and binary_broadcast walk.
    #[test]
    fn layout_words_match_the_cpu_strides() {
        let op = match Op::transpose((&[2, 3, 4], DType::F32), 0, 2).unwrap() {
            Shaped::Copy(op) => op,
            Shaped::View(_) => unreachable!(),
        };
        let ins = operands(&op, DType::F32);
        let Spec::Kernel(l) = spec(&op, &ins, 1, 0).unwrap() else {
            panic!()
        };
        let Arg::Words(w) = &l.args[3] else { panic!() };
        assert_eq!((w[0], w[1]), (3, 0));
        assert_eq!(&w[2..5], &[4, 3, 2]);
        assert_eq!(&w[2 + MAX_RANK..5 + MAX_RANK], &[1, 4, 12]);
        // [4,1,5] / [3,1]: a's strides [5,0,1], b's (padded [1,3,1]) [0,1,0].
        let op = Op::binary(
            BinaryOp::Div,
            (&[4, 1, 5], DType::F32),
            (&[3, 1], DType::F32),
        )
        .unwrap();
        let ins = operands(&op, DType::F32);
        let Spec::Kernel(l) = spec(&op, &ins, 1, 0).unwrap() else {
            panic!()
        };
        let Arg::Words(w) = &l.args[4] else { panic!() };
        assert_eq!(w[0], 3);
        assert_eq!(&w[1..4], &[4, 3, 5]);
        assert_eq!(&w[1 + MAX_RANK..4 + MAX_RANK], &[5, 0, 1]);
        assert_eq!(&w[1 + 2 * MAX_RANK..4 + 2 * MAX_RANK], &[0, 1, 0]);
    }

    /// Empty work launches nothing, except an index_select that still has indices to check.
    #[test]
    fn empty_outputs_and_index_checks() {
        let i = |s: &'static [usize]| (s, DType::I32);
        let op = Op::index_select((&[0, 3], DType::F32), 1, i(&[2])).unwrap();
        assert_eq!(op.out_len(), 0);
        let ins = operands(&op, DType::F32);
        assert!(matches!(spec(&op, &ins, 1, 8).unwrap(), Spec::Kernel(_)));
        let op = Op::topk_indices((&[3, 4], DType::F32), 0).unwrap();
        let ins = operands(&op, DType::F32);
        assert_eq!(spec(&op, &ins, 1, 0).unwrap(), Spec::Nothing);
        let op = Op::reduce(ReduceOp::Sum, (&[0, 4], DType::F32), 1, false).unwrap();
        let ins = operands(&op, DType::F32);
        assert_eq!(spec(&op, &ins, 1, 0).unwrap(), Spec::Nothing);
    }

    #[test]
    fn flag_messages_name_the_first_bad_index() {
        assert_eq!(flag_message(FLAG_CLEAR, 3), None);
        let word = (5u64 << 32) | u64::from((-2i32) as u32);
        assert_eq!(
            flag_message(word, 3).unwrap(),
            "index -2 (element 5 of the index tensor) is out of range for a dimension of size 3"
        );
    }
}
