/*
 * avx512_emulated.h — the AVX-512 intrinsics kernels_avx512.c uses, for a
 * CPU without AVX-512: SIMDe's portable versions (Debian's libsimde-dev)
 * under the native names, plus the few SIMDe 0.7 lacks, written here
 * element by element. kernels_avx512.c includes this instead of
 * <immintrin.h> when built with MOE_AVX512_EMULATED (tests/meson.build), so
 * its kernels can be checked against scalar on any x86-64 CPU with AVX2.
 *
 * Masked loads read only the lanes their mask selects and masked stores
 * write only those, as the hardware does, so AddressSanitizer still sees a
 * kernel that reads or writes past its arrays. Horizontal reductions add
 * in the order GCC's <immintrin.h> does. Conversions to and from f16 use
 * F16C, as the hardware's do.
 */
#ifndef MOE_TESTS_AVX512_EMULATED_H
#define MOE_TESTS_AVX512_EMULATED_H

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <immintrin.h> /* F16C, under the file's -mf16c */
#include <stdint.h>
#include <string.h>

/* a 512-bit register's lanes, through memory */
typedef union {
    float f32[16];
    int32_t i32[16];
    uint16_t u16[32];
} emu_lanes;

static inline emu_lanes emu_ps(simde__m512 v) {
    emu_lanes l;
    simde_mm512_storeu_ps(l.f32, v);
    return l;
}
static inline emu_lanes emu_si(simde__m512i v) {
    emu_lanes l;
    simde_mm512_storeu_si512(l.i32, v);
    return l;
}
static inline simde__m512 emu_to_ps(const emu_lanes *l) { return simde_mm512_loadu_ps(l->f32); }
static inline simde__m512i emu_to_si(const emu_lanes *l) { return simde_mm512_loadu_si512(l->i32); }

#ifndef _mm512_maskz_loadu_ps
static inline simde__m512 emu_mm512_mask_loadu_ps(simde__m512 src, simde__mmask16 m, const void *p) {
    emu_lanes l = emu_ps(src);
    for (int i = 0; i < 16; i++)
        if (m >> i & 1) l.f32[i] = ((const float *)p)[i];
    return emu_to_ps(&l);
}
#define _mm512_mask_loadu_ps(src, m, p) emu_mm512_mask_loadu_ps(src, m, p)
#define _mm512_maskz_loadu_ps(m, p) emu_mm512_mask_loadu_ps(simde_mm512_setzero_ps(), m, p)
#endif

#ifndef _mm512_mask_storeu_ps
static inline void emu_mm512_mask_storeu_ps(void *p, simde__mmask16 m, simde__m512 v) {
    const emu_lanes l = emu_ps(v);
    for (int i = 0; i < 16; i++)
        if (m >> i & 1) ((float *)p)[i] = l.f32[i];
}
#define _mm512_mask_storeu_ps(p, m, v) emu_mm512_mask_storeu_ps(p, m, v)
#endif

#ifndef _mm256_maskz_loadu_epi16
static inline __m256i emu_mm256_maskz_loadu_epi16(simde__mmask16 m, const void *p) {
    uint16_t v[16];
    for (int i = 0; i < 16; i++) v[i] = m >> i & 1 ? ((const uint16_t *)p)[i] : 0;
    return _mm256_loadu_si256((const __m256i *)v);
}
#define _mm256_maskz_loadu_epi16(m, p) emu_mm256_maskz_loadu_epi16(m, p)
#endif

#ifndef _mm256_mask_storeu_epi16
static inline void emu_mm256_mask_storeu_epi16(void *p, simde__mmask16 m, __m256i v) {
    uint16_t h[16];
    _mm256_storeu_si256((__m256i *)h, v);
    for (int i = 0; i < 16; i++)
        if (m >> i & 1) ((uint16_t *)p)[i] = h[i];
}
#define _mm256_mask_storeu_epi16(p, m, v) emu_mm256_mask_storeu_epi16(p, m, v)
#endif

