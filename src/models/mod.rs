//! Ready-made models, starting with the seed model (torchair's `npu_create_tagged_event`
//! example, the README's "The seed model in Rust") and the MoE stack of [`moe`], and their checks
//! against the serial reference.
//!
//! Owns model-building closures and their reference checks, and the measured programs of
//! `tagstream bench` ([`PingPong`], [`matmul_branches`]); shared by the CLI, the tests and the
//! benchmarks so that all three run exactly the same program.

pub mod moe;

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::kernels::{BinaryOp, MatmulDims};
use crate::ops::{TaggedEvent, create_tagged_event, tagged_event_record, tagged_event_wait};
use crate::reference;
use crate::scope::stream_switch;
use crate::tensor::{DType, Tensor};
use crate::{stream_activity, synchronize};

/// Names of the seed model's four outputs, in order.
pub const SEED_OUTPUTS: [&str; 4] = ["add", "mm", "mm1", "add2"];

/// The seed model: `add = x0+x1` on main; record `ev`; in scope `side` { wait `ev`;
/// `mm = x2@x3` }; `mm1 = x2@x3` and `add2 = x2+x3` on main (SC1, SC3).
///
/// The returned closure has the signature `compile` takes, and owns its event.
///
/// ```
/// use tagstream::{models, ops, DType};
/// let ev = ops::create_tagged_event("seed-doc-66")?;
/// let mut model = models::seed_model(ev, "seed-doc-1");
/// let x = models::seed_inputs(32, DType::F32)?;
/// let out = model(&x)?;
/// assert_eq!(out.len(), 4);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn seed_model(
    ev: TaggedEvent,
    side: &str,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    let side = side.to_string();
    move |x: &[Tensor]| {
        let add = x[0].add(&x[1])?;
        tagged_event_record(&ev)?;
        let mm = {
            let _on_side = stream_switch(&side)?;
            tagged_event_wait(&ev)?;
            x[2].matmul(&x[3])?
        };
        let mm1 = x[2].matmul(&x[3])?;
        let add2 = x[2].add(&x[3])?;
        Ok(vec![add, mm, mm1, add2])
    }
}

/// The seed model's inputs: four `[size, size]` standard-normal tensors, seeds 0..4.
///
/// # Errors
/// Only if `size * size` overflows.
pub fn seed_inputs(size: usize, dtype: DType) -> Result<Vec<Tensor>> {
    (0..4)
        .map(|i| Tensor::randn(&[size, size], dtype, i))
        .collect()
}

/// A chain of `ops` tiny elementwise ops split over two independent streams: half on the main
/// stream from `x[0]`, half in scope `side` from `x[1]` (the launch-overhead benchmark of
/// `tagstream bench`). The ops cycle through `add x`, `relu`, `sub x`, so values stay bounded. Returns
/// the two chain ends.
///
/// ```
/// use tagstream::{models, DType};
/// let mut chain = models::tiny_chain(10, "chain-doc-side");
/// let x = models::tiny_inputs(16, DType::F32)?;
/// assert_eq!(chain(&x)?.len(), 2);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn tiny_chain(
    ops: usize,
    side: &str,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    let side = side.to_string();
    let half = ops / 2;
    let chain = |x: &Tensor, n: usize| -> Result<Tensor> {
        let mut y = x.clone();
        for i in 0..n {
            y = match i % 3 {
                0 => y.add(x)?,
                1 => y.relu()?,
                _ => y.sub(x)?,
            };
        }
        Ok(y)
    };
    move |x: &[Tensor]| {
        let a = chain(&x[0], ops - half)?;
        let b = {
            let _on_side = stream_switch(&side)?;
            chain(&x[1], half)?
        };
        Ok(vec![a, b])
    }
}

/// The tiny chain's inputs: two `[len]` standard-normal tensors, seeds 10 and 11.
///
/// # Errors
/// Never for a reasonable `len`; the constructor's errors otherwise.
pub fn tiny_inputs(len: usize, dtype: DType) -> Result<Vec<Tensor>> {
    (10..12).map(|i| Tensor::randn(&[len], dtype, i)).collect()
}

