-- `lunar tokenize MODEL (--text T | --file F)`: the ids (and with --verbose the tokens) the
-- model's tokenizer gives a text, exactly as a request would be encoded.
local T = require "lunar.tokenizer"
local util = require "lunar.util"

local function json_list(t, quote)
  local out = {}
  for i, v in ipairs(t) do out[i] = quote and util.json.encode(v) or tostring(v) end
  return "[" .. table.concat(out, ",") .. "]"
end

return {
  summary = "print the token ids of a text (with --verbose also the tokens)",
  usage = "lunar tokenize MODEL (--text T | --file F) [--no-special-tokens] [--split-special-tokens] [--json] [--verbose]",
  flags = {
    { name = "--text", type = "string", help = "the text to encode" },
    { name = "--file", type = "string", help = "encode the contents of this file ('-' = stdin)" },
    { name = "--no-special-tokens", type = "bool", default = false,
      help = "do not add bos/eos or the post-processor's special tokens" },
    { name = "--split-special-tokens", type = "bool", default = false,
      help = "treat special-token strings in the text as plain text" },
    { name = "--json", type = "bool", default = false, help = "print one JSON object" },
    { name = "--verbose", alias = "-v", type = "bool", default = false, help = "also print each id's token" },
  },
  run = function(o, pos)
    local dir = pos[1]
    if not dir then error("lunar: tokenize: needs a MODEL folder; see --help", 0) end
    local text
    if o.text and o.file then error("lunar: tokenize: give --text or --file, not both", 0) end
    if o.text then
      text = o.text
    elseif o.file then
      local err
      if o.file == "-" then text = io.read("*a") else text, err = util.read_file(o.file) end
      if not text then error("lunar: tokenize: " .. tostring(err), 0) end
    else
      error("lunar: tokenize: needs --text T or --file F", 0)
    end
    local tok, err = T.load(dir)
    if not tok then error("lunar: tokenize: " .. err, 0) end
    local ids, eerr = tok:encode(text, { add_special_tokens = not o.no_special_tokens,
      split_special_tokens = o.split_special_tokens })
    if not ids then error("lunar: tokenize: " .. eerr, 0) end
    if o.json then
      local s = '{"count":' .. #ids .. ',"ids":' .. json_list(ids)
      if o.verbose then
        local toks = {}
        for i, id in ipairs(ids) do toks[i] = tok:id_to_token(id) end
        s = s .. ',"tokens":' .. json_list(toks, true)
      end
      print(s .. "}")
      return 0
    end
    print(json_list(ids))
    if o.verbose then
      for _, id in ipairs(ids) do
        print(string.format("%8d  %s%s", id, util.json.encode(tok:id_to_token(id)), tok:is_special(id) and "  (special)" or ""))
      end
      print(string.format("%d tokens, %d bytes, %s", #ids, #text, tok.description))
    end
    return 0
  end,
}
