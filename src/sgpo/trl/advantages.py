"""TRL's group-relative advantages for groups of any size.

GRPOTrainer groups rewards with `view(-1, num_generations)`, which needs every group to have the
same size. This computes the same quantities (nan-aware group mean, Bessel-corrected std,
scale_rewards "group" / "batch" / "none", the 1e-4 in the denominator, NaN rewards -> zero
advantage) from an explicit group id per row, so groups keep their planned sizes. A group grown
until mixed trains only some of its responses; its statistics come from all of them.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import nanstd

STD_EPS = 1e-4  # GRPOTrainer's


def grouped_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    scale_rewards: str,
    whole_groups: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantage per row, whether the row's group std is zero) for rewards [rows] and group
    ids [rows]; rows with a negative group id (padding) get advantage 0 and count as zero-std.
    NaN rewards (unscorable rows) are left out of their group's statistics, as in TRL.
    whole_groups[g], when given, holds the rewards of every response group g drew (grown
    groups): its mean and std are the group's, the rows in the batch a subset of it."""
    advantages = torch.zeros_like(rewards)
    is_std_zero = torch.ones_like(rewards, dtype=torch.bool)
    real = group_ids >= 0
    zero = torch.zeros((), device=rewards.device)
    batch_std = nanstd(rewards[real]) if int(real.sum()) > 1 else zero
    for group in torch.unique(group_ids[real]).tolist():
        rows = group_ids == group
        values = rewards[rows]
        drawn = whole_groups[group] if whole_groups and group in whole_groups else values
        mean = torch.nanmean(drawn)
        std = nanstd(drawn) if drawn.numel() > 1 else zero
        centred = values - mean
        if scale_rewards == "group":
            centred = centred / (std + STD_EPS)
        elif scale_rewards == "batch":
            centred = centred / (batch_std + STD_EPS)
        elif scale_rewards != "none":
            raise ValueError(f"unknown scale_rewards {scale_rewards!r}")
        advantages[rows] = centred
        is_std_zero[rows] = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(advantages, nan=0.0), is_std_zero
