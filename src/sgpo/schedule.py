"""Which queries a training step takes, with which group sizes.

QueryScheduler walks a plan epoch by epoch: the curriculum order for sgpo, a seeded shuffle
per epoch for grpo/dapo. OnlinePlanner (the sgpo variants beyond the paper) keeps a Beta
posterior per query fed by every training group's outcomes (and optional re-profiling of
dropped queries), re-plans every N steps, and can re-allocate each step's rollout budget with
the exact solver in sgpo.core.online. Both are resumable from their state() dicts.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from sgpo.config import RunConfig
from sgpo.core.allocation import (
    KEPT,
    PlannedQuery,
    PlanRule,
    first_visit_reason,
    planned_group_size,
)
from sgpo.core.online import (
    VISIT_FLOOR,
    Posterior,
    ReplanRule,
    adapt_explore,
    allocate_budget,
    epoch_visits,
    observe_streaks,
    posterior_from_profile,
    replan,
    update_posterior,
)
from sgpo.errors import ConfigError, DataError
from sgpo.models import model_source
from sgpo.plan import (
    PlanRow,
    check_replannable,
    kept_in_order,
    plan_rule,
    read_plan,
    warn_of_group_sizes,
    warn_unplanned,
)
from sgpo.profile_match import check_profile_matches, p_hat_estimates_p, warn_of_other_sampling
from sgpo.tasks import Query, TaskData
from sgpo.validate import check_plan_text

log = logging.getLogger("sgpo.schedule")


@dataclass
class ScheduledQuery:
    query: Query
    group_size: int


class QueryScheduler:
    """Hands out queries in plan order, one epoch after another. A new plan (update_plan)
    re-orders what is left of the current epoch; queries already visited wait for the next.
    With explore < 1 (train.history_explore), each epoch starts by skipping queries whose last
    groups extended their streak (all equal, or all solved: train.history_streak;
    sgpo.core.online.epoch_visits), from the
    min_streak-th such group in a row on. With a target (train.history_target), explore adapts
    after each step (adapt). With fill (train.history_fill, or a target) a step that reaches an
    epoch's end goes on into the next until its budget is full; the queries it already holds
    count as their visit of the new epoch, so no query is taken twice in a step or generated
    again at the start of the next one. With a first_visit rule (train.first_visit_profile)
    each query's first group is its profile (observe_first_visits): the rule's filter drops
    it from the schedule right after. With streak_group_size (train.streak_group_size) a query
    on a streak is handed out with that many responses (at most its G) until one of its
    groups breaks the streak. streaks: the history it starts from (profile_streaks)."""

    def __init__(
        self,
        queries: list[ScheduledQuery],
        shuffle: bool,
        seed: int,
        explore: float = 1.0,
        target: float = 0.0,
        min_streak: int = 1,
        fill: bool = False,
        first_visit: PlanRule | None = None,
        streak_group_size: int = 0,
        streaks: dict[str, int] | None = None,
    ) -> None:
        if not queries:
            raise ValueError("no queries to train on (the plan kept none?)")
        self.queries = queries
        self.shuffle = shuffle
        self.seed = seed
        self.explore = explore
        self.target = target
        self.min_streak = min_streak
        self.fill = fill or bool(target)  # GRESO samples until its batch is full
        # query -> its last groups in a row that extended its streak (all equal, or all solved
        # with train.history_streak "solved": core.online.extends_streak)
        self.zero_streaks: dict[str, int] = dict(streaks or {})
        self.history_skipped = 0  # visits skipped so far (all epochs)
        self.first_visit = first_visit
        self.streak_group_size = streak_group_size
        # Whether the steps' outcomes must be observed: skip on history and small groups on a
        # streak both read the streaks (an adapted explore stays below 1, EXPLORE_BOUNDS).
        self.observes_streaks = explore < 1.0 or bool(streak_group_size)
        self.profiled: dict[str, str] = {}  # first_visit: query -> its filter's reason
        # Visited (or skipped) this epoch, then left out by a re-plan: one that a later re-plan
        # brings back waits for the next epoch like the plan's other visited queries.
        self.left_visited: set[str] = set()
        self.epoch = 0
        self.remaining = self._epoch_order()

    def _epoch_order(self) -> list[str]:
        ids = [s.query.query_id for s in self.queries]
        if self.shuffle:
            random.Random(f"{self.seed}/order/{self.epoch}").shuffle(ids)
        if self.explore < 1.0:
            floor = VISIT_FLOOR if self.target else 0.0
            visited = epoch_visits(
                ids, self.zero_streaks, self.explore, self.seed, self.epoch, floor, self.min_streak
            )
            self.history_skipped += len(ids) - len(visited)
            return visited
        return ids

    def adapt(self, zero_share: float) -> None:
        """After a step whose generated groups came back all equal in zero_share of cases:
        move explore towards the target (nothing without one)."""
        if self.target:
            self.explore = adapt_explore(self.explore, zero_share, self.target)

    def observe_step(self, groups: list[tuple[str, bool]]) -> None:
        """A step's generated groups as (query_id, extends its streak): each one observed, then
        explore adapted to the share that did (what sgpo's trainer and sgpo.trl both do)."""
        self.adapt(observe_streaks(self.zero_streaks, groups))

    def observe_first_visits(self, groups: list[tuple[str, int, int, bool]]) -> set[str]:
        """A step's groups as (query_id, n_correct, group size, rewards not all equal): each
        query's first group is its profile; those the first_visit rule's filter drops leave the
        schedule (nothing without a rule). Returns the queries dropped."""
        dropped: set[str] = set()
        if self.first_visit is None:
            return dropped
        for query_id, n_correct, size, varied in groups:
            if query_id in self.profiled:
                continue
            reason = first_visit_reason(
                query_id, n_correct, size, varied, self.first_visit, self.seed
            )
            self.profiled[query_id] = reason
            if reason != KEPT:
                dropped.add(query_id)
        self.queries = [s for s in self.queries if s.query.query_id not in dropped]
        self.skip(dropped)
        if not self.queries:
            raise ValueError(
                "the first training groups dropped every query (all never or always solved); "
                "nothing is left to train on"
            )
        return dropped

    @property
    def first_visit_dropped(self) -> int:
        return sum(reason != KEPT for reason in self.profiled.values())

    @property
    def queries(self) -> list[ScheduledQuery]:
        return self._queries

    @queries.setter
    def queries(self, queries: list[ScheduledQuery]) -> None:
        # indexed as it is set: a step looks its queries up by id (not a dict of all per step)
        self._queries = queries
        self._by_id = {s.query.query_id: s for s in queries}

    def _start_next_epoch_if_done(self) -> None:
        if not self.remaining:
            self.epoch += 1
            self.left_visited = set()
            self.remaining = self._epoch_order()

    def _fitting(
        self, query_ids: list[str], budget: int, used: int, group_size: int | None
    ) -> list[ScheduledQuery]:
        """The first of query_ids whose groups fit what is left of budget after used (at
        least one when nothing is used yet)."""
        out = []
        for qid in query_ids:
            nxt = self._by_id[qid]
            if group_size is not None:
                nxt = ScheduledQuery(nxt.query, group_size)
            elif self.streak_group_size and self.zero_streaks.get(qid, 0):
                nxt = ScheduledQuery(nxt.query, min(nxt.group_size, self.streak_group_size))
            if (out or used) and used + nxt.group_size > budget:
                break
            out.append(nxt)
            used += nxt.group_size
            if used >= budget:
                break
        return out

    def peek(self, budget: int, group_size: int | None = None) -> list[ScheduledQuery]:
        """The queries take(budget, group_size) would return from this epoch, without taking
        them (an exhausted epoch rolls over to the next one first)."""
        self._start_next_epoch_if_done()
        return self._fitting(self.remaining, budget, 0, group_size)

    def take(self, budget: int, group_size: int | None = None) -> list[ScheduledQuery]:
        """Next queries in order while their groups fit the budget (at least one query), each
        with its planned G or, when given, group_size. With fill, a step that empties its epoch
        goes on into the next ones; what it holds counts as visited there."""
        taken = self.peek(budget, group_size)
        del self.remaining[: len(taken)]
        used = sum(t.group_size for t in taken)
        while self.fill and used < budget and not self.remaining:
            self._start_next_epoch_if_done()
            order = self.remaining
            self.skip({t.query.query_id for t in taken})
            if not self.remaining:  # the step holds all of the next epoch: it is the next step's
                self.remaining = order
                break
            more = self._fitting(self.remaining, budget, used, group_size)
            if not more:
                break
            del self.remaining[: len(more)]
            taken += more
            used += sum(m.group_size for m in more)
        return taken

    def skip(self, query_ids: set[str]) -> None:
        """Mark queries as visited for this epoch without training on them."""
        self.remaining = [q for q in self.remaining if q not in query_ids]

    def update_plan(self, queries: list[ScheduledQuery]) -> None:
        if not queries:
            raise ValueError("re-planning kept no query")
        visited = (
            {s.query.query_id for s in self.queries} - set(self.remaining)
        ) | self.left_visited
        self.left_visited = visited - {s.query.query_id for s in queries}
        self.queries = queries
        self.remaining = [s.query.query_id for s in queries if s.query.query_id not in visited]

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "remaining": list(self.remaining),
            "plan": [[s.query.query_id, s.group_size] for s in self.queries],
            "zero_streaks": dict(self.zero_streaks),
            "history_skipped": self.history_skipped,
            "explore": self.explore,
            "profiled": dict(self.profiled),
            "left_visited": sorted(self.left_visited),
        }

    def restore(self, state: dict, queries_by_id: dict[str, Query]) -> None:
        self.epoch = state["epoch"]
        self.queries = [ScheduledQuery(queries_by_id[q], g) for q, g in state["plan"]]
        self.remaining = list(state["remaining"])
        # Checkpoints written before history skipping have neither.
        self.zero_streaks = dict(state.get("zero_streaks", {}))
        self.history_skipped = state.get("history_skipped", 0)
        self.explore = state.get("explore", self.explore)
        self.profiled = dict(state.get("profiled", {}))
        self.left_visited = set(state.get("left_visited", []))  # older checkpoints: none


