"""benchmarks/prefix_cache_read.py: train-all FLOPs with a group's prompt prefilled once."""

from pathlib import Path

import pytest
from tiny_run import load_script

from sgpo.core.flops import ModelShape, sequence_forward_flops

prefix_cache_read = load_script(Path(__file__).parents[1] / "benchmarks" / "prefix_cache_read.py")
SHAPE = ModelShape(n_params=1000, n_layers=2, d_attn=8)


def test_each_logged_group_saves_all_but_one_prefill_of_its_prompt_from_its_step_on() -> None:
    records = [
        {"step": 0, "eval_acc": 0.1, "flops_train_all_cum": 50.0},
        {"step": 1, "rollouts": 12, "flops_train_all_cum": 1e6, "group_outcomes": [["a", 8, 8]]},
        {
            "step": 2,
            "rollouts": 5,
            "eval_acc": 0.3,
            "flops_train_all_cum": 2e6,
            "group_outcomes": [["b", 4, 1], ["a", 1, 0]],
        },
    ]
    train_all, cached, saved = prefix_cache_read.cached_costs(records, SHAPE, {"a": 5, "b": 2})
    # a's 8 responses share 7 prefills of 5 tokens, b's 4 share 3 of 2; a group of 1 shares none
    expected = 7 * sequence_forward_flops(SHAPE, 5) + 3 * sequence_forward_flops(SHAPE, 2)
    assert saved == pytest.approx(expected)
    assert train_all == [(50.0, 0.1), (2e6, 0.3)]
    # the profile's cost at step 0 is left as charged; the evaluation of step 2, written in the
    # step's own record after its groups, has both steps' saving
    assert cached == [(50.0, 0.1), (pytest.approx(2e6 - expected), 0.3)]


def test_runs_with_reused_profile_samples_or_without_group_outcomes_are_refused() -> None:
    reused = [{"step": 1, "rollouts": 8, "reused_rollouts": 8, "group_outcomes": [["a", 8, 8]]}]
    with pytest.raises(ValueError, match="step 1: 8 reused profile samples"):
        prefix_cache_read.cached_costs(reused, SHAPE, {"a": 5})
    older = [{"step": 1, "rollouts": 8, "flops_train_all_cum": 1.0}]
    with pytest.raises(ValueError, match="step 1: no group_outcomes"):
        prefix_cache_read.cached_costs(older, SHAPE, {"a": 5})


def test_the_reads_are_compare_jsons_crossing_and_fit() -> None:
    baseline = [[(0.0, 0.3), (10.0, 0.35), (20.0, 0.38), (30.0, 0.39), (40.0, 0.4)]]
    method = [[(1.0, 0.3), (5.0, 0.38), (10.0, 0.4), (15.0, 0.4), (20.0, 0.41)]]
    # target: the baseline's last 3 evaluations, 0.39; the method's trailing mean of 3 holds it
    # first at cost 15 (0.38, 0.40, 0.40 -> 0.393): the baseline's total 40 / 15
    assert prefix_cache_read.crossing_ratio(baseline, method, 3) == pytest.approx(40 / 15)
    higher = [[(0.0, 0.3), (10.0, 0.5), (20.0, 0.5), (40.0, 0.5)]]  # target 0.5: never reached
    assert prefix_cache_read._fmt(prefix_cache_read.crossing_ratio(higher, method, 3)) == "never"
    assert prefix_cache_read.fitted(baseline, method) > 1.0
