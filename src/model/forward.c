/*
 * forward.c — the one forward pass, for every family, and the context that
 * owns its state (KV cache, scratch). A family is only a set of switches in
 * moe_hparams: q/k norm kind, attention biases, which layers are MoE, shared
 * experts and their gate, top-k renormalization.
 *
 * Per layer, for a chunk of tokens at consecutive positions:
 *   xn = rmsnorm(x); q,k,v = xn W (+b); [q/k norm]; [clamp]; RoPE(q, k)
 *   append k, v to the cache; causal attention over the cache; x += o(att)
 *   (or DeepSeek's latent attention, attention_mla below)
 *   xn = rmsnorm(x); x += FFN(xn), FFN dense or: route, group tokens by
 *   expert, run each chosen expert once over its group, weighted sum,
 *   plus the shared expert (times sigmoid of its gate when it has one).
 *
 * Activations that feed quantized weights are quantized to int8 once and
 * shared by every product that reads them (q, k and v; all experts' gate and
 * up). All chosen experts' gate and up projections run as one parallel call,
 * then all their down projections: the threads split the rows of every
 * expert at once, so many small experts balance as well as a few large ones.
 *
 * The threads stay together for a whole moe_eval: it opens one parallel
 * region, and every function below the context's set-up is team code, run
 * by every thread of the team. Work that splits is shared out (omp for,
 * moe_matmul_team), serial steps are omp single, and the threads meet at
 * barriers; a decoded token costs no parallel region of its own (about 100
 * of them per token before, at 1.3-3.3 us each against 0.5 us a barrier).
 * Everything the threads read after a barrier lives in the context or is
 * computed the same way by every thread.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cache/expert_cache.h"
#include "kernels/kernels.h"
#include "model.h"
#include "moe/moe.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/huge.h"

#define QUERY_TILE 4 /* queries per call of scores_kt */
#define ATT_BLOCK 64 /* cached positions per step of decode attention */
#define QUERY_GROUP 8 /* query tiles of one head per unit of prefill attention */
#define KEY_BLOCK 128 /* keys per step of prefill attention: a multiple of MOE_KT_BLOCK */

struct moe_ctx {
    const moe_model *m;
    const moe_kernels *kern;
    moe_expert_source experts;
    moe_expert_cache *cache;    /* NULL: experts straight from the mapping */
    int n_ctx, n_batch, n_threads;
    int32_t pos;

    void *k_cache, *v_cache;    /* [n_layers][n_ctx][kv_dim]; MLA: the latent and rope key, no v_cache */
    int kv_dim;                 /* values per position and layer in k_cache */
    int kv_f16;                 /* the cache holds f16 (else f32): half the memory, and half
                                 * the bytes decode reads at depth */
    float *kv_buf;              /* f16 cache, prefill: n_threads x kv_buf_len floats, a key as floats */
    size_t kv_buf_len;
    uint64_t kv_bytes;          /* K and V for all n_ctx positions */
    double *inv_freq;           /* rope_dim / 2 RoPE frequencies */
    float *rope_cs;             /* n_batch x rope_dim / 2 x (cos, sin) x rope_mscale: the chunk's rotations,
                                 * computed once for all layers */
    int rope_dim;               /* dims of each head that RoPE rotates */
    float rope_mscale;          /* YaRN's factor on cos and sin */
    float attn_scale;           /* softmax scale of q.k */

    /* scratch for one chunk of n_batch tokens (slots = n_batch * top-k) */
    float *x;                   /* n_batch x n_embd, the residual stream */
    float *xn;                  /* n_batch x n_embd, normalized input of a block */
    float *q, *k, *v;           /* n_batch x heads * head_dim */
    float *att;                 /* n_batch x n_heads * head_dim */
    float *out;                 /* n_batch x n_embd, a block's output */
    float *h_gate, *h_up;       /* slots x expert_ffn: routed experts' hidden */
    float *y_exp;               /* slots x n_embd: routed experts' outputs */
    float *hs_gate, *hs_up;     /* n_batch x max(dense, shared) ffn */
    float *router;              /* n_batch x n_experts */
    int32_t *sel;               /* n_batch x top-k chosen experts */
    float *sel_w;               /* n_batch x top-k their weights */
    moe_groups groups;
    moe_act act_xn, act_att, act_h, act_hs;
    moe_act *act_h_expert;      /* n_experts views into act_h */
    const moe_weight **expert_w; /* n_experts: weights acquired for the current layer */
    moe_route_fn on_route;      /* optional observer of every routing decision */
    void *on_route_user;
    moe_mm *mm;                 /* the products of one call: 3 * n_experts (gate, up, down) or n_heads */
    int n_gate_up;              /* mm: the routed experts' gate and up products, then half as many down */
    int experts_quant;          /* the routed experts' activations need quantizing */
    moe_team_shares *shares;    /* the team's bookkeeping in moe_matmul_team */
    float *scores;              /* n_threads x QUERY_GROUP x QUERY_TILE x ld_scores attention scores */
    int ld_scores;              /* n_ctx rounded up to MOE_KT_BLOCK */
    /* decode attention, per thread: one block's scores, and over the thread's
     * run of positions each query head's running maximum and sum of scores
     * and unnormalized output */
    float *blk_scores;          /* n_threads x n_heads x ATT_BLOCK */
    float *run_max, *run_sum;   /* n_threads x n_heads */
    float *run_out;             /* n_threads x n_heads x ld_run_out */
    int ld_run_out;             /* the longest value row: head_dim, or MLA's kv_lora_rank */
    float *kt;                  /* prefill: one KV head's keys transposed for scores_kt (ld_scores x key length) */
    float *route_scratch;       /* moe_route's scratch */
    float *pf_scores;           /* n_experts: the next MoE layer's predicted router scores */
    int32_t *pf_sel;            /* n_experts: the experts handed to the prefetch hook */
    /* MLA scratch */
    float *q_a;                 /* n_batch x q_lora_rank */
    float *q_nope;              /* n_heads x n_batch x nope: each head's rows contiguous */
    float *q_lat;               /* n_batch x n_heads x (kv_lora_rank + rope): queries in latent space */
    float *lat_out;             /* n_heads x n_batch x kv_lora_rank: attention output in latent space */
    moe_act act_q_a, act_q_nope, act_lat;
    moe_act *act_head;          /* n_heads views into act_q_nope or act_lat */
    moe_weight *head_w;         /* n_heads per-head row blocks of K_B or V_B */
    float *logits;              /* n_vocab, the last token's logits */
};

/* Rows [r0, r0 + n) of a, as an activation of its own. */
static moe_act act_view(const moe_act *a, int64_t r0, int n) {
    moe_act v = *a;
    v.x += r0 * a->cols;
    v.q += r0 * a->nb * MOE_QK;
    v.d += r0 * a->nb;
    v.q4_base += r0 * a->nb;
    v.n = n;
    return v;
}

static int imax(int a, int b) { return a > b ? a : b; }
static int imin(int a, int b) { return a < b ? a : b; }

/* YaRN's attention temperature: 0.1 m ln(s) + 1 for a context stretched s times. */
static double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

/* RoPE frequencies, and with YaRN (DeepSeek's YarnRotaryEmbedding) the blend
 * of interpolated and original frequencies across the correction range,
 * the scale on cos/sin and the softmax scale's mscale^2. */
