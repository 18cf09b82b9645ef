-- `lunar template render (--model DIR | --template FILE) --messages FILE.json [...]`: print the
-- exact prompt a chat request would produce, so a user writing or debugging a template sees what
-- the model will read (and with --tokens, the ids it will be given).
local template = require "lunar.template"
local json = require "lunar.jinja.json"
local V = require "lunar.jinja.value"

local function fail(msg) error("lunar: template: " .. msg, 0) end

local function read_json(path, what)
  local v, err
  if path == "-" then v, err = json.decode(io.read("*a")) else v, err = json.read(path) end
  if v == nil then fail(what .. ": " .. tostring(err)) end
  return v
end

return {
  summary = "render a chat template over a conversation (the exact prompt text)",
  usage = "lunar template render (--model DIR | --template FILE) --messages FILE.json "
    .. "[--add-generation-prompt] [--continue-final-message] [--tools FILE.json] [--vars FILE.json] [--tokens]",
  flags = {
    { name = "--model", type = "string", help = "model folder: its own template, else a built-in by model_type" },
    { name = "--template", type = "string", help = "template file, inline Jinja or built-in name (as --chat-template)" },
    { name = "--chat-template", type = "string", help = "same as --template" },
    { name = "--messages", type = "string", help = "JSON list of {role, content, ...} ('-' = stdin)" },
    { name = "--add-generation-prompt", type = "bool", default = false, help = "open the assistant's turn" },
    { name = "--continue-final-message", type = "bool", default = false,
      help = "end the prompt inside the last message, to continue it" },
    { name = "--tools", type = "string", help = "JSON list of tool schemas" },
    { name = "--vars", type = "string", help = "JSON object of extra template variables (chat_template_kwargs)" },
    { name = "--tokens", type = "bool", default = false, help = "also print the token ids (needs --model)" },
    { name = "--chat-template-content-format", type = "choice", choices = { "auto", "string", "openai", "raw" },
      default = "auto", help = "messages as vLLM hands them to the template (auto: detected from the "
        .. "template, as the server does); raw: untouched, as transformers' apply_chat_template" },
  },
  run = function(o, pos)
    if pos[1] ~= "render" then fail("the only subcommand is 'render'; see --help") end
    if not o.messages then fail("needs --messages FILE.json") end
    local flag = o.template or o.chat_template
    if not flag and not o.model then fail("needs --model DIR or --template FILE") end
    local messages = read_json(o.messages, "--messages")
    if not V.is_seq(messages) then fail("--messages must hold a JSON list of messages") end
    local tools = o.tools and read_json(o.tools, "--tools") or nil
    local kwargs = o.vars and read_json(o.vars, "--vars") or nil
    if kwargs and not V.is_map(kwargs) then fail("--vars must hold a JSON object") end
    -- what LLM:chat and the server do with this model and --chat-template
    local llm = { opts = { model = o.model, chat_template = flag } }
    local text, err = template.apply(llm, messages, {
      add_generation_prompt = o.add_generation_prompt, continue_final_message = o.continue_final_message
        or nil, tools = tools, chat_template_kwargs = kwargs, content_format = o.chat_template_content_format,
    })
    if not text then fail(err) end
    io.write(text)
    if o.tokens then
      if not o.model then fail("--tokens needs --model DIR (its tokenizer)") end
      local tok, terr = require("lunar.tokenizer").load(o.model)
      if not tok then fail(terr) end
      local ids, eerr = tok:encode(text, { add_special_tokens = false })
      if not ids then fail(eerr) end
      local parts = {}
      for i, id in ipairs(ids) do parts[i] = tostring(id) end
      io.write("\n", "[", table.concat(parts, ","), "]\n")
      io.stderr:write(string.format("%d tokens\n", #ids))
    end
    return 0
  end,
}
