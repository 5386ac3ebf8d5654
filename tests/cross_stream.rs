//! Cross-stream ordering in eager mode: events order reads, a missing event is refused
//! deterministically, host waits order everything (semantics §1, §3: R1.7–R1.11, R3.3–R3.10).

use tagstream::Error;
use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::reference::{self, BinaryOp, UnaryOp};
use tagstream::scope::stream_switch;
use tagstream::{DType, Tensor, stream_activity, synchronize};

fn input(seed: u64) -> Tensor {
    Tensor::randn(&[16, 16], DType::F32, seed).unwrap()
}

#[test]
fn producer_record_wait_consumer_is_correct_1000_times_r1_8_r3_5() {
    let ev = create_tagged_event("xs-handoff").unwrap();
    let x = input(1);
    let x_host = x.to_vec_f32().unwrap();
    for i in 0..1000 {
        let k = Tensor::full(&[16, 16], i as f32, DType::F32).unwrap();
        let produced = {
            let _p = stream_switch("xs-producer").unwrap();
            let p = x.add(&k).unwrap();
            tagged_event_record(&ev).unwrap();
            p
        };
        let consumed = {
            let _c = stream_switch("xs-consumer").unwrap();
            tagged_event_wait(&ev).unwrap();
            produced.mul(&produced).unwrap()
        };
        let got = consumed.to_vec_f32().unwrap();
        for (g, xv) in got.iter().zip(&x_host) {
            let p = xv + i as f32;
            assert_eq!(*g, p * p, "repetition {i}");
        }
    }
}

#[test]
fn the_same_without_the_event_is_a_data_race_every_time_r3_5_e9() {
    let x = input(2);
    for i in 0..1000 {
        let produced = {
            let _p = stream_switch("xs-nr-producer").unwrap();
            x.exp().unwrap()
        };
        let before = stream_activity();
        let err = {
            let _c = stream_switch("xs-nr-consumer").unwrap();
            produced.mul(&produced).unwrap_err()
        };
        assert_eq!(
            err,
            Error::DataRace {
                reader: "mul".into(),
                reader_stream: "xs-nr-consumer".into(),
                producer: "exp".into(),
                producer_stream: "xs-nr-producer".into(),
            },
            "repetition {i}"
        );
        // R3.9: a refused call issues nothing.
        let after = stream_activity();
        let issued = |a: &[tagstream::StreamActivity]| {
            a.iter()
                .find(|s| s.tag == "xs-nr-consumer")
                .map_or(0, |s| s.issued)
        };
        assert_eq!(
            issued(&before),
            issued(&after),
            "a refused op must not be issued"
        );
        if i == 0 {
            let msg = err.to_string();
            for needle in ["mul", "\"xs-nr-consumer\"", "exp", "\"xs-nr-producer\""] {
                assert!(msg.contains(needle), "message names {needle}: {msg}");
            }
        }
    }
}

#[test]
fn a_read_on_the_producers_own_stream_always_passes_r3_5() {
    let _s = stream_switch("xs-same").unwrap();
    let a = input(3).exp().unwrap();
    let b = a.relu().unwrap().add(&a).unwrap();
    assert_eq!(b.shape(), &[16, 16]);
}

#[test]
fn eager_wait_on_a_never_recorded_event_is_a_noop_sc15_r1_9() {
    let e = create_tagged_event("xs-never").unwrap();
    let pending = input(4).exp().unwrap(); // main stream, pending
    let _s = stream_switch("xs-never-side").unwrap();
    tagged_event_wait(&e).unwrap(); // returns at once, orders nothing
    let err = pending.add(&pending).unwrap_err();
    assert!(matches!(err, Error::DataRace { .. }), "{err}");
}

#[test]
fn a_wait_binds_to_the_latest_earlier_record_sc16_r1_8_r1_10() {
    let e = create_tagged_event("xs-latest").unwrap();
    let x = input(5);
    let a = x.exp().unwrap();
    tagged_event_record(&e).unwrap();
    let b = x.relu().unwrap();
    {
        let _s = stream_switch("xs-latest-side").unwrap();
        tagged_event_wait(&e).unwrap();
        assert!(a.add(&a).is_ok(), "a was produced before the record");
        let err = b.add(&b).unwrap_err();
        assert!(
            matches!(err, Error::DataRace { ref producer, .. } if producer == "relu"),
            "{err}"
        );
    }
    tagged_event_record(&e).unwrap(); // re-arm after b
    let _s = stream_switch("xs-latest-side").unwrap();
    tagged_event_wait(&e).unwrap();
    let c = b.add(&b).unwrap();
    let want: Vec<f32> = b.to_vec_f32().unwrap().iter().map(|v| v + v).collect();
    assert_eq!(c.to_vec_f32().unwrap(), want);
}

#[test]
fn records_issued_after_a_wait_do_not_affect_it_r1_8() {
    let e = create_tagged_event("xs-after").unwrap();
    let x = input(6);
    tagged_event_record(&e).unwrap();
    let _s = stream_switch("xs-after-side").unwrap();
    tagged_event_wait(&e).unwrap();
    let late = {
        let _m = stream_switch("default").unwrap();
        let v = x.exp().unwrap();
        tagged_event_record(&e).unwrap();
        v
    };
    // The wait was bound before `late` existed, so `late` is not ordered.
    assert!(matches!(
        late.add(&late).unwrap_err(),
        Error::DataRace { .. }
    ));
}

