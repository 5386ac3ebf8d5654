"""Python-side figures, to compare with examples/bench_rust.rs (same workloads):

    python examples/bench.py        (with the package installed, e.g. python/.venv/bin/python)

- eager ``add`` on 16-element f32 tensors, per op (a 1000-add chain, issue + run + sync);
- seed model (reduce-overhead, replay): the Python call, the Rust ``Compiled::run`` inside it
  (measured in Rust), their difference (the host overhead the binding adds), and call + sync.
"""

import statistics
import time

import tagstream as ts


def eager_add_per_op_ns():
    x = ts.randn(16, seed=1)

    def chain():
        t0 = time.perf_counter_ns()
        y = x
        for _ in range(1000):
            y = y + x
        ts.synchronize()
        return (time.perf_counter_ns() - t0) / 1000

    for _ in range(5):
        chain()
    return statistics.median(chain() for _ in range(101))


def seed(n, rounds, tag):
    ev = ts.ops.create_tagged_event(f"bench-py-66-{n}-{tag}")
    side = f"bench-py-1-{n}-{tag}"

    def model(a, b, c, d):
        add = ts.add(a, b)
        ts.ops.tagged_event_record(ev)
        with ts.scope.stream_switch(side):
            ts.ops.tagged_event_wait(ev)
            mm = ts.mm(c, d)
        return add, mm, ts.mm(c, d), ts.add(c, d)

    f = ts.compile(model, mode="reduce-overhead")
    xs = [ts.randn(n, n, dtype=ts.float16, seed=i) for i in range(4)]
    f(*xs)
    ts.synchronize()
    call_us, run_us, total_ms = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        out = f(*xs)
        t1 = time.perf_counter_ns()
        ts.synchronize()
        t2 = time.perf_counter_ns()
        call_us.append((t1 - t0) / 1e3)
        run_us.append(f._last_run_ns() / 1e3)
        total_ms.append((t2 - t0) / 1e6)
        del out
    over = [c - r for c, r in zip(call_us, run_us)]
    return (statistics.median(call_us), statistics.median(run_us), statistics.median(over),
            statistics.median(total_ms))


if __name__ == "__main__":
    print(f"python eager add [16] f32, per op (1000-add chain + sync): {eager_add_per_op_ns():.0f} ns")
    for n, rounds in [(64, 300), (1000, 30)]:
        call, run, over, total = seed(n, rounds, time.time_ns())
        print(f"python seed {n}x{n} f16 replay: call {call:.1f} us, Rust run() inside {run:.1f} us, "
              f"binding overhead {over:.2f} us, call + synchronize {total:.3f} ms")
