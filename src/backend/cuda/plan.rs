//! What a CUDA graph is built from, decided in plain Rust (tested without a driver).
//!
//! Owns the order in which a [`Program`]'s per-stream instructions are launched into the
//! capture streams (a wait is launched only after the event it waits on has been recorded in
//! the capture), which positions need a CUDA event after them, and the check that every input
//! copy is at the head of the main stream (replay copies inputs straight into the arena before
//! the graph launch).

use std::collections::{BTreeMap, HashMap};

use crate::graph::program::{Instr, Loc, Program};
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

/// Where a replay value's poison can come from (R3.12): a call input, a constant, or the error
/// flag of an index op of the graph (its slot in the graph's flag words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    Input(usize),
    Const(usize),
    Flag(usize),
}

/// One entry of a program in launch order, as the poison analysis sees it.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    CopyIn {
        input: usize,
        dst: Loc,
    },
    Op {
        inputs: Vec<Loc>,
        dst: Loc,
        /// The op checks indices (it gets a flag slot).
        flagged: bool,
    },
    Other,
}

/// For `steps` in launch order (every value written before it is read): the flag slot of each
/// flagged op (numbered in launch order), and for each of `outs` output slots the sorted
/// sources its value depends on, so a replay poisons exactly what eager execution would.
pub(crate) fn poison_sources(
    steps: &[Step],
    outs: usize,
) -> (Vec<Option<usize>>, Vec<Vec<Source>>) {
    fn key(l: &Loc) -> (u8, usize) {
        match *l {
            Loc::Arena(v) => (0, v),
            Loc::Out(i) => (1, i),
            Loc::Const(i) => (2, i),
        }
    }
    let mut deps: HashMap<(u8, usize), Vec<Source>> = HashMap::new();
    let mut slots = Vec::with_capacity(steps.len());
    let mut next = 0;
    for step in steps {
        let mut slot = None;
        match step {
            Step::CopyIn { input, dst } => {
                deps.insert(key(dst), vec![Source::Input(*input)]);
            }
            Step::Op {
                inputs,
                dst,
                flagged,
            } => {
                let mut d: Vec<Source> = Vec::new();
                for l in inputs {
                    match l {
                        Loc::Const(i) => d.push(Source::Const(*i)),
                        _ => d.extend(deps.get(&key(l)).into_iter().flatten().copied()),
                    }
                }
                if *flagged {
                    d.push(Source::Flag(next));
                    slot = Some(next);
                    next += 1;
                }
                d.sort_unstable();
                d.dedup();
                deps.insert(key(dst), d);
            }
            Step::Other => {}
        }
        slots.push(slot);
    }
    let outs = (0..outs)
        .map(|i| deps.remove(&(1, i)).unwrap_or_default())
        .collect();
    (slots, outs)
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

    /// R3.12 on replay: an output depends on the inputs, constants and index ops upstream of
    /// it, and only on those.
    #[test]
    fn poison_follows_the_values() {
        let op = |inputs: Vec<Loc>, dst: Loc, flagged: bool| Step::Op {
            inputs,
            dst,
            flagged,
        };
        let steps = vec![
            Step::CopyIn {
                input: 0,
                dst: Loc::Arena(0),
            },
            Step::CopyIn {
                input: 1,
                dst: Loc::Arena(1),
            },
            // v2 = gather(v0, v1): flag 0.
            op(vec![Loc::Arena(0), Loc::Arena(1)], Loc::Arena(2), true),
            Step::Other,
            // out0 = v2 + const0; out1 = exp(v0); out2 = index_select(const1, v1): flag 1.
            op(vec![Loc::Arena(2), Loc::Const(0)], Loc::Out(0), false),
            op(vec![Loc::Arena(0)], Loc::Out(1), false),
            op(vec![Loc::Const(1), Loc::Arena(1)], Loc::Out(2), true),
        ];
        let (slots, outs) = poison_sources(&steps, 4);
        assert_eq!(slots, vec![None, None, Some(0), None, None, None, Some(1)]);
        use Source::*;
        assert_eq!(outs[0], vec![Input(0), Input(1), Const(0), Flag(0)]);
        assert_eq!(outs[1], vec![Input(0)]);
        assert_eq!(outs[2], vec![Input(1), Const(1), Flag(1)]);
        assert!(outs[3].is_empty(), "a slot nothing writes");
    }

    #[test]
    fn readers_other_than_the_owner_once_each() {
        assert_eq!(foreign_readers(1, &[1, 2, 3, 2, 1]), vec![2, 3]);
        assert!(foreign_readers(0, &[0, 0]).is_empty());
    }
}
