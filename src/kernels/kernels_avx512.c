/*
 * kernels_avx512.c — AVX-512 (F, BW, VL, DQ) + VNNI kernels (x86-64).
 * Compiled with those flags for this file only and chosen at run time when
 * the CPU has them all.
 *
 * q4/q8 use vpdpbusd (u8 x s8, four products summed into each i32 lane),
 * which replaces AVX2's maddubs + madd pair and never saturates. Two forms,
 * both on the file's 4-row groups (no repacking):
 *   - q4_group / q8_group (decode, and products of 1-3 tokens): one 512-bit
 *     register holds a whole q4 group-block (four rows x 16 bytes, one row
 *     per 128-bit lane) or half a q8 one; one address stream per thread.
 *   - q4_rows16 / q8_rows16 (4 tokens or more): four groups transposed in
 *     registers to one row per 32-bit lane, so each token's block ends in
 *     one integer vector of 16 rows; the transpose is paid once per tile of
 *     up to ROWS16_TILE tokens.
 *
 *   q4: the nibbles n = q + 8 are unsigned, as vpdpbusd wants, and each
 *       token's integer sum starts from -8 x sum(x) (the activations' block
 *       sums), so the offset costs nothing per product.
 *   q8: both sides are signed. The weights are made unsigned by flipping
 *       their sign bit (w + 128) once per block for all tokens, and each
 *       token's sum starts from -128 x sum(x).
 *
 * Two tables: "avx512", and "avx512bf16" for CPUs that also have
 * AVX512_BF16, the same but for bf16 weights (mm_bf16_dot); that one
 * only when asked for (MOE_ISA, see moe_kernels_select).
 */
#ifdef MOE_AVX512_EMULATED
#include "avx512_emulated.h" /* tests: the same kernels on a CPU without AVX-512 */
#else
#include <immintrin.h>
#endif
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "quant/quant.h"

#define TOK_TILE 8
/* The 16-row kernels' tile: their per-block transpose is paid once per tile,
 * and 16 accumulators still fit in registers with the block's weights. Tiles
 * of 8 reached 445 GOPS (q4) and 330 (q8) on one Zen 5 core, 16 reach 480
 * and 425. */
#define ROWS16_TILE 16
/* Bytes ahead: weights stream once, so ask for them early. q4 decode on a
 * Zen 4 core (bench/kernel-ab.sh, weights in 2 MiB pages): 8 KiB against
 * 4 KiB 1.01-1.13, 12 KiB 0.96 and 16 KiB 0.92-0.95 of 8; prefill the same
 * within 2 %. */
#define PREFETCH_AHEAD 8192

_Static_assert(TOK_TILE == 8, "MOE_LEFTOVER_TILE covers 1..7");

/* The lanes of the first min(n, 16) of 16 values: a row's tail. */
static inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

static inline const float *act_row(const moe_mm *mm, int j) {
    return mm->a->x + (size_t)(mm->idx ? mm->idx[j] : j) * (size_t)mm->a->cols;
}

/* Sums each 128-bit lane of v (lane r: row r's four partial sums) into one
 * float per lane: rows 0-3. */
static inline __m128 lane_sums(__m512 v) {
    v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), v));
}

/* Sums each 256-bit half of a (rows 0, 1) and b (rows 2, 3): rows 0-3. */
static inline __m128 half_sums(__m512 a, __m512 b) {
    const __m256 s01 = _mm256_hadd_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)); /* r0 r0 r1 r1 | r0 r0 r1 r1 */
    const __m256 s23 = _mm256_hadd_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
    const __m256 h = _mm256_hadd_ps(s01, s23);                                                 /* r0 r1 r2 r3 | r0 r1 r2 r3 */
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static inline void store_rows(const moe_mm *mm, int j, int64_t row0, int64_t r1, __m128 v) {
    float out[4];
    _mm_storeu_ps(out, v);
    for (int r = 0; r < 4 && row0 + r < r1; r++) mm->y[j * mm->ldy + row0 + r] = out[r];
}

