-- bench/common.lua — what the Lua benchmarks share: their --flag VALUE parser, clocks, a shell
-- one-liner, the median, and the GPU's copy bandwidth (the roofline's denominator). Loaded by
-- path (bench/ is not a module folder):
--   local bench = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local ffi = require("lunar.ffi").ffi
local M = {}

pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_nsec; } lunar_timespec_t;
  int clock_gettime(int clk, lunar_timespec_t *ts);
]])
local ts = ffi.new("lunar_timespec_t")
local function clock(id)
  ffi.C.clock_gettime(id, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
function M.now() return clock(1) end      -- CLOCK_MONOTONIC
function M.realtime() return clock(0) end -- CLOCK_REALTIME
function M.cpunow() return clock(2) end   -- CLOCK_PROCESS_CPUTIME_ID

-- `--some-flag VALUE` pairs of `args` into opts.some_flag (defaults kept for the rest); the
-- keys named in `numbers` are converted with tonumber. Returns opts.
function M.args(args, opts, numbers)
  local i = 1
  while i <= #args do
    local a = args[i]
    if a:match("^%-%-") then
      opts[(a:sub(3):gsub("-", "_"))] = args[i + 1]
      i = i + 1
    end
    i = i + 1
  end
  for _, k in ipairs(numbers or {}) do opts[k] = tonumber(opts[k]) end
  return opts
end

-- The first line a shell command prints ("" when it fails).
M.sh = require("lunar.util").capture

function M.median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

-- Device bandwidth in GB/s: read + write bytes of a 1 GiB device-to-device copy, median of 10;
-- nil without CUDA.
function M.device_gbs()
  pcall(ffi.cdef, [[
    int cudaMalloc(void **p, size_t n);
    int cudaFree(void *p);
    int cudaMemcpy(void *dst, const void *src, size_t n, int kind);
    int cudaDeviceSynchronize(void);
  ]])
  local ok, rt = pcall(ffi.load, "cudart")
  if not ok then return nil end
  local n = 1024 ^ 3
  local a, b = ffi.new("void *[1]"), ffi.new("void *[1]")
  if rt.cudaMalloc(a, n) ~= 0 or rt.cudaMalloc(b, n) ~= 0 then return nil end
  rt.cudaMemcpy(b[0], a[0], n, 3)
  rt.cudaDeviceSynchronize()
  local times = {}
  for _ = 1, 10 do
    local t0 = M.now()
    rt.cudaMemcpy(b[0], a[0], n, 3)
    rt.cudaDeviceSynchronize()
    times[#times + 1] = M.now() - t0
  end
  rt.cudaFree(a[0]); rt.cudaFree(b[0])
  return 2 * n / M.median(times) / 1e9
end

-- One decode step of B sequences in lunar_batch_t b, whose arrays (b's fields are const) are
-- a = {tok, pos, slot, qs, lens, li}, sized for B: sequence s owns blocks [s*per_seq,
-- (s+1)*per_seq) of block_size bs and decodes one token at position p, its logits row s; token
-- ids vary with s and `step` (never 0..2).
function M.decode_batch(b, a, B, p, step, per_seq, bs, V)
  local tok, pos, slot, qs, lens, li = a.tok, a.pos, a.slot, a.qs, a.lens, a.li
  for s = 0, B - 1 do
    tok[s], pos[s], slot[s] = 3 + (s * 31 + step) % (V - 3), p, s * per_seq * bs + p
    qs[s], lens[s], li[s] = s, p + 1, s
  end
  qs[B] = B
  b.num_tokens, b.num_seqs, b.num_logits = B, B, B
end

return M
