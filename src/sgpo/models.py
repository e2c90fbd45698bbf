"""Load the policy (any Hugging Face causal LM, or the embedded default) and format prompts."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from jinja2.exceptions import TemplateError
from tokenizers import Tokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from sgpo.config import LoraSettings, ModelConfig, RunConfig
from sgpo.core.flops import ModelShape
from sgpo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Our own progress bars say what is happening; transformers' per-load/per-save bars are noise.
hf_logging.disable_progress_bar()


@dataclass
class Policy:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    source: str  # resolved path or hub id; recorded in profiles and plans
    config: ModelConfig
    # the model a LoRA adapter was put on where the base it records could not be loaded
    substitute_base: str | None = None

    def render(self, prompt: str) -> str:
        """The text the model sees for a query's prompt."""
        return format_prompt(prompt, self.tokenizer, self.config)

    @functools.cached_property
    def prompts_open_thinking(self) -> bool:
        from sgpo.verifiers import opens_thinking

        return opens_thinking(self.render("?"))

    def answer_text(self, response: str) -> str:
        """A response as the verifier reads it (sgpo.verifiers.begun_in_thinking)."""
        from sgpo.verifiers import begun_in_thinking

        return begun_in_thinking(response, self.prompts_open_thinking)

    def stop_token_ids(self) -> list[int]:
        """Where a response ends: the tokenizer's EOS, then any other end-of-sequence ids the
        checkpoint's generation_config names (a chat model's end of turn: Gemma's
        <end_of_turn>, Llama 3's <|eot_id|>), as vLLM and transformers stop by default."""
        generation_config = getattr(base_model(self.model), "generation_config", None)
        configured = getattr(generation_config, "eos_token_id", None)
        if configured is None:
            configured = []
        elif isinstance(configured, int):
            configured = [configured]
        stops = [self.tokenizer.eos_token_id, *configured]
        return list(dict.fromkeys(int(t) for t in stops if t is not None))

    def encode(self, rendered: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts (encode_prompts)."""
        return encode_prompts(self.tokenizer, self.config, rendered)


ACTIVE_ADAPTER = "<active>"


def lora_adapter_of(parameter_name: str) -> str | None:
    """The LoRA adapter a peft parameter belongs to (q_proj.lora_A.default.weight: default),
    None for the model's own weights."""
    parts = parameter_name.split(".")
    for part, following in zip(parts, parts[1:], strict=False):
        if part.startswith("lora_"):
            return following
    return None


def base_model(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model itself: under a LoRA (peft) wrapper, the model it wraps."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def resolve_device(name: str) -> torch.device:
    """model.device as a torch device, refused (before any weights load) where this machine
    has no such device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None)}.get(device.type)
    if device.type == "mps":
        present = 1 if torch.backends.mps.is_available() else 0
    elif backend is not None:
        present = backend.device_count() if backend.is_available() else 0
    else:
        present = 1  # cpu
    if (device.index or 0) >= present:
        raise ConfigError(
            f"model.device={name}: this machine has "
            + (f"{present} such device(s)" if present else f"no {device.type} device")
            + " that torch can use; set model.device to auto or cpu"
        )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def model_source(config: RunConfig) -> str:
    """Path or hub id of the initial policy (builds the embedded model if needed)."""
    if config.model.name_or_path != "embedded":
        return config.model.name_or_path
    from sgpo.embedded import ensure_embedded_model

    if config.task.kind != "addition":
        raise ConfigError(
            f"model.name_or_path: 'embedded' is warm-started on the addition task and cannot "
            f"run task.kind={config.task.kind!r}; give a real model (a Hugging Face id or path)"
        )
    return str(ensure_embedded_model(config.model.embedded))


def _load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer; a source that is neither a model directory here nor loadable from
    the hub is a config error naming it (transformers' own message kept)."""
    local = Path(source).expanduser()
    if source.startswith((".", "/", "~")) and not local.is_dir():
        raise ConfigError(f"model {source!r}: no such directory")
    markers = ("config.json", "adapter_config.json")
    if local.is_dir() and not any((local / name).exists() for name in markers):
        # a run's directory: its model is in final/ (an adapter with LoRA, final-merged/ whole)
        inside = next(
            (
                local / d
                for m in markers  # a full model first: final/, else final-merged/ with LoRA
                for d in ("final", "final-merged")
                if (local / d / m).exists()
            ),
            None,
        )
        hint = f"; a run's model is in {inside}" if inside else ""
        raise ConfigError(
            f"model {source!r}: not a model directory (no config.json or adapter_config.json){hint}"
        )
    try:  # a folder by its expanded path: transformers reads "~/model" as a hub id
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else source)
    except (OSError, ValueError) as e:  # ValueError: a directory without tokenizer files
        where = "the directory" if local.is_dir() else "neither a local directory nor on the hub"
        raise ConfigError(f"model {source!r}: cannot load it ({where}): {e}") from e
    if (local / "tokenizer.json").is_file():
        tokenizer = _as_its_file_encodes(tokenizer, local)
    # Without its files some tokenizer classes still load, empty: every text becomes no tokens.
    if not tokenizer("1 + 1 = 2", add_special_tokens=False)["input_ids"]:
        raise ConfigError(
            f"model {source!r}: its tokenizer encodes text to no tokens (are the tokenizer "
            "files, e.g. tokenizer.json, missing from the directory?)"
        )
    return tokenizer


# Spaces, a newline, a tab and a capital: what a pre-tokenizer can drop or split differently.
_PROBE = "Sum: 12 + 34 =\n\tAnswer 46"


def _as_its_file_encodes(
    tokenizer: PreTrainedTokenizerBase, local: Path
) -> PreTrainedTokenizerBase:
    """The directory's tokenizer.json as written. transformers 5 picks the tokenizer class from
    the model's architecture (a Qwen2 config loads Qwen2Tokenizer, with Qwen2's own
    pre-tokenizer), so a tokenizer of another kind saved beside such a config (sgpo's embedded
    character tokenizer is one) would silently lose spaces and newlines: then it is loaded as
    its file says."""
    written = Tokenizer.from_file(str(local / "tokenizer.json"))
    expected = written.encode(_PROBE, add_special_tokens=False).ids
    if tokenizer(_PROBE, add_special_tokens=False)["input_ids"] == expected:
        return tokenizer
    exact = PreTrainedTokenizerFast.from_pretrained(str(local))
    # sgpo's character tokenizer (the embedded model, a copy of it, a run's checkpoint of it) is
    # known to need it: nothing to say
    level = logging.DEBUG if _is_sgpo_char_tokenizer(written) else logging.WARNING
    log.log(
        level,
        "%s: %s encodes text otherwise than the directory's tokenizer.json; loaded as the "
        "file says (%s)",
        local,
        type(tokenizer).__name__,
        type(exact).__name__,
    )
    return exact


@functools.cache
def _char_tokenizer_parts() -> tuple:
    from sgpo.embedded import build_char_tokenizer

    return _tokenizer_parts(build_char_tokenizer().backend_tokenizer)


def _tokenizer_parts(tokenizer: Tokenizer) -> tuple:
    """What makes a tokenizer sgpo's character tokenizer, whatever its special tokens."""
    spec = json.loads(tokenizer.to_str())
    return spec.get("pre_tokenizer"), spec.get("decoder"), (spec.get("model") or {}).get("type")


def _is_sgpo_char_tokenizer(tokenizer: Tokenizer) -> bool:
    return _tokenizer_parts(tokenizer) == _char_tokenizer_parts()


@contextmanager
def _refused_if_pickled(source: str) -> Iterator[None]:
    """torch loads a pickled weights file (pytorch_model.bin, adapter_model.bin) as tensors
    only: one asking to run code on load, or one that is no pickle at all (damaged, a git-lfs
    pointer), is refused there, which is said as sgpo's error, not as torch's traceback."""
    try:
        yield
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        asks_for_code = [line.split(". ")[0] for line in lines if "GLOBAL" in line]
        if asks_for_code:
            raise DataError(
                f"model {source!r}: a weights file holds more than tensors, objects that load "
                f"only by running code ({asks_for_code[0]}); it was not loaded and nothing in "
                "it ran: use the model's safetensors weights, or a copy from a source you trust"
            ) from e
        # torch's own lines around the reason: what failed, where to read, where to report
        generic = ("Weights only load failed", "Check the documentation", "Please file an issue")
        reason = next((line for line in lines if not line.startswith(generic)), repr(e))
        raise DataError(
            f"model {source!r}: a weights file is not a readable torch checkpoint ({reason}): "
            "damaged, or a git-lfs pointer left by a clone without git-lfs (`git lfs pull` "
            "fetches the weights)"
        ) from e


def load_policy(config: RunConfig, path: str | None = None, trainable: bool = False) -> Policy:
    """Load a policy from path (default: the configured initial model) onto the chosen device."""
    cfg: ModelConfig = config.model
    source = path or model_source(config)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    tokenizer = _load_tokenizer(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise ConfigError(
            f"model {source!r}: its tokenizer has neither a pad token nor an EOS token, so "
            "prompts cannot be batched and no response could end; set eos_token (and "
            "pad_token) in its tokenizer_config.json"
        )
    local = Path(source).expanduser()
    # a local model by its absolute path: a LoRA adapter saved from it records that path as its
    # base, so the adapter loads from any working directory
    weights = str(local.resolve()) if local.is_dir() else source
    adapter = is_adapter(source)
    with _refused_if_pickled(source), _named_if_unloadable(source, local):
        if adapter:
            model, substitute_base = _load_adapter(source, weights, config, dtype, trainable)
        else:
            model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
            substitute_base = None
    if adapter:
        if trainable and path is None:
            warn_of_unapplied_lora(source, local / "adapter_config.json", cfg.lora)
    elif trainable and cfg.lora is not None:
        model = add_lora(model, cfg.lora, config.seed)
    if trainable and cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.to(device)
    model.train(trainable)
    policy = Policy(model, tokenizer, device, source, cfg, substitute_base)
    if not policy.stop_token_ids():
        log.warning(
            "model %r: neither its tokenizer nor its generation_config names an EOS token, so "
            "no response ends before sampling.max_new_tokens; set eos_token in its "
            "tokenizer_config.json",
            source,
        )
    elif uses_chat_template(tokenizer, cfg):
        turn_end = turn_end_token(tokenizer)
        if turn_end is not None and tokenizer.convert_tokens_to_ids(turn_end) not in set(
            policy.stop_token_ids()
        ):
            # a base checkpoint with an instruct template (Qwen2.5 base: <|im_end|>)
            log.warning(
                "model %r: its chat template ends the assistant's turn with %r, but neither "
                "its tokenizer's EOS nor its generation_config's eos_token_id is that token, "
                "so a response goes on past the end of its turn (into turns the verifier then "
                "reads) until an EOS or sampling.max_new_tokens; add its id to "
                "generation_config.json's eos_token_id (TRL, vLLM and verl stop there too)",
                source,
                turn_end,
            )
    return policy


def turn_end_token(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The special token the chat template writes right after an assistant message (its end
    of turn: <|im_end|>, <|eot_id|>, <end_of_turn>), or None when it writes none there."""
    chat = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "A7"}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # noqa: BLE001 - a template without an assistant role: nothing to check
        return None
    after = text[text.rfind("A7") + 2 :].lstrip() if "A7" in text else ""
    special = sorted(special_token_texts(tokenizer), key=len, reverse=True)
    return next((t for t in special if after.startswith(t)), None)


def special_token_texts(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """The tokenizer's special tokens as text: its named ones and every added token marked
    special (a chat template's role headers and end of turn)."""
    special = {*tokenizer.all_special_tokens}
    return special | {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}


class AdapterDisabled:
    """A fresh LoRA policy's initial weights, without a second copy of them: its model with the
    adapter disabled, in eval mode, for the passes of the initial policy (KL reference,
    behaviour policy of reused profile samples). A fresh adapter starts at zero (peft's B = 0),
    so with it disabled the model is the initial policy exactly, however far it has trained."""

    # no adapter name model_shape would count: the pass runs the base model's matmuls only
    active_adapter = "(disabled)"

    def __init__(self, peft_model: PreTrainedModel) -> None:
        self.peft_model = peft_model

    def get_base_model(self) -> PreTrainedModel:
        return self.peft_model.get_base_model()

    def __call__(self, **inputs: object) -> object:
        training = self.peft_model.training
        self.peft_model.eval()  # as a separately loaded initial policy: no dropout
        try:
            with self.peft_model.disable_adapter():
                return self.peft_model(**inputs)
        finally:
            self.peft_model.train(training)


# the files peft saves an adapter's weights in
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def initial_policy(config: RunConfig, policy: Policy) -> Policy:
    """The run's initial policy for the passes that need it: the trained policy with its adapter
    disabled when it trains a fresh LoRA adapter (no second copy of the base in memory), else
    the initial model loaded again."""
    fresh_adapter = config.model.lora is not None and hasattr(policy.model, "disable_adapter")
    if fresh_adapter and not is_adapter(model_source(config)):  # a given one trains further
        return replace(policy, model=AdapterDisabled(policy.model))
    return load_policy(config)


def warn_of_unapplied_lora(source: str, adapter_config: Path, lora: LoraSettings | None) -> None:
    """Training from a LoRA adapter trains that adapter further, as it was made: model.lora's
    settings (or their absence) do not apply, which the run says."""
    made = json.loads(adapter_config.read_text())
    if lora is None:
        log.warning(
            "%s is a LoRA adapter: the run trains it further (its r=%s), not every weight, "
            "though model.lora is unset; give a merged model (final-merged/) to train them all",
            source,
            made.get("r"),
        )
        return
    ours = {"r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout}
    differ = [f"{k} {made.get(k)} (model.lora: {v})" for k, v in ours.items() if made.get(k) != v]
    if differ:
        log.warning(
            "%s is a LoRA adapter: the run trains it further as it was made, %s; those "
            "model.lora settings are not applied",
            source,
            ", ".join(differ),
        )


@contextmanager
def quiet_peft_deprecation() -> Iterator[None]:
    """peft asks every model for `is_gradient_checkpointing`, which transformers 5 answers with
    a FutureWarning on each LoRA load; the user can do nothing about it, so only it is hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


@contextmanager
def _named_if_unloadable(source: str, local: Path) -> Iterator[None]:
    """A local model folder transformers cannot load (its weights file missing: a partial copy)
    is said as sgpo's error naming the folder, not as transformers' traceback."""
    try:
        yield
    except OSError as e:
        if not local.is_dir() or isinstance(e, FileNotFoundError) and e.filename:
            raise
        raise DataError(f"model {source!r}: cannot load its weights: {e}") from e


def is_adapter(source: str) -> bool:
    """Whether a model source is a local LoRA adapter folder (peft's adapter_config.json)."""
    return (Path(source).expanduser() / "adapter_config.json").exists()


def _load_adapter(
    source: str, adapter: str, config: RunConfig, dtype: torch.dtype, trainable: bool
) -> tuple[PreTrainedModel, str | None]:
    """A LoRA adapter on the base model it records; if that is not there (the project folder
    moved, the run copied to another machine), on the config's own model, which a run's
    checkpoints were trained from: (the model, that substitute base or None)."""
    from peft import AutoPeftModelForCausalLM, PeftModel

    if not any((Path(adapter) / name).is_file() for name in ADAPTER_WEIGHTS):
        raise DataError(
            f"model {source!r}: a LoRA adapter folder (adapter_config.json) without its weights "
            f"({' or '.join(ADAPTER_WEIGHTS)}): a partial copy?"
        )

    try:
        with quiet_peft_deprecation():
            model = AutoPeftModelForCausalLM.from_pretrained(
                adapter, dtype=dtype, is_trainable=trainable
            )
            return model, None
    except OSError as e:
        error = e
    recorded = json.loads((Path(adapter) / "adapter_config.json").read_text()).get(
        "base_model_name_or_path"
    )
    try:
        own = model_source(config)
        own_local = Path(own).expanduser()
        own_path = str(own_local.resolve()) if own_local.is_dir() else own
        if own != source and not is_adapter(own):
            base = AutoModelForCausalLM.from_pretrained(own_path, dtype=dtype)
            with quiet_peft_deprecation():
                model = PeftModel.from_pretrained(base, adapter, is_trainable=trainable)
            log.warning(
                "%s: the adapter's base model %r cannot be loaded; it was put on the config's "
                "model, %s",
                source,
                recorded,
                own,
            )
            return model, own_path
    except (OSError, ValueError, RuntimeError):  # not there, or not the adapter's shape
        pass
    raise ConfigError(
        f"model {source!r}: a LoRA adapter whose base model {recorded!r} (its "
        f"adapter_config.json's base_model_name_or_path) cannot be loaded, nor the config's "
        f"model.name_or_path: {error}"
    ) from error


def add_lora(model: PreTrainedModel, lora: LoraSettings, seed: int) -> PreTrainedModel:
    """The model wrapped in a fresh LoRA adapter, initialised from the run's seed (peft draws
    it from torch's global generator: unseeded, every run and every compared method would
    start from another adapter); the global generator is left as it was."""
    from peft import LoraConfig, get_peft_model

    from sgpo.engine import stream_seed  # sgpo.engine imports this module

    settings = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    refuse_tied_embedding_targets(model, lora.target_modules)
    with torch.random.fork_rng(devices=[]), quiet_peft_deprecation():
        # the CPU generator, which peft draws from here
        torch.random.default_generator.manual_seed(stream_seed(seed, "lora-init"))
        try:
            return get_peft_model(model, settings)
        except ValueError as e:  # peft: target_modules matched no module of the model
            raise ConfigError(f"model.lora.target_modules: {e}") from e


def check_lora_targets(policy: Policy, lora: LoraSettings | None) -> None:
    """ConfigError for model.lora targets that training would refuse (add_lora): modules the
    model does not have or LoRA cannot adapt, or a tied embedding; checked where a profile
    loads the model, by adding the adapter to a weightless (meta-device) copy of the model's
    architecture, so a mistyped target is named before the profile is paid, not after it."""
    if lora is None or is_adapter(policy.source):  # an adapter given trains as it was made
        return
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(base_model(policy.model).config)
    except Exception:  # noqa: BLE001 - no skeleton to try it on: training will tell
        return
    add_lora(skeleton, lora, seed=0)  # its refusals are training's


def refuse_tied_embedding_targets(model: PreTrainedModel, targets: str | list[str]) -> None:
    """A LoRA on an embedding the model ties to its output layer (Qwen2.5-0.5B-3B, Llama 3.2)
    merges into the one weight both share: final-merged/ would not be the model trained."""
    if not getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        return
    shared = (model.get_input_embeddings(), model.get_output_embeddings())
    names = [name for name, module in model.named_modules() if any(module is m for m in shared)]
    if isinstance(targets, str):  # peft: a regex over full names ("all-linear" skips lm_head)
        hit = [n for n in names if targets != "all-linear" and re.fullmatch(targets, n)]
    else:
        hit = [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]
    if hit:
        raise ConfigError(
            f"model.lora.target_modules: {' and '.join(hit)} "
            f"{'shares its weight with' if len(hit) == 1 else 'are'} "
            f"{' and '.join(n for n in names if n not in hit) or 'one weight'} (the model ties "
            "its input and output embeddings), so merging the adapter into it would change both "
            "and final-merged/ would not be the model trained; target other modules"
        )


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig, rendered: list[str]
) -> list[list[int]]:
    """Token ids of prompts format_prompt rendered. A chat template writes the special tokens
    it wants (BOS included) into the text, so none are added; a plain prompt gets the
    tokenizer's own (a Llama or Gemma base model's BOS, nothing for Qwen's)."""
    add_special = not uses_chat_template(tokenizer, cfg)
    return tokenizer(rendered, add_special_tokens=add_special)["input_ids"]


def uses_chat_template(tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig) -> bool:
    """model.use_chat_template, or by default whether the tokenizer has one."""
    if cfg.use_chat_template is None:
        return bool(getattr(tokenizer, "chat_template", None))
    return cfg.use_chat_template


def template_sha256(template: str | dict | None) -> str | None:
    """sha256 of a tokenizer's chat template (a dict of named templates too); None without."""
    if not template:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def chat_template_sha256(tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig) -> str | None:
    """The template_sha256 of the chat template the prompts go through, None for plain
    prompts: a profile records it, as no setting names a tokenizer's template."""
    if not uses_chat_template(tokenizer, cfg):
        return None
    return template_sha256(getattr(tokenizer, "chat_template", None))


def format_prompt(prompt: str, tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig) -> str:
    """Chat models get their chat template (with the optional system prompt); others the plain
    prompt_template."""
    if not uses_chat_template(tokenizer, cfg):
        if cfg.system_prompt:
            raise ConfigError(
                "model.system_prompt is set but the prompts are plain (model.use_chat_template "
                "false, or the tokenizer has no chat template): put the instruction in "
                "model.prompt_template instead"
            )
        return cfg.prompt_template.format(prompt=prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "model.use_chat_template is true but the model's tokenizer has no chat template: "
            "set it false (plain prompts through model.prompt_template) or use a tokenizer "
            "with one"
        )
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    messages.append({"role": "user", "content": cfg.prompt_template.format(prompt=prompt)})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError as e:
        if cfg.system_prompt and _renders(tokenizer, messages[1:]):  # no system role (Gemma's)
            raise ConfigError(
                f"model.system_prompt: the model's chat template refuses a system message: "
                f"{e}; put the instruction in model.prompt_template instead"
            ) from e
        raise ConfigError(f"model.use_chat_template: the model's chat template fails: {e}") from e
    if cfg.system_prompt and " ".join(cfg.system_prompt.split()) not in " ".join(text.split()):
        raise ConfigError(
            "model.system_prompt: the model's chat template leaves the system message out of "
            "the prompt it renders (it reads only some roles); put the instruction in "
            "model.prompt_template instead"
        )
    return text


def _renders(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> bool:
    try:
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        return False
    return True


def model_shape(model: PreTrainedModel, adapter: str | None = ACTIVE_ADAPTER) -> ModelShape:
    """N and attention size for the FLOPs convention in sgpo.core.flops, for a pass that runs
    one LoRA adapter (default: the active one; its matrices are matmuls of every token too) or
    none (adapter=None: the base model, as TRL's reference pass with the adapter disabled).
    Other adapters a peft model holds (TRL's frozen "ref" copy) are not in the pass."""
    base = base_model(model)
    if adapter == ACTIVE_ADAPTER:
        active = getattr(model, "active_adapter", None)  # a method on transformers' own models
        adapter = active if isinstance(active, str) else "default"
    cfg = base.config.get_text_config()
    embedding = base.get_input_embeddings().weight
    n_total = sum(
        p.numel() for name, p in base.named_parameters() if lora_adapter_of(name) in (None, adapter)
    )
    n_params = n_total - embedding.numel()
    if getattr(cfg, "tie_word_embeddings", False):
        n_params += embedding.numel()  # the tied output projection is still a matmul per token
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return ModelShape(
        n_params=n_params, n_layers=cfg.num_hidden_layers, d_attn=cfg.num_attention_heads * head_dim
    )
