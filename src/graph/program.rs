//! The backend-neutral executable form of a captured graph (design §3 "Replay is cheap").
//!
//! Owns [`Program`]: per-stream instruction lists in which every operand is resolved to a
//! [`View`] of the one arena (offset, shape, strides), an output slot or a constant, every wait
//! to "stream `t`, position `k`", and every record to its position; plus what a replay must
//! report to the runtime (R5.8) and how its outputs become tensors. It allocates nothing and
//! runs nothing: a backend instantiates a program (the CPU as an arena plus worker segments, CUDA
//! as one device arena plus one CUDA graph) and `dispatch` issues its replays.

use std::sync::Arc;

use super::ir::{EntryKind, EntryRef, EventName, Graph, Operand, Output};
use super::memory::{ClockOracle, ValueLife, too_large, total_bytes, try_plan_memory};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::op::Op;
use crate::runtime::{Batch, BatchPoint, BatchStream, Position, StreamId};
use crate::tensor::handle::{Kind, Tensor};
use crate::tensor::storage::Buffer;
use crate::trace::spans::{Label, SpanKind};

/// Memory figures of a captured graph's static plan (R4.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Bytes of the one arena that holds every input and intermediate value of the graph.
    pub arena_bytes: usize,
    /// Sum of the sizes of those values (what an arena without sharing would need).
    pub value_bytes: usize,
    /// Number of values placed in the arena.
    pub values: usize,
    /// Number of distinct slots the values were packed into.
    pub slots: usize,
    /// Bytes of the graph outputs, which live in their own buffers (R5.5).
    pub output_bytes: usize,
}

/// Where a value's elements sit in the arena: a byte offset, a shape and element strides.
///
/// Shape and strides are shared (`Arc`) by every use of a value, so a view costs no allocation
/// per instruction. Strides let later ops (reshape, transpose) be copy-free views; the values
/// the tracer makes today are all contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// The graph value the view holds (the index of its poison state in a replay, R3.12).
    pub(crate) value: usize,
    /// Byte offset in the arena.
    pub(crate) offset: usize,
    pub(crate) dtype: DType,
    /// Number of elements.
    pub(crate) len: usize,
    pub(crate) shape: Arc<[usize]>,
    /// Element strides, one per dimension.
    pub(crate) strides: Arc<[usize]>,
}

impl View {
    fn contiguous(value: usize, offset: usize, dtype: DType, shape: &[usize]) -> View {
        let mut strides = vec![0; shape.len()];
        let mut step = 1usize;
        for (s, &d) in strides.iter_mut().zip(shape).rev() {
            *s = step;
            step = step.saturating_mul(d);
        }
        View {
            value,
            offset,
            dtype,
            len: shape.iter().product(),
            shape: shape.into(),
            strides: strides.into(),
        }
    }

    /// Whether the view is dense and row-major (what the CPU kernels read and write).
    pub(crate) fn is_contiguous(&self) -> bool {
        let mut step = 1usize;
        for (&s, &d) in self.strides.iter().zip(self.shape.iter()).rev() {
            if d != 1 && s != step {
                return false;
            }
            step = step.saturating_mul(d);
        }
        true
    }

    /// Bytes from the arena's start to the view's end (its last element plus one).
    pub(crate) fn end(&self) -> Option<usize> {
        self.len
            .checked_mul(self.dtype.size_in_bytes())?
            .checked_add(self.offset)
    }
}

/// Where an operand or result lives during a replay.
#[derive(Debug, Clone)]
pub(crate) enum Loc {
    Arena(View),
    /// Output slot `i` of the replay (outputs never live in the arena, R5.5).
    Out(usize),
    /// Constant `i` of the program.
    Const(usize),
}

/// One entry of a program stream.
#[derive(Debug)]
pub(crate) enum Instr {
    /// Copy call input `input` into its arena view (R5.2).
    CopyIn {
        input: usize,
        dst: View,
    },
    Op {
        op: Op,
        inputs: Vec<Loc>,
        dst: Loc,
    },
    /// The stream's progress up to this entry is published: the record fires.
    Record {
        label: Label,
    },
    /// Block until program stream `stream` has executed its entry `pos` of this replay.
    Wait {
        stream: usize,
        pos: u64,
        label: Label,
    },
}