/// Two independent branches of `matmuls` chained matrix products, `x[0]`'s on stream `sides[0]`
/// and `x[1]`'s on `sides[1]`: `y = x@x`, then `y = y@x` (`matmuls - 1` times). With two distinct
/// side tags the branches can overlap; with `["default", "default"]` they run one after the
/// other on the main stream (the overlap benchmark of `tagstream bench`). Returns the two branch ends.
///
/// ```
/// use tagstream::{models, DType, Tensor};
/// let x: Vec<Tensor> = (0..2).map(|i| Tensor::randn(&[8, 8], DType::F32, i)).collect::<Result<_, _>>()?;
/// let mut two = models::matmul_branches(2, ["branch-doc-1", "branch-doc-2"]);
/// let mut one = models::matmul_branches(2, ["default", "default"]);
/// assert_eq!(two(&x)?[1].to_vec_f32()?, one(&x)?[1].to_vec_f32()?);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn matmul_branches(
    matmuls: usize,
    sides: [&str; 2],
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    let sides = sides.map(str::to_string);
    move |x: &[Tensor]| {
        let mut ends = Vec::with_capacity(2);
        for (x, side) in x.iter().zip(&sides) {
            let _on_side = stream_switch(side)?;
            let mut y = x.matmul(x)?;
            for _ in 1..matmuls {
                y = y.matmul(x)?;
            }
            ends.push(y);
        }
        Ok(ends)
    }
}

/// The gated ping-pong between two streams that measures the cross-stream event hand-off.
///
/// *Why gated*: a hand-off is a worker-to-worker signal; timing it from the host would add the
/// host's issue cost. So stream `A` first waits on an event recorded after one long matmul on
/// the main stream (the gate). The host queues the whole ping-pong while the gate runs, and the
/// clock starts when the gate's result reaches the host: what remains is the hand-offs alone,
/// plus one host wake-up at the end.
///
/// ```
/// use tagstream::models::PingPong;
/// let pp = PingPong::new("pp-doc", 64)?;
/// let t = pp.run(10)?;
/// assert!(t.per_handoff(10) <= t.handoffs);
/// # Ok::<(), tagstream::Error>(())
/// ```
#[derive(Debug)]
pub struct PingPong {
    gate: TaggedEvent,
    a_to_b: TaggedEvent,
    b_to_a: TaggedEvent,
    gate_input: Tensor,
    stream_a: String,
    stream_b: String,
}

/// What one [`PingPong::run`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPongTiming {
    /// From the gate's result reaching the host to the end of `synchronize`: every hand-off.
    pub handoffs: Duration,
    /// Host time to queue the gate and the ping-pong.
    pub issue: Duration,
    /// Whether the gate outlasted issuing, i.e. no hand-off ran while the host was still
    /// queueing. If not, use a larger gate.
    pub gate_held: bool,
}

impl PingPongTiming {
    /// The measured time divided by the `2 × round_trips` hand-offs of the run.
    pub fn per_handoff(&self, round_trips: u32) -> Duration {
        self.handoffs / (2 * round_trips).max(1)
    }
}

impl PingPong {
    /// Creates the events `"{prefix}-gate"`, `"{prefix}-a2b"`, `"{prefix}-b2a"` and a
    /// `[gate_size, gate_size]` f32 gate input; the streams are `"{prefix}-A"` and
    /// `"{prefix}-B"`.
    ///
    /// # Errors
    /// [`Error::TagInUse`](crate::Error::TagInUse) if an event with one of those tags exists.
    pub fn new(prefix: &str, gate_size: usize) -> Result<PingPong> {
        Ok(PingPong {
            gate: create_tagged_event(&format!("{prefix}-gate"))?,
            a_to_b: create_tagged_event(&format!("{prefix}-a2b"))?,
            b_to_a: create_tagged_event(&format!("{prefix}-b2a"))?,
            gate_input: Tensor::randn(&[gate_size, gate_size], DType::F32, 7)?,
            stream_a: format!("{prefix}-A"),
            stream_b: format!("{prefix}-B"),
        })
    }

