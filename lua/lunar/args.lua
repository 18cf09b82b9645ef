-- lunar.args — command-line flags with vLLM's names, parsed the same way for every command.
--
-- A command declares its flags as data ({name, type, default, help, ...}); parse() returns
-- an options table keyed by the flag's name with dashes turned into underscores
-- (--max-model-len -> o.max_model_len). Accepted forms: `--flag value`, `--flag=value`,
-- `--flag` / `--no-flag` for booleans. An unknown flag is an error naming the closest known
-- one, never silently ignored: a vLLM user's typo must not change what runs.
local util = require "lunar.util"

local M = {}

local function dest(name) return (name:gsub("^%-%-", ""):gsub("%-", "_")) end

-- Flags shared by every command that builds an engine (generate, serve, repl, bench, memory).
M.engine_flags = {
  { name = "--dtype", type = "choice", choices = { "auto", "float16", "half", "bfloat16", "float32", "float" },
    default = "auto", help = "weight/activation dtype; auto = config.json's torch_dtype" },
  { name = "--load-format", type = "choice", choices = { "auto", "safetensors", "pt", "dummy" }, default = "auto",
    help = "weights from safetensors, pytorch_model.bin (pt), or deterministic random (dummy)" },
  { name = "--tokenizer", type = "string", help = "tokenizer folder (default: the model folder)" },
  { name = "--max-model-len", type = "int", help = "context length (prompt + output); default: the model's" },
  { name = "--gpu-memory-utilization", type = "float", default = 0.9,
    help = "fraction of GPU memory lunar may use (weights + activations + KV cache)" },
  { name = "--kv-cache-memory-bytes", type = "size", help = "KV cache size in bytes (overrides the utilization)" },
  { name = "--tensor-parallel-size", alias = "-tp", type = "int", default = 1, help = "GPUs a layer is split over" },
  { name = "--pipeline-parallel-size", alias = "-pp", type = "int", default = 1, help = "GPUs the layers are split over" },
  { name = "--data-parallel-size", alias = "-dp", type = "int", default = 1, help = "engine replicas" },
  { name = "--block-size", type = "int", default = 16, help = "tokens per KV cache block" },
  { name = "--max-num-seqs", type = "int", default = 256, help = "sequences in one step at most" },
  { name = "--max-num-batched-tokens", type = "int", help = "tokens in one step at most" },
  { name = "--seed", type = "int", default = 0, help = "seed for dummy weights and unseeded sampling" },
  { name = "--device", type = "choice", choices = { "auto", "cpu", "cuda" }, default = "auto",
    help = "backend: cuda when a GPU is present, else cpu" },
  { name = "--enforce-eager", type = "bool", default = false, help = "no CUDA graphs" },
  { name = "--enable-prefix-caching", type = "bool", default = true, help = "reuse cached KV blocks of shared prefixes" },
  { name = "--enable-chunked-prefill", type = "bool", default = true, help = "split long prompts across steps" },
  { name = "--chat-template", type = "string", help = "chat template: a file, inline Jinja or a built-in name (templates/)" },
  { name = "--chat-template-content-format", type = "choice", choices = { "auto", "string", "openai" }, default = "auto",
    help = "message content as the template sees it: text, or a list of parts (auto: detected from the template)" },
  { name = "--served-model-name", type = "list", nargs = "+", help = "name(s) clients use for the model" },
  { name = "--trust-remote-code", type = "bool", default = false,
    note = "--trust-remote-code is not needed: lunar runs no code from model folders (Baichuan, Qwen and "
        .. "the rest are built in), so the flag is accepted and changes nothing" },
}

