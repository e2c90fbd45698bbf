"""The data a run is made from is part of its identity: a train resume on changed train or eval
data is refused (naming the split and file), a local `datasets` directory is identified by its
contents, files with a byte order mark read, and data errors name the file."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sgpo.checkpoint import MANIFEST_FILE
from sgpo.config import EmbeddedModelConfig, FileTaskConfig, RunConfig, TaskConfig
from sgpo.embedded import build_char_tokenizer, build_model
from sgpo.errors import DataError
from sgpo.io import read_jsonl
from sgpo.rundir import file_sha256
from sgpo.runfiles import METRICS_FILE, STATE_DIR, STATE_FILE
from sgpo.tasks import load_task
from sgpo.tasks.files import load_file_task

TRAIN = [{"prompt": f"{a}+{a + 1}=", "answer": str(2 * a + 1)} for a in range(6)]
EVAL = [{"prompt": f"{a}+{a}=", "answer": str(2 * a)} for a in (10, 20)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def file_cfg(**kwargs: object) -> FileTaskConfig:
    return FileTaskConfig.model_validate(kwargs)


# ----------------------------------------------------------------------------- train resume


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A tiny model, train/eval files and a finished grpo run of 1 step on them (under a
    second); each test then edits the data and resumes for a second step."""
    from sgpo.train import run_train

    root = tmp_path
    tokenizer = build_char_tokenizer()
    cfg = EmbeddedModelConfig(
        hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32
    )
    build_model(cfg, tokenizer, seed=0).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    write_jsonl(root / "train.jsonl", TRAIN)
    write_jsonl(root / "eval.jsonl", EVAL)
    run_train(config(root, steps=1), root / "run")
    return root


def config(root: Path, steps: int) -> RunConfig:
    return RunConfig.model_validate(
        {
            "seed": 0,
            "model": {"name_or_path": str(root / "model"), "device": "cpu", "dtype": "float32"},
            "task": {
                "kind": "file",
                "file": {
                    "train": str(root / "train.jsonl"),
                    "eval": str(root / "eval.jsonl"),
                    "preset": "plain",
                },
            },
            "sampling": {"temperature": 1.0, "max_new_tokens": 3, "batch_size": 64},
            "train": {
                "method": "grpo",
                "group_size": 2,
                "steps": steps,
                "rollout_budget": 4,
                "micro_batch_size": 8,
                "eval_every": 0,
                "checkpoint_every": 1,
            },
            "eval": {"n_samples": 1, "greedy": True},
        }
    )


def resume(root: Path) -> dict:
    from sgpo.train import run_train

    return run_train(config(root, steps=2), root / "run", resume=True)


def test_resume_refuses_train_data_with_rows_removed(root: Path) -> None:
    write_jsonl(root / "train.jsonl", TRAIN[:4])
    # Before: a raw KeyError from the scheduler's restore.
    with pytest.raises(DataError, match=r"the train data \(\S*train\.jsonl\) changed: 6 rows"):
        resume(root)


def test_resume_refuses_an_edited_eval_answer(root: Path) -> None:
    write_jsonl(root / "eval.jsonl", [EVAL[0], EVAL[1] | {"answer": "41"}])
    # Before: resumed silently, evaluating against the new answers.
    with pytest.raises(DataError, match=r"the eval data \(\S*eval\.jsonl\) changed: 2 rows") as e:
        resume(root)
    assert "train data" not in str(e.value) and "--overwrite" in str(e.value)


def profile_interrupted(root: Path, out: str, at_chunk: int) -> RunConfig:
    """The file task's config with chunks of 2 queries, and its profile into root/out stopped as
    it started chunk at_chunk (the chunks before it written)."""
    from tiny_run import stop_profile_at_chunk

    from sgpo.profile import run_profile

    profiled = config(root, steps=1).model_copy(deep=True)
    profiled.profile.chunk_size = 2
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, at_chunk, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(profiled, root / out)
    return profiled


def test_a_profile_resume_on_an_edited_training_file_says_so(root: Path) -> None:
    from sgpo.profile import run_profile

    profiled = profile_interrupted(root, "profile", 2)
    write_jsonl(root / "train.jsonl", [TRAIN[0] | {"answer": "0"}, *TRAIN[1:]])
    with pytest.raises(DataError, match=r"field 'task' \(the task's data files changed in content"):
        run_profile(profiled, root / "profile", resume=True)


def test_a_profile_an_older_sgpo_interrupted_is_resumed(root: Path) -> None:
    from sgpo.io import read_table, write_table
    from sgpo.profile import PROFILE_FILE, run_profile
    from sgpo.rundir import VERIFIER_CODE_KEY

    profiled = profile_interrupted(root, "older", 3)
    # as the sgpo before wrote its chunks: no verifier code hash, the eval file in the task
    for chunk in sorted((root / "older").glob("profile_chunks/chunk-*.parquet")):
        rows, meta = read_table(chunk)
        del meta["inputs"][VERIFIER_CODE_KEY]
        meta["task"] = meta["task"].replace("eval=<not read>", "eval=eval.jsonl@sha256:01234567")
        write_table(chunk, rows, meta)
    resumed = run_profile(profiled, root / "older", resume=True)
    assert read_table(resumed)[0] == read_table(run_profile(profiled, root / "whole"))[0]
    assert resumed.name == PROFILE_FILE


