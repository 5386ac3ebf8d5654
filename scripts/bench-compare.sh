#!/usr/bin/env bash
# Compares two tagstream binaries on the `tagstream bench` table, interleaved in one run.
#
#   scripts/bench-compare.sh OLD_BINARY NEW_BINARY [ROUNDS] [extra bench args...]
#
# Runs `OLD bench --tsv` and `NEW bench --tsv` alternately ROUNDS times (default 5), so machine
# load lands on both sides alike, then prints per figure: the old binary's median over rounds
# and its p25-p75 spread, the new median, new/old, and whether the new median is within 10% of
# the old one or inside the old spread (the seam issue's criterion). Prints the CPU model and the
# load average so a reader can judge the machine.
set -euo pipefail
old="${1:?old binary}"
new="${2:?new binary}"
rounds="${3:-5}"
shift $(( $# >= 3 ? 3 : $# ))
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
    "$old" bench --tsv "$dir/old.$r.tsv" "$@" > "$dir/old.$r.out" 2>&1
    "$new" bench --tsv "$dir/new.$r.tsv" "$@" > "$dir/new.$r.out" 2>&1
    echo "round $r of $rounds done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$dir" "$rounds" <<'EOF'
import statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])

def load(side):
    rows = {}
    for r in range(1, rounds + 1):
        for line in open(f"{d}/{side}.{r}.tsv"):
            key, value, unit = line.rstrip("\n").split("\t")
            if unit in ("param", "text"):
                continue
            rows.setdefault(key, (unit, []))[1].append(float(value))
    return rows

def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(f * (len(xs) - 1) + 0.5))]

old, new = load("old"), load("new")
print(f"{'figure':28} {'unit':4} {'old median':>11} {'old p25-p75':>21} {'new median':>11} {'new/old':>8}  verdict")
for key, (unit, xs) in old.items():
    if key not in new:
        print(f"{key:28} missing in the new binary")
        continue
    ys = new[key][1]
    om, nm = statistics.median(xs), statistics.median(ys)
    lo, hi = q(xs, 0.25), q(xs, 0.75)
    ratio = nm / om if om else float("nan")
    # Higher is better for ratios ("x"), lower for times.
    better_high = unit == "x"
    within = (nm >= om * 0.9) if better_high else (nm <= om * 1.1)
    inside = lo <= nm <= hi
    verdict = "ok (within 10%)" if within else ("ok (inside old spread)" if inside else "WORSE")
    print(f"{key:28} {unit:4} {om:11.4g} {f'{lo:.4g}-{hi:.4g}':>21} {nm:11.4g} {ratio:8.3f}  {verdict}")
EOF
