/*
 * matmul.c — portable matrix products for f32, f16 and bf16 weights.
 *
 * Each thread takes a block of weight rows and multiplies every token of the
 * batch by them, so each weight is read from memory once per call however
 * many tokens there are. 16-bit weights are widened to float32 one chunk of a
 * row at a time into a small buffer on the stack: no allocation, and the chunk
 * stays in L1 while every token uses it. Sums use eight independent
 * accumulators so the compiler can vectorize them without -ffast-math.
 */
#include "kernels.h"

#include <math.h>
#include <omp.h>

#include "util/half.h"

#define CHUNK 256      /* weights widened at a time */
#define TOK_BLOCK 16   /* tokens sharing one widened chunk */

static float dot_f32(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void widen(float *out, const moe_weight *w, int64_t row, int64_t c0, int n) {
    if (w->dtype == MOE_F16) {
        const uint16_t *p = (const uint16_t *)w->data + row * w->cols + c0;
        for (int i = 0; i < n; i++) out[i] = moe_f16_to_f32(p[i]);
    } else {
        const uint16_t *p = (const uint16_t *)w->data + row * w->cols + c0;
        for (int i = 0; i < n; i++) out[i] = moe_bf16_to_f32(p[i]);
    }
}

/* Rows [r0, r1) of y for tokens [t0, t1). */
static void matmul_rows(float *y, const moe_weight *w, const float *x, int t0, int t1, int64_t r0, int64_t r1) {
    const int64_t cols = w->cols, rows = w->rows;
    if (w->dtype == MOE_F32) {
        const float *wd = w->data;
        for (int64_t r = r0; r < r1; r++)
            for (int t = t0; t < t1; t++) y[t * rows + r] = dot_f32(wd + r * cols, x + t * cols, (int)cols);
        return;
    }
    float buf[CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        float acc[TOK_BLOCK];
        for (int t = t0; t < t1; t++) acc[t - t0] = 0;
        for (int64_t c = 0; c < cols; c += CHUNK) {
            int n = cols - c < CHUNK ? (int)(cols - c) : CHUNK;
            widen(buf, w, r, c, n);
            for (int t = t0; t < t1; t++) acc[t - t0] += dot_f32(buf, x + t * cols + c, n);
        }
        for (int t = t0; t < t1; t++) y[t * rows + r] = acc[t - t0];
    }
}

static void matmul_team(float *y, const moe_weight *w, const float *x, int n_tok) {
    const int64_t rows = w->rows;
    const int64_t row_block = 16;
    const int64_t n_blocks = (rows + row_block - 1) / row_block;
    #pragma omp for schedule(dynamic, 1) collapse(2)
    for (int tb = 0; tb < (n_tok + TOK_BLOCK - 1) / TOK_BLOCK; tb++) {
        for (int64_t b = 0; b < n_blocks; b++) {
            int t0 = tb * TOK_BLOCK, t1 = t0 + TOK_BLOCK < n_tok ? t0 + TOK_BLOCK : n_tok;
            int64_t r0 = b * row_block, r1 = r0 + row_block < rows ? r0 + row_block : rows;
            matmul_rows(y, w, x, t0, t1, r0, r1);
        }
    }
}

void moe_matmul(float *y, const moe_weight *w, const float *x, int n_tok) {
    if (omp_in_parallel()) {
        matmul_team(y, w, x, n_tok);
    } else {
        #pragma omp parallel
        matmul_team(y, w, x, n_tok);
    }
}

void moe_weight_row(const moe_weight *w, int64_t row, float *out) {
    if (w->dtype == MOE_F32) {
        const float *p = (const float *)w->data + row * w->cols;
        for (int64_t i = 0; i < w->cols; i++) out[i] = p[i];
        return;
    }
    for (int64_t c = 0; c < w->cols; c += CHUNK) {
        int n = w->cols - c < CHUNK ? (int)(w->cols - c) : CHUNK;
        widen(out + c, w, row, c, n);
    }
}

void moe_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

void moe_swiglu(float *gate_inout, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate_inout[i];
        gate_inout[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
