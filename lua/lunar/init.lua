-- lunar — the Lua library a script gets from `require "lunar"`.
--
-- The offline API (LLM, SamplingParams, RequestOutput) and the tools behind the CLI, loaded
-- lazily so `require "lunar"` stays cheap: lunar.tokenizer, lunar.template, lunar.model ...
local lffi = require "lunar.ffi"

local M = {}
M.version = require("ffi").string(lffi.C.lunar_version())

setmetatable(M, {
  __index = function(t, k)
    -- lunar.X is module lunar.X when it exists; lunar.LLM etc. come from lunar.llm.
    if type(k) ~= "string" then return nil end
    local function try(name)
      local ok, mod = pcall(require, name)
      if ok then return mod end
      if not tostring(mod):find("module '" .. name .. "' not found", 1, true) then error(mod, 2) end
    end
    local mod = try("lunar." .. k)
    if mod ~= nil then rawset(t, k, mod) return mod end
    local llm = try("lunar.llm")
    if type(llm) == "table" and llm[k] ~= nil then return llm[k] end
    return nil
  end,
})

return M
