"""The pure algorithmic core, checked against hand computations."""

import math

import numpy as np
import pytest
import torch

from sgpo.config import TaskConfig
from sgpo.core.advantages import (
    LOSS_AGGREGATIONS,
    aggregate_loss,
    group_advantages,
    informative_groups,
)
from sgpo.core.allocation import (
    DROPPED_TRIVIAL,
    DROPPED_UNSOLVABLE,
    KEPT,
    PlanRule,
    ProfiledQuery,
    curriculum_order,
    first_visit_reason,
    group_size,
    plan_queries,
    success_rate,
)
from sgpo.core.flops import (
    ModelShape,
    inference_flops,
    sequence_forward_flops,
    shared_prefill_flops,
    train_flops,
)
from sgpo.core.online import (
    adapt_explore,
    epoch_visits,
    extends_streak,
    observe_streaks,
    visit_probability,
)
from sgpo.core.rewards import CORRECT_THRESHOLD, all_equal, is_correct, rescale


def test_advantages_for_mixed_group_sizes_match_hand_computation():
    # groups of size 1, 2, 5 and 8 interleaved in one batch
    rewards = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0] + [0.0] * 6 + [1.0, 1.0]
    groups = [10, 20, 20, 50, 50, 50, 50, 50] + [80] * 8
    adv = group_advantages(rewards, groups)
    assert adv[0] == 0.0  # size 1: no baseline, no signal
    assert adv[1:3] == pytest.approx([0.5, -0.5])  # mean 0.5
    assert adv[3:8] == pytest.approx([0.4, -0.6, -0.6, 0.4, 0.4])  # mean 0.6
    assert adv[8:] == pytest.approx([-0.25] * 6 + [0.75] * 2)  # mean 0.25
    assert informative_groups(adv, groups) == {20, 50, 80}


def test_advantages_with_std_normalisation_and_constant_groups():
    adv = group_advantages([1.0, 0.0, 1.0, 1.0, 1.0], [0, 0, 1, 1, 1], normalize_std=True)
    # group 0: mean .5, std .5 -> +-1 (up to eps); group 1 all equal -> 0
    assert adv[:2] == pytest.approx([1.0, -1.0], rel=1e-4)
    assert adv[2:] == [0.0, 0.0, 0.0]


def test_a_graded_reward_at_its_group_mean_has_exactly_zero_advantage():
    # float sums leave 0.2 - mean(0.1, 0.2, 0.3) at ~-3e-17 and 0.4 - mean(0.7, 0.1, 0.4) at ~6e-17
    adv = group_advantages([0.1, 0.2, 0.3, 0.7, 0.1, 0.4], [0, 0, 0, 1, 1, 1])
    assert adv[1] == 0.0 and adv[5] == 0.0
    assert adv[0] == pytest.approx(-0.1) and adv[3] == pytest.approx(0.3)
    assert informative_groups(adv, [0, 0, 0, 1, 1, 1]) == {0, 1}
    assert group_advantages([0.1, 0.2, 0.3], [0, 0, 0], normalize_std=True)[1] == 0.0


def test_advantages_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="group ids"):
        group_advantages([1.0], [0, 1])


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.0, 16),
        (1.0, 2),
        (0.5, 2),
        (0.25, 4),
        (0.2, 5),
        (0.3, 4),
        (1e-6, 16),
        (0.0625, 16),
        (0.05, 16),
    ],
)
def test_group_size_rule(p, expected):
    assert group_size(p, c=1.0, g_min=2, g_max=16) == expected


def test_group_size_clips_and_validates():
    assert group_size(0.9, c=1.0, g_min=3, g_max=8) == 3  # lower clip
    assert group_size(0.01, c=1.0, g_min=3, g_max=8) == 8  # upper clip
    assert group_size(0.5, c=3.0, g_min=1, g_max=32) == 6  # c scales the rule
    # so small that c / p overflows (a posterior decayed for hundreds of updates): the cap
    assert group_size(1e-310, c=2.0, g_min=2, g_max=16) == 16
    # 1 / (1/49) is 49.00000000000001 in floats: still 49, not 50
    assert group_size(1 / 49, c=1.0, g_min=1, g_max=64) == 49
    with pytest.raises(ValueError):
        group_size(1.5, 1.0, 2, 16)
    with pytest.raises(ValueError):
        group_size(0.5, 1.0, 8, 4)


