"""Generation engines. Every completion is sampled from its own seeded random stream, so a
query's samples do not depend on batch composition, order or interruption: exactly in float32;
in bfloat16 or float16 the padding a batch adds moves logits in their last bits, and a sample
near a tie can differ (measured: about 1 in 200 responses of the embedded model, bfloat16 on a
CPU). Only SamplingParams set the sampling: of the model's generation_config only its
eos_token_id is read, as extra stop tokens (Policy.stop_token_ids)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from sgpo.models import Policy, base_model


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 8
    greedy: bool = False


@dataclass(frozen=True)
class Completion:
    prompt_ids: list[int]
    response_ids: list[int]  # generated tokens, the stop token included when the model stopped
    text: str  # decoded response without special tokens
    finished: bool  # stopped at a stop token (False = cut at max_new_tokens)


def stream_seed(*parts: object) -> int:
    """A 63-bit seed derived from any labels, e.g. (run seed, 'profile', query id, sample)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class GenerationStopped(Exception):
    """A generate call's stop_asked() came true: it ended between two batches, and what it had
    generated is dropped."""


class GenerationEngine(Protocol):
    policy: Policy  # the model generated from, and how it renders prompts

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        params: SamplingParams,
        progress: str | None = None,  # a progress bar with this label (long passes)
        # checked before each batch: when true, the call raises GenerationStopped
        stop_asked: Callable[[], bool] | None = None,
    ) -> list[Completion]: ...


class SeededGumbelSampler(LogitsProcessor):
    """Temperature + top-p, then Gumbel noise from one generator per row: the argmax of the
    result is a sample from the filtered distribution, drawn from that row's own stream."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
            # Drop a token when the mass before it already reaches top_p (the first always stays).
            drop_sorted = (cumulative - torch.softmax(sorted_scores, dim=-1)) >= self.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        return scores + gumbel.to(scores.device)


class TransformersEngine:
    """Batched generation with transformers: left padding, KV cache, stop at EOS."""

    def __init__(self, policy: Policy, batch_size: int) -> None:
        self.policy = policy
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        params: SamplingParams,
        progress: str | None = None,
        stop_asked: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """stop_asked is checked before each batch (true: GenerationStopped). A pass that may
        be stopped passes it rather than calling on slices of its prompts: batched by length
        within each slice only, they would be padded otherwise, which in bfloat16 changes a few
        samples (see the module's docstring)."""
        encoded = self.policy.encode(prompts) if prompts else []
        # Similar lengths together keep padding small; results go back in input order.
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(prompts)
        model = self.policy.model
        base = base_model(model)
        stops = self.policy.stop_token_ids()  # read before the checkpoint's config is set aside
        was_training, checkpoint_defaults = model.training, base.generation_config
        # generate() fills every setting left unset from the model's generation_config (a chat
        # model's repetition_penalty, suppressed tokens, ...), which would sample from another
        # distribution than the one the update's log-probs score: only SamplingParams count.
        base.generation_config = GenerationConfig()
        model.eval()
        starts = range(0, len(order), self.batch_size)
        try:
            # A pass's bar sits under the train or profile bar: on a terminal on a line of its
            # own; elsewhere on the same line, as tqdm's cursor moves (ESC[A) are junk in a log.
            position = None if sys.stderr.isatty() else 0
            for start in tqdm(
                starts,
                desc=progress,
                unit="batch",
                leave=False,
                disable=not progress,
                position=position,
            ):
                if stop_asked is not None and stop_asked():
                    raise GenerationStopped
                idx = order[start : start + self.batch_size]
                batch = self._generate_batch(
                    [encoded[i] for i in idx], [seeds[i] for i in idx], params, stops
                )
                for i, completion in zip(idx, batch, strict=True):
                    results[i] = completion
        finally:
            base.generation_config = checkpoint_defaults
            model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_batch(
        self,
        prompt_ids: list[list[int]],
        seeds: list[int],
        params: SamplingParams,
        stops: list[int],
    ) -> list[Completion]:
        tok = self.policy.tokenizer
        width = max(len(p) for p in prompt_ids)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
        processors = LogitsProcessorList()
        if not params.greedy:
            processors.append(SeededGumbelSampler(seeds, params.temperature, params.top_p))
        generation_config = GenerationConfig(
            do_sample=False,  # sampling happens in SeededGumbelSampler, argmax picks its draw
            max_new_tokens=params.max_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad,
        )
        device = self.policy.device
        out = self.policy.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=generation_config,
            logits_processor=processors,
        )
        completions = []
        for row, prompt in zip(out[:, width:].tolist(), prompt_ids, strict=True):
            response = []
            finished = False
            for token in row:
                response.append(token)
                if token in stops:
                    finished = True
                    break
            text = tok.decode(response, skip_special_tokens=True)
            completions.append(Completion(prompt, response, text, finished))
        return completions
