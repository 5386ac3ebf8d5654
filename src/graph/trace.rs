//! [`Tracer`]: builds a [`Graph`] while the user's closure runs with graph-valued tensors.
//!
//! Owns the per-capture state: graph streams and their current clocks, values, constants, the
//! latest record of each user event, the event closure (fork at graph start, a fork wait at
//! each side-scope entry, a join record at each exit, the join waits at the end; R4.4), and
//! the first problem found (R4.12). It never executes anything and never touches the eager
//! runtime's clocks; it only asks the runtime whether an eager tensor is visible (R4.8).
//!
//! # The race check during tracing
//! *Why*: a cross-stream read without ordering must fail the capture (R4.8) with the same
//! error eager code gets (R3.5).
//! *Strategy*: the tracer keeps one graph-local vector clock per graph stream, exactly as the
//! runtime does for real streams: issuing on `s` ticks `clock[s]`, a bound wait joins the
//! record's clock. A read of value `v` written at `(t, k)` from stream `s` is accepted iff
//! `clock[s][t] ≥ k`, one comparison against the stream's current (dense) clock. Every
//! entry's clock is kept for later passes (planner, checks, R5.8 positions), by change points
//! ([`StreamClocks`]): only a wait changes a component other than the entry's own, so an op
//! costs O(1) whatever the number of streams, and a wait O(components of the record's clock).
//! *Invariant*: every wait is bound to an earlier record in issue order, so every hb edge
//! points forward and the clocks are exact (R4.7).
//!
//! # Naming in errors
//! Errors name what the user wrote (R7.2, as eager errors do): the op, its stream, and which
//! op of the closure it was, counting the ops the closure issued from 1 (`add (op 2 of the
//! closure)`); a copy-in is `input i of the call`. Each op makes exactly one value, after the
//! copy-ins, so the count is the value's index less the inputs: nothing extra is stored.

use std::collections::HashMap;
use std::sync::Arc;

use super::ir::{
    EntryKind, EntryRef, EventName, Graph, GraphStream, Operand, Output, StreamClocks, Value,
};
use super::memory::{too_large, total_bytes};
use crate::error::{Error, Result};
use crate::ops::op::Op;
use crate::runtime::{MAIN, MAIN_TAG, StreamId, runtime};
use crate::scope::stack::current_stream_id;
use crate::tensor::handle::{Kind, Tensor};

/// A wait that found no earlier record of its event (R4.6).
#[derive(Debug)]
struct Unbound {
    issued: u64,
    event: u64,
    tag: Arc<str>,
    at: EntryRef,
}

/// The state of one capture.
#[derive(Debug)]
pub(crate) struct Tracer {
    id: u64,
    streams: Vec<GraphStream>,
    clocks: Vec<StreamClocks>,
    /// Dense clock of each graph stream's latest entry (the race check's one comparison).
    current: Vec<Vec<u64>>,
    values: Vec<Value>,
    consts: Vec<Tensor>,
    n_inputs: usize,
    /// The fork record, inserted at graph start when the first side-stream scope is entered.
    fork: Option<EntryRef>,
    joins: Vec<EntryRef>,
    latest: HashMap<u64, EntryRef>,
    /// Every user record: (event, issue index, entry), in issue order.
    records: Vec<(u64, u64, EntryRef)>,
    issued: u64,
    problem: Option<(u64, Error)>,
    unbound: Option<Unbound>,
    /// `record_tagged_stream` requests: (value, stream tag), resolved at the end (R4.10).
    extends: Vec<(usize, String)>,
    /// The graph stream of every entry in issue order (`assign` replays the capture in it).
    order: Vec<u32>,
    /// R4.10 ends of a rebuild: (value, graph stream), applied when it finishes.
    ends: Vec<(usize, usize)>,
}

fn at(clock: &[u64], s: usize) -> u64 {
    clock.get(s).copied().unwrap_or(0)
}

