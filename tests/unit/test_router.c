/* test_router.c — routing (softmax/sigmoid, top-k, groups, correction bias,
 * scaling) on crafted logits, and the counting sort of tokens. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "moe/moe.h"

static moe_hparams router(int n_experts, int k, int norm) {
    return (moe_hparams){.n_experts = n_experts, .n_experts_used = k, .norm_topk = norm, .n_groups = 1,
                         .topk_groups = 1, .routed_scale = 1.0f};
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* DeepSeek's group-limited routing on 8 experts in 4 groups of 2. */
static void groups(void) {
    float scratch[64];
    int32_t ex[2];
    float w[2];
    /* group scores by max (V2): groups {0,1}:0.9 {2,3}:0.8 {4,5}:0.95 {6,7}:0.1 (as softmax inputs) */
    const float logits[8] = {3.0f, -2.0f, 2.9f, 2.8f, 1.0f, 3.5f, 0.5f, 0.4f};
    moe_hparams hp = router(8, 2, 0);
    hp.n_groups = 4;
    hp.topk_groups = 2;
    hp.group_score = MOE_GROUP_MAX;
    moe_route(&hp, logits, NULL, scratch, ex, w);
    /* best groups by max: {4,5} (3.5) and {0,1} (3.0); expert 2 (2.9) is excluded */
    CHECK(ex[0] == 5 && ex[1] == 0, "V2 group limit keeps groups 2 and 0: %d %d", ex[0], ex[1]);
    hp.group_score = MOE_GROUP_TOP2_SUM;
    moe_route(&hp, logits, NULL, scratch, ex, w);
    /* by the sum of the two best: {2,3} 2.9+2.8 wins, then {4,5} 1+3.5; group {0,1} (3-2) is out */
    CHECK(ex[0] == 5 && ex[1] == 2, "V3 group limit by top-2 sums: %d %d", ex[0], ex[1]);

    /* sigmoid scoring with a correction bias: the bias moves the choice, not the weights */
    hp = router(8, 2, 1);
    hp.router_func = MOE_ROUTER_SIGMOID;
    hp.routed_scale = 2.5f;
    const float flat[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    float bias[8] = {0};
    moe_route(&hp, flat, bias, scratch, ex, w);
    CHECK(ex[0] == 7 && ex[1] == 6, "sigmoid top-2 without bias: %d %d", ex[0], ex[1]);
    bias[0] = 1.0f;
    bias[1] = 0.5f;
    moe_route(&hp, flat, bias, scratch, ex, w);
    CHECK(ex[0] == 0 && ex[1] == 1, "the bias changes the choice: %d %d", ex[0], ex[1]);
    const double s0 = sigmoid(0.1), s1 = sigmoid(0.2);
    CHECK(fabs(w[0] - 2.5 * s0 / (s0 + s1)) < 1e-6 && fabs(w[1] - 2.5 * s1 / (s0 + s1)) < 1e-6,
          "weights from unbiased scores, renormalized, times routed_scaling_factor: %g %g", w[0], w[1]);
    hp.norm_topk = 0;
    moe_route(&hp, flat, bias, scratch, ex, w);
    CHECK(fabs(w[0] - 2.5 * s0) < 1e-6, "without norm_topk_prob only the scaling: %g", w[0]);
}

int main(void) {
    const float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f};
    int32_t ex[3];
    float w[3], scratch[32];
    moe_hparams hp = router(6, 3, 0);
    moe_route(&hp, logits, NULL, scratch, ex, w);
    CHECK(ex[0] == 1 && ex[1] == 3 && ex[2] == 4, "top-3 with a tie: %d %d %d", ex[0], ex[1], ex[2]);
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    CHECK(fabs(w[0] - exp(2.0) / z) < 1e-6 && fabs(w[2] - exp(1.5) / z) < 1e-6,
          "weights are softmax over all experts: %g %g", w[0], w[2]);
    hp.norm_topk = 1;
    moe_route(&hp, logits, NULL, scratch, ex, w);
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
    groups();
    return check_done();
}
