"""sgpo.trl: TRL's GRPOTrainer driven by a plan, on the tiny embedded model (CPU).

The plan is written by hand so the expected steps can be worked out here: with a batch of 6
rows, queries in rank order q4(G=1) q3(2) q2(4) q1(2) q0(3) make the batches
[q4, q3] + 3 padding rows, [q2, q1], [q0] + 3 padding rows."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from peft import LoraConfig

pytest.importorskip("trl")

from tiny_run import hand_plan_row, tiny_model_dir, write_hand_plan  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from sgpo.core.advantages import balanced_indices, max_variance_indices  # noqa: E402
from sgpo.core.flops import logprob_flops, train_flops  # noqa: E402
from sgpo.errors import ConfigError, DataError, SgpoWarning  # noqa: E402
from sgpo.io import read_table, write_table  # noqa: E402
from sgpo.models import model_shape, template_sha256  # noqa: E402
from sgpo.rundir import CHAT_TEMPLATE_KEY, VERIFIER_CODE_KEY, weights_sha256  # noqa: E402
from sgpo.schedule import OnlinePlanner, QueryScheduler  # noqa: E402
from sgpo.trl import (  # noqa: E402
    SGPOConfig,
    SGPOTrainer,
    VerifierReward,
    load_plan,
    plan_dataset,
    verifier_reward,
)
from sgpo.trl.advantages import grouped_advantages  # noqa: E402
from sgpo.trl.data import GROUP_KEY, GroupOutcome, PlanRows, StepSchedule  # noqa: E402
from sgpo.verify import verifier_code_sha256  # noqa: E402

GROUP_SIZES = {"q0": 3, "q1": 2, "q2": 4, "q3": 2, "q4": 1}
BATCH_ROWS = 6
EXPECTED_BATCHES = [[("q4", 1), ("q3", 2)], [("q2", 4), ("q1", 2)], [("q0", 3)]]


def prompt_of(query_id: str) -> str:
    i = int(query_id[1:])
    return f"{i}+{i + 1}="


def plan_row(query_id: str, group_size: int, rank: int, reason: str = "kept") -> dict:
    prompt = prompt_of(query_id) if query_id.startswith("q") else "9+9="
    return hand_plan_row(query_id, prompt, group_size, rank, reason)


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trl-plan") / "plan.parquet"
    rows = [plan_row(q, g, rank=4 - int(q[1:])) for q, g in GROUP_SIZES.items()]
    rows.append(plan_row("trivial", 0, rank=-1, reason="trivial"))
    return write_hand_plan(path, rows)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_model_dir(tmp_path_factory.mktemp("trl-model"))


def hashed_reward(completions: list[str], **_: object) -> list[float]:
    """0 or 1 by a hash of the completion: mixed rewards within groups, reproducibly."""
    return [float(hashlib.sha256(c.encode()).digest()[0] % 2) for c in completions]


def make_trainer(
    model_dir: str,
    plan_path: Path,
    tmp_path: Path,
    reward: object = hashed_reward,
    peft_config: LoraConfig | None = None,
    eval_dataset: object = None,
    train_dataset: object = None,
    **config: object,
) -> SGPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    defaults = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": BATCH_ROWS,
        "max_steps": 3,
        "max_completion_length": 4,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "bf16": False,  # TRL's default bf16 autocast is slow on CPU
        "seed": 0,
        "scale_rewards": "none",
    }
    args = SGPOConfig(**(defaults | config))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return SGPOTrainer(
        model,
        reward,
        plan=plan_path,
        args=args,
        processing_class=tokenizer,
        peft_config=peft_config,
        eval_dataset=eval_dataset,
        train_dataset=train_dataset,
    )


def checkpoint(tmp_path: Path, step: int) -> str:
    """The folder of make_trainer's checkpoint at step, as resume_from_checkpoint takes it."""
    return str(tmp_path / "out" / f"checkpoint-{step}")


def runs(items: list[str]) -> list[tuple[str, int]]:
    """Consecutive equal items as (item, count)."""
    out: list[tuple[str, int]] = []
    for item in items:
        if out and out[-1][0] == item:
            out[-1] = (item, out[-1][1] + 1)
        else:
            out.append((item, 1))
    return out


def test_plan_drives_generation_advantages_and_loss(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    trainer = make_trainer(model_dir, plan_path, tmp_path)
    tokenizer = trainer.processing_class
    eos = tokenizer.eos_token_id

    generated: list[list[str]] = []  # per generate() call: the prompt of each row
    new_tokens: list[int] = []  # per generated row: tokens up to and including EOS
    generate = trainer.model.generate

    def spy_generate(*args: object, **kwargs: object) -> torch.Tensor:
        out = generate(*args, **kwargs)
        prompts = kwargs["input_ids"]
        generated.append(tokenizer.batch_decode(prompts, skip_special_tokens=True))
        for row in out[:, prompts.shape[1] :].tolist():
            new_tokens.append(row.index(eos) + 1 if eos in row else len(row))
        return out

    trainer.model.generate = spy_generate

    batches: list[tuple[list[dict], dict]] = []
    score = trainer._generate_and_score_completions

    def spy_score(inputs: list[dict]) -> dict:
        output = score(inputs)
        batches.append((inputs, output))
        return output

    trainer._generate_and_score_completions = spy_score
    trainer.train()

    # The prompts generated for, in order, each as many times as its planned G; only real rows.
    expected = [[(prompt_of(q), g) for q, g in batch] for batch in EXPECTED_BATCHES]
    assert [runs(rows) for rows in generated] == expected
    sum_g = sum(g for batch in EXPECTED_BATCHES for _, g in batch)
    assert len(new_tokens) == sum_g == trainer.sgpo_rollouts
    # counted from the profile's tokens (its 6 queries' k = 4 samples of 2), as sgpo train's
    assert sum(new_tokens) + 6 * 4 * 2 == trainer.sgpo_tokens_generated

    assert len(batches) == 3
    for (inputs, output), planned in zip(batches, EXPECTED_BATCHES, strict=True):
        groups = torch.tensor([x[GROUP_KEY] for x in inputs])
        ids = [x["query_id"] for x, g in zip(inputs, groups.tolist(), strict=True) if g >= 0]
        assert runs(ids) == planned
        padding = groups < 0
        assert int(padding.sum()) == BATCH_ROWS - sum(g for _, g in planned)
        mask = output["completion_mask"]
        assert torch.all(output["advantages"][padding] == 0)
        assert int(mask[padding].sum()) == 0
        assert int(output["num_items_in_batch"]) == int(mask.sum())
        # Real rows: reward minus their own group's mean (scale_rewards="none").
        texts = tokenizer.batch_decode(output["completion_ids"] * mask, skip_special_tokens=True)
        rewards = torch.tensor(hashed_reward(texts))
        for group in groups[~padding].unique().tolist():
            rows = groups == group
            assert torch.allclose(output["advantages"][rows], rewards[rows] - rewards[rows].mean())
        # No loss weight: the loss is the same with the padding rows removed.
        if padding.any():
            keep = ~padding
            trimmed = {
                k: v[keep] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in output.items()
            }
            with torch.no_grad():
                full = trainer._compute_loss(trainer.model, output)
                real = trainer._compute_loss(trainer.model, trimmed)
            assert torch.allclose(full, real, atol=1e-6)

    logs = [h for h in trainer.state.log_history if "sgpo/rollouts" in h]
    assert [h["sgpo/rollouts"] for h in logs] == [3, 6, 3]
    assert [h["sgpo/padding_rows"] for h in logs] == [3, 0, 3]
    assert [h["sgpo/group_size_max"] for h in logs] == [2, 4, 3]
    assert all(h["completions/min_length"] >= 1 for h in logs)
    last = trainer.state.log_history[-1]
    assert last["sgpo/flops_profile_cum"] == 123.0
    assert last["sgpo/rollouts_cum"] == sum_g
    assert last["sgpo/flops_rollout_cum"] > 0 and last["sgpo/flops_train_cum"] > 0
    # TRL's completions table holds the last batch's real rows only.
    assert len(trainer._logs["prompt"]) == len(trainer._logs["advantages"]) == 3


def test_grouped_advantages_match_trl_on_equal_groups() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, float("nan")])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for scale in ("group", "batch", "none"):
        advantages, _ = grouped_advantages(rewards, groups, scale)
        # GRPOTrainer's own lines (sum_then_normalize) with num_generations=4
        mean = torch.nanmean(rewards.view(-1, 4), dim=1).repeat_interleave(4)
        std = (
            nanstd(rewards.view(-1, 4), dim=1).repeat_interleave(4)
            if scale != "batch"
            else nanstd(rewards).expand_as(rewards)
        )
        trl = rewards - mean
        if scale != "none":
            trl = trl / (std + 1e-4)
        assert torch.allclose(advantages, torch.nan_to_num(trl, nan=0.0))


def test_grouped_advantages_unequal_groups_and_padding() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, float("nan")])
    groups = torch.tensor([0, 0, 0, 1, 2, -1])
    advantages, zero_std = grouped_advantages(rewards, groups, "none")
    assert torch.allclose(advantages, torch.tensor([1 / 3, -2 / 3, 1 / 3, 0.0, 0.0, 0.0]))
    assert zero_std.tolist() == [False, False, False, True, True, True]


def test_reestimation_replans_from_observed_groups(plan_path: Path) -> None:
    plan = load_plan(plan_path)
    planner = OnlinePlanner(plan.rows, plan.rule, decay=0.1, prior=(0.0, 0.0), seed=0)
    schedule = StepSchedule(plan, BATCH_ROWS, seed=0, planner=planner, replan_every=2)
    assert [s.query.query_id for s in schedule.next_batch()] == ["q4", "q3"]
    # q2 solved by its whole group: its profile's failures decay away, it becomes trivial and
    # leaves the plan at the re-plan (due every second batch).
    assert not schedule.observe(
        {"q4": GroupOutcome(1, 0, equal=True), "q3": GroupOutcome(1, 1, equal=False)}
    )
    assert schedule.observe({"q2": GroupOutcome(4, 0, equal=True)})
    batch = schedule.next_batch()
    assert sorted((s.query.query_id, s.group_size) for s in batch) == [("q0", 2), ("q1", 2)]


