#!/usr/bin/env bash
# The checkpoint benchmark and the GPU tests on a CUDA machine whose Python already has torch.
# Wheels the harness needs beyond that image (blake3, zstandard, ...) are taken from .gpuwheels/
# when present (pip download them for the target Python beforehand: that machine is offline).
# Usage: bash bench/gpu.sh [OUT_DIR]
set -uo pipefail  # no -e: a failing step must not hide the figures of the next
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/stalwart-gpu}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEPS=$(mktemp -d)
if compgen -G ".gpuwheels/*.whl" >/dev/null; then
  $PY -m pip install --quiet --no-index --no-deps --target "$DEPS" .gpuwheels/*.whl
fi
export PYTHONPATH="$PWD/harness/src:$DEPS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
df -h . /tmp | tee -a "$OUT/gpu.txt"
# GPU tests first (correctness), then speed: the state on the GPU, then the same sizes on the CPU.
$PY -m pytest -q -p no:cacheprovider --noconftest tests/harness/test_checkpoint_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt"
# THREADS="1 2": one run per writer-thread count (default: the engine's own).
for threads in ${THREADS:-default}; do
  [ "$threads" = default ] && threads=""
  extra=${threads:+--threads $threads}
  $PY bench/checkpoint.py --device cuda --sizes "${SIZES:-1,4}" --dir "${BENCH_DIR:-/tmp}" $extra \
    --json "$OUT/cuda${threads:+-t$threads}.json" 2>&1 | tee "$OUT/cuda${threads:+-t$threads}.txt"
done
$PY bench/checkpoint.py --device cpu --sizes "${SIZES:-1,4}" --dir "${BENCH_DIR:-/tmp}" --json "$OUT/cpu.json" \
  2>&1 | tee "$OUT/cpu.txt"
