"""verl 0.9.1 extensions that carry sGPO variant settings into verl's own training loop: PODS
down-sampling (DownsampleReplayBuffer) and GRESO's skip on history (HistoryReplayBuffer with
HistoryDataset). This module imports verl; the rest of sgpo.verl does not.

PODS (train.downsample_to; export metadata "downsample_to", or DOWNSAMPLE_TO=N):
    trainer.v1.sampler.custom_sampler.path=pkg://sgpo.verl.sampler
    trainer.v1.sampler.custom_sampler.name=DownsampleReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.downsample_to=N
verl's sync trainer takes each step's batch from ReplayBuffer.sample (trainer/ppo/v1/
trainer_base.py) after the rollouts have their rule-based rewards (rm_scores) and before the
log-prob passes and the advantage. The buffer lets verl pick the step's groups as usual, then
keeps each group's N most varied trajectories (sgpo.verl.downsample) and clears the others
from the TransferQueue: they were generated and are never trained. Their number is logged as
training/sgpo/downsampled_samples, which `sgpo flops` charges as generation only. Validation
batches are left whole. It needs the rewards at sampling time, as verl's DAPO filter does
(rule-based rewards, which the launch uses, or reward.reward_model.enable_resource_pool), and
single-turn rollouts (one trajectory per session).

Dead groups dropped (train.drop_equal_groups; export metadata "drop_equal_groups", or
DROP_EQUAL_GROUPS=1): the same buffer with +trainer.v1.sampler.sampler_kwargs.drop_equal_groups=
true also clears every group whose rewards are all equal (unless all are: verl cannot train an
empty batch), logged with the down-sampled ones: generated, never trained.

The whole batch's denominator (train.drop_equal_denominator generated; export metadata
"drop_equal_denominator", or DROP_EQUAL_DENOMINATOR=generated): verl's token-mean divides by the
tokens it trains, so dropping dead groups alone makes each step larger (sGPO's "kept"). With
+trainer.v1.sampler.sampler_kwargs.drop_equal_denominator=generated and
algorithm.adv_estimator=sgpo_grpo_whole_batch, the buffer computes each step's trained tokens /
whole batch's tokens (sgpo.verl.downsample.whole_batch_scale) and the estimator multiplies
verl's GRPO advantages by it: the loss is then the token-mean over the whole batch, dead groups'
zero terms included, i.e. the update without the drop, exactly when a step is one optimizer
step (one mini-batch, ppo_epochs any). The buffer refuses a config where this would not hold
(another estimator, loss_agg_mode or policy loss, an entropy or KL loss term) and a step that
trains more than one mini-batch (actor.ppo_mini_batch_size * rollout.n trajectories). Buffer and
estimator run in verl's trainer process, sample() before the advantage of the same batch; the
estimator checks that the scale it takes was made for a batch of its size.

Skip on history (train.history_explore < 1; export metadata "history_explore" etc.):
    data.custom_cls.path=pkg://sgpo.verl.sampler  data.custom_cls.name=HistoryDataset
    +data.sgpo_history.{explore,min_streak,target,seed}=...
    data.gen_batch_size=1  data.dataloader_num_workers=0
    trainer.v1.sampler.custom_sampler.name=HistoryReplayBuffer (path as above)
    [+trainer.v1.sampler.sampler_kwargs.downsample_to=N]
verl 0.9.1 offers no dataloader-sampler hook (see sgpo.verl.history), so the dataset decides
each drawn row's visit (sgpo.verl.history.HistorySkip) and gives a skipped one
__rollout_n__ = 0: verl starts no session for it. The buffer evicts those empty groups through
verl's failed-group path, which refills the step with as many next rows (refill_fn, one row per
dataloader fetch: gen_batch_size 1), and reports the step's generated groups back to the
dataset. The dataloader must run in the trainer's process (no workers: a worker's copy of the
dataset would never see the streaks), and it draws a step's rows when the step starts, after
the previous step's rewards are in, so decisions lag by at most the step being generated.
The dataset's state rides in verl's dataloader checkpoint (StatefulDataLoader saves a
dataset's state_dict), so a resumed run skips alike.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf
from transfer_queue import KVBatchMeta
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.dataset.rl_dataset import RLHFDataset

from sgpo.verl.downsample import (
    ADVANTAGE_SCALE_METRIC,
    DOWNSAMPLED_METRIC,
    DOWNSAMPLED_PROMPT_TOKENS_METRIC,
    DOWNSAMPLED_RESPONSE_TOKENS_METRIC,
    WHOLE_BATCH_ESTIMATOR,
    downsample_keys,
    group_of,
    whole_batch_scale,
)
from sgpo.verl.export import ROLLOUT_N
from sgpo.verl.history import (
    GENERATED_METRIC,
    HISTORY_EXPLORE_METRIC,
    HISTORY_REPEATED_METRIC,
    HISTORY_SKIPPED_METRIC,
    HistorySkip,
)

# verl's metric for evicted failed groups: the history buffer's only evictions are its skips.
FAILURE_EVICTED_METRIC = "training/rollout_failure/evicted_samples"
# What the whole batch's denominator needs of the trainer config (path, value), and why.
WHOLE_BATCH_CONFIG = (
    ("algorithm.adv_estimator", WHOLE_BATCH_ESTIMATOR, "the estimator that applies the scale"),
    ("actor_rollout_ref.actor.loss_agg_mode", "token-mean", "the scale is a token ratio"),
    (
        "actor_rollout_ref.actor.policy_loss.loss_mode",
        "vanilla",
        "PPO's clipped loss scales with the advantage",
    ),
    ("actor_rollout_ref.actor.entropy_coeff", 0, "only the advantage term is scaled"),
    ("actor_rollout_ref.actor.use_kl_loss", False, "only the advantage term is scaled"),
)


class PendingScale:
    """One step's advantage scale, from the buffer's sample() to the advantage estimator."""

    def __init__(self) -> None:
        self.pending: tuple[int, float] | None = None

    def put(self, trajectories: int, scale: float) -> None:
        self.pending = (trajectories, scale)

    def take(self, trajectories: int) -> float:
        pending, self.pending = self.pending, None
        if pending is None:
            raise RuntimeError(
                f"algorithm.adv_estimator={WHOLE_BATCH_ESTIMATOR} needs "
                "trainer.v1.sampler.custom_sampler DownsampleReplayBuffer or HistoryReplayBuffer "
                "(pkg://sgpo.verl.sampler) with sampler_kwargs.drop_equal_denominator=generated"
            )
        if pending[0] != trajectories:
            raise RuntimeError(
                f"{WHOLE_BATCH_ESTIMATOR}: the scale was computed for {pending[0]} trajectories, "
                f"the advantage is asked for {trajectories} (only verl's sync trainer is supported)"
            )
        return pending[1]


STEP_SCALE = PendingScale()
PADDING_UID_PREFIX = "pad"  # verl.trainer.ppo.padding_utils.upsample_batch_to_divisible_size


@core_algos.register_adv_est(WHOLE_BATCH_ESTIMATOR)
def grpo_whole_batch_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: DictConfig | None = None,
    **_: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's GRPO advantage (algorithm.norm_adv_by_std_in_grpo honoured) times the step's
    whole_batch_scale from the replay buffer."""
    norm_by_std = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    advantages, _returns = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards, response_mask, index, norm_adv_by_std_in_grpo=norm_by_std
    )
    # verl pads the batch to a divisible size before the advantage (_balance_batch,
    # padding_utils): its padding trajectories carry a "pad" uid and a zero response mask, and
    # the buffer's scale counted only real ones
    real = sum(not str(uid).startswith(PADDING_UID_PREFIX) for uid in index)
    scaled = advantages * STEP_SCALE.take(real)
    return scaled, scaled


