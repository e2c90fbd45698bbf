"""Integration: profile -> plan -> train -> eval -> report on the tiny embedded model, each
stage through the CLI as a user runs it, checking the files every stage hands to the next."""

import inspect
import json
import warnings
from pathlib import Path

import pytest
import typer
from tiny_run import tiny_tree, write_config
from typer.testing import CliRunner

from sgpo.cli import _warn_of_the_runs_config, app, print_table
from sgpo.config import RunConfig
from sgpo.errors import SgpoWarning
from sgpo.io import read_jsonl, read_table
from sgpo.rundir import file_sha256, written_by_sgpo
from sgpo.verl.cli import verl_app

SUMMARY_KEYS = {
    "initial_eval_acc",
    "final_eval_acc",
    "total_flops",
    "flops_by_phase",
    "informative_fraction",
    "steps",
    "wall_s",
    "method",
}


def test_stages_one_by_one(tmp_path: Path):
    config = write_config(
        tmp_path / "cfg.yaml",
        tiny_tree(tmp_path / "models", train={"steps": 4, "eval_every": 2, "checkpoint_every": 2}),
    )
    out = tmp_path / "run"
    runner = CliRunner()

    def sgpo(*args: object) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    printed = sgpo("profile", "-c", config, "-o", out)
    profile, meta = read_table(out / "profile.parquet")
    assert len(profile) == 24 and meta["k"] == 4
    assert all(r["p_hat"] == r["n_correct"] / r["k"] and r["flops"] > 0 for r in profile)
    every = sum(r["p_hat"] == 1 for r in profile)
    none = sum(r["p_hat"] == 0 for r in profile)
    said = " ".join(printed.split())
    assert f"24 queries: {every} solved by every sample, {none} by none" in said
    # how many samples hit max_new_tokens, counted from the samples themselves
    samples, _ = read_table(out / "profile_samples.parquet")
    cut_off = sum(not s["finished"] for s in samples)
    assert meta["truncated_samples"] == cut_off
    assert f"; {cut_off / len(samples):.0%} of the samples cut off at max_new_tokens" in said

    printed = sgpo("plan", "-c", config, "-o", out)
    assert "rollouts_per_epoch" in printed
    assert (out / "p_hat_hist.png").exists() and (out / "group_size_hist.png").exists()
    # listed as sgpo's (drawn under the plan's claim), not taken off as never written
    assert {"p_hat_hist.png", "group_size_hist.png"} <= written_by_sgpo(out)
    plan, plan_meta = read_table(out / "plan.parquet")
    assert [r["query_id"] for r in plan] == [r["query_id"] for r in profile]
    assert plan_meta["profile_flops"] == sum(r["flops"] for r in profile)
    # the profile's time, as its FLOPs: carried by the plan, charged to the run's wall_s
    assert meta["profile_wall_s"] > 0 and plan_meta["profile_wall_s"] == meta["profile_wall_s"]

    sgpo("train", "-c", config, "-o", out)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS and summary["steps"] == 4
    assert summary["flops_by_phase"]["profile"] == plan_meta["profile_flops"]
    plan_file = out / "plan.parquet"
    assert summary["plan_sha256"] == file_sha256(plan_file)
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert summary["trained_rollouts"] == sum(r.get("trained_rollouts", 0) for r in records)
    assert [r["step"] for r in records if "eval_acc" in r] == [0, 2, 4]
    totals = [r["flops_total_cum"] for r in records]
    assert totals == sorted(totals) and totals[-1] == summary["total_flops"]
    assert summary["profile_wall_s"] == plan_meta["profile_wall_s"]
    assert records[1]["wall_s"] > summary["profile_wall_s"]  # from the profile's time on
    assert summary["wall_s"] == records[-1]["wall_s"]
    assert (out / "final" / "config.json").exists()
    assert (out / "checkpoints" / "step-000002" / "model.safetensors").exists()
    assert (out / "p_hat_hist.png").exists()  # the plan's, still true of it after training

    sgpo("eval", "-c", config, "--model", out / "final", "--out", out)
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["eval_queries"] == 8 and 0 <= evaluated["eval_acc"] <= 1

    sgpo("report", out)
    report = (out / "report.md").read_text()
    assert "## Plan" in report and "held-out accuracy" in report
    profile_wall = f"and the profile's {summary['profile_wall_s']:.1f} s): {summary['wall_s']:.1f}"
    assert profile_wall in report
    plan_summary = plan_meta["summary"]
    predicted = (
        f"from the profile alone: informative fraction "
        f"{plan_summary['predicted_informative_fraction']:.2f} (fixed G = "
        f"{plan_summary['baseline_group_size']}: "
        f"{plan_summary['predicted_baseline_informative_fraction']:.2f})"
    )
    assert predicted in report
    assert (
        f"queries profiled: {plan_summary['queries']} (k = {plan_meta['k']} samples each)" in report
    )
    assert f"trivial (p_hat = 1) dropped: {plan_summary['trivial']}," in report
    assert len(list(out.glob("*.png"))) >= 3

    # a run trained with --plan from another directory reports that plan
    elsewhere = tmp_path / "elsewhere"
    sgpo("train", "-c", config, "--plan", out / "plan.parquet", "-o", elsewhere)
    assert not (elsewhere / "plan.parquet").exists()
    sgpo("report", elsewhere)
    assert f"queries profiled: {plan_summary['queries']}" in (elsewhere / "report.md").read_text()
    assert (elsewhere / "p_hat_hist.png").exists()


