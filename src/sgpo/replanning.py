"""Online sGPO during training (beyond the paper): every training group updates its query's
estimate, dropped queries are re-profiled now and then, and the plan is rebuilt every N steps."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sgpo.config import RunConfig
from sgpo.core.rewards import all_equal, is_correct
from sgpo.io import read_table, write_table
from sgpo.plan import PlanRow, plan_rule
from sgpo.rollouts import Rollout, group_members
from sgpo.runfiles import HISTORY_FILE
from sgpo.schedule import OnlinePlanner, QueryScheduler, ScheduledQuery
from sgpo.tasks import Query

log = logging.getLogger("sgpo.train")

# (queries, stream labels) -> profile rows of those queries under the current policy
Measure = Callable[[list[Query], tuple], list[dict]]


class Replanner:
    def __init__(
        self,
        config: RunConfig,
        plan_rows: list[PlanRow],
        queries_by_id: dict[str, Query],
        run_dir: Path,
    ) -> None:
        self.config = config
        self.online = config.train.online
        online = self.online
        self.planner = OnlinePlanner(
            plan_rows,
            plan_rule(config),
            online.decay,
            (online.prior_alpha, online.prior_beta),
            config.seed,
        )
        self.queries_by_id = queries_by_id
        self.threshold = config.task.correct_threshold
        self.history_path = run_dir / HISTORY_FILE
        self.history: list[dict] = []

    def next_queries(
        self, scheduler: QueryScheduler, budget: int, group_size: int | None = None
    ) -> list[ScheduledQuery]:
        """The plan's next queries (each with group_size when given), or with knapsack
        allocation the best re-sized subset of a wider window (the rest of the window is
        skipped this epoch)."""
        if self.online.allocation == "plan":
            return scheduler.take(budget, group_size)
        window = scheduler.peek(round(budget * self.online.allocation_window))
        scheduler.skip({s.query.query_id for s in window})
        chosen = self.planner.allocate(window, budget, self.online.allocation_value)
        return chosen or window[:1]

    def observe(self, rollouts: list[Rollout]) -> None:
        """Every training group is a fresh measurement of its query's success rate."""
        for members in group_members(rollouts):
            rewards = [m.reward for m in members]
            wins = sum(is_correct(r, self.threshold) for r in rewards)
            self.planner.observe(
                members[0].query.query_id, wins, len(members) - wins, not all_equal(rewards)
            )

    def _reprofile(self, step: int, measure: Measure) -> list[float]:
        """Re-measure a seeded sample of dropped queries; returns each query's FLOPs."""
        dropped = self.planner.dropped()
        rng = random.Random(f"{self.config.seed}/reprofile/{step}")
        sample = rng.sample(dropped, min(self.online.reprofile_sample, len(dropped)))
        rows = measure(
            [self.queries_by_id[q] for q in sample], (self.config.seed, "reprofile", step)
        )
        for row in rows:
            self.planner.observe(
                row["query_id"], row["n_correct"], row["k"] - row["n_correct"], row["rewards_vary"]
            )
        return [row["flops"] for row in rows]

    def after_step(
        self, step: int, scheduler: QueryScheduler, measure: Measure
    ) -> tuple[dict, list[float]]:
        """Re-profile and re-plan when due: (the plan's state for the metrics, the FLOPs of
        each re-profiled query)."""
        online = self.online
        reprofile_due = online.reprofile_every and step % online.reprofile_every == 0
        flops = self._reprofile(step, measure) if reprofile_due else []
        if reprofile_due or (online.reestimate and step % online.replan_every == 0):
            queries = self.planner.replan(self.queries_by_id)
            if queries:
                scheduler.update_plan(queries)
            else:  # the run ends here (Trainer.finished): nothing left that teaches
                log.warning(
                    "step %d: re-planning kept no query (training made every kept query trivial "
                    "or unsolvable by the plan's rule); training stops",
                    step,
                )
            self.history += self.planner.history_rows(step)
            write_table(self.history_path, self.history, {"step": step})
        kept = [p for p in self.planner.current.values() if p.kept]
        record = {
            "plan_kept": len(kept),
            "plan_p_mean": (
                float(np.mean([self.planner.posteriors[p.query_id].mean for p in kept]))
                if kept
                else None
            ),
            "plan_group_size_mean": float(np.mean([p.group_size for p in kept])) if kept else None,
        }
        return record, flops

    @property
    def exhausted(self) -> bool:
        """The last re-plan kept no query (read from the planner, so a resume sees it too)."""
        return not any(p.kept for p in self.planner.current.values())

    def state(self) -> dict:
        return self.planner.state()

    def restore(self, state: dict, step: int) -> None:
        self.planner.restore(state)
        # Re-plans after the checkpoint will run again: keep only the earlier snapshots.
        if self.history_path.exists():
            self.history = [r for r in read_table(self.history_path)[0] if r["step"] <= step]
