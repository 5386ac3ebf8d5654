//! The one switch between capture and eager: every public entry point that issues or waits.
//!
//! Owns what a host thread is doing on behalf of `Compiled::run` (its *mode*), the decision each
//! public call makes from it (ops, `to_device`, `to_vec_f32`, `synchronize`, records, waits,
//! `record_tagged_stream`, scope entry and exit), the eager issue path (race check in `runtime`,
//! execution by a `backend`), and captured graphs bound to their backend (capture, replay).
//! It validates nothing itself (that is `ops::op`) and keeps no ordering state (that is
//! `runtime`).
//!
//! # Modes (one capture state machine)
//! A host thread is in one of three modes, kept in one thread-local:
//! 1. *plain*: ops issue eagerly;
//! 2. *capture*: ops, records, waits, scope entries and exits become graph entries of the
//!    [`Tracer`]; host reads fail with `HostSyncInCapture` (R4.3);
//! 3. *eager run* (`Mode::Eager`, fallback): ops issue eagerly, and scope entries/exits also
//!    issue the fork waits and join records of R4.4 (R3.11).
//!
//! A mode is entered by [`capture`] or [`run_eager`] and restored by a guard, also when the
//! closure panics (R4.12). Every access to the thread-local uses `try_with`, so a call from a
//! thread-local destructor finds the plain mode instead of aborting the process.
//!
//! # The `Tensor::add` path
//! `tensor` (method) → `ops::op` (validate) → `dispatch::op` → `runtime` (race check, tick) →
//! `backend::cpu` (enqueue) → worker → `backend::cpu::execute` → `kernels`.

mod route;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::cpu::{Cpu, cpu};
#[cfg(feature = "cuda")]
use crate::backend::cuda::{self, Cuda, cuda};
use crate::backend::{Backend, Inputs, Work};
use crate::device::{self, Device};
use crate::error::{Error, Result};
use crate::graph::assign::AutoConfig;
use crate::graph::program::MemoryStats;
use crate::graph::{Captured, Tracer};
use crate::ops::op::{Op, Shaped};
use crate::runtime::{MAIN, Position, StreamId, runtime};
use crate::scope::stack::{
    SavedScopes, current_stream_id, restore_scopes, set_aside_scopes, take_pending_error,
};
use crate::tensor::handle::{Kind, Tensor};
use crate::tensor::storage::{Buffer, Data};
use crate::trace::spans::Label;

use self::route::{enqueue_record, enqueue_wait, hop, host_wait_for};

/// The event closure of a compiled eager run (R3.11).
#[derive(Debug)]
struct EagerRun {
    /// The main stream's point at the start of the call: the fork (R4.4 a).
    fork: Arc<Position>,
    /// Join records in exit order (R4.4 c, d).
    joins: Vec<Arc<Position>>,
    /// A join record that could not be issued (only if a worker thread could not start).
    error: Option<Error>,
}

#[derive(Debug)]
enum ThreadMode {
    Capture(Box<Tracer>),
    EagerRun(EagerRun),
}

thread_local! {
    static MODE: RefCell<Option<ThreadMode>> = const { RefCell::new(None) };
}

/// Runs `f` on the tracer if this thread is capturing.
fn with_tracer<R>(f: impl FnOnce(&mut Tracer) -> R) -> Option<R> {
    MODE.try_with(|m| match &mut *m.borrow_mut() {
        Some(ThreadMode::Capture(t)) => Some(f(t)),
        _ => None,
    })
    .ok()
    .flatten()
}

/// The buffer and producer of an eager tensor, or `ForeignGraphValue` for a value of a graph
/// (R4.1) used by `op`.
fn eager_parts<'a>(
    op: &'static str,
    t: &'a Tensor,
) -> Result<(&'a Arc<Buffer>, Option<&'a Arc<Position>>)> {
    match t.kind() {
        Kind::Eager { buffer, producer } => Ok((buffer, producer.as_ref())),
        Kind::Graph {
            graph, op: made_by, ..
        } => Err(Error::foreign(op, *graph, made_by)),
    }
}

