"""What a Trainer checkpoints: its resumable state assembled for checkpoint.save_state, restored
(after checking the run's inputs and plan are unchanged) from checkpoint.load_state."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from sgpo import checkpoint, rundir
from sgpo.config import RECORDED, RunConfig, dump_config
from sgpo.errors import ConfigError, DataError
from sgpo.io import read_jsonl
from sgpo.runfiles import (
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    STATE_DIR,
    STEP_CHECKPOINTS_DIR,
    SUMMARY_FILE,
)
from sgpo.tasks import TaskData

if TYPE_CHECKING:
    from sgpo.train import Trainer

log = logging.getLogger("sgpo.train")


def save_trainer_state(trainer: Trainer) -> None:
    update, policy = trainer.update, trainer.policy
    blobs = {
        "optimizer": update.optimizer.state_dict(),
        "lr_schedule": update.lr_schedule.state_dict(),
        **checkpoint.rng_state(),
    }
    state = {
        "step": trainer.step,
        "scheduler": trainer.scheduler.state(),
        "planner": trainer.replanner.state() if trainer.replanner is not None else None,
        "flops": trainer.flops,
        "reuse": trainer.reuse.state() if trainer.reuse is not None else None,
        "flops_skipped": trainer.flops_skipped,
        "generated_tokens": trainer.generated_tokens,
        "wall_s": trainer.wall_s,
        "nonfinite_in_a_row": trainer.nonfinite_in_a_row,
        "nonfinite_total": trainer.nonfinite_total,
        "verifier": {
            "calls": trainer.verifier.stats.calls,
            "errors": trainer.verifier.stats.errors,
            "timeouts": trainer.verifier.stats.timeouts,
        },
        "metrics_lines": len(read_jsonl(trainer.metrics_path)),
        "pending_record": trainer.pending_record,
        "plan": str(trainer.plan_path.resolve()) if trainer.plan_path is not None else None,
        "plan_sha256": trainer.plan_sha256,
        "fingerprint": trainer.fingerprint,
    }
    checkpoint.save_state(
        trainer.run_dir, policy.model, policy.tokenizer, blobs, state, trainer.plan_path
    )


def restore_trainer_state(trainer: Trainer) -> None:
    """The checkpoint the trainer read (and checked against its inputs) when it started."""
    state, blobs = trainer.resumed_state, checkpoint.load_state_blobs(trainer.run_dir)
    if state.get("plan_sha256") not in (None, trainer.plan_sha256):
        started = state.get("plan")
        here = started == str(trainer.plan_path.resolve())
        how = (  # with a copy, --plan named another plan: the copy is what a plain resume takes
            "resume without --plan (the checkpoint keeps a copy of the plan it started with)"
            if checkpoint.checkpoint_plan_copy(trainer.run_dir) is not None
            else "resume with that plan as it was"
        )
        raise DataError(
            f"{trainer.plan_path}: not the plan this run was trained with ({started}"
            f"{', changed since the checkpoint' if here else ''}); {how} or start over with "
            "--overwrite"
        )
    trainer.update.optimizer.load_state_dict(blobs["optimizer"])
    trainer.update.lr_schedule.load_state_dict(blobs["lr_schedule"])
    with warnings.catch_warnings():  # get_lr outside step(): the lr at the step resumed
        warnings.simplefilter("ignore", UserWarning)
        resumed_lrs = trainer.update.lr_schedule.get_lr()
    # The optimizer holds the lr the checkpoint's schedule set, whose length train.steps may
    # have changed since (cosine ends at 0): the next step takes this run's schedule's value.
    for group, lr in zip(trainer.update.optimizer.param_groups, resumed_lrs, strict=True):
        group["lr"] = lr
    checkpoint.restore_rng_state(blobs)
    if state["step"] > trainer.cfg.steps:
        raise ConfigError(
            f"{trainer.run_dir}: the checkpoint is at step {state['step']}, past train.steps "
            f"{trainer.cfg.steps}; resume with train.steps >= {state['step']}"
        )
    trainer.step = state["step"]
    trainer.scheduler.restore(state["scheduler"], trainer.queries_by_id)
    if trainer.replanner is not None:
        trainer.replanner.restore(state["planner"], trainer.step)
    trainer.flops = state["flops"]
    if trainer.reuse is not None:
        trainer.reuse.restore(state["reuse"])
    trainer.flops_skipped = state["flops_skipped"]
    trainer.generated_tokens = state["generated_tokens"]
    trainer.wall_s = state["wall_s"]
    trainer.nonfinite_in_a_row = state["nonfinite_in_a_row"]
    trainer.nonfinite_total = state["nonfinite_total"]
    trainer.pending_record = state.get("pending_record")  # (an older sgpo's has none)
    for count in ("calls", "errors", "timeouts"):
        setattr(trainer.verifier.stats, count, state["verifier"][count])
    dropped = checkpoint.truncate_metrics(
        trainer.metrics_path, state["metrics_lines"], trainer.step
    )
    steps = (
        "the step logged after it runs"
        if dropped == 1
        else f"the {dropped} steps logged after it run"
    )
    again = f"; {steps} again" if dropped else ""
    if dropped and not trainer.cfg.checkpoint_every:
        again += " (train.checkpoint_every is 0: only the initial state was checkpointed)"
    budgets = trainer.budgets()
    # a run capped by a budget (compare's, the demo's baseline) has train.steps as a far bound
    length = (
        f"of at most {trainer.cfg.steps}, train.{budgets[0][0]} ending it"
        if budgets
        else f"of {trainer.cfg.steps}"
    )
    log.warning(
        "%s: resuming from its checkpoint at step %d %s%s",
        trainer.run_dir,
        trainer.step,
        length,
        again,
    )


def refuse_resume_without_checkpoint(run_dir: Path) -> None:
    """A resume continues from the checkpoint; without one it would start over and replace the
    run's results, so it stops instead (a run killed before writing any result just starts)."""
    if checkpoint.has_state(run_dir):
        return
    results = [
        name
        for name in (SUMMARY_FILE, FINAL_DIR, STEP_CHECKPOINTS_DIR)
        if (run_dir / name).exists()
    ]
    if any(r["step"] > 0 for r in read_jsonl(run_dir / METRICS_FILE)):
        results.append(METRICS_FILE)  # trained steps (step 0 alone is the initial evaluation)
    if results:
        raise DataError(
            f"{run_dir / STATE_DIR} not found: nothing to resume from, and {run_dir} holds "
            f"results ({', '.join(results)}) that starting over would replace; start over "
            "with --overwrite instead of --resume"
        )
    log.warning("%s: no checkpoint there yet: the run starts at step 0", run_dir)


