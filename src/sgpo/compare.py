"""sgpo compare: several methods, same task, same initial model, same held-out set, same
optimizer and rollout budget per step, compared at equal total FLOPs.

Protocol (also written into compare.md):
1. For each seed, the baseline (GRPO, G=8 by default) trains for its configured steps; what
   it spends is that seed's budget (or `budget_flops` when given), in `budget_currency`: this
   trainer's FLOPs (default), train-all FLOPs or generated tokens.
2. Every other method trains on the same seed until its cumulative cost in that currency --
   profiling included for sGPO -- reaches the budget (train.max_total_flops,
   max_total_flops_train_all or max_generated_tokens; steps is only a safety cap).
3. Final accuracy of a run = mean of its last `final_window` held-out evaluations (sampled
   accuracy), which damps the noise of a single evaluation. target_acc = the baseline's final
   accuracy, mean over seeds.
4. Cost to target, in each currency (this trainer's FLOPs, the FLOPs of a trainer that trains
   every rollout, generated tokens; profiling always included): average each method's
   evaluation curve over seeds (accuracy and cumulative cost at each evaluation index, up to
   the shortest seed's last evaluation: seeds stopped by the budget at different steps are cut
   to the common length, so a method whose final accuracy (each seed's own last window) only
   just clears the target can still read null), smooth it with a trailing mean over
   `final_window` evaluations, and take the cost at the first point at or above target_acc;
   null if never. ratio_vs_grpo[_train_all|_tokens] = the baseline's total cost in that
   currency / this method's cost to reach the target.
5. Every method trains on the same budget in one currency; the other currencies are
   measured on the same runs (the update is identical whether or not zero-advantage rollouts
   go through the training passes under token-mean, so train-all FLOPs are exact accounting;
   except on a step with no non-zero advantage, where this trainer takes no optimizer step
   and a train-all trainer a zero-gradient one that AdamW's momentum still moves).
6. A second read of the same curves, beside the ratio (sgpo.core.curves): each seed-averaged
   curve is fitted with a(c) = A - B exp(-c / tau); fit_speedup_vs_grpo[_train_all|_tokens] =
   the baseline's cost to 95% of its fitted gain / the method's cost to the same accuracy on
   its own fit (within the costs it was evaluated at; null if never or if the fit does not
   rise; a fit that rises between its first two evaluations is read at the second), with a
   5-95% interval over paired resamples of the seeds. compare.json keeps every evaluation
   (eval_curves).

Runs are written to DIR/runs/<method>/seed-<s>/; a run with a summary.json is reused and one
that was interrupted resumes from its checkpoint, so an interrupted compare continues where it
stopped, but only with the config the method has now (its config.yaml: a finished run trained
with another is refused, naming the keys; an unfinished one is trained again). A run that fails
on its data (a plan that keeps nothing, a diverged run, a refused reuse) does not stop the
others: compare.json and compare.md hold the methods that ran on every seed whose baseline ran,
name the failed runs ("failed"), and the command then exits with an error naming them.

The methods it trains by default are sgpo.methods.DEFAULT_METHODS; sgpo.side_by_side puts the
demo's run beside GRPO at the same FLOPs with the reads here.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from sgpo import checkpoint
from sgpo.config import (
    ConfigError,
    RunConfig,
    load_config,
    override_key,
    refuse_float16_training,
    validation_lines,
)
from sgpo.core.curves import (
    GAIN_SHARE,
    SaturatingFit,
    bootstrap_speedup,
    fit_saturating,
    fit_speedup,
    gain_level,
    mean_curve,
)
from sgpo.errors import DataError, NonFiniteError
from sgpo.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from sgpo.methods import DEFAULT_METHODS
from sgpo.profile_match import SCORING_SETTINGS, settings_of
from sgpo.rundir import (
    NEUTRAL_KEYS,
    changes,
    claimed,
    first_of,
    flatten,
    is_one_of,
)
from sgpo.runfiles import CONFIG_FILE, METRICS_FILE, PLAN_FILE, SUMMARY_FILE
from sgpo.tasks import verifier_spec
from sgpo.train_state import config_changes
from sgpo.wiring import check_engine_installed
from sgpo.yaml_dialect import read_yaml_mapping

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rich.table import Table


# Runs at equal budget stop when it is spent; train.steps is then only a safety cap, this many
# times the baseline's steps.
STEPS_CAP_FACTOR = 10


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        description="Run config YAML every method starts from (relative to this file)"
    )
    overrides: list[str] = Field(default_factory=list)
    methods: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_METHODS))
    baseline: str = "grpo-g8"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # The currency of the equal budget (see CURRENCIES); budget_flops needs "flops".
    budget_currency: Literal["flops", "flops_train_all", "tokens"] = "flops"
    budget_flops: float | None = Field(None, gt=0)
    final_window: int = Field(3, ge=1)
    # Safety cap on steps for capped methods, as a multiple of the baseline's steps.
    max_steps_factor: int = Field(STEPS_CAP_FACTOR, ge=1)

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if self.baseline not in self.methods:
            raise ValueError(
                f"baseline {self.baseline!r} is not one of the methods {list(self.methods)}"
            )
        if self.budget_flops is not None and self.budget_currency != "flops":
            raise ValueError(
                f"budget_flops is a budget in FLOPs; budget_currency is {self.budget_currency!r}"
            )
        return self

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_are_a_list(cls, seeds: object) -> object:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            raise ValueError(
                f"seeds is the list of seeds to run, e.g. [0, 1, 2], not a count ({seeds}); "
                "the command line's --seeds N runs N seeds from --first-seed"
            )
        return seeds

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_by_name(cls, methods: object) -> object:
        """A list of built-in methods' names picks them (sgpo.methods.DEFAULT_METHODS)."""
        if not isinstance(methods, list):
            return methods
        unknown = [m for m in methods if not isinstance(m, str) or m not in DEFAULT_METHODS]
        if unknown:
            raise ValueError(
                f"methods maps each method's name to its overrides ({{name: [key=value, ...]}}); "
                f"a list names built-in methods only, and {unknown} are none of them: "
                f"{list(DEFAULT_METHODS)}"
            )
        return {m: DEFAULT_METHODS[m] for m in methods}

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, seeds: list[int]) -> list[int]:
        if any(seed < 0 for seed in seeds):
            raise ValueError(f"seeds must be >= 0, got {seeds}")
        # a repeated seed would train into the same run directory and count twice
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must differ from one another, got {seeds}")
        return seeds


