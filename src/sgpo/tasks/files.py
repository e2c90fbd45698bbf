"""User data as a task: local .jsonl / .parquet / .csv files or a `datasets` name, mapped to
queries (id, prompt, reference answer, difficulty) by a preset and/or explicit field names.

Presets (each only sets defaults; a field the config sets to a value other than its
FileTaskConfig default wins; difficulty_field "" switches the preset's difficulty off):

- plain: prompt_field "prompt", answer_field "answer", verifier exact_match.
- gsm8k: prompt "question"; the answer is the line after the last "####" in "answer", its
  numbers' thousands separators removed ("1,234" -> "1234"; "(2,3)" keeps its comma).
- math: prompt "problem"; the answer is the content of the last \\boxed{...} in "solution"
  (an unbraced "\\boxed 5" is read up to "$" or the line's end); difficulty "level" (an
  integer level n becomes "Level n").
- verl: verl-style rows; "prompt" is a list of chat messages and the last user message is the
  prompt; the answer is "reward_model.ground_truth"; the id is "<file stem>:<extra_info.index>"
  when the row has extra_info.index. A row's data_source, ability (strings) and extra_info (a
  mapping), each optional, are kept for the verl export.

Field names may be dotted paths into nested records ("reward_model.ground_truth"). Without an id
field a query's id is "<file stem>:<row>" (for a `datasets` name "<name>:<split>:<row>"). Rows are
numbered from 0 in file order (blank lines and a CSV's header are not rows); limit_train /
limit_eval take the first N rows. Every bad row is a DataError naming the file, the row (and in
a .jsonl or .csv file its line) and the field: nothing is skipped.

A `datasets` name may carry a config name after a colon, e.g. "openai/gsm8k:main". Without an
eval source the eval split (split_eval) of the train dataset is used for a `datasets` name; for a
local train file there is then no eval set. A folder one Dataset was saved to (save_to_disk) is
read whole, as a file: its queries' default ids are "<folder name>:<row>", and it has no eval
split (give eval its own folder or file).
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy import format_float_positional

from sgpo.config import FileTaskConfig
from sgpo.errors import DataError
from sgpo.rundir import file_sha256
from sgpo.tasks import Query, TaskData, row_label
from sgpo.verifiers import boxed_contents, drop_thousands_separators

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".jsonl", ".parquet", ".csv")
MATH_VERIFIER = "sgpo.verifiers:math_verify"
EXACT_VERIFIER = "sgpo.verifiers:exact_match"


@dataclass(frozen=True)
class Preset:
    prompt_field: str
    answer_field: str
    id_field: str | None
    difficulty_field: str | None
    verifier: str


PRESETS = {
    "plain": Preset("prompt", "answer", None, None, EXACT_VERIFIER),
    "gsm8k": Preset("question", "answer", None, None, MATH_VERIFIER),
    "math": Preset("problem", "solution", None, "level", MATH_VERIFIER),
    "verl": Preset("prompt", "reward_model.ground_truth", "extra_info.index", None, MATH_VERIFIER),
}


@dataclass(frozen=True)
class Mapping:
    preset: str
    prompt_field: str
    answer_field: str
    id_field: str | None
    difficulty_field: str | None
    # verl: the id field is optional per row and prefixed with the file stem.
    id_from_preset: bool

    def columns(self) -> set[str]:
        """The top-level columns the mapping reads (a dotted field's top level, or the column
        of that very name: get_field)."""
        fields = (self.prompt_field, self.answer_field, self.id_field, self.difficulty_field)
        read = {name for field in fields if field for name in (field, field.split(".")[0])}
        own = {VERL_SOURCE_FIELD, VERL_ABILITY_FIELD, VERL_INFO_FIELD}
        return read | (own if self.preset == "verl" else set())

    def describe(self) -> str:
        return (
            f"preset={self.preset}, prompt={self.prompt_field}, answer={self.answer_field}, "
            f"id={self.id_field or '<row>'}, difficulty={self.difficulty_field or '<none>'}"
        )


def resolve_mapping(cfg: FileTaskConfig) -> Mapping:
    """The preset's field names, except those the config sets to something other than the
    FileTaskConfig default. (Not model_fields_set: a config written back by dump_config sets every
    field, and must mean the same when read again.) difficulty_field "" means no difficulty."""
    preset = PRESETS[cfg.preset]
    defaults = type(cfg).model_fields

    def pick(name: str, optional: bool = False) -> str | None:
        value = getattr(cfg, name)
        if value == defaults[name].default:
            return getattr(preset, name)
        return (value or None) if optional else value

    return Mapping(
        preset=cfg.preset,
        prompt_field=pick("prompt_field"),  # type: ignore[arg-type]
        answer_field=pick("answer_field"),  # type: ignore[arg-type]
        id_field=pick("id_field", optional=True),
        difficulty_field=pick("difficulty_field", optional=True),
        id_from_preset=cfg.preset == "verl" and cfg.id_field == defaults["id_field"].default,
    )


@dataclass(frozen=True)
class Source:
    """Where one split's rows come from."""

    label: str  # used in error messages: the path as given, or "name (split S)"
    id_prefix: str  # default ids are f"{id_prefix}:{row}"
    local: Path | None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str | None = None  # None for one Dataset's save_to_disk folder: it is the split

    @property
    def has_splits(self) -> bool:
        """A `datasets` name or DatasetDict folder, whose other splits (eval) can be read."""
        return self.local is None and self.split is not None

    def describe(self) -> str:
        """Deterministic description for TaskData.source: a local file by name and content
        hash (so moving it does not matter but editing it does), a dataset by name/config/split,
        and a local `datasets` directory also by a content hash of its files (its data files,
        and the README whose YAML header may choose them). A hub name is recorded by name."""
        if self.local is not None:
            return f"{self.local.name}@sha256:{file_sha256(self.local)[:16]}"
        config = f":{self.dataset_config}" if self.dataset_config else ""
        folder = _local_folder(self.dataset)
        if folder is not None:  # by its name, however its path is written
            digest = _directory_sha256(folder)[:16]
            split = "" if self.split is None else f"/{self.split}"
            return f"datasets:{folder.resolve().name}{config}{split}@sha256:{digest}"
        return f"datasets:{self.dataset}{config}/{self.split}"


