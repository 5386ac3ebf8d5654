#!/usr/bin/env bash
# Compare tagstream with PyTorch CPU eager on the programs of issue 6, in one script run:
#   1. `tagstream bench` (release build) prints its table and writes its medians (--tsv);
#   2. the same programs in PyTorch eager: the seed model (f16, f32, bf16; two adds and two
#      matmuls, sequential: a CPU has no streams), one f16 add of 1M elements on one thread,
#      and the tiny chain of 16-element ops (add x, relu, sub x, ...), timed per op;
#   3. a side-by-side table with the ratios and the goals of issue 12.
#
# Optional, never run in CI: it needs network access for pip and downloads torch (the PyPI
# wheel for Linux x86-64 bundles CUDA libraries, a few GB; it runs on the CPU here).
#
# Usage: scripts/compare-pytorch.sh [--quick]
#   --quick            small sizes (a smoke test of the script; not comparable with the goals)
# Environment:
#   TAGSTREAM_TORCH_VENV  virtualenv to create or reuse (default /tmp/tagstream-torch-venv)
#   CARGO_TARGET_DIR      where cargo builds (default target/)
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${TAGSTREAM_TORCH_VENV:-/tmp/tagstream-torch-venv}"
target="${CARGO_TARGET_DIR:-target}"
quick=()
if [[ "${1:-}" == "--quick" ]]; then
    quick=(--quick)
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--quick]" >&2
    exit 2
fi

# --- PyTorch in a virtualenv -------------------------------------------------------------
if ! "$venv/bin/python" -c 'import torch, numpy' 2>/dev/null; then
    echo "== creating $venv and installing torch + numpy (large download)" >&2
    python3 -m venv "$venv"
    # The CPU-only wheels live on download.pytorch.org; where that is unreachable, PyPI's
    # default wheel (with CUDA libraries, unused here) works on the CPU just the same.
    if ! "$venv/bin/pip" install --quiet --timeout 15 --retries 0 \
        --index-url https://download.pytorch.org/whl/cpu torch 2>/dev/null; then
        echo "== download.pytorch.org unreachable: installing torch from PyPI" >&2
        "$venv/bin/pip" install --quiet torch
    fi
    "$venv/bin/pip" install --quiet numpy
fi

# --- tagstream bench ---------------------------------------------------------------------
cargo build --release --quiet --bin tagstream
tsv="$(mktemp -t tagstream-bench.XXXXXX.tsv)"
trap 'rm -f "$tsv"' EXIT
echo "== tagstream bench ${quick[*]}"
"$target/release/tagstream" bench "${quick[@]}" --tsv "$tsv"
echo

# --- PyTorch eager, then the comparison ----------------------------------------------------
echo "== PyTorch eager (CPU), same programs"
"$venv/bin/python" - "$tsv" <<'PY'
import sys
import time

import numpy  # noqa: F401  (installed alongside torch; torch warns without it)
import torch

tsv = {}
for line in open(sys.argv[1]):
    key, value, unit = line.rstrip("\n").split("\t")
    tsv[key] = (value, unit)
num = lambda key: float(tsv[key][0])
chain_ops, seed_size, add_len = (int(num(k)) for k in ("chain_ops", "seed_size", "add_len"))
quick = chain_ops < 1000

torch.manual_seed(0)
threads = torch.get_num_threads()
print(f"torch {torch.__version__}, {threads} threads, CPU capability "
      f"{torch.backends.cpu.get_cpu_capability()}")


def spread(samples):
    s = sorted(samples)
    at = lambda q: s[round((len(s) - 1) * q)]
    return {"median": at(0.5), "min": s[0], "p25": at(0.25), "p75": at(0.75), "max": s[-1],
            "n": len(s)}


def fmt(v, unit):
    digits = 3 if v < 1 else 2 if v < 10 else 1 if v < 100 else 0
    return f"{v:.{digits}f} {unit}"


def timed(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t)
    return out


rows = []  # (figure, spread in the row's unit, unit)

# Seed model: add = x0+x1; mm = x2@x3 (the side stream in tagstream); mm1 = x2@x3;
# add2 = x2+x3. Sequential in torch eager.
torch_seed = {}
for dtype, name in ((torch.float16, "f16"), (torch.float32, "f32"), (torch.bfloat16, "bf16")):
    x = [torch.randn(seed_size, seed_size).to(dtype) for _ in range(4)]

    def seed():
        return (x[0] + x[1], x[2] @ x[3], x[2] @ x[3], x[2] + x[3])

    runs = 3 if quick else (5 if dtype == torch.float16 else 31)
    s = spread([t / 1e6 for t in timed(seed, runs)])
    torch_seed[name] = s["median"]
    rows.append((f"seed model {seed_size}x{seed_size} {name}, {threads} threads", s, "ms"))

