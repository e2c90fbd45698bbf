"""Attacks on the run directory and its inputs (issue 13): a planted pickle, a flipped bit, a
changed config or model on resume, two processes on one directory, absurd config values, huge
prompts, a hand-edited plan, damaged or odd data files, a full disk, leftovers of a kill."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_run import kill_when, start_cli, tiny_tree, write_config
from typer.testing import CliRunner, Result

import sgpo.checkpoint
import sgpo.profile
import sgpo.rundir
import sgpo.train
from sgpo.cli import app
from sgpo.config import ConfigError, load_config
from sgpo.errors import DataError, RunDirBusyError
from sgpo.io import read_jsonl, read_table, write_table
from sgpo.plan import run_plan
from sgpo.profile import run_profile
from sgpo.rundir import locked
from sgpo.runfiles import STATE_DIR
from sgpo.tasks.files import Mapping, Source, load_split
from sgpo.train import Trainer, run_train

PAYLOAD_MARK = "pwned.txt"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny grpo run, finished, with one checkpoint; and a profile + plan."""
    root = tmp_path_factory.mktemp("trust")
    tree = tiny_tree(
        root / "models",
        task={"addition": {"n_train": 8, "n_eval": 4}},
        profile={"k": 2, "chunk_size": 2},
        train={"method": "grpo", "steps": 2, "eval_every": 0, "checkpoint_every": 1},
    )
    config_path = write_config(root / "config.yaml", tree)
    return SimpleNamespace(root=root, tree=tree, config_path=config_path)


class Kill(BaseException):
    """Stands in for a kill (no `except Exception` catches it)."""


def interrupted_run(env: SimpleNamespace, run: Path) -> None:
    """A run of 2 steps killed after step 2's metrics line (its checkpoint is at step 1)."""
    real_log = Trainer.log

    def log(self: Trainer, record: dict) -> None:
        real_log(self, record)
        if record["step"] == 2:
            raise Kill

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Kill):
        mp.setattr(Trainer, "log", log)
        run_train(load_config(env.config_path), run)


def resume(run: Path, *args: str) -> object:
    return CliRunner().invoke(app, ["train", "--resume", str(run), *args])


