-- lunar.jinja against Python Jinja2 3.1.6 configured as transformers configures it: every real
-- chat template in $LUNAR_SHARED/chat-templates and every built-in in templates/, times each
-- conversation of tests/fixtures/template/conversations.json, with add_generation_prompt off
-- and on, must render byte for byte what Jinja2 rendered (tests/fixtures/template/*.json, written
-- by generate.py), and raise where Jinja2 raised. Then one-feature snippets (snippets.json), the
-- sandbox, the step/size limits, and error positions.
local jinja = require "lunar.jinja"
local json = require "lunar.jinja.json"
local F = require "template_fixtures"
local V = jinja.value

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function show(s) return s == nil and "nil" or string.format("%q", s) end

describe("lunar.jinja renders every chat template exactly as Jinja2", function()
  local convs = F.conversations()
  for _, fx in ipairs(F.fixtures()) do
    local d = fx.data
    local ref = V.dget(d, "template")
    it(fx.name .. " (" .. #V.dget(d, "cases") .. " cases)", function()
      local tpl, cerr = jinja.compile(read(F.template_path(ref)), { name = fx.name })
      assert(tpl, cerr)
      local failures = {}
      for _, c in ipairs(V.dget(d, "cases")) do
        local conv_name, agp = V.dget(c, "conversation"), V.dget(c, "add_generation_prompt")
        local out, err, info = tpl:render(F.vars(convs[conv_name], agp, V.dget(d, "special_tokens")))
        local want, werr = V.dget(c, "output"), V.dget(c, "error")
        local label = conv_name .. " add_generation_prompt=" .. tostring(agp)
        if want then
          if out ~= want then failures[#failures + 1] = label .. ": want " .. show(want) .. "\n  got " .. show(out or err) end
        elseif out then
          failures[#failures + 1] = label .. ": Jinja2 raised " .. werr .. ", lunar rendered " .. show(out)
        elseif V.dget(c, "error_type") == "TemplateError" and info.message ~= werr then
          -- raise_exception(msg): the message must be the template's own
          failures[#failures + 1] = label .. ": want error " .. show(werr) .. ", got " .. show(err)
        end
      end
      assert.are.same({}, failures)
    end)
  end
end)

describe("the built-in qwen3 template", function()
  it("renders what Qwen3's own template renders for every conversation", function()
    local official = assert(json.read(F.dir .. "/qwen3.json"))
    local ours = assert(json.read(F.dir .. "/builtin-qwen3.json"))
    local a, b = V.dget(official, "cases"), V.dget(ours, "cases")
    assert.are.equal(#a, #b)
    for i = 1, #a do
      assert.are.equal(V.dget(a[i], "output"), V.dget(b[i], "output"))
      assert.are.equal(V.dget(a[i], "error"), V.dget(b[i], "error"))
    end
  end)
end)

describe("lunar.jinja one-feature snippets match Jinja2", function()
  local d = assert(json.read(F.dir .. "/snippets.expected.json"))
  local vars = { strftime_now = F.strftime_now }
  local sv = V.dget(d, "vars")
  for _, k in ipairs(sv.keys) do vars[k] = sv.map[k] end
  for _, c in ipairs(V.dget(d, "cases")) do
    local name, src = V.dget(c, "name"), V.dget(c, "template")
    local want = V.dget(c, "output")
    it(name .. (want and "" or (" raises " .. V.dget(c, "error_type"))), function()
      local out, err, info = jinja.render(src, vars, { name = name })
      if want then
        assert.are.equal(want, out, err)
      else
        assert.is_nil(out)
        if V.dget(c, "error_type") == "TemplateError" or V.dget(c, "error_type") == "SecurityError"
          or V.dget(c, "error_type") == "UndefinedError" then
          assert.are.equal(V.dget(c, "error"), info.message)
        end
      end
    end)
  end
end)

describe("lunar.jinja errors", function()
  it("name the template, line and column of a syntax error", function()
    local t, err = jinja.compile("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}", { name = "t" })
    assert.is_nil(t)
    assert.matches("^t:3:11: ", err) -- at the }} that ends the expression early
  end)
  it("name the line and column where raise_exception was called", function()
    local out, err, info = jinja.render("a\nb {{ raise_exception('roles must alternate') }}", {}, { name = "chat" })
    assert.is_nil(out)
    assert.are.equal("chat:2:21: roles must alternate", err)
    assert.are.equal("TemplateError", info.kind)
  end)
  it("report an unclosed block", function()
    local t, err = jinja.compile("{% for x in y %}", { name = "t" })
    assert.is_nil(t)
    assert.matches("endfor", err)
  end)
  it("report an unknown filter", function()
    local out, err = jinja.render("{{ 1 | nosuch }}", {})
    assert.is_nil(out)
    assert.matches("nosuch", err)
  end)
end)

describe("the lunar.jinja sandbox", function()
  -- each of these must render without reaching anything outside the engine: either as empty
  -- text (an undefined name) or as an error; never a Lua value, a file, or a process
  local attempts = {
    "{{ os }}", "{{ os.execute('touch /tmp/lunar-jinja-pwned') }}", "{{ io.open('/etc/passwd').read() }}",
    "{{ require('ffi') }}", "{{ ffi.C }}", "{{ _G }}", "{{ _G.os }}", "{{ _ENV }}", "{{ getmetatable('') }}",
    "{{ ''.__index }}", "{{ ''.rep('x', 3) }}", "{{ ''.__class__.__mro__ }}", "{{ 'x'.format.__globals__ }}",
    "{{ range.__globals__ }}", "{{ range.fn }}", "{{ namespace.fn }}", "{{ (''|attr('__index')) }}",
    "{{ string }}", "{{ string.rep('x', 10) }}", "{{ load('return os')() }}", "{{ loadstring }}",
    "{{ dofile('/etc/passwd') }}", "{{ package.loaded }}", "{{ debug.getinfo(1) }}", "{{ self }}",
    "{{ lipsum.__globals__ }}", "{{ raise_exception.fn }}", "{{ [].__index }}", "{{ {}.map }}", "{{ {}.keys }}",
    "{% set x = namespace() %}{{ x.map }}{{ x.keys }}", "{{ cycler }}", "{{ joiner }}", "{{ setmetatable }}",
  }
  for _, src in ipairs(attempts) do
    it("does not escape through " .. src, function()
      local out, err = jinja.render(src, { messages = V.list() })
      if out then
        -- any text is the engine's own printing of an undefined or a builtin's name
        assert.is_falsy(out:find("table: 0x", 1, true), out)
        assert.is_falsy(out:find("function: ", 1, true), out)
        assert.is_falsy(out:find("root:", 1, true), out)
      else
        assert.is_string(err)
      end
    end)
  end
  it("left no file behind and changed no Lua global", function()
    assert.is_nil(io.open("/tmp/lunar-jinja-pwned", "r"))
    assert.are.equal("table", type(os))
  end)
  it("blocks list and dict mutation as ImmutableSandboxedEnvironment does", function()
    local out, err = jinja.render("{% set l = [1] %}{{ l.append(2) }}{{ l }}", {})
    assert.is_nil(out)
    assert.matches("unsafe", err)
    out, err = jinja.render("{% set d = {} %}{{ d.update({'a': 1}) }}", {})
    assert.is_nil(out)
    assert.matches("unsafe", err)
  end)
  it("does not let a template change the caller's values", function()
    local msgs = V.from_lua { { role = "user", content = "hi" } }
    assert(jinja.render("{% set messages = [] %}{% set m = messages %}", { messages = msgs }))
    assert.are.equal(1, #msgs)
  end)
  it("stops nested loops that would run for ever with a step-limit error", function()
    local t0 = os.clock()
    local out, err = jinja.render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {})
    assert.is_nil(out)
    assert.matches("step limit", err)
    assert.is_true(os.clock() - t0 < 30)
  end)
  it("stops unbounded macro recursion with an error", function()
    local out, err = jinja.render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {})
    assert.is_nil(out)
    assert.matches("recursion", err)
  end)
  it("stops output that grows past the size limit", function()
    local out, err = jinja.render("{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}", {}, { max_output = 10 * 1024 * 1024 })
    assert.is_nil(out)
    assert.matches("size limit", err)
  end)
  it("refuses huge ranges as Jinja2's sandbox does", function()
    local out, err = jinja.render("{{ range(10000000)|length }}", {})
    assert.is_nil(out)
    assert.matches("MAX_RANGE", err)
  end)
  it("refuses string repetition that would exhaust memory", function()
    local out, err = jinja.render("{{ ('x' * 1000000) * 1000000 }}", {})
    assert.is_nil(out)
    assert.matches("too large", err)
  end)
  it("refuses widths, joins, replaces, JSON and list growth past the bound before building them", function()
    for _, src in ipairs {
      "{{ 'x' | indent(1000000000, true) }}", "{{ 'x' | center(2000000000) }}",
      "{{ [1, [2]] | tojson(indent=1000000000) }}", "{{ (['x' * 600000] * 100) | tojson }}",
      "{{ (['x' * 600000] * 100) | join }}", "{{ ('x' * 1000).replace('x', 'y' * 600000) }}",
      "{% set ns = namespace(x=[1]) %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    } do
      -- max_output bounds every string the render builds, not only what it writes
      local out, err = jinja.render(src, {}, { max_output = 1024 * 1024 })
      assert.is_nil(out, src)
      assert.matches("too large", err, 1, true)
    end
    assert.are.equal("  x", jinja.render("{{ 'x' | indent(2, true) }}", {}, { max_output = 1024 * 1024 }))
  end)
  it("formats % fields wider than Lua's two digits as Python does", function()
    -- Python: '[%105s]' % 'x', '[%-102s]' % 'x', '[%0102d]' % -5
    assert.are.equal("[" .. string.rep(" ", 104) .. "x]", jinja.render("[{{ '%105s' % 'x' }}]", {}))
    assert.are.equal("[x" .. string.rep(" ", 101) .. "]", jinja.render("[{{ '%-102s' % 'x' }}]", {}))
    assert.are.equal("[-" .. string.rep("0", 100) .. "5]", jinja.render("[{{ '%0102d' % -5 }}]", {}))
    local out, err = jinja.render("{{ '%2000000000s' % 'x' }}", {}, { max_output = 1024 * 1024 })
    assert.is_nil(out)
    assert.matches("too large", err)
  end)
  it("reports nesting deeper than the parser's stack as a template error, not an internal one", function()
    local t, err = jinja.compile("{{ " .. string.rep("(", 5000) .. "1" .. string.rep(")", 5000) .. " }}")
    assert.is_nil(t)
    assert.are.equal("template: template nesting too deep", err)
  end)
end)

describe("lunar.jinja.json", function()
  it("keeps object key order, int vs float, and null", function()
    local v = assert(json.decode('{"z": 1, "a": 1.0, "m": [null, true, "\\u00e9\\ud83d\\ude00"], "e": 1e2}'))
    assert.are.same({ "z", "a", "m", "e" }, v.keys)
    assert.are.equal('{"z": 1, "a": 1.0, "m": [null, true, "é😀"], "e": 100.0}', V.dumps(v, { sep_item = ", ", sep_key = ": " }))
  end)
  it("reports where a document is malformed", function()
    local v, err = json.decode('{\n"a": [1, }')
    assert.is_nil(v)
    assert.matches("line 2", err)
  end)
end)