def test_success_rate_with_prior():
    assert success_rate(3, 8) == 3 / 8
    assert success_rate(0, 8, 1.0, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        success_rate(9, 8)


def test_curriculum_order_descending_and_seeded_ties():
    ids = [f"q{i}" for i in range(20)]
    p = [0.5 if i % 2 else 0.25 for i in range(20)]
    order = curriculum_order(ids, p, seed=3)
    assert order == curriculum_order(list(reversed(ids)), list(reversed(p)), seed=3)  # stable
    ranks = {q: i for i, q in enumerate(order)}
    assert all(ranks[f"q{i}"] < 10 for i in range(1, 20, 2))  # p=0.5 all before p=0.25
    assert order != curriculum_order(ids, p, seed=4)  # ties shuffled by the seed


def test_bucketed_curriculum_keeps_buckets_in_order():
    ids = ["a", "b", "c", "d"]
    order = curriculum_order(ids, [0.9, 0.8, 0.3, 0.35], seed=0, bucket_width=0.5)
    assert set(order[:2]) == {"a", "b"} and set(order[2:]) == {"c", "d"}


def test_one_bucket_holds_every_query_and_edges_do_not_move_with_float_error():
    ids = [f"q{i}" for i in range(40)]
    p = [0.0 if i < 10 else (i % 8) / 8 + 0.01 for i in range(40)]
    # width 1 is one shuffled bucket: never-solved queries are not always last
    positions = [
        max(curriculum_order(ids, p, seed, bucket_width=1.0).index(f"q{i}") for i in range(10))
        for seed in range(5)
    ]
    assert min(positions) < 39
    # p = 0 joins the last bucket of a finer width, not one of its own
    firsts = {curriculum_order(["z", "low"], [0.0, 0.05], s, bucket_width=0.1)[0] for s in range(8)}
    assert firsts == {"z", "low"}
    # 0.7 / 0.1 is 6.999... in floats: p = 0.3 still sits in (1 - p) bucket 7 with p = 0.25
    together = [
        curriculum_order(["a", "b", "c"], [0.3, 0.25, 0.35], s, bucket_width=0.1) for s in range(8)
    ]
    assert all(order[0] == "c" for order in together)
    assert {order[1] for order in together} == {"a", "b"}


def test_plan_never_loses_or_duplicates_queries():
    profile = [ProfiledQuery(f"q{i}", n_correct=i % 9, k=8) for i in range(200)]
    rule = PlanRule(unsolvable_keep_fraction=0.25)
    plan = plan_queries(profile, rule, seed=7)
    assert sorted(p.query_id for p in plan) == sorted(q.query_id for q in profile)
    kept = [p for p in plan if p.kept]
    assert sorted(p.rank for p in kept) == list(range(len(kept)))
    assert all(p.rank == -1 for p in plan if not p.kept)
    reasons = {p.query_id: p.reason for p in plan}
    n_unsolvable = sum(q.n_correct == 0 for q in profile)
    assert sum(r == DROPPED_TRIVIAL for r in reasons.values()) == sum(
        q.n_correct == 8 for q in profile
    )
    kept_unsolvable = sum(p.kept and p.success_rate == 0 for p in plan)
    assert kept_unsolvable == round(0.25 * n_unsolvable)
    assert sum(r == DROPPED_UNSOLVABLE for r in reasons.values()) == n_unsolvable - kept_unsolvable
    assert all(p.group_size == 16 for p in plan if p.success_rate == 0)
    # easy -> hard along the ranks
    by_rank = sorted(kept, key=lambda p: p.rank)
    assert all(a.success_rate >= b.success_rate for a, b in zip(by_rank, by_rank[1:], strict=False))
    assert {p.reason for p in plan} == {KEPT, DROPPED_TRIVIAL, DROPPED_UNSOLVABLE}


def test_plan_keeps_a_seeded_share_of_trivial_queries():
    profile = [ProfiledQuery(f"q{i}", n_correct=i % 9, k=8) for i in range(180)]
    n_trivial = sum(q.n_correct == 8 for q in profile)
    base = {p.query_id: p for p in plan_queries(profile, PlanRule(), seed=5)}
    plan = {p.query_id: p for p in plan_queries(profile, PlanRule(trivial_keep_fraction=0.5), 5)}
    kept_trivial = [p for p in plan.values() if p.kept and p.success_rate == 1.0]
    assert len(kept_trivial) == round(0.5 * n_trivial)
    assert sum(p.reason == DROPPED_TRIVIAL for p in plan.values()) == n_trivial - len(kept_trivial)
    # the never-solved sample and every non-trivial query are as without the share
    for qid, p in base.items():
        if p.success_rate < 1.0:
            assert plan[qid].kept == p.kept and plan[qid].group_size == p.group_size
    # another seed samples other queries; drop_trivial false keeps them all
    other = plan_queries(profile, PlanRule(trivial_keep_fraction=0.5), seed=6)
    assert {p.query_id for p in other if p.kept and p.success_rate == 1.0} != {
        p.query_id for p in kept_trivial
    }
    keep_all = plan_queries(profile, PlanRule(drop_trivial=False, trivial_keep_fraction=0.5), 5)
    assert sum(p.kept and p.success_rate == 1.0 for p in keep_all) == n_trivial


def test_plan_keeps_never_or_always_solved_queries_whose_rewards_varied():
    """A graded verifier's partial credit can vary where no sample (or every sample) reaches
    the success threshold: such a group has a non-zero advantage, so the plan keeps it.
    Pass/fail rewards (rewards_vary unset) plan as before."""
    rule = PlanRule(unsolvable_keep_fraction=0.0)
    profile = [
        ProfiledQuery("never-flat", 0, 8, rewards_vary=False),
        ProfiledQuery("never-graded", 0, 8, rewards_vary=True),
        ProfiledQuery("always-flat", 8, 8, rewards_vary=False),
        ProfiledQuery("always-graded", 8, 8, rewards_vary=True),
        ProfiledQuery("never-binary", 0, 8),
        ProfiledQuery("always-binary", 8, 8),
        ProfiledQuery("mixed", 4, 8),
    ]
    plan = {p.query_id: p for p in plan_queries(profile, rule, seed=0)}
    assert plan["never-flat"].reason == plan["never-binary"].reason == DROPPED_UNSOLVABLE
    assert plan["always-flat"].reason == plan["always-binary"].reason == DROPPED_TRIVIAL
    assert plan["never-graded"].kept and plan["never-graded"].group_size == rule.g_max
    assert plan["always-graded"].kept and plan["always-graded"].group_size == rule.g_min
    # easy -> hard still: always solved first, never solved last
    kept = sorted((p for p in plan.values() if p.kept), key=lambda p: p.rank)
    assert [p.query_id for p in kept] == ["always-graded", "mixed", "never-graded"]
    # trivial_above is a rule on p_hat alone: it drops near-solved queries whatever varied
    paper = {p.query_id: p for p in plan_queries(profile, PlanRule(trivial_above=0.75), 0)}
    assert paper["always-graded"].reason == DROPPED_TRIVIAL
    assert ProfiledQuery("m", 3, 8).varied and not ProfiledQuery("m", 0, 8).varied


def test_rewards_equal_up_to_the_advantages_tolerance_are_all_equal():
    """What counts as varied is what gets an advantage: float rounding alone does not."""
    for rewards in ([0.3, 0.1 + 0.2, 0.3], [0.2, 0.2000001, 0.2, 0.2], [1.0], []):
        assert all_equal(rewards)
        assert group_advantages(rewards, [0] * len(rewards)) == [0.0] * len(rewards)
    for rewards in ([0.0, 1e-5], [0.1, 0.2, 0.1]):
        assert not all_equal(rewards)
        assert any(group_advantages(rewards, [0] * len(rewards)))


def test_plan_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="duplicate"):
        plan_queries([ProfiledQuery("a", 1, 8), ProfiledQuery("a", 2, 8)], PlanRule(), seed=0)


