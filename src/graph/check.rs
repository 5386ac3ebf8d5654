//! Whole-graph checks run after tracing and before planning (R4.7).
//!
//! Owns the acyclicity proof of a finished [`Graph`]: tracing already refuses every wait
//! without an earlier record, so all edges point forward in issue order, but the plan is
//! verified independently so that a bug in tracing can never produce a plan that hangs.
//! Races are checked during tracing (`trace`), where the offending call can still be named.

use super::ir::{EntryKind, EntryRef, Graph};
use crate::error::{Error, Result};

/// Proves the graph's "must run after" relation acyclic with Kahn's algorithm over stream
/// order and wait → record edges.
///
/// # Errors
/// [`Error::Deadlock`] naming the entries (and their streams) that can never run because
/// they are on, or wait behind, a cycle.
pub(crate) fn acyclic(graph: &Graph) -> Result<()> {
    // Node index: offset of the stream + pos - 1. Every entry has at most two predecessors
    // (the previous entry of its stream, the record its wait is bound to), so the successors
    // live in two flat arrays (no list per entry: this runs on graphs of 100k+ entries).
    let mut offset = Vec::with_capacity(graph.streams.len());
    let mut total = 0usize;
    for s in &graph.streams {
        offset.push(total);
        total += s.entries.len();
    }
    let node = |r: EntryRef| offset[r.stream] + (r.pos - 1) as usize;
    let stream_of: Vec<usize> = (0..graph.streams.len())
        .flat_map(|s| std::iter::repeat_n(s, graph.streams[s].entries.len()))
        .collect();
    let mut indegree = vec![0usize; total];
    // Wait edges record -> wait, grouped by record (counting sort).
    let mut wait_start = vec![0usize; total + 1];
    let mut edges = Vec::new();
    for (r, e) in graph.entries() {
        indegree[node(r)] += usize::from(r.pos > 1);
        if let EntryKind::Wait { bound: Some(b), .. } = e {
            indegree[node(r)] += 1;
            wait_start[node(*b) + 1] += 1;
            edges.push((node(*b), node(r)));
        }
    }
    for i in 0..total {
        wait_start[i + 1] += wait_start[i];
    }
    let mut waits = vec![0usize; edges.len()];
    let mut fill = wait_start.clone();
    for (b, w) in edges {
        waits[fill[b]] = w;
        fill[b] += 1;
    }
    let mut ready: Vec<usize> = (0..total).filter(|&n| indegree[n] == 0).collect();
    let mut done = 0;
    while let Some(n) = ready.pop() {
        done += 1;
        let s = stream_of[n];
        let next_on_stream = (n + 1 < offset[s] + graph.streams[s].entries.len()).then_some(n + 1);
        for m in next_on_stream
            .into_iter()
            .chain(waits[wait_start[n]..wait_start[n + 1]].iter().copied())
        {
            indegree[m] -= 1;
            if indegree[m] == 0 {
                ready.push(m);
            }
        }
    }
    if done == total {
        return Ok(());
    }
    let stuck: Vec<String> = graph
        .entries()
        .filter(|(r, _)| indegree[node(*r)] > 0)
        .map(|(r, _)| graph.describe(r))
        .collect();
    Err(Error::Deadlock {
        entries: stuck.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ir::{EventName, GraphStream, StreamClocks};
    use crate::runtime::MAIN;

    fn graph(streams: Vec<Vec<EntryKind>>) -> Graph {
        let n = streams.len();
        Graph {
            streams: streams
                .into_iter()
                .enumerate()
                .map(|(i, entries)| GraphStream {
                    id: MAIN + i,
                    tag: format!("s{i}"),
                    entries,
                })
                .collect(),
            clocks: (0..n).map(StreamClocks::new).collect(),
            values: Vec::new(),
            consts: Vec::new(),
            outputs: Vec::new(),
            output_shapes: Vec::new(),
            last_records: Vec::new(),
            order: Vec::new(),
        }
    }

    fn user(tag: &str) -> EventName {
        EventName::User {
            id: 0,
            tag: tag.into(),
        }
    }

    /// R4.7 / E11: a plan whose waits form a cycle is refused, naming the entries and streams.
    #[test]
    fn a_cycle_is_a_deadlock_e11() {
        // s0: wait(b) bound to s1's record; record(a).  s1: wait(a) bound to s0's record; record(b).
        let g = graph(vec![
            vec![
                EntryKind::Wait {
                    event: user("b"),
                    bound: Some(EntryRef { stream: 1, pos: 2 }),
                },
                EntryKind::Record { event: user("a") },
            ],
            vec![
                EntryKind::Wait {
                    event: user("a"),
                    bound: Some(EntryRef { stream: 0, pos: 2 }),
                },
                EntryKind::Record { event: user("b") },
            ],
        ]);
        let err = acyclic(&g).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deadlock: the plan has a cycle through tagged_event_wait at position 1 of \"s0\", \
             tagged_event_record at position 2 of \"s0\", tagged_event_wait at position 1 of \
             \"s1\", tagged_event_record at position 2 of \"s1\""
        );
    }

    #[test]
    fn forward_edges_are_acyclic() {
        let g = graph(vec![
            vec![EntryKind::Record { event: user("a") }],
            vec![EntryKind::Wait {
                event: user("a"),
                bound: Some(EntryRef { stream: 0, pos: 1 }),
            }],
        ]);
        acyclic(&g).unwrap();
    }
}
