//! Property test of the eager happens-before check (R3.4–R3.6, R1.8–R1.10) against an
//! independent oracle.
//!
//! Random programs of ops, records, waits and host reads over three streams run on the real
//! runtime. The oracle keeps, for every entry, the explicit *set* of entries that happen-before
//! it (stream order, bound-record edges, host edges), instead of vector clocks. For every op the
//! runtime must accept exactly when the oracle says each input's producer happens-before the
//! op, refuse with `DataRace` otherwise, and every host read must return the value the serial
//! program computes. Besides the two-operand `add`, `topk` (two entries: the positions, then
//! the values) makes `I32` positions on a stream and the three-operand `scatter` reads data,
//! positions and source (R6.12), each operand checked (R3.5).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use tagstream::ops::{TaggedEvent, create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{DType, Error, Tensor, synchronize};

const STREAMS: [&str; 3] = ["default", "hb-oracle-1", "hb-oracle-2"];
const EVENTS: usize = 2;

#[derive(Debug, Clone)]
enum Action {
    Add {
        stream: usize,
        a: usize,
        b: usize,
    },
    Record {
        stream: usize,
        event: usize,
    },
    Wait {
        stream: usize,
        event: usize,
    },
    /// `tensors[t].topk(4)`: values join the tensors, positions the indices.
    Topk {
        stream: usize,
        t: usize,
    },
    /// `tensors[a].scatter(0, indices[i], tensors[c])`.
    Scatter {
        stream: usize,
        a: usize,
        i: usize,
        c: usize,
    },
    HostRead {
        t: usize,
    },
    Synchronize,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..3usize, any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(stream, a, b)| Action::Add { stream, a: a.index(1 << 16), b: b.index(1 << 16) }),
        2 => (0..3usize, 0..EVENTS).prop_map(|(stream, event)| Action::Record { stream, event }),
        2 => (0..3usize, 0..EVENTS).prop_map(|(stream, event)| Action::Wait { stream, event }),
        1 => (0..3usize, any::<prop::sample::Index>())
            .prop_map(|(stream, t)| Action::Topk { stream, t: t.index(1 << 16) }),
        2 => (0..3usize, any::<[prop::sample::Index; 3]>())
            .prop_map(|(stream, [a, i, c])| Action::Scatter {
                stream, a: a.index(1 << 16), i: i.index(1 << 16), c: c.index(1 << 16),
            }),
        1 => any::<prop::sample::Index>().prop_map(|t| Action::HostRead { t: t.index(1 << 16) }),
        1 => Just(Action::Synchronize),
    ]
}

/// The oracle: explicit ancestor sets.
#[derive(Default)]
struct Oracle {
    /// ancestors[e] = every entry that happens-before entry e, e included.
    ancestors: Vec<BTreeSet<usize>>,
    last_on_stream: [Option<usize>; 3],
    host: BTreeSet<usize>,
    latest_record: [Option<usize>; EVENTS],
}

impl Oracle {
    /// What an entry issued now on `s` starts from: its stream's past plus the host's.
    fn base(&self, s: usize) -> BTreeSet<usize> {
        let mut b = self.host.clone();
        if let Some(e) = self.last_on_stream[s] {
            b.extend(&self.ancestors[e]);
        }
        b
    }

    fn issue(&mut self, s: usize, mut anc: BTreeSet<usize>) -> usize {
        let id = self.ancestors.len();
        anc.insert(id);
        self.ancestors.push(anc);
        self.last_on_stream[s] = Some(id);
        id
    }
}

static CASE: AtomicUsize = AtomicUsize::new(0);

