-- `lunar repl [MODEL]`: an interactive LuaJIT prompt with `lunar` loaded and, given a model,
-- `llm` ready (lunar.LLM with the engine flags), so one can try prompts, sampling settings,
-- templates and logits processors without writing a script.
local args = require "lunar.args"

local flags = args.join(args.engine_flags, {
  { name = "--exec", alias = "-e", type = "string", help = "run this Lua first (like luajit -e)" },
})

return {
  summary = "interactive Lua prompt with lunar (and an LLM when MODEL is given)",
  usage = "lunar repl [MODEL] [engine flags] [-e LUA]",
  flags = flags,
  run = function(o, pos)
    local lunar = require "lunar"
    local env = { lunar = lunar }
    local banner = "lunar " .. lunar.version .. " REPL — Lua expressions print their value; exit() or Ctrl-D leaves."
    if pos[1] then
      o.model = pos[1]
      local llm, err = lunar.LLM(o)
      if not llm then error("lunar: " .. tostring(err), 0) end
      env.llm = llm
      banner = banner .. "\n`llm` is " .. pos[1] .. "; try llm:generate(\"Once upon a time\")"
    end
    if o.exec then
      local chunk, err = loadstring(o.exec, "=-e")
      if not chunk then error("lunar: " .. err, 0) end
      setfenv(chunk, setmetatable(env, { __index = _G }))
      chunk()
    end
    return require("lunar.repl").run({ env = env, banner = banner })
  end,
}