static void rope_init(moe_ctx *c) {
    const moe_hparams *hp = &c->m->hp;
    const int dim = c->rope_dim = hp->attn_kind == MOE_ATTN_MLA ? hp->qk_rope_dim : hp->head_dim;
    const double base = hp->rope_theta;
    c->rope_mscale = 1.0f;
    c->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    for (int i = 0; i < dim / 2; i++) c->inv_freq[i] = 1.0 / pow(base, 2.0 * i / dim);
    if (hp->rope_scaling != MOE_ROPE_YARN) return;
    const double factor = hp->rope_factor, orig = hp->yarn_orig_ctx;
    /* the dimension at which a frequency turns `rotations` times over the original context */
#define CORRECTION_DIM(rotations) (dim * log(orig / ((rotations) * 2 * M_PI)) / (2 * log(base)))
    double low = fmax(floor(CORRECTION_DIM(hp->yarn_beta_fast)), 0);
    double high = fmin(ceil(CORRECTION_DIM(hp->yarn_beta_slow)), dim - 1);
#undef CORRECTION_DIM
    if (low == high) high += 0.001;
    for (int i = 0; i < dim / 2; i++) {
        const double ramp = fmin(fmax((i - low) / (high - low), 0), 1), extrapolate = 1 - ramp;
        c->inv_freq[i] = c->inv_freq[i] / factor * (1 - extrapolate) + c->inv_freq[i] * extrapolate;
    }
    c->rope_mscale = (float)(yarn_mscale(factor, hp->yarn_mscale) / yarn_mscale(factor, hp->yarn_mscale_all_dim));
    if (hp->yarn_mscale_all_dim != 0) {
        const double m = yarn_mscale(factor, hp->yarn_mscale_all_dim);
        c->attn_scale = (float)(c->attn_scale * m * m);
    }
}

moe_ctx *moe_ctx_new(const moe_model *m, moe_ctx_params p, moe_error *err) {
    const moe_hparams *hp = &m->hp;
    const moe_kernels *kern = moe_kernels_select(p.isa, err);
    if (!kern) return NULL;
    const int kv_f16 = !p.kv_type || !strcmp(p.kv_type, "f16");
    if (!kv_f16 && strcmp(p.kv_type, "f32")) {
        moe_fail(err, "KV cache type \"%s\": expected f16 or f32", p.kv_type);
        return NULL;
    }
    moe_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    c->m = m;
    c->kern = kern;
    c->experts = moe_expert_source_mmap(m);
    if (p.expert_cache_bytes > 0) {
        if (!(c->cache = moe_expert_cache_new_params(m, &p, err))) {
            free(c);
            return NULL;
        }
        c->experts = moe_expert_cache_source(c->cache);
    }
    c->kv_f16 = kv_f16;
    c->n_ctx = p.n_ctx > 0 ? p.n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    /* 512, as llama.cpp's micro-batch: a prompt of 512 in chunks of 64 was
     * about 15 % slower (each expert's weights read once per chunk, over
     * groups of about 8 tokens); no chunk is longer than the context */
    c->n_batch = p.n_batch > 0 ? p.n_batch : 512;
    if (c->n_batch > c->n_ctx) c->n_batch = c->n_ctx;
    c->n_threads = p.n_threads > 0 ? p.n_threads : omp_get_max_threads();
    const size_t B = (size_t)c->n_batch, E = (size_t)hp->n_embd, H = (size_t)hp->n_heads;
    const int mla = hp->attn_kind == MOE_ATTN_MLA;
    const size_t qd = H * hp->head_dim, R = (size_t)hp->kv_lora_rank;
    const size_t kvd = mla ? R + (size_t)hp->qk_rope_dim : (size_t)hp->n_kv_heads * hp->head_dim;
    const size_t att = mla ? H * hp->v_head_dim : qd;
    c->kv_dim = (int)kvd;
    const size_t n_exp = (size_t)imax(hp->n_experts, 1), topk = (size_t)imax(hp->n_experts_used, 1);
    const size_t slots = B * topk, eff = (size_t)imax(hp->expert_ffn, 1);
    const size_t sff = (size_t)imax(imax(hp->dense_ffn, hp->shared_ffn), 1);
    /* bytes of each of K and V; MLA: the latent only */
    const size_t cache = (size_t)hp->n_layers * (size_t)c->n_ctx * kvd * (c->kv_f16 ? 2 : 4);

    /* Every buffer is sized here, once; the forward pass allocates nothing. */
    int ok = 1;
#define ALLOC(p, count) (ok &= ((p) = malloc((size_t)(count) * sizeof *(p))) != NULL)
    /* in 2 MiB pages: in 4 KiB pages decode attention read the cache at 16
     * GB/s on one core against 26 (bench/README.md, session 8) */
    ok &= (c->k_cache = moe_alloc_huge(cache)) != NULL;
    ok &= (c->v_cache = moe_alloc_huge(mla ? 1 : cache)) != NULL;
    c->kv_bytes = (mla ? 1 : 2) * (uint64_t)cache;
    ALLOC(c->inv_freq, hp->head_dim / 2);
    ALLOC(c->rope_cs, B * (size_t)hp->head_dim);
    ALLOC(c->x, B * E);
    ALLOC(c->xn, B * E);
    ALLOC(c->q, B * qd);
    ALLOC(c->k, B * kvd);
    ALLOC(c->v, B * kvd);
    ALLOC(c->att, B * att);
    ALLOC(c->out, B * E);
    ALLOC(c->h_gate, slots * eff);
    ALLOC(c->h_up, slots * eff);
    ALLOC(c->y_exp, slots * E);
    ALLOC(c->hs_gate, B * sff);
    ALLOC(c->hs_up, B * sff);
    ALLOC(c->router, B * n_exp);
    ALLOC(c->sel, slots);
    ALLOC(c->sel_w, slots);
    ALLOC(c->groups.start, n_exp + 1);
    ALLOC(c->groups.token, slots);
    ALLOC(c->groups.weight, slots);
    ALLOC(c->act_h_expert, n_exp);
    ALLOC(c->expert_w, n_exp);
    ALLOC(c->mm, imax(3 * (int)n_exp, (int)H));
    ok &= (c->shares = moe_team_shares_new()) != NULL;
    c->ld_scores = (c->n_ctx + MOE_KT_BLOCK - 1) / MOE_KT_BLOCK * MOE_KT_BLOCK;
    ALLOC(c->scores, (size_t)c->n_threads * QUERY_GROUP * QUERY_TILE * (size_t)c->ld_scores);
    c->ld_run_out = mla ? (int)R : hp->head_dim;
    ALLOC(c->blk_scores, (size_t)c->n_threads * H * ATT_BLOCK);
    ALLOC(c->run_max, (size_t)c->n_threads * H);
    ALLOC(c->run_sum, (size_t)c->n_threads * H);
    ALLOC(c->run_out, (size_t)c->n_threads * H * (size_t)c->ld_run_out);
    ALLOC(c->kt, B < QUERY_TILE ? 1 : (size_t)c->ld_scores * (mla ? kvd : (size_t)hp->head_dim));
    c->kv_buf_len = c->kv_f16 ? kvd : 1;
    ALLOC(c->kv_buf, (size_t)c->n_threads * c->kv_buf_len);
    ALLOC(c->route_scratch, moe_route_scratch(hp));
    ALLOC(c->pf_scores, n_exp);
    ALLOC(c->pf_sel, n_exp);
    ALLOC(c->logits, hp->n_vocab);
    if (mla) {
        const size_t qa = (size_t)imax(hp->q_lora_rank, 1), nope = (size_t)hp->qk_nope_dim;
        ALLOC(c->q_a, B * qa);
        ALLOC(c->q_nope, H * B * nope);
        ALLOC(c->q_lat, B * H * kvd);
        ALLOC(c->lat_out, H * B * R);
        ALLOC(c->act_head, H);
        ALLOC(c->head_w, H);
        ok &= !moe_act_alloc(&c->act_q_a, c->q_a, B, (int64_t)qa) & !moe_act_alloc(&c->act_q_nope, c->q_nope, H * B, (int64_t)nope) &
              !moe_act_alloc(&c->act_lat, c->lat_out, H * B, (int64_t)R);
    }
#undef ALLOC
    ok &= !moe_act_alloc(&c->act_xn, c->xn, B, hp->n_embd) & !moe_act_alloc(&c->act_att, c->att, B, (int64_t)att) &
          !moe_act_alloc(&c->act_h, c->h_gate, slots, (int64_t)eff) & !moe_act_alloc(&c->act_hs, c->hs_gate, B, (int64_t)sff);
    if (!ok) {
        moe_fail(err, "out of memory for a context of %d positions (KV cache %llu MiB)", c->n_ctx,
                 (unsigned long long)(c->kv_bytes >> 20));
        moe_ctx_free(c);
        return NULL;
    }
    rope_init(c);
    return c;
}

