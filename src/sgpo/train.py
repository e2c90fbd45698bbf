"""Stage 3, train: one loop for every method (sgpo, grpo, dapo).

A step: pick queries (curriculum order for sgpo, seeded shuffle for grpo/dapo) until the rollout
budget is filled -> sample each query's group -> verifier rewards -> group-relative advantages
(groups of any size) -> PPO-clipped loss against the rollout policy's log-probs, aggregated over
the whole step -> AdamW step. Rollouts whose advantage is zero skip the backward pass (exact:
their loss term is zero; with a KL penalty they are kept). FLOPs are counted per phase.

Outputs in the run directory: metrics.jsonl (one line per step, plus step 0 = initial eval),
summary.json, checkpoint/ (latest resumable state), checkpoints/step-N/ and final/
(save_pretrained format).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, get_scheduler

from sgpo.config import RunConfig, dump_config
from sgpo.core.advantages import (
    aggregate_loss,
    clipped_policy_loss,
    group_advantages,
    informative_groups,
)
from sgpo.core.flops import PHASES, inference_flops, logprob_flops, train_flops
from sgpo.engine import Completion, TransformersEngine, stream_seed
from sgpo.evaluate import evaluate
from sgpo.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    read_table,
    write_table,
)
from sgpo.loggers import make_sinks, scalars
from sgpo.models import Policy, load_policy, model_shape, model_source
from sgpo.plan import check_profile_matches, kept_in_order
from sgpo.profile import make_verifier, profile_chunk, sampling_params
from sgpo.schedule import OnlinePlanner, QueryScheduler, ScheduledQuery
from sgpo.tasks import DataError, Query, load_task

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
STATE_DIR = "checkpoint"
HISTORY_FILE = "plan_history.parquet"  # online sgpo: every query's estimate at each re-plan
OLD_STATE_DIR = ".checkpoint-old"  # the previous checkpoint while a new one is renamed in

log = logging.getLogger("sgpo.train")


class NonFiniteError(RuntimeError):
    pass


@dataclass
class Rollout:
    query: Query
    group: int
    completion: Completion
    reward: float = 0.0
    advantage: float = 0.0


def build_scheduler(
    config: RunConfig, train_queries: list[Query], plan_path: Path | None
) -> tuple[QueryScheduler, list[dict]]:
    """The step scheduler, and the plan's rows (all of them, kept or not) for sgpo."""
    method = config.train.method
    if method == "sgpo":
        if plan_path is None or not plan_path.exists():
            raise FileNotFoundError(
                f"method sgpo needs a plan: {plan_path} not found (run sgpo plan)"
            )
        rows, meta = read_table(plan_path)
        check_profile_matches(meta, config, str(plan_path), model_source(config))
        by_id = {q.query_id: q for q in train_queries}
        scheduled = []
        for row_index, r in enumerate(kept_in_order(rows)):
            if r["query_id"] not in by_id:
                raise DataError(
                    f"{plan_path}: row {row_index}: field 'query_id' "
                    f"{r['query_id']!r} is not in the task's training queries"
                )
            scheduled.append(ScheduledQuery(by_id[r["query_id"]], int(r["group_size"])))
        return QueryScheduler(scheduled, shuffle=False, seed=config.seed), rows
    g = config.train.group_size
    scheduler = QueryScheduler(
        [ScheduledQuery(q, g) for q in train_queries], shuffle=True, seed=config.seed
    )
    return scheduler, []


