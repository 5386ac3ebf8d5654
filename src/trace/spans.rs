//! The span buffer: what stream workers report while a timeline is being recorded.
//!
//! Owns the process-wide recording switch, the buffer workers append [`RawSpan`]s to, and the
//! labels they use. The lowest layer of timelines: backends report here; `trace` turns the
//! buffer into a [`Timeline`](super::Timeline) and owns the public API.
//!
//! *Fast path*: while recording is off, a worker pays one relaxed atomic load per entry (and per
//! replay instruction).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What kind of entry a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// A kernel.
    Op,
    /// A replay's copy of an input into the graph's static buffer.
    CopyIn,
    /// An event record (an instant: it fires when the stream reaches it).
    Record,
    /// An event wait: the span is the time the stream was blocked.
    Wait,
}

/// A label without allocating on the worker: a static name or a shared tag.
#[derive(Debug, Clone)]
pub(crate) enum Label {
    Static(&'static str),
    Tag(Arc<str>),
}

/// A span as a worker reports it (stream ids, not tags: tags are resolved at the end).
#[derive(Debug)]
pub(crate) struct RawSpan {
    pub(crate) stream: Arc<str>,
    pub(crate) kind: SpanKind,
    pub(crate) label: Label,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) position: u64,
    /// `(stream tag, position)` the wait was bound to.
    pub(crate) waits_for: Option<(Arc<str>, u64)>,
}

pub(super) static RECORDING: AtomicBool = AtomicBool::new(false);
pub(super) static SPANS: Mutex<Vec<RawSpan>> = Mutex::new(Vec::new());
/// Whether workers should report spans. One relaxed load.
#[inline]
pub(crate) fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Appends a span (called by workers only while [`recording`]).
pub(crate) fn push(span: RawSpan) {
    buffer().push(span);
}

/// The span buffer (poisoning ignored: a span list is consistent after any push).
pub(super) fn buffer() -> MutexGuard<'static, Vec<RawSpan>> {
    SPANS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turns recording on or off.
pub(super) fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::SeqCst);
}