class DownsampleReplayBuffer(ReplayBuffer):
    """verl's sync ReplayBuffer, with every training group cut to its `downsample_to` most
    varied trajectories (sampler_kwargs.downsample_to, >= 2), and with
    sampler_kwargs.drop_equal_groups the groups whose rewards are all equal cleared (then
    downsample_to may be 0: mixed groups trained whole)."""

    downsample_required = True  # HistoryReplayBuffer: optional (0 = whole groups)
    fields = ["rm_scores"]  # what sample() reads of each trajectory

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - verl's signature
        super().__init__(*args, **kwargs)
        drop_equal = (self.sampler_kwargs or {}).get("drop_equal_groups", False)
        if not isinstance(drop_equal, bool):
            raise ValueError(
                f"trainer.v1.sampler.sampler_kwargs.drop_equal_groups must be true or false, "
                f"got {drop_equal!r}"
            )
        optional = drop_equal or not self.downsample_required
        size = (self.sampler_kwargs or {}).get("downsample_to", None)
        if size is None and optional:
            size = 0
        if not isinstance(size, int) or not (size >= 2 or (size == 0 and optional)):
            raise ValueError(
                f"{type(self).__name__} needs trainer.v1.sampler.sampler_kwargs.downsample_to "
                f"as an integer >= 2, got {size!r}"
            )
        self.downsample_to = size
        self.drop_equal_groups = drop_equal
        denominator = (self.sampler_kwargs or {}).get("drop_equal_denominator", "kept")
        if denominator not in ("kept", "generated") or (
            denominator == "generated" and not drop_equal
        ):
            raise ValueError(
                "trainer.v1.sampler.sampler_kwargs.drop_equal_denominator must be kept or "
                f"generated, and generated needs drop_equal_groups=true; got {denominator!r}"
            )
        self.whole_batch_denominator = denominator == "generated"
        if self.whole_batch_denominator:
            # verl passes the buffer only trainer.v1.<mode>; refill_fn is bound to the trainer
            # (trainer_base._build_replay_buffer), which holds the whole config.
            self.mini_batch_trajectories = check_whole_batch_config(
                getattr(getattr(self.refill_fn, "__self__", None), "config", None)
            )

    def sample(
        self, global_steps: int, partition_id: str, batch_size: int
    ) -> tuple[KVBatchMeta, dict]:
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == "val" or not batch.keys:
            return batch, metrics
        fields = tq.kv_batch_get(
            keys=batch.keys, partition_id=partition_id, select_fields=self.fields
        )
        rewards = [float(s.sum().item()) for s in fields["rm_scores"]]
        return self.train_batch(batch, metrics, rewards, fields)

    def train_batch(
        self, batch: KVBatchMeta, metrics: dict, rewards: list[float], fields: dict
    ) -> tuple[KVBatchMeta, dict]:
        """The step's training batch from the groups verl picked (rewards per trajectory)."""
        if not (self.downsample_to or self.drop_equal_groups):
            return batch, metrics
        kept = set(downsample_keys(batch.keys, rewards, self.downsample_to, self.drop_equal_groups))
        if self.whole_batch_denominator:
            if len(kept) > self.mini_batch_trajectories:
                raise RuntimeError(
                    f"sampler_kwargs.drop_equal_denominator=generated: this step trains "
                    f"{len(kept)} trajectories, more than one mini-batch "
                    f"(actor.ppo_mini_batch_size * rollout.n = {self.mini_batch_trajectories}); "
                    "verl would normalise each mini-batch by its own tokens, so the update "
                    "would not be the whole batch's (examples/verl: ONE_UPDATE_PER_STEP=1)"
                )
            lengths = [int(tag["response_len"]) for tag in batch.tags]
            scale = whole_batch_scale(batch.keys, rewards, lengths, self.downsample_to)
            STEP_SCALE.put(len(kept), scale)
            metrics = {**metrics, ADVANTAGE_SCALE_METRIC: scale}
        dropped = [k for k in batch.keys if k not in kept]
        if dropped:
            tq.kv_clear(partition_id=batch.partition_id, keys=dropped)
        metrics = {**metrics, DOWNSAMPLED_METRIC: len(dropped)}
        dropped_tags = [t for k, t in zip(batch.keys, batch.tags, strict=True) if k not in kept]
        if all("prompt_len" in t and "response_len" in t for t in dropped_tags):
            metrics[DOWNSAMPLED_PROMPT_TOKENS_METRIC] = sum(
                int(t["prompt_len"]) for t in dropped_tags
            )
            metrics[DOWNSAMPLED_RESPONSE_TOKENS_METRIC] = sum(
                int(t["response_len"]) for t in dropped_tags
            )
        tags = [t for k, t in zip(batch.keys, batch.tags, strict=True) if k in kept]
        batch = dataclasses.replace(batch, keys=[k for k in batch.keys if k in kept], tags=tags)
        return batch, metrics


