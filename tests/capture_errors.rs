//! Errors of a capture (semantics §7: E9, E10, E12, E13; R4.3, R4.6–R4.8, R4.11, R4.12, R5.2):
//! each is returned by the `run` call that captures, nothing is cached, no counter changes
//! (R5.10), the thread is back on `"default"` and stops capturing, and `Mode::Eager` behaves as
//! R3.11 says (it refuses races and open scopes, but lets a wait bind as in R1.8–R1.9).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tagstream::ops::{TaggedEvent, create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::{current_stream, stream_switch};
use tagstream::{CompileStats, Compiled, DType, Error, Result, Tensor, compile, synchronize};

mod common;
use common::{assert_mentions, bits, counters, eager, inputs, issued, ro, stats_tuple};

/// `synchronize` and host reads move the process-wide host frontier `H` (R3.6), which can
/// legitimately turn another thread's racy read into an ordered one (R3.10). The tests of this
/// file that expect an eager `DataRace`, and those that synchronize, hold this lock.
static HOST_FRONTIER: Mutex<()> = Mutex::new(());

fn host_frontier() -> MutexGuard<'static, ()> {
    HOST_FRONTIER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// R4.12, R5.10: after a failed call nothing is cached, no counter changed, and the thread is
/// on `"default"` with no open scope.
fn assert_untouched(c: &Compiled) {
    assert_eq!(counters(c), (0, 0, 0, false), "no counter changes");
    assert_eq!(c.cached_graphs(), 0, "nothing is cached");
    assert!(c.graph_dump().is_none(), "no graph was used");
    assert_eq!(current_stream(), "default");
}

const SC17_SIDE: &str = "cap-errors-sc17-1";
/// SC18's own side stream: a test that joins and reads a stream may order another test's
/// racy read on it (R3.10), so no two tests share a stream.
const SC18_SIDE: &str = "cap-errors-sc18-1";

/// SC17/SC18: scope `side` { y = x0@x1 (record e) }; (wait e on main); z = y + x2 on main.
fn sc17_model(
    side: &'static str,
    e: Option<TaggedEvent>,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        let y = {
            let _s = stream_switch(side)?;
            let y = x[0].matmul(&x[1])?;
            if let Some(e) = &e {
                tagged_event_record(e)?;
            }
            y
        };
        if let Some(e) = &e {
            tagged_event_wait(e)?;
        }
        Ok(vec![y.add(&x[2])?])
    }
}

/// SC17: a side-stream value read on main without an event is refused at capture (R4.8) and
/// under `Mode::Eager` (R3.11), naming `add` on main and `matmul` on the side stream (E9).
#[test]
fn sc17_side_value_read_on_main_without_event_is_a_data_race_r4_8_e9() {
    let _h = host_frontier();
    let x = inputs(3, 0);
    for config in [ro(), eager()] {
        let mut c = compile(sc17_model(SC17_SIDE, None), config);
        for call in 0..2 {
            let err = c.run(&x).unwrap_err();
            assert!(
                matches!(&err, Error::DataRace { reader, reader_stream, producer, producer_stream }
                    if reader.starts_with("add") && reader_stream == "default"
                        && producer.starts_with("matmul") && producer_stream == SC17_SIDE),
                "{:?} call {call}: {err:?}",
                config.get_mode()
            );
            assert_mentions(
                &err,
                &["add", "\"default\"", "matmul", "\"cap-errors-sc17-1\""],
            );
            assert_untouched(&c);
        }
    }
}