def check_same_inputs(trainer: Trainer, state: dict) -> None:
    """Refuse to resume a checkpoint made from another config, model or data. A checkpoint
    written before sgpo recorded the data's identity is resumed with a warning (its data cannot
    be compared, only its schedule's query ids); the next checkpoint records the data."""
    where = trainer.run_dir / STATE_DIR
    recorded, current = state.get("fingerprint"), trainer.fingerprint
    if not isinstance(recorded, dict):
        rundir.check_same_inputs(where, recorded, current)  # refuses: nothing recorded
        return
    rundir.check_same_inputs(where, _without_data(recorded), _without_data(current))
    if "data" in recorded:
        _check_same_data(trainer, where, recorded["data"])
        return
    log.warning(
        "%s was written by an sgpo that did not record the data's identity: a change "
        "to the train or eval data since then cannot be detected on this resume",
        where,
    )
    _check_known_queries(trainer, where, state)


def _without_data(fingerprint: dict) -> dict:
    return {k: v for k, v in fingerprint.items() if k != "data"}


def data_changes(task: TaskData, recorded: dict, current: dict) -> list[str]:
    """How task's queries (current: their data_identity) differ from the data_identity
    recorded with a run: per split that changed, its file and the rows and sha256 before and
    now."""
    changed = []
    for split, label in (("train", task.train_label), ("eval", task.eval_label)):
        old, new = recorded.get(split) or {}, current[split]
        if old != new:
            changed.append(
                f"the {split} data ({label}) changed: {old.get('rows')} rows, sha256 "
                f"{str(old.get('sha256'))[:12]} -> {new['rows']} rows, sha256 "
                f"{new['sha256'][:12]}"
            )
    return changed


def _check_same_data(trainer: Trainer, where: Path, recorded: dict) -> None:
    """Refuse to resume a checkpoint trained or evaluated on other queries, naming the split
    and its file."""
    changed = data_changes(trainer.task, recorded, trainer.fingerprint["data"])
    if changed:
        raise DataError(
            f"{where}: made with other data than this resume's: {'; '.join(changed)}. "
            "Resume with the data the run started with, or start over with --overwrite"
        )


def _check_known_queries(trainer: Trainer, where: Path, state: dict) -> None:
    """For a checkpoint that records no data identity: its schedule must at least name only
    queries the train data still has."""
    scheduler = state.get("scheduler") or {}
    named = {q for q, _ in scheduler.get("plan", [])} | set(scheduler.get("remaining", []))
    missing = sorted(named - trainer.queries_by_id.keys())
    if missing:
        raise DataError(
            f"{where}: the checkpoint's schedule names {len(missing)} query ids that are "
            f"not in the train data ({trainer.task.train_label}), e.g. {missing[:3]}: the "
            "data changed since the checkpoint. Resume with the data the run started "
            "with, or start over with --overwrite"
        )


def recorded_config(run_dir: Path) -> RunConfig | None:
    """The config the run in run_dir was trained with (its config.yaml, read through this
    sgpo's config as it trained, so settings added since count at their defaults); None when
    that file is missing or not a readable config."""
    try:
        tree = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        return RunConfig.model_validate(tree, context=RECORDED)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError):
        return None


def config_changes(config: RunConfig, run_dir: Path) -> list[str] | None:
    """'key: old -> new' for each setting in which config differs from what the run in run_dir
    was trained with (recorded_config); None when that is not readable."""
    recorded = recorded_config(run_dir)
    return None if recorded is None else config_differences(recorded, config)


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """'key: old -> new' for each setting that differs, through YAML both ways, so that only a
    difference in value counts, not one in type."""
    return rundir.changes(yaml.safe_load(dump_config(old)), yaml.safe_load(dump_config(new)))
