//! Stream scopes: which stream the calling thread's work goes to.
//!
//! Owns the per-thread scope stack, [`stream_switch`] and its [`StreamGuard`], [`current_stream`],
//! and the per-thread pending error of an out-of-order guard drop (R2.8). It resolves tags to
//! streams through the runtime's registry but never issues work itself.
//!
//! # How the current stream is found (R2.3)
//! 1. If the thread has a live scope, the stream of the innermost one.
//! 2. Otherwise the main stream, tag `"default"` (also for every new thread, R2.3, SC38).
//!
//! Switching orders nothing (R2.7): only stream order, tagged events and host waits do.

pub(crate) mod stack;

use std::marker::PhantomData;

use self::stack::{Closed, take_pending_error};
use crate::dispatch;
use crate::error::{Error, Result};
use crate::runtime::{MAIN, MAIN_TAG, runtime};

/// Keeps a stream scope open; dropping it returns to the enclosing scope's stream (R2.5).
///
/// Guards must be dropped in reverse order of creation (R2.6), which plain `let` bindings in
/// nested blocks do automatically. A guard dropped out of order clears the thread's scopes and
/// leaves an [`Error::UnbalancedStreamSwitch`] that the thread's next tagstream call returns
/// (R2.8).
///
/// The scope stack is per thread, so a guard is `!Send` and `!Sync` (R2.9, SC32):
///
/// ```compile_fail
/// let guard = tagstream::scope::stream_switch("1").unwrap();
/// std::thread::spawn(move || drop(guard)); // error: `*const ()` cannot be sent between threads
/// ```
#[derive(Debug)]
#[must_use = "the scope ends when the guard is dropped; bind it with `let _guard = ...`"]
pub struct StreamGuard {
    id: u64,
    epoch: u64,
    tag: String,
    _not_send: PhantomData<*const ()>,
}

/// Sends the calling thread's ops, records and waits to the stream tagged `tag` until the
/// returned guard is dropped (R2.5). The first switch to a new tag creates its stream, which
/// lives until the process exits (R2.1); `"default"` is the main stream (R2.4).
///
/// ```
/// use tagstream::scope::{current_stream, stream_switch};
/// assert_eq!(current_stream(), "default");
/// {
///     let _g = stream_switch("side")?;
///     assert_eq!(current_stream(), "side");
///     {
///         let _m = stream_switch("default")?; // main-stream work from inside a side scope
///         assert_eq!(current_stream(), "default");
///     }
///     assert_eq!(current_stream(), "side");
/// }
/// assert_eq!(current_stream(), "default");
/// # Ok::<(), tagstream::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidTag`] for an empty tag (no scope is entered, R2.10); a pending
/// [`Error::UnbalancedStreamSwitch`] of this thread; [`Error::WorkerSpawn`] if the OS refuses
/// the new stream's thread.
pub fn stream_switch(tag: &str) -> Result<StreamGuard> {
    take_pending_error()?;
    if tag.is_empty() {
        return Err(Error::InvalidTag {
            call: "stream_switch",
        });
    }
    let stream = runtime().stream_for_tag(tag); // "default" is registered as the main stream
    if stream != MAIN {
        // The fork wait of a compiled run's event closure (R4.4 b, R3.11), if one is running.
        dispatch::scope_enter(stream)?;
    }
    let (id, epoch) = stack::push(tag, stream)?;
    Ok(StreamGuard {
        id,
        epoch,
        tag: tag.to_string(),
        _not_send: PhantomData,
    })
}

/// The tag of the calling thread's current stream: the innermost live scope's, or `"default"`.
///
/// Never fails: on a thread whose tagstream state is gone (a thread-local destructor), the
/// thread has no open scope, so the answer is the main stream.
pub fn current_stream() -> String {
    stack::current_tag().unwrap_or_else(|| MAIN_TAG.to_string())
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        match stack::close(self.id, self.epoch, &self.tag) {
            // The join record of a compiled run's event closure (R4.4 c), if one is running.
            Closed::Scope(stream) if stream != MAIN => dispatch::scope_exit(stream),
            // A capture fails even if the closure swallows the pending error (R2.8).
            Closed::OutOfOrder(e) => dispatch::unbalanced(e),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_lifo() {
        let a = stream_switch("scope-test-a").unwrap();
        let b = stream_switch("scope-test-b").unwrap();
        assert_eq!(current_stream(), "scope-test-b");
        drop(b);
        assert_eq!(current_stream(), "scope-test-a");
        drop(a);
        assert_eq!(current_stream(), "default");
        take_pending_error().unwrap();
    }

    #[test]
    fn out_of_order_drop_is_reported_once_r2_8() {
        let g1 = stream_switch("scope-test-1").unwrap();
        let g2 = stream_switch("scope-test-2").unwrap();
        drop(g1);
        assert_eq!(current_stream(), "default");
        let err = take_pending_error().unwrap_err();
        assert_eq!(
            err,
            Error::UnbalancedStreamSwitch {
                dropped: Some("scope-test-1".into()),
                innermost: Some("scope-test-2".into()),
                open: vec![],
            }
        );
        drop(g2); // inert
        assert_eq!(current_stream(), "default");
        take_pending_error().unwrap();
    }
}
