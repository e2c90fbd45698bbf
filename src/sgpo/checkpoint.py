"""The run directory's resumable state and saved models, each written to a staging folder and
renamed into place, so a kill at any moment leaves either the old or the new one.

Nothing in a checkpoint can run code when loaded: tensors (optimizer moments, random generator
states) are in safetensors, everything else is JSON, and MANIFEST.json lists the sha256 of
every file; a checkpoint with a changed, missing or extra file (a planted pickle, a flipped
bit) is refused before any of it is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sgpo.errors import DataError
from sgpo.io import atomic_write_bytes, read_json, read_jsonl, with_umask_modes
from sgpo.rundir import file_sha256
from sgpo.runfiles import (
    CONFIG_FILE,
    METRICS_FILE,
    OLD_STATE_DIR,
    PLAN_FILE,
    STATE_DIR,
    STATE_FILE,
    SUMMARY_FILE,
)

TENSORS_FILE = "trainer.safetensors"  # optimizer moments, random generator states
BLOBS_FILE = "trainer.json"  # the rest of optimizer, lr schedule and generator states
MANIFEST_FILE = "MANIFEST.json"  # sha256 of every other file of the checkpoint
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


def _encode(value: object, tensors: dict[str, torch.Tensor]) -> object:
    """JSON-able form of a state dict: tensors move to `tensors` (referenced by key); tuples,
    numpy arrays and dicts with non-string keys are tagged so that _decode rebuilds them."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _encode(v, tensors) for k, v in value.items()}}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def _decode(value: object, tensors: dict[str, torch.Tensor]) -> object:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value["__dict__"].items()}


def _write_manifest(folder: Path) -> None:
    files = {
        str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }
    (folder / MANIFEST_FILE).write_text(json.dumps({"sha256": files}, indent=1, sort_keys=True))


def verify_checkpoint(folder: Path) -> None:
    """Refuse a checkpoint whose files are not exactly the ones sgpo wrote (MANIFEST.json)."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.exists():
        raise DataError(
            f"{manifest_path} not found: {folder} is not a checkpoint this sgpo wrote (older "
            "checkpoints stored pickles, which are never loaded); start over with --overwrite"
        )
    try:
        want = json.loads(manifest_path.read_text())["sha256"]
    except (ValueError, KeyError) as e:
        raise DataError(f"{manifest_path}: unreadable manifest ({e})") from e
    have = {
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p != manifest_path
    }
    extra, missing = sorted(have - set(want)), sorted(set(want) - have)
    if extra or missing:
        raise DataError(
            f"{folder}: files not written by sgpo {extra} / missing {missing}; the checkpoint "
            "was changed after it was written and is not loaded"
        )
    for name, digest in want.items():
        if file_sha256(folder / name) != digest:
            raise DataError(
                f"{folder / name}: sha256 differs from {manifest_path}; the checkpoint is "
                "corrupt or was changed, and is not loaded"
            )


def save_state(
    run_dir: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    blobs: dict,
    state: dict,
    plan: Path | None = None,
) -> None:
    """Resumable state, written to a staging dir and renamed over the previous one (which is
    moved aside first, so recover() can put it back if the kill comes in between). A copy of
    the plan the run trains with goes in too: a resume needs it, wherever the original went."""
    with _staging(run_dir, ".checkpoint-") as staging:
        if plan is not None:
            shutil.copyfile(plan, staging / PLAN_FILE)
        save_pretrained_to(staging / MODEL_DIR, model, tokenizer)
        tensors: dict[str, torch.Tensor] = {}
        (staging / BLOBS_FILE).write_text(json.dumps(_encode(blobs, tensors)))
        save_file(tensors, staging / TENSORS_FILE)
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        _write_manifest(staging)
        with_umask_modes(staging)
    _swap_in(staging, run_dir / STATE_DIR, run_dir / OLD_STATE_DIR)


@contextlib.contextmanager
def _staging(run_dir: Path, prefix: str) -> Iterator[Path]:
    """A folder to build a checkpoint or model in, removed if building it fails (a full disk,
    an error): a model-sized folder is not left behind."""
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=prefix))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path, aside: Path) -> None:
    """Rename a fully written staging dir over target. The previous target is renamed to
    `aside` first and removed last, so a kill in between leaves it for recover(); the new
    one's files are on disk before it is renamed in, and the renames before the previous one
    goes, so a power loss cannot leave an installed checkpoint of empty files and none older."""
    sync_tree(staging)
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)
    staging.rename(target)
    sync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under folder, folder included."""
    for path in folder.rglob("*"):
        if path.is_file():
            _sync_file(path)
        elif path.is_dir():
            sync_dir(path)
    sync_dir(folder)