def _local_folder(name: str | None) -> Path | None:
    """The local `datasets` folder a dataset name points to; None for a hub name."""
    folder = Path(name or "").expanduser()
    return folder if name and folder.is_dir() else None


def _one_saved_dataset(folder: Path) -> bool:
    """Whether folder is what Dataset.save_to_disk writes (one Dataset, no splits), not a
    DatasetDict's (dataset_dict.json naming its splits)."""
    return (folder / "state.json").is_file() and not (folder / "dataset_dict.json").is_file()


def _directory_sha256(root: Path) -> str:
    """sha256 over the relative paths and contents of every file under root, except hidden
    ones (.cache/, .git/, ...), which `datasets` does not load as data."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def looks_like_path(spec: str) -> bool:
    return spec.lower().endswith((*FILE_SUFFIXES, ".json")) or spec.startswith(("/", ".", "~"))


def resolve_source(
    spec: str, split: str, dataset_config: str | None, field: str = "task.file.train"
) -> Source:
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise DataError(
                f"{spec}: unsupported file type {path.suffix!r}; "
                f"use one of {', '.join(FILE_SUFFIXES)}"
            )
        return Source(label=spec, id_prefix=path.stem, local=path)
    if looks_like_path(spec) and not path.is_dir():  # a local directory goes to `datasets`
        where = "" if path.is_absolute() else f"; a relative path is read from {Path.cwd()}"
        raise DataError(f"{field}={spec}: no such file{where}")
    if path.is_dir() and _one_saved_dataset(path):
        # read whole, as a file is: the folder is the split, and a config selects nothing in it
        if dataset_config:
            raise DataError(
                f"{field}={spec}: one Dataset written by save_to_disk has no configs; remove "
                f"task.file.dataset_config ({dataset_config})"
            )
        return Source(label=spec, id_prefix=path.resolve().name, local=None, dataset=str(path))
    name, _, inline_config = spec.partition(":")
    config = dataset_config or inline_config or None
    folder = _local_folder(name)
    # a local `datasets` folder's ids by its name: the same from any working directory
    prefix = name if folder is None else folder.resolve().name
    return Source(
        label=f"{spec} (split {split})",
        id_prefix=f"{prefix}:{split}",
        local=None,
        dataset=name,
        dataset_config=config,
        split=split,
    )


def iter_rows(
    source: Source, limit: int | None, read: set[str]
) -> Iterator[tuple[int, object, int | None]]:
    """(row index, raw record, the line of a text file it starts on) triples, the first `limit`
    rows only when limit is set. Blank lines are not rows, so a row's index (and the query id
    made from it) stays the same whether or not a file has them; messages name both. read: the
    columns the caller reads (a CSV may name another column twice, not one of these)."""
    if source.local is None:
        for row, record in _dataset_rows(source, limit):
            yield row, record, None
        return
    suffix = source.local.suffix.lower()
    if suffix == ".csv":
        records = _csv_rows(source, read)
    elif suffix == ".parquet":
        records = _parquet_rows(source, read)
    else:  # .jsonl (FILE_SUFFIXES)
        records = _jsonl_rows(source)
    for row, (record, line) in enumerate(records):
        if limit is not None and row >= limit:
            return
        yield row, record, line


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) < len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return record


# one decoder for every line (json.loads with a hook builds one per call)
_RECORD_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _jsonl_rows(source: Source) -> Iterator[tuple[object, int]]:
    row = 0
    with source.local.open("rb") as f:  # type: ignore[union-attr]
        for line_no, raw in enumerate(f, start=1):
            # A byte order mark before the first line (Windows editors write one) is dropped.
            bom = len(codecs.BOM_UTF8) if line_no == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                line = raw[bom:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{row_label(source.label, row, line_no)}: not valid UTF-8 at byte "
                    f"{bom + e.start} of the line"
                ) from None
            if not line.strip():
                continue  # a blank line is not a row (e.g. a trailing newline)
            try:
                record = _RECORD_DECODER.decode(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{row_label(source.label, row, line_no)}: not valid JSON: "
                    f"{e.msg} at column {e.colno}"
                ) from e
            except _DuplicateKey as e:
                # json.loads would keep the last value without a word
                raise DataError(
                    f"{row_label(source.label, row, line_no)}: field {e.args[0]!r} is given "
                    "twice in one object; keep the one that is meant"
                ) from None
            except ValueError as e:  # a number past Python's digit limit, and the like
                raise DataError(
                    f"{row_label(source.label, row, line_no)}: not valid JSON here: {e}"
                ) from e
            yield record, line_no
            row += 1


def _parquet_rows(source: Source, read: set[str]) -> Iterator[tuple[object, None]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.local)
    except Exception as e:  # noqa: BLE001 - any reader failure means an unreadable file
        raise DataError(f"{source.label}: not a readable parquet file: {e}") from e
    # to_pylist widens a float32 (or float16) to a double: 0.1 would read 0.10000000149...
    # in the columns read (a field "a.b" is in column "a"), each named once; the file's schema
    # is every batch's
    schema = parquet.schema_arrow
    wanted = read | {name.split(".")[0] for name in read}
    narrow = [
        f
        for f in schema
        if f.name in wanted and schema.names.count(f.name) == 1 and _narrow_floats(f.type)
    ]
    batches = parquet.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - a damaged page fails only when it is read
            raise DataError(f"{source.label}: not a readable parquet file: {e}") from e
        for record in batch.to_pylist():
            for field in narrow:
                record[field.name] = _as_written(record[field.name], field.type)
            yield record, None


# asked again for each row's value and each of its parts: the answer is the type's alone
@functools.cache
def _narrow_floats(arrow_type: object) -> bool:
    """Whether a parquet type holds float32 or float16 values, in structs and lists too."""
    import pyarrow as pa

    if pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type):
        return True
    if pa.types.is_struct(arrow_type):
        return any(_narrow_floats(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _narrow_floats(arrow_type.value_type)
    return False


def _as_written(value: object, arrow_type: object) -> object:
    """A value of a parquet type holding float32 (float16) floats, each float the shortest
    decimal its own precision round-trips (0.1, not its double's 0.10000000149011612)."""
    import pyarrow as pa

    if value is None or not _narrow_floats(arrow_type):  # nothing narrow in it: as it is
        return value
    if pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type):
        narrow = arrow_type.to_pandas_dtype()(value)
        return float(format_float_positional(narrow)) if np.isfinite(narrow) else value
    if pa.types.is_struct(arrow_type):
        return {name: _as_written(v, arrow_type.field(name).type) for name, v in value.items()}
    return [_as_written(item, arrow_type.value_type) for item in value]  # a list's items


