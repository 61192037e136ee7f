/*
 * kernels_neon.c — AArch64 Advanced SIMD (NEON) kernels. Baseline ARMv8.0-A:
 * every AArch64 CPU has them, so they need no flags and no run-time check.
 * Where the compiler targets the dot-product extension (-march=armv8.2-a+dotprod
 * or a CPU that has it), the int8 block dots use SDOT; otherwise widening
 * multiplies.
 *
 * q4/q8: activations are int8 in blocks of 32 (moe_act). For each group of
 * four weight rows and each block, the four rows' 32 weights are loaded (and
 * for q4 unpacked from nibbles) once and multiplied into up to four tokens.
 * Each row's products go into an int32x4 (SDOT, or vmull_s8 + vpadalq_s16,
 * exact for any int8 values); two pairwise adds fold the four rows into one
 * vector, so the block's scales are applied to four rows with one convert and
 * two multiply-adds. q4 weights are stored as n = q + 8 in [0, 15]:
 * sum((n - 8) x) = sum(n x) - 8 sum(x), and sum(x) comes with the activations.
 *
 * f32/f16/bf16: four rows at a time share each load of the activations; f16
 * is widened with FCVTL (vcvt_f32_f16), bf16 by a shift into the high half.
 * dot, axpy and wsum_tile (attention) are plain four-lane FMA loops.
 */
#include <arm_neon.h>
#include <string.h>

#include "kernels.h"
#include "quant/quant.h"
#include "util/half.h"

#define TOK_TILE 4

static inline const float *act_row(const moe_mm *mm, int j) {
    return mm->a->x + (size_t)(mm->idx ? mm->idx[j] : j) * (size_t)mm->a->cols;
}

static inline void store_rows(const moe_mm *mm, int j, int64_t row0, int64_t r1, float32x4_t v) {
    float out[4];
    vst1q_f32(out, v);
    for (int r = 0; r < 4 && row0 + r < r1; r++) mm->y[j * mm->ldy + row0 + r] = out[r];
}

/* acc + the 16 products w[i] * x[i], in four i32 lanes. */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, w, x);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    return vpadalq_s16(acc, vmull_high_s8(w, x));
#endif
}

/* Four f16 scales at p (any alignment) as floats. */
static inline float32x4_t load_scales(const uint8_t *p) {
    return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p)));
}

/* One group of four rows times T tokens (T a compile-time constant after inlining). */
static inline __attribute__((always_inline)) void quant_group(const moe_mm *mm, int q4, const uint8_t *grp,
                                                              const int64_t *trow, int T, float32x4_t *acc) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const size_t gbytes = q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES;
    const uint8x16_t low4 = vdupq_n_u8(15);
    for (int t = 0; t < T; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * gbytes;
        const float32x4_t dw = load_scales(blk);
        /* w[r][0]: columns 0-15 of row r, w[r][1]: columns 16-31 */
        int8x16_t w[4][2];
        for (int r = 0; r < 4; r++) {
            if (q4) {
                const uint8x16_t raw = vld1q_u8(blk + 8 + 16 * r);
                w[r][0] = vreinterpretq_s8_u8(vandq_u8(raw, low4));
                w[r][1] = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
            } else {
                w[r][0] = vld1q_s8((const int8_t *)(blk + 8 + 32 * r));
                w[r][1] = vld1q_s8((const int8_t *)(blk + 8 + 32 * r + 16));
            }
        }
        for (int t = 0; t < T; t++) {
            const int8_t *xq = a->q + trow[t] * nb * MOE_QK + b * MOE_QK;
            const int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
            int32x4_t p[4];
            for (int r = 0; r < 4; r++) p[r] = dot16(dot16(vdupq_n_s32(0), w[r][0], x0), w[r][1], x1);
            const int32x4_t sum = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
            const float32x4_t s = vcvtq_f32_s32(sum);
            const float dx = a->d[trow[t] * nb + b], sx = dx * (float)(a->q4_base[trow[t] * nb + b] / -8);
            const float32x4_t v = q4 ? vfmaq_n_f32(vdupq_n_f32(-8.0f * sx), s, dx) : vmulq_n_f32(s, dx);
            acc[t] = vfmaq_f32(acc[t], dw, v);
        }
    }
}

