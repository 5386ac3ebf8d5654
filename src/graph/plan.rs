//! The executable form of a graph and its replay (design.md §3 "Replay is cheap").
//!
//! Owns [`Plan`] (per-stream instruction lists with every buffer resolved to an arena slot, an
//! output slot or a constant, and every wait resolved to "stream `t`, position `k`"), the arena
//! it runs in, and [`Frame`], one replay in flight, which the stream workers run as segments.
//! It does not trace, check or plan memory (those passes produce what it consumes) and never
//! decides ordering: the runtime issues the segments and translates positions (R5.8).
//!
//! # Fast path
//! A worker runs its list with no allocation, lock or hash lookup: a wait is one acquire load
//! of another stream's progress counter (parking only if it is behind), a record is one store,
//! an op builds slice views of pre-planned slots and calls the kernel. The only per-replay
//! costs are on the host: one `Frame`, the output tensors and their positions.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::arena::{Arena, Slot};
use super::ir::{EntryKind, EntryRef, EventName, Graph, Operand, Output};
use super::memory::{ClockOracle, ValueLife, plan_memory};
use crate::compile::MemoryStats;
use crate::error::{Error, Result};
use crate::ops::op::Op;
use crate::runtime::{
    Batch, BatchPoint, BatchStream, Progress, SegmentCtx, SegmentJob, StreamId, chaos_point,
    runtime,
};
use crate::tensor::storage::{Buffer, Data, DataRef};
use crate::tensor::{DType, Kind, Tensor};
use crate::trace::{self, Label, RawSpan, SpanKind};

/// Where an operand or result lives during a replay.
#[derive(Debug, Clone, Copy)]
enum Loc {
    Arena(Slot),
    /// Output slot `i` of the frame (outputs never live in the arena, R5.5).
    Out(usize),
    /// Constant `i` of the plan.
    Const(usize),
}

#[derive(Debug)]
enum Instr {
    CopyIn {
        input: usize,
        dst: Slot,
    },
    Op {
        op: Op,
        inputs: Vec<Loc>,
        dst: Loc,
    },
    /// Publishes the stream's progress up to this entry: the record fires.
    Record {
        pos: u64,
    },
    /// Blocks until plan stream `stream` has executed its entry `pos` of this replay.
    Wait {
        stream: usize,
        pos: u64,
    },
}

#[derive(Debug)]
struct PlanStream {
    id: StreamId,
    tag: Arc<str>,
    /// Each instruction's kind and name, for timelines.
    labels: Vec<(SpanKind, Label)>,
    progress: Arc<Progress>,
    instrs: Vec<Instr>,
    /// Graph-local clock of the last entry (for the R5.8 clock update).
    last_clock: Vec<u64>,
}

/// An output slot's metadata and the entry that writes it.
#[derive(Debug)]
struct OutMeta {
    shape: Vec<usize>,
    dtype: DType,
    at: EntryRef,
    clock: Vec<u64>,
    op: &'static str,
}

/// A graph ready to replay.
#[derive(Debug)]
pub(crate) struct Plan {
    streams: Vec<PlanStream>,
    arena: Arena,
    consts: Vec<Arc<Buffer>>,
    outs: Vec<OutMeta>,
    /// What each closure output is.
    outputs: Vec<Output>,
    /// Output value → output slot.
    out_slot_of: Vec<Option<usize>>,
    const_tensors: Vec<Tensor>,
    /// The last record of each user event: (event id, entry, its clock).
    records: Vec<(u64, EntryRef, Vec<u64>)>,
    stats: MemoryStats,
}

