"""The embedded model's skill profile: sampled accuracy (temperature 1) per digit count on the
held-out split of the addition task, measured through sgpo's own evaluation path. The README's
skill table and tests/test_embedded.py use exactly this measurement."""

from __future__ import annotations

from sgpo.config import load_config
from sgpo.evaluate import evaluate
from sgpo.models import load_policy
from sgpo.tasks import load_task
from sgpo.wiring import make_engine, make_verifier, sampling_params

SKILL_DIGITS = (1, 2, 3, 4)
SKILL_QUERIES_PER_BUCKET = 200
SKILL_SAMPLES = 4
SKILL_SEED = 0


def heldout_skill(model: str = "embedded") -> dict[str, float]:
    """{"1-digit": acc, ...} for the model at this path (default: the embedded one)."""
    config = load_config(
        None,
        [
            f"model.name_or_path={model}",
            "model.device=cpu",
            "model.dtype=float32",
            f"seed={SKILL_SEED}",
            f"task.addition.digits={list(SKILL_DIGITS)}",
            f"task.addition.weights={[1.0] * len(SKILL_DIGITS)}",
            f"task.addition.n_eval={SKILL_QUERIES_PER_BUCKET * len(SKILL_DIGITS)}",
            "sampling.temperature=1.0",
            "sampling.max_new_tokens=7",
        ],
    )
    task = load_task(config.task, config.seed)
    policy = load_policy(config)
    result = evaluate(
        make_engine(config, policy, "eval"),
        make_verifier(config, task),
        task.eval,
        sampling_params(config),
        n_samples=SKILL_SAMPLES,
        greedy=False,
        seed=SKILL_SEED,
    )
    return {bucket: round(acc, 4) for bucket, acc in result["eval_acc_by_bucket"].items()}
