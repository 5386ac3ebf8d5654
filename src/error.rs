//! The one error type of tagstream.
//!
//! Owns [`Error`] and [`Result`]. Every variant carries the context a user needs to find the
//! offending call: the op by name, tags in quotes, streams by their tag, shapes and dtypes by value
//! (semantics §7, R7.2). This module knows nothing about how errors are detected.

use crate::device::Device;
use crate::dtype::DType;

/// `Result` with tagstream's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tagstream (semantics §7, the error catalogue).
///
/// A call that returns `Err` has issued nothing and changed no clock, event, registry or tensor
/// (R3.9), so the runtime stays usable after any error.
///
/// Match a variant to react to one kind of error; its fields carry the context, and `Display`
/// says what went wrong and what to do:
///
/// ```
/// use tagstream::ops::create_tagged_event;
/// use tagstream::{DType, Error, Tensor};
///
/// let _ev = create_tagged_event("error-doc")?;
/// match create_tagged_event("error-doc") {
///     Err(Error::TagInUse { tag }) => assert_eq!(tag, "error-doc"),
///     other => panic!("expected TagInUse, got {other:?}"),
/// }
/// let a = Tensor::zeros(&[2, 3], DType::F32)?;
/// let err = a.matmul(&a).unwrap_err();
/// if let Error::ShapeMismatch { op, lhs, rhs, .. } = &err {
///     assert_eq!((*op, lhs.as_slice(), rhs.as_slice()), ("matmul", &[2, 3][..], &[2, 3][..]));
/// }
/// assert!(err.to_string().starts_with("matmul: shape mismatch"));
/// # Ok::<(), tagstream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- tags and events -------------------------------------------------------------------
    /// E1: `create_tagged_event` with a tag that is already registered in this process (R1.2).
    #[error(
        "create_tagged_event: tag \"{tag}\" is already in use in this process; event tags are \
         process-unique and never released (R1.2, R1.4), so create each tagged event once and \
         clone the handle"
    )]
    TagInUse {
        /// The tag that was already taken.
        tag: String,
    },

    /// E2: an empty tag given to `create_tagged_event`, `stream_switch` or
    /// `record_tagged_stream`, or a `stream_switch` tag with the reserved prefix `auto:` (R2.10).
    #[error("{call}: {}", invalid_tag_reason(.tag))]
    InvalidTag {
        /// The call that received the tag.
        call: &'static str,
        /// The tag refused: empty, or starting with `auto:`.
        tag: String,
    },

    // ---- shapes and dtypes -----------------------------------------------------------------
    /// E3–E6: operands whose shapes do not fit the op.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}: {reason}")]
    ShapeMismatch {
        /// The op that refused its operands (`add`, `matmul`, `from_vec`, ...).
        op: &'static str,
        /// The first operand's shape (for `from_vec`, the requested shape).
        lhs: Vec<usize>,
        /// The second operand's shape (for `from_vec`, `[data length]`; for unary ops, empty).
        rhs: Vec<usize>,
        /// What rule the shapes break.
        reason: String,
    },

    /// E7: operands of different dtypes (the `rms_norm` weight included), or an
    /// [`I32`](DType::I32) operand where an op computes (or a float where it needs indices).
    #[error("{}", describe_dtype(op, *lhs, *rhs))]
    DTypeMismatch {
        /// The op that refused its operands.
        op: &'static str,
        /// The first operand's dtype.
        lhs: DType,
        /// The second operand's dtype.
        rhs: DType,
    },

    /// E8: a dtype name that is not one of `f32`, `f16`, `bf16`, `i32`.
    #[error("unknown dtype \"{name}\"; accepted names are f32, f16, bf16, i32")]
    UnknownDType {
        /// The name that was given.
        name: String,
    },

    // ---- ordering --------------------------------------------------------------------------
    /// E9: a read of a tensor whose producer does not happen-before the reading stream's current
    /// point (R3.5, R4.8, R5.2).
    #[error(
        "data race: {reader} on stream \"{reader_stream}\" reads the output of {producer} on \
         stream \"{producer_stream}\", which is not ordered before it; record a tagged event on \
         \"{producer_stream}\" after {producer} and wait on it in \"{reader_stream}\" before \
         {reader} (R3.5)"
    )]
    DataRace {
        /// The reading op (with its position when known).
        reader: String,
        /// Tag of the stream the reading op was issued on.
        reader_stream: String,
        /// The producing op (or `input N`).
        producer: String,
        /// Tag of the stream the producer was issued on.
        producer_stream: String,
    },

    /// E10: a wait in a captured graph with no earlier record of its event (R4.6).
    #[error(
        "tagged_event_wait: event \"{tag}\" is waited on stream \"{stream}\" at position \
         {position} of the graph, but has no earlier record in the graph{later}",
        later = match later_record {
            Some((s, p)) => format!(" (it is recorded later, on stream \"{s}\" at position {p})"),
            None => String::new(),
        }
    )]
    WaitWithoutRecord {
        /// The event's tag.
        tag: String,
        /// Tag of the stream the wait was issued on.
        stream: String,
        /// The wait's position in the graph.
        position: usize,
        /// A later record of the same event in the graph: (stream tag, position).
        later_record: Option<(String, usize)>,
    },

    /// E11: a cycle in the final plan of a graph (R4.7).
    #[error("deadlock: the plan has a cycle through {entries}")]
    Deadlock {
        /// The entries on the cycle, each with its stream.
        entries: String,
    },

    /// E12: a host read on a capturing thread (R4.3).
    #[error(
        "{call} is a host read and is not allowed while a graph is being captured{producer}",
        producer = match producer {
            Some(p) => format!(" (the tensor is produced by {p})"),
            None => String::new(),
        }
    )]
    HostSyncInCapture {
        /// The refused call.
        call: &'static str,
        /// For `to_vec_f32`, the op that produces the tensor.
        producer: Option<String>,
    },

    /// E13: a stream guard dropped out of LIFO order (R2.8), or scopes still open at the end of a
    /// capture (R4.11).
    #[error("{}", describe_unbalanced(dropped.as_deref(), innermost.as_deref(), open))]
    UnbalancedStreamSwitch {
        /// The tag of the guard that was dropped out of order.
        dropped: Option<String>,
        /// The tag that was innermost when it was dropped.
        innermost: Option<String>,
        /// Scopes still open (capture end), outermost first.
        open: Vec<String>,
    },

    /// E14: a graph value used outside the capture that made it.
    #[error("{op}: uses a value of graph {graph} outside the capture that made it")]
    ForeignGraphValue {
        /// The op that used the value.
        op: &'static str,
        /// Which graph the value belongs to.
        graph: String,
    },

    /// Operands on two devices, or a capture whose inputs are on two devices (R10.1, R10.7,
    /// E17). Nothing is issued.
    #[error(
        "{op}: operands are on two devices, {lhs} and {rhs}; move one with `to_device` first \
         (R10.1)"
    )]
    DeviceMismatch {
        /// The op (or `Compiled::run (inputs)`).
        op: String,
        /// The first operand's device.
        lhs: Device,
        /// The device of the first operand that differs.
        rhs: Device,
    },

    /// A device name that is not `cpu`, `cuda` or `cuda:N` (parsing, CLI).
    #[error("unknown device \"{name}\"; accepted names are cpu, cuda, cuda:N")]
    UnknownDevice {
        /// The name given.
        name: String,
    },

    /// E16, E18: a CUDA device was requested but no driver or device is available.
    #[error("no GPU: {what}")]
    NoGpu {
        /// Which library or device lookup failed.
        what: String,
    },

    /// E19: a CUDA driver, cuBLAS or NVRTC call failed.
    #[error("CUDA: {call} failed with {code} during {op} on stream \"{stream}\"")]
    Cuda {
        /// The library call (`cuLaunchKernel`, `cublasGemmEx`, `nvrtcCompileProgram`, ...).
        call: String,
        /// The CUDA error name (`CUDA_ERROR_OUT_OF_MEMORY`, ...) or the compiler log.
        code: String,
        /// The op or runtime step that made the call.
        op: String,
        /// The stream's tag (`host` for calls made outside a stream).
        stream: String,
    },

    /// A call that needs this thread's tagstream state (a scope, a compiled call) was made
    /// from a thread-local destructor after that state was destroyed.
    #[error(
        "{call}: called while this thread is exiting, after tagstream's per-thread state was \
         destroyed (from a thread-local destructor); ops issued there run on the main stream, \
         but no scope can be opened and no compiled call can run"
    )]
    ThreadExiting {
        /// The call that was refused.
        call: &'static str,
    },

    // ---- execution -------------------------------------------------------------------------
    /// An entry failed while a stream worker ran it. Inputs are validated before anything is
    /// enqueued, so this signals a bug in tagstream, reported instead of hanging or aborting.
    #[error("{op} failed on stream \"{stream}\": {message}")]
    ExecutionFailed {
        /// The op that failed.
        op: String,
        /// Tag of the stream that ran it.
        stream: String,
        /// What went wrong (a panic message or an internal invariant).
        message: String,
    },

    /// The allocator refused the memory a tensor or a graph's arena needs.
    #[error("{op}: out of memory: cannot allocate {bytes} bytes")]
    OutOfMemory {
        /// What needed the memory (`zeros`, `matmul`, `capture`, ...).
        op: String,
        /// How many bytes were requested.
        bytes: usize,
    },

    /// A value the dtype cannot hold exactly: a non-integral or out-of-range value for an
    /// [`I32`](DType::I32) tensor (`from_vec`, `full`), or a dtype a constructor cannot make
    /// (`randn` of `I32`).
    #[error("{op}: {reason}")]
    InvalidValue {
        /// The constructor or op that refused the value.
        op: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The operating system refused to start a stream worker thread.
    #[error("could not start the worker thread of stream \"{stream}\": {message}")]
    WorkerSpawn {
        /// Tag of the stream.
        stream: String,
        /// The OS error.
        message: String,
    },
}

