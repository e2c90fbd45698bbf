#!/usr/bin/env bash
# sGPO on verl 0.9.1: the sgpo plan (which queries, each one's group size G, easy -> hard order)
# drives verl's GRPO trainer, on one node or a Ray cluster. See examples/verl/README.md for what
# each override does and how to start the cluster.
#
#   MODEL=/models/Qwen2.5-1.5B-Instruct PLAN=runs/profile/plan.parquet SGPO_CONFIG=examples/gsm8k.yaml \
#   NNODES=2 GPUS_PER_NODE=8 examples/verl/run_sgpo.sh [extra hydra overrides...]
#
# Every setting below is an environment variable with a default; extra arguments are passed to
# verl as hydra overrides (they win over the ones here). PRINT_OVERRIDES=1 prints the overrides
# (one per line) and exits without starting verl.
set -euo pipefail

# ---------------------------------------------------------------- inputs
MODEL="${MODEL:-}"                         # the policy: a model dir every node can read
PLAN="${PLAN:-runs/profile/plan.parquet}"  # written by `sgpo plan`
SGPO_CONFIG="${SGPO_CONFIG:-}"             # the sgpo config the plan came from (prompt, verifier)
OUT="${OUT:-runs/verl}"
DATA="${DATA:-$OUT/train.parquet}"         # the exported verl dataset
VAL_DATA="${VAL_DATA:-}"                   # held-out verl parquet; empty = no validation
SKIP_EXPORT="${SKIP_EXPORT:-0}"            # 1: DATA already exported
PYTHON="${PYTHON:-python3}"

# ---------------------------------------------------------------- cluster
NNODES="${NNODES:-1}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
ROLLOUT_ENGINE="${ROLLOUT_ENGINE:-vllm}"
ROLLOUT_TP="${ROLLOUT_TP:-1}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.6}"

# ---------------------------------------------------------------- training
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-64}"  # queries (prompts) per step
ROLLOUT_N="${ROLLOUT_N:-1}"                 # only scales the mini-batch: each row has __rollout_n__
PPO_MINI_BATCH_SIZE="${PPO_MINI_BATCH_SIZE:-$TRAIN_BATCH_SIZE}"
ONE_UPDATE_PER_STEP="${ONE_UPDATE_PER_STEP:-0}"  # 1: one optimizer step per step, as sgpo train
MAX_PROMPT_LENGTH="${MAX_PROMPT_LENGTH:-512}"
MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-1024}"
MAX_TOKENS_PER_GPU="${MAX_TOKENS_PER_GPU:-16384}"
TEMPERATURE="${TEMPERATURE:-1.0}"           # use the sampling the plan was profiled with
TOP_P="${TOP_P:-1.0}"
LR="${LR:-1e-6}"
PPO_EPOCHS="${PPO_EPOCHS:-1}"
LOSS_AGG_MODE="${LOSS_AGG_MODE:-token-mean}"
NORM_ADV_BY_STD="${NORM_ADV_BY_STD:-False}"
EPOCHS="${EPOCHS:-1}"
TEST_FREQ="${TEST_FREQ:-10}"
SAVE_FREQ="${SAVE_FREQ:--1}"
PROJECT="${PROJECT:-sgpo}"
EXPERIMENT="${EXPERIMENT:-sgpo-$(date +%Y%m%d-%H%M%S)}"
METRICS="${METRICS:-$OUT/$EXPERIMENT.jsonl}"  # verl's file logger; read by `sgpo flops`

if [ -z "$MODEL" ]; then
    echo "set MODEL to the policy's model directory (readable from every node)" >&2
    exit 2
fi
mkdir -p "$OUT" "$(dirname "$METRICS")"
METRICS="$(cd "$(dirname "$METRICS")" && pwd)/$(basename "$METRICS")"

# 1. plan -> verl dataset: kept queries in curriculum order, __rollout_n__ = G, verifier path.
if [ "$SKIP_EXPORT" != 1 ]; then
    "$PYTHON" -m sgpo.verl.cli export --plan "$PLAN" --out "$DATA" \
        ${SGPO_CONFIG:+--config "$SGPO_CONFIG"} --train-batch-size "$TRAIN_BATCH_SIZE" >&2
fi
DATA="$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")"

# 2. mini-batches. verl pads every step's batch with 128-token dummy sequences up to a multiple of
#    actor.ppo_mini_batch_size * rollout.n (trainer_base._get_required_batch_multiple).
if [ "$ONE_UPDATE_PER_STEP" = 1 ]; then
    max_rollouts="$("$PYTHON" - "$DATA" "$TRAIN_BATCH_SIZE" <<'PY'
