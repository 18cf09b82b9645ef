-- lunar.runner — the backend runner (lunar/runner.h) with its KV cache sized for a budget.
--
-- KV sizing on the CPU follows vLLM's CPU backend: a fixed space (4 GiB unless
-- kv_cache_memory_bytes says otherwise), here capped at what max_num_seqs sequences of
-- max_model_len tokens can use, so a small model does not reserve gigabytes it never touches.
local lffi = require "lunar.ffi"
local ffi = lffi.ffi
local C = lffi.C

local M = {}
local Runner = {}
Runner.__index = Runner

M.DEFAULT_CPU_KV_BYTES = 4 * 1024 ^ 3

-- The KV plan for a model: {bytes_per_token, bytes_per_block, num_blocks, tokens, bytes}.
function M.kv_plan(model, o)
  local per_token = tonumber(C.lunar_runner_kv_bytes_per_token(model.handle, o.backend or "cpu"))
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
      .. "of max_model_len %d needs (%d); raise kv_cache_memory_bytes or lower max_model_len",
      budget, blocks, bs, o.max_model_len, blocks_per_seq)
  end
  return { bytes_per_token = per_token, bytes_per_block = per_block, num_blocks = blocks,
           tokens = blocks * bs, bytes = blocks * per_block }
end

-- new(model, {block_size, max_model_len, max_num_seqs, max_num_batched_tokens,
--             kv_cache_memory_bytes, num_threads, backend = "cpu" | "cuda"}) -> runner | nil, err
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