def _csv_rows(source: Source, read: set[str]) -> Iterator[tuple[dict, int]]:
    data = source.local.read_bytes()  # type: ignore[union-attr]
    # A byte order mark (what Excel writes with "CSV UTF-8") is not part of the first header.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{source.label}: line {line}: not valid UTF-8") from None
    # csv's cell limit (131072 characters) would refuse a long prompt as a broken quote; no
    # cell can be longer than the file (set back when the rows are read)
    previous = csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    try:
        with io.StringIO(text, newline="") as f:
            # strict: a quote opened and never closed is an error, not one cell that swallows every
            # line after it (those rows would be lost without a word)
            reader = csv.reader(f, strict=True)

            def next_record(where: str) -> list[str] | None:
                try:
                    return next(reader, None)
                except csv.Error as e:
                    raise DataError(
                        f"{where}: not valid CSV ({e} by line {reader.line_num}): a quote "
                        "opened in a cell and not closed, or text after a closing quote"
                    ) from None

            header = next_record(f"{source.label}: line 1 (the header)")
            if header is None:
                return
            # A column the mapping reads, named by two columns, would silently be the last of them
            # (csv.DictReader's way): refused. Columns it does not read keep their last cell.
            twice = sorted({name for name in header if name in read and header.count(name) > 1})
            if twice:
                raise DataError(
                    f"{source.label}: line {reader.line_num}: the header names column(s) "
                    f"{', '.join(map(repr, twice))} more than once"
                )
            row, last_line = 0, reader.line_num
            while True:  # a quoted cell may span lines: a record starts after the last
                start = last_line + 1
                cells = next_record(row_label(source.label, row, start))
                if cells is None:
                    return
                last_line = reader.line_num
                if not cells:
                    continue  # a blank line is not a row
                if len(cells) > len(header):
                    where = row_label(source.label, row, start)
                    raise DataError(f"{where}: more cells than header columns")
                # A short line leaves its trailing columns out (reported as missing fields).
                yield dict(zip(header, cells, strict=False)), start
                row += 1

    finally:
        csv.field_size_limit(previous)


