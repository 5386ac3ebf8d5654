//! Differential property test: random multi-stream closures under `Mode::Eager` and under
//! `Mode::ReduceOverhead` (a capture, two replays) must agree, an independent oracle must
//! predict exactly which programs are accepted and how the others are refused, and every op
//! of a serial single-stream run must match the serial reference (R6.5).
//!
//! Programs: 1–60 actions on 1–4 streams (`"default"`, `"diff-1"`..`"diff-3"`) in nested scopes (a tree, so
//! guards drop LIFO; R2.4–R2.7); values are `[n,n]` tensors of one dtype, each made by an entry
//! of [`MENU`]: a few steps covering every op (R6.11, R6.12): broadcasting `add sub mul div`
//! (with the `[n]` weight input and with reductions), `add_scalar`, `mul_scalar`,
//! `sum`/`mean`/`max` with and without `keepdim`, `softmax`, `softmax_dim`, `rms_norm`, `matmul`,
//! a `to_dtype` round trip, the views `reshape`/`unsqueeze`, `transpose`, `narrow`, `expand` and
//! `Tensor::cat` (views or copies by their shapes), `topk`, `gather`, the three-operand
//! `scatter` and `index_select`. Index operands are `topk` positions of another value (in range,
//! made on a stream) or `I32` host constants (R4.3); in about a quarter of the programs some
//! constants hold an index out of range, which poisons that op's output and what is computed
//! from it while other outputs stay exact (R3.12). Host constants (`full`) made in the closure
//! (R4.3, SC21); `record_tagged_stream` (R4.10); three process-wide events recorded and waited
//! anywhere (R1.7–R1.11, R4.5); operands drawn among earlier values, so many programs race.
//!
//! Oracle: a vector clock per stream over the program's entries and the fork/join closure
//! (R3.4, R4.4); views issue nothing and pass their operand's producer on (R6.11). `Mode::Eager` (R3.11) refuses the first read not ordered after its producer
//! with `DataRace` naming both ops and streams (R3.5, R7.2); a wait with no earlier record in
//! the program is a no-op (R1.9; each run starts after `synchronize`, so a record left by an
//! earlier run orders nothing new, R1.8, R3.6). A capture refuses the same read, naming
//! which op of the closure each was (R4.8, R7.2), unless such a wait comes first in issue
//! order: `WaitWithoutRecord` (R4.6, SC33, SC34). Accepted programs give bit-identical outputs (NaN == NaN) eagerly, in the
//! capturing call, in two replays on fresh inputs and in a serial single-stream run of the same
//! ops (R4.13, R5.6, R6.4), the same outputs poisoned in each (R3.12), and `synchronize` reports
//! the failure exactly when an out-of-range index ran. In the serial run each step's output is
//! compared with the serial reference computed from its operands' values: bit for bit for
//! elementwise, reduction, shape and index ops (R6.6, R6.11, R6.12), within R6.8 for
//! `softmax`/`rms_norm` and R6.9 for `matmul`; held outputs survive
//! replays (R5.5); stats count 1 capture, 2 replays (R5.10); a refused capture caches nothing
//! and refuses again (R4.12). Each case runs in a thread with a 30 s timeout (R7.1).
//!
//! `TAGSTREAM_DIFF_CASES` sets the number of cases (default 64); the ignored test
//! `differential_10k` runs 10,000 (`cargo test --test differential -- --ignored`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tagstream::ops::{
    TaggedEvent, create_tagged_event, record_tagged_stream, tagged_event_record, tagged_event_wait,
};
use tagstream::reference::{self, BinaryOp, IndexDims, MatmulDims, ReduceDims, ReduceOp, UnaryOp};
use tagstream::scope::stream_switch;
use tagstream::{CompileConfig, CompileStats, DType, Error, Mode, Tensor, compile, synchronize};

const STREAMS: [&str; 4] = ["default", "diff-1", "diff-2", "diff-3"];
const EVENTS: usize = 3;
const MAX_DEPTH: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A register of a menu entry's steps: 0 and 1 are the operands `a` and `b`, 2 the `[n]`
/// weight input; each step appends its output (`topk` two: values, then positions).
type Reg = usize;

/// One tensor call (or a fixed pair of them) of a menu entry.
#[derive(Debug, Clone, PartialEq)]
enum St {
    Bin(BinaryOp, Reg, Reg),
    Scalar(BinaryOp, Reg, f32),
    Unary(UnaryOp, Reg),
    Softmax(Reg),
    SoftmaxDim(Reg, usize),
    RmsNorm(Reg, Reg),
    Matmul(Reg, Reg),
    /// `to_dtype` to the other float dtype and back: two entries.
    RoundTrip(Reg),
    /// `Tensor::full(shape of reg, 0.75)`: a host constant, no entry.
    Full(Reg),
    Reduce(ReduceOp, Reg, usize, bool),
    Reshape(Reg, Vec<usize>),
    Unsqueeze(Reg, usize),
    Transpose(Reg, usize, usize),
    Narrow(Reg, usize, usize, usize),
    Expand(Reg, Vec<usize>),
    Cat(Vec<Reg>, usize),
    /// `topk(k)`: the `topk` entry, then the `gather` of the values.
    Topk(Reg, usize),
    Gather(Reg, usize, Reg),
    /// `data.scatter(dim, index, src)`: three operands.
    Scatter(Reg, usize, Reg, Reg),
    IndexSelect(Reg, usize, Reg),
    /// An `I32` host constant (no entry); `true`: it holds an index out of range.
    Index(Vec<f32>, Vec<usize>, bool),
}

/// Which index operand a menu entry takes: none, `[n,n]` (gather, scatter) or `[n]`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ix {
    No,
    Full,
    Row,
}

/// Builds a menu entry's steps, tracking each register's shape.
struct Steps {
    steps: Vec<St>,
    shapes: Vec<Vec<usize>>,
}

impl Steps {
    fn push(&mut self, st: St) -> Reg {
        let r = self.shapes.len();
        let out = out_shapes(&st, &self.shapes);
        self.shapes.extend(out);
        self.steps.push(st);
        r
    }
}

/// `(entry, n, index register)` → the result register, an `[n,n]` value.
type Build = fn(&mut Steps, usize, Reg) -> Reg;

