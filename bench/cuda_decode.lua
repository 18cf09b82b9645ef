-- bench/cuda_decode.lua — the CUDA runner's forward alone: decode time per output token beside
-- the memory-bandwidth roofline, and a prefill rate.
--
--   build/lunar run bench/cuda_decode.lua [--models DIR[:dummy],...] [--dtype bfloat16]
--       [--ctx 128] [--batch 16] [--prompt 512] [--seconds 3]
--
-- Drives lunar_runner_forward on the "cuda" backend directly (no engine, no sampler): a step
-- returns once its logits are on the host, so wall time per call is the step's latency.
-- Cases: decode b1 and b<batch> (one token per sequence per step at context ctx..ctx+63) and
-- one prefill of --prompt tokens. The roofline of a decode step is every weight read once:
-- weight bytes / measured device bandwidth (a 1 GiB device-to-device cudaMemcpy, read + write
-- bytes over the median of 10). Default model: bench/configs/Llama-3-8B with dummy weights.
local lffi = require "lunar.ffi"
local model = require "lunar.model"
local ffi, C = lffi.ffi, lffi.C
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local now, sh, median = bench.now, bench.sh, bench.median

local opts = bench.args(arg, { ctx = 128, batch = 16, prompt = 512, seconds = 3, dtype = "bfloat16" },
  { "ctx", "batch", "prompt", "seconds" })
local src = os.getenv("LUNAR_SRC") or "."
local models = opts.models or (src .. "/bench/configs/Llama-3-8B:dummy")

local device_gbs = bench.device_gbs

local di = ffi.new("lunar_device_info_t")
assert(C.lunar_device_count() > 0 and C.lunar_device_get_info(0, di) == 0, "no CUDA device")
local bw = device_gbs()
print(string.format("# bench/cuda_decode: CUDA runner forward; %s; device copy %s GB/s; commit %s",
  ffi.string(di.name), bw and string.format("%.0f", bw) or "?", os.getenv("LUNAR_COMMIT") or sh("git -C " .. src .. " rev-parse --short HEAD")))
print(string.format("%-14s %5s %-10s %7s %10s %10s %12s %12s %8s", "model", "dtype", "case", "tokens", "ms/step",
  "tokens/s", "weight GB", "roofline ms", "of roof"))

local function timeit(fn)
  fn(); fn() -- warm: cuBLAS heuristics, first-touch of the cache
  local times, t_end = {}, now() + opts.seconds
  repeat
    local t0 = now()
    fn()
    times[#times + 1] = now() - t0
  until now() > t_end and #times >= 5
  return median(times), #times
end

for spec in models:gmatch("[^,]+") do
  local dir, fmt = spec:match("^(.-):(%a+)$")
  dir = dir or spec
  local t0 = now()
  local m = assert(model.load(dir, { load_format = fmt or "auto", dtype = opts.dtype }))
  local load_s = now() - t0
  local c = m.config
  local name = dir:match("([^/]+)/*$")
  local wbytes = 0 -- bytes a decode step reads: every matrix (the embedding is a lookup)
  for _, t in ipairs(m:tensors()) do
    if not t.name:match("embed_tokens") or c.tie_word_embeddings then wbytes = wbytes + t.nbytes end
  end
  local bs, maxb = 16, math.max(opts.batch, 1)
  local per_seq = math.ceil(math.max(opts.prompt, opts.ctx + 64) / bs)
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.backend = "cuda"
  ro.num_kv_blocks = per_seq * maxb
  ro.block_size = bs
  ro.max_num_batched_tokens = math.max(opts.prompt, maxb)
  ro.max_num_seqs = maxb
  local out = ffi.new("lunar_runner_t *[1]")
  t0 = now()
  assert(lffi.check(C.lunar_runner_create(m.handle, ro, out)))
  print(string.format("# %s: load %.1f s (%s), runner create + upload %.1f s", name, load_s, fmt or "files",
    now() - t0))
  local r = ffi.gc(out[0], C.lunar_runner_free)
  local V = c.vocab_size
  local logits = ffi.new("float[?]", V * maxb)
  local T = math.max(opts.prompt, maxb)
  local tok, pos, slot = ffi.new("int32_t[?]", T), ffi.new("int32_t[?]", T), ffi.new("int64_t[?]", T)
  local qs, lens = ffi.new("int32_t[?]", maxb + 1), ffi.new("int32_t[?]", maxb)
  local bt, li = ffi.new("int32_t[?]", maxb * per_seq), ffi.new("int32_t[?]", maxb)
  for k = 0, maxb * per_seq - 1 do bt[k] = k end
  local b = ffi.new("lunar_batch_t")
  b.token_ids, b.positions, b.slot_mapping, b.query_start = tok, pos, slot, qs
  b.seq_lens, b.block_tables, b.max_blocks_per_seq, b.logits_indices = lens, bt, per_seq, li

  local function row(case, tokens, secs)
    local roof = bw and case:match("^decode") and wbytes / (bw * 1e9) or nil
    print(string.format("%-14s %5s %-10s %7d %10.3f %10.1f %12.2f %12s %8s", name, m.dtype, case, tokens,
      secs * 1e3, tokens / secs, wbytes / 1e9, roof and string.format("%.3f", roof * 1e3) or "-",
      roof and string.format("%.0f%%", 100 * roof / secs) or "-"))
    io.stdout:flush()
  end

  for _, B in ipairs(maxb > 1 and { 1, maxb } or { 1 }) do
    local step = 0
    local function decode()
      local p = opts.ctx + step % 64
      for s = 0, B - 1 do
        tok[s], pos[s], slot[s] = 3 + (s * 31 + step) % (V - 3), p, s * per_seq * bs + p
        qs[s], lens[s], li[s] = s, p + 1, s
      end
      qs[B] = B
      b.num_tokens, b.num_seqs, b.num_logits = B, B, B
      assert(lffi.check(C.lunar_runner_forward(r, b, logits)))
      step = step + 1
    end
    row("decode b" .. B, B, timeit(decode))
  end
  local P = opts.prompt
  for k = 0, P - 1 do tok[k], pos[k], slot[k] = 3 + (k * 7919) % (V - 3), k, k end
  b.num_tokens, b.num_seqs, b.num_logits = P, 1, 1
  qs[0], qs[1], lens[0], li[0] = 0, P, P, P - 1
  row("prefill", P, timeit(function() assert(lffi.check(C.lunar_runner_forward(r, b, logits))) end))
  C.lunar_runner_free(ffi.gc(r, nil))
  m:free()
end
