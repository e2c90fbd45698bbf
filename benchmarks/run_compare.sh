#!/usr/bin/env bash
# Runs the benchmark of BENCHMARKS.md on the shipped embedded model, two compares at a time with
# one torch thread each (on 2 cores this beats two 2-thread processes fighting).
#   1. dev: every method on the balanced mix with dev seed 100 -- variants are chosen here;
#   2. report: seeds 0, 1, 2 on the three mixes, the baselines and the sGPO variants chosen on
#      dev (REPORT_METHODS, comma-separated; the baseline grpo-g8 always runs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out="${1:-runs/bench}"
export OMP_NUM_THREADS=1
chosen="grpo-g16,dapo,sgpo,sgpo-paper,sgpo-two-sided,sgpo-online-mixed"
methods=(--methods "${REPORT_METHODS:-$chosen}")
compare() { .venv/bin/sgpo compare -c "examples/$1.yaml" -o "$out/$2" "${@:3}" > "$out/$2.log" 2>&1; }
mkdir -p "$out"
if [ "${SKIP_DEV:-0}" != "1" ]; then
    compare compare-balanced dev --seeds 1 --first-seed 100
fi
compare compare report-easy "${methods[@]}" &
compare compare-balanced report-balanced "${methods[@]}" &
compare compare-hard report-hard "${methods[@]}" &
wait
