#!/usr/bin/env bash
# Quickstart 2: set up .venv with test extras, lint, run the default test suite, then the verl
# integration group in its own .venv-verl (verl 0.9.1 pins an older transformers than sgpo).
# SGPO_SKIP_VERL=1 skips the verl group (it installs ~2 GB the first time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" test
cd "$root"
.venv/bin/ruff check src tests benchmarks
# a worker per core, four at most (pytest-xdist), one torch thread each: the workers share the
# cores instead of each oversubscribing them
workers=$(nproc); [ "$workers" -gt 4 ] && workers=4
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -n "$workers" "$@"
if [ "${SGPO_SKIP_VERL:-0}" != "1" ]; then
    ./scripts/verl-env.sh
    .venv-verl/bin/python -m pytest -q -p no:cacheprovider tests/verl_integration
fi