static inline __attribute__((always_inline)) void mm_quant(const moe_mm *mm, int64_t r0, int64_t r1, int q4) {
    const size_t gbytes = q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES;
    for (int64_t g = r0 / 4; g * 4 < r1; g++) {
        const uint8_t *grp = (const uint8_t *)mm->w->data + (size_t)g * (size_t)mm->a->nb * gbytes;
        int j = 0;
        for (; j + TOK_TILE <= mm->n; j += TOK_TILE) {
            int64_t trow[TOK_TILE];
            float32x4_t acc[TOK_TILE];
            for (int t = 0; t < TOK_TILE; t++) trow[t] = mm->idx ? mm->idx[j + t] : j + t;
            quant_group(mm, q4, grp, trow, TOK_TILE, acc);
            for (int t = 0; t < TOK_TILE; t++) store_rows(mm, j + t, g * 4, r1, acc[t]);
        }
        for (; j < mm->n; j++) {
            int64_t trow[1] = {mm->idx ? mm->idx[j] : j};
            float32x4_t acc[1];
            quant_group(mm, q4, grp, trow, 1, acc);
            store_rows(mm, j, g * 4, r1, acc[0]);
        }
    }
}

static void mm_q4(const moe_mm *mm, int64_t r0, int64_t r1) { mm_quant(mm, r0, r1, 1); }
static void mm_q8(const moe_mm *mm, int64_t r0, int64_t r1) { mm_quant(mm, r0, r1, 0); }

/* Four weights of row p starting at column c, as floats. */
static inline __attribute__((always_inline)) float32x4_t load4(moe_dtype t, const void *p, int64_t c) {
    if (t == MOE_F32) return vld1q_f32((const float *)p + c);
    const uint16x4_t h = vld1_u16((const uint16_t *)p + c);
    if (t == MOE_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

/* One weight of row p at column c, as a float. */
static inline float load1(moe_dtype t, const void *p, int64_t c) {
    if (t == MOE_F32) return ((const float *)p)[c];
    const uint16_t h = ((const uint16_t *)p)[c];
    return t == MOE_F16 ? moe_f16_to_f32(h) : moe_bf16_to_f32(h);
}

/* Float weights: four rows at a time share each load of the activations; two
 * accumulators per row (eight columns a step) hide the FMA latency. */
static inline __attribute__((always_inline)) void mm_float(const moe_mm *mm, int64_t r0, int64_t r1, moe_dtype t) {
    const moe_weight *w = mm->w;
    const int64_t cols = w->cols, esize = t == MOE_F32 ? 4 : 2;
    const int64_t c8 = cols / 8 * 8, c4 = cols / 4 * 4;
    for (int64_t r = r0; r < r1; r += 4) {
        const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const void *row[4];
        for (int i = 0; i < 4; i++) row[i] = (const uint8_t *)w->data + (size_t)(r + (i < nr ? i : 0)) * cols * esize;
        for (int j = 0; j < mm->n; j++) {
            const float *x = act_row(mm, j);
            float32x4_t acc[4][2];
            for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
            int64_t c = 0;
            for (; c < c8; c += 8) {
                const float32x4_t x0 = vld1q_f32(x + c), x1 = vld1q_f32(x + c + 4);
                for (int i = 0; i < 4; i++) {
                    acc[i][0] = vfmaq_f32(acc[i][0], load4(t, row[i], c), x0);
                    acc[i][1] = vfmaq_f32(acc[i][1], load4(t, row[i], c + 4), x1);
                }
            }
            if (c < c4) {
                const float32x4_t x0 = vld1q_f32(x + c);
                for (int i = 0; i < 4; i++) acc[i][0] = vfmaq_f32(acc[i][0], load4(t, row[i], c), x0);
            }
            for (int i = 0; i < nr; i++) {
                float s = vaddvq_f32(vaddq_f32(acc[i][0], acc[i][1]));
                for (int64_t k = c4; k < cols; k++) s += load1(t, row[i], k) * x[k];
                mm->y[j * mm->ldy + r + i] = s;
            }
        }
    }
}

static void mm_f32(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_F32); }
static void mm_f16(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_F16); }
static void mm_bf16(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_BF16); }

