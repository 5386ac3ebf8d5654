//! The memory planner: gives every value of a captured graph a byte offset in one arena (R4.9);
//! it knows nothing of tensors, streams or kernels.
//!
//! Owns [`plan_memory`], its input ([`ValueLife`], [`EntryRef`]) and output ([`MemoryPlan`]),
//! the compact per-stream vector clocks of a graph ([`StreamClocks`]) and [`ClockOracle`], their
//! answer to [`HappensBefore`], and the checked byte sums of a capture ([`total_bytes`]). It sees
//! values only as byte counts with one writing entry and some reading entries, and entries only
//! as (stream, position) pairs; it never allocates the arena, issues work or checks that the
//! graph itself is ordered.
//!
//! *Why this exists*: a replayed graph must not allocate per op, yet one buffer per value wastes
//! memory on every short-lived intermediate. Two values may share bytes only if every use of one
//! strictly happens-before the write of the other (a value with no use counts its write as its
//! use); on several streams that is a question for the happens-before oracle, never issue order.
//!
//! *Strategy*: greedy over the values in input order (the issue order of their writes, which is
//! what makes reuse likely; safety does not depend on it). Each slot is a byte range holding a
//! chain of values; a value may join a slot when every *end* (its write and all its uses) of the
//! slot's last occupant strictly happens-before the value's write. Among the slots it may join it
//! takes the smallest one already big enough, else the largest one (growing it), else opens a new
//! slot; ties go to the older slot. Zero-byte values take no slot and get offset 0. A slot's size
//! is the largest of its occupants, rounded to [`ALIGN`]; offsets are prefix sums of slot sizes.
//!
//! *Invariant*: any two values with overlapping bytes sit in one slot, and the earlier one's ends
//! all strictly happen-before the later one's write. Checking only the last occupant suffices:
//! if a slot holds `o1, o2, ..., ok` and `v` joins, each join checked `ends(oi) hb write(oi+1)`,
//! and since an occupant's write is one of its ends, `write(oi+1) hb write(oi+2) hb ... hb
//! write(v)`; hb is transitive, so every end of every occupant hb `write(v)`. Checking only the
//! latest end on each stream suffices too: an earlier end on the same stream hb the latest one
//! (stream order is part of hb), so it hb `write(v)` by transitivity. This does not rely on uses
//! following their write (a reader is ordered after its producer in a real graph, R3.5, where
//! the extra write check is implied by any use and costs no sharing), so unordered uses and
//! values with no reader are safe. Each slot is no larger than the sum of its occupants, hence
//! `arena_bytes <= value_bytes`. The output depends only on the input, so it is deterministic.
//!
//! *Fast path* (values in issue order, as a capture gives them): instead of asking every slot
//! for every value (O(values × slots) oracle calls, quadratic when many values are alive), each
//! slot occupancy computes, for each stream that can ever see its ends, the first position on
//! that stream from which the occupant is dead ([`ClockOracle::first_after`]; clocks only grow
//! along a stream, so it stays dead from there on), and is queued on that stream. A value written
//! at `(s, p)` moves the slots queued on `s` up to `p` into `s`'s free set (ordered by size) and
//! takes the best fit there: the same choice as asking every slot, in O(log) per queue move.
//! Inputs whose writes go back on some stream take the plain scan, which is equally safe.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::error::{Error, Result};

/// An entry of the graph: stream index and 1-based position on that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EntryRef {
    /// Index of the stream the entry was issued on.
    pub(crate) stream: usize,
    /// 1-based position of the entry on its stream.
    pub(crate) pos: u64,
}

/// One value to place.
#[derive(Debug, Clone)]
pub(crate) struct ValueLife {
    /// Size of the value in bytes (rounded up to [`ALIGN`] when placed).
    pub(crate) bytes: usize,
    /// The one entry that writes the value.
    pub(crate) write: EntryRef,
    /// Entries that read the value, in any order; may be empty or repeat an entry. Only the
    /// latest one on each stream matters (see the module docs), so a capture keeps just those.
    pub(crate) uses: Vec<EntryRef>,
}

/// Strict happens-before between entries of one graph.
///
/// Implementations must be a strict partial order (irreflexive: no entry hb itself; and
/// transitive) that contains stream order (an entry hb every later entry of its stream). The
/// planner's safety argument relies on both.
pub(crate) trait HappensBefore {
    /// Whether `a` strictly happens-before `b`.
    fn hb(&self, a: EntryRef, b: EntryRef) -> bool;
}

/// Where every value lives in the arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryPlan {
    /// Byte offset of each value in the arena, in the order of the input slice; every offset is a multiple of ALIGN.
    pub(crate) offsets: Vec<usize>,
    /// Total arena size in bytes (`offsets[i] + bytes[i] <= arena_bytes`).
    pub(crate) arena_bytes: usize,
    /// Sum of all value sizes (each rounded up to ALIGN).
    pub(crate) value_bytes: usize,
    /// Number of distinct slots.
    pub(crate) slots: usize,
}

