"""Peak memory of writing and merging a profile's samples, against the profile's size.

sgpo profile writes profile_samples.parquet from its chunk files one chunk at a time
(`sgpo.profile.write_samples`), and `sgpo profile merge` joins the shards' samples a window of
queries at a time (`sgpo.profile.merge_samples`), so their memory should not grow with the
number of queries. Before, both held every sample as Python objects (a list of dicts): that
way is measured beside them as `held whole` (the same files in, the same table out).

Synthetic samples stand in for a real profile's (no model runs): `--queries` queries, k = 8
samples each, `--tokens` response tokens and as many characters of text per sample, written as
sgpo profile writes its chunks (`--chunk-size` queries each) and as three shards' samples files.
Each measurement runs in a fresh process; its peak resident memory (VmHWM, Linux) is reported
next to the size of the data; the first row's figures are mostly the imports' (torch).

    .venv/bin/python benchmarks/profile_memory.py --queries 250 2000 8000
    .venv/bin/python benchmarks/profile_memory.py --queries 32000 --streamed-only

Measured on the 2-core development machine (2026-12-07; 700 response tokens, chunks of 256):

| queries | samples | samples file (MiB) | write_samples | held whole | merge_samples | held whole |
|---|---|---|---|---|---|---|
| 250 | 2000 | 0 | 513 MiB | 571 MiB | 563 MiB | 577 MiB |
| 2000 | 16000 | 3 | 607 MiB | 1242 MiB | 701 MiB | 1252 MiB |
| 8000 | 64000 | 14 | 591 MiB | 3214 MiB | 750 MiB | 3242 MiB |
| 32000 | 256000 | 54 | 591 MiB | not run | 788 MiB | not run |

About 500 MiB of each is the imports. Held whole, memory grows by ~44 KiB per sample (Python
ints for the token ids); streamed, the write stays flat and the merge grows by ~40 MiB per
fourfold size (its key columns: each sample's query id and index, held to order the shards).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from sgpo.io import read_table, write_table
from sgpo.profile import SAMPLE_SCHEMA, merge_samples, write_samples

K = 8
PROMPT_TOKENS = 200
SHARDS = 3
MEASURED = ("write_samples", "write_held_whole", "merge_samples", "merge_held_whole")


def write_inputs(folder: Path, queries: int, tokens: int, chunk_size: int) -> None:
    """Chunk files as sgpo profile writes them, and three shards' samples files."""
    ids = [f"q{i:07d}" for i in range(queries)]
    for start in range(0, queries, chunk_size):
        rows = [
            {
                "query_id": query_id,
                "k": K,
                "samples": [
                    {
                        "index": j,
                        "prompt_ids": list(range(PROMPT_TOKENS)),
                        "response_ids": [(i * K + j + t) % 50000 for t in range(tokens)],
                        "text": "x" * tokens,
                        "finished": True,
                        "reward": float(j % 2),
                    }
                    for j in range(K)
                ],
            }
            for i, query_id in enumerate(ids[start : start + chunk_size], start)
        ]
        write_table(folder / "chunks" / f"chunk-{start // chunk_size:05d}.parquet", rows, {})
    write_samples(folder / "whole.parquet", sorted((folder / "chunks").iterdir()), {})
    whole = pq.read_table(folder / "whole.parquet")
    for shard in range(SHARDS):  # shard I holds queries I, I+N, ...: rows of those queries
        positions = [i for i in range(whole.num_rows) if (i // K) % SHARDS == shard]
        # in row groups of a chunk, as sgpo profile --shard writes them
        shard_path = folder / f"shard{shard}.parquet"
        pq.write_table(whole.take(positions), shard_path, row_group_size=chunk_size * K)
    (folder / "order.json").write_text(json.dumps(ids))


def measure(folder: Path, what: str) -> None:
    """One measurement, in this (fresh) process; prints its peak resident memory in MiB."""
    chunks = sorted((folder / "chunks").iterdir())
    shards = [folder / f"shard{shard}.parquet" for shard in range(SHARDS)]
    order = json.loads((folder / "order.json").read_text())
    out = folder / f"{what}.parquet"
    if what == "write_samples":
        write_samples(out, chunks, {})
    elif what == "write_held_whole":
        rows = [row for chunk in chunks for row in read_table(chunk)[0]]
        samples = [{"query_id": r["query_id"], **s} for r in rows for s in r.pop("samples")]
        write_table(out, samples, {}, SAMPLE_SCHEMA)
    elif what == "merge_samples":
        merge_samples(shards, order, out, {})
    elif what == "merge_held_whole":
        position = {query_id: i for i, query_id in enumerate(order)}
        samples = [s for shard in shards for s in read_table(shard)[0]]
        samples.sort(key=lambda s: (position[s["query_id"]], s["index"]))
        write_table(out, samples, {}, SAMPLE_SCHEMA)
    print(peak_resident_mib())


def peak_resident_mib() -> float:
    """This process's peak resident memory since it started (VmHWM: unlike ru_maxrss, not
    carried over from the parent that forked it, which holds the inputs it wrote)."""
    status = Path("/proc/self/status").read_text()
    return (
        next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        / 1024
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--tokens", type=int, default=700)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument(
        "--streamed-only", action="store_true", help="skip the held-whole reads (large sizes)"
    )
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # folder, what (internal)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), args.measure[1])
        return
    print("| queries | samples | samples file (MiB) | write_samples | held whole | "
          "merge_samples | held whole |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for queries in args.queries:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_inputs(folder, queries, args.tokens, args.chunk_size)
            peaks = {}
            held_whole = () if args.streamed_only else ("write_held_whole", "merge_held_whole")
            for what in ("write_samples", "merge_samples", *held_whole):
                command = [sys.executable, __file__, "--measure", tmp, what]
                peaks[what] = float(subprocess.check_output(command, text=True).split()[-1])
            if held_whole:
                assert pq.read_table(folder / "merge_samples.parquet").equals(
                    pq.read_table(folder / "merge_held_whole.parquet")
                ), "the two merges differ"
            size = (folder / "whole.parquet").stat().st_size / 2**20
            said = [f"{peaks[what]:.0f} MiB" if what in peaks else "not run" for what in MEASURED]
            print(f"| {queries} | {queries * K} | {size:.0f} | {' | '.join(said)} |")


if __name__ == "__main__":
    main()
