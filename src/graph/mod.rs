//! Multi-stream graphs: capture, checks, memory planning and lowering (semantics §4–5).
//!
//! Owns the pipeline that turns one traced call into a backend-neutral program:
//!
//! ```text
//! trace::Tracer (IR + event closure + race check) ─▶ [assign: auto streams, re-traced]
//!     ─▶ check::acyclic ─▶ memory::plan_memory
//!     ─▶ program::Program (per-stream instructions, arena views, record/wait positions)
//! ```
//!
//! It decides nothing about which path a call takes (that is `dispatch`, which also owns the
//! thread's capture mode and feeds the tracer) and never executes anything: a backend
//! instantiates the program and `dispatch` issues its replays.

pub(crate) mod assign;
mod check;
mod dump;
pub(crate) mod ir;
pub(crate) mod memory;
pub(crate) mod program;
pub(crate) mod trace;

use std::sync::Arc;

use self::assign::{Assignment, AutoConfig};
use self::ir::Graph;
use self::program::MemoryStats;
use self::program::Program;
pub(crate) use self::trace::Tracer;
use crate::error::Result;

/// A captured graph: its program (the IR is dropped once lowered, so a kept graph costs only
/// what replay and the dumps need).
#[derive(Debug)]
pub(crate) struct Captured {
    program: Arc<Program>,
    /// How `auto_streams` placed the ops, when it moved any.
    assignment: Option<Assignment>,
    /// Stream tags, main first, then in order of first use in the graph.
    streams: Vec<String>,
}

impl Captured {
    /// Checks a traced graph (R4.7) and lowers it to a program (R4.9).
    ///
    /// # Errors
    /// [`Error::Deadlock`](crate::Error::Deadlock) for a cycle;
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) if its memory exceeds the address space.
    ///
    /// With `auto`, the graph's main-stream ops are first re-assigned to streams (`assign`,
    /// R11.1); the rebuilt graph passes the same checks. A race there is
    /// [`Error::DataRace`](crate::Error::DataRace).
    pub(crate) fn new(graph: Graph, auto: Option<AutoConfig>) -> Result<Captured> {
        let (graph, assignment) = match auto {
            Some(cfg) => assign::assign(graph, cfg)?,
            None => (graph, None),
        };
        check::acyclic(&graph)?;
        let mut seen = vec![false; graph.streams.len()];
        let mut streams = vec![graph.streams[0].tag.clone()];
        seen[0] = true;
        for &s in &graph.order {
            let s = s as usize;
            if !seen[s] {
                seen[s] = true;
                streams.push(graph.streams[s].tag.clone());
            }
        }
        let program = Arc::new(Program::lower(&graph)?);
        Ok(Captured {
            program,
            assignment,
            streams,
        })
    }

    /// See `Compiled::graph_streams`.
    pub(crate) fn streams(&self) -> Vec<String> {
        self.streams.clone()
    }

    /// The program, for a backend to instantiate.
    pub(crate) fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// See `Compiled::graph_dump`.
    pub(crate) fn dump(&self) -> String {
        let text = dump::text(&self.program);
        match &self.assignment {
            Some(a) => format!("{text}\n{}", a.text()),
            None => text,
        }
    }

    /// See `Compiled::graph_dot`.
    pub(crate) fn dot(&self) -> String {
        dump::dot(&self.program)
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.program.memory_stats()
    }

    /// Records and waits in the graph, closure events included (R4.4 counts).
    #[cfg(test)]
    pub(crate) fn event_counts(&self) -> (usize, usize) {
        self.program.event_counts()
    }
}
