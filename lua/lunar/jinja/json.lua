-- An order-preserving JSON decoder into the Jinja engine's Python values: objects become dicts
-- that keep their key order, 1 stays an int and 1.0 a float, null becomes None. Chat templates
-- print tool schemas with tojson, whose key order must be the order of the request's JSON
-- (lua-cjson would lose it). decode(text) -> value | nil, err
local V = require "lunar.jinja.value"
local utf8char = require("lunar.jinja.lexer").utf8char

local M = {}
local byte, sub, find, match = string.byte, string.sub, string.find, string.match

local function fail(s, pos, msg)
  local line = 1
  for _ in sub(s, 1, pos - 1):gmatch("\n") do line = line + 1 end
  error({ json = string.format("JSON line %d (byte %d): %s", line, pos, msg) }, 0)
end

local function ws(s, pos)
  local _, e = find(s, "^[ \t\r\n]*", pos)
  return e + 1
end

local esc = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function str(s, pos)
  local out = {}
  local i = pos + 1
  while true do
    local a = find(s, '["\\%z\1-\31]', i)
    if not a then fail(s, pos, "unterminated string") end
    out[#out + 1] = sub(s, i, a - 1)
    local c = sub(s, a, a)
    if c == '"' then return table.concat(out), a + 1 end
    if c ~= "\\" then fail(s, a, "control character in string") end
    local e = sub(s, a + 1, a + 1)
    if esc[e] then
      out[#out + 1] = esc[e]
      i = a + 2
    elseif e == "u" then
      local hex = match(s, "^%x%x%x%x", a + 2)
      if not hex then fail(s, a, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = a + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = match(s, "^\\u(%x%x%x%x)", i)
        if lo and tonumber(lo, 16) >= 0xDC00 and tonumber(lo, 16) <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(lo, 16) - 0xDC00)
          i = i + 6
        end
      end
      out[#out + 1] = utf8char(cp)
    else
      fail(s, a, "bad escape")
    end
  end
end

local value
value = function(s, pos, depth)
  if depth > 500 then fail(s, pos, "nested too deep") end
  pos = ws(s, pos)
  local c = sub(s, pos, pos)
  if c == "{" then
    local d = V.dict()
    pos = ws(s, pos + 1)
    if sub(s, pos, pos) == "}" then return d, pos + 1 end
    while true do
      pos = ws(s, pos)
      if sub(s, pos, pos) ~= '"' then fail(s, pos, "expected a string key") end
      local k
      k, pos = str(s, pos)
      pos = ws(s, pos)
      if sub(s, pos, pos) ~= ":" then fail(s, pos, "expected ':'") end
      local v
      v, pos = value(s, pos + 1, depth + 1)
      V.dset(d, k, v)
      pos = ws(s, pos)
      c = sub(s, pos, pos)
      if c == "}" then return d, pos + 1 end
      if c ~= "," then fail(s, pos, "expected ',' or '}'") end
      pos = pos + 1
    end
  elseif c == "[" then
    local l = V.list()
    pos = ws(s, pos + 1)
    if sub(s, pos, pos) == "]" then return l, pos + 1 end
    while true do
      local v
      v, pos = value(s, pos, depth + 1)
      l[#l + 1] = v
      pos = ws(s, pos)
      c = sub(s, pos, pos)
      if c == "]" then return l, pos + 1 end
      if c ~= "," then fail(s, pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then
    return str(s, pos)
  elseif find(s, "^true", pos) then return true, pos + 4
  elseif find(s, "^false", pos) then return false, pos + 5
  elseif find(s, "^null", pos) then return V.NONE, pos + 4
  end
  local num = match(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if num and num ~= "" and num ~= "-" then
    local n = tonumber(num)
    if not n then fail(s, pos, "bad number") end
    if find(num, "[.eE]") then return V.float(n), pos + #num end
    return n, pos + #num
  end
  fail(s, pos, "unexpected " .. (c == "" and "end of text" or ("'" .. c .. "'")))
end

function M.decode(s)
  if type(s) ~= "string" then return nil, "JSON: expected text" end
  local ok, v, pos = pcall(value, s, 1, 0)
  if not ok then return nil, type(v) == "table" and v.json or tostring(v) end
  pos = ws(s, pos)
  if pos <= #s then return nil, "JSON: trailing text at byte " .. pos end
  return v
end

function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  local v, derr = M.decode(s)
  if v == nil then return nil, path .. ": " .. derr end
  return v
end

-- plain text of a value as JSON (compact, as json.dumps(separators=(',', ':')))
function M.encode(v) return V.dumps(v, { sep_item = ",", sep_key = ":" }) end

return M
