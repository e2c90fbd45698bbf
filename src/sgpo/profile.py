"""Stage 1, profile: k sampled responses per training query under the initial policy, verified,
give each query's success rate p_hat. Written in atomic chunks so an interrupted run resumes;
every sample's random stream is seeded from (run seed, query id, sample index), so the table is
the same whether the run was interrupted or not and whatever order the queries ran in.

profile.parquet columns: query_id, prompt, answer, difficulty, k (samples drawn), n_correct,
p_hat, rewards_vary (both outcomes drawn, or the samples' rewards not all equal: a graded
verifier's partial credit can vary where none or all succeed), mean_response_tokens,
prompt_tokens, flops (this query's profiling inference FLOPs).
Schema metadata (key "sgpo"): model, task, seed, k, sampling, shard (adaptive_round and
adaptive_stop with profile.adaptive, full_share when set), samples_file (where
profile_samples.parquet lies).

profile_samples.parquet: one row per sample (query_id, index, prompt_ids, response_ids, text,
finished, reward), so that training can reuse a kept query's samples (train.reuse_profile).
It is written from the chunks' files one chunk at a time, and `sgpo profile merge` joins the
shards' a window of queries at a time: no step holds every sample in memory.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from sgpo import rundir
from sgpo.config import RunConfig, dump_config
from sgpo.core.flops import ModelShape, inference_flops
from sgpo.core.rewards import all_equal, is_correct
from sgpo.engine import Completion, GenerationEngine, SamplingParams, stream_seed
from sgpo.errors import DataError
from sgpo.io import (
    atomic_write_text,
    prepare_out_dir,
    read_table,
    read_table_metadata,
    table_columns,
    table_writer,
    write_table,
)
from sgpo.models import (
    chat_template_sha256,
    check_lora_targets,
    load_policy,
    model_shape,
    model_source,
)
from sgpo.runfiles import PROFILE_CHUNKS_DIR, PROFILE_CONFIG_FILE
from sgpo.tasks import Query, TaskData, data_identity, load_run_task
from sgpo.validate import check_prompts
from sgpo.verify import Verifier
from sgpo.wiring import check_engine_installed, make_engine, make_verifier, sampling_params

log = logging.getLogger(__name__)

PROFILE_FILE = "profile.parquet"
SAMPLES_FILE = "profile_samples.parquet"


def shard_queries(queries: list[Query], shard: tuple[int, int] | None) -> list[Query]:
    if shard is None:
        return queries
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= I < N")
    return queries[index::count]


def profile_metadata(
    config: RunConfig, task: TaskData, source: str, shape: ModelShape, shard: tuple[int, int] | None
) -> dict:
    profile = config.profile
    meta = {
        "shape": asdict(shape),
        "model": source,
        "task": task.source,
        # what a plan from this profile may be trained on: these training queries, whatever
        # the eval split (check_profile_matches)
        "train_queries": data_identity(task)["train"],
        "seed": config.seed,
        "k": profile.k,
        "sampling": config.sampling.model_dump(mode="json"),
        "engine": profile.engine,
        "shard": list(shard) if shard else None,
    }
    if profile.adaptive:
        meta |= {"adaptive_round": profile.adaptive_round, "adaptive_stop": profile.adaptive_stop}
    if profile.full_share:
        meta["full_share"] = profile.full_share
    return meta


# Everything sgpo profile may create (and so later replace) in its output directory.
PROFILE_OUTPUTS = (
    "profile.parquet",
    "profile_samples.parquet",
    PROFILE_CHUNKS_DIR,
    PROFILE_CONFIG_FILE,
)


def run_profile(
    config: RunConfig,
    out_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
) -> Path:
    """Profile into out_dir, replacing only what an earlier sgpo profile wrote there, with the
    directory locked; a resume first checks the chunks' inputs (config keys, model weights)."""
    check_engine_installed(config, "profile")  # before anything is read, hashed or loaded
    with rundir.claimed(out_dir, PROFILE_OUTPUTS, "profile"):
        if resume:
            rundir.check_profile_inputs(
                out_dir / PROFILE_FILE, out_dir / PROFILE_CHUNKS_DIR, profile_inputs(config)
            )
            if shard is None:  # the shard it was started with, as its chunks record it
                shard = recorded_shard(out_dir)
        return _run_profile(config, out_dir, resume, overwrite, shard)


def recorded_shard(out_dir: Path) -> tuple[int, int] | None:
    """The shard (I, N) the profile in out_dir was started for, from its table's or its first
    chunk's metadata (None: unsharded, or nothing written yet)."""
    chunks = sorted((out_dir / PROFILE_CHUNKS_DIR).glob("chunk-*.parquet"))
    written = [out_dir / PROFILE_FILE] if (out_dir / PROFILE_FILE).exists() else chunks[:1]
    shard = read_table_metadata(written[0]).get("shard") if written else None
    if shard is not None:
        log.info("%s: resuming shard %d/%d, as it was started", out_dir, *shard)
        return int(shard[0]), int(shard[1])
    return None


