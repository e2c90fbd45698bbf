"""task.kind=file: presets, column mapping, limits, the source string and every bad-row error."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sgpo.config import FileTaskConfig, RunConfig, TaskConfig, dump_config, load_config
from sgpo.errors import DataError
from sgpo.tasks import default_verifier, load_task
from sgpo.tasks.files import load_file_task

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = Path(__file__).parent.parent / "examples"
GSM8K_TRAIN = FIXTURES / "gsm8k_train.jsonl"
GSM8K_TEST = FIXTURES / "gsm8k_test.jsonl"
PLAIN_HINT = (
    " (a column of final answers alone: task.file.preset=plain with its answer_field, and "
    "task.verifier=sgpo.verifiers:math_verify, since plain's default "
    "sgpo.verifiers:exact_match compares whole responses)"
)
MATH = FIXTURES / "math.jsonl"
PLAIN_CSV = FIXTURES / "plain.csv"


def file_cfg(**kwargs: object) -> FileTaskConfig:
    return FileTaskConfig.model_validate(kwargs)


# ----------------------------------------------------------------------------- presets


def test_gsm8k_preset() -> None:
    data = load_file_task(file_cfg(train=str(GSM8K_TRAIN), eval=str(GSM8K_TEST), preset="gsm8k"))
    assert len(data.train) == 12 and len(data.eval) == 4
    first = data.train[0]
    assert first.query_id == "gsm8k_train:0"
    assert first.prompt == "Tom has 3 apples and buys 4 more. How many apples does he have?"
    assert first.answer == "7"
    assert first.difficulty == ""
    answers = [q.answer for q in data.train]
    assert answers[3] == "2500" and answers[10] == "3000"  # commas stripped
    assert answers[4] == "7.0" and answers[11] == "-6"
    assert data.eval[3].query_id == "gsm8k_test:3"
    assert default_verifier("file", "gsm8k") == "sgpo.verifiers:math_verify"


def test_math_preset() -> None:
    data = load_file_task(file_cfg(train=str(MATH), preset="math"))
    answers = [q.answer for q in data.train]
    assert answers == [
        "\\frac{3}{4}",
        "2\\sqrt{3}",
        "\\{1, 2\\}",  # escaped braces inside the box
        "1024",  # the last box
        "\\frac{1}{6}",
        "4\\pi",  # \fbox counts too
    ]
    assert [q.difficulty for q in data.train] == [
        "Level 1",
        "Level 2",
        "Level 2",
        "Level 1",
        "Level 3",
        "Level 1",
    ]
    assert data.train[0].prompt.startswith("Compute $\\frac{1}{2}")
    assert data.eval == []  # a local train file and no eval source: no eval set
    assert default_verifier("file", "math") == "sgpo.verifiers:math_verify"


def verl_rows(n: int, with_index: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "data_source": "openai/gsm8k",
                "prompt": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"What is {i} + {i}?"},
                ],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
                "extra_info": {"split": "train", "index": 100 + i}
                if with_index
                else {"split": "x"},
            }
        )
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_verl_preset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = write_parquet(tmp_path / "train.parquet", verl_rows(5))
    test = write_parquet(tmp_path / "test.parquet", verl_rows(2, with_index=False))
    data = load_file_task(file_cfg(train=str(train), eval=str(test), preset="verl"))
    # each row's system message is not used, and that is said, not silent
    assert "5 of 5 rows hold messages besides their last user message" in caplog.text
    assert f"earlier turns; the first: {train}: row 0)" in caplog.text
    assert [q.query_id for q in data.train] == [f"train:{100 + i}" for i in range(5)]
    assert [q.prompt for q in data.train][:2] == ["What is 0 + 0?", "What is 1 + 1?"]
    assert [q.answer for q in data.train] == ["0", "2", "4", "6", "8"]
    assert [q.query_id for q in data.eval] == ["test:0", "test:1"]  # no extra_info.index
    assert default_verifier("file", "verl") == "sgpo.verifiers:math_verify"
    # each row's data_source is its own (the verl export keeps it), none where it has none
    assert [q.data_source for q in data.train] == ["openai/gsm8k"] * 5
    # and its extra_info (a custom reward function reads it), kept whole for the export
    assert [q.extra_info for q in data.train][:2] == [
        {"split": "train", "index": 100 + i} for i in (0, 1)
    ]
    # the rows' system message as model.system_prompt: sgpo prompts with it, nothing unused
    caplog.clear()
    load_file_task(file_cfg(train=str(train), preset="verl"), False, system_prompt="Be brief.")
    assert "besides their last user message" not in caplog.text
    for other in ("Be long.", None):  # another one, or none: the rows' own is not used
        load_file_task(file_cfg(train=str(train), preset="verl"), False, system_prompt=other)
        assert f"after model.system_prompt (now {other!r})" in " ".join(caplog.text.split())
        caplog.clear()
    rows = verl_rows(2)
    rows[1]["prompt"] = "What is 1 + 1?"
    text_prompts = tmp_path / "s.jsonl"
    text_prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"got str \(a prompt of text: task.file.preset plain\)"):
        load_file_task(file_cfg(train=str(text_prompts), preset="verl"))


def test_verl_columns_sgpo_does_not_carry_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A verl row's columns besides those sgpo reads (an agent loop's agent_name, images) are
    neither profiled nor exported: said once per split, naming each and its first row."""
    rows = verl_rows(3)
    load_file_task(file_cfg(train=str(write_parquet(tmp_path / "t.parquet", rows)), preset="verl"))
    assert "neither read nor exported" not in caplog.text  # verl's own columns are all read
    rows[1]["agent_name"] = "tool_agent"
    rows[2] |= {"agent_name": "tool_agent", "images": ["a.png"]}
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a parquet file has each column in every row, null (or empty) where a row has no value
    table = [{"agent_name": None, "images": []} | r for r in rows]
    for path, first in (
        (jsonl, "row 1 (line 2)"),
        (write_parquet(tmp_path / "t.parquet", table), "row 1"),
    ):
        caplog.clear()
        load_file_task(file_cfg(train=str(path), preset="verl"))
        text = " ".join(caplog.text.split())
        assert f"{path}: column(s) agent_name, images are neither read nor exported" in text
        assert (
            f"(the first row with each: agent_name: {path}: {first}; images: {path}: row 2" in text
        )


