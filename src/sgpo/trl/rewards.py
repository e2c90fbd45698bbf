"""sgpo verifiers as TRL reward functions, so the TRL path scores answers as profiling did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sgpo.verify import import_verifier


def completion_text(completion: Any) -> str:
    """TRL passes a string, or for chat prompts a list of messages (the last is the reply)."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]


def verifier_reward(
    verifier: str | Callable[[str, str], float], answer_column: str = "answer"
) -> Callable[..., list[float]]:
    """A TRL reward function scoring each completion against the row's reference answer with
    an sgpo verifier ("module:function" or the function itself, (response, reference) -> score
    in [0, 1]). Runs inline: the verifier must be trusted code."""
    fn = import_verifier(verifier) if isinstance(verifier, str) else verifier

    def reward(completions: list, **columns: Any) -> list[float]:
        answers = columns[answer_column]
        return [float(fn(completion_text(c), a)) for c, a in zip(completions, answers, strict=True)]

    reward.__name__ = getattr(fn, "__name__", "verifier")
    return reward
