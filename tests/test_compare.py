"""sgpo compare: the aggregation maths, and a smoke run that checks every method ran."""

import hashlib
import json
import logging
import math
import re
from pathlib import Path

import pytest
import yaml
from tiny_run import load_script, tiny_tree
from typer.testing import CliRunner

from sgpo.cli import app
from sgpo.compare import (
    CURRENCIES,
    cost_to_target,
    currency_costs,
    final_accuracy,
    load_compare_config,
    method_config,
    profile_dir,
    run_compare,
    scoring_settings,
    wasted_fraction,
)
from sgpo.config import ConfigError, RunConfig, load_config
from sgpo.core.curves import mean_curve
from sgpo.errors import DataError
from sgpo.io import read_jsonl, read_table
from sgpo.methods import DEFAULT_METHODS
from sgpo.metrics import run_summary
from sgpo.side_by_side import append_side_by_side, equal_budget_baseline_config

ROOT = Path(__file__).resolve().parents[1]
# every compare config that starts from the demo's config
DEMO_BASED_COMPARE_CONFIGS = [
    *sorted((ROOT / "examples").glob("compare*.yaml")),
    ROOT / "benchmarks/dev-round2.yaml",
    ROOT / "benchmarks/demo-mix.yaml",
]


def test_final_accuracy_is_mean_of_last_window():
    assert final_accuracy([(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.7)], 3) == pytest.approx(0.4)
    assert final_accuracy([(1, 0.5)], 3) == 0.5


def test_flops_to_target_uses_smoothed_curve():
    curve = [(1.0, 0.1), (2.0, 0.9), (3.0, 0.2), (4.0, 0.5), (5.0, 0.6), (6.0, 0.7)]
    # trailing windows of 3 end at x = 3, 4, 5, 6 with means .4, .533, .433, .6:
    # the single spike (0.9 at x=2) does not count on its own
    assert cost_to_target(curve, 0.5, 3) == 4.0
    assert cost_to_target(curve, 0.55, 3) == 6.0
    assert cost_to_target(curve, 0.65, 3) is None
    assert cost_to_target([(1.0, 0.7)], 0.65, 3) == 1.0  # short curve: its last point counts


def test_ratios_divide_the_baselines_whole_cost_by_the_methods_cost_to_target():
    # baseline: 100 FLOPs in all (two seeds of 90 and 110); the method's mean curve first holds
    # the target (trailing mean of 2) at 25 FLOPs: 100 / 25 = 4, whatever the baseline's own
    # cost to that accuracy (it reaches it at 80); tokens: never reached, no ratio
    curves, summaries = {}, {}
    for name in CURRENCIES:
        curves["grpo-g8", name] = [(0.0, 0.30), (80.0, 0.50), (100.0, 0.50)]
        curves["sgpo", name] = [(5.0, 0.30), (15.0, 0.50), (25.0, 0.52), (40.0, 0.55)]
        if name == "tokens":
            curves["sgpo", name] = [(5.0, 0.30), (15.0, 0.40), (25.0, 0.41)]
    summaries["grpo-g8"] = [
        {c.summary_field: total for c in CURRENCIES.values()} for total in (90, 110)
    ]
    summaries["sgpo"] = [{c.summary_field: 40.0 for c in CURRENCIES.values()}]
    out = currency_costs(curves, summaries, "grpo-g8", "sgpo", 0.50, 2)
    for name, c in CURRENCIES.items():
        assert out[c.summary_field] == 40.0
        if name == "tokens":
            assert out[c.to_target_key] is None and out[c.ratio_key] is None
        else:
            assert out[c.to_target_key] == 25.0 and out[c.ratio_key] == pytest.approx(4.0)
    baseline = currency_costs(curves, summaries, "grpo-g8", "grpo-g8", 0.50, 2)
    assert baseline["ratio_vs_grpo"] == pytest.approx(1.0)  # reached at its end: 100 / 100


