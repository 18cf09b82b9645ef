-- lunar.jinja: a Jinja2-compatible template engine in pure Lua, for chat templates.
--   local jinja = require "lunar.jinja"
--   local tpl, err = jinja.compile(source, { name = "qwen3" })
--   local text, err = tpl:render({ messages = ..., add_generation_prompt = true })
-- Behaves as transformers' ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
-- extensions=[loopcontrols]) with its tojson filter and raise_exception/strftime_now globals.
--
-- Built as a tree-walking interpreter rather than a compiler to Lua source: a template is
-- untrusted data, and an interpreter can only ever reach the values it was given and the
-- builtins in builtins.lua — there is no path from a template to Lua globals, io, os, ffi,
-- string metatables or load(). Loops, macro calls and output size are counted so that a
-- hostile template stops with an error instead of running forever. Errors name the template,
-- line and column: "qwen3:12:5: roles must alternate".
local V = require "lunar.jinja.value"
local lexer = require "lunar.jinja.lexer"
local parser = require "lunar.jinja.parser"
local B = require "lunar.jinja.builtins"

local M = {}
M.value = V

local NONE, UNDEF = V.NONE, V.UNDEF
local List, Tuple, Dict, Float, Undef, Namespace, Func, Macro, Loop, Method =
  V.List, V.Tuple, V.Dict, V.Float, V.Undef, V.Namespace, V.Func, V.Macro, V.Loop, V.Method
local truthy, str, raise, getmetatable, setmetatable = V.truthy, V.str, V.raise, getmetatable, setmetatable

M.defaults = { max_steps = 5000000, max_output = 64 * 1024 * 1024, max_depth = 200 }

local eval, exec
local E = {} -- expression evaluators by node kind
local S = {} -- statement executors by node kind

local function fail_undef(v) V.undef_fail(v) end

-- ---- attribute and item access --------------------------------------------------------------

local plain = V.plain

local function getattr(R, obj, name)
  obj = plain(obj)
  local m = getmetatable(obj)
  if m == Dict then
    if B.methods.dict[name] then return setmetatable({ self = obj, name = name, kind = "dict" }, Method) end
    if B.mutating[name] then
      return V.undefined("access to attribute '" .. name .. "' of 'dict' object is unsafe.")
    end
    local v = obj.map[name]
    if v ~= nil then return v end
    return V.undefined("'dict object' has no attribute '" .. name .. "'")
  elseif m == Namespace then
    local v = obj.map[name]
    if v ~= nil then return v end
    return V.undefined("'Namespace' object has no attribute '" .. name .. "'")
  elseif type(obj) == "string" then
    if B.methods.str[name] then return setmetatable({ self = obj, name = name, kind = "str" }, Method) end
  elseif m == List or m == Tuple then
    if B.methods.list[name] then return setmetatable({ self = obj, name = name, kind = "list" }, Method) end
    if B.mutating[name] then
      return V.undefined("access to attribute '" .. name .. "' of '" .. V.typename(obj) .. "' object is unsafe.")
    end
  elseif m == Loop then
    return B.loop_attr(obj, name)
  elseif m == Undef then
    fail_undef(obj)
  end
  if obj == NONE then return V.undefined("'None' has no attribute '" .. name .. "'") end
  return V.undefined("'" .. V.typename(obj) .. " object' has no attribute '" .. name .. "'")
end
M.getattr = getattr

local function getitem(R, obj, key)
  obj, key = plain(obj), plain(key)
  local m = getmetatable(obj)
  if m == List or m == Tuple or type(obj) == "string" then
    local i = V.num(key)
    if i and type(key) ~= "table" then
      local items = type(obj) == "string" and V.chars(obj) or obj
      local n = #items
      if i < 0 then i = i + n end
      local v = items[i + 1]
      if v ~= nil then return v end
      return V.undefined(V.typename(obj) .. " object has no element " .. V.str(key))
    end
  elseif m == Dict then
    local v = V.dget(obj, key)
    if v ~= nil then return v end
  elseif m == Namespace then
    local v = obj.map[key]
    if v ~= nil then return v end
  elseif m == Undef then
    fail_undef(obj)
  elseif m == Loop and type(key) == "string" then
    return B.loop_attr(obj, key)
  end
  if type(key) == "string" then
    local v = getattr(R, obj, key)
    if getmetatable(v) ~= Undef then return v end
  end
  return V.undefined("'" .. (m == Dict and "dict object" or V.typename(obj)) .. "' has no attribute " .. V.repr(key))
