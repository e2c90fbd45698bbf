"""sgpo report on a TRL output_dir: a tiny SGPOTrainer run trained for 3 steps (CPU, under a
second), and a plain GRPOTrainer run as its baseline."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from test_trl import hashed_reward, make_trainer, plan_row  # noqa: E402
from tiny_run import tiny_model_dir, write_hand_plan  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sgpo.cli import app  # noqa: E402
from sgpo.trl_report import PHASES  # noqa: E402

GROUP_SIZES = {"q0": 3, "q1": 2, "q2": 4, "q3": 2, "q4": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An SGPOTrainer output_dir (checkpoints at steps 2 and 3, trainer_state.json at its top)
    and a GRPOTrainer one, each of 3 steps."""
    root = tmp_path_factory.mktemp("trl-report")
    model_dir = tiny_model_dir(root / "model")
    rows = [plan_row(q, g, rank=4 - int(q[1:])) for q, g in GROUP_SIZES.items()]
    plan = write_hand_plan(root / "plan.parquet", rows)
    trainer = make_trainer(model_dir, plan, root, save_strategy="steps", save_steps=2)
    trainer.train()
    trainer.save_state()
    # each batch trained twice: steps 2 and 4 generate nothing and log no batch metrics
    reused = make_trainer(model_dir, plan, root / "reused", num_iterations=2, max_steps=4)
    reused.train()
    reused.save_state()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    args = GRPOConfig(
        output_dir=str(root / "baseline"),
        per_device_train_batch_size=6,
        num_generations=3,
        max_steps=3,
        max_completion_length=4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    baseline = GRPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        hashed_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [f"{i}+{i + 1}=" for i in range(6)]}),
        processing_class=tokenizer,
    )
    baseline.train()
    baseline.save_state()
    return {"run": root / "out", "reused": root / "reused" / "out", "baseline": root / "baseline"}


