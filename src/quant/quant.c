/*
 * quant.c — the reference (scalar) conversions between float32 and every
 * weight type. See quant.h for the block layout.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "util/half.h"

static const char *const dtype_names[MOE_DTYPE_COUNT] = {
    [MOE_F32] = "f32", [MOE_F16] = "f16", [MOE_BF16] = "bf16", [MOE_Q8] = "q8", [MOE_Q4] = "q4"};

const char *moe_dtype_name(moe_dtype t) { return (unsigned)t < MOE_DTYPE_COUNT ? dtype_names[t] : "?"; }

int moe_dtype_from_name(const char *name) {
    for (int t = 0; t < MOE_DTYPE_COUNT; t++)
        if (!strcmp(name, dtype_names[t])) return t;
    return -1;
}

uint64_t moe_tensor_bytes(moe_dtype t, uint64_t rows, uint64_t cols) {
    switch (t) {
    case MOE_F32: return rows * cols * 4;
    case MOE_F16: case MOE_BF16: return rows * cols * 2;
    case MOE_Q8: case MOE_Q4: return (rows + MOE_QR - 1) / MOE_QR * moe_quant_group_bytes(t, cols);
    default: return 0;
    }
}

static float round_trip_f16(float d) { return moe_f16_to_f32(moe_f32_to_f16(d)); }

/* Round half to even, as lrintf in the default rounding mode, for |x| < 2^22:
 * adding and removing 1.5 * 2^23 leaves no fraction bits. Plain arithmetic,
 * so the loops below vectorize. */
static inline float round_even(float x) {
    const float magic = 12582912.0f;
    return (x + magic) - magic;
}

/* Quants of x for scale d (as stored), clamped to [lo, hi]. */
static void quants_for(const float *x, int n, float d, float lo, float hi, int8_t *q) {
    const float inv = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < MOE_QK; i++) {
        float v = i < n ? round_even(x[i] * inv) : 0.0f;
        q[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
    }
}

static double error_of(const float *x, int n, float d, const int8_t *q) {
    double err = 0;
    for (int i = 0; i < n; i++) err += (double)(x[i] - d * q[i]) * (x[i] - d * q[i]);
    return err;
}

/* Scale and quants of one block of n <= 32 values (the rest are zero).
 * q8 is symmetric over [-127, 127] with d = max|x| / 127. q4 uses [-8, 7]:
 * starting from the scale that maps the value of largest magnitude to -8, it
 * tries nearby scales; for each, the quants it gives are refitted by least
 * squares (d = sum(x q) / sum(q q)), and the pair with the smallest squared
 * error is kept: with only 16 levels the best scale is rarely the one set by
 * the extreme value. */
#define Q4_SCALE_STEPS 6
static uint16_t quant_block(moe_dtype t, const float *x, int n, int8_t *q) {
    float amax = 0, signed_max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); signed_max = x[i]; }
    if (t == MOE_Q8) {
        uint16_t dh = moe_f32_to_f16(amax / 127.0f);
        quants_for(x, n, moe_f16_to_f32(dh), -127, 127, q);
        return dh;
    }
    if (amax == 0) {
        memset(q, 0, MOE_QK);
        return 0;
    }
    float best_d = round_trip_f16(signed_max / -8.0f);
    quants_for(x, n, best_d, -8, 7, q);
    double best = error_of(x, n, best_d, q);
    int8_t trial[MOE_QK];
    for (int step = -Q4_SCALE_STEPS; step <= Q4_SCALE_STEPS; step++) {
        quants_for(x, n, signed_max / (-8.0f + 0.15f * (float)step), -8, 7, trial);
        float xq = 0, qq = 0;
        for (int i = 0; i < MOE_QK; i++) {
            xq += (i < n ? x[i] : 0.0f) * trial[i];
            qq += (float)(trial[i] * trial[i]);
        }
        if (qq == 0) continue;
        const float d = round_trip_f16(xq / qq);
        const double err = error_of(x, n, d, trial);
        if (err < best) {
            best = err;
            best_d = d;
            memcpy(q, trial, MOE_QK);
        }
    }
    return moe_f32_to_f16(best_d);
}