def test_eval_of_a_runs_model_without_its_config_names_the_config(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "final").mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("")
    for model in (run / "final", run / "checkpoints" / "step-000002"):
        with pytest.warns(
            SgpoWarning,
            match=rf"config is {run / 'config.yaml'}; without -c .*"
            r"task \(addition\): pass -c",
        ):
            _warn_of_the_runs_config(model, RunConfig())
    with warnings.catch_warnings():  # a model folder of its own: nothing to say
        warnings.simplefilter("error", SgpoWarning)
        _warn_of_the_runs_config(tmp_path / "elsewhere" / "model", RunConfig())
        (tmp_path / "model").mkdir()  # beside a config.yaml of the user's own, not a run's
        (tmp_path / "config.yaml").write_text("seed: 0\n")
        _warn_of_the_runs_config(tmp_path / "model", RunConfig())


def test_report_says_how_the_profile_sampled():
    from sgpo.report import all_correct_label, profile_sampling

    assert profile_sampling({"k": 8}) == "k = 8 samples each"
    both = profile_sampling({"k": 8, "adaptive_round": 2, "adaptive_stop": "both_outcomes"})
    assert both == "up to k = 8 samples each, in rounds of 2, stopped once the rewards varied"
    first = profile_sampling({"k": 8, "adaptive_round": 1, "adaptive_stop": "first_success"})
    assert first == "up to k = 8 samples each, stopped at the first success (or varied rewards)"
    shared = {"k": 8, "adaptive_round": 1, "adaptive_stop": "first_success", "full_share": 0.1}
    assert profile_sampling(shared) == f"{first} (10% of the queries drawn in full)"
    # p_hat = 1 from a first-success profile says only that the first sample was correct
    assert all_correct_label({"k": 8}) == "trivial (p_hat = 1)"
    assert all_correct_label({"adaptive_stop": "first_success"}).startswith("correct at the first")
    # the paper's rule (trivial above 0.75) says so where the report counts what it dropped
    paper = {"k": 8, "rule": {"trivial_above": 0.75}}
    assert all_correct_label(paper) == "trivial (p_hat = 1 or above 0.75)"


