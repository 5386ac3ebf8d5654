//! Timelines (issue 6): per-stream spans of eager runs and replays, arrows from each record to
//! the waits bound to it, and the Chrome-trace and SVG exports. Recording is process-wide (it
//! sees every thread's work), so the tests of this file take turns under one lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tagstream::ops::create_tagged_event;
use tagstream::trace::{self, SpanKind, Timeline};
use tagstream::{CompileConfig, DType, Mode, Tensor, compile, models};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

fn names_on(t: &Timeline, stream: &str) -> Vec<String> {
    t.spans()
        .iter()
        .filter(|s| s.stream == stream)
        .map(|s| s.name.clone())
        .collect()
}

/// A replay's timeline shows the graph's per-stream order (SC1) on one lane per stream, and an
/// arrow for each of its three bound waits (fork, "66", join1).
#[test]
fn replay_timeline_has_the_graphs_entries_and_arrows() {
    let _alone = alone();
    let ev = create_tagged_event("tl-seed-66").unwrap();
    let mut c = compile(
        models::seed_model(ev, "tl-seed-1"),
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    let x = models::seed_inputs(32, DType::F32).unwrap();
    c.run(&x).unwrap();
    let (out, t) = trace::record(|| c.run(&x)).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(t.streams(), vec!["default", "tl-seed-1"]);
    assert_eq!(
        names_on(&t, "default"),
        [
            "copy_in",
            "copy_in",
            "copy_in",
            "copy_in",
            "record(fork)",
            "add",
            "record(\"tl-seed-66\")",
            "matmul",
            "add",
            "wait(join)"
        ]
    );
    assert_eq!(
        names_on(&t, "tl-seed-1"),
        [
            "wait(fork)",
            "wait(\"tl-seed-66\")",
            "matmul",
            "record(join)"
        ]
    );
    let arrows: Vec<(String, String)> = t
        .arrows()
        .into_iter()
        .map(|(r, w)| (t.spans()[r].name.clone(), t.spans()[w].name.clone()))
        .collect();
    assert_eq!(arrows.len(), 3, "{arrows:?}");
    for (from, to) in [
        ("record(fork)", "wait(fork)"),
        ("record(\"tl-seed-66\")", "wait(\"tl-seed-66\")"),
        ("record(join)", "wait(join)"),
    ] {
        assert!(arrows.contains(&(from.into(), to.into())), "{arrows:?}");
    }
    // A wait never ends before the record it waited for (the arrow points forward in time).
    for (r, w) in t.arrows() {
        assert!(t.spans()[w].end_ns >= t.spans()[r].start_ns);
    }
    // Positions are the streams' own (R5.8): strictly increasing along each lane.
    for lane in t.streams() {
        let pos: Vec<u64> = t
            .spans()
            .iter()
            .filter(|s| s.stream == lane)
            .map(|s| s.position)
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{lane}: {pos:?}");
    }
}

/// The Chrome trace is valid JSON with one named track per stream, one complete event per span
/// and a start/finish flow pair per arrow.
#[test]
fn chrome_trace_is_valid_json_with_tracks_and_flows() {
    let _alone = alone();
    let a = Tensor::randn(&[16, 16], DType::F16, 1).unwrap();
    let ev = create_tagged_event("tl-json-ev").unwrap();
    let (_, t) = trace::record(|| {
        let b = a.exp()?;
        tagstream::ops::tagged_event_record(&ev)?;
        let _s = tagstream::scope::stream_switch("tl-json-1")?;
        tagstream::ops::tagged_event_wait(&ev)?;
        b.matmul(&a)
    })
    .unwrap();
    let v: Value = serde_json::from_str(&t.to_chrome_json()).expect("valid JSON");
    let events = v["traceEvents"].as_array().unwrap();
    let count = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count();
    assert_eq!(count("X"), t.spans().len());
    assert_eq!(count("s"), t.arrows().len());
    assert_eq!(count("f"), t.arrows().len());
    assert_eq!(t.arrows().len(), 1, "record(ev) → wait(ev)");
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tracks, ["stream \"default\"", "stream \"tl-json-1\""]);
    assert!(
        t.spans()
            .iter()
            .any(|s| s.kind == SpanKind::Wait && s.stream == "tl-json-1")
    );
}

