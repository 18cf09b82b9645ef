-- lunar.model — a Hugging Face model folder from Lua: load it (lunar_model_load), read its
-- config as a Lua table, list its tensors and files, count parameters, and plan GPU memory.
--
-- Library calls return `nil, err` on failure (the C loader's one-line message naming the
-- file and tensor). A loaded model is freed by the garbage collector or by m:free().
local lffi = require "lunar.ffi"
local ffi, C = lffi.ffi, lffi.C

local M = {}

M.dtypes = { [0] = "float32", "float16", "bfloat16", "int32", "uint8", "int8", "int64", "float64", "bool" }
local dtype_id = {}
for i = 0, #M.dtypes do dtype_id[M.dtypes[i]] = i end
dtype_id.half, dtype_id.float = 1, 0

-- 8030261248 -> "8,030,261,248", for parameter counts a person reads.
function M.commas(n)
  local s = string.format("%d", n)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

-- "bfloat16" -> 2, the C enum
function M.dtype_id(name) return dtype_id[name] end

local rope_types = { [0] = "default", "linear", "dynamic", "yarn", "llama3" }
local acts = { [0] = "silu", "gelu", "gelu_pytorch_tanh" }

M.param_groups = { "embed", "attention", "mlp", "router", "experts", "norm", "lm_head" }