def _sync_file(path: Path) -> None:
    """fsync a file, open for writing where its mode allows (Windows flushes only such)."""
    try:
        f = path.open("r+b")
    except PermissionError:  # a read-only mode (a umask of 0o222): POSIX syncs it read-only
        f = path.open("rb")
    with f:
        os.fsync(f.fileno())


def sync_dir(folder: Path) -> None:
    """fsync a folder's entries (a rename in it, a file made in it), where the platform and
    file system allow it (Windows cannot open a folder; some network file systems refuse its
    fsync): there the renames are as durable as the file system makes them."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_state(run_dir: Path) -> dict:
    """state.json of the run's checkpoint, after checking the checkpoint against its
    manifest; its tensors are load_state_blobs'."""
    state_dir = run_dir / STATE_DIR
    verify_checkpoint(state_dir)
    state = read_json(state_dir / STATE_FILE)
    check_state_fields(state, state_dir / STATE_FILE)
    return state


# state.json's fields a resume reads, and their JSON types (None: any, null included)
_COUNT, _NUMBER = (int,), (int, float)
STATE_FIELDS: dict[str, tuple[type, ...] | None] = {
    "step": _COUNT,
    "metrics_lines": _COUNT,
    "nonfinite_in_a_row": _COUNT,
    "nonfinite_total": _COUNT,
    "flops_skipped": _NUMBER,
    "generated_tokens": _NUMBER,
    "wall_s": _NUMBER,
    "flops": (dict,),
    "verifier": (dict,),
    "scheduler": None,
    "planner": None,
    "reuse": None,
}


def check_state_fields(state: dict, path: Path) -> None:
    """DataError naming the field when state.json lacks one a resume reads, or holds another
    type (a file edited by hand, or written by an sgpo that kept other fields)."""
    for field, types in STATE_FIELDS.items():
        if field not in state:
            problem = "is missing"
        elif types is not None and (
            isinstance(state[field], bool) or not isinstance(state[field], types)
        ):
            problem = f"is {type(state[field]).__name__} {state[field]!r:.40}"
        else:
            continue
        raise DataError(
            f"{path}: field {field!r} {problem}: not a checkpoint this sgpo can resume "
            "(edited, or written by another version); start over with --overwrite"
        )


def load_state_blobs(run_dir: Path) -> dict:
    """The optimizer, lr schedule and generator states of the checkpoint load_state checked
    (read only when they are restored: the optimizer's moments are ~8 bytes a parameter)."""
    state_dir = run_dir / STATE_DIR
    try:
        tensors = load_file(state_dir / TENSORS_FILE)
    except SafetensorError as e:
        raise DataError(f"{state_dir / TENSORS_FILE}: not a safetensors file ({e})") from e
    return _decode(json.loads((state_dir / BLOBS_FILE).read_text()), tensors)


def has_state(run_dir: Path) -> bool:
    return (run_dir / STATE_DIR / STATE_FILE).exists()


def state_model_dir(run_dir: Path) -> Path:
    """The checkpoint's model folder, once the whole checkpoint matches its manifest."""
    verify_checkpoint(run_dir / STATE_DIR)
    return run_dir / STATE_DIR / MODEL_DIR


