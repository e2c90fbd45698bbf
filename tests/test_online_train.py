"""The online sGPO variants through the real trainer on the tiny model: estimates move with
training outcomes, re-plans never lose or duplicate a query, re-profiling is charged to the
profile FLOPs, and metrics reach TensorBoard through report_to."""

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from tiny_run import tiny_tree

from sgpo.config import RECORDED, RunConfig, TrainConfig
from sgpo.io import read_jsonl, read_table
from sgpo.plan import run_plan
from sgpo.profile import run_profile
from sgpo.train import Trainer, run_train


def test_online_knapsack_reprofile_run(tmp_path: Path):
    tree = tiny_tree(
        tmp_path / "models",
        plan={"unsolvable_keep_fraction": 0.0, "g_max": 6},
        train={
            "steps": 6,
            "eval_every": 0,
            "checkpoint_every": 0,
            "rollout_budget": 12,
            "report_to": ["tensorboard"],
            "online": {
                "reestimate": True,
                "replan_every": 2,
                "decay": 0.5,
                "allocation": "knapsack",
                "allocation_value": "info_gain",
                "reprofile_every": 3,
                "reprofile_sample": 4,
                "reprofile_k": 2,
            },
        },
    )
    config = RunConfig.model_validate(tree)
    run_dir = tmp_path / "run"
    run_profile(config, run_dir)
    run_plan(config, run_dir / "profile.parquet", run_dir)
    plan_rows, plan_meta = read_table(run_dir / "plan.parquet")
    summary = run_train(config, run_dir)

    history, _ = read_table(run_dir / "plan_history.parquet")
    ids = sorted(r["query_id"] for r in plan_rows)
    steps = sorted({h["step"] for h in history})
    assert steps == [2, 3, 4, 6]  # replan_every 2, plus after each re-profiling (3, 6)
    for step in steps:  # every re-plan holds every query exactly once
        assert sorted(h["query_id"] for h in history if h["step"] == step) == ids
    records = read_jsonl(run_dir / "metrics.jsonl")[1:]
    # With the default zero prior an untouched estimate is still the profile's n/k: exactly the
    # queries trained in steps 1-2 (distinct, all in the first epoch) moved before re-plan 1.
    first = {h["query_id"]: h["p_est"] for h in history if h["step"] == steps[0]}
    profiled = {r["query_id"]: r["p_hat"] for r in plan_rows}
    moved = [q for q in ids if first[q] != profiled[q]]
    assert len(moved) == records[0]["queries"] + records[1]["queries"]
    assert all("plan_kept" in r and "plan_p_mean" in r for r in records)
    # knapsack groups respect the budget and the G bounds
    assert all(
        r["rollouts"] <= 12 and 2 <= r["group_size_min"] <= r["group_size_max"] <= 6
        for r in records
    )
    # re-profiling is inference charged to the profile phase, on top of the initial profile
    assert summary["flops_by_phase"]["profile"] > plan_meta["profile_flops"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6


def test_online_run_resumes_with_its_estimates(tmp_path: Path):
    tree = tiny_tree(
        tmp_path / "models",
        train={
            "steps": 4,
            "eval_every": 0,
            "checkpoint_every": 1,
            "online": {"reestimate": True, "replan_every": 1},
        },
    )
    config = RunConfig.model_validate(tree)
    full, part = tmp_path / "full", tmp_path / "part"
    for d in (full, part):
        run_profile(config, d)
        run_plan(config, d / "profile.parquet", d)
    run_train(config, full)
    short = RunConfig.model_validate(
        tiny_tree(tmp_path / "models", train=tree["train"] | {"steps": 2})
    )
    run_train(short, part)
    run_train(config, part, resume=True)

    # The short run ended at step 2 with a final evaluation: compare everything but evals/time.
    def comparable(path: Path) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "wall_s" and not k.startswith("eval_")}
            for r in read_jsonl(path / "metrics.jsonl")
        ]

    strip, again = comparable(full), comparable(part)
    assert again == strip
    assert (
        read_table(full / "plan_history.parquet")[0] == read_table(part / "plan_history.parquet")[0]
    )