def check_whole_batch_config(config: DictConfig | None) -> int:
    """Refuse a verl config where scaling the advantages would not give the whole batch's
    token-mean (WHOLE_BATCH_CONFIG); returns how many trajectories one mini-batch holds
    (actor.ppo_mini_batch_size * rollout.n), the most a step may train for the scale to be
    exact."""
    if config is None:
        raise ValueError(
            "sampler_kwargs.drop_equal_denominator=generated needs the buffer built by verl's "
            "trainer (refill_fn bound to it), to check the trainer's config"
        )
    for path, wanted, why in WHOLE_BATCH_CONFIG:
        value = OmegaConf.select(config, path)
        if value != wanted:
            raise ValueError(
                f"sampler_kwargs.drop_equal_denominator=generated needs {path}={wanted} ({why}), "
                f"got {value!r}"
            )
    prompts = OmegaConf.select(config, "actor_rollout_ref.actor.ppo_mini_batch_size")
    rollout_n = OmegaConf.select(config, "actor_rollout_ref.rollout.n")
    if not (isinstance(prompts, int) and isinstance(rollout_n, int)):
        raise ValueError(
            "sampler_kwargs.drop_equal_denominator=generated needs integer "
            "actor_rollout_ref.actor.ppo_mini_batch_size and actor_rollout_ref.rollout.n, got "
            f"{prompts!r} and {rollout_n!r}"
        )
    return prompts * rollout_n


