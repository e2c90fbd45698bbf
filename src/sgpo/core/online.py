"""Beyond the static plan: keep each query's success-rate estimate alive during training, and
spend a fixed rollout budget where it buys the most informative groups.

- A Beta posterior per query starts from the profile (prior + k profiling samples) and is
  updated with every training group's outcomes, older evidence decayed so it fades as the
  policy moves. Training rollouts are measurements we already paid for: no extra inference.
- `replan` turns the current estimates into a new filter, group sizes and curriculum order,
  without losing or duplicating a query.
- `allocate_budget` picks group sizes for a set of queries under a rollout budget to maximise
  the expected number of informative groups, or their expected learning value (Knapsack RL's
  InfoGain weight), by an exact dynamic programme, small and fast.
- `epoch_visits` skips, before generation, the queries whose recent groups all came back with
  one outcome (GRESO's pre-rollout filter), each still visited now and then.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.core.allocation import (
    DROPPED_TRIVIAL,
    DROPPED_UNSOLVABLE,
    KEPT,
    PlannedQuery,
    PlanRule,
    assemble_plan,
    check_unique_ids,
    rule_group_size,
)
from sgpo.core.rewards import all_equal, is_correct


@dataclass(frozen=True)
class Posterior:
    """Beta(alpha, beta) over one query's success rate."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def posterior_from_profile(
    n_correct: int, k: int, prior_alpha: float = 0.5, prior_beta: float = 0.5
) -> Posterior:
    if k <= 0 or not 0 <= n_correct <= k:
        raise ValueError(f"need 0 <= n_correct <= k and k > 0, got n_correct={n_correct}, k={k}")
    return Posterior(prior_alpha + n_correct, prior_beta + k - n_correct)


