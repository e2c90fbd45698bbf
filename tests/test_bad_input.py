"""Bad input, one table: each fixture and the exact error it must produce, naming the file, row
and field (config keys as `key.path: message`). Then numerical faults: a NaN/inf loss skips the
update and is counted; too many in a row stop the run with a usable checkpoint.

Bad rows of data files are in test_files.py (the loaders); here they go once through the CLI.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import tiny_tree, write_config
from typer.testing import CliRunner

import sgpo.side_by_side
import sgpo.train
import sgpo.update
from sgpo.cli import app
from sgpo.config import ConfigError, RunConfig, dump_config, load_config
from sgpo.errors import DataError, NonFiniteError
from sgpo.io import read_jsonl, read_table, write_table
from sgpo.models import model_source
from sgpo.plan import PLAN_OUTPUTS, run_plan
from sgpo.profile import PROFILE_OUTPUTS, run_profile
from sgpo.rundir import claim_outputs
from sgpo.runfiles import STATE_DIR
from sgpo.tasks import Query, check_queries
from sgpo.train import TRAIN_OUTPUTS, Trainer, run_train


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny config, its real profile and plan."""
    root = tmp_path_factory.mktemp("bad-input")
    tree = tiny_tree(
        root / "models",
        task={"addition": {"n_train": 8, "n_eval": 4}},
        profile={"k": 2, "chunk_size": 8},
        train={"steps": 4, "eval_every": 0},
    )
    config_path = write_config(root / "config.yaml", tree)
    config = load_config(config_path)
    profile = run_profile(config, root / "profiled")
    plan, _ = run_plan(config, profile, root / "profiled")
    return SimpleNamespace(
        root=root, tree=tree, config_path=config_path, config=config, profile=profile, plan=plan
    )


def yaml_file(tmp: Path, text: str) -> Path:
    path = tmp / "bad.yaml"
    path.write_text(text)
    return path


def written(path: Path, text: str) -> Path:
    """path's directory, holding path with text (a file a command must not replace)."""
    path.write_text(text)
    return path.parent


# one step of a verl file logger's JSONL, without perf/total_num_tokens
VERL_LOG = '{"step": 1, "prompt_length/mean": 10, "response_length/mean": 5}\n'


def sgpos_own(tmp: Path, name: str) -> Path:
    """tmp/name, listed as sgpo's output in tmp (a run's file)."""
    (tmp / "sgpo-outputs.json").write_text(json.dumps({"created": [name]}))
    (tmp / name).write_text("{}\n")
    return tmp / name


def yaml_bytes(tmp: Path, data: bytes) -> Path:
    path = tmp / "bad.yaml"
    path.write_bytes(data)
    return path


def retagged(src: Path, dst: Path, edit_rows: Callable | None = None, **meta: object) -> Path:
    """A copy of a profile/plan table with some metadata (and rows) changed."""
    rows, metadata = read_table(src)
    if edit_rows is not None:
        rows = edit_rows(rows)
    write_table(dst, rows, metadata | meta)
    return dst


def of_another_model(src: Path, dst: Path) -> Path:
    """A copy of a profile/plan table made, as its metadata says, with another model: another
    folder holding other weights (the same weights elsewhere are the same model)."""
    inputs = read_table(src)[1].get("inputs") or {}
    return retagged(src, dst, model="/elsewhere/model", inputs=inputs | {"model_sha256": "0" * 64})


def unknown_kept_id(rows: list[dict]) -> list[dict]:
    """The first query of the curriculum renamed to one the task does not have, moved to the
    file's first row (the error names the row in the file)."""
    first = min((r for r in rows if r["kept"]), key=lambda r: r["rank"])
    first["query_id"] = "add:98+99"
    return [first, *(r for r in rows if r is not first)]


def other_task(env: SimpleNamespace) -> RunConfig:
    return load_config(env.config_path, ["task.addition.n_train=7"])


@dataclass
class Case:
    """run(tmp, env) does the bad thing; it must raise `error` with `message` in it ({tmp},
    {profile}, {plan}, {model} and {task} stand for the fixture's paths and names)."""

    id: str
    run: Callable[[Path, SimpleNamespace], object]
    error: type[BaseException]
    message: str