def test_a_profile_resumes_under_another_eval_split(root: Path) -> None:
    from sgpo.io import read_table
    from sgpo.profile import run_profile

    profiled = profile_interrupted(root, "p", 3)
    # a profile reads no eval split: another one (and a limit on it) leaves its chunks valid
    other = profiled.model_copy(deep=True)
    other.task.file.eval = str(write_jsonl(root / "other-eval.jsonl", EVAL[:1]))
    other.task.file.limit_eval = 1
    resumed = run_profile(other, root / "p", resume=True)
    assert read_table(resumed)[0] == read_table(run_profile(profiled, root / "whole"))[0]


def test_resume_with_the_same_data_continues(root: Path) -> None:
    assert resume(root)["steps"] == 2


def strip_data_identity(run_dir: Path) -> None:
    """Make the checkpoint look like one written before the data was recorded."""
    state_dir = run_dir / STATE_DIR
    state = json.loads((state_dir / STATE_FILE).read_text())
    del state["fingerprint"]["data"]
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    manifest = json.loads((state_dir / MANIFEST_FILE).read_text())
    manifest["sha256"][STATE_FILE] = file_sha256(state_dir / STATE_FILE)
    (state_dir / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_checkpoint_without_data_identity_resumes_on_unchanged_data(root: Path) -> None:
    strip_data_identity(root / "run")
    assert resume(root)["steps"] == 2
    state = json.loads((root / "run" / STATE_DIR / STATE_FILE).read_text())
    assert state["fingerprint"]["data"]["train"]["rows"] == 6  # recorded from now on
    assert [r["step"] for r in read_jsonl(root / "run" / METRICS_FILE)] == [0, 1, 2]


def test_checkpoint_without_data_identity_refuses_removed_rows(root: Path) -> None:
    strip_data_identity(root / "run")
    write_jsonl(root / "train.jsonl", TRAIN[:4])
    with pytest.raises(DataError, match=r"2 query ids that are not in the train data"):
        resume(root)


# ----------------------------------------------------------------------------- datasets dir


def test_local_datasets_directory_is_identified_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    dsdir = tmp_path / "dsdir"
    dsdir.mkdir()
    write_jsonl(dsdir / "train.jsonl", TRAIN)
    write_jsonl(dsdir / "test.jsonl", EVAL)
    cfg = file_cfg(train=str(dsdir), preset="plain")
    before = load_file_task(cfg)
    assert before.train[0].prompt == "0+1="
    assert load_file_task(cfg).source == before.source  # deterministic
    write_jsonl(dsdir / "train.jsonl", TRAIN[::-1])
    after = load_file_task(cfg)
    assert after.train[0].prompt == "5+6="
    # Before: both "datasets:<dir>/train", so a profile of the old rows was accepted.
    assert after.source != before.source
    assert "datasets:dsdir/train@sha256:" in after.source  # by the folder's name


# ----------------------------------------------------------------------------- byte order mark


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"prompt,answer\r\n1+2=,3\r\n2+2=,4\r\n")
    data = load_file_task(file_cfg(train=str(path), preset="plain"))
    assert [(q.prompt, q.answer) for q in data.train] == [("1+2=", "3"), ("2+2=", "4")]


def test_jsonl_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b'{"prompt": "1+2=", "answer": "3"}\n')
    assert load_file_task(file_cfg(train=str(path), preset="plain")).train[0].answer == "3"


# ----------------------------------------------------------------------------- errors, answers


def test_duplicate_id_and_overlap_errors_name_the_file(tmp_path: Path) -> None:
    rows = [{"id": "a", **TRAIN[0]}, {"id": "a", **TRAIN[1]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"id": "a", **EVAL[0]}])
    cfg = file_cfg(train=str(train), eval=str(evaluation), id_field="id")
    with pytest.raises(DataError) as e:
        load_task(TaskConfig(kind="file", file=cfg), seed=0)
    assert str(e.value).startswith(f"{train}: row 1 (line 2): field 'id': duplicate query id 'a'")
    write_jsonl(train, [{"id": "a", **TRAIN[0]}])
    with pytest.raises(DataError) as e:
        load_task(TaskConfig(kind="file", file=cfg), seed=0)
    assert str(e.value).startswith(f"{train} and {evaluation}: 1 query ids in both train and eval")
    assert "sha256" not in str(e.value)
    # each split numbered alike: the way out is named, and works
    assert "unique across both splits: make them so, or let task.file.id_field=''" in str(e.value)
    numbered = file_cfg(train=str(train), eval=str(evaluation), id_field="")
    assert len(load_task(TaskConfig(kind="file", file=numbered), seed=0).eval) == 1


def test_numeric_answers_follow_the_type_rule(tmp_path: Path) -> None:
    """Numbers stored as numbers are normalised (3.0 -> "3"); text is kept as written, and
    every CSV cell is text."""
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("prompt,answer\np,3.0\n")
    jsonl_path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "answer": 3.0}])
    number = tmp_path / "number.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "answer": [3.0]}), number)
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "answer": ["3.0"]}), text)
    answers = [
        load_file_task(file_cfg(train=str(p), preset="plain")).train[0].answer
        for p in (csv_path, jsonl_path, number, text)
    ]
    assert answers == ["3.0", "3", "3", "3.0"]
