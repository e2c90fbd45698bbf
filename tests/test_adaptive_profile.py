"""Adaptive profiling (profile.adaptive): a query is sampled in rounds until it has shown both
outcomes, and what it draws is exactly the first samples of the full profile."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from tiny_run import tiny_tree

import sgpo.profile
from sgpo.config import RunConfig
from sgpo.core.flops import ModelShape, inference_flops
from sgpo.core.rewards import CORRECT_THRESHOLD, is_correct
from sgpo.errors import DataError
from sgpo.io import read_table
from sgpo.profile import SAMPLES_FILE, run_profile
from sgpo.runfiles import PROFILE_CHUNKS_DIR

K, ROUND = 6, 2


class Crash(BaseException):
    pass


def config(tmp_path: Path, plan: dict | None = None, **profile: object) -> RunConfig:
    tree = tiny_tree(
        tmp_path / "models",
        task={
            "addition": {"n_train": 12},
            # p = 0, p = 1 and coin-flip (mixed) queries
            "verifier": "bad_verifiers:fixed_or_coin",
        },
        profile={"k": K, "chunk_size": 4} | profile,
        plan=plan or {},
    )
    return RunConfig.model_validate(tree)


def samples_by_query(out: Path) -> dict[str, list[dict]]:
    by_query: dict[str, list[dict]] = {}
    for s in read_table(out / SAMPLES_FILE)[0]:
        by_query.setdefault(s["query_id"], []).append(s)
    return by_query


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("adaptive")
    full = run_profile(config(root), root / "full").parent
    adaptive = run_profile(config(root, adaptive=True, adaptive_round=ROUND), root / "ada").parent
    return root, full, adaptive


def test_adaptive_rows_are_the_prefix_of_the_full_profile(profiles):
    _, full, adaptive = profiles
    full_samples, ada_samples = samples_by_query(full), samples_by_query(adaptive)
    rows, meta = read_table(adaptive / "profile.parquet")
    shape = ModelShape(**meta["shape"])
    assert meta["adaptive_round"] == ROUND and meta["k"] == K
    kinds = set()
    for row in rows:
        drawn, every = ada_samples[row["query_id"]], full_samples[row["query_id"]]
        assert len(every) == K
        assert drawn == every[: len(drawn)]  # the same samples, same seeds, same rewards
        outcomes = [is_correct(s["reward"], CORRECT_THRESHOLD) for s in every]
        # stop after the first round that has shown both outcomes, else draw all k
        both_at = next((n for n in range(ROUND, K, ROUND) if len(set(outcomes[:n])) == 2), K)
        assert row["k"] == len(drawn) == both_at
        assert row["n_correct"] == sum(outcomes[: row["k"]])
        assert row["p_hat"] == row["n_correct"] / row["k"]
        assert row["flops"] == sum(
            inference_flops(shape, len(s["prompt_ids"]), len(s["response_ids"])) for s in drawn
        )
        if len(set(outcomes)) == 1:  # p = 0 or p = 1: still all k samples
            assert row["k"] == K
        kinds.add((row["p_hat"] in (0.0, 1.0), row["k"] < K))
    # the task has both kinds: constant queries drawn in full, mixed ones stopped early
    assert kinds >= {(True, False), (False, True)}
    full_rows = read_table(full / "profile.parquet")[0]
    assert sum(r["k"] for r in rows) < sum(r["k"] for r in full_rows)


def test_adaptive_profile_independent_of_chunking_and_resume(profiles, tmp_path):
    root, _, adaptive = profiles
    want = read_table(adaptive / "profile.parquet")[0], samples_by_query(adaptive)
    regrouped = config(root, adaptive=True, adaptive_round=ROUND, chunk_size=5)
    regrouped = regrouped.model_copy(
        update={"sampling": regrouped.sampling.model_copy(update={"batch_size": 3})}
    )
    run_profile(regrouped, tmp_path / "regrouped")
    assert (
        read_table(tmp_path / "regrouped" / "profile.parquet")[0],
        samples_by_query(tmp_path / "regrouped"),
    ) == want

    ada = config(root, adaptive=True, adaptive_round=ROUND)
    real, calls = sgpo.profile.profile_chunk, []

    def crash_on_second(*args: object, **kwargs: object) -> list[dict]:
        calls.append(1)
        if len(calls) == 2:
            raise Crash
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.profile, "profile_chunk", crash_on_second)
        with pytest.raises(Crash):
            run_profile(ada, tmp_path / "run")
    assert len(list((tmp_path / "run" / PROFILE_CHUNKS_DIR).glob("chunk-*.parquet"))) == 1
    # a non-adaptive resume must not mix in the adaptive chunk
    with pytest.raises(DataError, match=r"chunk-00000\.parquet"):
        run_profile(config(root), tmp_path / "run", resume=True)
    run_profile(ada, tmp_path / "run", resume=True)
    got = read_table(tmp_path / "run" / "profile.parquet")[0], samples_by_query(tmp_path / "run")
    assert got == want


# A plan that only tells solved from never-solved: what profile.adaptive_stop=first_success needs.
SOLVED_OR_NOT = {
    "drop_trivial": False,
    "unsolvable_keep_fraction": 0.0,
    "g_min": 4,
    "g_max": 4,
    "bucket_width": 1.0,
}


def first_success_config(root: Path) -> RunConfig:
    return config(
        root, SOLVED_OR_NOT, adaptive=True, adaptive_round=1, adaptive_stop="first_success"
    )


def test_first_success_profile_stops_at_the_first_correct_sample(profiles, tmp_path):
    root, full, _ = profiles
    out = run_profile(first_success_config(root), tmp_path / "fs").parent
    rows, meta = read_table(out / "profile.parquet")
    assert meta["adaptive_stop"] == "first_success"
    full_samples, drawn_samples = samples_by_query(full), samples_by_query(out)
    for row in rows:
        every, drawn = full_samples[row["query_id"]], drawn_samples[row["query_id"]]
        assert drawn == every[: len(drawn)]
        outcomes = [is_correct(s["reward"], CORRECT_THRESHOLD) for s in every]
        first = outcomes.index(True) + 1 if True in outcomes else K
        assert row["k"] == first
        assert row["n_correct"] == (1 if True in outcomes else 0)
    # the coin-flip and always-correct queries stop early, the never-solved ones draw all k
    assert {r["k"] for r in rows if r["n_correct"] == 0} == {K}
    assert any(r["k"] < K for r in rows)


def test_a_plan_without_the_first_success_settings_names_them_all(profiles, tmp_path):
    """README: every differing key is named, not one per attempt."""
    from sgpo.plan import run_plan

    root, _, _ = profiles
    out = run_profile(first_success_config(root), tmp_path / "fs")
    with pytest.raises(DataError) as refused:
        run_plan(config(root, SOLVED_OR_NOT), out, tmp_path / "plan")
    said = str(refused.value)
    for key, profiled, configured in (
        ("profile.adaptive", True, False),
        ("profile.adaptive_round", 1, "\\d+"),
        ("profile.adaptive_stop", "'first_success'", "'both_outcomes'|'[a-z_]+'"),
    ):
        assert re.search(rf"{key}: profile {profiled}, config ({configured})", said), said


def plan_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """sgpo plan's own warnings (the tiny random model's samples are mostly cut off at
    max_new_tokens, which sgpo plan repeats from the profile)."""
    return [r for r in caplog.records if r.name == "sgpo.plan"]


def test_first_success_plan_keeps_what_the_full_profile_keeps(profiles, tmp_path, caplog):
    from sgpo.plan import read_plan, run_plan

    root, full, _ = profiles
    fs_cfg = first_success_config(root)
    full_cfg = fs_cfg.model_copy(update={"profile": config(root).profile})
    fs_profile = run_profile(fs_cfg, tmp_path / "fs")
    with caplog.at_level(logging.WARNING, logger="sgpo.plan"):
        full_plan, full_summary = run_plan(
            full_cfg, full / "profile.parquet", tmp_path / "full-plan"
        )
        assert not plan_warnings(caplog)
        fs_plan, fs_summary = run_plan(fs_cfg, fs_profile, tmp_path / "fs-plan")
    # ... but its prediction is noisier than the full profile's, and the user is told so
    (warning,) = plan_warnings(caplog)
    assert str(fs_profile) in warning.getMessage()
    assert "profile.full_share" in warning.getMessage()

    def kept_order(path: Path) -> list[str]:
        rows = read_plan(path)[0]
        return [r.query_id for r in sorted(rows, key=lambda r: r.rank) if r.kept]

    assert kept_order(fs_plan) == kept_order(full_plan)
    assert 0 < len(kept_order(fs_plan)) < len(read_plan(fs_plan)[0])  # never-solved dropped
    # the prediction reads (n_correct, samples drawn), so it comes from either profile
    for summary in (full_summary, fs_summary):
        assert 0 < summary["predicted_informative_fraction"] <= 1
    # p_hat from a first-success profile is not an estimate of p: online re-planning may not
    # start from it, whatever the training config's profile says
    from sgpo.schedule import scheduled_queries
    from sgpo.tasks import load_task

    online = full_cfg.train.online.model_copy(update={"reestimate": True})
    replanning = full_cfg.model_copy(
        update={"train": full_cfg.train.model_copy(update={"online": online})}
    )
    train_queries = load_task(replanning.task, replanning.seed).train
    assert scheduled_queries(replanning, train_queries, full_plan)[0]
    with pytest.raises(DataError, match="first success"):
        scheduled_queries(replanning, train_queries, fs_plan)


def test_a_full_share_of_a_first_success_profile_draws_all_k(profiles, tmp_path, caplog):
    """profile.full_share: a seeded share of the queries is drawn all k samples (the same ones
    as the full profile's), the rest stop at their first success; the plan keeps what the full
    profile keeps and predicts from both kinds of record without the first-success warning."""
    from sgpo.plan import read_plan, run_plan
    from sgpo.profile import drawn_fully

    root, full, _ = profiles
    cfg = first_success_config(root)
    shared = cfg.model_copy(update={"profile": cfg.profile.model_copy(update={"full_share": 0.5})})
    out = run_profile(shared, tmp_path / "share").parent
    rows, meta = read_table(out / "profile.parquet")
    assert meta["full_share"] == 0.5
    fully = {r["query_id"] for r in rows if drawn_fully(cfg.seed, r["query_id"], 0.5)}
    assert 0 < len(fully) < len(rows)  # a share, not all or none, of the 12 queries
    full_rows = {r["query_id"]: r for r in read_table(full / "profile.parquet")[0]}
    full_samples, drawn_samples = samples_by_query(full), samples_by_query(out)
    for row in rows:
        every = full_samples[row["query_id"]]
        assert drawn_samples[row["query_id"]] == every[: row["k"]]
        if row["query_id"] in fully:
            assert (row["k"], row["n_correct"]) == (K, full_rows[row["query_id"]]["n_correct"])
        else:
            outcomes = [is_correct(s["reward"], CORRECT_THRESHOLD) for s in every]
            assert row["k"] == (outcomes.index(True) + 1 if True in outcomes else K)
    # a first-success query that happens to be drawn fully is a full-profile row
    assert any(r["k"] == K and r["n_correct"] > 1 for r in rows if r["query_id"] in fully)
    with caplog.at_level(logging.WARNING, logger="sgpo.plan"):
        plan, summary = run_plan(shared, out / "profile.parquet", tmp_path / "plan")
    assert not plan_warnings(caplog)
    assert 0 < summary["predicted_informative_fraction"] <= 1
    full_plan, _ = run_plan(cfg, full / "profile.parquet", tmp_path / "full-plan")

    def kept(path: Path) -> set[str]:
        return {r.query_id for r in read_plan(path)[0] if r.kept}

    assert kept(plan) == kept(full_plan)
    # a share of a profile that draws every query in full anyway is refused
    with pytest.raises(ValueError, match="profile.full_share needs profile.adaptive=true"):
        config(root, full_share=0.5)


@pytest.mark.parametrize(
    ("profile", "plan", "missing"),
    [
        ({"adaptive": False}, SOLVED_OR_NOT, "profile.adaptive=true"),
        ({"adaptive": True}, {"drop_trivial": True}, "plan.drop_trivial=false"),
        ({"adaptive": True}, {"g_min": 2, "g_max": 16}, "plan.g_min = plan.g_max"),
        ({"adaptive": True}, {"bucket_width": 0.0}, "plan.bucket_width >= 1"),
    ],
)
def test_first_success_profile_refuses_a_plan_that_reads_p_hat(
    tmp_path: Path, profile: dict, plan: dict, missing: str
):
    tree = tiny_tree(
        tmp_path / "models",
        profile={"adaptive_stop": "first_success"} | profile,
        plan=SOLVED_OR_NOT | plan,
    )
    with pytest.raises(ValueError, match=re.escape(missing)):
        RunConfig.model_validate(tree)
