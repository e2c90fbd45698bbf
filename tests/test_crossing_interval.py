"""benchmarks/crossing_interval.py: the seed-bootstrap interval of compare's crossing read."""

import math
from pathlib import Path

import pytest
from tiny_run import load_script

crossing_interval = load_script(Path(__file__).parents[1] / "benchmarks" / "crossing_interval.py")

BASELINE = [(0.0, 0.2), (50.0, 0.4), (100.0, 0.5)]  # final 0.5 at its total, 100
FAST = [(0.0, 0.2), (25.0, 0.5), (50.0, 0.5)]  # at 0.5 from cost 25
SLOW = [(0.0, 0.2), (50.0, 0.3), (100.0, 0.4)]  # never at 0.5
AT_START = [(0.0, 0.5), (50.0, 0.5)]  # at 0.5 before it spent anything


def test_the_crossing_ratio_is_the_baseline_total_over_the_cost_to_its_final_accuracy() -> None:
    assert crossing_interval.crossing_ratio([BASELINE], [FAST], window=1) == pytest.approx(4.0)
    assert crossing_interval.crossing_ratio([BASELINE], [SLOW], window=1) == 0.0
    # two seeds: the mean curve (0.35 at 25... 0.45 at 75) never holds 0.5
    assert crossing_interval.crossing_ratio([BASELINE] * 2, [FAST, SLOW], window=1) == 0.0


def test_a_method_at_the_target_at_zero_cost_reads_infinite_not_never() -> None:
    assert crossing_interval.crossing_ratio([BASELINE], [AT_START], window=1) == math.inf


def evaluations(curve: list[tuple[float, float]]) -> list[dict]:
    fields = ("flops_total_cum", "flops_train_all_cum", "generated_tokens_cum")
    return [{"eval_acc": acc, **dict.fromkeys(fields, cost)} for cost, acc in curve]


def test_the_interval_spans_what_the_seeds_disagree_on() -> None:
    result = {
        "baseline": "grpo",
        "final_window": 1,
        "methods": {
            "grpo": {"eval_curves": {"0": evaluations(BASELINE), "1": evaluations(BASELINE)}},
            "same": {"eval_curves": {"0": evaluations(FAST), "1": evaluations(FAST)}},
            "split": {"eval_curves": {"0": evaluations(FAST), "1": evaluations(SLOW)}},
        },
    }
    reads = crossing_interval.intervals(result, draws=200)
    assert reads["same"]["flops"] == pytest.approx((4.0, 4.0, 4.0, 0.0))
    whole, low, high, never = reads["split"]["flops"]
    assert (whole, low, high) == (0.0, 0.0, 4.0)  # both seeds drawn twice: 4 or never
    assert 0.1 < never < 0.9


def compare(method: str, curve_by_seed: dict[str, list]) -> dict:
    """A compare.json of method against a baseline at BASELINE, on the seeds given."""
    baseline = {s: evaluations(BASELINE) for s in curve_by_seed}
    encoded = {s: evaluations(c) for s, c in curve_by_seed.items()}
    return {
        "baseline": "grpo",
        "final_window": 1,
        "methods": {"grpo": {"eval_curves": baseline}, method: {"eval_curves": encoded}},
    }


def test_versus_divides_the_others_cost_to_the_target_by_the_rows_on_the_same_seeds() -> None:
    half_way = [(0.0, 0.2), (50.0, 0.5)]  # at 0.5 from cost 50: ratio 2
    row = compare("row", {"0": FAST, "1": FAST, "2": FAST})  # ratio 4 on every seed
    other = compare("dapo", {"0": half_way, "1": half_way})  # seed 2 never ran
    whole, low, high, below = crossing_interval.versus(
        (row, "row"), (other, "dapo"), "tokens", draws=100
    )
    assert (whole, low, high, below) == (pytest.approx(2.0), 2.0, 2.0, 0.0)
    # the other never reaching the target reads inf; the row never reaching it, 0
    never = compare("dapo", {"0": SLOW})
    assert crossing_interval.versus((row, "row"), (never, "dapo"), "flops")[0] == math.inf
    slow_row = compare("row", {"0": SLOW})
    assert crossing_interval.versus((slow_row, "row"), (other, "dapo"), "flops")[:3] == (0, 0, 0)


def test_versus_needs_shared_seeds_and_reads_both_at_start_as_even() -> None:
    at_start = compare("row", {"0": AT_START})
    assert crossing_interval.versus(
        (at_start, "row"), (compare("dapo", {"0": AT_START}), "dapo"), "flops"
    )[:3] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="no seed in common"):
        crossing_interval.versus((at_start, "row"), (compare("dapo", {"1": FAST}), "dapo"), "flops")
