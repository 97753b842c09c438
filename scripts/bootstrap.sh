#!/usr/bin/env bash
# Creates .venv (once) and installs rul with the extras named in $RUL_EXTRAS into it.
# Idempotent: a stamp keyed on pyproject.toml, the constraints and the extras skips a
# second install. Pins the CPU build of torch (constraints/cpu.txt): from a local wheel
# folder where the machine has one, else from PyTorch's CPU index.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${RUL_EXTRAS:-train,serve,parquet,distributed,dev}"
venv="${RUL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "rul needs Python >= 3.11 (found $("$python" --version))" >&2; exit 1; }
  "$python" -m venv "$venv"
fi

stamp="$venv/.rul-install-$( (cat pyproject.toml constraints/cpu.txt; echo "$extras") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi

pip_args=(--quiet --disable-pip-version-check -c constraints/cpu.txt)
torch_pin="$(grep -E '^torch==' constraints/cpu.txt | cut -d= -f3)"
# A local wheel folder (pip's find-links) that holds the pinned CPU torch needs no index;
# anywhere else the CPU build comes from PyTorch's own index.
local_links="${PIP_FIND_LINKS:-$("$venv/bin/pip" config get global.find-links 2>/dev/null || true)}"
if ! ls ${local_links:-/nonexistent}/torch-"$torch_pin"+cpu-*.whl >/dev/null 2>&1; then
  pip_args+=(--extra-index-url "${RUL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}")
fi

echo "installing rul[$extras] into $venv ..." >&2
"$venv/bin/python" -m pip install "${pip_args[@]}" -e ".[$extras]"
rm -f "$venv"/.rul-install-*
touch "$stamp"
