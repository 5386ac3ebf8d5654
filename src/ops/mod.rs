//! The tagged-event API (semantics §1) and the op description shared by every execution path.
//!
//! Owns [`TaggedEvent`], the process-wide event-tag registry, and the public calls
//! [`create_tagged_event`], [`tagged_event_record`], [`tagged_event_wait`] and
//! [`record_tagged_stream`]. Records and waits are issued on the calling thread's current stream
//! (R2.3) through the runtime; this module never touches clocks or workers itself.
//!
//! ```
//! use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
//! use tagstream::scope::stream_switch;
//! use tagstream::{DType, Tensor};
//!
//! let ev = create_tagged_event("doc-ops-example")?;
//! let x = Tensor::full(&[4, 4], 2.0, DType::F32)?;
//! let y = x.exp()?;                       // main stream
//! tagged_event_record(&ev)?;              // main stream: "everything so far"
//! let z = {
//!     let _s = stream_switch("doc-side")?;
//!     tagged_event_wait(&ev)?;            // side stream waits for the record
//!     y.mul(&y)?                          // so it may read `y`
//! };
//! let y0 = y.to_vec_f32()?[0];
//! assert_eq!(z.to_vec_f32()?[0], y0 * y0);
//! # Ok::<(), tagstream::Error>(())
//! ```

pub(crate) mod op;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::dispatch;
use crate::error::{Error, Result};
use crate::runtime::runtime;
use crate::scope::stack::take_pending_error;
use crate::tensor::handle::Tensor;

/// A process-unique event, created by [`create_tagged_event`] (R1.6).
///
/// Cheap to clone; all clones denote the same event. `Send + Sync`, so a closure that owns it
/// can run on any thread. There is no other way to make an event, so only tagged events can be
/// recorded or waited on.
#[derive(Clone)]
pub struct TaggedEvent {
    inner: Arc<EventInner>,
}

struct EventInner {
    tag: Arc<str>,
    id: u64,
}

impl Drop for EventInner {
    fn drop(&mut self) {
        // The last handle is gone: no wait can bind to this event again, so its latest record
        // (a position and a full vector clock) is freed; only the tag stays reserved (R1.4).
        runtime().forget_event(self.id);
    }
}

impl TaggedEvent {
    /// The tag given at creation.
    pub fn tag(&self) -> &str {
        &self.inner.tag
    }
}

impl fmt::Debug for TaggedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaggedEvent")
            .field("tag", &self.inner.tag)
            .finish()
    }
}

impl PartialEq for TaggedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}
impl Eq for TaggedEvent {}

fn registry() -> &'static Mutex<HashSet<String>> {
    static REGISTRY: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Creates the event with `tag` and registers the tag for the rest of the process (R1.1–R1.4).
///
/// The check and the insert are one atomic step: of N threads creating the same tag at once,
/// exactly one succeeds (R1.3). Event tags and stream tags are separate namespaces (R1.1).
///
/// Create events once, outside a closure given to [`compile`](crate::compile()): the closure
/// runs again for each capture, and its second `create_tagged_event` of the same tag fails (see
/// [`compile`](crate::compile()#create-tagged-events-outside-the-closure)).
///
/// # Errors
/// [`Error::TagInUse`] if the tag was ever created before in this process (the existing event is
/// unaffected); [`Error::InvalidTag`] for the empty tag (R1.5).
pub fn create_tagged_event(tag: &str) -> Result<TaggedEvent> {
    take_pending_error()?;
    if tag.is_empty() {
        return Err(Error::InvalidTag {
            call: "create_tagged_event",
            tag: String::new(),
        });
    }
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    if !reg.insert(tag.to_string()) {
        return Err(Error::TagInUse {
            tag: tag.to_string(),
        });
    }
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Ok(TaggedEvent {
        inner: Arc::new(EventInner {
            tag: Arc::from(tag),
            id,
        }),
    })
}

/// Records `ev` on the calling thread's current stream (R1.7): waits issued later bind to this
/// record and order their stream after everything that happens-before it.
///
/// # Errors
/// A pending [`Error::UnbalancedStreamSwitch`] of this thread.
pub fn tagged_event_record(ev: &TaggedEvent) -> Result<()> {
    dispatch::record(ev.inner.id, &ev.inner.tag)
}

/// Makes the calling thread's current stream wait for the latest record of `ev` (R1.8).
///
/// Work issued on this stream after the wait starts only after that record has executed, and may
/// read every tensor produced before it. A wait on a never-recorded event is a no-op (R1.9).
///
/// # Errors
/// A pending [`Error::UnbalancedStreamSwitch`] of this thread. In a capture, a wait with no
/// earlier record of `ev` in the graph makes the capture fail with
/// [`Error::WaitWithoutRecord`] when the closure returns (R4.6).
pub fn tagged_event_wait(ev: &TaggedEvent) -> Result<()> {
    dispatch::wait(ev.inner.id, &ev.inner.tag)
}

/// Declares that stream `tag` uses `tensor` (torchair's `npu_record_tagged_stream`).
///
/// Accepted for compatibility and never needed. In eager code a buffer already lives until the
/// last handle is dropped and the last entry using it has run (R3.8), so this is a no-op and
/// creates no stream (SC23). In a capture it keeps the value's memory from being shared until
/// the end of `tag`'s work in the graph (R4.10); `"default"` is the main stream, and a tag
/// with no work in the graph makes it a no-op.
///
/// # Errors
/// [`Error::InvalidTag`] for an empty tag; a pending [`Error::UnbalancedStreamSwitch`].
pub fn record_tagged_stream(tensor: &Tensor, tag: &str) -> Result<()> {
    take_pending_error()?;
    if tag.is_empty() {
        return Err(Error::InvalidTag {
            call: "record_tagged_stream",
            tag: String::new(),
        });
    }
    dispatch::record_stream(tensor, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory follows what is alive (R1.4 keeps only the tag): once the last handle of an event
    /// is dropped, its latest record (a position and a vector clock) is freed, also when a
    /// clone outlived the first handle.
    #[test]
    fn dropping_the_last_handle_frees_the_latest_record() {
        let ev = create_tagged_event("ops-unit-freed").unwrap();
        let id = ev.inner.id;
        tagged_event_record(&ev).unwrap();
        assert!(runtime().has_latest_record(id));
        let clone = ev.clone();
        drop(ev);
        assert!(
            runtime().has_latest_record(id),
            "a clone still holds the event"
        );
        drop(clone);
        assert!(!runtime().has_latest_record(id));
        // The tag stays reserved (R1.4).
        assert!(matches!(
            create_tagged_event("ops-unit-freed"),
            Err(Error::TagInUse { .. })
        ));
    }
}
