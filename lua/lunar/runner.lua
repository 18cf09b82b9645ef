-- lunar.runner — the backend runner (lunar/runner.h) with its KV cache sized for a budget, and
-- the start-up memory breakdown that says where memory went (weights, activation peak, CUDA
-- graphs, other, KV cache in tokens and maximum concurrency).
--
-- On CUDA (vLLM's rule, measured, not estimated): the runner is created with a KV cache just
-- big enough for a profiling forward at the largest step (--max-num-batched-tokens), the
-- profile reads device memory at every stage of start-up (lunar_runner_profile), and the KV
-- cache is then resized to total x --gpu-memory-utilization less everything in use (weights,
-- activation peak, CUDA graphs, the CUDA context and cuBLAS, other processes).
-- --kv-cache-memory-bytes overrides the computed budget.
-- On the CPU (vLLM's CPU backend): a fixed space (4 GiB unless kv_cache_memory_bytes says
-- otherwise), capped at what max_num_seqs sequences of max_model_len tokens can use, so a small
-- model does not reserve gigabytes it never touches; no profile (a CPU forward at the largest
-- step costs seconds to minutes), the breakdown is the bytes allocated.
local lffi = require "lunar.ffi"
local ffi = lffi.ffi
local C = lffi.C

local M = {}
local Runner = {}
Runner.__index = Runner

M.DEFAULT_CPU_KV_BYTES = 4 * 1024 ^ 3
local GIB = 1024 ^ 3

local function gib(b) return string.format("%.2f GiB", b / GIB) end
local commas = require("lunar.model").commas

-- The KV plan on the CPU: {bytes_per_token, bytes_per_block, num_blocks, tokens, bytes}.
function M.kv_plan(model, o)
  local backend = o.backend or "cpu"
  local per_token = tonumber(C.lunar_runner_kv_bytes_per_token(model.handle, backend))
  local bs = o.block_size or 16
  local per_block = per_token * bs
  local blocks_per_seq = math.ceil(o.max_model_len / bs)
  local budget = o.kv_cache_memory_bytes or M.DEFAULT_CPU_KV_BYTES
  local blocks = math.floor(budget / per_block)
  if not o.kv_cache_memory_bytes then
    blocks = math.min(blocks, blocks_per_seq * (o.max_num_seqs or 256))
  end
  if blocks < blocks_per_seq then
    return nil, string.format("the KV cache (%d bytes) holds %d blocks of %d tokens, fewer than one sequence "
      .. "of max_model_len %d needs (%d); raise --kv-cache-memory-bytes or lower --max-model-len", budget, blocks, bs,
      o.max_model_len, blocks_per_seq)
  end
  return { bytes_per_token = per_token, bytes_per_block = per_block, num_blocks = blocks,
           tokens = blocks * bs, bytes = blocks * per_block }
end

-- KV blocks the profiling forward needs (lunar_runner_profile): its largest step spread over
-- sequences of at most max_model_len tokens, each in blocks of its own, and a slot per
-- sequence of the decode step.
function M.profile_blocks(o)
  local bs, T, S = o.block_size or 16, o.max_num_batched_tokens or 2048, o.max_num_seqs or 256
  local L = math.min(T, o.max_model_len)
  local nseq = math.min(math.ceil(T / L), S)
  return math.max(nseq * math.ceil(L / bs), math.ceil(S / bs), 1)
end

-- lunar_runner_memory_t as a table of numbers.
local function read_memory(handle)
  local m = ffi.new("lunar_runner_memory_t")
  local ok, err = lffi.check(C.lunar_runner_memory(handle, m))
  if not ok then return nil, err end
  local t = {}
  for _, k in ipairs({ "device_total", "device_used", "weights", "activations", "cuda_graphs", "kv_cache", "other",
                       "kv_bytes_per_token", "num_kv_blocks", "block_size", "profiled", "profile_tokens",
                       "profile_seqs", "graph_seqs" }) do
    t[k] = tonumber(m[k])
  end
  t.kv_tokens = t.num_kv_blocks * t.block_size
  return t
end

-- vLLM's rule: the KV cache gets total x utilization less everything in use besides it (the
-- profiling cache is freed before the real one is made). Returns budget, limit, in_use (bytes).
function M.gpu_kv_budget(mem, util)
  local limit = mem.device_total * util
  local in_use = mem.weights + mem.activations + mem.cuda_graphs + mem.other
  return limit - in_use, limit, in_use