def test_a_verl_rows_data_source_is_a_name_or_absent(tmp_path: Path) -> None:
    rows = verl_rows(3)
    rows[0]["data_source"] = None
    rows[1]["data_source"] = "lighteval/MATH"
    data = load_file_task(
        file_cfg(train=str(write_parquet(tmp_path / "t.parquet", rows)), preset="verl")
    )
    assert [q.data_source for q in data.train] == [None, "lighteval/MATH", "openai/gsm8k"]
    rows[2]["data_source"] = " "
    with pytest.raises(DataError, match=r"t\.parquet: row 2: field 'data_source' must be a non-e"):
        load_file_task(
            file_cfg(train=str(write_parquet(tmp_path / "t.parquet", rows)), preset="verl")
        )


def test_a_verl_rows_extra_info_is_a_mapping_or_absent(tmp_path: Path) -> None:
    """verl reads extra_info as a struct (a dict to the reward function): a row's mapping is
    kept, an absent or null one is None, anything else is refused by file, row and field."""
    rows = verl_rows(3)
    rows[0]["extra_info"] = {"index": 5, "tests": {"inputs": ["1"], "outputs": ["2"]}}
    rows[1]["extra_info"] = None
    del rows[2]["extra_info"]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_file_task(file_cfg(train=str(path), preset="verl"))
    assert [q.extra_info for q in data.train] == [rows[0]["extra_info"], None, None]
    for bad, named in (('{"index": 2}', "str"), ([1, 2], "list")):
        rows[2]["extra_info"] = bad
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(
            DataError,
            match=rf"t\.jsonl: row 2 \(line 3\): field 'extra_info' must be a mapping.* {named}$",
        ):
            load_file_task(file_cfg(train=str(path), preset="verl"))
    # another preset does not read it
    plain = file_cfg(
        train=str(path), preset="plain", prompt_field="data_source", answer_field="ability"
    )
    assert {q.extra_info for q in load_file_task(plain).train} == {None}


def test_verl_numeric_ground_truth(tmp_path: Path) -> None:
    rows = verl_rows(2)
    for r in rows:
        r["reward_model"] = {"style": "rule", "ground_truth": 7}
    data = load_file_task(
        file_cfg(train=str(write_parquet(tmp_path / "t.parquet", rows)), preset="verl")
    )
    assert [q.answer for q in data.train] == ["7", "7"]


def test_a_small_float_answer_is_written_out_positionally(tmp_path: Path) -> None:
    from sgpo.verifiers import math_verify

    rows = verl_rows(3)
    for row, truth in zip(rows, (1e-05, 0.1, 2.5e-7), strict=True):
        row["reward_model"] = {"style": "rule", "ground_truth": truth}
    data = load_file_task(
        file_cfg(train=str(write_parquet(tmp_path / "t.parquet", rows)), preset="verl")
    )
    assert [q.answer for q in data.train] == ["0.00001", "0.1", "0.00000025"]
    # repr's "1e-05" read as e - 5 to math-verify: a right answer scored 0
    assert math_verify("\\boxed{0.0000100}", data.train[0].answer) == 1.0


def test_a_float32_answer_column_reads_as_written(tmp_path: Path) -> None:
    """float32 widened to a double read 0.10000000149011612, which exact_match never meets."""
    table = pa.table(
        {
            "prompt": ["a", "b", "c", "d"],
            "answer": pa.array([0.1, 2.3, 3.0, -0.0], type=pa.float32()),
        }
    )
    path = tmp_path / "f32.parquet"
    pq.write_table(table, path)
    data = load_file_task(
        file_cfg(train=str(path), preset="plain", prompt_field="prompt", answer_field="answer")
    )
    assert [q.answer for q in data.train] == ["0.1", "2.3", "3", "0"]
    # inside a struct too (a verl-style reward_model.ground_truth), and a float32 level column
    # is the MATH bucket a float64 one is
    nested = pa.table(
        {
            "problem": ["a", "b"],
            "reward_model": pa.array(  # verl's shape: a text beside the float
                [{"ground_truth": 0.1, "style": "rule"}, {"ground_truth": 2.5, "style": "rule"}],
                type=pa.struct([("ground_truth", pa.float32()), ("style", pa.string())]),
            ),
            "extra_info": pa.array(  # not read: left as it is
                [{"index": 0, "scores": [0.1]}, {"index": 1, "scores": []}],
                type=pa.struct([("index", pa.int64()), ("scores", pa.list_(pa.float32()))]),
            ),
            "level": pa.array([2.0, 3.0], type=pa.float32()),
        }
    )
    pq.write_table(nested, path)
    fields = {"prompt_field": "problem", "answer_field": "reward_model.ground_truth"}
    data = load_file_task(file_cfg(train=str(path), preset="plain", **fields))
    assert [q.answer for q in data.train] == ["0.1", "2.5"]
    as_double = tmp_path / "f64.parquet"
    pq.write_table(
        nested.set_column(3, "level", pa.array([2.0, 3.0], type=pa.float64())), as_double
    )

    def buckets(file: Path) -> list[str]:
        config = file_cfg(train=str(file), preset="plain", difficulty_field="level", **fields)
        return [q.difficulty for q in load_file_task(config).train]

    assert buckets(path) == buckets(as_double)
    table = table.set_column(1, "answer", pa.array([0.5, float("nan"), 1, 2], type=pa.float32()))
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"f32\.parquet: row 1: field 'answer' is nan, not a"):
        load_file_task(
            file_cfg(train=str(path), preset="plain", prompt_field="prompt", answer_field="answer")
        )


