"""Replay skip rules on runs' logged group outcomes (metrics.jsonl `group_outcomes`): an offline
screen before a training round (benchmarks/ROUNDS.md, dev round 39).

Each query's groups, in the order the run generated them, are its visits. A rule decides each
visit after the query's first from the groups it kept so far (a skipped visit shows it
nothing); counted over those visits: the dead groups (rewards all equal) it skips and the
mixed groups it loses. What the screen cannot see is the policy a skipping run would have had.
The table rules bound what any rule on a given summary of a query's recent groups could do:
each visit's state is read from all groups before it (no replay of the skips), the skip order
fitted on half of the runs and read on the other half.

    .venv/bin/python benchmarks/skip_screen.py runs/dev39/easy-*/runs/<method>/seed-*/metrics.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

Group = tuple[int, int]  # (responses, correct)
# (kept groups so far) -> probability of visiting now
VisitRule = Callable[[list[Group]], float]
REPEATS = 100  # Monte Carlo draws of each query's visits
SEARCH_REPEATS = 20  # ... while searching the posterior rule's threshold


def query_histories(paths: list[Path]) -> list[list[Group]]:
    """Every query's groups in generation order, one list per (run, query)."""
    histories: list[list[Group]] = []
    for path in paths:
        by_query: dict[str, list[Group]] = {}
        for line in path.read_text().splitlines():
            for query_id, size, correct in json.loads(line).get("group_outcomes", []):
                by_query.setdefault(query_id, []).append((size, correct))
        histories += by_query.values()
    return histories


def is_dead(group: Group) -> bool:
    size, correct = group
    return correct in (0, size)


def streak(groups: list[Group]) -> int:
    """How many of the last groups came back all equal."""
    count = 0
    for group in reversed(groups):
        if not is_dead(group):
            break
        count += 1
    return count


def greso(explore: float) -> VisitRule:
    """GRESO: visit with probability explore^z, z the kept groups' all-equal streak."""

    def visit(kept: list[Group]) -> float:
        return explore ** streak(kept)

    return visit


def posterior(threshold: float, window: int = 0, group_size: int = 8) -> VisitRule:
    """Visit with probability min(1, m / threshold), m the chance that a group of group_size
    is mixed at the posterior mean of p (Beta(1, 1) prior, updated by the kept groups: the
    last `window` of them, or all with window 0)."""

    def visit(kept: list[Group]) -> float:
        recent = kept[-window:] if window else kept
        correct = sum(c for _, c in recent)
        total = sum(s for s, _ in recent)
        p = (1 + correct) / (2 + total)
        mixed = 1 - p**group_size - (1 - p) ** group_size
        return min(1.0, mixed / threshold)

    return visit


def screen(
    histories: list[list[Group]], rule: VisitRule, repeats: int = REPEATS, seed: int = 0
) -> dict[str, float]:
    """Mean over `repeats` draws: dead groups skipped and mixed groups lost, as shares of the
    dead and mixed groups of the visits after each query's first."""
    rng = random.Random(seed)
    dead = sum(is_dead(g) for h in histories for g in h[1:])
    mixed = sum(not is_dead(g) for h in histories for g in h[1:])
    skipped_dead = lost_mixed = 0
    for _ in range(repeats):
        for history in histories:
            kept = history[:1]
            for group in history[1:]:
                if rng.random() < rule(kept):
                    kept.append(group)
                elif is_dead(group):
                    skipped_dead += 1
                else:
                    lost_mixed += 1
    return {
        "dead_skipped": skipped_dead / repeats / dead,
        "mixed_lost": lost_mixed / repeats / mixed,
        "dead_groups": dead,
        "mixed_groups": mixed,
    }


def matching_threshold(
    histories: list[list[Group]], target_dead_skipped: float, window: int = 0
) -> float:
    """The posterior rule's threshold that skips the given share of dead groups (bisection on
    a log scale; a larger threshold skips more, and above 1 even queries whose groups are
    surely mixed now and then)."""
    low, high = 1e-3, 1e3
    for _ in range(14):
        middle = (low * high) ** 0.5
        skipped = screen(histories, posterior(middle, window), SEARCH_REPEATS)["dead_skipped"]
        if skipped < target_dead_skipped:
            low = middle
        else:
            high = middle
    return (low * high) ** 0.5


