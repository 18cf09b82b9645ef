#!/usr/bin/env bash
# bench/tokenizer_gpu.sh — one run on the GPU machine (it has Python tokenizers, transformers and
# sentencepiece; this machine has none): Hugging Face reference ids for the fixtures and the
# throughput table with the HF peer. MODELS holds NAME/ folders with tokenizer.json.xz (the big
# files travel compressed) or tokenizer.model, plus their configs. Results go to $OUT:
# hf_all.json (split into tests/fixtures/tokenizer/hf_*.json by tests/js/split_hf_ref.js),
# ref.log, bench.txt, build.log.
set -uo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-models}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/tok
args=()
for d in "$MODELS"/*/; do
  n=$(basename "$d")
  mkdir -p /tmp/tok/$n && cp "$d"/* /tmp/tok/$n/
  [ -f /tmp/tok/$n/tokenizer.json.xz ] && xz -d -f /tmp/tok/$n/tokenizer.json.xz
  args+=("$n=/tmp/tok/$n")
done
# the synthetic variants of tests/fixtures/tokenizer/variants.json, from the llama3/llama2 bases
python3 bench/tokenizer_hf.py variants --spec tests/fixtures/tokenizer/variants.json --root /tmp/tok
for d in /tmp/tok/v_*; do args+=("$(basename "$d")=$d"); done
# liblunar alone; plain cc when cmake cannot configure (the device's pkg-config paths for cJSON)
(cmake -S . -B build -DLUNAR_WERROR=OFF -DLUNAR_CUDA=OFF && cmake --build build -j"$(nproc)" --target lunar) > "$OUT/build.log" 2>&1 \
  || (mkdir -p build && cc -O2 -g -shared -fPIC -D_GNU_SOURCE -DLUNAR_VERSION=\"0.1.0\" -DLUNAR_BUILD_TYPE=\"Release\" \
        -Iruntime/include -Iruntime runtime/core/*.c runtime/tokenizer/*.c -o build/liblunar.so \
        -lcjson -lpcre2-8 -lutf8proc -lpthread -lm) >> "$OUT/build.log" 2>&1 || tail -20 "$OUT/build.log"
PYTHONUNBUFFERED=1 python3 bench/tokenizer_hf.py ref --corpus tests/fixtures/tokenizer/corpus.json --out "$OUT/hf_all.json" \
  "${args[@]}" 2>&1 | grep -v '^  \|^note: \|^stack backtrace\|panicked at\|index out of bounds\|^$' | tee "$OUT/ref.log"
bargs=()
for a in "${args[@]}"; do case $a in qwen3=*|llama3=*|deepseek_v3=*|gemma3=*|llama2=*) bargs+=("$a");; esac; done
PYTHONUNBUFFERED=1 OUTDIR=/tmp/bench bench/tokenizer.sh "${bargs[@]}" 2>&1 | tee "$OUT/bench.txt"
