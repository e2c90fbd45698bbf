"""The policy update: log-probs of the responses, PPO-clipped loss (plus an optional KL penalty
to the initial policy) aggregated over the whole step, AdamW. Rollouts whose advantage is zero
skip the backward pass (exact: their loss term is zero; with a KL penalty they are kept).

Besides loss and grad norm it reports the health metrics the anchors log: clip_fraction (share
of response tokens whose probability ratio to the rollout policy left the clip range) and
approx_kl (CleanRL's k3 estimate of KL(rollout policy || updated policy), token mean). With one
PPO epoch the update starts at the rollout policy, so both are exactly 0 -- except for reused
profile samples (sgpo.reuse), whose rollout policy is the initial one (the behaviour policy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_scheduler

from sgpo.config import TrainConfig
from sgpo.core.advantages import aggregate_loss, clipped_policy_loss
from sgpo.core.flops import ModelShape, logprob_flops, train_flops
from sgpo.errors import NonFiniteError
from sgpo.models import Policy, model_shape
from sgpo.rollouts import Rollout


def response_logprobs(
    policy: Policy, rollouts: list[Rollout], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each rollout's response tokens under policy.model sampled at temperature
    (softmax of logits / temperature, the distribution the engine drew from): ([B, T], mask
    [B, T])."""
    pad = policy.tokenizer.pad_token_id
    seqs = [r.completion.prompt_ids + r.completion.response_ids for r in rollouts]
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=policy.device)
    attention = torch.tensor(
        [[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=policy.device
    )
    logits = policy.model(input_ids=input_ids, attention_mask=attention).logits.float()
    logits = logits / temperature
    token_logprobs = (
        torch.log_softmax(logits[:, :-1], dim=-1)
        .gather(-1, input_ids[:, 1:].unsqueeze(-1))
        .squeeze(-1)
    )  # [B, width-1]: log p(token t+1 | tokens <= t)
    prompt_len = torch.tensor(
        [len(r.completion.prompt_ids) for r in rollouts], device=policy.device
    )
    resp_len = torch.tensor(
        [len(r.completion.response_ids) for r in rollouts], device=policy.device
    )
    steps = torch.arange(int(resp_len.max()), device=policy.device)
    positions = (prompt_len.unsqueeze(1) - 1 + steps).clamp(max=width - 2)
    mask = (steps.unsqueeze(0) < resp_len.unsqueeze(1)).float()
    return token_logprobs.gather(1, positions) * mask, mask


PerSequenceFlops = Callable[[ModelShape, int, int], float]


def sequence_flops(
    shape: ModelShape, rollouts: list[Rollout], per_sequence: PerSequenceFlops
) -> float:
    """FLOPs of one pass over the rollouts (per_sequence: logprob_flops or train_flops)."""
    return sum(
        per_sequence(shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
        for r in rollouts
    )


@dataclass
class Health:
    """Token counts behind clip_fraction and approx_kl, summed over a step's micro-batches."""

    tokens: float = 0.0
    clipped: float = 0.0
    kl_sum: float = 0.0

    def add(
        self, logprobs: torch.Tensor, old: torch.Tensor, mask: torch.Tensor, cfg: TrainConfig
    ) -> None:
        log_ratio = (logprobs - old).detach()
        ratio = torch.exp(log_ratio)
        outside = (ratio < 1.0 - cfg.clip_low) | (ratio > 1.0 + cfg.clip_high)
        self.tokens += float(mask.sum())
        self.clipped += float((outside.float() * mask).sum())
        self.kl_sum += float((((ratio - 1.0) - log_ratio) * mask).sum())

    def record(self) -> dict:
        tokens = max(self.tokens, 1.0)
        return {"clip_fraction": self.clipped / tokens, "approx_kl": self.kl_sum / tokens}


class PolicyUpdate:
    """Optimizer, lr schedule and the step's update; FLOPs are charged to the run's counters."""

    def __init__(
        self,
        cfg: TrainConfig,
        policy: Policy,
        reference: Policy | None,
        shape: ModelShape,
        norm_length: int,
        behaviour: Policy | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.temperature = temperature  # the rollouts' (RunConfig.rollout_temperature)
        self.norm_length = norm_length  # Dr. GRPO's constant: sampling.max_new_tokens
        self.policy = policy
        self.reference = reference
        self.behaviour = behaviour  # the initial policy, which drew reused profile samples
        self.shape = shape
        # the initial policy's passes at its own size: a LoRA policy's adapter is not in it
        initial = reference or behaviour
        self.initial_shape = model_shape(initial.model) if initial is not None else shape
        trainable = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay
        )
        self.lr_schedule = get_scheduler(
            cfg.lr_schedule if cfg.lr_schedule != "constant" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_training_steps=cfg.steps,
        )

    def _fixed_logprobs(
        self, micro: list[list[Rollout]], flops: dict[str, float]
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Per micro-batch: the rollout policy's log-probs (only needed with several PPO epochs
        or reused rollouts; with one epoch the current policy is a fresh rollout's rollout
        policy) and the reference's (KL penalty)."""
        old: list[torch.Tensor | None] = [None] * len(micro)
        ref: list[torch.Tensor | None] = [None] * len(micro)
        with torch.no_grad():
            for i, mb in enumerate(micro):
                if self.cfg.ppo_epochs > 1 or any(r.reused for r in mb):
                    old[i] = self._old_logprobs(mb, flops)
                if self.reference is not None:
                    ref[i] = response_logprobs(self.reference, mb, self.temperature)[0]
                    flops["logprob"] += sequence_flops(self.initial_shape, mb, logprob_flops)
        return old, ref

    def _old_logprobs(self, mb: list[Rollout], flops: dict[str, float]) -> torch.Tensor:
        """[B, T] rollout-policy log-probs: the behaviour policy's for reused rollouts, the
        current policy's for fresh ones with several PPO epochs. NaN rows (fresh, one epoch)
        are filled with the current log-probs in _micro_batch_loss."""
        width = max(len(r.completion.response_ids) for r in mb)
        old = torch.full((len(mb), width), float("nan"), device=self.policy.device)
        sources = [(self.behaviour, self.initial_shape, [j for j, r in enumerate(mb) if r.reused])]
        if self.cfg.ppo_epochs > 1:
            sources.append((self.policy, self.shape, [j for j, r in enumerate(mb) if not r.reused]))
        for model, shape, rows in sources:
            if rows:
                assert model is not None, "reused rollouts need PolicyUpdate(behaviour=...)"
                part = [mb[j] for j in rows]
                values = response_logprobs(model, part, self.temperature)[0]
                old[rows, : values.shape[1]] = values.to(old.device)
                flops["logprob"] += sequence_flops(shape, part, logprob_flops)
        return old

    def _micro_batch_loss(
        self, mb: list[Rollout], old: torch.Tensor | None, ref: torch.Tensor | None, totals: tuple
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(aggregated loss, log-probs, rollout-policy log-probs, mask) of one micro-batch."""
        cfg = self.cfg
        logprobs, mask = response_logprobs(self.policy, mb, self.temperature)
        old = logprobs.detach() if old is None else torch.where(old.isnan(), logprobs.detach(), old)
        adv = torch.tensor([r.advantage for r in mb], device=logprobs.device)
        token_loss = clipped_policy_loss(logprobs, old, adv, mask, cfg.clip_low, cfg.clip_high)
        if ref is not None:
            log_ratio = ref - logprobs
            token_loss = token_loss + cfg.kl_coef * (torch.exp(log_ratio) - log_ratio - 1) * mask
        weights = torch.tensor([r.weight for r in mb], device=logprobs.device)
        token_loss = token_loss * weights[:, None]  # 1 unless a down-sampled group's response
        loss = aggregate_loss(token_loss, mask, cfg.loss_aggregation, *totals)
        return loss, logprobs, old, mask

    def train_on(
        self,
        batch: list[Rollout],
        flops: dict[str, float],
        loss_scope: list[Rollout] | None = None,
    ) -> dict:
        """PPO-clipped update(s) on the batch; returns loss, grad norm and health metrics. The
        loss's denominators count loss_scope's tokens and responses (default: the batch's; a
        batch whose dead groups were dropped may pass the batch before the drop)."""
        cfg = self.cfg
        scope = batch if loss_scope is None else loss_scope
        # Step-level denominators: micro-batching and skipping do not change the loss. A
        # weighted response counts as the responses it stands for (down-sampled groups).
        totals = (
            sum(r.weight * len(r.completion.response_ids) for r in scope),
            sum(r.weight for r in scope),
            self.norm_length,
        )
        # Zero advantage and no KL -> the loss term is exactly zero: skip the backward pass.
        trained = [r for r in batch if r.advantage != 0.0 or cfg.kl_coef > 0]
        dead = [] if cfg.kl_coef > 0 else [r for r in batch if r.advantage == 0.0]
        if not trained:
            # No optimizer step (verl and TRL would take one with zero gradients, which
            # AdamW's momentum still moves: the one step where "the same update" does not hold)
            return {
                "loss": 0.0,
                "grad_norm": 0.0,
                "trained_rollouts": 0,
                "skipped_update": False,
                "flops_skipped": self.skipped_flops(dead),
                **Health().record(),
            }
        micro = [
            trained[i : i + cfg.micro_batch_size]
            for i in range(0, len(trained), cfg.micro_batch_size)
        ]
        old_logprobs, ref_logprobs = self._fixed_logprobs(micro, flops)
        losses, norms, skipped, health = [], [], False, Health()
        self.policy.model.train()
        for _ in range(cfg.ppo_epochs):
            step_loss = 0.0
            for i, mb in enumerate(micro):
                loss, logprobs, old, mask = self._micro_batch_loss(
                    mb, old_logprobs[i], ref_logprobs[i], totals
                )
                loss.backward()
                step_loss += loss.item()
                health.add(logprobs, old, mask, cfg)
                flops["train"] += sequence_flops(self.shape, mb, train_flops)
            grad_norm = self._optimizer_step(step_loss)
            if grad_norm is None:
                skipped = True
                break
            losses.append(step_loss)
            norms.append(grad_norm)
        return {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "grad_norm": float(np.mean(norms)) if norms else float("nan"),
            "trained_rollouts": len(trained),
            "skipped_update": skipped,
            # as many epochs as the trained rollouts got: the finite ones, and a non-finite
            # one that ended the step
            "flops_skipped": self.skipped_flops(dead, len(losses) + skipped),
            **health.record(),
        }

    def skipped_flops(self, skipped: list[Rollout], epochs: int | None = None) -> float:
        """What the passes this trainer skips on zero-advantage rollouts would cost in a trainer
        that trains every rollout (verl, TRL, OpenRLHF): the same log-prob passes and PPO
        epochs (epochs: those the step ran, default all). Under token-mean over the batch their
        loss term is zero, so the update is the same either way: this is exact accounting, not
        an estimate."""
        epochs = self.cfg.ppo_epochs if epochs is None else epochs
        logprob_passes = (self.cfg.ppo_epochs > 1) + (self.reference is not None)
        # A reused rollout's old log-probs take one behaviour pass whatever the epochs.
        behaviour_only = [r for r in skipped if r.reused] if self.cfg.ppo_epochs == 1 else []
        return (
            epochs * sequence_flops(self.shape, skipped, train_flops)
            + logprob_passes * sequence_flops(self.shape, skipped, logprob_flops)
            + sequence_flops(self.shape, behaviour_only, logprob_flops)
        )

    def _optimizer_step(self, step_loss: float) -> float | None:
        """Clip and apply the gradient; None (and no step) when loss or gradient is not finite."""
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
        finite = np.isfinite(step_loss) and np.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            # a finite gradient can still overflow the optimizer's arithmetic in the weights'
            # dtype; weights gone non-finite would train on silently (every group all wrong)
            # one fused pass, no weight-sized temporaries: a non-finite weight makes its norm so
            if not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
                broken = sum(int((~torch.isfinite(p)).sum()) for p in params)
                raise NonFiniteError(
                    f"the optimizer step made {broken} weights non-finite ({params[0].dtype}) "
                    "from a finite loss and gradient; nothing was saved after it, so the run's "
                    "last checkpoint holds finite weights: lower train.lr, or train in float32 "
                    "if this is not"
                )
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm if finite else None
