#!/bin/bash
# Device check for the t-SNE family on a lent GPU, from the repository root:
# CUDA build, the t-SNE tests (cuda-marked ones run), and the GPU bench (20k and 100k points,
# 1000 iterations, kNN / affinities / optimisation timed apart). Results under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi -L
EM_ACCEL_CUDA=ON python3 -m pip install -q --no-build-isolation --no-deps -Cbuild-dir=/tmp/b -e . \
  > "$OUT/build.log" 2>&1; echo "build rc=$?"; tail -5 "$OUT/build.log"
python3 -c "import em_accel, json; print(json.dumps(em_accel.build_info()))"
timeout 240 python3 -m pytest python_tests/test_tsne.py python_tests/test_tsne_embed.py \
  python_tests/test_conformance.py -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/tests.log" | tail -25
EM_ACCEL_TSNE_SIZES= EM_ACCEL_BENCH_OUT=$OUT timeout 280 python3 -m bench tsne 2>&1 \
  | tee "$OUT/bench.log" | tail -45