/// SC18: the same with an event is accepted, and every replay is eager-equal (R5.6).
#[test]
fn sc18_with_an_event_is_accepted_and_eager_equal_over_10_replays_r5_6() {
    let mut captured = compile(
        sc17_model(
            SC18_SIDE,
            Some(create_tagged_event("cap-errors-sc18-e-ro").unwrap()),
        ),
        ro(),
    );
    let mut compiled_eager = compile(
        sc17_model(
            SC18_SIDE,
            Some(create_tagged_event("cap-errors-sc18-e-eager").unwrap()),
        ),
        eager(),
    );
    for call in 0..11 {
        let x = inputs(3, 100 + 3 * call);
        let got = bits(&captured.run(&x).unwrap());
        assert_eq!(
            got,
            bits(&compiled_eager.run(&x).unwrap()),
            "call {call}: eager-equal"
        );
    }
    assert_eq!(counters(&captured), (1, 10, 0, false));
    assert_eq!(counters(&compiled_eager), (0, 0, 11, false));
    let e = "cap-errors-sc18-e-ro";
    assert_eq!(
        captured.graph_dump().unwrap(),
        format!(
            "\"default\": copy_in(0), copy_in(1), copy_in(2), record(fork), wait(\"{e}\"), add, \
             wait(join1)\n\
             \"{SC18_SIDE}\": wait(fork), matmul, record(\"{e}\"), record(join1)"
        )
    );
}

/// SC28, first half: `to_vec_f32` inside a capture is refused, naming the call and the op that
/// produced the tensor (R4.3, E12). Nothing is cached, the next call fails the same way, and
/// the closure works under `Mode::Eager`.
#[test]
fn sc28_to_vec_f32_in_capture_is_host_sync_in_capture_r4_3_e12() {
    let _h = host_frontier();
    let model = || {
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let _s = stream_switch("cap-errors-sc28-1")?;
            let a = x[0].exp()?;
            let host = a.to_vec_f32()?;
            let k = Tensor::from_vec(host, a.shape(), a.dtype())?;
            Ok(vec![a, k])
        }
    };
    let x = inputs(1, 200);
    let mut c = compile(model(), ro());
    for call in 0..2 {
        let err = c.run(&x).unwrap_err();
        assert!(
            matches!(&err, Error::HostSyncInCapture { call, producer: Some(p) }
                if call.contains("to_vec_f32") && p.contains("exp")),
            "call {call}: {err:?}"
        );
        assert_mentions(&err, &["to_vec_f32", "exp"]);
        assert_untouched(&c);
    }
    let mut c = compile(model(), eager());
    let out = c.run(&x).unwrap();
    let want = bits(&[x[0].exp().unwrap()]).remove(0);
    assert_eq!(
        bits(&out),
        vec![want.clone(), want],
        "the host read saw exp(x0)"
    );
    assert_eq!(counters(&c), (0, 0, 1, false));
}

/// SC28, second half: `synchronize` inside a capture is refused the same way (R4.3, E12).
#[test]
fn sc28_synchronize_in_capture_is_host_sync_in_capture_r4_3_e12() {
    let _h = host_frontier();
    let model = || {
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].exp()?;
            synchronize()?;
            Ok(vec![a])
        }
    };
    let x = inputs(1, 210);
    let mut c = compile(model(), ro());
    for call in 0..2 {
        let err = c.run(&x).unwrap_err();
        assert!(
            matches!(&err, Error::HostSyncInCapture { call, producer: None }
                if call.contains("synchronize")),
            "call {call}: {err:?}"
        );
        assert_mentions(&err, &["synchronize"]);
        assert_untouched(&c);
    }
    let mut c = compile(model(), eager());
    assert_eq!(
        bits(&c.run(&x).unwrap()),
        bits(&[x[0].exp().unwrap()]),
        "Mode::Eager may synchronize"
    );
}

/// R4.3: a nested `Compiled::run` on a capturing thread is a host read too (E12). Under
/// `Mode::Eager` the thread does not capture, and the nested run is fine.
#[test]
fn nested_run_in_capture_is_host_sync_in_capture_r4_3_e12() {
    let model = || {
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let mut inner = compile(
                |x: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![x[0].exp()?]) },
                ro(),
            );
            inner.run(x)
        }
    };
    let x = inputs(1, 220);
    let mut c = compile(model(), ro());
    let err = c.run(&x).unwrap_err();
    assert!(
        matches!(&err, Error::HostSyncInCapture { call, producer: None } if call.contains("run")),
        "{err:?}"
    );
    assert_mentions(&err, &["run"]);
    assert_untouched(&c);

    let mut c = compile(model(), eager());
    assert_eq!(bits(&c.run(&x).unwrap()), bits(&[x[0].exp().unwrap()]));
}

