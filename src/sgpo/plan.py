"""Stage 2, plan: profile -> which queries train, with which group size, in which order.

plan.parquet has one PlanRow per profiled query (its fields are the columns); read_plan and
write_plan are the only readers and writers of the table.
Schema metadata (key "sgpo"): the profile's metadata plus the plan rule and the plan seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from sgpo import rundir
from sgpo.config import RunConfig
from sgpo.core.allocation import (
    KEPT,
    PlannedQuery,
    PlanRule,
    ProfiledQuery,
    is_trivial,
    plan_queries,
)
from sgpo.core.flops import ModelShape, inference_flops, train_flops
from sgpo.core.predict import (
    Allocation,
    Downsampling,
    Growth,
    QueryCost,
    predict_against_baseline,
    profile_costs,
)
from sgpo.errors import DataError
from sgpo.io import prepare_out_dir, read_table, write_table
from sgpo.runfiles import PLAN_FILE
from sgpo.validate import check_is_profile, check_plan_rows

if TYPE_CHECKING:
    from sgpo.tasks import TaskData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanRow:
    """One query of a plan: its profile and what the plan does with it."""

    query_id: str
    prompt: str
    answer: str
    difficulty: str
    k: int
    n_correct: int
    p_hat: float  # n_correct / k under the initial policy (the profile's measurement)
    group_size: int
    kept: bool
    reason: str  # kept | trivial | unsolvable
    rank: int  # curriculum position among kept queries, -1 if dropped
    prompt_tokens: int
    mean_response_tokens: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> PlanRow:
        return cls(**{name: row[name] for name in PLAN_COLUMNS})


PLAN_COLUMNS = tuple(f.name for f in fields(PlanRow))


def write_plan(path: Path, rows: list[PlanRow], meta: dict) -> None:
    write_table(path, [r.to_dict() for r in rows], meta)


def read_plan(path: Path) -> tuple[list[PlanRow], dict]:
    """A plan's rows, checked to be one the trainer can follow (sgpo.validate), and its
    metadata."""
    rows, meta = read_table(path)
    check_plan_rows(rows, path, PLAN_COLUMNS)
    return [PlanRow.from_dict(r) for r in rows], meta


def p_hat_estimates_p(meta: dict) -> bool:
    """False for a plan or profile from a profile stopped at each query's first success
    (profile.adaptive_stop): its p_hat is 1 / samples drawn, not an estimate of p."""
    return meta.get("adaptive_stop") != "first_success"


def check_replannable(estimates_p: bool, source: object, setting: str) -> None:
    """Re-planning starts from the plan's p_hat, so it needs one that estimates p."""
    if not estimates_p:
        raise DataError(
            f"{source}: planned from a profile stopped at each query's first success "
            f"(profile.adaptive_stop), whose p_hat is not an estimate of p; {setting} needs "
            "a full or both-outcomes profile"
        )


def plan_rule(config: RunConfig) -> PlanRule:
    return PlanRule(**config.plan.model_dump(exclude={"preset"}))


def build_plan(profile_rows: list[dict], rule: PlanRule, seed: int) -> list[PlanRow]:
    planned: dict[str, PlannedQuery] = {
        p.query_id: p
        for p in plan_queries(
            [ProfiledQuery(r["query_id"], r["n_correct"], r["k"]) for r in profile_rows], rule, seed
        )
    }
    rows = []
    for r in profile_rows:
        p = planned[r["query_id"]]
        rows.append(
            PlanRow(
                query_id=r["query_id"],
                prompt=r["prompt"],
                answer=r["answer"],
                difficulty=r["difficulty"],
                k=r["k"],
                n_correct=r["n_correct"],
                p_hat=p.success_rate,
                group_size=p.group_size,
                kept=p.kept,
                reason=p.reason,
                rank=p.rank,
                prompt_tokens=r["prompt_tokens"],
                mean_response_tokens=r["mean_response_tokens"],
            )
        )
    return rows


