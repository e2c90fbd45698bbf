"""QueryScheduler: epochs, peeking, skipping and re-planning without losing a query."""

from dataclasses import replace

import pytest

from sgpo.core.online import observe_streaks
from sgpo.plan import PlanRow
from sgpo.schedule import QueryScheduler, ScheduledQuery, profile_streaks
from sgpo.tasks import Query


def scheduled(n: int, g: int = 2) -> list[ScheduledQuery]:
    return [ScheduledQuery(Query(f"q{i}", f"p{i}", "1"), g) for i in range(n)]


def ids(items: list[ScheduledQuery]) -> list[str]:
    return [s.query.query_id for s in items]


def test_take_fills_budget_and_rolls_over_epochs():
    s = QueryScheduler(scheduled(5), shuffle=False, seed=0)
    assert ids(s.take(4)) == ["q0", "q1"]
    assert ids(s.take(4)) == ["q2", "q3"]
    assert ids(s.take(4)) == ["q4"]  # the epoch's last query: a short step, not a mix of epochs
    assert ids(s.take(4)) == ["q0", "q1"] and s.epoch == 1


def test_peek_after_an_exhausted_epoch_takes_nothing():
    s = QueryScheduler(scheduled(2), shuffle=False, seed=0)
    s.take(4)
    assert ids(s.peek(2)) == ["q0"] and s.epoch == 1
    assert s.remaining == ["q0", "q1"]  # peeking consumed no query of the new epoch
    s.skip({"q0"})
    assert ids(s.take(4)) == ["q1"]


def test_update_plan_keeps_visited_queries_for_the_next_epoch():
    s = QueryScheduler(scheduled(4), shuffle=False, seed=0)
    s.take(2)  # q0 visited
    s.update_plan(list(reversed(scheduled(4, g=1))))
    assert s.remaining == ["q3", "q2", "q1"]


def test_a_visited_query_dropped_and_brought_back_waits_for_the_next_epoch():
    s = QueryScheduler(scheduled(4), shuffle=False, seed=0)
    s.take(2)  # q0 visited
    s.update_plan(scheduled(4)[1:])  # q0 dropped (e.g. now trivial)
    state = s.state()
    s.update_plan(scheduled(4))  # ... and back (a re-profile found it mixed)
    assert s.remaining == ["q1", "q2", "q3"]  # not a second visit this epoch
    restored = QueryScheduler(scheduled(4), shuffle=False, seed=0)
    restored.restore(state, {q.query.query_id: q.query for q in scheduled(4)})
    restored.update_plan(scheduled(4))  # a resume remembers it too
    assert restored.remaining == ["q1", "q2", "q3"]
    for _ in range(3):
        s.take(2)
    assert ids(s.take(2)) == ["q0"] and s.epoch == 1  # the next epoch has it again


def test_take_with_a_group_size_sizes_every_taken_query_with_it():
    s = QueryScheduler(scheduled(5, g=4), shuffle=False, seed=0)
    taken = s.take(4, group_size=2)
    assert ids(taken) == ["q0", "q1"] and [t.group_size for t in taken] == [2, 2]
    assert [t.group_size for t in s.take(4)] == [4]  # the plan's own G again, from q2 on
    assert ids(s.queries) == [f"q{i}" for i in range(5)]
    assert all(q.group_size == 4 for q in s.queries)  # the plan itself is unchanged


