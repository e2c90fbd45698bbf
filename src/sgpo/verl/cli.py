"""Command line for the verl integration: export a plan for verl, check a launch, and sGPO FLOPs
of verl runs.

    python -m sgpo.verl.cli export --plan runs/profile/plan.parquet --out runs/verl/train.parquet
    python -m sgpo.verl.cli check --data runs/verl/sgpo/train.parquet --train-batch-size 64 ...
    python -m sgpo.verl.cli flops --run runs/verl/sgpo --run runs/verl/grpo --run runs/verl/dapo

(export and flops are registered in sgpo's main CLI as `sgpo export-verl` and `sgpo flops`; the
launch scripts in examples/verl call check, plan-info and record-run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sgpo.cli_help import one_line_summaries
from sgpo.errors import DataError

if TYPE_CHECKING:
    from sgpo.core.flops import ModelShape

verl_app = typer.Typer(
    help="Run sGPO plans on verl: export a plan as a verl dataset; FLOPs of a verl run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def model_shape_from_dir(model: str) -> ModelShape:
    """sgpo's ModelShape of a local Hugging Face model directory, without loading its weights
    (the model is built on the meta device from its config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sgpo.errors import ConfigError
    from sgpo.models import model_shape

    path = Path(model).expanduser()
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        raise ConfigError(
            f"--model {model}: a LoRA adapter directory; give its base model's directory (the "
            "FLOPs count the base model's shape)"
        )
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--model {model}: not a model directory or hub id here: {e}") from e
    try:
        with torch.device("meta"):
            empty = AutoModelForCausalLM.from_config(config)
    except ValueError as e:  # a config transformers has no causal LM for (t5, bert ...)
        raise ConfigError(f"--model {model}: not a causal language model: {e}") from e
    return model_shape(empty)


PlanOpt = Annotated[Path, typer.Option("--plan", help="plan.parquet written by sgpo plan.")]
ExportOutOpt = Annotated[Path, typer.Option("--out", "-o", help="verl training parquet to write.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The sgpo run config the plan was made with: its prompt "
        "template, system prompt and verifier are used.",
    ),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config value (repeatable).")
]
DataSourceOpt = Annotated[
    str | None, typer.Option(help="verl data_source (default sgpo/addition or sgpo/<preset>).")
]
VerifierOpt = Annotated[
    str | None,
    typer.Option(
        help="Verifier import path (default: the config's, with its task.verifier_* settings and "
        "task.success_threshold; a verifier given here runs with the defaults)."
    ),
]
BatchOpt = Annotated[
    int | None, typer.Option(help="verl data.train_batch_size (steps and rollouts per step).")
]
ValOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-out",
        help="Also write the config's held-out split (task.eval, where sgpo's held-out accuracy "
        "is measured) as verl validation data (data.val_files), formatted and scored as the "
        "export.",
    ),
]
FixedGOpt = Annotated[
    int | None,
    typer.Option(
        help="Baseline data (fixed-n GRPO, DAPO): every query of the plan with this group size."
    ),
]
err_console = Console(stderr=True)


def fail(problems: list[str]) -> None:
    """Print each problem and exit 2."""
    for problem in problems:
        err_console.print(f"[red]refused: {escape(problem)}[/red]", soft_wrap=True)
    raise typer.Exit(2)


# file names that say another format than the parquet an export writes
OTHER_FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".arrow", ".yaml", ".yml")


