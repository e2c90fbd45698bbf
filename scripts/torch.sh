# Sourced by setup.sh and verl-env.sh: torch 2.13.0 goes into a virtual environment first, from
# the index the environment records (.sgpo-torch-index; none: pip's default, whose Linux x86-64
# wheel is the CUDA build) or from SGPO_TORCH_INDEX_URL, which switches it
# (https://download.pytorch.org/whl/cpu: the CPU build on Linux).
torch_pin="torch==2.13.0"

# torch_switch VENV: sets torch_index; when it differs from the one VENV's torch came from, takes
# that torch out (pip keeps an installed torch==2.13.0 of whichever build) and succeeds, so the
# caller installs again; unset, torch stays as it came.
torch_switch() {
    local installed
    installed="$(cat "$1/.sgpo-torch-index" 2>/dev/null || true)"
    torch_index="${SGPO_TORCH_INDEX_URL:-$installed}"
    [ "$torch_index" != "$installed" ] || return 1
    "$1/bin/python" -m pip uninstall -q -y torch
}

# torch_install VENV: the pinned torch from torch_index, recorded for the next call.
torch_install() {
    "$1/bin/python" -m pip install -q "$torch_pin" ${torch_index:+--index-url "$torch_index"}
    printf '%s\n' "$torch_index" > "$1/.sgpo-torch-index"
}
