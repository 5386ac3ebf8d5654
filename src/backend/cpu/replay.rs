//! The CPU's replay of a [`Program`]: an arena and one segment entry per stream.
//!
//! Owns [`CpuExec`] (a program instantiated on the CPU: its arena, its constants' buffers, the
//! output buffers it may recycle), [`CpuReplay`] (one replay bound to its inputs and outputs)
//! and `Frame`, the replay in flight that the stream workers run as segments. It never decides
//! ordering: `dispatch` issues a replay through the runtime, which fixes every stream's base.
//!
//! # Fast path
//! A worker runs its list with no allocation, lock or hash lookup: a wait is one acquire load
//! of another stream's progress counter (parking only if it is behind), a record is one store,
//! an op builds slice views of pre-planned arena bytes and calls the kernel. Call inputs are not
//! copied into the arena: an op reads the caller's buffer in place (tensors are immutable and
//! the `Frame` holds them), and a copy-in entry only checks its input (R5.2; for the seed at
//! 1000×1000 the copies were 0.8 ms of an 11.5 ms bf16 replay). The only per-replay costs are
//! on the host: one `Frame`, the output tensors and their positions.
//!
//! # Failures (R3.12)
//! A failed op poisons its own output value and nothing else: each arena value has a poison
//! cell for the length of one replay (outputs carry the error in their buffer), an op that reads
//! a poisoned value poisons its own output with the same cause, and every other op runs
//! normally. Which values fail therefore depends on the data flow only, never on timing, and
//! equals what eager execution gives.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::arena::{Arena, Slot};
use super::chaos;
use super::execute::{self, OperandViews, out_of_memory};
use super::signal::Progress;
use super::worker::{SegmentCtx, SegmentJob, wait_for};
use crate::error::{Error, Result};
use crate::graph::program::{Instr, Loc, Program, ValueId, View};
use crate::ops::op::{MAX_OPERANDS, Op};
use crate::tensor::storage::{Buffer, Data, DataRef};
use crate::trace::spans::{self, RawSpan};

fn internal(message: &str) -> Error {
    Error::ExecutionFailed {
        op: "replay".into(),
        stream: "host".into(),
        message: format!("internal error: {message}"),
    }
}

/// The arena bytes of a view (the CPU kernels read and write dense rows).
fn slot(view: &View) -> Slot {
    Slot {
        offset: view.offset,
        len: view.len,
        dtype: view.dtype,
    }
}

/// A program instantiated on the CPU.
#[derive(Debug)]
pub(crate) struct CpuExec {
    shared: Arc<Instance>,
    /// The buffer each output slot used last time; reused only once nobody else holds it.
    last_outs: Vec<Option<Arc<Buffer>>>,
}

/// What every replay of one program shares.
#[derive(Debug)]
struct Instance {
    program: Arc<Program>,
    arena: Arena,
    consts: Vec<Arc<Buffer>>,
    /// The arena bytes of each value, resolved once (an empty slot for values that live
    /// elsewhere, which no instruction reads from the arena): the replay loop indexes this
    /// table instead of decoding views.
    slots: Box<[Slot]>,
    /// For each value, the call input it is (`Some(i)` for the value of `CopyIn { input: i }`):
    /// the replay reads the caller's buffer in place instead of copying it into the arena.
    input_of: Box<[Option<usize>]>,
}

/// One replay of a [`CpuExec`], bound to its inputs and outputs but not yet enqueued.
#[derive(Debug)]
pub(crate) struct CpuReplay {
    shared: Arc<Instance>,
    inputs: Vec<Arc<Buffer>>,
    outs: Vec<OutSlot>,
    buffers: Vec<Arc<Buffer>>,
}

/// An output slot of one replay: the buffer handed to the caller and, if the previous
/// replay's buffer came back unused, its storage to write into.
#[derive(Debug)]
struct OutSlot {
    buffer: Arc<Buffer>,
    storage: Mutex<Option<Data>>,
}

