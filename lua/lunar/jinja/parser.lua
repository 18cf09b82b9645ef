-- Jinja parser: the lexer's tokens -> a tree of statement and expression nodes ({k = kind,
-- pos = byte position, ...}). Precedence follows Jinja2's parser: inline if, or, and, not,
-- comparisons (in, not in, ==, <, ...), + -, ~, * / // %, **, unary -, then postfix
-- (.attr, [i], [a:b:c], calls) and filters/tests (| f, is t), which bind tighter than unary -.
local M = {}

local function err(msg, pos) error({ jinja = msg, kind = "TemplateSyntaxError", pos = pos }, 0) end

local P = {}
P.__index = P

function P:peek() return self.toks[self.i] end
function P:next() local t = self.toks[self.i] self.i = self.i + 1 return t end
function P:is_op(v, t) t = t or self.toks[self.i] return t.t == "op" and t.v == v end
function P:is_name(v, t) t = t or self.toks[self.i] return t.t == "name" and t.v == v end
function P:skip_op(v) if self:is_op(v) then self.i = self.i + 1 return true end return false end
function P:skip_name(v) if self:is_name(v) then self.i = self.i + 1 return true end return false end
local function desc(t)
  if t.t == "op" or t.t == "name" then return "'" .. t.v .. "'" end
  if t.t == "block_end" then return "end of statement block" end
  if t.t == "variable_end" then return "end of print statement" end
  if t.t == "eof" then return "end of template" end
  return t.t
end
function P:expect_op(v)
  local t = self:next()
  if t.t ~= "op" or t.v ~= v then err("expected token '" .. v .. "', got " .. desc(t), t.pos) end
  return t
end
function P:expect_name(v)
  local t = self:next()
  if t.t ~= "name" or (v and t.v ~= v) then err("expected " .. (v and ("'" .. v .. "'") or "name") .. ", got " .. desc(t), t.pos) end
  return t.v
end
function P:expect(tt)
  local t = self:next()
  if t.t ~= tt then err("expected " .. tt .. ", got " .. desc(t), t.pos) end
  return t
end

-- ---- expressions ----------------------------------------------------------------------------

function P:expr(with_cond)
  if with_cond == false then return self:or_expr() end
  local e = self:or_expr()
  while self:is_name("if") do
    local pos = self:next().pos
    local test = self:or_expr()
    local other
    if self:skip_name("else") then other = self:expr() end
    e = { k = "cond", pos = pos, test = test, a = e, b = other }
  end
  return e
end

