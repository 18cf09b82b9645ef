-- SamplingParams: vLLM's fields and defaults, generation_config.json defaults, errors that
-- name the field, the C conversion; and the engine stepped from Lua with the fake model:
-- seeded sampling independent of the batch, Lua logits processors.
local sampling = require "lunar.sampling"
local engine = require "lunar.engine"

local SP = sampling.SamplingParams

describe("lunar.sampling.SamplingParams", function()
  it("has vLLM's defaults", function()
    local sp = assert(SP({}))
    assert.are.equal(1, sp.n)
    assert.are.equal(1.0, sp.temperature)
    assert.are.equal(1.0, sp.top_p)
    assert.are.equal(-1, sp.top_k)
    assert.are.equal(16, sp.max_tokens)
    assert.are.equal(1.0, sp.repetition_penalty)
    assert.is_true(sp.skip_special_tokens)
    assert.is_nil(sp.seed)
    assert.is_nil(sp.logprobs)
  end)

  it("takes generation_config.json's sampling keys as defaults, max_new_tokens as max_tokens", function()
    local d = assert(sampling.generation_defaults({ temperature = 0.6, top_p = 0.9, top_k = 20,
      max_new_tokens = 256, do_sample = true, eos_token_id = 2, repetition_penalty = 1.05 }))
    assert.are.same({ temperature = 0.6, top_p = 0.9, top_k = 20, max_tokens = 256,
      repetition_penalty = 1.05 }, d)
    local sp = assert(SP({ temperature = 0.2 }, d))
    assert.are.equal(0.2, sp.temperature) -- the request wins
    assert.are.equal(0.9, sp.top_p)
    assert.are.equal(256, sp.max_tokens)
  end)

  it("reads generation_config.json from a model folder", function()
    local dir = os.getenv("LUNAR_SHARED") .. "/models/stories260K"
    assert.are.same({}, assert(sampling.generation_defaults(dir))) -- it has no sampling keys
    assert.are.same({ 2 }, sampling.generation_eos(dir))
    assert.are.same({}, assert(sampling.generation_defaults("/nonexistent")))
  end)

  it("rejects invalid values naming the field", function()
    local sp, err = SP({ temperature = -1 })
    assert.is_nil(sp)
    assert.are.equal("temperature must be >= 0, got -1", err)
    _, err = SP({ top_p = 1.5 })
    assert.matches("top_p must be in %(0, 1%], got 1.5", err)
    _, err = SP({ max_tokens = 0 })
    assert.matches("max_tokens must be at least 1, got 0", err)
    _, err = SP({ n = 1.5 })
    assert.matches("n must be an integer, got 1.5", err)
    _, err = SP({ stop = { "a", 3 } })
    assert.matches("stop%[2%] must be a string", err)
    _, err = SP({ temprature = 0.5 })
    assert.matches("unknown field 'temprature' %(did you mean 'temperature'%?%)", err)
    _, err = SP({ logits_processors = { 1 } })
    assert.matches("logits_processors%[1%] must be a function", err)
  end)

  it("converts to the C struct, stop strings included", function()
    local sp = assert(SP({ temperature = 0, stop = "\n", stop_token_ids = { 7, 9 }, seed = 5,
      logprobs = 3, max_tokens = 8, ignore_eos = true }))
    local c = sp:to_c()
    assert.are.equal(0, c.temperature)
    assert.are.equal(1, c.num_stop)
    assert.are.equal("\n", require("ffi").string(c.stop[0]))
    assert.are.equal(2, c.num_stop_token_ids)
    assert.are.equal(9, c.stop_token_ids[1])
    assert.are.equal(1, c.has_seed)
    assert.are.equal(3, c.logprobs)
    assert.are.equal(-1, c.prompt_logprobs)
    assert.are.equal(1, c.ignore_eos)
    assert.are.equal(0, c.logits_hook)
  end)
end)

