"""sgpo.verl without verl: the plan export, the reward function and the FLOPs of a verl run
(fake verl metrics in verl 0.9.1's file-logger format). tests/verl_integration checks them
against verl itself."""

from __future__ import annotations

import json
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from sgpo.core.advantages import max_variance_indices
from sgpo.core.allocation import PlanRule
from sgpo.core.flops import ModelShape, inference_flops, logprob_flops, train_flops
from sgpo.errors import DataError
from sgpo.io import read_table, write_table
from sgpo.plan import PlanRow, build_plan, kept_in_order, write_plan
from sgpo.verl import reward
from sgpo.verl.cli import fail, model_shape_from_dir, verl_app
from sgpo.verl.downsample import (
    DOWNSAMPLED_METRIC,
    DOWNSAMPLED_PROMPT_TOKENS_METRIC,
    DOWNSAMPLED_RESPONSE_TOKENS_METRIC,
    WHOLE_BATCH_ESTIMATOR,
    downsample_keys,
    whole_batch_scale,
)
from sgpo.verl.export import (
    ROLLOUT_N,
    export_verl_parquet,
    rollouts_per_step,
    step_summary,
    verl_rows,
)
from sgpo.verl.flops import merge_records, read_verl_metrics, verl_run_flops
from sgpo.verl.history import GENERATED_METRIC

ADDITION = "sgpo.tasks.addition:verify"
SHAPE = ModelShape(n_params=1000, n_layers=2, d_attn=16)


def always_raises(response: str, reference: str) -> float:
    raise RuntimeError("verifier bug")


def fake_plan(n: int = 24, rule: PlanRule | None = None, seed: int = 3) -> list[PlanRow]:
    """build_plan on fake profile rows with n_correct 0..8 of k=8 (every difficulty)."""
    profile = []
    for i in range(n):
        a, b = 10 + i, 7 * i
        profile.append(
            {
                "query_id": f"add:{a}+{b}",
                "prompt": f"{a}+{b}=",
                "answer": str(a + b),
                "difficulty": "2-digit",
                "k": 8,
                "n_correct": i % 9,
                "prompt_tokens": 6,
                "mean_response_tokens": 3.0,
            }
        )
    return build_plan(profile, rule or PlanRule(unsolvable_keep_fraction=0.5), seed)


# ----------------------------------------------------------------------------- export


def test_export_keeps_only_kept_queries_in_curriculum_order_with_their_group_size(tmp_path):
    plan = fake_plan()
    meta = {"task": "addition(test)", "plan_seed": 3}
    path = export_verl_parquet(
        plan,
        meta,
        tmp_path / "verl" / "train.parquet",
        "sgpo/addition",
        "Answer with the digits reversed.",
        ADDITION,
    )
    rows, stored = read_table(path)
    kept = kept_in_order(plan)
    assert 0 < len(rows) == len(kept) < len(plan)  # trivial and dropped unsolvable rows are gone
    assert [r["extra_info"]["query_id"] for r in rows] == [r.query_id for r in kept]
    assert [r[ROLLOUT_N] for r in rows] == [r.group_size for r in kept]
    assert len(set(rows[i][ROLLOUT_N] for i in range(len(rows)))) > 2  # G really varies
    p_hats = [r["extra_info"]["p_hat"] for r in rows]
    assert p_hats == sorted(p_hats, reverse=True)  # easy -> hard
    first, q = rows[0], kept[0]
    assert first["prompt"] == [
        {"role": "system", "content": "Answer with the digits reversed."},
        {"role": "user", "content": q.prompt},
    ]
    assert first["data_source"] == "sgpo/addition"
    assert first["reward_model"] == {"style": "rule", "ground_truth": q.answer}
    assert first["extra_info"] == {
        "index": 0,
        "query_id": q.query_id,
        "p_hat": q.p_hat,
        "group_size": q.group_size,
        "rank": 0,
        "verifier": ADDITION,
        "verifier_kwargs": None,
        "verifier_timeout_s": None,
        "verifier_isolation": None,
        "verifier_reward_range": None,
        "success_threshold": None,
    }
    assert [r["extra_info"]["index"] for r in rows] == list(range(len(rows)))
    assert stored["plan"] == meta
    assert stored["export"]["rollouts_per_epoch"] == sum(r.group_size for r in kept)
    # no temp file left; the export is listed as sgpo's
    assert sorted(p.name for p in path.parent.iterdir()) == ["sgpo-outputs.json", "train.parquet"]


def test_export_is_a_pure_function_of_the_plan_and_needs_no_system_prompt(tmp_path):
    plan = fake_plan()
    a = export_verl_parquet(
        plan,
        {},
        tmp_path / "a.parquet",
        "sgpo/addition",
        None,
        ADDITION,
        prompt_template="Q: {prompt}",
    )
    b = export_verl_parquet(
        list(reversed(plan)),
        {},
        tmp_path / "b.parquet",
        "sgpo/addition",
        None,
        ADDITION,
        prompt_template="Q: {prompt}",
    )
    rows_a, rows_b = read_table(a)[0], read_table(b)[0]
    assert rows_a == rows_b  # input row order does not matter: rank does
    first_prompt = "Q: " + kept_in_order(plan)[0].prompt
    assert rows_a[0]["prompt"] == [{"role": "user", "content": first_prompt}]
    assert pq.read_schema(a).field(ROLLOUT_N).type == "int64"


def test_export_refuses_groups_of_one_and_repeated_ranks(tmp_path):
    ones = fake_plan(rule=PlanRule(c=0.5, g_min=1, g_max=8, unsolvable_keep_fraction=0.0))
    assert any(r.kept and r.group_size == 1 for r in ones)
    with pytest.raises(ValueError, match="G >= 2"):
        export_verl_parquet(ones, {}, tmp_path / "x.parquet", "sgpo/addition")
    plan = fake_plan()
    # gaps (kept rows deleted by hand) keep the order, as sgpo train does
    gaps = [replace(r, rank=r.rank * 2) if r.kept else r for r in plan]
    in_order = [row["extra_info"]["query_id"] for row in verl_rows(gaps, "sgpo/addition")]
    assert in_order == [r.query_id for r in kept_in_order(plan)]
    repeated = [replace(r, rank=0) if r.kept else r for r in plan]
    with pytest.raises(ValueError, match=r"must be distinct and >= 0, got \[0\] repeated"):
        verl_rows(repeated, "sgpo/addition")
    nothing = [replace(r, kept=False, reason="trivial", rank=-1) for r in plan]
    with pytest.raises(ValueError, match="keeps no query"):
        verl_rows(nothing, "sgpo/addition")
    assert not (tmp_path / "x.parquet").exists()


def test_export_replaces_only_a_file_sgpo_wrote(tmp_path):
    """README: sgpo never replaces a file it did not write; the launch scripts export into the
    same path at every launch, so a file an export wrote is replaced."""
    plan = fake_plan()
    path = tmp_path / "train.parquet"
    export_verl_parquet(plan, {"round": 1}, path, "sgpo/addition")
    export_verl_parquet(plan, {"round": 2}, path, "sgpo/addition")
    assert read_table(path)[1]["plan"] == {"round": 2}
    mine = tmp_path / "mine.parquet"
    mine.write_bytes(b"the user's own data")
    with pytest.raises(FileExistsError, match="mine.parquet exists and was not written by sgpo"):
        export_verl_parquet(plan, {}, mine, "sgpo/addition")
    assert mine.read_bytes() == b"the user's own data"
    # ... through the command too: an error naming the file, no traceback
    from sgpo.cli import app

    write_plan(tmp_path / "plan.parquet", plan, {"task": builtin_task()})
    args = ["export-verl", "--plan", str(tmp_path / "plan.parquet"), "--out", str(mine)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "was not written by sgpo" in result.output, result.output
    assert mine.read_bytes() == b"the user's own data"
    # an export an older sgpo wrote without recording it (launch.sh re-exports at every run)
    (tmp_path / "sgpo-outputs.json").write_text('{"created": []}')
    export_verl_parquet(plan, {"round": 3}, path, "sgpo/addition")
    assert read_table(path)[1]["plan"] == {"round": 3}
    # another sgpo command's output (the plan read, a profile) is not an export's to replace
    (tmp_path / "profile.parquet").write_text("{}")
    sgpos = '{"created": ["plan.parquet", "profile.parquet", "train.parquet"]}'
    (tmp_path / "sgpo-outputs.json").write_text(sgpos)
    plan_bytes = (tmp_path / "plan.parquet").read_bytes()
    for own in ("plan.parquet", "profile.parquet"):
        args = [
            "export-verl",
            "--plan",
            str(tmp_path / "plan.parquet"),
            "--out",
            str(tmp_path / own),
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "is another sgpo command's output" in " ".join(result.output.split())
    assert (tmp_path / "plan.parquet").read_bytes() == plan_bytes
    assert (tmp_path / "profile.parquet").read_text() == "{}"


def test_rollouts_per_step_follow_verl_drop_last_batches():
    ns = [2, 2, 3, 4, 8, 8, 16]
    assert rollouts_per_step(ns, 2) == [4, 7, 16]  # the 7th row is not reached (drop_last)
    assert rollouts_per_step(ns, 7) == [43]
    assert rollouts_per_step(ns, 8) == []
    summary = step_summary(ns, 3)
    assert summary["steps_per_epoch"] == 2 and summary["rows_not_reached_per_epoch"] == 1
    assert (summary["rollouts_per_step_min"], summary["rollouts_per_step_max"]) == (7, 20)
    with pytest.raises(ValueError):
        rollouts_per_step(ns, 0)


# ----------------------------------------------------------------------------- reward


def test_compute_score_uses_the_verifier_named_by_the_export(monkeypatch):
    monkeypatch.delenv("SGPO_VERIFIER", raising=False)
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "auto")
    info = {"query_id": "add:12+30", "verifier": ADDITION}
    assert reward.compute_score("sgpo/addition", "24", "42", info) == {
        "score": 1.0,  # 42 reversed
        "acc": 1.0,
        "verifier_error": 0.0,
        "verifier_timeout": 0.0,
    }
    assert reward.compute_score("sgpo/addition", "42", "42", info)["score"] == 0.0
    # verl passes keyword arguments and extra keys (num_turns, rollout_reward_scores, ...)
    score = reward.compute_score(
        data_source="anything",
        solution_str=" 24 ",
        ground_truth="42",
        extra_info=info | {"num_turns": 2},
        reward_router_address=None,
    )
    assert score["score"] == 1.0


def scaled_verifier(response: str, reference: str, scale: float = 1.0) -> float:
    return scale * float(response.strip() == reference.strip())


def seven_tenths(response: str, reference: str) -> float:
    return scaled_verifier(response, reference, 0.7)


def test_compute_score_applies_the_exported_verifier_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("SGPO_VERIFIER_ISOLATION", raising=False)
    monkeypatch.delenv("SGPO_VERIFIER_TIMEOUT_S", raising=False)
    spec = "test_verl_export:scaled_verifier"
    path = export_verl_parquet(
        fake_plan(),
        {},
        tmp_path / "t.parquet",
        "sgpo/x",
        None,
        spec,
        verifier_kwargs={"scale": 0.5},
        verifier_timeout_s=2.5,
        verifier_isolation="inline",
    )
    info = read_table(path)[0][0]["extra_info"]
    assert info["verifier_kwargs"] == '{"scale": 0.5}'
    monkeypatch.setenv("SGPO_VERIFIER_EXPORT", str(path))  # as the launch sets it: trusted
    # kwargs bound, as in sGPO
    assert reward.compute_score("sgpo/x", "7", "7", info)["score"] == 0.5
    verifier = reward.get_verifier(spec, info)
    assert (verifier.timeout_s, verifier.isolation) == (2.5, "inline")
    assert verifier.kwargs == {"scale": 0.5}
    # settings of another verifier are not applied to the fallback one
    assert reward.get_verifier(ADDITION, info).kwargs == {}
    wants_process = dict(info, verifier_isolation="process")
    assert reward.get_verifier(spec, wants_process).isolation == "process"
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "inline")  # the environment wins
    assert reward.get_verifier(spec, wants_process).isolation == "inline"
    with pytest.raises(ValueError, match="verifier_isolation"):
        verl_rows(fake_plan(), "sgpo/x", verifier=spec, verifier_isolation="thread")


def test_compute_score_rescales_the_exported_reward_range(tmp_path, monkeypatch):
    """A verifier that scores in [-1, 1] (task.verifier_reward_range) is rescaled to [0, 1] on
    verl as in sGPO: a -1 is a wrong answer scoring 0, not an error."""
    monkeypatch.delenv("SGPO_VERIFIER_ISOLATION", raising=False)
    spec = "test_verl_export:scaled_verifier"
    signed = {"verifier_kwargs": {"scale": -1.0}, "verifier_reward_range": (-1.0, 1.0)}
    path = export_verl_parquet(
        fake_plan(), {}, tmp_path / "t.parquet", "sgpo/x", None, spec, **signed
    )
    info = read_table(path)[0][0]["extra_info"]
    assert info["verifier_reward_range"] == "[-1.0, 1.0]"
    monkeypatch.setenv("SGPO_VERIFIER_EXPORT", str(path))  # as the launch sets it: trusted
    scored = reward.compute_score("sgpo/x", "7", "7", info)
    assert (scored["score"], scored["verifier_error"]) == (0.0, 0.0)
    assert reward.compute_score("sgpo/x", "7", "8", info)["score"] == 0.5


