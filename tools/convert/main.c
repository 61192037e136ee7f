/*
 * moe-convert — turns a Hugging Face checkpoint directory into one .moe file.
 *
 *   moe-convert HF_DIR -o OUT.moe [--quant f32|f16|bf16]
 *
 * Plans every tensor first (name map, shape check against config.json), so a
 * bad checkpoint fails before anything is written; then streams one tensor at
 * a time from the mapped safetensors into the writer, which only renames the
 * finished file into place. Ctrl-C or a kill removes the temporary file.
 */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "families.h"
#include "format/format.h"
#include "model/model.h"
#include "quant/quant.h"
#include "safetensors.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/half.h"

#define CONVERTER_VERSION "moe-convert 0.1.0"

/* Which part of its source a tensor is. MLA's kv_b_proj holds, per head,
 * nope key rows then v value rows (all kv_lora_rank wide); the runtime wants
 * each head's key block transposed (LT_K_B) and its value block (LT_V_B). */
typedef enum slice_kind { SLICE_ALL, SLICE_KV_B_KEYS_T, SLICE_KV_B_VALUES } slice_kind;

typedef struct job {
    char name[96];         /* canonical */
    const st_tensor *src;
    const st_tensor *scale; /* FP8 sources: float block scales (weight_scale_inv) */
    int block;             /* FP8 scale block edge */
    moe_dtype dtype;
    int n_dims;
    int64_t dims[2];       /* cols, rows */
    uint64_t align;
    slice_kind slice;
    int64_t nope, vdim;    /* kv_b slices: rows per head of keys and of values */
} job;

typedef struct plan {
    job *jobs;
    int n, cap;
    int fp8_block;         /* quantization_config.weight_block_size */
    int n_mtp_layers;      /* num_nextn_predict_layers */
} plan;

/* The temporary output, removed by the signal handler. A program-level
 * global because a signal handler can reach nothing else. */
static char temp_path[4096];

static void on_signal(int sig) {
    if (temp_path[0]) unlink(temp_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: moe-convert HF_DIR -o OUT.moe [--quant T] [--experts T] [--shared-experts T] [--attn T]\n"
            "                   [--embed T] [--output T]\n"
            "  Converts a Hugging Face checkpoint (config.json + safetensors) to a .moe file.\n"
            "  T is one of f32, f16, bf16, q8, q4. --quant sets every class; the others set one class:\n"
            "  routed experts, shared experts (and dense FFN layers), attention, embedding, output head.\n"
            "  Default recipe: experts q4, everything else q8; norms and routers are always f32.\n"
            "  supported model_type: %s\n",
            moe_family_list());
}

static int st_shape_matches(const st_tensor *t, int vector, int64_t rows, int64_t cols) {
    if (vector) return t->n_dims == 1 && t->shape[0] == cols;
    return t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols;
}

/* The FP8 block scales of an F8_E4M3 tensor: NAME_scale_inv, float, one per
 * block x block tile (the last row and column of tiles may be partial). */
static int find_scale(const st_checkpoint *ck, const st_tensor *t, int block, const st_tensor **out, moe_error *err) {
    char name[512];
    snprintf(name, sizeof name, "%s_scale_inv", t->name);
    const st_tensor *s = st_find(ck, name);
    if (!s) return moe_fail(err, "%s: tensor %s is FP8 but %s is missing", st_path(ck, t), t->name, name);
    const int64_t rows = t->n_dims == 2 ? t->shape[0] : 1, cols = t->shape[t->n_dims - 1];
    const int64_t want_r = (rows + block - 1) / block, want_c = (cols + block - 1) / block;
    const int64_t got_r = s->n_dims == 2 ? s->shape[0] : -1, got_c = s->n_dims == 2 ? s->shape[1] : -1;
    if (s->dtype == ST_OTHER || s->dtype == ST_F8_E4M3 || got_r != want_r || got_c != want_c)
        return moe_fail(err, "%s: %s must be a float [%lld, %lld] for %lld x %lld blocks", st_path(ck, s), name,
                        (long long)want_r, (long long)want_c, (long long)block, (long long)block);
    *out = s;
    return 0;
}

