//! The capture cache and replay contract: one graph per signature (R5.3, SC24, SC39), the
//! capture limit and eager fallback (R5.4, SC25), owned outputs that replays never overwrite
//! (R5.5, SC26, SC27), `record_tagged_stream` (R4.10, SC22, SC23), events and clocks after a run
//! (R5.8, SC35), the caller's scopes set aside (R5.1) and `Mode::Eager` equal to plain eager
//! code (R3.11).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tagstream::models::seed_model;
use tagstream::ops::{
    TaggedEvent, create_tagged_event, record_tagged_stream, tagged_event_record, tagged_event_wait,
};
use tagstream::scope::{current_stream, stream_switch};
use tagstream::{Compiled, DType, Error, Mode, Result, Tensor, compile};

mod common;
use common::{bits, counters, eager, issued, ro, tensor_bits};

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(shape, dtype, seed).unwrap()
}

/// SC24/SC25's one-input closure: `exp` in a side scope.
fn exp_on(side: &'static str) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        let _s = stream_switch(side)?;
        Ok(vec![x[0].exp()?])
    }
}

/// Runs `c` on `x` and checks the one output against plain eager `exp` (R6.4).
fn run_exp(c: &mut Compiled, x: &Tensor) {
    let out = c.run(std::slice::from_ref(x)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        tensor_bits(&out[0]),
        tensor_bits(&x.exp().unwrap()),
        "{:?}",
        x.shape()
    );
}

/// SC24: every new signature (shape or dtype) captures; a known one replays, whatever the
/// values (R5.3).
#[test]
fn sc24_new_signatures_capture_and_known_ones_replay_r5_3() {
    let side = "cap-cache-sc24-1";
    let mut c = compile(exp_on(side), ro());
    for (i, rows) in [3, 4, 5].into_iter().enumerate() {
        run_exp(&mut c, &randn(&[rows, 2], DType::F32, 10 + i as u64));
    }
    assert_eq!(counters(&c), (3, 0, 0, false));
    assert_eq!(c.cached_graphs(), 3);

    run_exp(&mut c, &randn(&[3, 2], DType::F32, 20));
    assert_eq!(counters(&c), (3, 1, 0, false));

    run_exp(&mut c, &randn(&[3, 2], DType::F16, 21));
    assert_eq!(counters(&c), (4, 1, 0, false), "F16 is a new signature");
    assert_eq!(c.cached_graphs(), 4);
    assert_eq!(
        c.graph_dump().unwrap(),
        format!(
            "\"default\": copy_in(0), record(fork), wait(join1)\n\
             \"{side}\": wait(fork), exp, record(join1)"
        )
    );

    // New values with known signatures never capture.
    for (seed, shape, dtype) in [
        (30, [4, 2], DType::F32),
        (31, [3, 2], DType::F16),
        (32, [5, 2], DType::F32),
        (33, [3, 2], DType::F32),
    ] {
        run_exp(&mut c, &randn(&shape, dtype, seed));
    }
    assert_eq!(counters(&c), (4, 5, 0, false));
    assert_eq!(c.cached_graphs(), 4);
}

/// SC25: with `capture_limit(1)` the second signature falls back to eager execution for good,
/// for the captured signature too; graphs are dropped; the fallback keeps the side stream
/// (R5.4, R3.11).
#[test]
fn sc25_capture_limit_1_falls_back_to_eager_for_good_r5_4() {
    let side = "cap-cache-sc25-1";
    let mut c = compile(exp_on(side), ro().capture_limit(1));
    run_exp(&mut c, &randn(&[3, 2], DType::F32, 40));
    assert_eq!(counters(&c), (1, 0, 0, false));
    assert_eq!(c.cached_graphs(), 1);

    run_exp(&mut c, &randn(&[4, 2], DType::F32, 41));
    assert_eq!(
        counters(&c),
        (1, 0, 1, true),
        "limit reached: eager fallback"
    );
    assert_eq!(c.cached_graphs(), 0, "all graphs are dropped");
    assert!(c.graph_dump().is_none(), "the latest run used no graph");

    let before = issued(side).unwrap();
    run_exp(&mut c, &randn(&[3, 2], DType::F32, 42));
    assert_eq!(
        counters(&c),
        (1, 0, 2, true),
        "a captured signature runs eagerly too"
    );
    assert_eq!(
        issued(side).unwrap() - before,
        3,
        "the fallback still issues wait(fork), exp, record(join) on the side stream"
    );

    run_exp(&mut c, &randn(&[5, 2], DType::F32, 43));
    assert_eq!(counters(&c), (1, 0, 3, true));
}