def load_compare_config(
    path: Path,
    seeds: int | None = None,
    first_seed: int = 0,
    methods: list[str] | None = None,
    budget_currency: str | None = None,
    overrides: list[str] | None = None,
) -> tuple[CompareConfig, Path]:
    """The compare config; seeds = first_seed .. first_seed + seeds - 1 when seeds is given,
    only the named methods (plus the baseline) when methods is given, budget_currency
    replacing the file's when given, and overrides applied to every method after the file's
    own (before each method's)."""
    tree = read_yaml_mapping(path)
    if budget_currency is not None:
        tree["budget_currency"] = budget_currency
    if seeds is not None:  # validated like the file's own (at least one, none negative)
        tree["seeds"] = list(range(first_seed, first_seed + seeds))
    try:
        cfg = CompareConfig.model_validate(tree)
    except ValidationError as e:
        where = path if seeds is None else f"{path} (seeds={seeds}, first_seed={first_seed})"
        lines = validation_lines(e, schema=CompareConfig)
        if set(tree) & set(RunConfig.model_fields) - set(CompareConfig.model_fields):
            lines += "\n  (its keys are a run config's: sgpo train and sgpo demo take it)"
        raise ConfigError(f"{where}: invalid compare config\n{lines}") from e
    if methods:
        unknown = sorted(set(methods) - set(cfg.methods))
        if unknown:
            raise ConfigError(f"{path}: unknown methods {unknown}; known: {list(cfg.methods)}")
        keep = {cfg.baseline, *methods}
        cfg.methods = {m: o for m, o in cfg.methods.items() if m in keep}
    for item in overrides or []:  # a method's own setting of the key is applied after it
        key = override_key(item)
        own = [m for m, items in cfg.methods.items() if key in map(override_key, items)]
        if own:
            tqdm.write(
                f"--set {item}: not for {', '.join(own)}, which set {key} themselves",
                file=sys.stderr,
            )
    cfg.overrides += overrides or []
    return cfg, (path.parent / cfg.base).resolve()


def method_config(
    cfg: CompareConfig, base: Path, method: str, seed: int, extra: list[str]
) -> RunConfig:
    return load_config(base, [*cfg.overrides, *cfg.methods[method], f"seed={seed}", *extra])


def _keyed(section: BaseModel, added: str) -> dict:
    """A config section as part of a profile's key, with a setting added since left out while
    it holds its default, so that profiles keyed before it existed are found again."""
    value = getattr(section, added)
    unset = value == type(section).model_fields[added].default
    return section.model_dump(mode="json", exclude={added}) | ({} if unset else {added: value})


