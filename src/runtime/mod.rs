//! The CPU backend: streams, their workers, the issue path and eager happens-before tracking.
//!
//! Owns the process-wide stream registry (tag → stream, R2.1–R2.2), one worker thread per
//! stream, the vector clocks of R3.4 (one per stream plus the host frontier `H`), each event's
//! latest record (R1.7–R1.10), and the host waits (`to_vec_f32`, [`synchronize`]). It does not
//! validate shapes (that is `ops::op`) and does not know about scopes (the caller passes the
//! stream). See `README.md` beside this file for the worker/event protocol.
//!
//! # The happens-before tracker
//! *Why this exists*: results must never depend on thread timing (R3.10), so whether a read is
//! ordered after its producer is decided when the read is issued, not observed when it runs.
//!
//! *Strategy*: every issue happens under one lock (`Runtime::state`), so issue order is a total
//! order, stream FIFO order agrees with it, and a refused call can return before it changes
//! anything (R3.9). Issuing on stream `s` computes `V_s ⊔ H`, checks every input's producer
//! position against it (R3.5), then ticks `V_s[s]` and pushes the entry.
//!
//! *Invariant*: an accepted entry's inputs are produced by entries that hb it, so when it runs
//! they have executed: stream order, or a chain of waits each of which blocked until the
//! producer's progress was published (release/acquire through [`Progress`]).
//!
//! *Fast path*: the lock is held for a clock join (a few words) and a queue push.

mod chaos;
pub(crate) mod clock;
mod queue;
mod signal;
mod sync;
pub(crate) mod worker;

pub(crate) use self::chaos::point as chaos_point;
pub(crate) use self::worker::{SegmentCtx, SegmentJob};

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use self::clock::VClock;
pub(crate) use self::signal::Progress;
use self::sync::{Mutex, lock};
use self::worker::{CoreSplit, Entry, FailureSink, Task, WorkerShared};
use crate::error::{Error, Result};
use crate::ops::op::Op;
use crate::tensor::storage::Buffer;
use crate::trace::Label;

/// Index of a stream in the registry. Streams are never removed, so ids are stable.
pub(crate) type StreamId = usize;

/// The main stream's id; its tag is [`MAIN_TAG`].
pub(crate) const MAIN: StreamId = 0;

/// The reserved tag of the main stream (R2.4).
pub(crate) const MAIN_TAG: &str = "default";

/// Where an entry sits and what it had seen when issued: `(stream, seq)` plus its clock.
#[derive(Debug)]
pub(crate) struct Position {
    pub(crate) stream: StreamId,
    pub(crate) seq: u64,
    /// The op's name (`matmul`, `tagged_event_record`, ...), for error messages.
    pub(crate) op: &'static str,
    pub(crate) clock: VClock,
}

#[derive(Debug)]
struct Stream {
    clock: VClock,
    shared: Arc<WorkerShared>,
    started: bool,
}

#[derive(Debug, Default)]
struct State {
    streams: Vec<Stream>,
    by_tag: HashMap<String, StreamId>,
    host: VClock,
    /// Latest record of each event, by event id.
    latest_record: HashMap<u64, Arc<Position>>,
}

/// The process-wide CPU runtime.
#[derive(Debug)]
pub(crate) struct Runtime {
    state: Mutex<State>,
    split: CoreSplit,
    failures: Mutex<Vec<Error>>,
}

/// The runtime, created on first use.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        chaos::init_from_env();
        let mut state = State::default();
        add_stream(&mut state, MAIN_TAG);
        Runtime {
            state: Mutex::new(state),
            split: CoreSplit::new(),
            failures: Mutex::default(),
        }
    })
}

fn add_stream(state: &mut State, tag: &str) -> StreamId {
    let id = state.streams.len();
    let shared = Arc::new(WorkerShared {
        tag: Arc::from(tag),
        salt: id as u64,
        queue: Default::default(),
        progress: Arc::new(Progress::default()),
    });
    state.streams.push(Stream {
        clock: VClock::default(),
        shared,
        started: false,
    });
    state.by_tag.insert(tag.to_string(), id);
    id
}

impl FailureSink for Runtime {
    fn report(&self, error: Error) {
        lock(&self.failures).push(error);
    }
}

