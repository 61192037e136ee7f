/*
 * moe-cli — the command-line face of the runtime.
 *
 *   moe-cli info -m FILE [--verify]        model card; --verify checks every checksum
 *   moe-cli tokenize -m FILE [--pieces] [--no-special] [--jsonl] [TEXT]
 *                                          ids of TEXT as a JSON array; --jsonl: one JSON string
 *                                          per stdin line, one array per output line
 *   moe-cli detokenize -m FILE --tokens 1,2,3 [--skip-special]
 *   moe-cli render -m FILE --messages CONV.json [--no-generation-prompt] [--thinking on|off] [--now UNIX]
 *                                          the exact prompt text the chat template makes
 *   moe-cli run  -m FILE --tokens 1,2,3 -n N [--logits-out PATH] [-t THREADS] [-c CTX]
 *                [--temp T --top-k K --top-p P --min-p P --repeat-penalty R --repeat-last-n N
 *                 --presence-penalty P --frequency-penalty F --seed S]
 *
 * `run` decodes greedily unless --temp is given (> 0): it is the scripted,
 * reproducible path; with --temp the other sampling flags apply, with
 * llama.cpp's defaults.
 *
 * `run` prints the generated token ids, comma-separated, as the last line of
 * stdout. --logits-out writes float32 little-endian logits, one row of n_vocab
 * per evaluated position: every prompt position, then one row per generated
 * token (each generated token is evaluated, so there are P + N rows). Tests
 * and outside checks rely on this interface: keep it stable.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "moe.h"
#include "text/tokenizer.h"
#include "util/size.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: moe-cli info -m FILE [--verify]\n"
            "       moe-cli tokenize -m FILE [--pieces] [--no-special] [--jsonl] [TEXT]\n"
            "       moe-cli detokenize -m FILE --tokens ID,ID,... [--skip-special]\n"
            "       moe-cli render -m FILE --messages CONV.json [--no-generation-prompt] [--thinking on|off] [--now UNIX]\n"
            "       moe-cli run -m FILE --tokens ID,ID,... [-n N] [--logits-out PATH] [-t THREADS] [-c CTX]\n"
            "                   [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
            "                   [--repeat-last-n N] [--presence-penalty P] [--frequency-penalty F] [--seed S]\n"
            "                   [--expert-cache SIZE]   routed experts from a cache of SIZE (6G, 512M, 25%%)\n"
            "  run is greedy unless --temp > 0 is given.\n");
}

/* ---- info ---- */

static const char *tensor_class(const char *name) {
    if (!strcmp(name, "token_embd")) return "embed";
    if (!strcmp(name, "output")) return "output";
    if (strstr(name, "_norm")) return "norms";
    if (strstr(name, ".exp.")) return "experts";
    if (strstr(name, ".shexp_router") || strstr(name, ".router")) return "router";
    if (strstr(name, ".shexp_")) return "shared experts";
    if (strstr(name, ".attn_")) return "attention";
    if (strstr(name, ".ffn_")) return "dense ffn";
    return "other";
}

static void print_dtypes(const moe_model *m) {
    static const char *const classes[] = {"embed", "attention", "router", "experts", "shared experts",
                                          "dense ffn", "norms", "output", "other"};
    for (size_t c = 0; c < sizeof classes / sizeof *classes; c++) {
        unsigned seen = 0;
        for (int i = 0; i < moe_model_n_tensors(m); i++) {
            moe_tensor_info t;
            moe_model_tensor(m, i, &t);
            if (!strcmp(tensor_class(t.name), classes[c])) seen |= 1u << t.dtype;
        }
        if (!seen) continue;
        printf("  %-15s", classes[c]);
        for (int d = 0; d < MOE_DTYPE_COUNT; d++)
            if (seen & (1u << d)) printf(" %s", moe_dtype_name((moe_dtype)d));
        printf("\n");
    }
}

static void on_bad_tensor(void *user, const char *name) {
    fprintf(stderr, "%s: checksum mismatch in tensor %s\n", (const char *)user, name);
}

