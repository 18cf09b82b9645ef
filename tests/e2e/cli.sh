#!/usr/bin/env bash
# The lunar program as a person uses it: help, version, running a script, and mistakes that
# must give a clear message and a nonzero exit.
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"

out=$("$LUNAR_BIN" version) ; expect_rc 0 "version"
expect_contains "$out" "lunar 0.1.0" "version names itself"
out=$("$LUNAR_BIN" version --json) ; expect_rc 0 "version --json"
expect_contains "$out" '"gpus":[' "version --json lists gpus"
node -e 'JSON.parse(process.argv[1])' "$out"; expect_rc 0 "version --json is valid JSON"

out=$("$LUNAR_BIN" --help) ; expect_rc 0 "--help"
expect_contains "$out" "version" "help lists commands"

out=$("$LUNAR_BIN" versoin 2>&1) ; expect_rc 2 "unknown command"
expect_contains "$out" "did you mean 'version'" "unknown command suggests"

out=$("$LUNAR_BIN" version --jsno 2>&1) ; expect_rc 2 "unknown flag"
expect_contains "$out" "did you mean --json" "unknown flag suggests"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/s.lua" <<'LUA'
local lunar = require "lunar"
print(table.concat({"script", tostring(arg[0] ~= nil), arg[1], arg[2], lunar.version}, " "))
return 3
LUA
out=$("$LUNAR_BIN" run "$tmp/s.lua" a --b) ; expect_rc 3 "run returns the script's status"
expect_contains "$out" "script true a --b 0.1.0" "run passes args and lunar"

echo 'error("boom")' > "$tmp/bad.lua"
out=$("$LUNAR_BIN" run "$tmp/bad.lua" 2>&1) ; expect_rc 1 "failing script exits 1"
expect_contains "$out" "boom" "failing script's error is shown"
out=$("$LUNAR_BIN" run "$tmp/missing.lua" 2>&1) ; expect_rc 1 "missing script"
expect_contains "$out" "missing.lua" "missing script is named"

# after `cmake --install` lunar finds its Lua modules and built-in templates beside itself,
# whatever the working directory
cmake --install "$LUNAR_BUILD" --prefix "$tmp/inst" > "$tmp/install.log" 2>&1 ; expect_rc 0 "cmake --install"
out=$(cd / && "$tmp/inst/bin/lunar" generate "$LUNAR_SHARED/models/stories260K" --prompt "Once upon a time" --max-tokens 8 --temperature 0 2>&1)
expect_rc 0 "the installed lunar generates"
expect_contains "$out" "Once upon a time, there was a little girl" "installed lunar: same greedy text"
echo '[{"role":"user","content":"hi"}]' > "$tmp/m.json"
out=$(cd / && "$tmp/inst/bin/lunar" template render --template chatml --messages "$tmp/m.json" 2>&1)
expect_contains "$out" "<|im_start|>user" "installed lunar: built-in templates found"

finish