class OnlinePlanner:
    """Per-query Beta posteriors, re-planning and budget allocation for sgpo variants."""

    def __init__(
        self,
        plan_rows: list[PlanRow],
        rule: PlanRule,
        decay: float,
        prior: tuple[float, float],
        seed: int,
    ) -> None:
        self.replan_rule = ReplanRule(rule, prior_alpha=prior[0], prior_beta=prior[1])
        self.decay = decay
        self.seed = seed
        self.query_ids = [r.query_id for r in plan_rows]
        self.posteriors: dict[str, Posterior] = {
            r.query_id: posterior_from_profile(r.n_correct, r.k, *prior) for r in plan_rows
        }
        self.current: dict[str, PlannedQuery] = {
            r.query_id: PlannedQuery(r.query_id, r.p_hat, r.group_size, r.kept, r.reason, r.rank)
            for r in plan_rows
        }
        # Whether each query's latest measurement had rewards not all equal (a graded
        # verifier's partial credit): re-planning keeps such a query, as the plan does.
        self.varied = {r.query_id: r.rewards_vary for r in plan_rows}

    def observe(self, query_id: str, successes: int, failures: int, varied: bool) -> None:
        """A fresh measurement of one query (a training group or a re-profiling sample);
        varied: its rewards were not all equal."""
        self.varied[query_id] = varied
        rule = self.replan_rule
        self.posteriors[query_id] = update_posterior(
            self.posteriors[query_id],
            successes,
            failures,
            self.decay,
            rule.prior_alpha,
            rule.prior_beta,
        )

    def replan(self, queries_by_id: dict[str, Query]) -> list[ScheduledQuery]:
        """Kept queries with their new G, in the new curriculum order."""
        plan = replan(
            self.query_ids, self.posteriors, self.varied, self.current, self.replan_rule, self.seed
        )
        self.current = {p.query_id: p for p in plan}
        kept = sorted((p for p in plan if p.kept), key=lambda p: p.rank)
        return [ScheduledQuery(queries_by_id[p.query_id], p.group_size) for p in kept]

    def dropped(self) -> list[str]:
        return [q for q in self.query_ids if not self.current[q].kept]

    def allocate(
        self, window: list[ScheduledQuery], budget: int, value: str
    ) -> list[ScheduledQuery]:
        """Re-size the window's groups to maximise the expected value of informative groups
        within budget (sgpo.core.online.allocate_budget); queries given no rollouts are left
        out."""
        rule = self.replan_rule.plan
        rates = [self.posteriors[s.query.query_id].mean for s in window]
        sizes = allocate_budget(rates, budget, rule.g_min, rule.g_max, value)
        return [ScheduledQuery(s.query, g) for s, g in zip(window, sizes, strict=True) if g > 0]

    def history_rows(self, step: int) -> list[dict]:
        return [
            {
                "step": step,
                "query_id": q,
                "p_est": self.posteriors[q].mean,
                "group_size": self.current[q].group_size,
                "kept": self.current[q].kept,
                "reason": self.current[q].reason,
            }
            for q in self.query_ids
        ]

    def state(self) -> dict:
        return {
            "posteriors": {q: [p.alpha, p.beta] for q, p in self.posteriors.items()},
            "current": {
                q: [p.success_rate, p.group_size, p.kept, p.reason, p.rank]
                for q, p in self.current.items()
            },
            "varied": self.varied,
        }

    def restore(self, state: dict) -> None:
        self.posteriors = {q: Posterior(a, b) for q, (a, b) in state["posteriors"].items()}
        self.current = {q: PlannedQuery(q, *v) for q, v in state["current"].items()}
        # A checkpoint from before the flags planned by counts alone: none varied keeps it so
        # (the plan's flags would call every query with both outcomes in its profile varied).
        self.varied = state.get("varied", dict.fromkeys(self.query_ids, False))


