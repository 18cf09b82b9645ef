# lib.bash — helpers for tests/e2e scripts: expectations that count, and a closing summary line
# ("N passed, N failed") that ctest shows on failure.
pass=0; fail=0
expect_rc() { # expect_rc WANT WHAT  (checks $? of the previous command)
  local got=$?
  if [ "$got" = "$1" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2: exit $got, want $1" >&2; fi
}
expect_contains() { # expect_contains HAYSTACK NEEDLE WHAT
  if [[ "$1" == *"$2"* ]]; then pass=$((pass+1)); else fail=$((fail+1)); printf 'FAIL: %s: output lacks %q\n--- output:\n%s\n---\n' "$3" "$2" "$1" >&2; fi
}
expect_eq() { # expect_eq GOT WANT WHAT
  if [ "$1" = "$2" ]; then pass=$((pass+1)); else fail=$((fail+1)); printf 'FAIL: %s: got %q want %q\n' "$3" "$1" "$2" >&2; fi
}
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; }
