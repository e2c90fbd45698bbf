"""Stage 4, evaluate: held-out accuracy, greedy and sampled (mean over n samples per query),
overall and per difficulty bucket. Sampling streams are seeded per (seed, query, sample) and are
the same at every evaluation of a run, so successive evaluations differ only by the policy.
Evaluation FLOPs are measurement, not training cost, and are not charged to any method."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from sgpo.core.rewards import is_correct
from sgpo.engine import GenerationEngine, SamplingParams, stream_seed
from sgpo.tasks import Query
from sgpo.verify import Verifier


def bucket_means(scores: list[float], buckets: list[str]) -> dict[str, float]:
    grouped: dict[str, list[float]] = defaultdict(list)
    for s, b in zip(scores, buckets, strict=True):
        grouped[b].append(s)
    return {b: sum(v) / len(v) for b, v in sorted(grouped.items())}


def evaluate(
    engine: GenerationEngine,
    verifier: Verifier,
    queries: list[Query],
    params: SamplingParams,
    n_samples: int,
    greedy: bool,
    seed: int,
    threshold: float,
    stop_asked: Callable[[], bool] | None = None,
) -> dict:
    """Accuracy of the engine's policy on queries (a response is correct from threshold up).

    stop_asked, checked before each generation batch, ends the evaluation early with
    sgpo.engine.GenerationStopped. Every response is generated before any is scored, so a
    stopped evaluation has added nothing to the verifier's counts (the checkpoint then taken
    holds those from before it)."""
    result: dict = {"eval_queries": len(queries)}
    before = verifier.stats.counts()
    buckets = [q.difficulty or "all" for q in queries]
    prompts = [engine.policy.render(q.prompt) for q in queries]
    greedy_completions = (
        engine.generate(
            prompts,
            [0] * len(queries),
            SamplingParams(max_new_tokens=params.max_new_tokens, greedy=True),
            progress="eval (greedy)",
            stop_asked=stop_asked,
        )
        if greedy
        else None
    )
    expanded = [p for p in prompts for _ in range(n_samples)]
    seeds = [stream_seed(seed, "eval", q.query_id, j) for q in queries for j in range(n_samples)]
    completions = engine.generate(
        expanded, seeds, params, progress="eval (sampled)", stop_asked=stop_asked
    )
    if greedy_completions is not None:
        scores = verifier.score(
            [engine.policy.answer_text(c.text) for c in greedy_completions],
            [q.answer for q in queries],
            [q.query_id for q in queries],
        )
        correct = [float(is_correct(s, threshold)) for s in scores]
        result["eval_acc_greedy"] = sum(correct) / len(correct)
        result["eval_acc_greedy_by_bucket"] = bucket_means(correct, buckets)
    scores = verifier.score(
        [engine.policy.answer_text(c.text) for c in completions],
        [q.answer for q in queries for _ in range(n_samples)],
        [q.query_id for q in queries for _ in range(n_samples)],
    )
    solved = [is_correct(s, threshold) for s in scores]
    per_query = [
        sum(solved[i * n_samples : (i + 1) * n_samples]) / n_samples for i in range(len(queries))
    ]
    verifier.stats.stop_if_every_call_failed(verifier.spec, before, "the held-out queries")
    result["eval_acc"] = sum(per_query) / len(per_query)
    result["eval_acc_by_bucket"] = bucket_means(per_query, buckets)
    return result
