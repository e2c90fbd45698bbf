"""How close `sgpo plan`'s predicted informative fraction comes to what training measures, per
seed, when the plan is made from a first-success profile (what the best plan and the demo use)
and from a full k = 8 profile of the same queries.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prediction_check.py --out runs/predcheck \
        --seeds 0 1 2 3 4 5 6 7 8 9

Per compare config (default: the three benchmark mixes) and seed, with the resolved settings
of the best row (`sgpo-solvable-g8-ds4-fs-drop-same-update`): its first-success profile and
plan; a full k = 8 profile and the same plan from it (the same kept queries, G = 8: a
first-success profile is a prefix of the full one); then one pass of sgpo's trainer over the
first-success plan, the steps that take every kept query once. Measured: the share of that
pass's generated responses that are in groups with both outcomes (each kept query's first
group, from metrics.jsonl's `group_outcomes`). Predicted: each plan's
`predicted_informative_fraction` (sgpo/core/predict.py), which scores the initial policy; the
pass trains as it goes, so the measurement includes a first epoch's drift. Finished steps are
reused. Writes OUT/prediction_check.json (every seed's numbers) and prints a table.

Then a simulation of larger datasets: with each mix's success rates drawn from the prior
fitted to all its seeds' full profiles pooled, profiles of n queries (first-success and full)
are drawn and planned as above; the table gives each prediction's error against the drawn
queries' true informative fraction (G = 8, the queries solved at least once), over `--draws`
datasets per size.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
from trl_savings import BEST, write_config
from trl_vs_sgpo import sgpo_cli

from sgpo.compare import load_compare_config, method_config
from sgpo.config import RunConfig
from sgpo.core.predict import expected_group, fit_rate_prior
from sgpo.io import read_jsonl, read_table

MIXES = ("examples/compare.yaml", "examples/compare-balanced.yaml", "examples/compare-hard.yaml")
FIELD = "predicted_informative_fraction"


def full_profile(config: RunConfig) -> RunConfig:
    """The same config with every query sampled k times."""
    profile = config.profile.model_copy(
        update={"adaptive": False, "adaptive_stop": "both_outcomes"}
    )
    return config.model_copy(update={"profile": profile})


def planned(config: RunConfig, out: Path) -> dict:
    """Profile and plan into out (reused when there); the plan's summary."""
    if not (out / "plan.parquet").exists():
        config_file = write_config(config, out.with_suffix(".yaml"))
        sgpo_cli("profile", "-c", str(config_file), "-o", str(out), "--overwrite")
        sgpo_cli("plan", "-c", str(config_file), "-o", str(out), "--overwrite")
    rows, meta = read_table(out / "plan.parquet")
    return {"kept": sum(r["kept"] for r in rows), **meta["summary"]}


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


def check_seed(config_path: Path, seed: int, out: Path) -> dict:
    cfg, base = load_compare_config(config_path)
    best = method_config(cfg, base, BEST, seed, [])
    first_success = planned(best, out / "first-success")
    full = planned(full_profile(best), out / "full")
    if full["kept"] != first_success["kept"]:
        raise RuntimeError(f"{out}: the two profiles keep different queries")
    measured = first_pass_informative(
        best, out / "first-success" / "plan.parquet", first_success["kept"], out / "train"
    )
    return {
        "kept": first_success["kept"],
        "predicted_first_success": first_success[FIELD],
        "predicted_full": full[FIELD],
        "measured_first_pass": measured,
    }


def correlation(xs: list[float], ys: list[float]) -> str:
    return f"{statistics.correlation(xs, ys):+.2f}" if len(xs) > 1 else "-"