use St::*;
/// The op menu; every result is `[n,n]` of the program's dtype.
const MENU: [(&str, Ix, Build); 31] = [
    ("add", Ix::No, |s, _, _| s.push(Bin(BinaryOp::Add, 0, 1))),
    ("sub", Ix::No, |s, _, _| s.push(Bin(BinaryOp::Sub, 0, 1))),
    ("mul", Ix::No, |s, _, _| s.push(Bin(BinaryOp::Mul, 0, 1))),
    ("div", Ix::No, |s, _, _| s.push(Bin(BinaryOp::Div, 0, 1))),
    ("relu", Ix::No, |s, _, _| s.push(Unary(UnaryOp::Relu, 0))),
    ("silu", Ix::No, |s, _, _| s.push(Unary(UnaryOp::Silu, 0))),
    ("gelu", Ix::No, |s, _, _| s.push(Unary(UnaryOp::Gelu, 0))),
    ("exp", Ix::No, |s, _, _| s.push(Unary(UnaryOp::Exp, 0))),
    ("softmax", Ix::No, |s, _, _| s.push(Softmax(0))),
    ("softmax_dim", Ix::No, |s, _, _| s.push(SoftmaxDim(0, 0))),
    ("rms_norm", Ix::No, |s, _, _| s.push(RmsNorm(0, 2))),
    ("matmul", Ix::No, |s, _, _| s.push(Matmul(0, 1))),
    ("to_dtype", Ix::No, |s, _, _| s.push(RoundTrip(0))),
    ("full", Ix::No, |s, _, _| s.push(Full(0))),
    ("reshape", Ix::No, |s, n, _| {
        let r = s.push(Reshape(0, vec![n * n]));
        s.push(Reshape(r, vec![n, n]))
    }),
    ("unsqueeze", Ix::No, |s, n, _| {
        let u = s.push(Unsqueeze(0, 0));
        s.push(Reshape(u, vec![n, n]))
    }),
    // [n,n] + [n]: the weight broadcast over rows.
    ("add_row", Ix::No, |s, _, _| {
        s.push(Bin(BinaryOp::Add, 0, 2))
    }),
    ("add_scalar", Ix::No, |s, _, _| {
        s.push(Scalar(BinaryOp::Add, 0, 0.5))
    }),
    ("mul_scalar", Ix::No, |s, _, _| {
        s.push(Scalar(BinaryOp::Mul, 0, -1.5))
    }),
    // a * b.max(1, keepdim) ([n,1] broadcast over columns).
    ("max", Ix::No, |s, _, _| {
        let m = s.push(Reduce(ReduceOp::Max, 1, 1, true));
        s.push(Bin(BinaryOp::Mul, 0, m))
    }),
    // b.mean(0) - a: the smaller operand on the left.
    ("mean", Ix::No, |s, _, _| {
        let m = s.push(Reduce(ReduceOp::Mean, 1, 0, false));
        s.push(Bin(BinaryOp::Sub, m, 0))
    }),
    // a / b.sum(1).unsqueeze(1).expand([n,n]): expand copies unless n = 1.
    ("sum", Ix::No, |s, n, _| {
        let m = s.push(Reduce(ReduceOp::Sum, 1, 1, false));
        let u = s.push(Unsqueeze(m, 1));
        let e = s.push(Expand(u, vec![n, n]));
        s.push(Bin(BinaryOp::Div, 0, e))
    }),
    // A copy, or a view for n = 1.
    ("transpose", Ix::No, |s, _, _| s.push(Transpose(0, 0, 1))),
    // Rows rolled up by one: two narrows (a copy, an empty one for n = 1; a view) and a cat.
    ("cat", Ix::No, |s, n, _| {
        let p = s.push(Narrow(0, 0, 1, n - 1));
        let q = s.push(Narrow(1, 0, 0, 1));
        s.push(Cat(vec![p, q], 0))
    }),
    // cat([a, b, a], 1).narrow(1, n, n) == b: three parts are two cat entries.
    ("narrow", Ix::No, |s, n, _| {
        let c = s.push(Cat(vec![0, 1, 0], 1));
        s.push(Narrow(c, 1, n, n))
    }),
    ("topk", Ix::No, |s, n, _| s.push(Topk(0, n))),
    ("gather", Ix::Full, |s, _, ix| s.push(Gather(0, 1, ix))),
    ("gather0", Ix::Full, |s, _, ix| s.push(Gather(0, 0, ix))),
    ("scatter", Ix::Full, |s, _, ix| s.push(Scatter(0, 1, ix, 1))),
    ("scatter0", Ix::Full, |s, _, ix| {
        s.push(Scatter(0, 0, ix, 1))
    }),
    ("index_select", Ix::Row, |s, _, ix| {
        s.push(IndexSelect(0, 1, ix))
    }),
];

/// Broadcast shape of `a` and `b` (R6.11); the menu only makes compatible ones.
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], d: usize| (d + s.len()).checked_sub(rank).map_or(1, |i| s[i]);
    (0..rank).map(|d| at(a, d).max(at(b, d))).collect()
}

/// Output shapes of `st` given the registers' shapes.
fn out_shapes(st: &St, sh: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let one = |s: Vec<usize>| vec![s];
    match st {
        Bin(_, x, y) => one(broadcast(&sh[*x], &sh[*y])),
        Scalar(_, x, _) | Unary(_, x) | Softmax(x) | SoftmaxDim(x, _) | RmsNorm(x, _) => {
            one(sh[*x].clone())
        }
        RoundTrip(x) | Full(x) | Scatter(x, ..) => one(sh[*x].clone()),
        Matmul(x, y) => one(vec![sh[*x][0], sh[*y][1]]),
        Reduce(_, x, dim, keep) => {
            let mut s = sh[*x].clone();
            if *keep {
                s[*dim] = 1;
            } else {
                s.remove(*dim);
            }
            one(s)
        }
        Reshape(_, s) | Expand(_, s) | Index(_, s, _) => one(s.clone()),
        Unsqueeze(x, d) => {
            let mut s = sh[*x].clone();
            s.insert(*d, 1);
            one(s)
        }
        Transpose(x, d0, d1) => {
            let mut s = sh[*x].clone();
            s.swap(*d0, *d1);
            one(s)
        }
        Narrow(x, dim, _, len) => {
            let mut s = sh[*x].clone();
            s[*dim] = *len;
            one(s)
        }
        Cat(parts, dim) => {
            let mut s = sh[parts[0]].clone();
            s[*dim] = parts.iter().map(|&p| sh[p][*dim]).sum();
            one(s)
        }
        Topk(x, k) => {
            let mut s = sh[*x].clone();
            *s.last_mut().unwrap() = *k;
            vec![s.clone(), s]
        }
        Gather(_, _, i) => one(sh[*i].clone()),
        IndexSelect(x, dim, i) => {
            let mut s = sh[*x].clone();
            s[*dim] = sh[*i][0];
            one(s)
        }
    }
}

