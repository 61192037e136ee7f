/*
 * kernels_avx2.c — AVX2 + FMA + F16C kernels (x86-64). Compiled with those
 * flags for this file only and chosen at run time when the CPU has them.
 *
 * q4/q8: activations are int8 in blocks of 32 (moe_act). For each group of
 * four weight rows and each block, the rows' weights are loaded and widened
 * once and multiplied into up to four tokens with maddubs (u8 x s8 -> i16
 * pairs) and madd (-> i32). q4 (see q4_group) keeps per-lane partial sums
 * scaled per block in float and reduces them once per group; q8 folds the
 * four rows' sums with two hadds per block. q4 weights are stored as
 * n = q + 8 in [0, 15]: sum((n - 8) x) = sum(n x) - 8 sum(x), where
 * -8 sum(x) is the activations' q4_base. From four tokens on (q4) or six
 * (q8), sixteen rows run at a time (rows16_tile), transposed once per
 * strip of column blocks for all the tokens, so that each broadcast
 * activation feeds two 8-row registers.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "quant/quant.h"
#include "util/half.h"

#define TOK_TILE 4
#define PREFETCH_AHEAD 4096 /* bytes: weights stream once, so ask for them early */
/* The 16-row kernels' transposes read four groups' streams at once, a
 * strip at a time: there 16 KiB ahead ran q4 1.03-1.08x as fast as 4 from
 * memory at 8 and 64 tokens, q8 0.98-1.03x (bench/README.md, session 14). */
#define STRIP_PREFETCH_AHEAD (4 * PREFETCH_AHEAD)

static inline const float *act_row(const moe_mm *mm, int j) {
    return mm->a->x + (size_t)(mm->idx ? mm->idx[j] : j) * (size_t)mm->a->cols;
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __m128i fold4(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

static inline void store_rows(const moe_mm *mm, int j, int64_t row0, int64_t r1, __m128 v) {
    float out[4];
    _mm_storeu_ps(out, v);
    for (int r = 0; r < 4 && row0 + r < r1; r++) mm->y[j * mm->ldy + row0 + r] = out[r];
}

/* q4: one group of four rows times T tokens (T a constant after inlining).
 * A 32-byte load holds two rows' nibbles (16 bytes each: columns j and
 * j + 16 in byte j), so masking the low and high nibbles gives columns 0-15
 * and 16-31 of two rows at once; the activations are broadcast to match
 * (x[0..15] in both lanes, x[16..31] in both). maddubs leaves eight 16-bit
 * pair sums per row; one hadd of the two row pairs and one madd make two
 * 32-bit partial sums per row (rows 0 and 2 in the low lane, 1 and 3 in the
 * high), converted and scaled per block. The -8 sum(x) of the stored
 * nibbles' offset is scaled and summed apart, in float, four rows at once.
 * Decode runs this per block of every weight it reads, so it is written for
 * few vector operations: the broadcasts are loads, and the offset costs one
 * conversion and one FMA per block instead of three integer operations
 * (bench/kernel-ab.sh on a Zen 3 core: 1.19x with the weights in cache,
 * 1.13x from memory). */
static inline __attribute__((always_inline)) void q4_group(const moe_mm *mm, const uint8_t *grp,
                                                           const int64_t *trow, int T, __m128 *out) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(15);
    const __m256i spread = _mm256_setr_epi32(0, 0, 2, 2, 1, 1, 3, 3);
    __m256 acc[4];  /* rows 0 0 2 2 | 1 1 3 3 */
    __m128 corr[4]; /* rows 0-3: the offset's share */
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps(), corr[t] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * MOE_Q4_GROUP_BYTES;
        _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
        const __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk));
        const __m256i w01 = _mm256_loadu_si256((const __m256i *)(blk + 8));
        const __m256i w23 = _mm256_loadu_si256((const __m256i *)(blk + 40));
        const __m256i lo01 = _mm256_and_si256(w01, low4), hi01 = _mm256_and_si256(_mm256_srli_epi16(w01, 4), low4);
        const __m256i lo23 = _mm256_and_si256(w23, low4), hi23 = _mm256_and_si256(_mm256_srli_epi16(w23, 4), low4);
        for (int t = 0; t < T; t++) {
            const int64_t ab = trow[t] * nb + b;
            const __m128i *x = (const __m128i *)(a->q + ab * MOE_QK);
            const __m256i xlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(x)), xhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(x + 1));
            /* sums of at most 8 products of 15 x 127 each: no overflow in 16 bits */
            const __m256i s16 = _mm256_hadd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo01, xlo), _mm256_maddubs_epi16(hi01, xhi)),
                                                  _mm256_add_epi16(_mm256_maddubs_epi16(lo23, xlo), _mm256_maddubs_epi16(hi23, xhi)));
            const __m128 dwx4 = _mm_mul_ps(dw, _mm_broadcast_ss(a->d + ab));
            corr[t] = _mm_fmadd_ps(dwx4, _mm_cvtepi32_ps(_mm_set1_epi32(a->q4_base[ab])), corr[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones)),
                                     _mm256_permutevar8x32_ps(_mm256_castps128_ps256(dwx4), spread), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) {
        const __m256 h = _mm256_hadd_ps(acc[t], acc[t]); /* r0 r2 r0 r2 | r1 r3 r1 r3 */
        out[t] = _mm_add_ps(_mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)), corr[t]);
    }
}

