/*
 * moe.h — the public C API of the moe runtime.
 *
 * A model is an immutable, memory-mapped .moe file (moe_model); a context
 * (moe_ctx) owns everything that changes while a sequence is evaluated: the KV
 * cache, scratch memory and the position. Any number of contexts may share one
 * model. Every call that can fail takes a moe_error and returns non-zero (or
 * NULL) with a message naming the file, field or value that was wrong; the
 * library never prints and never exits.
 */
#ifndef MOE_H
#define MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_ERROR_MAX 512

typedef struct moe_error {
    char msg[MOE_ERROR_MAX];
} moe_error;

typedef struct moe_model moe_model;
typedef struct moe_ctx moe_ctx;

/* Element types of tensors in a .moe file. Values are part of the file format. */
typedef enum moe_dtype {
    MOE_F32 = 0,
    MOE_F16 = 1,
    MOE_BF16 = 2,
    MOE_Q8 = 3,   /* int8, per-32 f16 scales, rows interleaved by 4 (src/quant/quant.h) */
    MOE_Q4 = 4,   /* int4, same layout */
    MOE_DTYPE_COUNT
} moe_dtype;

const char *moe_dtype_name(moe_dtype t);
/* Parses "f32", "f16", "bf16", "q8", "q4"; returns -1 for anything else. */
int moe_dtype_from_name(const char *name);

/* How the query and key projections are normalized before RoPE. */
typedef enum moe_qk_norm {
    MOE_QK_NORM_NONE = 0,
    MOE_QK_NORM_PER_HEAD = 1, /* Qwen3-MoE: RMSNorm over head_dim, each head */
    MOE_QK_NORM_FULL = 2,     /* OLMoE: RMSNorm over the whole projection */
} moe_qk_norm;

typedef enum moe_rope_scaling {
    MOE_ROPE_NONE = 0,
    MOE_ROPE_LINEAR = 1,
    MOE_ROPE_YARN = 2,        /* DeepSeek's YaRN: blended frequencies, cos/sin and softmax scale adjusted */
} moe_rope_scaling;

typedef enum moe_attn_kind {
    MOE_ATTN_GQA = 0,         /* q, k, v projections; K and V cached per kv head */
    MOE_ATTN_MLA = 1,         /* DeepSeek's multi-head latent attention; the latent is cached */
} moe_attn_kind;

/* How router logits become expert scores. */
typedef enum moe_router_func {
    MOE_ROUTER_SOFTMAX = 0,
    MOE_ROUTER_SIGMOID = 1,
} moe_router_func;

/* With expert groups: how a group is scored when choosing groups. */
typedef enum moe_group_score {
    MOE_GROUP_MAX = 0,        /* DeepSeek-V2 group_limited_greedy: best expert of the group */
    MOE_GROUP_TOP2_SUM = 1,   /* DeepSeek-V3 noaux_tc: sum of the two best (biased) scores */
} moe_group_score;

#define MOE_MAX_LAYERS 512

/* Everything the forward pass needs to know about a model. A family is a set
 * of these values, never a separate code path. */
typedef struct moe_hparams {
    char architecture[64];     /* config.json architectures[0] */
    int32_t n_vocab;
    int32_t n_embd;            /* hidden_size */
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t n_ctx_train;       /* max_position_embeddings */
    float rms_eps;
    float rope_theta;
    int32_t rope_scaling;      /* moe_rope_scaling */
    float rope_factor;
    int32_t rope_interleaved;  /* rotate pairs (2i, 2i+1) (DeepSeek's layout), not (i, i + half) */
    int32_t yarn_orig_ctx;     /* YaRN: original_max_position_embeddings */
    float yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim;
    int32_t qk_norm;           /* moe_qk_norm */
    float clip_qkv;            /* 0: no clamp */
    int32_t attn_bias;         /* q, k, v projections have biases */
    int32_t attn_kind;         /* moe_attn_kind */
    int32_t q_lora_rank;       /* MLA: rank of the query compression; 0: q projected directly */
    int32_t kv_lora_rank;      /* MLA: width of the cached latent */
    int32_t qk_nope_dim, qk_rope_dim, v_head_dim; /* MLA: per head (head_dim = nope + rope) */

    int32_t n_experts;
    int32_t n_experts_used;    /* top-k */
    int32_t expert_ffn;        /* width of one routed expert */
    int32_t dense_ffn;         /* width of the FFN of dense layers */
    int32_t shared_ffn;        /* width of the shared expert, 0 if none */
    int32_t shared_gate;       /* shared expert scaled by sigmoid(x . w) */
    int32_t norm_topk;         /* renormalize the top-k weights to sum 1 */
    int32_t router_func;       /* moe_router_func */
    int32_t router_bias;       /* a per-expert bias added to the scores to choose experts, not to weigh them */
    int32_t n_groups, topk_groups; /* experts in n_groups groups; only the best topk_groups compete */
    int32_t group_score;       /* moe_group_score */
    float routed_scale;        /* the routed experts' weights are multiplied by this */
    uint8_t layer_is_moe[MOE_MAX_LAYERS];

    int32_t tie_embeddings;    /* output head is the embedding matrix */
    int32_t bos_id, eos_id;    /* -1 when unknown */
} moe_hparams;

