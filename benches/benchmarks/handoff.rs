//! The cross-stream event hand-off: a gated ping-pong between two streams
//! ([`models::PingPong`], shared with `tagstream bench`). One iteration is one round trip (two
//! hand-offs); the throughput is in hand-offs, so criterion's time per element is the time
//! per hand-off (target: at most 2 µs). No dtype: events carry no data.

use std::time::Duration;

use criterion::{Criterion, Throughput};
use tagstream::models::{self, PingPong};

/// Round trips per gated run: issuing them (about 1 µs each) must finish inside the gate.
const CHUNK: u64 = 10_000;

pub(crate) fn benches(c: &mut Criterion) {
    // A 1500x1500 f32 matmul gate: tens of milliseconds, longer than queueing CHUNK trips.
    let pp = PingPong::new("bench-handoff", 1500).expect("events");
    pp.run(10).expect("warm-up"); // starts both workers
    let mut g = c.benchmark_group("event_handoff");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2));
    g.bench_function("cpu_pingpong", |b| b.iter_custom(|iters| run(&pp, iters)));
    g.finish();
}

/// `iters` round trips in gated runs of at most [`CHUNK`]; the sum of their hand-off times.
fn run(pp: &models::PingPong, iters: u64) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        let n = left.min(CHUNK);
        let trips = u32::try_from(n).expect("CHUNK fits in u32");
        total += pp.run(trips).expect("ping-pong").handoffs;
        left -= n;
    }
    total
}
