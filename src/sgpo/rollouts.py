"""A training step's rollouts: sample each scheduled query's group, score it with the verifier,
give every response its group-relative advantage. dapo over-samples and keeps only groups whose
rewards differ; train.filter_groups does the same for sgpo and grpo, optionally piloting each
group first (train.pilot_size), or grows groups whose rewards are all equal until they are
mixed (train.grow_max); train.downsample_to trains only the most varied few of each group. With
profile reuse (sgpo.reuse) a query's first group starts with its profile samples and only the
rest is generated."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sgpo.config import RunConfig
from sgpo.core.advantages import (
    balanced_indices,
    group_advantages,
    growth_round,
    majority_share,
    max_variance_indices,
    stratum_weights,
)
from sgpo.core.flops import ModelShape, inference_flops
from sgpo.core.rewards import all_equal, is_correct
from sgpo.engine import Completion, GenerationEngine, SamplingParams, stream_seed
from sgpo.models import Policy
from sgpo.schedule import ScheduledQuery
from sgpo.tasks import Query
from sgpo.verify import Verifier

if TYPE_CHECKING:  # sgpo.reuse imports this module
    from sgpo.reuse import ProfileReuse


@dataclass
class Rollout:
    query: Query
    group: int  # index of its group within one generation round
    completion: Completion
    reward: float = 0.0
    advantage: float = 0.0
    reused: bool = False  # a profile sample (drawn by the initial policy), not generated here
    # How many responses of its group this one stands for in the loss (a down-sampled group
    # trained with whole-group advantages, train.downsample_advantages whole-group).
    weight: float = 1.0
    round: int = 0  # the step's generation round (dapo and train.filter_groups refill rounds)

    @property
    def group_key(self) -> tuple[int, int, str]:
        """Which group of the step it belongs to: refill rounds number their groups from 0
        again, and a query can come back in a later round once the epoch wraps."""
        return (self.round, self.group, self.query.query_id)


def group_members(rollouts: list[Rollout]) -> list[list[Rollout]]:
    """The rollouts group by group (Rollout.group_key), in order."""
    groups: dict[tuple[int, int, str], list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group_key, []).append(r)
    return list(groups.values())


def mixed_groups(batch: list[Rollout]) -> list[Rollout]:
    """The batch without its dead groups (every advantage zero: the rewards were all equal)."""
    mixed = [members for members in group_members(batch) if any(m.advantage for m in members)]
    return [m for members in mixed for m in members]


def pilot_ends_group(rewards: set[float], rule: str, threshold: float) -> bool:
    """all-equal: the pilot's rewards are all equal; all-solved: all equal and a success (from
    threshold up: the query drifted to solved; an all-wrong pilot of a hard query goes on)."""
    if not all_equal(sorted(rewards)):  # equal but for float rounding is equal
        return False
    return rule == "all-equal" or all(is_correct(r, threshold) for r in rewards)


def rollout_flops(shape: ModelShape, rollouts: list[Rollout]) -> list[float]:
    """Inference FLOPs of generating each rollout (none for reused ones: the profile paid)."""
    return [
        0.0
        if r.reused
        else inference_flops(shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
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
        reuse: ProfileReuse | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.engine = engine
        self.verifier = verifier
        self.params = params
        self.reuse = reuse

    def generate_groups(
        self, scheduled: list[ScheduledQuery], step: int, round_index: int
    ) -> list[Rollout]:
        """Each response from its own stream (run seed, step, round, query id, index); a group's
        reused profile samples (first visit, with reuse) come first and take indices 0..n-1."""
        reused: list[Rollout] = []
        requests = []
        for gi, sq in enumerate(scheduled):
            samples = self.reuse.take(sq.query.query_id, sq.group_size) if self.reuse else []
            reused += [
                Rollout(sq.query, gi, s.completion, s.reward, reused=True, round=round_index)
                for s in samples
            ]
            requests.append((gi, sq.query, range(len(samples), sq.group_size)))
        return self._with_advantages(reused + self._sample(requests, step, round_index))

    def _sample(
        self, requests: list[tuple[int, Query, range]], step: int, round_index: int
    ) -> list[Rollout]:
        """Fresh scored rollouts: for each (group, query, indices), one response per index."""
        prompts, seeds, owners = [], [], []
        for gi, query, indices in requests:
            rendered = self.policy.render(query.prompt)
            for j in indices:
                prompts.append(rendered)
                labels = ("rollout", step, round_index, query.query_id, j)
                seeds.append(stream_seed(self.config.seed, *labels))
                owners.append((gi, query))
        if not prompts:  # a step of reused groups only generates nothing
            return []
        completions = self.engine.generate(prompts, seeds, self.params)
        fresh = [
            Rollout(q, g, c, round=round_index)
            for (g, q), c in zip(owners, completions, strict=True)
        ]
        rewards = self.verifier.score(
            [self.policy.answer_text(r.completion.text) for r in fresh],
            [r.query.answer for r in fresh],
            [r.query.query_id for r in fresh],
        )
        for r, reward in zip(fresh, rewards, strict=True):
            r.reward = reward
        return fresh

    def _with_advantages(self, rollouts: list[Rollout]) -> list[Rollout]:
        """The rollouts group by group (stable: reused first), each with its advantage."""
        rollouts = sorted(rollouts, key=lambda r: r.group)
        advantages = group_advantages(
            [r.reward for r in rollouts],
            [r.group for r in rollouts],
            self.config.train.normalize_std,
        )
        for r, adv in zip(rollouts, advantages, strict=True):
            r.advantage = adv
        return rollouts

    def piloted_groups(
        self, scheduled: list[ScheduledQuery], step: int, round_index: int
    ) -> list[Rollout]:
        """Pilot, then commit: each query's first pilot_size responses (its whole group if G is
        smaller); a pilot that ends its group (train.pilot_ends: all rewards equal, or all
        solved) costs pilot_size responses instead of G, the other groups are completed."""
        cfg = self.config.train
        pilots = self._sample(
            [
                (gi, sq.query, range(min(cfg.pilot_size, sq.group_size)))
                for gi, sq in enumerate(scheduled)
            ],
            step,
            round_index,
        )
        rewards: dict[int, set[float]] = {}
        for r in pilots:
            rewards.setdefault(r.group, set()).add(r.reward)
        rest = [
            (gi, sq.query, range(cfg.pilot_size, sq.group_size))
            for gi, sq in enumerate(scheduled)
            if sq.group_size > cfg.pilot_size
            and not pilot_ends_group(
                rewards[gi], cfg.pilot_ends, self.config.task.correct_threshold
            )
        ]
        return self._with_advantages(pilots + self._sample(rest, step, round_index))

    def grown_groups(self, scheduled: list[ScheduledQuery], step: int) -> list[Rollout]:
        """Grow until mixed: each query's planned group, then grow_round more responses at a
        time for every group whose rewards are still all equal, until it is mixed or holds
        grow_max responses (a group planned larger than grow_max is not grown)."""
        cfg = self.config.train
        rollouts = self.generate_groups(scheduled, step, 0)
        while True:
            outcomes: dict[int, list[float]] = {}
            for r in rollouts:
                outcomes.setdefault(r.group, []).append(r.reward)
            sizes = Counter(r.group for r in rollouts)
            single = {g for g, rewards in outcomes.items() if all_equal(rewards)}
            more = growth_round(sizes, single, cfg.grow_round, cfg.grow_max)
            if not more:
                return self._with_advantages(rollouts)
            requests = [
                (g, scheduled[g].query, range(sizes[g], sizes[g] + n)) for g, n in more.items()
            ]
            rollouts += self._sample(requests, step, 0)

    def _collect_grown(
        self, step: int, next_queries: Callable[[int], list[ScheduledQuery]]
    ) -> tuple[list[Rollout], list[Rollout]]:
        """Grow until mixed; with grow_train balanced only each group's planned size is
        trained (balanced_indices), its advantages still those of the whole grown group."""
        scheduled = next_queries(self.config.train.rollout_budget)
        generated = self.grown_groups(scheduled, step)
        if self.config.train.grow_train == "all":
            return generated, generated
        batch = []
        for members in group_members(generated):
            size = scheduled[members[0].group].group_size
            batch += [members[i] for i in balanced_indices([m.reward for m in members], size)]
        return generated, batch

    def collect(
        self, step: int, next_queries: Callable[[int], list[ScheduledQuery]]
    ) -> tuple[list[Rollout], list[Rollout]]:
        """(all generated rollouts, the step's batch): the same list unless groups are
        filtered (dapo, train.filter_groups), when the batch keeps only groups with a non-zero
        advantage, or groups are trained in part (train.grow_train balanced,
        train.downsample_to). train.drop_equal_groups is applied when the batch is trained
        (sgpo.train.Trainer.train_on), which may need the batch before the drop."""
        cfg = self.config.train
        if cfg.method == "dapo":
            return self._collect_dynamic(step, next_queries)
        if cfg.filter_groups:
            return self._collect_filtered(step, next_queries)
        if cfg.grow_max:
            generated, batch = self._collect_grown(step, next_queries)
        elif cfg.downsample_to:
            generated, batch = self._collect_downsampled(step, next_queries)
        else:
            generated = batch = self.generate_groups(next_queries(cfg.rollout_budget), step, 0)
        return generated, batch

    def _collect_downsampled(
        self, step: int, next_queries: Callable[[int], list[ScheduledQuery]]
    ) -> tuple[list[Rollout], list[Rollout]]:
        """PODS: each group generated whole; one larger than downsample_to trains only its most
        varied downsample_to responses (copies: the generated group keeps its own advantages,
        which the informative fraction reads). train.downsample_advantages subset: advantages
        computed within the subset (PODS); whole-group: the whole group's advantages, each
        response weighted by how many of its outcome it stands for (stratum_weights). With
        train.downsample_min_share only groups that skewed are down-sampled, the rest trained
        whole."""
        cfg = self.config.train
        whole_group = cfg.downsample_advantages == "whole-group"
        generated = self.generate_groups(next_queries(cfg.rollout_budget), step, 0)
        batch = []
        for members in group_members(generated):
            rewards = [m.reward for m in members]
            chosen = (
                max_variance_indices(rewards, cfg.downsample_to)
                if majority_share(rewards) >= cfg.downsample_min_share
                else list(range(len(members)))
            )
            weights = stratum_weights(rewards, chosen) if whole_group else [1.0] * len(chosen)
            batch += [replace(members[i], weight=w) for i, w in zip(chosen, weights, strict=True)]
        return generated, batch if whole_group else self._with_advantages(batch)

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

    def _collect_filtered(
        self, step: int, next_queries: Callable[[int], list[ScheduledQuery]]
    ) -> tuple[list[Rollout], list[Rollout]]:
        """Refill rounds: each round takes the next queries whose groups fill what is left of
        the budget and generates them (piloted with train.pilot_size); groups with a non-zero
        advantage join the batch whole, the others are dropped."""
        cfg = self.config.train
        generate = self.piloted_groups if cfg.pilot_size else self.generate_groups
        generated: list[Rollout] = []
        batch: list[Rollout] = []
        for round_index in range(cfg.refill_max_rounds):
            rollouts = generate(next_queries(cfg.rollout_budget - len(batch)), step, round_index)
            generated += rollouts
            batch += mixed_groups(rollouts)
            if len(batch) >= cfg.rollout_budget:
                break
        return generated, batch
