-- bench/template.lua — chat-template rendering speed: Qwen3's template over a 20-turn
-- conversation with two tool schemas, tool calls, tool results and reasoning, rendered by
-- lunar.jinja; beside it the peer, Python Jinja2 configured as transformers configures it
-- (measured here when python3 with jinja2 is installed), on the same input. Rows: the render
-- with LuaJIT's JIT on (as `lunar serve` runs it) and off (as it ran before the server's
-- callback-capable FFI calls were confined to a few jit.off'd functions), and the whole of a chat
-- request's template work (template.apply: vLLM's message preprocessing + render).
--
--   build/lunar run bench/template.lua [--template FILE] [--seconds S] [--turns N]
--
-- Every chat request renders its template once, so this is per-request CPU the server spends
-- before tokenizing; the figure to beat is Jinja2's, which vLLM pays in Python.
local jinja = require "lunar.jinja"
local json = require "lunar.jinja.json"
local V = jinja.value

local opts = { seconds = 3, turns = 20 }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a:match("^%-%-") then opts[a:sub(3):gsub("-", "_")] = arg[i + 1] i = i + 1 end
  i = i + 1
end
opts.seconds, opts.turns = tonumber(opts.seconds), tonumber(opts.turns)
local src_dir = (os.getenv("LUNAR_SRC") or ".")
local shared = os.getenv("LUNAR_SHARED") or (src_dir .. "/../shared")
if not opts.template then
  opts.template = shared .. "/chat-templates/qwen3.jinja"
  if not io.open(opts.template) then opts.template = src_dir .. "/templates/qwen3.jinja" end
end

local sh = require("lunar.util").capture

-- the conversation, built as JSON text so the Python peer reads the very same input
local tools = [==[[
 {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
 {"type": "function", "function": {"name": "search", "description": "Search the web",
  "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
  "required": ["query"]}}}]]==]
local msgs = { '{"role": "system", "content": "You are a helpful assistant. 你好 🙂"}' }
for t = 1, opts.turns do
  msgs[#msgs + 1] = string.format('{"role": "user", "content": "Question %d: what about the weather in city %d, and a long-ish follow-up sentence to make the turn realistic?"}', t, t)
  if t % 4 == 0 then
    msgs[#msgs + 1] = string.format('{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "City %d", "unit": "celsius"}}}]}', t)
    msgs[#msgs + 1] = string.format('{"role": "tool", "content": "{\\"temp\\": %d, \\"sky\\": \\"clear\\"}"}', 10 + t)
  end
  msgs[#msgs + 1] = string.format('{"role": "assistant", "content": "<think>\\nThe user asks about city %d.\\n</think>\\n\\nIt is sunny in city %d, about %d degrees, with a light breeze from the west."}', t, t, 10 + t)
end
msgs[#msgs + 1] = '{"role": "user", "content": "Thanks, and tomorrow?"}'
local messages_json = "[" .. table.concat(msgs, ",\n") .. "]"

local f = assert(io.open(opts.template, "rb"))
local source = f:read("*a")
f:close()
local tpl = assert(jinja.compile(source, { name = "qwen3" }))
local vars = { messages = assert(json.decode(messages_json)), tools = assert(json.decode(tools)),
  add_generation_prompt = true, eos_token = "<|im_end|>" }
local out = assert(tpl:render(vars))

print(string.format("# bench/template: %s, %d messages (%d turns, tools, tool calls, reasoning), %d bytes out; machine %s (%s); commit %s",
  opts.template:match("[^/]+$"), #vars.messages, opts.turns, #out, sh("uname -m"),
  sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"), sh("git rev-parse --short HEAD")))
print(string.format("%-34s %10s %12s %12s", "engine", "renders", "CPU s", "renders/s"))

-- ours: CPU seconds (os.clock), as the peer's time.process_time
local function measure(what, fn)
  local n, t0 = 0, os.clock()
  repeat
    for _ = 1, 20 do assert(fn()) end
    n = n + 20
  until os.clock() - t0 >= opts.seconds
  local dt = os.clock() - t0
  print(string.format("%-34s %10d %12.2f %12.0f", what, n, dt, n / dt))
  return n / dt
end
local rate = measure("lunar.jinja render (LuaJIT, JIT on)", function() return tpl:render(vars) end)
local template = require "lunar.template"
local llm = { opts = { chat_template = source }, _special_tokens = { eos_token = "<|im_end|>" } }
local aopts = { tools = vars.tools, add_generation_prompt = true }
assert(template.apply(llm, vars.messages, aopts) == out, "template.apply renders what render does")
measure("template.apply (JIT on, as serve)", function() return template.apply(llm, vars.messages, aopts) end)
jit.off()
jit.flush()
measure("lunar.jinja render (JIT off)", function() return tpl:render(vars) end)
measure("template.apply (JIT off)", function() return template.apply(llm, vars.messages, aopts) end)
jit.on()

-- peer: Python Jinja2 as transformers' _compile_jinja_template builds it
local tmp = os.tmpname()
local tf = assert(io.open(tmp, "wb"))
tf:write(string.format('{"source": %s, "messages": %s, "tools": %s}', V.json_str(source), messages_json, tools))
tf:close()
local py = [[
import json, sys, time
import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
d = json.load(open(sys.argv[1]))
def raise_exception(m): raise jinja2.exceptions.TemplateError(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
t = env.from_string(d["source"])
args = dict(messages=d["messages"], tools=d["tools"], documents=None, add_generation_prompt=True, eos_token="<|im_end|>")
out = t.render(**args)
n, t0 = 0, time.process_time()
while time.process_time() - t0 < float(sys.argv[2]):
    for _ in range(20): t.render(**args)
    n += 20
dt = time.process_time() - t0
sys.stdout.write("%d %.4f %d %s\n" % (n, dt, len(out.encode()), jinja2.__version__))
sys.stdout.write(out)
]]
local pf = assert(io.open(tmp .. ".py", "wb"))
pf:write(py)
pf:close()
local p = io.popen(string.format("python3 '%s' '%s' %s 2>/dev/null", tmp .. ".py", tmp, opts.seconds))
local head = p and p:read("*l")
local pyout = p and p:read("*a")
if p then p:close() end
os.remove(tmp)
os.remove(tmp .. ".py")
if head and head:match("^%d+") then
  local pn, pdt, _, ver = head:match("^(%d+) ([%d.]+) (%d+) (%S+)")
  pn, pdt = tonumber(pn), tonumber(pdt)
  print(string.format("%-34s %10d %12.2f %12.0f", "Jinja2 " .. ver .. " render (CPython)", pn, pdt, pn / pdt))
  print(string.format("# outputs identical: %s; render speed-up over Jinja2 (JIT on): %.1fx", tostring(pyout == out),
    rate / (pn / pdt)))
else
  print("# peer: python3 with jinja2 not available here")
end