# What a table-driven rule may know before a visit, from the groups drawn before it.
STATES: dict[str, Callable[[list[Group]], object]] = {
    "all-equal streak (GRESO's)": lambda groups: min(streak(groups), 6),
    "last group's correct count, streak": lambda groups: (groups[-1][1], min(streak(groups), 6)),
    "correct counts of the last 3 groups": lambda groups: tuple(c for _, c in groups[-3:]),
    "correct / drawn in the last 4 groups": lambda groups: (
        sum(c for _, c in groups[-4:]),
        sum(s for s, _ in groups[-4:]),
    ),
}


def state_counts(
    histories: list[list[Group]], state: Callable[[list[Group]], object]
) -> dict[tuple[object, bool], int]:
    """(state before a visit, whether the visit's group is dead) -> visits, over every visit
    after each query's first, the state read from all groups before it (nothing skipped)."""
    counts: dict[tuple[object, bool], int] = {}
    for history in histories:
        for index in range(1, len(history)):
            key = (state(history[:index]), is_dead(history[index]))
            counts[key] = counts.get(key, 0) + 1
    return counts


def table_rule_mixed_lost(
    fit: list[list[Group]],
    read: list[list[Group]],
    state: Callable[[list[Group]], object],
    target_dead_skipped: float,
) -> float:
    """The best skip table on `state`: states ranked by dead / mixed visits on `fit` (add-one,
    so an unseen state ranks as even), skipped in that order on `read` until the target share
    of its dead groups is skipped (the last state in part); the share of `read`'s mixed groups
    lost. Fitting and reading on different runs keeps the table from learning their noise."""
    ranked = state_counts(fit, state)
    counts = state_counts(read, state)
    states = {key for key, _ in counts}
    dead = sum(counts.get((key, True), 0) for key in states)
    mixed = sum(counts.get((key, False), 0) for key in states)
    skipped_dead = lost_mixed = 0.0

    def odds(key: object) -> float:
        return (ranked.get((key, True), 0) + 1) / (ranked.get((key, False), 0) + 1)

    for key in sorted(states, key=odds, reverse=True):
        state_dead, state_mixed = counts.get((key, True), 0), counts.get((key, False), 0)
        share = (
            min(1.0, (target_dead_skipped * dead - skipped_dead) / state_dead)
            if state_dead
            else 1.0
        )
        skipped_dead += share * state_dead
        lost_mixed += share * state_mixed
        if skipped_dead >= target_dead_skipped * dead:
            break
    return lost_mixed / mixed


POSTERIOR_WINDOWS = (0, 2, 4)  # the whole history, then the last few kept groups


def main(paths: list[str]) -> None:
    histories = query_histories([Path(p) for p in paths])
    reference = screen(histories, greso(0.5))
    target = reference["dead_skipped"]
    print(
        f"{len(paths)} runs, {len(histories)} query histories, "
        f"{reference['dead_groups']} dead and {reference['mixed_groups']} mixed groups after "
        "each query's first"
    )
    print("| rule (replayed) | dead groups skipped | mixed groups lost |")
    print("|---|---|---|")
    print(f"| GRESO, explore 0.5 | {target:.3f} | {reference['mixed_lost']:.3f} |")
    for window in POSTERIOR_WINDOWS:
        threshold = matching_threshold(histories, target, window)
        matched = screen(histories, posterior(threshold, window))
        kept = f"the last {window} kept groups" if window else "all kept groups"
        print(
            f"| posterior on {kept}, threshold {threshold:.3f} | "
            f"{matched['dead_skipped']:.3f} | {matched['mixed_lost']:.3f} |"
        )
    # Table rules, fitted on one half of the runs and read on the other, both ways.
    halves = (
        query_histories([Path(p) for p in paths[: len(paths) // 2]]),
        query_histories([Path(p) for p in paths[len(paths) // 2 :]]),
    )
    print(
        f"\n| best skip table on (no replay; {target:.3f} of dead groups skipped) "
        "| mixed groups lost |"
    )
    print("|---|---|")
    for name, state in STATES.items():
        lost = [
            table_rule_mixed_lost(fit, read, state, target) for fit, read in (halves, halves[::-1])
        ]
        print(f"| {name} | {sum(lost) / 2:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