def test_flops_against_hand_count():
    shape = ModelShape(n_params=1000, n_layers=2, d_attn=8)
    # 3 tokens: 2*N*3 = 6000; attention 4*2*8*(1+2+3) = 384
    assert sequence_forward_flops(shape, 3) == 6384
    assert inference_flops(shape, 2, 1) == 6384
    assert train_flops(shape, 2, 1) == 3 * 6384
    assert sequence_forward_flops(shape, 0) == 0


def test_a_prefix_cache_prefills_a_groups_prompt_once():
    shape = ModelShape(n_params=1000, n_layers=2, d_attn=8)
    # 4 responses of 1 token after a 2-token prompt: 4 * inference_flops(2, 1) charged; with
    # the prompt prefilled once, 3 prefills of 2 tokens (2*N*2 + 4*2*8*(1+2) = 4192) are not spent
    assert shared_prefill_flops(shape, 2, 4) == 3 * 4192
    cached = 4 * inference_flops(shape, 2, 1) - shared_prefill_flops(shape, 2, 4)
    assert cached == sequence_forward_flops(shape, 2) + 4 * (6384 - 4192)
    assert shared_prefill_flops(shape, 2, 1) == 0
    assert shared_prefill_flops(shape, 2, 0) == 0


def test_loss_aggregation_over_micro_batches_equals_full_batch():
    torch.manual_seed(0)
    token_loss = torch.randn(6, 4)
    mask = torch.tensor(
        [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]]
    ).float()
    token_loss = token_loss * mask
    tokens = int(mask.sum())
    for mode in ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]:
        full = aggregate_loss(token_loss, mask, mode, tokens, 6, 4)
        parts = sum(
            aggregate_loss(token_loss[i : i + 2], mask[i : i + 2], mode, tokens, 6, 4)
            for i in (0, 2, 4)
        )
        assert math.isclose(float(full), float(parts), rel_tol=1e-6)
    assert float(aggregate_loss(token_loss, mask, "token-mean", tokens, 6, 4)) == pytest.approx(
        float(token_loss.sum() / tokens)
    )
    with pytest.raises(ValueError):
        aggregate_loss(token_loss, mask, "nope", tokens, 6, 4)


