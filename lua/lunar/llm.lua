-- lunar.llm — the offline API, in the shape vLLM users know:
--
--   local lunar = require "lunar"
--   local llm = assert(lunar.LLM{ model = "path/to/model", dtype = "auto" })
--   local outs = assert(llm:generate({ "Hello" }, assert(lunar.SamplingParams{ max_tokens = 32 })))
--   print(outs[1].outputs[1].text)
--
-- One LLM owns a model, its tokenizer, a backend runner and an engine stepped on this thread
-- (so Lua logits processors run here too). generate() submits every prompt at once and steps
-- until all finish: continuous batching does the rest. Field meanings are documented in
-- README.md ("The offline API and what each output field means").
local lffi = require "lunar.ffi"
local sampling = require "lunar.sampling"
local engine = require "lunar.engine"
local progress = require "lunar.progress"
local util = require "lunar.util"
local ffi = lffi.ffi
local C = lffi.C

local M = {}
local LLM = {}
LLM.__index = LLM

pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_usec; } lunar_timeval_t;
  int gettimeofday(lunar_timeval_t *tv, void *tz);
]])
local function wall_now()
  local tv = ffi.new("lunar_timeval_t")
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) * 1e-6
end

-- vLLM's SamplingParams (the module's defaults are vLLM's, not the model's: a model's
-- generation_config.json applies when generate() is called without params, as in vLLM).
function M.SamplingParams(fields) return sampling.SamplingParams(fields) end

local OPTION_NAMES = {
  "model", "tokenizer", "dtype", "load_format", "seed", "device", "max_model_len", "block_size",
  "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching", "enable_chunked_prefill",
  "kv_cache_memory_bytes", "gpu_memory_utilization", "num_threads", "chat_template",
  "chat_template_content_format",
  "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "trust_remote_code",
  "enforce_eager", "served_model_name", "stats_interval", "scheduling_policy",
}
local KNOWN = {}
for _, k in ipairs(OPTION_NAMES) do KNOWN[k] = true end