impl Plan {
    /// Places the values (R4.9) and resolves every entry into an instruction.
    pub(crate) fn build(graph: &Graph) -> Result<Plan> {
        // Output values get their own buffers; every other value goes to the arena.
        let mut out_slot_of = vec![None; graph.values.len()];
        let mut outs = Vec::new();
        for o in &graph.outputs {
            if let Output::Value(v) = *o
                && out_slot_of[v].is_none()
            {
                out_slot_of[v] = Some(outs.len());
                let val = &graph.values[v];
                outs.push(OutMeta {
                    shape: val.shape.clone(),
                    dtype: val.dtype,
                    at: val.write,
                    clock: graph.clock(val.write).to_vec(),
                    op: graph.entry(val.write).name(),
                });
            }
        }
        let arena_values: Vec<usize> = (0..graph.values.len())
            .filter(|&v| out_slot_of[v].is_none())
            .collect();
        let lives: Vec<ValueLife> = arena_values
            .iter()
            .map(|&v| {
                let val = &graph.values[v];
                ValueLife {
                    bytes: val.bytes(),
                    write: val.write,
                    uses: val.uses.clone(),
                }
            })
            .collect();
        let mem = plan_memory(
            &lives,
            &ClockOracle {
                clocks: &graph.clocks,
            },
        );
        let arena = Arena::new(mem.arena_bytes).ok_or(Error::OutOfMemory {
            op: "capture (the graph's arena)".into(),
            bytes: mem.arena_bytes,
        })?;
        let mut slot_of = vec![None; graph.values.len()];
        for (i, &v) in arena_values.iter().enumerate() {
            let val = &graph.values[v];
            let slot = Slot {
                offset: mem.offsets[i],
                len: val.len(),
                dtype: val.dtype,
            };
            if !arena.fits(slot) {
                return Err(internal(format!(
                    "the memory plan put value {v} at {slot:?}, outside the {}-byte arena",
                    arena.bytes()
                )));
            }
            slot_of[v] = Some(slot);
        }
        let loc = |v: usize| match (out_slot_of[v], slot_of[v]) {
            (Some(o), _) => Loc::Out(o),
            (None, Some(s)) => Loc::Arena(s),
            (None, None) => unreachable!("every value is an output or in the arena"),
        };
        let mut streams = Vec::with_capacity(graph.streams.len());
        for (s, gs) in graph.streams.iter().enumerate() {
            let mut instrs = Vec::with_capacity(gs.entries.len());
            for (i, e) in gs.entries.iter().enumerate() {
                let pos = i as u64 + 1;
                instrs.push(match e {
                    EntryKind::CopyIn { input, value } => match loc(*value) {
                        Loc::Arena(dst) => Instr::CopyIn { input: *input, dst },
                        _ => return Err(internal("an input value outside the arena".into())),
                    },
                    EntryKind::Op { op, inputs, output } => Instr::Op {
                        op: op.clone(),
                        inputs: inputs
                            .iter()
                            .map(|o| match *o {
                                Operand::Value(v) => loc(v),
                                Operand::Const(c) => Loc::Const(c),
                            })
                            .collect(),
                        dst: loc(*output),
                    },
                    EntryKind::Record { .. } => Instr::Record { pos },
                    EntryKind::Wait { bound: Some(b), .. } => Instr::Wait {
                        stream: b.stream,
                        pos: b.pos,
                    },
                    EntryKind::Wait { bound: None, .. } => {
                        return Err(internal(format!(
                            "{} has no bound record",
                            graph.describe(EntryRef { stream: s, pos })
                        )));
                    }
                });
            }
            streams.push(PlanStream {
                id: gs.id,
                tag: Arc::from(gs.tag.as_str()),
                labels: gs.entries.iter().map(span_label).collect(),
                progress: runtime().progress_of(gs.id),
                instrs,
                last_clock: graph.clocks[s].last().cloned().unwrap_or_default(),
            });
        }
        let mut consts = Vec::with_capacity(graph.consts.len());
        for t in &graph.consts {
            match t.kind() {
                Kind::Eager { buffer, .. } => consts.push(buffer.clone()),
                Kind::Graph { .. } => return Err(internal("a graph value as a constant".into())),
            }
        }
        let stats = MemoryStats {
            arena_bytes: mem.arena_bytes,
            value_bytes: mem.value_bytes,
            values: arena_values.len(),
            slots: mem.slots,
            output_bytes: outs
                .iter()
                .map(|o| o.shape.iter().product::<usize>() * o.dtype.size_in_bytes())
                .sum(),
        };
        Ok(Plan {
            streams,
            arena,
            consts,
            outs,
            outputs: graph.outputs.clone(),
            out_slot_of,
            const_tensors: graph.consts.clone(),
            records: graph
                .last_records
                .iter()
                .map(|&(ev, r)| (ev, r, graph.clock(r).to_vec()))
                .collect(),
            stats,
        })
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.stats
    }
}

