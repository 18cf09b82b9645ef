-- examples/chat_template.lua — chat with the offline API through a custom chat template, as with
-- vLLM's LLM.chat(messages, chat_template=...).
--
--   build/lunar run examples/chat_template.lua [MODEL]
--
-- The template below is ordinary Jinja as Hugging Face transformers runs it (trim_blocks,
-- lstrip_blocks, loop controls): the same file works in `lunar serve --chat-template FILE`,
-- `lunar template render --template FILE` and transformers' apply_chat_template. The model's
-- own template (or a built-in: `chat_template = "chatml"`) is used when none is passed.
local lunar = require "lunar"

local TEMPLATE = [[
{%- for m in messages -%}
  {%- if m.role == 'system' -%}{{ m.content }}{{ '\n\n' }}
  {%- elif m.role == 'user' -%}{{ 'Q: ' ~ m.content | trim ~ '\n' }}
  {%- elif m.role == 'assistant' -%}{{ 'A: ' ~ m.content | trim ~ '\n' }}
  {%- else -%}{{ raise_exception('unknown role ' ~ m.role) }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}A:{% endif -%}
]]

local model = arg[1] or "../shared/models/TinyStories-656K"
local llm = assert(lunar.LLM{ model = model })
local conversation = {
  { role = "system", content = "Stories for children." },
  { role = "user", content = "Who is Lily?" },
  { role = "assistant", content = "Lily is a little girl." },
  { role = "user", content = "What did she find?" },
}
local params = assert(lunar.SamplingParams{ temperature = 0, max_tokens = 24 })
local outs = assert(llm:chat(conversation, params, { chat_template = TEMPLATE }))
print("Prompt:\n" .. outs[1].prompt)
print("Reply: " .. outs[1].outputs[1].text)

-- a template error is returned, with the template's line and column
local _, err = llm:chat({ { role = "narrator", content = "x" } }, params, { chat_template = TEMPLATE })
print("Error: " .. tostring(err))
llm:close()