static int cmd_info(const char *path, int verify) {
    moe_error err = {{0}};
    moe_model *m = moe_model_open(path, &err);
    if (!m) {
        fprintf(stderr, "moe-cli: %s\n", err.msg);
        return 1;
    }
    const moe_hparams *hp = moe_model_hparams(m);
    uint64_t total, active;
    moe_model_param_counts(m, &total, &active);
    int n_moe = 0;
    for (int l = 0; l < hp->n_layers; l++) n_moe += hp->layer_is_moe[l];
    const char *s;
    printf("file:            %s (%.2f MiB)\n", path, moe_model_file_size(m) / 1048576.0);
    printf("family:          %s\n", hp->architecture);
    if ((s = moe_model_meta_str(m, "general.source"))) printf("source:          %s\n", s);
    if ((s = moe_model_meta_str(m, "general.converter"))) printf("converter:       %s\n", s);
    if ((s = moe_model_meta_str(m, "general.recipe"))) printf("recipe:          %s\n", s);
    printf("layers:          %d (%d MoE, %d dense)\n", hp->n_layers, n_moe, hp->n_layers - n_moe);
    printf("hidden size:     %d\n", hp->n_embd);
    printf("attention:       %d heads, %d kv heads, head dim %d%s%s\n", hp->n_heads, hp->n_kv_heads, hp->head_dim,
           hp->qk_norm == MOE_QK_NORM_PER_HEAD ? ", q/k norm per head"
           : hp->qk_norm == MOE_QK_NORM_FULL   ? ", q/k norm over the projection" : "",
           hp->attn_bias ? ", qkv bias" : "");
    printf("vocabulary:      %d\n", hp->n_vocab);
    printf("context (train): %d, rope theta %g\n", hp->n_ctx_train, hp->rope_theta);
    printf("experts:         %d, %d per token, width %d%s\n", hp->n_experts, hp->n_experts_used, hp->expert_ffn,
           hp->norm_topk ? ", top-k renormalized" : "");
    if (hp->shared_ffn) printf("shared experts:  1, width %d%s\n", hp->shared_ffn, hp->shared_gate ? ", sigmoid-gated" : "");
    else printf("shared experts:  0\n");
    printf("parameters:      %.3f M total, %.3f M active per token\n", total / 1e6, active / 1e6);
    const char *tok = moe_model_meta_str(m, "tokenizer.hf_json"), *tmpl = moe_model_meta_str(m, "tokenizer.chat_template");
    printf("tokenizer:       %s\n", tok ? "from tokenizer.json" : "none (token ids only)");
    printf("chat template:   %s\n", tmpl ? "yes" : "none");
    printf("tensors:         %d\n", moe_model_n_tensors(m));
    printf("dtypes:\n");
    print_dtypes(m);
    int rc = 0;
    if (verify) {
        int bad = moe_model_verify(m, on_bad_tensor, (void *)path);
        if (bad) {
            fprintf(stderr, "moe-cli: %s: %d tensor%s failed verification\n", path, bad, bad == 1 ? "" : "s");
            rc = 1;
        } else {
            printf("verify:          all %d tensor checksums match\n", moe_model_n_tensors(m));
        }
    }
    moe_model_close(m);
    return rc;
}

/* ---- run ---- */

static int parse_tokens(const char *s, int32_t **out, int *n) {
    int cap = 16, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return -1;
    while (*s) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "moe-cli: --tokens: \"%s\" is not a comma-separated list of token ids\n", s);
            free(v);
            return -1;
        }
        if (k == cap) {
            int32_t *w = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!w) { free(v); return -1; }
            v = w;
        }
        v[k++] = (int32_t)x;
        s = *end ? end + 1 : end;
    }
    *out = v;
    *n = k;
    return 0;
}

typedef struct run_opts {
    const char *model, *tokens, *logits_out, *messages;
    int add_generation_prompt, thinking; /* render: thinking -1 unset */
    const char *text;                    /* tokenize: the positional TEXT */
    int pieces, no_special, jsonl, skip_special;
    long long now;                       /* render: the template's clock; -1: now */
    int n_predict, n_threads, n_ctx;
    const char *expert_cache; /* --expert-cache SIZE, or NULL */
    moe_sampler_params sampling;
} run_opts;