/// SC29: an error of an op inside the closure is passed through unchanged (R7.2), no counter
/// changes, and the thread is on `"default"` with no open scope (R4.12).
#[test]
fn sc29_closure_error_passes_through_and_changes_nothing_r4_12() {
    let x = vec![
        Tensor::zeros(&[2, 3], DType::F32).unwrap(),
        Tensor::zeros(&[3, 2], DType::F32).unwrap(),
    ];
    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let _s = stream_switch("cap-errors-sc29-1")?;
            Ok(vec![x[0].add(&x[1])?])
        },
        ro(),
    );
    let err = c.run(&x).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { op: "add", lhs, rhs, .. }
            if lhs == &[2, 3] && rhs == &[3, 2]),
        "{err:?}"
    );
    assert_mentions(&err, &["add", "[2, 3]", "[3, 2]"]);
    assert_untouched(&c);

    // An error the closure makes itself comes back as it is.
    let user_error = Error::TagInUse {
        tag: "cap-errors-sc29-user".into(),
    };
    let returned = user_error.clone();
    let mut c = compile(
        move |_: &[Tensor]| -> Result<Vec<Tensor>> {
            let _s = stream_switch("cap-errors-sc29-1")?;
            Err(returned.clone())
        },
        ro(),
    );
    assert_eq!(c.run(&inputs(1, 230)).unwrap_err(), user_error);
    assert_untouched(&c);
}

const SC31_SIDE: &str = "cap-errors-sc31-1";

fn sc31_model() -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    |x: &[Tensor]| {
        std::mem::forget(stream_switch(SC31_SIDE)?);
        Ok(vec![x[0].exp()?])
    }
}

fn is_sc31_error(e: &Error) -> bool {
    matches!(e, Error::UnbalancedStreamSwitch { open, .. } if open == &[SC31_SIDE.to_string()])
}

/// SC31: a scope still open when the closure returns fails the capture, naming the open tag
/// (R4.11, E13); the caller's (empty) scope stack is restored (R4.12, R5.1).
#[test]
fn sc31_forgotten_guard_fails_capture_naming_the_open_tag_r4_11_e13() {
    let x = inputs(1, 300);
    let mut c = compile(sc31_model(), ro());
    for call in 0..2 {
        let err = c.run(&x).unwrap_err();
        assert!(is_sc31_error(&err), "call {call}: {err:?}");
        assert_mentions(&err, &["\"cap-errors-sc31-1\""]);
        assert_untouched(&c);
    }
    // No pending error is left behind: later ops run on main.
    let y = x[0].relu().unwrap();
    assert_eq!(current_stream(), "default");
    assert_eq!(bits(&[y]), bits(&[x[0].relu().unwrap()]));
}

/// R3.11: `Mode::Eager` applies the same scope check as a capture (R4.11).
#[test]
fn forgotten_guard_under_mode_eager_is_unbalanced_too_r3_11_r4_11() {
    let x = inputs(1, 310);
    let mut c = compile(sc31_model(), eager());
    let err = c.run(&x).unwrap_err();
    assert!(is_sc31_error(&err), "{err:?}");
    assert_untouched(&c);
}

