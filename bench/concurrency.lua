-- bench/concurrency.lua — aggregate generation throughput of the engine at 1..64 concurrent
-- requests (closed loop: a finished request is replaced at once) on the CPU backend.
--
--   build/lunar run bench/concurrency.lua [--model DIR] [--load-format dummy|auto] [--fake]
--       [--levels 1,2,4,...] [--prompt N] [--gen N] [--seconds S] [--threads N]
--
-- Default model: bench/models/llama-100m (config.json only: a Llama of ~110M parameters,
-- hidden 768, 12 layers, MLP 2048, vocab 32000) with dummy weights, f32, through the CPU runner.
-- Continuous batching should make the aggregate grow with concurrency: one step computes
-- every running sequence's token with one pass over the weights, so until the CPU runs out of
-- arithmetic a step costs little more at 32 sequences than at 1. --fake drives the engine with
-- its deterministic fake model instead (engine overhead only, no weights).
local engine = require "lunar.engine"
local sampling = require "lunar.sampling"
local lffi = require "lunar.ffi"
local ffi, C = lffi.ffi, lffi.C
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")

local opts = { levels = "1,2,4,8,16,32,64", prompt = 64, gen = 64, seconds = 10, threads = 0,
  model = "bench/models/llama-100m", load_format = "dummy" }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--fake" then opts.fake = true
  elseif a:match("^%-%-") then
    opts[(a:sub(3):gsub("-", "_"))] = arg[i + 1]
    i = i + 1
  end
  i = i + 1
end
opts.prompt, opts.gen, opts.seconds = tonumber(opts.prompt), tonumber(opts.gen), tonumber(opts.seconds)

local sh = bench.sh

-- The forward: the CPU runner over the model (dummy weights by default), or the fake model.
-- Returns iface, vocab, num_blocks, what, keepalive.
local function make_forward(max_seqs, max_len)
  if opts.fake then
    local blocks = max_seqs * math.ceil(max_len / 16) + 16
    local fwd, model = engine.fake_model(32000, blocks, 16, -1, 1)
    return fwd, 32000, blocks, "fake model (engine only)", model
  end
  local model_mod, runner_mod = require "lunar.model", require "lunar.runner"
  local m, err = model_mod.load(opts.model, { load_format = opts.load_format, dtype = "float32", seed = 1 })
  if not m then error("bench: " .. tostring(err), 0) end
  local r, rerr = runner_mod.new(m, { block_size = 16, max_model_len = max_len, max_num_seqs = max_seqs,
    max_num_batched_tokens = 2048, num_threads = tonumber(opts.threads) })
  if not r then error("bench: " .. tostring(rerr), 0) end
  local params = 0
  for t = 0, tonumber(C.lunar_model_tensor_count(m.handle)) - 1 do
    local tt = C.lunar_model_tensor(m.handle, t)
    local n = 1
    for d = 0, tt.ndim - 1 do n = n * tonumber(tt.shape[d]) end
    params = params + n
  end
  local what = string.format("CPU runner, %s (%s weights, %.0fM params, f32)", opts.model, opts.load_format, params / 1e6)
  return r.iface, m.config.vocab_size, r.num_blocks, what, { m, r }
end

local levels = {}
for l in opts.levels:gmatch("%d+") do levels[#levels + 1] = tonumber(l) end
local maxc = levels[#levels]
local block_size = 16
local fwd, vocab, num_blocks, what, keep = make_forward(maxc, opts.prompt + opts.gen)

print(string.format("# bench/concurrency: %s; prompt %d, gen %d tokens, greedy, closed loop; "
  .. "machine %s, %s cores (%s), load avg %s; commit %s", what, opts.prompt, opts.gen, sh("uname -m"),
  sh("nproc"), sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
  sh("cut -d' ' -f1 /proc/loadavg"), sh("git rev-parse --short HEAD")))
print(string.format("%-11s %8s %10s %8s %14s %12s %9s %8s %11s %6s", "concurrency", "finished",
  "gen tokens", "seconds", "aggregate t/s", "per-req t/s", "tok/step", "cpu-s", "gen t/cpu-s", "load"))

-- CPU seconds of this process: a figure other processes on a busy machine disturb less than
-- wall time does (gen t/cpu-s x cores = the aggregate an idle machine would reach, roughly).
local cpu_seconds = bench.cpunow

local sp = assert(sampling.SamplingParams({ temperature = 0, max_tokens = opts.gen, ignore_eos = true }))
local base = {}
for k = 1, opts.prompt do base[k] = 3 + (k * 7919) % (vocab - 3) end

local results = {}
for _, c in ipairs(levels) do
  -- no prefix caching: every request computes its prompt, as distinct users' requests would
  local e = assert(engine.new({ num_blocks = num_blocks, block_size = block_size,
    max_model_len = opts.prompt + opts.gen, max_num_seqs = maxc, max_num_batched_tokens = 2048,
    enable_prefix_caching = false, stats_interval = 0 }, fwd, nil))
  local seq = 0
  local function submit()
    seq = seq + 1
    local p = {}
    for k = 1, opts.prompt do p[k] = base[k] end
    p[1] = 3 + seq % (vocab - 3) -- distinct prompts
    assert(e:submit(p, sp))
  end
  for _ = 1, c do submit() end
  -- warm up: until the first wave has produced its first tokens
  local t0, gen0, steps0, tokens = nil, 0, 0, 0
  local finished, steps, fin0, cpu0 = 0, 0, 0, 0
  local st0
  while true do
    assert(e:step())
    steps = steps + 1
    for _, ev in ipairs(e:poll()) do
      tokens = tokens + #ev.token_ids
      if ev.finish_reason then
        finished = finished + 1
        submit()
      end
    end
    if not t0 and tokens >= c then
      t0, gen0, steps0, fin0, cpu0 = C.lunar_engine_now(), tokens, steps, finished, cpu_seconds()
      st0 = e:stats()
    end
    if t0 and C.lunar_engine_now() - t0 >= opts.seconds and steps - steps0 >= 3 then break end
  end
  local dt, cpu = C.lunar_engine_now() - t0, cpu_seconds() - cpu0
  local st = e:stats()
  local gen = tokens - gen0
  local decode_steps = steps - steps0
  local fwd_tokens = tonumber(st.forward_tokens_total - st0.forward_tokens_total)
  results[#results + 1] = { c = c, tps = gen / dt }
  print(string.format("%-11d %8d %10d %8.2f %14.1f %12.2f %9.1f %8.2f %11.1f %6s", c, finished - fin0, gen,
    dt, gen / dt, gen / dt / c, fwd_tokens / math.max(decode_steps, 1), cpu, gen / cpu,
    sh("cut -d' ' -f1 /proc/loadavg")))
  io.stdout:flush()
  e:close()
end
local _ = keep
return 0
