#!/usr/bin/env bash
# Quickstart 1: set up .venv and run the embedded demo (profile -> plan -> train, evaluating as
# it goes -> a GRPO baseline at the same FLOPs -> report).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/sgpo demo --out "${1:-runs/demo}" "${@:2}"
