//! Runtime benchmarks: the cross-stream event hand-off, eager issue cost of tiny ops, replay
//! cost per op of a captured 1000-op chain against eager, and the seed model eager and replayed. Run with `cargo bench --bench runtime`; every figure is a median
//! over repeated runs measured in this process (never a pass/fail threshold).
//!
//! The hand-off figure isolates the worker-to-worker signal from the host's issue cost: stream
//! "A" first waits on an event recorded after a long matmul on the main stream (the gate), so
//! the host has queued the whole ping-pong before the first hand-off happens, and the clock
//! starts when the gate's result reaches the host.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tagstream::ops::{TaggedEvent, create_tagged_event, tagged_event_record, tagged_event_wait};
use tagstream::scope::stream_switch;
use tagstream::{CompileConfig, Compiled, DType, Mode, Tensor, compile, models, synchronize};

struct Events {
    gate: TaggedEvent,
    a_to_b: TaggedEvent,
    b_to_a: TaggedEvent,
}

/// One gated ping-pong of `round_trips` round trips (2 hand-offs each). Returns the time from
/// the gate's completion (seen by the host through `to_vec_f32`, after everything is queued) to
/// the end of `synchronize`: the hand-offs alone, plus one host wake-up.
fn gated_ping_pong(gate_input: &Tensor, ev: &Events, round_trips: usize) -> (Duration, Duration) {
    let issue_start = Instant::now();
    let g = gate_input.matmul(gate_input).expect("gate matmul");
    tagged_event_record(&ev.gate).expect("record gate");
    {
        let _a = stream_switch("bench-A").expect("stream A");
        tagged_event_wait(&ev.gate).expect("wait gate");
    }
    for _ in 0..round_trips {
        {
            let _a = stream_switch("bench-A").expect("stream A");
            tagged_event_record(&ev.a_to_b).expect("record a->b");
        }
        {
            let _b = stream_switch("bench-B").expect("stream B");
            tagged_event_wait(&ev.a_to_b).expect("wait a->b");
            tagged_event_record(&ev.b_to_a).expect("record b->a");
        }
        {
            let _a = stream_switch("bench-A").expect("stream A");
            tagged_event_wait(&ev.b_to_a).expect("wait b->a");
        }
    }
    let issued = issue_start.elapsed();
    black_box(g.to_vec_f32().expect("gate result"));
    let start = Instant::now();
    synchronize().expect("synchronize");
    (start.elapsed(), issued)
}

fn handoff_report() {
    let ev = Events {
        gate: create_tagged_event("bench-gate").expect("event"),
        a_to_b: create_tagged_event("bench-a2b").expect("event"),
        b_to_a: create_tagged_event("bench-b2a").expect("event"),
    };
    // The gate must outlast issuing the ping-pong (checked below), and the ping-pong must last
    // far longer than one host wake-up, which the measured window includes.
    let gate_input = Tensor::randn(&[2000, 2000], DType::F32, 7).expect("input");
    let round_trips = 20_000u32;
    gated_ping_pong(&gate_input, &ev, 10); // warm-up: starts both workers
    let reps = 15;
    let mut per: Vec<Duration> = (0..reps)
        .map(|_| {
            let (t, issued) = gated_ping_pong(&gate_input, &ev, round_trips as usize);
            let _ = issued;
            t / (2 * round_trips)
        })
        .collect();
    per.sort();
    let (_, issued) = gated_ping_pong(&gate_input, &ev, round_trips as usize);
    println!(
        "  (issuing {} entries took {:.1} ms)",
        4 * round_trips,
        issued.as_secs_f64() * 1e3
    );
    println!(
        "event hand-off (ping-pong between two streams, {} hand-offs per run, {reps} runs): \
         median {} ns per hand-off (min {} ns, p25 {} ns, p75 {} ns)",
        2 * round_trips,
        per[reps / 2].as_nanos(),
        per[0].as_nanos(),
        per[reps / 4].as_nanos(),
        per[3 * reps / 4].as_nanos(),
    );
}

