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
} lunar_load_options_t;

const char *lunar_model_resolve_dtype(const char *flag, const lunar_model_config_t *c, int on_gpu);

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
