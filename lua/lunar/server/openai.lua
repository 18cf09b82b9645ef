-- lunar.server.openai — the OpenAI-compatible routes: /v1/completions, /v1/chat/completions,
-- /v1/models, /tokenize, /detokenize, with vLLM's field names and meanings.
--
-- A request is validated and tokenized here, submitted to the engine (one engine request per
-- prompt; `n` sequences each), and answered when its last sequence finishes — or streamed
-- as Server-Sent Events as engine events arrive (lunar.server dispatches them to `job`s).
local util = require "lunar.util"
local sampling = require "lunar.sampling"
local http = require "lunar.server.http"
local json = util.json
local null = json.null

local M = {}

local INT_MAX = 2147483647
-- the most prompts one /v1/completions request may list: vLLM's VLLM_MAX_COMPLETION_PROMPTS
-- default, its bound on the work one request buys (n is bounded in C, LUNAR_MAX_N)
local MAX_PROMPTS = 1024

local function bad(msg, param, status, etype)
  return http.error(status or 400, msg, etype or "BadRequestError", param)
end

-- n random hex digits for response ids, from the kernel's generator: ids must differ across
-- server restarts too (an unseeded math.random repeats the same ids in every process)
local urandom = io.open("/dev/urandom", "rb")
local function rand_hex(n)
  local bytes = urandom and urandom:read(math.ceil(n / 2))
  if bytes then return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end)):sub(1, n) end
  local t = {}
  for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

