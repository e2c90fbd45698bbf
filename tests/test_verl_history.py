"""sgpo.verl.history without verl: the skip-on-history bookkeeping the verl launch applies
(tests/verl_integration drives it through verl's dataset and replay buffer)."""

from __future__ import annotations

import logging

import pytest

from sgpo.core.online import epoch_visits
from sgpo.schedule import QueryScheduler, ScheduledQuery
from sgpo.tasks import Query
from sgpo.verl.history import HistorySkip

IDS = [f"q{i}" for i in range(12)]


def draw_epoch(history: HistorySkip, ids: list[str] = IDS) -> list[str]:
    """One dataloader epoch: every row drawn once; the generated ones, in order."""
    return [q for q in ids if history.draw(q)]


def solved(ids: list[str]) -> list[tuple[str, list[float]]]:
    return [(q, [1.0, 1.0, 1.0]) for q in ids]


def test_streaks_count_all_equal_groups_in_a_row_and_reset_on_a_mixed_one():
    history = HistorySkip(IDS, explore=0.5, seed=0)
    history.observe_step([("q0", [1.0, 1.0]), ("q1", [0.0, 0.0, 0.0]), ("q2", [0.0, 1.0])])
    history.observe_step([("q0", [1.0, 1.0]), ("q1", [0.0, 1.0])])
    assert history.zero_streaks == {"q0": 2, "q1": 0, "q2": 0}
    with pytest.raises(ValueError, match="at least one"):
        history.observe_step([])


def test_first_epoch_generates_everything_and_later_ones_draw_as_sgpos_trainer():
    history = HistorySkip(IDS, explore=0.3, seed=5, min_streak=2)
    assert draw_epoch(history) == IDS  # no history yet
    streaks = {q: i % 4 for i, q in enumerate(IDS)}
    for _ in range(3):
        history.observe_step(solved([q for q in IDS if streaks[q] >= 1]))
        streaks = {q: s + 1 if s >= 1 else 0 for q, s in streaks.items()}
    # replay exactly those streaks into a fresh bookkeeping at epoch 1
    history = HistorySkip(IDS, explore=0.3, seed=5, min_streak=2)
    draw_epoch(history)
    history.zero_streaks = {q: 3 * (i % 4 >= 1) for i, q in enumerate(IDS)}
    generated = draw_epoch(history)
    assert generated == epoch_visits(IDS, history.zero_streaks, 0.3, 5, 1, 0.0, 2)
    assert len(generated) < len(IDS)  # with streaks of 3 and explore 0.3 some are skipped
    assert history.skipped == len(IDS) - len(generated)
    assert {"q0", "q4", "q8"} <= set(generated)  # streak 0: always generated


def test_decisions_are_deterministic_for_a_seed_and_differ_across_seeds():
    def run(seed: int) -> list[list[str]]:
        history = HistorySkip(IDS, explore=0.5, seed=seed)
        epochs = []
        for _ in range(4):
            epochs.append(draw_epoch(history))
            history.observe_step(solved(epochs[-1]))
        return epochs

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_same_visits_as_sgpos_scheduler_with_history_fill():
    """A step of 4 queries at a time, every group all correct: the verl bookkeeping generates
    the same queries per step as sgpo's QueryScheduler(fill=True) takes, across epochs."""
    queries = [ScheduledQuery(Query(q, f"{q}?", "1", "x"), 2) for q in IDS]
    scheduler = QueryScheduler(queries, shuffle=False, seed=3, explore=0.6, fill=True)
    history = HistorySkip(IDS, explore=0.6, seed=3)
    rows = iter(IDS * 50)  # verl's sequential dataloader, epoch after epoch
    for _ in range(25):
        taken = [s.query.query_id for s in scheduler.take(budget=8)]
        step: list[str] = []
        while len(step) < 4:  # verl refills every skipped row with the next one
            q = next(rows)
            if history.draw(q):
                step.append(q)
        assert step == taken
        scheduler.observe_step([(q, True) for q in taken])
        history.observe_step(solved(step))
    assert history.skipped == scheduler.history_skipped > 0


def test_target_adapts_explore_and_floors_visits():
    history = HistorySkip(IDS, explore=0.5, seed=0, target=0.2)
    history.observe_step(solved(IDS[:3]) + [("q3", [0.0, 1.0])])  # 3/4 all equal >= 0.2
    assert history.explore == pytest.approx(0.49)
    history.observe_step([("q3", [0.0, 1.0])])  # 0 < 0.2: skip less
    assert history.explore == pytest.approx(0.5)
    fixed = HistorySkip(IDS, explore=0.5, seed=0)
    fixed.observe_step(solved(IDS))
    assert fixed.explore == 0.5
    # with a target, the floor (0.01) keeps queries with endless streaks visited now and then
    stuck = IDS[:6]
    for target, expected in ((0.5, (5, 40)), (0.0, (0, 0))):
        history = HistorySkip(IDS, explore=0.05, seed=0, target=target)
        draw_epoch(history)
        history.zero_streaks = dict.fromkeys(stuck, 50)
        visits = sum(q in stuck for _ in range(300) for q in draw_epoch(history))
        assert expected[0] <= visits <= expected[1]  # ~0.01 * 300 * 6 = 18 with the floor


def test_a_step_crossing_into_a_new_epoch_holds_its_queries_visit_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = HistorySkip(["a", "b", "c"], explore=0.5, seed=0)
    assert [history.draw(q) for q in ("a", "b")] == [True, True]
    history.observe_step(solved(["a", "b"]))
    # the next step draws c, then runs into epoch 1 while c's group is being generated
    assert history.draw("c") is True
    history.draw("a")
    assert history.epoch == 1
    assert history.draw("c") is False  # streak 0, yet held: not twice in the step
    history.observe_step(solved(["c"]))
    assert history.repeated == 0
    # a step whose queries are every visit of the new epoch keeps them (nothing else to fill):
    # generated twice in the step, counted and warned once
    only = HistorySkip(["a"], explore=0.5, seed=0)
    with caplog.at_level(logging.WARNING, logger="sgpo.verl.history"):
        assert only.draw("a") is True and only.draw("a") is True and only.draw("a") is True
    assert only.repeated == 2
    assert len(caplog.records) == 1 and "generates them again" in caplog.text
    only.observe_step(solved(["a", "a", "a"]))
    assert only.state_dict()["repeated"] == 2


def test_state_round_trip_resumes_alike():
    history = HistorySkip(IDS, explore=0.4, seed=9, target=0.3)
    for _ in range(3):
        history.observe_step(solved(draw_epoch(history)))
    resumed = HistorySkip(IDS, explore=0.4, seed=9, target=0.3)
    resumed.load_state_dict(history.state_dict())
    assert resumed.state_dict() == history.state_dict()
    assert draw_epoch(resumed) == draw_epoch(history)


def test_refuses_bad_settings():
    with pytest.raises(ValueError, match="distinct"):
        HistorySkip(["a", "a"], explore=0.5, seed=0)
    with pytest.raises(ValueError, match="explore"):
        HistorySkip(IDS, explore=1.0, seed=0)
    with pytest.raises(ValueError, match="min_streak"):
        HistorySkip(IDS, explore=0.5, seed=0, min_streak=0)
