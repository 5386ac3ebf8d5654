//! The backend-neutral executable form of a captured graph (design §3 "Replay is cheap").
//!
//! Owns [`Program`]: per-stream instruction lists in which every operand is resolved to a
//! [`View`] of the one arena (offset, shape, strides), an output slot or a constant, every wait
//! to "stream `t`, position `k`", and every record to its position; plus what a replay must
//! report to the runtime (R5.8) and how its outputs become tensors. It allocates nothing and
//! runs nothing: a backend instantiates a program (the CPU as an arena plus worker segments, CUDA
//! as one device arena plus one CUDA graph) and `dispatch` issues its replays.

use std::sync::Arc;

pub(crate) use super::ir::EventName;
use super::ir::{EntryKind, EntryRef, Graph, Operand, Output};
use super::memory::{ClockOracle, ValueLife, too_large, total_bytes, try_plan_memory};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::op::{MAX_OPERANDS, Op};
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

/// The shape and element strides of a view that is not dense row-major.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Strided {
    pub(crate) shape: Box<[usize]>,
    pub(crate) strides: Box<[usize]>,
}

/// Where a value's elements sit in the arena: a byte offset, a length, and a layout.
///
/// A dense row-major value (every value the tracer makes today) needs no more: its shape is
/// its writer's output shape. `strided` carries the shape and strides of a copy-free view
/// (reshape, transpose) over bytes of another value; a view is 32 bytes and allocates nothing
/// when dense, so a kept program costs little per value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// Byte offset in the arena.
    pub(crate) offset: usize,
    /// Number of elements.
    pub(crate) len: usize,
    pub(crate) dtype: DType,
    /// `None`: dense row-major.
    pub(crate) strided: Option<Arc<Strided>>,
}

impl View {
    fn dense(offset: usize, len: usize, dtype: DType) -> View {
        View {
            offset,
            len,
            dtype,
            strided: None,
        }
    }

    /// Whether the view is dense and row-major (what the CPU kernels read and write).
    pub(crate) fn is_contiguous(&self) -> bool {
        let Some(st) = &self.strided else {
            return true;
        };
        let mut step = 1usize;
        for (&s, &d) in st.strides.iter().zip(st.shape.iter()).rev() {
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

/// A graph value (its index in [`Program::views`]).
pub(crate) type ValueId = usize;

/// Where an operand or result lives during a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    /// Arena value `v` (its view is `Program::views[v]`; `v` also indexes its poison state in
    /// a replay, R3.12).
    Arena(ValueId),
    /// Output slot `i` of the replay (outputs never live in the arena, R5.5).
    Out(usize),
    /// Constant `i` of the program.
    Const(usize),
}

/// The operands of an op: one or two, inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operands {
    locs: [Loc; MAX_OPERANDS],
    len: u8,
}

impl Operands {
    fn new(locs: &[Loc]) -> Option<Operands> {
        match *locs {
            [a] => Some(Operands {
                locs: [a, a, a],
                len: 1,
            }),
            [a, b] => Some(Operands {
                locs: [a, b, b],
                len: 2,
            }),
            [a, b, c] => Some(Operands {
                locs: [a, b, c],
                len: 3,
            }),
            _ => None,
        }
    }

    pub(crate) fn as_slice(&self) -> &[Loc] {
        &self.locs[..usize::from(self.len)]
    }
}

/// One entry of a program stream.
#[derive(Debug)]
pub(crate) enum Instr {
    /// Copy call input `input` into arena value `dst` (R5.2).
    CopyIn {
        input: usize,
        dst: ValueId,
    },
    Op {
        op: Op,
        inputs: Operands,
        dst: Loc,
    },
    /// The stream's progress up to this entry is published: the record fires.
    Record {
        event: EventName,
    },
    /// Block until program stream `stream` has executed its entry `pos` of this replay.
    Wait {
        stream: usize,
        pos: u64,
        event: EventName,
    },
}

impl Instr {
    /// The entry's kind and name, for timelines.
    pub(crate) fn span(&self) -> (SpanKind, Label) {
        let label = |e: &EventName| match e {
            EventName::Fork => Label::Static("fork"),
            EventName::Join(_) => Label::Static("join"),
            EventName::User { tag, .. } => Label::Tag(tag.clone()),
        };
        match self {
            Instr::CopyIn { .. } => (SpanKind::CopyIn, Label::Static("copy_in")),
            Instr::Op { op, .. } => (SpanKind::Op, Label::Static(op.name())),
            Instr::Record { event } => (SpanKind::Record, label(event)),
            Instr::Wait { event, .. } => (SpanKind::Wait, label(event)),
        }
    }

