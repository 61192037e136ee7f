/*
 * router.c — choosing experts. Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE all
 * take a softmax over every expert's logit first and the top k second; they
 * differ only in whether the k weights are renormalized (Mixtral always,
 * the others per norm_topk_prob).
 */
#include <math.h>

#include "moe.h"

void moe_route_softmax_topk(const float *logits, int n_experts, int k, int norm_topk,
                            int32_t *experts, float *weights) {
    float max = logits[0];
    for (int e = 1; e < n_experts; e++) max = logits[e] > max ? logits[e] : max;
    double sum = 0;
    for (int e = 0; e < n_experts; e++) sum += exp((double)logits[e] - max);
    /* Selection sort of k: k is small (<= 16) next to the experts. */
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int e = 0; e < n_experts; e++) {
            int taken = 0;
            for (int j = 0; j < i; j++) taken |= experts[j] == e;
            if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        experts[i] = best;
        weights[i] = (float)(exp((double)logits[best] - max) / sum);
    }
    if (norm_topk) {
        double s = 0;
        for (int i = 0; i < k; i++) s += weights[i];
        for (int i = 0; i < k; i++) weights[i] = (float)(weights[i] / s);
    }
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
