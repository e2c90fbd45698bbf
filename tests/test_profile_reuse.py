"""Profile reuse (train.reuse_profile): a kept query's profile samples start its first training
group, cost no generation, are trained against the initial policy's log-probs, and which
queries used them survives a crash and resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import tiny_tree

import sgpo.update
from sgpo.config import RunConfig
from sgpo.core.flops import inference_flops, logprob_flops, train_flops
from sgpo.io import read_jsonl, read_table
from sgpo.plan import run_plan
from sgpo.profile import SAMPLES_FILE, run_profile
from sgpo.reuse import reuse_record
from sgpo.runfiles import METRICS_FILE, SUMMARY_FILE
from sgpo.train import Trainer, run_train
from sgpo.update import response_logprobs

K, G = 4, 6  # every group: its K profile samples + 2 fresh on the first visit


class Crash(BaseException):
    pass


def reuse_config(root: Path, **train: object) -> RunConfig:
    tree = tiny_tree(
        root / "models",
        task={"addition": {"n_train": 8}},
        profile={"k": K, "chunk_size": 4},
        plan={"g_min": G, "g_max": G, "drop_trivial": False},
        train={
            "reuse_profile": True,
            "rollout_budget": 2 * G,
            "micro_batch_size": 16,
            "eval_every": 0,
            "checkpoint_every": 1,
        }
        | train,
    )
    return RunConfig.model_validate(tree)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("reuse")
    config = reuse_config(root)
    profile = run_profile(config, root / "profile")
    plan, _ = run_plan(config, profile, root / "plan")
    samples: dict[str, list[dict]] = {}
    for s in read_table(profile.parent / SAMPLES_FILE)[0]:
        samples.setdefault(s["query_id"], []).append(s)
    return SimpleNamespace(root=root, plan=plan, samples=samples)


def test_first_group_is_the_profile_samples_and_costs_no_generation(tiny, tmp_path):
    trainer = Trainer(reuse_config(tiny.root), tmp_path / "run", tiny.plan)
    seen: set[str] = set()
    while trainer.scheduler.epoch < 2:
        rollout_flops_before = trainer.flops["rollout"]
        generated, batch = trainer.collect()
        assert batch == generated
        for qid in {r.query.query_id for r in batch}:
            group = [r for r in batch if r.query.query_id == qid]
            reused = [r for r in group if r.reused]
            assert len(group) == G
            if qid in seen:  # later visits generate the whole group
                assert reused == []
                continue
            seen.add(qid)
            profile = tiny.samples[qid]
            assert group[:K] == reused  # the profile samples come first, all of them
            assert [r.completion.response_ids for r in reused] == [
                s["response_ids"] for s in profile
            ]
            assert [r.reward for r in reused] == [s["reward"] for s in profile]
        fresh = [r for r in generated if not r.reused]
        shape = trainer.shape
        assert trainer.flops["rollout"] - rollout_flops_before == sum(
            inference_flops(shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
            for r in fresh
        )
        record = reuse_record(generated)
        assert record["reused_rollouts"] == len(generated) - len(fresh)
        assert record["tokens_generated"] == sum(len(r.completion.response_ids) for r in fresh)
    assert seen == set(tiny.samples)


def test_only_the_kept_queries_samples_are_read_and_each_handed_out_once(tiny):
    """The kept queries' samples stay in Arrow's columns (a large profile's would not fit as
    Python objects), made objects at a query's first visit; a dropped query's are not read."""
    from dataclasses import replace

    from sgpo.plan import read_plan
    from sgpo.reuse import load_profile_reuse

    rows, _ = read_plan(tiny.plan)
    dropped = {r.query_id for r in rows[::2]}
    rows = [replace(r, kept=False, rank=-1) if r.query_id in dropped else r for r in rows]
    threshold = reuse_config(tiny.root).task.correct_threshold
    reuse = load_profile_reuse(tiny.plan, rows, threshold)
    assert reuse.samples.num_rows == sum(r.k for r in rows if r.kept)
    assert set(reuse.samples["query_id"].to_pylist()) == {r.query_id for r in rows if r.kept}
    first = next(r.query_id for r in rows if r.kept)
    handed = reuse.take(first, G)
    assert [s.completion.response_ids for s in handed] == [
        s["response_ids"] for s in tiny.samples[first][:G]
    ]
    assert reuse.take(first, G) == [] and reuse.take(sorted(dropped)[0], G) == []


def test_reused_rollouts_train_against_the_initial_policy(tiny, tmp_path, monkeypatch):
    trainer = Trainer(
        reuse_config(tiny.root, clip_low=0.01, clip_high=0.01), tmp_path / "run", tiny.plan
    )
    trainer.train_step()  # the policy moves away from the initial one
    captured = []
    real_loss = sgpo.update.clipped_policy_loss

    def spy(logprobs, old, *args):
        captured.append((logprobs.detach().clone(), old.clone()))
        return real_loss(logprobs, old, *args)

    monkeypatch.setattr(sgpo.update, "clipped_policy_loss", spy)
    generated, batch = trainer.collect()  # two first visits: 8 reused, 4 fresh
    logprob_before = trainer.flops["logprob"]
    stats = trainer.train_on(batch)
    trained = [r for r in batch if r.advantage != 0.0]
    assert any(r.reused for r in trained) and any(not r.reused for r in trained)
    ((logprobs, old),) = captured  # one micro-batch, one epoch
    with torch.no_grad():
        initial = response_logprobs(trainer.update.behaviour, trained)[0]
    for row, r in enumerate(trained):
        n = len(r.completion.response_ids)
        if r.reused:  # old = the behaviour (initial) policy's, no longer the current one
            torch.testing.assert_close(old[row, :n], initial[row, :n])
            assert not torch.allclose(old[row, :n], logprobs[row, :n])
        else:  # fresh: on-policy, ratio exactly 1
            assert torch.equal(old[row, :n], logprobs[row, :n])
    assert stats["clip_fraction"] > 0 and stats["approx_kl"] > 0  # the clip acts on them
    # one behaviour pass over the trained reused rollouts, charged to logprob
    reused = [r for r in trained if r.reused]
    assert trainer.flops["logprob"] - logprob_before == sum(
        logprob_flops(trainer.shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
        for r in reused
    )
    # a train-every-rollout trainer would give a dead reused rollout that behaviour pass too
    dead = [replace(r, advantage=0.0) for r in batch]
    assert any(r.reused for r in dead) and any(not r.reused for r in dead)
    assert trainer.update.skipped_flops(dead) == pytest.approx(
        sum(sequence_cost(trainer.shape, r, train_flops) for r in dead)
        + sum(sequence_cost(trainer.shape, r, logprob_flops) for r in dead if r.reused)
    )


def sequence_cost(shape: object, rollout: object, flops: object) -> float:
    return flops(shape, len(rollout.completion.prompt_ids), len(rollout.completion.response_ids))


def comparable(run_dir: Path) -> tuple[list[dict], dict, dict]:
    metrics = [
        {k: v for k, v in r.items() if k != "wall_s"} for r in read_jsonl(run_dir / METRICS_FILE)
    ]
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    summary = {k: v for k, v in summary.items() if k not in ("wall_s", "config")}
    return metrics, summary, load_file(run_dir / "final" / "model.safetensors")


def test_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    config = reuse_config(tiny.root)
    run_train(config, tmp_path / "reference", tiny.plan)
    want_metrics, want_summary, want_weights = comparable(tmp_path / "reference")
    # 4 steps per epoch: reused in steps 1-4, none in steps 5-6 (second visits)
    assert [r["reused_rollouts"] for r in want_metrics[1:]] == [2 * K] * 4 + [0, 0]

    run = tmp_path / "run"
    real_train_on, real_log = Trainer.train_on, Trainer.log
    crashes = [("mid_step", 2), ("after_log", 5)]  # the second resumes into the second epoch
    for index, (point, step) in enumerate(crashes):

        def train_on(self, batch, step=step, point=point):
            if point == "mid_step" and self.step + 1 == step:
                raise Crash
            return real_train_on(self, batch)

        def log(self, record, step=step, point=point):
            real_log(self, record)
            if point == "after_log" and record["step"] == step:
                raise Crash

        with monkeypatch.context() as mp:
            mp.setattr(Trainer, "train_on", train_on)
            mp.setattr(Trainer, "log", log)
            with pytest.raises(Crash):
                run_train(config, run, tiny.plan, resume=index > 0)
    run_train(config, run, tiny.plan, resume=True)
    metrics, summary, weights = comparable(run)
    assert metrics == want_metrics
    assert summary == want_summary
    for name, value in want_weights.items():
        assert torch.equal(weights[name], value), name


def test_a_run_on_a_plan_reads_its_task_once(tiny, tmp_path, monkeypatch):
    """The plan's profile is checked against the task the trainer loaded: a large training file
    was read and checked twice before the first step (its warnings said twice)."""
    import sgpo.tasks
    import sgpo.train

    loads, real = [], sgpo.tasks.load_run_task

    def counted(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sgpo.tasks, "load_run_task", counted)
    monkeypatch.setattr(sgpo.train, "load_run_task", counted)
    trainer = Trainer(reuse_config(tiny.root), tmp_path / "run", tiny.plan)
    assert len(loads) == 1 and trainer.generated_tokens > 0
