"""The embedded model's skill profile: sampled accuracy (temperature 1) per digit count on the
held-out split of the addition task (200 sums per bucket; all ~21 held-out 1-digit sums),
about 800 samples per bucket, measured through sgpo's own evaluation path. The README's
skill table and tests/test_embedded.py use exactly this measurement."""

from __future__ import annotations

import math

from sgpo.config import RunConfig, load_config
from sgpo.evaluate import evaluate
from sgpo.models import load_policy
from sgpo.tasks import load_run_task
from sgpo.tasks.addition import pool_size
from sgpo.wiring import make_engine, make_verifier, sampling_params

SKILL_DIGITS = (1, 2, 3, 4)
SKILL_QUERIES_PER_BUCKET = 200
SKILL_SAMPLES_PER_BUCKET = 800  # 1-digit sums have only ~21 held-out pairs: more samples each
SKILL_SEED = 0


def skill_config(model: str, digits: int, n_queries: int) -> RunConfig:
    """The measurement's settings, with a held-out split of n_queries sums of one digit count."""
    return load_config(
        None,
        [
            f"model.name_or_path={model}",
            "model.device=cpu",
            "model.dtype=float32",
            f"seed={SKILL_SEED}",
            f"task.addition.digits=[{digits}]",
            "task.addition.weights=[1.0]",
            "task.addition.n_train=1",
            f"task.addition.n_eval={n_queries}",
            "sampling.temperature=1.0",
            "sampling.max_new_tokens=7",
        ],
    )


def heldout_skill(model: str = "embedded") -> dict[str, float]:
    """{"1-digit": acc, ...} for the model at this path (default: the embedded one)."""
    configs = {
        d: skill_config(model, d, min(SKILL_QUERIES_PER_BUCKET, pool_size(d, "eval") or 10**9))
        for d in SKILL_DIGITS
    }
    first = configs[SKILL_DIGITS[0]]
    engine = make_engine(first, load_policy(first), "eval")  # one model for every bucket
    skill = {}
    for d, config in configs.items():
        task = load_run_task(config)
        result = evaluate(
            engine,
            make_verifier(config, task),
            task.eval,
            sampling_params(config),
            n_samples=math.ceil(SKILL_SAMPLES_PER_BUCKET / len(task.eval)),
            greedy=False,
            seed=SKILL_SEED,
            threshold=config.task.correct_threshold,
        )
        skill[f"{d}-digit"] = round(result["eval_acc"], 4)
    return skill
