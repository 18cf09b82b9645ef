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

-- ---- model (lunar/model.h) ----
ffi.cdef [[
/* ---- model (lunar/model.h) ---- */
typedef enum lunar_dtype {
    LUNAR_DTYPE_F32 = 0,
    LUNAR_DTYPE_F16 = 1,
    LUNAR_DTYPE_BF16 = 2,
    LUNAR_DTYPE_I32 = 3,
    LUNAR_DTYPE_U8 = 4,
    LUNAR_DTYPE_I8 = 5,
    LUNAR_DTYPE_I64 = 6,
    LUNAR_DTYPE_F64 = 7,
    LUNAR_DTYPE_BOOL = 8,
    LUNAR_DTYPE_COUNT
} lunar_dtype_t;

size_t lunar_dtype_size(lunar_dtype_t t);
const char *lunar_dtype_name(lunar_dtype_t t);

typedef struct lunar_tensor {
    const char *name;
    lunar_dtype_t dtype;
    int ndim;
    int64_t shape[4];
    void *data;
    size_t nbytes;
} lunar_tensor_t;

typedef enum lunar_rope_type {
    LUNAR_ROPE_DEFAULT = 0,
    LUNAR_ROPE_LINEAR,
    LUNAR_ROPE_DYNAMIC,
    LUNAR_ROPE_YARN,
    LUNAR_ROPE_LLAMA3,
} lunar_rope_type_t;

typedef struct lunar_rope {
    lunar_rope_type_t type;
    double theta;
    double factor;
    int original_max_position;
    double low_freq_factor, high_freq_factor;
    double beta_fast, beta_slow;
    double mscale, mscale_all_dim;
    double attention_factor;
    int rotary_dim;
} lunar_rope_t;

typedef enum lunar_act { LUNAR_ACT_SILU = 0, LUNAR_ACT_GELU, LUNAR_ACT_GELU_TANH } lunar_act_t;

typedef struct lunar_model_config {
    char architecture[64];
    char model_type[32];
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim;
    int max_position_embeddings;
    double rms_norm_eps;
    lunar_rope_t rope;
    lunar_act_t hidden_act;
    int tie_word_embeddings;
    int qkv_bias;
    int o_bias;
    int qk_norm;
    int sliding_window;
    int bos_token_id;
    int eos_token_ids[8];
    int num_eos_token_ids;
    lunar_dtype_t torch_dtype;

    int num_experts;
    int num_experts_per_tok;
    int moe_intermediate_size;
    int norm_topk_prob;
    int decoder_sparse_step;
    int shared_expert_intermediate_size;
} lunar_model_config_t;

typedef struct lunar_layer_weights {
    lunar_tensor_t *attn_norm;
    lunar_tensor_t *wq, *wk, *wv;
    lunar_tensor_t *bq, *bk, *bv;
    lunar_tensor_t *q_norm, *k_norm;
    lunar_tensor_t *wo;
    lunar_tensor_t *bo;
    lunar_tensor_t *ffn_norm;
    lunar_tensor_t *w_gate, *w_up, *w_down;

    lunar_tensor_t *router;
    lunar_tensor_t **expert_gate, **expert_up, **expert_down;
} lunar_layer_weights_t;

typedef struct lunar_weights {
    lunar_tensor_t *embed;
    lunar_layer_weights_t *layers;
    lunar_tensor_t *final_norm;
    lunar_tensor_t *lm_head;
} lunar_weights_t;

typedef struct lunar_model lunar_model_t;

typedef struct lunar_load_options {
    const char *dtype;
    const char *load_format;
    uint64_t seed;
    int config_only;
    int dummy_on_device;
} lunar_load_options_t;

const char *lunar_model_resolve_dtype(const char *flag, const lunar_model_config_t *c, int on_gpu);
typedef struct lunar_dummy_params {
    uint64_t hash;
    float scale;
    int is_norm;
} lunar_dummy_params_t;
int lunar_model_dummy_params(const lunar_model_t *m, const lunar_tensor_t *t, lunar_dummy_params_t *p);

int lunar_model_load(const char *dir, const lunar_load_options_t *opts, lunar_model_t **out);
void lunar_model_free(lunar_model_t *m);

const lunar_model_config_t *lunar_model_config(const lunar_model_t *m);
const lunar_weights_t *lunar_model_weights(const lunar_model_t *m);

int lunar_model_tensor_count(const lunar_model_t *m);
const lunar_tensor_t *lunar_model_tensor(const lunar_model_t *m, int i);

lunar_dtype_t lunar_model_dtype(const lunar_model_t *m);

int lunar_model_file_count(const lunar_model_t *m);
const char *lunar_model_file(const lunar_model_t *m, int i, uint64_t *size);

const char *lunar_model_format(const lunar_model_t *m);

int lunar_config_parse(const char *json, size_t len, const char *what, lunar_model_config_t *out);

enum {
    LUNAR_PARAM_EMBED = 0, LUNAR_PARAM_ATTENTION, LUNAR_PARAM_MLP, LUNAR_PARAM_ROUTER,
    LUNAR_PARAM_EXPERTS, LUNAR_PARAM_NORM, LUNAR_PARAM_LM_HEAD, LUNAR_PARAM_GROUPS
};

typedef struct lunar_param_count {
    uint64_t group[LUNAR_PARAM_GROUPS];
    uint64_t total;
    uint64_t active;
} lunar_param_count_t;
int lunar_param_count(const lunar_model_config_t *c, lunar_param_count_t *out);

int lunar_parallel_check(const lunar_model_config_t *c, int tp, int pp, char *note, size_t note_cap);

typedef struct lunar_memory_options {
    int tensor_parallel_size;
    int pipeline_parallel_size;
    int max_model_len;
    int max_num_seqs;
    int max_num_batched_tokens;
    int block_size;
    lunar_dtype_t dtype;
    lunar_dtype_t kv_dtype;
    uint64_t gpu_memory_bytes;
    double gpu_memory_utilization;
    uint64_t kv_cache_memory_bytes;
    int enforce_eager;
} lunar_memory_options_t;

typedef struct lunar_memory_plan {
    int tp, pp, max_model_len, max_num_seqs, max_num_batched_tokens, block_size;
    int kv_heads_per_gpu;
    int kv_replicated;
    int stages;
    int stage_first_layer[64], stage_layers[64];
    uint64_t stage_weight_bytes[64];
    uint64_t params_total;
    uint64_t weight_bytes_total;
    uint64_t weight_bytes;
    uint64_t kv_bytes_per_token_total;
    uint64_t kv_bytes_per_token;
    uint64_t activation_bytes;
    uint64_t cuda_graph_bytes;
    uint64_t cublas_workspace_bytes;
    uint64_t nccl_bytes;

    uint64_t gpu_memory_bytes;
    double gpu_memory_utilization;
    int64_t kv_cache_bytes;
    uint64_t kv_cache_tokens;
    uint64_t kv_cache_blocks;
    double max_concurrency;
    int sized;
} lunar_memory_plan_t;

int lunar_memory_plan(const lunar_model_config_t *c, const lunar_memory_options_t *o, lunar_memory_plan_t *out);
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
typedef struct lunar_sample_row {
    float temperature;
    float top_p;
    float min_p;
    float presence_penalty, frequency_penalty, repetition_penalty;
    int top_k;
    int seq_index;
    int position;
    int logprobs;
    uint64_t seed;
} lunar_sample_row_t;
typedef struct lunar_sample_batch {
    int num_rows;
    const lunar_sample_row_t *rows;
    const int32_t *pen_start;
    const int32_t *pen_ids;
    const int32_t *pen_counts;
    int top_stride;
    int32_t *tokens;
    float *logprobs;
    int32_t *top_ids;
    float *top_logprobs;
} lunar_sample_batch_t;
typedef struct lunar_forward_iface {
    void *ctx;
    int vocab_size;
    int (*forward)(void *ctx, const lunar_batch_t *b, float *logits);
    int (*forward_sample)(void *ctx, const lunar_batch_t *b, const lunar_sample_batch_t *s);
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
int lunar_detok_prime(lunar_detok_t *d, const int32_t *ids, size_t n);
int lunar_detok_flush(lunar_detok_t *d, const char **text, size_t *len);
void lunar_detok_free(lunar_detok_t *d);
]]

-- ---- runner (lunar/runner.h) ----
ffi.cdef [[
typedef struct lunar_runner_options {
    const char *backend;
    int num_kv_blocks;
    int block_size;
    int max_num_batched_tokens;
    int max_num_seqs;
    int num_threads;
    int enforce_eager;
} lunar_runner_options_t;
void lunar_runner_options_default(lunar_runner_options_t *o);
typedef struct lunar_runner lunar_runner_t;
int lunar_runner_create(const lunar_model_t *m, const lunar_runner_options_t *o, lunar_runner_t **out);
void lunar_runner_free(lunar_runner_t *r);
int lunar_runner_forward(lunar_runner_t *r, const lunar_batch_t *b, float *logits);
int lunar_runner_forward_sample(lunar_runner_t *r, const lunar_batch_t *b, const lunar_sample_batch_t *s);
uint64_t lunar_runner_kv_bytes_per_token(const lunar_model_t *m, const char *backend);
void lunar_runner_forward_iface(lunar_runner_t *r, lunar_forward_iface_t *out);
uint64_t lunar_runner_tokens_computed(const lunar_runner_t *r);
/* Dummy tokens the forward added to decode steps to give them a CUDA graph's batch size. */
uint64_t lunar_runner_padding_tokens(const lunar_runner_t *r);
typedef struct lunar_runner_memory {
    uint64_t device_total;
    uint64_t device_used;
    uint64_t weights;
    uint64_t activations;
    uint64_t cuda_graphs;
    uint64_t kv_cache;
    uint64_t other;
    uint64_t kv_bytes_per_token;
    int num_kv_blocks, block_size;
    int profiled;
    int profile_tokens, profile_seqs;
    int graph_seqs;
} lunar_runner_memory_t;
int lunar_runner_memory(const lunar_runner_t *r, lunar_runner_memory_t *out);
int lunar_runner_profile(lunar_runner_t *r, int max_seq_len, lunar_runner_memory_t *out);
int lunar_runner_set_kv_blocks(lunar_runner_t *r, int num_kv_blocks);
]]

-- ---- http (lunar/http.h) ----
ffi.cdef [[
typedef struct lunar_http_server lunar_http_server_t;
typedef struct lunar_http_req lunar_http_req_t;
typedef struct lunar_http_config {
    const char *host;
    int port;
    const char *ssl_certfile;
    const char *ssl_keyfile;
    size_t max_request_body;
    double shutdown_timeout_s;
    void (*on_request)(void *ud, lunar_http_req_t *req);
    void (*on_closed)(void *ud, lunar_http_req_t *req, int client_gone);
    void (*on_wake)(void *ud);
    void (*on_shutdown)(void *ud);
    void *ud;
} lunar_http_config_t;
void lunar_http_config_default(lunar_http_config_t *c);
int lunar_http_create(const lunar_http_config_t *c, lunar_http_server_t **out);
int lunar_http_run(lunar_http_server_t *s);
void lunar_http_shutdown(lunar_http_server_t *s);
void lunar_http_wake(void *server);
void lunar_http_free(lunar_http_server_t *s);
int lunar_http_port(const lunar_http_server_t *s);
int lunar_http_inflight(const lunar_http_server_t *s);
uint64_t lunar_http_req_id(const lunar_http_req_t *r);
const char *lunar_http_req_method(const lunar_http_req_t *r, size_t *len);
const char *lunar_http_req_path(const lunar_http_req_t *r, size_t *len);
const char *lunar_http_req_query(const lunar_http_req_t *r, size_t *len);
const char *lunar_http_req_body(const lunar_http_req_t *r, size_t *len);
int lunar_http_req_body_utf8(const lunar_http_req_t *r, size_t *bad);
const char *lunar_http_req_header(const lunar_http_req_t *r, const char *name, size_t *len);
const char *lunar_http_req_protocol(const lunar_http_req_t *r);
const char *lunar_http_req_peer(const lunar_http_req_t *r);
int lunar_http_respond(lunar_http_req_t *r, int status, const char *content_type, const char *body, size_t len,
                       const char *headers);
int lunar_http_stream_start(lunar_http_req_t *r, int status, const char *content_type, const char *headers);
int lunar_http_stream_write(lunar_http_req_t *r, const char *data, size_t len);
int lunar_http_stream_end(lunar_http_req_t *r);
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