impl Instr {
    /// The entry's kind and name, for timelines.
    pub(crate) fn span(&self) -> (SpanKind, Label) {
        match self {
            Instr::CopyIn { .. } => (SpanKind::CopyIn, Label::Static("copy_in")),
            Instr::Op { op, .. } => (SpanKind::Op, Label::Static(op.name())),
            Instr::Record { label } => (SpanKind::Record, label.clone()),
            Instr::Wait { label, .. } => (SpanKind::Wait, label.clone()),
        }
    }
}

/// One stream's part of a program.
#[derive(Debug)]
pub(crate) struct ProgramStream {
    pub(crate) id: StreamId,
    pub(crate) tag: Arc<str>,
    pub(crate) instrs: Vec<Instr>,
    /// Graph-local clock of the last entry (for the R5.8 clock update).
    pub(crate) last_clock: Vec<u64>,
}

/// An output slot's metadata and the entry that writes it.
#[derive(Debug)]
pub(crate) struct OutMeta {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    at: EntryRef,
    clock: Vec<u64>,
    op: &'static str,
}

impl OutMeta {
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A captured graph, ready for any backend to instantiate.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) streams: Vec<ProgramStream>,
    /// Bytes of the one arena every `Loc::Arena` view lives in.
    pub(crate) arena_bytes: usize,
    /// Number of graph values (views name them by index).
    pub(crate) values: usize,
    /// Constants read by the graph (tensors made outside it, R4.8).
    pub(crate) consts: Vec<Tensor>,
    /// The output slots, each written by one entry.
    pub(crate) outs: Vec<OutMeta>,
    /// What each closure output is.
    outputs: Vec<Output>,
    /// Output value → output slot.
    out_slot_of: Vec<Option<usize>>,
    /// The last record of each user event: (event id, entry, its clock).
    records: Vec<(u64, EntryRef, Vec<u64>)>,
    stats: MemoryStats,
}

fn internal(message: String) -> Error {
    Error::ExecutionFailed {
        op: "capture".into(),
        stream: "host".into(),
        message: format!("internal error while planning the graph: {message}"),
    }
}

fn label(e: &EventName) -> Label {
    match e {
        EventName::Fork => Label::Static("fork"),
        EventName::Join(_) => Label::Static("join"),
        EventName::User { tag, .. } => Label::Tag(tag.clone()),
    }
}

