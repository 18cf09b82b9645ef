-- The Jinja builtins chat templates use: filters, tests, the methods of str/dict/list values,
-- the loop object, and the globals transformers provides (range, namespace, dict,
-- raise_exception, strftime_now). Each follows Jinja2 3.1.6 / Python 3 behaviour, including
-- transformers' own tojson (json.dumps with ensure_ascii=False). Sandbox rules of
-- ImmutableSandboxedEnvironment: methods that mutate lists/dicts are unsafe; ranges are capped.
local V = require "lunar.jinja.value"
local concat = V.concat -- every string a builtin assembles is bounded (value.lua)

local M = {}
local NONE = V.NONE
local List, Tuple, Dict, Float, Undef, Namespace, Func, Macro, Loop =
  V.List, V.Tuple, V.Dict, V.Float, V.Undef, V.Namespace, V.Func, V.Macro, V.Loop
local raise, str, truthy, typename, num = V.raise, V.str, V.truthy, V.typename, V.num
local fmt = string.format

local J -- lunar.jinja, for call/getattr (loaded lazily: it requires this module)
local function jinja() J = J or require "lunar.jinja" return J end

-- positional-or-keyword argument i named `name`
local function arg(args, kwargs, i, name, dflt)
  local v = args[i]
  if v == nil and name then v = kwargs[name] end
  if v == nil then return dflt end
  return v
end

local function seq_of(v)
  if getmetatable(v) == Undef then return {} end
  return V.iter(v)
end

