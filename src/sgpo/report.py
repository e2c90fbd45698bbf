"""Stage 5, report: report.md and PNG plots for a run directory (profile/plan if present)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sgpo import rundir  # noqa: E402
from sgpo.checkpoint import checkpoint_plan  # noqa: E402
from sgpo.core.allocation import PlanRule  # noqa: E402
from sgpo.errors import DataError  # noqa: E402
from sgpo.io import (  # noqa: E402
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    read_jsonl,
    read_table,
)
from sgpo.plan import PlanRow, plan_summary, read_plan  # noqa: E402
from sgpo.profile_match import p_hat_estimates_p  # noqa: E402
from sgpo.rundir import differing_keys, flatten  # noqa: E402
from sgpo.runfiles import (  # noqa: E402
    HISTORY_FILE,
    METRICS_FILE,
    PLAN_FILE,
    REPORT_FILE,
    REPORT_OUTPUTS,
    SUMMARY_FILE,
)

# The fields of summary.json and of metrics.jsonl's records that the report reads.
SUMMARY_FIELDS = (
    "method",
    "initial_eval_acc",
    "final_eval_acc",
    "final_eval_acc_by_bucket",
    "flops_by_phase",
    "steps",
    "rollouts",
    "informative_fraction",
    "total_flops",
    "wall_s",
    "verifier_errors",
    "verifier_timeouts",
)
RECORD_FIELDS = ("step", "flops_total_cum")
STEP_FIELDS = ("reward_mean", "informative_fraction")  # in the records of training steps


def read_summary(path: Path) -> dict:
    """summary.json, with every field the report reads (DataError naming a missing one)."""
    summary = read_json(path)
    # the report reads the final greedy accuracy wherever there is an initial one
    greedy = (
        ("final_eval_acc_greedy",) if summary.get("initial_eval_acc_greedy") is not None else ()
    )
    missing = [name for name in SUMMARY_FIELDS + greedy if name not in summary]
    if missing:
        raise DataError(f"{path}: missing {', '.join(map(repr, missing))}; it is damaged")
    for name in SUMMARY_FIELDS + greedy:
        value = summary[name]
        if name == "method":
            ok = isinstance(value, str)
        elif name in ("final_eval_acc_by_bucket", "flops_by_phase"):
            ok = isinstance(value, dict) and all(map(is_number, value.values()))
        else:
            ok = is_number(value)
        if not ok:
            raise DataError(f"{path}: field {name!r} is {value!r}; it is damaged")
    return summary


def is_number(value: object) -> bool:
    # sgpo writes these fields finite, so NaN or infinity is damage; plotted, it would
    # silently leave a gap in a curve or a bar
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_records(path: Path, steps: int) -> list[dict]:
    """metrics.jsonl's records, each with the fields the report reads as numbers, and one for
    every step 0..steps of the finished run (DataError naming the first record and field that
    is not, or the first step missing)."""
    records = read_jsonl(path)
    for number, record in enumerate(records, start=1):
        needed = RECORD_FIELDS + (STEP_FIELDS if record.get("step") else ())
        missing = [name for name in needed if name not in record]
        if missing:
            raise DataError(
                f"{path}: record {number}: missing {', '.join(map(repr, missing))}; it is damaged"
            )
        for name in (*needed, "eval_acc"):
            if name in record and not is_number(record[name]):
                raise DataError(
                    f"{path}: record {number}: field {name!r} is {record[name]!r}; it is damaged"
                )
    logged = {record["step"] for record in records}
    absent = next((step for step in range(steps + 1) if step not in logged), None)
    if absent is not None:
        raise DataError(
            f"{path}: no record of step {absent} of the run's {steps} (summary.json); it is "
            "damaged or cut short"
        )
    return records


def save_figure(fig: plt.Figure, path: Path) -> str:
    """Render in memory, then write atomically: a kill never leaves a 0-byte PNG."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name


