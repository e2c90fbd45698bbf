#!/usr/bin/env bash
# One verl 0.9.1 launch for sGPO and its baselines on the same data and model. Called by
# run_sgpo.sh (METHOD=sgpo), run_grpo.sh (METHOD=grpo) and run_dapo.sh (METHOD=dapo); see
# examples/verl/README.md for every setting and override.
#
# Before verl starts (and before PRINT_OVERRIDES=1 prints the overrides), the launch
#   1. exports the plan (sgpo: kept queries, curriculum order, __rollout_n__ = G; baselines: every
#      query of the plan, __rollout_n__ = GROUP_SIZE) to a staging file beside DATA,
#   2. checks the export: every row has __rollout_n__ >= 2, at least TRAIN_BATCH_SIZE rows,
#      every prompt fits MAX_PROMPT_LENGTH under MODEL's chat template, no sgpo train setting
#      silently dropped, and TEMPERATURE / TOP_P / MAX_RESPONSE_LENGTH equal to the sampling the
#      plan was profiled with (they default to it; ALLOW_SAMPLING_MISMATCH=1 to differ),
#   3. records the run in RUN_DIR/run.json, refusing a RUN_DIR that holds another run, and only
#      then moves the export to DATA (PRINT_OVERRIDES=1: the same check and move, nothing
#      recorded), so a refused launch leaves the earlier run's data as it was.
# Checkpoints go to RUN_DIR/checkpoints every SAVE_FREQ steps and trainer.resume_mode=auto
# continues from the latest one: running the same command again resumes the run.
set -euo pipefail

METHOD="${METHOD:-sgpo}"
case "$METHOD" in
    sgpo | grpo | dapo) ;;
    *) echo "METHOD must be sgpo, grpo or dapo, got '$METHOD'" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
sgpo_verl() { "$PYTHON" -m sgpo.verl.cli "$@"; }
absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

# ---------------------------------------------------------------- inputs (shared storage)
PLAN="${PLAN:-runs/profile/plan.parquet}"  # written by `sgpo plan`
[ -f "$PLAN" ] || { echo "PLAN=$PLAN: no such file (run sgpo profile and sgpo plan)" >&2; exit 2; }
PLAN="$(absolute "$PLAN")"
plan_info="$(sgpo_verl plan-info --plan "$PLAN")"
read -r plan_temperature plan_top_p plan_max_new_tokens plan_model <<< "$plan_info"
MODEL="${MODEL:-$plan_model}"              # the policy the plan was profiled with
SGPO_CONFIG="${SGPO_CONFIG:-}"             # the sgpo config the plan came from (prompt, verifier)
SGPO_SET="${SGPO_SET:-}"                   # its --set overrides: key=value words, as a shell
                                           # splits them ('k="a b"' for a value with spaces)
OUT="${OUT:-runs/verl}"
EXPERIMENT="${EXPERIMENT:-$METHOD}"        # stable: the same command resumes the same run
mkdir -p "$OUT/$EXPERIMENT"
RUN_DIR="$(absolute "$OUT/$EXPERIMENT")"
DATA="${DATA:-$RUN_DIR/train.parquet}"     # the exported verl dataset
VAL_DATA="${VAL_DATA:-}"                   # held-out verl parquet; empty = no validation;
                                           # eval = SGPO_CONFIG's task.eval, exported as sgpo
                                           # scores it (RUN_DIR/val.parquet)
SKIP_EXPORT="${SKIP_EXPORT:-0}"            # 1: DATA already exported (it is still checked)
DATA_SOURCE="${DATA_SOURCE:-}"             # the rows' data_source (verl's metrics group by it);
                                           # empty: a verl file's rows keep their own, others
                                           # get sgpo/addition or sgpo/<preset>

# ---------------------------------------------------------------- cluster
NNODES="${NNODES:-1}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
ROLLOUT_ENGINE="${ROLLOUT_ENGINE:-vllm}"
ROLLOUT_TP="${ROLLOUT_TP:-1}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.6}"

