//! The happens-before tracker: logical streams, vector clocks, race checks, latest records.
//!
//! Owns the process-wide stream registry (tag → logical stream, R2.1–R2.2), the vector clocks of
//! R3.4 (one per stream plus the host frontier `H`), each event's latest record (R1.7–R1.10) and
//! the race check of R3.5. It executes nothing: every accepted entry is handed to a backend
//! through a `submit` callback called under the runtime's lock, so the backend's FIFO order on
//! each stream equals issue order whatever the backend (R10.2). It knows nothing of shapes,
//! buffers, kernels, scopes or devices.
//!
//! # The happens-before tracker
//! *Why this exists*: results must never depend on thread timing (R3.10), so whether a read is
//! ordered after its producer is decided when the read is issued, not observed when it runs.
//!
//! *Strategy*: every issue happens under one lock (`Runtime::state`), so issue order is a total
//! order. Issuing on stream `s` computes `V_s ⊔ H`, checks every input's producer position
//! against it (R3.5), lets the backend enqueue the entry (which may fail, e.g. a worker that
//! cannot start: then nothing changed, R3.9), then commits the ticked clock.
//!
//! *Invariant*: an accepted entry's inputs are produced by entries that hb it, so when it runs
//! they have executed: stream order, or a chain of waits each of which the backend blocks until
//! the bound record has executed.

pub(crate) mod clock;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use self::clock::VClock;
use crate::error::{Error, Result};

/// Index of a logical stream in the registry. Streams are never removed, so ids are stable.
pub(crate) type StreamId = usize;

/// The main stream's id; its tag is [`MAIN_TAG`].
pub(crate) const MAIN: StreamId = 0;

/// The reserved tag of the main stream (R2.4).
pub(crate) const MAIN_TAG: &str = "default";
/// The prefix of the streams `auto_streams` adds; refused in user scopes (R2.10).
pub(crate) const AUTO_PREFIX: &str = "auto:";

/// Where an entry sits and what it had seen when issued: `(stream, seq)` plus its clock.
#[derive(Debug)]
pub(crate) struct Position {
    pub(crate) stream: StreamId,
    pub(crate) seq: u64,
    /// The op's name (`matmul`, `tagged_event_record`, ...), for error messages.
    pub(crate) op: &'static str,
    pub(crate) clock: VClock,
}

/// What a backend is told about an entry it must enqueue: stream `stream` (tag `tag`), at
/// 1-based position `seq` of that stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Issue<'a> {
    pub(crate) stream: StreamId,
    pub(crate) tag: &'a Arc<str>,
    pub(crate) seq: u64,
}

/// The record a wait is bound to: entry `seq` of stream `stream` (tag `tag`).
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub(crate) stream: StreamId,
    pub(crate) tag: Arc<str>,
    pub(crate) seq: u64,
}

#[derive(Debug)]
struct Stream {
    tag: Arc<str>,
    clock: VClock,
}

#[derive(Debug, Default)]
struct State {
    streams: Vec<Stream>,
    by_tag: HashMap<Arc<str>, StreamId>,
    host: VClock,
    /// Latest record of each event, by event id.
    latest_record: HashMap<u64, Arc<Position>>,
}

/// The process-wide happens-before tracker.
#[derive(Debug)]
pub(crate) struct Runtime {
    state: Mutex<State>,
}

/// The runtime, created on first use.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let mut state = State::default();
        state.add_stream(MAIN_TAG);
        Runtime {
            state: Mutex::new(state),
        }
    })
}