def plot_plan(plan_rows: list[PlanRow], meta: dict, out_dir: Path) -> list[str]:
    """The profile's p_hat of kept and dropped queries, and the kept queries' group sizes."""
    files = []
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(
        [[r.p_hat for r in plan_rows if r.kept], [r.p_hat for r in plan_rows if not r.kept]],
        bins=[i / 16 for i in range(17)],
        stacked=True,
        color=["tab:blue", "tab:gray"],
        label=["kept", "dropped"],
    )
    ax.legend(fontsize=8)
    if p_hat_estimates_p(meta):
        ax.set_xlabel("profiled success rate p_hat (correct / samples)")
    else:  # a profile stopped at each query's first success: 1 / samples drawn, not p
        ax.set_xlabel("1 / samples to the first success (0: never solved)")
    ax.set_ylabel("queries")
    ax.set_title("Profile under the initial policy")
    files.append(save_figure(fig, out_dir / "p_hat_hist.png"))
    kept = [r.group_size for r in plan_rows if r.kept]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if kept:
        ax.hist(kept, bins=range(min(kept), max(kept) + 2), align="left", color="tab:green")
        # whole sizes, not 7.6 ... 8.4: the locator finds integers only with two or more in view
        ax.set_xlim(min(kept) - 1, max(kept) + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("group size G")
    ax.set_ylabel("kept queries")
    ax.set_title("Plan: rollouts per query")
    files.append(save_figure(fig, out_dir / "group_size_hist.png"))
    return files


def plot_training(records: list[dict], out_dir: Path) -> list[str]:
    evals = [r for r in records if "eval_acc" in r]
    steps = [r for r in records if r["step"] > 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(
        [r["flops_total_cum"] for r in evals], [r["eval_acc"] for r in evals], "o-", label="sampled"
    )
    if evals and "eval_acc_greedy" in evals[0]:
        left.plot(
            [r["flops_total_cum"] for r in evals],
            [r["eval_acc_greedy"] for r in evals],
            "s--",
            label="greedy",
        )
    left.set_xlabel("cumulative total FLOPs")
    left.set_ylabel("held-out accuracy")
    left.legend()
    plot_per_step(
        right,
        [r["flops_total_cum"] for r in steps],
        {
            "reward": [r["reward_mean"] for r in steps],
            "informative fraction": [r["informative_fraction"] for r in steps],
        },
        "cumulative total FLOPs",
    )
    return [save_figure(fig, out_dir / "accuracy_vs_flops.png")]


def plot_per_step(
    ax: plt.Axes, costs: list[float], series: dict[str, list[float | None]], xlabel: str
) -> None:
    """Per-training-step curves against a cumulative cost (sgpo report of an sgpo run and of a
    TRL run); a None leaves its point out (TRL logs None for a metric a window had no value of)."""
    for label, values in series.items():
        points = [(x, y) for x, y in zip(costs, values, strict=True) if y is not None]
        ax.plot([x for x, _ in points], [y for _, y in points], label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("per training step")
    ax.legend()


def plot_plan_history(history: list[dict], plan_rows: list[PlanRow], out_dir: Path) -> list[str]:
    """How the online estimates and group sizes moved during training (sgpo variants)."""
    bucket = {r.query_id: r.difficulty or "all" for r in plan_rows}
    steps = sorted({h["step"] for h in history})
    buckets = sorted(set(bucket.values()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for b in buckets:
        means = []
        for step in steps:
            ps = [h["p_est"] for h in history if h["step"] == step and bucket[h["query_id"]] == b]
            means.append(sum(ps) / len(ps))
        left.plot(steps, means, marker=".", label=b)
    left.set_xlabel("step")
    left.set_ylabel("mean estimated success rate")
    left.set_title("p_est drift")
    left.legend(fontsize=7)
    kept_g = [[h["group_size"] for h in history if h["step"] == s and h["kept"]] for s in steps]
    right.plot(steps, [sum(g) / max(len(g), 1) for g in kept_g], marker=".", label="mean G (kept)")
    twin = right.twinx()
    twin.plot(steps, [len(g) for g in kept_g], color="tab:red", marker="x", label="kept queries")
    right.set_xlabel("step")
    right.set_ylabel("mean G")
    twin.set_ylabel("kept queries")
    right.set_title("group sizes over time")
    return [save_figure(fig, out_dir / "plan_drift.png")]


def variant_settings(config: dict | None) -> str:
    """The plan, profile and train settings of a run's config that differ from sgpo's
    defaults (what makes it the variant it is), and a success threshold (what its accuracies
    count), as `key=value`s; those that change only how it runs (checkpoints, logging, its
    length) are left out."""
    if not config:
        return ""
    from sgpo.config import RunConfig

    ran = flatten(config)
    return ", ".join(
        f"`{key}={ran[key]}`"
        for key in differing_keys(RunConfig().model_dump(mode="json"), config)
        if key in ran
        and (key.startswith(("plan.", "profile.", "train.")) or key == "task.success_threshold")
        and not rundir.is_one_of(key, rundir.NEUTRAL_KEYS)
    )


def profile_sampling(meta: dict) -> str:
    """How the plan's profile sampled each query, from its metadata."""
    k = meta.get("k")
    share = meta.get("full_share")
    full = f" ({share:.0%} of the queries drawn in full)" if share else ""
    if not p_hat_estimates_p(meta):
        return f"up to k = {k} samples each, stopped at the first success (or varied rewards){full}"
    if meta.get("adaptive_round"):
        return (
            f"up to k = {k} samples each, in rounds of {meta['adaptive_round']}, "
            f"stopped once the rewards varied{full}"
        )
    return f"k = {k} samples each"


def all_correct_label(meta: dict) -> str:
    """What p_hat = 1 means under the plan's profile: every sample correct, or (a profile
    stopped at the first success) only the first one drawn."""
    if not p_hat_estimates_p(meta):
        return "correct at the first sample (p_hat = 1)"
    above = meta.get("rule", {}).get("trivial_above", 1.0)
    return "trivial (p_hat = 1)" if above >= 1 else f"trivial (p_hat = 1 or above {above})"


def counted_summary(rows: list[PlanRow], meta: dict) -> tuple[dict, bool]:
    """The plan's summary with its counts taken from its rows, and whether they differ from
    the ones sgpo plan recorded (the plan was edited by hand since)."""
    recorded = meta.get("summary", {})
    if "rule" not in meta or "baseline_group_size" not in recorded:  # an older sgpo's plan
        return recorded, False
    rule = PlanRule(**meta["rule"])
    counted = plan_summary(rows, recorded["baseline_group_size"], None, rule=rule)
    # (a count an older sgpo did not record yet is no edit)
    edited = any(k in recorded and recorded[k] != v for k, v in counted.items())
    return recorded | counted, edited


def what_it_trained(summary: dict) -> str | None:
    """The model (and whether a LoRA adapter of it was trained), data and verifier a run
    trained with (None for an older sgpo's summary)."""
    config = summary.get("config") or {}
    task = config.get("task")
    if not ("model" in summary and "task" in summary and isinstance(task, dict)):
        return None
    from sgpo.tasks import default_verifier

    preset = (task.get("file") or {}).get("preset")
    verifier = task.get("verifier") or default_verifier(task.get("kind", "addition"), preset)
    lora = (config.get("model") or {}).get("lora")
    adapter = (
        f" (a LoRA adapter trained: r = {lora.get('r')}, alpha = {lora.get('alpha')})"
        if isinstance(lora, dict)
        else ""
    )
    return f"Model `{summary['model']}`{adapter}, data `{summary['task']}`, verifier `{verifier}`."


def not_a_finished_run(run_dir: Path) -> str:
    """Why run_dir has no run to report on, from what it holds, and what to run instead."""
    if (run_dir / "compare.json").exists() or (run_dir / "runs").is_dir():
        return (
            f"{run_dir} is an sgpo compare directory: its report is compare.md, which sgpo "
            f"compare writes; one run's report: sgpo report {run_dir}/runs/METHOD/seed-S"
        )
    if (run_dir / METRICS_FILE).exists():
        return (
            f"{run_dir} holds a training run that did not finish (metrics.jsonl, no "
            f"summary.json): finish it with sgpo train --resume {run_dir}, then report"
        )
    if (run_dir / PLAN_FILE).exists() or (run_dir / "profile.parquet").exists():
        return (
            f"{run_dir} holds a profile or a plan and no training run: sgpo train -c CONFIG "
            f"-o {run_dir} trains one"
        )
    return (
        f"{run_dir} is not an sgpo run (sgpo train writes summary.json when it ends), nor a TRL "
        "output_dir (trainer_state.json at its top or in a checkpoint-N folder)"
    )


def write_report(run_dir: Path) -> Path:
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path} not found: {not_a_finished_run(run_dir)}")
    new = set(REPORT_OUTPUTS) - rundir.written_by_sgpo(run_dir)
    rundir.claim_outputs(run_dir, REPORT_OUTPUTS)
    try:
        return _write_report(run_dir, summary_path)
    except BaseException:  # a report that failed lists none of the names it claimed anew
        rundir.release_unwritten(run_dir, new)
        raise


def _write_report(run_dir: Path, summary_path: Path) -> Path:
    summary = read_summary(summary_path)
    records = read_records(run_dir / METRICS_FILE, summary["steps"])
    images = []
    lines = [f"# sgpo run: {summary['method']}", ""]
    if trained := what_it_trained(summary):
        lines += [trained, ""]
    if settings := variant_settings(summary.get("config")):
        lines += [f"Settings not at sgpo's defaults: {settings}", ""]
    # the plan it was trained with: its checkpoint's copy (the run's plan.parquet may have been
    # planned again since), else the one its checkpoint names, else the run's own
    plan_path = checkpoint_plan(run_dir)
    if plan_path is None or not plan_path.exists():
        plan_path = run_dir / PLAN_FILE
    if plan_path.exists():
        plan_rows, meta = read_plan(plan_path)
        images += plot_plan(plan_rows, meta, run_dir)
        if (run_dir / HISTORY_FILE).exists():
            images += plot_plan_history(read_table(run_dir / HISTORY_FILE)[0], plan_rows, run_dir)
        s, edited = counted_summary(plan_rows, meta)
        varied = (
            f"kept at p_hat 0 or 1 for rewards that varied (partial credit): {s['varied_kept']}; "
            if s.get("varied_kept")
            else ""
        )
        lines += [
            "## Plan",
            f"- queries profiled: {s.get('queries')} ({profile_sampling(meta)})",
            f"- {all_correct_label(meta)} dropped: {s.get('trivial')}, "
            f"kept: {s.get('trivial_kept')}; "
            f"unsolvable (p_hat = 0) dropped: {s.get('unsolvable_dropped')}, "
            f"kept: {s.get('unsolvable_kept')}; {varied}kept in all: {s.get('kept')}",
            f"- rollouts per epoch: {s.get('rollouts_per_epoch')} vs "
            f"{s.get('baseline_rollouts_per_epoch')} for fixed G = {s.get('baseline_group_size')} "
            "over every query",
        ]
        if edited:
            lines.append(
                "- the plan was edited after sgpo plan wrote it: the counts above are its "
                "rows'; its predictions are the plan's as planned"
            )
        if "predicted_informative_fraction" in s:
            plan_fraction = s["predicted_informative_fraction"]
            baseline_fraction = s["predicted_baseline_informative_fraction"]
            graded = (
                "; it counts pass/fail outcomes, so the groups of the queries kept for varied "
                "rewards count as uninformative (a lower bound)"
                if s.get("varied_kept")
                else ""
            )
            lines.append(
                f"- predicted from the profile alone: informative fraction {plan_fraction:.2f} "
                f"(fixed G = {s.get('baseline_group_size')}: {baseline_fraction:.2f}); it scores "
                f"the initial policy and training moves p, so the measured one below can differ"
                f"{graded}"
            )
        lines.append("")
    images += plot_training(records, run_dir)
    phases = summary["flops_by_phase"]
    lines += [
        "## Result",
        f"- held-out accuracy (sampled, mean over samples): {summary['initial_eval_acc']:.3f} -> "
        f"{summary['final_eval_acc']:.3f}",
    ]
    if summary.get("initial_eval_acc_greedy") is not None:
        lines.append(
            f"- held-out accuracy (greedy): {summary['initial_eval_acc_greedy']:.3f} -> "
            f"{summary['final_eval_acc_greedy']:.3f}"
        )
    # step 0's buckets, train-all FLOPs and tokens: not in an older sgpo's summary.json
    initial = summary.get("initial_eval_acc_by_bucket", {})
    final = summary["final_eval_acc_by_bucket"]
    other_costs = "".join(
        f"; {label}: {summary[key]:{spec}}"
        for key, label, spec in (
            (
                "total_flops_train_all",
                "train-all (every rollout trained, as verl and TRL do)",
                ".3e",
            ),
            ("generated_tokens", "generated tokens", ","),
        )
        if key in summary
    )
    # the profile's time is in wall_s since summaries had profile_wall_s
    profile_s = summary.get("profile_wall_s")
    profile_wall = f" and the profile's {profile_s:.1f} s" if profile_s else ""
    lines += [
        "- accuracy by bucket, step 0 -> final: "
        + ", ".join(
            f"{k}: {initial.get(k, float('nan')):.3f} -> {v:.3f}" for k, v in final.items()
        ),
        f"- steps: {summary['steps']}, rollouts generated: {summary['rollouts']}, informative "
        f"fraction (in groups whose rewards differ): {summary['informative_fraction']:.3f}",
        f"- total FLOPs (this trainer's: a zero-advantage rollout's backward pass skipped, the "
        f"profile included): {summary['total_flops']:.3e} ("
        + ", ".join(f"{k} {v:.2e}" for k, v in phases.items())
        + ")"
        + other_costs,
        f"- wall time (training loop{profile_wall}): {summary['wall_s']:.1f} s; verifier errors "
        f"{summary['verifier_errors']}, timeouts {summary['verifier_timeouts']}",
        "",
        "## Plots",
        *[f"![{name}]({name})" for name in images],
        "",
    ]
    path = run_dir / REPORT_FILE
    atomic_write_text(path, "\n".join(lines))
    # plots this run has no data for (plan_drift.png without re-planning) stay unclaimed
    rundir.release_unwritten(run_dir, REPORT_OUTPUTS)
    return path
