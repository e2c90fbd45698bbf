#!/usr/bin/env bash
# sGPO on verl 0.9.1: the sgpo plan (which queries, each one's group size G, easy -> hard order)
# drives verl's GRPO trainer, on one node or a Ray cluster.
#
#   PLAN=/shared/runs/profile/plan.parquet SGPO_CONFIG=examples/gsm8k.yaml OUT=/shared/runs/verl \
#   NNODES=2 GPUS_PER_NODE=8 examples/verl/run_sgpo.sh [extra hydra overrides...]
#
# Every setting is an environment variable with a default (examples/verl/launch.sh); extra
# arguments are passed to verl as hydra overrides, except for keys the script sets itself (set
# those through its variables; ALLOW_OVERRIDE=1 passes them anyway, unchecked). PRINT_OVERRIDES=1
# runs every check (the export included, which it writes to DATA as a launch does) and prints the
# overrides without starting verl. Running the same command again resumes the run from its
# latest checkpoint.
# Baselines on the same data and model: run_grpo.sh (fixed G), run_dapo.sh (+ filter_groups).
METHOD=sgpo exec "$(dirname "$0")/launch.sh" "$@"
