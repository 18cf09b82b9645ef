-- bench/cpu_forward.lua — the CPU runner's forward alone: prefill and decode tokens/s.
--
--   build/lunar run bench/cpu_forward.lua [--threads N] [--prompt 512] [--seconds S]
--       [--models DIR[:dummy],...] [--batch 16]
--
-- Drives lunar_runner_forward directly (no engine, no sampler) so the figures are the
-- model's arithmetic and memory traffic only. Cases per model:
--   prefill   one sequence of --prompt tokens in one step, logits of the last row;
--   decode bN N sequences (1 and --batch) each adding one token per step at context 128.. (the
--             cache is not prefilled: attention cost depends on the context length, not on its
--             values).
-- Beside ours: GFLOP/s (2 x matmul params per token) and, for decode, the weight bytes read per
-- second against the machine's memcpy bandwidth (the decode roofline: every step reads every
-- weight once). Defaults: the two shared models and bench/configs/llama-100m with dummy weights.
-- Each row has two rates of the same (fastest) call: tokens per wall second, and tokens per CPU
-- second of the process (all threads' CPU time). On a machine shared with other jobs the wall
-- rate depends on the share of cores we got; the CPU rate measures the code (with --threads 1 it
-- is the single-core rate; with N threads, N x it bounds the wall rate on N idle cores). The
-- header gives the load average at the start.
local lffi = require "lunar.ffi"
local model = require "lunar.model"
local ffi, C = lffi.ffi, lffi.C
local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local now, sh = bench.now, bench.sh

local opts = bench.args(arg, { threads = 0, prompt = 512, seconds = 2, decode_ctx = 128, batch = 16 },
  { "threads", "prompt", "seconds", "decode_ctx", "batch" })

local src = os.getenv("LUNAR_SRC") or "."
local shared = os.getenv("LUNAR_SHARED") or (src .. "/../shared")
local models = opts.models or table.concat({ shared .. "/models/stories260K", shared .. "/models/TinyStories-656K",
  src .. "/bench/configs/llama-100m:dummy" }, ",")

local cpunow = bench.cpunow

-- The roofline's denominator: memcpy bandwidth (read + write bytes per second) over 256 MiB.
local function memcpy_gbs()
  local n = 256 * 1024 * 1024
  local a, b = ffi.new("uint8_t[?]", n), ffi.new("uint8_t[?]", n)
  ffi.fill(a, n, 1)
  ffi.copy(b, a, n)
  local best = math.huge
  for _ = 1, 5 do
    local t0 = now()
    ffi.copy(b, a, n)
    best = math.min(best, now() - t0)
  end
  return 2 * n / best / 1e9
end

local nthreads = opts.threads > 0 and opts.threads or tonumber(sh("nproc")) or 1
local cpu = sh("grep -m1 'model name' /proc/cpuinfo"):gsub("^model name%s*:%s*", "")
print(string.format("# bench/cpu_forward: CPU runner forward (f32 math), %d threads; machine %s, %s cores, "
  .. "memcpy %.1f GB/s; load average %s; commit %s", nthreads, cpu, sh("nproc"), memcpy_gbs(),
  sh("cut -d' ' -f1-3 /proc/loadavg"), sh("git -C " .. src .. " rev-parse --short HEAD")))
print(string.format("%-18s %8s %5s %-10s %7s %8s %10s %10s %9s %11s", "model", "params", "dtype", "case", "tokens",
  "seconds", "tokens/s", "tok/cpu-s", "GFLOP/s", "weight GB/s"))

-- Times fn for about opts.seconds; returns the best call's wall seconds (the call least
-- disturbed by other processes) and the CPU seconds of that call.
local function timeit(fn)
  fn() -- warm: page in the weights, fault in the scratch
  local best, best_cpu, t_end, n = math.huge, 0, now() + opts.seconds, 0
  repeat
    local t0, c0 = now(), cpunow()
    fn()
    local t, c = now() - t0, cpunow() - c0
    if t < best then best, best_cpu = t, c end
    n = n + 1
  until now() > t_end and n >= 3
  return best, best_cpu
