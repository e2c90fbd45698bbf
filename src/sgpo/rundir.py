"""What sgpo may do in an output directory: replace only what it wrote, one process at a time,
and resume only what the same inputs started.

- Outputs: every name sgpo creates in a directory is listed in OUTPUTS_FILE before it is
  written; an existing file or folder not listed there is never deleted or replaced, with or
  without --overwrite (claim_outputs refuses first, before anything is touched).
- Lock: a command holds an exclusive flock on the directory itself while it runs, so a second
  train/profile on the same directory stops at once instead of interleaving with the first.
- Fingerprints: the config keys that change a run's result and a sha256 of the initial model's
  weight files, recorded in checkpoints and profiles; a resume with other inputs is refused,
  naming the keys that differ.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from sgpo.errors import DataError, RunDirBusyError
from sgpo.io import atomic_write_json, make_out_dir, read_table, read_table_metadata
from sgpo.runfiles import PLAN_PLOTS

OUTPUTS_FILE = "sgpo-outputs.json"

# An atomic write's temp file: ".<name>." + mkstemp's 8 random characters.
_TEMP_SUFFIX = re.compile(r"\.[a-z0-9_]{8}")


# ------------------------------------------------------------------------------ outputs


def _outputs_path(out_dir: Path) -> Path:
    return out_dir / OUTPUTS_FILE


def written_by_sgpo(out_dir: Path) -> set[str]:
    """Names sgpo recorded as its own in out_dir (empty when it has no record)."""
    path = _outputs_path(out_dir)
    if not path.exists():
        return set()
    try:
        names = json.loads(path.read_text())["created"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not sgpo's list of outputs ({e}); remove it by hand") from e
    # a name sgpo writes is a plain relative path inside out_dir: one that is not ("../x",
    # "./x", "/x") would have sgpo replace or clean up outside it
    odd = [n for n in names if not isinstance(n, str) or not _plain_relative(n)]
    if not isinstance(names, list) or odd:
        raise DataError(
            f"{path}: not sgpo's list of outputs (it names {odd[:1] or names!r}, not a path "
            "inside the directory); remove it by hand"
        )
    return set(names)


def _plain_relative(name: str) -> bool:
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts) and "\\" not in name


def claim_outputs(
    out_dir: Path, names: Iterable[str], adopt: Callable[[Path], bool] | None = None
) -> None:
    """Record names as sgpo's outputs in out_dir, after checking that none of them already
    exists without having been written by sgpo (FileExistsError naming it otherwise). adopt
    tells an existing, unlisted output that an older sgpo wrote before it recorded that name
    (the rest of its directory shows it is sgpo's); such a one is recorded, not refused."""
    make_out_dir(out_dir)
    ours = written_by_sgpo(out_dir)
    names = set(names)
    for name in sorted(names - ours):
        path = out_dir / name
        if (path.exists() or path.is_symlink()) and not (adopt and adopt(path)):
            raise FileExistsError(
                f"{path} exists and was not written by sgpo (not listed in "
                f"{_outputs_path(out_dir)}); sgpo does not delete or replace it, even with "
                "--overwrite: move it away or choose another --out"
            )
    if not names <= ours:
        atomic_write_json(_outputs_path(out_dir), {"created": sorted(ours | names)})


@contextlib.contextmanager
def claimed(
    out_dir: Path,
    names: Iterable[str],
    command: str,
    adopt: Callable[[Path], bool] | None = None,
) -> Iterator[None]:
    """claim_outputs, then locked, around one command's run. A run that stops before writing
    any output it newly claimed (a refused input, a busy directory) takes those names back off
    the list, and removes the folders the claim made while they are empty, so a refused
    command leaves no trace of itself. A run that finishes takes off the names it claimed
    and did not write (final-merged/ without LoRA, tensorboard/ unasked), or removed, those an
    interrupted run of it listed too: a folder of yours made there later by that name is not
    sgpo's to replace. A name another command may list ahead of its own write (the demo's
    claim of the plan's plots, which its report draws) stays listed, unless this run claimed
    it anew."""
    names = set(names)
    made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    new = names - written_by_sgpo(out_dir)
    claim_outputs(out_dir, names, adopt)
    try:
        with locked(out_dir, command):
            there = {n for n in names if _present(out_dir / n)}
            yield
            own = names - set(PLAN_PLOTS)
            gone = {n for n in new | there | own if not _present(out_dir / n)}
            if gone:
                _unclaim(out_dir, gone)
    except BaseException:
        if not any(_present(out_dir / name) for name in new):
            _unclaim(out_dir, new)
            _remove_empty_folders(made)
        raise


def remove_if_untouched(out_dir: Path, made: list[Path]) -> None:
    """After a command that stopped: its outputs list removed where out_dir holds nothing else
    (its claim wrote it, and nothing came after), and the folders the command made (made:
    deepest first) with it while empty, so a command that failed before writing anything (the
    demo of a dataset it cannot reach) leaves no trace."""
    if not out_dir.is_dir() or any(path.name != OUTPUTS_FILE for path in out_dir.iterdir()):
        return
    (out_dir / OUTPUTS_FILE).unlink(missing_ok=True)
    _remove_empty_folders(made)


def _remove_empty_folders(made: list[Path]) -> None:
    """The folders a command made (deepest first), while they are empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else is there now
            break


def release_unwritten(out_dir: Path, names: Iterable[str]) -> None:
    """Take off out_dir's list the names a command claimed up front and did not write (what
    claimed() does for the commands it holds)."""
    absent = {n for n in names if not _present(out_dir / n)}
    if absent & written_by_sgpo(out_dir):
        _unclaim(out_dir, absent)


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _unclaim(out_dir: Path, names: set[str]) -> None:
    """Take names off out_dir's list of sgpo's outputs, re-read now: what another command
    listed since stays listed."""
    kept = written_by_sgpo(out_dir) - names
    if kept:
        atomic_write_json(_outputs_path(out_dir), {"created": sorted(kept)})
    else:
        _outputs_path(out_dir).unlink(missing_ok=True)


def remove_stale_temps(out_dir: Path) -> None:
    """Temp files that a killed atomic write of one of sgpo's outputs left behind (only call
    with the directory locked: then no other writer's temp file can be in flight)."""
    ours = written_by_sgpo(out_dir) | {OUTPUTS_FILE}
    for name in ours:
        for temp in out_dir.glob(f".{glob_escape(name)}.*"):
            if _TEMP_SUFFIX.fullmatch(temp.name[len(name) + 1 :]) and temp.is_file():
                temp.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# --------------------------------------------------------------------------------- lock