impl State {
    /// Starts the stream's worker thread if it is not running yet. Done before any state
    /// changes, so a spawn failure leaves everything as it was (R3.9).
    fn ensure_started(&mut self, s: StreamId) -> Result<()> {
        let stream = &mut self.streams[s];
        if stream.started {
            return Ok(());
        }
        let shared = stream.shared.clone();
        std::thread::Builder::new()
            // Thread names cannot hold NUL bytes; any other tag is a valid stream tag (R2.10).
            .name(format!("tagstream:{}", shared.tag.replace('\0', "\\0")))
            .spawn(move || {
                let rt = runtime();
                worker::run(shared, &rt.split, rt);
            })
            .map_err(|e| Error::WorkerSpawn {
                stream: stream.shared.tag.to_string(),
                message: e.to_string(),
            })?;
        stream.started = true;
        Ok(())
    }

    fn tag(&self, s: StreamId) -> String {
        self.streams[s].shared.tag.to_string()
    }

    /// Commits the clock `clock` (already `V_s ⊔ H ⊔ ...`) as stream `s`'s, ticks it and pushes
    /// the entry. Everything that can fail must have been checked before.
    fn issue(
        &mut self,
        s: StreamId,
        mut clock: VClock,
        op: &'static str,
        task: Task,
    ) -> Arc<Position> {
        let seq = clock.tick(s);
        let stream = &mut self.streams[s];
        stream.clock = clock.clone();
        stream.shared.queue.push(Entry { seq, task });
        Arc::new(Position {
            stream: s,
            seq,
            op,
            clock,
        })
    }

    fn issue_record(&mut self, s: StreamId, label: Label) -> Result<Arc<Position>> {
        self.ensure_started(s)?;
        let start = self.start_point(s);
        Ok(self.issue(s, start, "tagged_event_record", Task::Record { label }))
    }

    fn issue_wait(&mut self, s: StreamId, bound: Option<&Position>, label: Label) -> Result<()> {
        self.ensure_started(s)?;
        let mut start = self.start_point(s);
        let on = bound.map(|rec| {
            start.join(&rec.clock);
            let other = &self.streams[rec.stream].shared;
            (other.progress.clone(), rec.seq, other.tag.clone())
        });
        self.issue(s, start, "tagged_event_wait", Task::Wait { on, label });
        Ok(())
    }

    fn check_inputs(&self, producers: &[Option<&Arc<Position>>]) -> Result<()> {
        let main = self.start_point(MAIN);
        for (i, p) in producers.iter().enumerate() {
            if let Some(p) = p
                && main.get(p.stream) < p.seq
            {
                return Err(Error::DataRace {
                    reader: "Compiled::run (input copy-in)".into(),
                    reader_stream: MAIN_TAG.into(),
                    producer: format!("input {i} (produced by {})", p.op),
                    producer_stream: self.tag(p.stream),
                });
            }
        }
        Ok(())
    }

    /// `V_s ⊔ H`: the point that an entry issued now on `s` starts from (R3.4).
    fn start_point(&self, s: StreamId) -> VClock {
        let mut c = self.streams[s].clock.clone();
        c.join(&self.host);
        c
    }
}

impl Runtime {
    /// The stream with `tag`, created (with its worker) on first use (R2.1).
    pub(crate) fn stream_for_tag(&self, tag: &str) -> Result<StreamId> {
        let mut st = lock(&self.state);
        let id = match st.by_tag.get(tag) {
            Some(&id) => id,
            None => add_stream(&mut st, tag),
        };
        st.ensure_started(id)?;
        Ok(id)
    }

    /// Issues `op` on stream `s`, reading `inputs` (their buffers and producers).
    ///
    /// # Errors
    /// [`Error::DataRace`] if an input's producer does not happen-before `s`'s current point;
    /// nothing is issued then.
    pub(crate) fn launch(
        &self,
        s: StreamId,
        op: Op,
        inputs: &[(&Arc<Buffer>, Option<&Arc<Position>>)],
    ) -> Result<(Arc<Buffer>, Arc<Position>)> {
        let mut st = lock(&self.state);
        st.ensure_started(s)?;
        let start = st.start_point(s);
        for p in inputs.iter().filter_map(|(_, producer)| *producer) {
            if start.get(p.stream) < p.seq {
                return Err(Error::DataRace {
                    reader: op.name().to_string(),
                    reader_stream: st.tag(s),
                    producer: p.op.to_string(),
                    producer_stream: st.tag(p.stream),
                });
            }
        }
        let name = op.name();
        let output = Arc::new(Buffer::pending());
        let task = Task::Op {
            op,
            inputs: inputs.iter().map(|(b, _)| Arc::clone(b)).collect(),
            output: output.clone(),
        };
        let pos = st.issue(s, start, name, task);
        Ok((output, pos))
    }

    /// Issues a record of event `event` on stream `s` (R1.7); waits issued later bind to it.
    pub(crate) fn record(&self, s: StreamId, event: u64, tag: &Arc<str>) -> Result<()> {
        let mut st = lock(&self.state);
        let pos = st.issue_record(s, Label::Tag(tag.clone()))?;
        st.latest_record.insert(event, pos);
        Ok(())
    }

