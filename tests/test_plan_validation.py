"""Bad input that must stop the run with a clear error, not be dropped, cut or crash: a
reference answer a built-in verifier cannot use, a hand-edited plan (duplicated query, a
fractional or string group size, an unknown query reported at its row in the file), and the
embedded model asked to run a file task."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tiny_run import tiny_tree, write_config
from typer.testing import CliRunner

from sgpo.cli import app
from sgpo.config import load_config
from sgpo.errors import ConfigError, DataError
from sgpo.io import read_jsonl, read_table, write_table
from sgpo.models import model_source
from sgpo.plan import read_plan, run_plan
from sgpo.profile import run_profile
from sgpo.schedule import scheduled_queries
from sgpo.tasks import Query, TaskData, load_task
from sgpo.train import run_train
from sgpo.verify import BadReference, Verifier

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny config (the embedded model at its smallest), its real profile and plan."""
    root = tmp_path_factory.mktemp("plan-validation")
    tree = tiny_tree(
        root / "models",
        task={"addition": {"n_train": 8, "n_eval": 4}},
        profile={"k": 2, "chunk_size": 8},
        train={"steps": 2, "eval_every": 0},
    )
    config = load_config(write_config(root / "config.yaml", tree))
    profile = run_profile(config, root / "profiled")
    plan, _ = run_plan(config, profile, root / "profiled")
    return SimpleNamespace(root=root, tree=tree, config=config, plan=plan)


def file_task_tree(env: SimpleNamespace, data: Path, verifier: str, model: str) -> dict:
    train, test = data / "train.jsonl", data / "test.jsonl"
    good = [{"question": f"{a}+{a}=", "answer": str(2 * a)} for a in range(1, 5)]
    bad = [*good[:2], {"question": "5+6=", "answer": "eleven"}, *good[2:]]
    train.write_text("".join(json.dumps(r) + "\n" for r in bad))
    test.write_text("".join(json.dumps(r) + "\n" for r in good))
    tree = tiny_tree(env.root / "models", profile={"k": 2, "chunk_size": 2})
    tree["model"]["name_or_path"] = model
    tree["task"] = {
        "kind": "file",
        "file": {
            "train": str(train),
            "eval": str(test),
            "preset": "plain",
            "prompt_field": "question",
            "answer_field": "answer",
        },
        "verifier": verifier,
    }
    return tree


# ----------------------------------------------------------------------------- 1: references


@pytest.mark.parametrize("isolation", ["inline", "process"])
@pytest.mark.parametrize(
    ("verifier", "good", "bad"),
    [("numeric", "11", "eleven"), ("multiple_choice", "B", "42")],
)
def test_bad_reference_is_a_data_error_naming_query_and_field(
    verifier: str, good: str, bad: str, isolation: str
) -> None:
    v = Verifier(f"sgpo.verifiers:{verifier}", isolation=isolation)
    try:
        with pytest.raises(BadReference) as info:
            v.score_one(good, bad, "t_numbad:2")
        assert isinstance(info.value, DataError)
        said = str(info.value)
        assert f"query 't_numbad:2': field 'answer': verifier sgpo.verifiers:{verifier} " \
            f"cannot score against this reference: reference {bad!r}" in said  # fmt: skip
        assert said.endswith(". Fix or remove the row")
        assert v.stats.errors == 0
        # A response the verifier cannot read is still a wrong answer: 0, no error.
        assert v.score_one("no answer at all", good, "t:0") == 0.0
        assert v.score_one(good, good, "t:1") == 1.0
    finally:
        v.close()


def test_user_verifier_errors_still_score_zero() -> None:
    v = Verifier("bad_verifiers:raising")
    assert v.score_one("11", "eleven", "t:0") == 0.0
    assert v.stats.errors == 1