def _dataset_rows(source: Source, limit: int | None) -> Iterator[tuple[int, object]]:
    import datasets

    try:
        if source.split is None:  # one Dataset's save_to_disk folder
            ds = datasets.load_from_disk(source.dataset)
        else:
            ds = datasets.load_dataset(source.dataset, source.dataset_config, split=source.split)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, missing config...
        how = "datasets.load_from_disk" if source.split is None else "datasets.load_dataset"
        # datasets wraps what failed ("An error occurred while generating the dataset"): its
        # cause names the file and the fault
        cause = f" ({type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
        raise DataError(f"{source.label}: cannot load with {how}: {e}{cause}") from e
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    # rows widen a float32 column to a double, as a parquet file's do: each read as written
    features = getattr(ds, "features", None)
    schema = features.arrow_schema if features is not None else []
    narrow = [field for field in schema if _narrow_floats(field.type)]
    for index, record in enumerate(ds):
        for field in narrow:
            record[field.name] = _as_written(record[field.name], field.type)
        yield index, record


def _row_in_data_file(source: Source, row: int) -> str | None:
    """Where a local `datasets` folder's row is among its split's data files ("line 3 of
    part-1.jsonl"), which datasets.load_dataset reads one after another in the order its
    builder lists them; None for other sources, or files whose rows sgpo does not count
    (a .json array, compressed files)."""
    if _local_folder(source.dataset) is None or source.split is None:
        return None
    import datasets

    try:
        builder = datasets.load_dataset_builder(source.dataset, source.dataset_config)
        files = [Path(f) for f in builder.config.data_files[source.split]]
    except Exception:  # noqa: BLE001 - no builder to ask: the message goes without
        return None
    first = 0
    for path in files:
        lines = _data_file_row_lines(path)
        if lines is None:
            return None
        if row < first + len(lines):
            return f"{lines[row - first]} of {path}"
        first += len(lines)
    return None


