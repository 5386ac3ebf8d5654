//! The seed model under reduce-overhead capture and replay (SC1–SC3): the exact per-stream entry
//! order of the fork/join closure (R4.4), the counters (R5.10), results bit-identical to
//! `Mode::Eager` and to plain eager code for every dtype (R5.6, R6.4), replays that leave earlier
//! outputs alone (R5.5), stream clocks advanced as eager issue would (R5.8), and the DOT and
//! memory figures of the captured graph (R4.9).

use tagstream::models::{seed_inputs, seed_model};
use tagstream::ops::create_tagged_event;
use tagstream::{CompileConfig, Compiled, DType, Mode, Tensor, compile};

mod common;
use common::{bits, counters, issued};

const SIZE: usize = 64;

/// Four `[SIZE, SIZE]` inputs with seeds `first_seed..first_seed + 4`.
fn inputs(dtype: DType, first_seed: u64) -> Vec<Tensor> {
    (first_seed..first_seed + 4)
        .map(|s| Tensor::randn(&[SIZE, SIZE], dtype, s).unwrap())
        .collect()
}

/// The seed model with a fresh event `event_tag`, compiled in `mode`.
fn compiled_seed(event_tag: &str, side: &str, mode: Mode) -> Compiled {
    let ev = create_tagged_event(event_tag).unwrap();
    compile(seed_model(ev, side), CompileConfig::default().mode(mode))
}

/// The seed model run once as plain eager code (no `compile`), with a fresh event.
fn plain_seed(event_tag: &str, side: &str, x: &[Tensor]) -> Vec<Tensor> {
    let mut model = seed_model(create_tagged_event(event_tag).unwrap(), side);
    model(x).unwrap()
}

/// SC1's graph: main copy-in ×4, record(fork), add, record(ev), matmul (mm1), add (add2),
/// wait(join1); side: wait(fork), wait(ev), matmul (mm), record(join1).
fn expected_dump(ev: &str, side: &str) -> String {
    format!(
        "\"default\": copy_in(0), copy_in(1), copy_in(2), copy_in(3), record(fork), add, \
         record(\"{ev}\"), matmul, add, wait(join1)\n\
         \"{side}\": wait(fork), wait(\"{ev}\"), matmul, record(join1)"
    )
}

#[test]
fn sc1_capture_dump_counters_and_eager_equal_bits_every_dtype_r4_4_r4_13_r5_6() {
    for dtype in DType::FLOATS {
        let name = dtype.name();
        let side = format!("cap-seed-sc1-1-{name}");
        let ev_ro = format!("cap-seed-sc1-66-{name}-ro");
        let x = seed_inputs(SIZE, dtype).unwrap();

        let mut ro = compiled_seed(&ev_ro, &side, Mode::ReduceOverhead);
        let out = ro.run(&x).unwrap();
        assert_eq!(out.len(), 4);
        for o in &out {
            assert_eq!((o.shape(), o.dtype()), (&[SIZE, SIZE][..], dtype));
        }
        assert_eq!(
            counters(&ro),
            (1, 0, 0, false),
            "{name}: the first call captures (R4.13, R5.10)"
        );
        assert_eq!(ro.cached_graphs(), 1);
        let dump = ro.graph_dump().expect("the capturing call used a graph");
        assert_eq!(dump, expected_dump(&ev_ro, &side), "{name}");
        // SC1: 3 records (user, fork, join) and 3 waits (fork, user, join).
        assert_eq!(dump.matches("record(").count(), 3, "{dump}");
        assert_eq!(dump.matches("wait(").count(), 3, "{dump}");

        let got = bits(&out);
        let mut eager = compiled_seed(&format!("cap-seed-sc1-66-{name}-eager"), &side, Mode::Eager);
        assert_eq!(
            bits(&eager.run(&x).unwrap()),
            got,
            "{name}: capture call vs Mode::Eager (R5.6)"
        );
        let plain = plain_seed(&format!("cap-seed-sc1-66-{name}-plain"), &side, &x);
        assert_eq!(bits(&plain), got, "{name}: capture call vs plain eager");
        // mm and mm1 are the same product on two streams (R6.4).
        assert_eq!(
            got[1], got[2],
            "{name}: matmul bits must not depend on the stream"
        );
    }
}