CASES = [
    # ------------------------------------------------------------------ config
    Case(
        "config-unknown-key",
        lambda tmp, env: load_config(yaml_file(tmp, "train: {stepz: 3}\n")),
        ConfigError,
        "{tmp}/bad.yaml: invalid config\n  train.stepz: Extra inputs are not permitted; did you "
        "mean train.steps?",
    ),
    Case(
        "config-unknown-nested-key",
        lambda tmp, env: load_config(yaml_file(tmp, "model: {embedded: {hiden_size: 8}}\n")),
        ConfigError,
        "  model.embedded.hiden_size: Extra inputs are not permitted; did you mean "
        "model.embedded.hidden_size?",
    ),
    Case(
        "config-out-of-range",
        lambda tmp, env: load_config(yaml_file(tmp, "train: {lr: -1}\n")),
        ConfigError,
        "  train.lr: Input should be greater than 0",
    ),
    Case(
        "config-every-bad-key-listed",
        lambda tmp, env: load_config(yaml_file(tmp, "sampling: {top_p: 1.5}\nprofile: {k: 0}\n")),
        ConfigError,
        "  sampling.top_p: Input should be less than or equal to 1\n"
        "  profile.k: Input should be greater than or equal to 1",
    ),
    Case(
        "config-wrong-type",
        lambda tmp, env: load_config(yaml_file(tmp, "train: {steps: many}\n")),
        ConfigError,
        "  train.steps: Input should be a valid integer, unable to parse string as an integer",
    ),
    Case(
        "config-wrong-choice",
        lambda tmp, env: load_config(yaml_file(tmp, "train: {method: ppo}\n")),
        ConfigError,
        "  train.method: Input should be 'sgpo', 'grpo' or 'dapo'",
    ),
    Case(
        "config-inconsistent-keys",
        lambda tmp, env: load_config(yaml_file(tmp, "plan: {g_min: 4, g_max: 2}\n")),
        ConfigError,
        "plan.g_max (2) < plan.g_min (4)",
    ),
    Case(
        "config-not-yaml",
        lambda tmp, env: load_config(yaml_file(tmp, "train: [1\n")),
        ConfigError,
        "{tmp}/bad.yaml: not valid YAML",
    ),
    Case(
        "config-key-twice",
        lambda tmp, env: load_config(
            yaml_file(tmp, "train: {steps: 3}\nseed: 1\ntrain: {lr: 1}\n")
        ),
        ConfigError,
        "{tmp}/bad.yaml: not valid YAML: key 'train' given twice\n  in \"{tmp}/bad.yaml\", line 3",
    ),
    Case(
        "config-not-utf8",
        lambda tmp, env: load_config(yaml_bytes(tmp, b"\xff\xfetrain: {steps: 3}\n")),
        ConfigError,
        "{tmp}/bad.yaml: cannot read it as a UTF-8 text file",
    ),
    Case(
        "config-a-directory",
        lambda tmp, env: load_config(tmp),
        ConfigError,
        "{tmp}: cannot read it as a UTF-8 text file",
    ),
    Case(
        "override-not-yaml",
        lambda tmp, env: load_config(None, ["model.prompt_template={prompt} ="]),
        ConfigError,
        "override 'model.prompt_template={prompt} =': the value is not valid YAML",
    ),
    Case(
        "override-bool-for-a-number",
        lambda tmp, env: load_config(None, ["train.steps=true"]),
        ConfigError,
        "train.steps: Value error, expected numbers, got true",
    ),
    Case(
        "override-bools-in-a-list-of-numbers",
        lambda tmp, env: load_config(None, ["task.verifier_reward_range=[false, true]"]),
        ConfigError,
        "task.verifier_reward_range: Value error, expected numbers, got [false, true]",
    ),
    Case(
        "config-unhashable-key",
        lambda tmp, env: load_config(yaml_file(tmp, "train:\n  ? [a, b]\n  : 1\n")),
        ConfigError,
        "{tmp}/bad.yaml: not valid YAML: found an unhashable key (a list)",
    ),
    Case(
        "override-cut-by-a-comment",
        lambda tmp, env: load_config(None, ["model.system_prompt=Answer with #only the number"]),
        ConfigError,
        "' #' starts a YAML comment, which would drop the rest; quote the value",
    ),
    Case(
        "override-a-yaml11-base-60-number",
        lambda tmp, env: load_config(None, ["train.steps=1:30"]),
        ConfigError,
        "override 'train.steps=1:30': the value is not valid YAML ('1:30' is 90 in YAML 1.1 "
        "(base 60, octal or binary) but not in YAML 1.2",
    ),
    Case(
        "config-a-yaml11-octal-number",
        lambda tmp, env: load_config(yaml_file(tmp, "seed: 1\ntrain: {steps: 010}\n")),
        ConfigError,
        "{tmp}/bad.yaml: not valid YAML: '010' is 8 in YAML 1.1 (base 60, octal or binary) but "
        "not in YAML 1.2: write the number in base 10, or quote a text\n"
        '  in "{tmp}/bad.yaml", line 2',
    ),
    Case(
        "config-not-a-mapping",
        lambda tmp, env: load_config(yaml_file(tmp, "- train\n")),
        ConfigError,
        "{tmp}/bad.yaml: top level must be a mapping",
    ),
    Case(
        "config-missing-file",
        lambda tmp, env: load_config(tmp / "nope.yaml"),
        ConfigError,
        "config file not found: {tmp}/nope.yaml",
    ),
    Case(
        "override-without-equals",
        lambda tmp, env: load_config(None, ["train.steps"]),
        ConfigError,
        "override 'train.steps' must look like key.sub=value",
    ),
    Case(
        "override-into-a-value",
        lambda tmp, env: load_config(yaml_file(tmp, "train: {steps: 3}\n"), ["train.steps.x=1"]),
        ConfigError,
        "override 'train.steps.x': 'steps' is not a section",
    ),
    Case(
        "override-removes-what-is-not-set",
        lambda tmp, env: load_config(yaml_file(tmp, "train: {steps: 3}\n"), ["~train.stepz"]),
        ConfigError,
        "override '~train.stepz': {tmp}/bad.yaml does not set 'train.stepz'",
    ),
    Case(
        "override-unknown-key",
        lambda tmp, env: load_config(None, ["train.stepz=1"]),
        ConfigError,
        # the file or the defaults did not set it: the override did, and is named
        "<defaults>: invalid config\n  train.stepz: Extra inputs are not permitted; did you mean "
        "train.steps? (override 'train.stepz=1')",
    ),
    Case(
        "override-text-read-as-yaml",  # unquoted, `Q: {prompt}` is a mapping
        lambda tmp, env: load_config(None, ["model.prompt_template=Q: {prompt}"]),
        ConfigError,
        "  model.prompt_template: Input should be a valid string (override "
        "'model.prompt_template=Q: {prompt}'); values are YAML: quote a text with ': ' or "
        "braces, key='...'",
    ),
    Case(
        "override-out-of-range",
        lambda tmp, env: load_config(None, ["plan.unsolvable_keep_fraction=2"]),
        ConfigError,
        "  plan.unsolvable_keep_fraction: Input should be less than or equal to 1",
    ),
    Case(
        "trivial-share-with-re-planning",
        lambda tmp, env: load_config(
            None, ["plan.trivial_keep_fraction=0.5", "train.online.reestimate=true"]
        ),
        ConfigError,
        # a check across sections has no key path: no empty "  : " in front of it
        "invalid config\n  Value error, plan.trivial_keep_fraction is a static-plan setting",
    ),
    Case(
        "trivial-share-with-re-profiling",  # a re-profile re-plans too
        lambda tmp, env: load_config(
            None, ["plan.trivial_keep_fraction=0.5", "train.online.reprofile_every=8"]
        ),
        ConfigError,
        "Value error, plan.trivial_keep_fraction is a static-plan setting; it does not combine "
        "with train.online.reestimate or train.online.reprofile_every",
    ),
    # ------------------------------------------------------------------ queries
    Case(
        "empty-prompt",
        lambda tmp, env: check_queries(
            [Query("a", "p", "1"), Query("b", " \n", "2")], "data.jsonl"
        ),
        DataError,
        "data.jsonl: row 1: field 'prompt' is empty (id 'b')",
    ),
    Case(
        "empty-answer",
        lambda tmp, env: check_queries([Query("a", "p", " ")], "data.jsonl"),
        DataError,
        "data.jsonl: row 0: field 'answer' is empty (id 'a')",
    ),
    Case(
        "empty-id",
        lambda tmp, env: check_queries([Query("", "p", "1")], "data.jsonl"),
        DataError,
        "data.jsonl: row 0: field 'id' is empty",
    ),
    Case(
        "duplicate-id",
        lambda tmp, env: check_queries(
            [Query("a", "p", "1"), Query("b", "p", "1"), Query("a", "q", "2")], "data.jsonl"
        ),
        DataError,
        "data.jsonl: row 2: field 'id': duplicate query id 'a' (first at row 0)",
    ),
    # ------------------------------------------------------------------ profile / plan / train
    Case(
        "plan-from-profile-of-another-model",
        lambda tmp, env: run_plan(
            env.config, of_another_model(env.profile, tmp / "p.parquet"), tmp
        ),
        DataError,
        "{tmp}/p.parquet: field 'model' is '/elsewhere/model' but the config's model is "
        "'{model}' (another folder or hub id, and not the same weights); re-run sgpo profile "
        "with this config",
    ),
    Case(
        "plan-from-profile-of-another-task",
        lambda tmp, env: run_plan(other_task(env), env.profile, tmp),
        DataError,
        "{profile}: field 'task' is '{task}' but the config's task is "
        "'{task_7}'; re-run sgpo profile with this config",
    ),
    Case(
        "train-with-plan-of-another-model",
        lambda tmp, env: run_train(
            env.config, tmp, of_another_model(env.plan, tmp / "plan.parquet")
        ),
        DataError,
        "{tmp}/plan.parquet: field 'model' is '/elsewhere/model' but the config's model is "
        "'{model}'",
    ),
    Case(
        "train-with-plan-of-another-task",
        lambda tmp, env: run_train(
            env.config,
            tmp,
            # another task's training queries: other ones
            retagged(
                env.plan,
                tmp / "plan.parquet",
                task="addition(other)",
                train_queries={"rows": 8, "sha256": "0" * 64},
            ),
        ),
        DataError,
        "{tmp}/plan.parquet: field 'task' is 'addition(other)' but the config's task is '{task}'",
    ),
    Case(
        "train-with-plan-profiled-under-another-prompt-template",  # its p_hat: other samples
        lambda tmp, env: run_train(
            load_config(env.config_path, ["model.prompt_template=Sum {prompt}"]), tmp, env.plan
        ),
        DataError,
        "{plan}: profiled with other settings than this config (model.prompt_template: profile "
        "'{prompt}', config 'Sum {prompt}'): its p_hat was measured on other samples or scores",
    ),
    Case(
        "train-with-plan-profiled-under-another-verifier",
        lambda tmp, env: run_train(
            load_config(env.config_path, ["task.verifier=sgpo.verifiers:exact_match"]),
            tmp,
            env.plan,
        ),
        DataError,
        "(task.verifier: profile 'bad_verifiers:coin_flip', config 'sgpo.verifiers:exact_match')",
    ),
    Case(
        "profile-with-a-verifier-that-does-not-import",  # the user's setting: a config error
        lambda tmp, env: run_profile(
            load_config(env.config_path, ["task.verifier=no_such_module:score"]), tmp
        ),
        ConfigError,
        "task.verifier: cannot import verifier 'no_such_module:score': ModuleNotFoundError: "
        "No module named 'no_such_module'",
    ),
    Case(  # a mistyped built-in: named as the setting before anything is trained
        "train-with-a-built-in-verifier-that-does-not-import",
        lambda tmp, env: run_train(
            load_config(env.config_path, ["train.method=grpo", "task.verifier=sgpo.verifier:math"]),
            tmp,
        ),
        ConfigError,
        "task.verifier: cannot import verifier 'sgpo.verifier:math': ModuleNotFoundError: "
        "No module named 'sgpo.verifier'",
    ),
    Case(
        "profile-with-a-verifier-that-fails-as-it-imports",  # not a traceback either
        lambda tmp, env: run_profile(
            load_config(env.config_path, ["task.verifier=raises_at_import:score"]), tmp
        ),
        ConfigError,
        "task.verifier: cannot import verifier 'raises_at_import:score': RuntimeError: this "
        "module is broken at import",
    ),
    Case(
        "profile-with-a-misspelt-verifier-keyword",  # every call would raise
        lambda tmp, env: run_profile(
            load_config(
                env.config_path,
                ["task.verifier=sgpo.verifiers:numeric", "task.verifier_kwargs.rel_tole=1e-3"],
            ),
            tmp,
        ),
        ConfigError,
        "task.verifier_kwargs {'rel_tole': 0.001}: verifier 'sgpo.verifiers:numeric' is not "
        "called so (got an unexpected keyword argument 'rel_tole'); its signature is numeric(",
    ),
    Case(
        "profile-with-a-verifier-of-the-wrong-signature",  # no kwargs to blame
        lambda tmp, env: run_profile(
            load_config(env.config_path, ["task.verifier=bad_verifiers:one_argument"]), tmp
        ),
        ConfigError,
        "task.verifier 'bad_verifiers:one_argument' cannot be called as (response, reference) "
        "(too many positional arguments); its signature is one_argument(response: ",
    ),
    Case(
        "profile-with-a-verifier-of-the-wrong-signature-and-kwargs",  # not the kwargs' fault
        lambda tmp, env: run_profile(
            load_config(
                env.config_path,
                ["task.verifier=bad_verifiers:one_argument", "task.verifier_kwargs.tol=1"],
            ),
            tmp,
        ),
        ConfigError,
        "task.verifier 'bad_verifiers:one_argument' cannot be called as (response, reference) ",
    ),
    Case(
        "profile-with-a-verifier-that-always-fails",  # would find every query unsolvable
        lambda tmp, env: run_profile(
            load_config(env.config_path, ["task.verifier=bad_verifiers:raising"]), tmp
        ),
        DataError,
        "verifier 'bad_verifiers:raising': all 16 calls on the training queries 'add:0+5' "
        "to 'add:16+86' failed (16 raised or returned no reward in range, 0 timed out); the "
        "first errors are logged above. Either the verifier is broken (a wrong signature, a "
        "missing dependency) or it raises on every response",
    ),
    Case(
        "train-with-plan-naming-an-unknown-query",
        lambda tmp, env: run_train(
            env.config, tmp, retagged(env.plan, tmp / "plan.parquet", unknown_kept_id)
        ),
        DataError,
        "{tmp}/plan.parquet: row 0: field 'query_id' 'add:98+99' is not in the task's "
        "training queries",
    ),
    Case(
        "train-sgpo-without-plan",
        lambda tmp, env: run_train(env.config, tmp / "run"),
        FileNotFoundError,
        "method sgpo needs a plan: {tmp}/run/plan.parquet not found (run sgpo plan)",
    ),
    Case(
        "plan-from-a-profile-missing-a-row",  # the query would be left out without a word
        lambda tmp, env: run_plan(
            env.config, retagged(env.profile, tmp / "profile.parquet", lambda r: r[1:]), tmp
        ),
        DataError,
        "{tmp}/profile.parquet: 1 of the task's 8 training queries are not in it (e.g. ['add:",
    ),
    Case(
        "plan-from-a-profile-chunk",
        lambda tmp, env: run_plan(
            env.config,
            retagged(env.profile, tmp / "chunk-00000.parquet", lambda r: r[:4], chunk_size=4),
            tmp,
        ),
        DataError,
        "training queries are not in it (e.g. ['add:",
    ),
    Case(
        "plan-from-a-folder-of-chunks",
        lambda tmp, env: run_plan(
            env.config, retagged(env.profile, tmp / "chunks" / "chunk-00000.parquet").parent, tmp
        ),
        DataError,
        "{tmp}/chunks: a directory; give the table's .parquet file",
    ),
    Case(
        "plan-without-profile",
        lambda tmp, env: run_plan(env.config, tmp / "profile.parquet", tmp),
        FileNotFoundError,
        "{tmp}/profile.parquet: no such file",
    ),
]