def test_a_csv_cell_longer_than_csvs_own_limit_is_read_whole(tmp_path: Path) -> None:
    """csv refuses cells over 131072 characters, which read as a broken quote."""
    import csv

    path = tmp_path / "long.csv"
    path.write_text('prompt,answer\n"' + "x" * 200_000 + '",3\nq,4\n')
    limit = csv.field_size_limit()
    data = load_file_task(
        file_cfg(train=str(path), preset="plain", prompt_field="prompt", answer_field="answer")
    )
    assert [len(q.prompt) for q in data.train] == [200_000, 1]
    assert csv.field_size_limit() == limit  # set back for the rest of the process


def test_plain_csv_column_mapping() -> None:
    cfg = file_cfg(
        train=str(PLAIN_CSV),
        prompt_field="input",
        answer_field="target",
        id_field="qid",
        difficulty_field="bucket",
    )
    data = load_file_task(cfg)
    assert [q.query_id for q in data.train] == ["q-1", "q-2", "q-3"]
    assert data.train[1].prompt == "Capital of France, one word, lowercase?"
    assert data.train[2].prompt == 'Say "hello, world" exactly.'
    assert data.train[2].answer == "hello, world"  # no comma stripping outside gsm8k
    assert [q.difficulty for q in data.train] == ["easy", "easy", "medium"]
    assert default_verifier("file", cfg.preset) == "sgpo.verifiers:exact_match"


def test_csv_blank_lines_and_unnamed_columns_change_no_row(tmp_path: Path) -> None:
    """A blank line is not a row (ids stay "<stem>:<row>" as without it); a name given twice
    to columns the mapping does not read (or the empty names of trailing commas) is no error."""
    plain, spaced = tmp_path / "plain" / "d.csv", tmp_path / "spaced" / "d.csv"
    plain.parent.mkdir(), spaced.parent.mkdir()
    plain.write_text("prompt,answer\n1+1=,2\n2+2=,4\n")
    spaced.write_text("prompt,answer,,note,note\n\n1+1=,2,,a,b\n\n\n2+2=,4,,c,d\n\n")
    read = [load_file_task(file_cfg(train=str(path))).train for path in (plain, spaced)]
    assert read[0] == read[1]
    assert [(q.query_id, q.prompt, q.answer) for q in read[1]] == [
        ("d:0", "1+1=", "2"),
        ("d:1", "2+2=", "4"),
    ]