def build_scheduler(
    config: RunConfig,
    train_queries: list[Query],
    plan_path: Path | None,
    resuming: bool = False,
    task: TaskData | None = None,
) -> tuple[QueryScheduler, list[PlanRow], dict]:
    """The step scheduler; for sgpo also the plan's rows (all of them, kept or not) and its
    metadata (the profile's FLOPs and time, always charged to sGPO). Baselines reshuffle every
    epoch; sgpo keeps its plan's order. task: the config's, loaded already (scheduled_queries)."""
    scheduled, rows, plan_meta = scheduled_queries(config, train_queries, plan_path, resuming, task)
    first_visit = plan_rule(config) if config.train.first_visit_profile else None
    scheduler = QueryScheduler(
        scheduled,
        shuffle=not config.train.uses_plan,  # only a plan has an order to keep
        seed=config.seed,
        explore=config.train.history_explore,
        target=config.train.history_target,
        min_streak=config.train.history_min_streak,
        fill=config.train.history_fill,
        first_visit=first_visit,
        streak_group_size=config.train.streak_group_size,
        streaks=(
            profile_streaks(rows, config.train.history_streak)
            if config.train.history_from_profile
            else None
        ),
    )
    return scheduler, rows, plan_meta


def profile_streaks(rows: list[PlanRow], rule: str) -> dict[str, int]:
    """train.history_from_profile: a streak of one for each kept query whose profile samples
    were all correct, as a group extending the streak under history_streak `rule` would be
    (solved; under equal, their rewards also all equal: a graded verifier's partial credit
    above the threshold need not be. A single sample is taken as all equal)."""
    return {
        r.query_id: 1
        for r in rows
        if r.kept and r.n_correct == r.k and not (rule == "equal" and r.rewards_vary)
    }


