"""The demo's side-by-side: GRPO trained from the same model on the same seed until it has spent
the FLOPs the demo's run spent (in the run's DEMO_BASELINE_DIR), and the table and plot that end
the run's report.md (side_by_side.png), read as `sgpo compare` reads its runs, on one seed."""

from __future__ import annotations

import math
from pathlib import Path

from sgpo.compare import (
    CURRENCIES,
    STEPS_CAP_FACTOR,
    eval_curve,
    fit_curves,
    fitted_read,
    format_or_missing,
)
from sgpo.config import VARIANT_TRAIN_SETTINGS, RunConfig, load_config
from sgpo.core.curves import GAIN_SHARE
from sgpo.io import atomic_write_text, read_json, read_jsonl
from sgpo.rundir import claim_outputs
from sgpo.runfiles import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

SIDE_BY_SIDE = "side_by_side.png"  # the demo's, next to its report.md
DEMO_BASELINE_DIR = "baseline-grpo"  # the demo's equal-budget GRPO run, inside its directory


def older_demo(path: Path) -> bool:
    """An older demo recorded no side-by-side plot: its own, beside its baseline run."""
    return path.name == SIDE_BY_SIDE and (path.parent / DEMO_BASELINE_DIR).is_dir()


def equal_budget_baseline_config(config: RunConfig, spent_flops: float) -> RunConfig:
    """GRPO (G = config.train.group_size) on config's model, data and optimizer, without the
    variant's settings, stopped when its total FLOPs reach spent_flops (STEPS_CAP_FACTOR x the
    steps, a cap)."""
    tree = config.model_dump(mode="json")
    defaults = type(config.train)().model_dump(mode="json")
    tree["train"] |= {name: defaults[name] for name in VARIANT_TRAIN_SETTINGS}
    tree["train"] |= {
        "method": "grpo",
        "max_total_flops": spent_flops,
        # the run's caps in other currencies would stop GRPO short of the same FLOPs
        "max_total_flops_train_all": None,
        "max_generated_tokens": None,
        "steps": config.train.steps * STEPS_CAP_FACTOR,
    }
    return RunConfig.model_validate(tree)


def run_equal_budget_baseline(
    config: RunConfig, run_dir: Path, out: Path, resume: bool = False
) -> dict:
    """GRPO from the same model on the same seed at the FLOPs the finished run in run_dir
    spent (equal_budget_baseline_config): the demo's small-scale side-by-side; with resume,
    continued from its checkpoint (one of another budget is refused as another config's)."""
    from sgpo.train import run_train

    spent = read_json(run_dir / SUMMARY_FILE)
    baseline = equal_budget_baseline_config(config, spent["total_flops"])
    return run_train(baseline, out, resume=resume, overwrite=not resume)


def is_demo_baseline_of(run_dir: Path) -> bool:
    """Whether run_dir holds a finished equal-budget GRPO run of its own run (a demo's): one
    stopped at the FLOPs the run in run_dir spent, not one left from an earlier run there."""
    baseline = run_dir / DEMO_BASELINE_DIR
    if not (baseline / SUMMARY_FILE).exists() or not (run_dir / SUMMARY_FILE).exists():
        return False
    budget = load_config(baseline / CONFIG_FILE, recorded=True).train.max_total_flops
    return budget == read_json(run_dir / SUMMARY_FILE)["total_flops"]


def unfinished_demo_baseline(run_dir: Path) -> str | None:
    """Why a demo's report has no side-by-side where run_dir holds a GRPO baseline that is not
    its finished equal-budget one; None where there is none or it is."""
    baseline = run_dir / DEMO_BASELINE_DIR
    if not baseline.is_dir() or is_demo_baseline_of(run_dir):
        return None
    if not (baseline / SUMMARY_FILE).exists():
        return (
            f"The demo's GRPO baseline in {DEMO_BASELINE_DIR}/ did not finish (no summary.json), "
            f"so this report has no side-by-side: sgpo train --resume {baseline} finishes it, "
            f"then sgpo report {run_dir} adds it (or run sgpo demo again)."
        )
    return (
        f"{DEMO_BASELINE_DIR}/ is not this run's equal-budget GRPO baseline (it ran to another "
        "FLOPs budget than this run spent), so this report has no side-by-side."
    )


def append_demo_side_by_side(run_dir: Path, report: Path) -> list[str]:
    """A demo's report.md ends with its run against the GRPO run at the same FLOPs (in
    DEMO_BASELINE_DIR), whether sgpo demo or a later sgpo report wrote it; returns the fitted
    read's line."""
    baseline = f"grpo-g{load_config(run_dir / CONFIG_FILE, recorded=True).train.group_size}"
    runs = {"sgpo": run_dir, baseline: run_dir / DEMO_BASELINE_DIR}
    return append_side_by_side(report, runs, baseline)


