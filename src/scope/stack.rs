//! The per-thread scope stack: the lowest layer of scopes, read by every issue path.
//!
//! Owns the thread-local stack of open scopes, the current stream of a thread, the pending
//! error of an out-of-order guard drop (R2.8) and the setting aside of a thread's scopes for a
//! compiled call (R5.1). It issues nothing and resolves no tags.
//!
//! Every access uses `try_with`: tagstream may be called from a thread-local destructor that
//! runs after this thread's stack is gone (issue path, guard drops). There the thread has no
//! open scope, so its current stream is the main stream (R2.3).

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::runtime::{MAIN, StreamId};

#[derive(Debug)]
struct Frame {
    id: u64,
    tag: String,
    stream: StreamId,
}

#[derive(Debug, Default)]
struct ScopeStack {
    frames: Vec<Frame>,
    /// Bumped when an out-of-order drop clears the stack; guards of an older epoch are inert.
    epoch: u64,
    /// The highest epoch handed out on this thread, so a stack set aside by a compiled call
    /// (R5.1) and the fresh one that replaces it never share an epoch.
    epoch_counter: u64,
    next_id: u64,
    pending: Option<Error>,
    /// Stacks set aside by compiled calls in progress (R5.1), innermost call last:
    /// `(epoch, frames)`. A guard of one of them dropped inside the call is an out-of-order drop.
    aside: Vec<(u64, Vec<Frame>)>,
}

thread_local! {
    static SCOPES: RefCell<ScopeStack> = RefCell::new(ScopeStack::default());
}

/// What dropping a guard closed.
pub(crate) enum Closed {
    /// The innermost scope, on this stream.
    Scope(StreamId),
    /// An out-of-order drop: the scopes were cleared and this error is pending (R2.8).
    OutOfOrder(Error),
    /// Nothing (an inert guard, or the thread's stack is gone).
    Nothing,
}

/// Opens a scope of `tag` (stream `stream`) on this thread: `(id, epoch)` of its guard.
///
/// # Errors
/// [`Error::ThreadExiting`] if the thread's scope stack was already destroyed.
pub(crate) fn push(tag: &str, stream: StreamId) -> Result<(u64, u64)> {
    SCOPES
        .try_with(|st| {
            let mut st = st.borrow_mut();
            let id = st.next_id;
            st.next_id += 1;
            st.frames.push(Frame {
                id,
                tag: tag.to_string(),
                stream,
            });
            (id, st.epoch)
        })
        .map_err(|_| Error::ThreadExiting {
            call: "stream_switch",
        })
}

/// The tag of the innermost open scope, `None` outside every scope.
pub(crate) fn current_tag() -> Option<String> {
    SCOPES
        .try_with(|st| st.borrow().frames.last().map(|f| f.tag.clone()))
        .ok()
        .flatten()
}

/// Closes the scope of the guard `(id, epoch, tag)` (R2.5, R2.8).
pub(crate) fn close(id: u64, epoch: u64, tag: &str) -> Closed {
    SCOPES
        .try_with(|st| {
            let mut st = st.borrow_mut();
            if st.epoch != epoch {
                // A guard of a stack set aside by a compiled call in progress (R5.1), dropped
                // inside the call: out of order. That stack is cleared, as R2.8 says.
                let aside = st.aside.iter().position(|(e, _)| *e == epoch);
                let Some(i) = aside else {
                    return Closed::Nothing; // made inert by an earlier out-of-order drop
                };
                let innermost = st.aside[i].1.last().map(|f| f.tag.clone());
                st.epoch_counter += 1;
                let fresh = st.epoch_counter;
                st.aside[i] = (fresh, Vec::new());
                let e = Error::UnbalancedStreamSwitch {
                    dropped: Some(tag.to_string()),
                    innermost,
                    open: Vec::new(),
                };
                st.pending = Some(e.clone());
                return Closed::OutOfOrder(e);
            }
            match st.frames.last() {
                Some(top) if top.id == id => st
                    .frames
                    .pop()
                    .map_or(Closed::Nothing, |f| Closed::Scope(f.stream)),
                top => {
                    let innermost = top.map(|f| f.tag.clone());
                    st.frames.clear();
                    st.epoch_counter = st.epoch_counter.max(st.epoch) + 1;
                    st.epoch = st.epoch_counter;
                    let e = Error::UnbalancedStreamSwitch {
                        dropped: Some(tag.to_string()),
                        innermost,
                        open: Vec::new(),
                    };
                    st.pending = Some(e.clone());
                    Closed::OutOfOrder(e)
                }
            }
        })
        .unwrap_or(Closed::Nothing)
}

/// The calling thread's current stream id.
pub(crate) fn current_stream_id() -> StreamId {
    SCOPES
        .try_with(|st| st.borrow().frames.last().map_or(MAIN, |f| f.stream))
        .unwrap_or(MAIN)
}

/// Returns (and clears) the error left by an out-of-order guard drop on this thread (R2.8).
/// Every `Result`-returning public call runs this first.
pub(crate) fn take_pending_error() -> Result<()> {
    match SCOPES.try_with(|st| st.borrow_mut().pending.take()) {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// A thread's scope stack, set aside for the length of a compiled call (R5.1). The frames stay
/// in the thread's scope state, so a guard of the set-aside stack dropped during the call is
/// still recognised (as an out-of-order drop, R2.8).
#[derive(Debug)]
pub(crate) struct SavedScopes {
    depth: usize,
}

/// Sets the calling thread's scopes aside: until [`restore_scopes`], the thread is on
/// `"default"` with no open scope (R5.1). Guards made meanwhile belong to a fresh epoch, so one
/// that outlives the call is inert.
///
/// # Errors
/// [`Error::ThreadExiting`] if the thread's scope stack was already destroyed.
pub(crate) fn set_aside_scopes() -> Result<SavedScopes> {
    SCOPES
        .try_with(|st| {
            let mut st = st.borrow_mut();
            st.epoch_counter = st.epoch_counter.max(st.epoch) + 1;
            let fresh = st.epoch_counter;
            let frames = std::mem::take(&mut st.frames);
            let epoch = std::mem::replace(&mut st.epoch, fresh);
            st.aside.push((epoch, frames));
            SavedScopes {
                depth: st.aside.len(),
            }
        })
        .map_err(|_| Error::ThreadExiting {
            call: "Compiled::run",
        })
}

/// Puts back the scopes of [`set_aside_scopes`] and returns the tags of the scopes that were
/// still open on the set-aside stack's replacement, outermost first (R4.11).
pub(crate) fn restore_scopes(saved: SavedScopes) -> Vec<String> {
    SCOPES
        .try_with(|st| {
            let mut st = st.borrow_mut();
            debug_assert_eq!(st.aside.len(), saved.depth, "compiled calls nest LIFO");
            let Some((epoch, frames)) = st.aside.pop() else {
                return Vec::new();
            };
            let open = std::mem::replace(&mut st.frames, frames);
            st.epoch = epoch;
            open.into_iter().map(|f| f.tag).collect()
        })
        .unwrap_or_default()
}