/// Locks `m`, ignoring poisoning: every critical section validates before it mutates (R3.9),
/// so the state stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn add_stream(&mut self, tag: &str) -> StreamId {
        let id = self.streams.len();
        let tag: Arc<str> = Arc::from(tag);
        self.streams.push(Stream {
            tag: tag.clone(),
            clock: VClock::default(),
        });
        self.by_tag.insert(tag, id);
        id
    }

    fn tag(&self, s: StreamId) -> String {
        self.streams[s].tag.to_string()
    }

    /// R3.5: every producer must happen-before `start`, stream `s`'s current point.
    fn race_check(
        &self,
        s: StreamId,
        start: &VClock,
        op: &str,
        producers: &[Option<&Position>],
    ) -> Result<()> {
        for p in producers.iter().flatten() {
            if start.get(p.stream) < p.seq {
                return Err(Error::DataRace {
                    reader: op.to_string(),
                    reader_stream: self.tag(s),
                    producer: p.op.to_string(),
                    producer_stream: self.tag(p.stream),
                });
            }
        }
        Ok(())
    }

    /// `V_s ⊔ H`: the point that an entry issued now on `s` starts from (R3.4).
    fn start_point(&self, s: StreamId) -> VClock {
        let mut c = self.streams[s].clock.clone();
        c.join(&self.host);
        c
    }

    /// Lets the backend enqueue an entry at the next position of `s`, then commits `clock`
    /// (already `V_s ⊔ H ⊔ ...`) ticked as the stream's. If `submit` fails nothing changes.
    fn issue(
        &mut self,
        s: StreamId,
        mut clock: VClock,
        op: &'static str,
        submit: impl FnOnce(Issue<'_>) -> Result<()>,
    ) -> Result<Arc<Position>> {
        let seq = clock.get(s) + 1;
        let stream = &self.streams[s];
        submit(Issue {
            stream: s,
            tag: &stream.tag,
            seq,
        })?;
        clock.tick(s);
        self.streams[s].clock = clock.clone();
        Ok(Arc::new(Position {
            stream: s,
            seq,
            op,
            clock,
        }))
    }

    fn check_inputs(&self, producers: &[Option<&Arc<Position>>]) -> Result<()> {
        let main = self.start_point(MAIN);
        for (i, p) in producers.iter().enumerate() {
            if let Some(p) = p
                && main.get(p.stream) < p.seq
            {
                return Err(Error::DataRace {
                    reader: "Compiled::run (input copy-in)".into(),
                    reader_stream: MAIN_TAG.into(),
                    producer: format!("input {i} (produced by {})", p.op),
                    producer_stream: self.tag(p.stream),
                });
            }
        }
        Ok(())
    }
}

impl Runtime {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The logical stream with `tag`, registered on first use (R2.1). Backends open their
    /// physical stream when the first entry is enqueued on it.
    pub(crate) fn stream_for_tag(&self, tag: &str) -> StreamId {
        let mut st = self.state();
        match st.by_tag.get(tag) {
            Some(&id) => id,
            None => st.add_stream(tag),
        }
    }

    /// The stream with `tag` if it exists; never creates one (R4.10, SC23).
    pub(crate) fn lookup_stream(&self, tag: &str) -> Option<StreamId> {
        self.state().by_tag.get(tag).copied()
    }

    /// The tag of stream `s`.
    pub(crate) fn stream_tag(&self, s: StreamId) -> String {
        self.state().tag(s)
    }