end
M.getitem = getitem

-- Python slice on list/tuple/str
local function slice(obj, a, b, c)
  obj = plain(obj)
  local m = getmetatable(obj)
  local items
  if type(obj) == "string" then items = V.chars(obj)
  elseif m == List or m == Tuple then items = obj
  elseif m == Undef then fail_undef(obj)
  else raise("'" .. V.typename(obj) .. "' object is not subscriptable") end
  local n = #items
  local step = c ~= NONE and c or 1
  if step == 0 then raise("slice step cannot be zero", "ValueError") end
  local function norm(x, dflt, lo, hi)
    if x == NONE then return dflt end
    x = V.num(x)
    if x < 0 then x = x + n if x < lo then x = lo end elseif x > hi then x = hi end
    return x
  end
  local out = {}
  if step > 0 then
    local s, e = norm(a, 0, 0, n), norm(b, n, 0, n)
    for i = s, e - 1, step do out[#out + 1] = items[i + 1] end
  else
    local s, e = norm(a, n - 1, -1, n - 1), norm(b, -1, -1, n - 1)
    for i = s, e + 1, step do out[#out + 1] = items[i + 1] end
  end
  if type(obj) == "string" then return table.concat(out) end
  return setmetatable(out, m)
end

-- ---- calls ----------------------------------------------------------------------------------

local call_macro

local function call(R, f, args, kwargs)
  local m = getmetatable(f)
  if m == Func then return f.fn(R, args, kwargs) end
  if m == Macro then return call_macro(R, f, args, kwargs) end
  if m == Method then return B.call_method(R, f, args, kwargs) end
  if m == Undef then fail_undef(f) end
  raise("'" .. V.typename(f) .. "' object is not callable")
end
M.call = call

-- shared by every call without keyword arguments; callees only read their kwargs
local NO_KWARGS = setmetatable({}, { __newindex = function() error("NO_KWARGS is read-only") end })

local function eval_args(R, node, frame)
  local args = {}
  local nargs, nkw = node.args, node.kwargs
  for i = 1, #nargs do args[i] = plain(eval(R, nargs[i], frame)) end
  if #nkw == 0 then return args, NO_KWARGS end
  local kwargs, order = {}, {}
  for i, kv in ipairs(nkw) do kwargs[kv[1]] = eval(R, kv[2], frame) order[i] = kv[1] end
  kwargs[V.KWORDER] = order
  return args, kwargs
end

local function step(R)
  local s = R.steps + 1
  R.steps = s
  if s > R.max_steps then
    raise("template exceeded the step limit (" .. R.max_steps .. " loop iterations, macro calls and outputs)", "SecurityError")
  end
end

local function new_frame(parent) return setmetatable({}, { __index = parent }) end

-- render a body into a fresh buffer and return the text
local function capture(R, body, frame)
  local saved = R.out
  local buf = {}
  R.out = buf
  local ok, e = pcall(exec, R, body, frame)
  R.out = saved
  if not ok then error(e, 0) end
  if e == "break" or e == "continue" then raise("'" .. e .. "' outside of a loop", "TemplateSyntaxError") end
  return table.concat(buf)
end

call_macro = function(R, mac, args, kwargs)
  step(R)
  R.depth = R.depth + 1
  if R.depth > R.max_depth then raise("maximum macro recursion depth exceeded", "RecursionError") end
  local frame = new_frame(mac.frame)
  local params = mac.params
  local nparams = #params
  for i, p in ipairs(params) do
    local v = args[i]
    if v == nil then v = kwargs[p[1]] end
    if v == nil then
      if p[2] then v = eval(R, p[2], frame)
      else v = V.undefined("parameter '" .. p[1] .. "' was not provided") end
    end
    frame[p[1]] = v
  end
  local varargs = V.tuple()
  for i = nparams + 1, #args do varargs[#varargs + 1] = args[i] end
  frame.varargs = varargs
  local kw = V.dict()
  local known = {}
  for _, p in ipairs(params) do known[p[1]] = true end
  for _, k in ipairs(kwargs[V.KWORDER] or {}) do
    if not known[k] and k ~= "caller" then V.dset(kw, k, kwargs[k]) end
  end
  frame.kwargs = kw
  if kwargs.caller then frame.caller = kwargs.caller end
  local text = capture(R, mac.body, frame)
  R.depth = R.depth - 1
  return text
end

-- ---- expressions ----------------------------------------------------------------------------

eval = function(R, node, frame)
  return E[node.k](R, node, frame)
end

E.lit = function(R, n)
  if n.none then return NONE end
  if n.float then return V.float(n.v) end
  return n.v
end
E.name = function(R, n, frame)
  local v = frame[n.n]
  if v == nil then return V.undefined("'" .. n.n .. "' is undefined") end
  return v
end
E.getattr = function(R, n, frame)
  local o = eval(R, n.o, frame)
  R.pos = n.pos
  return getattr(R, o, n.n)
end
E.getitem = function(R, n, frame)
  local o = eval(R, n.o, frame)
  local k = eval(R, n.i, frame)
  R.pos = n.pos
  return getitem(R, o, k)
end
E.slice = function(R, n, frame)
  local o = eval(R, n.o, frame)
  local a = n.a and eval(R, n.a, frame) or NONE
  local b = n.b and eval(R, n.b, frame) or NONE
  local c = n.c and eval(R, n.c, frame) or NONE
  R.pos = n.pos
  return slice(o, a, b, c)
end
E.call = function(R, n, frame)
  local f = eval(R, n.f, frame)
  local args, kwargs = eval_args(R, n, frame)
  R.pos = n.pos
  return call(R, f, args, kwargs)
end
E.filter = function(R, n, frame)
  local v = eval(R, n.a, frame)
  if n.n ~= "safe" and n.n ~= "string" then v = plain(v) end
  local args, kwargs = eval_args(R, n, frame)
  R.pos = n.pos
  local f = B.filters[n.n]
  if not f then raise("No filter named '" .. n.n .. "'.", "TemplateAssertionError") end
  return f(R, v, args, kwargs)
end
E.test = function(R, n, frame)
  local v = plain(eval(R, n.a, frame))
  local args, kwargs = eval_args(R, n, frame)
  R.pos = n.pos
  local t = B.tests[n.n]
  if not t then raise("No test named '" .. n.n .. "'.", "TemplateAssertionError") end
  local r = t(R, v, args, kwargs)
  if n.neg then return not r end
  return r
end
E.bin = function(R, n, frame)
  local a = eval(R, n.a, frame)
  local b = eval(R, n.b, frame)
  R.pos = n.pos
  return V.arith(n.op, a, b)
end
E.neg = function(R, n, frame) return V.neg(plain(eval(R, n.a, frame))) end
E.pos = function(R, n, frame) return eval(R, n.a, frame) end
E["not"] = function(R, n, frame) return not truthy(eval(R, n.a, frame)) end
E["and"] = function(R, n, frame)
  local a = eval(R, n.a, frame)
  if not truthy(a) then return a end
  return eval(R, n.b, frame)
end
E["or"] = function(R, n, frame)
  local a = eval(R, n.a, frame)
  if truthy(a) then return a end
  return eval(R, n.b, frame)
end
E.concat = function(R, n, frame)
  local parts = {}
  local size = 0
  for i, p in ipairs(n.parts) do
    local s = str(eval(R, p, frame))
    size = size + #s
    parts[i] = s
  end
  if size > V.MAX_STR then raise("string too large", "SecurityError") end
  return table.concat(parts)
end
E.cond = function(R, n, frame)
  if truthy(eval(R, n.test, frame)) then return eval(R, n.a, frame) end
  if n.b then return eval(R, n.b, frame) end
  return V.undefined("the inline if-expression on line evaluated to false and no else section was defined.")
end
E.list = function(R, n, frame)
  local out = V.list()
  for i, e in ipairs(n.items) do out[i] = eval(R, e, frame) end
  return out
end
E.tuple = function(R, n, frame)
  local out = V.tuple()
  for i, e in ipairs(n.items) do out[i] = eval(R, e, frame) end
  return out
end
E.dict = function(R, n, frame)
  local d = V.dict()
  for _, kv in ipairs(n.pairs) do V.dset(d, eval(R, kv[1], frame), eval(R, kv[2], frame)) end
  return d
end
local function compare(op, a, b)
  if op == "==" then return V.eq(a, b)
  elseif op == "!=" then return not V.eq(a, b)
  elseif op == "<" then return V.lt(a, b, "<")
  elseif op == ">" then return V.lt(b, a, ">")
  elseif op == "<=" then return V.eq(a, b) or V.lt(a, b, "<=")
  elseif op == ">=" then return V.eq(a, b) or V.lt(b, a, ">=")
  elseif op == "in" then return V.contains(b, a)
  else return not V.contains(b, a) end
end
M.compare = compare
E.cmp = function(R, n, frame)
  local a = eval(R, n.a, frame)
  for _, o in ipairs(n.ops) do
    local b = eval(R, o[2], frame)
    R.pos = n.pos
    if not compare(o[1], a, b) then return false end
    a = b
  end
  return true
end

-- ---- statements -----------------------------------------------------------------------------

local function emit(R, s)
  local out = R.out
  out[#out + 1] = s
  local size = R.size + #s
  R.size = size
  if size > R.max_output then raise("template output exceeded the size limit (" .. R.max_output .. " bytes)", "SecurityError") end
end

-- assign value to a target node (name / tuple of names / ns.attr)
local function assign(R, target, value, frame)
  if target.k == "name" then
    frame[target.n] = value
  elseif target.k == "nsattr" then
    local ns = frame[target.n]
    if getmetatable(ns) ~= Namespace then
      R.pos = target.pos
      raise("cannot assign attribute on non-namespace object", "TemplateRuntimeError")
    end
    V.dset(ns, target.attr, value)
  else
    local items = V.iter(value)
    if #items ~= #target.items then
      raise((#items > #target.items and "too many values to unpack" or "not enough values to unpack")
        .. " (expected " .. #target.items .. ", got " .. #items .. ")", "ValueError")
    end
    for i, t in ipairs(target.items) do assign(R, t, items[i], frame) end
  end
end

S.text = function(R, n) emit(R, n.v) end
S.out = function(R, n, frame)
  step(R)
  local v = eval(R, n.e, frame)
  if type(v) ~= "string" then v = str(v) end
  emit(R, v)
end
S["if"] = function(R, n, frame)
  for _, br in ipairs(n.branches) do
    R.pos = br[1].pos
    if truthy(eval(R, br[1], frame)) then return exec(R, br[2], frame) end
  end
  if n.else_ then return exec(R, n.else_, frame) end
end
S.set = function(R, n, frame)
  local v = eval(R, n.e, frame)
  R.pos = n.pos
  assign(R, n.target, v, frame)
end
local function apply_filters(R, v, filters, frame)
  for _, f in ipairs(filters) do
    local args, kwargs = eval_args(R, f, frame)
    R.pos = f.pos
    local fn = B.filters[f.n]
    if f.n ~= "safe" and f.n ~= "string" then v = plain(v) end
    if not fn then raise("No filter named '" .. f.n .. "'.", "TemplateAssertionError") end
    v = fn(R, v, args, kwargs)
  end
  return v
end
S.setblock = function(R, n, frame)
  local v = capture(R, n.body, frame)
  v = apply_filters(R, v, n.filters, frame)
  assign(R, n.target, v, frame)
end
S.filterblock = function(R, n, frame)
  local v = capture(R, n.body, frame)
  emit(R, str(apply_filters(R, v, n.filters, frame)))
end
S.block = function(R, n, frame) return exec(R, n.body, frame) end
S.with = function(R, n, frame)
  local f = new_frame(frame)
  for _, a in ipairs(n.assigns) do assign(R, a[1], eval(R, a[2], frame), f) end
  return exec(R, n.body, f)
end
S.macro = function(R, n, frame)
  frame[n.name] = setmetatable({ name = n.name, params = n.params, body = n.body, frame = frame }, Macro)
end
S.callblock = function(R, n, frame)
  local caller = setmetatable({ name = "caller", params = n.params, body = n.body, frame = frame }, Macro)
  local f = eval(R, n.call.f, frame)
  local args, kw = eval_args(R, n.call, frame)
  local kwargs = { caller = caller, [V.KWORDER] = kw[V.KWORDER] }
  for k, v in pairs(kw) do if type(k) == "string" then kwargs[k] = v end end
  R.pos = n.pos
  emit(R, str(call(R, f, args, kwargs)))
end
S["break"] = function() return "break" end
S["continue"] = function() return "continue" end

S["for"] = function(R, n, frame)
  local seq = eval(R, n.iter, frame)
  R.pos = n.iter.pos
  if seq == NONE then raise("'NoneType' object is not iterable") end
  local items = V.iter(seq)
  local f = new_frame(frame)
  if n.cond then
    local kept = {}
    for _, it in ipairs(items) do
      assign(R, n.target, it, f)
      if truthy(eval(R, n.cond, f)) then kept[#kept + 1] = it end
    end
    items = kept
  end
  local count = #items
  if count == 0 then
    if n.else_ then return exec(R, n.else_, frame) end
    return
  end
  local loop = setmetatable({ items = items, length = count, i = 0, depth = 1 }, Loop)
  local body = n.body
  for i = 1, count do
    step(R)
    loop.i = i
    -- a fresh scope per iteration: Jinja2 does not carry a {% set %} in the body over to the next one
    f = new_frame(frame)
    f.loop = loop
    assign(R, n.target, items[i], f)
    local sig = exec(R, body, f)
    if sig == "break" then break end
  end
end

exec = function(R, nodes, frame)
  for i = 1, #nodes do
    local n = nodes[i]
    R.pos = n.pos
    local sig = S[n.k](R, n, frame)
    if sig then return sig end
  end
end

-- ---- public API -----------------------------------------------------------------------------

local Template = {}
Template.__index = Template

local function format_err(name, src, e)
  if type(e) == "table" and e.jinja then
    local where = name
    if e.pos then
      local line, col = lexer.linecol(src, e.pos)
      where = string.format("%s:%d:%d", name, line, col)
    end
    return string.format("%s: %s", where, e.jinja), e
  end
  return string.format("%s: internal error: %s", name, tostring(e)), { jinja = tostring(e), kind = "InternalError" }
end

-- compile(source, {name=, trim_blocks=true, lstrip_blocks=true}) -> template | nil, err
function M.compile(source, o)
  o = o or {}
  local name = o.name or "template"
  if type(source) ~= "string" then return nil, name .. ": template source must be a string" end
  local ok, toks, src = pcall(lexer.lex, source, o)
  if not ok then return nil, (format_err(name, source:gsub("\r\n?", "\n"), toks)) end
  local ok2, ast = pcall(parser.parse, toks)
  if not ok2 then
    -- the parser recurses per nesting level: "((((...1))))" thousands deep overflows the Lua
    -- stack, which is the template's fault (Python's Jinja2 hits its recursion limit too)
    if type(ast) == "string" and ast:find("stack overflow", 1, true) then
      ast = { jinja = "template nesting too deep", kind = "RecursionError" }
    end
    return nil, (format_err(name, src, ast))
  end
  return setmetatable({ name = name, src = src, ast = ast, opts = o }, Template)
end

-- render(vars, {max_steps=, max_output=}) -> text | nil, err, errinfo
-- vars: a table of engine values or plain Lua values (converted with value.from_lua).
-- errinfo = {kind = "TemplateError" | "UndefinedError" | ..., message = text without position}
function Template:render(vars, o)
  o = o or {}
  local globals = B.globals()
  local root = new_frame(globals)
  for k, v in pairs(vars or {}) do root[k] = V.from_lua(v) end
  local R = {
    out = {}, size = 0, steps = 0, depth = 0, pos = 1,
    max_steps = o.max_steps or self.opts.max_steps or M.defaults.max_steps,
    max_output = o.max_output or self.opts.max_output or M.defaults.max_output,
    max_depth = o.max_depth or M.defaults.max_depth,
  }
  local max_str = V.MAX_STR
  V.MAX_STR = math.min(max_str, R.max_output)
  local ok, e = pcall(exec, R, self.ast, root)
  V.MAX_STR = max_str
  if not ok then
    if type(e) == "table" and e.jinja and not e.pos then e.pos = R.pos end
    if type(e) == "string" and e:find("stack overflow", 1, true) then
      e = { jinja = "template recursion too deep", kind = "RecursionError", pos = R.pos }
    end
    local msg, info = format_err(self.name, self.src, e)
    return nil, msg, { kind = info.kind, message = info.jinja }
  end
  if e == "break" or e == "continue" then return nil, self.name .. ": '" .. e .. "' outside of a loop" end
  return table.concat(R.out)
end

-- one-shot helper
function M.render(source, vars, o)
  local t, err = M.compile(source, o)
  if not t then return nil, err end
  return t:render(vars, o)
end

return M
