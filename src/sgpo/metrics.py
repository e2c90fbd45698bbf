"""What a training step and a finished run report: the per-step rollout statistics of
metrics.jsonl and the run's summary.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sgpo.core.advantages import informative_groups
from sgpo.core.flops import PHASES
from sgpo.core.rewards import is_correct
from sgpo.rollouts import Rollout

if TYPE_CHECKING:
    from sgpo.plan import PlanRow


def rollout_record(generated: list[Rollout], threshold: float) -> dict:
    """Group and response statistics of everything a step generated (a response is correct
    from threshold up)."""
    keys: dict[tuple[int, int, str], int] = {}
    group_of = [keys.setdefault(r.group_key, len(keys)) for r in generated]
    sizes, correct = [0] * len(keys), [0] * len(keys)
    for g, r in zip(group_of, generated, strict=True):
        sizes[g] += 1
        correct[g] += is_correct(r.reward, threshold)
    live = informative_groups([r.advantage for r in generated], group_of)
    informative = sum(g in live for g in group_of)
    response_tokens = [len(r.completion.response_ids) for r in generated]
    return {
        "queries": len(keys),
        "rollouts": len(generated),
        "reward_mean": float(np.mean([r.reward for r in generated])),
        "informative_fraction": informative / len(generated),
        "group_size_mean": float(np.mean(sizes)),
        "group_size_min": min(sizes),
        "group_size_max": max(sizes),
        "response_tokens_mean": float(np.mean(response_tokens)),
        "tokens_generated": sum(response_tokens),
        # TRL's clipped_ratio: responses cut at max_new_tokens before their EOS
        "truncated_fraction": sum(not r.completion.finished for r in generated) / len(generated),
        # every generated group as [query id, responses, correct ones], in generation order:
        # what each query's groups showed over training (e.g. to test a skip rule offline)
        "group_outcomes": [
            [query_id, size, n]
            for (*_, query_id), size, n in zip(keys, sizes, correct, strict=True)
        ],
    }


def profile_tokens(rows: Sequence[Mapping | PlanRow]) -> int:
    """Tokens generated to make profile (or plan) rows, as records or PlanRows: k samples of
    mean_response_tokens."""
    return round(sum(_k_tokens(r) for r in rows))


def charged_profile_tokens(rows: Sequence[PlanRow], meta: Mapping) -> int:
    """The profile's generated tokens a run on a plan is charged from its start, as its FLOPs:
    none where the plan's metadata records no profile cost (a plan made by hand,
    validate.check_plan_meta), whose rows' k and lengths no profile drew."""
    return profile_tokens(rows) if meta.get("profile_flops") is not None else 0


def _k_tokens(row: Mapping | PlanRow) -> float:
    if isinstance(row, Mapping):
        return row["k"] * row["mean_response_tokens"]
    return row.k * row.mean_response_tokens


def flops_record(flops: dict[str, float]) -> dict:
    record = {f"flops_{phase}_cum": flops[phase] for phase in PHASES}
    record["flops_total_cum"] = sum(flops.values())
    return record


def run_summary(records: list[dict]) -> dict:
    """Accuracy and rollout totals of a run's metrics records (step 0 = the first eval)."""
    evals = [r for r in records if "eval_acc" in r]
    steps = [r for r in records if r["step"] > 0]
    generated = sum(r["rollouts"] for r in steps)
    informative = sum(r["informative_fraction"] * r["rollouts"] for r in steps)
    return {
        "initial_eval_acc": evals[0]["eval_acc"],
        "final_eval_acc": evals[-1]["eval_acc"],
        "initial_eval_acc_greedy": evals[0].get("eval_acc_greedy"),
        "final_eval_acc_greedy": evals[-1].get("eval_acc_greedy"),
        "initial_eval_acc_by_bucket": evals[0]["eval_acc_by_bucket"],
        "final_eval_acc_by_bucket": evals[-1]["eval_acc_by_bucket"],
        "informative_fraction": informative / generated if generated else 0.0,
        "rollouts": generated,
        # what had a backward pass (down-sampling trains part of an informative group)
        "trained_rollouts": sum(r["trained_rollouts"] for r in steps)
        if all("trained_rollouts" in r for r in steps)
        else None,
    }