static int cmd_run(const run_opts *o) {
    if (!o->tokens) {
        fprintf(stderr, "moe-cli run: --tokens is required (text prompts arrive with the tokenizer)\n");
        return 2;
    }
    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (parse_tokens(o->tokens, &prompt, &n_prompt)) return 2;
    if (n_prompt == 0) {
        fprintf(stderr, "moe-cli run: --tokens is empty\n");
        free(prompt);
        return 2;
    }
    moe_error err = {{0}};
    moe_model *m = moe_model_open(o->model, &err);
    moe_ctx *c = NULL;
    moe_sampler *smp = NULL;
    float *logits = NULL;
    FILE *lf = NULL;
    char *tmp = NULL;
    int rc = 1;
    if (!m) goto fail;
    const int V = moe_model_hparams(m)->n_vocab;
    int n_ctx = o->n_ctx > 0 ? o->n_ctx : n_prompt + o->n_predict;
    uint64_t cache_bytes = 0;
    if (o->expert_cache && moe_parse_size(o->expert_cache, moe_model_routed_expert_bytes(m), &cache_bytes)) {
        snprintf(err.msg, sizeof err.msg, "--expert-cache %s: expected a size like 6G, 512M or 25%%", o->expert_cache);
        goto fail;
    }
    c = moe_ctx_new(m, (moe_ctx_params){.n_ctx = n_ctx, .n_threads = o->n_threads, .isa = getenv("MOE_ISA"),
                                         .expert_cache_bytes = cache_bytes}, &err);
    if (!c) goto fail;
    if (!(smp = moe_sampler_new(o->sampling, V, &err))) goto fail;
    for (int i = 0; i < n_prompt; i++) moe_sampler_accept(smp, prompt[i]);
    logits = malloc((size_t)n_prompt * (size_t)V * sizeof(float));
    if (!logits) {
        snprintf(err.msg, sizeof err.msg, "out of memory for %d rows of logits", n_prompt);
        goto fail;
    }
    if (o->logits_out) {
        size_t n = strlen(o->logits_out) + 8;
        tmp = malloc(n);
        if (tmp) snprintf(tmp, n, "%s.tmp", o->logits_out);
        if (!tmp || !(lf = fopen(tmp, "wb"))) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot create: %s", o->logits_out, strerror(errno));
            goto fail;
        }
    }
    if (moe_eval(c, prompt, n_prompt, lf ? logits : NULL, &err)) goto fail;
    if (lf && fwrite(logits, sizeof(float), (size_t)n_prompt * V, lf) != (size_t)n_prompt * V) goto write_fail;
    for (int i = 0; i < o->n_predict; i++) {
        int32_t tok = moe_sampler_sample(smp, moe_ctx_logits(c));
        moe_sampler_accept(smp, tok);
        if (moe_eval(c, &tok, 1, NULL, &err)) goto fail;
        printf("%s%d", i ? "," : "", tok);
        if (lf && fwrite(moe_ctx_logits(c), sizeof(float), (size_t)V, lf) != (size_t)V) goto write_fail;
    }
    printf("\n");
    moe_cache_stats cs;
    if (!moe_ctx_cache_stats(c, &cs))
        fprintf(stderr, "expert cache: %d slots of %.2f MiB, %llu hits, %llu misses (hit rate %.1f%%), %llu bypasses, %.1f MiB read\n",
                cs.slots, cs.slot_bytes / 1048576.0, (unsigned long long)cs.hits, (unsigned long long)cs.misses,
                cs.hits + cs.misses ? 100.0 * cs.hits / (double)(cs.hits + cs.misses) : 0.0,
                (unsigned long long)cs.bypasses, cs.bytes_read / 1048576.0);
    if (lf) {
        int bad = fclose(lf);
        lf = NULL;
        if (bad || rename(tmp, o->logits_out)) goto write_fail;
    }
    rc = 0;
    goto done;
write_fail:
    snprintf(err.msg, sizeof err.msg, "%s: write failed: %s", o->logits_out, strerror(errno));
fail:
    fprintf(stderr, "moe-cli: %s\n", err.msg);
done:
    if (lf) fclose(lf);
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(logits);
    free(prompt);
    moe_sampler_free(smp);
    moe_ctx_free(c);
    moe_model_close(m);
    return rc;
}

/* ---- tokenize / detokenize ---- */

