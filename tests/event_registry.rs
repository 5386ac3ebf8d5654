//! Tagged-event creation: uniqueness, concurrency, empty tags (semantics §1, R1.1–R1.6, E1, E2).

use std::sync::{Arc, Barrier};

use tagstream::Error;
use tagstream::ops::{
    create_tagged_event, record_tagged_stream, tagged_event_record, tagged_event_wait,
};
use tagstream::scope::{current_stream, stream_switch};
use tagstream::{DType, Tensor};

#[test]
fn duplicate_tag_is_refused_and_first_event_stays_usable_sc10_r1_2_e1() {
    let ev = create_tagged_event("X").unwrap();
    let err = create_tagged_event("X").unwrap_err();
    assert_eq!(err, Error::TagInUse { tag: "X".into() });
    assert!(
        err.to_string().contains("\"X\""),
        "message names the tag: {err}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    // The first event still records and waits (R1.2).
    tagged_event_record(&ev).unwrap();
    let _s = stream_switch("registry-side").unwrap();
    tagged_event_wait(&ev).unwrap();
    assert_eq!(ev.tag(), "X");
}

#[test]
fn a_tag_stays_taken_after_every_handle_is_dropped_sc12_r1_4() {
    let ev = create_tagged_event("Y").unwrap();
    let clone = ev.clone();
    drop(ev);
    drop(clone);
    assert_eq!(
        create_tagged_event("Y").unwrap_err(),
        Error::TagInUse { tag: "Y".into() }
    );
}

#[test]
fn sixteen_threads_create_one_tag_exactly_one_wins_sc11_r1_3() {
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                create_tagged_event("race")
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("creator thread panicked"))
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one create must succeed");
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(
            r.as_ref().unwrap_err(),
            &Error::TagInUse { tag: "race".into() }
        );
    }
}

#[test]
fn a_thousand_distinct_tags_from_eight_threads_all_succeed() {
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                (0..125)
                    .map(|i| create_tagged_event(&format!("distinct-{t}-{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut n = 0;
    for h in handles {
        for r in h.join().expect("creator thread panicked") {
            let ev = r.expect("distinct tags must all be created");
            assert!(ev.tag().starts_with("distinct-"));
            n += 1;
        }
    }
    assert_eq!(n, 1000);
}

#[test]
fn empty_tags_are_invalid_everywhere_sc13_r1_5_r2_10_e2() {
    let e = create_tagged_event("").unwrap_err();
    assert_eq!(
        e,
        Error::InvalidTag {
            call: "create_tagged_event",
            tag: String::new()
        }
    );
    assert!(
        e.to_string().contains("create_tagged_event") && e.to_string().contains("empty"),
        "{e}"
    );
    let e = stream_switch("").unwrap_err();
    assert_eq!(
        e,
        Error::InvalidTag {
            call: "stream_switch",
            tag: String::new()
        }
    );
    assert!(
        e.to_string().contains("stream_switch") && e.to_string().contains("empty"),
        "{e}"
    );
    let t = Tensor::zeros(&[2], DType::F32).unwrap();
    let e = record_tagged_stream(&t, "").unwrap_err();
    assert_eq!(
        e,
        Error::InvalidTag {
            call: "record_tagged_stream",
            tag: String::new()
        }
    );
    assert!(e.to_string().contains("record_tagged_stream"), "{e}");
    // Nothing was registered or entered.
    assert_eq!(current_stream(), "default");
    assert!(create_tagged_event("registry-after-empty").is_ok());
}

#[test]
fn default_and_stream_names_are_valid_event_tags_r1_1_r1_5() {
    // Event tags and stream tags are separate namespaces.
    let _g = stream_switch("shared-name").unwrap();
    assert!(create_tagged_event("shared-name").is_ok());
    assert!(create_tagged_event("default").is_ok());
    assert!(create_tagged_event("ünïcødé ✓").is_ok());
}

#[test]
fn tagged_event_is_clone_send_sync_r1_6() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug>() {}
    assert_traits::<tagstream::ops::TaggedEvent>();
    let ev = create_tagged_event("registry-send").unwrap();
    let ev2 = ev.clone();
    std::thread::spawn(move || tagged_event_record(&ev2).unwrap())
        .join()
        .unwrap();
    assert_eq!(ev.tag(), "registry-send");
}
