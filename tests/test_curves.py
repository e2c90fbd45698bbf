"""sgpo.core.curves: the fitted cost-to-95%-of-gain read."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgpo.core.curves import (
    SaturatingFit,
    bootstrap_speedup,
    fit_saturating,
    fit_speedup,
    gain_level,
    mean_curve,
)


def curve(
    plateau: float, scale: float, tau: float, costs: list[float]
) -> list[tuple[float, float]]:
    return [(c, plateau - scale * math.exp(-c / tau)) for c in costs]


COSTS = [float(c) for c in range(0, 101, 5)]


def test_fit_recovers_a_noiseless_curve():
    fit = fit_saturating(curve(0.40, 0.05, 30.0, COSTS))
    # tau comes from a log grid with ~1.7% spacing; A and B are exact for that tau
    assert fit.tau == pytest.approx(30.0, rel=0.01)
    assert fit.plateau == pytest.approx(0.40, abs=2e-4)
    assert fit.scale == pytest.approx(0.05, rel=0.01)
    assert fit.rmse < 1e-4
    assert (fit.first, fit.last) == (0.0, 100.0)


def test_fit_averages_noise_out():
    rng = np.random.default_rng(0)
    noisy = [(c, a + rng.normal(0, 0.003)) for c, a in curve(0.38, 0.03, 20.0, COSTS)]
    fit = fit_saturating(noisy)
    assert fit.plateau == pytest.approx(0.38, abs=0.003)
    assert 10.0 < fit.tau < 40.0
    assert fit.rmse == pytest.approx(0.003, rel=0.5)


def test_cost_to_level_is_read_within_the_evaluated_costs_only():
    fit = SaturatingFit(plateau=0.4, scale=0.05, tau=30.0, rmse=0.0, first=10.0, last=100.0)
    level = 0.39  # reached where exp(-c/30) = 0.2
    assert fit.cost_to(level) == pytest.approx(-30.0 * math.log(0.2))
    assert fit.cost_to(fit(5.0)) == 10.0  # already there at the first evaluation
    assert fit.cost_to(0.399) is None  # the fit gets there after its last evaluation (c = 110)
    assert fit.cost_to(0.41) is None  # above the plateau
    # A falling fit starts at 0.35: it may sit above 0.34 there only by misfitting the first
    # evaluations (every method starts from the same model), so it reaches no level.
    falling = SaturatingFit(plateau=0.3, scale=-0.05, tau=30.0, rmse=0.0, first=0.0, last=100.0)
    assert falling.cost_to(0.36) is None and falling.cost_to(0.34) is None


def test_a_fit_that_falls_from_a_misfit_start_reads_no_speedup():
    baseline = fit_saturating(curve(0.40, 0.05, 30.0, COSTS))
    level = gain_level(baseline)
    # measured, after a profile costing 5: starts below the level, rises above it once, then
    # sinks: the fit falls all the way and says it started above the level
    points = [(5.0, 0.39), (15.0, 0.42), (25.0, 0.40), (35.0, 0.38), (45.0, 0.36)]
    falling = fit_saturating(points)
    assert falling.scale < 0 and falling(falling.first) >= level  # the fit misses step 0
    assert falling.cost_to(level) is None
    assert fit_speedup(baseline, falling, level) is None


def test_a_step_fit_reaches_a_level_at_an_evaluated_cost(monkeypatch: pytest.MonkeyPatch):
    """A curve that jumps between its first two evaluations fits a tau bounded only above (at
    or near the grid's lower edge); where in the gap it crosses is the grid's choice, not the
    data's, so the read is the evaluation after the jump, whatever the grid's edge."""
    points = [(5.0, 0.30), (10.0, 0.50), (20.0, 0.50), (30.0, 0.50), (40.0, 0.50)]
    reads = []
    for low in (0.01, 0.003, 0.001):
        monkeypatch.setattr("sgpo.core.curves.TAU_RANGE", (low, 10.0))
        fit = fit_saturating(points)
        assert fit.step
        reads.append(fit.cost_to(0.45))
    assert reads == [10.0, 10.0, 10.0]
    smooth = fit_saturating(curve(0.40, 0.05, 30.0, COSTS))
    assert not smooth.step and smooth.cost_to(0.39) not in smooth.evaluated
    # a fast curve fits as a step too, but a level it crosses after its second evaluation is
    # read where the fit crosses it: evaluations bound that crossing
    fast = fit_saturating(curve(0.50, 0.20, 3.0, [0.0, 10.0, 20.0, 30.0, 40.0]))
    assert fast.step
    assert fast.cost_to(0.495) == pytest.approx(-3.0 * math.log(0.005 / 0.2), rel=0.02)


def test_gain_level_is_95_percent_of_the_baselines_fitted_gain():
    fit = SaturatingFit(plateau=0.4, scale=0.05, tau=30.0, rmse=0.0, first=0.0, last=90.0)
    start, end = 0.35, 0.4 - 0.05 * math.exp(-3.0)
    assert gain_level(fit) == pytest.approx(start + 0.95 * (end - start))
    assert gain_level(fit, share=0.5) == pytest.approx(start + 0.5 * (end - start))
    flat = SaturatingFit(plateau=0.3, scale=-0.01, tau=30.0, rmse=0.0, first=0.0, last=90.0)
    assert gain_level(flat) is None


def test_speedup_of_a_curve_twice_as_fast_is_two():
    baseline = fit_saturating(curve(0.40, 0.05, 30.0, COSTS))
    faster = fit_saturating(curve(0.40, 0.05, 15.0, [c / 2 for c in COSTS]))
    level = gain_level(baseline)
    assert fit_speedup(baseline, baseline, level) == pytest.approx(1.0)
    assert fit_speedup(baseline, faster, level) == pytest.approx(2.0, rel=0.03)
    # the same speed with a lower plateau never gets to the level
    lower = fit_saturating(curve(0.39, 0.04, 30.0, COSTS))
    assert fit_speedup(baseline, lower, level) is None
    assert fit_speedup(baseline, faster, None) is None


def test_a_profile_paid_up_front_counts_against_the_method():
    baseline = fit_saturating(curve(0.40, 0.05, 30.0, COSTS))
    # the same learning as the baseline, started after a profile costing 10
    shifted = fit_saturating([(c + 10.0, a) for c, a in curve(0.40, 0.05, 30.0, COSTS)])
    level = gain_level(baseline)
    expected = baseline.cost_to(level) / (baseline.cost_to(level) + 10.0)
    assert fit_speedup(baseline, shifted, level) == pytest.approx(expected, rel=0.01)


def test_fit_refuses_curves_it_cannot_fit():
    with pytest.raises(ValueError, match="at least 3"):
        fit_saturating([(0.0, 0.3), (1.0, 0.4)])
    with pytest.raises(ValueError, match="positive cost"):
        fit_saturating([(0.0, 0.3), (0.0, 0.4), (0.0, 0.5)])


def noisy_seeds(tau: float, costs: list[float], seeds: int, shift: float = 0.0) -> list:
    rng = np.random.default_rng(int(tau * 10) + seeds)
    return [
        [(c + shift, a + rng.normal(0, 0.004)) for c, a in curve(0.38, 0.03, tau, costs)]
        for _ in range(seeds)
    ]


def test_mean_curve_averages_by_index_and_cuts_to_the_shortest():
    a = [(10.0, 0.2), (20.0, 0.4), (30.0, 0.6)]
    b = [(12.0, 0.4), (22.0, 0.6)]
    assert mean_curve([a, b]) == [(11.0, pytest.approx(0.3)), (21.0, pytest.approx(0.5))]


def test_bootstrap_interval_of_a_curve_against_itself_is_one():
    seeds = noisy_seeds(20.0, COSTS, 5)
    assert bootstrap_speedup(seeds, seeds, resamples=50) == (pytest.approx(1.0), pytest.approx(1.0))


def test_bootstrap_interval_brackets_a_real_speedup():
    baseline = noisy_seeds(20.0, COSTS, 8)
    faster = noisy_seeds(10.0, [c / 2 for c in COSTS], 8)
    low, high = bootstrap_speedup(baseline, faster, resamples=200)
    assert 1.0 < low < 2.0 < high
    slower = noisy_seeds(20.0, COSTS, 8, shift=30.0)  # a profile costing 30, the same learning
    low, high = bootstrap_speedup(baseline, slower, resamples=200)
    assert high < 1.0 and low > 0


def test_bootstrap_counts_never_as_zero_and_needs_paired_seeds():
    baseline = noisy_seeds(20.0, COSTS, 4)
    flat = [[(c, 0.35) for c in COSTS] for _ in range(4)]  # never gains
    assert bootstrap_speedup(baseline, flat, resamples=20) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap_speedup(baseline, flat[:3])