def test_online_settings_are_refused_for_methods_without_a_plan():
    # grpo and dapo train without a plan, so a re-plan setting would be silently ignored
    for online in ({"reestimate": True}, {"allocation": "knapsack"}, {"reprofile_every": 4}):
        for method in ("grpo", "dapo"):
            with pytest.raises(ValidationError, match="train.online re-planning needs"):
                TrainConfig(method=method, online=online)
        assert TrainConfig(method="sgpo", online=online).online.replans
    # a setting of re-planning without its switch would read as on and do nothing
    with pytest.raises(ValidationError, match=r"train.online.replan_every \(4\) needs"):
        TrainConfig(method="grpo", online={"replan_every": 4})


@pytest.mark.parametrize(
    ("online", "needed"),
    [
        ({"replan_every": 4}, "reestimate: true"),
        ({"decay": 0.3}, "re-planning"),
        ({"prior_alpha": 1.0, "prior_beta": 1.0}, "re-planning"),
        ({"allocation_window": 4.0, "reestimate": True}, "allocation: knapsack"),
        ({"allocation_value": "info_gain"}, "allocation: knapsack"),
        ({"reprofile_sample": 32}, "reprofile_every >= 1"),
        ({"reprofile_k": 4, "reestimate": True}, "reprofile_every >= 1"),
    ],
)
def test_an_online_setting_without_its_switch_is_refused_unless_recorded(
    online: dict, needed: str
) -> None:
    tree = {"train": {"online": online}}
    with pytest.raises(ValidationError, match=f"needs train.online.{re.escape(needed)}"):
        RunConfig.model_validate(tree)
    # a run that recorded it trained with it doing nothing: read back as it was
    RunConfig.model_validate(tree, context=RECORDED)
    # with its switch on, the same setting acts
    switched = {"reestimate": True, "allocation": "knapsack", "reprofile_every": 4}
    assert RunConfig.model_validate({"train": {"online": online | switched}}).train.online.replans


def test_a_replan_that_keeps_no_query_ends_the_run_cleanly(tmp_path: Path):
    # training solves everything: each re-plan drops more queries as trivial, until none is left
    tree = tiny_tree(
        tmp_path / "models",
        train={
            "steps": 60,
            "eval_every": 0,
            "checkpoint_every": 0,
            "online": {"reestimate": True, "replan_every": 2, "decay": 0.5},
        },
    )
    config = RunConfig.model_validate(tree)
    run_dir = tmp_path / "run"
    run_profile(config, run_dir)
    run_plan(config, run_dir / "profile.parquet", run_dir)
    trainer = Trainer(config, run_dir, run_dir / "plan.parquet")
    trainer.rollouts.verifier.score = lambda texts, answers, ids: [1.0] * len(texts)
    summary = trainer.train()
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records[-1]["plan_kept"] == 0 and records[-1]["plan_p_mean"] is None
    assert all(r["plan_kept"] > 0 for r in records[1:-1])
    assert summary["steps"] == records[-1]["step"] < 60
    assert (run_dir / "summary.json").exists() and (run_dir / "final").is_dir()
    assert "eval_acc" in records[-1]  # the last step is evaluated, as at a budget's end


def test_a_fresh_run_over_an_online_one_leaves_none_of_its_plan_history(tmp_path: Path):
    def online(steps: int, replan_every: int) -> RunConfig:
        train = {"steps": steps, "eval_every": 0, "checkpoint_every": 0}
        train["online"] = {"reestimate": True, "replan_every": replan_every}
        return RunConfig.model_validate(tiny_tree(tmp_path / "models", train=train))

    run_dir = tmp_path / "run"
    run_profile(online(3, 1), run_dir)
    run_plan(online(3, 1), run_dir / "profile.parquet", run_dir)
    run_train(online(3, 1), run_dir)
    assert sorted({h["step"] for h in read_table(run_dir / "plan_history.parquet")[0]}) == [1, 2, 3]
    # over it, a run that never re-plans: the earlier run's history must not pass for its own
    # (a resume would read it back)
    run_train(online(2, 3), run_dir, overwrite=True)
    assert not (run_dir / "plan_history.parquet").exists()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"plan": {"g_min": 1}}, "plan.g_min >= 2"),
        ({"train": {"history_explore": 0.5, "history_fill": True}}, "no train.history_fill"),
        ({"train": {"history_explore": 0.5, "history_target": 0.1}}, "no train.history_target"),
        ({"train": {"streak_group_size": 2}}, "no train.streak_group_size"),
    ],
)
def test_knapsack_allocation_refuses_settings_it_would_ignore_or_break(settings, named):
    tree = tiny_tree(Path("unused"), train={"online": {"allocation": "knapsack"}})
    for section, values in settings.items():
        tree[section] = tree[section] | values
    with pytest.raises(ValidationError, match=f"allocation knapsack needs {named}"):
        RunConfig.model_validate(tree)


