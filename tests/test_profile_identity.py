"""What makes a profile the one a config would make: execution settings (sampling.batch_size) do
not count for resume and merge; sgpo plan and train.reuse_profile refuse a shard's profile, one
made with other sample-changing settings, and tables that are not a usable profile; a plan that
keeps nothing is not written; sgpo profile merge takes the directory's lock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_run import stop_profile_at_chunk, tiny_tree, write_config
from typer.testing import CliRunner

import sgpo.profile
import sgpo.rundir
from sgpo.cli import app
from sgpo.config import RunConfig
from sgpo.errors import DataError, RunDirBusyError
from sgpo.io import read_table, write_table
from sgpo.plan import run_plan
from sgpo.profile import PROFILE_FILE, merge_profiles, run_profile
from sgpo.rundir import CHAT_TEMPLATE_KEY
from sgpo.runfiles import PLAN_FILE
from sgpo.schedule import scheduled_queries
from sgpo.tasks import load_task
from sgpo.train import Trainer

runner = CliRunner()


def tiny_config(root: Path, **sections: dict) -> RunConfig:
    tree = tiny_tree(root / "models", task={"addition": {"n_train": 8}}, **sections)
    return RunConfig.model_validate(tree)


def with_overrides(config: RunConfig, **dotted: object) -> RunConfig:
    tree = config.model_dump(mode="json")
    for key, value in dotted.items():
        *path, last = key.split(".")
        node = tree
        for part in path:
            node = node[part]
        node[last] = value
    return RunConfig.model_validate(tree)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("identity")
    config = tiny_config(root)
    whole = run_profile(config, root / "whole")
    shards = [run_profile(config, root / f"shard{i}", shard=(i, 2)) for i in range(2)]
    return SimpleNamespace(root=root, config=config, whole=whole, shards=shards)


# ---------------------------------------------------------------- 1: batch size is no identity


def interrupted_after_two_chunks(tmp_path: Path) -> tuple[RunConfig, Path]:
    """A profile of chunks of 2 queries stopped as its third chunk began."""
    config = tiny_config(tmp_path, profile={"chunk_size": 2})
    out = tmp_path / "p"
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(config, out)
    return config, out


def test_resume_with_another_batch_size(tiny, tmp_path, monkeypatch, caplog):
    config, out = interrupted_after_two_chunks(tmp_path)
    # the chunks written with batch_size 64 are resumed with batch_size 3 ...
    resumed = run_profile(with_overrides(config, **{"sampling.batch_size": 3}), out, resume=True)
    assert read_table(resumed)[0] == read_table(tiny.whole)[0]
    # ... and so is the finished table, with yet another: nothing is left, and it says so
    with caplog.at_level("WARNING", logger="sgpo.profile"):
        run_profile(with_overrides(config, **{"sampling.batch_size": 5}), out, resume=True)
    assert "the profile is complete already; nothing left to resume" in caplog.text


def test_a_profile_resumed_without_its_config_reads_the_one_it_ran_under(tiny, tmp_path):
    config_path = write_config(tmp_path / "cfg.yaml", tiny_config(tmp_path).model_dump())
    out = tmp_path / "p"
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        interrupted = runner.invoke(app, ["profile", "-c", str(config_path), "-o", str(out)])
    assert interrupted.exit_code == 130, interrupted.output
    # as `sgpo train --resume DIR`: no -c, the directory's profile_config.yaml
    resumed = runner.invoke(app, ["profile", "-o", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert read_table(out / PROFILE_FILE)[0] == read_table(tiny.whole)[0]
    nothing = runner.invoke(app, ["profile", "-o", str(tmp_path / "none"), "--resume"])
    assert nothing.exit_code == 1 and "nothing to resume there" in nothing.stderr


VERIFIER = "from sgpo.tasks.addition import verify\n\n\ndef score(response, reference):\n"


def test_work_scored_by_a_verifier_is_not_continued_under_its_edited_code(tmp_path, monkeypatch):
    module = tmp_path / "code" / "edited_checks.py"
    module.parent.mkdir()
    module.write_text(VERIFIER + "    return verify(response, reference)\n")
    monkeypatch.syspath_prepend(str(module.parent))
    config = with_overrides(tiny_config(tmp_path), **{"task.verifier": "edited_checks:score"})
    out = tmp_path / "p"
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(config, out)
    module.write_text(VERIFIER + "    return 1.0 - verify(response, reference)\n")
    # its chunks were scored by the code before: not mixed with chunks scored by this one
    with pytest.raises(DataError, match="made with other inputs.*verifier_code_sha256"):
        run_profile(config, out, resume=True)
    module.write_text(VERIFIER + "    return verify(response, reference)\n")
    profile = run_profile(config, out, resume=True)
    # nor is a plan made from a profile the verifier scored before its edit
    module.write_text(VERIFIER + "    return 1.0 - verify(response, reference)\n")
    with pytest.raises(DataError, match="profiled with other settings.*verifier_code_sha256") as e:
        run_plan(config, profile, tmp_path / "plan")
    # the file is named, and no key to set is offered: no key sets a file's code
    assert f"(the code of edited_checks:score, {module})" in str(e.value)
    assert str(e.value).endswith(
        "re-run sgpo profile (and sgpo plan) with it, or put back the weights or verifier "
        "file the profile was made with"
    )


def test_merge_shards_made_with_other_batch_sizes(tiny, tmp_path):
    other = with_overrides(tiny.config, **{"sampling.batch_size": 3})
    shard1 = run_profile(other, tmp_path / "shard1", shard=(1, 2))
    merged = merge_profiles([tiny.shards[0], shard1], tmp_path / "merged")
    assert read_table(merged)[0] == read_table(tiny.whole)[0]


# ------------------------------------------------------------------ 2: a shard is not a profile


def test_plan_refuses_a_shard_profile(tiny, tmp_path):
    with pytest.raises(DataError, match=r"field 'shard' is 0/2.*sgpo profile merge"):
        run_plan(tiny.config, tiny.shards[0], tmp_path)
    assert not (tmp_path / PLAN_FILE).exists()


# ----------------------------------------------------- 3: settings that change what was sampled


@pytest.mark.parametrize(
    ("key", "value", "profiled"),
    [
        ("task.verifier", None, "'bad_verifiers:coin_flip'"),
        ("task.success_threshold", 1.0, "None (the middle of task.verifier_reward_range)"),
        ("model.prompt_template", "Q: {prompt}", "'{prompt}'"),
        ("model.use_chat_template", False, "None"),
        ("model.system_prompt", "Be brief.", "None"),
        ("sampling.temperature", 0.5, "1.0"),
        ("sampling.top_p", 0.9, "1.0"),
        ("sampling.max_new_tokens", 5, "4"),
        ("profile.k", 5, "4"),
    ],
)
def test_plan_refuses_a_profile_made_with_other_settings(tiny, tmp_path, key, value, profiled):
    config = with_overrides(tiny.config, **{key: value})
    with pytest.raises(DataError) as error:
        run_plan(config, tiny.whole, tmp_path)
    message = str(error.value)
    assert str(tiny.whole) in message
    assert f"{key}: profile {profiled}, config {value!r}" in message
    assert not (tmp_path / PLAN_FILE).exists()


def test_plan_accepts_another_batch_size_and_chunk_size(tiny, tmp_path):
    config = with_overrides(tiny.config, **{"sampling.batch_size": 3, "profile.chunk_size": 1})
    run_plan(config, tiny.whole, tmp_path)


def test_plan_refuses_a_first_success_profile_read_as_an_estimate(tiny, tmp_path):
    """Its p_hat is 1 / samples drawn: a config that reads p_hat as an estimate of p (a full or
    both-outcomes profile's) would drop every query solved at its first sample as trivial."""
    first_success = with_overrides(
        tiny.config,
        **{
            "profile.adaptive": True,
            "profile.adaptive_round": 1,
            "profile.adaptive_stop": "first_success",
            "plan.drop_trivial": False,
            "plan.g_min": 4,
            "plan.bucket_width": 1.0,
        },
    )
    profile = run_profile(first_success, tmp_path / "fs")
    run_plan(first_success, profile, tmp_path / "fs")
    full = with_overrides(
        first_success, **{"profile.adaptive": False, "profile.adaptive_stop": "both_outcomes"}
    )
    with pytest.raises(DataError, match="profile.adaptive: profile True, config False"):
        run_plan(full, profile, tmp_path / "full")
    both = with_overrides(first_success, **{"profile.adaptive_stop": "both_outcomes"})
    with pytest.raises(
        DataError, match="profile.adaptive_stop: profile 'first_success', config 'both_outcomes'"
    ):
        run_plan(both, profile, tmp_path / "both")


def test_reuse_refuses_a_plan_profiled_with_other_settings(tiny, tmp_path, monkeypatch):
    reuse = with_overrides(tiny.config, **{"train.reuse_profile": True})
    plan, _ = run_plan(reuse, tiny.whole, tmp_path)
    train = load_task(reuse.task, reuse.seed).train
    scheduled_queries(reuse, train, plan)  # the same settings: fine
    other = with_overrides(reuse, **{"model.prompt_template": "Q: {prompt}"})
    with pytest.raises(DataError, match=r"model.prompt_template: profile '\{prompt\}'"):
        scheduled_queries(other, train, plan)
    # other initial weights at the same path drew other samples
    monkeypatch.setattr(sgpo.rundir, "weights_sha256", lambda source: "0" * 64)
    with pytest.raises(DataError, match=r"model_sha256: profile '[0-9a-f]{64}', config '0{64}'"):
        scheduled_queries(reuse, train, plan)


# ------------------------------------------------------------- 4: tables that are not a profile


def rewrite(path: Path, out: Path, edit) -> Path:
    rows, meta = read_table(path)
    rows, meta = edit(rows, meta)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / PROFILE_FILE, rows, meta)
    return out / PROFILE_FILE


