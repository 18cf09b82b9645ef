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

-- ---- engine (lunar/engine.h) ----
ffi.cdef [[
typedef struct lunar_batch {
    int num_tokens;
    int num_seqs;
    const int32_t *token_ids;
    const int32_t *positions;
    const int64_t *slot_mapping;
    const int32_t *query_start;
    const int32_t *seq_lens;
    const int32_t *block_tables;
    int max_blocks_per_seq;
    const int32_t *logits_indices;
    int num_logits;
} lunar_batch_t;
typedef struct lunar_forward_iface {
    void *ctx;
    int vocab_size;
    int (*forward)(void *ctx, const lunar_batch_t *b, float *logits);
} lunar_forward_iface_t;
typedef struct lunar_detok_iface {
    void *ctx;
    int (*decode)(void *ctx, const int32_t *ids, int n, int skip_special_tokens, char *out,
                  size_t cap);
} lunar_detok_iface_t;
struct lunar_tokenizer;
void lunar_engine_detok_tokenizer(const struct lunar_tokenizer *tok, lunar_detok_iface_t *out);
typedef int (*lunar_logits_hook_fn)(void *arg, uint64_t request_id, int seq_index,
                                    const int32_t *prompt_ids, int num_prompt,
                                    const int32_t *output_ids, int num_output, float *logits,
                                    int vocab_size);
typedef struct lunar_sampling_params {
    int n;
    float temperature;
    float top_p;
    int top_k;
    float min_p;
    int has_seed;
    uint64_t seed;
    int max_tokens;
    int min_tokens;
    float presence_penalty;
    float frequency_penalty;
    float repetition_penalty;
    int logprobs;
    int prompt_logprobs;
    int ignore_eos;
    int skip_special_tokens;
    int include_stop_str_in_output;
    int detokenize;
    const char *const *stop;
    int num_stop;
    const int32_t *stop_token_ids;
    int num_stop_token_ids;
    int logits_hook;
} lunar_sampling_params_t;
void lunar_sampling_params_default(lunar_sampling_params_t *p);
int lunar_sampling_params_validate(const lunar_sampling_params_t *p);
typedef struct lunar_engine_config {
    int block_size;
    int num_blocks;
    int max_model_len;
    int max_num_seqs;
    int max_num_batched_tokens;
    int enable_chunked_prefill;
    int enable_prefix_caching;
    int policy;
    int32_t eos_token_ids[8];
    int num_eos_token_ids;
    int max_logprobs;
    double stats_interval_s;
} lunar_engine_config_t;
void lunar_engine_config_default(lunar_engine_config_t *c);
typedef struct lunar_engine lunar_engine_t;
int lunar_engine_create(const lunar_engine_config_t *cfg, const lunar_forward_iface_t *fwd,
                        const lunar_detok_iface_t *detok, lunar_engine_t **out);
void lunar_engine_free(lunar_engine_t *e);
void lunar_engine_set_notify(lunar_engine_t *e, void (*notify)(void *arg), void *arg);
void lunar_engine_set_logits_hook(lunar_engine_t *e, lunar_logits_hook_fn fn, void *arg);
typedef struct lunar_request {
    const int32_t *prompt_ids;
    int num_prompt_ids;
    const lunar_sampling_params_t *params;
    int priority;
    void *user_data;
} lunar_request_t;
int lunar_engine_submit(lunar_engine_t *e, const lunar_request_t *req, uint64_t *out_id);
int lunar_engine_abort(lunar_engine_t *e, uint64_t id);
int lunar_engine_start(lunar_engine_t *e);
void lunar_engine_stop(lunar_engine_t *e);
int lunar_engine_step(lunar_engine_t *e);
int lunar_engine_num_unfinished(lunar_engine_t *e);
const char *lunar_finish_reason_name(int reason);
typedef struct lunar_event {
    uint64_t request_id;
    void *user_data;
    int seq_index;
    int num_tokens;
    const int32_t *token_ids;
    const char *text;
    int text_len;
    const float *logprobs;
    int num_top_logprobs;
    const int32_t *top_ids;
    const float *top_logprobs;
    int num_prompt_logprobs;
    const float *prompt_logprobs;
    int num_prompt_top;
    const int32_t *prompt_top_ids;
    const float *prompt_top_logprobs;
    int finish_reason;
    const char *stop_str;
    int32_t stop_token_id;
    int num_prompt_tokens;
    int num_cached_tokens;
    int num_output_tokens;
    double arrival_time;
    double first_scheduled_time;
    double first_token_time;
    double last_token_time;
} lunar_event_t;
int lunar_engine_poll(lunar_engine_t *e, const lunar_event_t **out);
typedef struct lunar_histogram {
    int num_buckets;
    double bounds[32];
    uint64_t counts[32];
    uint64_t count;
    double sum;
} lunar_histogram_t;
typedef struct lunar_engine_stats {
    int num_running;
    int num_waiting;
    int num_preempted_waiting;
    double kv_cache_usage;
    int num_blocks, num_free_blocks, num_cached_free_blocks;
    uint64_t num_preemptions_total;
    uint64_t prompt_tokens_total;
    uint64_t generation_tokens_total;
    uint64_t prefix_cache_queries;
    uint64_t prefix_cache_hits;
    uint64_t request_success_stop;
    uint64_t request_success_length;
    uint64_t request_success_abort;
    uint64_t requests_errored;
    uint64_t num_steps;
    uint64_t forward_tokens_total;
    lunar_histogram_t ttft;
    lunar_histogram_t tpot;
    lunar_histogram_t e2e;
    lunar_histogram_t queue;
} lunar_engine_stats_t;
void lunar_engine_get_stats(lunar_engine_t *e, lunar_engine_stats_t *out);
double lunar_engine_now(void);
typedef struct lunar_fake_model lunar_fake_model_t;
int lunar_fake_model_create(int vocab_size, int num_blocks, int block_size, int eos_token_id,
                            uint64_t seed, lunar_fake_model_t **out);
void lunar_fake_model_free(lunar_fake_model_t *m);
void lunar_fake_model_iface(lunar_fake_model_t *m, lunar_forward_iface_t *out);
uint64_t lunar_fake_model_tokens_computed(const lunar_fake_model_t *m);
void lunar_fake_detok_iface(int bytes_mode, lunar_detok_iface_t *out);
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