def test_rows_the_export_did_not_write_are_scored_as_its_rows(tmp_path, monkeypatch):
    """A VAL_DATA of the user's own carries no verifier: with the launch's SGPO_VERIFIER_EXPORT
    it is scored with the export's verifier, kwargs, range and threshold (a verifier on [0, 10]
    whose 10 is a success), not by its data_source on [0, 1], where a 10 is an error."""
    for name in (
        "SGPO_VERIFIER_ISOLATION",
        "SGPO_VERIFIER",
        "SGPO_VERIFIER_SUCCESS_THRESHOLD",
        "SGPO_VERIFIER_TIMEOUT_S",
    ):
        monkeypatch.delenv(name, raising=False)
    spec = "test_verl_export:scaled_verifier"
    ten = {"verifier_kwargs": {"scale": 10.0}, "verifier_reward_range": (0.0, 10.0)}
    path = export_verl_parquet(
        fake_plan(), {}, tmp_path / "t.parquet", "sgpo/x", None, spec, verifier_timeout_s=7, **ten
    )
    bare = {"index": 3}  # what a user's parquet may carry
    monkeypatch.setenv("SGPO_VERIFIER_EXPORT", str(path))
    monkeypatch.setenv("SGPO_VERIFIER", spec)  # the user's choice wins, with its own settings
    assert reward.row_scoring(bare) == bare
    monkeypatch.delenv("SGPO_VERIFIER")
    assert reward.row_scoring(bare)["verifier"] == spec
    assert reward.row_scoring(bare)["verifier_timeout_s"] == 7
    # the variable's timeout serves rows that carry none, as without an export
    monkeypatch.setenv("SGPO_VERIFIER_TIMEOUT_S", "17")
    assert reward.get_verifier(spec, reward.row_scoring(bare)).timeout_s == 17
    assert reward.row_scoring(bare)["verifier_kwargs"] == '{"scale": 10.0}'
    monkeypatch.delenv("SGPO_VERIFIER_TIMEOUT_S")
    # "07" is 7 to math_verify (the data_source's verifier), not to the export's exact match
    right, wrong = (reward.compute_score("mine", answer, "7", bare) for answer in ("7", "07"))
    assert (right["score"], right["acc"], right["verifier_error"]) == (1.0, 1.0, 0.0)
    assert (wrong["score"], wrong["acc"]) == (0.0, 0.0)
    monkeypatch.setenv("SGPO_VERIFIER_EXPORT", "")  # turned off: by the data_source
    assert reward.compute_score("mine", "07", "7", bare)["score"] == 1.0
    monkeypatch.setenv("SGPO_VERIFIER_EXPORT", str(path))
    # the export's own rows, at the default threshold: the middle of their range, rescaled
    info = read_table(path)[0][0]["extra_info"]
    assert info["success_threshold"] is None
    monkeypatch.setenv("SGPO_VERIFIER_SUCCESS_THRESHOLD", "5.0")  # in the verifier's units
    assert reward.compute_score("sgpo/x", "7", "7", info)["acc"] == 1.0
    # a hand-made DATA (SKIP_EXPORT=1) names no verifier: rows are scored by their data_source
    for name, rows in (("no-verifier", [{"extra_info": {"index": 0}}]), ("no-info", [{"a": 1}])):
        write_table(tmp_path / f"{name}.parquet", rows, {})
        monkeypatch.setenv("SGPO_VERIFIER_EXPORT", str(tmp_path / f"{name}.parquet"))
        assert reward.row_scoring(bare) == bare
        assert reward.compute_score("mine", "07", "7", bare)["score"] == 1.0


def test_compute_score_counts_a_success_from_the_exported_threshold(tmp_path, monkeypatch):
    """acc is sgpo's held-out accuracy: a success from task.success_threshold up (0.5 by
    default), while score stays the verifier's partial credit."""
    monkeypatch.delenv("SGPO_VERIFIER_ISOLATION", raising=False)
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task()})
    args = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(tmp_path / "t.pq")]
    verifier = ["--set", "task.verifier=test_verl_export:scaled_verifier"]
    verifier += ["--set", "task.verifier_kwargs.scale=0.7"]
    monkeypatch.setenv("SGPO_VERIFIER", "test_verl_export:scaled_verifier")  # trusted
    for threshold, acc in ((None, 1.0), (0.9, 0.0), (0.7, 1.0)):
        mark = [] if threshold is None else ["--set", f"task.success_threshold={threshold}"]
        result = CliRunner().invoke(verl_app, [*args, *verifier, *mark])
        assert result.exit_code == 0, result.output
        rows, meta = read_table(tmp_path / "t.pq")
        info = rows[0]["extra_info"]
        assert info["success_threshold"] == meta["export"]["success_threshold"] == threshold
        scored = reward.compute_score("sgpo/x", "7", "7", info)
        assert (scored["score"], scored["acc"]) == (0.7, acc)
        assert "NOT applied" not in result.output
    # an exported row at the default threshold counts from the middle of its range, whatever
    # the launch's variable; a row without a verifier, scored by SGPO_VERIFIER's, from it
    unmarked = dict(info, success_threshold=None)
    monkeypatch.setenv("SGPO_VERIFIER_SUCCESS_THRESHOLD", "0.9")
    assert reward.compute_score("sgpo/x", "7", "7", unmarked)["acc"] == 1.0
    monkeypatch.setenv("SGPO_VERIFIER", "test_verl_export:seven_tenths")
    assert reward.compute_score("mine", "7", "7", {"index": 0})["acc"] == 0.0
    monkeypatch.setenv("SGPO_VERIFIER_SUCCESS_THRESHOLD", "0.6")
    assert reward.compute_score("mine", "7", "7", {"index": 0})["acc"] == 1.0
    monkeypatch.delenv("SGPO_VERIFIER")
    # a threshold of 0 in the verifier's units is one too ([-2, 1]: 2/3 rescaled)
    signed = ["--set", "task.verifier_reward_range=[-2, 1]", "--set", "task.success_threshold=0"]
    assert CliRunner().invoke(verl_app, [*args, *verifier, *signed]).exit_code == 0
    assert read_table(tmp_path / "t.pq")[1]["export"]["success_threshold"] == pytest.approx(2 / 3)
    # the launch's variable is in the verifier's own units: rows it serves are scored unscaled
    data_info = ["data-info", "--data", str(tmp_path / "t.pq"), "--train-batch-size", "4"]
    info = CliRunner().invoke(verl_app, data_info)
    assert float(info.output.split()[-1]) == pytest.approx(0.0)


def test_the_held_out_split_is_exported_as_validation_scored_as_the_training_rows(
    tmp_path, monkeypatch
):
    """--val-out: the config's task.eval as verl validation data, every query once, formatted
    and scored as the training export (verl's val acc counts successes as sgpo's does)."""
    from sgpo.config import load_config
    from sgpo.tasks import load_task

    monkeypatch.delenv("SGPO_VERIFIER_ISOLATION", raising=False)
    overrides = [
        "task.verifier=test_verl_export:scaled_verifier",
        "task.verifier_kwargs.scale=0.7",
        "task.success_threshold=0.9",
        "model.prompt_template='Q: {prompt}'",
    ]
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task(*overrides)})
    args = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(tmp_path / "t.pq")]
    args += [item for o in overrides for item in ("--set", o)]
    result = CliRunner().invoke(verl_app, [*args, "--val-out", str(tmp_path / "val.pq")])
    assert result.exit_code == 0, result.output
    assert "validation data (the held-out split) written to" in result.output
    train, _ = read_table(tmp_path / "t.pq")
    val, meta = read_table(tmp_path / "val.pq")
    config = load_config(None, overrides)
    held_out = load_task(config.task, config.seed).eval
    assert [r["extra_info"]["query_id"] for r in val] == [q.query_id for q in held_out]
    assert [r["prompt"][-1]["content"] for r in val] == [f"Q: {q.prompt}" for q in held_out]
    assert [r["reward_model"]["ground_truth"] for r in val] == [q.answer for q in held_out]
    assert ROLLOUT_N not in val[0] and meta["export"]["split"] == "eval"
    scoring = ("verifier", "verifier_kwargs", "verifier_reward_range", "success_threshold")
    assert {k: val[0]["extra_info"][k] for k in scoring} == {
        k: train[0]["extra_info"][k] for k in scoring
    }
    assert {r["data_source"] for r in val} == {train[0]["data_source"]}
    answer = held_out[0].answer
    reward.export_scoring.cache_clear()
    monkeypatch.setenv("SGPO_VERIFIER_EXPORT", str(tmp_path / "t.pq"))  # as the launch sets it
    scored = reward.compute_score(val[0]["data_source"], answer, answer, val[0]["extra_info"])
    assert (scored["score"], scored["acc"]) == (0.7, 0.0)  # 0.7 is below the threshold of 0.9


def test_rows_of_a_verl_file_keep_their_own_data_source(tmp_path):
    """A verl file mixing sources (GSM8K and MATH rows) exports each row under its own
    data_source, training and held-out rows alike, so verl's val-core/<data_source>/ metrics
    keep them apart; a row without one gets sgpo/verl, and --data-source names every row."""
    from sgpo.verl.export import export_for_config, export_held_out_for_config

    def own(sources: list[str | None]) -> list[dict]:
        return [{"data_source": s, "extra_info": {"index": i}} for i, s in enumerate(sources)]

    config, plan = verl_file_task(
        tmp_path,
        own(["openai/gsm8k", "lighteval/MATH", None]),
        own(["lighteval/MATH", "openai/gsm8k"]),
    )
    out = tmp_path / "t.parquet"
    _, said, _ = export_for_config(config, plan, {}, out)
    rows, meta = read_table(out)
    assert [r["data_source"] for r in rows] == ["openai/gsm8k", "lighteval/MATH", "sgpo/verl"]
    assert meta["export"]["data_sources"] == ["lighteval/MATH", "openai/gsm8k", "sgpo/verl"]
    assert said == "the rows' own: lighteval/MATH, openai/gsm8k; sgpo/verl for rows without one"
    held_out = export_held_out_for_config(config, tmp_path / "val.parquet")
    assert [r["data_source"] for r in read_table(held_out)[0]] == ["lighteval/MATH", "openai/gsm8k"]
    # one name given: every row's
    export_for_config(config, plan, {}, out, data_source="mine")
    assert {r["data_source"] for r in read_table(out)[0]} == {"mine"}
    held_out = export_held_out_for_config(config, tmp_path / "val.parquet", data_source="mine")
    assert {r["data_source"] for r in read_table(held_out)[0]} == {"mine"}


def test_rows_of_a_verl_file_keep_their_own_ability(tmp_path):
    """A verl file's rows keep their own ability label (a GSM8K row "math", a coding row
    "code"), training and held-out rows alike; a row without one gets "sgpo", and the export's
    metadata lists them; a label that is not a non-empty string is refused, naming the row."""
    from sgpo.verl.export import export_for_config, export_held_out_for_config

    def own(abilities: list) -> list[dict]:
        return [{"ability": ability} for ability in abilities]

    config, plan = verl_file_task(tmp_path, own(["math", "code", None]), own(["code", "math"]))
    out = tmp_path / "t.parquet"
    export_for_config(config, plan, {}, out, data_source="mine")
    rows, meta = read_table(out)
    assert [r["ability"] for r in rows] == ["math", "code", "sgpo"]
    assert meta["export"]["abilities"] == ["code", "math", "sgpo"]
    held_out = export_held_out_for_config(config, tmp_path / "val.parquet")
    assert [r["ability"] for r in read_table(held_out)[0]] == ["code", "math"]
    config, plan = verl_file_task(tmp_path / "blank", own(["math", " "]), own(["math"]))
    with pytest.raises(DataError, match=r"train.parquet: row 1.*'ability' must be a non-empty"):
        export_for_config(config, plan, {}, out)


def verl_file_task(
    folder: Path, train_own: list[dict], eval_own: list[dict], suffix: str = "parquet"
):
    """A verl-file task in folder whose i-th training row asks "i + i =" with the row's own
    fields train_own[i] (data_source openai/gsm8k unless given), and whose held-out rows carry
    eval_own likewise, with a plan keeping every training row."""
    import pyarrow as pa

    from sgpo.config import load_config

    def verl_file(path: Path, own: list[dict]) -> str:
        rows = [
            {
                "data_source": "openai/gsm8k",
                "prompt": [{"role": "user", "content": f"{i} + {i} ="}],
                "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
            }
            | fields
            for i, fields in enumerate(own)
        ]
        if suffix == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    folder.mkdir(parents=True, exist_ok=True)
    train = verl_file(folder / f"train.{suffix}", train_own)
    test = verl_file(folder / f"test.{suffix}", eval_own)
    files = [f"task.file.train={train}", f"task.file.eval={test}", "task.file.preset=verl"]
    config = load_config(None, ["task.kind=file", *files])
    indices = [(own.get("extra_info") or {}).get("index", i) for i, own in enumerate(train_own)]
    return config, keeping_every_row([f"train:{index}" for index in indices])


