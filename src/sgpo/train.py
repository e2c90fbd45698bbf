"""Stage 3, train: one loop for every method (sgpo, grpo, dapo).

A step: pick queries (curriculum order for sgpo, seeded shuffle for grpo/dapo) until the rollout
budget is filled -> sample and score each query's group, group-relative advantages (rollouts.py)
-> PPO-clipped update over the whole step (update.py) -> metrics line; online sgpo re-plans
(replanning.py) and checkpoints are renamed into place (checkpoint.py). FLOPs are counted per
phase.

Outputs in the run directory (names in runfiles.py): metrics.jsonl (one line per step, plus
step 0 = initial eval), summary.json, checkpoint/ (latest resumable state), checkpoints/step-N/
and final/ (save_pretrained format).
"""

from __future__ import annotations

import contextlib
import copy
import filecmp
import logging
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from sgpo import checkpoint, rundir
from sgpo.config import RunConfig, TrainConfig, dump_config, refuse_float16_training
from sgpo.core.flops import PHASES
from sgpo.core.online import extends_streak
from sgpo.core.rewards import all_equal, is_correct
from sgpo.engine import GenerationStopped, stream_seed
from sgpo.errors import NonFiniteError, TrainingStopped
from sgpo.evaluate import evaluate
from sgpo.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from sgpo.loggers import make_sinks, scalars
from sgpo.metrics import (
    charged_profile_tokens,
    flops_record,
    profile_tokens,
    rollout_record,
    run_summary,
)
from sgpo.models import (
    chat_template_sha256,
    initial_policy,
    is_adapter,
    load_policy,
    model_shape,
    model_source,
)
from sgpo.profile import PROFILE_WALL_KEY, profile_chunk
from sgpo.profile_match import check_chat_template
from sgpo.replanning import Replanner
from sgpo.reuse import load_profile_reuse, reuse_record
from sgpo.rollouts import Rollout, RolloutCollector, group_members, mixed_groups, rollout_flops
from sgpo.runfiles import (
    CONFIG_FILE,
    FINAL_DIR,
    HISTORY_FILE,
    MERGED_DIR,
    METRICS_FILE,
    OLD_STATE_DIR,
    PLAN_FILE,
    PLAN_PLOTS,
    RUN_DESCRIPTIONS,
    STATE_DIR,
    STEP_CHECKPOINTS_DIR,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    step_checkpoint,
    step_checkpoints_to_drop,
)
from sgpo.schedule import ScheduledQuery, build_scheduler
from sgpo.tasks import Query, data_identity, load_run_task, verifier_spec
from sgpo.train_state import (
    check_same_inputs,
    config_differences,
    recorded_config,
    refuse_resume_without_checkpoint,
    restore_trainer_state,
    save_trainer_state,
)
from sgpo.update import PolicyUpdate
from sgpo.validate import check_prompts
from sgpo.verify import verifier_code_sha256
from sgpo.wiring import make_engine, make_verifier, sampling_params

log = logging.getLogger("sgpo.train")


# Below this lr a bfloat16 weight (8 bits of mantissa) rounds most AdamW steps away: an update
# of ~lr moves a weight of magnitude ~1e-2 only from ~1e-4 up.
BFLOAT16_ROUNDED_LR = 1e-5


def warn_of_bfloat16_rounding(config: RunConfig, dtype: torch.dtype) -> None:
    """A full fine-tune in bfloat16 keeps no float32 copy of its weights: at an RL learning
    rate most updates round away, silently."""
    lora = config.model.lora is not None
    if dtype == torch.bfloat16 and not lora and config.train.lr < BFLOAT16_ROUNDED_LR:
        log.warning(
            "model.dtype resolves to bfloat16 and every weight trains (no model.lora): "
            "sgpo train keeps no float32 copy, so at train.lr=%g most updates round away; "
            "train in float32, or train a LoRA adapter",
            config.train.lr,
        )