def plan_summary(
    rows: list[PlanRow],
    fixed_group_size: int,
    shape: ModelShape | None,
    epochs: float = 1.0,
    growth: Growth | None = None,
    downsampling: Downsampling | None = None,
    drop_dead: bool = False,
    *,
    rule: PlanRule,
) -> dict:
    """Counts (trivial as by `rule`: p_hat = 1 or above its trivial_above), rollouts per epoch
    against a fixed-G baseline, predicted FLOPs per epoch, and the predicted informative
    fraction and cost per informative rollout over `epochs` (groups grown until mixed with
    `growth`, or down-sampled; dead groups dropped with drop_dead). The
    prediction reads each query's (n_correct, samples drawn), not p_hat, so it holds for
    adaptive profiles too (core/predict.py)."""
    kept = [r for r in rows if r.kept]
    summary = {
        "queries": len(rows),
        "kept": len(kept),
        "trivial": sum(r.reason == "trivial" for r in rows),
        "unsolvable_dropped": sum(r.reason == "unsolvable" for r in rows),
        "unsolvable_kept": sum(r.kept and r.p_hat == 0 for r in rows),
        "trivial_kept": sum(r.kept and is_trivial(r.p_hat, rule) for r in rows),
        "rollouts_per_epoch": sum(r.group_size for r in kept),
        "baseline_group_size": fixed_group_size,
        "baseline_rollouts_per_epoch": fixed_group_size * len(rows),
    }
    if shape is not None:

        def epoch_flops(items: list[PlanRow], g_of: Callable[[PlanRow], int]) -> float:
            return sum(
                g_of(r)
                * (
                    inference_flops(shape, r.prompt_tokens, round(r.mean_response_tokens))
                    + train_flops(shape, r.prompt_tokens, round(r.mean_response_tokens))
                )
                for r in items
            )

        summary["predicted_flops_per_epoch"] = epoch_flops(kept, lambda r: r.group_size)
        summary["baseline_predicted_flops_per_epoch"] = epoch_flops(
            rows, lambda r: fixed_group_size
        )
    if shape is not None:
        summary |= {
            f"predicted_{k}": v
            for k, v in prediction(
                rows, fixed_group_size, shape, epochs, growth, downsampling, drop_dead
            ).items()
        }
    return summary


def prediction(
    rows: list[PlanRow],
    baseline_g: int,
    shape: ModelShape,
    epochs: float,
    growth: Growth | None = None,
    downsampling: Downsampling | None = None,
    drop_dead: bool = False,
) -> dict:
    """From the profile alone: informative fractions and cost per informative rollout against
    GRPO(G=baseline_g) in each currency, the profile charged over `epochs` (core/predict.py)."""
    queries = [
        QueryCost(
            r.n_correct,
            r.k,
            r.mean_response_tokens,
            inference_flops(shape, r.prompt_tokens, round(r.mean_response_tokens)),
            train_flops(shape, r.prompt_tokens, round(r.mean_response_tokens)),
        )
        for r in rows
    ]
    sizes = [r.group_size if r.kept else 0 for r in rows]
    plan = Allocation(sizes, growth, downsampling, drop_dead)
    return predict_against_baseline(queries, plan, baseline_g, profile_costs(queries), epochs)