# ---------------------------------------------------------------- training
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-64}"  # queries (prompts) per step
GROUP_SIZE="${GROUP_SIZE:-8}"               # grpo, dapo: the fixed group size
mini_batch_given="${PPO_MINI_BATCH_SIZE:-}${ROLLOUT_N:-}"  # set by the user, before the defaults
if [ "$METHOD" = sgpo ]; then
    ROLLOUT_N="${ROLLOUT_N:-1}"             # only scales the mini-batch: each row has __rollout_n__
else
    ROLLOUT_N="$GROUP_SIZE"
fi
PPO_MINI_BATCH_SIZE="${PPO_MINI_BATCH_SIZE:-$TRAIN_BATCH_SIZE}"
# sgpo, 1 (default): one optimizer step per step, as sgpo train and the grpo/dapo launches take;
# 0 (the default when PPO_MINI_BATCH_SIZE or ROLLOUT_N is given): one per
# PPO_MINI_BATCH_SIZE x ROLLOUT_N rollouts (refused with the whole batch's denominator)
if [ -z "${ONE_UPDATE_PER_STEP:-}" ] && [ "$METHOD" = sgpo ] && [ -n "$mini_batch_given" ]; then
    echo "PPO_MINI_BATCH_SIZE or ROLLOUT_N given: ONE_UPDATE_PER_STEP=0, several optimizer" \
         "steps per step (set ONE_UPDATE_PER_STEP=1 for one, as sgpo train takes)" >&2
    ONE_UPDATE_PER_STEP=0
fi
ONE_UPDATE_PER_STEP="${ONE_UPDATE_PER_STEP:-1}"
MAX_PROMPT_LENGTH="${MAX_PROMPT_LENGTH:-512}"
MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-$plan_max_new_tokens}"
TEMPERATURE="${TEMPERATURE:-$plan_temperature}"
TOP_P="${TOP_P:-$plan_top_p}"
ALLOW_SAMPLING_MISMATCH="${ALLOW_SAMPLING_MISMATCH:-0}"
ALLOW_NOT_CARRIED="${ALLOW_NOT_CARRIED:-0}"
MAX_TOKENS_PER_GPU="${MAX_TOKENS_PER_GPU:-}"      # empty: max(16384, prompt + response lengths)
LR="${LR:-1e-6}"
PPO_EPOCHS="${PPO_EPOCHS:-1}"
LOSS_AGG_MODE="${LOSS_AGG_MODE:-token-mean}"
NORM_ADV_BY_STD="${NORM_ADV_BY_STD:-False}"
EPOCHS="${EPOCHS:-1}"
TEST_FREQ="${TEST_FREQ:-10}"
SAVE_FREQ="${SAVE_FREQ:-10}"                # steps between checkpoints (resume granularity)
KEEP_CHECKPOINTS="${KEEP_CHECKPOINTS:-2}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-$RUN_DIR/checkpoints}"
PROJECT="${PROJECT:-sgpo}"
LOGGERS="${LOGGERS:-console}"              # verl trackers (wandb, tensorboard, ...); file is added
DAPO_MAX_GEN_BATCHES="${DAPO_MAX_GEN_BATCHES:-0}"  # dapo: 0 = no limit (verl's default)
# verl's file logger always, for `sgpo flops`: LOGGERS adds trackers to it
case "$LOGGERS" in
    *[!A-Za-z0-9_,-]* | "" | ,* | *, | *,,*)
        echo "LOGGERS=$LOGGERS: give tracker names separated by commas (console,wandb)" >&2
        exit 2 ;;
esac
loggers="$LOGGERS"
[[ ",$loggers," == *,file,* ]] || loggers="$loggers,file"

if [ -z "$MODEL" ] || [ "$MODEL" = - ]; then
    echo "set MODEL to the policy's model directory (readable from every node)" >&2
    exit 2
fi
# Ray workers do not start in this directory: local paths go to verl absolute, as PLAN and DATA
[ -e "$MODEL" ] && MODEL="$(absolute "$MODEL")"  # else a hub id
EXPORT_VAL=0
if [ "$VAL_DATA" = eval ]; then
    VAL_DATA="$RUN_DIR/val.parquet"
    if [ "$SKIP_EXPORT" = 1 ]; then
        [ -f "$VAL_DATA" ] || { echo "VAL_DATA=eval with SKIP_EXPORT=1: $VAL_DATA was never" \
                                     "exported" >&2; exit 2; }
    else
        EXPORT_VAL=1
    fi