def update_posterior(
    post: Posterior,
    successes: int,
    failures: int,
    decay: float,
    prior_alpha: float = 0.5,
    prior_beta: float = 0.5,
) -> Posterior:
    """Decay the evidence gathered so far (not the prior) by `decay`, then add the new outcomes.

    decay = 1 keeps everything (a stationary estimate); decay < 1 forgets geometrically, so
    after n updates the profile's weight is decay**n.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    if successes < 0 or failures < 0:
        raise ValueError("successes and failures must be >= 0")
    return Posterior(
        prior_alpha + decay * (post.alpha - prior_alpha) + successes,
        prior_beta + decay * (post.beta - prior_beta) + failures,
    )


def informative_probability(p: float, g: int) -> float:
    """P(a group of g binary rewards is not all equal) = 1 - p^g - (1-p)^g (0 for g < 2)."""
    if g < 2:
        return 0.0
    return 1.0 - p**g - (1.0 - p) ** g


# What an informative group of a query is worth to the allocation: "informative" counts
# informative groups; "info_gain" weighs each by p(1-p)^2, Knapsack RL's approximation of the
# rise in the query's success rate one gradient step buys (Li et al. 2025, arXiv 2509.25849),
# which favours queries solved a third of the time over near-solved and near-hopeless ones.
ALLOCATION_VALUES = ("informative", "info_gain")


def group_value_weight(p: float, value: str) -> float:
    if value not in ALLOCATION_VALUES:
        raise ValueError(f"unknown allocation value {value!r}; choose one of {ALLOCATION_VALUES}")
    return 1.0 if value == "informative" else p * (1.0 - p) ** 2


def allocate_budget(
    success_rates: Sequence[float],
    budget: int,
    g_min: int,
    g_max: int,
    value: str = "informative",
) -> list[int]:
    """Group size per query (0 = skip it this time) maximising the expected value of the
    informative groups, sum(G) <= budget: P(informative) x group_value_weight(p, value).
    Exact: a multiple-choice knapsack solved by dynamic programming over the budget,
    O(queries * budget * (g_max - g_min + 1)). Among equally good allocations the one spending
    the fewest rollouts wins."""
    if budget < 0 or g_min < 2 or g_max < g_min:
        raise ValueError(
            f"need budget >= 0 and 2 <= g_min <= g_max, got {budget}, {g_min}, {g_max}"
        )
    choices = [0, *range(g_min, g_max + 1)]
    n = len(success_rates)
    # best[b] = best value using the queries seen so far with exactly b rollouts spent
    neg = -math.inf
    best = [0.0] + [neg] * budget
    picks: list[list[int]] = []
    for p in success_rates:
        weight = group_value_weight(p, value)
        gains = {g: informative_probability(p, g) * weight for g in choices}
        new = [neg] * (budget + 1)
        pick = [0] * (budget + 1)
        for spent in range(budget + 1):
            if best[spent] == neg:
                continue
            for g in choices:
                total = spent + g
                if total > budget:
                    break
                candidate = best[spent] + gains[g]
                if candidate > new[total] + 1e-12:
                    new[total], pick[total] = candidate, g
        best = new
        picks.append(pick)
    # smallest spend among the (near-)best values
    top = max(best)
    spent = min(b for b in range(budget + 1) if best[b] >= top - 1e-9)
    sizes = [0] * n
    for i in range(n - 1, -1, -1):
        g = picks[i][spent]
        sizes[i] = g
        spent -= g
    return sizes


@dataclass(frozen=True)
class ReplanRule:
    """How current estimates become a plan during training. A query counts as trivial while
    its (decayed) evidence holds fewer than `min_failures` failures or its estimate is above
    the plan's trivial_above, and as unsolvable while it holds fewer than `min_successes`
    successes. With the profile alone and no prior (prior_alpha = prior_beta = 0) that is
    exactly the static plan's filter; a prior pulls the estimate toward its mean, so with
    trivial_above < 1 a query the static plan dropped just above it can be kept again."""

    plan: PlanRule
    prior_alpha: float = 0.5
    prior_beta: float = 0.5
    min_successes: float = 0.5
    min_failures: float = 0.5


# GRESO's adaptive rule (its released code): the explore probability moves by this much each
# step towards a target share of all-equal groups, within these bounds, and a query is never
# visited less often than the floor.
EXPLORE_STEP = 0.01
EXPLORE_BOUNDS = (0.05, 0.95)
VISIT_FLOOR = 0.01


def visit_probability(
    zero_streak: int, explore: float, floor: float = 0.0, min_streak: int = 1
) -> float:
    """GRESO (Zheng et al. 2025): a query whose last zero_streak groups each had all rewards
    equal is generated at its next visit with probability explore ** zero_streak (at least
    floor). Zero-variance prompts tend to stay so from epoch to epoch; the chance left lets a
    query that training moved be found again. With min_streak m > 1 the first m - 1 all-equal
    groups in a row are forgiven (explore ** (zero_streak - m + 1) from the m-th on): a query
    near p = 1 that comes back all correct once in a while keeps its visits."""
    return max(explore ** max(zero_streak - min_streak + 1, 0), floor)


def epoch_visits(
    query_ids: Sequence[str],
    zero_streaks: dict[str, int],
    explore: float,
    seed: int,
    epoch: int,
    floor: float = 0.0,
    min_streak: int = 1,
) -> list[str]:
    """The queries of one epoch that are generated (in the given order): each drawn with
    visit_probability by its own seeded draw, so the decision does not depend on the other
    queries or on when it is asked. If every query would be skipped, none is."""
    visited = [
        q
        for q in query_ids
        if random.Random(f"{seed}/visit/{epoch}/{q}").random()
        < visit_probability(zero_streaks.get(q, 0), explore, floor, min_streak)
    ]
    return visited or list(query_ids)


def extends_streak(rewards: Sequence[float], rule: str, threshold: float) -> bool:
    """Whether a generated group extends its query's streak (train.history_streak): equal, its
    rewards all equal (GRESO); solved, all correct (from threshold up), so a query training has
    not solved is never skipped (an all-wrong group resets its streak as a mixed one does)."""
    if rule == "solved":
        return all(is_correct(r, threshold) for r in rewards)
    if rule == "equal":
        return all_equal(rewards)
    raise ValueError(f"unknown history streak rule {rule!r}; choose equal or solved")


def history_settings_without_skip(
    explore: float, target: float, min_streak: int, fill: bool
) -> list[str]:
    """The skip-on-history settings given while the skip itself is off (explore 1), where they
    would do nothing: history_target, history_min_streak, history_fill."""
    if explore < 1:
        return []
    given = {
        "history_target": bool(target),
        "history_min_streak": min_streak > 1,
        "history_fill": fill,
    }
    return [name for name, used in given.items() if used]


def observe_streaks(zero_streaks: dict[str, int], groups: Sequence[tuple[str, bool]]) -> float:
    """A step's generated groups as (query id, extends its streak: extends_streak's rule, all
    rewards equal by default, all solved with train.history_streak "solved"): each query's
    streak goes on when its group extends it and resets otherwise (zero_streaks, in place).
    Returns the share of the step's groups that extended one, what adapt_explore moves on (0
    for no groups)."""
    for query_id, extends in groups:
        zero_streaks[query_id] = zero_streaks.get(query_id, 0) + 1 if extends else 0
    return sum(extends for _, extends in groups) / max(len(groups), 1)


def adapt_explore(explore: float, zero_share: float, target: float) -> float:
    """GRESO's step on its explore probability after a step whose generated groups came back
    all equal in zero_share of cases: skip more (lower) when above target, less when below."""
    moved = explore - EXPLORE_STEP if zero_share >= target else explore + EXPLORE_STEP
    return round(min(max(moved, EXPLORE_BOUNDS[0]), EXPLORE_BOUNDS[1]), 6)  # no drift in logs


def replan(
    query_ids: Sequence[str],
    posteriors: dict[str, Posterior],
    varied: dict[str, bool],
    previous: dict[str, PlannedQuery],
    rule: ReplanRule,
    seed: int,
) -> list[PlannedQuery]:
    """New filter, G and curriculum from the current estimates; every query appears once.

    Unsolvable queries that were already kept stay kept (they are the sampled fraction and
    their estimate is being refreshed); queries that have become unsolvable are dropped;
    dropped queries whose evidence now holds both outcomes (e.g. after a re-profiling pass)
    come back. A query whose latest measurement's rewards varied (`varied`: a graded
    verifier's partial credit) is neither trivial nor unsolvable by its counts, as in the
    static plan.
    """
    check_unique_ids(query_ids)
    missing = [q for q in query_ids if q not in posteriors]
    if missing:
        raise ValueError(f"no estimate for {len(missing)} queries, e.g. {missing[:3]}")
    means = {q: posteriors[q].mean for q in query_ids}

    def reason_for(qid: str) -> str:
        successes = posteriors[qid].alpha - rule.prior_alpha
        failures = posteriors[qid].beta - rule.prior_beta
        vary = varied.get(qid, False)
        # As in the static plan: no failure left, or an estimate above trivial_above.
        no_failures = (failures < rule.min_failures and not vary) or (
            means[qid] > rule.plan.trivial_above
        )
        if no_failures and rule.plan.drop_trivial:
            return DROPPED_TRIVIAL
        if successes < rule.min_successes and not vary:
            was_kept = qid in previous and previous[qid].kept
            return KEPT if was_kept else DROPPED_UNSOLVABLE
        return KEPT

    def size_for(qid: str) -> int:
        return rule_group_size(means[qid], rule.plan)

    return assemble_plan(query_ids, means, reason_for, size_for, seed, rule.plan.bucket_width)