def test_check_references_names_file_row_and_field() -> None:
    queries = [Query("q:0", "1+1=", "2"), Query("q:1", "5+6=", "eleven")]
    evaluation = [Query("e:0", "2+2=", "4")]
    task = TaskData(queries, evaluation, "x", "data/train.jsonl", answer_field="final")
    for spec in ("sgpo.verifiers:numeric", "sgpo.verifiers:math_verify"):
        with pytest.raises(
            BadReference, match=r"data/train\.jsonl: row 1 \(id 'q:1'\): field 'final'"
        ):
            Verifier(spec).check_references(task)
    Verifier("bad_verifiers:raising").check_references(task)  # user verifiers: never


def test_profile_stops_on_a_bad_reference(env: SimpleNamespace, tmp_path: Path) -> None:
    tree = file_task_tree(env, tmp_path, "sgpo.verifiers:numeric", model_source(env.config))
    config = load_config(write_config(tmp_path / "file.yaml", tree))
    # checked up front (sgpo.wiring.make_verifier): the file and its row, before any sample
    with pytest.raises(
        DataError,
        match=r"train\.jsonl: row 2 \(line 3, id 'train:2'\): field 'answer': verifier "
        r"sgpo\.verifiers:numeric cannot score against this reference: reference 'eleven'",
    ):
        run_profile(config, tmp_path / "profiled")
    assert not (tmp_path / "profiled" / "profile.parquet").exists()


def test_a_profile_no_sample_of_which_scored_says_to_check_the_verifier(
    env: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # as plain's default exact_match does with chat responses: nothing scores
    tree = file_task_tree(env, tmp_path, "bad_verifiers:never", model_source(env.config))
    config = load_config(write_config(tmp_path / "file.yaml", tree))
    with caplog.at_level("WARNING", logger="sgpo.profile"):
        run_profile(config, tmp_path / "profiled")
    said = " ".join(caplog.text.split())
    assert "verifier bad_verifiers:never scored none of the 10 samples correct" in said
    assert "(the responses are in profile_samples.parquet)" in said
    caplog.clear()
    with caplog.at_level("WARNING", logger="sgpo.profile"):
        run_profile(env.config, tmp_path / "addition")  # its verifier reads the answers
    assert "scored none" not in caplog.text


# ----------------------------------------------------------------------------- 2: plans


def edited_plan(env: SimpleNamespace, dst: Path, edit) -> Path:  # noqa: ANN001
    rows, meta = read_table(env.plan)
    write_table(dst, edit(rows), meta)
    return dst


def kept_rows(rows: list[dict]) -> list[dict]:
    return sorted((r for r in rows if r["kept"]), key=lambda r: r["rank"])


def duplicate_last(rows: list[dict]) -> list[dict]:
    """The first kept query again at the end, with a rank of its own: it would train twice."""
    kept = kept_rows(rows)
    return [*rows, dict(kept[0], rank=kept[-1]["rank"] + 1)]


def _one_group_size(value: object):  # noqa: ANN202
    def edit(rows: list[dict]) -> list[dict]:
        kept_rows(rows)[-1]["group_size"] = value
        return rows

    return edit


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ({"profile_flops": float("nan")}, "metadata field 'profile_flops' is nan, not a number"),
        ({"profile_flops": -1e18}, "metadata field 'profile_flops' is -1e+18, not a number"),
        ({"profile_flops": "1e9"}, "metadata field 'profile_flops' is '1e9', not a number"),
        ({"inputs": "abc"}, "metadata field 'inputs' is 'abc', not a mapping"),
    ],
)
def test_a_plans_metadata_that_training_reads_is_checked(
    env: SimpleNamespace, tmp_path: Path, edit: dict, said: str
) -> None:
    """profile_flops is charged to the run: a NaN there made every FLOPs total NaN."""
    rows, meta = read_table(env.plan)
    path = tmp_path / "plan.parquet"
    write_table(path, rows, meta | edit)
    with pytest.raises(DataError, match=re.escape(f"{path}: {said}")):
        read_plan(path)


