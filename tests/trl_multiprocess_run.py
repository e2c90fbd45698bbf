"""One SGPOTrainer run for tests/test_trl_multiprocess.py, in one process or as one of several
under torchrun (gloo on CPU). Generation is faked: a row's completion depends on the step, its
prompt and how many rows before it in the whole batch hold the same prompt, so N processes
generate exactly what one process does for the same batch. The extra responses that growth and
down-sampling draw (SGPOTrainer._draw_for) depend on how many such calls came before in the
run and how many requests before them across processes hold the same prompt.

    python trl_multiprocess_run.py MODEL_DIR PLAN OUT_DIR SETTINGS_JSON

SETTINGS_JSON holds SGPOConfig's fields, and besides: fake_vllm_server (generate through a fake
vLLM server), resume_from (a checkpoint to resume), reward_model (score with
StandInRewardModel too), log_extra (a reward function that logs each completion as an extra
column of TRL's completions table) and log_extra_miscounted (one that logs two values however
many completions it scores).

Writes OUT_DIR/rank<r>.json (the log history, sgpo's totals, the rows of each generation batch
the process generated, TRL's completions table after each batch, the tokens each micro-step's
loss counted) and rank<r>.done on each
process's way out, and OUT_DIR/weights.pt (the final parameters) from the main process."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer

from sgpo.trl import SGPOConfig, SGPOTrainer, VerifierReward


def flaky_coin(response: str, reference: str) -> float:
    """A verifier that raises on some responses (a quarter of them, by a hash) and flips a coin
    on the others: mixed groups, and error counts to sum over processes."""
    digest = hashlib.sha256(response.encode()).digest()
    if digest[1] % 8 in (1, 2):
        raise RuntimeError("flaky_coin fails on this response")
    return float(digest[0] % 2)


class StandInRewardModel(torch.nn.Module):
    """A reward model (TRL calls it on the tokenized prompt + completion) whose every forward
    pass takes part in a collective call, as a model sharded by DeepSpeed ZeRO-3 or FSDP
    gathers its weights from every process: a process that skipped it would leave the others
    waiting. Its reward: 1 if the text's last token id is odd."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(_name_or_path="stand_in_reward_model")

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object
    ) -> SimpleNamespace:
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(torch.zeros(1))
        last = input_ids.gather(1, (attention_mask.sum(dim=1) - 1).unsqueeze(1))
        return SimpleNamespace(logits=(last % 2).float())


def logged_completion(completions: list[str], log_extra: Callable, **_: object) -> list[float]:
    """Logs each completion in the column completion_seen of TRL's table; rewards nothing."""
    log_extra("completion_seen", list(completions))
    return [0.0] * len(completions)


def logged_first_two(completions: list[str], log_extra: Callable, **_: object) -> list[float]:
    """Logs two values however many completions it scores (log_extra takes one per
    completion); rewards nothing."""
    log_extra("first_two", completions[:2])
    return [0.0] * len(completions)


def completions_by_process(
    trainer: SGPOTrainer, prompts_by_process: list[list[list[int]]], real_by_process: list[int]
) -> list[list[list[int]]]:
    """Each process's completions of its prompts, whose first real_by_process[p] are its real
    rows (the rest it sends to keep the processes' requests equal): a real row's completion
    depends on the step, its prompt and how many real rows before it hold the same prompt."""
    shares = list(zip(prompts_by_process, real_by_process, strict=True))
    real_prompts = [tuple(p) for prompts, real in shares for p in prompts[:real]]
    completions, before = [], 0
    for prompts, real in shares:
        mine = []
        for i, prompt in enumerate(prompts):
            seen = real_prompts[: before + i].count(tuple(prompt)) if i < real else -1
            mine.append(fake_completion(trainer, f"{prompt}/{seen}/{trainer.state.global_step}"))
        completions.append(mine)
        before += real
    return completions


EXTRA_CALLS = [0]  # generation calls for extra responses so far (alike on every process)


def extra_completions(
    trainer: SGPOTrainer, prompts_by_process: list[list[list[int]]]
) -> list[list[list[int]]]:
    """Each process's completions of its share of a round of extra requests: a request's
    completion depends on the step, how many rounds came before and how many requests before
    it (across processes) hold the same prompt. A share's padding repeats a request after
    every real one, so it moves no real request's completion."""
    EXTRA_CALLS[0] += 1
    seen: list[tuple[int, ...]] = []
    completions = []
    for prompts in prompts_by_process:
        mine = []
        for prompt in prompts:
            key = f"{prompt}/{seen.count(tuple(prompt))}/{trainer.state.global_step}/"
            seen.append(tuple(prompt))
            mine.append(fake_completion(trainer, f"{key}extra{EXTRA_CALLS[0]}"))
        completions.append(mine)
    return completions


