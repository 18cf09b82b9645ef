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

-- ---- tokenizer (lunar/tokenizer.h) ----
ffi.cdef [[
typedef struct lunar_tokenizer lunar_tokenizer_t;
typedef struct lunar_detok lunar_detok_t;
void lunar_free(void *p);
enum {
    LUNAR_TOK_ADD_SPECIAL = 1,
    LUNAR_TOK_SPLIT_SPECIAL = 2,
};
int lunar_tokenizer_load(const char *dir, lunar_tokenizer_t **out);
void lunar_tokenizer_free(lunar_tokenizer_t *tok);
int lunar_tokenizer_encode(const lunar_tokenizer_t *tok, const char *text, size_t len, int flags,
                           int32_t **ids, size_t *n);
int lunar_tokenizer_encode_batch(const lunar_tokenizer_t *tok, size_t count, const char *const *texts,
                                 const size_t *lens, int flags, int nthreads, int32_t **ids, size_t *n);
int lunar_tokenizer_decode(const lunar_tokenizer_t *tok, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *len);
size_t lunar_tokenizer_vocab_size(const lunar_tokenizer_t *tok);
const char *lunar_tokenizer_id_to_token(const lunar_tokenizer_t *tok, int32_t id, size_t *len);
int32_t lunar_tokenizer_token_to_id(const lunar_tokenizer_t *tok, const char *token, size_t len);
int lunar_tokenizer_is_special(const lunar_tokenizer_t *tok, int32_t id);
int32_t lunar_tokenizer_bos_id(const lunar_tokenizer_t *tok);
int32_t lunar_tokenizer_eos_id(const lunar_tokenizer_t *tok);
int32_t lunar_tokenizer_pad_id(const lunar_tokenizer_t *tok);
int32_t lunar_tokenizer_unk_id(const lunar_tokenizer_t *tok);
size_t lunar_tokenizer_eos_ids(const lunar_tokenizer_t *tok, const int32_t **ids);
int lunar_tokenizer_add_bos(const lunar_tokenizer_t *tok);
const char *lunar_tokenizer_chat_template(const lunar_tokenizer_t *tok, const char *name);
const char *lunar_tokenizer_chat_template_name(const lunar_tokenizer_t *tok, size_t i);
const char *lunar_tokenizer_describe(const lunar_tokenizer_t *tok);
int lunar_detok_create(const lunar_tokenizer_t *tok, int skip_special, lunar_detok_t **out);
int lunar_detok_push(lunar_detok_t *d, int32_t id, const char **text, size_t *len);
int lunar_detok_flush(lunar_detok_t *d, const char **text, size_t *len);
void lunar_detok_free(lunar_detok_t *d);
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
