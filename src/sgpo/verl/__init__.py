"""Scale-out on verl (0.9.1): export an sGPO plan as a verl dataset (sgpo.verl.export), score
rollouts with sGPO's verifier inside verl (sgpo.verl.reward), and turn a verl run's logged token
counts into sGPO's per-phase FLOPs (sgpo.verl.flops), check a launch against the plan
(sgpo.verl.check) and record launched runs for comparison (sgpo.verl.runs). See
examples/verl/README.md.

Nothing here imports verl but sgpo.verl.sampler (PODS down-sampling and the skip on history
as a verl replay buffer and dataset, loaded by verl itself; their bookkeeping is the verl-free
sgpo.verl.downsample and sgpo.verl.history): export and FLOPs accounting run in sgpo's own
environment, and verl loads the reward function, the buffer and the dataset by their paths
(pkg://sgpo.verl.reward, pkg://sgpo.verl.sampler). Submodules load on first use so
that importing the command line (sgpo.verl.cli) stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_verl_parquet": "sgpo.verl.export",
    "rollouts_per_step": "sgpo.verl.export",
    "verl_run_flops": "sgpo.verl.flops",
    "compute_score": "sgpo.verl.reward",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sgpo.verl' has no attribute {name!r}")
