#!/usr/bin/env bash
# The main job on the embedded default: simulate a fleet, train, evaluate (rul demo).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
exec "${RUL_VENV:-$root/.venv}/bin/rul" demo "$@"