def profile_inputs(config: RunConfig) -> dict:
    """The inputs a profile's numbers depend on, recorded in its metadata ("inputs")."""
    from sgpo.tasks import verifier_spec
    from sgpo.verify import verifier_code_sha256

    return {
        "inputs": rundir.run_fingerprint(
            rundir.profile_config(config.model_dump(mode="json")),
            model_source(config),
            verifier_code_sha256(verifier_spec(config.task)),
        )
    }


def _run_profile(
    config: RunConfig,
    out_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
) -> Path:
    prepare_out_dir(out_dir, overwrite, resume, PROFILE_FILE)
    chunk_dir = out_dir / PROFILE_CHUNKS_DIR
    if not (resume or overwrite) and any(chunk_dir.glob("chunk-*.parquet")):
        raise FileExistsError(
            f"{chunk_dir} holds an interrupted profile; pass --resume to continue it "
            "or --overwrite to start over"
        )
    task = load_run_task(config, require_eval=False)
    queries = shard_queries(task.train, shard)
    model_source(config)  # a model setting that cannot run this task is named first
    # before the model, which can take minutes to load: a mistyped verifier is named at once
    verifier = make_verifier(config, task)
    policy = load_policy(config)
    check_lora_targets(policy, config.model.lora)  # training would refuse them after the profile
    check_prompts(policy, task, config.sampling.max_new_tokens)
    engine = make_engine(config, policy, "profile")
    shape = model_shape(policy.model)
    metadata = profile_metadata(config, task, policy.source, shape, shard) | profile_inputs(config)
    # the precision the samples were drawn at, as this machine resolved model.dtype (auto:
    # bfloat16 on a GPU, float32 on a CPU): shards and resumed chunks must share it
    metadata[DTYPE_KEY] = str(next(policy.model.parameters()).dtype).removeprefix("torch.")
    metadata[rundir.CHAT_TEMPLATE_KEY] = chat_template_sha256(policy.tokenizer, config.model)
    final = out_dir / PROFILE_FILE
    if resume and final.exists():  # already complete: nothing to do if it is this config's
        final_meta = read_table_metadata(final)
        differ = _identity_differences(final_meta, metadata)
        if differ:
            shard_hint = f"; {_shard_hint(final_meta)}, or" if "shard" in differ else ";"
            raise DataError(
                f"{final}: written by a different profile run (field(s) {', '.join(differ)} "
                f"differ){shard_hint} use --overwrite"
            )
        verifier.close()
        shutil.rmtree(chunk_dir, ignore_errors=True)  # killed after the final write
        log.warning("%s: the profile is complete already; nothing left to resume", final)
        return final
    if not resume:  # a fresh start: no chunk or table of an earlier profile may be mixed in
        final.unlink(missing_ok=True)
        (out_dir / SAMPLES_FILE).unlink(missing_ok=True)
        shutil.rmtree(chunk_dir, ignore_errors=True)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    size = config.profile.chunk_size
    chunks = [queries[i : i + size] for i in range(0, len(queries), size)]
    # the chunks kept, each checked to be this profile's before anything is said or written:
    # a refused resume leaves profile_config.yaml the config the chunks were made under
    done = {
        index: _read_chunk(path, chunk, metadata, size)
        for index, chunk in enumerate(chunks)
        if (path := _chunk_path(chunk_dir, index)).exists()
    }
    atomic_write_text(out_dir / PROFILE_CONFIG_FILE, dump_config(config))
    if resume and done:  # sgpo compare resumes every profile, a fresh one too
        log.warning(
            "%s: resuming the profile, %d of its %d chunks done", out_dir, len(done), len(chunks)
        )
    # the rows without their samples: those stay in the chunks' files until the end, so a
    # profile larger than memory is never held whole (write_samples)
    rows: list[dict] = []
    # Verifier failures are counted per chunk, so a resumed profile reports the same totals.
    counts = dict.fromkeys(VERIFIER_COUNTS, 0)
    # the chunks' own, so a resumed profile's is the time it took in all; None once a chunk
    # of an older sgpo, which did not time it, is among them (its time is unknown)
    wall_s: float | None = 0.0
    # the chunks done before count from the start, so the rate and time left are this run's
    before = sum(len(chunk) for index, chunk in enumerate(chunks) if index in done)
    where = f"profile {shard[0]}/{shard[1]}" if shard else "profile"
    with tqdm(total=len(queries), initial=before, desc=where, unit="query") as bar:
        for index, chunk in enumerate(chunks):
            if index in done:
                chunk_rows, chunk_meta = done[index]
            else:
                chunk_rows, chunk_meta = _profile_and_write_chunk(
                    _chunk_path(chunk_dir, index), chunk, config, engine, verifier, shape, metadata
                )
            for key in VERIFIER_COUNTS:
                counts[key] += chunk_meta.get(key, 0)
            chunk_wall = chunk_meta.get(PROFILE_WALL_KEY)
            wall_s = None if wall_s is None or chunk_wall is None else wall_s + chunk_wall
            rows.extend(without_samples(chunk_rows))
            if index not in done:
                bar.update(len(chunk))
    verifier.close()
    n_samples = sum(r["k"] for r in rows)
    if counts["verifier_errors"] or counts["verifier_timeouts"]:
        log.warning(
            "%s: %d of %d verifier calls failed (raised, or returned no reward in range) and "
            "%d timed out; each scored 0 (the first "
            "errors are logged above)",
            final,
            counts["verifier_errors"],
            n_samples,
            counts["verifier_timeouts"],
        )
    # (partial credit that varies shows a verifier that reads the answers)
    if rows and not any(r["n_correct"] or r["rewards_vary"] for r in rows):
        mark = config.task.success_threshold
        log.warning(
            "%s: verifier %s scored none of the %d samples correct%s: check that it reads this "
            "model's answers (the responses are in %s) before planning on this profile",
            final,
            verifier.spec,
            n_samples,
            "" if mark is None else f" (a reward of at least task.success_threshold={mark})",
            SAMPLES_FILE,
        )
    # The samples first: profile.parquet is what marks the profile complete.
    chunk_paths = [_chunk_path(chunk_dir, index) for index in range(len(chunks))]
    counts[TRUNCATED_KEY] = write_samples(out_dir / SAMPLES_FILE, chunk_paths, metadata)
    warn_of_cut_off(final, counts[TRUNCATED_KEY], n_samples, config.sampling.max_new_tokens)
    timed = {} if wall_s is None else {PROFILE_WALL_KEY: round(wall_s, 3)}
    write_table(final, rows, metadata | counts | timed | samples_location(out_dir))
    shutil.rmtree(chunk_dir)
    return final


