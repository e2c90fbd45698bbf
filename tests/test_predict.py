"""core/predict.py: the success-rate prior fitted to a profile, informative probability under
it, and plan-vs-baseline cost per informative rollout."""

import math

import numpy as np
import pytest

from sgpo.core.predict import (
    Allocation,
    Downsampling,
    Growth,
    QueryCost,
    RatePrior,
    binomial_likelihood,
    epoch_costs,
    expected_group,
    expected_informative_probability,
    fit_rate_prior,
    predict_against_baseline,
    profile_costs,
)

NO_PROFILE = {"tokens": 0.0, "flops": 0.0, "flops_train_all": 0.0}
ANY_RATE = RatePrior(tuple(i / 100 for i in range(101)), (1 / 101,) * 101)  # uniform on a grid


def outcomes_of(population: dict[float, float], k: int, queries: int) -> list[tuple[int, int]]:
    """The expected profile of `queries` queries whose rates are spread as `population`."""
    out = []
    for n in range(k + 1):
        share = sum(w * math.comb(k, n) * p**n * (1 - p) ** (k - n) for p, w in population.items())
        out += [(n, k)] * round(share * queries)
    return out


def mass_near(prior: RatePrior, rate: float, width: float = 0.1) -> float:
    return sum(w for p, w in zip(prior.rates, prior.weights, strict=True) if abs(p - rate) <= width)


def test_fitted_prior_recovers_how_rates_are_spread():
    prior = fit_rate_prior(outcomes_of({0.3: 0.5, 0.9: 0.5}, k=16, queries=20_000))
    assert sum(prior.weights) == pytest.approx(1.0)
    assert mass_near(prior, 0.3) == pytest.approx(0.5, abs=0.05)
    assert mass_near(prior, 0.9) == pytest.approx(0.5, abs=0.05)
    mean = sum(p * w for p, w in zip(prior.rates, prior.weights, strict=True))
    assert mean == pytest.approx(0.6, abs=0.01)


def first_success_outcomes_of(
    population: dict[float, float], k: int, queries: int
) -> list[tuple[int, int]]:
    """The expected record of a profile stopped at each query's first success: (1, n) for a
    first success at sample n, (0, k) for none in k."""
    out = []
    for n in range(1, k + 1):
        share = sum(w * p * (1 - p) ** (n - 1) for p, w in population.items())
        out += [(1, n)] * round(share * queries)
    out += [(0, k)] * round(sum(w * (1 - p) ** k for p, w in population.items()) * queries)
    return out


def test_a_first_success_profile_predicts_what_the_full_profile_predicts():
    # Its stopping rule looks only at outcomes already seen, so (n_correct, samples drawn) has
    # the binomial likelihood up to a factor free of p: the same fit and posteriors apply.
    population = {0.0: 0.15, 0.1: 0.1, 0.5: 0.2, 0.8: 0.25, 0.95: 0.3}
    truth = sum(w * (1 - p**8 - (1 - p) ** 8) for p, w in population.items())
    for outcomes in (
        outcomes_of(population, k=8, queries=20_000),
        first_success_outcomes_of(population, k=8, queries=20_000),
    ):
        prior = fit_rate_prior(outcomes)
        predicted = sum(expected_informative_probability(n, k, 8, prior) for n, k in outcomes)
        assert predicted / len(outcomes) == pytest.approx(truth, abs=0.01)


def test_a_query_is_judged_by_the_company_it_keeps():
    # 7 of 8 correct among mostly always-solved queries is likely a p ~ 0.95 query: a group of
    # 16 is then all correct far more often than among mostly middling queries.
    mostly_solved = fit_rate_prior(outcomes_of({0.97: 0.8, 0.5: 0.2}, k=8, queries=5000))
    mostly_middling = fit_rate_prior(outcomes_of({0.97: 0.1, 0.6: 0.9}, k=8, queries=5000))
    among_solved = expected_informative_probability(7, 8, 16, mostly_solved)
    among_middling = expected_informative_probability(7, 8, 16, mostly_middling)
    assert among_solved < among_middling - 0.1


