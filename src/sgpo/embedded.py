"""The embedded default model: a ~1M-parameter Qwen2-shaped causal LM with a character-level
tokenizer built locally, warm-started by a short supervised phase on the addition task and
cached on disk (save_pretrained format) so later runs reuse it. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from sgpo.config import AdditionTaskConfig, EmbeddedModelConfig
from sgpo.tasks.addition import prompt_for, sample_pairs, target_for

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARSET = [chr(c) for c in range(32, 127)] + ["\n"]


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


def warm_start(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    cfg: EmbeddedModelConfig,
    task: AdditionTaskConfig,
    seed: int,
) -> list[float]:
    """Supervised phase on train-split sums, digits drawn uniformly; loss on the answer only."""
    rng = random.Random(f"warm-start/{seed}")
    streams = [sample_pairs(d, "train", rng) for d in task.digits]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmup_lr, weight_decay=0.01)
    # 50 steps of linear warm-up, then linear decay to 5% at warmup_lr_horizon.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / cfg.warmup_lr_horizon)
    )
    model.train()
    losses = []
    for _ in tqdm(range(cfg.warmup_steps), desc="warm-start (embedded model)", leave=False):
        prompts, targets = [], []
        for _ in range(cfg.warmup_batch_size):
            a, b = next(rng.choice(streams))
            prompts.append(prompt_for(a, b))
            targets.append(target_for(a, b))
        batch = supervised_batch(tokenizer, prompts, targets)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def supervised_batch(tokenizer, prompts: list[str], targets: list[str]) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Right-padded prompt+target+eos with labels only on target and eos."""
    rows = []
    for p, t in zip(prompts, targets, strict=True):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p_ids + t_ids, [-100] * len(p_ids) + t_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def cache_key(cfg: EmbeddedModelConfig, task: AdditionTaskConfig, seed: int) -> str:
    spec = cfg.model_dump(exclude={"cache_dir", "seed"}) | {
        "digits": task.digits,
        "seed": seed,
        "v": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure_embedded_model(cfg: EmbeddedModelConfig, task: AdditionTaskConfig, seed: int) -> Path:
    """Directory of the warm-started embedded model, built (atomically) if not cached yet."""
    root = Path(cfg.cache_dir).expanduser()
    target = root / f"embedded-{cache_key(cfg, task, seed)}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_char_tokenizer()
    model = build_model(cfg, tokenizer, seed)
    losses = warm_start(model, tokenizer, cfg, task, seed)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "warm_start.json").write_text(
        json.dumps({"final_loss": losses[-1] if losses else None, "steps": len(losses)})
    )
    try:
        staging.rename(target)
    except OSError:  # another process finished the same build first; theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target
