"""Kill it anywhere, resume, lose nothing.

Real SIGKILLs of `sgpo profile` / `sgpo train` subprocesses at points the parent picks by watching
their outputs, then `--resume`: the final profile, metrics and weights must equal an
uninterrupted run's (wall time aside). In-process crash chains then hit the windows a timed kill
rarely lands in (the step-0 evaluation, mid-step, between the two renames of a checkpoint swap,
while a model is being saved, before the summary), one after the other, in one run.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_run import kill_when, merge, start_cli, stop_profile_at_chunk, tiny_tree, write_config
from typer.testing import CliRunner

import sgpo.checkpoint
import sgpo.errors
import sgpo.train
from sgpo.cli import app
from sgpo.config import LoraSettings, RunConfig, TrainConfig, load_config
from sgpo.engine import TransformersEngine
from sgpo.errors import ConfigError, DataError
from sgpo.io import read_jsonl, read_table, write_table
from sgpo.plan import run_plan
from sgpo.profile import PROFILE_CONFIG_FILE, PROFILE_FILE, SAMPLES_FILE, run_profile
from sgpo.runfiles import (
    FINAL_DIR,
    METRICS_FILE,
    OLD_STATE_DIR,
    PROFILE_CHUNKS_DIR,
    STATE_DIR,
    SUMMARY_FILE,
)
from sgpo.tasks import load_task
from sgpo.train import Trainer, run_train

STEPS = 6
N_CHUNKS = 12  # 24 training queries, 2 per chunk


class Crash(BaseException):
    """Stands in for a kill: a BaseException, so no `except Exception` in the code catches it."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny run's config, an uninterrupted profile and a plan made from it."""
    root = tmp_path_factory.mktemp("tiny")
    tree = tiny_tree(root / "models")
    config_path = write_config(root / "config.yaml", tree)
    config = load_config(config_path)
    profile_path = run_profile(config, root / "profile")
    plan_path, _ = run_plan(config, profile_path, root / "plan")
    return SimpleNamespace(
        root=root, tree=tree, profile=profile_path, plan=plan_path, references={}
    )


def reference_run(tiny: SimpleNamespace, method: str) -> Path:
    """An uninterrupted run of the method (made once per module)."""
    if method not in tiny.references:
        run_dir = tiny.root / f"reference-{method}"
        config = load_config(write_config(run_dir / "in.yaml", method_tree(tiny, method)))
        run_train(config, run_dir, plan_for(tiny, method))
        tiny.references[method] = run_dir
    return tiny.references[method]


# Generation batches of 4 rows: an evaluation of the tiny task's 8 held-out queries takes two.
EVAL_BATCH_ROWS = 4


def two_batch_eval_run(tiny: SimpleNamespace) -> tuple[RunConfig, Path]:
    """The grpo run with evaluations generated in two batches, and no periodic checkpoint (all
    a resume has is the one a stop saves): its config and an uninterrupted run of it."""
    key = "grpo-two-batch-eval"
    if key not in tiny.references:
        run_dir = tiny.root / f"reference-{key}"
        tree = merge(
            method_tree(tiny, "grpo", checkpoint_every=0),
            {"sampling": {"batch_size": EVAL_BATCH_ROWS}},
        )
        run_train(load_config(write_config(run_dir / "in.yaml", tree)), run_dir)
        tiny.references[key] = run_dir
    return load_config(tiny.references[key] / "in.yaml"), tiny.references[key]


def signal_in_evaluation(
    mp: pytest.MonkeyPatch, step: int, signum: int, times: int = 1
) -> list[list[int]]:
    """Send signum while the evaluation of `step` generates its first batch, in its first
    `times` runs. Returns the rows of each batch generated, one list per run of it."""
    import os

    real_eval, real_batch = Trainer.run_eval, TransformersEngine._generate_batch
    runs: list[list[int]] = []
    evaluating: list[int] = []  # the step whose evaluation is running

    def watched_eval(self: Trainer, *args: Callable[[], bool] | None) -> dict:
        if self.step == step:
            runs.append([])
        evaluating.append(self.step)
        try:
            return real_eval(self, *args)
        finally:
            evaluating.pop()

    def watched_batch(self: TransformersEngine, prompt_ids: list, *rest: object) -> list:
        if evaluating == [step]:
            runs[-1].append(len(prompt_ids))
            if len(runs[-1]) == 1 and len(runs) <= times:
                os.kill(os.getpid(), signum)
        return real_batch(self, prompt_ids, *rest)

    mp.setattr(Trainer, "run_eval", watched_eval)
    mp.setattr(TransformersEngine, "_generate_batch", watched_batch)
    return runs


# Runs under test that are more than a train.method: name -> train settings.
VARIANTS = {"sgpo-pilot": {"method": "sgpo", "filter_groups": True, "pilot_size": 2}}


def train_settings(method: str) -> dict:
    return VARIANTS.get(method, {"method": method})


def method_tree(tiny: SimpleNamespace, method: str, **train: object) -> dict:
    cache_dir = Path(tiny.tree["model"]["embedded"]["cache_dir"])
    return tiny_tree(cache_dir, train={**train_settings(method), **train})


def plan_for(tiny: SimpleNamespace, method: str) -> Path | None:
    """The tiny plan when the run's train.method is sgpo."""
    return tiny.plan if train_settings(method)["method"] == "sgpo" else None


def comparable_metrics(run_dir: Path) -> str:
    """metrics.jsonl without wall time, as text (so NaN compares equal to NaN)."""
    records = read_jsonl(run_dir / METRICS_FILE)
    return json.dumps([{k: v for k, v in r.items() if k != "wall_s"} for r in records], indent=1)


def comparable_summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    return {k: v for k, v in summary.items() if k not in ("wall_s", "config")}


