#!/usr/bin/env bash
# Every example in examples/ runs and does what its header says.
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"
M="$LUNAR_SHARED/models/TinyStories-656K"

out=$(cd "$LUNAR_SRC" && "$LUNAR_BIN" run examples/offline_batch.lua "$M" 2>&1); expect_rc 0 "offline_batch runs"
expect_contains "$out" 'Prompt: "Lily and Ben went to"' "offline_batch prints each prompt"
expect_contains "$out" "finish_reason=" "offline_batch prints the finish reason"

out=$(cd "$LUNAR_SRC" && "$LUNAR_BIN" run examples/logits_processor.lua "$M" 2>&1); expect_rc 0 "logits_processor runs"
expect_contains "$out" "no 'e':" "logits_processor prints the constrained text"

out=$(cd "$LUNAR_SRC" && "$LUNAR_BIN" run examples/chat_template.lua "$M" 2>&1); expect_rc 0 "chat_template runs"
expect_contains "$out" $'Q: Who is Lily?\nA: Lily is a little girl.\nQ: What did she find?\nA:' "chat_template renders the custom template"
expect_contains "$out" "chat_template:5:" "chat_template shows a template error with its line"
expect_contains "$out" "unknown role narrator" "chat_template shows the template's message"

out=$("$LUNAR_BIN" generate "$M" --prompt "Once upon a time" --temperature 0 --max-tokens 16 2>&1); expect_rc 0 "generate"
expect_contains "$out" "Once upon a time, " "generate prints prompt and continuation"
out=$("$LUNAR_BIN" generate "$M" --prompt "x" --top-p 2 2>&1); expect_rc 1 "generate rejects top_p 2"
expect_contains "$out" "top_p" "the error names top_p"
out=$("$LUNAR_BIN" generate "$M" 2>&1); expect_rc 1 "generate without a prompt"
expect_contains "$out" "no prompt" "generate says a prompt is missing"
out=$(printf '1+1\nllm.max_model_len\n' | "$LUNAR_BIN" repl "$M" 2>&1); expect_rc 0 "repl with a model"
expect_contains "$out" "512" "repl has llm loaded"
finish