def append_side_by_side(
    report: Path, runs: dict[str, Path], baseline: str | None = None
) -> list[str]:
    """Append to a run's report.md the cost/accuracy table of several finished runs and a plot
    of held-out accuracy against each cost currency (side_by_side.png next to report.md); with
    a baseline among them, each other run's fitted speedup against it (one seed), whose lines
    are returned. report.md is sgpo report's (claimed by it); side_by_side.png is claimed here
    before it is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    from sgpo.report import save_figure

    claim_outputs(report.parent, [SIDE_BY_SIDE], adopt=older_demo)
    fig, axes = plt.subplots(1, len(CURRENCIES), figsize=(12, 3.4))
    for ax, currency in zip(axes, CURRENCIES.values(), strict=True):
        for name, run_dir in runs.items():
            curve = eval_curve(run_dir, currency.metric_field)
            ax.plot([x for x, _ in curve], [y for _, y in curve], marker=".", label=name)
        ax.set_xlabel(f"cumulative {currency.label}")
        ax.set_ylabel("held-out accuracy (sampled)")
        # "200G" on each tick: matplotlib's "1e11" multiplier sits on the axis label
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    axes[0].legend(fontsize=8)
    save_figure(fig, report.parent / SIDE_BY_SIDE)
    lines = [
        "",
        "## Side by side at equal FLOPs (one seed)",
        "",
        "| run | initial acc | final acc | FLOPs | FLOPs train-all | generated tokens | "
        "informative fraction | trained fraction | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run_dir in runs.items():
        s = read_json(run_dir / SUMMARY_FILE)
        trained = s.get("trained_rollouts")  # not in an older sgpo's summary
        trained_fraction = (
            trained / s["rollouts"] if trained is not None and s["rollouts"] else None
        )
        lines.append(
            f"| {name} | {s['initial_eval_acc']:.3f} | {s['final_eval_acc']:.3f} | "
            f"{s['total_flops']:.3e} | {s['total_flops_train_all']:.3e} | "
            f"{s['generated_tokens']:,} | {s['informative_fraction']:.3f} | "
            f"{format_or_missing(trained_fraction, '.3f', '-')} | {s['steps']} |"
        )
    lines += [
        "",
        "FLOPs: this trainer's (a zero-advantage rollout's backward pass skipped); train-all: "
        "the same updates in a trainer that trains every rollout, as verl, TRL and OpenRLHF do "
        "(verl also recomputes old log-probs, not counted); both include the profile. "
        "Informative fraction: the generated rollouts in groups whose rewards differ; trained "
        "fraction: those given a backward pass (down-sampling trains part of such a group).",
    ]
    fitted = one_seed_fitted_read(runs, baseline) if baseline is not None else []
    lines += ["", *fitted, "", f"![accuracy against each cost]({SIDE_BY_SIDE})", ""]
    atomic_write_text(report, report.read_text() + "\n".join(lines))
    return fitted


def unmeasured_gain(run_dir: Path) -> str | None:
    """Why a run's held-out accuracy shows no gain to read a speedup against, or None: it
    ended no higher than it started (sgpo compare's bar), or rose by less than twice the
    sampling error of the difference of two evaluations of its size (binomial, taken as
    unpaired: a cautious bar) where its config and metrics say that size."""
    summary = read_json(run_dir / SUMMARY_FILE)
    initial, final = summary["initial_eval_acc"], summary["final_eval_acc"]
    if final <= initial:
        return f"it ended at {final:.3f}, not above its initial {initial:.3f}"
    queries = [r["eval_queries"] for r in read_jsonl(run_dir / METRICS_FILE) if "eval_queries" in r]
    if not queries or not (run_dir / CONFIG_FILE).exists():
        return None
    answers = queries[-1] * load_config(run_dir / CONFIG_FILE, recorded=True).eval.n_samples
    error = math.sqrt((initial * (1 - initial) + final * (1 - final)) / answers)
    if final - initial >= 2 * error:
        return None
    return (
        f"it went {initial:.3f} -> {final:.3f} on {answers} sampled answers, within twice the "
        f"evaluation's sampling error ({2 * error:.3f}); train longer or evaluate on more "
        "held-out queries (eval.n_samples, the task's held-out split)"
    )


def one_seed_fitted_read(runs: dict[str, Path], baseline: str) -> list[str]:
    """One line per run other than the baseline: its fitted speedup in each currency (the
    compare's fitted read on a single seed, so without an interval); one line saying why none
    where the baseline learned nothing measurable (a speedup over no gain is noise)."""
    if (why := unmeasured_gain(runs[baseline])) is not None:
        return [
            f"- No fitted read against `{baseline}`: {why}. It learned nothing measurable in "
            "this run, so a speedup against it would mean nothing."
        ]
    curves = {
        (run, name): eval_curve(run_dir, c.metric_field)
        for run, run_dir in runs.items()
        for name, c in CURRENCIES.items()
    }
    fits, levels = fit_curves(curves, baseline)
    lines = []
    for name in runs:
        if name == baseline:
            continue
        read = fitted_read(fits, baseline, name, levels)
        speedups = [read[c.fit_speedup_key] for c in CURRENCIES.values()]
        lines.append(
            f"- Fitted read (one seed), `{name}` against `{baseline}`: speedup "
            + " / ".join(format_or_missing(x, ".2f") for x in speedups)
            + f" in FLOPs / train-all FLOPs / generated tokens = `{baseline}`'s cost to "
            f"{GAIN_SHARE:.0%} of its fitted gain over `{name}`'s cost to the same accuracy "
            "(above 1: cheaper than the baseline; `never`: not within its run; sgpo.core.curves)."
        )
    return lines
