#!/usr/bin/env bash
# `lunar inspect` and `lunar memory` as a person uses them: real shared models, config-only
# folders with --load-format dummy, a pytorch_model.bin folder, JSON checked by node, and bad
# input giving one line and a nonzero exit.
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"
M=$LUNAR_SHARED/models
CFG=$LUNAR_SRC/bench/configs
FX=$LUNAR_SRC/tests/fixtures/model

out=$("$LUNAR_BIN" inspect "$M/TinyStories-656K"); expect_rc 0 "inspect TinyStories"
expect_contains "$out" "LlamaForCausalLM" "inspect names the architecture"
expect_contains "$out" "656,000" "inspect counts 656K parameters (tied lm_head once)"
expect_contains "$out" "model.safetensors" "inspect lists the weight file"
out=$("$LUNAR_BIN" inspect "$M/stories260K" --tensors); expect_rc 0 "inspect --tensors"
expect_contains "$out" "model.layers.4.self_attn.k_proj.weight" "--tensors lists every tensor"
out=$("$LUNAR_BIN" inspect "$M/stories260K" --json); expect_rc 0 "inspect --json"
node -e 'const j = JSON.parse(process.argv[1]); if (j.tensor_count !== 48 || j.parameters.total !== 260032 || j.files.length !== 1) process.exit(1)' "$out"
expect_rc 0 "inspect --json: 48 tensors, 260,032 parameters (32768 embed + 5 x (12288 attention + 33024 mlp + 128 norm) + 64), one file"

out=$("$LUNAR_BIN" inspect "$FX/baichuan-tiny-pt"); expect_rc 0 "inspect a pytorch_model.bin folder"
expect_contains "$out" "weights       pt, 1 file" "inspect says the weights are a PyTorch file"
for m in Baichuan-7B:7,000,559,616 Llama-3-8B:8,030,261,248 Qwen3-235B-A22B:235,093,634,560; do
  out=$("$LUNAR_BIN" inspect "$CFG/${m%%:*}" --load-format dummy); expect_rc 0 "inspect ${m%%:*} --load-format dummy"
  expect_contains "$out" "${m#*:}" "${m%%:*}: transformers' parameter count"
done

out=$("$LUNAR_BIN" inspect /no/such/model 2>&1); expect_rc 1 "inspect a missing folder"
expect_contains "$out" "/no/such/model" "the missing folder is named"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bad" && echo '{"architectures": [' > "$tmp/bad/config.json"
out=$("$LUNAR_BIN" inspect "$tmp/bad" 2>&1); expect_rc 1 "inspect a malformed config.json"
expect_contains "$out" "config.json: invalid JSON" "malformed config.json is named"
[ "$(echo "$out" | wc -l)" = 1 ]; expect_rc 0 "the error is one line"
mkdir "$tmp/gpt2" && echo '{"architectures":["GPT2LMHeadModel"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":4}' > "$tmp/gpt2/config.json"
out=$("$LUNAR_BIN" inspect "$tmp/gpt2" --load-format dummy 2>&1); expect_rc 1 "inspect an unknown architecture"
expect_contains "$out" "GPT2LMHeadModel" "the unknown architecture is named"

out=$("$LUNAR_BIN" memory "$CFG/Llama-3-8B" --gpu-memory-gib 80); expect_rc 0 "memory Llama-3-8B on 80 GiB"
expect_contains "$out" "128.00 KiB" "KV bytes per token: 2 x 32 x 8 x 128 x 2"
expect_contains "$out" "8,030,261,248 parameters x 2 bytes" "weights are parameter bytes"
out=$("$LUNAR_BIN" memory "$CFG/Llama-3-8B" --gpu-memory-gib 80 --max-model-len 4096 -tp 2 --json); expect_rc 0 "memory --json"
node -e 'const j = JSON.parse(process.argv[1]);
  const ok = j.kv_bytes_per_token === 65536 && j.kv_cache_tokens % 16 === 0 &&
    Math.abs(j.max_concurrency - j.kv_cache_tokens / 4096) < 1e-9 &&
    j.kv_cache_tokens === Math.floor(j.kv_cache_bytes / 65536 / 16) * 16;
  process.exit(ok ? 0 : 1)' "$out"
expect_rc 0 "memory --json: TP=2 halves KV per token; tokens are whole blocks; concurrency = tokens / max_model_len"
out=$("$LUNAR_BIN" memory "$CFG/Llama-3-8B" -tp 3 2>&1); expect_rc 1 "memory with a TP size that does not divide"
expect_contains "$out" "use one of 1, 2, 4, 8, 16, 32" "memory says which TP sizes work"
out=$("$LUNAR_BIN" memory "$CFG/Baichuan-7B" --gpu-memory-gib 16 2>&1); expect_rc 1 "memory: a model that does not fit"
expect_contains "$out" "does not fit" "memory says it does not fit"
expect_contains "$out" "running in bfloat16" "memory says a float32 checkpoint runs in bfloat16"
out=$("$LUNAR_BIN" memory "$CFG/Qwen3-235B-A22B" -tp 8 --gpu-memory-gib 141); expect_rc 0 "memory Qwen3-235B TP=8"
expect_contains "$out" "replicated on 2 GPUs" "memory says kv heads are replicated"
out=$("$LUNAR_BIN" memory --help); expect_rc 0 "memory --help"
expect_contains "$out" "activations = 2*T*hidden*b" "memory --help states the estimate's formula"

finish
