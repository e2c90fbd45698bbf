"""A verl run launched by examples/verl/*.sh, described by the file RUN_DIR/run.json.

The launch scripts record, before starting verl, the method (sgpo, grpo or dapo), the plan, the
exported data, the directories verl's metrics and sgpo's verifier counts go to, and the hydra
overrides verl gets (the user's extra ones included, last). That is all `sgpo flops --run` needs to
recompute a run's FLOPs the same way for all three methods: the overrides give the batch sizes
that decide verl's padding (trainer_base._get_required_batch_multiple), the PPO epochs, whether a
reference policy runs and whether DAPO's group filter is on.

Resuming: verl's FileLogger opens its file with "wb" (verl/utils/tracking.py), so each launch logs
to a new file in metrics_dir and every file is read (later files win on repeated steps). A
launch into a RUN_DIR whose run.json has other overrides or other data is refused: its checkpoints
would be resumed with a different dataset or different settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from sgpo.errors import DataError
from sgpo.io import atomic_write_json, read_json, read_table

if TYPE_CHECKING:
    from sgpo.core.flops import ModelShape

RUN_FILE = "run.json"
LOGGER_PATH_OVERRIDE = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"
METHODS = ("sgpo", "grpo", "dapo")


# run.json fields added since the first release (a record without one still resumes)
ADDED_FIELDS = frozenset({"val_data_sha256"})
# Settings a relaunch may change and still resume the run: its length, checkpoints, validation
# cadence, logging and memory (how a step runs, not what it computes). run.json records the
# latest launch's.
RESUMABLE_OVERRIDES = frozenset(
    {
        "trainer.total_epochs",
        "trainer.save_freq",
        "trainer.max_actor_ckpt_to_keep",
        "trainer.max_critic_ckpt_to_keep",
        "trainer.test_freq",
        "trainer.val_before_train",
        "trainer.project_name",
        "trainer.logger",
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        "actor_rollout_ref.model.enable_gradient_checkpointing",
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
    }
)


class RunMismatch(ValueError):
    pass


def override_key(item: str) -> str:
    """The config key a hydra override sets (+key, ++key) or deletes (~key, ~key=value)."""
    return item.partition("=")[0].lstrip("+~")


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """Hydra overrides as {key: value}, later ones winning, without the +/++ prefixes; a ~key
    deletion takes its key out."""
    parsed: dict[str, str] = {}
    for item in overrides:
        _, sep, value = item.partition("=")
        if item.startswith("~"):
            parsed.pop(override_key(item), None)
            continue
        if not sep:
            raise ValueError(f"not a hydra override key=value: {item!r}")
        parsed[override_key(item)] = value
    return parsed


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe_run(
    run_dir: Path,
    method: str,
    overrides: list[str],
    data: Path,
    plan: Path | None = None,
    staged: Path | None = None,
    val_data: Path | None = None,
    staged_val: Path | None = None,
) -> dict:
    """What RUN_DIR/run.json records of a launch; staged: the export about to become data (the
    launch writes it beside data and moves it there only once the run is checked); val_data
    (staged_val likewise): the validation data, whose content is part of the run, since its
    validation curve is read as one."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    run_dir = Path(run_dir)
    # The logger path changes with every launch (one file per launch): not part of the identity.
    identity = [o for o in overrides if override_key(o) != LOGGER_PATH_OVERRIDE]
    run = {
        "method": method,
        "plan": str(plan) if plan else None,
        "data": str(data),
        "data_sha256": _file_digest(staged or data),
        "metrics_dir": str(run_dir / "metrics"),
        "verifier_stats_dir": str(run_dir / "verifier"),
        "overrides": identity,
    }
    if val_data is not None:
        run["val_data_sha256"] = _file_digest(staged_val or val_data)
    return run


