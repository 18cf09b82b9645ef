#!/usr/bin/env bash
# bench/serve.sh - the HTTP server under load: streamed completions from h2load at rising
# concurrency, and what the server's event-loop thread (h2o + the Lua layer: routing, JSON,
# SSE chunks) costs per generated token beside the rest of the process (engine, model).
#
#   bench/serve.sh [MODEL] [--levels 1,16,64] [--requests-per-level 400] [--max-tokens 64]
#                  [--h2] [--port P] [-- extra `lunar serve` flags]
#
# MODEL defaults to ../shared/models/TinyStories-656K on the CPU backend: a model so small that
# the server's own work shows. Needs h2load (Debian: nghttp2-client). Each request is
# {"prompt": "Once upon a time", "max_tokens": N, "ignore_eos": true, "stream": true} at
# temperature 0, so every request generates N tokens, each sent as its own SSE event.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
lunar=${LUNAR:-$root/build/lunar}
model=$root/../shared/models/TinyStories-656K
levels=1,16,64 per=400 max_tokens=64 port=0 proto=""
if [[ $# -gt 0 && $1 != --* ]]; then model=$1; shift; fi
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --levels) levels=$2; shift 2 ;;
    --requests-per-level) per=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --h2) proto=h2; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench/serve.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v h2load >/dev/null || { echo "bench/serve.sh: needs h2load (apt-get install nghttp2-client)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
"$lunar" serve "$model" --host 127.0.0.1 --port "$port" --served-model-name m --seed 0 "${extra[@]}" >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 300); do # port 0: the kernel picks one; the ready line names it
  p=$(grep -o 'on http://[^ ]*:[0-9]*' "$tmp/server.log" | grep -o '[0-9]*$' || true)
  [[ -n $p ]] && curl -sf "http://127.0.0.1:$p/health" >/dev/null 2>&1 && { port=$p; break; }
  kill -0 $pid 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ $port != 0 ]] || { echo "bench/serve.sh: the server did not become ready" >&2; cat "$tmp/server.log" >&2; exit 1; }
printf '{"model":"m","prompt":"Once upon a time","max_tokens":%d,"temperature":0,"ignore_eos":true,"stream":true}' \
  "$max_tokens" >"$tmp/body.json"

tck=$(getconf CLK_TCK)
# utime + stime of one thread or of the whole process, in clock ticks
ticks() { awk '{ print $14 + $15 }' "$1"; }

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
echo "# bench/serve.sh: $(basename "$model"), streamed completions of $max_tokens tokens, h2load ${proto:-http/1.1}," \
  "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')); commit $commit"
printf '%-11s %8s %9s %11s %14s %14s\n' concurrency requests "req/s" "tokens/s" "loop ms/1k tok" "rest ms/1k tok"
pflag=(--h1); [[ $proto == h2 ]] && pflag=()
h2load -n 32 -c 4 "${pflag[@]}" -d "$tmp/body.json" -H 'content-type: application/json' \
  "http://127.0.0.1:$port/v1/completions" >/dev/null 2>&1 || true # warm-up (JIT traces, allocator)
for c in ${levels//,/ }; do
  n=$(( per > c ? per : c ))
  loop0=$(ticks /proc/$pid/task/$pid/stat) all0=$(ticks /proc/$pid/stat)
  h2load -n "$n" -c "$c" -m 1 "${pflag[@]}" -d "$tmp/body.json" \
    -H 'content-type: application/json' "http://127.0.0.1:$port/v1/completions" >"$tmp/h2load.txt" 2>&1
  loop1=$(ticks /proc/$pid/task/$pid/stat) all1=$(ticks /proc/$pid/stat)
  rps=$(awk '/finished in/ { print $4 }' "$tmp/h2load.txt") # "finished in 1.89s, 211.60 req/s, ..."
  ok=$(awk '/^requests:/ { print $8 }' "$tmp/h2load.txt")
  [[ $ok == "$n" ]] || { echo "bench/serve.sh: only $ok of $n requests succeeded at concurrency $c" >&2; cat "$tmp/h2load.txt" >&2; exit 1; }
  awk -v c="$c" -v n="$n" -v r="$rps" -v t="$max_tokens" -v l=$((loop1 - loop0)) -v a=$((all1 - all0)) -v hz="$tck" 'BEGIN {
    tok = n * t
    printf "%-11d %8d %9.1f %11.0f %14.1f %14.1f\n", c, n, r, r * t, l / hz * 1e6 / tok, (a - l) / hz * 1e6 / tok }'
done