    /// Issues a record on stream `s` that belongs to no tagged event (the join of an eager
    /// compiled run's scope, R3.11) and returns its position for [`Runtime::wait_on`].
    pub(crate) fn record_internal(&self, s: StreamId) -> Result<Arc<Position>> {
        lock(&self.state).issue_record(s, Label::Static("join"))
    }

    /// The main stream's current point as a position that a wait can bind to: waiting on it
    /// orders exactly what a record issued now on the main stream would (the fork of an eager
    /// compiled run, R3.11), without issuing an entry.
    pub(crate) fn main_point(&self) -> Arc<Position> {
        let st = lock(&self.state);
        let clock = st.start_point(MAIN);
        Arc::new(Position {
            stream: MAIN,
            seq: clock.get(MAIN),
            op: "fork",
            clock,
        })
    }

    /// Issues a wait on stream `s`, bound to the latest record of `event` (R1.8), or a no-op
    /// wait if it was never recorded (R1.9).
    pub(crate) fn wait(&self, s: StreamId, event: u64, tag: &Arc<str>) -> Result<()> {
        let mut st = lock(&self.state);
        let bound = st.latest_record.get(&event).cloned();
        st.issue_wait(s, bound.as_deref(), Label::Tag(tag.clone()))
    }

    /// Issues a wait on stream `s` bound to the entry at `on` (internal closure events, named
    /// `label` in timelines).
    pub(crate) fn wait_on(&self, s: StreamId, on: &Position, label: &'static str) -> Result<()> {
        lock(&self.state).issue_wait(s, Some(on), Label::Static(label))
    }

    /// R5.2: every input of a compiled call must be ready or produced by an entry that
    /// happens-before the main stream's current point.
    ///
    /// # Errors
    /// [`Error::DataRace`] naming the input index and its producer.
    pub(crate) fn check_inputs(&self, producers: &[Option<&Arc<Position>>]) -> Result<()> {
        lock(&self.state).check_inputs(producers)
    }

    /// Whether the entry at `p` happens-before the current point of the main stream or of
    /// stream `s` (used by capture for tensors made outside the graph, R4.8).
    pub(crate) fn visible_from(&self, p: &Position, s: StreamId) -> bool {
        let st = lock(&self.state);
        st.start_point(MAIN).get(p.stream) >= p.seq || st.start_point(s).get(p.stream) >= p.seq
    }

    /// The stream with `tag` if it exists; never creates one (R4.10, SC23).
    pub(crate) fn lookup_stream(&self, tag: &str) -> Option<StreamId> {
        lock(&self.state).by_tag.get(tag).copied()
    }

    /// The tag of stream `s`.
    pub(crate) fn stream_tag(&self, s: StreamId) -> String {
        lock(&self.state).tag(s)
    }

    /// The progress counter of stream `s`, which replays wait on directly.
    pub(crate) fn progress_of(&self, s: StreamId) -> Arc<Progress> {
        lock(&self.state).streams[s].shared.progress.clone()
    }