def check_same_run(run_dir: Path, run: dict) -> None:
    """Refuse (RunMismatch) a launch into a RUN_DIR whose run.json describes another run."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return
    earlier = json.loads(path.read_text())
    was, now = _defining(earlier.get("overrides") or []), _defining(run["overrides"])
    # a field an older sgpo did not record is not compared, so its runs resume
    changed = [
        k
        for k in sorted(earlier.keys() | run.keys())
        if (was != now if k == "overrides" else earlier.get(k) != run.get(k))
        and not (k in ADDED_FIELDS and k not in earlier)
    ]
    if changed:
        resumable = (
            f" (of the overrides only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change)"
            if "overrides" in changed
            else ""
        )
        raise RunMismatch(
            f"{path} describes an earlier run with other {', '.join(changed)}"
            f"{_overrides_changed(was, now)}; resuming it would continue its checkpoints with "
            f"different settings{resumable}. Use another EXPERIMENT (a new run) or remove "
            f"{run_dir}"
        )


def _defining(overrides: list[str]) -> list[str]:
    """The overrides that make the run what it is: all but RESUMABLE_OVERRIDES'."""
    return [o for o in overrides if override_key(o) not in RESUMABLE_OVERRIDES]


def write_run(run_dir: Path, run: dict) -> Path:
    path = Path(run_dir) / RUN_FILE
    atomic_write_json(path, run)
    return path


def record_run(
    run_dir: Path,
    method: str,
    overrides: list[str],
    data: Path,
    plan: Path | None = None,
    staged: Path | None = None,
    check_only: bool = False,
    val_data: Path | None = None,
    staged_val: Path | None = None,
) -> Path | None:
    """Write RUN_DIR/run.json (its path; None with check_only); refuse (RunMismatch) if it
    describes another run. A staged export (of data, and of val_data: the validation data)
    replaces its file only once the run is checked, so a refused launch leaves the run's data
    as it was (FileExistsError for a file sgpo did not write)."""
    from sgpo.verl.export import install_exports

    run = describe_run(run_dir, method, overrides, data, plan, staged, val_data, staged_val)
    check_same_run(run_dir, run)
    staged_files = {data: staged, val_data: staged_val}
    install_exports({dest: new for dest, new in staged_files.items() if dest and new})
    return None if check_only else write_run(run_dir, run)


def _overrides_changed(earlier: list[str], now: list[str]) -> str:
    """' (key: old -> new; ...)' for the overrides that differ, else the overrides given in one
    launch only (a deletion of a key nothing set: '+ ~key'), '' when none differ."""
    before, after = parse_overrides(earlier), parse_overrides(now)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    said = [f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys]
    said = said or [f"- {o}" for o in earlier if o not in now] + [
        f"+ {o}" for o in now if o not in earlier
    ]
    return " (" + "; ".join(said) + ")" if said else ""


