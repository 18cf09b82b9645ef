-- lunar.tokenizer from Lua: the binding's conventions (1-based arrays of 0-based ids, nil+err,
-- options tables) on the shared stories260K model, whose ids are checked against Hugging Face
-- in tests/c/test_tokenizer.c; here the reference is its fixture from Python tokenizers.
local T = require "lunar.tokenizer"
local cjson = require "cjson"

local shared = os.getenv("LUNAR_SHARED") or "../shared"
local src = os.getenv("LUNAR_SRC") or "."
local dir = shared .. "/models/stories260K"

local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("lunar.tokenizer", function()
  local tok = assert(T.load(dir))
  local corpus = cjson.decode(read(src .. "/tests/fixtures/tokenizer/corpus.json"))
  local ref = cjson.decode(read(src .. "/tests/fixtures/tokenizer/hf_stories260k.json"))

  it("loads a folder and exposes its special tokens", function()
    assert.are.equal(1, tok.bos_id)
    assert.are.equal(2, tok.eos_id)
    assert.are.same({ 2 }, tok.eos_ids)
    assert.is_true(tok.add_bos)
    assert.are.equal(512, tok.vocab_size)
    assert.matches("tokenizer.json", tok.description)
  end)

  it("returns nil and a message for a missing folder", function()
    local t, err = T.load("/nonexistent/model")
    assert.is_nil(t)
    assert.matches("no such folder", err)
  end)

  it("encodes the corpus to the reference ids, with and without special tokens", function()
    for i = 1, 60 do
      assert.are.same(ref.ids[i], tok:encode(corpus[i].text))
      assert.are.same(ref.ids_plain[i], tok:encode(corpus[i].text, { add_special_tokens = false }))
    end
  end)

  it("decodes with and without special tokens", function()
    local ids = tok:encode("Hello world")
    assert.are.equal("<s> Hello world", tok:decode(ids))
    assert.are.equal("Hello world", tok:decode(ids, { skip_special_tokens = true }))
  end)

  it("treats special-token strings as text when asked", function()
    assert.are.same({ 1 }, tok:encode("<s>", { add_special_tokens = false }))
    local plain = tok:encode("<s>", { add_special_tokens = false, split_special_tokens = true })
    assert.is_true(#plain > 1)
  end)

  it("reports invalid UTF-8 with its byte offset", function()
    local ids, err = tok:encode("abc\xff")
    assert.is_nil(ids)
    assert.matches("byte offset 3", err)
  end)

  it("maps ids and tokens both ways", function()
    assert.are.equal("<s>", tok:id_to_token(1))
    assert.are.equal(13, tok:token_to_id("<0x0A>"))
    assert.is_nil(tok:token_to_id("no such token"))
    assert.is_true(tok:is_special(1))
    assert.is_false(tok:is_special(300))
  end)

  it("encodes a batch on several threads like one by one", function()
    local texts = {}
    for i = 1, 50 do texts[i] = corpus[i].text end
    local out = tok:encode_batch(texts, { threads = 4 })
    for i = 1, 50 do assert.are.same(tok:encode(texts[i]), out[i]) end
  end)

  it("streams text whose concatenation is the decode of all ids", function()
    for i = 1, #corpus do
      local ids = tok:encode(corpus[i].text)
      local s = tok:stream { skip_special_tokens = true }
      local parts = {}
      for _, id in ipairs(ids) do parts[#parts + 1] = s:push(id) end
      parts[#parts + 1] = s:flush()
      assert.are.equal(tok:decode(ids, { skip_special_tokens = true }), table.concat(parts))
    end
  end)

  it("decodes generated ids in the prompt's context after prime", function()
    local prompt = tok:encode("Once upon a time", { add_special_tokens = true })
    local gen = tok:encode("there was a dog", { add_special_tokens = false }) -- "▁there ..."
    local all = {}
    for _, id in ipairs(prompt) do all[#all + 1] = id end
    for _, id in ipairs(gen) do all[#all + 1] = id end
    local s = tok:stream { skip_special_tokens = true }
    assert(s:prime(prompt))
    local parts = {}
    for _, id in ipairs(gen) do parts[#parts + 1] = s:push(id) end
    parts[#parts + 1] = s:flush()
    local full = tok:decode(all, { skip_special_tokens = true })
    assert.are.equal("Once upon a time there was a dog", full)
    assert.are.equal(" there was a dog", table.concat(parts))
  end)
end)