describe("lunar.engine stepped from Lua", function()
  local function make(opts)
    local fwd, model = assert(engine.fake_model(64, 128, 4, 1, 3))
    opts = opts or {}
    opts.num_blocks, opts.block_size, opts.max_model_len = 128, 4, 128
    opts.eos_token_ids, opts.stats_interval = { 1 }, 0
    local e = assert(engine.new(opts, fwd, engine.fake_detok(false)))
    e.model = model -- keep the fake model alive with the engine
    return e
  end

  it("gives a seeded request the same tokens alone and in a crowd", function()
    local sp = assert(SP({ temperature = 0.9, top_k = 10, seed = 42, max_tokens = 12, ignore_eos = true }))
    local e = make()
    local alone = assert(e:generate({ { 5, 6, 7, 8, 9 } }, sp))[1][1]
    local others = assert(SP({ temperature = 1.0, max_tokens = 20 }))
    for i = 1, 6 do e:submit({ 10 + i, 11, 12 }, others) end
    local crowd = assert(e:generate({ { 5, 6, 7, 8, 9 } }, sp))[1][1]
    assert.are.same(alone.token_ids, crowd.token_ids)
    assert.are.equal(12, #crowd.token_ids)
    assert.are.equal("length", crowd.finish_reason)
    assert.matches("^w%d+ ", crowd.text)
    e:close()
  end)

  it("runs a Lua logits processor on this thread, only for its request", function()
    local e = make()
    local seen = 0
    local function only_seven(output_ids, logits, vocab)
      seen = seen + 1
      assert.are.equal(64, vocab)
      assert.are.equal(seen - 1, #output_ids)
      for v = 0, vocab - 1 do logits[v] = (v == 7) and 10 or -10 end
    end
    local sp = assert(SP({ temperature = 0, max_tokens = 4, logits_processors = { only_seven } }))
    local plain = assert(SP({ temperature = 0, max_tokens = 4, ignore_eos = true }))
    local out = assert(e:generate({ { 3, 4, 5 } }, sp))
    assert.are.same({ 7, 7, 7, 7 }, out[1][1].token_ids)
    assert.are.equal(4, seen)
    local out2 = assert(e:generate({ { 3, 4, 5 } }, plain))
    assert.are_not.same({ 7, 7, 7, 7 }, out2[1][1].token_ids)
    assert.are.equal(4, seen)
    e:close()
  end)

  it("ends a sequence with finish_reason error when its processor raises", function()
    local e = make()
    local sp = assert(SP({ temperature = 0, max_tokens = 4,
      logits_processors = function() error("boom") end }))
    local out = assert(e:generate({ { 3, 4, 5 } }, sp))
    assert.are.equal("error", out[1][1].finish_reason)
    assert.are.same({}, out[1][1].token_ids)
    e:close()
  end)

  it("reports max_model_len as vLLM does", function()
    local e = make()
    local id, err = e:submit({ 3, 4, 5 }, assert(SP({ max_tokens = 200 })))
    assert.is_nil(id)
    assert.matches("maximum context length is 128 tokens. However, you requested 203 tokens", err)
    e:close()
  end)
end)

describe("lunar.engine.options", function()
  it("fills vLLM's defaults from the flags and the model config", function()
    local o = engine.options({ block_size = 16, max_num_seqs = 256, enable_chunked_prefill = true },
      { max_position_embeddings = 4096, eos_token_ids = { 2 } }, 1000, { 2, 7 })
    assert.are.equal(4096, o.max_model_len)
    assert.are.equal(2048, o.max_num_batched_tokens)
    assert.are.same({ 2, 7 }, o.eos_token_ids)
    assert.are.equal(1000, o.num_blocks)
    o = engine.options({ max_num_seqs = 8, enable_chunked_prefill = false, max_model_len = 6000 },
      { max_position_embeddings = 8192 }, 10)
    assert.are.equal(6000, o.max_num_batched_tokens)
    assert.is_false(o.enable_chunked_prefill)
    local c = assert(engine.config(o))
    assert.are.equal(0, c.enable_chunked_prefill)
    assert.are.equal(6000, c.max_model_len)
  end)
end)

describe("lunar.engine.prometheus", function()
  it("exports the stats under vLLM's metric names", function()
    local fwd, model = assert(engine.fake_model(64, 64, 4, -1, 3))
    local e = assert(engine.new({ num_blocks = 64, block_size = 4, max_model_len = 64, stats_interval = 0 }, fwd))
    assert(e:generate({ { 3, 4, 5 }, { 3, 4, 5 } }, assert(SP({ temperature = 0, max_tokens = 3 }))))
    local text = engine.prometheus(e:stats(), 'm"x')
    assert.matches('vllm:generation_tokens_total{model_name="m\\"x"} 6\n', text, 1, true)
    assert.matches('vllm:request_success_total{model_name="m\\"x",finished_reason="length"} 2\n', text, 1, true)
    assert.matches('vllm:time_to_first_token_seconds_count{model_name="m\\"x"} 2\n', text, 1, true)
    assert.matches('# TYPE vllm:e2e_request_latency_seconds histogram', text, 1, true)
    assert.matches('vllm:num_requests_running{model_name="m\\"x"} 0\n', text, 1, true)
    e:close()
    local _ = model
  end)
end)