def expand(message: str, tmp: Path, env: SimpleNamespace) -> str:
    from sgpo.tasks import load_task

    return (
        message.replace("{tmp}", str(tmp))
        .replace("{profile}", str(env.profile))
        .replace("{plan}", str(env.plan))
        .replace("{model}", model_source(env.config))
        .replace("{task_7}", load_task(other_task(env).task, 0).source)
        .replace("{task}", load_task(env.config.task, 0).source)
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, env: SimpleNamespace) -> None:
    with pytest.raises(case.error) as info:
        case.run(tmp_path, env)
    assert expand(case.message, tmp_path, env) in str(info.value)


# ----------------------------------------------------------------------------- CLI


def plan_args(tmp: Path, env: SimpleNamespace) -> list[str]:
    claim_outputs(tmp, PLAN_OUTPUTS)  # as an earlier sgpo plan there would have
    (tmp / "plan.parquet").write_bytes(env.plan.read_bytes())
    return ["plan", "-c", str(env.config_path), "-o", str(tmp), "--profile", str(env.profile)]


def profile_args(tmp: Path, env: SimpleNamespace) -> list[str]:
    claim_outputs(tmp, PROFILE_OUTPUTS)
    (tmp / "profile.parquet").write_bytes(env.profile.read_bytes())
    return ["profile", "-c", str(env.config_path), "-o", str(tmp)]


def train_args(name: str) -> Callable[[Path, SimpleNamespace], list[str]]:
    def args(tmp: Path, env: SimpleNamespace) -> list[str]:
        claim_outputs(tmp, TRAIN_OUTPUTS)
        (tmp / name).write_text("{}\n")
        return ["train", "-c", str(env.config_path), "-o", str(tmp), "--plan", str(env.plan)]

    return args


def foreign_folder(command: str, name: str) -> Callable[[Path, SimpleNamespace], list[str]]:
    """A folder of the user's own where sgpo would put an output of the same name."""

    def args(tmp: Path, env: SimpleNamespace) -> list[str]:
        (tmp / name).mkdir()
        (tmp / name / "thesis.tex").write_text("years of work\n")
        extra = ["--plan", str(env.plan)] if command == "train" else []
        return [command, "-c", str(env.config_path), "-o", str(tmp), *extra, "--overwrite"]

    return args


def resume_without_checkpoint(tmp: Path, env: SimpleNamespace) -> list[str]:
    """A run with trained steps whose checkpoint/ was deleted."""
    claim_outputs(tmp, TRAIN_OUTPUTS)
    (tmp / "config.yaml").write_text(env.config_path.read_text())
    (tmp / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    (tmp / "final").mkdir()
    return ["train", "--resume", str(tmp)]


def bad_file_task(tmp: Path, env: SimpleNamespace) -> list[str]:
    data = tmp / "train.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2="}\n')
    tree = {
        "model": {"name_or_path": str(tmp / "some-model")},
        "task": {"kind": "file", "file": {"train": str(data), "eval": str(data)}},
    }
    return ["profile", "-c", str(write_config(tmp / "file.yaml", tree)), "-o", str(tmp / "out")]


