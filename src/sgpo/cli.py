"""Command line: sgpo demo | profile | plan | train | eval | report | compare | flops |
export-verl."""

from __future__ import annotations

import errno
import functools
import json
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sgpo.cli_help import one_line_summaries
from sgpo.config import RunConfig, load_config
from sgpo.errors import USER_ERRORS, ConfigError, SgpoWarning, TrainingStopped

app = typer.Typer(
    help="sGPO: profile once, size each query's group by its success rate, train easy->hard.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
TABLE_WIDTH_OFF_TERMINAL = 200  # wide enough that compare's table folds no cell
err_console = Console(stderr=True)  # errors: not into a redirected result (sgpo eval > eval.json)


_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """sgpo's own warnings as one line; everyone else's as Python shows them."""
    if issubclass(category, SgpoWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


@app.callback()
def _set_up() -> None:
    # (a user's verifier module in the working directory imports as under `python -m sgpo`:
    # sgpo.verify.working_directory_importable, while it is imported only)
    warnings.showwarning = _show_warning


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML run config (default: built-in defaults)."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config value, e.g. --set train.steps=20, or put one back to its "
        "default, e.g. --set '~train.downsample_to' (repeatable).",
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs in --out.")
]

DEMO_CONFIG = Path(__file__).parent / "demo.yaml"


TRAIN_OUT = Path("runs/train")


def _config(path: Path | None, overrides: list[str] | None, recorded: bool = False) -> RunConfig:
    """The config at path with overrides; recorded (or path a run's own config.yaml or
    profile_config.yaml, given with -c): read as the run trained (sgpo.config.RECORDED)."""
    try:
        return load_config(path, overrides, recorded or _written_by_a_run(path))
    except ConfigError as e:
        _print_error(str(e))
        raise typer.Exit(2) from e


def _refuse_a_resume_that_forgets_its_shard(out: Path) -> None:
    """A profile stopped before its first chunk recorded no shard: resumed without --shard it
    would profile every query, N times a shard's work."""
    from sgpo.profile import PROFILE_FILE
    from sgpo.runfiles import PROFILE_CHUNKS_DIR, PROFILE_CONFIG_FILE

    started = (out / PROFILE_CONFIG_FILE).is_file()
    written = (out / PROFILE_FILE).is_file() or any((out / PROFILE_CHUNKS_DIR).glob("chunk-*"))
    if started and not written:
        raise FileNotFoundError(
            f"{out}: the profile there stopped before its first chunk, which would have "
            "recorded its shard: nothing to resume; run the command it was started with again "
            "(with its --shard, if it had one), which starts it afresh"
        )


def _written_by_a_run(path: Path | None) -> bool:
    """Whether path is the config a run or a profile recorded beside its outputs."""
    from sgpo.runfiles import CONFIG_FILE, METRICS_FILE, PROFILE_CHUNKS_DIR, PROFILE_CONFIG_FILE

    if path is None:
        return False
    folder = Path(path).parent
    if Path(path).name == CONFIG_FILE:
        return (folder / METRICS_FILE).is_file()
    return Path(path).name == PROFILE_CONFIG_FILE and (folder / PROFILE_CHUNKS_DIR).is_dir()


def _print_error(message: str) -> None:
    # Unwrapped and unstyled inside: paths, keys and brackets in the message stay as they are.
    err_console.print(f"[red]{escape(message)}[/red]", soft_wrap=True, highlight=False)


# How each command that trains goes on after a stop: the command the user ran, whole
GOES_ON = {
    "compare": "the same sgpo compare command again continues it and the runs after it",
    "demo": "the same sgpo demo command with --resume (not --overwrite) continues it",
}


# How each command with work to continue goes on after Ctrl-C outside a training step
RESUMED = {
    "profile": "the same sgpo profile command with --resume continues it (one stopped before "
    "it wrote anything: run it again as it was started)",
    "train": "sgpo train --resume DIR continues it (one stopped before it wrote anything: run "
    "it again as it was started)",
    **GOES_ON,
}


def _stop_message(command: str, stop: TrainingStopped) -> str:
    """What a run stopped by SIGINT or SIGTERM kept, and how the command that ran it goes on."""
    if stop.finished:
        return (
            f"stopped after the run in {stop.run_dir} finished at step {stop.step} (its final "
            "model and summary are written): "
            + (f"before what comes next; {GOES_ON[command]}" if command in GOES_ON else "done")
        )
    goes_on = GOES_ON.get(command, f"sgpo train --resume {stop.run_dir} continues from there")
    return f"stopped at step {stop.step}, with a checkpoint in {stop.run_dir}: {goes_on}"


def _user_errors(command: Callable) -> Callable:
    """Bad input (config, data, a file that exists or is missing, a run that diverged) ends
    with its message and exit status 1, not a traceback; anything else is a bug and keeps it."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        if threading.current_thread() is threading.main_thread():
            # a scheduler's SIGTERM ends a command as Ctrl-C does: with its message
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return command(*args, **kwargs)
        except TrainingStopped as e:
            _print_error(_stop_message(command.__name__, e))
            raise typer.Exit(130) from e
        except USER_ERRORS as e:
            _print_error(f"error: {e}")
            raise typer.Exit(2 if isinstance(e, ConfigError) else 1) from e
        except KeyboardInterrupt as e:
            goes_on = RESUMED.get(command.__name__)
            _print_error(
                "interrupted: the outputs already written are complete (each is written "
                "atomically)" + (f"; {goes_on}" if goes_on else "")
            )
            raise typer.Exit(130) from e
        except Exception as e:
            # a read-only or someone else's directory: the file the OS names, or else a bug
            named = isinstance(e, OSError) and e.filename is not None
            if named and (isinstance(e, PermissionError) or e.errno == errno.EROFS):
                _print_error(f"error: {e.filename}: {e.strerror}")
                raise typer.Exit(1) from e
            if not _disk_full(e):
                raise
            # Every output is written atomically: what was complete before is still there.
            what = getattr(e, "filename", None) or "an output"
            _print_error(
                f"error: disk full writing {what} ({getattr(e, 'strerror', None) or e}); "
                "completed outputs are intact: free space, then run again with --resume"
            )
            raise typer.Exit(1) from e

    return wrapper


def _disk_full(e: Exception) -> bool:
    """No space or quota left: an OSError, or safetensors' error (model and checkpoint
    weights), which keeps only the OS error's text."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    codes = "|".join(str(code) for code in (errno.ENOSPC, errno.EDQUOT))
    return type(e).__name__ == "SafetensorError" and bool(
        re.search(rf"\(os error (?:{codes})\)", str(e))
    )


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        index, count = (int(x) for x in shard.split("/"))
    except ValueError as e:
        raise typer.BadParameter(f"--shard must look like I/N, got {shard!r}") from e
    if not 0 <= index < count:
        raise typer.BadParameter(f"--shard I/N needs 0 <= I < N, got {shard!r}")
    return index, count