def response_logprobs(policy: Policy, rollouts: list[Rollout]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each rollout's response tokens under policy.model: ([B, T], mask [B, T])."""
    pad = policy.tokenizer.pad_token_id
    seqs = [r.completion.prompt_ids + r.completion.response_ids for r in rollouts]
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=policy.device)
    attention = torch.tensor(
        [[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=policy.device
    )
    logits = policy.model(input_ids=input_ids, attention_mask=attention).logits.float()
    token_logprobs = (
        torch.log_softmax(logits[:, :-1], dim=-1)
        .gather(-1, input_ids[:, 1:].unsqueeze(-1))
        .squeeze(-1)
    )  # [B, width-1]: log p(token t+1 | tokens <= t)
    prompt_len = torch.tensor(
        [len(r.completion.prompt_ids) for r in rollouts], device=policy.device
    )
    resp_len = torch.tensor(
        [len(r.completion.response_ids) for r in rollouts], device=policy.device
    )
    steps = torch.arange(int(resp_len.max()), device=policy.device)
    positions = (prompt_len.unsqueeze(1) - 1 + steps).clamp(max=width - 2)
    mask = (steps.unsqueeze(0) < resp_len.unsqueeze(1)).float()
    return token_logprobs.gather(1, positions) * mask, mask


class Trainer:
    def __init__(
        self, config: RunConfig, run_dir: Path, plan_path: Path | None = None, resume: bool = False
    ) -> None:
        self.config = config
        self.cfg = config.train
        self.run_dir = run_dir
        self.task = load_task(config.task, config.seed)
        self.initial_model = model_source(config)
        state_dir = run_dir / STATE_DIR
        if resume:
            recover_checkpoint(run_dir)
        self.resuming = resume and (state_dir / "state.json").exists()
        # A resumed run starts from the checkpoint's weights (plain model or LoRA adapter).
        self.policy = load_policy(
            config, path=str(state_dir / "model") if self.resuming else None, trainable=True
        )
        self.reference = load_policy(config) if self.cfg.kl_coef > 0 else None
        self.engine = TransformersEngine(self.policy, config.sampling.batch_size)
        self.verifier = make_verifier(config, self.task)
        self.shape = model_shape(self.policy.model)
        self.params = sampling_params(config)
        self.scheduler, plan_rows = build_scheduler(config, self.task.train, plan_path)
        self.queries_by_id = {q.query_id: q for q in self.task.train}
        online = self.cfg.online
        self.planner: OnlinePlanner | None = None
        if plan_rows and (
            online.reestimate or online.allocation == "knapsack" or online.reprofile_every
        ):
            from sgpo.plan import plan_rule

            self.planner = OnlinePlanner(
                plan_rows,
                plan_rule(config),
                online.decay,
                (online.prior_alpha, online.prior_beta),
                config.seed,
            )
        self.plan_history: list[dict] = []
        self.sinks = make_sinks(
            self.cfg.report_to, run_dir, self.cfg.report_project, config.model_dump(mode="json")
        )
        self.plan_path = plan_path if config.train.method == "sgpo" else None
        self.plan_sha256 = file_sha256(plan_path) if self.plan_path is not None else None
        trainable = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=self.cfg.lr, betas=self.cfg.adam_betas, weight_decay=self.cfg.weight_decay
        )
        self.lr_schedule = get_scheduler(
            self.cfg.lr_schedule if self.cfg.lr_schedule != "constant" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=self.cfg.warmup_steps,
            num_training_steps=self.cfg.steps,
        )
        self.step = 0
        self.flops = dict.fromkeys(PHASES, 0.0)
        if self.cfg.method == "sgpo":
            # The profiling pass is always charged to sGPO.
            self.flops["profile"] = float(read_table(plan_path)[1]["profile_flops"])  # type: ignore[arg-type]
        self.wall_s = 0.0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.metrics_path = run_dir / METRICS_FILE

    # ----------------------------------------------------------------- one step
    def generate_groups(self, scheduled: list[ScheduledQuery], round_index: int) -> list[Rollout]:
        prompts, seeds, owners = [], [], []
        for gi, sq in enumerate(scheduled):
            rendered = self.policy.render(sq.query.prompt)
            for j in range(sq.group_size):
                prompts.append(rendered)
                seeds.append(
                    stream_seed(
                        self.config.seed, "rollout", self.step, round_index, sq.query.query_id, j
                    )
                )
                owners.append(gi)
        completions = self.engine.generate(prompts, seeds, self.params)
        rollouts = [
            Rollout(scheduled[g].query, g, c) for g, c in zip(owners, completions, strict=True)
        ]
        rewards = self.verifier.score(
            [r.completion.text for r in rollouts],
            [r.query.answer for r in rollouts],
            [r.query.query_id for r in rollouts],
        )
        advantages = group_advantages(rewards, owners, self.cfg.normalize_std)
        for r, reward, adv in zip(rollouts, rewards, advantages, strict=True):
            r.reward, r.advantage = reward, adv
            self.flops["rollout"] += inference_flops(
                self.shape, len(r.completion.prompt_ids), len(r.completion.response_ids)
            )
        return rollouts

    def next_queries(self) -> list[ScheduledQuery]:
        """The step's queries: the plan's next ones, or with knapsack allocation the best
        re-sized subset of a wider window (the rest of the window is skipped this epoch)."""
        budget = self.cfg.rollout_budget
        if self.planner is None or self.cfg.online.allocation != "knapsack":
            return self.scheduler.take(budget)
        window = self.scheduler.peek(round(budget * self.cfg.online.allocation_window))
        self.scheduler.skip({s.query.query_id for s in window})
        chosen = self.planner.allocate(window, budget)
        return chosen or window[:1]

    def observe(self, rollouts: list[Rollout]) -> None:
        """Every training group is a fresh measurement of its query's success rate."""
        if self.planner is None:
            return
        groups: dict[int, list[Rollout]] = {}
        for r in rollouts:
            groups.setdefault(r.group, []).append(r)
        for members in groups.values():
            wins = sum(m.reward >= 0.5 for m in members)
            self.planner.observe(members[0].query.query_id, wins, len(members) - wins)

    def reprofile(self) -> None:
        """Re-measure a seeded sample of dropped queries with the current policy."""
        online = self.cfg.online
        dropped = self.planner.dropped()  # type: ignore[union-attr]
        rng = random.Random(f"{self.config.seed}/reprofile/{self.step}")
        sample = rng.sample(dropped, min(online.reprofile_sample, len(dropped)))
        rows = profile_chunk(
            [self.queries_by_id[q] for q in sample],
            self.engine,
            self.verifier,
            self.params,
            online.reprofile_k,
            (self.config.seed, "reprofile", self.step),
            self.shape,
        )
        for row in rows:
            self.planner.observe(row["query_id"], row["n_correct"], row["k"] - row["n_correct"])  # type: ignore[union-attr]
            self.flops["profile"] += row["flops"]

    def maybe_replan(self) -> dict:
        """Re-profile and re-plan when due; returns the plan's state for the metrics."""
        if self.planner is None:
            return {}
        online = self.cfg.online
        reprofile_due = online.reprofile_every and self.step % online.reprofile_every == 0
        if reprofile_due:
            self.reprofile()
        if reprofile_due or (online.reestimate and self.step % online.replan_every == 0):
            self.scheduler.update_plan(self.planner.replan(self.queries_by_id))
            self.plan_history += self.planner.history_rows(self.step)
            write_table(self.run_dir / HISTORY_FILE, self.plan_history, {"step": self.step})
        kept = [p for p in self.planner.current.values() if p.kept]
        return {
            "plan_kept": len(kept),
            "plan_p_mean": float(np.mean([self.planner.posteriors[p.query_id].mean for p in kept])),
            "plan_group_size_mean": float(np.mean([p.group_size for p in kept])),
        }

    def collect(self) -> tuple[list[Rollout], list[Rollout]]:
        """(all generated rollouts, the step's batch). dapo over-samples and keeps only groups
        whose rewards differ, refilling until the budget is full or its rounds run out."""
        if self.cfg.method != "dapo":
            rollouts = self.generate_groups(self.next_queries(), 0)
            return rollouts, rollouts
        generated: list[Rollout] = []
        batch: list[Rollout] = []
        for round_index in range(self.cfg.dapo_max_rounds):
            rollouts = self.generate_groups(
                self.scheduler.take(self.cfg.rollout_budget), round_index
            )
            generated += rollouts
            groups: dict[int, list[Rollout]] = {}
            for r in rollouts:
                groups.setdefault(r.group, []).append(r)
            for members in groups.values():
                if len(batch) + len(members) > self.cfg.rollout_budget:
                    break
                if any(m.advantage != 0.0 for m in members):
                    batch += members
            if len(batch) + self.cfg.group_size > self.cfg.rollout_budget:
                break
        return generated, batch

    def train_on(self, batch: list[Rollout]) -> dict:
        """PPO-clipped update(s) on the batch; returns loss and grad-norm stats."""
        cfg = self.cfg
        total_sequences = len(batch)
        total_tokens = sum(len(r.completion.response_ids) for r in batch)
        norm_length = self.config.sampling.max_new_tokens
        # Zero advantage and no KL -> the loss term is exactly zero: skip the backward pass.
        trained = [r for r in batch if r.advantage != 0.0 or cfg.kl_coef > 0]
        if not trained:
            return {"loss": 0.0, "grad_norm": 0.0, "trained_rollouts": 0, "skipped_update": False}
        micro = [
            trained[i : i + cfg.micro_batch_size]
            for i in range(0, len(trained), cfg.micro_batch_size)
        ]
        old_logprobs: list[torch.Tensor | None] = [None] * len(micro)
        ref_logprobs: list[torch.Tensor | None] = [None] * len(micro)
        with torch.no_grad():
            for i, mb in enumerate(micro):
                tokens = [
                    (len(r.completion.prompt_ids), len(r.completion.response_ids)) for r in mb
                ]
                if cfg.ppo_epochs > 1:  # with one epoch the rollout policy is the current one
                    old_logprobs[i] = response_logprobs(self.policy, mb)[0]
                    self.flops["logprob"] += sum(logprob_flops(self.shape, p, n) for p, n in tokens)
                if self.reference is not None:
                    ref_logprobs[i] = response_logprobs(self.reference, mb)[0]
                    self.flops["logprob"] += sum(logprob_flops(self.shape, p, n) for p, n in tokens)
        losses, norms, skipped = [], [], False
        self.policy.model.train()
        for _ in range(cfg.ppo_epochs):
            step_loss = 0.0
            for i, mb in enumerate(micro):
                logprobs, mask = response_logprobs(self.policy, mb)
                old = old_logprobs[i] if old_logprobs[i] is not None else logprobs.detach()
                adv = torch.tensor([r.advantage for r in mb], device=logprobs.device)
                token_loss = clipped_policy_loss(
                    logprobs, old, adv, mask, cfg.clip_low, cfg.clip_high
                )
                if ref_logprobs[i] is not None:
                    log_ratio = ref_logprobs[i] - logprobs
                    token_loss = (
                        token_loss + cfg.kl_coef * (torch.exp(log_ratio) - log_ratio - 1) * mask
                    )
                loss = aggregate_loss(
                    token_loss,
                    mask,
                    cfg.loss_aggregation,
                    total_tokens,
                    total_sequences,
                    norm_length,
                )
                loss.backward()
                step_loss += loss.item()
                self.flops["train"] += sum(
                    train_flops(
                        self.shape, len(r.completion.prompt_ids), len(r.completion.response_ids)
                    )
                    for r in mb
                )
            params = [p for p in self.policy.model.parameters() if p.requires_grad]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            if not (np.isfinite(step_loss) and np.isfinite(grad_norm)):
                self.optimizer.zero_grad(set_to_none=True)
                skipped = True
                break
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            norms.append(grad_norm)
        return {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "grad_norm": float(np.mean(norms)) if norms else float("nan"),
            "trained_rollouts": len(trained),
            "skipped_update": skipped,
        }

    def run_eval(self) -> dict:
        cfg = self.config.eval
        return evaluate(
            self.engine,
            self.verifier,
            self.task.eval,
            self.params,
            cfg.n_samples,
            cfg.greedy,
            self.config.seed,
        )

    def train_step(self) -> dict:
        start = time.perf_counter()
        generated, batch = self.collect()
        self.observe(generated)
        stats = self.train_on(batch)
        if stats["skipped_update"]:
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            log.warning(
                "step %d: non-finite loss or gradient, update skipped (%d in a row, %d in all)",
                self.step + 1,
                self.nonfinite_in_a_row,
                self.nonfinite_total,
            )
        else:
            self.nonfinite_in_a_row = 0
        with warnings.catch_warnings():
            # A step whose groups all had zero advantage takes no optimizer step; the schedule
            # still advances so that lr depends on the step number only.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.lr_schedule.step()
        self.step += 1
        # dapo's rounds reuse group indices: a group is (round's index, query)
        keys: dict[tuple[int, str], int] = {}
        group_of = [keys.setdefault((r.group, r.query.query_id), len(keys)) for r in generated]
        sizes = [group_of.count(g) for g in range(len(keys))]
        live = informative_groups([r.advantage for r in generated], group_of)
        informative = sum(g in live for g in group_of)
        record = {
            "step": self.step,
            "epoch": self.scheduler.epoch,
            "queries": len(keys),
            "rollouts": len(generated),
            "batch_rollouts": len(batch),
            "reward_mean": float(np.mean([r.reward for r in generated])),
            "informative_fraction": informative / len(generated),
            "group_size_mean": float(np.mean(sizes)),
            "group_size_min": min(sizes),
            "group_size_max": max(sizes),
            "response_tokens_mean": float(
                np.mean([len(r.completion.response_ids) for r in generated])
            ),
            "tokens_generated": sum(len(r.completion.response_ids) for r in generated),
            "lr": self.lr_schedule.get_last_lr()[0],
            "nonfinite_skips": self.nonfinite_total,
            **stats,
            **self.maybe_replan(),
        }
        self.wall_s += time.perf_counter() - start
        return record

    # ------------------------------------------------------------ bookkeeping
    def flops_record(self) -> dict:
        record = {f"flops_{phase}_cum": self.flops[phase] for phase in PHASES}
        record["flops_total_cum"] = sum(self.flops.values())
        return record

    def log(self, record: dict) -> None:
        record = (
            record
            | self.flops_record()
            | {
                "method": self.cfg.method,
                "wall_s": round(self.wall_s, 3),
                "verifier_errors": self.verifier.stats.errors,
                "verifier_timeouts": self.verifier.stats.timeouts,
            }
        )
        append_jsonl(self.metrics_path, record)
        for sink in self.sinks:
            sink.log(scalars(record), record["step"])

    def save_state(self) -> None:
        """Resumable state, written to a temp dir and renamed over the previous one."""
        staging = Path(tempfile.mkdtemp(dir=self.run_dir, prefix=".checkpoint-"))
        self.policy.model.save_pretrained(staging / "model")
        self.policy.tokenizer.save_pretrained(staging / "model")
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "lr_schedule": self.lr_schedule.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "numpy_rng": np.random.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            staging / "trainer.pt",
        )
        state = {
            "step": self.step,
            "scheduler": self.scheduler.state(),
            "planner": self.planner.state() if self.planner is not None else None,
            "flops": self.flops,
            "wall_s": self.wall_s,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "verifier": {
                "calls": self.verifier.stats.calls,
                "errors": self.verifier.stats.errors,
                "timeouts": self.verifier.stats.timeouts,
            },
            "metrics_lines": len(read_jsonl(self.metrics_path)),
            "plan": str(self.plan_path.resolve()) if self.plan_path is not None else None,
            "plan_sha256": self.plan_sha256,
        }
        (staging / "state.json").write_text(json.dumps(state, indent=2))
        target = self.run_dir / STATE_DIR
        old = self.run_dir / OLD_STATE_DIR
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def save_model(self, name: str, model: PreTrainedModel | None = None) -> Path:
        """save_pretrained of the policy (or of `model`) with its tokenizer, atomically."""
        path = self.run_dir / name
        staging = Path(tempfile.mkdtemp(dir=self.run_dir, prefix=f".{path.name}-"))
        (model or self.policy.model).save_pretrained(staging)
        self.policy.tokenizer.save_pretrained(staging)
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(path)
        return path

    def save_merged_model(self) -> Path:
        """final-merged/: the LoRA adapter merged into a copy of the base weights (a copy, so
        the trainer's model keeps its adapter; costs one model's memory for a moment)."""
        return self.save_model("final-merged", copy.deepcopy(self.policy.model).merge_and_unload())

    def restore_state(self) -> None:
        state_dir = self.run_dir / STATE_DIR
        state = json.loads((state_dir / "state.json").read_text())
        if state.get("plan_sha256") not in (None, self.plan_sha256):
            raise DataError(
                f"{self.plan_path}: not the plan this run was trained with "
                f"({state.get('plan')}, changed since the checkpoint); resume with that plan "
                "or start over with --overwrite"
            )
        blobs = torch.load(state_dir / "trainer.pt", weights_only=False)
        self.optimizer.load_state_dict(blobs["optimizer"])
        self.lr_schedule.load_state_dict(blobs["lr_schedule"])
        torch.set_rng_state(blobs["torch_rng"])
        random.setstate(blobs["python_rng"])
        np.random.set_state(blobs["numpy_rng"])
        if blobs.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blobs["cuda_rng"])
        self.step = state["step"]
        self.scheduler.restore(state["scheduler"], self.queries_by_id)
        if self.planner is not None:
            self.planner.restore(state["planner"])
            # Re-plans after the checkpoint will run again: keep only the earlier snapshots.
            if (self.run_dir / HISTORY_FILE).exists():
                rows = read_table(self.run_dir / HISTORY_FILE)[0]
                self.plan_history = [r for r in rows if r["step"] <= self.step]
        self.flops = state["flops"]
        self.wall_s = state["wall_s"]
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        self.nonfinite_total = state["nonfinite_total"]
        self.verifier.stats.calls = state["verifier"]["calls"]
        self.verifier.stats.errors = state["verifier"]["errors"]
        self.verifier.stats.timeouts = state["verifier"]["timeouts"]
        # Lines written after the checkpoint belong to steps that will run again: drop them.
        text = self.metrics_path.read_text() if self.metrics_path.exists() else ""
        lines = text.splitlines(keepends=True)
        if len(lines) < state["metrics_lines"]:
            raise DataError(
                f"{self.metrics_path}: {len(lines)} lines but the checkpoint at step "
                f"{self.step} was taken after {state['metrics_lines']}; the run directory was "
                "changed by hand, start over with --overwrite"
            )
        atomic_write_text(self.metrics_path, "".join(lines[: state["metrics_lines"]]))

    # ---------------------------------------------------------------- the loop
    def finished(self) -> bool:
        cap = self.cfg.max_total_flops
        return self.step >= self.cfg.steps or (cap is not None and sum(self.flops.values()) >= cap)

    def train(self) -> dict:
        cfg = self.cfg
        if self.resuming:
            self.restore_state()
        else:
            # A fresh start (or --overwrite): nothing of an earlier run may be mixed in.
            self.metrics_path.unlink(missing_ok=True)
            (self.run_dir / SUMMARY_FILE).unlink(missing_ok=True)
            for name in ("final", "checkpoints", STATE_DIR, OLD_STATE_DIR):
                shutil.rmtree(self.run_dir / name, ignore_errors=True)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(self.config))
            self.log({"step": 0, **self.run_eval()})
            self.save_state()
        with tqdm(
            total=cfg.steps, initial=self.step, desc=f"train ({cfg.method})", unit="step"
        ) as bar:
            while not self.finished():
                record = self.train_step()
                if self.nonfinite_in_a_row >= cfg.max_nonfinite_in_a_row:
                    self.log(record)
                    self.save_state()
                    raise NonFiniteError(
                        f"{self.nonfinite_in_a_row} updates in a row had a non-finite loss or "
                        f"gradient; stopped at step {self.step}. The last good weights are in "
                        f"{self.run_dir / STATE_DIR}; lower train.lr or check the data."
                    )
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.finished():
                    record |= self.run_eval()
                self.log(record)
                bar.set_postfix(
                    reward=f"{record['reward_mean']:.2f}",
                    informative=f"{record['informative_fraction']:.2f}",
                )
                bar.update(1)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_model(f"checkpoints/step-{self.step:06d}")
                    self.save_state()
        self.save_model("final")
        summary = self.summary()
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        self.save_state()
        lora = self.config.model.lora
        if lora is not None and lora.save_merged:
            self.save_merged_model()
        self.verifier.close()
        for sink in self.sinks:
            sink.close()
        return summary

    def summary(self) -> dict:
        records = read_jsonl(self.metrics_path)
        evals = [r for r in records if "eval_acc" in r]
        steps = [r for r in records if r["step"] > 0]
        generated = sum(r["rollouts"] for r in steps)
        informative = sum(r["informative_fraction"] * r["rollouts"] for r in steps)
        return {
            "method": self.cfg.method,
            "steps": self.step,
            "initial_eval_acc": evals[0]["eval_acc"],
            "final_eval_acc": evals[-1]["eval_acc"],
            "initial_eval_acc_greedy": evals[0].get("eval_acc_greedy"),
            "final_eval_acc_greedy": evals[-1].get("eval_acc_greedy"),
            "final_eval_acc_by_bucket": evals[-1]["eval_acc_by_bucket"],
            "total_flops": sum(self.flops.values()),
            "flops_by_phase": dict(self.flops),
            "informative_fraction": informative / generated if generated else 0.0,
            "rollouts": generated,
            "wall_s": round(self.wall_s, 3),
            "verifier_errors": self.verifier.stats.errors,
            "verifier_timeouts": self.verifier.stats.timeouts,
            "nonfinite_skips": self.nonfinite_total,
            "model": self.initial_model,
            "task": self.task.source,
            "seed": self.config.seed,
            "config": self.config.model_dump(mode="json"),
        }


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recover_checkpoint(run_dir: Path) -> None:
    """Undo what a kill during save_state()/save_model() left behind: put the previous
    checkpoint back if the new one never got renamed in, and drop half-built staging dirs."""
    target, old = run_dir / STATE_DIR, run_dir / OLD_STATE_DIR
    if not (target / "state.json").exists() and (old / "state.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        old.rename(target)
    for pattern in (".checkpoint-*", ".final-*", ".step-*"):
        for staging in run_dir.glob(pattern):
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
    for name in (METRICS_FILE, SUMMARY_FILE, "config.yaml"):  # atomic writes' temp files
        for temp in run_dir.glob(f".{name}.*"):
            temp.unlink(missing_ok=True)


def checkpoint_plan(run_dir: Path) -> Path | None:
    """The plan a run's checkpoint was trained with (None when there is none)."""
    state_file = run_dir / STATE_DIR / "state.json"
    if not state_file.exists():
        state_file = run_dir / OLD_STATE_DIR / "state.json"
    if not state_file.exists():
        return None
    plan = json.loads(state_file.read_text()).get("plan")
    return Path(plan) if plan and Path(plan).exists() else None


def run_train(
    config: RunConfig,
    run_dir: Path,
    plan_path: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    if (run_dir / SUMMARY_FILE).exists() and not (overwrite or resume):
        raise FileExistsError(f"{run_dir / SUMMARY_FILE} exists; pass --overwrite or --resume")
    if (run_dir / METRICS_FILE).exists() and not (overwrite or resume):
        raise FileExistsError(f"{run_dir / METRICS_FILE} exists; pass --overwrite or --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.train.method == "sgpo" and plan_path is None and resume:
        plan_path = checkpoint_plan(run_dir)  # resumed with the plan it started with
    if config.train.method == "sgpo" and plan_path is None:
        plan_path = run_dir / "plan.parquet"
    return Trainer(config, run_dir, plan_path, resume).train()
