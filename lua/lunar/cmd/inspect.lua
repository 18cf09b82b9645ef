-- `lunar inspect MODEL`: what a model folder holds — architecture, shapes, parameter count by
-- group, dtype, weight files — read from config.json and the weight files' headers only
-- (files are mapped, no weight byte is read). --load-format dummy needs config.json alone.
local args = require "lunar.args"
local model = require "lunar.model"
local util = require "lunar.util"
local commas = model.commas

local function short(n)
  if n >= 1e9 then return string.format("%.2fB", n / 1e9) end
  if n >= 1e6 then return string.format("%.2fM", n / 1e6) end
  if n >= 1e3 then return string.format("%.1fK", n / 1e3) end
  return tostring(n)
end

local function gather(dir, o)
  local m, err = model.load(dir, { load_format = o.load_format, config_only = true })
  if not m then return nil, err end
  local counts = assert(model.param_count(m.cconfig))
  local files, total_size = m:files(), 0
  for _, f in ipairs(files) do total_size = total_size + f.size end
  local tensors = m:tensors()
  local stored = {}
  for _, t in ipairs(tensors) do stored[t.dtype] = (stored[t.dtype] or 0) + 1 end
  local info = {
    model = dir, architecture = m.config.architecture, model_type = m.config.model_type, format = m.format,
    torch_dtype = m.config.torch_dtype, stored_dtypes = stored, config = m.config,
    parameters = { total = counts.total, active = counts.active, groups = counts.groups },
    files = files, file_bytes = total_size, tensor_count = #tensors,
  }
  if o.tensors then info.tensors = tensors end
  m:free()
  return info
end

local function print_text(info)
  local c = info.config
  local p = print
  p(string.format("model         %s", info.model))
  p(string.format("architecture  %s (model_type %s)", c.architecture, c.model_type))
  local feats = {}
  if c.tie_word_embeddings then feats[#feats + 1] = "tied embeddings" end
  if c.qkv_bias then feats[#feats + 1] = "q/k/v bias" end
  if c.o_bias then feats[#feats + 1] = "o bias" end
  if c.qk_norm then feats[#feats + 1] = "q/k RMSNorm" end
  if c.sliding_window > 0 then feats[#feats + 1] = "sliding window " .. c.sliding_window end
  if c.num_experts > 0 then
    feats[#feats + 1] = string.format("MoE %d experts, top-%d, expert intermediate %d", c.num_experts,
      c.num_experts_per_tok, c.moe_intermediate_size)
  end
  p(string.format("shape         %d layers, hidden %d, %d heads (%d kv, head_dim %d), intermediate %d, vocab %d",
    c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, c.vocab_size))
  p(string.format("context       %d positions; rope %s, theta %.10g%s", c.max_position_embeddings, c.rope.type, c.rope.theta,
    c.rope.type ~= "default" and string.format(", factor %g", c.rope.factor) or ""))
  p(string.format("features      %s; %s, rms_norm_eps %g", #feats > 0 and table.concat(feats, ", ") or "none",
    c.hidden_act, c.rms_norm_eps))
  local sd = {}
  for k, v in pairs(info.stored_dtypes) do sd[#sd + 1] = string.format("%s x%d", k, v) end
  table.sort(sd)
  p(string.format("dtype         %s (config.json); stored: %s", c.torch_dtype,
    info.format == "dummy" and "none (dummy weights)" or table.concat(sd, ", ")))
  local P = info.parameters
  p(string.format("parameters    %s (%s)%s", short(P.total), commas(P.total),
    P.active ~= P.total and string.format(", %s active per token", short(P.active)) or ""))
  for _, g in ipairs(model.param_groups) do
    local n = P.groups[g]
    if n > 0 then p(string.format("  %-11s %16s  %5.1f%%", g, commas(n), 100 * n / P.total)) end
  end
  if info.format == "dummy" then
    p("weights       dummy (deterministic random from config.json; no files)")
  else
    p(string.format("weights       %s, %d file%s, %s", info.format, #info.files, #info.files == 1 and "" or "s",
      util.bytes(info.file_bytes)))
    for _, f in ipairs(info.files) do
      p(string.format("  %-40s %12s", f.path:match("[^/]+$"), util.bytes(f.size)))
    end
  end
  p(string.format("tensors       %d%s", info.tensor_count, info.tensors and "" or " (--tensors lists them)"))
  if info.tensors then
    for _, t in ipairs(info.tensors) do
      local dims = {}
      for i, d in ipairs(t.shape) do dims[i] = tostring(d) end
      p(string.format("  %-60s %-5s [%s]", t.name, t.dtype, table.concat(dims, ", ")))
    end
  end
end

return {
  summary = "show a model's architecture, shapes, parameter counts, dtype and weight files",
  usage = "lunar inspect MODEL [--tensors] [--json] [--load-format auto|safetensors|pt|dummy]",
  flags = {
    { name = "--tensors", type = "bool", default = false, help = "list every tensor (name, dtype, shape)" },
    { name = "--json", type = "bool", default = false, help = "print one JSON object" },
    { name = "--load-format", type = "choice", choices = { "auto", "safetensors", "pt", "dummy" }, default = "auto",
      help = "dummy: describe the model from config.json alone" },
  },
  gather = gather,
  run = function(o, pos)
    local dir = pos[1]
    if not dir or pos[2] then
      io.stderr:write("lunar inspect: expected one MODEL folder\nusage: lunar inspect MODEL [--tensors] [--json]\n")
      return 2
    end
    local info, err = gather(dir, o)
    if not info then
      io.stderr:write("lunar inspect: ", err, "\n")
      return 1
    end
    if o.json then
      print(util.json.encode(info))
    else
      print_text(info)
    end
    return 0
  end,
}