def _one_of_resume_and_overwrite(resume: object, overwrite: bool) -> None:
    if resume and overwrite:
        raise ConfigError(
            "--resume continues what is in the directory and --overwrite replaces it: pass one"
        )


def print_plan_summary(summary: dict) -> None:
    table = Table(
        title="sGPO plan",
        caption="predicted_*: from the profile alone; *_per_epoch: one epoch's expected cost "
        "(this trainer's FLOPs, train-all FLOPs, generated tokens), the plan's and the baseline's "
        f"(GRPO, G = {summary['baseline_group_size']}); ratio_per_informative_*: the baseline's "
        "cost per informative rollout / the plan's, profile included (above 1: the plan is "
        "cheaper)",
    )
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, float):
            shown = f"{value:.3e}" if abs(value) >= 1e4 else f"{value:.3f}"
        elif value is None and key.startswith("predicted_ratio"):
            shown = "undefined (no informative rollout expected)"
        else:
            shown = str(value)
        table.add_row(key, shown)
    print_table(table)
    prefix = "predicted_ratio_per_informative_"
    dearer = {
        key.removeprefix(prefix): value
        for key, value in summary.items()
        if key.startswith(prefix) and value is not None and value < 1
    }
    if dearer:  # the table says it, in a row among many: said in words too
        currencies = ", ".join(f"{currency} ({ratio:.2f})" for currency, ratio in dearer.items())
        console.print(
            f"[yellow]By this prediction the plan costs more per informative rollout than GRPO "
            f"(G = {summary['baseline_group_size']}) in {currencies}, the profile charged over "
            f"{summary.get('predicted_epochs', 1):.1f} epochs of this config's training: it would "
            "save there only by learning more per rollout.[/yellow]"
        )