/// Alignment in bytes of every offset and slot size.
pub(crate) const ALIGN: usize = 64;

/// The sum of `sizes`, each rounded up to [`ALIGN`] when `align`; `None` if it overflows
/// `usize`. Every byte total of a capture goes through here: a graph whose values need more
/// bytes than the address space holds is refused with [`Error::OutOfMemory`], never a panic
/// or a wrapped sum (see [`too_large`]).
pub(crate) fn total_bytes(sizes: impl IntoIterator<Item = usize>, align: bool) -> Option<usize> {
    sizes.into_iter().try_fold(0usize, |acc, b| {
        let b = if align {
            b.checked_next_multiple_of(ALIGN)?
        } else {
            b
        };
        acc.checked_add(b)
    })
}

/// The error for a capture whose byte total overflows `usize`: no allocator can satisfy it.
pub(crate) fn too_large(what: &str) -> Error {
    Error::OutOfMemory {
        op: format!("capture ({what} need more than usize::MAX bytes in all)"),
        bytes: usize::MAX,
    }
}

/// The vector clocks of the entries of one graph stream, stored by change points.
///
/// Entry `(s, p)` has clock component `s` equal to `p` (its own position), and every other
/// component changes only at a wait (a join with the bound record's clock). So instead of one
/// dense clock per entry (8 bytes × streams each), a stream keeps, per other stream `t` whose
/// component is ever non-zero, the positions where component `t` grows and its new value.
/// A lookup is two binary searches; memory follows the number of waits, not entries × streams.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamClocks {
    /// This stream's index in the graph.
    stream: usize,
    /// Number of entries.
    len: u64,
    /// `(t, points)` sorted by `t`, `t` never this stream: from entry `pos` on, component `t`
    /// is `value`; both strictly increase along `points`.
    changes: Vec<(usize, Vec<(u64, u64)>)>,
}

impl StreamClocks {
    /// The clocks of graph stream `stream`, with no entries yet.
    pub(crate) fn new(stream: usize) -> Self {
        StreamClocks {
            stream,
            ..StreamClocks::default()
        }
    }

    /// Number of entries on the stream.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends an entry; returns its position.
    pub(crate) fn push(&mut self) -> u64 {
        self.len += 1;
        self.len
    }

    fn points(&self, t: usize) -> Option<&[(u64, u64)]> {
        let i = self.changes.binary_search_by_key(&t, |c| c.0).ok()?;
        Some(&self.changes[i].1)
    }

    /// Component `t` of entry `pos`'s clock (0 for a position that is not an entry).
    pub(crate) fn component(&self, pos: u64, t: usize) -> u64 {
        if pos == 0 || pos > self.len {
            return 0;
        }
        if t == self.stream {
            return pos;
        }
        let Some(points) = self.points(t) else {
            return 0;
        };
        match points.partition_point(|&(p, _)| p <= pos) {
            0 => 0,
            n => points[n - 1].1,
        }
    }

    /// Raises component `t` to `value` from entry `pos` on (for a wait at `pos`, which must be
    /// at or after every earlier change). Returns whether it grew.
    pub(crate) fn raise(&mut self, pos: u64, t: usize, value: u64) -> bool {
        if t == self.stream {
            return false;
        }
        let i = match self.changes.binary_search_by_key(&t, |c| c.0) {
            Ok(i) => i,
            Err(i) => {
                self.changes.insert(i, (t, Vec::new()));
                i
            }
        };
        let points = &mut self.changes[i].1;
        match points.last_mut() {
            Some(last) if last.1 >= value => return false,
            Some(last) if last.0 == pos => last.1 = value,
            _ => points.push((pos, value)),
        }
        true
    }

    /// The non-zero components of entry `pos`'s clock, own component included.
    pub(crate) fn sparse(&self, pos: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let own = (pos >= 1 && pos <= self.len).then_some((self.stream, pos));
        let others = self
            .changes
            .iter()
            .map(move |&(t, _)| (t, self.component(pos, t)));
        own.into_iter().chain(others).filter(|&(_, v)| v > 0)
    }

    /// Entry `pos`'s clock as a dense vector indexed by stream, `streams` components at least.
    pub(crate) fn dense(&self, pos: u64, streams: usize) -> Vec<u64> {
        let mut clock = vec![0; streams];
        for (t, v) in self.sparse(pos) {
            if clock.len() <= t {
                clock.resize(t + 1, 0);
            }
            clock[t] = v;
        }
        clock
    }

