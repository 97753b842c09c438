#!/usr/bin/env bash
# The whole test suite (slow end-to-end tests included) plus the linter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
venv="${RUL_VENV:-$root/.venv}"
cd "$root"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest "$@"
