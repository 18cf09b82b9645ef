#!/usr/bin/env bash
# `lunar template render` as a person uses it: the built-in qwen3 template over a conversation
# with tools, tool calls and tool results must print exactly what Jinja2 printed
# (tests/fixtures/template/builtin-qwen3.json), and --tokens adds the ids; errors are clear.
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"
M="$LUNAR_SHARED/models/stories260K"
FX="$LUNAR_SRC/tests/fixtures/template"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

node -e '
const fs = require("fs");
const [fx, out] = process.argv.slice(1);
const conv = JSON.parse(fs.readFileSync(fx + "/conversations.json")).find(c => c.name === "tool_call_and_result");
fs.writeFileSync(out + "/messages.json", JSON.stringify(conv.messages));
fs.writeFileSync(out + "/tools.json", JSON.stringify(conv.tools));
const cs = JSON.parse(fs.readFileSync(fx + "/builtin-qwen3.json")).cases;
for (const agp of [false, true]) {
  const c = cs.find(c => c.conversation === conv.name && c.add_generation_prompt === agp);
  fs.writeFileSync(out + "/want-" + agp + ".txt", c.output);
}' "$FX" "$tmp"; expect_rc 0 "fixture extraction"

"$LUNAR_BIN" template render --template "$LUNAR_SRC/templates/qwen3.jinja" --messages "$tmp/messages.json" \
  --tools "$tmp/tools.json" > "$tmp/got-false.txt"; expect_rc 0 "render"
cmp -s "$tmp/got-false.txt" "$tmp/want-false.txt"; expect_rc 0 "render is byte-identical to Jinja2"
"$LUNAR_BIN" template render --template "$LUNAR_SRC/templates/qwen3.jinja" --messages "$tmp/messages.json" \
  --tools "$tmp/tools.json" --add-generation-prompt > "$tmp/got-true.txt"; expect_rc 0 "render --add-generation-prompt"
cmp -s "$tmp/got-true.txt" "$tmp/want-true.txt"; expect_rc 0 "--add-generation-prompt is byte-identical to Jinja2"

printf '[{"role": "user", "content": "Hi"}]' > "$tmp/hi.json"
out=$("$LUNAR_BIN" template render --model "$M" --template '{{ bos_token }}{{ messages[0].content }}' --messages "$tmp/hi.json" --tokens 2>/dev/null)
expect_rc 0 "--tokens"
ids=$("$LUNAR_BIN" tokenize "$M" --text "<s>Hi" --no-special-tokens)
expect_eq "$out" "<s>Hi"$'\n'"$ids" "--tokens prints the text then the ids lunar tokenize gives it (bos from the model)"

out=$("$LUNAR_BIN" template render --model "$M" --messages "$tmp/hi.json" --add-generation-prompt)
expect_rc 0 "--model falls back to a built-in by model_type"
expect_eq "$out" "<s>[INST] Hi [/INST]" "llama model without a template gets llama-2"

# content as a list of text parts, as vLLM hands it on: joined with "\n" for a template that reads
# content as text (chatml), kept as parts for one that loops over them (gemma3); raw = untouched,
# as transformers' apply_chat_template (expected texts rendered by Jinja2 3.1.6)
printf '[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]' > "$tmp/parts.json"
out=$("$LUNAR_BIN" template render --template chatml --messages "$tmp/parts.json"); expect_rc 0 "--template takes a built-in name"
expect_eq "$out" $'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\na\nb<|im_end|>' \
  "text parts joined with newlines for a string-content template (vLLM)"
out=$("$LUNAR_BIN" template render --template chatml --messages "$tmp/parts.json" --chat-template-content-format raw)
expect_eq "$out" $'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nab<|im_end|>' \
  "raw: the template sees the parts (transformers)"
if [ -f "$LUNAR_SHARED/chat-templates/gemma3.jinja" ]; then
  out=$("$LUNAR_BIN" template render --template "$LUNAR_SHARED/chat-templates/gemma3.jinja" --messages "$tmp/parts.json")
  expect_eq "$out" $'<start_of_turn>user\nab<end_of_turn>' "parts kept for a template that loops over content (gemma3)"
fi

out=$("$LUNAR_BIN" template render --template '{{ raise_exception("roles must alternate") }}' --messages "$tmp/hi.json" 2>&1)
expect_rc 1 "a raising template exits 1"
expect_contains "$out" "inline:1:" "the error names the template position"
expect_contains "$out" "roles must alternate" "the error carries the template's message"

out=$("$LUNAR_BIN" template render --template nosuch.jinja --messages "$tmp/hi.json" 2>&1)
expect_rc 1 "a missing template exits 1"
expect_contains "$out" "no such file" "a missing template says so"
finish