def _data_file_row_lines(path: Path) -> list[str] | None:
    """Each row of a .jsonl, .csv or .parquet data file, as where it is (a text file's "line 3",
    a parquet file's "row 2"); None for other files."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return [f"row {i}" for i in range(pq.ParquetFile(path).metadata.num_rows)]
    if suffix == ".jsonl":
        with path.open("rb") as f:
            return [f"line {n}" for n, line in enumerate(f, start=1) if line.strip()]
    if suffix == ".csv":  # by the line a record starts on, as a .csv file of its own is
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            next(reader, None)  # the header
            starts = []
            start = reader.line_num + 1
            for cells in reader:  # a quoted cell may span lines
                if cells:  # a blank line is not a row
                    starts.append(f"line {start}")
                start = reader.line_num + 1
            return starts
    return None


# --------------------------------------------------------------------------- rows -> queries

_MISSING = object()


def get_field(record: object, dotted: str) -> object:
    """record["a"]["b"] for "a.b", or record["a.b"] where the row has that column (a flattened
    export's: pandas json_normalize, CSV headers); _MISSING when any level is absent (or
    None)."""
    if isinstance(record, dict) and dotted in record:
        return _MISSING if record[dotted] is None else record[dotted]
    node = record
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node or node[key] is None:
            return _MISSING
        node = node[key]
    return node


def _type_name(value: object) -> str:
    return type(value).__name__


def _scalar_text(value: object, where: str, field: str) -> str:
    """A string, or a number written as text: an int as is, a float with an integer value as
    that integer (a float column's 1304.0 is the answer "1304"), any other finite float in
    positional notation, as short as round-trips (1e-05 is "0.00001"). NaN and infinities
    (JSON NaN, 3e400) are not answers: a DataError, as is any other type.

    The rule is by type, the same in every format: a value the format stores as a number
    (JSON number, parquet int/float column) is normalised, because there the ".0" comes from
    the column type, not from the user (a float column cannot hold "3"); text (a JSON string,
    a parquet string column, and every CSV cell, since CSV has no types) is kept exactly as
    written, because "3.0" or "007" written as text may be meant. So a CSV "3.0" stays "3.0"
    while a parquet 3.0 is "3"; with exact_match, write answers as the model should give
    them, or use the numeric / math_verify verifier, which compare the numbers."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800" escape: no character, no text
            raise DataError(
                f"{where}: field {field!r} holds an unpaired surrogate ({value[e.start]!r}) at "
                f"character {e.start}: not text"
            ) from None
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: field {field!r} is {value}, not a finite number")
        # positional: repr's "1e-05" reads as e - 5 (Euler's number) to math-verify; as short
        # as round-trips, so 1e30 is a 1 and 30 zeros, not its binary value's 31 digits
        # (+ 0.0: -0.0 is 0)
        return format_float_positional(value + 0.0, trim="-")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(
        f"{where}: field {field!r} must be a string or a number, got {_type_name(value)}"
    )


def reference_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}, or unbraced \\boxed 5), nested and
    escaped braces handled; None when there is no \\boxed; ValueError when the last one is never
    closed."""
    contents = boxed_contents(text)
    if not contents:
        return None
    if contents[-1] is None:
        raise ValueError("unclosed")
    return contents[-1]


def _present(record: object, field: str, where: str) -> object:
    value = get_field(record, field)
    if value is _MISSING:
        raise _missing(record, field, where)
    return value


def _missing(record: object, field: str, where: str) -> DataError:
    """A missing field, with the row's own fields when it has no such column (a misspelt
    column shows; a null value is just missing)."""
    absent = isinstance(record, dict) and field not in record and field.split(".")[0] not in record
    nested = ", a dotted name reads a nested field" if "." in field else ""
    has = f" (the row has {', '.join(map(repr, record))}{nested})" if absent else ""
    return DataError(
        f"{where}: field {field!r} is {'null' if _is_null(record, field) else 'missing'}{has}"
    )


def _is_null(record: object, field: str) -> bool:
    """Whether the row holds the field (a column of that very name, or the nested one) as
    null, where get_field reads it as missing."""
    if isinstance(record, dict) and field in record:
        return record[field] is None
    node = record
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node is None


def _non_empty(text: str, field: str, where: str) -> str:
    if not text.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return text


def _prompt_text(record: object, mapping: Mapping, where: str) -> str:
    field = mapping.prompt_field
    value = _present(record, field, where)
    if mapping.preset == "verl":
        if not isinstance(value, list):
            plain = " (a prompt of text: task.file.preset plain)" if isinstance(value, str) else ""
            raise DataError(
                f"{where}: field {field!r} must be a list of chat messages, got "
                f"{_type_name(value)}{plain}"
            )
        users = [m for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise DataError(f"{where}: field {field!r} has no message with role 'user'")
        content = users[-1].get("content")
        if not isinstance(content, str):
            raise DataError(
                f"{where}: field {field!r}: the last user message's content must be a string, "
                f"got {_type_name(content)}"
            )
        value = content
    elif not isinstance(value, str):
        chat = isinstance(value, list) and any(isinstance(m, dict) and "role" in m for m in value)
        hint = (
            " of chat messages: task.file.preset verl reads the last user message (its "
            "answer_field defaults to reward_model.ground_truth: set yours)"
            if chat
            else ""
        )
        raise DataError(f"{where}: field {field!r} must be a string, got {_type_name(value)}{hint}")
    return _non_empty(_scalar_text(value, where, field), field, where)  # (a text is checked)


_PLAIN_HINT = (
    " (a column of final answers alone: task.file.preset=plain with its answer_field, and "
    f"task.verifier={MATH_VERIFIER}, since plain's default {EXACT_VERIFIER} compares whole "
    "responses)"
)


def _answer_text(record: object, mapping: Mapping, where: str) -> str:
    field = mapping.answer_field
    text = _non_empty(_scalar_text(_present(record, field, where), where, field), field, where)
    if mapping.preset == "gsm8k":
        if "####" not in text:
            raise DataError(
                f"{where}: field {field!r} has no '####' before the final answer{_PLAIN_HINT}"
            )
        # the line after the last "####" (GSM8K's answers end there; notes may follow)
        # ("1,234" -> "1234"; a tuple's or a set's commas stay: "(2,3)")
        text = drop_thousands_separators(text.rsplit("####", 1)[1].strip().split("\n", 1)[0])
    elif mapping.preset == "math":
        try:
            boxed = reference_boxed(text)
        except ValueError:
            raise DataError(
                f"{where}: field {field!r}: the last \\boxed{{ is never closed"
            ) from None
        if boxed is None:
            raise DataError(f"{where}: field {field!r} has no \\boxed{{...}} answer{_PLAIN_HINT}")
        text = boxed
    text = text.strip()
    if not text:
        raise DataError(f"{where}: field {field!r}: the final answer is empty")
    return text


def _query_id(record: object, mapping: Mapping, source: Source, row: int, where: str) -> str:
    field = mapping.id_field
    if field is None:
        return f"{source.id_prefix}:{row}"
    value = get_field(record, field)
    if mapping.id_from_preset:  # verl: extra_info.index when the row has one
        if value is _MISSING:
            return f"{source.id_prefix}:{row}"
        return f"{source.id_prefix}:{_scalar_text(value, where, field)}"
    if value is _MISSING:
        raise _missing(record, field, where)
    text = _scalar_text(value, where, field).strip()
    if not text:
        raise DataError(f"{where}: field {field!r} is empty")
    return text


# A verl row's data_source and ability, kept per row by the verl export: verl's metrics group
# by data_source, and a custom reward function or the user's own analysis may read either.
VERL_SOURCE_FIELD = "data_source"
VERL_ABILITY_FIELD = "ability"
VERL_LABELS = {
    VERL_SOURCE_FIELD: "verl groups its metrics by it",
    VERL_ABILITY_FIELD: "verl carries it along",
}


def _verl_label(record: object, mapping: Mapping, where: str, field: str) -> str | None:
    """A verl row's own data_source or ability (VERL_LABELS); None for other presets and rows
    without one."""
    if mapping.preset != "verl":
        return None
    value = get_field(record, field)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"{where}: field {field!r} must be a non-empty string ({VERL_LABELS[field]}), "
            f"got {value!r}"
        )
    return value


# A verl row's extra_info: kept per row by the verl export (custom reward functions read it).
VERL_INFO_FIELD = "extra_info"


def _extra_info(record: object, mapping: Mapping, where: str) -> dict | None:
    if mapping.preset != "verl":
        return None
    value = get_field(record, VERL_INFO_FIELD)
    if value is _MISSING:
        return None
    if not isinstance(value, dict):
        # verl reads extra_info as a struct column and hands it to the reward function as a
        # dict: anything else cannot be exported as verl would read it
        raise DataError(
            f"{where}: field {VERL_INFO_FIELD!r} must be a mapping (a JSON object, a parquet "
            f"struct) or absent, got {_type_name(value)}"
        )
    return value


def _difficulty(record: object, mapping: Mapping, where: str) -> str:
    field = mapping.difficulty_field
    if field is None:
        return ""
    value = get_field(record, field)
    if value is _MISSING:
        error = _missing(record, field, where)
        if field == PRESETS[mapping.preset].difficulty_field:  # the preset's, not the user's
            error = DataError(f"{error} (task.file.difficulty_field='' for none)")
        raise error
    # MATH's "Level 2" given as a number, 2 or 2.0 (a parquet column of floats): one bucket
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if mapping.preset == "math" and number and float(value).is_integer():
        return f"Level {int(value)}"
    return _scalar_text(value, where, field).strip()


def _unused_messages(chat: object, system_prompt: str | None) -> bool:
    """Whether a verl row's chat holds messages sgpo does not prompt with: any besides its last
    user message, but a system message that is model.system_prompt (sgpo puts that one
    first itself)."""
    if not isinstance(chat, list) or len(chat) < 2:
        return False
    users = [i for i, m in enumerate(chat) if isinstance(m, dict) and m.get("role") == "user"]
    others = [m for i, m in enumerate(chat) if i != (users or [None])[-1]]
    system = {"role": "system", "content": system_prompt}
    return not (system_prompt is not None and others == [system])


# What table tools write for a missing value (pandas' "NaN" and "<NA>", SQL's "NULL",
# spreadsheets' "N/A"), compared in lower case: an answer that reads so is most likely one.
MISSING_VALUE_TEXTS = frozenset({"nan", "<na>", "null", "none", "n/a", "#n/a"})


def _warn_of_missing_value_answers(label: str, queries: list[Query]) -> None:
    """One warning for a split whose reference answers read as missing values: such a row
    would be trained and scored against the text "NaN", which no model answers."""
    missing = [q for q in queries if q.answer.lower() in MISSING_VALUE_TEXTS]
    if missing:
        first = missing[0]
        log.warning(
            "%s: %d of %d rows have an answer that reads as a missing value (the first: query "
            "%r%s, answer %r), as a table tool writes a blank cell; they are scored against "
            "that text: fill in their answers or leave the rows out",
            label,
            len(missing),
            len(queries),
            first.query_id,
            "" if first.line is None else f", line {first.line}",
            first.answer,
        )


def _query(
    record: object, mapping: Mapping, source: Source, row: int, line: int | None, where: str
) -> Query:
    """One row as a query; a DataError naming `where` and the field when it is not one."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a record (a JSON object), got {_type_name(record)}")
    return Query(
        query_id=_query_id(record, mapping, source, row, where),
        prompt=_prompt_text(record, mapping, where),
        answer=_answer_text(record, mapping, where),
        difficulty=_difficulty(record, mapping, where),
        line=line,
        data_source=_verl_label(record, mapping, where, VERL_SOURCE_FIELD),
        ability=_verl_label(record, mapping, where, VERL_ABILITY_FIELD),
        extra_info=_extra_info(record, mapping, where),
    )