def drop_column(rows, meta):
    return [{k: v for k, v in r.items() if k != "prompt_tokens"} for r in rows], meta


def too_many_correct(rows, meta):
    rows[2]["n_correct"] = rows[2]["k"] + 1
    return rows, meta


def duplicate_id(rows, meta):
    rows[3]["query_id"] = rows[1]["query_id"]
    return rows, meta


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows, meta: ([], meta), "no profiled queries"),
        (drop_column, "column(s) prompt_tokens missing"),
        (too_many_correct, "row 2: fields 'k', 'n_correct' are 4, 5"),
        (duplicate_id, "row 3: field 'query_id': duplicate query id 'add"),
        (duplicate_id, "(first at row 1)"),  # worded as every duplicate id is
    ],
)
def test_plan_names_the_file_of_a_bad_profile(tiny, tmp_path, edit, message):
    profile = rewrite(tiny.whole, tmp_path / "bad", edit)
    config = write_config(tmp_path / "cfg.yaml", tiny.config.model_dump(mode="json"))
    result = runner.invoke(
        app, ["plan", "-c", str(config), "-o", str(tmp_path / "out"), "--profile", str(profile)]
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {profile}" in result.output and message in result.output


def test_plan_refuses_a_plan_given_as_profile(tiny, tmp_path):
    plan, _ = run_plan(tiny.config, tiny.whole, tmp_path / "plan")
    with pytest.raises(DataError, match="is a plan .* not a profile"):
        run_plan(tiny.config, plan, tmp_path / "again")


# -------------------------------------------------------------------- 5: a plan keeping nothing


def test_plan_that_keeps_nothing_is_refused_before_writing(tiny, tmp_path):
    config = with_overrides(
        tiny.config,
        **{
            "plan.drop_trivial": True,
            "plan.trivial_above": 0.01,
            "plan.unsolvable_keep_fraction": 0,
        },
    )
    for _ in range(2):  # and again: nothing was written that would stand in the way
        with pytest.raises(DataError, match=r"keeps none of the 8 profiled queries: \d+ trivial"):
            run_plan(config, tiny.whole, tmp_path)
        assert not (tmp_path / PLAN_FILE).exists()


# ------------------------------------------------------------------------- 6: merge takes lock


def test_merge_waits_for_no_one_holding_the_directory(tiny, tmp_path):
    out = tmp_path / "merged"
    with sgpo.rundir.locked(out, "profile"), pytest.raises(RunDirBusyError, match="in use"):
        merge_profiles(tiny.shards, out)
    assert not (out / PROFILE_FILE).exists()
    merge_profiles(tiny.shards, out)  # once free


def test_chunks_through_another_chat_template_are_not_resumed(tmp_path):
    config, out = interrupted_after_two_chunks(tmp_path)
    _, second = sorted((out / "profile_chunks").glob("*.parquet"))
    rows, meta = read_table(second)
    assert meta[CHAT_TEMPLATE_KEY] is None  # the embedded model's prompts are plain
    write_table(second, rows, meta | {CHAT_TEMPLATE_KEY: "ab" * 32})
    with pytest.raises(DataError, match=CHAT_TEMPLATE_KEY):
        run_profile(config, out, resume=True)
    # a chunk an older sgpo wrote, which did not record it, resumes
    write_table(second, rows, {k: v for k, v in meta.items() if k != CHAT_TEMPLATE_KEY})
    resumed = run_profile(config, out, resume=True)
    assert read_table(resumed)[1][CHAT_TEMPLATE_KEY] is None


def test_train_refuses_a_plan_profiled_through_another_chat_template(tiny, tmp_path):
    train = {"method": "sgpo", "steps": 1, "eval_every": 0, "checkpoint_every": 0}
    config = tiny_config(tiny.root, train=train)
    plan_path, _ = run_plan(config, tiny.whole, tmp_path / "plan")
    rows, meta = read_table(plan_path)
    assert meta[CHAT_TEMPLATE_KEY] is None  # the embedded model's prompts are plain
    write_table(plan_path, rows, meta | {CHAT_TEMPLATE_KEY: "ab" * 32})
    with pytest.raises(DataError, match=r"chat template with sha256 abababababab, this run's go"):
        Trainer(config, tmp_path / "run", plan_path)
    write_table(plan_path, rows, {k: v for k, v in meta.items() if k != CHAT_TEMPLATE_KEY})
    Trainer(config, tmp_path / "older", plan_path)  # a plan from before the record


def test_a_profile_from_before_train_queries_matches_a_task_loaded_with_its_eval_split() -> None:
    """Such a profile recorded its task as profiled, its eval split not read: the trainer's
    task, loaded with it, is not what the profile is compared with (every file task's older
    profile was refused as another task's)."""
    from sgpo.config import load_config
    from sgpo.profile_match import check_profile_matches
    from sgpo.tasks import load_run_task

    fixtures = Path(__file__).parent / "fixtures"
    files = [f"task.file.train={fixtures / 'gsm8k_train.jsonl'}", "task.file.preset=gsm8k"]
    config = load_config(
        None, ["task.kind=file", *files, f"task.file.eval={fixtures / 'gsm8k_test.jsonl'}"]
    )
    older = {"task": load_run_task(config, require_eval=False).source}  # no train_queries
    with_eval = load_run_task(config)
    assert with_eval.source != older["task"]
    assert check_profile_matches(older, config, "p", None, task=with_eval).train == with_eval.train
