"""Online re-estimation, budget allocation and re-planning (pure core)."""

import itertools
import random

import pytest

from sgpo.config import OnlineConfig
from sgpo.core.allocation import PlanRule, ProfiledQuery, plan_queries
from sgpo.core.online import (
    ALLOCATION_VALUES,
    Posterior,
    ReplanRule,
    allocate_budget,
    group_value_weight,
    informative_probability,
    posterior_from_profile,
    replan,
    update_posterior,
)


def test_posterior_from_profile_and_update_by_hand():
    post = posterior_from_profile(3, 8, 0.5, 0.5)
    assert (post.alpha, post.beta) == (3.5, 5.5)
    # no decay: plain Bayesian counting
    assert update_posterior(post, 2, 2, decay=1.0) == Posterior(5.5, 7.5)
    # decay 0.5 halves the evidence (not the prior) before adding the new outcomes
    assert update_posterior(post, 4, 0, decay=0.5) == Posterior(0.5 + 1.5 + 4, 0.5 + 2.5 + 0)
    with pytest.raises(ValueError):
        update_posterior(post, 1, 1, decay=0.0)


def test_decay_lets_the_estimate_follow_a_moving_policy():
    post = posterior_from_profile(0, 8)  # looked unsolvable at profiling time
    for _ in range(10):  # the policy now solves it every time
        post = update_posterior(post, 8, 0, decay=0.5)
    assert post.mean > 0.95
    still = posterior_from_profile(0, 8)
    for _ in range(10):
        still = update_posterior(still, 8, 0, decay=1.0)
    assert still.mean < post.mean  # without decay the stale profile still drags it down


def test_informative_probability():
    assert informative_probability(0.5, 2) == pytest.approx(0.5)
    assert informative_probability(0.1, 1) == 0.0
    assert informative_probability(1.0, 8) == 0.0
    assert informative_probability(0.0, 8) == 0.0
    assert informative_probability(0.25, 4) == pytest.approx(1 - 0.25**4 - 0.75**4)


def expected_value(ps, sizes, value="informative"):
    return sum(
        informative_probability(p, g) * group_value_weight(p, value)
        for p, g in zip(ps, sizes, strict=True)
    )


def brute_force(ps, budget, g_min, g_max, value="informative"):
    choices = [0, *range(g_min, g_max + 1)]
    best = max(
        (expected_value(ps, sizes, value), -sum(sizes))
        for sizes in itertools.product(choices, repeat=len(ps))
        if sum(sizes) <= budget
    )
    return best[0]


@pytest.mark.parametrize("value", ALLOCATION_VALUES)
@pytest.mark.parametrize("case", range(30))
def test_allocation_is_optimal_against_brute_force(case, value):
    rng = random.Random(case)
    ps = [
        rng.choice([0.0, 1.0, rng.random(), rng.random(), 0.05, 0.95])
        for _ in range(rng.randint(1, 4))
    ]
    budget = rng.randint(0, 20)
    g_min, g_max = rng.choice([(2, 6), (2, 8), (3, 5)])
    sizes = allocate_budget(ps, budget, g_min, g_max, value)
    assert sum(sizes) <= budget
    assert all(g == 0 or g_min <= g <= g_max for g in sizes)
    assert expected_value(ps, sizes, value) == pytest.approx(
        brute_force(ps, budget, g_min, g_max, value)
    )


def test_info_gain_weight_peaks_at_a_third_and_moves_the_budget_there():
    assert group_value_weight(0.9, "informative") == 1.0
    assert group_value_weight(1 / 3, "info_gain") == pytest.approx(4 / 27)
    assert group_value_weight(0.9, "info_gain") == pytest.approx(0.009)
    assert group_value_weight(0.0, "info_gain") == group_value_weight(1.0, "info_gain") == 0.0
    with pytest.raises(ValueError, match="allocation value"):
        group_value_weight(0.5, "gradient")
    # A near-solved query and one solved a third of the time, 8 rollouts to share: counting
    # informative groups trains both; weighing them by what a step teaches (0.009 against
    # 0.148), the whole budget goes to the second.
    counted = allocate_budget([0.9, 1 / 3], budget=8, g_min=2, g_max=8)
    weighed = allocate_budget([0.9, 1 / 3], budget=8, g_min=2, g_max=8, value="info_gain")
    assert counted == [3, 5]
    assert weighed == [0, 8]