def test_a_plan_without_its_profiles_cost_charges_no_profile(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """A plan made by hand may leave profile_flops out: no profile is charged, in generated
    tokens as in FLOPs (its rows' k samples were never drawn)."""
    rows, meta = read_table(env.plan)
    bare = tmp_path / "bare.parquet"
    write_table(bare, rows, {k: v for k, v in meta.items() if k != "profile_flops"})
    last = {}
    for name, plan in (("profiled", env.plan), ("bare", bare)):
        run_train(env.config, tmp_path / name, plan)
        last[name] = read_jsonl(tmp_path / name / "metrics.jsonl")[-1]
    profiled, by_hand = last["profiled"], last["bare"]
    assert (
        profiled["flops_profile_cum"] == meta["profile_flops"] > by_hand["flops_profile_cum"] == 0
    )
    profile_tokens = sum(r["k"] * r["mean_response_tokens"] for r in rows)
    assert profile_tokens > 0
    assert by_hand["generated_tokens_cum"] == profiled["generated_tokens_cum"] - round(
        profile_tokens
    )


def test_training_over_a_reported_run_removes_the_plan_plots_its_report_drew(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """sgpo report draws the plan's histograms into a run trained on a plan elsewhere: a run
    trained over it (on another plan, maybe) makes them stale, as its report.md."""
    from sgpo.report import write_report
    from sgpo.rundir import written_by_sgpo

    run = tmp_path / "run"
    run_train(env.config, run, env.plan)
    write_report(run)
    plots = {"p_hat_hist.png", "group_size_hist.png"}
    assert plots <= written_by_sgpo(run) and all((run / p).exists() for p in plots)
    run_train(env.config, run, env.plan, overwrite=True)
    assert not any((run / p).exists() for p in plots)


@pytest.mark.parametrize("column", ["mean_response_tokens", "prompt_tokens"])
def test_a_plan_row_without_its_token_counts_is_refused(
    env: SimpleNamespace, tmp_path: Path, column: str
) -> None:
    def emptied(rows: list[dict]) -> list[dict]:
        rows[1][column] = None  # NaN in pandas, null in the file
        return rows

    path = edited_plan(env, tmp_path / "plan.parquet", emptied)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 1: field {column!r} is empty")):
        read_plan(path)


def test_duplicate_query_id_is_refused(env: SimpleNamespace, tmp_path: Path) -> None:
    path = edited_plan(env, tmp_path / "plan.parquet", duplicate_last)
    n = len(read_table(path)[0])
    first = read_table(env.plan)[0].index(kept_rows(read_table(env.plan)[0])[0])
    with pytest.raises(DataError) as info:
        read_plan(path)
    assert f"{path}: row {n - 1}: field 'query_id': duplicate query id" in str(info.value)
    assert f"(first at row {first})" in str(info.value)


def test_fractional_group_size_is_refused_not_cut(env: SimpleNamespace, tmp_path: Path) -> None:
    path = edited_plan(env, tmp_path / "plan.parquet", _one_group_size(8.7))
    rows = read_table(path)[0]
    row = next(i for i, r in enumerate(rows) if r["group_size"] == 8.7)
    with pytest.raises(DataError) as info:
        read_plan(path)
    assert f"{path}: row {row}: field 'group_size' must be a whole number, got 8.7" in str(
        info.value
    )


def test_a_repeated_rank_and_negative_lengths_name_their_row(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    def second_takes_first_rank(rows: list[dict]) -> list[dict]:
        first, second = kept_rows(rows)[:2]
        second["rank"] = first["rank"]
        return rows

    path = edited_plan(env, tmp_path / "plan.parquet", second_takes_first_rank)
    rows = read_table(path)[0]
    first, second = sorted(i for i, r in enumerate(rows) if r["kept"] and r["rank"] == 0)
    with pytest.raises(DataError) as info:
        read_plan(path)
    assert f"{path}: row {second}: field 'rank' is 0 (as row {first}); the kept rows' ranks" in (
        str(info.value)
    )

    def negative_response_length(rows: list[dict]) -> list[dict]:
        rows[1]["mean_response_tokens"] = -2.0  # it would price generation below nothing
        return rows

    path = edited_plan(env, tmp_path / "negative.parquet", negative_response_length)
    with pytest.raises(DataError, match=r"row 1: field 'mean_response_tokens' is -2.0; must be"):
        read_plan(path)


def test_a_p_hat_edited_alone_is_refused_naming_its_row(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    def p_hat_moved(rows: list[dict]) -> list[dict]:
        rows[2]["p_hat"] = 0.5 if rows[2]["p_hat"] != 0.5 else 0.25
        return rows

    path = edited_plan(env, tmp_path / "plan.parquet", p_hat_moved)
    row = read_table(path)[0][2]
    with pytest.raises(DataError) as info:
        read_plan(path)
    assert (
        f"{path}: row 2: field 'p_hat' is {row['p_hat']}, but n_correct / k is "
        f"{row['n_correct']} / {row['k']}"
    ) in str(info.value)

    def edited_together(rows: list[dict]) -> list[dict]:
        rows[2].update(k=4, n_correct=1, p_hat=0.25, rewards_vary=True)
        return rows

    read_plan(edited_plan(env, tmp_path / "together.parquet", edited_together))

    def counts_without_variation(rows: list[dict]) -> list[dict]:
        rows[2].update(k=4, n_correct=1, p_hat=0.25, rewards_vary=False)
        return rows

    path = edited_plan(env, tmp_path / "apart.parquet", counts_without_variation)
    with pytest.raises(DataError, match=r"row 2: field 'rewards_vary' is false, but n_correct"):
        read_plan(path)

    def through_float32(rows: list[dict]) -> list[dict]:  # as a table written by another tool
        rows[2].update(k=10, n_correct=1, p_hat=float(np.float32(0.1)), rewards_vary=True)
        return rows

    read_plan(edited_plan(env, tmp_path / "float32.parquet", through_float32))


def test_whole_float_group_size_is_read_as_int(env: SimpleNamespace, tmp_path: Path) -> None:
    path = edited_plan(env, tmp_path / "plan.parquet", _one_group_size(3.0))
    rows, _ = read_plan(path)
    assert all(type(r.group_size) is int for r in rows)


def test_string_column_is_refused_not_a_type_error(env: SimpleNamespace, tmp_path: Path) -> None:
    def as_strings(rows: list[dict]) -> list[dict]:
        for r in rows:
            r["group_size"] = str(r["group_size"])
        return rows

    path = edited_plan(env, tmp_path / "plan.parquet", as_strings)
    with pytest.raises(DataError) as info:
        read_plan(path)
    assert f"{path}: row 0: field 'group_size' must be a whole number, got '" in str(info.value)


def test_unknown_query_is_reported_at_its_row_in_the_file(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    def unknown_first_kept_moved_last(rows: list[dict]) -> list[dict]:
        first = kept_rows(rows)[0]
        first["query_id"] = "add:98+99"
        return [r for r in rows if r is not first] + [first]

    path = edited_plan(env, tmp_path / "plan.parquet", unknown_first_kept_moved_last)
    n = len(read_table(path)[0])
    task = load_task(env.config.task, env.config.seed)
    with pytest.raises(DataError) as info:
        scheduled_queries(env.config, task.train, path)
    assert (
        f"{path}: row {n - 1}: field 'query_id' 'add:98+99' is not in the task's training queries"
        in str(info.value)
    )


# ----------------------------------------------------------------------------- 3: embedded + file


def test_embedded_model_with_file_task_is_a_config_error(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    tree = file_task_tree(env, tmp_path, "sgpo.verifiers:numeric", "embedded")
    config_path = write_config(tmp_path / "file.yaml", tree)
    with pytest.raises(ConfigError, match="model.name_or_path: 'embedded' is warm-started"):
        model_source(load_config(config_path))
    result = CliRunner().invoke(app, ["profile", "-c", str(config_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "model.name_or_path: 'embedded'" in result.output
    assert "Traceback" not in result.output


def test_a_plan_cut_by_hand_trains_but_says_what_it_leaves_out(
    env: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def without_a_dropped_or_kept_row(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r is not kept_rows(rows)[-1]]

    path = edited_plan(env, tmp_path / "plan.parquet", without_a_dropped_or_kept_row)
    train = load_task(env.config.task, env.config.seed).train
    with caplog.at_level("WARNING", logger="sgpo.plan"):
        scheduled, _, _ = scheduled_queries(env.config, train, path)
    assert len(scheduled) == len(kept_rows(read_table(env.plan)[0])) - 1
    assert f"{path}: 1 of the task's 8 training queries have no row in the plan" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sgpo.plan"):
        scheduled_queries(env.config, train, env.plan)  # the whole plan: nothing said
    assert "have no row in the plan" not in caplog.text


def test_export_verl_of_a_plan_cut_by_hand_says_what_it_leaves_out(
    env: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cut = edited_plan(env, tmp_path / "plan.parquet", lambda rows: rows[1:])
    config = str(env.root / "config.yaml")
    for plan, said in ((cut, True), (env.plan, False)):
        caplog.clear()
        out = tmp_path / f"verl-{said}.parquet"
        args = ["export-verl", "--plan", str(plan), "-o", str(out), "-c", config]
        with caplog.at_level("WARNING"):
            result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        warned = f"{plan}: 1 of the task's 8 training queries have no row in the plan"
        assert (warned in caplog.text) is said, caplog.text


def test_plan_plots_say_what_the_profile_measured_and_what_was_dropped(
    env: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sgpo.report

    figures: list = []
    monkeypatch.setattr(sgpo.report, "save_figure", lambda fig, path: figures.append(fig) or "x")
    rows, meta = read_plan(env.plan)
    first_success = meta | {"adaptive_stop": "first_success"}
    for plan_meta, label in ((meta, "correct / samples"), (first_success, "first success")):
        figures.clear()
        sgpo.report.plot_plan(rows, plan_meta, tmp_path)
        p_hat_axes, sizes_axes = (fig.axes[0] for fig in figures)
        assert label in p_hat_axes.get_xlabel()
        legend = [t.get_text() for t in p_hat_axes.get_legend().get_texts()]
        assert legend == ["kept", "dropped"]
        ticks = [t for t in sizes_axes.get_xticks() if sizes_axes.get_xlim()[0] <= t]
        assert all(float(t).is_integer() for t in ticks)
    # one G for every kept query (GRPO-sized plans): still whole sizes, 8 among them
    figures.clear()
    sgpo.report.plot_plan([replace(r, group_size=8) for r in rows], meta, tmp_path)
    sizes_axes = figures[1].axes[0]
    low, high = sizes_axes.get_xlim()
    ticks = [t for t in sizes_axes.get_xticks() if low <= t <= high]
    assert 8 in ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize(
    ("p_hat", "message"),
    [
        ("0.5", r"field 'p_hat' must be a finite number, got '0.5'"),  # a column rewritten as text
        (1.5, r"field 'p_hat' is 1.5, not in \[0, 1\]"),
    ],
)
def test_a_p_hat_of_the_wrong_type_or_range_is_named_for_which(p_hat: object, message: str) -> None:
    from sgpo.validate import check_p_hat

    with pytest.raises(DataError, match=message):
        check_p_hat({"p_hat": p_hat, "n_correct": 1, "k": 2}, "p.parquet: row 0", "", "")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rank", 5, r"field 'rank' is 5, but the query is dropped \(kept = false\)"),
        ("group_size", -3, r"field 'group_size' is -3; a dropped query's"),
    ],
)
def test_a_dropped_rows_rank_and_group_size_are_checked(
    env: SimpleNamespace, tmp_path: Path, field: str, value: int, message: str
) -> None:
    def dropped_edited(rows: list[dict]) -> list[dict]:
        row = next(r for r in rows if not r["kept"])
        row[field] = value
        return rows

    path = edited_plan(env, tmp_path / "plan.parquet", dropped_edited)
    with pytest.raises(DataError, match=message):
        read_plan(path)
