#!/usr/bin/env bash
# The start-up memory breakdown as `lunar generate` logs it on the cpu backend: every row is
# there and its numbers agree (tests/e2e/memory_breakdown.awk, the same check the GPU run makes
# in tests/gpu/run_backend.sh), --kv-cache-memory-bytes overrides the size, bad values name
# the flag to change; and the checker itself refuses a GPU breakdown that overruns its budget.
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"
M=$LUNAR_SHARED/models/stories260K
CHECK="$LUNAR_SRC/tests/e2e/memory_breakdown.awk"
gen() { "$LUNAR_BIN" generate "$M" --prompt "Once upon a time" --max-tokens 8 --temperature 0 --device cpu \
  --num-threads 2 "$@"; }

err=$(gen 2>&1 >/dev/null); expect_rc 0 "generate --device cpu"
out=$(awk -f "$CHECK" <<< "$err"); expect_rc 0 "breakdown rows agree: $out"
expect_contains "$err" "[memory]   weights" "weights row"
expect_contains "$err" "in host memory" "weights said to be in host memory"
# stories260K: 2 x 5 layers x 4 kv heads x 8 head_dim x 4 B; 256 seqs x 512 tokens (the cpu cap)
expect_contains "$err" "= 131,072 tokens x 1,280 bytes per token (8,192 blocks of 16)" "KV row"
expect_contains "$err" "maximum concurrency for 512 tokens per request: 256.00x" "concurrency row"

err=$(gen --kv-cache-memory-bytes 1000000 --max-model-len 256 2>&1 >/dev/null); expect_rc 0 "--kv-cache-memory-bytes"
out=$(awk -v kv_bytes=1000000 -f "$CHECK" <<< "$err"); expect_rc 0 "override: whole blocks within 1000000 B: $out"
expect_contains "$err" "= 768 tokens x 1,280 bytes per token (48 blocks of 16)" "override: 1000000 B = 48 blocks"
expect_contains "$err" "maximum concurrency for 256 tokens per request: 3.00x" "override: 768 / 256"

err=$(gen --kv-cache-memory-bytes 1000 2>&1); expect_rc 1 "a cache smaller than one sequence"
expect_contains "$err" "raise --kv-cache-memory-bytes or lower --max-model-len" "says what to change"
err=$(gen --gpu-memory-utilization 1.5 2>&1); expect_rc 1 "utilization past 1"
expect_contains "$err" "--gpu-memory-utilization 1.5 must be in (0, 1]" "names the flag and the range"

# the checker on GPU-shaped logs: one that adds up, one whose rows overrun total x utilization
gpu_log() { cat <<LOG
INFO 11-25 06:00:00.000 [memory] memory on GPU 0 (NVIDIA H100 80GB HBM3): 79.19 GiB x gpu_memory_utilization 0.90 = 71.27 GiB for lunar:
INFO 11-25 06:00:00.000 [memory]   weights              $1 GiB   bfloat16, on the GPU
INFO 11-25 06:00:00.000 [memory]   activation peak       1.10 GiB   step buffers for 2048 tokens
INFO 11-25 06:00:00.000 [memory]   CUDA graphs           0.00 GiB   measured capturing a decode graph of 64 sequences
INFO 11-25 06:00:00.000 [memory]   other                 0.60 GiB   CUDA context, cuBLAS, other processes
INFO 11-25 06:00:00.000 [memory]   KV cache             54.61 GiB = 447,360 tokens x 131,072 bytes per token (27,960 blocks of 16)
INFO 11-25 06:00:00.000 [memory]   maximum concurrency for 8192 tokens per request: 54.61x
INFO 11-25 06:00:00.000 [memory]   total                $2 GiB   of 79.19 GiB on the GPU
LOG
}
out=$(gpu_log 14.96 71.27 | awk -f "$CHECK"); expect_rc 0 "checker: a GPU breakdown that adds up"
expect_contains "$out" "<= 71.27" "checker: compares with total x utilization"
out=$(gpu_log 16.96 73.27 | awk -f "$CHECK"); expect_rc 1 "checker: rows past total x utilization"
expect_contains "$out" "more than total x utilization 71.27" "checker: says so"
out=$(gpu_log 14.96 71.27 | grep -v "activation peak" | awk -f "$CHECK"); expect_rc 1 "checker: a missing row"
finish
