"""Built-in verifiable task: integer addition, the answer's digits written in reverse order.

Reversed answers let a tiny model carry left to right. Difficulty = digits per operand.
A pair (a, b) belongs to the eval split iff a hash of it says so, so the two splits can
never overlap whatever the seed or sizes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from sgpo.config import AdditionTaskConfig
from sgpo.errors import ConfigError
from sgpo.tasks import Query, TaskData

EVAL_SHARE = 5  # one pair in five belongs to the eval split
VERIFIER = "sgpo.tasks.addition:verify"


def prompt_for(a: int, b: int) -> str:
    return f"{a}+{b}="


def target_for(a: int, b: int) -> str:
    """What the model must write: the sum's digits reversed."""
    return str(a + b)[::-1]


def verify(response: str, reference: str) -> float:
    """1.0 iff the response, read back to front, is exactly the reference sum."""
    return 1.0 if response.strip()[::-1] == reference.strip() else 0.0


def is_eval_pair(a: int, b: int) -> bool:
    digest = hashlib.sha256(f"{a}+{b}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % EVAL_SHARE == 0


def operand_range(digits: int) -> tuple[int, int]:
    return (0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def pool_size(digits: int, split: str) -> int | None:
    """Exact size of a split's pool for small digit counts (None when it is too big to matter)."""
    if digits > 2:
        return None
    lo, hi = operand_range(digits)
    n = sum(is_eval_pair(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1))
    return n if split == "eval" else (hi - lo + 1) ** 2 - n


def sample_pairs(digits: int, split: str, rng: random.Random) -> Iterator[tuple[int, int]]:
    """Endless stream of (a, b) pairs of one split, with repeats."""
    lo, hi = operand_range(digits)
    want_eval = split == "eval"
    while True:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if is_eval_pair(a, b) == want_eval:
            yield a, b


def bucket_counts(total: int, weights: list[float]) -> list[int]:
    """Split total into integer counts proportional to weights (largest remainder)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True):
        if sum(counts) >= total:
            break
        counts[i] += 1
    return counts


def make_split(cfg: AdditionTaskConfig, split: str, n: int, seed: int) -> list[Query]:
    rng = random.Random(f"addition/{split}/{seed}")
    queries: list[Query] = []
    weights = cfg.eval_weights if split == "eval" and cfg.eval_weights else cfg.weights
    for digits, count in zip(cfg.digits, bucket_counts(n, weights), strict=True):
        available = pool_size(digits, split)
        if available is not None and count > available:
            raise ConfigError(
                f"task.addition: {split} split asks for {count} distinct {digits}-digit sums "
                f"but only {available} exist; lower the weight or n_{split}"
            )
        seen: set[tuple[int, int]] = set()
        for a, b in sample_pairs(digits, split, rng):
            if len(seen) == count:
                break
            if (a, b) in seen:
                continue
            seen.add((a, b))
            queries.append(
                Query(f"add:{a}+{b}", prompt_for(a, b), str(a + b), difficulty=f"{digits}-digit")
            )
    return queries


def make_addition_task(cfg: AdditionTaskConfig, seed: int) -> TaskData:
    mix = ",".join(f"{d}:{w:g}" for d, w in zip(cfg.digits, cfg.weights, strict=True))
    if cfg.eval_weights:
        mix += "; eval " + ",".join(f"{w:g}" for w in cfg.eval_weights)
    return TaskData(
        train=make_split(cfg, "train", cfg.n_train, seed),
        eval=make_split(cfg, "eval", cfg.n_eval, seed),
        source=f"addition(digits={mix}, n_train={cfg.n_train}, n_eval={cfg.n_eval}, seed={seed})",
    )