def test_loss_aggregation_values_by_hand():
    # two responses of 2 and 1 tokens, padded to 3; step totals 3 tokens, 2 responses
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    token_loss = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    by_mode = {
        "token-mean": 6 / 3,
        "seq-mean-token-mean": (3 / 2 + 3 / 1) / 2,  # each response's own token mean
        "seq-mean-token-sum-norm": 6 / (2 * 4),  # Dr. GRPO: / (responses x norm_length)
    }
    for mode, expected in by_mode.items():
        assert float(aggregate_loss(token_loss, mask, mode, 3, 2, 4)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0.5, 5), (0.875, 16), (0.125, 16), (0.25, 10), (0.75, 10), (0.0, 16), (1.0, 16)],
)
def test_two_sided_group_size_rule(p, expected):
    from sgpo.core.allocation import rule_group_size

    rule = PlanRule(c=2.3, g_min=2, g_max=16, g_rule="two_sided")
    assert rule_group_size(p, rule) == expected
    # the paper's rule at c = 1 for comparison: easy queries get tiny groups
    assert rule_group_size(0.875, PlanRule()) == 2


def test_two_sided_rule_makes_groups_informative_for_every_profiled_rate():
    from sgpo.core.allocation import rule_group_size
    from sgpo.core.online import informative_probability

    two_sided = PlanRule(c=2.3, g_min=2, g_max=16, g_rule="two_sided")
    for n in range(1, 8):  # every p_hat a k = 8 profile can keep (0 < p < 1)
        p = n / 8
        assert informative_probability(p, rule_group_size(p, two_sided)) >= 0.87
    # while 1/p leaves easy queries mostly uninformative
    assert informative_probability(7 / 8, rule_group_size(7 / 8, PlanRule())) < 0.25


def test_unknown_group_size_rule_is_refused():
    from sgpo.core.allocation import rule_group_size

    with pytest.raises(ValueError, match="unknown g_rule"):
        rule_group_size(0.5, PlanRule(g_rule="nope"))


def test_config_names_every_loss_aggregation():
    # config.py spells the names out so that reading a config does not import torch.
    from typing import get_args

    from sgpo.config import LossAggregation

    assert get_args(LossAggregation) == LOSS_AGGREGATIONS


