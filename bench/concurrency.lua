-- bench/concurrency.lua — aggregate generation throughput of the engine at 1..64 concurrent
-- requests (closed loop: a finished request is replaced at once), on the CPU backend.
--
--   build/lunar run bench/concurrency.lua [--model DIR | --fake] [--levels 1,2,4,...]
--       [--prompt N] [--gen N] [--seconds S] [--threads N]
--
-- Continuous batching should make the aggregate grow with concurrency: one step computes
-- every running sequence's token with one pass over the weights, so until the CPU runs out of
-- arithmetic the step costs little more at 32 sequences than at 1. --fake drives the engine with
-- its deterministic fake model (engine overhead only, no weights).
local engine = require "lunar.engine"
local sampling = require "lunar.sampling"
local lffi = require "lunar.ffi"
local ffi, C = lffi.ffi, lffi.C

local opts = { levels = "1,2,4,8,16,32,64", prompt = 64, gen = 64, seconds = 6, threads = 0 }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--fake" then opts.fake = true
  elseif a:match("^%-%-") then
    opts[a:sub(3):gsub("-", "_")] = arg[i + 1]
    i = i + 1
  end
  i = i + 1
end
opts.prompt, opts.gen, opts.seconds = tonumber(opts.prompt), tonumber(opts.gen), tonumber(opts.seconds)

local function sh(cmd)
  local f = io.popen(cmd .. " 2>/dev/null")
  local s = f and f:read("*l") or ""
  if f then f:close() end
  return s or ""
end

-- The forward: the CPU runner over a model folder (dummy weights when --load-format dummy
-- applies), or the fake model. Returns iface, vocab, eos, what, keepalive.
local function make_forward(num_blocks, block_size)
  if opts.fake or not opts.model then
    local fwd, model = engine.fake_model(32000, num_blocks, block_size, -1, 1)
    return fwd, 32000, -1, "fake model (engine only)", model
  end
  local runner = require "lunar.runner"
  local r, err = runner.open(opts.model, { num_blocks = num_blocks, block_size = block_size,
    threads = tonumber(opts.threads), load_format = opts.load_format or "auto" })
  if not r then error("bench: " .. tostring(err), 0) end
  return r:forward_iface(), r.vocab_size, -1, r.describe, r
end

local levels = {}
for l in opts.levels:gmatch("%d+") do levels[#levels + 1] = tonumber(l) end
local maxc = levels[#levels]
local block_size = 16
local per_seq = math.ceil((opts.prompt + opts.gen) / block_size)
local num_blocks = per_seq * maxc + 16
local fwd, vocab, _, what, keep = make_forward(num_blocks, block_size)

print(string.format("# bench/concurrency: %s; prompt %d, gen %d tokens, greedy; machine %s (%s cores); commit %s",
  what, opts.prompt, opts.gen, sh("uname -m"), sh("nproc"), sh("git rev-parse --short HEAD")))
print(string.format("%-11s %9s %11s %9s %14s %14s %9s", "concurrency", "requests", "gen tokens",
  "seconds", "aggregate t/s", "per-req t/s", "tok/step"))

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
  local finished, steps = 0, 0
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
      t0, gen0, steps0 = C.lunar_engine_now(), tokens, steps
      st0 = e:stats()
    end
    if t0 and C.lunar_engine_now() - t0 >= opts.seconds and finished >= c then break end
  end
  local dt = C.lunar_engine_now() - t0
  local st = e:stats()
  local gen = tokens - gen0
  local decode_steps = steps - steps0
  local fwd_tokens = tonumber(st.forward_tokens_total - st0.forward_tokens_total)
  results[#results + 1] = { c = c, tps = gen / dt }
  print(string.format("%-11d %9d %11d %9.2f %14.1f %14.2f %9.1f", c, finished, gen, dt, gen / dt,
    gen / dt / c, fwd_tokens / math.max(decode_steps, 1)))
  io.stdout:flush()
  e:close()
end
local _ = keep
return 0