static int add_job(plan *p, const st_checkpoint *ck, const char *dir, const char *hf_name, const char *canon,
                   int vector, int64_t rows, int64_t cols, moe_dtype dtype, uint64_t align, moe_error *err) {
    const st_tensor *t = st_find(ck, hf_name);
    if (!t) return moe_fail(err, "%s: tensor %s is missing from the checkpoint", dir, hf_name);
    if (t->dtype == ST_OTHER)
        return moe_fail(err, "%s: tensor %s has dtype %s, which is not supported (F32, F16, BF16, F8_E4M3)",
                        st_path(ck, t), hf_name, t->dtype_name);
    if (!st_shape_matches(t, vector, rows, cols)) {
        char got[128] = "";
        for (int d = 0; d < t->n_dims; d++) {
            size_t k = strlen(got);
            snprintf(got + k, sizeof got - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        }
        if (vector) return moe_fail(err, "%s: tensor %s has shape [%s], config.json implies [%lld]",
                                    st_path(ck, t), hf_name, got, (long long)cols);
        return moe_fail(err, "%s: tensor %s has shape [%s], config.json implies [%lld, %lld]", st_path(ck, t),
                        hf_name, got, (long long)rows, (long long)cols);
    }
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        job *j = realloc(p->jobs, (size_t)cap * sizeof *j);
        if (!j) return moe_fail(err, "out of memory");
        p->jobs = j;
        p->cap = cap;
    }
    job *j = &p->jobs[p->n++];
    *j = (job){.src = t, .dtype = dtype, .n_dims = vector ? 1 : 2, .dims = {cols, rows}, .align = align,
               .block = p->fp8_block};
    snprintf(j->name, sizeof j->name, "%s", canon);
    if (t->dtype == ST_F8_E4M3 && find_scale(ck, t, p->fp8_block, &j->scale, err)) {
        p->n--;
        return -1;
    }
    return 0;
}

/* kv_b_proj as the runtime's per-head key (transposed) or value blocks. */
static int add_kv_b_job(plan *p, const st_checkpoint *ck, const char *dir, const char *hf_name,
                        const moe_tensor_spec *s, const moe_hparams *hp, moe_dtype dtype, moe_error *err) {
    const int64_t H = hp->n_heads, nope = hp->qk_nope_dim, v = hp->v_head_dim, R = hp->kv_lora_rank;
    if (add_job(p, ck, dir, hf_name, s->name, 0, H * (nope + v), R, dtype, s->align, err)) return -1;
    job *j = &p->jobs[p->n - 1];
    j->slice = s->id == LT_K_B ? SLICE_KV_B_KEYS_T : SLICE_KV_B_VALUES;
    j->dims[0] = s->cols;
    j->dims[1] = s->rows;
    j->nope = nope;
    j->vdim = v;
    return 0;
}

/* DeepSeek's multi-token-prediction layers (model.layers.N and on, past the
 * decoder): kept in the file as mtp.K.<rest> for later use, never run. */
static int add_mtp_jobs(plan *p, const st_checkpoint *ck, const char *dir, const moe_hparams *hp,
                        const moe_recipe *rec, moe_error *err) {
    for (int i = 0; i < ck->n_tensors; i++) {
        const st_tensor *t = &ck->tensors[i];
        int layer, at = 0;
        if (sscanf(t->name, "model.layers.%d.%n", &layer, &at) != 1 || !at || layer < hp->n_layers) continue;
        const char *rest = t->name + at;
        const size_t n = strlen(rest);
        if (n > 10 && !strcmp(rest + n - 10, "_scale_inv")) continue; /* consumed with its tensor */
        if (layer >= hp->n_layers + p->n_mtp_layers)
            return moe_fail(err, "%s: tensor %s is past the %d decoder layers and the %d prediction layers", dir,
                            t->name, hp->n_layers, p->n_mtp_layers);
        char canon[96];
        if (snprintf(canon, sizeof canon, "mtp.%d.%s", layer - hp->n_layers, rest) >= (int)sizeof canon)
            return moe_fail(err, "%s: tensor name %s is too long", dir, t->name);
        const int vector = t->n_dims == 1;
        if (t->n_dims < 1 || t->n_dims > 2) return moe_fail(err, "%s: tensor %s is not 1- or 2-dimensional", dir, t->name);
        const moe_dtype dt = vector || strstr(rest, ".gate.") ? MOE_F32
                             : strstr(rest, ".experts.")    ? rec->type[MOE_TC_EXPERTS]
                                                            : rec->type[MOE_TC_ATTN];
        if (add_job(p, ck, dir, t->name, canon, vector, vector ? 1 : t->shape[0], t->shape[t->n_dims - 1], dt,
                    MOEF_TENSOR_ALIGN, err))
            return -1;
    }
    return 0;
}