def fake_completion(trainer: SGPOTrainer, key: str) -> list[int]:
    """0-2 tokens drawn from key's hash, then EOS (max_completion_length 4)."""
    special = {*trainer.eos_token_ids, trainer.processing_class.pad_token_id}
    tokens = [i for i in range(trainer.processing_class.vocab_size) if i not in special]
    digest = hashlib.sha256(key.encode()).digest()
    length = digest[0] % 3
    return [tokens[d % len(tokens)] for d in digest[1 : 1 + length]] + [trainer.eos_token_ids[0]]


def completions_for(
    trainer: SGPOTrainer, prompts_by_process: list[list[list[int]]]
) -> list[list[list[int]]]:
    """The batch's first draws (the trainer's batch rows set) or a round of extra ones."""
    if trainer._group_ids is None:
        return extra_completions(trainer, prompts_by_process)
    real_by_process = gather_object([len(trainer._real_rows())])
    return completions_by_process(trainer, prompts_by_process, real_by_process)


def fake_generation(
    trainer: SGPOTrainer,
    prompt_ids: list[list[int]],
    images: object,
    multimodal_fields: dict,
    num_generations: int,
    has_tool_images: bool = False,
) -> tuple[list[list[int]], None]:
    """Stands in for GRPOTrainer._generate_single_turn (transformers: each process its own)."""
    every = completions_for(trainer, gather_object([prompt_ids]))
    return every[trainer.accelerator.process_index], None


class FakeVLLMServer:
    """Stands in for TRL's VLLMGeneration in server mode: gathers every process's prompts,
    generates them all and hands each process its equal share, as TRL slices them."""

    def __init__(self, trainer: SGPOTrainer) -> None:
        self.trainer = trainer

    def sync_weights(self) -> None:
        pass

    def generate(
        self, prompts: list, images: object, num_generations: int, profiler: object = None
    ) -> tuple:
        accelerator = self.trainer.accelerator
        every_prompt, share = gather_object(prompts), len(prompts)
        prompts_by_process = [
            every_prompt[p * share : (p + 1) * share] for p in range(accelerator.num_processes)
        ]
        every = completions_for(self.trainer, prompts_by_process)
        flat = [c for completions in every for c in completions]
        mine = flat[accelerator.process_index * share : (accelerator.process_index + 1) * share]
        logprobs = [[[-1.0] for _ in c] for c in mine]  # top-1 lists, as vLLM returns them
        return prompts, mine, logprobs, None


def main(model_dir: str, plan: str, out_dir: str, settings: dict) -> None:
    out = Path(out_dir)
    vllm_server = settings.pop("fake_vllm_server", False)
    resume_from = settings.pop("resume_from", None)
    reward_funcs: list = [VerifierReward("trl_multiprocess_run:flaky_coin", name="flaky_coin")]
    if settings.pop("reward_model", False):
        reward_funcs.append(StandInRewardModel())
    if settings.pop("log_extra", False):
        reward_funcs.append(logged_completion)
    if settings.pop("log_extra_miscounted", False):
        reward_funcs.append(logged_first_two)
    if not vllm_server:
        GRPOTrainer._generate_single_turn = fake_generation
    loss_tokens: list[int] = []  # the tokens the loss and its statistics count, per micro-step
    compute_loss = GRPOTrainer._compute_loss

    def counting_loss(trainer: GRPOTrainer, model: object, inputs: dict) -> torch.Tensor:
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)  # as TRL masks the loss
        loss_tokens.append(int(mask.sum()))
        return compute_loss(trainer, model, inputs)

    GRPOTrainer._compute_loss = counting_loss
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    config = {
        "output_dir": str(out / "trainer"),
        "max_steps": 6,
        "max_completion_length": 4,
        "learning_rate": 1e-2,
        "optim": "sgd",  # Adam would magnify float noise in near-zero gradients
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "scale_rewards": "none",
    }
    args = SGPOConfig(**(config | settings))
    trainer = SGPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs,
        plan=plan,
        args=args,
        processing_class=tokenizer,
        reward_processing_classes=[
            tokenizer if isinstance(f, torch.nn.Module) else None for f in reward_funcs
        ],
    )
    if vllm_server:
        trainer.use_vllm, trainer.vllm_generation = True, FakeVLLMServer(trainer)
        trainer._last_loaded_step = -1
    generate_and_score = trainer._generate_and_score_completions
    generated: list[int] = []  # rows of each generation batch this run generated
    tables: list[dict] = []  # TRL's completions table after each batch

    def counted(inputs: list[dict]) -> dict:
        generated.append(len(inputs))
        output = generate_and_score(inputs)
        logs = trainer._logs
        tables.append({"completion": list(logs["completion"])})
        tables[-1] |= {name: list(column) for name, column in logs["extra"].items()}
        return output

    trainer._generate_and_score_completions = counted
    trainer.train(resume_from_checkpoint=resume_from)
    rank = trainer.accelerator.process_index
    totals = trainer.sgpo_totals()
    if trainer.accelerator.is_main_process:
        weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, out / "weights.pt")
    result = {
        "log_history": trainer.state.log_history,
        "totals": totals,
        "generated": generated,
        "tables": tables,
        "loss_tokens": loss_tokens,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()
    (out / f"rank{rank}.done").write_text("done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