-- A request value as an error message shows it: JSON, cut short. cjson refuses to write NaN and
-- +-Infinity (which it reads, as Python's json does, and 1e400 becomes), so those are spelled
-- out here; a message that failed to build would turn a 400 into a handler error.
local function show(v)
  if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
    return v ~= v and "NaN" or (v > 0 and "Infinity" or "-Infinity")
  end
  local s = json.encode(v) or (type(v) == "table" and "a list or object with a non-finite number" or tostring(v))
  if #s > 80 then -- cut at a character boundary: the message must stay valid UTF-8
    local n = 77
    while n > 1 and s:byte(n + 1) and s:byte(n + 1) >= 0x80 and s:byte(n + 1) < 0xC0 do n = n - 1 end
    s = s:sub(1, n) .. "..."
  end
  return s
end

-- Field checks: each returns an error table or nil.
local function check(body, name, kind)
  local v = body[name]
  if v == nil or v == null then body[name] = nil return nil end
  if kind == "integer" then
    if type(v) ~= "number" or v ~= math.floor(v) then return bad(name .. " must be an integer, got " .. show(v), name) end
    if v > INT_MAX or v < -INT_MAX then return bad(name .. " must be between " .. -INT_MAX .. " and " .. INT_MAX .. ", got " .. show(v), name) end
  elseif kind == "number" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return bad(name .. " must be a number, got " .. show(v), name) end
  elseif kind == "boolean" then
    if type(v) ~= "boolean" then return bad(name .. " must be a boolean, got " .. show(v), name) end
  elseif kind == "string" then
    if type(v) ~= "string" then return bad(name .. " must be a string, got " .. show(v), name) end
  elseif kind == "object" then -- a non-empty JSON array decodes to a table too
    if type(v) ~= "table" or #v > 0 then return bad(name .. " must be an object, got " .. show(v), name) end
  end
  return nil
end

local COMMON = {
  model = "string", n = "integer", temperature = "number", top_p = "number", top_k = "integer",
  min_p = "number", seed = "integer", presence_penalty = "number", frequency_penalty = "number",
  repetition_penalty = "number", ignore_eos = "boolean", min_tokens = "integer",
  skip_special_tokens = "boolean", include_stop_str_in_output = "boolean", stream = "boolean",
  stream_options = "object", user = "string", max_tokens = "integer", best_of = "integer",
  priority = "integer", spaces_between_special_tokens = "boolean",
}
local COMPLETION = { echo = "boolean", logprobs = "integer", suffix = "string" }
local CHAT = { logprobs = "boolean", top_logprobs = "integer", max_completion_tokens = "integer",
  add_generation_prompt = "boolean", continue_final_message = "boolean", chat_template = "string",
  chat_template_kwargs = "object", echo = "boolean", add_special_tokens = "boolean", documents = "table",
  tools = "table", tool_choice = "any", parallel_tool_calls = "boolean" }
-- accepted for compatibility; they change nothing here
local IGNORED = { user = true, tool_choice = true, parallel_tool_calls = true, service_tier = true,
  stream_options = true, metadata = true, store = true, logit_bias = false }

local function validate(body, extra)
  for name, kind in pairs(COMMON) do
    local e = check(body, name, kind)
    if e then return e end
  end
  for name, kind in pairs(extra) do
    if kind ~= "any" and kind ~= "table" then
      local e = check(body, name, kind)
      if e then return e end
    end
  end
  if body.stream_options then
    -- vLLM's check_stream_options: they mean nothing without a stream
    if body.stream ~= true then return bad("Stream options can only be defined when `stream=True`.", "stream_options") end
    for _, k in ipairs { "include_usage", "continuous_usage_stats" } do
      local v = body.stream_options[k]
      if v ~= nil and v ~= null and type(v) ~= "boolean" then
        return bad("stream_options." .. k .. " must be a boolean, got " .. show(v), "stream_options")
      end
    end
  end
  if body.logit_bias ~= nil and body.logit_bias ~= null then
    return bad("logit_bias is not supported", "logit_bias")
  end
  local unknown = {}
  for k in pairs(body) do
    if COMMON[k] == nil and extra[k] == nil and IGNORED[k] == nil and k ~= "prompt" and k ~= "messages"
      and k ~= "stop" and k ~= "stop_token_ids" then
      unknown[#unknown + 1] = k
    end
  end
  return nil, unknown
end

-- SamplingParams from an OpenAI body; kind = "completion" | "chat".
local function sampling_fields(srv, body, kind)
  local f = {}
  for _, k in ipairs({ "n", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "ignore_eos", "min_tokens", "skip_special_tokens",
    "include_stop_str_in_output", "best_of" }) do
    f[k] = body[k]
  end
  if body.stop ~= nil and body.stop ~= null then
    if type(body.stop) == "string" then f.stop = { body.stop }
    elseif type(body.stop) == "table" then
      f.stop = {}
      for i, s in ipairs(body.stop) do
        if type(s) ~= "string" then return nil, bad("stop[" .. (i - 1) .. "] must be a string", "stop") end
        f.stop[i] = s
      end
    else return nil, bad("stop must be a string or a list of strings", "stop") end
  end
  if body.stop_token_ids ~= nil and body.stop_token_ids ~= null then
    if type(body.stop_token_ids) ~= "table" then return nil, bad("stop_token_ids must be a list of integers", "stop_token_ids") end
    f.stop_token_ids = {}
    for i, t in ipairs(body.stop_token_ids) do
      if type(t) ~= "number" or t ~= math.floor(t) or t < 0 or t > INT_MAX then
        return nil, bad("stop_token_ids[" .. (i - 1) .. "] must be a non-negative integer", "stop_token_ids")
      end
      f.stop_token_ids[i] = t
    end
  end
  if kind == "completion" then
    f.max_tokens = body.max_tokens or 16
    if body.logprobs then
      if body.logprobs < 0 or body.logprobs > 20 then return nil, bad("logprobs must be between 0 and 20", "logprobs") end
      f.logprobs = body.logprobs
      if body.echo then f.prompt_logprobs = body.logprobs end
    end
  else
    f.max_tokens = body.max_completion_tokens or body.max_tokens
    if body.logprobs then
      local top = body.top_logprobs or 0
      if top < 0 or top > 20 then return nil, bad("top_logprobs must be between 0 and 20", "top_logprobs") end
      f.logprobs = top
    elseif body.top_logprobs and body.top_logprobs > 0 then
      return nil, bad("top_logprobs needs logprobs set to true", "top_logprobs")
    end
  end
  if f.max_tokens ~= nil and f.max_tokens < 1 then
    return nil, bad((kind == "chat" and body.max_completion_tokens and "max_completion_tokens" or "max_tokens")
      .. " must be at least 1, got " .. f.max_tokens, "max_tokens")
  end
  if srv.sampling_policy then
    local ok, err = pcall(srv.sampling_policy, body, f)
    if not ok then return nil, bad("sampling policy: " .. tostring(err), nil, 500, "InternalServerError") end
  end
  local sp, err = sampling.SamplingParams(f, srv.llm.generation_defaults)
  if not sp then
    local param = tostring(err):match("^(%w[%w_]*) ")
    return nil, bad(err, param)
  end
  return sp
end

local function model_name(srv, body)
  if body.model == nil then return srv.names[1] end
  for _, n in ipairs(srv.names) do if n == body.model then return n end end
  return nil, http.error(404, "The model `" .. body.model .. "` does not exist.", "NotFoundError", "model")
end

-- Prompts of /v1/completions: string | [string] | [int] | [[int]] -> list of id lists.
local function completion_prompts(srv, body)
  local p = body.prompt
  if p == nil or p == null then return nil, bad("prompt is required", "prompt") end
  local list
  if type(p) == "string" then list = { p }
  elseif type(p) == "table" then
    if #p == 0 then return nil, bad("prompt must not be empty", "prompt") end
    if type(p[1]) == "number" then list = { p } else list = p end
    if #list > MAX_PROMPTS then
      return nil, bad(string.format("prompt list length %d exceeds the maximum allowed count of %d", #list, MAX_PROMPTS), "prompt")
    end
  else return nil, bad("prompt must be a string, a list of strings or a list of token ids", "prompt") end
  local out, texts = {}, {}
  local V = srv.llm.tokenizer.vocab_size
  for i, x in ipairs(list) do
    if type(x) == "string" then
      local ids, err = srv.llm.tokenizer:encode(x, { add_special_tokens = true })
      if not ids then return nil, bad("prompt" .. (#list > 1 and ("[" .. (i - 1) .. "]") or "") .. ": " .. err, "prompt") end
      out[i], texts[i] = ids, x
    elseif type(x) == "table" then
      if #x == 0 then return nil, bad("prompt[" .. (i - 1) .. "] is an empty list of token ids", "prompt") end
      for j, t in ipairs(x) do
        if type(t) ~= "number" or t ~= math.floor(t) or t < 0 or t >= V then
          return nil, bad(string.format("prompt token %s at index %d is not a token id of this model (0..%d)",
            show(t), j - 1, V - 1), "prompt")
        end
      end
      out[i] = x
      texts[i] = srv.llm.tokenizer:decode(x, { skip_special_tokens = false })
    else
      return nil, bad("prompt[" .. (i - 1) .. "] must be a string or a list of token ids", "prompt")
    end
  end
  return out, texts
end

-- Messages of /v1/chat/completions, checked and normalised (text parts joined as vLLM does).
-- The chat fields as the template sees them, or nil and a 400. The shape is checked here; the
-- content goes to lunar.template as vLLM's parse_chat_messages takes it (text parts joined, or
-- kept as parts for templates that loop over them). The body is read again with
-- lunar.jinja.json, which keeps object key order and 1 vs 1.0 as Python's json does, so tools
-- and tool-call arguments reach tojson exactly as vLLM hands them to the template.
local function chat_messages(req, body)
  local msgs = body.messages
  if type(msgs) ~= "table" or #msgs == 0 or msgs[1] == nil then
    return nil, bad("messages must be a non-empty list", "messages")
  end
  for i, m in ipairs(msgs) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      return nil, bad("messages[" .. (i - 1) .. "] needs a string role", "messages")
    end
    local c = m.content
    if type(c) == "table" then
      for j, part in ipairs(c) do
        if type(part) ~= "table" or part.type ~= "text" or type(part.text) ~= "string" then
          return nil, bad(string.format("messages[%d].content[%d]: only {\"type\": \"text\", \"text\": ...} parts are supported",
            i - 1, j - 1), "messages")
        end
      end
    elseif c ~= nil and c ~= null and type(c) ~= "string" then
      return nil, bad("messages[" .. (i - 1) .. "].content must be a string or a list of parts", "messages")
    end
  end
  for _, k in ipairs { "tools", "documents" } do
    if body[k] ~= nil and body[k] ~= null and (type(body[k]) ~= "table" or (next(body[k]) ~= nil and #body[k] == 0)) then
      return nil, bad(k .. " must be a list", k)
    end
    -- each entry an object, as vLLM's request model requires (a tool also names its function)
    for i, x in ipairs(type(body[k]) == "table" and body[k] or {}) do
      if type(x) ~= "table" or #x > 0 or (k == "tools" and (type(x["function"]) ~= "table" or type(x["function"].name) ~= "string")) then
        return nil, bad(string.format(k == "tools" and "tools[%d] must be an object with a function that has a name"
          or "documents[%d] must be an object", i - 1), k)
      end
    end
  end
  local ordered, jerr = require("lunar.jinja.json").decode(req:body())
  if ordered == nil then return nil, bad("the request body is not valid JSON: " .. tostring(jerr)) end
  local V = require "lunar.jinja.value"
  local function field(k)
    local v = V.dget(ordered, k)
    if v == nil or v == V.NONE then return nil end
    return v
  end
  return { messages = field("messages"), tools = field("tools"), documents = field("documents"),
    chat_template_kwargs = field("chat_template_kwargs") }
end

-- the prompt text of a chat request, or nil and a 400
local function chat_prompt(srv, req, body)
  local c, err = chat_messages(req, body)
  if not c then return nil, err end
  for _, k in ipairs { "add_generation_prompt", "continue_final_message" } do -- /tokenize is not validated
    if body[k] == null then body[k] = nil end
    if body[k] ~= nil and type(body[k]) ~= "boolean" then return nil, bad(k .. " must be a boolean", k) end
  end
  local text, terr = require("lunar.template").apply(srv.llm, c.messages, {
    -- absent add_generation_prompt means true, and only an explicit true conflicts with
    -- continue_final_message (vLLM's check_generation_prompt reads the raw request)
    chat_template = body.chat_template, add_generation_prompt = body.add_generation_prompt,
    continue_final_message = body.continue_final_message, tools = c.tools, documents = c.documents,
    chat_template_kwargs = c.chat_template_kwargs,
    -- a prompt longer than the context is refused after rendering anyway; with room for 32
    -- bytes a token (no tokenizer makes longer ones) this bounds what a request's template may
    -- build, which the event loop pays for in time every other client waits
    max_output = math.max(1024 * 1024, 32 * srv.llm.max_model_len),
  })
  if not text then return nil, bad("chat template: " .. tostring(terr), "messages") end
  return text
end

-- ---- logprobs in the two OpenAI shapes ----------------------------------------------------
local function token_text(srv, id)
  return srv.llm:_token_text(id)
end

local function bytes_of(s)
  local t = {}
  for i = 1, #s do t[i] = s:byte(i) end
  if #t == 0 then return http.EMPTY_ARRAY end
  return t
end

local function completion_logprobs(srv, ids, lps, tops, lp, offset)
  for k, id in ipairs(ids) do
    local tok = token_text(srv, id)
    lp.tokens[#lp.tokens + 1] = tok
    lp.token_logprobs[#lp.token_logprobs + 1] = lps[k] or null
    local top = {}
    for _, t in ipairs(tops[k] or {}) do top[token_text(srv, t.id)] = t.logprob end
    if lps[k] then top[tok] = lps[k] end
    lp.top_logprobs[#lp.top_logprobs + 1] = lps[k] and top or null
    lp.text_offset[#lp.text_offset + 1] = offset
    offset = offset + #tok
  end
  return offset
end

local function chat_logprobs(srv, ids, lps, tops, list)
  for k, id in ipairs(ids) do
    local tok = token_text(srv, id)
    local top = {}
    for _, t in ipairs(tops[k] or {}) do
      local s = token_text(srv, t.id)
      top[#top + 1] = { token = s, logprob = t.logprob, bytes = bytes_of(s) }
    end
    list[#list + 1] = { token = tok, logprob = lps[k], bytes = bytes_of(tok),
      top_logprobs = #top > 0 and top or http.EMPTY_ARRAY }
  end
end

-- ---- jobs: one HTTP request's engine requests ---------------------------------------------
local function new_job(srv, req, kind, body, name, prompts, texts, sp)
  local job = {
    srv = srv, req = req, kind = kind, stream = body.stream == true, name = name, n = sp.n,
    id = (kind == "chat" and "chatcmpl-" or "cmpl-") .. rand_hex(32), created = os.time(),
    include_usage = body.stream_options and body.stream_options.include_usage == true,
    echo = body.echo == true, want_lp = sp.logprobs ~= nil, engine_ids = {}, choices = {},
    remaining = #prompts * sp.n, prompt_tokens = 0, completion_tokens = 0, texts = texts, prompts = prompts,
  }
  for i, ids in ipairs(prompts) do
    job.prompt_tokens = job.prompt_tokens + #ids
    for s = 0, sp.n - 1 do
      local idx = (i - 1) * sp.n + s
      local c = { index = idx, text = "", token_ids = {}, finish_reason = nil, stop_reason = nil, sent_role = false }
      if job.want_lp then
        c.lp = kind == "chat" and {} or { tokens = {}, token_logprobs = {}, top_logprobs = {}, text_offset = {} }
        c.offset = 0
      end
      if job.echo and texts[i] then c.text = texts[i] end
      job.choices[idx + 1] = c
    end
  end
  return job
end

local function usage(job)
  return { prompt_tokens = job.prompt_tokens, completion_tokens = job.completion_tokens,
           total_tokens = job.prompt_tokens + job.completion_tokens }
end

local function final_body(job)
  local choices = {}
  for _, c in ipairs(job.choices) do
    local lp = null
    if c.lp then lp = job.kind == "chat" and { content = #c.lp > 0 and c.lp or http.EMPTY_ARRAY } or c.lp end
    if job.kind == "chat" then
      choices[#choices + 1] = { index = c.index, message = { role = "assistant", content = c.text,
        tool_calls = http.EMPTY_ARRAY }, logprobs = lp, finish_reason = c.finish_reason or null,
        stop_reason = c.stop_reason == nil and null or c.stop_reason }
    else
      choices[#choices + 1] = { index = c.index, text = c.text, logprobs = lp,
        finish_reason = c.finish_reason or null, stop_reason = c.stop_reason == nil and null or c.stop_reason }
    end
  end
  return { id = job.id, object = job.kind == "chat" and "chat.completion" or "text_completion",
           created = job.created, model = job.name, choices = choices, usage = usage(job) }
end

local function chunk(job, choice)
  return { id = job.id, object = job.kind == "chat" and "chat.completion.chunk" or "text_completion",
           created = job.created, model = job.name, choices = { choice } }
end

-- An engine event for this job (called by lunar.server on the loop thread).
function M.on_event(job, prompt_index, ev)
  local srv = job.srv
  local c = job.choices[(prompt_index - 1) * job.n + ev.seq_index + 1]
  if not c or c.finish_reason then return end
  job.completion_tokens = job.completion_tokens + #ev.token_ids
  for _, t in ipairs(ev.token_ids) do c.token_ids[#c.token_ids + 1] = t end
  local delta_lp
  if c.lp and ev.logprobs then
    local lps, tops = {}, {}
    for k, e in ipairs(ev.logprobs) do lps[k], tops[k] = e.logprob, e.top end
    if job.kind == "chat" then
      local list = {}
      chat_logprobs(srv, ev.token_ids, lps, tops, list)
      for _, x in ipairs(list) do c.lp[#c.lp + 1] = x end
      delta_lp = { content = list }
    else
      if ev.prompt_logprobs and job.echo and not c.echoed_lp then
        c.echoed_lp = true
        local ids = job.prompts[prompt_index]
        local plps, ptops = {}, {}
        for k = 2, #ids do
          local e = ev.prompt_logprobs[k]
          plps[k], ptops[k] = e and e.logprob, e and e.top
        end
        c.offset = completion_logprobs(srv, ids, plps, ptops, c.lp, c.offset)
      end
      local before = #c.lp.tokens
      c.offset = completion_logprobs(srv, ev.token_ids, lps, tops, c.lp, c.offset)
      if job.stream then
        delta_lp = { tokens = {}, token_logprobs = {}, top_logprobs = {}, text_offset = {} }
        for k = before + 1, #c.lp.tokens do
          delta_lp.tokens[#delta_lp.tokens + 1] = c.lp.tokens[k]
          delta_lp.token_logprobs[#delta_lp.token_logprobs + 1] = c.lp.token_logprobs[k]
          delta_lp.top_logprobs[#delta_lp.top_logprobs + 1] = c.lp.top_logprobs[k]
          delta_lp.text_offset[#delta_lp.text_offset + 1] = c.lp.text_offset[k]
        end
      end
    end
  end
  c.text = c.text .. ev.text
  if ev.finish_reason then
    c.finish_reason = ev.finish_reason == "error" and "abort" or ev.finish_reason
    c.stop_reason = ev.stop_reason
    job.remaining = job.remaining - 1
  end
  if job.stream and not job.req.closed then
    local req = job.req
    local fr = c.finish_reason or null
    local sr = c.stop_reason == nil and null or c.stop_reason
    if job.kind == "chat" then
      if not c.sent_role then
        c.sent_role = true
        req:sse(chunk(job, { index = c.index, delta = { role = "assistant", content = "" }, logprobs = null, finish_reason = null }))
      end
      if ev.text ~= "" or c.finish_reason then
        req:sse(chunk(job, { index = c.index, delta = ev.text ~= "" and { content = ev.text } or {},
          logprobs = delta_lp or null, finish_reason = fr, stop_reason = sr }))
      end
    else
      local text = ev.text
      if job.echo and not c.sent_echo then c.sent_echo = true text = (job.texts[prompt_index] or "") .. text end
      if text ~= "" or c.finish_reason then
        req:sse(chunk(job, { index = c.index, text = text, logprobs = delta_lp or null, finish_reason = fr, stop_reason = sr }))
      end
    end
  end
  if job.remaining == 0 then M.finish(job) end
end

function M.finish(job)
  local req = job.req
  job.done = true
  job.srv:job_done(job)
  if req.closed then return end
  if job.stream then
    if job.include_usage then
      req:sse({ id = job.id, object = job.kind == "chat" and "chat.completion.chunk" or "text_completion",
        created = job.created, model = job.name, choices = http.EMPTY_ARRAY, usage = usage(job) })
    end
    req:sse_end()
  else
    req:respond(200, final_body(job))
  end
  req.log_tokens = { job.prompt_tokens, job.completion_tokens }
end

-- Submits every prompt; on failure aborts what was submitted and returns the error.
local function submit(srv, req, job, sp, priority)
  for i, ids in ipairs(job.prompts) do
    local eid, err = srv.llm.engine:submit(ids, sp, priority)
    if not eid then
      for _, e in ipairs(job.engine_ids) do srv.llm.engine:abort(e) srv.by_engine[e] = nil end
      local status = 400
      return bad((#job.prompts > 1 and ("prompt " .. (i - 1) .. ": ") or "") .. tostring(err),
        tostring(err):find("context length") and (job.kind == "chat" and "messages" or "prompt") or nil, status)
    end
    job.engine_ids[#job.engine_ids + 1] = eid
    srv.by_engine[eid] = { job = job, prompt_index = i }
  end
  srv.jobs[req.id] = job
  if job.stream then req:sse_start() end
  return nil
end

function M.completions(srv, req)
  local body, e = req:json()
  if not body then return req:fail(e) end
  local verr, unknown = validate(body, COMPLETION)
  if verr then return req:fail(verr) end
  if #unknown > 0 then srv:warn_unknown(req, unknown) end
  if body.suffix then return req:fail(bad("suffix is not supported", "suffix")) end
  local name, nerr = model_name(srv, body)
  if not name then return req:fail(nerr) end
  local prompts, texts = completion_prompts(srv, body)
  if not prompts then return req:fail(texts) end
  local sp, serr = sampling_fields(srv, body, "completion")
  if not sp then return req:fail(serr) end
  local job = new_job(srv, req, "completion", body, name, prompts, texts, sp)
  local err = submit(srv, req, job, sp, body.priority)
  if err then return req:fail(err) end
end

function M.chat(srv, req)
  local body, e = req:json()
  if not body then return req:fail(e) end
  local verr, unknown = validate(body, CHAT)
  if verr then return req:fail(verr) end
  if #unknown > 0 then srv:warn_unknown(req, unknown) end
  local name, nerr = model_name(srv, body)
  if not name then return req:fail(nerr) end
  local text, terr = chat_prompt(srv, req, body)
  if not text then return req:fail(terr) end
  local ids, tkerr = srv.llm.tokenizer:encode(text, { add_special_tokens = body.add_special_tokens == true })
  if not ids then return req:fail(bad(tkerr, "messages")) end
  local sp, serr = sampling_fields(srv, body, "chat")
  if not sp then return req:fail(serr) end
  local job = new_job(srv, req, "chat", body, name, { ids }, { text }, sp)
  job.echo = false
  local err = submit(srv, req, job, sp, body.priority)
  if err then return req:fail(err) end
end

function M.models(srv, req)
  local data = {}
  for _, n in ipairs(srv.names) do
    data[#data + 1] = { id = n, object = "model", created = srv.started, owned_by = "lunar",
      root = srv.llm.opts.model, parent = null, max_model_len = srv.llm.max_model_len }
  end
  return req:respond(200, { object = "list", data = data })
end

function M.tokenize(srv, req)
  local body, e = req:json()
  if not body then return req:fail(e) end
  local text
  if body.messages ~= nil then
    local terr
    text, terr = chat_prompt(srv, req, body)
    if not text then return req:fail(terr) end
  elseif type(body.prompt) == "string" then
    text = body.prompt
  else
    return req:fail(bad("prompt (a string) or messages is required", "prompt"))
  end
  for _, k in ipairs { "add_special_tokens", "return_token_strs" } do
    local verr = check(body, k, "boolean")
    if verr then return req:fail(verr) end
  end
  local add = body.add_special_tokens
  if add == nil then add = body.messages == nil end
  local ids, err = srv.llm.tokenizer:encode(text, { add_special_tokens = add })
  if not ids then return req:fail(bad(err, "prompt")) end
  local resp = { count = #ids, max_model_len = srv.llm.max_model_len, tokens = #ids > 0 and ids or http.EMPTY_ARRAY }
  if body.return_token_strs then
    local strs = {}
    for i, id in ipairs(ids) do strs[i] = srv.llm.tokenizer:id_to_token(id) or "" end
    resp.token_strs = #strs > 0 and strs or http.EMPTY_ARRAY
  end
  return req:respond(200, resp)
end

function M.detokenize(srv, req)
  local body, e = req:json()
  if not body then return req:fail(e) end
  if type(body.tokens) ~= "table" then return req:fail(bad("tokens must be a list of token ids", "tokens")) end
  local V = srv.llm.tokenizer.vocab_size
  for i, t in ipairs(body.tokens) do
    if type(t) ~= "number" or t ~= math.floor(t) or t < 0 or t >= V then
      return req:fail(bad(string.format("tokens[%d] = %s is not a token id of this model (0..%d)", i - 1, show(t), V - 1), "tokens"))
    end
  end
  local text, err = srv.llm.tokenizer:decode(body.tokens, { skip_special_tokens = false })
  if not text then return req:fail(bad(err, "tokens")) end
  return req:respond(200, { prompt = text })
end

return M