    /// The dense clock of the stream's last entry (empty for an empty stream), indexed by
    /// stream up to the highest non-zero component. Built on each call; nothing is cached.
    pub(crate) fn last_dense(&self) -> Vec<u64> {
        match self.len {
            0 => Vec::new(),
            n => self.dense(n, 0),
        }
    }

    /// The first position whose component `t` is at least `value` (`None` if none is).
    fn first_reaching(&self, t: usize, value: u64) -> Option<u64> {
        if t == self.stream {
            return (value <= self.len).then_some(value.max(1));
        }
        let points = self.points(t)?;
        let i = points.partition_point(|&(_, v)| v < value);
        points.get(i).map(|&(p, _)| p)
    }

    /// Inserts an entry at position `at` (1-based): later entries move up by one. The caller
    /// fixes the components of other streams that counted this stream's entries.
    pub(crate) fn insert_at(&mut self, at: u64) {
        self.len += 1;
        for (_, points) in &mut self.changes {
            for (p, _) in points.iter_mut() {
                if *p >= at {
                    *p += 1;
                }
            }
        }
    }

    /// Drops the spare capacity of the change lists.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.changes.shrink_to_fit();
        for (_, points) in &mut self.changes {
            points.shrink_to_fit();
        }
    }

    /// Bytes this stream's clocks hold on the heap.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let pair = std::mem::size_of::<(u64, u64)>();
        let list = std::mem::size_of::<(usize, Vec<(u64, u64)>)>();
        self.changes.capacity() * list
            + self
                .changes
                .iter()
                .map(|c| c.1.capacity() * pair)
                .sum::<usize>()
    }
}

#[cfg(test)]
thread_local! {
    /// Oracle questions asked on this thread (for the work-counting tests).
    static ORACLE_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
pub(crate) fn oracle_calls() -> u64 {
    ORACLE_CALLS.with(std::cell::Cell::get)
}

fn count_call() {
    #[cfg(test)]
    ORACLE_CALLS.with(|c| c.set(c.get() + 1));
}

/// hb from the graph's vector clocks: `clock(b)[t]` is the highest position on stream `t`
/// that happens-before-or-equals `b` (so `clock(b)[b.stream] = b.pos`), and
/// `a hb b  iff  a != b && clock(b)[a.stream] >= a.pos`.
///
/// An entry with position 0 or out of range (no such stream or position) is not an entry of
/// the graph: nothing hb it and it hb nothing.
#[derive(Debug)]
pub(crate) struct ClockOracle<'a> {
    /// `clocks[stream]`: the clocks of that graph stream's entries.
    pub(crate) clocks: &'a [StreamClocks],
}

impl ClockOracle<'_> {
    fn is_entry(&self, e: EntryRef) -> bool {
        e.pos >= 1 && self.clocks.get(e.stream).is_some_and(|c| e.pos <= c.len)
    }

    /// The first position `p` on stream `s` such that `e` hb `(s, p)`, if any (every later
    /// position then qualifies too: clocks only grow along a stream).
    pub(crate) fn first_after(&self, e: EntryRef, s: usize) -> Option<u64> {
        count_call();
        if !self.is_entry(e) {
            return None;
        }
        let clocks = self.clocks.get(s)?;
        let p = if e.stream == s {
            e.pos + 1
        } else {
            clocks.first_reaching(e.stream, e.pos)?
        };
        (p <= clocks.len).then_some(p)
    }
}

impl HappensBefore for ClockOracle<'_> {
    fn hb(&self, a: EntryRef, b: EntryRef) -> bool {
        count_call();
        if a == b || !self.is_entry(a) || !self.is_entry(b) {
            return false;
        }
        self.clocks[b.stream].component(b.pos, a.stream) >= a.pos
    }
}

/// A byte range of the arena and the value that last joined it.
#[derive(Debug)]
struct Slot {
    /// Largest occupant, rounded to [`ALIGN`]; never 0 once the slot holds a value.
    size: usize,
    /// Index (into the input) of the last occupant.
    last: usize,
    /// Bumped at each new occupant: queue and free-set entries of older ones are stale.
    generation: u64,
}

/// The latest end (the write or a use) of `value` on each stream it touches, into `ends`.
fn latest_ends_into(value: &ValueLife, ends: &mut Vec<EntryRef>) {
    ends.clear();
    for e in std::iter::once(value.write).chain(value.uses.iter().copied()) {
        match ends.iter_mut().find(|x| x.stream == e.stream) {
            Some(x) => x.pos = x.pos.max(e.pos),
            None => ends.push(e),
        }
    }
}

/// As [`latest_ends_into`], in a new vector.
fn latest_ends(value: &ValueLife) -> Vec<EntryRef> {
    let mut ends = Vec::with_capacity(1 + value.uses.len());
    latest_ends_into(value, &mut ends);
    ends
}

