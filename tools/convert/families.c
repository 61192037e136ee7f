/*
 * families.c — config.json parsing and tensor names per family. Semantics come
 * from the transformers modeling files (modeling_mixtral.py,
 * modeling_qwen2_moe.py, modeling_qwen3_moe.py, modeling_olmoe.py); each
 * family sets switches in moe_hparams rather than having code of its own.
 */
#include "families.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/error.h"

struct moe_family {
    const char *model_type;
    const char *architecture;
    const char *moe_block;               /* "block_sparse_moe" or "mlp" */
    const char *expert_names[ET_COUNT];  /* gate, up, down */
    const char *n_experts_key;           /* "num_local_experts" or "num_experts" */
    const char *expert_ffn_key;          /* width of one routed expert */
    int norm_topk_default;               /* -1: always renormalizes (no key) */
    int has_shared, has_sparse_step, attn_bias_always;
    moe_qk_norm qk_norm;
};

static const moe_family families[] = {
    {"mixtral", "MixtralForCausalLM", "block_sparse_moe", {"w1", "w3", "w2"}, "num_local_experts",
     "intermediate_size", -1, 0, 0, 0, MOE_QK_NORM_NONE},
    {"qwen2_moe", "Qwen2MoeForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "num_experts",
     "moe_intermediate_size", 0, 1, 1, 1, MOE_QK_NORM_NONE},
    {"qwen3_moe", "Qwen3MoeForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "num_experts",
     "moe_intermediate_size", 0, 0, 1, 0, MOE_QK_NORM_PER_HEAD},
    {"olmoe", "OlmoeForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "num_experts",
     "intermediate_size", 0, 0, 0, 0, MOE_QK_NORM_FULL},
};
#define N_FAMILIES (sizeof families / sizeof *families)

const char *moe_family_list(void) { return "mixtral, qwen2_moe, qwen3_moe, olmoe"; }

typedef struct cfg {
    const char *path;
    cJSON *root;
    moe_error *err;
    int failed;
} cfg;

/* Reads a number field. required: missing is an error; otherwise *out keeps
 * its default. A JSON null counts as missing. */
static double num(cfg *c, const char *key, int required, double dflt) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required && !c->failed) {
            moe_fail(c->err, "%s: required field \"%s\" is missing", c->path, key);
            c->failed = 1;
        }
        return dflt;
    }
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0 && cJSON_IsNumber(cJSON_GetArrayItem(v, 0)))
        return cJSON_GetArrayItem(v, 0)->valuedouble; /* e.g. eos_token_id: [1, 2] */
    if (!cJSON_IsNumber(v)) {
        if (!c->failed) moe_fail(c->err, "%s: field \"%s\" must be a number", c->path, key);
        c->failed = 1;
        return dflt;
    }
    return v->valuedouble;
}

static int32_t int_field(cfg *c, const char *key, int required, int32_t dflt) {
    double v = num(c, key, required, dflt);
    if (!c->failed && (v != floor(v) || v < INT32_MIN || v > INT32_MAX)) {
        moe_fail(c->err, "%s: field \"%s\" = %g must be an integer", c->path, key, v);
        c->failed = 1;
    }
    return (int32_t)v;
}

static int parse_rope_scaling(cfg *c, moe_hparams *hp) {
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return 0;
    cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (!cJSON_IsString(type))
        return moe_fail(c->err, "%s: field \"rope_scaling\" has no \"rope_type\"", c->path);
    if (!strcmp(type->valuestring, "default")) return 0;
    if (strcmp(type->valuestring, "linear"))
        return moe_fail(c->err, "%s: field \"rope_scaling\": type \"%s\" is not supported (supported: linear)",
                        c->path, type->valuestring);
    if (!cJSON_IsNumber(factor))
        return moe_fail(c->err, "%s: field \"rope_scaling\": \"factor\" must be a number", c->path);
    hp->rope_scaling = MOE_ROPE_LINEAR;
    hp->rope_factor = (float)factor->valuedouble;
    return 0;
}

/* Qwen-style sparse layer rule: not in mlp_only_layers and (l+1) % step == 0. */
static int parse_layer_kinds(cfg *c, const moe_family *f, moe_hparams *hp) {
    int step = f->has_sparse_step ? int_field(c, "decoder_sparse_step", 0, 1) : 1;
    if (c->failed) return -1;
    if (step < 1) return moe_fail(c->err, "%s: field \"decoder_sparse_step\" = %d must be >= 1", c->path, step);
    for (int l = 0; l < hp->n_layers; l++) hp->layer_is_moe[l] = hp->n_experts > 0 && (l + 1) % step == 0;
    cJSON *only = f->has_sparse_step ? cJSON_GetObjectItemCaseSensitive(c->root, "mlp_only_layers") : NULL;
    if (!only || cJSON_IsNull(only)) return 0;
    if (!cJSON_IsArray(only)) return moe_fail(c->err, "%s: field \"mlp_only_layers\" must be a list", c->path);
    for (cJSON *v = only->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= hp->n_layers)
            return moe_fail(c->err, "%s: field \"mlp_only_layers\" names a layer outside [0, %d)", c->path,
                            hp->n_layers);
        hp->layer_is_moe[(int)v->valuedouble] = 0;
    }
    return 0;
}