/// The device every operand is on (R10.1).
///
/// # Errors
/// [`Error::DeviceMismatch`] naming `op` and the first two devices that differ.
fn common_device(op: &str, inputs: &[&Tensor]) -> Result<Device> {
    let first = inputs.first().map_or(Device::Cpu, |t| t.device());
    for t in inputs {
        if t.device() != first {
            return Err(Error::DeviceMismatch {
                op: op.to_string(),
                lhs: first,
                rhs: t.device(),
            });
        }
    }
    Ok(first)
}

/// A validated op on `inputs`: recorded in the graph if this thread is capturing, else issued
/// eagerly on the current stream of the operands' device. A pending scope error of this thread
/// (R2.8) comes first, before any validation error.
pub(crate) fn op(validate: impl FnOnce() -> Result<Op>, inputs: &[&Tensor]) -> Result<Tensor> {
    take_pending_error()?;
    let op = validate()?;
    if with_tracer(|_| ()).is_some() {
        // In a capture, host-built constants go to the inputs' device (R10.7): only the
        // other operands must agree.
        let placed: Vec<&Tensor> = inputs
            .iter()
            .copied()
            .filter(|t| !(t.device().is_cpu() && matches!(t.kind(), Kind::Eager { .. })))
            .collect();
        common_device(op.name(), &placed)?;
        if let Some(traced) = with_tracer(|t| t.op(&op, inputs)) {
            return traced;
        }
    }
    let device = common_device(op.name(), inputs)?;
    match device {
        Device::Cpu => eager_op(cpu(), device, op, inputs),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => eager_op(cuda(n)?, device, op, inputs),
        #[cfg(not(feature = "cuda"))]
        other => Err(device::no_gpu(other, op.name())),
    }
}

/// The eager issue path of every backend: race check and tick in the runtime, enqueue in the
/// backend, both under the runtime's lock (R3.9: a refused call changes nothing).
fn eager_op<B: Backend>(backend: &B, device: Device, op: Op, inputs: &[&Tensor]) -> Result<Tensor> {
    let name = op.name();
    if backend.device() != device {
        return Err(device::no_gpu(device, name));
    }
    // Operands and producers on the stack: the eager issue path allocates only the output.
    let mut buffers = [None, None, None];
    let mut producers = [None, None, None];
    for ((b, p), t) in buffers.iter_mut().zip(&mut producers).zip(inputs) {
        let (buffer, producer) = eager_parts(name, t)?;
        *b = Some(buffer);
        *p = producer.map(|p| &**p);
    }
    let operands = match buffers {
        [Some(a), None, None] => Inputs::One([a.clone()]),
        [Some(a), Some(b), None] => Inputs::Two([a.clone(), b.clone()]),
        [Some(a), Some(b), Some(c)] => Inputs::Three([a.clone(), b.clone(), c.clone()]),
        _ => {
            return Err(Error::ExecutionFailed {
                op: name.to_string(),
                stream: "host".into(),
                message: format!("internal error: {} operands", inputs.len()),
            });
        }
    };
    let shape = op.out_shape.clone();
    let dtype = op.out_dtype;
    let output = backend.new_output();
    let out = output.clone();
    let position = runtime().issue_op(current_stream_id(), name, &producers, |at| {
        hop(at.stream, at.seq, at.seq, device);
        backend.enqueue(
            at,
            Work::Op {
                op,
                inputs: operands,
                output: out,
            },
        )
    })?;
    Ok(Tensor::from_buffer(shape, dtype, output, Some(position)))
}

