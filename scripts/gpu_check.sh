#!/usr/bin/env bash
# The GPU training path end to end, in one go, on a machine with a CUDA GPU:
#
#   RUL_CMAPSS_DIR=DIR scripts/gpu_check.sh OUT_DIR
#
# 1. trains the default FD001 model (five networks) with --accelerator gpu and checks that
#    Lightning ran it on the GPU in bf16 mixed precision;
# 2. kills a one-network run with SIGKILL once its first epoch is saved, resumes it with
#    --resume and checks that no epoch was lost or repeated;
# 3. evaluates the GPU-trained checkpoint on the test set (on the CPU, as users do), exports
#    it to ONNX (with the export's parity check against torch) and evaluates the .onnx file.
#
# It installs nothing (such machines often have no network): the Python in $PYTHON (default
# python3) needs torch with CUDA, pytorch-lightning, pandas, numpy, pyyaml, onnx and
# onnxruntime. OUT_DIR receives summary.json and the logs. ACCELERATOR=cpu runs the same steps
# on the CPU without the GPU checks (how the script itself is checked on a machine without one).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: scripts/gpu_check.sh OUT_DIR}"
python="${PYTHON:-python3}"
accelerator="${ACCELERATOR:-gpu}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rul() { "$python" -m rul.cli "$@"; }
fail() { echo "gpu_check: FAILED: $*" | tee -a "$out/failures.txt" >&2; }

"$python" - <<'EOF' | tee "$out/device.txt"
import torch
gpu = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0) if gpu else 'no CUDA GPU visible'}, "
      f"bf16 {gpu and torch.cuda.is_bf16_supported()}")
EOF
if [ "$accelerator" = gpu ] && grep -q "no CUDA GPU" "$out/device.txt"; then
  echo "gpu_check: torch sees no CUDA GPU here; ACCELERATOR=cpu checks the CPU path" >&2
  exit 2
fi

# 1. The default FD001 run on the chosen accelerator.
started=$(date +%s)
rul train --subset FD001 --out "$work/run" --accelerator "$accelerator" --no-progress \
  >"$out/train.log" 2>&1 || fail "rul train (see train.log)"
train_seconds=$(( $(date +%s) - started ))
if [ "$accelerator" = gpu ]; then
  grep -q "GPU available: True (cuda), used: True" "$out/train.log" \
    || fail "Lightning did not train on the GPU (train.log)"
  grep -qi "bf16" "$out/train.log" || fail "no bf16 mixed precision in train.log"
fi

# 2. Killed with SIGKILL once its first epoch is saved, then resumed.
short=(--subset FD001 --out "$work/short" --folds 1 --max-epochs 10
       --accelerator "$accelerator" --no-progress)
"$python" -m rul.cli train "${short[@]}" >"$out/killed.log" 2>&1 &
pid=$!  # the Python process itself, so that SIGKILL reaches it
for _ in $(seq 3000); do
  [ -f "$work/short/checkpoints/last.ckpt" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ -f "$work/short/model.ckpt" ] && fail "the short run finished before it could be killed"
rul train "${short[@]}" --resume >"$out/resume.log" 2>&1 || fail "rul train --resume (resume.log)"
epochs=$(cut -d, -f1 "$work/short/history.csv" 2>/dev/null | tail -n +2 | tr '\n' ' ')
[ "$epochs" = "0 1 2 3 4 5 6 7 8 9 " ] \
  || fail "the resumed run's epochs are '$epochs', expected 0 to 9 once each"

# 3. Evaluated on the CPU, exported, the export evaluated.
rul evaluate --model "$work/run" --subset FD001 --json >"$out/evaluate.json" 2>"$out/evaluate.log" \
  || fail "rul evaluate of the checkpoint (evaluate.log)"
rul export --checkpoint "$work/run" --out "$work/model.onnx" >"$out/export.log" 2>&1 \
  || fail "rul export (export.log)"
rul evaluate --model "$work/model.onnx" --subset FD001 --json >"$out/evaluate_onnx.json" \
  2>>"$out/evaluate.log" || fail "rul evaluate of the .onnx file (evaluate.log)"

"$python" - "$out" "$accelerator" "$train_seconds" "$epochs" <<'EOF'
import json, sys
from pathlib import Path
out, accelerator, seconds, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
def read(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}
ckpt, onnx = read("evaluate.json"), read("evaluate_onnx.json")
failures = (out / "failures.txt").read_text().splitlines() if (out / "failures.txt").exists() else []
summary = {"accelerator": accelerator, "device": (out / "device.txt").read_text().strip(),
           "train_seconds": seconds, "test_rmse": ckpt.get("rmse"),
           "test_rmse_onnx": onnx.get("rmse"), "test_score": ckpt.get("score"),
           "resumed_epochs": epochs.split(), "failures": failures}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
[ ! -f "$out/failures.txt" ]