/// The register `st` is a view of (no entry, R6.11), by the shape rules of R6.11.
fn view_of(st: &St, sh: &[Vec<usize>]) -> Option<Reg> {
    let len = |s: &[usize]| s.iter().product::<usize>();
    match st {
        Reshape(x, _) | Unsqueeze(x, _) => Some(*x),
        Transpose(x, d0, d1) => {
            let s = &sh[*x];
            let (lo, hi) = ((*d0).min(*d1), (*d0).max(*d1));
            let moved = s[lo..=hi].iter().filter(|&&d| d != 1).count();
            (moved <= 1 || s.contains(&0)).then_some(*x)
        }
        Narrow(x, dim, _, n) => (sh[*x][*dim] == *n).then_some(*x),
        Expand(x, to) => (len(to) == len(&sh[*x])).then_some(*x),
        Cat(parts, _) if parts.len() == 1 => Some(parts[0]),
        _ => None,
    }
}

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
    }
}

/// The entries `st` issues when it is not a view, each with the registers it checks in order
/// (`None`: a fresh value of the same step). Empty for host constants.
fn entries(st: &St) -> Vec<(&'static str, Vec<Reg>)> {
    match st {
        Bin(op, x, y) => vec![(binary_name(*op), vec![*x, *y])],
        Scalar(op, x, _) => {
            let name = [("add_scalar"), ("mul_scalar")][(*op == BinaryOp::Mul) as usize];
            vec![(name, vec![*x])]
        }
        Unary(op, x) => {
            let name = match op {
                UnaryOp::Relu => "relu",
                UnaryOp::Silu => "silu",
                UnaryOp::Gelu => "gelu",
                UnaryOp::Exp => "exp",
            };
            vec![(name, vec![*x])]
        }
        Softmax(x) => vec![("softmax", vec![*x])],
        SoftmaxDim(x, _) => vec![("softmax_dim", vec![*x])],
        RmsNorm(x, w) => vec![("rms_norm", vec![*x, *w])],
        Matmul(x, y) => vec![("matmul", vec![*x, *y])],
        RoundTrip(x) => vec![("to_dtype", vec![*x]), ("to_dtype", vec![])],
        Full(_) | Index(..) => vec![],
        Reduce(op, x, ..) => {
            let name = match op {
                ReduceOp::Sum => "sum",
                ReduceOp::Mean => "mean",
                ReduceOp::Max => "max",
            };
            vec![(name, vec![*x])]
        }
        // Always views (`view_of`).
        Reshape(..) | Unsqueeze(..) => vec![],
        Transpose(x, ..) => vec![("transpose", vec![*x])],
        Narrow(x, ..) => vec![("narrow", vec![*x])],
        Expand(x, _) => vec![("expand", vec![*x])],
        Cat(parts, _) => {
            // The balanced tree of `Tensor::cat`: pairs per level, an odd last part carried up.
            let mut level: Vec<Option<Reg>> = parts.iter().map(|&p| Some(p)).collect();
            let mut out = Vec::new();
            while level.len() > 1 {
                let mut next = Vec::new();
                for pair in level.chunks(2) {
                    match pair {
                        [a, b] => {
                            out.push(("cat", a.iter().chain(b).copied().collect()));
                            next.push(None);
                        }
                        [a] => next.push(*a),
                        _ => unreachable!(),
                    }
                }
                level = next;
            }
            out
        }
        Topk(x, _) => vec![("topk", vec![*x]), ("gather", vec![*x])],
        Gather(x, _, i) => vec![("gather", vec![*x, *i])],
        Scatter(x, _, i, s) => vec![("scatter", vec![*x, *i, *s])],
        IndexSelect(x, _, i) => vec![("index_select", vec![*x, *i])],
    }
}

/// Issues `st` on the current stream, appending its outputs to `r`.
fn run_step(st: &St, r: &mut Vec<Tensor>) -> tagstream::Result<()> {
    let t = match st {
        Bin(op, x, y) => match op {
            BinaryOp::Add => r[*x].add(&r[*y]),
            BinaryOp::Sub => r[*x].sub(&r[*y]),
            BinaryOp::Mul => r[*x].mul(&r[*y]),
            BinaryOp::Div => r[*x].div(&r[*y]),
        }?,
        Scalar(BinaryOp::Mul, x, v) => r[*x].mul_scalar(*v)?,
        Scalar(_, x, v) => r[*x].add_scalar(*v)?,
        Unary(op, x) => match op {
            UnaryOp::Relu => r[*x].relu(),
            UnaryOp::Silu => r[*x].silu(),
            UnaryOp::Gelu => r[*x].gelu(),
            UnaryOp::Exp => r[*x].exp(),
        }?,
        Softmax(x) => r[*x].softmax()?,
        SoftmaxDim(x, d) => r[*x].softmax_dim(*d)?,
        RmsNorm(x, w) => r[*x].rms_norm(&r[*w], 1e-5)?,
        Matmul(x, y) => r[*x].matmul(&r[*y])?,
        RoundTrip(x) => {
            let a = &r[*x];
            a.to_dtype(other_dtype(a.dtype()))?.to_dtype(a.dtype())?
        }
        Full(x) => Tensor::full(r[*x].shape(), 0.75, r[*x].dtype())?,
        Reduce(op, x, dim, keep) => match op {
            ReduceOp::Sum => r[*x].sum(*dim, *keep),
            ReduceOp::Mean => r[*x].mean(*dim, *keep),
            ReduceOp::Max => r[*x].max(*dim, *keep),
        }?,
        Reshape(x, s) => r[*x].reshape(s)?,
        Unsqueeze(x, d) => r[*x].unsqueeze(*d)?,
        Transpose(x, d0, d1) => r[*x].transpose(*d0, *d1)?,
        Narrow(x, dim, start, len) => r[*x].narrow(*dim, *start, *len)?,
        Expand(x, s) => r[*x].expand(s)?,
        Cat(parts, dim) => {
            let parts: Vec<Tensor> = parts.iter().map(|&p| r[p].clone()).collect();
            Tensor::cat(&parts, *dim)?
        }
        Topk(x, k) => {
            let (values, positions) = r[*x].topk(*k)?;
            r.extend([values, positions]);
            return Ok(());
        }
        Gather(x, dim, i) => r[*x].gather(*dim, &r[*i])?,
        Scatter(x, dim, i, s) => r[*x].scatter(*dim, &r[*i], &r[*s])?,
        IndexSelect(x, dim, i) => r[*x].index_select(*dim, &r[*i])?,
        Index(v, s, _) => Tensor::from_vec(v.clone(), s, DType::I32)?,
    };
    r.push(t);
    Ok(())
}

fn other_dtype(d: DType) -> DType {
    [DType::F32, DType::BF16][(d == DType::F32) as usize]
}

/// What the serial reference expects of a step's output.
#[derive(Clone)]
enum Want {
    /// Bit for bit (R6.6, R6.11, R6.12).
    Exact(Vec<f32>),
    /// Within R6.8 over rows of `n`.
    Rows(Vec<f32>, usize),
    /// Within R6.9 of the product of these operands.
    Matmul(Vec<f32>, Vec<f32>, MatmulDims),
    /// Failed (R3.12): an operand failed, or an index is out of range.
    Poisoned,
}