#[test]
fn sc2_replay_with_new_values_is_eager_equal_and_keeps_call_1_outputs_r5_3_r5_5() {
    for dtype in DType::FLOATS {
        let name = dtype.name();
        let side = format!("cap-seed-sc2-1-{name}");
        let ev_ro = format!("cap-seed-sc2-66-{name}-ro");
        let mut ro = compiled_seed(&ev_ro, &side, Mode::ReduceOverhead);
        let mut eager = compiled_seed(&format!("cap-seed-sc2-66-{name}-eager"), &side, Mode::Eager);
        let (x1, x2) = (seed_inputs(SIZE, dtype).unwrap(), inputs(dtype, 10));

        // Call 1's outputs are not read until call 2 has run and completed.
        let first = ro.run(&x1).unwrap();
        let second = ro.run(&x2).unwrap();
        assert_eq!(
            counters(&ro),
            (1, 1, 0, false),
            "{name}: new values, same signature: a replay (R5.3)"
        );
        assert_eq!(ro.cached_graphs(), 1);
        assert_eq!(ro.graph_dump().unwrap(), expected_dump(&ev_ro, &side));

        let want2 = bits(&eager.run(&x2).unwrap());
        let want1 = bits(&eager.run(&x1).unwrap());
        assert_ne!(want1, want2, "new inputs give new values");
        assert_eq!(bits(&second), want2, "{name}: replay vs Mode::Eager (R5.6)");
        assert_eq!(
            bits(&first),
            want1,
            "{name}: call 1's outputs are unchanged by the replay (R5.5)"
        );
    }
}

#[test]
fn sc3_plain_eager_has_no_closure_entries_and_the_same_bits_as_a_capture() {
    let dtype = DType::F16;
    let x = seed_inputs(SIZE, dtype).unwrap();
    let plain_side = "cap-seed-sc3-1-plain";
    let before = issued(plain_side).unwrap_or(0);
    let plain = plain_seed("cap-seed-sc3-66-plain", plain_side, &x);
    assert_eq!(
        issued(plain_side).unwrap_or(0) - before,
        2,
        "plain eager: the side stream holds wait(\"66\") and matmul only"
    );
    let mut ro = compiled_seed(
        "cap-seed-sc3-66-ro",
        "cap-seed-sc3-1-ro",
        Mode::ReduceOverhead,
    );
    assert_eq!(
        bits(&ro.run(&x).unwrap()),
        bits(&plain),
        "SC3 values are bit-identical to SC1"
    );
}

#[test]
fn each_run_advances_the_side_stream_like_eager_issue_of_its_four_entries_r5_8() {
    let side = "cap-seed-r58-1";
    let mut ro = compiled_seed("cap-seed-r58-66", side, Mode::ReduceOverhead);
    let start = issued(side).unwrap_or(0);
    ro.run(&inputs(DType::F16, 20)).unwrap();
    assert_eq!(
        issued(side).unwrap_or(0) - start,
        4,
        "capture call: wait(fork), wait(ev), matmul, record(join1) on the side stream"
    );
    ro.run(&inputs(DType::F16, 30)).unwrap();
    assert_eq!(
        issued(side).unwrap_or(0) - start,
        8,
        "replay: four more entries"
    );
    assert_eq!(counters(&ro), (1, 1, 0, false));
}

#[test]
fn graph_dot_names_both_streams_and_memory_stats_are_consistent_r4_9() {
    let dtype = DType::F16;
    let side = "cap-seed-dot-1";
    let mut ro = compiled_seed("cap-seed-dot-66", side, Mode::ReduceOverhead);
    assert!(ro.graph_dot().is_none(), "no graph before the first run");
    assert!(ro.memory_stats().is_none(), "no graph before the first run");
    ro.run(&seed_inputs(SIZE, dtype).unwrap()).unwrap();

    let dot = ro.graph_dot().expect("the latest run used a graph");
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("default"), "DOT names the main stream: {dot}");
    assert!(dot.contains(side), "DOT names the side stream: {dot}");

    let m = ro.memory_stats().expect("the latest run used a graph");
    assert!(
        m.arena_bytes <= m.value_bytes,
        "sharing never needs more than one buffer per value: {m:?}"
    );
    assert!(m.values >= 4, "the four inputs live in the arena: {m:?}");
    assert!(m.slots >= 1 && m.slots <= m.values, "{m:?}");
    assert_eq!(
        m.output_bytes,
        4 * SIZE * SIZE * dtype.size_in_bytes(),
        "four [64,64] F16 outputs in their own buffers: {m:?}"
    );
}
