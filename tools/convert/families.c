/*
 * families.c — config.json parsing and tensor names per family. Semantics come
 * from the transformers modeling files (modeling_mixtral.py,
 * modeling_qwen2_moe.py, modeling_qwen3_moe.py, modeling_olmoe.py) and
 * DeepSeek's own modeling_deepseek.py for V2 and V3; each family sets
 * switches in moe_hparams rather than having code of its own.
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
    int deepseek;                        /* 2 or 3: MLA, DeepSeek routing, dense first layers */
    const char *shared_prefix;           /* "mlp.shared_expert" or "mlp.shared_experts" */
};

static const moe_family families[] = {
    {"mixtral", "MixtralForCausalLM", "block_sparse_moe", {"w1", "w3", "w2"}, "num_local_experts",
     "intermediate_size", -1, 0, 0, 0, MOE_QK_NORM_NONE, 0, "mlp.shared_expert"},
    {"qwen2_moe", "Qwen2MoeForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "num_experts",
     "moe_intermediate_size", 0, 1, 1, 1, MOE_QK_NORM_NONE, 0, "mlp.shared_expert"},
    {"qwen3_moe", "Qwen3MoeForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "num_experts",
     "moe_intermediate_size", 0, 0, 1, 0, MOE_QK_NORM_PER_HEAD, 0, "mlp.shared_expert"},
    {"olmoe", "OlmoeForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "num_experts",
     "intermediate_size", 0, 0, 0, 0, MOE_QK_NORM_FULL, 0, "mlp.shared_expert"},
    {"deepseek_v2", "DeepseekV2ForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "n_routed_experts",
     "moe_intermediate_size", 0, 0, 0, 0, MOE_QK_NORM_NONE, 2, "mlp.shared_experts"},
    {"deepseek_v3", "DeepseekV3ForCausalLM", "mlp", {"gate_proj", "up_proj", "down_proj"}, "n_routed_experts",
     "moe_intermediate_size", 1, 0, 0, 0, MOE_QK_NORM_NONE, 3, "mlp.shared_experts"},
};
#define N_FAMILIES (sizeof families / sizeof *families)

const char *moe_family_list(void) { return "mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3"; }

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

static double sub_num(cfg *c, const cJSON *obj, const char *obj_key, const char *key, int required, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required && !c->failed) moe_fail(c->err, "%s: field \"%s\" has no \"%s\"", c->path, obj_key, key);
        c->failed |= required;
        return dflt;
    }
    if (!cJSON_IsNumber(v)) {
        if (!c->failed) moe_fail(c->err, "%s: field \"%s\": \"%s\" must be a number", c->path, obj_key, key);
        c->failed = 1;
        return dflt;
    }
    return v->valuedouble;
}

static int parse_rope_scaling(cfg *c, const moe_family *f, moe_hparams *hp) {
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return 0;
    cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (!cJSON_IsString(type))
        return moe_fail(c->err, "%s: field \"rope_scaling\" has no \"rope_type\"", c->path);
    if (!strcmp(type->valuestring, "default")) return 0;
    if (f->deepseek && !strcmp(type->valuestring, "yarn")) {
        hp->rope_scaling = MOE_ROPE_YARN;
        hp->rope_factor = (float)sub_num(c, rs, "rope_scaling", "factor", 1, 1);
        hp->yarn_orig_ctx = (int32_t)sub_num(c, rs, "rope_scaling", "original_max_position_embeddings", 1, 4096);
        hp->yarn_beta_fast = (float)sub_num(c, rs, "rope_scaling", "beta_fast", 0, 32);
        hp->yarn_beta_slow = (float)sub_num(c, rs, "rope_scaling", "beta_slow", 0, 1);
        hp->yarn_mscale = (float)sub_num(c, rs, "rope_scaling", "mscale", 0, 1);
        hp->yarn_mscale_all_dim = (float)sub_num(c, rs, "rope_scaling", "mscale_all_dim", 0, 0);
        return c->failed ? -1 : 0;
    }
    if (strcmp(type->valuestring, "linear"))
        return moe_fail(c->err, "%s: field \"rope_scaling\": type \"%s\" is not supported (supported: linear%s)",
                        c->path, type->valuestring, f->deepseek ? ", yarn" : "");
    if (!cJSON_IsNumber(factor))
        return moe_fail(c->err, "%s: field \"rope_scaling\": \"factor\" must be a number", c->path);
    hp->rope_scaling = MOE_ROPE_LINEAR;
    hp->rope_factor = (float)factor->valuedouble;
    return 0;
}