/// The SVG has a lane per stream, labelled, and an arrow line per arrow.
#[test]
fn svg_has_lanes_and_arrows() {
    let _alone = alone();
    let ev = create_tagged_event("tl-svg-66").unwrap();
    let mut c = compile(
        models::seed_model(ev, "tl-svg-1"),
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    let x = models::seed_inputs(64, DType::BF16).unwrap();
    c.run(&x).unwrap();
    let (_, t) = trace::record(|| c.run(&x)).unwrap();
    let svg = trace::svg(&[("replay", &t)]);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("stream &quot;default&quot;"));
    assert!(svg.contains("stream &quot;tl-svg-1&quot;"));
    assert_eq!(
        svg.matches("marker-end=\"url(#arrow)\"").count(),
        t.arrows().len()
    );
    assert_eq!(
        svg.matches("<rect x=").count() - 2,
        t.spans().len(),
        "two lane backgrounds"
    );
}

/// SC25: after the eager fallback the timeline still shows the side stream's lane.
#[test]
fn fallback_still_runs_on_the_side_stream_sc25() {
    let _alone = alone();
    let mut c = compile(
        |x: &[Tensor]| {
            let _s = tagstream::scope::stream_switch("tl-fallback-1")?;
            Ok(vec![x[0].exp()?])
        },
        CompileConfig::default()
            .mode(Mode::ReduceOverhead)
            .capture_limit(1),
    );
    c.run(&[Tensor::randn(&[3, 2], DType::F32, 1).unwrap()])
        .unwrap();
    let x = Tensor::randn(&[4, 2], DType::F32, 2).unwrap();
    let (_, t) = trace::record(|| c.run(std::slice::from_ref(&x))).unwrap();
    assert!(c.stats().fell_back_to_eager);
    assert_eq!(t.streams(), vec!["default", "tl-fallback-1"]);
    assert_eq!(
        names_on(&t, "tl-fallback-1"),
        ["wait(fork)", "exp", "record(join)"]
    );
}

/// SC38: two `Compiled` values and plain eager code on two host threads all use one stream
/// per tag: one lane for it.
#[test]
fn one_lane_per_tag_across_threads_and_graphs_sc38() {
    let _alone = alone();
    let side = "tl-sc38-1";
    let f = move |x: &[Tensor]| -> tagstream::Result<Vec<Tensor>> {
        let _s = tagstream::scope::stream_switch(side)?;
        Ok(vec![x[0].relu()?])
    };
    let mut a = compile(f, CompileConfig::default().mode(Mode::ReduceOverhead));
    let mut b = compile(f, CompileConfig::default());
    let x = Tensor::randn(&[8], DType::F32, 3).unwrap();
    a.run(std::slice::from_ref(&x)).unwrap();
    let (_, t) = trace::record(|| {
        let x2 = x.clone();
        let other = std::thread::spawn(move || {
            assert_eq!(tagstream::scope::current_stream(), "default");
            let _s = tagstream::scope::stream_switch(side).unwrap();
            x2.exp().unwrap().to_vec_f32().unwrap()
        });
        a.run(std::slice::from_ref(&x))?;
        b.run(std::slice::from_ref(&x))?;
        other.join().expect("the other host thread");
        Ok(())
    })
    .unwrap();
    assert_eq!(t.streams().iter().filter(|s| *s == side).count(), 1);
    let on_side = names_on(&t, side);
    assert_eq!(
        on_side.iter().filter(|n| *n == "relu").count(),
        2,
        "{on_side:?}"
    );
    assert_eq!(
        on_side.iter().filter(|n| *n == "exp").count(),
        1,
        "{on_side:?}"
    );
}

/// A nested `record` on the same thread neither deadlocks nor steals the outer recording.
#[test]
fn nested_record_joins_the_outer_timeline() {
    let _alone = alone();
    let x = Tensor::full(&[4], 1.0, DType::F32).unwrap();
    let ((inner_out, inner), outer) = trace::record(|| {
        let a = x.exp()?;
        let nested = trace::record(|| a.relu())?;
        Ok(nested)
    })
    .unwrap();
    assert_eq!(inner_out.to_vec_f32().unwrap(), vec![1f32.exp(); 4]);
    assert!(inner.spans().is_empty());
    assert_eq!(names_on(&outer, "default"), ["exp", "relu"]);
}