-- Copies of flag lists, so a command can extend a shared group without changing it.
function M.join(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, f in ipairs(list) do out[#out + 1] = f end
  end
  return out
end

local function convert(flag, raw)
  local t = flag.type
  if t == "int" then
    local n = tonumber(raw)
    if not n or n ~= math.floor(n) then return nil, "expects an integer, got '" .. raw .. "'" end
    return n
  elseif t == "float" then
    local n = tonumber(raw)
    if not n or n ~= n then return nil, "expects a number, got '" .. raw .. "'" end
    return n
  elseif t == "size" then
    local num, unit = raw:match("^(%d+%.?%d*)%s*([KkMmGgTt]?)[Ii]?[Bb]?$")
    local n = tonumber(num)
    if not n then return nil, "expects a size like 4096, 512M or 8G, got '" .. raw .. "'" end
    local mul = ({ [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3, t = 1024 ^ 4 })[unit:lower()]
    return math.floor(n * mul)
  elseif t == "choice" then
    for _, c in ipairs(flag.choices) do
      if c == raw then return raw end
    end
    return nil, "must be one of " .. table.concat(flag.choices, ", ") .. "; got '" .. raw .. "'"
  elseif t == "bool" then
    local l = raw:lower()
    if l == "true" or l == "1" or l == "yes" then return true end
    if l == "false" or l == "0" or l == "no" then return false end
    return nil, "expects true or false, got '" .. raw .. "'"
  end
  return raw
end

-- parse(flags, argv, first) -> opts, positionals  |  nil, err
-- `argv` is a plain array; parsing starts at index `first` (default 1). "--" ends flags.
function M.parse(flags, argv, first)
  local byname, names = {}, {}
  for _, f in ipairs(flags) do
    byname[f.name] = f
    names[#names + 1] = f.name
    if f.alias then byname[f.alias] = f end
  end
  local opts, pos, notes = {}, {}, {}
  for _, f in ipairs(flags) do
    local d = f.default
    if type(d) == "table" then d = { unpack(d) } end
    opts[dest(f.name)] = d
  end
  local i = first or 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do pos[#pos + 1] = argv[j] end
      break
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      local name, val = a:match("^(%-%-?[^=]+)=(.*)$")
      name = name or a
      local f = byname[name]
      local negated = false
      if not f and name:sub(1, 5) == "--no-" then
        f = byname["--" .. name:sub(6)]
        if f and f.type == "bool" then negated = true else f = nil end
      end
      if not f then
        local hint = util.closest(name, names)
        return nil, "unknown flag " .. name .. (hint and (" (did you mean " .. hint .. "?)") or "")
          .. "; see --help"
      end
      local key = dest(f.name)
      if f.type == "bool" then
        if val ~= nil then
          local v, err = convert(f, val)
          if v == nil then return nil, f.name .. " " .. err end
          opts[key] = v
        else
          opts[key] = not negated
        end
      else
        if val == nil then
          i = i + 1
          val = argv[i]
          if val == nil then return nil, f.name .. " needs a value" end
        end
        if f.type == "list" then
          opts[key] = (opts[key] and opts[key] ~= f.default) and opts[key] or {}
          for _, part in ipairs({ val }) do opts[key][#opts[key] + 1] = part end
          -- vLLM takes several names after one flag: --served-model-name a b
          while argv[i + 1] and argv[i + 1]:sub(1, 1) ~= "-" and f.nargs == "+" do
            i = i + 1
            opts[key][#opts[key] + 1] = argv[i]
          end
        else
          local v, err = convert(f, val)
          if v == nil then return nil, f.name .. " " .. err end
          opts[key] = v
        end
      end
      if f.note then notes[#notes + 1] = f.note end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  opts._notes = notes
  return opts, pos
end

-- The --help text of a command: usage line, summary, and one line per flag.
function M.help(cmd)
  local out = { "usage: " .. cmd.usage, "", cmd.summary, "" }
  if cmd.flags and #cmd.flags > 0 then
    out[#out + 1] = "flags:"
    for _, f in ipairs(cmd.flags) do
      local lhs = f.name .. (f.alias and (", " .. f.alias) or "")
      if f.type ~= "bool" then lhs = lhs .. " " .. (f.metavar or f.type:upper()) end
      local rhs = f.help or ""
      if f.choices then rhs = rhs .. " {" .. table.concat(f.choices, ",") .. "}" end
      if f.default ~= nil and type(f.default) ~= "table" then rhs = rhs .. " (default: " .. tostring(f.default) .. ")" end
      out[#out + 1] = string.format("  %-34s %s", lhs, rhs)
    end
  end
  if cmd.epilog then out[#out + 1] = "" out[#out + 1] = cmd.epilog end
  return table.concat(out, "\n")
end

return M