# f16 add of add_len elements on one thread.
torch.set_num_threads(1)
a = torch.randn(add_len).half()
b = torch.randn(add_len).half()
s = spread([t / 1e6 for t in timed(lambda: a + b, 5 if quick else 201)])
torch_add = s["median"]
rows.append((f"f16 add, {add_len} elements, 1 thread", s, "ms"))
torch.set_num_threads(threads)

# The tiny chain on one stream: half from x0, half from x1, ops cycling add x, relu, sub x.
torch_op = {}
for dtype, name in ((torch.float32, "f32"), (torch.float16, "f16")):
    x0, x1 = torch.randn(16).to(dtype), torch.randn(16).to(dtype)

    def chain(x, n):
        y = x
        for i in range(n):
            r = i % 3
            y = y + x if r == 0 else (torch.relu(y) if r == 1 else y - x)
        return y

    def tiny():
        return chain(x0, chain_ops - chain_ops // 2), chain(x1, chain_ops // 2)

    s = spread([t / chain_ops for t in timed(tiny, 5 if quick else 201)])
    torch_op[name] = s["median"]
    rows.append((f"cost per op, {chain_ops}-op chain [16] {name}", s, "ns"))

print()
print(f"{'figure':<44} {'median':>10} {'min':>10} {'p25':>10} {'p75':>10} {'max':>10} {'n':>4}")
print("-" * 104)
for figure, s, unit in rows:
    cells = " ".join(f"{fmt(s[k], unit):>10}" for k in ("median", "min", "p25", "p75", "max"))
    print(f"{figure:<44} {cells} {s['n']:>4}")

# Side by side, with the goals of issue 12 (CPU speed on every machine we run on).
cmp = []
flags = open("/proc/cpuinfo").read().split()
fp16_machine = "avx512_fp16" in flags


def row(figure, tag, torch_v, unit, ratio, ratio_text, goal, met):
    cmp.append((figure, fmt(tag, unit), fmt(torch_v, unit), f"{ratio:.2f}x {ratio_text}",
                goal, "yes" if met else "NO"))


for name in ("f16", "f32", "bf16"):
    tag, tor = num(f"seed_{name}_ms"), torch_seed[name]
    if name == "f16" and fp16_machine:
        # PyTorch's f16 GEMM beats its own f32 on AVX512-FP16 machines.
        row(f"seed {seed_size}x{seed_size} f16", tag, tor, "ms", tag / tor, "of torch's time",
            "<= 1.15x torch's time (AVX512-FP16)", tag <= 1.15 * tor)
    elif name == "f16":
        row(f"seed {seed_size}x{seed_size} f16", tag, tor, "ms", tor / tag, "faster",
            "tagstream >= 20x faster (no AVX512-FP16)", tor / tag >= 20)
    else:
        row(f"seed {seed_size}x{seed_size} {name}", tag, tor, "ms", tag / tor, "of torch's time",
            "<= 1.0x torch's time", tag <= tor)
tag = num("add_f16_ms")
row(f"f16 add {add_len}, 1 thread", tag, torch_add, "ms", tag / torch_add, "of torch's time",
    "<= 1.0x torch's time", tag <= torch_add)
for name in ("f32", "f16"):
    tag, tor = num(f"eager_per_op_{name}"), torch_op[name]
    row(f"per op: tagstream eager vs torch eager, {name}", tag, tor, "ns", tor / tag,
        "cheaper", "eager <= 500 ns", tag <= 500)
for name in ("f32", "f16"):
    tag, tor = num(f"replay_per_op_{name}"), torch_op[name]
    row(f"per op: tagstream replay vs torch eager, {name}", tag, tor, "ns", tor / tag,
        "cheaper", "replay <= 40 ns and >= 25x cheaper", tag <= 40 and tor / tag >= 25)

print()
print("== tagstream vs PyTorch eager (medians from this script run)"
      + (" -- QUICK sizes, not comparable with the goals" if quick else ""))
head = ("figure", "tagstream", "torch", "ratio", "goal", "met")
widths = [max(len(str(r[i])) for r in cmp + [head]) for i in range(len(head))]
print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
print("-" * (sum(widths) + 2 * (len(widths) - 1)))
for r in cmp:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
PY