/* Qwen-style sparse layer rule: not in mlp_only_layers and (l+1) % step == 0. */
static int parse_layer_kinds(cfg *c, const moe_family *f, moe_hparams *hp) {
    if (f->deepseek) { /* DeepSeek: dense until first_k_dense_replace, then every moe_layer_freq-th */
        int first = int_field(c, "first_k_dense_replace", 0, 0), freq = int_field(c, "moe_layer_freq", 0, 1);
        if (c->failed) return -1;
        if (freq < 1) return moe_fail(c->err, "%s: field \"moe_layer_freq\" = %d must be >= 1", c->path, freq);
        for (int l = 0; l < hp->n_layers; l++) hp->layer_is_moe[l] = hp->n_experts > 0 && l >= first && l % freq == 0;
        return 0;
    }
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

static const char *str_field(cfg *c, const char *key, const char *dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* MLA, DeepSeek's routing and shared experts (modeling_deepseek.py). */
static int parse_deepseek(cfg *c, const moe_family *f, moe_hparams *hp) {
    hp->attn_kind = MOE_ATTN_MLA;
    hp->q_lora_rank = int_field(c, "q_lora_rank", 0, 0); /* null in V2-Lite: q projected directly */
    hp->kv_lora_rank = int_field(c, "kv_lora_rank", 1, 0);
    hp->qk_nope_dim = int_field(c, "qk_nope_head_dim", 1, 0);
    hp->qk_rope_dim = int_field(c, "qk_rope_head_dim", 1, 0);
    hp->v_head_dim = int_field(c, "v_head_dim", 1, 0);
    hp->head_dim = hp->qk_nope_dim + hp->qk_rope_dim;
    hp->n_kv_heads = hp->n_heads;
    hp->rope_interleaved = 1;
    hp->dense_ffn = int_field(c, "intermediate_size", 1, 0);
    hp->shared_ffn = int_field(c, "n_shared_experts", 0, 0) * hp->expert_ffn;
    hp->shared_gate = 0;
    const int norm = int_field(c, "norm_topk_prob", 0, f->norm_topk_default);
    const double scale = num(c, "routed_scaling_factor", 0, 1.0);
    const char *scoring = str_field(c, "scoring_func", "softmax"), *method = str_field(c, "topk_method", "greedy");
    if (c->failed) return -1;
    if (hp->attn_bias) return moe_fail(c->err, "%s: field \"attention_bias\" = true is not supported", c->path);
    if (!strcmp(scoring, "sigmoid")) hp->router_func = MOE_ROUTER_SIGMOID;
    else if (strcmp(scoring, "softmax"))
        return moe_fail(c->err, "%s: scoring_func \"%s\" is not supported (softmax, sigmoid)", c->path, scoring);
    if (!strcmp(method, "group_limited_greedy") || !strcmp(method, "noaux_tc")) {
        hp->n_groups = int_field(c, "n_group", 1, 1);
        hp->topk_groups = int_field(c, "topk_group", 1, 1);
        hp->group_score = !strcmp(method, "noaux_tc") ? MOE_GROUP_TOP2_SUM : MOE_GROUP_MAX;
        hp->router_bias = !strcmp(method, "noaux_tc");
    } else if (strcmp(method, "greedy")) {
        return moe_fail(c->err, "%s: topk_method \"%s\" is not supported (greedy, group_limited_greedy, noaux_tc)",
                        c->path, method);
    }
    hp->norm_topk = norm;
    /* V3 scales after renormalizing; V2 scales only weights it does not renormalize. */
    hp->routed_scale = (float)(f->deepseek == 3 || !(norm && hp->n_experts_used > 1) ? scale : 1.0);
    return c->failed ? -1 : 0;
}

/* quantization_config: only FP8 with square blocks (DeepSeek-V3's) is read. */
static int parse_quantization(cfg *c, int *fp8_block) {
    *fp8_block = 128;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(c->root, "quantization_config");
    if (!q || cJSON_IsNull(q)) return 0;
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "fmt");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    if (!cJSON_IsString(method) || strcmp(method->valuestring, "fp8") || (fmt && (!cJSON_IsString(fmt) ||
        strcmp(fmt->valuestring, "e4m3"))))
        return moe_fail(c->err, "%s: quantization_config: only quant_method \"fp8\" with fmt \"e4m3\" is supported",
                        c->path);
    if (bs) {
        const cJSON *b0 = cJSON_GetArrayItem(bs, 0), *b1 = cJSON_GetArrayItem(bs, 1);
        if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2 || !cJSON_IsNumber(b0) || !cJSON_IsNumber(b1) ||
            b0->valueint != b1->valueint || b0->valueint < 1)
            return moe_fail(c->err, "%s: quantization_config.weight_block_size must be [B, B]", c->path);
        *fp8_block = b0->valueint;
    }
    return 0;
}

