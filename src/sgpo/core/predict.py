"""What a plan should buy, predicted from the profile alone: the expected share of informative
rollouts and the cost per informative rollout against a fixed-G GRPO baseline, in the three
currencies users pay (generated tokens, FLOPs of a trainer that skips zero-advantage backward
passes, FLOPs of a trainer that trains every rollout).

A query's success rate is uncertain after k samples, so each is treated as
p ~ Beta(n_correct + 1/2, k - n_correct + 1/2) (Jeffreys prior), and a group of G rollouts is
informative (rewards not all equal) with probability E[1 - p^G - (1 - p)^G], computed exactly.
The profile's cost is charged once, spread over `epochs` passes over the data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

JEFFREYS = 0.5


@dataclass(frozen=True)
class QueryCost:
    """One profiled query: its outcomes and what one rollout of it costs."""

    n_correct: int
    k: int
    tokens: float  # mean generated tokens per rollout
    generate_flops: float  # generating one rollout
    train_flops: float  # training on one rollout (forward + backward)


@dataclass(frozen=True)
class Allocation:
    """Rollouts per query for one epoch (0 = not trained)."""

    group_sizes: Sequence[int]


def expected_power(a: float, b: float, g: int) -> float:
    """E[p^g] for p ~ Beta(a, b)."""
    return math.exp(
        math.lgamma(a + g) - math.lgamma(a) + math.lgamma(a + b) - math.lgamma(a + b + g)
    )


def informative_probability(n_correct: int, k: int, g: int) -> float:
    """P(a group of g rollouts has both outcomes), p under the Jeffreys posterior."""
    if g < 2:
        return 0.0
    a, b = n_correct + JEFFREYS, k - n_correct + JEFFREYS
    return 1.0 - expected_power(a, b, g) - expected_power(b, a, g)


def epoch_costs(queries: Sequence[QueryCost], allocation: Allocation) -> dict[str, float]:
    """Expected rollouts, informative rollouts and cost per currency of one epoch."""
    out = dict.fromkeys(("rollouts", "informative", "tokens", "flops", "flops_train_all"), 0.0)
    for q, g in zip(queries, allocation.group_sizes, strict=True):
        if g <= 0:
            continue
        live = g * informative_probability(q.n_correct, q.k, g)
        out["rollouts"] += g
        out["informative"] += live
        out["tokens"] += g * q.tokens
        out["flops"] += g * q.generate_flops + live * q.train_flops
        out["flops_train_all"] += g * (q.generate_flops + q.train_flops)
    return out


CURRENCIES = ("tokens", "flops", "flops_train_all")


def predict_against_baseline(
    queries: Sequence[QueryCost],
    plan: Allocation,
    baseline_group_size: int,
    profile_cost: dict[str, float],
    epochs: float,
) -> dict[str, float]:
    """Predicted informative fractions and, per currency, the baseline's cost per informative
    rollout divided by the plan's (above 1: the plan is cheaper), with the profile's cost
    (profile_cost per currency) charged once over `epochs` epochs."""
    ours = epoch_costs(queries, plan)
    base = epoch_costs(queries, Allocation([baseline_group_size] * len(queries)))
    result = {
        "informative_fraction": ours["informative"] / ours["rollouts"] if ours["rollouts"] else 0,
        "baseline_informative_fraction": base["informative"] / base["rollouts"],
        "epochs": epochs,
    }
    for currency in CURRENCIES:
        plan_total = epochs * ours[currency] + profile_cost[currency]
        per_informative = plan_total / (epochs * ours["informative"]) if ours["informative"] else 0
        base_per_informative = base[currency] / base["informative"] if base["informative"] else 0
        result[f"ratio_per_informative_{currency}"] = (
            base_per_informative / per_informative if per_informative else 0.0
        )
    return result


def profile_costs(queries: Sequence[QueryCost]) -> dict[str, float]:
    """The profile's cost per currency: k generated samples per query, no training."""
    generate = sum(q.k * q.generate_flops for q in queries)
    return {
        "tokens": sum(q.k * q.tokens for q in queries),
        "flops": generate,
        "flops_train_all": generate,
    }
