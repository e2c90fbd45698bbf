"""Replay skip rules on runs' logged group outcomes (metrics.jsonl `group_outcomes`): an offline
screen before a training round (BENCHMARKS.md, dev round 39).

Each query's groups, in the order the run generated them, are its visits. A rule decides each
visit after the query's first from the groups it kept so far (a skipped visit shows it
nothing); counted over those visits: the dead groups (rewards all equal) it skips and the
mixed groups it loses. What the screen cannot see is the policy a skipping run would have had.

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


def greso(explore: float) -> VisitRule:
    """GRESO: visit with probability explore^z, z the kept groups' all-equal streak."""

    def visit(kept: list[Group]) -> float:
        streak = 0
        for group in reversed(kept):
            if not is_dead(group):
                break
            streak += 1
        return explore**streak

    return visit


def posterior(threshold: float, group_size: int = 8) -> VisitRule:
    """Visit with probability min(1, m / threshold), m the chance that a group of group_size
    is mixed at the posterior mean of p (Beta(1, 1) prior, updated by the kept groups)."""

    def visit(kept: list[Group]) -> float:
        correct = sum(c for _, c in kept)
        total = sum(s for s, _ in kept)
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


def matching_threshold(histories: list[list[Group]], target_dead_skipped: float) -> float:
    """The posterior rule's threshold that skips the given share of dead groups (bisection on
    a log scale; a larger threshold skips more, and above 1 even queries whose groups are
    surely mixed now and then)."""
    low, high = 1e-3, 1e3
    for _ in range(14):
        middle = (low * high) ** 0.5
        skipped = screen(histories, posterior(middle), SEARCH_REPEATS)["dead_skipped"]
        if skipped < target_dead_skipped:
            low = middle
        else:
            high = middle
    return (low * high) ** 0.5


def main(paths: list[str]) -> None:
    histories = query_histories([Path(p) for p in paths])
    reference = screen(histories, greso(0.5))
    threshold = matching_threshold(histories, reference["dead_skipped"])
    matched = screen(histories, posterior(threshold))
    print(
        f"{len(paths)} runs, {len(histories)} query histories, "
        f"{reference['dead_groups']} dead and {reference['mixed_groups']} mixed groups after "
        "each query's first"
    )
    print("| rule | dead groups skipped | mixed groups lost |")
    print("|---|---|---|")
    print(
        f"| GRESO, explore 0.5 | {reference['dead_skipped']:.3f} | {reference['mixed_lost']:.3f} |"
    )
    print(
        f"| posterior, threshold {threshold:.3f} | {matched['dead_skipped']:.3f} | "
        f"{matched['mixed_lost']:.3f} |"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
