-- lunar.progress — the batch progress bar on stderr, in the shape vLLM users know:
--   Processed prompts: 100%|██████████| 32/32 [00:04<00:00, 7.9it/s, est. speed input: 812.3 toks/s, output: 251.0 toks/s]
-- Drawn only when stderr is a terminal (or when forced), redrawn at most 10 times a second.
local ffi = require "ffi"
pcall(ffi.cdef, "int isatty(int fd);")

local M = {}
M.__index = M

local function now()
  if not M._clock then
    pcall(ffi.cdef, [[
      typedef struct { long tv_sec; long tv_nsec; } lunar_timespec_t;
      int clock_gettime(int clk, lunar_timespec_t *ts);
    ]])
    M._ts = ffi.new("lunar_timespec_t")
    M._clock = true
  end
  ffi.C.clock_gettime(1, M._ts) -- CLOCK_MONOTONIC
  return tonumber(M._ts.tv_sec) + tonumber(M._ts.tv_nsec) * 1e-9
end
M.now = now

local function hms(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s / 3600, (s % 3600) / 60, s % 60) end
  return string.format("%02d:%02d", math.floor(s / 60), s % 60)
end

-- new{total = N, desc = "Processed prompts", enabled = bool|nil, out = file}
function M.new(o)
  local self = setmetatable({}, M)
  self.total = o.total or 0
  self.desc = o.desc or "Processed prompts"
  self.out = o.out or io.stderr
  if o.enabled == nil then self.enabled = ffi.C.isatty(2) == 1 else self.enabled = o.enabled end
  self.n, self.in_toks, self.out_toks = 0, 0, 0
  self.start = now()
  self.last_draw = 0
  if self.enabled then self:draw(true) end
  return self
end

-- The line for the current state (also used by tests, which read it without a terminal).
function M:line()
  local el = now() - self.start
  local frac = self.total > 0 and self.n / self.total or 1
  local width = 10
  local full = math.floor(frac * width)
  local bar = string.rep("█", full) .. string.rep(" ", width - full)
  local rate = el > 0 and self.n / el or 0
  local eta = rate > 0 and (self.total - self.n) / rate or 0
  return string.format("%s: %3d%%|%s| %d/%d [%s<%s, %.2fit/s, est. speed input: %.2f toks/s, output: %.2f toks/s]",
    self.desc, math.floor(frac * 100), bar, self.n, self.total, hms(el), hms(eta), rate,
    el > 0 and self.in_toks / el or 0, el > 0 and self.out_toks / el or 0)
end

function M:draw(force)
  if not self.enabled then return end
  local t = now()
  if not force and t - self.last_draw < 0.1 then return end
  self.last_draw = t
  self.out:write("\r", self:line())
  self.out:flush()
end

-- One prompt finished with `in_toks` prompt tokens and `out_toks` generated tokens.
function M:update(done, in_toks, out_toks)
  self.n = self.n + (done or 0)
  self.in_toks = self.in_toks + (in_toks or 0)
  self.out_toks = self.out_toks + (out_toks or 0)
  self:draw(self.n >= self.total)
end

function M:close()
  if self.enabled then
    self:draw(true)
    self.out:write("\n")
    self.out:flush()
  end
end

return M
