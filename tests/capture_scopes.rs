//! Stream scopes in a captured graph: the fork/join closure of R4.4 in exact per-stream entry
//! order (SC4, SC5, SC7, SC8, SC9, SC14, SC19), user events resolved inside the graph (R4.5),
//! and nesting that orders nothing (R2.7, SC6). Every accepted program is eager-equal: the
//! capture call, a replay, `Mode::Eager` and plain eager code give identical bits (R5.6, R6.4).

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::{current_stream, stream_switch};
use tagstream::{Compiled, Error, Result, Tensor, compile};

mod common;
use common::{bits, counters, eager, inputs, ro};

/// A model closure as `compile` takes it.
type Model = Box<dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send>;

/// The `graph_dump` text for these `(stream tag, entries)` lines.
fn dump(lines: &[(&str, &[&str])]) -> String {
    lines
        .iter()
        .map(|(stream, entries)| format!("\"{stream}\": {}", entries.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn record(tag: &str) -> String {
    format!("record(\"{tag}\")")
}

fn wait(tag: &str) -> String {
    format!("wait(\"{tag}\")")
}

/// Builds the model three times with `make(variant)` (variant `"ro"`, `"eager"`, `"plain"`, so
/// each instance can create its own events), runs it captured, under `Mode::Eager` and as plain
/// eager code on `x`, then replays it on new values, and asserts identical bits throughout.
/// Returns the captured `Compiled` after one capture and one replay.
fn capture_eager_equal(make: impl Fn(&str) -> Model, x: &[Tensor]) -> Compiled {
    let mut captured = compile(make("ro"), ro());
    let got = bits(&captured.run(x).unwrap());
    assert_eq!(counters(&captured), (1, 0, 0, false));
    assert_eq!(current_stream(), "default");

    let mut compiled_eager = compile(make("eager"), eager());
    assert_eq!(
        bits(&compiled_eager.run(x).unwrap()),
        got,
        "capture call vs Mode::Eager (R5.6)"
    );
    let mut plain = make("plain");
    assert_eq!(bits(&plain(x).unwrap()), got, "capture call vs plain eager");

    let fresh: Vec<Tensor> = x
        .iter()
        .zip(1000..)
        .map(|(t, seed)| Tensor::randn(t.shape(), t.dtype(), seed).unwrap())
        .collect();
    assert_eq!(
        bits(&captured.run(&fresh).unwrap()),
        bits(&compiled_eager.run(&fresh).unwrap()),
        "replay vs Mode::Eager (R5.6)"
    );
    assert_eq!(counters(&captured), (1, 1, 0, false));
    captured
}

fn sc4(variant: &str) -> Model {
    let e66 = create_tagged_event(&format!("cap-scopes-sc4-66-{variant}")).unwrap();
    let e77 = create_tagged_event(&format!("cap-scopes-sc4-77-{variant}")).unwrap();
    Box::new(move |x: &[Tensor]| {
        let add = x[0].add(&x[1])?;
        tagged_event_record(&e66)?;
        tagged_event_record(&e77)?;
        let _s1 = stream_switch("cap-scopes-sc4-1")?;
        tagged_event_wait(&e66)?;
        let mm1 = x[2].matmul(&x[3])?;
        let mm2 = {
            let _s2 = stream_switch("cap-scopes-sc4-2")?;
            tagged_event_wait(&e77)?;
            x[2].matmul(&x[3])?
        };
        Ok(vec![add, mm1, mm2])
    })
}

/// SC4: on each side stream the order is closure wait, user wait, matmul; scope "2" exits
/// first, so its join is join1 and main waits join1 then join2 (R4.4 c–d).
#[test]
fn sc4_two_events_nested_scopes_exact_entry_order_r4_4_r4_5() {
    let captured = capture_eager_equal(sc4, &inputs(4, 0));
    let (e66, e77) = ("cap-scopes-sc4-66-ro", "cap-scopes-sc4-77-ro");
    let want = dump(&[
        (
            "default",
            &[
                "copy_in(0)",
                "copy_in(1)",
                "copy_in(2)",
                "copy_in(3)",
                "record(fork)",
                "add",
                &record(e66),
                &record(e77),
                "wait(join1)",
                "wait(join2)",
            ],
        ),
        (
            "cap-scopes-sc4-1",
            &["wait(fork)", &wait(e66), "matmul", "record(join2)"],
        ),
        (
            "cap-scopes-sc4-2",
            &["wait(fork)", &wait(e77), "matmul", "record(join1)"],
        ),
    ]);
    let got = captured.graph_dump().unwrap();
    assert_eq!(got, want);
    // 5 records (2 user, fork, 2 joins) and 6 waits (2 user, 2 fork, 2 join).
    assert_eq!(got.matches("record(").count(), 5);
    assert_eq!(got.matches("wait(").count(), 6);
}

fn sc5(_variant: &str) -> Model {
    Box::new(|x: &[Tensor]| {
        let _s1 = stream_switch("cap-scopes-sc5-1")?;
        let mm1 = x[0].matmul(&x[1])?;
        let mm2 = {
            let _s2 = stream_switch("cap-scopes-sc5-2")?;
            x[0].matmul(&x[1])?
        };
        Ok(vec![mm1, mm2])
    })
}

/// SC5: record(fork) on main; wait(fork) on "1", then on "2"; the join of "2" (first to exit)
/// is join1, that of "1" join2; main waits join1, then join2.
#[test]
fn sc5_nested_scopes_without_user_events_join_in_exit_order_r4_4() {
    let captured = capture_eager_equal(sc5, &inputs(2, 10));
    let want = dump(&[
        (
            "default",
            &[
                "copy_in(0)",
                "copy_in(1)",
                "record(fork)",
                "wait(join1)",
                "wait(join2)",
            ],
        ),
        (
            "cap-scopes-sc5-1",
            &["wait(fork)", "matmul", "record(join2)"],
        ),
        (
            "cap-scopes-sc5-2",
            &["wait(fork)", "matmul", "record(join1)"],
        ),
    ]);
    assert_eq!(captured.graph_dump().unwrap(), want);
}

const SC6_1: &str = "cap-scopes-sc6-1";
const SC6_2: &str = "cap-scopes-sc6-2";
/// The fixed version's own streams: a test that joins and reads a stream may order another
/// test's racy read on it (R3.10), so no two tests share a stream.
const SC6F_1: &str = "cap-scopes-sc6f-1";
const SC6F_2: &str = "cap-scopes-sc6f-2";

/// Scope "1" { a = exp(x0); scope "2" { b = a + x1 } } with no event.
fn sc6_racy(_variant: &str) -> Model {
    Box::new(|x: &[Tensor]| {
        let _s1 = stream_switch(SC6_1)?;
        let a = x[0].exp()?;
        let b = {
            let _s2 = stream_switch(SC6_2)?;
            a.add(&x[1])?
        };
        Ok(vec![a, b])
    })
}

/// The same with a record on "1" after `exp` and a wait in "2" before `add`.
fn sc6_fixed(variant: &str) -> Model {
    let e = create_tagged_event(&format!("cap-scopes-sc6-e-{variant}")).unwrap();
    Box::new(move |x: &[Tensor]| {
        let _s1 = stream_switch(SC6F_1)?;
        let a = x[0].exp()?;
        tagged_event_record(&e)?;
        let b = {
            let _s2 = stream_switch(SC6F_2)?;
            tagged_event_wait(&e)?;
            a.add(&x[1])?
        };
        Ok(vec![b])
    })
}

fn is_sc6_race(e: &Error) -> bool {
    matches!(e, Error::DataRace { reader, reader_stream, producer, producer_stream }
        if reader.starts_with("add") && reader_stream == SC6_2
            && producer.starts_with("exp") && producer_stream == SC6_1)
}

/// SC6: an inner scope is not ordered after the outer scope's earlier ops (R2.7), so the
/// capture (R4.8), `Mode::Eager` (R3.11) and plain eager code (R3.5) all refuse the read.
#[test]
fn sc6_nesting_orders_nothing_data_race_in_capture_and_eager_r2_7_r4_8() {
    let x = inputs(2, 20);
    for config in [ro(), eager()] {
        let mut c = compile(sc6_racy(""), config);
        let err = c.run(&x).unwrap_err();
        assert!(
            is_sc6_race(&err),
            "{:?}: add on \"2\" reads exp on \"1\": {err:?}",
            config.get_mode()
        );
        let msg = err.to_string();
        for needle in ["add", "exp", "\"cap-scopes-sc6-1\"", "\"cap-scopes-sc6-2\""] {
            assert!(msg.contains(needle), "message names {needle}: {msg}");
        }
        assert_eq!(
            counters(&c),
            (0, 0, 0, false),
            "a failed call is not counted"
        );
        assert_eq!(c.cached_graphs(), 0);
        assert_eq!(current_stream(), "default");
    }
    let err = sc6_racy("")(&x).unwrap_err();
    assert!(is_sc6_race(&err), "plain eager: {err:?}");
}

#[test]
fn sc6_with_an_event_is_accepted_and_eager_equal_r4_5() {
    let captured = capture_eager_equal(sc6_fixed, &inputs(2, 30));
    let e = "cap-scopes-sc6-e-ro";
    let want = dump(&[
        (
            "default",
            &[
                "copy_in(0)",
                "copy_in(1)",
                "record(fork)",
                "wait(join1)",
                "wait(join2)",
            ],
        ),
        (SC6F_1, &["wait(fork)", "exp", &record(e), "record(join2)"]),
        (SC6F_2, &["wait(fork)", &wait(e), "add", "record(join1)"]),
    ]);
    assert_eq!(captured.graph_dump().unwrap(), want);
}

fn sc7(_variant: &str) -> Model {
    Box::new(|x: &[Tensor]| {
        let p = {
            let _s = stream_switch("cap-scopes-sc7-1")?;
            x[0].relu()?
        };
        let m = x[1].exp()?;
        let q = {
            let _s = stream_switch("cap-scopes-sc7-1")?;
            p.exp()? // same stream as `p`: ordered without an event
        };
        Ok(vec![p, m, q])
    })
}

/// SC7: one stream for the tag, and each scope instance gets its own fork wait and join pair
/// (R4.4 e).
#[test]
fn sc7_same_tag_twice_one_stream_two_fork_waits_two_joins_r2_2_r4_4() {
    let captured = capture_eager_equal(sc7, &inputs(2, 40));
    let want = dump(&[
        (
            "default",
            &[
                "copy_in(0)",
                "copy_in(1)",
                "record(fork)",
                "exp",
                "wait(join1)",
                "wait(join2)",
            ],
        ),
        (
            "cap-scopes-sc7-1",
            &[
                "wait(fork)",
                "relu",
                "record(join1)",
                "wait(fork)",
                "exp",
                "record(join2)",
            ],
        ),
    ]);
    let got = captured.graph_dump().unwrap();
    assert_eq!(got, want);
    assert_eq!(got.lines().count(), 2, "one line per stream");
}

fn sc8(_variant: &str) -> Model {
    Box::new(|x: &[Tensor]| {
        let a = x[0].add(&x[1])?;
        let b = a.matmul(&x[0])?;
        Ok(vec![a, b])
    })
}

/// SC8: no side-stream scope, no closure entries at all (R4.4 e), a single stream.
#[test]
fn sc8_no_scopes_single_stream_without_event_entries_r4_4() {
    let captured = capture_eager_equal(sc8, &inputs(2, 50));
    let got = captured.graph_dump().unwrap();
    assert_eq!(got, "\"default\": copy_in(0), copy_in(1), add, matmul");
    assert_eq!(got.lines().count(), 1);
    assert!(!got.contains("record(") && !got.contains("wait("), "{got}");
}

fn sc9(_variant: &str) -> Model {
    Box::new(|x: &[Tensor]| {
        let _s1 = stream_switch("cap-scopes-sc9-1")?;
        let c = {
            let _main = stream_switch("default")?;
            x[0].add(&x[1])?
        };
        Ok(vec![c])
    })
}

/// SC9: a `"default"` scope inside a side scope runs on main (R2.4) and gets no closure
/// entries; only the side scope does (R4.4 e).
#[test]
fn sc9_default_scope_inside_a_side_scope_runs_on_main_r2_4_r4_4() {
    let captured = capture_eager_equal(sc9, &inputs(2, 60));
    let want = dump(&[
        (
            "default",
            &[
                "copy_in(0)",
                "copy_in(1)",
                "record(fork)",
                "add",
                "wait(join1)",
            ],
        ),
        ("cap-scopes-sc9-1", &["wait(fork)", "record(join1)"]),
    ]);
    assert_eq!(captured.graph_dump().unwrap(), want);
}

fn sc14(variant: &str) -> Model {
    let e = create_tagged_event(&format!("cap-scopes-sc14-e-{variant}")).unwrap();
    Box::new(move |x: &[Tensor]| {
        let _s = stream_switch("cap-scopes-sc14-1")?;
        let y = x[0].exp()?;
        tagged_event_record(&e)?;
        Ok(vec![y])
    })
}

/// SC14: a record that nothing waits on changes no ordering (R1.10); the join still completes
/// `y` before the outputs.
#[test]
fn sc14_record_never_waited_is_accepted_and_eager_equal_r1_10() {
    let x = inputs(1, 70);
    let captured = capture_eager_equal(sc14, &x);
    let want = dump(&[
        ("default", &["copy_in(0)", "record(fork)", "wait(join1)"]),
        (
            "cap-scopes-sc14-1",
            &[
                "wait(fork)",
                "exp",
                &record("cap-scopes-sc14-e-ro"),
                "record(join1)",
            ],
        ),
    ]);
    assert_eq!(captured.graph_dump().unwrap(), want);
}

fn sc19(_variant: &str) -> Model {
    Box::new(|x: &[Tensor]| {
        let _s = stream_switch("cap-scopes-sc19-1")?;
        Ok(vec![x[0].matmul(&x[1])?])
    })
}

/// SC19: a side-stream value returned and never read on main needs no event; the join orders
/// it before the outputs (R4.4 d), and its value is the plain main-stream product (R6.4).
#[test]
fn sc19_side_value_returned_unread_on_main_r4_4() {
    let x = inputs(2, 80);
    let captured = capture_eager_equal(sc19, &x);
    let want = dump(&[
        (
            "default",
            &["copy_in(0)", "copy_in(1)", "record(fork)", "wait(join1)"],
        ),
        (
            "cap-scopes-sc19-1",
            &["wait(fork)", "matmul", "record(join1)"],
        ),
    ]);
    assert_eq!(captured.graph_dump().unwrap(), want);

    let mut c = compile(sc19(""), ro());
    let y = c.run(&x).unwrap();
    assert_eq!(bits(&y), bits(&[x[0].matmul(&x[1]).unwrap()]));
}
