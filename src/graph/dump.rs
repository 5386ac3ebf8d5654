//! Readable views of a captured program: a one-line-per-stream text dump and Graphviz DOT.
//!
//! Owns formatting only; it reads a [`Program`] and changes nothing. (The program, not the
//! tracer's IR, is what a kept graph holds: the IR is dropped once lowered.)

use std::fmt::Write;

use super::program::{Instr, Program};

/// One line per stream, main first: `"tag": entry, entry, ...` (semantics §8 notation).
pub(crate) fn text(program: &Program) -> String {
    program
        .streams
        .iter()
        .map(|s| {
            let entries: Vec<String> = s.instrs.iter().map(Instr::label).collect();
            format!("{:?}: {}", &*s.tag, entries.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Graphviz DOT: one cluster per stream; solid edges for stream order, dashed edges from each
/// record to the waits bound to it.
pub(crate) fn dot(program: &Program) -> String {
    let mut out =
        String::from("digraph tagstream {\n  rankdir=LR;\n  node [shape=box, fontsize=10];\n");
    for (si, s) in program.streams.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{si} {{\n    label={:?};",
            format!("stream {:?}", &*s.tag)
        );
        for (i, e) in s.instrs.iter().enumerate() {
            let _ = writeln!(out, "    n{si}_{} [label={:?}];", i + 1, e.label());
        }
        for i in 1..s.instrs.len() {
            let _ = writeln!(out, "    n{si}_{i} -> n{si}_{};", i + 1);
        }
        out.push_str("  }\n");
    }
    for (si, s) in program.streams.iter().enumerate() {
        for (i, e) in s.instrs.iter().enumerate() {
            if let Instr::Wait { stream, pos, .. } = e {
                let _ = writeln!(
                    out,
                    "  n{stream}_{pos} -> n{si}_{} [style=dashed, color=blue];",
                    i + 1
                );
            }
        }
    }
    out.push_str("}\n");
    out
}
