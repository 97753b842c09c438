#!/usr/bin/env bash
# The torch-free part of the suite (the service, data, metrics and batch forecasts) on the
# serving install, for another Python: the plant-side install has no torch.
#   PYTHON=python3.13 scripts/test_serving.sh [pytest args]
# builds .venv-<version> (once) with rul[serve,parquet,distributed,dev] and runs every test
# module that does not train or export a network.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
export RUL_VENV="${RUL_VENV:-$root/.venv-$version}" RUL_EXTRAS="serve,parquet,distributed,dev"
PYTHON="$python" "$root/scripts/bootstrap.sh"
cd "$root"
# These train or export networks, so they need torch (the train extra).
needs_torch=(test_cli.py test_export.py test_report.py test_training.py)
ignore=()
for name in "${needs_torch[@]}"; do ignore+=(--ignore "tests/$name"); done
"$RUL_VENV/bin/python" -c 'import sys; print("Python", sys.version.split()[0])'
exec "$RUL_VENV/bin/python" -m pytest -W error::DeprecationWarning "${ignore[@]}" "$@"
