"""A verl run's logged token counts -> sGPO's per-phase FLOPs (convention: sgpo.core.flops).

verl 0.9.1's own FLOPs counter (verl/utils/flops_counter.py, used by workers/engine_workers.py)
only feeds the actor/critic MFU metric (perf/mfu/actor): it never counts rollout generation, so
it cannot be compared with sGPO's accounting. This module recomputes every phase from what verl
logs each step (trainer/ppo/metric_utils.py, compute_data_metrics and
compute_throughout_metrics, called from trainer/ppo/v1/trainer_base.py _compute_metrics):
  prompt_length/mean, response_length/mean  real (non-padding) sequences only, in tokens
  perf/total_num_tokens                     prompt + response tokens of the whole step batch,
                                            including verl's synthetic padding sequences
verl does not log how many rollouts a step generated. With variable group sizes it is the sum
of __rollout_n__ over the step's prompts, which the exported parquet gives exactly (pass
rollouts_per_step, see sgpo.verl.export.rollouts_per_step). Without it the count is estimated
from perf/total_num_tokens and the mean prompt + response length; the tokens hold verl's padding
sequences (128 tokens each; see trainer/ppo/padding_utils.py), which batch_multiple takes out
again (without it they are counted as rollouts).

The file logger (trainer.logger=[console,file]; verl/utils/tracking.py FileLogger) writes one JSON
object per line, {"step": N, "data": {metric: value}}, to $VERL_FILE_LOGGER_PATH or else
$VERL_FILE_LOGGER_ROOT/<project_name>/<experiment_name>.jsonl (root defaults to the trainer's
working directory). Step 0 holds only the validation before training.

Per step with n rollouts of mean prompt length P and mean response length R (each sequence taken
at the mean length, so the attention term is a slight underestimate):
  rollout  n * inference_flops(P, R)                      generation with a KV cache
  logprob  n * logprob_flops(P, R) * (old + ref)           old: verl recomputes the behaviour
                                                           policy's log-probs unless
                                                           algorithm.rollout_correction.bypass_mode;
                                                           ref: when a KL term needs the reference
  train    n * train_flops(P, R) * ppo_epochs              forward + backward
  profile  the sGPO profiling pass, charged once before step 1 (from plan.parquet metadata)
Padding. verl appends synthetic sequences of 127 prompt tokens + 1 response token to every step
until the batch is a multiple of lcm(actor dp size, actor.ppo_mini_batch_size * rollout.n)
(trainer/ppo/padding_utils.py upsample_batch_to_divisible_size, called from
trainer_base._balance_batch); they are never generated but go through the log-prob passes and the
training forward/backward with a zero loss mask, so they cost compute. With batch_multiple given,
each step's padding_sequences = (-trained) mod batch_multiple are charged to logprob and train at
128 tokens each and reported separately (flops_padding, part of logprob + train).

DAPO (algorithm.filter_groups, sync v1 trainer: trainer/ppo/v1/replay_buffer.py): groups whose
metric has no variance are evicted and replaced, and groups finished beyond the batch are discarded;
both were generated and are logged per step as training/filter_groups/evicted_samples and
training/filter_groups/discarded_surplus_samples (in prompt groups). With discarded_group_size = G
they are charged as rollout FLOPs (generated, never trained) at the step's mean lengths.

Down-sampling (sgpo.verl.sampler, PODS): each step logs training/sgpo/downsampled_samples, the
trajectories generated and cleared before training, and their prompt and response tokens
(training/sgpo/downsampled_prompt_tokens, _response_tokens). They are charged as rollout FLOPs
only, at their own mean lengths (a step logged without their tokens: at the trained batch's);
the dataset's rollouts_per_step counts them among the generated, the token estimate does not
(it reads the trained batch).

Skip on history (sgpo.verl.sampler): which rows a step generates then depends on the run, so the
dataset's order does not give the count; the buffer logs it (training/sgpo/generated_samples,
the step's trajectories before down-sampling), and a logged count wins over both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sgpo.core.flops import PHASES, ModelShape, inference_flops, logprob_flops, train_flops
from sgpo.errors import DataError
from sgpo.verl.downsample import (
    DOWNSAMPLED_METRIC,
    DOWNSAMPLED_PROMPT_TOKENS_METRIC,
    DOWNSAMPLED_RESPONSE_TOKENS_METRIC,
)
from sgpo.verl.history import GENERATED_METRIC

PADDING_PROMPT_TOKENS, PADDING_RESPONSE_TOKENS = 127, 1  # verl's SYNTHETIC_PADDING_SEQ_LEN = 128

PROMPT_MEAN = "prompt_length/mean"
RESPONSE_MEAN = "response_length/mean"
TOTAL_TOKENS = "perf/total_num_tokens"
SCORE_MEAN = "critic/score/mean"
DAPO_EVICTED = "training/filter_groups/evicted_samples"
DAPO_SURPLUS = "training/filter_groups/discarded_surplus_samples"
VAL_PREFIXES = ("val-core/", "val-aux/")


def read_verl_metrics(paths: list[Path]) -> list[dict]:
    """Per-step metric dicts from verl file-logger JSONL files (later files win on repeated
    steps, e.g. after a resume that started a new file). Each record is {"step", **metrics}."""
    records: list[dict] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: a directory; give verl's metrics JSONL file(s)")
        lines = path.read_bytes().split(b"\n")
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if line_no == len(lines):  # no newline after it: a killed run's unfinished line
                    continue
                raise DataError(f"{path}: line {line_no}: not JSON ({e})") from e
            records.append(normalise_record(raw, f"{path}: line {line_no}"))
    return merge_records(records)


def merge_records(records: list[dict]) -> list[dict]:
    """Records in step order, those of one step merged (a later value wins)."""
    by_step: dict[int, dict] = {}
    for i, raw in enumerate(records):
        record = normalise_record(raw, f"record {i}")
        by_step.setdefault(record["step"], {}).update(record)
    return [by_step[s] for s in sorted(by_step)]


def normalise_record(raw: dict, where: str = "record") -> dict:
    """Accept verl's FileLogger lines ({"step", "data"}) or flat metric dicts."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    metrics = raw["data"] if isinstance(raw.get("data"), dict) else raw
    step = raw.get("step", metrics.get("training/global_step"))
    if step is None:
        raise DataError(f"{where}: no 'step' (nor 'training/global_step') field")
    if isinstance(step, bool) or not isinstance(step, int | float) or step != int(step):
        raise DataError(f"{where}: field 'step' is {step!r}, not a whole number")
    return {**metrics, "step": int(step)}