    /// Issues an op named `op` on stream `s` that reads tensors made by `producers`.
    ///
    /// # Errors
    /// [`Error::DataRace`] if a producer does not happen-before `s`'s current point (R3.5);
    /// whatever `submit` returns. Nothing is issued then.
    pub(crate) fn issue_op(
        &self,
        s: StreamId,
        op: &'static str,
        producers: &[Option<&Position>],
        submit: impl FnOnce(Issue<'_>) -> Result<()>,
    ) -> Result<Arc<Position>> {
        let mut st = self.state();
        let start = st.start_point(s);
        st.race_check(s, &start, op, producers)?;
        st.issue(s, start, op, submit)
    }

    /// The race check of [`Runtime::issue_op`] without issuing: an op made of several entries
    /// (`cat`) checks its operands first, so a refused call issues nothing (R3.9). Clocks only
    /// grow, so a producer visible now stays visible to the entries issued next on `s`.
    ///
    /// # Errors
    /// [`Error::DataRace`] as `issue_op` would return it.
    pub(crate) fn check_readable(
        &self,
        s: StreamId,
        op: &'static str,
        producers: &[Option<&Position>],
    ) -> Result<()> {
        let st = self.state();
        st.race_check(s, &st.start_point(s), op, producers)
    }

    /// Issues a record on stream `s`. With `event`, it becomes that event's latest record
    /// (R1.7) and waits issued later bind to it; without, it belongs to no tagged event (the
    /// join of an eager compiled run, R3.11) and its position is returned for [`Runtime::wait_on`].
    pub(crate) fn record(
        &self,
        s: StreamId,
        event: Option<u64>,
        submit: impl FnOnce(Issue<'_>) -> Result<()>,
    ) -> Result<Arc<Position>> {
        let mut st = self.state();
        let start = st.start_point(s);
        let pos = st.issue(s, start, "tagged_event_record", submit)?;
        if let Some(event) = event {
            st.latest_record.insert(event, pos.clone());
        }
        Ok(pos)
    }

    /// Forgets the latest record of `event` (its last handle was dropped, so no wait can bind
    /// to it again): memory follows what is alive (R1.4 keeps only the tag).
    pub(crate) fn forget_event(&self, event: u64) {
        self.state().latest_record.remove(&event);
    }

    /// Whether `event` has a latest record (tests of what is kept alive).
    #[cfg(test)]
    pub(crate) fn has_latest_record(&self, event: u64) -> bool {
        self.state().latest_record.contains_key(&event)
    }

    /// Issues a wait on stream `s`, bound to the latest record of `event` (R1.8), or a no-op
    /// wait if it was never recorded (R1.9). `submit` gets the bound record.
    pub(crate) fn wait(
        &self,
        s: StreamId,
        event: u64,
        submit: impl FnOnce(Issue<'_>, Option<Bound>) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.state();
        let bound = st.latest_record.get(&event).cloned();
        Self::issue_wait(&mut st, s, bound.as_deref(), submit)
    }

    /// Issues a wait on stream `s` bound to the entry at `on` (closure events of a compiled
    /// run).
    pub(crate) fn wait_on(
        &self,
        s: StreamId,
        on: &Position,
        submit: impl FnOnce(Issue<'_>, Option<Bound>) -> Result<()>,
    ) -> Result<()> {
        Self::issue_wait(&mut self.state(), s, Some(on), submit)
    }

    fn issue_wait(
        st: &mut State,
        s: StreamId,
        on: Option<&Position>,
        submit: impl FnOnce(Issue<'_>, Option<Bound>) -> Result<()>,
    ) -> Result<()> {
        let mut start = st.start_point(s);
        let bound = on.map(|rec| {
            start.join(&rec.clock);
            Bound {
                stream: rec.stream,
                tag: st.streams[rec.stream].tag.clone(),
                seq: rec.seq,
            }
        });
        st.issue(s, start, "tagged_event_wait", |at| submit(at, bound))?;
        Ok(())
    }

    /// The main stream's current point as a position that a wait can bind to: waiting on it
    /// orders exactly what a record issued now on the main stream would (the fork of an eager
    /// compiled run, R3.11), without issuing an entry.
    pub(crate) fn main_point(&self) -> Arc<Position> {
        let st = self.state();
        let clock = st.start_point(MAIN);
        Arc::new(Position {
            stream: MAIN,
            seq: clock.get(MAIN),
            op: "fork",
            clock,
        })
    }

    /// R5.2: every input of a compiled call must be ready or produced by an entry that
    /// happens-before the main stream's current point.
    ///
    /// # Errors
    /// [`Error::DataRace`] naming the input index and its producer.
    pub(crate) fn check_inputs(&self, producers: &[Option<&Arc<Position>>]) -> Result<()> {
        self.state().check_inputs(producers)
    }

    /// Whether the entry at `p` happens-before the current point of the main stream or of
    /// stream `s` (used by capture for tensors made outside the graph, R4.8).
    pub(crate) fn visible_from(&self, p: &Position, s: StreamId) -> bool {
        let st = self.state();
        st.start_point(MAIN).get(p.stream) >= p.seq || st.start_point(s).get(p.stream) >= p.seq
    }

    /// Issues one replay of a captured graph at one point of the issue order: `submit` gets
    /// each batch stream's issue (its `seq` is the stream's base: entries issued on it before
    /// the replay) and enqueues the replay's work on every stream.
    ///
    /// Afterwards the clocks, the latest record of every event recorded in the graph and the
    /// returned output positions are what issuing the graph's entries one by one would have
    /// produced (R5.8).
    ///
    /// # Errors
    /// [`Error::DataRace`] if an input is not ordered before the main stream (R5.2); whatever
    /// `submit` returns. Nothing is issued then.
    pub(crate) fn issue_batch(
        &self,
        batch: &Batch<'_>,
        submit: impl FnOnce(&[Issue<'_>]) -> Result<()>,
    ) -> Result<Vec<Arc<Position>>> {
        let mut guard = self.state();
        let st = &mut *guard;
        st.check_inputs(batch.input_producers)?;
        let before: Vec<VClock> = batch
            .streams
            .iter()
            .map(|b| st.start_point(b.stream))
            .collect();
        let bases: Vec<u64> = batch
            .streams
            .iter()
            .map(|b| st.streams[b.stream].clock.get(b.stream))
            .collect();
        let issues: Vec<Issue<'_>> = batch
            .streams
            .iter()
            .zip(&bases)
            .map(|(b, &seq)| Issue {
                stream: b.stream,
                tag: &st.streams[b.stream].tag,
                seq,
            })
            .collect();
        submit(&issues)?;
        let translate = |local: &[(usize, u64)]| -> VClock {
            let mut c = VClock::default();
            for &(t, l) in local {
                if l > 0 {
                    c.join(&before[t]);
                }
            }
            for &(t, l) in local {
                if l > 0 {
                    c.raise(batch.streams[t].stream, bases[t] + l);
                }
            }
            c
        };
        for bs in batch.streams {
            // A graph with no entry on a stream (only the main stream of an empty graph)
            // leaves it untouched.
            if bs.entries > 0 {
                st.streams[bs.stream].clock = translate(bs.last_clock);
            }
        }
        let position = |at: &BatchPoint<'_>| {
            Arc::new(Position {
                stream: batch.streams[at.stream].stream,
                seq: bases[at.stream] + at.pos,
                op: at.op,
                clock: translate(at.clock),
            })
        };
        for (event, at) in batch.records {
            let pos = position(at);
            st.latest_record.insert(*event, pos);
        }
        Ok(batch.outputs.iter().map(position).collect())
    }

    /// Adds what the entry at `pos` had seen to the host frontier (R3.6); called once the host
    /// has waited for it.
    pub(crate) fn host_saw(&self, pos: &Position) {
        self.state().host.join(&pos.clock);
    }

    /// Every stream with the entries issued on it so far and its clock, for `synchronize`.
    pub(crate) fn issued(&self) -> Vec<(StreamId, u64, VClock)> {
        let st = self.state();
        st.streams
            .iter()
            .enumerate()
            .map(|(id, s)| (id, s.clock.get(id), s.clock.clone()))
            .collect()
    }

    /// Adds every clock of `seen` to the host frontier (after `synchronize` waited for them).
    pub(crate) fn host_saw_all(&self, seen: &[(StreamId, u64, VClock)]) {
        let mut st = self.state();
        for (_, _, clock) in seen {
            st.host.join(clock);
        }
    }

    /// Every stream's tag and the entries issued on it, main stream first.
    pub(crate) fn streams(&self) -> Vec<(Arc<str>, u64)> {
        let st = self.state();
        st.streams
            .iter()
            .enumerate()
            .map(|(id, s)| (s.tag.clone(), s.clock.get(id)))
            .collect()
    }
}

/// One stream's part of a [`Runtime::issue_batch`].
#[derive(Debug)]
pub(crate) struct BatchStream<'a> {
    pub(crate) stream: StreamId,
    /// Entries of the graph on this stream (its segment counts as that many positions).
    pub(crate) entries: u64,
    /// Graph-local clock of the segment's last entry: its non-zero components, indexed like
    /// `Batch::streams`.
    pub(crate) last_clock: &'a [(usize, u64)],
}

/// An entry of a batch whose eager position is wanted: `pos` is 1-based on batch stream
/// `stream`, `clock` is its graph-local clock (non-zero components).
#[derive(Debug)]
pub(crate) struct BatchPoint<'a> {
    pub(crate) stream: usize,
    pub(crate) pos: u64,
    pub(crate) clock: &'a [(usize, u64)],
    pub(crate) op: &'static str,
}

/// What [`Runtime::issue_batch`] issues and reports.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub(crate) streams: &'a [BatchStream<'a>],
    pub(crate) input_producers: &'a [Option<&'a Arc<Position>>],
    /// The last record of each tagged event recorded in the graph: `(event id, entry)`.
    pub(crate) records: &'a [(u64, BatchPoint<'a>)],
    /// Entries whose positions are returned (the producers of the outputs).
    pub(crate) outputs: &'a [BatchPoint<'a>],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R3.9: a refused submit (a backend that cannot enqueue) changes nothing: the next entry
    /// gets the same position.
    #[test]
    fn a_failed_submit_changes_nothing_r3_9() {
        let rt = runtime();
        let s = rt.stream_for_tag("runtime-test-failed-submit");
        let refused = rt.issue_op(s, "add", &[], |_| {
            Err(Error::WorkerSpawn {
                stream: "x".into(),
                message: "refused".into(),
            })
        });
        assert!(refused.is_err());
        let mut seen = 0;
        let pos = rt
            .issue_op(s, "add", &[], |at| {
                seen = at.seq;
                Ok(())
            })
            .unwrap();
        assert_eq!((seen, pos.seq), (1, 1));
    }

    /// R3.5: a read on another stream with no event between is refused, and names both sides.
    #[test]
    fn unordered_read_is_a_data_race_r3_5() {
        let rt = runtime();
        let a = rt.stream_for_tag("runtime-test-race-a");
        let b = rt.stream_for_tag("runtime-test-race-b");
        let p = rt.issue_op(a, "exp", &[], |_| Ok(())).unwrap();
        let err = rt.issue_op(b, "add", &[Some(&p)], |_| Ok(())).unwrap_err();
        assert_eq!(
            err,
            Error::DataRace {
                reader: "add".into(),
                reader_stream: "runtime-test-race-b".into(),
                producer: "exp".into(),
                producer_stream: "runtime-test-race-a".into(),
            }
        );
        // Ordered by a record and a wait, the same read is accepted (R1.8).
        let rec = rt.record(a, None, |_| Ok(())).unwrap();
        rt.wait_on(b, &rec, |_, bound| {
            assert_eq!(bound.map(|b| (b.stream, b.seq)), Some((a, rec.seq)));
            Ok(())
        })
        .unwrap();
        rt.issue_op(b, "add", &[Some(&p)], |_| Ok(())).unwrap();
    }
}
