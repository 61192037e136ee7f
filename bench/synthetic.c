/*
 * synthetic.c — see synthetic.h. Shapes are those of each model's
 * config.json. Weights are random but plausible: quantized blocks get random
 * quants and scales near those of a trained matrix (|w| ~ 0.02), float
 * tensors uniform values of the same size, norms 1 and biases 0, so the
 * forward pass stays finite and routing is spread over all experts.
 */
#include "synthetic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/format.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/half.h"

typedef struct shape {
    const char *name, *architecture;
    int vocab, embd, layers, heads, kv_heads, head_dim, experts, used, expert_ffn, shared_ffn;
    float theta;
    moe_qk_norm qk_norm;
    int norm_topk;
} shape;

static const shape shapes[] = {
    /* allenai/OLMoE-1B-7B-0924 */
    {"olmoe-1b-7b", "OlmoeForCausalLM", 50304, 2048, 16, 16, 16, 128, 64, 8, 1024, 0, 10000.0f, MOE_QK_NORM_FULL, 0},
    /* mistralai/Mixtral-8x7B-v0.1 */
    {"mixtral-8x7b", "MixtralForCausalLM", 32000, 4096, 32, 32, 8, 128, 8, 2, 14336, 0, 1e6f, MOE_QK_NORM_NONE, 1},
    /* Qwen/Qwen3-30B-A3B */
    {"qwen3-30b-a3b", "Qwen3MoeForCausalLM", 151936, 2048, 48, 32, 4, 128, 128, 8, 768, 0, 1e6f, MOE_QK_NORM_PER_HEAD, 1},
    /* Qwen/Qwen1.5-MoE-A2.7B */
    {"qwen1.5-moe-a2.7b", "Qwen2MoeForCausalLM", 151936, 2048, 24, 16, 16, 128, 60, 4, 1408, 5632, 1e6f, MOE_QK_NORM_NONE, 0},
};
#define N_SHAPES (sizeof shapes / sizeof *shapes)

const char *moe_synthetic_names(void) {
    return "olmoe-1b-7b, mixtral-8x7b, qwen3-30b-a3b, qwen1.5-moe-a2.7b, deepseek-v2-lite";
}

/* deepseek-ai/DeepSeek-V2-Lite: MLA without q compression, 2 shared experts,
 * a dense first layer, YaRN; greedy softmax routing, no renormalization. */
static void deepseek_v2_lite(moe_hparams *hp, int n_layers) {
    *hp = (moe_hparams){.n_vocab = 102400, .n_embd = 2048, .n_layers = n_layers > 0 ? n_layers : 27, .n_heads = 16,
                        .n_kv_heads = 16, .head_dim = 192, .n_ctx_train = 4096, .rms_eps = 1e-6f, .rope_theta = 10000.0f,
                        .rope_scaling = MOE_ROPE_YARN, .rope_factor = 40.0f, .rope_interleaved = 1, .yarn_orig_ctx = 4096,
                        .yarn_beta_fast = 32.0f, .yarn_beta_slow = 1.0f, .yarn_mscale = 0.707f,
                        .yarn_mscale_all_dim = 0.707f, .attn_kind = MOE_ATTN_MLA, .kv_lora_rank = 512, .qk_nope_dim = 128,
                        .qk_rope_dim = 64, .v_head_dim = 128, .n_experts = 64, .n_experts_used = 6, .expert_ffn = 1408,
                        .dense_ffn = 10944, .shared_ffn = 2 * 1408, .n_groups = 1, .topk_groups = 1, .routed_scale = 1.0f,
                        .bos_id = -1, .eos_id = -1};
    snprintf(hp->architecture, sizeof hp->architecture, "DeepseekV2ForCausalLM");
    for (int l = 1; l < hp->n_layers; l++) hp->layer_is_moe[l] = 1;
}

int moe_synthetic_hparams(const char *name, int n_layers, moe_hparams *hp, moe_error *err) {
    const shape *s = NULL;
    for (size_t i = 0; i < N_SHAPES; i++)
        if (!strcmp(name, shapes[i].name)) s = &shapes[i];
    if (!s && !strcmp(name, "deepseek-v2-lite")) {
        deepseek_v2_lite(hp, n_layers);
        return moe_hparams_check(hp, err);
    }
    if (!s) return moe_fail(err, "--synthetic %s: unknown model (known: %s)", name, moe_synthetic_names());
    *hp = (moe_hparams){0};
    snprintf(hp->architecture, sizeof hp->architecture, "%s", s->architecture);
    hp->n_vocab = s->vocab;
    hp->n_embd = s->embd;
    hp->n_layers = n_layers > 0 ? n_layers : s->layers;
    hp->n_heads = s->heads;
    hp->n_kv_heads = s->kv_heads;
    hp->head_dim = s->head_dim;
    hp->n_ctx_train = 4096;
    hp->rms_eps = 1e-6f;
    hp->rope_theta = s->theta;
    hp->qk_norm = s->qk_norm;
    hp->attn_bias = s->shared_ffn > 0; /* the Qwen2-MoE shape */
    hp->n_experts = s->experts;
    hp->n_experts_used = s->used;
    hp->expert_ffn = s->expert_ffn;
    hp->shared_ffn = s->shared_ffn;
    hp->shared_gate = s->shared_ffn > 0;
    hp->norm_topk = s->norm_topk;
    hp->n_groups = hp->topk_groups = 1;
    hp->routed_scale = 1.0f;
    hp->bos_id = hp->eos_id = -1;
    for (int l = 0; l < hp->n_layers; l++) hp->layer_is_moe[l] = 1;
    return moe_hparams_check(hp, err);
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s, float amp) { return ((float)(splitmix(s) >> 40) / 16777216.0f * 2 - 1) * amp; }