/* q4: one group of four rows times T tokens (T a constant after inlining). */
static inline __attribute__((always_inline)) void q4_group(const moe_mm *mm, const uint8_t *grp,
                                                           const int64_t *trow, int T, __m128 *out) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const __m512i low4 = _mm512_set1_epi8(15);
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc[TOK_TILE];
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * MOE_Q4_GROUP_BYTES;
        _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
        const __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk));
        const __m512 dw16 = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(dw));
        const __m512i w = _mm512_loadu_si512(blk + 8);
        const __m512i lo = _mm512_and_si512(w, low4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low4);
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int64_t ab = trow[t] * nb + b;
            const int8_t *x = a->q + ab * MOE_QK;
            /* -8 sum(x) once per row: in the first dword of each lane */
            __m512i p = _mm512_maskz_mov_epi32(0x1111, _mm512_set1_epi32(a->q4_base[ab]));
            p = _mm512_dpbusd_epi32(p, lo, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x)));
            p = _mm512_dpbusd_epi32(p, hi, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(x + 16))));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw16, _mm512_set1_ps(a->d[ab])), acc[t]);
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) out[t] = lane_sums(acc[t]);
}

/*
 * q4, prefill: four groups (16 rows) times T tokens, one row per 32-bit
 * lane. The four group-blocks of a column block are transposed in registers
 * so that lane 4g + r of register k holds bytes 4k..4k+3 of row r of group g
 * (columns 4k..4k+3 in the low nibbles, 4k+16..4k+19 in the high ones); a
 * token then needs only broadcasts of four of its activations per vpdpbusd,
 * and a whole block of 16 rows ends in one integer vector: one conversion and
 * one scaling per 512 products instead of per 128 in q4_group. The
 * transpose (eight shuffles) is paid once per block for all T tokens.
 */
static inline __attribute__((always_inline)) void q4_rows16(const moe_mm *mm, const uint8_t *const grp[4],
                                                            const int64_t *trow, int T, __m512 *out) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const __m512i low4 = _mm512_set1_epi8(15);
    /* dword 4r + k of group-blocks i and i + 1 -> k = 0, 1 (pick01) or 2, 3 (pick23) */
    const __m512i pick01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i pick23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    __m512 acc[ROWS16_TILE];
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i z[4];
        uint64_t d16[4];
        for (int i = 0; i < 4; i++) {
            const uint8_t *blk = grp[i] + (size_t)b * MOE_Q4_GROUP_BYTES;
            _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
            memcpy(&d16[i], blk, 8);
            z[i] = _mm512_loadu_si512(blk + 8);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_setr_epi64x((long long)d16[0], (long long)d16[1], (long long)d16[2],
                                                             (long long)d16[3]));
        const __m512i a01 = _mm512_permutex2var_epi32(z[0], pick01, z[1]), a23 = _mm512_permutex2var_epi32(z[0], pick23, z[1]);
        const __m512i c01 = _mm512_permutex2var_epi32(z[2], pick01, z[3]), c23 = _mm512_permutex2var_epi32(z[2], pick23, z[3]);
        const __m512i v[4] = {_mm512_shuffle_i64x2(a01, c01, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_i64x2(a01, c01, _MM_SHUFFLE(3, 2, 3, 2)),
                              _mm512_shuffle_i64x2(a23, c23, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_i64x2(a23, c23, _MM_SHUFFLE(3, 2, 3, 2))};
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; k++) {
            lo[k] = _mm512_and_si512(v[k], low4);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(v[k], 4), low4);
        }
        #pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const int64_t ab = trow[t] * nb + b;
            const int8_t *x = a->q + ab * MOE_QK;
            __m512i p0 = _mm512_set1_epi32(a->q4_base[ab]), p1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                p0 = _mm512_dpbusd_epi32(p0, lo[k], _mm512_broadcastd_epi32(_mm_loadu_si32(x + 4 * k)));
                p1 = _mm512_dpbusd_epi32(p1, hi[k], _mm512_broadcastd_epi32(_mm_loadu_si32(x + 16 + 4 * k)));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), _mm512_mul_ps(dw, _mm512_set1_ps(a->d[ab])), acc[t]);
        }
    }
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) out[t] = acc[t];
}

/*
 * q8, prefill: the same 16-row form as q4_rows16. A row's block is eight
 * dwords, so the transpose takes two stages: per group, the four rows'
 * dwords 0..3 and 4..7 are gathered into one register each (lane 4k + r),
 * then a 4 x 4 transpose of 128-bit lanes across the four groups gives
 * register k with lane 4g + r. Signed weights times signed activations, as
 * in q8_group: weights flipped to w + 128 once per block, each token's sum
 * started from -128 sum(x).
 */
static inline __m512i lane_of_each(__m512i a, __m512i b, __m512i c, __m512i d, int k) {
    /* [a.lane k, b.lane k, c.lane k, d.lane k]: one output of a 4 x 4 transpose of 128-bit lanes */
    const __m512i ab = k < 2 ? _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(1, 0, 1, 0)) : _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i cd = k < 2 ? _mm512_shuffle_i64x2(c, d, _MM_SHUFFLE(1, 0, 1, 0)) : _mm512_shuffle_i64x2(c, d, _MM_SHUFFLE(3, 2, 3, 2));
    return k % 2 ? _mm512_shuffle_i64x2(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)) : _mm512_shuffle_i64x2(ab, cd, _MM_SHUFFLE(2, 0, 2, 0));
}

