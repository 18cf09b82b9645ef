-- `lunar detokenize MODEL --ids '[...]'`: the text a list of token ids decodes to.
local T = require "lunar.tokenizer"
local util = require "lunar.util"

return {
  summary = "print the text that token ids decode to",
  usage = "lunar detokenize MODEL --ids '[1, 2, 3]' [--skip-special-tokens] [--json]",
  flags = {
    { name = "--ids", type = "string", help = "ids as a JSON list, or separated by commas/spaces" },
    { name = "--skip-special-tokens", type = "bool", default = false, help = "leave special tokens out" },
    { name = "--json", type = "bool", default = false, help = "print {\"text\": ...}" },
  },
  run = function(o, pos)
    local dir = pos[1]
    if not dir then error("lunar: detokenize: needs a MODEL folder; see --help", 0) end
    if not o.ids then error("lunar: detokenize: needs --ids '[...]'", 0) end
    local ids = {}
    local body = o.ids:gsub("^%s*%[", ""):gsub("%]%s*$", "")
    for item in body:gmatch("[^,%s]+") do
      local n = tonumber(item)
      if not n or n ~= math.floor(n) then error("lunar: detokenize: not an id: '" .. item .. "'", 0) end
      ids[#ids + 1] = n
    end
    local tok, err = T.load(dir)
    if not tok then error("lunar: detokenize: " .. err, 0) end
    local text, derr = tok:decode(ids, { skip_special_tokens = o.skip_special_tokens })
    if not text then error("lunar: detokenize: " .. derr, 0) end
    if o.json then print(util.json.encode({ text = text })) else io.write(text, "\n") end
    return 0
  end,
}