fn prod(s: &[usize]) -> usize {
    s.iter().product()
}

/// `IndexDims` of an index op along `dim` of `data` with `idx_len` positions.
fn index_dims(data: &[usize], dim: usize, idx_len: usize) -> IndexDims {
    IndexDims {
        outer: prod(&data[..dim]),
        src_len: data[dim],
        idx_len,
        inner: prod(&data[dim + 1..]),
    }
}

/// The serial reference of `st` from the values its operands hold in `r` (R6.5): computed
/// from the runtime's operands, so a tolerance of one step never carries into the next.
fn want(st: &St, r: &[Tensor], dtype: DType) -> Vec<Want> {
    let reads: Vec<Reg> = match st {
        Full(_) | Index(..) => vec![],
        Reshape(x, _) | Unsqueeze(x, _) => vec![*x],
        _ => entries(st).into_iter().flat_map(|e| e.1).collect(),
    };
    let mut v = Vec::new();
    for &x in &reads {
        match r[x].to_vec_f32() {
            Ok(host) => v.push((x, host)),
            Err(_) => return vec![Want::Poisoned; 1 + matches!(st, Topk(..)) as usize],
        }
    }
    let val = |x: Reg| v.iter().find(|h| h.0 == x).map(|h| h.1.clone()).unwrap();
    let sh = |x: Reg| r[x].shape().to_vec();
    let exact = |y: Vec<f32>| vec![Want::Exact(y)];
    let or_poisoned = |y: Option<Vec<f32>>| vec![y.map_or(Want::Poisoned, Want::Exact)];
    match st {
        Bin(op, x, y) => {
            let out = broadcast(&sh(*x), &sh(*y));
            let a = reference::expand(&val(*x), &sh(*x), &out);
            let b = reference::expand(&val(*y), &sh(*y), &out);
            exact(reference::binary(*op, &a, &b, dtype))
        }
        Scalar(op, x, s) => {
            let a = val(*x);
            exact(reference::binary(*op, &a, &vec![*s; a.len()], dtype))
        }
        Unary(op, x) => exact(reference::unary(*op, &val(*x), dtype)),
        Softmax(x) => {
            let n = *sh(*x).last().unwrap();
            vec![Want::Rows(reference::softmax(&val(*x), n, dtype), n)]
        }
        SoftmaxDim(x, d) => {
            let y = reference::softmax_dim(&val(*x), &sh(*x), *d, dtype);
            vec![Want::Rows(y, sh(*x)[*d])]
        }
        RmsNorm(x, w) => {
            let n = *sh(*x).last().unwrap();
            let y = reference::rms_norm(&val(*x), &val(*w), 1e-5, n, dtype);
            vec![Want::Rows(y, n)]
        }
        Matmul(x, y) => {
            let (a, b) = (sh(*x), sh(*y));
            let dims = MatmulDims {
                batch: 1,
                m: a[0],
                k: a[1],
                n: b[1],
                rhs_batched: false,
            };
            vec![Want::Matmul(val(*x), val(*y), dims)]
        }
        RoundTrip(x) => exact(
            (val(*x).iter())
                .map(|&e| dtype.round_f32(other_dtype(dtype).round_f32(e)))
                .collect(),
        ),
        Full(x) => exact(vec![dtype.round_f32(0.75); prod(&sh(*x))]),
        Reduce(op, x, dim, _) => {
            let s = sh(*x);
            let dims = ReduceDims {
                op: *op,
                outer: prod(&s[..*dim]),
                len: s[*dim],
                inner: prod(&s[dim + 1..]),
            };
            exact(reference::reduce(&val(*x), dims, dtype))
        }
        Reshape(x, _) | Unsqueeze(x, _) => exact(val(*x)),
        Transpose(x, d0, d1) => exact(reference::transpose(&val(*x), &sh(*x), *d0, *d1)),
        Narrow(x, dim, start, len) => {
            exact(reference::narrow(&val(*x), &sh(*x), *dim, *start, *len))
        }
        Expand(x, to) => exact(reference::expand(&val(*x), &sh(*x), to)),
        Cat(parts, dim) => {
            let (vals, shapes): (Vec<_>, Vec<_>) = parts.iter().map(|&p| (val(p), sh(p))).unzip();
            let parts: Vec<(&[f32], &[usize])> = (vals.iter().zip(&shapes))
                .map(|(v, s)| (&v[..], &s[..]))
                .collect();
            exact(reference::cat(&parts, *dim))
        }
        Topk(x, k) => {
            let (values, positions) = reference::topk(&val(*x), *sh(*x).last().unwrap(), *k);
            vec![Want::Exact(values), Want::Exact(positions)]
        }
        Gather(x, dim, i) => {
            let dims = index_dims(&sh(*x), *dim, sh(*i)[*dim]);
            or_poisoned(reference::gather(&val(*x), &val(*i), dims))
        }
        Scatter(x, dim, i, s) => {
            let dims = index_dims(&sh(*x), *dim, sh(*i)[*dim]);
            or_poisoned(reference::scatter(&val(*x), &val(*i), &val(*s), dims))
        }
        IndexSelect(x, dim, i) => {
            let dims = index_dims(&sh(*x), *dim, sh(*i)[0]);
            or_poisoned(reference::index_select(&val(*x), &val(*i), dims))
        }
        Index(v, ..) => exact(v.clone()),
    }
}

/// Compares the runtime's output `y` of a step with the reference.
fn compare(y: &Tensor, want: Want, dtype: DType) -> Result<(), String> {
    let got = y.to_vec_f32();
    match (want, got) {
        (Want::Poisoned, Err(Error::ExecutionFailed { message, .. }))
            if message.contains("out of range") =>
        {
            Ok(())
        }
        (Want::Poisoned, got) => Err(format!("poisoned expected (R3.12), got {got:?}")),
        (_, Err(e)) => Err(format!("reading the output: {e}")),
        (Want::Exact(w), Ok(g)) => match reference::first_mismatch(&g, &w) {
            None => Ok(()),
            Some(i) => Err(format!(
                "element {i}: got {:?}, the reference {:?}",
                g.get(i),
                w.get(i)
            )),
        },
        (Want::Rows(w, n), Ok(g)) => reference::check_reduction(&g, &w, n, dtype).map(|_| ()),
        (Want::Matmul(a, b, dims), Ok(g)) => {
            reference::check_matmul(&a, &b, &g, dims, dtype).map(|_| ())
        }
    }
}

/// The events, created once per process (R1.2, R1.4) and shared by every case.
fn events() -> &'static [TaggedEvent] {
    static EV: OnceLock<Vec<TaggedEvent>> = OnceLock::new();
    EV.get_or_init(|| {
        (0..EVENTS)
            .map(|e| create_tagged_event(&format!("diff-ev-{e}")).expect("fresh event tag"))
            .collect()
    })
}