def _count(record: dict, key: str, default: float | None = None) -> float:
    """A logged count or mean length (a finite number >= 0), named by step and field if not."""
    value = record.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number >= 0):
        raise DataError(
            f"step {record['step']}: field {key!r} is {value!r}; a logged count or mean length "
            "is a finite number >= 0"
        )
    return number


def verl_run_flops(
    records: list[dict],
    shape: ModelShape,
    use_reference: bool,
    ppo_epochs: int,
    rollouts_per_step: list[int] | None = None,
    recompute_old_logprob: bool = True,
    profile_flops: float = 0.0,
    batch_multiple: int | None = None,
    discarded_group_size: int | None = None,
) -> list[dict]:
    """One row per training step: rollouts, mean lengths, FLOPs per phase for the step and
    cumulative (keys flops_<phase>, flops_<phase>_cum, flops_total, flops_total_cum, as sGPO's
    own metrics.jsonl), the step's mean reward and any validation metrics logged with it.

    records: verl's per-step metrics (FileLogger lines or flat dicts with a "step"), in any
        order; records of the same step are merged, a later value winning.
    rollouts_per_step: rollouts of step s at index s-1 within an epoch (wrapped around for later
        epochs); None estimates them from perf/total_num_tokens (includes padding).
    batch_multiple: verl's padding multiple, lcm(dp size, ppo_mini_batch_size * rollout.n);
        None: padding is not counted.
    discarded_group_size: G of DAPO's evicted and surplus groups; None: not a DAPO run.
    """
    if ppo_epochs < 1:
        raise DataError(f"ppo_epochs must be >= 1, got {ppo_epochs}")
    if rollouts_per_step is not None and not rollouts_per_step:
        raise DataError("rollouts_per_step is empty: the dataset has fewer rows than one batch")
    logprob_passes = int(recompute_old_logprob) + int(use_reference)
    cumulative = dict.fromkeys(PHASES, 0.0)
    cumulative["profile"] = float(profile_flops)
    out = []
    for record in merge_records(records):
        step = record["step"]
        validation = {k: v for k, v in record.items() if k.startswith(VAL_PREFIXES)}
        if PROMPT_MEAN in record and RESPONSE_MEAN in record:
            p, r = _count(record, PROMPT_MEAN), _count(record, RESPONSE_MEAN)
            n, source = _rollouts(record, step, p, r, rollouts_per_step, batch_multiple)
        elif PROMPT_MEAN in record or RESPONSE_MEAN in record:  # verl logs the two together
            missing = RESPONSE_MEAN if PROMPT_MEAN in record else PROMPT_MEAN
            raise DataError(
                f"step {step}: no field {missing!r} beside the other mean length: a training "
                "step's FLOPs need both (a damaged or hand-edited metrics line?)"
            )
        elif validation:  # validation before training (step 0): accuracy at the profile's cost
            n, p, r, source = 0, 0.0, 0.0, "none"
        else:
            continue  # nothing trained and nothing measured
        discarded = 0
        if discarded_group_size is not None:
            groups = _count(record, DAPO_EVICTED, 0) + _count(record, DAPO_SURPLUS, 0)
            discarded = round(groups) * discarded_group_size
        downsampled = round(_count(record, DOWNSAMPLED_METRIC, 0))
        if source in ("dataset", "logged"):  # these count what was generated
            n -= downsampled
        # generated and not trained: DAPO's groups at the trained batch's mean lengths (verl
        # logs no others), down-sampled trajectories at their own where the sampler logged them
        generated_only = discarded * inference_flops(shape, p, r) + downsampled * inference_flops(
            shape, *_downsampled_lengths(record, downsampled, p, r)
        )
        discarded += downsampled
        padding = (-n) % batch_multiple if batch_multiple and n else 0
        pad_logprob = padding * logprob_flops(shape, PADDING_PROMPT_TOKENS, PADDING_RESPONSE_TOKENS)
        pad_train = padding * train_flops(shape, PADDING_PROMPT_TOKENS, PADDING_RESPONSE_TOKENS)
        pad_logprob *= logprob_passes
        pad_train *= ppo_epochs
        step_flops = {
            "profile": 0.0,
            "rollout": n * inference_flops(shape, p, r) + generated_only,
            "logprob": n * logprob_flops(shape, p, r) * logprob_passes + pad_logprob,
            "train": n * train_flops(shape, p, r) * ppo_epochs + pad_train,
        }
        row: dict = {
            "step": step,
            "rollouts": n + discarded,
            "rollouts_trained": n,
            "rollouts_discarded": discarded,
            "padding_sequences": padding,
            "rollouts_source": source,
            "prompt_tokens_mean": p,
            "response_tokens_mean": r,
            "flops_padding": pad_logprob + pad_train,
        }
        for phase in PHASES:
            cumulative[phase] += step_flops[phase]
            row[f"flops_{phase}"] = step_flops[phase]
            row[f"flops_{phase}_cum"] = cumulative[phase]
        row["flops_total"] = sum(step_flops.values())
        row["flops_total_cum"] = sum(cumulative.values())
        if SCORE_MEAN in record:
            row["reward_mean"] = float(record[SCORE_MEAN])
        out.append(row | validation)
    return out


