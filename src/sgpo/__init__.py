"""sgpo: sorted Group Policy Optimization for RLVR.

Pipeline, one module per stage: profile -> plan -> train -> evaluate -> report.
The algorithmic core (group sizes, filtering, curriculum, advantages, FLOPs) lives in
``sgpo.core`` as pure functions.
"""

__version__ = "0.1.0"