impl Error {
    /// [`Error::ForeignGraphValue`] for `op` using a value of graph `graph` made by `made_by`
    /// (R4.1): the one place its message is built.
    pub(crate) fn foreign(op: &'static str, graph: u64, made_by: &str) -> Error {
        Error::ForeignGraphValue {
            op,
            graph: format!("#{graph} (produced by {made_by})"),
        }
    }
}

fn describe_dtype(op: &str, lhs: DType, rhs: DType) -> String {
    if lhs.is_float() && rhs.is_float() {
        format!(
            "{op}: dtype mismatch between {lhs:?} and {rhs:?}; convert one operand with \
             `to_dtype` first"
        )
    } else {
        format!(
            "{op}: dtype mismatch between {lhs:?} and {rhs:?}: I32 holds indices only (R6.1); \
             arithmetic takes F32, F16 or BF16 operands and index operands must be I32"
        )
    }
}

fn describe_unbalanced(dropped: Option<&str>, innermost: Option<&str>, open: &[String]) -> String {
    match (dropped, innermost) {
        (Some(d), Some(i)) => format!(
            "unbalanced stream_switch: the guard of \"{d}\" was dropped while \"{i}\" was the \
             innermost scope; guards must be dropped in reverse order of creation (R2.8). The \
             thread's scopes were cleared and it is back on \"default\""
        ),
        _ => {
            let tags: Vec<String> = open.iter().map(|t| format!("\"{t}\"")).collect();
            format!(
                "unbalanced stream_switch: scope(s) {} still open at the end of the capture; \
                 drop every guard before the closure returns (R4.11)",
                tags.join(", ")
            )
        }
    }
}

/// Why a tag was refused, as `InvalidTag` says it.
fn invalid_tag_reason(tag: &str) -> String {
    if tag.is_empty() {
        "the tag is empty; tags must be non-empty strings (R1.5, R2.10)".to_string()
    } else {
        format!(
            "the tag {tag:?} starts with the reserved prefix \"auto:\" (streams added by \
             auto_streams, R2.10)"
        )
    }
}