def check_profile_matches(
    meta: dict,
    config: RunConfig,
    source: str,
    expected_model: str | None,
    all_settings: bool = False,
) -> TaskData:
    """A profile (or a plan's profile) made under another model or dataset, or of one shard
    only, would plan the wrong queries, and one that scored other samples would train on a
    wrong p_hat (check_profile_samples); to plan (all_settings) or with train.reuse_profile
    every setting of the samples must be this config's (check_profile_settings). Returns the
    config's task, loaded for the check."""
    from sgpo.tasks import data_identity, load_task

    shard = meta.get("shard")
    if shard:
        where = "/".join(map(str, shard)) if isinstance(shard, list) else repr(shard)
        raise DataError(
            f"{source}: field 'shard' is {where}: a profile of one shard (sgpo profile --shard) "
            "holds only that shard's queries; join all shards with `sgpo profile merge` and "
            "plan from the merged profile"
        )
    task = load_task(config.task, config.seed)
    # Only the training queries matter to a profile: an edited eval split needs none redone
    # (a profile from before train_queries was recorded is compared by its whole task).
    recorded = meta.get("train_queries")
    if meta.get("task") != task.source and (
        recorded is None or recorded != data_identity(task)["train"]
    ):
        raise DataError(
            f"{source}: field 'task' is {meta.get('task')!r} but the config's task is "
            f"{task.source!r}; re-run sgpo profile with this config"
        )
    if expected_model is not None and meta.get("model") != expected_model:
        raise DataError(
            f"{source}: field 'model' is {meta.get('model')!r} but the config's model is "
            f"{expected_model!r}; re-run sgpo profile with this config"
        )
    if all_settings or config.train.reuse_profile:
        check_profile_settings(meta, config, source, expected_model, config.train.reuse_profile)
    else:
        check_profile_samples(meta, config, source, expected_model)
    return task


def check_profile_covers(
    profile_rows: list[dict], meta: dict, task: TaskData, source: Path
) -> None:
    """A profile must hold every training query once: a profile chunk, or a profile with rows
    deleted, would plan (and train) a part of the data, the rest left out without a word."""
    from sgpo.profile import CHUNK_SIZE_KEY

    expected = {q.query_id for q in task.train}
    profiled = {r["query_id"] for r in profile_rows}
    missing, extra = expected - profiled, profiled - expected
    if missing or extra:
        said = [f"{len(missing)} of the task's {len(expected)} training queries are not in it"]
        if missing:
            said[-1] += f" (e.g. {sorted(missing)[:3]})"
        if extra:
            said.append(f"{len(extra)} of its queries are not the task's, e.g. {sorted(extra)[:3]}")
        if CHUNK_SIZE_KEY in meta:
            said.append("it is one chunk of a profile: plan from the whole profile.parquet")
        raise DataError(f"{source}: " + "; ".join(said))


# Config keys that change what a profile's samples are (verifier, prompt formatting, sampling)
# or how finely p_hat is measured (samples per query); with the task and model
# (check_profile_matches) they must be the profile's for sgpo plan and train.reuse_profile.
# Execution settings (sampling.batch_size, profile.chunk_size, profile.engine, device) and the
# seed (another draw of the same distribution) are left out; of the adaptive settings only
# what the plan's reading of p_hat depends on counts (check_profile_settings).
# Of them, what a sample is and how it is scored: a plan's p_hat means nothing under others,
# so training on a plan (or exporting it) needs these to be its profile's, whatever else changes.
SAMPLE_SETTINGS = (
    "task.verifier",
    "task.verifier_kwargs",
    "task.verifier_reward_range",
    "model.use_chat_template",
    "model.system_prompt",
    "model.prompt_template",
)
PROFILE_SETTINGS = (
    *SAMPLE_SETTINGS,
    "sampling.temperature",
    "sampling.top_p",
    "sampling.max_new_tokens",
    "profile.k",
)


def _settings(flat: dict, keys: tuple[str, ...] = PROFILE_SETTINGS) -> dict:
    """The `keys` entries of a flattened config (dotted keys)."""
    return {
        key: value
        for key, value in flat.items()
        if any(key == name or key.startswith(name + ".") for name in keys)
    }


def profiled_settings(meta: dict) -> dict:
    """The PROFILE_SETTINGS a profile was made with, from its metadata: the config keys it
    records ("inputs"; a key an older sgpo did not have yet takes its default), or for a
    profile written before that, its sampling fields and k only."""
    recorded = (meta.get("inputs") or {}).get("config")
    if isinstance(recorded, dict):
        defaults = rundir.flatten(RunConfig().model_dump(mode="json"))
        missing = {
            key: value
            for key, value in defaults.items()
            if not any(
                k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in recorded
            )
        }
        return _settings(missing | recorded)
    flat = {f"sampling.{k}": v for k, v in (meta.get("sampling") or {}).items()}
    if "k" in meta:
        flat["profile.k"] = meta["k"]
    return _settings(flat)


