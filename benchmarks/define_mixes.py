"""Define the benchmark's difficulty mixes from target profile histograms, before any method
runs: profile every digit bucket of the addition task under the shipped model (k = 8, the
compare configs' sampling), then pick for each target the bucket weights (a 0.05 grid) whose
predicted step-0 profile is closest to it. Prints the measured per-bucket profile and, per mix,
the weights and what they give; BENCHMARKS.md records the output.

    .venv/bin/python benchmarks/define_mixes.py [--per-bucket 200]

Targets (published starting points of real RLVR runs, see BENCHMARKS.md):
  easy:     40% of queries all-correct at k = 8 (distilled reasoning models on hard math)
  balanced: 60% of GRPO(G=8) rollouts in zero-advantage groups (0.5B instruct on GSM8K), with
            as many all-correct as never-solved queries
  hard:     most queries never solved: 60% at p_hat = 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
from pathlib import Path

from sgpo.config import load_config
from sgpo.io import read_table
from sgpo.profile import run_profile
from sgpo.tasks.addition import pool_size

DIGITS = (1, 2, 3, 4)
K = 8


def bucket_profiles(per_bucket: int) -> dict[int, list[int]]:
    """n_correct of k = 8 samples for up to per_bucket train queries of each digit count (1-digit
    sums have only 79 training pairs)."""
    profiles = {}
    for d in DIGITS:
        n = min(per_bucket, pool_size(d, "train") or per_bucket)
        config = load_config(
            None,
            [
                f"task.addition.digits=[{d}]",
                "task.addition.weights=[1.0]",
                f"task.addition.n_train={n}",
                "task.addition.n_eval=1",
                f"profile.k={K}",
                "sampling.max_new_tokens=7",
                "seed=1000",  # not a benchmark seed
            ],
        )
        with tempfile.TemporaryDirectory() as tmp:
            run_profile(config, Path(tmp))
            rows, _ = read_table(Path(tmp) / "profile.parquet")
        profiles[d] = [r["n_correct"] for r in rows]
    return profiles


def jeffreys_informative_probability(n_correct: int, k: int, g: int) -> float:
    """P(a group of g rollouts has both outcomes), p under the query's Jeffreys posterior
    Beta(n + 1/2, k - n + 1/2): the rule the mixes were defined with (before `sgpo plan`
    moved to a prior fitted to the whole profile), kept so this script still picks them."""
    a, b = n_correct + 0.5, k - n_correct + 0.5

    def expected_power(a: float, b: float) -> float:  # E[p^g], p ~ Beta(a, b)
        return math.exp(
            math.lgamma(a + g) - math.lgamma(a) + math.lgamma(a + b) - math.lgamma(a + b + g)
        )

    return 1.0 - expected_power(a, b) - expected_power(b, a)


def bucket_stats(ns: list[int]) -> dict[str, float]:
    """A bucket's step-0 profile: share of queries at p_hat = 1 and 0, and the share of
    GRPO(G=8) rollouts in zero-advantage groups (Jeffreys posterior per query)."""
    dead = sum(1 - jeffreys_informative_probability(n, K, 8) for n in ns)
    return {
        "p_hat_1": sum(n == K for n in ns) / len(ns),
        "p_hat_0": sum(n == 0 for n in ns) / len(ns),
        "grpo8_zero_adv": dead / len(ns),
    }


def mix_stats(weights: tuple[float, ...], per_bucket: dict[int, dict]) -> dict[str, float]:
    """A mix's predicted profile: the weighted mean of its buckets'."""
    return {
        stat: sum(w * per_bucket[d][stat] for w, d in zip(weights, DIGITS, strict=True))
        for stat in ("p_hat_1", "p_hat_0", "grpo8_zero_adv")
    }


TARGETS = {
    "easy": ("p_hat_1", 0.40),
    "balanced": ("grpo8_zero_adv", 0.60),
    "hard": ("p_hat_0", 0.60),
}


def closest_mix(profiles: dict[int, list[int]], stat: str, target: float, n_train: int) -> dict:
    """Weights on a 0.05 grid hitting the target; ties go to the most even spread (every
    bucket kept at >= 0.05 so each mix spans the whole difficulty range, and no bucket asked
    for more distinct training sums than exist: 79 for 1-digit)."""
    grid = [i / 20 for i in range(1, 18)]
    per_bucket = {d: bucket_stats(ns) for d, ns in profiles.items()}
    pools = {d: pool_size(d, "train") or n_train for d in DIGITS}
    best = None
    for w in itertools.product(grid, repeat=len(DIGITS)):
        if abs(sum(w) - 1) > 1e-9 or any(
            wd * n_train > pools[d] for wd, d in zip(w, DIGITS, strict=True)
        ):
            continue
        stats = mix_stats(w, per_bucket)
        # "balanced" also balances the two ways a group is dead (all right / all wrong), as in
        # a GSM8K start; the other mixes prefer the most even weights.
        spread = abs(stats["p_hat_1"] - stats["p_hat_0"]) if stat == "grpo8_zero_adv" else max(w)
        score = (round(abs(stats[stat] - target), 2), spread)
        if best is None or score < best[0]:
            best = (score, w, stats)
    assert best is not None
    return {"weights": list(best[1]), "predicted": best[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-bucket", type=int, default=200)
    parser.add_argument("--n-train", type=int, default=192, help="the compare configs' n_train")
    args = parser.parse_args()
    profiles = bucket_profiles(args.per_bucket)
    histogram = {d: [ns.count(n) / len(ns) for n in range(K + 1)] for d, ns in profiles.items()}
    mixes = {name: closest_mix(profiles, *target, args.n_train) for name, target in TARGETS.items()}
    print(json.dumps({"n_correct_histogram_by_digits": histogram, "mixes": mixes}, indent=1))


if __name__ == "__main__":
    main()
