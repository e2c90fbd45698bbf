"""benchmarks/trl_savings.py: the costs it reads from TRL's logs and the ratios it reports."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import trl_savings  # noqa: E402


def point(step: int, wall_s: float, tokens: float, acc: float) -> dict:
    return {"step": step, "wall_s": wall_s, "tokens": tokens, "acc": acc}


def test_step_costs_add_up_trl_step_times_and_generated_tokens() -> None:
    grpo = SimpleNamespace(
        args=SimpleNamespace(generation_batch_size=128),
        state=SimpleNamespace(
            log_history=[
                {"step": 1, "step_time": 0.5, "completions/mean_length": 4.0},
                {"step": 2, "step_time": 0.25, "completions/mean_length": 5.0},
                {"train_runtime": 9.0, "step": 2},  # the closing entry carries no step time
            ]
        ),
    )
    assert trl_savings.step_costs(grpo, 0.0, 0.0) == {1: (0.5, 512.0), 2: (0.75, 1152.0)}
    sgpo = SimpleNamespace(
        args=SimpleNamespace(generation_batch_size=128),
        state=SimpleNamespace(
            log_history=[{"step": 1, "step_time": 0.5, "sgpo/tokens_generated": 300.0}]
        ),
    )
    # sGPO starts from its profile's wall-clock and tokens; its responses are counted as drawn
    assert trl_savings.step_costs(sgpo, 2.0, 100.0) == {1: (2.5, 400.0)}


def test_summary_ratio_is_grpo_total_over_sgpo_cost_to_grpo_final_accuracy() -> None:
    runs = {
        seed: {
            "grpo": [point(0, 0.0, 0, 0.3), point(8, 10.0, 100, 0.4), point(16, 20.0, 200, 0.5)],
            "sgpo": [point(0, 1.0, 10, 0.3), point(8, 5.0, 50, 0.5), point(16, 9.0, 90, 0.5)],
        }
        for seed in (0, 1)
    }
    summary = trl_savings.summarise(runs, window=1)
    assert summary["wall_s"]["grpo_final_acc"] == pytest.approx(0.5)
    assert summary["wall_s"]["sgpo_to_target"] == 5.0
    assert summary["wall_s"]["ratio"] == pytest.approx(20.0 / 5.0)
    assert summary["tokens"]["ratio"] == pytest.approx(200 / 50)
    assert summary["final_acc"]["sgpo"] == {"mean": pytest.approx(0.5), "std": 0.0}
    # never reaching GRPO's final accuracy gives no ratio
    for run in runs.values():
        run["sgpo"] = [point(0, 1.0, 10, 0.3), point(8, 5.0, 50, 0.4)]
    assert trl_savings.summarise(runs, window=1)["wall_s"]["ratio"] is None
