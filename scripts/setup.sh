#!/usr/bin/env bash
# Create or reuse .venv at the repository root and install sgpo into it.
# torch goes first, pinned (see SGPO_TORCH_INDEX_URL below for a CPU-only build on Linux).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
extras="${1:-}"
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.sgpo-installed${extras:+-$extras}"
# The stamp holds the index torch came from too: with another SGPO_TORCH_INDEX_URL than the
# existing .venv's, torch is taken out and installed from it (pip keeps an installed
# torch==2.13.0 of whichever build).
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${SGPO_TORCH_INDEX_URL:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    if [ -f "$stamp" ] && [ "$(cut -s -d' ' -f2- "$stamp")" != "${SGPO_TORCH_INDEX_URL:-}" ]; then
        "$venv/bin/python" -m pip uninstall -q -y torch
    fi
    # SGPO_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu: the CPU build on Linux, whose
    # PyPI wheel is the CUDA one
    "$venv/bin/python" -m pip install -q torch==2.13.0 \
        ${SGPO_TORCH_INDEX_URL:+--index-url "$SGPO_TORCH_INDEX_URL"}
    "$venv/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
