"""sGPO plan -> verl training parquet (and the task's held-out split -> verl validation
parquet: the same columns without __rollout_n__, export_held_out_for_config).

verl 0.9.1's default (v1) trainer reads the number of rollouts of each prompt from a
``__rollout_n__`` field of the dataset row (verl/trainer/ppo/v1/agent_loop_tq.py,
``AgentLoopWorkerTQ._run_prompt``), and its ``RLHFDataset`` passes every parquet column through to
that point. So the plan's per-query group size G becomes a column, and the curriculum becomes the
row order: with ``data.shuffle=False`` verl iterates the dataset with a SequentialSampler and the
sync trainer takes the next ``data.train_batch_size`` rows for each step.

Columns (one row per kept query, in curriculum order):
  prompt         chat messages: optional system message, then the user message
  data_source    names the task for verl's metrics and for sgpo.verl.reward's fallback mapping:
                 a verl file's row keeps its own (own_row_fields), unless one is given
  ability        free-form label verl carries along: a verl file's row keeps its own, the rest
                 have "sgpo"
  reward_model   {"style": "rule", "ground_truth": <answer>}
  extra_info     {"index" (the row's place in the file, or a verl row's own integer index),
                  "query_id", "p_hat", "group_size", "rank", "verifier",
                  "verifier_kwargs" (JSON text), "verifier_timeout_s", "verifier_isolation",
                  "verifier_reward_range" (JSON text [low, high]; none for [0, 1]),
                  "success_threshold"}; a verl file's row keeps its own extra_info's other
                  keys beside them (own_row_fields: its custom reward function may read
                  them), and a key of its own named as one of sgpo's is replaced by sgpo's
                  (a warning names it); a key a row lacks is null there (a struct column)
  __rollout_n__  G
Schema metadata (key "sgpo"): the plan's metadata under "plan" and the export settings under
"export"; export.downsample_to (0 = off) is the config's train.downsample_to,
export.drop_equal_groups its train.drop_equal_groups and export.drop_equal_denominator its
train.drop_equal_denominator, which the launch applies with sgpo.verl.sampler (PODS, dead groups
dropped, the whole batch's token-mean); export.history_explore (1 = off),
history_min_streak, history_target and history_seed are the config's skip on history
(train.history_*, seed), which the launch applies with sgpo.verl.sampler's HistoryDataset and
HistoryReplayBuffer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from sgpo.config import VARIANT_TRAIN_SETTINGS, RunConfig
from sgpo.errors import DataError
from sgpo.io import read_table, read_table_metadata, write_table
from sgpo.plan import PlanRow, kept_in_order
from sgpo.rundir import claim_outputs
from sgpo.tasks import Query

log = logging.getLogger(__name__)

ROLLOUT_N = "__rollout_n__"
# Export metadata of a run without skips on history (train.history_explore = 1).
HISTORY_OFF = {
    "history_explore": 1.0,
    "history_min_streak": 1,
    "history_target": 0.0,
    "history_seed": 0,
}
DEFAULT_ABILITY = "sgpo"


def skips_on_history(export: dict) -> bool:
    """Whether an export's launch skips on history: its dataloader then draws one row at a
    time across epochs, so a step holds any train_batch_size rows the skips leave."""
    return export.get("history_explore", 1.0) < 1 or export.get("history_target", 0.0) > 0


# Variant settings the verl launch applies (sgpo.verl.sampler): PODS down-sampling, dead groups
# dropped with either denominator, and the skip on history with its adaptive target; verl's
# steps are always filled (history_fill, see settings_not_carried).
CARRIED_BY_VERL = (
    "downsample_to",
    "drop_equal_groups",
    "drop_equal_denominator",
    "history_explore",
    "history_min_streak",
    "history_target",
    "history_fill",
)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema(
    [
        ("prompt", pa.list_(MESSAGE)),
        ("data_source", pa.string()),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),
                    ("query_id", pa.string()),
                    ("p_hat", pa.float64()),
                    ("group_size", pa.int64()),
                    ("rank", pa.int64()),
                    ("verifier", pa.string()),
                    ("verifier_kwargs", pa.string()),
                    ("verifier_timeout_s", pa.float64()),
                    ("verifier_isolation", pa.string()),
                    ("verifier_reward_range", pa.string()),
                    ("success_threshold", pa.float64()),
                ]
            ),
        ),
        (ROLLOUT_N, pa.int64()),
    ]
)

# extra_info's fields that are sgpo's (sgpo.verl.reward and the samplers read them): a verl
# file's own value under one of these names is replaced by sgpo's (null where sgpo sets none).
SGPO_INFO_KEYS = frozenset(SCHEMA.field("extra_info").type.names)


def verl_rows(
    plan_rows: list[PlanRow],
    data_source: str,
    system_prompt: str | None = None,
    verifier: str | None = None,
    prompt_template: str = "{prompt}",
    verifier_kwargs: dict | None = None,
    verifier_timeout_s: float | None = None,
    verifier_isolation: str | None = None,
    fixed_group_size: int | None = None,
    verifier_reward_range: tuple[float, float] | None = None,
    success_threshold: float | None = None,
    own_rows: Mapping[str, Query] | None = None,
    keep_own_sources: bool = True,
) -> list[dict]:
    """The export's rows: kept queries in curriculum order (see the module docstring).

    fixed_group_size: a baseline's data instead (fixed-n GRPO, DAPO): every query of the plan,
    kept or dropped, in the plan's row order (the task's order; the baseline scripts let verl
    shuffle), each with __rollout_n__ = fixed_group_size.
    own_rows: a verl file's queries by id (own_row_fields), whose own data_source (with
    keep_own_sources; data_source for the rest), ability and extra_info their rows keep
    (verl_row).
    """
    own_rows = own_rows or {}
    scoring = scoring_info(
        verifier,
        verifier_kwargs,
        verifier_timeout_s,
        verifier_isolation,
        verifier_reward_range,
        success_threshold,
    )
    if fixed_group_size is not None:
        selected = list(plan_rows)
    else:
        # in rank order, gaps allowed (kept rows deleted by hand), as sgpo train follows it
        selected = kept_in_order(plan_rows)
        ranks = [r.rank for r in selected]
        # sorted, so a repeat is beside its twin (one pass, not a count per rank)
        repeated = sorted({a for a, b in zip(ranks, ranks[1:], strict=False) if a == b})
        if repeated or (ranks and ranks[0] < 0):
            raise ValueError(
                f"plan ranks of kept queries must be distinct and >= 0, got "
                f"{repeated[:10] or ranks[:1]} {'repeated' if repeated else ''}".rstrip()
            )
    if not selected:
        raise ValueError("the plan keeps no query: nothing to export")
    rows = []
    for position, r in enumerate(selected):
        g = fixed_group_size if fixed_group_size is not None else r.group_size
        if g < 2:
            # verl gives a group of one an advantage equal to its reward (mean 0, std 1) where
            # sGPO gives it zero: refuse rather than train on a different objective.
            raise ValueError(
                f"query {r.query_id!r} has group size {g}; verl needs G >= 2 for a "
                f"group-relative advantage (set plan.g_min >= 2)"
            )
        planned = {"p_hat": float(r.p_hat), "group_size": g, "rank": r.rank}
        own = own_rows.get(r.query_id)
        fields = planned | scoring
        row = verl_row(
            r, position, data_source, system_prompt, prompt_template, fields, own, keep_own_sources
        )
        rows.append(row | {ROLLOUT_N: g})
    return rows


# what pyarrow raises for values it cannot hold in one column (an int past 64 bits: Overflow)
UNSTORABLE = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)


def _own_index(info: Mapping | None) -> int | None:
    index = (info or {}).get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


def merged_extra_info(info: Mapping | None, fields: dict) -> dict:
    """A row's extra_info as exported: its own keys beside sgpo's fields, which hold sgpo's
    values (sgpo.verl.reward and the samplers read them), but for a row's own integer index
    (verl's preprocessing writes one, by which logs join back to the source rows; sgpo reads
    query_id), which stays where sgpo would write the row's place in the file."""
    merged = {k: v for k, v in (info or {}).items() if k not in SGPO_INFO_KEYS} | fields
    if (index := _own_index(info)) is not None:
        merged["index"] = index
    return merged


