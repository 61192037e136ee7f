/*
 * model.c — opens a .moe file as a model: validated mapping (format/), the
 * hyperparameters from its metadata, and every weight bound in place, each
 * checked against the shape the hyperparameters demand. Also the model-level
 * facts the tools report (tensors, parameter counts, checksums).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "quant/quant.h"
#include "util/error.h"

static int bind(moe_model *m, const char *name, int64_t rows, int64_t cols, int vector,
                moe_weight *out, moe_error *err) {
    const moef_tensor *t = moef_find(&m->file, name);
    if (!t) return moe_fail(err, "%s: tensor %s is missing", m->file.path, name);
    int ok = vector ? t->n_dims == 1 && t->dims[0] == cols
                    : t->n_dims == 2 && t->dims[0] == cols && t->dims[1] == rows;
    if (!ok)
        return moe_fail(err, "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld]", m->file.path,
                        name, (long long)t->dims[1], (long long)t->dims[0], (long long)rows, (long long)cols);
    if (vector && t->dtype != MOE_F32)
        return moe_fail(err, "%s: tensor %s is %s; norms and biases must be f32", m->file.path, name,
                        moe_dtype_name(t->dtype));
    *out = (moe_weight){moef_data(&m->file, t), t->dtype, rows, cols};
    return 0;
}

/* An expert must be one byte range starting on a page: the unit that caching,
 * prefetch and offload move around. */
static int check_expert_range(const moe_model *m, int layer, int e, moe_error *err) {
    const moe_weight *w = moe_model_expert(m, layer, e);
    uint64_t end = 0;
    for (int t = 0; t < ET_COUNT; t++) {
        uint64_t off = (uint64_t)((const uint8_t *)w[t].data - m->file.map);
        uint64_t want = t == 0 ? (off + MOEF_EXPERT_ALIGN - 1) / MOEF_EXPERT_ALIGN * MOEF_EXPERT_ALIGN
                               : (end + MOEF_TENSOR_ALIGN - 1) / MOEF_TENSOR_ALIGN * MOEF_TENSOR_ALIGN;
        if (off != want)
            return moe_fail(err, "%s: the tensors of expert %d of layer %d are not one page-aligned byte range",
                            m->file.path, e, layer);
        end = off + moe_tensor_bytes(w[t].dtype, (uint64_t)w[t].rows, (uint64_t)w[t].cols);
    }
    return 0;
}

static int bind_all(moe_model *m, moe_error *err) {
    const moe_hparams *hp = &m->hp;
    if (bind(m, MOE_NAME_TOKEN_EMBD, hp->n_vocab, hp->n_embd, 0, &m->token_embd, err) ||
        bind(m, MOE_NAME_OUTPUT_NORM, 1, hp->n_embd, 1, &m->output_norm, err))
        return -1;
    if (hp->tie_embeddings) m->output = m->token_embd;
    else if (bind(m, MOE_NAME_OUTPUT, hp->n_vocab, hp->n_embd, 0, &m->output, err)) return -1;

    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    m->experts = calloc((size_t)hp->n_layers * (size_t)(hp->n_experts ? hp->n_experts : 1) * ET_COUNT,
                        sizeof *m->experts);
    if (!m->layers || !m->experts) return moe_fail(err, "out of memory");
    char name[96];
    for (int l = 0; l < hp->n_layers; l++) {
        for (int t = 0; t < LT_COUNT; t++) {
            if (!moe_layer_tensor_present(hp, l, t)) continue;
            int64_t rows, cols;
            moe_layer_tensor_shape(hp, t, &rows, &cols);
            moe_layer_tensor_name(name, sizeof name, l, t);
            if (bind(m, name, rows, cols, moe_tensor_is_vector(t), &m->layers[l].w[t], err)) return -1;
        }
        for (int e = 0; hp->layer_is_moe[l] && e < hp->n_experts; e++) {
            moe_weight *w = (moe_weight *)moe_model_expert(m, l, e);
            for (int t = 0; t < ET_COUNT; t++) {
                int64_t rows, cols;
                moe_expert_tensor_shape(hp, t, &rows, &cols);
                moe_expert_tensor_name(name, sizeof name, l, e, t);
                if (bind(m, name, rows, cols, 0, &w[t], err)) return -1;
            }
            if (check_expert_range(m, l, e, err)) return -1;
        }
    }
    return 0;
}

moe_model *moe_model_open(const char *path, moe_error *err) {
    return moe_model_open_with(path, (moe_model_params){0}, err);
}