    /// Issues one replay of a captured graph: one segment entry per stream of `batch`, all
    /// under the runtime lock, so the replay takes effect at one point of the issue order.
    ///
    /// Afterwards the clocks, the latest record of every event recorded in the graph and the
    /// returned output positions are what issuing the graph's entries one by one would have
    /// produced (R5.8). `make_job` receives each stream's base (entries issued on it before
    /// the replay) so the job can translate graph positions into stream positions.
    ///
    /// # Errors
    /// [`Error::DataRace`] if an input is not ordered before the main stream (R5.2);
    /// [`Error::WorkerSpawn`]. Nothing is issued then.
    pub(crate) fn issue_batch(
        &self,
        batch: &Batch<'_>,
        make_job: impl FnOnce(&[u64]) -> Arc<dyn SegmentJob>,
    ) -> Result<Vec<Arc<Position>>> {
        let mut st = lock(&self.state);
        for bs in batch.streams {
            st.ensure_started(bs.stream)?;
        }
        st.check_inputs(batch.input_producers)?;
        let before: Vec<VClock> = batch
            .streams
            .iter()
            .map(|b| st.start_point(b.stream))
            .collect();
        let bases: Vec<u64> = batch
            .streams
            .iter()
            .map(|b| st.streams[b.stream].clock.get(b.stream))
            .collect();
        let translate = |local: &[u64]| -> VClock {
            let mut c = VClock::default();
            for (t, &l) in local.iter().enumerate() {
                if l > 0 {
                    c.join(&before[t]);
                }
            }
            for (t, &l) in local.iter().enumerate() {
                if l > 0 {
                    c.raise(batch.streams[t].stream, bases[t] + l);
                }
            }
            c
        };
        let job = make_job(&bases);
        for (j, bs) in batch.streams.iter().enumerate() {
            if bs.entries == 0 {
                // A graph with no entry on this stream (only possible for the main stream of
                // an empty graph) leaves it untouched.
                continue;
            }
            let clock = translate(bs.last_clock);
            let stream = &mut st.streams[bs.stream];
            stream.clock = clock;
            stream.shared.queue.push(Entry {
                seq: bases[j] + bs.entries,
                task: Task::Segment {
                    job: job.clone(),
                    index: j,
                },
            });
        }
        let position = |at: &BatchPoint<'_>| {
            Arc::new(Position {
                stream: batch.streams[at.stream].stream,
                seq: bases[at.stream] + at.pos,
                op: at.op,
                clock: translate(at.clock),
            })
        };
        for (event, at) in batch.records {
            let pos = position(at);
            st.latest_record.insert(*event, pos);
        }
        Ok(batch.outputs.iter().map(position).collect())
    }
    /// Blocks until the entry at `pos` has executed, then adds what it had seen to the host
    /// frontier (R3.6).
    pub(crate) fn host_wait(&self, pos: &Position) {
        let progress = lock(&self.state).streams[pos.stream]
            .shared
            .progress
            .clone();
        progress.wait_until(pos.seq);
        lock(&self.state).host.join(&pos.clock);
    }

    /// See [`synchronize`].
    fn synchronize(&self) -> Result<()> {
        // (progress, entries issued so far, clock) of every started stream. A stream's own
        // clock component counts the entries issued on it.
        let targets: Vec<(Arc<Progress>, u64, VClock)> = {
            let st = lock(&self.state);
            st.streams
                .iter()
                .enumerate()
                .filter(|(_, s)| s.started)
                .map(|(id, s)| (s.shared.progress.clone(), s.clock.get(id), s.clock.clone()))
                .collect()
        };
        for (progress, issued, _) in &targets {
            progress.wait_until(*issued);
        }
        {
            let mut st = lock(&self.state);
            for (_, _, clock) in &targets {
                st.host.join(clock);
            }
        }
        let mut failures = lock(&self.failures);
        if failures.is_empty() {
            return Ok(());
        }
        let first = failures.remove(0);
        failures.clear();
        Err(first)
    }
}

/// One stream's part of a [`Runtime::issue_batch`].
#[derive(Debug)]
pub(crate) struct BatchStream<'a> {
    pub(crate) stream: StreamId,
    /// Entries of the graph on this stream (its segment counts as that many positions).
    pub(crate) entries: u64,
    /// Graph-local clock of the segment's last entry, indexed like `Batch::streams`.
    pub(crate) last_clock: &'a [u64],
}

/// An entry of a batch whose eager position is wanted: `pos` is 1-based on batch stream
/// `stream`, `clock` is its graph-local clock.
#[derive(Debug)]
pub(crate) struct BatchPoint<'a> {
    pub(crate) stream: usize,
    pub(crate) pos: u64,
    pub(crate) clock: &'a [u64],
    pub(crate) op: &'static str,
}

/// What [`Runtime::issue_batch`] issues and reports.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub(crate) streams: &'a [BatchStream<'a>],
    pub(crate) input_producers: &'a [Option<&'a Arc<Position>>],
    /// The last record of each tagged event recorded in the graph: `(event id, entry)`.
    pub(crate) records: &'a [(u64, BatchPoint<'a>)],
    /// Entries whose positions are returned (the producers of the outputs).
    pub(crate) outputs: &'a [BatchPoint<'a>],
}

/// How much work one stream has been given, from [`stream_activity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamActivity {
    /// The stream's tag (`"default"` for the main stream).
    pub tag: String,
    /// Entries (ops, records, waits) issued on the stream so far.
    pub issued: u64,
    /// Entries the stream's worker has executed so far.
    pub executed: u64,
}

/// Every stream created so far in this process, main stream first, with its entry counts.
///
/// ```
/// let before = tagstream::stream_activity();
/// assert_eq!(before[0].tag, "default");
/// ```
pub fn stream_activity() -> Vec<StreamActivity> {
    let st = lock(&runtime().state);
    st.streams
        .iter()
        .enumerate()
        .map(|(id, s)| StreamActivity {
            tag: s.shared.tag.to_string(),
            issued: s.clock.get(id),
            executed: s.shared.progress.done(),
        })
        .collect()
}