def verl_task(tmp_path: Path, infos: list, held_out: list, suffix: str = "parquet"):
    """verl_file_task whose rows carry extra_info `infos` and `held_out` (one per row; None:
    the row has none)."""

    def own(row_infos: list) -> list[dict]:
        return [{} if info is None else {"extra_info": info} for info in row_infos]

    return verl_file_task(tmp_path, own(infos), own(held_out), suffix)


def keeping_every_row(query_ids: list[str]) -> list[PlanRow]:
    """A plan keeping every query of a verl file whose i-th row asks "i + i =" (G = 4)."""
    kept = {"kept": True, "reason": "kept", "k": 8, "n_correct": 4, "p_hat": 0.5, "group_size": 4}
    return [
        PlanRow(
            query_id,
            f"{i} + {i} =",
            str(2 * i),
            "",
            rank=i,
            prompt_tokens=6,
            mean_response_tokens=3.0,
            rewards_vary=True,
            **kept,
        )
        for i, query_id in enumerate(query_ids)
    ]


def gsm8k_info(i: int, split: str) -> dict:
    """extra_info as verl's GSM8K preprocessing writes it, with a nested tool's kwargs."""
    return {
        "split": split,
        "index": 100 + i,  # sgpo's key too: a row's own integer index is kept
        "answer": f"{i} + {i} = {2 * i} #### {2 * i}",
        "tools_kwargs": {"calc": {"create_kwargs": {"ground_truth": str(2 * i)}}},
    }


def test_rows_of_a_verl_file_keep_their_own_extra_info(tmp_path, caplog):
    """A verl file's extra_info (its custom reward function reads it) is kept beside sgpo's
    fields in the training and held-out exports, nested values intact, and reads back so
    through datasets as verl reads it, verl's own index too; another key that is sgpo's holds
    sgpo's value, and one warning per export names it."""
    import datasets

    from sgpo.verl.export import (
        export_for_config,
        export_held_out_for_config,
        warn_replaced_keys,
    )

    train_infos = [gsm8k_info(i, "train") for i in range(3)]
    test_infos = [gsm8k_info(i, "test") for i in range(2)]
    config, plan = verl_task(tmp_path, train_infos, test_infos)
    out, val = tmp_path / "t.parquet", tmp_path / "val.parquet"
    with caplog.at_level("WARNING", logger="sgpo.verl.export"):
        export_for_config(config, plan, {}, out)
        export_held_out_for_config(config, val)
    assert not [r for r in caplog.records if r.name == "sgpo.verl.export"]  # nothing replaced
    for path, infos in ((out, train_infos), (val, test_infos)):
        rows, _ = read_table(path)
        assert [r["extra_info"]["query_id"] for r in rows] == [
            f"train:{info['index']}" if path == out else f"test:{info['index']}" for info in infos
        ]
        own = [{k: r["extra_info"][k] for k in infos[0]} for r in rows]
        assert own == infos  # the index as the file has it (logs join back to its rows by it)
        assert {r["extra_info"]["verifier"] for r in rows} == {"sgpo.verifiers:math_verify"}
        loaded = datasets.load_dataset("parquet", data_files=str(path), split="train")
        assert [r["extra_info"] for r in loaded] == [r["extra_info"] for r in rows]
    answer = read_table(out)[0][1]
    scored = reward.compute_score("openai/gsm8k", "\\boxed{2}", "2", answer["extra_info"])
    assert scored["score"] == 1.0  # sgpo's reward still reads its own fields

    # a row's own rank is replaced, and so is an index that is no integer
    train_infos[1] |= {"rank": 7}
    (tmp_path / "ranked").mkdir()
    config, plan = verl_task(tmp_path / "ranked", train_infos, test_infos)
    with caplog.at_level("WARNING", logger="sgpo.verl.export"):
        export_for_config(config, plan, {}, tmp_path / "ranked.parquet")
        warn_replaced_keys([{"index": "a3"}], tmp_path / "text-index.parquet")
    warned = [r.getMessage() for r in caplog.records if r.name == "sgpo.verl.export"]
    assert len(warned) == 2 and "sgpo's (rank)" in warned[0], warned
    assert "replacing the rows' own" in warned[0] and "sgpo's (index)" in warned[1]


def test_verl_rows_extra_info_of_different_keys_exports_and_conflicting_types_are_refused(
    tmp_path,
):
    """Rows whose extra_info differ in keys export (a key a row lacks is null there, as in
    any struct column); one key of different types in two rows is a DataError naming the key
    and the row, not pyarrow's, and nothing is written."""
    from sgpo.verl.export import export_for_config

    infos = [{"tests": [1, 2]}, None, {"hint": {"text": "add"}}]
    config, plan = verl_task(tmp_path, infos, [None], suffix="jsonl")
    out = tmp_path / "t.parquet"
    export_for_config(config, plan, {}, out)
    own = [{k: r["extra_info"][k] for k in ("tests", "hint")} for r in read_table(out)[0]]
    assert own == [
        {"tests": [1, 2], "hint": None},
        {"tests": None, "hint": None},
        {"tests": None, "hint": {"text": "add"}},
    ]
    infos = [{"answer": "0"}, {"answer": "2"}, {"answer": 4}]
    config, plan = verl_task(tmp_path, infos, [None], suffix="jsonl")
    with pytest.raises(
        DataError,
        match=r"extra_info key 'answer': row 2 \(query 'train:2'\) holds int 4, which does "
        r"not fit the type of the rows before it \(string\)",
    ):
        export_for_config(config, plan, {}, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_an_export_without_extra_info_of_its_own_is_as_before(tmp_path, caplog):
    """Rows with no extra_info of their own (an addition task's; a verl file's without one or
    with its index alone) export under the schema they always had, rows unchanged but for a
    verl row's own index, and say nothing."""
    from sgpo.config import load_config
    from sgpo.verl.export import SCHEMA, config_scoring, export_for_config

    def as_always(config, plan: list[PlanRow], data_source: str) -> list[dict]:
        """The rows the export has always written: verl_rows with the config's settings."""
        model = config.model
        scoring = config_scoring(config, data_source, None)[1]
        return verl_rows(
            plan, data_source, model.system_prompt, prompt_template=model.prompt_template, **scoring
        )

    config, plan = verl_task(tmp_path, [{"index": 7}, None], [None])
    out = tmp_path / "t.parquet"
    with caplog.at_level("WARNING", logger="sgpo.verl.export"):
        export_for_config(config, plan, {}, out)
    assert not caplog.text
    assert pq.read_schema(out).remove_metadata() == SCHEMA
    expected = as_always(config, plan, "openai/gsm8k")
    expected[0]["extra_info"]["index"] = 7  # the row's own
    assert read_table(out)[0] == expected
    caplog.clear()
    addition = load_config(None, [])
    with caplog.at_level("WARNING", logger="sgpo.verl.export"):
        export_for_config(addition, fake_plan(), {}, out)
    assert not caplog.records
    assert pq.read_schema(out).remove_metadata() == SCHEMA
    assert read_table(out)[0] == as_always(addition, fake_plan(), "sgpo/addition")


def test_verifier_spec_precedence(monkeypatch):
    monkeypatch.delenv("SGPO_VERIFIER", raising=False)
    assert reward.verifier_spec("sgpo/addition", None) == ADDITION
    assert reward.verifier_spec("openai/gsm8k", {}) == "sgpo.verifiers:math_verify"
    monkeypatch.setenv("SGPO_VERIFIER", "pkg.mod:fn")
    assert reward.verifier_spec("sgpo/addition", {"verifier": None}) == "pkg.mod:fn"
    assert reward.verifier_spec("sgpo/addition", {"verifier": ADDITION}) == ADDITION


def test_compute_score_reads_a_response_begun_in_the_prompts_thinking(monkeypatch, tmp_path):
    monkeypatch.delenv("SGPO_VERIFIER", raising=False)
    info = {"verifier": "sgpo.verifiers:math_verify"}
    cut_off = "Okay. 48/2=24 and 48+24=72. Wait, let me check"
    assert reward.compute_score("sgpo/math", cut_off, "72", info)["score"] == 1.0
    monkeypatch.setenv("SGPO_VERIFIER_THINKING_IN_PROMPT", "1")  # as the launch sets it
    assert reward.compute_score("sgpo/math", cut_off, "72", info)["score"] == 0.0
    done = cut_off + " again: 72.\n</think>\nThe answer is 72."
    assert reward.compute_score("sgpo/math", done, "72", info)["score"] == 1.0
    # the launch sets it from MODEL's chat template, for every reward worker
    monkeypatch.delenv("SGPO_VERIFIER_THINKING_IN_PROMPT")
    from sgpo.embedded import build_char_tokenizer

    for template, opened in ((CHAT_TEMPLATE, False), (THINKING_TEMPLATE, True)):
        demo_plan(tmp_path)
        tokenizer = build_char_tokenizer()
        tokenizer.chat_template = template
        tokenizer.save_pretrained(tmp_path / "model")
        launched = run_launch(tmp_path, "run_sgpo.sh")
        assert launched.returncode == 0, launched.stderr
        passed = "env_vars.SGPO_VERIFIER_THINKING_IN_PROMPT='1'" in launched.stdout
        assert passed == opened
        assert ("scored as begun inside it" in launched.stderr) == opened


def test_compute_score_counts_verifier_errors_as_zero(monkeypatch):
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "inline")
    monkeypatch.setenv("SGPO_VERIFIER", "test_verl_export:always_raises")
    before = reward.get_verifier("test_verl_export:always_raises").stats.errors
    failed = reward.compute_score("x", "1", "1", {"query_id": "q1"})
    assert failed["score"] == 0.0 and failed["verifier_error"] == 1.0
    assert reward.get_verifier("test_verl_export:always_raises").stats.errors == before + 1
    stats = reward.verifier_stats()["test_verl_export:always_raises (inline)"]
    assert stats["errors"] >= 1 and stats["calls"] >= stats["errors"]
    monkeypatch.setenv("SGPO_VERIFIER", "no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="cannot import verifier"):  # a bad path fails fast
        reward.compute_score("x", "1", "1", {})
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "bogus")
    with pytest.raises(ValueError, match="SGPO_VERIFIER_ISOLATION"):
        reward.compute_score("x", "1", "1", {"verifier": ADDITION})


def test_compute_score_from_verl_threads_runs_the_verifier_in_a_worker_process(monkeypatch):
    """verl calls the reward function from a thread pool, where SIGALRM cannot bound an inline
    verifier: auto isolation then uses sgpo's process worker (with its timeout)."""
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "auto")
    monkeypatch.delenv("SGPO_VERIFIER", raising=False)
    info = {"verifier": ADDITION}
    cases = [("24", "42", 1.0), ("42", "42", 0.0), ("001", "100", 1.0), ("9", "8", 0.0)] * 3
    with ThreadPoolExecutor(4) as pool:
        scores = list(
            pool.map(lambda c: reward.compute_score("sgpo/addition", *c[:2], info)["score"], cases)
        )
    assert scores == [c[2] for c in cases]
    assert threading.current_thread() is threading.main_thread()
    assert reward.verifier_stats()[f"{ADDITION} (process)"]["calls"] >= len(cases)
    for verifier in reward._verifiers.values():
        verifier.close()


# ----------------------------------------------------------------------------- flops


def verl_log_lines(steps: int) -> list[dict]:
    """What verl's FileLogger writes: validation at step 0, then one line per training step."""
    lines = [{"step": 0, "data": {"val-core/sgpo/addition/acc/mean@1": 0.25}}]
    for s in range(1, steps + 1):
        lines.append(
            {
                "step": s,
                "data": {
                    "training/global_step": s,
                    "prompt_length/mean": 20.0 + s,
                    "response_length/mean": 5.5,
                    "perf/total_num_tokens": 1000 + 128 * s,
                    "critic/score/mean": 0.1 * s,
                    "timing_s/gen": 1.0,
                },
            }
        )
    lines[-1]["data"]["val-core/sgpo/addition/acc/mean@1"] = 0.75
    return lines