static inline __attribute__((always_inline)) void q8_rows16(const moe_mm *mm, const uint8_t *const grp[4],
                                                            const int64_t *trow, int T, __m512 *out) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    /* rows 0, 1 in the first register (dwords 0-7, 8-15), rows 2, 3 in the
     * second: dword k of row r, k = 0..3 (pick_lo) or 4..7 (pick_hi), to lane 4k + r */
    const __m512i pick_lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i pick_hi = _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
    __m512 acc[ROWS16_TILE];
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i lo[4], hi[4];
        uint64_t d16[4];
        for (int i = 0; i < 4; i++) {
            const uint8_t *blk = grp[i] + (size_t)b * MOE_Q8_GROUP_BYTES;
            _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + PREFETCH_AHEAD + 64, _MM_HINT_T0);
            memcpy(&d16[i], blk, 8);
            const __m512i z0 = _mm512_loadu_si512(blk + 8), z1 = _mm512_loadu_si512(blk + 72);
            lo[i] = _mm512_permutex2var_epi32(z0, pick_lo, z1);
            hi[i] = _mm512_permutex2var_epi32(z0, pick_hi, z1);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_setr_epi64x((long long)d16[0], (long long)d16[1], (long long)d16[2],
                                                             (long long)d16[3]));
        __m512i v[8];
        for (int k = 0; k < 4; k++) {
            v[k] = _mm512_xor_si512(lane_of_each(lo[0], lo[1], lo[2], lo[3], k), flip);
            v[4 + k] = _mm512_xor_si512(lane_of_each(hi[0], hi[1], hi[2], hi[3], k), flip);
        }
        #pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const int64_t ab = trow[t] * nb + b;
            const int8_t *x = a->q + ab * MOE_QK;
            __m512i p0 = _mm512_slli_epi32(_mm512_set1_epi32(a->q4_base[ab]), 4), p1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                p0 = _mm512_dpbusd_epi32(p0, v[k], _mm512_broadcastd_epi32(_mm_loadu_si32(x + 4 * k)));
                p1 = _mm512_dpbusd_epi32(p1, v[4 + k], _mm512_broadcastd_epi32(_mm_loadu_si32(x + 16 + 4 * k)));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), _mm512_mul_ps(dw, _mm512_set1_ps(a->d[ab])), acc[t]);
        }
    }
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) out[t] = acc[t];
}

static inline __attribute__((always_inline)) void rows16_tile(const moe_mm *mm, const uint8_t *const grp[4], int64_t row0,
                                                              int j, int T, int q4) {
    int64_t trow[ROWS16_TILE];
    __m512 acc[ROWS16_TILE];
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) trow[t] = mm->idx ? mm->idx[j + t] : j + t;
    if (q4) q4_rows16(mm, grp, trow, T, acc);
    else q8_rows16(mm, grp, trow, T, acc);
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) _mm512_storeu_ps(mm->y + (j + t) * mm->ldy + row0, acc[t]);
}

/* From this many tokens on, 16-row blocks go through the rows16 kernels:
 * tiles of 16 (from 3 x 16 tokens on) or 8, then the rest (MOE_LEFTOVER_TILE),
 * in chunks of ROWS16_TOKEN_CHUNK tokens. */
#define ROWS16_MIN_TOKENS 4

/* Rows 4g..4g+15 (four groups) times tokens [j, j1). */
static void rows16_tokens(const moe_mm *mm, int64_t g, int j, int j1, int q4) {
    const size_t gstride = (size_t)mm->a->nb * (q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES);
    const uint8_t *base = (const uint8_t *)mm->w->data + (size_t)g * gstride;
    const uint8_t *const grp[4] = {base, base + gstride, base + 2 * gstride, base + 3 * gstride};
    /* with few tokens, each block's cold weights feed only one or two tiles,
     * and tiles of 8 hide their latency better (16-31 tokens: ~10 % faster) */
    if (j1 - j >= 3 * ROWS16_TILE)
        for (; j + ROWS16_TILE <= j1; j += ROWS16_TILE) rows16_tile(mm, grp, g * 4, j, ROWS16_TILE, q4);
    for (; j + TOK_TILE <= j1; j += TOK_TILE) rows16_tile(mm, grp, g * 4, j, TOK_TILE, q4);
#define ROWS16_TILE_OF(T) rows16_tile(mm, grp, g * 4, j, T, q4)
    MOE_LEFTOVER_TILE(j1 - j, ROWS16_TILE_OF);
#undef ROWS16_TILE_OF
}

