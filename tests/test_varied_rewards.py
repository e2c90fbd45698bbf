"""A graded verifier's partial credit can differ between a query's samples where none of them
reaches the success threshold (or all do): such a group has a group-relative advantage, so the
plan keeps the query instead of dropping it as unsolvable (or trivial). bad_verifiers:
length_credit scores every response below the threshold, by its length for even reference
answers and 0 for odd ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import tiny_tree

from sgpo.config import RunConfig
from sgpo.core.rewards import all_equal
from sgpo.errors import DataError
from sgpo.io import read_table, write_table
from sgpo.plan import read_plan, run_plan
from sgpo.profile import run_profile


def varied_config(root: Path) -> RunConfig:
    tree = tiny_tree(
        root / "models",
        task={"verifier": "bad_verifiers:length_credit", "addition": {"n_train": 16, "n_eval": 4}},
        plan={"unsolvable_keep_fraction": 0.0},
    )
    return RunConfig.model_validate(tree)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[RunConfig, Path]:
    root = tmp_path_factory.mktemp("varied")
    config = varied_config(root)
    return config, run_profile(config, root / "profile")


def sample_rewards(profile: Path) -> dict[str, list[float]]:
    rows, meta = read_table(profile)
    samples, _ = read_table(Path(meta["samples_file"]))
    rewards: dict[str, list[float]] = {r["query_id"]: [] for r in rows}
    for sample in samples:
        rewards[sample["query_id"]].append(sample["reward"])
    return rewards


def test_the_plan_keeps_the_never_solved_queries_whose_rewards_varied(
    profiled, tmp_path, caplog
):
    config, profile = profiled
    rows, _ = read_table(profile)
    rewards = sample_rewards(profile)
    assert all(r["n_correct"] == 0 for r in rows)  # unsolvable by p_hat, every one
    varied = {q for q, rs in rewards.items() if not all_equal(rs)}
    assert {r["query_id"] for r in rows if r["rewards_vary"]} == varied
    assert 0 < len(varied) < len(rows)  # the even references vary, the odd ones score 0
    plan_path, summary = run_plan(config, profile, tmp_path / "plan")
    plan, _ = read_plan(plan_path)
    assert {r.query_id for r in plan if r.kept} == varied
    assert all(r.reason == "unsolvable" for r in plan if not r.kept)
    assert summary["varied_kept"] == len(varied) and summary["unsolvable_kept"] == 0
    # the prediction counts pass/fail outcomes: said, since these groups teach all the same
    assert summary["predicted_informative_fraction"] < 0.01
    assert f"{len(varied)} kept queries were never or always solved" in caplog.text


def test_a_profile_from_before_the_column_plans_as_pass_or_fail(profiled, tmp_path):
    config, profile = profiled
    rows, meta = read_table(profile)
    old = tmp_path / "old" / "profile.parquet"
    write_table(old, [{k: v for k, v in r.items() if k != "rewards_vary"} for r in rows], meta)
    with pytest.raises(DataError, match="keeps none of the 16 profiled queries"):
        run_plan(config, old, tmp_path / "plan")
    # and a plan from before the column reads as one that kept no varied query
    plan_path, _ = run_plan(config, profile, tmp_path / "new-plan")
    plan_rows, plan_meta = read_table(plan_path)
    old_plan = tmp_path / "old-plan" / "plan.parquet"
    write_table(
        old_plan,
        [{k: v for k, v in r.items() if k != "rewards_vary"} for r in plan_rows],
        plan_meta,
    )
    assert not any(r.rewards_vary for r in read_plan(old_plan)[0])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"rewards_vary": "yes"}, "field 'rewards_vary' must be true or false"),
        (
            {"n_correct": 2, "p_hat": 0.5, "rewards_vary": False},
            "field 'rewards_vary' is false, but n_correct / k = 2 / 4 holds both",
        ),
    ],
)
def test_a_rewards_vary_field_that_cannot_be_is_refused(profiled, tmp_path, edit, message):
    config, profile = profiled
    rows, meta = read_table(profile)
    bad = tmp_path / "bad" / "profile.parquet"
    # a column holds one type: a text goes into every row
    every = isinstance(edit["rewards_vary"], str)
    write_table(bad, [rows[0] | edit, *(r | edit if every else r for r in rows[1:])], meta)
    with pytest.raises(DataError, match=rf"row 0: {message}"):
        run_plan(config, bad, tmp_path / "plan")