/* Attention's inner loops (see moe_kernels). */
/* Four values of a cached row from i on, f32 or (half) f16, as floats
 * (moe_cached_value, one value, for the tails). */
static inline float32x4_t row4(const void *p, int i, int half) {
    return half ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + i))) : vld1q_f32((const float *)p + i);
}

static inline __attribute__((always_inline)) float dot_of(const float *a, const void *b, int n, int half) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), row4(b, i, half));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), row4(b, i + 4, half));
    }
    if (i + 4 <= n) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), row4(b, i, half));
        i += 4;
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += a[i] * moe_cached_value(b, (size_t)i, half);
    return s;
}

static inline __attribute__((always_inline)) void axpy_of(float *y, float a, const void *x, int n, int half) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), row4(x, i, half), a));
    for (; i < n; i++) y[i] += a * moe_cached_value(x, (size_t)i, half);
}

static float dot(const float *a, const float *b, int n) { return dot_of(a, b, n, 0); }
static float dot_half(const float *a, const uint16_t *b, int n) { return dot_of(a, b, n, 1); }
static void axpy(float *y, float a, const float *x, int n) { axpy_of(y, a, x, n, 0); }
static void axpy_half(float *y, float a, const uint16_t *x, int n) { axpy_of(y, a, x, n, 1); }

/* One query: 32 columns at a time in eight registers, then 4, then one by
 * one, added to o. */
static inline __attribute__((always_inline)) void wsum(float *o, const float *s, float scale, const void *v, int n,
                                                       int64_t ldv, int d, int half) {
    const size_t size = half ? sizeof(uint16_t) : sizeof(float);
    int c = 0;
    for (; c + 32 <= d; c += 32) {
        float32x4_t acc[8];
        for (int j = 0; j < 8; j++) acc[j] = vdupq_n_f32(0.0f);
        for (int p = 0; p < n; p++) {
            const void *row = (const char *)v + (size_t)p * (size_t)ldv * size;
            for (int j = 0; j < 8; j++) acc[j] = vfmaq_n_f32(acc[j], row4(row, c + 4 * j, half), s[p]);
        }
        for (int j = 0; j < 8; j++) vst1q_f32(o + c + 4 * j, vfmaq_n_f32(vld1q_f32(o + c + 4 * j), acc[j], scale));
    }
    for (; c + 4 <= d; c += 4) {
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int p = 0; p < n; p++) acc = vfmaq_n_f32(acc, row4((const char *)v + (size_t)p * (size_t)ldv * size, c, half), s[p]);
        vst1q_f32(o + c, vfmaq_n_f32(vld1q_f32(o + c), acc, scale));
    }
    moe_wsum_columns(o, s, scale, v, half, n, ldv, c, d);
}

/* Two queries (a second row past nq repeats the first and is not stored)
 * times one block of 16 keys (four registers) per step: eight accumulators. */
static void scores_kt(float *s, int64_t lds, const float *q, int64_t ldq, int nq, const float *kt, int n, int d,
                      float scale) {
    for (int i0 = 0; i0 < nq; i0 += 2) {
        const float *q0 = q + i0 * ldq, *q1 = i0 + 1 < nq ? q0 + ldq : q0;
        for (int b = 0; b * MOE_KT_BLOCK < n; b++) {
            const float *blk = kt + (size_t)b * (size_t)d * MOE_KT_BLOCK;
            float32x4_t a0[4], a1[4];
            for (int l = 0; l < 4; l++) a0[l] = a1[l] = vdupq_n_f32(0.0f);
            for (int j = 0; j < d; j++)
                for (int l = 0; l < 4; l++) {
                    const float32x4_t k = vld1q_f32(blk + (size_t)j * MOE_KT_BLOCK + 4 * l);
                    a0[l] = vfmaq_n_f32(a0[l], k, q0[j]);
                    a1[l] = vfmaq_n_f32(a1[l], k, q1[j]);
                }
            for (int l = 0; l < 4; l++) {
                vst1q_f32(s + i0 * lds + b * MOE_KT_BLOCK + 4 * l, vmulq_n_f32(a0[l], scale));
                if (i0 + 1 < nq) vst1q_f32(s + (i0 + 1) * lds + b * MOE_KT_BLOCK + 4 * l, vmulq_n_f32(a1[l], scale));
            }
        }
    }
}