/// Places every value in one arena; see the module docs for the strategy and its invariant.
///
/// # Errors
/// [`Error::OutOfMemory`] if the sum of the rounded value sizes overflows `usize`.
pub(crate) fn try_plan_memory(values: &[ValueLife], hb: &ClockOracle<'_>) -> Result<MemoryPlan> {
    let value_bytes =
        total_bytes(values.iter().map(|v| v.bytes), true).ok_or_else(|| too_large("its values"))?;
    let mut last_pos = vec![0u64; hb.clocks.len()];
    let in_order = values.iter().all(|v| {
        let ok = hb.is_entry(v.write) && last_pos[v.write.stream] <= v.write.pos;
        if ok {
            last_pos[v.write.stream] = v.write.pos;
        }
        ok
    });
    let (slot_of, slots) = match in_order {
        true => place_queued(values, hb),
        false => place_scan(values, hb),
    };
    Ok(layout(slot_of, &slots, value_bytes))
}

#[cfg(test)]
/// As [`try_plan_memory`], for callers that cannot return an error: a plan whose sizes
/// overflow gets `arena_bytes == usize::MAX`, which no allocator satisfies.
pub(crate) fn plan_memory(values: &[ValueLife], hb: &ClockOracle<'_>) -> MemoryPlan {
    try_plan_memory(values, hb).unwrap_or_else(|_| MemoryPlan {
        offsets: vec![0; values.len()],
        arena_bytes: usize::MAX,
        value_bytes: usize::MAX,
        slots: 0,
    })
}

/// Offsets from slot sizes; `value_bytes` bounds every prefix sum, so none overflows.
fn layout(slot_of: Vec<Option<usize>>, slots: &[Slot], value_bytes: usize) -> MemoryPlan {
    let mut starts = Vec::with_capacity(slots.len());
    let mut arena_bytes = 0usize;
    for slot in slots {
        starts.push(arena_bytes);
        arena_bytes += slot.size; // <= value_bytes, which did not overflow.
    }
    MemoryPlan {
        offsets: slot_of.iter().map(|s| s.map_or(0, |k| starts[k])).collect(),
        arena_bytes,
        value_bytes,
        slots: slots.len(),
    }
}

/// Rounded size of a value; `total_bytes` already proved the sum fits.
fn rounded(bytes: usize) -> usize {
    bytes.next_multiple_of(ALIGN)
}

/// The plain strategy: asks every slot about every value (O(values × slots × streams) oracle
/// calls). Needs only [`HappensBefore`], so it also takes values in any order.
fn place_scan(values: &[ValueLife], hb: &dyn HappensBefore) -> (Vec<Option<usize>>, Vec<Slot>) {
    let mut slots: Vec<Slot> = Vec::new();
    let mut ends: Vec<Vec<EntryRef>> = Vec::new();
    let mut slot_of: Vec<Option<usize>> = vec![None; values.len()];
    for (i, value) in values.iter().enumerate() {
        let need = rounded(value.bytes);
        if need == 0 {
            continue;
        }
        // Strict comparisons keep the oldest slot on ties.
        let mut best_fit: Option<usize> = None;
        let mut largest: Option<usize> = None;
        for (k, slot) in slots.iter().enumerate() {
            if !ends[k].iter().all(|&e| hb.hb(e, value.write)) {
                continue;
            }
            if slot.size >= need {
                if best_fit.is_none_or(|b| slot.size < slots[b].size) {
                    best_fit = Some(k);
                }
            } else if largest.is_none_or(|b| slot.size > slots[b].size) {
                largest = Some(k);
            }
        }
        let k = best_fit.or(largest).unwrap_or_else(|| {
            slots.push(Slot {
                size: 0,
                last: i,
                generation: 0,
            });
            ends.push(Vec::new());
            slots.len() - 1
        });
        slots[k].size = slots[k].size.max(need);
        slots[k].last = i;
        ends[k] = latest_ends(value);
        slot_of[i] = Some(k);
    }
    (slot_of, slots)
}

/// The first entry of `free` at or after `from` whose slot is still at that generation;
/// drops the stale entries met on the way.
fn first_valid(
    free: &mut BTreeMap<(usize, usize), u64>,
    slots: &[Slot],
    from: (usize, usize),
) -> Option<(usize, usize)> {
    loop {
        let (&key, &generation) = free.range(from..).next()?;
        if slots[key.1].generation == generation {
            return Some(key);
        }
        free.remove(&key);
    }
}

/// Takes the best slot of a free set: the smallest with `size >= need`, else the largest; the
/// oldest on ties (the order of the keys `(size, slot)`), as [`place_scan`] chooses.
fn take_free(
    free: &mut BTreeMap<(usize, usize), u64>,
    slots: &[Slot],
    need: usize,
) -> Option<usize> {
    let key = match first_valid(free, slots, (need, 0)) {
        Some(key) => key,
        // Every entry left is smaller than `need`: the oldest of the largest size.
        None => loop {
            let (&(size, _), _) = free.iter().next_back()?;
            if let Some(key) = first_valid(free, slots, (size, 0)) {
                break key;
            }
        },
    };
    free.remove(&key);
    Some(key.1)
}

