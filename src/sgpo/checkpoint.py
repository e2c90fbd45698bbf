"""The run directory's resumable state and saved models, each written to a staging folder and
renamed into place, so a kill at any moment leaves either the old or the new one."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sgpo.errors import DataError
from sgpo.io import atomic_write_text
from sgpo.runfiles import (
    CONFIG_FILE,
    METRICS_FILE,
    OLD_STATE_DIR,
    STATE_DIR,
    STATE_FILE,
    SUMMARY_FILE,
)

BLOBS_FILE = "trainer.pt"  # optimizer, lr schedule, random generators
MODEL_DIR = "model"


def rng_state() -> dict:
    return {
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(blobs: dict) -> None:
    torch.set_rng_state(blobs["torch_rng"])
    random.setstate(blobs["python_rng"])
    np.random.set_state(blobs["numpy_rng"])
    if blobs.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blobs["cuda_rng"])


def save_pretrained_to(
    staging: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def save_state(
    run_dir: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    blobs: dict,
    state: dict,
) -> None:
    """Resumable state, written to a staging dir and renamed over the previous one (which is
    moved aside first, so recover() can put it back if the kill comes in between)."""
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".checkpoint-"))
    save_pretrained_to(staging / MODEL_DIR, model, tokenizer)
    torch.save(blobs, staging / BLOBS_FILE)
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    target, old = run_dir / STATE_DIR, run_dir / OLD_STATE_DIR
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def load_state(run_dir: Path) -> tuple[dict, dict]:
    """(state.json, the tensors blob) of the run's checkpoint."""
    state_dir = run_dir / STATE_DIR
    state = json.loads((state_dir / STATE_FILE).read_text())
    return state, torch.load(state_dir / BLOBS_FILE, weights_only=False)


def has_state(run_dir: Path) -> bool:
    return (run_dir / STATE_DIR / STATE_FILE).exists()


def state_model_dir(run_dir: Path) -> Path:
    return run_dir / STATE_DIR / MODEL_DIR


def save_model(
    run_dir: Path, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """save_pretrained of model with its tokenizer into run_dir/name, atomically."""
    path = run_dir / name
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{path.name}-"))
    save_pretrained_to(staging, model, tokenizer)
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(path)
    return path


def recover(run_dir: Path) -> None:
    """Undo what a kill during save_state()/save_model() left behind: put the previous
    checkpoint back if the new one never got renamed in, and drop half-built staging dirs."""
    target, old = run_dir / STATE_DIR, run_dir / OLD_STATE_DIR
    if not (target / STATE_FILE).exists() and (old / STATE_FILE).exists():
        shutil.rmtree(target, ignore_errors=True)
        old.rename(target)
    for pattern in (".checkpoint-*", ".final-*", ".step-*"):
        for staging in run_dir.glob(pattern):
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
    for name in (METRICS_FILE, SUMMARY_FILE, CONFIG_FILE):  # atomic writes' temp files
        for temp in run_dir.glob(f".{name}.*"):
            temp.unlink(missing_ok=True)


def checkpoint_plan(run_dir: Path) -> Path | None:
    """The plan a run's checkpoint was trained with (None when there is none)."""
    state_file = run_dir / STATE_DIR / STATE_FILE
    if not state_file.exists():
        state_file = run_dir / OLD_STATE_DIR / STATE_FILE
    if not state_file.exists():
        return None
    plan = json.loads(state_file.read_text()).get("plan")
    return Path(plan) if plan and Path(plan).exists() else None


def truncate_metrics(metrics_path: Path, lines_at_checkpoint: int, step: int) -> None:
    """Lines written after the checkpoint belong to steps that will run again: drop them."""
    text = metrics_path.read_text() if metrics_path.exists() else ""
    lines = text.splitlines(keepends=True)
    if len(lines) < lines_at_checkpoint:
        raise DataError(
            f"{metrics_path}: {len(lines)} lines but the checkpoint at step {step} was taken "
            f"after {lines_at_checkpoint}; the run directory was changed by hand, start over "
            "with --overwrite"
        )
    atomic_write_text(metrics_path, "".join(lines[:lines_at_checkpoint]))