/// SC33: a wait before the record of its event in the graph (R4.6, E10) names the tag, the
/// stream and position of the wait, and the later record on main. `Mode::Eager` treats the
/// wait as R1.8–R1.9 say and accepts the program.
#[test]
fn sc33_wait_before_record_is_wait_without_record_naming_the_later_record_r4_6_e10() {
    let tag = "cap-errors-sc33-e";
    let side = "cap-errors-sc33-1";
    let e = create_tagged_event(tag).unwrap();
    let model = |e: TaggedEvent| {
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let mm = {
                let _s = stream_switch(side)?;
                tagged_event_wait(&e)?;
                x[0].matmul(&x[1])?
            };
            tagged_event_record(&e)?;
            Ok(vec![mm])
        }
    };
    let x = inputs(2, 400);
    let mut c = compile(model(e.clone()), ro());
    for call in 0..2 {
        let err = c.run(&x).unwrap_err();
        assert!(
            matches!(&err, Error::WaitWithoutRecord { tag: t, stream, later_record: Some((s, _)), .. }
                if t == tag && stream == side && s == "default"),
            "call {call}: {err:?}"
        );
        assert_mentions(
            &err,
            &[
                "\"cap-errors-sc33-e\"",
                "\"cap-errors-sc33-1\"",
                "recorded later",
                "\"default\"",
            ],
        );
        assert_untouched(&c);
    }
    let mut c = compile(model(e), eager());
    let want = bits(&[x[0].matmul(&x[1]).unwrap()]);
    for call in 0..2 {
        assert_eq!(bits(&c.run(&x).unwrap()), want, "Mode::Eager call {call}");
    }
}

/// SC34: an event recorded only outside the graph cannot order a wait inside it (R4.6, E10; no
/// later record is named). `Mode::Eager` binds the wait to the outside record (R1.8).
#[test]
fn sc34_record_only_outside_the_graph_is_wait_without_record_r4_6_e10() {
    let tag = "cap-errors-sc34-e";
    let side = "cap-errors-sc34-1";
    let e = create_tagged_event(tag).unwrap();
    let x = inputs(1, 500);
    tagged_event_record(&e).unwrap(); // eagerly, on main, before any run
    let model = |e: TaggedEvent| {
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let _s = stream_switch(side)?;
            tagged_event_wait(&e)?;
            Ok(vec![x[0].exp()?])
        }
    };
    let mut c = compile(model(e.clone()), ro());
    let err = c.run(&x).unwrap_err();
    assert!(
        matches!(&err, Error::WaitWithoutRecord { tag: t, stream, later_record: None, .. }
            if t == tag && stream == side),
        "{err:?}"
    );
    assert_mentions(&err, &["\"cap-errors-sc34-e\"", "\"cap-errors-sc34-1\""]);
    assert!(!err.to_string().contains("recorded later"), "{err}");
    assert_untouched(&c);

    let mut c = compile(model(e), eager());
    assert_eq!(bits(&c.run(&x).unwrap()), bits(&[x[0].exp().unwrap()]));
}

const SC36_1: &str = "cap-errors-sc36-1";
const SC36_2: &str = "cap-errors-sc36-2";

