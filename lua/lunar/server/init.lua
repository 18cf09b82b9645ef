-- lunar.server — `lunar serve`: the OpenAI-compatible server around one LLM.
--
-- The event loop (C, lunar/http.h) calls into this module on its thread for every request,
-- every closed request and every engine wake-up; the engine runs on its own thread and only
-- ever talks to the loop through lunar_http_wake. Routes are a table anyone can extend from a
-- --handler script:
--
--   return function(server, lunar)
--     server:route("GET", "/hello", function(req) return req:respond(200, { hello = "world" }) end)
--     server:sampling(function(body, fields) if body.user == "batch" then fields.temperature = 0 end end)
--   end
local lffi = require "lunar.ffi"
local util = require "lunar.util"
local http = require "lunar.server.http"
local openai = require "lunar.server.openai"
local metrics = require "lunar.server.metrics"
local ffi = lffi.ffi
local C = lffi.C
local json = util.json

local M = {}
local Server = {}
Server.__index = Server

function Server:route(method, path, fn) self.routes[method:upper() .. " " .. path] = fn end
function Server:sampling(fn) self.sampling_policy = fn end

function Server:warn_unknown(req, fields)
  table.sort(fields)
  C.lunar_log(2, "server", "%s", string.format("request %d: ignored unknown fields: %s", req.id, table.concat(fields, ", ")))
end

function Server:job_done(job)
  self.jobs[job.req.id] = nil
  for _, e in ipairs(job.engine_ids) do self.by_engine[e] = nil end
end

local function authorized(self, req)
  if not self.api_key or not req.path:find("^/v1/") then return true end
  local h = req:header("authorization") or ""
  return h == "Bearer " .. self.api_key
end

-- A request path as an error message quotes it: bytes outside printable ASCII percent-encoded
-- (a decoded path may hold any bytes; the JSON answer must stay valid UTF-8) and cut at 200
-- characters (a 70 KB path is not echoed back).
local function shown_path(p)
  local s = p:gsub("[^\33-\126]", function(c) return string.format("%%%02X", c:byte()) end)
  return #s > 200 and s:sub(1, 200) .. "..." or s
end

function Server:on_request(handle)
  local req = http.wrap(handle)
  self.reqs[req.id] = req
  if not authorized(self, req) then
    return req:fail(http.error(401, "Unauthorized: a valid API key is required (Authorization: Bearer KEY)",
      "AuthenticationError"))
  end
  local fn = self.routes[req.method .. " " .. req.path]
  if not fn then
    local any = false
    for k in pairs(self.routes) do if k:match("^%S+ (.*)$") == req.path then any = true end end
    local path = shown_path(req.path)
    if any then return req:fail(http.error(405, "method " .. req.method .. " is not allowed on " .. path, "MethodNotAllowed")) end
    return req:fail(http.error(404, "no route " .. req.method .. " " .. path, "NotFoundError"))
  end
  local ok, err = xpcall(fn, debug.traceback, req, self)
  if not ok then
    C.lunar_log(3, "server", "%s", "handler error: " .. tostring(err))
    if not req.answered and not req.closed then
      req:fail(http.error(500, "internal error: " .. tostring(err):match("^[^\n]*"), "InternalServerError"))
    end
  end
end

function Server:on_closed(handle, gone)
  local id = tonumber(C.lunar_http_req_id(handle))
  local req = self.reqs[id]
  self.reqs[id] = nil
  if not req then return end
  req.closed = true
  local job = self.jobs[id]
  if job and not job.done then
    -- the client left: stop its sequences now so their KV blocks are freed at once
    for _, e in ipairs(job.engine_ids) do self.llm.engine:abort(e) end
    self:job_done(job)
    gone = 1
  end
  local lt = req.log_tokens
  C.lunar_log(1, "http", "%s", string.format('%s "%s %s %s" %s %.3fs%s%s', req.peer, req.method, req.path,
    req.protocol, gone ~= 0 and req.status ~= 200 and "client-closed" or tostring(req.status or 0),
    require("lunar.progress").now() - req.started,
    lt and string.format(" prompt_tokens=%d completion_tokens=%d", lt[1], lt[2]) or "",
    (gone ~= 0 and job) and " (aborted: client gone)" or ""))
  self:idle_gc()
end

-- When the server goes idle, give garbage back: a full Lua collection and malloc_trim, at
-- most once a second, so memory after a burst returns to its level before it.
pcall(ffi.cdef, "int malloc_trim(size_t pad);")
function Server:idle_gc()
  local now = require("lunar.progress").now()
  if next(self.reqs) ~= nil or (self.last_gc and now - self.last_gc < 1) then return end
  self.last_gc = now
  collectgarbage("collect")
  ffi.C.malloc_trim(0)
