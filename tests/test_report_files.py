"""sgpo report on damaged run files: an error naming the file (and the line or the field),
never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_run import tiny_tree, write_config
from typer.testing import CliRunner

from sgpo.cli import app
from sgpo.config import load_config
from sgpo.errors import DataError
from sgpo.report import write_report
from sgpo.rundir import written_by_sgpo
from sgpo.runfiles import METRICS_FILE, SUMMARY_FILE
from sgpo.train import run_train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    train = {"method": "grpo", "steps": 2, "eval_every": 1, "checkpoint_every": 0}
    config = write_config(root / "config.yaml", tiny_tree(root / "models", train=train))
    run_train(load_config(config), root / "run")
    return root / "run"


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run that a test may damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_report_of_an_intact_run(run: Path):
    text = write_report(run).read_text()
    assert text.startswith("# sgpo run: grpo")
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert (
        f"Model `{summary['model']}`, data `{summary['task']}`, verifier "
        f"`{summary['config']['task']['verifier']}`." in " ".join(text.split())
    )
    # what makes it the run it is, and each cost currency, named
    settings = next(line for line in text.splitlines() if line.startswith("Settings not at"))
    assert "`train.method=grpo`" in settings and "checkpoint_every" not in settings
    assert "accuracy by bucket, step 0 -> final" in text
    assert "train-all (every rollout trained, as verl and TRL do)" in text
    # a grpo run has no plan to draw: only what was drawn is listed as sgpo's
    listed = written_by_sgpo(run)
    assert {"report.md", "accuracy_vs_flops.png"} <= listed
    assert not {"plan_drift.png", "p_hat_hist.png"} & listed


def test_report_of_a_directory_without_a_finished_run_says_what_it_holds(run: Path, tmp_path: Path):
    def refusal(directory: Path) -> str:
        result = CliRunner().invoke(app, ["report", str(directory)])
        assert result.exit_code == 1
        return " ".join(result.output.split())

    (run / SUMMARY_FILE).unlink()  # killed before its end
    said = refusal(run)
    assert (
        f"did not finish (metrics.jsonl, no summary.json): finish it with sgpo train --resume {run}"
        in said
    )
    compare = tmp_path / "compare"
    (compare / "runs").mkdir(parents=True)
    (compare / "compare.json").write_text("{}")
    said = refusal(compare)
    assert "is an sgpo compare directory: its report is compare.md" in said
    assert "--resume" not in said
    planned = tmp_path / "planned"
    planned.mkdir()
    shutil.copy(run / "config.yaml", planned / "plan.parquet")  # only its name is looked at
    assert "holds a profile or a plan and no training run" in refusal(planned)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is not an sgpo run (sgpo train writes summary.json when it ends)" in refusal(empty)


def test_report_of_a_run_an_older_sgpo_summarised(run: Path):
    summary = json.loads((run / SUMMARY_FILE).read_text())
    for field in ("initial_eval_acc_by_bucket", "total_flops_train_all", "generated_tokens"):
        del summary[field]
    (run / SUMMARY_FILE).write_text(json.dumps(summary))
    text = write_report(run).read_text()
    assert "accuracy by bucket, step 0 -> final" in text and "train-all" not in text


def test_training_over_a_reported_run_removes_its_report(run: Path, tmp_path: Path):
    """The report and sgpo eval's result would describe the run trained over; a file of the
    user's stays."""
    from typer.testing import CliRunner

    from sgpo.cli import app

    write_report(run)
    evaluated = CliRunner().invoke(
        app, ["eval", "-c", str(run / "config.yaml"), "--model", str(run / "final"), "-o", str(run)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    (run / "notes.md").write_text("mine")
    config = load_config(run / "config.yaml", ["train.steps=1"])
    run_train(config, run, overwrite=True)
    assert not (run / "report.md").exists() and not (run / "accuracy_vs_flops.png").exists()
    assert not (run / "eval.json").exists()
    assert (run / "notes.md").read_text() == "mine"
    assert "steps: 1" in write_report(run).read_text()


def test_truncated_summary_is_named(run: Path):
    summary = run / SUMMARY_FILE
    summary.write_text(summary.read_text()[:40])
    with pytest.raises(DataError, match=rf"{summary}: not valid JSON .*truncated or damaged"):
        write_report(run)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{}", r"missing 'method', 'initial_eval_acc', .*'verifier_timeouts'; it is damaged"),
        ("[]", "not a JSON object but list"),
    ],
)
def test_summary_without_its_fields_is_named(run: Path, text: str, message: str):
    (run / SUMMARY_FILE).write_text(text)
    with pytest.raises(DataError, match=f"{run / SUMMARY_FILE}: {message}"):
        write_report(run)


