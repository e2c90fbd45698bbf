"""Trainer behaviour on the tiny model: micro-batching does not change the update, zero-advantage
rollouts skip the backward pass (exactly, and the FLOPs show it), KL and PPO epochs add
log-prob passes."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from tiny_run import tiny_tree

from sgpo.config import RECORDED, RunConfig, TrainConfig
from sgpo.core.flops import logprob_flops, train_flops
from sgpo.core.predict import CURRENCIES
from sgpo.core.rewards import CORRECT_THRESHOLD
from sgpo.errors import ConfigError, NonFiniteError
from sgpo.io import read_jsonl
from sgpo.metrics import rollout_record
from sgpo.plan import read_plan, run_plan
from sgpo.profile import run_profile
from sgpo.rollouts import group_members, mixed_groups
from sgpo.train import Trainer


def make_trainer(tmp_path: Path, name: str, **train: object) -> Trainer:
    tree = tiny_tree(
        tmp_path / "models",
        train={"method": "grpo", "steps": 1, "eval_every": 0, "checkpoint_every": 0} | train,
    )
    return Trainer(RunConfig.model_validate(tree), tmp_path / name)


def one_step(trainer: Trainer) -> tuple[list, dict]:
    generated, batch = trainer.collect()
    return batch, trainer.train_on(batch)


def pilot_trainer(tmp_path: Path, name: str, **train: object) -> Trainer:
    """Groups of 6 piloted with 2 responses, zero-variance groups filtered."""
    pilot = {"group_size": 6, "rollout_budget": 24, "pilot_size": 2, "filter_groups": True}
    return make_trainer(tmp_path, name, **(pilot | train))


def test_a_group_is_its_round_index_and_its_query(tmp_path: Path):
    # refill rounds number their groups from 0 again; every reader of a step's groups (the
    # online estimates, the streaks, the dead-group drop) must not merge two queries' groups
    trainer = pilot_trainer(tmp_path, "rounds", group_size=4, rollout_budget=64, pilot_size=0)
    generated, _ = trainer.collect()
    indices = {r.group for r in generated}
    assert len(indices) < len({(r.group, r.query.query_id) for r in generated})  # several rounds
    groups = group_members(generated)
    assert all(len({m.query.query_id for m in members}) == 1 for members in groups)
    assert len(groups) == rollout_record(generated, CORRECT_THRESHOLD)["queries"]
    assert sum(map(len, groups)) == len(generated)


def test_a_query_back_in_a_later_round_of_the_step_is_another_group(tmp_path: Path):
    # two queries, refill rounds of two groups: once the epoch wraps a query comes back at the
    # same index of a later round, and its two groups must stay two
    tree = tiny_tree(
        tmp_path / "models",
        task={"addition": {"n_train": 2}},
        train={
            "method": "grpo",
            "group_size": 4,
            "rollout_budget": 8,
            "filter_groups": True,
            "steps": 1,
            "eval_every": 0,
            "checkpoint_every": 0,
        },
    )
    trainer = Trainer(RunConfig.model_validate(tree), tmp_path / "wrap")
    for _ in range(3):
        generated, _ = trainer.collect()
        record = rollout_record(generated, CORRECT_THRESHOLD)
        assert record["queries"] == len(generated) // 4 == len(group_members(generated))
        assert record["group_size_max"] == 4
        trainer.step += 1


def test_micro_batch_size_does_not_change_the_update(tmp_path: Path):
    weights = []
    for micro in (1, 3, 64):
        trainer = make_trainer(tmp_path, f"mb{micro}", micro_batch_size=micro)
        one_step(trainer)
        weights.append({n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()})
    for other in weights[1:]:
        for name, value in weights[0].items():
            torch.testing.assert_close(other[name], value, rtol=1e-4, atol=1e-5)  # lr 1e-2


def test_zero_advantage_rollouts_skip_backward_and_flops(tmp_path: Path):
    trainer = make_trainer(tmp_path, "skip", group_size=2, rollout_budget=16)
    batch, stats = one_step(trainer)
    live = [r for r in batch if r.advantage != 0.0]
    assert 0 < len(live) < len(batch)  # the coin-flip verifier leaves some groups all-equal
    assert stats["trained_rollouts"] == len(live)
    expected = sum(
        train_flops(trainer.shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
        for r in live
    )
    assert trainer.flops["train"] == expected
    assert trainer.flops["logprob"] == 0  # one PPO epoch, no KL: no extra forward
    # a train-every-rollout trainer (verl, TRL) would also run the skipped rollouts' pass
    dead = [r for r in batch if r.advantage == 0.0]
    assert stats["flops_skipped"] == pass_flops(trainer, dead, train_flops)


def test_a_non_finite_epoch_charges_the_skipped_rollouts_only_the_epochs_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # three PPO epochs, the second's gradient non-finite: the step ends there, the trained
    # rollouts got two epochs' passes, and a train-every-rollout trainer would have given the
    # dead ones two as well, not three
    trainer = make_trainer(tmp_path, "nan", group_size=2, rollout_budget=16, ppo_epochs=3)
    optimizer_step = trainer.update._optimizer_step
    calls: list[int] = []

    def second_fails(loss: float) -> float | None:
        calls.append(1)
        return optimizer_step(loss) if len(calls) == 1 else None

    monkeypatch.setattr(trainer.update, "_optimizer_step", second_fails)
    batch, stats = one_step(trainer)
    assert stats["skipped_update"] and len(calls) == 2
    dead = [r for r in batch if r.advantage == 0.0]
    assert dead
    two_epochs = 2 * pass_flops(trainer, dead, train_flops)
    old_logprobs = pass_flops(trainer, dead, logprob_flops)  # several epochs: an old-policy pass
    assert stats["flops_skipped"] == pytest.approx(two_epochs + old_logprobs)


def test_train_all_flops_and_generated_tokens_are_counted_per_step(tmp_path: Path):
    trainer = make_trainer(tmp_path, "cost", group_size=2, rollout_budget=16, steps=2)
    summary = trainer.train()
    steps = [r for r in read_jsonl(tmp_path / "cost" / "metrics.jsonl") if r["step"] > 0]
    assert [r["generated_tokens_cum"] for r in steps] == [
        sum(r["tokens_generated"] for r in steps[: i + 1]) for i in range(len(steps))
    ]
    assert summary["generated_tokens"] == steps[-1]["generated_tokens_cum"]
    skipped = summary["total_flops_train_all"] - summary["total_flops"]
    assert skipped > 0  # the coin-flip verifier leaves some groups all-equal


def test_verifier_failures_are_logged_as_running_totals(tmp_path: Path):
    tree = tiny_tree(
        tmp_path / "models",
        task={"verifier": "bad_verifiers:raising_on_odd"},
        train={"method": "grpo", "steps": 2, "group_size": 2, "rollout_budget": 16}
        | {"eval_every": 0, "checkpoint_every": 0},
    )
    summary = Trainer(RunConfig.model_validate(tree), tmp_path / "run").train()
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    errors = [r["verifier_errors_cum"] for r in lines]
    assert errors == sorted(errors) and errors[-1] == summary["verifier_errors"] > errors[0]
    assert all(r["verifier_timeouts_cum"] == 0 for r in lines)


def test_a_budget_capped_runs_progress_shows_the_budget_spent(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    """Its bar's total is train.steps, a cap it mostly stops well before."""
    make_trainer(tmp_path, "free", group_size=2, rollout_budget=16, steps=2).train()
    assert "budget=" not in capsys.readouterr().err
    first_step = read_jsonl(tmp_path / "free" / "metrics.jsonl")[1]["generated_tokens_cum"]
    cap = first_step + 1  # spent in the second step of the same run
    capped = make_trainer(
        tmp_path, "capped", group_size=2, rollout_budget=16, steps=50, max_generated_tokens=cap
    ).train()
    assert capped["steps"] == 2
    spent = capped["generated_tokens"] / cap
    assert f"budget={spent:.0%}" in capsys.readouterr().err and spent >= 1