-- an expression, or several separated by commas as a tuple (set values, for iterables, output)
function P:tuple_expr(with_cond)
  local pos = self:peek().pos
  local e = self:expr(with_cond)
  if not self:is_op(",") then return e end
  local items = { e }
  while self:skip_op(",") do
    local t = self:peek()
    if t.t == "block_end" or t.t == "variable_end" or self:is_name("if", t) then break end
    items[#items + 1] = self:expr(with_cond)
  end
  return { k = "tuple", items = items, pos = pos }
end

-- left-associative `a or b or c` / `a and b`
local function boolean_chain(self, word, sub)
  local e = sub(self)
  while self:is_name(word) do
    local pos = self:next().pos
    e = { k = word, pos = pos, a = e, b = sub(self) }
  end
  return e
end

function P:or_expr() return boolean_chain(self, "or", P.and_expr) end
function P:and_expr() return boolean_chain(self, "and", P.not_expr) end

function P:not_expr()
  if self:is_name("not") then
    local pos = self:next().pos
    return { k = "not", pos = pos, a = self:not_expr() }
  end
  return self:compare()
end

local cmp_ops = { ["=="] = true, ["!="] = true, ["<"] = true, ["<="] = true, [">"] = true, [">="] = true }
function P:compare()
  local pos = self:peek().pos
  local e = self:math1()
  local ops = {}
  while true do
    local t = self:peek()
    if t.t == "op" and cmp_ops[t.v] then
      self:next()
      ops[#ops + 1] = { t.v, self:math1() }
    elseif self:is_name("in") then
      self:next()
      ops[#ops + 1] = { "in", self:math1() }
    elseif self:is_name("not") and self:is_name("in", self.toks[self.i + 1]) then
      self.i = self.i + 2
      ops[#ops + 1] = { "notin", self:math1() }
    else
      break
    end
  end
  if #ops == 0 then return e end
  return { k = "cmp", pos = pos, a = e, ops = ops }
end

function P:math1()
  local e = self:concat()
  while self:is_op("+") or self:is_op("-") do
    local t = self:next()
    e = { k = "bin", op = t.v, pos = t.pos, a = e, b = self:concat() }
  end
  return e
end

function P:concat()
  local e = self:math2()
  if not self:is_op("~") then return e end
  local parts = { e }
  local pos = self:peek().pos
  while self:skip_op("~") do parts[#parts + 1] = self:math2() end
  return { k = "concat", pos = pos, parts = parts }
end

function P:math2()
  local e = self:pow()
  while self:is_op("*") or self:is_op("/") or self:is_op("//") or self:is_op("%") do
    local t = self:next()
    e = { k = "bin", op = t.v, pos = t.pos, a = e, b = self:pow() }
  end
  return e
end

function P:pow()
  local e = self:unary()
  while self:is_op("**") do
    local t = self:next()
    e = { k = "bin", op = "**", pos = t.pos, a = e, b = self:unary() }
  end
  return e
end

function P:unary(with_filter)
  local t = self:peek()
  local e
  if self:is_op("-") then
    self:next()
    e = { k = "neg", pos = t.pos, a = self:unary(false) }
  elseif self:is_op("+") then
    self:next()
    e = { k = "pos", pos = t.pos, a = self:unary(false) }
  else
    e = self:postfix(self:primary())
  end
  if with_filter ~= false then e = self:filter_expr(e) end
  return e
end

function P:primary()
  local t = self:next()
  if t.t == "name" then
    local v = t.v
    if v == "true" or v == "True" then return { k = "lit", v = true, pos = t.pos } end
    if v == "false" or v == "False" then return { k = "lit", v = false, pos = t.pos } end
    if v == "none" or v == "None" then return { k = "lit", none = true, pos = t.pos } end
    return { k = "name", n = v, pos = t.pos }
  elseif t.t == "string" then
    local s = t.v
    while self:peek().t == "string" do s = s .. self:next().v end
    return { k = "lit", v = s, pos = t.pos }
  elseif t.t == "int" then
    return { k = "lit", v = t.v, pos = t.pos }
  elseif t.t == "float" then
    return { k = "lit", v = t.v, float = true, pos = t.pos }
  elseif t.t == "op" and t.v == "(" then
    if self:skip_op(")") then return { k = "tuple", items = {}, pos = t.pos } end
    local e = self:expr()
    if self:is_op(",") then
      local items = { e }
      while self:skip_op(",") do
        if self:is_op(")") then break end
        items[#items + 1] = self:expr()
      end
      e = { k = "tuple", items = items, pos = t.pos }
    end
    self:expect_op(")")
    return e
  elseif t.t == "op" and t.v == "[" then
    local items = {}
    while not self:is_op("]") do
      if #items > 0 then self:expect_op(",") end
      if self:is_op("]") then break end
      items[#items + 1] = self:expr()
    end
    self:expect_op("]")
    return { k = "list", items = items, pos = t.pos }
  elseif t.t == "op" and t.v == "{" then
    local pairs_ = {}
    while not self:is_op("}") do
      if #pairs_ > 0 then self:expect_op(",") end
      if self:is_op("}") then break end
      local key = self:expr()
      self:expect_op(":")
      pairs_[#pairs_ + 1] = { key, self:expr() }
    end
    self:expect_op("}")
    return { k = "dict", pairs = pairs_, pos = t.pos }
  end
  err("unexpected " .. desc(t), t.pos)
end

function P:call_args()
  local args, kwargs = {}, {}
  self:expect_op("(")
  while not self:is_op(")") do
    if #args + #kwargs > 0 then self:expect_op(",") end
    if self:is_op(")") then break end
    local t = self:peek()
    if t.t == "name" and self:is_op("=", self.toks[self.i + 1]) then
      self.i = self.i + 2
      kwargs[#kwargs + 1] = { t.v, self:expr() }
    else
      if #kwargs > 0 then err("positional argument follows keyword argument", t.pos) end
      args[#args + 1] = self:expr()
    end
  end
  self:expect_op(")")
  return args, kwargs
end

function P:subscript_item()
  -- one of: expr | [a]:[b][:[c]]
  local pos = self:peek().pos
  local a, b, c
  if not self:is_op(":") then
    a = self:expr()
    if not self:is_op(":") then return a end
  end
  self:expect_op(":")
  if not self:is_op("]") and not self:is_op(":") then b = self:expr() end
  if self:skip_op(":") then
    if not self:is_op("]") then c = self:expr() end
  end
  return { k = "slice", pos = pos, a = a, b = b, c = c }
end

function P:postfix(e)
  while true do
    local t = self:peek()
    if self:is_op(".") then
      self:next()
      local n = self:next()
      if n.t == "name" then e = { k = "getattr", pos = n.pos, o = e, n = n.v }
      elseif n.t == "int" then e = { k = "getitem", pos = n.pos, o = e, i = { k = "lit", v = n.v, pos = n.pos } }
      else err("expected name or number", n.pos) end
    elseif self:is_op("[") then
      self:next()
      local idx = self:subscript_item()
      if self:is_op(",") then
        local items = { idx }
        while self:skip_op(",") do
          if self:is_op("]") then break end
          items[#items + 1] = self:subscript_item()
        end
        idx = { k = "tuple", items = items, pos = t.pos }
      end
      self:expect_op("]")
      if idx.k == "slice" then idx.o = e e = idx
      else e = { k = "getitem", pos = t.pos, o = e, i = idx } end
    elseif self:is_op("(") then
      local args, kwargs = self:call_args()
      e = { k = "call", pos = t.pos, f = e, args = args, kwargs = kwargs }
    else
      return e
    end
  end
end

function P:dotted_name()
  local n = self:expect_name()
  while self:is_op(".") do
    self:next()
    n = n .. "." .. self:expect_name()
  end
  return n
end

local test_arg_start = { name = true, string = true, int = true, float = true }
function P:filter_expr(e)
  while true do
    local t = self:peek()
    if self:is_op("|") then
      self:next()
      local pos = self:peek().pos
      local name = self:dotted_name()
      local args, kwargs = {}, {}
      if self:is_op("(") then args, kwargs = self:call_args() end
      e = { k = "filter", pos = pos, n = name, a = e, args = args, kwargs = kwargs }
    elseif self:is_name("is") then
      self:next()
      local neg = self:skip_name("not")
      local pos = self:peek().pos
      local name = self:dotted_name()
      local args, kwargs = {}, {}
      local nt = self:peek()
      if self:is_op("(") then
        args, kwargs = self:call_args()
      elseif (test_arg_start[nt.t] or (nt.t == "op" and (nt.v == "[" or nt.v == "{" or nt.v == "(" or nt.v == "-")))
        and not (nt.t == "name" and (nt.v == "else" or nt.v == "or" or nt.v == "and")) then
        if nt.t == "name" and nt.v == "is" then err("You cannot chain multiple tests with is", nt.pos) end
        local a = self:postfix(self:primary())
        args = { a }
      end
      e = { k = "test", pos = pos, n = name, a = e, args = args, kwargs = kwargs, neg = neg }
    elseif self:is_op("(") then
      local args, kwargs = self:call_args()
      e = { k = "call", pos = t.pos, f = e, args = args, kwargs = kwargs }
    else
      return e
    end
  end
end

-- assignment targets: name, a, b / (a, b), ns.attr
function P:target(allow_attr)
  local t = self:peek()
  local function one()
    local n = self:next()
    if n.t ~= "name" then
      if n.t == "op" and n.v == "(" then
        local items = { one() }
        while self:skip_op(",") do if self:is_op(")") then break end items[#items + 1] = one() end
        self:expect_op(")")
        return { k = "tuple", items = items, pos = n.pos }
      end
      err("can't assign to " .. desc(n), n.pos)
    end
    if allow_attr and self:is_op(".") then
      self:next()
      return { k = "nsattr", n = n.v, attr = self:expect_name(), pos = n.pos }
    end
    return { k = "name", n = n.v, pos = n.pos }
  end
  local first = one()
  if self:is_op(",") then
    local items = { first }
    while self:skip_op(",") do
      if not (self:peek().t == "name" or self:is_op("(")) then break end
      items[#items + 1] = one()
    end
    return { k = "tuple", items = items, pos = t.pos }
  end
  return first
end

-- ---- statements -----------------------------------------------------------------------------

-- parse statements until a block tag whose name is in `ends`; returns body, end name
function P:body(ends)
  local nodes = {}
  while true do
    local t = self:next()
    if t.t == "data" then
      nodes[#nodes + 1] = { k = "text", v = t.v, pos = t.pos }
    elseif t.t == "variable_begin" then
      local e = self:tuple_expr()
      self:expect("variable_end")
      nodes[#nodes + 1] = { k = "out", e = e, pos = t.pos }
    elseif t.t == "block_begin" then
      local nt = self:peek()
      if nt.t ~= "name" then err("tag name expected", nt.pos) end
      if ends and ends[nt.v] then
        self:next()
        return nodes, nt.v, nt.pos
      end
      nodes[#nodes + 1] = self:statement()
    elseif t.t == "eof" then
      if ends then
        local names = {}
        for k in pairs(ends) do names[#names + 1] = "'" .. k .. "'" end
        table.sort(names)
        err("Unexpected end of template. Jinja was looking for the following tags: " .. table.concat(names, " or ") .. ".", t.pos)
      end
      return nodes
    else
      err("unexpected " .. desc(t), t.pos)
    end
  end
end

local function set_of(...) local s = {} for _, v in ipairs { ... } do s[v] = true end return s end

function P:block_end() self:expect("block_end") end

function P:statement()
  local t = self:next()
  local kw, pos = t.v, t.pos
  if kw == "if" then
    local node = { k = "if", pos = pos, branches = {} }
    local cond = self:expr()
    self:block_end()
    while true do
      local body, e = self:body(set_of("elif", "else", "endif"))
      node.branches[#node.branches + 1] = { cond, body }
      if e == "elif" then
        cond = self:expr()
        self:block_end()
      elseif e == "else" then
        self:block_end()
        node.else_ = self:body(set_of("endif"))
        self:block_end()
        return node
      else
        self:block_end()
        return node
      end
    end
  elseif kw == "for" then
    local target = self:target(false)
    self:expect_name("in")
    local iter = self:tuple_expr(false)
    local cond
    if self:skip_name("if") then cond = self:expr() end
    local recursive = self:skip_name("recursive")
    self:block_end()
    local body, e = self:body(set_of("endfor", "else"))
    local else_
    self:block_end()
    if e == "else" then
      else_ = self:body(set_of("endfor"))
      self:block_end()
    end
    return { k = "for", pos = pos, target = target, iter = iter, cond = cond, body = body, else_ = else_,
      recursive = recursive }
  elseif kw == "set" then
    local target = self:target(true)
    if self:skip_op("=") then
      local e = self:tuple_expr()
      self:block_end()
      return { k = "set", pos = pos, target = target, e = e }
    end
    local filters = {}
    while self:is_op("|") do
      self:next()
      local fpos = self:peek().pos
      local name = self:dotted_name()
      local args, kwargs = {}, {}
      if self:is_op("(") then args, kwargs = self:call_args() end
      filters[#filters + 1] = { k = "filter", pos = fpos, n = name, args = args, kwargs = kwargs }
    end
    self:block_end()
    local body = self:body(set_of("endset"))
    self:block_end()
    return { k = "setblock", pos = pos, target = target, body = body, filters = filters }
  elseif kw == "macro" then
    local name = self:expect_name()
    local params = self:params()
    self:block_end()
    local body = self:body(set_of("endmacro"))
    self:skip_name(name)
    self:block_end()
    return { k = "macro", pos = pos, name = name, params = params, body = body }
  elseif kw == "call" then
    local params = {}
    if self:is_op("(") then params = self:params() end
    local call = self:expr()
    if call.k ~= "call" then err("expected call", call.pos) end
    self:block_end()
    local body = self:body(set_of("endcall"))
    self:block_end()
    return { k = "callblock", pos = pos, call = call, params = params, body = body }
  elseif kw == "filter" then
    local filters = {}
    repeat
      local fpos = self:peek().pos
      local name = self:dotted_name()
      local args, kwargs = {}, {}
      if self:is_op("(") then args, kwargs = self:call_args() end
      filters[#filters + 1] = { k = "filter", pos = fpos, n = name, args = args, kwargs = kwargs }
    until not self:skip_op("|")
    self:block_end()
    local body = self:body(set_of("endfilter"))
    self:block_end()
    return { k = "filterblock", pos = pos, filters = filters, body = body }
  elseif kw == "break" or kw == "continue" then
    if self.loop_depth == 0 then err("'" .. kw .. "' outside of a loop", pos) end
    self:block_end()
    return { k = kw, pos = pos }
  elseif kw == "generation" then -- transformers' AssistantTracker: renders its body as is
    self:block_end()
    local body = self:body(set_of("endgeneration"))
    self:block_end()
    return { k = "block", pos = pos, body = body }
  elseif kw == "with" then
    local assigns = {}
    while not (self:peek().t == "block_end") do
      if #assigns > 0 then self:expect_op(",") end
      local target = self:target(false)
      self:expect_op("=")
      assigns[#assigns + 1] = { target, self:expr() }
    end
    self:block_end()
    local body = self:body(set_of("endwith"))
    self:block_end()
    return { k = "with", pos = pos, assigns = assigns, body = body }
  end
  if t.t == "name" then
    err("Encountered unknown tag '" .. kw .. "'.", pos)
  end
  err("tag name expected", pos)
end

function P:params()
  local params = {}
  self:expect_op("(")
  while not self:is_op(")") do
    if #params > 0 then self:expect_op(",") end
    if self:is_op(")") then break end
    local name = self:expect_name()
    local default
    if self:skip_op("=") then default = self:expr() end
    params[#params + 1] = { name, default }
  end
  self:expect_op(")")
  return params
end

function M.parse(toks)
  local p = setmetatable({ toks = toks, i = 1, loop_depth = 0 }, P)
  -- break/continue are checked at run time by the interpreter; loop_depth stays unused
  p.loop_depth = 1
  return p:body(nil)
end

return M
