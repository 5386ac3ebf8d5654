//! Soak (issue 5 item 5): replaying a small two-stream graph many times keeps memory and the
//! thread count flat (R3.8, R5.5, R5.12: buffers are released or reused, never accumulated).
//!
//! - `soak_short` (CI): 20,000 replays; RSS may grow by less than 32 MiB, and the thread count
//!   must not change.
//! - `soak_1m` (`#[ignore]`d, run by hand): 1,000,000 replays by default, or
//!   `TAGSTREAM_SOAK_REPLAYS`; RSS may grow by less than 16 MiB, thread count unchanged. It
//!   prints RSS (`VmRSS`) and `Threads` from `/proc/self/status` at the start, every 100,000
//!   replays and at the end:
//!
//!   ```text
//!   cargo test --release --test soak -- --ignored --nocapture
//!   TAGSTREAM_SOAK_REPLAYS=5000000 cargo test --release --test soak -- --ignored --nocapture
//!   ```
//!
//! This file holds only these two tests, so in a normal run its process runs one test and the
//! thread count is not disturbed by other tests' threads (libtest runs tests on threads of its
//! own). Memory release on drop and idle workers are in `tests/lifecycle.rs`. Linux only.

#![cfg(target_os = "linux")]

use std::time::Instant;

use tagstream::ops::{create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{CompileConfig, DType, Mode, Result, Tensor, compile, synchronize};

/// A field of `/proc/self/status` (`VmRSS` in KiB, `Threads`).
fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is available");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
}

fn rss_kib() -> u64 {
    status_field("VmRSS")
}

fn threads() -> u64 {
    status_field("Threads")
}

/// Replays the model `replays` times after a warm-up and checks the figures. Every 1000
/// replays the host reads an output (so the queues stay short, as in a real serving loop) and
/// checks it against the first call's result.
fn soak(replays: u64, rss_limit_mib: u64, report_every: u64) {
    let ev = create_tagged_event("soak-ev").unwrap();
    let mut model = compile(
        move |x: &[Tensor]| -> Result<Vec<Tensor>> {
            let a = x[0].add(&x[1])?;
            tagged_event_record(&ev)?;
            let m = {
                let _s = stream_switch("soak-side")?;
                tagged_event_wait(&ev)?;
                a.matmul(&x[0])?
            };
            Ok(vec![a.relu()?, m])
        },
        CompileConfig::default().mode(Mode::ReduceOverhead),
    );
    let x = vec![
        Tensor::randn(&[8, 8], DType::F32, 1).unwrap(),
        Tensor::randn(&[8, 8], DType::F32, 2).unwrap(),
    ];
    let first = model.run(&x).unwrap();
    let want: Vec<Vec<f32>> = first.iter().map(|t| t.to_vec_f32().unwrap()).collect();
    drop(first);
    // Warm-up: output buffers, allocator caches and the side stream's worker settle.
    for _ in 0..1000 {
        drop(model.run(&x).unwrap());
    }
    synchronize().unwrap();

    let (rss0, threads0) = (rss_kib(), threads());
    println!("soak: start: RSS {rss0} KiB, {threads0} threads; {replays} replays");
    let started = Instant::now();
    for i in 1..=replays {
        let out = model.run(&x).unwrap();
        if i % 1000 == 0 {
            assert_eq!(out[1].to_vec_f32().unwrap(), want[1], "replay {i}");
            assert_eq!(out[0].to_vec_f32().unwrap(), want[0], "replay {i}");
        }
        if i % report_every == 0 && i != replays {
            println!(
                "soak: {i} replays: RSS {} KiB, {} threads, {:.1} s",
                rss_kib(),
                threads(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    synchronize().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let (rss1, threads1) = (rss_kib(), threads());
    println!(
        "soak: end: RSS {rss1} KiB ({:+} KiB), {threads1} threads; {replays} replays in \
         {elapsed:.1} s ({:.1} µs per replay)",
        rss1 as i64 - rss0 as i64,
        elapsed * 1e6 / replays as f64
    );
    let stats = model.stats();
    assert_eq!(
        (stats.captures, stats.replays),
        (1, replays + 1000),
        "every call after the first was a replay"
    );
    assert!(
        rss1 < rss0 + rss_limit_mib * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB over {replays} replays (limit {rss_limit_mib} MiB)"
    );
    assert_eq!(threads1, threads0, "the thread count changed");
}

/// The CI version: 20,000 replays.
#[test]
fn soak_short() {
    soak(20_000, 32, 5_000);
}

/// The long soak: 1,000,000 replays by default, `TAGSTREAM_SOAK_REPLAYS` to change it.
#[test]
#[ignore = "long: 1,000,000 replays (TAGSTREAM_SOAK_REPLAYS overrides)"]
fn soak_1m() {
    let replays = std::env::var("TAGSTREAM_SOAK_REPLAYS")
        .ok()
        .map(|v| v.parse().expect("TAGSTREAM_SOAK_REPLAYS is a number"))
        .unwrap_or(1_000_000);
    soak(replays, 16, 100_000);
}
