#!/usr/bin/env bash
# Runs the benchmark of BENCHMARKS.md: the default compare and three difficulty mixes, two at a
# time, one torch thread each (on 2 cores this beats two 2-thread processes fighting).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out="${1:-runs/bench}"
export OMP_NUM_THREADS=1
run() { .venv/bin/sgpo compare -c "examples/$1.yaml" -o "$out/$1" > "$out/$1.log" 2>&1; }
mkdir -p "$out"
run compare & run compare-hard & wait
run compare-easy & run compare-balanced & wait
