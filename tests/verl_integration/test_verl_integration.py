"""An sGPO plan, exported for verl, read and used by verl 0.9.1's own code (CPU only).

Skipped unless verl is importable; run it in .venv-verl (see tests/verl_integration/README.md):
    ./scripts/verl-env.sh && .venv-verl/bin/python -m pytest tests/verl_integration -q
Checks, with verl's code rather than a re-implementation of it:
- RLHFDataset + verl's sampler/dataloader setup (data.shuffle=False) give the kept queries in
  curriculum order, each row carrying __rollout_n__ = G;
- the v1 rollout worker (AgentLoopWorkerTQ._run_prompt) starts exactly G sessions per prompt;
- verl's GRPO advantages over those variable-size groups, with rewards from sgpo's verifier
  through sgpo.verl.reward.compute_score, equal sgpo.core.advantages.group_advantages.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

SKIP_REASON = (
    "verl is not installed in this environment; run the verl tests in .venv-verl: "
    "./scripts/verl-env.sh && .venv-verl/bin/python -m pytest tests/verl_integration -q"
)
verl = pytest.importorskip("verl", reason=SKIP_REASON)
if getattr(verl, "__file__", None) is None:  # a bare "verl" folder on sys.path, not the package
    pytest.skip(SKIP_REASON, allow_module_level=True)
if not verl.__version__.startswith("0.9."):
    pytest.skip(f"written against verl 0.9.1, found {verl.__version__}", allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.utils import create_rl_sampler  # noqa: E402
from verl.trainer.ppo.v1 import agent_loop_tq  # noqa: E402
from verl.trainer.ppo.v1.trainer_base import PPOTrainer  # noqa: E402
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories  # noqa: E402
from verl.utils import hf_tokenizer  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402

from sgpo.config import RunConfig  # noqa: E402
from sgpo.core.advantages import group_advantages  # noqa: E402
from sgpo.core.allocation import PlanRule  # noqa: E402
from sgpo.embedded import build_char_tokenizer  # noqa: E402
from sgpo.io import read_table, write_table  # noqa: E402
from sgpo.plan import PlanRow, build_plan, kept_in_order, write_plan  # noqa: E402
from sgpo.tasks import load_task  # noqa: E402
from sgpo.tasks.addition import VERIFIER, target_for  # noqa: E402
from sgpo.verl.export import ROLLOUT_N, export_verl_parquet, rollouts_per_step  # noqa: E402
from sgpo.verl.reward import compute_score  # noqa: E402

TRAIN_BATCH_SIZE = 4
SYSTEM = "Write the sum with its digits reversed."
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"
DATA_CONFIG = CONFIG_DIR / "data" / "legacy_data.yaml"
LAUNCH = Path(__file__).resolve().parents[2] / "examples" / "verl" / "run_sgpo.sh"


def tiny_plan() -> list[PlanRow]:
    """build_plan on fake profile rows (k=8, every n_correct), addition prompts."""
    profile = []
    for i in range(30):
        a, b = 11 + 3 * i, 40 + 7 * i
        profile.append(
            {
                "query_id": f"add:{a}+{b}",
                "prompt": f"{a}+{b}=",
                "answer": str(a + b),
                "difficulty": "2-digit",
                "k": 8,
                "n_correct": i % 9,
                "prompt_tokens": 6,
                "mean_response_tokens": 3.0,
            }
        )
    return build_plan(profile, PlanRule(g_min=2, g_max=8, unsolvable_keep_fraction=0.5), seed=7)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[list[PlanRow], Path, Path]:
    tmp = tmp_path_factory.mktemp("verl")
    plan = tiny_plan()
    path = export_verl_parquet(
        plan, {"plan_seed": 7}, tmp / "train.parquet", "sgpo/addition", SYSTEM, VERIFIER
    )
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp / "tokenizer")
    return plan, path, tmp / "tokenizer"


def data_config(**overrides):  # noqa: ANN201 - DictConfig
    """verl's own default data config (legacy_data.yaml), with the sGPO launch overrides."""
    cfg = OmegaConf.load(DATA_CONFIG)
    base = {
        "shuffle": False,
        "train_batch_size": TRAIN_BATCH_SIZE,
        "max_prompt_length": 128,
        "filter_overlong_prompts": True,
        "filter_overlong_prompts_workers": 1,
        "dataloader_num_workers": 0,
        "tool_config_path": None,
        "function_tool_path": None,
        "cache_dir": None,
    }
    return OmegaConf.merge(cfg, base | overrides)


def load_batches(path: Path, tokenizer_dir: Path, tmp: Path) -> list[dict]:
    """Batches exactly as verl's v1 trainer builds them (trainer_base.PPOTrainer._init_dataloader
    and _fetch_one_gen_batch): RLHFDataset, create_rl_sampler, StatefulDataLoader(drop_last)."""
    cfg = data_config(cache_dir=str(tmp / "cache"))
    tokenizer = hf_tokenizer(str(tokenizer_dir))
    dataset = RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=cfg)
    loader = StatefulDataLoader(
        dataset=dataset,
        batch_size=cfg.train_batch_size,
        num_workers=cfg.dataloader_num_workers,
        drop_last=True,
        collate_fn=collate_fn,
        sampler=create_rl_sampler(cfg, dataset),
    )
    return list(loader)


def test_dataset_keeps_curriculum_order_and_group_sizes(exported, tmp_path):
    plan, path, tokenizer_dir = exported
    kept = kept_in_order(plan)
    batches = load_batches(path, tokenizer_dir, tmp_path)
    steps = len(kept) // TRAIN_BATCH_SIZE
    assert len(batches) == steps  # drop_last: a partial last batch is not trained on
    seen_ids = [info["query_id"] for b in batches for info in b["extra_info"]]
    assert seen_ids == [q.query_id for q in kept[: steps * TRAIN_BATCH_SIZE]]
    ns = [int(n) for b in batches for n in b[ROLLOUT_N]]
    assert ns == [q.group_size for q in kept[: steps * TRAIN_BATCH_SIZE]]
    assert len(set(ns)) > 2
    assert [int(sum(b[ROLLOUT_N])) for b in batches] == rollouts_per_step(
        [q.group_size for q in kept], TRAIN_BATCH_SIZE
    )
    first = batches[0]
    assert list(first["raw_prompt"][0]) == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": kept[0].prompt},
    ]
    assert first["reward_model"][0]["ground_truth"] == kept[0].answer
    assert first["extra_info"][0]["verifier"] == VERIFIER
    assert int(first["index"][0]) == 0


def run_prompts(batch_dict: dict, monkeypatch) -> list[list[dict]]:
    """Feed one dataloader batch through verl's v1 rollout worker code with generation stubbed:
    AgentLoopWorkerTQ.generate_sequences' per-sample extraction, then _run_prompt, which reads
    __rollout_n__. Returns, per prompt, the kwargs of each agent-loop session it started."""
    batch_dict = dict(batch_dict)
    uids = [str(uuid.uuid4()) for _ in batch_dict["raw_prompt"]]
    batch_dict["uid"] = np.array(uids, dtype=object)
    return start_sessions(tu.get_tensordict(batch_dict), monkeypatch)


