-- lunar.template: which chat template a model uses, and rendering a conversation with it, as
-- vLLM and transformers' apply_chat_template do.
--
-- Resolution order (vLLM's): --chat-template FILE_OR_INLINE; else the model's own template
-- (chat_template.jinja beside the weights, else tokenizer_config.json's `chat_template`, a string
-- or the named list form [{name = "default"|"tool_use", template = ...}]); else a built-in from
-- templates/ chosen by config.json's model_type; else an error saying what to pass.
-- Rendering passes messages, tools, documents, add_generation_prompt, the special-token strings
-- (bos_token, eos_token, ...) and chat_template_kwargs, as transformers does.
local jinja = require "lunar.jinja"
local json = require "lunar.jinja.json"
local util = require "lunar.util"
local V = jinja.value

local M = {}

-- model_type -> built-in template (templates/<name>.jinja). llama is decided by its tokenizer.
M.builtin_for_type = {
  baichuan = "baichuan", qwen = "chatml", qwen2 = "chatml", qwen2_moe = "chatml",
  qwen3 = "qwen3", qwen3_moe = "qwen3", mistral = "mistral", mixtral = "mistral",
  deepseek = "deepseek", deepseek_v2 = "deepseek", deepseek_v3 = "deepseek",
  llama = "llama-2", vicuna = "vicuna", zephyr = "zephyr",
}

-- the repository root (templates/ lives there), found from this module's path
function M.root()
  local path = package.searchpath("lunar.template", package.path) or "lua/lunar/template.lua"
  local root = path:gsub("/?lua/lunar/template%.lua$", "")
  return root == "" and "." or root
end

function M.builtin_path(name) return M.root() .. "/templates/" .. name .. ".jinja" end

local function looks_inline(s) return s:find("{%", 1, true) or s:find("{{", 1, true) end

-- the model's tokenizer_config.json as engine values (order kept)
local function tokenizer_config(dir)
  if not dir then return nil end
  local path = dir .. "/tokenizer_config.json"
  if not util.file_exists(path) then return nil end
  return json.read(path)
end

-- the template a tokenizer_config's chat_template field names: string, or list of {name, template}
local function pick_named(ct, name)
  if type(ct) == "string" then return ct end
  if not V.is_seq(ct) then return nil end
  local by = {}
  for _, e in ipairs(ct) do
    if V.is_map(e) then by[V.dget(e, "name") or ""] = V.dget(e, "template") end
  end
  return by[name or "default"] or by.default
end

-- resolve{chat_template=, model_dir=, model_type=, name="default"|"tool_use"|nil}
--   -> source, origin | nil, err   (origin: the file, "inline", or templates/NAME.jinja for a built-in)
-- chat_template (the --chat-template flag) is a file, else inline Jinja, else the name of a
-- built-in (templates/<name>.jinja: "chatml", "llama-3"...; a lunar extension to vLLM's flag).
-- model_type defaults to config.json's in model_dir.
function M.resolve(o)
  local flag = o.chat_template
  if flag and flag ~= "" then
    if util.file_exists(flag) then
      local s, err = util.read_file(flag)
      if not s then return nil, "chat template " .. flag .. ": " .. tostring(err) end
      return s, flag
    end
    if looks_inline(flag) then return flag, "inline" end
    if flag:match("^[%w_.-]+$") and util.file_exists(M.builtin_path(flag)) then
      return util.read_file(M.builtin_path(flag)), "templates/" .. flag .. ".jinja"
    end
    return nil, string.format("chat template %q: no such file, not inline Jinja (no '{{' or '{%%') "
      .. "and not a built-in name (templates/*.jinja)", flag)
  end
  local dir = o.model_dir
  local mt = o.model_type
  if dir then
    local jpath = dir .. "/chat_template.jinja"
    if util.file_exists(jpath) then return util.read_file(jpath), jpath end
    local cfg, err = tokenizer_config(dir)
    if cfg == nil and err then return nil, err end
    local ct = cfg and V.dget(cfg, "chat_template")
    local s = ct and pick_named(ct, o.name)
    if type(s) == "string" then return s, dir .. "/tokenizer_config.json" end
    if mt == nil and util.file_exists(dir .. "/config.json") then
      local mc = json.read(dir .. "/config.json")
      mt = V.is_map(mc) and V.dget(mc, "model_type") or nil
    end
  end
  local builtin = type(mt) == "string" and M.builtin_for_type[mt]
  if mt == "llama" and dir then
    local cfg = tokenizer_config(dir)
    local bos = cfg and V.dget(cfg, "bos_token")
    if V.is_map(bos) then bos = V.dget(bos, "content") end
    if bos == "<|begin_of_text|>" then builtin = "llama-3" end
  end
  if builtin then
    local path = M.builtin_path(builtin)
    local s, err = util.read_file(path)
    if not s then return nil, "built-in chat template " .. path .. ": " .. tostring(err) end
    return s, "templates/" .. builtin .. ".jinja" -- not the install path: it names errors sent to clients
  end
  return nil, string.format("%s has no chat template: pass --chat-template FILE (or inline Jinja, or a "
    .. "built-in name); it has no chat_template in tokenizer_config.json and no built-in matches "
    .. "model_type %s (built-ins: templates/*.jinja)", dir or "the model", tostring(mt))
end

local TOKEN_KEYS = { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
  "mask_token" }

-- special-token strings for the render scope, from special_tokens_map.json then
-- tokenizer_config.json (values are strings or {content = ...} objects)
function M.special_tokens(dir)
  local out = {}
  if not dir then return out end
  for _, f in ipairs { "special_tokens_map.json", "tokenizer_config.json" } do
    local path = dir .. "/" .. f
    local cfg = util.file_exists(path) and json.read(path)
    if cfg and V.is_map(cfg) then
      for _, k in ipairs(TOKEN_KEYS) do
        local v = V.dget(cfg, k)
        if V.is_map(v) then v = V.dget(v, "content") end
        if type(v) == "string" then out[k] = v end
      end
      local extra = V.dget(cfg, "additional_special_tokens")
      if V.is_seq(extra) and not out.additional_special_tokens then
        local l = V.list()
        for i, t in ipairs(extra) do l[i] = V.is_map(t) and V.dget(t, "content") or t end
        out.additional_special_tokens = l
      end
    end
  end
  return out
end

-- compiled templates by source, so a server compiles each template once (bounded: a caller may
-- send a different inline template with every request)
local compiled_by_src = {}
local ncompiled = 0
function M.compile(source, origin)
  local t = compiled_by_src[source]
  if t then return t end
  local err
  t, err = jinja.compile(source, { name = origin or "chat template" })
  if not t then return nil, err end
  if ncompiled > 64 then compiled_by_src, ncompiled = {}, 0 end
  compiled_by_src[source] = t
  ncompiled = ncompiled + 1
  return t
end

-- ---- vLLM's message preprocessing ---------------------------------------------------------

-- every node of a parsed template (depth first)
local function walk(node, fn)
  if type(node) ~= "table" then return end
  if node.k then fn(node) end
  for k, v in pairs(node) do
    if k ~= "pos" and type(v) == "table" then walk(v, fn) end
  end
end

-- vLLM's _is_var_or_elems_access: `name`, `name.key` / `name['key']`, through filters, tests
-- and slices
local function accesses(node, var, key)
  if node.k == "filter" or node.k == "test" then return accesses(node.a, var, key) end
  if node.k == "slice" then return accesses(node.o, var, key) end
  if key then
    if node.k == "getattr" then return node.n == key and node.o.k == "name" and node.o.n == var end
    if node.k == "getitem" then
      return node.i.k == "lit" and node.i.v == key and node.o.k == "name" and node.o.n == var
    end
    return false
  end
  return node.k == "name" and node.n == var
end

-- "openai" when the template loops over a message's content (for part in message['content']),
-- else "string": vLLM's content-format detection (chat_utils._detect_content_format), which
-- follows names assigned from `messages` and loops over them to find the message variables
function M.content_format(tpl)
  if tpl._content_format then return tpl._content_format end
  tpl._content_format = M.detect_content_format(tpl)
  return tpl._content_format
end

function M.detect_content_format(tpl)
  local sets, fors = {}, {}
  walk(tpl.ast, function(n)
    if n.k == "set" and n.target.k == "name" then sets[#sets + 1] = n end
    if n.k == "for" then fors[#fors + 1] = n end
  end)
  local msg_vars, queue, seen = {}, { "messages" }, { messages = true }
  while #queue > 0 do
    local var = table.remove(queue, 1)
    msg_vars[#msg_vars + 1] = var
    for _, n in ipairs(sets) do
      if accesses(n.e, var) and not seen[n.target.n] then
        seen[n.target.n] = true
        queue[#queue + 1] = n.target.n
      end
    end
  end
  local item_vars = {}
  for _, f in ipairs(fors) do
    for _, var in ipairs(msg_vars) do
      if f.target.k == "name" and accesses(f.iter, var) then item_vars[#item_vars + 1] = f.target.n break end
    end
  end
  for _, f in ipairs(fors) do
    for _, var in ipairs(item_vars) do
      if accesses(f.iter, var, "content") then return "openai" end
    end
  end
  return "string"
end

local function get(m, k)
  if V.is_map(m) then return V.dget(m, k) end
  return m[k]
end

-- the conversation as vLLM hands it to the template (chat_utils.parse_chat_messages): content
-- as one string (text parts joined by "\n") or, for "openai" templates, a list of
-- {type = "text", text = ...} parts; role, content, then tool_calls (assistant, with string
-- arguments parsed to objects), tool_call_id (tool), name and reasoning_content when given.
function M.parse_messages(messages, format)
  messages = V.from_lua(messages)
  if not V.is_seq(messages) or #messages == 0 then return nil, "messages must be a non-empty list" end
  local out = V.list()
  for i, m in ipairs(messages) do
    if not V.is_map(m) then return nil, string.format("message %d is not an object", i) end
    local role, content = get(m, "role"), get(m, "content")
    if type(role) ~= "string" then return nil, string.format("message %d has no role", i) end
    local parts = {}
    if type(content) == "string" then parts = { content }
    elseif V.is_seq(content) then
      for j, p in ipairs(content) do
        local ptype = V.is_map(p) and get(p, "type")
        if type(p) == "string" then parts[#parts + 1] = p
        elseif ptype == "text" or ptype == "input_text" or ptype == "output_text" or ptype == "refusal" then
          local text = get(p, "text") or get(p, "refusal")
          if type(text) ~= "string" then return nil, string.format("message %d part %d has no text", i, j) end
          parts[#parts + 1] = text
        else
          return nil, string.format("message %d part %d: content part type %s is not supported (text only)",
            i, j, V.repr(ptype or V.NONE))
        end
      end
    elseif content ~= nil and content ~= V.NONE then
      return nil, string.format("message %d: content must be a string or a list of parts", i)
    end
    local msg = V.dict()
    V.dset(msg, "role", role)
    if format == "openai" then
      local l = V.list()
      for j, t in ipairs(parts) do
        local d = V.dict()
        V.dset(d, "type", "text")
        V.dset(d, "text", t)
        l[j] = d
      end
      V.dset(msg, "content", l)
    else
      V.dset(msg, "content", table.concat(parts, "\n"))
    end
    local calls = get(m, "tool_calls")
    if role == "assistant" and V.is_seq(calls) then
      for j, c in ipairs(calls) do
        local fn = V.is_map(c) and get(c, "function")
        if V.is_map(fn) then
          local args = get(fn, "arguments")
          if type(args) == "string" and args ~= "" then
            local parsed, err = json.decode(args)
            if parsed == nil then return nil, string.format("message %d tool call %d: arguments: %s", i, j, err) end
            V.dset(fn, "arguments", parsed)
          elseif args == nil or args == V.NONE or args == "" then
            V.dset(fn, "arguments", V.dict())
          end
        end
      end
      V.dset(msg, "tool_calls", calls)
    end
    local id = get(m, "tool_call_id")
    if role == "tool" and id ~= nil then V.dset(msg, "tool_call_id", id) end
    local name = get(m, "name")
    if name ~= nil then V.dset(msg, "name", name) end
    local reasoning = get(m, "reasoning_content") or get(m, "reasoning")
    if reasoning ~= nil and reasoning ~= V.NONE then V.dset(msg, "reasoning_content", reasoning) end
    out[i] = msg
  end
  return out
end

-- render(source_or_template, vars, o) with transformers' continue_final_message handling
-- messages/tools may be engine values (from lunar.jinja.json) or plain Lua tables.
function M.render(tpl, messages, o)
  o = o or {}
  local add_gen = o.add_generation_prompt
  if add_gen == nil then add_gen = true end
  if o.continue_final_message and add_gen and o.add_generation_prompt ~= nil then
    return nil, "continue_final_message and add_generation_prompt cannot both be set"
  end
  if o.continue_final_message then add_gen = false end
  local vars = {}
  for k, v in pairs(o.special_tokens or {}) do vars[k] = v end
  vars.messages = V.from_lua(messages)
  vars.tools = o.tools and V.from_lua(o.tools) or V.NONE
  vars.documents = o.documents and V.from_lua(o.documents) or V.NONE
  vars.add_generation_prompt = add_gen
  if o.chat_template_kwargs then
    local kw = o.chat_template_kwargs
    if V.is_map(kw) then
      for _, k in ipairs(kw.keys) do vars[k] = kw.map[k] end
    else
      for k, v in pairs(kw) do vars[k] = v end
    end
  end
  local text, err = tpl:render(vars, { max_output = o.max_output })
  if not text then return nil, err end
  if o.continue_final_message then
    local msgs = vars.messages
    local last = msgs[#msgs]
    local final = last and (V.is_map(last) and V.dget(last, "content"))
    if V.is_seq(final) then final = V.is_map(final[#final]) and V.dget(final[#final], "text") end
    if type(final) ~= "string" then return nil, "continue_final_message: the final message has no text content" end
    local stripped = final:gsub("^%s+", ""):gsub("%s+$", "")
    local at
    local from = 1
    while true do
      local a = text:find(stripped, from, true)
      if not a then break end
      at, from = a, a + 1
    end
    if not at then
      return nil, "continue_final_message is set but the final message does not appear in the rendered "
        .. "chat; the template may transform it"
    end
    local lstripped = final:gsub("^%s+", "")
    if text:sub(at, at + #lstripped - 1) == lstripped then
      text = text:sub(1, at + #lstripped - 1)
    else
      text = text:sub(1, at + #stripped - 1)
    end
  end
  return text
end

-- the LLM's own template for `name` ("default" or "tool_use"), resolved and compiled once:
-- its chat_template option (file, inline or built-in name), else the model's, else a built-in
function M.for_llm(llm, name)
  llm._chat_templates = llm._chat_templates or {}
  local hit = llm._chat_templates[name]
  if hit then return hit[1], hit[2] end
  local lopts = llm.opts or {}
  local cfg = llm.model and llm.model.config or {}
  local source, origin = M.resolve { chat_template = lopts.chat_template, model_dir = lopts.tokenizer or lopts.model,
    model_type = cfg.model_type, name = name }
  local tpl, err
  if source then tpl, err = M.compile(source, origin) else err = origin end
  llm._chat_templates[name] = { tpl, err }
  return tpl, err
end

-- apply(llm, messages, opts) -> prompt text | nil, err: what vLLM's chat() and
-- /v1/chat/completions render. llm: an LLM or any table with opts (model, tokenizer,
-- chat_template) and model.config.model_type. opts = {chat_template=, add_generation_prompt=true,
-- continue_final_message=, tools=, documents=, chat_template_kwargs=,
-- content_format = "auto"|"string"|"openai"|"raw", max_output = bytes the rendered text may
-- have (lunar.jinja's default when absent; it also bounds every string the template builds)}.
-- opts.chat_template is template source, never a path (a request must not make the server read
-- its files), as vLLM's per-request chat_template. Messages go through vLLM's preprocessing
-- (parse_messages, with the content format detected from the template as vLLM's "auto" does)
-- unless content_format is "raw", which hands them to the template untouched as transformers does.
-- messages/tools/documents/kwargs may be plain Lua tables or engine values (lunar.jinja.json,
-- which keeps JSON object key order, as Python's json does, for tojson).
function M.apply(llm, messages, o)
  o = o or {}
  local lopts = llm.opts or {}
  local tools = o.tools
  if tools == V.NONE or (type(tools) == "table" and next(tools) == nil) then tools = nil end
  local tpl, err
  if o.chat_template ~= nil then
    if type(o.chat_template) ~= "string" then return nil, "chat_template must be a string" end
    tpl, err = M.compile(o.chat_template, "chat_template")
  else
    tpl, err = M.for_llm(llm, tools and "tool_use" or "default")
  end
  if not tpl then return nil, err end
  local format = o.content_format or lopts.chat_template_content_format or "auto"
  if format == "auto" then format = M.content_format(tpl) end
  if format ~= "raw" then
    messages, err = M.parse_messages(messages, format)
    if not messages then return nil, err end
  end
  llm._special_tokens = llm._special_tokens or M.special_tokens(lopts.tokenizer or lopts.model)
  return M.render(tpl, messages, {
    add_generation_prompt = o.add_generation_prompt, continue_final_message = o.continue_final_message,
    tools = tools, documents = o.documents, chat_template_kwargs = o.chat_template_kwargs,
    special_tokens = llm._special_tokens, max_output = o.max_output,
  })
end

return M
