"""sGPO inside TRL: a GRPOTrainer driven by an sgpo plan (install with `pip install 'sgpo[trl]'`).

from sgpo.trl import SGPOConfig, SGPOTrainer
trainer = SGPOTrainer(model, reward_funcs, plan="runs/x/plan.parquet", args=SGPOConfig(...))
"""

from __future__ import annotations

try:
    import trl  # noqa: F401 - the real TRL (absolute import), not this package
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError("sgpo.trl needs TRL: pip install 'sgpo[trl]'") from e

from sgpo.trl.data import Plan, load_plan, plan_dataset
from sgpo.trl.rewards import VerifierReward, verifier_reward
from sgpo.trl.trainer import SGPOConfig, SGPOTrainer

__all__ = [
    "Plan",
    "SGPOConfig",
    "SGPOTrainer",
    "VerifierReward",
    "load_plan",
    "plan_dataset",
    "verifier_reward",
]
