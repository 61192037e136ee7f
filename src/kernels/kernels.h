/*
 * kernels.h — the matrix products every layer runs on. THE hot code: nearly
 * all of the time of a forward pass is spent here.
 *
 * A product is described by a moe_mm: weight w (rows x cols, any dtype), the
 * activations a (float rows, plus an int8 copy for q8/q4 weights), an
 * optional index that picks which activation row feeds each output row (so an
 * expert can run over its tokens without gathering them), and the output.
 * An ISA's kernel computes a range of weight rows for every token of the
 * product; moe_matmul_run splits many products over the threads at once, so
 * the 8 small experts of one token, or the 2 large ones, all keep every core
 * busy.
 */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include "model/model.h"
#include "quant/quant.h"
#include "util/half.h"

/* Activations: n rows of cols floats, and for quantized weights the same rows
 * as int8 in blocks of MOE_QK with a scale each: x ~ d * q. */
typedef struct moe_act {
    const float *x;          /* n x cols */
    int8_t *q;               /* n x nb * MOE_QK, zero-padded */
    float *d;                /* n x nb block scales */
    int32_t *q4_base;        /* n x nb: -8 sum(q) of the block, where a q4 block's
                              * integer sum starts: its weights are stored as q + 8 */
    int64_t cols, nb;
    int n;
} moe_act;

typedef struct moe_mm {
    float *y;                /* output row j at y + j * ldy */
    int64_t ldy;
    const moe_weight *w;
    const moe_act *a;
    const int32_t *idx;      /* activation row of output row j; NULL: row j */
    int n;                   /* output rows (tokens) */
} moe_mm;

/* The 32 floats of block b of activation row t: in place, or copied into
 * buf and zero-padded when the row ends inside the block. */
static inline const float *moe_act_block(const moe_act *a, int t, int64_t b, float *buf) {
    const float *x = a->x + (size_t)t * (size_t)a->cols + b * MOE_QK;
    const int64_t n = a->cols - b * MOE_QK;
    if (n >= MOE_QK) return x;
    for (int i = 0; i < MOE_QK; i++) buf[i] = i < n ? x[i] : 0.0f;
    return buf;
}

/* Value i of a cached row or block: f32, or (half) f16. */
static inline float moe_cached_value(const void *v, size_t i, int half) {
    return half ? moe_f16_to_f32(((const uint16_t *)v)[i]) : ((const float *)v)[i];
}

/* wsum_tile's columns [c0, d) of one query, one at a time: the scalar
 * kernel, and the SIMD kernels' tails; v in f32 or (half) f16. */
static inline void moe_wsum_columns(float *o, const float *s, float scale, const void *v, int half, int n, int64_t ldv,
                                    int c0, int d) {
    for (int c = c0; c < d; c++) {
        float acc = 0;
        for (int p = 0; p < n; p++) acc += s[p] * moe_cached_value(v, (size_t)p * (size_t)ldv + (size_t)c, half);
        o[c] += acc * scale;
    }
}

/* OF(NQ) with NQ the constant 1..4 that nq is: a SIMD kernel compiled once
 * per query count, its accumulators in registers. */
#define MOE_FOR_NQ(nq, OF) \
    do { \
        switch (nq) { \
        case 4: OF(4); break; \
        case 3: OF(3); break; \
        case 2: OF(2); break; \
        default: OF(1); break; \
        } \
    } while (0)

/* The tokens left after a kernel's full tiles of 8 (1 to 7) as one tile:
 * TILE_OF(T) with T a constant, so each size is its own inlined copy with
 * its accumulators in registers. */
#define MOE_LEFTOVER_TILE(rest, TILE_OF) \
    do { \
        switch (rest) { \
        case 7: TILE_OF(7); break; \
        case 6: TILE_OF(6); break; \
        case 5: TILE_OF(5); break; \
        case 4: TILE_OF(4); break; \
        case 3: TILE_OF(3); break; \
        case 2: TILE_OF(2); break; \
        case 1: TILE_OF(1); break; \
        default: break; \
        } \
    } while (0)

/* Computes weight rows [r0, r1) of mm for all its tokens; r0 is a multiple
 * of MOE_QR. */
typedef void (*moe_mm_kernel)(const moe_mm *mm, int64_t r0, int64_t r1);
/* Quantizes activation rows [t0, t1) of a (x -> q, d, s). */
typedef void (*moe_quantize_act_fn)(moe_act *a, int t0, int t1);