/* q8: one group of four rows times T tokens. Signed by signed through
 * maddubs: |w| times x carrying w's sign. */
static inline __attribute__((always_inline)) void q8_group(const moe_mm *mm, const uint8_t *grp,
                                                           const int64_t *trow, int T, __m128 *out) {
    const moe_act *a = mm->a;
    const int64_t nb = a->nb;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int t = 0; t < T; t++) out[t] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * MOE_Q8_GROUP_BYTES;
        _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + PREFETCH_AHEAD + 64, _MM_HINT_T0);
        const __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk));
        __m256i w[4], aw[4];
        for (int r = 0; r < 4; r++) {
            w[r] = _mm256_loadu_si256((const __m256i *)(blk + 8 + 32 * r));
            aw[r] = _mm256_sign_epi8(w[r], w[r]);
        }
        for (int t = 0; t < T; t++) {
            const int64_t ab = trow[t] * nb + b;
            const __m256i x = _mm256_loadu_si256((const __m256i *)(a->q + ab * MOE_QK));
            __m256i p[4];
            for (int r = 0; r < 4; r++) p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(x, w[r])), ones);
            const __m128 s = _mm_cvtepi32_ps(fold4(p[0], p[1], p[2], p[3]));
            out[t] = _mm_fmadd_ps(_mm_mul_ps(dw, _mm_broadcast_ss(a->d + ab)), s, out[t]);
        }
    }
}

/* The eight rows' scales of two group-blocks (each starts with its four
 * rows' f16 scales), as floats: lanes 0-3 from ba, 4-7 from bb. */
static inline __m256 rows8_scales(const uint8_t *ba, const uint8_t *bb) {
    return _mm256_cvtph_ps(_mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)ba), _mm_loadl_epi64((const __m128i *)bb)));
}

/* One column block of an 8-row block (two groups), transposed so that lane
 * l of a register is row l: the form rows16_tile multiplies. */
typedef struct {
    __m256 scale; /* the eight rows' scales */
    __m256i w[8]; /* q4: w[k] low nibbles of bytes 4k..4k+3, w[4 + k] their high nibbles; q8: bytes 4k..4k+3 */
} rows8_block;

/*
 * Prefill: the 16-row kernels transpose a strip of STRIP_BLOCKS column
 * blocks of each of their two 8-row blocks at a time into a buffer on the
 * stack (rows16_strips: 18 KiB, half of L1), which every token tile of the
 * chunk then reads. 16 blocks ran q4 0.93x and q8 0.97x as fast, 48 and 64
 * within 2 % of 32 (bench/README.md, session 14).
 */
#define STRIP_BLOCKS 32

/*
 * q4, prefill: block b of groups ga and gb transposed. Lane l of register
 * k holds bytes 4k..4k+3 of row l (columns 4k..4k+3 in the low nibbles,
 * 4k+16..4k+19 in the high ones).
 */
static inline __attribute__((always_inline)) rows8_block q4_rows8_transpose(const uint8_t *ga, const uint8_t *gb, int64_t b) {
    rows8_block out;
    const __m256i low4 = _mm256_set1_epi8(15);
    /* after unpacking rows 0/2 and 1/3: dword k of rows 0-3 to lanes 0-3, k + 1 to lanes 4-7 */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const uint8_t *ba = ga + (size_t)b * MOE_Q4_GROUP_BYTES, *bb = gb + (size_t)b * MOE_Q4_GROUP_BYTES;
    _mm_prefetch((const char *)ba + STRIP_PREFETCH_AHEAD, _MM_HINT_T0);
    _mm_prefetch((const char *)bb + STRIP_PREFETCH_AHEAD, _MM_HINT_T0);
    out.scale = rows8_scales(ba, bb);
    __m256i k01[2], k23[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *blk = i ? bb : ba;
        const __m256i r01 = _mm256_loadu_si256((const __m256i *)(blk + 8)), r23 = _mm256_loadu_si256((const __m256i *)(blk + 40));
        k01[i] = _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi32(r01, r23), order);
        k23[i] = _mm256_permutevar8x32_epi32(_mm256_unpackhi_epi32(r01, r23), order);
    }
    const __m256i v[4] = {_mm256_permute2x128_si256(k01[0], k01[1], 0x20), _mm256_permute2x128_si256(k01[0], k01[1], 0x31),
                          _mm256_permute2x128_si256(k23[0], k23[1], 0x20), _mm256_permute2x128_si256(k23[0], k23[1], 0x31)};
    for (int k = 0; k < 4; k++) {
        out.w[k] = _mm256_and_si256(v[k], low4);
        out.w[4 + k] = _mm256_and_si256(_mm256_srli_epi16(v[k], 4), low4);
    }
    return out;
}

