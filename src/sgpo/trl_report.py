"""sgpo report of a TRL output_dir: what an sgpo.trl.SGPOTrainer run cost, read from the
`sgpo/*` metrics it logged into TRL's trainer_state.json, optionally beside a plain
GRPOTrainer run in the currencies both logged. Reads JSON only: TRL need not be installed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (as sgpo.report)
import matplotlib.pyplot as plt  # noqa: E402

from sgpo import rundir
from sgpo.errors import DataError
from sgpo.io import atomic_write_text, read_json
from sgpo.report import is_number, plot_per_step, save_figure
from sgpo.runfiles import TRL_REPORT_OUTPUTS

TRAINER_STATE = "trainer_state.json"
PHASES = ("profile", "rollout", "logprob", "train")
FLOPS = "sgpo/flops_total_cum"
TOKENS = "sgpo/tokens_generated_cum"
ROLLOUTS = "sgpo/rollouts_cum"
# The totals SGPOTrainer.sgpo_totals adds to every training log.
TOTALS = (*(f"sgpo/flops_{phase}_cum" for phase in PHASES), FLOPS, ROLLOUTS, TOKENS)
INFORMATIVE = "sgpo/informative_fraction"  # per generation batch: only in logs that generated
# Per-step curves and the axes they are drawn against, each with its label.
CURVES = {"reward": "reward", INFORMATIVE: "informative fraction"}
COSTS = {FLOPS: "cumulative total FLOPs (sgpo's convention)", TOKENS: "generated tokens"}
TRL_TOKENS = "num_tokens"  # TRL's own: prompt + completion tokens of every batch row, cumulative
COUNT, SHARE = ",.0f", ".3f"  # table formats of counts and of fractions and rewards
FLOPS_SPEC = ".4e"
SPECS = {FLOPS: FLOPS_SPEC, TOKENS: COUNT, TRL_TOKENS: COUNT}
# TRL's bookkeeping among the eval_* keys, left out of the evaluation plot.
EVAL_BOOKKEEPING = (
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
    "eval_num_tokens",
    "eval_loss",
    "eval_entropy",
    "eval_reward_std",
    "eval_frac_reward_zero_std",
    "eval_completions/",
    "eval_clip_ratio/",
)


def located_trainer_state(out_dir: Path, refusal: str) -> tuple[Path, str]:
    """find_trainer_state's, or a FileNotFoundError ending with `refusal`."""
    found = find_trainer_state(out_dir)
    if found is None:
        raise FileNotFoundError(
            f"{out_dir}: no {TRAINER_STATE} at its top or in a checkpoint-N folder; {refusal}"
        )
    return found


def find_trainer_state(out_dir: Path) -> tuple[Path, str] | None:
    """The trainer_state.json of a TRL output_dir and where it came from: the one at its top
    (trainer.save_state), else the newest checkpoint-N's; None where there is neither."""
    top = out_dir / TRAINER_STATE
    checkpoints = [
        (int(path.name.removeprefix("checkpoint-")), path / TRAINER_STATE)
        for path in out_dir.glob("checkpoint-*")
        if path.name.removeprefix("checkpoint-").isdigit() and (path / TRAINER_STATE).is_file()
    ]
    step, path = max(checkpoints) if checkpoints else (None, None)
    if top.is_file():
        top_step = _global_step(top)
        # a resumed run that checkpointed past its last save_state: the checkpoint is newer
        if step is None or top_step is None or step <= top_step:
            return top, f"`{TRAINER_STATE}` at the top of the output_dir"
        return path, (
            f"`checkpoint-{step}/{TRAINER_STATE}`, the newest checkpoint's, newer than the "
            f"{TRAINER_STATE} at the top of the output_dir (step {top_step}: a run resumed "
            "since trainer.save_state())"
        )
    if path is None:
        return None
    return path, (
        f"`checkpoint-{step}/{TRAINER_STATE}`, the newest checkpoint's (the output_dir has no "
        f"{TRAINER_STATE} at its top: TRL writes one there on trainer.save_state())"
    )


def _global_step(path: Path) -> int | None:
    """A trainer_state.json's global_step; None where it cannot be read (read_log_history
    says why, when the report reads it)."""
    try:
        step = read_json(path).get("global_step")
    except DataError:
        return None
    return int(step) if is_number(step) else None


