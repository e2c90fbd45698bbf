"""The same sGPO plan trained by sgpo's own trainer and by TRL (sgpo.trl.SGPOTrainer), plus
plain TRL GRPOTrainer at the same rollout budget: final accuracy per seed and step time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trl_vs_sgpo.py --out runs/trl-bench

Task, model and hyper-parameters: src/sgpo/demo.yaml (embedded model, addition task, 128
rollouts per step, lr 1e-4 with 5 warm-up steps, AdamW betas (0.9, 0.99), grad clip 1, PPO clip
0.2, token-mean loss (TRL: loss_type "dapo"), no std scaling, no KL, temperature 1, float32).
The plan follows the abstract's rule (sgpo.methods.ABSTRACT_RULE).
Each seed profiles and plans once (the task's queries depend on the seed) and trains `--steps`
steps on both paths from that plan; the final model of each run is scored by the same
`sgpo eval` (sampled accuracy, 4 samples per query, the run's seed). Step time: median over
steps after the first (sgpo: metrics.jsonl wall_s increments, generation and update; TRL: its
step_time metric, the same span). Plain GRPO uses G=8 (16 prompts x 8 = 128 rollouts per step)
on all training queries, shuffled.

    --grow-max 128: both sGPO paths grow all-equal groups until mixed (sgpo: train.grow_max with
    grow_train balanced; TRL: SGPOConfig.grow_max), and each reports its informative fraction
    and rollouts generated, to check that the two growths match.
    --downsample-to 4: both sGPO paths train only the 4 most varied responses of each group
    (PODS; sgpo: train.downsample_to; TRL: SGPOConfig.downsample_to).
    --drop-equal-groups: both sGPO paths leave the rows of all-equal groups out of training with
    the update unchanged (sgpo: train.drop_equal_groups with drop_equal_denominator generated;
    TRL: SGPOConfig.drop_equal_groups); each reports its training FLOPs.
    --device cuda: both paths (and every sgpo command) on the GPU, still in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src/sgpo/demo.yaml"
# demo.yaml's first-success profile and dead-group drop, undone: this benchmark's plan is the
# abstract's rule on a full profile
FULL_PROFILE_NO_DROP = ["~profile", "~train.drop_equal_groups", "~train.drop_equal_denominator"]
SGPO = [sys.executable, "-m", "sgpo.cli"]
REWARD = "sgpo.tasks.addition:verify"
BUDGET = 128


# Every sgpo command runs on one model directory (resolved once in main), so the sgpo and TRL
# paths train the same bytes, and plans with the abstract's rule (what BENCHMARKS.md measured),
# whatever plan the demo config uses.
RUN_SET: list[str] = []
DEVICE = "cpu"  # --device: cpu, or cuda for both paths (float32 either way)


def sgpo_cli(*args: str) -> str:
    command = [*SGPO, *args]
    if args[0] in ("profile", "plan", "train", "eval"):
        command += RUN_SET
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"sgpo {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def evaluate(model_dir: Path, seed: int, out: Path, config: Path = CONFIG) -> float:
    """`sgpo eval` of a model directory under config's held-out set, at the run's seed."""
    out.mkdir(parents=True, exist_ok=True)
    sgpo_cli(
        "eval",
        "-c",
        str(config),
        "--model",
        str(model_dir),
        "--set",
        f"seed={seed}",
        "--out",
        str(out),
    )
    return json.loads((out / "eval.json").read_text())["eval_acc"]


def trl_args(out: Path, seed: int, steps: int, **overrides: object):  # noqa: ANN201
    from sgpo.trl import SGPOConfig

    settings = {
        "output_dir": str(out),
        "max_steps": steps,
        "per_device_train_batch_size": BUDGET,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 5,
        "adam_beta1": 0.9,
        "adam_beta2": 0.99,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "epsilon": 0.2,
        "beta": 0.0,
        "loss_type": "dapo",
        "scale_rewards": "none",
        "temperature": 1.0,
        "max_completion_length": 7,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": DEVICE == "cpu",
        # float32 on both paths, on any device (TRL's default bf16 autocast is slow on CPU)
        "bf16": False,
        "seed": seed,
        "disable_tqdm": True,
    }
    return SGPOConfig(**(settings | overrides))


def make_plan(profile_dir: Path, seed: int) -> Path:
    plan = profile_dir / "plan.parquet"
    if not plan.exists():
        for command in ("profile", "plan"):
            sgpo_cli(
                command,
                "-c",
                str(CONFIG),
                "-o",
                str(profile_dir),
                "--overwrite",
                "--set",
                f"seed={seed}",
            )
    return plan


def median_after_first(times: list[float]) -> float:
    return statistics.median(times[1:])


def run_sgpo(plan: Path, out: Path, seed: int, steps: int, settings: list[str]) -> dict:
    sgpo_cli(
        "train",
        "-c",
        str(CONFIG),
        "--plan",
        str(plan),
        "-o",
        str(out),
        "--overwrite",
        "--set",
        f"seed={seed}",
        "--set",
        f"train.steps={steps}",
        "--set",
        "train.eval_every=0",
        *(arg for setting in settings for arg in ("--set", setting)),
    )
    summary = json.loads((out / "summary.json").read_text())
    walls = [
        r["wall_s"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["step"] > 0
    ]
    step_times = [b - a for a, b in zip([0.0, *walls], walls, strict=False)]
    return {
        "acc": evaluate(out / "final", seed, out / "eval"),
        "step_s": median_after_first(step_times),
        "rollouts": summary["rollouts"],
        "informative": summary["informative_fraction"],
        "train_flops": summary["flops_by_phase"]["train"],
    }


def load_model(source: str):  # noqa: ANN201
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32), tokenizer


def sgpo_trainer(plan: Path, source: str, args):  # noqa: ANN001, ANN201
    """sgpo.trl.SGPOTrainer on the plan, the addition task's verifier as its reward."""
    from sgpo.trl import SGPOTrainer, verifier_reward

    model, tokenizer = load_model(source)
    return SGPOTrainer(
        model, verifier_reward(REWARD), plan=plan, args=args, processing_class=tokenizer
    )


