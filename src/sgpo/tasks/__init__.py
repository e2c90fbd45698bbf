"""Verifiable tasks: queries (id, prompt, reference answer) and the verifier that scores them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config is light, but tasks need not load it to be imported
    from sgpo.config import TaskConfig

from sgpo.errors import DataError


@dataclass(frozen=True)
class Query:
    query_id: str
    prompt: str
    answer: str
    # Free-form bucket label used to report accuracy per difficulty ("3-digit", "level 4"...).
    difficulty: str = ""


@dataclass(frozen=True)
class TaskData:
    train: list[Query]
    eval: list[Query]
    default_verifier: str  # import path "module:function"
    source: str  # what the queries came from, recorded in profile/plan for consistency checks
    # Where each split's rows come from, for messages naming file and row.
    train_label: str = "train queries"
    eval_label: str = "eval queries"


def check_queries(queries: list[Query], source: str) -> None:
    """Refuse empty prompts/answers and duplicate ids instead of silently dropping rows."""
    seen: dict[str, int] = {}
    for row, q in enumerate(queries):
        if not q.query_id:
            raise DataError(f"{source}: row {row}: field 'id' is empty")
        if q.query_id in seen:
            raise DataError(
                f"{source}: row {row}: field 'id': duplicate query id {q.query_id!r} "
                f"(first at row {seen[q.query_id]})"
            )
        seen[q.query_id] = row
        if not q.prompt.strip():
            raise DataError(f"{source}: row {row}: field 'prompt' is empty (id {q.query_id!r})")
        if not q.answer.strip():
            raise DataError(f"{source}: row {row}: field 'answer' is empty (id {q.query_id!r})")


def load_task(task_cfg: TaskConfig, seed: int) -> TaskData:
    if task_cfg.kind == "addition":
        from sgpo.tasks.addition import make_addition_task

        data = make_addition_task(task_cfg.addition, seed)
    else:
        from sgpo.tasks.files import load_file_task

        data = load_file_task(task_cfg.file)
    check_queries(data.train, f"{data.source} (train)")
    if not data.eval:
        raise DataError(f"{data.source}: no eval queries; give task.file.eval (held-out data)")
    check_queries(data.eval, f"{data.source} (eval)")
    overlap = {q.query_id for q in data.train} & {q.query_id for q in data.eval}
    if overlap:
        raise DataError(
            f"{data.source}: {len(overlap)} query ids in both train and eval, "
            f"e.g. {sorted(overlap)[:3]}"
        )
    return data
