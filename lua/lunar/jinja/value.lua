-- Python values for the Jinja engine: None, Undefined, int vs float, str, list, tuple, dict
-- (insertion-ordered), and the operations on them with Python's semantics (truthiness, str()
-- and repr(), ==, <, + - * / // % **, `in`, len). Chat templates are written against Python
-- Jinja2, so the printed text of 1.0, True, None or ['a'] must be Python's, byte for byte.
--
-- Representation: strings, booleans and ints are plain Lua values (ints are integral doubles);
-- floats are boxed (setmetatable({x}, Float)) so that 1.0 stays a float; None and Undefined
-- are sentinels; lists/tuples are arrays with a metatable; dicts keep {keys = {...}, map = {}}.
-- Lua nil never appears as a value. Errors are raised as tables {jinja = msg}; the interpreter
-- adds the template position.
local M = {}

local floor, huge, fmt, byte, sub, concat = math.floor, math.huge, string.format, string.byte, string.sub, table.concat

local function mt(name) return { __name = name } end
local List, Tuple, Dict, Float, Undef, NoneT = mt "list", mt "tuple", mt "dict", mt "float", mt "undefined", mt "NoneType"
local Namespace, Func, Macro, Loop, Method = mt "Namespace", mt "function", mt "Macro", mt "LoopContext", mt "method"
local Markup = mt "Markup"
M.List, M.Tuple, M.Dict, M.Float, M.Undef, M.Namespace, M.Func, M.Macro, M.Loop, M.Method, M.Markup =
  List, Tuple, Dict, Float, Undef, Namespace, Func, Macro, Loop, Method, Markup
local NONE = setmetatable({}, NoneT)
M.NONE = NONE
M.UNDEF = setmetatable({ hint = nil }, Undef)
-- key under which a call's keyword arguments keep their order (Python keeps call order)
M.KWORDER = setmetatable({}, { __name = "kworder" })

-- the longest string an operation may build, and the longest list; checked before building, so
-- a template's arguments (a width, a repeat count, a doubling loop) never make the server spend
-- seconds and gigabytes on one value. Template:render lowers MAX_STR to its max_output while
-- it runs: no string longer than the output may be is worth building.
M.MAX_STR = 64 * 1024 * 1024
M.MAX_LIST = 1024 * 1024

function M.raise(msg, kind) error({ jinja = msg, kind = kind or "TypeError" }, 0) end
local raise = M.raise

-- string.rep under MAX_STR (widths and indents come from templates and requests)
function M.rep(s, n)
  if type(n) ~= "number" then raise("an integer is required, not " .. M.typename(n)) end
  if n <= 0 then return "" end
  if #s * n > M.MAX_STR then raise("string too large", "SecurityError") end
  return string.rep(s, n)
end

