-- LuaJIT's rule for FFI callbacks: a C function that may call back into Lua must not be called
-- from JIT-compiled code (luajit.org/ext_ffi_semantics.html, "Callbacks"). lunar keeps the JIT on
-- everywhere (chat templates render 2x faster with it, bench/template.lua) and turns it off only
-- for the Lua functions that make such calls. This spec holds every call site of those C
-- functions to that: the enclosing function must be named in a jit.off(...) of the same file.
local src = os.getenv("LUNAR_SRC") or "."

-- C functions that can run a Lua callback before they return: h2o finishing a request calls
-- on_closed; the event loop calls every handler; the engine step calls logits processors.
local CALLS_BACK = {
  "lunar_http_respond", "lunar_http_stream_start", "lunar_http_stream_write", "lunar_http_stream_end",
  "lunar_http_run", "lunar_http_free", "lunar_engine_step",
}

local function lua_files()
  local files = {}
  local p = assert(io.popen("find '" .. src .. "/lua' -name '*.lua' | sort"))
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  return files
end

local function read(path) return assert(require("lunar.util").read_file(path)) end

-- "Server.run" for `function Server:run(`, "respond" for `local function respond(`
local function enclosing(lines, i)
  for j = i, 1, -1 do
    local name = lines[j]:match("^%s*local%s+function%s+([%w_]+)%s*%(") or lines[j]:match("^%s*function%s+([%w_.:]+)%s*%(")
    if name then return (name:gsub(":", ".")) end
  end
end

describe("C functions that call back into Lua", function()
  it("are called only from functions the JIT leaves alone", function()
    local sites, bad = 0, {}
    for _, path in ipairs(lua_files()) do
      local text = read(path)
      local lines = {}
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
      for i, line in ipairs(lines) do
        for _, fn in ipairs(CALLS_BACK) do
          if line:find("C%." .. fn .. "%(") and not line:match("^%s*%-%-") then
            sites = sites + 1
            local name = enclosing(lines, i)
            local off = name and text:find("jit.off(" .. name .. ")", 1, true)
            if not off then
              bad[#bad + 1] = string.format("%s:%d calls %s from %s, which is not jit.off'd", path, i, fn,
                name or "the main chunk")
            end
          end
        end
      end
    end
    assert.are.same({}, bad)
    assert.is_true(sites >= #CALLS_BACK, "found only " .. sites .. " call sites: is LUNAR_SRC right?")
  end)

  it("leave the JIT on for the rest of lunar serve", function()
    local serve = read(src .. "/lua/lunar/cmd/serve.lua")
    assert.is_nil(serve:find("jit.off()", 1, true), "serve turns the whole JIT off again")
  end)
end)
