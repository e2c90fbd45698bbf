"""SGPOTrainer on several processes: a 2-process run (torchrun, gloo on CPU) trains what a
1-process run with the same global batch trains, step for step, to the same weights.

Both runs go through tests/trl_multiprocess_run.py in a subprocess, whose generation is faked
as a function of each row's place in the whole batch (growth's and down-sampling's extra
responses, of each request's place in its round across processes). The plan's batches with
padding deal their real rows unequally over the 2 processes (5 real rows: 2 and 3; 1 real
row: none and 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from tiny_run import (  # noqa: E402
    TESTS,
    hand_plan_row,
    subprocess_env,
    tiny_model_dir,
    write_hand_plan,
)

from sgpo.trl.data import PAD_GROUP, PlanSampler, StepSchedule, load_plan  # noqa: E402

# In rank order; batches of 6 rows: [q4, q3] + 1 padding row, [q2, q1], [q0, q5], [q6] + 5
# padding rows (the first process holds no real row); of 12 (steps_per_generation 2): [q4, q3,
# q2, q1] + 1 padding row, [q0, q5, q6] + 5 padding rows.
GROUP_SIZES = {"q4": 1, "q3": 4, "q2": 4, "q1": 2, "q0": 3, "q5": 3, "q6": 1}
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
        hand_plan_row(query_id, f"{query_id[1:]}+1=", group_size, rank)
        for rank, (query_id, group_size) in enumerate(GROUP_SIZES.items())
    ]
    return write_hand_plan(path, rows)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_model_dir(tmp_path_factory.mktemp("trl-mp-model"))


def launch(
    model_dir: str,
    plan: Path,
    out: Path,
    settings: dict,
    processes: int,
    global_rows: int = GLOBAL_BATCH_ROWS,
) -> subprocess.CompletedProcess:
    """tests/trl_multiprocess_run.py on `processes` processes (torchrun beyond one), whose
    global batch is `global_rows` rows per micro-step. A collective call one process never
    makes fails the run after 60 s (ddp_timeout) rather than hang it."""
    out.mkdir(parents=True)
    per_device = {"per_device_train_batch_size": global_rows // processes, "ddp_timeout": 60}
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
    return subprocess.run(
        launcher + script, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def run(
    model_dir: str,
    plan: Path,
    out: Path,
    settings: dict,
    processes: int,
    global_rows: int = GLOBAL_BATCH_ROWS,
) -> tuple[list[dict], dict, dict[str, torch.Tensor]]:
    """(log history, sgpo totals, final weights) of a launched run, which must reach its end
    (its return code alone does not tell, see launch). A reward function's log_extra column
    must line up with TRL's completions table after every batch."""
    done = launch(model_dir, plan, out, settings, processes, global_rows)
    ended = all((out / f"rank{r}.done").exists() for r in range(processes))
    assert ended, f"the run did not reach its end:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    # every process holds the same metrics and totals (the main one logs and saves them)
    for result in results[1:]:
        assert step_logs(result["log_history"]) == step_logs(results[0]["log_history"])
        assert result["totals"] == results[0]["totals"]
    for step, table in enumerate(results[0]["tables"], start=1):
        if settings.get("log_extra"):
            assert table["completion_seen"] == table["completion"], step
    return results[0]["log_history"], results[0]["totals"], torch.load(out / "weights.pt")


def loss_tokens(out: Path, processes: int, accumulated: int) -> list[int]:
    """The tokens each optimizer step's loss counted (over its `accumulated` micro-steps,
    which hold other rows with other numbers of processes), summed over the processes."""
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    micro = [sum(counts) for counts in zip(*(r["loss_tokens"] for r in ranks), strict=True)]
    return [sum(micro[i : i + accumulated]) for i in range(0, len(micro), accumulated)]


def step_logs(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in h.items() if k in COMPARED or k.startswith("sgpo/")}
        for h in history
        if "loss" in h
    ]