def test_history_skips_start_each_epoch_from_the_observed_streaks():
    s = QueryScheduler(scheduled(40), shuffle=False, seed=0, explore=0.5)
    assert ids(s.take(80)) == [f"q{i}" for i in range(40)]  # nothing observed: all visited
    for i in range(40):
        observe_streaks(s.zero_streaks, [(f"q{i}", i < 20)])  # q0..q19 came back all equal
    observe_streaks(s.zero_streaks, [("q0", True)])  # a streak of two
    second = ids(s.take(80))
    assert s.epoch == 1 and set(second) >= {f"q{i}" for i in range(20, 40)}
    skipped = {f"q{i}" for i in range(20)} - set(second)
    assert 3 <= len(skipped) <= 17 and s.history_skipped == len(skipped)  # ~half of twenty
    observe_streaks(s.zero_streaks, [("q5", False)])  # a mixed group ends the streak
    assert s.zero_streaks["q5"] == 0 and s.zero_streaks["q0"] == 2
    restored = QueryScheduler(scheduled(40), shuffle=False, seed=0, explore=0.5)
    restored.restore(s.state(), {q.query.query_id: q.query for q in scheduled(40)})
    assert restored.zero_streaks == s.zero_streaks
    assert ids(restored.take(80)) == ids(s.take(80))  # a resumed run skips alike


def test_a_query_on_a_streak_gets_the_small_group_until_a_group_breaks_it():
    s = QueryScheduler(scheduled(3, g=8), shuffle=False, seed=0, streak_group_size=2)
    assert [t.group_size for t in s.take(24)] == [8, 8, 8]  # nothing observed yet
    observe_streaks(s.zero_streaks, [("q0", True)])
    observe_streaks(s.zero_streaks, [("q1", False)])
    observe_streaks(s.zero_streaks, [("q2", True)])
    taken = s.take(24)  # every query visited (no skips), streaks small: room left over
    assert ids(taken) == ["q0", "q1", "q2"] and [t.group_size for t in taken] == [2, 8, 2]
    observe_streaks(s.zero_streaks, [("q0", False)])  # a mixed small group: back to its G
    assert [t.group_size for t in s.take(24)] == [8, 8, 2]
    assert [t.group_size for t in s.take(24, group_size=4)] == [4, 4, 4]  # explicit size first
    assert all(q.group_size == 8 for q in s.queries)  # the plan itself is unchanged
    small = QueryScheduler(scheduled(1, g=2), shuffle=False, seed=0, streak_group_size=4)
    observe_streaks(small.zero_streaks, [("q0", True)])
    assert [t.group_size for t in small.take(8)] == [2]  # never larger than the plan's G


def test_without_history_skips_every_query_is_visited_whatever_was_observed():
    s = QueryScheduler(scheduled(4), shuffle=False, seed=0)
    for i in range(4):
        observe_streaks(s.zero_streaks, [(f"q{i}", True)])
    s.take(8)
    assert ids(s.take(8)) == ["q0", "q1", "q2", "q3"] and s.history_skipped == 0


def never_visited(s: QueryScheduler, query_ids: list[str]) -> None:
    """Streaks so long that explore ** z is ~1e-18: these queries are skipped every epoch."""
    for q in query_ids:
        s.zero_streaks[q] = 60


def test_with_fill_a_step_goes_on_into_the_next_epoch_without_taking_a_query_twice():
    s = QueryScheduler(scheduled(10), shuffle=False, seed=0, explore=0.5, fill=True)
    assert ids(s.take(12)) == ["q0", "q1", "q2", "q3", "q4", "q5"]
    never_visited(s, ["q7", "q8", "q9"])  # from the next epoch on: seven queries, 14 rollouts
    assert ids(s.take(12)) == ["q6", "q7", "q8", "q9", "q0", "q1"]  # epoch 0's end, then 1
    # q6..q9 counted as their epoch-1 visit: the next step does not start with them again
    assert ids(s.take(12)) == ["q2", "q3", "q4", "q5", "q0", "q1"] and s.epoch == 2
    assert s.remaining == ["q6"]  # q2..q5 had their epoch-2 visit in this step too
    alone = QueryScheduler(scheduled(10), shuffle=False, seed=0, explore=0.5, fill=True)
    alone.take(20)  # epoch 0, all ten
    never_visited(alone, [f"q{i}" for i in range(2, 10)])
    assert ids(alone.take(12)) == ["q0", "q1"]  # every epoch holds only these: the step ends


