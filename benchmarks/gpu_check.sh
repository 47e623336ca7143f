#!/usr/bin/env bash
# The device check for a session lent a GPU machine (the device tool's H200: numba-cuda, torch
# and pytest are installed there). Run from the repository root, e.g.
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=420)
# 1. the CUDA checks of tests/cuda_scripts on the real GPU (the same scripts the tests run under
#    the simulator; without NUMBA_ENABLE_CUDASIM they launch real kernels, and the PTX check
#    compiles every kernel of a float32 graph and looks for .f64);
# 2. W2 and W3 with target="cuda" against PyTorch CUDA eager (benchmarks/gpu.py).
# Results are printed and written under $OUT (or ./gpu_out where OUT is unset).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM
out="${OUT:-gpu_out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$out/gpu.txt"
import numba, numpy, torch
from numba import cuda
print("numpy", numpy.__version__, "numba", numba.__version__, "torch", torch.__version__,
      "numba.cuda sees a GPU:", cuda.is_available())
PY
status=0
for script in sim_checks sim_device; do
    echo "== tests/cuda_scripts/$script.py on the GPU"
    timeout 240 python3 "tests/cuda_scripts/$script.py" > "$out/$script.json" 2> "$out/$script.err"
    python3 - "$out/$script.json" <<'PY' || status=1
import json, sys
results = json.load(open(sys.argv[1]))
bad = {k: v for k, v in results.items() if not v.get("ok")}
for k, v in results.items():
    print(f"  {'ok  ' if v.get('ok') else 'FAIL'} {k}: {v.get('skipped') or v.get('err')}")
sys.exit(1 if bad else 0)
PY
    tail -5 "$out/$script.err"
done
echo "== benchmarks/gpu.py"
timeout 200 python3 benchmarks/gpu.py --only W2,W3 --seconds 2 2>&1 | tee "$out/bench.txt"
exit $status
