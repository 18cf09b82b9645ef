-- tests/gpu/llama8b_logits.lua — the CUDA backend's logits for a Llama-3-8B-shaped model against
-- transformers given the same safetensors (tests/gpu/llama8b_ref.py wrote the model and the
-- references). Tolerance: bf16 through 32 layers is not exact anywhere, so lunar (bf16) is held
-- to the error transformers makes in bf16 against the same weights in f32: lunar's max and
-- mean |logit - f32 logit| may be at most 1.5x transformers' bf16 ones (+1e-3 of max |logit|),
-- and its argmax must equal the f32 model's wherever transformers' bf16 argmax does.
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
local m = assert(model.load(dir, { dtype = "bfloat16" }))
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
local lmax, lmean, maxref = stats(got)
local hmax, hmean = stats(hf)
local agree_l, agree_h, missed = 0, 0, 0
for t = 0, T - 1 do
  local a = argmax(f32, t)
  local al, ah = argmax(got, t) == a, argmax(hf, t) == a
  agree_l = agree_l + (al and 1 or 0)
  agree_h = agree_h + (ah and 1 or 0)
  if ah and not al then missed = missed + 1 end
end
print(string.format("llama8b logits, %d positions x %d vocab, max |f32 logit| %.4f", T, V, maxref))
print(string.format("  lunar cuda bf16   vs transformers f32: max |d| %.5f  mean |d| %.6f  argmax equal %d/%d",
  lmax, lmean, agree_l, T))
print(string.format("  transformers bf16 vs transformers f32: max |d| %.5f  mean |d| %.6f  argmax equal %d/%d",
  hmax, hmean, agree_h, T))
local slack = 1e-3 * maxref
local ok = lmax <= 1.5 * hmax + slack and lmean <= 1.5 * hmean + slack and missed == 0
print(ok and "llama8b logits: PASS" or string.format("llama8b logits: FAIL (%d argmax transformers-bf16 gets and lunar misses)", missed))
C.lunar_runner_free(ffi.gc(r, nil))
m:free()
os.exit(ok and 0 or 1)