def profile_dir(config: RunConfig, root: Path) -> Path:
    """Methods that profile the same model on the same data the same way share one profile."""
    import hashlib

    spec = {
        "seed": config.seed,
        "model": config.model.model_dump(mode="json"),
        "task": _keyed(config.task, "success_threshold"),
        "sampling": config.sampling.model_dump(mode="json"),
        "profile": _keyed(config.profile, "full_share"),
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"seed-{config.seed}-{digest}"


def seed_run_dir(out_dir: Path, method: str, seed: int) -> Path:
    """Where a compare in out_dir writes one method's run of one seed."""
    return out_dir / "runs" / method / f"seed-{seed}"


def seed_of(run_dir: Path) -> int | None:
    """The seed of a run directory seed_run_dir names; None for another folder."""
    number = run_dir.name.removeprefix("seed-")
    return int(number) if number != run_dir.name and number.isdigit() else None


def run_method(
    config: RunConfig, run_dir: Path, profiles: Path, label: str, plan_steps: int | None = None
) -> dict:
    """Profile (shared) and plan when the method needs them, then train; reuse a finished run
    trained with the same config. What it does is said first, on one line after `label`.
    plan_steps: the steps the plan's predictions spread the profile over, when config's
    train.steps is only a cap (a run at equal budget stops when the budget is spent)."""
    from sgpo.plan import run_plan
    from sgpo.profile import PROFILE_FILE, run_profile
    from sgpo.train import run_train

    if (run_dir / SUMMARY_FILE).exists():
        neutral = check_reusable(config, run_dir)
        under = f" (with {first_of(neutral, 3)}, which do not change its result)" if neutral else ""
        tqdm.write(f"{label}: finished earlier with this config, reused{under}", file=sys.stderr)
        return read_json(run_dir / SUMMARY_FILE)
    plan = run_dir / PLAN_FILE
    changes = config_changes(config, run_dir) if checkpoint.has_state(run_dir) else None
    if changes is not None and all(
        is_one_of(change.split(":")[0], RESUMED_UNDER) for change in changes
    ):
        # interrupted with this config (up to how it is checkpointed or logged): go on from
        # its checkpoint, with the plan it has
        under = f" with {first_of(changes, 3)}, which do not change its result" if changes else ""
        tqdm.write(f"{label}: interrupted earlier, resumed{under}", file=sys.stderr)
        return run_train(config, run_dir, plan if config.train.uses_plan else None, resume=True)
    again = f" (interrupted earlier with {first_of(changes, 3)}: trained again)" if changes else ""
    tqdm.write(f"{label}: training{again}", file=sys.stderr)
    if config.train.uses_plan:
        shared = profile_dir(config, profiles)
        if not (shared / PROFILE_FILE).exists():
            run_profile(config, shared, resume=True)
        planning = config
        if plan_steps is not None:
            planning = config.model_copy(
                update={"train": config.train.model_copy(update={"steps": plan_steps})}
            )
        run_plan(planning, shared / PROFILE_FILE, run_dir, overwrite=True)
    return run_train(config, run_dir, plan, overwrite=True)


# What an interrupted run may be resumed under: settings that change how it is checkpointed,
# logged or batched, not its result (its length, evaluations and engines do: it is trained
# again, so that no run mixes two).
RESUMED_UNDER = tuple(
    key
    for key in NEUTRAL_KEYS
    if key != "train.eval_every"
    and not key.startswith(("train.steps", "train.max_", "eval.", "profile.engine", "profile.vllm"))
)


def check_reusable(config: RunConfig, run_dir: Path) -> list[str]:
    """Refuse to reuse the finished run in run_dir unless its config.yaml is what the trainer
    would write for config, up to settings that do not change a run's result (RESUMED_UNDER:
    how it is checkpointed, logged or batched; returned), and its data and model weights are
    the ones config names now: its result would be reported as this config's."""
    advice = f"choose another output directory, or delete {run_dir} to train it again"
    changes = config_changes(config, run_dir)
    if changes is None:
        raise ConfigError(
            f"{run_dir}: a finished run whose {CONFIG_FILE} is missing or not a config this "
            f"sgpo can read, so what it was trained with is unknown; {advice}"
        )
    neutral = [c for c in changes if is_one_of(c.split(":")[0], RESUMED_UNDER)]
    if changed := [c for c in changes if c not in neutral]:
        raise ConfigError(
            f"{run_dir}: this finished run was trained with another config than the one "
            f"compare would train now (old -> new): {first_of(changed)}; {advice}"
        )
    changes = input_changes(config, read_json(run_dir / SUMMARY_FILE).get("inputs"))
    if changes is None:
        log.warning(
            "%s was trained by an sgpo that did not record its data and model weights: a "
            "change to them since cannot be detected, and the run is reused",
            run_dir,
        )
    elif changes:
        raise DataError(
            f"{run_dir}: this finished run was trained on other inputs than compare would "
            f"train on now: {'; '.join(changes)}; {advice}"
        )
    return neutral


def input_changes(config: RunConfig, recorded: dict | None) -> list[str] | None:
    """How the data and model weights config names differ from those a run recorded in its
    summary.json ("inputs"); None when it recorded none."""
    from sgpo.models import model_source
    from sgpo.rundir import VERIFIER_CODE_KEY, weights_sha256
    from sgpo.tasks import data_identity, load_run_task, verifier_spec
    from sgpo.train_state import data_changes
    from sgpo.verify import verifier_code_sha256

    if not isinstance(recorded, dict):
        return None
    task = load_run_task(config)
    changes = data_changes(task, recorded.get("data") or {}, data_identity(task))
    weights = weights_sha256(model_source(config))
    if recorded.get("model_sha256") != weights:
        changes.append(
            f"the model's weights changed: sha256 {str(recorded.get('model_sha256'))[:12]} -> "
            f"{str(weights)[:12]}"
        )
    if VERIFIER_CODE_KEY in recorded:  # an older sgpo's run did not record it
        code = verifier_code_sha256(verifier_spec(config.task))
        if recorded[VERIFIER_CODE_KEY] != code:
            changes.append(
                f"the verifier's code changed: sha256 {str(recorded[VERIFIER_CODE_KEY])[:12]} -> "
                f"{str(code)[:12]}"
            )
    return changes


@dataclass(frozen=True)
class Currency:
    """One currency a method's cost is reported in, and the files' names for it."""

    metric_field: str  # cumulative cost in metrics.jsonl
    summary_field: str  # total cost in summary.json (and compare.json)
    to_target_key: str  # compare.json: cost to reach the target
    ratio_key: str  # compare.json: the baseline's total / this method's cost to target
    cap_key: str  # the run config's cap, when the budget is in this currency
    label: str

    @property
    def fit_speedup_key(self) -> str:
        """compare.json: the baseline's cost to 95% of its fitted gain / this method's."""
        return self.ratio_key.replace("ratio_", "fit_speedup_", 1)


# This trainer's FLOPs (zero-advantage backward skipped), the FLOPs of a trainer that trains
# every rollout (verl, TRL, OpenRLHF), and generated tokens (70-90% of GPU step time); keyed
# by budget_currency.
CURRENCIES = {
    "flops": Currency(
        "flops_total_cum",
        "total_flops",
        "flops_to_target",
        "ratio_vs_grpo",
        "train.max_total_flops",
        "FLOPs (zero-adv. backward skipped)",
    ),
    "flops_train_all": Currency(
        "flops_train_all_cum",
        "total_flops_train_all",
        "train_all_flops_to_target",
        "ratio_vs_grpo_train_all",
        "train.max_total_flops_train_all",
        "FLOPs (train every rollout)",
    ),
    "tokens": Currency(
        "generated_tokens_cum",
        "generated_tokens",
        "tokens_to_target",
        "ratio_vs_grpo_tokens",
        "train.max_generated_tokens",
        "generated tokens",
    ),
}


def eval_curve(run_dir: Path, cost: str = "flops_total_cum") -> list[tuple[float, float]]:
    """(cumulative cost, sampled held-out accuracy) at each evaluation of a run."""
    return [(r[cost], r["eval_acc"]) for r in read_jsonl(run_dir / METRICS_FILE) if "eval_acc" in r]


def evaluations(run_dir: Path) -> list[dict]:
    """A run's held-out evaluations with their step and cumulative cost in every currency:
    compare.json keeps them so that any read of the curves can be redone from that file."""
    fields = ["step", "eval_acc", *(c.metric_field for c in CURRENCIES.values())]
    return [
        {f: r[f] for f in fields} for r in read_jsonl(run_dir / METRICS_FILE) if "eval_acc" in r
    ]


def trained_fraction(summaries: list[dict]) -> float | None:
    """Mean over seeds of the share of generated rollouts given a training pass; None where a
    run's summary (an older sgpo's) does not count its trained rollouts."""
    if any(s.get("trained_rollouts") is None for s in summaries):  # absent, or null (resumed)
        return None
    return statistics.fmean(
        s["trained_rollouts"] / s["rollouts"] if s["rollouts"] else 0.0 for s in summaries
    )


def wasted_fraction(run_dir: Path) -> float:
    """Share of a run's total FLOPs spent generating rollouts in groups with zero advantage
    (they cost inference and teach nothing; their training pass is skipped anyway)."""
    records = read_jsonl(run_dir / METRICS_FILE)
    wasted, previous = 0.0, records[0]["flops_rollout_cum"]
    for r in records[1:]:
        wasted += (r["flops_rollout_cum"] - previous) * (1.0 - r["informative_fraction"])
        previous = r["flops_rollout_cum"]
    return wasted / records[-1]["flops_total_cum"]


def final_accuracy(curve: list[tuple[float, float]], window: int) -> float:
    tail = curve[-window:]
    return sum(acc for _, acc in tail) / len(tail)


def cost_to_target(curve: list[tuple[float, float]], target: float, window: int) -> float | None:
    for i in range(len(curve)):
        tail = curve[max(0, i - window + 1) : i + 1]
        full = len(tail) == window or i == len(curve) - 1
        # the tolerance: the baseline must reach its own final accuracy despite rounding
        if full and sum(acc for _, acc in tail) / len(tail) >= target - 1e-9:
            return curve[i][0]
    return None


def predicted_informative_fraction(run_dirs: list[Path]) -> float | None:
    """What `sgpo plan` predicted, from the profile alone, for the informative fraction of a
    method's plan (mean over seeds); None for methods trained without a plan."""
    from sgpo.plan import read_plan

    plans = [d / PLAN_FILE for d in run_dirs]
    if not all(p.exists() for p in plans):
        return None
    values = [read_plan(p)[1]["summary"].get("predicted_informative_fraction") for p in plans]
    return None if None in values else statistics.fmean(values)


def aggregate(cfg: CompareConfig, runs: dict[str, dict[int, Path]]) -> dict:
    """compare.json content from finished run directories."""
    window = cfg.final_window
    per_method: dict[str, dict] = {}
    curves = {m: [eval_curve(d) for d in seeds.values()] for m, seeds in runs.items()}
    summaries = {
        m: [read_json(d / SUMMARY_FILE) for d in seeds.values()] for m, seeds in runs.items()
    }
    finals = {m: [final_accuracy(c, window) for c in cs] for m, cs in curves.items()}
    target = statistics.fmean(finals[cfg.baseline])
    # each method's per-seed curves in each currency (seeds in the baseline's order), and
    # their mean over seeds
    seed_curves = {
        (method, name): [
            eval_curve(runs[method][seed], c.metric_field) for seed in runs[cfg.baseline]
        ]
        for method in runs
        for name, c in CURRENCIES.items()
    }
    cost_curves = {key: mean_curve(curves) for key, curves in seed_curves.items()}
    fits, levels = fit_curves(cost_curves, cfg.baseline)
    for method in runs:
        per_method[method] = {
            "final_acc_mean": statistics.fmean(finals[method]),
            # one seed has no spread to show (None, not 0.0)
            "final_acc_std": statistics.stdev(finals[method]) if len(finals[method]) > 1 else None,
            "final_acc_per_seed": finals[method],
            "initial_acc_mean": statistics.fmean(c[0][1] for c in curves[method]),
            "profile_flops": statistics.fmean(
                s["flops_by_phase"]["profile"] for s in summaries[method]
            ),
            **currency_costs(cost_curves, summaries, cfg.baseline, method, target, window),
            **fitted_read(fits, cfg.baseline, method, levels),
            **fitted_read_interval(seed_curves, cfg.baseline, method, fits),
            "informative_fraction": statistics.fmean(
                s["informative_fraction"] for s in summaries[method]
            ),
            "predicted_informative_fraction": predicted_informative_fraction(
                list(runs[method].values())
            ),
            "trained_fraction": trained_fraction(summaries[method]),
            "wasted_flops_fraction": statistics.fmean(
                wasted_fraction(d) for d in runs[method].values()
            ),
            "steps_mean": statistics.fmean(s["steps"] for s in summaries[method]),
            "wall_s": statistics.fmean(s["wall_s"] for s in summaries[method]),
            # a run profiled without its time recorded (an older sgpo's): its wall_s is the
            # training loop's alone
            "wall_s_profile_untimed": any(
                s["flops_by_phase"].get("profile", 0) > 0 and not s.get("profile_wall_s")
                for s in summaries[method]
            ),
            "eval_curves": {seed: evaluations(d) for seed, d in runs[method].items()},
        }
    # a run with no more evaluations than the final window: step 0's (the initial model) is in
    # its final accuracy and its smoothed curve
    fewest = {m: min(len(c) for c in cs) for m, cs in curves.items()}
    reach_step_0 = {m: n for m, n in fewest.items() if n <= window}
    for method, count in reach_step_0.items():
        log.warning(
            "%s: a run has %d held-out evaluations, step 0's included, for a final window of "
            "%d: its final accuracy and its crossing include the initial model's; evaluate "
            "more often (train.eval_every)",
            method,
            count,
            window,
        )
    initial = per_method[cfg.baseline]["initial_acc_mean"]
    if target <= initial:
        log.warning(
            "the baseline %s ended at %.3f, not above its initial %.3f: it learned nothing on "
            "this budget, so no ratio is shown: each would read where a method first holds an "
            "accuracy it may have had from the start (compare.json keeps them, with "
            "baseline_learned false)",
            cfg.baseline,
            target,
            initial,
        )
    return {
        "baseline": cfg.baseline,
        "target_acc": target,
        # the ratios mean something only when the baseline rose to its target
        "baseline_learned": target > initial,
        "seeds": cfg.seeds,
        "budget_currency": cfg.budget_currency,
        "final_window": window,
        "fit_gain_share": GAIN_SHARE,
        "fit_levels": levels,
        # methods with a run whose final window reaches step 0: its fewest evaluations
        "final_window_reaches_step_0": reach_step_0,
        "methods": per_method,
    }


def currency_costs(
    cost_curves: dict[tuple[str, str], list[tuple[float, float]]],
    summaries: dict[str, list[dict]],
    baseline: str,
    method: str,
    target: float,
    window: int,
) -> dict:
    """Total cost in each currency, cost to reach the target, and ratio_vs_grpo_<currency>:
    the baseline's total cost / this method's cost to reach the target (None if never)."""
    out: dict = {}
    for name, c in CURRENCIES.items():
        reach = cost_to_target(cost_curves[method, name], target, window)
        baseline_total = statistics.fmean(s[c.summary_field] for s in summaries[baseline])
        out[c.summary_field] = statistics.fmean(s[c.summary_field] for s in summaries[method])
        out[c.to_target_key] = reach
        # reached at no cost (a step-0 evaluation already at the target): no ratio to divide
        # out, the markdown says "at start"
        out[c.ratio_key] = baseline_total / reach if reach else None
    return out


def fit_curves(
    cost_curves: dict[tuple[str, str], list[tuple[float, float]]], baseline: str
) -> tuple[dict[tuple[str, str], SaturatingFit | None], dict[str, float | None]]:
    """The fitted read's fits, keyed like cost_curves by (method, currency), and each
    currency's level from the baseline's fit; a curve of fewer than 3 evaluations has no fit."""
    fits = {
        key: fit_saturating(curve) if len(curve) >= 3 else None
        for key, curve in cost_curves.items()
    }
    levels = {
        name: gain_level(fits[baseline, name]) if fits[baseline, name] else None
        for name in CURRENCIES
    }
    return fits, levels


def fitted_read(
    fits: dict[tuple[str, str], SaturatingFit | None],
    baseline: str,
    method: str,
    levels: dict[str, float | None],
) -> dict:
    """fit_speedup_vs_grpo_<currency> (see sgpo.core.curves) and each currency's fit (None
    where the curves were too short to fit)."""
    out: dict = {"fits": {}}
    for name, c in CURRENCIES.items():
        fit, base = fits[method, name], fits[baseline, name]
        out[c.fit_speedup_key] = fit_speedup(base, fit, levels[name]) if fit and base else None
        out["fits"][name] = fit and {
            "plateau": fit.plateau,
            "scale": fit.scale,
            "tau": fit.tau,
            "rmse": fit.rmse,
            "step": fit.step,
            "cost_to_level": None if levels[name] is None else fit.cost_to(levels[name]),
        }
    return out


# Two seeds resample into three distinct draws only: their "interval" would be the read itself
# at one end, not a spread.
INTERVAL_MIN_SEEDS = 3


def fitted_read_interval(
    seed_curves: dict[tuple[str, str], list[list[tuple[float, float]]]],
    baseline: str,
    method: str,
    fits: dict[tuple[str, str], SaturatingFit | None],
) -> dict:
    """fit_speedup_vs_grpo_<currency>_ci: the fitted speedup's 5-95% interval over paired seed
    resamples (sgpo.core.curves.bootstrap_speedup; 0 = never in that resample); None with fewer
    than INTERVAL_MIN_SEEDS seeds or curves too short to fit."""
    out: dict = {}
    for name, c in CURRENCIES.items():
        key = f"{c.fit_speedup_key}_ci"
        base_curves = seed_curves[baseline, name]
        few = len(base_curves) < INTERVAL_MIN_SEEDS
        if few or fits[method, name] is None or fits[baseline, name] is None:
            out[key] = None
            continue
        out[key] = list(bootstrap_speedup(base_curves, seed_curves[method, name]))
    return out


def plot_compare(
    cfg: CompareConfig, runs: dict[str, dict[int, Path]], result: dict, out_dir: Path
) -> list[str]:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    from sgpo.report import save_figure

    # in the budget's currency, where the ratios that matter are read
    currency = CURRENCIES[cfg.budget_currency]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, seeds in runs.items():
        curves = [eval_curve(d, currency.metric_field) for d in seeds.values()]
        mean = mean_curve(curves)
        n = len(mean)
        lows = [min(c[i][1] for c in curves) for i in range(n)]
        highs = [max(c[i][1] for c in curves) for i in range(n)]
        xs = [x for x, _ in mean]
        (line,) = ax.plot(xs, [y for _, y in mean], marker=".", label=method)
        ax.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        read = result["methods"][method]
        fit = read["fits"][cfg.budget_currency]
        if fit:  # the fitted read's curve (compare.md: fitted speedup)
            grid = np.linspace(xs[0], xs[-1], 100)
            fitted = fit["plateau"] - fit["scale"] * np.exp(-grid / fit["tau"])
            ax.plot(grid, fitted, ls="--", lw=0.8, color=line.get_color())
        if read[currency.to_target_key] is not None:  # the crossing (smoothed curve, not this)
            ax.plot(read[currency.to_target_key], result["target_acc"], "x", color=line.get_color())
    ax.axhline(result["target_acc"], color="grey", ls=":", label=f"target ({cfg.baseline} final)")
    ax.set_xlabel(f"cumulative {currency.label} (profiling included)")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # "200G": no "1e11" on the label
    ax.set_ylabel("held-out accuracy (sampled)")
    ax.set_title(
        f"mean over {len(cfg.seeds)} seed{'s' if len(cfg.seeds) > 1 else ''}; band = "
        "min..max; x: where the mean of the last "
        f"{cfg.final_window} evaluations first holds the target",
        fontsize=8,
    )
    ax.legend(fontsize=8)
    images = [save_figure(fig, out_dir / "accuracy_vs_flops.png")]

    names = list(result["methods"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names)), 4))
    ax.bar(names, [result["methods"][m]["informative_fraction"] for m in names], color="tab:green")
    ax.set_ylim(0, 1)
    ax.set_ylabel("informative fraction")
    ax.set_title("share of training rollouts in a group with a non-zero advantage", fontsize=9)
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return [*images, save_figure(fig, out_dir / "informative_fraction.png")]


