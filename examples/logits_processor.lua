-- examples/logits_processor.lua — a Lua logits processor: the scripting hook vLLM has no
-- equivalent of without writing Python in the server.
--
--   build/lunar run examples/logits_processor.lua [MODEL]
--
-- A processor is called for its own request only, once per generated token, with the ids
-- generated so far and the logits row (a 0-based float array of vocab_size entries) that it
-- may change in place before sampling. Requests without one stay on the C fast path.
local lunar = require "lunar"

local model = arg[1] or "../shared/models/TinyStories-656K"
local llm = assert(lunar.LLM{ model = model })
local tok = llm.tokenizer

-- Ban every token whose text contains the letter "e" (a lipogram), and stop at a full stop.
local banned = {}
for id = 0, tok.vocab_size - 1 do
  local piece = tok:decode({ id }, { skip_special_tokens = false }) or ""
  if piece:find("[eE]") then banned[#banned + 1] = id end
end
local function no_e(generated_ids, logits, vocab_size)
  for _, id in ipairs(banned) do logits[id] = -math.huge end
end

local plain = assert(lunar.SamplingParams{ temperature = 0, max_tokens = 30 })
local lipogram = assert(lunar.SamplingParams{ temperature = 0, max_tokens = 30, logits_processors = { no_e } })
local outs = assert(llm:generate({ "Once upon a time", "Once upon a time" }, { plain, lipogram }))
print("plain:    " .. outs[1].outputs[1].text)
print("no 'e':   " .. outs[2].outputs[1].text)
assert(not outs[2].outputs[1].text:find("[eE]"), "the processor let an 'e' through")
llm:close()