-- The C config struct as a plain table (field names as in lunar/model.h).
function M.config_table(c)
  local t = {
    architecture = ffi.string(c.architecture), model_type = ffi.string(c.model_type),
    vocab_size = c.vocab_size, hidden_size = c.hidden_size, intermediate_size = c.intermediate_size,
    num_layers = c.num_layers, num_heads = c.num_heads, num_kv_heads = c.num_kv_heads, head_dim = c.head_dim,
    max_position_embeddings = c.max_position_embeddings, rms_norm_eps = c.rms_norm_eps,
    hidden_act = acts[tonumber(c.hidden_act)], tie_word_embeddings = c.tie_word_embeddings ~= 0,
    qkv_bias = c.qkv_bias ~= 0, o_bias = c.o_bias ~= 0, qk_norm = c.qk_norm ~= 0,
    sliding_window = c.sliding_window, bos_token_id = c.bos_token_id >= 0 and c.bos_token_id or nil,
    torch_dtype = M.dtypes[tonumber(c.torch_dtype)],
    num_experts = c.num_experts, num_experts_per_tok = c.num_experts_per_tok,
    moe_intermediate_size = c.moe_intermediate_size, norm_topk_prob = c.norm_topk_prob ~= 0,
    decoder_sparse_step = c.decoder_sparse_step,
    shared_expert_intermediate_size = c.shared_expert_intermediate_size,
    rope = {
      type = rope_types[tonumber(c.rope.type)], theta = c.rope.theta, factor = c.rope.factor,
      original_max_position = c.rope.original_max_position, low_freq_factor = c.rope.low_freq_factor,
      high_freq_factor = c.rope.high_freq_factor, beta_fast = c.rope.beta_fast, beta_slow = c.rope.beta_slow,
      rotary_dim = c.rope.rotary_dim,
    },
    eos_token_ids = {},
  }
  for i = 0, c.num_eos_token_ids - 1 do t.eos_token_ids[#t.eos_token_ids + 1] = c.eos_token_ids[i] end
  return t
end

-- Parses <dir>/config.json alone (no weights): returns the C struct (cdata) and its table.
function M.read_config(dir)
  local path = dir .. "/config.json"
  local f, err = io.open(path, "rb")
  if not f then
    local attr = io.open(dir, "rb")
    if not attr then return nil, dir .. ": no such model folder" end
    attr:close()
    return nil, dir .. ": config.json is missing (" .. tostring(err) .. ")"
  end
  local text = f:read("*a")
  f:close()
  local c = ffi.new("lunar_model_config_t")
  local ok, perr = lffi.check(C.lunar_config_parse(text, #text, path, c))
  if not ok then return nil, perr end
  return c, M.config_table(c)
end

local Model = {}
Model.__index = Model

-- load(dir, {dtype=, load_format=, seed=, config_only=, dummy_on_device=}) -> model | nil, err
-- dummy_on_device: with load_format "dummy", the matrices are left for a GPU backend to make in
-- place (no host copy; a CPU runner refuses such a model).
function M.load(dir, opts)
  opts = opts or {}
  local o = ffi.new("lunar_load_options_t")
  o.dtype = opts.dtype
  o.load_format = opts.load_format
  o.seed = opts.seed or 0
  o.config_only = opts.config_only and 1 or 0
  o.dummy_on_device = opts.dummy_on_device and 1 or 0
  local out = ffi.new("lunar_model_t *[1]")
  local ok, err = lffi.check(C.lunar_model_load(dir, o, out))
  if not ok then return nil, err end
  local handle = ffi.gc(out[0], C.lunar_model_free)
  local self = setmetatable({ handle = handle, dir = dir }, Model)
  self.cconfig = C.lunar_model_config(handle)
  self.config = M.config_table(self.cconfig)
  self.format = ffi.string(C.lunar_model_format(handle))
  self.dtype = M.dtypes[tonumber(C.lunar_model_dtype(handle))]
  return self
end

function Model:free()
  if self.handle then
    C.lunar_model_free(ffi.gc(self.handle, nil))
    self.handle = nil
  end
end

function Model:weights() return C.lunar_model_weights(self.handle) end

-- Every tensor as {name, dtype, shape = {...}, nbytes}, in file order.
function Model:tensors()
  local list = {}
  for i = 0, C.lunar_model_tensor_count(self.handle) - 1 do
    local t = C.lunar_model_tensor(self.handle, i)
    local shape = {}
    for d = 0, t.ndim - 1 do shape[d + 1] = tonumber(t.shape[d]) end
    list[#list + 1] = { name = ffi.string(t.name), dtype = M.dtypes[tonumber(t.dtype)], shape = shape,
      nbytes = tonumber(t.nbytes) }
  end
  return list
end

function Model:files()
  local list, size = {}, ffi.new("uint64_t[1]")
  for i = 0, C.lunar_model_file_count(self.handle) - 1 do
    local p = C.lunar_model_file(self.handle, i, size)
    list[#list + 1] = { path = ffi.string(p), size = tonumber(size[0]) }
  end
  return list
end

-- Parameter counts of a config (cdata): {total, active, groups = {embed = n, ...}}.
function M.param_count(c)
  local pc = ffi.new("lunar_param_count_t")
  local ok, err = lffi.check(C.lunar_param_count(c, pc))
  if not ok then return nil, err end
  local t = { total = tonumber(pc.total), active = tonumber(pc.active), groups = {} }
  for i, g in ipairs(M.param_groups) do t.groups[g] = tonumber(pc.group[i - 1]) end
  return t
end

-- nil, err when tp/pp do not divide the model; else the replication note ("" if none).
function M.parallel_check(c, tp, pp)
  local note = ffi.new("char[512]")
  local ok, err = lffi.check(C.lunar_parallel_check(c, tp, pp, note, 512))
  if not ok then return nil, err end
  return ffi.string(note)
end

-- The dtype weights are held in for a --dtype flag (lunar_model_resolve_dtype): auto is the
-- config's torch_dtype, except that a float32 checkpoint runs in bfloat16 on a GPU, which the
-- C side logs. `c` is a config cdata; device "cuda" or "cpu".
function M.resolve_dtype(flag, c, device)
  local r = C.lunar_model_resolve_dtype(flag or "auto", c, device == "cuda" and 1 or 0)
  if r == nil then return nil, "--dtype " .. tostring(flag) .. ": expected auto, float16, bfloat16 or float32" end
  return ffi.string(r)
end

-- memory_plan(config cdata, opts) -> plan table | nil, err. opts: tp, pp, max_model_len,
-- max_num_seqs, max_num_batched_tokens, block_size, dtype, kv_dtype (names),
-- gpu_memory_bytes, gpu_memory_utilization, kv_cache_memory_bytes, enforce_eager.
function M.memory_plan(c, opts)
  local o = ffi.new("lunar_memory_options_t")
  o.tensor_parallel_size = opts.tp or 1
  o.pipeline_parallel_size = opts.pp or 1
  o.max_model_len = opts.max_model_len or 0
  o.max_num_seqs = opts.max_num_seqs or 0
  o.max_num_batched_tokens = opts.max_num_batched_tokens or 0
  o.block_size = opts.block_size or 0
  o.dtype = dtype_id[opts.dtype or "bfloat16"]
  o.kv_dtype = dtype_id[opts.kv_dtype or opts.dtype or "bfloat16"]
  o.gpu_memory_bytes = opts.gpu_memory_bytes or 0
  o.gpu_memory_utilization = opts.gpu_memory_utilization or 0
  o.kv_cache_memory_bytes = opts.kv_cache_memory_bytes or 0
  o.enforce_eager = opts.enforce_eager and 1 or 0
  local p = ffi.new("lunar_memory_plan_t")
  local ok, err = lffi.check(C.lunar_memory_plan(c, o, p))
  if not ok then return nil, err end
  local n = tonumber
  local t = {
    tp = p.tp, pp = p.pp, max_model_len = p.max_model_len, max_num_seqs = p.max_num_seqs,
    max_num_batched_tokens = p.max_num_batched_tokens, block_size = p.block_size,
    kv_heads_per_gpu = p.kv_heads_per_gpu, kv_replicated = p.kv_replicated ~= 0,
    params_total = n(p.params_total), weight_bytes_total = n(p.weight_bytes_total), weight_bytes = n(p.weight_bytes),
    kv_bytes_per_token_total = n(p.kv_bytes_per_token_total), kv_bytes_per_token = n(p.kv_bytes_per_token),
    activation_bytes = n(p.activation_bytes), cuda_graph_bytes = n(p.cuda_graph_bytes),
    cublas_workspace_bytes = n(p.cublas_workspace_bytes), nccl_bytes = n(p.nccl_bytes),
    sized = p.sized ~= 0, stages = {},
  }
  for s = 0, p.stages - 1 do
    t.stages[#t.stages + 1] = { first_layer = p.stage_first_layer[s], layers = p.stage_layers[s],
      weight_bytes = n(p.stage_weight_bytes[s]) }
  end
  if t.sized then
    t.gpu_memory_bytes = n(p.gpu_memory_bytes)
    t.gpu_memory_utilization = p.gpu_memory_utilization
    t.kv_cache_bytes = n(p.kv_cache_bytes)
    t.kv_cache_tokens = n(p.kv_cache_tokens)
    t.kv_cache_blocks = n(p.kv_cache_blocks)
    t.max_concurrency = p.max_concurrency
  end
  return t
end

return M
