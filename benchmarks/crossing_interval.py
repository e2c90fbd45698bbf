"""A seed-bootstrap interval for compare.json's crossing read (ratio_vs_grpo[_train_all|_tokens]):
how far the crossing ratio moves when other seeds of the same runs had been drawn.

The crossing read averages each method's per-seed curves, takes the baseline's mean final
accuracy as the target and divides the baseline's mean total cost by the cost at which the
method's mean curve first holds the target (sgpo.compare.cost_to_target). Here the seeds are
resampled with replacement, the same draw for the baseline and the method (paired), and the
read is redone on each draw from the curves compare.json keeps (`eval_curves`). A draw where
the method never reaches the target counts as a ratio of 0; one where it holds the target
before it spent anything (compare.md's "at start") as an infinite ratio, printed "inf".

    .venv/bin/python benchmarks/crossing_interval.py benchmarks/data/report37-easy.compare.json

--versus reads one method against another from two compares over the same seeds (each against
its own compare's baseline, on the same draw of seeds): the other's cost to the target over the
method's, in one currency. BENCHMARKS.md's "DAPO's / the row's tokens" on balanced:

    .venv/bin/python benchmarks/crossing_interval.py --versus tokens \
        benchmarks/data/report37-balanced.compare.json:sgpo-solvable-g8-ds4-fs-drop-same-update \
        benchmarks/data/ten-seeds-eval4-train-all-balanced.compare.json:dapo
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from pathlib import Path

from sgpo.compare import CURRENCIES, cost_to_target, final_accuracy
from sgpo.core.curves import mean_curve

DRAWS = 2000
LEVEL = 0.90  # a two-sided interval: the 5th and 95th percentiles


def crossing_ratio(
    baseline: list[list[tuple[float, float]]],
    method: list[list[tuple[float, float]]],
    window: int,
) -> float:
    """The crossing read of one set of seeds: the baseline's mean last cost (its total: it
    ends on an evaluation) / the method's cost to the baseline's mean final accuracy."""
    target = statistics.fmean(final_accuracy(curve, window) for curve in baseline)
    reach = cost_to_target(mean_curve(method), target, window)
    if reach is None:
        return 0.0
    if reach == 0:
        return math.inf
    return statistics.fmean(curve[-1][0] for curve in baseline) / reach


def curves(
    result: dict, method: str, field: str, seeds: list[str]
) -> list[list[tuple[float, float]]]:
    return [
        [(e[field], e["eval_acc"]) for e in result["methods"][method]["eval_curves"][s]]
        for s in seeds
    ]


def intervals(result: dict, draws: int = DRAWS, seed: int = 0) -> dict[str, dict[str, tuple]]:
    """method -> currency -> (crossing ratio on all seeds, low, high, share of draws that
    never reach the target)."""
    baseline = result["baseline"]
    window = result["final_window"]
    seeds = list(result["methods"][baseline]["eval_curves"])
    rng = random.Random(seed)
    samples = [[rng.choice(seeds) for _ in seeds] for _ in range(draws)]
    out: dict[str, dict[str, tuple]] = {}
    for method in result["methods"]:
        if method == baseline:
            continue
        out[method] = {}
        for name, currency in CURRENCIES.items():
            field = currency.metric_field
            ratios = sorted(
                crossing_ratio(
                    curves(result, baseline, field, draw),
                    curves(result, method, field, draw),
                    window,
                )
                for draw in samples
            )
            whole = crossing_ratio(
                curves(result, baseline, field, seeds), curves(result, method, field, seeds), window
            )
            low = ratios[int((1 - LEVEL) / 2 * draws)]
            high = ratios[int((1 + LEVEL) / 2 * draws) - 1]
            never = sum(r == 0.0 for r in ratios) / draws
            out[method][name] = (whole, low, high, never)
    return out


def versus(
    row: tuple[dict, str],
    other: tuple[dict, str],
    currency: str,
    draws: int = DRAWS,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """(other's cost to the target / row's on the seeds both ran, low, high, share of draws
    below 1.5): each a (compare.json, method) read against its own baseline, both on the same
    draw of seeds. A draw where the row never reaches the target reads 0; where the other
    never does, inf."""
    field = CURRENCIES[currency].metric_field

    def ratio(result: dict, method: str, seeds: list[str]) -> float:
        baseline = result["baseline"]
        return crossing_ratio(
            curves(result, baseline, field, seeds),
            curves(result, method, field, seeds),
            result["final_window"],
        )

    def read(seeds: list[str]) -> float:
        row_ratio, other_ratio = ratio(*row, seeds), ratio(*other, seeds)
        if row_ratio == 0.0:
            return 0.0
        if other_ratio == 0.0:
            return math.inf
        # both at the target before spending anything ("at start"): neither is dearer
        return 1.0 if math.isinf(row_ratio) and math.isinf(other_ratio) else row_ratio / other_ratio

    runs = [result["methods"][method]["eval_curves"] for result, method in (row, other)]
    seeds = [s for s in runs[0] if s in runs[1]]
    if not seeds:
        raise ValueError("the two compares ran no seed in common: nothing to pair")
    rng = random.Random(seed)
    reads = sorted(read([rng.choice(seeds) for _ in seeds]) for _ in range(draws))
    low = reads[int((1 - LEVEL) / 2 * draws)]
    high = reads[int((1 + LEVEL) / 2 * draws) - 1]
    return read(seeds), low, high, sum(r < 1.5 for r in reads) / draws


def main_versus(currency: str, row: str, other: str) -> None:
    def load(spec: str) -> tuple[dict, str]:
        path, method = spec.rsplit(":", 1)
        return json.loads(Path(path).read_text()), method

    whole, low, high, below = versus(load(row), load(other), currency)
    print(
        f"{other.rsplit(':', 1)[1]}'s / {row.rsplit(':', 1)[1]}'s {currency} to the target: "
        f"{whole:.2f}, {LEVEL:.0%} interval {low:.2f}-{high:.2f}, {below:.1%} of draws below 1.5"
    )


def main(paths: list[str]) -> None:
    print(
        "| compare | method | crossing ratio (FLOPs / train-all / tokens) | "
        f"{LEVEL:.0%} interval, by currency | draws never reaching |"
    )
    print("|---|---|---|---|---|")
    for path in paths:
        result = json.loads(Path(path).read_text())
        for method, by_currency in intervals(result).items():
            reads = " / ".join(f"{v[0]:.2f}" for v in by_currency.values())
            spans = " / ".join(f"{v[1]:.2f}-{v[2]:.2f}" for v in by_currency.values())
            nevers = " / ".join(f"{v[3]:.2f}" for v in by_currency.values())
            print(f"| {Path(path).name.split('.')[0]} | {method} | {reads} | {spans} | {nevers} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--versus"]:
        main_versus(*sys.argv[2:])
    else:
        main(sys.argv[1:])
