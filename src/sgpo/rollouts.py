"""A training step's rollouts: sample each scheduled query's group, score it with the verifier,
give every response its group-relative advantage. dapo over-samples and keeps only groups whose
rewards differ."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sgpo.config import RunConfig
from sgpo.core.advantages import group_advantages
from sgpo.core.flops import ModelShape, inference_flops
from sgpo.engine import Completion, GenerationEngine, SamplingParams, stream_seed
from sgpo.models import Policy
from sgpo.schedule import ScheduledQuery
from sgpo.tasks import Query
from sgpo.verify import Verifier


@dataclass
class Rollout:
    query: Query
    group: int  # index of its group within one generation round
    completion: Completion
    reward: float = 0.0
    advantage: float = 0.0


def group_members(rollouts: list[Rollout]) -> list[list[Rollout]]:
    """The rollouts of one generation round, group by group."""
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group, []).append(r)
    return list(groups.values())


def rollout_flops(shape: ModelShape, rollouts: list[Rollout]) -> list[float]:
    """Inference FLOPs of generating each rollout."""
    return [
        inference_flops(shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
        for r in rollouts
    ]


class RolloutCollector:
    """Generates and scores a step's groups. `next_queries(budget)` picks the step's queries
    (the scheduler's next ones, or an online allocation)."""

    def __init__(
        self,
        config: RunConfig,
        policy: Policy,
        engine: GenerationEngine,
        verifier: Verifier,
        params: SamplingParams,
    ) -> None:
        self.config = config
        self.policy = policy
        self.engine = engine
        self.verifier = verifier
        self.params = params

    def generate_groups(
        self, scheduled: list[ScheduledQuery], step: int, round_index: int
    ) -> list[Rollout]:
        """Each response from its own stream (run seed, step, round, query id, index)."""
        prompts, seeds, owners = [], [], []
        for gi, sq in enumerate(scheduled):
            rendered = self.policy.render(sq.query.prompt)
            for j in range(sq.group_size):
                prompts.append(rendered)
                labels = ("rollout", step, round_index, sq.query.query_id, j)
                seeds.append(stream_seed(self.config.seed, *labels))
                owners.append(gi)
        completions = self.engine.generate(prompts, seeds, self.params)
        rollouts = [
            Rollout(scheduled[g].query, g, c) for g, c in zip(owners, completions, strict=True)
        ]
        rewards = self.verifier.score(
            [r.completion.text for r in rollouts],
            [r.query.answer for r in rollouts],
            [r.query.query_id for r in rollouts],
        )
        advantages = group_advantages(rewards, owners, self.config.train.normalize_std)
        for r, reward, adv in zip(rollouts, rewards, advantages, strict=True):
            r.reward, r.advantage = reward, adv
        return rollouts

    def collect(
        self, step: int, next_queries: Callable[[int], list[ScheduledQuery]]
    ) -> tuple[list[Rollout], list[Rollout]]:
        """(all generated rollouts, the step's batch): the same list except for dapo."""
        if self.config.train.method == "dapo":
            return self._collect_dynamic(step, next_queries)
        rollouts = self.generate_groups(next_queries(self.config.train.rollout_budget), step, 0)
        return rollouts, rollouts

    def _collect_dynamic(
        self, step: int, next_queries: Callable[[int], list[ScheduledQuery]]
    ) -> tuple[list[Rollout], list[Rollout]]:
        """dapo: keep only groups whose rewards differ, refilling until the budget is full or
        the rounds run out."""
        cfg = self.config.train
        generated: list[Rollout] = []
        batch: list[Rollout] = []
        for round_index in range(cfg.dapo_max_rounds):
            rollouts = self.generate_groups(next_queries(cfg.rollout_budget), step, round_index)
            generated += rollouts
            for members in group_members(rollouts):
                if len(batch) + len(members) > cfg.rollout_budget:
                    break
                if any(m.advantage != 0.0 for m in members):
                    batch += members
            if len(batch) + cfg.group_size > cfg.rollout_budget:
                break
        return generated, batch