def _chunk_path(chunk_dir: Path, index: int) -> Path:
    return chunk_dir / f"chunk-{index:05d}.parquet"


SAMPLES_COLUMN = "samples"  # a chunk's: each query's samples, nested


def without_samples(rows: list[dict]) -> list[dict]:
    """A chunk's rows as profile.parquet holds them: each query's samples left out."""
    return [{key: value for key, value in row.items() if key != SAMPLES_COLUMN} for row in rows]


# profile_samples.parquet's columns, fixed so that every chunk's (or shard's) samples append to
# one file whatever types a chunk's values alone would suggest (an empty response, an int reward)
SAMPLE_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("index", pa.int64()),
        ("prompt_ids", pa.list_(pa.int64())),
        ("response_ids", pa.list_(pa.int64())),
        ("text", pa.string()),
        ("finished", pa.bool_()),
        ("reward", pa.float64()),
    ]
)


def chunk_samples(path: Path) -> pa.Table:
    """A profile chunk's samples as profile_samples.parquet rows (each sample's fields beside
    its query id), unnested column-wise: its token ids never become Python objects."""
    try:
        table = pq.read_table(path, columns=["query_id", SAMPLES_COLUMN])
        nested = table.column(SAMPLES_COLUMN).combine_chunks()
        samples = pc.list_flatten(nested)
        fields = (field.name for field in samples.type)
        columns = dict(zip(fields, samples.flatten(), strict=True))
        columns["query_id"] = pc.take(table.column("query_id"), pc.list_parent_indices(nested))
        return pa.table(columns).select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)
    except (pa.ArrowException, OSError, KeyError) as e:
        raise DataError(
            f"{path}: its samples are not readable ({_one_line(e)}); {rundir.REDO_A_CHUNK}"
        ) from e


def _one_line(error: Exception) -> str:
    """An Arrow error's message on one line (its thrift errors break lines inside)."""
    return " ".join(str(error).split())


def write_samples(path: Path, chunk_paths: list[Path], metadata: dict) -> int:
    """profile_samples.parquet from the profile's chunk files, one chunk at a time (memory
    bounded by a chunk, whatever the profile's size); returns how many samples were cut off
    at max_new_tokens."""
    cut_off = 0
    with table_writer(path, SAMPLE_SCHEMA, metadata) as writer:
        for chunk_path in chunk_paths:
            samples = chunk_samples(chunk_path)
            cut_off += pc.sum(pc.invert(samples.column("finished"))).as_py() or 0
            writer.write_table(samples)
    return cut_off


def profile_outcomes(rows: list[dict], meta: dict | None = None) -> str:
    """How a profile's queries came out: solved by every sample, by none, or mixed; and, when
    its metadata counts them, the share of samples cut off at max_new_tokens."""
    every = sum(r["n_correct"] == r["k"] for r in rows)
    none = sum(r["n_correct"] == 0 for r in rows)
    said = (
        f"{len(rows)} queries: {every} solved by every sample, {none} by none, "
        f"{len(rows) - every - none} mixed"
    )
    cut_off, drawn = (meta or {}).get(TRUNCATED_KEY), sum(r["k"] for r in rows)
    if cut_off is not None and drawn:
        said += f"; {cut_off / drawn:.0%} of the samples cut off at max_new_tokens"
    return said


# A share of samples cut off at max_new_tokens worth a warning: their answers are read where
# they stopped, so p_hat then measures the length limit as much as the model.
CUT_OFF_WARNING_SHARE = 0.1