void moe_ctx_free(moe_ctx *c) {
    if (!c) return;
    void *bufs[] = {c->k_cache, c->v_cache, c->inv_freq, c->rope_cs, c->x, c->xn, c->q, c->k, c->v, c->att, c->out,
                    c->h_gate, c->h_up, c->y_exp, c->hs_gate, c->hs_up, c->router, c->sel, c->sel_w,
                    c->groups.start, c->groups.token, c->groups.weight, c->act_h_expert, c->expert_w, c->mm, c->scores, c->kt,
                    c->kv_buf, c->blk_scores, c->run_max, c->run_sum, c->run_out,
                    c->route_scratch, c->pf_scores, c->pf_sel, c->logits, c->q_a, c->q_nope, c->q_lat, c->lat_out, c->act_head, c->head_w};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    moe_act_free(&c->act_q_a);
    moe_act_free(&c->act_q_nope);
    moe_act_free(&c->act_lat);
    moe_act_free(&c->act_xn);
    moe_act_free(&c->act_att);
    moe_act_free(&c->act_h);
    moe_act_free(&c->act_hs);
    moe_team_shares_free(c->shares);
    moe_expert_cache_free(c->cache);
    free(c);
}

int moe_ctx_cache_stats(const moe_ctx *c, moe_cache_stats *out) {
    if (!c->cache) return -1;
    moe_expert_cache_get_stats(c->cache, out);
    return 0;
}

const float *moe_ctx_logits(const moe_ctx *c) { return c->logits; }
int32_t moe_ctx_pos(const moe_ctx *c) { return c->pos; }
int32_t moe_ctx_n_ctx(const moe_ctx *c) { return c->n_ctx; }
void moe_ctx_on_route(moe_ctx *c, moe_route_fn fn, void *user) {
    c->on_route = fn;
    c->on_route_user = user;
}
void moe_ctx_reset(moe_ctx *c) { c->pos = 0; }
void moe_ctx_truncate(moe_ctx *c, int32_t n) {
    if (n >= 0 && n < c->pos) c->pos = n;
}
const char *moe_ctx_isa(const moe_ctx *c) { return c->kern->isa; }
const char *moe_ctx_kv_type(const moe_ctx *c) { return c->kv_f16 ? "f16" : "f32"; }
uint64_t moe_ctx_kv_bytes(const moe_ctx *c) { return c->kv_bytes; }

/* Team code from here to moe_eval (see the top of the file). */

/* Quantizes rows [0, n) of a if w needs it. */
static void act_ready(const moe_ctx *c, moe_act *a, int n, const moe_weight *w) {
    if (moe_dtype_is_quant(w->dtype)) moe_act_quantize_team(c->kern, a, n);
}

static void run_products(const moe_ctx *c, const moe_mm *mm, int n) { moe_matmul_team(c->kern, mm, n, c->shares); }

static moe_mm product(float *y, int64_t ldy, const moe_weight *w, const moe_act *a, const int32_t *idx, int n) {
    return (moe_mm){y, ldy, w, a, idx, n};
}

/* Token t of the chunk, at position pos: its rotation of each pair. */
static void rope_angles(moe_ctx *c, int t, int pos) {
    const moe_hparams *hp = &c->m->hp;
    const int half = c->rope_dim / 2;
    const double p = hp->rope_scaling == MOE_ROPE_LINEAR ? pos / (double)hp->rope_factor : pos;
    float *cs = c->rope_cs + (size_t)t * 2 * half;
    for (int i = 0; i < half; i++) {
        const double a = p * c->inv_freq[i];
        cs[2 * i] = (float)cos(a) * c->rope_mscale;
        cs[2 * i + 1] = (float)sin(a) * c->rope_mscale;
    }
}

/* Rotates the first rope_dim values of n_heads heads (stride floats apart)
 * of token t of the chunk to its position: pairs (i, i + half) as Hugging
 * Face's rotate_half, or (2i, 2i + 1) for DeepSeek's checkpoints, whose rope
 * dims are interleaved (its reference permutes them to rotate_half order
 * before rotating). */
static void rope(const moe_ctx *c, float *v, int n_heads, int stride, int t) {
    const int half = c->rope_dim / 2, inter = c->m->hp.rope_interleaved;
    const float *cs = c->rope_cs + (size_t)t * 2 * half;
    for (int i = 0; i < half; i++) {
        const int i0 = inter ? 2 * i : i, i1 = inter ? 2 * i + 1 : i + half;
        for (int h = 0; h < n_heads; h++) {
            float *x = v + (size_t)h * stride;
            float x0 = x[i0], x1 = x[i1];
            x[i0] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
            x[i1] = x1 * cs[2 * i] + x0 * cs[2 * i + 1];
        }
    }
}

static void add_bias(float *y, const moe_weight *b) {
    const float *bd = b->data;
    for (int64_t i = 0; i < b->cols; i++) y[i] += bd[i];
}

/* Normalizes one token's q or k in place: per head (weight of head_dim) or whole row. */
static void qk_norm(const moe_hparams *hp, float *v, const moe_weight *w, int n_heads) {
    const int row = n_heads * hp->head_dim;
    const int span = hp->qk_norm == MOE_QK_NORM_PER_HEAD ? hp->head_dim : row;
    for (int s = 0; s < row; s += span) moe_rmsnorm(v + s, v + s, w->data, span, hp->rms_eps);
}

static void clamp(float *v, size_t n, float lim) {
    for (size_t i = 0; i < n; i++) v[i] = v[i] > lim ? lim : (v[i] < -lim ? -lim : v[i]);
}