/*
 * q8, prefill: block b of groups ga and gb transposed. A row's block is
 * eight dwords, so the two group-blocks transpose as an 8 x 8 matrix of
 * dwords (24 shuffles) into lane l = row l of register k = bytes 4k..4k+3.
 */
static inline __attribute__((always_inline)) rows8_block q8_rows8_transpose(const uint8_t *ga, const uint8_t *gb, int64_t b) {
    rows8_block out;
    const uint8_t *ba = ga + (size_t)b * MOE_Q8_GROUP_BYTES, *bb = gb + (size_t)b * MOE_Q8_GROUP_BYTES;
    _mm_prefetch((const char *)ba + STRIP_PREFETCH_AHEAD, _MM_HINT_T0);
    _mm_prefetch((const char *)ba + STRIP_PREFETCH_AHEAD + 64, _MM_HINT_T0);
    _mm_prefetch((const char *)bb + STRIP_PREFETCH_AHEAD, _MM_HINT_T0);
    _mm_prefetch((const char *)bb + STRIP_PREFETCH_AHEAD + 64, _MM_HINT_T0);
    out.scale = rows8_scales(ba, bb);
    __m256i r[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_si256((const __m256i *)((i < 4 ? ba : bb) + 8 + 32 * (i & 3)));
    /* dwords d of rows 2i, 2i + 1 interleaved, then of rows 4i..4i + 3 (d, d + 4 in the two lanes) */
    for (int i = 0; i < 4; i++) {
        u[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        u[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        r[4 * i + 0] = _mm256_unpacklo_epi64(u[4 * i], u[4 * i + 2]);     /* dwords 0 | 4 */
        r[4 * i + 1] = _mm256_unpackhi_epi64(u[4 * i], u[4 * i + 2]);     /* 1 | 5 */
        r[4 * i + 2] = _mm256_unpacklo_epi64(u[4 * i + 1], u[4 * i + 3]); /* 2 | 6 */
        r[4 * i + 3] = _mm256_unpackhi_epi64(u[4 * i + 1], u[4 * i + 3]); /* 3 | 7 */
    }
    for (int k = 0; k < 4; k++) {
        out.w[k] = _mm256_permute2x128_si256(r[k], r[4 + k], 0x20);
        out.w[k + 4] = _mm256_permute2x128_si256(r[k], r[4 + k], 0x31);
    }
    return out;
}

static inline __attribute__((always_inline)) rows8_block rows8_transpose(const uint8_t *ga, const uint8_t *gb, int64_t b, int q4) {
    return q4 ? q4_rows8_transpose(ga, gb, b) : q8_rows8_transpose(ga, gb, b);
}

/* Tokens per 16-row tile: with two 8-row blocks (RB = 2), 4 tokens' 8
 * sums and a column's four weight registers fill the 16 registers; 3 ran
 * q4 0.92x and q8 0.97x as fast (64 tokens, in cache). */
#define ROWS16_TILE 4

/*
 * Column k of a block (q4: dword k of the low nibbles and of the high;
 * q8: dword k) of the RB 8-row blocks blk times T tokens, added to sum.
 *
 * q4: a token's eight maddubs of a block add up in 16 bits without
 * saturating (8 x 2 x 15 x 127 = 30480): one madd, one conversion and one
 * scaling per 256 products (in rows16_tile), where q4_group pays them per
 * 64. q8: signed by signed, as q8_group: |w| times x carrying w's sign,
 * one sign per maddubs. Two maddubs would overflow 16 bits
 * (2 x 2 x 127 x 127), so each is widened by its own madd.
 */
static inline __attribute__((always_inline)) void rows16_column(const rows8_block *const blk[2], int RB, const int8_t *q,
                                                                const int64_t *ab0, int64_t b, int T, int k,
                                                                __m256i (*sum)[2], int q4) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i w[2], w2[2]; /* q4: low and high nibbles; q8: the weights and their magnitudes */
    #pragma GCC unroll 2
    for (int rb = 0; rb < RB; rb++) {
        w[rb] = blk[rb]->w[k];
        w2[rb] = q4 ? blk[rb]->w[4 + k] : _mm256_sign_epi8(w[rb], w[rb]);
    }
    #pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        const int8_t *x = q + (ab0[t] + b) * MOE_QK + 4 * k;
        const __m256i xk = _mm256_broadcastd_epi32(_mm_loadu_si32(x));
        const __m256i xh = q4 ? _mm256_broadcastd_epi32(_mm_loadu_si32(x + 16)) : xk;
        #pragma GCC unroll 2
        for (int rb = 0; rb < RB; rb++) {
            if (q4)
                sum[t][rb] = _mm256_add_epi16(sum[t][rb],
                                              _mm256_add_epi16(_mm256_maddubs_epi16(w[rb], xk), _mm256_maddubs_epi16(w2[rb], xh)));
            else
                sum[t][rb] = _mm256_add_epi32(sum[t][rb],
                                              _mm256_madd_epi16(_mm256_maddubs_epi16(w2[rb], _mm256_sign_epi8(xk, w[rb])), ones));
            /* Keeps each sum one chain in one register: GCC would otherwise
             * reassociate the additions into a tree over all k and spill
             * its leaves (0.85x). */
            __asm__("" : "+x"(sum[t][rb]));
        }
    }
}

/*
 * Tokens j..j+T-1 (T 1-4) times RB 8-row blocks (1 or 2; strip[rb] holds
 * block rb's column blocks [b0, b1), transposed) at row0. Each of a
 * token's broadcast activations feeds both 8-row blocks: the 8-row tiles
 * that ran before spent a broadcast load per maddubs, and these ran 1.3x
 * (q4) and 1.1x (q8) as fast at 64 tokens (bench/README.md, session 14).
 * From zero at block 0, else adding to y.
 */
static inline __attribute__((always_inline)) void rows16_tile(const moe_mm *mm, const rows8_block (*strip)[STRIP_BLOCKS],
                                                              int RB, int64_t b0, int64_t b1, int64_t row0, int j, int T,
                                                              int q4) {
    /* a copy, read once: the kernels' vector stores may alias *mm->a */
    const moe_act act = *mm->a;
    const __m256i ones = _mm256_set1_epi16(1);
    int64_t ab0[ROWS16_TILE]; /* token t's first activation block */
    __m256 acc[ROWS16_TILE][2];
    #pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        ab0[t] = (mm->idx ? mm->idx[j + t] : j + t) * act.nb;
        #pragma GCC unroll 2
        for (int rb = 0; rb < RB; rb++)
            acc[t][rb] = b0 ? _mm256_loadu_ps(mm->y + (j + t) * mm->ldy + row0 + 8 * rb) : _mm256_setzero_ps();
    }
    for (int64_t b = b0; b < b1; b++) {
        const rows8_block *blk[2] = {&strip[0][b - b0], &strip[RB - 1][b - b0]};
        __m256i sum[ROWS16_TILE][2]; /* q4: 16-bit pair sums; q8: 32-bit sums */
        #pragma GCC unroll 4
        for (int t = 0; t < T; t++) sum[t][0] = sum[t][1] = _mm256_setzero_si256();
        if (q4) {
            #pragma GCC unroll 4
            for (int k = 0; k < 4; k++) rows16_column(blk, RB, act.q, ab0, b, T, k, sum, 1);
        } else {
            #pragma GCC unroll 8
            for (int k = 0; k < 8; k++) rows16_column(blk, RB, act.q, ab0, b, T, k, sum, 0);
        }
        #pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const int64_t ab = ab0[t] + b;
            const __m256 d = _mm256_set1_ps(act.d[ab]);
            #pragma GCC unroll 2
            for (int rb = 0; rb < RB; rb++) {
                /* q4: the integer sum starts from q4_base, -8 sum(x) */
                const __m256i p = q4 ? _mm256_add_epi32(_mm256_madd_epi16(sum[t][rb], ones), _mm256_set1_epi32(act.q4_base[ab]))
                                     : sum[t][rb];
                acc[t][rb] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(blk[rb]->scale, d), acc[t][rb]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        #pragma GCC unroll 2
        for (int rb = 0; rb < RB; rb++) _mm256_storeu_ps(mm->y + (j + t) * mm->ldy + row0 + 8 * rb, acc[t][rb]);
}

/* From this many tokens on, q4 and q8 products go through rows16_strips;
 * fewer stream their weights through q4_group and q8_group. From memory,
 * on two Zen 3 cores, the 16-row kernels ran q4 at 3 tokens 0.98x and at
 * 4 1.0x as fast as q4_group, q8 at 4 0.87x and at 6 1.10x as q8_group
 * (bench/kernel-ab.sh). */
#define ROWS16_MIN_TOKENS_Q4 4
#define ROWS16_MIN_TOKENS_Q8 6

/* Tokens [j0, j1) through the RB 8-row blocks (1 or 2) from group g on, a
 * strip of column blocks at a time. */
static inline __attribute__((always_inline)) void rows16_strips(const moe_mm *mm, int64_t g, int RB, int j0, int j1, int q4) {
    const int64_t nb = mm->a->nb;
    const size_t gstride = (size_t)nb * (q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES);
    const uint8_t *g0 = (const uint8_t *)mm->w->data + (size_t)g * gstride;
    rows8_block strip[2][STRIP_BLOCKS];
    for (int64_t b0 = 0; b0 < nb; b0 += STRIP_BLOCKS) {
        const int64_t b1 = b0 + STRIP_BLOCKS < nb ? b0 + STRIP_BLOCKS : nb;
        for (int rb = 0; rb < RB; rb++) {
            const uint8_t *ga = g0 + 2 * (size_t)rb * gstride;
            for (int64_t b = b0; b < b1; b++) strip[rb][b - b0] = rows8_transpose(ga, ga + gstride, b, q4);
        }
        int j = j0;
        for (; j + ROWS16_TILE <= j1; j += ROWS16_TILE) rows16_tile(mm, strip, RB, b0, b1, g * 4, j, ROWS16_TILE, q4);
#define ROWS16_TILE_OF(T) rows16_tile(mm, strip, RB, b0, b1, g * 4, j, T, q4)
        if (j < j1) MOE_FOR_NQ(j1 - j, ROWS16_TILE_OF);
#undef ROWS16_TILE_OF
    }
}

/* Out of line, so that the strip's 18 KiB stay off the stack frame of the
 * paths without one (inlined, the 8-row kernels' strip cost those 10-15 %
 * at 8 tokens); RB a constant in each copy. */
static __attribute__((noinline)) void rows16_strips_q4(const moe_mm *mm, int64_t g, int RB, int j0, int j1) {
    if (RB == 2) rows16_strips(mm, g, 2, j0, j1, 1);
    else rows16_strips(mm, g, 1, j0, j1, 1);
}
static __attribute__((noinline)) void rows16_strips_q8(const moe_mm *mm, int64_t g, int RB, int j0, int j1) {
    if (RB == 2) rows16_strips(mm, g, 2, j0, j1, 0);
    else rows16_strips(mm, g, 1, j0, j1, 0);
}

/* The 16-row kernels take a prompt's tokens in chunks of this many per pass
 * over the weight rows, so that their int8 activations (2 KiB a token at
 * 2048 columns) stay in L2 while every 16-row block reads them. */
#define ROWS16_TOKEN_CHUNK 128

static inline __attribute__((always_inline)) void mm_quant(const moe_mm *mm, int64_t r0, int64_t r1, int q4) {
    const size_t gbytes = q4 ? MOE_Q4_GROUP_BYTES : MOE_Q8_GROUP_BYTES;
    int64_t g = r0 / 4;
    if (mm->n >= (q4 ? ROWS16_MIN_TOKENS_Q4 : ROWS16_MIN_TOKENS_Q8)) {
        /* 16 rows at a time, then one block of 8 if 8 more rows are left, then single groups */
        const int64_t g16 = g + (r1 - g * 4) / 16 * 4, g1 = g16 + (r1 - g16 * 4) / 8 * 2;
        for (int j = 0; j < mm->n; j += ROWS16_TOKEN_CHUNK) {
            const int j1 = j + ROWS16_TOKEN_CHUNK < mm->n ? j + ROWS16_TOKEN_CHUNK : mm->n;
            for (int64_t gb = g; gb < g1; gb += 4) {
                const int RB = g1 - gb >= 4 ? 2 : 1;
                if (q4) rows16_strips_q4(mm, gb, RB, j, j1);
                else rows16_strips_q8(mm, gb, RB, j, j1);
            }
        }
        g = g1;
    }
    for (; g * 4 < r1; g++) {
        const uint8_t *grp = (const uint8_t *)mm->w->data + (size_t)g * (size_t)mm->a->nb * gbytes;
        int j = 0;
        for (; j + TOK_TILE <= mm->n; j += TOK_TILE) {
            int64_t trow[TOK_TILE];
            __m128 acc[TOK_TILE];
            for (int t = 0; t < TOK_TILE; t++) trow[t] = mm->idx ? mm->idx[j + t] : j + t;
            if (q4) q4_group(mm, grp, trow, TOK_TILE, acc);
            else q8_group(mm, grp, trow, TOK_TILE, acc);
            for (int t = 0; t < TOK_TILE; t++) store_rows(mm, j + t, g * 4, r1, acc[t]);
        }
        for (; j < mm->n; j++) {
            int64_t trow[1] = {mm->idx ? mm->idx[j] : j};
            __m128 acc[1];
            if (q4) q4_group(mm, grp, trow, 1, acc);
            else q8_group(mm, grp, trow, 1, acc);
            store_rows(mm, j, g * 4, r1, acc[0]);
        }
    }
}

static void mm_q4(const moe_mm *mm, int64_t r0, int64_t r1) { mm_quant(mm, r0, r1, 1); }
static void mm_q8(const moe_mm *mm, int64_t r0, int64_t r1) { mm_quant(mm, r0, r1, 0); }

/* Eight weights of row p starting at column c, as floats. */
static inline __attribute__((always_inline)) __m256 load8(moe_dtype t, const void *p, int64_t c) {
    if (t == MOE_F32) return _mm256_loadu_ps((const float *)p + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + c));
    if (t == MOE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Float weights: four rows times TT (1-2) tokens per pass, so each weight
 * load feeds TT FMAs and each activation load four (with 16 registers, two
 * tokens is what fits). The row's last cols % 8 values are added in scalar. */
static inline __attribute__((always_inline)) void float_tile(const moe_mm *mm, moe_dtype t, const void *const row[4],
                                                             int64_t r, int nr, int j, const int TT) {
    const int64_t cols = mm->w->cols, cv = cols / 8 * 8, esize = t == MOE_F32 ? 4 : 2;
    const float *x[2];
    #pragma GCC unroll 2
    for (int k = 0; k < TT; k++) x[k] = act_row(mm, j + k);
    __m256 acc[4][2];
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 2
        for (int k = 0; k < TT; k++) acc[i][k] = _mm256_setzero_ps();
    for (int64_t c = 0; c < cv; c += 8) {
        __m256 xv[2];
        #pragma GCC unroll 2
        for (int k = 0; k < TT; k++) xv[k] = _mm256_loadu_ps(x[k] + c);
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256 wv = load8(t, row[i], c);
            #pragma GCC unroll 2
            for (int k = 0; k < TT; k++) acc[i][k] = _mm256_fmadd_ps(wv, xv[k], acc[i][k]);
        }
    }
    float tail[4][8]; /* each row's last cols % 8 weights, decoded once for all tokens */
    for (int i = 0; i < nr && cv < cols; i++)
        moe_dequantize_rows(t, (const uint8_t *)row[i] + cv * esize, 1, cols - cv, 0, 1, tail[i]);
    #pragma GCC unroll 2
    for (int k = 0; k < TT; k++) {
        /* all four sums, then the nr rows that exist: constant indices keep acc in registers */
        float sum[4];
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) sum[i] = hsum256(acc[i][k]);
        for (int i = 0; i < nr; i++) {
            for (int64_t c = cv; c < cols; c++) sum[i] += tail[i][c - cv] * x[k][c];
            mm->y[(j + k) * mm->ldy + r + i] = sum[i];
        }
    }
}

static inline __attribute__((always_inline)) void mm_float(const moe_mm *mm, int64_t r0, int64_t r1, moe_dtype t) {
    const moe_weight *w = mm->w;
    const int64_t esize = t == MOE_F32 ? 4 : 2;
    for (int64_t r = r0; r < r1; r += 4) {
        const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const void *row[4];
        for (int i = 0; i < 4; i++) row[i] = (const uint8_t *)w->data + (size_t)(r + (i < nr ? i : 0)) * w->cols * esize;
        int j = 0;
        for (; j + 2 <= mm->n; j += 2) float_tile(mm, t, row, r, nr, j, 2);
        if (j < mm->n) float_tile(mm, t, row, r, nr, j, 1);
    }
}

static void mm_f32(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_F32); }
static void mm_f16(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_F16); }
static void mm_bf16(const moe_mm *mm, int64_t r0, int64_t r1) { mm_float(mm, r0, r1, MOE_BF16); }

