/*
 * quant.h — element types and block formats of weights, and the scalar
 * reference quantizer/dequantizer that everything else is checked against.
 *
 * q8 and q4 store a matrix in groups of MOE_QR = 4 consecutive rows; within a
 * group, blocks of MOE_QK = 32 columns. One group-block holds the four rows'
 * scales (f16) followed by the four rows' quants, so a kernel that loads 32
 * activations once can multiply them into four rows:
 *
 *   q8 group-block (136 bytes): f16 d[4] | int8 q[4][32]              w = d * q
 *   q4 group-block  (72 bytes): f16 d[4] | u8 nib[4][16]              w = d * (n - 8)
 *
 * In q4, byte j of a row holds column j in its low nibble and column j + 16
 * in its high nibble. Rows are padded to a multiple of 4 and columns to a
 * multiple of 32 with zeros; the logical shape stays rows x cols.
 * Group-blocks are stored group-major: all column blocks of rows 0-3, then of
 * rows 4-7, and so on, so a thread that owns a range of rows reads one
 * contiguous range of bytes.
 */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "moe.h"

#define MOE_QK 32
#define MOE_QR 4
#define MOE_Q8_GROUP_BYTES (MOE_QR * 2 + MOE_QR * MOE_QK)
#define MOE_Q4_GROUP_BYTES (MOE_QR * 2 + MOE_QR * MOE_QK / 2)

static inline int moe_dtype_is_quant(moe_dtype t) { return t == MOE_Q8 || t == MOE_Q4; }

/* Bytes of a rows x cols matrix (rows = 1 for a vector). */
uint64_t moe_tensor_bytes(moe_dtype t, uint64_t rows, uint64_t cols);

/* Bytes of one row group (MOE_QR rows) of a quantized matrix of cols columns. */
static inline uint64_t moe_quant_group_bytes(moe_dtype t, uint64_t cols) {
    uint64_t blocks = (cols + MOE_QK - 1) / MOE_QK;
    return blocks * (t == MOE_Q8 ? MOE_Q8_GROUP_BYTES : MOE_Q4_GROUP_BYTES);
}

/* Converts a row-major float32 matrix into dtype t (any type). dst holds
 * moe_tensor_bytes(t, rows, cols) bytes. */
void moe_quantize(moe_dtype t, const float *src, int64_t rows, int64_t cols, void *dst);

/* Decodes rows [r0, r0 + n) of a matrix stored as t into float32. */
void moe_dequantize_rows(moe_dtype t, const void *data, int64_t rows, int64_t cols, int64_t r0, int64_t n,
                         float *out);

#endif