/* s[p] = exp(s[p] - max s); returns 1 / sum s, the normalization the
 * weighted sum of values applies once at its end. */
static float softmax_unnormalized(const moe_ctx *c, float *s, int n) { return 1.0f / c->kern->softmax_exp(s, n); }

/* Where attention finds its operands: query (t, h) at q + t * ldq_t +
 * h * ldq_h; the keys of KV head g at k + g * kv_off, rows ldk apart, d_k
 * long; their values at v + g * kv_off, d_v long, rows ldv apart; output
 * (t, h) at out + t * ldo_t + h * ldo_h. Query head h reads KV head
 * h / group. GQA and DeepSeek's latent attention (one "KV head": the
 * latent and rope key of each position) are both this. */
typedef struct attn_layout {
    const float *q;
    const void *k, *v;          /* in the cache: f32 or f16 values (read through the kv_ helpers) */
    float *out;
    int64_t ldq_t, ldq_h, ldk, ldv, kv_off, ldo_t, ldo_h;
    int d_k, d_v, n_kv_heads, group;
} attn_layout;

/* Value i of a cache region that starts at base (as strchr, const in, not out). */
static void *kv_at(const moe_ctx *c, const void *base, size_t i) {
    return (char *)base + i * (c->kv_f16 ? sizeof(uint16_t) : sizeof(float));
}

/* n values into the cache at dst. */
static void kv_store(const moe_ctx *c, void *dst, const float *src, int n) {
    if (c->kv_f16) c->kern->to_half(dst, src, n);
    else memcpy(dst, src, (size_t)n * sizeof(float));
}

/* q . the n cached values at key, y += a x for the n at x, and wsum_tile
 * over cached values: decode's inner loops, converting f16 in registers. */
static float kv_dot(const moe_ctx *c, const float *q, const void *key, int n) {
    return c->kv_f16 ? c->kern->dot_half(q, key, n) : c->kern->dot(q, key, n);
}
static void kv_axpy(const moe_ctx *c, float *y, float a, const void *x, int n) {
    if (c->kv_f16) c->kern->axpy_half(y, a, x, n);
    else c->kern->axpy(y, a, x, n);
}
static void kv_wsum_tile(const moe_ctx *c, float *o, int64_t ldo, const float *s, int64_t lds, const float *scale,
                         int nq, const void *v, int n, int64_t ldv, int d) {
    if (c->kv_f16) c->kern->wsum_tile_half(o, ldo, s, lds, scale, nq, v, n, ldv, d);
    else c->kern->wsum_tile(o, ldo, s, lds, scale, nq, v, n, ldv, d);
}

/* The n cached values at v as floats: in place (f32), or converted into buf (f16). */
static const float *kv_floats(const moe_ctx *c, const void *v, int n, float *buf) {
    if (!c->kv_f16) return v;
    c->kern->from_half(buf, v, n);
    return buf;
}

/* The weighted values of positions [b0, b0 + n) into each query head's
 * running output (s: the block's weights, ATT_BLOCK per head), value row
 * by value row: each is read once, whole and in order, from memory. */
static void values_by_row(const moe_ctx *c, const attn_layout *a, const float *s, float *run_out, int b0, int n) {
    const int n_heads = a->n_kv_heads * a->group;
    for (int p = 0; p < n; p++) {
        const size_t row = (size_t)(b0 + p) * (size_t)a->ldv;
        for (int h = 0; h < n_heads; h++) {
            const void *value = kv_at(c, a->v, row + (size_t)(h / a->group * a->kv_off));
            kv_axpy(c, run_out + h * c->ld_run_out, s[h * ATT_BLOCK + p], value, a->d_v);
        }
    }
}

/* The same for values that several query heads share (grouped queries,
 * and MLA's latent, which is moreover the rows the scores just read):
 * QUERY_TILE heads at a time sum the block in registers (wsum_tile, one
 * load of each value for all of them) and add the sums to their outputs
 * once, instead of one load and store of every head's output per position.
 * At depth 2048, Qwen3-30B-A3B's 8 heads per KV head decoded 64 -> 80 t/s
 * this way; with one head per KV head (OLMoE) the row order is faster. */
static void values_by_head(const moe_ctx *c, const attn_layout *a, const float *s, float *run_out, int b0, int n) {
    float ones[QUERY_TILE];
    for (int i = 0; i < QUERY_TILE; i++) ones[i] = 1.0f;
    const int64_t ldr = c->ld_run_out;
    for (int g = 0; g < a->n_kv_heads; g++) {
        const void *values = kv_at(c, a->v, (size_t)b0 * (size_t)a->ldv + (size_t)(g * a->kv_off));
        for (int h0 = g * a->group; h0 < (g + 1) * a->group; h0 += QUERY_TILE) {
            const int nq = (g + 1) * a->group - h0 < QUERY_TILE ? (g + 1) * a->group - h0 : QUERY_TILE;
            kv_wsum_tile(c, run_out + h0 * ldr, ldr, s + h0 * ATT_BLOCK, ATT_BLOCK, ones, nq, values, n, a->ldv,
                         a->d_v);
        }
    }
}

/* Causal attention of the n_tok new queries (at positions pos..) over the
 * cache: decode. The cache is read in position order, whole rows at a time,
 * each thread its own run of positions. Head by head, a head's slice of one
 * row lies a whole row from its slice of the next (8 KB in OLMoE), and one
 * core read a cold cache at 12 GB/s that way against 26 row by row
 * (bench/README.md, session 8). Each thread keeps, per query head, the
 * maximum and sum of its scores so far and its output unnormalized,
 * rescaled whenever the maximum grows (the softmax taken block by block, as
 * FlashAttention does); the runs are merged after a barrier. */
