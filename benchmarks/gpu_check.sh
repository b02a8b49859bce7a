#!/usr/bin/env bash
# The device check in one run: GPU parity tests, then the quick GPU benchmarks.
# Here (once):  ../shared/offline-wheels.sh .whl   (and add /.whl/ to .git/info/exclude)
# On the device: bash benchmarks/gpu_check.sh      (carry .whl; results under $OUT)
# Worst case ~570 s (each step has its timeout): run it with timeout_s 600.
set -o pipefail
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/hsite .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
# zarr's pytest plugin needs msgspec, which the node lacks: no plugin autoload
export PYTHONPATH=/tmp/hsite:$PWD PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import cupy, cucim; print('cupy', cupy.__version__, 'cucim', cucim.__version__)" \
    | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short tests 2>&1 \
    | tee "$OUT/pytest_gpu.log" | tail -25
# the sizes (2048², 64×1024×1024): cuCIM compiles for ~10-20 s on its first call
timeout 180 python3 benchmarks/bench_morphometry.py --gpu --no-cpu \
    --json "$OUT/morpho_gpu.json" 2>&1 | tail -12
# issue 16: one whole field (3 x 40 x 1024²) per stage on the GPU, then a whole plate (12 such
# fields read from zarr, processed and written by the runner: seconds per field, and the 96 x 9
# plate's minutes), then RL; each in the time left (the script stays under ~570 s)
run_left() {  # run_left MIN_SECONDS NAME COMMAND...: the command with the time left, or skip
    local need=$1 name=$2; shift 2
    local left=$((560 - SECONDS))
    if [ "$left" -gt "$need" ]; then timeout "$left" "$@"; else echo "$name skipped: ${left}s left"; fi
}
run_left 60 bench_field python3 benchmarks/bench_field.py --backend gpu --no-trace \
    --shapes 40,1024,1024 --json "$OUT/field_gpu.json" 2>&1 | tail -14
run_left 90 bench_plate python3 benchmarks/bench_plate.py --backend gpu --fields 12 \
    --json "$OUT/plate_gpu.json" 2>&1 | tail -3
# RL: both transforms (DCT for the symmetric PSF, padded FFTs) against cuCIM
run_left 30 bench_rl python3 benchmarks/bench_rl.py --gpu --no-cpu --json "$OUT/rl_gpu.json" \
    2>&1 | tail -6
run_left 60 bench_rl_large python3 benchmarks/bench_rl.py --gpu --no-cpu --shape 64 1024 1024 \
    --json "$OUT/rl_gpu_large.json" 2>&1 | tail -6
