/*
 * router.c — choosing experts, for every family, from the switches in
 * moe_hparams:
 *   scores   softmax over all experts (Mixtral, Qwen, OLMoE, DeepSeek-V2) or
 *            a sigmoid of each logit (DeepSeek-V3);
 *   choice   the scores plus a per-expert correction bias (V3's
 *            e_score_correction_bias), which steers the choice only;
 *   groups   with n_group > 1 only the topk_group best groups compete, a
 *            group scored by its best expert (V2) or its two best summed (V3);
 *   weights  the chosen experts' unbiased scores, renormalized to sum 1 with
 *            norm_topk, then times routed_scale.
 * Experts of groups that lose are masked to a score of 0, not -inf, as the
 * reference code does (masked_fill(..., 0.0)); ties go to the lower index.
 */
#include <math.h>

#include "moe.h"

/* The index of the largest v[i] among those with i not yet taken. */
static int best_untaken(const float *v, int n, const int32_t *taken, int n_taken) {
    int best = -1;
    for (int e = 0; e < n; e++) {
        int used = 0;
        for (int j = 0; j < n_taken; j++) used |= taken[j] == e;
        if (!used && (best < 0 || v[e] > v[best])) best = e;
    }
    return best;
}

void moe_route(const moe_hparams *hp, const float *logits, const float *bias, float *scratch, int32_t *experts,
               float *weights) {
    const int n = hp->n_experts, k = hp->n_experts_used;
    float *scores = scratch, *choice = scratch + n, *group = scratch + 2 * n;
    if (hp->router_func == MOE_ROUTER_SIGMOID) {
        for (int e = 0; e < n; e++) scores[e] = (float)(1.0 / (1.0 + exp(-(double)logits[e])));
    } else {
        float max = logits[0];
        for (int e = 1; e < n; e++) max = logits[e] > max ? logits[e] : max;
        double sum = 0;
        for (int e = 0; e < n; e++) sum += exp((double)logits[e] - max);
        for (int e = 0; e < n; e++) scores[e] = (float)(exp((double)logits[e] - max) / sum);
    }
    for (int e = 0; e < n; e++) choice[e] = bias ? scores[e] + bias[e] : scores[e];

    if (hp->n_groups > 1) {
        const int per = n / hp->n_groups;
        int32_t two[2];
        for (int g = 0; g < hp->n_groups; g++) {
            const float *c = choice + g * per;
            two[0] = best_untaken(c, per, two, 0);
            if (hp->group_score == MOE_GROUP_MAX) {
                group[g] = c[two[0]];
            } else {
                two[1] = best_untaken(c, per, two, 1);
                group[g] = c[two[0]] + c[two[1]];
            }
        }
        float *kept = group + hp->n_groups; /* 1 for the topk_groups best groups */
        for (int g = 0; g < hp->n_groups; g++) kept[g] = 0.0f;
        for (int i = 0; i < hp->topk_groups; i++) {
            int best = -1;
            for (int g = 0; g < hp->n_groups; g++)
                if (!kept[g] && (best < 0 || group[g] > group[best])) best = g;
            kept[best] = 1.0f;
        }
        for (int g = 0; g < hp->n_groups; g++)
            if (!kept[g])
                for (int e = g * per; e < (g + 1) * per; e++) choice[e] = 0.0f;
    }
    /* Selection of k: k is small next to the experts. */
    double sum = 0;
    for (int i = 0; i < k; i++) {
        experts[i] = best_untaken(choice, n, experts, i);
        sum += (weights[i] = scores[experts[i]]);
    }
    const double scale = hp->norm_topk && k > 1 ? hp->routed_scale / (sum + 1e-20) : hp->routed_scale;
    for (int i = 0; i < k; i++) weights[i] = (float)(weights[i] * scale);
}

void moe_group_by_expert(moe_groups *g, const int32_t *experts, const float *weights,
                         int n_tok, int k, int n_experts) {
    for (int e = 0; e <= n_experts; e++) g->start[e] = 0;
    for (int i = 0; i < n_tok * k; i++) g->start[experts[i] + 1]++;
    for (int e = 0; e < n_experts; e++) g->start[e + 1] += g->start[e];
    /* Fill using start[e] as a cursor, then shift back: no extra array. */
    for (int i = 0; i < n_tok * k; i++) {
        int32_t slot = g->start[experts[i]]++;
        g->token[slot] = i / k;
        g->weight[slot] = weights[i];
    }
    for (int e = n_experts; e > 0; e--) g->start[e] = g->start[e - 1];
    g->start[0] = 0;
}
