"""Command line for the verl integration: export a plan for verl, and sGPO FLOPs of a verl run.

    python -m sgpo.verl.cli export --plan runs/profile/plan.parquet --out runs/verl/train.parquet
    python -m sgpo.verl.cli flops runs/verl/metrics.jsonl --model <hf dir> \
        --data runs/verl/train.parquet --train-batch-size 64 --plan runs/profile/plan.parquet

(registered in sgpo's main CLI as `sgpo export-verl` and `sgpo flops`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

verl_app = typer.Typer(
    help="Run sGPO plans on verl: export a plan as a verl dataset; FLOPs of a verl run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def model_shape_from_dir(model: str):  # noqa: ANN201 - ModelShape, imported lazily
    """sgpo's ModelShape of a local Hugging Face model directory, without loading its weights
    (the model is built on the meta device from its config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sgpo.models import model_shape

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(config)
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
    str | None, typer.Option(help="Verifier import path (default: the config's).")
]
BatchOpt = Annotated[
    int | None, typer.Option(help="verl data.train_batch_size (steps and rollouts per step).")
]


@verl_app.command("export")
def export_verl(
    plan: PlanOpt = Path("runs/profile/plan.parquet"),
    out: ExportOutOpt = Path("runs/verl/train.parquet"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_source: DataSourceOpt = None,
    verifier: VerifierOpt = None,
    train_batch_size: BatchOpt = None,
) -> None:
    """Write the plan's kept queries, in curriculum order with __rollout_n__ = G, for verl."""
    from sgpo.config import ConfigError, load_config
    from sgpo.io import read_table
    from sgpo.verl.export import ROLLOUT_N, export_for_config, step_summary, verl_rows

    try:
        cfg = load_config(config, set_)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    rows, meta = read_table(plan)
    if config is not None:  # the plan must come from this config's task
        from sgpo.plan import check_profile_matches

        try:
            check_profile_matches(meta, cfg, str(plan), None)
        except ValueError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from e
    path, data_source, verifier = export_for_config(cfg, rows, meta, out, data_source, verifier)
    console.print(
        f"verl dataset written to {path} (data_source {data_source}, verifier {verifier})"
    )
    if train_batch_size:
        ns = [r[ROLLOUT_N] for r in verl_rows(rows, data_source)]
        summary = step_summary(ns, train_batch_size)
        console.print_json(json.dumps(summary))
        if summary["rows_not_reached_per_epoch"]:
            dropped = summary["rows_not_reached_per_epoch"]
            console.print(
                f"[yellow]verl drops the last incomplete batch: the last {dropped} "
                f"(hardest) queries are never trained on; choose a train_batch_size "
                f"that divides {len(ns)}[/yellow]"
            )


@verl_app.command("flops")
def flops(
    metrics_jsonl: Annotated[
        list[Path],
        typer.Argument(help="verl file-logger JSONL(s): trainer.logger including file."),
    ],
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
        int | None, typer.Option(help="verl data.train_batch_size (needed with --data).")
    ] = None,
    plan: Annotated[
        Path | None, typer.Option(help="plan.parquet: charges its profiling FLOPs.")
    ] = None,
    use_reference: Annotated[
        bool, typer.Option(help="A reference policy ran (actor.use_kl_loss or use_kl_in_reward).")
    ] = False,
    ppo_epochs: Annotated[int, typer.Option(help="actor.ppo_epochs.")] = 1,
    old_logprob: Annotated[
        bool,
        typer.Option(help="verl recomputed old log-probs (off in rollout_correction.bypass_mode)."),
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write per-step rows as JSONL.")
    ] = None,
) -> None:
    """sGPO's per-phase FLOPs (profile, rollout, logprob, train), per step and cumulative, of a
    verl run, from its logged token counts."""
    from sgpo.core.flops import PHASES, ModelShape
    from sgpo.io import atomic_write_text, read_table
    from sgpo.verl.export import ROLLOUT_N, rollouts_per_step
    from sgpo.verl.flops import read_verl_metrics, verl_run_flops

    plan_meta = read_table(plan)[1] if plan is not None else {}
    if model is not None:
        shape = model_shape_from_dir(model)
    elif "shape" in plan_meta:
        shape = ModelShape(**plan_meta["shape"])
    else:
        raise typer.BadParameter("give --model (or a --plan whose metadata records the shape)")
    per_step = None
    if data is not None:
        if not train_batch_size:
            raise typer.BadParameter("--data needs --train-batch-size")
        per_step = rollouts_per_step([r[ROLLOUT_N] for r in read_table(data)[0]], train_batch_size)
    rows = verl_run_flops(
        read_verl_metrics(metrics_jsonl),
        shape,
        use_reference=use_reference,
        ppo_epochs=ppo_epochs,
        rollouts_per_step=per_step,
        recompute_old_logprob=old_logprob,
        profile_flops=float(plan_meta.get("profile_flops", 0.0)),
    )
    if not rows:
        console.print("[red]no step with prompt_length/mean and response_length/mean[/red]")
        raise typer.Exit(1)
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
            "rollout counts estimated from perf/total_num_tokens (includes verl's "
            "padding sequences); pass --data and --train-batch-size for exact counts"
        )
    if out is not None:
        console.print(f"per-step rows written to {out}")


if __name__ == "__main__":
    verl_app()