/// Chaos mode (SC37): with `Some(seed)`, every stream worker stalls at seeded random points
/// (yields, spins, sleeps of up to a fraction of a millisecond) before each entry and each
/// replay instruction; `None` turns it off. Results never change (R3.10, R5.6): tests run the
/// same program with and without chaos and compare bits. Process-wide; also set by the
/// environment variable `TAGSTREAM_CHAOS=<seed>` at start-up.
///
/// ```
/// tagstream::set_chaos(Some(42));
/// let x = tagstream::Tensor::full(&[4], 1.0, tagstream::DType::F32)?;
/// assert_eq!(x.add(&x)?.to_vec_f32()?, vec![2.0; 4]);
/// tagstream::set_chaos(None);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn set_chaos(seed: Option<u64>) {
    runtime(); // reads TAGSTREAM_CHAOS first, so an explicit call wins
    chaos::set(seed);
}

/// Caps the threads one op may use on a stream (`0` restores the default split,
/// `max(1, cores / busy streams)`; design.md §3 "Threads per stream").
///
/// With `1`, every matmul runs on its stream's worker thread alone, so independent branches on
/// different streams are what uses the cores. Results never depend on it (R6.4). Process-wide;
/// takes effect for ops that start after the call.
///
/// ```
/// tagstream::set_threads_per_stream(1);
/// let a = tagstream::Tensor::full(&[64, 64], 1.0, tagstream::DType::F32)?;
/// assert_eq!(a.matmul(&a)?.to_vec_f32()?[0], 64.0);
/// tagstream::set_threads_per_stream(0);
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn set_threads_per_stream(n: usize) {
    runtime().split.set_cap(n);
}

/// Blocks until every entry issued on any stream before the call has executed (R3.3).
///
/// Afterwards every stream treats that work as done (R3.6). Returns the first failure a
/// worker reported since the last `synchronize`, if any.
///
/// # Errors
/// A pending [`Error::UnbalancedStreamSwitch`] of this thread (R2.8); a worker failure;
/// [`Error::HostSyncInCapture`] on a thread that is capturing a graph (R4.3).
///
/// ```
/// let x = tagstream::Tensor::full(&[2, 2], 1.0, tagstream::DType::F32)?;
/// let y = x.exp()?; // enqueued on the main stream, returns at once
/// tagstream::synchronize()?; // y is computed now
/// # Ok::<(), tagstream::Error>(())
/// ```
pub fn synchronize() -> Result<()> {
    crate::scope::take_pending_error()?;
    crate::graph::refuse_in_capture("synchronize", None)?;
    runtime().synchronize()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::kernels::BinaryOp;
    use crate::tensor::DType;
    use crate::tensor::storage::Data;

    /// A worker that hits a failing entry reports it, publishes its position anyway (no waiter
    /// hangs), propagates the failure to dependent ops, and keeps serving later entries.
    #[test]
    fn worker_failure_surfaces_and_nothing_hangs() {
        let rt = runtime();
        let s = rt.stream_for_tag("runtime-test-failure").unwrap();
        // An op validated for f32 but handed f16 data: execute() refuses it.
        let op = Op::binary(BinaryOp::Add, (&[2], DType::F32), (&[2], DType::F32)).unwrap();
        let bad = Arc::new(Buffer::ready(Data::zeroed(DType::F16, 2)));
        let (out, pos) = rt
            .launch(s, op.clone(), &[(&bad, None), (&bad, None)])
            .unwrap();
        // A dependent op on the same stream fails with the same cause.
        let (dep, dep_pos) = rt
            .launch(s, op.clone(), &[(&out, Some(&pos)), (&out, Some(&pos))])
            .unwrap();
        rt.host_wait(&dep_pos);
        let first = out.get().unwrap().clone().unwrap_err();
        assert!(
            matches!(&first, Error::ExecutionFailed { op, stream, .. } if op == "add" && stream == "runtime-test-failure"),
            "{first}"
        );
        assert_eq!(dep.get().unwrap().clone().unwrap_err(), first);
        assert!(synchronize().is_err(), "synchronize reports the failure");
        synchronize().unwrap(); // ... once
        // The stream still works.
        let good = Arc::new(Buffer::ready(Data::from_f32(&[1.0, 2.0], DType::F32)));
        let (ok, ok_pos) = rt.launch(s, op, &[(&good, None), (&good, None)]).unwrap();
        rt.host_wait(&ok_pos);
        assert_eq!(
            ok.get().unwrap().as_ref().unwrap().to_f32_vec(),
            vec![2.0, 4.0]
        );
    }
}
