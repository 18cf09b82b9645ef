-- `lunar run SCRIPT.lua [args]`: runs a user's Lua script with `require "lunar"` available
-- and the script's own arguments in `arg` (arg[0] = the script), as `luajit SCRIPT` would.
return {
  summary = "run a Lua script with the lunar library available",
  usage = "lunar run SCRIPT.lua [ARGS...]",
  raw_args = true,
  run = function(_, pos)
    local script = pos[1]
    if not script then error("lunar: run needs a script: lunar run SCRIPT.lua [ARGS...]", 0) end
    local chunk, err = loadfile(script)
    if not chunk then error("lunar: " .. err, 0) end
    local a = { [0] = script }
    for i = 2, #pos do a[i - 1] = pos[i] end
    _G.arg = a
    local rc = chunk(unpack(a))
    return type(rc) == "number" and rc or 0
  end,
}