def grpo_trainer(plan: Path, source: str, args):  # noqa: ANN001, ANN201
    """TRL's own GRPOTrainer, G = 8, on every query of the plan (the dropped ones too)."""
    from trl import GRPOTrainer

    from sgpo.trl import plan_dataset, verifier_reward

    model, tokenizer = load_model(source)
    args.num_generations = 8  # a GRPOConfig field; set after validation, budget 128 = 16 x 8
    return GRPOTrainer(
        model,
        verifier_reward(REWARD),
        args=args,
        train_dataset=plan_dataset(plan),
        processing_class=tokenizer,
    )


def run_trl(
    plan: Path, source: str, out: Path, seed: int, steps: int, overrides: dict[str, int | bool]
) -> dict:
    trainer = sgpo_trainer(plan, source, trl_args(out, seed, steps, **overrides))
    trainer.train()
    trainer.save_model(str(out / "final"))
    history = trainer.state.log_history
    step_times = [h["step_time"] for h in history if "step_time" in h]
    # as sgpo's summary: responses in informative groups / responses generated, over the run
    generated = [
        (h["sgpo/rollouts"], h["sgpo/informative_fraction"])
        for h in history
        if "sgpo/rollouts" in h
    ]
    return {
        "acc": evaluate(out / "final", seed, out / "eval"),
        "step_s": median_after_first(step_times),
        "rollouts": trainer.sgpo_rollouts,
        "informative": sum(n * f for n, f in generated) / sum(n for n, _ in generated),
        "train_flops": trainer.sgpo_flops["train"],
    }


def run_plain_grpo(plan: Path, source: str, out: Path, steps: int) -> dict:
    trainer = grpo_trainer(plan, source, trl_args(out, 0, steps))
    trainer.train()
    step_times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    return {"step_s": median_after_first(step_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/trl-bench"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--timing-steps", type=int, default=15, help="plain GRPO steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", help="model directory (default: the config's embedded model)")
    parser.add_argument("--grow-max", type=int, default=0, help="grow until mixed (0 = off)")
    parser.add_argument("--downsample-to", type=int, default=0, help="PODS (0 = off)")
    parser.add_argument(
        "--drop-equal-groups", action="store_true", help="all-equal groups left out of training"
    )
    parser.add_argument("--no-plain-grpo", action="store_true", help="skip GRPOTrainer's timing")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N], for both paths")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    from sgpo.config import load_config
    from sgpo.methods import ABSTRACT_RULE, DROP_EQUAL_SAME_UPDATE
    from sgpo.models import model_source

    source = args.model or model_source(load_config(CONFIG))
    RUN_SET.extend(["--set", f"model.name_or_path={source}"])
    RUN_SET.extend(["--set", f"model.device={args.device}", "--set", "model.dtype=float32"])
    for setting in ABSTRACT_RULE:
        RUN_SET.extend(["--set", setting])
    # RUN_SET comes last on every command: the down-sampling asked for here, not the demo's,
    # and the full k-sample profile without the dead-group drop (the path TRL mirrors)
    RUN_SET.extend(["--set", f"train.downsample_to={args.downsample_to}"])
    for setting in FULL_PROFILE_NO_DROP:
        RUN_SET.extend(["--set", setting])
    # The same variant on both paths: sgpo's --set settings, SGPOConfig's fields.
    sgpo_settings: list[str] = []
    trl_overrides: dict[str, int | bool] = {}
    if args.grow_max:
        sgpo_settings += [f"train.grow_max={args.grow_max}", "train.grow_train=balanced"]
        trl_overrides["grow_max"] = args.grow_max
    if args.downsample_to:  # sgpo's side is in RUN_SET
        trl_overrides["downsample_to"] = args.downsample_to
    if args.drop_equal_groups:
        sgpo_settings += DROP_EQUAL_SAME_UPDATE
        trl_overrides["drop_equal_groups"] = True
    results: dict = {"steps": args.steps} | trl_overrides
    for seed in args.seeds:
        # The addition task's queries depend on the run seed: one profile and plan per seed,
        # shared by both paths.
        plan = make_plan(args.out / f"profile-s{seed}", seed)
        results[f"initial/seed{seed}"] = evaluate(Path(source), seed, args.out / f"initial-s{seed}")
        results[f"sgpo-trainer/seed{seed}"] = run_sgpo(
            plan, args.out / f"sgpo-s{seed}", seed, args.steps, sgpo_settings
        )
        results[f"trl-sgpo/seed{seed}"] = run_trl(
            plan, source, args.out / f"trl-s{seed}", seed, args.steps, trl_overrides
        )
        print(json.dumps(results, indent=1), flush=True)
    if not args.no_plain_grpo:
        results["trl-grpo-g8"] = run_plain_grpo(
            plan, source, args.out / "trl-grpo", args.timing_steps
        )
    for path in ("sgpo-trainer", "trl-sgpo"):
        accs = [results[f"{path}/seed{s}"]["acc"] for s in args.seeds]
        steps = [results[f"{path}/seed{s}"]["step_s"] for s in args.seeds]
        results[path] = {
            "acc_mean": statistics.mean(accs),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "step_s_median": statistics.median(steps),
        }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