/* Eight values of a cached row from i on, f32 or (half) f16, as floats
 * (moe_cached_value, one value, for the tails). */
static inline __m256 row8(const void *p, int i, int half) {
    return half ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i))) : _mm256_loadu_ps((const float *)p + i);
}

/* Four sums, so that a head's 128 values make chains of four FMAs, not
 * eight: decode attention's dot_half 1.15x (Zen 3, one core, 2048
 * positions x 16 heads of 128 f16 values, bench/README.md session 14). */
static inline __attribute__((always_inline)) float dot_of(const float *a, const void *b, int n, int half) {
    __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32)
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) s[k] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * k), row8(b, i + 8 * k, half), s[k]);
    for (; i + 8 <= n; i += 8) s[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), row8(b, i, half), s[0]);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])));
    for (; i < n; i++) sum += a[i] * moe_cached_value(b, (size_t)i, half);
    return sum;
}

static inline __attribute__((always_inline)) void axpy_of(float *y, float a, const void *x, int n, int half) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, row8(x, i, half), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * moe_cached_value(x, (size_t)i, half);
}

static float dot(const float *a, const float *b, int n) { return dot_of(a, b, n, 0); }
static float dot_half(const float *a, const uint16_t *b, int n) { return dot_of(a, b, n, 1); }
static void axpy(float *y, float a, const float *x, int n) { axpy_of(y, a, x, n, 0); }
static void axpy_half(float *y, float a, const uint16_t *x, int n) { axpy_of(y, a, x, n, 1); }