fi
if [ -n "$VAL_DATA" ] && [ "$EXPORT_VAL" = 0 ] && [ "$VAL_DATA" = "${VAL_DATA#*://}" ] \
        && [ ! -e "$VAL_DATA" ]; then
    echo "VAL_DATA=$VAL_DATA: no such file" >&2
    exit 2
fi
[ -n "$VAL_DATA" ] && [ -e "$VAL_DATA" ] && VAL_DATA="$(absolute "$VAL_DATA")"
case "$CHECKPOINT_DIR" in /*) ;; *) CHECKPOINT_DIR="$PWD/$CHECKPOINT_DIR" ;; esac
profiled_model="$plan_model"  # a relative path recorded by the plan: as MODEL, made absolute
[ -e "$profiled_model" ] && profiled_model="$(absolute "$profiled_model")"
if [ "$MODEL" != "$profiled_model" ]; then
    echo "note: MODEL=$MODEL but the plan was profiled with $plan_model; they must be the same" \
         "policy (a copy elsewhere is fine)" >&2
fi
mkdir -p "$RUN_DIR/metrics" "$RUN_DIR/verifier"
# verl's file logger truncates its file on open: one file per launch, `sgpo flops` reads them all.
METRICS="$RUN_DIR/metrics/$(date +%Y%m%d-%H%M%S).jsonl"

# 1. plan -> verl dataset, written to a staging folder beside DATA: DATA (what a recorded run's
#    checkpoints were trained on) is replaced only once the run is checked (record-run, step 4)
if [ "$SKIP_EXPORT" = 1 ]; then
    [ -f "$DATA" ] || { echo "DATA=$DATA: no such file" >&2; exit 2; }
else
    mkdir -p "$(dirname "$DATA")"
fi
DATA="$(absolute "$DATA")"
# Paths go to verl as Hydra override values, whose grammar reads , = [ ] { } ( ) quotes # ~ &
# ; < > ! ^ ` $ and non-ASCII letters as syntax (or refuses them) and strips outer spaces
hydra_safe='^[A-Za-z0-9_./:@%+-]([A-Za-z0-9_./:@%+ -]*[A-Za-z0-9_./:@%+-])?$'
for name in RUN_DIR DATA VAL_DATA CHECKPOINT_DIR MODEL; do
    if [ -n "${!name}" ] && ! [[ "${!name}" =~ $hydra_safe ]]; then
        echo "$name=${!name}: Hydra reads this path as override syntax (or refuses it); use a" \
             "path of ASCII letters, digits, spaces inside and _ . / : @ % + - only" >&2
        exit 2
    fi
done
EXPORTED="$DATA"
STAGING=""
VAL_STAGING=""  # the held-out split's, beside VAL_DATA (install_exports moves within a file system)
if [ "$SKIP_EXPORT" != 1 ]; then
    STAGING="$(mktemp -d "$(dirname "$DATA")/.sgpo-export.XXXXXX")"
    [ "$EXPORT_VAL" = 1 ] && VAL_STAGING="$(mktemp -d "$(dirname "$VAL_DATA")/.sgpo-export.XXXXXX")"
    trap 'rm -rf "$STAGING" "$VAL_STAGING"' EXIT
    EXPORTED="$STAGING/$(basename "$DATA")"
    export_args=(--plan "$PLAN" --out "$EXPORTED" --train-batch-size "$TRAIN_BATCH_SIZE")
    [ -n "$SGPO_CONFIG" ] && export_args+=(--config "$SGPO_CONFIG")
    [ -n "$DATA_SOURCE" ] && export_args+=(--data-source "$DATA_SOURCE")
    # shell words: a value with spaces is quoted inside; each word ends with a NUL
    split_words='import shlex, sys
try:
    words = shlex.split(sys.argv[1])
except ValueError as e:
    sys.exit(f"SGPO_SET={sys.argv[1]}: not shell words ({e})")
sys.stdout.write("".join(w + "\0" for w in words))'
    "$PYTHON" -c "$split_words" "$SGPO_SET" > /dev/null || exit 2
    while IFS= read -r -d '' item; do
        export_args+=(--set "$item")
    done < <("$PYTHON" -c "$split_words" "$SGPO_SET")
    [ "$METHOD" != sgpo ] && export_args+=(--fixed-group-size "$GROUP_SIZE")
    # the held-out split is staged too, and moved to VAL_DATA with the export (step 4)
    [ "$EXPORT_VAL" = 1 ] && export_args+=(--val-out "$VAL_STAGING/$(basename "$VAL_DATA")")
    sgpo_verl export "${export_args[@]}" >&2
fi
VAL_CHECKED="$VAL_DATA"  # what the checks and the run record read: the staged file, if any
[ "$EXPORT_VAL" = 1 ] && VAL_CHECKED="$VAL_STAGING/$(basename "$VAL_DATA")"
if [ -n "$SGPO_CONFIG" ]; then
    echo "note: training with this launch's LR=$LR LOSS_AGG_MODE=$LOSS_AGG_MODE" \
         "NORM_ADV_BY_STD=$NORM_ADV_BY_STD PPO_EPOCHS=$PPO_EPOCHS EPOCHS=$EPOCHS (verl's clip," \
         "weight decay and betas, no KL loss); SGPO_CONFIG's train.lr, kl_coef, clip," \
         "normalize_std, loss_aggregation, optimizer and steps are sgpo's trainer's, not read" >&2
fi

# 2. the checks (exit 2 naming the problem)
check_args=(--data "$EXPORTED" --train-batch-size "$TRAIN_BATCH_SIZE" --plan "$PLAN"
            --temperature "$TEMPERATURE" --top-p "$TOP_P"
            --max-response-length "$MAX_RESPONSE_LENGTH"
            --model "$MODEL" --max-prompt-length "$MAX_PROMPT_LENGTH" --method "$METHOD"
            --group-size "$GROUP_SIZE")
[ -n "$MAX_TOKENS_PER_GPU" ] && check_args+=(--max-tokens-per-gpu "$MAX_TOKENS_PER_GPU")
[ "$ALLOW_SAMPLING_MISMATCH" = 1 ] && check_args+=(--allow-sampling-mismatch)
[ "$ALLOW_NOT_CARRIED" = 1 ] && check_args+=(--allow-not-carried)
# (a VAL_DATA this node cannot read, hdfs:// say, or one not in parquet, is left to verl)
if [ -f "$VAL_CHECKED" ] && [ "${VAL_CHECKED%.parquet}" != "$VAL_CHECKED" ]; then
    check_args+=(--val-data "$VAL_CHECKED")
fi
opens_thinking="$(sgpo_verl check "${check_args[@]}")"
# verl's dynamic batching asserts that the longest sequence fits one micro-batch's tokens
if [ -z "$MAX_TOKENS_PER_GPU" ]; then
    MAX_TOKENS_PER_GPU=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
    if [ "$MAX_TOKENS_PER_GPU" -lt 16384 ]; then MAX_TOKENS_PER_GPU=16384; fi
fi
# A model whose prompts open its <think> (R1-Distill, QwQ): rewards read each response as begun
# inside it, as the profile did, so one cut off while thinking scores 0 (reward workers get it
# through the runtime env below, with the other SGPO_VERIFIER* variables)
if [ "$opens_thinking" = 1 ]; then
    export SGPO_VERIFIER_THINKING_IN_PROMPT=1
    echo "note: MODEL's prompts open its <think>: responses are scored as begun inside it" >&2
fi

# PODS down-sampling (sgpo.verl.sampler): the export's train.downsample_to unless DOWNSAMPLE_TO is
# set (DOWNSAMPLE_TO=4 run_grpo.sh is GRPO down-sampled, the control). DAPO's own sampler filters.
# Skip on history (sgpo.verl.sampler): the export's train.history_* (explore 1 = off). verl has no
# dataloader-sampler hook, so sgpo's dataset gives a skipped row no rollout and sgpo's replay
# buffer refills the step with the next rows, one per dataloader fetch, in the trainer's process.
# Dead groups dropped (sgpo.verl.sampler): the export's train.drop_equal_groups unless
# DROP_EQUAL_GROUPS (0 or 1) is set (DROP_EQUAL_GROUPS=1 run_grpo.sh is GRPO with them dropped);
# the token-mean's denominator: the export's train.drop_equal_denominator unless
# DROP_EQUAL_DENOMINATOR (kept or generated) is set. generated keeps it over the whole batch, so
# the update is the one without the drop (DROP_EQUAL_GROUPS=1 DROP_EQUAL_DENOMINATOR=generated
# run_grpo.sh trains as GRPO and skips the dead groups' training passes).
info_args=(--data "$EXPORTED" --train-batch-size "$TRAIN_BATCH_SIZE")
if [ -n "${DOWNSAMPLE_TO:-}" ]; then
    case "$DOWNSAMPLE_TO" in
        *[!0-9]*) echo "DOWNSAMPLE_TO=$DOWNSAMPLE_TO: must be a whole number (0 = off)" >&2; exit 2 ;;
    esac
    info_args+=(--downsample-to "$DOWNSAMPLE_TO")
fi
# max_trained: the most rollouts one step trains, each group cut to DOWNSAMPLE_TO (or the
# export's down-sampling): what one mini-batch must hold
read -r export_downsample_to max_trained history_explore history_min_streak history_target \
    history_seed export_drop_equal_groups export_drop_equal_denominator export_success_threshold \
    <<< "$(sgpo_verl data-info "${info_args[@]}")"
DOWNSAMPLE_TO="${DOWNSAMPLE_TO:-$export_downsample_to}"
DROP_EQUAL_GROUPS="${DROP_EQUAL_GROUPS:-$export_drop_equal_groups}"
DROP_EQUAL_DENOMINATOR="${DROP_EQUAL_DENOMINATOR:-$export_drop_equal_denominator}"
# rows the export did not write (a VAL_DATA of your own) are scored with its verifier and
# settings (sgpo.verl.reward.row_scoring), unless SGPO_VERIFIER names another; then acc counts
# from the export's task.success_threshold, in the verifier's own units
export SGPO_VERIFIER_EXPORT="${SGPO_VERIFIER_EXPORT-$DATA}"  # set empty: by their data_source
export SGPO_VERIFIER_SUCCESS_THRESHOLD="${SGPO_VERIFIER_SUCCESS_THRESHOLD:-$export_success_threshold}"
if [ "$DOWNSAMPLE_TO" != 0 ] && { [ "$METHOD" = dapo ] || [ "$DOWNSAMPLE_TO" -lt 2 ]; }; then
    echo "DOWNSAMPLE_TO=$DOWNSAMPLE_TO: down-sampling keeps >= 2 of a group, and not with" \
         "METHOD=dapo (its own sampler filters groups)" >&2
    exit 2
fi
if [ "$DROP_EQUAL_GROUPS" != 0 ] && { [ "$METHOD" = dapo ] || [ "$DROP_EQUAL_GROUPS" != 1 ]; }; then
    echo "DROP_EQUAL_GROUPS=$DROP_EQUAL_GROUPS: 0 or 1, and not with METHOD=dapo (its own" \
         "sampler filters groups)" >&2
    exit 2
fi
if [ "$DROP_EQUAL_DENOMINATOR" != kept ] && { [ "$DROP_EQUAL_DENOMINATOR" != generated ] ||
    [ "$DROP_EQUAL_GROUPS" != 1 ] || [ "$LOSS_AGG_MODE" != token-mean ]; }; then
    echo "DROP_EQUAL_DENOMINATOR=$DROP_EQUAL_DENOMINATOR: kept or generated, and generated" \
         "needs DROP_EQUAL_GROUPS=1 and LOSS_AGG_MODE=token-mean (got $DROP_EQUAL_GROUPS," \
         "$LOSS_AGG_MODE)" >&2
    exit 2
fi
ADV_ESTIMATOR=grpo
sampler_overrides=()
if [ "$history_explore" != 1.0 ]; then
    sampler_overrides=(trainer.v1.sampler.custom_sampler.path=pkg://sgpo.verl.sampler
                       trainer.v1.sampler.custom_sampler.name=HistoryReplayBuffer
                       data.custom_cls.path=pkg://sgpo.verl.sampler
                       data.custom_cls.name=HistoryDataset
                       "+data.sgpo_history.explore=$history_explore"
                       "+data.sgpo_history.min_streak=$history_min_streak"
                       "+data.sgpo_history.target=$history_target"
                       "+data.sgpo_history.seed=$history_seed"
                       data.gen_batch_size=1
                       data.dataloader_num_workers=0)
elif [ "$DOWNSAMPLE_TO" != 0 ] || [ "$DROP_EQUAL_GROUPS" = 1 ]; then
    sampler_overrides=(trainer.v1.sampler.custom_sampler.path=pkg://sgpo.verl.sampler
                       trainer.v1.sampler.custom_sampler.name=DownsampleReplayBuffer)
fi
if [ "$DOWNSAMPLE_TO" != 0 ]; then
    sampler_overrides+=("+trainer.v1.sampler.sampler_kwargs.downsample_to=$DOWNSAMPLE_TO")
fi
if [ "$DROP_EQUAL_GROUPS" = 1 ]; then
    sampler_overrides+=("+trainer.v1.sampler.sampler_kwargs.drop_equal_groups=true")
fi
if [ "$DROP_EQUAL_DENOMINATOR" = generated ]; then  # GRPO's advantage times the token ratio
    sampler_overrides+=("+trainer.v1.sampler.sampler_kwargs.drop_equal_denominator=generated")
    ADV_ESTIMATOR=sgpo_grpo_whole_batch
fi

# 3. mini-batches. verl pads every step's batch with 128-token dummy sequences up to a multiple of
#    lcm(dp size, actor.ppo_mini_batch_size * rollout.n) (trainer_base._get_required_batch_multiple).
if [ "$METHOD" = sgpo ] && [ "$ONE_UPDATE_PER_STEP" = 1 ]; then
    # one mini-batch holds the most rollouts a step trains (max_trained, from data-info)
    PPO_MINI_BATCH_SIZE="$TRAIN_BATCH_SIZE"
    ROLLOUT_N=$(( (max_trained + TRAIN_BATCH_SIZE - 1) / TRAIN_BATCH_SIZE ))
    # and splits over the GPUs (verl refuses a mini-batch that does not)
    while [ $(( TRAIN_BATCH_SIZE * ROLLOUT_N % (NNODES * GPUS_PER_NODE) )) -ne 0 ]; do
        ROLLOUT_N=$(( ROLLOUT_N + 1 ))
    done
elif [ "$METHOD" = grpo ] && [ "$DOWNSAMPLE_TO" != 0 ] && [ "$DOWNSAMPLE_TO" -lt "$GROUP_SIZE" ]
then
    # each group trains DOWNSAMPLE_TO of its GROUP_SIZE (rows carry __rollout_n__, so rollout.n
    # only sizes the mini-batch): one of TRAIN_BATCH_SIZE x DOWNSAMPLE_TO holds the step, where
    # one of x GROUP_SIZE would be padded back to it with dummy sequences; kept at GROUP_SIZE
    # where that does not split over the GPUs
    if [ $(( TRAIN_BATCH_SIZE * DOWNSAMPLE_TO % (NNODES * GPUS_PER_NODE) )) -eq 0 ]; then
        ROLLOUT_N="$DOWNSAMPLE_TO"
    else
        echo "note: TRAIN_BATCH_SIZE * DOWNSAMPLE_TO = $(( TRAIN_BATCH_SIZE * DOWNSAMPLE_TO ))" \
             "does not split over $(( NNODES * GPUS_PER_NODE )) GPUs: the mini-batch stays" \
             "TRAIN_BATCH_SIZE * GROUP_SIZE, each step padded to it with dummy sequences" >&2
    fi
fi
# The whole batch's denominator gives the update without the drop only when one mini-batch
# holds everything a step trains (verl normalises each mini-batch by its own tokens).
if [ "$DROP_EQUAL_DENOMINATOR" = generated ]; then
    # sgpo: max_trained from data-info (the plan's group sizes); the baselines' fixed G:
    if [ "$METHOD" != sgpo ] && [ "$DOWNSAMPLE_TO" != 0 ] && [ "$DOWNSAMPLE_TO" -lt "$GROUP_SIZE" ]; then
        max_trained=$(( TRAIN_BATCH_SIZE * DOWNSAMPLE_TO ))
    elif [ "$METHOD" != sgpo ]; then
        max_trained=$(( TRAIN_BATCH_SIZE * GROUP_SIZE ))
    fi
    if [ $(( PPO_MINI_BATCH_SIZE * ROLLOUT_N )) -lt "$max_trained" ]; then
        echo "DROP_EQUAL_DENOMINATOR=generated needs one mini-batch per step: a step trains up to" \
             "$max_trained rollouts, a mini-batch holds PPO_MINI_BATCH_SIZE * ROLLOUT_N =" \
             "$(( PPO_MINI_BATCH_SIZE * ROLLOUT_N )) (leave PPO_MINI_BATCH_SIZE at" \
             "TRAIN_BATCH_SIZE; METHOD=sgpo: ONE_UPDATE_PER_STEP=1)" >&2
        exit 2
    fi
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

case "$METHOD" in
    sgpo)  # the curriculum is the row order; each row's __rollout_n__ is its G
        method_overrides=(data.shuffle=False algorithm.filter_groups.enable=False) ;;
    grpo)  # the same queries, shuffled by verl, fixed G, nothing filtered
        method_overrides=(data.shuffle=True algorithm.filter_groups.enable=False) ;;
    dapo)  # + dynamic sampling: zero-variance groups (canonical reward) evicted and refilled
        method_overrides=(data.shuffle=True algorithm.filter_groups.enable=True
                          algorithm.filter_groups.metric=reward
                          "algorithm.filter_groups.max_num_gen_batches=$DAPO_MAX_GEN_BATCHES") ;;
esac

# Ray's runtime env reaches every worker on every node, unlike the launching shell's environment:
# sgpo's verifier settings and where reward workers count verifier errors and timeouts.
# Values are quoted so hydra keeps them strings (Ray requires string env vars).
hydra_string() { local v="${1//\\/\\\\}"; printf "'%s'" "${v//\'/\\\'}"; }
runtime_env=(
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$METRICS"
    "+ray_kwargs.ray_init.runtime_env.env_vars.SGPO_VERIFIER_STATS_DIR=$(hydra_string "$RUN_DIR/verifier")"
)
while IFS= read -r name; do
    runtime_env+=("+ray_kwargs.ray_init.runtime_env.env_vars.$name=$(hydra_string "${!name}")")
done < <(compgen -e | grep -E '^SGPO_VERIFIER' | grep -vx SGPO_VERIFIER_STATS_DIR || true)

overrides=(
    # --- data
    "data.train_files=$DATA"
    data.filter_overlong_prompts=False  # checked above instead: none is longer
    "data.train_batch_size=$TRAIN_BATCH_SIZE"
    "data.max_prompt_length=$MAX_PROMPT_LENGTH"
    "data.max_response_length=$MAX_RESPONSE_LENGTH"
    "${validation[@]}"
    "${method_overrides[@]}"
    "${sampler_overrides[@]}"
    trainer.use_v1=True
    trainer.v1.trainer_mode=sync
    # --- group-relative advantages over groups of any size
    "algorithm.adv_estimator=$ADV_ESTIMATOR"
    "algorithm.norm_adv_by_std_in_grpo=$NORM_ADV_BY_STD"
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
    # --- model and rollout engine, with the plan's sampling
    "actor_rollout_ref.model.path=$MODEL"
    "actor_rollout_ref.rollout.name=$ROLLOUT_ENGINE"
    "actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP"
    "actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEMORY_UTILIZATION"
    "actor_rollout_ref.rollout.temperature=$TEMPERATURE"
    "actor_rollout_ref.rollout.top_p=$TOP_P"
    # --- cluster, checkpoints and resume, logging (the file logger feeds `sgpo flops`)
    "trainer.nnodes=$NNODES"
    "trainer.n_gpus_per_node=$GPUS_PER_NODE"
    "trainer.total_epochs=$EPOCHS"
    "trainer.project_name=$PROJECT"
    "trainer.experiment_name=$EXPERIMENT"
    "trainer.default_local_dir=$CHECKPOINT_DIR"
    "trainer.save_freq=$SAVE_FREQ"
    trainer.resume_mode=auto
    "trainer.max_actor_ckpt_to_keep=$KEEP_CHECKPOINTS"
    "trainer.logger=[$loggers]"
    "${runtime_env[@]}"
)

# An extra argument for a key set above would win in verl (the last value does; hydra's +key
# and ++key set it, ~key deletes it) and bypass the checks made on it (sampling against the
# plan, the batch and mini-batch sizes): refused, unless ALLOW_OVERRIDE=1.
hydra_key() { local key="${1%%=*}"; while [[ "$key" == [+~]* ]]; do key="${key:1}"; done; echo "$key"; }
declare -A launch_keys=()
for item in "${overrides[@]}"; do
    launch_keys["$(hydra_key "$item")"]=1
done
# the launch's variable behind each key a user is likely to reach for
declare -A key_variable=(
    [trainer.logger]=LOGGERS [trainer.project_name]=PROJECT [trainer.experiment_name]=EXPERIMENT
    [trainer.default_local_dir]=CHECKPOINT_DIR [trainer.save_freq]=SAVE_FREQ
    [trainer.test_freq]=TEST_FREQ [trainer.total_epochs]=EPOCHS [trainer.nnodes]=NNODES
    [trainer.n_gpus_per_node]=GPUS_PER_NODE [trainer.max_actor_ckpt_to_keep]=KEEP_CHECKPOINTS
    [data.train_batch_size]=TRAIN_BATCH_SIZE [data.max_prompt_length]=MAX_PROMPT_LENGTH
    [data.max_response_length]=MAX_RESPONSE_LENGTH [data.train_files]=DATA
    [data.val_files]=VAL_DATA [actor_rollout_ref.model.path]=MODEL
    [actor_rollout_ref.rollout.name]=ROLLOUT_ENGINE
    [actor_rollout_ref.rollout.tensor_model_parallel_size]=ROLLOUT_TP
    [actor_rollout_ref.rollout.gpu_memory_utilization]=GPU_MEMORY_UTILIZATION
    [actor_rollout_ref.rollout.temperature]=TEMPERATURE [actor_rollout_ref.rollout.top_p]=TOP_P
    [actor_rollout_ref.rollout.n]=ROLLOUT_N [actor_rollout_ref.actor.optim.lr]=LR
    [actor_rollout_ref.actor.ppo_epochs]=PPO_EPOCHS
    [actor_rollout_ref.actor.ppo_mini_batch_size]=PPO_MINI_BATCH_SIZE
    [actor_rollout_ref.actor.ppo_max_token_len_per_gpu]=MAX_TOKENS_PER_GPU
    [actor_rollout_ref.actor.loss_agg_mode]=LOSS_AGG_MODE
    [algorithm.norm_adv_by_std_in_grpo]=NORM_ADV_BY_STD
)
if [ "${ALLOW_OVERRIDE:-0}" != 1 ]; then
    for item in "$@"; do
        key="$(hydra_key "$item")"
        if [ -n "${launch_keys[$key]:-}" ]; then
            variable="the launch's variable"
            [ -n "${key_variable[$key]:-}" ] && variable="${key_variable[$key]}"
            echo "$item: this launch sets $key itself (and checks it); set it through" \
                 "$variable (examples/verl/README.md, \"Launch variables\"), or" \
                 "ALLOW_OVERRIDE=1 to pass it" >&2
            exit 2
        fi
    done
fi

# 4. the run: refused if RUN_DIR holds another (its DATA then untouched); the export moved to DATA
record_args=(--run-dir "$RUN_DIR" --method "$METHOD" --data "$DATA" --plan "$PLAN")
[ -n "$STAGING" ] && record_args+=(--staged "$EXPORTED")
[ -n "$VAL_DATA" ] && [ -f "$VAL_CHECKED" ] && record_args+=(--val-data "$VAL_DATA")
[ "$EXPORT_VAL" = 1 ] && record_args+=(--staged-val "$VAL_CHECKED")
if [ "${PRINT_OVERRIDES:-0}" = 1 ]; then
    sgpo_verl record-run "${record_args[@]}" --check-only -- "${overrides[@]}" "$@"
    printf '%s\n' "${overrides[@]}" "$@"
    exit 0
fi

sgpo_verl record-run "${record_args[@]}" -- "${overrides[@]}" "$@"
rm -rf "$STAGING" "$VAL_STAGING"  # exec below runs no EXIT trap
echo "verl metrics -> $METRICS; afterwards: sgpo flops --run $RUN_DIR [--run <other runs>]" >&2
exec "$PYTHON" -m verl.trainer.main_ppo "${overrides[@]}" "$@"