def test_plan_summary_counts_trivial_queries_as_the_rule_does():
    from sgpo.core.allocation import PlanRule
    from sgpo.plan import build_plan, plan_summary

    rows = [
        {"query_id": f"q{i}", "prompt": "p", "answer": "a", "difficulty": "d", "k": 8,
         "n_correct": n, "prompt_tokens": 5, "mean_response_tokens": 3.0}
        for i, n in enumerate([7, 7, 7, 7, 4])
    ]  # fmt: skip
    rule = PlanRule(trivial_above=0.75, trivial_keep_fraction=0.5)
    summary = plan_summary(build_plan(rows, rule, seed=0), 8, None, rule=rule)
    # four queries at p_hat = 7/8 are trivial by the rule: half of them kept
    assert (summary["trivial"], summary["trivial_kept"]) == (2, 2)
    assert summary["kept"] == 3


@pytest.mark.parametrize(
    ("rule", "counts"),
    [
        # always solved and varied: kept for it where the rule drops the always solved
        ({}, {"trivial": 1, "trivial_kept": 0, "unsolvable_kept": 0, "varied_kept": 2}),
        # ... not where it keeps them all anyway
        (
            {"drop_trivial": False},
            {"trivial": 0, "trivial_kept": 2, "unsolvable_kept": 0, "varied_kept": 1},
        ),
        (
            {"unsolvable_keep_fraction": 1.0},
            {"trivial": 1, "trivial_kept": 0, "unsolvable_kept": 2, "varied_kept": 1},
        ),
    ],
)
def test_plan_summary_counts_queries_kept_for_varied_rewards(rule: dict, counts: dict):
    from sgpo.core.allocation import PlanRule
    from sgpo.plan import build_plan, plan_summary

    rows = [
        {"query_id": f"q{i}", "prompt": "p", "answer": "a", "difficulty": "d", "k": 8,
         "n_correct": n, "rewards_vary": varied, "prompt_tokens": 5, "mean_response_tokens": 3.0}
        for i, (n, varied) in enumerate([(8, True), (8, False), (0, True), (0, False), (4, True)])
    ]  # fmt: skip
    plan_rule = PlanRule(**({"unsolvable_keep_fraction": 0.0} | rule))
    summary = plan_summary(build_plan(rows, plan_rule, seed=0), 8, None, rule=plan_rule)
    assert {key: summary[key] for key in counts} == counts


def test_resume_refuses_an_out_directory_that_is_not_the_run(tmp_path: Path):
    args = ["train", "--resume", str(tmp_path / "run"), "--out", str(tmp_path / "other")]
    result = CliRunner().invoke(app, args)
    said = " ".join(result.output.replace("│", " ").split())  # typer's error box wraps lines
    assert result.exit_code == 2 and "names another" in said
    # --out naming the same directory is what --resume continues anyway
    same = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--out", str(tmp_path)])
    assert "names another" not in same.output and "nothing to resume" in same.output