class Trainer:
    """One run's training loop. run_train is its entry point: it claims and locks run_dir and,
    on a resume, first recovers a checkpoint a kill left half-written (before it reads which
    plan the checkpoint names)."""

    def __init__(
        self, config: RunConfig, run_dir: Path, plan_path: Path | None = None, resume: bool = False
    ) -> None:
        self.config, self.cfg, self.run_dir = config, config.train, run_dir
        refuse_float16_training(config)
        self.task = load_run_task(config)
        self.queries_by_id = {q.query_id: q for q in self.task.train}
        self.initial_model = model_source(config)
        # before the model, which can take minutes to load: a mistyped verifier is named at once
        self.verifier = make_verifier(config, self.task)
        if resume:  # as run_train did: a Trainer resumed directly must recover too
            checkpoint.recover(run_dir)
        self.resuming = resume and checkpoint.has_state(run_dir)
        # A resumed run starts from the checkpoint's weights (plain model or LoRA adapter).
        resumed_model = str(checkpoint.state_model_dir(run_dir)) if self.resuming else None
        self.policy = load_policy(config, path=resumed_model, trainable=True)
        warn_of_bfloat16_rounding(config, self.policy.model.dtype)
        # Dropout (the model's own, or model.lora.dropout) draws from torch's global generator:
        # seeded from the run's seed, so two runs of one config train alike (a resumed run
        # gets the checkpoint's generator state instead)
        torch.manual_seed(stream_seed(config.seed, "train-dropout"))
        check_prompts(self.policy, self.task, config.sampling.max_new_tokens)
        # Config, initial weights and the data (train and eval queries): a resume needs all
        # three unchanged.
        self.fingerprint = rundir.run_fingerprint(
            config.model_dump(mode="json"),
            self.initial_model,
            verifier_code_sha256(verifier_spec(config.task)),
        ) | {"data": data_identity(self.task)}
        # state.json of the checkpoint resumed, checked before the plan is read: a changed
        # setting (the seed, say) is named as itself, not as a plan that does not match
        self.resumed_state = checkpoint.load_state(run_dir) if self.resuming else None
        if self.resumed_state is not None:
            check_same_inputs(self, self.resumed_state)
        # The initial policy, loaded once: KL reference and behaviour policy of reused samples.
        needed = self.cfg.kl_coef > 0 or self.cfg.reuse_profile
        reference = initial_policy(config, self.policy) if needed else None
        self.engine = make_engine(config, self.policy, "train")
        self.shape = model_shape(self.policy.model)
        self.params = sampling_params(config)
        self.threshold = config.task.correct_threshold  # from which a reward is a success
        self.plan_path = plan_path if self.cfg.uses_plan else None
        self.scheduler, plan_rows, plan_meta = build_scheduler(
            config, self.task.train, self.plan_path, self.resuming, task=self.task
        )
        if self.plan_path is not None:  # the prompts' template, which no setting names
            check_chat_template(
                plan_meta,
                chat_template_sha256(self.policy.tokenizer, config.model),
                str(self.plan_path),
            )
        self.reuse = (
            load_profile_reuse(self.plan_path, plan_rows, self.threshold)
            if self.cfg.reuse_profile and self.plan_path is not None
            else None
        )
        self.replanner = (
            Replanner(config, plan_rows, self.queries_by_id, run_dir)
            if plan_rows and config.train.online.replans
            else None
        )
        self.sinks = make_sinks(
            self.cfg.report_to, run_dir, self.cfg.report_project, config.model_dump(mode="json")
        )
        plan = self.plan_path
        self.plan_sha256 = rundir.file_sha256(plan) if plan is not None else None
        rollout_params = replace(self.params, temperature=config.rollout_temperature)
        self.rollouts = RolloutCollector(
            config, self.policy, self.engine, self.verifier, rollout_params, self.reuse
        )
        self.update = PolicyUpdate(
            self.cfg,
            self.policy,
            reference if self.cfg.kl_coef > 0 else None,
            self.shape,
            config.sampling.max_new_tokens,
            behaviour=reference if self.reuse is not None else None,
            temperature=config.rollout_temperature,
        )
        self.step = 0
        # a step trained but stopped before its evaluation (its record, logged on resume)
        self.pending_record: dict | None = None
        profile_flops = float(plan_meta.get("profile_flops") or 0.0)
        self.flops = dict.fromkeys(PHASES, 0.0) | {"profile": profile_flops}
        # Costs in the other currencies users pay: the passes a train-every-rollout trainer
        # would add (zero-advantage rollouts, skipped here) and generated tokens, profile
        # included.
        self.flops_skipped = 0.0
        self.generated_tokens = charged_profile_tokens(plan_rows, plan_meta)
        # the profile's time too (none recorded by an older sgpo): the training loop's from here
        self.profile_wall_s = float(plan_meta.get(PROFILE_WALL_KEY) or 0.0)
        self.wall_s = self.profile_wall_s
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.metrics_path = run_dir / METRICS_FILE

    # ----------------------------------------------------------------- one step
    def next_queries(self, budget: int) -> list[ScheduledQuery]:
        early = self.step < self.cfg.early_group_steps
        group_size = self.cfg.early_group_size if early else None
        if self.replanner is None:
            return self.scheduler.take(budget, group_size)
        return self.replanner.next_queries(self.scheduler, budget, group_size)

    def collect(self) -> tuple[list[Rollout], list[Rollout]]:
        """(all generated rollouts, the step's batch), their generation charged to FLOPs."""
        before = self.verifier.stats.counts()
        generated, batch = self.rollouts.collect(self.step, self.next_queries)
        on = f"step {self.step + 1}'s rollouts"
        self.verifier.stats.stop_if_every_call_failed(self.verifier.spec, before, on)
        for flops in rollout_flops(self.shape, generated):
            self.flops["rollout"] += flops
        return generated, batch

    def train_on(self, batch: list[Rollout]) -> dict:
        """Update on the step's batch. train.drop_equal_groups: its dead groups leave it first
        (never trained, so a train-every-rollout trainer pays nothing for them); the loss
        divides by the kept groups' tokens, or with drop_equal_denominator generated by the
        whole batch's, which makes the update that of the batch without the drop."""
        trained = mixed_groups(batch) if self.cfg.drop_equal_groups else batch
        scope = batch if self.cfg.drop_equal_denominator == "generated" else trained
        return {"batch_rollouts": len(trained)} | self.update.train_on(trained, self.flops, scope)

    def measure(self, queries: list[Query], stream: tuple) -> list[dict]:
        """Profile rows of queries under the current policy (online re-profiling)."""
        k = self.cfg.online.reprofile_k
        rows = profile_chunk(
            queries,
            self.engine,
            self.verifier,
            self.params,
            k,
            stream,
            self.shape,
            self.threshold,
        )
        self.generated_tokens += profile_tokens(rows)
        return rows

    def replan(self) -> dict:
        """Online sgpo: re-profile and re-plan when due; the plan's state for the metrics."""
        if self.replanner is None:
            return {}
        record, profile_flops = self.replanner.after_step(self.step, self.scheduler, self.measure)
        for flops in profile_flops:
            self.flops["profile"] += flops
        return record

    def count_nonfinite(self, skipped: bool) -> None:
        if not skipped:
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        log.warning(
            "step %d: non-finite loss or gradient, update skipped (%d in a row, %d in all)",
            self.step + 1,
            self.nonfinite_in_a_row,
            self.nonfinite_total,
        )

    def train_step(self) -> dict:
        start = time.perf_counter()
        generated, batch = self.collect()
        groups = group_members(generated)
        if self.scheduler.observes_streaks:
            self.scheduler.observe_step(
                [
                    (
                        members[0].query.query_id,
                        extends_streak(
                            [m.reward for m in members], self.cfg.history_streak, self.threshold
                        ),
                    )
                    for members in groups
                ]
            )
        if self.cfg.first_visit_profile:
            profiled_out = self.scheduler.observe_first_visits(
                [
                    (
                        members[0].query.query_id,
                        sum(is_correct(m.reward, self.threshold) for m in members),
                        len(members),
                        not all_equal([m.reward for m in members]),
                    )
                    for members in groups
                ]
            )
            # A query the profile in training drops is not trained on, as a separate profile's
            # plan would not train it (its group would only dilute the step's token-mean).
            batch = [r for r in batch if r.query.query_id not in profiled_out]
        if self.replanner is not None:
            # Reused profile samples are already in the posterior (it starts from the profile).
            self.replanner.observe([r for r in generated if not r.reused])
        lr = self.update.optimizer.param_groups[0]["lr"]  # what this step's update uses
        stats = self.train_on(batch)
        self.flops_skipped += stats.pop("flops_skipped")
        self.count_nonfinite(stats["skipped_update"])
        with warnings.catch_warnings():
            # A step whose groups all had zero advantage takes no optimizer step; the schedule
            # still advances so that lr depends on the step number only.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.update.lr_schedule.step()
        self.step += 1
        record = {
            "step": self.step,
            "epoch": self.scheduler.epoch,
            **rollout_record(generated, self.threshold),
            **reuse_record(generated),  # tokens_generated: fresh rollouts only
            "lr": lr,
            "nonfinite_skips": self.nonfinite_total,
            "history_skipped": self.scheduler.history_skipped,
            "history_explore": self.scheduler.explore,
            "first_visit_dropped": self.scheduler.first_visit_dropped,
            **stats,
            **self.replan(),
        }
        self.generated_tokens += record["tokens_generated"]
        self.wall_s += time.perf_counter() - start
        return record

    def run_eval(self, stop_asked: Callable[[], bool] | None = None) -> dict:
        cfg = self.config.eval
        return evaluate(
            self.engine,
            self.verifier,
            self.task.eval,
            self.params,
            cfg.n_samples,
            cfg.greedy,
            self.config.seed,
            self.threshold,
            stop_asked,
        )

    def evaluated(self, record: dict, stop_asked: Callable[[], bool]) -> dict:
        """record with its step's evaluation. An evaluation takes minutes on a real model, past
        a scheduler's grace period: a stop asked before or during it ends it at the next
        generation batch, and the step is checkpointed with its record pending, evaluated and
        logged when the run resumes (the run's last one too: the final outputs are then
        written by the resume)."""
        try:
            evaluation = self.run_eval(stop_asked)
        except GenerationStopped:
            self.pending_record = record
            self.save_state()
            self.close()
            raise TrainingStopped(self.run_dir, self.step) from None
        self.pending_record = None
        return record | evaluation

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())

    @property
    def total_flops_train_all(self) -> float:
        """What the same updates cost a trainer that trains every rollout (zero-advantage
        ones' backward passes included)."""
        return self.total_flops + self.flops_skipped

    def log(self, record: dict) -> None:
        record = (
            record
            | flops_record(self.flops)
            | {
                "flops_train_all_cum": self.total_flops_train_all,
                "generated_tokens_cum": self.generated_tokens,
                "method": self.cfg.method,
                "wall_s": round(self.wall_s, 3),
                "verifier_errors_cum": self.verifier.stats.errors,
                "verifier_timeouts_cum": self.verifier.stats.timeouts,
            }
        )
        append_jsonl(self.metrics_path, record)
        for sink in self.sinks:
            sink.log(scalars(record), record["step"])

    # ------------------------------------------------------------ checkpointing
    def save_state(self) -> None:
        save_trainer_state(self)

    def save_model(self, name: str) -> Path:
        return checkpoint.save_model(self.run_dir, name, self.policy.model, self.policy.tokenizer)

    def drop_old_step_models(self, keep: int) -> None:
        models = self.run_dir / STEP_CHECKPOINTS_DIR
        for name in step_checkpoints_to_drop([p.name for p in models.iterdir()], keep):
            shutil.rmtree(models / name)

    def save_merged_model(self) -> Path:
        """final-merged/: the LoRA adapter merged into a copy of the base weights (a copy, so
        the trainer's model keeps its adapter; costs one model's memory for a moment)."""
        merged = copy.deepcopy(self.policy.model).merge_and_unload()
        return checkpoint.save_model(self.run_dir, MERGED_DIR, merged, self.policy.tokenizer)

    # ---------------------------------------------------------------- the loop
    def budgets(self) -> list[tuple[str, float, float]]:
        """(setting, spent, cap) for each budget the run is capped by (train.max_total_flops,
        ...)."""
        cfg = self.cfg
        return [
            (name, spent, cap)
            for name, spent, cap in (
                ("max_total_flops", self.total_flops, cfg.max_total_flops),
                (
                    "max_total_flops_train_all",
                    self.total_flops_train_all,
                    cfg.max_total_flops_train_all,
                ),
                ("max_generated_tokens", self.generated_tokens, cfg.max_generated_tokens),
            )
            if cap is not None
        ]

    def warn_of_spent_caps(self) -> None:
        """A budget the profile's cost already spent trains no step: said, not a silent 0-step
        run; and a schedule decaying over train.steps in a run a budget may end first."""
        budgets = self.budgets()
        for name, spent, cap in budgets:
            if spent >= cap:
                log.warning(
                    "train.%s=%g is spent before the first step (%g, the profile's cost "
                    "included): the run trains nothing",
                    name,
                    cap,
                    spent,
                )
        if self.cfg.lr_schedule != "constant" and budgets:
            log.warning(
                "train.lr_schedule=%s decays over train.steps=%d, but train.%s may end the run "
                "before them, at a learning rate not decayed to its end; use constant (sgpo "
                "compare refuses the combination)",
                self.cfg.lr_schedule,
                self.cfg.steps,
                budgets[0][0],
            )

    def finished(self) -> bool:
        replanned_out = self.replanner is not None and self.replanner.exhausted
        return (
            self.step >= self.cfg.steps
            or replanned_out
            or any(spent >= cap for _, spent, cap in self.budgets())
        )

    def start_fresh(self, stop_asked: Callable[[], bool]) -> None:
        """A fresh start (or --overwrite): nothing of an earlier run may be mixed in, nor left
        to describe this one (sgpo report's and sgpo eval's outputs of the earlier run)."""
        listed = rundir.written_by_sgpo(self.run_dir)
        reported = [name for name in RUN_DESCRIPTIONS if name in listed]
        if not (self.run_dir / PLAN_FILE).exists():  # then sgpo report drew them, of the
            reported += [name for name in PLAN_PLOTS if name in listed]  # earlier run's plan
        # a re-plan history or merged model of an earlier run too
        for name in (*TRAIN_OUTPUTS, *reported):
            path = self.run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:  # a file, or a link put there (to a folder too): the link goes, not its target
                path.unlink(missing_ok=True)
        atomic_write_text(self.run_dir / CONFIG_FILE, dump_config(self.config))
        self.evaluate_initial(stop_asked)

    def evaluate_initial(self, stop_asked: Callable[[], bool]) -> None:
        """Step 0, the initial policy's evaluation, logged and checkpointed (the state every
        resume can start from); stopped, step 0 is checkpointed with it pending."""
        self.log(self.evaluated({"step": 0}, stop_asked))
        self.save_state()

    def stop_if_diverged(self, record: dict) -> None:
        if self.nonfinite_in_a_row < self.cfg.max_nonfinite_in_a_row:
            return
        self.log(record)
        self.save_state()
        raise NonFiniteError(
            f"{self.nonfinite_in_a_row} updates in a row had a non-finite loss or "
            f"gradient; stopped at step {self.step}. The last good weights are in "
            f"{self.run_dir / STATE_DIR}; lower train.lr or check the data."
        )

    def train(self) -> dict:
        cfg = self.cfg
        # from before the initial evaluation, which on a real model can take minutes: a stop
        # asked in it ends it early, step 0 checkpointed with it pending, as a later one does
        with stop_requests() as stop_asked:
            if self.resuming:
                restore_trainer_state(self)
                recorded = recorded_config(self.run_dir)
                if recorded is not None:
                    warn_of_a_new_schedule_length(recorded.train.steps, cfg)
                    # what the checkpoint allowed to change (what it refuses it has refused)
                    if changed := config_differences(recorded, self.config):
                        log.warning("%s: resumed with %s", self.run_dir, "; ".join(changed))
                # the settings a resume may change (steps, evaluation, ...), as it runs now
                atomic_write_text(self.run_dir / CONFIG_FILE, dump_config(self.config))
                if not self.finished() or self.pending_record is not None:
                    # trained or evaluated further: a finished run's summary is old
                    (self.run_dir / SUMMARY_FILE).unlink(missing_ok=True)
                else:  # a finished run: its final outputs again (a merged model asked for now)
                    log.warning(
                        "%s: the run is finished already; its final model and summary are "
                        "written again, nothing is trained",
                        self.run_dir,
                    )
                if self.step == 0 and self.pending_record is not None:
                    self.evaluate_initial(stop_asked)  # a stop had ended it: run now
            else:
                # said before the initial evaluation, in which a stop may end the run
                self.warn_of_spent_caps()
                self.start_fresh(stop_asked)
            if stop_asked() and not self.finished():
                self.close()
                raise TrainingStopped(self.run_dir, self.step)
            self.train_steps(stop_asked)
            # inside the stop handler: a stop asked while the final outputs are written waits
            # for them (the last step is checkpointed first), then stops what runs next
            summary = self.finish()
            if stop_asked():
                raise TrainingStopped(self.run_dir, self.step, finished=True)
        return summary

    def train_steps(self, stop_asked: Callable[[], bool]) -> None:
        """Steps until the run is finished, or until a stop is asked (after its step's
        checkpoint)."""
        cfg = self.cfg
        # a run capped by a budget (compare, the demo's baseline) ends when it is spent, mostly
        # well before train.steps: its bar counts steps and shows the budget, not a percentage
        total = None if self.budgets() else cfg.steps
        pending = self.pending_record
        done = self.step - (pending is not None)
        bar = tqdm(total=total, initial=done, desc=f"train ({cfg.method})", unit="step")
        with bar:
            if pending is not None:  # a step stopped before or in its evaluation: evaluated now
                self.end_step(self.evaluated(pending, stop_asked), bar, stop_asked)
            while not self.finished():
                record = self.train_step()
                self.stop_if_diverged(record)
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.finished():
                    record = self.evaluated(record, stop_asked)
                self.end_step(record, bar, stop_asked)

    def end_step(self, record: dict, bar: tqdm, stop_asked: Callable[[], bool]) -> None:
        """Log a trained (and, when due, evaluated) step; checkpoint it when due, and stop
        after it when asked."""
        cfg = self.cfg
        self.log(record)
        caps = self.budgets()
        budget = {"budget": f"{max(s / cap for _, s, cap in caps):.0%}"} if caps else {}
        bar.set_postfix(
            reward=f"{record['reward_mean']:.2f}",
            informative=f"{record['informative_fraction']:.2f}",
            **budget,
        )
        bar.update(1)
        checkpointed = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
        if checkpointed:
            self.save_model(step_checkpoint(self.step))
            self.save_state()
            if cfg.keep_checkpoints:  # after the state: a kill leaves more, not fewer
                self.drop_old_step_models(cfg.keep_checkpoints)
        if stop_asked() and not self.finished():
            if not checkpointed:
                self.save_state()
            self.close()
            raise TrainingStopped(self.run_dir, self.step)

    def finish(self) -> dict:
        self.save_state()  # first: a kill while the final model is written loses no step
        self.save_model(FINAL_DIR)
        summary = self.summary()
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        lora = self.config.model.lora
        if lora is not None and lora.save_merged:
            if is_adapter(self.initial_model):
                # its target modules were never checked against tied weights (add_lora)
                log.warning(
                    "%s: no %s/: the run trained the LoRA adapter it started from, saved as an "
                    "adapter in %s/; merge it with peft's merge_and_unload once its target "
                    "modules are known not to share a tied weight",
                    self.run_dir,
                    MERGED_DIR,
                    FINAL_DIR,
                )
            else:
                self.save_merged_model()
        self.close()
        return summary

    def close(self) -> None:
        """The verifier's worker, and the trackers' runs (they end as the run does)."""
        self.verifier.close()
        for sink in self.sinks:
            sink.close()

    def summary(self) -> dict:
        return {
            "method": self.cfg.method,
            "steps": self.step,
            **run_summary(read_jsonl(self.metrics_path)),
            "total_flops": self.total_flops,
            "flops_by_phase": dict(self.flops),
            "total_flops_train_all": self.total_flops_train_all,
            "generated_tokens": self.generated_tokens,
            "wall_s": round(self.wall_s, 3),
            "profile_wall_s": round(self.profile_wall_s, 3),
            "verifier_errors": self.verifier.stats.errors,
            "verifier_timeouts": self.verifier.stats.timeouts,
            "nonfinite_skips": self.nonfinite_total,
            "model": self.initial_model,
            "task": self.task.source,
            # what `sgpo compare` checks before it reuses the run as this config's result
            "inputs": {
                k: self.fingerprint[k] for k in ("model_sha256", rundir.VERIFIER_CODE_KEY, "data")
            },
            # the plan it trained, by content (a resumed run trains its checkpoint's copy)
            "plan_sha256": self.plan_sha256,
            "seed": self.config.seed,
            "config": self.config.model_dump(mode="json"),
        }