# Directories this process holds for its own stages (locked with stages=True): sgpo demo holds
# its directory around profile, plan and train, which lock it again (a second flock of the
# same process would be refused).
_HELD: set[Path] = set()
# The commands a busy directory's message may tell to resume once it is free.
RESUMABLE = ("profile", "train")


@contextlib.contextmanager
def locked(out_dir: Path, command: str, stages: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on out_dir (flock on the directory: no lock file to go stale;
    released by the kernel when the process dies, even by SIGKILL). With stages, the commands
    this process runs inside the hold lock out_dir again as a no-op; any other second lock is
    refused, in this process too."""
    make_out_dir(out_dir)
    key = out_dir.resolve()
    if key in _HELD:  # the holder releases it
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            then = "--resume" if command in RESUMABLE else f"run `sgpo {command}` again"
            raise RunDirBusyError(
                f"{out_dir} is in use by another sgpo process; `sgpo {command}` stopped without "
                f"touching it (wait for that process to finish, or end it, then {then})"
            ) from None
        if stages:
            _HELD.add(key)
        try:
            remove_stale_temps(out_dir)
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ------------------------------------------------------------------------- fingerprints

# Config keys that do not change what a run computes: how it is reported, checkpointed,
# batched for generation (each sample has its own seed) or where the model cache lives; and
# how long it runs, so that a finished run can be resumed to train further (the steps already
# taken are the same either way; a decaying lr schedule then follows the new length).
NEUTRAL_KEYS = (
    "train.steps",
    "train.max_total_flops",
    "train.max_total_flops_train_all",
    "train.max_generated_tokens",
    "train.report_to",
    "train.report_project",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "sampling.batch_size",
    "profile.chunk_size",
    "profile.engine",
    "profile.vllm_kwargs",
    "eval.engine",
    "eval.vllm_kwargs",
    "model.embedded.cache_dir",
    "model.lora.save_merged",  # an output beside final/, written at the end
)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def is_one_of(key: str, names: Iterable[str]) -> bool:
    """Whether a dotted key is one of names or inside one ("profile.vllm_kwargs.x")."""
    return any(key == n or key.startswith(n + ".") for n in names)


def config_fingerprint(config_tree: dict) -> dict[str, object]:
    """The dotted config keys that decide a run's result, with their values."""
    flat = flatten(config_tree)
    return {key: value for key, value in flat.items() if not is_one_of(key, NEUTRAL_KEYS)}


def differing_keys(recorded: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between two (nested) dicts, sorted."""
    a, b = flatten(recorded), flatten(current)
    return sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each dotted key whose value differs (differing_keys' order)."""
    a, b = flatten(old), flatten(new)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in differing_keys(old, new)]


def _hash_cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sgpo" / "weights-sha256.json"


MODEL_CONFIGS = ("config.json", "adapter_config.json")  # hashed with the weights


def weights_sha256(source: str, base: str | None = None) -> str | None:
    """sha256 over the weight files (and config.json, or a LoRA adapter's adapter_config.json
    and its local base model's weights) of a local model directory, cached by (path, size,
    mtime) so an unchanged multi-GB model is hashed once. None for a hub id: its files are not
    local until transformers downloads them (the hub pins them by revision). base: the model an
    adapter was put on instead of the one it records (Policy.substitute_base)."""
    root = Path(source).expanduser()
    if not root.is_dir():
        return None
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in MODEL_CONFIGS)
    )
    cache_path = _hash_cache_path()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    total = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in cache:
            cache[key] = file_sha256(path)
            changed = True
        total.update(f"{path.relative_to(root)}\0{cache[key]}\n".encode())
    if changed:
        with contextlib.suppress(OSError):  # a read-only home only costs re-hashing
            atomic_write_json(cache_path, cache)
    adapter = root / "adapter_config.json"
    if adapter.is_file():  # an adapter is only what it adapts: its base's weights too
        with contextlib.suppress(OSError, ValueError, AttributeError):
            base = base or json.loads(adapter.read_text()).get("base_model_name_or_path")
            if base and Path(base).resolve() != root.resolve():
                total.update(f"base\0{weights_sha256(base)}\n".encode())
    return total.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