static void attend_rows(moe_ctx *c, const attn_layout *a, int n_tok) {
    const moe_kernels *k = c->kern;
    const int n_heads = a->n_kv_heads * a->group, nt = omp_get_num_threads(), th = omp_get_thread_num();
    const int64_t ldr = c->ld_run_out;
    float *s = c->blk_scores + (size_t)th * n_heads * ATT_BLOCK;
    float *run_max = c->run_max + (size_t)th * n_heads, *run_sum = c->run_sum + (size_t)th * n_heads;
    float *run_out = c->run_out + (size_t)th * n_heads * ldr;
    for (int t = 0; t < n_tok; t++) {
        const float *q = a->q + t * a->ldq_t;
        const int n_pos = c->pos + t + 1;
        const int p0 = (int)((int64_t)n_pos * th / nt), p1 = (int)((int64_t)n_pos * (th + 1) / nt);
        for (int h = 0; h < n_heads; h++) {
            run_max[h] = -INFINITY;
            run_sum[h] = 0.0f;
            memset(run_out + h * ldr, 0, (size_t)a->d_v * sizeof(float));
        }
        for (int b0 = p0; b0 < p1; b0 += ATT_BLOCK) {
            const int n = p1 - b0 < ATT_BLOCK ? p1 - b0 : ATT_BLOCK;
            for (int p = 0; p < n; p++) {
                const size_t row = (size_t)(b0 + p) * (size_t)a->ldk;
                for (int h = 0; h < n_heads; h++) {
                    const void *key = kv_at(c, a->k, row + (size_t)(h / a->group * a->kv_off));
                    s[h * ATT_BLOCK + p] = kv_dot(c, q + h * a->ldq_h, key, a->d_k) * c->attn_scale;
                }
            }
            for (int h = 0; h < n_heads; h++) {
                float *sh = s + h * ATT_BLOCK, block_max = -INFINITY;
                for (int p = 0; p < n; p++) block_max = sh[p] > block_max ? sh[p] : block_max;
                const float new_max = block_max > run_max[h] ? block_max : run_max[h];
                const float old_scale = expf(run_max[h] - new_max), block_scale = expf(block_max - new_max);
                const float block_sum = k->softmax_exp(sh, n); /* e^(s - block_max) */
                run_sum[h] = run_sum[h] * old_scale + block_sum * block_scale;
                run_max[h] = new_max;
                if (old_scale != 1.0f)
                    for (int i = 0; i < a->d_v; i++) run_out[h * ldr + i] *= old_scale;
                if (block_scale != 1.0f)
                    for (int p = 0; p < n; p++) sh[p] *= block_scale;
            }
            if (a->v == a->k || a->group > 1) values_by_head(c, a, s, run_out, b0, n);
            else values_by_row(c, a, s, run_out, b0, n);
        }
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int h = 0; h < n_heads; h++) {
            float max = -INFINITY, sum = 0.0f;
            for (int i = 0; i < nt; i++) max = c->run_max[i * n_heads + h] > max ? c->run_max[i * n_heads + h] : max;
            for (int i = 0; i < nt; i++) sum += c->run_sum[i * n_heads + h] * expf(c->run_max[i * n_heads + h] - max);
            float *o = a->out + t * a->ldo_t + h * a->ldo_h;
            memset(o, 0, (size_t)a->d_v * sizeof(float));
            for (int i = 0; i < nt; i++) {
                const float w = expf(c->run_max[i * n_heads + h] - max) / sum; /* 0 for a thread without positions */
                if (w != 0.0f) k->axpy(o, w, c->run_out + ((size_t)i * n_heads + h) * ldr, a->d_v);
            }
        }
    }
}

/* The same for a batch (prefill): per KV head, its keys are transposed once
 * (c->kt), then every query head of its group scores QUERY_TILE queries at
 * a time against them with scores_kt, which needs no horizontal sums; the
 * per-query dot products of the decode loop spent most of their time
 * summing vector lanes. A thread takes QUERY_GROUP tiles of one head and
 * walks the keys, then the values, in blocks of KEY_BLOCK, each block used
 * by all the group's tiles while it is in cache: tile by tile over all the
 * keys, the values were read from L3 once per four queries (at depth 2048,
 * 0.39 of the time mm_q4 took). An f16 cache is read as floats: the keys
 * as they are transposed, the values by wsum_tile_half as it sums them. */
static void attend_batch(moe_ctx *c, const attn_layout *a, int n_tok) {
    const int n_keys = c->pos + n_tok, blocks = (n_keys + MOE_KT_BLOCK - 1) / MOE_KT_BLOCK;
    const int tiles = (n_tok + QUERY_TILE - 1) / QUERY_TILE, groups = (tiles + QUERY_GROUP - 1) / QUERY_GROUP;
    const int dk = a->d_k;
    float *buf = c->kv_buf + (size_t)omp_get_thread_num() * c->kv_buf_len;
    for (int kvh = 0; kvh < a->n_kv_heads; kvh++) {
        const void *keys = kv_at(c, a->k, (size_t)(kvh * a->kv_off));
        const void *values = kv_at(c, a->v, (size_t)(kvh * a->kv_off));
        #pragma omp for schedule(static)
        for (int b = 0; b < blocks; b++)
            for (int key = b * MOE_KT_BLOCK; key < (b + 1) * MOE_KT_BLOCK; key++) {
                const float *row = NULL; /* past the last key: zeros */
                if (key < n_keys) row = kv_floats(c, kv_at(c, keys, (size_t)key * (size_t)a->ldk), dk, buf);
                for (int j = 0; j < dk; j++) c->kt[moe_kt_index(key, j, dk)] = row ? row[j] : 0.0f;
            }
        #pragma omp for schedule(dynamic, 1) collapse(2)
        for (int g = 0; g < a->group; g++) {
            for (int grp = 0; grp < groups; grp++) {
                const int h = kvh * a->group + g, tile0 = grp * QUERY_GROUP;
                const int n_tiles = tiles - tile0 < QUERY_GROUP ? tiles - tile0 : QUERY_GROUP;
                /* tile i: queries t0[i] .. t0[i] + nq[i], the last of which sees
                 * seen[i] keys; its scores at s + i QUERY_TILE ld_scores */
                int t0[QUERY_GROUP], nq[QUERY_GROUP], seen[QUERY_GROUP];
                for (int i = 0; i < n_tiles; i++) {
                    t0[i] = (tile0 + i) * QUERY_TILE;
                    nq[i] = n_tok - t0[i] < QUERY_TILE ? n_tok - t0[i] : QUERY_TILE;
                    seen[i] = c->pos + t0[i] + nq[i];
                }
                float *s = c->scores + (size_t)omp_get_thread_num() * QUERY_GROUP * QUERY_TILE * c->ld_scores;
                float inv_sum[QUERY_GROUP * QUERY_TILE];
                for (int k0 = 0; k0 < seen[n_tiles - 1]; k0 += KEY_BLOCK)
                    for (int i = 0; i < n_tiles; i++)
                        if (k0 < seen[i])
                            c->kern->scores_kt(s + (size_t)i * QUERY_TILE * c->ld_scores + k0, c->ld_scores,
                                               a->q + t0[i] * a->ldq_t + h * a->ldq_h, a->ldq_t, nq[i],
                                               c->kt + (size_t)k0 * dk, imin(seen[i] - k0, KEY_BLOCK), dk, c->attn_scale);
                /* query t sees n_pos = pos + t + 1 keys; zero weights beyond
                 * them let a tile's queries share one pass over V */
                for (int i = 0; i < n_tiles; i++)
                    for (int j = 0; j < nq[i]; j++) {
                        float *sj = s + (size_t)(i * QUERY_TILE + j) * c->ld_scores;
                        const int n_pos = c->pos + t0[i] + j + 1;
                        inv_sum[i * QUERY_TILE + j] = softmax_unnormalized(c, sj, n_pos);
                        for (int p = n_pos; p < seen[i]; p++) sj[p] = 0.0f;
                        memset(a->out + (t0[i] + j) * a->ldo_t + h * a->ldo_h, 0, (size_t)a->d_v * sizeof(float));
                    }
                for (int k0 = 0; k0 < seen[n_tiles - 1]; k0 += KEY_BLOCK)
                    for (int i = 0; i < n_tiles; i++)
                        if (k0 < seen[i])
                            kv_wsum_tile(c, a->out + t0[i] * a->ldo_t + h * a->ldo_h, a->ldo_t,
                                         s + (size_t)i * QUERY_TILE * c->ld_scores + k0, c->ld_scores,
                                         inv_sum + i * QUERY_TILE, nq[i], kv_at(c, values, (size_t)k0 * (size_t)a->ldv),
                                         imin(seen[i] - k0, KEY_BLOCK), a->ldv, a->d_v);
            }
        }
    }
}

