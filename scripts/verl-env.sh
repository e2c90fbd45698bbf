#!/usr/bin/env bash
# Create or reuse .venv-verl at the repository root: verl 0.9.1 (its "verl-core" extra) plus
# sgpo, for the verl integration tests (tests/verl_integration) and for exporting/launching
# sGPO on verl.
#
# torch goes first, pinned, from SGPO_TORCH_INDEX_URL as in .venv (scripts/torch.sh): on Linux
# PyPI's wheel is the CUDA build, several GB.
# verl 0.9.1 requires transformers>=5.5.3,<5.11 while sgpo pins a newer one for its own
# trainer, so sgpo goes in with --no-deps and its other dependencies are installed in the same
# resolve as verl: verl's transformers wins (sgpo's verl integration only needs the verifier,
# the plan I/O and a tokenizer, which work on both).
# A stamp file keyed on the pins and pyproject.toml makes a second call instant.
# On a GPU cluster use verl's own GPU extras instead (see examples/verl/README.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${SGPO_VERL_VENV:-$root/.venv-verl}"
verl_pin="verl[verl-core]==0.9.1"
. "$root/scripts/torch.sh"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# Keep the venv out of git without touching .gitignore (as Python 3.13+ venvs do by default).
[ -f "$venv/.gitignore" ] || echo "*" > "$venv/.gitignore"
stamp="$venv/.sgpo-verl-installed"
if torch_switch "$venv"; then
    rm -f "$stamp"
fi
want="$( (echo "$torch_pin $verl_pin"; cat pyproject.toml) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    start=$SECONDS
    py="$venv/bin/python"
    "$py" -m pip install -q --upgrade pip
    torch_install "$venv"
    # sgpo's runtime + test dependencies from pyproject.toml, all but transformers.
    mapfile -t sgpo_deps < <("$py" - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
    if re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() not in {"transformers", "torch"}:
        print(dep)
PY
)
    "$py" -m pip install -q "$torch_pin" "$verl_pin" "${sgpo_deps[@]}"
    "$py" -m pip install -q --no-deps -e .
    "$py" -m pip check >/dev/null || "$py" -m pip check | grep -v "^sgpo " || true
    "$py" -c "import verl, transformers, sgpo.verl; print('verl', verl.__version__, '+ transformers', transformers.__version__, 'ready')"
    echo "$want" > "$stamp"
    echo "verl env installed in $((SECONDS - start)) s: $venv"
fi
