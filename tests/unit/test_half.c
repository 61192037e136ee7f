/* test_half.c — f16/bf16 conversions against exact values and round trips. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "util/half.h"

/* Every FP8 E4M3 code against its definition, computed another way. */
static void fp8(void) {
    int ok = 1, nan = 0;
    for (int v = 0; v < 256; v++) {
        const int sign = v >> 7, e = (v >> 3) & 15, m = v & 7;
        const float got = moe_fp8_e4m3_to_f32((uint8_t)v);
        if (e == 15 && m == 7) {
            nan += isnan(got);
            continue;
        }
        double want = e ? (1 + m / 8.0) * pow(2, e - 7) : m / 8.0 * pow(2, -6);
        if (sign) want = -want;
        ok &= got == (float)want;
    }
    CHECK(ok && nan == 2, "fp8 e4m3: every finite code decodes exactly, 0x7f and 0xff are NaN");
    CHECK(moe_fp8_e4m3_to_f32(0x7e) == 448.0f && moe_fp8_e4m3_to_f32(0x38) == 1.0f &&
              moe_fp8_e4m3_to_f32(0x01) == 0x1p-9f && moe_fp8_e4m3_to_f32(0xb8) == -1.0f,
          "fp8 e4m3: 448, 1, the smallest subnormal, -1");
}

int main(void) {
    fp8();
    /* Known encodings. */
    CHECK(moe_f32_to_f16(1.0f) == 0x3c00, "1.0 -> %04x", moe_f32_to_f16(1.0f));
    CHECK(moe_f32_to_f16(-2.0f) == 0xc000, "-2.0");
    CHECK(moe_f32_to_f16(65504.0f) == 0x7bff, "max half");
    CHECK(moe_f32_to_f16(65520.0f) == 0x7c00, "rounds to inf");
    CHECK(moe_f32_to_f16(5.9604645e-08f) == 0x0001, "smallest subnormal");
    CHECK(moe_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "tie rounds to even (down)");
    CHECK(moe_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "tie rounds to even (up)");
    CHECK(moe_f16_to_f32(0x3555) == 0.333251953125f, "0x3555");
    CHECK(moe_f16_to_f32(0x0001) == 5.9604645e-08f, "subnormal decode");
    CHECK(isinf(moe_f16_to_f32(0x7c00)) && isnan(moe_f16_to_f32(0x7e00)), "inf, nan");
    CHECK(moe_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(moe_f32_to_bf16(1.00390625f) == 0x3f80, "bf16 tie to even (down)");
    CHECK(moe_f32_to_bf16(1.01171875f) == 0x3f82, "bf16 tie to even (up)");
    CHECK(isnan(moe_bf16_to_f32(moe_f32_to_bf16(NAN))), "bf16 nan stays nan");

    /* Every finite half round-trips exactly through float. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (moe_f32_to_f16(moe_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    /* Rounding error of a float -> half is at most half an ulp. */
    bad = 0;
    for (float x = 1e-4f; x < 60000.0f; x *= 1.0007f) {
        float y = moe_f16_to_f32(moe_f32_to_f16(x));
        float ulp = ldexpf(1.0f, (int)floorf(log2f(x)) - 10);
        if (fabsf(y - x) > 0.5f * ulp * 1.0001f && x > 6.2e-5f) bad++;
    }
    CHECK(bad == 0, "%d floats round badly", bad);
    return check_done();
}