impl Program {
    /// Places the values (R4.9) and resolves every entry into an instruction.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the memory the graph needs exceeds the address space.
    pub(crate) fn lower(graph: &Graph) -> Result<Program> {
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
        let output_bytes = total_bytes(
            outs.iter()
                .map(|o| o.len().saturating_mul(o.dtype.size_in_bytes())),
            false,
        )
        .ok_or_else(|| too_large("its outputs"))?;
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
        let mem = try_plan_memory(
            &lives,
            &ClockOracle {
                clocks: &graph.clocks,
            },
        )?;
        let mut view_of = vec![None; graph.values.len()];
        for (i, &v) in arena_values.iter().enumerate() {
            let val = &graph.values[v];
            let view = View::contiguous(v, mem.offsets[i], val.dtype, &val.shape);
            if view.end().is_none_or(|end| end > mem.arena_bytes) {
                return Err(internal(format!(
                    "the memory plan put value {v} at {view:?}, outside the {}-byte arena",
                    mem.arena_bytes
                )));
            }
            view_of[v] = Some(view);
        }
        let loc = |v: usize| match (out_slot_of[v], &view_of[v]) {
            (Some(o), _) => Ok(Loc::Out(o)),
            (None, Some(view)) => Ok(Loc::Arena(view.clone())),
            (None, None) => Err(internal(format!("value {v} has no place"))),
        };
        let mut streams = Vec::with_capacity(graph.streams.len());
        for (s, gs) in graph.streams.iter().enumerate() {
            let mut instrs = Vec::with_capacity(gs.entries.len());
            for (i, e) in gs.entries.iter().enumerate() {
                instrs.push(match e {
                    EntryKind::CopyIn { input, value } => match loc(*value)? {
                        Loc::Arena(dst) => Instr::CopyIn { input: *input, dst },
                        _ => return Err(internal("an input value outside the arena".into())),
                    },
                    EntryKind::Op { op, inputs, output } => Instr::Op {
                        op: op.clone(),
                        inputs: inputs
                            .iter()
                            .map(|o| match *o {
                                Operand::Value(v) => loc(v),
                                Operand::Const(c) => Ok(Loc::Const(c)),
                            })
                            .collect::<Result<_>>()?,
                        dst: loc(*output)?,
                    },
                    EntryKind::Record { event } => Instr::Record {
                        label: label(event),
                    },
                    EntryKind::Wait {
                        bound: Some(b),
                        event,
                    } => Instr::Wait {
                        stream: b.stream,
                        pos: b.pos,
                        label: label(event),
                    },
                    EntryKind::Wait { bound: None, .. } => {
                        let at = EntryRef {
                            stream: s,
                            pos: i as u64 + 1,
                        };
                        return Err(internal(format!(
                            "{} has no bound record",
                            graph.describe(at)
                        )));
                    }
                });
            }
            streams.push(ProgramStream {
                id: gs.id,
                tag: Arc::from(gs.tag.as_str()),
                instrs,
                last_clock: graph.clocks[s].last_dense(),
            });
        }
        let stats = MemoryStats {
            arena_bytes: mem.arena_bytes,
            value_bytes: mem.value_bytes,
            values: arena_values.len(),
            slots: mem.slots,
            output_bytes,
        };
        Ok(Program {
            streams,
            arena_bytes: mem.arena_bytes,
            values: graph.values.len(),
            consts: graph.consts.clone(),
            outs,
            outputs: graph.outputs.clone(),
            out_slot_of,
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

    /// The buffers of the constants, in program order.
    ///
    /// # Errors
    /// An internal error if a constant is a graph value (the tracer never makes one).
    pub(crate) fn const_buffers(&self) -> Result<Vec<Arc<Buffer>>> {
        self.consts
            .iter()
            .map(|t| match t.kind() {
                Kind::Eager { buffer, .. } => Ok(buffer.clone()),
                Kind::Graph { .. } => Err(internal("a graph value as a constant".into())),
            })
            .collect()
    }

    /// Issues a replay through `issue` with what the runtime needs to know of it (R5.2, R5.8):
    /// the streams and their entry counts, the inputs' producers, the records of user events and
    /// the producers of the outputs. Returns the output slots' positions.
    pub(crate) fn issue_batch<T>(
        &self,
        input_producers: &[Option<&Arc<Position>>],
        issue: impl FnOnce(&Batch<'_>) -> Result<T>,
    ) -> Result<T> {
        fn point<'c>(at: EntryRef, clock: &'c [u64], op: &'static str) -> BatchPoint<'c> {
            BatchPoint {
                stream: at.stream,
                pos: at.pos,
                clock,
                op,
            }
        }
        let streams: Vec<BatchStream<'_>> = self
            .streams
            .iter()
            .map(|s| BatchStream {
                stream: s.id,
                entries: s.instrs.len() as u64,
                last_clock: &s.last_clock,
            })
            .collect();
        let records: Vec<(u64, BatchPoint<'_>)> = self
            .records
            .iter()
            .map(|(ev, r, c)| (*ev, point(*r, c, "tagged_event_record")))
            .collect();
        let outputs: Vec<BatchPoint<'_>> = self
            .outs
            .iter()
            .map(|o| point(o.at, &o.clock, o.op))
            .collect();
        issue(&Batch {
            streams: &streams,
            input_producers,
            records: &records,
            outputs: &outputs,
        })
    }

    /// The closure's outputs of one replay: output slot `i` is `buffers[i]`, written by the
    /// entry at `positions[i]`; inputs and constants returned as outputs are passed through.
    pub(crate) fn outputs(
        &self,
        inputs: &[Tensor],
        buffers: &[Arc<Buffer>],
        positions: &[Arc<Position>],
    ) -> Vec<Tensor> {
        self.outputs
            .iter()
            .map(|o| match *o {
                Output::Value(v) => {
                    let slot = self.out_slot_of[v].expect("every output value has a slot");
                    let meta = &self.outs[slot];
                    Tensor::from_buffer(
                        meta.shape.clone(),
                        meta.dtype,
                        buffers[slot].clone(),
                        Some(positions[slot].clone()),
                    )
                }
                Output::Input(i) => inputs[i].clone(),
                Output::Const(c) => self.consts[c].clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_views() {
        let v = View::contiguous(0, 64, DType::F16, &[2, 3, 4]);
        assert_eq!(
            (&*v.strides, v.len, v.end()),
            (&[12, 4, 1][..], 24, Some(112))
        );
        assert!(v.is_contiguous());
        let t = View {
            strides: vec![1, 4, 12].into(),
            ..v.clone()
        };
        assert!(!t.is_contiguous());
        assert!(View::contiguous(0, 0, DType::F32, &[]).is_contiguous());
    }
}
