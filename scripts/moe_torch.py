#!/usr/bin/env python3
"""The MoE stack of `tagstream run --model moe` in PyTorch: the anchor of issue 13.

The same math as `tagstream::models::moe` (src/models/moe.rs): per layer, the shared expert
(SwiGLU, fused gate/up) on a side stream, the router `softmax(x @ Wr)` -> top-k -> weights
renormalised over the chosen experts, scattered into a dense [T, E] table, every expert on every
token as one batched matmul, the table-weighted sum over experts, then `x + routed + shared`.

CPU: eager on 2 threads (torch has no CPU streams). CUDA: eager, and one CUDA graph of the
4-layer stack with the shared expert on 1 stream and on a side stream (events as the recipe).
Prints medians per call and per layer.

Usage: python3 scripts/moe_torch.py [--device cpu|cuda] [--dtype bf16|f16|f32] [--runs N]
       [--threads N] [--layers N]
"""

import argparse
import statistics
import time

import torch


def build(args, dtype, device):
    g = torch.Generator().manual_seed(1)
    t, d, e, f, fs = 16, 2048, 8, 1408, 2816

    def param(*shape, fan_in):
        a = (3.0 / fan_in) ** 0.5
        return ((torch.rand(*shape, generator=g) * 2 - 1) * a).to(dtype).to(device)

    layers = []
    for _ in range(args.layers):
        layers.append(
            dict(
                router=param(d, e, fan_in=d),
                egu=param(e, d, 2 * f, fan_in=d),
                edown=param(e, f, d, fan_in=f),
                sgu=param(d, 2 * fs, fan_in=d),
                sdown=param(fs, d, fan_in=fs),
            )
        )
    x = torch.randn(t, d, generator=g).to(dtype).to(device)
    zeros = torch.zeros(t, e, dtype=dtype, device=device)
    return layers, x, zeros, (t, d, e, f, fs)


def swiglu(x, gu, down, f):
    h = x @ gu
    return (torch.nn.functional.silu(h[..., :f]) * h[..., f:]) @ down


def stack(layers, x, zeros, dims, side=None, events=None):
    t, d, e, f, fs = dims
    for i, w in enumerate(layers):
        if side is not None:
            fork, join = events[i]
            fork.record()
            with torch.cuda.stream(side):
                fork.wait()
                shared = swiglu(x, w["sgu"], w["sdown"], fs)
                join.record()
        else:
            shared = swiglu(x, w["sgu"], w["sdown"], fs)
        probs = torch.softmax(x @ w["router"], dim=-1)
        top, choice = probs.topk(2, dim=-1)
        gates = top / top.sum(dim=1, keepdim=True)
        table = zeros.scatter(1, choice, gates)
        xe = x.unsqueeze(0).expand(e, t, d)
        y = swiglu(xe, w["egu"], w["edown"], f)
        routed = (y * table.t().unsqueeze(2)).sum(0)
        if side is not None:
            join.wait()
        x = x + (routed + shared)
    return x


def timed(fn, runs, sync):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, choices=["bf16", "f16", "f32"])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args()
    name = args.dtype or ("bf16" if args.device == "cpu" else "f16")
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[name]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    layers, x, zeros, dims = build(args, dtype, device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print(
        f"PyTorch {torch.__version__} MoE stack: {args.layers} layers, T=16 d=2048 E=8 top-2 "
        f"f=1408 shared f=2816, {name} on {args.device}"
        + (f", {args.threads} threads" if args.device == "cpu" else f" ({torch.cuda.get_device_name()})")
    )
    with torch.inference_mode():
        stack(layers, x, zeros, dims)  # warm-up
        sync()
        rows = [("eager", timed(lambda: stack(layers, x, zeros, dims), args.runs, sync))]
        if args.device == "cuda":
            side = torch.cuda.Stream()
            events = [(torch.cuda.Event(), torch.cuda.Event()) for _ in layers]
            for label, s in [("CUDA graph, 1 stream", None), ("CUDA graph, 2 streams", side)]:
                warm = torch.cuda.Stream()
                warm.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(warm):
                    for _ in range(3):
                        stack(layers, x, zeros, dims, s, events)
                torch.cuda.current_stream().wait_stream(warm)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    stack(layers, x, zeros, dims, s, events)
                rows.append((label, timed(graph.replay, args.runs * 10, sync)))
    print(f"{'variant':<28} {'per call':>12} {'per layer':>12}")
    for label, t in rows:
        print(f"{label:<28} {t * 1e3:>9.2f} ms {t * 1e3 / args.layers:>9.2f} ms")


if __name__ == "__main__":
    main()