/// One generated action; indices are raw and resolved by [`build`].
#[derive(Debug, Clone)]
enum Raw {
    /// `(menu entry, a, b, index source)`.
    Op(usize, usize, usize, u64),
    Record(usize),
    Wait(usize),
    Keep(usize, usize),
    /// Enter a scope; `Some(e)`: record `e` just before and wait on it first inside (SC1).
    Enter(usize, Option<usize>),
    /// Leave the innermost scope; `Some(e)`: record `e` last inside, wait on it after (SC18).
    Exit(Option<usize>),
}

/// A program node. Values are numbered: inputs first, then op results in issue order.
#[derive(Debug, Clone)]
enum Node {
    /// A menu entry on values `a` and `b`: its steps, the shapes of its registers and the
    /// register that is its result.
    Op {
        name: &'static str,
        a: usize,
        b: usize,
        steps: Vec<St>,
        shapes: Vec<Vec<usize>>,
        out: Reg,
    },
    Record(usize),
    Wait(usize),
    /// `record_tagged_stream(value, stream)`.
    Keep(usize, usize),
    Scope(usize, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Program {
    dtype: DType,
    n: usize,
    /// Number of `[n,n]` inputs; one `[n]` weight input follows them.
    inputs: usize,
    seed: u64,
    body: Vec<Node>,
    outputs: Vec<usize>,
}

fn raw() -> impl Strategy<Value = Raw> {
    let handoff = || prop::option::weighted(0.6, 0..EVENTS);
    let op = (0..MENU.len(), any::<usize>(), any::<usize>(), any::<u64>());
    prop_oneof![
        10 => op.prop_map(|(o, a, b, ix)| Raw::Op(o, a, b, ix)),
        3 => (0..EVENTS).prop_map(Raw::Record),
        3 => (0..EVENTS).prop_map(Raw::Wait),
        1 => (any::<usize>(), 0..STREAMS.len()).prop_map(|(v, s)| Raw::Keep(v, s)),
        3 => (0..8usize, handoff()).prop_map(|(s, e)| Raw::Enter(s, e)),
        3 => handoff().prop_map(Raw::Exit),
    ]
}

/// The steps of menu entry `o` for size `n`. An index operand is, by `ix`, the `topk`
/// positions of `b` (in range, computed on a stream) or an `I32` host constant, out of range
/// in one element for a third of the constants when `bad_ok`.
fn node(o: usize, a: usize, b: usize, n: usize, ix: u64, bad_ok: bool) -> Node {
    let (name, kind, build) = MENU[o];
    let mut s = Steps {
        steps: Vec::new(),
        shapes: vec![vec![n, n], vec![n, n], vec![n]],
    };
    let index = match kind {
        Ix::No => usize::MAX,
        _ if ix % 10 < 4 => {
            let positions = s.push(Topk(1, n)) + 1;
            match kind {
                Ix::Row => {
                    let row = s.push(Narrow(positions, 0, 0, 1));
                    s.push(Reshape(row, vec![n]))
                }
                _ => positions,
            }
        }
        _ => {
            let shape = [vec![n, n], vec![n]][(kind == Ix::Row) as usize].clone();
            let mut state = ix;
            let mut next = || {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as usize
            };
            let mut v: Vec<f32> = (0..prod(&shape)).map(|_| (next() % n) as f32).collect();
            let bad = bad_ok && (ix / 10).is_multiple_of(3);
            if bad {
                let at = next() % v.len();
                v[at] = [n as f32, -1.0, (n + 5) as f32][next() % 3];
            }
            s.push(Index(v, shape, bad))
        }
    };
    let out = build(&mut s, n, index);
    Node::Op {
        name,
        a,
        b,
        steps: s.steps,
        shapes: s.shapes,
        out,
    }
}

/// Turns the flat actions into a scope tree, resolving operands among the values existing at
/// that point. `strict` programs wait only on events recorded earlier in the program.
fn build(
    head: (DType, usize, usize, u64, bool),
    streams: usize,
    actions: Vec<Raw>,
    outs: Vec<usize>,
    strict: bool,
) -> Program {
    let (dtype, n, inputs, seed, bad_ok) = head;
    let mut fr: Vec<(usize, Vec<Node>)> = vec![(0, Vec::new())];
    let (mut values, mut recorded) = (inputs, Vec::new()); // `recorded`: latest last
    // Two thirds of the operands are among the three latest values: chains cross streams.
    let pick = |r: usize, values: usize| match r % 3 {
        0 => (r / 3) % values,
        _ => values - 1 - (r / 3) % values.min(3),
    };
    for act in actions {
        let mut nodes = Vec::new(); // for the innermost scope after `act`
        let mut record = None;
        match act {
            Raw::Op(o, a, b, ix) => {
                nodes.push(node(o, pick(a, values), pick(b, values), n, ix, bad_ok));
                values += 1;
            }
            Raw::Record(e) => {
                nodes.push(Node::Record(e));
                record = Some(e);
            }
            Raw::Wait(e) if strict && !recorded.contains(&e) => {
                nodes.extend(recorded.last().map(|&latest| Node::Wait(latest)));
            }
            Raw::Wait(e) => nodes.push(Node::Wait(e)),
            Raw::Keep(v, s) => nodes.push(Node::Keep(v % values, s % streams)),
            Raw::Enter(s, handoff) if fr.len() <= MAX_DEPTH => {
                // Side streams three times as often as "default" scopes.
                let side = s % 4 != 0 && streams > 1;
                let s = [0, 1 + s % streams.saturating_sub(1).max(1)][side as usize];
                fr.last_mut().unwrap().1.extend(handoff.map(Node::Record));
                fr.push((s, Vec::new()));
                nodes.extend(handoff.map(Node::Wait));
                record = handoff;
            }
            Raw::Exit(handoff) if fr.len() > 1 => {
                let (s, mut body) = fr.pop().unwrap();
                body.extend(handoff.map(Node::Record));
                nodes.push(Node::Scope(s, body));
                nodes.extend(handoff.map(Node::Wait));
                record = handoff;
            }
            Raw::Enter(..) | Raw::Exit(_) => {}
        }
        fr.last_mut().unwrap().1.extend(nodes);
        if let Some(e) = record {
            recorded.retain(|&r| r != e);
            recorded.push(e);
        }
    }
    while fr.len() > 1 {
        let (s, body) = fr.pop().unwrap();
        fr.last_mut().unwrap().1.push(Node::Scope(s, body));
    }
    // Results, but an input if there is none or a later pick asks for one (SC27).
    let results = values - inputs;
    let outputs = (outs.iter().enumerate())
        .map(|(i, o)| {
            [inputs + o % results.max(1), o % inputs]
                [(results == 0 || (i > 0 && o % 4 == 0)) as usize]
        })
        .collect();
    let body = fr.pop().unwrap().1;
    Program {
        dtype,
        n,
        inputs,
        seed,
        body,
        outputs,
    }
}

fn program() -> impl Strategy<Value = Program> {
    let dtype = prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)];
    let bad_ok = prop::bool::weighted(0.25);
    let head = (dtype, 1..=6usize, 2..=3usize, any::<u64>(), bad_ok);
    let streams = prop_oneof![1 => Just(1), 6 => 2..=STREAMS.len()];
    let actions = prop::collection::vec(raw(), 1..=60);
    let outs = prop::collection::vec(any::<usize>(), 1..=4);
    (head, streams, actions, outs, prop::bool::weighted(0.6))
        .prop_map(|(h, s, a, o, strict)| build(h, s, a, o, strict))
}

