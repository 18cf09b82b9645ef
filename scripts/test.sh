#!/usr/bin/env bash
# scripts/test.sh — the whole test suite (C, Lua, end-to-end) under ctest. Extra arguments go
# to ctest (-R REGEX, -L c|lua|e2e, -V). BUILD_DIR as in setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
