"""Read a compare's runs in one more currency: train-all FLOPs with generation as an engine with
prefix caching runs it: a group's prompt is prefilled once, not once per response (vLLM V1 turns
its automatic prefix caching on by default; verl 0.9.1's rollout config sets
enable_prefix_caching: true). Beside the three currencies of `sgpo compare`, not in place of
one (the issue's targets are read in those).

Why it is worth a look: on the built-in task a prompt is 4-10 tokens (5.7 on average) and a
response 2-5, so most of a rollout's FLOPs in the convention (sgpo.core.flops) are its prompt's
prefill, which a caching engine pays once per group. Real RLVR prompts are shorter than their
responses.

What is read: each training group the run logged (metrics.jsonl `group_outcomes`: query id,
responses generated), the query's prompt tokens (the run's config.yaml rebuilds its task and
tokenizer), and sgpo.core.flops.shared_prefill_flops. The profile is charged as the convention
charges it (no sharing counted: conservative against the sGPO rows, the baseline has none).
The crossing read is crossing_interval.py's (compare.json's, with the baseline's last evaluation
as its total), the fitted read compare.json's (sgpo.core.curves), both redone on curves whose
cost is flops_train_all_cum minus the prefill saved so far.

    .venv/bin/python benchmarks/prefix_cache_read.py runs/pc/easy runs/pc/balanced runs/pc/hard
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from crossing_interval import crossing_ratio

from sgpo.compare import final_accuracy, seed_of
from sgpo.core.curves import fit_saturating, fit_speedup, gain_level, mean_curve
from sgpo.core.flops import ModelShape, shared_prefill_flops
from sgpo.io import read_json, read_jsonl
from sgpo.runfiles import CONFIG_FILE, SUMMARY_FILE

Curve = list[tuple[float, float]]


def cached_costs(
    records: list[dict], shape: ModelShape, prompt_tokens: dict[str, int]
) -> tuple[Curve, Curve, float]:
    """(the evaluations' (train-all cost, accuracy), the same with the prefill a caching engine
    saves taken out, the whole run's saving): records in file order, each step's groups saved
    before its evaluation is read (both are the cumulative cost after the step)."""
    train_all: Curve = []
    cached: Curve = []
    saved = 0.0
    for record in records:
        if record.get("reused_rollouts"):  # the profile paid for them: no prefill of the step's
            raise ValueError(
                f"step {record['step']}: {record['reused_rollouts']} reused profile samples; "
                "this read counts every logged response as generated in training"
            )
        if "rollouts" in record and "group_outcomes" not in record:
            raise ValueError(f"step {record['step']}: no group_outcomes (a run of an older sgpo)")
        saved += sum(
            shared_prefill_flops(shape, prompt_tokens[query], size)
            for query, size, _ in record.get("group_outcomes", [])
        )
        if "eval_acc" in record:
            cost = record["flops_train_all_cum"]
            train_all.append((cost, record["eval_acc"]))
            cached.append((cost - saved, record["eval_acc"]))
    return train_all, cached, saved


def fitted(baseline: list[Curve], method: list[Curve]) -> float | None:
    """compare.json's fitted read: the baseline's cost to 95% of its fitted gain / the method's."""
    base_fit, fit = fit_saturating(mean_curve(baseline)), fit_saturating(mean_curve(method))
    return fit_speedup(base_fit, fit, gain_level(base_fit))


class PromptTokens:
    """Prompt tokens of every training query of a run's task, as its policy renders and encodes
    them; the model's shape for the FLOPs convention. Loaded once per (model, task, seed)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[ModelShape, dict[str, int]]] = {}

    def __call__(self, run_dir: Path) -> tuple[ModelShape, dict[str, int]]:
        from sgpo.config import load_config
        from sgpo.models import load_policy, model_shape
        from sgpo.tasks import load_run_task

        config = load_config(run_dir / CONFIG_FILE)
        key = repr((config.model, config.task, config.seed))
        if key not in self._cache:
            policy = load_policy(config)
            queries = load_run_task(config).train
            ids = policy.encode([policy.render(q.prompt) for q in queries])
            tokens = {q.query_id: len(i) for q, i in zip(queries, ids, strict=True)}
            self._cache[key] = (model_shape(policy.model), tokens)
        return self._cache[key]


def read_compare(
    compare_dir: Path, baseline: str, window: int, prompts: PromptTokens
) -> list[dict]:
    """One row per method of a compare directory (runs/<method>/seed-<s>/)."""
    curves: dict[str, dict[str, list]] = {}
    for method_dir in sorted(p for p in (compare_dir / "runs").iterdir() if p.is_dir()):
        per = curves.setdefault(method_dir.name, {"train_all": [], "cached": [], "saved": []})
        for run_dir in sorted(d for d in method_dir.iterdir() if seed_of(d) is not None):
            shape, tokens = prompts(run_dir)
            records = read_jsonl(run_dir / "metrics.jsonl")
            try:
                train_all, cached, saved = cached_costs(records, shape, tokens)
            except ValueError as e:
                raise SystemExit(f"{run_dir / 'metrics.jsonl'}: {e}") from e
            per["train_all"].append(train_all)
            per["cached"].append(cached)
            per["saved"].append(saved / read_json(run_dir / SUMMARY_FILE)["total_flops_train_all"])
    base = curves[baseline]
    rows = []
    for method, per in curves.items():
        rows.append(
            {
                "compare": str(compare_dir),
                "method": method,
                "seeds": len(per["saved"]),
                "final_acc": statistics.fmean(final_accuracy(c, window) for c in per["train_all"]),
                "saved_share": statistics.fmean(per["saved"]),
                "crossing_train_all": crossing_ratio(base["train_all"], per["train_all"], window),
                "crossing_cached": crossing_ratio(base["cached"], per["cached"], window),
                "fitted_train_all": fitted(base["train_all"], per["train_all"]),
                "fitted_cached": fitted(base["cached"], per["cached"]),
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    """A read as compare.md prints it (crossing_ratio: 0 = never, inf = at start)."""
    if not value:
        return "never"
    return "at start" if math.isinf(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compares", nargs="+", type=Path, help="sgpo compare output directories")
    parser.add_argument("--baseline", default="grpo-g8")
    parser.add_argument("--window", type=int, default=3, help="compare's final_window")
    args = parser.parse_args()
    prompts = PromptTokens()
    print(
        "| compare | method | seeds | final acc | train-all FLOPs saved by a prefix cache | "
        "crossing: train-all / prefix-cached | fitted: train-all / prefix-cached |"
    )
    print("|---|---|---|---|---|---|---|")
    for compare_dir in args.compares:
        for row in read_compare(compare_dir, args.baseline, args.window, prompts):
            print(
                f"| {row['compare']} | {row['method']} | {row['seeds']} | {row['final_acc']:.3f} | "
                f"{row['saved_share']:.2f} | {_fmt(row['crossing_train_all'])} / "
                f"{_fmt(row['crossing_cached'])} | {_fmt(row['fitted_train_all'])} / "
                f"{_fmt(row['fitted_cached'])} |"
            )


if __name__ == "__main__":
    main()
