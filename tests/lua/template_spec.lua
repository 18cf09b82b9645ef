-- lunar.template: template resolution in vLLM's order (flag file, inline flag, the model's own
-- template in its string or named-list form, a built-in by model_type, else a clear error),
-- rendering with transformers' variables (special tokens, tools, chat_template_kwargs,
-- continue_final_message), and LLM:chat on a real model through a built-in template.
local template = require "lunar.template"
local jinja = require "lunar.jinja"

local SRC = os.getenv("LUNAR_SRC") or "."
local MODEL = (os.getenv("LUNAR_SHARED") or "../shared") .. "/models/stories260K"

local tmp = os.tmpname()
os.remove(tmp)
local function mkdir(p) assert(os.execute("mkdir -p '" .. p .. "'")) end
local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

describe("template.resolve", function()
  setup(function() mkdir(tmp) end)
  teardown(function() os.execute("rm -rf '" .. tmp .. "'") end)

  it("reads --chat-template as a file when the file exists", function()
    write(tmp .. "/t.jinja", "{{ messages[0].content }}")
    local s, origin = template.resolve { chat_template = tmp .. "/t.jinja" }
    assert.are.equal("{{ messages[0].content }}", s)
    assert.are.equal(tmp .. "/t.jinja", origin)
  end)
  it("takes --chat-template as inline Jinja when it holds {{ or {%", function()
    local s, origin = template.resolve { chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}" }
    assert.matches("^{%% for", s)
    assert.are.equal("inline", origin)
  end)
  it("takes a built-in's name for --chat-template", function()
    local s, origin = template.resolve { chat_template = "llama-3" }
    assert.matches("templates/llama%-3%.jinja$", origin)
    assert.matches("start_header_id", s)
  end)
  it("refuses a --chat-template that is neither a file nor Jinja", function()
    local s, err = template.resolve { chat_template = "no/such/file.jinja" }
    assert.is_nil(s)
    assert.matches("no such file", err)
  end)
  it("uses tokenizer_config.json's chat_template string", function()
    mkdir(tmp .. "/m1")
    write(tmp .. "/m1/tokenizer_config.json", '{"chat_template": "A{{ bos_token }}", "bos_token": "<s>"}')
    local s, origin = template.resolve { model_dir = tmp .. "/m1", model_type = "llama" }
    assert.are.equal("A{{ bos_token }}", s)
    assert.matches("tokenizer_config.json$", origin)
  end)
  it("picks default or tool_use from the named-list form", function()
    mkdir(tmp .. "/m2")
    write(tmp .. "/m2/tokenizer_config.json",
      '{"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}')
    assert.are.equal("D", (template.resolve { model_dir = tmp .. "/m2" }))
    assert.are.equal("T", (template.resolve { model_dir = tmp .. "/m2", name = "tool_use" }))
    assert.are.equal("D", (template.resolve { model_dir = tmp .. "/m2", name = "rag" }))
  end)
  it("falls back to a built-in chosen by model_type", function()
    mkdir(tmp .. "/m3")
    write(tmp .. "/m3/tokenizer_config.json", '{"bos_token": {"content": "<|begin_of_text|>"}}')
    local s, origin = template.resolve { model_dir = tmp .. "/m3", model_type = "qwen2" }
    assert.matches("templates/chatml%.jinja$", origin)
    assert.matches("im_start", s)
    local _, o2 = template.resolve { model_dir = tmp .. "/m3", model_type = "llama" }
    assert.matches("templates/llama%-3%.jinja$", o2)
    local _, o3 = template.resolve { model_type = "baichuan" }
    assert.matches("templates/baichuan%.jinja$", o3)
  end)
  it("says what to pass when nothing matches", function()
    local s, err = template.resolve { model_dir = tmp, model_type = "gpt_neox" }
    assert.is_nil(s)
    assert.matches("%-%-chat%-template", err)
    assert.matches("gpt_neox", err)
  end)
  it("ships every built-in template the issue names, each compiling", function()
    for _, name in ipairs { "baichuan", "chatml", "llama-2", "llama-3", "mistral", "qwen3", "deepseek", "vicuna", "zephyr" } do
      local f = assert(io.open(SRC .. "/templates/" .. name .. ".jinja"))
      local t, err = jinja.compile(f:read("*a"), { name = name })
      f:close()
      assert(t, err)
    end
  end)
end)