def warn_of_a_new_schedule_length(was: int, cfg: TrainConfig) -> None:
    """A decaying lr schedule spans train.steps: resumed with other steps than the run's `was`,
    its remaining steps follow the new length (the lr jumps there), which the resume says."""
    if cfg.lr_schedule != "constant" and was != cfg.steps:
        log.warning(
            "train.steps %d -> %d with lr_schedule %s: from here the lr follows a schedule over "
            "%d steps (the run so far decayed over %d); a fresh run over %d steps would differ",
            was,
            cfg.steps,
            cfg.lr_schedule,
            cfg.steps,
            was,
            cfg.steps,
        )


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """While training: a first SIGINT (Ctrl-C) or SIGTERM (a scheduler's) asks the loop to stop
    after the step it is in, or in an evaluation at its next generation batch (Trainer.evaluated),
    with a checkpoint; a second stops at once. Yields whether a stop was asked. Signals can only
    be caught in the main thread: elsewhere nothing is."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked: list[str] = []

    def ask(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)
        log.warning(
            "%s: stopping after the step in progress, with a checkpoint to resume from (an "
            "evaluation ends at its next generation batch and runs again on resume; send it "
            "again to stop at once, losing the steps since the last checkpoint)",
            asked[0],
        )

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# Everything sgpo train may create (and so later replace) in a run directory.
TRAIN_OUTPUTS = (
    METRICS_FILE,
    SUMMARY_FILE,
    CONFIG_FILE,
    FINAL_DIR,
    MERGED_DIR,
    STEP_CHECKPOINTS_DIR,
    STATE_DIR,
    OLD_STATE_DIR,
    HISTORY_FILE,
    TENSORBOARD_DIR,
)


def run_train(
    config: RunConfig,
    run_dir: Path,
    plan_path: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    for marker in (SUMMARY_FILE, METRICS_FILE):
        if (run_dir / marker).exists() and not (overwrite or resume):
            raise FileExistsError(f"{run_dir / marker} exists; pass --overwrite or --resume")
    # runs before tensorboard/ was recorded: an older run's own event folder beside its metrics
    with rundir.claimed(
        run_dir,
        TRAIN_OUTPUTS,
        "train",
        adopt=lambda path: path.name == TENSORBOARD_DIR and (run_dir / METRICS_FILE).exists(),
    ):
        if resume:
            checkpoint.recover(run_dir)
            refuse_resume_without_checkpoint(run_dir)
        else:
            checkpoint.remove_leftovers(run_dir)  # of a run killed there before
        if config.train.uses_plan and plan_path is None:
            plan_path = run_dir / PLAN_FILE
            # resumed with the plan it started with (the checkpoint checks it is that one)
            recorded = checkpoint.checkpoint_plan(run_dir) if resume else None
            if recorded is not None and recorded.exists():
                if plan_path.exists() and not filecmp.cmp(plan_path, recorded, shallow=False):
                    log.warning(
                        "%s is not the plan %s was trained with (planned again since?): the "
                        "resume continues with that one, %s; train --overwrite starts a run "
                        "with the new plan",
                        plan_path,
                        run_dir,
                        recorded,
                    )
                plan_path = recorded
            elif resume and not plan_path.exists():
                raise FileNotFoundError(
                    f"{plan_path} not found, and "
                    + (
                        f"the plan {run_dir}'s checkpoint names, {recorded}, no longer exists"
                        if recorded is not None
                        else f"{run_dir} has no checkpoint naming the plan it was started with"
                    )
                    + ": pass that plan (or a copy) with --plan"
                )
        return Trainer(config, run_dir, plan_path, resume).train()
