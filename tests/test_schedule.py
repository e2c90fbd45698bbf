"""QueryScheduler: epochs, peeking, skipping and re-planning without losing a query."""

from sgpo.schedule import QueryScheduler, ScheduledQuery
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