def _refuse_if_no_directory(path: Path, named: str) -> None:
    """A run directory given that is not there, or is a file: said so first."""
    if not path.is_dir():
        what = "a file, not a run's directory" if path.exists() else "no such directory"
        raise FileNotFoundError(f"{named}: {what}")


def print_table(table: Table) -> None:
    """A table on stdout; into a file or a pipe (80 columns to rich) unfolded, a row a line."""
    (console if console.is_terminal else Console(width=TABLE_WIDTH_OFF_TERMINAL)).print(table)


profile_app = typer.Typer(
    help="Profile the training queries (k samples each under the initial policy); "
    "`sgpo profile merge` joins shard profiles.",
    pretty_exceptions_enable=False,
)
app.add_typer(profile_app, name="profile")


@profile_app.callback(invoke_without_command=True)
@_user_errors
def profile(
    ctx: typer.Context,
    config: ConfigOpt = None,
    out: OutOpt = Path("runs/profile"),
    set_: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the chunks already in --out.")
    ] = False,
    overwrite: OverwriteOpt = False,
    shard: Annotated[
        str | None, typer.Option(help="Profile only shard I of N (queries I, I+N, ...), e.g. 0/4.")
    ] = None,
) -> None:
    """Sample k responses per training query under the initial policy -> OUT/profile.parquet."""
    if ctx.invoked_subcommand is not None:
        return
    from sgpo.io import read_table
    from sgpo.profile import profile_outcomes, run_profile
    from sgpo.runfiles import PROFILE_CONFIG_FILE

    _one_of_resume_and_overwrite(resume, overwrite)
    shard_index = _parse_shard(shard)  # before the model loads
    recorded = bool(resume and config is None)
    if recorded:  # the config the interrupted profile ran under, as train's
        config = out / PROFILE_CONFIG_FILE
        if not config.exists():
            raise FileNotFoundError(
                f"{config} not found: nothing to resume there (start the profile again as it "
                "was started, without --resume, or pass its --config)"
            )
    if resume and shard_index is None:
        _refuse_a_resume_that_forgets_its_shard(out)
    try:
        path = run_profile(
            _config(config, set_, recorded),
            out,
            resume=resume,
            overwrite=overwrite,
            shard=shard_index,
        )
    except KeyboardInterrupt as e:
        if not (out / PROFILE_CONFIG_FILE).exists():
            raise  # stopped before it wrote anything: _user_errors says to run it again
        again = shlex.join(["sgpo", "profile", "-o", str(out), "--resume"])
        again += f" --shard {shard}" if shard else ""
        _print_error(
            f"interrupted: the finished chunks in {out} are kept (each written atomically); "
            f"`{again}` profiles the rest (it reads the config the profile ran under)"
        )
        raise typer.Exit(130) from e
    console.print(f"profile: {path} ({profile_outcomes(*read_table(path))})")