static void quantize_blocked(moe_dtype t, const float *src, int64_t rows, int64_t cols, uint8_t *dst) {
    const int64_t nb = (cols + MOE_QK - 1) / MOE_QK;
    const size_t gb = t == MOE_Q8 ? MOE_Q8_GROUP_BYTES : MOE_Q4_GROUP_BYTES;
    for (int64_t g = 0; g < (rows + MOE_QR - 1) / MOE_QR; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = dst + ((size_t)g * (size_t)nb + (size_t)b) * gb;
            for (int r = 0; r < MOE_QR; r++) {
                int64_t row = g * MOE_QR + r, c0 = b * MOE_QK;
                int n = row < rows ? (int)(cols - c0 < MOE_QK ? cols - c0 : MOE_QK) : 0;
                int8_t q[MOE_QK];
                uint16_t d = quant_block(t, row < rows ? src + row * cols + c0 : src, n, q);
                memcpy(blk + 2 * r, &d, 2);
                if (t == MOE_Q8) {
                    memcpy(blk + 2 * MOE_QR + r * MOE_QK, q, MOE_QK);
                } else {
                    uint8_t *nib = blk + 2 * MOE_QR + r * (MOE_QK / 2);
                    for (int j = 0; j < MOE_QK / 2; j++)
                        nib[j] = (uint8_t)((q[j] + 8) | ((q[j + MOE_QK / 2] + 8) << 4));
                }
            }
        }
}

void moe_quantize(moe_dtype t, const float *src, int64_t rows, int64_t cols, void *dst) {
    const size_t n = (size_t)(rows * cols);
    switch (t) {
    case MOE_F32: memcpy(dst, src, n * 4); break;
    case MOE_F16: for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moe_f32_to_f16(src[i]); break;
    case MOE_BF16: for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moe_f32_to_bf16(src[i]); break;
    default: quantize_blocked(t, src, rows, cols, dst); break;
    }
}

void moe_dequantize_rows(moe_dtype t, const void *data, int64_t rows, int64_t cols, int64_t r0, int64_t n,
                         float *out) {
    (void)rows;
    for (int64_t row = r0; row < r0 + n; row++, out += cols) {
        if (t == MOE_F32) { memcpy(out, (const float *)data + row * cols, (size_t)cols * 4); continue; }
        if (t == MOE_F16 || t == MOE_BF16) {
            const uint16_t *p = (const uint16_t *)data + row * cols;
            for (int64_t c = 0; c < cols; c++) out[c] = t == MOE_F16 ? moe_f16_to_f32(p[c]) : moe_bf16_to_f32(p[c]);
            continue;
        }
        const int64_t nb = (cols + MOE_QK - 1) / MOE_QK, g = row / MOE_QR;
        const int r = (int)(row % MOE_QR);
        const size_t gb = t == MOE_Q8 ? MOE_Q8_GROUP_BYTES : MOE_Q4_GROUP_BYTES;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)data + ((size_t)g * (size_t)nb + (size_t)b) * gb;
            uint16_t dh;
            memcpy(&dh, blk + 2 * r, 2);
            const float d = moe_f16_to_f32(dh);
            for (int i = 0; i < MOE_QK && b * MOE_QK + i < cols; i++) {
                int q;
                if (t == MOE_Q8) q = ((const int8_t *)(blk + 2 * MOE_QR + r * MOE_QK))[i];
                else {
                    uint8_t byte = blk[2 * MOE_QR + r * (MOE_QK / 2) + i % (MOE_QK / 2)];
                    q = (i < MOE_QK / 2 ? byte & 15 : byte >> 4) - 8;
                }
                out[b * MOE_QK + i] = d * (float)q;
            }
        }
    }
}
