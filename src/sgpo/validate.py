"""Checks on inputs that only make sense once the model or a plan is at hand: prompts that fit
the model's context and are not rendered through its chat template already, and plan tables
(possibly edited by hand) that the trainer can follow. Each failure is a DataError naming the
file, the row and the field."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sgpo.errors import DataError
from sgpo.io import METADATA_KEY
from sgpo.tasks import row_label

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sgpo.models import Policy
    from sgpo.plan import PlanRow
    from sgpo.tasks import Query, TaskData

# No tokenizer we know turns more than this many characters into one token on ordinary text,
# so a prompt longer than this many characters per position is refused without tokenizing it
# (a 50 MB line would otherwise take tens of GB to tokenize).
MAX_CHARS_PER_TOKEN = 64
ENCODE_BATCH = 4096  # prompts tokenized at a time to measure them
# Largest group size a plan may ask for: far above any real plan (g_max is usually <= 64), low
# enough that a hand-edited 10**6 is refused instead of generating for hours.
MAX_GROUP_SIZE = 4096
# The fields the trainer acts on: none may be empty.
NON_EMPTY_PLAN_COLUMNS = (
    "query_id",
    "k",
    "n_correct",
    "p_hat",
    "group_size",
    "kept",
    "reason",
    "rank",
    "prompt_tokens",  # the plan's rollouts are priced by them
    "mean_response_tokens",
)
PLAN_REASONS = ("kept", "trivial", "unsolvable")
# The profile.parquet columns sgpo plan reads.
PROFILE_COLUMNS = (
    "query_id",
    "prompt",
    "answer",
    "difficulty",
    "k",
    "n_correct",
    "mean_response_tokens",
    "prompt_tokens",
    "flops",
)
# Columns that must hold whole numbers (8.7 is refused, not cut to 8) and real numbers; a string
# in any of them is refused before it is compared with anything.
INTEGER_PLAN_COLUMNS = ("k", "n_correct", "group_size", "rank", "prompt_tokens")
REAL_PLAN_COLUMNS = ("p_hat", "mean_response_tokens")


def model_context(policy: Policy) -> int | None:
    """Positions the model can attend over (None when neither model nor tokenizer says)."""
    positions = getattr(policy.model.config, "max_position_embeddings", None)
    if positions:
        return int(positions)
    limit = getattr(policy.tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**7 else None  # 10**30 = "no limit" in HF


def check_prompts(policy: Policy, task: TaskData, max_new_tokens: int, train: bool = True) -> None:
    """Every prompt must not hold the chat template's own markers (it would go through the
    template twice), and rendered, plus max_new_tokens, must fit the model's context (the
    held-out split's only with train False: `sgpo eval` generates for no other)."""
    splits = [(task.train_label, task.train)] if train else []
    markers = template_markers(policy)
    for label, queries in [*splits, (task.eval_label, task.eval)] if markers else []:
        for row, query in enumerate(queries):
            if found := [m for m in markers if m in query.prompt]:
                raise DataError(
                    f"{row_label(label, row, query.line)}: field {task.prompt_field!r} holds "
                    f"{found[0]!r}, which the model's chat template writes itself: the prompt "
                    "would go through the template twice. Give the plain question (the "
                    "template and model.system_prompt are applied to it), or set "
                    "model.use_chat_template: false for prompts rendered already"
                )
    context = model_context(policy)
    tokenizer = policy.tokenizer
    unknown = getattr(tokenizer, "unk_token_id", None)
    # an unknown token that is also BOS, EOS or padding (GPT-2's <|endoftext|>) is added by
    # the template or the tokenizer itself: its presence says nothing of the text
    added = {getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad")}
    if unknown in added:
        unknown = None
    if context is None and unknown is None:
        return
    room = None if context is None else context - max_new_tokens
    if room is not None and room < 1:
        raise DataError(
            f"sampling.max_new_tokens is {max_new_tokens} but the model has {context} positions"
        )
    for label, queries in [*splits, (task.eval_label, task.eval)]:
        rendered = [policy.render(q.prompt) for q in queries]
        for row, text in enumerate(rendered):
            if room is not None and len(text) > room * MAX_CHARS_PER_TOKEN:
                _too_long(
                    row_label(label, row, queries[row].line),
                    task.prompt_field,
                    f"{len(text)} characters",
                    context,
                    max_new_tokens,
                )
        lengths, with_unknown = [], []
        # in batches: the token ids of a whole large dataset at once would take GBs
        for start in range(0, len(rendered), ENCODE_BATCH):
            for row, ids in enumerate(policy.encode(rendered[start : start + ENCODE_BATCH]), start):
                lengths.append(len(ids))
                if unknown is not None and unknown in ids:
                    with_unknown.append(row)
        for row, length in enumerate(lengths):
            if room is not None and length > room:
                _too_long(
                    row_label(label, row, queries[row].line),
                    task.prompt_field,
                    f"{length} tokens",
                    context,
                    max_new_tokens,
                )
        if with_unknown:  # a character-level or word-level vocabulary's gaps
            row = with_unknown[0]
            log.warning(
                "%s: %d prompts hold text the tokenizer has no token for, which the model reads "
                "as %s (e.g. %s: %r)",
                label,
                len(with_unknown),
                tokenizer.unk_token,
                row_label(label, row, queries[row].line),
                queries[row].prompt[:80],
            )


def check_task_text(
    texts: Iterable[tuple[str, object, object]],
    queries_by_id: dict[str, Query],
    source: Path,
    why: str,
) -> None:
    """A profile's or plan's prompt and answer, (query_id, prompt, answer) per row, must be its
    query's in the task (a hand edit would give the file's text one meaning for one trainer and
    another for the next): the first row that differs is refused, why saying who reads the
    file's text. Rows of queries the task lacks are left to the coverage checks."""
    for row, (query_id, prompt, answer) in enumerate(texts):
        query = queries_by_id.get(query_id)
        if query is None:
            continue
        for field, value, task_value in (
            ("prompt", prompt, query.prompt),
            ("answer", answer, query.answer),
        ):
            if value is None or str(value) != task_value:
                raise DataError(
                    f"{source}: row {row}: field {field!r} is {_shown(value)} but query "
                    f"{query.query_id!r} has {field} {_shown(task_value)} in the task: {why} "
                    "(not edited? then the task's data, or sgpo's reading of it, changed since "
                    "the profile: profile again)"
                )


def check_plan_text(rows: Sequence[PlanRow], queries_by_id: dict[str, Query], path: Path) -> None:
    """check_task_text for a plan, whose text the TRL path and the verl export train on."""
    check_task_text(
        ((r.query_id, r.prompt, r.answer) for r in rows),
        queries_by_id,
        path,
        "sgpo train generates from the task's text, the TRL path and the verl export from "
        "the plan's; change the task's data and profile again rather than edit the plan's text",
    )


def _shown(value: object, limit: int = 80) -> str:
    """A value for a message, cut to limit characters (a MATH prompt runs to pages)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def template_markers(policy: Policy) -> list[str]:
    """The special tokens the chat template writes around a message (its BOS, role headers,
    end of turn), as text; none when the prompts are plain."""
    from sgpo.models import special_token_texts, uses_chat_template

    if not uses_chat_template(policy.tokenizer, policy.config):
        return []
    written = policy.render("?")
    special = special_token_texts(policy.tokenizer)
    return sorted(t for t in special if len(t) > 2 and t in written)  # not a lone "<" or "\\n"


def _too_long(where: str, field: str, size: str, context: int, max_new_tokens: int) -> None:
    raise DataError(
        f"{where}: field {field!r} is {size} as the model sees it, more than the "
        f"model's context of {context} positions minus sampling.max_new_tokens "
        f"{max_new_tokens}; shorten or drop the prompt"
    )


def _is_integer(value: object) -> bool:
    """A whole number: an int (not a bool) or a float with no fractional part."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and value.is_integer()


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_plan_rows(rows: list[dict], path: Path, columns: Sequence[str]) -> None:
    """A plan the trainer can follow: every column (sgpo.plan.PLAN_COLUMNS), sane values of the
    right type in the ones it acts on, each query once, something kept. Rows are numbered from 0
    in file order."""
    if not rows:
        raise DataError(f"{path}: no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: column(s) {', '.join(missing)} missing; not an sgpo plan")
    seen: dict[str, int] = {}
    for row, r in enumerate(rows):
        where = f"{path}: row {row}"
        for column in NON_EMPTY_PLAN_COLUMNS:
            if r[column] is None:
                raise DataError(f"{where}: field {column!r} is empty")
        _check_plan_types(r, where)
        query_id = r["query_id"]
        if query_id in seen:
            raise DataError(
                f"{where}: field 'query_id': duplicate query id {query_id!r} "
                f"(first at row {seen[query_id]}); each query may appear once"
            )
        seen[query_id] = row
        if not isinstance(r["kept"], bool):
            raise DataError(f"{where}: field 'kept' must be true or false, got {r['kept']!r}")
        if r["reason"] not in PLAN_REASONS:
            raise DataError(
                f"{where}: field 'reason' is {r['reason']!r}, not one of {', '.join(PLAN_REASONS)}"
            )
        if r["kept"] != (r["reason"] == "kept"):
            raise DataError(f"{where}: fields 'kept' and 'reason' disagree")
        if not (r["k"] >= 1 and 0 <= r["n_correct"] <= r["k"]):
            raise DataError(f"{where}: fields 'k', 'n_correct': need 0 <= n_correct <= k, k >= 1")
        check_rewards_vary(r, where)
        check_p_hat(r, where, "a plan's p_hat is its profile's measurement", "sgpo plan")
        for column in ("prompt_tokens", "mean_response_tokens"):  # priced as generation
            if r[column] is not None and r[column] < 0:
                raise DataError(f"{where}: field {column!r} is {r[column]}; must be >= 0")
        if r["kept"] and not 1 <= r["group_size"] <= MAX_GROUP_SIZE:
            raise DataError(
                f"{where}: field 'group_size' is {r['group_size']}; a kept query needs "
                f"1 <= group_size <= {MAX_GROUP_SIZE}"
            )
        if not r["kept"] and not 0 <= r["group_size"] <= MAX_GROUP_SIZE:
            raise DataError(
                f"{where}: field 'group_size' is {r['group_size']}; a dropped query's (the "
                f"rule's G, which a fixed-G baseline's export does not read) is 0 to "
                f"{MAX_GROUP_SIZE}"
            )
        if not r["kept"] and r["rank"] != -1:  # a hand edit that dropped it halfway
            raise DataError(
                f"{where}: field 'rank' is {r['rank']}, but the query is dropped (kept = false): "
                "a dropped query's rank is -1; set it with kept, or keep the query"
            )
    if not any(r["kept"] for r in rows):
        raise DataError(f"{path}: no row has kept = true; nothing to train on")
    ranked: dict[int, int] = {}
    for row, r in enumerate(rows):
        if not r["kept"]:
            continue
        if r["rank"] < 0 or r["rank"] in ranked:
            first = f" (as row {ranked[r['rank']]})" if r["rank"] in ranked else ""
            raise DataError(
                f"{path}: row {row}: field 'rank' is {r['rank']}{first}; the kept rows' ranks "
                "must be distinct and >= 0"
            )
        ranked[r["rank"]] = row


# Metadata of a plan (and its profile) that is read as a mapping.
MAPPING_PLAN_META = ("inputs", "rule", "summary", "sampling")


def check_plan_meta(meta: dict, path: Path) -> None:
    """The plan's metadata fields training reads, where present: profile_flops and
    profile_wall_s (charged to the run) finite numbers >= 0, and each of MAPPING_PLAN_META a
    mapping. (A plan made by hand
    may leave profile_flops out: no profile is charged, in FLOPs or generated tokens, as the
    verl and TRL paths read it too.)"""
    for field, what in (("profile_flops", "cost"), ("profile_wall_s", "time")):
        value = meta.get(field)
        if value is not None and (not _is_real(value) or value < 0):
            raise DataError(
                f"{path}: metadata field {field!r} is {value!r}, not a number >= 0 (the "
                f"profile's {what}, charged to the run); re-run sgpo plan"
            )
    for field in MAPPING_PLAN_META:
        if meta.get(field) is not None and not isinstance(meta[field], dict):
            raise DataError(
                f"{path}: metadata field {field!r} is {meta[field]!r}, not a mapping; re-run "
                "sgpo plan"
            )


def _check_plan_types(r: dict, where: str) -> None:
    """Each column the trainer reads holds its type (empty allowed where the caller allows);
    a whole number written as a float (8.0) is made an int in place."""
    query_id = r["query_id"]
    if not isinstance(query_id, str) or not query_id:
        raise DataError(f"{where}: field 'query_id' must be a non-empty string, got {query_id!r}")
    for column in INTEGER_PLAN_COLUMNS:
        value = r.get(column)
        if value is None:
            continue
        if not _is_integer(value):
            raise DataError(f"{where}: field {column!r} must be a whole number, got {value!r}")
        r[column] = int(value)
    for column in REAL_PLAN_COLUMNS:
        value = r.get(column)
        if value is not None and not _is_real(value):
            raise DataError(f"{where}: field {column!r} must be a finite number, got {value!r}")


def check_has_metadata(meta: dict, path: Path, kind: str) -> None:
    """A profile or plan without sgpo's schema metadata (what it was measured on and how) was
    rewritten by a tool that drops it; say so, and how to edit one keeping it."""
    if not meta:
        raise DataError(
            f"{path}: no sgpo metadata (the parquet schema's {METADATA_KEY.decode()!r} key), "
            f"which a {kind} written by sgpo holds: a tool that rewrote the file dropped it "
            "(pandas' to_parquet and polars do). Edit it with pyarrow, which keeps it: t = "
            "pyarrow.parquet.read_table(path); rows = t.to_pylist(); ...; "
            "pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows, schema=t.schema), path)"
        )


def check_is_profile(rows: list[dict], meta: dict, path: Path) -> None:
    """A table sgpo plan can read: a profile (not a plan), with every column plan reads and
    values it can use (DataError naming the file, row and field otherwise)."""
    if "rule" in meta or "plan_seed" in meta:
        raise DataError(
            f"{path}: is a plan (written by sgpo plan), not a profile; give the profile.parquet "
            "that sgpo profile wrote (--profile)"
        )
    check_has_metadata(meta, path, "profile")
    if not rows:
        raise DataError(f"{path}: no profiled queries; nothing to plan")
    missing = [c for c in PROFILE_COLUMNS if c not in rows[0]]
    if missing:
        raise DataError(
            f"{path}: column(s) {', '.join(missing)} missing; not a profile written by sgpo profile"
        )
    seen: dict[str, int] = {}
    for row, r in enumerate(rows):
        where = f"{path}: row {row}"
        for column in ("query_id", "prompt", "answer"):
            if not isinstance(r[column], str) or (column == "query_id" and not r[column]):
                raise DataError(f"{where}: field {column!r} is {r[column]!r}, not a text")
        if r["query_id"] in seen:
            raise DataError(
                f"{where}: field 'query_id': duplicate query id {r['query_id']!r} "
                f"(first at row {seen[r['query_id']]})"
            )
        seen[r["query_id"]] = row
        for column in ("k", "n_correct", "prompt_tokens"):
            if not _is_integer(r[column]) or r[column] < 0:
                raise DataError(f"{where}: field {column!r} is {r[column]!r}, not a count >= 0")
            r[column] = int(r[column])  # a whole float (8.0: a table written through float64)
        if r["k"] < 1 or r["n_correct"] > r["k"]:
            raise DataError(
                f"{where}: fields 'k', 'n_correct' are {r['k']}, {r['n_correct']}; need "
                "k >= 1 and n_correct <= k"
            )
        for column in ("mean_response_tokens", "flops"):
            if not _is_real(r[column]) or r[column] < 0:
                raise DataError(f"{where}: field {column!r} is {r[column]!r}, not a number >= 0")
        check_rewards_vary(r, where)
        if "p_hat" in r:  # sgpo plan reads the counts
            check_p_hat(r, where, "a profile's p_hat is its samples' success rate", "sgpo profile")


def check_p_hat(r: dict, where: str, what: str, rerun: str) -> None:
    """p_hat is n_correct / k (float32's precision allowed: a table may have been written
    through it). The report and the verl export read p_hat, the plan, re-estimation and the
    prediction the counts: an edit of one alone would make them tell two stories."""
    if not _is_real(r["p_hat"]):
        raise DataError(f"{where}: field 'p_hat' must be a finite number, got {r['p_hat']!r}")
    if not 0 <= r["p_hat"] <= 1:
        raise DataError(f"{where}: field 'p_hat' is {r['p_hat']}, not in [0, 1]")
    measured = r["n_correct"] / r["k"]
    if not math.isclose(r["p_hat"], measured, rel_tol=1e-6, abs_tol=1e-9):
        raise DataError(
            f"{where}: field 'p_hat' is {r['p_hat']}, but n_correct / k is "
            f"{r['n_correct']} / {r['k']} = {measured:.6g}; {what}: edit them together, or "
            f"re-run {rerun}"
        )


def check_rewards_vary(r: dict, where: str) -> None:
    """rewards_vary (profile and plan; absent or empty in tables written before it) is true or
    false, and true where both outcomes were drawn: rewards either side of the threshold
    differ."""
    varied = r.get("rewards_vary")
    if varied is None:
        return
    if not isinstance(varied, bool):
        raise DataError(f"{where}: field 'rewards_vary' must be true or false, got {varied!r}")
    if varied and r["k"] < 2:
        raise DataError(f"{where}: field 'rewards_vary' is true, but k = {r['k']}: one sample")
    if not varied and 0 < r["n_correct"] < r["k"]:
        raise DataError(
            f"{where}: field 'rewards_vary' is false, but n_correct / k = {r['n_correct']} / "
            f"{r['k']} holds both outcomes, whose rewards differ: edit them together"
        )