# The plan rule's settings online re-planning applies (core.online.replan): the filter's
# trivial side, the group sizes and the curriculum's buckets. The keep fractions and the
# profile's prior are the first plan's only.
REPLANNED_RULE = ("c", "g_min", "g_max", "g_rule", "drop_trivial", "trivial_above", "bucket_width")


def check_plan_rule(meta: dict, config: RunConfig, plan_path: Path, resuming: bool = False) -> None:
    """The plan file's rule trains (its filter and G); the config's plan.* settings differing
    from it are said, and refused where re-planning would apply the config's from then on (a
    resumed run that already did is only warned: nothing else could finish it)."""
    recorded = meta.get("rule") or {}
    current = asdict(plan_rule(config))
    differ = {key: value for key, value in current.items() if recorded.get(key, value) != value}
    if not differ:
        return
    said = "; ".join(
        f"plan.{key}: {recorded[key]!r} in the plan, {value!r} in the config"
        for key, value in differ.items()
    )
    replanned = sorted(set(differ) & set(REPLANNED_RULE))
    if config.train.online.replans and replanned and not resuming:
        raise ConfigError(
            f"{plan_path} was made with other plan settings than this config's ({said}), and "
            f"train.online re-plans with the config's {', '.join(replanned)}: the run would "
            "switch rules at its first re-plan; make the plan with this config, or set these "
            "as the plan has them"
        )
    log.warning(
        "%s was made with other plan settings than this config's (%s): the plan file's "
        "filter and group sizes train%s",
        plan_path,
        said,
        "; re-plans use the config's" if config.train.online.replans and replanned else "",
    )