static void attend(moe_ctx *c, const attn_layout *a, int n_tok) {
    if (n_tok >= QUERY_TILE) attend_batch(c, a, n_tok);
    else attend_rows(c, a, n_tok);
}

static void attention(moe_ctx *c, int layer, int n_tok) {
    const moe_hparams *hp = &c->m->hp;
    const moe_layer *L = &c->m->layers[layer];
    const int hd = hp->head_dim, qd = hp->n_heads * hd, kvd = hp->n_kv_heads * hd;
    const int pos0 = c->pos;

    act_ready(c, &c->act_xn, n_tok, &L->w[LT_Q]);
    const moe_mm qkv[3] = {product(c->q, qd, &L->w[LT_Q], &c->act_xn, NULL, n_tok),
                           product(c->k, kvd, &L->w[LT_K], &c->act_xn, NULL, n_tok),
                           product(c->v, kvd, &L->w[LT_V], &c->act_xn, NULL, n_tok)};
    run_products(c, qkv, 3);
    void *kc = kv_at(c, c->k_cache, (size_t)layer * c->n_ctx * kvd);
    void *vc = kv_at(c, c->v_cache, (size_t)layer * c->n_ctx * kvd);
    #pragma omp for schedule(static)
    for (int t = 0; t < n_tok; t++) {
        float *q = c->q + (size_t)t * qd, *k = c->k + (size_t)t * kvd, *v = c->v + (size_t)t * kvd;
        if (hp->attn_bias) {
            add_bias(q, &L->w[LT_Q_BIAS]);
            add_bias(k, &L->w[LT_K_BIAS]);
            add_bias(v, &L->w[LT_V_BIAS]);
        }
        if (hp->qk_norm != MOE_QK_NORM_NONE) {
            qk_norm(hp, q, &L->w[LT_Q_NORM], hp->n_heads);
            qk_norm(hp, k, &L->w[LT_K_NORM], hp->n_kv_heads);
        }
        if (hp->clip_qkv > 0) {
            clamp(q, (size_t)qd, hp->clip_qkv);
            clamp(k, (size_t)kvd, hp->clip_qkv);
            clamp(v, (size_t)kvd, hp->clip_qkv);
        }
        rope(c, q, hp->n_heads, hd, t);
        rope(c, k, hp->n_kv_heads, hd, t);
        kv_store(c, kv_at(c, kc, (size_t)(pos0 + t) * kvd), k, kvd);
        kv_store(c, kv_at(c, vc, (size_t)(pos0 + t) * kvd), v, kvd);
    }

    const attn_layout a = {.q = c->q, .k = kc, .v = vc, .out = c->att, .ldq_t = qd, .ldq_h = hd, .ldk = kvd, .ldv = kvd,
                           .kv_off = hd, .ldo_t = qd, .ldo_h = hd, .d_k = hd, .d_v = hd, .n_kv_heads = hp->n_kv_heads,
                           .group = hp->n_heads / hp->n_kv_heads};
    attend(c, &a, n_tok);
    act_ready(c, &c->act_att, n_tok, &L->w[LT_O]);
    const moe_mm o = product(c->out, hp->n_embd, &L->w[LT_O], &c->act_att, NULL, n_tok);
    run_products(c, &o, 1);
}

/* Rows [r0, r0 + n) of w as a weight of its own; r0 is a multiple of the
 * quantized formats' row group (MOE_QR), which the hparams check ensures. */
static moe_weight weight_rows(const moe_weight *w, int64_t r0, int64_t n) {
    return (moe_weight){(const uint8_t *)w->data + moe_tensor_bytes(w->dtype, (uint64_t)r0, (uint64_t)w->cols),
                        w->dtype, n, w->cols};
}

/* One product per head: head h's rows of w (rows_per_head of them) times
 * head h's activation rows (rows h * n_batch + t of a), into y at column
 * h * head_stride of rows ldy apart. */
static void per_head_products(moe_ctx *c, float *y, int64_t ldy, int64_t head_stride, const moe_weight *w,
                              int64_t rows_per_head, moe_act *a, int n_tok) {
    const int H = c->m->hp.n_heads;
    #pragma omp single
    for (int h = 0; h < H; h++) {
        c->head_w[h] = weight_rows(w, h * rows_per_head, rows_per_head);
        c->act_head[h] = act_view(a, (int64_t)h * c->n_batch, n_tok);
        c->mm[h] = product(y + h * head_stride, ldy, &c->head_w[h], &c->act_head[h], NULL, n_tok);
    }
    if (moe_dtype_is_quant(w->dtype)) {
        #pragma omp for schedule(static) collapse(2)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < n_tok; t++) c->kern->quantize_act(&c->act_head[h], t, t + 1);
    }
    run_products(c, c->mm, H);
}

/*
 * DeepSeek's multi-head latent attention. Each position caches only the
 * normalized latent c (kv_lora_rank) and the rope key shared by all heads:
 * never the per-head keys and values. Keys and values are never expanded:
 * kv_b is folded into both sides (the "absorbed" form), per head h
 *   q.k   = q_nope . (Wk_h c) + q_pe . k_pe = (Wk_h^T q_nope) . c + q_pe . k_pe
 *   out_h = Wv_h (sum_p a_p c_p)
 * so each cached position costs a dot over kv_lora_rank + rope per head
 * rather than the expansion of 2 x n_heads x 128 values. The converter
 * stores Wk_h^T (LT_K_B) and Wv_h (LT_V_B) per head for this.
 */