def test_paper_preset_sets_the_rule_and_names_what_it_replaced():
    import warnings

    from sgpo.config import PAPER_PRESET, load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(None, ["plan.preset=paper", "plan.g_max=16"])
    assert {k: getattr(config.plan, k) for k in PAPER_PRESET} == PAPER_PRESET
    assert [str(w.message) for w in caught] == ["plan.preset 'paper' replaces plan.g_max: 16 -> 8"]


def test_pow2_bucket_sizes_and_trivial_threshold():
    from sgpo.core.allocation import PlanRule, ProfiledQuery, plan_queries

    rule = PlanRule(g_max=8, trivial_above=0.75, g_rule="pow2_buckets", unsolvable_keep_fraction=1)
    planned = {
        p.query_id: p
        for p in plan_queries([ProfiledQuery(f"q{n}", n, 8) for n in range(9)], rule, seed=0)
    }
    assert {q: p.reason for q, p in planned.items() if not p.kept} == {
        "q7": "trivial",
        "q8": "trivial",
    }  # 7/8 > 0.75
    sizes = {q: p.group_size for q, p in planned.items() if p.kept}
    # p = 0 -> g_max; 1/8 -> 8 (not > 1/8); 2/8 -> 4 (not > 1/4); 3/8..6/8 -> 2
    assert sizes == {"q0": 8, "q1": 8, "q2": 4, "q3": 2, "q4": 2, "q5": 2, "q6": 2}


def test_growth_round_grows_only_all_equal_groups_under_the_cap():
    from sgpo.core.advantages import growth_round

    sizes = {"mixed": 4, "single": 4, "near_cap": 7, "full": 8, "planned_above": 10}
    single = {"single", "near_cap", "full", "planned_above"}
    assert growth_round(sizes, single, grow_round=2, grow_max=8) == {"single": 2, "near_cap": 1}
    assert growth_round({"a": 8}, {"a"}, grow_round=2, grow_max=8) == {}


def test_max_variance_down_sampling_keeps_the_rare_outcome_and_the_extremes():
    from sgpo.core.advantages import max_variance_indices

    # 0/1 rewards: every response of the rarer outcome, up to half of the subset
    one_failure = [1.0] * 7 + [0.0] + [1.0] * 8
    chosen = max_variance_indices(one_failure, 4)
    assert len(chosen) == 4 and 7 in chosen and chosen == sorted(chosen)
    three_right = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    half = [three_right[i] for i in max_variance_indices(three_right, 4)]
    assert sorted(half) == [0.0, 0.0, 1.0, 1.0]
    # graded rewards: the most varied split of highest and lowest, not the middle
    graded = [0.5, 1.0, 0.0, 0.2, 0.6]
    assert max_variance_indices(graded, 2) == [1, 2]
    assert max_variance_indices(graded, 3) == [1, 2, 3]  # {1, 0, 0.2} varies more than {1, 0, 0.6}
    # a group no larger than the subset is trained whole; all-equal rewards: draw order
    assert max_variance_indices([1.0, 0.0], 4) == [0, 1]
    assert max_variance_indices([1.0] * 6, 3) == [0, 1, 2]
    # splits tied but for float rounding (0.24489795918367344 and ...46): the fewest highest
    tied = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    chosen = max_variance_indices(tied, 7)
    assert sorted(tied[i] for i in chosen) == [0.0] * 4 + [1.0] * 3


