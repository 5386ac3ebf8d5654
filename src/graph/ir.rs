//! The multi-stream graph IR that tracing builds and every later pass reads.
//!
//! Owns [`Graph`] and its parts: per-stream entry lists (closure entries included), values,
//! constants, outputs and each entry's graph-local vector clock. It holds no buffers and runs
//! nothing; tracing (`trace`) builds it, `check` verifies it, `memory` places its values, `plan`
//! turns it into instructions and `dump` prints it.
//!
//! # Positions and clocks
//! Graph stream 0 is always the main stream. An entry is named by [`EntryRef`] `(stream, pos)`
//! with `pos` counted from 1 on its graph stream. Component `t` of entry `(s, pos)`'s clock
//! ([`Graph::clock`]) is the highest position on graph stream `t` that happens-before-or-equals
//! the entry in the graph's hb relation (stream order, bound waits and closure events; R4.4,
//! R4.7). Clocks are kept by change points ([`StreamClocks`]), so a kept graph costs the same per
//! entry whatever its number of streams.

use std::sync::Arc;

pub(crate) use super::memory::{EntryRef, StreamClocks};
use crate::dtype::DType;
use crate::ops::op::Op;
use crate::runtime::StreamId;
use crate::tensor::handle::Tensor;

/// A value of the graph: the output of a copy-in or an op.
pub(crate) type ValueId = usize;

/// Which event a record or wait names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventName {
    /// The closure's fork event, recorded on main at graph start (R4.4 a).
    Fork,
    /// The join event of the n-th side-stream scope exit, counted from 1 (R4.4 c).
    Join(usize),
    /// A user's tagged event.
    User { id: u64, tag: Arc<str> },
}

/// What an op reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    Value(ValueId),
    /// Index into [`Graph::consts`]: a tensor made outside the graph (R4.8).
    Const(usize),
}

/// One entry of a graph stream.
#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    /// Copies call input `input` into the graph's static buffer for `value` (R5.2).
    CopyIn {
        input: usize,
        value: ValueId,
    },
    /// Runs `op` on `inputs`, writing `output`.
    Op {
        op: Op,
        inputs: Vec<Operand>,
        output: ValueId,
    },
    Record {
        event: EventName,
    },
    /// A wait bound to the record at `bound` (`None` only while tracing, for a wait with no
    /// earlier record; such a graph never leaves `trace`, R4.6).
    Wait {
        event: EventName,
        bound: Option<EntryRef>,
    },
}

impl std::fmt::Display for EventName {
    /// As the graph dump writes it: `fork`, `join1`, `"66"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventName::Fork => f.write_str("fork"),
            EventName::Join(n) => write!(f, "join{n}"),
            EventName::User { tag, .. } => write!(f, "{tag:?}"),
        }
    }
}

impl EntryKind {
    /// The name used in error messages and positions.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            EntryKind::CopyIn { .. } => "copy_in",
            EntryKind::Op { op, .. } => op.name(),
            EntryKind::Record { .. } => "tagged_event_record",
            EntryKind::Wait { .. } => "tagged_event_wait",
        }
    }
}

/// A stream of the graph.
#[derive(Debug, Clone)]
pub(crate) struct GraphStream {
    pub(crate) id: StreamId,
    pub(crate) tag: String,
    pub(crate) entries: Vec<EntryKind>,
}

/// A value's metadata and lifetime.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) write: EntryRef,
    /// The latest entry on each stream that reads the value, counting the ends added by
    /// `record_tagged_stream` (R4.10). Earlier reads on a stream happen-before the latest one,
    /// so this is all the planner needs, and a weight read by every op costs one entry.
    pub(crate) uses: Vec<EntryRef>,
}

impl Value {
    /// Notes a read (or an R4.10 end) at `at`.
    pub(crate) fn add_use(&mut self, at: EntryRef) {
        match self.uses.iter_mut().find(|u| u.stream == at.stream) {
            Some(u) => u.pos = u.pos.max(at.pos),
            None => self.uses.push(at),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.len() * self.dtype.size_in_bytes()
    }
}

/// What the closure returned in one output position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// A value computed by the graph.
    Value(ValueId),
    /// The call's input (the closure returned its argument).
    Input(usize),
    /// A tensor made outside the graph.
    Const(usize),
}

/// A finished graph: what one capture produced.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// Graph stream 0 is the main stream.
    pub(crate) streams: Vec<GraphStream>,
    /// `clocks[s]`: the graph-local clocks of graph stream `s`'s entries.
    pub(crate) clocks: Vec<StreamClocks>,
    pub(crate) values: Vec<Value>,
    pub(crate) consts: Vec<Tensor>,
    pub(crate) outputs: Vec<Output>,
    /// The shape of each returned tensor: a copy-free view (`reshape`, `unsqueeze`) of a value
    /// or an input has the same elements under another shape.
    pub(crate) output_shapes: Vec<Vec<usize>>,
    /// The last record of each user event in issue order: `(event id, entry)` (R5.8).
    pub(crate) last_records: Vec<(u64, EntryRef)>,
    /// The graph stream of every entry in issue order (stream order within each stream), so a
    /// pass can re-issue the capture in an order consistent with its hb relation (`assign`).
    pub(crate) order: Vec<u32>,
}

impl Graph {
    pub(crate) fn entry(&self, at: EntryRef) -> &EntryKind {
        &self.streams[at.stream].entries[(at.pos - 1) as usize]
    }

    /// The entry's graph-local clock, one component per graph stream.
    pub(crate) fn clock(&self, at: EntryRef) -> Vec<u64> {
        self.clocks[at.stream].dense(at.pos, self.streams.len())
    }

    /// Every entry, stream by stream.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (EntryRef, &EntryKind)> {
        self.streams.iter().enumerate().flat_map(|(s, gs)| {
            gs.entries.iter().enumerate().map(move |(i, e)| {
                (
                    EntryRef {
                        stream: s,
                        pos: i as u64 + 1,
                    },
                    e,
                )
            })
        })
    }

    /// "matmul at position 3 of \"1\"": how checks after tracing (a cycle, a plan that
    /// cannot be built) name an entry. Errors found while tracing name the closure's n-th op
    /// instead (`trace`), as the user wrote it.
    pub(crate) fn describe(&self, at: EntryRef) -> String {
        format!(
            "{} at position {} of \"{}\"",
            self.entry(at).name(),
            at.pos,
            self.streams[at.stream].tag
        )
    }
}
