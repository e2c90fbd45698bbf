"""Collect the compare runs of benchmarks/run_compare.sh into benchmarks/results.md and copy
their plots (small PNGs) to benchmarks/figures/, and, for compares that carry their evaluation
curves (since the round 4 protocol), their compare.json to benchmarks/data/, so any read of the
curves can be redone without the runs. A section whose compare directory is not on this machine
keeps what results.md last held for it (runs/ is not committed).

    .venv/bin/python benchmarks/collect.py runs/bench
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

from sgpo.compare import CURRENCIES, final_accuracy_text

DEV_CONFIG = "benchmarks/dev-round2.yaml"
# report mix -> (its compare config, its step-0 profile)
REPORT_MIXES = {
    "easy": ("examples/compare.yaml", "~40% of queries all-correct at step 0"),
    "balanced": (
        "examples/compare-balanced.yaml",
        "~60% of GRPO(G=8) rollouts in zero-advantage groups at step 0",
    ),
    "hard": ("examples/compare-hard.yaml", "~60% of queries never solved at step 0"),
}
# compare output directory -> (config, label), in results.md's order
MIXES = {
    "dev": (DEV_CONFIG, "dev: balanced mix, dev seed 100 (variants chosen here)"),
    **{
        f"report-{mix}": (config, f"{mix}: {step0}")
        for mix, (config, step0) in REPORT_MIXES.items()
    },
    **{
        f"train-all-{mix}": (config, f"{mix}, equal budget in train-all FLOPs")
        for mix, (config, _) in REPORT_MIXES.items()
    },
    "dev5": (
        DEV_CONFIG,
        "dev rounds 5-7: balanced mix, dev seeds 100 and 101 (variants chosen here)",
    ),
    "dev8-2s": (DEV_CONFIG, "dev round 8: pilot, then commit, balanced mix, dev seeds 100 and 101"),
    "dev8": (DEV_CONFIG, "dev rounds 8-13: balanced mix, dev seeds 100-103, equal FLOPs"),
    "dev8-train-all": (
        DEV_CONFIG,
        "dev rounds 8-10: balanced mix, dev seeds 100-103, equal train-all FLOPs",
    ),
    "dev12": (DEV_CONFIG, "dev round 12: the lr, balanced mix, dev seeds 100-103"),
    "dev14": (DEV_CONFIG, "dev rounds 14-15: grow until mixed, balanced mix, dev seeds 100-103"),
    "dev14-train-all": (
        DEV_CONFIG,
        "dev rounds 14-15: grow until mixed, dev seeds 100-103, equal train-all FLOPs",
    ),
    "dev14-tokens": (
        DEV_CONFIG,
        "dev round 15: grow until mixed, dev seeds 100-103, equal generated tokens",
    ),
    "dev16": (DEV_CONFIG, "dev round 16: knapsack allocation, balanced mix, dev seeds 100-103"),
    "dev16-train-all": (
        DEV_CONFIG,
        "dev round 16: knapsack allocation, dev seeds 100-103, equal train-all FLOPs",
    ),
    **{
        f"{name}-{mix}": (
            DEV_CONFIG,
            f"dev round {title}, {mix} mix, dev seeds {seeds}, equal train-all FLOPs, "
            "evaluated every 4 steps",
        )
        for name, title, seeds in (
            ("dev17", "17: G for this trainer's FLOPs, cheaper steps", "100-103"),
            ("dev17b", "17b: G = 4 for every kept query", "100-109"),
            ("dev18", "18: small groups first, then the dense plan", "100-109"),
            ("dev19", "19: train the most varied few of each group (PODS)", "100-109"),
            ("dev20", "20: down-sampled steps with more rollouts", "100-109"),
            ("dev21", "21: down-sampled groups that stand for the whole group", "100-109"),
            ("dev22", "22: down-sample only skewed groups", "100-109"),
            ("dev23", "23: GRPO(G=8) down-sampled on the solvable queries", "100-109"),
            ("dev23b", "23b: the solvable filter without down-sampling", "100-109"),
            ("dev24", "24: half of the all-correct queries", "100-109"),
            ("dev25", "25: PODS to 2 on the solvable plan", "100-109"),
            ("dev26", "26: skip on history (GRESO) on the solvable plan", "100-109"),
            ("dev27", "27: GRESO's adaptive rule, steps filled across epochs", "100-109"),
            (
                "dev28",
                "28: skip on history with full steps, a streak before the first skip",
                "100-109",
            ),
            (
                "dev29",
                "29: the first training group is the profile (round 31's -fv2: a dropped "
                "query's group not trained; round 30: GRESO + PODS on GRPO, the control; "
                "round 32's -k2: a 2-sample profile; round 33's -fs: the profile stopped at "
                "each query's first success; rounds 34-36: PODS to 2, growth from 2, dead "
                "groups dropped)",
                "100-109",
            ),
        )
        for mix in ("balanced", "easy")
    },
    "demo-mix": (
        "benchmarks/demo-mix.yaml",
        "the demo's mix and settings, dev seeds 100-102, equal FLOPs (which plan the demo shows)",
    ),
    "demo-mix33": (
        "benchmarks/demo-mix.yaml",
        "the demo's mix and settings, dev seeds 100-102, equal FLOPs: the first-success "
        "profile against the demo's plan, trained on an H200",
    ),
}
# benchmarks/run_more_seeds.sh: seeds 0-9 for the comparison three seeds could not resolve, at
# each budget; then the same with METHODS=sgpo-dense,sgpo-dense-grow (grow until mixed, chosen on
# dev rounds 14-15); then, at the train-all budget only, every method evaluated every 4 steps
BUDGETS = (("", "FLOPs"), ("train-all-", "train-all FLOPs"), ("tokens-", "generated tokens"))
for _set, _what, _budgets in (
    ("", "", BUDGETS),
    ("grow-", "grow until mixed, ", BUDGETS),
    ("eval4-", "evaluated every 4 steps, ", BUDGETS[1:2]),
):
    for _mix, (_config, _) in REPORT_MIXES.items():
        for _stage, _budget in _budgets:
            MIXES[f"ten-seeds-{_set}{_stage}{_mix}"] = (
                _config,
                f"{_mix}, ten seeds, {_what}equal {_budget}",
            )
# Later report rounds, ten seeds evaluated every 4 steps at equal train-all FLOPs, each against
# GRPO(G=8) runs of its own or of an earlier round: compare directory prefix -> what it holds
REPORT_ROUNDS = {
    # a later session, the ten-seed eval4 runs lost: trained again (runs/report10/<mix>)
    "report10": "rounds 25-26's selections and sgpo-solvable-g8-ds4 trained again",
    # the next session, on a new machine: GRPO(G=8) trained again
    "report28": "round 28's selection",
    # GRPO(G=8) too on the H200 (float32; its evaluations equal the CPU runs' in 28 of 30
    # seeds and differ by one sample in 3200 in the other two)
    "report33": "round 33's selection, trained on an H200",
    # on the 2-core CPU against round 33's GRPO(G=8) runs (the H200's)
    "report36": "round 36's selections, dead groups dropped",
    # the drop with the whole batch's token-mean denominator (the update without the drop),
    # on the 2-core CPU against round 33's GRPO(G=8) runs
    "report37": "round 37, dead groups dropped with the whole batch's denominator",
    # PODS to 2 with skip on history and the same-update drop, against round 33's GRPO(G=8)
    "report40": "round 40, PODS to 2 with skip on history and the same-update drop",
    # the easy-best row with 96 responses per step, against round 33's GRPO(G=8)
    "report42": "round 42, the easy-best row with 96 responses per step",
}
# the easy-best train-all row and GRPO(G=8) on thirty report seeds (0-9: report37's runs)
MIXES["easy30"] = (
    "examples/compare.yaml",
    "easy, thirty seeds, evaluated every 4 steps, equal train-all FLOPs: the easy-best row",
)
# the best train-all row and GRPO(G=8) on twenty report seeds (0-9: report37's runs)
for _mix in ("balanced", "hard"):
    MIXES[f"more20-{_mix}"] = (
        REPORT_MIXES[_mix][0],
        f"{_mix}, twenty seeds, evaluated every 4 steps, equal train-all FLOPs: "
        "the best train-all row",
    )
for _round, _what in REPORT_ROUNDS.items():
    for _mix, (_config, _) in REPORT_MIXES.items():
        MIXES[f"{_round}-{_mix}"] = (
            _config,
            f"{_mix}, ten seeds, evaluated every 4 steps, equal train-all FLOPs: {_what}",
        )

FIT_KEYS = tuple(c.fit_speedup_key for c in CURRENCIES.values())


def previous_sections(path: Path) -> dict[str, list[str]]:
    """results.md's sections as last collected: heading label -> its lines (heading included)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        if current is not None:
            current.append(line)
    return sections