def warn_of_sizes_replanned(rows: list[PlanRow], rule: PlanRule, plan_path: Path) -> None:
    """Kept rows whose G is not the rule's (edited by hand) train with it only until the first
    re-plan, which sizes every query by the rule again: say so."""
    edited = [
        (row, r)
        for row, r in enumerate(rows)
        if r.kept and r.group_size != planned_group_size(r.n_correct, r.k, rule)
    ]
    if edited:
        row, r = edited[0]
        log.warning(
            "%s: %d kept rows have another group_size than the plan's rule gives (e.g. row %d, "
            "query %r: %d, the rule's %d): train.online re-planning sizes every query by the "
            "rule again at its first re-plan",
            plan_path,
            len(edited),
            row,
            r.query_id,
            r.group_size,
            planned_group_size(r.n_correct, r.k, rule),
        )


def scheduled_queries(
    config: RunConfig,
    train_queries: list[Query],
    plan_path: Path | None,
    resuming: bool = False,
    task: TaskData | None = None,
) -> tuple[list[ScheduledQuery], list[PlanRow], dict]:
    """Every training query with train.group_size, or for sgpo the plan's kept queries in its
    order with their G (with the plan's rows and metadata); with
    train.first_visit_profile every training query with the plan's one G, profiled in
    training. task: the config's task where the caller has loaded it (the plan's profile is
    checked against it; loaded again otherwise)."""
    if not config.train.uses_plan:
        g = config.plan.g_min if config.train.first_visit_profile else config.train.group_size
        return [ScheduledQuery(q, g) for q in train_queries], [], {}
    if plan_path is None or not plan_path.exists():
        raise FileNotFoundError(f"method sgpo needs a plan: {plan_path} not found (run sgpo plan)")
    rows, meta = read_plan(plan_path)
    check_profile_matches(meta, config, str(plan_path), model_source(config), task=task)
    warn_of_other_sampling(meta, config, str(plan_path))
    check_plan_rule(meta, config, plan_path, resuming)
    if config.train.online.replans:
        check_replannable(p_hat_estimates_p(meta), plan_path, "train.online re-planning")
        warn_of_sizes_replanned(rows, plan_rule(config), plan_path)
    by_id = {q.query_id: q for q in train_queries}
    check_plan_text(rows, by_id, plan_path)
    # Each query id is in the plan once (sgpo.validate): its row in the file, for messages.
    file_row = {r.query_id: row for row, r in enumerate(rows)}
    scheduled = []
    for r in kept_in_order(rows):
        if r.query_id not in by_id:
            raise DataError(
                f"{plan_path}: row {file_row[r.query_id]}: field 'query_id' "
                f"{r.query_id!r} is not in the task's training queries"
            )
        scheduled.append(ScheduledQuery(by_id[r.query_id], int(r.group_size)))
    warn_unplanned(rows, by_id.keys(), plan_path)
    warn_of_group_sizes(rows, config.train.rollout_budget, plan_path)
    return scheduled, rows, meta