def assert_same_run(run_dir: Path, reference: Path) -> None:
    steps = [r["step"] for r in read_jsonl(run_dir / METRICS_FILE)]
    assert steps == list(range(STEPS + 1)), "a step line was lost or duplicated"
    assert comparable_metrics(run_dir) == comparable_metrics(reference)
    assert comparable_summary(run_dir) == comparable_summary(reference)
    got = load_file(run_dir / "final" / "model.safetensors")
    want = load_file(reference / "final" / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    state = json.loads((run_dir / STATE_DIR / "state.json").read_text())
    assert state["step"] == STEPS
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"staging left behind: {leftovers}"


def last_step(run_dir: Path) -> int:
    """Step of the last complete metrics line (-1 when none)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return -1
    lines = [line for line in path.read_text().split("\n")[:-1] if line.strip()]
    return json.loads(lines[-1])["step"] if lines else -1


def n_chunks(out: Path) -> int:
    return len(list((out / PROFILE_CHUNKS_DIR).glob("chunk-*.parquet")))


# ------------------------------------------------------------------------------ profile


def test_profile_killed_and_resumed_equals_uninterrupted(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path / "config.yaml", tiny.tree)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    args = ["profile", "-c", str(config_path), "-o", str(out)]

    proc = start_cli(args, log)
    kill_when(proc, lambda: n_chunks(out) >= 3, log)
    first = n_chunks(out)
    assert not (out / PROFILE_FILE).exists() and first < N_CHUNKS
    if first + 3 < N_CHUNKS:
        proc = start_cli([*args, "--resume"], log)
        kill_when(proc, lambda: n_chunks(out) >= first + 3, log)
        assert not (out / PROFILE_FILE).exists()
    killed_at = n_chunks(out)

    # The chunks of an interrupted profile are not thrown away without --overwrite.
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1, refused.output
    assert f"{out / PROFILE_CHUNKS_DIR} holds an interrupted profile" in refused.output
    assert n_chunks(out) == killed_at

    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows, meta = read_table(out / PROFILE_FILE)
    want_rows, want_meta = read_table(tiny.profile)
    assert rows == want_rows
    assert meta.pop("samples_file") == str((out / SAMPLES_FILE).resolve())
    assert meta.pop("profile_wall_s") > 0  # its chunks' time, the killed run's kept chunks too
    timed = ("samples_file", "profile_wall_s")
    assert meta == {k: v for k, v in want_meta.items() if k not in timed}
    assert read_table(out / SAMPLES_FILE) == read_table(tiny.profile.parent / SAMPLES_FILE)
    task = load_task(load_config(config_path).task, 0)
    assert [r["query_id"] for r in rows] == [q.query_id for q in task.train]  # none lost or twice
    assert not (out / PROFILE_CHUNKS_DIR).exists()

    # --resume on a finished profile does no work and keeps it.
    before = (out / PROFILE_FILE).stat().st_mtime_ns
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert (out / PROFILE_FILE).stat().st_mtime_ns == before


def test_profile_independent_of_chunking_batching_and_sharding(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    """Per-sample seeds: chunk size, generation batch composition and shards change nothing."""
    want_rows, _ = read_table(tiny.profile)
    regrouped = load_config(
        write_config(
            tmp_path / "regrouped.yaml",
            tiny_tree(
                Path(tiny.tree["model"]["embedded"]["cache_dir"]),
                profile={"chunk_size": 5},
                sampling={"batch_size": 3},
            ),
        )
    )
    rows, _ = read_table(run_profile(regrouped, tmp_path / "regrouped"))
    assert rows == want_rows

    config = load_config(write_config(tmp_path / "config.yaml", tiny.tree))
    by_id = {}
    for index in (1, 0):  # the later shard first
        shard_rows, meta = read_table(
            run_profile(config, tmp_path / f"shard{index}", shard=(index, 2))
        )
        assert meta["shard"] == [index, 2]
        by_id |= {r["query_id"]: r for r in shard_rows}
    assert by_id == {r["query_id"]: r for r in want_rows}


def test_profile_resumes_under_settings_that_change_no_sample(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training-only settings (a fresh LoRA adapter, which starts at zero; gradient
    checkpointing) and the device as written draw the same samples: a resume under them
    finishes the same profile, where it was refused as another run's."""
    config = load_config(write_config(tmp_path / "config.yaml", tiny.tree))
    with monkeypatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(config, tmp_path / "run")
    update = {"gradient_checkpointing": True, "lora": LoraSettings(r=4), "device": "cpu"}
    resumed = config.model_copy(update={"model": config.model.model_copy(update=update)})
    run_profile(resumed, tmp_path / "run", resume=True)
    assert read_table(tmp_path / "run" / PROFILE_FILE)[0] == read_table(tiny.profile)[0]


def test_a_chunk_with_damaged_samples_is_named_before_the_rest_is_profiled(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume reads each kept chunk's samples (in Arrow, not as objects): a chunk whose
    samples pages are damaged is named, with what to do, before any query is profiled again;
    not at the end, in a traceback."""
    import pyarrow.parquet as pq

    config = load_config(write_config(tmp_path / "config.yaml", tiny.tree))
    with monkeypatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(config, tmp_path / "run")
    chunk = tmp_path / "run" / PROFILE_CHUNKS_DIR / "chunk-00000.parquet"
    columns = pq.ParquetFile(chunk).metadata.row_group(0)
    pages = [
        columns.column(i).data_page_offset
        for i in range(columns.num_columns)
        if "response_ids" in columns.column(i).path_in_schema
    ]
    data = bytearray(chunk.read_bytes())
    data[pages[0] : pages[0] + 8] = b"\xff" * 8  # the page header of the responses' token ids
    chunk.write_bytes(bytes(data))
    profiled = []
    real = sgpo.profile.profile_chunk
    monkeypatch.setattr(
        sgpo.profile, "profile_chunk", lambda *a, **k: profiled.append(1) or real(*a, **k)
    )
    with pytest.raises(DataError, match=r"chunk-00000\.parquet: its samples are not readable .*"
                       r"remove it and resume again"):  # fmt: skip
        run_profile(config, tmp_path / "run", resume=True)
    assert profiled == []


def test_profile_crash_keeps_verifier_counts(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Verifier failures in chunks written before a crash still count in the final metadata."""
    tree = tiny_tree(
        Path(tiny.tree["model"]["embedded"]["cache_dir"]),
        task={"verifier": "bad_verifiers:raising_on_odd"},
        profile={"chunk_size": 8},
    )
    config = load_config(write_config(tmp_path / "config.yaml", tree))
    odd = [q for q in load_task(config.task, config.seed).train if int(q.answer) % 2]
    real = sgpo.profile.profile_chunk
    calls = []

    def crash_on_third(*args: object, **kwargs: object) -> list[dict]:
        calls.append(1)
        if len(calls) == 3:
            raise Crash
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.profile, "profile_chunk", crash_on_third)
        with pytest.raises(Crash):
            # sgpo compare resumes every profile: a fresh one is not said to be resumed
            run_profile(config, tmp_path / "run", resume=True)
    assert "resuming the profile" not in caplog.text
    assert n_chunks(tmp_path / "run") == 2
    _, meta = read_table(run_profile(config, tmp_path / "run", resume=True))
    chunks = -(-tree["task"]["addition"]["n_train"] // 8)
    assert f"resuming the profile, 2 of its {chunks} chunks done" in caplog.text
    assert 0 < len(odd) < tree["task"]["addition"]["n_train"]
    assert meta["verifier_errors"] == tree["profile"]["k"] * len(odd)
    # and says so at the end, where a user looks
    calls = tree["profile"]["k"] * tree["task"]["addition"]["n_train"]
    assert f"{meta['verifier_errors']} of {calls} verifier calls failed" in caplog.text
    # and the plan says it again: the profile's output may be long gone when a user plans
    caplog.clear()
    run_plan(config, tmp_path / "run" / PROFILE_FILE, tmp_path / "run")
    assert f"{meta['verifier_errors']} of its {calls} verifier calls failed" in caplog.text


def test_profile_resume_refuses_chunks_of_another_config(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path / "config.yaml", tiny.tree))
    # One chunk written with k=4, then a resume with k=2.
    real = sgpo.profile.profile_chunk
    calls = []

    def crash_on_second(*args: object, **kwargs: object) -> list[dict]:
        calls.append(1)
        if len(calls) == 2:
            raise Crash
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.profile, "profile_chunk", crash_on_second)
        with pytest.raises(Crash):
            run_profile(config, tmp_path / "run")
    assert n_chunks(tmp_path / "run") == 1
    other = config.model_copy(update={"profile": config.profile.model_copy(update={"k": 2})})
    with pytest.raises(
        DataError,
        match=r"chunk-00000\.parquet: made with other inputs than this resume's: "
        r"config\.profile\.k: 4 -> 2",
    ):
        run_profile(other, tmp_path / "run", resume=True)
    with pytest.raises(FileExistsError, match="holds an interrupted profile"):
        run_profile(other, tmp_path / "run")
    # another chunk size is no other input, but cuts other chunks: said so
    size = config.profile.chunk_size + 1
    resized = config.model_copy(
        update={"profile": config.profile.model_copy(update={"chunk_size": size})}
    )
    recorded = (tmp_path / "run" / PROFILE_CONFIG_FILE).read_text()
    with pytest.raises(
        DataError,
        match=r"chunk-00000\.parquet: written by a different profile run \(what differs: "
        rf"profile\.chunk_size: {size - 1} -> {size}; resume with --set "
        rf"profile\.chunk_size={size - 1} to keep the chunks\)",
    ):
        run_profile(resized, tmp_path / "run", resume=True)
    # refused before anything was written: a resume without -c still reads the chunks' config
    assert (tmp_path / "run" / PROFILE_CONFIG_FILE).read_text() == recorded
    # a chunk of an older sgpo, which did not record its size: its queries differ
    chunk = next((tmp_path / "run" / PROFILE_CHUNKS_DIR).glob("chunk-*.parquet"))
    rows, meta = read_table(chunk)
    del meta["chunk_size"]
    write_table(chunk, rows, meta)
    with pytest.raises(DataError, match=r"its queries \(profile\.chunk_size or the training"):
        run_profile(resized, tmp_path / "run", resume=True)