def _files(files: object) -> list[str]:
    """data.train_files / val_files (a path or a list of them) as a list of text."""
    if files is None:
        return []
    return [str(files)] if isinstance(files, str) else [str(f) for f in files]


class HistoryDataset(RLHFDataset):
    """verl's RLHFDataset whose rows skip visits on history: a drawn row whose visit
    HistorySkip skips gets __rollout_n__ = 0 (no rollout). Settings from data.sgpo_history
    (explore, min_streak, target, seed); needs data.gen_batch_size=1 (HistoryReplayBuffer
    refills row by row) and data.dataloader_num_workers=0 (the streaks live in this object).
    verl builds the validation dataset with the same class: one built from data.val_files
    (other files than data.train_files) draws every row, without the skip's bookkeeping
    (nothing reports its steps, so its rows would stay in flight)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - verl's signature
        super().__init__(*args, **kwargs)
        settings = self.config.get("sgpo_history")
        if settings is None:
            raise ValueError(
                "HistoryDataset needs data.sgpo_history.{explore,min_streak,target,seed}"
            )
        if self.config.get("gen_batch_size") != 1 or self.config.get("dataloader_num_workers") != 0:
            raise ValueError(
                "HistoryDataset needs data.gen_batch_size=1 and data.dataloader_num_workers=0: "
                "skipped rows are refilled one at a time, and the dataloader must draw rows in "
                "the trainer's process, where the streaks are"
            )
        # sgpo's export names each row's query; a held-out parquet from elsewhere (verl builds
        # the validation set with this class too, and it never skips), without extra_info or
        # with a query id twice, is keyed by row
        infos = (
            self.dataframe["extra_info"]
            if "extra_info" in self.dataframe.column_names
            else [None] * len(self.dataframe)
        )
        named = [info.get("query_id") if isinstance(info, dict) else None for info in infos]
        unique = None not in named and len(set(named)) == len(named)
        self.query_ids = named if unique else [f"row:{i}" for i in range(len(named))]
        # the validation set's instance: data.val_files, not train_files (as given, before
        # verl copies remote files to a local cache)
        given, train = _files(self.original_data_files), _files(self.config.get("train_files"))
        self.validation = given == _files(self.config.get("val_files")) and given != train
        self.history = HistorySkip(
            self.query_ids,
            explore=float(settings.explore),
            seed=int(settings.seed),
            min_streak=int(settings.min_streak),
            target=float(settings.target),
        )

    def __getitem__(self, item: int) -> dict:
        row = super().__getitem__(item)
        if self.validation:
            return row
        if not self.history.draw(self.query_ids[item]):
            row[ROLLOUT_N] = 0  # agent_loop_tq._run_prompt then starts no session
        return row

    # torchdata's StatefulDataLoader saves and restores these with verl's checkpoint (data.pt).
    def state_dict(self) -> dict:
        return self.history.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.history.load_state_dict(state)


class HistoryReplayBuffer(DownsampleReplayBuffer):
    """verl's sync ReplayBuffer for HistoryDataset: groups that finished with no trajectory
    (skipped visits) are evicted and refilled as verl refills failed groups, each training
    batch's groups are reported to the dataset, and PODS applies too when
    sampler_kwargs.downsample_to is set."""

    downsample_required = False
    fields = ["rm_scores", "extra_info"]

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - verl's signature
        super().__init__(*args, **kwargs)
        if self.refill_fn is None:
            raise ValueError("HistoryReplayBuffer needs verl's refill_fn to replace skipped rows")

    @property
    def history(self) -> HistorySkip:
        # verl injects the trainer's bound _add_prompts_to_generate as refill_fn
        # (trainer/ppo/v1/trainer_base.py:161): its trainer holds the train dataset.
        dataset = getattr(self.refill_fn.__self__, "train_dataset", None)
        if not isinstance(dataset, HistoryDataset):
            raise TypeError(
                "HistoryReplayBuffer needs data.custom_cls HistoryDataset (pkg://sgpo.verl.sampler)"
            )
        return dataset.history

    def _terminal_eviction_reasons(
        self, global_steps: int, partition_id: str
    ) -> tuple[set[str], set[str], set[str], Counter]:
        stale, dapo, failed, counts = super()._terminal_eviction_reasons(global_steps, partition_id)
        if partition_id == "val":
            return stale, dapo, failed, counts
        # A finished group without trajectories started no session: a skipped visit. As a
        # "failed" group, verl's sync sample() evicts it and refills the step with one more row.
        with_trajectories = {group_of(key) for key in self.partitions[partition_id]}
        skipped = self.finished_keys[partition_id] - with_trajectories
        return stale, dapo, failed | skipped, counts

    def train_batch(
        self, batch: KVBatchMeta, metrics: dict, rewards: list[float], fields: dict
    ) -> tuple[KVBatchMeta, dict]:
        groups: dict[str, tuple[str, list[float]]] = {}
        for key, reward, info in zip(batch.keys, rewards, fields["extra_info"], strict=True):
            query_id = getattr(info, "data", info)["query_id"]  # a NonTensorData from the queue
            groups.setdefault(group_of(key), (query_id, []))[1].append(reward)
        history = self.history
        history.observe_step(list(groups.values()))
        metrics = {k: v for k, v in metrics.items() if k != FAILURE_EVICTED_METRIC}
        metrics |= {
            HISTORY_SKIPPED_METRIC: history.skipped,
            HISTORY_REPEATED_METRIC: history.repeated,
            HISTORY_EXPLORE_METRIC: history.explore,
            GENERATED_METRIC: len(batch.keys),
        }
        return super().train_batch(batch, metrics, rewards, fields)