const moe_family *moe_family_from_config(const char *path, const char *text, moe_hparams *hp, int *fp8_block,
                                         int *n_mtp_layers, moe_error *err) {
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
    hp->n_groups = hp->topk_groups = 1;
    hp->routed_scale = 1.0f;
    if (f->deepseek && !c.failed && parse_deepseek(&c, f, hp)) goto fail;
    hp->bos_id = int_field(&c, "bos_token_id", 0, -1);
    hp->eos_id = int_field(&c, "eos_token_id", 0, -1);
    if (c.failed) goto fail;
    if (hp->n_layers < 1 || hp->n_layers > MOE_MAX_LAYERS) {
        moe_fail(err, "%s: field \"num_hidden_layers\" = %d is out of range [1, %d]", path, hp->n_layers,
                 MOE_MAX_LAYERS);
        goto fail;
    }
    if (parse_rope_scaling(&c, f, hp) || parse_layer_kinds(&c, f, hp) || parse_quantization(&c, fp8_block)) goto fail;
    *n_mtp_layers = f->deepseek ? int_field(&c, "num_nextn_predict_layers", 0, 0) : 0;
    if (c.failed) goto fail;
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
    [LT_ROUTER] = "%s.gate.weight", /* %s: the family's moe_block (or shared_prefix for shared experts) */
    [LT_DENSE_GATE] = "mlp.gate_proj.weight", [LT_DENSE_UP] = "mlp.up_proj.weight",
    [LT_DENSE_DOWN] = "mlp.down_proj.weight",
    [LT_SHARED_GATE] = "%s.gate_proj.weight", [LT_SHARED_UP] = "%s.up_proj.weight",
    [LT_SHARED_DOWN] = "%s.down_proj.weight", [LT_SHARED_ROUTER] = "mlp.shared_expert_gate.weight",
    [LT_Q_A] = "self_attn.q_a_proj.weight", [LT_Q_A_NORM] = "self_attn.q_a_layernorm.weight",
    [LT_Q_B] = "self_attn.q_b_proj.weight", [LT_KV_A] = "self_attn.kv_a_proj_with_mqa.weight",
    [LT_KV_A_NORM] = "self_attn.kv_a_layernorm.weight",
    [LT_K_B] = "self_attn.kv_b_proj.weight", [LT_V_B] = "self_attn.kv_b_proj.weight", /* slices of it */
    [LT_ROUTER_BIAS] = "%s.gate.e_score_correction_bias",
};

void moe_family_layer_name(const moe_family *f, char *buf, size_t n, int layer, moe_layer_tensor t) {
    int k = snprintf(buf, n, "model.layers.%d.", layer);
    if (k < 0 || (size_t)k >= n) return;
    const int shared = t == LT_SHARED_GATE || t == LT_SHARED_UP || t == LT_SHARED_DOWN;
    const char *arg = shared ? f->shared_prefix : f->moe_block;
    snprintf(buf + k, n - (size_t)k, layer_names[t], arg); /* a name without %s ignores arg */
}

void moe_family_expert_name(const moe_family *f, char *buf, size_t n, int layer, int expert, moe_expert_tensor t) {
    snprintf(buf, n, "model.layers.%d.%s.experts.%d.%s.weight", layer, f->moe_block, expert, f->expert_names[t]);
}