impl CpuExec {
    /// Allocates the arena and resolves the program for the CPU.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the arena cannot be allocated.
    pub(crate) fn new(program: Arc<Program>) -> Result<CpuExec> {
        let arena = Arena::new(program.arena_bytes).ok_or(Error::OutOfMemory {
            op: "capture (the graph's arena)".into(),
            bytes: program.arena_bytes,
        })?;
        let consts = program.const_buffers()?;
        // Every view must be dense and inside the arena, and every value an instruction names
        // must have one: checked once here, so a replay never meets a bad view.
        for v in program.views.iter().flatten() {
            if !v.is_contiguous() || !arena.fits(slot(v)) {
                return Err(internal(
                    "a view the CPU executor cannot run (strided, or outside the arena)",
                ));
            }
        }
        for instr in program.streams.iter().flat_map(|s| &s.instrs) {
            let named = match instr {
                Instr::CopyIn { dst, .. } => vec![Loc::Arena(*dst)],
                Instr::Op { inputs, dst, .. } => std::iter::once(*dst)
                    .chain(inputs.as_slice().iter().copied())
                    .collect(),
                _ => Vec::new(),
            };
            for loc in named {
                if let Loc::Arena(v) = loc
                    && program.view(v).is_none()
                {
                    return Err(internal("an instruction names a value with no arena view"));
                }
            }
        }
        let mut input_of = vec![None; program.views.len()];
        for instr in program.streams.iter().flat_map(|s| &s.instrs) {
            if let Instr::CopyIn { input, dst } = instr {
                input_of[*dst] = Some(*input);
            }
        }
        let outs = program.outs.len();
        Ok(CpuExec {
            shared: Arc::new(Instance {
                slots: program
                    .views
                    .iter()
                    .map(|v| {
                        v.as_ref().map_or(
                            Slot {
                                offset: 0,
                                len: 0,
                                dtype: crate::dtype::DType::F32,
                            },
                            slot,
                        )
                    })
                    .collect(),
                input_of: input_of.into(),
                program,
                arena,
                consts,
            }),
            last_outs: vec![None; outs],
        })
    }

    /// Binds one replay to `inputs` and picks its output buffers: the previous replay's buffer
    /// is recycled only if no tensor and no queued entry holds it (R5.5).
    pub(crate) fn prepare(&mut self, inputs: Vec<Arc<Buffer>>) -> CpuReplay {
        let program = &self.shared.program;
        let mut outs = Vec::with_capacity(program.outs.len());
        for (meta, last) in program.outs.iter().zip(&mut self.last_outs) {
            let recycled = last.as_mut().and_then(Arc::get_mut).and_then(|b| b.take());
            let storage = match recycled {
                Some(Ok(d)) if d.dtype() == meta.dtype && d.len() == meta.len() => Some(d),
                _ => None,
            };
            let buffer = match (storage.is_some(), last.take()) {
                (true, Some(b)) => b,
                _ => Arc::new(Buffer::pending()),
            };
            *last = Some(buffer.clone());
            outs.push(OutSlot {
                buffer,
                storage: Mutex::new(storage),
            });
        }
        let buffers = outs.iter().map(|o| o.buffer.clone()).collect();
        CpuReplay {
            shared: self.shared.clone(),
            inputs,
            outs,
            buffers,
        }
    }
}

impl CpuReplay {
    pub(crate) fn outputs(&self) -> &[Arc<Buffer>] {
        &self.buffers
    }

    /// The job the workers run, and each stream's `(base, entries)`.
    pub(crate) fn into_job(
        self,
        bases: Vec<u64>,
        progress: Vec<Arc<Progress>>,
    ) -> (Arc<dyn SegmentJob>, Vec<(u64, u64)>) {
        let entries = self
            .shared
            .program
            .streams
            .iter()
            .zip(&bases)
            .map(|(s, &b)| (b, s.instrs.len() as u64))
            .collect();
        let poison = (0..self.shared.program.views.len())
            .map(|_| AtomicU32::new(0))
            .collect();
        let job = Arc::new(Frame {
            shared: self.shared,
            bases,
            progress,
            inputs: self.inputs,
            outs: self.outs,
            poison,
            any_poison: AtomicBool::new(false),
            failures: Mutex::default(),
        });
        (job, entries)
    }
}

/// One replay in flight: what the workers need beyond the program.
#[derive(Debug)]
struct Frame {
    shared: Arc<Instance>,
    /// Entries issued on each program stream before this replay.
    bases: Vec<u64>,
    progress: Vec<Arc<Progress>>,
    inputs: Vec<Arc<Buffer>>,
    outs: Vec<OutSlot>,
    /// Poisoned arena values of this replay (R3.12): per value, 0 or 1 + the index of its
    /// failure in `failures`. Written by the value's writer before its stream publishes the
    /// progress that orders every reader after it; 4 bytes per value, zeroed by the allocator.
    poison: Vec<AtomicU32>,
    /// Whether any `poison` cell is set: the replay loop skips reading them until one is.
    any_poison: AtomicBool,
    failures: Mutex<Vec<Error>>,
}