def test_verl_run_flops_matches_sgpo_formulas_per_phase_and_cumulative():
    records = verl_log_lines(3)
    per_step = [10, 20]  # one epoch = 2 steps; step 3 is epoch 2's first step
    rows = verl_run_flops(
        records,
        SHAPE,
        use_reference=True,
        ppo_epochs=2,
        rollouts_per_step=per_step,
        profile_flops=500.0,
    )
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["rollouts"] == 0 and rows[0]["flops_total"] == 0.0
    assert rows[0]["flops_total_cum"] == 500.0  # profiling is charged before step 1
    assert rows[0]["val-core/sgpo/addition/acc/mean@1"] == 0.25
    cum = 500.0
    for row, n in zip(rows[1:], [10, 20, 10], strict=True):
        p, r = row["prompt_tokens_mean"], row["response_tokens_mean"]
        assert row["rollouts"] == n and row["rollouts_source"] == "dataset"
        assert row["flops_rollout"] == pytest.approx(n * inference_flops(SHAPE, p, r))
        # old + reference log-probs, and 2 PPO epochs
        assert row["flops_logprob"] == pytest.approx(2 * n * logprob_flops(SHAPE, p, r))
        assert row["flops_train"] == pytest.approx(2 * n * train_flops(SHAPE, p, r))
        cum += row["flops_total"]
        assert row["flops_total_cum"] == pytest.approx(cum)
        assert row["flops_profile_cum"] == 500.0
    assert rows[3]["reward_mean"] == pytest.approx(0.3)
    assert rows[3]["val-core/sgpo/addition/acc/mean@1"] == 0.75
    # no reference, no old-logprob recomputation (bypass mode): no log-prob pass at all
    bare = verl_run_flops(
        records,
        SHAPE,
        use_reference=False,
        ppo_epochs=1,
        rollouts_per_step=per_step,
        recompute_old_logprob=False,
    )
    assert all(r["flops_logprob"] == 0.0 for r in bare)
    assert bare[1]["flops_train"] == pytest.approx(3 * bare[1]["flops_rollout"])
    with pytest.raises(ValueError, match="ppo_epochs"):
        verl_run_flops(records, SHAPE, False, 0)


def test_verl_run_flops_estimates_rollouts_without_the_dataset():
    rows = verl_run_flops(verl_log_lines(2), SHAPE, use_reference=False, ppo_epochs=1)
    assert rows[1]["rollouts_source"] == "estimated"
    assert rows[1]["rollouts"] == round((1000 + 128) / (21.0 + 5.5))
    flat = [{"training/global_step": 1, "prompt_length/mean": 4.0, "response_length/mean": 2.0}]
    with pytest.raises(ValueError, match="perf/total_num_tokens"):
        verl_run_flops(flat, SHAPE, False, 1)
    assert verl_run_flops(flat, SHAPE, False, 1, rollouts_per_step=[3])[0]["rollouts"] == 3


def test_estimated_rollouts_leave_verls_padding_out_of_the_count():
    """perf/total_num_tokens holds verl's padding sequences (128 tokens each, up to a multiple
    of batch_multiple): with the multiple given, 5 rollouts of 20 + 5 tokens and 3 padding
    sequences (509 tokens) are 5 rollouts and 3 padding sequences, not 20 and 4."""
    record = {
        "training/global_step": 1,
        "prompt_length/mean": 20.0,
        "response_length/mean": 5.0,
        "perf/total_num_tokens": 5 * 25 + 3 * 128,
    }
    (row,) = verl_run_flops([record], SHAPE, False, 1, batch_multiple=8)
    assert (row["rollouts_trained"], row["padding_sequences"]) == (5, 3)
    exact = verl_run_flops([record], SHAPE, False, 1, rollouts_per_step=[5], batch_multiple=8)[0]
    assert row["flops_total"] == pytest.approx(exact["flops_total"])
    # whatever the padding, the count read back is the one the tokens were made of
    for n in range(1, 40):
        record["perf/total_num_tokens"] = n * 25 + (-n) % 8 * 128
        assert verl_run_flops([record], SHAPE, False, 1, batch_multiple=8)[0]["rollouts"] == n
    # rollouts as long as a padding sequence (128 tokens) cannot be told from padding: the
    # count read is the most it could be, and no tokens is no rollout
    record |= {"prompt_length/mean": 100.0, "response_length/mean": 28.0}
    record["perf/total_num_tokens"] = 8 * 128
    assert verl_run_flops([record], SHAPE, False, 1, batch_multiple=8)[0]["rollouts"] == 8
    record["perf/total_num_tokens"] = 0
    assert verl_run_flops([record], SHAPE, False, 1, batch_multiple=8)[0]["rollouts"] == 0


