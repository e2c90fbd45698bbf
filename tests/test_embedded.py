"""The embedded model: the shipped bytes are the ones the README documents, load without any
training, and local builds stop on measured skill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sgpo.config import EmbeddedModelConfig, load_config
from sgpo.embedded import MANIFEST, SHIPPED_DIR, build_embedded_model, shipped_model
from sgpo.models import model_source
from sgpo.skill import heldout_skill

README = Path(__file__).parents[1] / "README.md"
# Seeded sampling on fixed bytes gives the same numbers up to float differences between CPUs,
# which flip a handful of the 800 samples per bucket at most.
TOLERANCE = 0.03


def documented_skill() -> dict[str, float]:
    """The README's skill table: the row after the '| skill |' header."""
    rows = [line for line in README.read_text().splitlines() if line.startswith("| sampled acc")]
    assert len(rows) == 1, "README.md must hold exactly one '| sampled accuracy ...' row"
    header = next(
        line for line in README.read_text().splitlines() if line.startswith("| embedded skill")
    )
    buckets = [cell.strip() for cell in header.strip("|").split("|")[1:]]
    values = [float(cell) for cell in rows[0].strip("|").split("|")[1:]]
    return dict(zip(buckets, values, strict=True))


def test_default_config_loads_the_shipped_model_without_building(tmp_path: Path) -> None:
    config = load_config(None, [f"model.embedded.cache_dir={tmp_path}"])
    assert Path(model_source(config)) == SHIPPED_DIR
    assert list(tmp_path.iterdir()) == []  # nothing was built or cached


def test_shipped_model_has_the_documented_skill() -> None:
    measured = heldout_skill()
    documented = documented_skill()
    assert set(measured) == set(documented)
    for bucket, value in documented.items():
        assert measured[bucket] == pytest.approx(value, abs=TOLERANCE), (bucket, measured)


def test_shipped_skill_profile_spans_easy_to_unsolved() -> None:
    """The profile the benchmarks rely on: easy sums almost always right, 4-digit almost never,
    and a broad spread between (issue: starting points real RLVR runs see)."""
    skill = documented_skill()
    assert skill["1-digit"] >= 0.9
    assert skill["4-digit"] <= 0.08
    assert skill["1-digit"] > skill["2-digit"] > skill["3-digit"] > skill["4-digit"]


def test_modified_shipped_weights_are_refused(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "embedded"
    copy.mkdir()
    for f in SHIPPED_DIR.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr("sgpo.embedded.SHIPPED_DIR", copy)
    with pytest.raises(RuntimeError, match="sha256 differs"):
        shipped_model(EmbeddedModelConfig())


def test_other_settings_are_not_the_shipped_model() -> None:
    assert shipped_model(EmbeddedModelConfig(hidden_size=64)) is None
    assert shipped_model(EmbeddedModelConfig(skill_targets=[0.9, 0.7, 0.3, 0.0])) is None


TINY = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)


def test_local_build_stops_as_soon_as_the_skill_target_is_met(tmp_path: Path) -> None:
    # An untrained model never adds correctly: a 0.0 target is met at the first probe.
    cfg = EmbeddedModelConfig(**TINY, digits=[1], skill_targets=[0.0], probe_size=16)
    manifest = build_embedded_model(cfg, tmp_path / "m")
    record = manifest["warm_start"]
    assert record["steps_trained"] == 0
    assert record["target_reached"] is True
    assert json.loads((tmp_path / "m" / MANIFEST).read_text()) == manifest
    assert set(manifest["sha256"]) >= {"model.safetensors", "config.json", "tokenizer.json"}


def test_local_build_keeps_the_closest_state_when_the_target_is_out_of_reach(
    tmp_path: Path,
) -> None:
    cfg = EmbeddedModelConfig(
        **TINY, digits=[1], skill_targets=[1.0], probe_size=16, probe_every=2, warmup_steps=4
    )
    record = build_embedded_model(cfg, tmp_path / "m")["warm_start"]
    assert record["steps_trained"] == 4
    assert record["target_reached"] is False
    assert record["kept_step"] in (0, 2, 4)


def test_embedded_tokenizer_keeps_spaces_and_newlines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """transformers 5 loads any tokenizer beside a Qwen2 config as Qwen2Tokenizer, whose
    pre-tokenizer drops the character tokenizer's spaces: a prompt_template with spaces would
    reach the model garbled. It is loaded as its tokenizer.json says, quietly."""
    from tokenizers import Tokenizer

    from sgpo.config import RunConfig
    from sgpo.models import load_policy

    config = RunConfig.model_validate({"model": {"prompt_template": "Sum: {prompt}\nAnswer:"}})
    with caplog.at_level("DEBUG", logger="sgpo.models"):
        policy = load_policy(config)
    text = policy.render("12+34=")
    ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert policy.tokenizer.decode(ids) == "Sum: 12+34=\nAnswer:"
    written = Tokenizer.from_file(str(SHIPPED_DIR / "tokenizer.json"))
    assert ids == written.encode(text, add_special_tokens=False).ids
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # a checkpoint of an embedded run (the model saved again, no MANIFEST.json): as quiet
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(SHIPPED_DIR, checkpoint, ignore=shutil.ignore_patterns(MANIFEST))
    with caplog.at_level("DEBUG", logger="sgpo.models"):
        resumed = load_policy(config, path=str(checkpoint))
    assert resumed.tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
