#!/usr/bin/env bash
# `lunar serve` end to end on the CPU backend with a real model: curl over HTTP/1.1, HTTP/2
# (prior knowledge and Upgrade) and HTTPS with ALPN h2, the official openai client, h2load
# load, a bad-input suite that must never take the server down, client disconnects that
# abort their requests, and SIGTERM that drains and exits 0.
set -u
. "$LUNAR_SRC/tests/e2e/lib.bash"
M="$LUNAR_SHARED/models/stories260K"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

start() { # start NAME ARGS... -> sets PORT_<NAME>, PID_<NAME>
  local name=$1; shift
  "$LUNAR_BIN" serve "$M" --host 127.0.0.1 --port 0 --num-threads 2 "$@" > "$tmp/$name.log" 2>&1 &
  local pid=$! port=""
  pids+=("$pid")
  for _ in $(seq 1 100); do
    port=$(grep -o 'on https\?://127.0.0.1:[0-9]*' "$tmp/$name.log" | grep -o '[0-9]*$')
    [ -n "$port" ] && break
    sleep 0.1
  done
  eval "PORT_$name=$port PID_$name=$pid"
}
json() { node -e "const v=JSON.parse(require('fs').readFileSync(0,'utf8')); const f=new Function('v','return ('+process.argv[1]+')'); console.log(f(v))" "$1"; }

start main --served-model-name stories tiny --max-request-body 1M --handler "$LUNAR_SRC/examples/handler.lua" \
  --chat-template chatml
U="http://127.0.0.1:$PORT_main"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' $U/health)" 200 "GET /health"
out=$(curl -s $U/v1/models); expect_eq "$(echo "$out" | json 'v.data.map(m=>m.id).join(",")')" "stories,tiny" "two served names"
out=$(curl -s $U/version); expect_contains "$out" '"version":"0.1.0"' "GET /version"

body='{"model":"stories","prompt":"Once upon a time","max_tokens":16,"temperature":0}'
out=$(curl -s --http1.1 -w '\n%{http_version}' $U/v1/completions -H 'content-type: application/json' -d "$body")
expect_eq "$(echo "$out" | tail -1)" "1.1" "HTTP/1.1 request"
text=$(echo "$out" | head -1 | json 'v.choices[0].text')
first_id=$(echo "$out" | head -1 | json 'v.id')
expect_contains "$text" ", there was a little girl named Lily" "greedy completion over HTTP/1.1"
out=$(curl -s --http2-prior-knowledge -w '\n%{http_version}' $U/v1/completions -H 'content-type: application/json' -d "$body")
expect_eq "$(echo "$out" | tail -1)" "2" "HTTP/2 by prior knowledge"
expect_eq "$(echo "$out" | head -1 | json 'v.choices[0].text')" "$text" "same text over HTTP/2"
out=$(curl -s --http2 -w '\n%{http_version}' $U/v1/completions -H 'content-type: application/json' -d "$body")
expect_eq "$(echo "$out" | tail -1)" "2" "HTTP/2 by Upgrade: h2c"

# streaming: token chunks, a usage chunk, [DONE]. Tokens the engine made while the event loop
# was busy arrive together in one chunk (as vLLM's output processor merges them), so under load
# 6 tokens may come in fewer than 6 chunks: count at least one
out=$(curl -s -N $U/v1/completions -H 'content-type: application/json' \
  -d '{"prompt":"Once upon a time","max_tokens":6,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}')
expect_eq "$(( $(echo "$out" | grep -c '^data: {"') >= 2 ))" 1 "token chunk(s) + usage + [DONE]"
stext=$(echo "$out" | grep '^data: {' | sed 's/^data: //' | node -e 'let s="";for(const l of require("fs").readFileSync(0,"utf8").split("\n")){if(!l)continue;const v=JSON.parse(l);for(const c of v.choices)s+=c.text}console.log(s)')
expect_eq "$stext" "$(echo "$text" | cut -c1-${#stext})" "streamed deltas add up to the non-streamed text"
expect_contains "$(echo "$out" | tail -2)" "data: [DONE]" "stream ends with [DONE]"
expect_contains "$out" '"completion_tokens":6' "usage chunk"

