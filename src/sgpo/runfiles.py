"""Names of the files and folders in a run directory, in one place: the trainer, its checkpoint
code, compare and the tests all read the same layout."""

from __future__ import annotations

METRICS_FILE = "metrics.jsonl"  # one line per step, plus step 0 = the initial evaluation
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
PLAN_FILE = "plan.parquet"
PROFILE_CHUNKS_DIR = "profile_chunks"  # an unfinished profile's chunks
PROFILE_CONFIG_FILE = "profile_config.yaml"  # the config a profile runs under
HISTORY_FILE = "plan_history.parquet"  # online sgpo: every query's estimate at each re-plan
STATE_DIR = "checkpoint"  # the latest resumable state
OLD_STATE_DIR = ".checkpoint-old"  # the previous checkpoint while a new one is renamed in
STATE_FILE = "state.json"
FINAL_DIR = "final"
MERGED_DIR = "final-merged"
STEP_CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"  # train.report_to: [tensorboard]
# The plan's histograms: sgpo plan draws them, and sgpo report again where a plan is.
PLAN_PLOTS = ("p_hat_hist.png", "group_size_hist.png")
# What sgpo report says of a training run (a new run into the directory makes it stale).
REPORT_FILE = "report.md"
RUN_REPORT_OUTPUTS = (REPORT_FILE, "accuracy_vs_flops.png", "plan_drift.png")
# Everything sgpo report may create (and so later replace) in a run directory.
REPORT_OUTPUTS = (*RUN_REPORT_OUTPUTS, *PLAN_PLOTS)
# What sgpo report writes into a TRL output_dir (sgpo.trl.SGPOTrainer's run).
TRL_REPORT_OUTPUTS = (
    "report.md",
    "trl_cost_curves.png",
    "trl_eval_vs_cost.png",
    "trl_vs_baseline.png",
)
EVAL_FILE = "eval.json"  # sgpo eval --out DIR
# What describes a trained run's model, made stale by a new run into its directory.
RUN_DESCRIPTIONS = (*RUN_REPORT_OUTPUTS, EVAL_FILE)


def step_checkpoint(step: int) -> str:
    return f"{STEP_CHECKPOINTS_DIR}/step-{step:06d}"


def step_checkpoints_to_drop(names: list[str], keep: int) -> list[str]:
    """Of the entries of checkpoints/, the step models beyond the latest `keep` (other names
    are not sgpo's step models and are never among them)."""
    steps = sorted(n for n in names if len(n) == 11 and n.startswith("step-") and n[5:].isdigit())
    return steps[:-keep] if len(steps) > keep else []