def start_sessions(batch, monkeypatch) -> list[list[dict]]:  # noqa: ANN001 - a TensorDict
    """run_prompts on a batch that has its uids, as verl's trainer submits it."""
    sessions: dict[str, list[dict]] = {}
    statuses: list[str] = []

    async def kv_put(key, partition_id, tag):  # noqa: ANN001
        statuses.append(tag["status"])

    async def run_agent_loop(sampling_params, trajectory, trace=False, **kwargs):  # noqa: ANN001
        sessions.setdefault(kwargs["uid"], []).append(kwargs)

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_put", kv_put)
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"n": 1, "val_kwargs": {"n": 1}}}})
    worker = SimpleNamespace(config=config, _run_agent_loop=run_agent_loop)
    run_prompt = agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class._run_prompt

    async def run_all() -> None:
        for i in range(len(batch)):  # as AgentLoopWorkerTQ.generate_sequences builds `prompt`
            prompt = {}
            for k, v in batch.items():
                if isinstance(v, torch.Tensor):
                    prompt[k] = v[i]
                elif isinstance(v, tu.NonTensorStack):
                    prompt[k] = v[i].data
                else:
                    prompt[k] = v.data
            await run_prompt(worker, prompt, {}, trajectory={"validate": False})

    asyncio.run(run_all())
    assert statuses.count("finished") == len(batch)
    return [sessions.get(uid, []) for uid in batch["uid"]]


def test_v1_rollout_worker_starts_g_sessions_per_prompt(exported, tmp_path, monkeypatch):
    plan, path, tokenizer_dir = exported
    batches = load_batches(path, tokenizer_dir, tmp_path)
    kept = kept_in_order(plan)
    started = [len(s) for b in batches for s in run_prompts(b, monkeypatch)]
    assert started == [q.group_size for q in kept[: len(started)]]
    one = run_prompts(batches[-1], monkeypatch)[0]
    assert [s["session_id"] for s in one] == list(range(len(one)))
    assert ROLLOUT_N not in one[0]  # popped, not passed on to the agent loop


def synthetic_responses(answer: str, a: int, b: int, g: int, correct: int) -> list[str]:
    """g responses of which `correct` are the right reversed sum."""
    right = target_for(a, b)
    wrong = str(int(answer) + 1)[::-1]
    return [right if j < correct else wrong for j in range(g)]


def grpo_batch(exported) -> tuple[list[str], list[float], list[int], list[int]]:  # noqa: ANN001
    """uid, reward, group index and response length per rollout, for every kept query: G
    responses each, rewards from sgpo's verifier through verl's reward entry point."""
    plan, _, _ = exported
    uids, rewards, groups, lengths = [], [], [], []
    for gi, q in enumerate(kept_in_order(plan)):
        a, b = (int(x) for x in q.prompt.rstrip("=").split("+"))
        g = q.group_size
        correct = min(g, round(q.p_hat * g)) if gi % 3 else 0  # some all-wrong groups
        if gi % 5 == 4:
            correct = g  # and some all-right ones
        uid = str(uuid.uuid4())
        info = {"query_id": q.query_id, "verifier": VERIFIER}
        for j, text in enumerate(synthetic_responses(q.answer, a, b, g, correct)):
            rewards.append(
                compute_score(
                    data_source="sgpo/addition",
                    solution_str=text,
                    ground_truth=q.answer,
                    extra_info=info,
                )["score"]
            )
            uids.append(uid)
            groups.append(gi)
            lengths.append(2 + (j % 3))
    assert 0 < sum(rewards) < len(rewards)
    return uids, rewards, groups, lengths


def reward_tensors(rewards: list[float], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's layout: the outcome reward on the last response token, right-padded."""
    width = max(lengths) + 2
    mask = torch.zeros(len(rewards), width)
    scores = torch.zeros(len(rewards), width)
    for i, (r, n) in enumerate(zip(rewards, lengths, strict=True)):
        mask[i, :n] = 1
        scores[i, n - 1] = r
    return scores, mask


def test_grpo_advantages_match_sgpo_for_variable_group_sizes(exported):
    uids, rewards, groups, lengths = grpo_batch(exported)
    assert len(set(np.bincount(groups))) > 2  # variable G
    scores, mask = reward_tensors(rewards, lengths)
    index = np.array(uids, dtype=object)

    # Mean-centred (algorithm.norm_adv_by_std_in_grpo=False): identical to sGPO's default.
    adv, returns = core_algos.compute_grpo_outcome_advantage(
        scores, mask, index, norm_adv_by_std_in_grpo=False
    )
    ours = torch.tensor(group_advantages(rewards, groups, normalize_std=False))
    assert torch.allclose(adv, ours.unsqueeze(-1).float() * mask, atol=1e-6)
    assert torch.equal(adv, returns)

    # The same through the v1 trainer's entry point (keys {uid}_{session}_{output index}).
    keys = [f"{u}_{j}_0" for j, u in enumerate(uids)]
    data = DataProto.from_dict(
        tensors={"token_level_rewards": scores, "response_mask": mask},
        non_tensors={"uid": index},
    )
    data = compute_advantage_for_multi_trajectories(
        data,
        batch_keys=keys,
        adv_estimator="grpo",
        norm_adv_by_std_in_grpo=False,
        config=OmegaConf.create({}),
    )
    assert torch.allclose(data.batch["advantages"], ours.unsqueeze(-1).float() * mask, atol=1e-6)


def test_grpo_std_variant_differs_from_sgpo_only_by_bessel_correction(exported):
    """verl divides by torch.std (unbiased, ddof=1), sGPO by the population std (ddof=0): the
    same signs and zeros, scaled by sqrt((G-1)/G) per group, so small groups weigh less in verl."""
    uids, rewards, groups, lengths = grpo_batch(exported)
    scores, mask = reward_tensors(rewards, lengths)
    adv, _ = core_algos.compute_grpo_outcome_advantage(
        scores, mask, np.array(uids, dtype=object), norm_adv_by_std_in_grpo=True
    )
    ours = group_advantages(rewards, groups, normalize_std=True)
    sizes = np.bincount(groups)
    theirs = adv.sum(-1) / mask.sum(-1)  # the per-rollout scalar, broadcast over its tokens
    for i, (a, g) in enumerate(zip(ours, groups, strict=True)):
        if a == 0.0:  # zero-variance group: no signal in either
            assert abs(float(theirs[i])) < 1e-6
        else:
            bessel = math.sqrt((sizes[g] - 1) / sizes[g])
            assert float(theirs[i]) == pytest.approx(a * bessel, rel=1e-4)


def test_verl_gives_a_group_of_one_its_raw_reward_which_is_why_export_refuses_g1():
    scores, mask = reward_tensors([1.0, 1.0, 0.0], [2, 2, 2])
    adv, _ = core_algos.compute_grpo_outcome_advantage(
        scores,
        mask,
        np.array(["solo", "pair", "pair"], dtype=object),
        norm_adv_by_std_in_grpo=False,
    )
    assert adv[0, 0] == pytest.approx(1.0)  # sGPO: 0 (no baseline, no signal)
    assert group_advantages([1.0, 1.0, 0.0], [0, 1, 1])[0] == 0.0


PROFILED_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 7, "batch_size": 512}