@profile_app.command("merge")
@_user_errors
def profile_merge(
    shards: Annotated[list[Path], typer.Argument(help="profile.parquet of every shard.")],
    out: OutOpt = Path("runs/profile"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Join shard profiles into OUT/profile.parquet (refuses duplicates and missing shards)."""
    from sgpo.profile import merge_profiles

    console.print(f"profile written to {merge_profiles(shards, out, overwrite)}")


@app.command()
@_user_errors
def plan(
    config: ConfigOpt = None,
    out: OutOpt = Path("runs/profile"),
    profile_path: Annotated[
        Path | None, typer.Option("--profile", help="Profile table (default OUT/profile.parquet).")
    ] = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    export: Annotated[
        str | None,
        typer.Option(help="verl: also write OUT/verl_train.parquet for verl.trainer.main_ppo."),
    ] = None,
) -> None:
    """Filter, size (G = clip(ceil(c/p_hat))) and order the profiled queries -> OUT/plan.parquet."""
    from sgpo.plan import read_plan, run_plan

    if export not in (None, "verl"):
        raise typer.BadParameter(f"--export supports 'verl', got {export!r}")
    cfg = _config(config, set_)
    said: list[str] = []
    exported: list[Path] = []

    def beside_the_plan(path: Path) -> None:
        from sgpo.report import plot_plan

        rows, meta = read_plan(path)  # as written, read once for both
        histograms = plot_plan(rows, meta, out)
        said.append(f"plan written to {path}; histograms: {', '.join(histograms)}")
        if export == "verl":
            from sgpo.verl.export import export_for_config

            verl_path, data_source, verifier = export_for_config(
                cfg, rows, meta, out / "verl_train.parquet"
            )
            said.append(
                f"verl dataset written to {verl_path} (data_source {data_source}, verifier "
                f"{verifier})"
            )
            exported.append(verl_path)

    profile = profile_path or out / "profile.parquet"
    _, summary = run_plan(cfg, profile, out, overwrite, beside_the_plan)
    print_plan_summary(summary)
    for line in said:
        console.print(line)
    if exported:
        from sgpo.verl.cli import describe_export

        describe_export(exported[0])  # what it carries, and in red what it does not


@app.command("show")
@_user_errors
def show_plan(
    plan_path: Annotated[Path, typer.Argument(help="A plan.parquet (sgpo plan's).")],
    reason: Annotated[
        str | None,
        typer.Option(help="Only the queries of this reason: kept, trivial or unsolvable."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows shown (0: all).", min=0)] = 20,
) -> None:
    """A plan's queries as a table: the kept ones in curriculum order (rank), then those the
    plan dropped; each with its profile (solved / samples, p_hat), its G and its reason."""
    from sgpo.core.allocation import KEPT
    from sgpo.plan import kept_in_order, read_plan

    rows, _ = read_plan(plan_path)
    reasons = sorted({r.reason for r in rows})
    if reason is not None and reason not in (KEPT, "trivial", "unsolvable"):
        raise typer.BadParameter(f"--reason must be kept, trivial or unsolvable, got {reason!r}")
    kept = kept_in_order(rows)
    ordered = kept + [r for r in rows if r.reason != KEPT]
    chosen = [r for r in ordered if reason is None or r.reason == reason]
    shown = chosen[:limit] if limit else chosen
    counts = ", ".join(f"{sum(r.reason == x for r in rows)} {x}" for x in reasons)
    table = Table(
        title=f"{escape(str(plan_path))}: {len(rows)} queries ({counts}); "
        f"{sum(r.group_size for r in kept)} rollouts per epoch",
        caption=f"{len(shown)} of {len(chosen)} rows shown"
        + (f" (--limit {limit}; 0 shows all)" if len(shown) < len(chosen) else ""),
    )
    for column in ("rank", "query_id", "difficulty", "solved", "p_hat", "G", "reason", "prompt"):
        table.add_column(column, justify="right" if column in ("rank", "p_hat", "G") else "left")
    for r in shown:
        prompt = " ".join(r.prompt.split())
        table.add_row(
            str(r.rank) if r.reason == KEPT else "-",
            _as_written(r.query_id),
            _as_written(r.difficulty or "-"),
            f"{r.n_correct}/{r.k}",
            f"{r.p_hat:.3f}",
            str(r.group_size),
            r.reason,
            _as_written(prompt if len(prompt) <= 60 else prompt[:57] + "..."),
        )
    print_table(table)


def _as_written(text: str) -> Text:
    """Data shown as it is trained on: no rich markup read in it ("x in [a, b]", "[/]"), its
    control codes as U+FFFD."""
    from sgpo.verify import shown_output

    return Text(shown_output(text))


@app.command()
@_user_errors
def train(
    config: ConfigOpt = None,
    out: OutOpt = TRAIN_OUT,
    plan_path: Annotated[
        Path | None, typer.Option("--plan", help="Plan table for sgpo (default OUT/plan.parquet).")
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option(help="Resume the run in this directory.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train with the configured method (sgpo, grpo or dapo) -> run directory OUT."""
    from sgpo.train import run_train

    _one_of_resume_and_overwrite(resume, overwrite)
    if resume is not None and out != TRAIN_OUT and out.resolve() != resume.resolve():
        raise typer.BadParameter(
            f"--resume {resume} continues the run in that directory; --out {out} names another "
            "(drop --out, or resume the run that is there)"
        )
    run_dir = resume or out
    if resume is not None:
        _refuse_if_no_directory(resume, f"--resume {resume}")
    recorded = resume is not None and config is None  # the run's own config, as it trained
    if recorded:
        if not (resume / "config.yaml").exists():
            raise FileNotFoundError(
                f"{resume / 'config.yaml'} not found: nothing to resume there (a run killed "
                "before it wrote its config has trained nothing: start it again as it was "
                "started, without --resume, or pass the run's --config)"
            )
        config = resume / "config.yaml"
    cfg = _config(config, set_, recorded)
    if plan_path is not None and not cfg.train.uses_plan:
        raise ConfigError(
            f"--plan {plan_path}: train.method {cfg.train.method!r} trains without a plan"
            + (
                " (train.first_visit_profile profiles in training)"
                if cfg.train.first_visit_profile
                else ""
            )
        )
    summary = run_train(cfg, run_dir, plan_path, resume=resume is not None, overwrite=overwrite)
    console.print_json(json.dumps({k: v for k, v in summary.items() if k != "config"}))


@app.command("eval")
@_user_errors
def eval_(
    config: ConfigOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model directory to evaluate (default: the config's initial model)."),
    ] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write eval.json here.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT/eval.json.")] = False,
) -> None:
    """Held-out accuracy (greedy and sampled), overall and per difficulty bucket."""
    from sgpo.io import atomic_write_json, prepare_out_dir
    from sgpo.rundir import claimed
    from sgpo.runfiles import EVAL_FILE

    cfg = _config(config, set_)
    if config is None and model is not None:
        _warn_of_the_runs_config(Path(model), cfg)
    if not out:
        console.print_json(json.dumps(_evaluate(cfg, model)))
        return
    # claimed before any compute (a result that cannot be written is not computed); a refused
    # input leaves no trace in OUT
    with claimed(out, [EVAL_FILE], "eval"):
        prepare_out_dir(out, overwrite, None, EVAL_FILE)
        result = _evaluate(cfg, model)
        atomic_write_json(out / EVAL_FILE, result)
    console.print_json(json.dumps(result))


def _warn_of_the_runs_config(model: Path, cfg: RunConfig) -> None:
    """A model saved by a run (RUN/final, a checkpoint) evaluated without -c is scored on the
    default config's task, likely not the one the run trained on: say which config it has."""
    from sgpo.runfiles import CONFIG_FILE, METRICS_FILE

    if not model.is_dir():  # a hub id
        return
    runs = (d for d in (model, *model.parents[:2]) if (d / METRICS_FILE).is_file())
    run_config = next((d / CONFIG_FILE for d in runs if (d / CONFIG_FILE).is_file()), None)
    if run_config is not None:
        warnings.warn(
            f"{model} was trained by the run whose config is {run_config}; without -c it is "
            f"evaluated on the default config's task ({cfg.task.kind}): pass -c {run_config} "
            "to evaluate it on the run's task and verifier",
            SgpoWarning,
            stacklevel=2,
        )


def _evaluate(cfg: RunConfig, model: str | None) -> dict:
    from sgpo.evaluate import evaluate
    from sgpo.models import load_policy, model_source
    from sgpo.rundir import weights_sha256
    from sgpo.tasks import load_run_task
    from sgpo.validate import check_prompts
    from sgpo.wiring import check_engine_installed, make_engine, make_verifier, sampling_params

    check_engine_installed(cfg, "eval")  # before the data, the verifier and the model
    task = load_run_task(cfg)
    if model is None:
        model_source(cfg)  # a model setting that cannot run this task is named first
    verifier = make_verifier(cfg, task)  # before the model: a mistyped verifier named at once
    policy = load_policy(cfg, path=model)
    check_prompts(policy, task, cfg.sampling.max_new_tokens, train=False)
    result = evaluate(
        make_engine(cfg, policy, "eval"),
        verifier,
        task.eval,
        sampling_params(cfg),
        cfg.eval.n_samples,
        cfg.eval.greedy,
        cfg.seed,
        cfg.task.correct_threshold,
    )
    result |= {
        "model": policy.source,
        # which weights were measured: a directory trained again under the same name is told
        # apart (None for a hub id)
        "model_sha256": weights_sha256(policy.source, policy.substitute_base),
        # a LoRA adapter's base where the one it records could not be loaded (None otherwise)
        "adapter_base": policy.substitute_base,
        # how a response was scored, and from which reward it counted as correct (None: the
        # middle of the verifier's reward range)
        "verifier": verifier.spec,
        "success_threshold": cfg.task.success_threshold,
        "verifier_errors": verifier.stats.errors,
        "verifier_timeouts": verifier.stats.timeouts,
    }
    verifier.close()
    return result


@app.command()
@_user_errors
def report(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory written by sgpo train or demo, or the output_dir of a TRL "
            "run of sgpo.trl.SGPOTrainer."
        ),
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="A TRL run of GRPOTrainer (its output_dir) to put beside a TRL run's report, "
            "in the currencies both logged."
        ),
    ] = None,
) -> None:
    """Write RUN_DIR/report.md and its PNG plots (a demo's ends with its side-by-side against
    GRPO at the same FLOPs, as sgpo demo wrote it)."""
    from sgpo.io import atomic_write_text
    from sgpo.report import write_report
    from sgpo.runfiles import SUMMARY_FILE
    from sgpo.side_by_side import (
        append_demo_side_by_side,
        is_demo_baseline_of,
        unfinished_demo_baseline,
    )
    from sgpo.trl_report import find_trainer_state, write_trl_report

    _refuse_if_no_directory(run_dir, str(run_dir))
    # an sgpo run's summary.json first: a TRL output_dir has none
    if not (run_dir / SUMMARY_FILE).exists() and find_trainer_state(run_dir) is not None:
        path = write_trl_report(run_dir, baseline)
        console.print(f"report written to {path}")
        return
    if baseline is not None:
        raise ConfigError(
            f"--baseline is for a TRL run's report ({run_dir} is none); sgpo runs are compared "
            "by sgpo compare"
        )
    path = write_report(run_dir)
    if is_demo_baseline_of(run_dir):
        append_demo_side_by_side(run_dir, path)
    elif missing := unfinished_demo_baseline(run_dir):
        warnings.warn(missing, SgpoWarning, stacklevel=2)
        atomic_write_text(path, path.read_text() + f"\n{missing}\n")
    console.print(f"report written to {path}")


