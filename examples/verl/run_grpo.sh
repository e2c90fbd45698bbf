#!/usr/bin/env bash
# Baseline: fixed-n GRPO on verl 0.9.1, on the same queries (every query of the sgpo plan, kept or
# not, shuffled by verl), model and sampling as run_sgpo.sh, GROUP_SIZE rollouts per query (8).
#
#   PLAN=/shared/runs/profile/plan.parquet SGPO_CONFIG=examples/gsm8k.yaml OUT=/shared/runs/verl \
#   GROUP_SIZE=8 examples/verl/run_grpo.sh [extra hydra overrides...]
#
# Same settings, checks, checkpoints and resume as run_sgpo.sh (examples/verl/launch.sh); compare
# with `sgpo flops --run OUT/sgpo --run OUT/grpo --run OUT/dapo`.
METHOD=grpo exec "$(dirname "$0")/launch.sh" "$@"