/* Tokens per pass over a run of 16-row blocks: the activations of 128
 * tokens (~300 KB at 2048 columns) stay in L2 while the blocks go by, and
 * the blocks' weights come back from L2 for the next 128. All 512 tokens of
 * a prompt per block (1.25 MB of activations, past the 1 MB L2) were 13 %
 * slower per product than 64. A multiple of ROWS16_TILE. */
#define ROWS16_TOKEN_CHUNK 128

/* q8: one group of four rows times T tokens. */
static inline __attribute__((always_inline)) void q8_group(const moe_mm *mm, const uint8_t *grp,
                                                           const int64_t *trow, int T, __m128 *out) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i spread01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i spread23 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 acc01[TOK_TILE], acc23[TOK_TILE];
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc01[t] = acc23[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * MOE_Q8_GROUP_BYTES;
        /* One token streams the weights on the hardware prefetcher alone:
         * without the two software prefetches per block, decode on a Zen 4
         * core ran 1.11x (weights in 2 MiB pages, as a loaded model) to
         * 1.25x (4 KiB pages) as fast, one thread or two
         * (bench/kernel-ab.sh); with two or three tokens they are worth it.
         * q4 decode keeps its one prefetch per block: 0.86 without it. */
        if (T > 1) {
            _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + PREFETCH_AHEAD + 64, _MM_HINT_T0);
        }
        const __m512 dw = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk)));
        const __m512 dw01 = _mm512_permutexvar_ps(spread01, dw), dw23 = _mm512_permutexvar_ps(spread23, dw);
        /* w + 128, unsigned */
        const __m512i w01 = _mm512_xor_si512(_mm512_loadu_si512(blk + 8), flip);
        const __m512i w23 = _mm512_xor_si512(_mm512_loadu_si512(blk + 72), flip);
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int64_t ab = trow[t] * nb + b;
            const __m512i x = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a->q + ab * MOE_QK)));
            /* -128 sum(x) once per row: in the first dword of each half */
            const __m512i start = _mm512_maskz_slli_epi32(0x0101, _mm512_set1_epi32(a->q4_base[ab]), 4);
            const __m512 dx = _mm512_set1_ps(a->d[ab]);
            acc01[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, w01, x)), _mm512_mul_ps(dw01, dx), acc01[t]);
            acc23[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, w23, x)), _mm512_mul_ps(dw23, dx), acc23[t]);
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) out[t] = half_sums(acc01[t], acc23[t]);
}

/* Tokens in tiles of 8, then the rest (1-7) as one tile (MOE_LEFTOVER_TILE), so
 * a few leftover tokens still share each weight load. */
static inline __attribute__((always_inline)) void group_tile(const moe_mm *mm, const uint8_t *grp, int64_t g, int64_t r1,
                                                             int j, int T, int q4) {
    int64_t trow[TOK_TILE];
    __m128 acc[TOK_TILE];
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) trow[t] = mm->idx ? mm->idx[j + t] : j + t;
    if (q4) q4_group(mm, grp, trow, T, acc);
    else q8_group(mm, grp, trow, T, acc);
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++) store_rows(mm, j + t, g * 4, r1, acc[t]);
}

static inline __attribute__((always_inline)) void mm_quant(const moe_mm *mm, int64_t r0, int64_t r1, int q4) {
    const size_t gbytes = q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES;
    int64_t g = r0 / 4;
    if (mm->n >= ROWS16_MIN_TOKENS) {
        const int64_t g1 = g + (r1 - g * 4) / 16 * 4; /* the 16-row blocks, then single groups */
        for (int j = 0; j < mm->n; j += ROWS16_TOKEN_CHUNK) {
            const int j1 = j + ROWS16_TOKEN_CHUNK < mm->n ? j + ROWS16_TOKEN_CHUNK : mm->n;
            for (int64_t g16 = g; g16 < g1; g16 += 4) rows16_tokens(mm, g16, j, j1, q4);
        }
        g = g1;
    }
    for (; g * 4 < r1; g++) {
        const uint8_t *grp = (const uint8_t *)mm->w->data + (size_t)g * (size_t)mm->a->nb * gbytes;
        int j = 0;
        for (; j + TOK_TILE <= mm->n; j += TOK_TILE) group_tile(mm, grp, g, r1, j, TOK_TILE, q4);
#define GROUP_TILE_OF(T) group_tile(mm, grp, g, r1, j, T, q4)
        MOE_LEFTOVER_TILE(mm->n - j, GROUP_TILE_OF);
#undef GROUP_TILE_OF
    }
}