# many streams multiplexed on one HTTP/2 connection
par=(-s -Z --parallel-immediate --parallel-max 20)
for i in $(seq 1 20); do
  par+=(--http2-prior-knowledge -H 'content-type: application/json' -d '{"prompt":"The","max_tokens":4,"stream":true}' "$U/v1/completions")
  [ $i -lt 20 ] && par+=(--next)
done
n2=$(curl "${par[@]}" | grep -c 'data: \[DONE\]')
expect_eq "$n2" 20 "20 concurrent streams on one HTTP/2 connection"

# the official openai client
(cd "$LUNAR_SRC/tests/js" && node openai_client.mjs "$U/v1" none stories chat) > "$tmp/openai.out" 2>&1
expect_rc 0 "openai npm client: $(tail -1 "$tmp/openai.out")"
grep FAIL "$tmp/openai.out" >&2

# chat: the server's greedy completion equals the offline API's (llm:chat in `lunar run`) for the
# same messages, both through the chatml built-in; then chat errors, each a 400 in OpenAI's shape
code() { curl -s -o "$tmp/body" -w '%{http_code}' "$@"; }
msgs='[{"role":"system","content":"You tell stories."},{"role":"user","content":"Once upon a time there was a cat"},{"role":"assistant","content":"The cat was big."},{"role":"user","content":[{"type":"text","text":"What happened"},{"type":"text","text":"next? 🙂"}]}]'
cat > "$tmp/chat.lua" <<LUA
local lunar = require "lunar"
local json = require "lunar.jinja.json"
local llm = assert(lunar.LLM { model = "$M", chat_template = "chatml", num_threads = 2 })
local outs = assert(llm:chat(assert(json.decode(arg[1])), assert(lunar.SamplingParams { temperature = 0, max_tokens = 24 })))
io.write(outs[1].outputs[1].text, "\n", #outs[1].prompt_token_ids, "\n")
llm:close()
LUA
offline=$("$LUNAR_BIN" run "$tmp/chat.lua" "$msgs"); expect_rc 0 "offline llm:chat"
out=$(curl -s $U/v1/chat/completions -H 'content-type: application/json' \
  -d "{\"model\":\"stories\",\"messages\":$msgs,\"max_tokens\":24,\"temperature\":0}")
online=$(echo "$out" | json 'v.choices[0].message.content + "\n" + v.usage.prompt_tokens')
expect_eq "$online" "$offline" "greedy chat completion through the server == offline llm:chat for the same messages"
out=$(curl -s $U/tokenize -H 'content-type: application/json' -d "{\"messages\":$msgs}")
expect_eq "$(echo "$out" | json 'v.count')" "$(echo "$offline" | tail -1)" "/tokenize of messages counts the chat prompt's tokens"
tools='[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"x":1.0,"y":[1,2.5e3]}}]'
ids=$(curl -s $U/tokenize -H 'content-type: application/json' \
  -d "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":$tools,\"chat_template\":\"{{ tools | tojson }}\"}" | json 'JSON.stringify(v.tokens)')
out=$(curl -s $U/detokenize -H 'content-type: application/json' -d "{\"tokens\":$ids}" | json 'v.prompt')
expect_eq "$out" '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "x": 1.0, "y": [1, 2500.0]}}]' \
  "tools reach the template in the request's key order, 1.0 kept a float (Python json.dumps of the same body)"
cj() { code $U/v1/chat/completions -H 'content-type: application/json' -d "$1"; }
expect_eq "$(cj '{"max_tokens":2}')" 400 "chat without messages -> 400"
expect_contains "$(cat $tmp/body)" '"param":"messages"' "the error names messages"
expect_eq "$(cj '{"messages":[{"role":7,"content":"x"}],"max_tokens":2}')" 400 "chat with a non-string role -> 400"
expect_contains "$(cat $tmp/body)" '"type":"BadRequestError"' "in OpenAI's error shape"
expect_eq "$(cj '{"messages":[{"content":"x"}],"max_tokens":2}')" 400 "chat message without a role -> 400"
expect_eq "$(cj '{"messages":[{"role":"user","content":{"a":1}}],"max_tokens":2}')" 400 "chat content of the wrong type -> 400"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"{% if messages[0].role != \"system\" %}{{ raise_exception(\"a system message must come first\") }}{% endif %}"}')" 400 \
  "a template that raises -> 400"