describe("template.apply", function()
  local fake = { opts = { model = MODEL, chat_template = SRC .. "/templates/chatml.jinja" },
    model = { config = { model_type = "llama" } } }
  local conv = { { role = "system", content = "S" }, { role = "user", content = "Hi" } }

  it("renders with add_generation_prompt on by default", function()
    assert.are.equal("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
      template.apply(fake, conv, {}))
  end)
  it("leaves the assistant turn closed when add_generation_prompt is false", function()
    assert.are.equal("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
      template.apply(fake, conv, { add_generation_prompt = false }))
  end)
  it("puts the model's special tokens and chat_template_kwargs in scope", function()
    local out = assert(template.apply(fake, conv, {
      chat_template = "{{ bos_token }}|{{ eos_token }}|{{ flavour }}|{{ tools is none }}",
      chat_template_kwargs = { flavour = "mint" } }))
    assert.are.equal("<s>|</s>|mint|True", out)
  end)
  it("passes tools through", function()
    local out = assert(template.apply(fake, conv, { chat_template = "{{ tools | tojson }}",
      tools = { { type = "function", ["function"] = { name = "f" } } } }))
    assert.are.equal('[{"function": {"name": "f"}, "type": "function"}]', out)
  end)
  it("ends the prompt inside the last message with continue_final_message", function()
    local c = { { role = "user", content = "Hi" }, { role = "assistant", content = "Once upon" } }
    assert.are.equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      .. "<|im_start|>assistant\nOnce upon", template.apply(fake, c, { continue_final_message = true }))
    local out, err = template.apply(fake, c, { continue_final_message = true, add_generation_prompt = true })
    assert.is_nil(out)
    assert.matches("cannot both", err)
  end)
  it("treats a per-call chat_template as source, never as a path to read", function()
    local secret = os.tmpname()
    write(secret, "SECRET")
    local out = template.apply(fake, conv, { chat_template = secret })
    os.remove(secret)
    assert.are.equal(secret, out)
  end)
  it("returns the template's own error", function()
    local out, err = template.apply(fake, conv, { chat_template = "{{ raise_exception('no system role') }}" })
    assert.is_nil(out)
    assert.matches("no system role", err)
  end)
end)