@app.command()
@_user_errors
def demo(
    out: OutOpt = Path("runs/demo"),
    config: Annotated[Path, typer.Option("--config", "-c", help="Demo config.")] = DEMO_CONFIG,
    set_: SetOpt = None,
    overwrite: Annotated[
        bool | None,
        typer.Option(
            "--overwrite/--no-overwrite",
            help="Replace what --out holds (default: only an earlier demo run).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted demo in --out: the profile, the training run and its "
            "baseline go on from their chunks and checkpoints, a finished stage is kept.",
        ),
    ] = False,
) -> None:
    """The whole pipeline in one directory: profile, plan, train, GRPO at the same FLOPs, report.
    The default config runs the embedded model on the built-in addition task (CPU, no network);
    --config runs any other (examples/gsm8k.yaml: a hub model and dataset)."""
    from sgpo.compare import refuse_decaying_lr
    from sgpo.config import refuse_float16_training
    from sgpo.rundir import claim_outputs, locked, remove_if_untouched
    from sgpo.runfiles import REPORT_OUTPUTS
    from sgpo.side_by_side import SIDE_BY_SIDE, older_demo

    if resume and overwrite:
        raise typer.BadParameter("--resume continues the demo in --out, --overwrite replaces it")
    cfg = _config(config, set_)
    # its baseline runs to the same FLOPs, not to train.steps
    refuse_decaying_lr(cfg, str(config))
    refuse_float16_training(cfg, f"{config}: ")  # before the profile is paid
    made = [folder for folder in (out, *out.parents) if not folder.exists()]
    # The directory is held for the whole demo, its checks included: its stages lock it one
    # by one otherwise, and a second demo could start over in it between them.
    with locked(out, "demo", stages=True):
        try:
            _check_demo_dir(out, overwrite, resume)
            # before any compute: a file of the user's where the report goes is refused now
            # (and the claim is kept once anything is written: it marks the directory as a
            # demo's, which the next demo replaces or resumes)
            claim_outputs(out, [*REPORT_OUTPUTS, SIDE_BY_SIDE], adopt=older_demo)
            _demo_pipeline(cfg, out, overwrite is not False, resume)
        except BaseException:  # (a demo refused as busy never got here: the other's is kept)
            remove_if_untouched(out, made)  # stopped before its first write: no trace left
            raise