expect_contains "$(cat $tmp/body)" "a system message must come first" "the template's message reaches the client"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"{% for x in range(10) %}{% for y in range(10) %}{% for z in range(100000) %}{% endfor %}{% endfor %}{% endfor %}"}')" 400 \
  "a template that would loop for ever -> 400 (step limit)"
# what a request's template may build is bounded before it is built (the event loop would pay
# in seconds, every client waiting): a wide indent took a minute and ran LuaJIT out of memory
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"{{ messages | tojson(indent=1000000000) }}"}')" 400 \
  "tojson(indent=1e9) -> 400"
expect_contains "$(cat $tmp/body)" "string too large" "the template error says why"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"{% set ns = namespace(x=[1]) %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}"}')" 400 \
  "a list doubled 40 times -> 400"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"{{ (\"x\" * 1000).replace(\"x\", \"y\" * 600000) }}{{ \"x\" | center(2000000000) }}"}')" 400 \
  "replace and center past the bound -> 400"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"/etc/passwd"}')" 200 \
  "a request chat_template is source, never a path the server would read"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"}],"max_tokens":2,"chat_template":"x{{ messages[0].content.__class__ }}"}')" 200 \
  "sandbox: a request template reaches no Python-style internals"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"Once"}],"max_tokens":2,"continue_final_message":true,"add_generation_prompt":true}')" 400 \
  "continue_final_message with an explicit add_generation_prompt -> 400"
expect_eq "$(cj '{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"Once"}],"max_tokens":2,"continue_final_message":true}')" 200 \
  "continue_final_message alone -> 200"
expect_eq "$(cj "{\"messages\":$msgs,\"max_tokens\":2}")" 200 "the server keeps serving chat after the errors"

# bad input: each gets its error, the server keeps serving
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":')" 400 "truncated JSON -> 400"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","max_tokens":-5}')" 400 "negative max_tokens -> 400"
expect_contains "$(cat $tmp/body)" '"param":"max_tokens"' "error names max_tokens"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","max_tokens":1e300}')" 400 "huge number -> 400"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","top_p":"high"}')" 400 "wrong type -> 400"
# NaN and Infinity are JSON to Python's json and to cjson (1e400 reads as Infinity); cjson will
# not write them back, so the message naming the value must spell them itself
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","temperature":NaN}')" 400 "temperature NaN -> 400"
expect_contains "$(cat $tmp/body)" '"message":"temperature must be a number, got NaN"' "the NaN error names the field and the value"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","max_tokens":1e400}')" 400 "max_tokens 1e400 (Infinity) -> 400"
expect_contains "$(cat $tmp/body)" '"param":"max_tokens"' "the Infinity error names max_tokens"
expect_eq "$(code $U/v1/chat/completions -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"x"}],"echo":-Infinity}')" 400 "chat echo -Infinity -> 400"
# the work one request buys is bounded as vLLM bounds it (n <= 16384, <= 1024 prompts):
# n = 1e6 queued a million sequences ahead of every other client for minutes
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","n":1000000,"max_tokens":2}')" 400 "n = 1e6 -> 400"
expect_contains "$(cat $tmp/body)" '"message":"n must be at most 16384, got 1000000"' "the error gives the bound"
many=$(printf '"x",%.0s' $(seq 1 1025)); many="[${many%,}]"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d "{\"prompt\":$many,\"max_tokens\":1}")" 400 "1025 prompts in one request -> 400"
expect_contains "$(cat $tmp/body)" '"param":"prompt"' "the error names prompt"
# shapes vLLM's request models reject were taken silently: an array for an object, stream
# options without a stream, tools that are not tools, /tokenize flags of any type
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","stream":true,"stream_options":[1]}')" 400 "stream_options as an array -> 400"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","stream_options":{"include_usage":true}}')" 400 "stream_options without stream -> 400 (vLLM's check)"
expect_contains "$(cat $tmp/body)" 'Stream options can only be defined when `stream=True`.' "vLLM's words"
expect_eq "$(code $U/v1/chat/completions -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"x"}],"tools":[1]}')" 400 "tools: [1] -> 400"
expect_contains "$(cat $tmp/body)" '"param":"tools"' "the error names tools"
expect_eq "$(code $U/v1/chat/completions -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":[1]}')" 400 "chat_template_kwargs as an array -> 400"
expect_eq "$(code $U/tokenize -H 'content-type: application/json' -d '{"prompt":"x","add_special_tokens":"no"}')" 400 "/tokenize add_special_tokens as a string -> 400"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","model":"gpt-4"}')" 404 "unknown model -> 404"
expect_eq "$(code $U/v1/completions -H 'content-type: text/plain' -d '{"prompt":"x"}')" 415 "wrong content type -> 415"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","max_tokens":2,"frobnicate":1}')" 200 "unknown field ignored (as vLLM)"
printf '{"prompt":"\xff\xfe bad","max_tokens":2}' > "$tmp/badutf8.json"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' --data-binary @$tmp/badutf8.json)" 400 "invalid UTF-8 -> 400"
expect_contains "$(cat $tmp/body)" "UTF-8" "invalid UTF-8 error says so"
printf '{"prompt":"x","model":"\xc3\xc3"}' > "$tmp/badutf8.json"   # no tokenizer reads a model name
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' --data-binary @$tmp/badutf8.json)" 400 "invalid UTF-8 in any field -> 400, never echoed back"
expect_contains "$(cat $tmp/body)" "not valid UTF-8 (byte 23)" "the error gives the offset"
head -c 2000000 /dev/zero | tr '\0' 'a' | sed 's/^/{"prompt":"/; s/$/"}/' > "$tmp/big.json"
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' --data-binary @$tmp/big.json)" 413 "body past --max-request-body -> 413"
expect_contains "$(cat $tmp/body)" '{"error":{"message":"the request body is larger than --max-request-body (1048576 bytes)","type":"RequestEntityTooLarge","param":null,"code":413}}' \
  "h2o's own 413 comes in OpenAI's error shape"
