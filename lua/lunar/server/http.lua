-- lunar.server.http — the Lua side of lunar/http.h: a request object over the C handle,
-- JSON responses, OpenAI-shaped errors and Server-Sent Events.
--
-- Everything here runs on the event-loop thread. A request's C handle dies when its
-- on_closed callback has run; Request.closed guards every use after that.
local lffi = require "lunar.ffi"
local util = require "lunar.util"
local ffi = lffi.ffi
local C = lffi.C
local json = util.json

local M = {}
local Request = {}

-- lua-cjson writes every empty table as {}; JSON lists that may be empty use this marker.
M.EMPTY_ARRAY = setmetatable({}, { __tostring = function() return "[]" end })
local MARK = "__lunar_empty_array__"
local function mark_empty(v)
  if v == M.EMPTY_ARRAY then return MARK end
  if type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = mark_empty(x) end
    return out
  end
  return v
end
function M.encode(v)
  local s, err = json.encode(mark_empty(v))
  if not s then return nil, err end
  return (s:gsub('"' .. MARK .. '"', "[]"))
end
Request.__index = Request
M.Request = Request

local len = ffi.new("size_t[1]")
local function cstr(p) if p == nil then return nil end return ffi.string(p, len[0]) end

function M.wrap(handle)
  local r = setmetatable({ handle = handle, id = tonumber(C.lunar_http_req_id(handle)) }, Request)
  r.method = cstr(C.lunar_http_req_method(handle, len))
  r.path = cstr(C.lunar_http_req_path(handle, len))
  r.query = cstr(C.lunar_http_req_query(handle, len))
  r.protocol = ffi.string(C.lunar_http_req_protocol(handle))
  r.peer = ffi.string(C.lunar_http_req_peer(handle))
  r.started = require("lunar.progress").now()
  return r
end

-- h2o may finish a request inside these calls and run on_closed, a callback into Lua, before they
-- return. LuaJIT allows a callback only from interpreted code, so the four calls live in these
-- wrappers, which are never compiled; everything around them is (see tests/lua/jit_spec.lua).
local function respond(h, status, ctype, body, headers)
  return C.lunar_http_respond(h, status, ctype, body, #body, headers)
end
local function stream_start(h, headers) return C.lunar_http_stream_start(h, 200, "text/event-stream", headers) end
local function stream_write(h, s) return C.lunar_http_stream_write(h, s, #s) end
local function stream_end(h) return C.lunar_http_stream_end(h) end
jit.off(respond)
jit.off(stream_start)
jit.off(stream_write)
jit.off(stream_end)

function Request:header(name) return cstr(C.lunar_http_req_header(self.handle, name, len)) end
function Request:body() return cstr(C.lunar_http_req_body(self.handle, len)) end

-- The body as JSON: value, or nil and an OpenAI error table.
function Request:json()
  local ct = self:header("content-type") or ""
  if not ct:lower():find("application/json", 1, true) then
    return nil, M.error(415, "Content-Type must be application/json, got '" .. ct .. "'", "InvalidRequestError")
  end
  -- every string of the body must be UTF-8, as Python's json.loads of the bytes demands under
  -- vLLM; otherwise invalid bytes in a field no tokenizer reads (a model name, a role) reach
  -- error messages and responses, which then are not valid JSON text
  if C.lunar_http_req_body_utf8(self.handle, len) ~= 0 then
    return nil, M.error(400, "the request body is not valid UTF-8 (byte " .. tonumber(len[0]) .. ")", "BadRequestError")
  end
  local body = self:body()
  local v, err = json.decode(body)
  if v == nil or err then
    return nil, M.error(400, "the request body is not valid JSON: " .. tostring(err), "BadRequestError")
  end
  if type(v) ~= "table" or (#v > 0) then
    return nil, M.error(400, "the request body must be a JSON object", "BadRequestError")
  end
  return v
end

-- An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}.
function M.error(status, message, etype, param)
  return { status = status, body = { error = { message = message, type = etype or "BadRequestError",
    param = param or json.null, code = status } } }
end

local EXTRA = "Cache-Control: no-store\r\n"

function Request:respond(status, body, content_type, headers)
  if self.closed then return nil, "client gone" end
  local ctype = content_type or "application/json"
  if type(body) == "table" then
    local s, err = M.encode(body)
    if not s then status, s = 500, '{"error":{"message":"response encoding failed: ' .. tostring(err) .. '"}}' end
    body = s
  end
  body = body or ""
  self.status = status
  self.answered = true
  return lffi.check(respond(self.handle, status, ctype, body, headers or EXTRA))
end

function Request:fail(e) return self:respond(e.status, e.body) end

function Request:sse_start()
  self.status = 200
  self.answered = true
  self.streaming = true
  return lffi.check(stream_start(self.handle, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"))
end

-- One SSE event: "data: <json>\n\n".
function Request:sse(obj)
  if self.closed then return nil, "client gone" end
  local s = type(obj) == "string" and obj or M.encode(obj)
  local chunk = "data: " .. s .. "\n\n"
  return lffi.check(stream_write(self.handle, chunk))
end

function Request:sse_end()
  if self.closed then return nil, "client gone" end
  stream_write(self.handle, "data: [DONE]\n\n")
  return lffi.check(stream_end(self.handle))
end

return M