fn span_label(e: &EntryKind) -> (SpanKind, Label) {
    let event = |e: &EventName| match e {
        EventName::Fork => Label::Static("fork"),
        EventName::Join(_) => Label::Static("join"),
        EventName::User { tag, .. } => Label::Tag(tag.clone()),
    };
    match e {
        EntryKind::CopyIn { .. } => (SpanKind::CopyIn, Label::Static("copy_in")),
        EntryKind::Op { op, .. } => (SpanKind::Op, Label::Static(op.name())),
        EntryKind::Record { event: e } => (SpanKind::Record, event(e)),
        EntryKind::Wait { event: e, .. } => (SpanKind::Wait, event(e)),
    }
}

fn internal(message: String) -> Error {
    Error::ExecutionFailed {
        op: "capture".into(),
        stream: "host".into(),
        message: format!("internal error while planning the graph: {message}"),
    }
}

/// An output slot of one replay: the buffer handed to the caller and, if the previous
/// replay's buffer came back unused, its storage to write into.
#[derive(Debug)]
struct OutSlot {
    buffer: Arc<Buffer>,
    storage: Mutex<Option<Data>>,
}

/// One replay in flight: what the workers need beyond the plan.
#[derive(Debug)]
pub(crate) struct Frame {
    plan: Arc<Plan>,
    /// Entries issued on each plan stream before this replay.
    bases: Vec<u64>,
    inputs: Vec<Arc<Buffer>>,
    outs: Vec<OutSlot>,
    failed: OnceLock<Error>,
}

/// The host side of a captured graph: the plan plus the output buffers it may recycle.
#[derive(Debug)]
pub(crate) struct Replayer {
    plan: Arc<Plan>,
    /// The buffer each output slot used last time; reused only once nobody else holds it.
    last_outs: Vec<Option<Arc<Buffer>>>,
}

impl Replayer {
    pub(crate) fn new(plan: Plan) -> Replayer {
        let n = plan.outs.len();
        Replayer {
            plan: Arc::new(plan),
            last_outs: vec![None; n],
        }
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.plan.memory_stats()
    }

