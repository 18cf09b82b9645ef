-- tests/gpu/memory_startup.lua — issue 7's start-up memory on a real GPU, on the shape users ask
-- about ("why does a 14 GB model take 33 GB"): bench/configs/Llama-3-8B with dummy weights in
-- bfloat16 (8,030,261,248 parameters x 2 bytes = 14.96 GiB, the count transformers gives for
-- meta-llama/Meta-Llama-3-8B). Checks: the weights row is those bytes; the rows add up to at
-- most total x --gpu-memory-utilization and the KV cache takes what is left (vLLM's rule);
-- --kv-cache-memory-bytes overrides; --enforce-eager has no graph row; a budget short of one
-- sequence, and weights that do not fit, fail naming the flags to change.
-- Run: LUNAR_SRC=$PWD build-gpu/lunar run tests/gpu/memory_startup.lua (tests/gpu/run_backend.sh).
-- Prints "ok:"/"FAIL:" lines and the breakdowns (logged on stderr); exits 1 on any failure.
local runner = require "lunar.runner"
local model = require "lunar.model"
local lffi = require "lunar.ffi"

local GIB = 1024 ^ 3
local src = os.getenv("LUNAR_SRC") or "."
local fails = 0
local function check(ok, what)
  print((ok and "ok: " or "FAIL: ") .. what)
  if not ok then fails = fails + 1 end
end

lffi.C.lunar_log_set_level(0) -- the raw device readings behind each row ([memory] DEBUG lines)
local m = assert(model.load(src .. "/bench/configs/Llama-3-8B", { load_format = "dummy", dtype = "bfloat16", seed = 1 }))
local function new(extra)
  local o = { backend = "cuda", max_model_len = 8192, max_num_seqs = 256, max_num_batched_tokens = 2048,
              block_size = 16 }
  for k, v in pairs(extra) do o[k] = v end
  local r, err = runner.new(m, o)
  return r, err
end
local function rows_sum(mem) return mem.weights + mem.activations + mem.cuda_graphs + mem.other + mem.kv_cache end
local function gib(b) return string.format("%.2f GiB", b / GIB) end

-- 1. the default utilization
local r, err = new({ gpu_memory_utilization = 0.9 })
check(r ~= nil, "Llama-3-8B bf16 starts at --gpu-memory-utilization 0.9 " .. tostring(err or ""))
if r then
  local mem = r.memory
  local limit = mem.device_total * 0.9
  -- the matrices in bf16 and the runner's f32 copies of the 266,240 norm weights (32 x 2 x 4096 + 4096)
  check(mem.weights == (8030261248 - 266240) * 2 + 266240 * 4,
    "weights row = 8,029,995,008 x 2 + 266,240 x 4 bytes (" .. mem.weights .. " B, " .. gib(mem.weights) .. ")")
  check(mem.profiled == 1 and mem.profile_tokens == 2048 and mem.profile_seqs == 1,
    string.format("profiled the 2048-token step in one sequence (%d tokens, %d seqs)", mem.profile_tokens, mem.profile_seqs))
  check(mem.graph_seqs == math.min(256, mem.graph_seqs) and mem.graph_seqs >= 64,
    "captured a decode graph of min(--max-num-seqs 256, the backend's largest graph batch) sequences ("
    .. mem.graph_seqs .. ")")
  check(rows_sum(mem) <= limit, string.format("rows sum %s <= total x 0.9 = %s", gib(rows_sum(mem)), gib(limit)))
  check(limit - rows_sum(mem) < 16 * mem.kv_bytes_per_token,
    "the KV cache takes all that is left but less than a block: " .. gib(limit - rows_sum(mem)))
  check(mem.kv_tokens * mem.kv_bytes_per_token == mem.kv_cache and mem.kv_bytes_per_token == 131072,
    "KV = tokens x 128 KiB (2 x 32 layers x 8 kv heads x 128 x 2 B)")
  check(mem.activations < 4 * GIB, "activation peak " .. gib(mem.activations) .. " under 4 GiB at 2048 tokens")
  check(mem.device_used <= mem.device_total and mem.device_used >= rows_sum(mem) - 64 * 1024 ^ 2,
    string.format("device in use after the resize %s ~ the rows %s", gib(mem.device_used), gib(rows_sum(mem))))
  print(table.concat(mem.lines, "\n"))
  r:close()
end
collectgarbage()

-- 2. --kv-cache-memory-bytes overrides; 3. --enforce-eager: no graphs
r, err = new({ gpu_memory_utilization = 0.9, kv_cache_memory_bytes = 4 * GIB, enforce_eager = true })
check(r ~= nil, "--kv-cache-memory-bytes 4 GiB --enforce-eager starts " .. tostring(err or ""))
if r then
  check(r.memory.kv_cache == 4 * GIB, "KV cache = 4 GiB exactly (" .. r.memory.kv_cache .. " B)")
  check(r.memory.graph_seqs == 0 and r.memory.cuda_graphs == 0, "no graph row under --enforce-eager")
  print(table.concat(r.memory.lines, "\n"))
  r:close()
end
collectgarbage()

-- 4. short of one sequence: room for the weights and 0.3 GiB (less than activations, context
-- and one 1 GiB sequence need); 5. weights that do not fit: 10 GiB. Fractions of this GPU.
local di = lffi.ffi.new("lunar_device_info_t")
assert(lffi.C.lunar_device_get_info(0, di) == 0)
local total = tonumber(di.total_bytes)
r, err = new({ gpu_memory_utilization = (8030261248 * 2 + 0.3 * GIB) / total })
check(r == nil and err:match("no room in GPU memory for one sequence of %-%-max%-model%-len 8192")
  and err:match("Raise %-%-gpu%-memory%-utilization %(to at least") and err:match("%-%-max%-num%-batched%-tokens"),
  "weights + 0.3 GiB is short of one 8192-token sequence: " .. tostring(err))
collectgarbage()
r, err = new({ gpu_memory_utilization = 10 * GIB / total })
check(r == nil and err:match("the weights %(14%.96 GiB in bfloat16%) do not fit") and err:match("%-%-dtype"),
  "10 GiB of the GPU cannot hold the weights: " .. tostring(err))
m:free()
print(string.format("memory_startup: %d failed", fails))
os.exit(fails == 0 and 0 or 1)
