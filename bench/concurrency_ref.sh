#!/usr/bin/env bash
# bench/concurrency_ref.sh [LEVELS] [SECONDS] — builds bench/concurrency_ref.c against
# build/liblunar.so (-O3, OpenMP over all cores) and prints the aggregate-throughput table.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
out="$BUILD_DIR/concurrency_ref"
cc -std=c11 -O3 -march=native -fopenmp -D_GNU_SOURCE -Iruntime/include bench/concurrency_ref.c \
  -L"$BUILD_DIR" -llunar -Wl,-rpath,"$PWD/$BUILD_DIR" -lm -o "$out"
export BENCH_MACHINE="$(uname -m), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
exec "$out" "${1:-1,2,4,8,16,32,64}" "${2:-20}" "$(git rev-parse --short HEAD)"
