#!/usr/bin/env bash
# Baseline: DAPO's dynamic sampling on verl 0.9.1 (algorithm.filter_groups: groups whose reward
# has no variance are evicted and replaced by new queries until the batch is full), on the same
# queries, model and sampling as run_sgpo.sh, GROUP_SIZE rollouts per query (8).
#
#   PLAN=/shared/runs/profile/plan.parquet SGPO_CONFIG=examples/gsm8k.yaml OUT=/shared/runs/verl \
#   GROUP_SIZE=8 examples/verl/run_dapo.sh [extra hydra overrides...]
#
# Same settings, checks, checkpoints and resume as run_sgpo.sh (examples/verl/launch.sh); the
# evicted and surplus groups are generated but not trained: `sgpo flops --run` charges them.
METHOD=dapo exec "$(dirname "$0")/launch.sh" "$@"