    /// Issues one replay (R5.2, R5.5, R5.7, R5.8) and returns the outputs, pending.
    ///
    /// # Errors
    /// [`Error::DataRace`] if an input is not ordered before the main stream;
    /// [`Error::ForeignGraphValue`] for a graph value passed as an input;
    /// [`Error::WorkerSpawn`]. Nothing is issued then.
    pub(crate) fn replay(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let plan = &self.plan;
        let mut in_buffers = Vec::with_capacity(inputs.len());
        let mut producers = Vec::with_capacity(inputs.len());
        for t in inputs {
            match t.kind() {
                Kind::Eager { buffer, producer } => {
                    in_buffers.push(buffer.clone());
                    producers.push(producer.as_ref());
                }
                Kind::Graph { graph, op, .. } => {
                    return Err(Error::ForeignGraphValue {
                        op: "Compiled::run (input)",
                        graph: format!("#{graph} (produced by {op})"),
                    });
                }
            }
        }
        // Recycle an output buffer only if no tensor and no queued entry holds it (R5.5).
        let mut outs = Vec::with_capacity(plan.outs.len());
        for (meta, last) in plan.outs.iter().zip(&mut self.last_outs) {
            let len: usize = meta.shape.iter().product();
            let recycled = last.as_mut().and_then(Arc::get_mut).and_then(|b| b.take());
            let storage = match recycled {
                Some(Ok(d)) if d.dtype() == meta.dtype && d.len() == len => Some(d),
                _ => None,
            };
            let buffer = match (storage.is_some(), last.take()) {
                (true, Some(b)) => b,
                _ => Arc::new(Buffer::pending()),
            };
            outs.push(OutSlot {
                buffer,
                storage: Mutex::new(storage),
            });
        }
        let streams: Vec<BatchStream<'_>> = plan
            .streams
            .iter()
            .map(|s| BatchStream {
                stream: s.id,
                entries: s.instrs.len() as u64,
                last_clock: &s.last_clock,
            })
            .collect();
        let records: Vec<(u64, BatchPoint<'_>)> = plan
            .records
            .iter()
            .map(|(ev, r, c)| (*ev, point(*r, c, "tagged_event_record")))
            .collect();
        let out_points: Vec<BatchPoint<'_>> = plan
            .outs
            .iter()
            .map(|o| point(o.at, &o.clock, o.op))
            .collect();
        let buffers: Vec<Arc<Buffer>> = outs.iter().map(|o| o.buffer.clone()).collect();
        let batch = Batch {
            streams: &streams,
            input_producers: &producers,
            records: &records,
            outputs: &out_points,
        };
        let positions = runtime().issue_batch(&batch, |bases| {
            Arc::new(Frame {
                plan: plan.clone(),
                bases: bases.to_vec(),
                inputs: in_buffers,
                outs,
                failed: OnceLock::new(),
            })
        })?;
        let mut result = Vec::with_capacity(plan.outputs.len());
        for o in &plan.outputs {
            result.push(match *o {
                Output::Value(v) => {
                    let slot = plan.out_slot_of[v].expect("every output value has a slot");
                    let meta = &plan.outs[slot];
                    Tensor::from_buffer(
                        meta.shape.clone(),
                        meta.dtype,
                        buffers[slot].clone(),
                        Some(positions[slot].clone()),
                    )
                }
                Output::Input(i) => inputs[i].clone(),
                Output::Const(c) => plan.const_tensors[c].clone(),
            });
        }
        for (last, b) in self.last_outs.iter_mut().zip(buffers) {
            *last = Some(b);
        }
        Ok(result)
    }
}

fn point<'a>(at: EntryRef, clock: &'a [u64], op: &'static str) -> BatchPoint<'a> {
    BatchPoint {
        stream: at.stream,
        pos: at.pos,
        clock,
        op,
    }
}

impl Frame {
    fn fail(&self, e: Error, ctx: &SegmentCtx<'_>) {
        if self.failed.set(e.clone()).is_ok() {
            ctx.failures.report(e);
        }
    }

    fn view(&self, loc: Loc) -> std::result::Result<DataRef<'_>, Error> {
        match loc {
            // SAFETY: the memory plan lets two values share bytes only if every use of the
            // first happens-before the write of the second (R4.9), and this entry is ordered
            // after the slot's write by the graph's hb relation (checked at capture, R4.8),
            // which the workers enforce through the progress counters (waits block until the
            // bound record is published). So no write to this slot runs while we read it.
            Loc::Arena(slot) => Ok(unsafe { self.plan.arena.view(slot) }),
            Loc::Out(i) => ready(&self.outs[i].buffer),
            Loc::Const(i) => ready(&self.plan.consts[i]),
        }
    }
}

fn ready(b: &Buffer) -> std::result::Result<DataRef<'_>, Error> {
    match b.get() {
        Some(Ok(d)) => Ok(d.view()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(internal(
            "a replay read a buffer before it was written".into(),
        )),
    }
}

