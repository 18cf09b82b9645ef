-- bench/cuda_bench.lua — issue 7's table for the CUDA runner: time per output token at batch
-- 1/8/32/64/128 with 512-token prompts, TTFT of a 512- and a 4,096-token prompt, and start-up
-- to ready, each beside its roofline; bench/transformers_generate.py prints the peer figures.
--
--   build/lunar run bench/cuda_bench.lua [--models DIR[:dummy]] [--dtype bfloat16]
--       [--batches 1,8,32,64,128] [--prompt 512] [--out 64] [--ttft 512,4096] [--seconds 2] [--sampling gpu|host]
--
-- It drives the runner on the "cuda" backend directly (no
-- engine or scheduler). A decode step is lunar_runner_forward_sample with greedy rows, the
-- engine's path on a GPU: logits stay on the device, the tokens come back (--sampling host:
-- lunar_runner_forward, every logits row copied to the host, the engine's fallback path); a
-- step returns once its result is on the host, so wall time per call is the step's latency. A decode step of batch B runs at
-- context prompt..prompt+out-1 (the KV of the prompt is not computed first: its contents do
-- not change the step's time). Roofline of a decode step = (weight bytes + KV bytes read by
-- attention) / device bandwidth measured in the same run (1 GiB device-to-device cudaMemcpy,
-- read + write bytes, median of 10). TTFT = one prefill forward of the prompt (logits of the
-- last token on the host); its roofline is compute, 2 x params x tokens / 989 TFLOP/s (H100
-- SXM dense bf16, NVIDIA's H100 datasheet). Start-up to ready = process start (BENCH_T0 set to
-- `date +%s.%N` by the caller; else this script's first line) to the end of lunar_runner_create:
-- dummy weights made on the host and uploaded, KV allocated (a real checkpoint's read differs).
local lffi = require "lunar.ffi"
local model = require "lunar.model"
local ffi, C = lffi.ffi, lffi.C
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local now, sh, median = bench.now, bench.sh, bench.median

local T_START -- start-up is timed from the first Lua line this script runs (see header)
local opts = bench.args(arg, { batches = "1,8,32,64,128", prompt = 512, out = 64, ttft = "512,4096",
  seconds = 2, dtype = "bfloat16", sampling = "gpu" }, { "prompt", "out", "seconds" })
local src = os.getenv("LUNAR_SRC") or "."
local models = opts.models or (src .. "/bench/configs/Llama-3-8B:dummy")

T_START = now()
-- BENCH_T0 (`date +%s.%N` just before the process starts) moves the start to process start.
local realtime = bench.realtime
if os.getenv("BENCH_T0") then T_START = T_START - (realtime() - tonumber(os.getenv("BENCH_T0"))) end
local function list(s)
  local t = {}
  for n in s:gmatch("%d+") do t[#t + 1] = tonumber(n) end
  return t
end
local batches, ttfts = list(opts.batches), list(opts.ttft)
local device_gbs = bench.device_gbs

-- BENCH_BACKEND=cpu runs the same cases on the CPU backend (a check of the script, not a figure).
local backend = os.getenv("BENCH_BACKEND") or "cuda"
local di = ffi.new("lunar_device_info_t")
assert(backend ~= "cuda" or (C.lunar_device_count() > 0 and C.lunar_device_get_info(0, di) == 0), "no CUDA device")
local bw = backend == "cuda" and device_gbs() or nil
print(string.format("# bench/cuda_bench: CUDA runner (no engine), decode sampling on the %s; %s; device copy %s GB/s; "
  .. "commit %s", opts.sampling == "gpu" and backend == "cuda" and "GPU" or "host",
  backend == "cuda" and ffi.string(di.name) or backend, bw and string.format("%.0f", bw) or "?",
  os.getenv("LUNAR_COMMIT") or sh("git -C " .. src .. " rev-parse --short HEAD")))
print(string.format("%-14s %5s %-12s %7s %10s %10s %12s %12s %8s", "model", "dtype", "case", "tokens", "ms/step",
  "tokens/s", "bytes GB", "roofline ms", "of roof"))

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
  local m = assert(model.load(dir, { load_format = fmt or "auto", dtype = opts.dtype,
    dummy_on_device = backend == "cuda" }))
  local load_s = now() - t0
  local c = m.config
  local name = dir:match("([^/]+)/*$")
  local wbytes = 0 -- bytes a decode step reads: every matrix (the embedding is a lookup)
  for _, t in ipairs(m:tensors()) do
    if not t.name:match("embed_tokens") or c.tie_word_embeddings then wbytes = wbytes + t.nbytes end
  end
  local bs, maxb, maxb_t = 16, 1, 1
  for _, B in ipairs(batches) do maxb = math.max(maxb, B) end
  for _, P in ipairs(ttfts) do maxb_t = math.max(maxb_t, P) end
  local per_seq = math.ceil((opts.prompt + opts.out) / bs)
  local nblocks = math.max(per_seq * maxb, math.ceil(maxb_t / bs))
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.backend = backend
  ro.num_kv_blocks = nblocks
  ro.block_size = bs
  ro.max_num_batched_tokens = math.max(maxb_t, maxb)
  ro.max_num_seqs = maxb
  local out = ffi.new("lunar_runner_t *[1]")
  t0 = now()
  assert(lffi.check(C.lunar_runner_create(m.handle, ro, out)))
  local ready = now()
  print(string.format("# %s: load %.1f s (%s), runner create + upload + KV (%d blocks) %.1f s", name, load_s,
    fmt or "files", nblocks, ready - t0))
  local r = ffi.gc(out[0], C.lunar_runner_free)
  local V = c.vocab_size
  local logits = ffi.new("float[?]", V * maxb)
  local rows, toks = ffi.new("lunar_sample_row_t[?]", maxb), ffi.new("int32_t[?]", maxb)
  for s = 0, maxb - 1 do rows[s].temperature, rows[s].top_p, rows[s].logprobs, rows[s].seq_index = 0, 1, -1, s end
  local sb = ffi.new("lunar_sample_batch_t")
  sb.rows, sb.tokens = rows, toks
  local on_gpu = opts.sampling == "gpu" and backend == "cuda"
  local T = math.max(maxb_t, maxb)
  local tok, pos, slot = ffi.new("int32_t[?]", T), ffi.new("int32_t[?]", T), ffi.new("int64_t[?]", T)
  local qs, lens = ffi.new("int32_t[?]", maxb + 1), ffi.new("int32_t[?]", maxb)
  local bt, li = ffi.new("int32_t[?]", nblocks), ffi.new("int32_t[?]", maxb)
  for k = 0, nblocks - 1 do bt[k] = k end
  local b = ffi.new("lunar_batch_t")
  b.token_ids, b.positions, b.slot_mapping, b.query_start = tok, pos, slot, qs
  b.seq_lens, b.block_tables, b.max_blocks_per_seq, b.logits_indices = lens, bt, per_seq, li
  local arrays = { tok = tok, pos = pos, slot = slot, qs = qs, lens = lens, li = li }
  -- KV bytes per token: K and V of every layer, in the cache's dtype (the model's).
  local kv_tok = 2 * c.num_layers * c.num_kv_heads * c.head_dim
    * (opts.dtype == "float32" and 4 or 2)
  local nparams = wbytes / (opts.dtype == "float32" and 4 or 2)

  local function row(case, tokens, secs, bytes, roof)
    print(string.format("%-14s %5s %-12s %7d %10.3f %10.1f %12s %12s %8s", name, m.dtype, case, tokens,
      secs * 1e3, tokens / secs, bytes and string.format("%.2f", bytes / 1e9) or "-",
      roof and string.format("%.3f", roof * 1e3) or "-",
      roof and string.format("%.0f%%", 100 * roof / secs) or "-"))
    io.stdout:flush()
  end
  print(string.format("%-14s %5s %-12s %7d %10.1f %10s %12s %12s %8s", name, m.dtype, "startup", 0,
    (ready - T_START) * 1e3, "-", "-", "-", "-"))

  for _, B in ipairs(batches) do
    local step = 0
    local function decode()
      bench.decode_batch(b, arrays, B, opts.prompt + step % opts.out, step, per_seq, bs, V)
      if on_gpu then
        sb.num_rows = B
        assert(lffi.check(C.lunar_runner_forward_sample(r, b, sb)))
      else
        assert(lffi.check(C.lunar_runner_forward(r, b, logits)))
      end
      step = step + 1
    end
    -- mean context over the timed steps ~ prompt + out/2 tokens of K and V per sequence
    local bytes = wbytes + B * (opts.prompt + opts.out / 2) * kv_tok
    row("decode b" .. B, B, timeit(decode), bytes, bw and bytes / (bw * 1e9))
  end
  for _, P in ipairs(ttfts) do
    for k = 0, P - 1 do tok[k], pos[k], slot[k] = 3 + (k * 7919) % (V - 3), k, k end
    b.num_tokens, b.num_seqs, b.num_logits = P, 1, 1
    b.max_blocks_per_seq = math.ceil(P / bs)
    qs[0], qs[1], lens[0], li[0] = 0, P, P, P - 1
    row("ttft p" .. P, P, timeit(function() assert(lffi.check(C.lunar_runner_forward(r, b, logits))) end), nil,
      backend == "cuda" and 2 * nparams * P / 989e12 or nil)
  end
  C.lunar_runner_free(ffi.gc(r, nil))
  m:free()
end