/* Skewed routing (see synthetic.h). Lane 0 of the hidden state carries a
 * constant SKEW_LANE in every embedding row, large next to what random
 * layers add to the residual stream (0.2-0.4 rms per layer), so after
 * RMSNorm it is a steady positive value (about 3 with 4 layers, more in the first layers). Each
 * router row puts its expert's Zipf bias there. Lanes 1..SKEW_TOPICS carry the
 * token's topic (ids in contiguous ranges), which raises the router logits of
 * one expert in SKEW_TOPICS by about SKEW_TOPIC_GAIN: tokens of one topic
 * share experts, and a token stream that stays in a topic (moe-bench's decode
 * stream) routes alike from one token to the next. */
#define SKEW_LANE 1.5f
#define SKEW_XN 3.0f           /* the normalized lane value the router columns assume (4 layers) */
#define SKEW_TOPICS 8
#define SKEW_TOPIC_GAIN 0.8f

static int topic_of(int64_t token, int64_t n_vocab) { return (int)(token * SKEW_TOPICS / n_vocab); }

/* Adds the skew lanes to rows [r0, r0 + n) of a float tensor. */
static void skew_rows(float *p, const moe_tensor_spec *s, int64_t r0, int64_t n, double skew, uint64_t seed) {
    if (s->kind == MOE_SPEC_EMBED) {
        for (int64_t r = 0; r < n; r++) {
            p[r * s->cols] = SKEW_LANE;
            p[r * s->cols + 1 + topic_of(r0 + r, s->rows)] = SKEW_LANE;
        }
    } else { /* a router: rows are experts */
        /* a random rank per expert, different in each layer: bias -skew ln(rank) */
        const int64_t ne = s->rows;
        int32_t *rank = malloc((size_t)ne * sizeof *rank);
        if (!rank) return;
        for (int64_t e = 0; e < ne; e++) rank[e] = (int32_t)e;
        uint64_t st = seed ^ 0x5eed;
        for (int64_t e = ne - 1; e > 0; e--) {
            const int64_t j = (int64_t)(splitmix(&st) % (uint64_t)(e + 1));
            const int32_t t = rank[e];
            rank[e] = rank[j];
            rank[j] = t;
        }
        for (int64_t r = 0; r < n; r++) {
            const int64_t e = r0 + r;
            p[r * s->cols] = (float)(-skew * log((double)rank[e] + 1.0)) / SKEW_XN;
            p[r * s->cols + 1 + e % SKEW_TOPICS] += SKEW_TOPIC_GAIN / SKEW_XN;
        }
        free(rank);
    }
}

static int skewed(const moe_tensor_spec *s, double skew) {
    return skew > 0 && (s->kind == MOE_SPEC_EMBED || (s->kind == MOE_SPEC_LAYER && s->id == LT_ROUTER));
}

/* Random content for one tensor; chunks of rows are generated in parallel,
 * each from its own seed, so the result does not depend on the threads. */