def test_allocation_skips_hopeless_and_trivial_queries():
    sizes = allocate_budget([1.0, 0.0, 0.5, 0.3], budget=12, g_min=2, g_max=8)
    assert sizes[0] == 0 and sizes[1] == 0  # no informative group is possible
    assert sizes[2] >= 2 and sizes[3] >= 2


def test_replan_never_loses_or_duplicates_and_moves_queries():
    profile = [ProfiledQuery(f"q{i}", i % 9, 8) for i in range(90)]
    rule = PlanRule(unsolvable_keep_fraction=0.3)
    first = {p.query_id: p for p in plan_queries(profile, rule, seed=1)}
    posts = {q.query_id: posterior_from_profile(q.n_correct, q.k) for q in profile}
    # q0 (unsolvable, dropped or kept) is now solved half the time; q4 has become trivial
    posts["q0"] = Posterior(10.5, 10.5)
    posts["q4"] = Posterior(40.5, 0.5)
    varied = {q.query_id: q.varied for q in profile} | {"q0": True, "q4": False}  # the latest
    new = replan([q.query_id for q in profile], posts, varied, first, ReplanRule(rule), seed=1)
    assert sorted(p.query_id for p in new) == sorted(first)
    by_id = {p.query_id: p for p in new}
    assert by_id["q0"].kept and by_id["q0"].group_size == 2
    assert not by_id["q4"].kept and by_id["q4"].reason == "trivial"
    kept = sorted((p for p in new if p.kept), key=lambda p: p.rank)
    assert [p.rank for p in kept] == list(range(len(kept)))
    assert all(a.success_rate >= b.success_rate for a, b in zip(kept, kept[1:], strict=False))
    # previously kept unsolvable queries stay kept; others stay dropped
    for qid, old in first.items():
        if old.success_rate == 0 and qid != "q0":
            assert by_id[qid].kept == old.kept
    with pytest.raises(ValueError, match="duplicate"):
        replan(["q1", "q1"], posts, varied, first, ReplanRule(rule), seed=1)


def test_replan_keeps_a_query_while_its_latest_rewards_vary():
    """A graded verifier: no success (or no failure) counted, but the latest group's partial
    credit varied, so it still teaches; once a group comes back all equal the counts decide."""
    rule = ReplanRule(PlanRule(unsolvable_keep_fraction=0.0))
    posts = {"never": Posterior(0.5, 8.5), "always": Posterior(8.5, 0.5)}
    previous: dict = {}
    varying = replan(["never", "always"], posts, {"never": True, "always": True}, previous, rule, 0)
    assert all(p.kept for p in varying)
    flat = replan(["never", "always"], posts, {"never": False, "always": False}, previous, rule, 0)
    assert [p.reason for p in flat] == ["unsolvable", "trivial"]


@pytest.mark.parametrize(
    "rule",
    [
        PlanRule(unsolvable_keep_fraction=0.5),
        # the paper preset's filter: p_hat above 0.75 is trivial too
        PlanRule(unsolvable_keep_fraction=0.5, trivial_above=0.75, g_rule="pow2_buckets"),
    ],
)
@pytest.mark.parametrize("graded", [False, True])
def test_replan_from_the_profile_alone_reproduces_the_static_plan(
    rule: PlanRule, graded: bool
) -> None:
    # graded: half the queries' rewards varied, some of them never or always solved (n = 0, 8)
    profile = [
        ProfiledQuery(f"q{i}", (i * 7) % 9, 8, rewards_vary=True if graded and i % 2 == 0 else None)
        for i in range(60)
    ]
    static = plan_queries(profile, rule, seed=3)
    posts = {q.query_id: posterior_from_profile(q.n_correct, q.k, 0.0, 0.0) for q in profile}
    again = replan(
        [q.query_id for q in profile],
        posts,
        {q.query_id: q.varied for q in profile},
        {p.query_id: p for p in static},
        ReplanRule(rule, prior_alpha=0.0, prior_beta=0.0),
        seed=3,
    )
    assert again == static


def test_online_allocation_old_name_still_loads():
    """train.online.allocation 'inverse_p' was renamed 'plan' (plan.g_rule has its own
    inverse_p); a config written with the old name still means the plan's group sizes."""
    assert OnlineConfig(allocation="inverse_p").allocation == "plan"
    assert OnlineConfig().allocation == "plan"
    with pytest.raises(ValueError, match="'plan' or 'knapsack'"):
        OnlineConfig(allocation="two_sided")