@pytest.mark.parametrize(
    "history",
    [{"explore": 0.3, "target": 0.1}, {"explore": 0.3, "min_streak": 2, "fill": True}],
)
def test_history_skip_takes_the_batches_sgpo_train_takes(plan_path: Path, history: dict) -> None:
    """Skip on history through TRL's schedule: the same batches as sgpo's own QueryScheduler
    given the same outcomes, and the always-solved queries are the ones skipped."""
    plan = load_plan(plan_path)
    schedule = StepSchedule(plan, BATCH_ROWS, seed=0, **history)
    reference = QueryScheduler(list(plan.kept), shuffle=False, seed=0, **history)
    solved = {"q4", "q2"}
    taken: list[str] = []
    for _ in range(30):
        batch = schedule.next_batch()
        assert batch == reference.take(BATCH_ROWS)
        taken += [s.query.query_id for s in batch]
        outcomes = {
            s.query.query_id: GroupOutcome(s.group_size, 0, equal=True)
            if s.query.query_id in solved
            else GroupOutcome(1, 1, equal=False)
            for s in batch
        }
        assert not schedule.observe(outcomes)  # no planner: never a re-plan
        reference.observe_step([(q, q in solved) for q in outcomes])
    assert schedule.scheduler.explore == reference.explore
    assert (reference.explore != 0.3) == ("target" in history)  # adapted towards a target only
    assert schedule.scheduler.history_skipped > 0
    late = taken[len(taken) // 2 :]
    assert late.count("q0") > late.count("q4") + late.count("q2")


def test_plan_dataset_and_validation(model_dir: str, plan_path: Path, tmp_path: Path) -> None:
    dataset = plan_dataset(plan_path)
    assert dataset["query_id"] == ["q4", "q3", "q2", "q1", "q0", "trivial"]
    for per_row_or_micro_batch_mean in ("grpo", "bnpo"):
        with pytest.raises(ValueError, match="loss_type in"):
            make_trainer(model_dir, plan_path, tmp_path, loss_type=per_row_or_micro_batch_mean)
    with pytest.raises(ValueError, match="G=4"):
        make_trainer(model_dir, plan_path, tmp_path, per_device_train_batch_size=2)
    # re-planning may size any query up to the rule's g_max: that must fit a batch too
    rows, meta = read_table(plan_path)
    wide = tmp_path / "wide" / "plan.parquet"
    wide.parent.mkdir()
    write_table(wide, rows, meta | {"rule": meta["rule"] | {"g_max": BATCH_ROWS + 2}})
    make_trainer(model_dir, wide, tmp_path / "wide-static")  # its planned G fit
    with pytest.raises(ValueError, match="re-planning can give a query G up to"):
        make_trainer(model_dir, wide, tmp_path / "wide-online", reestimate=True)
    # a plan whose p_hat is 1 / samples drawn gives re-estimation no start
    rows, meta = read_table(plan_path)
    first_success = tmp_path / "first-success" / "plan.parquet"
    first_success.parent.mkdir()
    write_table(first_success, rows, meta | {"adaptive_stop": "first_success"})
    make_trainer(model_dir, first_success, tmp_path / "static")  # a static plan is fine
    with pytest.raises(ValueError, match="first success"):
        make_trainer(model_dir, first_success, tmp_path / "online", reestimate=True)


class FakeVLLM:
    """Stands in for TRL's VLLMGeneration: records each request, returns fixed completions
    with a sampling log-prob per token (top-1 lists, as vLLM does)."""

    def __init__(self, eos: int) -> None:
        self.eos = eos
        self.requests: list[tuple[int, int]] = []

    def sync_weights(self) -> None:
        pass

    def generate(
        self, prompts: list, images: object, num_generations: int, profiler: object = None
    ) -> tuple:
        self.requests.append((len(prompts), num_generations))
        completions = [[20, 21, self.eos] for _ in prompts]
        logprobs = [[[-1.0] for _ in c] for c in completions]
        return prompts, completions, logprobs, None


def use_fake_vllm(trainer: SGPOTrainer) -> FakeVLLM:
    fake = FakeVLLM(trainer.processing_class.eos_token_id)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, fake, -1
    return fake


def score_first_batch(trainer: SGPOTrainer) -> tuple[list, dict]:
    """The plan's first generation batch, generated and scored as in training: (its slots,
    TRL's batch output)."""
    slots = trainer.plan_sampler.batch_slots(trainer.schedule.next_batch())
    rows = PlanRows(trainer.train_dataset)
    trainer.model.train()
    return slots, trainer._generate_and_score_completions([rows[s] for s in slots])


def test_vllm_path_requests_real_rows_only(model_dir: str, plan_path: Path, tmp_path: Path) -> None:
    trainer = make_trainer(model_dir, plan_path, tmp_path)
    fake = use_fake_vllm(trainer)
    slots, output = score_first_batch(trainer)

    assert fake.requests == [(3, 1)]  # q4 x 1 + q3 x 2, one completion per prompt
    padding = torch.tensor([s.group < 0 for s in slots])
    assert int(output["completion_mask"][padding].sum()) == 0
    assert torch.all(output["advantages"][padding] == 0)
    # Padding's sampling log-prob is NaN, so its importance ratio is exactly 1, not NaN.
    assert torch.isnan(output["sampling_per_token_logps"][padding, 0]).all()
    assert torch.all(output["importance_sampling_ratio"][padding] == 1)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    assert torch.isfinite(trainer._compute_loss(trainer.model, output))


def test_vllm_path_grows_with_one_request_per_round(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    reward = every_fifth_correct()
    trainer = make_trainer(model_dir, plan_path, tmp_path, reward, grow_max=8, grow_round=2)
    fake = use_fake_vllm(trainer)
    slots, output = score_first_batch(trainer)

    # the batch's 3 real rows, then one request per growth round: q4 and q3 (2 each), then q3
    # alone twice (the scoring trace of test_reestimation_of_a_grown_group_...)
    assert fake.requests == [(3, 1), (4, 1), (2, 1), (2, 1)]
    real = torch.tensor([s.group >= 0 for s in slots])
    # the chosen responses keep their sampling log-probs; padding's stay NaN
    assert torch.isfinite(output["sampling_per_token_logps"][real, 0]).all()
    assert torch.isnan(output["sampling_per_token_logps"][~real, 0]).all()
    assert trainer.sgpo_rollouts == 11


def test_a_grown_batchs_verifier_calls_are_checked_together(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """A verifier failing on every response a grown batch drew stops the run, counted over all
    of them: a round of extra responses alone may hold a single one that failed."""
    failing = verifier_reward("bad_verifiers:raising")
    trainer = make_trainer(model_dir, plan_path, tmp_path, failing, grow_max=8, grow_round=2)
    # the 3 real rows' first draws, then q4 and q3 grown to 8 each (no outcome shows)
    with pytest.raises(DataError, match="all 16 calls on a batch of 16 completions failed"):
        score_first_batch(trainer)
    assert failing.checks_each_batch  # each call checked again outside growth


@pytest.mark.parametrize(
    "config", [{"reestimate": True, "replan_every": 1}, {"history_explore": 0.5}]
)
def test_each_group_is_observed(
    model_dir: str, plan_path: Path, tmp_path: Path, config: dict
) -> None:
    """Re-estimation and skip on history both see every group's outcomes."""
    trainer = make_trainer(model_dir, plan_path, tmp_path, **config)
    observed: list[dict[str, GroupOutcome]] = []
    trainer.schedule.observe = lambda outcomes: observed.append(outcomes) or False
    _, output = score_first_batch(trainer)

    texts = trainer.processing_class.batch_decode(
        output["completion_ids"] * output["completion_mask"], skip_special_tokens=True
    )
    rewards = hashed_reward(texts)
    wins = {"q4": sum(rewards[0:1]), "q3": sum(rewards[1:3])}
    assert observed == [
        {
            "q4": GroupOutcome(wins["q4"], 1 - wins["q4"], equal=True),
            "q3": GroupOutcome(wins["q3"], 2 - wins["q3"], equal=rewards[1] == rewards[2]),
        }
    ]


def test_a_streak_is_rewards_all_equal_not_all_successes(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """Several weighted reward functions (correctness and a format reward, say): a group
    whose rewards differ has advantages to train on, so it is not all-equal for the skip on
    history, though every response clears success_threshold."""

    def always_correct(completions: list[str], **_: object) -> list[float]:
        return [1.0] * len(completions)

    def alternating_format(completions: list[str], **_: object) -> list[float]:
        return [float(i % 2) for i in range(len(completions))]  # q4: 0; q3: 1, 0

    trainer = make_trainer(
        model_dir,
        plan_path,
        tmp_path,
        [always_correct, alternating_format],
        reward_weights=[1.0, 0.2],
        history_explore=0.5,
    )
    observed: list[dict[str, GroupOutcome]] = []
    trainer.schedule.observe = lambda outcomes: observed.append(outcomes) or False
    score_first_batch(trainer)
    assert observed == [
        {"q4": GroupOutcome(1, 0, equal=True), "q3": GroupOutcome(2, 0, equal=False)}
    ]


def test_reestimation_of_a_grown_group_counts_everything_it_drew(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    reward = every_fifth_correct()
    trainer = make_trainer(
        model_dir, plan_path, tmp_path, reward, reestimate=True, grow_max=8, grow_round=2
    )
    observed: list[dict[str, GroupOutcome]] = []
    trainer.schedule.observe = lambda outcomes: observed.append(outcomes) or False
    score_first_batch(trainer)
    # Scoring order (every fifth correct): q4's 1 and q3's 2 responses 0 0 0; round 1, both
    # groups: q4 0 1 (mixed), q3 0 0; round 2: q3 0 0; round 3: q3 1 0 (mixed, 8 drawn).
    assert reward.scored == 11
    assert observed == [{"q4": GroupOutcome(1, 2, False), "q3": GroupOutcome(1, 7, False)}]


def trained_batches(trainer: SGPOTrainer) -> list[list[tuple[str, int]]]:
    """Records each training batch's (query, G) runs as the trainer scores it."""
    batches: list[list[tuple[str, int]]] = []
    score = trainer._generate_and_score_completions

    def spy_score(inputs: list[dict]) -> dict:
        batches.append(runs([x["query_id"] for x in inputs if x[GROUP_KEY] >= 0]))
        return score(inputs)

    trainer._generate_and_score_completions = spy_score
    return batches


@pytest.mark.parametrize(
    "settings",
    [
        # q4 and q2 always solved: skips make plan epochs shorter than the static plan's
        {"history_explore": 0.05},
        # never solved: re-plans grow every G to g_max, plan epochs longer
        {"reestimate": True, "replan_every": 1, "reestimate_decay": 0.1},
    ],
)
def test_training_runs_to_max_steps_whatever_length_the_plan_epochs_take(
    model_dir: str, plan_path: Path, tmp_path: Path, settings: dict
) -> None:
    solved = {prompt_of("q4"), prompt_of("q2")} if "history_explore" in settings else set()
    order = itertools.count()

    def reward(completions: list[str], prompts: list[str], **_: object) -> list[float]:
        return [1.0 if p in solved else float(bool(solved) and next(order) % 2) for p in prompts]

    trainer = make_trainer(model_dir, plan_path, tmp_path, reward, max_steps=9, **settings)
    drawn: list[list[tuple[str, int]]] = []
    take = trainer.schedule.next_batch

    def spy_take() -> list:
        batch = take()
        drawn.append([(s.query.query_id, s.group_size) for s in batch])
        return batch

    trainer.schedule.next_batch = spy_take
    trained = trained_batches(trainer)
    trainer.train()
    assert trainer.state.global_step == 9
    assert len(trained) == len(drawn) == 9  # every batch drawn is trained, none left over
    scheduler = trainer.schedule.scheduler
    if "history_explore" in settings:
        assert scheduler.history_skipped > 0 and scheduler.epoch > 2  # 3 static epochs
    else:
        assert any(g > GROUP_SIZES[q] for batch in drawn for q, g in batch)  # grown by re-plans
        # fewer queries than the 3 static epochs' 15: plan epochs took more batches
        assert sum(map(len, drawn)) < 3 * len(GROUP_SIZES)


@pytest.mark.parametrize(
    "drawing", [{}, {"grow_max": 8, "grow_round": 2}, {"downsample_to": 2}], ids=str
)
def test_completions_table_keeps_a_reward_functions_extra_columns_aligned(
    model_dir: str, plan_path: Path, tmp_path: Path, drawing: dict
) -> None:
    def reward(
        completions: list[str], prompts: list[str], log_extra: Callable, **_: object
    ) -> list[float]:
        log_extra("prompt_seen", list(prompts))
        return [float(i % 2) for i in range(len(completions))]

    # evaluations, as plain GRPO (their rows' column kept), at step 2 and after the last
    evaluated = {"eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 2}
    trainer = make_trainer(
        model_dir,
        plan_path,
        tmp_path,
        reward,
        eval_dataset=plan_dataset(plan_path).select(range(2)),
        log_completions=True,
        **drawing | evaluated,
    )
    trainer.train()  # TRL builds the table from these columns at every log
    logs = trainer._logs
    assert any("eval_reward" in h for h in trainer.state.log_history)
    # the table ends with the last evaluation's rows, after the training rows of its step
    seen, prompts = list(logs["extra"]["prompt_seen"]), list(logs["prompt"])
    assert len(seen) == len(prompts) and all(
        v in (None, p) for v, p in zip(seen, prompts, strict=True)
    )
    if drawing:  # responses drawn beyond the rows would not line up: training's are dropped
        assert None in seen and seen[-2:] == prompts[-2:]
    else:
        assert seen == prompts
        for h in (h for h in trainer.state.log_history if "reward" in h):  # drawn = the rows
            assert h["sgpo/reward_generated_mean"] == pytest.approx(h["reward"])


def test_a_column_logged_in_training_only_stays_aligned_through_an_evaluation(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """A reward function that logs a column only where its rows have it (training's, not the
    held-out rows'): the evaluation's rows get none, and the table stays as long as its
    prompts (TRL's table indexed past the column's end)."""

    def reward(completions: list[str], log_extra: Callable, **columns: object) -> list[float]:
        if "hint" in columns:
            log_extra("hint", list(columns["hint"]))
        return [float(i % 2) for i in range(len(completions))]

    trainer = make_trainer(
        model_dir,
        plan_path,
        tmp_path,
        reward,
        train_dataset=plan_dataset(plan_path).map(lambda row: {"hint": row["query_id"]}),
        eval_dataset=plan_dataset(plan_path).select(range(2)),
        log_completions=True,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=2,
    )
    trainer.train()
    logs = trainer._logs
    assert any("eval_reward" in h for h in trainer.state.log_history)
    assert len(logs["extra"]["hint"]) == len(logs["prompt"])
    assert list(logs["extra"]["hint"])[-2:] == [None, None]  # the last evaluation's rows


def test_a_reward_function_logging_another_count_than_its_completions_is_refused(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """log_extra takes one value per completion: a column of another length would not line
    up with the table's rows."""

    def reward(completions: list[str], log_extra: Callable, **_: object) -> list[float]:
        log_extra("first_only", completions[:1])
        return [float(i % 2) for i in range(len(completions))]

    trainer = make_trainer(model_dir, plan_path, tmp_path, reward)
    with pytest.raises(
        ValueError, match=r"logged 1 values in the column 'first_only' for 3 completions"
    ):
        trainer.train()


def test_resume_replays_the_plan_and_keeps_sgpo_counters(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    # 3 batches per plan epoch: checkpoint-4 sits one batch into the second epoch.
    settings = {"max_steps": 5, "save_strategy": "steps", "save_steps": 2}
    straight = make_trainer(model_dir, plan_path, tmp_path, **settings)
    straight_batches = trained_batches(straight)
    straight.train()
    assert straight_batches == [*EXPECTED_BATCHES, *EXPECTED_BATCHES[:2]]
    at_checkpoint = next(h for h in straight.state.log_history if h.get("step") == 4)

    resumed = make_trainer(model_dir, plan_path, tmp_path, **settings)
    resumed_batches = trained_batches(resumed)
    resumed.train(resume_from_checkpoint=checkpoint(tmp_path, 4))
    assert resumed_batches == [EXPECTED_BATCHES[1]]
    last = resumed.state.log_history[-1]
    assert last["sgpo/rollouts_cum"] == straight.sgpo_rollouts == 3 + 6 + 3 + 3 + 6
    assert last["sgpo/flops_profile_cum"] == 123.0  # charged once, not again on resume
    assert last["sgpo/flops_rollout_cum"] > at_checkpoint["sgpo/flops_rollout_cum"]
    assert last["sgpo/plan_epoch"] == 1

    online = make_trainer(model_dir, plan_path, tmp_path, **settings, reestimate=True)
    with pytest.raises(ValueError, match=r"reestimate=True \(the checkpoint's False\)"):
        online.train(resume_from_checkpoint=checkpoint(tmp_path, 4))
    # under another plan (one query's G changed) the replayed batches would not be the run's
    rows, meta = read_table(plan_path)
    rows[0]["group_size"] += 1
    other = tmp_path / "other-plan.parquet"
    write_table(other, rows, meta)
    with pytest.raises(ValueError, match="was trained under another plan"):
        make_trainer(model_dir, other, tmp_path, **settings).train(
            resume_from_checkpoint=checkpoint(tmp_path, 4)
        )
    # a larger generation batch: TRL's data skip would replay other batches than were trained
    with pytest.raises(ValueError, match=r"generation_batch_size=8 \(the checkpoint's 6\)"):
        make_trainer(
            model_dir, plan_path, tmp_path, **settings, per_device_train_batch_size=8
        ).train(resume_from_checkpoint=checkpoint(tmp_path, 4))
    # a state cut short while it was written, or not SGPOTrainer's: named, not a bare decode
    state = tmp_path / "out" / "checkpoint-2" / "sgpo_state.json"
    for text, message in (('{"x":', "not valid JSON"), ("{}", "not SGPOTrainer's state")):
        state.write_text(text)
        with pytest.raises(DataError, match=rf"sgpo_state.json: {message}"):
            make_trainer(model_dir, plan_path, tmp_path, **settings).train(
                resume_from_checkpoint=checkpoint(tmp_path, 2)
            )
    state.unlink()
    with pytest.raises(FileNotFoundError, match="not written by SGPOTrainer"):
        make_trainer(model_dir, plan_path, tmp_path, **settings).train(
            resume_from_checkpoint=checkpoint(tmp_path, 2)
        )


def solved_or_alternating(solved: set[str]) -> Callable[..., list[float]]:
    """A reward by the row's prompt and position only (whatever the model generates): 1 for
    the solved prompts, else 0 and 1 in turn, so that each group of G > 1 comes back mixed."""

    def reward(completions: list[str], prompts: list[str], **_: object) -> list[float]:
        return [1.0 if p in solved else float(i % 2) for i, p in enumerate(prompts)]

    return reward


def solved_at_rates(rates: dict[str, int]) -> Callable[..., list[float]]:
    """A reward by the row's prompt and place only (whatever the model generates): the n-th
    row of a prompt in a batch is solved when n % 4 < rates[query], so each query's success
    rate is its own (re-estimation's posteriors differ)."""

    def reward(completions: list[str], prompts: list[str], **_: object) -> list[float]:
        seen: dict[str, int] = {}
        scores = []
        for prompt in prompts:
            n = seen[prompt] = seen.get(prompt, -1) + 1
            query = next(q for q in GROUP_SIZES if prompt_of(q) == prompt)
            scores.append(float(n % 4 < rates[query]))
        return scores

    return reward


@pytest.mark.parametrize(
    "settings",
    [
        # q4 (G=1) and q2 always solved: skipped from the second plan epoch on
        {"history_explore": 0.5},
        # re-plans from posteriors that differ by query: every other batch (the restored
        # posteriors decide the batches after checkpoint-4), every third (so does the count of
        # batches observed, the re-plans' cadence)
        {"reestimate": True, "replan_every": 2},
        {"reestimate": True, "replan_every": 3},
    ],
    ids=["history", "reestimate-every-2", "reestimate-every-3"],
)
def test_a_run_that_observes_its_batches_resumes_to_what_it_trains(
    model_dir: str,
    plan_path: Path,
    tmp_path: Path,
    settings: dict,
) -> None:
    """Skips on history and re-plans draw each batch from the outcomes of the ones before: a
    resume restores the schedule and replays its epoch's batches (the one the data loader drew
    ahead of the checkpoint included), and trains what the uninterrupted run trained."""
    settings |= {"max_steps": 7, "save_strategy": "steps", "save_steps": 2}
    if "reestimate" in settings:
        reward = solved_at_rates({"q0": 1, "q1": 3, "q2": 2, "q3": 1, "q4": 4})
    else:
        reward = solved_or_alternating({prompt_of("q4"), prompt_of("q2")})
    straight = make_trainer(model_dir, plan_path, tmp_path, reward, **settings)
    recorded = trained_batches(straight)
    straight.train()
    straight_batches = list(recorded)
    static = [*EXPECTED_BATCHES, *EXPECTED_BATCHES, EXPECTED_BATCHES[0]]
    assert len(straight_batches) == 7 and straight_batches != static
    # the last step's sgpo/* metrics: the totals and the last batch's
    last = straight.state.log_history[-2]
    totals = {k: v for k, v in last.items() if k.startswith("sgpo/")}
    if "history_explore" in settings:
        assert totals["sgpo/history_skipped"] > 0
    # one batch into the second Trainer epoch (3 batches each), and the end of the second
    for step in (4, 6):
        resumed = make_trainer(model_dir, plan_path, tmp_path, reward, **settings)
        resumed_batches = trained_batches(resumed)
        resumed.train(resume_from_checkpoint=checkpoint(tmp_path, step))
        assert resumed_batches == straight_batches[step:]
        at_end = resumed.state.log_history[-2]
        assert {k: v for k, v in at_end.items() if k.startswith("sgpo/")} == totals
    # on the trainer that trained past the checkpoint (a notebook's second train() call)
    recorded.clear()
    straight.train(resume_from_checkpoint=checkpoint(tmp_path, 4))
    assert recorded == straight_batches[4:]


def test_a_checkpoint_holds_sgpos_state_before_the_trainer_pushes_or_rotates_it(
    model_dir: str, plan_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Trainer's checkpoint ends by pushing it to the hub (push_to_hub) and deleting older
    ones (save_total_limit): by then the new one holds sgpo_state.json, or a pushed copy would
    lack it and a kill after the rotation would leave no checkpoint that resumes."""
    import transformers.trainer

    whole_when_rotated = []
    rotate = transformers.trainer.rotate_checkpoints

    def spy_rotate(output_dir: str, **kwargs: object) -> None:
        newest = max(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        whole_when_rotated.append((newest / "sgpo_state.json").is_file())
        rotate(output_dir=output_dir, **kwargs)

    monkeypatch.setattr(transformers.trainer, "rotate_checkpoints", spy_rotate)
    settings = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 1}
    make_trainer(model_dir, plan_path, tmp_path, **settings).train()
    assert whole_when_rotated == [True, True]
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-4"]


def test_a_resume_counts_the_verifiers_errors_from_the_checkpoints(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """sgpo/verifier_errors_cum goes on from the checkpoint's count: in a new process (a new
    trainer), from a checkpoint a resumed run wrote, and on the trainer that trained up to it
    (a notebook's second train() call); a second train() from the start counts its own."""
    settings = {"max_steps": 6, "save_strategy": "steps", "save_steps": 2}

    def flaky() -> VerifierReward:  # raises on a quarter of the responses, a coin otherwise
        return VerifierReward("trl_multiprocess_run:flaky_coin", name="flaky")

    straight = make_trainer(model_dir, plan_path, tmp_path / "straight", flaky(), **settings)
    straight.train()
    errors = [h["sgpo/verifier_errors_cum"] for h in straight.state.log_history if "loss" in h]
    assert 0 < errors[1] < errors[3] < errors[5]  # errors before each checkpoint and after

    first = make_trainer(model_dir, plan_path, tmp_path / "straight", flaky(), **settings)
    first.train(resume_from_checkpoint=str(tmp_path / "straight" / "out" / "checkpoint-2"))
    assert first.state.log_history[-1]["sgpo/verifier_errors_cum"] == errors[5]
    # checkpoint-4 now is the resumed run's: it holds the run's count, not the resume's
    second = make_trainer(model_dir, plan_path, tmp_path / "straight", flaky(), **settings)
    second.train(resume_from_checkpoint=str(tmp_path / "straight" / "out" / "checkpoint-4"))
    assert second.state.log_history[-1]["sgpo/verifier_errors_cum"] == errors[5]
    straight.train(resume_from_checkpoint=str(tmp_path / "straight" / "out" / "checkpoint-4"))
    assert straight.state.log_history[-1]["sgpo/verifier_errors_cum"] == errors[5]

    verifier = second.reward_funcs[0].verifier
    before = verifier.stats.errors
    second.train()  # from the start, on trained weights: its own errors
    counted = [h["sgpo/verifier_errors_cum"] for h in second.state.log_history if "loss" in h]
    assert counted[-1] == verifier.stats.errors - before < verifier.stats.errors


def test_an_evaluations_verifier_failures_are_checked_over_the_pass_and_not_trainings(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """An evaluation's verifier calls are checked over its whole pass, as sgpo eval checks
    its held-out queries (one batch of two completions all failing is no broken verifier),
    and are not counted in the run's sgpo/verifier_errors_cum, which counts training's."""
    from datasets import Dataset

    def trainer(eval_answers: list[str]) -> SGPOTrainer:
        evaluated = plan_dataset(plan_path).select(range(len(eval_answers)))
        return make_trainer(
            model_dir,
            plan_path,
            tmp_path,
            VerifierReward("bad_verifiers:raising_on_odd"),  # raises on an odd answer
            eval_dataset=Dataset.from_dict(evaluated.to_dict() | {"answer": eval_answers}),
            train_dataset=plan_dataset(plan_path).map(lambda _: {"answer": "2"}),
            eval_strategy="steps",
            eval_steps=2,
            per_device_eval_batch_size=2,  # one query's two completions per batch
        )

    run = trainer(["1", "2"])  # the first batch fails whole, the second does not
    run.train()
    evaluations = [h for h in run.state.log_history if "eval_reward" in h]
    assert len(evaluations) == 2  # at step 2 and after the last
    failed = run.reward_funcs[0].verifier.stats.errors
    assert failed == 2 * 2  # each evaluation's odd answer, two completions
    assert [h["sgpo/verifier_errors_cum"] for h in run.state.log_history if "loss" in h] == [0] * 3
    run.predict(run.eval_dataset)  # a prediction alike
    assert run.reward_funcs[0].verifier.stats.errors == failed + 2
    assert run.sgpo_totals()["sgpo/verifier_errors_cum"] == 0
    with pytest.raises(DataError, match=r"all 4 calls on the evaluation of 4 completions failed"):
        trainer(["1", "3"]).train()


def test_a_resume_on_the_same_trainer_replays_the_checkpoints_batches(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """A notebook's train() then train(resume_from_checkpoint=...) on one trainer: the resume
    trains the batches after the checkpoint, with the counters the checkpoint recorded."""
    trainer = make_trainer(
        model_dir, plan_path, tmp_path, max_steps=4, save_strategy="steps", save_steps=2
    )
    batches = trained_batches(trainer)
    trainer.train()  # stops one batch into the second plan epoch
    assert batches == [*EXPECTED_BATCHES, EXPECTED_BATCHES[0]]
    at_end = trainer.sgpo_rollouts
    assert at_end == 3 + 6 + 3 + 3
    tokens_at_end = trainer.sgpo_tokens_generated
    batches.clear()
    trainer.train(resume_from_checkpoint=checkpoint(tmp_path, 2))
    assert batches == [EXPECTED_BATCHES[2], EXPECTED_BATCHES[0]]
    assert trainer.sgpo_rollouts == at_end  # the checkpoint's count, not added to the first's
    assert trainer.sgpo_tokens_generated == tokens_at_end
    # a checkpoint of an older sgpo, whose token count left the profile's out: added on resume
    state_file = Path(checkpoint(tmp_path, 2)) / "sgpo_state.json"
    state = json.loads(state_file.read_text())
    del state["tokens_include_profile"]
    state["tokens_generated"] -= 6 * 4 * 2  # the hand plan's profile: 6 queries, k = 4 of 2
    state_file.write_text(json.dumps(state))
    trainer.train(resume_from_checkpoint=checkpoint(tmp_path, 2))
    assert trainer.sgpo_tokens_generated == tokens_at_end
    batches.clear()
    trainer.train()  # a fresh start from the plan's first batch, as TRL's from the dataset's
    assert batches == [*EXPECTED_BATCHES, EXPECTED_BATCHES[0]]
    assert trainer.sgpo_rollouts == at_end
    # a call that stopped inside a generation batch (two micro-steps each) leaves TRL's buffer
    # behind: the next call starts clean all the same
    stopped = make_trainer(model_dir, plan_path, tmp_path, max_steps=3, num_iterations=2)
    fresh = make_trainer(model_dir, plan_path, tmp_path, max_steps=3, num_iterations=2)
    expected = trained_batches(fresh)
    fresh.train()
    again = trained_batches(stopped)
    stopped.train()
    again.clear()
    stopped.train()
    assert again == expected and stopped.sgpo_rollouts == fresh.sgpo_rollouts


def test_a_checkpoint_trained_with_skips_on_history_resumes_only_with_its_schedule(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """Without skips the static plan would be replayed in place of the batches the run
    trained, and with other skip settings other batches drawn; an older sgpo's checkpoint
    holds no outcome streaks; and ignore_data_skip would train its epoch's first batches again
    where they were drawn from the streaks."""
    settings = {"max_steps": 2, "save_strategy": "steps", "save_steps": 2}
    make_trainer(model_dir, plan_path, tmp_path, **settings, history_explore=0.5).train()
    with pytest.raises(ValueError, match=r"history_explore=1.0 \(the checkpoint's 0.5\)"):
        make_trainer(model_dir, plan_path, tmp_path, **settings).train(
            resume_from_checkpoint=checkpoint(tmp_path, 2)
        )
    skips = {"history_explore": 0.5, "history_min_streak": 2}  # another streak to skip from
    with pytest.raises(ValueError, match=r"history_min_streak=2 \(the checkpoint's 1\)"):
        make_trainer(model_dir, plan_path, tmp_path, **settings, **skips).train(
            resume_from_checkpoint=checkpoint(tmp_path, 2)
        )
    with pytest.raises(ValueError, match="with ignore_data_skip=True"):
        make_trainer(
            model_dir, plan_path, tmp_path, **settings, history_explore=0.5, ignore_data_skip=True
        ).train(resume_from_checkpoint=checkpoint(tmp_path, 2))
    state_file = Path(checkpoint(tmp_path, 2)) / "sgpo_state.json"
    state = json.loads(state_file.read_text())
    del state["schedule"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(NotImplementedError, match="holds no state of the online plan"):
        make_trainer(model_dir, plan_path, tmp_path, **settings, history_explore=0.5).train(
            resume_from_checkpoint=checkpoint(tmp_path, 2)
        )


def test_only_a_checkpoint_between_generation_batches_is_resumed(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """With steps_per_generation=2 a generation batch serves two steps and TRL keeps it in a
    buffer no checkpoint holds: checkpoint-1 is inside the first batch, checkpoint-2 after it."""
    settings = {
        "max_steps": 4,
        "save_strategy": "steps",
        "save_steps": 1,
        "per_device_train_batch_size": 3,
        "steps_per_generation": 2,  # a generation batch of 6 rows, as the other tests'
    }
    with pytest.warns(SgpoWarning, match="save_steps=1 writes checkpoints inside a generation"):
        straight = make_trainer(model_dir, plan_path, tmp_path, **settings)
    straight_batches = trained_batches(straight)
    straight.train()
    assert straight_batches == EXPECTED_BATCHES[:2]

    resumed = make_trainer(model_dir, plan_path, tmp_path, **settings)
    resumed_batches = trained_batches(resumed)
    resumed.train(resume_from_checkpoint=checkpoint(tmp_path, 2))
    assert resumed_batches == [EXPECTED_BATCHES[1]]
    assert resumed.sgpo_rollouts == straight.sgpo_rollouts == 3 + 6
    with pytest.raises(ValueError, match="saved at step 1, inside a generation batch"):
        make_trainer(model_dir, plan_path, tmp_path, **settings).train(
            resume_from_checkpoint=checkpoint(tmp_path, 1)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        make_trainer(model_dir, plan_path, tmp_path, **settings | {"save_steps": 4})


def test_a_generation_batch_ends_where_an_epoch_does(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """Batches of 6 rows served 3 micro-steps each, 2 micro-steps per optimizer step: an epoch
    (3 batches, 9 micro-steps) is 5 steps, the last of one micro-step. Checkpoint-5 ends the
    epoch and its last batch; checkpoint-6 is 2 micro-steps into the next epoch's first."""
    settings = {
        "max_steps": 7,
        "save_strategy": "steps",
        "save_steps": 1,
        "per_device_train_batch_size": 2,
        "steps_per_generation": 3,
        "gradient_accumulation_steps": 2,
    }
    with pytest.warns(SgpoWarning, match="one ends every 3 optimizer steps within an epoch"):
        straight = make_trainer(model_dir, plan_path, tmp_path, **settings)
    straight_batches = trained_batches(straight)
    straight.train()
    assert straight_batches == [*EXPECTED_BATCHES, *EXPECTED_BATCHES[:2]]

    resumed = make_trainer(model_dir, plan_path, tmp_path, **settings)
    resumed_batches = trained_batches(resumed)
    resumed.train(resume_from_checkpoint=checkpoint(tmp_path, 5))
    assert resumed_batches == EXPECTED_BATCHES[:2]
    assert resumed.sgpo_rollouts == straight.sgpo_rollouts
    with pytest.raises(ValueError, match="saved at step 6, inside a generation batch"):
        make_trainer(model_dir, plan_path, tmp_path, **settings).train(
            resume_from_checkpoint=checkpoint(tmp_path, 6)
        )


class RewardByOrder:
    """Scores responses in the order they are scored: the i-th is correct if correct(i).
    Growth and down-sampling score each response once, so which groups come out all equal
    does not depend on the samples."""

    def __init__(self, correct: Callable[[int], bool]) -> None:
        self.correct = correct
        self.scored = 0
        self.__name__ = "by_order"

    def __call__(self, completions: list[str], **_: object) -> list[float]:
        start, self.scored = self.scored, self.scored + len(completions)
        return [float(self.correct(i)) for i in range(start, self.scored)]


def every_fifth_correct() -> RewardByOrder:
    return RewardByOrder(lambda i: i % 5 == 4)


def record_batches(
    trainer: SGPOTrainer,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]]:
    """Spy on each training batch as it is applied: (group ids, first-function rewards of the
    rows, advantages, everything each group drew). The list fills as the trainer runs."""
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]] = []
    apply_groups = trainer._apply_groups

    def spy_apply(output: dict, rows: list[dict], group_ids: torch.Tensor) -> None:
        rewards = trainer._rewards_per_func[:, 0].clone()
        apply_groups(output, rows, group_ids)
        seen.append((group_ids, rewards, output["advantages"], dict(trainer._whole_groups)))

    trainer._apply_groups = spy_apply
    return seen


def test_grow_until_mixed_trains_a_balanced_subset_with_whole_group_advantages(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    reward = every_fifth_correct()
    trainer = make_trainer(model_dir, plan_path, tmp_path, reward, grow_max=8, grow_round=2)
    eos = trainer.processing_class.eos_token_id
    generated_rows: list[int] = []  # tokens of every response generated, in order
    generate = trainer.model.generate

    def spy_generate(*args: object, **kwargs: object) -> torch.Tensor:
        out = generate(*args, **kwargs)
        for row in out[:, kwargs["input_ids"].shape[1] :].tolist():
            generated_rows.append(row.index(eos) + 1 if eos in row else len(row))
        return out

    trainer.model.generate = spy_generate
    seen = record_batches(trainer)
    trainer.train()

    grown_to_mixed = 0
    for (group_ids, rewards, advantages, whole), planned in zip(
        seen, EXPECTED_BATCHES, strict=True
    ):
        for group, (_, size) in enumerate(planned):
            rows = group_ids == group
            drew = whole[group].tolist()
            if len(set(drew)) == 2:  # stopped at the first round that showed both outcomes
                grown = len(drew) - size
                if grown:  # rounds of 2 (the last cut at the cap)
                    assert len(set(drew[: len(drew) - (grown % 2 or 2)])) == 1
                grown_to_mixed += grown > 0 and size >= 2
            else:  # all equal up to the cap
                assert len(drew) == 8
            trained = rewards[rows].tolist()
            assert sorted(trained) == sorted(drew[k] for k in balanced_indices(drew, size))
            if len(set(drew)) == 2 and size >= 2:
                assert set(trained) == {0.0, 1.0}
            # advantages against everything the group drew, not only the trained rows
            expected = torch.tensor(trained) - whole[group].mean()
            assert torch.allclose(advantages[rows], expected)
    assert grown_to_mixed >= 1  # the scripted rewards make a planned group of 2 grow
    # every response generated is charged once; the trained rows keep the plan's shape
    assert len(generated_rows) == sum(len(w) for *_, ws in seen for w in ws.values())
    assert len(generated_rows) == trainer.sgpo_rollouts == reward.scored
    assert sum(generated_rows) + 6 * 4 * 2 == trainer.sgpo_tokens_generated  # + the profile's
    logs = [h for h in trainer.state.log_history if "sgpo/grown_groups" in h]
    assert [h["sgpo/batch_rollouts"] for h in logs] == [3, 6, 3]
    assert sum(h["sgpo/rollouts"] for h in logs) == len(generated_rows)
    assert logs[0]["sgpo/grown_groups"] >= 1  # q4's group of one always grows
    for h, (_, _, _, whole) in zip(logs, seen, strict=True):  # sgpo's definition: drawn responses
        mixed = sum(len(w) for w in whole.values() if len(set(w.tolist())) == 2)
        assert h["sgpo/informative_fraction"] == pytest.approx(mixed / h["sgpo/rollouts"])
        # the policy's reward: every response drawn, where TRL's `reward` is the rows'
        drew = torch.cat(list(whole.values()))
        assert h["sgpo/reward_generated_mean"] == pytest.approx(drew.mean().item())
    assert any(h["sgpo/reward_generated_mean"] != h["reward"] for h in logs)


def test_down_sampling_trains_the_most_varied_rows_with_advantages_within_them(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    # Scored in order: batch 1 rows 0-2; batch 2 rows q2 (3, 4), q1 (5, 6), then q2's other
    # two (7, 8); batch 3 rows q0 (9, 10), then its third (11). q2's rows come back all wrong
    # and its extra responses hold the success; q0's rows are both right, its third wrong.
    reward = RewardByOrder(lambda i: i in (5, 7, 9, 10))
    trainer = make_trainer(model_dir, plan_path, tmp_path, reward, downsample_to=2)
    seen = record_batches(trainer)
    trainer.train()

    drawn = [{g: w.tolist() for g, w in whole.items()} for *_, whole in seen]
    assert drawn == [
        {0: [0.0], 1: [0.0, 0.0]},
        {0: [0.0, 0.0, 1.0, 0.0], 1: [1.0, 0.0]},  # q2 generated whole: its 4
        {0: [1.0, 1.0, 0.0]},
    ]
    for (group_ids, rewards, advantages, whole), planned in zip(
        seen, EXPECTED_BATCHES, strict=True
    ):
        for group, (_, size) in enumerate(planned):
            rows = group_ids == group
            drew = whole[group].tolist()
            trained = rewards[rows].tolist()
            assert len(trained) == min(size, 2)
            assert trained == [drew[k] for k in max_variance_indices(drew, 2)]
            # advantages within the trained rows (PODS), not the whole group's
            expected = torch.tensor(trained) - torch.tensor(trained).mean()
            assert torch.allclose(advantages[rows], expected)
    # both down-sampled groups train one success and one failure
    assert [sorted(seen[b][1][seen[b][0] == 0].tolist()) for b in (1, 2)] == [[0.0, 1.0]] * 2
    assert trainer.sgpo_rollouts == reward.scored == 12
    logs = [h for h in trainer.state.log_history if "sgpo/batch_rollouts" in h]
    assert [h["sgpo/batch_rollouts"] for h in logs] == [3, 4, 2]
    assert [h["sgpo/rollouts"] for h in logs] == [3, 6, 3]
    assert [h["sgpo/informative_fraction"] for h in logs] == [0.0, 1.0, 1.0]


def train_recording_forwards(
    trainer: SGPOTrainer,
) -> tuple[list[int], list[tuple[torch.Tensor, dict[int, tuple[int, int]]]]]:
    """Train; return the rows of each training forward pass, and each batch's group ids and
    (prompt, completion) tokens of its real rows."""
    forwarded: list[int] = []
    logps = trainer._get_per_token_logps_and_entropies

    def spy_logps(model: object, input_ids: torch.Tensor, *args: object, **kw: object) -> tuple:
        forwarded.append(input_ids.shape[0])
        return logps(model, input_ids, *args, **kw)

    batches: list[tuple[torch.Tensor, dict[int, tuple[int, int]]]] = []
    apply_groups = trainer._apply_groups

    def spy_apply(output: dict, rows: list[dict], group_ids: torch.Tensor) -> None:
        batches.append((group_ids, dict(trainer._lengths)))
        apply_groups(output, rows, group_ids)

    trainer._get_per_token_logps_and_entropies = spy_logps
    trainer._apply_groups = spy_apply
    trainer.train()
    return forwarded, batches


@pytest.mark.parametrize(
    ("downsample_to", "trained_without_drop", "trained_with_drop"),
    # Scored in order: batch 1 q4 (0), q3 (1, 2); batch 2 q2 (3-6), q1 (7, 8); batch 3 q0
    # (9-11); with PODS to 2, q2's rows 3, 4, q1's 5, 6, q2's other two 7, 8; q0's 9, 10, its
    # third 11. Either way q3, q2 and q0 are mixed, q4 (a group of one) and q1 all equal.
    [(0, [3, 6, 3], [2, 4, 3]), (2, [3, 4, 2], [2, 2, 2])],
)
def test_dropping_dead_groups_trains_only_mixed_rows_to_the_same_update(
    model_dir: str,
    plan_path: Path,
    tmp_path: Path,
    downsample_to: int,
    trained_without_drop: list[int],
    trained_with_drop: list[int],
) -> None:
    trained_rows = {False: trained_without_drop, True: trained_with_drop}
    trainers, forwarded, batches = {}, {}, {}
    for drop in (False, True):
        reward = RewardByOrder(lambda i: i in (1, 3, 9))
        trainers[drop] = make_trainer(
            model_dir,
            plan_path,
            tmp_path / str(drop),
            reward,
            drop_equal_groups=drop,
            downsample_to=downsample_to,
            # Adam would scale float noise in a zero gradient (a key projection's bias) to a
            # step of lr: SGD keeps the two updates comparable to float precision
            optim="sgd",
        )
        forwarded[drop], batches[drop] = train_recording_forwards(trainers[drop])

    # TRL trains every row, padding included; the drop forwards only the mixed groups' rows
    assert forwarded[False] == [BATCH_ROWS] * 3
    assert forwarded[True] == trained_with_drop
    # ... to the same update: the dead rows' loss terms are exactly zero
    for (name, before), (_, after) in zip(
        trainers[False].model.named_parameters(),
        trainers[True].model.named_parameters(),
        strict=True,
    ):
        assert torch.allclose(before, after, atol=1e-6, rtol=1e-5), name
    # the same generation, training charged for the rows trained only
    kept, dropped = trainers[False], trainers[True]
    assert kept.sgpo_flops["rollout"] == dropped.sgpo_flops["rollout"]
    assert kept.sgpo_rollouts == dropped.sgpo_rollouts == 12
    mixed_groups = [{0: False, 1: True}, {0: True, 1: False}, {0: True}]
    for drop, trainer in trainers.items():
        # every row has its tokens recorded, a padding row as its prompt and one EOS token
        assert [len(lengths) for _, lengths in batches[drop]] == [BATCH_ROWS] * 3
        for group_ids, lengths in batches[drop]:
            assert all(lengths[i][1] == 1 for i in lengths if group_ids[i] < 0)
        expected = sum(
            train_flops(trainer.shape, *lengths[i])
            for (group_ids, lengths), mixed in zip(batches[drop], mixed_groups, strict=True)
            for i in lengths
            if not drop or (group_ids[i] >= 0 and mixed[int(group_ids[i])])
        )
        assert trainer.sgpo_flops["train"] == pytest.approx(expected)
        logs = [h for h in trainer.state.log_history if "sgpo/batch_rollouts" in h]
        assert [h["sgpo/batch_rollouts"] for h in logs] == trained_rows[drop]
    assert dropped.sgpo_flops["train"] < kept.sgpo_flops["train"]


def test_a_step_that_trains_no_row_logs_no_entropy(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """With drop_equal_groups a step whose groups all came back equal trains no row: TRL's
    per-token statistics have no row to describe, so they are logged as None (TRL's value for
    no valid one), not the entropy of a row forwarded only to keep a graph."""
    every_row_solved = RewardByOrder(lambda i: True)
    trainer = make_trainer(model_dir, plan_path, tmp_path, every_row_solved, drop_equal_groups=True)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "sgpo/batch_rollouts" in h]
    assert len(logs) == 3
    for h in logs:
        assert h["sgpo/batch_rollouts"] == 0
        assert h["entropy"] is None and h["clip_ratio/region_mean"] is None
    mixed = make_trainer(
        model_dir, plan_path, tmp_path / "mixed", RewardByOrder(lambda i: i in (1, 3, 9))
    )
    mixed.train()
    assert all(h["entropy"] > 0 for h in mixed.state.log_history if "sgpo/batch_rollouts" in h)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_reference_log_probs_are_charged_for_every_row_padding_included(
    model_dir: str, plan_path: Path, tmp_path: Path, lora: bool
) -> None:
    trainer = make_trainer(model_dir, plan_path, tmp_path, beta=0.1)
    reference = trainer.shape
    if lora:  # the reference pass runs with the adapter disabled: the base model's size
        peft = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
        trainer = make_trainer(model_dir, plan_path, tmp_path, beta=0.1, peft_config=peft)
        assert trainer.shape.n_params > reference.n_params
    tokens: list[tuple[torch.Tensor, torch.Tensor]] = []  # (prompt, completion) per batch row
    apply_groups = trainer._apply_groups

    def spy_apply(output: dict, rows: list[dict], group_ids: torch.Tensor) -> None:
        prompt, completion = output["prompt_mask"].sum(1), output["completion_mask"].sum(1)
        tokens.extend(zip(prompt.tolist(), completion.tolist(), strict=True))
        assert completion[group_ids < 0].eq(1).all()  # a padding row: its prompt, one EOS
        apply_groups(output, rows, group_ids)

    trainer._apply_groups = spy_apply
    trainer.train()
    # one pass (the reference model's) over all BATCH_ROWS rows of each of the 3 batches
    assert len(tokens) == 3 * BATCH_ROWS
    expected = sum(logprob_flops(reference, p, c) for p, c in tokens)
    assert trainer.sgpo_flops["logprob"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"grow_max": 1}, "grow_max"),
        ({"grow_max": 8, "grow_round": 0}, "grow_round"),
        ({"downsample_to": 1}, "downsample_to must be 0"),
        ({"downsample_to": 2, "grow_max": 8}, "does not combine"),
        ({"history_explore": 0.0}, "history_explore must be"),
        ({"history_explore": 0.5, "history_target": 1.0}, "history_target must be"),
        ({"history_target": 0.1}, "history_target needs history_explore"),
        ({"history_min_streak": 2}, "history_min_streak needs history_explore"),
        ({"history_fill": True}, "history_fill needs history_explore"),
        ({"history_explore": 0.5, "history_min_streak": 0}, "history_min_streak must be"),
        ({"loss_type": "grpo"}, r"supports loss_type in \('dapo'"),
        ({"num_generations": None}, "num_generations must be an int"),
        ({"reestimate": True, "reestimate_decay": -3}, "reestimate_decay must be in"),
        ({"reestimate": True, "reestimate_prior_alpha": -1}, "must be >= 0"),
        ({"reestimate": True, "success_threshold": float("nan")}, "must be finite"),
        ({"replan_every": 5}, "replan_every needs reestimate=True"),
        ({"success_threshold": 0.9}, "success_threshold needs reestimate=True"),
        ({"grow_round": 2}, "grow_round needs grow_max"),
        ({"drop_equal_groups": True, "beta": 0.1}, "drop_equal_groups needs beta = 0"),
        ({"drop_equal_groups": True, "top_entropy_quantile": 0.5}, "top_entropy_quantile = 1"),
        ({"entropy_coef": 0.1}, "no entropy bonus"),
        ({"use_adaptive_entropy": True}, "no entropy bonus"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "sum_then_normalize"),
        # TRL's check, for a setting that sizes evaluation's groups only here
        (
            {"per_device_train_batch_size": 5, "num_generations": 4},
            r"divisible by num_generations \(4\)\. In SGPOConfig num_generations is "
            "evaluation's group size only",
        ),
    ],
)
def test_config_validation(tmp_path: Path, settings: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SGPOConfig(output_dir=str(tmp_path), use_cpu=True, **settings)


def test_verifier_reward_scores_as_sgpo_train_does() -> None:
    """The same Verifier as profiling: bound kwargs, the reward range rescaled, a failure or a
    reward that is no number scoring 0 and counted, a batch where every call fails stopping."""
    loose = verifier_reward("sgpo.verifiers:numeric", kwargs={"rel_tol": 0.1})
    chat = [{"role": "assistant", "content": "The answer is 10.5."}]
    assert loose(["The answer is 10.5.", chat], answer=["10", "20"]) == [1.0, 0.0]
    exact = verifier_reward("sgpo.verifiers:numeric")
    assert exact(["The answer is 10.5."], answer=["10"]) == [0.0]

    signed = verifier_reward("bad_verifiers:returns", reward_range=(-1.0, 1.0))
    scored = signed(["minus-one", "true", "string", "two"], answer=["", "", "", ""])
    assert scored == [0.0, 1.0, 0.0, 0.0]
    assert signed.verifier.stats.errors == 2  # a string, and 2 outside [-1, 1]
    failing = verifier_reward("bad_verifiers:raising", id_column="qid", name="correct")
    assert failing.__name__ == "correct"  # TRL's rewards/correct/... metrics
    with pytest.raises(DataError, match="all 2 calls on a batch of 2 completions failed"):
        failing(["a", "b"], answer=["1", "2"], qid=["q7", "q8"])
    assert failing.verifier.stats.logged[0].startswith("verifier error on query q7: ")
    trl_arguments = {"prompts": ["p"], "completion_ids": [[1]], "log_metric": print}
    with pytest.raises(KeyError, match=r"no column 'answer' .*only \['solution'\]"):
        exact(["1"], solution=["1"], **trl_arguments)
    with pytest.raises(TypeError, match="import path"):
        verifier_reward(hashed_reward)


def test_a_verifier_reward_reads_a_completion_begun_in_the_prompts_thinking() -> None:
    reward = verifier_reward("sgpo.verifiers:math_verify")
    cut_off = "Okay. 48/2=24 and 48+24=72. Wait, let me check"
    done = "48+24=72.\n</think>\nThe answer is 72."
    opened = "<|im_start|>assistant\n<think>\n"  # a text prompt that opens the thinking
    assert reward([cut_off, cut_off, done], prompts=["Q", opened, opened], answer=["72"] * 3) == [
        1.0,  # no thinking opened: its last value is its answer
        0.0,  # still thinking when it was cut off: no answer yet
        1.0,
    ]
    # chat prompts do not show the template's generation prompt: said by the setting
    chat = [{"role": "user", "content": "Q"}]
    told = verifier_reward("sgpo.verifiers:math_verify", prompts_open_thinking=True)
    assert told([cut_off, done], prompts=[chat, chat], answer=["72", "72"]) == [0.0, 1.0]


def test_a_verifier_reward_is_checked_against_the_dataset_and_the_profile(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """Its answer column when the trainer is built (not after the first generation), and its
    verifier settings against those the plan's profile scored with."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SGPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=6)
    reward = verifier_reward("sgpo.verifiers:numeric", answer_column="solution")
    with pytest.raises(ValueError, match=r"^train_dataset has no column 'solution'.*\['query_id'"):
        SGPOTrainer(model, reward, plan_path, args, processing_class=tokenizer)
    # and the held-out rows, named as passed (one dataset, or each of a dict)
    with_solutions = plan_dataset(plan_path).rename_column("answer", "solution")
    for held_out, label in (
        (plan_dataset(plan_path), "eval_dataset"),
        ({"a": with_solutions, "b": plan_dataset(plan_path)}, "eval_dataset\\['b'\\]"),
    ):
        with pytest.raises(ValueError, match=rf"^{label} has no column 'solution'"):
            SGPOTrainer(
                model,
                reward,
                plan_path,
                args,
                train_dataset=with_solutions,
                eval_dataset=held_out,
                processing_class=tokenizer,
            )
    # a dataset of the user's own without the plan's ids: told what they look like
    own = plan_dataset(plan_path).remove_columns("query_id")
    with pytest.raises(ValueError, match=r"no column 'query_id' \(the plan's query ids, e\.g\. "
                       r"\['q4', 'q3'\]\); set query_id_column"):  # fmt: skip
        SGPOTrainer(model, reward, plan_path, args, train_dataset=own, processing_class=tokenizer)
    # ... or ids of another type (an integer column): told to cast it; text ids lacking one not
    solutions = plan_dataset(plan_path).rename_column("answer", "solution")
    numbered = solutions.remove_columns("query_id").add_column("query_id", list(range(6)))
    for dataset, hint in (
        (numbered, r": its ids are int \(e\.g\. 0\) where the plan's are text; cast"),
        (solutions.select(range(1, 6)), "$"),
    ):
        with pytest.raises(ValueError, match=rf"train_dataset lacks \d of the plan's .*\]{hint}"):
            SGPOTrainer(
                model, reward, plan_path, args, train_dataset=dataset, processing_class=tokenizer
            )
    with pytest.raises(TypeError, match=r"got GRPOConfig: SGPOConfig takes GRPOConfig's fields"):
        SGPOTrainer(
            model,
            reward,
            plan_path,
            GRPOConfig(output_dir=str(tmp_path), use_cpu=True),
            processing_class=tokenizer,
        )
    # GRPOTrainer's positional order (model, reward_funcs, args) names where the plan goes
    with pytest.raises(TypeError, match=r"plan must be .* got SGPOConfig.* by name"):
        SGPOTrainer(model, reward, args)

    rows, meta = read_table(plan_path)
    config = {"task.verifier": "sgpo.verifiers:numeric", "task.verifier_kwargs.rel_tol": 0.1}
    profiled = tmp_path / "profiled.parquet"
    write_table(profiled, rows, meta | {"inputs": {"config": config}})
    with pytest.warns(SgpoWarning, match=r"reward numeric: task.verifier_kwargs.rel_tol=None, "):
        SGPOTrainer(model, verifier_reward("sgpo.verifiers:numeric"), profiled, args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        same = verifier_reward("sgpo.verifiers:numeric", kwargs={"rel_tol": 0.1})
        SGPOTrainer(model, same, profiled, args, processing_class=tokenizer)
        # beside a format reward, which no profile scored with
        formatted = verifier_reward("sgpo.verifiers:exact_match")
        SGPOTrainer(model, [formatted, same], profiled, args, processing_class=tokenizer)
    # a TRL reward function of the user's own: nothing to check it against, and said so
    with pytest.warns(SgpoWarning, match=r"no reward function is a verifier_reward.*numeric"):
        SGPOTrainer(model, hashed_reward, profiled, args, processing_class=tokenizer)
    # a task's own verifier (the plan records task.verifier None): its kind's default counts
    default = {"task.verifier": None, "task.kind": "addition"}
    by_default = tmp_path / "by-default.parquet"
    write_table(by_default, rows, meta | {"inputs": {"config": default}})
    with pytest.warns(SgpoWarning, match=r"task.verifier='sgpo.verifiers:exact_match', profiled "):
        SGPOTrainer(model, formatted, by_default, args, processing_class=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        addition = verifier_reward("sgpo.tasks.addition:verify")
        SGPOTrainer(model, addition, by_default, args, processing_class=tokenizer)

    failing = verifier_reward("bad_verifiers:returns")
    trainer = SGPOTrainer(model, failing, plan_path, args, processing_class=tokenizer)
    failing(["two", "true"], answer=["", ""])  # 2 is outside [0, 1]
    assert trainer.sgpo_totals()["sgpo/verifier_errors_cum"] == 1


def test_reestimation_with_several_reward_functions_asks_for_a_success_threshold(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    rewards = [hashed_reward, hashed_reward]
    with pytest.warns(SgpoWarning, match=r"weighted total of the 2 reward functions reaches"):
        make_trainer(model_dir, plan_path, tmp_path, rewards, reestimate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        make_trainer(model_dir, plan_path, tmp_path, rewards)  # no re-estimation: no success
        make_trainer(model_dir, plan_path, tmp_path, reestimate=True)  # one reward


def test_a_verifier_edited_since_the_profile_is_warned_about(
    model_dir: str, plan_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "code" / "my_checks.py"
    module.parent.mkdir()
    module.write_text("def score(response, reference):\n    return float(response == reference)\n")
    monkeypatch.syspath_prepend(str(module.parent))
    rows, meta = read_table(plan_path)
    profiled = tmp_path / "profiled.parquet"
    inputs = {"config": {"task.verifier": "my_checks:score"}}
    inputs[VERIFIER_CODE_KEY] = verifier_code_sha256("my_checks:score")
    write_table(profiled, rows, meta | {"inputs": inputs})
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        make_trainer(model_dir, profiled, tmp_path, verifier_reward("my_checks:score"))
    module.write_text("def score(response, reference):\n    return 1.0\n")
    with pytest.warns(SgpoWarning, match="differs from the plan's profile") as caught:
        make_trainer(model_dir, profiled, tmp_path, verifier_reward("my_checks:score"))
    (message,) = [str(w.message) for w in caught if issubclass(w.category, SgpoWarning)]
    assert "reward score: its verifier's code was edited since the profile (sha256 " in message


def test_sampling_the_profile_never_applied_and_trls_group_size_are_named(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """top_k, min_p, repetition_penalty and generation_kwargs move the success rates the plan
    rests on; num_generations, a GRPOTrainer user's group size, sizes evaluation only."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        make_trainer(model_dir, plan_path, tmp_path)
    with pytest.warns(SgpoWarning, match="differs from the plan's profile") as caught:
        make_trainer(
            model_dir,
            plan_path,
            tmp_path,
            top_k=5,
            min_p=0.1,
            repetition_penalty=1.3,
            generation_kwargs={"min_new_tokens": 3},
        )
    (message,) = [str(w.message) for w in caught if issubclass(w.category, SgpoWarning)]
    assert "top_k=5, min_p=0.1, repetition_penalty=1.3, generation_kwargs={'min_new_tokens': " \
        "3}: the profile sampled without them" in message  # fmt: skip
    with pytest.warns(SgpoWarning, match=r"num_generations=6 sets evaluation's group size "
                      r"only; training takes each query's planned G \(1 to 4 in "):  # fmt: skip
        make_trainer(model_dir, plan_path, tmp_path, num_generations=6)


def test_reestimation_counts_successes_as_the_profile_did_or_warns(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    rows, meta = read_table(plan_path)
    graded = tmp_path / "graded.parquet"  # profiled counting only a full reward a success
    scored = {"task.verifier": "sgpo.tasks.addition:verify", "task.success_threshold": 1.0}
    write_table(graded, rows, meta | {"inputs": {"config": scored}})
    reward = verifier_reward("sgpo.tasks.addition:verify")
    with pytest.warns(SgpoWarning, match="differs from the plan's profile") as caught:
        make_trainer(model_dir, graded, tmp_path, reward, reestimate=True, success_threshold=0.5)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, SgpoWarning)]
    assert "success_threshold=0.5 counts other completions as successes than the profile, " \
        "which counted a (rescaled) reward from 1.0 up" in message  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        make_trainer(model_dir, graded, tmp_path, reward, reestimate=True, success_threshold=1.0)
        make_trainer(model_dir, graded, tmp_path, reward)  # no re-estimation: no success
        # unset, it is the profile's
        adopted = make_trainer(model_dir, graded, tmp_path, reward, reestimate=True)
    assert adopted.success_threshold == 1.0
    assert make_trainer(model_dir, plan_path, tmp_path, reestimate=True).success_threshold == 0.5


def test_a_prompt_rendered_to_text_with_its_bos_is_warned_about(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """TRL tokenizes a string prompt with the tokenizer's special tokens: a chat rendered to
    text (its template writes the BOS) then starts with two, where the profile had one. The
    texts agree; the token ids do not."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.bos_token = "<unk>"  # a tokenizer that adds a BOS to plain text, as Llama's
    bos = tokenizer.convert_tokens_to_ids("<unk>")
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<unk> $A", special_tokens=[("<unk>", bos)]
    )
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    rows, meta = read_table(plan_path)
    settings = {"use_chat_template": True, "system_prompt": "S:", "prompt_template": "{prompt}"}
    profiled = tmp_path / "chat.parquet"
    config = {f"model.{k}": v for k, v in settings.items()}
    template = template_sha256(tokenizer.chat_template)
    write_table(profiled, rows, meta | {"inputs": {"config": config}, CHAT_TEMPLATE_KEY: template})
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SGPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=6)

    def chat(query: str) -> list[dict]:
        return [{"role": "system", "content": "S:"}, {"role": "user", "content": query}]

    def rendered(query: str) -> str:
        return tokenizer.apply_chat_template(
            chat(query), tokenize=False, add_generation_prompt=True
        )

    # the default is the profile's formatting, as the plan records it: the chat, not the text
    assert plan_dataset(profiled)[0]["prompt"] == chat(plan_dataset(plan_path)[0]["prompt"])
    for prompt, warned in ((chat, False), (None, False), (rendered, True)):
        data = plan_dataset(profiled, prompt=prompt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SgpoWarning)
            SGPOTrainer(model, hashed_reward, profiled, args, data, processing_class=tokenizer)
        said = " ".join(str(w.message) for w in caught if issubclass(w.category, SgpoWarning))
        assert ("as '<unk><unk>S:4+5=', profiled as '<unk>S:4+5='"
                in said) == warned, said  # fmt: skip


def test_chat_prompts_through_another_template_than_the_profiles_are_warned_about(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """Rebuilt with this run's tokenizer, the profile's prompt looks like the run's: the
    template's hash, which the profile records, tells them apart."""
    profiled_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    rows, meta = read_table(plan_path)
    profiled = tmp_path / "profiled.parquet"
    write_table(profiled, rows, meta | {CHAT_TEMPLATE_KEY: template_sha256(profiled_template)})
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SGPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=6)
    chat = plan_dataset(profiled, prompt=lambda q: [{"role": "user", "content": q}])
    for template, warned in ((profiled_template, False), ("USER: " + profiled_template, True)):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.chat_template = template
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SgpoWarning)
            SGPOTrainer(model, hashed_reward, profiled, args, chat, processing_class=tokenizer)
        said = [str(w.message) for w in caught if issubclass(w.category, SgpoWarning)]
        assert any("is not the one the profile's went through" in m for m in said) == warned
    # no template at all: TRL would fail on the first batch, after loading everything
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"the tokenizer has none; the profile formatted them"):
        SGPOTrainer(model, hashed_reward, profiled, args, chat, processing_class=tokenizer)


def test_every_planned_querys_prompt_and_answer_are_checked_against_the_plan(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """Not the first planned query's alone: a dataset whose ids collide with the plan's may
    hold other queries past its first (prompts), or other references (answers, which a
    verifier reward scores against)."""
    from datasets import Dataset

    rows, meta = read_table(plan_path)
    settings = {"use_chat_template": False, "system_prompt": None, "prompt_template": "{prompt}"}
    profiled = tmp_path / "profiled.parquet"
    config = {f"model.{k}": v for k, v in settings.items()}
    write_table(profiled, rows, meta | {"inputs": {"config": config}})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SGPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=6)
    reward = verifier_reward("sgpo.verifiers:exact_match")
    kept = [r for r in sorted(rows, key=lambda r: r["rank"]) if r["kept"]]
    second = kept[1]["query_id"]

    def trainer(field: str, value: object) -> SGPOTrainer:
        data = plan_dataset(profiled).to_dict()
        data[field][data["query_id"].index(second)] = value
        edited = Dataset.from_dict(data)
        return SGPOTrainer(model, reward, profiled, args, edited, processing_class=tokenizer)

    of_the_plan = f"1 of the plan's {len(kept)} queries"
    for field, value, said in (
        ("prompt", "1+1=", "reach the model otherwise than profiled, e.g. query"),
        ("answer", "0", "have another answer in train_dataset's column 'answer' than the"),
    ):
        with pytest.warns(SgpoWarning, match="differs from the plan's profile") as caught:
            trainer(field, value)
        message = " ".join(str(w.message) for w in caught)
        assert f"{of_the_plan} {said}" in message and f"{second!r}" in message, field
    # a planned row without a prompt is named before TRL's tokenizer fails on it mid-run
    with pytest.raises(ValueError, match=rf"\(query {second!r}\): field 'prompt' is None, not"):
        trainer("prompt", None)


def test_chat_prompts_where_the_profile_had_none_are_warned_about(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """A profile of plain prompts (its template hash recorded as none), trained on chats
    through a template set since: rebuilt with this run's tokenizer the profile's prompts look
    like the run's, so the recorded none must tell them apart."""
    rows, meta = read_table(plan_path)
    profiled = tmp_path / "plain.parquet"
    write_table(profiled, rows, meta | {CHAT_TEMPLATE_KEY: None})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"  # noqa: E501
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SGPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=6)
    chat = plan_dataset(profiled, prompt=lambda q: [{"role": "user", "content": q}])
    with pytest.warns(SgpoWarning, match="none: the profile's prompts were plain text"):
        SGPOTrainer(model, hashed_reward, profiled, args, chat, processing_class=tokenizer)


def test_a_run_unlike_the_plans_profile_is_warned_about(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """sgpo train refuses a plan profiled otherwise; SGPOTrainer says what differs."""
    rows, meta = read_table(plan_path)
    shape = model_shape(AutoModelForCausalLM.from_pretrained(model_dir))
    model_settings = {
        "use_chat_template": False,
        "system_prompt": None,
        "prompt_template": "{prompt}",
    }
    profiled = meta | {
        "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4},
        "shape": asdict(shape),
        "inputs": {
            "config": {f"model.{k}": v for k, v in model_settings.items()},
            "model_sha256": weights_sha256(model_dir),
        },
    }
    same = tmp_path / "same.parquet"
    write_table(same, rows, profiled)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        make_trainer(model_dir, same, tmp_path)  # as profiled: nothing said
    other = tmp_path / "other.parquet"
    inputs = {f"model.{k}": v for k, v in model_settings.items()}
    inputs["model.prompt_template"] = "Q:{prompt}"
    write_table(
        other,
        rows,
        profiled
        | {
            "sampling": {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 4},
            "shape": asdict(shape) | {"n_params": shape.n_params + 1},
            "inputs": {"config": inputs, "model_sha256": "ab" * 32},
        },
    )
    with pytest.warns(SgpoWarning, match="differs from the plan's profile") as caught:
        make_trainer(model_dir, other, tmp_path)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, SgpoWarning)]
    assert "temperature=1.0, profiled with 0.7" in message
    assert f"n_params {shape.n_params}, profiled {shape.n_params + 1}" in message
    kept = sum(r["kept"] for r in rows)
    assert f"{kept} of the plan's {kept} queries reach the model otherwise than profiled" in message
    assert "e.g. query 'q4' as '4+5=', profiled as 'Q:4+5='" in message
    assert "max_completion_length" not in message and "top_p" not in message
    assert f"the model loaded from {model_dir} holds other weights than the profiled ones" in (
        message
    )


def test_a_plan_without_its_rule_is_named(plan_path: Path, tmp_path: Path) -> None:
    rows, meta = read_table(plan_path)
    ruleless = tmp_path / "ruleless.parquet"
    write_table(ruleless, rows, {k: v for k, v in meta.items() if k != "rule"})
    with pytest.raises(DataError, match="ruleless.parquet: metadata field 'rule' is missing"):
        load_plan(ruleless)


def test_an_iterable_dataset_is_refused_naming_what_to_pass(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = SGPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH_ROWS, use_cpu=True,
        bf16=False,
    )  # fmt: skip
    streamed = plan_dataset(plan_path).to_iterable_dataset()
    with pytest.raises(TypeError, match="needs a map-style train_dataset .* IterableDataset"):
        SGPOTrainer(
            model_dir, hashed_reward, plan=plan_path, args=args, train_dataset=streamed,
            processing_class=tokenizer,
        )  # fmt: skip


def test_readme_gives_the_rewards_names_and_parameters() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    shown = re.search(
        r"`verifier_reward\((.*?)\)` \(the class `sgpo\.trl\.VerifierReward`\)", readme, re.S
    )
    assert shown is not None and verifier_reward is VerifierReward
    names = [p.split("=")[0].strip(" *\n") for p in re.sub(r"\([^()]*\)", "", shown[1]).split(",")]
    assert [n for n in names if n] == list(inspect.signature(VerifierReward).parameters)


def test_the_gsm8k_example_trains_a_local_model_on_the_cpu_and_resumes(
    model_dir: str, plan_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/trl/gsm8k_qwen.py with --model (a local folder), --cpu and small settings: it
    trains, checkpoints, and --resume continues from the newest checkpoint."""
    from tiny_run import TESTS, load_script

    example = load_script(TESTS.parent / "examples" / "trl" / "gsm8k_qwen.py")
    out = tmp_path / "out"
    common = ["--plan", str(plan_path), "--out", str(out), "--model", model_dir, "--cpu"]
    common += ["--per-device-batch", "1", "--max-completion-length", "4", "--save-steps", "1"]
    monkeypatch.setattr("sys.argv", ["gsm8k_qwen.py", *common, "--steps", "1"])
    example.main()
    assert (out / "checkpoint-1").is_dir()
    monkeypatch.setattr("sys.argv", ["gsm8k_qwen.py", *common, "--steps", "2", "--resume"])
    example.main()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and len([h for h in state["log_history"] if "loss" in h]) == 2


@pytest.mark.parametrize("downsample_to", [0, 2])  # the batch's rewards; growth's first draws
def test_an_infinite_reward_is_refused_where_it_is_returned(
    model_dir: str, plan_path: Path, tmp_path: Path, downsample_to: int
) -> None:
    # it made the advantages, then the weights, non-finite: sampling died a step later
    def infinite_first(completions: list[str], **_: object) -> list[float]:
        return [math.inf if i == 0 else float(i % 2) for i in range(len(completions))]

    trainer = make_trainer(
        model_dir, plan_path, tmp_path, reward=infinite_first, downsample_to=downsample_to
    )
    with pytest.raises(ValueError, match=r"'infinite_first' returned inf for a completion"):
        trainer.train()


def test_a_batch_no_reward_function_scored_is_said(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    def abstains(completions: list[str], **_: object) -> list[float | None]:
        return [None] * len(completions)

    trainer = make_trainer(model_dir, plan_path, tmp_path, reward=abstains, max_steps=2)
    with pytest.warns(SgpoWarning, match=r"every reward of a batch was None or NaN \(abstains\)"):
        trainer.train()


def test_a_verifier_reward_keyword_the_verifier_does_not_take_is_named_as_given() -> None:
    """A TRL user passes kwargs to verifier_reward, not a config's task.verifier_kwargs: the
    refusal names what they wrote."""
    with pytest.raises(
        ConfigError, match=r"^kwargs \{'tol': 1\}: verifier 'sgpo.verifiers:numeric"
    ):
        verifier_reward("sgpo.verifiers:numeric", kwargs={"tol": 1})


def test_a_verifier_reward_whose_verifier_cannot_be_called_so_is_named_as_given() -> None:
    with pytest.raises(ConfigError, match=r"^verifier 'bad_verifiers:one_argument' cannot be"):
        verifier_reward("bad_verifiers:one_argument")
