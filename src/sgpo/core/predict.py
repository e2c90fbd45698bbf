"""What a plan should buy, predicted from the profile alone: the expected share of informative
rollouts and the cost per informative rollout against a fixed-G GRPO baseline, in the three
currencies users pay (generated tokens, FLOPs of a trainer that skips zero-advantage backward
passes, FLOPs of a trainer that trains every rollout).

A query's success rate is uncertain after k samples, and which queries show 7 of 8 depends on
how success rates are spread over the dataset: where most queries are always solved, a 7/8
query is more likely one at p = 0.95 than at 0.8. So the spread itself is estimated from the
whole profile (empirical Bayes: the nonparametric maximum-likelihood distribution of p on a
grid, fitted by EM), each query's p is its posterior under that prior, and a group of G
rollouts is informative (rewards not all equal) with probability E[1 - p^G - (1 - p)^G]. On the
benchmark's three mixes (ten seeds) this overestimates GRPO(G=8)'s measured informative
fraction by 0.01-0.08, a per-query Jeffreys prior by 0.11-0.18 (BENCHMARKS.md); what is left is
training moving p, which a profile of the initial policy cannot see. k samples per
query pin down only the spread's first k moments, so for G > k the prediction extrapolates
(NPMLE's discrete fit is the usual choice). An adaptive profile (stopped once a query's rewards
varied, or at its first success) records (n_correct, samples drawn): its stopping rule depends
only on rewards already seen, so the likelihood of that record is the binomial one up to a
factor free of p (for a graded verifier, where the scores' spread given pass or fail is), and
the same fit and posteriors apply; a first-success profile of at most k samples pins down the
same first k moments as the full one (P(first success at n) =
E[p (1 - p)^(n - 1)], n <= k, and P(none) = E[(1 - p)^k]), but from about one success per
query, so far less closely: its prediction's error is 2-7x the full profile's at any dataset
size (BENCHMARKS.md, "The best plan's prediction, per seed"). The profile's cost is charged
once, spread over `epochs` passes over the data."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatePrior:
    """A discrete distribution of success rates over a dataset's queries."""

    rates: tuple[float, ...]
    weights: tuple[float, ...]


def binomial_likelihood(n_correct: int, k: int, rates: np.ndarray) -> np.ndarray:
    """P(n_correct of k | p) at each p in rates; in logs, so that no k overflows a float, with
    0 * log 0 = 0 so that p = 0 and 1 are exact."""
    if k < 0 or not 0 <= n_correct <= k:
        raise ValueError(f"need 0 <= n_correct <= k, got n_correct={n_correct}, k={k}")
    failures = k - n_correct
    log_comb = math.lgamma(k + 1) - math.lgamma(n_correct + 1) - math.lgamma(failures + 1)
    with np.errstate(divide="ignore"):
        log_wins = n_correct * np.log(rates) if n_correct else np.zeros_like(rates)
        log_losses = failures * np.log1p(-rates) if failures else np.zeros_like(rates)
    return np.exp(log_comb + log_wins + log_losses)


def fit_rate_prior(
    outcomes: Sequence[tuple[int, int]],
    grid_points: int = 201,
    max_iterations: int = 10_000,
    tolerance: float = 1e-10,
) -> RatePrior:
    """The distribution of success rates (on a grid over [0, 1]) that makes the profile's
    (n_correct, k) outcomes most likely: Kiefer-Wolfowitz NPMLE by EM. Queries with the same
    outcome are pooled, so the cost does not grow with the dataset. EM converges slowly; on the
    benchmark's profiles 10k iterations (~0.4 s) leave informative probabilities within 0.015
    of a 100k-iteration fit."""
    if not outcomes:
        raise ValueError("no profiled queries to fit a success-rate prior to")
    counts = Counter(outcomes)
    pairs = list(counts)
    multiplicity = np.array([counts[pair] for pair in pairs], dtype=float)
    rates = np.linspace(0.0, 1.0, grid_points)
    likelihood = np.stack([binomial_likelihood(n, k, rates) for n, k in pairs])
    weights = np.full(grid_points, 1.0 / grid_points)
    previous = -math.inf
    for _ in range(max_iterations):
        mixture = likelihood @ weights
        log_likelihood = float(multiplicity @ np.log(mixture))
        if log_likelihood - previous < tolerance:
            break
        previous = log_likelihood
        weights = weights * (likelihood.T @ (multiplicity / mixture)) / multiplicity.sum()
    return RatePrior(tuple(rates.tolist()), tuple(weights.tolist()))