-- table.concat under MAX_STR: join, replace and the other builders check the size first
function M.concat(t, sep, i, j)
  i, j = i or 1, j or #t
  local size = sep and #sep * math.max(j - i, 0) or 0
  for k = i, j do local x = t[k] size = size + (type(x) == "string" and #x or 24) end
  if size > M.MAX_STR then raise("string too large", "SecurityError") end
  return concat(t, sep or "", i, j)
end

function M.undefined(hint) return setmetatable({ hint = hint }, Undef) end
function M.undef_fail(u) raise(u.hint or "undefined value", "UndefinedError") end

-- Markup (what |safe returns): a str whose + and % escape the plain-str operand, as
-- markupsafe does even with autoescape off. Everywhere else it behaves as its plain text.
function M.markup(s) return setmetatable({ s }, Markup) end
function M.plain(v)
  if getmetatable(v) == Markup then return v[1] end
  return v
end
local function html_escape(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&#34;", ["'"] = "&#39;" }))
end
M.html_escape = html_escape

function M.list(t) return setmetatable(t or {}, List) end
function M.tuple(t) return setmetatable(t or {}, Tuple) end
function M.float(x) return setmetatable({ x }, Float) end
function M.dict() return setmetatable({ keys = {}, map = {} }, Dict) end
function M.namespace() return setmetatable({ keys = {}, map = {} }, Namespace) end
function M.func(name, fn) return setmetatable({ name = name, fn = fn }, Func) end

-- dict keys: Lua strings/booleans as themselves, numbers as numbers (1 and 1.0 are one key in
-- Python too), None as the NONE sentinel
local function dkey(k)
  if getmetatable(k) == Float then return k[1] end
  return k
end
function M.dset(d, k, v)
  k = dkey(k)
  if d.map[k] == nil then d.keys[#d.keys + 1] = k end
  d.map[k] = v
end
function M.dget(d, k) return d.map[dkey(k)] end

-- type name as Python prints it in errors
function M.typename(v)
  local t = type(v)
  if t == "string" then return "str" elseif t == "boolean" then return "bool"
  elseif t == "number" then return "int" end
  local m = getmetatable(v)
  return m and m.__name or t
end
local typename = M.typename

function M.is_num(v) return type(v) == "number" or getmetatable(v) == Float end
function M.is_seq(v) local m = getmetatable(v) return m == List or m == Tuple end
function M.is_map(v) return getmetatable(v) == Dict end
function M.is_undef(v) return getmetatable(v) == Undef end

-- numeric value (bool counts as int, as in Python); nil when not a number
local function num(v)
  local t = type(v)
  if t == "number" then return v, false end
  if t == "boolean" then return v and 1 or 0, false end
  if getmetatable(v) == Float then return v[1], true end
  return nil
end
M.num = num

function M.truthy(v)
  if v == false or v == NONE or v == 0 or v == "" then return false end
  if v == true or type(v) ~= "table" then return true end
  local m = getmetatable(v)
  if m == Float then return v[1] ~= 0 end
  if m == List or m == Tuple then return v[1] ~= nil end
  if m == Dict then return v.keys[1] ~= nil end
  if m == Undef then return false end
  if m == Markup then return v[1] ~= "" end
  return true
end

-- ---- printing -------------------------------------------------------------------------------

-- Python's float repr: the shortest digits that round-trip, positional for 1e-4 <= |x| < 1e16
function M.float_repr(x)
  if x ~= x then return "nan" end
  if x == huge then return "inf" elseif x == -huge then return "-inf" end
  if x == 0 then return (1 / x < 0) and "-0.0" or "0.0" end
  local s
  for p = 1, 17 do
    s = fmt("%." .. (p - 1) .. "e", x)
    if tonumber(s) == x then break end
  end
  local sign, d1, drest, e = s:match("^(%-?)(%d)%.?(%d*)e([-+]%d+)$")
  local digits = (d1 .. drest):gsub("0+$", "")
  if digits == "" then digits = "0" end
  e = tonumber(e)
  if e >= -5 + 1 and e < 16 then -- Python: repr uses 'r' -> positional when -4 <= exp < 16
    local n = #digits
    if e >= n - 1 then
      return sign .. digits .. string.rep("0", e - n + 1) .. ".0"
    elseif e >= 0 then
      return sign .. digits:sub(1, e + 1) .. "." .. digits:sub(e + 2)
    else
      return sign .. "0." .. string.rep("0", -e - 1) .. digits
    end
  end
  local mant = digits:sub(1, 1)
  if #digits > 1 then mant = mant .. "." .. digits:sub(2) end
  return fmt("%s%se%s%02d", sign, mant, e < 0 and "-" or "+", math.abs(e))
end

-- ints print in full, as Python's do (past 2^53 a double holds them only approximately)
local function int_str(x)
  if x == floor(x) and x > -2^63 and x < 2^63 then return fmt("%d", x) end
  if x == floor(x) and x - x == 0 then return fmt("%.0f", x) end
  return M.float_repr(x)
end
M.int_str = int_str

local repr
-- Python repr of a str: single quotes unless the text holds ' and no "
local function str_repr(s)
  local q = "'"
  if s:find("'", 1, true) and not s:find('"', 1, true) then q = '"' end
  local r = s:gsub("[%z\1-\31\\'\"\127]", function(c)
    if c == "\\" then return "\\\\" end
    if c == q then return "\\" .. c end
    if c == "'" or c == '"' then return c end
    if c == "\n" then return "\\n" elseif c == "\r" then return "\\r" elseif c == "\t" then return "\\t" end
    return fmt("\\x%02x", byte(c))
  end)
  return q .. r .. q
end
M.str_repr = str_repr

function M.str(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return int_str(v) end
  if t == "boolean" then return v and "True" or "False" end
  local m = getmetatable(v)
  if m == Undef then return "" end
  if m == Markup then return v[1] end
  return repr(v)
end

repr = function(v)
  local t = type(v)
  if t == "string" then return str_repr(v) end
  if t == "number" then return int_str(v) end
  if t == "boolean" then return v and "True" or "False" end
  local m = getmetatable(v)
  if v == NONE then return "None" end
  if m == Float then return M.float_repr(v[1]) end
  if m == List or m == Tuple then
    local parts = {}
    for i = 1, #v do parts[i] = repr(v[i]) end
    if m == Tuple then
      return "(" .. concat(parts, ", ") .. (#v == 1 and ",)" or ")")
    end
    return "[" .. concat(parts, ", ") .. "]"
  end
  if m == Dict or m == Namespace then
    local parts = {}
    for i, k in ipairs(v.keys) do parts[i] = repr(k) .. ": " .. repr(v.map[k]) end
    local s = "{" .. concat(parts, ", ") .. "}"
    return m == Namespace and ("<Namespace " .. s .. ">") or s
  end
  if m == Undef then return "Undefined" end
  if m == Markup then return "Markup(" .. str_repr(v[1]) .. ")" end
  if m == Macro then return "<Macro '" .. v.name .. "'>" end
  if m == Func then return "<function " .. v.name .. ">" end
  if m == Loop then return "<LoopContext>" end
  if m == Method then return "<built-in method " .. v.name .. ">" end
  return "<" .. typename(v) .. ">"
end
M.repr = repr

-- ---- strings as sequences of code points ----------------------------------------------------

function M.is_ascii(s) return not s:find("[\128-\255]") end
-- split into code points (UTF-8); invalid bytes count as one each
function M.chars(s)
  local out, n = {}, 0
  if M.is_ascii(s) then
    for i = 1, #s do out[i] = sub(s, i, i) end
    return out
  end
  for c in s:gmatch("[%z\1-\127\192-\255][\128-\191]*") do n = n + 1 out[n] = c end
  return out
end
function M.ulen(s)
  if M.is_ascii(s) then return #s end
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

function M.len(v)
  v = M.plain(v)
  if type(v) == "string" then return M.ulen(v) end
  local m = getmetatable(v)
  if m == List or m == Tuple then return #v end
  if m == Dict or m == Namespace then return #v.keys end
  if m == Undef then return 0 end
  raise("object of type '" .. typename(v) .. "' has no len()")
end

-- a Lua array of the items Python's iter(v) yields
function M.iter(v)
  v = M.plain(v)
  local m = getmetatable(v)
  if m == List or m == Tuple then return v end
  if type(v) == "string" then return M.chars(v) end
  if m == Dict then
    local out = {}
    for i, k in ipairs(v.keys) do out[i] = k end
    return out
  end
  if m == Undef then return {} end
  raise("'" .. typename(v) .. "' object is not iterable")
end

-- ---- comparison -----------------------------------------------------------------------------

local eq
eq = function(a, b)
  if a == b then return true end
  if getmetatable(a) == Markup then a = a[1] end
  if getmetatable(b) == Markup then b = b[1] end
  if a == b then return true end
  local na, nb = num(a), num(b)
  if na and nb then return na == nb end
  local ma, mb = getmetatable(a), getmetatable(b)
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  local sa, sb = ma == List or ma == Tuple, mb == List or mb == Tuple
  if sa and sb then
    if ma ~= mb or #a ~= #b then return false end
    for i = 1, #a do if not eq(a[i], b[i]) then return false end end
    return true
  end
  if ma == Dict and mb == Dict then
    if #a.keys ~= #b.keys then return false end
    for _, k in ipairs(a.keys) do
      local bv = b.map[k]
      if bv == nil or not eq(a.map[k], bv) then return false end
    end
    return true
  end
  if ma == Undef and mb == Undef then return true end
  return false
end
M.eq = eq

-- a < b, Python-style: numbers, strings (code point order = UTF-8 byte order), sequences
local lt
lt = function(a, b, op)
  if getmetatable(a) == Markup then a = a[1] end
  if getmetatable(b) == Markup then b = b[1] end
  local na, nb = num(a), num(b)
  if na and nb then return na < nb end
  if type(a) == "string" and type(b) == "string" then return a < b end
  local ma, mb = getmetatable(a), getmetatable(b)
  if (ma == List and mb == List) or (ma == Tuple and mb == Tuple) then
    for i = 1, math.min(#a, #b) do
      if not eq(a[i], b[i]) then return lt(a[i], b[i], op) end
    end
    return #a < #b
  end
  raise(fmt("'%s' not supported between instances of '%s' and '%s'", op or "<", typename(a), typename(b)))
end
M.lt = lt

function M.contains(container, item)
  container, item = M.plain(container), M.plain(item)
  if type(container) == "string" then
    if type(item) ~= "string" then
      raise("'in <string>' requires string as left operand, not " .. typename(item))
    end
    return container:find(item, 1, true) ~= nil
  end
  local m = getmetatable(container)
  if m == List or m == Tuple then
    for i = 1, #container do if eq(container[i], item) then return true end end
    return false
  end
  if m == Dict or m == Namespace then return container.map[dkey(item)] ~= nil end
  if m == Undef then return false end
  raise("argument of type '" .. typename(container) .. "' is not iterable")
end

-- ---- arithmetic -----------------------------------------------------------------------------

local function mknum(x, isf)
  if isf then return setmetatable({ x }, Float) end
  return x
end
M.mknum = mknum

local function unsupported(op, a, b)
  if getmetatable(a) == Undef then M.undef_fail(a) end
  if getmetatable(b) == Undef then M.undef_fail(b) end
  raise(fmt("unsupported operand type(s) for %s: '%s' and '%s'", op, typename(a), typename(b)))
end

local function pymod(x, y) return x - floor(x / y) * y end

function M.arith(op, a, b)
  local ma0, mb0 = getmetatable(a), getmetatable(b)
  if ma0 == Markup or mb0 == Markup then
    if op == "+" and (type(a) == "string" or ma0 == Markup) and (type(b) == "string" or mb0 == Markup) then
      local x = ma0 == Markup and a[1] or html_escape(a)
      local y = mb0 == Markup and b[1] or html_escape(b)
      return setmetatable({ x .. y }, Markup)
    elseif op == "%" and ma0 == Markup then
      return setmetatable({ M.percent_format(a[1], b, html_escape) }, Markup)
    end
    if ma0 == Markup then a = a[1] end
    if mb0 == Markup then b = b[1] end
    local r = M.arith(op, a, b)
    if type(r) == "string" then return setmetatable({ r }, Markup) end
    return r
  end
  local na, fa = num(a)
  local nb, fb = num(b)
  if na and nb then
    local isf = fa or fb
    if op == "+" then return mknum(na + nb, isf)
    elseif op == "-" then return mknum(na - nb, isf)
    elseif op == "*" then return mknum(na * nb, isf)
    elseif op == "/" then
      if nb == 0 then raise("division by zero", "ZeroDivisionError") end
      return setmetatable({ na / nb }, Float)
    elseif op == "//" then
      if nb == 0 then raise("integer division or modulo by zero", "ZeroDivisionError") end
      return mknum(floor(na / nb), isf)
    elseif op == "%" then
      if nb == 0 then raise("integer division or modulo by zero", "ZeroDivisionError") end
      return mknum(pymod(na, nb), isf)
    elseif op == "**" then
      if not isf and nb < 0 then return setmetatable({ na ^ nb }, Float) end
      return mknum(na ^ nb, isf)
    end
  end
  local ta, tb = type(a), type(b)
  local ma, mb = getmetatable(a), getmetatable(b)
  if op == "+" then
    if ta == "string" and tb == "string" then
      if #a + #b > M.MAX_STR then raise("string too large", "SecurityError") end
      return a .. b
    end
    if ta == "string" and mb ~= Undef then
      raise(fmt('can only concatenate str (not "%s") to str', typename(b)))
    end
    if (ma == List and mb == List) or (ma == Tuple and mb == Tuple) then
      if #a + #b > M.MAX_LIST then raise("list too large", "SecurityError") end
      local out = setmetatable({}, ma)
      for i = 1, #a do out[i] = a[i] end
      for i = 1, #b do out[#a + i] = b[i] end
      return out
    end
  elseif op == "*" then
    local s, n = a, nb
    if not n then s, n = b, na end
    if n and (fa == nil or not fa) and (fb == nil or not fb) then
      if type(s) == "string" then
        if n <= 0 then return "" end
        if #s * n > M.MAX_STR then raise("string repetition too large", "SecurityError") end
        return string.rep(s, n)
      end
      local ms = getmetatable(s)
      if ms == List or ms == Tuple then
        local out = setmetatable({}, ms)
        if #s * n > M.MAX_LIST then raise("list repetition too large", "SecurityError") end
        for r = 0, n - 1 do for i = 1, #s do out[r * #s + i] = s[i] end end
        return out
      end
    end
  elseif op == "%" and ta == "string" then
    return M.percent_format(a, b)
  end
  unsupported(op, a, b)
end

-- string.format of one %-conversion; Lua takes at most two digits of width or precision, Python
-- any, so wider fields are padded here (under MAX_STR) instead of failing inside string.format
local function fmt_one(spec, conv, v)
  local fl, w, p = spec:match("^([-+ 0#]*)(%d*)(%.?%d*)$")
  w = tonumber(w) or 0
  if #p > 3 then raise("format precision above 99 is not supported", "ValueError") end
  if w <= 99 then return fmt("%" .. spec .. conv, v) end
  local s = fmt("%" .. fl:gsub("[-0]", "") .. p .. conv, v)
  if #s >= w then return s end
  if fl:find("-", 1, true) then return s .. M.rep(" ", w - #s) end
  if fl:find("0", 1, true) and conv ~= "s" then
    local sign, rest = s:match("^([+%- ]?)(.*)$")
    return sign .. M.rep("0", w - #s) .. rest
  end
  return M.rep(" ", w - #s) .. s
end

-- "%s ... %d" % args, the subset chat templates use
function M.percent_format(s, args, esc)
  local list = M.is_seq(args) and getmetatable(args) == Tuple and args or { args }
  local i = 0
  local out = s:gsub("%%([-+ 0#]*%d*%.?%d*)([sdirfx%%])", function(flags, c)
    if c == "%" then return "%" end
    i = i + 1
    local v = list[i]
    if v == nil then raise("not enough arguments for format string") end
    if c == "s" then return fmt_one(flags, "s", esc and getmetatable(v) ~= Markup and esc(M.str(v)) or M.str(v)) end
    if c == "r" then return fmt_one(flags, "s", repr(v)) end
    local n = num(v)
    if not n then raise("%" .. c .. " format: a real number is required, not " .. typename(v)) end
    if c == "d" or c == "i" then return fmt_one(flags, "d", n < 0 and -floor(-n) or floor(n)) end
    if c == "f" then return fmt_one(flags, "f", n) end
    return fmt_one(flags, "x", n)
  end)
  return out
end

function M.neg(a)
  local n, f = num(a)
  if not n then
    if getmetatable(a) == Undef then M.undef_fail(a) end
    raise("bad operand type for unary -: '" .. typename(a) .. "'")
  end
  return mknum(-n, f)
end

-- ---- JSON as Python's json.dumps(ensure_ascii=False) writes it ------------------------------

local json_esc = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\b"] = "\\b", ["\f"] = "\\f" }
local function json_str(s)
  return '"' .. s:gsub('[%z\1-\31"\\]', function(c) return json_esc[c] or fmt("\\u%04x", byte(c)) end) .. '"'
end
M.json_str = json_str

-- o = {indent = nil|string, sep_item =, sep_key =, sort_keys = bool}
local function dumps(v, o, level, out)
  if getmetatable(v) == Markup then v = v[1] end
  local t = type(v)
  if t == "string" then
    o.size = o.size + #v -- escaping only grows it: stop before escaping more than can be kept
    if o.size > M.MAX_STR then raise("string too large", "SecurityError") end
    out[#out + 1] = json_str(v)
    return
  end
  if t == "number" then out[#out + 1] = int_str(v) return end
  if t == "boolean" then out[#out + 1] = v and "true" or "false" return end
  local m = getmetatable(v)
  if v == NONE then out[#out + 1] = "null" return end
  if m == Float then
    local x = v[1]
    if x ~= x then out[#out + 1] = "NaN"
    elseif x == huge then out[#out + 1] = "Infinity"
    elseif x == -huge then out[#out + 1] = "-Infinity"
    else out[#out + 1] = M.float_repr(x) end
    return
  end
  local nl
  if o.indent then
    nl = "\n" .. M.rep(o.indent, level + 1)
    -- the indent is repeated on every line: count it, or a wide one builds gigabytes
    o.size = o.size + #nl * (M.is_seq(v) and #v or M.is_map(v) and #v.keys or 0)
    if o.size > M.MAX_STR then raise("string too large", "SecurityError") end
  end
  if m == List or m == Tuple then
    if #v == 0 then out[#out + 1] = "[]" return end
    out[#out + 1] = "["
    for i = 1, #v do
      if i > 1 then out[#out + 1] = o.sep_item end
      if nl then out[#out + 1] = nl end
      dumps(v[i], o, level + 1, out)
    end
    if nl then out[#out + 1] = "\n" .. M.rep(o.indent, level) end
    out[#out + 1] = "]"
    return
  end
  if m == Dict then
    if #v.keys == 0 then out[#out + 1] = "{}" return end
    local keys = v.keys
    if o.sort_keys then
      keys = {}
      for i, k in ipairs(v.keys) do keys[i] = k end
      table.sort(keys, function(a, b) return lt(a, b) end)
    end
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = o.sep_item end
      if nl then out[#out + 1] = nl end
      local ks
      if type(k) == "string" then ks = json_str(k)
      elseif type(k) == "number" then ks = '"' .. int_str(k) .. '"'
      elseif type(k) == "boolean" then ks = k and '"true"' or '"false"'
      elseif k == NONE then ks = '"null"'
      else raise("keys must be str, int, float, bool or None, not " .. typename(k)) end
      out[#out + 1] = ks
      out[#out + 1] = o.sep_key
      dumps(v.map[k], o, level + 1, out)
    end
    if nl then out[#out + 1] = "\n" .. M.rep(o.indent, level) end
    out[#out + 1] = "}"
    return
  end
  raise("Object of type " .. (m == Undef and "Undefined" or typename(v)) .. " is not JSON serializable")
end

function M.dumps(v, o)
  local out = {}
  o.size = 0
  dumps(v, o, 0, out)
  return M.concat(out)
end

-- ---- values from Lua callers ----------------------------------------------------------------

-- Convert a plain Lua value (as an API caller builds it) into an engine value. Tables already
-- built from the ordered JSON decoder pass through. Plain tables with string keys become dicts
-- with keys in sorted order (Lua tables have none of their own).
function M.from_lua(v)
  local t = type(v)
  if t == "nil" then return NONE end
  if t == "string" or t == "boolean" then return v end
  if t == "number" then
    if v == floor(v) and v > -2^53 and v < 2^53 then return v end
    return setmetatable({ v }, Float)
  end
  if t == "function" then return M.func("function", function(...) return M.from_lua(v(...)) end) end
  if t == "userdata" then return NONE end -- cjson.null
  local m = getmetatable(v)
  if m == List or m == Tuple or m == Dict or m == Float or m == NoneT or m == Undef or m == Func
    or m == Namespace or m == Markup then return v end
  if t ~= "table" then return NONE end
  local n = #v
  if n > 0 or next(v) == nil then
    local out = setmetatable({}, List)
    for i = 1, n do out[i] = M.from_lua(v[i]) end
    return out
  end
  local d = M.dict()
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do M.dset(d, k, M.from_lua(v[k])) end
  return d
end

return M