def load_run(path: Path) -> dict:
    """A run.json (or the RUN_DIR holding one), with its overrides parsed under "config"."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file: --run takes a verl run's RUN_DIR (examples/verl/*.sh record "
            f"its {RUN_FILE} at launch); an sgpo train run's costs are in its metrics.jsonl and "
            "summary.json already"
            + (
                f"; {path.parent} is a TRL run's output_dir: sgpo report {path.parent} tables "
                "its costs"
                if (path.parent / "trainer_state.json").is_file()
                or any(path.parent.glob("checkpoint-*/trainer_state.json"))
                else ""
            )
        )
    run = read_json(path)
    overrides = run.get("overrides")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise DataError(
            f"{path}: field 'overrides' is missing or not a list of key=value strings: not the "
            f"{RUN_FILE} examples/verl/*.sh record"
        )
    try:
        run["config"] = parse_overrides(overrides)
    except ValueError as e:
        raise DataError(f"{path}: field 'overrides': {e}") from e
    run["path"] = str(path)
    return run


def _bool(value: str | None) -> bool:
    return str(value).lower() == "true"


def run_settings(run: dict) -> dict:
    """What the FLOPs of a run depend on, from its overrides (verl's defaults otherwise)."""
    c = run["config"]
    if "data.train_batch_size" not in c:
        raise DataError(
            f"{run['path']}: its overrides set no data.train_batch_size, which the rollouts of a "
            "step are counted by (examples/verl/*.sh always set it)"
        )
    train_batch_size = int(c["data.train_batch_size"])
    mini_batch = int(c.get("actor_rollout_ref.actor.ppo_mini_batch_size", train_batch_size))
    rollout_n = int(c.get("actor_rollout_ref.rollout.n", 1))
    dp_size = int(c.get("trainer.nnodes", 1)) * int(c.get("trainer.n_gpus_per_node", 8))
    return {
        "train_batch_size": train_batch_size,
        # actor dp size = all GPUs for FSDP without sequence/tensor parallel training.
        "batch_multiple": math.lcm(dp_size, mini_batch * rollout_n),
        "ppo_epochs": int(c.get("actor_rollout_ref.actor.ppo_epochs", 1)),
        "use_reference": _bool(c.get("actor_rollout_ref.actor.use_kl_loss"))
        or _bool(c.get("algorithm.use_kl_in_reward")),
        "recompute_old_logprob": not _bool(c.get("algorithm.rollout_correction.bypass_mode")),
        "dapo": _bool(c.get("algorithm.filter_groups.enable")),
    }


def run_flops(run: dict, shape: ModelShape | None = None) -> list[dict]:
    """Per-step FLOPs rows of a recorded run (sgpo.verl.flops.verl_run_flops)."""
    from sgpo.core.flops import ModelShape
    from sgpo.verl.export import export_group_sizes, rollouts_per_step
    from sgpo.verl.flops import read_verl_metrics, verl_run_flops

    settings = run_settings(run)
    plan_meta = read_table(Path(run["plan"]))[1] if run.get("plan") else {}
    if shape is None:
        if "shape" not in plan_meta:
            raise DataError(f"{run['path']}: give --model (the plan records no model shape)")
        shape = ModelShape(**plan_meta["shape"])
    data = Path(run["data"])
    recorded = run.get("data_sha256")
    if recorded is not None and data.is_file() and _file_digest(data) != recorded:
        raise DataError(
            f"{run['path']}: {data} is not the data this run was recorded with (its sha256 "
            "differs from run.json's data_sha256: exported again since?): its group sizes "
            "would count another run's rollouts; give the run its own data back, or count "
            "FLOPs with sgpo flops METRICS --data <the run's data>"
        )
    ns = export_group_sizes(data)
    # Only sGPO profiles; the baselines train on the same queries without a profile.
    profile_flops = plan_meta.get("profile_flops", 0.0) if run["method"] == "sgpo" else 0.0
    metrics = sorted(Path(run["metrics_dir"]).glob("*.jsonl"))
    if not metrics:
        raise FileNotFoundError(f"no verl metrics (*.jsonl) in {run['metrics_dir']}")
    return verl_run_flops(
        read_verl_metrics(metrics),
        shape,
        use_reference=settings["use_reference"],
        ppo_epochs=settings["ppo_epochs"],
        rollouts_per_step=rollouts_per_step(ns, settings["train_batch_size"]),
        recompute_old_logprob=settings["recompute_old_logprob"],
        profile_flops=float(profile_flops),
        batch_multiple=settings["batch_multiple"],
        discarded_group_size=max(ns) if settings["dapo"] else None,
    )


def run_summary(run: dict, rows: list[dict]) -> dict:
    """One line of the comparison table: totals per phase, rollouts, padding, last scores."""
    from sgpo.core.flops import PHASES
    from sgpo.verl.reward import verifier_stats_totals

    last = rows[-1]
    validation = {k: v for r in rows for k, v in r.items() if k.startswith("val-core/")}
    rewards = [r["reward_mean"] for r in rows if "reward_mean" in r]
    summary = {
        "method": run["method"],
        "steps": sum(r["rollouts_trained"] > 0 for r in rows),
        "rollouts": sum(r["rollouts"] for r in rows),
        "rollouts_discarded": sum(r["rollouts_discarded"] for r in rows),
        "padding_sequences": sum(r["padding_sequences"] for r in rows),
        "flops_padding": sum(r["flops_padding"] for r in rows),
        "flops_total": last["flops_total_cum"],
        "reward_mean_last": rewards[-1] if rewards else None,
        "validation_last": validation,  # the last value of each val-core metric
        "verifier": verifier_stats_totals(Path(run["verifier_stats_dir"])),
    }
    for phase in PHASES:
        summary[f"flops_{phase}"] = last[f"flops_{phase}_cum"]
    return summary