def test_wasted_fraction_weights_each_steps_generation_by_its_dead_share(tmp_path: Path):
    records = [
        {"step": 0, "flops_rollout_cum": 0.0, "flops_total_cum": 0.0},
        {
            "step": 1,
            "flops_rollout_cum": 10.0,
            "informative_fraction": 0.25,
            "flops_total_cum": 30.0,
        },
        {
            "step": 2,
            "flops_rollout_cum": 40.0,
            "informative_fraction": 1.0,
            "flops_total_cum": 100.0,
        },
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # step 1: 10 FLOPs generated, 3/4 dead; step 2: 30 generated, none dead -> 7.5 / 100
    assert wasted_fraction(tmp_path) == pytest.approx(0.075)


def test_run_summary_weights_the_informative_fraction_by_each_steps_rollouts():
    evaluation = {"eval_acc": 0.5, "eval_acc_by_bucket": {}}
    records = [
        {"step": 0, **evaluation},
        {"step": 1, "rollouts": 10, "informative_fraction": 1.0},
        {"step": 2, "rollouts": 30, "informative_fraction": 0.2, **evaluation},
    ]
    summary = run_summary(records)
    # (10 x 1.0 + 30 x 0.2) / 40 = 0.4; a mean of the steps' fractions would read 0.6
    assert summary["informative_fraction"] == pytest.approx(0.4)
    assert summary["rollouts"] == 40


def test_baseline_reaches_its_own_final_accuracy_despite_rounding():
    # held-out accuracies are multiples of 1/3200; averaging per seed then over seeds rounds
    # differently from averaging over seeds then over the window
    seeds = [
        [(1.0, 1133 / 3200), (2.0, 1226 / 3200), (3.0, 1244 / 3200), (4.0, 1266 / 3200)],
        [(1.0, 1007 / 3200), (2.0, 1031 / 3200), (3.0, 1047 / 3200), (4.0, 1280 / 3200)],
    ]
    target = sum(final_accuracy(c, 3) for c in seeds) / len(seeds)
    assert cost_to_target(mean_curve(seeds), target, 3) == 4.0


def test_methods_share_a_profile_only_when_it_is_drawn_the_same_way(tmp_path: Path):
    base = ROOT / "src/sgpo/demo.yaml"
    first_success = [
        "profile.adaptive=true",
        "profile.adaptive_round=1",
        "profile.adaptive_stop=first_success",
    ]
    plain = load_config(base, first_success)
    # another trainer setting reuses the profile
    assert profile_dir(load_config(base, [*first_success, "train.lr=5e-5"]), tmp_path) == (
        profile_dir(plain, tmp_path)
    )
    # a share drawn in full is another profile: its records differ
    shared = load_config(base, [*first_success, "profile.full_share=0.1"])
    assert profile_dir(shared, tmp_path) != profile_dir(plain, tmp_path)
    # so is a success threshold
    graded = load_config(base, [*first_success, "task.success_threshold=1.0"])
    assert profile_dir(graded, tmp_path) != profile_dir(plain, tmp_path)
    # while unset the share and the threshold are not part of the key, which is what it was
    # before they existed (compare directories made then keep their profiles)
    spec = {
        "seed": plain.seed,
        "model": plain.model.model_dump(mode="json"),
        "task": plain.task.model_dump(mode="json", exclude={"success_threshold"}),
        "sampling": plain.sampling.model_dump(mode="json"),
        "profile": plain.profile.model_dump(mode="json", exclude={"full_share"}),
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    assert profile_dir(plain, tmp_path).name == f"seed-{plain.seed}-{digest}"


def test_compare_config_errors_name_the_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": "x.yaml", "baseline": "nope"}))
    with pytest.raises(ConfigError, match="baseline 'nope' is not one of the methods"):
        load_compare_config(path)
    path.write_text(yaml.safe_dump({"base": "x.yaml", "final_window": 0}))
    with pytest.raises(ConfigError, match="final_window"):
        load_compare_config(path)


def test_compare_smoke_every_method_runs(tmp_path: Path):
    base = tiny_tree(
        tmp_path / "models",
        train={"steps": 3, "rollout_budget": 16, "eval_every": 1, "checkpoint_every": 0},
    )
    del base["plan"]  # the plan settings are the methods' own (sgpo-paper's preset sets them)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "seeds": [0, 1]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["compare", "-c", str(tmp_path / "compare.yaml"), "-o", str(out), "--seeds", "1"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compare.json").read_text())
    assert report["baseline"] == "grpo-g8" and report["seeds"] == [0]
    assert set(report["methods"]) == set(DEFAULT_METHODS)
    # whether the baseline rose to its target; compare.md says so loudly when it did not
    initial = report["methods"]["grpo-g8"]["initial_acc_mean"]
    assert report["baseline_learned"] == (report["target_acc"] > initial)
    warned = (
        "**The baseline ended at or below its initial accuracy" in (out / "compare.md").read_text()
    )
    assert warned == (not report["baseline_learned"])
    keys = {
        "final_acc_mean",
        "final_acc_std",
        "total_flops",
        "total_flops_train_all",
        "generated_tokens",
        "flops_to_target",
        "train_all_flops_to_target",
        "tokens_to_target",
        "ratio_vs_grpo",
        "ratio_vs_grpo_train_all",
        "ratio_vs_grpo_tokens",
        "fit_speedup_vs_grpo",
        "fit_speedup_vs_grpo_train_all",
        "fit_speedup_vs_grpo_tokens",
        "fits",
        "informative_fraction",
        "trained_fraction",
        "wasted_flops_fraction",
        "wall_s",
    }
    budget = report["methods"]["grpo-g8"]["total_flops"]
    for name, m in report["methods"].items():
        assert keys <= set(m), name
        run = out / "runs" / name / "seed-0"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["method"] == name.split("-")[0]
        records = read_jsonl(run / "metrics.jsonl")
        assert summary["generated_tokens"] == records[-1]["generated_tokens_cum"]
        # compare.json keeps every evaluation with its cost in each currency
        kept = m["eval_curves"]["0"]
        evaluated = [r for r in records if "eval_acc" in r]
        assert [e["step"] for e in kept] == [r["step"] for r in evaluated] and kept[0]["step"] == 0
        assert [e["eval_acc"] for e in kept] == [r["eval_acc"] for r in evaluated], name
        assert kept[-1]["flops_train_all_cum"] == summary["total_flops_train_all"] or (
            evaluated[-1] is not records[-1]  # the last step was not evaluated
        ), name
        assert {"flops_total_cum", "generated_tokens_cum"} <= set(kept[0]), name
        assert summary["total_flops_train_all"] >= summary["total_flops"]
        generated = summary["rollouts"]  # none where the profile alone spent the budget
        trained = summary["trained_rollouts"] / generated if generated else 0.0
        assert m["trained_fraction"] == trained, name
        assert m["trained_fraction"] <= m["informative_fraction"] + 1e-12, name
        if name != "grpo-g8":  # every other method stops at the first step reaching the budget
            totals = [r["flops_total_cum"] for r in records]
            # a 16-sample profile of the tiny task alone exceeds the budget: one step is taken
            before_last = totals[-2] if len(totals) > 1 else 0.0
            assert before_last < budget <= totals[-1] == summary["total_flops"]
    assert report["methods"]["sgpo"]["profile_flops"] > 0
    assert report["methods"]["grpo-g8"]["profile_flops"] == 0
    for name, m in report["methods"].items():  # a plan's prediction, and only where a plan is
        if name.startswith("sgpo"):
            _, plan_meta = read_table(out / "runs" / name / "seed-0" / "plan.parquet")
            expected = plan_meta["summary"]["predicted_informative_fraction"]
            assert m["predicted_informative_fraction"] == expected and 0 < expected <= 1, name
            # its predictions spread the profile over the baseline's 3 steps, not the cap's 30
            kept = plan_meta["summary"]["rollouts_per_epoch"]
            trained = yaml.safe_load((out / "runs" / name / "seed-0" / "config.yaml").read_text())
            assert trained["train"]["steps"] == 30  # the cap: the budget stops the run
            per_step = trained["train"]["rollout_budget"]
            predicted = plan_meta["summary"]["predicted_epochs"]
            assert predicted == pytest.approx(3 * per_step / kept), name
        else:
            assert m["predicted_informative_fraction"] is None, name
    # the baseline's 4 evaluations are fitted; its fitted read is 1 wherever it gains at all
    baseline = report["methods"]["grpo-g8"]
    assert set(baseline["fits"]) == {"flops", "flops_train_all", "tokens"}
    for currency, key in [
        ("flops", "fit_speedup_vs_grpo"),
        ("flops_train_all", "fit_speedup_vs_grpo_train_all"),
        ("tokens", "fit_speedup_vs_grpo_tokens"),
    ]:
        fit, level = baseline["fits"][currency], report["fit_levels"][currency]
        assert fit["rmse"] >= 0 and fit["tau"] > 0, currency
        assert baseline[key] == (None if level is None else pytest.approx(1.0)), currency
        assert baseline[f"{key}_ci"] is None  # one seed: nothing to resample
    assert (out / "compare.md").read_text().count("|") > 20
    assert "fitted speedup" in (out / "compare.md").read_text()
    # wall s/run, the last column, keeps a decimal: these tiny runs take about a second
    method_rows = [r for r in (out / "compare.md").read_text().splitlines() if r.startswith("| ")]
    walls = [row.split("|")[-2].strip() for row in method_rows[1:]]
    assert walls and all(re.fullmatch(r"\d+\.\d", w) for w in walls), walls
    assert (out / "accuracy_vs_flops.png").stat().st_size > 0


def test_compare_subset_of_methods_and_seed_range(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": "x.yaml"}))
    cfg, _ = load_compare_config(path, seeds=2, first_seed=100, methods=["sgpo-paper"])
    assert cfg.seeds == [100, 101]
    assert list(cfg.methods) == ["grpo-g8", "sgpo-paper"]  # the baseline always runs
    with pytest.raises(ConfigError, match="unknown methods \\['nope'\\]"):
        load_compare_config(path, methods=["nope"])


def test_compare_overrides_reach_every_method_after_the_files_own(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"train": {"eval_every": 10}}))
    path = tmp_path / "c.yaml"
    tree = {"base": "base.yaml", "overrides": ["train.eval_every=8"]}
    path.write_text(yaml.safe_dump(tree))
    cfg, base_path = load_compare_config(path, overrides=["train.eval_every=4"])
    for method in cfg.methods:
        assert method_config(cfg, base_path, method, 0, []).train.eval_every == 4, method


@pytest.mark.parametrize(
    ("currency", "spent", "per_step"),
    [
        ("flops_train_all", "total_flops_train_all", "flops_train_all_cum"),
        ("tokens", "generated_tokens", "generated_tokens_cum"),
    ],
)
def test_compare_budget_in_another_currency(
    tmp_path: Path, currency: str, spent: str, per_step: str
) -> None:
    # 10 baseline steps: 160 rollouts, more than the profile's 96 samples alone
    base = tiny_tree(
        tmp_path / "models",
        train={"steps": 10, "rollout_budget": 16, "eval_every": 5, "checkpoint_every": 0},
    )
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    compare = {"base": "base.yaml", "seeds": [0]}
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(compare))
    out = tmp_path / "out"
    args = ["compare", "-c", str(tmp_path / "compare.yaml"), "-o", str(out)]
    import sgpo.report

    figures = []
    save = sgpo.report.save_figure
    with pytest.MonkeyPatch.context() as mp:  # keep the figures to read their axes
        mp.setattr(
            sgpo.report, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path)
        )
        result = CliRunner().invoke(
            app, [*args, "--methods", "sgpo-dense", "--budget-currency", currency]
        )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compare.json").read_text())
    assert report["budget_currency"] == currency
    # the accuracy plot is drawn in the budget's currency, each crossing marked on the target
    ax = figures[0].axes[0]
    assert ax.get_xlabel().startswith(f"cumulative {CURRENCIES[currency].label}")
    to_target = CURRENCIES[currency].to_target_key
    crossings = {
        (line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "x"
    }
    expected = {
        (m[to_target], report["target_acc"])
        for m in report["methods"].values()
        if m[to_target] is not None
    }
    assert crossings == expected and expected  # the baseline reaches its own final at least
    budget = json.loads((out / "runs/grpo-g8/seed-0/summary.json").read_text())[spent]
    records = read_jsonl(out / "runs/sgpo-dense/seed-0/metrics.jsonl")
    # sGPO stops at the first step whose cost in that currency reaches the baseline's
    totals = [r[per_step] for r in records]
    assert totals[-2] < budget <= totals[-1]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(compare | {"budget_currency": currency, "budget_flops": 1e9}))
    with pytest.raises(ConfigError, match="budget_flops is a budget in FLOPs"):
        load_compare_config(path)


