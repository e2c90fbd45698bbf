"""A verl 0.9.1 replay buffer that down-samples each step's groups (PODS) before training.

The launch scripts select it when the plan's config sets train.downsample_to (export metadata
"downsample_to", or DOWNSAMPLE_TO=N):
    trainer.v1.sampler.custom_sampler.path=pkg://sgpo.verl.sampler
    trainer.v1.sampler.custom_sampler.name=DownsampleReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.downsample_to=N
verl's sync trainer takes each step's batch from ReplayBuffer.sample (trainer/ppo/v1/
trainer_base.py) after the rollouts have their rule-based rewards (rm_scores) and before the
log-prob passes and the advantage. This subclass lets verl pick the step's groups as usual,
then keeps each group's N most varied trajectories (sgpo.verl.downsample) and clears the others
from the TransferQueue: they were generated and are never trained. Their number is logged as
training/sgpo/downsampled_samples, which `sgpo flops` charges as generation only. Validation
batches are left whole. It needs the rewards at sampling time, as verl's DAPO filter does
(rule-based rewards, which the launch uses, or reward.reward_model.enable_resource_pool), and
single-turn rollouts (one trajectory per session). This module imports verl; the rest of
sgpo.verl does not.
"""

from __future__ import annotations

import dataclasses

import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from sgpo.verl.downsample import DOWNSAMPLED_METRIC, downsample_keys


class DownsampleReplayBuffer(ReplayBuffer):
    """verl's sync ReplayBuffer, with every training group cut to its `downsample_to` most
    varied trajectories (sampler_kwargs.downsample_to, >= 2)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - verl's signature
        super().__init__(*args, **kwargs)
        size = (self.sampler_kwargs or {}).get("downsample_to")
        if not isinstance(size, int) or size < 2:
            raise ValueError(
                "DownsampleReplayBuffer needs trainer.v1.sampler.sampler_kwargs.downsample_to "
                f"as an integer >= 2, got {size!r}"
            )
        self.downsample_to = size

    def sample(self, global_steps: int, partition_id: str, batch_size: int):  # noqa: ANN201
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == "val" or not batch.keys:
            return batch, metrics
        scores = tq.kv_batch_get(
            keys=batch.keys, partition_id=partition_id, select_fields=["rm_scores"]
        )["rm_scores"]
        rewards = [float(s.sum().item()) for s in scores]
        kept = set(downsample_keys(batch.keys, rewards, self.downsample_to))
        dropped = [k for k in batch.keys if k not in kept]
        if dropped:
            tq.kv_clear(partition_id=partition_id, keys=dropped)
        tags = [t for k, t in zip(batch.keys, batch.tags, strict=True) if k in kept]
        batch = dataclasses.replace(batch, keys=[k for k in batch.keys if k in kept], tags=tags)
        return batch, {**metrics, DOWNSAMPLED_METRIC: len(dropped)}