/* Every tensor of the model, in file order: embedding, then per layer its own
 * tensors followed by its experts (each expert one page-aligned range), then
 * the final norm and the output head. */
/* Every tensor of the model, in file order, found in the checkpoint and checked. */
static int make_plan(plan *p, const moe_family *fam, const moe_hparams *hp, const st_checkpoint *ck,
                     const char *dir, const moe_recipe *rec, moe_error *err) {
    moe_tensor_spec *specs;
    int n = moe_tensor_specs(hp, &specs);
    if (n < 0) return moe_fail(err, "out of memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const moe_tensor_spec *s = &specs[i];
        char hf[160];
        switch (s->kind) {
        case MOE_SPEC_EMBED: snprintf(hf, sizeof hf, "model.embed_tokens.weight"); break;
        case MOE_SPEC_OUTPUT_NORM: snprintf(hf, sizeof hf, "model.norm.weight"); break;
        case MOE_SPEC_OUTPUT: snprintf(hf, sizeof hf, "lm_head.weight"); break;
        case MOE_SPEC_LAYER: moe_family_layer_name(fam, hf, sizeof hf, s->layer, s->id); break;
        case MOE_SPEC_EXPERT: moe_family_expert_name(fam, hf, sizeof hf, s->layer, s->expert, s->id); break;
        }
        if (s->kind == MOE_SPEC_LAYER && (s->id == LT_K_B || s->id == LT_V_B))
            rc = add_kv_b_job(p, ck, dir, hf, s, hp, moe_spec_dtype(s, rec), err);
        else
            rc = add_job(p, ck, dir, hf, s->name, s->vector, s->rows, s->cols, moe_spec_dtype(s, rec), s->align, err);
    }
    free(specs);
    if (!rc && p->n_mtp_layers) rc = add_mtp_jobs(p, ck, dir, hp, rec, err);
    return rc;
}

static float src_elem(const st_tensor *t, uint64_t i) {
    const uint8_t *p = t->data;
    uint16_t h;
    switch (t->dtype) {
    case ST_F32: { float f; memcpy(&f, p + 4 * i, 4); return f; }
    case ST_F16: memcpy(&h, p + 2 * i, 2); return moe_f16_to_f32(h);
    case ST_F8_E4M3: return moe_fp8_e4m3_to_f32(p[i]);
    default: memcpy(&h, p + 2 * i, 2); return moe_bf16_to_f32(h);
    }
}

/* Element (row, col) of the job's tensor, from wherever it sits in the
 * source, dequantized from FP8 with its block's scale. */
static float job_elem(const job *j, int64_t row, int64_t col) {
    const int64_t src_cols = j->src->shape[j->src->n_dims - 1], per_head = j->nope + j->vdim;
    int64_t r = row, c = col;
    if (j->slice == SLICE_KV_B_KEYS_T) { /* row: head h's latent index i (src_cols per head); col: key dim */
        r = row / src_cols * per_head + col;
        c = row % src_cols;
    } else if (j->slice == SLICE_KV_B_VALUES) { /* row: head h's value dim */
        r = row / j->vdim * per_head + j->nope + row % j->vdim;
    }
    float x = src_elem(j->src, (uint64_t)(r * src_cols + c));
    if (j->scale) {
        const int64_t tiles = (src_cols + j->block - 1) / j->block;
        x *= src_elem(j->scale, (uint64_t)(r / j->block * tiles + c / j->block));
    }
    return x;
}

/* Converts the whole tensor into out, on all cores: chunks of rows are
 * widened to f32 and quantized independently (a chunk is a whole number of
 * row groups, so chunks land at exact byte offsets). */
#define ROWS_PER_CHUNK 64
static int convert_data(void *out, const job *j) {
    const int64_t cols = j->dims[0], rows = j->n_dims > 1 ? j->dims[1] : 1;
    int failed = 0;
    #pragma omp parallel
    {
        float *buf = malloc((size_t)ROWS_PER_CHUNK * (size_t)cols * sizeof(float));
        if (!buf) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 1)
        for (int64_t r0 = 0; r0 < rows; r0 += ROWS_PER_CHUNK) {
            if (!buf) continue;
            const int64_t n = rows - r0 < ROWS_PER_CHUNK ? rows - r0 : ROWS_PER_CHUNK;
            for (int64_t i = 0; i < n * cols; i++) buf[i] = job_elem(j, r0 + i / cols, i % cols);
            moe_quantize(j->dtype, buf, n, cols, (uint8_t *)out + moe_tensor_bytes(j->dtype, (uint64_t)r0, (uint64_t)cols));
        }
        free(buf);
    }
    return failed ? -1 : 0;
}

