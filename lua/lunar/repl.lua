-- lunar.repl — an interactive LuaJIT prompt with `lunar` (and a loaded `llm`) ready.
--
-- Line editing and history come from GNU readline through the FFI when stdin is a terminal
-- (history in ~/.lunar_history); otherwise lines are read plainly, so the REPL can be driven
-- by a pipe in tests. A line is first tried as an expression (`1+1` prints 2), then as a
-- statement; an incomplete chunk (an open `function`, `do`, string...) continues on the next
-- line. Errors are printed and the session goes on.
local ffi = require "ffi"
local pretty = require "lunar.pretty"

local M = {}

ffi.cdef [[
char *readline(const char *prompt);
void add_history(const char *line);
int read_history(const char *filename);
int write_history(const char *filename);
void free(void *p);
int isatty(int fd);
]]

local function line_reader(interactive)
  if interactive then
    local ok, rl = pcall(ffi.load, "readline.so.8")
    if not ok then ok, rl = pcall(ffi.load, "readline") end
    if ok then
      local home = os.getenv("HOME")
      local hist = home and (home .. "/.lunar_history") or nil
      if hist then rl.read_history(hist) end
      return function(prompt)
        local p = rl.readline(prompt)
        if p == nil then return nil end
        local s = ffi.string(p)
        ffi.C.free(p)
        if s:match("%S") then
          rl.add_history(s)
          if hist then rl.write_history(hist) end
        end
        return s
      end
    end
  end
  return function(prompt)
    if interactive then io.write(prompt) io.flush() end
    return io.read("*l")
  end
end

local function pack(...) return { n = select("#", ...), ... } end

local function print_results(out, n, ...)
  local vals = { ... }
  local parts = {}
  for i = 1, n do parts[i] = pretty.format(vals[i]) end
  if n > 0 then out(table.concat(parts, "\t") .. "\n") end
end

-- Runs the REPL. opts: env (table of globals added to the session), input (function(prompt)
-- -> line|nil, for tests), out (function(s)), banner (string).
function M.run(opts)
  opts = opts or {}
  local interactive = opts.input == nil and ffi.C.isatty(0) == 1
  local read = opts.input or line_reader(interactive)
  local out = opts.out or function(s) io.stdout:write(s) io.stdout:flush() end
  local env = setmetatable({}, { __index = _G })
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local done = false
  env.exit = function() done = true end
  env.quit = env.exit
  if opts.banner and interactive then out(opts.banner .. "\n") end
  local buffer = nil
  while not done do
    local line = read(buffer and ">> " or "lunar> ")
    if line == nil then break end
    local src = buffer and (buffer .. "\n" .. line) or line
    local chunk, err = loadstring("return " .. src, "=repl")
    if not chunk then chunk, err = loadstring(src, "=repl") end
    if not chunk and err and err:find("<eof>", 1, true) then
      buffer = src -- incomplete: keep reading
    else
      buffer = nil
      if not chunk then
        out("error: " .. err .. "\n")
      else
        setfenv(chunk, env)
        local res = pack(xpcall(chunk, function(e)
          -- keep the frames of the user's code, drop the REPL's own
          local tb = debug.traceback(tostring(e), 2)
          tb = tb:gsub("\n\t%[C%]: in function 'xpcall'.*$", "")
          return (tb:gsub("\nstack traceback:$", ""))
        end))
        if res[1] then
          print_results(out, res.n - 1, unpack(res, 2, res.n))
        else
          out("error: " .. tostring(res[2]) .. "\n")
        end
      end
    end
  end
  if interactive then out("\n") end
  return 0
end

return M
