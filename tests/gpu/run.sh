#!/usr/bin/env bash
# tests/gpu/run.sh — the one command for every GPU test, on a machine with a GPU: builds
# liblunar with CUDA and the GPU programs, runs every kernel against its CPU reference
# (test_kernels), the same tests (small shapes) under compute-sanitizer memcheck, the kernel
# bandwidth benchmark, then tests/gpu/run_backend.sh (the CUDA backend op by op against the
# CPU backend, end to end against the transformers fixtures, generate and serve on the GPU),
# then a Llama-3-8B-shaped model's logits against transformers' on the same safetensors.
# Logs go to $OUT (default build-gpu/logs). Exit status: non-zero on any test failure or
# memcheck error.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-$BUILD_DIR/logs}
mkdir -p "$OUT"
commit=${LUNAR_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
cmake -S . -B "$BUILD_DIR" -DLUNAR_CUDA=ON -DLUNAR_WERROR=OFF > "$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD_DIR" -j "$(nproc)" --target test_kernels bench_kernels > "$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; exit 1; }
rc=0
"$BUILD_DIR/tests/gpu/test_kernels" 2>&1 | tee "$OUT/test_kernels.log" || rc=1
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD_DIR/tests/gpu/test_kernels" --quick \
    > "$OUT/memcheck.log" 2>&1 || rc=1
  grep -E "ERROR SUMMARY|PASS|FAIL" "$OUT/memcheck.log" | tail -3
else
  echo "compute-sanitizer not found: memcheck skipped"
fi
"$BUILD_DIR/tests/gpu/bench_kernels" "$commit" 2>&1 | tee "$OUT/bench_kernels.log" || rc=1
BUILD_DIR=$BUILD_DIR OUT=$OUT bash tests/gpu/run_backend.sh || rc=1
# a Llama-3-8B-shaped model (random weights, bf16 safetensors written by transformers): lunar's
# logits against transformers' (tests/gpu/llama8b_logits.lua states the tolerance); ~16 GB of disk
if python3 -c "import transformers" 2> /dev/null; then
  d=$(mktemp -d "${TMPDIR:-/tmp}/llama8b.XXXXXX")
  { python3 tests/gpu/llama8b_ref.py bench/configs/Llama-3-8B "$d" \
      && "$BUILD_DIR/lunar" run tests/gpu/llama8b_logits.lua "$d"; } > "$OUT/llama8b.log" 2>&1 || rc=1
  grep -E "llama8b|lunar cuda|transformers bf16" "$OUT/llama8b.log"
  rm -rf "$d"
else
  echo "transformers not importable: the Llama-3-8B logits check skipped"
fi
echo "tests/gpu/run.sh: rc=$rc"
exit $rc