def _check_demo_dir(out: Path, overwrite: bool | None, resume: bool) -> None:
    """By default a demo replaces its own earlier, finished run (its report written), nothing
    else; with --no-overwrite, nothing; with --resume it continues its own run, any."""
    from sgpo.profile import PROFILE_FILE
    from sgpo.rundir import written_by_sgpo
    from sgpo.runfiles import (
        METRICS_FILE,
        PLAN_FILE,
        PROFILE_CHUNKS_DIR,
        REPORT_FILE,
        SUMMARY_FILE,
    )
    from sgpo.side_by_side import DEMO_BASELINE_DIR, SIDE_BY_SIDE

    baseline_dir = out / DEMO_BASELINE_DIR
    outputs = [
        out / name
        for name in (PROFILE_FILE, PROFILE_CHUNKS_DIR, PLAN_FILE, METRICS_FILE, SUMMARY_FILE)
    ]
    present = [path for path in (*outputs, baseline_dir) if path.exists()]
    # a demo records its side-by-side plot as its own before it computes anything; an older
    # one shows by its baseline folder
    demo_run = SIDE_BY_SIDE in written_by_sgpo(out) or baseline_dir.is_dir()
    if resume:
        overwrite = None  # continued, not replaced: only another run's directory is refused
    if overwrite is None and present and not demo_run:
        raise FileExistsError(
            f"{out} holds a run that is not a demo's ({present[0].name}, no demo's "
            f"{SIDE_BY_SIDE}); choose another --out, or pass --overwrite to replace it"
        )
    if not resume and overwrite is None and present and not (out / REPORT_FILE).is_file():
        # an interrupted demo, whose stop message offered --resume: not replaced unasked
        raise FileExistsError(
            f"{out} holds a demo that stopped before its report ({present[0].name} written): "
            f"sgpo demo --out {out} --resume continues it (./scripts/demo.sh {out} --resume), "
            "--overwrite starts it over"
        )
    if overwrite is False and present:  # the stages' own refusals would offer their --resume
        offer = " or --resume to continue it," if demo_run else ""
        raise FileExistsError(
            f"{present[0]} already exists; pass --overwrite to replace it,{offer} or choose "
            "another --out"
        )