def format_or_missing(value: float | None, spec: str, missing: str = "never") -> str:
    return missing if value is None else format(value, spec)


def final_accuracy_text(method: dict) -> str:
    """A method's final accuracy, mean ± std over seeds ("n/a (1 seed)" for the std of one)."""
    spread = format_or_missing(method["final_acc_std"], ".3f", "n/a (1 seed)")
    return f"{method['final_acc_mean']:.3f} ± {spread}"


def _ratio(method: dict, currency: Currency, baseline_learned: bool) -> str:
    """The crossing ratio; "at start" where the method's curve held the target before it spent
    anything (no ratio: nothing to divide by), "never" where it never did; "-" for every
    method where the baseline learned nothing (a method would read as far ahead by holding
    the initial accuracy after its profile's cost alone)."""
    if not baseline_learned:
        return "-"
    if method[currency.ratio_key] is None and method[currency.to_target_key] == 0:
        return "at start"
    return format_or_missing(method[currency.ratio_key], ".2f")


def console_table(result: dict) -> Table:
    """The table `sgpo compare` prints: each method's final accuracy and ratios, the ratios
    read as compare.md reads them (_ratio)."""
    from rich.table import Table

    learned = (
        ""
        if result["baseline_learned"]
        else "; THE BASELINE LEARNED NOTHING: no ratio means anything"
    )
    table = Table(
        title=f"sgpo compare (target acc {result['target_acc']:.3f}, budget in "
        f"{result['budget_currency']}{learned})",
        caption=f"ratio: {result['baseline']}'s whole cost / the method's cost where its mean "
        f"curve first holds the target ({result['baseline']}'s own: above 1 where it held its "
        "final accuracy before its end); compare.md explains every column",
    )
    columns = ("method", "final acc", "ratio", "ratio train-all", "ratio tokens", "informative")
    for column in columns:  # the method's name whole: many start alike (sgpo-solvable-...)
        table.add_column(column, no_wrap=column == "method", overflow="fold")
    for name, m in result["methods"].items():
        table.add_row(
            name,
            final_accuracy_text(m),
            *(_ratio(m, currency, result["baseline_learned"]) for currency in CURRENCIES.values()),
            f"{m['informative_fraction']:.3f}",
        )
    return table


