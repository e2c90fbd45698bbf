"""verl reward function that scores with sGPO's verifier.

Point verl 0.9.1 at it with
    reward.custom_reward_function.path=pkg://sgpo.verl.reward
    reward.custom_reward_function.name=compute_score
(or path=<this file>). verl's reward managers (verl/experimental/reward_loop/reward_manager/
naive.py, NaiveRewardManager.run_single) call it with keyword arguments
    compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **kwargs)
from a thread pool (loop.run_in_executor), and take a float (or a dict with "score").

Which verifier, first match wins:
  1. extra_info["verifier"] (sgpo.verl.export writes the plan's verifier there, with its
     verifier_kwargs, verifier_timeout_s and verifier_isolation),
  2. the environment variable SGPO_VERIFIER,
  3. by data_source: "sgpo/addition" -> sgpo.tasks.addition:verify, anything else ->
     sgpo.verifiers:math_verify.
Verifiers run through sgpo.verify.Verifier, exactly as in sGPO: an exception or a timeout scores
0 and is counted (and the first few are logged); a verifier that cannot be imported is an error.
Timeout: extra_info["verifier_timeout_s"], else $SGPO_VERIFIER_TIMEOUT_S, else 5 s.
Isolation: $SGPO_VERIFIER_ISOLATION (auto, inline or process) if set; else "process" when
extra_info["verifier_isolation"] says so; else auto.
  process: a separate, time- and memory-limited worker process (sGPO's "process");
  auto: in this process on the main thread (SIGALRM timeout, sGPO's "inline"); from any other
      thread, as verl calls it, where SIGALRM cannot interrupt, in the worker process so that
      the timeout still holds;
  inline: always in this process (off the main thread without a timeout).
"""

from __future__ import annotations

import json
import os
import threading

from sgpo.verify import Verifier

ADDITION_VERIFIER = "sgpo.tasks.addition:verify"
MATH_VERIFIER = "sgpo.verifiers:math_verify"
DATA_SOURCE_VERIFIERS = {"sgpo/addition": ADDITION_VERIFIER}
ISOLATIONS = ("auto", "inline", "process")
DEFAULT_TIMEOUT_S = 5.0

_lock = threading.Lock()
_verifiers: dict[tuple[str, str, float, str], Verifier] = {}


def verifier_spec(data_source: str, extra_info: dict | None) -> str:
    """The import path of the verifier for one rollout (see the module docstring)."""
    spec = (extra_info or {}).get("verifier")
    if spec:
        return str(spec)
    spec = os.environ.get("SGPO_VERIFIER")
    if spec:
        return spec
    return DATA_SOURCE_VERIFIERS.get(data_source, MATH_VERIFIER)


def _isolation(requested: str | None) -> str:
    """$SGPO_VERIFIER_ISOLATION exactly; else "process" if the row asks for it; else auto. A row's
    "inline" (sGPO's default) counts as auto, so that its timeout holds in verl's threads too."""
    if requested not in (None, "inline", "process"):
        raise ValueError(
            f"extra_info['verifier_isolation'] must be inline or process, got {requested!r}"
        )
    mode = os.environ.get("SGPO_VERIFIER_ISOLATION") or (
        "process" if requested == "process" else "auto"
    )
    if mode not in ISOLATIONS:
        raise ValueError(f"SGPO_VERIFIER_ISOLATION must be one of {ISOLATIONS}, got {mode!r}")
    if mode != "auto":
        return mode
    return "inline" if threading.current_thread() is threading.main_thread() else "process"


def get_verifier(spec: str, extra_info: dict | None = None) -> Verifier:
    """One Verifier per (spec, isolation, timeout, kwargs) per process, imported on first use."""
    info = extra_info or {}
    if spec != info.get("verifier"):  # the row's settings belong to the row's verifier only
        info = {}
    timeout = info.get("verifier_timeout_s") or os.environ.get("SGPO_VERIFIER_TIMEOUT_S")
    kwargs_json = info.get("verifier_kwargs") or "{}"
    key = (
        spec,
        _isolation(info.get("verifier_isolation")),
        float(timeout or DEFAULT_TIMEOUT_S),
        kwargs_json,
    )
    verifier = _verifiers.get(key)
    if verifier is None:
        verifier = Verifier(spec, key[2], key[1], json.loads(kwargs_json))
        _verifiers[key] = verifier
    return verifier


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    **kwargs: object,
) -> float:
    """Score one rollout in [0, 1] with sGPO's verifier; failures score 0 and are counted."""
    extra_info = extra_info or {}
    query_id = str(extra_info.get("query_id", extra_info.get("index", "?")))
    # The lock serialises calls: Verifier keeps per-process counters and a single worker pipe,
    # and verl calls from many threads at once. Verifiers are fast next to generation.
    with _lock:
        verifier = get_verifier(verifier_spec(data_source, extra_info), extra_info)
        return verifier.score_one(str(solution_str), str(ground_truth), query_id)


def verifier_stats() -> dict[str, dict[str, int]]:
    """Calls, errors and timeouts so far in this process, per verifier (and isolation)."""
    with _lock:
        return {
            f"{spec} ({isolation})": {
                "calls": v.stats.calls,
                "errors": v.stats.errors,
                "timeouts": v.stats.timeouts,
            }
            for (spec, isolation, _, _), v in _verifiers.items()
        }
