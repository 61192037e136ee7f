/*
 * schema.c — what a .moe model consists of, shared by the converter (which
 * writes it) and the runtime (which reads it): the metadata key of every
 * hyperparameter, and the canonical tensors of a layer with their shapes and
 * the switches that make them present.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "util/error.h"

typedef struct hparam_field {
    const char *key;
    size_t offset;
    char kind; /* 'i' int32, 'f' float */
} hparam_field;

#define HP(key, field, kind) {key, offsetof(moe_hparams, field), kind}
static const hparam_field hparam_fields[] = {
    HP("moe.n_vocab", n_vocab, 'i'),
    HP("moe.n_embd", n_embd, 'i'),
    HP("moe.n_layers", n_layers, 'i'),
    HP("moe.n_heads", n_heads, 'i'),
    HP("moe.n_kv_heads", n_kv_heads, 'i'),
    HP("moe.head_dim", head_dim, 'i'),
    HP("moe.n_ctx_train", n_ctx_train, 'i'),
    HP("moe.rms_eps", rms_eps, 'f'),
    HP("moe.rope_theta", rope_theta, 'f'),
    HP("moe.rope_scaling", rope_scaling, 'i'),
    HP("moe.rope_factor", rope_factor, 'f'),
    HP("moe.rope_interleaved", rope_interleaved, 'i'),
    HP("moe.yarn_orig_ctx", yarn_orig_ctx, 'i'),
    HP("moe.yarn_beta_fast", yarn_beta_fast, 'f'),
    HP("moe.yarn_beta_slow", yarn_beta_slow, 'f'),
    HP("moe.yarn_mscale", yarn_mscale, 'f'),
    HP("moe.yarn_mscale_all_dim", yarn_mscale_all_dim, 'f'),
    HP("moe.qk_norm", qk_norm, 'i'),
    HP("moe.clip_qkv", clip_qkv, 'f'),
    HP("moe.attn_bias", attn_bias, 'i'),
    HP("moe.attn_kind", attn_kind, 'i'),
    HP("moe.q_lora_rank", q_lora_rank, 'i'),
    HP("moe.kv_lora_rank", kv_lora_rank, 'i'),
    HP("moe.qk_nope_dim", qk_nope_dim, 'i'),
    HP("moe.qk_rope_dim", qk_rope_dim, 'i'),
    HP("moe.v_head_dim", v_head_dim, 'i'),
    HP("moe.n_experts", n_experts, 'i'),
    HP("moe.n_experts_used", n_experts_used, 'i'),
    HP("moe.expert_ffn", expert_ffn, 'i'),
    HP("moe.dense_ffn", dense_ffn, 'i'),
    HP("moe.shared_ffn", shared_ffn, 'i'),
    HP("moe.shared_gate", shared_gate, 'i'),
    HP("moe.norm_topk", norm_topk, 'i'),
    HP("moe.router_func", router_func, 'i'),
    HP("moe.router_bias", router_bias, 'i'),
    HP("moe.n_groups", n_groups, 'i'),
    HP("moe.topk_groups", topk_groups, 'i'),
    HP("moe.group_score", group_score, 'i'),
    HP("moe.routed_scale", routed_scale, 'f'),
    HP("moe.tie_embeddings", tie_embeddings, 'i'),
    HP("moe.bos_id", bos_id, 'i'),
    HP("moe.eos_id", eos_id, 'i'),
};
#undef HP
#define N_FIELDS (sizeof hparam_fields / sizeof *hparam_fields)

void moe_hparams_write(const moe_hparams *hp, moef_writer *w) {
    moef_meta_put_str(w, "general.architecture", hp->architecture);
    for (size_t i = 0; i < N_FIELDS; i++) {
        const void *p = (const char *)hp + hparam_fields[i].offset;
        if (hparam_fields[i].kind == 'i') moef_meta_put_i32(w, hparam_fields[i].key, *(const int32_t *)p);
        else moef_meta_put_f32(w, hparam_fields[i].key, *(const float *)p);
    }
    moef_meta_put_u8_array(w, "moe.layer_is_moe", hp->layer_is_moe, (uint64_t)hp->n_layers);
}