static void mm_q4(const moe_mm *mm, int64_t r0, int64_t r1) { mm_quant(mm, r0, r1, 1); }
static void mm_q8(const moe_mm *mm, int64_t r0, int64_t r1) { mm_quant(mm, r0, r1, 0); }

/* Sixteen weights of a row starting at column c, as floats; the first n only
 * (n < 16: a masked load that never reads past the row). */
static inline __attribute__((always_inline)) __m512 load16(moe_dtype t, const void *p, int64_t c, __mmask16 m) {
    if (t == MOE_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + c);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + c);
    if (t == MOE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* The four weight rows of a float tile from row r on, esize bytes a value
 * (the last one repeated where fewer than four are left before r1);
 * returns how many are real. */
static inline int tile_rows(const moe_mm *mm, int64_t r, int64_t r1, int64_t esize, const void *row[4]) {
    const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
    for (int i = 0; i < 4; i++)
        row[i] = (const uint8_t *)mm->w->data + (size_t)(r + (i < nr ? i : 0)) * (size_t)(mm->w->cols * esize);
    return nr;
}

/* A tile of TT tokens from token j: their activation rows, sums cleared. */
static inline __attribute__((always_inline)) void tile_begin(const moe_mm *mm, int j, const int TT, const float *x[4],
                                                             __m512 (*acc)[4]) {
    #pragma GCC unroll 4
    for (int k = 0; k < TT; k++) x[k] = act_row(mm, j + k);
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 4
        for (int k = 0; k < TT; k++) acc[i][k] = _mm512_setzero_ps();
}

/* The tile's sums into y: all four rows reduced, then the nr rows that
 * exist stored. acc stays in registers only when every index into it is a
 * constant (hence also the unroll pragmas). */
static inline __attribute__((always_inline)) void tile_store(const moe_mm *mm, __m512 (*acc)[4], int64_t r, int nr, int j,
                                                             const int TT) {
    #pragma GCC unroll 4
    for (int k = 0; k < TT; k++) {
        float sum[4];
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) sum[i] = _mm512_reduce_add_ps(acc[i][k]);
        #pragma GCC unroll 4
        for (int i = 0; i < nr; i++) mm->y[(j + k) * mm->ldy + r + i] = sum[i];
    }
}

/* Float weights: four rows times TT (1-4) tokens per pass, so each weight
 * load feeds TT FMAs and each activation load four: 16 FMAs per 8 loads
 * instead of 4 per 5 with one token at a time (prefill's f32 routers ran
 * at ~13 GFLOP/s that way). The row's tail is a masked load. */
static inline __attribute__((always_inline)) void float_tile(const moe_mm *mm, moe_dtype t, const void *const row[4],
                                                             int64_t r, int nr, int j, const int TT) {
    const int64_t cols = mm->w->cols;
    const __mmask16 tail = (__mmask16)((1u << (cols % 16)) - 1);
    const float *x[4];
    __m512 acc[4][4];
    tile_begin(mm, j, TT, x, acc);
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m512 xv[4];
        #pragma GCC unroll 4
        for (int k = 0; k < TT; k++) xv[k] = _mm512_loadu_ps(x[k] + c);
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m512 wv = load16(t, row[i], c, 0xffff);
            #pragma GCC unroll 4
            for (int k = 0; k < TT; k++) acc[i][k] = _mm512_fmadd_ps(wv, xv[k], acc[i][k]);
        }
    }
    if (tail) {
        __m512 xv[4];
        #pragma GCC unroll 4
        for (int k = 0; k < TT; k++) xv[k] = _mm512_maskz_loadu_ps(tail, x[k] + c);
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m512 wv = load16(t, row[i], c, tail);
            #pragma GCC unroll 4
            for (int k = 0; k < TT; k++) acc[i][k] = _mm512_fmadd_ps(wv, xv[k], acc[i][k]);
        }
    }
    tile_store(mm, acc, r, nr, j, TT);
}

