"""GRESO's skip on history (train.history_explore) on verl: the bookkeeping, verl-free.

verl 0.9.1 has no curriculum-sampler hook in the trainer the launch runs (the v1 sync trainer):
its train dataloader's sampler is always a SequentialSampler or RandomSampler
(trainer/ppo/utils.py:140-168, create_rl_sampler, used at trainer/ppo/v1/trainer_base.py:749),
and nothing in the v1 trainer hands a step's rewards back to the dataloader (the
dataset.on_batch_end hook exists only in the legacy trainer, trainer/ppo/ray_trainer.py:1818).
So the skip is carried by the two hooks the v1 trainer does load (sgpo.verl.sampler):
- the dataset (data.custom_cls) asks `HistorySkip.draw` each time the dataloader draws a row;
  a skipped visit gets __rollout_n__ = 0, for which verl's rollout worker starts no session
  (trainer/ppo/v1/agent_loop_tq.py:115), so it costs no rollout;
- the replay buffer (trainer.v1.sampler.custom_sampler) evicts those empty groups and refills
  the step with the next rows through verl's own refill (ReplayBuffer.sample's failed-group
  path), then reports the step's generated groups to `HistorySkip.observe_step`.

The decisions are sgpo's own (sgpo.schedule.QueryScheduler with history_fill): each epoch's
visits are drawn once, when its first row is drawn, by sgpo.core.online.epoch_visits with the
streaks known then (the same seeded draw per query and epoch as sgpo's trainer); a step that
runs into the next epoch holds its queries' visit of it; with a target, explore adapts after
each step (sgpo.core.online.adapt_explore) and no visit is less likely than VISIT_FLOOR.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sgpo.core.online import VISIT_FLOOR, adapt_explore, epoch_visits, observe_streaks
from sgpo.core.rewards import all_equal

# Logged by sgpo.verl.sampler each training step: visits skipped so far (sgpo's history_skipped),
# the explore probability (moves with a target), and the trajectories the step generated (the
# dataset's row order no longer says how many: sgpo.verl.flops counts these instead).
HISTORY_SKIPPED_METRIC = "training/sgpo/history_skipped"
HISTORY_EXPLORE_METRIC = "training/sgpo/history_explore"
GENERATED_METRIC = "training/sgpo/generated_samples"
# Visits generated again within the step that already holds them (see HistorySkip._start_epoch).
HISTORY_REPEATED_METRIC = "training/sgpo/history_repeated"

log = logging.getLogger(__name__)


class HistorySkip:
    """Which draws of a dataset's rows are generated, from each query's all-equal streak.

    query_ids: the dataset's rows (each epoch visits each once, in any order). explore, seed,
    min_streak, target: train.history_explore, the run's seed, train.history_min_streak and
    train.history_target (0 = explore fixed).
    """

    def __init__(
        self,
        query_ids: Sequence[str],
        explore: float,
        seed: int,
        min_streak: int = 1,
        target: float = 0.0,
    ) -> None:
        if not query_ids or len(set(query_ids)) != len(query_ids):
            raise ValueError("history skipping needs a non-empty dataset of distinct query ids")
        if not 0 < explore < 1:
            raise ValueError(f"history explore must be in (0, 1), got {explore}")
        if min_streak < 1 or not 0 <= target < 1:
            raise ValueError(
                f"need min_streak >= 1 and 0 <= target < 1, got {min_streak}, {target}"
            )
        self.query_ids = list(query_ids)
        self.explore = explore
        self.seed = seed
        self.min_streak = min_streak
        self.target = target
        self.zero_streaks: dict[str, int] = {}  # query -> its last groups in a row all equal
        self.draws: dict[str, int] = {}  # query -> times drawn = the epoch of its next draw
        self.epoch = -1
        self.visited: set[str] = set()  # this epoch's generated visits
        self.in_flight: set[str] = set()  # generated since the last observed step
        self.skipped = 0  # visits skipped so far (all epochs), as sgpo's history_skipped
        self.repeated = 0  # visits generated in a step that already held the query

    def draw(self, query_id: str) -> bool:
        """The dataloader draws query_id's row: is this visit generated? The first draw of an
        epoch draws that epoch's visits; a row drawn again in an older epoch than the current
        one (verl never does: each epoch draws every row once) is generated."""
        epoch = self.draws.get(query_id, 0)
        self.draws[query_id] = epoch + 1
        if epoch > self.epoch:
            self._start_epoch(epoch)
        generated = epoch < self.epoch or query_id in self.visited
        if generated:
            self.repeated += query_id in self.in_flight
            self.in_flight.add(query_id)
        return generated

    def _start_epoch(self, epoch: int) -> None:
        floor = VISIT_FLOOR if self.target else 0.0
        visited = set(
            epoch_visits(
                self.query_ids,
                self.zero_streaks,
                self.explore,
                self.seed,
                epoch,
                floor,
                self.min_streak,
            )
        )
        self.skipped += len(self.query_ids) - len(visited)
        # history_fill: the step being generated holds its queries' visit of the new epoch
        # (QueryScheduler.take), so none comes twice in a step; unless that is every visit,
        # which would leave the step nothing to fill with: sgpo's trainer then takes a short
        # step, verl's refill must fill it, so these queries are generated twice in it.
        fresh = visited - self.in_flight
        if not fresh and not self.repeated:
            log.warning(
                "skip on history: epoch %d visits only queries the step being generated already "
                "holds (%d of %d rows), so the step generates them again as second groups "
                "(logged as %s); with fewer rows per epoch than data.train_batch_size, raise "
                "train.history_explore or lower TRAIN_BATCH_SIZE",
                epoch,
                len(visited),
                len(self.query_ids),
                HISTORY_REPEATED_METRIC,
            )
        self.visited = fresh or visited
        self.epoch = epoch

    def observe_step(self, groups: Sequence[tuple[str, Sequence[float]]]) -> None:
        """A training step's generated groups as (query id, the group's rewards): each query's
        streak goes on when its rewards are all equal and resets otherwise; with a target,
        explore then moves towards it by the step's all-equal share."""
        if not groups:
            raise ValueError("a training step has at least one generated group")
        # GRESO's rule, as verl carries it (train.history_streak "solved" is not carried)
        equal = [(query_id, all_equal(rewards)) for query_id, rewards in groups]
        zero_share = observe_streaks(self.zero_streaks, equal)
        if self.target:
            self.explore = adapt_explore(self.explore, zero_share, self.target)
        self.in_flight.clear()

    def state_dict(self) -> dict:
        """Everything a resumed run needs to skip alike (JSON-able)."""
        return {
            "zero_streaks": dict(self.zero_streaks),
            "draws": dict(self.draws),
            "epoch": self.epoch,
            "visited": sorted(self.visited),
            "in_flight": sorted(self.in_flight),
            "skipped": self.skipped,
            "repeated": self.repeated,
            "explore": self.explore,
        }

    def load_state_dict(self, state: dict) -> None:
        self.zero_streaks = dict(state["zero_streaks"])
        self.draws = dict(state["draws"])
        self.epoch = state["epoch"]
        self.visited = set(state["visited"])
        self.in_flight = set(state["in_flight"])
        self.skipped = state["skipped"]
        self.repeated = state.get("repeated", 0)  # checkpoints before it was counted: none
        self.explore = state["explore"]