typedef struct moe_kernels {
    const char *isa;
    moe_mm_kernel mm[MOE_DTYPE_COUNT];
    /* 1: bf16 weights multiply the activations rounded to bf16 (nearest
     * even; AVX512_BF16's vdpbf16ps), else the activations as they are.
     * Such kernels run only when named (MOE_ISA). */
    int bf16_rounds_activations;
    moe_quantize_act_fn quantize_act;
    /* decode attention's inner loops, per cached position and head:
     * dot: sum a[i] b[i] (i < n), a query against a key;
     * axpy: y[i] += a x[i] (i < n), a value into a head's output. */
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    /* the same with the key or value in f16 (an f16 KV cache) */
    float (*dot_half)(const float *a, const uint16_t *b, int n);
    void (*axpy_half)(float *y, float a, const uint16_t *x, int n);
    /* prefill's scores: nq (1..4) queries q_i = q + i * ldq against keys
     * stored transposed in blocks of MOE_KT_BLOCK (see moe_kt_index), all
     * blocks that hold keys below n: s[i * lds + p] = scale * q_i . k_p
     * for p < n rounded up to the block, each product d long. */
    void (*scores_kt)(float *s, int64_t lds, const float *q, int64_t ldq, int nq, const float *kt, int n, int d,
                      float scale);
    /* the weighted values of nq (1..4) queries, V read once for all, added
     * to their outputs: o + i ldo += scale[i] sum_p s[i lds + p] v_p
     * (v_p = v + p * ldv, d values). */
    void (*wsum_tile)(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq, const float *v,
                      int n, int64_t ldv, int d);
    /* the same with V in f16 (an f16 KV cache) */
    void (*wsum_tile_half)(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq,
                           const uint16_t *v, int n, int64_t ldv, int d);
    /* gate[i] = silu(gate[i]) * up[i], i < n (moe_swiglu is the reference) */
    void (*swiglu)(float *gate_inout, const float *up, int64_t n);
    /* attention's softmax before its normalization: s[p] = e^(s[p] - max s),
     * p < n (n >= 1); returns their sum (moe_softmax_exp is the reference) */
    float (*softmax_exp)(float *s, int n);
    /* the KV cache in f16 (IEEE binary16): dst[i] = src[i] rounded to the
     * nearest half, ties to even, saturated at +-65504 (the largest finite
     * half: one infinite key would make every score of its head NaN), NaN
     * kept a NaN; and back (exact), i < n. moe_to_half and moe_from_half
     * are the reference. */
    void (*to_half)(uint16_t *dst, const float *src, int64_t n);
    void (*from_half)(float *dst, const uint16_t *src, int64_t n);
} moe_kernels;

/* Keys transposed for scores_kt: blocks of MOE_KT_BLOCK keys, each block d
 * rows of MOE_KT_BLOCK floats, so one vector load gives one element of 16
 * keys and a query's element is broadcast against it: no horizontal sums. */
#define MOE_KT_BLOCK 16
static inline size_t moe_kt_index(int key, int j, int d) {
    return ((size_t)(key / MOE_KT_BLOCK) * (size_t)d + (size_t)j) * MOE_KT_BLOCK + (size_t)(key % MOE_KT_BLOCK);
}

/* The best kernels this CPU runs, or those named by `force` ("scalar",
 * "avx2", "avx512", "avx512bf16", ...; NULL or "" for automatic). NULL with err when the forced ISA
 * is unknown or not supported here. */
const moe_kernels *moe_kernels_select(const char *force, moe_error *err);
/* The kernels of one ISA if built and supported by this CPU, else NULL. */
const moe_kernels *moe_kernels_for(const char *isa);

extern const moe_kernels moe_kernels_scalar;
#if defined(__x86_64__)
extern const moe_kernels moe_kernels_avx2;
extern const moe_kernels moe_kernels_avx512;
extern const moe_kernels moe_kernels_avx512bf16; /* avx512 with bf16 weights through vdpbf16ps */
#endif
#if defined(__aarch64__)
extern const moe_kernels moe_kernels_neon;
#endif

/* Runs n products, splitting their rows over the OpenMP threads. Activations
 * must already be quantized where a weight needs it. */
void moe_matmul_run(const moe_kernels *k, const moe_mm *mm, int n);

/* The same inside a parallel region, for a team that stays together over a
 * whole forward pass (no fork and join per product): every thread of the
 * team calls it with the same products, and all return once the products
 * are done (it ends in a barrier). `shares` is the team's bookkeeping, from
 * moe_team_shares_new, shared by the team. */
typedef struct moe_team_shares moe_team_shares;
moe_team_shares *moe_team_shares_new(void);
void moe_team_shares_free(moe_team_shares *s);
void moe_matmul_team(const moe_kernels *k, const moe_mm *mm, int n, moe_team_shares *shares);

/* Threads of the BLAS library that large f32 products use (when built with it). */
void moe_blas_threads(int n);

/* Elementwise work on fewer values than this runs on the calling thread: a
 * parallel region costs more than it saves there (decode). */
#define MOE_PARALLEL_MIN_VALUES 32768

/* Buffers for `rows` activation rows of `cols` columns read from x (a->n is
 * left 0 for the caller to set); -1 when out of memory. */
int moe_act_alloc(moe_act *a, const float *x, size_t rows, int64_t cols);
void moe_act_free(moe_act *a);

/* Quantizes all rows of a, in parallel when they are many. */
void moe_act_quantize(const moe_kernels *k, moe_act *a);
/* Rows [0, n) of a, called by every thread of a team (see moe_matmul_team):
 * the rows are split over the team, and all return when all are quantized. */
void moe_act_quantize_team(const moe_kernels *k, moe_act *a, int n);

/* Convenience: y = w x for n contiguous rows (a single product). */
void moe_matmul(const moe_kernels *k, float *y, const moe_weight *w, moe_act *a);

/* One row of w as float32 (an embedding lookup). */
void moe_weight_row(const moe_weight *w, int64_t row, float *out);

/* Elementwise helpers of the forward pass. */
void moe_rmsnorm(float *out, const float *x, const float *weight, int n, float eps);
void moe_swiglu(float *gate_inout, const float *up, int64_t n); /* gate = silu(gate) * up */
float moe_softmax_exp(float *s, int n);                          /* see moe_kernels.softmax_exp */
void moe_to_half(uint16_t *dst, const float *src, int64_t n);    /* see moe_kernels.to_half */
void moe_from_half(float *dst, const uint16_t *src, int64_t n);

#endif
