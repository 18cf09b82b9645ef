/*
 * lunar/model.h — a Hugging Face model folder in memory: its config and its weights.
 *
 * The loader (runtime/model/) reads config.json and the weight files (safetensors, sharded
 * or not, or pytorch_model.bin through a restricted pickle reader), maps HF tensor names to
 * the fields of lunar_weights_t through an architecture table, and checks every shape. The
 * forward pass (runtime/model/forward.c) and every backend read only these structs: per-arch
 * differences are data here (bias, q/k norm, tied embeddings, rope scaling), never code paths
 * keyed on the architecture's name.
 */
#ifndef LUNAR_MODEL_H
#define LUNAR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lunar_dtype {
    LUNAR_DTYPE_F32 = 0,
    LUNAR_DTYPE_F16 = 1,
    LUNAR_DTYPE_BF16 = 2,
    LUNAR_DTYPE_I32 = 3,  /* kept for quantized formats later */
    LUNAR_DTYPE_U8 = 4,
    LUNAR_DTYPE_I8 = 5,
    LUNAR_DTYPE_I64 = 6,
    LUNAR_DTYPE_F64 = 7,
    LUNAR_DTYPE_BOOL = 8,
    LUNAR_DTYPE_COUNT
} lunar_dtype_t;

/* Bytes per element; "F32", "BF16"... as safetensors spells them. */
size_t lunar_dtype_size(lunar_dtype_t t);
const char *lunar_dtype_name(lunar_dtype_t t);

/* A tensor on the host, row-major. `data` points into a mapped file or a buffer the model
 * owns; it is valid until lunar_model_free(). A matrix of a Linear layer keeps PyTorch's
 * [out_features, in_features] layout. */
typedef struct lunar_tensor {
    const char *name;      /* the HF name ("model.layers.0.self_attn.q_proj.weight") */
    lunar_dtype_t dtype;
    int ndim;
    int64_t shape[4];
    void *data;
    size_t nbytes;
} lunar_tensor_t;

typedef enum lunar_rope_type {
    LUNAR_ROPE_DEFAULT = 0,
    LUNAR_ROPE_LINEAR,   /* positions / factor */
    LUNAR_ROPE_DYNAMIC,  /* NTK-aware base growth past the original context */
    LUNAR_ROPE_YARN,
    LUNAR_ROPE_LLAMA3,   /* Llama-3.1 frequency-band scaling */
} lunar_rope_type_t;

typedef struct lunar_rope {
    lunar_rope_type_t type;
    double theta;                       /* rope_theta (base) */
    double factor;                      /* rope_scaling.factor */
    int original_max_position;          /* rope_scaling.original_max_position_embeddings */
    double low_freq_factor, high_freq_factor;   /* llama3 */
    double beta_fast, beta_slow;                /* yarn (defaults 32, 1) */
    double mscale, mscale_all_dim;              /* yarn (deepseek-style); 0 = unset */
    double attention_factor;                    /* yarn; 0 = derived from factor */
    int rotary_dim;                     /* dims rotated per head (= head_dim unless partial) */
} lunar_rope_t;

typedef enum lunar_act { LUNAR_ACT_SILU = 0, LUNAR_ACT_GELU, LUNAR_ACT_GELU_TANH } lunar_act_t;

typedef struct lunar_model_config {
    char architecture[64];   /* architectures[0], e.g. "LlamaForCausalLM" */
    char model_type[32];     /* "llama", "mistral", "qwen2", "qwen3", "baichuan", "qwen3_moe", "mixtral" */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim;            /* config's head_dim, else hidden_size / num_heads */
    int max_position_embeddings;
    double rms_norm_eps;
    lunar_rope_t rope;
    lunar_act_t hidden_act;
    int tie_word_embeddings;
    int qkv_bias;            /* qwen2: q/k/v projections carry a bias */
    int o_bias;              /* o_proj bias (rare) */
    int qk_norm;             /* qwen3: RMSNorm over each head of q and k before RoPE */
    int sliding_window;      /* 0 = full attention */
    int bos_token_id;        /* -1 when absent */
    int eos_token_ids[8];    /* config.json's eos_token_id (int or list) */
    int num_eos_token_ids;
    lunar_dtype_t torch_dtype;
    /* MoE (qwen3_moe, mixtral): parsed now, run later. 0 experts = dense. */
    int num_experts;
    int num_experts_per_tok;
    int moe_intermediate_size;
    int norm_topk_prob;
    int decoder_sparse_step;
    int shared_expert_intermediate_size;
} lunar_model_config_t;

/* One decoder layer. Absent weights are NULL (no bias, no q/k norm). For Baichuan's fused
 * W_pack the loader fills wq/wk/wv with views into the fused tensor (row ranges), so every
 * backend sees the same three projections; a backend that fuses q/k/v does it at upload. */