/* NQ queries over 16 columns of V at a time (eight accumulators at most):
 * each value row's two vectors are loaded once for all queries. The last
 * d % 8 columns go one at a time per query. */
static inline __attribute__((always_inline)) void wsum_tile_of(float *o, int64_t ldo, const float *s, int64_t lds,
                                                               const float *scale, const int NQ, const void *v, int n,
                                                               int64_t ldv, int d, int half) {
    int c = 0;
    while (c + 8 <= d) {
        const int two = c + 16 <= d; /* a second vector of columns */
        __m256 acc[4][2];
        #pragma GCC unroll 4
        for (int i = 0; i < NQ; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int p = 0; p < n; p++) {
            const void *row = half ? (const void *)((const uint16_t *)v + (size_t)p * (size_t)ldv)
                                   : (const void *)((const float *)v + (size_t)p * (size_t)ldv);
            const __m256 v0 = row8(row, c, half), v1 = two ? row8(row, c + 8, half) : _mm256_setzero_ps();
            #pragma GCC unroll 4
            for (int i = 0; i < NQ; i++) {
                const __m256 sp = _mm256_broadcast_ss(s + i * lds + p);
                acc[i][0] = _mm256_fmadd_ps(sp, v0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(sp, v1, acc[i][1]);
            }
        }
        #pragma GCC unroll 4
        for (int i = 0; i < NQ; i++) {
            const __m256 vs = _mm256_set1_ps(scale[i]);
            float *oi = o + i * ldo + c;
            _mm256_storeu_ps(oi, _mm256_fmadd_ps(acc[i][0], vs, _mm256_loadu_ps(oi)));
            if (two) _mm256_storeu_ps(oi + 8, _mm256_fmadd_ps(acc[i][1], vs, _mm256_loadu_ps(oi + 8)));
        }
        c += two ? 16 : 8;
    }
    for (int i = 0; i < NQ; i++) moe_wsum_columns(o + i * ldo, s + i * lds, scale[i], v, half, n, ldv, c, d);
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
 * block of 16 keys (two registers) per step: eight accumulators. */
static void scores_kt(float *s, int64_t lds, const float *q, int64_t ldq, int nq, const float *kt, int n, int d,
                      float scale) {
    const float *qi[4];
    for (int i = 0; i < 4; i++) qi[i] = q + (i < nq ? i : 0) * ldq;
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int b = 0; b * MOE_KT_BLOCK < n; b++) {
        const float *blk = kt + (size_t)b * (size_t)d * MOE_KT_BLOCK;
        __m256 acc[4][2];
        for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int j = 0; j < d; j++) {
            const __m256 k0 = _mm256_loadu_ps(blk + (size_t)j * MOE_KT_BLOCK), k1 = _mm256_loadu_ps(blk + (size_t)j * MOE_KT_BLOCK + 8);
            for (int i = 0; i < 4; i++) {
                const __m256 qj = _mm256_broadcast_ss(qi[i] + j);
                acc[i][0] = _mm256_fmadd_ps(qj, k0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(qj, k1, acc[i][1]);
            }
        }
        /* constant indices (unrolled, i < nq tested in each copy): with
         * acc[i] indexed by a variable, GCC stored all eight accumulators to
         * the stack on every step of the loop above */
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            if (i < nq) {
                _mm256_storeu_ps(s + i * lds + b * MOE_KT_BLOCK, _mm256_mul_ps(acc[i][0], vscale));
                _mm256_storeu_ps(s + i * lds + b * MOE_KT_BLOCK + 8, _mm256_mul_ps(acc[i][1], vscale));
            }
    }
}

static void quantize_act(moe_act *a, int t0, int t1) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int t = t0; t < t1; t++) {
        int8_t *q = a->q + (size_t)t * (size_t)(a->nb * MOE_QK);
        for (int64_t b = 0; b < a->nb; b++) {
            const int64_t c0 = b * MOE_QK;
            float buf[MOE_QK];
            const float *xb = moe_act_block(a, t, b, buf);
            __m256 v[4], m = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) {
                v[i] = _mm256_loadu_ps(xb + 8 * i);
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float d = _mm_cvtss_f32(m4) / 127.0f, inv = d ? 1.0f / d : 0.0f;
            const __m256 vinv = _mm256_set1_ps(inv);
            __m256i iv[4];
            for (int i = 0; i < 4; i++)
                iv[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            /* pack 32 i32 -> 32 i8, undoing the lane interleave of the packs */
            __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]), p16b = _mm256_packs_epi32(iv[2], iv[3]);
            __m256i p8 = _mm256_packs_epi16(p16a, p16b);
            p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + c0), p8);
            __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p8);
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s4 = _mm_hadd_epi32(s4, s4);
            s4 = _mm_hadd_epi32(s4, s4);
            a->d[t * a->nb + b] = d;
            a->q4_base[t * a->nb + b] = -8 * _mm_cvtsi128_si32(s4);
        }
    }
}

