-- `lunar serve MODEL`: the OpenAI-compatible HTTP/1.1 + HTTP/2 server, with vLLM's flags:
--   lunar serve ./baichuan-7B --port 8018 --served-model-name baichuan-7b \
--       --chat-template template_baichuan.jinja --trust-remote-code
local args = require "lunar.args"
local util = require "lunar.util"

local flags = args.join(args.engine_flags, {
  { name = "--host", type = "string", default = "0.0.0.0", help = "address to listen on" },
  { name = "--port", type = "int", default = 8000, help = "TCP port" },
  { name = "--api-key", type = "string", help = "require 'Authorization: Bearer KEY' on /v1/* (or LUNAR_API_KEY)" },
  { name = "--ssl-keyfile", type = "string", help = "PEM private key: serve HTTPS (HTTP/2 by ALPN)" },
  { name = "--ssl-certfile", type = "string", help = "PEM certificate chain" },
  { name = "--max-request-body", type = "size", default = 32 * 1024 * 1024, help = "largest request body (413 past it)" },
  { name = "--handler", type = "list", help = "Lua script adding or overriding routes (repeatable)" },
  { name = "--log-level", type = "choice", choices = { "debug", "info", "warning", "error", "critical", "trace" },
    default = "info", help = "log verbosity" },
  { name = "--uvicorn-log-level", type = "choice", choices = { "debug", "info", "warning", "error", "critical", "trace" },
    help = "vLLM's spelling of --log-level" },
  { name = "--num-threads", type = "int", help = "CPU backend threads (default: all cores)" },
  { name = "--shutdown-timeout", type = "float", default = 30, help = "seconds to let in-flight requests finish on SIGTERM" },
  { name = "--disable-log-requests", type = "bool", default = false, help = "accepted for vLLM compatibility" },
})

local function fail(msg) error("lunar: " .. msg, 0) end

return {
  summary = "serve a model over an OpenAI-compatible HTTP/1.1 + HTTP/2 API",
  usage = "lunar serve MODEL [--host H] [--port P] [--served-model-name NAME...] [--api-key KEY] [engine flags]",
  flags = flags,
  epilog = "Routes: GET /health /version /v1/models /metrics; POST /v1/completions /v1/chat/completions\n"
    .. "/tokenize /detokenize. Stop with SIGINT/SIGTERM: in-flight requests finish first.",
  run = function(o, pos)
    local lunar = require "lunar"
    local ffi = require("lunar.ffi")
    local model = pos[1] or fail("serve needs a MODEL folder: lunar serve MODEL [flags]")
    if pos[2] then fail("unexpected argument '" .. pos[2] .. "'") end
    local level = o.uvicorn_log_level or o.log_level
    local lv = ({ trace = 0, debug = 0, info = 1, warning = 2, error = 3, critical = 4 })[level]
    ffi.C.lunar_log_set_level(lv)
    local llm, err = lunar.LLM({
      model = model, tokenizer = o.tokenizer, dtype = o.dtype, load_format = o.load_format,
      seed = o.seed, device = o.device, max_model_len = o.max_model_len, block_size = o.block_size,
      max_num_seqs = o.max_num_seqs, max_num_batched_tokens = o.max_num_batched_tokens,
      enable_prefix_caching = o.enable_prefix_caching, enable_chunked_prefill = o.enable_chunked_prefill,
      kv_cache_memory_bytes = o.kv_cache_memory_bytes, num_threads = o.num_threads,
      gpu_memory_utilization = o.gpu_memory_utilization, enforce_eager = o.enforce_eager,
      tensor_parallel_size = o.tensor_parallel_size, pipeline_parallel_size = o.pipeline_parallel_size,
      data_parallel_size = o.data_parallel_size, chat_template = o.chat_template,
      chat_template_content_format = o.chat_template_content_format, stats_interval = 5,
    })
    if not llm then fail(err) end
    -- the chat template is resolved and compiled now: a bad --chat-template stops the start; a
    -- model without one still serves completions, and chat requests get a 400 saying why (vLLM)
    local tpl, terr = require("lunar.template").for_llm(llm, "default")
    if not tpl and o.chat_template then llm:close() fail("--chat-template: " .. tostring(terr)) end
    if not tpl then io.stderr:write("WARNING lunar serve: " .. tostring(terr) .. "\n") end
    local names = o.served_model_name or { model }
    local server = require "lunar.server"
    local srv, serr = server.new(llm, {
      host = o.host, port = o.port, api_key = o.api_key or os.getenv("LUNAR_API_KEY"), names = names,
      ssl_certfile = o.ssl_certfile, ssl_keyfile = o.ssl_keyfile, max_request_body = o.max_request_body,
      shutdown_timeout = o.shutdown_timeout,
    })
    if not srv then fail(serr) end
    for _, file in ipairs(o.handler or {}) do
      local chunk, lerr = loadfile(file)
      if not chunk then fail("--handler " .. lerr) end
      local install = chunk()
      if type(install) ~= "function" then fail("--handler " .. file .. " must return function(server, lunar)") end
      install(srv, lunar)
    end
    io.stderr:write(string.format("INFO lunar serve: %s as %s on %s://%s:%d (HTTP/1.1 and HTTP/2)\n", model,
      table.concat(names, ", "), o.ssl_certfile and "https" or "http", o.host, srv.port))
    io.stderr:flush()
    local ok, rerr = srv:run()
    srv:close()
    llm:close()
    if not ok then fail(rerr) end
    io.stderr:write("INFO lunar serve: stopped\n")
    return 0
  end,
}