/// Runs a menu entry's steps on values `a`, `b` and the weight `w`; returns its registers.
fn run_steps(steps: &[St], a: &Tensor, b: &Tensor, w: &Tensor) -> tagstream::Result<Vec<Tensor>> {
    let mut r = vec![a.clone(), b.clone(), w.clone()];
    for st in steps {
        run_step(st, &mut r)?;
    }
    Ok(r)
}

/// Interprets `nodes`; a scope is a guard living for its block, so guards drop LIFO, also on `?`.
fn exec(nodes: &[Node], pool: &mut Vec<Tensor>, w: &Tensor) -> tagstream::Result<()> {
    for node in nodes {
        match *node {
            Node::Op {
                a,
                b,
                ref steps,
                out,
                ..
            } => {
                let r = run_steps(steps, &pool[a], &pool[b], w)?;
                pool.push(r[out].clone());
            }
            Node::Record(e) => tagged_event_record(&events()[e])?,
            Node::Wait(e) => tagged_event_wait(&events()[e])?,
            Node::Keep(v, s) => record_tagged_stream(&pool[v], STREAMS[s])?,
            Node::Scope(s, ref body) => {
                let _guard = stream_switch(STREAMS[s])?;
                exec(body, pool, w)?;
            }
        }
    }
    Ok(())
}

/// The serial single-stream run of the same program: every op on the main stream in program
/// order, no scopes, no events, each step's output checked against the serial reference
/// (R6.5). Bits depend only on ops and inputs (R6.4), so an accepted multi-stream program
/// must match it exactly.
fn exec_serial(
    nodes: &[Node],
    pool: &mut Vec<Tensor>,
    w: &Tensor,
    dtype: DType,
) -> Result<(), String> {
    for node in nodes {
        match *node {
            Node::Op {
                name,
                a,
                b,
                ref steps,
                out,
                ..
            } => {
                let mut r = vec![pool[a].clone(), pool[b].clone(), w.clone()];
                for (k, st) in steps.iter().enumerate() {
                    let at = r.len();
                    run_step(st, &mut r).map_err(|e| format!("serial {name}: {e:?}"))?;
                    for (y, want) in r[at..].iter().zip(want(st, &r[..at], dtype)) {
                        compare(y, want, dtype)
                            .map_err(|e| format!("{name} step {k} {st:?}: {e}"))?;
                    }
                }
                pool.push(r[out].clone());
            }
            Node::Scope(_, ref body) => exec_serial(body, pool, w, dtype)?,
            Node::Record(_) | Node::Wait(_) | Node::Keep(..) => {}
        }
    }
    Ok(())
}