# About 8-10 s each on 2 CPU cores: five in the default suite, the others with -m slow.
@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="default"),
        pytest.param({"drop_equal_groups": True}, id="drop_equal_groups"),
        pytest.param({"reestimate": True, "replan_every": 1}, id="reestimate"),
        pytest.param({"downsample_to": 3}, id="downsample_to"),
        pytest.param({"grow_max": 5, "grow_round": 2}, id="grow_max"),
        # a process without real rows runs the reward model too (its forward pass is a
        # collective call here, as under ZeRO-3 or FSDP)
        pytest.param({"reward_model": True, "log_extra": True}, id="reward_model"),
        pytest.param({"reward_model": True, "downsample_to": 3}, id="reward_model_downsample_to"),
        pytest.param(
            {"steps_per_generation": 2, "gradient_accumulation_steps": 2},
            id="steps_per_generation",
            marks=pytest.mark.slow,
        ),
        pytest.param({"history_explore": 0.5}, id="history", marks=pytest.mark.slow),
        pytest.param(
            {"num_iterations": 2, "scale_rewards": "batch"},
            id="num_iterations_batch_scale",
            marks=pytest.mark.slow,
        ),
        pytest.param({"fake_vllm_server": True}, id="vllm_server", marks=pytest.mark.slow),
        pytest.param(
            {"fake_vllm_server": True, "downsample_to": 3},
            id="vllm_server_downsample_to",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_two_processes_train_as_one_does(
    model_dir: str, plan_path: Path, tmp_path: Path, settings: dict
) -> None:
    one = run(model_dir, plan_path, tmp_path / "one", settings, 1)
    two = run(model_dir, plan_path, tmp_path / "two", settings, PROCESSES)
    assert_same_training(one, two)
    # the loss and its statistics (entropy, clip ratios) count the same tokens: with
    # drop_equal_groups not those of the rows a process adds to forward as many as the busiest
    accumulated = settings.get("gradient_accumulation_steps", 1)
    assert loss_tokens(tmp_path / "one", 1, accumulated) == loss_tokens(
        tmp_path / "two", PROCESSES, accumulated
    )
    if settings.get("log_extra"):  # the same table, row for row
        tables = [json.loads((tmp_path / r / "rank0.json").read_text()) for r in ("one", "two")]
        assert tables[0]["tables"] == tables[1]["tables"]
    if "downsample_to" in settings or "grow_max" in settings:
        # groups drew more responses than they hold rows (in rounds, shared out over processes)
        logs = step_logs(one[0])
        assert sum(h["sgpo/rollouts"] for h in logs) > sum(h["sgpo/batch_rollouts"] for h in logs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="static"),
        # checkpoint-3 holds the plan epoch's last batch drawn ahead; skips from the next one
        pytest.param({"history_explore": 0.5}, id="history"),
    ],
)
def test_two_processes_resume_to_what_one_trains(
    model_dir: str, plan_path: Path, tmp_path: Path, settings: dict
) -> None:
    one = run(model_dir, plan_path, tmp_path / "one", settings, 1)
    saving = {"save_strategy": "steps", "save_steps": 3}
    run(model_dir, plan_path, tmp_path / "saved", settings | saving, PROCESSES)
    checkpoint = tmp_path / "saved" / "trainer" / "checkpoint-3"
    resume = settings | {"resume_from": str(checkpoint)}
    resumed = run(model_dir, plan_path, tmp_path / "resumed", resume, PROCESSES)
    # the resumed run generated the last 3 steps' batches only (3 rows each per process)
    assert json.loads((tmp_path / "resumed" / "rank0.json").read_text())["generated"] == [3] * 3
    assert_same_training(one, resumed)
    if "history_explore" in settings:
        assert one[1]["sgpo/history_skipped"] > 0


