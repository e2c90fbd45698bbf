#!/usr/bin/env bash
# Quickstart 2: set up .venv with test extras, lint, and run the default test suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh" test
cd "$root"
.venv/bin/ruff check src tests
exec .venv/bin/python -m pytest -q "$@"