def paired_delta(method: dict, baseline: dict) -> str:
    """Final accuracy minus the baseline's, paired by seed: mean ± standard error."""
    pairs = zip(method["final_acc_per_seed"], baseline["final_acc_per_seed"], strict=True)
    diffs = [a - b for a, b in pairs]
    if len(diffs) < 2:
        return "-"
    return f"{statistics.fmean(diffs):+.3f} ± {statistics.stdev(diffs) / len(diffs) ** 0.5:.3f}"


def fmt(value: float | None, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def main(root: Path) -> None:
    here = Path(__file__).parent
    figures = here / "figures"
    figures.mkdir(exist_ok=True)
    data = here / "data"
    lines = ["# Measured results (generated by benchmarks/collect.py)", ""]
    previous = previous_sections(here / "results.md")
    for name, (config, label) in MIXES.items():
        path = root / name / "compare.json"
        if not path.exists():
            lines += previous.get(label, [f"## {label}", "", f"not run ({path} missing)", ""])
            if lines[-1]:  # the file's last section ends without a blank line
                lines.append("")
            continue
        result = json.loads(path.read_text())
        # compares since the round 4 protocol also carry the fitted read and their curves
        fitted = all(FIT_KEYS[0] in m for m in result["methods"].values())
        if fitted:
            data.mkdir(exist_ok=True)
            shutil.copyfile(path, data / f"{name}.compare.json")
        lines += [
            f"## {label}",
            "",
            f"`{config}`, seeds {result['seeds']}, target accuracy "
            f"{result['target_acc']:.3f} ({result['baseline']} final, mean over seeds)",
            "",
            "| method | final acc | vs baseline (paired) | FLOPs | ratio | train-all FLOPs | "
            "ratio train-all | generated tokens | ratio tokens | "
            + ("fitted speedup (FLOPs / train-all / tokens) | " if fitted else "")
            + "profile FLOPs | informative | steps | wall s/run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if fitted else ""),
        ]
        for method, m in result["methods"].items():
            lines.append(
                f"| {method} | {final_accuracy_text(m)} | "
                f"{paired_delta(m, result['methods'][result['baseline']])} | "
                f"{m['total_flops']:.3g} | {fmt(m['ratio_vs_grpo'], '.2f')} | "
                f"{m['total_flops_train_all']:.3g} | {fmt(m['ratio_vs_grpo_train_all'], '.2f')} | "
                f"{m['generated_tokens']:.3g} | {fmt(m['ratio_vs_grpo_tokens'], '.2f')} | "
                + (" / ".join(fmt(m[k], ".2f") for k in FIT_KEYS) + " | " if fitted else "")
                + f"{m['profile_flops']:.3g} | {m['informative_fraction']:.3f} | "
                f"{m['steps_mean']:.0f} | {m['wall_s']:.0f} |"
            )
        for png in ("accuracy_vs_flops.png", "informative_fraction.png"):
            shutil.copyfile(root / name / png, figures / f"{name}-{png}")
        lines += ["", f"![{name}](figures/{name}-accuracy_vs_flops.png)", ""]
    (here / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench"))
