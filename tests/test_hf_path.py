"""The real-model path without the hub: a tiny Qwen2-shaped model with a chat template, saved with
save_pretrained, run through profile -> plan -> train -> eval on a GSM8K-format file with
math-verify scoring; and a LoRA run whose adapter trains while the base stays put."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sgpo.cli import app
from sgpo.config import EmbeddedModelConfig, RunConfig, dump_config
from sgpo.core.flops import ModelShape, logprob_flops, train_flops
from sgpo.embedded import build_char_tokenizer, build_model
from sgpo.errors import ConfigError, DataError
from sgpo.io import read_jsonl, read_table
from sgpo.models import (
    add_lora,
    check_lora_targets,
    load_policy,
    model_shape,
    quiet_peft_deprecation,
)
from sgpo.plan import run_plan
from sgpo.profile import run_profile
from sgpo.report import write_report
from sgpo.rundir import weights_sha256
from sgpo.tasks import load_task, verifier_spec
from sgpo.train import Trainer, run_train

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K_TRAIN = FIXTURES / "gsm8k_train.jsonl"
GSM8K_TEST = FIXTURES / "gsm8k_test.jsonl"
TRAIN_ROWS = 12
EVAL_ROWS = 4

# Qwen2-style ChatML template (the default system message when none is given).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = build_char_tokenizer(extra_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    cfg = EmbeddedModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )
    model = build_model(cfg, tokenizer, seed=0)
    model.config.max_position_embeddings = 1024  # chat-formatted GSM8K prompts run ~200 tokens
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_config(model_dir: Path | str, **sections: dict) -> RunConfig:
    tree: dict = {
        "seed": 0,
        "model": {"name_or_path": str(model_dir), "device": "cpu", "dtype": "float32"},
        "task": {
            "kind": "file",
            "file": {"train": str(GSM8K_TRAIN), "eval": str(GSM8K_TEST), "preset": "gsm8k"},
        },
        "sampling": {"temperature": 1.0, "max_new_tokens": 8, "batch_size": 64},
        "profile": {"k": 2, "chunk_size": 5},
        # A random model solves nothing: keep every unsolvable query so the plan is not empty.
        "plan": {"g_min": 2, "g_max": 2, "unsolvable_keep_fraction": 1.0},
        "train": {"steps": 2, "rollout_budget": 4, "micro_batch_size": 8, "eval_every": 0},
        "eval": {"n_samples": 1, "greedy": True},
    }
    for key, value in sections.items():
        tree[key] = tree.get(key, {}) | value
    return RunConfig.model_validate(tree)


def test_profile_plan_train_eval(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir)
    task = load_task(config.task, config.seed)
    assert verifier_spec(config.task) == "sgpo.verifiers:math_verify"

    policy = load_policy(config)
    rendered = policy.render(task.train[0].prompt)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert f"<|im_start|>user\n{task.train[0].prompt}<|im_end|>\n" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    ids = policy.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert policy.tokenizer.convert_tokens_to_ids("<|im_start|>") in ids  # one special token

    run = tmp_path / "run"
    profile_path = run_profile(config, run)
    rows, meta = read_table(profile_path)
    assert len(rows) == TRAIN_ROWS
    assert [r["query_id"] for r in rows] == [q.query_id for q in task.train]
    assert [r["answer"] for r in rows] == [q.answer for q in task.train]
    assert all(r["k"] == 2 for r in rows)
    # Prompt tokens counted on the chat-formatted text (one token per character + specials).
    assert rows[0]["prompt_tokens"] == len(ids)
    # the profile reads the training split only
    assert meta["task"] == load_task(config.task, config.seed, require_eval=False).source
    assert "eval=<not read>" in meta["task"] and meta["model"] == str(tiny_model_dir)
    assert meta["verifier_errors"] == 0 and meta["verifier_timeouts"] == 0

    plan_path, summary = run_plan(config, profile_path, run)
    plan_rows, _ = read_table(plan_path)
    assert len(plan_rows) == TRAIN_ROWS and summary["queries"] == TRAIN_ROWS
    assert summary["kept"] == sum(r["kept"] for r in plan_rows) > 0

    result = run_train(config, run, plan_path)
    assert result["steps"] == 2 and result["task"] == task.source
    assert result["verifier_errors"] == 0 and result["verifier_timeouts"] == 0
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[0]["eval_queries"] == EVAL_ROWS
    assert (run / "final" / "config.json").exists() and (run / "summary.json").exists()

    config_path = tmp_path / "config.yaml"
    config_path.write_text(dump_config(config))
    out = tmp_path / "eval"
    cli = CliRunner().invoke(
        app,
        ["eval", "--config", str(config_path), "--model", str(run / "final"), "--out", str(out)],
    )
    assert cli.exit_code == 0, cli.output
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["eval_queries"] == EVAL_ROWS
    assert evaluation["model"] == str(run / "final")
    assert evaluation["model_sha256"] == weights_sha256(str(run / "final")) is not None
    assert 0.0 <= evaluation["eval_acc"] <= 1.0 and "eval_acc_greedy" in evaluation
    assert evaluation["verifier_errors"] == 0
    assert (evaluation["verifier"], evaluation["success_threshold"]) == (
        "sgpo.verifiers:math_verify",
        None,
    )


def test_profile_refuses_another_dataset(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, profile={"k": 1})
    run_profile(config, tmp_path)
    limited = make_config(
        tiny_model_dir,
        task={
            "kind": "file",
            "file": {
                "train": str(GSM8K_TRAIN),
                "eval": str(GSM8K_TEST),
                "preset": "gsm8k",
                "limit_train": 6,
            },
        },
    )
    with pytest.raises(ValueError, match="field 'task'"):
        run_plan(limited, tmp_path / "profile.parquet", tmp_path)


def lora_coin_flip_config(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, **train: float
) -> RunConfig:
    """A LoRA grpo run (no plan needed) scored by a coin flip: each group's rewards are mixed,
    so every step has non-zero advantages and really updates the adapter."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # for "bad_verifiers:coin_flip"
    return make_config(
        model_dir,
        model={"lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}},
        task={
            "kind": "file",
            "file": {"train": str(GSM8K_TRAIN), "eval": str(GSM8K_TEST), "preset": "gsm8k"},
            "verifier": "bad_verifiers:coin_flip",
        },
        train={"method": "grpo", "group_size": 4, "rollout_budget": 8, **train},
    )


def test_lora_trains_only_the_adapter(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = lora_coin_flip_config(tiny_model_dir, monkeypatch, lr=1e-2)
    base_files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    trainer = Trainer(config, tmp_path)
    model = trainer.policy.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    summary = trainer.train()
    assert summary["steps"] == 2
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(r["trained_rollouts"] > 0 for r in records if r["step"] > 0)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)
    # The base model on disk is untouched.
    assert {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()} == base_files

    final = tmp_path / "final"
    adapter_config = json.loads((final / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)
    assert not (final / "model.safetensors").exists()  # an adapter, not a full copy

    probe = trainer.policy.tokenizer(
        [trainer.policy.render("What is 2 + 2?")], return_tensors="pt", add_special_tokens=False
    )
    model.eval()
    with torch.no_grad():
        expected = model(**probe).logits

    reloaded = load_policy(config, path=str(final))
    assert type(reloaded.model).__name__.startswith("Peft")
    assert not any(p.requires_grad for p in reloaded.model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(**probe).logits, expected)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        plain = base(**probe).logits
        peft_model = PeftModel.from_pretrained(base, final).eval()
        torch.testing.assert_close(peft_model(**probe).logits, expected)
    assert not torch.allclose(plain, expected)  # the adapter does change the outputs

    # final-merged/ is a plain transformers model (no peft needed) with the same outputs.
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final-merged", dtype=torch.float32)
    assert not (tmp_path / "final-merged" / "adapter_config.json").exists()
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(**probe).logits, expected)
    # and the report says an adapter was trained, not the model
    report = " ".join(write_report(tmp_path).read_text().split())
    lora = config.model.lora
    assert f"Model `{summary['model']}` (a LoRA adapter trained: r = {lora.r}, alpha = " \
        f"{lora.alpha})" in report  # fmt: skip


def test_cli_eval_initial_model_with_system_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, model={"system_prompt": "Answer after ####."})
    policy = load_policy(config)
    assert policy.render("Q?").startswith("<|im_start|>system\nAnswer after ####.<|im_end|>\n")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    cli = CliRunner().invoke(
        app, ["eval", "-c", str(config_path), "--set", "eval.greedy=false", "-o", str(tmp_path)]
    )
    assert cli.exit_code == 0, cli.output
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["eval_queries"] == EVAL_ROWS and "eval_acc_greedy" not in result