-- LLM{model = DIR, ...}: the keys are vLLM's LLM() arguments (and `lunar` flags with '-' as
-- '_'). Returns the LLM or nil, err.
function M.LLM(opts)
  if type(opts) == "string" then opts = { model = opts } end
  if type(opts) ~= "table" or type(opts.model) ~= "string" then
    return nil, "LLM: model (a model folder) is required"
  end
  for k in pairs(opts) do
    if type(k) == "string" and not KNOWN[k] and k:sub(1, 1) ~= "_" then
      local hint = util.closest(k, OPTION_NAMES)
      return nil, "LLM: unknown option '" .. k .. "'" .. (hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
  end
  for _, k in ipairs({ "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size" }) do
    if opts[k] and opts[k] ~= 1 then
      return nil, "LLM: " .. k .. " = " .. opts[k] .. " is not supported by the offline API yet (1 only)"
    end
  end
  local device = opts.device or "auto"
  local gpus = tonumber(C.lunar_device_count())
  if device == "auto" then device = gpus > 0 and "cuda" or "cpu" end
  if device == "cuda" and gpus < 1 then
    return nil, "LLM: device 'cuda' asked for, but no CUDA GPU is visible to this build; use device = 'cpu'"
  end

  local model_mod, tok_mod, runner_mod = require "lunar.model", require "lunar.tokenizer", require "lunar.runner"
  local self = setmetatable({ opts = opts, device = device }, LLM)
  local dtype = opts.dtype or "auto"
  if dtype == "half" then dtype = "float16" elseif dtype == "float" then dtype = "float32" end
  if dtype == "auto" and device == "cuda" then
    -- vLLM's rule: a float32 checkpoint runs in bfloat16 on a GPU unless --dtype says otherwise
    local cm, cerr = model_mod.load(opts.model, { load_format = opts.load_format, config_only = true })
    if not cm then return nil, cerr end
    dtype = model_mod.resolve_dtype("auto", cm.cconfig, "cuda")
    cm:free()
  end
  -- dummy weights on a GPU are made there (seconds and 16 GB of host memory saved for an 8B)
  local m, err = model_mod.load(opts.model, { dtype = dtype, load_format = opts.load_format, seed = opts.seed,
    dummy_on_device = device == "cuda" })
  if not m then return nil, err end
  self.model = m
  local tok, terr = tok_mod.load(opts.tokenizer or opts.model)
  if not tok then return nil, terr end
  self.tokenizer = tok
  local cfg = m.config

  local max_len = opts.max_model_len or cfg.max_position_embeddings
  if not max_len or max_len <= 0 then max_len = 2048 end
  if cfg.max_position_embeddings and cfg.max_position_embeddings > 0 and max_len > cfg.max_position_embeddings then
    return nil, string.format("max_model_len %d is larger than the model's max_position_embeddings (%d); "
      .. "lower max_model_len", max_len, cfg.max_position_embeddings)
  end
  local block_size = opts.block_size or 16
  local max_seqs = opts.max_num_seqs or 256
  local chunked = opts.enable_chunked_prefill ~= false
  local max_batched = opts.max_num_batched_tokens
    or (chunked and math.max(2048, max_seqs) or math.max(max_len, max_seqs))

  local r, rerr = runner_mod.new(m, {
    block_size = block_size, max_model_len = max_len, max_num_seqs = max_seqs,
    max_num_batched_tokens = max_batched, kv_cache_memory_bytes = opts.kv_cache_memory_bytes,
    num_threads = opts.num_threads, backend = device, gpu_memory_utilization = opts.gpu_memory_utilization,
    enforce_eager = opts.enforce_eager,
    profile = opts._profile_memory, -- tests: the CUDA start-up (profile, resize) on the cpu
  })
  if not r then return nil, rerr end
  self.runner = r

  local eos = {}
  local seen = {}
  for _, id in ipairs(tok.eos_ids) do if not seen[id] then seen[id] = true eos[#eos + 1] = id end end
  for _, id in ipairs(cfg.eos_token_ids or {}) do if not seen[id] then seen[id] = true eos[#eos + 1] = id end end
  while #eos > 8 do table.remove(eos) end
  self.detok = engine.tokenizer_detok(tok)
  local e, eerr = engine.new({
    block_size = block_size, num_blocks = r.num_blocks, max_model_len = max_len,
    max_num_seqs = max_seqs, max_num_batched_tokens = max_batched,
    enable_chunked_prefill = chunked, enable_prefix_caching = opts.enable_prefix_caching ~= false,
    eos_token_ids = eos, stats_interval = opts.stats_interval or 0,
    scheduling_policy = opts.scheduling_policy,
  }, r.iface, self.detok)
  if not e then return nil, eerr end
  self.engine = e
  self.max_model_len = max_len
  self.generation_defaults = sampling.generation_defaults(opts.model)
  self.wall_offset = wall_now() - C.lunar_engine_now()
  return self
end

-- The params generate() uses when given none: vLLM's defaults overridden by the model's
-- generation_config.json (temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens).
function LLM:get_default_sampling_params()
  return sampling.SamplingParams({}, self.generation_defaults)
end

local function normalize_prompts(prompts)
  if type(prompts) == "string" then return { prompts }, true end
  if type(prompts) == "table" and (prompts.prompt or prompts.prompt_token_ids) then return { prompts }, true end
  if type(prompts) ~= "table" or #prompts == 0 then
    return nil, "generate: prompts must be a string, a {prompt_token_ids=...} table, or a non-empty list of them"
  end
  return prompts, false
end

-- Decoded text of one token for logprobs entries (as vLLM's decoded_token).
function LLM:_token_text(id)
  self._tcache = self._tcache or {}
  local s = self._tcache[id]
  if s == nil then
    s = self.tokenizer:decode({ id }, { skip_special_tokens = false }) or ""
    self._tcache[id] = s
  end
  return s
end

-- {token_id = {logprob, rank, decoded_token}} for one position: the chosen token and the top N.
function LLM:_logprob_entry(chosen, lp, top)
  local entry = {}
  local rank = 1
  for _, t in ipairs(top) do if t.logprob > lp then rank = rank + 1 end end
  entry[chosen] = { logprob = lp, rank = rank, decoded_token = self:_token_text(chosen) }
  for i, t in ipairs(top) do
    if entry[t.id] == nil then
      entry[t.id] = { logprob = t.logprob, rank = i, decoded_token = self:_token_text(t.id) }
    end
  end
  return entry
end

-- generate(prompts, params, {use_tqdm = bool, priority = {...}}) -> {RequestOutput...} | nil, err
-- prompts: a string, {prompt_token_ids = {...}} or {prompt = "..."}, or a list of those.
-- params: SamplingParams, a plain table of SamplingParams fields, a list (one per prompt), or
-- nil (the model's defaults).
function LLM:generate(prompts, params, o)
  o = o or {}
  local list, err = normalize_prompts(prompts)
  if not list then return nil, err end
  local function as_params(p)
    if p == nil then return self:get_default_sampling_params() end
    if getmetatable(p) == nil then return sampling.SamplingParams(p) end
    return p
  end
  local per = {}
  if type(params) == "table" and getmetatable(params) == nil and params[1] ~= nil then
    if #params ~= #list then
      return nil, string.format("generate: %d sampling params for %d prompts", #params, #list)
    end
    for i = 1, #list do
      local sp, perr = as_params(params[i])
      if not sp then return nil, perr end
      per[i] = sp
    end
  else
    local sp, perr = as_params(params)
    if not sp then return nil, perr end
    for i = 1, #list do per[i] = sp end
  end

  -- tokenize and submit everything; the engine batches them
  local outputs, by_id, ids_in_order = {}, {}, {}
  for i, p in ipairs(list) do
    local text, ids = nil, nil
    if type(p) == "string" then text = p
    elseif type(p) == "table" then text, ids = p.prompt, p.prompt_token_ids
    end
    if ids == nil then
      if type(text) ~= "string" then return nil, string.format("generate: prompt %d is not a string", i) end
      local terr
      ids, terr = self.tokenizer:encode(text, { add_special_tokens = o.add_special_tokens ~= false })
      if not ids then return nil, string.format("generate: prompt %d: %s", i, terr) end
    end
    if #ids == 0 then return nil, string.format("generate: prompt %d is empty after tokenization", i) end
    local prio = o.priority and o.priority[i] or 0
    local id, serr = self.engine:submit(ids, per[i], prio)
    if not id then
      -- already-submitted prompts of this call must not linger in the engine
      for _, sid in ipairs(ids_in_order) do self.engine:abort(sid) end
      while self.engine:unfinished() > 0 do self.engine:step() self.engine:poll() end
      return nil, string.format("prompt %d: %s", i, serr)
    end
    local ro = {
      request_id = tostring(id), prompt = text, prompt_token_ids = ids, prompt_logprobs = nil,
      outputs = {}, finished = false, num_cached_tokens = 0, metrics = {},
      _n = per[i].n, _left = per[i].n, _want_lp = per[i].logprobs ~= nil,
    }
    for k = 1, per[i].n do
      ro.outputs[k] = { index = k - 1, text = "", token_ids = {}, cumulative_logprob = nil,
                        logprobs = ro._want_lp and {} or nil, finish_reason = nil, stop_reason = nil }
    end
    outputs[i] = ro
    by_id[id] = ro
    ids_in_order[#ids_in_order + 1] = id
  end

  local bar = progress.new({ total = #list, enabled = o.use_tqdm })
  local off = self.wall_offset
  local function wall(t) return (t and t > 0) and (t + off) or nil end
  local pending = #list
  while pending > 0 do
    local n, serr = self.engine:step()
    if not n then bar:close() return nil, serr end
    for _, ev in ipairs(self.engine:poll()) do
      local ro = by_id[ev.request_id]
      if ro then
        local co = ro.outputs[ev.seq_index + 1]
        for _, t in ipairs(ev.token_ids) do co.token_ids[#co.token_ids + 1] = t end
        co.text = co.text .. ev.text
        if ev.logprobs then
          for k, lp in ipairs(ev.logprobs) do
            co.cumulative_logprob = (co.cumulative_logprob or 0) + lp.logprob
            co.logprobs[#co.logprobs + 1] = self:_logprob_entry(ev.token_ids[k], lp.logprob, lp.top)
          end
        end
        if ev.prompt_logprobs then
          ro.prompt_logprobs = { false }
          for k = 2, #ev.prompt_logprobs do
            local e = ev.prompt_logprobs[k]
            ro.prompt_logprobs[k] = self:_logprob_entry(ro.prompt_token_ids[k], e.logprob, e.top)
          end
        end
        ro.num_cached_tokens = ev.num_cached_tokens
        local m = ro.metrics
        m.arrival_time = wall(ev.metrics.arrival_time)
        m.first_scheduled_time = m.first_scheduled_time or wall(ev.metrics.first_scheduled_time)
        m.first_token_time = m.first_token_time or wall(ev.metrics.first_token_time)
        m.last_token_time = wall(ev.metrics.last_token_time)
        if m.first_scheduled_time and m.arrival_time then m.time_in_queue = m.first_scheduled_time - m.arrival_time end
        if ev.finish_reason then
          co.finish_reason, co.stop_reason = ev.finish_reason, ev.stop_reason
          ro._left = ro._left - 1
          if ro._left == 0 then
            ro.finished = true
            m.finished_time = wall_now()
            pending = pending - 1
            local gen = 0
            for _, c in ipairs(ro.outputs) do gen = gen + #c.token_ids end
            bar:update(1, #ro.prompt_token_ids, gen)
          end
        end
      end
    end
  end
  bar:close()
  for _, ro in ipairs(outputs) do ro._n, ro._left, ro._want_lp = nil, nil, nil end
  return outputs
end

-- chat(messages, params, {chat_template=, add_generation_prompt=true, continue_final_message=,
-- tools=, documents=, chat_template_kwargs=, content_format=, use_tqdm=}) -> {RequestOutput} | nil, err
-- messages: one conversation (a list of {role=, content=}) or a list of conversations. The
-- prompt is lunar.template.apply's (vLLM's chat preprocessing and rendering); chat_template here
-- is template source, the LLM's chat_template option a file, inline source or built-in name.
function LLM:chat(messages, params, o)
  o = o or {}
  local template = require "lunar.template"
  if type(messages) ~= "table" or messages[1] == nil then return nil, "chat: messages must be a non-empty list" end
  -- a list of conversations holds lists; a conversation holds message objects
  local first = messages[1]
  local many = type(first) == "table" and type(first[1]) == "table"
  local convs = many and messages or { messages }
  local prompts = {}
  for i, conv in ipairs(convs) do
    local text, err = template.apply(self, conv, o)
    if not text then return nil, string.format("chat: conversation %d: %s", i, err) end
    prompts[i] = text
  end
  -- the template already holds the special tokens it wants (BOS...), as in vLLM's chat()
  return self:generate(prompts, params, { use_tqdm = o.use_tqdm, add_special_tokens = false })
end

function LLM:close()
  if self.engine then self.engine:close() self.engine = nil end
  if self.runner then self.runner:close() self.runner = nil end
end

return M
