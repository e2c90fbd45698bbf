"""Cost to a near-plateau accuracy, read from a fitted learning curve instead of a threshold
crossing.

"First reaches the baseline's final accuracy" asks where nearly flat curves first touch a
plateau value, so it moves with thousandths of accuracy. Here each seed-averaged curve
(cost, accuracy) is fitted with a saturating exponential a(c) = A - B exp(-c / tau), the level
is the baseline's fitted start plus a fixed share (95%) of its fitted gain, and a method's cost
to the level is read off its own fit, within the costs it was evaluated at (never
extrapolated). The baseline's cost to the level over the method's is the speedup.

Two fits say nothing of where between evaluations a level is reached, and are read so: a fit
that does not rise reaches no level (where it starts above one, it misfits its first
evaluations); a fit that completes GAIN_SHARE of its rise before its second evaluation is a
step between its first two, and no evaluation shows where in that gap it rose (its tau is
bounded only above, often at the grid's edge), so a level it crosses within that gap is read
at the gap's end, the second evaluation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GAIN_SHARE = 0.95
TAU_GRID_SIZE = 400
TAU_RANGE = (0.01, 10.0)  # times the curve's last cost
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class SaturatingFit:
    """a(c) = plateau - scale * exp(-c / tau), fitted to points evaluated in [first, last]."""

    plateau: float
    scale: float
    tau: float
    rmse: float
    first: float  # the first and last evaluated cost: the fit is read only between them
    last: float
    evaluated: tuple[float, ...] = ()  # every evaluated cost, ascending
    step: bool = False  # GAIN_SHARE of the rise done before the second evaluation

    def __call__(self, cost: float) -> float:
        return self.plateau - self.scale * math.exp(-cost / self.tau)

    def cost_to(self, level: float) -> float | None:
        """The first cost at which the fit reaches level; None if it does not within [first,
        last] or does not rise. A step fit crossing within its first gap reads the gap's end."""
        if self.scale <= 0:  # flat or falling: it shows no learning to read a cost from
            return None
        if self(self.first) >= level:
            return self.first
        if self.plateau <= level:  # levels off below
            return None
        cost = -self.tau * math.log((self.plateau - level) / self.scale)
        if cost > self.last:
            return None
        second = self.evaluated[1] if len(self.evaluated) > 1 else self.last
        # in a step fit's first gap no evaluation says where it crossed: at its end, it had
        return second if self.step and cost < second else cost


def fit_saturating(points: Sequence[tuple[float, float]]) -> SaturatingFit:
    """Least-squares fit of a(c) = A - B exp(-c / tau) to (cost, accuracy) points: A and B in
    closed form (simple linear regression on exp(-c / tau)) for every tau of a log grid spanning
    TAU_RANGE times the last cost, the tau with the smallest squared error kept."""
    if len(points) < 3:
        raise ValueError(f"a saturating fit needs at least 3 points, got {len(points)}")
    cost = np.array([c for c, _ in points], dtype=float)
    acc = np.array([a for _, a in points], dtype=float)
    last = float(cost.max())
    if last <= 0:
        raise ValueError("a saturating fit needs points at a positive cost")
    taus = np.geomspace(TAU_RANGE[0] * last, TAU_RANGE[1] * last, TAU_GRID_SIZE)
    decay = np.exp(-cost[None, :] / taus[:, None])  # one row per tau
    decay_dev = decay - decay.mean(axis=1, keepdims=True)
    acc_dev = acc - acc.mean()
    var = np.maximum((decay_dev**2).sum(axis=1), 1e-300)  # 0 only if every cost is equal
    cov = decay_dev @ acc_dev
    sse = np.maximum((acc_dev**2).sum() - cov**2 / var, 0.0)
    best = int(np.argmin(sse))
    evaluated = tuple(sorted(float(c) for c in cost))
    scale = float(-cov[best] / var[best])
    plateau = float(acc.mean() + scale * decay[best].mean())
    return SaturatingFit(
        plateau,
        scale,
        float(taus[best]),
        math.sqrt(sse[best] / len(points)),
        float(cost.min()),
        last,
        evaluated,
        step=bool((evaluated[1] - evaluated[0]) / taus[best] >= -math.log(1 - GAIN_SHARE)),
    )


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Average (cost, accuracy) curves over seeds at each evaluation index (cut to the shortest)."""
    n = min(len(c) for c in curves)
    return [
        (statistics.fmean(c[i][0] for c in curves), statistics.fmean(c[i][1] for c in curves))
        for i in range(n)
    ]


def gain_level(baseline: SaturatingFit, share: float = GAIN_SHARE) -> float | None:
    """The baseline's fitted accuracy at its first evaluation plus `share` of its fitted gain to
    its last; None when the fit gains nothing."""
    start, end = baseline(baseline.first), baseline(baseline.last)
    return start + share * (end - start) if end > start else None


def fit_speedup(
    baseline: SaturatingFit, method: SaturatingFit, level: float | None
) -> float | None:
    """The baseline's cost to the level / the method's: None if either never reaches it, or
    if the method's fit starts at the level at no cost (nothing to divide by)."""
    if level is None:
        return None
    base_cost, method_cost = baseline.cost_to(level), method.cost_to(level)
    if base_cost is None or not method_cost:
        return None
    return base_cost / method_cost


def bootstrap_speedup(
    baseline_seeds: Sequence[Sequence[tuple[float, float]]],
    method_seeds: Sequence[Sequence[tuple[float, float]]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """5th and 95th percentile of the fitted speedup over seed resamples, paired (the same seeds
    for both, as both started from each seed's model and data); a resample in which either never
    reaches the level counts as speedup 0. Both lists are indexed by the same seeds."""
    if len(baseline_seeds) != len(method_seeds):
        raise ValueError("the baseline and the method need the same seeds")
    rng = np.random.default_rng(seed)
    speedups = []
    for _ in range(resamples):
        picked = rng.integers(0, len(baseline_seeds), len(baseline_seeds))
        baseline = fit_saturating(mean_curve([baseline_seeds[i] for i in picked]))
        method = fit_saturating(mean_curve([method_seeds[i] for i in picked]))
        speedups.append(fit_speedup(baseline, method, gain_level(baseline)) or 0.0)
    low, high = np.percentile(speedups, [5, 95])
    return float(low), float(high)