static inline __attribute__((always_inline)) void mm_float(const moe_mm *mm, int64_t r0, int64_t r1, moe_dtype t) {
    for (int64_t r = r0; r < r1; r += 4) {
        const void *row[4];
        const int nr = tile_rows(mm, r, r1, t == MOE_F32 ? 4 : 2, row);
        int j = 0;
        for (; j + 4 <= mm->n; j += 4) float_tile(mm, t, row, r, nr, j, 4);
        switch (mm->n - j) { /* the last 1-3 tokens */
        case 3: float_tile(mm, t, row, r, nr, j, 3); break;
        case 2: float_tile(mm, t, row, r, nr, j, 2); break;
        case 1: float_tile(mm, t, row, r, nr, j, 1); break;
        default: break;
        }
    }
}

/*
 * bf16 weights on CPUs with AVX512_BF16 (the "avx512bf16" kernels):
 * vdpbf16ps multiplies pairs of bf16 values into f32 lanes, 32 products per
 * instruction, where float_tile widens each 16 weights (two operations)
 * for 16 FMAs. The activations are rounded to bf16 first (to nearest even),
 * as llama.cpp's bf16 products do: at most 2^-9 of each activation, less
 * than the int8 activations of q8 and q4 lose. The hardware treats bf16
 * subnormals as zero.
 */
#ifdef MOE_AVX512_EMULATED
#define BF16_TARGET /* SIMDe's versions need no AVX-512 */
#else
#define BF16_TARGET __attribute__((target("avx512bf16")))
#endif

static inline __mmask16 lanes16(int64_t n) { return n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* The 32 values from column c of one row, as bf16 pairs: weights as
 * stored, activations rounded; the first n only (n < 32: masked loads). */
BF16_TARGET static inline __attribute__((always_inline)) __m512bh bf16_weights(const void *row, int64_t c, int64_t n) {
    const uint16_t *p = (const uint16_t *)row + c;
    if (n >= 32) return (__m512bh)_mm512_loadu_si512(p);
    return (__m512bh)_mm512_maskz_loadu_epi16((__mmask32)((1ull << n) - 1), p);
}
BF16_TARGET static inline __attribute__((always_inline)) __m512bh bf16_acts(const float *x, int64_t c, int64_t n) {
    if (n >= 32) return _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(x + c));
    return _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(lanes16(n - 16), x + c + 16), _mm512_maskz_loadu_ps(lanes16(n), x + c));
}

/* Columns c..c+n-1 (n <= 32) of four rows times TT tokens into acc. */
BF16_TARGET static inline __attribute__((always_inline)) void bf16_block(__m512 (*acc)[4], const float *const x[4],
                                                                      const void *const row[4], int64_t c, int64_t n,
                                                                      const int TT) {
    __m512bh xv[4];
    #pragma GCC unroll 4
    for (int k = 0; k < TT; k++) xv[k] = bf16_acts(x[k], c, n);
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const __m512bh wv = bf16_weights(row[i], c, n);
        #pragma GCC unroll 4
        for (int k = 0; k < TT; k++) acc[i][k] = _mm512_dpbf16_ps(acc[i][k], wv, xv[k]);
    }
}

/* float_tile's four rows times TT (1-4) tokens, through vdpbf16ps. */
BF16_TARGET static inline __attribute__((always_inline)) void bf16_tile(const moe_mm *mm, const void *const row[4], int64_t r,
                                                                     int nr, int j, const int TT) {
    const int64_t cols = mm->w->cols;
    const float *x[4];
    __m512 acc[4][4];
    tile_begin(mm, j, TT, x, acc);
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) bf16_block(acc, x, row, c, 32, TT);
    if (c < cols) bf16_block(acc, x, row, c, cols - c, TT); /* masked */
    tile_store(mm, acc, r, nr, j, TT);
}

/* mm_float's loop over tiles, with bf16_tile. */
BF16_TARGET static void mm_bf16_dot(const moe_mm *mm, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r += 4) {
        const void *row[4];
        const int nr = tile_rows(mm, r, r1, 2, row);
        int j = 0;
        for (; j + 4 <= mm->n; j += 4) bf16_tile(mm, row, r, nr, j, 4);
        switch (mm->n - j) { /* the last 1-3 tokens */
        case 3: bf16_tile(mm, row, r, nr, j, 3); break;
        case 2: bf16_tile(mm, row, r, nr, j, 2); break;
        case 1: bf16_tile(mm, row, r, nr, j, 1); break;
        default: break;
        }
    }
}

static void mm_f32(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_F32); }
static void mm_f16(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_F16); }
static void mm_bf16(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_BF16); }

/* The lanes m of 16 values of a cached row from i on, f32 or (half) f16,
 * as floats; the other lanes 0. Converted in registers: converting a row
 * into a buffer first and reading it back read a cold f16 cache at 9 GB/s
 * on one Zen 4 core, against 25 this way (and 20 for an f32 cache). */
