-- bench/gpu_sampling.lua — the engine's decode step on the CUDA runner with sampling on the GPU
-- (forward_sample: logits stay on the device, token ids come back) beside sampling on the host
-- (the logits of every row copied out, the CPU sampler), same runner, same requests.
--
--   build/lunar run bench/gpu_sampling.lua [--models DIR[:dummy]] [--dtype bfloat16]
--       [--batches 1,8,32,64] [--prompt 512] [--out 48] [--modes greedy,seeded,penalties]
--       [--host 1|0]
--
-- The whole engine step is timed (lunar_engine_step: schedule, forward, sampling, outputs), so
-- the figure is what a request sees per token. B requests of --prompt random ids run together
-- with ignore_eos for --out tokens; ms/step is the median over the pure decode steps (those
-- computing exactly B tokens), the first two left out (CUDA graph capture). Modes: greedy;
-- seeded (temperature 0.8, top_k 50, top_p 0.95); penalties (seeded plus repetition 1.1,
-- frequency 0.2, presence 0.2: the prompt and output ids travel as penalty entries). The
-- roofline of a decode step is its weight bytes + KV bytes read over the device bandwidth
-- measured in the same run (bench/common.lua), as in bench/cuda_bench.lua. "same" says whether
-- both paths drew the same tokens (they should: kernels/sampling.cu is the CPU sampler's
-- algorithm). Default model: bench/configs/Llama-3-8B with dummy weights (vocab 128256).
-- --modes picks modes; --host 0 leaves out the host-sampling runs (e.g. to profile one mode's
-- GPU path alone with LUNAR_CUDA_PROFILE=1).
local lffi = require "lunar.ffi"
local model = require "lunar.model"
local engine = require "lunar.engine"
local sampling = require "lunar.sampling"
local ffi, C = lffi.ffi, lffi.C
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local now, sh, median = bench.now, bench.sh, bench.median

local opts = bench.args(arg, { batches = "1,8,32,64", prompt = 512, out = 48, dtype = "bfloat16",
  modes = "greedy,seeded,penalties", host = 1 }, { "prompt", "out", "host" })