def _demo_pipeline(cfg: RunConfig, out: Path, overwrite: bool, resume: bool = False) -> None:
    """sgpo demo's six stages, in out (held by the caller); with resume each stage continues
    what an interrupted demo left (the plan, seconds long and the same from the same profile,
    is made again)."""
    import time

    from sgpo.models import model_source
    from sgpo.plan import run_plan
    from sgpo.profile import PROFILE_FILE, run_profile
    from sgpo.report import write_report
    from sgpo.runfiles import PLAN_FILE, STATE_DIR
    from sgpo.side_by_side import (
        DEMO_BASELINE_DIR,
        append_demo_side_by_side,
        run_equal_budget_baseline,
    )
    from sgpo.train import run_train

    baseline_dir = out / DEMO_BASELINE_DIR
    start = time.perf_counter()
    embedded = cfg.model.name_or_path == "embedded"
    console.rule(
        "1/6 " + ("embedded model (shipped with sgpo, sha256-checked)" if embedded else "model")
    )
    console.print(f"model: {model_source(cfg)}")
    console.rule("2/6 profile")
    fresh = overwrite and not resume
    run_profile(cfg, out, resume=resume, overwrite=fresh)
    console.rule("3/6 plan")
    trained = resume and (out / STATE_DIR).is_dir()  # its plan is the sgpo run's: kept
    _, summary = run_plan(
        cfg, out / PROFILE_FILE, out, overwrite=overwrite or resume, trained_on=trained
    )
    print_plan_summary(summary)
    console.rule("4/6 train (sgpo) with held-out evaluation")
    result = run_train(cfg, out, out / PLAN_FILE, resume=resume, overwrite=fresh)
    console.rule(f"5/6 baseline: GRPO(G={cfg.train.group_size}) at the same total FLOPs")
    baseline = run_equal_budget_baseline(cfg, out, baseline_dir, resume)
    console.rule("6/6 report")
    report_path = write_report(out)
    fitted = append_demo_side_by_side(out, report_path)
    initial = ", ".join(
        f"{bucket} {acc:.3f}" for bucket, acc in result["initial_eval_acc_by_bucket"].items()
    )
    console.print(
        f"step 0 held-out accuracy by bucket (sampled): {initial}\n"
        f"held-out accuracy {result['initial_eval_acc']:.3f} -> {result['final_eval_acc']:.3f} "
        f"(sampled, one seed; GRPO(G={cfg.train.group_size}) stopped at the same FLOPs of this "
        f"trainer: {baseline['final_eval_acc']:.3f}), FLOPs {result['total_flops']:.3e} "
        f"(train-all {result['total_flops_train_all']:.3e} against GRPO's "
        f"{baseline['total_flops_train_all']:.3e}), generated tokens "
        f"{result['generated_tokens']:,} against {baseline['generated_tokens']:,}, informative "
        f"fraction {result['informative_fraction']:.3f}",
        *fitted,
        f"{time.perf_counter() - start:.0f} s in all; see {report_path}",
        sep="\n",
    )


