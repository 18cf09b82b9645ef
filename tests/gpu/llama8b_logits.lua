-- tests/gpu/llama8b_logits.lua — the CUDA backend's logits for a Llama-3-8B-shaped model against
-- transformers given the same safetensors (tests/gpu/llama8b_ref.py wrote the model and the
-- references: transformers' logits in bf16 and, for the same weights upcast, in f32).
-- Two runs of lunar on the same files:
--   --dtype float32: the same function as transformers' f32 up to reduction order, so
--     max |lunar - transformers| <= 1e-3 of max |logit|.
--   bfloat16: no bf16 implementation is exact; transformers' own bf16 logits set the scale.
--     lunar's max and mean |logit - f32 logit| may be at most 2x transformers' bf16 ones (the two
--     round at different points: transformers rounds cos/sin and the logits to bf16, lunar keeps
--     them f32 but rounds elsewhere), and its argmax must equal the f32 model's on at least as
--     many positions as transformers' bf16 does, less 10% of them (random weights give
--     near-ties).
--   build-gpu/lunar run tests/gpu/llama8b_logits.lua DIR     (exit 0 = pass)
local lffi = require "lunar.ffi"
local model = require "lunar.model"
local ffi, C = lffi.ffi, lffi.C
local dir = assert(arg[1], "usage: llama8b_logits.lua DIR")

local function read_f32(path, n)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  assert(#s == 4 * n, path .. ": expected " .. 4 * n .. " bytes, got " .. #s)
  local buf = ffi.new("float[?]", n)
  ffi.copy(buf, s, 4 * n)
  return buf
end

local ids = {}
for w in assert(io.open(dir .. "/ids.txt")):read("*a"):gmatch("%d+") do ids[#ids + 1] = tonumber(w) end
local T = #ids
-- lunar's logits for the prompt with the model loaded in `dtype` ([T][V] f32)
local function lunar_logits(dtype)
  local m = assert(model.load(dir, { dtype = dtype }))
  local V = m.config.vocab_size
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.backend = "cuda"
  ro.num_kv_blocks = math.ceil(T / 16)
  ro.block_size = 16
  ro.max_num_batched_tokens = T
  ro.max_num_seqs = T
  local out = ffi.new("lunar_runner_t *[1]")
  assert(lffi.check(C.lunar_runner_create(m.handle, ro, out)))
  local r = ffi.gc(out[0], C.lunar_runner_free)
  local tok, pos, slot = ffi.new("int32_t[?]", T), ffi.new("int32_t[?]", T), ffi.new("int64_t[?]", T)
  local li = ffi.new("int32_t[?]", T)
  for i = 0, T - 1 do tok[i], pos[i], slot[i], li[i] = ids[i + 1], i, i, i end
  local qs, lens, bt = ffi.new("int32_t[2]", 0, T), ffi.new("int32_t[1]", T), ffi.new("int32_t[?]", ro.num_kv_blocks)
  for k = 0, ro.num_kv_blocks - 1 do bt[k] = k end
  local b = ffi.new("lunar_batch_t")
  b.num_tokens, b.num_seqs, b.token_ids, b.positions, b.slot_mapping = T, 1, tok, pos, slot
  b.query_start, b.seq_lens, b.block_tables, b.max_blocks_per_seq = qs, lens, bt, ro.num_kv_blocks
  b.logits_indices, b.num_logits = li, T
  local got = ffi.new("float[?]", T * V)
  assert(lffi.check(C.lunar_runner_forward(r, b, got)))
  C.lunar_runner_free(ffi.gc(r, nil))
  m:free()
  return got, V
end
local got32, V = lunar_logits("float32")
local got = lunar_logits("bfloat16")
local f32, hf = read_f32(dir .. "/ref_f32.f32", T * V), read_f32(dir .. "/ref_bf16.f32", T * V)

local function stats(x)
  local maxd, sumd, maxref = 0, 0, 0
  for i = 0, T * V - 1 do
    local d = math.abs(x[i] - f32[i])
    if d > maxd then maxd = d end
    sumd = sumd + d
    if math.abs(f32[i]) > maxref then maxref = math.abs(f32[i]) end
  end
  return maxd, sumd / (T * V), maxref
end
local function argmax(x, t)
  local best, bi = -math.huge, 0
  for n = 0, V - 1 do
    if x[t * V + n] > best then best, bi = x[t * V + n], n end
  end
  return bi
end
local fmax, fmean, maxref = stats(got32)
local lmax, lmean = stats(got)
local hmax, hmean = stats(hf)
local agree_f, agree_l, agree_h = 0, 0, 0
for t = 0, T - 1 do
  local a = argmax(f32, t)
  agree_f = agree_f + (argmax(got32, t) == a and 1 or 0)
  agree_l = agree_l + (argmax(got, t) == a and 1 or 0)
  agree_h = agree_h + (argmax(hf, t) == a and 1 or 0)
end
print(string.format("llama8b logits, %d positions x %d vocab, max |f32 logit| %.4f", T, V, maxref))
local function line(what, mx, mean, agree)
  print(string.format("  %-20s vs transformers f32: max |d| %.5f  mean |d| %.6f  argmax equal %d/%d", what, mx, mean,
    agree, T))
end
line("lunar cuda f32", fmax, fmean, agree_f)
line("lunar cuda bf16", lmax, lmean, agree_l)
line("transformers bf16", hmax, hmean, agree_h)
local ok32 = fmax <= 1e-3 * maxref
local ok16 = lmax <= 2 * hmax and lmean <= 2 * hmean and agree_l >= agree_h - T / 10
print(string.format("llama8b logits: f32 %s, bf16 %s", ok32 and "PASS" or "FAIL", ok16 and "PASS" or "FAIL"))
os.exit(ok32 and ok16 and 0 or 1)