#ifndef _mm512_cvtph_ps
static inline simde__m512 emu_mm512_cvtph_ps(__m256i h) {
    emu_lanes l;
    _mm256_storeu_ps(l.f32, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
    _mm256_storeu_ps(l.f32 + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
    return emu_to_ps(&l);
}
#define _mm512_cvtph_ps(h) emu_mm512_cvtph_ps(h)
#endif

#ifndef _mm512_cvtps_ph
static inline __m256i emu_mm512_cvtps_ph(simde__m512 v) {
    const emu_lanes l = emu_ps(v);
    const __m128i lo = _mm256_cvtps_ph(_mm256_loadu_ps(l.f32), _MM_FROUND_TO_NEAREST_INT);
    const __m128i hi = _mm256_cvtps_ph(_mm256_loadu_ps(l.f32 + 8), _MM_FROUND_TO_NEAREST_INT);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}
/* the kernels round to nearest, the only mode emulated */
#define _mm512_cvtps_ph(v, rounding) emu_mm512_cvtps_ph(v)
#endif

#ifndef _mm512_cvtepi32_ps
static inline simde__m512 emu_mm512_cvtepi32_ps(simde__m512i v) {
    emu_lanes l = emu_si(v);
    for (int i = 0; i < 16; i++) l.f32[i] = (float)l.i32[i];
    return emu_to_ps(&l);
}
#define _mm512_cvtepi32_ps(v) emu_mm512_cvtepi32_ps(v)
#endif

#ifndef _mm512_cvtps_epi32
/* under the default rounding, to nearest even, as vcvtps2dq */
static inline simde__m512i emu_mm512_cvtps_epi32(simde__m512 v) {
    const emu_lanes f = emu_ps(v);
    emu_lanes l;
    for (int i = 0; i < 16; i++) l.i32[i] = _mm_cvtss_si32(_mm_set_ss(f.f32[i]));
    return emu_to_si(&l);
}
#define _mm512_cvtps_epi32(v) emu_mm512_cvtps_epi32(v)
#endif

#ifndef _mm512_cvtepu16_epi32
static inline simde__m512i emu_mm512_cvtepu16_epi32(__m256i h) {
    uint16_t v[16];
    _mm256_storeu_si256((__m256i *)v, h);
    emu_lanes l;
    for (int i = 0; i < 16; i++) l.i32[i] = v[i];
    return emu_to_si(&l);
}
#define _mm512_cvtepu16_epi32(h) emu_mm512_cvtepu16_epi32(h)
#endif

#ifndef _mm512_extractf32x8_ps
static inline __m256 emu_mm512_extractf32x8_ps(simde__m512 v, int upper) {
    const emu_lanes l = emu_ps(v);
    return _mm256_loadu_ps(l.f32 + (upper ? 8 : 0));
}
#define _mm512_extractf32x8_ps(v, upper) emu_mm512_extractf32x8_ps(v, upper)
#endif

#ifndef _mm512_permute_ps
/* within each 128-bit lane, as vpermilps with an immediate */
static inline simde__m512 emu_mm512_permute_ps(simde__m512 v, int imm) {
    const emu_lanes s = emu_ps(v);
    emu_lanes l;
    for (int i = 0; i < 16; i++) l.f32[i] = s.f32[(i & ~3) + (imm >> 2 * (i & 3) & 3)];
    return emu_to_ps(&l);
}
#define _mm512_permute_ps(v, imm) emu_mm512_permute_ps(v, imm)
#endif

#ifndef _mm512_maskz_slli_epi32
static inline simde__m512i emu_mm512_maskz_slli_epi32(simde__mmask16 m, simde__m512i v, unsigned int shift) {
    emu_lanes l = emu_si(v);
    for (int i = 0; i < 16; i++) l.i32[i] = m >> i & 1 && shift < 32 ? (int32_t)((uint32_t)l.i32[i] << shift) : 0;
    return emu_to_si(&l);
}
#define _mm512_maskz_slli_epi32(m, v, shift) emu_mm512_maskz_slli_epi32(m, v, shift)
#endif

#ifndef _mm512_shuffle_i64x2
/* 128-bit lanes 0-1 of the result from a, 2-3 from b, two bits of imm each */
static inline simde__m512i emu_mm512_shuffle_i64x2(simde__m512i a, simde__m512i b, int imm) {
    const emu_lanes la = emu_si(a), lb = emu_si(b);
    emu_lanes l;
    for (int q = 0; q < 4; q++)
        for (int i = 0; i < 4; i++) l.i32[4 * q + i] = (q < 2 ? la : lb).i32[4 * (imm >> 2 * q & 3) + i];
    return emu_to_si(&l);
}
#define _mm512_shuffle_i64x2(a, b, imm) emu_mm512_shuffle_i64x2(a, b, imm)
#endif

#ifndef _mm512_maskz_loadu_epi16
static inline simde__m512i emu_mm512_maskz_loadu_epi16(simde__mmask32 m, const void *p) {
    emu_lanes l;
    for (int i = 0; i < 32; i++) l.u16[i] = m >> i & 1 ? ((const uint16_t *)p)[i] : 0;
    return emu_to_si(&l);
}
#define _mm512_maskz_loadu_epi16(m, p) emu_mm512_maskz_loadu_epi16(m, p)
#endif

#ifndef _mm512_cvtne2ps_pbh
/* vcvtne2ps2bf16: b's 16 values to bf16 0-15, a's to 16-31, rounded to
 * nearest even; subnormals read as zero, NaN kept a (quiet) NaN */
static inline uint16_t emu_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x40);
    return (uint16_t)((u + 0x7fffu + (u >> 16 & 1)) >> 16);
}
static inline simde__m512bh emu_mm512_cvtne2ps_pbh(simde__m512 a, simde__m512 b) {
    const emu_lanes la = emu_ps(a), lb = emu_ps(b);
    emu_lanes l;
    for (int i = 0; i < 16; i++) l.u16[i] = emu_bf16(lb.f32[i]), l.u16[16 + i] = emu_bf16(la.f32[i]);
    simde__m512bh r;
    memcpy(&r, &l, sizeof r);
    return r;
}
#define _mm512_cvtne2ps_pbh(a, b) emu_mm512_cvtne2ps_pbh(a, b)
#endif