static void attention_mla(moe_ctx *c, int layer, int n_tok) {
    const moe_hparams *hp = &c->m->hp;
    const moe_layer *L = &c->m->layers[layer];
    const int H = hp->n_heads, R = hp->kv_lora_rank, nope = hp->qk_nope_dim, rd = hp->qk_rope_dim;
    const int qh = nope + rd, qd = H * qh, kvd = c->kv_dim, vd = hp->v_head_dim, B = c->n_batch;
    const int pos0 = c->pos;

    /* q (through its compression when there is one) and the latent with the rope key */
    const moe_weight *wq = hp->q_lora_rank ? &L->w[LT_Q_A] : &L->w[LT_Q];
    act_ready(c, &c->act_xn, n_tok, moe_dtype_is_quant(wq->dtype) ? wq : &L->w[LT_KV_A]);
    const moe_mm first[2] = {product(hp->q_lora_rank ? c->q_a : c->q, hp->q_lora_rank ? hp->q_lora_rank : qd, wq,
                                     &c->act_xn, NULL, n_tok),
                             product(c->k, kvd, &L->w[LT_KV_A], &c->act_xn, NULL, n_tok)};
    run_products(c, first, 2);
    if (hp->q_lora_rank) {
        #pragma omp for schedule(static)
        for (int t = 0; t < n_tok; t++)
            moe_rmsnorm(c->q_a + (size_t)t * hp->q_lora_rank, c->q_a + (size_t)t * hp->q_lora_rank,
                        L->w[LT_Q_A_NORM].data, hp->q_lora_rank, hp->rms_eps);
        act_ready(c, &c->act_q_a, n_tok, &L->w[LT_Q_B]);
        const moe_mm qb = product(c->q, qd, &L->w[LT_Q_B], &c->act_q_a, NULL, n_tok);
        run_products(c, &qb, 1);
    }
    void *cache = kv_at(c, c->k_cache, (size_t)layer * c->n_ctx * kvd);
    #pragma omp for schedule(static)
    for (int t = 0; t < n_tok; t++) {
        float *kv = c->k + (size_t)t * kvd, *q = c->q + (size_t)t * qd;
        moe_rmsnorm(kv, kv, L->w[LT_KV_A_NORM].data, R, hp->rms_eps);
        rope(c, kv + R, 1, 0, t);
        kv_store(c, kv_at(c, cache, (size_t)(pos0 + t) * kvd), kv, kvd);
        rope(c, q + nope, H, qh, t);
        for (int h = 0; h < H; h++) {
            memcpy(c->q_nope + ((size_t)h * B + t) * nope, q + h * qh, (size_t)nope * sizeof(float));
            /* the rope part of the query goes after its latent part: one dot per cached row */
            memcpy(c->q_lat + ((size_t)t * H + h) * kvd + R, q + h * qh + nope, (size_t)rd * sizeof(float));
        }
    }

    /* queries into latent space: q_lat[t][h] = [Wk_h^T q_nope[h][t], q_pe[t][h]], kvd long like a cached row */
    per_head_products(c, c->q_lat, (int64_t)H * kvd, kvd, &L->w[LT_K_B], R, &c->act_q_nope, n_tok);
    const attn_layout a = {.q = c->q_lat, .k = cache, .v = cache, .out = c->lat_out, .ldq_t = (int64_t)H * kvd,
                           .ldq_h = kvd, .ldk = kvd, .ldv = kvd, .kv_off = 0, .ldo_t = R, .ldo_h = (int64_t)B * R,
                           .d_k = kvd, .d_v = R, .n_kv_heads = 1, .group = H};
    attend(c, &a, n_tok);

    /* back out of latent space: att[t][h] = Wv_h lat_out[h][t], then o_proj */
    per_head_products(c, c->att, (int64_t)H * vd, vd, &L->w[LT_V_B], vd, &c->act_lat, n_tok);
    act_ready(c, &c->act_att, n_tok, &L->w[LT_O]);
    const moe_mm o = product(c->out, hp->n_embd, &L->w[LT_O], &c->act_att, NULL, n_tok);
    run_products(c, &o, 1);
}

/* gate = silu(gate) * up on rows rows of width values, and when the down
 * projection wants them quantized (a not NULL: gate's rows as an
 * activation), each row's int8 copy while it is in cache: one pass and one
 * barrier instead of two. */
static void swiglu_rows(const moe_ctx *c, float *gate, const float *up, int rows, int64_t width, moe_act *a) {
    #pragma omp for schedule(static)
    for (int r = 0; r < rows; r++) {
        c->kern->swiglu(gate + (size_t)r * width, up + (size_t)r * width, width);
        if (a) c->kern->quantize_act(a, r, r + 1);
    }
}

/* The dense FFN, or the shared expert, on all n_tok rows of xn into y. */
static void dense_ffn(moe_ctx *c, float *y, const moe_weight *gate, const moe_weight *up, const moe_weight *down,
                      int n_tok) {
    const int64_t f = gate->rows;
    act_ready(c, &c->act_xn, n_tok, gate);
    const moe_mm gu[2] = {product(c->hs_gate, f, gate, &c->act_xn, NULL, n_tok),
                          product(c->hs_up, f, up, &c->act_xn, NULL, n_tok)};
    run_products(c, gu, 2);
    /* this FFN's width of the shared buffers: a copy per thread, alike in all */
    moe_act hs = c->act_hs;
    hs.cols = f;
    hs.nb = (f + MOE_QK - 1) / MOE_QK;
    swiglu_rows(c, c->hs_gate, c->hs_up, n_tok, f, moe_dtype_is_quant(down->dtype) ? &hs : NULL);
    const moe_mm d = product(y, c->m->hp.n_embd, down, &hs, NULL, n_tok);
    run_products(c, &d, 1);
}

/* Prefetch, in decode: the next MoE layer's router applied to this layer's
 * normalized state predicts the experts that layer will want (the residual
 * stream changes little from one layer to the next); the expert source reads
 * them in the background while this layer computes. A batch wants most
 * experts anyway, so prefill does not predict. */
static void prefetch_next(moe_ctx *c, int layer, int n_tok) {
    const moe_hparams *hp = &c->m->hp;
    if (!c->experts.prefetch || n_tok != 1) return;
    int next = layer + 1;
    while (next < hp->n_layers && !hp->layer_is_moe[next]) next++;
    if (next >= hp->n_layers) return;
    const moe_layer *N = &c->m->layers[next];
    const moe_mm r = product(c->pf_scores, hp->n_experts, &N->w[LT_ROUTER], &c->act_xn, NULL, 1);
    run_products(c, &r, 1);
    #pragma omp single nowait
    {
        if (hp->router_bias) /* experts are chosen by sigmoid score + bias (DeepSeek-V3) */
            for (int e = 0; e < hp->n_experts; e++)
                c->pf_scores[e] = 1.0f / (1.0f + expf(-c->pf_scores[e])) + ((const float *)N->w[LT_ROUTER_BIAS].data)[e];
        moe_cache_topk(c->pf_scores, hp->n_experts, hp->n_experts_used, c->pf_sel);
        c->experts.prefetch(c->experts.self, next, hp->n_experts_used, c->pf_sel);
    }
}

/* Routes the n_tok tokens, groups their slots by expert and lists the
 * products: every chosen expert's gate and up (slot s's hidden row is s),
 * then their down projections. One thread. */
static void route_and_list(moe_ctx *c, int layer, int n_tok) {
    const moe_hparams *hp = &c->m->hp;
    const moe_layer *L = &c->m->layers[layer];
    const int E = hp->n_embd, k = hp->n_experts_used, F = hp->expert_ffn;
    const float *bias = hp->router_bias ? L->w[LT_ROUTER_BIAS].data : NULL;
    for (int t = 0; t < n_tok; t++)
        moe_route(hp, c->router + t * hp->n_experts, bias, c->route_scratch, c->sel + t * k, c->sel_w + t * k);
    if (c->on_route)
        for (int t = 0; t < n_tok; t++) c->on_route(c->on_route_user, c->pos + t, layer, k, c->sel + t * k, c->sel_w + t * k);
    moe_group_by_expert(&c->groups, c->sel, c->sel_w, n_tok, k, hp->n_experts);
    const int32_t *start = c->groups.start;
    int n_mm = 0, any_quant = 0;
    for (int e = 0; e < hp->n_experts; e++) {
        const int s0 = start[e], n = start[e + 1] - s0;
        if (!n) continue;
        const moe_weight *w = c->expert_w[e] = c->experts.acquire(c->experts.self, layer, e);
        any_quant |= moe_dtype_is_quant(w[ET_GATE].dtype);
        c->mm[n_mm++] = product(c->h_gate + (size_t)s0 * F, F, &w[ET_GATE], &c->act_xn, c->groups.token + s0, n);
        c->mm[n_mm++] = product(c->h_up + (size_t)s0 * F, F, &w[ET_UP], &c->act_xn, c->groups.token + s0, n);
    }
    c->n_gate_up = n_mm;
    for (int e = 0; e < hp->n_experts; e++) {
        const int s0 = start[e], n = start[e + 1] - s0;
        if (!n) continue;
        c->act_h_expert[e] = act_view(&c->act_h, s0, n);
        c->mm[n_mm++] = product(c->y_exp + (size_t)s0 * E, E, &c->expert_w[e][ET_DOWN], &c->act_h_expert[e], NULL, n);
    }
    c->experts_quant = any_quant;
}