local src = os.getenv("LUNAR_SRC") or "."
local models = opts.models or (src .. "/bench/configs/Llama-3-8B:dummy")
local batches = {}
for n in opts.batches:gmatch("%d+") do batches[#batches + 1] = tonumber(n) end

-- BENCH_BACKEND=cpu runs the script on the CPU backend, both columns host sampling (a check of
-- the script, not a figure).
local backend = os.getenv("BENCH_BACKEND") or "cuda"
local di = ffi.new("lunar_device_info_t")
assert(backend ~= "cuda" or (C.lunar_device_count() > 0 and C.lunar_device_get_info(0, di) == 0), "no CUDA device")
local bw = backend == "cuda" and bench.device_gbs() or nil
print(string.format("# bench/gpu_sampling: engine decode step, GPU vs host sampling; %s; device copy %s GB/s; commit %s",
  backend == "cuda" and ffi.string(di.name) or backend, bw and string.format("%.0f", bw) or "?",
  os.getenv("LUNAR_COMMIT") or sh("git -C " .. src .. " rev-parse --short HEAD")))
print(string.format("%-14s %5s %-10s %11s %11s %8s %12s %8s %8s %5s", "model", "batch", "mode", "host ms",
  "gpu ms", "speedup", "roofline ms", "host/rf", "gpu/rf", "same"))

local all_modes = {
  { "greedy", { temperature = 0 } },
  { "seeded", { temperature = 0.8, top_k = 50, top_p = 0.95 } },
  { "penalties", { temperature = 0.8, top_k = 50, top_p = 0.95, repetition_penalty = 1.1,
                   frequency_penalty = 0.2, presence_penalty = 0.2 } },
}
local modes = {}
for name in opts.modes:gmatch("[^,]+") do
  local found
  for _, m in ipairs(all_modes) do if m[1] == name then found = m end end
  modes[#modes + 1] = assert(found, "bench/gpu_sampling: unknown mode '" .. name .. "' (greedy, seeded, penalties)")
end

-- One run of B requests; returns the median decode step time and every sequence's tokens.
local function run(fwd, cfg, B, fields, V)
  local e = assert(engine.new(cfg, fwd))
  local prompts = {}
  for s = 1, B do
    local p = {}
    for k = 1, opts.prompt do p[k] = 3 + (s * 7919 + k * 31) % (V - 3) end
    prompts[s] = p
  end
  local ids = {}
  for s = 1, B do
    local f = { max_tokens = opts.out, ignore_eos = true, seed = 1000 + s }
    for k, v in pairs(fields) do f[k] = v end
    ids[assert(e:submit(prompts[s], assert(sampling.SamplingParams(f))))] = s
  end
  local times, tokens, decodes = {}, {}, 0
  while e:unfinished() > 0 do
    local t0 = now()
    local n = assert(e:step())
    local dt = now() - t0
    if n == B then
      decodes = decodes + 1
      if decodes > 2 then times[#times + 1] = dt end
    end
    for _, ev in ipairs(e:poll()) do
      local t = tokens[ids[ev.request_id]] or {}
      tokens[ids[ev.request_id]] = t
      for _, id in ipairs(ev.token_ids) do t[#t + 1] = id end
    end
  end
  e:close()
  return #times > 0 and median(times) or 0 / 0, tokens
end

local function same(a, b)
  for s, t in pairs(a) do
    if #t ~= #(b[s] or {}) then return false end
    for i = 1, #t do if t[i] ~= b[s][i] then return false end end
  end
  return true
end

for spec in models:gmatch("[^,]+") do
  local dir, fmt = spec:match("^(.-):(%a+)$")
  dir = dir or spec
  local m = assert(model.load(dir, { load_format = fmt or "auto", dtype = opts.dtype,
    dummy_on_device = backend == "cuda" })) -- dummy weights made on the GPU, as bench/cuda_bench.lua
  local c = m.config
  local name = dir:match("([^/]+)/*$")
  local wbytes = 0 -- a decode step reads every matrix once (the embedding is a lookup)
  for _, t in ipairs(m:tensors()) do
    if not t.name:match("embed_tokens") or c.tie_word_embeddings then wbytes = wbytes + t.nbytes end
  end
  local kv_tok = 2 * c.num_layers * c.num_kv_heads * c.head_dim * (opts.dtype == "float32" and 4 or 2)
  local maxb = 1
  for _, B in ipairs(batches) do maxb = math.max(maxb, B) end
  local bs, per_seq = 16, math.ceil((opts.prompt + opts.out) / 16)
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.backend = backend
  ro.num_kv_blocks = per_seq * maxb
  ro.block_size = bs
  ro.max_num_batched_tokens = 8192
  ro.max_num_seqs = maxb
  local out = ffi.new("lunar_runner_t *[1]")
  assert(lffi.check(C.lunar_runner_create(m.handle, ro, out)))
  local r = ffi.gc(out[0], C.lunar_runner_free)
  local gpu = ffi.new("lunar_forward_iface_t")
  C.lunar_runner_forward_iface(r, gpu)
  assert(gpu.forward_sample ~= nil or backend ~= "cuda", "the runner offers no forward_sample (LUNAR_GPU_SAMPLING=0 set?)")
  local host = ffi.new("lunar_forward_iface_t", gpu)
  host.forward_sample = nil
  local cfg = { num_blocks = per_seq * maxb, block_size = bs, max_model_len = opts.prompt + opts.out,
                max_num_seqs = maxb, max_num_batched_tokens = 8192, stats_interval = 0 }
  for _, B in ipairs(batches) do
    local bytes = wbytes + B * (opts.prompt + opts.out / 2) * kv_tok
    local roof = bw and bytes / (bw * 1e9)
    for _, mode in ipairs(modes) do
      local th, toks_h = 0 / 0, nil
      if opts.host ~= 0 then th, toks_h = run(host, cfg, B, mode[2], c.vocab_size) end
      local tg, toks_g = run(gpu, cfg, B, mode[2], c.vocab_size)
      local has_h = toks_h ~= nil
      print(string.format("%-14s %5d %-10s %11s %11.3f %8s %12s %8s %8s %5s", name, B, mode[1],
        has_h and string.format("%.3f", th * 1e3) or "-", tg * 1e3, has_h and string.format("%.2fx", th / tg) or "-",
        roof and string.format("%.3f", roof * 1e3) or "-",
        roof and has_h and string.format("%.2fx", th / roof) or "-", roof and string.format("%.2fx", tg / roof) or "-",
        toks_h == nil and "-" or same(toks_h, toks_g) and "yes" or "NO"))
      io.stdout:flush()
    end
  end
  C.lunar_runner_free(ffi.gc(r, nil))
  m:free()
end
