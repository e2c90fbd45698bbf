#!/usr/bin/env bash
# Runs the benchmark of BENCHMARKS.md on the shipped embedded model, two compares at a time with
# one torch thread each (on 2 cores this beats two 2-thread processes fighting).
#   1. dev: the variants of benchmarks/dev-round2.yaml on the balanced mix with dev seed 100 --
#      variants are chosen here (round 1 chose among the other DEFAULT_METHODS the same way);
#   2. report: seeds 0, 1, 2 on the three mixes, the baselines and the sGPO variants chosen on
#      dev (REPORT_METHODS, comma-separated; the baseline grpo-g8 always runs);
#   3. the same mixes and seeds at an equal budget in train-all FLOPs (what a verl/TRL user
#      pays), for DAPO and the sGPO variants (TRAIN_ALL_METHODS).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out="${1:-runs/bench}"
export OMP_NUM_THREADS=1
chosen="grpo-g16,dapo,sgpo,sgpo-paper,sgpo-two-sided,sgpo-dense,sgpo-dense-mixed,sgpo-dense-k16"
chosen+=",sgpo-dense-k16-reprofile"
methods=(--methods "${REPORT_METHODS:-$chosen}")
compare() { .venv/bin/sgpo compare -c "$1" -o "$out/$2" "${@:3}" > "$out/$2.log" 2>&1; }
mkdir -p "$out"
if [ "${SKIP_DEV:-0}" != "1" ]; then
    compare benchmarks/dev-round2.yaml dev --seeds 1 --first-seed 100
fi
compare examples/compare.yaml report-easy "${methods[@]}" &
compare examples/compare-balanced.yaml report-balanced "${methods[@]}" &
compare examples/compare-hard.yaml report-hard "${methods[@]}" &
wait
train_all=(--budget-currency flops_train_all
    --methods "${TRAIN_ALL_METHODS:-dapo,sgpo,sgpo-paper,sgpo-two-sided,sgpo-dense,sgpo-dense-mixed,sgpo-dense-k16,sgpo-dense-k16-reprofile}")
compare examples/compare.yaml train-all-easy "${train_all[@]}" &
compare examples/compare-balanced.yaml train-all-balanced "${train_all[@]}" &
compare examples/compare-hard.yaml train-all-hard "${train_all[@]}" &
wait
