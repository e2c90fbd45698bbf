"""The headline figure of BENCHMARKS.md: held-out accuracy against cost for GRPO(G=8) and the
best row of each mix, seed-mean curves from the committed compare.json files (no training).

    .venv/bin/python benchmarks/headline_plot.py  # writes benchmarks/figures/headline.png

Each panel's curves come from one compare (the same seeds for the baseline and the row); the
dotted line is GRPO(G=8)'s final accuracy, the level every ratio in BENCHMARKS.md is read at,
and the legend carries compare's crossing ratio in that panel's currency.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgpo.core.curves import mean_curve  # noqa: E402

HERE = Path(__file__).parent
# mix -> (compare.json of its best row's largest seed set, that row)
PANELS = {
    "easy": ("easy30", "sgpo-solvable-g8-ds4-greso-fill-fs-drop-same-update"),
    "balanced": ("more20-balanced", "sgpo-solvable-g8-ds4-fs-drop-same-update"),
    "hard": ("more20-hard", "sgpo-solvable-g8-ds4-fs-drop-same-update"),
}
# axis label -> (curve field, ratio field), one row of panels each
CURRENCIES = {
    "train-all FLOPs": ("flops_train_all_cum", "ratio_vs_grpo_train_all"),
    "generated tokens": ("generated_tokens_cum", "ratio_vs_grpo_tokens"),
}
BASELINE = "grpo-g8"


def seed_mean(method: dict, field: str) -> list[tuple[float, float]]:
    curves = method["eval_curves"].values()
    return mean_curve([[(point[field], point["eval_acc"]) for point in c] for c in curves])


def main() -> None:
    fig, axes = plt.subplots(len(CURRENCIES), len(PANELS), figsize=(13, 6.5))
    for col, (mix, (data, row)) in enumerate(PANELS.items()):
        compare = json.loads((HERE / "data" / f"{data}.compare.json").read_text())
        seeds = compare["seeds"]
        for r, (label, (field, ratio)) in enumerate(CURRENCIES.items()):
            ax = axes[r][col]
            for name in (BASELINE, row):
                method = compare["methods"][name]
                curve = seed_mean(method, field)
                read = method[ratio]
                shown = "GRPO(G=8)" if name == BASELINE else name.removeprefix("sgpo-")
                ax.plot(
                    [x for x, _ in curve],
                    [y for _, y in curve],
                    marker=".",
                    label=f"{shown} (crossing {read:.2f})" if read else f"{shown} (never)",
                )
            ax.axhline(compare["target_acc"], ls=":", color="grey", lw=1)
            ax.set_xlabel(label)
            ax.set_title(f"{mix}, seeds {seeds[0]}-{seeds[-1]}", fontsize=10)
            ax.legend(fontsize=7, loc="lower right")
            if col == 0:
                ax.set_ylabel("held-out accuracy (seed mean)")
    fig.tight_layout()
    out = HERE / "figures" / "headline.png"
    fig.savefig(out, dpi=80)
    print(out)


if __name__ == "__main__":
    main()
