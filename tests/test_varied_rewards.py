"""A graded verifier's partial credit can differ between a query's samples where none of them
reaches the success threshold (or all do): such a group has a group-relative advantage, so the
plan keeps the query instead of dropping it as unsolvable (or trivial). bad_verifiers:
length_credit scores every response below the threshold, by its length for even reference
answers and 0 for odd ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import merge, stop_profile_at_chunk, tiny_tree

from sgpo.config import RunConfig
from sgpo.core.rewards import all_equal
from sgpo.errors import DataError
from sgpo.io import read_table, write_table
from sgpo.plan import read_plan, run_plan
from sgpo.profile import merge_profiles, run_profile, samples_vary
from sgpo.report import write_report
from sgpo.rollouts import group_members
from sgpo.train import Trainer, run_train


def varied_config(root: Path, **sections: dict) -> RunConfig:
    tree = tiny_tree(
        root / "models",
        task={"verifier": "bad_verifiers:length_credit", "addition": {"n_train": 16, "n_eval": 4}},
        plan={"unsolvable_keep_fraction": 0.0},
    )
    return RunConfig.model_validate(merge(tree, sections))


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


def test_the_plan_keeps_the_never_solved_queries_whose_rewards_varied(profiled, tmp_path, caplog):
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


SOLVED_OR_NOT = {"drop_trivial": False, "g_min": 4, "g_max": 4, "bucket_width": 1.0}


@pytest.mark.parametrize("stop", ["both_outcomes", "first_success"])
def test_an_adaptive_profile_stops_once_the_rewards_vary(profiled, tmp_path, stop):
    config, full = profiled
    adaptive = varied_config(
        tmp_path,
        profile={"adaptive": True, "adaptive_round": 1, "adaptive_stop": stop},
        plan=SOLVED_OR_NOT if stop == "first_success" else {},
    )
    profile = run_profile(adaptive, tmp_path / "adaptive")
    every, drawn = sample_rewards(full), sample_rewards(profile)
    k = config.profile.k
    stops = {
        q: next((n for n in range(2, k + 1) if not all_equal(rs[:n])), k) for q, rs in every.items()
    }
    assert {q: len(rs) for q, rs in drawn.items()} == stops  # no success: only a varied stop
    assert any(n < k for n in stops.values()) and any(n == k for n in stops.values())
    assert all(drawn[q] == every[q][: len(drawn[q])] for q in every)
    kept = {
        r.query_id
        for r in read_plan(run_plan(adaptive, profile, tmp_path / "plan")[0])[0]
        if r.kept
    }
    assert kept == {q for q, rs in every.items() if not all_equal(rs)}  # the full profile's


def test_a_profile_from_before_the_column_reads_its_samples_or_plans_as_pass_or_fail(
    profiled, tmp_path
):
    config, profile = profiled
    rows, meta = read_table(profile)
    without = [{k: v for k, v in r.items() if k != "rewards_vary"} for r in rows]
    old = tmp_path / "old" / "profile.parquet"
    write_table(old, without, meta)  # its samples file is where it says
    run_plan(config, old, tmp_path / "read")
    new, _ = run_plan(config, profile, tmp_path / "new")
    assert read_table(tmp_path / "read" / "plan.parquet")[0] == read_table(new)[0]
    # its samples gone (or another profile's): pass/fail, so none of these is kept
    for samples in (str(tmp_path / "gone.parquet"), None):
        write_table(old, without, meta | {"samples_file": samples})
        with pytest.raises(DataError, match="keeps none of the 16 profiled queries"):
            run_plan(config, old, tmp_path / "plan")
    other = tmp_path / "other.parquet"
    samples, samples_meta = read_table(Path(meta["samples_file"]))
    write_table(other, samples, samples_meta | {"seed": 99})
    write_table(old, without, meta | {"samples_file": str(other)})
    with pytest.raises(DataError, match="keeps none of the 16 profiled queries"):
        run_plan(config, old, tmp_path / "plan")
    # and a plan from before the column reads pass/fail: varied where both outcomes were drawn
    plan_path, _ = run_plan(config, profile, tmp_path / "new-plan")
    plan_rows, plan_meta = read_table(plan_path)
    plan_rows[0].update(n_correct=1, p_hat=0.25)  # one success in 4: both outcomes
    old_plan = tmp_path / "old-plan" / "plan.parquet"
    write_table(
        old_plan,
        [{k: v for k, v in r.items() if k != "rewards_vary"} for r in plan_rows],
        plan_meta,
    )
    assert [r.rewards_vary for r in read_plan(old_plan)[0]] == [True] + [False] * 15


def test_a_shard_merge_with_an_older_shard_reads_its_flags_from_the_samples(tmp_path):
    config = varied_config(tmp_path)
    shards = [run_profile(config, tmp_path / f"shard{i}", shard=(i, 2)) for i in range(2)]
    rows, meta = read_table(shards[0])
    without = [{k: v for k, v in r.items() if k != "rewards_vary"} for r in rows]
    write_table(shards[0], without, meta)
    merged, _ = read_table(merge_profiles(shards, tmp_path / "merged"))
    rewards = sample_rewards(tmp_path / "merged" / "profile.parquet")
    assert all(r["rewards_vary"] == (not all_equal(rewards[r["query_id"]])) for r in merged)
    assert any(r["rewards_vary"] for r in merged[::2])  # shard 0's rows come first in turn


def test_a_resumed_chunk_of_an_older_sgpo_gets_its_flags_from_its_samples(
    profiled, tmp_path, monkeypatch
):
    """A chunk written before rewards_vary, resumed: each row's flag from the chunk's samples
    (read column-wise), so the profile equals an uninterrupted one."""
    from sgpo.runfiles import PROFILE_CHUNKS_DIR

    config, profile = profiled
    config = config.model_copy(
        update={"profile": config.profile.model_copy(update={"chunk_size": 8})}
    )
    with monkeypatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(config, tmp_path / "run")
    chunk = tmp_path / "run" / PROFILE_CHUNKS_DIR / "chunk-00000.parquet"
    rows, meta = read_table(chunk)
    assert any(r["rewards_vary"] for r in rows)  # a flag that reading pass/fail would lose
    write_table(chunk, [{k: v for k, v in r.items() if k != "rewards_vary"} for r in rows], meta)
    resumed = run_profile(config, tmp_path / "run", resume=True)
    assert read_table(resumed)[0] == read_table(profile)[0]


def test_the_profile_in_training_keeps_the_never_solved_queries_whose_rewards_varied(tmp_path):
    config = varied_config(
        tmp_path,
        plan={"g_min": 4, "g_max": 4, "bucket_width": 1.0, "unsolvable_keep_fraction": 0.0},
        train={
            "steps": 2,
            "rollout_budget": 64,  # every training query's group of 4
            "eval_every": 0,
            "checkpoint_every": 0,
            "first_visit_profile": True,
        },
    )
    trainer = Trainer(config, tmp_path / "fv")
    drawn: list = []
    collect = trainer.collect

    def recording_collect() -> tuple[list, list]:
        generated, batch = collect()
        drawn.extend(generated)
        return generated, batch

    trainer.collect = recording_collect
    trainer.train_step()
    groups = group_members(drawn)
    flat = {g[0].query.query_id for g in groups if all_equal([m.reward for m in g])}
    assert 0 < len(flat) < len(groups)  # never solved, all: some varied, some not
    assert trainer.scheduler.profiled == {
        g[0].query.query_id: "unsolvable" if g[0].query.query_id in flat else "kept" for g in groups
    }


def test_the_report_says_what_the_plan_kept_for_varied_rewards(profiled, tmp_path):
    config, profile = profiled
    plan_path, summary = run_plan(config, profile, tmp_path / "run")
    train = {"method": "sgpo", "steps": 1, "eval_every": 1, "checkpoint_every": 0}
    run_train(
        RunConfig.model_validate(merge(config.model_dump(mode="json"), {"train": train})),
        tmp_path / "run",
        plan_path,
    )
    text = " ".join(write_report(tmp_path / "run").read_text().split())
    assert summary["varied_kept"] > 0
    assert f"for rewards that varied (partial credit): {summary['varied_kept']};" in text
    assert "counts pass/fail outcomes, so the groups of the queries kept for varied" in text


def test_re_estimation_keeps_a_query_while_its_groups_rewards_vary(profiled, tmp_path):
    config, profile = profiled
    plan_path, _ = run_plan(config, profile, tmp_path / "plan")
    train = {
        "method": "sgpo",
        "steps": 1,
        "eval_every": 0,
        "checkpoint_every": 0,
        "online": {"reestimate": True, "replan_every": 1},
    }
    online = RunConfig.model_validate(merge(config.model_dump(mode="json"), {"train": train}))
    trainer = Trainer(online, tmp_path / "run", plan_path=plan_path)
    generated, _ = trainer.collect()
    trainer.replanner.observe(generated)
    planner = trainer.replanner.planner
    for members in group_members(generated):
        query_id = members[0].query.query_id
        assert planner.varied[query_id] == (not all_equal([m.reward for m in members]))
    planned = {q for q, p in planner.current.items() if p.kept}
    kept = {s.query.query_id for s in planner.replan(trainer.queries_by_id)}
    varied = {q for q, v in planner.varied.items() if v}
    # never solved: kept while its rewards vary, and once kept it stays (as the kept share of
    # the never-solved does); one whose rewards never varied is not taken in
    assert varied and varied <= kept <= varied | planned
    # a checkpoint carries the flags; one from before them plans by counts alone
    state = planner.state()
    planner.varied = {}
    planner.restore(state)
    assert planner.varied == state["varied"]
    planner.restore({k: v for k, v in state.items() if k != "varied"})
    assert set(planner.varied) == set(planner.query_ids) and not any(planner.varied.values())


def test_both_outcomes_drawn_are_varied_rewards_even_a_rounding_apart():
    # 0.7 - 0.4 is 0.29999999999999993: below a threshold of 0.3 by float rounding alone
    assert samples_vary(1, 2, [0.3, 0.7 - 0.4]) and all_equal([0.3, 0.7 - 0.4])
    assert not samples_vary(0, 2, [0.1, 0.1]) and samples_vary(0, 2, [0.1, 0.2])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"rewards_vary": "yes"}, "field 'rewards_vary' must be true or false"),
        (
            {"n_correct": 2, "p_hat": 0.5, "rewards_vary": False},
            "field 'rewards_vary' is false, but n_correct / k = 2 / 4 holds both",
        ),
        (
            {"k": 1, "n_correct": 0, "p_hat": 0.0, "rewards_vary": True},
            "field 'rewards_vary' is true, but k = 1: one sample",
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
