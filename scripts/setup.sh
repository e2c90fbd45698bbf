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
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
# The index torch came from, for the whole .venv: given another SGPO_TORCH_INDEX_URL, torch is
# taken out and installed from it (pip keeps an installed torch==2.13.0 of whichever build);
# unset, torch stays as it came.
index_file="$venv/.sgpo-torch-index"
installed_index="$(cat "$index_file" 2>/dev/null || true)"
index="${SGPO_TORCH_INDEX_URL:-$installed_index}"
if [ "$index" != "$installed_index" ]; then
    "$venv/bin/python" -m pip uninstall -q -y torch
    rm -f "$venv"/.sgpo-installed*
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    # SGPO_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu: the CPU build on Linux, whose
    # PyPI wheel is the CUDA one
    "$venv/bin/python" -m pip install -q torch==2.13.0 ${index:+--index-url "$index"}
    printf '%s\n' "$index" > "$index_file"
    "$venv/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