static void progress(int done, int total, const char *name) {
    const int width = 30;
    int filled = total ? done * width / total : width;
    fprintf(stderr, "\r[%.*s%*s] %3d%% %d/%d %-28.28s", filled, "##############################", width - filled, "",
            total ? done * 100 / total : 100, done, total, name);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* The checkpoint's text side: tokenizer.json, tokenizer_config.json and the
 * chat template (chat_template.jinja, or "chat_template" in the config:
 * a string, or a list of {name, template} of which "default" is taken).
 * They are stored verbatim in the .moe file; the runtime builds its
 * tokenizer from them. */
typedef struct text_files {
    char *tokenizer, *config, *chat_template;
    size_t tokenizer_len, config_len;
} text_files;

static char *read_optional(const char *dir, const char *name, size_t *len, int *failed, moe_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK)) return NULL;
    char *text = moe_read_file(path, len, err);
    if (!text) *failed = 1;
    return text;
}

static int read_text_files(text_files *t, const char *dir, moe_error *err) {
    int failed = 0;
    *t = (text_files){0};
    t->tokenizer = read_optional(dir, "tokenizer.json", &t->tokenizer_len, &failed, err);
    if (!failed) t->config = read_optional(dir, "tokenizer_config.json", &t->config_len, &failed, err);
    size_t len;
    if (!failed) t->chat_template = read_optional(dir, "chat_template.jinja", &len, &failed, err);
    if (failed) return -1;
    if (!t->chat_template && t->config) {
        cJSON *cfg = cJSON_ParseWithLength(t->config, t->config_len);
        if (!cfg) return moe_fail(err, "%s/tokenizer_config.json: not valid JSON", dir);
        cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsArray(ct))
            for (cJSON *e = ct->child; e; e = e->next) {
                cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
                if (cJSON_IsString(name) && !strcmp(name->valuestring, "default"))
                    ct = cJSON_GetObjectItemCaseSensitive(e, "template");
            }
        if (cJSON_IsString(ct)) t->chat_template = strdup(ct->valuestring);
        cJSON_Delete(cfg);
    }
    if (!t->tokenizer)
        fprintf(stderr, "moe-convert: warning: %s has no tokenizer.json; the model will run on token ids only\n", dir);
    return 0;
}

/* Builds the tokenizer once, so that one we cannot run fails now, naming the
 * file, rather than when the model is used. */
static int check_tokenizer(const text_files *t, const moe_hparams *hp, const char *dir, moe_error *err) {
    moe_tokenizer *tok = moe_tokenizer_from_hf(t->tokenizer, t->tokenizer_len, t->config, t->config_len, err);
    if (!tok) return moe_fail_prefix(err, "%s/tokenizer.json: ", dir);
    const int n = moe_tokenizer_n_vocab(tok);
    moe_tokenizer_free(tok);
    if (n > hp->n_vocab)
        return moe_fail(err, "%s/tokenizer.json: %d tokens, more than the model's vocab_size %d", dir, n, hp->n_vocab);
    return 0;
}

static void free_text_files(text_files *t) {
    free(t->tokenizer);
    free(t->config);
    free(t->chat_template);
}

static void write_meta(moef_writer *w, const moe_hparams *hp, const char *dir, const moe_recipe *rec,
                       const text_files *text) {
    moe_hparams_write(hp, w);
    if (text->tokenizer) moef_meta_put_bytes(w, "tokenizer.hf_json", text->tokenizer, text->tokenizer_len);
    if (text->config) moef_meta_put_bytes(w, "tokenizer.hf_config", text->config, text->config_len);
    if (text->chat_template) moef_meta_put_str(w, "tokenizer.chat_template", text->chat_template);
    const char *base = strrchr(dir, '/');
    base = base && base[1] ? base + 1 : dir;
    moef_meta_put_str(w, "general.source", base);
    moef_meta_put_str(w, "general.converter", CONVERTER_VERSION);
    char recipe[160];
    moe_recipe_describe(rec, recipe, sizeof recipe);
    moef_meta_put_str(w, "general.recipe", recipe);
}