static void fill(uint8_t *dst, moe_dtype t, const moe_tensor_spec *s, uint64_t seed, double skew) {
    const float amp = 0.035f;
    if (s->vector) {
        for (int64_t i = 0; i < s->cols; i++) ((float *)dst)[i] = s->id == LT_ATTN_NORM || s->id == LT_FFN_NORM ||
                                                                    s->id == LT_Q_NORM || s->id == LT_K_NORM ||
                                                                    s->kind == MOE_SPEC_OUTPUT_NORM ? 1.0f : 0.0f;
        return;
    }
    const int64_t rows_per_chunk = 64;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < s->rows; r0 += rows_per_chunk) {
        uint64_t st = seed * 0x100000001b3ull + (uint64_t)r0;
        const int64_t n = s->rows - r0 < rows_per_chunk ? s->rows - r0 : rows_per_chunk;
        uint8_t *p = dst + moe_tensor_bytes(t, (uint64_t)r0, (uint64_t)s->cols);
        const uint64_t len = moe_tensor_bytes(t, (uint64_t)n, (uint64_t)s->cols);
        if (moe_dtype_is_quant(t)) {
            for (uint64_t i = 0; i < len; i += 8) {
                uint64_t v = splitmix(&st);
                memcpy(p + i, &v, len - i < 8 ? len - i : 8);
            }
            /* Zero-mean quants: q4 nibbles decode as n - 8, so uniform nibbles
             * average -0.5 (and q8 bytes -0.5). That common offset, summed over
             * a row, drives the residual stream along one direction shared by
             * every token, and then every token routes to the same experts.
             * Mapping the lowest code to 0 makes the values symmetric. */
            for (uint64_t i = 0; i < len; i++) {
                if (t == MOE_Q4) {
                    if (!(p[i] & 0x0f)) p[i] |= 0x08;
                    if (!(p[i] & 0xf0)) p[i] |= 0x80;
                } else if (p[i] == 0x80) {
                    p[i] = 0;
                }
            }
            /* scales of the four rows at the front of every group-block */
            const size_t gb = t == MOE_Q8 ? MOE_Q8_GROUP_BYTES : MOE_Q4_GROUP_BYTES;
            const float d = t == MOE_Q8 ? 0.02f / 73.0f : 0.02f / 4.6f;
            for (uint64_t b = 0; b < len / gb; b++)
                for (int r = 0; r < MOE_QR; r++) {
                    uint16_t h = moe_f32_to_f16(d * (0.75f + 0.5f * (float)(splitmix(&st) >> 40) / 16777216.0f));
                    memcpy(p + b * gb + 2 * r, &h, 2);
                }
        } else {
            /* the skew lanes are set in f32 first, then stored in the tensor's type */
            float *f = t == MOE_F32 ? (float *)p : malloc((size_t)(n * s->cols) * sizeof *f);
            if (f) {
                for (int64_t i = 0; i < n * s->cols; i++) f[i] = uniform(&st, amp);
                if (skewed(s, skew)) skew_rows(f, s, r0, n, skew, seed);
                if (t != MOE_F32) {
                    for (int64_t i = 0; i < n * s->cols; i++)
                        ((uint16_t *)p)[i] = t == MOE_F16 ? moe_f32_to_f16(f[i]) : moe_f32_to_bf16(f[i]);
                    free(f);
                }
            }
        }
    }
}

/* The type a tensor is stored in: the recipe's, except that with skew the
 * embedding is kept in f16 when the recipe quantizes it, so its lanes hold
 * exact values (the router is f32 in every recipe). */
static moe_dtype spec_dtype(const moe_tensor_spec *s, const moe_recipe *recipe, double skew) {
    const moe_dtype t = moe_spec_dtype(s, recipe);
    return skewed(s, skew) && moe_dtype_is_quant(t) ? MOE_F16 : t;
}

int moe_synthetic_write(const char *path, const moe_hparams *hp, const moe_recipe *recipe, const char *name,
                        moe_error *err) {
    return moe_synthetic_write_skewed(path, hp, recipe, name, 0, err);
}

int moe_synthetic_write_skewed(const char *path, const moe_hparams *hp, const moe_recipe *recipe, const char *name,
                               double skew, moe_error *err) {
    moe_tensor_spec *specs;
    int n = moe_tensor_specs(hp, &specs);
    if (n < 0) return moe_fail(err, "out of memory");
    moef_writer *w = moef_writer_new(path, err);
    if (!w) {
        free(specs);
        return -1;
    }
    moe_hparams_write(hp, w);
    char text[160];
    moef_meta_put_str(w, "general.source", name);
    snprintf(text, sizeof text, "moe-bench --synthetic (random weights%s)", skew > 0 ? ", skewed routing" : "");
    moef_meta_put_str(w, "general.converter", text);
    moe_recipe_describe(recipe, text, sizeof text);
    moef_meta_put_str(w, "general.recipe", text);
    int rc = 0;
    uint64_t max_bytes = 0;
    for (int i = 0; i < n && !rc; i++) {
        const moe_tensor_spec *s = &specs[i];
        const int64_t dims[2] = {s->cols, s->rows};
        const moe_dtype t = spec_dtype(s, recipe, skew);
        if (moef_writer_add(w, s->name, t, s->vector ? 1 : 2, dims, s->align) < 0) rc = moe_fail(err, "out of memory");
        const uint64_t b = moe_tensor_bytes(t, (uint64_t)s->rows, (uint64_t)s->cols);
        max_bytes = b > max_bytes ? b : max_bytes;
    }
    if (!rc) rc = moef_writer_layout(w, err);
    uint8_t *buf = rc ? NULL : malloc(max_bytes);
    if (!rc && !buf) rc = moe_fail(err, "out of memory for a %llu-byte tensor", (unsigned long long)max_bytes);
    for (int i = 0; i < n && !rc; i++) {
        fill(buf, spec_dtype(&specs[i], recipe, skew), &specs[i], (uint64_t)i + 1, skew);
        rc = moef_writer_data(w, i, buf, err);
    }
    if (!rc) rc = moef_writer_commit(w, err);
    free(buf);
    moef_writer_free(w);
    free(specs);
    return rc;
}
