#!/usr/bin/env bash
# One call on a lent GPU machine, from the repository root: CUDA build (sm_90), every cuda-marked
# test, a denoiser training run (in the background while the tests run, TRAIN_BACKGROUND=1: tests
# are not timed; else after them), then the GPU benches of t-SNE (20k/100k points, kNN /
# affinities / optimisation apart) and multislice (vs abTEM + CuPy). STAGES picks among
# "tests train tsne multislice hotpaths" (default all but hotpaths). STAGES=hotpaths records
# issue 15's ratios in one run: the hot-path CUDA tests, t-SNE first vs warm call (100k, in a
# fresh process) and 1M x 50 / 60k x 784 end to end, fused ALRC vs plain MSE forward+backward
# (B = 2..128 at 512^2, float32/bfloat16, eager / CUDA graph / compiled) and a training step
# with vs without ALRC, and the exact structure factor at 2048^2 (auto, GEMM) vs abTEM+CuPy.
# STAGES=targets measures the wave's open GPU targets, CUDA rows only: completions/s at 512^2
# (issue 11), exit-wave ms per 224^2 at batch 64 (issue 13), the conditioned denoiser's bf16
# MPix/s (issue 17) and the 20k-image map (issue 14).
# Records and logs land in $OUT (at most 8 files come back). Training continues from TRAIN_INIT (default: the shipped low-dose weights).
# abTEM and the packages it imports that the machine lacks travel as wheels in .whl/ (see
# bench/README or the device tool's notes); without them the multislice bench times us alone.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STAGES=${STAGES:-tests train tsne multislice}
has() { [[ " $STAGES " == *" $1 "* ]]; }
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  stamp build
  python3 -m pip install -q --no-build-isolation --no-deps -e . -Cbuild-dir=build/gpu \
      -Ccmake.define.EM_ACCEL_CUDA=ON -Ccmake.define.EM_ACCEL_CUDA_ARCHS=90 \
      > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  python3 -c "import em_accel, json; print(json.dumps(em_accel.build_info()))"

  train() {
    mkdir -p /tmp/gpurun
    timeout "${TRAIN_TIMEOUT:-330}" python3 -m em_accel.models.denoise_recipe /tmp/gpurun \
        --device cuda --workers 10 --batch "${TRAIN_BATCH:-32}" --n-synthetic 192 \
        --init "${TRAIN_INIT:-em_accel/models/weights/denoiser_small_low.safetensors}" \
        --low-lr "${TRAIN_LR:-5e-4}" --low-steps 30000 --high-steps "${TRAIN_HIGH_STEPS:-8000}" \
        --seconds "${TRAIN_SECONDS:-180}" --no-progress > /tmp/gpurun/train.log 2>&1
    echo "training rc=$?" >> /tmp/gpurun/train.log
  }
  if has train && [ "${TRAIN_BACKGROUND:-1}" = 1 ]; then
    stamp "denoiser training (background)"; train & TRAIN_PID=$!
  fi
  if has tests; then
    stamp "cuda tests"
    timeout 200 python3 -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
        -rfE python_tests > "$OUT/tests.log" 2>&1
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -20
  fi
  if has train; then
    if [ -n "$TRAIN_PID" ]; then stamp "waiting for training"; wait $TRAIN_PID
    else stamp "denoiser training"; train; fi
    tail -3 /tmp/gpurun/train.log
    mkdir -p "$OUT/weights"
    cp /tmp/gpurun/denoiser_small_*.safetensors "$OUT/weights/" 2>/dev/null
    tar czf "$OUT/weights/train_logs.tgz" -C /tmp/gpurun recipe.json train.log low/log.jsonl \
        high/log.jsonl 2>/dev/null
  fi

  if has hotpaths; then
    bench_fn() {  # module function timeout: one bench in its own process (t-SNE's first call)
      EM_ACCEL_BENCH_OUT="$OUT" timeout "$3" python3 -c \
          "import bench.$1 as m; m.$2()" 2>&1 | tail -"${4:-30}"
    }
    stamp "hot-path cuda tests"
    timeout 150 python3 -m pytest -m cuda -q -p no:cacheprovider -rfE \
        python_tests/test_alrc_hotpath.py python_tests/test_tsne_knn_tiled.py \
        python_tests/test_alrc_ops.py python_tests/test_alrc_module.py \
        > "$OUT/hotpath_tests.log" 2>&1
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/hotpath_tests.log" | tail -10
    stamp "hot paths: t-SNE"; bench_fn bench_tsne run_hotpaths 300 16
    stamp "hot paths: ALRC"; bench_fn bench_alrc run_hotpaths 240 40
    stamp "hot paths: multislice"; bench_fn bench_multislice run_hotpaths 180 14
  fi
  if has targets; then
    for family in complete exit_wave denoise embed; do
      stamp "targets: bench $family (cuda rows)"
      EM_ACCEL_BENCH_DEVICES=cuda EM_ACCEL_BENCH_OUT="$OUT" timeout "${TARGET_TIMEOUT:-150}" \
          python3 -m bench "$family" 2>&1 | tail -25
    done
  fi
  if has tsne; then
    stamp "t-SNE bench"
    EM_ACCEL_TSNE_SIZES= EM_ACCEL_BENCH_OUT="$OUT" timeout 150 python3 -m bench tsne 2>&1 | tail -30
  fi
  if has multislice; then
    stamp "multislice bench"
    EM_ACCEL_BENCH_OUT="$OUT" timeout 180 python3 -c \
        "from bench.bench_multislice import run_cuda; run_cuda()" 2>&1 | tail -40
  fi
  stamp done
} 2>&1 | tee "$OUT/log.txt"