def warn_of_cut_off(source: object, cut_off: int, samples: int, max_new_tokens: object) -> None:
    if samples and cut_off / samples >= CUT_OFF_WARNING_SHARE:
        log.warning(
            "%s: %d of %d samples (%.0f%%) were cut off at sampling.max_new_tokens=%s; each is "
            "scored on where it stopped, so the success rates the plan rests on measure the "
            "length limit too: raise sampling.max_new_tokens (the responses are in %s)",
            source,
            cut_off,
            samples,
            100 * cut_off / samples,
            max_new_tokens,
            SAMPLES_FILE,
        )


VERIFIER_COUNTS = ("verifier_errors", "verifier_timeouts")
# profile.parquet's metadata: the seconds its chunks took to sample and score (a merge: its
# shards' sum), which training adds to its wall time as it adds the profile's FLOPs
PROFILE_WALL_KEY = "profile_wall_s"
TRUNCATED_KEY = "truncated_samples"  # profile.parquet's metadata: samples cut off
# What a differing metadata field of a chunk means to the user resuming it.
FIELD_MEANINGS = {
    "task": "the task's data files changed in content, or its settings",
    "dtype": "the precision model.dtype resolved to on each machine (auto: bfloat16 on a GPU, "
    "float32 on a CPU); set model.dtype to one",
}
DTYPE_KEY = "dtype"  # the precision the samples were drawn at, as resolved
# Where the samples lie is not part of what the profile is (moved or merged, it is the same).
SAMPLES_KEY = "samples_file"
CHUNK_SIZE_KEY = "chunk_size"  # in a chunk's metadata only, to name a changed chunk size


def _read_chunk(
    path: Path, chunk: list[Query], metadata: dict, chunk_size: int
) -> tuple[list[dict], dict]:
    """A chunk an interrupted run of this same profile wrote: its rows without their samples,
    which are not read into Python (write_samples copies them column-wise)."""
    try:
        columns = table_columns(path)
    except DataError as e:
        raise DataError(f"{e}; {rundir.REDO_A_CHUNK}") from e
    rows_columns = [name for name in columns if name != SAMPLES_COLUMN]
    chunk_rows, chunk_meta = rundir.read_chunk_table(path, rows_columns)
    keys = _identity_differences(chunk_meta, metadata)
    # the shard is an option, not in profile_config.yaml: say how it was started
    differ = [
        f"field '{key}'{_meaning(key)}" + (f"; {_shard_hint(chunk_meta)}" if key == "shard" else "")
        for key in keys
    ]
    written_size = chunk_meta.get(CHUNK_SIZE_KEY)  # absent in chunks of an older sgpo
    if written_size not in (None, chunk_size):
        differ.append(
            f"profile.chunk_size: {written_size} -> {chunk_size}; resume with "
            f"--set profile.chunk_size={written_size} to keep the chunks"
        )
    elif "shard" not in keys and [r["query_id"] for r in chunk_rows] != [q.query_id for q in chunk]:
        differ.append("its queries (profile.chunk_size or the training queries)")
    if SAMPLES_COLUMN not in columns:
        differ.append("no samples kept (an older sgpo's chunk)")
    if differ:
        raise DataError(
            f"{path}: written by a different profile run (what differs: {', '.join(differ)}); "
            "use --overwrite (or, if only this chunk was damaged, remove it and resume again)"
        )
    # read whole now (in Arrow), so a damaged chunk is named before the rest is profiled
    samples = chunk_samples(path)
    if any(row.get("rewards_vary") is None for row in chunk_rows):  # an older sgpo's chunk
        query_ids, rewards = samples["query_id"].to_pylist(), samples["reward"].to_pylist()
        fill_rewards_vary(chunk_rows, rewards_by_query(zip(query_ids, rewards, strict=True)))
    return chunk_rows, chunk_meta


def _meaning(key: str) -> str:
    """What a differing metadata field means to the user, in brackets ("" for most)."""
    return f" ({FIELD_MEANINGS[key]})" if key in FIELD_MEANINGS else ""


def _shard_hint(recorded: dict) -> str:
    """How to resume the profile `recorded` (a chunk's or the table's metadata) describes."""
    shard = recorded.get("shard")
    if shard:
        return f"resume with --shard {shard[0]}/{shard[1]}, as it was started"
    return "resume without --shard, as it was started"


def rewards_by_query(samples: Iterable[tuple[str, float]]) -> dict[str, list[float]]:
    """(query id, reward) of each sample -> each query's rewards, in sample order."""
    rewards: dict[str, list[float]] = {}
    for query_id, reward in samples:
        rewards.setdefault(query_id, []).append(reward)
    return rewards


def fill_rewards_vary(rows: list[dict], rewards: dict[str, list[float]]) -> None:
    """Rows written before rewards_vary (an older sgpo's chunk or shard, joined with newer
    ones) get it from their samples' rewards (by query id)."""
    for row in rows:
        if row.get("rewards_vary") is None and row["query_id"] in rewards:
            row["rewards_vary"] = samples_vary(row["n_correct"], row["k"], rewards[row["query_id"]])