static void print_ids(const moe_tokenizer *t, const int32_t *ids, int n, int pieces) {
    if (pieces) {
        for (int i = 0; i < n; i++) {
            size_t len = 0;
            const char *piece = moe_tokenizer_piece(t, ids[i], &len);
            cJSON *str = cJSON_CreateString(piece ? piece : "");
            char *json = cJSON_PrintUnformatted(str);
            printf("%d\t%s\n", ids[i], json ? json : "\"\"");
            free(json);
            cJSON_Delete(str);
        }
        return;
    }
    printf("[");
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("]\n");
}

static int encode_print(const moe_tokenizer *t, const char *text, size_t len, const run_opts *o, moe_error *err) {
    int32_t *ids = NULL;
    int n = 0;
    if (moe_tokenizer_encode(t, text, len, !o->no_special, &ids, &n, err)) return -1;
    print_ids(t, ids, n, o->pieces);
    free(ids);
    return 0;
}

static int cmd_tokenize(const run_opts *o) {
    moe_error err = {{0}};
    moe_model *m = moe_model_open(o->model, &err);
    moe_tokenizer *t = m ? moe_model_tokenizer_new(m, &err) : NULL;
    int rc = t ? 0 : 1;
    if (t && o->jsonl) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t k;
        for (int lineno = 1; !rc && (k = getline(&line, &cap, stdin)) > 0; lineno++) {
            cJSON *s = cJSON_ParseWithLength(line, (size_t)k);
            if (!cJSON_IsString(s)) {
                snprintf(err.msg, sizeof err.msg, "stdin line %d: not a JSON string", lineno);
                rc = 1;
            } else if (encode_print(t, s->valuestring, strlen(s->valuestring), o, &err)) {
                rc = 1;
            }
            cJSON_Delete(s);
        }
        free(line);
    } else if (t) {
        if (!o->text) {
            snprintf(err.msg, sizeof err.msg, "tokenize: give the TEXT, or --jsonl to read JSON strings from stdin");
            rc = 2;
        } else if (encode_print(t, o->text, strlen(o->text), o, &err)) {
            rc = 1;
        }
    }
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    moe_tokenizer_free(t);
    moe_model_close(m);
    return rc;
}

static int cmd_detokenize(const run_opts *o) {
    moe_error err = {{0}};
    int32_t *ids = NULL;
    int n = 0;
    if (!o->tokens || parse_tokens(o->tokens, &ids, &n)) {
        if (!o->tokens) fprintf(stderr, "moe-cli detokenize: --tokens is required\n");
        return 2;
    }
    moe_model *m = moe_model_open(o->model, &err);
    moe_tokenizer *t = m ? moe_model_tokenizer_new(m, &err) : NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = !t || moe_tokenizer_decode(t, ids, n, o->skip_special, &text, &len, &err) ? 1 : 0;
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    else fwrite(text, 1, len, stdout);
    free(text);
    free(ids);
    moe_tokenizer_free(t);
    moe_model_close(m);
    return rc;
}

/* ---- render ---- */

static int cmd_render(const run_opts *o) {
    if (!o->messages) {
        fprintf(stderr, "moe-cli render: --messages CONV.json is required\n");
        return 2;
    }
    moe_error err = {{0}};
    size_t len = 0, out_len = 0;
    char *json = NULL, *out = NULL;
    moe_model *m = NULL;
    int rc = 1;
    FILE *f = fopen(o->messages, "rb");
    if (!f) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot open: %s", o->messages, strerror(errno));
        goto done;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    json = size >= 0 ? malloc((size_t)size + 1) : NULL;
    len = json ? fread(json, 1, (size_t)size, f) : 0;
    fclose(f);
    if (!json || len != (size_t)size) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot read", o->messages);
        goto done;
    }
    if (!(m = moe_model_open(o->model, &err))) goto done;
    if (moe_chat_render(m, json, len, o->add_generation_prompt, o->thinking, o->now >= 0 ? o->now : (long long)time(NULL),
                        &out, &out_len, &err)) {
        goto done;
    }
    fwrite(out, 1, out_len, stdout);
    rc = 0;
done:
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    free(out);
    free(json);
    moe_model_close(m);
    return rc;
}

