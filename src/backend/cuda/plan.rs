//! What a CUDA graph is built from, decided in plain Rust (tested without a driver).
//!
//! Owns the order in which a [`Program`]'s per-stream instructions are launched into the
//! capture streams (a wait is launched only after the event it waits on has been recorded in
//! the capture), which positions need a CUDA event after them, and the check that every input
//! copy is at the head of the main stream (replay copies inputs straight into the arena before
//! the graph launch).

use std::collections::BTreeMap;

use crate::graph::program::{Instr, Program};
use crate::runtime::MAIN;

/// The capture plan of a program.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CapturePlan {
    /// Index of the main stream among the program's streams.
    pub(crate) main: usize,
    /// `(program stream, instruction index)` in a launch order that respects every wait.
    pub(crate) order: Vec<(usize, usize)>,
    /// `(program stream, number of entries executed)` → event index: an event is recorded on
    /// that capture stream right after its entry `pos` (1-based), for the waits on it.
    pub(crate) events: BTreeMap<(usize, u64), usize>,
}

/// Plans the capture of `program`.
///
/// # Errors
/// A description of what cannot be captured: no main stream, an input copy that is not at the
/// head of the main stream, a wait on a position that does not exist, or waits that can never
/// all be satisfied (a cycle; the graph checks rule that out, R4.7).
pub(crate) fn capture_plan(program: &Program) -> Result<CapturePlan, String> {
    let main = program
        .streams
        .iter()
        .position(|s| s.id == MAIN)
        .ok_or("the program has no main stream")?;
    for (si, s) in program.streams.iter().enumerate() {
        let mut head = si == main;
        for instr in &s.instrs {
            match instr {
                Instr::CopyIn { .. } if head => {}
                Instr::CopyIn { .. } => {
                    return Err(format!(
                        "an input copy on stream \"{}\" after other work",
                        s.tag
                    ));
                }
                _ => head = false,
            }
        }
    }
    let lens: Vec<usize> = program.streams.iter().map(|s| s.instrs.len()).collect();
    let waits: Vec<Vec<Option<(usize, u64)>>> = program
        .streams
        .iter()
        .map(|s| {
            s.instrs
                .iter()
                .map(|i| match i {
                    Instr::Wait { stream, pos, .. } => Some((*stream, *pos)),
                    _ => None,
                })
                .collect()
        })
        .collect();
    order_waits(&lens, &waits).map(|(order, events)| CapturePlan {
        main,
        order,
        events,
    })
}

/// The launch order and event positions for streams of `lens[s]` entries where entry `i` of
/// stream `s` waits for `waits[s][i] = Some((t, pos))`: stream `t` has executed `pos` entries.
type Order = (Vec<(usize, usize)>, BTreeMap<(usize, u64), usize>);

pub(crate) fn order_waits(
    lens: &[usize],
    waits: &[Vec<Option<(usize, u64)>>],
) -> Result<Order, String> {
    let mut events = BTreeMap::new();
    for w in waits.iter().flatten().flatten() {
        let (t, pos) = *w;
        if t >= lens.len() || pos as usize > lens[t] {
            return Err(format!("a wait on entry {pos} of program stream {t}"));
        }
        if pos > 0 {
            let next = events.len();
            events.entry((t, pos)).or_insert(next);
        }
    }
    let total: usize = lens.iter().sum();
    let mut done = vec![0usize; lens.len()];
    let mut order = Vec::with_capacity(total);
    while order.len() < total {
        let mut progressed = false;
        for s in 0..lens.len() {
            while done[s] < lens[s] {
                if let Some((t, pos)) = waits[s][done[s]]
                    && (done[t] as u64) < pos
                {
                    break;
                }
                order.push((s, done[s]));
                done[s] += 1;
                progressed = true;
            }
        }
        if !progressed {
            return Err("the waits of the program form a cycle".into());
        }
    }
    Ok((order, events))
}

/// The streams that must be ordered before a buffer owned by `owner` is freed on it (R10.5):
/// every other stream that read it, once each.
pub(crate) fn foreign_readers<S: PartialEq + Copy>(owner: S, readers: &[S]) -> Vec<S> {
    let mut out: Vec<S> = Vec::new();
    for &r in readers {
        if r != owner && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fork/join shape: main (3 entries) records; side waits on main's 1st entry, runs 2
    /// entries; main's 3rd entry waits on side's 2nd (R4.4).
    #[test]
    fn waits_launch_after_their_event() {
        let lens = [3, 2];
        let waits = vec![vec![None, None, Some((1, 2))], vec![Some((0, 1)), None]];
        let (order, events) = order_waits(&lens, &waits).unwrap();
        assert_eq!(order, vec![(0, 0), (0, 1), (1, 0), (1, 1), (0, 2)]);
        assert_eq!(
            events.keys().copied().collect::<Vec<_>>(),
            vec![(0, 1), (1, 2)]
        );
        // Every wait comes after the entry it waits for.
        for (i, &(s, k)) in order.iter().enumerate() {
            if let Some((t, pos)) = waits[s][k] {
                let at = order
                    .iter()
                    .position(|&e| e == (t, pos as usize - 1))
                    .unwrap();
                assert!(at < i);
            }
        }
    }

    #[test]
    fn cycles_and_bad_positions_are_refused() {
        let lens = [1, 1];
        let cyc = vec![vec![Some((1, 1))], vec![Some((0, 1))]];
        assert!(order_waits(&lens, &cyc).unwrap_err().contains("cycle"));
        let bad = vec![vec![Some((1, 5))], vec![None]];
        assert!(order_waits(&lens, &bad).is_err());
        // A wait on position 0 (nothing) needs no event and never blocks.
        let zero = vec![vec![Some((1, 0))], vec![None]];
        let (order, events) = order_waits(&lens, &zero).unwrap();
        assert_eq!(order.len(), 2);
        assert!(events.is_empty());
    }

    #[test]
    fn readers_other_than_the_owner_once_each() {
        assert_eq!(foreign_readers(1, &[1, 2, 3, 2, 1]), vec![2, 3]);
        assert!(foreign_readers(0, &[0, 0]).is_empty());
    }
}