def fill_rewards_vary_from_samples(rows: list[dict], meta: dict) -> None:
    """A profile written before rewards_vary: each row's flag from the profile's samples file,
    where that is still there and is this profile's (its metadata, and each query's k
    samples); otherwise the rows stay without it (read as pass/fail)."""
    location = meta.get(SAMPLES_KEY)
    if not location or not Path(location).is_file():
        return
    samples_meta = read_table_metadata(Path(location))
    if any(meta.get(key) != value for key, value in samples_meta.items()):
        return
    rewards = _rewards_of([Path(location)])
    whole = {r["query_id"] for r in rows if len(rewards.get(r["query_id"], [])) == r["k"]}
    fill_rewards_vary(rows, {q: rs for q, rs in rewards.items() if q in whole})


def samples_vary(n_correct: int, k: int, rewards: list[float]) -> bool:
    """profile.parquet's rewards_vary: both outcomes drawn, or rewards not all equal (two
    rewards either side of the threshold by float rounding alone are both outcomes)."""
    return 0 < n_correct < k or not all_equal(rewards)


def _profile_and_write_chunk(
    path: Path,
    chunk: list[Query],
    config: RunConfig,
    engine: GenerationEngine,
    verifier: Verifier,
    shape: ModelShape,
    metadata: dict,
) -> tuple[list[dict], dict]:
    """Profile one chunk and write it atomically (the resume unit), with its verifier failures."""
    before = verifier.stats.counts()
    started = time.perf_counter()
    profile = config.profile
    share = profile.full_share
    in_full = {q.query_id for q in chunk if drawn_fully(config.seed, q.query_id, share)}
    chunk_rows = profile_chunk(
        chunk,
        engine,
        verifier,
        sampling_params(config),
        profile.k,
        (config.seed, "profile"),
        shape,
        config.task.correct_threshold,
        adaptive_round=profile.adaptive_round if profile.adaptive else None,
        stop_at_first_success=profile.adaptive_stop == "first_success",
        in_full=in_full,
        keep_samples=True,
    )
    _, errors, timeouts = verifier.stats.since(before)
    chunk_meta = metadata | {
        "verifier_errors": errors,
        "verifier_timeouts": timeouts,
        CHUNK_SIZE_KEY: profile.chunk_size,
        PROFILE_WALL_KEY: time.perf_counter() - started,
    }
    # the plan would call every query unsolvable: stop before the chunk is kept
    queries = f"the training queries {chunk[0].query_id!r} to {chunk[-1].query_id!r}"
    verifier.stats.stop_if_every_call_failed(verifier.spec, before, queries)
    write_table(path, chunk_rows, chunk_meta)
    return chunk_rows, chunk_meta


def samples_location(out_dir: Path) -> dict:
    return {SAMPLES_KEY: str((out_dir / SAMPLES_FILE).resolve())}


def _recorded(meta: dict) -> dict:
    """A profile's metadata without its counts and file locations (what a merge carries over)."""
    counted = {*VERIFIER_COUNTS, TRUNCATED_KEY, SAMPLES_KEY, PROFILE_WALL_KEY}
    return {k: v for k, v in meta.items() if k not in counted}


# Recorded settings that do not change the samples: every sample has its own seed, so how many
# are generated at once does not matter (exactly in float32; in bfloat16 a sample near a tie can
# differ with the padding, sgpo.engine). Left out when two profiles are compared.
EXECUTION_SETTINGS = {"sampling": ("batch_size",)}


def _identity(meta: dict) -> dict:
    """What makes two profiles the same run: the metadata without counts, file locations and
    execution settings (so profiles recorded before or after with other ones still match)."""
    identity = _recorded(meta)
    identity.pop("train_queries", None)  # derived from "task" (and absent before it existed)
    identity.pop(CHUNK_SIZE_KEY, None)  # a chunk's, how the work was cut
    for section, keys in EXECUTION_SETTINGS.items():
        if isinstance(identity.get(section), dict):
            identity[section] = {k: v for k, v in identity[section].items() if k not in keys}
    return identity