def test_read_verl_metrics_merges_files_and_orders_steps(tmp_path):
    lines = verl_log_lines(3)
    first = tmp_path / "run.jsonl"
    first.write_text("".join(json.dumps(x) + "\n" for x in lines[:3]) + "\n")
    resumed = tmp_path / "run-resumed.jsonl"
    again = dict(lines[2], data=dict(lines[2]["data"], **{"critic/score/mean": 0.9}))
    resumed.write_text(json.dumps(lines[3]) + "\n" + json.dumps(again) + "\n")
    records = read_verl_metrics([first, resumed])
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[2]["critic/score/mean"] == 0.9  # the later file wins
    assert merge_records([{"step": 2, "a": 1}, {"step": 1}, {"step": 2, "a": 3}]) == [
        {"step": 1},
        {"step": 2, "a": 3},
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl: line 1: not JSON"):
        read_verl_metrics([bad])
    with pytest.raises(FileNotFoundError):
        read_verl_metrics([tmp_path / "missing.jsonl"])


def tiny_model_dir(tmp_path: Path) -> Path:
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    config.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_model_shape_from_dir_needs_no_weights_and_matches_a_built_model(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from sgpo.models import model_shape

    model_dir = tiny_model_dir(tmp_path)
    assert not any(p.suffix in {".safetensors", ".bin"} for p in model_dir.iterdir())
    built = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    assert model_shape_from_dir(str(model_dir)) == model_shape(built)


def builtin_task(*overrides: str) -> str:
    """The task of the default config with `overrides`, which the export checks a plan
    against without --config (the addition task's queries follow the seed)."""
    from sgpo.config import load_config
    from sgpo.tasks import load_task

    config = load_config(None, list(overrides))
    return load_task(config.task, config.seed).source


def test_a_killed_runs_unfinished_last_line_is_not_a_record_yet(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3, "da')
    assert [r["step"] for r in read_verl_metrics([path])] == [1, 2]
    path.write_bytes(b'{"step": 1}\n{"step": 2}')  # whole, only its newline missing: kept
    assert [r["step"] for r in read_verl_metrics([path])] == [1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"step": 1, "da\n{"step": 2}\n', "{path}: line 1: not JSON"),
        (b'{"step": 1}\n\xff\xfe\n', "{path}: line 2: not JSON"),
        (b'{"data": {}}\n', "{path}: line 1: no 'step' (nor 'training/global_step') field"),
        (b'{"step": "one"}\n', "{path}: line 1: field 'step' is 'one', not a whole number"),
        (
            b'{"step": 1, "prompt_length/mean": 20, "response_length/mean": NaN}\n',
            "step 1: field 'response_length/mean' is nan; a logged count or mean length is a "
            "finite number >= 0",
        ),
        (
            b'{"step": 1, "prompt_length/mean": 20, "response_length/mean": -2}\n',
            "step 1: field 'response_length/mean' is -2; a logged count",
        ),
        (
            b'{"step": 1, "prompt_length/mean": 20, "response_length/mean": 2, '
            b'"perf/total_num_tokens": Infinity}\n',
            "step 1: field 'perf/total_num_tokens' is inf; a logged count",
        ),
    ],
)
def test_bad_verl_metrics_name_the_file_line_or_step_and_field(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    shape = ModelShape(n_params=1000, n_layers=2, d_attn=16)
    with pytest.raises(DataError) as error:
        verl_run_flops(read_verl_metrics([path]), shape, use_reference=False, ppo_epochs=1)
    assert message.format(path=path) in str(error.value)
    with pytest.raises(DataError, match="a directory; give verl's metrics JSONL"):
        read_verl_metrics([tmp_path])


def test_flops_and_export_commands(tmp_path):
    plan = fake_plan()
    shape = {"n_params": 1000, "n_layers": 2, "d_attn": 16}
    builtin = builtin_task()
    export = ["export", "--plan", str(tmp_path / "plan.parquet")]
    export += ["--out", str(tmp_path / "train.parquet"), "--train-batch-size", "4"]
    runner = CliRunner()
    # a plan of another task, exported without its config, would be scored by the built-in
    # task's verifier: refused, saying what to pass
    write_plan(tmp_path / "plan.parquet", plan, {"shape": shape, "task": "file(mine.jsonl)"})
    result = runner.invoke(verl_app, export)
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert said.startswith(
        "no --config (or SGPO_CONFIG in the verl launch) was given, so the plan was checked "
        "against the defaults' task: pass the config the plan was made with. "
    )
    assert "field 'task' is 'file(mine.jsonl)'" in said
    assert not (tmp_path / "train.parquet").exists()
    # the held-out split and the training data in one file: one would be lost
    same = [*export, "--val-out", str(tmp_path / "train.parquet")]
    refused = runner.invoke(verl_app, same)
    assert refused.exit_code == 2 and "is --out's file" in " ".join(refused.output.split())
    write_plan(
        tmp_path / "plan.parquet", plan, {"shape": shape, "profile_flops": 123.0, "task": builtin}
    )
    # a batch the export cannot fill: refused before anything is written
    too_big = [*export[:-1], "10000", "--out", str(tmp_path / "big.parquet")]
    refused = runner.invoke(verl_app, too_big)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "the launch's TRAIN_BATCH_SIZE) is 10000" in said
    assert not (tmp_path / "big.parquet").exists() and "written" not in refused.output
    result = runner.invoke(verl_app, export)
    assert result.exit_code == 0, result.output
    rows, meta = read_table(tmp_path / "train.parquet")
    assert rows[0]["extra_info"]["verifier"] == ADDITION  # the addition task's default verifier
    assert rows[0]["data_source"] == "sgpo/addition"
    assert meta["plan"]["profile_flops"] == 123.0
    assert '"steps_per_epoch"' in result.output

    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in verl_log_lines(2)))
    out = tmp_path / "flops.jsonl"
    result = runner.invoke(
        verl_app,
        [
            "flops",
            str(log),
            "--plan",
            str(tmp_path / "plan.parquet"),
            "--data",
            str(tmp_path / "train.parquet"),
            "--train-batch-size",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    steps = [json.loads(x) for x in out.read_text().splitlines()]
    assert steps[1]["rollouts"] == sum(r[ROLLOUT_N] for r in rows[:4])
    assert steps[0]["flops_total_cum"] == 123.0
    assert "total" in result.output

    result = runner.invoke(verl_app, ["flops", str(log), "--model", str(tiny_model_dir(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "estimated" in result.output
    result = runner.invoke(verl_app, ["flops", str(log)])
    assert result.exit_code != 0 and "--model" in result.output


# ----------------------------------------------------------------------------- issue 14

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "examples" / "verl"
DEMO = Path(__file__).resolve().parents[1] / "src" / "sgpo" / "demo.yaml"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
THINKING_TEMPLATE = CHAT_TEMPLATE.replace("assistant: ", "assistant: <think>\n")


def test_flops_count_verl_padding_and_dapo_discarded_groups():
    records = [
        {
            "step": 1,
            "prompt_length/mean": 20.0,
            "response_length/mean": 5.0,
            "training/filter_groups/evicted_samples": 3,
            "training/filter_groups/discarded_surplus_samples": 1,
        }
    ]
    plain = verl_run_flops(records, SHAPE, False, 1, rollouts_per_step=[10])[0]
    dapo = verl_run_flops(
        records, SHAPE, False, 2, rollouts_per_step=[10], batch_multiple=8, discarded_group_size=4
    )[0]
    assert plain["padding_sequences"] == 0 and plain["rollouts_discarded"] == 0
    assert dapo["rollouts_trained"] == 10 and dapo["padding_sequences"] == 6  # up to 16
    assert dapo["rollouts_discarded"] == (3 + 1) * 4 and dapo["rollouts"] == 26
    # generated, not trained: rollout FLOPs only; padding: 127 + 1 tokens through logprob, train
    assert dapo["flops_rollout"] == pytest.approx(26 * inference_flops(SHAPE, 20.0, 5.0))
    pad_logprob = 6 * logprob_flops(SHAPE, 127, 1)
    pad_train = 6 * train_flops(SHAPE, 127, 1) * 2
    assert dapo["flops_logprob"] == pytest.approx(plain["flops_logprob"] + pad_logprob)
    assert dapo["flops_train"] == pytest.approx(2 * plain["flops_train"] + pad_train)
    assert dapo["flops_padding"] == pytest.approx(pad_logprob + pad_train)


def test_a_refusal_shows_hydra_lists_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """rich read [console,file] as a markup tag and printed nothing in its place."""
    with pytest.raises(typer.Exit):
        fail(["trainer.logger: [console,file] -> [console,file,wandb]"])
    said = " ".join(capsys.readouterr().err.split())
    assert "refused: trainer.logger: [console,file] -> [console,file,wandb]" in said


def test_flops_of_a_metrics_file_charge_padding_and_dapo_groups_when_told(tmp_path):
    """`sgpo verl flops <metrics.jsonl>` charges them as --run does, given the two settings
    --run reads from the run; without them it says what it leaves out."""
    record = {
        "step": 1,
        "prompt_length/mean": 20.0,
        "response_length/mean": 5.0,
        "perf/total_num_tokens": 250,
        "training/filter_groups/evicted_samples": 3,
    }
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps(record) + "\n")
    model = str(tiny_model_dir(tmp_path))
    runner = CliRunner()
    bare = runner.invoke(verl_app, ["flops", str(log), "--model", model, "-o", str(tmp_path / "a")])
    assert bare.exit_code == 0, bare.output
    said = " ".join(bare.output.split())
    assert "DAPO discarded groups in this run; their generation is not charged" in said
    assert "padding sequences are not charged: pass --batch-multiple" in said
    told = runner.invoke(
        verl_app,
        ["flops", str(log), "--model", model, "--batch-multiple", "16", "--dapo-group-size", "4"]
        + ["-o", str(tmp_path / "b")],
    )
    assert told.exit_code == 0, told.output
    assert "DAPO discarded" not in told.output and "not charged" not in told.output
    (plain,) = [json.loads(x) for x in (tmp_path / "a").read_text().splitlines()]
    (full,) = [json.loads(x) for x in (tmp_path / "b").read_text().splitlines()]
    assert plain["rollouts_discarded"] == 0 and full["rollouts_discarded"] == 3 * 4
    assert full["padding_sequences"] == (-full["rollouts_trained"]) % 16 > 0
    assert full["flops_total_cum"] > plain["flops_total_cum"]


def test_flops_charge_downsampled_trajectories_as_generation_only():
    record = {"step": 1, "prompt_length/mean": 20.0, "response_length/mean": 5.0}
    plain = verl_run_flops([record], SHAPE, False, 1, rollouts_per_step=[24])[0]
    cut = {**record, DOWNSAMPLED_METRIC: 8}
    from_dataset = verl_run_flops([cut], SHAPE, False, 1, rollouts_per_step=[24])[0]
    # the dataset counts what was generated: 24, of which 16 trained
    assert from_dataset["rollouts"] == 24 and from_dataset["rollouts_trained"] == 16
    assert from_dataset["rollouts_discarded"] == 8
    assert from_dataset["flops_rollout"] == pytest.approx(plain["flops_rollout"])
    assert from_dataset["flops_train"] == pytest.approx(plain["flops_train"] * 16 / 24)
    assert from_dataset["flops_logprob"] == pytest.approx(plain["flops_logprob"] * 16 / 24)
    # the token estimate reads the trained batch: 16 trained, 8 more generated
    tokens = {**cut, "perf/total_num_tokens": 16 * 25}
    estimated = verl_run_flops([tokens], SHAPE, False, 1)[0]
    assert estimated["rollouts_trained"] == 16 and estimated["rollouts"] == 24
    assert estimated["flops_rollout"] == pytest.approx(plain["flops_rollout"])
    # at their own lengths where the sampler logged their tokens (a dead group's responses
    # are no typical ones): 8 of 30 + 12 tokens beside 16 of the trained batch's 20 + 5
    own = {
        **cut,
        DOWNSAMPLED_PROMPT_TOKENS_METRIC: 8 * 30,
        DOWNSAMPLED_RESPONSE_TOKENS_METRIC: 8 * 12,
    }
    row = verl_run_flops([own], SHAPE, False, 1, rollouts_per_step=[24])[0]
    expected = 16 * inference_flops(SHAPE, 20, 5) + 8 * inference_flops(SHAPE, 30, 12)
    assert row["flops_rollout"] == pytest.approx(expected)
    assert row["flops_train"] == pytest.approx(from_dataset["flops_train"])


def test_flops_count_the_logged_generated_trajectories_of_a_run_that_skips():
    # skips on history: the step generated 10 (not the dataset order's 24), 4 of them cut
    record = {"step": 1, "prompt_length/mean": 20.0, "response_length/mean": 5.0}
    logged = {**record, GENERATED_METRIC: 10, DOWNSAMPLED_METRIC: 4}
    row = verl_run_flops([logged], SHAPE, False, 1, rollouts_per_step=[24])[0]
    assert row["rollouts_source"] == "logged"
    assert (row["rollouts"], row["rollouts_trained"], row["rollouts_discarded"]) == (10, 6, 4)
    plain = verl_run_flops([record], SHAPE, False, 1, rollouts_per_step=[10])[0]
    assert row["flops_rollout"] == pytest.approx(plain["flops_rollout"])


def test_downsample_keys_keeps_each_groups_most_varied_in_order():
    # verl keys are {uid}_{session}_{index}; group a: 1 success of 6, group b: 2 of 2
    keys = [f"a_{i}_0" for i in range(6)] + ["b_0_0", "b_1_0"]
    rewards = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    kept = downsample_keys(keys, rewards, 4)
    assert kept == ["a_0_0", "a_1_0", "a_2_0", "a_3_0", "b_0_0", "b_1_0"]
    assert downsample_keys(keys, rewards, 8) == keys
    # the same subset sGPO's own trainer takes
    chosen = max_variance_indices(rewards[:6], 4)
    assert [k for k in kept if k.startswith("a_")] == [keys[i] for i in chosen]
    # dead groups dropped: b (all solved) leaves, a is cut as before, or kept whole with size 0
    assert downsample_keys(keys, rewards, 4, drop_equal=True) == kept[:4]
    assert downsample_keys(keys, rewards, 0, drop_equal=True) == keys[:6]
    # ... unless every group is dead: verl cannot train an empty batch
    assert downsample_keys(keys[6:], rewards[6:], 0, drop_equal=True) == keys[6:]
    with pytest.raises(ValueError, match="at least 2"):
        downsample_keys(keys, rewards, 1)
    with pytest.raises(ValueError, match="rewards"):
        downsample_keys(keys, rewards[:3], 4)


def test_whole_batch_scale_is_trained_tokens_over_the_batch_after_pods():
    # group a: 1 success of 6 (PODS to 4 keeps a_0, a_1, a_2, a_3), b: all solved (dead)
    keys = [f"a_{i}_0" for i in range(6)] + ["b_0_0", "b_1_0"]
    rewards = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    lengths = [1, 2, 3, 4, 100, 100, 5, 7]  # a_4 and a_5 are down-sampled away: not counted
    assert whole_batch_scale(keys, rewards, lengths, 4) == pytest.approx(10 / 22)
    assert whole_batch_scale(keys, rewards, lengths, 0) == pytest.approx(210 / 222)
    # nothing dead: nothing dropped, no scale; everything dead: verl trains it all, zero anyway
    assert whole_batch_scale(keys[:6], rewards[:6], lengths[:6], 4) == 1.0
    assert whole_batch_scale(keys[6:], rewards[6:], lengths[6:], 0) == 1.0
    with pytest.raises(ValueError, match="response lengths"):
        whole_batch_scale(keys, rewards, lengths[:3], 4)


def test_a_row_may_not_choose_a_verifier_the_launch_does_not_name(tmp_path, monkeypatch):
    """A data file's row (a downloaded VAL_DATA) naming `os:popen` or any other function
    would have it called on the model's response: only sgpo's verifiers, SGPO_VERIFIER's and
    the training export's are run; the refusal names the way to trust one."""
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "inline")
    monkeypatch.delenv("SGPO_VERIFIER", raising=False)
    monkeypatch.delenv("SGPO_VERIFIER_EXPORT", raising=False)
    planted = tmp_path / "planted"
    monkeypatch.setenv("PLANTED_FILE", str(planted))
    spec = "test_verl_export:writes_a_file"
    with pytest.raises(
        ValueError, match=rf"names extra_info\['verifier'\] '{spec}'.*SGPO_VERIFIER={spec}"
    ):
        reward.compute_score("math", "\\boxed{2}", "2", {"verifier": spec})
    assert not planted.exists()
    # sgpo's own verifiers are scored, and one the launch names
    math = {"verifier": "sgpo.verifiers:math_verify"}
    assert reward.compute_score("math", "\\boxed{2}", "2", math)["score"] == 1.0
    monkeypatch.setenv("SGPO_VERIFIER", spec)
    reward.compute_score("math", "\\boxed{2}", "2", {"verifier": spec})
    assert planted.read_text() == "\\boxed{2}"


def writes_a_file(response: str, reference: str) -> float:
    Path(os.environ["PLANTED_FILE"]).write_text(response)
    return 0.0


def test_verifier_counts_reach_a_stats_file_per_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "inline")
    monkeypatch.setenv("SGPO_VERIFIER_STATS_DIR", str(tmp_path))
    monkeypatch.setenv("SGPO_VERIFIER", "test_verl_export:always_raises")  # the rows' own
    assert reward.verifier_stats_totals(tmp_path)["errors"] == 0
    reward.compute_score("x", "1", "1", {"verifier": "test_verl_export:always_raises"})
    # the file holds this process's cumulative counts (every verifier it used so far)
    in_process = reward.verifier_stats().values()
    totals = reward.verifier_stats_totals(tmp_path)
    assert totals["errors"] == sum(v["errors"] for v in in_process) >= 1
    assert totals["calls"] == sum(v["calls"] for v in in_process)
    # a relaunch that gets the same pid (a new token) keeps the earlier process's counts
    monkeypatch.setattr(reward, "_PROCESS_TOKEN", "relaunch")
    reward.compute_score("x", "1", "1", {"verifier": "test_verl_export:always_raises"})
    after = reward.verifier_stats_totals(tmp_path)
    in_process = reward.verifier_stats().values()
    assert after["errors"] == totals["errors"] + sum(v["errors"] for v in in_process)
    # rows giving the same verifier another timeout get a Verifier of their own: its counts
    # are added to the first's under their one label, not written over them
    label = "test_verl_export:always_raises (inline)"
    errors = reward.verifier_stats()[label]["errors"]
    other = {"verifier": "test_verl_export:always_raises", "verifier_timeout_s": 9.0}
    reward.compute_score("x", "1", "1", other)
    assert reward.verifier_stats()[label]["errors"] == errors + 1


def test_with_skips_on_history_a_step_is_bounded_by_the_largest_groups(tmp_path):
    """verl then draws rows one at a time across epochs: a step may hold the rows drop_last
    leaves out of an aligned epoch (the hardest) with the next epoch's first."""
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task()})
    sizes = [r.group_size for r in kept_in_order(fake_plan())]
    assert len(sizes) % 4  # a remainder that aligned steps drop
    out = tmp_path / "t.pq"
    args = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(out)]
    info = ["data-info", "--data", str(out), "--train-batch-size", "4"]
    plain = CliRunner().invoke(verl_app, [*args, "--train-batch-size", "4"])
    assert plain.exit_code == 0 and "never trained on" in " ".join(plain.output.split())
    aligned = step_summary(sizes, 4)["rollouts_per_step_max"]
    assert CliRunner().invoke(verl_app, info).output.split()[1] == str(aligned)
    skips = ["--set", "train.history_explore=0.5", "--set", "train.history_fill=true"]
    history = CliRunner().invoke(verl_app, [*args, *skips, "--train-batch-size", "4"])
    assert history.exit_code == 0 and "never trained" not in " ".join(history.output.split())
    largest = sum(sorted(sizes, reverse=True)[:4])
    assert largest > aligned
    assert CliRunner().invoke(verl_app, info).output.split()[1] == str(largest)


def test_export_says_loudly_that_online_settings_are_not_carried(tmp_path):
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task()})
    args = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(tmp_path / "t.pq")]
    result = CliRunner().invoke(verl_app, [*args, "--set", "train.online.reestimate=true"])
    assert result.exit_code == 0, result.output
    assert "NOT applied on verl" in result.output and "reestimate" in result.output
    assert read_table(tmp_path / "t.pq")[1]["export"]["not_carried"] == {
        "train.online.reestimate": True
    }
    check = ["check", "--data", str(tmp_path / "t.pq"), "--train-batch-size", "4"]
    refused = CliRunner().invoke(verl_app, check)
    assert refused.exit_code == 2 and "ALLOW_NOT_CARRIED" in refused.output
    assert CliRunner().invoke(verl_app, [*check, "--allow-not-carried"]).exit_code == 0
    plain = CliRunner().invoke(verl_app, args)
    assert "NOT applied" not in plain.output
    piloted = CliRunner().invoke(
        verl_app,
        [*args, "--set", "train.filter_groups=true", "--set", "train.pilot_size=4"],
    )
    assert piloted.exit_code == 0, piloted.output
    assert read_table(tmp_path / "t.pq")[1]["export"]["not_carried"] == {
        "train.filter_groups": True,
        "train.pilot_size": 4,
    }
    # PODS down-sampling is carried (sgpo.verl.sampler); its whole-group variant is not
    down_sampled = CliRunner().invoke(verl_app, [*args, "--set", "train.downsample_to=4"])
    assert down_sampled.exit_code == 0, down_sampled.output
    assert (
        "down-sampling carried" in down_sampled.output and "NOT applied" not in down_sampled.output
    )
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {} and export_meta["downsample_to"] == 4
    whole = ["--set", "train.downsample_to=4", "--set", "train.downsample_advantages=whole-group"]
    assert "NOT applied" in CliRunner().invoke(verl_app, [*args, *whole]).output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {"train.downsample_advantages": "whole-group"}
    # dead groups dropped are carried (sgpo.verl.sampler)
    drop = CliRunner().invoke(verl_app, [*args, "--set", "train.drop_equal_groups=true"])
    assert drop.exit_code == 0, drop.output
    assert "dead groups dropped" in drop.output and "NOT applied" not in drop.output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {} and export_meta["drop_equal_groups"] is True
    assert export_meta["drop_equal_denominator"] == "kept"
    # ... and with the whole batch's token-mean denominator (sgpo.verl.sampler scales advantages)
    same_update = ["--set", "train.drop_equal_groups=true"]
    same_update += ["--set", "train.drop_equal_denominator=generated"]
    whole_batch = CliRunner().invoke(verl_app, [*args, *same_update])
    assert whole_batch.exit_code == 0, whole_batch.output
    assert "NOT applied" not in whole_batch.output and "whole batch" in whole_batch.output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {}
    assert export_meta["drop_equal_denominator"] == "generated"
    # profile reuse happens in sgpo's own trainer loop
    reuse = CliRunner().invoke(verl_app, [*args, "--set", "train.reuse_profile=true"])
    assert "NOT applied" in reuse.output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {"train.reuse_profile": True}
    # plain prompts: verl formats every prompt with the model's chat template
    plain_text = CliRunner().invoke(verl_app, [*args, "--set", "model.use_chat_template=false"])
    assert plain_text.exit_code == 0 and "NOT applied" in plain_text.output
    assert read_table(tmp_path / "t.pq")[1]["export"]["not_carried"] == {
        "model.use_chat_template": False
    }
    # small groups on a streak are decided in sgpo's own scheduler
    small = CliRunner().invoke(verl_app, [*args, "--set", "train.streak_group_size=2"])
    assert "NOT applied" in small.output
    assert read_table(tmp_path / "t.pq")[1]["export"]["not_carried"] == {
        "train.streak_group_size": 2
    }
    assert export_meta["history_explore"] == 1.0  # no skips
    # the training groups' own temperature is the launch's rollout.temperature, not the export's
    hot = CliRunner().invoke(verl_app, [*args, "--set", "train.rollout_temperature=1.2"])
    assert "NOT applied" in hot.output
    assert read_table(tmp_path / "t.pq")[1]["export"]["not_carried"] == {
        "train.rollout_temperature": 1.2
    }
    # skips on history are carried (sgpo.verl.sampler), with steps filled as history_fill does
    skips = ["--set", "train.history_explore=0.5", "--set", "train.history_min_streak=2"]
    filled = [*skips, "--set", "train.history_fill=true"]
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task("seed=11")})
    carried = CliRunner().invoke(verl_app, [*args, *filled, "--set", "seed=11"])
    assert carried.exit_code == 0, carried.output
    assert "skip on history carried" in carried.output and "NOT applied" not in carried.output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {}
    history = {k: v for k, v in export_meta.items() if k.startswith("history_")}
    assert history == {
        "history_explore": 0.5,
        "history_min_streak": 2,
        "history_target": 0.0,
        "history_seed": 11,
    }
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task()})
    target = [*skips, "--set", "train.history_target=0.3"]  # a target implies the fill
    assert "NOT applied" not in CliRunner().invoke(verl_app, [*args, *target]).output
    assert read_table(tmp_path / "t.pq")[1]["export"]["history_target"] == 0.3
    # verl's HistorySkip counts every all-equal group: the solved-only streak is not carried
    solved = [*filled, "--set", "train.history_streak=solved"]
    assert "NOT applied" in CliRunner().invoke(verl_app, [*args, *solved]).output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {"train.history_streak": "solved"}
    # without history_fill sgpo trains a short step at each epoch's end; verl fills it
    unfilled = CliRunner().invoke(verl_app, [*args, *skips])
    assert "NOT applied" in unfilled.output
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["not_carried"] == {"train.history_fill": False}
    # a baseline's data is not down-sampled nor skipped by the sgpo config's settings
    baseline = [*args, "--set", "train.downsample_to=4", "--fixed-group-size", "8", *filled]
    assert CliRunner().invoke(verl_app, baseline).exit_code == 0
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["downsample_to"] == 0 and export_meta["history_explore"] == 1.0
    baseline_drop = [*args, *same_update, "--fixed-group-size", "8"]
    assert CliRunner().invoke(verl_app, baseline_drop).exit_code == 0
    export_meta = read_table(tmp_path / "t.pq")[1]["export"]
    assert export_meta["drop_equal_groups"] is False
    assert export_meta["drop_equal_denominator"] == "kept"


