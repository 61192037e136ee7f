/*
 * test_sampler.c — samplers on crafted logits: greedy, seeded determinism,
 * and the distributions that top-k, top-p, min-p and temperature must give,
 * checked by drawing many samples; penalties against their definitions.
 */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "moe.h"

#define DRAWS 200000

/* Frequencies of DRAWS samples over 4 tokens. */
static void frequencies(moe_sampler_params p, const float *logits, double *f) {
    moe_sampler *s = moe_sampler_new(p, 4, NULL);
    int count[4] = {0};
    for (int i = 0; i < DRAWS; i++) count[moe_sampler_sample(s, logits)]++;
    for (int i = 0; i < 4; i++) f[i] = (double)count[i] / DRAWS;
    moe_sampler_free(s);
}

static int close_to(const double *f, const double *want) {
    int ok = 1;
    for (int i = 0; i < 4; i++) ok &= fabs(f[i] - want[i]) < 0.006; /* > 4 sigma at 200k draws */
    return ok;
}

int main(void) {
    const float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    moe_sampler_params base = {.temp = 1, .top_p = 1, .repeat_penalty = 1, .repeat_last_n = 64, .seed = 7};
    double f[4];

    frequencies(base, logits, f);
    CHECK(close_to(f, (double[]){0.5, 0.3, 0.15, 0.05}), "temperature 1: %.3f %.3f %.3f %.3f", f[0], f[1], f[2], f[3]);

    moe_sampler_params p = base;
    p.top_k = 2;
    frequencies(p, logits, f);
    CHECK(close_to(f, (double[]){0.625, 0.375, 0, 0}), "top-k 2: %.3f %.3f %.3f %.3f", f[0], f[1], f[2], f[3]);

    p = base;
    p.top_p = 0.75f; /* 0.5 + 0.3 reaches 0.75: two tokens stay */
    frequencies(p, logits, f);
    CHECK(close_to(f, (double[]){0.625, 0.375, 0, 0}), "top-p 0.75: %.3f %.3f %.3f %.3f", f[0], f[1], f[2], f[3]);

    p = base;
    p.min_p = 0.2f; /* keeps p >= 0.1: three tokens */
    frequencies(p, logits, f);
    CHECK(close_to(f, (double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}), "min-p 0.2: %.3f %.3f %.3f %.3f", f[0], f[1],
          f[2], f[3]);

    p = base;
    p.temp = 0.5f; /* p^2 renormalized */
    frequencies(p, logits, f);
    const double z = 0.25 + 0.09 + 0.0225 + 0.0025;
    CHECK(close_to(f, (double[]){0.25 / z, 0.09 / z, 0.0225 / z, 0.0025 / z}), "temperature 0.5: %.3f %.3f %.3f %.3f",
          f[0], f[1], f[2], f[3]);

    /* greedy, and top-k 1, always give the argmax */
    p = base;
    p.temp = 0;
    moe_sampler *s = moe_sampler_new(p, 4, NULL);
    CHECK(moe_sampler_sample(s, logits) == 0, "greedy");
    moe_sampler_free(s);

    /* same seed, same draws; another seed, other draws */
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p = base;
        p.seed = run == 2 ? 8 : 7;
        s = moe_sampler_new(p, 4, NULL);
        for (int i = 0; i < 64; i++) (run == 0 ? a : run == 1 ? b : c)[i] = moe_sampler_sample(s, logits);
        moe_sampler_free(s);
    }
    int same = 1, diff = 0;
    for (int i = 0; i < 64; i++) {
        same &= a[i] == b[i];
        diff |= a[i] != c[i];
    }
    CHECK(same && diff, "seeded determinism");

    /* penalties: repeat penalty divides positive logits and multiplies
     * negative ones; frequency and presence subtract. Token 0 seen twice. */
    p = base;
    p.temp = 0;
    p.repeat_penalty = 2.0f;
    const float l2[4] = {1.0f, 0.6f, -1.0f, 0.0f};
    s = moe_sampler_new(p, 4, NULL);
    moe_sampler_accept(s, 0);
    moe_sampler_accept(s, 0);
    CHECK(moe_sampler_sample(s, l2) == 1, "repeat penalty 2 turns 1.0 into 0.5 < 0.6");
    moe_sampler_free(s);
    p.repeat_penalty = 1.0f;
    p.frequency_penalty = 0.15f; /* 1.0 - 2 * 0.15 = 0.7 > 0.6 */
    s = moe_sampler_new(p, 4, NULL);
    moe_sampler_accept(s, 0);
    moe_sampler_accept(s, 0);
    CHECK(moe_sampler_sample(s, l2) == 0, "frequency penalty 0.15");
    moe_sampler_free(s);
    p.frequency_penalty = 0.25f; /* 1.0 - 0.5 = 0.5 < 0.6 */
    s = moe_sampler_new(p, 4, NULL);
    moe_sampler_accept(s, 0);
    moe_sampler_accept(s, 0);
    CHECK(moe_sampler_sample(s, l2) == 1, "frequency penalty 0.25");
    /* the window forgets: after 64 other tokens, token 0 is free again */
    for (int i = 0; i < 64; i++) moe_sampler_accept(s, 3);
    CHECK(moe_sampler_sample(s, l2) == 0, "penalty window of 64");
    moe_sampler_free(s);
    p.frequency_penalty = 0;
    p.presence_penalty = 0.5f;
    s = moe_sampler_new(p, 4, NULL);
    moe_sampler_accept(s, 0);
    CHECK(moe_sampler_sample(s, l2) == 1, "presence penalty 0.5");
    moe_sampler_free(s);

    /* bad settings are refused with a message */
    moe_error err;
    p = base;
    p.top_p = 0;
    CHECK(moe_sampler_new(p, 4, &err) == NULL, "top-p 0 refused");
    return check_done();
}