typedef struct lunar_layer_weights {
    lunar_tensor_t *attn_norm;                /* [hidden] */
    lunar_tensor_t *wq, *wk, *wv;             /* [heads*head_dim, hidden], [kv*head_dim, hidden] x2 */
    lunar_tensor_t *bq, *bk, *bv;             /* biases or NULL */
    lunar_tensor_t *q_norm, *k_norm;          /* [head_dim] or NULL */
    lunar_tensor_t *wo;                       /* [hidden, heads*head_dim] */
    lunar_tensor_t *bo;                       /* or NULL */
    lunar_tensor_t *ffn_norm;                 /* [hidden] */
    lunar_tensor_t *w_gate, *w_up, *w_down;   /* dense MLP: [inter, hidden] x2, [hidden, inter] */
    /* MoE layers: router [experts, hidden]; per-expert gate/up/down arrays of num_experts. */
    lunar_tensor_t *router;
    lunar_tensor_t **expert_gate, **expert_up, **expert_down;
} lunar_layer_weights_t;

typedef struct lunar_weights {
    lunar_tensor_t *embed;        /* [vocab, hidden] */
    lunar_layer_weights_t *layers; /* num_layers */
    lunar_tensor_t *final_norm;   /* [hidden] */
    lunar_tensor_t *lm_head;      /* [vocab, hidden]; == embed when tied */
} lunar_weights_t;

typedef struct lunar_model lunar_model_t;

typedef struct lunar_load_options {
    const char *dtype;        /* "auto" | "float16" | "bfloat16" | "float32" (NULL = auto) */
    const char *load_format;  /* "auto" | "safetensors" | "pt" | "dummy" (NULL = auto) */
    uint64_t seed;            /* dummy weights' seed */
    int config_only;          /* parse config.json and list tensors; no dtype conversion and
                               * no dummy data (tensor data NULL for dummy; files stay mapped
                               * lazily, so no weight byte is read) */
    int dummy_on_device;      /* --load-format dummy: leave the matrices (2-D tensors) without
                               * host data for a GPU backend to generate in place (see
                               * lunar_model_dummy_params); 1-D tensors are still made here */
} lunar_load_options_t;

/* The dtype to pass as lunar_load_options_t.dtype for a --dtype flag: "auto" is the config's
 * torch_dtype, except that a float32 checkpoint runs in bfloat16 on a GPU (as vLLM does),
 * which is logged. Other flags map to themselves ("half" -> "float16"). Static string, or NULL
 * for an unknown flag. */
const char *lunar_model_resolve_dtype(const char *flag, const lunar_model_config_t *c, int on_gpu);

/* Loads the folder `dir`. On success *out owns every tensor; free with lunar_model_free().
 * Errors name the file and, where one is at fault, the tensor. */
int lunar_model_load(const char *dir, const lunar_load_options_t *opts, lunar_model_t **out);
void lunar_model_free(lunar_model_t *m);

const lunar_model_config_t *lunar_model_config(const lunar_model_t *m);
const lunar_weights_t *lunar_model_weights(const lunar_model_t *m);
/* All tensors as loaded, in file order (for `lunar inspect --tensors`). */
int lunar_model_tensor_count(const lunar_model_t *m);
const lunar_tensor_t *lunar_model_tensor(const lunar_model_t *m, int i);
/* The dtype weights are held in after --dtype is applied. */
lunar_dtype_t lunar_model_dtype(const lunar_model_t *m);
/* The weight files, in load order (none for dummy weights): path (owned by the model) and
 * size in bytes, for `lunar inspect`. NULL past the end. */
int lunar_model_file_count(const lunar_model_t *m);
const char *lunar_model_file(const lunar_model_t *m, int i, uint64_t *size);
/* A dummy tensor's generator (model/dummy.c): element i is, in f32, 1 for a norm weight, else
 * u * scale with u = ((r >> 16 (i % 4)) & 0xffff) + 0.5) * 2^-15 - 1 and
 * r = splitmix64(hash + i / 4), then rounded to the tensor's dtype (nearest even). */
typedef struct lunar_dummy_params {
    uint64_t hash;
    float scale;
    int is_norm;
} lunar_dummy_params_t;
/* 1 and *p for a tensor loaded with dummy_on_device and left without data (a device fills it
 * with the values the host would have made); 0 for every other tensor. */
int lunar_model_dummy_params(const lunar_model_t *m, const lunar_tensor_t *t, lunar_dummy_params_t *p);

/* "safetensors", "pt" or "dummy": where the weights came from. Static string. */
const char *lunar_model_format(const lunar_model_t *m);

/* Parses only config.json text (no folder needed): for tests and `lunar memory`. */
int lunar_config_parse(const char *json, size_t len, const char *what, lunar_model_config_t *out);