def test_with_fill_a_step_that_holds_a_whole_epoch_opens_one_epoch_only():
    # three queries, a budget for fifty: every step trains all three, one epoch per step
    s = QueryScheduler(scheduled(3), shuffle=True, seed=1, fill=True)
    orders = []
    for step in range(3):
        orders.append(ids(s.take(100)))
        assert sorted(orders[-1]) == ["q0", "q1", "q2"]
        # the step opened the next epoch and left it whole to the next step (was 1, 3, 5:
        # each step counted as two epochs' visits, every other epoch's order never drawn)
        assert s.epoch == step + 1 and len(s.remaining) == 3
    # each step in its own epoch's shuffled order, as without fill
    plain = QueryScheduler(scheduled(3), shuffle=True, seed=1)
    assert orders == [ids(plain.take(100)) for _ in range(3)]
    assert len(set(map(tuple, orders))) > 1  # the order does change between epochs


def test_the_scheduler_asks_for_outcomes_only_when_a_rule_reads_the_streaks():
    plain = QueryScheduler(scheduled(2), shuffle=False, seed=0)
    skipping = QueryScheduler(scheduled(2), shuffle=False, seed=0, explore=0.5)
    small = QueryScheduler(scheduled(2), shuffle=False, seed=0, streak_group_size=2)
    assert (plain.observes_streaks, skipping.observes_streaks, small.observes_streaks) == (
        False,
        True,
        True,
    )


def test_a_minimum_streak_keeps_queries_until_their_streak_reaches_it():
    s = QueryScheduler(scheduled(40), shuffle=False, seed=0, explore=0.01, min_streak=2)
    s.take(80)
    for i in range(40):
        observe_streaks(s.zero_streaks, [(f"q{i}", True)])  # one all-equal group each: forgiven
    assert len(s.take(80)) == 40 and s.history_skipped == 0
    for i in range(20):
        observe_streaks(s.zero_streaks, [(f"q{i}", True)])  # a second one in a row for q0..q19
    assert ids(s.take(80)) == [f"q{i}" for i in range(20, 40)] and s.history_skipped == 20


def test_with_a_target_a_step_fills_up_from_the_next_epochs_and_explore_adapts():
    s = QueryScheduler(scheduled(10), shuffle=False, seed=0, explore=0.5, target=0.1)
    s.take(20)  # the first epoch, all ten
    for i in range(10):
        observe_streaks(s.zero_streaks, [(f"q{i}", i < 8)])  # only q8 and q9 mixed
    for _ in range(30):
        s.adapt(zero_share=0.8)  # far above the target: skip more
    assert s.explore == pytest.approx(0.2)
    step = s.take(12)  # up to six queries of two, from as many epochs as it takes
    assert 6 < sum(t.group_size for t in step) <= 12 and s.epoch >= 2
    assert len(set(ids(step))) == len(step)  # no query twice in one step
    assert {"q8", "q9"} <= set(ids(step))
    plain = QueryScheduler(scheduled(10), shuffle=False, seed=0, explore=0.01)
    plain.take(20)
    for i in range(10):
        observe_streaks(plain.zero_streaks, [(f"q{i}", i < 8)])
    plain.adapt(zero_share=0.8)
    assert plain.explore == 0.01  # no target: fixed, and a step ends with its epoch
    short = plain.take(12)
    assert {"q8", "q9"} <= set(ids(short)) and len(short) <= 3 and plain.epoch == 1
    restored = QueryScheduler(scheduled(10), shuffle=False, seed=0, explore=0.5, target=0.1)
    restored.restore(s.state(), {q.query.query_id: q.query for q in scheduled(10)})
    assert restored.explore == s.explore and ids(restored.take(12)) == ids(s.take(12))


