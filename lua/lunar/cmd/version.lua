-- `lunar version`: what this build is (version, build type, CUDA/cuBLAS/NCCL) and which GPUs
-- it sees, so a bug report carries the facts.
local lffi = require "lunar.ffi"
local util = require "lunar.util"
local ffi = lffi.ffi
local C = lffi.C

local function gather()
  local info = util.json.decode(ffi.string(C.lunar_build_info()))
  info.luajit = jit and jit.version or nil
  local drv = C.lunar_cuda_driver_version()
  info.cuda_driver = drv > 0 and string.format("%d.%d", math.floor(drv / 1000), (drv % 1000) / 10) or nil
  info.gpus = {}
  local di = ffi.new("lunar_device_info_t")
  for i = 0, C.lunar_device_count() - 1 do
    if C.lunar_device_get_info(i, di) == 0 then
      info.gpus[#info.gpus + 1] = {
        index = i, name = ffi.string(di.name), compute_capability = di.cc_major .. "." .. di.cc_minor,
        total_bytes = tonumber(di.total_bytes), free_bytes = tonumber(di.free_bytes),
      }
    end
  end
  return info
end

local function show(v) return v == nil and "none" or (v == util.json.null and "none" or tostring(v)) end

return {
  summary = "print lunar's version, build flags, CUDA/cuBLAS/NCCL versions and the GPUs it sees",
  usage = "lunar version [--json]",
  flags = { { name = "--json", type = "bool", default = false, help = "print one JSON object" } },
  gather = gather,
  run = function(o)
    local info = gather()
    if o.json then
      local gpus = info.gpus
      info.gpus = nil
      local s = util.json.encode(info)
      -- cjson writes an empty table as {}; gpus is a list, so spell the empty one out
      local list = #gpus == 0 and "[]" or util.json.encode(gpus)
      print(s:sub(1, -2) .. ',"gpus":' .. list .. "}")
      return 0
    end
    print("lunar " .. info.version .. " (" .. info.build_type .. ", " .. info.compiler .. ", " .. show(info.luajit) .. ")")
    print("  cuda backend:  " .. (info.cuda and "built" or "not built"))
    print("  cuda runtime:  " .. show(info.cuda_runtime))
    print("  cuda driver:   " .. show(info.cuda_driver))
    print("  cublas:        " .. show(info.cublas))
    print("  nccl:          " .. show(info.nccl))
    if #info.gpus == 0 then
      print("  gpus:          none visible (the CPU backend will be used)")
    else
      for _, g in ipairs(info.gpus) do
        print(string.format("  gpu %d:         %s (sm %s, %s total, %s free)", g.index, g.name,
          g.compute_capability, util.bytes(g.total_bytes), util.bytes(g.free_bytes)))
      end
    end
    return 0
  end,
}