int moe_hparams_read(moe_hparams *hp, const moef_file *f, moe_error *err) {
    memset(hp, 0, sizeof *hp);
    const char *arch = moef_meta_str(f, "general.architecture");
    if (!arch) return moe_fail(err, "%s: metadata \"general.architecture\" is missing", f->path);
    snprintf(hp->architecture, sizeof hp->architecture, "%s", arch);
    for (size_t i = 0; i < N_FIELDS; i++) {
        void *p = (char *)hp + hparam_fields[i].offset;
        if (hparam_fields[i].kind == 'i') {
            int64_t v;
            if (moef_meta_i64(f, hparam_fields[i].key, &v, err)) return -1;
            if (v < INT32_MIN || v > INT32_MAX)
                return moe_fail(err, "%s: metadata \"%s\" = %lld is out of range", f->path,
                                hparam_fields[i].key, (long long)v);
            *(int32_t *)p = (int32_t)v;
        } else {
            double v;
            if (moef_meta_f64(f, hparam_fields[i].key, &v, err)) return -1;
            *(float *)p = (float)v;
        }
    }
    if (hp->n_layers < 1 || hp->n_layers > MOE_MAX_LAYERS)
        return moe_fail(err, "%s: metadata \"moe.n_layers\" = %d is out of range", f->path, hp->n_layers);
    const moef_meta *m = moef_meta_find(f, "moe.layer_is_moe");
    if (!m || m->type != MOEF_ARR || m->count != (uint64_t)hp->n_layers)
        return moe_fail(err, "%s: metadata \"moe.layer_is_moe\" is missing or not %d entries long",
                        f->path, hp->n_layers);
    for (int l = 0; l < hp->n_layers; l++) {
        int64_t v;
        if (moef_meta_arr_i64(m, (uint64_t)l, &v))
            return moe_fail(err, "%s: metadata \"moe.layer_is_moe\" is not an integer array", f->path);
        hp->layer_is_moe[l] = v != 0;
    }
    if (moe_hparams_check(hp, err)) return moe_fail_prefix(err, "%s: ", f->path);
    return 0;
}

static int imax(int a, int b) { return a > b ? a : b; }

int moe_hparams_check(const moe_hparams *hp, moe_error *err) {
    struct { const char *name; int32_t v, lo, hi; } r[] = {
        {"vocab_size", hp->n_vocab, 1, 1 << 24},
        {"hidden_size", hp->n_embd, 1, 1 << 20},
        {"num_hidden_layers", hp->n_layers, 1, MOE_MAX_LAYERS},
        {"num_attention_heads", hp->n_heads, 1, 1 << 12},
        {"num_key_value_heads", hp->n_kv_heads, 1, hp->n_heads},
        {"head_dim", hp->head_dim, 2, 1 << 12},
        {"max_position_embeddings", hp->n_ctx_train, 1, 1 << 30},
        {"num_experts", hp->n_experts, 0, 1 << 12},
        {"num_experts_per_tok", hp->n_experts_used, hp->n_experts ? 1 : 0, hp->n_experts},
        {"expert intermediate size", hp->expert_ffn, 0, 1 << 20},
        {"intermediate_size", hp->dense_ffn, 0, 1 << 20},
        {"shared_expert_intermediate_size", hp->shared_ffn, 0, 1 << 20},
        {"qk norm kind", hp->qk_norm, 0, MOE_QK_NORM_FULL},
        {"rope scaling kind", hp->rope_scaling, 0, MOE_ROPE_YARN},
        {"attention kind", hp->attn_kind, 0, MOE_ATTN_MLA},
        {"router scoring function", hp->router_func, 0, MOE_ROUTER_SIGMOID},
        {"group scoring", hp->group_score, 0, MOE_GROUP_TOP2_SUM},
        {"n_group", hp->n_groups, 1, imax(hp->n_experts, 1)},
        {"topk_group", hp->topk_groups, 1, hp->n_groups},
    };
    for (size_t i = 0; i < sizeof r / sizeof *r; i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi)
            return moe_fail(err, "%s = %d is out of range [%d, %d]", r[i].name, r[i].v, r[i].lo, r[i].hi);
    if (hp->head_dim % 2) return moe_fail(err, "head_dim = %d must be even for RoPE", hp->head_dim);
    if (hp->n_experts % hp->n_groups)
        return moe_fail(err, "n_routed_experts = %d is not a multiple of n_group = %d", hp->n_experts, hp->n_groups);
    if (hp->group_score == MOE_GROUP_TOP2_SUM && hp->n_groups > 1 && hp->n_experts / hp->n_groups < 2)
        return moe_fail(err, "n_group = %d leaves fewer than 2 experts per group", hp->n_groups);
    if (hp->n_experts && hp->n_experts_used > hp->topk_groups * (hp->n_experts / hp->n_groups))
        return moe_fail(err, "num_experts_per_tok = %d exceeds the experts of topk_group = %d groups",
                        hp->n_experts_used, hp->topk_groups);
    if (!(hp->routed_scale > 0)) return moe_fail(err, "routed_scaling_factor = %g must be positive", hp->routed_scale);
    if (hp->attn_kind == MOE_ATTN_MLA) {
        struct { const char *name; int32_t v, lo; } mla[] = {
            {"kv_lora_rank", hp->kv_lora_rank, 1}, {"q_lora_rank", hp->q_lora_rank, 0},
            {"qk_nope_head_dim", hp->qk_nope_dim, 1}, {"qk_rope_head_dim", hp->qk_rope_dim, 2},
            {"v_head_dim", hp->v_head_dim, 1}};
        for (size_t i = 0; i < sizeof mla / sizeof *mla; i++)
            if (mla[i].v < mla[i].lo || mla[i].v > 1 << 16)
                return moe_fail(err, "%s = %d is out of range [%d, %d]", mla[i].name, mla[i].v, mla[i].lo, 1 << 16);
        if (hp->qk_rope_dim % 2) return moe_fail(err, "qk_rope_head_dim = %d must be even", hp->qk_rope_dim);
        /* per-head row blocks of the folded kv_b start on a quantized row group (4 rows) */
        if (hp->kv_lora_rank % 4 || hp->v_head_dim % 4)
            return moe_fail(err, "kv_lora_rank = %d and v_head_dim = %d must be multiples of 4", hp->kv_lora_rank,
                            hp->v_head_dim);
        if (hp->head_dim != hp->qk_nope_dim + hp->qk_rope_dim || hp->n_kv_heads != hp->n_heads)
            return moe_fail(err, "MLA: head_dim must be qk_nope_head_dim + qk_rope_head_dim, one kv head per head");
    }
    if (hp->rope_scaling == MOE_ROPE_YARN && !(hp->rope_factor > 0 && hp->yarn_orig_ctx > 0))
        return moe_fail(err, "rope_scaling yarn: factor = %g and original_max_position_embeddings = %d must be positive",
                        hp->rope_factor, hp->yarn_orig_ctx);
    if (hp->n_heads % hp->n_kv_heads)
        return moe_fail(err, "num_attention_heads = %d is not a multiple of num_key_value_heads = %d",
                        hp->n_heads, hp->n_kv_heads);
    if (!(hp->rms_eps > 0)) return moe_fail(err, "rms_norm_eps = %g must be positive", hp->rms_eps);
    if (!(hp->rope_theta > 0)) return moe_fail(err, "rope_theta = %g must be positive", hp->rope_theta);
    if (hp->rope_scaling == MOE_ROPE_LINEAR && !(hp->rope_factor > 0))
        return moe_fail(err, "rope_scaling factor = %g must be positive", hp->rope_factor);
    for (int l = 0; l < hp->n_layers; l++) {
        if (hp->layer_is_moe[l] && (hp->n_experts < 1 || hp->expert_ffn < 1))
            return moe_fail(err, "layer %d is a MoE layer but the model has no experts", l);
        if (!hp->layer_is_moe[l] && hp->dense_ffn < 1)
            return moe_fail(err, "layer %d is dense but intermediate_size is 0", l);
    }
    return 0;
}

