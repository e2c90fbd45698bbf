"""sgpo verifiers as TRL reward functions, so the TRL path scores answers as profiling did."""

from __future__ import annotations

from typing import Any

from sgpo.verifiers import begun_in_thinking, opens_thinking
from sgpo.verify import Verifier


def completion_text(completion: Any) -> str:
    """TRL passes a string, or for chat prompts a list of messages (the last is the reply)."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]


# What TRL passes a reward function besides the dataset's columns.
TRL_REWARD_ARGUMENTS = (
    "prompts",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
)


class VerifierReward:
    """A TRL reward function scoring each completion against its row's reference answer with
    an sgpo verifier, through the same `Verifier` profiling and `sgpo train` use: bound
    keyword arguments, the reward range rescaled to [0, 1], each call bounded by timeout_s in
    the chosen isolation (inline: by SIGALRM on the main thread; off it a hung call is judged
    late, not stopped), and a verifier that fails, hangs or returns no number scoring 0
    (counted in `.verifier.stats`). `name` is TRL's name for its metrics (default: the
    function's). With isolation process or sandbox it holds a worker and cannot be pickled.

    A completion whose prompt opened the model's thinking (a text prompt ending inside
    `<think>`, or any prompt with prompts_open_thinking=True: DeepSeek-R1-Distill's and QwQ's
    chat templates open it) is read as begun inside it, so one cut off before its `</think>`
    scores 0 instead of being read for its draft's last number, as sgpo's trainer reads it."""

    def __init__(
        self,
        verifier: str,
        answer_column: str = "answer",
        *,
        kwargs: dict | None = None,
        reward_range: tuple[float, float] = (0.0, 1.0),
        timeout_s: float = 5.0,
        isolation: str = "inline",
        id_column: str = "query_id",
        name: str | None = None,
        prompts_open_thinking: bool = False,
    ) -> None:
        if not isinstance(verifier, str):
            raise TypeError(
                f"verifier must be an import path 'package.module:function' (task.verifier, "
                f"as profiling named it), got {type(verifier).__name__}; pass any other "
                "function to TRL as a reward function of its own"
            )
        self.verifier = Verifier(
            verifier, timeout_s, isolation, kwargs, reward_range, settings=("verifier", "kwargs")
        )
        self.answer_column = answer_column
        self.id_column = id_column
        self.prompts_open_thinking = prompts_open_thinking
        # False where the caller checks a batch it scores in several calls (SGPOTrainer on
        # several processes, each scoring its own rows)
        self.checks_each_batch = True
        self.__name__ = name or verifier.partition(":")[2]  # TRL names its metrics by it

    def __call__(
        self, completions: list, prompts: list | None = None, **columns: Any
    ) -> list[float]:
        if self.answer_column not in columns:
            present = sorted(k for k in columns if k not in TRL_REWARD_ARGUMENTS)
            raise KeyError(
                f"reward {self.__name__}: the rows it scores have no column "
                f"{self.answer_column!r} (the reference answers), only {present}; pass "
                "answer_column=... or add the column"
            )
        answers = columns[self.answer_column]
        ids = columns.get(self.id_column) or [f"row {i}" for i in range(len(answers))]
        before = self.verifier.stats.counts()
        prompts = prompts if prompts is not None else [None] * len(completions)
        scores = [
            self.verifier.score_one(self.answer_text(c, p), str(a), str(q))
            for c, p, a, q in zip(completions, prompts, answers, ids, strict=True)
        ]
        # as sgpo train does: a verifier that fails on every response is broken, not strict
        if self.checks_each_batch:
            on = f"a batch of {len(scores)} completions"
            self.verifier.stats.stop_if_every_call_failed(self.verifier.spec, before, on)
        return scores

    def answer_text(self, completion: Any, prompt: Any) -> str:
        """The completion as the verifier reads it (sgpo.models.Policy.answer_text)."""
        opened = self.prompts_open_thinking or (isinstance(prompt, str) and opens_thinking(prompt))
        return begun_in_thinking(completion_text(completion), opened)

    def settings(self) -> dict[str, object]:
        """As a config's task.verifier* keys (what a plan records of its profile)."""
        return {
            "task.verifier": self.verifier.spec,
            "task.verifier_kwargs": self.verifier.kwargs,
            "task.verifier_reward_range": list(self.verifier.reward_range),
        }


verifier_reward = VerifierReward  # the name the README and examples call it by