fn eager_issue(c: &mut Criterion) {
    let mut g = c.benchmark_group("eager");
    let x = Tensor::randn(&[16], DType::F32, 1).expect("input");
    let n = 1000u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function("cpu_tiny_add_chain_1000_f32", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut y = x.clone();
                for _ in 0..n {
                    y = y.add(&x).expect("add");
                }
                y.to_vec_f32().expect("read");
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn seed(c: &mut Criterion) {
    let mut g = c.benchmark_group("seed");
    g.sample_size(10);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let ev = create_tagged_event(&format!("bench-seed-{dtype}")).expect("event");
        let inputs = models::seed_inputs(1000, dtype).expect("inputs");
        for (name, mode) in [("eager", Mode::Eager), ("replay", Mode::ReduceOverhead)] {
            let mut model = compile(
                models::seed_model(ev.clone(), "bench-seed-side"),
                CompileConfig::default().mode(mode),
            );
            g.bench_function(format!("cpu_seed_{name}_1000_{dtype}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(model.run(&inputs).expect("seed"));
                        synchronize().expect("sync");
                    }
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

/// Median time of one call (issue, run, synchronize) of `model`.
fn call_median(model: &mut Compiled, inputs: &[Tensor], reps: usize) -> Duration {
    median_of(reps, || {
        black_box(model.run(inputs).expect("run"));
        synchronize().expect("sync");
    })
}

/// Eager vs replay per op for a 1000-op chain of 16-element ops, on one stream and split over
/// two, plus the arena against the sum of values; all ratios from this one process.
fn replay_report() {
    let n = 1000usize;
    for dtype in [DType::F32, DType::F16] {
        let inputs = models::tiny_inputs(16, dtype).expect("inputs");
        // One stream: the whole chain on main (`tiny_chain` with a "default" side scope).
        for (label, side) in [("1 stream", "default"), ("2 streams", "bench-chain-side")] {
            let mut eager = compile(models::tiny_chain(n, side), CompileConfig::default());
            let mut replay = compile(
                models::tiny_chain(n, side),
                CompileConfig::default().mode(Mode::ReduceOverhead),
            );
            let te = call_median(&mut eager, &inputs, 201);
            let tr = call_median(&mut replay, &inputs, 2001);
            let mem = replay.memory_stats().expect("a captured graph");
            println!(
                "tiny chain {n} ops [16] {dtype}, {label}: eager {:.0} ns/op, replay {:.1} ns/op, \
                 eager/replay {:.1}x; arena {} B vs values {} B",
                te.as_secs_f64() * 1e9 / n as f64,
                tr.as_secs_f64() * 1e9 / n as f64,
                te.as_secs_f64() / tr.as_secs_f64(),
                mem.arena_bytes,
                mem.value_bytes,
            );
        }
    }
    let ev = create_tagged_event("bench-replay-seed").expect("event");
    for dtype in [DType::F32, DType::F16] {
        let inputs = models::seed_inputs(1000, dtype).expect("inputs");
        let mut eager = compile(
            models::seed_model(ev.clone(), "bench-seed-side"),
            CompileConfig::default(),
        );
        let mut replay = compile(
            models::seed_model(ev.clone(), "bench-seed-side"),
            CompileConfig::default().mode(Mode::ReduceOverhead),
        );
        let te = call_median(&mut eager, &inputs, 15);
        let tr = call_median(&mut replay, &inputs, 15);
        let mem = replay.memory_stats().expect("a captured graph");
        println!(
            "seed 1000x1000 {dtype}: eager {:.2} ms, replay {:.2} ms, eager/replay {:.2}x; \
             arena {} B vs values {} B (+ {} B of outputs)",
            te.as_secs_f64() * 1e3,
            tr.as_secs_f64() * 1e3,
            te.as_secs_f64() / tr.as_secs_f64(),
            mem.arena_bytes,
            mem.value_bytes,
            mem.output_bytes,
        );
    }
}

/// Times `f` (which must leave all its work finished) `reps` times and returns the median.
fn median_of(reps: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[reps / 2]
}

/// Two independent 1000x1000 f32 matmul chains on two streams versus the same work on one
/// stream: shows the core split (each busy stream gets cores / busy threads) at work.
fn overlap_report() {
    let a = Tensor::randn(&[1000, 1000], DType::F32, 1).expect("input");
    let b = Tensor::randn(&[1000, 1000], DType::F32, 2).expect("input");
    let chain = |x: &Tensor| {
        let mut y = x.matmul(x).expect("matmul");
        for _ in 0..3 {
            y = y.matmul(x).expect("matmul");
        }
        y
    };
    let one = median_of(5, || {
        black_box((chain(&a), chain(&b)));
        synchronize().expect("sync");
    });
    let two = median_of(5, || {
        let ya = {
            let _s = stream_switch("bench-overlap-1").expect("stream");
            chain(&a)
        };
        let yb = {
            let _s = stream_switch("bench-overlap-2").expect("stream");
            chain(&b)
        };
        black_box((ya, yb));
        synchronize().expect("sync");
    });
    println!(
        "two independent 4-matmul chains (1000x1000 f32): one stream {:.1} ms, two streams {:.1} ms, \
         speed-up {:.2}x on {} cores",
        one.as_secs_f64() * 1e3,
        two.as_secs_f64() * 1e3,
        one.as_secs_f64() / two.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
}

/// Elementwise kernel throughput through the public API (one op on 1M elements).
fn kernel_report() {
    for (name, dtype) in [
        ("add", DType::F16),
        ("add", DType::F32),
        ("exp", DType::F32),
        ("gelu", DType::F16),
    ] {
        let x = Tensor::randn(&[1 << 20], dtype, 3).expect("input");
        let t = median_of(21, || {
            let y = if name == "add" {
                x.add(&x)
            } else if name == "exp" {
                x.exp()
            } else {
                x.gelu()
            };
            black_box(y.expect("op"));
            synchronize().expect("sync");
        });
        println!(
            "{name} {dtype} 1M elements: median {:.3} ms",
            t.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    handoff_report();
    overlap_report();
    kernel_report();
    replay_report();
    let mut c = Criterion::default().configure_from_args();
    eager_issue(&mut c);
    seed(&mut c);
    c.final_summary();
}