#[test]
fn sc25_capture_limit_0_falls_back_on_the_first_call_r5_4() {
    let mut c = compile(exp_on("cap-cache-sc25-0-1"), ro().capture_limit(0));
    run_exp(&mut c, &randn(&[3, 2], DType::F32, 50));
    assert_eq!(counters(&c), (0, 0, 1, true));
    assert_eq!(c.cached_graphs(), 0);
    assert!(c.graph_dump().is_none());
}

/// f(x) = [y, y + x] with y = exp(x) made on stream `side` and handed to main by an event.
fn held_model(
    side: &'static str,
    e: TaggedEvent,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        let y = {
            let _s = stream_switch(side)?;
            let y = x[0].exp()?;
            tagged_event_record(&e)?;
            y
        };
        tagged_event_wait(&e)?;
        let z = y.add(&x[0])?;
        Ok(vec![y, z])
    }
}

/// The bits of `held_model`'s outputs for `x`, computed by plain eager code on main.
fn held_expected(x: &Tensor) -> Vec<Vec<u32>> {
    let y = x.exp().unwrap();
    let z = y.add(x).unwrap();
    vec![tensor_bits(&y), tensor_bits(&z)]
}

fn small(seed: u64) -> Tensor {
    randn(&[16, 16], DType::F32, seed)
}

/// SC26: outputs are owned; a replay never writes a buffer the caller still holds (R5.5).
#[test]
fn sc26_held_outputs_keep_their_values_across_replays_r5_5() {
    let mut c = compile(
        held_model(
            "cap-cache-sc26-1",
            create_tagged_event("cap-cache-sc26-e").unwrap(),
        ),
        ro(),
    );
    let (a, b, d) = (small(60), small(61), small(62));
    let o1 = c.run(std::slice::from_ref(&a)).unwrap();
    let o2 = c.run(std::slice::from_ref(&b)).unwrap();
    // Read the newer outputs first: the older ones are checked after the replay has completed.
    assert_eq!(bits(&o2), held_expected(&b));
    assert_eq!(bits(&o1), held_expected(&a), "o1 still equals f(a)");
    drop(o1);
    let o3 = c.run(std::slice::from_ref(&d)).unwrap();
    assert_eq!(bits(&o3), held_expected(&d));
    assert_eq!(bits(&o2), held_expected(&b), "o2 still equals f(b)");
    assert_eq!(counters(&c), (1, 2, 0, false));
}

/// R5.5: outputs held across 100 replays keep their values while every new output is correct.
#[test]
fn held_outputs_stay_intact_over_100_replays_r5_5() {
    let mut c = compile(
        held_model(
            "cap-cache-held100-1",
            create_tagged_event("cap-cache-held100-e").unwrap(),
        ),
        ro(),
    );
    let mut held = Vec::new();
    for i in 0..101 {
        let x = small(1000 + i);
        let want = held_expected(&x);
        let out = c.run(std::slice::from_ref(&x)).unwrap();
        assert_eq!(bits(&out), want, "call {i}");
        held.push((out, want));
    }
    assert_eq!(counters(&c), (1, 100, 0, false));
    for (i, (out, want)) in held.iter().enumerate() {
        assert_eq!(&bits(out), want, "held output of call {i}");
    }
}

/// SC27: an input returned as an output keeps each call's value across replays (R4.11, R5.5).
#[test]
fn sc27_input_returned_as_output_keeps_each_calls_value_r5_5() {
    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![x[0].clone(), x[0].relu()?]) },
        ro(),
    );
    let xs: Vec<Tensor> = (70..73).map(small).collect();
    let outs: Vec<Vec<Tensor>> = xs
        .iter()
        .map(|x| c.run(std::slice::from_ref(x)).unwrap())
        .collect();
    assert_eq!(counters(&c), (1, 2, 0, false));
    for (i, (x, out)) in xs.iter().zip(&outs).enumerate().rev() {
        assert_eq!(
            tensor_bits(&out[0]),
            tensor_bits(x),
            "call {i}: the returned input"
        );
        assert_eq!(
            tensor_bits(&out[1]),
            tensor_bits(&x.relu().unwrap()),
            "call {i}: relu"
        );
    }
}

/// SC39: replays never call the closure, so a host side effect happens once per capture (R4.1).
#[test]
fn sc39_closure_runs_once_per_capture_r4_1() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut c = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            counter.fetch_add(1, Ordering::SeqCst);
            let _s = stream_switch("cap-cache-sc39-1")?;
            Ok(vec![x[0].exp()?])
        },
        ro(),
    );
    for (i, rows) in [4, 4, 2, 4, 2].into_iter().enumerate() {
        run_exp(&mut c, &randn(&[rows, 4], DType::F32, 80 + i as u64));
    }
    assert_eq!(counters(&c), (2, 3, 0, false));
    assert_eq!(calls.load(Ordering::SeqCst) as u64, c.stats().captures);
}

