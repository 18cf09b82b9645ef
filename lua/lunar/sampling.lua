-- lunar.sampling — SamplingParams as vLLM spells them, generation_config.json defaults, and
-- the conversion to the C struct the engine takes (lunar_sampling_params_t).
--
--   local sampling = require "lunar.sampling"
--   local defaults = sampling.generation_defaults(model_dir)      -- {} when the file is absent
--   local sp, err = sampling.SamplingParams({ temperature = 0.7, stop = "\n" }, defaults)
--   local c = sp:to_c()       -- cdata; keeps its stop strings alive as long as it lives
--
-- Value checks live in C (lunar_sampling_params_validate) so HTTP, Lua and C callers get the
-- same words; this module checks types, unknown fields (with a suggestion) and fills defaults.
-- Logits processors (Lua functions) are kept on the params; the engine's logits hook reaches
-- them through lunar.sampling.hook (see below), only for requests that carry one.
local lffi = require "lunar.ffi"
local util = require "lunar.util"
local ffi = lffi.ffi
local C = lffi.C

local M = {}

-- vLLM's SamplingParams fields and defaults (vllm/sampling_params.py). nil = vLLM's None.
local FIELDS = {
  n = 1, presence_penalty = 0.0, frequency_penalty = 0.0, repetition_penalty = 1.0,
  temperature = 1.0, top_p = 1.0, top_k = -1, min_p = 0.0, seed = false, stop = false,
  stop_token_ids = false, ignore_eos = false, max_tokens = 16, min_tokens = 0, logprobs = false,
  prompt_logprobs = false, detokenize = true, skip_special_tokens = true,
  spaces_between_special_tokens = true, include_stop_str_in_output = false,
  logits_processors = false, best_of = false,
}
local NAMES = {}
for k in pairs(FIELDS) do NAMES[#NAMES + 1] = k end
table.sort(NAMES)

local TYPES = {
  n = "integer", presence_penalty = "number", frequency_penalty = "number",
  repetition_penalty = "number", temperature = "number", top_p = "number", top_k = "integer",
  min_p = "number", seed = "integer", max_tokens = "integer", min_tokens = "integer",
  logprobs = "integer", prompt_logprobs = "integer", best_of = "integer", detokenize = "boolean",
  skip_special_tokens = "boolean", spaces_between_special_tokens = "boolean",
  include_stop_str_in_output = "boolean", ignore_eos = "boolean",
}

-- generation_config.json keys that become defaults, as vLLM's get_diff_sampling_param does.
local GEN_KEYS = { "repetition_penalty", "temperature", "top_k", "top_p", "min_p", "max_new_tokens" }

local function check_type(name, v)
  local want = TYPES[name]
  if not want then return true end
  if want == "integer" then
    if type(v) ~= "number" or v ~= math.floor(v) then
      return nil, string.format("%s must be an integer, got %s", name, tostring(v))
    end
  elseif type(v) ~= want then
    return nil, string.format("%s must be a %s, got %s", name, want, type(v))
  end
  return true
end

-- Defaults from a model folder's generation_config.json (or a table already decoded): only
-- the sampling keys vLLM takes, max_new_tokens renamed to max_tokens. {} when absent.
function M.generation_defaults(dir_or_table)
  local g = dir_or_table
  if type(g) == "string" then
    local path = g .. "/generation_config.json"
    if not util.file_exists(path) then return {} end
    local err
    g, err = util.read_json(path)
    if not g then return nil, err end
  end
  local d = {}
  for _, k in ipairs(GEN_KEYS) do
    if g[k] ~= nil and g[k] ~= util.json.null then
      d[k == "max_new_tokens" and "max_tokens" or k] = g[k]
    end
  end
  return d
end

-- eos ids named by generation_config.json (int or list), which vLLM adds to the stop ids.
function M.generation_eos(dir)
  local path = dir .. "/generation_config.json"
  if not util.file_exists(path) then return {} end
  local g = util.read_json(path)
  if not g or g.eos_token_id == nil then return {} end
  if type(g.eos_token_id) == "table" then return g.eos_token_id end
  return { g.eos_token_id }
end

local SP = {}
SP.__index = SP

-- Builds SamplingParams from `fields` (vLLM names), with `defaults` (generation_config) for
-- fields not given, then vLLM's own defaults. Returns the params or nil, err.
function M.SamplingParams(fields, defaults)
  fields = fields or {}
  local self = setmetatable({}, SP)
  for k, v in pairs(fields) do
    if FIELDS[k] == nil then
      local hint = util.closest(k, NAMES)
      return nil, string.format("SamplingParams: unknown field '%s'%s", tostring(k),
        hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
    if v ~= nil and v ~= util.json.null then
      local ok, err = check_type(k, v)
      if not ok then return nil, err end
      self[k] = v
    end
  end
  for k, v in pairs(defaults or {}) do
    if self[k] == nil and FIELDS[k] ~= nil then self[k] = v end
  end
  for k, v in pairs(FIELDS) do
    if self[k] == nil and v ~= false then self[k] = v end
  end
  if type(self.stop) == "string" then self.stop = { self.stop } end
  if self.stop ~= nil and type(self.stop) ~= "table" then
    return nil, "stop must be a string or a list of strings, got " .. type(self.stop)
  end
  for i, s in ipairs(self.stop or {}) do
    if type(s) ~= "string" then return nil, string.format("stop[%d] must be a string, got %s", i, type(s)) end
  end
  for i, t in ipairs(self.stop_token_ids or {}) do
    if type(t) ~= "number" or t ~= math.floor(t) then
      return nil, string.format("stop_token_ids[%d] must be an integer, got %s", i, tostring(t))
    end
  end
  if self.best_of and self.best_of ~= self.n then
    return nil, string.format("best_of must equal n (%d) in lunar, got %d", self.n, self.best_of)
  end
  if self.logits_processors then
    if type(self.logits_processors) == "function" then self.logits_processors = { self.logits_processors } end
    for i, f in ipairs(self.logits_processors) do
      if type(f) ~= "function" then
        return nil, string.format("logits_processors[%d] must be a function, got %s", i, type(f))
      end
    end
  end
  local c = self:to_c()
  local ok, err = lffi.check(C.lunar_sampling_params_validate(c))
  if not ok then return nil, err end
  return self
end

-- The C struct. The returned cdata holds references to its string and id arrays, so they
-- live as long as it does; the engine copies everything at submit.
function SP:to_c()
  local c = ffi.new("lunar_sampling_params_t")
  C.lunar_sampling_params_default(c)
  c.n = self.n
  c.temperature = self.temperature
  c.top_p = self.top_p
  c.top_k = self.top_k
  c.min_p = self.min_p
  if self.seed ~= nil then
    c.has_seed = 1
    c.seed = self.seed
  end
  c.max_tokens = self.max_tokens == nil and -1 or self.max_tokens
  c.min_tokens = self.min_tokens
  c.presence_penalty = self.presence_penalty
  c.frequency_penalty = self.frequency_penalty
  c.repetition_penalty = self.repetition_penalty
  c.logprobs = self.logprobs == nil and -1 or self.logprobs
  c.prompt_logprobs = self.prompt_logprobs == nil and -1 or self.prompt_logprobs
  c.ignore_eos = self.ignore_eos and 1 or 0
  c.skip_special_tokens = self.skip_special_tokens and 1 or 0
  c.include_stop_str_in_output = self.include_stop_str_in_output and 1 or 0
  c.detokenize = self.detokenize and 1 or 0
  local anchors = {}
  local stop = self.stop or {}
  if #stop > 0 then
    local arr = ffi.new("const char *[?]", #stop)
    for i, s in ipairs(stop) do arr[i - 1] = s; anchors[#anchors + 1] = s end
    anchors[#anchors + 1] = arr
    c.stop = arr
    c.num_stop = #stop
  end
  local ids = self.stop_token_ids or {}
  if #ids > 0 then
    local arr = ffi.new("int32_t[?]", #ids, ids)
    anchors[#anchors + 1] = arr
    c.stop_token_ids = arr
    c.num_stop_token_ids = #ids
  end
  c.logits_hook = (self.logits_processors and #self.logits_processors > 0) and 1 or 0
  -- keep the arrays alive with the struct
  M._anchors[c] = anchors
  return c
end

M._anchors = setmetatable({}, { __mode = "k" })

-- ---- logits processors -----------------------------------------------------------------
-- The engine never runs Lua on its own thread. A Lua process that owns an engine and steps it
-- itself (lunar_engine_step, the offline API) installs one C callback with hook.install();
-- the callback runs on that same thread during the step and dispatches by request id to the
-- request's processors: each is called as fn(output_ids, logits, vocab_size, prompt_ids) with
-- 1-based Lua arrays of ids and `logits` a 0-based float* row to modify in place. A processor
-- that raises ends its sequence with finish_reason "error". A threaded engine must not get
-- Lua processors (the engine thread would enter a Lua state it does not own).
local hook = { procs = {} }
M.hook = hook

local function to_array(p, n)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = p[i] end
  return t
end

local function dispatch(_, id, _, prompt, np, out, no, logits, vocab)
  local procs = hook.procs[tonumber(id)]
  if not procs then return 1 end
  local ok = pcall(function()
    local outs, prompts = to_array(out, no), to_array(prompt, np)
    for _, f in ipairs(procs) do f(outs, logits, vocab, prompts) end
  end)
  return ok and 0 or 1
end

-- Registers the dispatcher on a C engine. Returns the callback cdata: keep it alive as long
-- as the engine (free it with :free() after lunar_engine_free).
function hook.install(engine)
  local cb = ffi.cast("lunar_logits_hook_fn", dispatch)
  C.lunar_engine_set_logits_hook(engine, cb, nil)
  return cb
end

-- Attach / detach a request's processors (by the id lunar_engine_submit returned).
function hook.attach(id, params)
  if params.logits_processors then hook.procs[tonumber(id)] = params.logits_processors end
end
function hook.detach(id) hook.procs[tonumber(id)] = nil end

return M