def test_large_profiles_neither_overflow_nor_lose_the_edges():
    rates = np.linspace(0.0, 1.0, 5)
    assert binomial_likelihood(3, 3, rates) == pytest.approx(rates**3)  # exact at p = 0 and 1
    assert binomial_likelihood(0, 2, rates) == pytest.approx((1 - rates) ** 2)
    # comb(4000, 2000) is beyond a float; the likelihood itself is not
    peak = binomial_likelihood(2000, 4000, np.array([0.5]))[0]
    assert peak == pytest.approx(1 / math.sqrt(math.pi * 2000), rel=1e-3)
    prior = fit_rate_prior([(2000, 4000), (3990, 4000)])
    assert mass_near(prior, 0.5, 0.01) == pytest.approx(0.5, abs=0.01)


def test_informative_probability_closed_forms():
    point = RatePrior((0.5,), (1.0,))  # every query at p = 1/2, whatever it showed
    assert expected_informative_probability(3, 6, 2, point) == pytest.approx(0.5)
    assert (
        expected_informative_probability(3, 6, 1, point) == 0.0
    )  # one rollout is never informative
    solved = RatePrior((0.5, 1.0), (0.5, 0.5))
    # after 4 of 4 correct: posterior weights 1/16 : 1 on p = 1/2 and p = 1
    assert expected_informative_probability(4, 4, 2, solved) == pytest.approx((1 / 17) * 0.5)
    with pytest.raises(ValueError, match="no chance"):
        expected_informative_probability(3, 4, 2, RatePrior((1.0,), (1.0,)))
    with pytest.raises(ValueError, match="no profiled queries"):
        fit_rate_prior([])


def test_informative_probability_grows_with_group_size():
    values = [expected_informative_probability(1, 8, g, ANY_RATE) for g in (2, 4, 8, 16)]
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


def test_no_ratio_is_read_where_no_informative_rollout_is_expected():
    # a profile that solved nothing: ~1e-9 informative on both sides, a meaningless ratio
    queries = [query(0)] * 10
    nothing = predict_against_baseline(queries, Allocation([16] * 10), 8, NO_PROFILE, epochs=1)
    assert nothing["informative_fraction"] < 1e-6
    for currency in ("tokens", "flops", "flops_train_all"):
        assert nothing[f"ratio_per_informative_{currency}"] is None


def test_an_epochs_predicted_cost_counts_down_sampling_and_dropped_dead_groups():
    queries = [query(n) for n in range(9)]
    whole = predict_against_baseline(queries, Allocation([8] * 9), 8, NO_PROFILE, epochs=1)
    cut = Allocation([8] * 9, downsampling=Downsampling(4), drop_dead=True)
    lean = predict_against_baseline(queries, cut, 8, NO_PROFILE, epochs=1)
    # every rollout generated and trained: GRPO(G=8) in a trainer that trains all
    assert whole["baseline_flops_train_all_per_epoch"] == pytest.approx(9 * 8 * (10.0 + 30.0))
    assert lean["tokens_per_epoch"] == whole["tokens_per_epoch"] == 9 * 8 * 5.0  # all generated
    assert lean["flops_train_all_per_epoch"] < whole["flops_train_all_per_epoch"]
    assert lean["flops_per_epoch"] < whole["flops_per_epoch"]


def test_epoch_costs_skip_trainer_trains_only_informative_rollouts():
    costs = epoch_costs([query(4)], Allocation([8]), ANY_RATE)
    live = 8 * expected_informative_probability(4, 8, 8, ANY_RATE)
    assert costs["flops"] == pytest.approx(8 * 10.0 + live * 30.0)
    assert costs["flops_train_all"] == 8 * 40.0
    assert costs["tokens"] == 40.0
    # dead groups dropped: a train-all trainer trains only what this trainer trains
    dropped = epoch_costs([query(4)], Allocation([8], drop_dead=True), ANY_RATE)
    assert dropped["flops_train_all"] == pytest.approx(costs["flops"])
    assert dropped["flops"] == costs["flops"] and dropped["rollouts"] == costs["rollouts"]