def read_log_history(path: Path) -> tuple[dict, list[dict]]:
    """trainer_state.json and its log_history (DataError where it has none)."""
    state = read_json(path)
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise DataError(f"{path}: no log_history list; it is not TRL's trainer_state.json")
    if not is_number(state.get("global_step")):
        raise DataError(f"{path}: global_step is {state.get('global_step')!r}; it is damaged")
    return state, history


def _numbers(path: Path, entry: dict, keys: tuple[str, ...]) -> None:
    """DataError naming the first of keys that entry lacks or holds as no finite number."""
    for key in keys:
        if not is_number(entry.get(key)):
            raise DataError(
                f"{path}: the log of step {entry.get('step')} has {key!r} = {entry.get(key)!r}; "
                "it is damaged"
            )


def training_logs(path: Path, history: list[dict], key: str, needed: tuple[str, ...]) -> list[dict]:
    """The training logs that hold key (evaluation logs prefix theirs with eval_), each with
    the needed numbers. Not only those with a `reward`: a step that trains on an earlier
    step's batch (num_iterations > 1) logs no batch metrics, and TRL's final train_runtime log
    none, but both log the cost so far."""
    logs = [e for e in history if key in e]
    for entry in logs:
        _numbers(path, entry, ("step", key, *needed))
    return logs


def sgpo_logs(path: Path, history: list[dict]) -> list[dict]:
    """An SGPOTrainer run's training logs, each with sgpo's totals (DataError naming what the
    file lacks where it is no such run: a wrong report is worse than none)."""
    if not any(key.startswith("sgpo/") for entry in history for key in entry):
        raise DataError(
            f"{path}: its log_history holds no sgpo/ metrics ({', '.join(TOTALS[-3:])}, ...), "
            "which sgpo.trl.SGPOTrainer logs at every training log: it is not an SGPOTrainer "
            "run, and a plain GRPOTrainer's logs do not say what sgpo report needs (a "
            "GRPOTrainer run can go beside an SGPOTrainer run's report: --baseline)"
        )
    logs = training_logs(path, history, FLOPS, TOTALS)
    if not logs:
        raise DataError(f"{path}: no training step was logged; nothing to report")
    return logs


def mean_informative_fraction(logs: list[dict]) -> float:
    """Responses in informative groups / responses generated over the run (sgpo's summary
    figure): each log's fraction weighted by the rollouts generated since the log before."""
    weighted = generated = 0.0
    before = 0.0
    for entry in logs:
        rollouts = entry[ROLLOUTS] - before
        before = entry[ROLLOUTS]
        if is_number(entry.get(INFORMATIVE)):
            weighted += entry[INFORMATIVE] * rollouts
            generated += rollouts
    return weighted / generated if generated else 0.0


def eval_points(history: list[dict], logs: list[dict]) -> tuple[dict[str, list], int]:
    """TRL's evaluation metrics, each as (the training log of its step, value) pairs (TRL logs
    a step's training before evaluating at it), and how many evaluations had no cost logged at
    their step (one before training, or logging_steps not dividing eval_steps): left out."""
    cost_at = {entry["step"]: entry for entry in logs}
    evals = [e for e in history if any(key.startswith("eval_") for key in e)]
    placed = [(cost_at[e["step"]], e) for e in evals if e.get("step") in cost_at]
    keys = sorted(
        {
            key
            for _, e in placed
            for key in e
            if key.startswith("eval_")
            and not key.startswith(EVAL_BOOKKEEPING)
            and not key.endswith("/std")
        }
    )
    series = {key: [(cost, _value(e, key)) for cost, e in placed] for key in keys}
    return series, len(evals) - len(placed)


def plot_costs(logs: list[dict], out_dir: Path) -> str:
    """Reward and informative fraction per step against FLOPs and against generated tokens."""
    fig, axes = plt.subplots(1, len(COSTS), figsize=(9, 3.2))
    for ax, (cost, label) in zip(axes, COSTS.items(), strict=True):
        steps = [e for e in logs if INFORMATIVE in e]  # the steps that generated a batch
        plot_per_step(
            ax,
            [e[cost] for e in steps],
            {name: [_value(e, key) for e in steps] for key, name in CURVES.items()},
            label,
        )
    return save_figure(fig, out_dir / "trl_cost_curves.png")


def _value(entry: dict, key: str) -> float | None:
    value = entry.get(key)
    return value if is_number(value) else None