# (id, args(tmp, env), exit status, what the output must say)
CLI_CASES = [
    (
        "shard-out-of-range",
        lambda tmp, env: ["profile", "-c", str(env.config_path), "-o", str(tmp), "--shard", "5/4"],
        2,
        "--shard I/N needs 0 <= I < N, got '5/4'",
    ),
    (
        "resume-and-overwrite",
        lambda tmp, env: ["train", "--resume", str(tmp), "--overwrite"],
        2,
        "--resume continues what is in the directory and --overwrite replaces it",
    ),
    (
        "plan-for-a-method-without-one",
        lambda tmp, env: [
            *("train", "-c", str(env.config_path), "-o", str(tmp / "run")),
            *("--set", "train.method=grpo", "--plan", str(tmp / "nope.parquet")),
        ],
        2,
        "--plan {tmp}/nope.parquet: train.method 'grpo' trains without a plan",
    ),
    (
        "first-seed-without-seeds",
        lambda tmp, env: ["compare", "-c", str(tmp / "compare.yaml"), "--first-seed", "5"],
        2,
        "--first-seed picks where --seeds N starts; pass --seeds too",
    ),
    (
        "demo-side-by-side-in-the-way",
        lambda tmp, env: [
            "demo",
            *("-o", str(written(tmp / "side_by_side.png", "mine"))),
            *("-c", str(env.config_path)),
        ],
        1,
        "{tmp}/side_by_side.png exists and was not written by sgpo",
    ),
    (
        "demo-decaying-lr",  # its baseline runs to the same FLOPs, not to train.steps
        lambda tmp, env: [
            "demo",
            *("-o", str(tmp / "demo")),
            *("-c", str(env.config_path)),
            *("--set", "train.lr_schedule=cosine"),
        ],
        2,
        "config.yaml: train.lr_schedule='cosine': runs compared at equal budget stop when it is "
        "spent, not at train.steps",
    ),
    (
        "out-is-a-file",
        lambda tmp, env: [
            "profile",
            *("-c", str(env.config_path), "-o", str(written(tmp / "afile", "x") / "afile")),
        ],
        1,
        "--out {tmp}/afile: a file, not a directory",
    ),
    (
        "out-under-a-file",
        lambda tmp, env: [
            "eval",
            *("-c", str(env.config_path), "-o", str(written(tmp / "afile", "x") / "afile" / "x")),
        ],
        1,
        "--out {tmp}/afile/x: cannot create this directory (Not a directory)",
    ),
    (
        "export-verl-group-of-one",
        lambda tmp, env: [
            "export-verl",
            *("--plan", str(env.plan), "-c", str(env.config_path), "--out", str(tmp / "t.parquet")),
            *("--fixed-group-size", "1"),
        ],
        2,
        "refused: --fixed-group-size 1: verl needs groups of 2 or more",
    ),
    (
        "export-verl-batch-of-zero",
        lambda tmp, env: [
            "export-verl",
            *("--plan", str(env.plan), "-c", str(env.config_path), "--out", str(tmp / "t.parquet")),
            *("--train-batch-size", "0"),
        ],
        2,
        "refused: --train-batch-size 0: must be 1 or more",
    ),
    (
        "task-file-without-kind-file",  # the files would be ignored, the addition task run
        lambda tmp, env: [
            "profile",
            *("-c", str(env.config_path), "-o", str(tmp / "p")),
            *("--set", "task.file.train=data/train.jsonl"),
        ],
        2,
        "task.file is set but task.kind is 'addition': set task.kind: file to use the files",
    ),
    (
        "addition-split-larger-than-its-sums",  # a setting, not data: exit 2
        lambda tmp, env: [
            "profile",
            *("-c", str(env.config_path), "-o", str(tmp / "p")),
            *("--set", "task.addition.n_train=150", "--set", "task.addition.weights=[1,0]"),
        ],
        2,
        "task.addition: train split asks for 150 distinct 1-digit sums but only",
    ),
    (
        "flops-on-an-sgpo-run",
        lambda tmp, env: [
            "flops",
            str(written(tmp / "metrics.jsonl", '{"step": 1, "eval_acc": 0.5}\n') / "metrics.jsonl"),
            *("--plan", str(env.plan)),
        ],
        1,
        "{tmp}/metrics.jsonl: no step with prompt_length/mean and response_length/mean: not a "
        "verl file-logger JSONL (an sgpo train run's costs are in its metrics.jsonl",
    ),
    (
        # what the file is comes first: without a model shape it was asked for --model
        "flops-on-an-sgpo-run-without-a-plan",
        lambda tmp, env: [
            "flops",
            str(written(tmp / "metrics.jsonl", '{"step": 1, "eval_acc": 0.5}\n') / "metrics.jsonl"),
        ],
        1,
        "{tmp}/metrics.jsonl: no step with prompt_length/mean and response_length/mean: not a "
        "verl file-logger JSONL (an sgpo train run's costs are in its metrics.jsonl",
    ),
    (
        "flops-out-over-a-users-file",
        lambda tmp, env: [
            "flops",
            "--run",
            str(tmp),
            *("-o", str(written(tmp / "notes.jsonl", "mine\n") / "notes.jsonl")),
        ],
        1,
        "{tmp}/notes.jsonl already exists; pass --overwrite to replace it",
    ),
    (
        "flops-data-that-is-a-plan",
        lambda tmp, env: [
            "flops",
            str(written(tmp / "m.jsonl", VERL_LOG) / "m.jsonl"),
            *("--plan", str(env.plan), "--data", str(env.plan), "--train-batch-size", "2"),
        ],
        1,
        "{plan}: no column '__rollout_n__': not a verl export written by sgpo export-verl",
    ),
    (
        "flops-without-a-token-count",
        lambda tmp, env: [
            "flops",
            str(written(tmp / "m.jsonl", VERL_LOG) / "m.jsonl"),
            *("--plan", str(env.plan)),
        ],
        1,
        "step 1: no 'perf/total_num_tokens' to estimate the rollout count from",
    ),
    (
        "flops-run-json-not-json",
        lambda tmp, env: ["flops", "--run", str(written(tmp / "run.json", "{garbage"))],
        1,
        "{tmp}/run.json: not valid JSON",
    ),
    (
        "flops-run-json-without-overrides",
        lambda tmp, env: ["flops", "--run", str(written(tmp / "run.json", '{"method": "grpo"}'))],
        1,
        "{tmp}/run.json: field 'overrides' is missing or not a list of key=value strings",
    ),
    (
        "flops-run-json-without-a-batch-size",
        lambda tmp, env: [
            "flops",
            "--run",
            str(written(tmp / "run.json", '{"overrides": [], "method": "grpo"}')),
        ],
        1,
        "{tmp}/run.json: its overrides set no data.train_batch_size",
    ),
    (
        "flops-out-over-a-runs-metrics",
        lambda tmp, env: [
            "flops",
            "--run",
            str(tmp),
            *("-o", str(sgpos_own(tmp, "metrics.jsonl")), "--overwrite"),
        ],
        1,
        "--out {tmp}/metrics.jsonl: another sgpo command's output, which --overwrite does not "
        "replace",
    ),
    (
        "flops-out-a-directory",
        lambda tmp, env: ["flops", "--run", str(tmp), "-o", str(tmp)],
        1,
        "--out {tmp}: a directory; give a file name",
    ),
    (
        "flops-out-under-a-file",
        lambda tmp, env: [
            "flops",
            "--run",
            str(tmp),
            *("-o", str(written(tmp / "afile", "x") / "afile" / "out.jsonl")),
        ],
        1,
        "--out {tmp}/afile/out.jsonl: {tmp}/afile is a file, not a directory",
    ),
    (
        "flops-out-in-new-folders-refused-input",  # the folders are not made
        lambda tmp, env: ["flops", "--run", str(tmp / "nothere"), "-o", str(tmp / "a" / "o.jsonl")],
        1,
        "{tmp}/nothere: no such file",
    ),
    (
        "flops-run-without-run-json",
        lambda tmp, env: ["flops", "--run", str(tmp)],
        1,
        "{tmp}/run.json: no such file: --run takes a verl run's RUN_DIR",
    ),
    (
        "demo-over-a-train-run",
        lambda tmp, env: [
            "demo",
            *("-o", str(written(tmp / "summary.json", "{}"))),
            *("-c", str(env.config_path)),
        ],
        1,
        "{tmp} holds a run that is not a demo's (summary.json, no demo's side_by_side.png); "
        "choose another --out, or pass --overwrite to replace it",
    ),
    (
        "demo-over-a-killed-train-run",  # its metrics, no summary yet
        lambda tmp, env: [
            "demo",
            *("-o", str(written(tmp / "metrics.jsonl", '{"step": 0}\n'))),
            *("-c", str(env.config_path)),
        ],
        1,
        "{tmp} holds a run that is not a demo's (metrics.jsonl, no demo's side_by_side.png)",
    ),
    (
        "demo-over-a-profile",
        lambda tmp, env: ["demo", "-o", str(env.profile.parent), "-c", str(env.config_path)],
        1,
        "holds a run that is not a demo's (profile.parquet, no demo's side_by_side.png)",
    ),
    *(
        (  # the verifier is built before the model loads (minutes, for a large one)
            f"{command}-names-a-mistyped-verifier-before-loading-the-model",
            lambda tmp, env, command=command: [
                command,
                *("-c", str(env.config_path), "-o", str(tmp / "out")),
                *("--set", "task.verifier=no_such_module:score"),
                *("--set", f"model.name_or_path={tmp / 'no' / 'model'}"),
            ],
            2,
            "task.verifier: cannot import verifier 'no_such_module:score'",
        )
        for command in ("profile", "train", "eval")
    ),
    (
        "model-path-missing",
        lambda tmp, env: ["eval", "-c", str(env.config_path), "--model", str(tmp / "no" / "model")],
        2,
        "model '{tmp}/no/model': no such directory",
    ),
    (
        "model-path-not-a-model",
        lambda tmp, env: ["eval", "-c", str(env.config_path), "--model", str(tmp)],
        2,
        "model '{tmp}': not a model directory (no config.json or adapter_config.json)",
    ),
    (
        "model-path-a-run",  # its model is named
        lambda tmp, env: ["eval", "-c", str(env.config_path), "--model", str(run_with_final(tmp))],
        2,
        "model '{tmp}/run': not a model directory (no config.json or adapter_config.json); a "
        "run's model is in {tmp}/run/final",
    ),
    (
        "eval-json-exists",  # not sgpo's: --overwrite would not replace it either
        lambda tmp, env: [
            "eval",
            *("-c", str(env.config_path), "-o", str(written(tmp / "eval.json", "{}"))),
        ],
        1,
        "{tmp}/eval.json exists and was not written by sgpo",
    ),
    (
        "config-error",
        lambda tmp, env: ["plan", "-c", str(yaml_file(tmp, "train: {stepz: 3}\n"))],
        2,
        "{tmp}/bad.yaml: invalid config\n  train.stepz: Extra inputs are not permitted",
    ),
    (
        "override-error",
        lambda tmp, env: ["train", "--set", "train.steps", "-o", str(tmp)],
        2,
        "override 'train.steps' must look like key.sub=value",
    ),
    (
        "data-file-row-field",
        bad_file_task,
        1,
        "{tmp}/train.jsonl: row 1 (line 2): field 'answer' is missing",
    ),
    (
        "profile-exists",
        profile_args,
        1,
        "{tmp}/profile.parquet already exists; pass --overwrite to replace it or --resume",
    ),
    (
        "plan-exists",
        plan_args,
        1,
        "{tmp}/plan.parquet already exists; pass --overwrite to replace it",
    ),
    (
        "train-metrics-exist",
        train_args("metrics.jsonl"),
        1,
        "{tmp}/metrics.jsonl exists; pass --overwrite or --resume",
    ),
    (
        "train-summary-exists",
        train_args("summary.json"),
        1,
        "{tmp}/summary.json exists; pass --overwrite or --resume",
    ),
    (
        "profile-foreign-chunks",
        foreign_folder("profile", "profile_chunks"),
        1,
        "{tmp}/profile_chunks exists and was not written by sgpo",
    ),
    (
        "train-foreign-final",
        foreign_folder("train", "final"),
        1,
        "{tmp}/final exists and was not written by sgpo",
    ),
    (
        "train-foreign-checkpoints",
        foreign_folder("train", "checkpoints"),
        1,
        "{tmp}/checkpoints exists and was not written by sgpo",
    ),
    (
        "resume-without-checkpoint",
        resume_without_checkpoint,
        1,
        "{tmp}/checkpoint not found: nothing to resume from, and {tmp} holds results "
        "(final, metrics.jsonl)",
    ),
    (
        "report-without-summary",
        lambda tmp, env: ["report", str(tmp)],
        1,
        "{tmp}/summary.json not found: {tmp} is not an sgpo run (sgpo train writes",
    ),
    (
        "resume-nothing",
        lambda tmp, env: ["train", "--resume", str(tmp / "never-ran")],
        1,
        "--resume {tmp}/never-ran: no such directory",
    ),
    (
        "plan-mismatch",
        lambda tmp, env: [
            "plan",
            "-c",
            str(env.config_path),
            "-o",
            str(tmp),
            "--profile",
            str(of_another_model(env.profile, tmp / "p.parquet")),
        ],
        1,
        "error: {tmp}/p.parquet: field 'model' is '/elsewhere/model'",
    ),
]