def load_split(
    source: Source, mapping: Mapping, limit: int | None, system_prompt: str | None = None
) -> list[Query]:
    """A split's queries. system_prompt: model.system_prompt, which a verl row's own system
    message may repeat (said when it does not)."""
    queries = []
    unused: list[str] = []  # verl preset: rows with messages sgpo does not prompt with
    # verl preset: the top-level columns sgpo neither reads nor exports, with the first row of each
    unread: dict[str, str] = {}
    read = mapping.columns()
    for row, record, line in iter_rows(source, limit, read):
        where = row_label(source.label, row, line)
        try:
            queries.append(_query(record, mapping, source, row, line, where))
        except DataError as e:
            if (found := _row_in_data_file(source, row)) is None:
                raise
            raise DataError(f"{e} (row {row} is {found})") from None
        if mapping.preset != "verl":
            continue
        if _unused_messages(get_field(record, mapping.prompt_field), system_prompt):
            unused.append(where)
        for column, value in record.items():  # a parquet null or an empty list is no value
            if value not in (None, [], {}, "") and column not in read:
                unread.setdefault(column, where)
    if not queries:
        raise DataError(f"{source.label}: no rows")
    _warn_of_missing_value_answers(source.label, queries)
    if unused:
        log.warning(
            "%s: %d of %d rows hold messages besides their last user message (a system "
            "message other than model.system_prompt, earlier turns; the first: %s); sgpo "
            "prompts with that user message alone, formatted by the model's chat template after "
            "model.system_prompt (now %r), so the others are not used: give a system message "
            "shared by every row as model.system_prompt",
            source.label,
            len(unused),
            len(queries),
            unused[0],
            system_prompt,
        )
    if unread:
        log.warning(
            "%s: column(s) %s are neither read nor exported by sgpo (the first row with each: "
            "%s); it reads %s, so what verl would take from the others (an agent loop's "
            "agent_name, images, tools_kwargs) is not in the profile or the export: put what a "
            "reward function needs in extra_info",
            source.label,
            ", ".join(sorted(unread)),
            "; ".join(f"{column}: {where}" for column, where in sorted(unread.items())),
            ", ".join(sorted(column for column in read if "." not in column)),
        )
    return queries


