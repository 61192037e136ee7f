/*
 * moe.h (internal) — the mixture-of-experts part of a layer: routing, the
 * grouping of a batch's tokens by expert, and the one narrow interface through
 * which expert weights are reached.
 */
#ifndef MOE_MOE_H
#define MOE_MOE_H

#include "model/model.h"

/* Where an expert's weights live. The forward pass asks for "expert e of layer
 * l, ready to compute" and says when it is done with it; the plain mmap, a
 * cache tier or a GPU copy can stand behind this. */
typedef struct moe_expert_source {
    void *self;
    /* Returns the expert's ET_COUNT weights, valid until release. */
    const moe_weight *(*acquire)(void *self, int layer, int expert);
    void (*release)(void *self, int layer, int expert);
} moe_expert_source;

/* Experts served straight from the model's mapping. */
moe_expert_source moe_expert_source_mmap(const moe_model *m);

/* Softmax over all n_experts router logits, then the top k; with norm_topk the
 * k weights are rescaled to sum to one. Ties go to the lower expert index. */
void moe_route_softmax_topk(const float *logits, int n_experts, int k, int norm_topk,
                            int32_t *experts, float *weights);

/* A batch's (token, expert) pairs grouped by expert with a counting sort:
 * the pairs of expert e are slots [start[e], start[e+1]). */
typedef struct moe_groups {
    int32_t *start;   /* n_experts + 1 */
    int32_t *token;   /* n_tok * k: token index of each slot */
    float *weight;    /* n_tok * k: routing weight of each slot */
} moe_groups;

void moe_group_by_expert(moe_groups *g, const int32_t *experts, const float *weights,
                         int n_tok, int k, int n_experts);

#endif