    /// Runs one gated ping-pong of `round_trips` round trips (two hand-offs each) and waits
    /// for it.
    ///
    /// # Errors
    /// Errors of the ops it issues (none expected) and of `synchronize`.
    pub fn run(&self, round_trips: u32) -> Result<PingPongTiming> {
        let b_done_before = self.b_executed();
        let issue_start = Instant::now();
        let g = self.gate_input.matmul(&self.gate_input)?;
        tagged_event_record(&self.gate)?;
        {
            let _a = stream_switch(&self.stream_a)?;
            tagged_event_wait(&self.gate)?;
        }
        for _ in 0..round_trips {
            {
                let _a = stream_switch(&self.stream_a)?;
                tagged_event_record(&self.a_to_b)?;
            }
            {
                let _b = stream_switch(&self.stream_b)?;
                tagged_event_wait(&self.a_to_b)?;
                tagged_event_record(&self.b_to_a)?;
            }
            {
                let _a = stream_switch(&self.stream_a)?;
                tagged_event_wait(&self.b_to_a)?;
            }
        }
        let issue = issue_start.elapsed();
        // B's first entry finishes only after a hand-off, so if B has executed nothing new,
        // no hand-off completed while the host was queueing.
        let gate_held = self.b_executed() == b_done_before;
        black_box(g.to_vec_f32()?);
        let start = Instant::now();
        synchronize()?;
        Ok(PingPongTiming {
            handoffs: start.elapsed(),
            issue,
            gate_held,
        })
    }

    /// Entries stream B has executed so far (0 before its first use).
    fn b_executed(&self) -> u64 {
        stream_activity()
            .iter()
            .find(|a| a.tag == self.stream_b)
            .map_or(0, |a| a.executed)
    }
}

/// How one output compares with the serial reference.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputCheck {
    /// The output's name.
    pub name: &'static str,
    /// The rule applied: bit-exact (R6.6) or the matmul bound (R6.9).
    pub rule: &'static str,
    /// Largest absolute difference from the reference (for matmul, from the exact f64 product).
    pub max_abs_err: f64,
    /// `None` if the output passes, otherwise what failed.
    pub failure: Option<String>,
}

/// Checks the seed model's outputs (as f32) against the single-stream serial reference computed
/// from the same inputs (as f32): elementwise outputs bit for bit (R6.6), matmuls within R6.9.
pub fn check_seed(
    inputs: &[Vec<f32>],
    outputs: &[Vec<f32>],
    size: usize,
    dtype: DType,
) -> Vec<OutputCheck> {
    let dims = MatmulDims {
        batch: 1,
        m: size,
        k: size,
        n: size,
        rhs_batched: false,
    };
    let add_ref = reference::binary(BinaryOp::Add, &inputs[0], &inputs[1], dtype);
    let add2_ref = reference::binary(BinaryOp::Add, &inputs[2], &inputs[3], dtype);
    let exact = |name: &'static str, got: &[f32], want: &[f32]| {
        let max_abs_err = got
            .iter()
            .zip(want)
            .map(|(a, b)| {
                if a.is_nan() && b.is_nan() {
                    0.0
                } else {
                    (f64::from(*a) - f64::from(*b)).abs()
                }
            })
            .fold(0.0, f64::max);
        let failure = reference::first_mismatch(got, want)
            .map(|i| format!("element {i}: got {} expected {}", got[i], want[i]));
        OutputCheck {
            name,
            rule: "bit-exact (R6.6)",
            max_abs_err,
            failure,
        }
    };
    let matmul = |name: &'static str, got: &[f32]| match reference::check_matmul(
        &inputs[2], &inputs[3], got, dims, dtype,
    ) {
        Ok(err) => OutputCheck {
            name,
            rule: "bound (R6.9)",
            max_abs_err: err,
            failure: None,
        },
        Err(msg) => OutputCheck {
            name,
            rule: "bound (R6.9)",
            max_abs_err: f64::NAN,
            failure: Some(msg),
        },
    };
    vec![
        exact("add", &outputs[0], &add_ref),
        matmul("mm", &outputs[1]),
        matmul("mm1", &outputs[2]),
        exact("add2", &outputs[3], &add2_ref),
    ]
}