class Payload:
    """Unpickling this writes a file: proof that loading ran code."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.mark, "code ran"))


# ------------------------------------------------------------------ 1, 11: checkpoint files


def test_planted_pickle_never_runs(env: SimpleNamespace, tmp_path: Path) -> None:
    run = tmp_path / "run"
    interrupted_run(env, run)
    mark = tmp_path / PAYLOAD_MARK
    evil = pickle.dumps(Payload(mark))
    # An old-style trainer.pt next to the real files: not in the manifest, refused unread.
    (run / STATE_DIR / "trainer.pt").write_bytes(evil)
    result = resume(run)
    assert result.exit_code == 1, result.output
    assert "files not written by sgpo ['trainer.pt']" in result.output
    assert not mark.exists()
    # The state file itself replaced by the pickle: its sha256 no longer matches.
    (run / STATE_DIR / "trainer.pt").unlink()
    (run / STATE_DIR / "trainer.safetensors").write_bytes(evil)
    result = resume(run)
    assert result.exit_code == 1, result.output
    assert "trainer.safetensors: sha256 differs" in result.output
    assert not mark.exists()


def test_flipped_bit_in_weights_is_refused(env: SimpleNamespace, tmp_path: Path) -> None:
    run = tmp_path / "run"
    interrupted_run(env, run)
    weights = run / STATE_DIR / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    result = resume(run)
    assert result.exit_code == 1, result.output
    assert "model/model.safetensors: sha256 differs" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------- 5: same inputs only


def test_a_pickled_weights_file_that_would_run_code_is_refused_unrun(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """A model folder whose weights are a pickle (pytorch_model.bin) asking to run code: torch
    loads tensors only, and sgpo says so instead of torch's traceback."""
    import shutil

    import torch

    from sgpo.models import model_source

    model_dir = tmp_path / "model"
    shutil.copytree(model_source(load_config(env.config_path)), model_dir)
    (model_dir / "model.safetensors").unlink()
    mark = tmp_path / PAYLOAD_MARK
    torch.save({"lm_head.weight": Payload(mark)}, model_dir / "pytorch_model.bin")
    config_path = write_config(
        tmp_path / "planted.yaml",
        env.tree | {"model": env.tree["model"] | {"name_or_path": str(model_dir)}},
    )
    result = CliRunner().invoke(app, ["profile", "-c", str(config_path), "-o", str(tmp_path / "p")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "a weights file holds more than tensors" in said and "nothing in it ran" in said
    assert "GLOBAL" in said and not mark.exists()  # the global it asked for, named
    # a git-lfs pointer where the weights should be (a clone without git-lfs): not called code
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"
    (model_dir / "pytorch_model.bin").write_text(pointer)
    result = CliRunner().invoke(app, ["profile", "-c", str(config_path), "-o", str(tmp_path / "q")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "is not a readable torch checkpoint" in said
    assert "git-lfs pointer" in said and "more than tensors" not in said


def test_resume_refuses_another_config_naming_keys(env: SimpleNamespace, tmp_path: Path) -> None:
    run = tmp_path / "run"
    interrupted_run(env, run)
    result = resume(run, "--set", "train.lr=0.02", "--set", "seed=3")
    assert result.exit_code == 1, result.output
    assert "config.seed: 0 -> 3" in result.output
    assert "config.train.lr: 0.01 -> 0.02" in result.output
    assert read_jsonl(run / "metrics.jsonl")[-1]["step"] == 2  # nothing touched meanwhile
    # A setting that does not change the result (reporting, checkpoint cadence) may change.
    ok = resume(run, "--set", "train.checkpoint_every=2")
    assert ok.exit_code == 0, ok.output


def test_resume_refuses_other_weights_at_the_same_path(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    source = load_config(env.config_path)
    import shutil

    from sgpo.models import model_source

    shutil.copytree(model_source(source), model_dir)
    config_path = write_config(
        tmp_path / "local.yaml",
        env.tree | {"model": env.tree["model"] | {"name_or_path": str(model_dir)}},
    )
    run = tmp_path / "run"
    interrupted_run(SimpleNamespace(config_path=config_path), run)
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="model_sha256"):
        run_train(load_config(config_path), run, resume=True)


def test_profile_resume_refuses_another_verifier_or_template(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    config = load_config(env.config_path)
    out = tmp_path / "profile"
    real = sgpo.profile.profile_chunk
    calls = []

    def stop_on_second(*args: object, **kwargs: object) -> list[dict]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.profile, "profile_chunk", stop_on_second)
        with pytest.raises(KeyboardInterrupt):
            run_profile(config, out)
    for override, key in [
        ("task.verifier=bad_verifiers:raising", "config.task.verifier"),
        ("model.prompt_template='Q: {prompt}'", "config.model.prompt_template"),
        ("sampling.temperature=0.5", "config.sampling.temperature"),
    ]:
        other = load_config(env.config_path, [override])
        with pytest.raises(DataError, match=f"chunk-00000.parquet: made with other inputs.*{key}"):
            run_profile(other, out, resume=True)


# ---------------------------------------------------------------------------- 6: one at a time


def test_second_process_on_a_run_dir_stops(env: SimpleNamespace, tmp_path: Path) -> None:
    run, log = tmp_path / "run", tmp_path / "log.txt"
    config_path = write_config(
        tmp_path / "c.yaml", env.tree | {"train": env.tree["train"] | {"steps": 400}}
    )
    proc = start_cli(["train", "-c", str(config_path), "-o", str(run)], log)
    try:
        kill_when_ready = (run / "metrics.jsonl").exists
        deadline_proc = proc
        while not kill_when_ready():
            assert deadline_proc.poll() is None, log.read_text()
        second = resume(run)
        assert second.exit_code == 1, second.output
        assert f"{run} is in use by another sgpo process" in second.output
    finally:
        kill_when(proc, lambda: True, log)
    # The kernel drops the lock with the killed process: a resume now runs.
    with locked(run, "test"), pytest.raises(RunDirBusyError):
        run_profile(load_config(config_path), run)


# ------------------------------------------------------------------------------- 8: config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=.inf", "train.lr: Input should be a finite number"),
        ("train.max_grad_norm=.inf", "train.max_grad_norm: Input should be a finite number"),
        ("train.lr=.nan", "train.lr: Input should be a finite number"),
        ("train.adam_betas=[1.5,-2]", "train.adam_betas: Value error, each beta must be in [0, 1)"),
        ("model.device=banana", "model.device: Value error, 'banana' is not a device"),
        (
            "model.prompt_template='{prompt} {answer}'",
            "model.prompt_template: Value error, must contain {prompt} and no other {field}",
        ),
        ("model.prompt_template='Q: {'", "model.prompt_template: Value error, not a format"),
        (  # an output setting of LoRA would turn LoRA on
            "model.lora.save_merged=false",
            "trains no LoRA adapter (no model.lora); set model.lora.r (or model.lora={})",
        ),
    ],
)
def test_config_refuses_absurd_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_a_lora_runs_merge_may_be_turned_off_where_lora_is_set():
    for lora in (["model.lora.r=8"], ["model.lora={}"]):
        config = load_config(None, [*lora, "model.lora.save_merged=false"])
        assert config.model.lora is not None and not config.model.lora.save_merged


# ------------------------------------------------------------------------ 10: prompt length


@pytest.mark.parametrize(
    ("size", "batch"),
    [(130, 4096), (130, 1), (50_000_000, 4096)],
    ids=["over-context", "over-context-one-at-a-time", "50MB"],
)
def test_prompt_longer_than_context_is_refused(
    env: SimpleNamespace, tmp_path: Path, size: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sgpo.validate

    monkeypatch.setattr(sgpo.validate, "ENCODE_BATCH", batch)  # rows counted across batches
    data = tmp_path / "train.jsonl"
    # the user's own column name, which the error names
    rows = [{"question": "1+1=", "answer": "2"}, {"question": "9" * size, "answer": "9"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps(rows[0]) + "\n")
    from sgpo.models import model_source

    tree = env.tree | {
        "model": env.tree["model"] | {"name_or_path": model_source(load_config(env.config_path))},
        "task": {
            "kind": "file",
            "file": {"train": str(data), "eval": str(held_out), "prompt_field": "question"},
        },
    }
    config = load_config(write_config(tmp_path / "file.yaml", tree))
    too_long = rf"{data}: row 1 \(line 2\): field 'question' is \d+ (tokens|char)"
    with pytest.raises(DataError, match=too_long):
        run_profile(config, tmp_path / "out")


def chat_model(env: SimpleNamespace, tmp_path: Path, template: str) -> tuple[Path, object]:
    """The tiny model with a chat template, and a BOS (<unk>) its tokenizer adds to plain
    text as Llama's does."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from sgpo.models import model_source

    model = tmp_path / "chat-model"
    shutil.copytree(model_source(load_config(env.config_path)), model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.bos_token = "<unk>"
    tokenizer.chat_template = template
    bos = tokenizer.convert_tokens_to_ids("<unk>")
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<unk> $A", special_tokens=[("<unk>", bos)]
    )
    tokenizer.save_pretrained(model)
    return model, tokenizer


def test_a_chat_templates_end_of_turn_that_does_not_stop_generation_is_warned_about(
    env: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sgpo.models import load_policy

    turns = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{}{% endfor %}"
    for end, warned in (("<pad>", True), ("{{ eos_token }}", False)):
        model, _ = chat_model(env, tmp_path / end.strip("<>{} "), turns.replace("{}", end))
        config = load_config(env.config_path, [f"model.name_or_path={model}"])
        caplog.clear()
        with caplog.at_level("WARNING", logger="sgpo.models"):
            load_policy(config)
        said = "its chat template ends the assistant's turn with '<pad>', but neither"
        assert (said in caplog.text) == warned, caplog.text


def test_a_prompt_rendered_through_the_chat_template_already_is_refused(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """A prompt column holding chat-formatted text would go through the template twice."""
    template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    model, tokenizer = chat_model(env, tmp_path, template)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2="}], tokenize=False, add_generation_prompt=True
    )
    data = tmp_path / "train.jsonl"
    rows = [{"question": "1+1=", "answer": "2"}, {"question": rendered, "answer": "4"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps(rows[0]) + "\n")
    tree = env.tree | {
        "model": env.tree["model"] | {"name_or_path": str(model)},
        "task": {
            "kind": "file",
            "file": {"train": str(data), "eval": str(held_out), "prompt_field": "question"},
        },
    }
    config = load_config(write_config(tmp_path / "file.yaml", tree))
    twice = (
        rf"{data}: row 1 \(line 2\): field 'question' holds '<unk>', which the model's chat "
        "template writes itself"
    )
    with pytest.raises(DataError, match=twice):
        run_profile(config, tmp_path / "out")
    # rendered already, plain prompts are what the model sees: accepted
    plain = config.model_copy(
        update={"model": config.model.model_copy(update={"use_chat_template": False})}
    )
    run_profile(plain, tmp_path / "plain")


# --------------------------------------------------------------------------- 11: edited plan


@pytest.fixture(scope="module")
def plan(env: SimpleNamespace) -> Path:
    config = load_config(env.config_path)
    profile = run_profile(config, env.root / "profiled")
    return run_plan(config, profile, env.root / "profiled")[0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(group_size=0), "field 'group_size' is 0"),
        (lambda r: r.update(group_size=10**6), "field 'group_size' is 1000000"),
        (lambda r: r.update(kept=False, reason="trivial", rank=-1), "no row has kept = true"),
        (lambda r: r.pop("rank"), "column(s) rank missing"),
        # the plan's text is what the TRL path and the verl export train on
        (lambda r: r.update(answer="999"), "row 0: field 'answer' is '999' but query"),
        (lambda r: r.update(prompt="5+5="), "row 0: field 'prompt' is '5+5=' but query"),
    ],
    ids=["g0", "g-huge", "nothing-kept", "no-rank", "answer", "prompt"],
)
def test_edited_plan_is_validated(
    env: SimpleNamespace, plan: Path, tmp_path: Path, edit: object, message: str
) -> None:
    rows, meta = read_table(plan)
    for row in rows:
        if row["kept"] or "kept" not in message:
            edit(row)  # type: ignore[operator]
    edited = tmp_path / "plan.parquet"
    write_table(edited, rows, meta)
    config = load_config(env.config_path, ["train.method=sgpo"])
    with pytest.raises(DataError) as error:
        run_train(config, tmp_path / "run", edited)
    assert str(edited) in str(error.value) and message in str(error.value)


def test_a_profile_or_plan_rewritten_by_pandas_is_refused_saying_so(
    env: SimpleNamespace, plan: Path, tmp_path: Path
) -> None:
    """pandas' to_parquet drops the schema metadata sgpo reads: the message says that, not
    that the task differs, and how to edit a file keeping it."""
    import pandas as pd

    from sgpo.trl.data import load_plan

    config = load_config(env.config_path, ["train.method=sgpo"])
    dropped = r"no sgpo metadata \(the parquet schema's 'sgpo' key\), which a {} written"
    for name, use in (
        ("profile.parquet", lambda p: run_plan(config, p, tmp_path / "plan")),
        ("plan.parquet", lambda p: run_train(config, tmp_path / "run", p)),
        ("plan.parquet", load_plan),
    ):
        rewritten = tmp_path / name
        pd.read_parquet(plan.parent / name).to_parquet(rewritten)
        kind = name.removesuffix(".parquet")
        with pytest.raises(DataError, match=f"{rewritten}: {dropped.format(kind)}"):
            use(rewritten)


def test_the_report_counts_an_edited_plan_from_its_rows(
    env: SimpleNamespace, plan: Path, tmp_path: Path
) -> None:
    from sgpo.report import write_report

    rows, meta = read_table(plan)
    kept = [r for r in rows if r["kept"]]
    assert len(kept) >= 2, "the fixture's plan keeps too few queries to edit"
    deleted = kept[-1]
    edited_rows = [r for r in rows if r is not deleted]
    edited = tmp_path / "plan.parquet"
    write_table(edited, edited_rows, meta)
    config = load_config(env.config_path, ["train.method=sgpo"])
    run_train(config, tmp_path / "run", edited)
    report = write_report(tmp_path / "run").read_text()
    rollouts = sum(r["group_size"] for r in kept) - deleted["group_size"]
    assert f"kept in all: {len(kept) - 1}" in report
    assert f"rollouts per epoch: {rollouts} vs" in report
    assert "the plan was edited after sgpo plan wrote it" in report
    run_train(config, tmp_path / "as-planned", plan)
    assert "was edited" not in write_report(tmp_path / "as-planned").read_text()
    # a count an older sgpo did not record is no edit
    from sgpo.plan import read_plan
    from sgpo.report import counted_summary

    plan_rows, plan_meta = read_plan(plan)
    del plan_meta["summary"]["varied_kept"]
    assert counted_summary(plan_rows, plan_meta)[1] is False


def test_hand_edited_group_sizes_under_re_planning_are_warned_about(
    env: SimpleNamespace, plan: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sgpo.schedule import scheduled_queries
    from sgpo.tasks import load_task

    config = load_config(
        env.config_path,
        ["train.method=sgpo", "train.online.reestimate=true", "train.online.replan_every=1"],
    )
    queries = load_task(config.task, config.seed).train
    with caplog.at_level("WARNING", logger="sgpo.schedule"):
        scheduled_queries(config, queries, plan)  # as planned: nothing said
    assert "another group_size" not in caplog.text
    rows, meta = read_table(plan)
    first = next(row for row, r in enumerate(rows) if r["kept"])
    planned = rows[first]["group_size"]
    rows[first]["group_size"] = planned + 1
    edited = tmp_path / "plan.parquet"
    write_table(edited, rows, meta)
    with caplog.at_level("WARNING", logger="sgpo.schedule"):
        scheduled_queries(config, queries, edited)
    assert (
        f"1 kept rows have another group_size than the plan's rule gives (e.g. row {first}, "
        f"query {rows[first]['query_id']!r}: {planned + 1}, the rule's {planned})"
    ) in caplog.text


def test_kept_groups_of_one_or_beyond_the_step_budget_are_warned_about(
    env: SimpleNamespace, plan: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sgpo.schedule import scheduled_queries
    from sgpo.tasks import load_task

    config = load_config(env.config_path, ["train.method=sgpo"])
    queries = load_task(config.task, config.seed).train
    rows, meta = read_table(plan)
    kept = [r for r in rows if r["kept"]]
    assert len(kept) >= 2, "the fixture's plan keeps too few queries to edit"
    kept[0]["group_size"] = 1
    kept[1]["group_size"] = config.train.rollout_budget + 1
    edited = tmp_path / "plan.parquet"
    write_table(edited, rows, meta)
    with caplog.at_level("WARNING", logger="sgpo.plan"):
        scheduled_queries(config, queries, edited)
    assert f"1 kept queries (e.g. [{kept[0]['query_id']!r}]) have group_size 1" in caplog.text
    assert (
        f"1 kept queries (e.g. [{kept[1]['query_id']!r}]) have a group_size above "
        f"train.rollout_budget ({config.train.rollout_budget})"
    ) in caplog.text


def test_a_profiles_counts_as_whole_floats_plan_as_their_integers(
    env: SimpleNamespace, plan: Path, tmp_path: Path
) -> None:
    """A profile rewritten through float64 (k 8.0), as a plan may be; 8.5 is no count."""
    rows, meta = read_table(plan.parent / "profile.parquet")
    floats = [r | {c: float(r[c]) for c in ("k", "n_correct", "prompt_tokens")} for r in rows]
    edited = tmp_path / "profile.parquet"
    write_table(edited, floats, meta)
    config = load_config(env.config_path)
    again = read_table(run_plan(config, edited, tmp_path / "plan")[0])[0]
    original = plan.parent / "profile.parquet"
    assert again == read_table(run_plan(config, original, tmp_path / "as-profiled")[0])[0]
    floats[0]["k"] += 0.5
    write_table(edited, floats, meta)
    with pytest.raises(DataError, match=r"row 0: field 'k' is \d+\.5, not a count >= 0"):
        run_plan(config, edited, tmp_path / "refused")


def test_a_plans_text_edited_is_refused_by_the_verl_export(
    env: SimpleNamespace, plan: Path, tmp_path: Path
) -> None:
    from sgpo.verl.cli import verl_app

    rows, meta = read_table(plan)
    rows[0]["answer"] = "999"
    edited = tmp_path / "plan.parquet"
    write_table(edited, rows, meta)
    out = tmp_path / "train.parquet"
    args = ["export", "--plan", str(edited), "--out", str(out), "-c", str(env.config_path)]
    result = CliRunner().invoke(verl_app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "row 0: field 'answer' is '999' but query" in said, said
    assert not out.exists()


def test_a_profiles_text_edited_is_refused_by_sgpo_plan(
    env: SimpleNamespace, plan: Path, tmp_path: Path
) -> None:
    rows, meta = read_table(plan.parent / "profile.parquet")
    rows[1]["answer"] = "999"
    edited = tmp_path / "profile.parquet"
    write_table(edited, rows, meta)
    with pytest.raises(DataError, match=rf"{edited}: row 1: field 'answer' is '999' but query"):
        run_plan(load_config(env.config_path), edited, tmp_path / "plan")
    # p_hat alone edited: sgpo plan reads the counts, so the edit would be ignored
    rows, meta = read_table(plan.parent / "profile.parquet")
    rows[2]["p_hat"] = 0.1 if rows[2]["p_hat"] != 0.1 else 0.2
    write_table(edited, rows, meta)
    with pytest.raises(DataError, match=rf"{edited}: row 2: field 'p_hat' is 0.[12], but n_c"):
        run_plan(load_config(env.config_path), edited, tmp_path / "plan")


# ------------------------------------------------------------------- 12: files and faults


def split(path: Path) -> list:
    source = Source(label=str(path), id_prefix=path.stem, local=path)
    return load_split(source, Mapping("plain", "prompt", "answer", None, None, False), None)


def test_non_utf8_and_corrupt_parquet_are_data_errors(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"prompt": "x", "answer": "1"}\n{"prompt": "\xff\xfe", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"a\.jsonl: row 1 \(line 2\): not valid UTF-8"):
        split(jsonl)
    csv = tmp_path / "a.csv"
    csv.write_bytes(b"prompt,answer\nx,1\n\xff,2\n")
    with pytest.raises(DataError, match=r"a\.csv: line 3: not valid UTF-8"):
        split(csv)
    parquet = tmp_path / "a.parquet"
    write_table(parquet, [{"prompt": "x", "answer": "1"}] * 100, {})
    data = bytearray(parquet.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 40] = b"\0" * 40
    parquet.write_bytes(bytes(data[: len(data) - 30]))
    with pytest.raises(DataError, match="not a readable parquet file"):
        split(parquet)
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_table(parquet)


def test_float_answers_normalised_and_nonfinite_refused(tmp_path: Path) -> None:
    good = tmp_path / "g.jsonl"
    good.write_text(
        '{"prompt": "a", "answer": 1304.0}\n{"prompt": "b", "answer": 0.5}\n'
        '{"prompt": "c", "answer": 1e30}\n{"prompt": "d", "answer": -0.0}\n'
    )
    # 1e30 as written, not its binary value's digits 1000000000000000019884624838656
    assert [q.answer for q in split(good)] == ["1304", "0.5", "1" + "0" * 30, "0"]
    for text in ("NaN", "3e400", "-Infinity"):
        bad = tmp_path / "b.jsonl"
        bad.write_text(f'{{"prompt": "a", "answer": {text}}}\n')
        not_finite = r"b\.jsonl: row 0 \(line 1\): field 'answer' is .*not a finite"
        with pytest.raises(DataError, match=not_finite):
            split(bad)


def profile_whose_writes_raise(env: SimpleNamespace, out: Path, error: BaseException) -> Result:
    """`sgpo profile` into out, its table writes raising error (a full disk, a read-only
    directory, a Ctrl-C)."""

    def raising(*args: object, **kwargs: object) -> None:
        raise error

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.profile, "write_table", raising)
        return CliRunner().invoke(app, ["profile", "-c", str(env.config_path), "-o", str(out)])


def test_disk_full_is_a_clear_error(env: SimpleNamespace, tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "chunk-00000.parquet")
    result = profile_whose_writes_raise(env, tmp_path / "p", full)
    assert result.exit_code == 1, result.output
    assert "error: disk full writing chunk-00000.parquet (No space left on device)" in (
        result.output
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            OSError(errno.EROFS, "Read-only file system", "p/.sgpo-outputs.json.x1"),
            "error: p/.sgpo-outputs.json.x1: Read-only file system",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "p/chunk-00000.parquet"),
            "error: p/chunk-00000.parquet: Permission denied",
        ),
    ],
)
def test_a_directory_sgpo_may_not_write_is_a_clear_error(
    env: SimpleNamespace, tmp_path: Path, error: OSError, said: str
) -> None:
    result = profile_whose_writes_raise(env, tmp_path / "p", error)
    assert result.exit_code == 1, result.output
    assert said in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_disk_full_in_a_checkpoints_weights_is_a_clear_error(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    from safetensors import SafetensorError

    def full(*args: object, **kwargs: object) -> None:  # what safetensors raises (its text)
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    args = ["train", "-c", str(env.config_path), "-o", str(tmp_path / "t")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.checkpoint, "save_file", full)
        result = CliRunner().invoke(app, [*args, "--set", "train.method=grpo"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "error: disk full writing an output" in said and "run again with --resume" in said
    assert "Traceback" not in result.output


def test_a_checkpoint_is_on_disk_before_it_replaces_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power loss must not leave an installed checkpoint of empty files and no older one:
    every file is fsynced before the rename that installs it, and the rename before the
    previous checkpoint is removed."""
    import pathlib

    events: list[tuple[str, str]] = []
    real_fsync, real_rename, real_rmtree = os.fsync, pathlib.Path.rename, shutil.rmtree

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(self: pathlib.Path, target: object) -> pathlib.Path:
        events.append(("rename", str(self)))
        return real_rename(self, target)

    def rmtree(path: object, *args: object, **kwargs: object) -> None:
        events.append(("rmtree", str(path)))
        real_rmtree(path, *args, **kwargs)

    run = tmp_path / "run"
    run.mkdir()
    (run / sgpo.checkpoint.STATE_DIR).mkdir()  # a previous checkpoint
    staging = run / ".checkpoint-new"
    (staging / "model").mkdir(parents=True)
    for name in ("state.json", "model/weights.bin"):
        (staging / name).write_text(name)
    monkeypatch.setattr(sgpo.checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(pathlib.Path, "rename", rename)
    monkeypatch.setattr(sgpo.checkpoint.shutil, "rmtree", rmtree)
    target, aside = run / sgpo.checkpoint.STATE_DIR, run / "aside"
    sgpo.checkpoint._swap_in(staging, target, aside)
    installed = events.index(("rename", str(staging)))
    synced = {path for kind, path in events[:installed] if kind == "fsync"}
    assert {str(staging / "state.json"), str(staging / "model/weights.bin")} <= synced
    assert {str(staging), str(staging / "model")} <= synced
    removed = max(i for i, e in enumerate(events) if e == ("rmtree", str(aside)))
    assert ("fsync", str(run)) in events[installed:removed]
    assert (target / "model" / "weights.bin").read_text() == "model/weights.bin"


def test_a_file_system_that_refuses_a_folders_fsync_still_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_folders(path: object, flags: int, *args: object) -> int:
        if Path(str(path)).is_dir():
            raise OSError(22, "Invalid argument")  # as Windows or some network mounts do
        return real_open(path, flags, *args)

    staging = tmp_path / ".checkpoint-new"
    staging.mkdir()
    (staging / "state.json").write_text("{}")
    monkeypatch.setattr(sgpo.checkpoint.os, "open", no_folders)
    sgpo.checkpoint._swap_in(staging, tmp_path / "checkpoint", tmp_path / "aside")
    assert (tmp_path / "checkpoint" / "state.json").read_text() == "{}"


def test_ctrl_c_says_what_is_kept_and_how_to_go_on(env: SimpleNamespace, tmp_path: Path) -> None:
    result = profile_whose_writes_raise(env, tmp_path / "p", KeyboardInterrupt())
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert f"interrupted: the finished chunks in {tmp_path / 'p'} are kept" in said
    assert f"`sgpo profile -o {tmp_path / 'p'} --resume` profiles the rest" in said


def test_out_root_is_refused(env: SimpleNamespace) -> None:
    before = sorted(os.listdir("/"))
    result = CliRunner().invoke(
        app, ["profile", "-c", str(env.config_path), "-o", "/", "--overwrite"]
    )
    assert result.exit_code == 1, result.output
    assert "refusing to use / as an output directory" in result.output
    assert sorted(os.listdir("/")) == before


def test_models_and_checkpoints_are_as_readable_as_every_other_output(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """They are built in private (mkdtemp's 0700; transformers writes safetensors 0600) and
    renamed into place: on a shared machine others could not read or serve the model."""
    old_umask = os.umask(0o022)
    try:
        run = tmp_path / "run"
        run_train(load_config(env.config_path, ["train.steps=1"]), run)
    finally:
        os.umask(old_umask)
    for folder in (run / "final", run / STATE_DIR, run / STATE_DIR / "model"):
        assert (folder.stat().st_mode & 0o777) == 0o755, folder
    for path in [*(run / "final").iterdir(), *(run / STATE_DIR).rglob("*.safetensors")]:
        assert (path.stat().st_mode & 0o777) == 0o644, path


def test_a_folder_of_yours_named_as_an_output_sgpo_did_not_write_is_kept(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """A run without LoRA writes no final-merged/: listing the name anyway would make a folder
    of that name you put there later sgpo's to delete on --overwrite."""
    run = tmp_path / "run"
    config = load_config(env.config_path, ["train.steps=1"])
    run_train(config, run)
    assert "final" in sgpo.rundir.written_by_sgpo(run)
    assert not {"final-merged", "tensorboard"} & sgpo.rundir.written_by_sgpo(run)
    (run / "final-merged").mkdir()
    (run / "final-merged" / "model.safetensors").write_text("yours")
    with pytest.raises(FileExistsError, match="final-merged exists and was not written by sgpo"):
        run_train(config, run, overwrite=True)
    assert (run / "final-merged" / "model.safetensors").read_text() == "yours"
    # the same after a run interrupted and resumed: the interrupted one listed every name
    resumed = tmp_path / "resumed"
    sgpo.rundir.claim_outputs(resumed, sgpo.train.TRAIN_OUTPUTS)  # as it did before it died
    run_train(config, resumed)
    assert not {"final-merged", "tensorboard"} & sgpo.rundir.written_by_sgpo(resumed)
    # a name another command listed ahead of writing it (the demo's report) stays listed
    plan_dir = tmp_path / "plan"
    sgpo.rundir.claim_outputs(plan_dir, ["p_hat_hist.png"])
    run_plan(config, run_profile(config, plan_dir), plan_dir)
    assert "p_hat_hist.png" in sgpo.rundir.written_by_sgpo(plan_dir)


def test_outputs_readable_and_stale_temps_cleaned(env: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "p"
    config = load_config(env.config_path)
    profile = run_profile(config, out)
    plan_path, _ = run_plan(config, profile, out)
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    assert (plan_path.stat().st_mode & 0o777) == 0o666 & ~old_umask
    assert (out / "sgpo-outputs.json").stat().st_mode & 0o044  # readable by others
    # What a kill inside an atomic write leaves: a temp file; the next run removes it.
    stale = out / ".plan.parquet.abcd1234"
    stale.write_bytes(b"half")
    run_plan(config, profile, out, overwrite=True)
    assert not stale.exists()


def test_overwrite_removes_a_link_in_the_run_not_what_it_points_to(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    config = load_config(env.config_path)
    run = tmp_path / "run"
    run_train(config, run)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    shutil.rmtree(run / "final")
    (run / "final").symlink_to(outside, target_is_directory=True)
    run_train(config, run, overwrite=True)  # it stopped half-way on the link before
    assert (outside / "keep.txt").read_text() == "mine"
    assert (run / "final").is_dir() and not (run / "final").is_symlink()
    assert (run / "summary.json").exists()


def test_a_planted_outputs_list_cannot_reach_outside_its_directory(tmp_path: Path) -> None:
    """sgpo cleans up and replaces what its list of outputs names: a list naming a path out
    of the directory ("./victim/backup" globbed as "../victim/backup.*") is refused, and the
    file it aimed at stays."""
    victim = tmp_path / "victim" / "backup.2024-12-01.keystore"
    victim.parent.mkdir()
    victim.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("./victim/////backup", "../victim/backup", "/etc/passwd", 3):
        (out / "sgpo-outputs.json").write_text(json.dumps({"created": ["plan.parquet", name]}))
        with pytest.raises(DataError, match="not a path inside the directory"), locked(out, "plan"):
            pass
        assert victim.read_text() == "mine"
    (out / "sgpo-outputs.json").write_text(json.dumps({"created": ["checkpoints/step-000002"]}))
    with locked(out, "plan"):  # a folder's path inside it is one
        pass
