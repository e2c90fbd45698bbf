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

from sgpo.core.rewards import is_correct
from sgpo.engine import Completion
from sgpo.errors import DataError
from sgpo.io import read_table, read_table_metadata
from sgpo.plan import PlanRow
from sgpo.profile import SAMPLES_KEY
from sgpo.rollouts import Rollout


@dataclass(frozen=True)
class ProfileSample:
    completion: Completion
    reward: float


class ProfileReuse:
    """Each kept query's profile samples, handed out once: at its first visit."""

    def __init__(self, samples: dict[str, list[ProfileSample]]) -> None:
        self.samples = samples
        self.used: set[str] = set()

    def take(self, query_id: str, group_size: int) -> list[ProfileSample]:
        if query_id in self.used or query_id not in self.samples:
            return []
        self.used.add(query_id)
        return self.samples[query_id][:group_size]

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
    rows, meta = read_table(path)
    differ = sorted(key for key, value in meta.items() if plan_meta.get(key) != value)
    if differ:
        raise DataError(
            f"{path}: field(s) {', '.join(differ)} differ from {plan_path}'s profile; "
            "not the samples of the profile this plan was made from"
        )
    kept = {r.query_id: r for r in plan_rows if r.kept}
    samples: dict[str, list[ProfileSample]] = {q: [] for q in kept}
    for s in sorted(rows, key=lambda s: s["index"]):
        if s["query_id"] in samples:
            completion = Completion(s["prompt_ids"], s["response_ids"], s["text"], s["finished"])
            samples[s["query_id"]].append(ProfileSample(completion, s["reward"]))
    for query_id, row in kept.items():
        drawn = samples[query_id]
        n_correct = sum(is_correct(s.reward, threshold) for s in drawn)
        if len(drawn) != row.k or n_correct != row.n_correct:
            strict = sum(s.reward >= threshold for s in drawn)  # before the rounding tolerance
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
    return ProfileReuse(samples)


def reuse_record(rollouts: list[Rollout]) -> dict:
    """A step's reused rollouts, and the tokens it generated: the fresh rollouts' only (reused
    ones were generated, and charged, in the profile)."""
    return {
        "reused_rollouts": sum(r.reused for r in rollouts),
        "tokens_generated": sum(len(r.completion.response_ids) for r in rollouts if not r.reused),
    }
