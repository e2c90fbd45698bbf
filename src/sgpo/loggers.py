"""Optional experiment trackers, chosen with train.report_to as TRL users expect.

metrics.jsonl is always written by the trainer; these sinks mirror each record's numeric
values (nested dicts flattened with "/") to TensorBoard, Weights & Biases or Trackio.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Protocol

from sgpo.errors import ConfigError
from sgpo.runfiles import TENSORBOARD_DIR

TRACKERS = ("tensorboard", "wandb", "trackio")


class MetricsSink(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a record, nested keys joined with '/'; bools and strings skipped."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= scalars(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _require(module: str, tracker: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"train.report_to includes {tracker!r} but {module!r} is not installed: "
            f"pip install {tracker}"
        ) from e


class TensorBoardSink:
    """Its event file is opened at the first record, so a fresh run can first clear the
    directory of an earlier run's events (they would mix into the new curves), and a resumed
    run hides the events its crashed predecessor logged from that step on (purge_step)."""

    def __init__(self, log_dir: Path) -> None:
        _require("tensorboard", "tensorboard")
        self.log_dir = log_dir
        self.writer = None

    def log(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=step)
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunTrackerSink:
    """wandb and trackio share one API: init(project, name, config), log(dict, step), finish().
    A run directory is one tracker run: a resumed run continues it (resume="allow"; wandb
    finds it by an id from the directory's path, trackio by its name)."""

    def __init__(self, module: str, project: str, run_dir: Path, config: dict) -> None:
        self.module = _require(module, module)
        # "sgpo-seed-0" alone would not tell compare's methods apart: the parent's name too
        name = f"{run_dir.parent.name}/{run_dir.name}"
        resume: dict = {"resume": "allow"}
        if module == "wandb":
            digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()
            resume["id"] = digest[:16]
        self.run = self.module.init(project=project, name=name, config=config, **resume)  # type: ignore[attr-defined]

    def log(self, values: dict[str, float], step: int) -> None:
        self.module.log(values, step=step)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.module.finish()  # type: ignore[attr-defined]


def make_sinks(
    report_to: list[str], run_dir: Path, project: str, config: dict
) -> list[MetricsSink]:
    sinks: list[MetricsSink] = []
    for tracker in report_to:
        if tracker == "tensorboard":
            sinks.append(TensorBoardSink(run_dir / TENSORBOARD_DIR))
        elif tracker in ("wandb", "trackio"):
            sinks.append(RunTrackerSink(tracker, project, run_dir, config))
        else:
            raise ValueError(
                f"train.report_to: unknown tracker {tracker!r}; choose from {TRACKERS}"
            )
    return sinks