end

-- The breakdown as lines for the log. mem: read_memory's table; o: the runner options plus
-- device_name, dtype, and kv_source ("utilization" | "bytes" | "cpu").
function M.breakdown_lines(mem, o)
  local lines = {}
  local function row(name, bytes, note)
    lines[#lines + 1] = string.format("  %-16s %9s   %s", name, gib(bytes), note)
  end
  local device = mem.device_total > 0
  if not device then
    lines[#lines + 1] = string.format("memory (cpu backend, host memory; KV cache %s):",
      o.kv_source == "bytes" and "from --kv-cache-memory-bytes"
        or "4 GiB or what --max-num-seqs x --max-model-len can use")
  elseif o.kv_source == "bytes" then
    lines[#lines + 1] = string.format("memory on GPU 0 (%s, %s; KV cache from --kv-cache-memory-bytes %d):",
      o.device_name or "?", gib(mem.device_total), o.kv_cache_memory_bytes)
  else
    lines[#lines + 1] = string.format("memory on GPU 0 (%s): %s x gpu_memory_utilization %.2f = %s for lunar:",
      o.device_name or "?", gib(mem.device_total), o.gpu_memory_utilization, gib(mem.device_total * o.gpu_memory_utilization))
  end
  row("weights", mem.weights, string.format("%s, %s", o.dtype or "", device and "on the GPU"
    or "in host memory (the loaded tensors, read in place)"))
  local steps = string.format("step buffers for %d tokens", o.max_num_batched_tokens or 2048)
  if mem.profiled == 1 then
    steps = steps .. string.format(" and workspace; profiled a step of %d tokens in %d sequence%s",
      mem.profile_tokens, mem.profile_seqs, mem.profile_seqs == 1 and "" or "s")
  end
  row("activation peak", mem.activations, steps)
  if not device then
    row("CUDA graphs", 0, "none on the cpu")
  elseif mem.graph_seqs > 0 then
    row("CUDA graphs", mem.cuda_graphs, string.format("measured capturing a decode graph of %d sequences (~0: "
      .. "every buffer it reads is preallocated)", mem.graph_seqs))
  else
    row("CUDA graphs", 0, "none (--enforce-eager or LUNAR_CUDA_GRAPHS=0)")
  end
  if device then
    row("other", mem.other, "CUDA context, cuBLAS, other processes")
  else
    lines[#lines + 1] = string.format("  %-16s %9s   %s", "other", "-", "not measured on the cpu")
  end
  lines[#lines + 1] = string.format("  %-16s %9s = %s tokens x %s bytes per token (%s blocks of %d)", "KV cache",
    gib(mem.kv_cache), commas(mem.kv_tokens), commas(mem.kv_bytes_per_token), commas(mem.num_kv_blocks), mem.block_size)
  lines[#lines + 1] = string.format("  maximum concurrency for %d tokens per request: %.2fx", o.max_model_len,
    mem.kv_tokens / o.max_model_len)
  if device then
    local sum = mem.weights + mem.activations + mem.cuda_graphs + mem.other + mem.kv_cache
    lines[#lines + 1] = string.format("  %-16s %9s   of %s on the GPU", "total", gib(sum), gib(mem.device_total))
  end
  return lines
end

-- The message when the KV budget is short of one max_model_len sequence on a GPU.
local function short_of_one_sequence(mem, o, budget, limit, in_use, blocks)
  local bs, per_token = mem.block_size, mem.kv_bytes_per_token
  local need = math.ceil(o.max_model_len / bs) * bs * per_token
  local util_needed = (in_use + need) / mem.device_total
  local fit_len = math.max(blocks, 0) * bs
  return string.format("no room in GPU memory for one sequence of --max-model-len %d: %s x "
    .. "--gpu-memory-utilization %.2f = %s, less weights %s, activation peak %s, CUDA graphs %s and other "
    .. "(CUDA context, cuBLAS, other processes) %s leaves %s for the KV cache = %d tokens, but one sequence needs "
    .. "%s (%s bytes per token). Raise --gpu-memory-utilization%s, lower --max-model-len (%s), lower "
    .. "--max-num-batched-tokens (%d) or --max-num-seqs (%d) to shrink the activations, or use a smaller --dtype "
    .. "(now %s)",
    o.max_model_len, gib(mem.device_total), o.gpu_memory_utilization, gib(limit), gib(mem.weights),
    gib(mem.activations), gib(mem.cuda_graphs), gib(mem.other), gib(math.max(budget, 0)), fit_len, gib(need),
    commas(per_token),
    util_needed <= 1 and string.format(" (to at least %.2f)", math.ceil(util_needed * 100) / 100)
      or " (even 1.0 is not enough)",
    fit_len > 0 and string.format("at most %d fits", fit_len) or "nothing fits",
    o.max_num_batched_tokens or 2048, o.max_num_seqs or 256, o.dtype or "?")
end

-- The KV cache's size in blocks from a profiled runner's breakdown `mem` (read_memory) and the
-- options: --kv-cache-memory-bytes when given, else vLLM's rule on a GPU, else nil (the CPU's
-- rule applies). Returns blocks, source ("bytes" | "utilization") or nil, err naming what to change.
function M.size_kv(mem, o)
  local bs, per_token = mem.block_size, mem.kv_bytes_per_token
  if o.kv_cache_memory_bytes then
    local blocks = math.floor(o.kv_cache_memory_bytes / (per_token * bs))
    if blocks * bs < o.max_model_len then
      return nil, string.format("--kv-cache-memory-bytes %d holds %d tokens (%s bytes per token), fewer than one "
        .. "sequence of --max-model-len %d needs: raise --kv-cache-memory-bytes to at least %d or lower --max-model-len",
        o.kv_cache_memory_bytes, blocks * bs, commas(per_token), o.max_model_len,
        math.ceil(o.max_model_len / bs) * bs * per_token)
    end
    return blocks, "bytes"
  end
  if mem.device_total == 0 then return nil end
  local budget, limit, in_use = M.gpu_kv_budget(mem, o.gpu_memory_utilization)
  local blocks = math.floor(budget / (per_token * bs))
  if blocks * bs < o.max_model_len then return nil, short_of_one_sequence(mem, o, budget, limit, in_use, blocks) end
  return blocks, "utilization"
end

-- nil when `weights` bytes fit the GPU (total, free bytes), else the message saying what to change.
function M.check_weights_fit(weights, total, free, o, device_name)
  local util = o.gpu_memory_utilization
  if weights <= free and (o.kv_cache_memory_bytes or weights <= total * util) then return nil end
  return string.format("the weights (%s in %s) do not fit: the GPU (%s) has %s, %s free, and "
    .. "--gpu-memory-utilization %.2f allows %s. Use a smaller --dtype (bfloat16 or float16 halve float32), "
    .. "raise --gpu-memory-utilization, or free the GPU of other processes", gib(weights), o.dtype or "?",
    device_name or "?", gib(total), gib(free), util, gib(total * util))
end

local function new_handle(model, o, blocks)
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.num_kv_blocks = blocks
  ro.block_size = o.block_size or 16
  ro.max_num_batched_tokens = o.max_num_batched_tokens or 2048
  ro.max_num_seqs = o.max_num_seqs or 256
  ro.num_threads = o.num_threads or 0
  ro.enforce_eager = o.enforce_eager and 1 or 0
  ro.backend = o.backend or "cpu" -- a Lua string: kept alive by `o` while the runner is made
  local out = ffi.new("lunar_runner_t *[1]")
  local ok, cerr = lffi.check(C.lunar_runner_create(model.handle, ro, out))
  if not ok then return nil, cerr end
  return ffi.gc(out[0], C.lunar_runner_free)
end

-- The weights' bytes as loaded (every tensor of the model, in its loaded dtype).
local function weight_bytes(model)
  local n = 0
  for i = 0, tonumber(C.lunar_model_tensor_count(model.handle)) - 1 do
    n = n + tonumber(C.lunar_model_tensor(model.handle, i).nbytes)
  end
  return n
end

-- The GPU start-up: check the weights fit, create with the profiling cache, profile, size the
-- KV cache, resize. Returns handle, kv_source or nil, err.
local function create_profiled(model, o, dev)
  if dev then
    local err = M.check_weights_fit(weight_bytes(model), tonumber(dev.total_bytes), tonumber(dev.free_bytes), o,
      ffi.string(dev.name))
    if err then return nil, err end
  end
  local pblocks = M.profile_blocks(o)
  local h, err = new_handle(model, o, pblocks)
  if not h then
    if dev then
      err = err .. string.format("; the weights and the step buffers for --max-num-batched-tokens %d did not fit: "
        .. "lower --max-num-batched-tokens or --max-num-seqs, or use a smaller --dtype", o.max_num_batched_tokens or 2048)
    end
    return nil, err
  end
  local ok, perr = lffi.check(C.lunar_runner_profile(h, o.max_model_len, nil))
  if not ok then return nil, "the profiling forward failed: " .. perr end
  local mem, merr = read_memory(h)
  if not mem then return nil, merr end
  local blocks, source = M.size_kv(mem, o)
  if not blocks and source then return nil, source end
  if not blocks then -- the profiled path on the CPU (tests): the CPU's rule
    local plan, perr2 = M.kv_plan(model, o)
    if not plan then return nil, perr2 end
    blocks, source = plan.num_blocks, "cpu"
  end
  if blocks ~= mem.num_kv_blocks then
    local rok, rerr = lffi.check(C.lunar_runner_set_kv_blocks(h, blocks))
    if not rok then
      return nil, rerr .. (source == "bytes" and "; lower --kv-cache-memory-bytes" or "; lower --gpu-memory-utilization")
    end
  end
  return h, source
end

-- new(model, {block_size, max_model_len, max_num_seqs, max_num_batched_tokens,
--             kv_cache_memory_bytes, num_threads, backend = "cpu" | "cuda",
--             gpu_memory_utilization, enforce_eager, dtype (for messages),
--             profile (the CUDA start-up on any backend: tests)}) -> runner | nil, err
-- Logs the memory breakdown; runner.memory holds it as numbers (read_memory's fields,
-- kv_tokens, and lines: the logged text).
function M.new(model, o)
  local backend = o.backend or "cpu"
  o.gpu_memory_utilization = o.gpu_memory_utilization or 0.9
  if o.gpu_memory_utilization <= 0 or o.gpu_memory_utilization > 1 then
    return nil, string.format("--gpu-memory-utilization %g must be in (0, 1]", o.gpu_memory_utilization)
  end
  for _, k in ipairs({ "max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size" }) do
    if o[k] and o[k] < 1 then return nil, string.format("--%s %d must be >= 1", k:gsub("_", "-"), o[k]) end
  end
  if o.kv_cache_memory_bytes and o.kv_cache_memory_bytes <= 0 then
    return nil, string.format("--kv-cache-memory-bytes %d must be positive", o.kv_cache_memory_bytes)
  end
  o.dtype = o.dtype or model.dtype
  local h, source, err, dev
  if backend == "cuda" then
    dev = ffi.new("lunar_device_info_t")
    local ok, derr = lffi.check(C.lunar_device_get_info(0, dev))
    if not ok then return nil, derr end
  end
  if backend == "cuda" or o.profile then
    h, source = create_profiled(model, o, dev)
    if not h then return nil, source end
  else
    local plan, perr = M.kv_plan(model, o)
    if not plan then return nil, perr end
    h, err = new_handle(model, o, plan.num_blocks)
    if not h then return nil, err end
    source = o.kv_cache_memory_bytes and "bytes" or "cpu"
  end
  local mem, merr = read_memory(h)
  if not mem then return nil, merr end
  mem.lines = M.breakdown_lines(mem, {
    device_name = dev and ffi.string(dev.name), dtype = o.dtype, kv_source = source,
    gpu_memory_utilization = o.gpu_memory_utilization, kv_cache_memory_bytes = o.kv_cache_memory_bytes,
    max_model_len = o.max_model_len, max_num_batched_tokens = o.max_num_batched_tokens })
  for _, line in ipairs(mem.lines) do C.lunar_log(1, "memory", "%s", line) end
  local self = setmetatable({ model = model, memory = mem, num_blocks = mem.num_kv_blocks, handle = h }, Runner)
  self.plan = { bytes_per_token = mem.kv_bytes_per_token, bytes_per_block = mem.kv_bytes_per_token * mem.block_size,
                num_blocks = mem.num_kv_blocks, tokens = mem.kv_tokens, bytes = mem.kv_cache }
  self.iface = ffi.new("lunar_forward_iface_t")
  C.lunar_runner_forward_iface(self.handle, self.iface)
  return self
end

function Runner:tokens_computed() return tonumber(C.lunar_runner_tokens_computed(self.handle)) end

function Runner:close()
  if self.handle then
    C.lunar_runner_free(ffi.gc(self.handle, nil))
    self.handle = nil
  end
end

return M