-- stable sort (Python's sorted is stable; table.sort is not)
local function stable_sort(items, less)
  local idx = {}
  for i = 1, #items do idx[i] = i end
  table.sort(idx, function(a, b)
    local x, y = items[a], items[b]
    if less(x, y) then return true end
    if less(y, x) then return false end
    return a < b
  end)
  local out = {}
  for i, j in ipairs(idx) do out[i] = items[j] end
  return out
end

-- ---- strings --------------------------------------------------------------------------------

local WS = " \t\n\r\f\v\28\29\30\31"
local function char_set(chars)
  local set = {}
  for _, c in ipairs(V.chars(chars)) do set[c] = true end
  return set
end
local WS_SET = {}
for i = 1, #WS do WS_SET[WS:byte(i)] = true end
local byte = string.byte
local function strip(s, chars, left, right)
  local set
  if chars == nil or chars == NONE then
    set = WS_SET
  elseif type(chars) ~= "string" then
    raise("strip arg must be None or str")
  elseif V.is_ascii(chars) then
    -- ASCII strip characters never match a byte of a multi-byte character: scan bytes
    set = {}
    for i = 1, #chars do set[byte(chars, i)] = true end
  end
  if set then
    local i, j = 1, #s
    if left then while i <= j and set[byte(s, i)] do i = i + 1 end end
    if right then while j >= i and set[byte(s, j)] do j = j - 1 end end
    return s:sub(i, j)
  end
  local cs = V.chars(s)
  set = char_set(chars)
  local i, j = 1, #cs
  if left then while i <= j and set[cs[i]] do i = i + 1 end end
  if right then while j >= i and set[cs[j]] do j = j - 1 end end
  return concat(cs, "", i, j)
end
M.strip = strip

local function split(s, sep, maxsplit)
  maxsplit = (maxsplit == nil or maxsplit == NONE) and -1 or maxsplit
  local out = V.list()
  if sep == nil or sep == NONE then
    local rest = s:gsub("^[" .. WS .. "]+", "")
    while rest ~= "" do
      if maxsplit >= 0 and #out >= maxsplit then
        out[#out + 1] = rest:gsub("[" .. WS .. "]+$", "")
        break
      end
      local a, b = rest:find("[" .. WS .. "]+")
      if not a then out[#out + 1] = rest break end
      out[#out + 1] = rest:sub(1, a - 1)
      rest = rest:sub(b + 1)
    end
    return out
  end
  if sep == "" then raise("empty separator", "ValueError") end
  local pos = 1
  while true do
    if maxsplit >= 0 and #out >= maxsplit then break end
    local a, b = s:find(sep, pos, true)
    if not a then break end
    out[#out + 1] = s:sub(pos, a - 1)
    pos = b + 1
  end
  out[#out + 1] = s:sub(pos)
  return out
end

local function rsplit(s, sep, maxsplit)
  maxsplit = (maxsplit == nil or maxsplit == NONE) and -1 or maxsplit
  if maxsplit < 0 then return split(s, sep, maxsplit) end
  if sep == nil or sep == NONE then
    local parts = split(s, NONE)
    if #parts <= maxsplit + 1 then return parts end
    -- keep the leading text together: re-split from the right
    local out = V.list()
    local rest = s:gsub("[" .. WS .. "]+$", "")
    local tail = {}
    for _ = 1, maxsplit do
      local a, b = rest:find("[" .. WS .. "]+[^" .. WS .. "]*$")
      if not a then break end
      table.insert(tail, 1, rest:sub(a):gsub("^[" .. WS .. "]+", ""))
      rest = rest:sub(1, a - 1)
    end
    out[1] = rest
    for _, t in ipairs(tail) do out[#out + 1] = t end
    return out
  end
  local all = split(s, sep)
  if #all <= maxsplit + 1 then return all end
  local keep = #all - maxsplit
  local out = V.list { concat(all, sep, 1, keep) }
  for i = keep + 1, #all do out[#out + 1] = all[i] end
  return out
end

local function replace(s, old, new, count)
  count = (count == nil or count == NONE) and -1 or count
  if old == "" then
    local cs = V.chars(s)
    local out = {}
    local n = 0
    for i = 1, #cs + 1 do
      if count < 0 or n < count then out[#out + 1] = new n = n + 1 end
      out[#out + 1] = cs[i]
    end
    return concat(out)
  end
  local out, pos, n = {}, 1, 0
  while count < 0 or n < count do
    local a, b = s:find(old, pos, true)
    if not a then break end
    out[#out + 1] = s:sub(pos, a - 1)
    out[#out + 1] = new
    pos = b + 1
    n = n + 1
  end
  out[#out + 1] = s:sub(pos)
  return concat(out)
end

-- case mapping: ASCII, Latin-1, Greek and Cyrillic (the 2-byte UTF-8 letters with simple pairs)
local utf8char = require("lunar.jinja.lexer").utf8char
local function case_map(s, to_upper)
  s = to_upper and s:upper() or s:lower()
  if not s:find("[\195-\211]") then return s end
  return (s:gsub("([\192-\223])([\128-\191])", function(a, b)
    local cp = (a:byte() - 192) * 64 + (b:byte() - 128)
    local d = 0
    if to_upper then
      if cp >= 0xE0 and cp <= 0xFE and cp ~= 0xF7 then d = -32
      elseif cp >= 0x3B1 and cp <= 0x3C9 and cp ~= 0x3C2 then d = -32
      elseif cp >= 0x430 and cp <= 0x44F then d = -32
      elseif cp >= 0x450 and cp <= 0x45F then d = -80 end
    else
      if cp >= 0xC0 and cp <= 0xDE and cp ~= 0xD7 then d = 32
      elseif cp >= 0x391 and cp <= 0x3A9 and cp ~= 0x3A2 then d = 32
      elseif cp >= 0x410 and cp <= 0x42F then d = 32
      elseif cp >= 0x400 and cp <= 0x40F then d = 80 end
    end
    if d == 0 then return nil end
    return utf8char(cp + d)
  end))
end
local function upper(s) return case_map(s, true) end
local function lower(s) return case_map(s, false) end
local function capitalize(s)
  local cs = V.chars(s)
  if #cs == 0 then return "" end
  return upper(cs[1]) .. lower(concat(cs, "", 2))
end
-- Python str.title: a letter after a non-letter starts a word
local function py_title(s)
  return (s:gsub("(%a?)(%a*)", function(a, b) return a:upper() .. b:lower() end))
end

local function starts(s, prefix, at_end)
  local function one(p)
    if type(p) ~= "string" then raise("startswith first arg must be str or a tuple of str, not " .. typename(p)) end
    if at_end then return p == "" or s:sub(-#p) == p end
    return s:sub(1, #p) == p
  end
  if getmetatable(prefix) == Tuple or getmetatable(prefix) == List then
    for _, p in ipairs(prefix) do if one(p) then return true end end
    return false
  end
  return one(prefix)
end

-- "{} {name} {0}".format(...)
local function str_format(s, args, kwargs)
  local auto = 0
  local out = s:gsub("{{", "\1"):gsub("}}", "\2"):gsub("{([^{}]*)}", function(field)
    local name, spec = field:match("^([^:!]*)[!]?[rsa]?:?(.*)$")
    local v
    if name == "" then
      auto = auto + 1
      v = args[auto]
    elseif name:match("^%d+$") then
      v = args[tonumber(name) + 1]
    else
      local base, attr = name:match("^([%w_]+)%.([%w_]+)$")
      if base then v = jinja().getattr(nil, kwargs[base], attr) else v = kwargs[name] end
    end
    if v == nil then raise("Replacement index " .. name .. " out of range for positional args tuple", "IndexError") end
    if spec ~= "" then
      local n = num(v)
      if n and spec:match("^%.?%d*[df]$") then return fmt("%" .. spec, n) end
    end
    return str(v)
  end)
  return (out:gsub("\1", "{"):gsub("\2", "}"))
end

M.methods = {
  str = {
    strip = function(s, a) return strip(s, a[1], true, true) end,
    lstrip = function(s, a) return strip(s, a[1], true, false) end,
    rstrip = function(s, a) return strip(s, a[1], false, true) end,
    split = function(s, a, kw) return split(s, arg(a, kw, 1, "sep"), arg(a, kw, 2, "maxsplit")) end,
    rsplit = function(s, a, kw) return rsplit(s, arg(a, kw, 1, "sep"), arg(a, kw, 2, "maxsplit")) end,
    startswith = function(s, a) return starts(s, a[1], false) end,
    endswith = function(s, a) return starts(s, a[1], true) end,
    replace = function(s, a) return replace(s, a[1], a[2], a[3]) end,
    upper = upper, lower = lower, title = py_title, capitalize = capitalize,
    format = function(s, a, kw) return str_format(s, a, kw) end,
    join = function(s, a)
      local parts = {}
      for i, v in ipairs(seq_of(a[1])) do
        if type(v) ~= "string" then raise("sequence item " .. (i - 1) .. ": expected str instance, " .. typename(v) .. " found") end
        parts[i] = v
      end
      return concat(parts, s)
    end,
    find = function(s, a)
      local i = s:find(a[1], 1, true)
      if not i then return -1 end
      return V.ulen(s:sub(1, i - 1))
    end,
    index = function(s, a)
      local i = s:find(a[1], 1, true)
      if not i then raise("substring not found", "ValueError") end
      return V.ulen(s:sub(1, i - 1))
    end,
    count = function(s, a)
      local _, n = s:gsub(a[1]:gsub("%W", "%%%0"), "")
      return n
    end,
    splitlines = function(s)
      local out = V.list()
      for line in (s .. "\n"):gmatch("(.-)\r?\n") do out[#out + 1] = line end
      if s == "" or s:sub(-1) == "\n" then out[#out] = nil end
      return out
    end,
    isdigit = function(s) return s ~= "" and not s:find("%D") end,
    isalpha = function(s) return s ~= "" and not s:find("%A") end,
    isalnum = function(s) return s ~= "" and not s:find("%W") end,
    isspace = function(s) return s ~= "" and not s:find("[^" .. WS .. "]") end,
    isupper = function(s) return s:find("%u") ~= nil and not s:find("%l") end,
    islower = function(s) return s:find("%l") ~= nil and not s:find("%u") end,
  },
  dict = {
    items = function(d)
      local out = V.list()
      for i, k in ipairs(d.keys) do out[i] = V.tuple { k, d.map[k] } end
      return out
    end,
    keys = function(d)
      local out = V.list()
      for i, k in ipairs(d.keys) do out[i] = k end
      return out
    end,
    values = function(d)
      local out = V.list()
      for i, k in ipairs(d.keys) do out[i] = d.map[k] end
      return out
    end,
    get = function(d, a)
      local v = V.dget(d, a[1])
      if v == nil then return a[2] == nil and NONE or a[2] end
      return v
    end,
  },
  list = {
    index = function(l, a)
      for i = 1, #l do if V.eq(l[i], a[1]) then return i - 1 end end
      raise(V.repr(a[1]) .. " is not in list", "ValueError")
    end,
    count = function(l, a)
      local n = 0
      for i = 1, #l do if V.eq(l[i], a[1]) then n = n + 1 end end
      return n
    end,
  },
}
M.mutating = { append = true, extend = true, insert = true, pop = true, remove = true, clear = true,
  sort = true, reverse = true, update = true, setdefault = true, popitem = true }

function M.call_method(R, m, args, kwargs)
  return M.methods[m.kind][m.name](m.self, args, kwargs)
end

-- ---- loop -----------------------------------------------------------------------------------

function M.loop_attr(l, name)
  local i, n = l.i, l.length
  if name == "index" then return i
  elseif name == "index0" then return i - 1
  elseif name == "revindex" then return n - i + 1
  elseif name == "revindex0" then return n - i
  elseif name == "first" then return i == 1
  elseif name == "last" then return i == n
  elseif name == "length" then return n
  elseif name == "depth" then return l.depth
  elseif name == "depth0" then return l.depth - 1
  elseif name == "previtem" then
    if i > 1 then return l.items[i - 1] end
    return V.undefined("there is no previous item")
  elseif name == "nextitem" then
    if i < n then return l.items[i + 1] end
    return V.undefined("there is no next item")
  elseif name == "cycle" then
    return V.func("cycle", function(_, args)
      if #args == 0 then raise("no items for cycling given", "TypeError") end
      return args[(i - 1) % #args + 1]
    end)
  elseif name == "changed" then
    return V.func("changed", function(_, args)
      local key = V.list(args)
      local changed = l.last_changed == nil or not V.eq(l.last_changed, key)
      l.last_changed = key
      return changed
    end)
  end
  return V.undefined("'LoopContext' object has no attribute '" .. name .. "'")
end

-- ---- tests ----------------------------------------------------------------------------------

local function is_int(v) return type(v) == "number" end
local tests = {}
M.tests = tests
tests.defined = function(_, v) return getmetatable(v) ~= Undef end
tests.undefined = function(_, v) return getmetatable(v) == Undef end
tests.none = function(_, v) return v == NONE end
tests.string = function(_, v) return type(v) == "string" end -- a Markup arrives as its plain text
tests.number = function(_, v) return num(v) ~= nil end
tests.integer = function(_, v) return is_int(v) end
tests.float = function(_, v) return getmetatable(v) == Float end
tests.boolean = function(_, v) return type(v) == "boolean" end
tests["true"] = function(_, v) return v == true end
tests["false"] = function(_, v) return v == false end
tests.mapping = function(_, v) return getmetatable(v) == Dict end
tests.iterable = function(_, v)
  local m = getmetatable(v)
  return type(v) == "string" or m == List or m == Tuple or m == Dict or m == Undef
end
tests.sequence = function(_, v)
  local m = getmetatable(v)
  return type(v) == "string" or m == List or m == Tuple or m == Dict
end
tests.callable = function(_, v)
  local m = getmetatable(v)
  return m == Func or m == Macro or m == V.Method
end
tests.eq = function(_, v, a) return V.eq(v, a[1]) end
tests.equalto, tests["=="] = tests.eq, tests.eq
tests.ne = function(_, v, a) return not V.eq(v, a[1]) end
tests["!="] = tests.ne
tests.lt = function(_, v, a) return V.lt(v, a[1], "<") end
tests.gt = function(_, v, a) return V.lt(a[1], v, ">") end
tests.le = function(_, v, a) return V.eq(v, a[1]) or V.lt(v, a[1], "<=") end
tests.ge = function(_, v, a) return V.eq(v, a[1]) or V.lt(a[1], v, ">=") end
tests.lessthan, tests["<"], tests.greaterthan, tests[">"] = tests.lt, tests.lt, tests.gt, tests.gt
tests["<="], tests[">="] = tests.le, tests.ge
tests["in"] = function(_, v, a) return V.contains(a[1], v) end
tests.divisibleby = function(_, v, a)
  local x, y = num(v), num(a[1])
  return x - math.floor(x / y) * y == 0
end
tests.odd = function(_, v) return num(v) % 2 == 1 end
tests.even = function(_, v) return num(v) % 2 == 0 end
tests.sameas = function(_, v, a) return v == a[1] end
tests.lower = function(_, v) return type(v) == "string" and v:lower() == v end
tests.upper = function(_, v) return type(v) == "string" and v:upper() == v end
tests.escaped = function() return false end
tests.filter = function(_, v) return M.filters[v] ~= nil end
tests.test = function(_, v) return tests[v] ~= nil end

-- ---- filters --------------------------------------------------------------------------------

local filters = {}
M.filters = filters

local function attr_getter(R, attribute)
  if attribute == nil or attribute == NONE then return function(x) return x end end
  local parts = {}
  if type(attribute) == "number" then parts = { attribute }
  else for p in tostring(attribute):gmatch("[^.]+") do parts[#parts + 1] = tonumber(p) or p end end
  return function(x)
    for _, p in ipairs(parts) do x = jinja().getitem(R, x, p) end
    return x
  end
end

local function sort_key(case_sensitive)
  return function(x)
    if not case_sensitive and type(x) == "string" then return x:lower() end
    return x
  end
end

filters.abs = function(_, v)
  local n, f = num(v)
  if not n then raise("bad operand type for abs(): '" .. typename(v) .. "'") end
  return V.mknum(math.abs(n), f)
end
filters.capitalize = function(_, v) return capitalize(str(v)) end
filters.lower = function(_, v) return lower(str(v)) end
filters.upper = function(_, v) return upper(str(v)) end
-- Jinja's title: words split on whitespace and -([{<
filters.title = function(_, v)
  local s = str(v)
  return (s:gsub("([^%s%-%(%[{<]+)", function(w)
    local cs = V.chars(w)
    return upper(cs[1]) .. lower(concat(cs, "", 2))
  end))
end
filters.default = function(_, v, a, kw)
  local dflt = arg(a, kw, 1, "default_value", "")
  local boolean = arg(a, kw, 2, "boolean", false)
  if getmetatable(v) == Undef or (truthy(boolean) and not truthy(v)) then return dflt end
  return v
end
filters.d = filters.default
filters.length = function(_, v) return V.len(v) end
filters.count = filters.length
filters.string = function(_, v)
  if getmetatable(v) == V.Markup then return v end
  return str(v)
end
filters.safe = function(_, v)
  if getmetatable(v) == V.Markup then return v end
  return V.markup(str(v))
end
filters.escape = function(_, v)
  if getmetatable(v) == V.Markup then return v end
  return V.markup(V.html_escape(str(v)))
end
filters.e = filters.escape
filters.trim = function(_, v, a, kw) return strip(str(v), arg(a, kw, 1, "chars"), true, true) end
filters.replace = function(_, v, a, kw)
  return replace(str(v), str(a[1]), str(a[2]), arg(a, kw, 3, "count"))
end
filters.first = function(_, v)
  local items = seq_of(v)
  if items[1] == nil then return V.undefined("No first item, sequence was empty.") end
  return items[1]
end
filters.last = function(_, v)
  local items = seq_of(v)
  if #items == 0 then return V.undefined("No last item, sequence was empty.") end
  return items[#items]
end
filters.list = function(_, v)
  local out = V.list()
  for i, x in ipairs(seq_of(v)) do out[i] = x end
  return out
end
filters.join = function(R, v, a, kw)
  local sep = arg(a, kw, 1, "d", "")
  local get = attr_getter(R, arg(a, kw, 2, "attribute"))
  local parts = {}
  for i, x in ipairs(seq_of(v)) do parts[i] = str(get(x)) end
  return concat(parts, str(sep))
end
filters.reverse = function(_, v)
  if type(v) == "string" then
    local cs = V.chars(v)
    local out = {}
    for i = #cs, 1, -1 do out[#out + 1] = cs[i] end
    return concat(out)
  end
  local items = seq_of(v)
  local out = V.list()
  for i = #items, 1, -1 do out[#out + 1] = items[i] end
  return out
end
filters.items = function(_, v)
  if getmetatable(v) == Undef then return V.list() end
  if getmetatable(v) ~= Dict then raise("Can only get item pairs from a mapping.", "TypeError") end
  return M.methods.dict.items(v)
end
filters.dictsort = function(_, v, a, kw)
  local case_sensitive = truthy(arg(a, kw, 1, "case_sensitive", false))
  local by = arg(a, kw, 2, "by", "key")
  local reverse = truthy(arg(a, kw, 3, "reverse", false))
  local pos = by == "value" and 2 or 1
  local key = sort_key(case_sensitive)
  local items = M.methods.dict.items(v)
  local sorted = stable_sort(items, function(x, y)
    if reverse then return V.lt(key(y[pos]), key(x[pos])) end
    return V.lt(key(x[pos]), key(y[pos]))
  end)
  return V.list(sorted)
end
filters.sort = function(R, v, a, kw)
  local reverse = truthy(arg(a, kw, 1, "reverse", false))
  local case_sensitive = truthy(arg(a, kw, 2, "case_sensitive", false))
  local attribute = arg(a, kw, 3, "attribute")
  -- "a,b" sorts by a then b (Jinja2's make_multi_attrgetter)
  local gets = {}
  if type(attribute) == "string" then
    for part in attribute:gmatch("[^,]+") do gets[#gets + 1] = attr_getter(R, part) end
  end
  if #gets == 0 then gets[1] = attr_getter(R, attribute) end
  local key = sort_key(case_sensitive)
  local function lt(x, y)
    for _, get in ipairs(gets) do
      local kx, ky = key(get(x)), key(get(y))
      if V.lt(kx, ky) then return true end
      if V.lt(ky, kx) then return false end
    end
    return false
  end
  local sorted = stable_sort(seq_of(v), function(x, y)
    if reverse then return lt(y, x) end
    return lt(x, y)
  end)
  return V.list(sorted)
end
filters.unique = function(R, v, a, kw)
  local case_sensitive = truthy(arg(a, kw, 1, "case_sensitive", false))
  local get = attr_getter(R, arg(a, kw, 2, "attribute"))
  local key = sort_key(case_sensitive)
  local out, seen = V.list(), {}
  for _, x in ipairs(seq_of(v)) do
    local k = key(get(x))
    local dup = false
    for _, s in ipairs(seen) do if V.eq(s, k) then dup = true break end end
    if not dup then seen[#seen + 1] = k out[#out + 1] = x end
  end
  return out
end
local function minmax(R, v, a, kw, want_max)
  local case_sensitive = truthy(arg(a, kw, 1, "case_sensitive", false))
  local get = attr_getter(R, arg(a, kw, 2, "attribute"))
  local key = sort_key(case_sensitive)
  local best
  for _, x in ipairs(seq_of(v)) do
    if best == nil then best = x
    else
      local kx, kb = key(get(x)), key(get(best))
      if want_max then if V.lt(kb, kx) then best = x end
      elseif V.lt(kx, kb) then best = x end
    end
  end
  if best == nil then return V.undefined("No aggregated item, sequence was empty.") end
  return best
end
filters.max = function(R, v, a, kw) return minmax(R, v, a, kw, true) end
filters.min = function(R, v, a, kw) return minmax(R, v, a, kw, false) end
filters.sum = function(R, v, a, kw)
  local get = attr_getter(R, arg(a, kw, 1, "attribute"))
  local total = arg(a, kw, 2, "start", 0)
  for _, x in ipairs(seq_of(v)) do total = V.arith("+", total, get(x)) end
  return total
end
-- Python's round(): correctly rounded, exact ties to even (LuaJIT's %.Nf rounds ties up)
function M.round_half_even(x, p)
  local full = fmt("%.60f", math.abs(x))
  local ip, fp = full:match("^(%d+)%.(%d+)$")
  if fp and fp:sub(p + 1, p + 1) == "5" and not fp:sub(p + 2):find("[1-9]") then
    local kept = ip .. fp:sub(1, p)
    local last = tonumber(kept:sub(-1))
    local r = tonumber(ip .. "." .. fp:sub(1, p))
    if last % 2 == 1 then r = r + 10 ^ -p end
    return x < 0 and -r or r
  end
  return tonumber(fmt("%." .. p .. "f", x))
end
filters.round = function(_, v, a, kw)
  local precision = arg(a, kw, 1, "precision", 0)
  local method = arg(a, kw, 2, "method", "common")
  local n, isf = num(v)
  if not n then raise("type " .. typename(v) .. " doesn't define __round__ method") end
  local p = 10 ^ precision
  local r
  if method == "common" then
    if not isf then return n end
    if precision < 0 then r = M.round_half_even(n * p, 0) / p -- round(1234.5, -2) = 1200.0
    else r = M.round_half_even(n, precision) end
  elseif method == "ceil" then r = math.ceil(n * p) / p
  elseif method == "floor" then r = math.floor(n * p) / p
  else raise("method must be common, ceil or floor", "FilterArgumentError") end
  return V.float(r)
end
local function to_int(v, dflt, base)
  if type(v) == "number" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  local n = num(v)
  if n then return n < 0 and math.ceil(n) or math.floor(n) end
  if type(v) == "string" then
    local s = v:gsub("^%s+", ""):gsub("%s+$", ""):gsub("_", "")
    local i = tonumber(s, base or 10)
    if i and s:match("^[-+]?%w+$") then return i end
    local f = tonumber(s)
    if f and s:match("^[-+]?[%d.]+[eE]?[-+]?%d*$") then return f < 0 and math.ceil(f) or math.floor(f) end
  end
  return dflt
end
filters.int = function(_, v, a, kw)
  return to_int(v, arg(a, kw, 1, "default", 0), arg(a, kw, 2, "base", 10))
end
filters.float = function(_, v, a, kw)
  local n = num(v)
  if n then return V.float(n) end
  if type(v) == "string" then
    local f = tonumber((v:gsub("^%s+", ""):gsub("%s+$", "")))
    if f then return V.float(f) end
  end
  local d = arg(a, kw, 1, "default", V.float(0))
  return d
end
filters.wordcount = function(_, v)
  local n = 0
  for _ in str(v):gmatch("[%w_\128-\255]+") do n = n + 1 end
  return n
end
filters.indent = function(_, v, a, kw)
  local width = arg(a, kw, 1, "width", 4)
  local first = truthy(arg(a, kw, 2, "first", false))
  local blank = truthy(arg(a, kw, 3, "blank", false))
  local pad = type(width) == "string" and width or V.rep(" ", width)
  local s = str(v)
  local lines = {}
  for line in (s .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  if s:sub(-1) == "\n" then lines[#lines] = nil lines.trailing = true end
  for i = 2, #lines do
    if blank or lines[i]:find("%S") then lines[i] = pad .. lines[i] end
  end
  local out = concat(lines, "\n")
  if lines.trailing then out = out .. "\n" end
  if first then out = pad .. out end
  return out
end
filters.batch = function(_, v, a, kw)
  local n = arg(a, kw, 1, "linecount")
  local fill = arg(a, kw, 2, "fill_with", NONE)
  local out, cur = V.list(), V.list()
  for _, x in ipairs(seq_of(v)) do
    if #cur == n then out[#out + 1] = cur cur = V.list() end
    cur[#cur + 1] = x
  end
  if #cur > 0 then
    if fill ~= NONE then while #cur < n do cur[#cur + 1] = fill end end
    out[#out + 1] = cur
  end
  return out
end
filters.center = function(_, v, a)
  local s = str(v)
  local width = a[1] or 80
  local n = V.ulen(s)
  if n >= width then return s end
  local total = width - n
  local left = math.floor(total / 2) + (total % 2 == 1 and width % 2 == 1 and 1 or 0)
  return V.rep(" ", left) .. s .. V.rep(" ", total - left)
end
filters.format = function(_, v, a)
  if #a == 1 then return V.percent_format(str(v), a[1]) end
  return V.percent_format(str(v), V.tuple(a))
end
-- transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
filters.tojson = function(_, v, a, kw)
  local indent = arg(a, kw, 2, "indent", NONE)
  local separators = arg(a, kw, 3, "separators", NONE)
  local sort_keys = truthy(arg(a, kw, 4, "sort_keys", false))
  local ind
  if indent ~= NONE then
    if type(indent) == "string" then ind = indent else ind = V.rep(" ", (num(indent))) end
  end
  local sep_item, sep_key = ind and "," or ", ", ": "
  if separators ~= NONE then sep_item, sep_key = separators[1], separators[2] end
  return V.dumps(v, { indent = ind, sep_item = sep_item, sep_key = sep_key, sort_keys = sort_keys })
end

-- select/reject/selectattr/rejectattr/map
local function test_fn(R, name, args)
  local t = tests[name]
  if not t then raise("No test named '" .. tostring(name) .. "'.", "TemplateRuntimeError") end
  return function(x) return t(R, x, args, {}) end
end
local function rest(a, from)
  local out = {}
  for i = from, #a do out[#out + 1] = a[i] end
  return out
end
local function select(R, v, a, use_attr, want)
  local get, test
  if use_attr then
    get = attr_getter(R, a[1])
    if a[2] ~= nil then test = test_fn(R, a[2], rest(a, 3)) else test = truthy end
  else
    get = function(x) return x end
    if a[1] ~= nil then test = test_fn(R, a[1], rest(a, 2)) else test = truthy end
  end
  local out = V.list()
  if not truthy(v) then return out end -- Jinja: `if seq: for item in seq`
  for _, x in ipairs(seq_of(v)) do
    if (test(get(x)) and true or false) == want then out[#out + 1] = x end
  end
  return out
end
filters.select = function(R, v, a) return select(R, v, a, false, true) end
filters.reject = function(R, v, a) return select(R, v, a, false, false) end
filters.selectattr = function(R, v, a) return select(R, v, a, true, true) end
filters.rejectattr = function(R, v, a) return select(R, v, a, true, false) end
filters.map = function(R, v, a, kw)
  local out = V.list()
  if not truthy(v) then return out end
  if kw.attribute ~= nil then
    local get = attr_getter(R, kw.attribute)
    local dflt = kw.default
    for i, x in ipairs(seq_of(v)) do
      local y = get(x)
      if dflt ~= nil and getmetatable(y) == Undef then y = dflt end
      out[i] = y
    end
    return out
  end
  local name = a[1]
  local f = filters[name]
  if not f then raise("No filter named '" .. tostring(name) .. "'.", "TemplateRuntimeError") end
  local fargs = rest(a, 2)
  for i, x in ipairs(seq_of(v)) do out[i] = f(R, x, fargs, kw) end
  return out
end
-- attr is attribute lookup only (Python's getattr): a dict's keys are not its attributes
filters.attr = function(R, v, a)
  if V.is_map(v) and not M.methods.dict[a[1]] then
    return V.undefined("'dict object' has no attribute '" .. V.str(a[1]) .. "'")
  end
  return jinja().getattr(R, v, a[1])
end
filters.pprint = function(_, v) return V.repr(v) end
filters.truncate = function(_, v, a, kw)
  local s = str(v)
  local length = arg(a, kw, 1, "length", 255)
  local killwords = truthy(arg(a, kw, 2, "killwords", false))
  local ending = arg(a, kw, 3, "end", "...")
  local leeway = arg(a, kw, 4, "leeway", 5)
  local cs = V.chars(s)
  if #cs <= length + leeway then return s end
  if killwords then return concat(cs, "", 1, length - V.ulen(ending)) .. ending end
  local cut = concat(cs, "", 1, length - V.ulen(ending))
  cut = cut:gsub("%s*%S*$", "")
  return cut .. ending
end

-- ---- globals --------------------------------------------------------------------------------

-- namespace(mapping?, **kw) / dict(mapping?, **kw): keys in the order given
local function fill_mapping(d, a, kw)
  if getmetatable(a[1]) == Dict then
    for _, k in ipairs(a[1].keys) do V.dset(d, k, a[1].map[k]) end
  end
  for _, k in ipairs(kw[V.KWORDER] or {}) do V.dset(d, k, kw[k]) end
  return d
end

local MAX_RANGE = 100000 -- jinja2.sandbox.MAX_RANGE

local G = {
  range = function(_, a)
    local start, stop, stp = 0, a[1], 1
    if #a >= 2 then start, stop = a[1], a[2] end
    if #a >= 3 then stp = a[3] end
    for _, x in ipairs { start, stop, stp } do
      if type(x) ~= "number" then raise("'" .. typename(x) .. "' object cannot be interpreted as an integer") end
    end
    if stp == 0 then raise("range() arg 3 must not be zero", "ValueError") end
    local n = math.max(0, math.ceil((stop - start) / stp))
    if n > MAX_RANGE then
      raise("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" .. MAX_RANGE .. ").", "OverflowError")
    end
    local out = V.list()
    for i = 0, n - 1 do out[i + 1] = start + i * stp end
    return out
  end,
  namespace = function(_, a, kw) return fill_mapping(V.namespace(), a, kw) end,
  dict = function(_, a, kw) return fill_mapping(V.dict(), a, kw) end,
  raise_exception = function(_, a) raise(str(a[1] == nil and "" or a[1]), "TemplateError") end,
  strftime_now = function(_, a) return os.date(str(a[1])) end,
  lipsum = function() return "" end,
}

-- a fresh globals table per render (templates cannot modify it: set writes the root frame)
function M.globals()
  local g = {}
  for k, fn in pairs(G) do g[k] = V.func(k, fn) end
  return g
end

return M
