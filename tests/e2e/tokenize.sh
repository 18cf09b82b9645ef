#!/usr/bin/env bash
# `lunar tokenize` / `lunar detokenize` as a person uses them, on the shared stories260K model
# (ids checked against Hugging Face in tests/c/test_tokenizer.c).
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"
M="$LUNAR_SHARED/models/stories260K"

out=$("$LUNAR_BIN" tokenize "$M" --text "Hello world") ; expect_rc 0 "tokenize"
expect_eq "$out" "[1,346,306,414,263,304,341]" "tokenize prints the ids with bos"
out=$("$LUNAR_BIN" tokenize "$M" --text "Hello world" --no-special-tokens) ; expect_rc 0 "--no-special-tokens"
expect_eq "$out" "[346,306,414,263,304,341]" "--no-special-tokens drops bos"
out=$("$LUNAR_BIN" tokenize "$M" --text "Hello world" --json --verbose) ; expect_rc 0 "--json --verbose"
expect_contains "$out" '"tokens":["<s>","▁He","ll","o","▁w","or","ld"]' "--json --verbose lists tokens"
node -e 'JSON.parse(process.argv[1])' "$out"; expect_rc 0 "--json is valid JSON"
out=$("$LUNAR_BIN" tokenize "$M" --text "Hello" -v) ; expect_rc 0 "-v"
expect_contains "$out" '(special)' "-v marks special tokens"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'Hello world' > "$tmp/t.txt"
out=$("$LUNAR_BIN" tokenize "$M" --file "$tmp/t.txt") ; expect_rc 0 "--file"
expect_eq "$out" "[1,346,306,414,263,304,341]" "--file reads the file"
printf 'ok \xff' > "$tmp/bad.txt"
out=$("$LUNAR_BIN" tokenize "$M" --file "$tmp/bad.txt" 2>&1) ; expect_rc 1 "invalid UTF-8 fails"
expect_contains "$out" "invalid UTF-8 at byte offset 3" "invalid UTF-8 names the offset"
out=$("$LUNAR_BIN" tokenize "$M" 2>&1) ; expect_rc 1 "no text"
expect_contains "$out" "--text" "missing text is explained"
out=$("$LUNAR_BIN" tokenize "$tmp/none" --text x 2>&1) ; expect_rc 1 "missing model"
expect_contains "$out" "no such folder" "missing model is named"

out=$("$LUNAR_BIN" detokenize "$M" --ids '[1,346,306,414,263,304,341]') ; expect_rc 0 "detokenize"
expect_eq "$out" "<s> Hello world" "detokenize keeps special tokens by default"
out=$("$LUNAR_BIN" detokenize "$M" --ids '1, 346, 306, 414, 263, 304, 341' --skip-special-tokens) ; expect_rc 0 "detokenize --skip"
expect_eq "$out" "Hello world" "detokenize --skip-special-tokens"
out=$("$LUNAR_BIN" detokenize "$M" --ids '[346]' --json) ; expect_rc 0 "detokenize --json"
expect_eq "$out" '{"text":"He"}' "detokenize --json"
out=$("$LUNAR_BIN" detokenize "$M" --ids '[99999]' 2>&1) ; expect_rc 1 "unknown id"
expect_contains "$out" "outside the vocabulary" "unknown id is explained"
finish
