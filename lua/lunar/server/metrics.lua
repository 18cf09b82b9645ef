-- lunar.server.metrics — GET /metrics in Prometheus' text format with vLLM's metric names,
-- so a Grafana dashboard made for vLLM reads lunar unchanged. Every figure comes from one
-- engine stats snapshot (lunar_engine_get_stats).
local M = {}

local function esc(s) return (tostring(s):gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n")) end

local function num(v)
  v = tonumber(v)
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d.0", v) end
  return string.format("%.17g", v)
end

function M.render(st, model_name, extra)
  local out = {}
  local labels = '{model_name="' .. esc(model_name) .. '"}'
  local function metric(name, kind, help, value, lbl)
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " " .. kind
    out[#out + 1] = name .. (lbl or labels) .. " " .. num(value)
  end
  local function histogram(name, help, h)
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " histogram"
    for i = 0, h.num_buckets - 1 do
      out[#out + 1] = string.format('%s_bucket{le="%s",model_name="%s"} %s', name, num(h.bounds[i]),
        esc(model_name), num(h.counts[i]))
    end
    out[#out + 1] = string.format('%s_bucket{le="+Inf",model_name="%s"} %s', name, esc(model_name), num(h.count))
    out[#out + 1] = name .. "_count" .. labels .. " " .. num(h.count)
    out[#out + 1] = name .. "_sum" .. labels .. " " .. num(h.sum)
  end
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", st.num_running)
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", st.num_waiting)
  metric("vllm:gpu_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", st.kv_cache_usage)
  metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", st.kv_cache_usage)
  metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.", st.num_preemptions_total)
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", st.prompt_tokens_total)
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", st.generation_tokens_total)
  metric("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of queried tokens.",
    st.prefix_cache_queries)
  metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.",
    st.prefix_cache_hits)
  local q = tonumber(st.prefix_cache_queries)
  metric("vllm:gpu_prefix_cache_hit_rate", "gauge", "Prefix cache hit rate (hits / queries, 0 before any query).",
    q > 0 and tonumber(st.prefix_cache_hits) / q or 0)
  out[#out + 1] = "# HELP vllm:request_success_total Count of successfully processed requests."
  out[#out + 1] = "# TYPE vllm:request_success_total counter"
  for _, r in ipairs({ { "stop", st.request_success_stop }, { "length", st.request_success_length },
    { "abort", st.request_success_abort } }) do
    out[#out + 1] = string.format('vllm:request_success_total{finished_reason="%s",model_name="%s"} %s', r[1],
      esc(model_name), num(r[2]))
  end
  histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", st.ttft)
  histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", st.tpot)
  histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", st.e2e)
  histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", st.queue)
  for _, x in ipairs(extra or {}) do metric(x[1], x[2], x[3], x[4]) end
  return table.concat(out, "\n") .. "\n"
end

return M
