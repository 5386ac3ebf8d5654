//! The stream worker: one thread per stream that runs the stream's entries in FIFO order.
//!
//! Owns [`Entry`], [`Task`] and the worker loop. A worker executes an entry, then publishes its
//! position through the stream's [`Progress`]. It never decides ordering: waits were bound at
//! issue time and arrive here as "block until stream `t` has executed `k` entries".
//!
//! Failures never leave a waiter blocked (style §7.7): a kernel panic is caught, turned into an
//! [`Error::ExecutionFailed`] stored in the op's output buffer (and in the runtime's failure
//! list, reported by the next `synchronize`), and the position is published as usual.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::execute;
use super::queue::WorkQueue;
use super::signal::Progress;
use super::sync::Ordering;
use crate::backend::Inputs;
use crate::error::Error;
use crate::ops::op::Op;
use crate::tensor::storage::Buffer;
use crate::trace::spans::{self, Label, RawSpan, SpanKind};

/// What an entry does when its worker reaches it.
#[derive(Debug)]
pub(crate) enum Task {
    /// Run a kernel. The entry holds its input and output buffers alive until it completes (R3.8).
    Op {
        op: Op,
        inputs: Inputs,
        output: Arc<Buffer>,
    },
    /// A tagged-event record: completing it is what publishes the event.
    Record { label: Label },
    /// A tagged-event wait bound to the record at position `until` of the stream whose progress
    /// (and tag, for timelines) is `on`; `None` when the event had never been recorded (a
    /// no-op, R1.9).
    Wait {
        on: Option<(Arc<Progress>, u64, Arc<str>)>,
        label: Label,
    },
    /// This stream's part of one replay of a captured graph: a list of instructions that counts
    /// as several positions of the stream (`Entry::seq` is the last of them).
    Segment {
        job: Arc<dyn SegmentJob>,
        index: usize,
    },
}

/// What a worker lends a replay segment while it runs.
#[derive(Debug)]
pub(crate) struct SegmentCtx<'a> {
    /// The running stream's tag.
    pub(crate) tag: &'a str,
    /// The running stream's id (salts chaos delays).
    pub(crate) salt: u64,
    /// The running stream's progress: a segment publishes its records through it.
    pub(crate) progress: &'a Progress,
    pub(crate) split: &'a CoreSplit,
    pub(crate) failures: &'a dyn FailureSink,
}

impl std::fmt::Debug for dyn FailureSink + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailureSink")
    }
}

/// One replay of a graph, seen from the workers: each stream of the batch runs segment `index`.
pub(crate) trait SegmentJob: Send + Sync + std::fmt::Debug {
    /// Runs this stream's instructions. Must not panic and must not leave a waiter blocked:
    /// every record of the segment is published even when an instruction fails.
    fn run_segment(&self, index: usize, ctx: &SegmentCtx<'_>);
}

/// One item on a stream.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) task: Task,
}

/// What a worker shares with the runtime.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    pub(crate) tag: Arc<str>,
    /// The stream id, which seeds this worker's chaos delays.
    pub(crate) salt: u64,
    pub(crate) queue: WorkQueue<Entry>,
    pub(crate) progress: Arc<Progress>,
}

/// How many threads a kernel may use: every core (capped by [`set_threads_per_stream`]).
///
/// Streams that run at once share the cores through the one kernel pool rather than a fixed
/// split: each multithreaded kernel may use every core, and the pool's threads take the work of
/// whichever kernels are running. The bf16 and small-`m` matmuls claim work units
/// cooperatively (`KernelPool::claim_units`): two products at once run one core each, and a
/// core freed when one ends joins the other at its next unit; the `gemm` crate's f32 product
/// splits into its own tasks, which the pool's threads take as they come free (issue 12;
/// before, a matmul fixed `cores / busy streams` threads when it started and kept them).
/// Large elementwise ops and conversions split too, but only while no other kernel runs in the
/// pool: a 1M-element add is 0.2 ms, and queueing it behind another stream's product cost
/// milliseconds. The count changes speed only, never bits (R6.4: the kernels parallelize over
/// output elements only).
///
/// [`set_threads_per_stream`]: crate::set_threads_per_stream
#[derive(Debug)]
pub(crate) struct CoreSplit {
    cores: usize,
    /// A user cap on threads per stream (`0`: none), see [`set_threads_per_stream`].
    cap: AtomicUsize,
}

