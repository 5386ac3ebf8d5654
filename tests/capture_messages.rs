//! Exact messages of capture-time errors (R7.2: tags in quotes, streams by tag, ops by name
//! and by which op of the closure they were) and the capture-limit warning, emitted once through `tracing`
//! (R5.4, E15). One scenario per test; tags are prefixed "cap-msg-".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{DType, Error, Result, Tensor, compile};

mod common;
use common::ro;

fn x(n: usize) -> Vec<Tensor> {
    (0..n as u64)
        .map(|s| Tensor::randn(&[4, 4], DType::F32, s).unwrap())
        .collect()
}

/// E9 in a capture (SC17, R7.2): both ops named as the user wrote them, with their streams and
/// which op of the closure each was (issue 16 item 3), as the eager message does.
#[test]
fn data_race_message_names_closure_ops_e9() {
    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let y = {
                let _s = stream_switch("cap-msg-race")?;
                x[0].matmul(&x[1])?
            };
            Ok(vec![y.add(&x[0])?])
        },
        ro(),
    );
    let err = c.run(&x(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "data race: add (op 2 of the closure) on stream \"default\" reads the output of matmul \
         (op 1 of the closure) on stream \"cap-msg-race\", which is not ordered before it; \
         record a tagged event on \"cap-msg-race\" after matmul (op 1 of the closure) and wait \
         on it in \"default\" before add (op 2 of the closure) (R3.5)"
    );
}

/// E9: records, waits and scope changes are not ops; the count is the closure's ops only, on
/// whatever stream each ran.
#[test]
fn data_race_counts_ops_across_streams_e9() {
    let ev = create_tagged_event("cap-msg-count").unwrap();
    let mut c = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].exp()?;
            tagged_event_record(&ev)?;
            let b = {
                let _s = stream_switch("cap-msg-count-side")?;
                tagged_event_wait(&ev)?;
                let b = a.relu()?;
                b.silu()?
            };
            let c = x[1].add(&x[0])?;
            Ok(vec![c.mul(&b)?])
        },
        ro(),
    );
    let err = c.run(&x(2)).unwrap_err();
    assert_eq!(
        err,
        Error::DataRace {
            reader: "mul (op 5 of the closure)".into(),
            reader_stream: "default".into(),
            producer: "silu (op 3 of the closure)".into(),
            producer_stream: "cap-msg-count-side".into(),
        }
    );
}

/// E10 (SC33): tag, stream, position and the later record.
#[test]
fn wait_without_record_message_e10() {
    let ev = create_tagged_event("cap-msg-e").unwrap();
    let mut c = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let y = {
                let _s = stream_switch("cap-msg-w")?;
                tagged_event_wait(&ev)?;
                x[0].exp()?
            };
            tagged_event_record(&ev)?;
            Ok(vec![y])
        },
        ro(),
    );
    let err = c.run(&x(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tagged_event_wait: event \"cap-msg-e\" is waited on stream \"cap-msg-w\" at position 2 \
         of the graph, but has no earlier record in the graph (it is recorded later, on stream \
         \"default\" at position 3)"
    );
}

/// E12 (SC28): the call and the producing op.
#[test]
fn host_sync_message_e12() {
    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let y = x[0].exp()?;
            y.to_vec_f32()?;
            Ok(vec![y])
        },
        ro(),
    );
    assert_eq!(
        c.run(&x(1)).unwrap_err().to_string(),
        "to_vec_f32 is a host read and is not allowed while a graph is being captured (the \
         tensor is produced by exp)"
    );
}

/// E13 at capture end (SC31): the open tags.
#[test]
fn open_scope_message_e13() {
    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            std::mem::forget(stream_switch("cap-msg-open")?);
            Ok(vec![x[0].relu()?])
        },
        ro(),
    );
    assert_eq!(
        c.run(&x(1)).unwrap_err().to_string(),
        "unbalanced stream_switch: scope(s) \"cap-msg-open\" still open at the end of the \
         capture; drop every guard before the closure returns (R4.11)"
    );
}

/// E14: a graph value leaked out of its capture through shared state.
#[test]
fn leaked_graph_value_is_foreign_e14() {
    let leak: Arc<std::sync::Mutex<Option<Tensor>>> = Arc::default();
    let stash = leak.clone();
    let mut c = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let y = x[0].exp()?;
            *stash.lock().unwrap() = Some(y.clone());
            Ok(vec![y])
        },
        ro(),
    );
    c.run(&x(1)).unwrap();
    let leaked = leak.lock().unwrap().take().unwrap();
    let err = leaked.relu().unwrap_err();
    assert!(
        matches!(err, Error::ForeignGraphValue { op: "relu", .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("relu: uses a value of graph #"),
        "{err}"
    );
    assert!(matches!(
        leaked.to_vec_f32().unwrap_err(),
        Error::ForeignGraphValue {
            op: "to_vec_f32",
            ..
        }
    ));
}

/// Counts `WARN` events; enough of a subscriber to observe R5.4's warning.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// R5.4 / E15 (SC25): one warning when the limit is hit, none for later new signatures.
#[test]
fn capture_limit_warns_once_e15() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = WarnCounter(warnings.clone());
    tracing::subscriber::with_default(subscriber, || {
        let mut c = compile(
            |x: &[Tensor]| -> Result<Vec<Tensor>> {
                let _s = stream_switch("cap-msg-limit")?;
                Ok(vec![x[0].exp()?])
            },
            ro().capture_limit(1),
        );
        for rows in [3, 4, 3, 5, 6] {
            let input = Tensor::randn(&[rows, 2], DType::F32, 1).unwrap();
            let out = c.run(std::slice::from_ref(&input)).unwrap();
            let want: Vec<f32> = input.to_vec_f32().unwrap();
            assert_eq!(out[0].to_vec_f32().unwrap().len(), want.len());
        }
        let s = c.stats();
        assert_eq!((s.captures, s.replays, s.eager_runs), (1, 0, 4));
        assert!(s.fell_back_to_eager);
    });
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
}

/// R2.8 in a capture: an out-of-order drop fails the capture even when the closure swallows
/// the pending error (the graph lost the joins of the cleared scopes).
#[test]
fn swallowed_unbalanced_switch_still_fails_the_capture_r2_8() {
    let mut c = compile(
        |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let g1 = stream_switch("cap-msg-u1")?;
            let g2 = stream_switch("cap-msg-u2")?;
            drop(g1);
            let _ = x[0].exp(); // returns (and clears) the pending error; swallowed
            drop(g2);
            Ok(vec![x[0].relu()?])
        },
        ro(),
    );
    let err = c.run(&x(1)).unwrap_err();
    assert!(
        matches!(&err, Error::UnbalancedStreamSwitch { dropped: Some(d), innermost: Some(i), .. }
            if d == "cap-msg-u1" && i == "cap-msg-u2"),
        "{err}"
    );
    assert_eq!(c.stats().captures, 0);
    assert_eq!(tagstream::scope::current_stream(), "default");
}