def table(results: dict[str, dict[int, dict]]) -> str:
    """Per mix: each prediction's mean, its spread over seeds and its error against the
    measurement (mean and root mean square), and the measurement's own spread."""
    lines = [
        "| mix | seeds | measured, mean (sd over seeds) | profile | predicted, mean (sd) | "
        "error, mean | error, rms | correlation with measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mix, seeds in results.items():
        measured = [r["measured_first_pass"] for r in seeds.values()]
        for profile in ("first_success", "full"):
            predicted = [r[f"predicted_{profile}"] for r in seeds.values()]
            errors = [p - m for p, m in zip(predicted, measured, strict=True)]
            lines.append(
                f"| {mix} | {len(seeds)} | {statistics.fmean(measured):.3f} "
                f"({statistics.pstdev(measured):.3f}) | {profile.replace('_', '-')} | "
                f"{statistics.fmean(predicted):.3f} ({statistics.pstdev(predicted):.3f}) | "
                f"{statistics.fmean(errors):+.3f} | "
                f"{math.sqrt(statistics.fmean(e * e for e in errors)):.3f} | "
                f"{correlation(predicted, measured)} |"
            )
    return "\n".join(lines)


def kept_informative(outcomes: list[tuple[int, int]], g: int = 8) -> float:
    """sgpo plan's prediction for G = g on the queries solved at least once."""
    prior = fit_rate_prior(outcomes)
    cache: dict[tuple[int, int], float] = {}
    kept = [o for o in outcomes if o[0] > 0]
    for n_correct, k in set(kept):
        cache[n_correct, k] = expected_group(n_correct, k, g, prior).informative / g
    return statistics.fmean(cache[o] for o in kept)


def first_success_record(draws: np.ndarray) -> tuple[int, int]:
    """(1, samples to the first success) or (0, k): what a first-success profile records."""
    return (1, int(np.argmax(draws)) + 1) if draws.any() else (0, len(draws))


def full_record(draws: np.ndarray) -> tuple[int, int]:
    return int(draws.sum()), len(draws)


RECORDS: dict[str, Callable[[np.ndarray], tuple[int, int]]] = {
    "first-success": first_success_record,
    "full": full_record,
}


def simulate(full_profiles: list[Path], sizes: list[int], draws: int, k: int = 8) -> dict:
    """Per dataset size and profile: the prediction's error (mean, sd) against the true
    informative fraction of the drawn queries, rates drawn from the pooled profiles' prior."""
    pooled = [(r["n_correct"], r["k"]) for path in full_profiles for r in read_table(path)[0]]
    truth = fit_rate_prior(pooled)
    rates, weights = np.array(truth.rates), np.array(truth.weights)
    rng = np.random.default_rng(0)
    out: dict = {}
    for size in sizes:
        errors: dict[str, list[float]] = {kind: [] for kind in RECORDS}
        for _ in range(draws):
            p = rng.choice(rates, size=size, p=weights / weights.sum())
            samples = rng.random((size, k)) < p[:, None]
            solved = samples.any(axis=1)
            true = float(np.mean(1 - p[solved] ** k - (1 - p[solved]) ** k))
            for kind, record in RECORDS.items():
                predicted = kept_informative([record(s) for s in samples])
                errors[kind].append(predicted - true)
        out[size] = {
            kind: {"mean": statistics.fmean(e), "sd": statistics.pstdev(e)}
            for kind, e in errors.items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/predcheck"))
    parser.add_argument("--configs", type=Path, nargs="+", default=[Path(m) for m in MIXES])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 1920, 7680])
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, dict[int, dict]] = {}
    for config_path in args.configs:
        mix = config_path.stem
        for seed in args.seeds:
            result = check_seed(config_path, seed, args.out / mix / f"s{seed}")
            results.setdefault(mix, {})[seed] = result
            print(mix, seed, json.dumps(result), flush=True)
    simulated = {
        mix: simulate(
            [args.out / mix / f"s{s}" / "full" / "profile.parquet" for s in args.seeds],
            args.sizes,
            args.draws,
        )
        for mix in results
    }
    (args.out / "prediction_check.json").write_text(
        json.dumps({"seeds": results, "simulated": simulated}, indent=1)
    )
    print(table(results))
    print("\n| mix | queries | first-success: error mean (sd) | full: error mean (sd) |")
    print("|---|---|---|---|")
    for mix, by_size in simulated.items():
        for size, e in by_size.items():
            fs, full = e["first-success"], e["full"]
            print(
                f"| {mix} | {size} | {fs['mean']:+.3f} ({fs['sd']:.3f}) | "
                f"{full['mean']:+.3f} ({full['sd']:.3f}) |"
            )


if __name__ == "__main__":
    main()