static int write_model(const plan *p, const st_checkpoint *ck, const moe_hparams *hp, const char *dir,
                       const char *out, const moe_recipe *rec, const text_files *text, moe_error *err) {
    /* No signal may land between creating the temporary file and recording
     * its name for the handler. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    moef_writer *w = moef_writer_new(out, err);
    if (w) snprintf(temp_path, sizeof temp_path, "%s", moef_writer_temp_path(w));
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (!w) return -1;
    write_meta(w, hp, dir, rec, text);
    int rc = 0;
    for (int i = 0; i < p->n && !rc; i++)
        if (moef_writer_add(w, p->jobs[i].name, p->jobs[i].dtype, p->jobs[i].n_dims, p->jobs[i].dims,
                            p->jobs[i].align) < 0)
            rc = moe_fail(err, "out of memory");
    if (!rc) rc = moef_writer_layout(w, err);
    const int tty = isatty(2);
    void *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < p->n && !rc; i++) {
        const job *j = &p->jobs[i];
        size_t need = (size_t)moe_tensor_bytes(j->dtype, (uint64_t)(j->n_dims > 1 ? j->dims[1] : 1), (uint64_t)j->dims[0]);
        if (need > cap) {
            free(buf);
            cap = need;
            if (!(buf = malloc(cap))) {
                rc = moe_fail(err, "out of memory converting %s (%zu bytes)", j->src->name, need);
                break;
            }
        }
        if (convert_data(buf, j)) {
            rc = moe_fail(err, "out of memory converting %s", j->src->name);
            break;
        }
        st_release(ck, j->src);
        if (j->scale) st_release(ck, j->scale);
        rc = moef_writer_data(w, i, buf, err);
        if (tty) progress(i + 1, p->n, j->name);
    }
    free(buf);
    if (!rc) rc = moef_writer_commit(w, err);
    moef_writer_free(w);
    temp_path[0] = 0;
    return rc;
}

static int parse_type(const char *flag, const char *v, moe_dtype *out) {
    int t = moe_dtype_from_name(v);
    if (t < 0) {
        fprintf(stderr, "moe-convert: %s %s is not one of f32, f16, bf16, q8, q4\n", flag, v);
        return -1;
    }
    *out = (moe_dtype)t;
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    moe_recipe rec = moe_recipe_default;
    static const char *const class_flags[MOE_TC_COUNT] = {"--experts", "--shared-experts", "--attn", "--embed", "--output"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int cls = -1;
        for (int c = 0; c < MOE_TC_COUNT; c++)
            if (!strcmp(a, class_flags[c])) cls = c;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--quant") || cls >= 0) && !v) {
            fprintf(stderr, "moe-convert: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "-o")) {
            out = argv[++i];
        } else if (!strcmp(a, "--quant")) {
            moe_dtype t;
            if (parse_type(a, argv[++i], &t)) return 2;
            for (int c = 0; c < MOE_TC_COUNT; c++) rec.type[c] = t;
        } else if (cls >= 0) {
            if (parse_type(a, argv[++i], &rec.type[cls])) return 2;
        } else if (a[0] == '-') {
            fprintf(stderr, "moe-convert: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!dir) {
            dir = a;
        } else {
            fprintf(stderr, "moe-convert: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!dir || !out) {
        usage(stderr);
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit then fails the write with a message */

    moe_error err = {{0}};
    char config_path[4096];
    snprintf(config_path, sizeof config_path, "%s/config.json", dir);
    char *config = moe_read_file(config_path, NULL, &err);
    moe_hparams hp;
    plan p = {0};
    const moe_family *fam =
        config ? moe_family_from_config(config_path, config, &hp, &p.fp8_block, &p.n_mtp_layers, &err) : NULL;
    free(config);
    st_checkpoint ck = {0};
    int rc = !fam || st_open(&ck, dir, &err) || make_plan(&p, fam, &hp, &ck, dir, &rec, &err);
    text_files text = {0};
    if (!rc) rc = read_text_files(&text, dir, &err);
    if (!rc && text.tokenizer) rc = check_tokenizer(&text, &hp, dir, &err);
    if (!rc) rc = write_model(&p, &ck, &hp, dir, out, &rec, &text, &err);
    free_text_files(&text);
    if (rc) fprintf(stderr, "moe-convert: %s\n", err.msg);
    else fprintf(stderr, "moe-convert: wrote %s (%s, %d tensors)\n", out, hp.architecture, p.n);
    free(p.jobs);
    st_close(&ck);
    return rc ? 1 : 0;
}
