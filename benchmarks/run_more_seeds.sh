#!/usr/bin/env bash
# Ten seeds instead of three for the comparison the three-seed report could not resolve:
# GRPO(G=8), DAPO and sgpo-dense on the three mixes (seeds 0-9; 0-2 are the report's runs,
# copied in so they are not trained twice), at an equal budget in this trainer's FLOPs, then
# DAPO and sgpo-dense at an equal budget in train-all FLOPs (DAPO's since the next session:
# the tokens-to-target comparison with DAPO is then made on the same ten seeds), then both at an
# equal budget in generated tokens (the GPU wall-time proxy; added a session later, run with
# SKIP_EQUAL_FLOPS=1 SKIP_TRAIN_ALL=1).
#   benchmarks/run_more_seeds.sh runs/bench10 runs/bench2
# METHODS replaces dapo,sgpo-dense (a later session: METHODS=sgpo-dense,sgpo-dense-grow into
# runs/bench10-grow, every stage, no earlier runs reused). SET adds space-separated config
# overrides to every method (sgpo compare --set), for a protocol change in its own OUT:
#   STAGES=train-all SET=train.eval_every=4 METHODS=dapo,sgpo-dense,sgpo-dense-grow \
#     benchmarks/run_more_seeds.sh runs/bench10-eval4
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out="${1:-runs/bench10}"
report="${2:-}"  # an earlier run_compare.sh output whose seeds 0-2 to reuse
export OMP_NUM_THREADS=1
methods="${METHODS:-dapo,sgpo-dense}"
declare -A configs=([easy]=examples/compare.yaml [balanced]=examples/compare-balanced.yaml
    [hard]=examples/compare-hard.yaml)
reuse() {  # reuse(from, to, methods...): copy finished runs and profiles of seeds 0-2
    [ -d "$1" ] || return 0
    mkdir -p "$2/runs"
    cp -rn "$1/profiles" "$2/"
    for m in "${@:3}"; do mkdir -p "$2/runs/$m" && cp -rn "$1/runs/$m"/seed-[012] "$2/runs/$m/"; done
}
sets=()
for s in ${SET:-}; do sets+=(--set "$s"); done
compare() { .venv/bin/sgpo compare -c "${configs[$1]}" -o "$out/$2" --seeds 10 "${sets[@]}" \
    "${@:3}" > "$out/$2.log" 2>&1; }
# STAGES: which budgets to run (SKIP_EQUAL_FLOPS=1 / SKIP_TRAIN_ALL=1 still drop one)
stages="${STAGES:-flops train-all tokens}"
[ "${SKIP_EQUAL_FLOPS:-0}" != "1" ] || stages="${stages/flops/}"
[ "${SKIP_TRAIN_ALL:-0}" != "1" ] || stages="${stages/train-all/}"
due() { [[ " $stages " == *" $1 "* ]]; }
mkdir -p "$out"
if due flops; then
    for mix in easy balanced hard; do
        [ -z "$report" ] || reuse "$report/report-$mix" "$out/report-$mix" grpo-g8 dapo sgpo-dense
        compare "$mix" "report-$mix" --methods "$methods" &
    done
    wait
fi
with_baseline() {  # with_baseline(mix, dir): the equal-FLOPs baseline runs and profiles, if run
    [ -d "$out/report-$1" ] || return 0
    mkdir -p "$out/$2/runs" && cp -rn "$out/report-$1/runs/grpo-g8" "$out/$2/runs/" &&
        cp -rn "$out/report-$1/profiles" "$out/$2/"
}
if due train-all; then
    for mix in easy balanced hard; do
        [ -z "$report" ] || reuse "$report/train-all-$mix" "$out/train-all-$mix" dapo sgpo-dense
        with_baseline "$mix" "train-all-$mix"
        compare "$mix" "train-all-$mix" --budget-currency flops_train_all \
            --methods "$methods" &
    done
    wait
fi
if due tokens; then
    for mix in easy balanced hard; do
        with_baseline "$mix" "tokens-$mix"
        compare "$mix" "tokens-$mix" --budget-currency tokens --methods "$methods" &
    done
    wait
fi
