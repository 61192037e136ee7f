/* test_router.c — softmax/top-k routing and the counting sort of tokens. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "moe/moe.h"

int main(void) {
    const float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f};
    int32_t ex[3];
    float w[3];
    moe_route_softmax_topk(logits, 6, 3, 0, ex, w);
    CHECK(ex[0] == 1 && ex[1] == 3 && ex[2] == 4, "top-3 with a tie: %d %d %d", ex[0], ex[1], ex[2]);
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    CHECK(fabs(w[0] - exp(2.0) / z) < 1e-6 && fabs(w[2] - exp(1.5) / z) < 1e-6,
          "weights are softmax over all experts: %g %g", w[0], w[2]);
    moe_route_softmax_topk(logits, 6, 3, 1, ex, w);
    CHECK(fabs(w[0] + w[1] + w[2] - 1.0) < 1e-6, "renormalized weights sum to 1");
    CHECK(fabs(w[0] - exp(2.0) / (2 * exp(2.0) + exp(1.5))) < 1e-6, "renormalized weight");

    /* 4 tokens, top-2 over 5 experts. */
    const int32_t sel[8] = {3, 0, 1, 3, 4, 3, 0, 1};
    const float sw[8] = {.1f, .2f, .3f, .4f, .5f, .6f, .7f, .8f};
    int32_t start[6], tok[8];
    float gw[8];
    moe_groups g = {start, tok, gw};
    moe_group_by_expert(&g, sel, sw, 4, 2, 5);
    const int32_t want_start[6] = {0, 2, 4, 4, 7, 8};
    int ok = 1;
    for (int e = 0; e < 6; e++) ok &= start[e] == want_start[e];
    CHECK(ok, "group starts");
    CHECK(tok[0] == 0 && tok[1] == 3 && gw[0] == .2f && gw[1] == .7f, "expert 0's tokens in token order");
    CHECK(tok[4] == 0 && tok[5] == 1 && tok[6] == 2 && gw[6] == .6f, "expert 3's tokens");
    CHECK(tok[7] == 2 && gw[7] == .5f, "expert 4's token");
    return check_done();
}