static const char *const layer_suffix[LT_COUNT] = {
    [LT_ATTN_NORM] = "attn_norm", [LT_Q] = "attn_q", [LT_K] = "attn_k", [LT_V] = "attn_v",
    [LT_O] = "attn_o", [LT_Q_BIAS] = "attn_q_bias", [LT_K_BIAS] = "attn_k_bias",
    [LT_V_BIAS] = "attn_v_bias", [LT_Q_NORM] = "attn_q_norm", [LT_K_NORM] = "attn_k_norm",
    [LT_FFN_NORM] = "ffn_norm", [LT_ROUTER] = "router", [LT_DENSE_GATE] = "ffn_gate",
    [LT_DENSE_UP] = "ffn_up", [LT_DENSE_DOWN] = "ffn_down", [LT_SHARED_GATE] = "shexp_gate",
    [LT_SHARED_UP] = "shexp_up", [LT_SHARED_DOWN] = "shexp_down", [LT_SHARED_ROUTER] = "shexp_router",
    [LT_Q_A] = "attn_q_a", [LT_Q_A_NORM] = "attn_q_a_norm", [LT_Q_B] = "attn_q_b", [LT_KV_A] = "attn_kv_a",
    [LT_KV_A_NORM] = "attn_kv_a_norm", [LT_K_B] = "attn_k_b", [LT_V_B] = "attn_v_b", [LT_ROUTER_BIAS] = "router_bias",
};
static const char *const expert_suffix[ET_COUNT] = {[ET_GATE] = "gate", [ET_UP] = "up", [ET_DOWN] = "down"};

void moe_layer_tensor_name(char *buf, size_t n, int layer, moe_layer_tensor t) {
    snprintf(buf, n, "blk.%d.%s", layer, layer_suffix[t]);
}

