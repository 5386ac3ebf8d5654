#!/usr/bin/env python3
"""Issue 11 figures: PyTorch measured in this call on this GPU, beside tagstream's.

Usage: python3 scripts/compare-pytorch-cuda.py --ours BENCH_OUTPUT
BENCH_OUTPUT holds the `FIGURE name value ...` lines printed by `tests/gpu.rs::gpu_bench`.
Timing as the anchors were timed: N calls back to back, one synchronize, median over rounds.
"""
import argparse
import statistics
import time

import torch


def timed(fn, rounds=20, calls=50):
    fn()
    torch.cuda.synchronize()
    per = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        per.append((time.perf_counter() - t) / calls)
    return statistics.median(per) * 1e6


def seed_figures():
    dev = "cuda"
    xs = [torch.randn(1000, 1000, device=dev, dtype=torch.float16) for _ in range(4)]
    side = torch.cuda.Stream()

    def seed(x):
        add = x[0] + x[1]
        ev = torch.cuda.Event()
        ev.record()
        with torch.cuda.stream(side):
            side.wait_event(ev)
            mm = x[2] @ x[3]
        mm1 = x[2] @ x[3]
        add2 = x[2] + x[3]
        torch.cuda.current_stream().wait_stream(side)
        return add, mm, mm1, add2

    eager = timed(lambda: seed(xs))
    static = [x.clone() for x in xs]
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        seed(static)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        outs = seed(static)
    bare = timed(g.replay)

    def copy_in():
        for d, x in zip(static, xs):
            d.copy_(x)
        g.replay()

    def copy_in_clone():
        copy_in()
        return [o.clone() for o in outs]

    return eager, bare, timed(copy_in), timed(copy_in_clone)


def adds_figures():
    x = torch.randn(16, device="cuda")

    def chain(x):
        y = x
        for _ in range(1000):
            y = y + x
        return y

    eager = timed(lambda: chain(x), rounds=10, calls=5) / 1000
    g = torch.cuda.CUDAGraph()
    chain(x)
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        chain(x)
    return eager, timed(g.replay, rounds=10, calls=5) / 1000


def branches_figures():
    xs = [torch.randn(256, 256, device="cuda", dtype=torch.float16) for _ in range(2)]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]

    def run(two):
        main = torch.cuda.current_stream()
        ends = []
        for i, x in enumerate(xs):
            s = streams[i] if two else streams[0]
            s.wait_stream(main)
            with torch.cuda.stream(s):
                y = x @ x
                for _ in range(7):
                    y = y @ x
            ends.append(y)
        for s in streams:
            main.wait_stream(s)
        return ends

    res = []
    for two in (False, True):
        run(two)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            run(two)
        res.append(timed(g.replay))
    return res


def read_ours(path):
    ours = {}
    with open(path) as f:
        for line in f:
            if line.startswith("FIGURE"):
                parts = line.split()[1:]
                for k, v in zip(parts[::2], parts[1::2]):
                    ours[k] = float(v)
    return ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    args = ap.parse_args()
    ours = read_ours(args.ours)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    eager, bare, copy_in, cloned = seed_figures()
    adds_eager, adds_graph = adds_figures()
    one, two = branches_figures()
    g = ours.get
    rows = [
        ("seed f16 replay, copy-in + owned outputs (us)", g("seed_replay_copyin_owned_us"),
         f"torch graph bare {bare:.1f} / copy-in {copy_in:.1f} / +clone {cloned:.1f}",
         "<= 0.5x torch copy-in", copy_in * 0.5),
        ("seed f16 eager 2 streams (us)", g("seed_eager_2streams_us"), f"torch eager {eager:.1f}",
         "<= 0.6x torch eager", eager * 0.6),
        ("1000 dependent adds eager (us/op)", g("adds_eager_us_per_op"), f"torch {adds_eager:.2f}",
         "<= 5 us/op", 5.0),
        ("1000 dependent adds replay (us/op)", g("adds_replay_us_per_op"), f"torch graph {adds_graph:.3f}",
         "<= 1.15 us/op", 1.15),
        ("branches 1 vs 2 streams speedup", g("speedup"), f"torch {one / two:.2f}x ({one:.1f} vs {two:.1f} us)",
         ">= 1.35x", None),
        ("seed first call (ms)", g("seed_first_call_ms"), "torch.compile ~10 s", "<= 1000 ms cold", 1000.0),
    ]
    for name, val, theirs, goal, limit in rows:
        if val is None:
            verdict = "MISSING"
        elif limit is None:
            verdict = "met" if val >= 1.35 else "NOT met"
        else:
            verdict = "met" if val <= limit else "NOT met"
        shown = "-" if val is None else f"{val:.3f}"
        print(f"{name:48} ours {shown:>9} | {theirs} | goal {goal}: {verdict}")


if __name__ == "__main__":
    main()
