"""Success rate -> group size, filtering and curriculum order (the sGPO plan rule)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KEPT = "kept"
# p_hat == 1 with rewards all equal (or p_hat above trivial_above): nothing left to learn
DROPPED_TRIVIAL = "trivial"
# p_hat == 0 with rewards all equal, and not in the seeded keep fraction
DROPPED_UNSOLVABLE = "unsolvable"


@dataclass(frozen=True)
class PlanRule:
    """How a profile becomes a plan. Defaults follow ../shared/SGPO.md."""

    c: float = 1.0
    g_min: int = 2
    g_max: int = 16
    unsolvable_keep_fraction: float = 0.1
    drop_trivial: bool = True
    # Beta(prior_alpha, prior_beta) smoothing of p_hat used for G only; 0,0 = raw p_hat.
    prior_alpha: float = 0.0
    prior_beta: float = 0.0
    # 0 = strict descending p_hat; >0 = shuffle within p_hat buckets of this width.
    bucket_width: float = 0.0
    # inverse_p: G = c / p (the paper's abstract). two_sided: G = c / min(p, 1 - p), which
    # sizes easy queries by their failure rate too; with c = 2.3 a group is informative ~90% of
    # the time. pow2_buckets: the full paper as fast-rl-bench reads it, G = 2 if p > 1/4,
    # 4 if 1/8 < p <= 1/4, else 8 (g_min/g_max still clip).
    g_rule: str = "inverse_p"
    # Queries with p_hat above this are trivial too (the paper read second-hand: 0.75); 1.0 =
    # only p_hat = 1 is trivial.
    trivial_above: float = 1.0
    # With drop_trivial, a seeded share of the trivial queries is kept anyway (as
    # unsolvable_keep_fraction does for the never-solved): fewer responses spent on groups
    # that mostly come back all correct, without dropping the sharpening they carry.
    trivial_keep_fraction: float = 0.0


@dataclass(frozen=True)
class ProfiledQuery:
    query_id: str
    n_correct: int
    k: int
    # Whether the samples' rewards were not all equal (profile.parquet's rewards_vary); None
    # (a profile written before the column) = what pass/fail rewards imply, 0 < n_correct < k.
    rewards_vary: bool | None = None

    @property
    def varied(self) -> bool:
        return rewards_varied(self.n_correct, self.k, self.rewards_vary)


def rewards_varied(n_correct: int, k: int, rewards_vary: bool | None) -> bool:
    """Whether a query's samples had a non-zero GRPO advantage: their rewards were not all
    equal. A graded verifier's partial credit can vary where no sample, or every sample,
    reaches the success threshold; pass/fail rewards vary exactly when both outcomes were
    drawn, which is what an unrecorded (None) flag is taken to mean."""
    return (0 < n_correct < k) if rewards_vary is None else rewards_vary


@dataclass(frozen=True)
class PlannedQuery:
    query_id: str
    # The success-rate estimate the plan ordered by: the profile's n_correct / k in the static
    # plan (plan.parquet's p_hat), the posterior mean when re-planning (sgpo.core.online).
    success_rate: float
    group_size: int
    kept: bool
    reason: str
    rank: int  # curriculum position among kept queries (0 = first); -1 when dropped


def success_rate(
    n_correct: int, k: int, prior_alpha: float = 0.0, prior_beta: float = 0.0
) -> float:
    """Posterior-mean success rate; with a zero prior it is the empirical n_correct / k."""
    if k <= 0 or not 0 <= n_correct <= k:
        raise ValueError(f"need 0 <= n_correct <= k and k > 0, got n_correct={n_correct}, k={k}")
    return (n_correct + prior_alpha) / (k + prior_alpha + prior_beta)


def group_size(p: float, c: float, g_min: int, g_max: int) -> int:
    """G = clip(ceil(c / p), g_min, g_max); p = 0 (no evidence of success) gets g_max."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"success rate must be in [0, 1], got {p}")
    if g_min < 1 or g_max < g_min:
        raise ValueError(f"need 1 <= g_min <= g_max, got g_min={g_min}, g_max={g_max}")
    # p = 0, or so small that c / p overflows (a posterior decayed for hundreds of updates)
    if p == 0.0 or not math.isfinite(c / p):
        return g_max
    # The small epsilon keeps c/p that is an integer up to float error (1/0.2 = 5.000000000000001)
    # from rounding up to the next integer.
    return int(min(g_max, max(g_min, math.ceil(c / p - 1e-9))))


G_RULES = ("inverse_p", "two_sided", "pow2_buckets")


def pow2_bucket_size(p: float) -> int:
    """The paper's power-of-two buckets (fast-rl-bench's reading): 2, 4 or 8 rollouts."""
    if p > 1 / 4:
        return 2
    return 4 if p > 1 / 8 else 8


def rule_group_size(p: float, rule: PlanRule) -> int:
    """G for success rate p under the rule's g_rule (p = 0 gets g_max, and under two_sided, which
    is symmetric in p and 1 - p, so does p = 1)."""
    if rule.g_rule not in G_RULES:
        raise ValueError(f"unknown g_rule {rule.g_rule!r}; choose one of {G_RULES}")
    if rule.g_rule == "two_sided":
        return group_size(min(p, 1.0 - p), rule.c, rule.g_min, rule.g_max)
    if rule.g_rule == "pow2_buckets" and p > 0.0:
        return min(rule.g_max, max(rule.g_min, pow2_bucket_size(p)))
    return group_size(p, rule.c, rule.g_min, rule.g_max)


