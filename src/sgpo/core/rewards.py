"""When a verifier score counts as a correct answer: one rule for profiling, training groups,
online re-estimation and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

# The default mark on rewards rescaled to [0, 1]: verifiers may return partial credit, and a
# response counts as correct from the middle of the verifier's reward range up.
CORRECT_THRESHOLD = 0.5


def rescale(score: float, reward_range: tuple[float, float]) -> float:
    """score, in the verifier's own units on reward_range = [low, high], on [0, 1]."""
    low, high = reward_range
    return (score - low) / (high - low)


# Rewards closer than this differ by float rounding alone: 0.3 and 0.1 + 0.2, ten tests' 0.1
# summed to 0.9999999999999999, a float64 reward and its float32 copy in a TRL tensor. A group
# whose rewards' (population) std is below it has no advantage (group_advantages zeroes it).
EQUAL_REWARDS_STD = 1e-6


def is_correct(score: float, threshold: float) -> bool:
    """Whether a rescaled reward counts as correct (task.success_threshold, rescaled): from
    the threshold up, less float rounding (a share of tests passed that sums to 0.99999...
    passed them all)."""
    return score >= threshold - EQUAL_REWARDS_STD


def reward_level(reward: float) -> float:
    """A reward rounded to 1e-6, EQUAL_REWARDS_STD's scale, so that rewards grouped by value
    put 0.1 + 0.2, 0.3 and its float32 copy 0.30000001 in one outcome, as all_equal and the
    advantage see them (rewards a rounding boundary splits aside). NaN is a level of its own
    at each occurrence."""
    return round(float(reward), 6) + 0.0  # + 0.0: -0.0 is 0.0


def all_equal(rewards: Sequence[float]) -> bool:
    """A group whose rewards are all equal, as the advantage sees them (std below
    EQUAL_REWARDS_STD): nothing to learn from (GRESO's streak rule, and what the plan drops at
    p_hat 0 or 1)."""
    values = [float(r) for r in rewards]
    if len(values) < 2:
        return True
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 < EQUAL_REWARDS_STD