static int float_arg(const char *flag, const char *v, float *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x)) {
        fprintf(stderr, "moe-cli: %s expects a number, got \"%s\"\n", flag, v);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int int_arg(const char *flag, const char *v, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < 0 || x > 1 << 30) {
        fprintf(stderr, "moe-cli: %s expects a non-negative integer, got \"%s\"\n", flag, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    run_opts o = {.n_predict = 16, .sampling = moe_sampler_defaults(), .add_generation_prompt = 1, .thinking = -1, .now = -1};
    o.sampling.temp = 0; /* run is greedy unless asked */
    int verify = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (a[0] != '-' && !o.text) { o.text = a; takes = 0; }
        else if (!strcmp(a, "--verify")) { verify = 1; takes = 0; }
        else if (!strcmp(a, "--pieces")) { o.pieces = 1; takes = 0; }
        else if (!strcmp(a, "--no-special")) { o.no_special = 1; takes = 0; }
        else if (!strcmp(a, "--jsonl")) { o.jsonl = 1; takes = 0; }
        else if (!strcmp(a, "--skip-special")) { o.skip_special = 1; takes = 0; }
        else if (!strcmp(a, "--no-generation-prompt")) { o.add_generation_prompt = 0; takes = 0; }
        else if (!v) { fprintf(stderr, "moe-cli: %s needs a value\n", a); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--tokens")) o.tokens = v;
        else if (!strcmp(a, "--messages")) o.messages = v;
        else if (!strcmp(a, "--expert-cache")) o.expert_cache = v;
        else if (!strcmp(a, "--thinking")) {
            if (strcmp(v, "on") && strcmp(v, "off")) { fprintf(stderr, "moe-cli: --thinking expects on or off\n"); return 2; }
            o.thinking = !strcmp(v, "on");
        } else if (!strcmp(a, "--now")) {
            char *end;
            o.now = strtoll(v, &end, 10);
            if (!*v || *end || o.now < 0) { fprintf(stderr, "moe-cli: --now expects seconds since 1970\n"); return 2; }
        }
        else if (!strcmp(a, "--logits-out")) o.logits_out = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { if (int_arg(a, v, &o.n_predict)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (int_arg(a, v, &o.n_threads)) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { if (int_arg(a, v, &o.n_ctx)) return 2; }
        else if (!strcmp(a, "--temp")) { if (float_arg(a, v, &o.sampling.temp)) return 2; }
        else if (!strcmp(a, "--top-k")) { if (int_arg(a, v, &o.sampling.top_k)) return 2; }
        else if (!strcmp(a, "--top-p")) { if (float_arg(a, v, &o.sampling.top_p)) return 2; }
        else if (!strcmp(a, "--min-p")) { if (float_arg(a, v, &o.sampling.min_p)) return 2; }
        else if (!strcmp(a, "--repeat-penalty")) { if (float_arg(a, v, &o.sampling.repeat_penalty)) return 2; }
        else if (!strcmp(a, "--repeat-last-n")) { if (int_arg(a, v, &o.sampling.repeat_last_n)) return 2; }
        else if (!strcmp(a, "--presence-penalty")) { if (float_arg(a, v, &o.sampling.presence_penalty)) return 2; }
        else if (!strcmp(a, "--frequency-penalty")) { if (float_arg(a, v, &o.sampling.frequency_penalty)) return 2; }
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o.sampling.seed = strtoull(v, &end, 10);
            if (!*v || *v == '-' || *end || errno) { fprintf(stderr, "moe-cli: --seed expects a non-negative integer, got \"%s\"\n", v); return 2; }
        } else { fprintf(stderr, "moe-cli: unknown option %s\n", a); usage(stderr); return 2; }
        i += takes;
    }
    if (!o.model) {
        fprintf(stderr, "moe-cli %s: -m FILE is required\n", cmd);
        return 2;
    }
    if (!strcmp(cmd, "info")) return cmd_info(o.model, verify);
    if (!strcmp(cmd, "render")) return cmd_render(&o);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(&o);
    if (!strcmp(cmd, "detokenize")) return cmd_detokenize(&o);
    if (!strcmp(cmd, "run")) return cmd_run(&o);
    fprintf(stderr, "moe-cli: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