@app.command()
@_user_errors
def compare(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Compare YAML (see examples/compare.yaml).")
    ],
    out: OutOpt = Path("runs/compare"),
    seeds: Annotated[
        int | None, typer.Option(help="Use N seeds (from --first-seed) instead of the config's.")
    ] = None,
    first_seed: Annotated[int, typer.Option(help="First seed with --seeds.")] = 0,
    methods: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset of the methods (the baseline always runs)."),
    ] = None,
    budget_currency: Annotated[
        str | None,
        typer.Option(help="Equal budget in flops, flops_train_all or tokens (default: config's)."),
    ] = None,
    overrides: SetOpt = None,
) -> None:
    """Train several methods at equal total cost; write compare.json, compare.md and plots to OUT.

    Finished runs under OUT/runs are reused, so an interrupted compare continues (--set applies
    to every method: give a changed compare its own OUT)."""
    from sgpo.compare import console_table, run_compare

    if first_seed and seeds is None:
        raise ConfigError("--first-seed picks where --seeds N starts; pass --seeds too")
    subset = [m.strip() for m in methods.split(",")] if methods else None
    result = run_compare(config, out, seeds, first_seed, subset, budget_currency, overrides)
    print_table(console_table(result))
    console.print(f"written to {out / 'compare.md'}")


def _register_verl_commands() -> None:
    from sgpo.verl.cli import export_verl, flops  # light: heavy imports are inside

    app.command("flops")(_user_errors(flops))
    app.command("export-verl")(_user_errors(export_verl))


_register_verl_commands()
one_line_summaries(app)
one_line_summaries(profile_app)

if __name__ == "__main__":
    app()