def test_a_flattened_exports_dotted_column_names_are_read_as_columns(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text("id,question.text,answer.value\na,1+1=,2\nb,2+2=,4\n")
    cfg = file_cfg(train=str(path), prompt_field="question.text", answer_field="answer.value")
    train = load_file_task(cfg).train
    assert [(q.prompt, q.answer) for q in train] == [("1+1=", "2"), ("2+2=", "4")]
    # a dotted name the row has neither way: the error says how dots are read
    wrong = file_cfg(train=str(path), prompt_field="question.txt", answer_field="answer.value")
    with pytest.raises(
        DataError,
        match=r"'question.txt' is missing \(the row has 'id', "
        r"'question.text', 'answer.value', a dotted name reads a nested field\)",
    ):
        load_file_task(wrong)
    twice = tmp_path / "twice.csv"  # a column the mapping reads, named twice: refused
    twice.write_text("id,question.text,question.text,answer.value\na,1+1=,3+3=,2\n")
    named_twice = file_cfg(
        train=str(twice), prompt_field="question.text", answer_field="answer.value"
    )
    with pytest.raises(DataError, match=r"names column\(s\) 'question.text' more than once"):
        load_file_task(named_twice)


def test_mapping_overrides_preset_and_dotted_fields(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    rows = [
        {"meta": {"uid": f"u{i}", "hard": i}, "q": {"text": f"Q{i}"}, "sol": f"x #### {i}"}
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = file_cfg(
        train=str(path),
        preset="gsm8k",
        prompt_field="q.text",
        answer_field="sol",
        id_field="meta.uid",
        difficulty_field="meta.hard",
    )
    data = load_file_task(cfg)
    assert [(q.query_id, q.prompt, q.answer, q.difficulty) for q in data.train] == [
        ("u0", "Q0", "0", "0"),
        ("u1", "Q1", "1", "1"),
        ("u2", "Q2", "2", "2"),
    ]


def test_gsm8k_answer_is_the_line_after_the_last_marker(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    rows = [
        {"question": "q0", "answer": "work #### 1,000\n\nNotes: 5 more"},
        {"question": "q1", "answer": "#### 7"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_file_task(file_cfg(train=str(path), preset="gsm8k"))
    assert [q.answer for q in data.train] == ["1000", "7"]


def test_a_column_of_final_answers_under_a_solution_preset_says_what_to_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "math500.jsonl"
    path.write_text(json.dumps({"problem": "p", "answer": "\\frac{1}{2}", "level": 1}) + "\n")
    with pytest.raises(DataError, match=r"row 0 \(line 1\): field 'answer' has no .*preset=plain"):
        load_file_task(file_cfg(train=str(path), preset="math", answer_field="answer"))


def test_math_preset_difficulty_can_be_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "nolevel.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "\\boxed{1}"}) + "\n")
    with pytest.raises(DataError, match=r"field 'level' is missing.*difficulty_field='' for none"):
        load_file_task(file_cfg(train=str(path), preset="math"))
    data = load_file_task(file_cfg(train=str(path), preset="math", difficulty_field=""))
    assert data.train[0].difficulty == ""


def test_math_reference_boxed_without_braces(tmp_path: Path) -> None:
    # some MATH solutions write "$\\boxed 5$"; the MATH benchmark reads it up to the "$"
    solutions = ["so $\\boxed 5$.", "first \\boxed{1}, then \\boxed 2\nend", "\\boxed{3} \\boxed"]
    rows = [
        {"problem": f"p{i}", "solution": s, "level": "Level 1"} for i, s in enumerate(solutions)
    ]
    path = tmp_path / "unbraced.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_file_task(file_cfg(train=str(path), preset="math"))
    assert [q.answer for q in data.train] == ["5", "2", "3"]


def test_math_levels_given_as_numbers_are_one_bucket(tmp_path: Path) -> None:
    rows = [{"problem": "p", "solution": "\\boxed{1}", "level": level} for level in (2, 2.0)]
    path = write_parquet(tmp_path / "levels.parquet", rows)  # a float column: 2.0 both
    data = load_file_task(file_cfg(train=str(path), preset="math"))
    assert {q.difficulty for q in data.train} == {"Level 2"}
    path = tmp_path / "levels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_file_task(file_cfg(train=str(path), preset="math"))
    assert [q.difficulty for q in data.train] == ["Level 2", "Level 2"]


def test_mapping_survives_a_config_round_trip() -> None:
    # dump_config writes every field out; reading it back must give the same mapping.
    config = load_config(
        None,
        [
            "task.kind=file",
            f"task.file.train={GSM8K_TRAIN}",
            f"task.file.eval={GSM8K_TEST}",
            "task.file.preset=gsm8k",
        ],
    )
    again = RunConfig.model_validate(yaml.safe_load(dump_config(config)))
    assert "prompt_field" in again.task.file.model_fields_set
    first, second = load_task(config.task, 0), load_task(again.task, 0)
    assert first.train == second.train and first.source == second.source


def test_limits_take_the_first_rows() -> None:
    cfg = file_cfg(
        train=str(GSM8K_TRAIN), eval=str(GSM8K_TEST), preset="gsm8k", limit_train=5, limit_eval=2
    )
    data = load_file_task(cfg)
    assert [q.query_id for q in data.train] == [f"gsm8k_train:{i}" for i in range(5)]
    assert [q.query_id for q in data.eval] == ["gsm8k_test:0", "gsm8k_test:1"]
    assert "limit_train=5" in data.source and "limit_eval=2" in data.source


def test_limit_stops_before_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n')
    assert len(load_file_task(file_cfg(train=str(path), limit_train=1)).train) == 1


def test_source_is_deterministic_and_tracks_content(tmp_path: Path) -> None:
    cfg = file_cfg(train=str(GSM8K_TRAIN), eval=str(GSM8K_TEST), preset="gsm8k")
    a, b = load_file_task(cfg), load_file_task(cfg)
    assert a.source == b.source
    assert "gsm8k_train.jsonl@sha256:" in a.source and "gsm8k_test.jsonl@sha256:" in a.source
    assert "preset=gsm8k, prompt=question, answer=answer, id=<row>" in a.source
    # The same content elsewhere gives the same source; other content or mapping does not.
    copy = tmp_path / "gsm8k_train.jsonl"
    copy.write_bytes(GSM8K_TRAIN.read_bytes())
    moved = load_file_task(file_cfg(train=str(copy), eval=str(GSM8K_TEST), preset="gsm8k"))
    assert moved.source == a.source
    copy.write_bytes(GSM8K_TRAIN.read_bytes().replace(b"Tom", b"Tim"))
    edited = load_file_task(file_cfg(train=str(copy), eval=str(GSM8K_TEST), preset="gsm8k"))
    assert edited.source != a.source
    limited = load_file_task(
        file_cfg(train=str(GSM8K_TRAIN), eval=str(GSM8K_TEST), preset="gsm8k", limit_train=3)
    )
    assert limited.source != a.source


def test_load_task_through_task_config() -> None:
    task = TaskConfig(
        kind="file", file=file_cfg(train=str(GSM8K_TRAIN), eval=str(GSM8K_TEST), preset="gsm8k")
    )
    data = load_task(task, seed=0)
    assert len(data.train) == 12


def test_task_without_eval_queries_is_refused() -> None:
    task = TaskConfig(kind="file", file=file_cfg(train=str(GSM8K_TRAIN), preset="gsm8k"))
    with pytest.raises(DataError, match="no eval queries; give task.file.eval"):
        load_task(task, seed=0)


def test_same_file_for_train_and_eval_is_refused() -> None:
    cfg = file_cfg(train=str(GSM8K_TRAIN), eval=str(GSM8K_TRAIN), preset="gsm8k")
    with pytest.raises(DataError, match="12 query ids in both train and eval"):
        load_task(TaskConfig(kind="file", file=cfg), seed=0)


def test_files_named_alike_in_two_folders_are_told_how_to_tell_apart(tmp_path: Path) -> None:
    for split in ("tr", "te"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "gsm8k.jsonl").write_text(GSM8K_TRAIN.read_text())
    train, evaluation = tmp_path / "tr" / "gsm8k.jsonl", tmp_path / "te" / "gsm8k.jsonl"
    cfg = file_cfg(train=str(train), eval=str(evaluation), preset="gsm8k")
    with pytest.raises(DataError, match="files named alike share them: rename one, or name an"):
        load_task(TaskConfig(kind="file", file=cfg), seed=0)
    # verl's ids are the file's name and extra_info.index: renaming is the way out there
    for split in ("tr", "te"):
        write_parquet(tmp_path / split / "gsm8k.parquet", verl_rows(3))
    train, evaluation = tmp_path / "tr" / "gsm8k.parquet", tmp_path / "te" / "gsm8k.parquet"
    cfg = file_cfg(train=str(train), eval=str(evaluation), preset="verl")
    with pytest.raises(DataError, match=r"files named alike share them: rename one$"):
        load_task(TaskConfig(kind="file", file=cfg), seed=0)


def test_eval_prompts_in_train_under_other_ids_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy_of_train.jsonl"
    copy.write_text(GSM8K_TRAIN.read_text())  # other file, so other ids: the same queries
    cfg = file_cfg(train=str(GSM8K_TRAIN), eval=str(copy), preset="gsm8k")
    load_task(TaskConfig(kind="file", file=cfg), seed=0)
    assert "12 eval prompts are also training prompts" in caplog.text


def test_a_duplicate_verl_index_names_its_field(tmp_path: Path) -> None:
    rows = verl_rows(3)
    rows[2]["extra_info"]["index"] = 100  # merged verl datasets restart their index
    train = write_parquet(tmp_path / "train.parquet", rows)
    test = write_parquet(tmp_path / "test.parquet", verl_rows(2, with_index=False))
    cfg = file_cfg(train=str(train), eval=str(test), preset="verl")
    named = r"row 2: field 'extra_info.index': duplicate .*id_field=''"
    with pytest.raises(DataError, match=named):
        load_task(TaskConfig(kind="file", file=cfg), seed=0)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "answer": "1"}\n' * 2)
    cfg = file_cfg(train=str(path), id_field="id")
    with pytest.raises(
        DataError, match=r"row 1 \(line 2\): field 'id': duplicate query id 'a' \(first at row 0\)"
    ):
        load_task(TaskConfig(kind="file", file=cfg), seed=0)


# ----------------------------------------------------------------------------- datasets names


class FakeDataset(list):
    def select(self, indices: range) -> FakeDataset:
        return FakeDataset(self[i] for i in indices)


def test_datasets_name_goes_to_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(name: str, config: str | None = None, split: str | None = None):
        calls.append((name, config, split))
        n = 5 if split == "train" else 3
        return FakeDataset(
            {"question": f"{split} q{i}", "answer": f"work #### {i},000"} for i in range(n)
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_file_task(file_cfg(train="openai/gsm8k:main", preset="gsm8k", limit_train=4))
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert [q.query_id for q in data.train] == [f"openai/gsm8k:train:{i}" for i in range(4)]
    assert [q.query_id for q in data.eval] == [f"openai/gsm8k:test:{i}" for i in range(3)]
    assert data.train[2].answer == "2000"
    assert "train=datasets:openai/gsm8k:main/train, eval=datasets:openai/gsm8k:main/test" in (
        data.source
    )


def test_datasets_failure_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_file_task(file_cfg(train="someone/data", preset="plain"))
    assert str(info.value) == (
        "someone/data (split train): cannot load with datasets.load_dataset: hub unreachable"
    )


def test_a_float32_answer_column_of_a_datasets_folder_reads_as_written(tmp_path: Path) -> None:
    """Rows of a `datasets` dataset widen float32 as parquet rows do: 0.1 read
    0.10000000149011612, which exact_match never meets."""
    import datasets

    features = datasets.Features(
        {"prompt": datasets.Value("string"), "answer": datasets.Value("float32")}
    )
    rows = {"prompt": ["a", "b", "c"], "answer": [0.1, 2.3, -0.0]}
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "f32"))
    data = load_file_task(
        file_cfg(
            train=str(tmp_path / "f32"),
            preset="plain",
            prompt_field="prompt",
            answer_field="answer",
            id_field="prompt",
        )
    )
    assert [q.answer for q in data.train] == ["0.1", "2.3", "0"]


def test_a_save_to_disk_folder_loads_by_split_as_a_dataset_dict_and_whole_as_one_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    # not the user's cache (datasets read the variable at import)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")

    def split(n: int, name: str) -> datasets.Dataset:
        rows = [{"question": f"{name} q{i}", "answer": f"work #### {i}"} for i in range(n)]
        return datasets.Dataset.from_list(rows)

    whole = tmp_path / "dict"
    datasets.DatasetDict({"train": split(4, "train"), "test": split(2, "test")}).save_to_disk(
        str(whole)
    )
    data = load_file_task(file_cfg(train=str(whole), preset="gsm8k"))
    assert (len(data.train), len(data.eval)) == (4, 2)
    # its ids and identity by the folder's name: the same however its path is written
    assert data.train[0].query_id == "dict:train:0"
    monkeypatch.chdir(tmp_path)
    for written in ("dict", "dict/", "./dict"):
        again = load_file_task(file_cfg(train=written, preset="gsm8k"))
        assert again.source == data.source
        assert [q.query_id for q in again.train] == [q.query_id for q in data.train]
    # a profile of an earlier sgpo, which recorded the folder by its path: told why it differs
    from sgpo.config import RunConfig
    from sgpo.profile_match import check_profile_matches

    config = RunConfig.model_validate(
        {"task": {"kind": "file", "file": {"train": "dict", "preset": "gsm8k"}}}
    )
    from sgpo.tasks import load_task

    profiled = load_task(config.task, config.seed, require_eval=False).source
    earlier = profiled.replace("datasets:dict/", f"datasets:{whole}/")
    assert earlier != profiled
    with pytest.raises(DataError, match="profiled by an earlier sgpo, which named a local"):
        check_profile_matches({"task": earlier}, config, "p.parquet", None)
    # one Dataset's folder per split (Dataset.save_to_disk): each read whole, as a file is
    split(4, "train").save_to_disk(str(tmp_path / "one"))
    split(3, "test").save_to_disk(str(tmp_path / "held"))
    data = load_file_task(file_cfg(train="one", eval="./held", preset="gsm8k"))
    assert [q.prompt for q in data.train] == [f"train q{i}" for i in range(4)]
    assert [q.prompt for q in data.eval] == [f"test q{i}" for i in range(3)]
    assert [q.query_id for q in data.eval] == ["held:0", "held:1", "held:2"]
    assert "eval=datasets:held@sha256:" in data.source
    # ... it has no other split: without eval there is none, not the train rows again
    alone = load_file_task(file_cfg(train="one", preset="gsm8k"))
    assert (len(alone.train), alone.eval) == (4, [])
    with pytest.raises(DataError, match="one Dataset written by save_to_disk has no configs"):
        load_file_task(file_cfg(train="one", preset="gsm8k", dataset_config="main"))


# ----------------------------------------------------------------------------- bad input

# (file name, content, config fields, the exact message; "{path}" stands for the file's path)
BAD_INPUTS = [
    (
        "surrogate_question.jsonl",
        '{"question": "a\\ud800b", "answer": "#### 1"}\n',
        {"preset": "gsm8k"},
        "{path}: row 0 (line 1): field 'question' holds an unpaired surrogate ('\\ud800') at "
        "character 1: not text",
    ),
    (
        "surrogate_answer.jsonl",
        '{"question": "q", "answer": "#### 1\\udc00"}\n',
        {"preset": "gsm8k"},
        "{path}: row 0 (line 1): field 'answer' holds an unpaired surrogate ('\\udc00') at "
        "character 6: not text",
    ),
    (
        "huge_number.jsonl",
        '{"question": "q", "answer": ' + "9" * 5000 + "}\n",
        {"preset": "plain", "prompt_field": "question", "answer_field": "answer"},
        "{path}: row 0 (line 1): not valid JSON here: Exceeds the limit (4300 digits) for "
        "integer string conversion: value has 5000 digits; use sys.set_int_max_str_digits() to "
        "increase the limit",
    ),
    (
        "missing_question.jsonl",
        '{"question": "q", "answer": "#### 1"}\n{"answer": "#### 2"}\n',
        {"preset": "gsm8k"},
        "{path}: row 1 (line 2): field 'question' is missing (the row has 'answer')",
    ),
    (
        "null_question.jsonl",
        '{"question": null, "answer": "#### 1"}\n',
        {"preset": "gsm8k"},
        "{path}: row 0 (line 1): field 'question' is null",
    ),
    (
        "no_hashes.jsonl",
        '{"question": "q", "answer": "the answer is 3"}\n',
        {"preset": "gsm8k"},
        "{path}: row 0 (line 1): field 'answer' has no '####' before the final answer" + PLAIN_HINT,
    ),
    (
        "empty_after_hashes.jsonl",
        '{"question": "q", "answer": "#### 1"}\n{"question": "q", "answer": "work ####  "}\n',
        {"preset": "gsm8k"},
        "{path}: row 1 (line 2): field 'answer': the final answer is empty",
    ),
    (
        "number_question.jsonl",
        '{"question": 12, "answer": "#### 1"}\n',
        {"preset": "gsm8k"},
        "{path}: row 0 (line 1): field 'question' must be a string, got int",
    ),
    (
        "chat_question.jsonl",
        '{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}\n',
        {"preset": "plain", "prompt_field": "messages"},
        "{path}: row 0 (line 1): field 'messages' must be a string, got list of chat messages: "
        "task.file.preset verl reads the last user message (its answer_field defaults to "
        "reward_model.ground_truth: set yours)",
    ),
    (
        "blank_question.jsonl",
        '{"question": "  \\n ", "answer": "#### 1"}\n',
        {"preset": "gsm8k"},
        "{path}: row 0 (line 1): field 'question' is empty",
    ),
    (
        "no_boxed.jsonl",
        '{"problem": "p", "solution": "so it is 3", "level": "Level 1"}\n',
        {"preset": "math"},
        "{path}: row 0 (line 1): field 'solution' has no \\boxed{...} answer" + PLAIN_HINT,
    ),
    (
        "unclosed_boxed.jsonl",
        '{"problem": "p", "solution": "\\\\boxed{1}, \\\\boxed{\\\\frac{1}{2}", "level": "L"}\n',
        {"preset": "math"},
        "{path}: row 0 (line 1): field 'solution': the last \\boxed{ is never closed",
    ),
    (
        "empty_boxed.jsonl",
        '{"problem": "p", "solution": "\\\\boxed{ }", "level": "Level 1"}\n',
        {"preset": "math"},
        "{path}: row 0 (line 1): field 'solution': the final answer is empty",
    ),
    (
        "no_level.jsonl",
        '{"problem": "p", "solution": "\\\\boxed{1}"}\n',
        {"preset": "math"},
        "{path}: row 0 (line 1): field 'level' is missing (the row has 'problem', 'solution') "
        "(task.file.difficulty_field='' for none)",
    ),
    (
        "list_level.jsonl",
        '{"problem": "p", "solution": "\\\\boxed{1}", "level": [1]}\n',
        {"preset": "math"},
        "{path}: row 0 (line 1): field 'level' must be a string or a number, got list",
    ),
    (
        "verl_string_prompt.jsonl",
        '{"prompt": "hi", "reward_model": {"ground_truth": "1"}}\n',
        {"preset": "verl"},
        "{path}: row 0 (line 1): field 'prompt' must be a list of chat messages, got str (a "
        "prompt of text: task.file.preset plain)",
    ),
    (
        "verl_no_user.jsonl",
        '{"prompt": [{"role": "system", "content": "s"}], "reward_model": {"ground_truth": "1"}}\n',
        {"preset": "verl"},
        "{path}: row 0 (line 1): field 'prompt' has no message with role 'user'",
    ),
    (
        "verl_no_truth.jsonl",
        '{"prompt": [{"role": "user", "content": "q"}], "reward_model": {"style": "rule"}}\n',
        {"preset": "verl"},
        "{path}: row 0 (line 1): field 'reward_model.ground_truth' is missing",
    ),
    (
        "verl_content_type.jsonl",
        '{"prompt": [{"role": "user", "content": ["x"]}], "reward_model": {"ground_truth": "1"}}\n',
        {"preset": "verl"},
        "{path}: row 0 (line 1): field 'prompt': the last user message's content must be a "
        "string, got list",
    ),
    (
        "list_answer.jsonl",
        '{"prompt": "p", "answer": ["1"]}\n',
        {},
        "{path}: row 0 (line 1): field 'answer' must be a string or a number, got list",
    ),
    (
        "bool_answer.jsonl",
        '{"prompt": "p", "answer": true}\n',
        {},
        "{path}: row 0 (line 1): field 'answer' must be a string or a number, got bool",
    ),
    (
        "missing_id.jsonl",
        '{"id": "a", "prompt": "p", "answer": "1"}\n{"prompt": "p", "answer": "1"}\n',
        {"id_field": "id"},
        "{path}: row 1 (line 2): field 'id' is missing (the row has 'prompt', 'answer')",
    ),
    (
        "bad_json.jsonl",
        '{"prompt": "p", "answer": "1"}\n\n{"prompt": "p", "answer": \n',
        {},
        "{path}: row 1 (line 3): not valid JSON: Expecting value at column 27",
    ),
    (
        "duplicate_key.jsonl",
        '{"prompt": "p", "answer": "1"}\n{"prompt": "p", "answer": "1", "answer": "2"}\n',
        {},
        "{path}: row 1 (line 2): field 'answer' is given twice in one object; keep the one that is "
        "meant",
    ),
    (
        "duplicate_nested_key.jsonl",
        '{"prompt": [{"role": "user", "role": "system", "content": "p"}], '
        '"reward_model": {"ground_truth": "1"}}\n',
        {"preset": "verl"},
        "{path}: row 0 (line 1): field 'role' is given twice in one object; keep the one that is "
        "meant",
    ),
    (
        "not_object.jsonl",
        '{"prompt": "p", "answer": "1"}\n["p", "1"]\n',
        {},
        "{path}: row 1 (line 2): expected a record (a JSON object), got list",
    ),
    ("empty.jsonl", "\n\n", {}, "{path}: no rows"),
    (
        "missing_column.csv",
        "prompt,solution\np,1\n",
        {},
        "{path}: row 0 (line 2): field 'answer' is missing (the row has 'prompt', 'solution')",
    ),
    (
        "empty_cell.csv",
        "prompt,answer\np,1\nq,\n",
        {},
        "{path}: row 1 (line 3): field 'answer' is empty",
    ),
    (
        "short_line.csv",
        "prompt,answer\np\n",
        {},
        "{path}: row 0 (line 2): field 'answer' is missing (the row has 'prompt')",
    ),
    (
        "long_line.csv",
        "prompt,answer\np,1\np,1,extra\n",
        {},
        "{path}: row 1 (line 3): more cells than header columns",
    ),
    ("header_only.csv", "prompt,answer\n", {}, "{path}: no rows"),
    (  # a blank line is not a row, but the line named is the file's
        "blank_line.csv",
        "prompt,answer\np,1\n\nq,\n",
        {},
        "{path}: row 1 (line 4): field 'answer' is empty",
    ),
    (  # a quoted cell over two lines: the next record starts two lines on
        "quoted_lines.csv",
        'prompt,answer\n"two\nlines",1\nq,\n',
        {},
        "{path}: row 1 (line 4): field 'answer' is empty",
    ),
    (  # one cell would swallow every line after the quote: rows r and s lost
        "unclosed_quote.csv",
        'prompt,answer\np,1\nq,"2\nr,3\ns,4\n',
        {},
        "{path}: row 1 (line 3): not valid CSV (unexpected end of data by line 5): a quote "
        "opened in a cell and not closed, or text after a closing quote",
    ),
    (
        "text_after_quote.csv",
        'prompt,answer\np,1\n"q"?,2\n',
        {},
        "{path}: row 1 (line 3): not valid CSV (',' expected after '\"' by line 3): a quote "
        "opened in a cell and not closed, or text after a closing quote",
    ),
    (
        "unclosed_header_quote.csv",
        '"prompt,answer\np,1\n',
        {},
        "{path}: line 1 (the header): not valid CSV (unexpected end of data by line 2): a "
        "quote opened in a cell and not closed, or text after a closing quote",
    ),
    (  # csv.DictReader would keep the second column's cells and lose the first's
        "same_name_twice.csv",
        "prompt,answer,answer\np,1,2\n",
        {},
        "{path}: line 1: the header names column(s) 'answer' more than once",
    ),
    (
        "data.txt",
        "prompt\tanswer\n",
        {},
        "{path}: unsupported file type '.txt'; use one of .jsonl, .parquet, .csv",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "fields", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input(tmp_path: Path, name: str, content: str, fields: dict, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_file_task(file_cfg(train=str(path), **fields))
    assert str(info.value) == message.replace("{path}", str(path))


def test_bad_eval_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad_eval.jsonl"
    path.write_text('{"question": "q"}\n')
    with pytest.raises(DataError) as info:
        load_file_task(file_cfg(train=str(GSM8K_TRAIN), eval=str(path), preset="gsm8k"))
    assert str(info.value) == (
        f"{path}: row 0 (line 1): field 'answer' is missing (the row has 'question')"
    )


def test_bad_parquet_row(tmp_path: Path) -> None:
    rows = verl_rows(3)
    rows[2]["prompt"] = [{"role": "user", "content": "   "}]
    path = write_parquet(tmp_path / "train.parquet", rows)
    with pytest.raises(DataError) as info:
        load_file_task(file_cfg(train=str(path), preset="verl"))
    assert str(info.value) == f"{path}: row 2: field 'prompt' is empty"


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as info:
        load_file_task(file_cfg(train=str(missing)))
    assert str(info.value) == f"task.file.train={missing}: no such file"
    # a relative path: where it was looked for (the launch's working directory, not the config's)
    with pytest.raises(DataError) as info:
        load_file_task(file_cfg(train="nope.jsonl"))
    assert str(info.value) == (
        f"task.file.train=nope.jsonl: no such file; a relative path is read from {Path.cwd()}"
    )
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=f"^{broken}: not a readable parquet file"):
        load_file_task(file_cfg(train=str(broken)))


# ----------------------------------------------------------------------------- examples


RUN_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("compare"))
COMPARE_EXAMPLES = sorted(EXAMPLES.glob("compare*.yaml"))


@pytest.mark.parametrize("path", RUN_EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    config = load_config(path)
    if config.task.kind == "file":
        assert config.task.file is not None


@pytest.mark.parametrize("path", COMPARE_EXAMPLES, ids=lambda p: p.name)
def test_example_compare_configs_validate(path: Path) -> None:
    from sgpo.compare import load_compare_config, method_config

    cfg, base = load_compare_config(path)
    assert len(cfg.seeds) >= 3 and cfg.baseline in cfg.methods
    for method in cfg.methods:  # every method's overrides give a valid run config
        assert method_config(cfg, base, method, cfg.seeds[0], []).seed == cfg.seeds[0]


def test_training_prompts_repeated_under_other_ids_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = GSM8K_TRAIN.read_text().splitlines()
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join([*rows, rows[0], rows[0]]) + "\n")  # row 0 copied twice
    cfg = file_cfg(train=str(train), preset="gsm8k")
    data = load_task(TaskConfig(kind="file", file=cfg), seed=0, require_eval=False)
    assert len(data.train) == len(rows) + 2  # kept, each a query of its own
    last = len(rows) + 1
    said = f"1 prompts are in 3 training queries (under other ids), e.g. train:0, train:{last - 1}"
    assert said in caplog.text
    assert "reference answers written differently" not in caplog.text
    caplog.clear()
    # a copy whose answer differs: one of them rewards a wrong answer
    other = json.loads(rows[0]) | {"answer": "#### 99999"}
    train.write_text("\n".join([*rows, json.dumps(other)]) + "\n")
    load_task(TaskConfig(kind="file", file=cfg), seed=0, require_eval=False)
    first = load_task(TaskConfig(kind="file", file=cfg), 0, False).train[0].answer
    said = f"(e.g. train:0 answer {first!r}, train:{len(rows)} answer '99999')"
    assert "1 of those prompts have reference answers written differently" in caplog.text
    assert said in caplog.text
    caplog.clear()
    load_task(
        TaskConfig(kind="file", file=file_cfg(train=str(GSM8K_TRAIN), preset="gsm8k")), 0, False
    )
    assert "training queries (under other ids)" not in caplog.text


def test_a_damaged_dataset_folder_says_what_failed_inside_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(50)]
    split = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    arrow = next((tmp_path / "dd" / "train").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # a copy cut short
    with pytest.raises(DataError, match=r"cannot load with datasets.load_dataset: .*\(OSError: "):
        load_file_task(file_cfg(train=str(tmp_path / "dd"), preset="gsm8k"))


def test_answers_that_read_as_missing_values_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CSV whose blank answers a table tool wrote as "NaN" or "N/A" loads (the text could be
    meant), but is said: those rows would be scored against the text "NaN"."""
    path = tmp_path / "train.csv"
    path.write_text("prompt,answer\n1+1=,2\n2+2=,NaN\n3+3=,6\n4+4=,n/a\n")
    with caplog.at_level("WARNING", logger="sgpo.tasks.files"):
        data = load_file_task(file_cfg(train=str(path), preset="plain"))
    assert [q.answer for q in data.train] == ["2", "NaN", "6", "n/a"]
    assert "2 of 4 rows have an answer that reads as a missing value" in caplog.text
    assert "(the first: query 'train:1', line 3, answer 'NaN')" in caplog.text
    caplog.clear()
    path.write_text("prompt,answer\n1+1=,2\nWho won?,Nancy\n")
    with caplog.at_level("WARNING", logger="sgpo.tasks.files"):
        load_file_task(file_cfg(train=str(path), preset="plain"))
    assert "missing value" not in caplog.text


def test_gsm8k_answers_lose_thousands_separators_only(tmp_path: Path) -> None:
    """The gsm8k preset drops the commas of "1,234" (GSM8K writes some answers so) and keeps
    those of a tuple, a set or an interval, which were read as one number."""
    path = tmp_path / "g.jsonl"
    answers = ["#### 1,234", "#### (2,3)", "#### \\{1,5\\}", "#### [1,100]", "#### 2, 3"]
    path.write_text("".join(json.dumps({"question": "Q?", "answer": a}) + "\n" for a in answers))
    data = load_file_task(file_cfg(train=str(path), preset="gsm8k"))
    assert [q.answer for q in data.train] == ["1234", "(2,3)", "\\{1,5\\}", "[1,100]", "2, 3"]


def test_a_bad_row_of_a_folder_of_data_files_names_the_file_it_is_in(tmp_path: Path) -> None:
    """datasets.load_dataset reads a folder's shards one after another: an error at the split's
    row 3 names the shard and its line (or a parquet file's row) as well."""
    folder = tmp_path / "shards"
    folder.mkdir()
    good = json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n"
    (folder / "part-0.jsonl").write_text(good * 2)
    (folder / "part-1.jsonl").write_text("\n" + good + json.dumps({"prompt": "x", "answer": None}))
    with pytest.raises(
        DataError, match=r"row 3: .*'answer'.*\(row 3 is line 3 of .*part-1.jsonl\)"
    ):
        load_file_task(file_cfg(train=str(folder), preset="plain"))
    (folder / "part-1.jsonl").unlink()
    pq.write_table(pa.Table.from_pylist([{"prompt": "y", "answer": ""}]), folder / "part-1.parquet")
    (folder / "part-0.jsonl").unlink()
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "z", "answer": "4"}]), folder / "part-0.parquet"
    )
    with pytest.raises(DataError, match=r"row 1: .*\(row 1 is row 0 of .*part-1.parquet\)"):
        load_file_task(file_cfg(train=str(folder), preset="plain"))
    for part in folder.iterdir():
        part.unlink()
    # a CSV shard's row by the line it starts on: after its header, a blank line and a quoted
    # cell over two lines
    (folder / "part-0.csv").write_text('prompt,answer\n\n"1+\n1=",2\n2+2=,\n')
    with pytest.raises(DataError, match=r"row 1: .*\(row 1 is line 5 of .*part-0.csv\)"):
        load_file_task(file_cfg(train=str(folder), preset="plain"))