/// Scope "1" { wait a; record b }; scope "2" { wait b; record a }.
fn sc36_model(
    a: TaggedEvent,
    b: TaggedEvent,
) -> impl FnMut(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static {
    move |x: &[Tensor]| {
        {
            let _s = stream_switch(SC36_1)?;
            tagged_event_wait(&a)?;
            tagged_event_record(&b)?;
        }
        {
            let _s = stream_switch(SC36_2)?;
            tagged_event_wait(&b)?;
            tagged_event_record(&a)?;
        }
        Ok(vec![x[0].relu()?])
    }
}

/// What the SC36 thread reports back.
#[derive(Debug)]
struct Sc36Report {
    capture: Result<()>,
    stats: CompileStats,
    issued_before: (u64, u64),
    issued_after: (u64, u64),
    eager: Result<Vec<f32>>,
}

/// SC36: a cycle attempt fails at its first wait, the wait on `a`, with `WaitWithoutRecord`
/// (R4.7); nothing is issued, nothing hangs, and `Mode::Eager` runs it (the first wait binds to
/// nothing, R1.9).
#[test]
fn sc36_cycle_attempt_fails_at_the_wait_on_a_and_nothing_hangs_r4_7() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let a = create_tagged_event("cap-errors-sc36-a").unwrap();
        let b = create_tagged_event("cap-errors-sc36-b").unwrap();
        let x = inputs(1, 600);
        let mut c = compile(sc36_model(a.clone(), b.clone()), ro());
        let issued_before = (issued(SC36_1).unwrap_or(0), issued(SC36_2).unwrap_or(0));
        let capture = c.run(&x).map(drop);
        let issued_after = (issued(SC36_1).unwrap_or(0), issued(SC36_2).unwrap_or(0));
        let stats = c.stats();
        let mut e = compile(sc36_model(a, b), eager());
        let eager = e.run(&x).and_then(|o| o[0].to_vec_f32());
        tx.send(Sc36Report {
            capture,
            stats,
            issued_before,
            issued_after,
            eager,
        })
        .unwrap();
    });
    let report = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("SC36 must neither hang nor panic");
    let err = report.capture.unwrap_err();
    assert!(
        matches!(&err, Error::WaitWithoutRecord { tag, stream, later_record: Some((s, _)), .. }
            if tag == "cap-errors-sc36-a" && stream == SC36_1 && s == SC36_2),
        "{err:?}"
    );
    assert_eq!(stats_tuple(report.stats), (0, 0, 0, false));
    assert_eq!(
        report.issued_after, report.issued_before,
        "a failed capture issues nothing"
    );
    let want = inputs(1, 600)[0].relu().unwrap().to_vec_f32().unwrap();
    assert_eq!(report.eager.unwrap(), want);
}

/// SC20: an input produced on a side stream and not ordered before main is refused by `run`,
/// naming input 0 and `exp` on the side stream (R5.2, E9), in either mode. After
/// `synchronize()` the same call is accepted (R3.6).
#[test]
fn sc20_input_from_a_side_stream_is_a_data_race_until_synchronize_r5_2_e9() {
    let _h = host_frontier();
    let side = "cap-errors-sc20-1";
    let x0 = Tensor::randn(&[64, 64], DType::F16, 700).unwrap();
    let model = || |x: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![x[0].relu()?]) };
    let mut compiled = [compile(model(), ro()), compile(model(), eager())];
    let t = {
        let _s = stream_switch(side).unwrap();
        x0.exp().unwrap()
    };
    for c in &mut compiled {
        let err = c.run(std::slice::from_ref(&t)).unwrap_err();
        assert!(
            matches!(&err, Error::DataRace { producer, .. } if producer.contains("input 0")),
            "{:?}: {err:?}",
            c.config().get_mode()
        );
        assert_mentions(&err, &["input 0", "exp", "\"cap-errors-sc20-1\""]);
        assert_untouched(c);
    }
    synchronize().unwrap();
    let want = bits(&[t.relu().unwrap()]);
    for c in &mut compiled {
        assert_eq!(bits(&c.run(std::slice::from_ref(&t)).unwrap()), want);
    }
    assert_eq!(counters(&compiled[0]), (1, 0, 0, false));
    assert_eq!(counters(&compiled[1]), (0, 0, 1, false));
}

/// R4.12: a panic in the closure during a capture reaches the caller; nothing is cached, no
/// counter changes, the thread stops capturing and is back on `"default"`, and the next call
/// captures.
#[test]
fn panic_in_the_closure_during_capture_reaches_the_caller_r4_12() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut c = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let y = {
                let _s = stream_switch("cap-errors-panic-1")?;
                let y = x[0].exp()?;
                if n == 0 {
                    panic!("cap-errors: user panic in capture");
                }
                y
            };
            Ok(vec![y])
        },
        ro(),
    );
    let x = inputs(1, 800);
    let payload = catch_unwind(AssertUnwindSafe(|| c.run(&x)))
        .expect_err("the closure's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"cap-errors: user panic in capture")
    );
    assert_untouched(&c);
    // The thread no longer captures: a host read works.
    let want = bits(&[x[0].exp().unwrap()]);
    let out = c.run(&x).unwrap();
    assert_eq!(bits(&out), want);
    assert_eq!(counters(&c), (1, 0, 0, false));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
