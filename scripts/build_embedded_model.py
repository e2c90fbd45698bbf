"""Rebuild the shipped embedded model (src/sgpo/assets/embedded) from the default
EmbeddedModelConfig: random init, supervised warm start until the per-bucket skill targets are
met, save, record sha256 sums in MANIFEST.json, and print the held-out skill table that the
README documents (tests/test_embedded.py checks it). Run on CPU, ~10 minutes on 2 cores:

    .venv/bin/python scripts/build_embedded_model.py [--out DIR]

After a rebuild, update the README's skill table with the printed values."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

from sgpo.config import EmbeddedModelConfig
from sgpo.embedded import SHIPPED_DIR, build_embedded_model
from sgpo.skill import heldout_skill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)  # the recorded run used one thread (summation order matters)
    if args.out.exists():
        shutil.rmtree(args.out)
    manifest = build_embedded_model(EmbeddedModelConfig(), args.out)
    print(json.dumps(manifest["warm_start"], indent=2))
    print(json.dumps(heldout_skill(str(args.out)), indent=2))


if __name__ == "__main__":
    main()