static void moe_ffn(moe_ctx *c, int layer, int n_tok) {
    const moe_hparams *hp = &c->m->hp;
    const moe_layer *L = &c->m->layers[layer];
    const int E = hp->n_embd, F = hp->expert_ffn, slots = n_tok * hp->n_experts_used;

    act_ready(c, &c->act_xn, n_tok, &L->w[LT_ROUTER]);
    const moe_mm r = product(c->router, hp->n_experts, &L->w[LT_ROUTER], &c->act_xn, NULL, n_tok);
    run_products(c, &r, 1);
    #pragma omp single
    route_and_list(c, layer, n_tok);

    if (c->experts_quant) moe_act_quantize_team(c->kern, &c->act_xn, n_tok);
    prefetch_next(c, layer, n_tok); /* after this layer's experts are acquired (so pinned) */
    run_products(c, c->mm, c->n_gate_up);
    swiglu_rows(c, c->h_gate, c->h_up, slots, F, c->experts_quant ? &c->act_h : NULL);
    run_products(c, c->mm + c->n_gate_up, c->n_gate_up / 2);
    #pragma omp single nowait
    for (int e = 0; e < hp->n_experts; e++)
        if (c->groups.start[e + 1] > c->groups.start[e]) c->experts.release(c->experts.self, layer, e);

    /* out[token] = sum of weight x expert output over the token's slots;
     * each thread sums its own slice of the columns */
    const int nt = omp_get_num_threads(), th = omp_get_thread_num();
    const int i0 = E * th / nt, i1 = E * (th + 1) / nt;
    for (int t = 0; t < n_tok; t++) memset(c->out + (size_t)t * E + i0, 0, (size_t)(i1 - i0) * sizeof(float));
    for (int s = 0; s < slots; s++) {
        float *o = c->out + (size_t)c->groups.token[s] * E;
        const float *y = c->y_exp + (size_t)s * E, wt = c->groups.weight[s];
        for (int i = i0; i < i1; i++) o[i] += wt * y[i];
    }
    #pragma omp barrier

    if (hp->shared_ffn > 0) {
        float *ys = c->y_exp; /* the routed outputs are consumed by now */
        dense_ffn(c, ys, &L->w[LT_SHARED_GATE], &L->w[LT_SHARED_UP], &L->w[LT_SHARED_DOWN], n_tok);
        if (hp->shared_gate) {
            act_ready(c, &c->act_xn, n_tok, &L->w[LT_SHARED_ROUTER]);
            const moe_mm g = product(c->router, 1, &L->w[LT_SHARED_ROUTER], &c->act_xn, NULL, n_tok);
            run_products(c, &g, 1);
        }
        #pragma omp for schedule(static)
        for (int t = 0; t < n_tok; t++) {
            const float g = hp->shared_gate ? 1.0f / (1.0f + expf(-c->router[t])) : 1.0f;
            for (int i = 0; i < E; i++) c->out[(size_t)t * E + i] += g * ys[(size_t)t * E + i];
        }
    }
}

static void add_to_residual(moe_ctx *c, int n_tok) {
    const size_t n = (size_t)n_tok * c->m->hp.n_embd;
    #pragma omp for schedule(static)
    for (size_t i = 0; i < n; i++) c->x[i] += c->out[i];
}

static void norm_rows(const moe_ctx *c, float *out, const float *in, const moe_weight *w, int n_tok) {
    const int E = c->m->hp.n_embd;
    #pragma omp for schedule(static)
    for (int t = 0; t < n_tok; t++) moe_rmsnorm(out + t * E, in + t * E, w->data, E, c->m->hp.rms_eps);
}

/* One chunk of at most n_batch tokens. logits: n_tok rows, or NULL for only
 * the last row into c->logits (when last is set). */
static void forward_chunk(moe_ctx *c, const int32_t *tokens, int n_tok, float *logits, int last) {
    const moe_model *m = c->m;
    const moe_hparams *hp = &m->hp;
    const int E = hp->n_embd;
    #pragma omp for schedule(static)
    for (int t = 0; t < n_tok; t++) {
        moe_weight_row(&m->token_embd, tokens[t], c->x + (size_t)t * E);
        rope_angles(c, t, c->pos + t);
    }

    for (int l = 0; l < hp->n_layers; l++) {
        const moe_layer *L = &m->layers[l];
        norm_rows(c, c->xn, c->x, &L->w[LT_ATTN_NORM], n_tok);
        if (hp->attn_kind == MOE_ATTN_MLA) attention_mla(c, l, n_tok);
        else attention(c, l, n_tok);
        add_to_residual(c, n_tok);
        norm_rows(c, c->xn, c->x, &L->w[LT_FFN_NORM], n_tok);
        if (hp->layer_is_moe[l]) moe_ffn(c, l, n_tok);
        else dense_ffn(c, c->out, &L->w[LT_DENSE_GATE], &L->w[LT_DENSE_UP], &L->w[LT_DENSE_DOWN], n_tok);
        add_to_residual(c, n_tok);
    }

    if (logits) {
        norm_rows(c, c->xn, c->x, &m->output_norm, n_tok);
        act_ready(c, &c->act_xn, n_tok, &m->output);
        const moe_mm o = product(logits, hp->n_vocab, &m->output, &c->act_xn, NULL, n_tok);
        run_products(c, &o, 1);
        #pragma omp single nowait
        memcpy(c->logits, logits + (size_t)(n_tok - 1) * hp->n_vocab, (size_t)hp->n_vocab * sizeof(float));
    } else if (last) {
        norm_rows(c, c->xn, c->x + (size_t)(n_tok - 1) * E, &m->output_norm, 1);
        act_ready(c, &c->act_xn, 1, &m->output);
        const moe_mm o = product(c->logits, hp->n_vocab, &m->output, &c->act_xn, NULL, 1);
        run_products(c, &o, 1);
    }
    #pragma omp single
    c->pos += n_tok;
}

int moe_eval(moe_ctx *c, const int32_t *tokens, int n, float *logits, moe_error *err) {
    const moe_hparams *hp = &c->m->hp;
    if (n <= 0) return moe_fail(err, "nothing to evaluate: %d tokens", n);
    if (c->pos + n > c->n_ctx)
        return moe_fail(err, "context full: %d positions used, %d more do not fit in %d", c->pos, n, c->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return moe_fail(err, "token id %d at position %d is outside the vocabulary [0, %d)", tokens[i], i,
                            hp->n_vocab);
    moe_blas_threads(c->n_threads);
    #pragma omp parallel num_threads(c->n_threads)
    for (int i = 0; i < n; i += c->n_batch) {
        const int chunk = n - i < c->n_batch ? n - i : c->n_batch;
        forward_chunk(c, tokens + i, chunk, logits ? logits + (size_t)i * hp->n_vocab : NULL, i + chunk == n);
    }
    return 0;
}
