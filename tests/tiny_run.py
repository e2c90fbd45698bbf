"""A tiny, fast run for the fault-injection tests: the embedded model at its smallest (no warm
start: the coin-flip verifier gives every group mixed rewards anyway, so training really moves
the weights), the addition task with a couple of dozen queries, and helpers to run the CLI in a
subprocess that a test can SIGKILL."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import yaml

TESTS = Path(__file__).parent

BASE: dict = {
    "seed": 0,
    "model": {
        "name_or_path": "embedded",
        "device": "cpu",
        "dtype": "float32",
        "embedded": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "num_kv_heads": 1,
            "intermediate_size": 64,
            "warmup_steps": 0,
            "skill_targets": None,
        },
    },
    "task": {
        "kind": "addition",
        "addition": {"digits": [1, 2], "weights": [1.0, 1.0], "n_train": 24, "n_eval": 8},
        "verifier": "bad_verifiers:coin_flip",
    },
    "sampling": {"temperature": 1.0, "max_new_tokens": 4, "batch_size": 64},
    "profile": {"k": 4, "chunk_size": 2},
    "plan": {"g_min": 2, "g_max": 4, "unsolvable_keep_fraction": 1.0},
    "train": {
        "method": "sgpo",
        "group_size": 4,
        "steps": 6,
        "rollout_budget": 8,
        "micro_batch_size": 8,
        "eval_every": 3,
        "checkpoint_every": 1,
        "lr": 0.01,
    },
    "eval": {"n_samples": 1, "greedy": False},
}


def load_script(path: Path) -> ModuleType:
    """A script that is not a package module (benchmarks/*.py, examples/*/*.py) as a module,
    its directory on sys.path as when it is run (so it imports its sibling scripts)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def merge(tree: dict, patch: dict) -> dict:
    out = copy.deepcopy(tree)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_tree(cache_dir: Path, **sections: dict) -> dict:
    """The tiny run's config tree, with sections merged in (e.g. train={"method": "grpo"})."""
    tree = merge(BASE, {"model": {"embedded": {"cache_dir": str(cache_dir)}}})
    return merge(tree, sections)


def write_config(path: Path, tree: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    """This interpreter's environment plus tests/ on the path (for bad_verifiers)."""
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}


def start_cli(args: list[str], log: Path) -> subprocess.Popen:
    """`sgpo ARGS` in a subprocess of this interpreter, output to LOG."""
    with log.open("ab") as out:
        out.write(f"\n$ sgpo {' '.join(args)}\n".encode())
        out.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "sgpo.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
            # Lower priority than the polling test, so that on a busy machine the kill still
            # lands before the child has finished.
            preexec_fn=lambda: os.nice(10),
        )


def kill_when(
    proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout_s: float = 180.0
) -> None:
    """Poll until ready(), then SIGKILL the process (no cleanup runs). Fails if the process
    ends first or the condition never comes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended (rc {proc.returncode}) before the kill point:\n"
                + log.read_text()[-4000:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("kill point never reached:\n" + log.read_text()[-4000:])
        time.sleep(0.01)
    proc.kill()  # SIGKILL
    proc.wait()


def stop_profile_at_chunk(monkeypatch: object, chunk: int, error: BaseException) -> None:
    """Make the next sgpo profile raise error as it starts its chunk-th chunk (from 1), as an
    interrupt or a kill there would: the chunks before it are written."""
    import sgpo.profile

    original = sgpo.profile._profile_and_write_chunk
    started = []

    def stopping(*args: object, **kwargs: object) -> object:
        started.append(1)
        if len(started) == chunk:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(sgpo.profile, "_profile_and_write_chunk", stopping)


def hand_plan_row(
    query_id: str, prompt: str, group_size: int, rank: int, reason: str = "kept"
) -> dict:
    """A plan.parquet row written by hand (the TRL tests' plans): k = 4 samples, half solved
    where kept, all where trivial."""
    return {
        "query_id": query_id,
        "prompt": prompt,
        "answer": "x",
        "difficulty": "1",
        "k": 4,
        "n_correct": 2 if reason == "kept" else 4,
        "p_hat": 0.5 if reason == "kept" else 1.0,
        "group_size": group_size,
        "kept": reason == "kept",
        "reason": reason,
        "rank": rank,
        "prompt_tokens": 4,
        "mean_response_tokens": 2.0,
    }


def write_hand_plan(path: Path, rows: list[dict]) -> Path:
    """rows as a plan.parquet with the metadata sgpo.trl.load_plan reads."""
    from dataclasses import asdict

    from sgpo.core.allocation import PlanRule
    from sgpo.io import write_table

    rule = PlanRule(g_min=1, g_max=4, unsolvable_keep_fraction=1.0)
    write_table(path, rows, {"rule": asdict(rule), "profile_flops": 123.0})
    return path


def tiny_model_dir(cache_dir: Path) -> str:
    """The tiny embedded model's folder (built into cache_dir once)."""
    from sgpo.config import RunConfig
    from sgpo.models import model_source

    return model_source(RunConfig.model_validate(tiny_tree(cache_dir)))