import sys
from pathlib import Path
from sgpo.io import read_table
from sgpo.verl.export import ROLLOUT_N, step_summary
rows = read_table(Path(sys.argv[1]))[0]
print(step_summary([r[ROLLOUT_N] for r in rows], int(sys.argv[2]))["rollouts_per_step_max"])
PY
)"
    PPO_MINI_BATCH_SIZE="$TRAIN_BATCH_SIZE"
    ROLLOUT_N=$(( (max_rollouts + TRAIN_BATCH_SIZE - 1) / TRAIN_BATCH_SIZE ))
fi
dp=$(( NNODES * GPUS_PER_NODE ))
if [ $(( PPO_MINI_BATCH_SIZE * ROLLOUT_N % dp )) -ne 0 ]; then
    echo "PPO_MINI_BATCH_SIZE * ROLLOUT_N = $(( PPO_MINI_BATCH_SIZE * ROLLOUT_N )) must be a" \
         "multiple of NNODES * GPUS_PER_NODE = $dp" >&2
    exit 2
fi

if [ -n "$VAL_DATA" ]; then
    validation=("data.val_files=$VAL_DATA" trainer.val_before_train=True "trainer.test_freq=$TEST_FREQ")
else  # verl always builds a validation dataset; without one, reuse DATA and never validate
    validation=("data.val_files=$DATA" trainer.val_before_train=False trainer.test_freq=-1)
fi

overrides=(
    # --- the sGPO plan
    "data.train_files=$DATA"
    data.shuffle=False
    data.filter_overlong_prompts=False
    data.truncation=error
    "data.train_batch_size=$TRAIN_BATCH_SIZE"
    "data.max_prompt_length=$MAX_PROMPT_LENGTH"
    "data.max_response_length=$MAX_RESPONSE_LENGTH"
    "${validation[@]}"
    trainer.use_v1=True
    trainer.v1.trainer_mode=sync
    # --- GRPO over variable-size groups
    algorithm.adv_estimator=grpo
    "algorithm.norm_adv_by_std_in_grpo=$NORM_ADV_BY_STD"
    algorithm.filter_groups.enable=False
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=False
    "actor_rollout_ref.actor.loss_agg_mode=$LOSS_AGG_MODE"
    "actor_rollout_ref.actor.ppo_epochs=$PPO_EPOCHS"
    "actor_rollout_ref.rollout.n=$ROLLOUT_N"
    "actor_rollout_ref.actor.ppo_mini_batch_size=$PPO_MINI_BATCH_SIZE"
    actor_rollout_ref.actor.use_dynamic_bsz=True
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$MAX_TOKENS_PER_GPU"
    "actor_rollout_ref.actor.optim.lr=$LR"
    # --- rewards from sGPO's verifier
    reward.custom_reward_function.path=pkg://sgpo.verl.reward
    reward.custom_reward_function.name=compute_score
    # --- model and rollout engine
    "actor_rollout_ref.model.path=$MODEL"
    "actor_rollout_ref.rollout.name=$ROLLOUT_ENGINE"
    "actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP"
    "actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEMORY_UTILIZATION"
    "actor_rollout_ref.rollout.temperature=$TEMPERATURE"
    "actor_rollout_ref.rollout.top_p=$TOP_P"
    # --- cluster, logging (the file logger feeds `sgpo flops`)
    "trainer.nnodes=$NNODES"
    "trainer.n_gpus_per_node=$GPUS_PER_NODE"
    "trainer.total_epochs=$EPOCHS"
    "trainer.save_freq=$SAVE_FREQ"
    "trainer.project_name=$PROJECT"
    "trainer.experiment_name=$EXPERIMENT"
    "trainer.logger=[console,file]"
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$METRICS"
)

if [ "${PRINT_OVERRIDES:-0}" = 1 ]; then
    printf '%s\n' "${overrides[@]}" "$@"
    exit 0
fi

echo "verl metrics -> $METRICS; afterwards: sgpo flops $METRICS --model $MODEL --data $DATA" \
     "--train-batch-size $TRAIN_BATCH_SIZE --plan $PLAN --ppo-epochs $PPO_EPOCHS" >&2
exec "$PYTHON" -m verl.trainer.main_ppo "${overrides[@]}" "$@"
