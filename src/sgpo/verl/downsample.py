"""PODS down-sampling on verl: which trajectories of a step's batch are trained.

verl 0.9.1's v1 trainer stores each rollout under the key ``{uid}_{session_id}_{index}``
(trainer/ppo/v1/replay_buffer.py), where uid names the prompt's group. A group larger than
``size`` keeps only the ``size`` trajectories whose rewards vary most (sgpo.core.advantages.
max_variance_indices, as sGPO's own trainer with train.downsample_to and advantages within the
subset); verl's GRPO advantage, computed per uid afterwards, then sees only the subset. With
train.drop_equal_groups a group whose rewards are all equal is not trained at all; with
train.drop_equal_denominator generated as well, the kept trajectories' advantages are scaled so
that verl's token-mean over the trained tokens is sGPO's over the whole batch
(whole_batch_scale). Pure functions: the verl sampler that applies them is sgpo.verl.sampler.
"""

from __future__ import annotations

from collections.abc import Sequence

from sgpo.core.advantages import max_variance_indices
from sgpo.core.rewards import all_equal

# Logged by sgpo.verl.sampler each step; sgpo.verl.flops charges them as generated, not trained.
DOWNSAMPLED_METRIC = "training/sgpo/downsampled_samples"
# ... and their prompt and response tokens, which sgpo.verl.flops charges them at (verl's mean
# lengths are the trained batch's, and a group cut or dropped is no typical one)
DOWNSAMPLED_PROMPT_TOKENS_METRIC = "training/sgpo/downsampled_prompt_tokens"
DOWNSAMPLED_RESPONSE_TOKENS_METRIC = "training/sgpo/downsampled_response_tokens"
# Logged by sgpo.verl.sampler with the whole batch's denominator: the step's whole_batch_scale.
ADVANTAGE_SCALE_METRIC = "training/sgpo/advantage_scale"
# verl's GRPO advantage times the step's whole_batch_scale (registered by sgpo.verl.sampler).
WHOLE_BATCH_ESTIMATOR = "sgpo_grpo_whole_batch"


def group_of(key: str) -> str:
    """The prompt uid of a verl v1 trajectory key (as verl's ReplayBuffer splits it)."""
    return key.split("_")[0]


def downsample_keys(
    keys: Sequence[str], rewards: Sequence[float], size: int, drop_equal: bool = False
) -> list[str]:
    """The keys a step trains: every group of at most `size` whole (size 0: every group whole),
    larger ones cut to their `size` most varied trajectories; with drop_equal, a group whose
    rewards are all equal is not trained at all (sGPO's train.drop_equal_groups), unless every
    group is (verl cannot train an empty batch; their advantages are all zero). Returned in
    the input order."""
    if size != 0 and size < 2:
        raise ValueError(f"down-sampling keeps at least 2 of a group, got size {size}")
    if len(keys) != len(rewards):
        raise ValueError(f"{len(keys)} keys but {len(rewards)} rewards")
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(group_of(key), []).append(i)
    if drop_equal:
        mixed = {g: m for g, m in members.items() if not all_equal([rewards[i] for i in m])}
        members = mixed or members  # all dead: verl cannot train an empty batch
    kept: set[int] = set()
    for indices in members.values():
        chosen = max_variance_indices([rewards[i] for i in indices], size or len(indices))
        kept.update(indices[c] for c in chosen)
    return [key for i, key in enumerate(keys) if i in kept]


def whole_batch_scale(
    keys: Sequence[str], rewards: Sequence[float], response_lengths: Sequence[int], size: int
) -> float:
    """The factor on the advantages of a step's trained trajectories, dead groups dropped, that
    makes verl's token-mean over the trained tokens the token-mean over the whole batch (PODS
    applied, dead groups included), as sGPO's trainer takes it with train.drop_equal_denominator
    generated: trained tokens / whole batch's tokens. Exact, not approximate: a dead group's
    advantages are zero (a group is dead when its rewards' std is below 1e-6, sgpo's rule,
    core.rewards.all_equal; verl's own GRPO would give rewards closer than that a tiny
    advantage, scaled up by NORM_ADV_BY_STD), so its tokens add nothing to the loss's sum, and
    PPO's clipped loss
    (dual clip included) is positively homogeneous in the advantage, so scaling the advantage
    scales every kept token's loss term alike."""
    if not len(keys) == len(rewards) == len(response_lengths):
        raise ValueError(
            f"{len(keys)} keys, {len(rewards)} rewards, {len(response_lengths)} response lengths"
        )
    tokens = dict(zip(keys, response_lengths, strict=True))
    batch = sum(tokens[k] for k in downsample_keys(keys, rewards, size))
    trained = sum(tokens[k] for k in downsample_keys(keys, rewards, size, drop_equal=True))
    return trained / batch if batch else 1.0
