//! The seam between the backend-neutral runtime and the machines that execute work.
//!
//! Owns the [`Backend`] trait and [`Work`], the description of one eager entry. A backend
//! realises each logical stream as a physical one on its device (a worker thread on the CPU, a
//! CUDA stream on a GPU, R10.2), executes entries in the FIFO order the runtime hands them over
//! (always under the runtime's lock, so FIFO order is issue order), blocks a stream on a bound
//! record, lets the host wait for a position, and instantiates and replays a backend-neutral
//! [`Program`](crate::graph::program::Program). It never decides ordering (that is `runtime`)
//! and never sees scopes, capture modes or tensors (that is `dispatch`).
//!
//! Backends: [`cpu`] (always built) and `cuda` (the `cuda` feature, on by default).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use std::fmt;
use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::program::Program;
use crate::ops::op::Op;
use crate::runtime::{Bound, Issue, StreamId};
use crate::tensor::storage::Buffer;
use crate::trace::spans::Label;

/// One eager entry for a backend to enqueue.
#[derive(Debug)]
pub(crate) enum Work {
    /// Run `op` on `inputs`, filling `output`. The entry holds its buffers alive until it has
    /// run (R3.8).
    Op {
        op: Op,
        inputs: Inputs,
        output: Arc<Buffer>,
    },
    /// `to_device` across the host boundary: `input` on one side, `output` on the other.
    /// Only a device backend is handed one (the CPU backend never sees device memory).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Copy {
        input: Arc<Buffer>,
        output: Arc<Buffer>,
    },
    /// A record: executing it is what publishes the stream's progress to its waiters.
    Record { label: Label },
    /// Block the stream until the bound record has executed (`None`: a no-op wait, R1.9).
    Wait { on: Option<Bound>, label: Label },
}

/// The input buffers of an op, inline (no allocation per issue; an op has at most
/// [`MAX_OPERANDS`](crate::ops::op::MAX_OPERANDS)).
#[derive(Debug)]
pub(crate) enum Inputs {
    One([Arc<Buffer>; 1]),
    Two([Arc<Buffer>; 2]),
    Three([Arc<Buffer>; 3]),
}

impl Inputs {
    pub(crate) fn as_slice(&self) -> &[Arc<Buffer>] {
        match self {
            Inputs::One(b) => b,
            Inputs::Two(b) => b,
            Inputs::Three(b) => b,
        }
    }
}

/// The failures a backend's streams report while nobody waits for them: `synchronize` takes
/// the earliest one and clears the rest (R3.12).
#[derive(Debug, Default)]
pub(crate) struct Failures(std::sync::Mutex<Vec<Error>>);

impl Failures {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Error>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a failure.
    pub(crate) fn report(&self, error: Error) {
        self.list().push(error);
    }

    /// The earliest failure reported since the last call, if any; forgets the others.
    pub(crate) fn take_first(&self) -> Option<Error> {
        let mut list = self.list();
        let first = (!list.is_empty()).then(|| list.swap_remove(0));
        list.clear();
        first
    }
}

/// A machine that executes the runtime's entries and replays programs.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// A [`Program`] made ready to replay on this backend (CPU: an arena and per-stream
    /// segments; CUDA: one device arena and one CUDA graph).
    type Exec: Send + fmt::Debug;
    /// One replay bound to its inputs and output buffers, not yet enqueued.
    type Replay;

    /// The device this backend runs on.
    fn device(&self) -> Device;

    /// A pending buffer for an op's output on this backend's device.
    fn new_output(&self) -> Arc<Buffer> {
        Arc::new(Buffer::pending())
    }

    /// Enqueues `work` at `at` (the next position of `at.stream`), opening the stream's
    /// physical stream on first use. Called under the runtime's lock.
    ///
    /// # Errors
    /// The physical stream cannot be opened ([`Error::WorkerSpawn`]); nothing is enqueued.
    fn enqueue(&self, at: Issue<'_>, work: Work) -> Result<()>;

    /// Blocks the calling host thread until entry `seq` of `stream` has executed.
    fn host_wait(&self, stream: StreamId, seq: u64);

    /// Entries of `stream` executed so far.
    fn executed(&self, stream: StreamId) -> u64;

    /// The earliest failure reported since the last call, if any (R3.12, `synchronize`).
    fn take_failure(&self) -> Option<Error>;

    /// Makes `program` ready to replay: allocates its memory and resolves its streams.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the program's memory cannot be allocated.
    fn instantiate(&self, program: Arc<Program>) -> Result<Self::Exec>;

    /// Binds one replay of `exec` to its input buffers and picks its output buffers (a buffer
    /// of an earlier replay only if nobody holds it any more, R5.5). Enqueues nothing.
    fn prepare(&self, exec: &mut Self::Exec, inputs: Vec<Arc<Buffer>>) -> Self::Replay;

    /// The output buffers of a prepared replay, one per program output slot.
    fn outputs(replay: &Self::Replay) -> &[Arc<Buffer>];

    /// Enqueues a prepared replay: `at[i]` is program stream `i`'s issue, whose `seq` is the
    /// stream's base (its entries before the replay). Called under the runtime's lock.
    ///
    /// # Errors
    /// A physical stream cannot be opened; nothing is enqueued then.
    fn enqueue_replay(&self, replay: Self::Replay, at: &[Issue<'_>]) -> Result<()>;
}