def test_record_run_refuses_to_resume_a_run_dir_with_other_settings(tmp_path):
    from sgpo.verl.runs import RunMismatch, load_run, record_run

    data = tmp_path / "train.parquet"
    data.write_bytes(b"rows")
    logger = "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="
    record_run(tmp_path, "grpo", ["data.train_batch_size=4", logger + "a.jsonl"], data)
    record_run(tmp_path, "grpo", ["data.train_batch_size=4", logger + "b.jsonl"], data)  # resume
    with pytest.raises(RunMismatch, match=r"overrides \(data.train_batch_size: 4 -> 8\);"):
        record_run(tmp_path, "grpo", ["data.train_batch_size=8"], data)
    # more epochs, other checkpoints or less memory: the same run, resumed and recorded so
    longer = ["data.train_batch_size=4", "trainer.total_epochs=3", "+trainer.save_freq=5"]
    record_run(tmp_path, "grpo", longer, data)
    tracked = [*longer, "trainer.logger=[console,wandb,file]"]  # a tracker added
    record_run(tmp_path, "grpo", tracked, data)
    assert load_run(tmp_path)["config"]["trainer.total_epochs"] == "3"
    with pytest.raises(RunMismatch, match=r"trainer.total_epochs.* may change"):
        record_run(tmp_path, "grpo", [*longer, "actor_rollout_ref.actor.optim.lr=1"], data)
    record_run(tmp_path, "grpo", ["data.train_batch_size=4"], data)
    # hydra's deletion (~key, no value) is an override of the run like any other
    deleted = ["data.train_batch_size=4", "~trainer.rollout_data_dir"]
    with pytest.raises(RunMismatch, match=r"trainer.rollout_data_dir"):
        record_run(tmp_path, "grpo", deleted, data)
    record_run(tmp_path, "grpo", ["data.train_batch_size=4"], data)
    data.write_bytes(b"other rows")
    with pytest.raises(RunMismatch, match="data_sha256"):
        record_run(tmp_path, "grpo", ["data.train_batch_size=4"], data)
    assert load_run(tmp_path)["config"] == {"data.train_batch_size": "4"}
    # the validation data's content is part of the run: its curve is read as one
    other = tmp_path / "other"
    other.mkdir()
    val = other / "val.parquet"
    val.write_bytes(b"held out")
    record_run(other, "grpo", ["data.train_batch_size=4"], data, val_data=val)
    record_run(other, "grpo", ["data.train_batch_size=4"], data, val_data=val)  # resume
    val.write_bytes(b"another held out")
    with pytest.raises(RunMismatch, match="val_data_sha256"):
        record_run(other, "grpo", ["data.train_batch_size=4"], data, val_data=val)
    # a run recorded before the field (an older sgpo) resumes; one recorded with it does not
    # resume without it (after which any held-out set would pass)
    data.write_bytes(b"rows")
    record_run(tmp_path, "grpo", ["data.train_batch_size=4"], data, val_data=val)
    with pytest.raises(RunMismatch, match="val_data_sha256"):
        record_run(tmp_path, "grpo", ["data.train_batch_size=4"], data)
    (tmp_path / "run.json").write_text("{}")  # a damaged record: every field differs
    with pytest.raises(RunMismatch, match="data_sha256"):
        record_run(tmp_path, "grpo", ["data.train_batch_size=4"], data)


def test_record_run_claims_every_destination_before_moving_any(tmp_path):
    from sgpo.verl.runs import record_run

    data, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    data.write_bytes(b"rows")
    val.write_bytes(b"the user's own file")  # not sgpo's: never replaced
    staged, staged_val = tmp_path / "new-train", tmp_path / "new-val"
    staged.write_bytes(b"new rows")
    staged_val.write_bytes(b"new held out")
    with pytest.raises(FileExistsError):
        record_run(tmp_path, "grpo", [], data, staged=staged, val_data=val, staged_val=staged_val)
    assert data.read_bytes() == b"rows" and val.read_bytes() == b"the user's own file"


def demo_plan(tmp_path: Path, *overrides: str) -> Path:
    """A plan whose metadata records demo.yaml's sampling (as sgpo profile/plan write it), and a
    tokenizer with a chat template as the policy (verl formats prompts with it)."""
    from sgpo.config import load_config
    from sgpo.embedded import build_char_tokenizer

    sampling = load_config(DEMO, None).sampling.model_dump(mode="json")
    task = builtin_task(*overrides)  # the launch exports with these overrides and no config
    meta = {"task": task, "model": str(tmp_path / "model"), "sampling": sampling}
    meta |= {"shape": {"n_params": 1000, "n_layers": 2, "d_attn": 16}, "profile_flops": 7.0}
    write_plan(tmp_path / "plan.parquet", fake_plan(), meta)
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "plan.parquet"