def launch(tmp_path: Path, script: str = "run_sgpo.sh", *args: str, **env: str):  # noqa: ANN201
    """Run an examples/verl launch script with PRINT_OVERRIDES=1 on tiny_plan(), profiled with
    PROFILED_SAMPLING, and a character tokenizer with a chat template as the model."""
    if not (tmp_path / "plan.parquet").exists():
        # the default config's task: the launch runs without SGPO_CONFIG
        task = load_task(RunConfig().task, 0).source
        meta = {"task": task, "sampling": PROFILED_SAMPLING, "model": "profiled"}
        write_plan(tmp_path / "plan.parquet", tiny_plan(), meta)
        tokenizer = build_char_tokenizer()
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(tmp_path / "model")
    settings = {
        "MODEL": str(tmp_path / "model"),
        "PLAN": str(tmp_path / "plan.parquet"),
        "OUT": str(tmp_path / "run"),
        "PYTHON": sys.executable,
        "PRINT_OVERRIDES": "1",
        "GPUS_PER_NODE": "2",
        "TRAIN_BATCH_SIZE": "4",
    }
    return subprocess.run(
        ["bash", str(LAUNCH.parent / script), *args],
        env=os.environ | settings | env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


def launch_overrides(tmp_path: Path, script: str = "run_sgpo.sh", **env: str) -> list[str]:
    """The hydra overrides a launch script passes to verl (it exports the plan too)."""
    result = launch(tmp_path, script, "trainer.total_training_steps=3", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def compose(overrides: list[str]):  # noqa: ANN201 - DictConfig
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def test_launch_script_gives_a_valid_verl_config_that_runs_sgpo(tmp_path):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = compose(launch_overrides(tmp_path))
    validate_config(
        cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
    )
    assert cfg.data.train_files == str(tmp_path / "run" / "sgpo" / "train.parquet")
    assert (tmp_path / "run" / "sgpo" / "train.parquet").exists()
    assert cfg.data.shuffle is False
    assert cfg.trainer.use_v1 and cfg.trainer.v1.trainer_mode == "sync"
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.algorithm.norm_adv_by_std_in_grpo is False
    assert cfg.algorithm.filter_groups.enable is False
    assert not need_reference_policy(cfg) and not need_critic(cfg)
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "token-mean"
    # the mini-batch is counted in rollouts: one per step by default, as sgpo train takes
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert actor.rollout_n == rollout.n and actor.ppo_mini_batch_size == TRAIN_BATCH_SIZE
    sizes = [q.group_size for q in kept_in_order(tiny_plan())]
    assert max(rollouts_per_step(sizes, TRAIN_BATCH_SIZE)) <= TRAIN_BATCH_SIZE * rollout.n
    assert list(cfg.trainer.logger) == ["console", "file"]
    env_vars = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert Path(env_vars["VERL_FILE_LOGGER_PATH"]).parent == tmp_path / "run" / "sgpo" / "metrics"
    assert cfg.trainer.total_training_steps == 3  # extra arguments reach verl
    # verl resolves pkg://sgpo.verl.reward and calls compute_score as its reward managers do
    score = get_custom_reward_fn(cfg)
    info = {"verifier": VERIFIER}
    ds = "sgpo/addition"
    right = score(data_source=ds, solution_str="24", ground_truth="42", extra_info=info)
    wrong = score(data_source=ds, solution_str="4", ground_truth="42", extra_info=info)
    assert right["score"] == 1.0 and wrong["score"] == 0.0
    assert right["verifier_error"] == wrong["verifier_error"] == 0.0


def test_launch_script_one_update_per_step_covers_the_largest_step(tmp_path):
    cfg = compose(launch_overrides(tmp_path, ONE_UPDATE_PER_STEP="1"))
    sizes = [q.group_size for q in kept_in_order(tiny_plan())]
    largest = max(rollouts_per_step(sizes, TRAIN_BATCH_SIZE))
    per_update = cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == TRAIN_BATCH_SIZE
    assert largest <= per_update < largest + TRAIN_BATCH_SIZE
    # on 3 GPUs the derived mini-batch (32 rollouts) is rounded up to split over them (it was
    # refused, naming values the user never set)
    odd = compose(launch_overrides(tmp_path, ONE_UPDATE_PER_STEP="1", GPUS_PER_NODE="3"))
    actor, rollout = odd.actor_rollout_ref.actor, odd.actor_rollout_ref.rollout
    assert actor.ppo_mini_batch_size * rollout.n % 3 == 0
    assert largest < actor.ppo_mini_batch_size * rollout.n < largest + TRAIN_BATCH_SIZE * 3


# ----------------------------------------------------------------- issue 14: launch checks


def test_launch_refuses_sampling_other_than_the_plans_naming_both_values(tmp_path):
    result = launch(tmp_path, MAX_RESPONSE_LENGTH="1024")
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "MAX_RESPONSE_LENGTH=1024 (--max-response-length) but" in said
    assert "max_new_tokens=7" in said
    assert result.stdout == ""  # nothing printed for verl
    result = launch(tmp_path, TEMPERATURE="0.7")
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "TEMPERATURE=0.7 (--temperature)" in said and "temperature=1.0" in said
    assert "(ALLOW_SAMPLING_MISMATCH=1, --allow-sampling-mismatch, to launch anyway" in said
    allowed = launch(tmp_path, TEMPERATURE="0.7", ALLOW_SAMPLING_MISMATCH="1")
    assert allowed.returncode == 0, allowed.stderr
    assert "actor_rollout_ref.rollout.temperature=0.7" in allowed.stdout.splitlines()


def test_launch_adds_trackers_and_sizes_the_token_budget_to_the_longest_sequence(tmp_path):
    cfg = compose(launch_overrides(tmp_path, LOGGERS="console,wandb"))
    assert list(cfg.trainer.logger) == ["console", "wandb", "file"]  # file feeds sgpo flops
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 16384
    longer = {"MAX_RESPONSE_LENGTH": "32768", "ALLOW_SAMPLING_MISMATCH": "1"}
    long = compose(launch_overrides(tmp_path, **longer))
    # the default fits one full-length sequence: verl asserts that it does, mid-run
    assert long.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 512 + 32768
    small = launch(tmp_path, **longer, MAX_TOKENS_PER_GPU="16384")
    assert small.returncode == 2
    assert "MAX_TOKENS_PER_GPU=16384 is below MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH = " \
        "33280" in " ".join(small.stderr.split())  # fmt: skip
    bad = launch(tmp_path, LOGGERS="[console]")
    assert bad.returncode == 2 and "LOGGERS=[console]: give tracker names" in bad.stderr
    # a path Hydra would read as a sweep: refused before verl composes it
    for unreadable in ("runs,x", "run#1", "café"):
        swept = launch(tmp_path, OUT=str(tmp_path / unreadable))
        assert swept.returncode == 2 and swept.stdout == ""
        said = " ".join(swept.stderr.split())
        assert "RUN_DIR=" in said and "Hydra reads this path as override syntax" in said
    # a key the launch sets: refused, naming the variable that sets it
    told = launch(tmp_path, "run_sgpo.sh", "trainer.logger=[console,wandb]")
    assert told.returncode == 2 and "set it through LOGGERS" in told.stderr


def test_launch_checkpoints_under_a_stable_name_and_verl_finds_them_to_resume(tmp_path):
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    first = launch_overrides(tmp_path)
    again = launch_overrides(tmp_path)
    logger = "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="
    # Only the metrics file differs: verl's FileLogger truncates, so each launch gets its own.
    assert [o for o in first if not o.startswith(logger)] == [
        o for o in again if not o.startswith(logger)
    ]
    cfg = compose(first)
    trainer = cfg.trainer
    assert trainer.save_freq > 0 and trainer.resume_mode == "auto"
    assert trainer.experiment_name == "sgpo"
    checkpoints = Path(trainer.default_local_dir)
    assert checkpoints.is_absolute() and checkpoints == tmp_path / "run" / "sgpo" / "checkpoints"
    # What verl's _save_checkpoint leaves behind, found by what _load_checkpoint (resume) calls.
    (checkpoints / "global_step_20" / "actor").mkdir(parents=True)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("20")
    assert find_latest_ckpt_path(str(checkpoints)) == str(checkpoints / "global_step_20")


def test_launch_refuses_rows_without_a_group_size_and_too_few_rows(tmp_path):
    refused = launch(tmp_path, TRAIN_BATCH_SIZE="100")  # the export refuses
    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert "the launch's TRAIN_BATCH_SIZE) is 100:" in said and "0 steps" in said
    exported = tmp_path / "run" / "sgpo" / "train.parquet"
    assert not exported.exists()  # a refused launch leaves no data behind
    assert launch(tmp_path).returncode == 0
    rows, meta = read_table(exported)
    for row in rows:  # an export made without group sizes
        del row[ROLLOUT_N]
    data = tmp_path / "no_group_size.parquet"
    write_table(data, rows, meta)
    result = launch(tmp_path, SKIP_EXPORT="1", DATA=str(data))
    assert result.returncode == 2
    assert f"{len(rows)} of {len(rows)} rows have no {ROLLOUT_N}" in result.stderr
    # an export of another plan, or for another method: named, not trained
    baseline = launch(tmp_path, "run_grpo.sh")
    assert baseline.returncode == 0, baseline.stderr
    grpo_data = str(tmp_path / "run" / "grpo" / "train.parquet")
    said = " ".join(launch(tmp_path, SKIP_EXPORT="1", DATA=grpo_data).stderr.split())
    assert f"DATA={grpo_data}: it is a baseline's export (every query at G = 8), not sGPO's" in said
    said = " ".join(
        launch(tmp_path, "run_grpo.sh", SKIP_EXPORT="1", DATA=str(exported)).stderr.split()
    )
    assert "it is sGPO's export (the plan's kept queries), not a grpo baseline's" in said
    wider = launch(tmp_path, "run_grpo.sh", SKIP_EXPORT="1", DATA=grpo_data, GROUP_SIZE="16")
    said = " ".join(wider.stderr.split())
    assert wider.returncode == 2 and "its groups are G = 8, not the launch's GROUP_SIZE=16" in said
    rows, meta = read_table(exported)
    rows[0][ROLLOUT_N] += 1  # the plan re-made with another G
    other = tmp_path / "other_plan.parquet"
    write_table(other, rows, meta)
    said = " ".join(launch(tmp_path, SKIP_EXPORT="1", DATA=str(other)).stderr.split())
    assert "its queries, order or group sizes are not the plan's kept queries'" in said
    assert launch(tmp_path, SKIP_EXPORT="1", DATA=str(exported)).returncode == 0  # its own


def test_verifier_settings_reach_every_ray_worker_through_the_runtime_env(tmp_path):
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    cfg = compose(
        launch_overrides(
            tmp_path, SGPO_VERIFIER="sgpo.tasks.addition:verify", SGPO_VERIFIER_TIMEOUT_S="10"
        )
    )
    # What verl's run_ppo passes to ray.init (trainer/main_ppo.py).
    runtime_env = OmegaConf.merge(
        get_ppo_ray_runtime_env(cfg), cfg.ray_kwargs.ray_init.get("runtime_env", {})
    )
    env_vars = OmegaConf.to_container(runtime_env)["env_vars"]
    assert env_vars["SGPO_VERIFIER"] == "sgpo.tasks.addition:verify"
    assert env_vars["SGPO_VERIFIER_TIMEOUT_S"] == "10"  # a string, as Ray requires
    assert env_vars["SGPO_VERIFIER_STATS_DIR"] == str(tmp_path / "run" / "sgpo" / "verifier")


def test_prompt_length_check_counts_tokens_as_verl_does_and_refuses_overlong(tmp_path):
    from sgpo.verl.check import prompt_token_counts

    cfg = compose(launch_overrides(tmp_path))
    data = Path(cfg.data.train_files)
    tokenizer = hf_tokenizer(str(tmp_path / "model"))
    counts = prompt_token_counts(read_table(data)[0], tokenizer)
    longest = max(counts)
    # verl's own overlong-prompt filter agrees with the count at the boundary.
    for limit, kept in ((longest, len(counts)), (longest - 1, len(counts) - counts.count(longest))):
        dataset = RLHFDataset(
            data_files=[str(data)],
            tokenizer=tokenizer,
            config=data_config(max_prompt_length=limit, cache_dir=str(tmp_path / f"c{limit}")),
        )
        assert len(dataset) == kept
    result = launch(tmp_path, MAX_PROMPT_LENGTH=str(longest - 1))
    assert result.returncode == 2
    assert f"MAX_PROMPT_LENGTH={longest - 1}" in result.stderr and str(longest) in result.stderr


def test_verifier_errors_reach_verls_validation_metrics(monkeypatch):
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    monkeypatch.setenv("SGPO_VERIFIER_ISOLATION", "inline")
    infos = {"reward": [], "verifier_error": []}
    for spec in (VERIFIER, "test_verl_integration:always_raises"):
        monkeypatch.setenv("SGPO_VERIFIER", spec)  # a row's own verifier, trusted as named
        out = compute_score("sgpo/addition", "24", "42", {"verifier": spec})
        infos["reward"].append(out["score"])
        infos["verifier_error"].append(out["verifier_error"])
    assert infos == {"reward": [1.0, 0.0], "verifier_error": [0.0, 1.0]}
    # verl turns them into val-aux/sgpo/addition/verifier_error/mean@1 (trainer_base._validate).
    metrics = process_validation_metrics(["sgpo/addition"] * 2, ["u1", "u2"], infos)
    assert metrics["sgpo/addition"]["verifier_error"]["mean@1"] == 0.5


def always_raises(response: str, reference: str) -> float:
    raise RuntimeError("verifier bug")


def test_baseline_launches_give_valid_grpo_and_dapo_configs_on_all_queries(tmp_path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils.config import validate_config

    for script, dapo in (("run_grpo.sh", False), ("run_dapo.sh", True)):
        cfg = compose(launch_overrides(tmp_path, script, GROUP_SIZE="4"))
        validate_config(
            cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
        )
        assert cfg.actor_rollout_ref.rollout.n == 4 and cfg.data.shuffle is True
        rows = read_table(Path(cfg.data.train_files))[0]
        assert len(rows) == len(tiny_plan()) and {r[ROLLOUT_N] for r in rows} == {4}
        # verl's own resolution of the DAPO metric (None: no group filtering).
        metric = PPOTrainer._resolve_filter_groups_metric(SimpleNamespace(config=cfg))
        assert metric == ("reward" if dapo else None)


# ----------------------------------------------------------------- PODS down-sampling on verl


def test_launch_with_downsampling_builds_sgpos_replay_buffer_through_verl(tmp_path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils.config import validate_config

    from sgpo.verl.sampler import DownsampleReplayBuffer

    cfg = compose(launch_overrides(tmp_path, DOWNSAMPLE_TO="4"))
    validate_config(
        cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
    )
    trainer = SimpleNamespace(config=cfg, trainer_mode="sync", _add_prompts_to_generate=None)
    buffer = PPOTrainer._build_replay_buffer(trainer)  # verl's own loading of a custom sampler
    assert isinstance(buffer, DownsampleReplayBuffer) and isinstance(buffer, ReplayBuffer)
    assert buffer.downsample_to == 4
    # without it (the export's downsample_to is 0 here), verl's built-in buffer
    plain = compose(launch_overrides(tmp_path / "plain"))
    assert plain.trainer.v1.sampler.custom_sampler.path is None
    for script, size in (("run_dapo.sh", "4"), ("run_sgpo.sh", "1")):
        refused = launch(tmp_path / f"refused-{script}", script, DOWNSAMPLE_TO=size)
        assert refused.returncode == 2 and "DOWNSAMPLE_TO" in refused.stderr


def test_downsampling_buffer_trains_each_groups_most_varied_and_clears_the_rest(monkeypatch):
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from sgpo.verl import sampler
    from sgpo.verl.downsample import (
        DOWNSAMPLED_METRIC,
        DOWNSAMPLED_PROMPT_TOKENS_METRIC,
        DOWNSAMPLED_RESPONSE_TOKENS_METRIC,
    )

    # two groups as verl keys them ({uid}_{session}_{index}): 1 of 6 solved, 2 of 2 solved
    rewards = {f"a_{i}_0": float(i == 4) for i in range(6)} | {"b_0_0": 1.0, "b_1_0": 1.0}
    keys = list(rewards)
    store, cleared = dict(rewards), []

    def kv_batch_get(keys, partition_id, select_fields):  # noqa: ANN001, ANN202
        assert select_fields == ["rm_scores"]
        # token-level scores: the reward sits on the last response token
        return {"rm_scores": [torch.tensor([0.0, 0.0, store[k]]) for k in keys]}

    def kv_clear(partition_id, keys):  # noqa: ANN001, ANN202
        cleared.extend(keys)

    def parent_sample(self, global_steps, partition_id, batch_size):  # noqa: ANN001, ANN202
        # as verl's agent loop tags them, with each trajectory's lengths
        tags = [
            {"status": "finished", "n": i, "prompt_len": 10 + i, "response_len": 2 * i}
            for i in range(len(keys))
        ]
        return KVBatchMeta(keys=keys, tags=tags, partition_id=partition_id), {"other": 1}

    monkeypatch.setattr(sampler.tq, "kv_batch_get", kv_batch_get)
    monkeypatch.setattr(sampler.tq, "kv_clear", kv_clear)
    monkeypatch.setattr(ReplayBuffer, "sample", parent_sample)
    buffer = sampler.DownsampleReplayBuffer(
        trainer_mode="sync",
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs=OmegaConf.create({"downsample_to": 4}),
    )
    batch, metrics = buffer.sample(1, "train", 2)
    expected = ["a_0_0", "a_1_0", "a_2_0", "a_4_0", "b_0_0", "b_1_0"]
    assert batch.keys == expected and [t["n"] for t in batch.tags] == [0, 1, 2, 4, 6, 7]
    assert sorted(cleared) == ["a_3_0", "a_5_0"]
    # the cleared trajectories' tokens (n = 3 and 5), which sgpo flops charges them at
    tokens = {DOWNSAMPLED_PROMPT_TOKENS_METRIC: 13 + 15, DOWNSAMPLED_RESPONSE_TOKENS_METRIC: 6 + 10}
    assert metrics == {"other": 1, DOWNSAMPLED_METRIC: 2} | tokens
    # verl's GRPO advantage over the kept subset: the one success and three failures of group a
    scores = torch.tensor([[rewards[k]] for k in batch.keys])
    adv, _ = core_algos.compute_grpo_outcome_advantage(
        scores,
        torch.ones_like(scores),
        np.array([k.split("_")[0] for k in batch.keys], dtype=object),
        norm_adv_by_std_in_grpo=False,
    )
    assert adv[:4, 0].tolist() == pytest.approx([-0.25, -0.25, -0.25, 0.75])
    assert adv[4:, 0].tolist() == [0.0, 0.0]
    # validation batches stay whole
    cleared.clear()
    whole, val_metrics = buffer.sample(1, "val", 2)
    assert whole.keys == keys and cleared == [] and DOWNSAMPLED_METRIC not in val_metrics
    # with dead groups dropped as well: group b (all solved) is cleared too
    buffer.drop_equal_groups = True
    cleared.clear()
    batch, metrics = buffer.sample(1, "train", 2)
    assert batch.keys == expected[:4] and sorted(cleared) == ["a_3_0", "a_5_0", "b_0_0", "b_1_0"]
    tokens = {DOWNSAMPLED_PROMPT_TOKENS_METRIC: 13 + 15 + 16 + 17}
    tokens[DOWNSAMPLED_RESPONSE_TOKENS_METRIC] = 6 + 10 + 12 + 14
    assert metrics == {"other": 1, DOWNSAMPLED_METRIC: 4} | tokens

    def build(kwargs: dict) -> sampler.DownsampleReplayBuffer:
        return sampler.DownsampleReplayBuffer(
            trainer_mode="sync",
            trainer_config=OmegaConf.create({}),
            max_off_policy_threshold=None,
            max_off_policy_strategy="drop",
            sampler_kwargs=OmegaConf.create(kwargs),
        )

    drop_only = build({"drop_equal_groups": True})  # mixed groups trained whole
    assert (drop_only.downsample_to, drop_only.drop_equal_groups) == (0, True)
    with pytest.raises(ValueError, match="downsample_to"):
        build({})
    with pytest.raises(ValueError, match="drop_equal_groups"):
        build({"drop_equal_groups": "yes"})


class ConfigOwner:
    """Stands for verl's trainer, to which the replay buffer's refill_fn is bound."""

    def __init__(self, config: object) -> None:
        self.config = config

    def refill(self, num_prompts: int) -> int:
        return num_prompts


def test_whole_batch_denominator_makes_verls_loss_the_one_without_the_drop(monkeypatch):
    """Dead groups dropped with drop_equal_denominator=generated: verl's own token-mean PPO loss
    over the trained trajectories, advantages from sgpo's estimator through verl's v1 entry
    point, equals the loss over the whole batch with verl's GRPO advantages, and so does its
    gradient; without the scale (the kept denominator) it does not."""
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from sgpo.verl import sampler
    from sgpo.verl.downsample import ADVANTAGE_SCALE_METRIC, WHOLE_BATCH_ESTIMATOR

    # group a: 2 of 6 solved (PODS to 4 keeps its 4 most varied), b: all solved (dead),
    # c: 1 of 3 solved (kept whole)
    rewards = {f"a_{i}_0": float(i in (1, 4)) for i in range(6)}
    rewards |= {"b_0_0": 1.0, "b_1_0": 1.0, "b_2_0": 1.0}
    rewards |= {f"c_{i}_0": float(i == 2) for i in range(3)}
    keys = list(rewards)
    lengths = dict(zip(keys, [3, 5, 2, 4, 6, 1, 7, 2, 5, 3, 4, 6], strict=True))
    monkeypatch.setattr(
        sampler.tq,
        "kv_batch_get",
        lambda keys, partition_id, select_fields: {
            "rm_scores": [torch.tensor([0.0, rewards[k]]) for k in keys]
        },
    )
    monkeypatch.setattr(sampler.tq, "kv_clear", lambda partition_id, keys: None)
    tags = [{"status": "success", "response_len": lengths[k]} for k in keys]
    monkeypatch.setattr(
        ReplayBuffer,
        "sample",
        lambda self, global_steps, partition_id, batch_size: (
            KVBatchMeta(keys=keys, tags=tags, partition_id=partition_id),
            {},
        ),
    )
    config = OmegaConf.create(  # what the buffer checks of verl's trainer config
        {
            "algorithm": {"adv_estimator": WHOLE_BATCH_ESTIMATOR},
            "actor_rollout_ref": {
                "actor": {
                    "loss_agg_mode": "token-mean",
                    "policy_loss": {"loss_mode": "vanilla"},
                    "entropy_coeff": 0,
                    "use_kl_loss": False,
                    "ppo_mini_batch_size": 3,
                },
                "rollout": {"n": 4},  # one mini-batch holds 12 trajectories: the whole step
            },
        }
    )

    def build(
        denominator: str, drop: dict | None = None, verl_config: object = config
    ) -> sampler.DownsampleReplayBuffer:
        kwargs = {"downsample_to": 4, "drop_equal_groups": True} if drop is None else drop
        return sampler.DownsampleReplayBuffer(
            trainer_mode="sync",
            trainer_config=OmegaConf.create({}),  # verl passes trainer.v1.sync here
            max_off_policy_threshold=None,
            max_off_policy_strategy="drop",
            sampler_kwargs=OmegaConf.create(kwargs | {"drop_equal_denominator": denominator}),
            refill_fn=ConfigOwner(verl_config).refill,
        )

    whole = build("kept")  # the batch before the drop: PODS only
    whole.drop_equal_groups = False
    whole_batch, _ = whole.sample(1, "train", 3)
    trained_batch, metrics = build("generated").sample(1, "train", 3)
    assert [k[0] for k in whole_batch.keys] == list("aaaabbbccc")
    assert [k[0] for k in trained_batch.keys] == list("aaaaccc")
    scale = metrics[ADVANTAGE_SCALE_METRIC]
    trained_tokens = sum(lengths[k] for k in trained_batch.keys)
    assert scale == pytest.approx(trained_tokens / sum(lengths[k] for k in whole_batch.keys))

    width = max(lengths.values())
    torch.manual_seed(0)
    old_log_prob = {k: -torch.rand(width) for k in keys}
    new_log_prob = {k: old_log_prob[k] + 0.3 * torch.randn(width) for k in keys}
    actor = OmegaConf.create(
        {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}
    )

    def loss_and_grad(batch_keys: list[str], estimator: str) -> tuple[float, dict]:
        scores, mask = reward_tensors(
            [rewards[k] for k in batch_keys], [lengths[k] for k in batch_keys]
        )
        scores, mask = scores[:, :width], mask[:, :width]
        data = DataProto.from_dict(
            tensors={"token_level_rewards": scores, "response_mask": mask},
            non_tensors={"uid": np.array([k.split("_")[0] for k in batch_keys], dtype=object)},
        )
        data = compute_advantage_for_multi_trajectories(
            data, batch_keys=batch_keys, adv_estimator=estimator, config=OmegaConf.create({})
        )
        log_prob = torch.stack([new_log_prob[k] for k in batch_keys]).requires_grad_()
        actor.global_batch_info = {"dp_size": 1, "batch_num_tokens": int(mask.sum())}
        loss, _ = core_algos.compute_policy_loss_vanilla(
            torch.stack([old_log_prob[k] for k in batch_keys]),
            log_prob,
            data.batch["advantages"],
            mask,
            "token-mean",
            actor,
        )
        loss.backward()
        return loss.item(), dict(zip(batch_keys, log_prob.grad, strict=True))

    sampler.STEP_SCALE.put(len(trained_batch.keys), scale)  # as the buffer's sample() left it
    dropped_loss, dropped_grad = loss_and_grad(trained_batch.keys, WHOLE_BATCH_ESTIMATOR)
    whole_loss, whole_grad = loss_and_grad(whole_batch.keys, "grpo")
    assert dropped_loss == pytest.approx(whole_loss, rel=1e-6) and whole_loss != 0
    for key in whole_batch.keys:  # the dead group's gradient is zero: dropping it loses nothing
        expected = whole_grad[key]
        got = dropped_grad.get(key, torch.zeros_like(expected))
        assert torch.allclose(got, expected, atol=1e-7), key
    kept_loss, _ = loss_and_grad(trained_batch.keys, "grpo")  # verl's denominator: what it trains
    assert kept_loss == pytest.approx(whole_loss / scale, rel=1e-6)

    # the estimator refuses an advantage the buffer did not scale, or one for another batch
    with pytest.raises(RuntimeError, match="drop_equal_denominator=generated"):
        loss_and_grad(trained_batch.keys, WHOLE_BATCH_ESTIMATOR)
    sampler.STEP_SCALE.put(len(trained_batch.keys) + 1, scale)
    with pytest.raises(RuntimeError, match="trajectories"):
        loss_and_grad(trained_batch.keys, WHOLE_BATCH_ESTIMATOR)
    # ... and the buffer a config where the scale would not give the whole batch's loss
    for path, value in (
        ("algorithm.adv_estimator", "grpo"),
        ("actor_rollout_ref.actor.loss_agg_mode", "seq-mean-token-mean"),
        ("actor_rollout_ref.actor.entropy_coeff", 0.01),
        ("actor_rollout_ref.actor.policy_loss.loss_mode", "clip_cov"),
    ):
        changed = OmegaConf.merge(config, OmegaConf.from_dotlist([f"{path}={value}"]))
        with pytest.raises(ValueError, match=path):
            build("generated", verl_config=changed)
    with pytest.raises(ValueError, match="built by verl's trainer"):
        build("generated", verl_config=None)
    # ... and a step that would train more than one mini-batch (7 trajectories, 2 x 3 a batch)
    two_batches = OmegaConf.merge(config, OmegaConf.from_dotlist(["actor_rollout_ref.rollout.n=2"]))
    with pytest.raises(RuntimeError, match="more than one mini-batch"):
        build("generated", verl_config=two_batches).sample(1, "train", 3)
    with pytest.raises(ValueError, match="drop_equal_denominator"):
        build("generated", drop={"downsample_to": 4})  # nothing dropped
    with pytest.raises(ValueError, match="drop_equal_denominator"):
        build("all")


def test_launch_with_the_whole_batch_denominator_gives_a_config_verl_accepts(tmp_path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from sgpo.verl.downsample import WHOLE_BATCH_ESTIMATOR
    from sgpo.verl.sampler import DownsampleReplayBuffer

    env = {"DROP_EQUAL_GROUPS": "1", "DROP_EQUAL_DENOMINATOR": "generated"}
    cfg = compose(launch_overrides(tmp_path, "run_grpo.sh", **env))
    validate_config(
        cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
    )
    assert not need_critic(cfg)  # a GRPO-style estimator: no critic
    trainer = SimpleNamespace(
        config=cfg, trainer_mode="sync", _add_prompts_to_generate=ConfigOwner(cfg).refill
    )
    buffer = PPOTrainer._build_replay_buffer(trainer)  # the config passes the buffer's checks
    assert isinstance(buffer, DownsampleReplayBuffer) and buffer.whole_batch_denominator
    assert core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator).__module__ == (
        "sgpo.verl.sampler"
    )
    assert cfg.algorithm.adv_estimator == WHOLE_BATCH_ESTIMATOR


# ----------------------------------------------------------------- skip on history on verl

HISTORY = {
    "history_explore": 0.3,
    "history_min_streak": 1,
    "history_target": 0.0,
    "history_seed": 5,
}


class FakeTrainer:
    """What verl's PPOTrainer methods under test read of `self`, with verl's own prompt fetch
    (_next_train_batch: gen_batch_size chunks from the dataloader, wrapping at an epoch's
    end); refill_fn is bound to it, as verl binds the trainer's own _add_prompts_to_generate
    (trainer_base._build_replay_buffer)."""

    _fetch_one_gen_batch = PPOTrainer._fetch_one_gen_batch
    _next_train_batch = PPOTrainer._next_train_batch

    def __init__(self, cfg, tokenizer) -> None:  # noqa: ANN001
        self.config, self.tokenizer, self.processor = cfg, tokenizer, None
        self.trainer_mode, self.parameter_sync_step, self.global_steps = "sync", 1, 1
        self.refills: list[int] = []  # each refill's number of prompts
        self.on_refill = lambda num_prompts: None  # what generating them leaves in the queue

    def _add_prompts_to_generate(self, num_prompts: int) -> int:
        self.refills.append(num_prompts)
        self.on_refill(num_prompts)
        return num_prompts


def history_trainer(tmp_path: Path):  # noqa: ANN201 - (FakeTrainer, ReplayBuffer)
    """The launch's overrides for an export with skips on history, composed by hydra and
    validated by verl, then verl's own dataloader and replay-buffer setup on them."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    data = tmp_path / "history.parquet"
    export_verl_parquet(tiny_plan(), {}, data, "sgpo/addition", SYSTEM, VERIFIER, history=HISTORY)
    cfg = compose(launch_overrides(tmp_path, SKIP_EXPORT="1", DATA=str(data)))
    validate_config(
        cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
    )
    trainer = FakeTrainer(cfg, hf_tokenizer(str(tmp_path / "model")))
    PPOTrainer._init_dataloader(trainer)  # loads data.custom_cls, builds the dataloader
    return trainer, PPOTrainer._build_replay_buffer(trainer)


def test_launch_with_history_skips_drawn_rows_through_verls_dataloader(tmp_path, monkeypatch):
    from sgpo.core.online import epoch_visits
    from sgpo.verl.sampler import HistoryDataset, HistoryReplayBuffer

    trainer, buffer = history_trainer(tmp_path)
    dataset = trainer.train_dataset
    assert isinstance(dataset, HistoryDataset) and isinstance(buffer, HistoryReplayBuffer)
    assert buffer.history is dataset.history and buffer.downsample_to == 0
    assert trainer.train_dataloader.batch_size == 1  # refills row by row
    kept = kept_in_order(tiny_plan())
    ids = [q.query_id for q in kept]
    # epoch 0 through verl's own fetch (_next_train_batch): every row generated with its G
    rows = [trainer._next_train_batch(1) for _ in kept]
    assert [r["extra_info"][0]["query_id"] for r in rows] == ids
    assert [int(r[ROLLOUT_N][0]) for r in rows] == [q.group_size for q in kept]
    # the step's groups come back: the first half all correct, the rest mixed
    half = len(ids) // 2
    dataset.history.observe_step([(q, [1.0, 1.0]) for q in ids[:half]])
    dataset.history.observe_step([(q, [0.0, 1.0]) for q in ids[half:]])
    expected = set(epoch_visits(ids, dataset.history.zero_streaks, 0.3, 5, 1))
    assert set(ids[half:]) <= expected and len(expected) < len(ids)  # some solved ones skip
    # epoch 1: verl's dataloader wraps around; skipped rows get __rollout_n__ = 0
    rows = [trainer._next_train_batch(1) for _ in kept]
    drawn = {r["extra_info"][0]["query_id"]: int(r[ROLLOUT_N][0]) for r in rows}
    assert {q for q, n in drawn.items() if n > 0} == expected
    assert dataset.history.skipped == len(ids) - len(expected)
    # verl's rollout worker starts no session for a skipped row, G for a generated one
    sessions = [start_sessions(r, monkeypatch)[0] for r in rows]
    assert [len(s) for s in sessions] == [drawn[r["extra_info"][0]["query_id"]] for r in rows]
    # the dataset's state rides in verl's dataloader checkpoint (trainer_base._save_checkpoint)
    state = trainer.train_dataloader.state_dict()
    resumed, _ = history_trainer(tmp_path / "resumed")
    resumed.train_dataloader.load_state_dict(state)
    assert resumed.train_dataset.history.epoch == -1  # applied when verl next iterates it
    resumed.train_dataloader_it = iter(resumed.train_dataloader)
    assert resumed.train_dataset.history.state_dict() == dataset.history.state_dict()


def test_history_buffer_evicts_skipped_groups_refills_and_reports_rewards(tmp_path, monkeypatch):
    """verl's own ReplayBuffer.sample loop over a fake TransferQueue: a group that finished
    with no trajectory (a skipped row) is evicted and refilled through verl's refill_fn, and
    the step's groups reach the dataset's streaks."""
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1 import replay_buffer

    from sgpo.verl import sampler
    from sgpo.verl.history import GENERATED_METRIC, HISTORY_REPEATED_METRIC, HISTORY_SKIPPED_METRIC

    trainer, buffer = history_trainer(tmp_path)
    buffer.poll_interval = 0.0
    ids = [q.query_id for q in kept_in_order(tiny_plan())]
    store: dict[str, dict] = {}  # the "train" partition: key -> tag
    values: dict[str, tuple[float, str]] = {}  # trajectory key -> (reward, query id)

    def add_group(uid: str, query_id: str, rewards: list[float]) -> None:
        store[uid] = {"is_prompt": True, "status": "finished", "global_steps": 1}
        for session, reward in enumerate(rewards):
            store[f"{uid}_{session}_0"] = {"status": "success", "global_steps": 1}
            values[f"{uid}_{session}_0"] = (reward, query_id)

    add_group("a", ids[0], [1.0, 1.0])
    add_group("b", ids[1], [0.0, 1.0])
    add_group("skipped", ids[2], [])  # __rollout_n__ = 0: finished, no trajectory

    # the refilled row comes back generated
    trainer.on_refill = lambda num_prompts: add_group("c", ids[3], [0.0, 0.0, 0.0])

    def kv_clear(partition_id, keys):  # noqa: ANN001, ANN202
        for key in keys:
            store.pop(key, None)

    def kv_batch_get(keys, partition_id, select_fields):  # noqa: ANN001, ANN202
        assert select_fields == ["rm_scores", "extra_info"]
        return {
            "rm_scores": [torch.tensor([0.0, values[k][0]]) for k in keys],
            "extra_info": [{"query_id": values[k][1], "index": 0} for k in keys],
        }

    monkeypatch.setattr(replay_buffer.tq, "kv_list", lambda: {"train": dict(store)})
    monkeypatch.setattr(replay_buffer.tq, "kv_clear", kv_clear)
    monkeypatch.setattr(sampler.tq, "kv_batch_get", kv_batch_get)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=3)
    assert isinstance(batch, KVBatchMeta)
    assert trainer.refills == [1]  # one skipped row, one more drawn
    assert sorted({k.split("_")[0] for k in batch.keys}) == ["a", "b", "c"]
    assert "skipped" not in store  # evicted from the queue
    assert trainer.train_dataset.history.zero_streaks == {ids[0]: 1, ids[1]: 0, ids[3]: 1}
    assert metrics[GENERATED_METRIC] == 7 and HISTORY_SKIPPED_METRIC in metrics
    assert metrics[HISTORY_REPEATED_METRIC] == 0  # every visit of the step a distinct query
    assert sampler.FAILURE_EVICTED_METRIC not in metrics  # a skip is not a rollout failure


def test_whole_batch_scale_survives_the_padding_verl_adds_before_the_advantage(monkeypatch):
    # PPOTrainer._step_once: the buffer's sample() -> _balance_batch pads the batch to a
    # divisible size (padding_utils) -> the advantage. The scale counted the real trajectories.
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo import padding_utils

    from sgpo.verl import sampler
    from sgpo.verl.downsample import WHOLE_BATCH_ESTIMATOR

    keys = [f"a_{i}_0" for i in range(4)] + [f"c_{i}_0" for i in range(3)]
    tags = [{"status": "success", "prompt_len": 5, "response_len": 3, "seq_len": 8} for _ in keys]
    batch = KVBatchMeta(keys=keys, tags=tags, partition_id="train")
    template = {
        "prompts": torch.zeros(5, dtype=torch.long),
        "responses": torch.zeros(3, dtype=torch.long),
        "input_ids": torch.zeros(8, dtype=torch.long),
        "attention_mask": torch.ones(8, dtype=torch.long),
        "position_ids": torch.arange(8),
        "response_mask": torch.ones(3, dtype=torch.long),
    }
    fake_queue = SimpleNamespace(
        kv_batch_get=lambda keys, partition_id: [dict(template)], kv_batch_put=lambda **_: None
    )
    monkeypatch.setattr(padding_utils, "tq", fake_queue)
    padded = padding_utils.upsample_batch_to_divisible_size(batch, 8, 0)
    assert len(padded.keys) == 8  # one padding trajectory
    rewards = torch.zeros(8, 3)
    rewards[[0, 4], -1] = 1.0
    uids = np.array([k.split("_")[0] for k in padded.keys], dtype=object)

    def advantages(estimator: str) -> torch.Tensor:  # verl's own call
        data = DataProto.from_dict(
            tensors={"token_level_rewards": rewards, "response_mask": torch.ones(8, 3)},
            non_tensors={"uid": uids},
        )
        config = OmegaConf.create({"norm_adv_by_std_in_grpo": False})
        return compute_advantage_for_multi_trajectories(
            data, batch_keys=padded.keys, adv_estimator=estimator, config=config
        ).batch["advantages"]

    sampler.STEP_SCALE.put(len(keys), 0.6)  # what the buffer's sample() left for 7 trajectories
    scaled = advantages(WHOLE_BATCH_ESTIMATOR)
    # mean-centred within each real group (no std scaling), times the buffer's scale
    expected = group_advantages(rewards[:7, -1].tolist(), [0] * 4 + [1] * 3)
    assert torch.allclose(scaled[:7, -1], 0.6 * torch.tensor(expected))


@pytest.mark.parametrize("extra_info", ["no query ids", "none at all", "a query id twice"])
def test_history_dataset_builds_a_held_out_parquet_without_query_ids(tmp_path, extra_info):
    # verl builds the validation set with data.custom_cls too; VAL_DATA may be any verl parquet
    import pyarrow as pa
    import pyarrow.parquet as pq
    from verl.trainer.ppo.utils import create_rl_dataset

    from sgpo.verl.sampler import HistoryDataset

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "tok")
    rows = [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"{i}+1="}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"split": "test", "index": i},
        }
        for i in range(4)
    ]
    for row in rows:
        if extra_info == "none at all":
            del row["extra_info"]
        elif extra_info == "a query id twice":
            row["extra_info"]["query_id"] = "add:1+1"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "val.parquet")
    config = data_config(
        cache_dir=str(tmp_path / "cache"),
        gen_batch_size=1,
        custom_cls={"path": "pkg://sgpo.verl.sampler", "name": "HistoryDataset"},
        sgpo_history={"explore": 0.3, "min_streak": 1, "target": 0.0, "seed": 5},
    )
    dataset = create_rl_dataset(
        [str(tmp_path / "val.parquet")],
        config,
        hf_tokenizer(str(tmp_path / "tok")),
        None,
        is_train=False,
    )
    assert isinstance(dataset, HistoryDataset) and len(dataset) == 4
    assert all(ROLLOUT_N not in dataset[i] for i in range(4))  # nothing reported: no skip


def test_verl_reads_the_exported_held_out_split_and_scores_it_as_sgpo(tmp_path):
    """sgpo export-verl --val-out (VAL_DATA=eval): verl's dataset holds every held-out query,
    and compute_score on an item's fields (what verl's reward loop passes) scores it by the
    exported verifier, its threshold and its prompt template."""
    from verl.trainer.ppo.utils import create_rl_dataset

    from sgpo.verl.export import export_held_out_for_config
    from sgpo.verl.reward import compute_score

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "tok")
    config = RunConfig.model_validate({"task": {"success_threshold": 1.0}})
    path = export_held_out_for_config(config, tmp_path / "val.parquet")
    held_out = load_task(config.task, config.seed).eval
    dataset = create_rl_dataset(
        [str(path)],
        data_config(cache_dir=str(tmp_path / "cache"), gen_batch_size=1),
        hf_tokenizer(str(tmp_path / "tok")),
        None,
        is_train=False,
    )
    assert len(dataset) == len(held_out)
    item = dataset[0]
    assert ROLLOUT_N not in item and item["extra_info"]["query_id"] == held_out[0].query_id
    answer = item["reward_model"]["ground_truth"]
    scored = compute_score(item["data_source"], answer, answer, item["extra_info"])
    assert scored["acc"] == 1.0 and item["extra_info"]["success_threshold"] == 1.0


def test_the_validation_sets_history_dataset_draws_every_row_without_bookkeeping(tmp_path, caplog):
    """verl builds data.val_files with data.custom_cls too: nothing reports its steps, so with
    the skip's bookkeeping every validation round after the first warned of rows in flight."""
    from verl.trainer.ppo.utils import create_rl_dataset

    from sgpo.verl.export import export_held_out_for_config
    from sgpo.verl.sampler import HistoryDataset

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "tok")
    config = RunConfig.model_validate({"task": {"addition": {"n_eval": 6}}})
    val = export_held_out_for_config(config, tmp_path / "val.parquet")
    train = export_held_out_for_config(config, tmp_path / "train.parquet")  # rows to draw
    data = data_config(
        cache_dir=str(tmp_path / "cache"),
        gen_batch_size=1,
        custom_cls={"path": "pkg://sgpo.verl.sampler", "name": "HistoryDataset"},
        sgpo_history={"explore": 0.3, "min_streak": 1, "target": 0.0, "seed": 5},
        train_files=[str(train)],
        val_files=[str(val)],
    )

    def built(path: Path) -> HistoryDataset:
        tok = hf_tokenizer(str(tmp_path / "tok"))
        return create_rl_dataset([str(path)], data, tok, None, is_train=False)

    validation, training = built(val), built(train)
    assert validation.validation and not training.validation
    for _ in range(3):  # three validation rounds
        for i in range(len(validation)):
            assert ROLLOUT_N not in validation[i]
    assert not validation.history.draws and "skip on history" not in caplog.text
    training[0]
    assert training.history.draws == {training.query_ids[0]: 1}
