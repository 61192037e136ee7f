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

/* Quants of x for scale d (as stored), and the squared error they leave. */
static double quants_for(const float *x, int n, float d, int lo, int hi, int8_t *q) {
    const float inv = d != 0 ? 1.0f / d : 0.0f;
    double err = 0;
    for (int i = 0; i < MOE_QK; i++) {
        int v = i < n ? (int)lrintf(x[i] * inv) : 0;
        q[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
        if (i < n) err += (double)(x[i] - d * q[i]) * (x[i] - d * q[i]);
    }
    return err;
}

/* Scale and quants of one block of n <= 32 values (the rest are zero).
 * q8 is symmetric over [-127, 127] with d = max|x| / 127. q4 uses [-8, 7]:
 * starting from the scale that maps the value of largest magnitude to -8, it
 * tries nearby scales, refits each by least squares (d = sum(x q) / sum(q q))
 * and keeps the one with the smallest squared error: with only 16 levels the
 * best scale is rarely the one set by the extreme value. */
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
    double best = quants_for(x, n, best_d, -8, 7, q);
    int8_t trial[MOE_QK];
    for (int step = -10; step <= 10; step++) {
        const float d0 = signed_max / (-8.0f + 0.1f * (float)step);
        quants_for(x, n, d0, -8, 7, trial);
        double xq = 0, qq = 0;
        for (int i = 0; i < n; i++) {
            xq += (double)x[i] * trial[i];
            qq += (double)trial[i] * trial[i];
        }
        if (qq == 0) continue;
        const float d = round_trip_f16((float)(xq / qq));
        const double err = quants_for(x, n, d, -8, 7, trial);
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