impl Frame {
    fn run_op(&self, op: &Op, inputs: &[Loc], dst: Loc, ctx: &SegmentCtx<'_>) {
        let fail = |message: String| Error::ExecutionFailed {
            op: op.name().to_string(),
            stream: ctx.tag.to_string(),
            message,
        };
        let fill_out = |i: usize, r: std::result::Result<Data, Error>| {
            if !self.outs[i].buffer.fill(r) {
                self.fail(fail("output buffer written twice".into()), ctx);
            }
        };
        if let Some(e) = self.failed.get() {
            if let Loc::Out(i) = dst {
                fill_out(i, Err(e.clone()));
            }
            return;
        }
        let a = self.view(inputs[0]);
        let b = inputs.get(1).map(|&l| self.view(l));
        let (pair, single);
        let views: std::result::Result<&[DataRef<'_>], Error> = match (a, b) {
            (Ok(a), Some(Ok(b))) => {
                pair = [a, b];
                Ok(&pair)
            }
            (Ok(a), None) => {
                single = [a];
                Ok(&single)
            }
            (Err(e), _) | (_, Some(Err(e))) => Err(e),
        };
        let views = match views {
            Ok(v) => v,
            Err(e) => {
                self.fail(e.clone(), ctx);
                if let Loc::Out(i) = dst {
                    fill_out(i, Err(e));
                }
                return;
            }
        };
        let threads = if op.is_multithreaded() {
            ctx.split.threads_per_busy_stream()
        } else {
            1
        };
        let run =
            |out| match catch_unwind(AssertUnwindSafe(|| op.execute_into(views, out, threads))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(msg)) => Err(fail(msg)),
                Err(_) => Err(fail("kernel panicked".into())),
            };
        match dst {
            Loc::Arena(slot) => {
                // SAFETY: as in `view`, the plan and the hb order give this entry exclusive
                // use of the slot's bytes: every earlier value sharing them has had all its
                // uses complete, and later sharers are written only after this value's uses.
                // The slot overlaps none of this op's inputs (a reader never shares with the
                // value it reads: hb is strict), so no other view of these bytes is alive.
                let out = unsafe { self.plan.arena.view_mut(slot) };
                if let Err(e) = run(out) {
                    self.fail(e, ctx);
                }
            }
            Loc::Out(i) => {
                let storage = self.outs[i]
                    .storage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let Some(mut data) =
                    storage.or_else(|| Data::try_zeroed(op.out_dtype, op.out_len()))
                else {
                    let e = fail(format!(
                        "out of memory: cannot allocate {} bytes for the output",
                        op.out_len() * op.out_dtype.size_in_bytes()
                    ));
                    self.fail(e.clone(), ctx);
                    fill_out(i, Err(e));
                    return;
                };
                let r = run(data.view_mut());
                match r {
                    Ok(()) => fill_out(i, Ok(data)),
                    Err(e) => {
                        self.fail(e.clone(), ctx);
                        fill_out(i, Err(e));
                    }
                }
            }
            Loc::Const(_) => self.fail(fail("an op writes a constant".into()), ctx),
        }
    }
}

impl SegmentJob for Frame {
    fn run_segment(&self, index: usize, ctx: &SegmentCtx<'_>) {
        let plan = &self.plan;
        let base = self.bases[index];
        let stream = &plan.streams[index];
        for (i, instr) in stream.instrs.iter().enumerate() {
            chaos_point(ctx.salt);
            // Timeline: one relaxed load when off.
            let started = trace::recording().then(Instant::now);
            match instr {
                Instr::Record { pos } => ctx.progress.publish(base + pos),
                Instr::Wait { stream, pos } => {
                    let progress = &plan.streams[*stream].progress;
                    let target = self.bases[*stream] + pos;
                    if progress.done() < target {
                        ctx.split.leave();
                        progress.wait_until(target);
                        ctx.split.enter();
                    }
                }
                Instr::CopyIn { input, dst } => {
                    if self.failed.get().is_some() {
                        continue;
                    }
                    match self.inputs[*input].get() {
                        Some(Ok(d)) => {
                            // SAFETY: input slots are written only by their copy-in, and
                            // replays of one plan are ordered (R5.9), so no other entry uses
                            // this slot while the copy runs (same argument as `view`).
                            let mut out = unsafe { plan.arena.view_mut(*dst) };
                            if !out.copy_from(d.view()) {
                                self.fail(internal("input shape changed".into()), ctx);
                            }
                        }
                        Some(Err(e)) => self.fail(e.clone(), ctx),
                        None => self.fail(internal("an input was not ready".into()), ctx),
                    }
                }
                Instr::Op { op, inputs, dst } => self.run_op(op, inputs, *dst, ctx),
            }
            if let Some(start) = started {
                let (kind, label) = stream.labels[i].clone();
                let waits_for = match instr {
                    Instr::Wait { stream: t, pos } => {
                        Some((plan.streams[*t].tag.clone(), self.bases[*t] + pos))
                    }
                    _ => None,
                };
                trace::push(RawSpan {
                    stream: stream.tag.clone(),
                    kind,
                    label,
                    start,
                    end: Instant::now(),
                    position: base + i as u64 + 1,
                    waits_for,
                });
            }
        }
    }
}
