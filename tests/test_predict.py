"""core/predict.py: informative probability under the Jeffreys posterior, and plan-vs-baseline
cost per informative rollout."""

import pytest

from sgpo.core.predict import (
    Allocation,
    QueryCost,
    epoch_costs,
    informative_probability,
    predict_against_baseline,
    profile_costs,
)

NO_PROFILE = {"tokens": 0.0, "flops": 0.0, "flops_train_all": 0.0}


def test_informative_probability_closed_forms():
    # k = 0: p ~ Beta(1/2, 1/2), E[p^2] = 3/8, so a pair is mixed with probability 1 - 2 * 3/8
    assert informative_probability(0, 0, 2) == pytest.approx(0.25)
    assert informative_probability(3, 6, 1) == 0.0  # one rollout is never informative
    # Beta(4.5, 0.5) after 4 of 4 correct: E[p^2] = 4.5*5.5/(5*6), E[(1-p)^2] = .5*1.5/(5*6)
    assert informative_probability(4, 4, 2) == pytest.approx(1 - (24.75 + 0.75) / 30)


def test_informative_probability_grows_with_group_size():
    values = [informative_probability(1, 8, g) for g in (2, 4, 8, 16)]
    assert values == sorted(values) and values[-1] < 1


def query(n: int, k: int = 8) -> QueryCost:
    return QueryCost(n, k, tokens=5.0, generate_flops=10.0, train_flops=30.0)


def test_baseline_allocation_against_itself_is_even():
    queries = [query(n) for n in range(9)]
    result = predict_against_baseline(queries, Allocation([8] * 9), 8, NO_PROFILE, epochs=1)
    assert result["informative_fraction"] == pytest.approx(result["baseline_informative_fraction"])
    for currency in ("tokens", "flops", "flops_train_all"):
        assert result[f"ratio_per_informative_{currency}"] == pytest.approx(1.0)


def test_dropping_solved_queries_pays_and_the_profile_is_charged():
    queries = [query(8)] * 5 + [query(4)] * 5
    plan = Allocation([0] * 5 + [8] * 5)
    free = predict_against_baseline(queries, plan, 8, NO_PROFILE, epochs=1)
    assert free["informative_fraction"] > free["baseline_informative_fraction"]
    assert free["ratio_per_informative_tokens"] > 1
    charged = predict_against_baseline(queries, plan, 8, profile_costs(queries), epochs=1)
    amortised = predict_against_baseline(queries, plan, 8, profile_costs(queries), epochs=6)
    for currency in ("tokens", "flops", "flops_train_all"):
        key = f"ratio_per_informative_{currency}"
        assert charged[key] < amortised[key] < free[key]


def test_epoch_costs_skip_trainer_trains_only_informative_rollouts():
    costs = epoch_costs([query(4)], Allocation([8]))
    live = 8 * informative_probability(4, 8, 8)
    assert costs["flops"] == pytest.approx(8 * 10.0 + live * 30.0)
    assert costs["flops_train_all"] == 8 * 40.0
    assert costs["tokens"] == 40.0
