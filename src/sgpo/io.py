"""File I/O: every output is written to a temporary file and renamed into place, so a reader
(or a resumed run) never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sgpo.errors import DataError

METADATA_KEY = b"sgpo"


def _umask() -> int:
    """The process's umask. Read from /proc where it can be: setting the umask to read it is
    not thread-safe."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration):
        umask = os.umask(0o022)
        os.umask(umask)
        return umask


def _new_file_mode() -> int:
    """The mode open() gives a new file under the current umask (mkstemp's is 0600)."""
    return 0o666 & ~_umask()


def with_umask_modes(root: Path) -> None:
    """Give a folder written in private (mkdtemp's 0700; transformers writes its safetensors
    0600) the modes a plain mkdir and open() give, so a model saved on a shared machine is
    readable as every other output is."""
    umask = _umask()
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(folder, name), file_mode)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A new temporary file next to path, for the block to write; renamed over path when the
    block ends, removed if it fails. The one way every output here is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _new_file_mode())
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_table(
    path: Path, rows: list[dict], metadata: dict, schema: pa.Schema | None = None
) -> None:
    """Rows -> parquet with our metadata (JSON) in the schema, atomically. Without a schema
    the columns are every key any row has (pyarrow alone takes the first row's: rows of an
    older table joined with newer ones would lose the newer columns), empty where a row lacks
    one."""
    if schema is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        rows = [{column: row.get(column) for column in columns} for row in rows]
    table = pa.Table.from_pylist(rows, schema=schema)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    with replacing(path) as tmp:
        pq.write_table(table, tmp)


@contextmanager
def table_writer(path: Path, schema: pa.Schema, metadata: dict) -> Iterator[pq.ParquetWriter]:
    """A parquet writer for a table written in parts (each `write_table` call one or more row
    groups), so that a table larger than memory is never held whole; with our metadata in the
    schema, and renamed into place only when the block ends, as write_table's."""
    schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    with replacing(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield writer


def read_table(path: Path, columns: list[str] | None = None) -> tuple[list[dict], dict]:
    """A table's rows (of the columns named, or all) and sgpo's metadata."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():  # parquet reads a folder as one table of its files, with one's metadata
        raise DataError(f"{path}: a directory; give the table's .parquet file")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e}); it is damaged") from e
    return table.to_pylist(), _sgpo_metadata(table.schema, path)


def read_table_metadata(path: Path) -> dict:
    """sgpo's metadata of a parquet table, without reading its rows."""
    return _sgpo_metadata(_read_schema(path), path)


def table_columns(path: Path) -> list[str]:
    """A parquet table's column names, without reading its rows."""
    return _read_schema(path).names


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e}); it is damaged") from e


def _sgpo_metadata(schema: pa.Schema, path: Path) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    try:
        return json.loads(raw) if raw else {}
    except ValueError as e:
        raise DataError(f"{path}: sgpo metadata is not valid JSON ({e})") from e


def make_out_dir(out_dir: Path) -> None:
    """Create an output directory, refusing a filesystem root or the home directory (sgpo would
    put its files among everything else there) and saying why one cannot be made."""
    resolved = out_dir.expanduser().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise FileExistsError(
            f"{out_dir}: refusing to use {resolved} as an output directory; "
            "give a directory of its own, e.g. runs/NAME"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir}: a file, not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where a parent folder should be, no permission, ...
        raise NotADirectoryError(
            f"--out {out_dir}: cannot create this directory ({e.strerror or e})"
        ) from e


def prepare_out_dir(path: Path, overwrite: bool, resume: bool | None, marker: str) -> None:
    """Refuse to clobber an existing result (marker file) unless asked to overwrite or resume
    (resume None: the command cannot resume, so the message does not offer it)."""
    if (path / marker).exists() and not (overwrite or resume):
        offer = "" if resume is None else " or --resume to continue"
        raise FileExistsError(
            f"{path / marker} already exists; pass --overwrite to replace it{offer}"
        )
    make_out_dir(path)


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file. Every record is written with its newline, so an
    unterminated last line is one a killed writer never finished: it is not a record yet."""
    if not path.exists():
        return []
    records = []
    # bytes, so that a line that is not even UTF-8 is named by its number too
    for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: line {number}: not valid JSON: {e}") from e
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: not a JSON object but {type(record).__name__}")
        records.append(record)
    return records


def read_json(path: Path) -> dict:
    """A JSON file holding one object (summary.json and the like); DataError naming the file
    when it is truncated or otherwise not an object."""
    try:
        tree = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); it is truncated or damaged") from e
    if not isinstance(tree, dict):
        raise DataError(f"{path}: not a JSON object but {type(tree).__name__}")
    return tree
