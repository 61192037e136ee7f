/* test_half.c — f16/bf16 conversions against exact values and round trips. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "util/half.h"

int main(void) {
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