VERIFIER_CODE_KEY = "verifier_code_sha256"  # verify.verifier_code_sha256 of the task's verifier
# a profile's: models.chat_template_sha256 of the template its prompts went through
CHAT_TEMPLATE_KEY = "chat_template_sha256"


def run_fingerprint(config_tree: dict, model_source: str, verifier_code: str | None) -> dict:
    """What a checkpoint or profile records about its inputs, for check_same_inputs."""
    return {
        "config": config_fingerprint(config_tree),
        "model_sha256": weights_sha256(model_source),
        VERIFIER_CODE_KEY: verifier_code,
    }


def comparable_inputs(recorded: dict, current: dict) -> tuple[dict, dict]:
    """Two fingerprints' inputs as they compare: the verifier code's hash, which an sgpo before
    it did not record, is left out of both unless both hold it; so is a config key one of them
    lacks while the other holds None (a setting added since, at its default, e.g.
    task.success_threshold)."""
    a, b = _without_unset_new_keys(recorded, current)
    if VERIFIER_CODE_KEY in a and VERIFIER_CODE_KEY in b:
        return a, b
    return (
        {k: v for k, v in a.items() if k != VERIFIER_CODE_KEY},
        {k: v for k, v in b.items() if k != VERIFIER_CODE_KEY},
    )


def _without_unset_new_keys(a: dict, b: dict) -> tuple[dict, dict]:
    config_a, config_b = a.get("config"), b.get("config")
    if not (isinstance(config_a, dict) and isinstance(config_b, dict)):
        return a, b
    return (
        a | {"config": {k: v for k, v in config_a.items() if v is not None or k in config_b}},
        b | {"config": {k: v for k, v in config_b.items() if v is not None or k in config_a}},
    )