/// Where an entry is: (stream index, 1-based position on that stream in the graph).
type Pos = (usize, u32);
/// A refused read: (reader op, its position, producer op, its position); each op with which
/// op of the closure it was, counted from 1 (R7.2, issue 16 item 3).
type Race = ((&'static str, u32), Pos, (&'static str, u32), Pos);
/// The entry that made a value and which op of the closure it was; `None` for inputs
/// (copied in before the fork, R4.8) and host constants.
type Producer = Option<(Pos, (&'static str, u32))>;

/// Vector clocks over the program's entries (R3.4), with the closure of R4.4.
#[derive(Default)]
struct Oracle {
    clock: [[u32; 4]; 4],
    fork: [u32; 4],
    latest: [Option<[u32; 4]>; EVENTS],
    producers: Vec<Producer>,
    /// Whether each value fails when read (R3.12).
    poisoned: Vec<bool>,
    /// Whether an index op with an index out of range was issued (before a refusal).
    bad_ran: bool,
    /// Ops the closure has issued (a `to_dtype` round trip is two).
    ops: u32,
    /// User records: (event, issue index, position).
    records: Vec<(usize, usize, Pos)>,
    /// The first wait with no earlier record in the program: (issue index, event, position).
    unbound: Option<(usize, usize, Pos)>,
    issued: usize,
    /// Whether a side-stream scope has been entered: the capture inserts the fork at graph
    /// start only then (R4.4 a, e), so until then main positions after the copy-ins are one
    /// lower than with the fork this oracle always counts.
    entered_side: bool,
}

impl Oracle {
    fn tick(&mut self, s: usize) -> Pos {
        self.issued += 1;
        self.clock[s][s] += 1;
        (s, self.clock[s][s])
    }

    fn join(&mut self, s: usize, other: [u32; 4]) {
        for (a, b) in self.clock[s].iter_mut().zip(other) {
            *a = (*a).max(b);
        }
    }

    /// One menu entry on stream `s`: its entries in order, views passing their operand's
    /// producer on (R6.11), index ops with a bad constant poisoning (R3.12).
    fn op(
        &mut self,
        s: usize,
        a: usize,
        b: usize,
        steps: &[St],
        shapes: &[Vec<usize>],
        out: Reg,
    ) -> Result<(), Race> {
        let mut prod = vec![self.producers[a], self.producers[b], None];
        let mut poison = vec![self.poisoned[a], self.poisoned[b], false];
        let mut bad = vec![false; 3];
        for st in steps {
            if let Some(x) = view_of(st, shapes) {
                prod.push(prod[x]);
                poison.push(poison[x]);
                bad.push(bad[x]);
                continue;
            }
            let (mut made, mut p) = (Vec::new(), false);
            for (name, reads) in entries(st) {
                for v in reads {
                    if let Some(((t, k), producer)) = prod[v]
                        && self.clock[s][t] < k
                    {
                        let reader = (name, self.ops + 1);
                        return Err((reader, (s, self.clock[s][s] + 1), producer, (t, k)));
                    }
                    p |= poison[v];
                }
                let pos = self.tick(s);
                self.ops += 1;
                made.push(Some((pos, (name, self.ops))));
            }
            let runs_bad = match st {
                Gather(_, _, i) | Scatter(_, _, i, _) | IndexSelect(_, _, i) => bad[*i],
                _ => false,
            };
            self.bad_ran |= runs_bad;
            p |= runs_bad;
            match st {
                Topk(..) => {
                    prod.extend([made[1], made[0]]);
                    poison.extend([p, p]);
                    bad.extend([false, false]);
                }
                Index(_, _, is_bad) => {
                    prod.push(None);
                    poison.push(false);
                    bad.push(*is_bad);
                }
                _ => {
                    prod.push(made.last().copied().flatten());
                    poison.push(p);
                    bad.push(false);
                }
            }
        }
        self.producers.push(prod[out]);
        self.poisoned.push(poison[out]);
        Ok(())
    }

    /// Walks `nodes` on stream `s`; stops at the first race, as the closure's `?` does.
    fn walk(&mut self, nodes: &[Node], s: usize) -> Result<(), Race> {
        for node in nodes {
            match *node {
                Node::Op {
                    a,
                    b,
                    ref steps,
                    ref shapes,
                    out,
                    ..
                } => self.op(s, a, b, steps, shapes, out)?,
                Node::Record(e) => {
                    let issued = self.issued;
                    let pos = self.tick(s);
                    self.latest[e] = Some(self.clock[s]);
                    self.records.push((e, issued, pos));
                }
                Node::Wait(e) => {
                    match self.latest[e] {
                        Some(c) => self.join(s, c),
                        None if self.unbound.is_none() => {
                            self.unbound = Some((self.issued, e, (s, self.clock[s][s] + 1)));
                        }
                        None => {}
                    }
                    self.tick(s);
                }
                Node::Keep(..) => {}
                Node::Scope(t, ref body) => {
                    if t != 0 {
                        self.entered_side = true;
                        self.join(t, self.fork);
                        self.tick(t);
                    }
                    self.walk(body, t)?;
                    if t != 0 {
                        self.tick(t);
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the oracle predicts of a program.
struct Prediction {
    /// The error of `Mode::Eager` (`None`: accepted).
    eager: Option<Error>,
    /// The error of the capture (`None`: accepted).
    capture: Option<Error>,
    /// Whether an out-of-range index runs (before the eager refusal, if any): `synchronize`
    /// then reports it (R3.12).
    bad_ran: bool,
    /// Whether each value is poisoned, in an accepted program.
    poisoned: Vec<bool>,
}

/// Predicts the errors of `Mode::Eager` and of the capture. Eager names the
/// ops, a capture names them with which op of the closure each was (R7.2); `WaitWithoutRecord`
/// names graph positions (R4.6).
fn predict(p: &Program) -> Prediction {
    let mut o = Oracle::default();
    o.producers.resize(p.inputs, None); // inputs: copied in before the fork (R4.8)
    o.poisoned.resize(p.inputs, false);
    o.clock[0][0] = p.inputs as u32 + 1; // the copy-ins, the weight's included
    o.tick(0);
    o.fork = o.clock[0];
    let race = o.walk(&p.body, 0).err();
    // Positions in the graph as traced when the error is found (the walk stops at the race).
    let fork_pos = p.inputs as u32 + 2;
    let graph_pos = |(s, k): Pos| match s == 0 && !o.entered_side && k > fork_pos {
        true => (s, k - 1),
        false => (s, k),
    };
    let data_race = |graph: bool| {
        let name = |(op, n): (&str, u32)| match graph {
            true => format!("{op} (op {n} of the closure)"),
            false => op.into(),
        };
        race.map(|(reader, r, producer, q)| Error::DataRace {
            reader: name(reader),
            reader_stream: STREAMS[r.0].into(),
            producer: name(producer),
            producer_stream: STREAMS[q.0].into(),
        })
    };
    let capture = match o.unbound {
        Some((issued, e, at)) => Some(Error::WaitWithoutRecord {
            tag: events()[e].tag().into(),
            stream: STREAMS[at.0].into(),
            position: graph_pos(at).1 as usize,
            later_record: (o.records.iter().find(|r| r.0 == e && r.1 > issued))
                .map(|r| (STREAMS[r.2.0].into(), graph_pos(r.2).1 as usize)),
        }),
        None => data_race(true),
    };
    Prediction {
        eager: data_race(false),
        capture,
        bad_ran: o.bad_ran,
        poisoned: o.poisoned,
    }
}
/// `[user records, user waits, side-stream scope instances]` in `nodes`.
fn tally(nodes: &[Node]) -> [usize; 3] {
    let mut t = [0; 3];
    for node in nodes {
        match node {
            Node::Record(_) => t[0] += 1,
            Node::Wait(_) => t[1] += 1,
            Node::Scope(s, body) => {
                let [r, w, n] = tally(body);
                t = [t[0] + r, t[1] + w, t[2] + n + (*s != 0) as usize];
            }
            _ => {}
        }
    }
    t
}

type Outputs = tagstream::Result<Vec<Tensor>>;

/// Checks a call's error (or success) against the prediction.
fn expect(what: &str, got: &Outputs, want: &Option<Error>) -> Result<(), String> {
    let got = got.as_ref().err();
    match got == want.as_ref() {
        true => Ok(()),
        false => Err(format!("{what}: got {got:?}, the oracle expects {want:?}")),
    }
}

/// Shape, dtype and bits of each output, NaNs made equal, or the error reading it gives.
type Bits = Vec<(Vec<usize>, DType, Result<Vec<u32>, String>)>;

fn bits(outputs: &[Tensor]) -> Bits {
    let canonical = |x: &f32| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() };
    let one = |t: &Tensor| match t.to_vec_f32() {
        Ok(v) => Ok(v.iter().map(canonical).collect()),
        Err(e) => Err(e.to_string()),
    };
    (outputs.iter())
        .map(|t| (t.shape().to_vec(), t.dtype(), one(t)))
        .collect()
}

/// [`bits`] with every error the same: the serial run names another stream (R3.12).
fn failed_or_bits(outputs: &[Tensor]) -> Bits {
    let mut b = bits(outputs);
    for o in &mut b {
        o.2 = o.2.clone().map_err(|_| "failed".into());
    }
    b
}

/// R3.12: exactly the outputs the oracle poisons fail, with the index op's error.
fn expect_poisoned(
    what: &str,
    outputs: &[Tensor],
    p: &Program,
    poisoned: &[bool],
) -> Result<(), String> {
    for (t, &v) in outputs.iter().zip(&p.outputs) {
        let got = t.to_vec_f32();
        let ok = match &got {
            Ok(_) => !poisoned[v],
            Err(Error::ExecutionFailed { op, message, .. }) => {
                poisoned[v]
                    && ["gather", "scatter", "index_select"].contains(&op.as_str())
                    && message.contains("out of range")
            }
            Err(_) => false,
        };
        if !ok {
            let got = got.map(|_| "a value");
            return Err(format!(
                "{what}: output (value {v}) gave {got:?}; poisoned expected: {}",
                poisoned[v]
            ));
        }
    }
    Ok(())
}

/// `synchronize` reports the earliest failure since the previous one exactly when an index
/// out of range ran (R3.12, R3.6).
fn sync(what: &str, fail: bool) -> Result<(), String> {
    match (synchronize(), fail) {
        (Ok(()), false) => Ok(()),
        (Err(Error::ExecutionFailed { message, .. }), true) if message.contains("out of range") => {
            Ok(())
        }
        (got, _) => Err(format!(
            "synchronize after {what}: {got:?}; a failure expected: {fail}"
        )),
    }
}

fn inputs(p: &Program, call: u64) -> Vec<Tensor> {
    let seed = p.seed.wrapping_mul(31).wrapping_add(call * 8);
    let mut xs: Vec<Tensor> = (0..p.inputs as u64)
        .map(|k| Tensor::randn(&[p.n, p.n], p.dtype, seed + k).expect("randn"))
        .collect();
    xs.push(Tensor::randn(&[p.n], p.dtype, seed + 7).expect("randn"));
    xs
}

fn counts(s: CompileStats) -> (u64, u64, u64, bool) {
    (s.captures, s.replays, s.eager_runs, s.fell_back_to_eager)
}

/// Runs one program eagerly and in reduce-overhead mode and compares against the oracle.
fn check(p: &Program) -> Result<(), String> {
    let Prediction {
        eager: want_eager,
        capture: want_capture,
        bad_ran,
        poisoned,
    } = predict(p);
    let [records, waits, sides] = tally(&p.body);
    let closure = |mode| {
        let p = p.clone();
        let f = move |x: &[Tensor]| {
            let (w, xs) = x.split_last().expect("the weight input");
            let mut pool = xs.to_vec();
            exec(&p.body, &mut pool, w)?;
            Ok(p.outputs.iter().map(|&i| pool[i].clone()).collect())
        };
        compile(f, CompileConfig::default().mode(mode))
    };
    let (mut eager, mut ro) = (closure(Mode::Eager), closure(Mode::ReduceOverhead));
    let xs: Vec<Vec<Tensor>> = (1..=3).map(|c| inputs(p, c)).collect();
    // Every run starts with all earlier work host-ordered (R3.6): the oracle's fresh start;
    // a failure left by an earlier case is cleared.
    let _ = synchronize();
    let e1 = eager.run(&xs[0]);
    sync("Mode::Eager", bad_ran)?;
    let c1 = ro.run(&xs[0]);
    // A refused capture runs nothing.
    sync("the capture", bad_ran && want_capture.is_none())?;
    expect("Mode::Eager", &e1, &want_eager)?;
    expect("capture", &c1, &want_capture)?;
    let (Ok(e1), Ok(c1)) = (e1, c1) else {
        // R4.12: nothing cached, so the next call captures again and fails the same way.
        let again = ro.run(&xs[1]);
        sync("the second capture", false)?;
        expect("second capture", &again, &want_capture)?;
        if counts(ro.stats()) != (0, 0, 0, false) || ro.cached_graphs() != 0 {
            return Err(format!("failed captures changed state: {:?}", ro.stats()));
        }
        return Ok(());
    };
    for (i, x) in xs[1..].iter().enumerate() {
        let r = ro.run(x).map_err(|e| format!("replay: {e:?}"))?;
        sync("a replay", bad_ran)?;
        let e = eager.run(x).map_err(|e| format!("Mode::Eager: {e:?}"))?;
        sync("Mode::Eager", bad_ran)?;
        expect_poisoned("a replay", &r, p, &poisoned)?;
        if bits(&r) != bits(&e) {
            return Err(format!("replay {} differs from Mode::Eager", i + 1));
        }
    }
    // The capturing call's outputs are read only now: replays must not overwrite them (R5.5).
    expect_poisoned("Mode::Eager", &e1, p, &poisoned)?;
    if bits(&c1) != bits(&e1) {
        return Err("the capturing call differs from Mode::Eager on the same inputs".into());
    }
    // The serial single-stream run gives the same bits (R6.4, R5.6).
    let serial = {
        let (w, x) = xs[0].split_last().expect("the weight input");
        let mut pool = x.to_vec();
        exec_serial(&p.body, &mut pool, w, p.dtype)?;
        p.outputs
            .iter()
            .map(|&i| pool[i].clone())
            .collect::<Vec<_>>()
    };
    sync("the serial run", bad_ran)?;
    if failed_or_bits(&serial) != failed_or_bits(&e1) {
        return Err("the serial single-stream run differs from Mode::Eager".into());
    }
    if counts(ro.stats()) != (1, 2, 0, false) || counts(eager.stats()) != (0, 0, 3, false) {
        return Err(format!("stats: {:?} / {:?}", ro.stats(), eager.stats()));
    }
    // R4.4 counts: n ≥ 1 side scopes add the fork, n joins and 2n waits; no side scope, none.
    let dump = ro.graph_dump().unwrap_or_default();
    let want = [(records, waits), (records + 1 + sides, waits + 2 * sides)][(sides > 0) as usize];
    if (
        dump.matches("record(").count(),
        dump.matches("wait(").count(),
    ) != want
    {
        return Err(format!(
            "R4.4: {want:?} records and waits expected in\n{dump}"
        ));
    }
    Ok(())
}

/// Serializes the tests of this file: streams, clocks and events are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());
/// Set once a case timed out; later cases are skipped so that shrinking ends at once.
static HUNG: AtomicBool = AtomicBool::new(false);

/// Runs [`check`] in its own thread and fails on a panic or after [`TIMEOUT`].
fn check_in_thread(p: Program) -> Result<(), TestCaseError> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if HUNG.load(Ordering::SeqCst) {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    let shown = format!("{p:?}");
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| check(&p)));
        tx.send(r.unwrap_or_else(|_| Err("the case panicked (message above)".into())))
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| {
            HUNG.store(true, Ordering::SeqCst);
            Err(format!("hang: no result after {TIMEOUT:?} for {shown}"))
        })
        .map_err(TestCaseError::fail)
}

fn cases() -> u32 {
    let var = std::env::var("TAGSTREAM_DIFF_CASES");
    var.ok().and_then(|s| s.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// R5.6, R3.5/R4.8, R4.6: eager and reduce-overhead agree with each other and the oracle.
    #[test]
    fn eager_and_reduce_overhead_agree_with_the_oracle(p in program()) {
        check_in_thread(p)?;
    }
}

/// The same with 10,000 cases.
#[test]
#[ignore = "long: 10,000 cases"]
fn differential_10k() {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(10_000));
    runner.run(&program(), check_in_thread).unwrap();
}