def test_prompts_longer_than_the_context_are_refused_by_profile_and_eval(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    short = tmp_path / "short-context"
    shutil.copytree(tiny_model_dir, short)
    model_config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(model_config | {"max_position_embeddings": 64}))
    config = make_config(short)
    message = r"gsm8k_train\.jsonl.*row 0 \(line 1\): field 'question' is \d+ (characters|tokens)"
    with pytest.raises(DataError, match=message):
        run_profile(config, tmp_path / "profile")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    cli = CliRunner().invoke(app, ["eval", "-c", str(config_path), "-o", str(tmp_path / "eval")])
    # eval reads the held-out split only, and says so
    assert cli.exit_code != 0 and "gsm8k_test.jsonl: row 0 (line 1): field 'question'" in cli.output
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_a_profile_plans_for_its_model_written_otherwise_or_moved_not_for_other_weights(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    profile = run_profile(make_config(tiny_model_dir), tmp_path / "profile")
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "moved"))  # the same bytes elsewhere
    monkeypatch.chdir(tiny_model_dir.parent)
    for written in (f"{tiny_model_dir}/", f"./{tiny_model_dir.name}", str(copy)):
        out = tmp_path / f"plan-{len(written)}"
        assert run_plan(make_config(written), profile, out)[0].exists()
    other = Path(shutil.copytree(tiny_model_dir, tmp_path / "other"))
    weights = other / "model.safetensors"  # other weights in the same shape
    tensors = {k: v + 1.0 for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(DataError, match="not the same weights"):
        run_plan(make_config(other), profile, tmp_path / "plan-other")


def test_a_model_folder_under_home_loads_by_tilde(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = make_config("~/model")
    assert config.model.name_or_path == str(tmp_path / "model")
    assert load_policy(config, path="~/model").tokenizer("1 + 1")["input_ids"]  # eval --model


def test_a_tokenizer_without_pad_or_eos_is_refused_before_any_output(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    bare = Path(shutil.copytree(tiny_model_dir, tmp_path / "no-eos"))
    settings = json.loads((bare / "tokenizer_config.json").read_text())
    settings = {k: v for k, v in settings.items() if k not in ("eos_token", "pad_token")}
    (bare / "tokenizer_config.json").write_text(json.dumps(settings))
    for name in ("config.json", "generation_config.json"):
        if (bare / name).exists():
            config = json.loads((bare / name).read_text())
            (bare / name).write_text(json.dumps(config | {"eos_token_id": None}))
    with pytest.raises(ConfigError, match="neither a pad token nor an EOS token"):
        run_profile(make_config(bare), tmp_path / "profile")
    assert not (tmp_path / "profile").exists()
    # a pad token but no EOS: it runs, and says that no response can end
    settings["pad_token"] = "<|im_start|>"
    (bare / "tokenizer_config.json").write_text(json.dumps(settings))
    with caplog.at_level("WARNING"):
        load_policy(make_config(bare))
    assert "no response ends before sampling.max_new_tokens" in caplog.text


def test_a_lora_run_shows_no_deprecation_warning_the_user_cannot_act_on(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """peft asks the model for transformers' deprecated `is_gradient_checkpointing` on every
    adapter it wraps or loads; that FutureWarning is not the user's to fix."""
    config = lora_coin_flip_config(tiny_model_dir, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = load_policy(config)
        adapted = add_lora(policy.model, config.model.lora, seed=0)
        adapted.save_pretrained(tmp_path / "adapter")
        policy.tokenizer.save_pretrained(tmp_path / "adapter")
        reloaded = load_policy(config, path=str(tmp_path / "adapter"))
    assert type(reloaded.model).__name__.startswith("Peft")
    noise = [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert noise == []
    # Only that one is hidden: a FutureWarning of any other kind still shows.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_peft_deprecation():
            warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another deprecation"]


def test_a_lora_adapter_starts_from_the_runs_seed(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora = {"lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}}

    def cuda_seeded(seed: int) -> None:
        raise AssertionError("the GPUs' generators are not the adapter's to seed")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeded)

    def first_lora_a(seed: int) -> torch.Tensor:
        torch.random.default_generator.manual_seed(1234 + seed * 7)  # whatever it held before
        state = torch.random.get_rng_state()
        model = load_policy(make_config(tiny_model_dir, seed=seed, model=lora), trainable=True)
        assert torch.equal(torch.random.get_rng_state(), state)  # left as it was
        return next(p for n, p in model.model.named_parameters() if "lora_A" in n).detach()

    # the same seed: the same adapter (every compared method starts from the same one)
    assert torch.equal(first_lora_a(0), first_lora_a(0))
    assert not torch.equal(first_lora_a(0), first_lora_a(1))


@pytest.mark.parametrize(
    ("model", "edit", "message"),
    [
        # a Qwen2 directory without its tokenizer files loads an empty tokenizer
        ({}, "no-tokenizer", "its tokenizer encodes text to no tokens"),
        ({"use_chat_template": True}, "no-template", "model.use_chat_template is true but the"),
        (
            {"system_prompt": "Be brief."},
            "no-system-role",
            "model.system_prompt: the model's chat template refuses a system message: System "
            "role not supported; put the instruction in model.prompt_template instead",
        ),
        (  # a template that reads the last message only: the system prompt would go unsaid
            {"system_prompt": "Be brief."},
            "user-only",
            "model.system_prompt: the model's chat template leaves the system message out",
        ),
        (  # a template broken whatever the messages: not blamed on the system prompt
            {"system_prompt": "Be brief."},
            "broken-template",
            "model.use_chat_template: the model's chat template fails: Unexpected end of template",
        ),
        (
            {"lora": {"r": 4, "alpha": 8, "target_modules": ["no_such_proj"]}},
            "",
            "model.lora.target_modules: Target modules",
        ),
    ],
    ids=[
        "no-tokenizer",
        "no-chat-template",
        "no-system-role",
        "user-only",
        "broken-template",
        "lora-targets-nothing",
    ],
)
def test_a_model_setting_that_does_not_fit_the_model_is_a_config_error(
    tiny_model_dir: Path, tmp_path: Path, model: dict, edit: str, message: str
) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    tokenizer_config = copy / "tokenizer_config.json"
    if edit == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            (copy / name).unlink(missing_ok=True)
    elif edit:
        settings = json.loads(tokenizer_config.read_text())
        (copy / "chat_template.jinja").unlink(missing_ok=True)
        settings.pop("chat_template", None)
        if edit == "no-system-role":  # as Gemma's: a system message raises
            settings["chat_template"] = (
                "{% if messages[0]['role'] == 'system' %}"
                "{{ raise_exception('System role not supported') }}{% endif %}"
                "{% for m in messages %}{{ m['content'] }}{% endfor %}"
            )
        if edit == "user-only":
            settings["chat_template"] = "{{ messages[-1]['content'] }}"
        if edit == "broken-template":  # an unclosed for loop
            settings["chat_template"] = "{% for m in messages %}{{ m['content'] }}"
        tokenizer_config.write_text(json.dumps(settings))
    config = make_config(copy, model=model)
    with pytest.raises(ConfigError) as error:
        policy = load_policy(config, trainable=True)
        policy.render("1 + 1 = ?")
    assert message in str(error.value)


@pytest.mark.parametrize("tied", [True, False])
def test_flops_parameter_count_matches_a_hand_count(tied: bool) -> None:
    """N in sgpo's FLOPs convention (sgpo.core.flops): every matmul weight a token goes through,
    the output projection included (tied or not), embeddings' lookup excluded; a LoRA adapter
    adds its own parameters."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sgpo.models import model_shape

    h, kv, inter, vocab, layers = 32, 16, 48, 50, 2
    config = Qwen2Config(
        hidden_size=h,
        intermediate_size=inter,
        num_attention_heads=4,
        num_key_value_heads=2,  # head_dim 8: k and v project to 16
        num_hidden_layers=layers,
        vocab_size=vocab,
        tie_word_embeddings=tied,
    )
    model = Qwen2ForCausalLM(config)
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with biases; o without
    per_layer = attention + 3 * h * inter + 2 * h  # gate, up, down; two RMSNorms
    expected = layers * per_layer + h + vocab * h  # final norm; the output projection
    shape = model_shape(model)
    assert (shape.n_params, shape.n_layers, shape.d_attn) == (expected, layers, h)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter = layers * (2 * (h + h) + 2 * (h + kv))  # A (r x in) and B (out x r) each
    assert model_shape(lora).n_params == expected + adapter


def test_a_tokenizer_unlike_its_architectures_keeps_its_own_encoding(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A character tokenizer saved beside a Qwen2 config: transformers would load Qwen2's
    tokenizer class and drop the spaces of 'Natalia sold clips'; sgpo loads it as its
    tokenizer.json encodes, quietly for sgpo's own character tokenizer (a copy of the embedded
    model, a run's checkpoint), saying so for any other."""
    said = "encodes text otherwise than the directory's tokenizer.json"
    with caplog.at_level("WARNING", logger="sgpo.models"):
        policy = load_policy(make_config(tiny_model_dir))
    text = "Natalia sold 48 clips.\nHow many?"
    ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert policy.tokenizer.decode(ids) == text
    assert said not in caplog.text
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    spec["decoder"] = None  # not sgpo's tokenizer any more; it encodes as before
    (other / "tokenizer.json").write_text(json.dumps(spec))
    with caplog.at_level("WARNING", logger="sgpo.models"):
        policy = load_policy(make_config(other))
    assert policy.tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert said in caplog.text


def test_a_lora_adapter_of_a_relative_model_path_loads_from_anywhere(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_model_dir.parent)
    config = make_config(Path(tiny_model_dir.name), model={"lora": {"r": 2, "alpha": 4}})
    assert config.model.name_or_path == tiny_model_dir.name  # relative to here
    adapter = tmp_path / "adapter"
    policy = load_policy(config, trainable=True)
    policy.model.save_pretrained(adapter)
    policy.tokenizer.save_pretrained(adapter)  # as sgpo's checkpoints hold it
    recorded = json.loads((adapter / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    monkeypatch.chdir(tmp_path)  # elsewhere: the base is still found
    assert type(load_policy(config, path=str(adapter)).model).__name__.startswith("Peft")
    # the base is not where the adapter says (the project moved): the config's model, which
    # the run trained from, is found where the config names it
    recorded["base_model_name_or_path"] = str(tmp_path / "moved")
    (adapter / "adapter_config.json").write_text(json.dumps(recorded))
    monkeypatch.chdir(tiny_model_dir.parent)
    substituted = load_policy(config, path=str(adapter))
    assert type(substituted.model).__name__.startswith("Peft")
    # ... and named as the adapter's base in its identity (sgpo eval's model_sha256), where the
    # base it records is not there to hash
    assert substituted.substitute_base == str(tiny_model_dir.resolve())  # from any directory
    with_base = weights_sha256(str(adapter), substituted.substitute_base)
    assert with_base != weights_sha256(str(adapter))
    assert weights_sha256(str(adapter), str(tiny_model_dir.resolve())) == with_base
    # neither there: a config error naming the recorded base
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"whose base model '.*moved' \(its adapter_config"):
        load_policy(config, path=str(adapter))
    # the config's model of another shape: the adapter does not fit it, the same config error
    other = tmp_path / "wider"
    wider = EmbeddedModelConfig(
        hidden_size=48, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )
    tokenizer = load_policy(make_config(tiny_model_dir)).tokenizer
    build_model(wider, tokenizer, seed=0).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(ConfigError, match=r"whose base model '.*moved' \(its adapter_config"):
        load_policy(make_config(other), path=str(adapter))


def test_lora_dropout_trains_alike_for_one_config(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout masks come from torch's global generator: seeded per run, whatever state an
    earlier run in the process (or anything else) left it in."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # for "bad_verifiers:coin_flip"
    config = make_config(
        tiny_model_dir,
        model={"lora": {"r": 4, "alpha": 8, "dropout": 0.5, "target_modules": "all-linear"}},
        task={
            "kind": "file",
            "file": {"train": str(GSM8K_TRAIN), "eval": str(GSM8K_TEST), "preset": "gsm8k"},
            "verifier": "bad_verifiers:coin_flip",
        },
        train={"method": "grpo", "group_size": 4, "rollout_budget": 8, "lr": 1e-2, "steps": 1},
    )
    norms = []
    for run, state in enumerate((1, 2)):
        torch.manual_seed(state)  # another global generator state before each run
        Trainer(config, tmp_path / f"run-{run}").train()
        records = read_jsonl(tmp_path / f"run-{run}" / "metrics.jsonl")
        norms.append([r["grad_norm"] for r in records if r["step"] > 0])
    assert norms[0] == norms[1] and norms[0][0] > 0


def test_a_template_that_opens_the_thinking_reads_responses_from_inside_it(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sgpo.models import Policy
    from sgpo.verifiers import math_verify

    policy = load_policy(make_config(tiny_model_dir))
    assert not policy.prompts_open_thinking
    thinking = load_policy(make_config(tiny_model_dir))
    # DeepSeek-R1-Distill's template: the generation prompt opens the model's thinking
    opened = CHAT_TEMPLATE.replace("assistant\\n' }}", "assistant\\n<think>\\n' }}")
    thinking.tokenizer.chat_template = opened
    assert thinking.render("q").endswith("<|im_start|>assistant\n<think>\n")
    assert thinking.prompts_open_thinking
    cut_off = "Okay. 48/2=24 and 48+24=72. Wait, let me check"
    assert math_verify(policy.answer_text(cut_off), "72") == 1.0  # no thinking: its last value
    assert math_verify(thinking.answer_text(cut_off), "72") == 0.0  # still thinking: no answer
    done = "48+24=72.\n</think>\nThe answer is 72."
    assert math_verify(thinking.answer_text(done), "72") == 1.0
    # profile, training groups and evaluation all score what answer_text gives
    monkeypatch.setattr(Policy, "prompts_open_thinking", True)
    config = make_config(
        tiny_model_dir,
        task={"verifier": "bad_verifiers:thinking"},
        plan={"drop_trivial": False},  # every query is solved now
    )
    run = tmp_path / "run"
    rows, _ = read_table(run_profile(config, run))
    assert all(r["p_hat"] == 1.0 for r in rows)
    run_plan(config, run / "profile.parquet", run)
    run_train(config, run)
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["reward_mean"] for r in records if "reward_mean" in r] == [1.0, 1.0]
    assert records[-1]["eval_acc_greedy"] == 1.0


@pytest.mark.parametrize(
    ("held_out", "refusal"),
    [
        # one file of training queries (a verl user's VAL_DATA apart)
        (None, "no eval queries; give task.file.eval"),
        ("missing", r"missing\.jsonl: no such file"),
        ("bad-row", r"bad-row\.jsonl: row 0 \(line 1\): field 'question' is missing"),
    ],
)
def test_profile_and_plan_read_no_held_out_split_training_does(
    tiny_model_dir: Path, tmp_path: Path, held_out: str | None, refusal: str
) -> None:
    config = make_config(tiny_model_dir)
    config.task.file.eval = held_out and str(tmp_path / f"{held_out}.jsonl")
    (tmp_path / "bad-row.jsonl").write_text('{"answer": "#### 4"}\n')
    run = tmp_path / "run"
    assert len(read_table(run_profile(config, run))[0]) == TRAIN_ROWS
    run_plan(config, run / "profile.parquet", run)
    with pytest.raises(DataError, match=refusal):
        run_train(config, run)


def test_lora_on_a_tied_embedding_is_refused(tiny_model_dir: Path) -> None:
    # the tiny Qwen2 ties its embeddings, as Qwen2.5-0.5B-3B and Llama 3.2 do
    # each message names the module hit and the one it is tied to
    for targets, named in (
        (["lm_head"], "lm_head shares its weight with model.embed_tokens"),
        (["embed_tokens", "q_proj"], "model.embed_tokens shares its weight with lm_head"),
        ("lm_head", "lm_head shares its weight with model.embed_tokens"),
        (["lm_head", "embed_tokens"], "model.embed_tokens and lm_head are one weight"),
    ):
        lora = {"lora": {"r": 2, "alpha": 4, "target_modules": targets}}
        with pytest.raises(ConfigError, match=f"{named} .* final-merged/ would not be"):
            load_policy(make_config(tiny_model_dir, model=lora), trainable=True)
    linear = {"lora": {"r": 2, "alpha": 4, "target_modules": "all-linear"}}
    load_policy(make_config(tiny_model_dir, model=linear), trainable=True)  # lm_head left out


def test_training_from_an_adapter_says_what_it_trains_and_hashes_what_it_is(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sgpo.rundir import NEUTRAL_KEYS, config_fingerprint, weights_sha256

    lora = {"lora": {"r": 2, "alpha": 4, "target_modules": "all-linear"}}
    adapter = tmp_path / "adapter"
    trained = load_policy(make_config(tiny_model_dir, model=lora), trainable=True)
    trained.model.save_pretrained(adapter)
    trained.tokenizer.save_pretrained(adapter)
    other = {"name_or_path": str(adapter), "lora": {"r": 8, "alpha": 4}}
    load_policy(make_config(tiny_model_dir, model=other), trainable=True)
    assert "trains it further as it was made, r 2 (model.lora: 8)" in caplog.text
    caplog.clear()
    load_policy(make_config(tiny_model_dir, model={"name_or_path": str(adapter)}), trainable=True)
    assert "though model.lora is unset" in caplog.text
    # its identity: the adapter's settings and its base's weights, not only its own weights
    before = weights_sha256(str(adapter))
    settings = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(settings | {"lora_alpha": 64}))
    assert weights_sha256(str(adapter)) != before
    # whether a merged copy is written is no part of what a run computes
    assert "model.lora.save_merged" in NEUTRAL_KEYS
    tree = {"model": {"lora": {"r": 2, "save_merged": True}}}
    assert "model.lora.save_merged" not in config_fingerprint(tree)


def test_an_adapter_trained_further_is_saved_as_an_adapter_only(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = lora_coin_flip_config(tiny_model_dir, monkeypatch)
    adapter = tmp_path / "adapter"
    policy = load_policy(config, trainable=True)
    policy.model.save_pretrained(adapter)
    policy.tokenizer.save_pretrained(adapter)
    lora = config.model.lora
    config.model.name_or_path, config.model.lora = str(adapter), None
    run_train(config, tmp_path / "run")
    # its target modules were never checked against tied weights: no merged copy is made
    assert (tmp_path / "run" / "final" / "adapter_config.json").exists()
    assert not (tmp_path / "run" / "final-merged").exists()
    # ... with model.lora set too (whose settings do not apply to it), which the run says
    assert lora is not None and lora.save_merged
    config.model.lora = lora
    run_train(config, tmp_path / "lora-set")
    assert (tmp_path / "lora-set" / "final" / "adapter_config.json").exists()
    assert not (tmp_path / "lora-set" / "final-merged").exists()
    assert "no final-merged/: the run trained the LoRA adapter it started from" in caplog.text


def test_lora_passes_are_charged_at_the_size_they_run(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = lora_coin_flip_config(tiny_model_dir, monkeypatch, kl_coef=0.1)
    trainer = Trainer(config, tmp_path)
    base = model_shape(load_policy(config).model)
    adapter = sum(p.numel() for n, p in trainer.policy.model.named_parameters() if "lora_" in n)
    # the policy runs its adapter's matmuls; the KL reference is the base model alone
    assert trainer.shape.n_params == base.n_params + adapter
    _, batch = trainer.collect()
    trainer.train_on(batch)

    def charged(shape: ModelShape, per_sequence: Callable) -> float:
        return sum(
            per_sequence(shape, len(r.completion.prompt_ids), len(r.completion.response_ids))
            for r in batch
        )

    assert trainer.flops["logprob"] == pytest.approx(charged(base, logprob_flops))
    assert trainer.flops["train"] == pytest.approx(charged(trainer.shape, train_flops))


def test_a_pass_counts_the_adapter_it_runs(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, model={"lora": {"r": 4, "alpha": 8}})
    base = model_shape(load_policy(config).model)
    model = load_policy(config, trainable=True).model
    adapter = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert adapter > 0
    # TRL keeps a frozen copy of a given adapter as its reference ("ref"): a pass runs one
    model.add_adapter("ref", model.peft_config["default"])
    assert model_shape(model).n_params == base.n_params + adapter
    assert model_shape(model, "ref").n_params == base.n_params + adapter
    assert model_shape(model, None) == base


def test_a_model_or_adapter_folder_without_its_weights_is_named(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A partial copy loads to sgpo's error naming the folder, not to transformers' or peft's
    traceback (peft's spoke of a hub repo id)."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    for weights in bare.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(DataError, match=rf"model '{bare}': cannot load its weights"):
        load_policy(make_config(bare))
    lora = {"lora": {"r": 2, "alpha": 4, "target_modules": "all-linear"}}
    adapter = tmp_path / "adapter"
    trained = load_policy(make_config(tiny_model_dir, model=lora), trainable=True)
    trained.model.save_pretrained(adapter)
    trained.tokenizer.save_pretrained(adapter)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(DataError, match=r"a LoRA adapter folder \(adapter_config.json\) without"):
        load_policy(make_config(adapter))


def test_lora_targets_training_would_refuse_are_refused_before_the_profile(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A mistyped target module, or a tied embedding, was refused only when training loaded
    the model: after the whole profile was paid."""
    for targets, refusal in (
        (["foo_proj"], r"model.lora.target_modules: Target modules \{'foo_proj'\} not found"),
        (["lm_head"], "lm_head shares its weight with model.embed_tokens"),
        (["mlp"], r"model.lora.target_modules: Target module Qwen2MLP\(\n(?s:.*) is not supported"),
        (["input_layernorm"], "model.lora.target_modules: Target module Qwen2RMSNorm"),
    ):
        config = make_config(tiny_model_dir, model={"lora": {"r": 2, "target_modules": targets}})
        with pytest.raises(ConfigError, match=refusal):
            run_profile(config, tmp_path / "profile")
        assert not (tmp_path / "profile" / "profile.parquet").exists()
    for targets in (["q_proj"], ".*v_proj", "all-linear"):  # what training takes
        config = make_config(tiny_model_dir, model={"lora": {"r": 2, "target_modules": targets}})
        check_lora_targets(load_policy(config), config.model.lora)
