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

/* Scale and quants of one block of n <= 32 values (the rest are zero). */
static uint16_t quant_block(moe_dtype t, const float *x, int n, int8_t *q) {
    float amax = 0, signed_max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); signed_max = x[i]; }
    /* q8: symmetric over [-127, 127]. q4: the value of largest magnitude maps
     * to -8, so the asymmetric range [-8, 7] is used in full. */
    float d = t == MOE_Q8 ? amax / 127.0f : signed_max / -8.0f;
    uint16_t dh = moe_f32_to_f16(d);
    float dq = moe_f16_to_f32(dh);  /* quantize against the scale as stored */
    float inv = dq != 0 ? 1.0f / dq : 0.0f;
    int lo = t == MOE_Q8 ? -127 : -8, hi = t == MOE_Q8 ? 127 : 7;
    for (int i = 0; i < MOE_QK; i++) {
        int v = i < n ? (int)lrintf(x[i] * inv) : 0;
        q[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
    }
    return dh;
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