#[test]
fn a_wait_on_the_recording_stream_is_allowed_r1_11() {
    let e = create_tagged_event("xs-self").unwrap();
    let a = input(7).exp().unwrap();
    tagged_event_record(&e).unwrap();
    tagged_event_wait(&e).unwrap();
    assert!(a.add(&a).is_ok());
}

#[test]
fn nesting_gives_no_ordering_but_an_event_does_sc6_r2_7() {
    let x0 = input(8);
    let x1 = input(9);
    let err = {
        let _s1 = stream_switch("xs-nest-1").unwrap();
        let a = x0.exp().unwrap();
        let _s2 = stream_switch("xs-nest-2").unwrap();
        a.add(&x1).unwrap_err()
    };
    assert_eq!(
        err,
        Error::DataRace {
            reader: "add".into(),
            reader_stream: "xs-nest-2".into(),
            producer: "exp".into(),
            producer_stream: "xs-nest-1".into(),
        }
    );
    let e = create_tagged_event("xs-nest-ev").unwrap();
    let b = {
        let _s1 = stream_switch("xs-nest-1").unwrap();
        let a = x0.exp().unwrap();
        tagged_event_record(&e).unwrap();
        let _s2 = stream_switch("xs-nest-2").unwrap();
        tagged_event_wait(&e).unwrap();
        a.add(&x1).unwrap()
    };
    // Serial reference (R6.5): exp, then add, rounded to f32.
    let e = reference::unary(UnaryOp::Exp, &x0.to_vec_f32().unwrap(), DType::F32);
    let want = reference::binary(BinaryOp::Add, &e, &x1.to_vec_f32().unwrap(), DType::F32);
    assert_eq!(b.to_vec_f32().unwrap(), want);
}

#[test]
fn side_stream_value_used_on_main_without_event_sc17_and_with_event_sc18() {
    let (x0, x1, x2) = (input(10), input(11), input(12));
    let y = {
        let _s = stream_switch("xs-sc17").unwrap();
        x0.matmul(&x1).unwrap()
    };
    let err = y.add(&x2).unwrap_err();
    assert_eq!(
        err,
        Error::DataRace {
            reader: "add".into(),
            reader_stream: "default".into(),
            producer: "matmul".into(),
            producer_stream: "xs-sc17".into(),
        }
    );
    let e = create_tagged_event("xs-sc18").unwrap();
    let y = {
        let _s = stream_switch("xs-sc17").unwrap();
        let y = x0.matmul(&x1).unwrap();
        tagged_event_record(&e).unwrap();
        y
    };
    tagged_event_wait(&e).unwrap();
    let z = y.add(&x2).unwrap();
    let (yv, x2v) = (y.to_vec_f32().unwrap(), x2.to_vec_f32().unwrap());
    let want: Vec<f32> = yv.iter().zip(&x2v).map(|(a, b)| a + b).collect();
    assert_eq!(z.to_vec_f32().unwrap(), want);
}

#[test]
fn host_reads_order_everything_they_waited_for_r3_6() {
    let x = input(13);
    let y = {
        let _s = stream_switch("xs-host-a").unwrap();
        x.exp().unwrap()
    };
    let _ = y.to_vec_f32().unwrap(); // H := H ⊔ clock(exp)
    assert!(
        y.add(&y).is_ok(),
        "after to_vec_f32 every stream may read y"
    );
    let z = {
        let _s = stream_switch("xs-host-b").unwrap();
        x.relu().unwrap()
    };
    synchronize().unwrap(); // H := H ⊔ V_s for every s
    let _s = stream_switch("xs-host-a").unwrap();
    assert!(
        z.mul(&z).is_ok(),
        "after synchronize every stream may read z"
    );
}

#[test]
fn host_built_tensors_are_ready_on_every_stream_r3_6() {
    let x = Tensor::from_vec(vec![1.0, -2.0], &[2], DType::BF16).unwrap();
    for tag in ["xs-ready-1", "xs-ready-2"] {
        let _s = stream_switch(tag).unwrap();
        assert_eq!(x.relu().unwrap().to_vec_f32().unwrap(), vec![1.0, 0.0]);
    }
}

#[test]
fn a_thread_spawned_inside_a_scope_starts_on_default_sc38_r2_3() {
    let _s = stream_switch("xs-spawner").unwrap();
    let tag = std::thread::spawn(tagstream::scope::current_stream)
        .join()
        .unwrap();
    assert_eq!(tag, "default");
}

#[test]
fn results_do_not_depend_on_timing_r3_10() {
    // Same program, repeated with different amounts of queued work in front: identical bits.
    let e = create_tagged_event("xs-determinism").unwrap();
    let run = |warmup: usize| {
        let x = Tensor::randn(&[64, 64], DType::F16, 42).unwrap();
        for _ in 0..warmup {
            let _ = x.matmul(&x).unwrap();
        }
        let a = x.matmul(&x).unwrap().silu().unwrap();
        tagged_event_record(&e).unwrap();
        let b = {
            let _s = stream_switch("xs-det-side").unwrap();
            tagged_event_wait(&e).unwrap();
            a.softmax().unwrap()
        };
        b.to_vec_f32().unwrap()
    };
    let first = run(0);
    for w in [1, 5, 20] {
        assert_eq!(run(w), first);
    }
}
