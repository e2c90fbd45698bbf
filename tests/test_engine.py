"""sgpo.engine.TransformersEngine: what reaches the model and what it samples from."""

from __future__ import annotations

import pytest
import torch
from tokenizers import processors
from transformers import Qwen2Config, Qwen2ForCausalLM

from sgpo.config import ModelConfig
from sgpo.embedded import build_char_tokenizer
from sgpo.engine import SamplingParams, TransformersEngine
from sgpo.errors import ConfigError
from sgpo.models import Policy

PROMPTS = ["1+2=", "35+47=", "9+9=", "123+4="]
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"


def tiny_policy(use_chat_template: bool = False) -> tuple[Policy, int]:
    """A random one-layer Qwen2 whose tokenizer adds a BOS to every text, as Llama's and
    Gemma's do; returns the policy and the BOS id."""
    tokenizer = build_char_tokenizer(["<s>"])
    bos = tokenizer.convert_tokens_to_ids("<s>")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    tokenizer.bos_token = "<s>"
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2ForCausalLM(config)
    chat = ModelConfig(use_chat_template=use_chat_template)
    return Policy(model, tokenizer, torch.device("cpu"), "tiny", chat), bos


def generate(policy: Policy, params: SamplingParams) -> list[list[int]]:
    rendered = [policy.render(p) for p in PROMPTS]
    completions = TransformersEngine(policy, batch_size=2).generate(rendered, [1, 2, 3, 4], params)
    return [c.response_ids for c in completions]


@pytest.mark.parametrize("params", [SamplingParams(greedy=True), SamplingParams(temperature=1.0)])
def test_the_models_generation_config_does_not_change_what_is_sampled(
    params: SamplingParams,
) -> None:
    policy, _ = tiny_policy()
    plain = generate(policy, params)
    # what a chat checkpoint's generation_config.json may carry (Qwen2.5-Instruct: 1.05)
    defaults = policy.model.generation_config
    defaults.repetition_penalty = 5.0
    defaults.no_repeat_ngram_size = 1
    assert generate(policy, params) == plain
    # ... and the checkpoint's settings are left as they were, to be saved with it
    assert policy.model.generation_config.repetition_penalty == 5.0


def test_a_plain_prompt_gets_the_tokenizers_bos_and_a_chat_prompt_only_its_templates() -> None:
    policy, bos = tiny_policy()
    completion = TransformersEngine(policy, 2).generate(
        ["1+2="], [0], SamplingParams(greedy=True, max_new_tokens=2)
    )[0]
    assert completion.prompt_ids == policy.tokenizer("1+2=")["input_ids"]
    assert completion.prompt_ids[0] == bos
    chat, bos = tiny_policy(use_chat_template=True)
    rendered = chat.render("1+2=")
    assert rendered.startswith("<s>")  # the template writes the BOS
    assert chat.encode([rendered])[0].count(bos) == 1


def test_the_model_is_back_in_training_mode_after_a_failed_generation() -> None:
    policy, _ = tiny_policy()
    policy.model.train()
    with pytest.raises(IndexError):  # a seed short
        TransformersEngine(policy, 2).generate(["1+2=", "3+4="], [0], SamplingParams())
    assert policy.model.training


