"""task.success_threshold: the reward from which a response counts as a success, in the
verifier's own units. With a partial-credit verifier (bad_verifiers:graded: 0, 0.7 or 1 by the
reference) the profile's p_hat, the training groups' outcomes and held-out accuracy all follow
it; a plan refuses a profile that counted successes otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from tiny_run import tiny_tree

from sgpo.config import RunConfig, load_config
from sgpo.errors import ConfigError, DataError
from sgpo.io import read_jsonl, read_table, write_table
from sgpo.plan import read_plan, run_plan
from sgpo.profile import merge_profiles, run_profile
from sgpo.profile_match import profiled_success_threshold
from sgpo.report import variant_settings
from sgpo.reuse import load_profile_reuse
from sgpo.rollouts import pilot_ends_group
from sgpo.tasks import load_task
from sgpo.train import run_train

GRADED = "bad_verifiers:graded"
CREDIT = {0: 0.0, 1: 0.7, 2: 1.0}  # by reference answer mod 3


def graded_config(root: Path, **task: object) -> RunConfig:
    tree = tiny_tree(
        root / "models",
        task={"verifier": GRADED, "addition": {"n_train": 12, "n_eval": 12}} | task,
        train={
            "method": "grpo",
            "steps": 1,
            "rollout_budget": 48,  # every training query's group of 4
            "eval_every": 1,
            "checkpoint_every": 0,
        },
    )
    return RunConfig.model_validate(tree)


def credit_by_query(config: RunConfig) -> dict[str, float]:
    task = load_task(config.task, config.seed)
    return {q.query_id: CREDIT[int(q.answer) % 3] for q in task.train + task.eval}


@pytest.mark.parametrize(("threshold", "solved_from"), [(None, 0.7), (1.0, 1.0), (0.6, 0.7)])
def test_the_profile_counts_successes_from_the_threshold_up(tmp_path, threshold, solved_from):
    config = graded_config(tmp_path, success_threshold=threshold)
    credit = credit_by_query(config)
    rows, meta = read_table(run_profile(config, tmp_path / "profile"))
    assert {credit[r["query_id"]] for r in rows} == {0.0, 0.7, 1.0}  # every kind is there
    for row in rows:
        solved = credit[row["query_id"]] >= solved_from
        assert row["n_correct"] == (row["k"] if solved else 0), row
    assert profiled_success_threshold(meta) == (0.5 if threshold is None else threshold)


def test_a_full_share_summed_in_floats_is_a_success_at_threshold_one(tmp_path):
    config = graded_config(tmp_path, verifier="bad_verifiers:share_of_tests", success_threshold=1)
    rows, meta = read_table(run_profile(config, tmp_path / "profile"))
    assert meta["verifier_errors"] == 0  # 1.0000000000000002 is the range's top, not outside
    kind = {q.query_id: int(q.answer) % 3 for q in load_task(config.task, config.seed).train}
    for row in rows:
        all_passed = kind[row["query_id"]] != 0
        assert row["n_correct"] == (row["k"] if all_passed else 0), row
    assert set(kind.values()) == {0, 1, 2}
    # a plan an older sgpo counted (0.9999999999999999 short of 1.0) is told apart on reuse
    keep_solved = config.model_copy(
        update={"plan": config.plan.model_copy(update={"drop_trivial": False})}
    )
    plan_path, _ = run_plan(keep_solved, tmp_path / "profile" / "profile.parquet", tmp_path / "p")
    plan_rows, _ = read_plan(plan_path)
    older = [replace(r, n_correct=0) if r.kept and kind[r.query_id] == 2 else r for r in plan_rows]
    with pytest.raises(DataError, match=r"n_correct = 0 \(counted as an sgpo before 1e-6"):
        load_profile_reuse(plan_path, older, config.task.correct_threshold)


def test_training_and_evaluation_count_successes_from_the_threshold_up(tmp_path):
    config = graded_config(tmp_path, success_threshold=1.0)
    credit = credit_by_query(config)
    run_train(config, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    outcomes = [o for r in records for o in r.get("group_outcomes", [])]
    assert {credit[q] for q, _, _ in outcomes} >= {0.7, 1.0}
    for query_id, size, n_correct in outcomes:  # 0.7 is partial credit, not a success
        assert n_correct == (size if credit[query_id] == 1.0 else 0)
    task = load_task(config.task, config.seed)
    solved = sum(credit[q.query_id] == 1.0 for q in task.eval) / len(task.eval)
    assert 0 < solved < sum(credit[q.query_id] >= 0.7 for q in task.eval) / len(task.eval)
    assert [r["eval_acc"] for r in records if "eval_acc" in r] == [solved, solved]


def test_a_plan_refuses_a_profile_that_counted_successes_otherwise(tmp_path):
    profile = run_profile(graded_config(tmp_path), tmp_path / "profile")
    expected = (
        r"task.success_threshold: profile None \(the middle of task.verifier_reward_range\), "
        r"config 1.0"
    )
    with pytest.raises(DataError, match=expected):
        run_plan(graded_config(tmp_path, success_threshold=1.0), profile, tmp_path / "plan")


@pytest.mark.parametrize("threshold", ["0.0", "-1", "1.5", "1e-7"])  # 1e-7: within rounding
def test_a_threshold_outside_the_reward_range_is_a_config_error(threshold):
    with pytest.raises(ConfigError, match=r"task.success_threshold must lie in .*\(0.0, 1.0\]"):
        load_config(None, [f"task.success_threshold={threshold}"])


def test_a_threshold_is_read_in_the_verifier_units_of_its_range():
    config = load_config(None, ["task.verifier_reward_range=[-1, 3]", "task.success_threshold=2"])
    assert config.task.correct_threshold == 0.75
    meta = {
        "inputs": {"config": {"task.verifier_reward_range": [-1, 3], "task.success_threshold": 2}}
    }
    assert profiled_success_threshold(meta) == 0.75
    assert profiled_success_threshold({"k": 8}) == 0.5  # a profile that records no task


def test_a_profile_with_no_success_names_the_threshold(tmp_path, caplog):
    # graded's best, 1.0, is half of [0, 2]: never a success at 2
    config = graded_config(tmp_path, verifier_reward_range=[0.0, 2.0], success_threshold=2.0)
    with caplog.at_level("WARNING", logger="sgpo.profile"):
        rows, _ = read_table(run_profile(config, tmp_path / "profile"))
    assert not any(r["n_correct"] for r in rows)
    assert "scored none of the 48 samples correct (a reward of at least " in caplog.text
    assert "task.success_threshold=2.0)" in caplog.text


def test_the_default_value_given_explicitly_is_the_default():
    # so that a profile made with either serves both
    assert load_config(None, ["task.success_threshold=0.5"]).task.success_threshold is None
    doubled = ["task.verifier_reward_range=[0, 2]", "task.success_threshold=1"]
    assert load_config(None, doubled).task.success_threshold is None


def test_a_pilot_ends_all_solved_from_the_threshold_up():
    assert pilot_ends_group({0.7}, "all-solved", 0.5)
    assert not pilot_ends_group({0.7}, "all-solved", 1.0)
    assert pilot_ends_group({1.0}, "all-solved", 1.0)
    assert not pilot_ends_group({0.7, 1.0}, "all-solved", 0.5)  # varied rewards: informative
    assert pilot_ends_group({0.0}, "all-equal", 0.5)
    assert pilot_ends_group({0.3, 0.1 + 0.2}, "all-equal", 0.5)  # equal but for float rounding


def test_a_profile_from_before_the_setting_is_resumed_and_merged(tmp_path):
    config = graded_config(tmp_path)
    whole = run_profile(config, tmp_path / "whole")
    shards = [run_profile(config, tmp_path / f"shard{i}", shard=(i, 2)) for i in range(2)]

    def as_before_the_setting(path: Path) -> None:
        rows, meta = read_table(path)
        recorded = meta["inputs"]["config"]
        assert recorded.pop("task.success_threshold") is None
        write_table(path, rows, meta)

    for path in (whole, shards[0]):
        as_before_the_setting(path)
    assert run_profile(config, tmp_path / "whole", resume=True) == whole  # nothing to redo
    merged = merge_profiles(shards, tmp_path / "merged")
    assert read_table(merged)[0] == read_table(whole)[0]
    # a profile at another threshold is still another run
    other = graded_config(tmp_path, success_threshold=1.0)
    strict = run_profile(other, tmp_path / "strict1", shard=(1, 2))
    with pytest.raises(DataError, match=r"inputs \(config.task.success_threshold: None -> 1.0\)"):
        merge_profiles([shards[0], strict], tmp_path / "mixed")
    with pytest.raises(DataError, match="other inputs.*task.success_threshold: None -> 1.0"):
        run_profile(other, tmp_path / "whole", resume=True)


def test_a_report_names_the_threshold_its_accuracies_count_from():
    ran = {"task": {"success_threshold": 1.0, "verifier": GRADED}, "train": {"lr": 0.5}}
    assert variant_settings(ran) == "`task.success_threshold=1.0`, `train.lr=0.5`"