def save_model(
    run_dir: Path, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """save_pretrained of model with its tokenizer into run_dir/name, atomically."""
    path = run_dir / name
    with _staging(run_dir, f".{path.name}-") as staging:
        save_pretrained_to(staging, model, tokenizer)
        with_umask_modes(staging)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The aside name matches recover()'s staging patterns, so a leftover one is removed.
    _swap_in(staging, path, run_dir / f".{path.name}-old")
    return path


def recover(run_dir: Path) -> None:
    """Undo what a kill during save_state()/save_model() left behind: put the previous
    checkpoint back if the new one never got renamed in, and drop half-built staging dirs."""
    target, old = run_dir / STATE_DIR, run_dir / OLD_STATE_DIR
    if not (target / STATE_FILE).exists() and (old / STATE_FILE).exists():
        shutil.rmtree(target, ignore_errors=True)
        old.rename(target)
    remove_leftovers(run_dir)


def remove_leftovers(run_dir: Path) -> None:
    """Half-built checkpoints and models, and atomic writes' temp files, a kill left in
    run_dir (only while it is locked: no other process is building one)."""
    for pattern in (".checkpoint-*", ".final-*", ".step-*"):
        for staging in run_dir.glob(pattern):
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
    for name in (METRICS_FILE, SUMMARY_FILE, CONFIG_FILE):  # atomic writes' temp files
        for temp in run_dir.glob(f".{name}.*"):
            temp.unlink(missing_ok=True)


def _state_file(run_dir: Path) -> Path | None:
    """The checkpoint's state.json (the previous one's while a swap was cut short), if any."""
    for state_dir in (STATE_DIR, OLD_STATE_DIR):
        if (run_dir / state_dir / STATE_FILE).exists():
            return run_dir / state_dir / STATE_FILE
    return None


def checkpoint_plan_copy(run_dir: Path) -> Path | None:
    """The checkpoint's own copy of the plan it was trained with; None without a checkpoint or
    in one of an sgpo that kept no copy."""
    state_file = _state_file(run_dir)
    copy = None if state_file is None else state_file.parent / PLAN_FILE
    return copy if copy is not None and copy.exists() else None


def checkpoint_plan(run_dir: Path) -> Path | None:
    """The plan a run's checkpoint was trained with: its own copy, or in a checkpoint of an
    sgpo that kept none, the path it names (which may have been moved or replaced since);
    None when there is no checkpoint or it names none."""
    state_file = _state_file(run_dir)
    if state_file is None:
        return None
    if (copy := checkpoint_plan_copy(run_dir)) is not None:
        return copy
    plan = read_json(state_file).get("plan")
    if plan is not None and not isinstance(plan, str):
        raise DataError(f"{state_file}: field 'plan' is {type(plan).__name__}, not a path")
    return Path(plan) if plan else None


def truncate_metrics(metrics_path: Path, records_at_checkpoint: int, step: int) -> int:
    """Records written after the checkpoint belong to steps that will run again: drop them, and
    a last line a kill left unfinished (returns how many records were dropped). The file must
    still hold the records_at_checkpoint complete records the checkpoint was taken after."""
    data = metrics_path.read_bytes() if metrics_path.exists() else b""
    *complete, _unfinished = data.split(b"\n")
    ends = [i + 1 for i, line in enumerate(complete) if line.strip()]  # after each record
    if len(ends) < records_at_checkpoint:
        raise DataError(
            f"{metrics_path}: {len(ends)} complete records but the checkpoint at step {step} was "
            f"taken after {records_at_checkpoint}: the file was cut short or changed by hand; "
            "restore it from a copy, or start over with --overwrite"
        )
    kept = complete[: ends[records_at_checkpoint - 1]] if records_at_checkpoint else []
    atomic_write_bytes(metrics_path, b"".join(line + b"\n" for line in kept))
    read_jsonl(metrics_path)  # a damaged record is named now, not after more training
    return len(ends) - records_at_checkpoint
