#!/usr/bin/env bash
# The MoE figure of issue 13 on the CPU, tagstream and PyTorch in one script run: the 4-layer
# decode stack in bf16 (`tagstream run --model moe`) and the same math in PyTorch eager
# (scripts/moe_torch.py, 2 threads), run in turns `ROUNDS` times so machine load hits both alike;
# prints each round's per-layer medians and the ratio of the medians over all rounds.
#
# Usage: scripts/compare-moe.sh [ROUNDS] [RUNS]      (default 2 rounds of 10 timed runs each)
# Environment: TAGSTREAM_TORCH_VENV (default /tmp/tagstream-torch-venv; see compare-pytorch.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
runs="${2:-10}"
py="${TAGSTREAM_TORCH_VENV:-/tmp/tagstream-torch-venv}/bin/python"
if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "no torch at $py: run scripts/compare-pytorch.sh once (it creates the venv)" >&2
    exit 2
fi
cargo build --release --quiet --bin tagstream
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|avx512_fp16|amx_bf16)$' | tr '\n' ' ')"
ours=()
theirs=()
for r in $(seq "$rounds"); do
    echo "== round $r ($(uptime | sed 's/.*load/load/'))"
    out=$(target/release/tagstream run --model moe --runs "$runs")
    line=$(echo "$out" | grep '^replay, 2 streams')
    echo "tagstream: $line"
    echo "$out" | grep -E '^(routing|output|bits) ' | sed 's/^/  /'
    ours+=("$(echo "$line" | awk '{print $(NF-2)}')")
    tline=$("$py" scripts/moe_torch.py --runs "$runs" | grep '^eager')
    echo "PyTorch:   $tline"
    theirs+=("$(echo "$tline" | awk '{print $(NF-1)}')")
done
python3 - "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
ours = [float(x) for x in sys.argv[1].split()]
theirs = [float(x) for x in sys.argv[2].split()]
o, t = statistics.median(ours), statistics.median(theirs)
print(f"per layer: tagstream replay (2 streams) {o:.2f} ms, PyTorch eager {t:.2f} ms: "
      f"{o / t:.2f}x PyTorch's time (goal <= 1.0x)")
PY
