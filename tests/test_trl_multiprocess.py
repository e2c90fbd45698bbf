"""SGPOTrainer on several processes: a 2-process run (torchrun, gloo on CPU) trains what a
1-process run with the same global batch trains, step for step, to the same weights.

Both runs go through tests/trl_multiprocess_run.py in a subprocess, whose generation is faked
as a function of each row's place in the whole batch. The plan's batches with padding deal
their real rows unequally over the 2 processes (5 real rows: 2 and 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from tiny_run import TESTS, subprocess_env, tiny_tree  # noqa: E402

from sgpo.config import RunConfig  # noqa: E402
from sgpo.core.allocation import PlanRule  # noqa: E402
from sgpo.io import write_table  # noqa: E402
from sgpo.models import model_source  # noqa: E402

# In rank order; batches of 6 rows: [q4, q3] + 1 padding row, [q2, q1], [q0, q5]; of 12
# (steps_per_generation 2): [q4, q3, q2, q1] + 1 padding row, [q0, q5] + 6 padding rows.
GROUP_SIZES = {"q4": 1, "q3": 4, "q2": 4, "q1": 2, "q0": 3, "q5": 3}
GLOBAL_BATCH_ROWS = 6
PROCESSES = 2
# What each step logs that must come out the same (sgpo's keys besides)
COMPARED = (
    "loss",
    "grad_norm",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "num_tokens",
    "completions/mean_length",
    "completions/max_length",
    "completions/clipped_ratio",
    "rewards/flaky_coin/mean",
)


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trl-mp-plan") / "plan.parquet"
    rows = [
        {
            "query_id": query_id,
            "prompt": f"{query_id[1:]}+1=",
            "answer": "x",
            "difficulty": "1",
            "k": 4,
            "n_correct": 2,
            "p_hat": 0.5,
            "group_size": group_size,
            "kept": True,
            "reason": "kept",
            "rank": rank,
            "prompt_tokens": 4,
            "mean_response_tokens": 2.0,
        }
        for rank, (query_id, group_size) in enumerate(GROUP_SIZES.items())
    ]
    rule = PlanRule(g_min=1, g_max=4, unsolvable_keep_fraction=1.0)
    write_table(path, rows, {"rule": asdict(rule), "profile_flops": 123.0})
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    cache = tmp_path_factory.mktemp("trl-mp-model")
    return model_source(RunConfig.model_validate(tiny_tree(cache)))


def run(
    model_dir: str, plan: Path, out: Path, settings: dict, processes: int
) -> tuple[list[dict], dict, dict[str, torch.Tensor]]:
    """(log history, sgpo totals, final weights) of a run on `processes` processes, whose
    global batch is GLOBAL_BATCH_ROWS rows per micro-step."""
    out.mkdir(parents=True)
    per_device = {"per_device_train_batch_size": GLOBAL_BATCH_ROWS // processes}
    script = [str(TESTS / "trl_multiprocess_run.py"), model_dir, str(plan), str(out)]
    script.append(json.dumps(settings | per_device))
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(processes)]
    env = subprocess_env() | {
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        # without it a gloo process sometimes aborts at interpreter exit, its results
        # written ("terminate called without an active exception")
        "PYTHONFAULTHANDLER": "1",
    }
    done = subprocess.run(
        launcher + script, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    ended = all((out / f"rank{r}.done").exists() for r in range(processes))
    assert ended, f"the run did not reach its end:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    # every process holds the same metrics and totals (the main one logs and saves them)
    for result in results[1:]:
        assert step_logs(result["log_history"]) == step_logs(results[0]["log_history"])
        assert result["totals"] == results[0]["totals"]
    return results[0]["log_history"], results[0]["totals"], torch.load(out / "weights.pt")


def step_logs(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in h.items() if k in COMPARED or k.startswith("sgpo/")}
        for h in history
        if "loss" in h
    ]


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"drop_equal_groups": True},
        {"steps_per_generation": 2, "gradient_accumulation_steps": 2},
        {"reestimate": True, "replan_every": 1},
        {"history_explore": 0.5},
        {"fake_vllm_server": True},
    ],
    ids=[
        "default",
        "drop_equal_groups",
        "steps_per_generation",
        "reestimate",
        "history",
        "vllm_server",
    ],
)
def test_two_processes_train_as_one_does(
    model_dir: str, plan_path: Path, tmp_path: Path, settings: dict
) -> None:
    one = run(model_dir, plan_path, tmp_path / "one", settings, 1)
    two = run(model_dir, plan_path, tmp_path / "two", settings, PROCESSES)
    (one_logs, one_totals, one_weights), (two_logs, two_totals, two_weights) = one, two
    assert len(step_logs(one_logs)) == 6
    for step, (expected, got) in enumerate(
        zip(step_logs(one_logs), step_logs(two_logs), strict=True), start=1
    ):
        assert got.keys() == expected.keys(), step
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    assert two_totals == pytest.approx(one_totals)
    assert one_totals["sgpo/verifier_errors_cum"] > 0  # the sum over processes is compared
    # a batch with padding (shares with unequal real rows) and a mixed group, and training that
    # moved the weights
    assert any(
        h["sgpo/padding_rows"] and h["frac_reward_zero_std"] < 1 for h in step_logs(one_logs)
    )
    assert any(h["grad_norm"] > 0 for h in step_logs(one_logs))
    assert one_weights.keys() == two_weights.keys()
    for name, value in one_weights.items():
        assert torch.allclose(two_weights[name], value, atol=1e-6), name