def test_summary_missing_one_field_names_it(run: Path):
    summary = json.loads((run / SUMMARY_FILE).read_text())
    del summary["flops_by_phase"]
    (run / SUMMARY_FILE).write_text(json.dumps(summary))
    with pytest.raises(DataError, match=r"summary.json: missing 'flops_by_phase'; it is damaged"):
        write_report(run)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"garbage", "not valid JSON: Expecting value"),
        (b'{"step": "\xff"}', "not valid JSON: 'utf-8' codec can't decode"),
        (b"[1, 2]", "not a JSON object but list"),
    ],
)
def test_a_damaged_metrics_line_is_named_with_its_number(run: Path, line: bytes, message: str):
    metrics = run / METRICS_FILE
    number = len(metrics.read_bytes().splitlines()) + 1
    with metrics.open("ab") as f:
        f.write(line + b"\n")
    with pytest.raises(DataError, match=rf"{metrics}: line {number}: {message}"):
        write_report(run)


def edit_second_record(run: Path, edit: Callable[[dict], object]) -> Path:
    """metrics.jsonl with its second record (step 1) edited in place; the file's path."""
    metrics = run / METRICS_FILE
    records = metrics.read_text().splitlines()
    step = json.loads(records[1])
    edit(step)
    records[1] = json.dumps(step)
    metrics.write_text("\n".join(records) + "\n")
    return metrics


def test_a_metrics_record_without_a_field_is_named(run: Path):
    metrics = edit_second_record(run, lambda step: step.pop("reward_mean"))
    with pytest.raises(DataError, match=rf"{metrics}: record 2: missing 'reward_mean'"):
        write_report(run)


@pytest.mark.parametrize(
    ("field", "value"), [("final_eval_acc", "x"), ("flops_by_phase", None), ("steps", True)]
)
def test_a_summary_field_of_the_wrong_type_is_named(run: Path, field: str, value: object):
    summary = json.loads((run / SUMMARY_FILE).read_text())
    summary[field] = value
    (run / SUMMARY_FILE).write_text(json.dumps(summary))
    with pytest.raises(DataError, match=rf"summary.json: field '{field}' is .*; it is damaged"):
        write_report(run)


def test_a_metrics_field_of_the_wrong_type_is_named(run: Path):
    # a string would be plotted as a category
    metrics = edit_second_record(run, lambda step: step.update(eval_acc="high"))
    with pytest.raises(DataError, match=rf"{metrics}: record 2: field 'eval_acc' is 'high'"):
        write_report(run)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_metrics_field_that_is_not_finite_is_named(run: Path, value: float):
    # json writes these as NaN / Infinity, which Python's json reads back as floats
    metrics = edit_second_record(run, lambda step: step.update(reward_mean=value))
    with pytest.raises(DataError, match=rf"{metrics}: record 2: field 'reward_mean' is {value}"):
        write_report(run)


def test_a_summary_number_that_is_not_finite_is_named(run: Path):
    summary = json.loads((run / SUMMARY_FILE).read_text())
    summary["flops_by_phase"]["train"] = float("nan")
    (run / SUMMARY_FILE).write_text(json.dumps(summary))
    with pytest.raises(DataError, match=r"summary.json: field 'flops_by_phase' is .*nan.*; it is"):
        write_report(run)


def test_metrics_cut_short_of_the_finished_run_is_named(run: Path):
    """A finished run's last record lost (its line cut off, read as not yet written): the report
    would end a step early without a word."""
    metrics = run / METRICS_FILE
    metrics.write_bytes(metrics.read_bytes()[:-5])
    with pytest.raises(DataError, match=rf"{metrics}: no record of step 2 of the run's 2"):
        write_report(run)


def test_the_command_prints_the_error_without_a_traceback(run: Path):
    (run / SUMMARY_FILE).write_text('{"method": ')
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"error: {run / SUMMARY_FILE}: not valid JSON" in " ".join(result.output.split())


def test_a_failed_report_lists_none_of_the_outputs_it_did_not_write(tmp_path: Path):
    # else a later report would replace a report.md of the user's as its own
    from sgpo.rundir import written_by_sgpo

    (tmp_path / SUMMARY_FILE).write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        write_report(tmp_path)
    assert not written_by_sgpo(tmp_path) & {"report.md", "accuracy_vs_flops.png"}
