-- lunar.ffi — the one LuaJIT FFI binding of liblunar (runtime/include/lunar.h).
--
-- Declarations mirror the C headers verbatim; each module of the runtime adds its section
-- below. Lua code never calls C directly elsewhere: it goes through the wrappers in the
-- lunar.* modules, which turn status codes into `nil, err` and attach ffi.gc finalizers.
local ffi = require "ffi"

ffi.cdef [[
/* ---- core (lunar.h) ---- */
const char *lunar_errmsg(void);
const char *lunar_strerror(int status);
void lunar_log_set_level(int level);
int lunar_log_get_level(void);
void lunar_log(int level, const char *where, const char *fmt, ...);
const char *lunar_version(void);
const char *lunar_build_info(void);
typedef struct lunar_device_info {
    char name[256];
    int index;
    int cc_major, cc_minor;
    uint64_t total_bytes;
    uint64_t free_bytes;
    int multiprocessors;
} lunar_device_info_t;
int lunar_device_count(void);
int lunar_device_get_info(int index, lunar_device_info_t *out);
int lunar_cuda_driver_version(void);
]]

local M = {}

-- The library: the copy the host program loaded (LUNAR_HOST.lib), else $LUNAR_LIB (tests
-- under plain luajit), else the system search path.
local function libpath()
  local host = rawget(_G, "LUNAR_HOST")
  if host and host.lib and host.lib ~= "" then return host.lib end
  return os.getenv("LUNAR_LIB") or "lunar"
end

local ok, lib = pcall(ffi.load, libpath(), true)
if not ok then
  error("lunar: cannot load liblunar (" .. tostring(lib) .. "); set LUNAR_LIB to its path", 0)
end
M.C = lib
M.ffi = ffi

-- Turns a C status into Lua's convention: true, or nil plus "LUNAR_EX: message".
function M.check(rc)
  if rc == 0 then return true end
  local msg = ffi.string(lib.lunar_errmsg())
  if msg == "" then msg = ffi.string(lib.lunar_strerror(rc)) end
  return nil, msg
end

function M.errmsg() return ffi.string(lib.lunar_errmsg()) end

return M
