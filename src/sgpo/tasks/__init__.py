"""Verifiable tasks: queries (id, prompt, reference answer) and the verifier that scores them."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config is light, but tasks need not load it to be imported
    from sgpo.config import RunConfig, TaskConfig

from sgpo.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    query_id: str
    prompt: str
    answer: str
    # Free-form bucket label used to report accuracy per difficulty ("3-digit", "level 4"...).
    difficulty: str = ""
    # The line of a .jsonl / .csv file its row starts on, for messages only (not its identity).
    line: int | None = field(default=None, compare=False)
    # A verl row's own data_source (its file's; verl's metrics group by it), which the verl
    # export keeps; None for other tasks and rows without one.
    data_source: str | None = field(default=None, compare=False)
    # A verl row's own ability label, which the verl export keeps; None as data_source.
    ability: str | None = field(default=None, compare=False)
    # A verl row's own extra_info (its custom reward function may read it: GSM8K's answer,
    # tool kwargs, test cases), which the verl export keeps beside sgpo's fields; None for
    # other tasks and rows without one.
    extra_info: dict | None = field(default=None, compare=False)


def row_label(source: str, row: int, line: int | None = None, query_id: str | None = None) -> str:
    """Where a record is, for messages: "<file>: row 3 (line 5)", or "(line 5, id 'q3')" with
    its query id; rows numbered from 0 without a CSV's header or blank lines, lines from 1 as
    an editor shows them."""
    details = ([] if line is None else [f"line {line}"]) + (
        [] if query_id is None else [f"id {query_id!r}"]
    )
    return f"{source}: row {row}" + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True)
class TaskData:
    train: list[Query]
    eval: list[Query]
    source: str  # what the queries came from, recorded in profile/plan for consistency checks
    # Where each split's rows come from, for messages naming file and row.
    train_label: str = "train queries"
    eval_label: str = "eval queries"
    prompt_field: str = "prompt"  # the prompt's column in the files, for messages
    answer_field: str = "answer"  # the reference answer's column (a dotted path), for messages
    id_field: str | None = None  # the query id's column (None: ids are row numbers)
    ids_named_by_file: bool = False  # ids are "<file name>:<row or index>" (no id_field, verl's)


def check_queries(queries: list[Query], source: str, id_field: str | None = None) -> None:
    """Refuse empty prompts/answers and duplicate ids instead of silently dropping rows."""
    seen: dict[str, int] = {}
    field = id_field or "id"
    for row, q in enumerate(queries):
        where = row_label(source, row, q.line)
        if not q.query_id:
            raise DataError(f"{where}: field {field!r} is empty")
        if q.query_id in seen:
            hint = " (task.file.id_field='' numbers the rows instead)" if id_field else ""
            raise DataError(
                f"{where}: field {field!r}: duplicate query id {q.query_id!r} "
                f"(first at row {seen[q.query_id]}){hint}"
            )
        seen[q.query_id] = row
        if not q.prompt.strip():
            raise DataError(f"{where}: field 'prompt' is empty (id {q.query_id!r})")
        if not q.answer.strip():
            raise DataError(f"{where}: field 'answer' is empty (id {q.query_id!r})")


def queries_sha256(queries: list[Query]) -> str:
    """sha256 over the queries as training sees them (id, prompt, answer, difficulty, in
    order): what a checkpoint records about its data. Unlike TaskData.source it also pins a
    hub dataset's rows, and it ignores file bytes that no query uses (other columns, rows
    past a limit)."""
    digest = hashlib.sha256()
    for q in queries:
        record = [q.query_id, q.prompt, q.answer, q.difficulty]
        digest.update(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def data_identity(data: TaskData) -> dict[str, dict[str, object]]:
    """What a training checkpoint records about the data it was trained and evaluated on,
    so that a resume on other data is refused: per split the row count and queries_sha256."""
    return {
        split: {"rows": len(queries), "sha256": queries_sha256(queries)}
        for split, queries in (("train", data.train), ("eval", data.eval))
    }


def default_verifier(kind: str, preset: str | None) -> str:
    """The verifier a task kind (a file task: its preset) is scored with by default."""
    if kind == "addition":
        from sgpo.tasks.addition import VERIFIER

        return VERIFIER
    from sgpo.tasks.files import PRESETS

    return PRESETS[preset or "plain"].verifier


def verifier_spec(task_cfg: TaskConfig) -> str:
    """The verifier the task is scored with: task.verifier, else its kind's or preset's."""
    preset = task_cfg.file.preset if task_cfg.file is not None else None
    return task_cfg.verifier or default_verifier(task_cfg.kind, preset)


def warn_of_repeated_prompts(queries: list[Query], label: str) -> None:
    """Training queries whose prompt another one has (a row copied, two files joined): each is
    profiled and trained as a query of its own, so said, not dropped; and said apart where the
    copies' reference answers differ, since then one of them rewards a wrong answer."""
    by_prompt: dict[str, list[Query]] = {}
    for q in queries:
        by_prompt.setdefault(q.prompt, []).append(q)
    repeated = [copies for copies in by_prompt.values() if len(copies) > 1]
    if repeated:
        log.warning(
            "%s: %d prompts are in %d training queries (under other ids), e.g. %s: each is "
            "profiled and trained as a query of its own, so such a prompt counts more",
            label,
            len(repeated),
            sum(len(copies) for copies in repeated),
            ", ".join(q.query_id for q in repeated[0][:3]),
        )
    differing = [copies for copies in repeated if len({q.answer for q in copies}) > 1]
    if differing:
        first = differing[0]
        log.warning(
            "%s: %d of those prompts have reference answers written differently in their "
            "copies (e.g. %s): unless they are the same answer written two ways, the same "
            "response is rewarded as right for one and wrong for another; fix the answers or "
            "keep one copy",
            label,
            len(differing),
            ", ".join(f"{q.query_id} answer {q.answer!r}" for q in first[:3]),
        )