def _fitted(method: dict, key: str, baseline_learned: bool) -> str:
    """A fitted speedup with its 5-95% seed-resample interval, when there is one; "-" where the
    baseline learned nothing, as the crossing ratio (_ratio)."""
    if not baseline_learned:
        return "-"
    interval = method.get(f"{key}_ci")
    text = format_or_missing(method[key], ".2f")
    return text if interval is None else f"{text} ({interval[0]:.2f}-{interval[1]:.2f})"


def _levels_against_target(result: dict) -> str:
    """Where the fitted read's levels sit against the crossing's target, and what that means."""
    levels = {name: level for name, level in result["fit_levels"].items() if level is not None}
    if not levels:
        return "none: the baseline's fit gains nothing, so no method reads a fitted speedup"
    above = [name for name, level in levels.items() if level >= result["target_acc"]]
    if not above:
        return "below the target: a method can read a fitted speedup and never reach the target"
    return (
        f"at or above the target in {', '.join(above)}: there a method can reach the target "
        "and never read a fitted speedup"
    )


def _baseline_own_crossing(result: dict) -> list[str]:
    """A note when the baseline's own smoothed curve holds its final accuracy before its run
    ends: the ratios divide its whole cost, not its cost to that point."""
    own = result["methods"][result["baseline"]]
    ratios = [own.get(c.ratio_key) for c in CURRENCIES.values()]
    if not result["baseline_learned"] or all(r is None or abs(r - 1) < 5e-3 for r in ratios):
        return []
    return [
        f"The baseline's own curve first holds its final accuracy before its run ends (its "
        f"ratios: {' / '.join(format_or_missing(r, '.2f') for r in ratios)}): each ratio "
        "divides its whole cost. Against its cost to that point instead, divide a method's "
        "ratio by the baseline's in the same currency.",
        "",
    ]