/* The reductions halve the vector each step, upper half onto lower. */
#ifndef _mm512_reduce_add_ps
static inline float emu_mm512_reduce_add_ps(simde__m512 v) {
    emu_lanes l = emu_ps(v);
    for (int n = 8; n >= 1; n /= 2)
        for (int i = 0; i < n; i++) l.f32[i] += l.f32[i + n];
    return l.f32[0];
}
#define _mm512_reduce_add_ps(v) emu_mm512_reduce_add_ps(v)
#endif

#ifndef _mm512_reduce_max_ps
static inline float emu_mm512_reduce_max_ps(simde__m512 v) {
    emu_lanes l = emu_ps(v);
    for (int n = 8; n >= 1; n /= 2)
        for (int i = 0; i < n; i++) l.f32[i] = l.f32[i] > l.f32[i + n] ? l.f32[i] : l.f32[i + n];
    return l.f32[0];
}
#define _mm512_reduce_max_ps(v) emu_mm512_reduce_max_ps(v)
#endif

#ifndef _mm512_reduce_add_epi32
static inline int32_t emu_mm512_reduce_add_epi32(simde__m512i v) {
    emu_lanes l = emu_si(v);
    for (int n = 8; n >= 1; n /= 2)
        for (int i = 0; i < n; i++) l.i32[i] = (int32_t)((uint32_t)l.i32[i] + (uint32_t)l.i32[i + n]);
    return l.i32[0];
}
#define _mm512_reduce_add_epi32(v) emu_mm512_reduce_add_epi32(v)
#endif

#endif
