"""verl reward function that scores with sGPO's verifier.

Point verl 0.9.1 at it with
    reward.custom_reward_function.path=pkg://sgpo.verl.reward
    reward.custom_reward_function.name=compute_score
(or path=<this file>). verl's reward managers (verl/experimental/reward_loop/reward_manager/
naive.py, NaiveRewardManager.run_single) call it with keyword arguments
    compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **kwargs)
from a thread pool (loop.run_in_executor), and take a float or a dict with "score" whose other
keys become the rollout's reward_extra_info.

What it returns: {"score", "acc" (1.0 for a success, a score from extra_info["success_threshold"]
up, else $SGPO_VERIFIER_SUCCESS_THRESHOLD's, else 0.5: sgpo's held-out accuracy; = score for a
verifier scoring 0 or 1), "verifier_error", "verifier_timeout" (0.0 or 1.0)}. verl 0.9.1 logs the
reward_extra_info of validation rollouts as metrics (val-aux/<data_source>/verifier_error/mean@N,
trainer/ppo/v1/trainer_base.py _validate), but not that of training rollouts. So that training
errors and timeouts are not lost, each process also appends its cumulative counts to
$SGPO_VERIFIER_STATS_DIR/verifier-<host>-<pid>.jsonl (the launch scripts set it, on storage
every node shares) on every error or timeout and every STATS_EVERY calls; `sgpo flops --run`
sums them per run (verifier_stats_totals).

Which verifier, first match wins:
  1. extra_info["verifier"] (sgpo.verl.export writes the plan's verifier there, with its
     verifier_kwargs, verifier_timeout_s, verifier_isolation, verifier_reward_range and
     success_threshold), when it is one of sgpo's verifiers, SGPO_VERIFIER's or the training
     export's (3.): a row naming any other is refused, since a downloaded data file would
     otherwise choose the code its texts are handed to,
  2. the environment variable SGPO_VERIFIER,
  3. the training export $SGPO_VERIFIER_EXPORT names (the launch sets it to DATA; set it
     empty to turn this off): its rows' verifier with all of those settings, so that rows it
     did not write (a VAL_DATA of your own) are scored and counted as its rows are (nothing
     where DATA is not sgpo's export),
  4. by data_source: "sgpo/addition" -> sgpo.tasks.addition:verify, anything else ->
     sgpo.verifiers:math_verify.
Verifiers run through sgpo.verify.Verifier, exactly as in sGPO: an exception or a timeout scores
0 and is counted (and the first few are logged); a verifier that cannot be imported is an error.
Timeout: the row's own extra_info["verifier_timeout_s"], else $SGPO_VERIFIER_TIMEOUT_S, else
the training export's (3. above), else 5 s.
Isolation: $SGPO_VERIFIER_ISOLATION (auto, inline, process or sandbox) if set; else the row's
extra_info["verifier_isolation"] when it is process or sandbox; else auto.
  sandbox: the worker inside bubblewrap (sGPO's "sandbox": no network, read-only filesystem);
  process: a separate, time- and memory-limited worker process (sGPO's "process");
  auto: in this process on the main thread (SIGALRM timeout, sGPO's "inline"); from any other
      thread, as verl calls it, where SIGALRM cannot interrupt, in the worker process so that
      the timeout still holds;
  inline: always in this process (off the main thread without a timeout).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from sgpo.core.rewards import CORRECT_THRESHOLD, is_correct
from sgpo.verifiers import begun_in_thinking
from sgpo.verify import Verifier

ADDITION_VERIFIER = "sgpo.tasks.addition:verify"
MATH_VERIFIER = "sgpo.verifiers:math_verify"
DATA_SOURCE_VERIFIERS = {"sgpo/addition": ADDITION_VERIFIER}
ISOLATIONS = ("auto", "inline", "process", "sandbox")
DEFAULT_TIMEOUT_S = 5.0
STATS_DIR_ENV = "SGPO_VERIFIER_STATS_DIR"
THINKING_ENV = "SGPO_VERIFIER_THINKING_IN_PROMPT"  # "1": responses begin inside <think>
# the reward from which acc counts a success on rows without extra_info's threshold (scored
# on [0, 1] unless extra_info declares a range: the verifier's own units)
SUCCESS_ENV = "SGPO_VERIFIER_SUCCESS_THRESHOLD"
EXPORT_ENV = "SGPO_VERIFIER_EXPORT"
# what a row of the export carries to be scored (sgpo.verl.export.scoring_info's keys)
SCORING_FIELDS = (
    "verifier",
    "verifier_kwargs",
    "verifier_timeout_s",
    "verifier_isolation",
    "verifier_reward_range",
    "success_threshold",
)
STATS_EVERY = 1000
STAT_FIELDS = ("calls", "errors", "timeouts")

_lock = threading.Lock()
# In the stats file's name beside host and pid: a relaunch that gets the same pid (containers,
# SLURM requeues) writes its own file instead of ending the earlier process's (whose last line
# holds its counts).
_PROCESS_TOKEN = uuid.uuid4().hex[:8]
_verifiers: dict[tuple[str, str, float, str, str], Verifier] = {}


# The verifiers a row may name without being trusted: sgpo's own, which read their two texts
SGPO_VERIFIERS = frozenset(
    {ADDITION_VERIFIER, MATH_VERIFIER}
    | {f"sgpo.verifiers:{name}" for name in ("numeric", "exact_match", "multiple_choice")}
)


def verifier_spec(data_source: str, extra_info: dict | None) -> str:
    """The import path of the verifier for one rollout (see the module docstring). A row's own
    is one sgpo wrote or the launch names (trusted_verifiers): a data file may not pick the
    function its rows' texts are handed to, which runs with the trainer's rights."""
    spec = (extra_info or {}).get("verifier")
    if spec:
        spec = str(spec)
        if spec not in trusted_verifiers():
            raise ValueError(
                f"a row (data_source {data_source!r}) names extra_info['verifier'] {spec!r}, "
                "which neither sgpo's verifiers, SGPO_VERIFIER nor the training export "
                f"${EXPORT_ENV} names; a data file's row may not choose the code it is scored "
                f"with: set SGPO_VERIFIER={spec} if you trust it, or export the data with sgpo"
            )
        return spec
    spec = os.environ.get("SGPO_VERIFIER")
    if spec:
        return spec
    return DATA_SOURCE_VERIFIERS.get(data_source, MATH_VERIFIER)


def trusted_verifiers() -> frozenset[str]:
    """The verifiers a row may name: sgpo's own, $SGPO_VERIFIER, and the training export's
    ($SGPO_VERIFIER_EXPORT, which the launch sets to the data sgpo exported)."""
    export = os.environ.get(EXPORT_ENV)
    named = {
        os.environ.get("SGPO_VERIFIER"),
        export_scoring(export).get("verifier") if export else None,
    }
    return SGPO_VERIFIERS | {spec for spec in named if spec}


def _isolation(requested: str | None) -> str:
    """$SGPO_VERIFIER_ISOLATION exactly; else the row's process or sandbox; else auto. A row's
    "inline" (sGPO's default) counts as auto, so that its timeout holds in verl's threads too."""
    if requested not in (None, "inline", "process", "sandbox"):
        raise ValueError(
            "extra_info['verifier_isolation'] must be inline, process or sandbox, "
            f"got {requested!r}"
        )
    mode = os.environ.get("SGPO_VERIFIER_ISOLATION") or (
        requested if requested in ("process", "sandbox") else "auto"
    )
    if mode not in ISOLATIONS:
        raise ValueError(f"SGPO_VERIFIER_ISOLATION must be one of {ISOLATIONS}, got {mode!r}")
    if mode != "auto":
        return mode
    return "inline" if threading.current_thread() is threading.main_thread() else "process"


def get_verifier(spec: str, extra_info: dict | None = None) -> Verifier:
    """One Verifier per (spec, isolation, timeout, kwargs, reward range) per process, imported
    on first use."""
    info = extra_info or {}
    if spec != info.get("verifier"):  # the row's settings belong to the row's verifier only
        info = {}
    timeout = info.get("verifier_timeout_s") or os.environ.get("SGPO_VERIFIER_TIMEOUT_S")
    kwargs_json = info.get("verifier_kwargs") or "{}"
    range_json = info.get("verifier_reward_range") or "[0.0, 1.0]"
    key = (
        spec,
        _isolation(info.get("verifier_isolation")),
        float(timeout or DEFAULT_TIMEOUT_S),
        kwargs_json,
        range_json,
    )
    verifier = _verifiers.get(key)
    if verifier is None:
        low, high = json.loads(range_json)
        verifier = Verifier(spec, key[2], key[1], json.loads(kwargs_json), (low, high))
        _verifiers[key] = verifier
    return verifier


@functools.cache
def export_scoring(path: str) -> dict:
    """The scoring fields (sgpo.verl.export.scoring_info) of the training export's rows, read
    once per process; {} for a DATA sgpo did not write (its rows name no verifier)."""
    import pyarrow.parquet as pq

    if "extra_info" not in pq.read_schema(path).names:
        return {}
    rows = pq.read_table(path, columns=["extra_info"]).column("extra_info")
    first = rows[0].as_py() if len(rows) else None
    if not isinstance(first, dict) or not first.get("verifier"):
        return {}
    return {key: first.get(key) for key in SCORING_FIELDS}


def row_scoring(extra_info: dict) -> dict:
    """extra_info, with the training export's scoring fields where the row names no verifier
    and SGPO_VERIFIER does not choose one (see the module docstring); its timeout only where
    SGPO_VERIFIER_TIMEOUT_S, which serves rows that carry none, is not set."""
    export = os.environ.get(EXPORT_ENV)
    if extra_info.get("verifier") or os.environ.get("SGPO_VERIFIER") or not export:
        return extra_info
    scoring = export_scoring(export)
    if os.environ.get("SGPO_VERIFIER_TIMEOUT_S"):
        scoring = scoring | {"verifier_timeout_s": None}
    return scoring | {k: v for k, v in extra_info.items() if v is not None}


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    **kwargs: object,
) -> dict[str, float]:
    """Score one rollout in [0, 1] with sGPO's verifier; failures score 0 and are counted."""
    extra_info = row_scoring(extra_info or {})
    query_id = str(extra_info.get("query_id", extra_info.get("index", "?")))
    # The lock serialises calls: Verifier keeps per-process counters and a single worker pipe,
    # and verl calls from many threads at once. Verifiers are fast next to generation.
    # the launch sets it when the model's prompts open its <think> (R1-Distill, QwQ): read the
    # response as begun inside it, as sgpo's profile did (sgpo.models.Policy.answer_text)
    response = begun_in_thinking(str(solution_str), os.environ.get(THINKING_ENV) == "1")
    with _lock:
        verifier = get_verifier(verifier_spec(data_source, extra_info), extra_info)
        errors, timeouts = verifier.stats.errors, verifier.stats.timeouts
        score = verifier.score_one(response, str(ground_truth), query_id)
        error = float(verifier.stats.errors > errors)
        timeout = float(verifier.stats.timeouts > timeouts)
        if error or timeout or verifier.stats.calls % STATS_EVERY == 0:
            _append_stats()
    # acc as sgpo's held-out accuracy counts it: a success from the threshold up (the row's,
    # else the launch's for rows sgpo did not export, VAL_DATA's)
    threshold = extra_info.get("success_threshold")
    if threshold is None and extra_info.get("verifier"):  # sgpo's rows: its default (rescaled)
        threshold = CORRECT_THRESHOLD
    if threshold is None:  # rows scored unscaled, so the variable's units are the verifier's
        threshold = float(os.environ.get(SUCCESS_ENV) or CORRECT_THRESHOLD)
    acc = float(is_correct(score, threshold))
    return {"score": score, "acc": acc, "verifier_error": error, "verifier_timeout": timeout}


def _append_stats() -> None:
    """This process's cumulative counts, one JSON line, to $SGPO_VERIFIER_STATS_DIR (if set)."""
    directory = os.environ.get(STATS_DIR_ENV)
    if not directory:
        return
    name = f"verifier-{socket.gethostname()}-{os.getpid()}-{_PROCESS_TOKEN}.jsonl"
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"time": time.time(), "verifiers": _stats_unlocked()}
    with path.open("a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def verifier_stats_totals(directory: Path) -> dict[str, int]:
    """calls, errors and timeouts summed over every process that logged to directory (each
    process's last line holds its cumulative counts)."""
    totals = {"calls": 0, "errors": 0, "timeouts": 0}
    for path in sorted(Path(directory).glob("verifier-*.jsonl")):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        for counts in json.loads(lines[-1])["verifiers"].values():
            for key in totals:
                totals[key] += int(counts[key])
    return totals


def verifier_stats() -> dict[str, dict[str, int]]:
    """Calls, errors and timeouts so far in this process, per verifier (and isolation)."""
    with _lock:
        return _stats_unlocked()


def _stats_unlocked() -> dict[str, dict[str, int]]:
    # summed over the Verifiers of one spec and isolation (rows may give it other timeouts,
    # kwargs or ranges): one label each, and none's counts written over another's
    stats: dict[str, dict[str, int]] = {}
    for (spec, isolation, *_), v in _verifiers.items():
        counts = stats.setdefault(f"{spec} ({isolation})", dict.fromkeys(STAT_FIELDS, 0))
        for name in STAT_FIELDS:
            counts[name] += getattr(v.stats, name)
    return stats