def fake_run(run_dir: Path, cost_scale: float) -> Path:
    """A finished run whose accuracy follows 0.4 - 0.05 exp(-c / 30) at costs 0, 10, ..., 100
    times cost_scale (train-all FLOPs and tokens are fixed multiples of that cost, so the
    fitted speedup is the same in every currency)."""
    run_dir.mkdir(parents=True)
    records = []
    for step in range(11):
        cost = 10.0 * step * cost_scale
        acc = 0.4 - 0.05 * math.exp(-10.0 * step / 30.0)
        records.append(
            {
                "step": step,
                "eval_acc": acc,
                "flops_total_cum": cost,
                "flops_train_all_cum": 2 * cost,
                "generated_tokens_cum": 3 * cost,
            }
        )
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    summary = {
        "initial_eval_acc": records[0]["eval_acc"],
        "final_eval_acc": records[-1]["eval_acc"],
        "total_flops": records[-1]["flops_total_cum"],
        "total_flops_train_all": records[-1]["flops_train_all_cum"],
        "generated_tokens": records[-1]["generated_tokens_cum"],
        "informative_fraction": 0.5,
        "steps": 10,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_side_by_side_reports_the_fitted_read_against_the_baseline(tmp_path: Path):
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    runs = {"fast": fake_run(tmp_path / "fast", 0.5), "grpo-g8": fake_run(tmp_path / "base", 1.0)}
    summary = json.loads((runs["fast"] / "summary.json").read_text())
    summary |= {"rollouts": 400, "trained_rollouts": 100}  # an older summary has neither
    (runs["fast"] / "summary.json").write_text(json.dumps(summary))
    fitted = append_side_by_side(report, runs, "grpo-g8")
    lines = [line for line in report.read_text().splitlines() if "Fitted read" in line]
    assert len(lines) == 1 and "`fast`" in lines[0]
    assert fitted == lines  # what sgpo demo prints at its end
    rows = [line.split(" | ") for line in report.read_text().splitlines() if line[:3] == "| f"]
    assert rows[0][-2] == "0.250"  # trained fraction: 100 of 400 rollouts trained
    summary |= {"rollouts": 0, "trained_rollouts": 0}  # a run that generated nothing
    (runs["fast"] / "summary.json").write_text(json.dumps(summary))
    append_side_by_side(report, runs, "grpo-g8")  # no division by zero
    rows = [line.split(" | ") for line in report.read_text().splitlines() if line[:3] == "| f"]
    assert rows[-1][-2] == "-"
    assert "trained fraction" in report.read_text()
    speedups = [float(x) for x in re.findall(r"(\d+\.\d+)", lines[0].split("speedup")[1])[:3]]
    assert speedups == [pytest.approx(2.0, rel=0.03)] * 3  # the same learning at half the cost
    assert (tmp_path / "side_by_side.png").stat().st_size > 0


def test_side_by_side_reads_no_speedup_against_a_baseline_that_learned_nothing(
    tmp_path: Path,
):
    """A speedup over no gain is noise: no fitted read where the baseline ended no higher than
    it started, or rose by less than twice its evaluation's sampling error (a demo on a few
    held-out queries); its own run's size of evaluation read from its config and metrics."""
    from sgpo.config import dump_config

    def read_against(base: Path) -> list[str]:
        report = tmp_path / "report.md"
        report.write_text("# report\n")
        return append_side_by_side(report, {"fast": fast, "grpo-g8": base}, "grpo-g8")

    fast = fake_run(tmp_path / "fast", 0.5)
    base = fake_run(tmp_path / "base", 1.0)  # 0.350 -> 0.398
    summary = json.loads((base / "summary.json").read_text())
    assert read_against(base)[0].startswith("- Fitted read (one seed)")  # its size unknown
    # on 4000 sampled answers a gain of 0.048 is measured; on 32 it is not
    records = read_jsonl(base / "metrics.jsonl")
    for answers, measured in ((4000, True), (32, False)):
        config = RunConfig.model_validate({"eval": {"n_samples": 2}})
        (base / "config.yaml").write_text(dump_config(config))
        lines = [json.dumps(r | {"eval_queries": answers // 2}) for r in records]
        (base / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        read = read_against(base)
        assert len(read) == 1 and read[0].startswith("- Fitted read (one seed)") == measured
    assert read[0].startswith("- No fitted read against `grpo-g8`: it went 0.350 -> 0.398 on 32")
    assert "within twice the evaluation's sampling error" in read[0]
    flat = summary | {"final_eval_acc": summary["initial_eval_acc"]}
    (base / "summary.json").write_text(json.dumps(flat))
    (read,) = read_against(base)
    assert "it ended at 0.350, not above its initial 0.350" in read
    assert "No fitted read" in (tmp_path / "report.md").read_text()


def test_side_by_side_ticks_carry_their_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No "1e12" multiplier at an axis' end (it overlapped the axis label): each tick says it."""
    import sgpo.report

    figures = []
    monkeypatch.setattr(sgpo.report, "save_figure", lambda fig, path: figures.append(fig))
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    runs = {"fast": fake_run(tmp_path / "fast", 5e9), "grpo-g8": fake_run(tmp_path / "b", 1e10)}
    append_side_by_side(report, runs, "grpo-g8")
    (figure,) = figures
    figure.canvas.draw()
    for ax in figure.axes:
        assert ax.xaxis.get_offset_text().get_text() == ""
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert any(label.endswith(("G", "T")) for label in labels), labels


def test_removing_the_demos_variant_settings_gives_the_abstracts_rule():
    """The compare configs start from demo.yaml and remove its variant (README's command)."""
    from sgpo.cli import DEMO_CONFIG
    from sgpo.config import PlanConfig, ProfileConfig, TrainConfig, load_config

    removed = ["~plan", "~profile", "~train.downsample_to", "~train.drop_equal_groups"]
    config = load_config(DEMO_CONFIG, [*removed, "~train.drop_equal_denominator"])
    assert config.plan == PlanConfig() and config.profile == ProfileConfig()
    train, defaults = config.train, TrainConfig()
    assert (train.downsample_to, train.drop_equal_groups, train.drop_equal_denominator) == (
        defaults.downsample_to,
        defaults.drop_equal_groups,
        defaults.drop_equal_denominator,
    )
    assert train.steps == load_config(DEMO_CONFIG).train.steps  # the rest of the demo stays
    # overrides apply in order: a removed section can be set again, a set value removed
    full = "~profile"  # the demo's first-success profile asks for the demo's plan
    assert load_config(DEMO_CONFIG, [full, "~plan", "plan.g_max=32"]).plan.g_max == 32
    assert load_config(DEMO_CONFIG, [full, "plan.g_max=32", "~plan"]).plan == PlanConfig()
    assert len(DEMO_BASED_COMPARE_CONFIGS) == 5
    for path in DEMO_BASED_COMPARE_CONFIGS:
        cfg, base = load_compare_config(path)
        assert base == DEMO_CONFIG.resolve(), path
        assert cfg.overrides[:5] == [*removed, "~train.drop_equal_denominator"], path


def test_demo_baseline_is_plain_grpo_whatever_the_demos_variant():
    from sgpo.cli import DEMO_CONFIG
    from sgpo.config import load_config

    demo = load_config(DEMO_CONFIG)
    # the demo shows the benchmark's best plan: down-sampled, dead groups dropped, first-success
    # profile
    assert demo.train.downsample_to == 4 and demo.train.drop_equal_groups
    assert demo.profile.adaptive_stop == "first_success"
    variant = load_config(
        DEMO_CONFIG,
        [
            "train.downsample_to=0",
            "train.grow_max=32",
            "train.online.reestimate=true",
            # re-estimation needs p_hat from a full profile
            "profile.adaptive_stop=both_outcomes",
            # caps in other currencies would stop GRPO before the same FLOPs
            "train.max_generated_tokens=5000",
            "train.max_total_flops_train_all=1.0e11",
        ],
    )
    for config in (demo, variant):
        baseline = equal_budget_baseline_config(config, 5.0e11)
        train = baseline.train
        assert train.method == "grpo" and train.max_total_flops == 5.0e11
        assert train.max_generated_tokens is None and train.max_total_flops_train_all is None
        assert train.downsample_to == 0 and train.grow_max == 0 and not train.drop_equal_groups
        assert not train.online.reestimate
        # what the comparison holds equal is kept
        assert train.group_size == config.train.group_size and train.lr == config.train.lr
        assert train.rollout_budget == config.train.rollout_budget
        assert baseline.model == config.model and baseline.task == config.task
        assert train.steps == 10 * config.train.steps


def test_compare_runs_a_profile_in_training_without_a_profile_or_a_plan(tmp_path: Path):
    base = tiny_tree(
        tmp_path / "models",
        train={"steps": 3, "rollout_budget": 16, "eval_every": 1, "checkpoint_every": 0},
    )
    one_g = ["plan.g_min=4", "plan.g_max=4", "plan.bucket_width=1.0"]
    methods = {
        "grpo-g8": ["train.method=grpo", "train.group_size=8"],
        "sgpo-fv": ["train.method=sgpo", *one_g, "train.first_visit_profile=true"],
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    compare = {"base": "base.yaml", "seeds": [0], "methods": methods}
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(compare))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["compare", "-c", str(tmp_path / "compare.yaml"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    fv = json.loads((out / "compare.json").read_text())["methods"]["sgpo-fv"]
    assert fv["profile_flops"] == 0 and fv["predicted_informative_fraction"] is None
    run = out / "runs" / "sgpo-fv" / "seed-0"
    assert not (run / "plan.parquet").exists() and not (out / "profiles").exists()
    records = read_jsonl(run / "metrics.jsonl")[1:]
    # every token it paid for was generated in a training step: nothing before the first
    assert fv["generated_tokens"] == sum(r["tokens_generated"] for r in records) > 0
    assert all("first_visit_dropped" in r for r in records)


BEST_ROW = "sgpo-solvable-g8-ds4-fs-drop-same-update"
BEST_TRAIN_KEYS = ("method", "downsample_to", "drop_equal_groups", "drop_equal_denominator")


def best_plan_part(config) -> tuple:
    """What makes a config the best plan: its profile, its plan and the train keys the row sets."""
    return (
        config.profile,
        config.plan,
        {key: getattr(config.train, key) for key in BEST_TRAIN_KEYS},
    )


def test_the_best_plan_is_spelled_the_same_wherever_a_user_reads_it(tmp_path):
    """The benchmark's best row (methods.py) is what demo.yaml runs, what README's YAML block
    and the TRL example's commands spell out: none of the four may drift from the others."""
    import shlex

    from sgpo.cli import DEMO_CONFIG
    from sgpo.config import load_config

    row = best_plan_part(load_config(None, DEFAULT_METHODS[BEST_ROW]))
    assert row[2] == {
        "method": "sgpo",
        "downsample_to": 4,
        "drop_equal_groups": True,
        "drop_equal_denominator": "generated",
    }
    assert best_plan_part(load_config(DEMO_CONFIG)) == row

    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```yaml\n")[1:]]
    best = [b for b in blocks if "adaptive_stop: first_success" in b and "downsample_to" in b]
    assert len(best) == 1, "README.md must hold one YAML block of the best plan"
    (tmp_path / "best.yaml").write_text(best[0])
    assert best_plan_part(load_config(tmp_path / "best.yaml")) == row

    example_path = ROOT / "examples" / "trl" / "gsm8k_qwen.py"
    example = example_path.read_text()
    words = shlex.split(example.split('BEST="')[1].split('"')[0])
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    assert len(sets) * 2 == len(words)  # nothing but --set pairs
    profile_and_plan = load_config(None, sets)
    assert (profile_and_plan.profile, profile_and_plan.plan) == row[:2]
    # ... and its TRL command trains that plan with the row's train settings
    pytest.importorskip("trl")
    module = load_script(example_path)
    command = example.split("python examples/trl/gsm8k_qwen.py")[-1].split("\n\n")[0]
    args = module.build_parser().parse_args(shlex.split(command.replace("\\\n", " ")))
    assert (args.downsample_to, args.drop_equal_groups) == (4, True)
    # (its SGPOConfig is dapo, beta 0: what makes the drop the same update; TRL refuses to
    # build that config on a CPU, the example's bf16 needs a GPU)


def test_a_method_at_the_target_before_it_spent_anything_reads_at_start_not_never():
    from sgpo.compare import CURRENCIES, _ratio

    flops = CURRENCIES["flops"]
    # a curve whose step-0 evaluation (cost 0, no profile) already holds the target
    reach = cost_to_target([(0.0, 0.40), (10.0, 0.39), (20.0, 0.38)], 0.38, 1)
    assert reach == 0.0
    assert _ratio({flops.ratio_key: None, flops.to_target_key: reach}, flops, True) == "at start"
    assert _ratio({flops.ratio_key: None, flops.to_target_key: None}, flops, True) == "never"
    assert _ratio({flops.ratio_key: 2.5, flops.to_target_key: 4.0}, flops, True) == "2.50"
    # a baseline that learned nothing: no ratio means anything, none is shown, fitted or not
    assert _ratio({flops.ratio_key: 2.5, flops.to_target_key: 4.0}, flops, False) == "-"
    from sgpo.compare import _fitted

    fitted = {flops.fit_speedup_key: None, f"{flops.fit_speedup_key}_ci": [0.0, 0.0]}
    assert _fitted(fitted, flops.fit_speedup_key, False) == "-"
    assert _fitted(fitted, flops.fit_speedup_key, True) == "never (0.00-0.00)"


def printed_table(result: dict, width: int = 200) -> str:
    """The table `sgpo compare` prints for result, as a terminal of that width shows it."""
    from rich.console import Console

    from sgpo.compare import console_table

    console = Console(width=width, record=True)
    console.print(console_table(result))
    return console.export_text()


def test_the_console_table_reads_at_start_as_compare_md_does():
    """`sgpo compare` prints console_table: its ratios are compare.md's (_ratio), not a
    second formatting that said `never` for a method at the target before it spent anything."""

    from sgpo.compare import CURRENCIES

    at_start = {c.ratio_key: None for c in CURRENCIES.values()}
    at_start |= {c.to_target_key: 0.0 for c in CURRENCIES.values()}
    never = {c.ratio_key: None for c in CURRENCIES.values()}
    never |= {c.to_target_key: None for c in CURRENCIES.values()}
    accuracy = {"final_acc_mean": 0.4, "final_acc_std": 0.012, "informative_fraction": 0.5}
    one_seed = accuracy | {"final_acc_std": None}
    result = {
        "target_acc": 0.38,
        "budget_currency": "flops_train_all",
        "baseline": "late",
        "baseline_learned": True,
        "methods": {
            "early": accuracy | at_start,
            "late": accuracy | never,
            "one-seed": one_seed | never,
        },
    }
    text = printed_table(result)
    lines = text.splitlines()
    early = next(line for line in lines if "early" in line)
    late = next(line for line in lines if "late" in line)
    assert early.count("at start") == 3 and "never" not in early
    assert late.count("never") == 3
    assert "budget in flops_train_all" in text
    # what the ratio divides, the baseline's own (not 1) included
    assert "late's own: above 1 where it held its final accuracy before its end" in " ".join(
        text.split()
    )
    # one seed has no spread (not a spread of 0), as compare.md says
    assert "0.400 ± 0.012" in early
    assert "0.400 ± n/a (1 seed)" in next(line for line in lines if "one-seed" in line)


def test_compare_md_says_where_the_fitted_levels_sit_against_the_target():
    from sgpo.compare import _levels_against_target

    def result(levels: dict) -> dict:
        return {"target_acc": 0.36, "fit_levels": levels}

    below = _levels_against_target(result({"flops": 0.35, "flops_train_all": 0.35, "tokens": None}))
    assert below.startswith("below the target")
    above = _levels_against_target(
        result({"flops": 0.361, "flops_train_all": 0.35, "tokens": 0.36})
    )
    assert above.startswith("at or above the target in flops, tokens")
    assert "reach the target and never read a fitted speedup" in above
    none = _levels_against_target(result(dict.fromkeys(("flops", "flops_train_all"))))
    assert none.startswith("none: the baseline's fit gains nothing")


def test_the_trained_fraction_is_null_where_a_summary_does_not_count_it():
    from sgpo.compare import trained_fraction

    counted = {"rollouts": 10, "trained_rollouts": 4}
    assert trained_fraction([counted, counted | {"rollouts": 20}]) == pytest.approx(0.3)
    # an older sgpo's summary lacks it; a run of such steps finished by this one holds null
    assert trained_fraction([counted, {"rollouts": 10}]) is None
    assert trained_fraction([counted, {"rollouts": 10, "trained_rollouts": None}]) is None


def test_the_console_table_keeps_long_method_names_and_a_baseline_that_learned_nothing():

    from sgpo.compare import CURRENCIES

    ratios = {c.ratio_key: 1.0 for c in CURRENCIES.values()}
    row = {"final_acc_mean": 0.4, "final_acc_std": 0.0, "informative_fraction": 0.5} | ratios
    names = ["sgpo-solvable-g8-ds4-fs-drop-same-update", "sgpo-solvable-g8-ds4-greso-fill-fs"]
    result = {
        "target_acc": 0.38,
        "budget_currency": "flops",
        "baseline": names[0],
        "baseline_learned": False,
        "methods": dict.fromkeys(names, row),
    }
    text = printed_table(result, width=80)
    assert all(name in text for name in names)  # not cut to "sgpo-solva…"
    assert "THE BASELINE LEARNED NOTHING" in " ".join(text.split())
    assert "1.00" not in text  # no ratio shown: none means anything


@pytest.mark.parametrize(
    ("tree", "kwargs", "message"),
    [
        ({"seeds": []}, {}, "seeds: List should have at least 1 item"),
        ({}, {"seeds": 0}, r"\(seeds=0, first_seed=0\).*\n  seeds: List should have at least 1"),
        ({}, {"seeds": -2}, "seeds: List should have at least 1 item"),
        ({}, {"seeds": 2, "first_seed": -1}, r"seeds must be >= 0, got \[-1, 0\]"),
        ({"seeds": [-3]}, {}, r"seeds must be >= 0, got \[-3\]"),
        ({"seeds": [1, 2, 1]}, {}, r"seeds must differ from one another, got \[1, 2, 1\]"),
    ],
)
def test_compare_needs_at_least_one_seed_none_negative_or_repeated(
    tmp_path: Path, tree: dict, kwargs: dict, message: str
) -> None:
    # no seed left nothing to average (statistics.StatisticsError in aggregate, after training)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": "x.yaml", **tree}))
    with pytest.raises(ConfigError, match=message):
        load_compare_config(path, **kwargs)


COMPARE_FILES = ["compare.md", "compare.json", "accuracy_vs_flops.png", "informative_fraction.png"]


def test_compare_refuses_to_replace_files_it_did_not_write(tmp_path: Path):
    from sgpo.compare import run_compare

    (tmp_path / "compare.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "seeds": [0]}))
    for name in COMPARE_FILES:
        out = tmp_path / name.replace(".", "-")
        out.mkdir()
        (out / name).write_text("the user's own")
        with pytest.raises(FileExistsError, match=f"{name} exists and was not written by sgpo"):
            run_compare(tmp_path / "compare.yaml", out)
        # refused before anything was trained or written
        assert sorted(p.name for p in out.iterdir()) == [name], name
        assert (out / name).read_text() == "the user's own"
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    (tmp_path / "side_by_side.png").write_text("the user's own")
    runs = {"fast": fake_run(tmp_path / "fast", 0.5), "grpo-g8": fake_run(tmp_path / "base", 1.0)}
    with pytest.raises(FileExistsError, match="side_by_side.png exists and was not written"):
        append_side_by_side(report, runs, "grpo-g8")
    assert (tmp_path / "side_by_side.png").read_text() == "the user's own"
    assert report.read_text() == "# report\n"


def test_compare_refuses_an_lr_that_decays_over_the_steps_cap(tmp_path: Path):
    from sgpo.compare import run_compare

    base = tiny_tree(tmp_path / "models", train={"steps": 2, "rollout_budget": 8})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    methods = {"grpo-g4": ["train.method=grpo", "train.group_size=4"], "sgpo": []}
    compare = {"base": "base.yaml", "seeds": [0], "methods": methods, "baseline": "grpo-g4"}
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(compare))
    # every method but the baseline gets train.steps x max_steps_factor as a mere cap, so a
    # schedule over train.steps would decay max_steps_factor times slower than the baseline's
    for schedule in ("linear", "cosine"):
        with pytest.raises(ConfigError, match=f"{config}: grpo-g4: train.lr_schedule='{schedule}'"):
            run_compare(config, tmp_path / "out", overrides=[f"train.lr_schedule={schedule}"])
    assert not (tmp_path / "out").exists()  # refused before anything was trained: no trace
    methods["sgpo"] = ["train.lr_schedule=linear"]  # one method's own schedule is refused too
    config.write_text(yaml.safe_dump(compare))
    with pytest.raises(ConfigError, match=f"{config}: sgpo: train.lr_schedule='linear'"):
        run_compare(config, tmp_path / "out")
    # a method's bad setting is found in the same pass, naming the method
    methods["sgpo"] = ["train.stepz=3"]
    config.write_text(yaml.safe_dump(compare))
    with pytest.raises(ConfigError, match=f"(?s){config}: method 'sgpo': .*train.stepz"):
        run_compare(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # as is a method that would count a success otherwise than the baseline: its accuracy
    # would not be the same measure
    methods["sgpo"] = ["task.success_threshold=0.9"]
    config.write_text(yaml.safe_dump(compare))
    with pytest.raises(ConfigError, match=r"method 'sgpo' scores responses otherwise than the "):
        run_compare(config, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"\(task.success_threshold: None -> 0.9\)"):
        run_compare(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the verifier as it runs: naming the task's default is not scoring otherwise
    default = load_config(None, [])
    named = load_config(None, ["task.verifier=sgpo.tasks.addition:verify"])
    assert scoring_settings(named) == scoring_settings(default)
    assert scoring_settings(load_config(None, ["task.verifier=sgpo.verifiers:exact_match"])) != (
        scoring_settings(default)
    )


def test_compare_md_says_when_the_baseline_held_its_target_before_its_end():
    from sgpo.compare import _baseline_own_crossing

    def result(ratio: float, learned: bool = True) -> dict:
        ratios = {"ratio_vs_grpo": ratio, "ratio_vs_grpo_train_all": ratio}
        own = ratios | {"ratio_vs_grpo_tokens": ratio}
        return {"baseline": "grpo-g8", "baseline_learned": learned, "methods": {"grpo-g8": own}}

    note = " ".join(_baseline_own_crossing(result(1.29)))
    assert "its ratios: 1.29 / 1.29 / 1.29" in note and "divide a method's ratio by" in note
    assert _baseline_own_crossing(result(1.0)) == []  # held it only at its end
    assert _baseline_own_crossing(result(1.29, learned=False)) == []  # said otherwise


GRPO_G4 = ["train.method=grpo", "train.group_size=4"]


def tiny_compare(
    tmp_path: Path,
    methods: dict,
    seeds: tuple[int, ...] = (0,),
    checkpoint_every: int = 0,
    **compare: object,
) -> Path:
    """base.yaml (the tiny model, 2 steps of 8 rollouts, evaluated every step) and a
    compare.yaml of methods with the baseline grpo-g4 (GRPO_G4) first; returns its path."""
    train = {"steps": 2, "rollout_budget": 8, "eval_every": 1}
    base = tiny_tree(tmp_path / "models", train=train | {"checkpoint_every": checkpoint_every})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    methods = {"grpo-g4": GRPO_G4, **methods}
    tree = {"base": "base.yaml", "seeds": list(seeds), "methods": methods, "baseline": "grpo-g4"}
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(tree | compare))
    return config


def test_a_method_whose_plan_keeps_nothing_is_named_and_the_others_still_run(tmp_path: Path):
    from sgpo.compare import run_compare

    # keeps neither never-solved nor always-solved queries, nor any other (p_hat > 0 trivial)
    nothing = [
        "plan.unsolvable_keep_fraction=0",
        "plan.trivial_above=0.001",
        "plan.drop_trivial=true",
    ]
    grpo_g2 = ["train.method=grpo", "train.group_size=2"]  # after the failing one
    config = tiny_compare(tmp_path, {"empty": nothing, "grpo-g2": grpo_g2})
    with pytest.raises(DataError) as info:
        run_compare(config, tmp_path / "out")
    said = str(info.value)
    assert said.startswith("1 run(s) failed: method 'empty', seed 0: ")
    assert "the plan keeps none of the" in said and "hold the methods that ran on seeds [0]" in said
    runs = tmp_path / "out" / "runs"
    assert (runs / "grpo-g4" / "seed-0" / "summary.json").exists()
    assert (runs / "grpo-g2" / "seed-0" / "summary.json").exists()  # the compare went on
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert set(result["methods"]) == {"grpo-g4", "grpo-g2"} and result["seeds"] == [0]
    assert [(f["method"], f["seed"]) for f in result["failed"]] == [("empty", 0)]
    assert "the plan keeps none of the" in result["failed"][0]["error"]
    assert "`empty` seed 0: " in (tmp_path / "out" / "compare.md").read_text()


def test_a_failed_baseline_leaves_its_seed_out_of_the_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import sgpo.compare
    from sgpo.compare import run_compare
    from sgpo.errors import NonFiniteError

    config = tiny_compare(tmp_path, {"sgpo": []}, seeds=(0, 1))
    run_method = sgpo.compare.run_method

    def failing(config: RunConfig, run_dir: Path, *args, **kwargs) -> dict:
        if config.seed == 1 and config.train.method == "grpo":
            raise NonFiniteError("3 updates in a row had a non-finite loss")
        if config.seed == 0 and config.train.method == "sgpo":  # a finished run not reused
            raise ConfigError(f"{run_dir}: trained with another config")
        return run_method(config, run_dir, *args, **kwargs)

    monkeypatch.setattr(sgpo.compare, "run_method", failing)
    with pytest.raises(DataError, match=r"2 run\(s\) failed: method 'sgpo', seed 0: .*"
                       r"method 'grpo-g4', seed 1: 3 updates in a row"):  # fmt: skip
        run_compare(config, tmp_path / "out")
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    # the seed whose baseline ran, the methods that ran on it
    assert result["seeds"] == [0] and set(result["methods"]) == {"grpo-g4"}
    assert [(f["method"], f["seed"]) for f in result["failed"]] == [("sgpo", 0), ("grpo-g4", 1)]
    assert not (tmp_path / "out" / "runs" / "sgpo" / "seed-1").exists()  # never started


def test_a_vllm_profile_without_vllm_is_refused_before_anything_trains(tmp_path: Path):
    import importlib.util

    from sgpo.compare import run_compare

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    config = tiny_compare(tmp_path, {"sgpo": []}, overrides=["profile.engine=vllm"])
    with pytest.raises(ConfigError, match="method 'sgpo': profile.engine=vllm: the 'vllm' pac"):
        run_compare(config, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


def test_float16_full_training_is_refused_before_anything_trains(tmp_path: Path):
    from sgpo.compare import run_compare

    base = tiny_tree(tmp_path / "models", train={"steps": 2, "rollout_budget": 8})
    base["model"]["dtype"] = "float16"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    methods = {"grpo-g4": ["train.method=grpo", "train.group_size=4"]}
    compare = {"base": "base.yaml", "seeds": [0], "methods": methods, "baseline": "grpo-g4"}
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(compare))
    with pytest.raises(ConfigError, match="method 'grpo-g4': model.dtype=float16 with every"):
        run_compare(config, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


def test_compare_reuses_a_finished_run_only_if_its_config_and_inputs_are_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
):
    from sgpo.compare import run_compare
    from sgpo.rundir import written_by_sgpo

    base = tiny_tree(
        tmp_path / "models",
        train={"steps": 2, "rollout_budget": 8, "eval_every": 1, "checkpoint_every": 0},
    )
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    methods = {
        "grpo-g4": ["train.method=grpo", "train.group_size=4"],
        "grpo-g2": ["train.method=grpo", "train.group_size=2"],
    }
    compare = {"base": "base.yaml", "seeds": [0], "methods": methods, "baseline": "grpo-g4"}
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(compare))
    out = tmp_path / "out"
    first = run_compare(config, out)
    said = capsys.readouterr().err
    assert "[1/2] grpo-g4 seed 0: training" in said and "[2/2] grpo-g2 seed 0: training" in said
    # 2 steps evaluated each: 3 evaluations, step 0's among the final window's 3, said so
    assert first["final_window_reaches_step_0"]["grpo-g4"] == 3
    written = " ".join((out / "compare.md").read_text().split())
    assert (
        "Their final accuracy and crossing include step 0's" in written
        and "`grpo-g4` (3)" in written
    )
    assert "± n/a (1 seed)" in written  # one seed: no spread, not a spread of 0
    assert first["methods"]["grpo-g4"]["final_acc_std"] is None  # in compare.json too
    assert set(COMPARE_FILES) <= written_by_sgpo(out)
    runs = [out / "runs" / m / "seed-0" for m in methods]
    metrics = {run: (run / "metrics.jsonl").read_bytes() for run in runs}
    # unchanged: both finished runs are reused (trained again, their wall_s would differ)
    assert run_compare(config, out)["methods"] == first["methods"]
    assert "[2/2] grpo-g2 seed 0: finished earlier with this config, reused" in (
        capsys.readouterr().err
    )
    assert {run: (run / "metrics.jsonl").read_bytes() for run in runs} == metrics
    # fewer methods: the report holds those, and the others' runs are said to stay
    assert set(run_compare(config, out, methods=["grpo-g4"])["methods"]) == {"grpo-g4"}
    assert "will hold this compare's methods only; the runs of grpo-g2 stay in" in " ".join(
        capsys.readouterr().err.split()
    )
    # other checkpoints or batching: the result is the same, reused and said so
    neutral = ["train.checkpoint_every=3", "sampling.batch_size=5"]
    assert run_compare(config, out, overrides=neutral)["methods"] == first["methods"]
    assert "reused (with sampling.batch_size: 64 -> 5; train.checkpoint_every: 0 -> 3, which" in (
        " ".join(capsys.readouterr().err.split())
    )
    assert {run: (run / "metrics.jsonl").read_bytes() for run in runs} == metrics
    # another lr: refused, naming the run and the key, instead of reporting the old result
    with pytest.raises(DataError) as refused:  # (the compare goes on past a refused run)
        run_compare(config, out, overrides=["train.lr=0.02"])
    message = str(refused.value)
    assert str(runs[0]) in message and "train.lr: 0.01 -> 0.02" in message
    assert "choose another output directory" in message
    assert {run: (run / "metrics.jsonl").read_bytes() for run in runs} == metrics
    # the same config on other data or weights (a file edited in place): refused, naming them
    summary_path = runs[1] / "summary.json"
    summary = json.loads(summary_path.read_text())
    recorded = summary["inputs"]
    assert recorded["data"]["train"]["rows"] == 24 and recorded["model_sha256"]
    assert "verifier_code_sha256" in recorded  # None here: sgpo's own verifiers are not hashed
    other = {"data": recorded["data"] | {"eval": {"rows": 9, "sha256": "0" * 64}}}
    for inputs, named in (
        (other, r"the eval data \(.*\) changed: 9 rows, sha256 000000000000 -> "),
        ({**recorded, "model_sha256": "f" * 64}, "the model's weights changed: sha256 ffff"),
        (  # the verifier's module edited since (the task's own here)
            {**recorded, "verifier_code_sha256": "e" * 64},
            "the verifier's code changed: sha256 eeee",
        ),
    ):
        summary_path.write_text(json.dumps(summary | {"inputs": {**recorded, **inputs}}))
        with pytest.raises(DataError, match=rf"{runs[1]}: .*other inputs.*{named}"):
            run_compare(config, out)
    # a run an older sgpo trained records none: reused, saying what cannot be checked
    del summary["inputs"]
    summary_path.write_text(json.dumps(summary))
    with caplog.at_level(logging.WARNING, logger="sgpo.compare"):
        assert run_compare(config, out)["methods"] == first["methods"]
    assert "did not record its data and model weights" in caplog.text
    # a compare directory an older sgpo wrote (it recorded none of compare's own outputs)
    (out / "sgpo-outputs.json").unlink()
    assert run_compare(config, out)["methods"] == first["methods"]
    # a run recorded before a setting existed: the setting counts at its default, reused
    recorded = yaml.safe_load((runs[0] / "config.yaml").read_text())
    del recorded["train"]["history_streak"]
    (runs[0] / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert run_compare(config, out)["methods"] == first["methods"]
    # a finished run whose config.yaml is gone cannot be checked: refused as well
    (runs[0] / "config.yaml").unlink()
    with pytest.raises(DataError, match="config.yaml is missing or not a config"):
        run_compare(config, out)


def test_compare_resumes_a_run_it_interrupted_from_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    from sgpo.compare import run_compare

    config = tiny_compare(tmp_path, {}, checkpoint_every=1)
    out = tmp_path / "out"
    first = run_compare(config, out)
    run = out / "runs" / "grpo-g4" / "seed-0"
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    capsys.readouterr()
    again = run_compare(config, out)
    # resumed at step 2, nothing trained again: the same records, wall times included
    assert read_jsonl(run / "metrics.jsonl") == records
    assert again["methods"] == first["methods"]
    assert "[1/1] grpo-g4 seed 0: interrupted earlier, resumed" in capsys.readouterr().err
    # interrupted, then run checkpointed otherwise: resumed as well, and said so
    (run / "summary.json").unlink()
    run_compare(config, out, overrides=["train.checkpoint_every=2"])
    assert read_jsonl(run / "metrics.jsonl") == records
    said = capsys.readouterr().err
    assert "resumed with train.checkpoint_every: 1 -> 2, which do not change its result" in said
    # interrupted, then run with another lr: trained again from the start, and said so
    (run / "summary.json").unlink()
    run_compare(config, out, overrides=["train.lr=0.02"])
    said = capsys.readouterr().err
    assert "grpo-g4 seed 0: training (interrupted earlier with" in said
    assert "train.lr: 0.01 -> 0.02: trained again" in said
    # what would mix two ways of evaluating, or a different length, in one run: trained again
    from sgpo.compare import RESUMED_UNDER

    assert not {"eval.engine", "train.eval_every", "train.steps"} & set(RESUMED_UNDER)


def test_a_compare_config_with_a_key_twice_or_bad_yaml_is_a_config_error(tmp_path: Path):
    from sgpo.compare import load_compare_config

    twice = tmp_path / "twice.yaml"
    twice.write_text("base: base.yaml\nseeds: [0, 1, 2]\nseeds: [5]\n")
    with pytest.raises(ConfigError, match="key 'seeds' given twice"):
        load_compare_config(twice)
    broken = tmp_path / "broken.yaml"
    broken.write_text("base: [base.yaml\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_compare_config(broken)


def test_a_compare_holds_its_directory(tmp_path: Path):
    """A second compare into the same OUT while one runs is refused, and told to run again."""
    import fcntl
    import os

    from sgpo.compare import run_compare
    from sgpo.errors import RunDirBusyError

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_tree(tmp_path / "models")))
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({"base": "base.yaml", "seeds": [0]}))
    out = tmp_path / "out"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunDirBusyError, match="run `sgpo compare` again"):
            run_compare(config, out)
    finally:
        os.close(held)
    assert list(out.iterdir()) == []


def test_a_config_of_the_other_kind_is_named_so(tmp_path: Path):
    """A run config given to sgpo compare, or a compare config to sgpo train, says which
    command takes it; an unknown key gets the keys of the schema it was read against."""
    run_config = tmp_path / "run.yaml"
    run_config.write_text("seed: 0\ntrain: {steps: 3}\n")
    with pytest.raises(ConfigError) as refused:
        load_compare_config(run_config)
    said = str(refused.value)
    assert "(its keys are a run config's: sgpo train and sgpo demo take it)" in said
    assert "train: Extra inputs are not permitted\n" in said  # nothing spelled like it
    compare = tmp_path / "compare.yaml"
    compare.write_text("base: x.yaml\nbaselin: grpo-g8\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"baselin: .*; did you mean baseline or base\?"):
        load_compare_config(compare)
    with pytest.raises(ConfigError, match=r"its keys are a compare config's: sgpo compare -c"):
        load_config(compare)


def test_compare_config_mistakes_are_named_for_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": "x.yaml", "seeds": 3}))
    with pytest.raises(ConfigError, match=r"seeds is the list of seeds to run, e.g. \[0, 1, 2\]"):
        load_compare_config(path)
    # a list of names picks the built-in methods; another name is not one of them
    path.write_text(yaml.safe_dump({"base": "x.yaml", "methods": ["grpo-g8", "dapo"]}))
    cfg, _ = load_compare_config(path)
    assert cfg.methods == {m: DEFAULT_METHODS[m] for m in ("grpo-g8", "dapo")}
    path.write_text(yaml.safe_dump({"base": "x.yaml", "methods": ["grpo-g8", "mine"]}))
    with pytest.raises(ConfigError, match=r"methods maps each method's name to its overrides"):
        load_compare_config(path)
    # --set does not reach a method that sets the key itself: said
    grpo_g8 = DEFAULT_METHODS["grpo-g8"]
    path.write_text(yaml.safe_dump({"base": "x.yaml", "methods": {"grpo-g8": grpo_g8}}))
    load_compare_config(path, overrides=["train.group_size=4", "train.lr=1e-5"])
    err = capsys.readouterr().err
    assert "--set train.group_size=4: not for grpo-g8, which set train.group_size" in err
    assert "train.lr" not in err
    # a base that is not there is named as base, before any method's config
    with pytest.raises(ConfigError, match=r"c.yaml: base: x.yaml: no such file"):
        run_compare(path, tmp_path / "out")


def test_compare_says_which_methods_train_the_same_config_and_which_seeds_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_compare(tmp_path, {"mine": list(GRPO_G4)}, seeds=(1,))
    out = tmp_path / "out"
    (out / "runs" / "grpo-g4" / "seed-0").mkdir(parents=True)  # an earlier compare's seed
    run_compare(config, out)
    err = capsys.readouterr().err
    assert "methods grpo-g4, mine train the same config" in err
    assert "compare.json and compare.md will hold seeds [1] only; the runs of seeds [0]" in err


def test_the_fitted_interval_needs_three_seeds() -> None:
    # two seeds resample into three draws: the 'interval' sat on the read at one end
    from sgpo.compare import fitted_read_interval

    def curve(scale: float) -> list[tuple[float, float]]:
        return [(c, 0.5 - 0.2 * math.exp(-c / scale)) for c in (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)]

    for seeds, expected_none in ((2, True), (3, False)):
        curves = {
            (m, name): [curve(2.0 + s) for s in range(seeds)] for m in "bm" for name in CURRENCIES
        }
        fits = {(m, name): object() for m in "bm" for name in CURRENCIES}
        read = fitted_read_interval(curves, "b", "m", fits)
        assert all((ci is None) == expected_none for ci in read.values()), (seeds, read)


def test_a_reused_run_whose_profile_time_is_unknown_is_starred_in_wall_time(
    tmp_path: Path,
) -> None:
    config = tiny_compare(tmp_path, {"sgpo": ["train.method=sgpo"]})
    out = tmp_path / "out"
    first = run_compare(config, out)
    assert not first["methods"]["sgpo"]["wall_s_profile_untimed"]
    summary_path = out / "runs" / "sgpo" / "seed-0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["wall_s"] >= summary["profile_wall_s"] > 0
    # an older sgpo's run, reused: its wall_s is its training loop's alone
    del summary["profile_wall_s"]
    summary_path.write_text(json.dumps(summary))
    again = run_compare(config, out)
    assert again["methods"]["sgpo"]["wall_s_profile_untimed"]
    assert not again["methods"]["grpo-g4"]["wall_s_profile_untimed"]  # it profiles nothing
    row = next(r for r in (out / "compare.md").read_text().splitlines() if r.startswith("| sgpo"))
    assert row.endswith(f"| {summary['wall_s']:.1f}* |")


def test_a_seed_run_folder_names_its_seed_and_no_other_folder_does(tmp_path):
    from sgpo.compare import seed_of, seed_run_dir

    run_dir = seed_run_dir(tmp_path, "grpo-g8", 12)
    assert run_dir == tmp_path / "runs" / "grpo-g8" / "seed-12"
    assert seed_of(run_dir) == 12
    assert [seed_of(Path(name)) for name in ("seed-", "seed-x", "seed-1a", "other", "12")] == [
        None
    ] * 5
