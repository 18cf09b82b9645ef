-- `lunar memory MODEL`: where GPU memory goes, before you own the GPU. Reads config.json
-- only. Exact: weights and KV bytes per token (per GPU under TP/PP). Estimates, said so:
-- activations, CUDA graphs, cuBLAS, NCCL. With --gpu-memory-gib (or the GPU present) it
-- sizes the KV cache in tokens and the maximum concurrency at --max-model-len, as vLLM does.
local args = require "lunar.args"
local lffi = require "lunar.ffi"
local model = require "lunar.model"
local util = require "lunar.util"
local commas = model.commas
local ffi, C = lffi.ffi, lffi.C

local GIB = 1024 ^ 3

-- The memory of GPU 0 when no --gpu-memory-gib is given.
local function local_gpu()
  if C.lunar_device_count() < 1 then return nil end
  local di = ffi.new("lunar_device_info_t")
  if C.lunar_device_get_info(0, di) ~= 0 then return nil end
  return tonumber(di.total_bytes), ffi.string(di.name)
end

local function gather(dir, o)
  local c, cfg = model.read_config(dir)
  if not c then return nil, cfg end
  local notes = {}
  local dtype, derr = model.resolve_dtype(o.dtype, c, "cuda")   -- logs float32 -> bfloat16
  if not dtype then return nil, derr end
  local tp, pp = o.tensor_parallel_size, o.pipeline_parallel_size
  local rep, err = model.parallel_check(c, tp, pp)
  if not rep then return nil, err end
  if rep ~= "" then notes[#notes + 1] = rep end
  local gpu_bytes, gpu_name
  if o.gpu_memory_gib then
    if o.gpu_memory_gib <= 0 then return nil, "--gpu-memory-gib must be positive" end
    gpu_bytes, gpu_name = math.floor(o.gpu_memory_gib * GIB), string.format("%g GiB (--gpu-memory-gib)", o.gpu_memory_gib)
  else
    gpu_bytes, gpu_name = local_gpu()
  end
  local u = o.gpu_memory_utilization
  if u <= 0 or u > 1 then return nil, "--gpu-memory-utilization must be in (0, 1]" end
  local plan, perr = model.memory_plan(c, {
    tp = tp, pp = pp, max_model_len = o.max_model_len, max_num_seqs = o.max_num_seqs,
    max_num_batched_tokens = o.max_num_batched_tokens, block_size = o.block_size, dtype = dtype,
    gpu_memory_bytes = gpu_bytes, gpu_memory_utilization = u,
    kv_cache_memory_bytes = o.kv_cache_memory_bytes, enforce_eager = o.enforce_eager,
  })
  if not plan then return nil, perr end
  plan.model = dir
  plan.architecture = cfg.architecture
  plan.dtype = dtype
  plan.gpu = gpu_name
  plan.notes = notes
  plan.data_parallel_size = o.data_parallel_size
  plan.num_layers, plan.num_kv_heads, plan.head_dim = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
  plan.max_stage_layers = 0
  for _, s in ipairs(plan.stages) do plan.max_stage_layers = math.max(plan.max_stage_layers, s.layers) end
  if plan.sized then
    local need = plan.max_model_len * plan.kv_bytes_per_token
    plan.fits = plan.kv_cache_bytes > 0 and plan.kv_cache_tokens >= plan.max_model_len
    if not plan.fits then
      plan.advice = string.format("one request of --max-model-len %d needs %s of KV cache per GPU, but %s is left: "
        .. "raise --gpu-memory-utilization, lower --max-model-len or --max-num-batched-tokens, or use more GPUs "
        .. "(--tensor-parallel-size)", plan.max_model_len, util.bytes(need),
        plan.kv_cache_bytes > 0 and util.bytes(plan.kv_cache_bytes) or "nothing")
    end
  end
  return plan
end

local function print_text(p)
  local out = {}
  local function line(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local gpus = p.tp * p.pp
  line("lunar memory: %s (%s), %s, %d GPU%s (tensor parallel %d x pipeline parallel %d), max_model_len %d",
    p.model, p.architecture, p.dtype, gpus, gpus == 1 and "" or "s", p.tp, p.pp, p.max_model_len)
  for _, n in ipairs(p.notes) do line("note: %s", n) end
  if p.data_parallel_size > 1 then
    line("note: --data-parallel-size %d runs %d copies of this plan: %d GPUs in all", p.data_parallel_size,
      p.data_parallel_size, p.data_parallel_size * gpus)
  end
  line("per GPU%s:", gpus > 1 and " (the fullest)" or "")
  local dsize = p.weight_bytes_total / p.params_total
  line("  %-26s %12s   exact: %s parameters x %d bytes%s", "weights", util.bytes(p.weight_bytes), commas(p.params_total),
    dsize, gpus > 1 and string.format(" = %s in all, split over %d GPUs", util.bytes(p.weight_bytes_total), gpus) or "")
  line("  %-26s %12s   estimate: one step of %d tokens, %d sequences", "activations", util.bytes(p.activation_bytes),
    p.max_num_batched_tokens, math.min(p.max_num_seqs, p.max_num_batched_tokens))
  if p.cuda_graph_bytes > 0 then
    line("  %-26s %12s   estimate: decode graphs up to batch %d", "CUDA graphs", util.bytes(p.cuda_graph_bytes),
      math.min(p.max_num_seqs, 512))
  else
    line("  %-26s %12s   --enforce-eager", "CUDA graphs", "0 B")
  end
  line("  %-26s %12s", "cuBLAS workspace", util.bytes(p.cublas_workspace_bytes))
  if p.nccl_bytes > 0 then line("  %-26s %12s   estimate", "NCCL buffers", util.bytes(p.nccl_bytes)) end
  line("  %-26s %12s   exact: 2 x %d layers x %d kv heads x %d head_dim x %d bytes%s", "KV cache per token",
    util.bytes(p.kv_bytes_per_token), p.max_stage_layers, p.kv_heads_per_gpu, p.head_dim, p.kv_bytes_per_token_total / (2 * p.num_layers * p.num_kv_heads * p.head_dim),
    gpus > 1 and string.format(" (whole model: %s)", util.bytes(p.kv_bytes_per_token_total)) or "")
  if p.pp > 1 then
    for i, s in ipairs(p.stages) do
      line("  stage %-20d layers %d-%d, weights %s", i - 1, s.first_layer, s.first_layer + s.layers - 1, util.bytes(s.weight_bytes))
    end
  end
  if p.sized then
    if p.gpu then
      line("GPU %s x utilization %.2f = %s for lunar:", p.gpu, p.gpu_memory_utilization,
        util.bytes(p.gpu_memory_bytes * p.gpu_memory_utilization))
    else
      line("KV cache given by --kv-cache-memory-bytes:")
    end
    line("  %-26s %12s   %s tokens = %s blocks of %d", "KV cache", util.bytes(math.max(p.kv_cache_bytes, 0)),
      commas(p.kv_cache_tokens), commas(p.kv_cache_blocks), p.block_size)
    line("  %-26s %11.2fx  requests of %d tokens at once", "maximum concurrency", p.max_concurrency, p.max_model_len)
    local used = p.weight_bytes + p.activation_bytes + p.cuda_graph_bytes + p.cublas_workspace_bytes + p.nccl_bytes
      + math.max(p.kv_cache_bytes, 0)
    line("  %-26s %12s   all of the above (nvidia-smi shows this plus the CUDA context)", "total", util.bytes(used))
    if not p.fits then line("does not fit: %s", p.advice) end
  else
    line("no GPU here: give --gpu-memory-gib G to size the KV cache (tokens, maximum concurrency)")
  end
  print(table.concat(out, "\n"))
end

local flags = args.join(args.engine_flags, {
  { name = "--gpu-memory-gib", type = "float", help = "plan for GPUs of this much memory (default: the GPU present)" },
  { name = "--json", type = "bool", default = false, help = "print one JSON object" },
})

return {
  summary = "plan GPU memory for a model: weights, activations, KV cache tokens, max concurrency",
  usage = "lunar memory MODEL [--gpu-memory-gib G] [--gpu-memory-utilization U] [--max-model-len N] "
    .. "[--tensor-parallel-size T] [--pipeline-parallel-size P] [--json]",
  flags = flags,
  epilog = [[
Exact: weights = parameters x dtype bytes, split as tensor parallelism splits each tensor (rows of
q/k/v/gate/up/lm_head, columns of o/down; norms whole on every GPU) and pipeline parallelism splits
the layers (vLLM's split; embedding on the first stage, lm_head on the last).
KV cache per token = 2 x layers x kv_heads x head_dim x dtype bytes, divided the same way (kv heads
replicated when tp > kv_heads).
Estimates (per GPU, T = --max-num-batched-tokens (default 8192), S = min(--max-num-seqs, T), b = dtype bytes):
  activations = 2*T*hidden*b + T*(heads+2*kv_heads)*head_dim*b + T*heads*head_dim*(b+4)
              + T*3*intermediate*b  (MoE: T*k*3*moe_intermediate*b + T*experts*4)  + 2*S*vocab*4
  CUDA graphs = the same at T = S = min(--max-num-seqs, 512);  cuBLAS 32 MiB;  NCCL 256 MiB when tp*pp > 1
KV cache = GPU memory x --gpu-memory-utilization - weights - activations - CUDA graphs - cuBLAS - NCCL,
in whole blocks; maximum concurrency = KV tokens / --max-model-len. A float32 checkpoint is planned in
bfloat16, as the GPU runs it (--dtype float32 keeps float32).]],
  gather = gather,
  run = function(o, pos)
    local dir = pos[1]
    if not dir or pos[2] then
      io.stderr:write("lunar memory: expected one MODEL folder (config.json is enough)\n")
      return 2
    end
    local plan, err = gather(dir, o)
    if not plan then
      io.stderr:write("lunar memory: ", err, "\n")
      return 1
    end
    if o.json then
      if #plan.notes == 0 then plan.notes = nil end   -- cjson writes an empty table as {}
      print(util.json.encode(plan))
    else
      print_text(plan)
    end
    if plan.sized and not plan.fits then return 1 end
    return 0
  end,
}