def _downsampled_lengths(record: dict, downsampled: int, p: float, r: float) -> tuple[float, float]:
    """The mean prompt and response lengths of a step's down-sampled trajectories: their
    logged token sums over their count, else (a run of an older sgpo) the trained batch's."""
    logged = (
        DOWNSAMPLED_PROMPT_TOKENS_METRIC in record and DOWNSAMPLED_RESPONSE_TOKENS_METRIC in record
    )
    if not (downsampled and logged):
        return p, r
    return (
        _count(record, DOWNSAMPLED_PROMPT_TOKENS_METRIC) / downsampled,
        _count(record, DOWNSAMPLED_RESPONSE_TOKENS_METRIC) / downsampled,
    )


def _estimated_rollouts(total_tokens: float, per_rollout: float, batch_multiple: int | None) -> int:
    """The trained rollouts n a step's perf/total_num_tokens counts: n * per_rollout (the mean
    lengths' sum) plus, with batch_multiple, verl's padding sequences ((-n) mod batch_multiple
    of them, 128 tokens each), which the token count holds and the mean lengths do not. Of the
    n that could have made the count, the one whose total is nearest it; of a tie (rollouts
    as long as a padding sequence: the count cannot tell them apart), the most rollouts."""
    if not batch_multiple or total_tokens <= 0:
        return round(total_tokens / per_rollout)
    padding_tokens = PADDING_PROMPT_TOKENS + PADDING_RESPONSE_TOKENS
    fewest = math.floor((total_tokens - (batch_multiple - 1) * padding_tokens) / per_rollout)
    most = math.ceil(total_tokens / per_rollout)

    def miss(n: int) -> float:
        return abs(n * per_rollout + (-n) % batch_multiple * padding_tokens - total_tokens)

    return min(range(max(fewest, 1), max(most, 1) + 1), key=lambda n: (miss(n), -n))


def _rollouts(
    record: dict,
    step: int,
    p: float,
    r: float,
    rollouts_per_step: list[int] | None,
    batch_multiple: int | None,
) -> tuple[int, str]:
    if GENERATED_METRIC in record:  # skips on history: the dataset's order says nothing
        return round(_count(record, GENERATED_METRIC)), "logged"
    if rollouts_per_step is not None:
        if step < 1:
            raise DataError(f"step {step}: verl counts training steps from 1")
        return int(rollouts_per_step[(step - 1) % len(rollouts_per_step)]), "dataset"
    if TOTAL_TOKENS in record and p + r > 0:
        return _estimated_rollouts(_count(record, TOTAL_TOKENS), p + r, batch_multiple), "estimated"
    raise DataError(
        f"step {step}: no {TOTAL_TOKENS!r} to estimate the rollout count from; pass the exported "
        f"parquet and train_batch_size"
    )