@dataclass(frozen=True)
class QueryCost:
    """One profiled query: its outcomes and what one rollout of it costs."""

    n_correct: int
    k: int
    tokens: float  # mean generated tokens per rollout
    generate_flops: float  # generating one rollout
    train_flops: float  # training on one rollout (forward + backward)


@dataclass(frozen=True)
class Growth:
    """Grow until mixed (train.grow_max): a group whose rewards are all equal gets `round` more
    rollouts at a time until it is mixed or holds `cap`; `balanced`: only the planned size is
    trained (train.grow_train), otherwise the whole grown group."""

    cap: int
    round: int
    balanced: bool


@dataclass(frozen=True)
class Downsampling:
    """Every group generated whole, only `size` of a larger one trained (train.downsample_to),
    and only if its most common outcome holds at least `min_share` of it
    (train.downsample_min_share; 0 = every larger group)."""

    size: int
    min_share: float = 0.0


@dataclass(frozen=True)
class Allocation:
    """Rollouts per query for one epoch (0 = not trained), optionally grown until mixed, or
    down-sampled; drop_dead: groups whose rewards are all equal leave the batch
    (train.drop_equal_groups), so a trainer that trains every rollout trains only the live."""

    group_sizes: Sequence[int]
    growth: Growth | None = None
    downsampling: Downsampling | None = None
    drop_dead: bool = False


@dataclass(frozen=True)
class GroupExpectation:
    """Expected rollouts of one query's group: generated, in a mixed group, and trained by a
    trainer that skips zero-advantage rollouts (live) and by one that trains them all."""

    rollouts: float
    informative: float
    trained_live: float
    trained_all: float


def _posterior(n_correct: int, k: int, prior: RatePrior) -> tuple[np.ndarray, np.ndarray]:
    """(rates, posterior weights) after n_correct of k (a prior that rules out every rate the
    outcome allows is an error)."""
    rates = np.array(prior.rates)
    posterior = np.array(prior.weights) * binomial_likelihood(n_correct, k, rates)
    total = posterior.sum()
    if total <= 0:
        raise ValueError(f"the prior gives {n_correct} of {k} correct no chance")
    return rates, posterior / total


def expected_informative_probability(n_correct: int, k: int, g: int, prior: RatePrior) -> float:
    """P(a group of g rollouts has both outcomes), p under the prior updated with the query's
    n_correct of k."""
    return expected_group(n_correct, k, g, prior).informative / g if g >= 2 else 0.0


def expected_group(
    n_correct: int,
    k: int,
    g: int,
    prior: RatePrior,
    growth: Growth | None = None,
    downsampling: Downsampling | None = None,
) -> GroupExpectation:
    """What a group planned at g rollouts is expected to cost and give, p under the prior
    updated with the query's n_correct of k. Growing: after g rollouts, and after each round,
    the group goes on while all its rewards are equal (probability E[p^s + (1 - p)^s] at size
    s); it is wasted only if still all equal at the cap. Down-sampled: a group of g > size
    with j of g correct trains `size` if max(j, g - j) / g >= min_share, else all g."""
    if growth is not None and downsampling is not None:
        raise ValueError("a group is grown until mixed or down-sampled, not both")
    rates, posterior = _posterior(n_correct, k, prior)

    def all_equal(size: int) -> float:
        return float(posterior @ (rates**size + (1.0 - rates) ** size))

    size, rollouts = g, float(g)
    if growth is not None:
        while size < growth.cap:
            step = min(growth.round, growth.cap - size)
            rollouts += step * all_equal(size)
            size += step
    mixed = 1.0 - all_equal(size) if size >= 2 else 0.0
    informative = rollouts - size * (1.0 - mixed)  # only groups still all equal at the end waste
    if downsampling is not None and g > downsampling.size:
        correct = np.arange(g + 1)
        chance = np.array([posterior @ binomial_likelihood(int(j), g, rates) for j in correct])
        share = np.maximum(correct, g - correct) / g
        trained = np.where(share >= downsampling.min_share, downsampling.size, g)
        live = (correct > 0) & (correct < g)
        return GroupExpectation(
            rollouts, informative, float(chance[live] @ trained[live]), float(chance @ trained)
        )
    if growth is not None and growth.balanced:
        return GroupExpectation(rollouts, informative, g * mixed, float(g))
    return GroupExpectation(rollouts, informative, informative, rollouts)