fn ready(b: &Buffer) -> std::result::Result<DataRef<'_>, Error> {
    match b.get() {
        Some(Ok(d)) => Ok(d.view()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(internal("a replay read a buffer before it was written")),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Frame {
    /// The arena bytes of value `v` (every value an instruction names was checked to have a
    /// view at instantiation).
    #[inline]
    fn slot_of(&self, v: ValueId) -> Slot {
        self.shared.slots[v]
    }

    /// The failure that poisoned arena value `v` in this replay, if any.
    fn poisoned(&self, v: ValueId) -> Option<Error> {
        match self.poison[v].load(Ordering::Acquire) {
            0 => None,
            i => lock(&self.failures).get(i as usize - 1).cloned(),
        }
    }

    fn set_poison(&self, v: ValueId, e: Error) {
        let mut failures = lock(&self.failures);
        failures.push(e);
        let i = u32::try_from(failures.len()).unwrap_or(u32::MAX);
        self.poison[v].store(i, Ordering::Release);
        self.any_poison.store(true, Ordering::Release);
    }

    /// Reads `loc`; `None` if it failed in this replay (R3.12), whose cause
    /// [`Frame::failure_of`] gives. Arena poison cells are read only once some value of this
    /// replay failed (`any_poison`): the common replay reads none.
    #[inline]
    fn operand(&self, loc: &Loc, any_poison: bool) -> Option<DataRef<'_>> {
        match loc {
            Loc::Arena(v) => {
                if any_poison && self.poison[*v].load(Ordering::Acquire) != 0 {
                    return None;
                }
                if let Some(i) = self.shared.input_of[*v] {
                    // The caller's input, read where it lies: tensors are immutable (R3.7)
                    // and this replay holds the buffer; its `copy_in` checked it is ready
                    // and of the captured shape, and every reader is ordered after that.
                    return ready(&self.inputs[i]).ok();
                }
                // SAFETY: the memory plan lets two values share bytes only if every use of
                // the first happens-before the write of the second (R4.9), and this entry is
                // ordered after the value's write by the graph's hb relation (checked at
                // capture, R4.8), which the workers enforce through the progress counters
                // (waits block until the bound record is published). So no write to these
                // bytes runs while we read them. `CpuExec::new` checked the view is in bounds.
                Some(unsafe { self.shared.arena.view(self.slot_of(*v)) })
            }
            Loc::Out(i) => ready(&self.outs[*i].buffer).ok(),
            Loc::Const(i) => ready(&self.shared.consts[*i]).ok(),
        }
    }

    /// Why [`Frame::operand`] gave `None` for `loc`.
    #[cold]
    fn failure_of(&self, loc: &Loc) -> Error {
        match loc {
            Loc::Arena(v) => self.poisoned(*v),
            Loc::Out(i) => ready(&self.outs[*i].buffer).err(),
            Loc::Const(i) => ready(&self.shared.consts[*i]).err(),
        }
        .unwrap_or_else(|| internal("an operand failed without a recorded cause"))
    }

    /// Marks the value written at `dst` as failed with `e`; only values that read it (directly
    /// or through other failed values) see the failure (R3.12).
    fn poison(&self, dst: &Loc, e: Error, ctx: &SegmentCtx<'_>) {
        match dst {
            Loc::Arena(v) => self.set_poison(*v, e),
            Loc::Out(i) => {
                if !self.outs[*i].buffer.fill(Err(e)) {
                    ctx.failures
                        .report(internal("a replay output buffer was written twice"));
                }
            }
            Loc::Const(_) => ctx.failures.report(internal("an op writes a constant")),
        }
    }

    /// Receives call input `input` as value `dst` (R5.2). Nothing is copied: readers of
    /// `dst` read the caller's buffer in place (`operand`), so this entry only checks that the
    /// input is ready and of the captured dtype and length, and poisons `dst` if it is not.
    fn copy_in(&self, input: usize, dst: ValueId, ctx: &SegmentCtx<'_>) {
        let want = self.slot_of(dst);
        match self.inputs[input].get() {
            Some(Ok(d)) if d.dtype() == want.dtype && d.len() == want.len => {}
            Some(Ok(_)) => {
                let e = internal("an input's shape changed since the capture");
                ctx.failures.report(e.clone());
                self.set_poison(dst, e);
            }
            // A failed input poisons what reads it, as in eager code (R3.12).
            Some(Err(e)) => {
                self.set_poison(dst, e.clone());
            }
            None => {
                let e = internal("an input was not ready");
                ctx.failures.report(e.clone());
                self.set_poison(dst, e);
            }
        }
    }

    fn run_op(&self, op: &Op, inputs: &[Loc], dst: &Loc, ctx: &SegmentCtx<'_>) {
        // Written before the progress publish that orders this entry after the failed
        // writer (or earlier on this stream), so a relaxed load sees it (as the poison cells).
        let any_poison = self.any_poison.load(Ordering::Relaxed);
        let mut views = [None; MAX_OPERANDS];
        for (slot, loc) in views.iter_mut().zip(inputs) {
            match self.operand(loc, any_poison) {
                Some(v) => *slot = Some(v),
                // A poisoned input poisons the output with the same cause, unreported: the
                // failure itself was reported once where it happened.
                None => return self.poison(dst, self.failure_of(loc), ctx),
            }
        }
        let Some(views) = OperandViews::new(views) else {
            return self.poison(dst, internal("an op with no operands"), ctx);
        };
        let views = views.as_slice();
        let threads = ctx.split.threads_for(op);
        let result = match dst {
            Loc::Arena(v) => {
                let slot = self.slot_of(*v);
                // SAFETY: as in `view`, the plan and the hb order give this entry exclusive
                // use of the value's bytes: every earlier value sharing them has had all its
                // uses complete, and later sharers are written only after this value's uses.
                // The bytes overlap none of this op's inputs (a reader never shares with the
                // value it reads: hb is strict), so no other view of them is alive.
                let out = unsafe { self.shared.arena.view_mut(slot) };
                execute::run_kernel(ctx.tag, op, views, out, threads)
            }
            Loc::Out(i) => {
                let out = &self.outs[*i];
                let storage = out.storage.lock().unwrap_or_else(|p| p.into_inner()).take();
                match storage.or_else(|| Data::try_zeroed(op.out_dtype, op.out_len())) {
                    Some(mut data) => {
                        let result = match data.view_mut() {
                            Some(o) => execute::run_kernel(ctx.tag, op, views, o, threads),
                            // Recycled storage is a replay's own output, never lent memory.
                            None => Err(internal("a replay output is lent memory")),
                        };
                        match result {
                            Ok(()) => {
                                if !out.buffer.fill(Ok(data)) {
                                    ctx.failures.report(internal(
                                        "a replay output buffer was written twice",
                                    ));
                                }
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    None => Err(out_of_memory(op, ctx.tag)),
                }
            }
            Loc::Const(_) => Err(internal("an op writes a constant")),
        };
        if let Err(e) = result {
            ctx.failures.report(e.clone());
            self.poison(dst, e, ctx);
        }
    }
}

impl SegmentJob for Frame {
    fn run_segment(&self, index: usize, ctx: &SegmentCtx<'_>) {
        let program = &self.shared.program;
        let base = self.bases[index];
        let stream = &program.streams[index];
        for (i, instr) in stream.instrs.iter().enumerate() {
            chaos::point(ctx.salt);
            // Timeline: one relaxed load when off.
            let started = spans::recording().then(Instant::now);
            match instr {
                Instr::Record { .. } => ctx.progress.publish(base + i as u64 + 1),
                Instr::Wait { stream, pos, .. } => {
                    wait_for(&self.progress[*stream], self.bases[*stream] + pos);
                }
                Instr::CopyIn { input, dst } => self.copy_in(*input, *dst, ctx),
                Instr::Op { op, inputs, dst } => self.run_op(op, inputs.as_slice(), dst, ctx),
            }
            if let Some(start) = started {
                let (kind, label) = instr.span();
                let waits_for = match instr {
                    Instr::Wait { stream: t, pos, .. } => {
                        Some((program.streams[*t].tag.clone(), self.bases[*t] + pos))
                    }
                    _ => None,
                };
                spans::push(RawSpan {
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
