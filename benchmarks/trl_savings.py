"""The benchmark's best plan against GRPO, both trained by TRL: sgpo.trl.SGPOTrainer with the
plan of `sgpo-solvable-g8-ds4-fs-drop-same-update` against TRL's own GRPOTrainer (G = 8), held-out
accuracy against what a TRL user pays: training wall-clock and generated tokens.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trl_savings.py --out runs/trl-savings \
        --seeds 0 1 2

Mix, model and settings: a compare config's (default examples/compare-balanced.yaml: 192
queries, 128 rollouts per step, lr 1e-4 constant after 5 warm-up steps, token-mean ("dapo"), no
KL, temperature 1, float32; `--device cuda` on a GPU). GRPOTrainer trains 16 prompts x 8
responses per step for the config's steps (72: 6 epochs); SGPOTrainer trains the best plan for
as many steps: the first-success profile and the plan come from `sgpo profile` / `sgpo plan`
with that row's settings, then `SGPOConfig(downsample_to=4, drop_equal_groups=True)`.
Checkpoints every `eval_every` steps (the config's) and the initial model are scored by `sgpo
eval` (the config's held-out set and samples, the run's seed). A checkpoint's cost: TRL's
step_time summed to its step, plus the profile's wall-clock for sGPO; tokens generated, the
profile's included.
Read as compare reads its curves (sgpo.compare): GRPO's final accuracy = the mean of the last
`final_window` evaluations of its seed-mean curve; each currency's ratio = GRPO's total cost /
sGPO's cost where its seed-mean curve first holds that accuracy (None if never).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import trl_vs_sgpo
from trl_vs_sgpo import evaluate, grpo_trainer, sgpo_cli, sgpo_trainer, trl_args

from sgpo.compare import cost_to_target, final_accuracy, load_compare_config, method_config
from sgpo.config import RunConfig, dump_config
from sgpo.core.curves import mean_curve
from sgpo.io import read_table
from sgpo.metrics import profile_tokens
from sgpo.models import model_source

BEST = "sgpo-solvable-g8-ds4-fs-drop-same-update"
BEST_ON_TRL = {"downsample_to": 4, "drop_equal_groups": True}
CURRENCIES = ("wall_s", "tokens")


def write_config(config: RunConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(config))
    return path


def profile_and_plan(config_file: Path, out: Path) -> tuple[Path, float, int]:
    """The best row's plan; the profile's wall-clock and generated tokens."""
    start = time.perf_counter()
    sgpo_cli("profile", "-c", str(config_file), "-o", str(out), "--overwrite")
    profile_s = time.perf_counter() - start
    sgpo_cli("plan", "-c", str(config_file), "-o", str(out), "--overwrite")
    rows, _ = read_table(out / "profile.parquet")
    return out / "plan.parquet", profile_s, profile_tokens(rows)


def train(  # noqa: ANN201
    kind: str, plan: Path, source: str, out: Path, seed: int, steps: int, every: int
):
    """Train with TRL (kind "sgpo": SGPOTrainer with the best plan's settings, "grpo": TRL's
    GRPOTrainer), a checkpoint every `every` steps; return the trainer."""
    overrides = BEST_ON_TRL if kind == "sgpo" else {}
    args = trl_args(out, seed, steps, save_strategy="steps", save_steps=every, **overrides)
    trainer = (sgpo_trainer if kind == "sgpo" else grpo_trainer)(plan, source, args)
    trainer.train()
    return trainer


def step_costs(
    trainer,  # noqa: ANN001 - a TRL trainer after train()
    start_s: float,
    start_tokens: float,
) -> dict[int, tuple[float, float]]:
    """Cumulative (wall-clock, generated tokens) after each step, from TRL's logs."""
    wall, tokens, costs = start_s, start_tokens, {}
    for entry in trainer.state.log_history:
        if "step_time" not in entry:
            continue
        wall += entry["step_time"]
        if "sgpo/tokens_generated" in entry:  # SGPOTrainer: every response drawn
            tokens += entry["sgpo/tokens_generated"]
        else:  # GRPOTrainer: every row of the batch is a response
            tokens += entry["completions/mean_length"] * trainer.args.generation_batch_size
        costs[entry["step"]] = (wall, tokens)
    return costs


def run_seed(cfg_path: Path, seed: int, out: Path) -> dict:
    cfg, base = load_compare_config(cfg_path)
    grpo = method_config(cfg, base, "grpo-g8", seed, [])
    best = method_config(cfg, base, BEST, seed, [])
    source = model_source(grpo)
    grpo_file = write_config(grpo, out / "grpo.yaml")
    plan, profile_s, profile_tok = profile_and_plan(write_config(best, out / "best.yaml"), out)
    initial = evaluate(Path(source), seed, out / "eval-initial", grpo_file)
    every, steps = grpo.train.eval_every, grpo.train.steps
    curves = {}
    for kind, start in (("grpo", (0.0, 0.0)), ("sgpo", (profile_s, float(profile_tok)))):
        trainer = train(kind, plan, source, out / kind, seed, steps, every)
        costs = step_costs(trainer, *start)
        curves[kind] = [{"step": 0, "wall_s": start[0], "tokens": start[1], "acc": initial}]
        for step in range(every, steps + 1, every):
            checkpoint = out / kind / f"checkpoint-{step}"
            acc = evaluate(checkpoint, seed, out / f"eval-{kind}-{step}", grpo_file)
            wall, tokens = costs[step]
            curves[kind].append({"step": step, "wall_s": wall, "tokens": tokens, "acc": acc})
    return curves


def summarise(runs: dict[int, dict], window: int) -> dict:
    """GRPO's final accuracy and each currency's ratio, on the seed-mean curves."""
    summary: dict = {}
    for currency in CURRENCIES:
        mean = {
            kind: mean_curve([[(p[currency], p["acc"]) for p in r[kind]] for r in runs.values()])
            for kind in ("grpo", "sgpo")
        }
        target = final_accuracy(mean["grpo"], window)
        reach = cost_to_target(mean["sgpo"], target, window)
        summary[currency] = {
            "grpo_final_acc": target,
            "sgpo_final_acc": final_accuracy(mean["sgpo"], window),
            "grpo_total": mean["grpo"][-1][0],
            "sgpo_total": mean["sgpo"][-1][0],
            "sgpo_to_target": reach,
            "ratio": mean["grpo"][-1][0] / reach if reach else None,
        }
    finals = {
        kind: [
            final_accuracy([(p["step"], p["acc"]) for p in r[kind]], window) for r in runs.values()
        ]
        for kind in ("grpo", "sgpo")
    }
    summary["final_acc"] = {
        kind: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
        for kind, v in finals.items()
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("examples/compare-balanced.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/trl-savings"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N], for both trainers")
    args = parser.parse_args()
    # both trainers and every sgpo command on the device, in float32 (as trl_vs_sgpo.py)
    trl_vs_sgpo.DEVICE = args.device
    trl_vs_sgpo.RUN_SET.extend(["--set", f"model.device={args.device}"])
    trl_vs_sgpo.RUN_SET.extend(["--set", "model.dtype=float32"])
    runs = {}
    for seed in args.seeds:
        path = args.out / f"seed-{seed}.json"
        if not path.exists():  # finished seeds are kept: an interrupted run continues
            path.write_text(
                json.dumps(run_seed(args.config, seed, args.out / f"s{seed}"), indent=1)
            )
        runs[seed] = json.loads(path.read_text())
    cfg, _ = load_compare_config(args.config)
    result = {"config": str(args.config), "seeds": args.seeds, "runs": runs}
    result["summary"] = summarise(runs, cfg.final_window)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