long=$(printf 'the cat sat on the mat . %.0s' $(seq 1 100))
expect_eq "$(code $U/v1/completions -H 'content-type: application/json' -d "{\"prompt\":\"$long\",\"max_tokens\":10}")" 400 "prompt past max_model_len -> 400"
expect_contains "$(cat $tmp/body)" "maximum context length is 512 tokens" "vLLM's context-length message"
expect_eq "$(code -X GET $U/v1/completions)" 405 "wrong method -> 405"
# an error keeps an HTTP/1.1 connection alive (h2o 2.2 closes it after a non-200 response of
# unknown length), so requests kept alive or pipelined behind it are not lost
expect_eq "$(curl -s -o /dev/null -o /dev/null -w '%{http_code}:%{num_connects} ' $U/nope -H 'content-type: application/json' -d '{"prompt":"x","max_tokens":1}' $U/v1/completions)" \
  "404:1 200:0 " "a 404 and a completion on one HTTP/1.1 connection"
expect_eq "$(code $U/nope)" 404 "unknown route -> 404"
long=$(head -c 5000 /dev/zero | tr '\0' 'a')
out=$(curl -s "$U/x%FF%C3$long")
expect_eq "$(echo "$out" | json 'v.error.message.length < 260 && v.error.message.includes("/x%FF%C3aaa")')" true \
  "a 404 quotes a long path with odd bytes short and percent-encoded (valid JSON)"
expect_eq "$(curl -s $U/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"stories","messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":{"messages":"x"}}' \
  | json 'v.error.message.includes("templates/chatml.jinja:") && !v.error.message.includes(process.env.LUNAR_SRC)')" true \
  "a built-in template's error names templates/NAME.jinja, not the install path"