def first_of(items: list[str], shown: int = 8) -> str:
    """Items joined by "; ", the first `shown` of them, then how many more there are."""
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def check_same_inputs(where: Path, recorded: dict | None, current: dict) -> None:
    """Refuse to continue work recorded at `where` with other inputs, naming what differs."""
    if recorded is None:
        raise DataError(
            f"{where}: records no fingerprint of its config and model, so a resume cannot be "
            "checked; start over with --overwrite"
        )
    differ = changes(*comparable_inputs(recorded, current))
    if not differ:
        return
    shown = first_of(differ)
    raise DataError(
        f"{where}: made with other inputs than this resume's: {shown}. Resume with the "
        "same config, model and verifier code, or start over with --overwrite"
    )


# What a profile depends on: the model, the task and its verifier, sampling, the seed and k.
PROFILE_SECTIONS = ("seed", "model.", "task.", "sampling.", "profile.")


def profile_config(config_tree: dict) -> dict:
    """The part of a config tree a profile's numbers depend on (train/plan/eval left out)."""
    flat = flatten(config_tree)
    return {k: v for k, v in flat.items() if k == "seed" or k.startswith(PROFILE_SECTIONS[1:])}


# Settings recorded with a profile that draw no other sample, so a resume, a shard or a plan
# under other values is the same profile: the eval split's (a profile does not read it), and the
# model's training-only and execution settings (a fresh LoRA adapter starts at zero; the device
# as written: the precision it resolves to is recorded apart, profile.DTYPE_KEY).
PROFILE_UNREAD_KEYS = (
    "task.file.eval",
    "task.file.split_eval",
    "task.file.limit_eval",
    "model.device",
    "model.gradient_checkpointing",
    "model.lora",
)


def check_profile_inputs(final: Path, chunk_dir: Path, inputs: dict) -> None:
    """Before a profile resume: the finished table or the first chunk must have been made from
    the same inputs (names the differing config keys, or model_sha256 for other weights)."""
    chunks = sorted(chunk_dir.glob("chunk-*.parquet")) if chunk_dir.is_dir() else []
    for path in [final, *chunks[:1]]:
        if path.exists():
            meta = read_table_metadata(path) if path == final else read_chunk_metadata(path)
            recorded, current = without_moved_model(meta.get("inputs"), inputs["inputs"])
            check_same_inputs(path, profile_read_inputs(recorded), profile_read_inputs(current))


def same_weights(a: object, b: object) -> bool:
    """Whether two fingerprints' inputs record the same model weights (by sha256)."""
    weights = a.get("model_sha256") if isinstance(a, dict) else None
    return weights is not None and isinstance(b, dict) and weights == b.get("model_sha256")


def without_moved_model(a: object, b: object) -> tuple[object, object]:
    """Two fingerprints' inputs without the model's path where both record the same weights
    (another machine's copy, another install's embedded model: the same model, as sgpo plan
    reads it)."""
    if not same_weights(a, b):
        return a, b
    return _without_model_path(a), _without_model_path(b)


def _without_model_path(inputs: dict) -> dict:
    """A fingerprint without config's model.name_or_path (flat or nested, as recorded)."""
    config = inputs.get("config")
    if not isinstance(config, dict):
        return inputs
    config = {k: v for k, v in config.items() if k != "model.name_or_path"}
    if isinstance(config.get("model"), dict):
        config["model"] = {k: v for k, v in config["model"].items() if k != "name_or_path"}
    return inputs | {"config": config}


def profile_read_inputs(inputs: object) -> object:
    """A profile's inputs without the config keys of what it does not read."""
    if not isinstance(inputs, dict) or not isinstance(inputs.get("config"), dict):
        return inputs
    config = {
        key: value
        for key, value in inputs["config"].items()
        if not any(key == name or key.startswith(name + ".") for name in PROFILE_UNREAD_KEYS)
    }
    return inputs | {"config": config}


def read_chunk_table(path: Path, columns: list[str] | None = None) -> tuple[list[dict], dict]:
    """A profile chunk's rows (of the columns named, or all) and metadata; a damaged one is a
    DataError saying it can be redone alone."""
    try:
        return read_table(path, columns)
    except DataError as e:
        raise DataError(f"{e}; {REDO_A_CHUNK}") from e


def read_chunk_metadata(path: Path) -> dict:
    """A profile chunk's metadata, without its rows (read_chunk_table's message if damaged)."""
    try:
        return read_table_metadata(path)
    except DataError as e:
        raise DataError(f"{e}; {REDO_A_CHUNK}") from e


REDO_A_CHUNK = "remove it and resume again to profile only its queries"