# ------------------------------------------------------------------------------ train


@pytest.mark.parametrize("method", ["sgpo", "grpo"])
def test_train_killed_and_resumed_equals_uninterrupted(
    tiny: SimpleNamespace, tmp_path: Path, method: str
) -> None:
    reference = reference_run(tiny, method)
    config_path = write_config(tmp_path / "config.yaml", method_tree(tiny, method))
    run, log = tmp_path / "run", tmp_path / "log.txt"
    # sgpo: the plan lives elsewhere; a resume finds it through the checkpoint.
    plan_args = ["--plan", str(tiny.plan)] if method == "sgpo" else []

    proc = start_cli(["train", "-c", str(config_path), "-o", str(run), *plan_args], log)
    kill_when(proc, lambda: last_step(run) >= 2, log)
    first = last_step(run)
    assert first < STEPS and not (run / SUMMARY_FILE).exists()
    if first + 2 < STEPS:
        proc = start_cli(["train", "--resume", str(run)], log)
        kill_when(proc, lambda: last_step(run) >= first + 2, log)
        assert not (run / SUMMARY_FILE).exists()

    resumed = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(run, reference)


def test_no_half_built_checkpoint_is_left_behind(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    config, run = crashed_after_step(tiny, tmp_path, 3, checkpoint_every=2)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:  # the disk fills while the checkpoint is built
        mp.setattr(sgpo.checkpoint, "save_file", disk_full)
        with pytest.raises(OSError, match="No space left"):
            run_train(config, run, resume=True)
    assert not list(run.glob(".checkpoint-*"))
    # what a kill left is removed by a fresh start too, not only by a resume
    (run / ".checkpoint-abcdefgh" / "model").mkdir(parents=True)
    run_train(config, run, overwrite=True)
    assert not list(run.glob(".checkpoint-*"))


def test_an_interrupted_profile_says_how_to_finish_and_redo_a_damaged_chunk(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    from sgpo.plan import run_plan

    cache_dir = Path(tiny.tree["model"]["embedded"]["cache_dir"])
    config = load_config(
        write_config(tmp_path / "c.yaml", tiny_tree(cache_dir, profile={"chunk_size": 4}))
    )
    out = tmp_path / "profiled"
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 2, Crash())
        with pytest.raises(Crash):
            run_profile(config, out)
    with pytest.raises(
        FileNotFoundError, match="interrupted; finish it with sgpo profile --resume"
    ):
        run_plan(config, out / PROFILE_FILE, out)
    chunk = next((out / PROFILE_CHUNKS_DIR).glob("chunk-*.parquet"))
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(DataError, match="remove it and resume again to profile only its queries"):
        run_profile(config, out, resume=True)
    chunk.unlink()
    run_profile(config, out, resume=True)
    assert (out / PROFILE_FILE).exists()


def lr_schedule_values(train: TrainConfig) -> list[float]:
    """The lr each step of a run trains at, by transformers' schedule of train's settings."""
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train.lr)
    schedule = get_scheduler(
        train.lr_schedule,
        optimizer,
        num_warmup_steps=train.warmup_steps,
        num_training_steps=train.steps,
    )
    values = []
    for _ in range(train.steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return values


def test_a_resume_over_more_steps_says_the_lr_schedule_follows_them(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, run = crashed_after_step(
        tiny, tmp_path, 3, checkpoint_every=2, lr_schedule="cosine", steps=STEPS
    )
    longer = config.model_copy(
        update={"train": config.train.model_copy(update={"steps": STEPS + 2})}
    )
    run_train(longer, run, resume=True)
    said = " ".join(caplog.text.split())
    assert f"train.steps {STEPS} -> {STEPS + 2} with lr_schedule cosine" in said
    # ... from the step resumed: each step after the checkpoint (step 2) trains at the lr the
    # longer schedule gives it (the first used to take the shorter one's, the checkpoint's)
    expected = lr_schedule_values(longer.train)
    logged = {r["step"]: r["lr"] for r in read_jsonl(run / METRICS_FILE) if r["step"] > 2}
    assert logged == {step: pytest.approx(expected[step - 1]) for step in logged}
    assert len(logged) == STEPS
    caplog.clear()
    constant, again = crashed_after_step(tiny, tmp_path / "constant", 3, checkpoint_every=2)
    longer = constant.model_copy(
        update={"train": constant.train.model_copy(update={"steps": STEPS + 2})}
    )
    run_train(longer, again, resume=True)
    assert "lr_schedule" not in caplog.text  # a constant lr has no length


def test_a_damaged_state_file_is_named_with_its_field(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config, run = crashed_after_step(tiny, tmp_path, 3, checkpoint_every=2)
    state_file = run / STATE_DIR / "state.json"
    state = json.loads(state_file.read_text())
    # as another sgpo version could write it: the manifest matches, a field does not
    for edit, problem in (
        ({"step": "2"}, "field 'step' is str '2'"),
        ({}, "field 'wall_s' is missing"),
    ):
        edited = {k: v for k, v in state.items() if k != "wall_s" or edit} | edit
        state_file.write_text(json.dumps(edited))
        (state_file.parent / sgpo.checkpoint.MANIFEST_FILE).unlink()
        sgpo.checkpoint._write_manifest(state_file.parent)
        with pytest.raises(DataError, match=rf"state\.json: {problem}: not a checkpoint"):
            run_train(config, run, resume=True)
    state_file.write_text(json.dumps(state)[:50])  # cut short
    with pytest.raises(DataError, match=r"state\.json: not valid JSON"):
        sgpo.checkpoint.checkpoint_plan(run)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_after_its_step_with_a_checkpoint(
    tiny: SimpleNamespace, tmp_path: Path, signum: int
) -> None:
    reference = reference_run(tiny, "grpo")
    # no periodic checkpoint: all a resume has is the one the stop saves
    tree = method_tree(tiny, "grpo", checkpoint_every=0)
    config_path = write_config(tmp_path / "config.yaml", tree)
    run, log = tmp_path / "run", tmp_path / "log.txt"
    proc = start_cli(["train", "-c", str(config_path), "-o", str(run)], log)
    deadline = time.monotonic() + 180
    while last_step(run) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signum)
    assert proc.wait(timeout=180) == 130, log.read_text()[-3000:]
    state = json.loads((run / STATE_DIR / "state.json").read_text())
    stopped = state["step"]  # the steps it trained are kept
    assert stopped < STEPS, "finished before the signal"
    said = " ".join(log.read_text().split())
    assert f"stopped at step {stopped}, with a checkpoint in {run}" in said
    # logged, or (a step whose evaluation was due) pending in the checkpoint
    pending = state["pending_record"] is not None
    assert last_step(run) == stopped - pending
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(run, reference)


def test_a_signal_in_the_initial_evaluation_ends_it_with_step_0_checkpointed(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real model the step-0 evaluation can take minutes, past a scheduler's grace period:
    a Ctrl-C in it ends it at the next generation batch, step 0 checkpointed with its
    evaluation pending; each resume runs it (one stopped again keeps it pending), and the run is
    the uninterrupted one."""
    config, reference = two_batch_eval_run(tiny)
    runs = signal_in_evaluation(monkeypatch, 0, signal.SIGINT, times=2)
    run = tmp_path / "run"
    for resume in (False, True):
        with pytest.raises(KeyboardInterrupt) as stopped:
            run_train(config, run, resume=resume)
        assert isinstance(stopped.value, sgpo.errors.TrainingStopped) and stopped.value.step == 0
        state = json.loads((run / STATE_DIR / "state.json").read_text())
        assert state["step"] == 0 and state["pending_record"] == {"step": 0}
        assert read_jsonl(run / METRICS_FILE) == []
    assert runs == [[EVAL_BATCH_ROWS]] * 2  # each ended after the first of its two batches
    run_train(config, run, resume=True)
    assert runs[2:] == [[EVAL_BATCH_ROWS] * 2]  # run whole once more, and then not again
    assert_same_run(run, reference)


def test_a_signal_while_the_final_outputs_are_written_keeps_every_step(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving final/ (and a merged LoRA model) takes a while on a real model: a scheduler's
    SIGTERM then waits for it, the last step checkpointed first, and nothing is trained again."""
    import os

    reference = reference_run(tiny, "grpo")
    # no periodic checkpoint: a lost final step would mean training it all again
    tree = method_tree(tiny, "grpo", checkpoint_every=0)
    config = load_config(write_config(tmp_path / "config.yaml", tree))
    real_save = Trainer.save_model

    def interrupted_save(self: Trainer, name: str) -> Path:
        if name == "final":
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(self, name)

    run = tmp_path / "run"
    monkeypatch.setattr(Trainer, "save_model", interrupted_save)
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_train(config, run)
    assert isinstance(stopped.value, sgpo.errors.TrainingStopped)
    assert stopped.value.step == STEPS and stopped.value.finished  # said as finished
    assert json.loads((run / STATE_DIR / "state.json").read_text())["step"] == STEPS
    assert (run / "summary.json").exists() and (run / "final" / "config.json").exists()
    monkeypatch.setattr(Trainer, "save_model", real_save)
    trained = []
    monkeypatch.setattr(Trainer, "train_step", lambda self: trained.append(self.step))
    run_train(config, run, resume=True)
    assert trained == []  # nothing trained again
    assert_same_run(run, reference)


def test_a_resume_of_a_run_stopped_before_its_first_checkpoint_says_it_starts_over(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "grpo")))
    run = tmp_path / "run"
    run.mkdir()  # a run killed while its model loaded: nothing written yet
    with caplog.at_level("WARNING", logger="sgpo.train"):
        run_train(config, run, resume=True)
    assert f"{run}: no checkpoint there yet: the run starts at step 0" in caplog.text
    assert_same_run(run, reference_run(tiny, "grpo"))


def test_a_resume_names_the_settings_it_runs_under_anew(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As sgpo compare does: what the checkpoint let change (its length, its evaluations)."""
    tree = method_tree(tiny, "grpo")
    config = load_config(write_config(tmp_path / "config.yaml", tree))
    run = tmp_path / "run"
    run_train(config, run)
    steps, every = config.train.steps, config.train.eval_every
    longer = load_config(
        tmp_path / "config.yaml", [f"train.steps={steps + 1}", f"train.eval_every={every + 1}"]
    )
    with caplog.at_level("WARNING", logger="sgpo.train"):
        run_train(longer, run, resume=True)
    assert (
        f"{run}: resumed with train.eval_every: {every} -> {every + 1}; train.steps: {steps} -> "
        f"{steps + 1}"
    ) in caplog.text


def test_a_runs_recorded_config_with_settings_that_did_nothing_is_still_read(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    """A run an earlier sgpo trained with a setting refused now as idle (keep_checkpoints
    without checkpoint_every): its config.yaml is read as it trained, for a resume and for
    compare's reuse check; a config given anew is refused."""
    from sgpo.train_state import config_changes

    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "grpo")))
    run = tmp_path / "run"
    run_train(config, run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["train"] |= {"keep_checkpoints": 2, "checkpoint_every": 0}
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(ConfigError, match="train.keep_checkpoints needs"):
        load_config(run / "config.yaml")
    assert config_changes(load_config(run / "config.yaml", recorded=True), run) == []
    # an override on it is the user's setting now: refused where it does nothing, as anywhere
    steps = config.train.steps + 1
    load_config(run / "config.yaml", [f"train.steps={steps}"], recorded=True)  # unrelated
    with pytest.raises(ConfigError, match="train.keep_checkpoints needs train.checkpoint_every"):
        load_config(run / "config.yaml", ["train.keep_checkpoints=3"], recorded=True)
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    # given with -c (as sgpo eval's warning advises), it is still the run's own
    own = CliRunner().invoke(app, ["train", "--resume", str(run), "-c", str(run / "config.yaml")])
    assert own.exit_code == 0, own.output


def test_a_signal_before_a_steps_evaluation_stops_without_waiting_for_it(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An evaluation takes minutes on a real model, past a scheduler's grace period: a stop
    asked in the step before it checkpoints the step with its record pending; the resume
    evaluates and logs it, and the run is the uninterrupted one."""
    import os

    reference = reference_run(tiny, "grpo")
    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "grpo")))
    evaluated = config.train.eval_every  # the first step evaluated after step 0
    real_step, real_eval, evals = Trainer.train_step, Trainer.run_eval, []

    def signalled_step(self: Trainer) -> dict:
        record = real_step(self)
        if self.step == evaluated:
            os.kill(os.getpid(), signal.SIGTERM)
        return record

    def counted_eval(self: Trainer, stop_asked: Callable[[], bool] | None = None) -> dict:
        evaluation = real_eval(self, stop_asked)
        evals.append(self.step)  # an evaluation run to its end
        return evaluation

    run = tmp_path / "run"
    monkeypatch.setattr(Trainer, "train_step", signalled_step)
    monkeypatch.setattr(Trainer, "run_eval", counted_eval)
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_train(config, run)
    assert isinstance(stopped.value, sgpo.errors.TrainingStopped)
    assert stopped.value.step == evaluated and evals == [0]  # not evaluated before stopping
    state = json.loads((run / STATE_DIR / "state.json").read_text())
    assert state["step"] == evaluated and state["pending_record"]["step"] == evaluated
    assert read_jsonl(run / METRICS_FILE)[-1]["step"] == evaluated - 1
    monkeypatch.setattr(Trainer, "train_step", real_step)
    run_train(config, run, resume=True)
    assert evals.count(evaluated) == 1
    assert_same_run(run, reference)


def test_a_signal_in_a_steps_evaluation_ends_it_at_the_next_batch(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM while an evaluation runs (minutes on a real model) ends it at the next
    generation batch, as one asked before it: the step is checkpointed with its record pending;
    the resume evaluates and logs it, and the run is the uninterrupted one."""
    config, reference = two_batch_eval_run(tiny)
    evaluated = config.train.eval_every  # the first step evaluated after step 0
    runs = signal_in_evaluation(monkeypatch, evaluated, signal.SIGTERM)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_train(config, run)
    assert isinstance(stopped.value, sgpo.errors.TrainingStopped)
    assert stopped.value.step == evaluated
    assert runs == [[EVAL_BATCH_ROWS]]  # ended after the first of its two batches
    state = json.loads((run / STATE_DIR / "state.json").read_text())
    assert state["step"] == evaluated and state["pending_record"]["step"] == evaluated
    assert "eval_acc" not in state["pending_record"]
    assert read_jsonl(run / METRICS_FILE)[-1]["step"] == evaluated - 1
    run_train(config, run, resume=True)
    assert runs[1:] == [[EVAL_BATCH_ROWS] * 2]  # evaluated whole once, on resume
    assert_same_run(run, reference)


def test_a_signal_in_the_last_evaluation_ends_it_and_the_resume_finishes_the_run(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run's last evaluation is no shorter than the others: a SIGTERM in it ends it at the
    next generation batch, the last step is checkpointed with its record pending and no final
    outputs are written; the resume evaluates it, writes them, and the run is the
    uninterrupted one (without saying it trains nothing)."""
    config, reference = two_batch_eval_run(tiny)
    last = config.train.steps
    with pytest.MonkeyPatch.context() as mp:
        runs = signal_in_evaluation(mp, last, signal.SIGTERM)
        run = tmp_path / "run"
        with pytest.raises(KeyboardInterrupt) as stopped:
            run_train(config, run)
        assert isinstance(stopped.value, sgpo.errors.TrainingStopped)
        assert stopped.value.step == last and runs == [[EVAL_BATCH_ROWS]]
        state = json.loads((run / STATE_DIR / "state.json").read_text())
        assert state["step"] == last and state["pending_record"]["step"] == last
        assert not (run / SUMMARY_FILE).exists() and not (run / FINAL_DIR).exists()
        with caplog.at_level("WARNING"):
            run_train(config, run, resume=True)
    assert runs[1:] == [[EVAL_BATCH_ROWS] * 2]  # evaluated whole once, on resume
    assert "the run is finished already" not in caplog.text
    assert_same_run(run, reference)


def test_a_finished_run_resumed_says_it_trains_nothing(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Path(shutil.copytree(reference_run(tiny, "grpo"), tmp_path / "run"))
    metrics = (run / METRICS_FILE).read_bytes()
    config = load_config(run / "config.yaml")
    with caplog.at_level("WARNING"):
        run_train(config, run, resume=True)
    assert "the run is finished already; its final model and summary are written again" in (
        " ".join(caplog.text.split())
    )
    assert (run / METRICS_FILE).read_bytes() == metrics
    assert_same_run(run, reference_run(tiny, "grpo"))


def install_crash(mp: pytest.MonkeyPatch, point: str, step: int | None = None) -> None:
    """Make the next run stop at one point, as a kill there would."""
    if point == "eval0":  # during the initial evaluation, before any checkpoint

        def run_eval(self: Trainer, stop_asked: Callable[[], bool] | None = None) -> dict:
            raise Crash

        mp.setattr(Trainer, "run_eval", run_eval)
    elif point == "mid_step":  # rollouts generated, update not yet applied
        real_train_on = Trainer.train_on

        def train_on(self: Trainer, batch: list) -> dict:
            if self.step + 1 == step:
                raise Crash
            return real_train_on(self, batch)

        mp.setattr(Trainer, "train_on", train_on)
    elif point == "after_log":  # the step's metrics line written, its checkpoint not
        real_log = Trainer.log

        def log(self: Trainer, record: dict) -> None:
            real_log(self, record)
            if record["step"] == step:
                raise Crash

        mp.setattr(Trainer, "log", log)
    elif point in ("checkpoint_swap", "model_save"):
        real_rename = pathlib.Path.rename

        def rename(self: Path, target: object) -> Path:
            target = Path(target)
            swap = target.name == STATE_DIR and self.name.startswith(".checkpoint-")
            model = target.name == "final" or target.parent.name == "checkpoints"
            if (swap and point == "checkpoint_swap") or (model and point == "model_save"):
                # checkpoint_swap: the old checkpoint is already moved aside, the new one
                # not yet in place -- the one moment without a checkpoint/ directory.
                raise Crash
            return real_rename(self, target)

        mp.setattr(pathlib.Path, "rename", rename)
    elif point == "summary":  # final model saved, summary not written

        def atomic_write_json(path: Path, obj: object) -> None:
            raise Crash

        mp.setattr(sgpo.train, "atomic_write_json", atomic_write_json)
    else:
        raise AssertionError(point)


CRASH_CHAINS = {
    # checkpoint every step: a crash anywhere loses at most the step in flight
    "sgpo-every-step": (
        "sgpo",
        1,
        [
            ("eval0", None),
            ("after_log", 1),
            ("mid_step", 2),
            ("checkpoint_swap", None),
            ("model_save", None),
            ("after_log", 5),
            ("summary", None),
        ],
    ),
    # dynamic sampling: several scheduler takes per step
    "dapo-every-step": (
        "dapo",
        1,
        [("after_log", 1), ("checkpoint_swap", None), ("mid_step", 4), ("model_save", None)],
    ),
    # dropped groups and refill rounds (train.filter_groups) with pilots: several takes and
    # generation rounds per step, as dapo
    "sgpo-pilot-every-step": (
        "sgpo-pilot",
        1,
        [("after_log", 1), ("mid_step", 3), ("checkpoint_swap", None)],
    ),
    # checkpoint every 3 steps: resume from the last one, re-run the steps after it and drop
    # their metrics lines first
    "grpo-every-3": (
        "grpo",
        3,
        [
            ("after_log", 2),
            ("mid_step", 4),
            ("after_log", 5),
            ("checkpoint_swap", None),
        ],
    ),
}


@pytest.mark.parametrize("chain", CRASH_CHAINS, ids=list(CRASH_CHAINS))
def test_train_crash_chain_equals_uninterrupted(
    tiny: SimpleNamespace, tmp_path: Path, chain: str
) -> None:
    method, every, crashes = CRASH_CHAINS[chain]
    reference = reference_run(tiny, method)
    config = load_config(
        write_config(tmp_path / "config.yaml", method_tree(tiny, method, checkpoint_every=every))
    )
    run = tmp_path / "run"
    plan = plan_for(tiny, method)
    for index, (point, step) in enumerate(crashes):
        with pytest.MonkeyPatch.context() as mp:
            install_crash(mp, point, step)
            with pytest.raises(Crash):
                # The first start is a fresh run, every later one a resume.
                run_train(config, run, plan, resume=index > 0)
        assert not (run / SUMMARY_FILE).exists()
    run_train(config, run, None, resume=True)  # sgpo: the plan comes from the checkpoint
    assert_same_run(run, reference)
    if every > 1:
        kept = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert kept == ["step-000003", "step-000006"]


def crashed_after_step(
    tiny: SimpleNamespace, tmp_path: Path, step: int, **train: object
) -> tuple[RunConfig, Path]:
    """A grpo run (with train settings) killed right after step's metrics line: (its config,
    its directory)."""
    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "grpo", **train)))
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        install_crash(mp, "after_log", step)
        with pytest.raises(Crash):
            run_train(config, run)
    return config, run


def test_a_resume_says_from_which_step_and_what_runs_again(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, run = crashed_after_step(tiny, tmp_path, 3, checkpoint_every=0)
    run_train(config, run, resume=True)
    assert (
        f"{run}: resuming from its checkpoint at step 0 of {STEPS}; the 3 steps logged after it "
        "run again (train.checkpoint_every is 0: only the initial state was checkpointed)"
    ) in caplog.text
    caplog.clear()  # one step: said in the singular
    config, run = crashed_after_step(tiny, tmp_path / "one", 1, checkpoint_every=0)
    run_train(config, run, resume=True)
    assert "; the step logged after it runs again (train.checkpoint_every is 0" in caplog.text
    caplog.clear()  # a run a budget ends (compare's, the demo's baseline): train.steps a bound
    config, run = crashed_after_step(
        tiny, tmp_path / "capped", 2, checkpoint_every=2, max_total_flops=1e30
    )
    run_train(config, run, resume=True)
    assert (
        f"{run}: resuming from its checkpoint at step 0 of at most {STEPS}, "
        "train.max_total_flops ending it"
    ) in caplog.text


def test_a_resume_names_a_damaged_metrics_record_before_training(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config, run = crashed_after_step(tiny, tmp_path, 3, checkpoint_every=2)
    metrics = run / METRICS_FILE
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = "garbage\n"  # a record before the checkpoint, damaged by hand
    metrics.write_text("".join(lines))
    before = len(lines)
    with pytest.raises(DataError, match=rf"{metrics}: line 2: not valid JSON"):
        run_train(config, run, resume=True)
    assert len(metrics.read_text().splitlines()) <= before  # nothing trained and appended


def test_a_resume_refuses_metrics_cut_short_before_the_checkpoint(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config, run = crashed_after_step(tiny, tmp_path, 3, checkpoint_every=2)
    metrics = run / METRICS_FILE
    whole = metrics.read_bytes()
    records = whole.split(b"\n")
    # cut inside step 3's record (after the checkpoint at step 2): it runs again
    metrics.write_bytes(b"\n".join(records[:3]) + b"\n" + records[3][:20])
    run_train(config, run, resume=True)
    assert [r["step"] for r in read_jsonl(metrics)] == list(range(STEPS + 1))
    # cut inside step 2's record, which the checkpoint was taken after: refused, not retrained
    config, run = crashed_after_step(tiny, tmp_path / "again", 3, checkpoint_every=2)
    metrics = run / METRICS_FILE
    records = metrics.read_bytes().split(b"\n")
    metrics.write_bytes(b"\n".join(records[:2]) + b"\n" + records[2][:20])
    with pytest.raises(DataError, match="2 complete records but the checkpoint at step 2 was"):
        run_train(config, run, resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 2])
def test_train_sigkill_at_every_step(tiny: SimpleNamespace, tmp_path: Path, every: int) -> None:
    """A real SIGKILL after each step's metrics line in turn, each time resumed."""
    reference = reference_run(tiny, "grpo")
    tree = method_tree(tiny, "grpo", checkpoint_every=every)
    config_path = write_config(tmp_path / "config.yaml", tree)
    run, log = tmp_path / "run", tmp_path / "log.txt"
    args = ["train", "-c", str(config_path), "-o", str(run)]
    for step in range(1, STEPS):
        proc = start_cli(args, log)
        kill_when(proc, lambda step=step: last_step(run) >= step, log)
        assert not (run / SUMMARY_FILE).exists()
        args = ["train", "--resume", str(run)]
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(run, reference)


def test_read_jsonl_skips_what_a_kill_left_unfinished(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "rew')
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    path.write_text('{"step": 0}\n{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2: not valid JSON"):
        read_jsonl(path)


def test_a_resume_keeps_the_plan_it_started_with(
    tiny: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "sgpo", steps=1)))
    run = tmp_path / "run"
    plan_path, _ = run_plan(config, tiny.profile, run)
    with pytest.MonkeyPatch.context() as mp:
        install_crash(mp, "after_log", 1)
        with pytest.raises(Crash):
            run_train(config, run)
    other = config.model_copy(update={"plan": config.plan.model_copy(update={"g_max": 2})})
    run_plan(other, tiny.profile, run, overwrite=True)  # the run's own plan replaced
    # given as the plan to resume with: refused, saying how to resume
    with pytest.raises(DataError, match=r"plan\.parquet: not the plan this run was trained with"):
        run_train(config, run, plan_path, resume=True)
    # another plan, unchanged, is not said to have changed
    elsewhere = Path(shutil.copy(plan_path, tmp_path / "other-plan.parquet"))
    with pytest.raises(DataError) as refused:
        run_train(config, run, elsewhere, resume=True)
    said = str(refused.value)
    assert f"({plan_path.resolve()}); resume without --plan (the checkpoint keeps a copy" in said
    # a checkpoint of an sgpo that kept no copy names the plan, changed since: no circular advice
    older = Path(shutil.copytree(run, tmp_path / "older"))
    for name in ("plan.parquet", sgpo.checkpoint.MANIFEST_FILE):
        (older / STATE_DIR / name).unlink()
    sgpo.checkpoint._write_manifest(older / STATE_DIR)
    with pytest.raises(DataError) as refused:
        run_train(config, older, resume=True)
    said = str(refused.value)
    assert "changed since the checkpoint); resume with that plan as it was" in said
    # found by the resume: the checkpoint's copy of the one it started with, said so
    run_train(config, run, resume=True)
    assert "is not the plan" in caplog.text and "continues with that one" in caplog.text
    assert (run / SUMMARY_FILE).exists()
    # and its report describes that plan, not the one planned since
    from sgpo.report import write_report

    trained = read_table(run / STATE_DIR / "plan.parquet")[1]["summary"]["rollouts_per_epoch"]
    replanned = read_table(plan_path)[1]["summary"]["rollouts_per_epoch"]
    assert trained != replanned
    assert f"rollouts per epoch: {trained} vs" in write_report(run).read_text()


def test_a_resume_reads_the_optimizer_state_only_when_it_restores_it(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    """Not while the reference policy and the engine are built: on a large model the
    optimizer's moments would raise the peak memory."""
    config, run = crashed_after_step(tiny, tmp_path, 1)
    read = []
    real = sgpo.checkpoint.load_state_blobs
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sgpo.checkpoint, "load_state_blobs", lambda d: read.append(d) or real(d))
        trainer = Trainer(config, run, resume=True)
        assert read == []
        trainer.train()
    assert read == [run]


def test_a_trainer_resumed_directly_recovers_a_checkpoint_a_kill_left_aside(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    """A kill between a checkpoint swap's two renames leaves only the old one, aside: a
    Trainer resumed without run_train puts it back and resumes, not starts over."""
    config, run = crashed_after_step(tiny, tmp_path, 1)
    (run / STATE_DIR).rename(run / OLD_STATE_DIR)
    assert Trainer(config, run, resume=True).resuming
    assert (run / STATE_DIR).is_dir() and not (run / OLD_STATE_DIR).exists()


def test_a_resume_killed_before_its_first_checkpoint_asks_for_the_plan(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "sgpo")))
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        install_crash(mp, "eval0")  # before any checkpoint, the plan given with --plan
        with pytest.raises(Crash):
            run_train(config, run, tiny.plan)
    with pytest.raises(FileNotFoundError, match="no checkpoint naming the plan .* with --plan"):
        run_train(config, run, resume=True)
    run_train(config, run, tiny.plan, resume=True)  # with it, the run starts
    assert (run / SUMMARY_FILE).exists()
    # checkpointed with a plan since moved, or a copied run directory: the checkpoint
    # holds a copy of its plan
    plan = Path(shutil.copy(tiny.plan, tmp_path / "plan-elsewhere.parquet"))
    other = tmp_path / "other"
    with pytest.MonkeyPatch.context() as mp:
        install_crash(mp, "after_log", 1)
        with pytest.raises(Crash):
            run_train(config, other, plan)
    plan.unlink()
    copied = Path(shutil.copytree(other, tmp_path / "copied"))
    run_train(config, copied, resume=True)
    assert (copied / SUMMARY_FILE).exists()


def test_resume_with_another_seed_names_the_seed_not_the_plan(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path / "config.yaml", method_tree(tiny, "sgpo", steps=2)))
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        install_crash(mp, "after_log", 1)
        with pytest.raises(Crash):
            run_train(config, run, tiny.plan)
    # the plan's profile was drawn with seed 0 too, but the seed is what the user changed
    other_seed = config.model_copy(update={"seed": config.seed + 1})
    with pytest.raises(DataError, match=rf"made with other inputs .*seed: {config.seed} -> "):
        run_train(other_seed, run, resume=True)