fn run_program(actions: &[Action]) -> Result<(), TestCaseError> {
    // Everything issued by earlier cases becomes host-ordered, matching the oracle's fresh start.
    synchronize().expect("synchronize");
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let events: Vec<TaggedEvent> = (0..EVENTS)
        .map(|e| create_tagged_event(&format!("hb-oracle-{case}-{e}")).expect("fresh tag"))
        .collect();
    let mut oracle = Oracle::default();
    // (tensor, producer entry, expected value)
    let mut tensors: Vec<(Tensor, Option<usize>, f32)> = (0..3)
        .map(|i| {
            (
                Tensor::full(&[4], i as f32, DType::F32).expect("host tensor"),
                None,
                i as f32,
            )
        })
        .collect();
    // (positions, producer entry): a host constant first, then `topk` results. Every tensor
    // holds one value, so `topk` positions are `[0, 1, 2, 3]` (ties keep the lower first) and
    // a scatter of `src` at any permutation gives `src`'s value.
    let mut indices: Vec<(Tensor, Option<usize>)> = vec![(
        Tensor::from_vec(vec![3.0, 1.0, 0.0, 2.0], &[4], DType::I32).expect("host index"),
        None,
    )];
    for act in actions {
        match *act {
            Action::Add { stream, a, b } => {
                let (a, b) = (a % tensors.len(), b % tensors.len());
                let base = oracle.base(stream);
                let ordered = |p: Option<usize>| p.is_none_or(|p| base.contains(&p));
                let expect_ok = ordered(tensors[a].1) && ordered(tensors[b].1);
                let result = {
                    let _g = stream_switch(STREAMS[stream]).expect("switch");
                    tensors[a].0.add(&tensors[b].0)
                };
                match result {
                    Ok(t) => {
                        prop_assert!(
                            expect_ok,
                            "runtime accepted a read the oracle refuses: {act:?}"
                        );
                        let id = oracle.issue(stream, base);
                        let v = tensors[a].2 + tensors[b].2;
                        tensors.push((t, Some(id), v));
                    }
                    Err(e) => {
                        prop_assert!(!expect_ok, "runtime refused an ordered read {act:?}: {e}");
                        prop_assert!(matches!(e, Error::DataRace { .. }), "{e}");
                    }
                }
            }
            Action::Topk { stream, t } => {
                let t = t % tensors.len();
                let base = oracle.base(stream);
                let expect_ok = tensors[t].1.is_none_or(|p| base.contains(&p));
                let result = {
                    let _g = stream_switch(STREAMS[stream]).expect("switch");
                    tensors[t].0.topk(4)
                };
                match result {
                    Ok((values, positions)) => {
                        prop_assert!(
                            expect_ok,
                            "runtime accepted a read the oracle refuses: {act:?}"
                        );
                        let topk = oracle.issue(stream, base);
                        let gather = oracle.issue(stream, oracle.base(stream));
                        indices.push((positions, Some(topk)));
                        let v = tensors[t].2;
                        tensors.push((values, Some(gather), v));
                    }
                    Err(e) => {
                        prop_assert!(!expect_ok, "runtime refused an ordered read {act:?}: {e}");
                        prop_assert!(matches!(e, Error::DataRace { .. }), "{e}");
                    }
                }
            }
            Action::Scatter { stream, a, i, c } => {
                let (a, i, c) = (a % tensors.len(), i % indices.len(), c % tensors.len());
                let base = oracle.base(stream);
                let ordered = |p: Option<usize>| p.is_none_or(|p| base.contains(&p));
                let expect_ok =
                    ordered(tensors[a].1) && ordered(indices[i].1) && ordered(tensors[c].1);
                let result = {
                    let _g = stream_switch(STREAMS[stream]).expect("switch");
                    tensors[a].0.scatter(0, &indices[i].0, &tensors[c].0)
                };
                match result {
                    Ok(t) => {
                        prop_assert!(
                            expect_ok,
                            "runtime accepted a read the oracle refuses: {act:?}"
                        );
                        let id = oracle.issue(stream, base);
                        let v = tensors[c].2;
                        tensors.push((t, Some(id), v));
                    }
                    Err(e) => {
                        prop_assert!(!expect_ok, "runtime refused an ordered read {act:?}: {e}");
                        prop_assert!(matches!(e, Error::DataRace { .. }), "{e}");
                    }
                }
            }
            Action::Record { stream, event } => {
                let _g = stream_switch(STREAMS[stream]).expect("switch");
                tagged_event_record(&events[event]).expect("record");
                let base = oracle.base(stream);
                oracle.latest_record[event] = Some(oracle.issue(stream, base));
            }
            Action::Wait { stream, event } => {
                let _g = stream_switch(STREAMS[stream]).expect("switch");
                tagged_event_wait(&events[event]).expect("wait");
                let mut base = oracle.base(stream);
                if let Some(r) = oracle.latest_record[event] {
                    base.extend(&oracle.ancestors[r]);
                }
                oracle.issue(stream, base);
            }
            Action::HostRead { t } => {
                let (tensor, producer, value) = &tensors[t % tensors.len()];
                prop_assert_eq!(tensor.to_vec_f32().expect("read"), vec![*value; 4]);
                if let Some(p) = producer {
                    let anc = oracle.ancestors[*p].clone();
                    oracle.host.extend(anc);
                }
            }
            Action::Synchronize => {
                synchronize().expect("synchronize");
                for e in oracle.last_on_stream.into_iter().flatten() {
                    let anc = oracle.ancestors[e].clone();
                    oracle.host.extend(anc);
                }
            }
        }
    }
    for (t, _, v) in &tensors {
        prop_assert_eq!(t.to_vec_f32().expect("final read"), vec![*v; 4]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TAGSTREAM_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
    ))]

    #[test]
    fn race_check_matches_the_ancestor_set_oracle(actions in prop::collection::vec(action(), 1..60)) {
        run_program(&actions)?;
    }
}