@verl_app.command("export")
def export_verl(
    plan: PlanOpt = Path("runs/profile/plan.parquet"),
    out: ExportOutOpt = Path("runs/verl/train.parquet"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_source: DataSourceOpt = None,
    verifier: VerifierOpt = None,
    train_batch_size: BatchOpt = None,
    fixed_group_size: FixedGOpt = None,
    val_out: ValOutOpt = None,
) -> None:
    """Write the plan's kept queries, in curriculum order with __rollout_n__ = G, for verl."""
    from sgpo.config import ConfigError, load_config
    from sgpo.plan import kept_in_order, read_plan, warn_unplanned
    from sgpo.profile_match import check_profile_matches
    from sgpo.validate import MAX_GROUP_SIZE, check_plan_text
    from sgpo.verl.check import batch_problems
    from sgpo.verl.export import (
        export_for_config,
        export_held_out_for_config,
    )

    # before anything is written: options that cannot make a verl dataset
    if fixed_group_size is not None and fixed_group_size < 2:
        fail([f"--fixed-group-size {fixed_group_size}: verl needs groups of 2 or more"])
    if fixed_group_size is not None and fixed_group_size > MAX_GROUP_SIZE:
        fail([f"--fixed-group-size {fixed_group_size}: above sgpo's cap of {MAX_GROUP_SIZE}"])
    if data_source is not None and not data_source.strip():
        fail(["--data-source is empty: verl groups its metrics by it; give a name"])
    if train_batch_size is not None and train_batch_size < 1:
        fail([f"--train-batch-size {train_batch_size}: must be 1 or more"])
    for option, path in (("--out", out), ("--val-out", val_out)):
        if path is not None and path.is_dir():
            fail([f"{option} {path}: a directory; give the parquet file to write"])
        if path is not None and path.suffix.lower() in OTHER_FORMATS:
            fail([f"{option} {path}: the export is parquet; give a name ending in .parquet"])
    if val_out is not None and val_out.resolve() == out.resolve():
        fail([f"--val-out {val_out} is --out's file: the held-out split needs a file of its own"])
    try:
        cfg = load_config(config, set_)
    except ConfigError as e:
        console.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(2) from e
    rows, meta = read_plan(plan)
    # The plan must come from this config's task, verifier and prompts (without --config, the
    # defaults': the built-in task), or verl would score other samples than it was planned
    # on; the verifier checked is the one exported (--verifier's when given).
    override = [] if verifier is None else [f"task.verifier={verifier}"]
    checked = load_config(config, [*(set_ or []), *override]) if override else cfg
    try:
        task = check_profile_matches(meta, checked, str(plan), None)
        check_plan_text(rows, {q.query_id: q for q in task.train}, plan)
    except ValueError as e:
        # without a config the defaults' task (the built-in one) was checked: that comes first
        first = (
            ""
            if config
            else "no --config (or SGPO_CONFIG in the verl launch) was given, so the plan was "
            "checked against the defaults' task: pass the config the plan was made with. "
        )
        console.print(f"[red]{escape(first + str(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from e
    warn_unplanned(rows, {q.query_id for q in task.train}, plan)
    if train_batch_size is not None:  # before anything is written: a batch it cannot fill
        exported_rows = len(rows) if fixed_group_size is not None else len(kept_in_order(rows))
        if problems := batch_problems(exported_rows, train_batch_size):
            fail(problems)
    try:
        # the held-out split first: a task without one is refused before the export is written
        if val_out is not None:
            held_out = export_held_out_for_config(cfg, val_out, data_source, verifier)
        path, exported_source, exported_verifier = export_for_config(
            cfg, rows, meta, out, data_source, verifier, fixed_group_size, task.train
        )
    except (DataError, ValueError) as e:
        fail([str(e)])
    except FileExistsError as e:  # a file there that sgpo did not write: never replaced
        console.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(1) from e
    console.print(
        f"verl dataset written to {path} (data_source {exported_source}, verifier "
        f"{exported_verifier})"
    )
    if val_out is not None:
        console.print(f"verl validation data (the held-out split) written to {held_out}")
    describe_export(path, train_batch_size)


def describe_export(path: Path, train_batch_size: int | None = None) -> None:
    """Say what the verl export at path carries and what it does not (in red), and with
    train_batch_size its steps (refused when the batch cannot be filled)."""
    from sgpo.io import read_table
    from sgpo.verl.check import batch_problems
    from sgpo.verl.export import ROLLOUT_N, skips_on_history, step_summary

    exported, exported_meta = read_table(path)
    if downsample_to := exported_meta["export"]["downsample_to"]:
        console.print(
            f"down-sampling carried: the launch trains each group's {downsample_to} most varied "
            f"responses (PODS, pkg://sgpo.verl.sampler)"
        )
    if exported_meta["export"].get("drop_equal_groups"):
        whole_batch = exported_meta["export"].get("drop_equal_denominator") == "generated"
        console.print(
            "dead groups dropped: the launch trains no group whose rewards are all equal "
            + (
                "and keeps the token-mean over the whole batch (the update without the drop) "
                if whole_batch
                else ""
            )
            + "(pkg://sgpo.verl.sampler)"
        )
    if (explore := exported_meta["export"]["history_explore"]) < 1:
        console.print(
            f"skip on history carried: the launch skips a query whose last z groups came back "
            f"all equal with probability 1 - {explore}^(z - "
            f"{exported_meta['export']['history_min_streak']} + 1) per epoch and fills the step "
            f"(pkg://sgpo.verl.sampler HistoryDataset, HistoryReplayBuffer)"
        )
    not_carried = exported_meta["export"]["not_carried"]
    if not_carried:
        err_console.print(
            f"[bold red]WARNING: sgpo settings {not_carried} are NOT applied on verl: "
            f"the verl run follows the exported, static plan (sgpo train applies them)[/bold red]",
            soft_wrap=True,
        )
    if train_batch_size is not None:
        ns = [r[ROLLOUT_N] for r in exported]
        if problems := batch_problems(len(ns), train_batch_size):
            fail(problems)
        summary = step_summary(ns, train_batch_size)
        console.print_json(json.dumps(summary))
        if summary["rows_not_reached_per_epoch"] and not skips_on_history(exported_meta["export"]):
            dropped = summary["rows_not_reached_per_epoch"]
            console.print(
                f"[yellow]verl drops the last incomplete batch: the last {dropped} "
                f"(hardest) queries are never trained on; choose a train_batch_size "
                f"that divides {len(ns)}[/yellow]"
            )


@verl_app.command("plan-info")
def plan_info(plan: PlanOpt = Path("runs/profile/plan.parquet")) -> None:
    """Print the plan's profiling settings for a launch script's defaults, one line:
    temperature top_p max_new_tokens model."""
    from sgpo.io import read_table
    from sgpo.verl.check import plan_sampling

    meta = read_table(plan)[1]
    try:
        s = plan_sampling(meta)
    except ValueError as e:
        fail([f"{plan}: {e}"])
    print(s["temperature"], s["top_p"], s["max_new_tokens"], meta.get("model") or "-")


@verl_app.command("data-info")
def data_info(
    data: Annotated[Path, typer.Option(help="The exported verl parquet.")],
    train_batch_size: Annotated[int, typer.Option(help="verl data.train_batch_size.")],
    downsample_to: Annotated[
        int | None,
        typer.Option(help="Groups trained cut to this many rollouts (default: the export's)."),
    ] = None,
) -> None:
    """Print what the launch script reads from an export, one line: downsample_to (0 = none),
    the most rollouts one step of train_batch_size rows trains (each group cut to
    downsample_to: what one mini-batch must hold), the skip on history: history_explore (1 =
    none), history_min_streak, history_target, history_seed, drop_equal_groups (0 or 1),
    drop_equal_denominator (kept or generated) and the reward from which a response is a
    success (task.success_threshold, in the verifier's own units; the middle of its range by
    default), for the reward workers' acc on rows the export did not write, which are scored
    without its range (VAL_DATA's)."""
    from sgpo.core.rewards import CORRECT_THRESHOLD
    from sgpo.io import read_table
    from sgpo.verl.export import HISTORY_OFF, ROLLOUT_N, skips_on_history, step_summary

    rows, meta = read_table(data)
    export = meta.get("export", {})
    cut = export.get("downsample_to", 0) if downsample_to is None else downsample_to
    trained = [min(r[ROLLOUT_N], cut) if cut else r[ROLLOUT_N] for r in rows]
    if skips_on_history(export):  # any train_batch_size rows, the epoch's remainder included
        most = sum(sorted(trained, reverse=True)[:train_batch_size])
    else:  # aligned blocks of train_batch_size rows, the remainder dropped (drop_last)
        most = step_summary(trained, train_batch_size)["rollouts_per_step_max"]
    history = [export.get(key, off) for key, off in HISTORY_OFF.items()]
    drop_equal = int(export.get("drop_equal_groups", False))
    denominator = export.get("drop_equal_denominator", "kept")
    threshold = export.get("success_threshold")
    low, high = export.get("verifier_reward_range") or (0.0, 1.0)
    print(
        export.get("downsample_to", 0),
        most,
        *history,
        drop_equal,
        denominator,
        low + (high - low) * (CORRECT_THRESHOLD if threshold is None else threshold),
    )


@verl_app.command("check")
def check(
    data: Annotated[Path, typer.Option(help="The exported verl parquet.")],
    train_batch_size: Annotated[int, typer.Option(help="verl data.train_batch_size.")],
    plan: Annotated[
        Path | None, typer.Option(help="plan.parquet: check the sampling against its profile.")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="rollout.temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="rollout.top_p.")] = None,
    max_response_length: Annotated[
        int | None, typer.Option(help="data.max_response_length.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="The policy's model dir: check prompt lengths.")
    ] = None,
    max_prompt_length: Annotated[int, typer.Option(help="data.max_prompt_length.")] = 512,
    max_tokens_per_gpu: Annotated[
        int | None,
        typer.Option(help="actor.ppo_max_token_len_per_gpu (needs --max-response-length)."),
    ] = None,
    allow_sampling_mismatch: Annotated[
        bool, typer.Option(help="Launch with sampling other than the plan's profile.")
    ] = False,
    allow_not_carried: Annotated[
        bool, typer.Option(help="Launch although sgpo settings are not carried to verl.")
    ] = False,
    val_data: Annotated[
        Path | None,
        typer.Option(help="The validation parquet: its prompt lengths are checked too."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="sgpo, grpo or dapo: with --plan, --data must be its export of it."),
    ] = None,
    group_size: Annotated[
        int | None, typer.Option(help="A baseline's G: --data must be exported with it.")
    ] = None,
) -> None:
    """Refuse a verl launch that would not do what the plan says (sgpo.verl.check). With
    --model, print (stdout, one line) 1 when verl's prompts open the model's <think> (its
    responses are then read as begun inside it, as sgpo's profile read them), else 0."""
    from sgpo.io import read_table
    from sgpo.plan import read_plan
    from sgpo.verl import check as checks

    rows, meta = read_table(data)
    problems = checks.group_size_problems(rows) + checks.batch_problems(len(rows), train_batch_size)
    not_carried = meta.get("export", {}).get("not_carried")
    if not_carried and not allow_not_carried:
        problems.append(
            f"the plan's config sets {not_carried}, which the verl launch does not apply "
            f"(ALLOW_NOT_CARRIED=1 to launch the static plan anyway)"
        )
    if max_tokens_per_gpu is not None and max_response_length is not None:
        problems += checks.token_budget_problems(
            max_tokens_per_gpu, max_prompt_length, max_response_length
        )
    if plan is not None and method is not None:
        problems += [
            f"DATA={data}: {p}; re-export it (launch without SKIP_EXPORT=1)"
            for p in checks.export_plan_problems(rows, meta, read_plan(plan)[0], method, group_size)
        ]
    if plan is not None:
        try:
            mismatches = checks.sampling_mismatches(
                read_table(plan)[1], temperature, top_p, max_response_length
            )
        except ValueError as e:
            mismatches = [f"{plan}: {e}"]
        if allow_sampling_mismatch:
            for m in mismatches:
                err_console.print(f"[yellow]allowed: {escape(m)}[/yellow]", soft_wrap=True)
        else:
            problems += [
                f"{m} (ALLOW_SAMPLING_MISMATCH=1, --allow-sampling-mismatch, to launch "
                "anyway: the plan's p_hat was not "
                f"measured under these settings)"
                for m in mismatches
            ]
    tokenizer = None
    if model is not None:
        tokenizer, unloadable = checks.model_tokenizer(model)
        problems += unloadable
        if tokenizer is not None:
            too_long, longest = checks.prompt_length_problems(
                rows, tokenizer, model, max_prompt_length
            )
            problems += too_long
            # verl cuts a validation prompt as silently (no chat template: said once above)
            if val_data is not None and tokenizer.chat_template is not None:
                try:
                    val_problems, val_longest = checks.prompt_length_problems(
                        read_table(val_data)[0], tokenizer, model, max_prompt_length
                    )
                except (DataError, KeyError) as e:  # another layout (data.prompt_key): verl's
                    err_console.print(
                        f"[yellow]{escape(str(val_data))} (validation): prompt lengths not checked "
                        f"({escape(repr(e))})"
                        "[/yellow]",
                        soft_wrap=True,
                    )
                    val_problems, val_longest = [], 0
                problems += [f"{val_data} (validation): {p}" for p in val_problems]
                longest = max(longest, val_longest)
            if longest and max_response_length is not None:  # validation generates as long
                problems += checks.context_problems(model, longest, max_response_length)
    if problems:
        fail(problems)
    err_console.print(f"checks passed: {data} ({len(rows)} rows)")
    if tokenizer is not None:
        print(int(checks.prompts_open_thinking(rows, tokenizer)))


@verl_app.command("record-run")
def record_run_cmd(
    run_dir: Annotated[Path, typer.Option(help="The run's directory (shared storage).")],
    method: Annotated[str, typer.Option(help="sgpo, grpo or dapo.")],
    data: Annotated[Path, typer.Option(help="The exported verl parquet.")],
    overrides: Annotated[list[str], typer.Argument(help="verl's hydra overrides, in order.")],
    plan: Annotated[Path | None, typer.Option(help="plan.parquet.")] = None,
    staged: Annotated[
        Path | None,
        typer.Option(help="A new export, moved to --data once the run is checked (not before)."),
    ] = None,
    check_only: Annotated[
        bool,
        typer.Option(
            help="Check against RUN_DIR/run.json without writing it (a --staged export that "
            "passes is still moved to --data, as PRINT_OVERRIDES=1 launches read it there)."
        ),
    ] = False,
    val_data: Annotated[
        Path | None, typer.Option(help="The validation parquet (data.val_files), if any.")
    ] = None,
    staged_val: Annotated[
        Path | None,
        typer.Option(help="A new validation export, moved to --val-data once the run is checked."),
    ] = None,
) -> None:
    """Write RUN_DIR/run.json for `sgpo flops --run`; refuse one that describes another run.
    The data its checkpoints were trained on is replaced by --staged only when the run is the
    same, so a refused launch leaves the run as it was."""
    from sgpo.verl.runs import RunMismatch, record_run

    try:
        path = record_run(
            run_dir, method, overrides, data, plan, staged, check_only, val_data, staged_val
        )
    except (RunMismatch, FileExistsError) as e:
        fail([str(e)])
    if path is not None:
        err_console.print(f"run recorded in {path}")


@verl_app.command("flops")
def flops(
    metrics_jsonl: Annotated[
        list[Path] | None,
        typer.Argument(help="verl file-logger JSONL(s): trainer.logger including file."),
    ] = None,
    run: Annotated[
        list[Path] | None,
        typer.Option(
            help="A run launched by examples/verl/*.sh (its RUN_DIR or run.json; repeatable): "
            "one table over all of them, padding and discarded rollouts counted."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Local Hugging Face model dir of the policy (default: the shape recorded "
            "in --plan)."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The exported verl parquet the run trained on.")
    ] = None,
    train_batch_size: Annotated[
        int | None, typer.Option(help="verl data.train_batch_size (needed with --data).", min=1)
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            help="plan.parquet (or its verl export, which carries the plan's metadata): "
            "charges its profiling FLOPs."
        ),
    ] = None,
    use_reference: Annotated[
        bool, typer.Option(help="A reference policy ran (actor.use_kl_loss or use_kl_in_reward).")
    ] = False,
    ppo_epochs: Annotated[int, typer.Option(help="actor.ppo_epochs.", min=1)] = 1,
    old_logprob: Annotated[
        bool,
        typer.Option(help="verl recomputed old log-probs (off in rollout_correction.bypass_mode)."),
    ] = True,
    batch_multiple: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="verl's padding multiple, lcm(data-parallel size, ppo_mini_batch_size x "
            "rollout.n): charges its padding sequences (--run reads it from the run).",
        ),
    ] = None,
    dapo_group_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="A DAPO run's rollout.n: charges the generation of the groups it discarded "
            "(--run reads it from the run).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write per-step rows as JSONL.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """sGPO's per-phase FLOPs (profile, rollout, logprob, train), per step and cumulative, of
    verl runs, from their logged token counts."""
    from sgpo.core.flops import PHASES, ModelShape
    from sgpo.io import atomic_write_text, read_table
    from sgpo.rundir import written_by_sgpo
    from sgpo.verl.export import export_group_sizes, rollouts_per_step
    from sgpo.verl.flops import (
        DAPO_EVICTED,
        DAPO_SURPLUS,
        PROMPT_MEAN,
        RESPONSE_MEAN,
        read_verl_metrics,
        verl_run_flops,
    )

    if out is not None:  # before any reading: a file that cannot be written is not computed
        if out.is_dir():
            raise FileExistsError(f"--out {out}: a directory; give a file name")
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        if out.name in written_by_sgpo(out.parent):  # a run's metrics.jsonl, say
            raise FileExistsError(
                f"--out {out}: another sgpo command's output, which --overwrite does not "
                "replace; choose another file"
            )
        # A single file may go anywhere (the home directory too, unlike a run directory); its
        # missing folders are made when it is written, so a refused input leaves none behind.
        nearest = next(p for p in out.absolute().parents if p.exists() or p.is_symlink())
        if not nearest.exists():
            raise NotADirectoryError(f"--out {out}: {nearest} is a link to nothing")
        if not nearest.is_dir():
            raise NotADirectoryError(f"--out {out}: {nearest} is a file, not a directory")
        if not os.access(nearest, os.W_OK | os.X_OK):
            raise NotADirectoryError(
                f"--out {out}: cannot write under {nearest} (permission denied)"
            )
    if run:
        if metrics_jsonl:
            raise typer.BadParameter("give metrics files or --run, not both")
        compare_runs(run, model_shape_from_dir(model) if model else None, out)
        return
    if not metrics_jsonl:
        raise typer.BadParameter("give verl metrics files or --run")
    shape = model_shape_from_dir(model) if model is not None else None
    records = read_verl_metrics(metrics_jsonl)
    if not any(PROMPT_MEAN in r and RESPONSE_MEAN in r for r in records):
        files = ", ".join(map(str, metrics_jsonl))
        # an sgpo run's metrics.jsonl has its FLOPs already (flops_*_cum, summary.json)
        raise DataError(
            f"{files}: no step with {PROMPT_MEAN} and {RESPONSE_MEAN}: not a verl "
            "file-logger JSONL (an sgpo train run's costs are in its metrics.jsonl and "
            "summary.json already)"
        )
    plan_meta = read_table(plan)[1] if plan is not None else {}
    if "export" in plan_meta:  # a verl export: its plan's metadata is under "plan"
        plan_meta = plan_meta.get("plan") or {}
    if shape is None and "shape" in plan_meta:
        shape = ModelShape(**plan_meta["shape"])
    if shape is None:
        raise typer.BadParameter("give --model (or a --plan whose metadata records the shape)")
    per_step = None
    if data is not None:
        if train_batch_size is None:
            raise typer.BadParameter("--data needs --train-batch-size")
        per_step = rollouts_per_step(export_group_sizes(data), train_batch_size)
    rows = verl_run_flops(
        records,
        shape,
        use_reference=use_reference,
        ppo_epochs=ppo_epochs,
        rollouts_per_step=per_step,
        recompute_old_logprob=old_logprob,
        profile_flops=float(plan_meta.get("profile_flops", 0.0)),
        batch_multiple=batch_multiple,
        discarded_group_size=dapo_group_size,
    )
    if out is not None:
        atomic_write_text(out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    table = Table(title=f"sGPO FLOPs of a verl run ({len(rows)} logged steps)")
    table.add_column("phase")
    table.add_column("FLOPs", justify="right")
    last = rows[-1]
    for phase in PHASES:
        table.add_row(phase, f"{last[f'flops_{phase}_cum']:.3e}")
    table.add_row("total", f"{last['flops_total_cum']:.3e}")
    console.print(table)
    if any(r["rollouts_source"] == "estimated" for r in rows):
        console.print(
            "rollout counts estimated from perf/total_num_tokens (which includes verl's "
            "padding sequences: taken out with --batch-multiple, counted as rollouts "
            "without it); pass --data and --train-batch-size for exact counts"
        )
    if dapo_group_size is None and any(
        record.get(key) for record in records for key in (DAPO_EVICTED, DAPO_SURPLUS)
    ):
        console.print(
            "[red]DAPO discarded groups in this run; their generation is not charged: pass "
            "--dapo-group-size (its rollout.n), or read the run with --run[/red]"
        )
    if batch_multiple is None:
        console.print(
            "verl's padding sequences are not charged: pass --batch-multiple, or read the run "
            "with --run"
        )
    if out is not None:
        console.print(f"per-step rows written to {out}")


def compare_runs(paths: list[Path], shape: ModelShape | None, out: Path | None) -> None:
    """The comparison table of recorded runs (sgpo.verl.runs), one column per run."""
    from sgpo.core.flops import PHASES
    from sgpo.io import atomic_write_text
    from sgpo.verl.runs import load_run, run_flops, run_summary

    # a row per quantity, a column per run: readable in 80 columns for the few runs compared
    table = Table(title="sGPO FLOPs of verl runs (cumulative; profiling charged to sGPO)")
    quantities = (
        "method",
        "steps",
        "rollouts (discarded)",
        "padding seqs",
        *PHASES,
        "total",
        "of which padding",
        "reward of the trained batch (last)",
        "verifier errors/timeouts",
    )
    columns: dict[str, list[str]] = {}
    lines = []
    for path in paths:
        run = load_run(path)
        rows = run_flops(run, shape)
        if not rows:
            fail([f"{path}: no logged training step yet"])
        s = run_summary(run, rows)
        name = Path(run["path"]).parent.name
        reward = s["reward_mean_last"]
        columns[name] = [
            s["method"],
            str(s["steps"]),
            f"{s['rollouts']} ({s['rollouts_discarded']})",
            str(s["padding_sequences"]),
            *(f"{s[f'flops_{phase}']:.3e}" for phase in PHASES),
            f"{s['flops_total']:.3e}",
            f"{s['flops_padding'] / s['flops_total']:.1%}" if s["flops_total"] else "-",
            "-" if reward is None else f"{reward:.3f}",
            f"{s['verifier']['errors']}/{s['verifier']['timeouts']}",
        ]
        lines += [json.dumps({"run": name} | r, sort_keys=True) + "\n" for r in rows]
    table.add_column("run")
    for name in columns:
        table.add_column(name, justify="right")
    for i, quantity in enumerate(quantities):
        table.add_row(quantity, *(values[i] for values in columns.values()))
    console.print(table)
    console.print(
        "rollouts: generated (DAPO's evicted and surplus groups, generated but not trained, in "
        "brackets); padding seqs: verl's 128-token dummy sequences, trained but not generated, "
        "charged to logprob and train"
    )
    if out is not None:
        atomic_write_text(out, "".join(lines))
        console.print(f"per-step rows written to {out}")


one_line_summaries(verl_app)

if __name__ == "__main__":
    verl_app()