/// A copy-free view of `t` under `shape` (same element count and order): a new handle on the
/// same buffer and producer, or on the same value of the graph being captured. Issues nothing,
/// so it is no entry of any stream (and not counted among a capture's ops in error messages).
///
/// # Errors
/// [`Error::ForeignGraphValue`] for a value of another capture (or of a finished one, R4.1).
fn view(name: &'static str, t: &Tensor, shape: Vec<usize>) -> Result<Tensor> {
    if let Kind::Graph { graph, op: by, .. } = t.kind()
        && with_tracer(|tr| tr.id() == *graph) != Some(true)
    {
        let e = Error::foreign(name, *graph, by);
        return Err(with_tracer(|tr| tr.fail(e.clone())).unwrap_or(e));
    }
    Ok(t.with_shape(shape))
}

/// A shape op on `t`: a view when validation found the layout allows one, else the copy op
/// issued like any other. A pending scope error (R2.8) comes first.
pub(crate) fn shaped(
    name: &'static str,
    validate: impl FnOnce() -> Result<Shaped>,
    t: &Tensor,
) -> Result<Tensor> {
    take_pending_error()?;
    match validate()? {
        Shaped::View(shape) => view(name, t, shape),
        Shaped::Copy(op) => self::op(|| Ok(op), &[t]),
    }
}

/// Checks, without issuing, that an op made of several entries (`cat`) may read `inputs` on
/// the current stream (devices R10.1, foreign values R4.1, races R3.5), so a refused call
/// issues nothing (R3.9). In a capture the tracer checks each entry and a problem fails the
/// whole capture anyway (R4.12), so there is nothing to check ahead.
///
/// # Errors
/// What the first entry reading the failing operand would have returned.
pub(crate) fn check_operands(name: &'static str, inputs: &[&Tensor]) -> Result<()> {
    take_pending_error()?;
    if with_tracer(|_| ()).is_some() {
        return Ok(());
    }
    common_device(name, inputs)?;
    let mut producers = Vec::with_capacity(inputs.len());
    for t in inputs {
        producers.push(eager_parts(name, t)?.1.map(|p| &**p));
    }
    runtime().check_readable(current_stream_id(), name, &producers)
}

/// See [`Tensor::to_vec_f32`].
pub(crate) fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    let buffer = wait_for_buffer("to_vec_f32", t)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(n) = buffer.device() {
        return cuda(n)?.to_vec_f32(buffer);
    }
    host_data("to_vec_f32", buffer).map(Data::to_f32_vec)
}

/// The host wait of every read (R3.3, R3.6): refused in a capture (R4.3), then blocks until
/// `t`'s producer ran and returns its buffer (on whichever device it is).
pub(crate) fn wait_for_buffer<'t>(name: &'static str, t: &'t Tensor) -> Result<&'t Arc<Buffer>> {
    take_pending_error()?;
    if let Kind::Graph { graph, op, .. } = t.kind() {
        refuse_in_capture(name, Some(op.to_string()))?;
        return Err(Error::foreign(name, *graph, op));
    }
    let (buffer, producer) = eager_parts(name, t)?;
    refuse_in_capture(
        name,
        Some(producer.map_or("host data".to_string(), |p| p.op.to_string())),
    )?;
    if let Some(p) = producer {
        host_wait_for(p);
        runtime().host_saw(p);
    }
    Ok(buffer)
}

/// The elements of a host buffer whose producer has run, or the producer's failure.
pub(crate) fn host_data<'b>(name: &'static str, buffer: &'b Buffer) -> Result<&'b Data> {
    match buffer.get() {
        Some(Ok(data)) => Ok(data),
        Some(Err(e)) => Err(e.clone()),
        None => Err(Error::ExecutionFailed {
            op: name.into(),
            stream: "host".into(),
            message: "the producer completed without writing its output".into(),
        }),
    }
}