impl Tracer {
    /// The capture's graph id (what its values' tensors carry).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// A tracer of graph `id` on `streams` (no entries yet) with nothing issued: what a capture
    /// and a rebuild start from.
    fn empty(id: u64, streams: Vec<GraphStream>, consts: Vec<Tensor>, n_inputs: usize) -> Tracer {
        let n = streams.len();
        Tracer {
            id,
            streams,
            clocks: (0..n).map(StreamClocks::new).collect(),
            current: vec![Vec::new(); n],
            values: Vec::new(),
            consts,
            n_inputs,
            fork: None,
            joins: Vec::new(),
            latest: HashMap::new(),
            records: Vec::new(),
            issued: 0,
            problem: None,
            unbound: None,
            extends: Vec::new(),
            order: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Starts a capture of graph `id` with the copy-ins of the inputs on the main stream.
    /// Returns the graph-valued tensors to hand to the closure.
    pub(crate) fn new(id: u64, inputs: &[Tensor]) -> (Tracer, Vec<Tensor>) {
        let main = GraphStream {
            id: MAIN,
            tag: MAIN_TAG.to_string(),
            entries: Vec::new(),
        };
        let mut t = Tracer::empty(id, vec![main], Vec::new(), inputs.len());
        let mut graph_inputs = Vec::with_capacity(inputs.len());
        for (i, x) in inputs.iter().enumerate() {
            let value = t.values.len();
            let write = t.issue(0, EntryKind::CopyIn { input: i, value });
            t.values.push(Value {
                shape: x.shape().to_vec(),
                dtype: x.dtype(),
                write,
                uses: Vec::new(),
            });
            graph_inputs.push(Tensor::graph_value(
                x.shape().to_vec(),
                x.dtype(),
                x.device(),
                id,
                value,
                "copy_in",
            ));
        }
        (t, graph_inputs)
    }

    fn issue(&mut self, gs: usize, kind: EntryKind) -> EntryRef {
        let pos = self.clocks[gs].push();
        let clock = &mut self.current[gs];
        if clock.len() <= gs {
            clock.resize(gs + 1, 0);
        }
        clock[gs] = pos;
        self.streams[gs].entries.push(kind);
        self.order.push(gs as u32);
        self.issued += 1;
        EntryRef { stream: gs, pos }
    }

    /// Joins record `r`'s clock into graph stream `gs`'s, for the wait about to be issued on
    /// `gs`: the components that grow become change points at the wait's position.
    fn join_record(&mut self, gs: usize, r: EntryRef) {
        let wait_pos = self.clocks[gs].len() + 1;
        let record: Vec<(usize, u64)> = self.clocks[r.stream].sparse(r.pos).collect();
        let clock = &mut self.current[gs];
        for (t, v) in record {
            if clock.len() <= t {
                clock.resize(t + 1, 0);
            }
            // A stream's own component is its position: a forward edge never raises it.
            if t != gs && v > clock[t] {
                clock[t] = v;
                self.clocks[gs].raise(wait_pos, t, v);
            }
        }
    }

    fn graph_stream(&mut self, id: StreamId) -> usize {
        if let Some(gs) = self.streams.iter().position(|s| s.id == id) {
            return gs;
        }
        self.streams.push(GraphStream {
            id,
            tag: runtime().stream_tag(id),
            entries: Vec::new(),
        });
        self.clocks.push(StreamClocks::new(self.streams.len() - 1));
        self.current.push(Vec::new());
        self.streams.len() - 1
    }

    /// Remembers the first problem of the capture: even if the closure swallows the error, the
    /// capture fails with it (a graph whose meaning depended on it must not be cached).
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        if self.problem.is_none() {
            self.problem = Some((self.issued, e.clone()));
        }
        e
    }

    /// The op the closure is issuing now, as the user wrote it: `add (op 3 of the closure)`.
    fn describe_next(&self, name: &str) -> String {
        let n = self.values.len() - self.n_inputs + 1;
        format!("{name} (op {n} of the closure)")
    }

    /// What wrote `value`, as the user wrote it: an earlier op of the closure or an input.
    fn describe_value(&self, value: usize) -> String {
        if value < self.n_inputs {
            return format!("input {value} of the call");
        }
        let w = self.values[value].write;
        let name = self.streams[w.stream].entries[(w.pos - 1) as usize].name();
        format!("{name} (op {} of the closure)", value - self.n_inputs + 1)
    }

    /// Records `op` reading `inputs` on the current stream (R4.1, R4.8).
    pub(crate) fn op(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor> {
        let sid = current_stream_id();
        let gs = self.graph_stream(sid);
        let mut operands = Vec::with_capacity(inputs.len());
        for t in inputs {
            let operand = match t.kind() {
                Kind::Graph { graph, value, .. } if *graph == self.id => {
                    self.check_read(gs, *value, op.name())?;
                    Operand::Value(*value)
                }
                Kind::Graph { graph, op: by, .. } => {
                    return Err(self.fail(Error::foreign(op.name(), *graph, by)));
                }
                Kind::Eager { producer, .. } => {
                    if let Some(p) = producer
                        && !runtime().visible_from(p, sid)
                    {
                        let e = Error::DataRace {
                            reader: self.describe_next(op.name()),
                            reader_stream: self.streams[gs].tag.clone(),
                            producer: format!("{} (outside the graph)", p.op),
                            producer_stream: runtime().stream_tag(p.stream),
                        };
                        return Err(self.fail(e));
                    }
                    Operand::Const(self.constant(t))
                }
            };
            operands.push(operand);
        }
        let output = self.push_op(gs, op, operands);
        // A capture runs on its inputs' device (R10.7); `dispatch` checked the operands.
        let device = inputs
            .iter()
            .map(|t| t.device())
            .find(|d| !d.is_cpu())
            .unwrap_or_default();
        Ok(Tensor::graph_value(
            op.out_shape.clone(),
            op.out_dtype,
            device,
            self.id,
            output,
            op.name(),
        ))
    }

    /// The race check of every graph read (R4.8, R3.5): value `value` must happen-before graph
    /// stream `gs`'s current point. Hand-written and re-assigned (`assign`) graphs both read
    /// through here.
    fn check_read(&mut self, gs: usize, value: usize, reader: &str) -> Result<()> {
        let w = self.values[value].write;
        if at(&self.current[gs], w.stream) < w.pos {
            let e = Error::DataRace {
                reader: self.describe_next(reader),
                reader_stream: self.streams[gs].tag.clone(),
                producer: self.describe_value(value),
                producer_stream: self.streams[w.stream].tag.clone(),
            };
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Issues `op` on graph stream `gs` with checked operands; returns its value.
    fn push_op(&mut self, gs: usize, op: &Op, operands: Vec<Operand>) -> usize {
        let output = self.values.len();
        let write = EntryRef {
            stream: gs,
            pos: self.clocks[gs].len() + 1,
        };
        for o in &operands {
            if let Operand::Value(v) = *o {
                self.values[v].add_use(write);
            }
        }
        let issued = self.issue(
            gs,
            EntryKind::Op {
                op: op.clone(),
                inputs: operands,
                output,
            },
        );
        debug_assert_eq!(issued, write);
        self.values.push(Value {
            shape: op.out_shape.clone(),
            dtype: op.out_dtype,
            write,
            uses: Vec::new(),
        });
        output
    }

    fn constant(&mut self, t: &Tensor) -> usize {
        match self.consts.iter().position(|c| c.same(t)) {
            Some(i) => i,
            None => {
                self.consts.push(t.clone());
                self.consts.len() - 1
            }
        }
    }

    /// A user record on the current stream (R4.5).
    pub(crate) fn record(&mut self, event: u64, tag: &str) {
        let gs = self.graph_stream(current_stream_id());
        let issued = self.issued;
        let r = self.issue(
            gs,
            EntryKind::Record {
                event: EventName::User {
                    id: event,
                    tag: tag.into(),
                },
            },
        );
        self.latest.insert(event, r);
        self.records.push((event, issued, r));
    }

    /// A user wait on the current stream, bound to the latest earlier record in the graph
    /// (R4.5); without one the capture will fail with `WaitWithoutRecord` (R4.6).
    pub(crate) fn wait(&mut self, event: u64, tag: &str) {
        let gs = self.graph_stream(current_stream_id());
        let bound = self.latest.get(&event).copied();
        if let Some(r) = bound {
            self.join_record(gs, r);
        }
        let issued = self.issued;
        let w = self.issue(
            gs,
            EntryKind::Wait {
                event: EventName::User {
                    id: event,
                    tag: tag.into(),
                },
                bound,
            },
        );
        if bound.is_none() && self.unbound.is_none() {
            self.unbound = Some(Unbound {
                issued,
                event,
                tag: tag.into(),
                at: w,
            });
        }
    }

    /// `record_tagged_stream(t, tag)` in a capture (R4.10).
    pub(crate) fn record_stream(&mut self, t: &Tensor, tag: &str) -> Result<()> {
        match t.kind() {
            Kind::Graph { graph, value, .. } if *graph == self.id => {
                self.extends.push((*value, tag.to_string()));
                Ok(())
            }
            Kind::Graph { graph, op, .. } => {
                Err(self.fail(Error::foreign("record_tagged_stream", *graph, op)))
            }
            // Memory made outside the graph is not planned: nothing to extend.
            Kind::Eager { .. } => Ok(()),
        }
    }

    /// Entry into a side-stream scope: its first entry waits on the fork (R4.4 b).
    pub(crate) fn scope_enter(&mut self, stream: StreamId) {
        let fork = match self.fork {
            Some(f) => f,
            None => self.insert_fork(),
        };
        let gs = self.graph_stream(stream);
        self.join_record(gs, fork);
        self.issue(
            gs,
            EntryKind::Wait {
                event: EventName::Fork,
                bound: Some(fork),
            },
        );
    }

    /// Inserts the fork record right after the copy-ins (R4.4 a), when the first side-stream
    /// scope is entered. Until then the graph has only the main stream, so only main positions
    /// after the copy-ins (and clock components that saw them) move up by one; every position
    /// an error reports is therefore a position of the final graph, and a graph without side
    /// scopes never has a fork (R4.4 e).
    fn insert_fork(&mut self) -> EntryRef {
        debug_assert_eq!(
            self.streams.len(),
            1,
            "side streams appear only inside side scopes"
        );
        let n = self.n_inputs as u64;
        let at = EntryRef {
            stream: 0,
            pos: n + 1,
        };
        // Main's own component is the position, which moves with the insertion; no other
        // stream exists yet, so no other clock counted main's entries.
        self.clocks[0].insert_at(n + 1);
        // Main's latest entry is now the fork or an entry after it: either way one more.
        match self.current[0].first_mut() {
            Some(m) => *m += 1,
            None => self.current[0].push(1),
        }
        let shift = |r: &mut EntryRef| {
            if r.stream == 0 && r.pos > n {
                r.pos += 1;
            }
        };
        for v in &mut self.values {
            shift(&mut v.write);
            v.uses.iter_mut().for_each(shift);
        }
        for e in &mut self.streams[0].entries {
            if let EntryKind::Wait { bound: Some(b), .. } = e {
                shift(b);
            }
        }
        self.latest.values_mut().for_each(shift);
        self.records.iter_mut().for_each(|(_, _, r)| shift(r));
        if let Some(u) = &mut self.unbound {
            shift(&mut u.at);
        }
        // The fork sees exactly the copy-ins (main has no change points before it).
        self.streams[0].entries.insert(
            n as usize,
            EntryKind::Record {
                event: EventName::Fork,
            },
        );
        // The fork is issued right after the copy-ins, which are the first `n` entries.
        self.order.insert(n as usize, 0);
        self.fork = Some(at);
        at
    }

    /// Exit from a side-stream scope: its last entry records a new join event (R4.4 c).
    pub(crate) fn scope_exit(&mut self, stream: StreamId) {
        let gs = self.graph_stream(stream);
        let n = self.joins.len() + 1;
        let r = self.issue(
            gs,
            EntryKind::Record {
                event: EventName::Join(n),
            },
        );
        self.joins.push(r);
    }

    /// Ends the capture (R4.11): picks the first problem in issue order, adds the join waits
    /// (R4.4 d), and resolves outputs and `record_tagged_stream`.
    ///
    /// `closure` is what the closure returned, already failed by the end-of-call scope checks
    /// (R2.8, R4.11); a problem found while tracing comes before it.
    pub(crate) fn finish(mut self, closure: Result<Vec<Tensor>>) -> Result<Graph> {
        let unbound_first = match (&self.unbound, &self.problem) {
            (Some(u), Some((p, _))) => u.issued < *p,
            (Some(_), None) => true,
            _ => false,
        };
        if unbound_first && let Some(u) = self.unbound.take() {
            let later = self
                .records
                .iter()
                .find(|(ev, issued, _)| *ev == u.event && *issued > u.issued)
                .map(|(_, _, r)| (self.streams[r.stream].tag.clone(), r.pos as usize));
            return Err(Error::WaitWithoutRecord {
                tag: u.tag.to_string(),
                stream: self.streams[u.at.stream].tag.clone(),
                position: u.at.pos as usize,
                later_record: later,
            });
        }
        if let Some((_, e)) = self.problem.take() {
            return Err(e);
        }
        let returned = closure?;
        // Issue 10 item 2: a graph whose values need more bytes than the address space holds
        // cannot be allocated. Outputs are values too, so every later byte sum fits.
        if total_bytes(self.values.iter().map(Value::bytes), true).is_none() {
            return Err(too_large("its values"));
        }
        for j in std::mem::take(&mut self.joins) {
            self.join_record(0, j);
            let EntryKind::Record {
                event: EventName::Join(n),
            } = self.streams[j.stream].entries[(j.pos - 1) as usize].clone()
            else {
                unreachable!("joins holds only join records");
            };
            self.issue(
                0,
                EntryKind::Wait {
                    event: EventName::Join(n),
                    bound: Some(j),
                },
            );
        }
        let mut outputs = Vec::with_capacity(returned.len());
        let output_shapes: Vec<Vec<usize>> = returned.iter().map(|t| t.shape().to_vec()).collect();
        for t in &returned {
            outputs.push(match t.kind() {
                // Values 0..n_inputs are the copy-ins, in input order (SC27).
                Kind::Graph { graph, value, .. } if *graph == self.id && *value < self.n_inputs => {
                    Output::Input(*value)
                }
                Kind::Graph { graph, value, .. } if *graph == self.id => Output::Value(*value),
                Kind::Graph { graph, op, .. } => {
                    return Err(Error::foreign(
                        "Compiled::run (returned output)",
                        *graph,
                        op,
                    ));
                }
                Kind::Eager { .. } => Output::Const(self.constant(t)),
            });
        }
        for (value, tag) in std::mem::take(&mut self.extends) {
            let stream = if tag == MAIN_TAG {
                Some(MAIN)
            } else {
                runtime().lookup_stream(&tag)
            };
            let gs = stream.and_then(|id| self.streams.iter().position(|s| s.id == id));
            if let Some(gs) = gs {
                let end = EntryRef {
                    stream: gs,
                    pos: self.streams[gs].entries.len() as u64,
                };
                self.values[value].add_use(end);
            }
        }
        let last = last_records(&self.records);
        Ok(self.into_graph(outputs, output_shapes, last))
    }

    /// The finished graph; shared by [`Tracer::finish`] and a re-assigned graph's rebuild.
    fn into_graph(
        mut self,
        outputs: Vec<Output>,
        output_shapes: Vec<Vec<usize>>,
        last_records: Vec<(u64, EntryRef)>,
    ) -> Graph {
        // A kept graph should cost what it holds, not the slack of the growth that built it.
        for s in &mut self.streams {
            s.entries.shrink_to_fit();
        }
        for v in &mut self.values {
            v.uses.shrink_to_fit();
        }
        self.values.shrink_to_fit();
        self.clocks.iter_mut().for_each(StreamClocks::shrink_to_fit);
        Graph {
            streams: self.streams,
            clocks: self.clocks,
            values: self.values,
            consts: self.consts,
            outputs,
            output_shapes,
            last_records,
            order: self.order,
        }
    }
}

/// Re-issuing a finished graph with entries placed on other streams (`assign`): the same
/// clocks, the same race check ([`Tracer::check_read`]) and the same finished [`Graph`] as a
/// hand-written capture, so an assignment that misses an edge is a refused capture.
impl Tracer {
    /// An empty rebuild of `template` on its streams plus `extra` (id, tag) streams.
    pub(crate) fn rebuild(template: &Graph, extra: &[(StreamId, String)]) -> Tracer {
        let mut streams: Vec<GraphStream> = template
            .streams
            .iter()
            .map(|s| GraphStream {
                id: s.id,
                tag: s.tag.clone(),
                entries: Vec::new(),
            })
            .collect();
        streams.extend(extra.iter().map(|(id, tag)| GraphStream {
            id: *id,
            tag: tag.clone(),
            entries: Vec::new(),
        }));
        let n_inputs = template.streams[0]
            .entries
            .iter()
            .take_while(|e| matches!(e, EntryKind::CopyIn { .. }))
            .count();
        let mut t = Tracer::empty(0, streams, template.consts.clone(), n_inputs);
        t.values.reserve(template.values.len());
        t.order.reserve(template.order.len());
        t
    }

    /// Copies call input `input` into `value`, whose shape and dtype `template` gives.
    pub(crate) fn copy_in_as(&mut self, input: usize, template: &Value) -> EntryRef {
        let value = self.values.len();
        let write = self.issue(0, EntryKind::CopyIn { input, value });
        self.values.push(Value {
            shape: template.shape.clone(),
            dtype: template.dtype,
            write,
            uses: Vec::new(),
        });
        write
    }

    /// Issues `op` on graph stream `gs` after the race check of every operand.
    ///
    /// # Errors
    /// [`Error::DataRace`] for an operand not ordered before `gs`'s current point.
    pub(crate) fn op_on(&mut self, gs: usize, op: &Op, operands: &[Operand]) -> Result<EntryRef> {
        for o in operands {
            if let Operand::Value(v) = *o {
                if v >= self.values.len() {
                    return Err(Error::ExecutionFailed {
                        op: op.name().into(),
                        stream: self.streams[gs].tag.clone(),
                        message: "internal error: stream assignment reads a value before its \
                                  op"
                        .into(),
                    });
                }
                self.check_read(gs, v, op.name())?;
            }
        }
        let v = self.push_op(gs, op, operands.to_vec());
        Ok(self.values[v].write)
    }

    /// A record of `event` on graph stream `gs`.
    pub(crate) fn record_on(&mut self, gs: usize, event: EventName) -> EntryRef {
        self.issue(gs, EntryKind::Record { event })
    }

    /// A wait on graph stream `gs` bound to the record at `bound`.
    pub(crate) fn wait_on(&mut self, gs: usize, event: EventName, bound: EntryRef) -> EntryRef {
        self.join_record(gs, bound);
        self.issue(
            gs,
            EntryKind::Wait {
                event,
                bound: Some(bound),
            },
        )
    }

    /// Whether `e` happens-before-or-equals graph stream `gs`'s latest entry.
    pub(crate) fn covers(&self, gs: usize, e: EntryRef) -> bool {
        at(&self.current[gs], e.stream) >= e.pos
    }

    /// Entries issued so far on graph stream `gs`.
    pub(crate) fn stream_len(&self, gs: usize) -> u64 {
        self.clocks[gs].len()
    }

    /// Extends `value`'s life to the end of graph stream `gs` (R4.10, resolved at the end).
    pub(crate) fn extend_to_end(&mut self, value: usize, gs: usize) {
        self.ends.push((value, gs));
    }

    /// The rebuilt graph: outputs and last records as the template's, R4.10 ends applied.
    pub(crate) fn finish_rebuilt(
        mut self,
        outputs: Vec<Output>,
        output_shapes: Vec<Vec<usize>>,
        last_records: Vec<(u64, EntryRef)>,
    ) -> Graph {
        for (value, gs) in std::mem::take(&mut self.ends) {
            let end = EntryRef {
                stream: gs,
                pos: self.streams[gs].entries.len() as u64,
            };
            self.values[value].add_use(end);
        }
        self.into_graph(outputs, output_shapes, last_records)
    }
}

/// The last record of each user event in issue order (R5.8), first-recorded event first.
fn last_records(records: &[(u64, u64, EntryRef)]) -> Vec<(u64, EntryRef)> {
    let mut out: Vec<(u64, EntryRef)> = Vec::new();
    for &(ev, _, r) in records {
        match out.iter_mut().find(|(e, _)| *e == ev) {
            Some(slot) => slot.1 = r,
            None => out.push((ev, r)),
        }
    }
    out
}
