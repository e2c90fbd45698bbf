"""What a Trainer checkpoints: its resumable state assembled for checkpoint.save_state, restored
(after checking the run's inputs and plan are unchanged) from checkpoint.load_state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sgpo import checkpoint, rundir
from sgpo.errors import DataError
from sgpo.io import read_jsonl
from sgpo.runfiles import FINAL_DIR, METRICS_FILE, STATE_DIR, STEP_CHECKPOINTS_DIR, SUMMARY_FILE

if TYPE_CHECKING:
    from sgpo.train import Trainer


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
        "plan": str(trainer.plan_path.resolve()) if trainer.plan_path is not None else None,
        "plan_sha256": trainer.plan_sha256,
        "fingerprint": trainer.fingerprint,
    }
    checkpoint.save_state(trainer.run_dir, policy.model, policy.tokenizer, blobs, state)


def restore_trainer_state(trainer: Trainer) -> None:
    state, blobs = checkpoint.load_state(trainer.run_dir)
    rundir.check_same_inputs(
        trainer.run_dir / STATE_DIR, state.get("fingerprint"), trainer.fingerprint
    )
    if state.get("plan_sha256") not in (None, trainer.plan_sha256):
        raise DataError(
            f"{trainer.plan_path}: not the plan this run was trained with "
            f"({state.get('plan')}, changed since the checkpoint); resume with that plan "
            "or start over with --overwrite"
        )
    trainer.update.optimizer.load_state_dict(blobs["optimizer"])
    trainer.update.lr_schedule.load_state_dict(blobs["lr_schedule"])
    checkpoint.restore_rng_state(blobs)
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
    for count in ("calls", "errors", "timeouts"):
        setattr(trainer.verifier.stats, count, state["verifier"][count])
    checkpoint.truncate_metrics(trainer.metrics_path, state["metrics_lines"], trainer.step)


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
