"""FLOPs accounting. The convention, stated once:

N = parameters that take part in a matmul for every token: all parameters except the input
embedding table (the output projection counts even when tied to it, because it is a matmul).
A forward pass over one token at context position t (t tokens visible, itself included) costs
    2 * N  +  4 * n_layers * t * d_attn
(2N for the weight matmuls; 2 * n_layers * t * d_attn each for QK^T and attention*V, causal,
d_attn = n_heads * head_dim). Backward costs twice the forward, so training is 3x forward.
Per phase:
  profiling / rollout inference: forward over every prompt and generated token (KV cache, so
      each token once), i.e. positions 1..prompt_len+response_len;
  log-prob pass (old or reference policy): the same forward over prompt + response;
  training forward + backward: 3x that forward.
Padding is not counted: only real tokens. An engine with prefix caching (vLLM's automatic
prefix caching, SGLang's radix cache) prefills a prompt once for a group of responses to it;
shared_prefill_flops is what that saves, reported beside the convention, not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("profile", "rollout", "logprob", "train")


@dataclass(frozen=True)
class ModelShape:
    n_params: int  # N as defined above
    n_layers: int
    d_attn: int


def sequence_forward_flops(shape: ModelShape, n_tokens: int) -> float:
    """Forward FLOPs for one causal sequence of n_tokens real tokens (positions 1..n)."""
    if n_tokens <= 0:
        return 0.0
    attention_positions = n_tokens * (n_tokens + 1) / 2
    return (
        2.0 * shape.n_params * n_tokens + 4.0 * shape.n_layers * shape.d_attn * attention_positions
    )


def inference_flops(shape: ModelShape, prompt_tokens: int, response_tokens: int) -> float:
    """Generating response_tokens after a prompt, with a KV cache."""
    return sequence_forward_flops(shape, prompt_tokens + response_tokens)


def shared_prefill_flops(shape: ModelShape, prompt_tokens: int, n_responses: int) -> float:
    """What an engine with prefix caching does not spend on n_responses generated after one
    prompt: every response's prefill but the first (the KV cache of the prompt is reused)."""
    return max(n_responses - 1, 0) * sequence_forward_flops(shape, prompt_tokens)


def logprob_flops(shape: ModelShape, prompt_tokens: int, response_tokens: int) -> float:
    return sequence_forward_flops(shape, prompt_tokens + response_tokens)


def train_flops(shape: ModelShape, prompt_tokens: int, response_tokens: int) -> float:
    return 3.0 * sequence_forward_flops(shape, prompt_tokens + response_tokens)