def curriculum_order(
    query_ids: Sequence[str], p_hats: Sequence[float], seed: int, bucket_width: float = 0.0
) -> list[str]:
    """Easy -> hard: descending p_hat, ties (or whole buckets) in a seeded shuffle."""
    rng = random.Random(seed)
    tiebreak = {qid: rng.random() for qid in sorted(query_ids)}
    if bucket_width > 0:
        # Bucket index counted from the top so that bucket 0 holds the easiest queries; the
        # last bucket is closed (p = 0 is in it, so width 1 is one bucket), and the quotient is
        # rounded first so that p on a bucket's edge is not moved by float error (0.7 / 0.1).
        last = math.ceil(round(1.0 / bucket_width, 9)) - 1

        def key(item: tuple[str, float]) -> tuple[float, float]:
            index = math.floor(round((1.0 - item[1]) / bucket_width, 9))
            return (min(index, last), tiebreak[item[0]])
    else:

        def key(item: tuple[str, float]) -> tuple[float, float]:
            return (-item[1], tiebreak[item[0]])

    return [qid for qid, _ in sorted(zip(query_ids, p_hats, strict=True), key=key)]


def check_unique_ids(query_ids: Sequence[str]) -> None:
    if len(set(query_ids)) != len(query_ids):
        dupes = sorted(i for i, n in Counter(query_ids).items() if n > 1)
        raise ValueError(f"duplicate query ids: {dupes[:5]}")


def assemble_plan(
    query_ids: Sequence[str],
    rates: dict[str, float],
    reason_for: Callable[[str], str],
    size_for: Callable[[str], int],
    seed: int,
    bucket_width: float,
) -> list[PlannedQuery]:
    """The skeleton both the static plan and online re-planning follow: filter (reason_for),
    size (size_for), then order the kept queries easy -> hard by `rates`. Every query appears
    exactly once, in input order."""
    reasons = {qid: reason_for(qid) for qid in query_ids}
    kept_ids = [qid for qid in query_ids if reasons[qid] == KEPT]
    order = curriculum_order(kept_ids, [rates[q] for q in kept_ids], seed, bucket_width)
    rank = {qid: i for i, qid in enumerate(order)}
    return [
        PlannedQuery(
            query_id=qid,
            success_rate=rates[qid],
            group_size=size_for(qid),
            kept=reasons[qid] == KEPT,
            reason=reasons[qid],
            rank=rank.get(qid, -1),
        )
        for qid in query_ids
    ]


def is_trivial(p_hat: float, rule: PlanRule, varied: bool = False) -> bool:
    """Always solved in the profile with rewards all equal (a graded verifier's partial credit
    above the threshold may still vary, and teach), or above the rule's trivial_above."""
    return (p_hat == 1.0 and not varied) or p_hat > rule.trivial_above


def is_unsolvable(p_hat: float, varied: bool) -> bool:
    """Never solved in the profile, with rewards all equal (nothing for an advantage to
    follow; varied partial credit below the threshold still has)."""
    return p_hat == 0.0 and not varied


def planned_group_size(n_correct: int, k: int, rule: PlanRule) -> int:
    """A profiled query's G under the rule: from its prior-smoothed success rate, g_max when
    it was never solved."""
    if n_correct == 0:
        return rule.g_max
    return rule_group_size(success_rate(n_correct, k, rule.prior_alpha, rule.prior_beta), rule)


def plan_queries(profile: Sequence[ProfiledQuery], rule: PlanRule, seed: int) -> list[PlannedQuery]:
    """Filter, size and order profiled queries. Every input query appears exactly once."""
    ids = [q.query_id for q in profile]
    check_unique_ids(ids)
    raw = {q.query_id: success_rate(q.n_correct, q.k) for q in profile}
    sizes = {q.query_id: planned_group_size(q.n_correct, q.k, rule) for q in profile}

    varied = {q.query_id: q.varied for q in profile}
    unsolvable = sorted(qid for qid, p in raw.items() if is_unsolvable(p, varied[qid]))
    trivial = sorted(qid for qid, p in raw.items() if is_trivial(p, rule, varied[qid]))
    rng = random.Random(seed)
    kept_unsolvable = set(
        rng.sample(unsolvable, round(rule.unsolvable_keep_fraction * len(unsolvable)))
    )
    kept_trivial = set(rng.sample(trivial, round(rule.trivial_keep_fraction * len(trivial))))
    dropped_trivial = set(trivial) - kept_trivial if rule.drop_trivial else set()

    def reason_for(qid: str) -> str:
        if qid in dropped_trivial:
            return DROPPED_TRIVIAL
        if is_unsolvable(raw[qid], varied[qid]) and qid not in kept_unsolvable:
            return DROPPED_UNSOLVABLE
        return KEPT

    return assemble_plan(ids, raw, reason_for, sizes.__getitem__, seed, rule.bucket_width)


def first_visit_reason(
    query_id: str, n_correct: int, k: int, varied: bool, rule: PlanRule, seed: int
) -> str:
    """The plan's filter for one query whose profile is its first training group
    (train.first_visit_profile; varied: the group's rewards were not all equal):
    plan_queries' thresholds, each keep fraction drawn for the query alone by its own seeded
    draw, since the rest of the profile is not known yet (the fraction is kept in
    expectation, not exactly)."""
    p = success_rate(n_correct, k)
    draw = random.Random(f"{seed}/first-visit/{query_id}").random()
    if rule.drop_trivial and is_trivial(p, rule, varied) and draw >= rule.trivial_keep_fraction:
        return DROPPED_TRIVIAL
    if is_unsolvable(p, varied) and draw >= rule.unsolvable_keep_fraction:
        return DROPPED_UNSOLVABLE
    return KEPT