@pytest.mark.parametrize(
    ("args", "status", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input(
    args: Callable, status: int, message: str, tmp_path: Path, env: SimpleNamespace
) -> None:
    argv = args(tmp_path, env)
    there = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    paths = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == status, result.output
    # on stderr: `sgpo eval -o - > eval.json` and friends keep their stdout a result
    assert expand(message, tmp_path, env) in result.stderr
    assert expand(message, tmp_path, env) not in result.stdout
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in there} == there  # nothing that was there is touched
    assert set(tmp_path.rglob("*")) - paths == set()  # and a refused command leaves nothing


@pytest.mark.parametrize("command", ["profile", "eval"])
def test_the_vllm_engine_without_vllm_is_a_config_error_before_the_model_loads(
    command: str, tmp_path: Path, env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sgpo.models
    import sgpo.profile

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the engine was checked")

    for module in (sgpo.models, sgpo.profile):
        monkeypatch.setattr(module, "load_policy", no_load)
    stage = "profile" if command == "profile" else "eval"
    argv = [command, "-c", str(env.config_path), "--set", f"{stage}.engine=vllm"]
    result = CliRunner().invoke(app, [*argv, *(["-o", str(tmp_path)] * (command == "profile"))])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"error: {stage}.engine=vllm: the 'vllm' package is not installed here" in said
    assert f"or set {stage}.engine=transformers" in said
    assert "Traceback" not in result.output


def test_a_device_this_machine_lacks_is_a_config_error_before_the_model_loads() -> None:
    import torch

    from sgpo.models import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"model.device=cuda:{count}: this machine has"):
            resolve_device(f"cuda:{count}")
    else:
        with pytest.raises(ConfigError, match="model.device=cuda: this machine has no cuda dev"):
            resolve_device("cuda")


def test_a_refused_plan_train_profile_or_eval_leaves_no_directory_behind(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    missing = tmp_path / "missing.parquet"
    config = str(env.config_path)
    missing_data = [
        "--set",
        "task.kind=file",
        "--set",
        f"task.file.train={missing.with_suffix('.jsonl')}",
    ]
    refused = {
        "plan": ["plan", "-c", config, "--profile", str(missing)],
        "train": ["train", "-c", config, "--plan", str(missing)],
        "profile": ["profile", "-c", config, *missing_data],
        "eval": ["eval", "-c", config, *missing_data],
    }
    for name, argv in refused.items():
        out = tmp_path / name / "runs" / "out"  # folders the run would make, parents too
        result = CliRunner().invoke(app, [*argv, "-o", str(out)])
        assert result.exit_code != 0, result.output
        assert not (tmp_path / name).exists(), (name, list((tmp_path / name).rglob("*")))
    # Into a directory that holds an earlier command's outputs: its list of them is kept as it was.
    shared = tmp_path / "shared"
    claim_outputs(shared, PROFILE_OUTPUTS)
    listed = (shared / "sgpo-outputs.json").read_bytes()
    result = CliRunner().invoke(app, [*refused["plan"], "-o", str(shared)])
    assert result.exit_code != 0, result.output
    assert (shared / "sgpo-outputs.json").read_bytes() == listed
    # and while another process holds it: refused as busy, its list left as that one made it
    held = os.open(shared, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = CliRunner().invoke(app, [*refused["plan"], "-o", str(shared)])
    finally:
        os.close(held)
    assert "is in use by another sgpo process" in result.output
    assert (shared / "sgpo-outputs.json").read_bytes() == listed


def test_a_plan_profiled_at_other_sampling_trains_with_a_warning(
    tmp_path: Path, env: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    """sgpo plan refuses such a profile; a plan trained at another temperature is valid but
    rarely meant (a profile redone at a new temperature, an old plan.parquet trained on)."""
    hotter = load_config(env.config_path, ["sampling.temperature=0.5", "train.steps=1"])
    with caplog.at_level(logging.WARNING, logger="sgpo.profile_match"):
        run_train(hotter, tmp_path / "hot", env.plan)
    said = " ".join(caplog.text.split())
    assert f"{env.plan}: profiled with other sampling than this run" in said
    assert "(sampling.temperature: profile 1.0, config 0.5)" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sgpo.profile_match"):
        run_train(load_config(env.config_path, ["train.steps=1"]), tmp_path / "same", env.plan)
    assert "other sampling" not in caplog.text


def test_overwrite_replaces_the_outputs(tmp_path: Path, env: SimpleNamespace) -> None:
    """--overwrite goes ahead, and a run directory holds nothing of the run it replaced."""
    run = tmp_path / "run"
    claim_outputs(run, TRAIN_OUTPUTS)  # these outputs are an earlier sgpo run's
    (run / "final").mkdir(parents=True)
    (run / "final" / "stale.txt").write_text("old")
    (run / "checkpoints" / "step-000099").mkdir(parents=True)
    (run / "summary.json").write_text('{"old": true}\n')
    (run / "metrics.jsonl").write_text('{"step": 0, "old": true}\n')
    result = CliRunner().invoke(
        app,
        [
            "train",
            "-c",
            str(env.config_path),
            "-o",
            str(run),
            "--plan",
            str(env.plan),
            "--set",
            "train.steps=1",
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (run / "final" / "stale.txt").exists() and (run / "final").is_dir()
    assert not (run / "checkpoints" / "step-000099").exists()
    assert "old" not in json.loads((run / "summary.json").read_text())
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]
    planned = CliRunner().invoke(app, [*plan_args(run, env), "--overwrite"])
    assert planned.exit_code == 0, planned.output


# ----------------------------------------------------------------------------- non-finite


def inject_nonfinite(mp: pytest.MonkeyPatch, steps: set[int], value: float) -> None:
    """Multiply the loss by value (nan or inf) on the given steps: the gradient follows."""
    real_train_on = Trainer.train_on
    real_aggregate = sgpo.update.aggregate_loss

    def train_on(self: Trainer, batch: list) -> dict:
        if self.step + 1 not in steps:
            return real_train_on(self, batch)
        with pytest.MonkeyPatch.context() as inner:
            inner.setattr(
                sgpo.update, "aggregate_loss", lambda *a, **k: real_aggregate(*a, **k) * value
            )
            return real_train_on(self, batch)

    mp.setattr(Trainer, "train_on", train_on)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def grpo_config(env: SimpleNamespace, tmp: Path, **train: object) -> Path:
    tree = env.tree | {"train": env.tree["train"] | {"method": "grpo", **train}}
    return write_config(tmp / "grpo.yaml", tree)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_update_is_skipped_logged_and_counted(
    value: float, tmp_path: Path, env: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(grpo_config(env, tmp_path))
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING, "sgpo.train"):
        inject_nonfinite(mp, {2}, value)
        summary = run_train(config, run)
    records = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")}
    assert records[2]["trained_rollouts"] > 0  # the fault really hit an update
    assert records[2]["skipped_update"] is True
    assert [records[s]["nonfinite_skips"] for s in (1, 2, 3, 4)] == [0, 1, 1, 1]
    assert not any(records[s]["skipped_update"] for s in (1, 3, 4))
    assert summary["nonfinite_skips"] == 1
    assert "step 2: non-finite loss or gradient, update skipped (1 in a row, 1 in all)" in (
        caplog.text
    )
    steps = run / "checkpoints"
    assert same_weights(steps / "step-000001", steps / "step-000002")  # no update at step 2
    assert not same_weights(steps / "step-000002", steps / "step-000003")  # training went on
    assert all(torch.isfinite(t).all() for t in weights(run / "final").values())


def test_too_many_nonfinite_in_a_row_stop_with_a_usable_checkpoint(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    config_path = grpo_config(env, tmp_path, max_nonfinite_in_a_row=2)
    run = tmp_path / "run"
    args = ["train", "-c", str(config_path), "-o", str(run)]
    with pytest.MonkeyPatch.context() as mp:
        inject_nonfinite(mp, {2, 3}, float("nan"))
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert (
        "error: 2 updates in a row had a non-finite loss or gradient; stopped at step 3. "
        f"The last good weights are in {run / STATE_DIR}; lower train.lr or check the data."
    ) in result.output
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]
    state = json.loads((run / STATE_DIR / "state.json").read_text())
    assert state["step"] == 3 and state["nonfinite_in_a_row"] == 2
    assert same_weights(run / STATE_DIR / "model", run / "checkpoints" / "step-000001")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(NonFiniteError):
        inject_nonfinite(mp, {2, 3}, float("nan"))  # the Python API raises the same
        run_train(load_config(config_path), tmp_path / "again")

    # The checkpoint resumes (the fault gone) and the run finishes.
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert records[-1]["nonfinite_skips"] == 2 and not records[-1]["skipped_update"]
    assert json.loads((run / "summary.json").read_text())["nonfinite_skips"] == 2


def test_profile_merge_over_a_profile_does_not_offer_a_resume_it_lacks(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    result = CliRunner().invoke(
        app, ["profile", "merge", str(env.profile), "-o", str(env.profile.parent)]
    )
    assert result.exit_code == 1
    assert "profile.parquet already exists; pass --overwrite to replace it" in result.output
    assert "--resume" not in result.output


def test_the_paper_presets_warning_is_one_line_not_pydantics_source(tmp_path: Path) -> None:
    args = ["plan", "-o", str(tmp_path), "--set", "plan.preset=paper", "--set", "plan.g_max=16"]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, args)  # no profile there: stops after the config
    assert "warning: plan.preset 'paper' replaces plan.g_max: 16 -> 8\n" in result.output
    assert "pydantic" not in result.output and "UserWarning" not in result.output


def test_a_verifier_failing_on_every_call_stops_evaluation_and_training(
    tmp_path: Path, env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the profile does: a GRPO baseline (no profile) or an eval would otherwise run to the
    end on rewards of 0."""
    config = load_config(env.config_path, ["task.verifier=bad_verifiers:raising"])
    grpo = config.model_copy(update={"train": config.train.model_copy(update={"method": "grpo"})})
    with pytest.raises(DataError, match=r"all \d+ calls on the held-out queries failed"):
        run_train(grpo, tmp_path / "evaluated")
    monkeypatch.setattr(
        sgpo.train.Trainer, "run_eval", lambda self, stop_asked=None: {"eval_acc": 0.0}
    )
    with pytest.raises(DataError, match=r"all \d+ calls on step 1's rollouts failed \(\d+ raised"):
        run_train(grpo, tmp_path / "trained")


def test_a_demo_without_overwrite_offers_a_resume_only_of_a_demo(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    """sgpo demo --resume continues a demo's directory, and refuses another run's."""
    args = ["demo", "-o", str(env.profile.parent), "-c", str(env.config_path), "--no-overwrite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "profile.parquet already exists; pass --overwrite to replace it" in result.output
    assert "--resume" not in result.output
    # a directory a killed `sgpo train` left (its metrics, no summary): refused before compute
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "metrics.jsonl").write_text('{"step": 0}\n')
    args = ["demo", "-o", str(killed), "-c", str(env.config_path), "--no-overwrite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "metrics.jsonl already exists" in result.output
    assert not (killed / "profile.parquet").exists() and "--resume" not in result.output
    # a demo's directory (it claims its side-by-side plot first): --resume is offered
    from sgpo.rundir import claim_outputs
    from sgpo.side_by_side import SIDE_BY_SIDE

    claim_outputs(killed, [SIDE_BY_SIDE])
    result = CliRunner().invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "or --resume to continue it, or choose another" in said


def test_a_demo_that_stops_before_writing_anything_leaves_no_directory(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    """As profile, plan and train refused on their inputs (here a model that cannot run the
    task): the claim a demo writes first is no output, and the directory it made goes with it
    (one that was there stays)."""
    tree = env.tree | {"task": {"kind": "file", "file": {"train": str(tmp_path / "absent.jsonl")}}}
    config = write_config(tmp_path / "absent.yaml", tree)
    out = tmp_path / "new" / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "-c", str(config)])
    assert result.exit_code == 2 and "cannot run task.kind='file'" in result.output
    assert not (tmp_path / "new").exists()
    out.mkdir(parents=True)
    CliRunner().invoke(app, ["demo", "-o", str(out), "-c", str(config)])
    assert out.is_dir() and list(out.iterdir()) == []
    # a demo refused as busy leaves the running one's claim, its only file yet, alone
    from sgpo.rundir import OUTPUTS_FILE, claim_outputs

    claim_outputs(out, ["side_by_side.png"])
    running = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(running, fcntl.LOCK_EX)
        busy = CliRunner().invoke(app, ["demo", "-o", str(out), "-c", str(config)])
    finally:
        os.close(running)
    assert "in use by another sgpo process" in busy.output
    assert (out / OUTPUTS_FILE).is_file()


def test_a_demo_holds_its_directory_from_its_first_stage_to_its_report(
    tmp_path: Path, env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between its stages too (here: after training, in its baseline), so a second demo there
    cannot start over in it; and a demo refused as busy is not told to resume."""
    out = tmp_path / "demo"
    real = sgpo.side_by_side.run_equal_budget_baseline
    held = []

    def baseline_tried(*args: object) -> dict:
        another = os.open(out, os.O_RDONLY)  # as a second process would
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(another, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(another)
        held.append(True)
        return real(*args)

    monkeypatch.setattr(sgpo.side_by_side, "run_equal_budget_baseline", baseline_tried)
    args = ["demo", "-o", str(out), "-c", str(env.config_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert held == [True]
    another = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(another, fcntl.LOCK_EX)
        busy = CliRunner().invoke(app, args)
    finally:
        os.close(another)
    assert "`sgpo demo` stopped without touching it" in busy.output
    assert "then run `sgpo demo` again" in busy.output and "--resume" not in busy.output


def test_a_demo_interrupted_in_its_baseline_is_still_replaced_by_default(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    args = ["demo", "-o", str(tmp_path / "demo"), "-c", str(env.config_path)]
    assert CliRunner().invoke(app, args).exit_code == 0
    (tmp_path / "demo" / "baseline-grpo" / "summary.json").unlink()  # killed in step 5/6
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def test_numbers_yaml_1_1_and_1_2_read_alike_are_accepted() -> None:
    config = load_config(None, ["train.steps=07", "seed=00", "train.lr=!!float 010"])
    assert (config.train.steps, config.seed, config.train.lr) == (7, 0, 10.0)


def test_exponent_numbers_are_numbers_as_in_yaml_1_2(tmp_path: Path) -> None:
    """PyYAML reads 1e-3 as a text; in an untyped setting the verifier got '1e-3'."""
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  verifier_kwargs: {rel_tol: 1e-3, scale: 5E+2}\n")
    config = load_config(path, ["task.verifier_kwargs.abs_tol=1.0e3", "train.lr=2e-4"])
    assert config.task.verifier_kwargs == {"rel_tol": 0.001, "scale": 500.0, "abs_tol": 1000.0}
    assert config.train.lr == 2e-4
    quoted = load_config(None, ["task.verifier_kwargs.tag='1e-3'"])
    assert quoted.task.verifier_kwargs == {"tag": "1e-3"}  # a quoted text stays a text
    # ... and is written out quoted: a run's config.yaml reads back as it was (a resume checks)
    written = tmp_path / "config.yaml"
    written.write_text(dump_config(quoted))
    assert load_config(written).task.verifier_kwargs == {"tag": "1e-3"}


def test_a_verifier_module_in_the_working_directory_imports_as_under_python_m(
    tmp_path: Path, env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the console script's sys.path has neither "" nor the working directory
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checks_beside_the_config.py").write_text(
        "def score(response, reference):\n    return float(response.strip() == reference)\n"
    )
    args = ["profile", "-c", str(env.config_path), "-o", str(tmp_path / "run")]
    spec = "task.verifier=checks_beside_the_config:score"
    result = CliRunner().invoke(app, [*args, "--set", spec])
    assert result.exit_code == 0, result.output
    assert read_table(tmp_path / "run" / "profile.parquet")[1]["verifier_errors"] == 0
    # one that is not there: the setting named, exit 2 (a config error), no traceback
    missing = CliRunner().invoke(app, [*args, "--overwrite", "--set", "task.verifier=nope:score"])
    assert missing.exit_code == 2
    assert "task.verifier: cannot import verifier 'nope:score'" in missing.output
    # only the verifier: a module planted there (a probed optional package: flash_attn.py) is
    # found by no other import
    (tmp_path / "planted_probe.py").write_text("raise SystemExit('ran')\n")
    assert str(tmp_path) not in sys.path
    assert importlib.util.find_spec("planted_probe") is None


def test_a_plan_serves_a_task_whose_eval_split_changed_not_one_whose_training_queries_did(
    tmp_path: Path, env: SimpleNamespace
) -> None:
    # env's profile and plan: 8 training and 4 held-out sums; 6 held out gives the same
    # training queries (another task string), so no profile needs redoing
    more_eval = load_config(env.config_path, ["task.addition.n_eval=6"])
    summary = run_train(more_eval, tmp_path / "run", env.plan)
    assert summary["steps"] == 4
    _, plan_meta = run_plan(more_eval, env.profile, tmp_path / "plan")
    assert plan_meta["kept"] >= 1
    other_train = load_config(env.config_path, ["task.addition.n_train=9"])
    with pytest.raises(DataError, match="field 'task' is .* but the config's task is"):
        run_train(other_train, tmp_path / "other", env.plan)


def test_verl_export_checks_the_verifier_it_exports(tmp_path: Path, env: SimpleNamespace) -> None:
    # env's plan was profiled with bad_verifiers:coin_flip, its config's verifier
    export = ["export-verl", "--plan", str(env.plan), "-c", str(env.config_path)]
    other = CliRunner().invoke(
        app,
        [*export, "-o", str(tmp_path / "a.parquet"), "--verifier", "sgpo.verifiers:exact_match"],
    )
    assert other.exit_code == 2
    assert (
        "task.verifier: profile 'bad_verifiers:coin_flip', config 'sgpo.verifiers:exact_match'"
        in (" ".join(other.output.split()))
    )
    assert not (tmp_path / "a.parquet").exists()
    same = CliRunner().invoke(
        app, [*export, "-o", str(tmp_path / "b.parquet"), "--verifier", "bad_verifiers:coin_flip"]
    )
    assert same.exit_code == 0, same.output


def test_flops_out_under_a_link_to_nothing_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    out = tmp_path / "dangling" / "o.jsonl"
    result = CliRunner().invoke(app, ["flops", "--run", str(tmp_path / "nothere"), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"--out {out}: {tmp_path / 'dangling'} is a link to nothing" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_flops_model_that_is_not_a_model_directory_is_named(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("")
    missing = CliRunner().invoke(app, ["flops", str(metrics), "--model", str(tmp_path / "no")])
    assert missing.exit_code == 2
    assert f"--model {tmp_path / 'no'}: not a model directory or hub id here" in " ".join(
        missing.output.split()
    )
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    refused = CliRunner().invoke(app, ["flops", str(metrics), "--model", str(adapter)])
    assert refused.exit_code == 2 and "a LoRA adapter directory" in refused.output
    encoder = tmp_path / "t5"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    other = CliRunner().invoke(app, ["flops", str(metrics), "--model", str(encoder)])
    assert other.exit_code == 2 and "not a causal language model" in other.output


def run_with_final(tmp: Path) -> Path:
    """A run's directory, its model in final/."""
    (tmp / "run" / "final").mkdir(parents=True)
    (tmp / "run" / "final" / "config.json").write_text("{}")
    return tmp / "run"


def test_yaml_merge_keys_merge_and_a_key_twice_beside_one_is_still_refused(
    tmp_path: Path,
) -> None:
    """`<<: *anchor` was refused as an unknown tag: a config sharing settings between sections
    could not be read."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "sampling: &shared {temperature: 0.7, max_new_tokens: 12}\n"
        "eval:\n  n_samples: 2\n"
        "task:\n  verifier_kwargs:\n    <<: {rel_tol: 0.1, abs_tol: 2.0}\n    abs_tol: 3.0\n"
    )
    config = load_config(path)
    assert config.task.verifier_kwargs == {"rel_tol": 0.1, "abs_tol": 3.0}  # its own key wins
    assert config.sampling.temperature == 0.7
    path.write_text("task:\n  verifier_kwargs:\n    <<: {rel_tol: 0.1}\n    a: 1\n    a: 2\n")
    with pytest.raises(ConfigError, match="key 'a' given twice"):
        load_config(path)
    path.write_text("task:\n  verifier_kwargs:\n    <<: {a: 1}\n    <<: {a: 2}\n")
    with pytest.raises(ConfigError, match="merge key '<<' given twice"):  # one would be lost
        load_config(path)


def test_flops_ppo_epochs_below_one_is_refused_as_an_option(tmp_path: Path) -> None:
    metrics = written(tmp_path / "m.jsonl", VERL_LOG) / "m.jsonl"
    result = CliRunner().invoke(app, ["flops", str(metrics), "--ppo-epochs", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--ppo-epochs" in result.output


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        # the ratio's floor 1 - clip_low would be at or below 0: no update is ever clipped low
        ({"train": {"clip_low": 5}}, r"train.clip_low \(5.0\) must be below 1"),
        (
            {"profile": {"k": 4, "adaptive": True, "adaptive_round": 4}},
            r"profile.adaptive_round \(4\) >= profile.k \(4\)",
        ),
        (
            {"plan": {"g_max": 4}, "train": {"downsample_to": 6}},
            r"train.downsample_to \(6\) does nothing: no sgpo group has more responses",
        ),
    ],
)
def test_settings_that_would_do_nothing_or_break_the_update_are_refused(
    tree: dict, message: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        RunConfig.model_validate(tree)
    # a run that recorded it trained (or profiled) so: its config still reads back
    from sgpo.config import RECORDED

    RunConfig.model_validate(tree, context=RECORDED)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--data-source", " "], "--data-source is empty"),
        (["--fixed-group-size", "5000"], "--fixed-group-size 5000: above sgpo's cap of 4096"),
        (["--val-out", "{tmp}/v.jsonl"], "--val-out {tmp}/v.jsonl: the export is parquet"),
        (["--val-out", "{tmp}"], "--val-out {tmp}: a directory; give the parquet file"),
    ],
)
def test_export_verl_options_that_make_no_verl_dataset(
    option: list[str], message: str, tmp_path: Path, env: SimpleNamespace
) -> None:
    args = ["export-verl", "--plan", str(env.plan), "-c", str(env.config_path)]
    option = [o.replace("{tmp}", str(tmp_path)) for o in option]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "t.parquet"), *option])
    said = message.replace("{tmp}", str(tmp_path))
    assert result.exit_code != 0 and said in " ".join(result.output.split())
    assert not (tmp_path / "t.parquet").exists()


def test_small_cli_mistakes_are_named(tmp_path: Path, env: SimpleNamespace) -> None:
    from sgpo.errors import SgpoWarning

    runner = CliRunner()
    # --resume of a directory that is not there, or of a file
    missing = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such directory" in missing.output, missing.output
    (tmp_path / "f").write_text("x")
    a_file = runner.invoke(app, ["train", "--resume", str(tmp_path / "f")])
    assert "a file, not a run's directory" in " ".join(a_file.output.split())
    # a report of a directory that is not there
    no_run = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert no_run.exit_code == 1 and f"{tmp_path / 'nope'}: no such directory" in " ".join(
        no_run.output.split()
    )
    # an override without a key
    with pytest.raises(ConfigError, match="override '=3' names no key"):
        load_config(env.config_path, ["=3"])
    # a config file that sets nothing runs on the defaults, said
    empty = tmp_path / "empty.yaml"
    empty.write_text("# to do\n")
    with pytest.warns(SgpoWarning, match="empty.yaml sets nothing: every setting is sgpo's"):
        load_config(empty)


def test_a_warmup_as_long_as_the_run_is_said() -> None:
    from sgpo.errors import SgpoWarning

    with pytest.warns(SgpoWarning, match=r"train.warmup_steps \(100\) >= train.steps \(2\)"):
        RunConfig.model_validate({"train": {"warmup_steps": 100, "steps": 2}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", SgpoWarning)
        RunConfig.model_validate({"train": {"warmup_steps": 10, "steps": 20}})


def test_a_stopped_run_is_told_how_the_command_it_ran_in_goes_on() -> None:
    """A run stopped inside sgpo compare or sgpo demo goes on with that command: told to
    resume the one run with sgpo train, a user would finish it alone, with no baseline or
    compare.json."""
    from sgpo.cli import _stop_message
    from sgpo.errors import TrainingStopped

    stopped = TrainingStopped("out/run", 6)
    assert _stop_message("train", stopped) == (
        "stopped at step 6, with a checkpoint in out/run: sgpo train --resume out/run continues "
        "from there"
    )
    assert _stop_message("compare", stopped).endswith(
        ": the same sgpo compare command again continues it and the runs after it"
    )
    assert "sgpo train" not in _stop_message("demo", stopped)
    finished = TrainingStopped("out/run", 9, finished=True)
    assert _stop_message("train", finished).endswith("summary are written): done")
    assert "with --resume" in _stop_message("demo", finished)


def test_ctrl_c_names_how_the_interrupted_command_goes_on(
    tmp_path: Path, env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile is continued with its --resume; a command with nothing to continue (sgpo
    show) is not told about profile, train and demo."""
    import sgpo.plan
    import sgpo.profile

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sgpo.plan, "read_plan", ctrl_c)
    shown = CliRunner().invoke(app, ["show", str(env.plan)])
    said = " ".join(shown.output.split())
    assert shown.exit_code == 130 and said.endswith("(each is written atomically)")
    monkeypatch.setattr(sgpo.profile, "run_profile", ctrl_c)
    args = ["profile", "-c", str(env.config_path), "-o", str(tmp_path / "p")]
    profiled = CliRunner().invoke(app, args)
    said = " ".join(profiled.output.split())
    assert profiled.exit_code == 130
    assert "; the same sgpo profile command with --resume continues it" in said
    assert "sgpo demo" not in said and "sgpo compare" not in said
