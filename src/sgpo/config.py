"""Run configuration: one pydantic-validated YAML per run; CLI ``--set key=value`` overrides it."""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import string
import warnings
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sgpo.core.online import history_settings_without_skip
from sgpo.core.rewards import CORRECT_THRESHOLD, EQUAL_REWARDS_STD, rescale
from sgpo.errors import ConfigError, SgpoWarning
from sgpo.yaml_dialect import QuotingDumper, UniqueKeyLoader, read_yaml_mapping

# Kept in step with sgpo.core.advantages.LOSS_AGGREGATIONS (a test checks it); named here so that
# reading a config does not import torch.
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


MAX_VERIFIER_TIMEOUT_S = 86400.0  # seconds


# The validation context of a config a run recorded (its config.yaml, profile_config.yaml): it
# is read as it was trained, settings that alone do nothing included (they did nothing then).
RECORDED = {"recorded": True}


def is_recorded(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("recorded"))


class Strict(BaseModel):
    # No float setting means anything at inf or NaN (lr=.inf trains NaN weights to rc 0).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: object, info: ValidationInfo) -> object:
        """true/false where a number goes, alone or in a list, is a mistake (pydantic would
        read it as 1/0)."""
        if not _holds_numbers_only(cls.model_fields[info.field_name].annotation):
            return value
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(item, bool) for item in items):
            raise ValueError(f"expected numbers, got {json.dumps(value)}")
        return value


def _holds_numbers_only(annotation: object) -> bool:
    """int, float, their optionals, lists and tuples: a field of numbers and nothing else."""

    def kinds(node: object) -> set:
        args = get_args(node)
        return set().union(*(kinds(arg) for arg in args)) if args else {node}

    found = kinds(annotation) - {type(None), Ellipsis}
    return bool(found) and found <= {int, float}


