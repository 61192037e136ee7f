/*
 * layout.c — which tensors a model file holds, in which order, with which
 * element type: shared by moe-convert (which fills them from a checkpoint)
 * and moe-bench's synthetic models (which fill them with random numbers), so
 * both write the same layout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

const moe_recipe moe_recipe_default = {{[MOE_TC_EXPERTS] = MOE_Q4, [MOE_TC_SHARED] = MOE_Q8, [MOE_TC_ATTN] = MOE_Q8,
                                        [MOE_TC_EMBED] = MOE_Q8, [MOE_TC_OUTPUT] = MOE_Q8}};

static const char *const class_keys[MOE_TC_COUNT] = {"experts", "shared", "attn", "embed", "output"};

const char *moe_tensor_class_key(moe_tensor_class c) { return c < MOE_TC_COUNT ? class_keys[c] : "f32"; }

void moe_recipe_describe(const moe_recipe *r, char *buf, size_t n) {
    size_t k = 0;
    for (int c = 0; c < MOE_TC_COUNT && k < n; c++)
        k += (size_t)snprintf(buf + k, n - k, "%s=%s ", class_keys[c], moe_dtype_name(r->type[c]));
    if (k < n) snprintf(buf + k, n - k, "norms=f32 router=f32");
}

static moe_tensor_class layer_class(moe_layer_tensor t) {
    if (moe_tensor_is_vector(t) || t == LT_ROUTER || t == LT_SHARED_ROUTER) return MOE_TC_F32;
    switch (t) {
    case LT_DENSE_GATE: case LT_DENSE_UP: case LT_DENSE_DOWN:
    case LT_SHARED_GATE: case LT_SHARED_UP: case LT_SHARED_DOWN: return MOE_TC_SHARED;
    default: return MOE_TC_ATTN;
    }
}

int moe_tensor_specs(const moe_hparams *hp, moe_tensor_spec **out) {
    size_t cap = 3 + (size_t)hp->n_layers * (LT_COUNT + (size_t)hp->n_experts * ET_COUNT);
    moe_tensor_spec *v = calloc(cap, sizeof *v);
    if (!v) return -1;
    int n = 0;
    v[n++] = (moe_tensor_spec){MOE_NAME_TOKEN_EMBD, MOE_SPEC_EMBED, -1, -1, 0, hp->n_vocab, hp->n_embd, 0,
                               MOE_TC_EMBED, MOEF_TENSOR_ALIGN};
    for (int l = 0; l < hp->n_layers; l++) {
        for (int t = 0; t < LT_COUNT; t++) {
            if (!moe_layer_tensor_present(hp, l, t)) continue;
            moe_tensor_spec *s = &v[n++];
            *s = (moe_tensor_spec){.kind = MOE_SPEC_LAYER, .layer = l, .expert = -1, .id = t,
                                   .vector = moe_tensor_is_vector(t), .cls = layer_class(t), .align = MOEF_TENSOR_ALIGN};
            moe_layer_tensor_shape(hp, t, &s->rows, &s->cols);
            moe_layer_tensor_name(s->name, sizeof s->name, l, t);
        }
        for (int e = 0; hp->layer_is_moe[l] && e < hp->n_experts; e++)
            for (int t = 0; t < ET_COUNT; t++) {
                moe_tensor_spec *s = &v[n++];
                *s = (moe_tensor_spec){.kind = MOE_SPEC_EXPERT, .layer = l, .expert = e, .id = t,
                                       .cls = MOE_TC_EXPERTS, .align = t == 0 ? MOEF_EXPERT_ALIGN : MOEF_TENSOR_ALIGN};
                moe_expert_tensor_shape(hp, t, &s->rows, &s->cols);
                moe_expert_tensor_name(s->name, sizeof s->name, l, e, t);
            }
    }
    v[n++] = (moe_tensor_spec){MOE_NAME_OUTPUT_NORM, MOE_SPEC_OUTPUT_NORM, -1, -1, 0, 1, hp->n_embd, 1, MOE_TC_F32,
                               MOEF_TENSOR_ALIGN};
    if (!hp->tie_embeddings)
        v[n++] = (moe_tensor_spec){MOE_NAME_OUTPUT, MOE_SPEC_OUTPUT, -1, -1, 0, hp->n_vocab, hp->n_embd, 0,
                                   MOE_TC_OUTPUT, MOEF_TENSOR_ALIGN};
    *out = v;
    return n;
}
