"""benchmarks/define_mixes.py's statistics: the mixes' definition must stay computable."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tiny_run import load_script

DEFINE_MIXES = load_script(Path(__file__).resolve().parents[1] / "benchmarks/define_mixes.py")


@pytest.mark.parametrize("n_correct", [0, 3, 8])
def test_jeffreys_informative_probability_matches_the_integral(n_correct: int) -> None:
    a, b = n_correct + 0.5, 8 - n_correct + 0.5
    p = np.linspace(1e-9, 1 - 1e-9, 400_001)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    density = np.exp((a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - log_beta)
    expected = np.trapezoid(density * (1 - p**8 - (1 - p) ** 8), p)
    got = DEFINE_MIXES.jeffreys_informative_probability(n_correct, 8, 8)
    assert got == pytest.approx(expected, abs=2e-3)


def test_bucket_stats_of_a_profile() -> None:
    stats = DEFINE_MIXES.bucket_stats([8, 8, 0, 4])
    assert stats["p_hat_1"] == 0.5 and stats["p_hat_0"] == 0.25
    dead = [1 - DEFINE_MIXES.jeffreys_informative_probability(n, 8, 8) for n in (8, 8, 0, 4)]
    assert stats["grpo8_zero_adv"] == pytest.approx(sum(dead) / 4)
    assert 0 < stats["grpo8_zero_adv"] < 1
