#!/usr/bin/env bash
# Create or reuse .venv at the repository root and install sgpo into it.
# torch goes first, pinned (scripts/torch.sh; SGPO_TORCH_INDEX_URL for a CPU-only build on Linux).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
extras="${1:-}"
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.sgpo-installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
. "$root/scripts/torch.sh"
if torch_switch "$venv"; then
    rm -f "$venv"/.sgpo-installed*
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    torch_install "$venv"
    "$venv/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
