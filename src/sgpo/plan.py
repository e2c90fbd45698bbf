"""Stage 2, plan: profile -> which queries train, with which group size, in which order.

plan.parquet has one PlanRow per profiled query (its fields are the columns); read_plan and
write_plan are the only readers and writers of the table.
Schema metadata (key "sgpo"): the profile's metadata plus the plan rule and the plan seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Set
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sgpo import rundir
from sgpo.config import RunConfig
from sgpo.core.allocation import (
    KEPT,
    PlannedQuery,
    PlanRule,
    ProfiledQuery,
    is_trivial,
    plan_queries,
    rewards_varied,
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
from sgpo.profile_match import check_profile_covers, check_profile_matches, p_hat_estimates_p
from sgpo.runfiles import PLAN_FILE, PLAN_PLOTS, PROFILE_CHUNKS_DIR
from sgpo.validate import check_has_metadata, check_is_profile, check_plan_meta, check_plan_rows

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
    # The profile's samples' rewards were not all equal (a graded verifier's partial credit
    # can vary at p_hat 0 or 1, and such a query is kept). Plans written before the column
    # read what pass/fail rewards imply, 0 < n_correct < k.
    rewards_vary: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> PlanRow:
        values = {name: row[name] for name in PLAN_COLUMNS}
        varied = rewards_varied(row["n_correct"], row["k"], row.get("rewards_vary"))
        return cls(**values, rewards_vary=varied)


# The columns a plan must have (rewards_vary, added later, may be missing).
PLAN_COLUMNS = tuple(f.name for f in fields(PlanRow) if f.name != "rewards_vary")


def write_plan(path: Path, rows: list[PlanRow], meta: dict) -> None:
    write_table(path, [r.to_dict() for r in rows], meta)


def read_plan(path: Path) -> tuple[list[PlanRow], dict]:
    """A plan's rows, checked to be one the trainer can follow (sgpo.validate), and its
    metadata."""
    rows, meta = read_table(path)
    check_has_metadata(meta, path, "plan")
    check_plan_rows(rows, path, PLAN_COLUMNS)
    check_plan_meta(meta, path)
    return [PlanRow.from_dict(r) for r in rows], meta


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
    profiled = [
        ProfiledQuery(r["query_id"], r["n_correct"], r["k"], r.get("rewards_vary"))
        for r in profile_rows
    ]
    planned: dict[str, PlannedQuery] = {p.query_id: p for p in plan_queries(profiled, rule, seed)}
    rows = []
    for r, q in zip(profile_rows, profiled, strict=True):
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
                rewards_vary=q.varied,
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
    """Counts (trivial as by `rule`: p_hat = 1 or above its trivial_above; varied_kept: kept
    at p_hat 0 or 1 because their rewards varied, a graded verifier's), rollouts per epoch
    against a fixed-G baseline, each currency's predicted cost of one epoch, and the predicted
    informative fraction and cost per informative rollout over `epochs` (groups grown until
    mixed with
    `growth`, or down-sampled; dead groups dropped with drop_dead). The
    prediction reads each query's (n_correct, samples drawn), not p_hat, so it holds for
    adaptive profiles too (core/predict.py)."""
    kept = [r for r in rows if r.kept]
    summary = {
        "queries": len(rows),
        "kept": len(kept),
        "trivial": sum(r.reason == "trivial" for r in rows),
        "unsolvable_dropped": sum(r.reason == "unsolvable" for r in rows),
        # kept never or always solved: by the rule's shares (or drop_trivial off), and for
        # rewards that varied (a graded verifier's partial credit)
        "unsolvable_kept": sum(
            r.kept and r.p_hat == 0 and not kept_for_varied_rewards(r, rule) for r in rows
        ),
        "trivial_kept": sum(
            r.kept and is_trivial(r.p_hat, rule) and not kept_for_varied_rewards(r, rule)
            for r in rows
        ),
        "varied_kept": sum(kept_for_varied_rewards(r, rule) for r in rows),
        "rollouts_per_epoch": sum(r.group_size for r in kept),
        "baseline_group_size": fixed_group_size,
        "baseline_rollouts_per_epoch": fixed_group_size * len(rows),
    }
    if shape is not None:
        summary |= {
            f"predicted_{k}": v
            for k, v in prediction(
                rows, fixed_group_size, shape, epochs, growth, downsampling, drop_dead
            ).items()
        }
    return summary


def kept_for_varied_rewards(row: PlanRow, rule: PlanRule) -> bool:
    """Whether a kept query is kept because its rewards varied: never solved where the rule
    keeps only a share of such queries, or always solved where it drops them (drop_trivial, at
    most trivial_above)."""
    if not (row.kept and row.rewards_vary):
        return False
    if row.p_hat == 0.0:
        return rule.unsolvable_keep_fraction < 1.0
    dropped_if_equal = rule.drop_trivial and rule.trivial_keep_fraction < 1.0
    return row.p_hat == 1.0 and dropped_if_equal and not is_trivial(row.p_hat, rule, True)


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
PLAN_OUTPUTS = (PLAN_FILE, *PLAN_PLOTS, "verl_train.parquet")


def run_plan(
    config: RunConfig,
    profile_path: Path,
    out_dir: Path,
    overwrite: bool = False,
    then: Callable[[Path], None] | None = None,
    trained_on: bool = False,
) -> tuple[Path, dict]:
    """Plan into out_dir (replacing only what sgpo wrote there), with the directory locked;
    `then` writes what goes beside the plan (the CLI's histograms, a verl export) under the
    same lock, given the plan's path. trained_on: out_dir's plan has a run trained with it (a
    demo resumed), which must go on with that very file: kept where the config plans the same
    queries, groups and order, else refused before anything is written."""
    with rundir.claimed(out_dir, PLAN_OUTPUTS, "plan"):
        path, summary = _run_plan(config, profile_path, out_dir, overwrite, trained_on)
        if then is not None:
            then(path)
        return path, summary


def _run_plan(
    config: RunConfig,
    profile_path: Path,
    out_dir: Path,
    overwrite: bool = False,
    trained_on: bool = False,
) -> tuple[Path, dict]:
    from sgpo.models import model_source

    prepare_out_dir(out_dir, overwrite, None, PLAN_FILE)
    if not profile_path.exists() and (profile_path.parent / PROFILE_CHUNKS_DIR).is_dir():
        raise FileNotFoundError(
            f"{profile_path}: no such file: the profile in {profile_path.parent} was "
            "interrupted; finish it with sgpo profile --resume"
        )
    profile_rows, meta = read_table(profile_path)
    check_is_profile(profile_rows, meta, profile_path)
    if any(r.get("rewards_vary") is None for r in profile_rows):  # an older sgpo's profile
        from sgpo.profile import fill_rewards_vary_from_samples

        fill_rewards_vary_from_samples(profile_rows, meta)
    source = model_source(config)
    task = check_profile_matches(meta, config, str(profile_path), source, all_settings=True)
    check_profile_covers(profile_rows, meta, task, profile_path)
    rule = plan_rule(config)
    rows = build_plan(profile_rows, rule, config.seed)
    check_something_kept(rows, rule, profile_path)
    warn_of_group_sizes(rows, config.train.rollout_budget, out_dir / PLAN_FILE)
    drawn = sum(r["k"] for r in profile_rows)  # the profile's samples
    errors, timeouts = meta.get("verifier_errors", 0), meta.get("verifier_timeouts", 0)
    if errors or timeouts:  # the profile warned too, but its output may be long gone
        log.warning(
            "%s: %d of its %d verifier calls failed (raised, or returned no reward in range) "
            "and %d timed out, each scored 0: p_hat is "
            "too low where they did, and such queries may be dropped as never solved; fix the "
            "verifier and profile again if that was not a wrong answer",
            profile_path,
            errors,
            drawn,
            timeouts,
        )
    from sgpo.profile import TRUNCATED_KEY, warn_of_cut_off

    if TRUNCATED_KEY in meta:  # the profile warned too, but its output may be long gone
        max_new_tokens = (meta.get("sampling") or {}).get("max_new_tokens", "?")
        warn_of_cut_off(profile_path, meta[TRUNCATED_KEY], drawn, max_new_tokens)
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
    if shape is not None and summary["varied_kept"]:
        log.warning(
            "%s: %d kept queries were never or always solved but their partial credit varied; "
            "the predicted informative fraction counts pass/fail outcomes, so it counts their "
            "groups as uninformative (a lower bound for a graded verifier)",
            profile_path,
            summary["varied_kept"],
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
    path = out_dir / PLAN_FILE
    if trained_on and path.exists():
        trained = read_plan(path)[0]
        if trained == rows:  # its metadata may differ (the epochs train.steps gives)
            return path, summary
        changed = sum(a != b for a, b in zip(trained, rows, strict=False))
        changed += abs(len(trained) - len(rows))
        raise DataError(
            f"{path}: this config plans {changed} of its queries otherwise (filter, G or order) "
            "than the plan the run there was trained with; a resume goes on with the settings "
            "it started with: give them again, or start over with --overwrite"
        )
    extra = {
        "rule": asdict(rule),
        "plan_seed": config.seed,
        "summary": summary,
        "profile_flops": sum(r["flops"] for r in profile_rows),
    }
    write_plan(path, rows, meta | extra)
    return path, summary


def warn_unplanned(rows: list[PlanRow], train_ids: Set[str], source: object) -> None:
    """A plan cut by hand, say, may leave training queries without a row: allowed (sgpo train
    and export-verl follow it), but said, since those queries are neither trained nor counted
    among the plan's dropped ones."""
    unplanned = len(train_ids - {r.query_id for r in rows})
    if unplanned:
        log.warning(
            "%s: %d of the task's %d training queries have no row in the plan (kept or "
            "dropped): they are not trained, nor counted among the plan's dropped queries",
            source,
            unplanned,
            len(train_ids),
        )


def warn_of_group_sizes(rows: list[PlanRow], rollout_budget: int, source: object) -> None:
    """Kept group sizes that train otherwise than a plan means (allowed: sgpo train follows
    them): a group of one has no advantage, so its generation teaches nothing; a group larger
    than train.rollout_budget makes a step of its own, beyond the budget."""
    kept = [r for r in rows if r.kept]
    for odd, what in (
        (
            [r.query_id for r in kept if r.group_size == 1],
            "group_size 1: a group of one has no advantage, so its rollouts teach nothing",
        ),
        (
            [r.query_id for r in kept if r.group_size > rollout_budget],
            f"a group_size above train.rollout_budget ({rollout_budget}): each trains as a "
            "step of its own, that large",
        ),
    ):
        if odd:
            log.warning("%s: %d kept queries (e.g. %s) have %s", source, len(odd), odd[:3], what)


def kept_in_order(rows: list[PlanRow]) -> list[PlanRow]:
    return sorted((r for r in rows if r.reason == KEPT), key=lambda r: r.rank)