def test_with_kl_nothing_is_skipped_so_train_all_equals_total(tmp_path: Path):
    summary = make_trainer(tmp_path, "kl-cost", kl_coef=0.1, steps=2).train()
    assert summary["total_flops_train_all"] == summary["total_flops"]


def pass_flops(trainer: Trainer, rollouts: list, per_sequence: Callable) -> float:
    return sum(
        per_sequence(trainer.shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
        for r in rollouts
    )


def test_kl_and_ppo_epochs_add_logprob_passes(tmp_path: Path):
    kl = make_trainer(tmp_path, "kl", kl_coef=0.1)
    batch, stats = one_step(kl)
    assert stats["trained_rollouts"] == len(batch)  # with KL every rollout has a loss term
    # exactly one reference pass over the batch, one training pass
    assert kl.flops["logprob"] == pass_flops(kl, batch, logprob_flops)
    assert kl.flops["train"] == pass_flops(kl, batch, train_flops)
    epochs = make_trainer(tmp_path, "epochs", ppo_epochs=2)
    batch, _ = one_step(epochs)
    live = [r for r in batch if r.advantage != 0.0]
    # one pass for the rollout policy's log-probs, then two training passes
    assert epochs.flops["logprob"] == pass_flops(epochs, live, logprob_flops)
    assert epochs.flops["train"] == 2 * pass_flops(epochs, live, train_flops)


def test_health_metrics(tmp_path: Path):
    one_epoch = make_trainer(tmp_path, "one", group_size=2, rollout_budget=16)
    generated, batch = one_epoch.collect()
    stats = one_epoch.train_on(batch)
    # one epoch starts at the rollout policy: ratio 1 everywhere
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl"] == 0.0
    record = rollout_record(generated, CORRECT_THRESHOLD)
    cut = [r for r in generated if not r.completion.finished]
    assert record["truncated_fraction"] == len(cut) / len(generated)
    assert all(len(r.completion.response_ids) == 4 for r in cut)  # max_new_tokens
    # lr 1.0: the second epoch moves far from the rollout policy
    two = make_trainer(tmp_path, "two", ppo_epochs=2, lr=1.0, clip_low=0.01, clip_high=0.01)
    _, stats = one_step(two)
    assert 0.0 < stats["clip_fraction"] <= 1.0 and stats["approx_kl"] > 0.0


def test_pilot_then_commit_completes_and_trains_only_mixed_groups(tmp_path: Path):
    generated, batch = pilot_trainer(tmp_path, "pilot", refill_max_rounds=10).collect()
    groups = group_members(generated)
    pilots_only = [g for g in groups if len({r.reward for r in g[:2]}) == 1]
    committed = [g for g in groups if len({r.reward for r in g[:2]}) > 1]
    # the coin-flip verifier gives both kinds of pilot
    assert pilots_only and committed
    assert all(len(g) == 2 for g in pilots_only)  # an all-equal pilot is not completed
    assert all(len(g) == 6 for g in committed)  # a mixed pilot is completed to G
    assert sorted(map(id, batch)) == sorted(id(r) for g in committed for r in g)
    # refilled round by round until the batch reaches the budget; the last group is kept whole
    assert 24 <= len(batch) < 24 + 6
    record = rollout_record(generated, CORRECT_THRESHOLD)
    assert record["informative_fraction"] == len(batch) / len(generated)
    # each group's outcome, pilots that stopped at 2 and completed groups of 6 alike
    outcomes = [[g[0].query.query_id, len(g), sum(r.reward == 1.0 for r in g)] for g in groups]
    assert record["group_outcomes"] == outcomes


def test_pilot_size_must_be_able_to_show_both_outcomes(tmp_path: Path):
    with pytest.raises(ValidationError, match="pilot_size must be 0"):
        make_trainer(tmp_path, "bad", pilot_size=1, filter_groups=True)
    with pytest.raises(ValidationError, match="pilot_size needs train.filter_groups"):
        make_trainer(tmp_path, "bad", pilot_size=2)
    with pytest.raises(ValidationError, match="does not combine with method 'dapo'"):
        make_trainer(tmp_path, "bad", method="dapo", filter_groups=True)


def test_one_pilot_round_pilots_one_budget_of_queries(tmp_path: Path):
    generated, batch = pilot_trainer(tmp_path, "one-round", refill_max_rounds=1).collect()
    assert len({r.query.query_id for r in generated}) == 24 // 6
    assert len(batch) < 24  # the coin-flip verifier leaves some pilots all-equal


def test_an_all_wrong_pilot_goes_on_when_only_solved_pilots_end_their_group(tmp_path: Path):
    trainer = pilot_trainer(
        tmp_path, "all-solved", rollout_budget=72, refill_max_rounds=1, pilot_ends="all-solved"
    )
    generated, batch = trainer.collect()
    by_group = group_members(generated)
    groups = {g[0].query.query_id: g for g in by_group}
    assert len(groups) == len(by_group)  # one round: one group per query
    pilots = {q: {r.reward for r in g[:2]} for q, g in groups.items()}
    # the coin-flip verifier gives both kinds of one-outcome pilot
    assert {0.0} in pilots.values() and {1.0} in pilots.values()
    for q, g in groups.items():
        assert len(g) == (2 if pilots[q] == {1.0} else 6)
    trained = {r.query.query_id for r in batch}
    assert trained == {q for q, g in groups.items() if len({r.reward for r in g}) > 1}


def test_grown_groups_stop_once_mixed_or_at_the_cap(tmp_path: Path):
    trainer = make_trainer(
        tmp_path, "grow", group_size=2, rollout_budget=48, grow_max=4, grow_round=2
    )
    generated, batch = trainer.collect()
    assert batch == generated  # grow_train all: the whole grown group is trained
    groups = group_members(generated)
    assert len(groups) == 48 // 2  # growth adds responses, not queries
    mixed = [g for g in groups if len({r.reward for r in g}) > 1]
    capped = [g for g in groups if len({r.reward for r in g}) == 1]
    # the coin-flip verifier gives groups mixed at once, mixed after growing, and capped ones
    assert capped and any(len(g) == 2 for g in mixed) and any(len(g) > 2 for g in mixed)
    assert all(len(g) == 4 for g in capped)
    for g in mixed:  # it stopped at the first round that showed the second outcome
        assert len(g) in (2, 4) and len({r.reward for r in g[: len(g) - 2]}) <= 1
    record = rollout_record(generated, CORRECT_THRESHOLD)
    assert record["informative_fraction"] == sum(map(len, mixed)) / len(generated)


def test_balanced_growth_trains_the_planned_size_rarer_outcome_first(tmp_path: Path):
    trainer = make_trainer(
        tmp_path, "balanced", group_size=2, rollout_budget=32, grow_max=8, grow_train="balanced"
    )
    generated, batch = trainer.collect()
    grown = [g for g in group_members(generated) if len(g) > 2]
    assert grown
    kept = group_members(batch)
    assert all(len(g) == 2 for g in kept)
    assert {id(r) for r in batch} <= {id(r) for r in generated}
    trained_of = {(r.group, r.query.query_id): [] for r in batch}
    for r in batch:
        trained_of[r.group, r.query.query_id].append(r)
    for g in grown:
        trained = trained_of[g[0].group, g[0].query.query_id]
        rewards = [r.reward for r in g]
        if len(set(rewards)) > 1:  # both outcomes are among the two trained
            assert {r.reward for r in trained} == set(rewards)
            # advantages are the whole grown group's: reward - its mean
            mean = sum(rewards) / len(rewards)
            assert all(r.advantage == pytest.approx(r.reward - mean) for r in trained)


def test_growth_needs_a_cap_that_can_show_both_outcomes(tmp_path: Path):
    with pytest.raises(ValidationError, match="grow_max must be 0"):
        make_trainer(tmp_path, "bad", grow_max=1)
    with pytest.raises(ValidationError, match="grow_max does not combine"):
        make_trainer(tmp_path, "bad", grow_max=8, filter_groups=True)


def test_filter_groups_trains_only_mixed_groups_and_refills_the_step(tmp_path: Path):
    trainer = make_trainer(
        tmp_path, "filter", group_size=2, rollout_budget=16, filter_groups=True, steps=1
    )
    generated, batch = trainer.collect()
    groups = group_members(generated)
    assert all(len(g) == 2 for g in groups)  # no pilot: whole groups
    mixed = [r for g in groups if len({m.reward for m in g}) > 1 for r in g]
    assert len(mixed) < len(generated)  # the coin-flip verifier leaves some groups all-equal
    assert sorted(map(id, batch)) == sorted(map(id, mixed))
    assert len(batch) >= 16  # refilled past the first round's 8 queries
    stats = trainer.train_on(batch)
    # nothing left for a train-every-rollout trainer to add
    assert stats["flops_skipped"] == 0.0 and stats["trained_rollouts"] == len(batch)


@pytest.mark.parametrize("downsample_to", [0, 2])
def test_dropped_dead_groups_leave_the_batch_and_cost_a_train_all_trainer_nothing(
    tmp_path: Path, downsample_to: int
):
    trainer = make_trainer(
        tmp_path,
        f"drop-{downsample_to}",
        group_size=4,
        rollout_budget=32,
        downsample_to=downsample_to,
        drop_equal_groups=True,
    )
    generated, batch = trainer.collect()
    groups = group_members(generated)
    assert sum(map(len, groups)) == 32  # generated whole, never refilled
    mixed = [g for g in groups if len({m.reward for m in g}) > 1]
    assert 0 < len(mixed) < len(groups)  # the coin-flip verifier leaves some groups all-equal
    kept = mixed_groups(batch)
    assert {g[0].query.query_id for g in group_members(kept)} == {
        g[0].query.query_id for g in mixed
    }
    assert all(len(g) == (downsample_to or 4) for g in group_members(kept))
    stats = trainer.train_on(batch)
    # nothing left for a train-every-rollout trainer to add: train-all FLOPs = this trainer's
    assert stats["flops_skipped"] == 0.0
    assert stats["trained_rollouts"] == stats["batch_rollouts"] == len(kept) < len(batch)


def test_drop_with_the_generated_denominator_is_the_update_without_the_drop(tmp_path: Path):
    """Same seed, same rollouts: dropping dead groups but dividing by the whole batch's tokens
    gives the parameters training every rollout gives, at no train-all cost for the dead."""
    runs = {
        name: make_trainer(tmp_path, name, group_size=4, rollout_budget=32, lr=0.05, **drop)
        for name, drop in {
            "whole": {},
            "drop-generated": {"drop_equal_groups": True, "drop_equal_denominator": "generated"},
            "drop-kept": {"drop_equal_groups": True},
        }.items()
    }
    stats = {name: trainer.train_on(trainer.collect()[1]) for name, trainer in runs.items()}
    params = {name: list(t.policy.model.parameters()) for name, t in runs.items()}
    assert stats["whole"]["flops_skipped"] > 0.0 == stats["drop-generated"]["flops_skipped"]
    assert stats["drop-generated"]["batch_rollouts"] < stats["whole"]["batch_rollouts"]
    for whole, dropped in zip(params["whole"], params["drop-generated"], strict=True):
        torch.testing.assert_close(dropped, whole, rtol=1e-5, atol=1e-7)
    # the kept-groups denominator is a larger step: a different update
    assert any(
        not torch.allclose(kept, whole, rtol=1e-5, atol=1e-7)
        for whole, kept in zip(params["whole"], params["drop-kept"], strict=True)
    )


def test_dropping_dead_groups_is_not_a_second_filter(tmp_path: Path):
    for other in ({"filter_groups": True}, {"method": "dapo"}):
        with pytest.raises(ValidationError, match="drop_equal_groups does not combine"):
            make_trainer(tmp_path, "bad", drop_equal_groups=True, **other)
    with pytest.raises(ValidationError, match="drop_equal_denominator needs"):
        make_trainer(tmp_path, "bad", drop_equal_denominator="generated")
    # a dead group's KL term is not zero, so the drop would change the update, not its cost
    for denominator in ("kept", "generated"):
        with pytest.raises(ValidationError, match="drop_equal_groups needs train.kl_coef 0"):
            make_trainer(
                tmp_path,
                "bad",
                kl_coef=0.1,
                drop_equal_groups=True,
                drop_equal_denominator=denominator,
            )
    make_trainer(tmp_path, "kl", kl_coef=0.1)


def test_early_groups_replace_the_planned_size_for_the_first_steps(tmp_path: Path):
    plan_fixed_g4 = {"g_min": 4, "g_max": 4}
    profile_config = RunConfig.model_validate(tiny_tree(tmp_path / "models", plan=plan_fixed_g4))
    profile_path = run_profile(profile_config, tmp_path / "profile")
    plan_path, _ = run_plan(profile_config, profile_path, tmp_path / "plan")
    early = {"method": "sgpo", "rollout_budget": 8, "early_group_size": 2, "early_group_steps": 1}
    tree = tiny_tree(tmp_path / "models", plan=plan_fixed_g4, train=early)
    trainer = Trainer(RunConfig.model_validate(tree), tmp_path / "run", plan_path)
    sizes_by_step = []
    for _ in range(2):
        generated, batch = trainer.collect()
        sizes_by_step.append([len(g) for g in group_members(generated)])
        trainer.train_on(batch)
        trainer.step += 1
    assert sizes_by_step == [[2, 2, 2, 2], [4, 4]]  # early: 2 each, then the plan's 4


def test_early_groups_need_both_settings_and_an_sgpo_plan(tmp_path: Path):
    with pytest.raises(ValidationError, match="go together"):
        make_trainer(tmp_path, "bad", method="sgpo", early_group_size=2)
    with pytest.raises(ValidationError, match="needs train.method 'sgpo'"):
        make_trainer(tmp_path, "bad", early_group_size=2, early_group_steps=4)
    with pytest.raises(ValidationError, match="early_group_size must be 0"):
        make_trainer(tmp_path, "bad", method="sgpo", early_group_size=1, early_group_steps=4)


def test_down_sampling_trains_the_most_varied_few_with_advantages_within_them(tmp_path: Path):
    trainer = make_trainer(tmp_path, "pods", group_size=6, rollout_budget=36, downsample_to=2)
    generated, batch = trainer.collect()
    groups = group_members(generated)
    assert all(len(g) == 6 for g in groups)  # generated whole
    trained = group_members(batch)
    assert len(trained) == len(groups) and all(len(g) == 2 for g in trained)
    mixed = 0
    for whole, few in zip(groups, trained, strict=True):
        rewards = [r.reward for r in whole]
        if len(set(rewards)) > 1:  # both outcomes among the two, advantages +-0.5 within them
            mixed += 1
            assert sorted(r.advantage for r in few) == [-0.5, 0.5]
            # the generated group keeps its own advantages (reward - the six's mean)
            mean = sum(rewards) / 6
            assert all(r.advantage == pytest.approx(r.reward - mean) for r in whole)
        else:
            assert all(r.advantage == 0.0 for r in few)
    assert mixed  # the coin-flip verifier gives mixed groups
    assert (rollout_record(generated, CORRECT_THRESHOLD)["rollouts"], len(batch)) == (36, 12)
    stats = trainer.train_on(batch)
    assert stats["trained_rollouts"] == 2 * mixed and stats["batch_rollouts"] == 12


def test_whole_group_down_sampling_keeps_group_advantages_weighted_by_outcome(tmp_path: Path):
    trainer = make_trainer(
        tmp_path,
        "pods-whole",
        group_size=6,
        rollout_budget=36,
        downsample_to=2,
        downsample_advantages="whole-group",
    )
    generated, batch = trainer.collect()
    mixed = 0
    for whole, few in zip(group_members(generated), group_members(batch), strict=True):
        assert len(few) == 2 and sum(r.weight for r in few) == 6  # stands for the six
        by_reward = {r.reward: r.advantage for r in whole}
        assert all(r.advantage == by_reward[r.reward] for r in few)  # the whole group's
        if len(by_reward) > 1:
            mixed += 1
            ones = sum(r.reward for r in whole)
            assert sorted(r.weight for r in few) == sorted([ones, 6 - ones])
    assert mixed  # the coin-flip verifier gives mixed groups


def test_a_minimum_share_down_samples_only_skewed_groups(tmp_path: Path):
    trainer = make_trainer(
        tmp_path,
        "pods-skewed",
        group_size=6,
        rollout_budget=60,
        downsample_to=2,
        downsample_advantages="whole-group",
        downsample_min_share=0.8,  # 5 or 6 of the six alike
    )
    generated, batch = trainer.collect()
    sizes = set()
    for whole, trained in zip(group_members(generated), group_members(batch), strict=True):
        rewards = [r.reward for r in whole]
        skewed = max(rewards.count(0.0), rewards.count(1.0)) >= 5
        assert len(trained) == (2 if skewed else 6)
        assert sum(r.weight for r in trained) == 6
        sizes.add(len(trained))
    assert sizes == {2, 6}  # the coin-flip verifier gives both kinds in ten groups


def test_a_weighted_response_trains_like_that_many_copies(tmp_path: Path):
    """The loss of a response with weight w (numerator and token-mean denominator) is the loss
    of w copies of it, so a down-sampled step estimates the whole groups' step."""
    batch = [r for r in make_trainer(tmp_path, "draw").collect()[1] if r.advantage != 0.0][:3]
    assert len(batch) == 3
    params, losses = [], []
    for name, step_batch in (
        ("weighted", [replace(batch[0], weight=3.0), *batch[1:]]),
        ("copies", [batch[0], batch[0], batch[0], *batch[1:]]),
    ):
        trainer = make_trainer(tmp_path, name)
        losses.append(trainer.train_on(step_batch)["loss"])
        params.append({n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()})
    # Adam's first step hardly sees the loss's scale: the loss itself says the denominators
    # count the weighted response as three
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name, value in params[0].items():  # Adam's step is ~lr = 1e-2 per weight; float sums
        torch.testing.assert_close(params[1][name], value, rtol=1e-3, atol=1e-4)
    untouched = make_trainer(tmp_path, "untouched").policy.model.named_parameters()
    assert any(not torch.equal(p, params[0][n]) for n, p in untouched)  # the step moved them


def test_down_sampling_needs_a_subset_that_can_show_both_outcomes(tmp_path: Path):
    with pytest.raises(ValidationError, match="downsample_to must be 0"):
        make_trainer(tmp_path, "bad", downsample_to=1)
    with pytest.raises(ValidationError, match="downsample_to does not combine"):
        make_trainer(tmp_path, "bad", downsample_to=4, grow_max=8)
    with pytest.raises(ValidationError, match="downsample_to does not combine"):
        make_trainer(tmp_path, "bad", downsample_to=4, method="dapo")
    with pytest.raises(ValidationError, match="need train.downsample_to"):
        make_trainer(tmp_path, "bad", downsample_advantages="whole-group")
    with pytest.raises(ValidationError, match="need train.downsample_to"):
        make_trainer(tmp_path, "bad", downsample_min_share=0.8)


def test_history_skips_spare_generation_on_queries_that_came_back_all_equal(tmp_path: Path):
    trainer = make_trainer(tmp_path, "greso", group_size=2, rollout_budget=8, history_explore=0.01)
    scheduler = trainer.scheduler
    while scheduler.remaining:  # the first epoch: every query generated, its groups observed
        trainer.train_step()
    assert scheduler.epoch == 0 and scheduler.history_skipped == 0
    streaks = scheduler.zero_streaks
    assert set(streaks) == set(trainer.queries_by_id)
    all_equal = {q for q, z in streaks.items() if z}
    assert all_equal and len(all_equal) < len(streaks)  # coin-flip groups of two: both kinds
    visited = {s.query.query_id for s in trainer.next_queries(len(streaks) * 2)}
    assert scheduler.epoch == 1
    assert set(streaks) - all_equal <= visited  # mixed last time: generated
    assert len(visited & all_equal) <= len(all_equal) // 4  # all equal: generated 1% of times
    assert scheduler.history_skipped == len(streaks) - len(visited)
    assert trainer.train_step()["history_skipped"] == scheduler.history_skipped


def test_a_solved_streak_skips_only_queries_training_has_solved(tmp_path: Path):
    trainer = make_trainer(
        tmp_path,
        "greso-solved",
        group_size=2,
        rollout_budget=8,
        history_explore=0.01,
        history_streak="solved",
    )
    last_rewards: dict[str, set[float]] = {}
    collect = trainer.collect

    def recording_collect() -> tuple[list, list]:
        generated, batch = collect()
        for group in group_members(generated):
            last_rewards[group[0].query.query_id] = {r.reward for r in group}
        return generated, batch

    trainer.collect = recording_collect
    while trainer.scheduler.remaining:  # the first epoch: every query generated once
        trainer.train_step()
    solved = {q for q, rewards in last_rewards.items() if rewards == {1.0}}
    failed = {q for q, rewards in last_rewards.items() if rewards == {0.0}}
    assert solved and failed  # coin-flip groups of two: both kinds of all-equal groups
    assert {q for q, z in trainer.scheduler.zero_streaks.items() if z} == solved


def test_small_groups_on_a_streak_shrink_the_groups_of_queries_that_came_back_all_equal(
    tmp_path: Path,
):
    trainer = make_trainer(
        tmp_path, "streak-g2", group_size=4, rollout_budget=16, streak_group_size=2
    )
    last_equal: dict[str, bool] = {}
    sizes: list[dict[str, int]] = []
    collect = trainer.collect

    def recording_collect() -> tuple[list, list]:
        generated, batch = collect()
        groups = group_members(generated)
        sizes.append({g[0].query.query_id: len(g) for g in groups})
        for group in groups:
            last_equal[group[0].query.query_id] = len({r.reward for r in group}) == 1
        return generated, batch

    trainer.collect = recording_collect
    while trainer.scheduler.remaining:  # the first epoch: every query at its G
        trainer.train_step()
    assert all(size == 4 for step in sizes for size in step.values())
    on_streak = {q for q, equal in last_equal.items() if equal}
    assert on_streak and on_streak != set(last_equal)  # coin flips: both kinds
    sizes.clear()
    trainer.train_step()
    for query_id, size in sizes[0].items():  # the second epoch's first step
        assert size == (2 if query_id in on_streak else 4), query_id
    assert sum(sizes[0].values()) <= 16


def test_history_skips_need_one_generated_group_per_visit(tmp_path: Path):
    with pytest.raises(ValidationError, match="history_explore does not combine"):
        make_trainer(tmp_path, "bad", history_explore=0.5, method="dapo")
    with pytest.raises(ValidationError, match="history_explore does not combine"):
        make_trainer(tmp_path, "bad", history_explore=0.5, filter_groups=True)


def test_a_history_target_keeps_steps_full_and_moves_explore(tmp_path: Path):
    trainer = make_trainer(
        tmp_path, "greso-t", group_size=2, rollout_budget=8, history_explore=0.5, history_target=0.1
    )
    records = [trainer.train_step() for _ in range(12)]
    explores = [r["history_explore"] for r in records]
    steps = zip([0.5, *explores[:-1]], explores, strict=True)
    assert all(abs(b - a) == pytest.approx(0.01) for a, b in steps)
    assert trainer.scheduler.epoch >= 2 and trainer.scheduler.history_skipped > 0
    assert all(r["rollouts"] == 8 for r in records)  # skips do not shrink a step


def test_history_fill_keeps_steps_full_at_a_fixed_explore(tmp_path: Path):
    trainer = make_trainer(
        tmp_path,
        "greso-fill",
        group_size=2,
        rollout_budget=8,
        history_explore=0.01,
        history_fill=True,
    )
    records = [trainer.train_step() for _ in range(12)]
    assert trainer.scheduler.history_skipped > 0 and trainer.scheduler.epoch >= 2
    assert all(r["rollouts"] == 8 and r["history_explore"] == 0.01 for r in records)


@pytest.mark.parametrize(
    "setting",
    [
        {"history_target": 0.1},
        {"history_min_streak": 2},
        {"history_fill": True},
    ],
)
def test_history_settings_need_skip_on_history(tmp_path: Path, setting: dict):
    name = next(iter(setting))
    with pytest.raises(ValidationError, match=f"train.{name} needs train.history_explore < 1"):
        make_trainer(tmp_path, "bad", **setting)


@pytest.mark.parametrize(
    "settings",
    [{"method": "sgpo"}, {"method": "grpo", "history_explore": 0.5}],
    ids=["without skips", "without a plan"],
)
def test_a_history_from_the_profile_needs_a_plan_and_skips(settings: dict):
    with pytest.raises(ValidationError, match="history_from_profile needs"):
        TrainConfig(history_from_profile=True, **settings)
    seeded = {"method": "sgpo", "history_explore": 0.5, "history_from_profile": True}
    TrainConfig(**seeded)
    with pytest.raises(ValidationError, match="does not combine with train.reuse_profile"):
        TrainConfig(**seeded, reuse_profile=True)
    # a plan that drops every query it could seed: refused, until it keeps them
    with pytest.raises(ValidationError, match="plan.drop_trivial drops every such query"):
        RunConfig.model_validate({"train": seeded})
    RunConfig.model_validate({"train": seeded, "plan": {"drop_trivial": False}})
    RunConfig.model_validate({"train": seeded, "plan": {"trivial_keep_fraction": 0.5}})


def test_a_history_from_the_profile_reaches_the_trainers_scheduler(tmp_path: Path):
    """On the benchmark's solvable plan from a first-success profile: the kept queries solved
    at their first sample start on a streak."""
    first_success = {"adaptive": True, "adaptive_round": 1, "adaptive_stop": "first_success"}
    solvable = {"unsolvable_keep_fraction": 0, "drop_trivial": False, "g_min": 8, "g_max": 8}
    solvable["bucket_width"] = 1.0
    settings = {"profile": first_success, "plan": solvable}
    config = RunConfig.model_validate(tiny_tree(tmp_path / "models", **settings))
    plan_path, _ = run_plan(config, run_profile(config, tmp_path / "profile"), tmp_path / "plan")
    rows, _ = read_plan(plan_path)
    solved = {r.query_id for r in rows if r.kept and r.n_correct == r.k}
    assert solved, "the tiny model solves some queries at their first sample"
    for seeded in (True, False):
        train = {"method": "sgpo", "history_explore": 0.5, "history_from_profile": seeded}
        tree = tiny_tree(tmp_path / "models", train=train, **settings)
        trainer = Trainer(RunConfig.model_validate(tree), tmp_path / f"run-{seeded}", plan_path)
        assert trainer.scheduler.zero_streaks == (dict.fromkeys(solved, 1) if seeded else {})


def test_small_groups_on_a_streak_are_checked(tmp_path: Path):
    with pytest.raises(ValidationError, match="streak_group_size must be 0"):
        make_trainer(tmp_path, "bad", streak_group_size=1)
    with pytest.raises(ValidationError, match="streak_group_size does not combine"):
        make_trainer(tmp_path, "bad", streak_group_size=2, method="dapo")
    # the solved streak needs skips or small groups; with small groups alone it is accepted
    with pytest.raises(ValidationError, match="history_streak needs"):
        make_trainer(tmp_path, "bad", history_streak="solved")
    trainer = make_trainer(tmp_path, "ok", streak_group_size=2, history_streak="solved")
    assert trainer.scheduler.streak_group_size == 2


def test_first_visit_profile_trains_without_a_profile_and_drops_after_the_first_group(
    tmp_path: Path,
):
    tree = tiny_tree(
        tmp_path / "models",
        task={"verifier": "bad_verifiers:fixed_or_coin"},  # p = 0, p = 1 or a coin flip
        plan={"g_min": 4, "g_max": 4, "bucket_width": 1.0, "unsolvable_keep_fraction": 0.0},
        train={"steps": 14, "eval_every": 0, "checkpoint_every": 0, "first_visit_profile": True},
    )
    trainer = Trainer(RunConfig.model_validate(tree), tmp_path / "fv")  # no profile, no plan
    assert trainer.plan_path is None and trainer.flops["profile"] == 0.0
    visits: dict[str, int] = {}
    collect = trainer.collect

    def counting_collect() -> tuple[list, list]:
        generated, batch = collect()
        for members in group_members(generated):
            assert len(members) == 4
            qid = members[0].query.query_id
            visits[qid] = visits.get(qid, 0) + 1
        return generated, batch

    trainer.collect = counting_collect
    for _ in range(14):  # 24 queries, two groups of 4 a step: past the first epoch
        before = trainer.scheduler.first_visit_dropped
        record = trainer.train_step()
        dropped_now = trainer.scheduler.first_visit_dropped - before
        assert record["batch_rollouts"] == record["rollouts"] - 4 * dropped_now  # not trained
    kinds = {q.query_id: int(q.answer) % 3 for q in trainer.task.train}
    assert set(visits) == set(kinds) and trainer.scheduler.epoch >= 1
    fixed = {q for q, kind in kinds.items() if kind != 2}
    assert fixed and all(visits[q] == 1 for q in fixed)  # dropped after their first group
    assert fixed <= set(trainer.scheduler.profiled) and not fixed & set(
        ids_of(trainer.scheduler.queries)
    )
    assert any(visits[q] > 1 for q in kinds if q not in fixed)  # mixed ones come back
    assert record["first_visit_dropped"] == trainer.scheduler.first_visit_dropped >= len(fixed)


def ids_of(scheduled: list) -> set[str]:
    return {s.query.query_id for s in scheduled}


def test_first_visit_profile_needs_one_group_size_and_no_profile_to_start_from(tmp_path: Path):
    with pytest.raises(ValidationError, match="one group size"):
        make_trainer(tmp_path, "bad", method="sgpo", first_visit_profile=True)
    with pytest.raises(ValidationError, match="needs train.method 'sgpo'"):
        make_trainer(tmp_path, "bad", first_visit_profile=True)
    with pytest.raises(ValidationError, match="needs train.method 'sgpo'"):
        make_trainer(tmp_path, "bad", method="sgpo", first_visit_profile=True, reuse_profile=True)
    with pytest.raises(ValidationError, match="does not combine"):
        make_trainer(tmp_path, "bad", method="sgpo", first_visit_profile=True, grow_max=8)


def test_plan_predicts_that_dropped_dead_groups_cost_a_train_all_trainer_nothing(tmp_path: Path):
    whole = RunConfig.model_validate(tiny_tree(tmp_path / "models"))
    profile_path = run_profile(whole, tmp_path / "profile")
    _, kept = run_plan(whole, profile_path, tmp_path / "plan-whole")
    drop = tiny_tree(tmp_path / "models", train={"drop_equal_groups": True})
    _, dropped = run_plan(RunConfig.model_validate(drop), profile_path, tmp_path / "plan-drop")
    flops, train_all = (f"predicted_ratio_per_informative_{c}" for c in CURRENCIES[1:])
    # this trainer skips dead groups' passes either way; a train-all trainer no longer trains them
    assert dropped[flops] == pytest.approx(kept[flops])
    assert dropped[train_all] > kept[train_all]


def test_rollouts_sample_and_train_at_the_rollout_temperature(tmp_path: Path, monkeypatch):
    import sgpo.update

    trainer = make_trainer(tmp_path, "hot", rollout_temperature=1.7)
    temperatures = []
    real_generate = trainer.engine.generate

    def generate(prompts, seeds, params, progress=None, stop_asked=None):
        temperatures.append(params.temperature)
        return real_generate(prompts, seeds, params, progress, stop_asked)

    monkeypatch.setattr(trainer.engine, "generate", generate)
    generated, batch = trainer.collect()
    trainer.run_eval()
    assert temperatures == [1.7, 1.0]  # training groups hot, evaluation at sampling.temperature
    trained = [r for r in batch if r.advantage != 0.0]
    with torch.no_grad():
        hot = sgpo.update.response_logprobs(trainer.policy, trained, 1.7)[0]
        cold = sgpo.update.response_logprobs(trainer.policy, trained)[0]
        # the tempered distribution's log-prob, normalised over the vocabulary at T
        r = trained[0]
        ids = torch.tensor([r.completion.prompt_ids + r.completion.response_ids])
        logits = trainer.policy.model(input_ids=ids).logits.float()[0] / 1.7
        first = len(r.completion.prompt_ids) - 1
        expected = torch.log_softmax(logits[first], -1)[r.completion.response_ids[0]]
    torch.testing.assert_close(hot[0, 0], expected)
    captured = []
    real_loss = sgpo.update.clipped_policy_loss

    def spy(logprobs, old, *args):
        captured.append(logprobs.detach().clone())
        return real_loss(logprobs, old, *args)

    monkeypatch.setattr(sgpo.update, "clipped_policy_loss", spy)
    trainer.train_on(batch)
    (logprobs,) = captured  # one micro-batch, one epoch
    torch.testing.assert_close(logprobs, hot)  # the update's log-probs: logits / 1.7
    assert not torch.allclose(logprobs, cold)


def test_profile_reuse_needs_the_profile_temperature(tmp_path: Path):
    tree = tiny_tree(tmp_path, train={"reuse_profile": True, "rollout_temperature": 1.5})
    with pytest.raises(ValidationError, match="rollout_temperature"):
        RunConfig.model_validate(tree)
    tree["train"]["rollout_temperature"] = 1.0
    assert RunConfig.model_validate(tree).rollout_temperature == 1.0


def test_the_logged_lr_is_the_one_the_steps_update_used(tmp_path: Path):
    trainer = make_trainer(tmp_path, "warmup", steps=3, warmup_steps=2, lr=0.01)
    used: list[float] = []
    optimizer_step = trainer.update._optimizer_step

    def spy(loss: float) -> float | None:
        used.append(trainer.update.optimizer.param_groups[0]["lr"])
        return optimizer_step(loss)

    trainer.update._optimizer_step = spy
    trainer.train()
    logged = [r["lr"] for r in read_jsonl(trainer.metrics_path)[1:]]
    assert logged == pytest.approx([0.0, 0.005, 0.01]) == used


def test_float16_training_is_refused_before_the_model_loads_unless_an_adapter_trains(
    tmp_path: Path,
):
    tree = tiny_tree(tmp_path / "models", train={"method": "grpo", "steps": 1})
    tree["model"]["dtype"] = "float16"
    with pytest.raises(ConfigError, match="model.dtype=float16 with every weight trained"):
        Trainer(RunConfig.model_validate(tree), tmp_path / "fp16")
    # peft keeps a trainable adapter in float32 over the float16 weights: it trains, finite
    tree["model"]["lora"] = {"r": 4}
    tree["model"]["device"] = "cpu"
    trainer = Trainer(RunConfig.model_validate(tree), tmp_path / "fp16-lora")
    trainable = [p for p in trainer.policy.model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}
    one_step(trainer)
    assert all(bool(torch.isfinite(p).all()) for p in trainer.policy.model.parameters())


def test_an_update_that_makes_weights_non_finite_stops_the_run_unsaved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A finite loss and gradient whose step still overflows the weights (float16's AdamW):
    the run stops at once, instead of training on NaN weights and checkpointing them."""
    trainer = make_trainer(tmp_path, "overflow", group_size=2, rollout_budget=16)
    step = trainer.update.optimizer.step

    def overflowing_step() -> None:
        step()
        weight = next(p for p in trainer.policy.model.parameters() if p.requires_grad)
        weight.data.view(-1)[0] = torch.inf

    monkeypatch.setattr(trainer.update.optimizer, "step", overflowing_step)
    with pytest.raises(NonFiniteError, match=r"the optimizer step made 1 weights non-finite"):
        one_step(trainer)


def test_a_bfloat16_full_fine_tune_at_a_small_lr_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from sgpo.train import warn_of_bfloat16_rounding

    tree = tiny_tree(tmp_path / "models", train={"method": "grpo", "lr": 1e-6})
    config = RunConfig.model_validate(tree)
    with caplog.at_level("WARNING", logger="sgpo.train"):
        warn_of_bfloat16_rounding(config, torch.float32)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="sgpo.train"):
        warn_of_bfloat16_rounding(config, torch.bfloat16)
    assert "at train.lr=1e-06 most updates round away" in caplog.text
    caplog.clear()
    tree["model"]["lora"] = {"r": 4}
    with caplog.at_level("WARNING", logger="sgpo.train"):
        warn_of_bfloat16_rounding(RunConfig.model_validate(tree), torch.bfloat16)  # an adapter
    assert not caplog.records


@pytest.mark.parametrize(
    ("settings", "needed"),
    [
        ({"grow_round": 2}, "train.grow_round needs train.grow_max >= 2"),
        ({"grow_train": "balanced"}, "train.grow_train needs train.grow_max >= 2"),
        ({"refill_max_rounds": 2}, "train.refill_max_rounds needs train.filter_groups: true"),
        ({"pilot_ends": "all-solved"}, "train.pilot_ends needs train.pilot_size >= 2"),
        ({"dapo_max_rounds": 2}, "train.dapo_max_rounds needs train.method 'dapo'"),
        ({"keep_checkpoints": 2}, "train.keep_checkpoints needs train.checkpoint_every >= 1"),
        (
            {"method": "grpo", "group_size": 4, "downsample_to": 4},
            r"train.downsample_to \(4\) does nothing with method 'grpo' and train.group_size 4",
        ),
        (
            {"method": "grpo", "filter_groups": True, "pilot_size": 8},
            r"train.pilot_size \(8\) does nothing .* a pilot that size is the whole group",
        ),
        (
            {"method": "grpo", "group_size": 8, "grow_max": 8},
            r"train.grow_max \(8\) does nothing .* no group could grow past it",
        ),
    ],
)
def test_a_setting_that_alone_does_nothing_is_refused(settings: dict, needed: str):
    with pytest.raises(ValidationError, match=needed):
        TrainConfig(**settings)
    # but read from a run's own config.yaml, as it trained (they did nothing there either)
    assert TrainConfig.model_validate(settings, context=RECORDED).model_dump() == (
        TrainConfig.model_construct(**settings).model_dump()
    )


def test_settings_with_what_they_act_on_are_accepted():
    TrainConfig(grow_max=8, grow_round=2, grow_train="balanced")
    TrainConfig(filter_groups=True, refill_max_rounds=2, pilot_size=2, pilot_ends="all-solved")
    TrainConfig(method="dapo", dapo_max_rounds=2)
    TrainConfig(checkpoint_every=5, keep_checkpoints=2)
    # inside GRPO's group: each acts
    TrainConfig(method="grpo", group_size=8, downsample_to=4)
    TrainConfig(method="grpo", group_size=8, filter_groups=True, pilot_size=4)
    TrainConfig(method="grpo", group_size=8, grow_max=16)
    # sGPO's groups are the plan's, of any size: a setting may act on some of them
    TrainConfig(method="sgpo", group_size=4, downsample_to=4)


def test_a_lora_runs_initial_policy_is_its_model_with_the_adapter_disabled(tmp_path: Path):
    """No second copy of the base for the KL reference: the trained model with its fresh
    adapter disabled gives the initial policy's log-probs exactly, before and after updates,
    in eval mode whatever the training mode, and its passes are charged at the base's size."""
    from sgpo.models import AdapterDisabled, load_policy, model_shape
    from sgpo.update import response_logprobs

    tree = tiny_tree(
        tmp_path / "models",
        train={"method": "grpo", "steps": 2, "group_size": 2, "rollout_budget": 16},
    )
    tree["model"]["lora"] = {"r": 4, "dropout": 0.5}
    tree["train"]["kl_coef"] = 0.1
    config = RunConfig.model_validate(tree)
    trainer = Trainer(config, tmp_path / "lora-kl")
    reference = trainer.update.reference
    assert isinstance(reference.model, AdapterDisabled)
    separate = load_policy(config)  # the initial model loaded again, as before
    for _ in range(2):
        batch, _ = one_step(trainer)
        trainer.policy.model.train()
        with torch.no_grad():
            viewed = response_logprobs(reference, batch)[0]
            loaded = response_logprobs(separate, batch)[0]
        torch.testing.assert_close(viewed, loaded)
        assert trainer.policy.model.training  # the view left the training mode as it was
    moved = response_logprobs(trainer.policy, batch)[0].detach()
    assert not torch.allclose(moved, loaded)  # the adapter trained: the view is not the policy
    assert trainer.update.initial_shape == model_shape(separate.model)