    /// The entry as the graph dump writes it: `copy_in(0)`, `matmul`, `record("66")`,
    /// `wait(join1)`.
    pub(crate) fn label(&self) -> String {
        match self {
            Instr::CopyIn { input, .. } => format!("copy_in({input})"),
            Instr::Op { op, .. } => op.name().to_string(),
            Instr::Record { event } => format!("record({event})"),
            Instr::Wait { event, .. } => format!("wait({event})"),
        }
    }
}

/// A graph-local vector clock as its non-zero components `(program stream, position)`: an
/// entry usually depends on a few streams, so a kept program's clocks cost what they say, not
/// 8 bytes per stream of the graph.
pub(crate) type SparseClock = Box<[(usize, u64)]>;

fn sparse(dense: &[u64]) -> SparseClock {
    dense
        .iter()
        .enumerate()
        .filter(|&(_, &v)| v > 0)
        .map(|(t, &v)| (t, v))
        .collect()
}

/// One stream's part of a program.
#[derive(Debug)]
pub(crate) struct ProgramStream {
    pub(crate) id: StreamId,
    pub(crate) tag: Arc<str>,
    pub(crate) instrs: Vec<Instr>,
    /// Graph-local clock of the last entry (for the R5.8 clock update).
    pub(crate) last_clock: SparseClock,
}

/// An output slot's metadata and the entry that writes it.
#[derive(Debug)]
pub(crate) struct OutMeta {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    at: EntryRef,
    clock: SparseClock,
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
    /// The view of each graph value in the arena (`None` for values that are outputs).
    pub(crate) views: Vec<Option<View>>,
    /// Constants read by the graph (tensors made outside it, R4.8).
    pub(crate) consts: Vec<Tensor>,
    /// The output slots, each written by one entry.
    pub(crate) outs: Vec<OutMeta>,
    /// What each closure output is.
    outputs: Vec<Output>,
    /// Each closure output's shape (a view's may differ from its value's).
    output_shapes: Vec<Vec<usize>>,
    /// Output value → output slot.
    out_slot_of: Vec<Option<usize>>,
    /// The last record of each user event: (event id, entry, its clock).
    records: Vec<(u64, EntryRef, SparseClock)>,
    stats: MemoryStats,
}

fn internal(message: String) -> Error {
    Error::ExecutionFailed {
        op: "capture".into(),
        stream: "host".into(),
        message: format!("internal error while planning the graph: {message}"),
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
                    clock: sparse(&graph.clock(val.write)),
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
        let mut views = vec![None; graph.values.len()];
        for (i, &v) in arena_values.iter().enumerate() {
            let val = &graph.values[v];
            let view = View::dense(mem.offsets[i], val.len(), val.dtype);
            if view.end().is_none_or(|end| end > mem.arena_bytes) {
                return Err(internal(format!(
                    "the memory plan put value {v} at {view:?}, outside the {}-byte arena",
                    mem.arena_bytes
                )));
            }
            views[v] = Some(view);
        }
        let loc = |v: usize| match (out_slot_of[v], &views[v]) {
            (Some(o), _) => Ok(Loc::Out(o)),
            (None, Some(_)) => Ok(Loc::Arena(v)),
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
                    EntryKind::Op { op, inputs, output } => {
                        let locs = inputs
                            .iter()
                            .map(|o| match *o {
                                Operand::Value(v) => loc(v),
                                Operand::Const(c) => Ok(Loc::Const(c)),
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Instr::Op {
                            op: op.clone(),
                            inputs: Operands::new(&locs).ok_or_else(|| {
                                internal(format!("{} with {} operands", op.name(), locs.len()))
                            })?,
                            dst: loc(*output)?,
                        }
                    }
                    EntryKind::Record { event } => Instr::Record {
                        event: event.clone(),
                    },
                    EntryKind::Wait {
                        bound: Some(b),
                        event,
                    } => Instr::Wait {
                        stream: b.stream,
                        pos: b.pos,
                        event: event.clone(),
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
                last_clock: sparse(&graph.clocks[s].last_dense()),
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
            views,
            consts: graph.consts.clone(),
            outs,
            outputs: graph.outputs.clone(),
            output_shapes: graph.output_shapes.clone(),
            out_slot_of,
            records: graph
                .last_records
                .iter()
                .map(|&(ev, r)| (ev, r, sparse(&graph.clock(r))))
                .collect(),
            stats,
        })
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.stats
    }

    /// The arena view of value `v`, if `v` lives in the arena.
    pub(crate) fn view(&self, v: ValueId) -> Option<&View> {
        self.views.get(v)?.as_ref()
    }

    /// Records and waits in the program, closure events included (R4.4 counts).
    #[cfg(test)]
    pub(crate) fn event_counts(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for i in self.streams.iter().flat_map(|s| &s.instrs) {
            match i {
                Instr::Record { .. } => counts.0 += 1,
                Instr::Wait { .. } => counts.1 += 1,
                _ => {}
            }
        }
        counts
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
        fn point<'c>(at: EntryRef, clock: &'c [(usize, u64)], op: &'static str) -> BatchPoint<'c> {
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
    /// Each output gets the shape the closure returned it with: a view of a value shares the
    /// value's buffer (and slot) under its own shape, a view of an input the input's buffer.
    pub(crate) fn outputs(
        &self,
        inputs: &[Tensor],
        buffers: &[Arc<Buffer>],
        positions: &[Arc<Position>],
    ) -> Vec<Tensor> {
        self.outputs
            .iter()
            .zip(&self.output_shapes)
            .map(|(o, shape)| match *o {
                Output::Value(v) => {
                    let slot = self.out_slot_of[v].expect("every output value has a slot");
                    Tensor::from_buffer(
                        shape.clone(),
                        self.outs[slot].dtype,
                        buffers[slot].clone(),
                        Some(positions[slot].clone()),
                    )
                }
                Output::Input(i) if inputs[i].shape() != &shape[..] => {
                    inputs[i].with_shape(shape.clone())
                }
                Output::Input(i) => inputs[i].clone(),
                // A constant is the handle the closure returned, view or not.
                Output::Const(c) => self.consts[c].clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_strided_views() {
        let v = View::dense(64, 24, DType::F16);
        assert_eq!(v.end(), Some(112));
        assert!(v.is_contiguous());
        let transposed = View {
            strided: Some(Arc::new(Strided {
                shape: vec![4, 3, 2].into(),
                strides: vec![1, 4, 12].into(),
            })),
            ..v.clone()
        };
        assert!(!transposed.is_contiguous());
        let row_major = View {
            strided: Some(Arc::new(Strided {
                shape: vec![2, 3, 4].into(),
                strides: vec![12, 4, 1].into(),
            })),
            ..v
        };
        assert!(row_major.is_contiguous());
        assert_eq!(View::dense(usize::MAX, 2, DType::F32).end(), None);
    }

    /// A kept program costs little per value: dense views and operands allocate nothing.
    #[test]
    fn instructions_and_views_stay_small() {
        assert!(
            std::mem::size_of::<View>() <= 32,
            "{}",
            std::mem::size_of::<View>()
        );
        assert!(std::mem::size_of::<Loc>() <= 16);
        assert!(
            std::mem::size_of::<Instr>() <= 144,
            "{}",
            std::mem::size_of::<Instr>()
        );
    }
}
