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
use crate::runtime::{AUTO_PREFIX, MAIN, MAIN_TAG, runtime};

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
/// Bind the guard to a name: `let _ = stream_switch("1")?;` drops it at once, and the ops that
/// follow run on the enclosing stream. [`with_stream`] takes a closure instead and cannot be
/// misused that way; rustc's `let_underscore_drop` lint (allowed by default) flags the line.
///
/// # Errors
/// [`Error::InvalidTag`] for an empty tag or one starting with `auto:` (no scope is entered,
/// R2.10); a pending
/// [`Error::UnbalancedStreamSwitch`] of this thread; [`Error::ThreadExiting`] on a thread whose
/// tagstream state is already destroyed; [`Error::WorkerSpawn`] if the OS refuses the fork wait's
/// stream thread in a compiled eager run.
pub fn stream_switch(tag: &str) -> Result<StreamGuard> {
    take_pending_error()?;
    // `auto:` streams belong to the assigner (R2.10): a user scope there would interleave
    // with work the user never wrote on it.
    if tag.is_empty() || tag.starts_with(AUTO_PREFIX) {
        return Err(Error::InvalidTag {
            call: "stream_switch",
            tag: tag.to_string(),
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

/// Runs `f` with the calling thread's ops, records and waits sent to the stream tagged `tag`, and
/// closes the scope when `f` returns, fails or panics: [`stream_switch`] without a guard to
/// bind. Returns what `f` returns.
///
/// Prefer it where a guard could be dropped by mistake: `let _ = stream_switch("1")?;` compiles
/// but drops the guard at once, so the ops that follow run on the enclosing stream (`let _`
/// binds nothing; `let _guard = ...` keeps it alive to the end of the block). rustc's
/// `let_underscore_drop` lint (allowed by default; `#![warn(let_underscore_drop)]` in a crate
/// root turns it on) flags that line.
///
/// ```
/// use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
/// use tagstream::scope::{current_stream, with_stream};
/// use tagstream::{DType, Tensor};
///
/// let ev = create_tagged_event("with-stream-doc")?;
/// let x = Tensor::full(&[2, 2], 1.0, DType::F32)?;
/// let y = x.exp()?; // main stream
/// tagged_event_record(&ev)?;
/// let z = with_stream("with-stream-doc-side", || {
///     assert_eq!(current_stream(), "with-stream-doc-side");
///     tagged_event_wait(&ev)?; // orders the read of `y` after the main stream's exp
///     y.add(&x)
/// })?;
/// assert_eq!(current_stream(), "default"); // the scope closed when the closure returned
/// assert_eq!(z.to_vec_f32()?, vec![1.0f32.exp() + 1.0; 4]);
/// # Ok::<(), tagstream::Error>(())
/// ```
///
/// # Errors
/// Those of [`stream_switch`] (then `f` does not run), and whatever `f` returns.
pub fn with_stream<R>(tag: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    // Dropped when `f` returns or unwinds, after any guard `f` made and dropped itself.
    let _guard = stream_switch(tag)?;
    f()
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

    #[test]
    fn with_stream_closes_the_scope_on_return_error_and_panic() {
        let tag = "scope-test-with";
        let v = with_stream(tag, || Ok(current_stream())).unwrap();
        assert_eq!((v.as_str(), current_stream().as_str()), (tag, "default"));

        let err = with_stream(tag, || -> Result<()> {
            assert_eq!(current_stream(), tag);
            Err(Error::InvalidTag {
                call: "test",
                tag: String::new(),
            })
        })
        .unwrap_err();
        assert_eq!(
            err,
            Error::InvalidTag {
                call: "test",
                tag: String::new()
            }
        );
        assert_eq!(current_stream(), "default");

        let panicked = std::panic::catch_unwind(|| {
            with_stream(tag, || -> Result<()> {
                let _inner = stream_switch("scope-test-with-inner")?;
                panic!("boom")
            })
        });
        assert!(panicked.is_err());
        assert_eq!(current_stream(), "default");
        take_pending_error().unwrap(); // the guards unwound in order: nothing pending

        // An empty tag enters no scope and never calls the closure (R2.10).
        let mut called = false;
        let err = with_stream("", || {
            called = true;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(
            (err, called),
            (
                Error::InvalidTag {
                    call: "stream_switch",
                    tag: String::new()
                },
                false
            )
        );
    }
}
