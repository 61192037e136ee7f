/*
 * kernels_scalar.c — the reference kernels: plain C, built everywhere, and
 * the twin every SIMD kernel is tested against. Integer block sums are exact,
 * so a SIMD kernel differs from these only in the order of float additions.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "quant/quant.h"
#include "util/half.h"

static inline const float *act_row(const moe_mm *mm, int j) {
    return mm->a->x + (size_t)(mm->idx ? mm->idx[j] : j) * (size_t)mm->a->cols;
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot(const float *a, const float *b, int n) { return dot_f32(a, b, n); }

static void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static float dot_half(const float *a, const uint16_t *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * moe_f16_to_f32(b[i]);
    return s;
}

static void axpy_half(float *y, float a, const uint16_t *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * moe_f16_to_f32(x[i]);
}

static void scores_kt(float *s, int64_t lds, const float *q, int64_t ldq, int nq, const float *kt, int n, int d,
                      float scale) {
    for (int b = 0; b * MOE_KT_BLOCK < n; b++)
        for (int i = 0; i < nq; i++)
            for (int l = 0; l < MOE_KT_BLOCK; l++) {
                float acc = 0;
                for (int j = 0; j < d; j++) acc += q[i * ldq + j] * kt[moe_kt_index(b * MOE_KT_BLOCK + l, j, d)];
                s[i * lds + b * MOE_KT_BLOCK + l] = acc * scale;
            }
}

static void mm_f32(const moe_mm *mm, int64_t r0, int64_t r1) {
    const moe_weight *w = mm->w;
    for (int64_t r = r0; r < r1; r++)
        for (int j = 0; j < mm->n; j++)
            mm->y[j * mm->ldy + r] = dot_f32((const float *)w->data + r * w->cols, act_row(mm, j), w->cols);
}

/* 16-bit weights: widen a chunk of a row once, use it for every token. */
#define CHUNK 256
static void mm_half(const moe_mm *mm, int64_t r0, int64_t r1) {
    const moe_weight *w = mm->w;
    float buf[CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        for (int j = 0; j < mm->n; j++) mm->y[j * mm->ldy + r] = 0;
        for (int64_t c = 0; c < w->cols; c += CHUNK) {
            int64_t n = w->cols - c < CHUNK ? w->cols - c : CHUNK;
            moe_dequantize_rows(w->dtype, (const uint16_t *)w->data + r * w->cols + c, 1, n, 0, 1, buf);
            for (int j = 0; j < mm->n; j++) mm->y[j * mm->ldy + r] += dot_f32(buf, act_row(mm, j) + c, n);
        }
    }
}

static void mm_quant(const moe_mm *mm, int64_t r0, int64_t r1) {
    const moe_weight *w = mm->w;
    const moe_act *a = mm->a;
    const int q4 = w->dtype == MOE_Q4;
    const int64_t nb = a->nb;
    const size_t gbytes = q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES;
    for (int64_t g = r0 / MOE_QR; g * MOE_QR < r1; g++) {
        const uint8_t *grp = (const uint8_t *)w->data + (size_t)g * (size_t)nb * gbytes;
        for (int j = 0; j < mm->n; j++) {
            const int64_t t = mm->idx ? mm->idx[j] : j;
            const int8_t *xq = a->q + t * nb * MOE_QK;
            float acc[MOE_QR] = {0};
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = grp + (size_t)b * gbytes;
                const float dx = a->d[t * nb + b];
                const int32_t base = a->q4_base[t * nb + b];
                for (int r = 0; r < MOE_QR; r++) {
                    uint16_t dh;
                    memcpy(&dh, blk + 2 * r, 2);
                    const float dw = moe_f16_to_f32(dh);
                    int32_t sum = 0;
                    if (q4) {
                        const uint8_t *nib = blk + 2 * MOE_QR + r * (MOE_QK / 2);
                        for (int i = 0; i < MOE_QK / 2; i++)
                            sum += (nib[i] & 15) * xq[b * MOE_QK + i] + (nib[i] >> 4) * xq[b * MOE_QK + i + MOE_QK / 2];
                        acc[r] += dw * dx * (float)(sum + base);
                    } else {
                        const int8_t *q = (const int8_t *)(blk + 2 * MOE_QR + r * MOE_QK);
                        for (int i = 0; i < MOE_QK; i++) sum += q[i] * xq[b * MOE_QK + i];
                        acc[r] += dw * dx * (float)sum;
                    }
                }
            }
            for (int r = 0; r < MOE_QR && g * MOE_QR + r < r1; r++) mm->y[j * mm->ldy + g * MOE_QR + r] = acc[r];
        }
    }
}

static void quantize_act(moe_act *a, int t0, int t1) {
    for (int t = t0; t < t1; t++) {
        const float *x = a->x + (size_t)t * (size_t)a->cols;
        for (int64_t b = 0; b < a->nb; b++) {
            const int64_t c0 = b * MOE_QK, n = a->cols - c0 < MOE_QK ? a->cols - c0 : MOE_QK;
            float amax = 0;
            for (int64_t i = 0; i < n; i++) amax = fabsf(x[c0 + i]) > amax ? fabsf(x[c0 + i]) : amax;
            const float d = amax / 127.0f, inv = d ? 1.0f / d : 0.0f;
            int8_t *q = a->q + (size_t)t * (size_t)(a->nb * MOE_QK) + c0;
            int sum = 0;
            for (int i = 0; i < MOE_QK; i++) {
                q[i] = i < n ? (int8_t)lrintf(x[c0 + i] * inv) : 0;
                sum += q[i];
            }
            a->d[t * a->nb + b] = d;
            a->q4_base[t * a->nb + b] = -8 * sum;
        }
    }
}

/* The reference: one query at a time. */
static void wsum_tile(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq, const float *v,
                      int n, int64_t ldv, int d) {
    for (int i = 0; i < nq; i++) moe_wsum_columns(o + i * ldo, s + i * lds, scale[i], v, 0, n, ldv, 0, d);
}

static void wsum_tile_half(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq,
                           const uint16_t *v, int n, int64_t ldv, int d) {
    for (int i = 0; i < nq; i++) moe_wsum_columns(o + i * ldo, s + i * lds, scale[i], v, 1, n, ldv, 0, d);
}

const moe_kernels moe_kernels_scalar = {
    .isa = "scalar",
    .mm = {[MOE_F32] = mm_f32, [MOE_F16] = mm_half, [MOE_BF16] = mm_half, [MOE_Q8] = mm_quant, [MOE_Q4] = mm_quant},
    .quantize_act = quantize_act,
    .dot = dot,
    .axpy = axpy,
    .dot_half = dot_half,
    .axpy_half = axpy_half,
    .wsum_tile = wsum_tile,
    .wsum_tile_half = wsum_tile_half,
    .scores_kt = scores_kt,
    .swiglu = moe_swiglu,
    .softmax_exp = moe_softmax_exp,
    .to_half = moe_to_half,
    .from_half = moe_from_half,
};