const moe_family *moe_family_from_config(const char *path, const char *text, moe_hparams *hp, moe_error *err) {
    cfg c = {path, cJSON_Parse(text), err, 0};
    const moe_family *f = NULL;
    memset(hp, 0, sizeof *hp);
    if (!c.root || !cJSON_IsObject(c.root)) {
        moe_fail(err, "%s: not valid JSON", path);
        goto done;
    }
    cJSON *mt = cJSON_GetObjectItemCaseSensitive(c.root, "model_type");
    if (!cJSON_IsString(mt)) {
        moe_fail(err, "%s: field \"model_type\" is missing", path);
        goto done;
    }
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (!strcmp(mt->valuestring, families[i].model_type)) f = &families[i];
    if (!f) {
        moe_fail(err, "%s: model_type \"%s\" is not supported (supported: %s)", path, mt->valuestring,
                 moe_family_list());
        goto done;
    }
    snprintf(hp->architecture, sizeof hp->architecture, "%s", f->architecture);
    hp->n_vocab = int_field(&c, "vocab_size", 1, 0);
    hp->n_embd = int_field(&c, "hidden_size", 1, 0);
    hp->n_layers = int_field(&c, "num_hidden_layers", 1, 0);
    hp->n_heads = int_field(&c, "num_attention_heads", 1, 1);
    hp->n_kv_heads = int_field(&c, "num_key_value_heads", 0, hp->n_heads);
    hp->head_dim = int_field(&c, "head_dim", 0, hp->n_heads > 0 ? hp->n_embd / hp->n_heads : 0);
    hp->n_ctx_train = int_field(&c, "max_position_embeddings", 1, 0);
    hp->rms_eps = (float)num(&c, "rms_norm_eps", 1, 0);
    hp->rope_theta = (float)num(&c, "rope_theta", 0, 10000.0);
    hp->n_experts = int_field(&c, f->n_experts_key, 1, 0);
    hp->n_experts_used = int_field(&c, "num_experts_per_tok", 1, 0);
    hp->expert_ffn = int_field(&c, f->expert_ffn_key, 1, 0);
    hp->dense_ffn = f->has_sparse_step ? int_field(&c, "intermediate_size", 0, 0) : 0;
    hp->norm_topk = f->norm_topk_default < 0 ? 1 : int_field(&c, "norm_topk_prob", 0, f->norm_topk_default);
    hp->shared_ffn = f->has_shared ? int_field(&c, "shared_expert_intermediate_size", 1, 0) : 0;
    hp->shared_gate = f->has_shared;
    hp->attn_bias = f->attn_bias_always ? 1 : int_field(&c, "attention_bias", 0, 0);
    hp->qk_norm = f->qk_norm;
    hp->clip_qkv = (float)num(&c, "clip_qkv", 0, 0);
    hp->tie_embeddings = int_field(&c, "tie_word_embeddings", 0, 0);
    hp->bos_id = int_field(&c, "bos_token_id", 0, -1);
    hp->eos_id = int_field(&c, "eos_token_id", 0, -1);
    if (c.failed) goto fail;
    if (hp->n_layers < 1 || hp->n_layers > MOE_MAX_LAYERS) {
        moe_fail(err, "%s: field \"num_hidden_layers\" = %d is out of range [1, %d]", path, hp->n_layers,
                 MOE_MAX_LAYERS);
        goto fail;
    }
    if (parse_rope_scaling(&c, hp) || parse_layer_kinds(&c, f, hp)) goto fail;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c.root, "use_sliding_window"))) {
        moe_fail(err, "%s: field \"use_sliding_window\" = true is not supported", path);
        goto fail;
    }
    if (moe_hparams_check(hp, err)) {
        moe_fail_prefix(err, "%s: ", path);
        goto fail;
    }
    goto done;
fail:
    f = NULL;
done:
    cJSON_Delete(c.root);
    return f;
}

static const char *const layer_names[LT_COUNT] = {
    [LT_ATTN_NORM] = "input_layernorm.weight",
    [LT_Q] = "self_attn.q_proj.weight", [LT_K] = "self_attn.k_proj.weight",
    [LT_V] = "self_attn.v_proj.weight", [LT_O] = "self_attn.o_proj.weight",
    [LT_Q_BIAS] = "self_attn.q_proj.bias", [LT_K_BIAS] = "self_attn.k_proj.bias",
    [LT_V_BIAS] = "self_attn.v_proj.bias",
    [LT_Q_NORM] = "self_attn.q_norm.weight", [LT_K_NORM] = "self_attn.k_norm.weight",
    [LT_FFN_NORM] = "post_attention_layernorm.weight",
    [LT_ROUTER] = "%s.gate.weight",
    [LT_DENSE_GATE] = "mlp.gate_proj.weight", [LT_DENSE_UP] = "mlp.up_proj.weight",
    [LT_DENSE_DOWN] = "mlp.down_proj.weight",
    [LT_SHARED_GATE] = "mlp.shared_expert.gate_proj.weight", [LT_SHARED_UP] = "mlp.shared_expert.up_proj.weight",
    [LT_SHARED_DOWN] = "mlp.shared_expert.down_proj.weight", [LT_SHARED_ROUTER] = "mlp.shared_expert_gate.weight",
};

void moe_family_layer_name(const moe_family *f, char *buf, size_t n, int layer, moe_layer_tensor t) {
    int k = snprintf(buf, n, "model.layers.%d.", layer);
    if (k < 0 || (size_t)k >= n) return;
    if (t == LT_ROUTER) snprintf(buf + k, n - (size_t)k, "%s.gate.weight", f->moe_block);
    else snprintf(buf + k, n - (size_t)k, "%s", layer_names[t]);
}

void moe_family_expert_name(const moe_family *f, char *buf, size_t n, int layer, int expert, moe_expert_tensor t) {
    snprintf(buf, n, "model.layers.%d.%s.experts.%d.%s.weight", layer, f->moe_block, expert, f->expert_names[t]);
}