def load_file_task(
    cfg: FileTaskConfig, with_eval: bool = True, system_prompt: str | None = None
) -> TaskData:
    """The files' queries; with_eval False reads the training split only (profile, plan, the
    verl export), so an eval file that is missing, not yet right or on the hub costs nothing.
    system_prompt: model.system_prompt (load_split)."""
    mapping = resolve_mapping(cfg)
    dataset_config = getattr(cfg, "dataset_config", None)
    train_source = resolve_source(cfg.train, cfg.split_train, dataset_config)
    if not with_eval:
        eval_source: Source | None = None
    elif cfg.eval is not None:
        eval_source = resolve_source(cfg.eval, cfg.split_eval, dataset_config, "task.file.eval")
    elif train_source.has_splits:
        eval_source = resolve_source(cfg.train, cfg.split_eval, dataset_config)
    else:
        eval_source = None
    train = load_split(train_source, mapping, cfg.limit_train, system_prompt)
    evaluation = (
        load_split(eval_source, mapping, cfg.limit_eval, system_prompt) if eval_source else []
    )
    eval_desc = eval_source.describe() if eval_source else "<none>" if with_eval else "<not read>"
    source = (
        f"file(train={train_source.describe()}, eval={eval_desc}, {mapping.describe()}, "
        f"limit_train={cfg.limit_train}, limit_eval={cfg.limit_eval})"
    )
    return TaskData(
        train=train,
        eval=evaluation,
        source=source,
        train_label=train_source.label,
        eval_label=eval_source.label if eval_source else "eval queries",
        prompt_field=mapping.prompt_field,
        answer_field=mapping.answer_field,
        id_field=mapping.id_field,
        ids_named_by_file=mapping.id_field is None or mapping.id_from_preset,
    )