# a truncated body: the client promises more than it sends and hangs up
(printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"prompt":"x"' ; sleep 0.3) | timeout 2 bash -c "cat > /dev/tcp/127.0.0.1/$PORT_main" 2>/dev/null
# abrupt disconnects mid-stream: the engine aborts them. Each client hangs up after its first
# bytes (head exits, curl dies of SIGPIPE at its next write), so the server surely saw the
# request, whatever the machine's load; one that still finished first counts as finished.
metric() { echo "$1" | grep -o "vllm:request_success_total{finished_reason=\"$2\",model_name=\"stories\"} [0-9]*" | awk '{n = $2} END {print n + 0}'; }
m=$(curl -s $U/metrics); ab0=$(metric "$m" abort); len0=$(metric "$m" length)
for i in 1 2 3; do
  curl -s -N $U/v1/completions -H 'content-type: application/json' \
    -d '{"prompt":"x","max_tokens":500,"ignore_eos":true,"stream":true}' | head -c 20 > "$tmp/cut$i"
done
sleep 0.5
m=$(curl -s $U/metrics); ab=$(( $(metric "$m" abort) - ab0 )); len=$(( $(metric "$m" length) - len0 ))
expect_eq "$(( ab + len ))" 3 "every cut request ended ($ab aborted, $len finished before the hang-up was seen)"
expect_eq "$(( ab >= 2 ))" 1 "disconnects abort their requests ($ab of 3)"
# a client that hangs up on a non-streaming HTTP/1.1 request aborts it too (h2o does not read
# that socket while the request runs; the server peeks it twice a second)
curl -s -m 0.5 $U/v1/completions -H 'content-type: application/json' \
  -d '{"prompt":"x","max_tokens":500,"ignore_eos":true,"n":200}' > /dev/null
sleep 1.2
m=$(curl -s $U/metrics); ab1=$(( $(metric "$m" abort) - ab0 - ab ))
expect_eq "$ab1" 200 "a hang-up on a non-streaming HTTP/1.1 request aborts its 200 sequences"
expect_contains "$m" 'vllm:num_requests_running{model_name="stories"} 0.0' "nothing left running"
expect_contains "$m" 'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="stories"}' "TTFT histogram"
out=$(curl -s $U/v1/completions -H 'content-type: application/json' -d "$body")
expect_eq "$(echo "$out" | json 'v.choices[0].text')" "$text" "a final request still succeeds"

# the --handler example: an added route and a per-request sampling policy
expect_contains "$(curl -s $U/v1/hello)" '"hello":"world"' "handler script adds a route"
out=$(curl -s $U/v1/completions -H 'content-type: application/json' \
  -d '{"prompt":"Once upon a time","max_tokens":16,"temperature":1.7,"user":"deterministic"}')
expect_eq "$(echo "$out" | json 'v.choices[0].text')" "$text" "handler's sampling policy makes that user greedy"

# tokenize / detokenize
out=$(curl -s $U/tokenize -H 'content-type: application/json' -d '{"prompt":"Once upon a time"}')
expect_eq "$(echo "$out" | json 'v.tokens.join(",")')" "$("$LUNAR_BIN" tokenize "$M" --text "Once upon a time" | tr -d '[] ')" "/tokenize equals lunar tokenize"
ids=$(echo "$out" | json 'JSON.stringify(v.tokens.slice(1))')
out=$(curl -s $U/detokenize -H 'content-type: application/json' -d "{\"tokens\":$ids}")
expect_eq "$(echo "$out" | json 'v.prompt')" "Once upon a time" "/detokenize round trip"

# load: 2,000 requests, 200 concurrent streams over 4 connections; memory returns to its level
rss() { awk '/VmRSS/ {print $2}' /proc/$PID_main/status; }
echo '{"prompt":"Once","max_tokens":3,"temperature":0}' > "$tmp/h2.json"
h2load -n 200 -c 4 -m 50 -d "$tmp/h2.json" -H 'content-type: application/json' $U/v1/completions > /dev/null 2>&1
sleep 1.1; curl -s -o /dev/null $U/health
before=$(rss)
h2load -n 2000 -c 4 -m 50 -d "$tmp/h2.json" -H 'content-type: application/json' $U/v1/completions > "$tmp/h2load.out" 2>&1
expect_contains "$(cat $tmp/h2load.out)" "2000 succeeded, 0 failed, 0 errored" "h2load: all 2000 succeed"
expect_contains "$(cat $tmp/h2load.out)" "2000 2xx, 0 3xx, 0 4xx, 0 5xx" "h2load: no errors"
sleep 1.1; curl -s -o /dev/null $U/health   # idle again: the server collects its garbage
after=$(rss)
if [ -z "${LUNAR_SANITIZED:-}" ]; then   # ASan's quarantine holds freed memory on purpose
  expect_eq "$(( after < before + 8192 ))" 1 "RSS after load ($after KiB) within 8 MiB of before ($before KiB)"
fi

# SIGTERM: drains and exits 0
curl -s -N $U/v1/completions -H 'content-type: application/json' -d '{"prompt":"x","max_tokens":60,"ignore_eos":true,"stream":true}' > "$tmp/drain.out" &
cpid=$!
sleep 0.2
kill -TERM $PID_main
wait $PID_main; expect_rc 0 "SIGTERM exits 0"
wait $cpid
expect_contains "$(tail -2 $tmp/drain.out)" "data: [DONE]" "in-flight stream finished during shutdown"
expect_contains "$(cat $tmp/main.log)" "shutting down" "shutdown is logged"

# TLS with ALPN h2, and --api-key
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 -subj /CN=localhost > /dev/null 2>&1
start tls --ssl-keyfile "$tmp/key.pem" --ssl-certfile "$tmp/cert.pem" --api-key sekrit
T="https://127.0.0.1:$PORT_tls"
expect_eq "$(curl -sk -o /dev/null -w '%{http_code} %{http_version}' $T/v1/models)" "401 2" "HTTPS over HTTP/2; no key -> 401"
expect_contains "$(curl -sk $T/v1/models)" '"type":"AuthenticationError"' "401 in OpenAI's error shape"
expect_eq "$(curl -sk -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' $T/v1/models)" 401 "wrong key -> 401"
out=$(curl -sk -w '\n%{http_version}' -H 'Authorization: Bearer sekrit' $T/v1/completions -H 'content-type: application/json' -d "${body/\"model\":\"stories\",/}")
expect_eq "$(echo "$out" | tail -1)" "2" "HTTPS negotiates h2 by ALPN"
expect_eq "$(echo "$out" | head -1 | json 'v.choices[0].text')" "$text" "same text over HTTPS"
tls_id=$(echo "$out" | head -1 | json 'v.id')
expect_eq "$([ "$tls_id" != "$first_id" ] && echo differ)" differ "response ids differ between server processes ($tls_id)"
expect_eq "$(curl -sk -o /dev/null -w '%{http_code}' $T/health)" 200 "/health needs no key"
kill -TERM $PID_tls; wait $PID_tls; expect_rc 0 "TLS server exits 0"

# a bad --ssl-certfile is a clear startup error
"$LUNAR_BIN" serve "$M" --port 0 --ssl-keyfile "$tmp/key.pem" --ssl-certfile /nonexistent.pem > "$tmp/bad.log" 2>&1
expect_rc 1 "bad certificate path exits 1"
expect_contains "$(cat $tmp/bad.log)" "/nonexistent.pem" "the error names the file"
# so is a chat template that does not compile, or names nothing
"$LUNAR_BIN" serve "$M" --port 0 --chat-template '{% for m in messages %}{{ m.content }}' > "$tmp/badt.log" 2>&1
expect_rc 1 "an unclosed for in --chat-template exits 1"
expect_contains "$(cat $tmp/badt.log)" "--chat-template: inline:1:" "the error names the template position"
"$LUNAR_BIN" serve "$M" --port 0 --chat-template no-such-template > "$tmp/badt.log" 2>&1
expect_rc 1 "an unknown --chat-template exits 1"
expect_contains "$(cat $tmp/badt.log)" "not a built-in name" "the error says what it tried"
# bench/serve.sh works (a smoke run: two clients, eight requests; its figures are not checked)
out=$(LUNAR="$LUNAR_BIN" bash "$LUNAR_SRC/bench/serve.sh" "$M" --levels 2 --requests-per-level 8 --max-tokens 4 --h2 -- --num-threads 2 2>&1)
expect_rc 0 "bench/serve.sh runs"
expect_eq "$(echo "$out" | awk '$1 == 2 && $2 == 8 { print "row" }')" row "bench/serve.sh prints its row ($out)"
finish