moe_model *moe_model_open_with(const char *path, moe_model_params p, moe_error *err) {
    moe_model *m = calloc(1, sizeof *m);
    if (!m) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    if (moef_open(&m->file, path, p.no_mmap, err)) {
        free(m);
        return NULL;
    }
    if (moe_hparams_read(&m->hp, &m->file, err)) {
        moe_model_close(m);
        return NULL;
    }
    if (bind_all(m, err)) {
        moe_model_close(m);
        return NULL;
    }
    return m;
}

void moe_model_close(moe_model *m) {
    if (!m) return;
    moef_close(&m->file);
    free(m->layers);
    free(m->experts);
    free(m);
}

const moe_hparams *moe_model_hparams(const moe_model *m) { return &m->hp; }

const char *moe_model_meta_str(const moe_model *m, const char *key) { return moef_meta_str(&m->file, key); }

int moe_model_n_tensors(const moe_model *m) { return m->file.n_tensors; }

uint64_t moe_model_file_size(const moe_model *m) { return m->file.size; }

void moe_model_tensor(const moe_model *m, int i, moe_tensor_info *out) {
    const moef_tensor *t = &m->file.tensors[i];
    *out = (moe_tensor_info){t->name, t->dtype, t->n_dims, {0}, t->offset, t->size};
    memcpy(out->dims, t->dims, sizeof out->dims);
}

int moe_model_verify(const moe_model *m, void (*on_bad)(void *user, const char *tensor), void *user) {
    int bad = 0;
    for (int i = 0; i < m->file.n_tensors; i++) {
        const moef_tensor *t = &m->file.tensors[i];
        if (moef_tensor_hash(&m->file, t) != t->hash) {
            bad++;
            if (on_bad) on_bad(user, t->name);
        }
    }
    return bad;
}

static uint64_t bytes(const moe_weight *w) {
    return w->data ? moe_tensor_bytes(w->dtype, (uint64_t)w->rows, (uint64_t)w->cols) : 0;
}

uint64_t moe_model_bytes_per_token(const moe_model *m) {
    const moe_hparams *hp = &m->hp;
    uint64_t total = bytes(&m->token_embd) / (uint64_t)hp->n_vocab + bytes(&m->output_norm) + bytes(&m->output);
    for (int l = 0; l < hp->n_layers; l++) {
        for (int t = 0; t < LT_COUNT; t++) total += bytes(&m->layers[l].w[t]);
        if (!hp->layer_is_moe[l]) continue;
        for (int t = 0; t < ET_COUNT; t++) total += bytes(&moe_model_expert(m, l, 0)[t]) * (uint64_t)hp->n_experts_used;
    }
    return total;
}

uint64_t moe_model_kv_values_per_token(const moe_model *m) {
    const moe_hparams *hp = &m->hp;
    const uint64_t per_layer = hp->attn_kind == MOE_ATTN_MLA ? (uint64_t)hp->kv_lora_rank + (uint64_t)hp->qk_rope_dim
                                                             : 2 * (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim;
    return per_layer * (uint64_t)hp->n_layers;
}

uint64_t moe_model_routed_expert_bytes(const moe_model *m) {
    uint64_t total = 0;
    for (int l = 0; l < m->hp.n_layers; l++)
        for (int e = 0; m->hp.layer_is_moe[l] && e < m->hp.n_experts; e++)
            for (int t = 0; t < ET_COUNT; t++) total += bytes(&moe_model_expert(m, l, e)[t]);
    return total;
}

static uint64_t elems(const moe_weight *w) { return w->data ? (uint64_t)(w->rows * w->cols) : 0; }

void moe_model_param_counts(const moe_model *m, uint64_t *total, uint64_t *active) {
    const moe_hparams *hp = &m->hp;
    /* The embedding is a lookup: one row per token is read, but it counts as
     * parameters; the output head is a full matrix product. */
    uint64_t all = elems(&m->token_embd) + elems(&m->output_norm) + (hp->tie_embeddings ? 0 : elems(&m->output));
    uint64_t act = all;
    for (int l = 0; l < hp->n_layers; l++) {
        uint64_t layer = 0;
        for (int t = 0; t < LT_COUNT; t++) layer += elems(&m->layers[l].w[t]);
        all += layer;
        act += layer;
        if (!hp->layer_is_moe[l]) continue;
        uint64_t one = 0;
        for (int t = 0; t < ET_COUNT; t++) one += elems(&moe_model_expert(m, l, 0)[t]);
        all += one * (uint64_t)hp->n_experts;
        act += one * (uint64_t)hp->n_experts_used;
    }
    *total = all;
    *active = act;
}