describe("vLLM's message preprocessing", function()
  local F = require "template_fixtures"
  local V = jinja.value

  it("detects the content format of every fixture template as vLLM does (Jinja2 AST reference)", function()
    local n = 0
    for _, fx in ipairs(F.fixtures()) do
      local f = assert(io.open(F.template_path(V.dget(fx.data, "template"))))
      local t = assert(template.compile(f:read("*a"), fx.name))
      f:close()
      assert.are.equal(V.dget(fx.data, "content_format"), template.content_format(t), fx.name)
      n = n + 1
    end
    assert.is_true(n >= 30)
  end)
  it("joins text parts with newlines for string templates and keeps parts for openai ones", function()
    local msgs = { { role = "user", content = { { type = "text", text = "a" }, { type = "text", text = "b" } } },
      { role = "assistant", content = "x" } }
    local s = assert(template.parse_messages(msgs, "string"))
    assert.are.equal("a\nb", V.dget(s[1], "content"))
    local o = assert(template.parse_messages(msgs, "openai"))
    local parts = V.dget(o[2], "content")
    assert.are.equal(1, #parts)
    assert.are.equal("x", V.dget(parts[1], "text"))
  end)
  it("parses tool-call arguments given as JSON text, as vLLM does", function()
    local msgs = { { role = "assistant", content = V.NONE, tool_calls = { { id = "c1", type = "function",
      ["function"] = { name = "f", arguments = '{"x": 1}' } } } }, { role = "tool", tool_call_id = "c1", content = "2" } }
    local m = assert(template.parse_messages(msgs, "string"))
    assert.are.equal("", V.dget(m[1], "content"))
    local fn = V.dget(V.dget(m[1], "tool_calls")[1], "function")
    assert.are.equal(1, V.dget(V.dget(fn, "arguments"), "x"))
    assert.are.equal("c1", V.dget(m[2], "tool_call_id"))
  end)
  it("refuses messages without a role, with bad content or non-text parts", function()
    for _, case in ipairs {
      { { { content = "hi" } }, "message 1 has no role" },
      { { { role = "user", content = 5 } }, "content must be a string or a list" },
      { { { role = "user", content = { { type = "image_url", image_url = { url = "x" } } } } }, "text only" },
      { { "hello" }, "message 1 is not an object" },
    } do
      local m, err = template.parse_messages(case[1], "string")
      assert.is_nil(m)
      assert.matches(case[2], err, 1, true)
    end
  end)
end)

describe("LLM:chat", function()
  local lunar = require "lunar"
  local llm
  setup(function()
    llm = assert(lunar.LLM { model = MODEL, chat_template = "chatml", num_threads = 2 })
  end)
  teardown(function() if llm then llm:close() end end)
  local function greedy(n) return assert(lunar.SamplingParams { temperature = 0, max_tokens = n }) end

  it("renders through the built-in named by chat_template and generates greedily what generate() gives that prompt", function()
    local conv = { { role = "system", content = "You tell stories." }, { role = "user", content = "Once upon a time" } }
    local outs = assert(llm:chat(conv, greedy(12)))
    assert.are.equal(1, #outs)
    assert.are.equal("<|im_start|>system\nYou tell stories.<|im_end|>\n<|im_start|>user\n"
      .. "Once upon a time<|im_end|>\n<|im_start|>assistant\n", outs[1].prompt)
    local direct = assert(llm:generate({ outs[1].prompt }, greedy(12), { add_special_tokens = false }))
    assert.are.same(direct[1].prompt_token_ids, outs[1].prompt_token_ids)
    assert.are.same(direct[1].outputs[1].token_ids, outs[1].outputs[1].token_ids)
    assert.are.equal(direct[1].outputs[1].text, outs[1].outputs[1].text)
    -- the template's tokens are the prompt's: no BOS added in front of them (vLLM's chat)
    local want = assert(llm.tokenizer:encode(outs[1].prompt, { add_special_tokens = false }))
    assert.are.same(want, outs[1].prompt_token_ids)
  end)
  it("takes a list of conversations, and content as a list of text parts", function()
    local outs = assert(llm:chat({ { { role = "user", content = "Lily" } },
      { { role = "user", content = { { type = "text", text = "Li" }, { type = "text", text = "ly" } } } } }, greedy(4)))
    assert.are.equal(2, #outs)
    assert.matches("user\nLily<|im_end|>", outs[1].prompt, 1, true)
    assert.matches("user\nLi\nly<|im_end|>", outs[2].prompt, 1, true)
  end)
  it("uses a per-call chat_template as template source", function()
    local outs = assert(llm:chat({ { role = "user", content = "Lily" } }, greedy(4), { chat_template = "{{ messages[0].content }} went" }))
    assert.are.equal("Lily went", outs[1].prompt)
  end)
  it("refuses bad messages with a clear error", function()
    for _, case in ipairs {
      { {}, "messages must be a non-empty list" },
      { { { content = "no role" } }, "message 1 has no role" },
      { { { role = "user", content = 42 } }, "content must be a string or a list of parts" },
      { { { role = "user", content = { { type = "image_url" } } } }, "text only" },
    } do
      local outs, err = llm:chat(case[1], greedy(2))
      assert.is_nil(outs)
      assert.matches(case[2], err, 1, true)
    end
    local outs, err = llm:chat({ { role = "user", content = "x" } }, greedy(2),
      { chat_template = "{% if messages[0].role == 'user' %}{{ raise_exception('system first') }}{% endif %}" })
    assert.is_nil(outs)
    assert.matches("system first", err, 1, true)
    assert.matches("1:", err, 1, true)
  end)
end)
