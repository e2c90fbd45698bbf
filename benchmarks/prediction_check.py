"""How close `sgpo plan`'s predicted informative fraction comes to what training measures, per
seed, when the plan is made from a first-success profile (what the best plan and the demo use),
from one with a share of its queries drawn in full, and from a full k = 8 profile.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prediction_check.py --out runs/predcheck \
        --seeds 0 1 2 3 4 5 6 7 8 9

Per compare config (default: the three benchmark mixes) and seed, with the resolved settings
of the best row (`sgpo-solvable-g8-ds4-fs-drop-same-update`): its first-success profile and
plan; the same profile with a share of the queries drawn in full (`profile.full_share`,
`--full-share`) and its plan; a full k = 8 profile and its plan (all three keep the same
queries with G = 8: a first-success profile is a prefix of the full one); then one pass of
sgpo's trainer over the first-success plan, the steps that take every kept query once.
Measured: the share of that pass's generated responses that are in groups with both outcomes
(each kept query's first group, from metrics.jsonl's `group_outcomes`). Predicted: each plan's
`predicted_informative_fraction` (sgpo/core/predict.py), which scores the initial policy; the
pass trains as it goes, so the measurement includes a first epoch's drift. Finished steps are
reused. Writes OUT/prediction_check.json (every seed's numbers) and prints a table.

Then a simulation of larger datasets: with each mix's success rates drawn from the prior
fitted to all its seeds' full profiles pooled, profiles of n queries (first-success, with each
of `--shares` drawn in full, and full) are drawn and predicted from as above; the table gives
each prediction's error against the drawn queries' true informative fraction (G = 8, the
queries solved at least once) over `--draws` datasets per size, and the profile's samples per
query.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
from trl_savings import BEST, profile_and_plan, write_config
from trl_vs_sgpo import sgpo_cli

from sgpo.compare import load_compare_config, method_config
from sgpo.config import RunConfig
from sgpo.core.predict import Allocation, QueryCost, epoch_costs, fit_rate_prior
from sgpo.io import read_jsonl, read_table

MIXES = ("examples/compare.yaml", "examples/compare-balanced.yaml", "examples/compare-hard.yaml")
FIELD = "predicted_informative_fraction"


def profiled(config: RunConfig, **update: object) -> RunConfig:
    return config.model_copy(update={"profile": config.profile.model_copy(update=update)})


def profile_kinds(best: RunConfig, share: float) -> dict[str, RunConfig]:
    """The best row's first-success profile, the same with a share of the queries drawn in
    full (profile.full_share), and every query drawn in full."""
    return {
        "first-success": best,
        f"full share {share}": profiled(best, full_share=share),
        "full": profiled(best, adaptive=False, adaptive_stop="both_outcomes"),
    }


def planned(config: RunConfig, out: Path) -> dict:
    """Profile and plan into out (reused when there): the plan's summary, and the profile's
    samples per query."""
    if not (out / "plan.parquet").exists():
        profile_and_plan(write_config(config, out.with_suffix(".yaml")), out)
    rows, meta = read_table(out / "plan.parquet")
    samples = statistics.fmean(r["k"] for r in read_table(out / "profile.parquet")[0])
    return {"kept": sum(r["kept"] for r in rows), "samples": samples, **meta["summary"]}


def first_pass_informative(config: RunConfig, plan: Path, kept: int, out: Path) -> float:
    """Train until every kept query had one group; the share of those groups' responses that
    are in mixed groups."""
    if not (out / "summary.json").exists():
        steps = math.ceil(kept * config.plan.g_max / config.train.rollout_budget)
        train = config.model_copy(
            update={
                "train": config.train.model_copy(update={"steps": steps, "eval_every": 0}),
                "eval": config.eval.model_copy(update={"n_samples": 1, "greedy": False}),
            }
        )
        config_file = write_config(train, out.with_suffix(".yaml"))
        args = ["train", "-c", str(config_file), "-o", str(out), "--plan", str(plan)]
        sgpo_cli(*args, "--overwrite")
    first: dict[int, tuple[int, int]] = {}
    for record in read_jsonl(out / "metrics.jsonl"):
        for query_id, size, correct in record.get("group_outcomes", []):
            first.setdefault(query_id, (size, correct))
    if len(first) != kept:
        raise RuntimeError(f"{out}: {len(first)} kept queries trained, the plan keeps {kept}")
    mixed = sum(size for size, correct in first.values() if 0 < correct < size)
    return mixed / sum(size for size, _ in first.values())


def check_seed(config_path: Path, seed: int, share: float, out: Path) -> dict:
    cfg, base = load_compare_config(config_path)
    best = method_config(cfg, base, BEST, seed, [])
    plans = {
        kind: planned(config, out / kind.replace(" ", "-"))
        for kind, config in profile_kinds(best, share).items()
    }
    kept = plans["first-success"]["kept"]
    if any(plan["kept"] != kept for plan in plans.values()):
        raise RuntimeError(f"{out}: the profiles keep different queries")
    measured = first_pass_informative(
        best, out / "first-success" / "plan.parquet", kept, out / "train"
    )
    return {
        "kept": kept,
        "measured_first_pass": measured,
        "predicted": {kind: plan[FIELD] for kind, plan in plans.items()},
        "profile_samples_per_query": {kind: plan["samples"] for kind, plan in plans.items()},
    }


def correlation(xs: list[float], ys: list[float]) -> str:
    return f"{statistics.correlation(xs, ys):+.2f}" if len(xs) > 1 else "-"


def table(results: dict[str, dict[int, dict]]) -> str:
    """Per mix and profile: the prediction's mean, its spread over seeds and its error against
    the measurement (mean and root mean square), the measurement's own spread, and the
    profile's samples per query."""
    lines = [
        "| mix | seeds | measured, mean (sd over seeds) | profile | samples per query | "
        "predicted, mean (sd) | error, mean | error, rms | correlation with measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mix, seeds in results.items():
        measured = [r["measured_first_pass"] for r in seeds.values()]
        for kind in next(iter(seeds.values()))["predicted"]:
            predicted = [r["predicted"][kind] for r in seeds.values()]
            samples = statistics.fmean(r["profile_samples_per_query"][kind] for r in seeds.values())
            errors = [p - m for p, m in zip(predicted, measured, strict=True)]
            lines.append(
                f"| {mix} | {len(seeds)} | {statistics.fmean(measured):.3f} "
                f"({statistics.pstdev(measured):.3f}) | {kind} | {samples:.2f} | "
                f"{statistics.fmean(predicted):.3f} ({statistics.pstdev(predicted):.3f}) | "
                f"{statistics.fmean(errors):+.3f} | "
                f"{math.sqrt(statistics.fmean(e * e for e in errors)):.3f} | "
                f"{correlation(predicted, measured)} |"
            )
    return "\n".join(lines)


def kept_informative(outcomes: list[tuple[int, int]], g: int = 8) -> float:
    """sgpo plan's prediction (core/predict.py) for G = g on the queries solved at least once;
    costs do not enter it."""
    queries = [QueryCost(n_correct, k, 0.0, 0.0, 0.0) for n_correct, k in outcomes]
    sizes = [g if n_correct else 0 for n_correct, _ in outcomes]
    expected = epoch_costs(queries, Allocation(sizes), fit_rate_prior(outcomes))
    return expected["informative"] / expected["rollouts"]


def record(draws: np.ndarray, in_full: bool) -> tuple[int, int]:
    """What a first-success profile records of a query's k draws, (1, samples to the first
    success) or (0, k); (correct, k) where the query is drawn in full."""
    if in_full:
        return int(draws.sum()), len(draws)
    return (1, int(np.argmax(draws)) + 1) if draws.any() else (0, len(draws))


def simulate(
    full_profiles: list[Path], sizes: list[int], shares: list[float], draws: int, k: int = 8
) -> dict:
    """Per dataset size and profile (first-success, each share drawn in full, full): the
    prediction's error (mean, sd) against the drawn queries' true informative fraction, and
    the profile's samples per query; rates drawn from the pooled full profiles' prior."""
    pooled = [(r["n_correct"], r["k"]) for path in full_profiles for r in read_table(path)[0]]
    truth = fit_rate_prior(pooled)
    rates, weights = np.array(truth.rates), np.array(truth.weights)
    rng = np.random.default_rng(0)
    kinds = {"first-success": 0.0} | {f"full share {s}": s for s in shares} | {"full": 1.0}
    out: dict = {}
    for size in sizes:
        errors: dict[str, list[float]] = {kind: [] for kind in kinds}
        cost: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(draws):
            p = rng.choice(rates, size=size, p=weights / weights.sum())
            samples = rng.random((size, k)) < p[:, None]
            solved = samples.any(axis=1)
            true = float(np.mean(1 - p[solved] ** k - (1 - p[solved]) ** k))
            coins = rng.random(size)
            for kind, share in kinds.items():
                records = [record(s, c < share) for s, c in zip(samples, coins, strict=True)]
                errors[kind].append(kept_informative(records) - true)
                cost[kind].append(statistics.fmean(n for _, n in records))
        out[size] = {
            kind: {
                "mean": statistics.fmean(errors[kind]),
                "sd": statistics.pstdev(errors[kind]),
                "samples_per_query": statistics.fmean(cost[kind]),
            }
            for kind in kinds
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/predcheck"))
    parser.add_argument("--configs", type=Path, nargs="+", default=[Path(m) for m in MIXES])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--full-share", type=float, default=0.25, help="on the seeds' profiles")
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 1920, 7680])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, dict[int, dict]] = {}
    for config_path in args.configs:
        mix = config_path.stem
        for seed in args.seeds:
            result = check_seed(config_path, seed, args.full_share, args.out / mix / f"s{seed}")
            results.setdefault(mix, {})[seed] = result
            print(mix, seed, json.dumps(result), flush=True)
    simulated = {
        mix: simulate(
            [args.out / mix / f"s{s}" / "full" / "profile.parquet" for s in args.seeds],
            args.sizes,
            args.shares,
            args.draws,
        )
        for mix in results
    }
    (args.out / "prediction_check.json").write_text(
        json.dumps({"seeds": results, "simulated": simulated}, indent=1)
    )
    print(table(results))
    kinds = list(next(iter(next(iter(simulated.values())).values())))
    print(
        "\n| mix | queries | " + " | ".join(f"{k}: error mean (sd), samples" for k in kinds) + " |"
    )
    print("|---|---|" + "---|" * len(kinds))
    for mix, by_size in simulated.items():
        for size, by_kind in by_size.items():
            cells = [
                f"{e['mean']:+.3f} ({e['sd']:.3f}), {e['samples_per_query']:.2f}"
                for e in by_kind.values()
            ]
            print(f"| {mix} | {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
