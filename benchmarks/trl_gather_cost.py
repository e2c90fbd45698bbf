"""What SGPOTrainer's cross-process gathers cost per generation batch, against its size.

On several processes `sgpo.trl.SGPOTrainer` gathers, for every generation batch, each row's
query id and group (always), and with growth or down-sampling (`grow_max`, `downsample_to`)
the whole batch's prompts, dataset rows and first draws (completion ids, text, sampling
log-probs, scores), then each round's extra responses (`_first_draws`, `_draw_for`). This
measures those gathers alone, with payloads of the sizes given (no model runs): accelerate's
`gather_object` (pickled objects) and `Accelerator.gather` (tensors), as the trainer calls
them, timed on every process and reported as the slowest process's median over `--repeats`
batches.

    .venv/bin/python benchmarks/trl_gather_cost.py --rows 256 1024 4096

It launches itself under `torchrun --nproc_per_node --processes` (gloo on CPU here; on GPUs
accelerate's gather_object moves the pickled bytes through NCCL, so the figures below are a
CPU's, for the order of magnitude). A row stands for a GSM8K/MATH-like query: a prompt of
`--prompt-chars` characters, a dataset row holding the answer and a few fields, a completion of
`--completion-tokens` token ids with as many characters of text and sampling log-probs (TRL's
vLLM path returns them; transformers' does not), one score per reward function. An extra
round draws `--extra-share` of the batch's rows again.

Measured on the 2-core development machine (2026-12-07, beside other work; 2 processes, gloo;
prompts of 2,000 characters, completions of 1,000 tokens with log-probs, an extra round of a
quarter of the rows; the slowest process's median of 5; `--rows 256 1024 4096`, 40 s):

| rows per batch | always (ms) | first draws (ms) | an extra round (ms) | pickled MiB |
|---|---|---|---|---|
| 256 | 4 | 98 | 18 | 4 |
| 1024 | 9 | 346 | 81 | 16 |
| 4096 | 10 | 1484 | 266 | 64 |

The first draws' gathers grow linearly, ~0.35 ms and ~16 KB pickled per row, nearly all of it
the completions (1,000 token ids and 1,000 log-probs as Python lists); prompts and dataset rows
are ~2 KB a row. Against generation this is small: a GPU engine takes tens of seconds for 1,024
completions of 1,000 tokens, where these gathers take a third of a second here (0.43 s with an
extra round). Without growth or down-sampling only the first column is paid. Not measured:
NCCL between GPUs, or more than 2 processes (gather_object's bytes grow with the batch, not
with the processes).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def _payloads(rows: int, args: argparse.Namespace, rank: int) -> dict[str, list]:
    """This process's share of a batch of `rows` rows, as the trainer gathers it."""
    rng = random.Random(rank)
    words = ["the", "of", "and", "to", "in", "is", "that", "for", "with", "as", "on", "by"]

    def text(chars: int) -> str:
        out = []
        while sum(len(w) + 1 for w in out) < chars:
            out.append(rng.choice(words))
        return " ".join(out)[:chars]

    tokens = args.completion_tokens
    share = rows // args.processes
    prompts = [text(args.prompt_chars) for _ in range(share)]
    dataset_rows = [
        {"query_id": f"q{rank}-{i}", "answer": str(rng.randrange(10**6)), "difficulty": "3"}
        for i in range(share)
    ]
    draws = [
        (
            [rng.randrange(150_000) for _ in range(tokens)],
            text(tokens),
            [-rng.random() for _ in range(tokens)],
            torch.tensor([float(rng.random() < 0.5)]),
        )
        for _ in range(share)
    ]
    extra = draws[: int(share * args.extra_share)]
    return {"prompts": prompts, "rows": dataset_rows, "draws": draws, "extra": extra}


def _gathers(accelerator: object, share: dict[str, list]) -> dict[str, Callable[[], None]]:
    """The gathers of one generation batch, as SGPOTrainer makes them: on every batch
    (_generate_and_score_completions), for growth's or down-sampling's first draws
    (_first_draws) and for a round of extra responses (_draw_for)."""
    from accelerate.utils import gather_object

    def always() -> None:
        accelerator.gather(torch.arange(len(share["rows"])))
        gather_object([row["query_id"] for row in share["rows"]])
        gather_object([(i, 8) for i in range(len(share["rows"]))])

    def first_draws() -> None:
        accelerator.gather(torch.zeros(len(share["rows"]), 1))
        gather_object(list(share["prompts"]))
        gather_object(list(share["rows"]))
        gather_object(list(share["draws"]))
        gather_object([len(p) for p in share["prompts"]])

    def extra_round() -> None:
        gather_object(list(share["extra"]))

    return {"always": always, "first_draws": first_draws, "extra_round": extra_round}


def _timed(call: Callable[[], None]) -> float:
    torch.distributed.barrier()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _worker(args: argparse.Namespace) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    results = []
    for rows in args.rows:
        share = _payloads(rows, args, rank)
        gathers = _gathers(accelerator, share)
        times: dict[str, list[float]] = {name: [] for name in gathers}
        for _ in range(args.repeats):
            for name, call in gathers.items():
                times[name].append(_timed(call))
        medians = torch.tensor([statistics.median(t) for t in times.values()])
        slowest = accelerator.reduce(medians, reduction="max").tolist()
        pickled = sum(len(pickle.dumps(share[k])) for k in ("prompts", "rows", "draws"))
        total_bytes = accelerator.reduce(torch.tensor([float(pickled)]), reduction="sum")
        results.append(
            {
                "rows": rows,
                **{f"{k}_ms": round(v * 1000) for k, v in zip(times, slowest, strict=True)},
                "pickled_mib": round(float(total_bytes) / 2**20),
            }
        )
    if accelerator.is_main_process:
        print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--prompt-chars", type=int, default=2000)
    parser.add_argument("--completion-tokens", type=int, default=1000)
    parser.add_argument("--extra-share", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if "LOCAL_RANK" in os.environ:
        _worker(args)
        return
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc_per_node", str(args.processes), __file__, *sys.argv[1:]]
    done = subprocess.run(launch, capture_output=True, text=True, check=True)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    print("| rows per batch | always (ms) | first draws (ms) | an extra round (ms) | pickled MiB |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rows']} | {r['always_ms']} | {r['first_draws_ms']} | "
            f"{r['extra_round_ms']} | {r['pickled_mib']} |"
        )


if __name__ == "__main__":
    main()
