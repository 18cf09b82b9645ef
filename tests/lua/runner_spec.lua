-- The start-up memory breakdown and KV sizing of lunar.runner: on the CPU (stories260K) the
-- printed numbers agree with each other and with config.json's shapes, --kv-cache-memory-bytes
-- overrides, the profiled start-up (create small, profile, resize: the CUDA path) decodes as a
-- runner created at its final size; vLLM's GPU rule and its failure messages on given numbers
-- (the GPU itself is tests/gpu/run_backend.sh's).
local lunar = require "lunar"
local runner = require "lunar.runner"
local model = require "lunar.model"

local MODEL = (os.getenv("LUNAR_SHARED") or "../shared") .. "/models/stories260K"
local GIB = 1024 ^ 3
local PER_TOKEN = 2 * 5 * 4 * 8 * 4 -- 2 x layers x kv heads x head_dim x f32, from config.json

local function greedy(max_tokens)
  return assert(lunar.SamplingParams{ temperature = 0, max_tokens = max_tokens })
end

local function find(lines, pat)
  for _, l in ipairs(lines) do if l:match(pat) then return l end end
end

-- the value of a "  name   X.XX GiB" row, in GiB
local function row_gib(lines, name)
  local l = assert(find(lines, "^  " .. name .. " "), "no row " .. name)
  return tonumber(l:match("(%d+%.%d+) GiB"))
end

describe("lunar.runner memory breakdown (cpu)", function()
  local m
  setup(function() m = assert(model.load(MODEL)) end)
  teardown(function() m:free() end)

  it("prints KV tokens x bytes per token = KV bytes and concurrency = tokens / max_model_len", function()
    local r = assert(runner.new(m, { max_model_len = 256, max_num_seqs = 8, max_num_batched_tokens = 64,
                                     num_threads = 2, kv_cache_memory_bytes = 1000000 }))
    local mem = r.memory
    assert.are.equal(PER_TOKEN, mem.kv_bytes_per_token)
    assert.are.equal(math.floor(1000000 / (PER_TOKEN * 16)) * 16, mem.kv_tokens) -- whole blocks: 768
    assert.are.equal(mem.kv_tokens * PER_TOKEN, mem.kv_cache)
    assert.is_true(mem.kv_cache <= 1000000)
    local kv = assert(find(mem.lines, "^  KV cache"))
    assert.matches("= 768 tokens x 1,280 bytes per token %(48 blocks of 16%)", kv)
    assert.near(mem.kv_cache / GIB, tonumber(kv:match("(%d+%.%d+) GiB")), 0.005)
    assert.truthy(find(mem.lines, "^  maximum concurrency for 256 tokens per request: 3%.00x$"))
    assert.truthy(find(mem.lines, "^  weights .* in host memory"))
    assert.truthy(find(mem.lines, "^  activation peak .* step buffers for 64 tokens"))
    assert.truthy(find(mem.lines, "^  CUDA graphs .* none on the cpu"))
    assert.truthy(find(mem.lines, "^  other .* not measured on the cpu"))
    assert.truthy(find(mem.lines, "from %-%-kv%-cache%-memory%-bytes"))
    r:close()
  end)

  it("sizes the cpu cache at max_num_seqs x max_model_len unless --kv-cache-memory-bytes overrides", function()
    local base = { max_model_len = 128, max_num_seqs = 4, max_num_batched_tokens = 64, num_threads = 2 }
    local r = assert(runner.new(m, base))
    assert.are.equal(4 * 128, r.memory.kv_tokens)
    assert.truthy(find(r.memory.lines, "maximum concurrency for 128 tokens per request: 4%.00x"))
    r:close()
    base.kv_cache_memory_bytes = 20 * 16 * PER_TOKEN
    r = assert(runner.new(m, base))
    assert.are.equal(20 * 16, r.memory.kv_tokens)
    assert.are.equal(20, r.num_blocks)
    r:close()
  end)

  it("profiles, then resizes the cache to the budget (the CUDA start-up, run on the cpu)", function()
    local r = assert(runner.new(m, { max_model_len = 128, max_num_seqs = 4, max_num_batched_tokens = 256,
                                     num_threads = 2, kv_cache_memory_bytes = 30 * 16 * PER_TOKEN, profile = true }))
    assert.are.equal(1, r.memory.profiled)
    assert.are.equal(256, r.memory.profile_tokens) -- 256 tokens in sequences of max_model_len 128
    assert.are.equal(2, r.memory.profile_seqs)
    assert.are.equal(30, r.num_blocks) -- profiled with profile_blocks' 16, then resized
    assert.are.equal(16, runner.profile_blocks({ max_model_len = 128, max_num_seqs = 4, max_num_batched_tokens = 256 }))
    assert.truthy(find(r.memory.lines, "profiled a step of 256 tokens in 2 sequences"))
    assert.are.equal(0, r:tokens_computed())
    r:close()
  end)

  it("decodes greedily after the resize exactly as a runner created at that size", function()
    local opts = { model = MODEL, max_model_len = 256, max_num_seqs = 4, max_num_batched_tokens = 64,
                   num_threads = 2, kv_cache_memory_bytes = 40 * 16 * PER_TOKEN }
    local plain = assert(lunar.LLM(opts))
    local want = assert(plain:generate({ "Once upon a time", "The cat" }, greedy(40)))
    plain:close()
    opts._profile_memory = true
    local resized = assert(lunar.LLM(opts))
    assert.are.equal(1, resized.runner.memory.profiled)
    assert.are.equal(40, resized.runner.num_blocks)
    local got = assert(resized:generate({ "Once upon a time", "The cat" }, greedy(40)))
    resized:close()
    for i = 1, 2 do assert.are.same(want[i].outputs[1].token_ids, got[i].outputs[1].token_ids) end
    assert.matches("^, there was a little girl named Lily", got[1].outputs[1].text)
  end)

  it("refuses bad values with the flag to change", function()
    local base = { max_model_len = 256, max_num_seqs = 4, max_num_batched_tokens = 64, num_threads = 2 }
    local function try(extra)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      local r, err = runner.new(m, o)
      assert.is_nil(r)
      return err
    end
    assert.matches("%-%-gpu%-memory%-utilization 0 must be in %(0, 1%]", try({ gpu_memory_utilization = 0 }))
    assert.matches("%-%-gpu%-memory%-utilization 1%.5 must be in", try({ gpu_memory_utilization = 1.5 }))
    assert.matches("%-%-kv%-cache%-memory%-bytes %-1 must be positive", try({ kv_cache_memory_bytes = -1 }))
    assert.matches("%-%-max%-num%-seqs 0 must be >= 1", try({ max_num_seqs = 0 }))
    assert.matches("%-%-max%-num%-batched%-tokens 0 must be >= 1", try({ max_num_batched_tokens = 0 }))
    assert.matches("%-%-block%-size 0 must be >= 1", try({ block_size = 0 }))
    local err = try({ kv_cache_memory_bytes = 10 * 16 * PER_TOKEN })
    assert.matches("fewer than one sequence of max_model_len 256", err)
    assert.matches("raise %-%-kv%-cache%-memory%-bytes or lower %-%-max%-model%-len", err)
    err = try({ kv_cache_memory_bytes = 10 * 16 * PER_TOKEN, profile = true })
    assert.matches("%-%-kv%-cache%-memory%-bytes 204800 holds 160 tokens", err)
    assert.matches("at least 327680 or lower %-%-max%-model%-len", err)
    local l, lerr = lunar.LLM{ model = MODEL, kv_cache_memory_bytes = 1000, num_threads = 2 }
    assert.is_nil(l)
    assert.matches("%-%-kv%-cache%-memory%-bytes", lerr)
  end)
end)

describe("lunar.runner GPU sizing (vLLM's rule, on given numbers)", function()
  -- an 80 GiB GPU after the profile: 14 GiB weights, 1 GiB activations, 0.5 GiB other
  local function mem(t)
    local base = { device_total = 80 * GIB, device_used = 0, weights = 14 * GIB, activations = 1 * GIB,
                   cuda_graphs = 0, other = GIB / 2, kv_cache = 0, kv_bytes_per_token = 128 * 1024,
                   num_kv_blocks = 16, block_size = 16, profiled = 1, profile_tokens = 2048, profile_seqs = 1,
                   graph_seqs = 64 }
    for k, v in pairs(t or {}) do base[k] = v end
    return base
  end

  it("gives the KV cache total x utilization less everything else in use", function()
    local o = { gpu_memory_utilization = 0.9, max_model_len = 8192 }
    local blocks, source = runner.size_kv(mem(), o)
    assert.are.equal("utilization", source)
    local want = math.floor((80 * 0.9 - 15.5) * GIB / (128 * 1024 * 16)) -- 56.5 GiB of 2 MiB blocks
    assert.are.equal(want, blocks)
    local m = mem({ num_kv_blocks = blocks, kv_cache = blocks * 16 * 128 * 1024 })
    m.kv_tokens = blocks * 16
    local lines = runner.breakdown_lines(m, { device_name = "H100", dtype = "bfloat16", kv_source = source,
      gpu_memory_utilization = 0.9, max_model_len = 8192, max_num_batched_tokens = 2048 })
    assert.matches("H100%): 80%.00 GiB x gpu_memory_utilization 0%.90 = 72%.00 GiB for lunar:", lines[1])
    local sum = row_gib(lines, "weights") + row_gib(lines, "activation peak") + row_gib(lines, "CUDA graphs")
      + row_gib(lines, "other") + row_gib(lines, "KV cache")
    assert.is_true(sum <= 72.005)
    assert.near(72, sum, 0.02)
    assert.truthy(find(lines, string.format("maximum concurrency for 8192 tokens per request: %.2fx",
      blocks * 16 / 8192)))
    assert.truthy(find(lines, "CUDA graphs .* decode graph of 64 sequences"))
    assert.truthy(find(lines, "other .* CUDA context, cuBLAS, other processes"))
  end)

  it("lets --kv-cache-memory-bytes override the budget", function()
    local blocks, source = runner.size_kv(mem(), { gpu_memory_utilization = 0.9, max_model_len = 8192,
                                                   kv_cache_memory_bytes = 4 * GIB })
    assert.are.equal("bytes", source)
    assert.are.equal(2048, blocks) -- 4 GiB / (128 KiB x 16)
  end)

  it("says what to raise or lower when one sequence does not fit", function()
    -- 60 GiB weights + 8 GiB activations + 1 GiB other = 69 GiB of 72: 3 GiB < 4 GiB for 32768 tokens
    local blocks, err = runner.size_kv(mem({ weights = 60 * GIB, activations = 8 * GIB, other = GIB }),
      { gpu_memory_utilization = 0.9, max_model_len = 32768, max_num_batched_tokens = 8192, max_num_seqs = 256,
        dtype = "bfloat16" })
    assert.is_nil(blocks)
    assert.matches("one sequence of %-%-max%-model%-len 32768", err)
    assert.matches("80%.00 GiB x %-%-gpu%-memory%-utilization 0%.90 = 72%.00 GiB, less weights 60%.00 GiB, "
      .. "activation peak 8%.00 GiB", err)
    assert.matches("leaves 3%.00 GiB for the KV cache = 24576 tokens", err)
    assert.matches("Raise %-%-gpu%-memory%-utilization %(to at least 0%.92%)", err) -- (69 + 4) / 80 = 0.9125
    assert.matches("lower %-%-max%-model%-len %(at most 24576 fits%)", err)
    assert.matches("%-%-max%-num%-batched%-tokens %(8192%) or %-%-max%-num%-seqs %(256%)", err)
    assert.matches("smaller %-%-dtype %(now bfloat16%)", err)
  end)

  it("refuses weights that do not fit, naming --dtype and --gpu-memory-utilization", function()
    local o = { gpu_memory_utilization = 0.9, dtype = "float32" }
    assert.is_nil(runner.check_weights_fit(14 * GIB, 80 * GIB, 79 * GIB, o, "H100"))
    local err = runner.check_weights_fit(75 * GIB, 80 * GIB, 79 * GIB, o, "H100")
    assert.matches("the weights %(75%.00 GiB in float32%) do not fit", err)
    assert.matches("allows 72%.00 GiB", err)
    assert.matches("smaller %-%-dtype", err)
    assert.matches("%-%-gpu%-memory%-utilization", err)
    assert.truthy(runner.check_weights_fit(30 * GIB, 80 * GIB, 20 * GIB, o, "H100")) -- other processes
  end)
end)
