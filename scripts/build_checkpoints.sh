#!/usr/bin/env bash
# Rebuilds the shipped models: checkpoints/cmapss-fd00N.onnx (+ .json) for FD001..FD004, each
# trained by `rul train` with the documented default configuration (1D-CNN, seed 0) on
# $RUL_CMAPSS_DIR (default ../shared/data/cmapss). Run dirs go to runs/checkpoints/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
rul="${RUL_VENV:-$root/.venv}/bin/rul"
cd "$root"
for subset in FD001 FD002 FD003 FD004; do
  name="cmapss-$(echo "$subset" | tr 'A-Z' 'a-z')"
  rm -rf "runs/checkpoints/$name"  # a fresh run each time (train refuses to mix runs)
  "$rul" train --subset "$subset" --out "runs/checkpoints/$name" --no-progress
  "$rul" export --checkpoint "runs/checkpoints/$name" --out "checkpoints/$name.onnx"
  if [ -f "${RUL_CMAPSS_DIR:-../shared/data/cmapss}/RUL_$subset.txt" ]; then
    # The test metrics go into the card (metrics.test) where the labels exist.
    "$rul" evaluate --model "checkpoints/$name.onnx" --subset "$subset" --record
  fi
done