def check_profile_settings(
    meta: dict, config: RunConfig, source: str, expected_model: str | None, reuse: bool = False
) -> None:
    """Refuse a profile made with other PROFILE_SETTINGS than config's, other initial weights
    (model_sha256, for a local model), or stopped at each query's first success when config
    reads p_hat as an estimate of p (a full or both-outcomes profile serves a first-success
    config: its plan only tells solved from never-solved); names each key with both values."""
    differ = differing_settings(meta, config, expected_model, PROFILE_SETTINGS)
    wanted = config.profile
    if not p_hat_estimates_p(meta) and not (
        wanted.adaptive and wanted.adaptive_stop == "first_success"
    ):
        if wanted.adaptive:
            differ["profile.adaptive_stop"] = ("first_success", wanted.adaptive_stop)
        else:
            differ["profile.adaptive"] = (True, False)
    if differ:
        use = "its samples cannot be reused (train.reuse_profile)" if reuse else "not plannable"
        raise DataError(
            f"{source}: profiled with other settings than this config ({shown(differ)}); {use} "
            "with this config: re-run sgpo profile (and sgpo plan) with it, or set these keys to "
            "the profile's values"
        )


def check_profile_samples(
    meta: dict, config: RunConfig, source: str, expected_model: str | None
) -> None:
    """Refuse a plan (or profile) whose samples config would draw or score otherwise
    (SAMPLE_SETTINGS: verifier, prompt formatting) or from other initial weights."""
    differ = differing_settings(meta, config, expected_model, SAMPLE_SETTINGS)
    if differ:
        raise DataError(
            f"{source}: profiled with other settings than this config ({shown(differ)}): its "
            "p_hat was measured on other samples or scores; re-run sgpo profile and sgpo plan "
            "with this config, or set these keys to the profile's values"
        )


def differing_settings(
    meta: dict, config: RunConfig, expected_model: str | None, keys: tuple[str, ...]
) -> dict[str, tuple]:
    """{key: (profile's value, config's value)} for the `keys` that differ, and model_sha256
    when expected_model (a local model) holds other weights than the profile recorded."""
    profiled = _settings(profiled_settings(meta), keys)
    current = _settings(rundir.flatten(config.model_dump(mode="json")), keys)
    if "inputs" not in meta:  # an older profile: only what it recorded can be compared
        current = {k: v for k, v in current.items() if k in profiled}
    differ = {
        key: (profiled.get(key), current.get(key))
        for key in sorted(profiled.keys() | current.keys())
        if profiled.get(key) != current.get(key)
    }
    recorded_sha = (meta.get("inputs") or {}).get("model_sha256")
    if recorded_sha and expected_model is not None:
        current_sha = rundir.weights_sha256(expected_model)
        if current_sha and current_sha != recorded_sha:
            differ["model_sha256"] = (recorded_sha, current_sha)
    return differ


def shown(differ: dict[str, tuple]) -> str:
    return "; ".join(f"{k}: profile {a!r}, config {b!r}" for k, (a, b) in differ.items())


def check_something_kept(rows: list[PlanRow], rule: PlanRule, source: object) -> None:
    """A plan that keeps no query trains nothing: say why, and which settings keep some."""
    if any(r.kept for r in rows):
        return
    trivial = sum(r.reason == "trivial" for r in rows)
    unsolvable = sum(r.reason == "unsolvable" for r in rows)
    raise DataError(
        f"{source}: the plan keeps none of the {len(rows)} profiled queries: {trivial} trivial "
        f"(p_hat above plan.trivial_above = {rule.trivial_above}, or 1) dropped by "
        f"plan.drop_trivial, {unsolvable} unsolvable (never solved) dropped by "
        f"plan.unsolvable_keep_fraction = {rule.unsolvable_keep_fraction}; set "
        "plan.drop_trivial=false or raise plan.trivial_keep_fraction / "
        "plan.unsolvable_keep_fraction, or profile other queries"
    )


