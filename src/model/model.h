/*
 * model.h — the model as the forward pass sees it: hyperparameters and every
 * weight bound to its place in the mapped file. Also the two tables that
 * moe-convert and the runtime share, so that they cannot disagree: the
 * metadata keys of the hyperparameters, and the canonical tensors of a layer
 * with the shape each must have.
 */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "format/format.h"
#include "moe.h"

/* A weight matrix (or vector) inside the mapping: rows of `cols` elements. */
typedef struct moe_weight {
    const void *data;            /* NULL when the model has no such tensor */
    moe_dtype dtype;
    int64_t rows, cols;
} moe_weight;

/* Tensors of one layer. Shapes are written rows x cols; cols is the input. */
typedef enum moe_layer_tensor {
    LT_ATTN_NORM,   /* n_embd */
    LT_Q,           /* (n_heads * head_dim) x n_embd */
    LT_K,           /* (n_kv_heads * head_dim) x n_embd */
    LT_V,           /* (n_kv_heads * head_dim) x n_embd */
    LT_O,           /* n_embd x (n_heads * head_dim) */
    LT_Q_BIAS,      /* n_heads * head_dim */
    LT_K_BIAS,      /* n_kv_heads * head_dim */
    LT_V_BIAS,      /* n_kv_heads * head_dim */
    LT_Q_NORM,      /* head_dim (per head) or n_heads * head_dim (full) */
    LT_K_NORM,      /* head_dim (per head) or n_kv_heads * head_dim (full) */
    LT_FFN_NORM,    /* n_embd */
    LT_ROUTER,      /* n_experts x n_embd */
    LT_DENSE_GATE,  /* dense_ffn x n_embd */
    LT_DENSE_UP,    /* dense_ffn x n_embd */
    LT_DENSE_DOWN,  /* n_embd x dense_ffn */
    LT_SHARED_GATE, /* shared_ffn x n_embd */
    LT_SHARED_UP,   /* shared_ffn x n_embd */
    LT_SHARED_DOWN, /* n_embd x shared_ffn */
    LT_SHARED_ROUTER, /* 1 x n_embd: the scalar gate of the shared expert */
    /* Multi-head latent attention (DeepSeek), in place of LT_K and LT_V; LT_Q
     * is n_heads * (nope + rope) x n_embd when there is no q compression. */
    LT_Q_A,         /* q_lora_rank x n_embd */
    LT_Q_A_NORM,    /* q_lora_rank */
    LT_Q_B,         /* n_heads * (nope + rope) x q_lora_rank */
    LT_KV_A,        /* (kv_lora_rank + rope) x n_embd: the latent, then the shared rope key */
    LT_KV_A_NORM,   /* kv_lora_rank */
    LT_K_B,         /* n_heads * kv_lora_rank x nope: per head, the transpose of kv_b's key rows */
    LT_V_B,         /* n_heads * v_head_dim x kv_lora_rank: per head, kv_b's value rows */
    LT_ROUTER_BIAS, /* n_experts: added to the scores only to choose experts */
    LT_COUNT
} moe_layer_tensor;

/* The three tensors of each routed expert: gate and up are expert_ffn x
 * n_embd, down is n_embd x expert_ffn. */
typedef enum moe_expert_tensor { ET_GATE, ET_UP, ET_DOWN, ET_COUNT } moe_expert_tensor;

/* Canonical name of a layer tensor ("blk.3.attn_q") or an expert tensor
 * ("blk.3.exp.17.gate"), written into buf. */
void moe_layer_tensor_name(char *buf, size_t n, int layer, moe_layer_tensor t);
void moe_expert_tensor_name(char *buf, size_t n, int layer, int expert, moe_expert_tensor t);
#define MOE_NAME_TOKEN_EMBD "token_embd"
#define MOE_NAME_OUTPUT_NORM "output_norm"
#define MOE_NAME_OUTPUT "output"

/* Whether layer l has tensor t, and its expected shape (rows, cols; rows is 1
 * for vectors, which are stored with one dimension). */