end

function Server:on_wake()
  for _, ev in ipairs(self.llm.engine:poll()) do
    local entry = self.by_engine[ev.request_id]
    if entry then openai.on_event(entry.job, entry.prompt_index, ev) end
  end
end

function Server:stats()
  local st = ffi.new("lunar_engine_stats_t")
  C.lunar_engine_get_stats(self.llm.engine.c, st)
  return st
end

local function default_routes(self)
  self:route("GET", "/health", function(req) return req:respond(200, "", "text/plain") end)
  self:route("GET", "/ping", function(req) return req:respond(200, "", "text/plain") end)
  self:route("GET", "/version", function(req) return req:respond(200, { version = ffi.string(C.lunar_version()) }) end)
  self:route("GET", "/v1/models", function(req, srv) return openai.models(srv, req) end)
  self:route("POST", "/v1/completions", function(req, srv) return openai.completions(srv, req) end)
  self:route("POST", "/v1/chat/completions", function(req, srv) return openai.chat(srv, req) end)
  self:route("POST", "/tokenize", function(req, srv) return openai.tokenize(srv, req) end)
  self:route("POST", "/detokenize", function(req, srv) return openai.detokenize(srv, req) end)
  self:route("GET", "/metrics", function(req, srv)
    return req:respond(200, metrics.render(srv:stats(), srv.names[1]), "text/plain; version=0.0.4")
  end)
end

-- new(llm, {host, port, api_key, names, ssl_certfile, ssl_keyfile, max_request_body}) -> server | nil, err
function M.new(llm, o)
  local self = setmetatable({ llm = llm, routes = {}, reqs = {}, jobs = {}, by_engine = {},
    names = o.names, api_key = o.api_key, started = os.time() }, Server)
  default_routes(self)
  local cfg = ffi.new("lunar_http_config_t")
  C.lunar_http_config_default(cfg)
  self.anchors = { o.host, o.ssl_certfile, o.ssl_keyfile }
  cfg.host = o.host or "0.0.0.0"
  cfg.port = o.port or 8000
  cfg.ssl_certfile = o.ssl_certfile
  cfg.ssl_keyfile = o.ssl_keyfile
  if o.max_request_body then cfg.max_request_body = o.max_request_body end
  if o.shutdown_timeout then cfg.shutdown_timeout_s = o.shutdown_timeout end
  local function guard(fn)
    return function(...)
      local ok, err = xpcall(fn, debug.traceback, ...)
      if not ok then C.lunar_log(3, "server", "%s", tostring(err)) end
    end
  end
  self.cbs = {
    ffi.cast("void (*)(void *, lunar_http_req_t *)", guard(function(_, h) self:on_request(h) end)),
    ffi.cast("void (*)(void *, lunar_http_req_t *, int)", guard(function(_, h, gone) self:on_closed(h, gone) end)),
    ffi.cast("void (*)(void *)", guard(function() self:on_wake() end)),
    ffi.cast("void (*)(void *)", guard(function() self.stopping = true end)),
  }
  cfg.on_request, cfg.on_closed, cfg.on_wake, cfg.on_shutdown = self.cbs[1], self.cbs[2], self.cbs[3], self.cbs[4]
  local out = ffi.new("lunar_http_server_t *[1]")
  local ok, err = lffi.check(C.lunar_http_create(cfg, out))
  if not ok then
    for _, cb in ipairs(self.cbs) do cb:free() end
    return nil, err
  end
  self.handle = out[0]
  self.port = C.lunar_http_port(self.handle)
  return self
end

-- Runs until SIGINT/SIGTERM and the drain that follows. The engine thread starts here.
function Server:run()
  local e = self.llm.engine.c
  C.lunar_engine_set_notify(e, ffi.cast("void (*)(void *)", C.lunar_http_wake), self.handle)
  local ok, err = lffi.check(C.lunar_engine_start(e))
  if not ok then return nil, err end
  C.lunar_http_run(self.handle) -- calls back into Lua: this function is never compiled (below)
  C.lunar_engine_stop(e)
  return true
end

function Server:close()
  if self.handle then
    C.lunar_http_free(self.handle)
    self.handle = nil
    for _, cb in ipairs(self.cbs) do cb:free() end
  end
end

-- Both call C that calls back into Lua (the event loop; on_closed for requests still open at
-- free), which LuaJIT allows only from interpreted code. The rest of the server is compiled.
jit.off(Server.run)
jit.off(Server.close)

return M