@pytest.fixture
def run(trained: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the SGPOTrainer output_dir that a test may change."""
    return Path(shutil.copytree(trained["run"], tmp_path / "run"))


def report(*args: str | Path) -> str:
    result = CliRunner().invoke(app, ["report", *map(str, args)])
    assert result.exit_code == 0, result.output
    return (Path(args[0]) / "report.md").read_text()


def table(text: str) -> dict[str, list[str]]:
    """report.md's table rows: label -> the cells after it."""
    return {
        cells[0]: cells[1:]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def logs_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["log_history"]


def assert_costs_are_the_last_logged(text: str, state: Path) -> None:
    last = [e for e in logs_of(state) if "sgpo/flops_total_cum" in e][-1]
    assert f"costs as of its last training log, step {last['step']}." in text
    rows = table(text)
    for phase in PHASES:
        assert number(rows[f"FLOPs: {phase}"][0]) == pytest.approx(
            last[f"sgpo/flops_{phase}_cum"], rel=1e-4
        )
    assert number(rows["FLOPs: total"][0]) == pytest.approx(last["sgpo/flops_total_cum"], rel=1e-4)
    assert number(rows["generated tokens"][0]) == last["sgpo/tokens_generated_cum"]
    assert number(rows["rollouts (responses generated)"][0]) == last["sgpo/rollouts_cum"]
    assert number(rows["optimizer steps"][0]) == json.loads(state.read_text())["global_step"]
    # sgpo's summary figure, from the per-batch counts (logging_steps = 1: one batch a log)
    steps = [e for e in logs_of(state) if "sgpo/informative_fraction" in e]
    informative = sum(e["sgpo/informative_fraction"] * e["sgpo/rollouts"] for e in steps)
    expected = informative / sum(e["sgpo/rollouts"] for e in steps)
    assert number(rows["informative fraction (mean over the run)"][0]) == pytest.approx(
        expected, abs=5e-4
    )


def test_report_of_an_sgpotrainer_run(run: Path) -> None:
    text = report(run)
    assert "Read from `trainer_state.json` at the top of the output_dir" in text
    state = run / "trainer_state.json"
    assert [e["step"] for e in logs_of(state) if "reward" in e] == [1, 2, 3]
    assert_costs_are_the_last_logged(text, state)
    plot = run / "trl_cost_curves.png"
    assert plot.read_bytes().startswith(b"\x89PNG") and "![trl_cost_curves.png]" in text
    # no evaluation, no baseline: their plots are not drawn
    assert not (run / "trl_eval_vs_cost.png").exists() and "## Evaluation" not in text
    assert not (run / "trl_vs_baseline.png").exists()


def test_steps_without_a_batch_still_count_to_the_end(trained: dict[str, Path]) -> None:
    run = trained["reused"]
    state = run / "trainer_state.json"
    assert [e["step"] for e in logs_of(state) if "reward" in e] == [1, 3]
    text = report(run)
    assert_costs_are_the_last_logged(text, state)


def test_a_checkpoint_only_output_dir_reads_the_newest_checkpoint(run: Path) -> None:
    (run / "trainer_state.json").unlink()
    text = report(run)
    assert "`checkpoint-3/trainer_state.json`, the newest checkpoint's" in text
    assert_costs_are_the_last_logged(text, run / "checkpoint-3" / "trainer_state.json")
    # a 10th checkpoint is newer than the 3rd, though its name sorts before it
    (run / "checkpoint-3").rename(run / "checkpoint-10")
    assert "`checkpoint-10/trainer_state.json`" in report(run)


def test_evaluations_are_drawn_at_the_cost_of_their_step(run: Path) -> None:
    state = json.loads((run / "trainer_state.json").read_text())
    # as TRL logs them: one before training (no cost logged at step 0) and one at step 2
    state["log_history"] += [
        {"eval_loss": 0.0, "eval_reward": 0.25, "eval_runtime": 0.1, "step": 0},
        {"eval_loss": 0.0, "eval_reward": 0.75, "eval_runtime": 0.1, "step": 2},
    ]
    (run / "trainer_state.json").write_text(json.dumps(state))
    text = report(run)
    step_2 = next(e for e in state["log_history"] if e["step"] == 2)
    flops, tokens = step_2["sgpo/flops_total_cum"], step_2["sgpo/tokens_generated_cum"]
    assert (
        f"eval_reward 0.75 at the last one (step 2, {flops:.4e} FLOPs, {tokens:,.0f} generated "
        "tokens)" in " ".join(text.split())
    )
    assert "eval_loss" not in text  # TRL's bookkeeping is left out
    assert "1 evaluation(s) left out" in text
    assert (run / "trl_eval_vs_cost.png").read_bytes().startswith(b"\x89PNG")


def test_a_grpotrainer_run_is_refused_and_goes_beside_as_baseline(
    run: Path, trained: dict[str, Path], tmp_path: Path
) -> None:
    plain = Path(shutil.copytree(trained["baseline"], tmp_path / "plain"))
    result = CliRunner().invoke(app, ["report", str(plain)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert f"{plain / 'trainer_state.json'}: its log_history holds no sgpo/ metrics" in said
    assert "not an SGPOTrainer run" in said and not (plain / "report.md").exists()

    # a baseline that is no TRL run is refused before anything is written
    result = CliRunner().invoke(app, ["report", str(run), "--baseline", str(tmp_path)])
    assert result.exit_code == 1
    assert "--baseline takes a TRL output_dir" in " ".join(result.output.split())
    assert not (run / "report.md").exists() and not (run / "trl_cost_curves.png").exists()

    text = report(run, "--baseline", plain)
    rows = table(text)
    base_last = [e for e in logs_of(plain / "trainer_state.json") if "reward" in e][-1]
    run_last = [e for e in logs_of(run / "trainer_state.json") if "reward" in e][-1]
    tokens = next(label for label in rows if label.startswith("TRL's num_tokens"))
    assert [number(c) for c in rows[tokens]] == [run_last["num_tokens"], base_last["num_tokens"]]
    assert [number(c) for c in rows["optimizer steps"]] == [3, 3]
    # what the baseline did not log is left out, and said so
    assert not any(label.startswith("cumulative total FLOPs") for label in rows)
    assert re.search(r"Left out \(cumulative total FLOPs .*generated tokens\)", text)
    assert (run / "trl_vs_baseline.png").read_bytes().startswith(b"\x89PNG")


def test_a_damaged_total_is_named(run: Path) -> None:
    state = json.loads((run / "trainer_state.json").read_text())
    state["log_history"][1]["sgpo/rollouts_cum"] = None
    (run / "trainer_state.json").write_text(json.dumps(state))
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and not (run / "report.md").exists()
    said = " ".join(result.output.split())
    assert "the log of step 2 has 'sgpo/rollouts_cum' = None; it is damaged" in said


def test_baseline_is_refused_for_an_sgpo_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--baseline", str(tmp_path)])
    assert result.exit_code == 2
    assert "--baseline is for a TRL run's report" in " ".join(result.output.split())


def test_sgpo_flops_points_a_trl_run_to_sgpo_report(run: Path) -> None:
    result = CliRunner().invoke(app, ["flops", "--run", str(run)])
    said = " ".join(result.output.split())
    assert result.exit_code != 0
    assert f"{run} is a TRL run's output_dir: sgpo report {run} tables its costs" in said


def test_a_checkpoint_newer_than_the_top_state_is_read(run: Path) -> None:
    # a run resumed past its last trainer.save_state(): the top state is the older one
    top = run / "trainer_state.json"
    state = json.loads(top.read_text())
    state["global_step"] = 1
    state["log_history"] = [e for e in state["log_history"] if e.get("step", 0) <= 1]
    top.write_text(json.dumps(state))
    text = report(run)
    assert "`checkpoint-3/trainer_state.json`, the newest checkpoint's, newer than the" in text
    assert_costs_are_the_last_logged(text, run / "checkpoint-3" / "trainer_state.json")
