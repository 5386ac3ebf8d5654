//! Multi-stream graphs: capture, checks, memory planning and lowering (semantics §4–5).
//!
//! Owns the pipeline that turns one traced call into a backend-neutral program:
//!
//! ```text
//! trace::Tracer (IR + event closure + race check) ─▶ check::acyclic ─▶ memory::plan_memory
//!     ─▶ program::Program (per-stream instructions, arena views, record/wait positions)
//! ```
//!
//! It decides nothing about which path a call takes (that is `dispatch`, which also owns the
//! thread's capture mode and feeds the tracer) and never executes anything: a backend
//! instantiates the program and `dispatch` issues its replays.

mod check;
mod dump;
pub(crate) mod ir;
pub(crate) mod memory;
pub(crate) mod program;
pub(crate) mod trace;

use std::sync::Arc;

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
}

impl Captured {
    /// Checks a traced graph (R4.7) and lowers it to a program (R4.9).
    ///
    /// # Errors
    /// [`Error::Deadlock`](crate::Error::Deadlock) for a cycle;
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) if its memory exceeds the address space.
    pub(crate) fn new(graph: Graph) -> Result<Captured> {
        check::acyclic(&graph)?;
        let program = Arc::new(Program::lower(&graph)?);
        Ok(Captured { program })
    }

    /// The program, for a backend to instantiate.
    pub(crate) fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// See `Compiled::graph_dump`.
    pub(crate) fn dump(&self) -> String {
        dump::text(&self.program)
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
