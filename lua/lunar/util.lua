-- lunar.util — small helpers shared by the Lua layer (files, JSON, string distance).
local M = {}

local cjson_ok, cjson = pcall(require, "cjson.safe")
M.json = cjson_ok and cjson or nil

function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(data)
  f:close()
  return true
end

function M.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- the first line a shell command prints ("" when it fails): for benchmark headers
function M.capture(cmd)
  local f = io.popen(cmd .. " 2>/dev/null")
  local s = f and f:read("*l") or ""
  if f then f:close() end
  return s or ""
end

function M.read_json(path)
  local s, err = M.read_file(path)
  if not s then return nil, err end
  local v, jerr = M.json.decode(s)
  if v == nil then return nil, path .. ": invalid JSON: " .. tostring(jerr) end
  return v
end

-- Levenshtein distance, for "did you mean" suggestions.
function M.distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = (ca == b:byte(j)) and 0 or 1
      local v = prev[j] + 1
      if cur[j - 1] + 1 < v then v = cur[j - 1] + 1 end
      if prev[j - 1] + cost < v then v = prev[j - 1] + cost end
      cur[j] = v
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

-- The candidate closest to `word`, or nil when none is close enough to be a likely typo.
function M.closest(word, candidates)
  local best, bestd
  for _, c in ipairs(candidates) do
    local d = M.distance(word, c)
    if not bestd or d < bestd then best, bestd = c, d end
  end
  if best and bestd <= math.max(2, math.floor(#word / 3)) then return best end
  -- a prefix match is a good suggestion too ("--max-len" -> "--max-model-len")
  for _, c in ipairs(candidates) do
    if c:find(word, 1, true) then return c end
  end
  return nil
end

-- Human-readable bytes: 1536 -> "1.50 KiB".
function M.bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  if i == 1 then return string.format("%d B", n) end
  return string.format("%.2f %s", n, units[i])
end

return M