def run_launch(  # noqa: ANN201
    tmp_path: Path, script: str, *extra: str, cwd: Path | None = None, **env: str
):
    import os
    import subprocess
    import sys

    settings = {
        "PLAN": str(tmp_path / "plan.parquet"),
        "OUT": str(tmp_path / "runs"),
        "PYTHON": sys.executable,
        "PRINT_OVERRIDES": "1",
        "GPUS_PER_NODE": "2",
        "TRAIN_BATCH_SIZE": "4",
    }
    return subprocess.run(
        ["bash", str(LAUNCH_DIR / script), *extra],
        env=os.environ | settings | env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_a_plan_profiled_from_a_relative_model_path_is_that_model(tmp_path):
    demo_plan(tmp_path)
    rows, meta = read_table(tmp_path / "plan.parquet")
    write_table(tmp_path / "plan.parquet", rows, meta | {"model": "model"})  # as profiled here
    launched = run_launch(tmp_path, "run_sgpo.sh", cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    assert "note: MODEL=" not in launched.stderr
    (tmp_path / "copy").symlink_to(tmp_path / "model")
    elsewhere = run_launch(tmp_path, "run_sgpo.sh", cwd=tmp_path, MODEL="copy")
    assert "note: MODEL=" in elsewhere.stderr and "profiled with model;" in elsewhere.stderr


def test_sgpo_set_takes_values_with_spaces_quoted_as_a_shell_does(tmp_path):
    demo_plan(tmp_path)
    quoted = run_launch(tmp_path, "run_sgpo.sh", SGPO_SET='model.system_prompt="Add them." seed=0')
    assert quoted.returncode == 0, quoted.stderr
    rows, _ = read_table(tmp_path / "runs" / "sgpo" / "train.parquet")
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Add them."}
    unclosed = run_launch(tmp_path, "run_sgpo.sh", SGPO_SET='model.system_prompt="Add them.')
    assert unclosed.returncode == 2 and "not shell words (No closing quotation)" in (
        unclosed.stderr
    )
    assert "Traceback" not in unclosed.stderr
    # a value holding a newline stays one word (split, its second line was a --set of its own);
    # blanks alone are no --set
    newline = {"SGPO_SET": "model.system_prompt='Add\nthem.'", "OUT": str(tmp_path / "other")}
    two_lines = run_launch(tmp_path, "run_sgpo.sh", **newline)
    assert two_lines.returncode == 0, two_lines.stderr
    rows, _ = read_table(tmp_path / "other" / "sgpo" / "train.parquet")
    assert rows[0]["prompt"][0]["content"] == "Add them."  # one --set, its YAML folding the line
    blank = run_launch(tmp_path, "run_sgpo.sh", SGPO_SET=" ")
    assert blank.returncode == 0, blank.stderr


def verl_stand_in(tmp_path: Path) -> Path:
    """A python that runs sgpo but stands in for verl's trainer (the launch's last step)."""
    import sys

    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        '[ "$2" = verl.trainer.main_ppo ] && exit 0\n'
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    return fake


def test_a_refused_launch_leaves_the_recorded_runs_data_as_it_was(tmp_path):
    demo_plan(tmp_path)
    fake = verl_stand_in(tmp_path)
    run_dir = tmp_path / "runs" / "grpo"
    launched = run_launch(tmp_path, "run_grpo.sh", PRINT_OVERRIDES="0", PYTHON=str(fake))
    assert launched.returncode == 0, launched.stderr
    recorded = (run_dir / "train.parquet").read_bytes()
    assert (run_dir / "run.json").exists()
    # other groups (other data and overrides): refused before the run's data is touched,
    # by a launch and by a dry run alike
    for dry in ("0", "1"):
        refused = run_launch(
            tmp_path, "run_grpo.sh", PRINT_OVERRIDES=dry, PYTHON=str(fake), GROUP_SIZE="4"
        )
        assert refused.returncode == 2, refused.stderr
        assert "describes an earlier run with other data_sha256" in " ".join(refused.stderr.split())
        assert refused.stdout == ""
        assert (run_dir / "train.parquet").read_bytes() == recorded
    # the same command again resumes it; no staging folder is left behind
    resumed = run_launch(tmp_path, "run_grpo.sh", PRINT_OVERRIDES="0", PYTHON=str(fake))
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "train.parquet").read_bytes() == recorded
    assert not list(run_dir.glob(".sgpo-export.*"))


def test_acceptance_launch_checks_the_plans_sampling_then_prints_resumable_overrides(tmp_path):
    demo_plan(tmp_path)
    for variable, value, profiled in (
        ("MAX_RESPONSE_LENGTH", "1024", "max_new_tokens=7"),
        ("TEMPERATURE", "0.7", "temperature=1.0"),
    ):
        refused = run_launch(tmp_path, "run_sgpo.sh", **{variable: value})
        assert refused.returncode == 2, refused.stderr
        assert f"{variable}={value}" in refused.stderr and profiled in refused.stderr
        assert refused.stdout == ""
    result = run_launch(tmp_path, "run_sgpo.sh", MAX_RESPONSE_LENGTH="7", TEMPERATURE="1.0")
    assert result.returncode == 0, result.stderr
    assert "checks passed" in result.stderr  # the export and every check ran first
    overrides = dict(o.lstrip("+").split("=", 1) for o in result.stdout.splitlines())
    run_dir = tmp_path / "runs" / "sgpo"
    assert int(overrides["trainer.save_freq"]) > 0
    assert overrides["trainer.resume_mode"] == "auto"
    assert overrides["trainer.experiment_name"] == "sgpo"  # no timestamp: a rerun resumes
    assert overrides["trainer.default_local_dir"] == str(run_dir / "checkpoints")
    assert overrides["actor_rollout_ref.rollout.temperature"] == "1.0"
    assert overrides["data.max_response_length"] == "7"
    assert "train.lr" not in result.stderr  # no SGPO_CONFIG: nothing of it to leave unread
    # an extra argument for a key the launch sets and checks would win in verl, unchecked
    hotter = "actor_rollout_ref.rollout.temperature=0.5"
    for prefix in ("", "+", "++", "~"):  # hydra's set, append, force-set and delete
        refused = run_launch(tmp_path, "run_sgpo.sh", prefix + hotter, "trainer.val_before_train=0")
        assert refused.returncode == 2 and refused.stdout == ""
        assert f"{prefix}{hotter}: this launch sets actor_rollout_ref.rollout.temperature" in (
            " ".join(refused.stderr.split())
        )
    allowed = run_launch(tmp_path, "run_sgpo.sh", "+" + hotter, ALLOW_OVERRIDE="1")
    assert allowed.returncode == 0 and allowed.stdout.splitlines()[-1] == "+" + hotter
    extra = run_launch(tmp_path, "run_sgpo.sh", "actor_rollout_ref.actor.clip_ratio_high=0.28")
    assert extra.returncode == 0 and extra.stdout.splitlines()[-1].endswith("=0.28")
    # local paths reach verl absolute (its Ray workers start elsewhere); a hub id as it is
    import os

    # a plan made with `sgpo plan --set ...` is exported with the same --set (SGPO_SET)
    set_ = run_launch(tmp_path, "run_sgpo.sh", SGPO_SET="train.downsample_to=2 seed=0")
    assert set_.returncode == 0, set_.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in set_.stdout.splitlines())
    assert overrides["trainer.v1.sampler.sampler_kwargs.downsample_to"] == "2"
    # the reward workers' acc counts successes as the export does, on rows it did not write too
    # (VAL_DATA's)
    success_env = "ray_kwargs.ray_init.runtime_env.env_vars.SGPO_VERIFIER_SUCCESS_THRESHOLD"
    assert overrides[success_env] == "'0.5'"
    export_env = "ray_kwargs.ray_init.runtime_env.env_vars.SGPO_VERIFIER_EXPORT"
    assert overrides[export_env] == f"'{tmp_path / 'runs' / 'sgpo' / 'train.parquet'}'"
    graded = run_launch(tmp_path, "run_sgpo.sh", SGPO_SET="task.success_threshold=1.0")
    assert graded.returncode == 0, graded.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in graded.stdout.splitlines())
    assert overrides[success_env] == "'1.0'"
    worded = run_launch(tmp_path, "run_sgpo.sh", DOWNSAMPLE_TO="four")
    assert worded.returncode == 2 and "DOWNSAMPLE_TO=four: must be a whole number" in worded.stderr
    model = os.path.relpath(tmp_path / "model")
    relative = run_launch(tmp_path, "run_sgpo.sh", MODEL=model, CHECKPOINT_DIR="ckpt")
    assert relative.returncode == 0, relative.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in relative.stdout.splitlines())
    assert overrides["actor_rollout_ref.model.path"] == str(tmp_path / "model")
    assert overrides["trainer.default_local_dir"] == os.path.join(os.getcwd(), "ckpt")
    configured = run_launch(tmp_path, "run_sgpo.sh", SGPO_CONFIG=str(DEMO), LR="3e-6")
    assert configured.returncode == 0, configured.stderr
    said = " ".join(configured.stderr.split())
    assert "note: training with this launch's LR=3e-6" in said
    assert "SGPO_CONFIG's train.lr, kl_coef, clip, normalize_std" in said


def test_launch_validates_on_the_exported_held_out_split(tmp_path):
    demo_plan(tmp_path)
    val = tmp_path / "runs" / "grpo" / "val.parquet"
    # refused (prompts longer than MAX_PROMPT_LENGTH, the held-out ones named too): nothing
    # of the validation data is left behind
    cut = run_launch(tmp_path, "run_grpo.sh", VAL_DATA="eval", MAX_PROMPT_LENGTH="3")
    assert cut.returncode == 2 and f"{val.parent}/.sgpo-export" in cut.stderr
    assert "(validation): " in " ".join(cut.stderr.split()) and not val.exists()
    result = run_launch(tmp_path, "run_grpo.sh", VAL_DATA="eval")
    assert result.returncode == 0, result.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in result.stdout.splitlines())
    assert overrides["data.val_files"] == str(val) and overrides["trainer.test_freq"] != "-1"
    rows, meta = read_table(val)
    assert meta["export"]["split"] == "eval" and len(rows) == meta["export"]["rows"] > 0
    # a run recorded with one held-out set, resumed with another, would mix two curves in one
    # run: refused
    fake = verl_stand_in(tmp_path)
    mine = tmp_path / "mine.parquet"
    write_table(mine, rows, meta)
    run = {"VAL_DATA": str(mine), "EXPERIMENT": "mine", "PRINT_OVERRIDES": "0", "PYTHON": str(fake)}
    launched = run_launch(tmp_path, "run_grpo.sh", **run)
    assert launched.returncode == 0, launched.stderr
    assert run_launch(tmp_path, "run_grpo.sh", **run).returncode == 0  # the same: resumed
    write_table(mine, rows[:7], meta)
    other = run_launch(tmp_path, "run_grpo.sh", **run)
    assert other.returncode == 2 and "val_data_sha256" in other.stderr
    skipped = run_launch(tmp_path, "run_sgpo.sh", VAL_DATA="eval", SKIP_EXPORT="1")
    assert skipped.returncode == 2 and "was never exported" in skipped.stderr
    # verl reads json too: launched, its prompts not checked; a path that is not there: refused
    (tmp_path / "mine.jsonl").write_text('{"prompt": [{"role": "user", "content": "1+1="}]}\n')
    jsonl = run_launch(tmp_path, "run_grpo.sh", VAL_DATA=str(tmp_path / "mine.jsonl"))
    assert jsonl.returncode == 0, jsonl.stderr
    missing = run_launch(tmp_path, "run_grpo.sh", VAL_DATA="nowhere/val.parquet")
    assert (
        missing.returncode == 2 and "VAL_DATA=nowhere/val.parquet: no such file" in missing.stderr
    )
    # the export and the held-out split are staged apart: one named as the other is fine
    named = run_launch(
        tmp_path, "run_grpo.sh", VAL_DATA="eval", DATA=str(tmp_path / "d" / "val.parquet")
    )
    assert named.returncode == 0, named.stderr
    assert read_table(tmp_path / "d" / "val.parquet")[1]["export"].get("split") is None


def test_export_refuses_a_held_out_split_it_cannot_write_before_writing_anything(
    tmp_path, monkeypatch
):
    from sgpo.verl import export

    def no_held_out(*args: object, **kwargs: object) -> None:
        raise DataError("the task has no eval queries")

    monkeypatch.setattr(export, "export_held_out_for_config", no_held_out)
    write_plan(tmp_path / "plan.parquet", fake_plan(), {"task": builtin_task()})
    args = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(tmp_path / "t.pq")]
    result = CliRunner().invoke(verl_app, [*args, "--val-out", str(tmp_path / "val.pq")])
    assert result.exit_code == 2 and "refused: the task has no eval queries" in result.output
    assert not (tmp_path / "t.pq").exists()


def test_launch_reads_the_exports_down_sampling_and_largest_step(tmp_path):
    demo_plan(tmp_path)
    sizes = [r.group_size for r in kept_in_order(fake_plan())]
    largest = step_summary(sizes, 4)["rollouts_per_step_max"]
    # one update per step: one mini-batch holds the most a step TRAINS, groups cut to 2
    trained = step_summary([min(g, 2) for g in sizes], 4)["rollouts_per_step_max"]
    assert -(-trained // 4) < -(-largest // 4)  # the plan has groups above 2 to cut
    result = run_launch(tmp_path, "run_sgpo.sh", ONE_UPDATE_PER_STEP="1", DOWNSAMPLE_TO="2")
    assert result.returncode == 0, result.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in result.stdout.splitlines())
    assert overrides["actor_rollout_ref.rollout.n"] == str(-(-trained // 4))
    assert overrides["trainer.v1.sampler.sampler_kwargs.downsample_to"] == "2"
    # the GRPO control with the same down-sampling: a mini-batch of what a step trains, 4 x 2
    # (4 x 8 would be padded back to 32 with dummy sequences)
    control = run_launch(tmp_path, "run_grpo.sh", DOWNSAMPLE_TO="2", GROUP_SIZE="8")
    assert control.returncode == 0, control.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in control.stdout.splitlines())
    assert overrides["actor_rollout_ref.rollout.n"] == "2"
    assert overrides["actor_rollout_ref.actor.ppo_mini_batch_size"] == "4"
    # 4 x 3 does not split over 8 GPUs: padded as before, and said, not refused
    uneven = run_launch(tmp_path, "run_grpo.sh", DOWNSAMPLE_TO="3", GPUS_PER_NODE="8")
    assert uneven.returncode == 0, uneven.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in uneven.stdout.splitlines())
    assert overrides["actor_rollout_ref.rollout.n"] == "8"
    assert "does not split over 8 GPUs" in uneven.stderr
    # one update per step is the default, as sgpo train and the grpo/dapo launches take
    whole = run_launch(tmp_path, "run_sgpo.sh")
    assert whole.returncode == 0, whole.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in whole.stdout.splitlines())
    assert overrides["actor_rollout_ref.rollout.n"] == str(-(-largest // 4))
    assert overrides["actor_rollout_ref.actor.ppo_mini_batch_size"] == "4"
    several = run_launch(tmp_path, "run_sgpo.sh", ONE_UPDATE_PER_STEP="0")
    assert several.returncode == 0, several.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in several.stdout.splitlines())
    assert overrides["actor_rollout_ref.rollout.n"] == "1"  # one update per 4 rollouts
    # a mini-batch the user gives is kept (several updates), and the script says so
    given = run_launch(tmp_path, "run_sgpo.sh", PPO_MINI_BATCH_SIZE="2")
    assert given.returncode == 0, given.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in given.stdout.splitlines())
    assert overrides["actor_rollout_ref.actor.ppo_mini_batch_size"] == "2"
    assert overrides["actor_rollout_ref.rollout.n"] == "1"
    assert "ONE_UPDATE_PER_STEP=0" in given.stderr
    # the whole batch's denominator needs that one mini-batch: the default with it, refused
    # when turned off
    same_update = {"DROP_EQUAL_GROUPS": "1", "DROP_EQUAL_DENOMINATOR": "generated"}
    accepted = run_launch(tmp_path, "run_sgpo.sh", **same_update)
    assert accepted.returncode == 0, accepted.stderr
    one_update = dict(o.lstrip("+").split("=", 1) for o in accepted.stdout.splitlines())
    assert one_update["actor_rollout_ref.rollout.n"] == str(-(-largest // 4))
    refused = run_launch(tmp_path, "run_sgpo.sh", ONE_UPDATE_PER_STEP="0", **same_update)
    assert refused.returncode == 2 and "one mini-batch per step" in refused.stderr
    assert f"up to {largest} rollouts" in refused.stderr
    data = str(tmp_path / "runs/sgpo/train.parquet")
    info = CliRunner().invoke(verl_app, ["data-info", "--data", data, "--train-batch-size", "4"])
    # the export sets neither down-sampling nor skips nor drops
    assert info.exit_code == 0 and info.output.split() == [
        "0",
        str(largest),
        "1.0",
        "1",
        "0.0",
        "0",
        "0",
        "kept",
        "0.5",
    ]
    assert "trainer.v1.sampler.sampler_kwargs.drop_equal_groups" not in overrides
    dropped = run_launch(tmp_path, "run_grpo.sh", DROP_EQUAL_GROUPS="1")
    assert dropped.returncode == 0, dropped.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in dropped.stdout.splitlines())
    assert overrides["trainer.v1.sampler.custom_sampler.name"] == "DownsampleReplayBuffer"
    assert overrides["trainer.v1.sampler.sampler_kwargs.drop_equal_groups"] == "true"
    assert "trainer.v1.sampler.sampler_kwargs.downsample_to" not in overrides
    assert "trainer.v1.sampler.sampler_kwargs.drop_equal_denominator" not in overrides
    assert overrides["algorithm.adv_estimator"] == "grpo"
    for script, value in (("run_dapo.sh", "1"), ("run_grpo.sh", "yes")):
        refused = run_launch(tmp_path, script, DROP_EQUAL_GROUPS=value)
        assert refused.returncode == 2 and "DROP_EQUAL_GROUPS" in refused.stderr
    # GRPO's own update with the dead groups' training passes skipped
    same = run_launch(
        tmp_path, "run_grpo.sh", DROP_EQUAL_GROUPS="1", DROP_EQUAL_DENOMINATOR="generated"
    )
    assert same.returncode == 0, same.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in same.stdout.splitlines())
    assert overrides["trainer.v1.sampler.sampler_kwargs.drop_equal_denominator"] == "generated"
    assert overrides["algorithm.adv_estimator"] == WHOLE_BATCH_ESTIMATOR
    for refused_env in (
        {"DROP_EQUAL_DENOMINATOR": "generated"},  # nothing dropped
        {"DROP_EQUAL_DENOMINATOR": "all"},
        {
            "DROP_EQUAL_GROUPS": "1",
            "DROP_EQUAL_DENOMINATOR": "generated",
            "LOSS_AGG_MODE": "seq-mean-token-mean",
        },
        # two mini-batches a step: verl would normalise each by its own tokens
        {
            "DROP_EQUAL_GROUPS": "1",
            "DROP_EQUAL_DENOMINATOR": "generated",
            "PPO_MINI_BATCH_SIZE": "2",
        },
    ):
        refused = run_launch(tmp_path, "run_grpo.sh", **refused_env)
        assert refused.returncode == 2 and "DROP_EQUAL_DENOMINATOR" in refused.stderr, refused_env