/* ---- parameter counts and the memory plan (`lunar inspect`, `lunar memory`) ------------ */

enum {
    LUNAR_PARAM_EMBED = 0, LUNAR_PARAM_ATTENTION, LUNAR_PARAM_MLP, LUNAR_PARAM_ROUTER,
    LUNAR_PARAM_EXPERTS, LUNAR_PARAM_NORM, LUNAR_PARAM_LM_HEAD, LUNAR_PARAM_GROUPS
};

/* Parameters as transformers counts them (a tied lm_head is the embedding: counted once),
 * by group, from the config alone. `active` is what one token reads: for MoE, experts
 * count num_experts_per_tok / num_experts of their total. */
typedef struct lunar_param_count {
    uint64_t group[LUNAR_PARAM_GROUPS];
    uint64_t total;
    uint64_t active;
} lunar_param_count_t;
int lunar_param_count(const lunar_model_config_t *c, lunar_param_count_t *out);

/* Checks that tensor parallelism `tp` and pipeline parallelism `pp` divide the model: heads,
 * kv heads (tp > kv_heads replicates kv heads, as vLLM does, when tp is a multiple of them),
 * intermediate sizes, vocab, layers >= pp. The error says exactly what to change. When kv
 * heads are replicated *note (may be NULL) gets a sentence saying so, else "". */
int lunar_parallel_check(const lunar_model_config_t *c, int tp, int pp, char *note, size_t note_cap);

#define LUNAR_MAX_PP 64

typedef struct lunar_memory_options {
    int tensor_parallel_size;        /* 1 */
    int pipeline_parallel_size;      /* 1 */
    int max_model_len;               /* 0 = config's max_position_embeddings */
    int max_num_seqs;                /* 0 = 256 */
    int max_num_batched_tokens;      /* 0 = 8192 (vllm serve's default with chunked prefill) */
    int block_size;                  /* 0 = 16 */
    lunar_dtype_t dtype;             /* weights and activations */
    lunar_dtype_t kv_dtype;          /* KV cache */
    uint64_t gpu_memory_bytes;       /* per GPU; 0 = unknown (no KV sizing) */
    double gpu_memory_utilization;   /* 0 = 0.9 */
    uint64_t kv_cache_memory_bytes;  /* > 0: the KV cache gets exactly this, per GPU */
    int enforce_eager;               /* no CUDA graphs */
} lunar_memory_options_t;

/* The memory plan of one model on tp x pp GPUs. Exact figures: weights (parameter bytes,
 * split as TP/PP split them) and KV bytes per token. Estimates (see memory.c and
 * `lunar memory --help`): activations, CUDA graph pool, cuBLAS workspace, NCCL buffers.
 * Per-GPU figures are for the fullest GPU (the stage with the most bytes). */
typedef struct lunar_memory_plan {
    int tp, pp, max_model_len, max_num_seqs, max_num_batched_tokens, block_size;
    int kv_heads_per_gpu;            /* after replication */
    int kv_replicated;               /* tp > num_kv_heads */
    int stages;                      /* = pp */
    int stage_first_layer[LUNAR_MAX_PP], stage_layers[LUNAR_MAX_PP];
    uint64_t stage_weight_bytes[LUNAR_MAX_PP];   /* per GPU of each stage */
    uint64_t params_total;           /* whole model (transformers' count) */
    uint64_t weight_bytes_total;     /* whole model, all GPUs together, without replication */
    uint64_t weight_bytes;           /* per GPU (the fullest) */
    uint64_t kv_bytes_per_token_total;  /* 2 x layers x kv_heads x head_dim x bytes, whole model */
    uint64_t kv_bytes_per_token;     /* per GPU (the stage with the most layers) */
    uint64_t activation_bytes;       /* estimate: peak of one step at max_num_batched_tokens */
    uint64_t cuda_graph_bytes;       /* estimate; 0 with enforce_eager */
    uint64_t cublas_workspace_bytes;
    uint64_t nccl_bytes;             /* estimate; 0 on one GPU */
    /* KV sizing: only when gpu_memory_bytes (or kv_cache_memory_bytes) was given */
    uint64_t gpu_memory_bytes;
    double gpu_memory_utilization;
    int64_t kv_cache_bytes;          /* available for the KV cache per GPU (negative: short by) */
    uint64_t kv_cache_tokens;        /* rounded down to whole blocks */
    uint64_t kv_cache_blocks;
    double max_concurrency;          /* kv_cache_tokens / max_model_len */
    int sized;                       /* KV figures are filled */
} lunar_memory_plan_t;

int lunar_memory_plan(const lunar_model_config_t *c, const lunar_memory_options_t *o, lunar_memory_plan_t *out);

#ifdef __cplusplus
}
#endif
#endif /* LUNAR_MODEL_H */
