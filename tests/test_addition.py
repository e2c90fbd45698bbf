"""The built-in addition task: split sizes follow the mix, the held-out split may have its own."""

from collections import Counter

import pytest

from sgpo.config import AdditionTaskConfig, ConfigError, load_config
from sgpo.tasks.addition import make_addition_task


def test_eval_weights_set_the_held_out_mix_only():
    cfg = AdditionTaskConfig(
        weights=[0.4, 0.1, 0.05, 0.45], eval_weights=[0.1, 0.3, 0.3, 0.3], n_train=100, n_eval=100
    )
    task = make_addition_task(cfg, seed=0)
    train = Counter(q.difficulty for q in task.train)
    held_out = Counter(q.difficulty for q in task.eval)
    assert train == {"1-digit": 40, "2-digit": 10, "3-digit": 5, "4-digit": 45}
    assert held_out == {"1-digit": 10, "2-digit": 30, "3-digit": 30, "4-digit": 30}
    assert "eval 0.1,0.3,0.3,0.3" in task.source  # profiles made for another mix are refused


def test_eval_weights_must_match_the_digits():
    with pytest.raises(ConfigError, match="eval_weights differ in length"):
        load_config(None, ["task.addition.eval_weights=[1.0]"])


def test_the_default_config_builds_its_task():
    # `sgpo profile -o DIR` without -c runs on the defaults: their mix must exist
    from sgpo.tasks import load_task

    config = load_config(None)
    task = load_task(config.task, config.seed)
    assert len(task.train) == config.task.addition.n_train
    assert len(task.eval) == config.task.addition.n_eval
