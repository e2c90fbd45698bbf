"""SGPOTrainer: TRL's GRPOTrainer driven by an sgpo plan.

What changes against GRPOTrainer, and where:
- data (get_train_dataloader): PlanSampler replaces RepeatSampler. A generation batch
  (generation_batch_size rows) holds the plan's next queries in curriculum order, each repeated
  its own G, then padding rows; each row carries its group id.
- generation (_generate_single_turn): only the real rows go to the backend (transformers or
  vLLM, one request of sum(G) prompts); padding rows get a one-token EOS completion.
- rewards (_calculate_rewards): reward functions see only real rows; padding rows get NaN.
- advantages (_generate_and_score_completions): TRL groups rewards by view(-1, num_generations),
  so the base call runs with one row per group and the advantages are then recomputed over the
  planned groups (sgpo.trl.advantages, TRL's formula). Padding rows get advantage 0, their
  completion tokens leave the loss mask and num_items_in_batch (the dapo/cispo/vespo
  normaliser), and they are taken out of TRL's generation and reward statistics and the
  completions table.
- cost (sgpo's convention, sgpo.core.flops): FLOPs per phase over real tokens, the profile's
  FLOPs charged from the start, generated tokens and rollouts; logged with sgpo's informative
  fraction and G statistics through TRL's own metrics (keys "sgpo/..."). Padding rows are not
  generated but pass through TRL's log-prob passes and (without drop_equal_groups) its
  training: charged there as a prompt and one token.
- grow until mixed (SGPOConfig.grow_max, _grow): a group whose rewards are all equal gets
  grow_round more responses at a time until both outcomes show or it holds grow_max; its planned
  G rows are then filled with a balanced subset (both outcomes in turn, rarer first) and its
  advantages come from the whole grown group (sgpo's train.grow_train balanced: the batch keeps
  its shape). The extra responses are charged as generation (FLOPs, tokens, rollouts), the
  rewards of the first scoring are reused for the batch, and re-estimation sees whole groups.
  Reward functions' log_extra columns are dropped when growing (they would not line up).
- down-sampling (SGPOConfig.downsample_to, _downsample; PODS, Xu et al. 2025): a planned group
  of G > downsample_to takes downsample_to batch rows; the other G - downsample_to responses
  are generated alongside and the rows filled with the responses whose rewards vary most
  (max_variance_indices), advantages computed within them (sgpo's train.downsample_to,
  train.downsample_advantages subset). The batch is scheduled as `sgpo train` schedules it (G
  generated per group); the rows left over are padding. Charged and logged as growth is.
- dead groups out of the step (SGPOConfig.drop_equal_groups; sgpo's train.drop_equal_groups
  with drop_equal_denominator generated): the rows of groups whose rewards are all equal, and
  padding rows, skip the forward and backward passes (_compute_loss). TRL trains them with
  advantage 0; under a loss normalised by the whole generation batch's tokens (dapo, cispo,
  vespo) and beta = 0 their loss terms are exactly zero, so the update is the same and only
  the mixed groups' rows cost training. Charged so: training FLOPs for the rows trained.
  TRL's per-token statistics (entropy, clip ratios) describe the rows trained (those it takes
  per row, vespo's phi and sequence-level clip ratios, count the rows added too): NaN (left
  out of the step's mean) for a micro-batch that trains none.
- online re-estimation (SGPOConfig.reestimate): every group's outcomes update its query's
  posterior and the plan is rebuilt every replan_every generation batches (sgpo's
  OnlinePlanner). Knapsack allocation and re-profiling of dropped queries are not offered here.
- skip on history (SGPOConfig.history_explore, history_target, history_min_streak,
  history_fill; GRESO, Zheng et al. 2025): each plan epoch skips a query whose last z groups'
  rewards all came back equal with probability 1 - history_explore ** z (sgpo's
  train.history_* settings, the same QueryScheduler). The data loader runs one batch ahead,
  so a batch's outcomes reach the epoch after the next batch is drawn; plan epochs shrink as
  queries are skipped, the Trainer's epoch keeps the static plan's length.
- checkpoints (_save_checkpoint, _init_training_state): each checkpoint folder also holds
  sgpo_state.json (cost counters, the verifiers' error counts, the plan's fingerprint, the
  settings that lay out the batches); resume_from_checkpoint restores them and the plan
  epoch, and TRL's own data skip replays the static plan to the same batch. A re-estimating
  run, or one that skips on history, also records its schedule (the posteriors, the outcome
  streaks, where the plan epoch stands) and the batches drawn in the Trainer's epoch, the one
  the data loader drew ahead of training included (PlanSampler.drawn); a resume restores the
  schedule and its first epoch replays those batches, TRL's data skip discarding the trained
  ones, so it trains what the uninterrupted run trains. A resume that would replay other
  batches (other settings, a checkpoint inside a generation batch, a re-estimating or
  skipping run's checkpoint without its schedule, ignore_data_skip on such a run) is refused.
- rewards from sgpo verifiers (sgpo.trl.rewards.VerifierReward): the answer column is checked
  when the trainer is built, the verifier's settings are compared with the plan's profile, and
  its error and timeout counts are logged.
- several processes (accelerate launch, torchrun; _generate_and_score_completions,
  _apply_groups): every process draws the same batches from the shared seed, and PlanSampler
  deals each batch's real rows evenly over the processes' equal shares (the rest padding). The
  group ids, per-function rewards (each process scores its own real rows), query ids and
  lengths are gathered, so advantages, metrics, cost counters and the schedule's observations
  are computed over the whole batch alike on every process, which keeps its own rows. Each
  process asks the generation backend for as many prompts as the busiest holds real rows (TRL's
  vLLM server mode slices equal shares), and with drop_equal_groups forwards as many rows as the
  busiest trains (TRL gathers per-row statistics). Verifier error counts, and the check that
  stops a run whose verifier failed on a whole batch (its extra draws included), are summed
  over processes. Growth and down-sampling (_draw_more) gather the first draws and each
  round's extra responses, so every process holds what every group drew, in one order, and
  picks and charges alike; a round's extra requests are dealt in equal contiguous shares (a
  short one padded, those completions thrown away), and each process fills its own rows (a
  real engine's extra samples then differ from one process's: other draws, the same
  distribution). A process with nothing to score while others score still runs each reward
  model once, on a stand-in completion (under ZeRO-3 or FSDP its forward pass gathers shards
  from every process). A reward function's log_extra values are laid out over the process's
  share (None on padding), so that gathered they line up with TRL's completions table. Tested
  on CPU (gloo, 2 processes; the table also on 4) against one process with the same global
  batch; not on GPUs, with vLLM itself, DeepSpeed or FSDP.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import trl.trainer.grpo_trainer as trl_grpo
from accelerate.utils import gather_object
from datasets import Dataset, IterableDataset
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer

from sgpo.config import ModelConfig
from sgpo.core.advantages import (
    balanced_indices,
    growth_round,
    informative_groups,
    max_variance_indices,
)
from sgpo.core.flops import PHASES, ModelShape, inference_flops, logprob_flops, train_flops
from sgpo.core.online import history_settings_without_skip
from sgpo.core.rewards import all_equal, is_correct
from sgpo.errors import ConfigError, DataError, SgpoWarning
from sgpo.io import atomic_write_json, read_json
from sgpo.metrics import charged_profile_tokens
from sgpo.models import encode_prompts, format_prompt, model_shape, template_sha256
from sgpo.plan import check_replannable
from sgpo.profile_match import (
    VERIFIER_SETTINGS,
    other_weights,
    profiled_settings,
    profiled_success_threshold,
    sampling_differences,
    settings_of,
)
from sgpo.rundir import CHAT_TEMPLATE_KEY, VERIFIER_CODE_KEY, flatten
from sgpo.schedule import OnlinePlanner
from sgpo.tasks import Query, default_verifier
from sgpo.trl.advantages import grouped_advantages
from sgpo.trl.data import (
    GROUP_KEY,
    GROUP_SIZE_KEY,
    GroupOutcome,
    Plan,
    PlanRows,
    PlanSampler,
    StepSchedule,
    load_plan,
    plan_dataset,
)
from sgpo.trl.rewards import VerifierReward
from sgpo.verify import stop_if_every_call_failed, verifier_code_sha256

# Losses normalised by the generation batch's real tokens: padding rows (mask 0) drop out
# exactly. The per-sequence means ("grpo", "sapo", "luspo") and "dr_grpo" divide by the number
# of rows, and "bnpo" is a token mean per micro-batch divided by the accumulation steps, so a
# micro-batch of padding rows would shrink the gradient. The same normaliser is why
# drop_equal_groups can leave out a row whose advantage is 0: it adds exactly nothing to these
# losses (beta = 0). SGPOConfig refuses the others.
TOKEN_NORMALISED_LOSSES = ("dapo", "cispo", "vespo")
SGPO_KEYS = (GROUP_KEY, GROUP_SIZE_KEY)
TRAINED_KEY = "sgpo_trained"  # per row of a training batch with drop_equal_groups: trained
# GRPOTrainer's per-token statistics of the rows a micro-batch trains (_compute_loss); TRL's
# log averages a step's values leaving NaN out
ROW_STATISTICS = (
    "entropy",
    "kl",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
    "cispo_clip_ratio",
    "vespo/phi_seq_mean",
)
STATE_FILE = "sgpo_state.json"  # in each checkpoint folder, next to TRL's trainer_state.json


# Settings that act only with reestimate=True: set otherwise, they would do nothing.
REESTIMATE_SETTINGS = (
    "replan_every",
    "reestimate_decay",
    "reestimate_prior_alpha",
    "reestimate_prior_beta",
    "success_threshold",
)


def _default(name: str) -> object:
    return SGPOConfig.__dataclass_fields__[name].default


# in sgpo_state.json: its tokens_generated counts the plan's profile's (older states did not)
PROFILE_TOKENS_KEY = "tokens_include_profile"


@dataclass
class SGPOConfig(GRPOConfig):
    """GRPOConfig plus sgpo's knobs. The rollout budget of a step is generation_batch_size
    (per_device_train_batch_size x processes x steps_per_generation): each batch takes plan
    queries while their G fit it."""

    num_generations: int | None = field(
        default=2,
        metadata={"help": "Used by evaluation only; training group sizes come from the plan."},
    )
    query_id_column: str = field(
        default="query_id",
        metadata={"help": "Dataset column holding the plan's query_id."},
    )
    reestimate: bool = field(
        default=False,
        metadata={
            "help": "Online sGPO: update each query's success rate from its training "
            "groups and re-plan every replan_every generation batches."
        },
    )
    replan_every: int = field(default=10, metadata={"help": "Generation batches between re-plans."})
    reestimate_decay: float = field(
        default=0.8, metadata={"help": "Weight old evidence keeps at each new observation."}
    )
    reestimate_prior_alpha: float = 0.0
    reestimate_prior_beta: float = 0.0
    grow_max: int = field(
        default=0,
        metadata={
            "help": "Grow until mixed: a group whose rewards are all equal gets grow_round more "
            "responses at a time up to this many; its planned G rows train a balanced subset "
            "with the whole group's advantages. 0 = off."
        },
    )
    grow_round: int = field(default=4, metadata={"help": "Responses added per growth round."})
    downsample_to: int = field(
        default=0,
        metadata={
            "help": "PODS down-sampling: a planned group of G > downsample_to is generated "
            "whole but trains only the downsample_to responses whose rewards vary most, "
            "advantages within them. 0 = off."
        },
    )
    drop_equal_groups: bool = field(
        default=False,
        metadata={
            "help": "Rows of groups whose rewards are all equal (advantage 0) skip the forward "
            "and backward passes. With loss_type dapo, cispo or vespo and beta = 0 their loss "
            "terms are exactly zero, so the update is unchanged and a step pays training only "
            "for its mixed groups."
        },
    )
    history_explore: float = field(
        default=1.0,
        metadata={
            "help": "Skip on history (GRESO): a query whose last z groups all came back with "
            "one outcome is visited in an epoch with probability history_explore ** z. "
            "1 = off."
        },
    )
    history_target: float = field(
        default=0.0,
        metadata={
            "help": "GRESO's adaptive rule: after each generation batch history_explore moves "
            "by 0.01 (within 0.05-0.95) towards this share of all-equal groups. 0 = off."
        },
    )
    history_min_streak: int = field(
        default=1,
        metadata={
            "help": "Skip on history only from the m-th all-equal group in a row on: visited "
            "with probability history_explore ** (z - m + 1). 1 = GRESO's rule."
        },
    )
    history_fill: bool = field(
        default=False,
        metadata={
            "help": "A generation batch that reaches an epoch's end goes on into the next "
            "(implied by history_target); its queries count as their visit of that epoch."
        },
    )
    success_threshold: float | None = field(
        default=None,
        metadata={
            "help": "A completion whose weighted total reward reaches this counts as correct "
            "(online re-estimation). None: the plan's profile's (its task.success_threshold on "
            "the rescaled [0, 1] reward, 0.5 by default)."
        },
    )

    def __post_init__(self) -> None:
        if self.num_generations is None:
            # TRL's own default (8) would then have to divide the generation batch
            raise ValueError(
                "num_generations must be an int (the group size of evaluation only; training "
                "takes each query's planned G), got None"
            )
        try:
            super().__post_init__()
        except ValueError as e:
            if "divisible by num_generations" not in str(e):
                raise
            raise ValueError(
                f"{e} In SGPOConfig num_generations is evaluation's group size only (training "
                "takes each query's planned G): set it to a divisor of generation_batch_size"
            ) from e
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "SGPOConfig supports multi_objective_aggregation='sum_then_normalize', got "
                f"{self.multi_objective_aggregation!r}"
            )
        if self.loss_type not in TOKEN_NORMALISED_LOSSES:
            raise ValueError(
                f"SGPOConfig supports loss_type in {TOKEN_NORMALISED_LOSSES}, got "
                f"{self.loss_type!r}: padding rows would dilute a per-row mean"
            )
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if not 0 < self.reestimate_decay <= 1:
            raise ValueError(f"reestimate_decay must be in (0, 1], got {self.reestimate_decay}")
        if self.reestimate_prior_alpha < 0 or self.reestimate_prior_beta < 0:
            raise ValueError(
                "reestimate_prior_alpha and reestimate_prior_beta must be >= 0, got "
                f"{self.reestimate_prior_alpha}, {self.reestimate_prior_beta}"
            )
        if self.success_threshold is not None and not math.isfinite(self.success_threshold):
            raise ValueError(f"success_threshold must be finite, got {self.success_threshold}")
        idle = [name for name in REESTIMATE_SETTINGS if getattr(self, name) != _default(name)]
        if idle and not self.reestimate:
            raise ValueError(f"{idle[0]} needs reestimate=True (online re-estimation)")
        if self.grow_round != _default("grow_round") and not self.grow_max:
            raise ValueError("grow_round needs grow_max >= 2 (grow until mixed)")
        if self.grow_max == 1 or self.grow_max < 0:
            raise ValueError(f"grow_max must be 0 (off) or >= 2, got {self.grow_max}")
        if self.grow_round < 1:
            raise ValueError(f"grow_round must be >= 1, got {self.grow_round}")
        if self.downsample_to == 1 or self.downsample_to < 0:
            raise ValueError(f"downsample_to must be 0 (off) or >= 2, got {self.downsample_to}")
        if self.downsample_to and self.grow_max:
            raise ValueError("downsample_to does not combine with grow_max")
        if not 0 < self.history_explore <= 1:
            raise ValueError(f"history_explore must be in (0, 1], got {self.history_explore}")
        if not 0 <= self.history_target < 1:
            raise ValueError(f"history_target must be in [0, 1), got {self.history_target}")
        if self.history_min_streak < 1:
            raise ValueError(f"history_min_streak must be >= 1, got {self.history_min_streak}")
        if self.entropy_coef != 0.0 or self.use_adaptive_entropy:
            raise ValueError(
                "SGPOConfig takes no entropy bonus (entropy_coef = 0, use_adaptive_entropy off): "
                "TRL averages it per micro-batch over the rows forwarded and divides by the "
                "accumulation steps, so micro-batches of padding rows (or of dead groups left "
                "out) would shrink it"
            )
        if self.drop_equal_groups:
            self._check_drop_keeps_the_update()
        idle = history_settings_without_skip(
            self.history_explore, self.history_target, self.history_min_streak, self.history_fill
        )
        if idle:
            raise ValueError(f"{idle[0]} needs history_explore < 1 (skip on history)")

    def _check_drop_keeps_the_update(self) -> None:
        """drop_equal_groups leaves rows out of the loss: only where they add nothing to it
        (the loss is normalised by the whole generation batch's tokens, checked above)."""
        if self.beta != 0.0:
            raise ValueError(
                f"drop_equal_groups needs beta = 0, got {self.beta}: the KL term of the rows "
                "left out would be lost"
            )
        if self.top_entropy_quantile < 1.0:
            raise ValueError(
                "drop_equal_groups needs top_entropy_quantile = 1: the entropy mask's quantile "
                "is taken over the rows trained, so leaving rows out would move it"
            )


class SGPOTrainer(GRPOTrainer):
    """GRPOTrainer that trains on a plan's kept queries in curriculum order, each with its own
    group size. `plan` is a plan.parquet path (or a loaded Plan); `train_dataset` defaults to
    the plan's queries as plain-text prompts (see plan_dataset) and must have a query-id column
    otherwise."""

    _tag_names = ["trl", "sgpo"]

    def __init__(
        self,
        model: Any,
        reward_funcs: Any,
        plan: Plan | str | Path,
        args: SGPOConfig | None = None,
        train_dataset: Dataset | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(plan, (Plan, str, os.PathLike)):
            # GRPOTrainer's third positional parameter is args: name what goes there here
            raise TypeError(
                f"plan must be a plan.parquet path or a Plan, got {type(plan).__name__}: "
                "SGPOTrainer(model, reward_funcs, plan, args, ...) takes the plan third, "
                "where GRPOTrainer takes args (pass plan=... and args=... by name)"
            )
        plan = plan if isinstance(plan, Plan) else load_plan(plan)
        args = args if args is not None else SGPOConfig(output_dir="sgpo-trl")
        if not isinstance(args, SGPOConfig):
            raise TypeError(
                f"args must be an SGPOConfig, got {type(args).__name__}: SGPOConfig takes "
                "GRPOConfig's fields and sgpo's (SGPOConfig(**the same fields))"
            )
        for name in ("tools", "environment_factory", "rollout_func"):
            if kwargs.get(name) is not None:
                raise NotImplementedError(f"SGPOTrainer does not support `{name}`")
        train_dataset = train_dataset if train_dataset is not None else plan_dataset(plan)
        if isinstance(train_dataset, IterableDataset):
            raise TypeError(
                "SGPOTrainer needs a map-style train_dataset (it looks each planned query up by "
                "its id), got an IterableDataset: pass a datasets.Dataset, e.g. plan_dataset(plan)"
            )
        # what a checkpoint records of the plan, so that it resumes only under the same one
        curriculum = [[str(s.query.query_id), int(s.group_size)] for s in plan.kept]
        self._plan_fingerprint = hashlib.sha256(json.dumps(curriculum).encode()).hexdigest()
        super().__init__(model, reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        if self._is_vlm:
            raise NotImplementedError("SGPOTrainer does not support vision-language models")
        if args.drop_equal_groups and self.aux_loss_enabled:
            raise NotImplementedError(
                "drop_equal_groups with a router auxiliary loss: the loss is taken over the rows "
                "trained, so leaving rows out would change it"
            )

        # what re-estimation counts as a success: by default what the plan's profile counted
        self.success_threshold = (
            profiled_success_threshold(plan.meta)
            if args.success_threshold is None
            else args.success_threshold
        )
        if args.reestimate:
            check_replannable(plan.p_hat_estimates_p, plan.path, "reestimate=True")
            if len(self.reward_funcs) > 1 and args.success_threshold is None:
                # the profile's p_hat counts the verifier's successes: a format reward in the
                # total would count wrong but well-formatted answers as successes
                warnings.warn(
                    f"reestimate=True counts a completion whose weighted total of the "
                    f"{len(self.reward_funcs)} reward functions reaches success_threshold="
                    f"{self.success_threshold} as a success; set success_threshold to what only "
                    "a correct completion reaches (with weights [1, 0.2] for correctness and "
                    "format, 1.0), or the re-estimated p will not mean what the profile's p_hat "
                    "means",
                    SgpoWarning,
                    stacklevel=2,
                )
        self._plan = plan
        self.schedule = self._schedule_from_the_start()
        self._trained_before = False  # a later train() call restarts the schedule
        # Re-planning can bring back any query of the plan; the static plan needs the kept ones.
        needed = (
            [r.query_id for r in plan.rows]
            if args.reestimate
            else [s.query.query_id for s in plan.kept]
        )
        self.plan_sampler = PlanSampler(
            self.schedule,
            _index_by_query(train_dataset, args.query_id_column, needed),
            args.generation_batch_size,
            repeat=self.num_iterations * args.steps_per_generation,
            downsample_to=args.downsample_to,
            processes=self.accelerator.num_processes,
        )
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.shape = model_shape(unwrapped)
        # under peft TRL's reference pass runs its frozen copy of a given adapter ("ref") or,
        # for an adapter it made, the model with the adapter disabled
        peft_config = getattr(unwrapped, "peft_config", {})
        self.reference_shape = model_shape(unwrapped, "ref" if "ref" in peft_config else None)
        self._verifier_rewards = [f for f in self.reward_funcs if isinstance(f, VerifierReward)]
        for reward in self._verifier_rewards:
            # with several processes a batch's rows are scored in one call per process: a
            # verifier failing on every response of the batch is checked over all of them
            reward.checks_each_batch = self.accelerator.num_processes == 1
            for label, dataset in self._datasets_scored(train_dataset):
                if reward.answer_column not in dataset.column_names:
                    raise ValueError(
                        f"{label} has no column {reward.answer_column!r}, the reference "
                        f"answers reward {reward.__name__} scores against; its columns are "
                        f"{dataset.column_names} (verifier_reward(..., answer_column=...))"
                    )
        self._warn_unlike_the_profile(plan, train_dataset)
        self._warn_of_checkpoints_inside_a_generation_batch()
        if args.num_generations != _default("num_generations"):  # GRPOTrainer's group size
            sizes = sorted({s.group_size for s in plan.kept})
            warnings.warn(
                f"num_generations={args.num_generations} sets evaluation's group size only; "
                f"training takes each query's planned G ({sizes[0]} to {sizes[-1]} in "
                f"{plan.path})",
                SgpoWarning,
                stacklevel=2,
            )
        self._zero_sgpo_counters()
        self._group_ids: torch.Tensor | None = None  # this process's rows of the training batch
        # The whole batch across processes (every process computes advantages, counters and
        # the schedule's observations over it) and where this process's rows lie in it.
        self._all_group_ids: torch.Tensor | None = None
        self._local_rows = slice(0)
        self._rows: list[dict] | None = None  # its dataset rows (reward function inputs)
        # The whole batch's prompts and dataset rows while drawing extra responses (_draw_more)
        self._all_prompts: list | None = None
        self._all_dataset_rows: list[dict] | None = None
        self._rewards_per_func: torch.Tensor | None = None
        # Growth and down-sampling: the batch groups' planned G, per-function rewards of the
        # batch's rows as first scored, and every reward each group drew (a grown group's
        # advantages' statistics).
        self._group_sizes: dict[int, int] = {}
        self._scores: torch.Tensor | None = None
        self._table_columns: list[str] = []  # the log_extra columns of the batch's table
        self._table_error: str | None = None  # a log_extra column of another length, if any
        self._said_unscorable = False  # a batch of no reward at all was warned about
        self._whole_groups: dict[int, torch.Tensor] = {}
        # (prompt, completion) tokens of each real row of the batch: its training is charged
        # once the rows trained are known (_apply_groups)
        self._lengths: dict[int, tuple[int, int]] = {}

    def _schedule_from_the_start(self) -> StepSchedule:
        """The plan's schedule at its first batch (re-estimation's and history's state fresh)."""
        args, plan = self.args, self._plan
        planner = (
            OnlinePlanner(
                plan.rows,
                plan.rule,
                args.reestimate_decay,
                (args.reestimate_prior_alpha, args.reestimate_prior_beta),
                args.seed,
            )
            if args.reestimate
            else None
        )
        return StepSchedule(
            plan,
            args.generation_batch_size,
            args.seed,
            planner,
            args.replan_every,
            args.history_explore,
            args.history_target,
            args.history_min_streak,
            args.history_fill,
        )

    def _zero_sgpo_counters(self) -> None:
        self.sgpo_flops = dict.fromkeys(PHASES, 0.0) | {"profile": self._plan.profile_flops}
        self.sgpo_rollouts = 0
        # the profile's generated tokens counted from the start, as its FLOPs (and sgpo train's)
        self.sgpo_tokens_generated = charged_profile_tokens(self._plan.rows, self._plan.meta)
        # what a resumed run's verifiers had counted before its checkpoint (_restore_sgpo_state)
        self._verifier_counts_offset = {"errors": 0.0, "timeouts": 0.0}

    def _warn_unlike_the_profile(self, plan: Plan, train_dataset: Dataset) -> None:
        """An SgpoWarning naming what this run does otherwise than the plan's profile (sgpo
        train refuses such a plan): its p_hat were measured under those settings only."""
        launch = {
            "temperature": self.args.temperature,
            "top_p": self.args.top_p,
            "max_new_tokens": self.args.max_completion_length,
        }
        model = self.accelerator.unwrap_model(self.model)
        peft = hasattr(model, "peft_config")
        problems = profile_mismatches(plan.meta, launch, self.shape, with_adapter=peft)
        # of the same shape, a base and an instruct checkpoint tell apart by their weights only
        source = getattr(getattr(model, "config", None), "_name_or_path", None)
        other = other_weights(plan.meta, source)
        if other is not None:
            problems.append(
                f"the model loaded from {source} holds other weights than the profiled ones "
                f"(sha256 {other[1][:12]}, profiled {other[0][:12]})"
            )
        problems += verifier_mismatches(plan.meta, self._verifier_rewards)
        problems += unprofiled_sampling(self.args)
        profiled_mark = profiled_success_threshold(plan.meta)
        sole_verifier = self._verifier_rewards == self.reward_funcs and not any(
            w != 1 for w in self.args.reward_weights or []
        )
        if self.args.reestimate and sole_verifier and profiled_mark != self.success_threshold:
            problems.append(
                f"success_threshold={self.success_threshold} counts other completions as "
                f"successes than the profile, which counted a (rescaled) reward from "
                f"{profiled_mark} up (its task.success_threshold)"
            )
        prompts = self._planned_prompts(plan, train_dataset)
        # every planned query's, not the first's only: a dataset whose ids collide with the
        # plan's ("train:0", "train:1") may hold other queries past its first
        differing = []
        for planned in plan.kept:
            query = planned.query
            seen = self._prompt_ids(prompts[query.query_id])
            profiled = _profiled_ids(plan.meta, query, self)
            if seen is not None and profiled is not None and seen != profiled:
                differing.append((query, seen, profiled))
        if differing:
            query, seen, profiled = differing[0]
            decode = self.processing_class.decode
            problems.append(
                f"{len(differing)} of the plan's {len(plan.kept)} queries reach the model "
                f"otherwise than profiled, e.g. query {query.query_id!r} as {decode(seen)!r}, "
                f"profiled as {decode(profiled)!r} (build the dataset's prompts as the profile "
                "formatted them: plan_dataset(plan, prompt=...) with its system prompt or "
                "template, a chat as a list of messages: a string is tokenized with the "
                "tokenizer's special tokens, a BOS the text already holds included)"
            )
        problems += self._answers_unlike_the_plans(plan, train_dataset)
        first = plan.kept[0].query
        if not differing and not isinstance(prompts[first.query_id], str):
            # rebuilt alike: was the template the same?
            profiled_template = plan.meta.get(CHAT_TEMPLATE_KEY)
            template = self.chat_template or getattr(self.processing_class, "chat_template", None)
            current = template_sha256(template)
            if template is None:  # TRL would fail on the first batch, after loading everything
                profiled = (
                    f"; the profile formatted them with one (sha256 {profiled_template[:12]})"
                    if profiled_template is not None
                    else ""
                )
                raise ValueError(
                    f"{plan.path}: train_dataset's prompts are chat messages, which TRL formats "
                    f"with the tokenizer's chat template, but the tokenizer has none{profiled}: "
                    "set processing_class.chat_template (the model's that was profiled), or "
                    "give text prompts (plan_dataset(plan, prompt=...))"
                )
            # (a plan of an older sgpo records no key: nothing to compare with)
            if CHAT_TEMPLATE_KEY in plan.meta and current != profiled_template:
                profiled_how = (
                    profiled_template[:12]
                    if profiled_template is not None
                    else "none: the profile's prompts were plain text"
                )
                problems.append(
                    f"the chat template the prompts go through (sha256 {str(current)[:12]}) is "
                    f"not the one the profile's went through ({profiled_how})"
                )
        if problems:
            warnings.warn(
                f"{plan.path}: this run differs from the plan's profile, whose success rates the "
                "plan's group sizes and filter rest on: " + "; ".join(problems),
                SgpoWarning,
                stacklevel=3,
            )

    def _planned_prompts(self, plan: Plan, train_dataset: Dataset) -> dict[str, Any]:
        """Each planned query's prompt in train_dataset; a row without one (None, a number) is
        refused, naming it, before TRL's tokenizer fails on it mid-run."""
        column = train_dataset["prompt"]
        prompts = {}
        for planned in plan.kept:
            query_id = planned.query.query_id
            row = self.plan_sampler.index_of[query_id]
            prompt = column[row]
            if not isinstance(prompt, str | list) or not prompt:
                raise ValueError(
                    f"train_dataset row {row} (query {query_id!r}): field 'prompt' is "
                    f"{prompt!r}, not a text or a list of chat messages"
                )
            prompts[query_id] = prompt
        return prompts

    def _answers_unlike_the_plans(self, plan: Plan, train_dataset: Dataset) -> list[str]:
        """The planned queries whose answer a verifier reward reads from train_dataset differs
        from the one the profile scored against (its p_hat is then another query's)."""
        problems = []
        for column in sorted({reward.answer_column for reward in self._verifier_rewards}):
            answers = train_dataset[column]
            differing = [
                (planned.query, answers[row])
                for planned in plan.kept
                if str(answers[row := self.plan_sampler.index_of[planned.query.query_id]])
                != planned.query.answer
            ]
            if differing:
                query, answer = differing[0]
                problems.append(
                    f"{len(differing)} of the plan's {len(plan.kept)} queries have another "
                    f"answer in train_dataset's column {column!r} than the profile scored "
                    f"against, e.g. query {query.query_id!r}: {answer!r}, profiled against "
                    f"{query.answer!r}"
                )
        return problems

    def _steps_per_checkpointable(self) -> int:
        """Optimizer steps between two ends of a generation batch within an epoch. TRL
        generates a batch every steps_per_generation x num_iterations micro-steps and does not
        checkpoint it, so a run resumes only from a step where one ended (an epoch's end is
        one: an epoch holds whole batches, its last optimizer step the micro-steps left)."""
        repeat = self.plan_sampler.repeat
        return repeat // math.gcd(repeat, self.args.gradient_accumulation_steps)

    def _warn_of_checkpoints_inside_a_generation_batch(self) -> None:
        period = self._steps_per_checkpointable()
        save_steps = self.args.save_steps
        if (
            self.args.save_strategy == "steps"
            and period > 1
            and save_steps >= 1
            and int(save_steps) % period
        ):
            warnings.warn(
                f"save_steps={save_steps:g} writes checkpoints inside a generation batch (one "
                f"ends every {period} optimizer steps within an epoch: steps_per_generation x "
                "num_iterations micro-steps), which cannot be resumed; set save_steps to a "
                f"multiple of {period}",
                SgpoWarning,
                stacklevel=3,
            )

    def _resume_settings(self) -> dict[str, float | int | bool]:
        """What, besides the plan, decides the batches a run trains and those TRL's data skip
        replays on resume (a generation batch's rows and how many steps it serves), and
        whether the schedule draws from the batches' outcomes (re-plans, skips on history)."""
        return {
            "generation_batch_size": self.args.generation_batch_size,
            "steps_per_generation": self.args.steps_per_generation,
            "num_iterations": self.num_iterations,
            "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
            "reestimate": self.args.reestimate,
            "history_explore": self.args.history_explore,
        }

    def _schedule_settings(self) -> dict[str, float | int | bool]:
        """What, besides the restored schedule, decides the batches a re-estimating or
        skipping run draws from then on (re-plans, posteriors, skips)."""
        args = self.args
        return {
            "seed": args.seed,
            "replan_every": args.replan_every,
            "reestimate_decay": args.reestimate_decay,
            "reestimate_prior_alpha": args.reestimate_prior_alpha,
            "reestimate_prior_beta": args.reestimate_prior_beta,
            "success_threshold": self.success_threshold,
            "history_target": args.history_target,
            "history_min_streak": args.history_min_streak,
            "history_fill": args.history_fill,
        }

    def _prompt_ids(self, prompt: Any) -> list[int] | None:
        """The token ids TRL generates from for a dataset prompt, as GRPOTrainer's
        _tokenize_prompts makes them: a string with the tokenizer's special tokens, a
        conversation through the chat template (None when they cannot be built)."""
        try:
            if isinstance(prompt, str):
                return list(self.processing_class(text=prompt)["input_ids"])
            return list(
                self.processing_class.apply_chat_template(
                    prompt,
                    tokenize=True,
                    return_dict=True,
                    add_generation_prompt=True,
                    chat_template=self.chat_template,
                    **self.chat_template_kwargs,
                )["input_ids"]
            )
        except Exception:  # noqa: BLE001 - TRL will raise its own error when it generates
            return None

    # ------------------------------------------------------------------------------ data
    def _get_train_sampler(self, dataset: Any = None) -> PlanSampler:
        return self.plan_sampler

    def get_train_dataloader(self):  # noqa: ANN201 - accelerate's prepared DataLoader
        return self._get_dataloader(
            dataset=PlanRows(self.train_dataset),
            description="Training",
            batch_size=self._train_batch_size * self.args.steps_per_generation,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    # ------------------------------------------------------------------------ generation
    def _real_rows(self) -> list[int]:
        """This process's real rows (its indices into its share of the batch)."""
        return [i for i, g in enumerate(self._group_ids.tolist()) if g >= 0]

    def _all_real_rows(self) -> list[int]:
        """The real rows of the whole batch across processes (indices into it)."""
        return [i for i, g in enumerate(self._all_group_ids.tolist()) if g >= 0]

    def _most_real_rows_per_process(self) -> int:
        shares = self._all_group_ids.view(self.accelerator.num_processes, -1)
        return int((shares >= 0).sum(dim=1).max())

    def _generate_single_turn(
        self,
        prompt_ids: list[list[int]],
        images: Any,
        multimodal_fields: dict,
        num_generations: int,
        has_tool_images: bool = False,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        if self._group_ids is None:  # evaluation: plain GRPO
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        real = self._real_rows()
        # One completion per real row: with vLLM one request of sum(G) prompts (n=1 each; its
        # prefix cache shares a group's prompt), with transformers one generate() call. With
        # several processes each sends as many prompts as the busiest holds real rows (its
        # last prompt again, those completions thrown away): TRL's vLLM server mode slices the
        # gathered completions into equal shares, and a process without real rows still takes
        # part in the backend's collective calls (weight sync, ZeRO-3 gathers).
        repeated = real[-1:] or [0]
        requested = real + repeated * (self._most_real_rows_per_process() - len(real))
        real_ids, real_logprobs = super()._generate_single_turn(
            [prompt_ids[i] for i in requested], None, {}, 1, has_tool_images
        )
        completion_ids: list[list[int]] = [[self.eos_token_ids[0]] for _ in prompt_ids]
        # NaN sampling log-prob: TRL's vLLM importance ratio is then exactly 1 on padding.
        logprobs = [[float("nan")] for _ in prompt_ids] if real_logprobs is not None else None
        for j, i in enumerate(real):
            completion_ids[i] = list(real_ids[j])
            if logprobs is not None:
                logprobs[i] = list(real_logprobs[j])
        return completion_ids, logprobs

    def _generate(self, prompts: list) -> tuple:
        result = super()._generate(prompts)
        if self._group_ids is not None:
            tokens_before = self.sgpo_tokens_generated
            if self.args.grow_max:
                result = self._grow(prompts, result)
            elif self.args.downsample_to:
                result = self._downsample(prompts, result)
            lengths, truncated = self._lengths_of_all_rows(result[0], result[1])
            real = self._all_real_rows()
            self._restate_generation_metrics(lengths, truncated, real)
            self._charge_generation(lengths, real)
            tokens = self.sgpo_tokens_generated - tokens_before
            self._metrics["train"]["sgpo/tokens_generated"].append(float(tokens))
        return result

    def _grow(self, prompts: list, result: tuple) -> tuple:
        """Grow each all-equal group until mixed (or grow_max), then fill its planned rows with
        a balanced subset of everything it drew."""

        def more(drawn: dict[int, list[tuple]]) -> dict[int, int]:
            sizes = {g: len(members) for g, members in drawn.items()}
            single = {g for g, members in drawn.items() if self._all_equal(members)}
            return growth_round(sizes, single, self.args.grow_round, self.args.grow_max)

        result, grown = self._draw_more(prompts, result, more, balanced_indices)
        self._metrics["train"]["sgpo/grown_groups"].append(float(grown))
        return result

    def _downsample(self, prompts: list, result: tuple) -> tuple:
        """Complete each group to its planned G, then fill its rows with the responses whose
        rewards vary most."""

        def more(drawn: dict[int, list[tuple]]) -> dict[int, int]:
            missing = {g: self._group_sizes[g] - len(members) for g, members in drawn.items()}
            return {g: n for g, n in missing.items() if n > 0}

        return self._draw_more(prompts, result, more, max_variance_indices)[0]

    def _draw_more(
        self,
        prompts: list,
        result: tuple,
        more: Callable[[dict[int, list[tuple]]], dict[int, int]],
        choose: Callable[[list[float], int], list[int]],
    ) -> tuple[tuple, int]:
        """Draw more responses for the batch's groups in rounds (`more` says how many for each
        group, given everything drawn so far; empty ends it), then fill each group's rows with
        the responses `choose` picks. `result` is _generate's tuple; returns it with the chosen
        completions in this process's rows, and how many groups drew more than their rows.

        With several processes every process holds what every group drew, in the batch's row
        order and then in the order of the requests (as one process draws them), so `more`,
        `choose`, the rewards and the costs come out alike on every process and as with one."""
        prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest = result
        with self._verifiers_checked_once():
            rows_of, drawn, prompt_tokens = self._first_draws(prompts, result)
            while extra := more(drawn):
                groups = [g for g, n in extra.items() for _ in range(n)]
                owners = [rows_of[g][0] for g in groups]
                new = self._draw_for(self._all_prompts, self._all_dataset_rows, owners)
                for group, member in zip(groups, new, strict=True):
                    drawn[group].append(member)
        # the whole batch's per-function rewards, as _rewards_of_the_batch returns them
        self._scores = torch.full(
            (len(self._all_group_ids), len(self.reward_funcs)),
            torch.nan,
            device=self.accelerator.device,
        )
        mine = range(self._local_rows.start, self._local_rows.stop)
        for g, rows in rows_of.items():
            members = drawn[g]
            totals = [self._total(m[3]) for m in members]
            chosen = _choose_scorable(choose, totals, len(rows))
            for row, k in zip(rows, sorted(chosen), strict=True):
                self._scores[row] = members[k][3]
                if row in mine:  # each process fills its own rows
                    local = row - self._local_rows.start
                    completion_ids[local], completions[local] = members[k][0], members[k][1]
                    if logprobs is not None:
                        logprobs[local] = members[k][2]
            self._whole_groups[g] = torch.tensor(totals)
            unused = [m for k, m in enumerate(members) if k not in chosen]
            self._charge_drawn_only(prompt_tokens[g], [m[0] for m in unused])
        drew_more = sum(len(drawn[g]) > len(rows) for g, rows in rows_of.items())
        return (prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest), drew_more

    def _first_draws(
        self, prompts: list, result: tuple
    ) -> tuple[dict[int, list[int]], dict[int, list[tuple]], dict[int, int]]:
        """Each process scores its own real rows' first draws; then every process gets the
        whole batch's: each group's rows (indices into the whole batch), what it drew
        (completion ids, completion, sampling log-probs, per-function scores; in row order)
        and its prompt's tokens. Keeps the whole batch's prompts and dataset rows for the
        extra draws (_all_prompts, _all_dataset_rows)."""
        prompt_ids, completion_ids, _, completions, logprobs, *_ = result
        real = self._real_rows()
        scores = torch.full(
            (len(prompts), len(self.reward_funcs)), torch.nan, device=self.accelerator.device
        )
        scores[real] = self._score(
            self._rows,
            prompts,
            real,
            [completions[i] for i in real],
            [completion_ids[i] for i in real],
            stand_in=(0, completions[0], completion_ids[0]),
        )
        all_scores = self.accelerator.gather(scores).cpu()
        self._refuse_infinite(all_scores)
        self._all_prompts = gather_object(list(prompts))
        self._all_dataset_rows = gather_object(list(self._rows))
        all_draws = gather_object(
            [
                (completion_ids[i], completions[i], logprobs[i] if logprobs else None)
                for i in range(len(prompts))
            ]
        )
        all_prompt_tokens = gather_object([len(ids) for ids in prompt_ids])
        rows_of: dict[int, list[int]] = {}
        for i in self._all_real_rows():
            rows_of.setdefault(int(self._all_group_ids[i]), []).append(i)
        drawn = {g: [(*all_draws[i], all_scores[i]) for i in rows] for g, rows in rows_of.items()}
        prompt_tokens = {g: all_prompt_tokens[rows[0]] for g, rows in rows_of.items()}
        return rows_of, drawn, prompt_tokens

    def _draw_for(self, prompts: list, rows: list[dict], owners: list[int]) -> list[tuple]:
        """One more response for each of the batch rows `owners` (indices into the whole
        batch, whose prompts and dataset rows are given), as (completion ids, completion,
        sampling log-probs, per-function scores), in the order of `owners`, on every process.

        The requests are cut into equal contiguous shares, process p generating and scoring
        the p-th; every process sends as many prompts (the first request's again where its
        share falls short, those completions thrown away), so that the backend's collective
        calls and TRL's gathers stay in step. The shares' padding thus comes after every real
        request. With several processes a real engine samples the other requests than one
        process would: the same distribution, other random draws."""
        processes, process = self.accelerator.num_processes, self.accelerator.process_index
        share = -(-len(owners) // processes)
        mine = owners[process * share : (process + 1) * share]
        requested = mine + owners[:1] * (share - len(mine))
        new = self._generate_quietly([prompts[i] for i in requested])
        ids, texts, sampled = new[1][: len(mine)], new[3][: len(mine)], new[4]
        scores = self._score(
            rows, prompts, mine, texts, ids, stand_in=(owners[0], new[3][0], new[1][0])
        ).cpu()
        members = [
            (ids[j], texts[j], sampled[j] if sampled else None, scores[j]) for j in range(len(mine))
        ]
        drawn = gather_object(members)
        if drawn:
            self._refuse_infinite(torch.stack([member[3] for member in drawn]))
        return drawn

    def _refuse_infinite(self, per_func: torch.Tensor) -> None:
        """An infinite reward makes the group's advantages, then the weights, non-finite: the
        run would die a step later in sampling, far from its cause. Checked on the gathered
        rewards, so every process refuses alike (none is left waiting in a collective)."""
        infinite = torch.isinf(per_func)
        if infinite.any():
            row, func = (int(i) for i in infinite.nonzero()[0])
            raise ValueError(
                f"reward function {self.reward_func_names[func]!r} returned "
                f"{float(per_func[row, func])} for a completion: rewards must be finite; return "
                "None (or NaN) for a completion it cannot score"
            )

    def _weighted(self, per_func: torch.Tensor) -> torch.Tensor:
        """Rewards [rows] as TRL sums per_func [rows, functions] (weights, NaN-aware); NaN where
        every function abstained."""
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        return rewards

    def _total(self, scores: torch.Tensor) -> float:
        return float(self._weighted(scores.unsqueeze(0))[0])

    def _all_equal(self, members: list[tuple]) -> bool:
        """No two scorable rewards differ (an unscorable response shows no outcome)."""
        return all_equal([t for t in (self._total(m[3]) for m in members) if not math.isnan(t)])

    def _score(
        self,
        rows: list[dict],
        prompts: list,
        owners: list[int],
        completions: list,
        completion_ids: list,
        stand_in: tuple[int, Any, list[int]],
        shown_in_table: bool = False,
    ) -> torch.Tensor:
        """Per-function rewards [len(owners), functions] of completions drawn for the batch rows
        `owners` (each scored with its owner's prompt and dataset row, indices into `prompts`
        and `rows`), on this process alone (none gathered). Every process calls it alike; one
        without owners runs the reward models on `stand_in` (a row's index, a completion and
        its ids; _run_reward_models_idle).

        shown_in_table: the reward functions' log_extra values describe the batch TRL's table
        shows, and are laid out over `prompts` (None in the rows without an owner), so that
        gathered over the processes they line up with its rows; otherwise they are dropped
        (a grown group's extra responses are not in the table)."""
        if not owners:
            index, completion, ids = stand_in
            self._run_reward_models_idle(rows[index], prompts[index], completion, ids)
            return torch.empty((0, len(self.reward_funcs)), device=self.accelerator.device)
        before = {k: len(v) for k, v in self._pending_extra_logs.items()}
        with _rewards_not_gathered():
            scored = GRPOTrainer._calculate_rewards(
                self,
                [rows[i] for i in owners],
                [prompts[i] for i in owners],
                completions,
                completion_ids,
            )
        for column in list(self._pending_extra_logs):
            pending = self._pending_extra_logs[column]
            logged = pending[before.get(column, 0) :]
            del pending[before.get(column, 0) :]
            if shown_in_table:
                if len(logged) != len(owners):  # raised on every process (_rewards_of_the_batch)
                    self._table_error = (
                        f"a reward function logged {len(logged)} values in the column "
                        f"{column!r} for {len(owners)} completions (log_extra takes one per "
                        "completion)"
                    )
                    continue
                laid_out: list = [None] * len(prompts)
                for row, value in zip(owners, logged, strict=True):
                    laid_out[row] = value
                pending.extend(laid_out)
            if not pending:  # TRL would log it as an empty column
                del self._pending_extra_logs[column]
        return scored

    def _run_reward_models_idle(
        self, row: dict, prompt: Any, completion: Any, ids: list[int]
    ) -> None:
        """With several processes, one that has nothing to score while the others score still
        runs each reward model's forward pass, on one stand-in completion (its reward thrown
        away): under DeepSpeed ZeRO-3 or FSDP a forward pass gathers the model's shards from
        every process, so a process that skipped it would leave the others waiting."""
        models = [i for i, f in enumerate(self.reward_funcs) if isinstance(f, torch.nn.Module)]
        if self.accelerator.num_processes == 1 or not models:
            return
        every = self.reward_funcs, self.reward_processing_classes, self.reward_func_names
        self.reward_funcs, self.reward_processing_classes, self.reward_func_names = (
            [things[i] for i in models] for things in every
        )
        try:
            with _rewards_not_gathered():
                GRPOTrainer._calculate_rewards(self, [row], [prompt], [completion], [ids])
        finally:
            self.reward_funcs, self.reward_processing_classes, self.reward_func_names = every

    @contextmanager
    def _verifiers_checked_once(self, scored: str = "a batch") -> Iterator[None]:
        """The verifier calls made inside checked together when it ends (summed over the
        processes), as one batch: a round of extra responses may hold a single one, whose
        failing is no sign of a broken verifier. scored: what the calls scored, for the
        message."""
        rewards = self._verifier_rewards
        before = [reward.verifier.stats.counts() for reward in rewards]
        checks = [reward.checks_each_batch for reward in rewards]
        for reward in rewards:
            reward.checks_each_batch = False
        try:
            yield
        finally:
            for reward, check in zip(rewards, checks, strict=True):
                reward.checks_each_batch = check
        self._stop_if_every_verifier_call_failed(before, scored)

    def _generate_quietly(self, prompts: list) -> tuple:
        """GRPOTrainer's generation of one completion per prompt, its token count and
        completion statistics left as they were (they describe the trained batch)."""
        metrics = self._metrics["train"]
        lengths = {k: len(v) for k, v in metrics.items()}
        seen = self.state.num_input_tokens_seen
        group_ids, self._group_ids = self._group_ids, None
        try:
            return GRPOTrainer._generate(self, prompts)
        finally:
            self._group_ids = group_ids
            self.state.num_input_tokens_seen = seen
            for key in list(metrics):
                if key in lengths:
                    del metrics[key][lengths[key] :]
                else:
                    del metrics[key]

    def _charge_drawn_only(self, prompt_tokens: int, completion_ids: list[list[int]]) -> None:
        """Responses a grown group drew and does not train: generation only."""
        for ids in completion_ids:
            self.sgpo_flops["rollout"] += inference_flops(self.shape, prompt_tokens, len(ids))
        self.sgpo_rollouts += len(completion_ids)
        self.sgpo_tokens_generated += sum(len(ids) for ids in completion_ids)

    def _lengths_of_all_rows(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]]
    ) -> tuple[list[tuple[int, int]], list[bool]]:
        """(prompt, completion) tokens and whether the completion was cut off, of every row of
        the batch across processes (as TRL's statistics gather them)."""
        ends = [*self.eos_token_ids, self._tokenizer.pad_token_id]
        local = torch.tensor(
            [
                [len(p), len(c), c[-1] not in ends]
                for p, c in zip(prompt_ids, completion_ids, strict=True)
            ],
            device=self.accelerator.device,
        )
        rows = self.accelerator.gather(local).tolist()
        return [(p, c) for p, c, _ in rows], [bool(t) for _, _, t in rows]

    def _restate_generation_metrics(
        self, lengths: list[tuple[int, int]], truncated: list[bool], real: list[int]
    ) -> None:
        """TRL's completion statistics and token count over the real rows only."""
        padding = set(range(len(lengths))) - set(real)
        self.state.num_input_tokens_seen -= sum(sum(lengths[i]) for i in padding)
        metrics = self._metrics["train"]
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]
        completions = torch.tensor([lengths[i][1] for i in real], dtype=torch.float32)
        cut = torch.tensor([truncated[i] for i in real])
        terminated = completions[~cut] if (~cut).any() else torch.zeros(1)
        for key, value in (
            ("completions/mean_length", completions.mean()),
            ("completions/min_length", completions.min()),
            ("completions/max_length", completions.max()),
            ("completions/clipped_ratio", cut.float().mean()),
            ("completions/mean_terminated_length", terminated.mean()),
            ("completions/min_terminated_length", terminated.min()),
            ("completions/max_terminated_length", terminated.max()),
        ):
            metrics[key][-1] = value.item()

    def _charge_generation(self, lengths: list[tuple[int, int]], real: list[int]) -> None:
        """sgpo's cost convention for one generation batch across processes (tokens, not
        padding to the longest row): rollout inference of the real rows, and the log-prob
        passes TRL will run (old policy, reference) over every row, padding rows (a prompt and
        one EOS token) included; training is charged by _charge_training."""
        self._lengths = dict(enumerate(lengths))
        generate_every = self.args.steps_per_generation * self.num_iterations
        old_logprobs = self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )
        for p, r in self._lengths.values():
            self.sgpo_flops["logprob"] += old_logprobs * logprob_flops(self.shape, p, r) + (
                self.beta != 0.0
            ) * logprob_flops(self.reference_shape, p, r)
        for i in real:
            p, r = self._lengths[i]
            self.sgpo_flops["rollout"] += inference_flops(self.shape, p, r)
            self.sgpo_tokens_generated += r
        self.sgpo_rollouts += len(real)

    def _charge_training(self, trained: Iterable[int]) -> None:
        """num_iterations updates of the batch rows trained."""
        for i in trained:
            p, r = self._lengths[i]
            self.sgpo_flops["train"] += self.num_iterations * train_flops(self.shape, p, r)

    # --------------------------------------------------------------------------- rewards
    def _calculate_rewards(
        self, inputs: list[dict], prompts: list, completions: list, completion_ids_list: list
    ) -> torch.Tensor:
        before = [reward.verifier.stats.counts() for reward in self._verifier_rewards]
        rewards = self._rewards_of_the_batch(inputs, prompts, completions, completion_ids_list)
        if self.accelerator.num_processes > 1:  # with one, each VerifierReward checks its calls
            self._stop_if_every_verifier_call_failed(before)
        return rewards

    def _stop_if_every_verifier_call_failed(
        self, before: list[tuple[int, int, int]], scored: str = "a batch"
    ) -> None:
        """Stop when every verifier call since `before` (counts()) failed, on all processes
        together (each scores its own rows). A collective call: every process makes it."""
        if not self._verifier_rewards:
            return
        verifiers = [reward.verifier for reward in self._verifier_rewards]
        made = torch.tensor(
            [v.stats.since(b) for v, b in zip(verifiers, before, strict=True)],
            device=self.accelerator.device,
        )
        made = self.accelerator.reduce(made, reduction="sum").tolist()
        over = " (over all processes)" if self.accelerator.num_processes > 1 else ""
        for verifier, counts in zip(verifiers, made, strict=True):
            on = f"{scored} of {counts[0]} completions{over}"
            stop_if_every_call_failed(verifier.spec, tuple(counts), on)

    def _rewards_of_the_batch(
        self, inputs: list[dict], prompts: list, completions: list, completion_ids_list: list
    ) -> torch.Tensor:
        """Per-function rewards [rows of the batch across processes, functions]."""
        if self._group_ids is None:
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._scores is not None:  # scored while growing: the same rows, not scored twice
            self._rewards_per_func = self._scores
            self._table_columns = []  # their log_extra values were dropped (_score)
            return self._scores
        real = self._real_rows()
        self._table_error = None
        # NaN in every column marks a row unscorable: TRL leaves it out of the reward metrics.
        rewards = torch.full(
            (len(prompts), len(self.reward_funcs)), torch.nan, device=self.accelerator.device
        )
        rewards[real] = self._score(
            inputs,
            prompts,
            real,
            [completions[i] for i in real],
            [completion_ids_list[i] for i in real],
            stand_in=(0, completions[0], completion_ids_list[0]),
            shown_in_table=True,
        )
        # the log_extra columns TRL's table takes from this batch (it gathers the same names),
        # and a miscounted column, refused on every process (the others would wait for it)
        logged = gather_object([(list(self._pending_extra_logs), self._table_error)])
        if errors := [error for _, error in logged if error]:
            raise ValueError(errors[0])
        self._table_columns = sorted({column for names, _ in logged for column in names})
        # TRL's advantages and reward statistics take the whole batch's rewards
        self._rewards_per_func = self.accelerator.gather(rewards)
        self._refuse_infinite(self._rewards_per_func)
        if torch.isnan(self._rewards_per_func).all() and not self._said_unscorable:
            # verifier_reward stops a run whose calls all failed; a function of the user's
            # returning None everywhere would train on nothing, at full cost, unsaid
            self._said_unscorable = True
            warnings.warn(
                f"every reward of a batch was None or NaN ({', '.join(self.reward_func_names)}):"
                " nothing trains on it; check that the reward functions read the completions "
                "(said once a run)",
                SgpoWarning,
                stacklevel=2,
            )
        return self._rewards_per_func

    # ------------------------------------------------------------------------ the batch
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict[str, Any]:
        if not self.model.training or GROUP_KEY not in inputs[0]:
            before = {name: list(column) for name, column in self._logs["extra"].items()}
            added = sum(gather_object([len(inputs)]))  # the table's rows this batch adds
            output = super()._generate_and_score_completions(inputs)
            # TRL's table indexes every log_extra column as far as its prompts: one this batch
            # opened (training's growth and down-sampling drop theirs, _score) has no value for
            # the earlier rows, one it logged nothing in none for this batch's
            for name, column in self._logs["extra"].items():
                if name not in before:
                    column.extendleft([None] * (len(self._logs["prompt"]) - len(column)))
                elif list(column) == before[name]:
                    column.extend([None] * added)
            return output
        group_ids = torch.tensor([x[GROUP_KEY] for x in inputs])
        rows = [{k: v for k, v in x.items() if k not in SGPO_KEYS} for x in inputs]
        planned_num_generations = self.num_generations
        self._group_ids, self._rows = group_ids, rows
        # Each process holds an equal share of the batch (PlanSampler), in process order.
        start = self.accelerator.process_index * len(inputs)
        self._local_rows = slice(start, start + len(inputs))
        self._all_group_ids = self.accelerator.gather(group_ids.to(self.accelerator.device)).cpu()
        query_ids = gather_object([x[self.args.query_id_column] for x in rows])
        self._group_sizes = dict(gather_object([(x[GROUP_KEY], x[GROUP_SIZE_KEY]) for x in inputs]))
        # TRL groups rewards by view(-1, num_generations); with 1 its advantages are all zero
        # and are replaced below by the planned groups' advantages.
        self.num_generations = 1
        try:
            output = super()._generate_and_score_completions(rows)
            self._apply_groups(output, query_ids, self._all_group_ids)
        finally:
            self.num_generations = planned_num_generations
            self._group_ids = self._rows = self._all_group_ids = None
            self._rewards_per_func = self._scores = None
            self._all_prompts = self._all_dataset_rows = None
            self._whole_groups, self._group_sizes, self._lengths = {}, {}, {}
        return output

    def _apply_groups(
        self, output: dict[str, Any], query_ids: list[str], group_ids: torch.Tensor
    ) -> None:
        """The planned groups' advantages, padding out of the loss, sgpo's metrics and the
        schedule's observations; query_ids and group_ids span the batch across processes,
        whose every process computes all of this alike and keeps its own rows."""
        device = output["advantages"].device
        rewards = self._weighted(self._rewards_per_func).cpu()
        # A grown group's advantages come from all it drew; a down-sampled one's (PODS) from
        # the trained rows only.
        whole = self._whole_groups if self.args.grow_max else None
        advantages, is_std_zero = grouped_advantages(rewards, group_ids, self.scale_rewards, whole)
        output["advantages"] = advantages[self._local_rows].to(device)

        padding = (group_ids[self._local_rows] < 0).to(device)
        mask = output["completion_mask"]
        padding_tokens = self.accelerator.gather(mask[padding].sum()).sum()
        output["num_items_in_batch"] = output["num_items_in_batch"] - padding_tokens
        mask[padding] = 0

        real = group_ids >= 0
        metrics = self._metrics["train"]
        metrics["frac_reward_zero_std"][-1] = is_std_zero[real].float().mean().item()
        self._drop_padding_from_logs(real.tolist(), advantages[real].tolist())

        groups = group_ids[real].tolist()
        live = informative_groups(advantages[real].tolist(), groups)
        trained = self._all_real_rows()
        if self.args.drop_equal_groups:
            trained = [i for i in trained if int(group_ids[i]) in live]
            is_trained = torch.zeros(len(group_ids), dtype=torch.bool)
            is_trained[trained] = True
            output[TRAINED_KEY] = is_trained[self._local_rows].to(device)
            self._charge_training(trained)
        else:  # TRL's forward and backward passes run over every row, padding rows included
            self._charge_training(range(len(group_ids)))
        # As sgpo's metrics.jsonl: rollouts and group sizes count every response generated
        # (a grown group's too), batch_rollouts the rows trained.
        drawn = {g: len(self._whole_groups.get(g, ())) or groups.count(g) for g in set(groups)}
        sizes = torch.tensor(list(drawn.values()), dtype=torch.float32)
        generated = sum(drawn.values())
        metrics["sgpo/queries"].append(float(len(drawn)))
        metrics["sgpo/rollouts"].append(float(generated))
        metrics["sgpo/batch_rollouts"].append(float(len(trained)))
        metrics["sgpo/padding_rows"].append(float(len(group_ids) - len(groups)))
        informative = sum(n for g, n in drawn.items() if g in live)
        metrics["sgpo/informative_fraction"].append(informative / generated)
        metrics["sgpo/group_size_mean"].append(sizes.mean().item())
        metrics["sgpo/group_size_min"].append(sizes.min().item())
        metrics["sgpo/group_size_max"].append(sizes.max().item())
        # TRL's `reward` is the rows' mean: with growth or down-sampling a chosen subset's
        drawn_rewards = torch.cat(
            [self._whole_groups.get(g, rewards[group_ids == g]) for g in set(groups)]
        )
        metrics["sgpo/reward_generated_mean"].append(drawn_rewards.nanmean().item())
        self._observe(query_ids, group_ids, rewards)

    # ---------------------------------------------------------------------------- the loss
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        if TRAINED_KEY not in inputs:
            return super()._compute_loss(model, inputs)
        is_trained = inputs[TRAINED_KEY]
        rows = len(is_trained)
        # Every process forwards as many rows as the busiest one trains, and at least one (a
        # loss with a graph): TRL gathers per-row statistics of the rows forwarded, which needs
        # as many on each process, and sharded models run their collectives per forward. The
        # rows added train nothing (advantage 0: padding rows first, then rows of all-equal
        # groups).
        busiest = self.accelerator.gather(is_trained.sum()).max()
        untrained = sorted(
            (~is_trained).nonzero().flatten().tolist(),
            key=lambda i: bool(inputs["completion_mask"][i].any()),
        )
        added = untrained[: max(int(busiest), 1) - int(is_trained.sum())]
        trained = torch.tensor(
            sorted(is_trained.nonzero().flatten().tolist() + added), dtype=torch.long
        )
        kept = {key: _rows_of(value, trained, rows) for key, value in inputs.items()}
        del kept[TRAINED_KEY]
        # The rows added hold no token of the loss's statistics (entropy, clip ratios) either:
        # TRL masks the loss's tokens with tool_mask too (the completion mask alone would also
        # change the forward's attention), and their loss terms are zero all the same.
        mask = kept["completion_mask"]
        counted = (~torch.isin(trained, torch.tensor(added, dtype=torch.long))).to(mask.device)
        kept["tool_mask"] = kept.get("tool_mask", torch.ones_like(mask)) * counted.unsqueeze(1)
        metrics = self._metrics["train"]
        before = {key: len(metrics[key]) for key in ROW_STATISTICS if key in metrics}
        loss = super()._compute_loss(model, kept)
        if not int(busiest):  # no row trained on any process: no statistic of trained rows
            for key in ROW_STATISTICS:
                if key in metrics:
                    values = metrics[key]
                    values[before.get(key, 0) :] = [math.nan] * (len(values) - before.get(key, 0))
        return loss

    def _drop_padding_from_logs(self, keep: list[bool], real_advantages: list[float]) -> None:
        """The completions table (TRL's _logs) without the padding rows of the last batch."""
        logs = self._logs
        for name, column in logs["extra"].items():
            if name not in self._table_columns:  # none from this batch: as long as the others
                column.extend([None] * len(keep))
        logged = logs["extra"].values()
        for column in (logs["prompt"], logs["completion"], *logs["rewards"].values(), *logged):
            tail = [column.pop() for _ in keep][::-1]
            column.extend(v for v, k in zip(tail, keep, strict=True) if k)
        for _ in keep:
            logs["advantages"].pop()
        logs["advantages"].extend(real_advantages)

    def _observe(
        self, query_ids: list[str], group_ids: torch.Tensor, rewards: torch.Tensor
    ) -> None:
        """Online sGPO and skip on history: each group's outcomes (all it drew, when grown)
        update its query's success rate and outcome streak (over the batch across processes,
        so that every process's schedule stays the same)."""
        if not self.schedule.observes():
            return
        outcomes: dict[str, GroupOutcome] = {}
        for group in torch.unique(group_ids[group_ids >= 0]).tolist():
            members = (group_ids == group).nonzero().flatten().tolist()
            drawn = self._whole_groups.get(group, rewards[members])
            scored = [float(r) for r in drawn if not torch.isnan(r)]
            wins = sum(is_correct(r, self.success_threshold) for r in scored)
            equal = all_equal(scored)  # the streak rule sgpo's trainer uses by default
            outcome = GroupOutcome(wins, len(scored) - wins, equal)
            outcomes[query_ids[members[0]]] = outcome
        replanned = self.schedule.observe(outcomes)
        if self.schedule.planner is not None:
            self._metrics["train"]["sgpo/replanned"].append(float(replanned))

    # ----------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # sgpo's state first: the Trainer's own ends by pushing the checkpoint to the hub
        # (push_to_hub) and deleting older ones (save_total_limit), which must find it whole
        self._save_sgpo_state(trial)
        super()._save_checkpoint(model, trial)

    def _save_sgpo_state(self, trial: Any) -> None:
        """STATE_FILE in the checkpoint folder the Trainer is about to write (made here)."""
        verifier_counts = {  # the run's (a resumed one's from its start); a collective call
            name: count + self._verifier_counts_offset[name]
            for name, count in self._verifier_counts().items()
        }
        if self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"  # as the Trainer names it
            checkpoint = Path(self._get_output_dir(trial)) / folder
            checkpoint.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                checkpoint / STATE_FILE,
                {
                    "flops": self.sgpo_flops,
                    "rollouts": self.sgpo_rollouts,
                    "tokens_generated": self.sgpo_tokens_generated,
                    PROFILE_TOKENS_KEY: True,
                    "verifier": verifier_counts,
                    "plan_sha256": self._plan_fingerprint,
                    "settings": self._resume_settings(),
                }
                | ({"schedule": self._schedule_state()} if self.schedule.observes() else {}),
            )

    def _schedule_state(self) -> dict[str, Any]:
        """What a resume of a run that observes its batches needs to train on as it would
        have: the schedule as it stands (batches drawn ahead of training included) and the
        batches the data loader drew in this epoch, which it replays (_restore_schedule)."""
        planner = self.schedule.planner
        return {
            "settings": self._schedule_settings(),
            "scheduler": self.schedule.scheduler.state(),
            "planner": planner.state() if planner is not None else None,
            "batches_observed": self.schedule.batches_observed,
            "drawn": self.plan_sampler.drawn,
        }

    def _datasets_scored(self, train_dataset: Dataset) -> list[tuple[str, Any]]:
        """The datasets whose rows the reward functions score, named as the caller passed them:
        train_dataset, and eval_dataset (each of a dict of them) where it has columns."""
        evaluated = self.eval_dataset
        named = evaluated.items() if isinstance(evaluated, dict) else [(None, evaluated)]
        return [("train_dataset", train_dataset)] + [
            ("eval_dataset" if key is None else f"eval_dataset[{key!r}]", dataset)
            for key, dataset in named
            if getattr(dataset, "column_names", None) is not None
        ]

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        return self._held_out_pass(super().evaluate, "the evaluation", *args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        return self._held_out_pass(super().predict, "the prediction", *args, **kwargs)

    def _held_out_pass(self, run: Callable, scored: str, *args: Any, **kwargs: Any) -> Any:
        """TRL's evaluation (or prediction), whose verifier calls are checked over the whole
        pass, as sgpo eval checks its held-out queries (a few completions of one batch all
        failing are no sign of a broken verifier), and are left out of the run's
        sgpo/verifier_*_cum, which count training's calls. A collective call, as TRL's."""
        before = self._verifier_counts()
        with self._verifiers_checked_once(scored):
            result = run(*args, **kwargs)
        for name, count in self._verifier_counts().items():
            self._verifier_counts_offset[name] -= count - before[name]
        return result

    def _init_training_state(
        self,
        max_steps: int,
        num_update_steps_per_epoch: int,
        num_train_epochs: int,
        resume_from_checkpoint: str | None,
        trial: Any,
    ) -> tuple[int, int]:
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        # Every train() call starts from the plan's first batch, as TRL's from the dataset's:
        # a second call on this trainer (a resume in the same process included) would
        # otherwise go on from where the last one stopped, and TRL's data skip replay the
        # wrong batches.
        if self._trained_before:
            self.schedule = self.plan_sampler.schedule = self._schedule_from_the_start()
            self._zero_sgpo_counters()
            # the verifiers count this call's errors (they counted the last call's too)
            self._verifier_counts_offset |= {
                name: -count for name, count in self._verifier_counts().items()
            }
            # GRPOTrainer's generation buffer too: a call that stopped inside a generation
            # batch would hand its leftover to this one and shift every later batch
            self._step, self._buffered_inputs = 0, None
        self._trained_before = True
        self.plan_sampler.replay = []  # a resume sets the batches its first epoch replays
        if resume_from_checkpoint is not None:
            self._restore_sgpo_state(
                Path(resume_from_checkpoint), epochs_trained, num_update_steps_per_epoch
            )
        return epochs_trained, steps_in_epoch

    def _restore_sgpo_state(
        self, checkpoint: Path, epochs_trained: int, steps_per_epoch: int
    ) -> None:
        path = checkpoint / STATE_FILE
        try:
            state = read_json(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{path} not found: {checkpoint} was not written by SGPOTrainer, or its run "
                "stopped while saving it, so sgpo's cost counters cannot be restored; resume "
                "from an earlier checkpoint (a GRPOTrainer run's checkpoint does not resume "
                "under a plan: pass its folder as the model and start a new run)"
            ) from e
        except DataError as e:  # cut short: the run stopped while writing it
            raise DataError(f"{e}: resume from an earlier checkpoint") from e
        needed = ("flops", "rollouts", "tokens_generated")
        if any(key not in state for key in needed):
            raise DataError(
                f"{path}: not SGPOTrainer's state (it needs {', '.join(needed)}): resume from an "
                "earlier checkpoint"
            )
        recorded = state.get("plan_sha256")  # none in checkpoints of an older sgpo
        if recorded is not None and recorded != self._plan_fingerprint:
            raise ValueError(
                f"{checkpoint} was trained under another plan (its queries, group sizes or "
                "order differ from this trainer's); resume it with the plan it was trained "
                "with, or start a new run"
            )
        self._check_resume_settings(checkpoint, state.get("settings"), steps_per_epoch)
        self.sgpo_flops = {phase: float(state["flops"][phase]) for phase in self.sgpo_flops}
        self.sgpo_rollouts = int(state["rollouts"])
        self.sgpo_tokens_generated = int(state["tokens_generated"])
        if not state.get(PROFILE_TOKENS_KEY):  # an older sgpo's state counted training's only
            self.sgpo_tokens_generated += charged_profile_tokens(self._plan.rows, self._plan.meta)
        # The verifiers count from where the checkpoint's run stood (none recorded by an older
        # sgpo): what they counted before this call is taken off, as a resume in the same
        # process has counted the first call's too.
        recorded_counts = state.get("verifier") or {}
        self._verifier_counts_offset = {
            name: float(recorded_counts.get(name, 0.0)) - value
            for name, value in self._verifier_counts().items()
        }
        if self.schedule.observes():
            self._restore_schedule(checkpoint, state.get("schedule"), steps_per_epoch)
        else:
            # One Trainer epoch is one pass over the static plan; TRL's data skip replays the
            # batches of the current epoch only.
            self.schedule.scheduler.epoch = epochs_trained

    def _restore_schedule(
        self, checkpoint: Path, saved: dict[str, Any] | None, steps_per_epoch: int
    ) -> None:
        """The schedule of a run that observes its batches (re-estimation, skip on history) as
        the checkpoint left it; the data loader's next epoch replays the batches drawn in the
        checkpoint's epoch, so that TRL's data skip discards the trained ones and the one drawn
        ahead (whose draw the schedule already counts) is trained next."""
        if saved is None:
            raise NotImplementedError(
                f"{checkpoint} holds no state of the online plan or the outcome streaks (an "
                "older sgpo did not checkpoint them with reestimate=True or history_explore "
                "< 1); resuming without them would train other batches than the run: restart "
                "the run"
            )
        if self.args.ignore_data_skip:
            raise ValueError(
                f"resuming {checkpoint} with ignore_data_skip=True: with reestimate=True or "
                "history_explore < 1 the batches depend on the ones trained, so the epoch cannot "
                "start again from its first batch; resume without ignore_data_skip"
            )
        self._refuse_other_settings(checkpoint, saved["settings"], self._schedule_settings())
        schedule = self.schedule
        schedule.scheduler.restore(saved["scheduler"], schedule.queries_by_id)
        if schedule.planner is not None:
            schedule.planner.restore(saved["planner"])
        schedule.batches_observed = int(saved["batches_observed"])
        # At an epoch's end its batches were all trained and the next epoch draws afresh.
        steps_into_epoch = self.state.global_step % steps_per_epoch
        if steps_into_epoch:
            trained = (
                steps_into_epoch * self.args.gradient_accumulation_steps
            ) // self.plan_sampler.repeat
            if len(saved["drawn"]) < trained:
                raise ValueError(
                    f"{checkpoint}: {STATE_FILE} logs {len(saved['drawn'])} batches drawn in "
                    f"its epoch, but {trained} were trained: the checkpoint is damaged; resume "
                    "from another one"
                )
            self.plan_sampler.replay = saved["drawn"]

    def _check_resume_settings(
        self, checkpoint: Path, recorded: dict | None, steps_per_epoch: int
    ) -> None:
        """Refuse a resume that would replay other batches than the run trained (recorded is
        None in checkpoints of an older sgpo)."""
        if recorded is not None:
            self._refuse_other_settings(checkpoint, recorded, self._resume_settings())
        # TRL's data skip replays the micro-steps of the current epoch's full optimizer steps
        into_epoch = (
            self.state.global_step % steps_per_epoch
        ) * self.args.gradient_accumulation_steps
        if into_epoch % self.plan_sampler.repeat:
            raise ValueError(
                f"{checkpoint} was saved at step {self.state.global_step}, inside a generation "
                f"batch (one ends every {self._steps_per_checkpointable()} steps within an "
                "epoch); TRL does not checkpoint the batch, so a resume would generate it "
                "again and shift the plan. Resume from a checkpoint where a batch ended"
            )

    @staticmethod
    def _refuse_other_settings(
        checkpoint: Path, recorded: dict[str, Any], current: dict[str, float | int | bool]
    ) -> None:
        """Refuse a resume whose settings differ from those the checkpoint recorded (an older
        sgpo's records fewer: those it lacks are not compared)."""
        differ = [
            f"{name}={current[name]} (the checkpoint's {value})"
            for name, value in recorded.items()
            if current.get(name) != value
        ]
        if differ:
            raise ValueError(
                f"{checkpoint} was trained otherwise: {', '.join(differ)}; the resume would "
                "train other batches than the run. Resume with the checkpoint's settings, or "
                "start a new run"
            )

    # --------------------------------------------------------------------------- logging
    def sgpo_totals(self) -> dict[str, float]:
        """Cumulative cost in sgpo's convention (profile FLOPs included from the start). With
        several processes the verifiers' counts are summed over them: call it on every
        process (log does)."""
        totals = {f"sgpo/flops_{phase}_cum": value for phase, value in self.sgpo_flops.items()}
        totals["sgpo/flops_total_cum"] = sum(self.sgpo_flops.values())
        totals["sgpo/rollouts_cum"] = float(self.sgpo_rollouts)
        totals["sgpo/tokens_generated_cum"] = float(self.sgpo_tokens_generated)
        totals["sgpo/plan_epoch"] = float(self.schedule.scheduler.epoch)
        for name, count in self._verifier_counts().items():
            totals[f"sgpo/verifier_{name}_cum"] = count + self._verifier_counts_offset[name]
        if self.args.history_explore < 1:
            totals["sgpo/history_skipped"] = float(self.schedule.scheduler.history_skipped)
            totals["sgpo/history_explore"] = self.schedule.scheduler.explore
        return totals

    def _verifier_counts(self) -> dict[str, float]:
        """The verifiers' errors and timeouts so far, summed over the processes (each scored
        its own rows); empty without a VerifierReward. A collective call: every process
        makes it."""
        if not self._verifier_rewards:
            return {}
        stats = [reward.verifier.stats for reward in self._verifier_rewards]
        counts = torch.tensor(
            [sum(s.errors for s in stats), sum(s.timeouts for s in stats)],
            device=self.accelerator.device,
        )
        errors, timeouts = self.accelerator.reduce(counts, reduction="sum").tolist()
        return {"errors": float(errors), "timeouts": float(timeouts)}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs = logs | self.sgpo_totals()
        super().log(logs, start_time)


@contextmanager
def _rewards_not_gathered() -> Iterator[None]:
    """GRPOTrainer._calculate_rewards ends by gathering its rows across processes, which
    needs as many rows on each; SGPOTrainer scores a process's real rows only (their counts
    differ by one), so it gathers them itself once padded back to the process's share."""
    gather = trl_grpo.gather
    trl_grpo.gather = lambda tensor: tensor
    try:
        yield
    finally:
        trl_grpo.gather = gather


def _choose_scorable(
    choose: Callable[[list[float], int], list[int]], rewards: list[float], size: int
) -> set[int]:
    """`choose` (balanced_indices, max_variance_indices) over the scorable responses;
    unscorable (NaN) ones only to fill up."""
    scorable = [k for k, r in enumerate(rewards) if not math.isnan(r)]
    picked = [scorable[j] for j in choose([rewards[k] for k in scorable], size)]
    unscorable = [k for k, r in enumerate(rewards) if math.isnan(r)]
    return set(picked + unscorable[: size - len(picked)])


def _rows_of(value: Any, rows: torch.Tensor, batch_rows: int) -> Any:
    """The given rows of a per-row batch entry (a tensor or list over the batch's rows);
    anything else (num_items_in_batch, None) as it is."""
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch_rows:
        return value[rows.to(value.device)]
    if isinstance(value, list) and len(value) == batch_rows:
        return [value[i] for i in rows.tolist()]
    return value


def profile_mismatches(
    meta: dict, launch: dict[str, float], shape: ModelShape, with_adapter: bool = False
) -> list[str]:
    """How a run's sampling (temperature, top_p, max_new_tokens) and model shape differ from
    what a plan's metadata records of its profile; empty for a plan that records neither. An
    adapter (peft) adds parameters, so only the layer and attention sizes are compared then."""
    names = {"max_new_tokens": "max_completion_length"}
    problems = [
        f"{names.get(key, key)}={value}, profiled with {profiled}"
        for key, value, profiled in sampling_differences(meta.get("sampling") or {}, launch)
    ]
    profiled = meta.get("shape") or {}
    keys = ("n_layers", "d_attn") if with_adapter else ("n_params", "n_layers", "d_attn")
    differ = [k for k in keys if k in profiled and profiled[k] != getattr(shape, k)]
    if differ:
        problems.append(
            "the model is not the one profiled ("
            + ", ".join(f"{k} {getattr(shape, k)}, profiled {profiled[k]}" for k in differ)
            + ")"
        )
    return problems


def unprofiled_sampling(args: SGPOConfig) -> list[str]:
    """TRL sampling settings a run sets that sgpo's profile never applies: it samples at its
    temperature and top_p alone (the model's generation_config overridden), so each of them
    moves the success rates the plan's group sizes rest on."""
    settings = [
        f"{name}={value}"
        for name, value, off in (
            ("top_k", args.top_k, 0),
            ("min_p", args.min_p, None),
            ("repetition_penalty", args.repetition_penalty, 1.0),
        )
        if value != off
    ]
    if args.generation_kwargs:
        settings.append(f"generation_kwargs={args.generation_kwargs}")
    return [f"{', '.join(settings)}: the profile sampled without them"] if settings else []


def verifier_mismatches(meta: dict, rewards: list[VerifierReward]) -> list[str]:
    """How the sgpo verifiers among a run's rewards are set otherwise than the one the plan's
    profile scored with (task.verifier, its kwargs and reward range, as the plan records
    them), when none of them is set as it was (a format reward may stand beside it); a spec
    the plan leaves to the task's default is that default (not compared for a plan that does
    not record its task's kind). With no verifier among the rewards, that none can be
    compared with the one the plan names."""
    recorded = settings_of(profiled_settings(meta), VERIFIER_SETTINGS)
    if not recorded:
        return []
    config = (meta.get("inputs") or {}).get("config") or {}
    if recorded.get("task.verifier") is None and "task.kind" in config:
        recorded["task.verifier"] = default_verifier(
            config["task.kind"], config.get("task.file.preset")
        )
    if not rewards:
        profiled = recorded.get("task.verifier")
        return (
            []
            if profiled is None
            else [
                f"no reward function is a verifier_reward, so none can be checked against "
                f"{profiled}, which the profile scored with: a function of your own that scores "
                f"otherwise trains on p_hat it did not measure (pass verifier_reward({profiled!r}) "
                "with the profile's settings, beside any other)"
            ]
        )

    recorded_code = (meta.get("inputs") or {}).get(VERIFIER_CODE_KEY)

    def differences(reward: VerifierReward) -> list[str]:
        current = flatten(reward.settings())
        found = [
            f"reward {reward.__name__}: {key}={current.get(key)!r}, profiled with "
            f"{recorded.get(key)!r}"
            for key in sorted(set(recorded) | set(current))
            if recorded.get(key) != current.get(key)
            and not (key == "task.verifier" and recorded.get(key) is None)
        ]
        code = verifier_code_sha256(reward.verifier.spec) if recorded_code else None
        if not found and code and code != recorded_code:  # the same verifier, edited since
            found.append(
                f"reward {reward.__name__}: its verifier's code was edited since the profile "
                f"(sha256 {code[:12]}, profiled {recorded_code[:12]})"
            )
        return found

    each = [differences(reward) for reward in rewards]
    return [] if any(not d for d in each) else each[0]


def _profiled_ids(meta: dict, query: Query, trainer: GRPOTrainer) -> list[int] | None:
    """The token ids the plan's profile generated from for query, rebuilt with this run's
    tokenizer as sgpo.models.Policy.encode makes them (None when the plan does not record its
    model settings)."""
    config = (meta.get("inputs") or {}).get("config") or {}
    keys = ("use_chat_template", "system_prompt", "prompt_template")
    if not all(f"model.{k}" in config for k in keys):
        return None
    settings = ModelConfig(**{k: config[f"model.{k}"] for k in keys})
    tokenizer = trainer.processing_class
    try:
        text = format_prompt(query.prompt, tokenizer, settings)
    except ConfigError:
        return None
    return encode_prompts(tokenizer, settings, [text])[0]


def _index_by_query(dataset: Dataset, column: str, needed: list[str]) -> dict[str, int]:
    """Dataset row of each query id; every id the plan may schedule must be there."""
    if column not in dataset.column_names:
        raise ValueError(
            f"train_dataset has no column {column!r} (the plan's query ids, e.g. "
            f"{needed[:2]}); set query_id_column or build the dataset with "
            "sgpo.trl.plan_dataset"
        )
    index: dict[str, int] = {}
    for row, query_id in enumerate(dataset[column]):
        if query_id in index:
            raise ValueError(
                f"train_dataset: query id {query_id!r} in rows {index[query_id]} and {row}"
            )
        index[query_id] = row
    missing = [q for q in needed if q not in index]
    if missing:
        not_text = next((q for q in index if not isinstance(q, str)), None)
        hint = (
            f": its ids are {type(not_text).__name__} (e.g. {not_text!r}) where the plan's "
            f"are text; cast the column to string (dataset.cast_column({column!r}, "
            "datasets.Value('string')))"
            if not_text is not None
            else ""
        )
        raise ValueError(
            f"train_dataset lacks {len(missing)} of the plan's queries, e.g. {missing[:3]}{hint}"
        )
    return index
