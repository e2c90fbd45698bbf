"""Screen pilot-then-commit on a run's logged groups (metrics.jsonl `group_outcomes`) before a
training round: a group of G whose first m responses all come back correct (all-solved) or all
equal (all-equal) ends there, costing m instead of G, and is dead in training.

Responses in a group are exchangeable draws, so a logged group of G with c correct has its
first m all correct with probability C(c, m) / C(G, m) (all wrong: C(G - c, m) / C(G, m)),
whatever order they were drawn in. Over a run's groups this gives the share of generated
responses a pilot saves and the share of mixed groups it loses. What the screen cannot see is
the policy a piloted run would have had (benchmarks/ROUNDS.md, "pilot screen").

    .venv/bin/python benchmarks/pilot_screen.py --max-step 60 \
        runs/dev47/easy/runs/sgpo-solvable-g8-ds4-greso-fill-fs-drop-same-update/seed-*/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from math import comb
from pathlib import Path

RULES = ("all-solved", "all-equal")


def logged_groups(paths: list[Path], max_step: int | None) -> Counter[tuple[int, int]]:
    """(responses, correct) of every group the runs generated, counted."""
    groups: Counter[tuple[int, int]] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if max_step is not None and record.get("step", 0) > max_step:
                continue
            groups.update((size, correct) for _, size, correct in record.get("group_outcomes", []))
    return groups


def pilot_ends(size: int, correct: int, pilot: int, rule: str) -> float:
    """Chance that a group of size with correct right answers ends after its first pilot."""
    if pilot >= size:
        return 0.0
    solved = comb(correct, pilot) / comb(size, pilot)
    failed = comb(size - correct, pilot) / comb(size, pilot)
    return solved + (failed if rule == "all-equal" else 0.0)


def screen(groups: Counter[tuple[int, int]], pilot: int, rule: str) -> tuple[float, float]:
    """(share of generated responses saved, share of mixed groups lost)."""
    responses = sum(size * n for (size, _), n in groups.items())
    mixed = sum(n for (size, correct), n in groups.items() if 0 < correct < size)
    saved = lost = 0.0
    for (size, correct), n in groups.items():
        ends = pilot_ends(size, correct, pilot, rule)
        saved += n * ends * (size - pilot)
        if 0 < correct < size:
            lost += n * ends
    return saved / responses, lost / mixed if mixed else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", type=Path)
    parser.add_argument("--max-step", type=int, default=None)
    args = parser.parse_args()
    groups = logged_groups(args.metrics, args.max_step)
    print(f"{sum(groups.values())} groups; (responses, correct): {sorted(groups.items())}")
    print("| pilot | ends on | responses saved | mixed groups lost |")
    print("|---|---|---|---|")
    for pilot in (2, 3, 4):
        for rule in RULES:
            saved, lost = screen(groups, pilot, rule)
            print(f"| {pilot} | {rule} | {saved:.3f} | {lost:.3f} |")


if __name__ == "__main__":
    main()
