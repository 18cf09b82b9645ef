-- The REPL: expressions print values, statements run, unfinished chunks continue, errors do
-- not end the session.
local repl = require "lunar.repl"

local function session(lines, env)
  local i, out = 0, {}
  repl.run({
    env = env,
    input = function() i = i + 1 return lines[i] end,
    out = function(s) out[#out + 1] = s end,
  })
  return table.concat(out)
end

describe("lunar.repl", function()
  it("prints the value of an expression", function()
    assert.are.equal("3\n", session({ "1 + 2" }))
  end)

  it("keeps globals between lines and continues an unfinished chunk", function()
    local out = session({ "function sq(x)", "  return x * x", "end", "sq(7)" })
    assert.are.equal("49\n", out)
  end)

  it("reports an error and carries on", function()
    local out = session({ "error('boom')", "'still here'" })
    assert.matches("error: .*boom", out)
    assert.matches('"still here"\n$', out)
  end)

  it("reports a syntax error and carries on", function()
    local out = session({ "x = = 1", "2" })
    assert.matches("error: repl:1:", out)
    assert.matches("2\n$", out)
  end)

  it("stops at exit()", function()
    assert.are.equal("1\n", session({ "1", "exit()", "2" }))
  end)

  it("offers the values it was given", function()
    assert.are.equal('"v"\n', session({ "thing" }, { thing = "v" }))
  end)

  it("prints several results and nested tables", function()
    assert.are.equal('1\t{a = {b = 2}}\n', session({ "1, {a={b=2}}" }))
  end)
end)