def test_launch_applies_the_exports_skip_on_history_with_verls_dataset_and_buffer(tmp_path):
    plan, data = demo_plan(tmp_path, "seed=4"), tmp_path / "history.parquet"
    settings = ["seed=4", "train.downsample_to=2", "train.history_explore=0.5"]
    settings += ["train.history_min_streak=2", "train.history_fill=true"]
    sets = [arg for setting in settings for arg in ("--set", setting)]
    export = ["export", "--plan", str(plan), "--out", str(data), *sets]
    assert CliRunner().invoke(verl_app, export).exit_code == 0
    result = run_launch(tmp_path, "run_sgpo.sh", SKIP_EXPORT="1", DATA=str(data))
    assert result.returncode == 0, result.stderr
    overrides = dict(o.lstrip("+").split("=", 1) for o in result.stdout.splitlines())
    assert overrides["trainer.v1.sampler.custom_sampler.name"] == "HistoryReplayBuffer"
    assert overrides["trainer.v1.sampler.sampler_kwargs.downsample_to"] == "2"
    assert overrides["data.custom_cls.path"] == "pkg://sgpo.verl.sampler"
    assert overrides["data.custom_cls.name"] == "HistoryDataset"
    history = {k: v for k, v in overrides.items() if k.startswith("data.sgpo_history.")}
    assert history == {
        "data.sgpo_history.explore": "0.5",
        "data.sgpo_history.min_streak": "2",
        "data.sgpo_history.target": "0.0",
        "data.sgpo_history.seed": "4",
    }
    assert overrides["data.gen_batch_size"] == "1"
    assert overrides["data.dataloader_num_workers"] == "0"


def test_flops_table_for_sgpo_grpo_and_dapo_runs_counts_padding(tmp_path, monkeypatch):
    from sgpo.verl import cli
    from sgpo.verl.runs import record_run

    monkeypatch.setattr(cli.console, "width", 250)  # the whole table on one line per run

    demo_plan(tmp_path)
    runs, mini_batch = [], {}
    for method in ("sgpo", "grpo", "dapo"):
        result = run_launch(tmp_path, f"run_{method}.sh", GROUP_SIZE="4", GPUS_PER_NODE="4")
        assert result.returncode == 0, result.stderr
        run_dir = tmp_path / "runs" / method
        overrides = result.stdout.splitlines()
        given = dict(o.lstrip("+").split("=", 1) for o in overrides)
        mini_batch[method] = int(given["actor_rollout_ref.actor.ppo_mini_batch_size"]) * int(
            given["actor_rollout_ref.rollout.n"]
        )
        record_run(run_dir, method, overrides, run_dir / "train.parquet", tmp_path / "plan.parquet")
        lines = verl_log_lines(2)
        if method == "dapo":
            lines[1]["data"]["training/filter_groups/evicted_samples"] = 2
        (run_dir / "metrics" / "1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        runs += ["--run", str(run_dir)]
    out = tmp_path / "new" / "flops.jsonl"  # its folder made when it is written
    result = CliRunner().invoke(verl_app, ["flops", *runs, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    by_run = {name: [r for r in rows if r["run"] == name] for name in ("sgpo", "grpo", "dapo")}
    # batch multiple lcm(4 GPUs, mini-batch x rollout.n): sGPO's variable steps get padded up to
    # its one mini-batch per step, sized for its largest step
    multiple = math.lcm(4, mini_batch["sgpo"])
    sgpo_step = by_run["sgpo"][1]
    assert mini_batch["sgpo"] > sgpo_step["rollouts_trained"]  # the step is not the largest
    assert sgpo_step["padding_sequences"] == (-sgpo_step["rollouts_trained"]) % multiple
    grpo_step = by_run["grpo"][1]
    assert grpo_step["rollouts_trained"] == 16 and grpo_step["padding_sequences"] == 0
    assert by_run["dapo"][1]["rollouts_discarded"] == 2 * 4
    assert by_run["sgpo"][0]["flops_profile_cum"] == 7.0  # only sGPO profiled
    assert by_run["grpo"][0]["flops_profile_cum"] == 0.0
    for column in ("padding seqs", "profile", "rollout", "logprob", "train", "of which padding"):
        assert column in result.output
    # a column per run: whole in 80 columns (13 columns of a row per run were cut to "3.…")
    assert "…" not in result.output
    total = next(line for line in result.output.splitlines() if line.startswith("│ total"))
    assert len(re.findall(r"\d\.\d{3}e[+-]\d+", total)) == 3


def test_verl_readme_names_every_variant_setting_carried_or_not():
    # item 8 of examples/verl/README.md is where a verl user learns what the launch drops
    from sgpo.config import VARIANT_TRAIN_SETTINGS

    readme = (Path(__file__).resolve().parents[1] / "examples/verl/README.md").read_text()
    item_8 = readme[readme.index("\n8. **") : readme.index("\n9. **")]
    named = set(re.findall(r"`(?:train\.)?(\w+)`", item_8))
    # these only qualify a setting named there (its rounds, its pilot's rule, its growth step)
    qualifiers = {
        "refill_max_rounds",
        "pilot_ends",
        "grow_round",
        "grow_train",
        "early_group_steps",
    }
    assert set(VARIANT_TRAIN_SETTINGS) - named <= qualifiers


def test_the_check_refuses_responses_past_the_models_context(tmp_path):
    """verl pads prompts without spending positions on the padding: what must fit the model's
    context is the longest prompt and MAX_RESPONSE_LENGTH, checked where the model's config
    declares a context (max_position_embeddings, without rope scaling)."""
    from transformers import LlamaConfig

    demo_plan(tmp_path)
    out = tmp_path / "t.pq"
    export = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(out)]
    assert CliRunner().invoke(verl_app, export).exit_code == 0
    check = ["check", "--data", str(out), "--train-batch-size", "4"]
    check += ["--model", str(tmp_path / "model"), "--max-prompt-length", "512"]
    # a tokenizer alone: no context to compare with
    assert CliRunner().invoke(verl_app, [*check, "--max-response-length", "1000"]).exit_code == 0
    LlamaConfig(max_position_embeddings=64).save_pretrained(tmp_path / "model")
    refused = CliRunner().invoke(verl_app, [*check, "--max-response-length", "60"])
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "context of 64 positions (max_position_embeddings)" in said
    longest = int(said.split("the longest prompt (")[1].split(" tokens")[0])
    fits = CliRunner().invoke(verl_app, [*check, "--max-response-length", str(64 - longest)])
    assert fits.exit_code == 0, fits.output  # MAX_PROMPT_LENGTH=512 itself is not counted
    stretched = LlamaConfig(
        max_position_embeddings=64, rope_scaling={"type": "linear", "factor": 4.0}
    )
    stretched.save_pretrained(tmp_path / "model")
    assert CliRunner().invoke(verl_app, [*check, "--max-response-length", "60"]).exit_code == 0


def test_the_check_compares_only_the_sampling_it_is_given(tmp_path):
    """`check --plan` without --temperature, --top-p or --max-response-length (run by hand,
    not by the launch) compares the settings given and no others."""
    demo_plan(tmp_path)
    out = tmp_path / "t.pq"
    export = ["export", "--plan", str(tmp_path / "plan.parquet"), "--out", str(out)]
    assert CliRunner().invoke(verl_app, export).exit_code == 0
    check = ["check", "--data", str(out), "--train-batch-size", "4"]
    check += ["--plan", str(tmp_path / "plan.parquet")]
    alone = CliRunner().invoke(verl_app, check)
    assert alone.exit_code == 0, alone.output
    hotter = CliRunner().invoke(verl_app, [*check, "--temperature", "1.7"])
    said = " ".join(hotter.output.split())
    assert hotter.exit_code == 2 and "TEMPERATURE=1.7 (--temperature) but the plan was" in said
    assert "top_p" not in said and "max_new_tokens" not in said


def test_verl_run_flops_refuse_a_step_with_one_mean_length_of_two():
    """verl logs a step's prompt and response mean lengths together: a line with one alone is
    damaged, and its step's FLOPs cannot be counted; it was skipped unsaid."""
    records = verl_log_lines(2)
    del records[2]["data"]["prompt_length/mean"]
    with pytest.raises(DataError, match=r"step 2: no field 'prompt_length/mean'"):
        verl_run_flops(records, SHAPE, use_reference=False, ppo_epochs=1)


def test_flops_of_a_recorded_run_refuse_data_exported_again_since(tmp_path):
    """A recorded run's FLOPs count its steps' rollouts by its data's group sizes: data
    replaced since (an export written again into the run's folder) would count another run's,
    so the run's recorded sha256 is checked."""
    from sgpo.verl.export import export_verl_parquet
    from sgpo.verl.runs import load_run, record_run, run_flops

    run_dir = tmp_path / "run"
    data = run_dir / "train.parquet"
    run_dir.mkdir()
    plan = keeping_every_row([f"train:{i}" for i in range(4)])
    export_verl_parquet(plan, {}, data, "sgpo/addition")
    record_run(run_dir, "grpo", ["data.train_batch_size=2"], data)
    (run_dir / "metrics").mkdir()
    lines = "".join(json.dumps(x) + "\n" for x in verl_log_lines(2))
    (run_dir / "metrics" / "1.jsonl").write_text(lines)
    assert [r["rollouts"] for r in run_flops(load_run(run_dir), SHAPE)] == [0, 8, 8]
    export_verl_parquet(plan, {}, data, "sgpo/addition", fixed_group_size=8)
    with pytest.raises(DataError, match=r"train.parquet is not the data this run was recorded"):
        run_flops(load_run(run_dir), SHAPE)


def test_flops_of_a_metrics_file_read_the_plan_through_its_verl_export(tmp_path):
    """An export carries its plan's metadata: given as --plan it gives the model's shape and
    the profile's FLOPs as the plan does, where it was asked for --model."""
    from dataclasses import asdict

    meta = {"shape": asdict(SHAPE), "profile_flops": 7.0}
    export = export_verl_parquet(fake_plan(), meta, tmp_path / "t.parquet", "sgpo/x")
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in verl_log_lines(2)))
    out = tmp_path / "flops.jsonl"
    result = CliRunner().invoke(
        verl_app, ["flops", str(log), "--plan", str(export), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[-1]["flops_profile_cum"] == 7.0