def test_first_visits_profile_and_drop_queries_in_place():
    from sgpo.core.allocation import PlanRule

    rule = PlanRule(unsolvable_keep_fraction=0.0, drop_trivial=False)
    s = QueryScheduler(scheduled(6, g=4), shuffle=True, seed=1, first_visit=rule)
    order = list(s.remaining)
    first = s.take(8)  # two queries
    s.observe_first_visits(
        [(first[0].query.query_id, 0, 4, False), (first[1].query.query_id, 4, 4, False)]
    )
    never = first[0].query.query_id
    assert s.profiled == {never: "unsolvable", first[1].query.query_id: "kept"}
    assert never not in ids(s.queries) and s.first_visit_dropped == 1
    assert s.remaining == order[2:]  # the epoch's shuffle is kept
    # Only a query's first group is its profile: an all-wrong later group drops nothing.
    s.observe_first_visits([(first[1].query.query_id, 0, 4, False)])
    assert first[1].query.query_id in ids(s.queries)
    state = s.state()
    restored = QueryScheduler(scheduled(6, g=4), shuffle=True, seed=1, first_visit=rule)
    restored.restore(state, {q.query.query_id: q.query for q in scheduled(6)})
    assert restored.profiled == s.profiled and ids(restored.queries) == ids(s.queries)
    s.observe_first_visits([(q, 0, 4, False) for q in order[2:]])
    assert ids(s.queries) == [first[1].query.query_id] and s.first_visit_dropped == 5
    with pytest.raises(ValueError, match="dropped every query"):
        lone = QueryScheduler(scheduled(1, g=4), shuffle=True, seed=1, first_visit=rule)
        lone.observe_first_visits([("q0", 0, 4, False)])


def test_without_a_first_visit_rule_nothing_is_dropped():
    s = QueryScheduler(scheduled(3), shuffle=False, seed=0)
    s.observe_first_visits([("q0", 0, 2, False)])
    assert ids(s.queries) == ["q0", "q1", "q2"] and s.profiled == {}


def test_a_history_from_the_profile_skips_in_the_first_epoch_too():
    """train.history_from_profile: kept queries whose profile samples were all correct start on
    a streak of one (profile_streaks), so the first epoch already skips about half of them."""
    rows = [
        plan_row(f"q{i}", n_correct=1 if i < 20 else 0, k=1 if i < 30 else 8, kept=i < 40)
        for i in range(44)
    ] + [plan_row("trivial", n_correct=8, k=8, kept=False)]  # dropped: no visit to skip
    streaks = profile_streaks(rows, "equal")
    assert streaks == {f"q{i}": 1 for i in range(20)}  # solved at the first sample, kept
    # All correct with partial credit that varied (a graded verifier): no all-equal streak
    graded = [replace(plan_row("g1", n_correct=8, k=8, kept=True), rewards_vary=True)]
    assert profile_streaks(graded, "equal") == {} and profile_streaks(graded, "solved") == {"g1": 1}
    s = QueryScheduler(scheduled(40), shuffle=False, seed=0, explore=0.5, streaks=streaks)
    first = ids(s.take(80))
    assert set(first) >= {f"q{i}" for i in range(20, 40)}
    skipped = 20 - len(set(first) & set(streaks))
    assert 3 <= skipped <= 17 and s.history_skipped == skipped  # ~half of twenty
    plain = QueryScheduler(scheduled(40), shuffle=False, seed=0, explore=0.5)
    assert ids(plain.take(80)) == [f"q{i}" for i in range(40)]  # no history: every query


def plan_row(query_id: str, n_correct: int, k: int, kept: bool) -> PlanRow:
    return PlanRow(
        query_id=query_id,
        prompt="p",
        answer="1",
        difficulty="",
        k=k,
        n_correct=n_correct,
        p_hat=n_correct / k,
        group_size=8 if kept else 0,
        kept=kept,
        reason="kept" if kept else "unsolvable",
        rank=int(query_id[1:]) if kept else -1,
        prompt_tokens=3,
        mean_response_tokens=2.0,
        rewards_vary=0 < n_correct < k,
    )
