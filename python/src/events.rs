//! Tagged events, stream scopes as context managers, `current_stream` and `synchronize`.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use tagstream::ops::{self, TaggedEvent};
use tagstream::scope::{self, StreamGuard};

use crate::errors::{OrRaise, py_error};
use crate::tensor::PyTensor;

/// A process-unique tagged event (torchair's `npu_create_tagged_event`).
#[pyclass(frozen, eq, module = "tagstream", name = "TaggedEvent")]
#[derive(PartialEq)]
pub(crate) struct PyTaggedEvent {
    inner: TaggedEvent,
}

#[pymethods]
impl PyTaggedEvent {
    /// The event's tag.
    #[getter]
    fn tag(&self) -> &str {
        self.inner.tag()
    }

    fn __repr__(&self) -> String {
        format!("TaggedEvent(tag={:?})", self.inner.tag())
    }
}

/// Creates the event tagged `tag`; a tag can be created once per process (`TagInUseError`).
#[pyfunction]
pub(crate) fn create_tagged_event(tag: &str) -> PyResult<PyTaggedEvent> {
    Ok(PyTaggedEvent {
        inner: ops::create_tagged_event(tag).or_raise()?,
    })
}

/// Records `event` on the current stream: later waits on it wait for the work issued before.
#[pyfunction]
pub(crate) fn tagged_event_record(event: PyRef<'_, PyTaggedEvent>) -> PyResult<()> {
    ops::tagged_event_record(&event.inner).or_raise()
}

/// Makes the current stream wait for the latest record of `event`.
#[pyfunction]
pub(crate) fn tagged_event_wait(event: PyRef<'_, PyTaggedEvent>) -> PyResult<()> {
    ops::tagged_event_wait(&event.inner).or_raise()
}

/// Marks `tensor` as used by the stream tagged `tag` (accepted for torchair compatibility;
/// tagstream keeps tensors alive while any stream uses them anyway).
#[pyfunction]
pub(crate) fn record_tagged_stream(tensor: PyRef<'_, PyTensor>, tag: &str) -> PyResult<()> {
    ops::record_tagged_stream(&tensor.inner, tag).or_raise()
}

/// The tag of the calling thread's current stream (`"default"` outside every scope).
#[pyfunction]
pub(crate) fn current_stream() -> String {
    scope::current_stream()
}

/// Waits until every stream has finished all enqueued work (the GIL is released meanwhile).
#[pyfunction]
pub(crate) fn synchronize(py: Python<'_>) -> PyResult<()> {
    py.detach(tagstream::synchronize).or_raise()
}

// ---- stream_switch ------------------------------------------------------------------------

/// The open guards of this thread, by token. A `StreamGuard` is `!Send`, so it stays on the
/// thread that made it; the Python object only holds tokens.
#[derive(Default)]
struct Guards(Vec<(u64, StreamGuard)>);

impl Drop for Guards {
    fn drop(&mut self) {
        // A scope never exited when its thread ends: its guard is forgotten rather than
        // dropped during thread-local destruction (the thread's scope stack dies with it).
        for (_, g) in self.0.drain(..) {
            std::mem::forget(g);
        }
    }
}

thread_local! {
    static GUARDS: RefCell<Guards> = RefCell::new(Guards::default());
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A small id of the calling thread (never 0).
pub(crate) fn thread_token() -> u64 {
    THREAD.with(|t| *t)
}

/// `with tagstream.scope.stream_switch("1"):` sends the ops of the block to the stream tagged
/// `"1"`. The scope belongs to the thread that entered it; leaving it on another thread raises
/// `UnbalancedStreamSwitchError`.
#[pyclass(frozen, module = "tagstream", name = "StreamSwitch")]
pub(crate) struct StreamSwitch {
    tag: String,
    /// (token, thread) of each open entry, innermost last.
    open: Mutex<Vec<(u64, u64)>>,
}

#[pymethods]
impl StreamSwitch {
    #[new]
    fn new(tag: String) -> Self {
        StreamSwitch {
            tag,
            open: Mutex::new(Vec::new()),
        }
    }

    /// The stream tag.
    #[getter]
    fn tag(&self) -> &str {
        &self.tag
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let me = slf.get();
        let guard = scope::stream_switch(&me.tag).or_raise()?;
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        GUARDS.with_borrow_mut(|g| g.0.push((token, guard)));
        me.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((token, thread_token()));
        Ok(slf.clone())
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        let me = thread_token();
        let token = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.iter().rposition(|&(_, t)| t == me) {
                Some(i) => open.remove(i).0,
                None if open.is_empty() => {
                    return Err(py_error(
                        py,
                        "UnbalancedStreamSwitchError",
                        format!(
                            "stream_switch(\"{}\") exited without being entered",
                            self.tag
                        ),
                    ));
                }
                None => {
                    return Err(py_error(
                        py,
                        "UnbalancedStreamSwitchError",
                        format!(
                            "stream_switch(\"{}\") is exited on a thread that did not enter it; \
                             a stream scope belongs to the thread that entered it (R2.9)",
                            self.tag
                        ),
                    ));
                }
            }
        };
        let guard = GUARDS.with_borrow_mut(|g| {
            let i = g.0.iter().position(|(t, _)| *t == token)?;
            Some(g.0.remove(i).1)
        });
        // Dropping out of order leaves Rust's pending UnbalancedStreamSwitch error (R2.8),
        // which the thread's next tagstream call raises.
        drop(guard);
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("stream_switch({:?})", self.tag)
    }
}

/// A context manager that sends the ops of its block to the stream tagged `tag`.
#[pyfunction]
pub(crate) fn stream_switch(tag: String) -> StreamSwitch {
    StreamSwitch::new(tag)
}