/// The queued strategy of the module docs; needs each stream's writes in position order.
fn place_queued(values: &[ValueLife], hb: &ClockOracle<'_>) -> (Vec<Option<usize>>, Vec<Slot>) {
    let n = hb.clocks.len();
    // watchers[t]: the streams whose clocks ever count stream t's entries.
    let mut watchers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (s, c) in hb.clocks.iter().enumerate() {
        for &(t, _) in &c.changes {
            if t < n {
                watchers[t].push(s);
            }
        }
    }
    // queued[s]: (first position on s where the occupant is dead, slot, generation).
    let mut queued: Vec<BinaryHeap<Reverse<(u64, usize, u64)>>> = vec![BinaryHeap::new(); n];
    // free[s]: slots dead for the next write on s, by (size, slot) -> generation.
    let mut free: Vec<BTreeMap<(usize, usize), u64>> = vec![BTreeMap::new(); n];
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of: Vec<Option<usize>> = vec![None; values.len()];
    let mut ends = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let need = rounded(value.bytes);
        if need == 0 {
            continue;
        }
        let (s, p) = (value.write.stream, value.write.pos);
        while let Some(&Reverse((at, k, g))) = queued[s].peek()
            && at <= p
        {
            queued[s].pop();
            if slots[k].generation == g {
                free[s].insert((slots[k].size, k), g);
            }
        }
        let k = take_free(&mut free[s], &slots, need).unwrap_or_else(|| {
            slots.push(Slot {
                size: 0,
                last: i,
                generation: 0,
            });
            slots.len() - 1
        });
        let slot = &mut slots[k];
        slot.size = slot.size.max(need);
        slot.last = i;
        slot.generation += 1;
        slot_of[i] = Some(k);
        // Only streams that see every end can ever reuse the slot; start from the end with
        // the fewest watchers.
        latest_ends_into(value, &mut ends);
        let Some(narrow) = ends.iter().min_by_key(|e| watchers[e.stream].len()) else {
            continue;
        };
        let candidates =
            std::iter::once(narrow.stream).chain(watchers[narrow.stream].iter().copied());
        for c in candidates {
            let dead_from = ends
                .iter()
                .map(|&e| hb.first_after(e, c))
                .try_fold(0u64, |acc, p| p.map(|p| acc.max(p)));
            if let Some(at) = dead_from {
                queued[c].push(Reverse((at, k, slot.generation)));
            }
        }
    }
    (slot_of, slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Issues entries stream by stream and keeps their vector clocks, like the tracer does.
    #[derive(Debug)]
    struct Graph {
        clocks: Vec<StreamClocks>,
    }

    impl Graph {
        fn new(streams: usize) -> Self {
            Graph {
                clocks: (0..streams).map(StreamClocks::new).collect(),
            }
        }

        /// Issues one entry on `s`; with `wait`, it first merges the clock of that record entry.
        fn issue(&mut self, s: usize, wait: Option<EntryRef>) -> EntryRef {
            let pos = self.clocks[s].len() + 1;
            if let Some(r) = wait {
                let rc: Vec<(usize, u64)> = self.clocks[r.stream].sparse(r.pos).collect();
                for (t, v) in rc {
                    self.clocks[s].raise(pos, t, v);
                }
            }
            assert_eq!(self.clocks[s].push(), pos);
            EntryRef { stream: s, pos }
        }

        fn oracle(&self) -> ClockOracle<'_> {
            ClockOracle {
                clocks: &self.clocks,
            }
        }

        fn entries(&self) -> Vec<EntryRef> {
            let per_stream = self.clocks.iter().enumerate();
            let all = per_stream.flat_map(|(s, c)| (1..=c.len()).map(move |pos| (s, pos)));
            all.map(|(stream, pos)| EntryRef { stream, pos }).collect()
        }
    }

    /// Strict hb by reachability over explicit edges (stream order and record → wait).
    #[derive(Debug)]
    struct Reach(HashSet<(EntryRef, EntryRef)>);

    impl Reach {
        fn new(graph: &Graph, waits: &[(EntryRef, EntryRef)]) -> Self {
            let succ = |e: EntryRef| {
                let next = EntryRef {
                    pos: e.pos + 1,
                    ..e
                };
                let on_stream = (e.pos < graph.clocks[e.stream].len()).then_some(next);
                let waited = waits.iter().filter(move |(r, _)| *r == e).map(|(_, w)| *w);
                on_stream.into_iter().chain(waited)
            };
            let mut pairs = HashSet::new();
            for from in graph.entries() {
                let mut stack: Vec<EntryRef> = succ(from).collect();
                while let Some(e) = stack.pop() {
                    if pairs.insert((from, e)) {
                        stack.extend(succ(e));
                    }
                }
            }
            Reach(pairs)
        }
    }

    impl HappensBefore for Reach {
        fn hb(&self, a: EntryRef, b: EntryRef) -> bool {
            self.0.contains(&(a, b))
        }
    }

    fn val(bytes: usize, write: EntryRef, uses: &[EntryRef]) -> ValueLife {
        let uses = uses.to_vec();
        ValueLife { bytes, write, uses }
    }

    /// Every use of `a` (its write if unused) strictly hb the write of `b`.
    fn dead_before(a: &ValueLife, b: &ValueLife, hb: &dyn HappensBefore) -> bool {
        match a.uses.is_empty() {
            true => hb.hb(a.write, b.write),
            false => a.uses.iter().all(|&u| hb.hb(u, b.write)),
        }
    }

    /// Checks R4.9 and the layout guarantees of `plan` against the oracle `hb`.
    fn check_plan(values: &[ValueLife], plan: &MemoryPlan, hb: &dyn HappensBefore) {
        assert_eq!(plan.offsets.len(), values.len());
        assert!(plan.arena_bytes <= plan.value_bytes, "{plan:?}");
        let rounded: usize = values.iter().map(|v| v.bytes.next_multiple_of(ALIGN)).sum();
        assert_eq!(plan.value_bytes, rounded);
        let mut slot_starts = HashSet::new();
        for (v, &off) in values.iter().zip(&plan.offsets) {
            assert_eq!(off % ALIGN, 0);
            assert!(off + v.bytes <= plan.arena_bytes, "{plan:?}");
            if v.bytes > 0 {
                slot_starts.insert(off);
            }
        }
        assert_eq!(plan.slots, slot_starts.len());
        for (i, (a, &oa)) in values.iter().zip(&plan.offsets).enumerate() {
            for (b, &ob) in values.iter().zip(&plan.offsets).skip(i + 1) {
                let overlap = a.bytes > 0 && b.bytes > 0 && oa < ob + b.bytes && ob < oa + a.bytes;
                let ordered = dead_before(a, b, hb) || dead_before(b, a, hb);
                assert!(!overlap || ordered, "{a:?} and {b:?} overlap in {plan:?}");
            }
        }
    }

    #[test]
    fn single_stream_chain_reuses_slots() {
        let mut g = Graph::new(1);
        let e: Vec<EntryRef> = (0..4).map(|_| g.issue(0, None)).collect();
        let values = [
            val(100, e[0], &[e[1]]),
            val(100, e[1], &[e[2]]),
            val(100, e[2], &[e[3]]),
        ];
        let plan = plan_memory(&values, &g.oracle());
        assert_eq!(plan.offsets, vec![0, 128, 0]);
        assert_eq!(
            (plan.slots, plan.arena_bytes, plan.value_bytes),
            (2, 256, 384)
        );
        check_plan(&values, &plan, &g.oracle());
    }

    #[test]
    fn read_and_write_of_one_entry_never_alias() {
        let mut g = Graph::new(1);
        let (a, op) = (g.issue(0, None), g.issue(0, None));
        let values = [val(64, a, &[op]), val(64, op, &[])];
        let plan = plan_memory(&values, &g.oracle());
        assert_eq!((plan.offsets, plan.slots), (vec![0, 64], 2));
    }

    #[test]
    fn streams_without_event_never_share() {
        let mut g = Graph::new(2);
        let (a0, a1) = (g.issue(0, None), g.issue(0, None));
        let (b0, b1) = (g.issue(1, None), g.issue(1, None));
        let values = [val(256, a0, &[a1]), val(256, b0, &[b1])];
        let plan = plan_memory(&values, &g.oracle());
        assert_eq!((plan.offsets, plan.slots), (vec![0, 256], 2));
    }

    #[test]
    fn event_edge_allows_sharing() {
        let mut g = Graph::new(2);
        let (a, read) = (g.issue(0, None), g.issue(0, None));
        let record = g.issue(0, None);
        let _wait = g.issue(1, Some(record));
        let (b, read_b) = (g.issue(1, None), g.issue(1, None));
        let values = [val(200, a, &[read]), val(200, b, &[read_b])];
        let p = plan_memory(&values, &g.oracle());
        assert_eq!((p.offsets, p.slots, p.arena_bytes), (vec![0, 0], 1, 256));
    }

    #[test]
    fn unused_value_counts_its_write_as_use() {
        let mut g = Graph::new(2);
        let (a, b, c) = (g.issue(0, None), g.issue(0, None), g.issue(1, None));
        let values = [val(64, a, &[]), val(64, b, &[]), val(64, c, &[])];
        let plan = plan_memory(&values, &g.oracle());
        assert_eq!((plan.offsets, plan.slots), (vec![0, 0, 64], 2));
    }

    #[test]
    fn zero_sized_value_takes_no_slot() {
        let mut g = Graph::new(1);
        let (a, b) = (g.issue(0, None), g.issue(0, None));
        let values = [val(0, a, &[b]), val(10, b, &[]), val(0, b, &[])];
        let p = plan_memory(&values, &g.oracle());
        assert_eq!((p.slots, p.arena_bytes, p.value_bytes), (1, 64, 64));
        check_plan(&values, &p, &g.oracle());
    }

    #[test]
    fn best_fit_and_arena_at_most_sum() {
        let mut g = Graph::new(1);
        let e: Vec<EntryRef> = (0..5).map(|_| g.issue(0, None)).collect();
        let values = [
            val(1000, e[0], &[e[2]]),
            val(60, e[1], &[e[2]]),
            val(64, e[2], &[]),
            val(50, e[3], &[e[4]]), // fits the 64-byte slot of value 1, not the 1024 one
            val(2000, e[4], &[]),   // fits nowhere: grows the largest free slot
        ];
        let plan = plan_memory(&values, &g.oracle());
        assert_eq!(plan.offsets, vec![0, 2048, 2112, 2048, 0]);
        assert_eq!((plan.slots, plan.arena_bytes), (3, 2176));
        assert!(plan.arena_bytes <= plan.value_bytes);
        check_plan(&values, &plan, &g.oracle());
    }

    /// One issued entry: (stream, kind, event, reads as (pick, ordered only), bytes).
    type Step = (usize, u8, usize, Vec<(usize, bool)>, usize);

    fn step() -> impl Strategy<Value = Step> {
        let read = (any::<usize>(), prop::bool::weighted(0.8));
        let reads = prop::collection::vec(read, 0..=2);
        (0..4usize, 0..10u8, 0..3usize, reads, 0..300usize)
    }

    /// Builds a random graph: records (kind 0–1), forward-bound waits (2–3), ops (4–9).
    fn build(streams: usize, steps: &[Step]) -> (Graph, Vec<ValueLife>, Vec<(EntryRef, EntryRef)>) {
        let mut g = Graph::new(streams);
        let (mut records, mut waits, mut values) = ([None; 3], Vec::new(), Vec::<ValueLife>::new());
        for (s, kind, event, reads, bytes) in steps {
            let s = s % streams;
            match kind {
                0 | 1 => records[*event] = Some(g.issue(s, None)),
                2 | 3 => {
                    let w = g.issue(s, records[*event]);
                    waits.extend(records[*event].map(|r| (r, w)));
                }
                _ => {
                    let e = g.issue(s, None);
                    for &(pick, ordered) in reads {
                        let oracle = g.oracle();
                        let ok = |v: &&mut ValueLife| !ordered || oracle.hb(v.write, e);
                        let mut cands: Vec<&mut ValueLife> = values.iter_mut().filter(ok).collect();
                        if !cands.is_empty() {
                            let n = cands.len();
                            cands[pick % n].uses.push(e);
                        }
                    }
                    let bytes = if *bytes < 20 { 0 } else { *bytes };
                    values.push(val(bytes, e, &[]));
                }
            }
        }
        (g, values, waits)
    }

    proptest! {
        #[test]
        fn plan_is_safe_on_random_graphs(
            streams in 1..=4usize,
            steps in prop::collection::vec(step(), 0..=60),
        ) {
            let (g, values, waits) = build(streams, &steps);
            let reach = Reach::new(&g, &waits);
            let oracle = g.oracle();
            let entries = g.entries();
            for &a in &entries {
                for &b in &entries {
                    prop_assert_eq!(oracle.hb(a, b), reach.hb(a, b), "{:?} hb {:?}", a, b);
                }
            }
            let plan = plan_memory(&values, &oracle);
            check_plan(&values, &plan, &reach);
            prop_assert_eq!(&plan, &plan_memory(&values, &oracle));
            // The queued fast path chooses exactly what asking every slot chooses.
            let (slot_of, slots) = place_scan(&values, &oracle);
            prop_assert_eq!(&plan, &layout(slot_of, &slots, plan.value_bytes));
            // Dense clocks rebuilt from the change points agree with the oracle.
            for &b in &entries {
                let dense = g.clocks[b.stream].dense(b.pos, streams);
                for &a in &entries {
                    prop_assert_eq!(oracle.hb(a, b), a != b && dense[a.stream] >= a.pos);
                }
            }
            // Safety must not depend on the values arriving in issue order.
            let reversed: Vec<ValueLife> = values.iter().rev().cloned().collect();
            check_plan(&reversed, &plan_memory(&reversed, &oracle), &reach);
        }
    }

    /// Issue 10 item 2: a byte total past `usize` is `OutOfMemory`, never a panic or a wrapped
    /// sum; `plan_memory` then asks for an arena no allocator gives.
    #[test]
    fn overflowing_sizes_are_out_of_memory() {
        let mut g = Graph::new(1);
        let e: Vec<EntryRef> = (0..5).map(|_| g.issue(0, None)).collect();
        let huge = 1usize << 62;
        let values: Vec<ValueLife> = (0..4).map(|i| val(huge, e[i], &[e[i + 1]])).collect();
        let err = try_plan_memory(&values, &g.oracle()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfMemory {
                    bytes: usize::MAX,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(plan_memory(&values, &g.oracle()).arena_bytes, usize::MAX);
        // One byte short of rounding past usize::MAX is an overflow too.
        let values = [val(usize::MAX - 1, e[0], &[])];
        assert!(try_plan_memory(&values, &g.oracle()).is_err());
        assert_eq!(total_bytes([usize::MAX, 1], false), None);
        assert_eq!(total_bytes([1, 64, 65], true), Some(64 + 64 + 128));
        assert_eq!(total_bytes([huge, huge, huge], false), Some(3 * huge));
    }

    /// Oracle questions per value while planning `values` on `g`.
    fn calls_per_value(g: &Graph, values: &[ValueLife]) -> f64 {
        let before = oracle_calls();
        let plan = try_plan_memory(values, &g.oracle()).unwrap();
        assert!(plan.arena_bytes <= plan.value_bytes);
        (oracle_calls() - before) as f64 / values.len() as f64
    }

    /// A chain of `n` ops on one stream, each reading a weight (an input alive throughout) and
    /// the previous value: the shape that made planning quadratic.
    fn weight_chain(n: usize) -> (Graph, Vec<ValueLife>) {
        let mut g = Graph::new(1);
        let weight = g.issue(0, None);
        let mut values = vec![val(256, weight, &[])];
        for i in 0..n {
            let e = g.issue(0, None);
            values[0].uses.push(e);
            if i > 0 {
                values.last_mut().unwrap().uses.push(e);
            }
            values.push(val(256, e, &[]));
        }
        (g, values)
    }

    /// Value `i` is read by ops `2i` and `2i + 1`: about half of all values are alive at once.
    fn half_alive(n: usize) -> (Graph, Vec<ValueLife>) {
        let mut g = Graph::new(1);
        let mut values: Vec<ValueLife> = Vec::new();
        for i in 0..n {
            let e = g.issue(0, None);
            if i > 0 {
                values[i / 2].uses.push(e);
            }
            values.push(val(64 * (1 + i % 3), e, &[]));
        }
        (g, values)
    }

    /// Work, not time: oracle questions per value stay bounded as graphs grow 16x (the old
    /// planner asked O(values) per value on both shapes).
    #[test]
    fn planner_work_per_value_is_bounded() {
        for build in [weight_chain, half_alive] {
            let small = calls_per_value_of(build(2_000));
            let large = calls_per_value_of(build(32_000));
            assert!(
                small <= 4.0 && large <= 4.0,
                "{small} and {large} calls per value"
            );
        }
    }

    fn calls_per_value_of((g, values): (Graph, Vec<ValueLife>)) -> f64 {
        calls_per_value(&g, &values)
    }

    /// The chain reuses two slots whatever its length, on the fast path as on the scan.
    #[test]
    fn weight_chain_plan_matches_the_scan() {
        let (g, values) = weight_chain(200);
        let plan = plan_memory(&values, &g.oracle());
        assert_eq!(plan.slots, 3);
        let (slot_of, slots) = place_scan(&values, &g.oracle());
        assert_eq!(plan, layout(slot_of, &slots, plan.value_bytes));
        check_plan(&values, &plan, &g.oracle());
    }

    /// Compact clocks: a stream keeps change points only where a wait raised a component.
    #[test]
    fn clocks_keep_only_change_points() {
        let mut g = Graph::new(3);
        let r = g.issue(0, None);
        for _ in 0..1000 {
            g.issue(1, None);
        }
        let w = g.issue(2, Some(r));
        for _ in 0..1000 {
            g.issue(2, None);
        }
        assert_eq!(g.clocks[1].heap_bytes(), 0);
        assert!(
            g.clocks[2].heap_bytes() <= 256,
            "{}",
            g.clocks[2].heap_bytes()
        );
        assert_eq!(g.clocks[2].dense(w.pos, 3), vec![1, 0, 1]);
        assert_eq!(g.clocks[2].last_dense(), vec![1, 0, 1001]);
        assert_eq!(g.oracle().first_after(r, 2), Some(1));
        assert_eq!(g.oracle().first_after(r, 1), None);
        assert_eq!(g.oracle().first_after(w, 2), Some(2));
    }
}
