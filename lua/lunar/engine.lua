-- lunar.engine — the continuous-batching engine (lunar/engine.h) from Lua, stepped on the
-- calling thread: the building block of the offline API (LLM.generate) and of tests.
--
--   local engine = require "lunar.engine"
--   local e = assert(engine.new({ num_blocks = 256, max_model_len = 512 }, fwd, detok))
--   local id = assert(e:submit({ 1, 2, 3 }, sampling_params))
--   while e:unfinished() > 0 do e:step(); for _, ev in ipairs(e:poll()) do ... end end
--
-- Events come back as plain tables (token_ids, text, finish_reason "stop"/"length"/...). Lua
-- logits processors work here because the step runs on this thread (lunar.sampling.hook);
-- the threaded engine of the server is driven from C.
local lffi = require "lunar.ffi"
local sampling = require "lunar.sampling"
local ffi = lffi.ffi
local C = lffi.C

local M = {}

local Engine = {}
Engine.__index = Engine

-- A config from vLLM-style option names (the keys of lunar.args' parsed flags work).
function M.config(opts)
  local c = ffi.new("lunar_engine_config_t")
  C.lunar_engine_config_default(c)
  for _, k in ipairs({ "block_size", "num_blocks", "max_model_len", "max_num_seqs",
                       "max_num_batched_tokens", "max_logprobs" }) do
    if opts[k] ~= nil then c[k] = opts[k] end
  end
  if opts.enable_chunked_prefill ~= nil then c.enable_chunked_prefill = opts.enable_chunked_prefill and 1 or 0 end
  if opts.enable_prefix_caching ~= nil then c.enable_prefix_caching = opts.enable_prefix_caching and 1 or 0 end
  if opts.scheduling_policy == "priority" then c.policy = 1 end
  if opts.stats_interval ~= nil then c.stats_interval_s = opts.stats_interval end
  local eos = opts.eos_token_ids or {}
  if #eos > 8 then return nil, "at most 8 eos_token_ids, got " .. #eos end
  for i, id in ipairs(eos) do c.eos_token_ids[i - 1] = id end
  c.num_eos_token_ids = #eos
  return c
end

-- Engine options from lunar.args' parsed engine flags, the model's config (lunar.model's
-- config table) and the KV blocks the memory plan allows, with vLLM's defaults: max_model_len
-- from max_position_embeddings; max_num_batched_tokens 2048 with chunked prefill (8192 for
-- the server, as vLLM's API server), else max(max_model_len, 2048); eos ids of config.json
-- plus those given (tokenizer / generation_config), deduplicated.
function M.options(flags, model_cfg, num_blocks, extra_eos, for_server)
  local o = {
    block_size = flags.block_size or 16, num_blocks = num_blocks,
    max_model_len = flags.max_model_len or model_cfg.max_position_embeddings,
    max_num_seqs = flags.max_num_seqs or 256,
    enable_chunked_prefill = flags.enable_chunked_prefill ~= false,
    enable_prefix_caching = flags.enable_prefix_caching ~= false,
    scheduling_policy = flags.scheduling_policy,
    max_logprobs = flags.max_logprobs,
  }
  o.max_num_batched_tokens = flags.max_num_batched_tokens
  if not o.max_num_batched_tokens then
    if o.enable_chunked_prefill then o.max_num_batched_tokens = for_server and 8192 or 2048
    else o.max_num_batched_tokens = math.max(o.max_model_len, 2048) end
    o.max_num_batched_tokens = math.max(o.max_num_batched_tokens, o.max_num_seqs)
  end
  local seen, eos = {}, {}
  for _, list in ipairs({ model_cfg.eos_token_ids or {}, extra_eos or {} }) do
    for _, id in ipairs(list) do
      if not seen[id] then seen[id] = true; eos[#eos + 1] = id end
    end
  end
  o.eos_token_ids = eos
  return o
end

-- fwd: a lunar_forward_iface_t (cdata); detok: a lunar_detok_iface_t or nil. Both must stay
-- alive as long as the engine: the engine keeps references to them here.
function M.new(opts, fwd, detok)
  local c, err = M.config(opts)
  if not c then return nil, err end
  local out = ffi.new("lunar_engine_t *[1]")
  local ok, cerr = lffi.check(C.lunar_engine_create(c, fwd, detok, out))
  if not ok then return nil, cerr end
  local self = setmetatable({ fwd = fwd, detok = detok, params = {} }, Engine)
  self.c = ffi.gc(out[0], C.lunar_engine_free)
  self.hook_cb = sampling.hook.install(self.c)
  return self
end

function Engine:close()
  if self.c then
    C.lunar_engine_free(ffi.gc(self.c, nil))
    self.c = nil
    self.hook_cb:free()
  end
end

-- prompt: Lua array of token ids; sp: lunar.sampling params (or nil for defaults).
function Engine:submit(prompt, sp, priority)
  sp = sp or assert(sampling.SamplingParams({}))
  local ids = ffi.new("int32_t[?]", #prompt, prompt)
  local cp = sp:to_c()
  local rq = ffi.new("lunar_request_t", { ids, #prompt, cp, priority or 0, nil })
  local id = ffi.new("uint64_t[1]")
  local ok, err = lffi.check(C.lunar_engine_submit(self.c, rq, id))
  if not ok then return nil, err end
  local n = tonumber(id[0])
  sampling.hook.attach(n, sp)
  self.params[n] = { left = sp.n }
  return n
end

function Engine:abort(id) C.lunar_engine_abort(self.c, id) end
function Engine:unfinished() return C.lunar_engine_num_unfinished(self.c) end

-- One step on this thread. Not compiled: the engine may call back into Lua (logits
-- processors), which LuaJIT allows only from interpreted code.
function Engine:step()
  local n = C.lunar_engine_step(self.c)
  if n < 0 then return lffi.check(n) end
  return n
end
jit.off(Engine.step)

local function floats(p, n)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = p[i] end
  return t
end

local function top(ids, lps, k, n)
  local t = {}
  for j = 0, n - 1 do t[#t + 1] = { id = ids[k * n + j], logprob = lps[k * n + j] } end
  return t
end

-- The events since the last poll, as tables.
function Engine:poll()
  local pp = ffi.new("const lunar_event_t *[1]")
  local n = C.lunar_engine_poll(self.c, pp)
  local out = {}
  for i = 0, n - 1 do
    local ev = pp[0][i]
    local id = tonumber(ev.request_id)
    local e = {
      request_id = id, seq_index = ev.seq_index,
      token_ids = floats(ev.token_ids, ev.num_tokens),
      text = ffi.string(ev.text, ev.text_len),
      finish_reason = ev.finish_reason ~= 0 and ffi.string(C.lunar_finish_reason_name(ev.finish_reason)) or nil,
      stop_reason = ev.stop_str ~= nil and ffi.string(ev.stop_str)
          or (ev.stop_token_id >= 0 and ev.stop_token_id or nil),
      num_prompt_tokens = ev.num_prompt_tokens, num_cached_tokens = ev.num_cached_tokens,
      num_output_tokens = ev.num_output_tokens,
      metrics = { arrival_time = ev.arrival_time, first_scheduled_time = ev.first_scheduled_time,
                  first_token_time = ev.first_token_time, last_token_time = ev.last_token_time },
    }
    if ev.logprobs ~= nil then
      e.logprobs = {}
      for k = 0, ev.num_tokens - 1 do
        e.logprobs[k + 1] = { logprob = ev.logprobs[k], top = top(ev.top_ids, ev.top_logprobs, k, ev.num_top_logprobs) }
      end
    end
    if ev.num_prompt_logprobs > 0 then
      e.prompt_logprobs = { false } -- vLLM's None for the first prompt token
      for k = 1, ev.num_prompt_logprobs - 1 do
        e.prompt_logprobs[k + 1] = { logprob = ev.prompt_logprobs[k],
          top = top(ev.prompt_top_ids, ev.prompt_top_logprobs, k, ev.num_prompt_top) }
      end
    end
    local live = self.params[id]
    if e.finish_reason and live then -- the request is done once all its sequences are
      live.left = live.left - 1
      if live.left == 0 then
        self.params[id] = nil
        sampling.hook.detach(id)
      end
    end
    out[#out + 1] = e
  end
  return out
end

-- Runs prompts (arrays of ids) to completion; returns, per prompt, its n sequences as
-- { token_ids, text, finish_reason, stop_reason, num_cached_tokens }. It steps until the
-- engine is empty, so requests submitted earlier run too; their events are dropped.
function Engine:generate(prompts, sp)
  local ids, results = {}, {}
  for i, p in ipairs(prompts) do
    local id, err = self:submit(p, sp)
    if not id then return nil, err end
    ids[id] = i
    results[i] = {}
  end
  while self:unfinished() > 0 do
    local ok, err = self:step()
    if not ok then return nil, err end
    for _, ev in ipairs(self:poll()) do
      local r = results[ids[ev.request_id] or 0]
      if r then
        local s = r[ev.seq_index + 1] or { token_ids = {}, text = "" }
        r[ev.seq_index + 1] = s
        for _, t in ipairs(ev.token_ids) do s.token_ids[#s.token_ids + 1] = t end
        s.text = s.text .. ev.text
        s.num_cached_tokens = ev.num_cached_tokens
        if ev.finish_reason then s.finish_reason, s.stop_reason = ev.finish_reason, ev.stop_reason end
      end
    end
  end
  return results
end

function Engine:stats()
  local st = ffi.new("lunar_engine_stats_t")
  C.lunar_engine_get_stats(self.c, st)
  return st
end

-- The stats (a lunar_engine_stats_t) in Prometheus' text format under vLLM's metric names,
-- so dashboards built for vLLM read lunar unchanged.
function M.prometheus(st, model_name)
  local label = string.format('model_name="%s"', (model_name or ""):gsub('[\\"]', "\\%0"))
  local out = {}
  local function metric(name, kind, help, value, extra)
    out[#out + 1] = string.format("# HELP %s %s\n# TYPE %s %s", name, help, name, kind)
    out[#out + 1] = string.format("%s{%s%s} %s", name, label, extra or "", tostring(value))
  end
  local function num(v) return string.format("%.17g", tonumber(v)) end
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", st.num_running)
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", st.num_waiting)
  metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", num(st.kv_cache_usage))
  metric("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.", num(st.kv_cache_usage))
  metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.",
    num(st.num_preemptions_total))
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", num(st.prompt_tokens_total))
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
    num(st.generation_tokens_total))
  metric("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of queried tokens.",
    num(st.prefix_cache_queries))
  metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.",
    num(st.prefix_cache_hits))
  out[#out + 1] = "# HELP vllm:request_success_total Count of successfully processed requests.\n"
    .. "# TYPE vllm:request_success_total counter"
  for _, r in ipairs({ { "stop", st.request_success_stop }, { "length", st.request_success_length },
                       { "abort", st.request_success_abort } }) do
    out[#out + 1] = string.format('vllm:request_success_total{%s,finished_reason="%s"} %s', label, r[1], num(r[2]))
  end
  local function hist(name, help, h)
    out[#out + 1] = string.format("# HELP %s %s\n# TYPE %s histogram", name, help, name)
    for b = 0, h.num_buckets - 1 do
      out[#out + 1] = string.format('%s_bucket{%s,le="%s"} %s', name, label, num(h.bounds[b]), num(h.counts[b]))
    end
    out[#out + 1] = string.format('%s_bucket{%s,le="+Inf"} %s', name, label, num(h.count))
    out[#out + 1] = string.format("%s_sum{%s} %s", name, label, num(h.sum))
    out[#out + 1] = string.format("%s_count{%s} %s", name, label, num(h.count))
  end
  hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", st.ttft)
  hist("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", st.tpot)
  hist("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", st.e2e)
  hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", st.queue)
  return table.concat(out, "\n") .. "\n"
end

-- A deterministic fake model (lunar/engine.h) for tests: returns the forward iface and the
-- model handle (keep both).
function M.fake_model(vocab, num_blocks, block_size, eos, seed)
  local out = ffi.new("lunar_fake_model_t *[1]")
  local ok, err = lffi.check(C.lunar_fake_model_create(vocab, num_blocks, block_size, eos or -1, seed or 0, out))
  if not ok then return nil, err end
  local m = ffi.gc(out[0], C.lunar_fake_model_free)
  local f = ffi.new("lunar_forward_iface_t")
  C.lunar_fake_model_iface(m, f)
  return f, m
end

-- The detokenizer of a lunar.tokenizer object (keep the tokenizer alive with the engine).
function M.tokenizer_detok(tok)
  local d = ffi.new("lunar_detok_iface_t")
  C.lunar_engine_detok_tokenizer(tok.handle, d)
  return d
end

function M.fake_detok(bytes_mode)
  local d = ffi.new("lunar_detok_iface_t")
  C.lunar_fake_detok_iface(bytes_mode and 1 or 0, d)
  return d
end

return M