static inline __m512 row16(const void *p, int i, __mmask16 m, int half) {
    return half ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i))
                : _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

static inline __attribute__((always_inline)) float dot_of(const float *a, const void *b, int n, int half) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), row16(b, i, 0xffff, half), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), row16(b, i + 16, 0xffff, half), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), row16(b, i, 0xffff, half), s0);
    const __mmask16 m = first_lanes(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), row16(b, i, m, half), s1);
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static inline __attribute__((always_inline)) void axpy_of(float *y, float a, const void *x, int n, int half) {
    const __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, row16(x, i, 0xffff, half), _mm512_loadu_ps(y + i)));
    const __mmask16 m = first_lanes(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, row16(x, i, m, half), _mm512_maskz_loadu_ps(m, y + i)));
}

static float dot(const float *a, const float *b, int n) { return dot_of(a, b, n, 0); }
static float dot_half(const float *a, const uint16_t *b, int n) { return dot_of(a, b, n, 1); }
static void axpy(float *y, float a, const float *x, int n) { axpy_of(y, a, x, n, 0); }
static void axpy_half(float *y, float a, const uint16_t *x, int n) { axpy_of(y, a, x, n, 1); }

/* NQ queries over 64 columns of V at a time: each value row's four vectors
 * are loaded once for all queries (a weighted sum per query re-read V from
 * L2 for every query, which bound it: about 5 % of a q4 OLMoE prefill). */
static inline __attribute__((always_inline)) void wsum_tile_of(float *o, int64_t ldo, const float *s, int64_t lds,
                                                               const float *scale, const int NQ, const void *v, int n,
                                                               int64_t ldv, int d, int half) {
    for (int c = 0; c < d; c += 64) {
        __mmask16 m[4];
        for (int j = 0; j < 4; j++) {
            const int left = d - c - 16 * j;
            m[j] = (__mmask16)(left >= 16 ? 0xffff : left > 0 ? (1u << left) - 1 : 0);
        }
        __m512 acc[4][4];
        for (int i = 0; i < NQ; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
        for (int p = 0; p < n; p++) {
            const void *row = half ? (const void *)((const uint16_t *)v + (size_t)p * (size_t)ldv)
                                   : (const void *)((const float *)v + (size_t)p * (size_t)ldv);
            __m512 vv[4];
            for (int j = 0; j < 4; j++) vv[j] = row16(row, c + 16 * j, m[j], half);
            for (int i = 0; i < NQ; i++) {
                const __m512 sp = _mm512_set1_ps(s[i * lds + p]);
                for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(sp, vv[j], acc[i][j]);
            }
        }
        for (int i = 0; i < NQ; i++)
            for (int j = 0; j < 4; j++)
                _mm512_mask_storeu_ps(o + i * ldo + c + 16 * j, m[j],
                                      _mm512_fmadd_ps(acc[i][j], _mm512_set1_ps(scale[i]),
                                                      _mm512_maskz_loadu_ps(m[j], o + i * ldo + c + 16 * j)));
    }
}

static inline __attribute__((always_inline)) void wsum_tile_any(float *o, int64_t ldo, const float *s, int64_t lds,
                                                                const float *scale, int nq, const void *v, int n,
                                                                int64_t ldv, int d, int half) {
#define WSUM_OF(NQ) wsum_tile_of(o, ldo, s, lds, scale, NQ, v, n, ldv, d, half)
    MOE_FOR_NQ(nq, WSUM_OF);
#undef WSUM_OF
}

static void wsum_tile(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq, const float *v,
                      int n, int64_t ldv, int d) {
    wsum_tile_any(o, ldo, s, lds, scale, nq, v, n, ldv, d, 0);
}

static void wsum_tile_half(float *o, int64_t ldo, const float *s, int64_t lds, const float *scale, int nq,
                           const uint16_t *v, int n, int64_t ldv, int d) {
    wsum_tile_any(o, ldo, s, lds, scale, nq, v, n, ldv, d, 1);
}

/* Four queries (rows past nq repeat the first and are not stored) times one
 * block of 16 keys per step: four independent accumulators, each element
 * of a query broadcast from memory into its FMA. */
static void scores_kt(float *s, int64_t lds, const float *q, int64_t ldq, int nq, const float *kt, int n, int d,
                      float scale) {
    const float *qi[4];
    for (int i = 0; i < 4; i++) qi[i] = q + (i < nq ? i : 0) * ldq;
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int b = 0; b * MOE_KT_BLOCK < n; b++) {
        const float *blk = kt + (size_t)b * (size_t)d * MOE_KT_BLOCK;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int j = 0; j < d; j++) {
            const __m512 k = _mm512_loadu_ps(blk + (size_t)j * MOE_KT_BLOCK);
            for (int i = 0; i < 4; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(qi[i][j]), k, acc[i]);
        }
        for (int i = 0; i < nq; i++) _mm512_storeu_ps(s + i * lds + b * MOE_KT_BLOCK, _mm512_mul_ps(acc[i], vscale));
    }
}

