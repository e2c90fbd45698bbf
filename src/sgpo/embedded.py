"""The embedded default model: a ~1M-parameter Qwen2-shaped causal LM with a character-level
tokenizer, warm-started on the built-in addition task. Nothing is downloaded.

The default is shipped inside the package (``sgpo/assets/embedded``): the same bytes on every
machine, checked against the sha256 sums in its MANIFEST.json, loaded without any training.
``scripts/build_embedded_model.py`` made it with ``build_embedded_model`` below. Any other
shape or warm-start setting is built locally and cached; its warm start stops on measured
per-bucket accuracy (``skill_targets``), so its skill, not its bytes, is the same everywhere."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import random
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from sgpo.config import EmbeddedModelConfig, ModelConfig
from sgpo.engine import SamplingParams, TransformersEngine, stream_seed
from sgpo.io import with_umask_modes
from sgpo.models import Policy
from sgpo.rundir import file_sha256
from sgpo.tasks.addition import prompt_for, sample_pairs, target_for, verify

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARSET = [chr(c) for c in range(32, 127)] + ["\n"]
SHIPPED_DIR = Path(__file__).parent / "assets" / "embedded"
MANIFEST = "MANIFEST.json"
# Answers are at most 5 digits (two 4-digit operands) plus EOS; 7 leaves room to babble.
PROBE_MAX_NEW_TOKENS = 7

log = logging.getLogger(__name__)


def build_char_tokenizer(extra_special_tokens: list[str] | None = None) -> PreTrainedTokenizerFast:
    """One token per printable ASCII character, plus pad/eos/unk (and any extra specials)."""
    specials = [PAD, EOS, UNK, *(extra_special_tokens or [])]
    vocab = {tok: i for i, tok in enumerate(specials + CHARSET)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=list(extra_special_tokens or []),
        padding_side="left",
    )
    return tokenizer


def build_model(
    cfg: EmbeddedModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int
) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(config)


def probe_pairs(cfg: EmbeddedModelConfig) -> dict[int, list[tuple[int, int]]]:
    """Fixed train-split sums per digit count: what the warm start measures its skill on (the
    held-out split stays unseen)."""
    rng = random.Random(f"embedded-probe/{cfg.seed}")
    pairs = {}
    for d in cfg.digits:
        stream = sample_pairs(d, "train", rng)
        pairs[d] = [next(stream) for _ in range(cfg.probe_size)]
    return pairs


def sampled_skill(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    pairs: dict[int, list[tuple[int, int]]],
) -> dict[int, float]:
    """Sampled accuracy (temperature 1, one seeded sample per sum) per digit count."""
    engine = TransformersEngine(
        Policy(model, tokenizer, torch.device("cpu"), "", ModelConfig()), 512
    )
    params = SamplingParams(max_new_tokens=PROBE_MAX_NEW_TOKENS)
    skill = {}
    for d, sums in pairs.items():
        prompts = [prompt_for(a, b) for a, b in sums]
        seeds = [stream_seed("embedded-probe", a, b) for a, b in sums]
        completions = engine.generate(prompts, seeds, params)
        correct = [verify(c.text, str(a + b)) for c, (a, b) in zip(completions, sums, strict=True)]
        skill[d] = sum(correct) / len(correct)
    return skill


def distance_to_targets(skill: dict[int, float], cfg: EmbeddedModelConfig) -> float:
    """Largest gap between measured and target accuracy over the digit counts."""
    assert cfg.skill_targets is not None
    return max(abs(skill[d] - t) for d, t in zip(cfg.digits, cfg.skill_targets, strict=True))


def warm_start(
    model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, cfg: EmbeddedModelConfig
) -> dict:
    """Supervised phase on train-split sums, digit counts drawn by digit_weights, loss on the
    answer only.

    With skill_targets, the skill is probed every probe_every steps and training stops as soon
    as every bucket is within skill_tolerance of its target; if that never happens, the probed
    state closest to the targets is kept. Returns what was measured, for the model's record."""
    rng = random.Random(f"warm-start/{cfg.seed}")
    streams = [sample_pairs(d, "train", rng) for d in cfg.digits]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmup_lr, weight_decay=0.01)
    # 50 steps of linear warm-up, then linear decay to 5% at warmup_lr_horizon.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / cfg.warmup_lr_horizon)
    )
    probes = probe_pairs(cfg) if cfg.skill_targets is not None else {}
    best: dict = {"distance": float("inf")}
    losses: list[float] = []
    model.train()
    for step in tqdm(range(cfg.warmup_steps + 1), desc="warm-start (embedded model)", leave=False):
        if probes and step % cfg.probe_every == 0:
            skill = sampled_skill(model, tokenizer, probes)
            distance = distance_to_targets(skill, cfg)
            log.info("warm start step %d: skill %s (distance %.3f)", step, skill, distance)
            if distance < best["distance"]:
                best = {"distance": distance, "step": step, "skill": skill}
                best["state"] = copy.deepcopy(model.state_dict())
            if distance <= cfg.skill_tolerance:
                break
        if step == cfg.warmup_steps:
            break
        prompts, targets = [], []
        for _ in range(cfg.warmup_batch_size):
            a, b = next(rng.choices(streams, weights=cfg.digit_weights)[0])
            prompts.append(prompt_for(a, b))
            targets.append(target_for(a, b))
        loss = model(**supervised_batch(tokenizer, prompts, targets)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    record: dict = {"steps_trained": len(losses), "final_loss": losses[-1] if losses else None}
    if probes:
        model.load_state_dict(best["state"])
        record |= {
            "kept_step": best["step"],
            "probe_skill": {str(d): acc for d, acc in best["skill"].items()},
            "skill_targets": dict(zip(map(str, cfg.digits), cfg.skill_targets, strict=True)),
            "target_reached": best["distance"] <= cfg.skill_tolerance,
        }
    return record


def supervised_batch(
    tokenizer: PreTrainedTokenizerFast, prompts: list[str], targets: list[str]
) -> dict[str, torch.Tensor]:
    """Right-padded prompt+target+eos with labels only on target and eos."""
    rows = []
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    for p_ids, t in zip(prompt_ids, target_ids, strict=True):
        t_ids = [*t, tokenizer.eos_token_id]
        rows.append((p_ids + t_ids, [-100] * len(p_ids) + t_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def model_spec(cfg: EmbeddedModelConfig) -> dict:
    """Everything that determines the embedded model (the cache location does not)."""
    return cfg.model_dump(exclude={"cache_dir"}) | {"v": 2}


def cache_key(cfg: EmbeddedModelConfig) -> str:
    return hashlib.sha256(json.dumps(model_spec(cfg), sort_keys=True).encode()).hexdigest()[:16]


def build_embedded_model(cfg: EmbeddedModelConfig, out: Path) -> dict:
    """Build, warm-start and save the model and tokenizer into out (which must not exist);
    write MANIFEST.json (spec, warm-start record, sha256 of every file) and return it."""
    tokenizer = build_char_tokenizer()
    model = build_model(cfg, tokenizer, cfg.seed)
    record = warm_start(model, tokenizer, cfg)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "spec": model_spec(cfg),
        "warm_start": record,
        "sha256": {f.name: file_sha256(f) for f in sorted(out.iterdir())},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def shipped_model(cfg: EmbeddedModelConfig) -> Path | None:
    """The shipped directory when cfg asks for exactly the shipped model, after checking every
    file against its recorded sha256; None when cfg asks for another model."""
    manifest_path = SHIPPED_DIR / MANIFEST
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest["spec"] != json.loads(json.dumps(model_spec(cfg))):
        return None
    for name, digest in manifest["sha256"].items():
        if file_sha256(SHIPPED_DIR / name) != digest:
            raise RuntimeError(
                f"{SHIPPED_DIR / name}: sha256 differs from {manifest_path}; the shipped "
                "embedded model was modified (reinstall sgpo, or rebuild it with "
                "scripts/build_embedded_model.py and update the README's skill table)"
            )
    return SHIPPED_DIR


def ensure_embedded_model(cfg: EmbeddedModelConfig) -> Path:
    """Directory of the embedded model: the shipped one, or a local build (atomic, cached)."""
    shipped = shipped_model(cfg)
    if shipped is not None:
        return shipped
    root = Path(cfg.cache_dir).expanduser()
    target = root / f"embedded-{cache_key(cfg)}"
    if (target / "config.json").exists():
        return target
    log.warning(
        "building a non-default embedded model locally (%s); locally built models vary by "
        "machine: the warm start stops on measured skill, not on identical weights",
        target,
    )
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".building-")) / "model"
    build_embedded_model(cfg, staging)
    with_umask_modes(staging)
    with contextlib.suppress(OSError):  # another process finished the same build first
        staging.rename(target)
    shutil.rmtree(staging.parent, ignore_errors=True)
    return target