def test_an_interrupted_demo_resumes_to_the_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A demo stopped in its profile, then in its training (Ctrl-C: a checkpoint), continues
    with --resume, and every stage ends as in a demo never stopped."""
    import os
    import signal

    from tiny_run import stop_profile_at_chunk

    from sgpo.train import Trainer

    tree = tiny_tree(
        tmp_path / "models", train={"steps": 3, "eval_every": 1}, profile={"chunk_size": 4}
    )
    config = write_config(tmp_path / "cfg.yaml", tree)
    runner = CliRunner()
    whole, demo = tmp_path / "whole", tmp_path / "demo"
    assert runner.invoke(app, ["demo", "-c", str(config), "-o", str(whole)]).exit_code == 0
    args = ["demo", "-c", str(config), "-o", str(demo)]
    with monkeypatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        assert runner.invoke(app, args).exit_code == 130
    # the same command without --resume does not throw the stopped demo's work away unasked
    chunks = sorted((demo / "profile_chunks").iterdir())
    again = runner.invoke(app, args)
    said = " ".join(again.output.split())
    assert again.exit_code == 1 and "holds a demo that stopped before its report" in said
    assert f"sgpo demo --out {demo} --resume continues it" in said
    assert sorted((demo / "profile_chunks").iterdir()) == chunks
    real_step = Trainer.train_step

    def ctrl_c_in_the_first_step(self: Trainer) -> dict:
        record = real_step(self)
        if self.step == 1 and self.cfg.method == "sgpo":
            os.kill(os.getpid(), signal.SIGINT)
        return record

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "train_step", ctrl_c_in_the_first_step)
        result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert "the same sgpo demo command with --resume (not --overwrite) continues it" in said
    assert "sgpo train --resume" not in said
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert read_table(demo / "profile.parquet")[0] == read_table(whole / "profile.parquet")[0]
    for run in (demo, demo / "baseline-grpo"):
        records = read_jsonl(run / "metrics.jsonl")
        reference = read_jsonl(whole / run.relative_to(demo) / "metrics.jsonl")
        assert [r["step"] for r in records] == [r["step"] for r in reference]
        drop_time = [{k: v for k, v in r.items() if k != "wall_s"} for r in records]
        assert drop_time == [{k: v for k, v in r.items() if k != "wall_s"} for r in reference]
    refused = runner.invoke(app, [*args, "--resume", "--overwrite"])
    assert refused.exit_code == 2 and "--overwrite replaces it" in refused.output
    # a finished demo resumed with a setting its plan's rows do not depend on (its length)
    # keeps the plan file its run trained with, and goes on with it
    planned = (demo / "plan.parquet").read_bytes()
    longer = runner.invoke(app, [*args, "--resume", "--set", "train.steps=4"])
    assert longer.exit_code == 0, longer.output
    assert (demo / "plan.parquet").read_bytes() == planned
    assert read_jsonl(demo / "metrics.jsonl")[-1]["step"] == 4
    # ... one that plans otherwise is refused before the plan is written
    other = runner.invoke(
        app, [*args, "--resume", "--set", "plan.g_min=5", "--set", "plan.g_max=5"]
    )
    said = " ".join(other.output.split())
    assert other.exit_code == 1 and "plans" in said and "otherwise (filter, G or order)" in said
    assert (demo / "plan.parquet").read_bytes() == planned


def test_sgpo_report_on_a_demo_keeps_its_side_by_side(tmp_path: Path):
    config = write_config(
        tmp_path / "cfg.yaml", tiny_tree(tmp_path / "models", train={"steps": 2, "eval_every": 1})
    )
    demo = tmp_path / "demo"
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "-c", str(config), "-o", str(demo)])
    assert result.exit_code == 0, result.output
    section = "## Side by side at equal FLOPs (one seed)"
    written = (demo / "report.md").read_text()
    assert section in written and "(side_by_side.png)" in written
    # the report written again (say after an upgrade) ends as the demo's did
    result = runner.invoke(app, ["report", str(demo)])
    assert result.exit_code == 0, result.output
    again = (demo / "report.md").read_text()
    assert again[again.index(section) :] == written[written.index(section) :]
    # a baseline that did not finish (a demo killed in it): the report says why it has no
    # side-by-side and how to finish it
    summary = demo / "baseline-grpo" / "summary.json"
    kept = summary.rename(tmp_path / "baseline-summary.json")
    result = runner.invoke(app, ["report", str(demo)])
    assert result.exit_code == 0, result.output
    unfinished = " ".join((demo / "report.md").read_text().split())
    assert section not in unfinished
    assert "The demo's GRPO baseline in baseline-grpo/ did not finish" in unfinished
    assert f"sgpo train --resume {demo / 'baseline-grpo'}" in unfinished
    assert "did not finish" in result.output
    kept.rename(summary)
    # another run trained over the demo's: its baseline-grpo/ is not this run's
    other = ["train", "-c", str(config), "-o", str(demo), "--overwrite"]
    result = runner.invoke(app, [*other, "--set", "train.method=grpo"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["report", str(demo)]).exit_code == 0
    other_run = " ".join((demo / "report.md").read_text().split())
    assert section not in other_run
    assert "baseline-grpo/ is not this run's equal-budget GRPO baseline" in other_run


def test_step_models_beyond_keep_checkpoints_are_dropped(tmp_path: Path):
    from sgpo.runfiles import step_checkpoints_to_drop

    names = ["step-000004", "step-000012", "step-000008", "notes", "step-12", ".step-000016-x"]
    assert step_checkpoints_to_drop(names, 2) == ["step-000004"]
    assert step_checkpoints_to_drop(names, 3) == []
    train = {"method": "grpo", "steps": 4, "eval_every": 0, "checkpoint_every": 1}
    tree = tiny_tree(tmp_path / "models", train=train | {"keep_checkpoints": 2})
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "-c", str(write_config(tmp_path / "c.yaml", tree)),
                                      "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-000003", "step-000004"]
    # set on resume, as a disk filling up mid-run asks: it changes nothing the run computes
    more = ["--set", "train.steps=6", "--set", "train.keep_checkpoints=1"]
    result = CliRunner().invoke(app, ["train", "--resume", str(out), *more])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000006"]


def test_a_finished_run_trained_further_has_no_summary_until_it_finishes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import sgpo.train

    train = {"method": "grpo", "steps": 2, "eval_every": 1, "checkpoint_every": 1}
    config = write_config(tmp_path / "c.yaml", tiny_tree(tmp_path / "models", train=train))
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["train", "-c", str(config), "-o", str(out)]).exit_code == 0
    assert (out / "summary.json").exists()

    def killed(self: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(sgpo.train.Trainer, "train_step", killed)
    resumed = runner.invoke(app, ["train", "--resume", str(out), "--set", "train.steps=4"])
    assert resumed.exit_code != 0
    # the 2-step summary would pass for this run's: the report says it is not finished
    report = runner.invoke(app, ["report", str(out)])
    said = " ".join(report.output.split())
    assert report.exit_code == 1 and "holds a training run that did not finish" in said


def test_a_table_into_a_file_keeps_each_row_on_one_line(capsys):
    from rich.table import Table

    table = Table()
    for name in ("method", "final accuracy", "train-all FLOPs to target", "generated tokens"):
        table.add_column(name)
    row = ("sgpo-solvable-g8-ds4-greso-fill-fs-drop-same-update", "0.392 ± 0.007", "2.82", "1.19")
    table.add_row(*row)
    print_table(table)  # stdout is not a terminal here: rich alone would fold at 80 columns
    lines = capsys.readouterr().out.splitlines()
    assert any(all(cell in line for cell in row) for line in lines)


def test_a_profile_with_many_samples_cut_off_says_so(caplog: pytest.LogCaptureFixture):
    from sgpo.profile import warn_of_cut_off

    with caplog.at_level("WARNING"):
        warn_of_cut_off("p.parquet", 0, 10, 16)
        warn_of_cut_off("p.parquet", 0, 0, 16)  # no samples: nothing to say
    assert caplog.records == []
    with caplog.at_level("WARNING"):
        warn_of_cut_off("p.parquet", 3, 10, 16)
        warn_of_cut_off("q.parquet", 3, 10, "?")  # a plan's profile that records no sampling
    assert "p.parquet: 3 of 10 samples (30%) were cut off at sampling.max_new_tokens=16" in (
        caplog.text
    )
    assert "q.parquet: 3 of 10 samples (30%) were cut off at sampling.max_new_tokens=?" in (
        caplog.text
    )


def test_the_plan_summary_says_a_ratio_is_undefined(capsys: pytest.CaptureFixture[str]):
    from sgpo.cli import print_plan_summary

    print_plan_summary({"baseline_group_size": 8, "predicted_ratio_per_informative_tokens": None})
    row = next(line for line in capsys.readouterr().out.splitlines() if "predicted_ratio" in line)
    assert "undefined (no informative rollout expected)" in row


def test_the_plan_summary_says_where_the_plan_is_predicted_dearer(
    capsys: pytest.CaptureFixture[str],
):
    from sgpo.cli import print_plan_summary

    summary = {
        "baseline_group_size": 8,
        "predicted_epochs": 2.5,
        "predicted_ratio_per_informative_flops": 0.551,
        "predicted_ratio_per_informative_flops_train_all": 1.2,
        "predicted_ratio_per_informative_tokens": 0.302,
    }
    print_plan_summary(summary)
    said = " ".join(capsys.readouterr().out.split())
    assert (
        "costs more per informative rollout than GRPO (G = 8) in flops (0.55), tokens (0.30)"
        in (said)
    )
    assert "over 2.5 epochs" in said and "flops_train_all (" not in said
    print_plan_summary(
        summary
        | {"predicted_ratio_per_informative_flops": 1.1}
        | {"predicted_ratio_per_informative_tokens": None}
    )
    assert "costs more" not in capsys.readouterr().out


def test_sgpo_show_lists_a_plans_queries_in_curriculum_order(tmp_path: Path) -> None:
    from tiny_run import hand_plan_row, write_hand_plan

    rows = [
        hand_plan_row("q-late", "2+2=", 4, rank=1),
        hand_plan_row("q-solved", "1+1=", 0, rank=-1, reason="trivial"),
        hand_plan_row("q-first", "3+3=", 2, rank=0),
    ]
    plan = write_hand_plan(tmp_path / "plan.parquet", rows)
    shown = CliRunner().invoke(app, ["show", str(plan)])
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if " q-" in line]
    assert [line.split()[1:4] for line in lines] == [
        ["0", "│", "q-first"],
        ["1", "│", "q-late"],
        ["-", "│", "q-solved"],
    ]
    assert "3 queries (2 kept, 1 trivial); 6 rollouts per epoch" in " ".join(shown.output.split())
    trivial = CliRunner().invoke(app, ["show", str(plan), "--reason", "trivial"])
    assert [line for line in trivial.output.splitlines() if " q-" in line][0].count("q-solved")
    assert "q-first" not in trivial.output
    first = CliRunner().invoke(app, ["show", str(plan), "--limit", "1"])
    assert "q-late" not in first.output and "1 of 3 rows shown (--limit 1" in first.output
    bad = CliRunner().invoke(app, ["show", str(plan), "--reason", "dropped"])
    assert bad.exit_code == 2 and "--reason must be kept, trivial or unsolvable" in bad.output
    # prompts as trained on: brackets are no rich markup, control codes are not sent
    rows[2]["prompt"] = "x in [a, b] [/] [red]\x1b[2J"
    marked = write_hand_plan(tmp_path / "marked.parquet", rows)
    shown = CliRunner().invoke(app, ["show", str(marked)])
    assert shown.exit_code == 0, shown.output
    assert "x in [a, b] [/] [red]\ufffd[2J" in shown.output and "\x1b" not in shown.output


@pytest.mark.parametrize("cli", [app, verl_app], ids=["sgpo", "sgpo.verl.cli"])
def test_help_lists_each_command_with_its_summary_unbroken(cli: typer.Typer) -> None:
    """--help lists each command with its docstring's first paragraph, whose line breaks in
    the source do not break the line (on a terminal wide enough for the summary)."""
    output = CliRunner().invoke(cli, ["--help"], env={"COLUMNS": "400"}).output
    for command in cli.registered_commands:
        summary = " ".join(inspect.cleandoc(command.callback.__doc__).split("\n\n")[0].split())
        if len(summary) < 300:
            assert any(summary in line for line in output.splitlines()), (command.name, output)