/// See [`Tensor::to_device`]: the same tensor on its own device; any other device needs a
/// backend this build does not have (R10.9).
pub(crate) fn to_device(t: &Tensor, device: Device) -> Result<Tensor> {
    take_pending_error()?;
    if device == t.device() {
        return Ok(t.clone());
    }
    // R10.7: a capture runs on one device.
    if with_tracer(|_| ()).is_some() {
        return Err(Error::DeviceMismatch {
            op: "to_device (in a capture)".into(),
            lhs: t.device(),
            rhs: device,
        });
    }
    #[cfg(feature = "cuda")]
    {
        let (buffer, producer) = eager_parts("to_device", t)?;
        let (gpu, output) = match (t.device(), device) {
            (Device::Cpu, Device::Cuda(n)) => {
                let c = cuda(n)?;
                // The copy reads host memory when enqueued: its producer must have run.
                if let Some(p) = producer {
                    host_wait_for(p);
                }
                (c, c.new_output())
            }
            (Device::Cuda(n), Device::Cpu) => (cuda(n)?, Arc::new(Buffer::pending())),
            (from, to) => {
                return to_device(&to_device(t, Device::Cpu)?, to).map_err(|e| {
                    if matches!(e, Error::NoGpu { .. }) {
                        e
                    } else {
                        Error::DeviceMismatch {
                            op: "to_device".into(),
                            lhs: from,
                            rhs: to,
                        }
                    }
                });
            }
        };
        let input = buffer.clone();
        let out = output.clone();
        let gpu_device = gpu.device();
        let position = runtime().issue_op(
            current_stream_id(),
            "to_device",
            &[producer.map(|p| &**p)],
            |at| {
                hop(at.stream, at.seq, at.seq, gpu_device);
                gpu.enqueue(at, Work::Copy { input, output: out })
            },
        )?;
        Ok(Tensor::from_buffer(
            t.shape().to_vec(),
            t.dtype(),
            output,
            Some(position),
        ))
    }
    #[cfg(not(feature = "cuda"))]
    Err(device::no_gpu(device, "to_device"))
}

/// See [`crate::ops::tagged_event_record`].
pub(crate) fn record(event: u64, tag: &Arc<str>) -> Result<()> {
    take_pending_error()?;
    if with_tracer(|t| t.record(event, tag)).is_some() {
        return Ok(());
    }
    let label = Label::Tag(tag.clone());
    runtime().record(current_stream_id(), Some(event), |at| {
        enqueue_record(at, label)
    })?;
    Ok(())
}

/// See [`crate::ops::tagged_event_wait`].
pub(crate) fn wait(event: u64, tag: &Arc<str>) -> Result<()> {
    take_pending_error()?;
    if with_tracer(|t| t.wait(event, tag)).is_some() {
        return Ok(());
    }
    let label = Label::Tag(tag.clone());
    runtime().wait(current_stream_id(), event, |at, on| {
        enqueue_wait(at, on, label)
    })
}

/// See [`crate::ops::record_tagged_stream`]: a hint for the capture's memory plan (R4.10); a
/// no-op in eager code, where buffers live while anything uses them (R3.8).
pub(crate) fn record_stream(t: &Tensor, tag: &str) -> Result<()> {
    take_pending_error()?;
    with_tracer(|tr| tr.record_stream(t, tag)).unwrap_or(Ok(()))
}

/// Issues a wait on `stream` bound to the entry at `on` (closure events, named `label`).
fn wait_on(stream: StreamId, on: &Position, label: &'static str) -> Result<()> {
    runtime().wait_on(stream, on, |at, bound| {
        enqueue_wait(at, bound, Label::Static(label))
    })
}

