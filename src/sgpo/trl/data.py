"""The plan as TRL's data path: which dataset rows a generation batch holds, in which order.

GRPOTrainer's RepeatSampler shuffles prompts and repeats each one num_generations times. Here
PlanSampler walks the plan instead: each generation batch takes the next kept queries in
curriculum order while their group sizes fit the batch (sgpo's QueryScheduler, so the steps are
the ones `sgpo train` would take), repeats each query G times, and fills the rest of the batch
with padding slots. Every slot says which group it belongs to, so the trainer never has to guess
the layout from the prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from datasets import Dataset
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from sgpo.core.allocation import PlanRule
from sgpo.errors import DataError
from sgpo.plan import PlanRow, kept_in_order, read_plan
from sgpo.profile_match import p_hat_estimates_p
from sgpo.rundir import CHAT_TEMPLATE_KEY
from sgpo.schedule import OnlinePlanner, QueryScheduler, ScheduledQuery
from sgpo.tasks import Query

# Keys the trainer adds to each row (and strips before reward functions see the row).
GROUP_KEY = "sgpo_group"  # index of the row's group within its batch; PAD_GROUP for padding
GROUP_SIZE_KEY = "sgpo_group_size"
PAD_GROUP = -1
# A generation batch as a checkpoint records it: [[query_id, G], ...]
LoggedBatch = list[list[str | int]]


@dataclass
class Plan:
    """A plan.parquet: every row (kept or not), the kept ones in curriculum order, its rule."""

    rows: list[PlanRow]
    kept: list[ScheduledQuery]
    rule: PlanRule
    profile_flops: float
    path: Path
    # False for a plan from a profile stopped at each query's first success
    # (profile.adaptive_stop): its p_hat is 1 / samples drawn, no start for re-estimation.
    p_hat_estimates_p: bool = True
    # the plan's metadata: what its profile ran with (sampling, model shape, the inputs' config)
    meta: dict = field(default_factory=dict)


def _query(row: PlanRow) -> Query:
    return Query(row.query_id, row.prompt, row.answer, row.difficulty)


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    rows, meta = read_plan(path)
    kept = [ScheduledQuery(_query(r), r.group_size) for r in kept_in_order(rows)]
    if not kept:
        raise ValueError(f"{path}: the plan keeps no query")
    if not isinstance(meta.get("rule"), dict):
        raise DataError(
            f"{path}: metadata field 'rule' is missing or not a mapping (the plan rule re-plans "
            "follow); re-run sgpo plan"
        )
    return Plan(
        rows,
        kept,
        PlanRule(**meta["rule"]),
        float(meta.get("profile_flops", 0.0)),
        path,
        p_hat_estimates_p=p_hat_estimates_p(meta),
        meta=meta,
    )


def profiled_prompt(meta: dict) -> Callable[[str], Any] | None:
    """How a plan's profile formatted a query's text, as TRL should get it: chat messages
    (model.system_prompt, then model.prompt_template's user message) where it went through a
    chat template, which TRL applies; else model.prompt_template's text (TRL adds the
    tokenizer's special tokens, as sgpo did). None where the plan does not record it (an
    older sgpo's, or one made by hand)."""
    config = (meta.get("inputs") or {}).get("config") or {}
    if CHAT_TEMPLATE_KEY not in meta or "model.prompt_template" not in config:
        return None
    template, system = config["model.prompt_template"], config.get("model.system_prompt")
    if meta[CHAT_TEMPLATE_KEY] is None:
        return lambda text: template.format(prompt=text)
    head = [{"role": "system", "content": system}] if system else []
    return lambda text: [*head, {"role": "user", "content": template.format(prompt=text)}]


def plan_dataset(plan: Plan | str | Path, prompt: Callable[[str], Any] | None = None) -> Dataset:
    """The plan's queries as a TRL dataset (query_id, prompt, answer, difficulty): the kept ones
    in curriculum order, then the dropped ones (online re-planning may bring them back).

    prompt maps a query's text to what TRL should see, e.g. a chat message list; by default
    the profile's formatting as the plan records it (profiled_prompt: chat messages with its
    system prompt where it used a chat template, its prompt_template's text otherwise), or the
    text itself for a plan that does not record it."""
    plan = plan if isinstance(plan, Plan) else load_plan(plan)
    prompt = prompt or profiled_prompt(plan.meta)
    kept = {s.query.query_id for s in plan.kept}
    queries = [s.query for s in plan.kept] + [
        _query(r) for r in plan.rows if r.query_id not in kept
    ]
    return Dataset.from_dict(
        {
            "query_id": [q.query_id for q in queries],
            "prompt": [prompt(q.prompt) if prompt else q.prompt for q in queries],
            "answer": [q.answer for q in queries],
            "difficulty": [q.difficulty for q in queries],
        }
    )


class GroupOutcome(NamedTuple):
    """A generated group's outcome: its successes and failures (re-estimation's evidence) and
    whether its rewards all came back equal (the skip on history's streak, as sgpo's trainer
    reads it: with graded or several weighted rewards a group can be mixed in reward and
    still all successes or all failures)."""

    wins: int
    losses: int
    equal: bool


class PlanSlot(NamedTuple):
    """One row of a generation batch: a dataset row, its group in the batch and the group's G."""

    index: int
    group: int
    group_size: int


class PlanRows(TorchDataset):
    """The training dataset seen through PlanSlots: each row gains its group and group size."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, slot: PlanSlot) -> dict:
        return dict(self.dataset[slot.index]) | {
            GROUP_KEY: slot.group,
            GROUP_SIZE_KEY: slot.group_size,
        }


class StepSchedule:
    """Which queries, with which G, each generation batch takes. Static: the plan's curriculum,
    epoch after epoch. With re-estimation: every group's rewards update its query's posterior and
    the plan is rebuilt every replan_every batches (sgpo's OnlinePlanner). With skip on history
    (explore < 1, and an adaptive target when given): each epoch skips queries whose last
    groups all came back with one outcome, as sgpo's QueryScheduler does in `sgpo train`."""

    def __init__(
        self,
        plan: Plan,
        budget: int,
        seed: int,
        planner: OnlinePlanner | None = None,
        replan_every: int = 0,
        explore: float = 1.0,
        target: float = 0.0,
        min_streak: int = 1,
        fill: bool = False,
    ) -> None:
        too_big = [s for s in plan.kept if s.group_size > budget]
        if too_big:
            raise ValueError(
                f"{plan.path}: query {too_big[0].query.query_id!r} has G={too_big[0].group_size} "
                f"but a generation batch holds {budget} rows; raise generation_batch_size "
                "(per_device_train_batch_size x processes x steps_per_generation) or lower "
                "plan.g_max"
            )
        if planner is not None and plan.rule.g_max > budget:
            raise ValueError(
                f"{plan.path}: re-planning can give a query G up to plan.g_max="
                f"{plan.rule.g_max}, but a generation batch holds {budget} rows; raise "
                "generation_batch_size (per_device_train_batch_size x processes x "
                "steps_per_generation) or lower plan.g_max"
            )
        self.plan = plan
        self.budget = budget
        self.scheduler = QueryScheduler(
            list(plan.kept),
            shuffle=False,
            seed=seed,
            explore=explore,
            target=target,
            min_streak=min_streak,
            fill=fill,
        )
        self.planner = planner
        self.replan_every = replan_every
        self.queries_by_id = {r.query_id: _query(r) for r in plan.rows}
        self.batches_observed = 0

    def next_batch(self) -> list[ScheduledQuery]:
        return self.scheduler.take(self.budget)

    def observes(self) -> bool:
        """Whether observe needs the groups' outcomes (re-estimation or skip on history)."""
        return self.planner is not None or self.scheduler.observes_streaks

    def observe(self, outcomes: dict[str, GroupOutcome]) -> bool:
        """A generated batch's outcome per query; True when the plan was rebuilt."""
        if self.scheduler.observes_streaks:
            self.scheduler.observe_step([(qid, o.equal) for qid, o in outcomes.items()])
        if self.planner is None:
            return False
        for query_id, outcome in outcomes.items():
            self.planner.observe(query_id, outcome.wins, outcome.losses, not outcome.equal)
        self.batches_observed += 1
        if self.batches_observed % self.replan_every:
            return False
        self.scheduler.update_plan(self.planner.replan(self.queries_by_id))
        return True


class PlanSampler(Sampler[PlanSlot]):
    """Yields PlanSlots: per generation batch the scheduled queries' rows (each G times, in
    plan order; min(G, downsample_to) times when down-sampling, the trainer generating the
    rest of the group) and padding up to the batch size, the whole batch `repeat` times (TRL
    reuses a generation batch over steps_per_generation x num_iterations micro-steps). One
    iteration is as many batches as one epoch of the static plan (the Trainer's epoch); the
    schedule carries on across iterations, so with skips or re-plans a plan epoch need not
    end with one.

    With several processes every one draws the same batches (the same schedule, from the same
    seed) and the data loader hands process p the p-th of `processes` equal, contiguous shares
    of each; the real rows are dealt evenly over the shares (process p's share starts with real
    rows [pR/N, (p+1)R/N) of the batch's R, then padding), so no process is left with padding
    only while another holds several rows more.

    Batches are drawn lazily, but the data loader prefetches one ahead, so a re-plan reaches
    the batches from one after the next.

    `drawn` logs the batches of the current iteration as [[query_id, G], ...], those drawn
    ahead and not yet trained included; a resumed run sets `replay` to a checkpoint's log, which
    its next iteration yields first (TRL's data skip discards the trained ones) before drawing
    on from the restored schedule."""

    def __init__(
        self,
        schedule: StepSchedule,
        index_of: dict[str, int],
        batch_rows: int,
        repeat: int,
        downsample_to: int = 0,
        processes: int = 1,
    ) -> None:
        if batch_rows % processes:
            raise ValueError(f"{batch_rows} rows do not split into {processes} equal shares")
        self.schedule = schedule
        self.index_of = index_of
        self.batch_rows = batch_rows
        self.repeat = repeat
        self.downsample_to = downsample_to
        self.processes = processes
        self.steps_per_epoch = self._count_static_steps()
        self.drawn: list[LoggedBatch] = []
        self.replay: list[LoggedBatch] = []

    def _count_static_steps(self) -> int:
        """Batches in one epoch of the static plan (the length the Trainer plans with)."""
        counter = QueryScheduler(list(self.schedule.plan.kept), shuffle=False, seed=0)
        steps = 0
        while True:
            counter.take(self.schedule.budget)
            steps += 1
            if not counter.remaining:
                return steps

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_rows * self.repeat

    def batch_slots(self, batch: list[ScheduledQuery]) -> list[PlanSlot]:
        slots = [
            PlanSlot(self.index_of[s.query.query_id], group, s.group_size)
            for group, s in enumerate(batch)
            for _ in range(min(s.group_size, self.downsample_to or s.group_size))
        ]
        # Padding rows reuse the last real row (same prompt format); the trainer generates
        # nothing for them and keeps them out of rewards, advantages, the loss and the logs.
        pad = PlanSlot(slots[-1].index, PAD_GROUP, 0)
        share = self.batch_rows // self.processes
        dealt: list[PlanSlot] = []
        for process in range(self.processes):
            start = process * len(slots) // self.processes
            end = (process + 1) * len(slots) // self.processes
            dealt += slots[start:end] + [pad] * (share - (end - start))
        return dealt

    def __iter__(self) -> Iterator[PlanSlot]:
        # Exactly len(self) rows, from wherever the schedule stands: the Trainer counts its
        # epochs and max_steps by that length, so a plan whose epochs shrink (skips on history,
        # re-plans) or grow still trains to max_steps, and no batch is drawn and left untrained.
        replay, self.replay = self.replay, []  # replayed by this iteration only
        self.drawn = []
        for step in range(self.steps_per_epoch):
            if step < len(replay):
                batch = [
                    ScheduledQuery(self.schedule.queries_by_id[query_id], group_size)
                    for query_id, group_size in replay[step]
                ]
            else:
                batch = self.schedule.next_batch()
            self.drawn.append([[s.query.query_id, s.group_size] for s in batch])
            slots = self.batch_slots(batch)
            for _ in range(self.repeat):
                yield from slots
