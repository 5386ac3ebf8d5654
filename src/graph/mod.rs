//! Multi-stream graphs: capture, checks, memory planning and replay (semantics §4–5).
//!
//! Owns what a thread is doing on behalf of `Compiled::run` (its *mode*: capturing a graph, or
//! running a compiled closure eagerly with the event closure), the hooks through which tensor
//! ops, events and scopes reach that mode, and the pipeline
//!
//! ```text
//! trace (IR + event closure + race check) ─▶ check::acyclic ─▶ memory::plan_memory ─▶ plan::Plan
//! ```
//!
//! It decides nothing about which path a call takes (that is `compile`) and never touches
//! kernels or stream workers directly: replays go through `runtime::Runtime::issue_batch`.
//!
//! # Modes (one capture state machine, style §8)
//! A host thread is in one of three modes, kept in one thread-local:
//! 1. *plain*: ops issue eagerly; no hook does anything;
//! 2. *capture*: ops, records, waits, scope entries and exits become graph entries, host reads
//!    fail with `HostSyncInCapture` (R4.3);
//! 3. *eager run* (`Mode::Eager`, fallback): ops issue eagerly, and scope entries/exits also
//!    issue the fork waits and join records of R4.4 (R3.11).
//!
//! A mode is entered by [`capture`] or [`run_eager`] and restored by a guard, also when the
//! closure panics (R4.12).

pub(crate) mod arena;
mod check;
mod dump;
pub(crate) mod ir;
pub(crate) mod memory;
mod plan;
mod trace;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use self::ir::Graph;
use self::plan::{Plan, Replayer};
use self::trace::Tracer;
use crate::compile::MemoryStats;
use crate::error::{Error, Result};
use crate::ops::op::Op;
use crate::runtime::{MAIN, Position, StreamId, runtime};
use crate::scope::{SavedScopes, restore_scopes, set_aside_scopes, take_pending_error};
use crate::tensor::{Kind, Tensor};

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

/// Hook for tensor ops: `Some` (the traced result) if this thread is capturing.
pub(crate) fn trace_op(op: &Op, inputs: &[&Tensor]) -> Option<Result<Tensor>> {
    with_tracer(|t| t.op(op, inputs))
}

/// Hook for `tagged_event_record`.
pub(crate) fn trace_record(event: u64, tag: &str) -> Option<Result<()>> {
    with_tracer(|t| t.record(event, tag)).map(Ok)
}

/// Hook for `tagged_event_wait`.
pub(crate) fn trace_wait(event: u64, tag: &str) -> Option<Result<()>> {
    with_tracer(|t| t.wait(event, tag)).map(Ok)
}

/// Hook for `record_tagged_stream`.
pub(crate) fn trace_record_stream(tensor: &Tensor, tag: &str) -> Option<Result<()>> {
    with_tracer(|t| t.record_stream(tensor, tag))
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

/// Hook for an out-of-order guard drop (R2.8): the capture fails with it at the end even if
/// the closure swallows the pending error.
pub(crate) fn on_unbalanced(e: Error) {
    with_tracer(|t| t.fail(e));
}

/// Hook for entering a side-stream scope: the fork wait (R4.4 b, R3.11).
///
/// # Errors
/// [`Error::WorkerSpawn`] from the eager fork wait.
pub(crate) fn on_scope_enter(stream: StreamId) -> Result<()> {
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
        Some(fork) => runtime().wait_on(stream, &fork, "fork"),
        None => Ok(()),
    }
}