def warn_replaced_keys(infos: list[Mapping | None], out: Path) -> None:
    """One warning for an export whose rows' own extra_info holds keys that are sgpo's, and
    whose values are replaced (merged_extra_info: not an integer index, which is kept)."""
    clashes = sorted(
        {
            k
            for info in infos
            for k, v in (info or {}).items()
            # a null is no value of the row's (a parquet struct gives every row each key)
            if k in SGPO_INFO_KEYS
            and v is not None
            and not (k == "index" and _own_index(info) is not None)
        }
    )
    if clashes:
        log.warning(
            "%s: the rows' own extra_info has keys that are sgpo's (%s): the export writes "
            "sgpo's values there, replacing the rows' own; the rows' other keys are kept",
            out,
            ", ".join(clashes),
        )


def with_own_extra_info(schema: pa.Schema, rows: list[dict]) -> pa.Schema:
    """schema with the rows' own extra_info keys (those not sgpo's) added to its extra_info
    struct, each typed as pyarrow infers it from every row's value (null where a row lacks
    the key); schema itself when the rows have none, so other tasks' files are unchanged.
    Values of one key that no one type holds (a string in one row, a number in another), or an
    empty mapping (parquet cannot store a struct without fields), are a DataError naming the
    key and a row."""
    own = list(dict.fromkeys(k for r in rows for k in r["extra_info"] if k not in SGPO_INFO_KEYS))
    if not own:
        return schema
    fields = list(schema.field("extra_info").type)
    for key in own:
        values = [r["extra_info"].get(key) for r in rows]
        try:
            arrow_type = pa.array(values).type
        except UNSTORABLE:
            raise _conflict(key, values, rows) from None
        if _has_empty_struct(arrow_type):
            row = next(i for i, v in enumerate(values) if v is not None)
            raise DataError(
                f"extra_info key {key!r} (row {row}, query {_query_of(rows[row])}): an empty "
                "mapping in every row that has it, which parquet cannot store (a struct "
                "without fields); give it a field, or drop the key"
            )
        fields.append(pa.field(key, arrow_type))
    index = schema.get_field_index("extra_info")
    return schema.set(index, pa.field("extra_info", pa.struct(fields)))