def test_dapo_refuses_a_budget_smaller_than_one_group():
    with pytest.raises(ValidationError, match=r"rollout_budget \(3\) must hold one group"):
        TrainConfig(method="dapo", group_size=4, rollout_budget=3)
    assert TrainConfig(method="grpo", group_size=4, rollout_budget=3)  # trains one group a step


def test_a_config_with_other_plan_settings_than_its_plan_is_told_which_rule_trains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from sgpo.errors import ConfigError

    tree = tiny_tree(
        tmp_path / "models",
        plan={"g_max": 6},
        train={"steps": 1, "eval_every": 0, "checkpoint_every": 0, "rollout_budget": 12},
    )
    config = RunConfig.model_validate(tree)
    run_dir = tmp_path / "run"
    run_plan(config, run_profile(config, run_dir), run_dir)
    tree["plan"]["g_max"] = 8  # the run's config says otherwise than the plan file
    other = RunConfig.model_validate(tree)
    with caplog.at_level("WARNING", logger="sgpo.schedule"):
        Trainer(other, tmp_path / "static", run_dir / "plan.parquet")
    assert "plan.g_max: 6 in the plan, 8 in the config" in caplog.text
    assert "the plan file's filter and group sizes train" in caplog.text
    tree["train"]["online"] = {"reestimate": True, "replan_every": 1}
    with pytest.raises(ConfigError, match="re-plans with the config's g_max: the run would"):
        Trainer(RunConfig.model_validate(tree), tmp_path / "online", run_dir / "plan.parquet")
    # a resumed run that already switched: nothing else could finish it, so it is warned
    from sgpo.schedule import check_plan_rule

    _, meta = read_table(run_dir / "plan.parquet")
    caplog.clear()
    with caplog.at_level("WARNING", logger="sgpo.schedule"):
        check_plan_rule(meta, RunConfig.model_validate(tree), run_dir / "plan.parquet", True)
    assert "re-plans use the config's" in caplog.text
    # a setting re-planning never reads (the first plan's keep fraction): warned, not refused
    tree["plan"]["g_max"] = 6
    tree["plan"]["unsolvable_keep_fraction"] = 0.5
    caplog.clear()
    with caplog.at_level("WARNING", logger="sgpo.schedule"):
        check_plan_rule(meta, RunConfig.model_validate(tree), run_dir / "plan.parquet")
    assert "plan.unsolvable_keep_fraction: 1.0 in the plan, 0.5 in the config" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sgpo.schedule"):
        Trainer(config, tmp_path / "same", run_dir / "plan.parquet")
    assert "other plan settings" not in caplog.text


def test_a_budget_the_profile_already_spent_and_a_decaying_schedule_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    tree = tiny_tree(
        tmp_path / "models",
        train={"steps": 3, "eval_every": 0, "checkpoint_every": 0, "rollout_budget": 12},
    )
    config = RunConfig.model_validate(tree)
    run_dir = tmp_path / "run"
    run_plan(config, run_profile(config, run_dir), run_dir)
    tree["train"] |= {"max_total_flops": 1.0, "lr_schedule": "cosine"}
    with caplog.at_level("WARNING", logger="sgpo.train"):
        summary = run_train(RunConfig.model_validate(tree), run_dir)
    assert summary["steps"] == 0
    assert "train.max_total_flops=1 is spent before the first step" in caplog.text
    assert "train.lr_schedule=cosine decays over train.steps=3, but train.max_total_flops" in (
        caplog.text
    )
