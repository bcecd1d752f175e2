#!/usr/bin/env bash
# One device-machine session for the denoiser: build with CUDA, run the CUDA tests, train the
# small denoiser on the GPU within a time budget, then bench. Results land in $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv
  time python3 -m pip install -q --no-build-isolation --no-deps -e . -Cbuild-dir=build/gpu \
      -Ccmake.define.EM_ACCEL_CUDA=ON -Ccmake.define.EM_ACCEL_CUDA_ARCHS=90 || exit 1
  python3 -c "import em_accel; print(em_accel.build_info())"
  timeout 120 python3 -m pytest -m cuda -q -p no:cacheprovider python_tests 2>&1 | tail -15
  timeout ${TRAIN_TIMEOUT:-330} python3 -m em_accel.models.denoise_recipe /tmp/gpurun \
      --device cuda --workers 12 --batch 16 --width 0.1875 --depth 3 \
      --low-steps 20000 --high-steps 8000 --seconds ${TRAIN_SECONDS:-200} --no-progress
  cp /tmp/gpurun/*.safetensors /tmp/gpurun/recipe.json "$OUT"/ 2>/dev/null
  cp /tmp/gpurun/low/log.jsonl "$OUT"/low_log.jsonl 2>/dev/null
  cp /tmp/gpurun/high/log.jsonl "$OUT"/high_log.jsonl 2>/dev/null
  mkdir -p em_accel/models/weights
  cp /tmp/gpurun/denoiser_small_*.safetensors em_accel/models/weights/ 2>/dev/null
  EM_ACCEL_BENCH_OUT="$OUT" timeout 150 python3 -m bench denoise
} 2>&1 | tee "$OUT"/log.txt
