-- examples/handler.lua — a request-handler script for `lunar serve --handler`: adds a route
-- and a per-request sampling policy, without recompiling or restarting anything but lunar.
--
--   build/lunar serve ../shared/models/TinyStories-656K --handler examples/handler.lua
--   curl localhost:8000/v1/hello
--   curl localhost:8000/v1/completions -H 'content-type: application/json' \
--        -d '{"prompt": "Once upon a time", "user": "deterministic", "temperature": 1.5}'
--
-- The script returns function(server, lunar). server:route(METHOD, PATH, fn) adds or
-- replaces a route; fn(req, server) answers with req:respond(status, table_or_string).
-- server:sampling(fn) sees every completion/chat request's JSON body and the sampling fields
-- lunar derived from it (vLLM names), and may change them before validation.
return function(server, lunar)
  server:route("GET", "/v1/hello", function(req)
    return req:respond(200, { hello = "world", model = server.names[1], lunar = lunar.version })
  end)

  server:sampling(function(body, fields)
    -- a tenant that wants reproducible output gets greedy decoding whatever it asked for
    if body.user == "deterministic" then fields.temperature = 0 end
    -- and nobody gets more than 256 new tokens per request
    if fields.max_tokens and fields.max_tokens > 256 then fields.max_tokens = 256 end
  end)
end