/* ---- model ---- */

/* Maps and validates the file structure (header checksum, bounds, overlaps,
 * sizes against shapes and dtypes, version). Weights are not copied. */
moe_model *moe_model_open(const char *path, moe_error *err);

typedef struct moe_model_params {
    int no_mmap;               /* read the whole file into memory instead of mapping it: more
                                  memory and a slower start, faster decode (bench/README.md) */
} moe_model_params;
moe_model *moe_model_open_with(const char *path, moe_model_params p, moe_error *err);
void moe_model_close(moe_model *m);
const moe_hparams *moe_model_hparams(const moe_model *m);

/* Metadata strings (e.g. "general.source"); NULL when absent. */
const char *moe_model_meta_str(const moe_model *m, const char *key);

typedef struct moe_tensor_info {
    const char *name;
    moe_dtype dtype;
    int n_dims;
    int64_t dims[4];           /* dims[0] is the fastest-varying (row length) */
    uint64_t offset;           /* from the start of the file */
    uint64_t size;             /* bytes */
} moe_tensor_info;

int moe_model_n_tensors(const moe_model *m);
void moe_model_tensor(const moe_model *m, int i, moe_tensor_info *out);
uint64_t moe_model_file_size(const moe_model *m);

/* Checks the XXH3-64 of every tensor. Calls on_bad for each tensor whose
 * checksum differs (may be NULL) and returns how many did. */
int moe_model_verify(const moe_model *m,
                     void (*on_bad)(void *user, const char *tensor), void *user);

/* Bytes of weights one decoded token reads: attention, routers, the top-k
 * routed experts, shared experts, dense layers, the output head and one
 * embedding row (the KV cache is not counted). */
uint64_t moe_model_bytes_per_token(const moe_model *m);

/* Values the KV cache holds per token (all layers; 2 bytes each in f16, 4
 * in f32): 2 x kv heads x head_dim per layer, or with MLA only the latent
 * and the rope key, kv_lora_rank + qk_rope_head_dim. */
uint64_t moe_model_kv_values_per_token(const moe_model *m);

/* Bytes of all routed experts of all layers (what an expert cache budget is a share of). */
uint64_t moe_model_routed_expert_bytes(const moe_model *m);

/* Parameter counts: all weights, and those one token reads. */
void moe_model_param_counts(const moe_model *m, uint64_t *total, uint64_t *active);

/* ---- context ---- */

typedef struct moe_ctx_params {
    int32_t n_ctx;             /* positions in the KV cache; 0: min(n_ctx_train, 4096) */
    int32_t n_batch;           /* tokens per forward chunk; 0: 512 (at most n_ctx) */
    int32_t n_threads;         /* 0: OpenMP's default */
    const char *isa;           /* kernels to use: "scalar", "avx2", "neon"; NULL: best for this CPU */
    const char *kv_type;       /* the KV cache's values: "f16" or "f32"; NULL: "f16", as llama.cpp
                                  (half the memory; at depth decode reads it as much as the weights) */
    uint64_t expert_cache_bytes; /* > 0: serve routed experts from a cache of this many bytes
                                    (whole experts), read from the file; 0: the mapping */
    const char *expert_cache_policy; /* "lru", "lfu" (decayed), "stats" (routing statistics);
                                        NULL: "stats" (src/cache/expert_cache.h) */
    int32_t expert_cache_pin;  /* > 0: the N experts of highest routing frequency stay resident */
    int32_t expert_cache_prefetch; /* 1: read the next layer's predicted experts in the background */
} moe_ctx_params;

/* The expert cache's counters (see moe_ctx_params.expert_cache_bytes). */
typedef struct moe_cache_stats {
    uint64_t hits, misses;
    uint64_t bypasses;         /* served from the mapping because every slot was in use */
    uint64_t bytes_read;       /* from the file into the cache (demand reads and prefetches) */
    int32_t slots, slots_used;
    uint64_t slot_bytes;
    double io_stall_s;         /* time lookups waited for reads (demand, or a prefetch in flight) */
    uint64_t prefetch_issued;  /* reads started for predicted experts */
    uint64_t prefetch_useful;  /* of those, experts looked up before they left the cache */
    uint64_t prefetch_wasted;  /* of those, evicted (or failed) without being looked up */
    uint64_t prefetch_dropped; /* predictions not read: queue full or no evictable slot */
    /* precision = useful / issued; recall = useful / (useful + misses) */
    int32_t n_layers;
    uint64_t layer_hits[MOE_MAX_LAYERS], layer_misses[MOE_MAX_LAYERS];
} moe_cache_stats;

/* 0 and the counters, or -1 when the context has no expert cache. */
int moe_ctx_cache_stats(const moe_ctx *c, moe_cache_stats *out);