def write_markdown(
    cfg: CompareConfig, result: dict, images: list[str], out_dir: Path, source: Path
) -> None:
    rows = [
        "| method | final acc (mean ± std) | initial acc | FLOPs | ratio | FLOPs train-all | "
        "ratio train-all | generated tokens | ratio tokens | fitted speedup (FLOPs / "
        "train-all / tokens) | informative fraction (predicted) | trained fraction | "
        "FLOPs on zero-advantage rollouts | steps | wall s/run (profile included) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    learned = result["baseline_learned"]
    for method, m in result["methods"].items():
        rows.append(
            f"| {method} | {final_accuracy_text(m)} | "
            f"{m['initial_acc_mean']:.3f} | {m['total_flops']:.3e} | "
            f"{_ratio(m, CURRENCIES['flops'], learned)} | {m['total_flops_train_all']:.3e} | "
            f"{_ratio(m, CURRENCIES['flops_train_all'], learned)} | "
            f"{m['generated_tokens']:.3g} | {_ratio(m, CURRENCIES['tokens'], learned)} | "
            + " / ".join(_fitted(m, c.fit_speedup_key, learned) for c in CURRENCIES.values())
            + f" | {m['informative_fraction']:.3f} "
            f"({format_or_missing(m.get('predicted_informative_fraction'), '.2f', 'no plan')}) | "
            f"{format_or_missing(m.get('trained_fraction'), '.3f', '-')} | "
            f"{m['wasted_flops_fraction']:.1%} | "
            f"{round(m['steps_mean'], 1):g} | {m['wall_s']:.1f}"
            f"{'*' if m.get('wall_s_profile_untimed') else ''} |"
        )
    text = [
        f"# sgpo compare: {source.name}",
        "",
        f"Seeds {cfg.seeds}; baseline `{result['baseline']}`; target accuracy "
        f"{result['target_acc']:.3f} (the baseline's final accuracy, mean over seeds); "
        f"equal budget in {cfg.budget_currency}. The fitted read's level (FLOPs / train-all / "
        "tokens): "
        + " / ".join(
            format_or_missing(result["fit_levels"].get(name), ".3f") for name in CURRENCIES
        )
        + f" ({_levels_against_target(result)}).",
        "",
        *_baseline_own_crossing(result),
        *(
            [
                "**Failed runs, left out of the table** (a method is in it only if it ran on "
                "every seed above):",
                "",
                *[f"- `{f['method']}` seed {f['seed']}: {f['error']}" for f in result["failed"]],
                "",
            ]
            if result.get("failed")
            else []
        ),
        *(
            [
                "**Runs with no more held-out evaluations than the final window "
                f"({result['final_window']}): "
                + ", ".join(
                    f"`{m}` ({n})" for m, n in result["final_window_reaches_step_0"].items()
                )
                + ". Their final accuracy and crossing include step 0's, the initial model's; "
                "evaluate more often (train.eval_every).**",
                "",
            ]
            if result.get("final_window_reaches_step_0")
            else []
        ),
        *(
            []
            if result["baseline_learned"]
            else [
                f"**The baseline ended at or below its initial accuracy "
                f"({result['methods'][result['baseline']]['initial_acc_mean']:.3f}): it learned "
                "nothing on this budget, so no ratio is shown below: each would read where a "
                "method first holds an accuracy it may have had from the start (compare.json "
                "keeps them). Train longer.**",
                "",
            ]
        ),
        *rows,
        "",
        "## Protocol",
        "",
        (__doc__ or "")
        .split("Protocol (also written into compare.md):", 1)[1]
        .split("Runs are")[0]
        .strip(),
        "",
        "## What the numbers mean",
        "",
        "- *final acc*: mean of the last "
        f"{cfg.final_window} held-out evaluations (sampled accuracy), then mean ± std over seeds.",
        "- *ratio*: the baseline's total cost / the cost at which the method's seed-averaged, "
        "smoothed accuracy curve first reaches the target, per currency: FLOPs of this trainer "
        "(zero-advantage backward skipped), FLOPs of a trainer that trains every rollout "
        "(verl, TRL, OpenRLHF), generated tokens. Above 1: the method got there cheaper than "
        "the baseline's whole run; `never`: not within the same budget.",
        "- *fitted speedup*: each seed-averaged curve fitted with a(c) = A - B exp(-c / tau); "
        f"the baseline's cost to {GAIN_SHARE:.0%} of its fitted gain / the method's cost to the "
        "same accuracy on its own fit, read only within the costs it was evaluated at "
        "(`never`: not reached; sgpo.core.curves). A steadier read than the ratio, whose "
        "target is a plateau value that nearly flat curves cross by thousandths. In brackets "
        "its 5-95% interval over 1000 paired resamples of the seeds (0: not reached in that "
        f"resample; none with fewer than {INTERVAL_MIN_SEEDS} seeds).",
        "- *informative fraction*: share of the rollouts generated in training (the profile's "
        "samples not counted, but for those train.reuse_profile trains on, counted as their "
        "step's) that were in a group with a non-zero advantage (the only "
        "rollouts that produce a gradient); in brackets what "
        "`sgpo plan` predicted for the plan from the profile alone (it scores the initial "
        "policy; training moves p).",
        "- *trained fraction*: share of the rollouts generated in training given a backward "
        "pass; below the informative fraction where informative rollouts go untrained "
        "(down-sampling trains part of each mixed group, DAPO drops the groups beyond a full "
        "batch).",
        "- *FLOPs on zero-advantage rollouts*: share of the total spent generating rollouts "
        "in groups that taught nothing (their training pass is skipped for every method, so "
        "only generation is wasted; the generation of informative rollouts left untrained is "
        "not in it). Removing all of it would save at most 1 / (1 - share).",
        "- *wall s/run*: seconds of the training loop and of the profile it planned from "
        "(evaluations and model loading not counted); `*`: a run whose profile did not record "
        "its time (an older sgpo's), so its training loop's alone.",
        "",
        *[f"![{name}]({name})" for name in images],
        "",
    ]
    atomic_write_text(out_dir / "compare.md", "\n".join(text))


# Everything sgpo compare writes in its output directory (besides runs/ and profiles/, whose
# runs and profiles claim their own files).
COMPARE_OUTPUTS = (
    "compare.md",
    "compare.json",
    "accuracy_vs_flops.png",
    "informative_fraction.png",
)


def run_compare(
    config_path: Path,
    out_dir: Path,
    seeds: int | None = None,
    first_seed: int = 0,
    methods: list[str] | None = None,
    budget_currency: str | None = None,
    overrides: list[str] | None = None,
) -> dict:
    cfg, base = load_compare_config(
        config_path, seeds, first_seed, methods, budget_currency, overrides
    )
    # Claimed before any training: a file of the user's in the way is refused now, not hours
    # later (an older compare recorded none of these: its own, beside its runs/). Held to the
    # end: a second compare into OUT is refused; one refused before it trained leaves no trace.
    with claimed(
        out_dir, COMPARE_OUTPUTS, "compare", adopt=lambda path: (out_dir / "runs").is_dir()
    ):
        return _run_compare(cfg, base, config_path, out_dir)


def scoring_settings(config: RunConfig) -> dict:
    """How config scores a response and counts a success (SCORING_SETTINGS), with the verifier
    as it runs: a method naming the task's default verifier is scored as one leaving it unset."""
    tree = config.model_dump(mode="json")
    tree["task"]["verifier"] = verifier_spec(config.task)
    return settings_of(flatten(tree), SCORING_SETTINGS)


def _run_compare(cfg: CompareConfig, base: Path, config_path: Path, out_dir: Path) -> dict:
    if not base.is_file():  # said of base: before each method's config would say it
        raise ConfigError(f"{config_path}: base: {cfg.base}: no such file ({base})")
    profiles = out_dir / "profiles"
    if (out_dir / "runs").is_dir():  # an earlier compare's methods this one leaves out
        others = sorted(
            d.name for d in (out_dir / "runs").iterdir() if d.is_dir() and d.name not in cfg.methods
        )
        if others:
            tqdm.write(
                f"{out_dir}: compare.json and compare.md will hold this compare's methods only; "
                f"the runs of {', '.join(others)} stay in {out_dir / 'runs'}",
                file=sys.stderr,
            )
        seeds = {seed_of(d) for d in (out_dir / "runs").glob("*/*")} - {None}
        other_seeds = sorted(seeds - set(cfg.seeds))
        if other_seeds:
            tqdm.write(
                f"{out_dir}: compare.json and compare.md will hold seeds {cfg.seeds} only; the "
                f"runs of seeds {other_seeds} stay in {out_dir / 'runs'}",
                file=sys.stderr,
            )
    runs: dict[str, dict[int, Path]] = {m: {} for m in cfg.methods}
    # Baseline first: its spend is the budget of every other method on the same seed.
    order = [cfg.baseline] + [m for m in cfg.methods if m != cfg.baseline]
    scoring: dict | None = None  # the baseline's
    trained_as: dict[str, list[str]] = {}  # each config (as JSON) -> the methods it is
    for method in order:  # every method's config checked before anything is trained
        try:
            config = method_config(cfg, base, method, cfg.seeds[0], [])
            if config.train.uses_plan:  # before the baseline trains, not at the first profile
                check_engine_installed(config, "profile")
        except ConfigError as e:
            raise ConfigError(f"{config_path}: method {method!r}: {e}") from e
        refuse_decaying_lr(config, f"{config_path}: {method}")
        refuse_float16_training(config, f"{config_path}: method {method!r}: ")
        trained_as.setdefault(json.dumps(config.model_dump(mode="json")), []).append(method)
        scores = scoring_settings(config)
        scoring = scores if scoring is None else scoring
        if differ := changes(scoring, scores):
            raise ConfigError(
                f"{config_path}: method {method!r} scores responses otherwise than the baseline "
                f"{cfg.baseline!r} ({'; '.join(differ)}): accuracies compared across methods "
                "must count a success the same way; set these in the base or its overrides"
            )
    for same in (methods for methods in trained_as.values() if len(methods) > 1):
        tqdm.write(
            f"{config_path}: methods {', '.join(same)} train the same config (their overrides "
            "come to the same settings): the rows will differ by nothing but their names",
            file=sys.stderr,
        )
    currency = CURRENCIES[cfg.budget_currency]
    total = len(cfg.seeds) * len(order)
    failed: list[dict] = []

    def run_failed(method: str, seed: int, label: str, error: Exception, after: str = "") -> None:
        failed.append({"method": method, "seed": seed, "error": str(error)})
        tqdm.write(f"{label} failed: {error}{after}", file=sys.stderr)

    for seed_index, seed in enumerate(cfg.seeds):
        first = len(order) * seed_index + 1  # the baseline's place among all runs, from 1
        fixed_budget = [f"train.max_total_flops={cfg.budget_flops}"] if cfg.budget_flops else []
        baseline_config = method_config(cfg, base, cfg.baseline, seed, fixed_budget)
        baseline_dir = seed_run_dir(out_dir, cfg.baseline, seed)
        label = f"[{first}/{total}] {cfg.baseline} seed {seed}"
        try:
            summary = run_method(baseline_config, baseline_dir, profiles, label)
        except RUN_FAILURES as e:
            # its spend is the others' budget on this seed
            run_failed(cfg.baseline, seed, label, e, "; this seed's other methods are not run")
            continue
        budget = cfg.budget_flops or summary[currency.summary_field]
        runs[cfg.baseline][seed] = baseline_dir
        cap = [
            f"{currency.cap_key}={budget}",
            f"train.steps={baseline_config.train.steps * cfg.max_steps_factor}",
        ]
        for index, method in enumerate(order[1:], first + 1):
            run_dir = seed_run_dir(out_dir, method, seed)
            label = f"[{index}/{total}] {method} seed {seed}"
            try:
                # the plan's predictions over the baseline's length, not over the steps cap
                run_method(
                    method_config(cfg, base, method, seed, cap),
                    run_dir,
                    profiles,
                    label,
                    plan_steps=baseline_config.train.steps,
                )
            except RUN_FAILURES as e:  # e.g. a plan that keeps nothing on this data
                run_failed(method, seed, label, e)
                continue
            runs[method][seed] = run_dir
    if not runs[cfg.baseline]:
        raise DataError(f"the baseline failed on every seed: {failures_text(failed)}")
    # what is compared: the seeds whose baseline ran, the methods that ran on all of them
    seeds = [s for s in cfg.seeds if s in runs[cfg.baseline]]
    runs = {m: r for m, r in runs.items() if len(r) == len(seeds)}
    done = cfg.model_copy(update={"seeds": seeds, "methods": {m: cfg.methods[m] for m in runs}})
    result = aggregate(done, runs) | {"failed": failed}
    images = plot_compare(done, runs, result, out_dir)
    atomic_write_json(out_dir / "compare.json", result)
    write_markdown(done, result, images, out_dir, config_path)
    if failed:
        raise DataError(
            f"{failures_text(failed)}. compare.json and compare.md in {out_dir} hold the "
            f"methods that ran on seeds {seeds}; the runs finished are kept: the same compare "
            "with --methods leaving the failed ones out, or after a fix, reuses them"
        )
    return result


# A run's failure that the other runs need not share: the compare goes on without it (every
# method's config is checked before anything trains, so a ConfigError here is a run refused
# for reuse: trained with another config, or one this sgpo cannot read).
RUN_FAILURES = (DataError, NonFiniteError, ConfigError)


def failures_text(failed: list[dict]) -> str:
    """The failed runs, one clause each: "method 'x', seed 0: <why>"."""
    return f"{len(failed)} run(s) failed: " + "; ".join(
        f"method {f['method']!r}, seed {f['seed']}: {f['error']}" for f in failed
    )


def refuse_decaying_lr(config: RunConfig, where: str) -> None:
    """Runs compared at equal budget stop when the budget is spent, not at train.steps (a cap
    there), so an lr decaying over train.steps would decay at a different rate in each."""
    if config.train.lr_schedule != "constant":
        raise ConfigError(
            f"{where}: train.lr_schedule={config.train.lr_schedule!r}: runs compared at equal "
            "budget stop when it is spent, not at train.steps, and a schedule that decays "
            "over train.steps would decay at a different rate in each; use constant (with "
            "train.warmup_steps)"
        )