end

for spec in models:gmatch("[^,]+") do
  local dir, fmt = spec:match("^(.-):(%a+)$")
  dir = dir or spec
  local m = assert(model.load(dir, { load_format = fmt or "auto" }))
  local c = m.config
  local name = dir:match("([^/]+)/*$")
  -- matmul parameters (the embedding is a lookup, the head a matmul even when tied)
  local params, wbytes = 0, 0
  for _, t in ipairs(m:tensors()) do
    local n = t.nbytes / (t.dtype == "float32" and 4 or 2)
    if not t.name:match("embed_tokens") or c.tie_word_embeddings then
      params, wbytes = params + n, wbytes + t.nbytes
    end
  end
  local bs, maxb = 16, math.max(opts.batch, 1)
  local per_seq = math.ceil(math.max(opts.prompt, opts.decode_ctx + 64) / bs)
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.num_kv_blocks = per_seq * maxb
  ro.block_size = bs
  ro.max_num_batched_tokens = math.max(opts.prompt, maxb)
  ro.max_num_seqs = maxb
  ro.num_threads = nthreads
  local out = ffi.new("lunar_runner_t *[1]")
  assert(lffi.check(C.lunar_runner_create(m.handle, ro, out)))
  local r = ffi.gc(out[0], C.lunar_runner_free)
  local V = c.vocab_size
  local logits = ffi.new("float[?]", V * maxb)
  local T = opts.prompt
  local tok, pos, slot = ffi.new("int32_t[?]", T), ffi.new("int32_t[?]", T), ffi.new("int64_t[?]", T)
  local qs, lens = ffi.new("int32_t[?]", maxb + 1), ffi.new("int32_t[?]", maxb)
  local bt, li = ffi.new("int32_t[?]", maxb * per_seq), ffi.new("int32_t[?]", maxb)
  for k = 0, maxb * per_seq - 1 do bt[k] = k end -- sequence s owns blocks [s*per_seq, (s+1)*per_seq)
  local b = ffi.new("lunar_batch_t")
  b.token_ids, b.positions, b.slot_mapping, b.query_start = tok, pos, slot, qs
  b.seq_lens, b.block_tables, b.max_blocks_per_seq, b.logits_indices = lens, bt, per_seq, li
  local arrays = { tok = tok, pos = pos, slot = slot, qs = qs, lens = lens, li = li }

  local function row(case, tokens, secs, cpu_secs)
    local tps = tokens / secs
    local gbs = case:match("^decode") and string.format("%11.2f", wbytes * (tokens / secs) /
      tonumber(case:match("b(%d+)")) / 1e9) or string.format("%11s", "-")
    print(string.format("%-18s %7.1fM %5s %-10s %7d %8.4f %10.1f %10.1f %9.2f %s", name, params / 1e6, m.dtype or "?",
      case, tokens, secs, tps, tokens / cpu_secs, 2 * params * tps / 1e9, gbs))
    io.stdout:flush()
  end

  -- prefill: one sequence, T tokens
  for k = 0, T - 1 do
    tok[k], pos[k], slot[k] = 3 + (k * 7919) % (V - 3), k, k
  end
  b.num_tokens, b.num_seqs, b.num_logits = T, 1, 1
  qs[0], qs[1], lens[0], li[0] = 0, T, T, T - 1
  row("prefill", T, timeit(function() assert(lffi.check(C.lunar_runner_forward(r, b, logits))) end))

  -- decode: B sequences, one token each, context decode_ctx .. decode_ctx + 63
  for _, B in ipairs(maxb > 1 and { 1, maxb } or { 1 }) do
    local step = 0
    local function decode()
      bench.decode_batch(b, arrays, B, opts.decode_ctx + step % 64, step, per_seq, bs, V)
      assert(lffi.check(C.lunar_runner_forward(r, b, logits)))
      step = step + 1
    end
    row("decode b" .. B, B, timeit(decode))
  end
  C.lunar_runner_free(ffi.gc(r, nil))
  m:free()
end
