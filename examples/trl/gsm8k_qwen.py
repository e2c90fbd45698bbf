"""sGPO through TRL: Qwen2.5-0.5B-Instruct on GSM8K with TRL's GRPOTrainer, driven by an sgpo
plan. Needs the Hugging Face hub (model and dataset) and a GPU; not run in CI.

    # 1. profile and plan with sgpo (the same config as the sgpo-trainer example)
    sgpo profile -c examples/gsm8k.yaml -o runs/gsm8k
    sgpo plan    -c examples/gsm8k.yaml -o runs/gsm8k
    # 2. train with TRL (add --vllm for vLLM colocate generation: pip install 'trl[vllm]')
    python examples/trl/gsm8k_qwen.py --plan runs/gsm8k/plan.parquet --out runs/gsm8k-trl

The benchmark's best plan (README, "sgpo-solvable-g8-ds4-fs-drop-same-update"): profile and
plan with its settings, then `--downsample-to 4` (dead groups are dropped by default):

    BEST="--set profile.adaptive=true --set profile.adaptive_round=1
          --set profile.adaptive_stop=first_success --set plan.unsolvable_keep_fraction=0
          --set plan.drop_trivial=false --set plan.g_min=8 --set plan.g_max=8
          --set plan.bucket_width=1.0"
    sgpo profile -c examples/gsm8k.yaml -o runs/gsm8k-best $BEST
    sgpo plan    -c examples/gsm8k.yaml -o runs/gsm8k-best $BEST
    python examples/trl/gsm8k_qwen.py --plan runs/gsm8k-best/plan.parquet --downsample-to 4 \
        --out runs/gsm8k-best-trl

On several GPUs (data-parallel; README, "Several processes"), keep the 256 rollouts per
generation batch by dividing the per-device batch by the number of processes:

    accelerate launch --num_processes 4 examples/trl/gsm8k_qwen.py \
        --plan runs/gsm8k-best/plan.parquet --downsample-to 4 --per-device-batch 4 \
        --out runs/gsm8k-best-trl-4gpu

(tested on CPU with 2 processes under torchrun against one process; not on GPUs, DeepSpeed
or FSDP: README, "Several processes").

Adding `--set profile.full_share=0.1` to the profile command draws a tenth of the queries in
full, which makes `sgpo plan`'s predicted informative fraction dependable (the plan itself is
unchanged; README, "profile.full_share").

Settings mirror examples/gsm8k.yaml: 256 rollouts per generation batch (16 x 16 accumulation
in one process), 512 new tokens, lr 1e-6 after 10 warm-up steps, PPO clip 0.2, token-mean loss,
no KL. `--model` (a hub id or a local folder), `--max-completion-length` (keep the profile's
sampling.max_new_tokens: the trainer warns otherwise), `--lr` and `--save-steps` change them;
`--resume` continues from the newest checkpoint in --out; `--cpu` trains on the CPU in float32
(a try-out with a small model). The prompts are formatted as the plan's profile formatted them
(its system prompt and template, as the plan records them).
"""

from __future__ import annotations

import argparse

from sgpo.trl import SGPOConfig, SGPOTrainer, plan_dataset, verifier_reward

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True, help="plan.parquet written by `sgpo plan`")
    parser.add_argument("--out", default="runs/gsm8k-trl")
    parser.add_argument("--model", default=MODEL, help="a hub id or a local model folder")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--max-completion-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    parser.add_argument("--cpu", action="store_true", help="train on the CPU, in float32")
    parser.add_argument(
        "--per-device-batch",
        type=int,
        default=16,
        help="rows per process and micro-step (x processes x 16 accumulation steps = rollouts "
        "per generation batch)",
    )
    parser.add_argument("--vllm", action="store_true", help="generate with vLLM (colocate)")
    parser.add_argument("--reestimate", action="store_true", help="online sGPO re-planning")
    parser.add_argument(
        "--grow-max", type=int, default=0, help="grow all-equal groups up to this many (0 = off)"
    )
    parser.add_argument(
        "--downsample-to", type=int, default=0, help="PODS: train each group's m most varied"
    )
    parser.add_argument(
        "--drop-equal-groups",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="all-equal groups skip the forward and backward passes (the update is the same; "
        "sgpo's trainer skips their backward too)",
    )
    return parser


def training_config(args: argparse.Namespace) -> SGPOConfig:
    return SGPOConfig(
        output_dir=args.out,
        max_steps=args.steps,
        # generation_batch_size = per-device batch x processes x 16 = 256 rollouts (16 x 1 x
        # 16): each batch takes plan queries, in curriculum order, while their group sizes fit.
        per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=16,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=10,
        max_grad_norm=1.0,
        epsilon=0.2,
        beta=0.0,
        loss_type="dapo",  # token-mean over the batch; padding rows drop out exactly
        scale_rewards="none",
        logging_steps=1,
        save_steps=args.save_steps,
        report_to=["tensorboard"],
        use_vllm=args.vllm,
        vllm_mode="colocate",
        reestimate=args.reestimate,
        grow_max=args.grow_max,
        downsample_to=args.downsample_to,
        drop_equal_groups=args.drop_equal_groups,
        use_cpu=args.cpu,
        bf16=not args.cpu,
        # Evaluation is left to `sgpo eval -c examples/gsm8k.yaml --model OUT`, the same scorer
        # as the sgpo trainer's runs.
    )


def main() -> None:
    args = build_parser().parse_args()
    trainer = SGPOTrainer(
        args.model,
        verifier_reward("sgpo.verifiers:math_verify"),
        plan=args.plan,
        args=training_config(args),
        train_dataset=plan_dataset(args.plan),  # formatted as the profile formatted them
    )
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
