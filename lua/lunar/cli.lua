-- lunar.cli — the command line: `lunar COMMAND [flags]`.
--
-- Each command is a module lua/lunar/cmd/<name>.lua returning
--   { summary = "...", usage = "...", flags = {...}, run = function(opts, positionals) }
-- This file only dispatches, prints help, and turns a bad flag into a message that suggests
-- the right one. Errors meant for a person are raised as "lunar: ..." strings; the host
-- prints them without a traceback and exits 1.
local args = require "lunar.args"
local util = require "lunar.util"

local M = {}

-- In the order `lunar --help` lists them.
M.commands = { "version", "run", "inspect", "memory", "tokenize", "detokenize", "template",
  "generate", "repl", "serve", "bench" }

local function load_cmd(name)
  local ok, mod = pcall(require, "lunar.cmd." .. name)
  if ok then return mod end
  if not tostring(mod):find("module 'lunar.cmd." .. name .. "' not found", 1, true) then
    error(mod, 0) -- a real error inside the command's module
  end
  return nil
end

local function available()
  local list = {}
  for _, name in ipairs(M.commands) do
    local cmd = load_cmd(name)
    if cmd then list[#list + 1] = { name = name, cmd = cmd } end
  end
  return list
end

local function usage()
  local out = { "usage: lunar COMMAND [flags]   (lunar COMMAND --help for its flags)", "", "commands:" }
  for _, c in ipairs(available()) do
    out[#out + 1] = string.format("  %-12s %s", c.name, c.cmd.summary)
  end
  return table.concat(out, "\n")
end

function M.main(argv)
  local name = argv[1]
  if name == nil or name == "--help" or name == "-h" or name == "help" then
    if name == "help" and argv[2] then
      local cmd = load_cmd(argv[2])
      if cmd then print(args.help(cmd)) return 0 end
    end
    print(usage())
    return name == nil and 2 or 0
  end
  if name == "--version" or name == "-V" then name = "version" end
  local cmd = load_cmd(name)
  if not cmd then
    local names = {}
    for _, c in ipairs(available()) do names[#names + 1] = c.name end
    local hint = util.closest(name, names)
    io.stderr:write("lunar: unknown command '", name, "'", hint and ("; did you mean '" .. hint .. "'?") or "",
      "\n", usage(), "\n")
    return 2
  end
  for i = 2, #argv do
    if argv[i] == "--" then break end
    if argv[i] == "--help" or argv[i] == "-h" then
      print(args.help(cmd))
      return 0
    end
  end
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  local opts, pos
  if cmd.raw_args then
    opts, pos = {}, rest
  else
    local err
    opts, err = args.parse(cmd.flags or {}, rest)
    if not opts then
      io.stderr:write("lunar ", name, ": ", err, "\n")
      return 2
    end
    pos = err
    for _, n in ipairs(opts._notes) do io.stderr:write("note: ", n, "\n") end
  end
  local rc = cmd.run(opts, pos)
  return tonumber(rc) or 0
end

return M
