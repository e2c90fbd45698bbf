"""Where did each method's accuracy come from? Sampled held-out accuracy per operand size
(sgpo.skill's measurement: ~800 samples per bucket) of the final model of every method in a
compare output directory, for one seed, next to the initial model's.

    .venv/bin/python benchmarks/skill_by_bucket.py runs/bench2/report-balanced --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sgpo.compare import seed_run_dir
from sgpo.skill import SKILL_DIGITS, heldout_skill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", help="comma-separated (default: every method run)")
    args = parser.parse_args()
    runs = args.compare_dir / "runs"
    methods = args.methods.split(",") if args.methods else sorted(p.name for p in runs.iterdir())
    buckets = [f"{d}-digit" for d in SKILL_DIGITS]
    print(f"| model | {' | '.join(buckets)} |")
    print(f"|---|{'---|' * len(buckets)}")
    rows = {"initial (embedded)": "embedded"}
    rows |= {m: str(seed_run_dir(args.compare_dir, m, args.seed) / "final") for m in methods}
    for name, model in rows.items():
        skill = heldout_skill(model)
        print(f"| {name} | {' | '.join(f'{skill[b]:.3f}' for b in buckets)} |", flush=True)


if __name__ == "__main__":
    main()