impl CoreSplit {
    pub(crate) fn new() -> CoreSplit {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        CoreSplit {
            cores,
            cap: AtomicUsize::new(0),
        }
    }

    /// The threads `op` may use: every core (or the cap) for a multithreaded kernel, else 1.
    pub(crate) fn threads_for(&self, op: &Op) -> usize {
        if !op.is_multithreaded() {
            return 1;
        }
        match self.cap.load(Ordering::Relaxed) {
            0 => self.cores,
            cap => self.cores.min(cap),
        }
    }

    pub(crate) fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }
}

/// Where workers report failures that no caller is waiting for yet.
pub(crate) trait FailureSink: Send + Sync {
    fn report(&self, error: Error);
}

/// The worker loop. Returns when the queue is closed.
pub(crate) fn run(shared: Arc<WorkerShared>, split: &CoreSplit, failures: &dyn FailureSink) {
    loop {
        let Some(entry) = shared.queue.pop() else {
            break;
        };
        super::chaos::point(shared.salt);
        // Timeline: one relaxed load when off; the span is built only when on.
        let started = spans::recording().then(Instant::now);
        let mut span = None;
        match entry.task {
            Task::Op { op, inputs, output } => {
                let result =
                    execute::execute(&shared.tag, &op, inputs.as_slice(), split.threads_for(&op));
                if let Err(e) = &result {
                    failures.report(e.clone());
                }
                if !output.fill(result) {
                    failures.report(Error::ExecutionFailed {
                        op: op.name().to_string(),
                        stream: shared.tag.to_string(),
                        message: "output buffer was already written (tensors are immutable)".into(),
                    });
                }
                span = Some((SpanKind::Op, Label::Static(op.name()), None));
                // Inputs and output are released here, after the kernel: R3.8.
            }
            Task::Record { label } => span = Some((SpanKind::Record, label, None)),
            Task::Wait { on, label } => {
                let waits_for = on.map(|(progress, until, tag)| {
                    wait_for(&progress, until);
                    (tag, until)
                });
                span = Some((SpanKind::Wait, label, waits_for));
            }
            Task::Segment { job, index } => {
                let ctx = SegmentCtx {
                    tag: &shared.tag,
                    salt: shared.salt,
                    progress: &shared.progress,
                    split,
                    failures,
                };
                // Ops inside a segment catch their own panics; this catches a bug in the
                // segment runner itself. The publish below still covers every record of the
                // segment, so no waiter is left blocked (style §7.7).
                if catch_unwind(AssertUnwindSafe(|| job.run_segment(index, &ctx))).is_err() {
                    failures.report(Error::ExecutionFailed {
                        op: "replay".into(),
                        stream: shared.tag.to_string(),
                        message: "the replay segment panicked".into(),
                    });
                }
                // The job (and the plan and buffers it holds) is released here, after the
                // segment: R3.8, R5.12. A segment reports its own spans.
            }
        }
        if let (Some(start), Some((kind, label, waits_for))) = (started, span) {
            spans::push(RawSpan {
                stream: shared.tag.clone(),
                kind,
                label,
                start,
                end: Instant::now(),
                position: entry.seq,
                waits_for,
            });
        }
        shared.progress.publish(entry.seq);
    }
}

/// Blocks a worker until `progress` reaches `until`. While kernels run in the pool, the wait
/// parks after its spin instead of yielding: a worker yielding to busy kernel threads lost its
/// core to them for milliseconds after the record it waited for had landed (the seed's side
/// stream then started its product 5 ms late in 4 of 30 traced replays; 1 of 30 parking).
pub(crate) fn wait_for(progress: &Progress, until: u64) {
    if progress.done() >= until {
        return;
    }
    if crate::kernels::pool_busy() {
        progress.wait_until_sparing(until);
    } else {
        progress.wait_until(until);
    }
}
