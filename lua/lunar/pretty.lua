-- lunar.pretty — a compact, cycle-safe printer for Lua values (the REPL's result printer).
-- Arrays print as {1, 2, 3}; maps with sorted keys; nested tables are indented past a width.
local M = {}

local function is_ident(s) return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function fmt(v, indent, seen, depth, maxdepth)
  local t = type(v)
  if t == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  if t ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth >= maxdepth then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = fmt(v[i], indent .. "  ", seen, depth + 1, maxdepth) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    local ks = is_ident(k) and k or ("[" .. fmt(k, indent, seen, depth + 1, maxdepth) .. "]")
    parts[#parts + 1] = ks .. " = " .. fmt(v[k], indent .. "  ", seen, depth + 1, maxdepth)
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  local flat = "{" .. table.concat(parts, ", ") .. "}"
  if #flat + #indent <= 100 and not flat:find("\n") then return flat end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function M.format(v, maxdepth) return (fmt(v, "", {}, 0, maxdepth or 6)) end

return M
