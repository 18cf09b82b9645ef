-- `lunar generate MODEL --prompt TEXT [...]`: offline generation from the command line, with
-- vLLM's sampling parameters as flags. Prints each completion, or RequestOutputs as JSON.
local args = require "lunar.args"
local util = require "lunar.util"

local sampling_flags = {
  { name = "--prompt", alias = "-p", type = "list", help = "a prompt (repeat for several)" },
  { name = "--prompts-file", type = "string", help = "prompts, one per line" },
  { name = "--chat", type = "bool", default = false, help = "treat each prompt as a user message and apply the chat template" },
  { name = "--system", type = "string", help = "system message for --chat" },
  { name = "--max-tokens", type = "int", help = "tokens to generate (default: generation_config or 16)" },
  { name = "--min-tokens", type = "int", help = "EOS is suppressed before this many tokens" },
  { name = "--temperature", type = "float", help = "0 = greedy" },
  { name = "--top-p", type = "float" }, { name = "--top-k", type = "int" }, { name = "--min-p", type = "float" },
  { name = "--n", type = "int", help = "completions per prompt" },
  { name = "--sampling-seed", type = "int", help = "per-request sampling seed (reproducible)" },
  { name = "--stop", type = "list", help = "stop string (repeatable)" },
  { name = "--stop-token-ids", type = "string", help = "JSON list of token ids, e.g. '[2, 13]'" },
  { name = "--ignore-eos", type = "bool" },
  { name = "--presence-penalty", type = "float" }, { name = "--frequency-penalty", type = "float" },
  { name = "--repetition-penalty", type = "float" },
  { name = "--logprobs", type = "int", help = "top-N logprobs per generated token" },
  { name = "--prompt-logprobs", type = "int", help = "top-N logprobs per prompt token" },
  { name = "--skip-special-tokens", type = "bool" },
  { name = "--include-stop-str-in-output", type = "bool" },
  { name = "--json", type = "bool", default = false, help = "print the RequestOutputs as JSON" },
  { name = "--num-threads", type = "int", help = "CPU backend threads (default: all cores)" },
}

local SP_KEYS = { "max_tokens", "min_tokens", "temperature", "top_p", "top_k", "min_p", "n", "stop",
  "ignore_eos", "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs",
  "prompt_logprobs", "skip_special_tokens", "include_stop_str_in_output" }

local function fail(msg) error("lunar: " .. msg, 0) end

-- JSON for a RequestOutput: Lua tables keyed by token id become objects with string keys.
local function jsonable(v)
  if type(v) ~= "table" then return v end
  local out = {}
  local is_list = #v > 0 or next(v) == nil
  for k, x in pairs(v) do
    if x == false and is_list then x = util.json.null end
    out[is_list and k or tostring(k)] = jsonable(x)
  end
  return out
end

return {
  summary = "generate text from prompts on the command line (vLLM's sampling flags)",
  usage = "lunar generate MODEL --prompt TEXT [--prompt TEXT...] [sampling flags] [engine flags] [--json]",
  flags = args.join(args.engine_flags, sampling_flags),
  run = function(o, pos)
    local lunar = require "lunar"
    local model = pos[1] or fail("generate needs a MODEL folder: lunar generate MODEL --prompt TEXT")
    if pos[2] then fail("unexpected argument '" .. pos[2] .. "' (prompts go after --prompt)") end
    local prompts = {}
    for _, p in ipairs(o.prompt or {}) do prompts[#prompts + 1] = p end
    if o.prompts_file then
      local text, err = util.read_file(o.prompts_file)
      if not text then fail(err) end
      for line in text:gmatch("[^\n]+") do prompts[#prompts + 1] = line end
    end
    if #prompts == 0 then fail("no prompt: give --prompt TEXT or --prompts-file FILE") end

    local fields = {}
    for _, k in ipairs(SP_KEYS) do fields[k] = o[k] end
    if o.sampling_seed then fields.seed = o.sampling_seed end
    if o.stop_token_ids then
      local ids = util.json.decode(o.stop_token_ids)
      if type(ids) ~= "table" then fail("--stop-token-ids expects a JSON list like '[2, 13]'") end
      fields.stop_token_ids = ids
    end
    local llm, err = lunar.LLM({
      model = model, tokenizer = o.tokenizer, dtype = o.dtype, load_format = o.load_format,
      seed = o.seed, device = o.device, max_model_len = o.max_model_len, block_size = o.block_size,
      max_num_seqs = o.max_num_seqs, max_num_batched_tokens = o.max_num_batched_tokens,
      enable_prefix_caching = o.enable_prefix_caching, enable_chunked_prefill = o.enable_chunked_prefill,
      kv_cache_memory_bytes = o.kv_cache_memory_bytes, num_threads = o.num_threads,
      gpu_memory_utilization = o.gpu_memory_utilization, enforce_eager = o.enforce_eager,
      tensor_parallel_size = o.tensor_parallel_size, pipeline_parallel_size = o.pipeline_parallel_size,
      data_parallel_size = o.data_parallel_size, chat_template = o.chat_template,
      chat_template_content_format = o.chat_template_content_format,
    })
    if not llm then fail(err) end
    -- the model's generation_config.json fills what the flags leave unset, as vLLM does
    local sp, serr = require("lunar.sampling").SamplingParams(fields, llm.generation_defaults)
    if not sp then fail(serr) end
    local outs, gerr
    if o.chat then
      local convs = {}
      for i, p in ipairs(prompts) do
        convs[i] = {}
        if o.system then convs[i][#convs[i] + 1] = { role = "system", content = o.system } end
        convs[i][#convs[i] + 1] = { role = "user", content = p }
      end
      outs, gerr = llm:chat(convs, sp)
    else
      outs, gerr = llm:generate(prompts, sp)
    end
    if not outs then fail(gerr) end
    if o.json then
      print(util.json.encode(jsonable(outs)))
    else
      for _, ro in ipairs(outs) do
        for _, c in ipairs(ro.outputs) do
          if #outs > 1 or #ro.outputs > 1 then
            io.write(string.format("[%s.%d] ", ro.request_id, c.index))
          end
          io.write((ro.prompt or ""), c.text, "\n")
        end
      end
    end
    llm:close()
    return 0
  end,
}