def epoch_costs(
    queries: Sequence[QueryCost], allocation: Allocation, prior: RatePrior
) -> dict[str, float]:
    """Expected rollouts, informative rollouts and cost per currency of one epoch."""
    out = dict.fromkeys(("rollouts", "informative", "tokens", "flops", "flops_train_all"), 0.0)
    # Queries share a handful of (n_correct, k, G): each posterior is computed once.
    expected: dict[tuple[int, int, int], GroupExpectation] = {}
    for q, g in zip(queries, allocation.group_sizes, strict=True):
        if g <= 0:
            continue
        key = (q.n_correct, q.k, g)
        if key not in expected:
            expected[key] = expected_group(
                q.n_correct, q.k, g, prior, allocation.growth, allocation.downsampling
            )
        e = expected[key]
        out["rollouts"] += e.rollouts
        out["informative"] += e.informative
        out["tokens"] += e.rollouts * q.tokens
        out["flops"] += e.rollouts * q.generate_flops + e.trained_live * q.train_flops
        trained_all = e.trained_live if allocation.drop_dead else e.trained_all
        out["flops_train_all"] += e.rollouts * q.generate_flops + trained_all * q.train_flops
    return out


CURRENCIES = ("tokens", "flops", "flops_train_all")


def predict_against_baseline(
    queries: Sequence[QueryCost],
    plan: Allocation,
    baseline_group_size: int,
    profile_cost: dict[str, float],
    epochs: float,
) -> dict[str, float | None]:
    """Predicted informative fractions, each currency's expected cost of one epoch (the plan's
    and the baseline's), and per currency the baseline's cost per informative
    rollout divided by the plan's (above 1: the plan is cheaper; None where either side expects
    no informative rollout), with the profile's cost
    (profile_cost per currency) charged once over `epochs` epochs; p's spread is fitted to the
    queries' own outcomes (fit_rate_prior)."""
    prior = fit_rate_prior([(q.n_correct, q.k) for q in queries])
    ours = epoch_costs(queries, plan, prior)
    base = epoch_costs(queries, Allocation([baseline_group_size] * len(queries)), prior)
    result = {
        "informative_fraction": ours["informative"] / ours["rollouts"] if ours["rollouts"] else 0,
        "baseline_informative_fraction": base["informative"] / base["rollouts"],
        "epochs": epochs,
    }
    # Costs per informative rollout compare only where both sides expect some: a profile that
    # saw nearly nothing solved predicts ~1e-9 of each, and their ratio would be noise.
    comparable = min(result["informative_fraction"], result["baseline_informative_fraction"])
    for currency in CURRENCIES:
        # one epoch's expected cost, with the plan's down-sampling and dropped dead groups
        result[f"{currency}_per_epoch"] = ours[currency]
        result[f"baseline_{currency}_per_epoch"] = base[currency]
        ratio = None
        if comparable >= NO_INFORMATIVE_FRACTION:
            plan_total = epochs * ours[currency] + profile_cost[currency]
            base_per_informative = base[currency] / base["informative"]
            ratio = base_per_informative / (plan_total / (epochs * ours["informative"]))
        result[f"ratio_per_informative_{currency}"] = ratio
    return result


# Below this predicted informative fraction a plan or baseline is expected to learn nothing:
# no cost per informative rollout is read for it.
NO_INFORMATIVE_FRACTION = 1e-6


def profile_costs(queries: Sequence[QueryCost]) -> dict[str, float]:
    """The profile's cost per currency: k generated samples per query, no training."""
    generate = sum(q.k * q.generate_flops for q in queries)
    return {
        "tokens": sum(q.k * q.tokens for q in queries),
        "flops": generate,
        "flops_train_all": generate,
    }
