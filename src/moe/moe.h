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
    /* Optional (NULL: no prefetch, e.g. the mapping): a hint that layer will
     * soon acquire these n experts, most likely first. It returns at once;
     * the source may read them in the background or ignore the hint. */
    void (*prefetch)(void *self, int layer, int n, const int32_t *experts);
} moe_expert_source;

/* Experts served straight from the model's mapping. */
moe_expert_source moe_expert_source_mmap(const moe_model *m);

/* Chooses hp->n_experts_used experts from one token's router logits and
 * weighs them, as the family's reference does (see router.c). bias: the
 * per-expert correction bias, or NULL. scratch: moe_route_scratch(hp) floats. */
void moe_route(const moe_hparams *hp, const float *logits, const float *bias, float *scratch, int32_t *experts,
               float *weights);
static inline int moe_route_scratch(const moe_hparams *hp) { return 2 * hp->n_experts + 2 * hp->n_groups; }

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