# Everything sgpo plan may create (and so later replace) in its output directory.
PLAN_OUTPUTS = (PLAN_FILE, "p_hat_hist.png", "group_size_hist.png", "verl_train.parquet")


def run_plan(
    config: RunConfig, profile_path: Path, out_dir: Path, overwrite: bool = False
) -> tuple[Path, dict]:
    """Plan into out_dir (replacing only what sgpo wrote there), with the directory locked."""
    rundir.claim_outputs(out_dir, PLAN_OUTPUTS)
    with rundir.locked(out_dir, "plan"):
        return _run_plan(config, profile_path, out_dir, overwrite)


def _run_plan(
    config: RunConfig, profile_path: Path, out_dir: Path, overwrite: bool = False
) -> tuple[Path, dict]:
    from sgpo.models import model_source

    prepare_out_dir(out_dir, overwrite, None, PLAN_FILE)
    profile_rows, meta = read_table(profile_path)
    check_is_profile(profile_rows, meta, profile_path)
    source = model_source(config)
    task = check_profile_matches(meta, config, str(profile_path), source, all_settings=True)
    check_profile_covers(profile_rows, meta, task, profile_path)
    rule = plan_rule(config)
    rows = build_plan(profile_rows, rule, config.seed)
    check_something_kept(rows, rule, profile_path)
    errors, timeouts = meta.get("verifier_errors", 0), meta.get("verifier_timeouts", 0)
    if errors or timeouts:  # the profile warned too, but its output may be long gone
        log.warning(
            "%s: %d of its %d verifier calls raised and %d timed out, each scored 0: p_hat is "
            "too low where they did, and such queries may be dropped as never solved; fix the "
            "verifier and profile again if that was not a wrong answer",
            profile_path,
            errors,
            sum(r["k"] for r in profile_rows),
            timeouts,
        )
    shape = ModelShape(**meta["shape"]) if "shape" in meta else None
    kept_rollouts = sum(r.group_size for r in rows if r.kept)
    train = config.train
    # The epochs `sgpo train` will run with this config: steps x rollout_budget rollouts.
    epochs = train.steps * train.rollout_budget / max(kept_rollouts, 1)
    growth = (
        Growth(train.grow_max, train.grow_round, train.grow_train == "balanced")
        if train.grow_max
        else None
    )
    downsampling = (
        Downsampling(train.downsample_to, train.downsample_min_share)
        if train.downsample_to
        else None
    )
    summary = plan_summary(
        rows,
        train.group_size,
        shape,
        epochs,
        growth,
        downsampling,
        drop_dead=train.drop_equal_groups,
        rule=rule,
    )
    if shape is not None and not p_hat_estimates_p(meta) and not meta.get("full_share"):
        # Its few samples per query pin down the spread of p the prediction rests on far less
        # closely than a full profile's (BENCHMARKS.md, "Prediction").
        log.warning(
            "%s: first-success profile of %d queries: the predicted informative fraction is "
            "2-7x noisier than a full profile's; profile.full_share (e.g. 0.1) draws a share "
            "of the queries in full for a closer one (BENCHMARKS.md, 'Prediction')",
            profile_path,
            len(rows),
        )
    extra = {
        "rule": asdict(rule),
        "plan_seed": config.seed,
        "summary": summary,
        "profile_flops": sum(r["flops"] for r in profile_rows),
    }
    write_plan(out_dir / PLAN_FILE, rows, meta | extra)
    return out_dir / PLAN_FILE, summary


def kept_in_order(rows: list[PlanRow]) -> list[PlanRow]:
    return sorted((r for r in rows if r.reason == KEPT), key=lambda r: r.rank)
