-- examples/offline_batch.lua — batch generation with the offline API, as with vLLM's LLM.
--
--   build/lunar run examples/offline_batch.lua [MODEL]
--
-- All prompts are submitted at once; the engine batches them continuously, so the batch
-- finishes in about the time of its longest member.
local lunar = require "lunar"

local model = arg[1] or "../shared/models/TinyStories-656K"
local llm = assert(lunar.LLM{ model = model })

local prompts = {
  "Once upon a time",
  "The little dog",
  "Lily and Ben went to",
  "One day, a big bear",
}
local params = assert(lunar.SamplingParams{ temperature = 0.8, top_p = 0.95, seed = 42, max_tokens = 48 })

local outputs = assert(llm:generate(prompts, params))
for _, out in ipairs(outputs) do
  local c = out.outputs[1]
  print(string.format("Prompt: %q", out.prompt))
  print(string.format("  -> %q", c.text))
  print(string.format("  (%d prompt tokens, %d generated, finish_reason=%s)",
    #out.prompt_token_ids, #c.token_ids, c.finish_reason))
end
llm:close()
