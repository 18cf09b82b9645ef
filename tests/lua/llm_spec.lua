-- The offline API on a real model (stories260K): RequestOutput fields, batching that changes
-- nothing, reproducible seeded sampling, stop strings, logprobs, n > 1, Lua logits
-- processors, and errors that name the field.
local lunar = require "lunar"

local MODEL = (os.getenv("LUNAR_SHARED") or "../shared") .. "/models/stories260K"

local function greedy(max_tokens, extra)
  local f = { temperature = 0, max_tokens = max_tokens }
  for k, v in pairs(extra or {}) do f[k] = v end
  return assert(lunar.SamplingParams(f))
end

describe("lunar.LLM", function()
  local llm
  setup(function()
    llm = assert(lunar.LLM{ model = MODEL, max_num_seqs = 64, num_threads = 2 })
  end)
  teardown(function() llm:close() end)

  it("generates the published greedy sample with every RequestOutput field", function()
    local outs = assert(llm:generate("Once upon a time", greedy(24)))
    assert.are.equal(1, #outs)
    local o = outs[1]
    assert.matches("^%d+$", o.request_id)
    assert.are.equal("Once upon a time", o.prompt)
    assert.are.equal(1, o.prompt_token_ids[1]) -- BOS added
    assert.is_true(o.finished)
    assert.are.equal(0, o.num_cached_tokens)
    local c = o.outputs[1]
    assert.are.equal(0, c.index)
    assert.matches("^, there was a little girl named Lily%. She loved to play outside", c.text)
    assert.are.equal(24, #c.token_ids)
    assert.are.equal("length", c.finish_reason)
    assert.is_nil(c.stop_reason)
    local m = o.metrics
    assert.is_true(m.arrival_time > 1.7e9) -- wall-clock seconds, as vLLM
    assert.is_true(m.first_scheduled_time >= m.arrival_time)
    assert.is_true(m.first_token_time >= m.first_scheduled_time)
    assert.is_true(m.last_token_time >= m.first_token_time)
    assert.is_true(m.finished_time >= m.last_token_time)
  end)

  it("gives every prompt of a 32-prompt batch exactly what it gives alone", function()
    local prompts = {}
    local words = { "The cat", "Once", "Tim and Sue", "A big dog", "The sun", "Lily", "One day", "Ben" }
    for i = 1, 32 do prompts[i] = words[(i - 1) % #words + 1] .. (" and"):rep(i % 4) end
    local batched = assert(llm:generate(prompts, greedy(20)))
    for i = 1, 32, 5 do
      local alone = assert(llm:generate(prompts[i], greedy(20)))
      assert.are.same(alone[1].outputs[1].token_ids, batched[i].outputs[1].token_ids)
    end
  end)

  it("reproduces seeded sampling across runs and batch compositions", function()
    local sp = assert(lunar.SamplingParams{ temperature = 0.9, top_p = 0.95, seed = 1234, max_tokens = 24 })
    local a = assert(llm:generate("The dog", sp))[1].outputs[1].token_ids
    local b = assert(llm:generate({ "Lily was", "The dog", "Once upon" }, sp))[2].outputs[1].token_ids
    assert.are.same(a, b)
    local other = assert(lunar.SamplingParams{ temperature = 0.9, top_p = 0.95, seed = 99, max_tokens = 24 })
    local c = assert(llm:generate("The dog", other))[1].outputs[1].token_ids
    assert.are_not.same(a, c)
  end)

  it("stops at a stop string and reports it", function()
    local o = assert(llm:generate("Once upon a time", greedy(40, { stop = { "park" } })))[1].outputs[1]
    assert.are.equal("stop", o.finish_reason)
    assert.are.equal("park", o.stop_reason)
    assert.is_nil(o.text:find("park", 1, true))
    assert.matches("play outside in the $", o.text)
    local o2 = assert(llm:generate("Once upon a time",
      greedy(40, { stop = { "park" }, include_stop_str_in_output = true })))[1].outputs[1]
    assert.matches("in the park$", o2.text)
  end)

  it("returns n completions with their indices", function()
    local sp = assert(lunar.SamplingParams{ n = 3, temperature = 1.0, seed = 7, max_tokens = 8 })
    local o = assert(llm:generate("Tom", sp))[1]
    assert.are.equal(3, #o.outputs)
    for i, c in ipairs(o.outputs) do
      assert.are.equal(i - 1, c.index)
      assert.are.equal(8, #c.token_ids)
    end
  end)

  it("reports logprobs whose sum is the cumulative logprob", function()
    local o = assert(llm:generate("Once upon a time", greedy(6, { logprobs = 2 })))[1].outputs[1]
    assert.are.equal(6, #o.logprobs)
    local sum = 0
    for k, entry in ipairs(o.logprobs) do
      local chosen = entry[o.token_ids[k]]
      assert.is_truthy(chosen)
      assert.are.equal(1, chosen.rank) -- greedy picks the top token
      assert.is_true(chosen.logprob <= 0)
      assert.is_string(chosen.decoded_token)
      sum = sum + chosen.logprob
    end
    assert.is_true(math.abs(sum - o.cumulative_logprob) < 1e-4)
  end)

  it("runs a Lua logits processor on the rows of its request only", function()
    local forced = 65
    local calls = 0
    local proc = function(ids, logits, vocab)
      calls = calls + 1
      for i = 0, vocab - 1 do logits[i] = (i == forced) and 0 or -math.huge end
    end
    local sp = assert(lunar.SamplingParams{ temperature = 0, max_tokens = 5, logits_processors = { proc } })
    local outs = assert(llm:generate({ "Hello", "Once upon a time" }, { sp, greedy(5) }))
    assert.are.same({ forced, forced, forced, forced, forced }, outs[1].outputs[1].token_ids)
    assert.are.equal(5, calls)
    assert.matches("^, there was", outs[2].outputs[1].text)
  end)

  it("rejects invalid sampling values naming the field", function()
    local sp, err = lunar.SamplingParams{ temperature = -1 }
    assert.is_nil(sp)
    assert.matches("temperature", err)
    sp, err = lunar.SamplingParams{ max_tokns = 3 }
    assert.is_nil(sp)
    assert.matches("did you mean 'max_tokens'", err)
  end)

  it("refuses a request longer than max_model_len with vLLM's message", function()
    local long = ("the cat sat on the mat . "):rep(100)
    local outs, err = llm:generate(long, greedy(10))
    assert.is_nil(outs)
    assert.matches("maximum context length is 512 tokens", err)
    -- and the engine still serves afterwards
    assert(llm:generate("Once", greedy(2)))
  end)

  it("rejects unknown options with a suggestion", function()
    local l, err = lunar.LLM{ model = MODEL, max_model_length = 10 }
    assert.is_nil(l)
    assert.matches("did you mean 'max_model_len'", err)
    l, err = lunar.LLM{ model = "/nonexistent/model" }
    assert.is_nil(l)
    assert.matches("/nonexistent/model", err)
  end)
end)