class EmbeddedModelConfig(Strict):
    """The built-in tiny Qwen2-shaped model, warm-started on the built-in addition task.

    With these defaults the model is the one shipped inside the package (sgpo/assets/embedded,
    sha256 in its MANIFEST.json): the same bytes on every machine, loaded without training.
    Any other shape or warm-start setting is built locally and cached; its supervised warm start
    stops when the measured per-bucket accuracy reaches skill_targets, not after a step count,
    so its skill does not hinge on float noise (its weights still vary by machine)."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(512, ge=8)
    # Operand digit counts the warm start teaches (independent of the task's mix), and how
    # often each is drawn (None = uniformly).
    digits: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    digit_weights: list[float] | None = None
    # Sampled accuracy (temperature 1) to stop at, one per entry of digits: easy sums almost
    # always right, the hardest never, a spread between. These are a point this warm start
    # passes (seed 2 below); the rounder 0.95/0.75/0.30/0.03 is not reachable jointly with
    # this model and data: 2-digit sums jump past 0.8 while 3-digit ones are still near 0.1,
    # and 3-digit stalls there as the lr decays. None = train exactly warmup_steps steps.
    skill_targets: list[float] | None = Field(default_factory=lambda: [0.92, 0.80, 0.09, 0.0])
    skill_tolerance: float = Field(0.04, gt=0, le=1)
    probe_size: int = Field(256, ge=16)  # train-split sums per digit count, one sample each
    probe_every: int = Field(50, ge=1)
    warmup_steps: int = Field(1500, ge=0)  # at most this many (exactly, without skill_targets)
    warmup_lr_horizon: int = Field(800, ge=1)
    warmup_batch_size: int = Field(128, ge=1)
    warmup_lr: float = Field(3e-3, gt=0, allow_inf_nan=False)
    cache_dir: str = "~/.cache/sgpo/models"
    # One fixed embedded model: the run seed changes sampling and order, not the initial policy.
    # (Whether and when 2-digit carries are learnt depends on the init: seeds 0 and 1 sat at
    # ~0.07 on 2-digit sums for 800 steps; seed 2 learns them by step ~450.)
    seed: int = 2

    @model_validator(mode="after")
    def _check(self) -> EmbeddedModelConfig:
        if any(d < 1 or d > 9 for d in self.digits):
            raise ValueError("model.embedded.digits must be between 1 and 9")
        weights = self.digit_weights
        if weights is not None and (len(weights) != len(self.digits) or min(weights) < 0):
            raise ValueError("model.embedded.digit_weights must be >= 0, one per digits entry")
        targets = self.skill_targets
        if targets is not None and len(targets) != len(self.digits):
            raise ValueError(
                f"model.embedded.skill_targets has {len(targets)} entries for "
                f"{len(self.digits)} digits"
            )
        if targets is not None and any(not 0 <= t <= 1 for t in targets):
            raise ValueError("model.embedded.skill_targets must be accuracies in [0, 1]")
        return self


class LoraSettings(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    # Also write final-merged/: the adapter merged into the base weights, a plain
    # save_pretrained model that transformers and vLLM load without peft.
    save_merged: bool = True


class ModelConfig(Strict):
    # "embedded" = the built-in tiny model; otherwise a hub id or a local directory.
    name_or_path: str = "embedded"
    embedded: EmbeddedModelConfig = EmbeddedModelConfig()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = None
    # None = use the tokenizer's chat template when it has one; False = plain prompts.
    use_chat_template: bool | None = None
    system_prompt: str | None = None
    prompt_template: str = "{prompt}"

    @field_validator("name_or_path")
    @classmethod
    def _home_expanded(cls, name_or_path: str) -> str:
        # "~/models/x" is a folder, as in task.file's paths; transformers would read it as a
        # hub id and every check by path (weights' sha256) would find nothing there
        return os.path.expanduser(name_or_path) if name_or_path.startswith("~") else name_or_path

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError(
                f"{device!r} is not a device: use auto, cpu, cuda, cuda:N, mps, xpu or xpu:N"
            )
        return device

    @field_validator("prompt_template")
    @classmethod
    def _only_prompt_field(cls, template: str) -> str:
        try:
            fields = {
                name for _, name, _, _ in string.Formatter().parse(template) if name is not None
            }
        except ValueError as e:  # an unmatched { or }
            raise ValueError(
                f"not a format string ({e}); write a literal brace as {{{{ or }}}}"
            ) from e
        if fields != {"prompt"}:
            raise ValueError(
                f"must contain {{prompt}} and no other {{field}}, found {sorted(fields)} "
                "(write a literal brace as {{ or }})"
            )
        return template


class AdditionTaskConfig(Strict):
    """Built-in verifiable task: a+b, answer digits written in reverse order."""

    digits: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    # The demo's mix (mostly 2-digit sums): equal weights would ask for more distinct 1-digit
    # sums than exist at the default n_train.
    weights: list[float] = Field(default_factory=lambda: [0.05, 0.75, 0.15, 0.05])
    # The held-out split's mix; None = weights. (Only ~21 held-out 1-digit sums exist, so a
    # train mix heavy in 1-digit sums needs another eval mix.)
    eval_weights: list[float] | None = None
    n_train: int = Field(1000, ge=1)
    n_eval: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _check(self) -> AdditionTaskConfig:
        if any(d < 1 or d > 9 for d in self.digits):
            raise ValueError("task.addition.digits must be between 1 and 9")
        for name in ("weights", "eval_weights"):
            weights = getattr(self, name)
            if weights is None:
                continue
            if len(weights) != len(self.digits):
                raise ValueError(f"task.addition.digits and task.addition.{name} differ in length")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"task.addition.{name} must be >= 0 with a positive sum")
        return self


class FileTaskConfig(Strict):
    """User data: local jsonl/parquet/csv files or a `datasets` name, with a column mapping."""

    train: str
    eval: str | None = None
    split_train: str = "train"
    split_eval: str = "test"
    dataset_config: str | None = None  # a `datasets` config name, e.g. "main" for openai/gsm8k
    preset: Literal["plain", "gsm8k", "math", "verl"] = "plain"
    # None = the preset's field ("question" for gsm8k, "problem" for math, ...).
    prompt_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    difficulty_field: str | None = None
    limit_train: int | None = Field(None, ge=1)
    limit_eval: int | None = Field(None, ge=1)


class TaskConfig(Strict):
    kind: Literal["addition", "file"] = "addition"
    addition: AdditionTaskConfig = AdditionTaskConfig()
    file: FileTaskConfig | None = None
    # Import path "module:function" (response, reference) -> float; None = the task's default.
    verifier: str | None = None
    # Keyword arguments bound to the verifier, e.g. {rel_tol: 1e-3} for sgpo.verifiers:numeric.
    verifier_kwargs: dict[str, Any] = Field(default_factory=dict)
    # at most a day a call (the OS timers refuse far larger ones, which would read as errors)
    verifier_timeout_s: float = Field(5.0, gt=0, le=MAX_VERIFIER_TIMEOUT_S)
    # "inline": in this process (fast, for trusted verifiers); "process": a separate, time- and
    # memory-limited process (crash isolation only); "sandbox": that process inside bubblewrap
    # (no network, no files but Python's, for code you do not trust). See sgpo.verify.
    verifier_isolation: Literal["inline", "process", "sandbox"] = "inline"
    # [low, high] a verifier's rewards must lie in (rescaled to [0, 1]); others count as errors.
    verifier_reward_range: tuple[float, float] = (0.0, 1.0)
    # The reward, in the verifier's own units, from which a response counts as a success (the
    # profile's p_hat, training groups' outcomes, held-out accuracy); None = the middle of
    # verifier_reward_range. E.g. 1.0 for a verifier returning the share of unit tests passed,
    # so that only a program passing them all solves its query.
    success_threshold: float | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.kind == "file" and self.file is None:
            raise ValueError("task.kind is 'file' but task.file is not set")
        if self.kind != "file" and self.file is not None:  # it would be ignored
            raise ValueError(
                f"task.file is set but task.kind is {self.kind!r}: set task.kind: file to use "
                "the files"
            )
        low, high = self.verifier_reward_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"task.verifier_reward_range must be finite with low < high, got [{low}, {high}]"
            )
        mark = self.success_threshold
        # a reward counts from 1e-6 (rescaled) below the mark (float rounding): a mark that
        # close to low would count a reward of low as a success
        above_low = mark is not None and rescale(mark, (low, high)) > EQUAL_REWARDS_STD
        if mark is not None and not (math.isfinite(mark) and above_low and mark <= high):
            raise ValueError(
                f"task.success_threshold must lie in task.verifier_reward_range's (low, high] = "
                f"({low}, {high}], more than 1e-6 of the range above low, got {mark}: at low or "
                "below every response would count as a success, above high none"
            )
        if mark is not None and rescale(mark, (low, high)) == CORRECT_THRESHOLD:
            # the default's own value is the default: a profile made at either serves both
            self.success_threshold = None
        return self

    @property
    def correct_threshold(self) -> float:
        """success_threshold on the rescaled [0, 1] rewards sgpo compares (core.rewards)."""
        if self.success_threshold is None:
            return CORRECT_THRESHOLD
        return rescale(self.success_threshold, self.verifier_reward_range)


class SamplingConfig(Strict):
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(8, ge=1)
    batch_size: int = Field(512, ge=1)


EngineName = Literal["transformers", "vllm"]


class ProfileConfig(Strict):
    k: int = Field(8, ge=1)
    chunk_size: int = Field(256, ge=1)  # queries per atomic chunk (resume granularity)
    # vllm (optional install, see README) suits profiling: the weights do not change.
    engine: EngineName = "transformers"
    vllm_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to vllm.LLM
    # Sample each query in rounds of adaptive_round and stop once its rewards vary (both
    # outcomes, or a graded verifier's differing scores: it is kept either way; p_hat =
    # n_correct / samples drawn), up to k samples. The samples
    # drawn are exactly the first ones of the full profile, so mixed queries cost fewer.
    adaptive: bool = False
    adaptive_round: int = Field(2, ge=1)
    # first_success: stop at a query's first correct sample (or once its rewards vary)
    # instead. It is all a plan that
    # only tells solved from never-solved needs (one G, one bucket, all-correct queries kept),
    # and its kept set is the full profile's; p_hat is then 1 / samples drawn, not an
    # estimate of p, so nothing re-plans from it (`sgpo plan` still predicts from the
    # (correct, samples drawn) records, core/predict.py).
    adaptive_stop: Literal["both_outcomes", "first_success"] = "both_outcomes"
    # With adaptive: a seeded share of the queries (by query id) is drawn all k samples, so the
    # prior `sgpo plan`'s prediction fits sees full records too; a first-success profile alone
    # predicts with 2-7x a full profile's error (BENCHMARKS.md, "Prediction"). Their kept/dropped
    # decision is the one the stopped profile would make.
    full_share: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ProfileConfig:
        if self.full_share and not self.adaptive:
            raise ValueError(
                "profile.full_share needs profile.adaptive=true (else every query "
                "is drawn all k samples already)"
            )
        # (not for a config a run recorded: it profiled so, doing nothing more)
        if self.adaptive and self.adaptive_round >= self.k and not is_recorded(info):
            raise ValueError(
                f"profile.adaptive_round ({self.adaptive_round}) >= profile.k ({self.k}): every "
                "query is drawn its k samples in its first round, so adaptive profiling stops "
                "nothing early; lower adaptive_round or raise k"
            )
        return self


# plan.preset: paper -- the full paper as the public fast-rl-bench reimplementation reads it
# (second-hand; the full text is not available to us): trivial = p_hat > 0.75, 10% of the
# never-solved kept, G in power-of-two buckets {2, 4, 8}, easy -> hard. The preset's values
# replace the config's for these keys, with a warning naming any that differed.
PAPER_PRESET: dict[str, object] = {
    "c": 1.0,
    "g_min": 2,
    "g_max": 8,
    "unsolvable_keep_fraction": 0.1,
    "drop_trivial": True,
    "trivial_above": 0.75,
    "g_rule": "pow2_buckets",
}


class PlanConfig(Strict):
    # none: the fields below as given; paper: PAPER_PRESET replaces them (with a warning
    # naming each value it changed).
    preset: Literal["none", "paper"] = "none"
    c: float = Field(1.0, gt=0, allow_inf_nan=False)
    g_min: int = Field(2, ge=1)
    g_max: int = Field(16, ge=1, le=4096)
    unsolvable_keep_fraction: float = Field(0.1, ge=0, le=1)
    drop_trivial: bool = True
    # p_hat above this is trivial too (1.0 = only p_hat = 1).
    trivial_above: float = Field(1.0, gt=0, le=1)
    # With drop_trivial: a seeded share of the trivial queries kept anyway (static plan only).
    trivial_keep_fraction: float = Field(0.0, ge=0, le=1)
    prior_alpha: float = Field(0.0, ge=0)
    prior_beta: float = Field(0.0, ge=0)
    bucket_width: float = Field(0.0, ge=0, le=1)
    # inverse_p: G = c/p (the paper's abstract); two_sided: G = c/min(p, 1-p) (beyond the
    # paper); pow2_buckets: G in {2, 4, 8} by p_hat (the paper preset).
    g_rule: Literal["inverse_p", "two_sided", "pow2_buckets"] = "inverse_p"

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        if self.preset == "paper":
            replaced = [
                f"plan.{key}: {getattr(self, key)!r} -> {value!r}"
                for key, value in PAPER_PRESET.items()
                if key in self.model_fields_set and getattr(self, key) != value
            ]
            if replaced:  # a base config's own plan values are common: say what the preset did
                warnings.warn(
                    "plan.preset 'paper' replaces " + ", ".join(replaced), SgpoWarning, stacklevel=2
                )
            for key, value in PAPER_PRESET.items():
                setattr(self, key, value)
        if self.g_max < self.g_min:
            raise ValueError(f"plan.g_max ({self.g_max}) < plan.g_min ({self.g_min})")
        return self


class OnlineConfig(Strict):
    """sGPO beyond the paper; everything off by default (= the paper's static plan)."""

    # Update a Beta posterior per query with every training group's outcomes and re-plan
    # (filter, G, curriculum) every replan_every steps. No extra inference.
    reestimate: bool = False
    replan_every: int = Field(10, ge=1)
    decay: float = Field(0.8, gt=0, le=1)  # weight kept by old evidence at each new observation
    prior_alpha: float = Field(0.0, ge=0)
    prior_beta: float = Field(0.0, ge=0)
    # plan: each query trains with the plan's G (plan.g_rule, from the current estimate);
    # knapsack: each step's budget is re-allocated over a window of upcoming queries to
    # maximise the expected value of the informative groups (allocation_value: informative =
    # their number; info_gain = each weighted by Knapsack RL's p(1-p)^2).
    allocation: Literal["plan", "knapsack"] = "plan"
    allocation_value: Literal["informative", "info_gain"] = "informative"
    allocation_window: float = Field(2.0, ge=1)  # window = this x the step budget (1/p sizes)
    # Every N steps (0 = never) re-profile a seeded sample of dropped queries with the current
    # policy, charged to the profile FLOPs, so that queries which became learnable come back.
    reprofile_every: int = Field(0, ge=0)
    reprofile_sample: int = Field(64, ge=1)
    reprofile_k: int = Field(8, ge=1)

    @field_validator("allocation", mode="before")
    @classmethod
    def _old_allocation_name(cls, value: object) -> object:
        # "inverse_p" was this value's name before it was told apart from plan.g_rule's
        # inverse_p; configs (and run directories) written then still load.
        return "plan" if value == "inverse_p" else value

    @property
    def replans(self) -> bool:
        """Estimates are updated and the plan rebuilt during training (sgpo.replanning)."""
        return self.reestimate or self.allocation == "knapsack" or bool(self.reprofile_every)


class TrainConfig(Strict):
    method: Literal["sgpo", "grpo", "dapo"] = "sgpo"
    group_size: int = Field(8, ge=2)  # fixed G for grpo and dapo
    rollout_budget: int = Field(128, ge=1)  # responses generated per step (dapo: kept per step)
    dapo_max_rounds: int = Field(4, ge=1)  # dapo: generation rounds per step before giving up
    # sgpo/grpo: drop groups whose rewards are all equal from the batch after generation and
    # refill the step from the next queries (DAPO's dynamic sampling, verl's
    # algorithm.filter_groups), refill_max_rounds generation rounds at most; the last group is
    # kept whole, so a batch may overshoot rollout_budget by less than one group.
    filter_groups: bool = False
    refill_max_rounds: int = Field(4, ge=1)
    # Pilot, then commit (0 = off; needs filter_groups): generate each query's first
    # pilot_size responses; a pilot with all rewards equal (pilot_ends all-equal) or all equal
    # and solved (all-solved, task.success_threshold: training drifts queries towards solved)
    # ends its group, the others are completed to G.
    pilot_size: int = Field(0, ge=0)
    pilot_ends: Literal["all-equal", "all-solved"] = "all-equal"
    # Grow until mixed (0 = off; Reinforce-Ada's adaptive sampling, beyond the paper): a group
    # whose rewards are all equal gets grow_round more responses at a time until both outcomes
    # show or it holds grow_max responses, so a rare outcome is paid for once, where it is
    # found. grow_train all: the whole grown group is trained; balanced: only as many responses
    # as the group was planned with, the rarer outcome first, advantages from the whole group.
    grow_max: int = Field(0, ge=0)
    grow_round: int = Field(4, ge=1)
    grow_train: Literal["all", "balanced"] = "all"
    # Down-sampling (0 = off; PODS, Xu et al. 2025, beyond the paper): every group is generated
    # whole, but one larger than downsample_to trains only that many of its responses, those
    # whose rewards vary most (sgpo.core.advantages.max_variance_indices), with advantages
    # computed within them. Generation finds the rare outcome; training pays for a few.
    # downsample_advantages whole-group (beyond PODS): the subset keeps the whole group's
    # advantages and each response weighs as many of the group as it stands for (of its
    # outcome: count in the group / count in the subset), in the loss and in its token-mean
    # denominator, so the step is an unbiased estimate of training the whole groups.
    # downsample_min_share (0 = every group larger than downsample_to): down-sample only
    # groups whose most common outcome holds at least this share of them (e.g. 0.875: 7 of 8,
    # 14 of 16), whose many equal outcomes say the same; the others are trained whole.
    downsample_to: int = Field(0, ge=0)
    # Drop dead groups (beyond the paper; prime-rl's filter, DAPO's without its refill rounds):
    # after generation, a group whose rewards are all equal leaves the step's batch, so a
    # trainer that trains every rollout (verl, TRL) pays no log-prob, forward or backward pass
    # for it; the step trains only mixed groups (fewer rollouts, never refilled). Token-mean
    # then averages over the mixed groups' tokens only (drop_equal_denominator kept): the update
    # differs from this trainer's zero-advantage skip in its denominator, not in its direction
    # (no KL penalty: train.kl_coef 0 is required).
    # With drop_equal_denominator generated it divides by the tokens of the whole batch, dead
    # groups' included, as training every rollout does: the update is exactly that of the
    # batch without the drop (dead groups' loss terms are zero), only cheaper.
    drop_equal_groups: bool = False
    drop_equal_denominator: Literal["kept", "generated"] = "kept"
    downsample_advantages: Literal["subset", "whole-group"] = "subset"
    downsample_min_share: float = Field(0.0, ge=0.0, le=1.0)
    # sgpo, beyond the paper (0 = off): for the first early_group_steps steps every kept query
    # is trained with early_group_size responses (the plan's filter and order unchanged), then
    # with the plan's G. Small groups make cheap steps while the gain is fast; the plan's
    # larger groups then give each step more informative rollouts as the curve flattens.
    early_group_size: int = Field(0, ge=0)
    early_group_steps: int = Field(0, ge=0)
    # Skip on history (1 = off; GRESO, Zheng et al. 2025, beyond the paper): at the start of
    # each epoch a query whose last z groups each came back with all rewards equal is kept for
    # that epoch with probability history_explore ** z, so queries training has solved (or
    # cannot solve) stop costing generation yet are looked at now and then. Needs one
    # generated group per query and visit: not with dapo or train.filter_groups.
    history_explore: float = Field(1.0, gt=0, le=1)
    # GRESO's adaptive rule (0 = off, history_explore stays fixed): after each step
    # history_explore moves by 0.01 (within 0.05-0.95) towards this share of generated groups
    # coming back all equal, a query is visited with probability at least 0.01, and a step that
    # reaches an epoch's end goes on into the next (GRESO samples until its batch is full).
    history_target: float = Field(0.0, ge=0, lt=1)
    # Skip only from the history_min_streak-th all-equal group in a row (1 = GRESO's rule):
    # visit probability history_explore ** (z - history_min_streak + 1) once z reaches it.
    history_min_streak: int = Field(1, ge=1)
    # Which groups make a streak (beyond GRESO): equal, rewards all equal (GRESO's rule);
    # solved, all correct, so only queries training has solved are skipped and those it has
    # not solved are always generated.
    history_streak: Literal["equal", "solved"] = "equal"
    # Small groups on history (0 = off; beyond GRESO): a query whose last group extended its
    # streak (history_streak's rule) is generated with this many responses instead of its
    # planned G until a group breaks the streak, with or without skips. On a near-solved query
    # a rare failure costs about 1/(1-p) responses whatever G is, and an all-correct group of 2
    # costs a quarter of one of 8; a mixed small group sends the query back to its G.
    streak_group_size: int = Field(0, ge=0)
    # Keep steps full (implied by history_target): a step that reaches an epoch's end goes on
    # into the next; the queries it holds count as their visit of that epoch.
    history_fill: bool = False
    # Start the history from the plan's profile (beyond GRESO): a kept query whose profile
    # samples were all correct (with a first-success profile, its first round's) starts on a
    # streak of one, as if one group had come back all correct: with history_min_streak 1 the
    # first epoch may skip it too instead of visiting every query once before any history
    # exists (with streak_group_size it starts with the small group).
    history_from_profile: bool = False
    steps: int = Field(60, ge=1)
    # Stop after the step whose cumulative total FLOPs (profiling included) reach this (it may
    # overshoot by part of a step); None = no cap. sgpo compare gives every method the same cap.
    max_total_flops: float | None = Field(None, gt=0)
    # The same cap in the other currencies sgpo reports: the FLOPs a trainer that trains every
    # rollout would spend on the same updates, and generated tokens (profile included).
    max_total_flops_train_all: float | None = Field(None, gt=0)
    max_generated_tokens: int | None = Field(None, gt=0)
    lr: float = Field(2e-4, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    # linear from 0, as transformers' schedules: the first step runs at lr 0 (its rollouts and
    # FLOPs are spent and charged; AdamW's moments move, the weights do not)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.99)

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"each beta must be in [0, 1), got {list(betas)}")
        return betas

    max_grad_norm: float = Field(1.0, gt=0)
    ppo_epochs: int = Field(1, ge=1)
    clip_low: float = Field(0.2, ge=0)  # below 1 (_check; a recorded run's config is read as is)
    clip_high: float = Field(0.2, ge=0)
    kl_coef: float = Field(0.0, ge=0)
    normalize_std: bool = False
    loss_aggregation: LossAggregation = "token-mean"
    micro_batch_size: int = Field(64, ge=1)
    eval_every: int = Field(10, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    # checkpoints/step-N/ model copies kept, the latest (TRL's save_total_limit); None: all
    keep_checkpoints: int | None = Field(None, ge=1)
    max_nonfinite_in_a_row: int = Field(3, ge=1)
    online: OnlineConfig = OnlineConfig()
    # sgpo: a kept query's profile samples form (part of) its first training group, trained
    # off-policy (PPO ratio to the initial policy's log-probs); see sgpo.reuse.
    reuse_profile: bool = False
    # sgpo without a separate profiling pass: each query's first training group (G =
    # plan.g_min = plan.g_max, drawn on-policy) is its profile, and the plan's filter drops it
    # right after that group; epochs are shuffled as for the baselines (one group size and no
    # curriculum: both would need the whole profile before the first step).
    first_visit_profile: bool = False
    # Temperature of the training groups (None: sampling.temperature, which the profile and
    # every evaluation use). A hotter rollout shows a near-solved query's rare failure in
    # fewer samples; the update takes its log-probs at the same temperature (logits / T, as
    # verl and TRL do), so the policy trained is the one that sampled.
    rollout_temperature: float | None = Field(None, gt=0)
    # Mirror metrics to experiment trackers (metrics.jsonl is always written).
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    report_project: str = "sgpo"

    @property
    def uses_plan(self) -> bool:
        """Trains from a plan file (sgpo with a profile before training)."""
        return self.method == "sgpo" and not self.first_visit_profile

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> TrainConfig:
        if self.method == "dapo" and self.rollout_budget < self.group_size:
            raise ValueError(
                f"train.rollout_budget ({self.rollout_budget}) must hold one group of "
                f"train.group_size ({self.group_size}) with method 'dapo': it keeps whole groups "
                "only, so no step would train anything"
            )
        if self.online.replans and self.method != "sgpo":
            raise ValueError(
                f"train.online re-planning needs train.method 'sgpo' (method "
                f"'{self.method}' trains without a plan to re-estimate)"
            )
        if self.reuse_profile and self.method != "sgpo":
            raise ValueError("train.reuse_profile needs train.method 'sgpo' (it reuses a profile)")
        if self.first_visit_profile:
            if self.method != "sgpo" or self.reuse_profile or self.online.replans:
                raise ValueError(
                    "train.first_visit_profile needs train.method 'sgpo' without "
                    "train.reuse_profile or train.online re-planning (there is no profile "
                    "before training to reuse or to start estimates from)"
                )
            if self.filter_groups or self.grow_max or self.early_group_size:
                raise ValueError(
                    "train.first_visit_profile does not combine with train.filter_groups, "
                    "train.grow_max or train.early_group_size: a query's first group must be "
                    "the plan's G, kept whole, to be its profile"
                )
        # groups that must be mixable
        for name in ("pilot_size", "grow_max", "early_group_size", "downsample_to"):
            if getattr(self, name) == 1:
                raise ValueError(
                    f"train.{name} must be 0 (off) or >= 2: one response cannot show both outcomes"
                )
        if self.filter_groups and (self.method == "dapo" or self.reuse_profile):
            raise ValueError(
                "train.filter_groups does not combine with method 'dapo' (it filters and "
                "refills by its own rounds) or with train.reuse_profile"
            )
        if self.pilot_size and not self.filter_groups:
            raise ValueError("train.pilot_size needs train.filter_groups: true")
        if self.grow_max and (self.method == "dapo" or self.filter_groups):
            raise ValueError(
                "train.grow_max does not combine with method 'dapo' or train.filter_groups: "
                "growing a group until it is mixed replaces dropping it"
            )
        if self.drop_equal_groups and (self.method == "dapo" or self.filter_groups):
            raise ValueError(
                "train.drop_equal_groups does not combine with method 'dapo' or "
                "train.filter_groups: they drop the groups whose rewards are all equal already"
            )
        if self.drop_equal_denominator != "kept" and not self.drop_equal_groups:
            raise ValueError("train.drop_equal_denominator needs train.drop_equal_groups: true")
        if self.drop_equal_groups and self.kl_coef > 0:
            # as sgpo.trl's drop needs beta = 0
            raise ValueError(
                "train.drop_equal_groups needs train.kl_coef 0: a dead group's KL term is not "
                "zero, so dropping the group would change the update, not only its cost"
            )
        if self.history_explore < 1 and (self.method == "dapo" or self.filter_groups):
            raise ValueError(
                "train.history_explore does not combine with method 'dapo' or "
                "train.filter_groups: they drop zero-variance groups after generation, in "
                "rounds, where it skips queries before it"
            )
        if self.history_from_profile and not (self.uses_plan and self.history_explore < 1):
            raise ValueError(
                "train.history_from_profile needs train.method 'sgpo' with a plan (not "
                "train.first_visit_profile) and train.history_explore < 1 (skip on history)"
            )
        if self.history_from_profile and self.reuse_profile:
            # a reused group is the profile's samples: the streak would count them twice
            raise ValueError("train.history_from_profile does not combine with train.reuse_profile")
        if (
            self.history_streak != "equal"
            and self.history_explore == 1
            and not self.streak_group_size
        ):
            raise ValueError(
                "train.history_streak needs train.history_explore < 1 (skip on history) or "
                "train.streak_group_size"
            )
        if self.streak_group_size == 1:
            raise ValueError(
                "train.streak_group_size must be 0 (off) or >= 2: a group of one has no advantage"
            )
        if self.streak_group_size and (
            self.method == "dapo" or self.filter_groups or self.grow_max
        ):
            raise ValueError(
                "train.streak_group_size does not combine with method 'dapo', train.filter_groups "
                "or train.grow_max: it needs one generated group per query and visit"
            )
        if self.downsample_to and (self.method == "dapo" or self.filter_groups or self.grow_max):
            raise ValueError(
                "train.downsample_to does not combine with method 'dapo', train.filter_groups or "
                "train.grow_max: they choose which groups are trained, it which responses of each"
            )
        if (self.downsample_advantages != "subset" or self.downsample_min_share) and not (
            self.downsample_to
        ):
            raise ValueError(
                "train.downsample_advantages and train.downsample_min_share need "
                "train.downsample_to"
            )
        if bool(self.early_group_size) != bool(self.early_group_steps):
            raise ValueError(
                "train.early_group_size and train.early_group_steps go together (both 0 = off)"
            )
        if self.early_group_size and (self.method != "sgpo" or self.online.allocation != "plan"):
            raise ValueError(
                "train.early_group_size needs train.method 'sgpo' with "
                "train.online.allocation 'plan' (it replaces the plan's G for a while)"
            )
        if not is_recorded(info):
            if self.clip_low >= 1:
                raise ValueError(
                    f"train.clip_low ({self.clip_low}) must be below 1: the ratio's floor "
                    f"1 - clip_low would be {1 - self.clip_low:g}, which no ratio falls under"
                )
            self._refuse_idle_settings()
            if self.warmup_steps >= self.steps:
                warnings.warn(
                    f"train.warmup_steps ({self.warmup_steps}) >= train.steps ({self.steps}): "
                    f"the lr never reaches train.lr ({self.lr:g}) in this run",
                    SgpoWarning,
                    stacklevel=2,
                )
        return self

    def _refuse_idle_settings(self) -> None:
        """Settings that act only with another, set without it: they would do nothing. (Not
        for a config a run recorded, RECORDED: it trained with them doing nothing.)"""
        for setting, needed, acts in (
            ("grow_round", "train.grow_max >= 2", bool(self.grow_max)),
            ("grow_train", "train.grow_max >= 2", bool(self.grow_max)),
            ("refill_max_rounds", "train.filter_groups: true", self.filter_groups),
            ("pilot_ends", "train.pilot_size >= 2", bool(self.pilot_size)),
            ("dapo_max_rounds", "train.method 'dapo'", self.method == "dapo"),
            ("keep_checkpoints", "train.checkpoint_every >= 1", bool(self.checkpoint_every)),
        ):
            if getattr(self, setting) != type(self).model_fields[setting].default and not acts:
                raise ValueError(f"train.{setting} needs {needed}: alone it does nothing")
        online = self.online
        replanning = "re-planning (reestimate, allocation knapsack or reprofile_every)"
        for setting, needed, acts in (
            ("replan_every", "reestimate: true", online.reestimate),
            ("decay", replanning, online.replans),
            ("prior_alpha", replanning, online.replans),
            ("prior_beta", replanning, online.replans),
            ("allocation_value", "allocation: knapsack", online.allocation == "knapsack"),
            ("allocation_window", "allocation: knapsack", online.allocation == "knapsack"),
            ("reprofile_sample", "reprofile_every >= 1", bool(online.reprofile_every)),
            ("reprofile_k", "reprofile_every >= 1", bool(online.reprofile_every)),
        ):
            value = getattr(online, setting)
            if value != type(online).model_fields[setting].default and not acts:
                raise ValueError(
                    f"train.online.{setting} ({value}) needs train.online.{needed}: alone it "
                    "does nothing"
                )
        idle = history_settings_without_skip(
            self.history_explore, self.history_target, self.history_min_streak, self.history_fill
        )
        if idle:
            raise ValueError(f"train.{idle[0]} needs train.history_explore < 1 (skip on history)")
        if self.method != "grpo":
            return
        # with GRPO's one group size: a pilot the whole group, every group at most
        # downsample_to already, or no group able to grow
        g = self.group_size
        for setting, idle_size, why in (
            ("pilot_size", self.pilot_size >= g, "a pilot that size is the whole group"),
            ("downsample_to", self.downsample_to >= g, "no group has more responses"),
            ("grow_max", 0 < self.grow_max <= g, "no group could grow past it"),
        ):
            if getattr(self, setting) and idle_size:
                raise ValueError(
                    f"train.{setting} ({getattr(self, setting)}) does nothing with method "
                    f"'grpo' and train.group_size {g}: {why}"
                )


# The train settings that make a run an sGPO variant beyond its plan (generation rounds,
# down-sampling, history skips, early small groups, profile reuse, online re-planning, the
# training groups' own temperature); all at their defaults is GRPO as users run it.
# sgpo.side_by_side resets them for the demo's baseline; sgpo.verl.export names those a verl launch
# does not carry.
VARIANT_TRAIN_SETTINGS = (
    "filter_groups",
    "refill_max_rounds",
    "pilot_size",
    "pilot_ends",
    "grow_max",
    "grow_round",
    "grow_train",
    "downsample_to",
    "drop_equal_groups",
    "drop_equal_denominator",
    "downsample_advantages",
    "downsample_min_share",
    "history_explore",
    "history_target",
    "history_min_streak",
    "history_streak",
    "history_fill",
    "history_from_profile",
    "streak_group_size",
    "early_group_size",
    "early_group_steps",
    "reuse_profile",
    "first_visit_profile",
    "rollout_temperature",
    "online",
)


class EvalConfig(Strict):
    n_samples: int = Field(4, ge=1)
    greedy: bool = True
    # Engine of `sgpo eval` on a saved model; evaluations inside training always use the
    # trainer's own (transformers) engine, whose weights are the ones being trained.
    engine: EngineName = "transformers"
    vllm_kwargs: dict[str, Any] = Field(default_factory=dict)


class RunConfig(Strict):
    seed: int = 0
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    sampling: SamplingConfig = SamplingConfig()
    profile: ProfileConfig = ProfileConfig()
    plan: PlanConfig = PlanConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> RunConfig:
        online = self.train.online
        train = self.train
        largest = max(self.plan.g_max, train.early_group_size)
        if (
            train.method == "sgpo"
            and train.downsample_to
            and not train.grow_max
            and train.downsample_to >= largest
            and not is_recorded(info)
        ):
            raise ValueError(
                f"train.downsample_to ({train.downsample_to}) does nothing: no sgpo group has "
                f"more responses (plan.g_max {self.plan.g_max}, train.early_group_size "
                f"{train.early_group_size}); lower it or raise plan.g_max"
            )
        if (
            self.train.history_from_profile
            and self.plan.drop_trivial
            and self.plan.trivial_keep_fraction == 0
        ):
            raise ValueError(
                "train.history_from_profile starts a streak for kept queries whose profile "
                "samples were all correct, and plan.drop_trivial drops every such query: set "
                "plan.drop_trivial=false (as the first-success plans do) or "
                "plan.trivial_keep_fraction > 0"
            )
        if self.plan.trivial_keep_fraction > 0 and (online.reestimate or online.reprofile_every):
            # A re-plan filters again from the current estimates and would drop them.
            raise ValueError(
                "plan.trivial_keep_fraction is a static-plan setting; it does not combine "
                "with train.online.reestimate or train.online.reprofile_every, whose re-plans "
                "drop every trivial query"
            )
        if self.train.first_visit_profile and (
            self.plan.g_min != self.plan.g_max or self.plan.bucket_width < 1
        ):
            raise ValueError(
                "train.first_visit_profile needs one group size (plan.g_min = plan.g_max) and "
                "one bucket (plan.bucket_width >= 1): G by p_hat and an easy -> hard order "
                "need the whole profile before the first step"
            )
        if self.profile.adaptive_stop == "first_success":
            self._check_first_success_profile()
        if self.train.online.allocation == "knapsack":
            self._check_knapsack()
        if self.train.reuse_profile and self.rollout_temperature != self.sampling.temperature:
            raise ValueError(
                "train.reuse_profile trains profile samples drawn at sampling.temperature; "
                "train.rollout_temperature must then be unset or equal to it"
            )
        uses_vllm = "vllm" in (self.profile.engine, self.eval.engine)
        if uses_vllm and self.sampling.temperature > 2:
            raise ValueError("sampling.temperature above 2 is rejected by vLLM (engine: vllm)")
        return self

    @property
    def rollout_temperature(self) -> float:
        """The training groups' temperature (the update's log-probs are taken at it)."""
        return self.train.rollout_temperature or self.sampling.temperature

    def _check_knapsack(self) -> None:
        """Knapsack allocation sizes every group itself from a window it then marks visited:
        what would size or fill steps otherwise has no say."""
        train = self.train
        conflicts = {
            "plan.g_min >= 2 (a group must be able to show both outcomes)": self.plan.g_min < 2,
            "no train.history_fill (the window is skipped, never filled across epochs)": (
                train.history_fill
            ),
            "no train.history_target (its steps fill across epochs too)": train.history_target > 0,
            "no train.streak_group_size (the allocation sizes the groups)": bool(
                train.streak_group_size
            ),
        }
        broken = [need for need, conflict in conflicts.items() if conflict]
        if broken:
            raise ValueError("train.online.allocation knapsack needs " + "; ".join(broken))

    def _check_first_success_profile(self) -> None:
        """A profile stopped at the first success knows only solved / never-solved."""
        needs = {
            "profile.adaptive=true": self.profile.adaptive,
            "plan.drop_trivial=false": not self.plan.drop_trivial,
            "plan.g_min = plan.g_max": self.plan.g_min == self.plan.g_max,
            "plan.bucket_width >= 1": self.plan.bucket_width >= 1,
            "no train.reuse_profile": not self.train.reuse_profile,
            "no train.online re-planning": not self.train.online.replans,
        }
        missing = [need for need, met in needs.items() if not met]
        if missing:
            raise ValueError(
                "profile.adaptive_stop=first_success leaves p_hat = 1 / samples drawn, so it "
                "needs a plan that only tells solved from never-solved: " + ", ".join(missing)
            )


def _section(tree: dict, dotted: str) -> tuple[dict, str]:
    """The mapping that holds dotted's last key (sections created on the way), and that key."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    return node, keys[-1]


def _override_value(item: str, raw: str) -> object:
    """An override's value, read as YAML; a ' #' would start a YAML comment and silently cut
    an unquoted string, so it must be quoted."""
    try:
        value = yaml.load(raw, UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({e.problem}); quote a string "
            "value: key='text'"
        ) from e
    if "#" in raw and "#" not in yaml.safe_dump(value):
        raise ConfigError(
            f"override {item!r}: ' #' starts a YAML comment, which would drop the rest; quote "
            "the value: key='text # more'"
        )
    return value


def override_key(item: str) -> str:
    """The key an override sets (key=value) or removes (~key)."""
    return item.removeprefix("~").split("=", 1)[0].strip()


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, recorded: bool = False
) -> RunConfig:
    """Read a YAML config (or defaults when path is None) and apply overrides in order:
    ``key.sub=value`` sets a value, ``~key.sub`` removes a setting or a whole section from what
    was read so far, which puts it back to its default (Hydra's deletion syntax). recorded: a
    config a run wrote (RECORDED), read as it was trained."""
    source = str(path) if path else "<defaults>"
    tree: dict = read_yaml_mapping(Path(path)) if path else {}
    if path and not tree:  # a file saved before it was written, or the wrong file
        warnings.warn(f"{path} sets nothing: every setting is sgpo's default", SgpoWarning, 2)
    set_by: dict[str, str] = {}  # key -> the override that set it, for the error lines
    for item in overrides or []:
        if item.startswith("~"):
            node, key = _section(tree, item[1:].strip())
            if key not in node:  # a typo would otherwise leave the setting silently in place
                raise ConfigError(f"override {item!r}: {source} does not set {item[1:]!r}")
            del node[key]
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value or ~key.sub")
        key, raw = override_key(item), item.split("=", 1)[1]
        if not key:
            raise ConfigError(f"override {item!r} names no key: it must look like key.sub=value")
        model = tree.get("model")
        lora = model.get("lora") if isinstance(model, dict) else None
        if key == "model.lora.save_merged" and lora is None:
            # an output setting of a LoRA run would otherwise turn LoRA on, with its defaults
            raise ConfigError(
                f"override {item!r}: {source} trains no LoRA adapter (no model.lora); set "
                "model.lora.r (or model.lora={}) to train one"
            )
        node, last = _section(tree, key)
        node[last] = _override_value(item, raw)
        set_by[key] = item
    try:
        config = RunConfig.model_validate(tree, context=RECORDED if recorded else None)
        if recorded and set_by:  # what an override sets is new: read as any config is
            _refuse_what_overrides_make_idle(tree, set_by)
        return config
    except ValidationError as e:
        from sgpo.compare import CompareConfig  # which imports this module

        lines = validation_lines(e, set_by)
        if set(tree) & set(CompareConfig.model_fields) - set(RunConfig.model_fields):
            lines += "\n  (its keys are a compare config's: sgpo compare -c takes it)"
        raise ConfigError(f"{source}: invalid config\n{lines}") from e


def _refuse_what_overrides_make_idle(tree: dict, set_by: dict[str, str]) -> None:
    """A recorded config is read as it trained, but an override on it is the user's setting
    now: a strict reading's refusal that names an overridden key stands (ValidationError)."""
    try:
        RunConfig.model_validate(tree)
    except ValidationError as e:
        if any(key in str(e) for key in set_by):
            raise


def validation_lines(
    error: ValidationError,
    set_by: dict[str, str] | None = None,
    schema: type[BaseModel] | None = None,
) -> str:
    """A pydantic error as one indented line per problem, each led by its key path (a check
    across sections, a model validator, has no path of its own), for an unknown key the
    schema's keys spelled like it (schema: the model validated, RunConfig by default) and,
    for a key an override set (set_by: key -> override), that override."""
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        line = f"  {key}: {err['msg']}" if key else f"  {err['msg']}"
        origin = next(
            (item for k, item in (set_by or {}).items() if key == k or key.startswith(k + ".")),
            None,
        )
        unknown = err["type"] == "extra_forbidden" and err["loc"]
        if unknown and (close := _close_keys(err["loc"], schema or RunConfig)):
            line += f"; did you mean {' or '.join(close)}?"
        if origin:
            line += f" (override {origin!r})"
            if err["type"] == "string_type":  # `Q: {prompt}` read as YAML is a mapping
                line += "; values are YAML: quote a text with ': ' or braces, key='...'"
        lines.append(line)
    return "\n".join(lines)


def _close_keys(loc: tuple, model: type[BaseModel]) -> list[str]:
    """The keys of the schema's section at loc[:-1] spelled like loc[-1] (a typo's fixes)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotations = (field.annotation, *get_args(field.annotation)) if field else ()
        nested = [a for a in annotations if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    section = ".".join(str(p) for p in loc[:-1])
    matches = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=2, cutoff=0.7)
    return [f"{section}.{m}" if section else m for m in matches]


def dump_config(config: RunConfig) -> str:
    return yaml.dump(config.model_dump(mode="json"), Dumper=QuotingDumper, sort_keys=False)


def refuse_float16_training(config: RunConfig, where: str = "") -> None:
    """Every weight trained in float16: no float32 copy and no loss scaling, and AdamW's eps
    (1e-8) is 0 there, so the first update turns weights into NaN. A LoRA adapter trains in
    float32 over float16 weights (peft keeps trainable adapters in float32): allowed."""
    if config.model.dtype == "float16" and config.model.lora is None:
        raise ConfigError(
            f"{where}model.dtype=float16 with every weight trained: sgpo train keeps no "
            "float32 copy of the weights and no loss scaling, and AdamW's eps (1e-8) is 0 in "
            "float16, so the first update turns weights into NaN; train in bfloat16 or "
            "float32, or a LoRA adapter (model.lora) over float16 weights"
        )
