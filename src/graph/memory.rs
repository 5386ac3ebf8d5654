//! The memory planner: gives every value of a captured graph a byte offset in one arena (R4.9);
//! it knows nothing of tensors, streams or kernels.
//!
//! Owns [`plan_memory`], its input ([`ValueLife`], [`EntryRef`]) and output ([`MemoryPlan`]), and
//! [`ClockOracle`], the vector-clock answer to [`HappensBefore`]. It sees values only as byte
//! counts with one writing entry and some reading entries, and entries only as (stream, position)
//! pairs; it never allocates the arena, issues work or checks that the graph itself is ordered.
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
//! write(v)`; hb is transitive, so every end of every occupant hb `write(v)`. This does not rely
//! on uses following their write (a reader is ordered after its producer in a real graph, R3.5,
//! where the extra write check is implied by any use and costs no sharing), so unordered uses and
//! values with no reader are safe. Each slot is no larger than the sum of its occupants, hence
//! `arena_bytes <= value_bytes`. The output depends only on the input, so it is deterministic.
//!
//! *Fast path*: one pass, O(values × slots × uses) oracle calls; [`ClockOracle`] answers each in
//! O(1) with two index lookups and a compare.

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
    /// Every entry that reads the value, in any order; may be empty or repeat an entry.
    pub(crate) uses: Vec<EntryRef>,
}

/// Strict happens-before between entries of one graph.
///
/// Implementations must be a strict partial order: irreflexive (no entry hb itself) and
/// transitive. The planner's safety argument relies on transitivity.
pub(crate) trait HappensBefore {
    /// Whether `a` strictly happens-before `b`.
    fn hb(&self, a: EntryRef, b: EntryRef) -> bool;
}

/// Where every value lives in the arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryPlan {
    /// Byte offset of each value in the arena, in the order of the input slice; every offset is a multiple of ALIGN.
    pub(crate) offsets: Vec<usize>,
    /// Total arena size in bytes (offsets[i] + bytes[i] <= arena_bytes).
    pub(crate) arena_bytes: usize,
    /// Sum of all value sizes (each rounded up to ALIGN).
    pub(crate) value_bytes: usize,
    /// Number of distinct slots.
    pub(crate) slots: usize,
}

/// Alignment in bytes of every offset and slot size.
pub(crate) const ALIGN: usize = 64;

/// A byte range of the arena and the value that last joined it.
#[derive(Debug)]
struct Slot {
    /// Largest occupant, rounded to [`ALIGN`]; never 0 once the slot holds a value.
    size: usize,
    /// Index (into the input) of the last occupant.
    last: usize,
}

/// The entries after which a value's bytes are dead: its write and all its uses.
fn ends(value: &ValueLife) -> impl Iterator<Item = EntryRef> + '_ {
    std::iter::once(value.write).chain(value.uses.iter().copied())
}

/// Places every value in one arena; see the module docs for the strategy and its invariant.
///
/// # Panics
/// If the sum of the rounded value sizes overflows `usize`.
pub(crate) fn plan_memory(values: &[ValueLife], hb: &dyn HappensBefore) -> MemoryPlan {
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of: Vec<Option<usize>> = vec![None; values.len()];
    let mut value_bytes = 0usize;
    for (i, value) in values.iter().enumerate() {
        let need = value
            .bytes
            .checked_next_multiple_of(ALIGN)
            .expect("value size overflows usize");
        value_bytes = value_bytes
            .checked_add(need)
            .expect("total value size overflows usize");
        if need == 0 {
            continue;
        }
        // Strict comparisons keep the oldest slot on ties.
        let mut best_fit: Option<usize> = None;
        let mut largest: Option<usize> = None;
        for (k, slot) in slots.iter().enumerate() {
            if !ends(&values[slot.last]).all(|e| hb.hb(e, value.write)) {
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
            slots.push(Slot { size: 0, last: i });
            slots.len() - 1
        });
        slots[k].size = slots[k].size.max(need);
        slots[k].last = i;
        slot_of[i] = Some(k);
    }
    let mut starts = Vec::with_capacity(slots.len());
    let mut arena_bytes = 0usize;
    for slot in &slots {
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

/// hb from per-entry vector clocks: clocks[stream][pos-1] is the clock of that entry, a Vec<u64> indexed by stream, where
/// clock[t] = the highest position on stream t that hb-or-equals this entry (so clock[own stream] = own pos).
/// a hb b  iff  a != b && clocks(b)[a.stream] >= a.pos.
///
/// Missing clock components count as 0. An entry with position 0 or with no clock (stream or
/// position out of range) is not an entry of the graph: nothing hb it and it hb nothing.
#[derive(Debug)]
pub(crate) struct ClockOracle<'a> {
    /// `clocks[stream][pos - 1]`: the vector clock of entry `(stream, pos)`.
    pub(crate) clocks: &'a [Vec<Vec<u64>>],
}

impl HappensBefore for ClockOracle<'_> {
    fn hb(&self, a: EntryRef, b: EntryRef) -> bool {
        if a == b || a.pos == 0 {
            return false;
        }
        let clock = b
            .pos
            .checked_sub(1)
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| self.clocks.get(b.stream)?.get(p));
        clock.is_some_and(|c| c.get(a.stream).copied().unwrap_or(0) >= a.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Issues entries stream by stream and keeps their vector clocks, like the runtime does.
    #[derive(Debug)]
    struct Graph {
        clocks: Vec<Vec<Vec<u64>>>,
        frontier: Vec<Vec<u64>>,
    }

    impl Graph {
        fn new(streams: usize) -> Self {
            Graph {
                clocks: vec![Vec::new(); streams],
                frontier: vec![vec![0; streams]; streams],
            }
        }

        /// Issues one entry on `s`; with `wait`, it first merges the clock of that record entry.
        fn issue(&mut self, s: usize, wait: Option<EntryRef>) -> EntryRef {
            if let Some(r) = wait {
                let rc = self.clocks[r.stream][r.pos as usize - 1].clone();
                for (f, c) in self.frontier[s].iter_mut().zip(rc) {
                    *f = (*f).max(c);
                }
            }
            let pos = self.clocks[s].len() as u64 + 1;
            self.frontier[s][s] = pos;
            self.clocks[s].push(self.frontier[s].clone());
            EntryRef { stream: s, pos }
        }

        fn oracle(&self) -> ClockOracle<'_> {
            ClockOracle {
                clocks: &self.clocks,
            }
        }

        fn entries(&self) -> Vec<EntryRef> {
            let per_stream = self.clocks.iter().enumerate();
            let all = per_stream.flat_map(|(s, c)| (1..=c.len() as u64).map(move |pos| (s, pos)));
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
                let on_stream = (e.pos < graph.clocks[e.stream].len() as u64).then_some(next);
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
            // Safety must not depend on the values arriving in issue order.
            let reversed: Vec<ValueLife> = values.iter().rev().cloned().collect();
            check_plan(&reversed, &plan_memory(&reversed, &oracle), &reach);
        }
    }
}
