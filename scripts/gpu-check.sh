#!/usr/bin/env bash
# Builds the GPU test and bench binaries here (no GPU needed) into .gpu/ (gitignored) with a
# runner, .gpu/run.sh, and prints the one `device` call that runs everything on the lent GPU:
# the GPU tests, the CUDA conformance rows, compute-sanitizer (memcheck, synccheck, initcheck;
# racecheck on tagstream's own kernels only, see gpu.md), `tagstream run --device cuda`, the
# issue 11 bench and PyTorch's figures measured in the same call. Output goes under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
rm -rf .gpu && mkdir -p .gpu
json=$(cargo test --release --no-run --test gpu --test conformance --message-format=json)
echo "$json" | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], ".gpu/" + m["target"]["name"])
'
cargo build --release --bin tagstream --quiet
cp target/release/tagstream .gpu/tagstream
cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root; writes everything under $OUT.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
G=.gpu
step() { echo; echo "=== $1"; }
{
step "machine"; nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader
ldconfig -p | grep -E "libcuda.so.1|libcublas.so.13|libnvrtc.so.13"
step "gpu tests"; timeout 120 $G/gpu --test-threads=1 2>&1; echo "rc=$?"
step "conformance (cuda rows)"; timeout 120 $G/conformance cuda:: --test-threads=1 2>&1; echo "rc=$?"
for tool in memcheck synccheck initcheck; do
  step "compute-sanitizer $tool: seed eager+replay, 3-stream pipeline, round-2 ops (bad indices too)"
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 \
    $G/gpu sanitizer_seed three_stream_pipeline sanitizer_round2_ops --test-threads=1 > "$OUT/sanitizer-$tool.txt" 2>&1
  echo "rc=$?"; tail -n 4 "$OUT/sanitizer-$tool.txt"
done
step "compute-sanitizer racecheck on tagstream's kernels (kns=ts_)"
timeout 150 compute-sanitizer --tool racecheck --kernel-name kns=ts_ --error-exitcode 9 \
  $G/gpu three_stream_pipeline --exact --test-threads=1 > "$OUT/sanitizer-racecheck.txt" 2>&1
echo "rc=$?"; tail -n 4 "$OUT/sanitizer-racecheck.txt"
step "compute-sanitizer racecheck on the round-2 kernels (topk's shared-memory arg-best)"
timeout 150 compute-sanitizer --tool racecheck --kernel-name kns=ts_ --error-exitcode 9 \
  $G/gpu sanitizer_round2_ops --exact --test-threads=1 > "$OUT/sanitizer-racecheck-round2.txt" 2>&1
echo "rc=$?"; tail -n 4 "$OUT/sanitizer-racecheck-round2.txt"
step "tagstream run --device cuda"; timeout 60 $G/tagstream run --device cuda --runs 20 --chain-ops 0 2>&1; echo "rc=$?"
step "MoE stack (issue 13): ours, then PyTorch's eager and CUDA graphs in the same call"
timeout 120 $G/tagstream run --model moe --device cuda --runs 20 --auto-streams 2 2>&1; echo "rc=$?"
timeout 120 python3 scripts/moe_torch.py --device cuda --runs 20 2>&1; echo "rc=$?"
step "bench"; timeout 150 $G/gpu gpu_bench --ignored --exact --nocapture --test-threads=1 2>&1 | tee "$OUT/bench.txt"
step "PyTorch in the same call"; timeout 150 python3 scripts/compare-pytorch-cuda.py --ours "$OUT/bench.txt" 2>&1
} 2>&1 | tee "$OUT/gpu-check.txt"
RUN
chmod +x .gpu/run.sh
du -ch .gpu/* | tail -n 1
ls -l .gpu
echo
echo 'Run on the GPU (one call):'
echo '  run(command="bash .gpu/run.sh", carry=[".gpu"], timeout_s=540)'