def simulate_growth(p: float, g: int, growth: Growth, groups: int) -> tuple[float, float]:
    """Monte Carlo of grow-until-mixed: (mean rollouts, mean rollouts in mixed groups)."""
    rng = np.random.default_rng(0)
    draws = rng.random((groups, growth.cap)) < p
    rollouts = informative = 0
    for row in draws:
        size = g
        while size < growth.cap and len(set(row[:size])) == 1:
            size = min(size + growth.round, growth.cap)
        rollouts += size
        informative += size if len(set(row[:size])) == 2 else 0
    return rollouts / groups, informative / groups


@pytest.mark.parametrize("p,g", [(0.95, 16), (0.6, 4), (0.1, 7)])
def test_grown_groups_cost_and_give_what_simulation_says(p: float, g: int):
    growth = Growth(cap=32, round=4, balanced=False)
    point = RatePrior((p,), (1.0,))  # the query's rate known exactly
    expected = expected_group(3, 8, g, point, growth)
    rollouts, informative = simulate_growth(p, g, growth, 20_000)
    assert expected.rollouts == pytest.approx(rollouts, rel=0.02)
    assert expected.informative == pytest.approx(informative, rel=0.02)
    # trained whole: a trainer that skips zero-advantage rollouts trains the mixed ones only
    assert (expected.trained_live, expected.trained_all) == (
        expected.informative,
        expected.rollouts,
    )
    balanced = expected_group(3, 8, g, point, Growth(32, 4, balanced=True))
    assert balanced.rollouts == expected.rollouts
    mixed = 1 - p**32 - (1 - p) ** 32
    assert balanced.trained_all == g and balanced.trained_live == pytest.approx(g * mixed)


def test_growth_raises_the_informative_fraction_of_near_solved_queries():
    point = RatePrior((0.95,), (1.0,))
    plain = expected_group(7, 8, 16, point)
    grown = expected_group(7, 8, 16, point, Growth(cap=64, round=4, balanced=True))
    assert plain.informative / plain.rollouts == pytest.approx(1 - 0.95**16 - 0.05**16)
    assert grown.informative / grown.rollouts > plain.informative / plain.rollouts + 0.25
    # a group planned larger than the cap is not grown
    assert expected_group(7, 8, 16, point, Growth(8, 4, balanced=False)) == plain


def test_down_sampled_groups_are_generated_whole_and_trained_in_part():
    point = RatePrior((0.9,), (1.0,))
    whole = expected_group(7, 8, 16, point)
    few = expected_group(7, 8, 16, point, downsampling=Downsampling(4))
    mixed = 1 - 0.9**16 - 0.1**16
    assert (few.rollouts, few.informative) == (whole.rollouts, whole.informative)
    assert few.trained_all == pytest.approx(4) and few.trained_live == pytest.approx(4 * mixed)
    # a group no larger than the subset is trained whole
    four = expected_group(7, 8, 4, point, downsampling=Downsampling(4))
    assert four == expected_group(7, 8, 4, point)


def test_only_skewed_groups_are_down_sampled_with_a_minimum_share():
    point = RatePrior((0.9,), (1.0,))
    skewed = expected_group(7, 8, 16, point, downsampling=Downsampling(4, min_share=0.875))
    # j of 16 correct: trained 4 if 14+ of one outcome, else all 16
    chance = [math.comb(16, j) * 0.9**j * 0.1 ** (16 - j) for j in range(17)]
    trained = [4 if max(j, 16 - j) >= 14 else 16 for j in range(17)]
    assert skewed.trained_all == pytest.approx(sum(chance[j] * trained[j] for j in range(17)))
    live = sum(chance[j] * trained[j] for j in range(1, 16))
    assert skewed.trained_live == pytest.approx(live)
    every = expected_group(7, 8, 16, point, downsampling=Downsampling(4))
    assert every.trained_all < skewed.trained_all < 16  # p = 0.9: mostly 14+ correct
    with pytest.raises(ValueError, match="not both"):
        expected_group(7, 8, 16, point, Growth(32, 4, balanced=True), Downsampling(4))