/* Bit-identical to the scalar quantizer: d = amax / 127, q = round-half-even(x * (1 / d))
 * (FCVTNS, as lrintf in the default rounding mode), q4_base = -8 sum(q). amax uses FMAXNM,
 * which like the scalar comparison skips NaNs. */
static void quantize_act(moe_act *a, int t0, int t1) {
    for (int t = t0; t < t1; t++) {
        int8_t *q = a->q + (size_t)t * (size_t)(a->nb * MOE_QK);
        for (int64_t b = 0; b < a->nb; b++) {
            const int64_t c0 = b * MOE_QK;
            float buf[MOE_QK];
            const float *xb = moe_act_block(a, t, b, buf);
            float32x4_t v[8], m = vdupq_n_f32(0.0f);
            for (int i = 0; i < 8; i++) {
                v[i] = vld1q_f32(xb + 4 * i);
                m = vmaxnmq_f32(m, vabsq_f32(v[i]));
            }
            const float d = vmaxnmvq_f32(m) / 127.0f, inv = d ? 1.0f / d : 0.0f;
            int16x8_t h[4];
            for (int i = 0; i < 4; i++) {
                const int32x4_t lo = vcvtnq_s32_f32(vmulq_n_f32(v[2 * i], inv));
                const int32x4_t hi = vcvtnq_s32_f32(vmulq_n_f32(v[2 * i + 1], inv));
                h[i] = vcombine_s16(vqmovn_s32(lo), vqmovn_s32(hi));
            }
            const int8x16_t q0 = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
            const int8x16_t q1 = vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3]));
            vst1q_s8(q + c0, q0);
            vst1q_s8(q + c0 + 16, q1);
            const int sum = vaddlvq_s8(q0) + vaddlvq_s8(q1);
            a->d[t * a->nb + b] = d;
            a->q4_base[t * a->nb + b] = -8 * sum;
        }
    }
}

/* One query at a time (V re-read for each; not measured on NEON hardware). */
static void wsum_tile(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq, const float *v,
                      int n, int64_t ldv, int d) {
    for (int i = 0; i < nq; i++) wsum(o + i * ldo, s + i * lds, scale[i], v, n, ldv, d, 0);
}

static void wsum_tile_half(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq,
                           const uint16_t *v, int n, int64_t ldv, int d) {
    for (int i = 0; i < nq; i++) wsum(o + i * ldo, s + i * lds, scale[i], v, n, ldv, d, 1);
}

/* FCVTN rounds as the FPCR says: to nearest even, as moe_f32_to_f16 does.
 * FMIN and FMAX return NaN when either operand is one. */
static void to_half(uint16_t *dst, const float *src, int64_t n) {
    const float32x4_t hi = vdupq_n_f32(MOE_HALF_MAX), lo = vdupq_n_f32(-MOE_HALF_MAX);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vmaxq_f32(lo, vminq_f32(hi, vld1q_f32(src + i))))));
    moe_to_half(dst + i, src + i, n - i);
}

static void from_half(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
    moe_from_half(dst + i, src + i, n - i);
}

const moe_kernels moe_kernels_neon = {
    .isa = "neon",
    .mm = {[MOE_F32] = mm_f32, [MOE_F16] = mm_f16, [MOE_BF16] = mm_bf16, [MOE_Q8] = mm_q8, [MOE_Q4] = mm_q4},
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
    .to_half = to_half,
    .from_half = from_half,
};