int moe_layer_tensor_present(const moe_hparams *hp, int layer, moe_layer_tensor t);
void moe_layer_tensor_shape(const moe_hparams *hp, moe_layer_tensor t, int64_t *rows, int64_t *cols);
void moe_expert_tensor_shape(const moe_hparams *hp, moe_expert_tensor t, int64_t *rows, int64_t *cols);
int moe_tensor_is_vector(moe_layer_tensor t);

/* ---- the file's tensors, in order, and the element type of each ---- */

/* Classes of tensor a quantization recipe sets one type for. Norms, biases
 * and routers are always f32: small, and routing is sensitive to them. */
typedef enum moe_tensor_class {
    MOE_TC_EXPERTS,   /* routed experts */
    MOE_TC_SHARED,    /* shared experts and the FFN of dense layers */
    MOE_TC_ATTN,
    MOE_TC_EMBED,
    MOE_TC_OUTPUT,
    MOE_TC_COUNT,
    MOE_TC_F32 = MOE_TC_COUNT
} moe_tensor_class;

typedef struct moe_recipe {
    moe_dtype type[MOE_TC_COUNT];
} moe_recipe;

/* Routed experts q4 (most of the bytes), everything every token reads q8. */
extern const moe_recipe moe_recipe_default;
const char *moe_tensor_class_key(moe_tensor_class c); /* "experts", "shared", ... */
/* "experts=q4 shared=q8 ... norms=f32 router=f32" */
void moe_recipe_describe(const moe_recipe *r, char *buf, size_t n);

typedef enum moe_spec_kind { MOE_SPEC_EMBED, MOE_SPEC_OUTPUT_NORM, MOE_SPEC_OUTPUT, MOE_SPEC_LAYER, MOE_SPEC_EXPERT } moe_spec_kind;

typedef struct moe_tensor_spec {
    char name[64];               /* canonical */
    moe_spec_kind kind;
    int layer, expert, id;       /* id: moe_layer_tensor or moe_expert_tensor */
    int64_t rows, cols;
    int vector;                  /* stored with one dimension (cols) */
    moe_tensor_class cls;
    uint64_t align;              /* MOEF_EXPERT_ALIGN for the first tensor of an expert */
} moe_tensor_spec;

/* Every tensor of a model with these hyperparameters, in file order:
 * embedding; per layer its own tensors, then each expert's gate, up, down;
 * final norm; output head. Returns the count (-1 out of memory); *out is
 * the caller's to free. */
int moe_tensor_specs(const moe_hparams *hp, moe_tensor_spec **out);
static inline moe_dtype moe_spec_dtype(const moe_tensor_spec *s, const moe_recipe *r) {
    return s->cls == MOE_TC_F32 ? MOE_F32 : r->type[s->cls];
}

/* Hyperparameters to and from the file's metadata ("moe.n_embd", ...). */
void moe_hparams_write(const moe_hparams *hp, moef_writer *w);
int moe_hparams_read(moe_hparams *hp, const moef_file *f, moe_error *err);
/* Checks ranges and consistency (e.g. top-k <= experts); err names the field. */
int moe_hparams_check(const moe_hparams *hp, moe_error *err);

typedef struct moe_layer {
    moe_weight w[LT_COUNT];
} moe_layer;

struct moe_model {
    moef_file file;
    moe_hparams hp;
    moe_weight token_embd;       /* n_vocab x n_embd */
    moe_weight output_norm;      /* n_embd */
    moe_weight output;           /* n_vocab x n_embd (the embedding when tied) */
    moe_layer *layers;           /* n_layers */
    moe_weight *experts;         /* [n_layers][n_experts][ET_COUNT]; empty for dense layers */
};

static inline const moe_weight *moe_model_expert(const moe_model *m, int layer, int e) {
    return &m->experts[((size_t)layer * (size_t)m->hp.n_experts + (size_t)e) * ET_COUNT];
}

#endif