def test_rewards_equal_but_for_float_rounding_are_one_outcome():
    from sgpo.core.advantages import balanced_indices, majority_share, stratum_weights

    third = 0.1 * 3  # 0.30000000000000004
    assert majority_share([0.3, third, 0.3, 0.3]) == 1.0
    # within all_equal's 1e-6, a float32 copy too: one outcome
    assert majority_share([0.5, 0.5000001, float(np.float32(0.3)), 0.3]) == 0.5
    # three of one outcome, two of the other: the rarer first, so both outcomes trained
    assert sorted(balanced_indices([0.3, third, 0.3, 0.0, 0.0], 2)) == [0, 3]
    group = [0.3, 0.3, third, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert stratum_weights(group, [0, 3]) == [3.0, 5.0]  # stand for the whole group


def test_balanced_subset_takes_the_rarer_outcome_first():
    from sgpo.core.advantages import balanced_indices

    # three successes among eight: of three trained, two are successes
    chosen = balanced_indices([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 3)
    assert chosen == [0, 1, 3]


def test_majority_share_is_the_most_common_outcomes_share():
    from sgpo.core.advantages import majority_share

    assert majority_share([1.0] * 14 + [0.0] * 2) == 0.875
    assert majority_share([0.0, 1.0]) == 0.5
    assert majority_share([1.0] * 3) == 1.0


def test_stratum_weights_make_a_subset_stand_for_its_whole_group():
    from sgpo.core.advantages import stratum_weights

    one_failure = [1.0] * 15 + [0.0]
    # the failure stands for itself, each of three successes for five of the fifteen
    assert stratum_weights(one_failure, [0, 1, 2, 15]) == [5.0, 5.0, 5.0, 1.0]
    # the weighted subset's reward sum and size are the whole group's
    rewards = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    chosen = [0, 1, 2, 4]
    weights = stratum_weights(rewards, chosen)
    assert sum(weights) == len(rewards)
    assert sum(w * rewards[i] for w, i in zip(weights, chosen, strict=True)) == sum(rewards)
    # graded: a value not chosen is not represented, the chosen ones stand for their own count
    assert stratum_weights([0.5, 1.0, 0.0, 1.0], [1, 2]) == [2.0, 1.0]


def test_visit_probability_halves_with_each_all_equal_group():
    assert [visit_probability(z, 0.5) for z in (0, 1, 3)] == [1.0, 0.5, 0.125]


def test_a_minimum_streak_forgives_the_first_all_equal_groups():
    halves = [visit_probability(z, 0.5, min_streak=3) for z in (0, 1, 2, 3, 5)]
    assert halves == [1.0, 1.0, 1.0, 0.5, 0.125]
    assert visit_probability(9, 0.5, floor=0.01, min_streak=3) == 0.01
    ids = [f"q{i}" for i in range(2000)]
    streaks = {q: 1 for q in ids[:1000]} | {q: 3 for q in ids[1000:1500]}
    visited = set(epoch_visits(ids, streaks, 0.5, seed=0, epoch=1))
    assert set(ids[1500:]) <= visited  # no streak: always generated
    assert 440 <= len(visited & set(ids[:1000])) <= 560  # ~1000 x 0.5
    assert 40 <= len(visited & set(ids[1000:1500])) <= 90  # ~500 x 0.125
    # each query's own draw: the same whatever the other queries or the order asked in
    subset = epoch_visits(list(reversed(ids[:100])), streaks, 0.5, seed=0, epoch=1)
    assert set(subset) == visited & set(ids[:100])
    assert epoch_visits(ids, streaks, 0.5, seed=0, epoch=2) != epoch_visits(
        ids, streaks, 0.5, seed=0, epoch=1
    )


def test_an_epoch_that_would_skip_every_query_skips_none():
    ids = ["a", "b", "c"]
    assert epoch_visits(ids, dict.fromkeys(ids, 60), 0.5, seed=0, epoch=3) == ids


def test_the_visit_floor_keeps_long_streaks_in_sight():
    assert visit_probability(60, 0.5) < 1e-17 and visit_probability(60, 0.5, floor=0.01) == 0.01
    ids = [f"q{i}" for i in range(3000)]
    visited = epoch_visits(ids, dict.fromkeys(ids[:2000], 60), 0.5, 0, 1, floor=0.01)
    assert set(ids[2000:]) <= set(visited) and 5 <= len(set(visited) - set(ids[2000:])) <= 40


def test_explore_moves_towards_the_target_share_of_all_equal_groups_within_bounds():
    assert adapt_explore(0.5, zero_share=0.4, target=0.1) == pytest.approx(0.49)  # skip more
    assert adapt_explore(0.5, zero_share=0.05, target=0.1) == pytest.approx(0.51)  # skip less
    assert adapt_explore(0.05, zero_share=1.0, target=0.1) == 0.05
    assert adapt_explore(0.95, zero_share=0.0, target=0.1) == 0.95


def test_streaks_go_on_with_all_equal_groups_and_reset_with_mixed_ones():
    streaks = {"a": 2, "b": 3}
    share = observe_streaks(streaks, [("a", True), ("b", False), ("c", True), ("d", False)])
    assert streaks == {"a": 3, "b": 0, "c": 1, "d": 0} and share == 0.5
    assert observe_streaks(streaks, []) == 0.0 and streaks["a"] == 3


def test_first_visit_filter_uses_the_plans_thresholds_and_a_draw_per_query():
    rule = PlanRule(unsolvable_keep_fraction=0.0, drop_trivial=True, trivial_above=0.75)
    assert first_visit_reason("a", 0, 8, False, rule, seed=0) == DROPPED_UNSOLVABLE
    assert first_visit_reason("a", 8, 8, False, rule, seed=0) == DROPPED_TRIVIAL
    assert first_visit_reason("a", 7, 8, True, rule, seed=0) == DROPPED_TRIVIAL  # 0.875 > 0.75
    assert first_visit_reason("a", 6, 8, True, rule, seed=0) == KEPT
    # A graded verifier's partial credit that varies teaches whatever the threshold says.
    assert first_visit_reason("a", 0, 8, True, rule, seed=0) == KEPT
    assert first_visit_reason("a", 8, 8, True, rule, seed=0) == DROPPED_TRIVIAL  # trivial_above
    strict = PlanRule(unsolvable_keep_fraction=0.0, drop_trivial=True)
    assert first_visit_reason("a", 8, 8, True, strict, seed=0) == KEPT
    assert first_visit_reason("a", 8, 8, False, strict, seed=0) == DROPPED_TRIVIAL
    keep_all = PlanRule(unsolvable_keep_fraction=1.0, drop_trivial=False)
    assert first_visit_reason("a", 0, 8, False, keep_all, 0) == first_visit_reason(
        "a", 8, 8, False, keep_all, 0
    )
    assert first_visit_reason("a", 0, 8, False, keep_all, 0) == KEPT
    # A share of the never-solved is kept, each query by its own seeded draw.
    half = PlanRule(unsolvable_keep_fraction=0.5)
    reasons = [first_visit_reason(f"q{i}", 0, 8, False, half, seed=3) for i in range(400)]
    assert 150 < reasons.count(KEPT) < 250
    again = [first_visit_reason(f"q{i}", 0, 8, False, half, seed=3) for i in range(400)]
    other = [first_visit_reason(f"q{i}", 0, 8, False, half, seed=4) for i in range(400)]
    assert reasons == again and reasons != other


def test_which_groups_extend_a_streak():
    assert extends_streak([1.0, 1.0], "equal", 0.5) and extends_streak([0.0, 0.0], "equal", 0.5)
    assert not extends_streak([0.0, 1.0], "equal", 0.5)
    assert extends_streak([1.0, 1.0], "solved", 0.5)
    assert not extends_streak([0.0, 0.0], "solved", 0.5)  # unsolved: never skipped
    assert not extends_streak([0.0, 1.0], "solved", 0.5)
    with pytest.raises(ValueError, match="unknown history streak rule"):
        extends_streak([1.0], "any", 0.5)
    # partial credit: solved only from the task's success threshold up
    assert extends_streak([0.8, 0.9], "solved", 0.5)
    assert not extends_streak([0.8, 1.0], "solved", 1.0)


def test_a_success_threshold_is_compared_on_the_rescaled_rewards():
    assert is_correct(0.5, CORRECT_THRESHOLD) and not is_correct(0.49, CORRECT_THRESHOLD)
    assert not is_correct(0.99, 1.0) and is_correct(1.0, 1.0)
    # a verifier scoring on [-1, 3]: its 2.0 is rescaled to 0.75, the same as the threshold's
    assert rescale(2.0, (-1.0, 3.0)) == 0.75
    task = TaskConfig(verifier_reward_range=(-1.0, 3.0), success_threshold=2.0)
    assert task.correct_threshold == 0.75
    assert TaskConfig().correct_threshold == CORRECT_THRESHOLD == 0.5
    assert TaskConfig(verifier_reward_range=(0.0, 10.0)).correct_threshold == 0.5  # the middle