/// R4.3: a host read (or a nested `run`) on a capturing thread fails the call and the capture.
///
/// # Errors
/// [`Error::HostSyncInCapture`] naming `call` (and, for `to_vec_f32`, the producing op).
pub(crate) fn refuse_in_capture(call: &'static str, producer: Option<String>) -> Result<()> {
    match with_tracer(|t| t.fail(Error::HostSyncInCapture { call, producer })) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An out-of-order guard drop (R2.8): a capture fails with it at the end even if the closure
/// swallows the pending error.
pub(crate) fn unbalanced(e: Error) {
    with_tracer(|t| t.fail(e));
}

/// Entering a side-stream scope: the fork wait of a compiled run (R4.4 b, R3.11).
///
/// # Errors
/// [`Error::WorkerSpawn`] from the eager fork wait.
pub(crate) fn scope_enter(stream: StreamId) -> Result<()> {
    let fork = MODE
        .try_with(|m| match &mut *m.borrow_mut() {
            Some(ThreadMode::Capture(t)) => {
                t.scope_enter(stream);
                None
            }
            Some(ThreadMode::EagerRun(run)) => Some(run.fork.clone()),
            None => None,
        })
        .ok()
        .flatten();
    match fork {
        Some(fork) => wait_on(stream, &fork, "fork"),
        None => Ok(()),
    }
}

/// Leaving a side-stream scope: the join record of a compiled run (R4.4 c, R3.11).
pub(crate) fn scope_exit(stream: StreamId) {
    let eager = MODE
        .try_with(|m| match &mut *m.borrow_mut() {
            Some(ThreadMode::Capture(t)) => {
                t.scope_exit(stream);
                false
            }
            Some(ThreadMode::EagerRun(_)) => true,
            None => false,
        })
        .unwrap_or(false);
    if eager {
        let join = runtime().record(stream, None, |at| enqueue_record(at, Label::Static("join")));
        let _ = MODE.try_with(|m| {
            if let Some(ThreadMode::EagerRun(run)) = &mut *m.borrow_mut() {
                match join {
                    Ok(p) => run.joins.push(p),
                    Err(e) => {
                        run.error.get_or_insert(e);
                    }
                }
            }
        });
    }
}

/// See [`crate::synchronize`].
pub(crate) fn synchronize() -> Result<()> {
    take_pending_error()?;
    refuse_in_capture("synchronize", None)?;
    let issued = runtime().issued();
    for &(stream, seq, _) in &issued {
        cpu().host_wait(stream, seq.min(route::cpu_last(stream)));
        #[cfg(feature = "cuda")]
        for c in cuda::created() {
            c.host_wait(stream, seq);
        }
    }
    runtime().host_saw_all(&issued);
    let failure = cpu().take_failure();
    #[cfg(feature = "cuda")]
    let failure = failure.or_else(|| cuda::created().find_map(|c| c.take_failure()));
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every stream's tag, entries issued and entries executed, main stream first.
pub(crate) fn stream_activity() -> Vec<(Arc<str>, u64, u64)> {
    runtime()
        .streams()
        .into_iter()
        .enumerate()
        .map(|(id, (tag, issued))| {
            let executed = cpu().executed(id);
            #[cfg(feature = "cuda")]
            let executed = cuda::created().fold(executed, |e, c| e.max(c.executed(id)));
            (tag, issued, executed)
        })
        .collect()
}

/// Puts a thread into a mode for the length of one compiled call and takes it out again, also
/// when the closure panics: the previous mode and the caller's scopes come back (R4.12, R5.1).
struct ModeGuard {
    previous: Option<Option<ThreadMode>>,
    scopes: Option<SavedScopes>,
}

impl ModeGuard {
    /// # Errors
    /// [`Error::ThreadExiting`] on a thread whose tagstream state is gone.
    fn enter(mode: ThreadMode) -> Result<ModeGuard> {
        let scopes = set_aside_scopes()?;
        match MODE.try_with(|m| m.borrow_mut().replace(mode)) {
            Ok(previous) => Ok(ModeGuard {
                previous: Some(previous),
                scopes: Some(scopes),
            }),
            Err(_) => {
                restore_scopes(scopes);
                Err(Error::ThreadExiting {
                    call: "Compiled::run",
                })
            }
        }
    }

    /// Leaves the mode: returns it and the tags of the scopes the closure left open.
    fn finish(mut self) -> (Option<ThreadMode>, Vec<String>) {
        let previous = self.previous.take().flatten();
        let mode = MODE
            .try_with(|m| std::mem::replace(&mut *m.borrow_mut(), previous))
            .ok()
            .flatten();
        let open = self.scopes.take().map(restore_scopes).unwrap_or_default();
        (mode, open)
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = MODE.try_with(|m| *m.borrow_mut() = previous);
        }
        if let Some(scopes) = self.scopes.take() {
            restore_scopes(scopes);
        }
    }
}

/// What a compiled call's closure produced, with the scope checks of the call's end: the
/// closure's own error first, then a pending out-of-order drop (R2.8), then scopes left open
/// (R4.11, also in eager runs by R3.11).
fn closure_result(
    returned: Result<Vec<Tensor>>,
    open: Vec<String>,
    pending: Result<()>,
) -> Result<Vec<Tensor>> {
    let outputs = returned?;
    pending?;
    if !open.is_empty() {
        return Err(Error::UnbalancedStreamSwitch {
            dropped: None,
            innermost: None,
            open,
        });
    }
    Ok(outputs)
}

/// A captured graph bound to the backend that replays it.
#[derive(Debug)]
pub(crate) struct CompiledGraph {
    captured: Captured,
    exec: Exec,
}

/// A program instantiated on the backend of its inputs' device.
#[derive(Debug)]
enum Exec {
    Cpu(<Cpu as Backend>::Exec),
    #[cfg(feature = "cuda")]
    Cuda(&'static Cuda, <Cuda as Backend>::Exec),
}

impl CompiledGraph {
    /// See `Compiled::graph_dump`.
    pub(crate) fn dump(&self) -> String {
        self.captured.dump()
    }

    /// See `Compiled::graph_dot`.
    pub(crate) fn dot(&self) -> String {
        self.captured.dot()
    }

    /// See `Compiled::graph_streams`.
    pub(crate) fn streams(&self) -> Vec<String> {
        self.captured.streams()
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.captured.memory_stats()
    }

    /// Records and waits in the graph, closure events included (R4.4 counts).
    #[cfg(test)]
    pub(crate) fn event_counts(&self) -> (usize, usize) {
        self.captured.event_counts()
    }

    /// Issues one replay (R5.2, R5.5, R5.7, R5.8) and returns the outputs, pending.
    ///
    /// # Errors
    /// [`Error::DataRace`] if an input is not ordered before the main stream;
    /// [`Error::ForeignGraphValue`] for a graph value passed as an input;
    /// [`Error::WorkerSpawn`]. Nothing is issued then.
    pub(crate) fn replay(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        match &mut self.exec {
            Exec::Cpu(exec) => replay_on(cpu(), &self.captured, exec, inputs),
            #[cfg(feature = "cuda")]
            Exec::Cuda(c, exec) => replay_on(*c, &self.captured, exec, inputs),
        }
    }
}

/// One replay of `captured` on `backend`: the runtime fixes each stream's base and clocks at
/// one point of the issue order while the backend enqueues the work (R5.8).
fn replay_on<B: Backend>(
    backend: &B,
    captured: &Captured,
    exec: &mut B::Exec,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>> {
    let mut buffers = Vec::with_capacity(inputs.len());
    let mut producers = Vec::with_capacity(inputs.len());
    for t in inputs {
        let (buffer, producer) = eager_parts("Compiled::run (input)", t)?;
        buffers.push(buffer.clone());
        producers.push(producer);
    }
    let program = captured.program();
    let replay = backend.prepare(exec, buffers);
    let outs: Vec<Arc<Buffer>> = B::outputs(&replay).to_vec();
    let device = backend.device();
    let positions = program.issue_batch(&producers, |batch| {
        runtime().issue_batch(batch, |at| {
            for (i, s) in at.iter().zip(&program.streams) {
                hop(i.stream, i.seq + 1, i.seq + s.instrs.len() as u64, device);
            }
            backend.enqueue_replay(replay, at)
        })
    })?;
    Ok(program.outputs(inputs, &outs, &positions))
}

/// Traces `f` once on graph-valued inputs (R4.1), checks and plans the graph, and instantiates
/// it on the inputs' backend.
///
/// # Errors
/// The first problem of the capture in issue order (R4.6, R4.8, R4.3, R2.8), the closure's
/// own error, open scopes at the end (R4.11), a cycle (R4.7), inputs on two devices (R10.7) or
/// a device with no backend. Nothing is cached then.
pub(crate) fn capture(
    f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    inputs: &[Tensor],
    auto: Option<AutoConfig>,
) -> Result<CompiledGraph> {
    static NEXT_GRAPH: AtomicU64 = AtomicU64::new(1);
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let device = common_device("Compiled::run (inputs)", &refs)?;
    match device {
        Device::Cpu => {}
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => {
            cuda(n)?;
        }
        #[cfg(not(feature = "cuda"))]
        other => return Err(device::no_gpu(other, "Compiled::run")),
    }
    let id = NEXT_GRAPH.fetch_add(1, Ordering::Relaxed);
    let (tracer, graph_inputs) = Tracer::new(id, inputs);
    let guard = ModeGuard::enter(ThreadMode::Capture(Box::new(tracer)))?;
    let returned = f(&graph_inputs);
    let (mode, open) = guard.finish();
    let pending = take_pending_error();
    let Some(ThreadMode::Capture(tracer)) = mode else {
        return Err(Error::ExecutionFailed {
            op: "capture".into(),
            stream: "host".into(),
            message: "internal error: the capture mode was replaced during the call".into(),
        });
    };
    let graph = tracer.finish(closure_result(returned, open, pending))?;
    let captured = Captured::new(graph, auto)?;
    let exec = match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => {
            let c = cuda(n)?;
            Exec::Cuda(c, c.instantiate(captured.program().clone())?)
        }
        _ => Exec::Cpu(cpu().instantiate(captured.program().clone())?),
    };
    Ok(CompiledGraph { captured, exec })
}

/// Calls `f` eagerly with the event closure issued as real entries (R3.11): inputs are
/// checked against the main stream (R5.2), each side-stream scope waits on the fork (the main
/// stream's point at the start of the call) and records a join, and the main stream waits on
/// every join before the outputs are returned.
///
/// # Errors
/// As [`capture`], except that waits bind as in plain eager code (no `WaitWithoutRecord`).
pub(crate) fn run_eager(
    f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>> {
    let producers = inputs
        .iter()
        .map(|t| eager_parts("Compiled::run (input)", t).map(|(_, p)| p))
        .collect::<Result<Vec<_>>>()?;
    runtime().check_inputs(&producers)?;
    let guard = ModeGuard::enter(ThreadMode::EagerRun(EagerRun {
        fork: runtime().main_point(),
        joins: Vec::new(),
        error: None,
    }))?;
    let returned = f(inputs);
    let (mode, open) = guard.finish();
    let pending = take_pending_error();
    let Some(ThreadMode::EagerRun(run)) = mode else {
        return Err(Error::ExecutionFailed {
            op: "Compiled::run".into(),
            stream: "host".into(),
            message: "internal error: the eager-run mode was replaced during the call".into(),
        });
    };
    let outputs = closure_result(returned, open, pending)?;
    if let Some(e) = run.error {
        return Err(e);
    }
    for join in &run.joins {
        wait_on(MAIN, join, "join")?;
    }
    for t in &outputs {
        eager_parts("Compiled::run (returned output)", t)?;
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
    use crate::scope::stream_switch;
    use crate::tensor::DType;

    fn inputs() -> Vec<Tensor> {
        (0..2)
            .map(|i| Tensor::randn(&[8, 8], DType::F32, i).unwrap())
            .collect()
    }

    /// R4.4 counts: with n ≥ 1 side-stream scope instances the graph has
    /// `user records + 1 + n` records and `user waits + 2n` waits (SC4: 5 and 6).
    #[test]
    fn closure_counts_follow_r4_4_sc4() {
        let e66 = create_tagged_event("graph-unit-66").unwrap();
        let e77 = create_tagged_event("graph-unit-77").unwrap();
        let mut f = move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].add(&x[1])?;
            tagged_event_record(&e66)?;
            tagged_event_record(&e77)?;
            let _s1 = stream_switch("graph-unit-1")?;
            tagged_event_wait(&e66)?;
            let m1 = x[0].matmul(&x[1])?;
            let _s2 = stream_switch("graph-unit-2")?;
            tagged_event_wait(&e77)?;
            let m2 = x[1].matmul(&x[0])?;
            Ok(vec![a, m1, m2])
        };
        let g = capture(&mut f, &inputs(), None).unwrap();
        assert_eq!(g.event_counts(), (2 + 1 + 2, 2 + 2 * 2));
    }

    /// R4.4 e: no side-stream scope, no closure entries at all (and a "default" scope is not a
    /// side-stream scope).
    #[test]
    fn no_side_scope_no_closure_entries_r4_4_e() {
        let mut f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let _d = stream_switch("default")?;
            Ok(vec![x[0].exp()?])
        };
        let g = capture(&mut f, &inputs(), None).unwrap();
        assert_eq!(g.event_counts(), (0, 0));
        assert_eq!(g.dump(), "\"default\": copy_in(0), copy_in(1), exp");
    }

    /// R4.12: a failed capture leaves the thread's mode and scopes as they were.
    #[test]
    fn failed_capture_restores_the_thread_r4_12() {
        let outer = stream_switch("graph-unit-outer").unwrap();
        let mut f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let _s = stream_switch("graph-unit-inner")?;
            x[0].to_vec_f32()?;
            Ok(vec![])
        };
        let err = capture(&mut f, &inputs(), None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::HostSyncInCapture {
                    call: "to_vec_f32",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(crate::scope::current_stream(), "graph-unit-outer");
        assert!(MODE.with_borrow(Option::is_none));
        drop(outer);
    }

    /// The fork is inserted when the first side scope is entered (R4.4 a): work issued on main
    /// after it is not ordered before later side scopes (found by tests/differential.rs).
    #[test]
    fn main_work_after_the_fork_is_not_visible_to_side_scopes_r4_4() {
        let mut f = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            drop(stream_switch("graph-unit-fork")?);
            let a = x[0].add(&x[0])?;
            let _s = stream_switch("graph-unit-fork")?;
            Ok(vec![a.add(&x[0])?])
        };
        let err = capture(&mut f, &inputs(), None).unwrap_err();
        assert_eq!(
            err,
            Error::DataRace {
                reader: "add (op 2 of the closure)".into(),
                reader_stream: "graph-unit-fork".into(),
                producer: "add (op 1 of the closure)".into(),
                producer_stream: "default".into(),
            }
        );
    }

    /// Positions in errors are positions of the graph as traced: without a side scope there
    /// is no fork, so a wait after the copy-ins is at position n + 1 (R4.4 e, R4.6).
    #[test]
    fn wait_without_record_positions_without_side_scopes_r4_6() {
        let e = create_tagged_event("graph-unit-wwr").unwrap();
        let mut f = move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            tagged_event_wait(&e)?;
            let y = x[0].exp()?;
            tagged_event_record(&e)?;
            Ok(vec![y])
        };
        let err = capture(&mut f, &inputs(), None).unwrap_err();
        assert!(
            matches!(&err, Error::WaitWithoutRecord { position: 3, later_record: Some((s, 5)), .. }
                if s == "default"),
            "{err:?}"
        );
    }
}