def _conflict(key: str, values: list, rows: list[dict]) -> DataError:
    """The DataError for a key whose values no one type holds, naming the first row that
    pyarrow refuses with the rows before it (a longer prefix is refused too: bisect)."""
    low, high = 0, len(values)  # values[:low] converts, values[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            pa.array(values[:middle])
            low = middle
        except UNSTORABLE:
            high = middle
    row = high - 1
    where = f"extra_info key {key!r}: row {row} (query {_query_of(rows[row])})"
    value = f"{type(values[row]).__name__} {values[row]!r:.80}"
    try:
        pa.array(values[row : row + 1])
    except UNSTORABLE as e:  # not storable even alone (2**70)
        return DataError(f"{where} holds {value}, which parquet cannot store: {e}")
    return DataError(
        f"{where} holds {value}, which does not fit the type of the rows before it "
        f"({pa.array(values[:row]).type}); parquet stores one type per key (verl reads "
        "extra_info as a struct column): give the key one type in every row"
    )


def _query_of(row: dict) -> str:
    return repr(row["extra_info"]["query_id"])


def _has_empty_struct(arrow_type: pa.DataType) -> bool:
    if pa.types.is_struct(arrow_type):
        return arrow_type.num_fields == 0 or any(_has_empty_struct(f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _has_empty_struct(arrow_type.value_type)
    return False


def scoring_info(
    verifier: str | None,
    verifier_kwargs: dict | None,
    verifier_timeout_s: float | None,
    verifier_isolation: str | None,
    verifier_reward_range: tuple[float, float] | None,
    success_threshold: float | None,
) -> dict:
    """The extra_info fields sgpo.verl.reward.compute_score scores a row by."""
    if verifier_isolation not in (None, "inline", "process", "sandbox"):
        raise ValueError(
            f"verifier_isolation must be inline, process or sandbox, got {verifier_isolation!r}"
        )
    rescaled = verifier_reward_range is not None and tuple(verifier_reward_range) != (0.0, 1.0)
    return {
        "verifier": verifier,
        "verifier_kwargs": json.dumps(verifier_kwargs, sort_keys=True) if verifier_kwargs else None,
        "verifier_timeout_s": verifier_timeout_s,
        "verifier_isolation": verifier_isolation,
        "verifier_reward_range": json.dumps(list(verifier_reward_range)) if rescaled else None,
        "success_threshold": success_threshold,
    }


def verl_row(
    query: PlanRow | Query,
    index: int,
    data_source: str,
    system_prompt: str | None,
    prompt_template: str,
    fields: dict,
    own: Query | None = None,
    keep_own_source: bool = True,
) -> dict:
    """One query as verl reads it: chat messages, its answer as the rule's ground truth, and
    extra_info's index and query_id with sgpo's fields. own: the query as a verl file's row
    gave it, whose data_source (with keep_own_source), ability and extra_info
    (merged_extra_info) the row keeps; data_source and DEFAULT_ABILITY where it has none."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt_template.format(prompt=query.prompt)})
    info = {"index": index, "query_id": query.query_id} | fields
    return {
        "prompt": messages,
        "data_source": (keep_own_source and own and own.data_source) or data_source,
        "ability": (own and own.ability) or DEFAULT_ABILITY,
        "reward_model": {"style": "rule", "ground_truth": str(query.answer)},
        "extra_info": merged_extra_info(own and own.extra_info, info),
    }


def is_sgpo_export(path: Path) -> bool:
    """A parquet an older sgpo exported (before exports were recorded): its metadata says so."""
    try:
        return "export" in read_table_metadata(path)
    except (DataError, OSError, ValueError):
        return False


def install_exports(staged: dict[Path, Path]) -> None:
    """Move exports written in staging folders (each beside its destination: the same file
    system) to their destinations {destination: staged}, refusing, as an export there would,
    a file sgpo did not write: every destination is claimed before any file moves."""
    for out_path in staged:
        claim_export(Path(out_path))
    for out_path, new in staged.items():
        os.replace(new, out_path)


def claim_export(path: Path) -> None:
    """Claim path as an sgpo output in its directory (sgpo.rundir.claim_outputs): a file there
    that sgpo did not write is refused (FileExistsError), one an export wrote is adopted (and
    replaced), another sgpo command's output (a plan, a run's summary) refused."""
    claim_outputs(path.parent, [path.name], adopt=is_sgpo_export)
    if path.exists() and not is_sgpo_export(path):
        raise FileExistsError(
            f"{path} is another sgpo command's output (a plan, a profile, a run's file), not an "
            "earlier export: an export replaces only its own; choose another --out"
        )


def write_export(path: Path, rows: list[dict], meta: dict, schema: pa.Schema) -> Path:
    """rows as a verl parquet at path (claimed first, written atomically); returns path."""
    claim_export(path)
    write_table(path, rows, meta, schema=schema)
    return path


def export_verl_parquet(
    plan_rows: list[PlanRow],
    plan_meta: dict,
    out_path: Path,
    data_source: str,
    system_prompt: str | None = None,
    verifier: str | None = None,
    prompt_template: str = "{prompt}",
    verifier_kwargs: dict | None = None,
    verifier_timeout_s: float | None = None,
    verifier_isolation: str | None = None,
    fixed_group_size: int | None = None,
    not_carried: dict | None = None,
    downsample_to: int = 0,
    history: dict | None = None,
    drop_equal_groups: bool = False,
    drop_equal_denominator: str = "kept",
    verifier_reward_range: tuple[float, float] | None = None,
    success_threshold: float | None = None,
    own_rows: Mapping[str, Query] | None = None,
    keep_own_sources: bool = True,
) -> Path:
    """Write the plan's kept queries as a verl-ready parquet (atomically) and return its path.
    The file is claimed as sgpo's in its directory (sgpo.rundir.claim_outputs): a file there
    that sgpo did not write is refused, one an earlier export wrote is replaced.

    verifier (import path "module:function"), verifier_kwargs, verifier_timeout_s,
    verifier_isolation and verifier_reward_range (sgpo's task.verifier* settings) go into each
    row's extra_info, so that
    sgpo.verl.reward.compute_score scores with the same verifier sGPO profiled with;
    success_threshold (task.correct_threshold, on the rescaled rewards; None = 0.5) too, for
    its acc.
    prompt_template: sgpo's model.prompt_template, applied to each query's prompt.
    fixed_group_size: a baseline's data (see verl_rows).
    not_carried: sgpo settings the verl run will not apply (recorded in the metadata).
    downsample_to: PODS down-sampling the launch applies (sgpo.verl.sampler); 0 = off.
    drop_equal_groups: the launch clears groups whose rewards are all equal (sgpo.verl.sampler).
    drop_equal_denominator: "generated": the launch keeps the token-mean over the whole batch.
    history: the skip on history the launch applies (sgpo.verl.sampler), as
        {"history_explore", "history_min_streak", "history_target", "history_seed"}; None = off.
    own_rows, keep_own_sources: a verl file's queries, whose own fields their rows keep
    (verl_rows).
    """
    rows = verl_rows(
        plan_rows,
        data_source,
        system_prompt,
        verifier,
        prompt_template,
        verifier_kwargs,
        verifier_timeout_s,
        verifier_isolation,
        fixed_group_size,
        verifier_reward_range,
        success_threshold,
        own_rows,
        keep_own_sources,
    )
    out_path = Path(out_path)
    schema = with_own_extra_info(SCHEMA, rows)  # before the claim: a refusal writes nothing
    own = [(own_rows or {}).get(r["extra_info"]["query_id"]) for r in rows]
    warn_replaced_keys([q.extra_info if q else None for q in own], out_path)
    meta = {
        "plan": plan_meta,
        "export": {
            "format": "verl",
            "data_source": data_source,
            "data_sources": sorted({r["data_source"] for r in rows}),
            "system_prompt": system_prompt,
            "verifier": verifier,
            "verifier_kwargs": verifier_kwargs or {},
            "verifier_timeout_s": verifier_timeout_s,
            "verifier_isolation": verifier_isolation,
            "verifier_reward_range": list(verifier_reward_range or (0.0, 1.0)),
            "success_threshold": success_threshold,
            "prompt_template": prompt_template,
            "abilities": sorted({r["ability"] for r in rows}),
            "rows": len(rows),
            "rollouts_per_epoch": sum(r[ROLLOUT_N] for r in rows),
            "fixed_group_size": fixed_group_size,
            "not_carried": not_carried or {},
            "downsample_to": downsample_to,
            "drop_equal_groups": drop_equal_groups,
            "drop_equal_denominator": drop_equal_denominator,
            **(history or HISTORY_OFF),
        },
    }
    return write_export(out_path, rows, meta, schema)


def export_group_sizes(path: Path) -> list[int]:
    """Each row's __rollout_n__ of the verl export at path (in its order); DataError for a
    parquet without them (a plan or verl's own data instead of an export)."""
    rows, _ = read_table(path)
    if rows and ROLLOUT_N not in rows[0]:
        raise DataError(
            f"{path}: no column {ROLLOUT_N!r}: not a verl export written by sgpo export-verl "
            "(a plan or a dataset has no group sizes to count the rollouts by)"
        )
    return [row[ROLLOUT_N] for row in rows]


def rollouts_per_step(rollout_ns: list[int], train_batch_size: int) -> list[int]:
    """Rollouts each step of one epoch generates, for verl's sync trainer with data.shuffle=False.

    verl's train dataloader uses drop_last=True, so an epoch is len // train_batch_size steps and
    the last len % train_batch_size rows (the hardest queries of the curriculum) are not reached
    in that epoch; callers should pick a train_batch_size that divides the row count.
    """
    if train_batch_size < 1:
        raise ValueError(f"train_batch_size must be >= 1, got {train_batch_size}")
    steps = len(rollout_ns) // train_batch_size
    return [
        sum(rollout_ns[s * train_batch_size : (s + 1) * train_batch_size]) for s in range(steps)
    ]


def step_summary(rollout_ns: list[int], train_batch_size: int) -> dict:
    """Numbers a launch needs: steps per epoch, rollouts per step, rows dropped by drop_last."""
    per_step = rollouts_per_step(rollout_ns, train_batch_size)
    return {
        "rows": len(rollout_ns),
        "train_batch_size": train_batch_size,
        "steps_per_epoch": len(per_step),
        "rows_not_reached_per_epoch": len(rollout_ns) - len(per_step) * train_batch_size,
        "rollouts_per_step_min": min(per_step, default=0),
        "rollouts_per_step_max": max(per_step, default=0),
        "rollouts_per_step_mean": sum(per_step) / len(per_step) if per_step else 0.0,
        "g_max": max(rollout_ns, default=0),
    }


def export_for_config(
    cfg: RunConfig,
    rows: list[PlanRow],
    meta: dict,
    out: Path,
    data_source: str | None = None,
    verifier: str | None = None,
    fixed_group_size: int | None = None,
    train_queries: list[Query] | None = None,
) -> tuple[Path, str, str]:
    """export_verl_parquet with the run config's prompt template, system prompt and verifier
    (and its settings); returns (path, the data_source said, verifier). The train settings that the
    verl run will not apply are recorded in the metadata (see settings_not_carried);
    callers should show them. Rows of a verl file keep their own extra_info, and their own
    data_source unless one is given (own_row_fields; train_queries: the task's, where the
    caller has loaded them already)."""
    own_rows = own_row_fields(cfg, train_queries)
    keep_own_sources = data_source is None
    data_source, scoring = config_scoring(cfg, data_source, verifier)
    path = export_verl_parquet(
        rows,
        meta,
        out,
        data_source,
        cfg.model.system_prompt,
        prompt_template=cfg.model.prompt_template,
        **scoring,
        fixed_group_size=fixed_group_size,
        not_carried=settings_not_carried(cfg),
        # A baseline's data trains as the baseline does (DOWNSAMPLE_TO=N gives it PODS).
        downsample_to=cfg.train.downsample_to if fixed_group_size is None else 0,
        history=history_settings(cfg) if fixed_group_size is None else None,
        drop_equal_groups=cfg.train.drop_equal_groups and fixed_group_size is None,
        drop_equal_denominator=(
            cfg.train.drop_equal_denominator if fixed_group_size is None else "kept"
        ),
        own_rows=own_rows,
        keep_own_sources=keep_own_sources,
    )
    own = sorted({q.data_source for q in own_rows.values() if q.data_source})
    if keep_own_sources and own:
        listed = ", ".join(own[:5]) + (f" and {len(own) - 5} more" if len(own) > 5 else "")
        data_source = f"the rows' own: {listed}; {data_source} for rows without one"
    return path, data_source, scoring["verifier"]


def own_row_fields(cfg: RunConfig, train: list[Query] | None = None) -> dict[str, Query]:
    """The training queries by id when they are a verl file's rows, whose own data_source,
    ability and extra_info the export keeps (verl groups its metrics by data_source, and a file
    may mix GSM8K and MATH; a custom reward function may read extra_info); none for other
    tasks. train: the task's training queries, loaded here when not given."""
    from sgpo.tasks import load_run_task

    if cfg.task.kind != "file" or cfg.task.file.preset != "verl":
        return {}
    if train is None:
        train = load_run_task(cfg, require_eval=False).train
    return {q.query_id: q for q in train}


def config_scoring(
    cfg: RunConfig, data_source: str | None, verifier: str | None
) -> tuple[str, dict]:
    """(data_source, the export's verifier keyword arguments): the config's verifier with its
    task.verifier_* settings and success threshold, or a verifier given here with the defaults
    (the config's settings belong to the config's verifier); data_source sgpo/addition or
    sgpo/<preset> unless given."""
    from sgpo.tasks import verifier_spec

    settings = cfg.task if verifier is None else None
    if data_source is None:
        kind = cfg.task.kind
        data_source = "sgpo/addition" if kind == "addition" else f"sgpo/{cfg.task.file.preset}"
    return data_source, {
        "verifier": verifier or verifier_spec(cfg.task),
        "verifier_kwargs": settings.verifier_kwargs if settings else None,
        "verifier_timeout_s": settings.verifier_timeout_s if settings else None,
        "verifier_isolation": settings.verifier_isolation if settings else None,
        "verifier_reward_range": settings.verifier_reward_range if settings else None,
        "success_threshold": (
            settings.correct_threshold
            if settings and settings.success_threshold is not None
            else None
        ),
    }


# Validation data: the training export's columns without __rollout_n__ (verl samples each
# validation prompt actor_rollout_ref.rollout.val_kwargs.n times).
VALIDATION_SCHEMA = pa.schema([field for field in SCHEMA if field.name != ROLLOUT_N])


def export_held_out_for_config(
    cfg: RunConfig, out: Path, data_source: str | None = None, verifier: str | None = None
) -> Path:
    """The config's task's held-out split (task.eval: what sgpo's held-out accuracy is measured
    on) as verl validation data, formatted and scored as export_for_config's rows are: verl's
    val-core/<data_source>/acc then counts successes as sgpo's held-out accuracy does, at
    verl's validation sampling (val_kwargs: greedy by default, as sgpo's eval_acc_greedy).
    Written atomically; a file there that sgpo did not write is refused. Rows of a verl file
    keep their own extra_info, and their own data_source unless one is given."""
    from sgpo.tasks import load_run_task

    keep_own = data_source is None  # rows of a verl file keep their own data_source
    data_source, scoring = config_scoring(cfg, data_source, verifier)
    info = scoring_info(**scoring)
    held_out = load_run_task(cfg).eval
    system_prompt, template = cfg.model.system_prompt, cfg.model.prompt_template
    rows = [
        verl_row(query, index, data_source, system_prompt, template, info, query, keep_own)
        for index, query in enumerate(held_out)
    ]
    if not rows:
        raise ValueError("the task has no held-out queries (task.eval): nothing to validate on")
    out = Path(out)
    schema = with_own_extra_info(VALIDATION_SCHEMA, rows)  # before the claim: nothing written
    warn_replaced_keys([q.extra_info for q in held_out], out)
    meta = {
        "export": {
            "format": "verl-validation",
            "data_source": data_source,
            "data_sources": sorted({r["data_source"] for r in rows}),
            "system_prompt": cfg.model.system_prompt,
            "prompt_template": cfg.model.prompt_template,
            "split": "eval",
            "rows": len(rows),
            **{k: v for k, v in scoring.items() if k != "verifier_reward_range"},
            "verifier_reward_range": list(scoring["verifier_reward_range"] or (0.0, 1.0)),
        }
    }
    return write_export(out, rows, meta, schema)


def history_settings(cfg: RunConfig) -> dict | None:
    """The export metadata of the config's skip on history; None when it is off."""
    train = cfg.train
    if train.history_explore == 1:
        return None
    return {
        "history_explore": train.history_explore,
        "history_min_streak": train.history_min_streak,
        "history_target": train.history_target,
        "history_seed": cfg.seed,  # sgpo's trainer seeds its visit draws with the run's seed
    }


def settings_not_carried(cfg: RunConfig) -> dict:
    """The config's variant settings (sgpo.config.VARIANT_TRAIN_SETTINGS) a verl run will not
    apply, where they differ from the defaults (the paper's static plan): train.online (G, the
    filter and the order change *during* training from sgpo's own trainer loop: posterior
    updates, re-planning, re-profiling), the step's generation rounds (train.filter_groups,
    train.pilot_size, train.grow_max), down-sampling other than PODS's, skips on history, the
    early small groups, profile reuse and the profile drawn in training
    (train.first_visit_profile: the export needs a plan, so profile first). train.downsample_to,
    train.drop_equal_groups (with either train.drop_equal_denominator) and the skip on history
    are carried (see sgpo.verl.sampler); the
    launch runs sgpo without verl's algorithm.filter_groups and follows the exported, static
    plan. verl refills every skipped row, so its steps are always full, as history_fill keeps
    them: a skip on history without history_fill (nor a target, which implies it) is reported
    as train.history_fill = False, not carried. model.use_chat_template: false is not
    carried either (verl formats every prompt with the chat template)."""
    train = cfg.train
    fields = [(f"train.online.{n}", train.online, n) for n in type(train.online).model_fields]
    fields += [
        (f"train.{n}", train, n)
        for n in VARIANT_TRAIN_SETTINGS
        if n not in CARRIED_BY_VERL and n != "online"
    ]
    not_carried = {
        name: getattr(section, field)
        for name, section, field in fields
        if getattr(section, field) != type(section).model_fields[field].default
    }
    if train.history_explore < 1 and not (train.history_fill or train.history_target):
        not_carried["train.history_fill"] = False
    if cfg.model.use_chat_template is False:
        # the export writes chat messages, which verl formats with the model's chat template:
        # the prompts would not reach the model as the profile's plain ones did
        not_carried["model.use_chat_template"] = False
    return not_carried
