-- Jinja lexer: template text -> a flat token list (data, block_begin ... block_end,
-- variable_begin ... variable_end), following Jinja2 3.1's lexer as transformers configures it:
-- trim_blocks (drop the first newline after %} and #}), lstrip_blocks (drop spaces/tabs that
-- start a line before {% and {#), `-` and `+` whitespace control, newlines normalised to \n and
-- one trailing newline removed (keep_trailing_newline=False). Every token keeps its byte
-- position so errors can name a line and column.
local M = {}

local sub, find, byte, match = string.sub, string.find, string.byte, string.match

local function err(msg, pos) error({ jinja = msg, kind = "TemplateSyntaxError", pos = pos }, 0) end

local ops3 = { ["//"] = true, ["**"] = true, ["=="] = true, ["!="] = true, [">="] = true, ["<="] = true }
local ops1 = "+-/*%~[](){}<>=.:|,;"

local escapes = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ["'"] = "'", ['"'] = '"', a = "\a",
  b = "\b", f = "\f", v = "\v", ["0"] = "\0", ["\n"] = "" }

local function utf8char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end
M.utf8char = utf8char

-- the value of a string literal body (Python unicode-escape decoding)
local function unescape(s, pos)
  if not find(s, "\\", 1, true) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = sub(s, i, i)
    if c ~= "\\" then
      out[#out + 1] = c
      i = i + 1
    else
      local e = sub(s, i + 1, i + 1)
      if e == "x" or e == "u" or e == "U" then
        local len = e == "x" and 2 or e == "u" and 4 or 8
        local hex = sub(s, i + 2, i + 1 + len)
        if not match(hex, "^%x+$") or #hex ~= len then err("invalid \\" .. e .. " escape in string", pos) end
        out[#out + 1] = utf8char(tonumber(hex, 16))
        i = i + 2 + len
      elseif escapes[e] then
        out[#out + 1] = escapes[e]
        i = i + 2
      else
        out[#out + 1] = "\\" .. e
        i = i + 2
      end
    end
  end
  return table.concat(out)
end

-- tokens of one tag's expression, starting at pos, up to its end marker
-- returns the index just after the end marker (and after any whitespace it strips)
local function lex_expr(src, pos, toks, closer, trim_newline)
  local depth = 0
  local n = #src
  while true do
    local s, e = find(src, "^[ \t\n\r\f\v]+", pos)
    if s then pos = e + 1 end
    if pos > n then err("unexpected end of template, expected '" .. closer .. "'", pos) end
    local c = sub(src, pos, pos)
    if depth == 0 then
      if c == "-" and sub(src, pos + 1, pos + 2) == closer then
        local _, e2 = find(src, "^[ \t\n\r\f\v]*", pos + 3)
        return e2 + 1
      elseif c == "+" and sub(src, pos + 1, pos + 2) == closer then
        return pos + 3
      elseif sub(src, pos, pos + 1) == closer then
        pos = pos + 2
        if trim_newline and sub(src, pos, pos) == "\n" then pos = pos + 1 end
        return pos
      end
    end
    local tok
    local m = match(src, "^[%a_][%w_]*", pos)
    if m then
      tok = { t = "name", v = m, pos = pos }
      pos = pos + #m
    elseif c == "'" or c == '"' then
      local i = pos + 1
      while true do
        local ch = sub(src, i, i)
        if ch == "" then err("unexpected end of string", pos) end
        if ch == "\\" then i = i + 2
        elseif ch == c then break
        else i = i + 1 end
      end
      tok = { t = "string", v = unescape(sub(src, pos + 1, i - 1), pos), pos = pos }
      pos = i + 1
    elseif find(c, "%d") then
      local f = match(src, "^%d[%d_]*%.%d[%d_]*[eE][-+]?%d[%d_]*", pos) or match(src, "^%d[%d_]*[eE][-+]?%d[%d_]*", pos)
        or match(src, "^%d[%d_]*%.%d[%d_]*", pos)
      if f then
        tok = { t = "float", v = tonumber((f:gsub("_", ""))), pos = pos }
        pos = pos + #f
      else
        local i = match(src, "^%d[%d_]*", pos)
        tok = { t = "int", v = tonumber((i:gsub("_", ""))), pos = pos }
        pos = pos + #i
      end
    else
      local two = sub(src, pos, pos + 1)
      if ops3[two] then
        tok = { t = "op", v = two, pos = pos }
        pos = pos + 2
      elseif find(ops1, c, 1, true) then
        tok = { t = "op", v = c, pos = pos }
        pos = pos + 1
        if c == "(" or c == "[" or c == "{" then depth = depth + 1
        elseif c == ")" or c == "]" or c == "}" then
          depth = depth - 1
          if depth < 0 then err("unexpected '" .. c .. "'", pos - 1) end
        end
      else
        err("unexpected char '" .. c .. "'", pos)
      end
    end
    toks[#toks + 1] = tok
  end
end

-- o = {trim_blocks=true, lstrip_blocks=true}; returns the token list and the normalised source
function M.lex(src, o)
  local trim = o.trim_blocks ~= false
  local lstrip = o.lstrip_blocks ~= false
  src = src:gsub("\r\n", "\n"):gsub("\r", "\n")
  if sub(src, -1) == "\n" then src = sub(src, 1, -2) end
  local toks = {}
  local pos, n = 1, #src
  local line_starting = true
  while pos <= n do
    local s = find(src, "{[{%%#]", pos)
    local text = sub(src, pos, (s or n + 1) - 1)
    if not s then
      toks[#toks + 1] = { t = "data", v = text, pos = pos }
      break
    end
    local kind = sub(src, s + 1, s + 1)
    local sign = sub(src, s + 2, s + 2)
    if sign == "-" then
      text = text:gsub("[ \t\n\r\f\v]+$", "")
    elseif sign ~= "+" and lstrip and kind ~= "{" then
      local l = 0
      local i = find(text, "\n[^\n]*$")
      if i then l = i end
      if (l > 0 or line_starting) and not find(text, "[^ \t]", l + 1) then text = sub(text, 1, l) end
    end
    if text ~= "" then toks[#toks + 1] = { t = "data", v = text, pos = pos } end
    local start = s + 2
    if sign == "-" or sign == "+" then start = start + 1 end
    if kind == "#" then
      local e = find(src, "#}", start, true)
      if not e then err("missing end of comment tag", s) end
      local c = sub(src, e - 1, e - 1)
      pos = e + 2
      if c == "-" and e - 1 >= start then
        local _, e2 = find(src, "^[ \t\n\r\f\v]*", pos)
        pos = e2 + 1
      elseif not (c == "+" and e - 1 >= start) and trim and sub(src, pos, pos) == "\n" then
        pos = pos + 1
      end
    elseif kind == "%" and match(src, "^%s*raw%s*[-+]?%%}", start) then
      local _, e0 = find(src, "^%s*raw%s*[-+]?%%}", start)
      local rs = sub(src, e0 - 2, e0 - 2) -- sign before %}
      local body_start = e0 + 1
      if rs == "-" then local _, e2 = find(src, "^%s*", body_start) body_start = e2 + 1
      elseif rs ~= "+" and trim and sub(src, body_start, body_start) == "\n" then body_start = body_start + 1 end
      local es, ee, esign1, esign2 = find(src, "{%%([-+]?)%s*endraw%s*([-+]?)%%}", body_start)
      if not es then err("missing end of raw directive", s) end
      local body = sub(src, body_start, es - 1)
      if esign1 == "-" then body = body:gsub("%s+$", "") end
      toks[#toks + 1] = { t = "data", v = body, pos = body_start }
      pos = ee + 1
      if esign2 == "-" then local _, e2 = find(src, "^%s*", pos) pos = e2 + 1
      elseif esign2 ~= "+" and trim and sub(src, pos, pos) == "\n" then pos = pos + 1 end
    else
      local is_block = kind == "%"
      toks[#toks + 1] = { t = is_block and "block_begin" or "variable_begin", pos = s }
      pos = lex_expr(src, start, toks, is_block and "%}" or "}}", is_block and trim)
      toks[#toks + 1] = { t = is_block and "block_end" or "variable_end", pos = pos - 1 }
    end
    line_starting = sub(src, pos - 1, pos - 1) == "\n"
  end
  toks[#toks + 1] = { t = "eof", pos = n + 1 }
  return toks, src
end

-- 1-based line and column of a byte position
function M.linecol(src, pos)
  local line, last = 1, 0
  for i in src:sub(1, pos - 1):gmatch("()\n") do line = line + 1 last = i end
  return line, pos - last
end

return M
