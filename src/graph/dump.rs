//! Readable views of a finished graph: a one-line-per-stream text dump and Graphviz DOT.
//!
//! Owns formatting only; it reads [`Graph`] and changes nothing.

use std::fmt::Write;

use super::ir::{EntryKind, Graph};

/// One line per stream, main first: `"tag": entry, entry, ...` (semantics §8 notation).
pub(crate) fn text(graph: &Graph) -> String {
    graph
        .streams
        .iter()
        .map(|s| {
            let entries: Vec<String> = s.entries.iter().map(EntryKind::label).collect();
            format!("{:?}: {}", s.tag, entries.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Graphviz DOT: one cluster per stream; solid edges for stream order, dashed edges from each
/// record to the waits bound to it.
pub(crate) fn dot(graph: &Graph) -> String {
    let mut out =
        String::from("digraph tagstream {\n  rankdir=LR;\n  node [shape=box, fontsize=10];\n");
    for (si, s) in graph.streams.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{si} {{\n    label={:?};",
            format!("stream {:?}", s.tag)
        );
        for (i, e) in s.entries.iter().enumerate() {
            let _ = writeln!(out, "    n{si}_{} [label={:?}];", i + 1, e.label());
        }
        for i in 1..s.entries.len() {
            let _ = writeln!(out, "    n{si}_{i} -> n{si}_{};", i + 1);
        }
        out.push_str("  }\n");
    }
    for (r, e) in graph.entries() {
        if let EntryKind::Wait { bound: Some(b), .. } = e {
            let _ = writeln!(
                out,
                "  n{}_{} -> n{}_{} [style=dashed, color=blue];",
                b.stream, b.pos, r.stream, r.pos
            );
        }
    }
    out.push_str("}\n");
    out
}
