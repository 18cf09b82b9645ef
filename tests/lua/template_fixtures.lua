-- Shared by the template specs and the benchmark: load the Jinja2 fixtures and render a case
-- with lunar.jinja under the same inputs the Python generator used.
local jinja = require "lunar.jinja"
local json = require "lunar.jinja.json"
local V = jinja.value

local M = {}
M.dir = (os.getenv("LUNAR_SRC") or ".") .. "/tests/fixtures/template"
M.shared = os.getenv("LUNAR_SHARED") or "../shared"

-- strftime_now pinned to the generator's date (2024-07-26 12:00)
local FIXED = os.time { year = 2024, month = 7, day = 26, hour = 12, min = 0, sec = 0 }
M.strftime_now = V.func("strftime_now", function(_, a) return os.date(V.str(a[1]), FIXED) end)

function M.conversations()
  local convs = assert(json.read(M.dir .. "/conversations.json"))
  local by_name = {}
  for _, c in ipairs(convs) do by_name[V.dget(c, "name")] = c end
  return by_name
end

function M.template_path(ref)
  local shared = ref:match("^shared:(.*)$")
  if shared then return M.shared .. "/" .. shared end
  return (os.getenv("LUNAR_SRC") or ".") .. "/" .. ref
end

function M.fixtures()
  local out = {}
  local p = io.popen('ls "' .. M.dir .. '"')
  for f in p:lines() do
    if f:match("%.json$") and not f:match("^conversations") and not f:match("^snippets") then
      out[#out + 1] = { name = f:gsub("%.json$", ""), data = assert(json.read(M.dir .. "/" .. f)) }
    end
  end
  p:close()
  return out
end

function M.vars(conv, agp, tokens)
  local vars = {
    messages = V.dget(conv, "messages"),
    tools = V.dget(conv, "tools") or V.NONE,
    documents = V.NONE,
    add_generation_prompt = agp,
    strftime_now = M.strftime_now,
  }
  for _, k in ipairs(tokens.keys) do vars[k] = tokens.map[k] end
  return vars
end

return M