/* Bit-identical to the scalar quantizer: the same d and 1/d, products rounded
 * to nearest even, and exact integer sums. */
static void quantize_act(moe_act *a, int t0, int t1) {
    for (int t = t0; t < t1; t++) {
        const float *x = a->x + (size_t)t * (size_t)a->cols;
        int8_t *q = a->q + (size_t)t * (size_t)(a->nb * MOE_QK);
        for (int64_t b = 0; b < a->nb; b++) {
            const int64_t c0 = b * MOE_QK, n = a->cols - c0 < MOE_QK ? a->cols - c0 : MOE_QK;
            const __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
            const __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1 : 0);
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + c0), v1 = _mm512_maskz_loadu_ps(m1, x + c0 + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            const float d = amax / 127.0f, inv = d ? 1.0f / d : 0.0f;
            const __m512 vinv = _mm512_set1_ps(inv);
            const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vinv)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vinv));
            _mm_storeu_si128((__m128i *)(q + c0), _mm512_cvtsepi32_epi8(i0));
            _mm_storeu_si128((__m128i *)(q + c0 + 16), _mm512_cvtsepi32_epi8(i1));
            a->d[t * a->nb + b] = d;
            a->q4_base[t * a->nb + b] = -8 * _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        }
    }
}

/* e^x as in the AVX2 kernel (2^n e^r, Taylor to r^6), with vscalefps for
 * the 2^n: exact over the whole float range, so only the clamp that keeps
 * r finite is needed. */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* silu(g) u = g u / (1 + e^-g); the tail through a mask. */
static void swiglu(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = first_lanes(n - i);
        const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        const __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), g)));
        _mm512_mask_storeu_ps(gate + i, m, _mm512_div_ps(_mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, up + i)), den));
    }
}

/* e^(s - max s) and its sum; the tail through a mask. */
static float softmax_exp(float *s, int n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int p = 0; p < n; p += 16) {
        const __mmask16 m = first_lanes(n - p);
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, s + p));
    }
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 sum = _mm512_setzero_ps();
    for (int p = 0; p < n; p += 16) {
        const __mmask16 m = first_lanes(n - p);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + p), max));
        _mm512_mask_storeu_ps(s + p, m, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
    }
    return _mm512_reduce_add_ps(sum);
}

/* vcvtps2ph rounds to nearest even, as moe_f32_to_f16 does. min and max
 * return their second operand when one is NaN: NaN passes. */
static void to_half(uint16_t *dst, const float *src, int64_t n) {
    const __m512 hi = _mm512_set1_ps(MOE_HALF_MAX), lo = _mm512_set1_ps(-MOE_HALF_MAX);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = first_lanes(n - i);
        const __m512 x = _mm512_max_ps(lo, _mm512_min_ps(hi, _mm512_maskz_loadu_ps(m, src + i)));
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
}

static void from_half(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = first_lanes(n - i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

/* The two tables differ only in how bf16 weights multiply. */
#define AVX512_KERNELS(name, mm_bf16_fn, rounds_bf16) \
    { \
        .isa = name, \
        .mm = {[MOE_F32] = mm_f32, [MOE_F16] = mm_f16, [MOE_BF16] = mm_bf16_fn, [MOE_Q8] = mm_q8, [MOE_Q4] = mm_q4}, \
        .bf16_rounds_activations = rounds_bf16, \
        .quantize_act = quantize_act, \
        .dot = dot, \
        .axpy = axpy, \
        .dot_half = dot_half, \
        .axpy_half = axpy_half, \
        .scores_kt = scores_kt, \
        .wsum_tile = wsum_tile, \
        .wsum_tile_half = wsum_tile_half, \
        .swiglu = swiglu, \
        .softmax_exp = softmax_exp, \
        .to_half = to_half, \
        .from_half = from_half, \
    }

const moe_kernels moe_kernels_avx512 = AVX512_KERNELS("avx512", mm_bf16, 0);
const moe_kernels moe_kernels_avx512bf16 = AVX512_KERNELS("avx512bf16", mm_bf16_dot, 1);
