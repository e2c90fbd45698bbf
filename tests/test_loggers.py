"""report_to: metrics mirrored to trackers. TensorBoard for real; wandb/trackio share one API,
checked against a recording stand-in module (they need accounts or servers)."""

import hashlib
import sys
import types
from pathlib import Path

import pytest

from sgpo.errors import ConfigError
from sgpo.loggers import make_sinks, scalars


def test_scalars_flatten_nested_numbers_only():
    record = {"step": 3, "eval_acc": 0.5, "method": "sgpo", "ok": True, "by": {"1-digit": 0.9}}
    assert scalars(record) == {"step": 3.0, "eval_acc": 0.5, "by/1-digit": 0.9}


def test_tensorboard_sink_writes_events(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (sink,) = make_sinks(["tensorboard"], tmp_path, "proj", {})
    sink.log({"reward_mean": 0.25}, step=1)
    sink.log({"reward_mean": 0.5}, step=2)
    sink.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward_mean")] == [(1, 0.25), (2, 0.5)]


def test_a_resumed_sink_hides_what_the_crashed_run_logged_from_its_first_step(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (crashed,) = make_sinks(["tensorboard"], tmp_path, "proj", {})
    for step in range(1, 6):  # steps 4 and 5 came after the last checkpoint
        crashed.log({"reward_mean": 0.1 * step}, step=step)
    crashed.close()
    (resumed,) = make_sinks(["tensorboard"], tmp_path, "proj", {})
    resumed.log({"reward_mean": 0.9}, step=4)
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    steps = [(e.step, round(e.value, 3)) for e in events.Scalars("reward_mean")]
    assert steps == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.9)]


@pytest.mark.parametrize("tracker", ["wandb", "trackio"])
def test_run_tracker_sinks_call_init_log_finish(tracker, tmp_path: Path, monkeypatch):
    calls = []
    fake = types.ModuleType(tracker)
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda values, step: calls.append(("log", values, step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, tracker, fake)
    run_dir = tmp_path / "sgpo" / "seed-7"  # as compare names a method's run
    (sink,) = make_sinks([tracker], run_dir, "proj", {"seed": 1})
    sink.log({"x": 1.0}, step=4)
    sink.close()
    # a resumed run continues the tracker's run: wandb by an id from the run directory
    init = {"project": "proj", "name": "sgpo/seed-7", "config": {"seed": 1}, "resume": "allow"}
    if tracker == "wandb":
        init["id"] = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    assert calls == [("init", init), ("log", {"x": 1.0}, 4), ("finish",)]
    calls.clear()
    make_sinks([tracker], run_dir, "proj", {"seed": 1})  # the same run, resumed
    assert calls == [("init", init)]


def test_missing_tracker_package_is_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(ConfigError, match="'wandb' is not installed: pip install wandb"):
        make_sinks(["wandb"], tmp_path, "proj", {})


def test_a_fresh_run_clears_an_earlier_runs_tensorboard_events(tmp_path: Path):
    from tiny_run import tiny_tree

    from sgpo.config import RunConfig
    from sgpo.train import run_train

    train = {"method": "grpo", "steps": 1, "eval_every": 0, "checkpoint_every": 0}
    tree = tiny_tree(tmp_path / "models", train=train | {"report_to": ["tensorboard"]})
    config = RunConfig.model_validate(tree)
    run_train(config, tmp_path / "run")
    run_train(config, tmp_path / "run", overwrite=True)
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_a_run_from_before_tensorboard_was_recorded_resumes_and_a_users_folder_is_kept(
    tmp_path: Path,
):
    import json

    from tiny_run import tiny_tree

    from sgpo.config import RunConfig
    from sgpo.train import run_train

    train = {"method": "grpo", "steps": 1, "eval_every": 0, "checkpoint_every": 1}
    tree = tiny_tree(tmp_path / "models", train=train | {"report_to": ["tensorboard"]})
    run = tmp_path / "run"
    run_train(RunConfig.model_validate(tree), run)
    listed = json.loads((run / "sgpo-outputs.json").read_text())["created"]
    listed.remove("tensorboard")  # as an older sgpo left it
    (run / "sgpo-outputs.json").write_text(json.dumps({"created": listed}))
    longer = RunConfig.model_validate(tiny_tree(tmp_path / "models", train=train | {"steps": 2}))
    assert run_train(longer, run, resume=True)["steps"] == 2
    # a tensorboard/ folder of the user's in a directory with no sgpo run is not taken over
    own = tmp_path / "own"
    (own / "tensorboard").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="tensorboard exists and was not written by sgpo"):
        run_train(RunConfig.model_validate(tree), own)