def test_a_run_is_not_resumed_under_its_verifiers_edited_code(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "code" / "resumed_checks.py"
    module.parent.mkdir()
    scores = "from sgpo.tasks.addition import verify\n\n\ndef score(response, reference):\n"
    module.write_text(scores + "    return verify(response, reference)\n")
    monkeypatch.syspath_prepend(str(module.parent))
    tree = method_tree(tiny, "grpo", steps=2)
    tree["task"]["verifier"] = "resumed_checks:score"
    config = load_config(write_config(tmp_path / "config.yaml", tree))
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        install_crash(mp, "after_log", 1)
        with pytest.raises(Crash):
            run_train(config, run)
    module.write_text(scores + "    return 1.0 - verify(response, reference)\n")
    with pytest.raises(DataError, match="made with other inputs .*verifier_code_sha256: '"):
        run_train(config, run, resume=True)


def test_resume_with_more_steps_records_them_and_refuses_fewer_than_done(
    tiny: SimpleNamespace, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    two = load_config(write_config(tmp_path / "two.yaml", method_tree(tiny, "grpo", steps=2)))
    run_train(two, run)
    four = load_config(write_config(tmp_path / "four.yaml", method_tree(tiny, "grpo", steps=4)))
    run_train(four, run, resume=True)
    assert load_config(run / "config.yaml").train.steps == 4  # the run's record says 4
    summary = (run / SUMMARY_FILE).read_text()
    with pytest.raises(ConfigError, match="checkpoint is at step 4, past train.steps 2"):
        run_train(two, run, resume=True)
    assert (run / SUMMARY_FILE).read_text() == summary


def test_a_resumed_profiles_time_counts_its_kept_chunks_or_is_left_out(
    tiny: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    from sgpo.io import METADATA_KEY, read_table_metadata

    config = load_config(write_config(tmp_path / "config.yaml", tiny.tree))
    for older in (False, True):
        out = tmp_path / f"run-{older}"
        with monkeypatch.context() as mp:
            stop_profile_at_chunk(mp, 3, KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                run_profile(config, out)
        chunks = sorted((out / PROFILE_CHUNKS_DIR).glob("chunk-*.parquet"))
        kept = sum(read_table_metadata(c)["profile_wall_s"] for c in chunks)
        if older:  # a chunk an older sgpo wrote, which did not time it
            table = pq.read_table(chunks[0])
            meta = json.loads(table.schema.metadata[METADATA_KEY])
            del meta["profile_wall_s"]
            schema = table.schema.with_metadata({METADATA_KEY: json.dumps(meta)})
            pq.write_table(table.cast(schema), chunks[0])
        run_profile(config, out, resume=True)
        recorded = read_table_metadata(out / PROFILE_FILE).get("profile_wall_s")
        if older:  # unknown, so not recorded (training then adds none)
            assert recorded is None
        else:
            assert recorded >= round(kept, 3) > 0
