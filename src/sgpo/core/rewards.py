"""When a verifier score counts as a correct answer: one rule for profiling, training groups,
online re-estimation and evaluation."""

from __future__ import annotations

CORRECT_THRESHOLD = 0.5  # verifiers may return partial credit in [0, 1]


def is_correct(score: float) -> bool:
    return score >= CORRECT_THRESHOLD
