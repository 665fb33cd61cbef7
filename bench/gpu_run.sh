#!/usr/bin/env bash
# On a GPU machine: the whole test suite with real CUDA, then every GPU benchmark.
#
#   bash bench/gpu_run.sh [OUT_DIR]
#
# Logs and JSON go to OUT_DIR (default bench/out/gpu). Wheels found in .wheels/ (for machines
# without a package index) are installed first. Each step is time-limited and a failing step
# does not stop the next one; the summary at the end lists the exit code of every step.
# The whole script needs about 30 minutes; split the steps across calls where one call is
# limited to less.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-bench/out/gpu}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
declare -a SUMMARY

step() {  # step NAME TIMEOUT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name" | tee -a "$OUT_DIR/steps.log"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  SUMMARY+=("$name: exit $rc, $((SECONDS - start)) s")
  tail -n 25 "$OUT_DIR/$name.log"
}

if compgen -G ".wheels/*.whl" > /dev/null; then
  $PY -m pip install -q --no-deps --no-index .wheels/*.whl > "$OUT_DIR/install.log" 2>&1
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT_DIR/install.log" 2>&1

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY - <<'EOF'
import importlib
for name in ["torch", "numba", "numba_cuda", "cupy", "numpy", "ot", "gudhi", "cripser"]:
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # report and go on
        print(name, "missing:", error)
import torch
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0))
EOF
} > "$OUT_DIR/versions.txt" 2>&1
cat "$OUT_DIR/versions.txt"

step pytest_gpu 420 $PY -m pytest -q -x -p no:cacheprovider -m "gpu"
step pytest_all 420 $PY -m pytest -q -p no:cacheprovider
step bench_persistence_cuda 300 $PY bench/persistence_cuda.py
step bench_matching 300 $PY bench/matching.py --device cuda --batch 64 --n 2000 --m 200 --repeats 10
step bench_loss 300 $PY bench/loss.py --device cuda
step bench_training_cost 300 $PY bench/training_cost.py --device cuda
cp bench/out/*.json "$OUT_DIR/" 2>/dev/null

echo "=== summary"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT_DIR/summary.txt"
