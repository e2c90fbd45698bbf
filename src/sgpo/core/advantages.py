"""Group-relative advantages over groups of any size, and loss aggregation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

import torch

from sgpo.core.rewards import EQUAL_REWARDS_STD, reward_level

K = TypeVar("K")
LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
ROUNDING = 1e-12  # relative: what float sums leave of a reward's distance to its group mean


def growth_round(
    sizes: Mapping[K, int], all_equal: Collection[K], grow_round: int, grow_max: int
) -> dict[K, int]:
    """Grow until mixed: how many more responses each group draws next, given each group's size
    and which groups still show one outcome only: grow_round at a time, up to grow_max in all.
    Empty once every group is mixed or full (a group planned above grow_max never grows)."""
    return {
        g: min(grow_round, grow_max - size)
        for g, size in sizes.items()
        if g in all_equal and size < grow_max
    }


def balanced_indices(rewards: Sequence[float], size: int) -> list[int]:
    """Which `size` members of a grown group are trained (grow until mixed, balanced): one of
    each outcome in turn, the rarer outcome first, each in draw order, so the one wrong answer
    found among twenty right ones is always trained and both outcomes are whenever size >= 2.
    Returns indices into `rewards`, ascending (draw order kept)."""
    by_reward: dict[float, list[int]] = {}
    for i, reward in enumerate(rewards):
        by_reward.setdefault(reward_level(reward), []).append(i)
    queues = sorted(by_reward.values(), key=len)
    chosen: list[int] = []
    while len(chosen) < min(size, len(rewards)):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return sorted(chosen)


def max_variance_indices(rewards: Sequence[float], size: int) -> list[int]:
    """Which `size` members of a group are trained under PODS's max-variance down-sampling
    (Xu et al. 2025, arXiv 2504.13818): the subset whose rewards vary most is some i highest
    plus size - i lowest, so each split is tried. For 0/1 rewards it keeps every response of
    the rarer outcome up to size / 2. Of equally varied splits the one with the fewest highest
    is taken (so for an odd size, the 0 outcome may get the larger half); equal rewards rank
    in draw order. Returns indices into `rewards`, ascending."""
    if size >= len(rewards):
        return list(range(len(rewards)))
    order = sorted(range(len(rewards)), key=lambda i: (rewards[i], i))

    def variance(chosen: list[int]) -> float:
        mean = sum(rewards[i] for i in chosen) / len(chosen)
        return sum((rewards[i] - mean) ** 2 for i in chosen) / len(chosen)

    splits = [order[: size - high] + order[len(order) - high :] for high in range(size + 1)]
    variances = [variance(split) for split in splits]
    # splits tied but for float rounding are tied: the first (fewest highest) is taken
    best = max(variances) * (1 - ROUNDING)
    return sorted(next(s for s, v in zip(splits, variances, strict=True) if v >= best))


def majority_share(rewards: Sequence[float]) -> float:
    """The share of a group its most common reward holds (1.0 for an all-equal group)."""
    return max(Counter(map(reward_level, rewards)).values()) / len(rewards)


def stratum_weights(rewards: Sequence[float], chosen: Sequence[int]) -> list[float]:
    """How many of the group each chosen member stands for: the count of its reward in the
    whole group over the count among the chosen. Trained with these weights and the whole
    group's advantages, a down-sampled group's loss is an unbiased estimate of the whole
    group's (stratified by outcome; exact strata for 0/1 rewards, a graded value that was not
    chosen is not represented). Returned in the order of `chosen`."""
    levels = [reward_level(r) for r in rewards]
    in_group = Counter(levels)
    in_chosen = Counter(levels[i] for i in chosen)
    return [in_group[levels[i]] / in_chosen[levels[i]] for i in chosen]


def group_advantages(
    rewards: Sequence[float],
    group_ids: Sequence[int],
    normalize_std: bool = False,
    eps: float = EQUAL_REWARDS_STD,
) -> list[float]:
    """Advantage of each rollout = reward - mean reward of its group (optionally / group std).

    Groups may have any size; a group of one, or one whose rewards are all equal, gets zero
    advantage for every member. std is the population std (ddof=0).
    """
    if len(rewards) != len(group_ids):
        raise ValueError(f"{len(rewards)} rewards but {len(group_ids)} group ids")
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    advantages = [0.0] * len(rewards)
    for idx in members.values():
        values = [float(rewards[i]) for i in idx]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        for i, v in zip(idx, values, strict=True):
            centred = v - mean
            # a reward equal to its group's mean up to float rounding (0.2 in 0.1, 0.2, 0.3
            # leaves ~1e-17) has no advantage: it is neither trained nor counted informative
            if std < eps or abs(centred) < ROUNDING * max(abs(v), abs(mean), 1.0):
                centred = 0.0
            advantages[i] = centred / (std + eps) if normalize_std and std >= eps else centred
    return advantages


def informative_groups(advantages: Sequence[float], group_ids: Sequence[int]) -> set[int]:
    """Groups with at least one non-zero advantage: the only ones that produce a gradient."""
    return {g for a, g in zip(advantages, group_ids, strict=True) if a != 0.0}


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> torch.Tensor:
    """Per-token PPO clipped surrogate (to minimise), shape [batch, tokens], zero where mask=0."""
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    return -torch.minimum(unclipped, clipped) * mask


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    total_tokens: float,
    total_sequences: float,
    norm_length: int,
) -> torch.Tensor:
    """Reduce a micro-batch's per-token loss with denominators taken over the WHOLE step.

    Using step-level denominators makes the sum over micro-batches equal to the loss of the
    full batch, so micro-batching (and skipping zero-advantage rollouts) does not change it.
      token-mean: sum of token losses / tokens in the step (every token weighs the same, so
        a large group weighs more: DAPO's choice).
      seq-mean-token-mean: mean over sequences of each sequence's token mean (GRPO paper).
      seq-mean-token-sum-norm: token sums / (sequences * norm_length) (Dr. GRPO).
    """
    if mode == "token-mean":
        return token_loss.sum() / max(total_tokens, 1)
    if mode == "seq-mean-token-mean":
        per_seq = token_loss.sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / max(total_sequences, 1)
    if mode == "seq-mean-token-sum-norm":
        return token_loss.sum() / (max(total_sequences, 1) * norm_length)
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {LOSS_AGGREGATIONS}")