def plot_evals(series: dict[str, list], out_dir: Path) -> str:
    fig, axes = plt.subplots(1, len(COSTS), figsize=(9, 3.2))
    for ax, (cost, label) in zip(axes, COSTS.items(), strict=True):
        for key, points in series.items():
            kept = [(c[cost], v) for c, v in points if v is not None]
            ax.plot([x for x, _ in kept], [y for _, y in kept], "o-", label=key)
        ax.set_xlabel(label)
        ax.set_ylabel("evaluation (TRL's eval_*)")
        ax.legend(fontsize=7)
    return save_figure(fig, out_dir / "trl_eval_vs_cost.png")


def _last(logs: list[dict], key: str) -> float | None:
    """key's value in the last log holding it as a number (None where none does)."""
    return next((e[key] for e in reversed(logs) if is_number(e.get(key))), None)


def plot_beside(
    logs: list[dict], base: list[dict], currencies: dict[str, str], out_dir: Path
) -> str:
    """Each run's reward per step against each currency both logged, and against steps."""
    axes_of = {"step": "optimizer steps", **currencies}
    fig, axes = plt.subplots(1, len(axes_of), figsize=(4.5 * len(axes_of), 3.2), squeeze=False)
    for ax, (cost, label) in zip(axes[0], axes_of.items(), strict=True):
        for name, run in (("SGPOTrainer", logs), ("baseline", base)):
            kept = [
                (e[cost], e["reward"])
                for e in run
                if is_number(e.get("reward")) and is_number(e.get(cost))
            ]
            ax.plot([x for x, _ in kept], [y for _, y in kept], label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("reward per step (TRL's)")
        ax.legend(fontsize=7)
    return save_figure(fig, out_dir / "trl_vs_baseline.png")


def _mean_reward(logs: list[dict]) -> float | None:
    rewards = [e["reward"] for e in logs if is_number(e.get("reward"))]
    return sum(rewards) / len(rewards) if rewards else None


def read_baseline(baseline_dir: Path) -> tuple[str, dict, list[dict]]:
    """A baseline TRL run's name (its directory and trainer_state.json's source), state and
    training logs (those with TRL's num_tokens), read before anything is written: a refused
    baseline leaves no half report."""
    base_path, base_source = located_trainer_state(
        baseline_dir, "--baseline takes a TRL output_dir"
    )
    base_state, base_history = read_log_history(base_path)
    base = training_logs(base_path, base_history, TRL_TOKENS, ())
    if _last(base, "reward") is None:
        raise DataError(
            f"{base_path}: no training step was logged with {TRL_TOKENS!r} and a reward"
        )
    return f"`{baseline_dir}` ({base_source})", base_state, base


def baseline_section(
    logs: list[dict], state: dict, baseline: tuple[str, dict, list[dict]], out_dir: Path
) -> tuple[list[str], list[str]]:
    """The side-by-side against a baseline TRL run (read_baseline's): markdown lines and plot
    names."""
    name, base_state, base = baseline
    # the cumulative costs both runs logged: TRL's num_tokens, and sgpo's own where the
    # baseline is an SGPOTrainer run too (its logs holding num_tokens hold those)
    both = {TRL_TOKENS: "TRL's num_tokens (prompt + completion)"} | COSTS
    currencies = {
        key: label
        for key, label in both.items()
        if _last(logs, key) is not None and _last(base, key) is not None
    }
    rows = [
        ("optimizer steps", state["global_step"], base_state["global_step"], COUNT),
        *(
            (label, _last(logs, key), _last(base, key), SPECS[key])
            for key, label in currencies.items()
        ),
        ("reward, mean over the logged steps", _mean_reward(logs), _mean_reward(base), SHARE),
        ("reward at the last logged step", _last(logs, "reward"), _last(base, "reward"), SHARE),
    ]
    sgpo_only = [label for key, label in COSTS.items() if key not in currencies]
    lines = [
        "## Beside the baseline",
        f"Baseline: {name}.",
        "",
        "| | this run (SGPOTrainer) | baseline |",
        "|---|---|---|",
        *(f"| {label} | {_cell(a, spec)} | {_cell(b, spec)} |" for label, a, b, spec in rows),
        "",
        f"- `{TRL_TOKENS}` is TRL's count, the same code in both runs: the prompt and "
        "completion tokens of every row TRL batched. SGPOTrainer's padding rows count there "
        "(a prompt and one EOS token each) though they are not generated, so it is not this "
        "run's generated tokens above.",
        "- An optimizer step is not the same work in both: an SGPOTrainer batch holds each "
        "planned query's G responses and padding, a GRPOTrainer batch num_generations each.",
    ]
    if sgpo_only:
        lines.append(
            f"- Left out ({', '.join(sgpo_only)}): the baseline did not log them. A "
            "GRPOTrainer's trainer_state.json holds its completions' mean length "
            "(`completions/mean_length`) but not how many completions each step generated "
            "(that follows from the number of processes and steps_per_generation, which TRL "
            "saves only in training_args.bin, a pickle this report does not load), so neither "
            "its generated tokens nor FLOPs in sgpo's convention can be derived from it."
        )
    lines.append("")
    return lines, [plot_beside(logs, base, currencies, out_dir)]


def _cell(value: float | None, spec: str) -> str:
    """A table cell: a number in its format, "-" for none logged."""
    return "-" if value is None else f"{value:{spec}}"


def write_trl_report(out_dir: Path, baseline_dir: Path | None = None) -> Path:
    """out_dir/report.md and its plots for an SGPOTrainer run's TRL output_dir."""
    path, source = located_trainer_state(out_dir, "it is not a TRL output_dir")
    state, history = read_log_history(path)
    logs = sgpo_logs(path, history)
    baseline = read_baseline(baseline_dir) if baseline_dir is not None else None
    rundir.claim_outputs(out_dir, TRL_REPORT_OUTPUTS)
    last = logs[-1]
    images = [plot_costs(logs, out_dir)]
    evals, unplaced = eval_points(history, logs)
    rows = [
        *((f"FLOPs: {phase}", last[f"sgpo/flops_{phase}_cum"], FLOPS_SPEC) for phase in PHASES),
        ("FLOPs: total", last[FLOPS], FLOPS_SPEC),
        ("generated tokens", last[TOKENS], COUNT),
        ("rollouts (responses generated)", last[ROLLOUTS], COUNT),
        ("informative fraction (mean over the run)", mean_informative_fraction(logs), SHARE),
        ("optimizer steps", state["global_step"], COUNT),
    ]
    lines = [
        "# sgpo.trl.SGPOTrainer run",
        "",
        f"Read from {source}; costs as of its last training log, step {last['step']}.",
        "",
        "## Cost",
        "| | cumulative |",
        "|---|---|",
        *(f"| {label} | {_cell(value, spec)} |" for label, value, spec in rows),
        "",
        "- FLOPs in sgpo's convention (sgpo.core.flops, over real tokens): the plan's profile "
        "charged from the start, then generation, log-prob passes and training; SGPOTrainer's "
        "padding rows count a prompt and one EOS token where TRL runs them through its passes.",
        "- Informative fraction: responses in groups whose rewards differ / responses "
        "generated, each log's fraction weighted by the rollouts since the log before (with "
        "logging_steps > 1, a log's fraction is TRL's mean over its window's batches).",
        "",
    ]
    if evals or unplaced:
        lines.append("## Evaluation")
        if evals:
            images.append(plot_evals(evals, out_dir))
            at = next(iter(evals.values()))[-1][0]  # the training log of the last evaluation
            lines.append(
                "- TRL's eval_* metrics at the cost of their step: "
                + ", ".join(f"{k} {_cell(points[-1][1], '.4g')}" for k, points in evals.items())
                + f" at the last one (step {at['step']}, {_cell(at[FLOPS], FLOPS_SPEC)} FLOPs, "
                f"{_cell(at[TOKENS], COUNT)} generated tokens)"
            )
        if unplaced:
            lines.append(
                f"- {unplaced} evaluation(s) left out: no training log at their step gives "
                "their cost (an evaluation before training, or logging_steps not dividing "
                "eval_steps)"
            )
        lines.append("")
    if baseline is not None:
        more_lines, more_images = baseline_section(logs, state, baseline, out_dir)
        lines += more_lines
        images += more_images
    lines += ["## Plots", *[f"![{name}]({name})" for name in images], ""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    # plots this run has no data for (no evaluation, no baseline) stay unclaimed
    rundir.release_unwritten(out_dir, TRL_REPORT_OUTPUTS)
    return report