def assert_same_training(
    one: tuple[list[dict], dict, dict[str, torch.Tensor]],
    two: tuple[list[dict], dict, dict[str, torch.Tensor]],
    but: tuple[str, ...] = (),
) -> None:
    """The runs' per-step metrics, sgpo totals and final weights are the same (but the keys
    `but` names)."""
    (one_logs, one_totals, one_weights), (two_logs, two_totals, two_weights) = one, two
    assert len(step_logs(one_logs)) == 6
    for step, (expected, got) in enumerate(
        zip(step_logs(one_logs), step_logs(two_logs), strict=True), start=1
    ):
        assert got.keys() == expected.keys(), step
        for key, value in expected.items():
            if key in but:
                continue
            # None: TRL's mean over no scorable row (a batch whose one real row failed to score)
            expected_value = value if value is None else pytest.approx(value, rel=1e-5, abs=1e-6)
            assert got[key] == expected_value, (step, key)
    for key, value in one_totals.items():
        if key not in but:
            assert two_totals[key] == pytest.approx(value), key
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


def test_the_real_rows_are_dealt_evenly_over_the_processes(plan_path: Path) -> None:
    plan = load_plan(plan_path)
    schedule = StepSchedule(plan, GLOBAL_BATCH_ROWS, seed=0)
    index_of = {s.query.query_id: i for i, s in enumerate(plan.kept)}
    sampler = PlanSampler(schedule, index_of, GLOBAL_BATCH_ROWS, repeat=1, processes=2)
    # q4 (G=1) and q3 (G=4): 5 real rows, the first process's share 2 of them and 1 padding
    slots = sampler.batch_slots(schedule.next_batch())
    assert [s.group for s in slots] == [0, 1, PAD_GROUP, 1, 1, 1]
    # q2 (G=4) and q1 (G=2) in 4 shares of 3 rows: 1, 2, 1 and 2 real rows
    four_shares = PlanSampler(schedule, index_of, 12, repeat=1, processes=4)
    slots = four_shares.batch_slots(schedule.next_batch())
    pad = PAD_GROUP
    assert [s.group for s in slots] == [0, pad, pad, 0, 0, pad, 0, pad, pad, 1, 1, pad]


@pytest.mark.slow
def test_a_miscounted_log_extra_column_stops_every_process(
    model_dir: str, plan_path: Path, tmp_path: Path
) -> None:
    """A reward function logging two values for the second process's 3 completions (and
    rightly for the first's 2) is refused on every process, not only on the one it miscounted
    for (the other would wait in a gather until the launcher ends it)."""
    done = launch(model_dir, plan_path, tmp_path / "two", {"log_extra_miscounted": True}, 2)
    assert done.returncode != 0
    refusal = "logged 2 values in the column 'first_two' for 3 completions"
    assert done.stderr.count(refusal) >= PROCESSES, done.stderr[-3000:]


@pytest.mark.slow
def test_four_processes_line_up_the_completions_table(model_dir: str, tmp_path: Path) -> None:
    """A batch of 2 real rows over 4 processes leaves the first and the third without one: a
    reward function's log_extra column still lines up with TRL's completions table (run
    checks it) and comes out as one process's."""
    rows = [hand_plan_row(q, f"{q[1:]}+1=", g, r) for r, (q, g) in enumerate(FOUR_WAY.items())]
    plan = write_hand_plan(tmp_path / "plan.parquet", rows)
    settings = {"log_extra": True, "max_steps": 3}
    one = run(model_dir, plan, tmp_path / "one", settings, 1, global_rows=4)
    four = run(model_dir, plan, tmp_path / "four", settings, 4, global_rows=4)
    assert len(step_logs(one[0])) == len(step_logs(four[0])) == 3
    tables = [json.loads((tmp_path / r / "rank0.json").read_text()) for r in ("one", "four")]
    assert tables[0]["tables"] == tables[1]["tables"]
    assert [len(t["completion"]) for t in tables[1]["tables"]] == [3, 2, 3]


# Batches of 4 rows: [q0] + 1 padding row, [q1] + 2 (q2 does not fit), [q2] + 1
FOUR_WAY = {"q0": 3, "q1": 2, "q2": 3}