const SC22_SIDE: &str = "cap-cache-sc22-1";

/// SC22: a = x0+x1 on main, record e; scope "1" { wait e; b = a*a }; (record_tagged_stream(a,
/// "1")); drop a; c = x0-x1 on main; return [b, c].
fn sc22_model(
    e: TaggedEvent,
    record_stream: bool,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        let a = x[0].add(&x[1])?;
        tagged_event_record(&e)?;
        let b = {
            let _s = stream_switch(SC22_SIDE)?;
            tagged_event_wait(&e)?;
            a.mul(&a)?
        };
        if record_stream {
            record_tagged_stream(&a, SC22_SIDE)?;
        }
        drop(a);
        let c = x[0].sub(&x[1])?;
        Ok(vec![b, c])
    }
}

/// SC22: with and without `record_tagged_stream`, `b` and `c` are correct on every replay; the
/// plan never lets `c` take the buffer of `a` while "1" still reads it (R4.9, R4.10).
#[test]
fn sc22_record_tagged_stream_never_changes_results_r4_9_r4_10() {
    for record_stream in [false, true] {
        let e = create_tagged_event(&format!("cap-cache-sc22-e-{record_stream}")).unwrap();
        let mut c = compile(sc22_model(e, record_stream), ro());
        for call in 0..11 {
            let x0 = randn(&[64, 64], DType::F32, 100 + 2 * call);
            let x1 = randn(&[64, 64], DType::F32, 101 + 2 * call);
            let out = c.run(&[x0.clone(), x1.clone()]).unwrap();
            let (h0, h1) = (x0.to_vec_f32().unwrap(), x1.to_vec_f32().unwrap());
            let want_b: Vec<f32> = h0.iter().zip(&h1).map(|(p, q)| (p + q) * (p + q)).collect();
            let want_c: Vec<f32> = h0.iter().zip(&h1).map(|(p, q)| p - q).collect();
            assert_eq!(
                out[0].to_vec_f32().unwrap(),
                want_b,
                "b, call {call}, record_tagged_stream {record_stream}"
            );
            assert_eq!(
                out[1].to_vec_f32().unwrap(),
                want_c,
                "c, call {call}, record_tagged_stream {record_stream}"
            );
        }
        assert_eq!(counters(&c), (1, 10, 0, false));
    }
}

/// SC23: in a capture, `"default"` means main and a tag with no work in the graph is a no-op
/// that creates no stream; an empty tag is `InvalidTag` (E2), which fails the capture.
#[test]
fn sc23_record_tagged_stream_default_unused_and_empty_tags_r4_10_e2() {
    let unused = "cap-cache-sc23-unused";
    let mut c = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].exp()?;
            record_tagged_stream(&a, "default")?;
            record_tagged_stream(&a, unused)?;
            Ok(vec![a.relu()?])
        },
        ro(),
    );
    for seed in [90, 91] {
        let x = small(seed);
        let out = c.run(std::slice::from_ref(&x)).unwrap();
        assert_eq!(
            tensor_bits(&out[0]),
            tensor_bits(&x.exp().unwrap().relu().unwrap())
        );
    }
    assert_eq!(counters(&c), (1, 1, 0, false));
    assert!(
        issued(unused).is_none(),
        "no stream is created for {unused}"
    );
    assert!(!c.graph_dump().unwrap().contains(unused));

    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].exp()?;
            record_tagged_stream(&a, "")?;
            Ok(vec![a])
        },
        ro(),
    );
    let err = c.run(&[small(92)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTag {
                call: "record_tagged_stream",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(counters(&c), (0, 0, 0, false));
    assert_eq!(c.cached_graphs(), 0);
}

/// SC23: in eager code `record_tagged_stream` is a no-op that creates no stream; an empty tag
/// is still `InvalidTag`.
#[test]
fn sc23_record_tagged_stream_in_eager_code_r4_10() {
    let t = small(95).exp().unwrap();
    let tag = "cap-cache-sc23-eager-unused";
    record_tagged_stream(&t, tag).unwrap();
    record_tagged_stream(&t, "default").unwrap();
    assert!(issued(tag).is_none());
    assert!(matches!(
        record_tagged_stream(&t, "").unwrap_err(),
        Error::InvalidTag {
            call: "record_tagged_stream",
            ..
        }
    ));
}

/// SC35: scope "1" { y = exp(x0); record e }; return y.
fn sc35_model(e: TaggedEvent) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        let _s = stream_switch("cap-cache-sc35-1")?;
        let y = x[0].exp()?;
        tagged_event_record(&e)?;
        Ok(vec![y])
    }
}

