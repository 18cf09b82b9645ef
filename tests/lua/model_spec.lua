-- lunar.model from Lua: loading a real folder, config as a table, tensors and files, errors as
-- nil + message, and the parameter counts / memory plan behind `lunar inspect` and `memory`.
local model = require "lunar.model"

local shared = os.getenv("LUNAR_SHARED") or "../shared"
local src = os.getenv("LUNAR_SRC") or "."

local function file_size(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

describe("lunar.model.load", function()
  it("loads TinyStories-656K with its config, tensors and file", function()
    local m = assert(model.load(shared .. "/models/TinyStories-656K"))
    assert.are.equal("LlamaForCausalLM", m.config.architecture)
    assert.are.equal(2, m.config.num_layers)
    assert.are.equal(4, m.config.num_kv_heads)
    assert.is_true(m.config.tie_word_embeddings)
    assert.are.same({ 2 }, m.config.eos_token_ids)
    assert.are.equal("bfloat16", m.dtype)
    assert.are.equal("safetensors", m.format)
    local ts = m:tensors()
    assert.are.equal(21, #ts)
    local by = {}
    for _, t in ipairs(ts) do by[t.name] = t end
    assert.are.same({ 384, 128 }, by["model.layers.0.mlp.gate_proj.weight"].shape)
    assert.are.equal(384 * 128 * 2, by["model.layers.0.mlp.gate_proj.weight"].nbytes)
    local files = m:files()
    assert.are.equal(1, #files)
    assert.are.equal(file_size(shared .. "/models/TinyStories-656K/model.safetensors"), files[1].size)
    m:free()
    m:free() -- twice is harmless
  end)

  it("returns nil and a message naming the folder for a missing one", function()
    local m, err = model.load("/no/such/model")
    assert.is_nil(m)
    assert.truthy(err:find("/no/such/model", 1, true))
  end)

  it("converts with --dtype and reports the held dtype", function()
    local m = assert(model.load(shared .. "/models/stories260K", { dtype = "float16" }))
    assert.are.equal("float16", m.dtype)
    assert.are.equal("float16", m:tensors()[1].dtype)
  end)

  it("describes an 8B model from config.json alone (dummy, config only)", function()
    local m = assert(model.load(src .. "/bench/configs/Llama-3-8B", { load_format = "dummy", config_only = true }))
    assert.are.equal("dummy", m.format)
    assert.are.equal(1 + 32 * 9 + 2, #m:tensors())
    assert.are.equal(0, #m:files())
    local pc = assert(model.param_count(m.cconfig))
    assert.are.equal(8030261248, pc.total)   -- transformers' count (tests/fixtures/model/reference.json)
    assert.are.equal(pc.total, pc.active)
  end)
end)

describe("lunar.model memory helpers", function()
  it("plans Llama-3-8B's KV bytes per token exactly", function()
    local c = assert(model.read_config(src .. "/bench/configs/Llama-3-8B"))
    local p = assert(model.memory_plan(c, { dtype = "bfloat16", kv_cache_memory_bytes = 2 ^ 30 }))
    assert.are.equal(2 * 32 * 8 * 128 * 2, p.kv_bytes_per_token)
    assert.are.equal(8192, p.kv_cache_tokens)
    assert.are.equal(8030261248 * 2, p.weight_bytes)
  end)

  it("explains a tensor-parallel size that does not divide", function()
    local c = assert(model.read_config(src .. "/bench/configs/Qwen2.5-7B"))
    local note, err = model.parallel_check(c, 8, 1)
    assert.is_nil(note)
    assert.truthy(err:find("use one of 1, 2, 4, 7, 14, 28", 1, true))
  end)

  it("runs float32 checkpoints in bfloat16 on a GPU, float32 on the CPU", function()
    local c = assert(model.read_config(src .. "/bench/configs/Baichuan-7B"))   -- torch_dtype float32
    assert.are.equal("bfloat16", model.resolve_dtype("auto", c, "cuda"))
    assert.are.equal("float32", model.resolve_dtype("auto", c, "cpu"))
    assert.are.equal("float16", model.resolve_dtype("half", c, "cuda"))
    assert.is_nil(model.resolve_dtype("int4", c, "cuda"))
  end)
end)
