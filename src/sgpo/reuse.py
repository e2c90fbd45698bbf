"""Profile reuse (train.reuse_profile, sgpo): the profile's samples of a kept query form (part of)
that query's first training group -- min(G, samples drawn) of them, the rest generated fresh --
so the profile's inference is not paid a second time in training.

The samples were drawn by the initial policy, so they are trained off-policy: their old
log-probs in the PPO-clipped ratio are the initial policy's (PolicyUpdate's behaviour policy),
computed at training time and charged to the logprob FLOPs. Later visits generate as usual.
Which queries have used their samples is checkpoint state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sgpo.core.rewards import is_correct
from sgpo.engine import Completion
from sgpo.errors import DataError
from sgpo.io import read_table_metadata
from sgpo.plan import PlanRow
from sgpo.profile import SAMPLES_KEY
from sgpo.rollouts import Rollout


@dataclass(frozen=True)
class ProfileSample:
    completion: Completion
    reward: float


class ProfileReuse:
    """Each kept query's profile samples, handed out once: at its first visit. They stay in
    Arrow's columns (a few bytes per token) until then, made Python objects one query at a
    time: a large profile's samples would not fit in memory as objects."""

    def __init__(self, samples: pa.Table, rows_of: dict[str, list[int]]) -> None:
        self.samples = samples
        self.rows_of = rows_of  # each kept query's rows in samples, by sample index
        self.used: set[str] = set()

    def take(self, query_id: str, group_size: int) -> list[ProfileSample]:
        if query_id in self.used or query_id not in self.rows_of:
            return []
        self.used.add(query_id)
        drawn = self.samples.take(self.rows_of[query_id][:group_size]).to_pylist()
        return [
            ProfileSample(
                Completion(s["prompt_ids"], s["response_ids"], s["text"], s["finished"]),
                s["reward"],
            )
            for s in drawn
        ]

    def state(self) -> list[str]:
        return sorted(self.used)

    def restore(self, state: list[str]) -> None:
        self.used = set(state)


def load_profile_reuse(plan_path: Path, plan_rows: list[PlanRow], threshold: float) -> ProfileReuse:
    """The samples of the plan's kept queries, from the profile_samples.parquet its profile
    recorded; refused unless they are that profile's (same run, same counts per query, a sample
    correct from threshold up)."""
    plan_meta = read_table_metadata(plan_path)
    location = plan_meta.get(SAMPLES_KEY)
    if location is None:
        raise DataError(
            f"{plan_path}: its profile records no samples file, so train.reuse_profile has "
            "nothing to reuse; re-run sgpo profile and sgpo plan with this version of sgpo"
        )
    path = Path(location)
    if not path.exists():
        raise DataError(
            f"{plan_path}: its profile's samples {path} are missing (moved or deleted?); "
            "re-run sgpo profile and sgpo plan, or train without train.reuse_profile"
        )
    meta = read_table_metadata(path)
    differ = sorted(key for key, value in meta.items() if plan_meta.get(key) != value)
    if differ:
        raise DataError(
            f"{path}: field(s) {', '.join(differ)} differ from {plan_path}'s profile; "
            "not the samples of the profile this plan was made from"
        )
    kept = {r.query_id: r for r in plan_rows if r.kept}
    try:  # the kept queries' samples only, in Arrow's columns
        samples = pq.read_table(path, filters=[("query_id", "in", list(kept))])
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable samples file ({e})") from e
    rows_of: dict[str, list[int]] = {q: [] for q in kept}
    rewards: dict[str, list[float]] = {q: [] for q in kept}
    keys = zip(*(samples[c].to_pylist() for c in ("query_id", "index", "reward")), strict=True)
    for position, (query_id, _, reward) in sorted(enumerate(keys), key=lambda e: e[1][1]):
        rows_of[query_id].append(position)
        rewards[query_id].append(reward)
    for query_id, row in kept.items():
        drawn = rewards[query_id]
        n_correct = sum(is_correct(reward, threshold) for reward in drawn)
        if len(drawn) != row.k or n_correct != row.n_correct:
            strict = sum(reward >= threshold for reward in drawn)  # before the rounding tolerance
            older = (
                " (counted as an sgpo before 1e-6 of float rounding reached the success "
                "threshold counted them: profile again)"
                if len(drawn) == row.k and strict == row.n_correct
                else ""
            )
            raise DataError(
                f"{path}: query {query_id!r} has {len(drawn)} samples, "
                f"{n_correct} correct; its plan row says "
                f"k = {row.k}, n_correct = {row.n_correct}{older}"
            )
    return ProfileReuse(samples, rows_of)


def reuse_record(rollouts: list[Rollout]) -> dict:
    """A step's reused rollouts, and the tokens it generated: the fresh rollouts' only (reused
    ones were generated, and charged, in the profile)."""
    return {
        "reused_rollouts": sum(r.reused for r in rollouts),
        "tokens_generated": sum(len(r.completion.response_ids) for r in rollouts if not r.reused),
    }