/// SC35: after a run, the graph's record of `e` is the event's latest record and `y`'s producer
/// is where eager issue would have put it, so eager code in "2" that waits on `e` may read `y`:
/// after a capture, a replay and a `Mode::Eager` run alike (R5.8).
#[test]
fn sc35_events_recorded_in_a_graph_order_later_eager_code_r5_8() {
    for (label, config) in [("ro", ro()), ("eager", eager())] {
        let e = create_tagged_event(&format!("cap-cache-sc35-e-{label}")).unwrap();
        let mut c = compile(sc35_model(e.clone()), config);
        for call in 0..2 {
            let x = small(110 + call);
            let y = c.run(std::slice::from_ref(&x)).unwrap().remove(0);
            let z = {
                let _s = stream_switch("cap-cache-sc35-2").unwrap();
                tagged_event_wait(&e).unwrap();
                y.add(&y)
                    .unwrap_or_else(|err| panic!("{label} call {call}: {err}"))
            };
            let want: Vec<f32> = y.to_vec_f32().unwrap().iter().map(|v| v + v).collect();
            assert_eq!(z.to_vec_f32().unwrap(), want, "{label} call {call}");
            assert_eq!(
                tensor_bits(&y),
                tensor_bits(&x.exp().unwrap()),
                "{label} call {call}"
            );
        }
    }
}

/// R5.1: `run` called inside a scope: the closure starts on `"default"`, its main-stream work
/// goes to the main stream, not the caller's, and the caller's scope is current again after.
#[test]
fn run_inside_a_scope_starts_the_closure_on_default_r5_1() {
    let outer = "cap-cache-r51-outer";
    for config in [ro(), eager()] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let mut c = compile(
            move |x: &[Tensor]| -> Result<Vec<Tensor>> {
                log.lock().unwrap().push(current_stream());
                let y = {
                    let _s = stream_switch("cap-cache-r51-1")?;
                    x[0].exp()?
                };
                Ok(vec![y, x[0].relu()?])
            },
            config,
        );
        {
            let _g = stream_switch(outer).unwrap();
            let before = issued(outer);
            for call in 0..2 {
                let x = small(120 + call);
                let out = c.run(std::slice::from_ref(&x)).unwrap();
                assert_eq!(current_stream(), outer, "the caller's scope is back");
                // The expectations run on main, so the caller's stream stays untouched.
                let _main = stream_switch("default").unwrap();
                assert_eq!(tensor_bits(&out[0]), tensor_bits(&x.exp().unwrap()));
                assert_eq!(tensor_bits(&out[1]), tensor_bits(&x.relu().unwrap()));
            }
            assert_eq!(
                issued(outer),
                before,
                "{:?}: no work went to the caller's stream",
                config.get_mode()
            );
        }
        assert_eq!(current_stream(), "default");
        let calls = if config.get_mode() == Mode::Eager {
            2
        } else {
            1
        };
        assert_eq!(*seen.lock().unwrap(), vec!["default"; calls]);
        if let Some(dump) = c.graph_dump() {
            assert!(dump.starts_with("\"default\": "), "{dump}");
            assert!(!dump.contains(outer), "{dump}");
        }
    }
}

/// R3.11: `Mode::Eager` through `compile` gives the bits of plain eager code, issues the
/// fork/join closure as real entries (side stream: wait(fork), wait(ev), matmul, record(join)
/// where plain code issues wait(ev), matmul), and uses no graph.
#[test]
fn mode_eager_equals_plain_eager_code_r3_11() {
    let side = "cap-cache-r311-1";
    let mut c = compile(
        seed_model(
            create_tagged_event("cap-cache-r311-66-eager").unwrap(),
            side,
        ),
        eager(),
    );
    let mut plain = seed_model(
        create_tagged_event("cap-cache-r311-66-plain").unwrap(),
        side,
    );
    for call in 0..2 {
        let x: Vec<Tensor> = (0..4)
            .map(|i| randn(&[32, 32], DType::BF16, 130 + 4 * call + i))
            .collect();
        let start = issued(side).unwrap_or(0);
        let compiled_out = c.run(&x).unwrap();
        let mid = issued(side).unwrap();
        let plain_out = plain(&x).unwrap();
        let end = issued(side).unwrap();
        assert_eq!(bits(&compiled_out), bits(&plain_out), "call {call}");
        assert_eq!(mid - start, 4, "Mode::Eager issues the closure entries");
        assert_eq!(end - mid, 2, "plain eager code gets no closure entries");
    }
    assert_eq!(counters(&c), (0, 0, 2, false));
    assert_eq!(c.cached_graphs(), 0);
    assert!(c.graph_dump().is_none());
    assert!(c.graph_dot().is_none());
    assert!(c.memory_stats().is_none());
}