/* Called for every token of every MoE layer with the experts the router
 * chose and their weights (k of each), in the order the forward pass routes
 * them; pos is the token's position in the context. For routing traces
 * (moe-cli --trace-experts) and statistics; NULL turns it off. */
typedef void (*moe_route_fn)(void *user, int32_t pos, int32_t layer, int32_t k, const int32_t *experts,
                             const float *weights);
void moe_ctx_on_route(moe_ctx *c, moe_route_fn fn, void *user);

/* The instruction set the context's kernels use. */
const char *moe_ctx_isa(const moe_ctx *c);
/* The KV cache's value type ("f16" or "f32") and its bytes for all n_ctx positions. */
const char *moe_ctx_kv_type(const moe_ctx *c);
uint64_t moe_ctx_kv_bytes(const moe_ctx *c);

moe_ctx *moe_ctx_new(const moe_model *m, moe_ctx_params p, moe_error *err);
void moe_ctx_free(moe_ctx *c);

/* Evaluates n tokens at the next positions of the sequence, appending them to
 * the KV cache. When logits is not NULL it receives n rows of n_vocab floats,
 * one per token; when it is NULL only the last row is computed, available
 * through moe_ctx_logits(). Returns 0, or non-zero with err set (e.g. the
 * context is full or a token id is out of range). */
int moe_eval(moe_ctx *c, const int32_t *tokens, int n, float *logits, moe_error *err);

/* The logits of the last evaluated token (n_vocab floats). */
const float *moe_ctx_logits(const moe_ctx *c);
int32_t moe_ctx_pos(const moe_ctx *c);
int32_t moe_ctx_n_ctx(const moe_ctx *c);
void moe_ctx_reset(moe_ctx *c);
/* Forgets every position from n on (0 <= n <= pos), so the next moe_eval
 * continues at position n: a conversation that shares a prefix with what the
 * cache holds re-evaluates only the rest. The last logits are stale until
 * the next moe_eval. */
void moe_ctx_truncate(moe_ctx *c, int32_t n);

/* ---- text ---- */

typedef struct moe_tokenizer moe_tokenizer;

/* The model's tokenizer, built from the tokenizer.json (and
 * tokenizer_config.json) stored in the file; the caller frees it with
 * moe_tokenizer_free (see src/text/tokenizer.h for its calls). NULL with err
 * when the model has none. */
moe_tokenizer *moe_model_tokenizer_new(const moe_model *m, moe_error *err);
void moe_tokenizer_free(moe_tokenizer *t);

/* ---- chat ---- */

/* Renders a conversation with the model's chat template, as Hugging Face's
 * apply_chat_template does: messages_json is a JSON list of {role, content}
 * (other message fields pass through to the template); bos_token and
 * eos_token come from the checkpoint's tokenizer_config.json.
 * chat_template: Jinja source to use instead of the model's (NULL: the
 * model's). enable_thinking: -1 leaves it undefined, 0/1 set it (Qwen3).
 * now_unix is the clock templates read through strftime_now. *out is the
 * caller's to free. Fails with a message when there is no template, the JSON
 * is malformed, or the template raises an exception. */
int moe_chat_render(const moe_model *m, const char *chat_template, const char *messages_json, size_t len,
                    int add_generation_prompt, int enable_thinking, long long now_unix, char **out, size_t *out_len,
                    moe_error *err);

/* The Jinja source of a built-in template ("chatml", "mistral"), for a model
 * whose own template is missing or cannot be rendered; NULL for other names. */
const char *moe_chat_template_builtin(const char *name);

/* ---- sampling ---- */

/* How the next token is drawn from the logits. The steps run in this order:
 * repetition/presence/frequency penalties over the last repeat_last_n
 * accepted tokens, top-k, top-p, min-p, temperature, then a draw. temp <= 0
 * is greedy (argmax after penalties). */
typedef struct moe_sampler_params {
    float temp;                /* 0.8; <= 0: greedy */
    int32_t top_k;             /* 40; 0: off */
    float top_p;               /* 0.95; 1: off */
    float min_p;               /* 0.05; 0: off */
    float repeat_penalty;      /* 1: off; > 1 discourages repeats (divides positive logits) */
    float presence_penalty;    /* 0: off; subtracted once from every seen token */
    float frequency_penalty;   /* 0: off; subtracted per occurrence */
    int32_t repeat_last_n;     /* 64: how many recent tokens the penalties look at */
    uint64_t seed;             /* same seed, same draws */
} moe_sampler_params;

typedef struct moe_sampler moe_sampler;

/* The defaults above (llama.cpp's). */
moe_sampler_params moe_sampler_defaults(void);
moe_sampler *moe_sampler_new(moe_sampler_params p, int32_t n_vocab, moe_error *err);
void moe_sampler_free(moe_sampler *s);
/* Draws a token from n_vocab logits (not modified). */
int32_t moe_sampler_sample(moe_sampler *s, const float *logits);
/* Records a token of the sequence (prompt or generated) for the penalties. */
void moe_sampler_accept(moe_sampler *s, int32_t token);
/* Forgets the history (the random state continues). */
void moe_sampler_reset(moe_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
