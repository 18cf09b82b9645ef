-- lunar.runner — the backend runner (lunar/runner.h) with its KV cache sized for a budget.
--
-- KV sizing on the CPU follows vLLM's CPU backend: a fixed space (4 GiB unless
-- kv_cache_memory_bytes says otherwise), here capped at what max_num_seqs sequences of
-- max_model_len tokens can use, so a small model does not reserve gigabytes it never touches.
-- On CUDA it follows vLLM's GPU rule (gpu_kv_budget below).
local lffi = require "lunar.ffi"
local ffi = lffi.ffi
local C = lffi.C

local M = {}
local Runner = {}
Runner.__index = Runner

M.DEFAULT_CPU_KV_BYTES = 4 * 1024 ^ 3

-- On a GPU (as vLLM): the KV cache gets total memory x gpu_memory_utilization, less what is in
-- use already (our CUDA context, other processes), the weights, and the activation and cuBLAS estimates of lunar_memory_plan
-- (no profiling forward yet). Returns the budget in bytes and a line for the log, or nil, err.
local function gpu_kv_budget(model, o)
  local di = ffi.new("lunar_device_info_t")
  local ok, err = lffi.check(C.lunar_device_get_info(0, di))
  if not ok then return nil, err end
  local total, free = tonumber(di.total_bytes), tonumber(di.free_bytes)
  local util = o.gpu_memory_utilization or 0.9
  local plan, perr = require("lunar.model").memory_plan(model.cconfig, {
    max_model_len = o.max_model_len, max_num_seqs = o.max_num_seqs, block_size = o.block_size,
    max_num_batched_tokens = o.max_num_batched_tokens, dtype = model.dtype, gpu_memory_bytes = total,
    gpu_memory_utilization = util, enforce_eager = true })
  if not plan then return nil, perr end
  local others = total - free
  local budget = plan.kv_cache_bytes - others
  local gib = function(b) return string.format("%.2f GiB", b / 1024 ^ 3) end
  local line = string.format("GPU %s: %s x %.2f = %s; weights %s, activations ~%s, cuBLAS %s, already in use "
    .. "(CUDA context, other processes) %s -> KV cache %s", ffi.string(di.name), gib(total), util, gib(total * util), gib(plan.weight_bytes),
    gib(plan.activation_bytes), gib(plan.cublas_workspace_bytes), gib(others), gib(math.max(budget, 0)))
  if budget <= 0 then
    return nil, line .. ": nothing left for the KV cache; raise --gpu-memory-utilization, lower "
      .. "--max-num-batched-tokens, or use a smaller --dtype"
  end
  return budget, line
end

-- The KV plan for a model: {bytes_per_token, bytes_per_block, num_blocks, tokens, bytes}.
function M.kv_plan(model, o)
  local backend = o.backend or "cpu"
  local per_token = tonumber(C.lunar_runner_kv_bytes_per_token(model.handle, backend))
  local bs = o.block_size or 16
  local per_block = per_token * bs
  local blocks_per_seq = math.ceil(o.max_model_len / bs)
  local budget, note = o.kv_cache_memory_bytes, nil
  if not budget and backend == "cuda" then
    budget, note = gpu_kv_budget(model, o)
    if not budget then return nil, note end
  end
  budget = budget or M.DEFAULT_CPU_KV_BYTES
  local blocks = math.floor(budget / per_block)
  if not o.kv_cache_memory_bytes and backend ~= "cuda" then
    blocks = math.min(blocks, blocks_per_seq * (o.max_num_seqs or 256))
  end
  if blocks < blocks_per_seq then
    return nil, string.format("the KV cache (%d bytes) holds %d blocks of %d tokens, fewer than one sequence "
      .. "of max_model_len %d needs (%d); raise %s or lower max_model_len", budget, blocks, bs, o.max_model_len,
      blocks_per_seq, backend == "cuda" and "--gpu-memory-utilization" or "kv_cache_memory_bytes")
  end
  if note then
    C.lunar_log(1, "cuda", "%s", string.format("%s = %d tokens (%.1fx concurrency at max_model_len %d)", note,
      blocks * bs, blocks / blocks_per_seq, o.max_model_len))
  end
  return { bytes_per_token = per_token, bytes_per_block = per_block, num_blocks = blocks,
           tokens = blocks * bs, bytes = blocks * per_block }
end

-- new(model, {block_size, max_model_len, max_num_seqs, max_num_batched_tokens,
--             kv_cache_memory_bytes, num_threads, backend = "cpu" | "cuda",
--             gpu_memory_utilization, enforce_eager}) -> runner | nil, err
function M.new(model, o)
  local plan, err = M.kv_plan(model, o)
  if not plan then return nil, err end
  local ro = ffi.new("lunar_runner_options_t")
  C.lunar_runner_options_default(ro)
  ro.num_kv_blocks = plan.num_blocks
  ro.block_size = o.block_size or 16
  ro.max_num_batched_tokens = o.max_num_batched_tokens or 2048
  ro.max_num_seqs = o.max_num_seqs or 256
  ro.num_threads = o.num_threads or 0
  ro.enforce_eager = o.enforce_eager and 1 or 0
  ro.backend = o.backend or "cpu" -- a Lua string: kept alive by `o` while the runner is made
  local out = ffi.new("lunar_runner_t *[1]")
  local ok, cerr = lffi.check(C.lunar_runner_create(model.handle, ro, out))
  if not ok then return nil, cerr end
  local self = setmetatable({ model = model, plan = plan, num_blocks = plan.num_blocks }, Runner)
  self.handle = ffi.gc(out[0], C.lunar_runner_free)
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