def test_vllm_gets_the_dtype_model_dtype_means_on_its_own_device(monkeypatch) -> None:  # noqa: ANN001
    """A policy kept on the CPU (float32 under dtype auto) to leave a GPU to vLLM: vLLM still
    runs in what auto means there (bfloat16), not in the policy's float32."""
    import sys
    import types

    from sgpo.vllm_engine import VLLMEngine

    made: dict = {}
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kwargs: made.update(kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    policy, _ = tiny_policy()
    assert policy.config.dtype == "auto" and policy.model.dtype == torch.float32
    VLLMEngine(policy, batch_size=4)
    assert made["dtype"] == "bfloat16"
    policy.config = ModelConfig(dtype="float16")
    VLLMEngine(policy, batch_size=4)
    assert made["dtype"] == "float16"


def test_a_response_ends_at_the_checkpoints_end_of_turn_token_too() -> None:
    """A chat model's generation_config names its end of turn beside the tokenizer's EOS
    (Gemma's <end_of_turn>); a response stops there, and the token is kept."""
    policy, _ = tiny_policy()
    params = SamplingParams(greedy=True, max_new_tokens=6)
    first = generate(policy, params)[0][0]
    assert first != policy.tokenizer.eos_token_id
    policy.model.generation_config.eos_token_id = [policy.tokenizer.eos_token_id, first]
    assert policy.stop_token_ids() == [policy.tokenizer.eos_token_id, first]
    completion = TransformersEngine(policy, 2).generate([policy.render(PROMPTS[0])], [1], params)[0]
    assert completion.response_ids == [first] and completion.finished


def test_a_system_prompt_without_a_chat_template_is_refused_not_dropped() -> None:
    policy, _ = tiny_policy()
    policy.config = ModelConfig(use_chat_template=False, system_prompt="Be brief.")
    with pytest.raises(ConfigError, match=r"model\.system_prompt.*model\.prompt_template"):
        policy.render("1+2=")


def test_evaluation_shows_a_progress_bar_per_pass(capsys: pytest.CaptureFixture) -> None:
    # a real model's held-out pass takes minutes: it must not be a silent phase
    from sgpo.evaluate import evaluate
    from sgpo.tasks import Query

    policy, _ = tiny_policy()
    engine = TransformersEngine(policy, batch_size=1)
    queries = [Query(f"q{i}", p, "3") for i, p in enumerate(PROMPTS)]
    from sgpo.verify import VerifierStats

    score = {"score": lambda self, texts, answers, ids: [1.0] * len(texts)}
    verifier = type("Always", (), score | {"spec": "always", "stats": VerifierStats()})
    evaluate(engine, verifier(), queries, SamplingParams(max_new_tokens=2), 1, True, 0, 0.5)
    err = capsys.readouterr().err
    assert "eval (greedy)" in err and "eval (sampled)" in err


def test_a_pass_under_the_train_bar_writes_no_cursor_moves_into_a_log(
    capsys: pytest.CaptureFixture,
) -> None:
    # stderr redirected to a file: tqdm's second-line bar moved the cursor up (ESC[A), which a
    # log keeps as '[A' junk on every evaluation
    from tqdm import tqdm

    policy, _ = tiny_policy()
    engine = TransformersEngine(policy, batch_size=1)
    with tqdm(total=1, desc="train (sgpo)"):
        engine.generate(
            [policy.render(p) for p in PROMPTS],
            [1] * len(PROMPTS),
            SamplingParams(max_new_tokens=2),
            "eval",
        )
    err = capsys.readouterr().err
    assert "eval" in err and "\x1b[A" not in err


def test_prompts_the_tokenizer_reads_as_unknown_are_said(caplog: pytest.LogCaptureFixture) -> None:
    # the character tokenizer has no token for 'é' or a full-width digit: the model would
    # read <unk> where the data holds text
    from sgpo.tasks import Query, TaskData
    from sgpo.validate import check_prompts

    policy, _ = tiny_policy()
    train = [Query("a", "1+1=", "2"), Query("b", "café 1+1=", "2"), Query("c", "１+1=", "2")]
    task = TaskData(train=train, eval=[Query("e", "2+2=", "4")], source="t", train_label="t.jsonl")
    check_prompts(policy, task, 4)
    said = " ".join(caplog.text.split())
    assert "t.jsonl: 2 prompts hold text the tokenizer has no token for" in said
    assert "row 1" in said and "café" in said
    assert "eval queries" not in said  # its prompts are all known


def test_an_unknown_token_that_the_tokenizer_adds_itself_is_not_taken_for_unknown_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GPT-2's <|endoftext|> is its unknown, BOS and EOS token at once: every prompt holds it
    from sgpo.tasks import Query, TaskData
    from sgpo.validate import check_prompts

    policy, _ = tiny_policy()
    policy.tokenizer.unk_token = "<s>"  # the BOS tiny_policy's tokenizer adds to every text
    task = TaskData(train=[Query("a", "1+1=", "2")], eval=[Query("e", "2+2=", "4")], source="t")
    check_prompts(policy, task, 4)
    assert "no token for" not in caplog.text