def load_run_task(config: RunConfig, require_eval: bool = True) -> TaskData:
    """A run config's task: its task settings and seed, with the model's system prompt (which a
    verl file's rows may hold as their own system message)."""
    return load_task(config.task, config.seed, require_eval, config.model.system_prompt)


def load_task(
    task_cfg: TaskConfig, seed: int, require_eval: bool = True, system_prompt: str | None = None
) -> TaskData:
    """The task's queries, checked; require_eval False for what reads only the training split
    (profile, plan, the verl export: a file task's eval split is then not read, and the
    addition task's is drawn, as its training split is drawn apart from it): training and
    evaluation need held-out queries. system_prompt: model.system_prompt, which a verl file's
    rows may hold as their own system message (the loader says when they hold another)."""
    if task_cfg.kind == "addition":
        from sgpo.tasks.addition import make_addition_task

        data = make_addition_task(task_cfg.addition, seed)
    else:
        from sgpo.tasks.files import load_file_task

        data = load_file_task(task_cfg.file, with_eval=require_eval, system_prompt=system_prompt)
    # Errors name the files (train_label/eval_label), not the long source string.
    check_queries(data.train, data.train_label, data.id_field)
    if not data.eval and require_eval:
        raise DataError(f"{data.train_label}: no eval queries; give task.file.eval (held-out data)")
    check_queries(data.eval, data.eval_label, data.id_field)
    overlap = {q.query_id for q in data.train} & {q.query_id for q in data.eval}
    if overlap:
        # ids made from the file name and row ("gsm8k:0"): two files named alike collide
        if data.ids_named_by_file:
            automatic = (
                "; the ids are made from each file's name and row (or verl's extra_info.index), "
                "so files named alike share them: rename one"
                + (", or name an id column (task.file.id_field)" if data.id_field is None else "")
                if data.train_label != data.eval_label
                else ""
            )
        else:  # each split numbered from the same start, say
            automatic = (
                f"; a query's id (column {data.id_field!r}) must be unique across both splits: "
                "make them so, or let task.file.id_field='' number each file's rows by its name"
            )
        raise DataError(
            f"{data.train_label} and {data.eval_label}: {len(overlap)} query ids in both "
            f"train and eval, e.g. {sorted(overlap)[:3]}{automatic}"
        )
    warn_of_repeated_prompts(data.train, data.train_label)
    shared = {q.prompt for q in data.train} & {q.prompt for q in data.eval}
    if shared:  # other ids (another file, other row numbers), the same queries
        log.warning(
            "%s and %s: %d eval prompts are also training prompts (under other ids): held-out "
            "accuracy would partly measure trained queries; e.g. %r",
            data.train_label,
            data.eval_label,
            len(shared),
            sorted(shared)[0][:80],
        )
    return data
