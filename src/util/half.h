/*
 * half.h — conversions between float32 and the 16-bit float formats (IEEE
 * binary16 and bfloat16), and FP8 E4M3 to float32 (checkpoints ship it). Scalar and exact: round-to-nearest-even on the way
 * down, NaN kept a NaN. The kernels use these as their reference.
 */
#ifndef MOE_UTIL_HALF_H
#define MOE_UTIL_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t moe_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float moe_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float moe_bf16_to_f32(uint16_t h) { return moe_bits_f32((uint32_t)h << 16); }

static inline uint16_t moe_f32_to_bf16(float f) {
    uint32_t u = moe_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define MOE_HALF_MAX 65504.0f /* the largest finite f16 */

static inline float moe_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return moe_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return moe_bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return moe_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t moe_f32_to_f16(float f) {
    uint32_t u = moe_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);         /* overflow to inf */
    if (absu < 0x38800000u) {                                           /* subnormal or zero */
        float a = moe_bits_f32(absu) * 16777216.0f;                     /* scale by 2^24 */
        uint32_t m = (uint32_t)a;
        float rem = a - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);                   /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* FP8 E4M3 ("e4m3fn", as DeepSeek-V3 ships): 4 exponent bits (bias 7), 3
 * mantissa bits, no infinities; S.1111.111 is NaN, the largest finite 448. */
static inline float moe_fp8_e4m3_to_f32(uint8_t v) {
    const int e = (v >> 3) & 15, m = v & 7;
    float x;
    if (e == 15 && m == 7) x = NAN;
    else if (e == 0) x = ldexpf((float)m, -9); /* subnormal: m/8 * 2^-6 */
    else x = ldexpf((float)(8 + m), e - 10);  /* (1 + m/8) * 2^(e-7) */
    return v & 0x80 ? -x : x;
}

#endif
