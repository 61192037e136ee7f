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

typedef struct job {
    char name[96];         /* canonical */
    const st_tensor *src;
    moe_dtype dtype;
    int n_dims;
    int64_t dims[2];       /* cols, rows */
    uint64_t align;
} job;

typedef struct plan {
    job *jobs;
    int n, cap;
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

static int add_job(plan *p, const st_checkpoint *ck, const char *dir, const char *hf_name, const char *canon,
                   int vector, int64_t rows, int64_t cols, moe_dtype dtype, uint64_t align, moe_error *err) {
    const st_tensor *t = st_find(ck, hf_name);
    if (!t) return moe_fail(err, "%s: tensor %s is missing from the checkpoint", dir, hf_name);
    if (t->dtype == ST_OTHER)
        return moe_fail(err, "%s: tensor %s has dtype %s, which is not supported (F32, F16, BF16)", st_path(ck, t),
                        hf_name, t->dtype_name);
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
    *j = (job){.src = t, .dtype = dtype, .n_dims = vector ? 1 : 2, .dims = {cols, rows}, .align = align};
    snprintf(j->name, sizeof j->name, "%s", canon);
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
        rc = add_job(p, ck, dir, hf, s->name, s->vector, s->rows, s->cols, moe_spec_dtype(s, rec), s->align, err);
    }
    free(specs);
    return rc;
}

static float src_elem(const st_tensor *t, uint64_t i) {
    const uint8_t *p = t->data;
    uint16_t h;
    switch (t->dtype) {
    case ST_F32: { float f; memcpy(&f, p + 4 * i, 4); return f; }
    case ST_F16: memcpy(&h, p + 2 * i, 2); return moe_f16_to_f32(h);
    default: memcpy(&h, p + 2 * i, 2); return moe_bf16_to_f32(h);
    }
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
            for (int64_t i = 0; i < n * cols; i++) buf[i] = src_elem(j->src, (uint64_t)(r0 * cols + i));
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
    const moe_family *fam = config ? moe_family_from_config(config_path, config, &hp, &err) : NULL;
    free(config);
    st_checkpoint ck = {0};
    plan p = {0};
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