/// Hook for leaving a side-stream scope: the join record (R4.4 c, R3.11).
pub(crate) fn on_scope_exit(stream: StreamId) {
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
        let join = runtime().record_internal(stream);
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

/// Puts a thread into a mode for the length of one compiled call and takes it out again, also
/// when the closure panics: the previous mode and the caller's scopes come back (R4.12, R5.1).
struct ModeGuard {
    previous: Option<Option<ThreadMode>>,
    scopes: Option<SavedScopes>,
}

impl ModeGuard {
    fn enter(mode: ThreadMode) -> ModeGuard {
        let scopes = set_aside_scopes();
        let previous = MODE.with_borrow_mut(|m| m.replace(mode));
        ModeGuard {
            previous: Some(previous),
            scopes: Some(scopes),
        }
    }

    /// Leaves the mode: returns it and the tags of the scopes the closure left open.
    fn finish(mut self) -> (Option<ThreadMode>, Vec<String>) {
        let previous = self.previous.take().flatten();
        let mode = MODE.with_borrow_mut(|m| std::mem::replace(m, previous));
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

/// A captured graph with its replay plan.
#[derive(Debug)]
pub(crate) struct Captured {
    graph: Graph,
    replayer: Replayer,
}

impl Captured {
    /// See `Compiled::graph_dump`.
    pub(crate) fn dump(&self) -> String {
        dump::text(&self.graph)
    }

    /// See `Compiled::graph_dot`.
    pub(crate) fn dot(&self) -> String {
        dump::dot(&self.graph)
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.replayer.memory_stats()
    }

    /// Records and waits in the graph, closure events included (R4.4 counts).
    #[cfg(test)]
    pub(crate) fn event_counts(&self) -> (usize, usize) {
        self.graph.event_counts()
    }

    /// Issues one replay; see `plan::Replayer::replay`.
    pub(crate) fn replay(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.replayer.replay(inputs)
    }
}

/// Traces `f` once on graph-valued inputs (R4.1), checks and plans the graph.
///
/// # Errors
/// The first problem of the capture in issue order (R4.6, R4.8, R4.3, R2.8), the closure's
/// own error, open scopes at the end (R4.11), or a cycle (R4.7). Nothing is cached then.
pub(crate) fn capture(
    f: &mut dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    inputs: &[Tensor],
) -> Result<Captured> {
    static NEXT_GRAPH: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_GRAPH.fetch_add(1, Ordering::Relaxed);
    let (tracer, graph_inputs) = Tracer::new(id, inputs);
    let guard = ModeGuard::enter(ThreadMode::Capture(Box::new(tracer)));
    let returned = f(&graph_inputs);
    let (mode, open) = guard.finish();
    let pending = take_pending_error();
    let Some(ThreadMode::Capture(tracer)) = mode else {
        unreachable!("the capture mode is only replaced by the guard that set it");
    };
    let graph = tracer.finish(closure_result(returned, open, pending))?;
    check::acyclic(&graph)?;
    let plan = Plan::build(&graph)?;
    Ok(Captured {
        graph,
        replayer: Replayer::new(plan),
    })
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
    let mut producers = Vec::with_capacity(inputs.len());
    for t in inputs {
        match t.kind() {
            Kind::Eager { producer, .. } => producers.push(producer.as_ref()),
            Kind::Graph { graph, op, .. } => {
                return Err(Error::ForeignGraphValue {
                    op: "Compiled::run (input)",
                    graph: format!("#{graph} (produced by {op})"),
                });
            }
        }
    }
    runtime().check_inputs(&producers)?;
    let guard = ModeGuard::enter(ThreadMode::EagerRun(EagerRun {
        fork: runtime().main_point(),
        joins: Vec::new(),
        error: None,
    }));
    let returned = f(inputs);
    let (mode, open) = guard.finish();
    let pending = take_pending_error();
    let Some(ThreadMode::EagerRun(run)) = mode else {
        unreachable!("the eager-run mode is only replaced by the guard that set it");
    };
    let outputs = closure_result(returned, open, pending)?;
    if let Some(e) = run.error {
        return Err(e);
    }
    for join in &run.joins {
        runtime().wait_on(MAIN, join, "join")?;
    }
    for t in &outputs {
        if let Kind::Graph { graph, op, .. } = t.kind() {
            return Err(Error::ForeignGraphValue {
                op: "Compiled::run (returned output)",
                graph: format!("#{graph} (produced by {op})"),
            });
        }
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
        let g = capture(&mut f, &inputs()).unwrap();
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
        let g = capture(&mut f, &inputs()).unwrap();
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
        let err = capture(&mut f, &inputs()).unwrap_err();
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
        let err = capture(&mut f, &inputs()).unwrap_err();
        assert_eq!(
            err,
            Error::DataRace {
                reader: "add at position 4 of \"graph-unit-fork\"".into(),
                reader_stream: "graph-unit-fork".into(),
                producer: "add at position 4 of \"default\"".into(),
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
        let err = capture(&mut f, &inputs()).unwrap_err();
        assert!(
            matches!(&err, Error::WaitWithoutRecord { position: 3, later_record: Some((s, 5)), .. }
                if s == "default"),
            "{err:?}"
        );
    }
}