void moe_expert_tensor_name(char *buf, size_t n, int layer, int expert, moe_expert_tensor t) {
    snprintf(buf, n, "blk.%d.exp.%d.%s", layer, expert, expert_suffix[t]);
}

int moe_tensor_is_vector(moe_layer_tensor t) {
    switch (t) {
    case LT_ATTN_NORM: case LT_FFN_NORM: case LT_Q_BIAS: case LT_K_BIAS: case LT_V_BIAS:
    case LT_Q_NORM: case LT_K_NORM: case LT_Q_A_NORM: case LT_KV_A_NORM: case LT_ROUTER_BIAS:
        return 1;
    default:
        return 0;
    }
}

int moe_layer_tensor_present(const moe_hparams *hp, int layer, moe_layer_tensor t) {
    const int moe = hp->layer_is_moe[layer], mla = hp->attn_kind == MOE_ATTN_MLA;
    switch (t) {
    case LT_Q: return !mla || hp->q_lora_rank == 0;
    case LT_K: case LT_V: return !mla;
    case LT_Q_A: case LT_Q_A_NORM: case LT_Q_B: return mla && hp->q_lora_rank > 0;
    case LT_KV_A: case LT_KV_A_NORM: case LT_K_B: case LT_V_B: return mla;
    case LT_ROUTER_BIAS: return moe && hp->router_bias;
    case LT_Q_BIAS: case LT_K_BIAS: case LT_V_BIAS: return hp->attn_bias;
    case LT_Q_NORM: case LT_K_NORM: return hp->qk_norm != MOE_QK_NORM_NONE;
    case LT_ROUTER: return moe;
    case LT_DENSE_GATE: case LT_DENSE_UP: case LT_DENSE_DOWN: return !moe;
    case LT_SHARED_GATE: case LT_SHARED_UP: case LT_SHARED_DOWN: return moe && hp->shared_ffn > 0;
    case LT_SHARED_ROUTER: return moe && hp->shared_ffn > 0 && hp->shared_gate;
    default: return 1;
    }
}

void moe_layer_tensor_shape(const moe_hparams *hp, moe_layer_tensor t, int64_t *rows, int64_t *cols) {
    const int64_t e = hp->n_embd, q = (int64_t)hp->n_heads * hp->head_dim, kv = (int64_t)hp->n_kv_heads * hp->head_dim;
    const int64_t att_out = hp->attn_kind == MOE_ATTN_MLA ? (int64_t)hp->n_heads * hp->v_head_dim : q;
    const int64_t rank = hp->kv_lora_rank;
    int per_head = hp->qk_norm == MOE_QK_NORM_PER_HEAD;
    int64_t r = 1, c = 1;
    switch (t) {
    case LT_ATTN_NORM: case LT_FFN_NORM: c = e; break;
    case LT_Q: r = q; c = e; break;
    case LT_K: case LT_V: r = kv; c = e; break;
    case LT_O: r = e; c = att_out; break;
    case LT_Q_BIAS: c = q; break;
    case LT_K_BIAS: case LT_V_BIAS: c = kv; break;
    case LT_Q_NORM: c = per_head ? hp->head_dim : q; break;
    case LT_K_NORM: c = per_head ? hp->head_dim : kv; break;
    case LT_ROUTER: r = hp->n_experts; c = e; break;
    case LT_DENSE_GATE: case LT_DENSE_UP: r = hp->dense_ffn; c = e; break;
    case LT_DENSE_DOWN: r = e; c = hp->dense_ffn; break;
    case LT_SHARED_GATE: case LT_SHARED_UP: r = hp->shared_ffn; c = e; break;
    case LT_SHARED_DOWN: r = e; c = hp->shared_ffn; break;
    case LT_SHARED_ROUTER: r = 1; c = e; break;
    case LT_Q_A: r = hp->q_lora_rank; c = e; break;
    case LT_Q_A_NORM: c = hp->q_lora_rank; break;
    case LT_Q_B: r = q; c = hp->q_lora_rank; break;
    case LT_KV_A: r = rank + hp->qk_rope_dim; c = e; break;
    case LT_KV_A_NORM: c = rank; break;
    case LT_K_B: r = hp->n_heads * rank; c = hp->qk_nope_dim; break;
    case LT_V_B: r = (int64_t)hp->n_heads * hp->v_head_dim; c = rank; break;
    case LT_ROUTER_BIAS: c = hp->n_experts; break;
    case LT_COUNT: break;
    }
    *rows = r;
    *cols = c;
}

void moe_expert_tensor_shape(const moe_hparams *hp, moe_expert_tensor t, int64_t *rows, int64_t *cols) {
    *rows = t == ET_DOWN ? hp->n_embd : hp->expert_ffn;
    *cols = t == ET_DOWN ? hp->expert_ffn : hp->n_embd;
}