def _identity_differences(meta: dict, other: dict) -> list[str]:
    """The metadata fields in which two profiles are not the same run (sorted; "inputs" with
    the inputs that differ, e.g. "inputs (config.task.success_threshold: None -> 1.0)"). What
    one of them records and the other, from an older sgpo, does not is left out: the
    verifier's code hash, and the eval split a profile no longer reads (its task source named
    it)."""
    a, b = _identity(meta), _identity(other)
    for key in (rundir.CHAT_TEMPLATE_KEY, DTYPE_KEY):
        if key not in a.keys() & b.keys():  # one from an older sgpo
            a.pop(key, None)
            b.pop(key, None)
    for x in (a, b):
        if isinstance(x.get("task"), str):
            x["task"] = re.sub(r"\beval=[^,]*, |, limit_eval=[^,)]*", "", x["task"])
    named = {}
    if isinstance(a.get("inputs"), dict) and isinstance(b.get("inputs"), dict):
        if rundir.same_weights(a["inputs"], b["inputs"]):  # its path is no part of it then
            a.pop("model", None)
            b.pop("model", None)
            a["inputs"], b["inputs"] = rundir.without_moved_model(a["inputs"], b["inputs"])
        a["inputs"], b["inputs"] = rundir.comparable_inputs(
            rundir.profile_read_inputs(a["inputs"]), rundir.profile_read_inputs(b["inputs"])
        )
        named["inputs"] = f"inputs ({rundir.first_of(rundir.changes(a['inputs'], b['inputs']))})"
    return sorted(named.get(key, key) for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def drawn_fully(seed: int, query_id: str, share: float) -> bool:
    """Whether an adaptive profile draws all k samples of this query (profile.full_share): a
    seeded coin per query id, so shards and resumes agree."""
    return share > 0 and stream_seed(seed, "full-profile", query_id) < share * 2**63


def _settled(scores: list[float], stop_at_first_success: bool, threshold: float) -> bool:
    """Whether an adaptive profile has drawn enough of a query to know the plan keeps it: its
    rewards vary (both outcomes shown, or a graded verifier's scores differ), or with
    stop_at_first_success one correct sample."""
    n_correct = sum(is_correct(s, threshold) for s in scores)
    solved = stop_at_first_success and n_correct > 0
    return solved or samples_vary(n_correct, len(scores), scores)


def profile_chunk(
    queries: list[Query],
    engine: GenerationEngine,
    verifier: Verifier,
    params: SamplingParams,
    k: int,
    stream: tuple,
    shape: ModelShape,
    threshold: float,
    adaptive_round: int | None = None,
    stop_at_first_success: bool = False,
    in_full: Collection[str] = (),
    keep_samples: bool = False,
) -> list[dict]:
    """Verified samples per query, sample j from stream_seed(*stream, query id, j): k of them, or
    with adaptive_round, rounds of that many until the query's rewards vary (both outcomes,
    or graded scores that differ) or, with stop_at_first_success, it has one success (at
    most k; the queries in_full names draw all k) -- always a prefix of the k, so adaptive
    and full profiles agree on every sample both drew. A sample is correct from threshold up
    (task.correct_threshold). keep_samples adds each row's samples (the
    profile_samples.parquet fields)."""
    per_round = adaptive_round or k
    drawn: dict[str, list[Completion]] = {q.query_id: [] for q in queries}
    scores: dict[str, list[float]] = {q.query_id: [] for q in queries}
    active = list(queries)
    while active:
        start = len(drawn[active[0].query_id])  # every active query has drawn as many
        count = min(per_round, k - start)
        prompts = [engine.policy.render(q.prompt) for q in active for _ in range(count)]
        seeds = [
            stream_seed(*stream, q.query_id, j) for q in active for j in range(start, start + count)
        ]
        completions = engine.generate(prompts, seeds, params)
        for qi, q in enumerate(active):
            group = completions[qi * count : (qi + 1) * count]
            drawn[q.query_id] += group
            scores[q.query_id] += verifier.score(
                [engine.policy.answer_text(c.text) for c in group],
                [q.answer] * count,
                [q.query_id] * count,
            )
        active = [
            q
            for q in active
            if len(drawn[q.query_id]) < k
            and (
                q.query_id in in_full
                or not _settled(scores[q.query_id], stop_at_first_success, threshold)
            )
        ]
    return [
        _profile_row(q, drawn[q.query_id], scores[q.query_id], shape, threshold, keep_samples)
        for q in queries
    ]


def _profile_row(
    query: Query,
    group: list[Completion],
    rewards: list[float],
    shape: ModelShape,
    threshold: float,
    keep_samples: bool,
) -> dict:
    """One profile.parquet row: the query, its success rate over its samples, their cost."""
    n, n_correct = len(group), sum(is_correct(s, threshold) for s in rewards)
    row = {
        "query_id": query.query_id,
        "prompt": query.prompt,
        "answer": query.answer,
        "difficulty": query.difficulty,
        "k": n,
        "n_correct": n_correct,
        "p_hat": n_correct / n,
        "rewards_vary": samples_vary(n_correct, n, rewards),
        "mean_response_tokens": sum(len(c.response_ids) for c in group) / n,
        "prompt_tokens": len(group[0].prompt_ids),
        "flops": sum(inference_flops(shape, len(c.prompt_ids), len(c.response_ids)) for c in group),
    }
    if keep_samples:
        row[SAMPLES_COLUMN] = [
            {
                "index": j,
                "prompt_ids": c.prompt_ids,
                "response_ids": c.response_ids,
                "text": c.text,
                "finished": c.finished,
                "reward": reward,
            }
            for j, (c, reward) in enumerate(zip(group, rewards, strict=True))
        ]
    return row


def merge_profiles(paths: list[Path], out_dir: Path, overwrite: bool = False) -> Path:
    """Join shard profiles (sgpo profile --shard I/N) into one profile.parquet.

    Refuses shards of different runs (model, task, seed, k, sampling, engine), a shard given
    twice, duplicate query ids and missing shards; the rows come out in the task's order, so
    the merge equals an unsharded profile of the same seed. When every shard's
    profile_samples.parquet lies next to its profile.parquet, they are merged too. Execution
    settings (sampling.batch_size) may differ between shards. The output directory is locked
    like sgpo profile's."""
    if not paths:
        raise DataError("profile merge: no shard profiles given")
    with rundir.claimed(out_dir, PROFILE_OUTPUTS, "profile merge"):
        return _merge_profiles(paths, out_dir, overwrite)


def _merge_profiles(paths: list[Path], out_dir: Path, overwrite: bool) -> Path:
    prepare_out_dir(out_dir, overwrite, None, PROFILE_FILE)
    tables = [(path, *read_table(path)) for path in paths]
    # each shard compared with one that records what an older sgpo's shard may not (its chat
    # template), so two that record it are compared on it
    first_path, _, first_meta = next(
        (t for t in tables if rundir.CHAT_TEMPLATE_KEY in t[2]), tables[0]
    )
    common = {k: v for k, v in _recorded(first_meta).items() if k != "shard"}
    seen_shards: dict[int, Path] = {}
    rows_by_id: dict[str, dict] = {}
    count = None
    for path, rows, meta in tables:
        if meta.get("shard") is None:
            raise DataError(f"{path}: field 'shard' is empty: not a shard profile")
        index, n = meta["shard"]
        count = n if count is None else count
        mismatch = [k for k in _identity_differences(first_meta, meta) if k != "shard"]
        if mismatch or n != count:
            fields = ", ".join(f"{k}{_meaning(k)}" for k in mismatch or ["shard"])
            raise DataError(
                f"{path}: field(s) {fields} differ from {first_path}'s; not the same run"
            )
        if index in seen_shards:
            raise DataError(f"{path}: shard {index}/{n} given twice (also {seen_shards[index]})")
        seen_shards[index] = path
        check_shard_rows(path, rows, meta, first_meta)
        for row_index, row in enumerate(rows):
            if row["query_id"] in rows_by_id:
                raise DataError(
                    f"{path}: row {row_index}: field 'query_id': duplicate query id "
                    f"{row['query_id']!r} across shards"
                )
            rows_by_id[row["query_id"]] = row
    missing = sorted(set(range(count)) - set(seen_shards))
    if missing:
        raise DataError(f"profile merge: shards {missing} of {count} are missing")
    order = {q: i for i, q in enumerate(_task_order(tables))}
    merged = sorted(rows_by_id.values(), key=lambda r: order[r["query_id"]])
    counts = {key: sum(m.get(key, 0) for _, _, m in tables) for key in VERIFIER_COUNTS}
    if all(PROFILE_WALL_KEY in m for _, _, m in tables):  # the shards' machine time
        counts[PROFILE_WALL_KEY] = round(sum(m[PROFILE_WALL_KEY] for _, _, m in tables), 3)
    if all(TRUNCATED_KEY in m for _, _, m in tables):  # not in shards of an older sgpo
        counts[TRUNCATED_KEY] = sum(m[TRUNCATED_KEY] for _, _, m in tables)
    metadata = common | counts | {"shard": None}
    sample_paths = [path.parent / SAMPLES_FILE for path, _, _ in tables]
    present = [p.resolve() for p in sample_paths if p.exists()]
    if len(set(present)) < len(present):
        raise DataError(
            f"profile merge: two shards share one {SAMPLES_FILE} ({', '.join(map(str, paths))}): "
            "give each shard's profile.parquet in the folder its shard wrote"
        )
    if not all(p.exists() for p in sample_paths):
        log.warning(
            "profile merge: %s is not beside every shard, so the merged profile has none "
            "(train.reuse_profile and the report's sample reads need it)",
            SAMPLES_FILE,
        )
    else:
        for (_, rows, _), sample_path in zip(tables, sample_paths, strict=True):
            check_shard_samples(sample_path, rows)
        if any(row.get("rewards_vary") is None for row in merged):  # an older sgpo's shard
            fill_rewards_vary(merged, _rewards_of(sample_paths))
        merge_samples(sample_paths, list(order), out_dir / SAMPLES_FILE, common | {"shard": None})
        metadata |= samples_location(out_dir)
    write_table(out_dir / PROFILE_FILE, merged, metadata)
    return out_dir / PROFILE_FILE


def check_shard_rows(path: Path, rows: list[dict], meta: dict, first_meta: dict) -> None:
    """A shard holds its share of the training queries it recorded (shard I of N: queries I,
    I+N, ...), the same training queries as the other shards."""
    index, n = meta["shard"]
    recorded, first = meta.get("train_queries"), first_meta.get("train_queries")
    if recorded is None:  # a shard of an sgpo before train_queries was recorded
        return
    if first is not None and recorded != first:
        raise DataError(
            f"{path}: profiled other training queries than the other shards ({recorded} "
            f"against {first}): the data changed between machines; profile every shard on "
            "the same data"
        )
    share = len(range(index, int(recorded["rows"]), n))
    if len(rows) != share:
        raise DataError(
            f"{path}: holds {len(rows)} queries where shard {index}/{n} of {recorded['rows']} "
            f"training queries holds {share}: rows were removed or added; profile the shard "
            "again"
        )


def check_shard_samples(path: Path, rows: list[dict]) -> None:
    """A shard's samples file holds each of its queries' samples, k of each, and no other's
    (counted from its query_id column alone)."""
    expected = {r["query_id"]: r["k"] for r in rows}
    counted = pc.value_counts(_read_columns(path, ["query_id"]).column("query_id"))
    query_ids, numbers = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
    drawn = Counter(dict(zip(query_ids, numbers, strict=True)))
    if drawn != Counter(expected):
        wrong = sorted(q for q in drawn.keys() | expected.keys() if drawn[q] != expected.get(q))
        raise DataError(
            f"{path}: its samples do not match its shard's profile.parquet (e.g. query "
            f"{wrong[0]!r}: {drawn[wrong[0]]} samples, the profile counts "
            f"{expected.get(wrong[0], 0)}); merge the files each shard wrote, side by side"
        )


def _read_columns(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a samples file sgpo profile wrote ({_one_line(e)})") from e


def _rewards_of(sample_paths: list[Path]) -> dict[str, list[float]]:
    tables = [_read_columns(path, ["query_id", "reward"]) for path in sample_paths]
    return rewards_by_query(
        pair
        for table in tables
        for pair in zip(table["query_id"].to_pylist(), table["reward"].to_pylist(), strict=True)
    )


# Queries per piece of a merged samples file: the merge holds one piece of every shard's
# samples at a time, whatever the profile's size.
MERGE_WINDOW = 256


def merge_samples(sample_paths: list[Path], order: list[str], out: Path, metadata: dict) -> None:
    """The shards' samples files as one, in the task's order (query, then sample index), the
    order an unsharded profile writes, written MERGE_WINDOW queries at a time: each shard's
    file is in its queries' order, so a window's samples are the next rows of each."""
    position_of = pa.array(order)
    keys = []  # per shard: each row's (task position, sample index), refused if out of order
    for path in sample_paths:
        table = _read_columns(path, ["query_id", "index"])
        position = pc.index_in(table.column("query_id"), value_set=position_of).to_numpy()
        index = table.column("index").to_numpy()
        back = np.flatnonzero(
            (position[1:] < position[:-1])
            | ((position[1:] == position[:-1]) & (index[1:] <= index[:-1]))
        )
        if back.size:
            raise DataError(
                f"{path}: row {back[0] + 1}: fields 'query_id', 'index': the samples are not in "
                "the order sgpo profile wrote them (query by query in the task's order, each "
                "query's by index); merge the files each shard wrote, unchanged"
            )
        keys.append((position, index))
    readers = [_RowReader(path) for path in sample_paths]
    with table_writer(out, SAMPLE_SCHEMA, metadata) as writer:
        for start in range(0, len(order), MERGE_WINDOW):
            pieces, positions, indices = [], [], []
            for reader, (position, index) in zip(readers, keys, strict=True):
                first, end = np.searchsorted(position, [start, start + MERGE_WINDOW])
                if end > first:
                    pieces.append(reader.next_rows(int(end - first)))
                    positions.append(position[first:end])
                    indices.append(index[first:end])
            if pieces:
                window = pa.concat_tables(pieces)
                by_task = np.lexsort((np.concatenate(indices), np.concatenate(positions)))
                writer.write_table(window.take(by_task))


class _RowReader:
    """A samples file read front to back, any number of rows at a time, in SAMPLE_SCHEMA."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._batches = pq.ParquetFile(path).iter_batches(batch_size=MERGE_WINDOW * 8)
        except (pa.ArrowException, OSError) as e:
            raise self._unreadable(e) from e
        self._left = SAMPLE_SCHEMA.empty_table()

    def _unreadable(self, error: Exception) -> DataError:
        return DataError(
            f"{self.path}: not a readable samples file sgpo profile wrote "
            f"({_one_line(error)}); profile its shard again (sgpo profile --shard I/N)"
        )

    def next_rows(self, count: int) -> pa.Table:
        parts = []
        while count > 0:
            if not self._left.num_rows:
                try:
                    batch = pa.Table.from_batches([next(self._batches)])
                    self._left = batch.select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)
                except (KeyError, pa.ArrowException, OSError) as e:
                    raise self._unreadable(e) from e
            part = self._left.slice(0, count)
            parts.append(part)
            self._left = self._left.slice(part.num_rows)
            count -= part.num_rows
        return pa.concat_tables(parts)


def _task_order(tables: list[tuple[Path, list[dict], dict]]) -> list[str]:
    """Query ids in the order an unsharded profile has them: shard I holds queries I, I+N, ..."""
    shards = sorted(tables, key=lambda t: t[2]["shard"][0])
    columns = [[r["query_id"] for r in rows] for _, rows, _ in shards]
    longest = max(len(c) for c in columns)
    return [c[i] for i in range(longest) for c in columns if i < len(c)]