/* e^x for x in [-87, 88] (callers clamp): 2^n e^r with n = round(x log2 e),
 * r = x - n ln 2 in two steps (Cody-Waite), e^r by its Taylor series to r^6
 * (|r| <= ln 2 / 2: error below 2e-7), 2^n built in the exponent field. */
static inline __m256 exp_clamped(__m256 x) {
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* silu(g) u = g u / (1 + e^-g). e^-g is clamped to [e^-88, e^87]: beyond
 * that silu(g) is g or 0 to float precision. NaN stays NaN (max and min
 * return their second operand when one is NaN). */
static void swiglu(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 m = _mm256_min_ps(_mm256_set1_ps(87.0f), _mm256_max_ps(_mm256_set1_ps(-88.0f), _mm256_sub_ps(_mm256_setzero_ps(), g)));
        const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_clamped(m));
        _mm256_storeu_ps(gate + i, _mm256_div_ps(_mm256_mul_ps(g, _mm256_loadu_ps(up + i)), den));
    }
    if (i < n) moe_swiglu(gate + i, up + i, n - i);
}

/* e^(s - max s), clamped below at e^-88 (the reference gives 0 there or
 * ~1e-38: nothing next to the e^0 = 1 of the largest score). */
static float softmax_exp(float *s, int n) {
    int p = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; p + 8 <= n; p += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + p));
    float max = hmax256(vmax);
    for (; p < n; p++) max = s[p] > max ? s[p] : max;
    __m256 vsum = _mm256_setzero_ps();
    p = 0;
    for (; p + 8 <= n; p += 8) {
        const __m256 x = _mm256_max_ps(_mm256_set1_ps(-88.0f), _mm256_sub_ps(_mm256_loadu_ps(s + p), _mm256_set1_ps(max)));
        const __m256 e = exp_clamped(x);
        _mm256_storeu_ps(s + p, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum256(vsum);
    for (; p < n; p++) sum += (s[p] = expf(s[p] - max));
    return sum;
}

/* F16C: vcvtps2ph rounds to nearest even, as moe_f32_to_f16 does. min
 * and max return their second operand when one is NaN: NaN passes. */
static void to_half(uint16_t *dst, const float *src, int64_t n) {
    const __m256 hi = _mm256_set1_ps(MOE_HALF_MAX), lo = _mm256_set1_ps(-MOE_HALF_MAX);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_loadu_ps(src + i)));
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
    moe_to_half(dst + i, src + i, n - i);
}

static void from_half(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    moe_from_half(dst + i, src + i, n - i);
}

const moe_kernels moe_kernels_avx2 = {
    .isa = "avx2",
    .mm = {[MOE_F32] = mm_f32, [MOE_F16] = mm_f16, [MOE_BF16] = mm_bf16, [MOE_Q8] = mm_q8, [MOE_Q4] = mm_q4},
    .quantize_act = quantize_act,
    .dot = dot,
    .axpy = axpy,
    .dot_half = dot_half,
    .axpy_half = axpy_half,
    .scores_kt = scores_kt,
    .wsum_tile = wsum_tile,
    .wsum_tile_half = wsum_tile_half,
    .swiglu = swiglu,
    .softmax_exp = softmax_exp,
    .to_half = to_half,
    .from_half = from_half,
};
