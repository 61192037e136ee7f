#!/usr/bin/env bash
# cache_bench.sh BUILD_DIR [OUT.md] — the expert cache against plain mmap on
# synthetic q4 models (OLMoE-1B-7B shapes, 4 layers: 256 experts of 3.4 MiB,
# 0.87 GiB of experts), each run cold (--drop-caches: no warm-up, the file's
# pages dropped, a fresh context). Rows: plain mmap; each policy with and
# without prefetch at budgets of 10, 25 and 50 % of the expert bytes; on the
# uniform-routing model (random weights) and on the skewed one (--skew).
# Writes a markdown table to OUT.md (default: stdout) and the raw JSON next to it.
# Environment: N (tokens decoded, 32), R (runs, 2), T (threads, 2), SKEW (1),
# MODELS (where the synthetic files go, /tmp/moe-cache-bench).
# TRAINED=FILE TEXT=FILE: instead, rows "trained" for a real model file fed
# windows of TEXT (moe-bench --text), e.g. the bundled model on its held-out
# text: the routing of a trained router on real text.
set -euo pipefail
build=$1
out=${2:-/dev/stdout}
bench=$build/bench/moe-bench
N=${N:-32} R=${R:-2} T=${T:-2} SKEW=${SKEW:-1} MODELS=${MODELS:-/tmp/moe-cache-bench}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
mkdir -p "$MODELS"

if [ -n "${TRAINED:-}" ]; then
  model=(-m "$TRAINED" --text "${TEXT:?TEXT=FILE goes with TRAINED}")
  routings=(trained)
else
  model=(--synthetic olmoe-1b-7b --quant q4 --layers 4 --cache-dir "$MODELS")
  routings=(uniform skewed)
fi

run() { # label bench-args...
  local label=$1; shift
  echo "cache_bench: $label $*" >&2
  printf '%s\t' "$label" >> "$raw"
  "$bench" "${model[@]}" -p 0 -n "$N" -r "$R" -t "$T" --drop-caches -o json "$@" | tr -d '\n' >> "$raw"
  echo >> "$raw"
}

for routing in "${routings[@]}"; do
  skew=()
  [ "$routing" = skewed ] && skew=(--skew "$SKEW")
  run "$routing|mmap|-|-|-" "${skew[@]}"
  for budget in 10 25 50; do
    for policy in lru lfu stats; do
      for pf in off on; do
        run "$routing|cache|$budget%|$policy|$pf" "${skew[@]}" --expert-cache "$budget%" --cache-policy "$policy" --prefetch "$pf"
      done
    done
  done
done

python3 - "$raw" > "$out" <<'PY'
import json, sys
print("| routing | tier | budget | policy | prefetch | tg t/s | hit rate | MiB read/token (cache) | MiB from storage/token | I/O stall s/run | prefetch precision | prefetch recall | top-10% share | overlap |")
print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for line in open(sys.argv[1]):
    label, js = line.rstrip("\n").split("\t", 1)
    r = json.loads(js)[-1]
    routing, tier, budget, policy, pf = label.split("|")
    f = lambda k, s=1.0, fmt="{:.1f}": "" if r.get(k) is None else fmt.format(r[k] * s)
    print(f"| {routing} | {tier} | {budget} | {policy} | {pf} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} | "
          f"{f('cache_hit_rate', 100)} | {f('bytes_read_per_token', 1/1048576, '{:.2f}')} | "
          f"{f('storage_bytes_per_token', 1/1048576, '{:.2f}')} | {f('io_stall_s', 1, '{:.3f}')} | "
          f"{f('prefetch_precision', 100)} | {f('prefetch_recall', 100)} | {f('routing_top10_share', 100)} | "
          f"{f('routing_overlap', 100)} |")
PY
