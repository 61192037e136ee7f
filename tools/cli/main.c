/*
 * moe-cli — the command-line face of the runtime.
 *
 *   moe-cli chat -m FILE [--system TEXT] [-n N] [-c CTX] [sampling flags]
 *                                          talk to the model; with stdin not a terminal, one user
 *                                          message per line in, one reply per line out
 *   moe-cli run  -m FILE (-p TEXT | --tokens 1,2,3) [-n N] [--stop STR] [--ignore-eos]
 *                [--logits-out PATH] [sampling flags]
 *   moe-cli perplexity -m FILE -f TEXT [-c CTX]
 *   moe-cli info -m FILE [--verify] [--tensors]
 *                                          model card; --verify checks every checksum,
 *                                          --tensors lists name, type, shape and size
 *   moe-cli tokenize -m FILE [--pieces] [--no-special] [--jsonl] [TEXT]
 *                                          ids of TEXT as a JSON array; --jsonl: one JSON string
 *                                          per stdin line, one array per output line
 *   moe-cli detokenize -m FILE --tokens 1,2,3 [--skip-special]
 *   moe-cli render -m FILE --messages CONV.json [--no-generation-prompt] [--thinking on|off] [--now UNIX]
 *                                          the exact prompt text the chat template makes
 *
 * Sampling flags (llama.cpp's): --temp T --top-k K --top-p P --min-p P
 * --repeat-penalty R --repeat-last-n N --presence-penalty P
 * --frequency-penalty F --seed S. `run` is greedy unless --temp > 0 is given:
 * it is the scripted, reproducible path; `chat` samples with llama.cpp's
 * defaults unless --temp 0.
 *
 * `run --tokens` prints the generated token ids, comma-separated, as the
 * last line of stdout; `run -p` prints the generated text. --logits-out
 * writes float32 little-endian logits, one row of n_vocab per evaluated
 * position: every prompt position, then one row per generated token (each
 * generated token is evaluated, so there are P + N rows). Tests and outside
 * checks rely on these interfaces: keep them stable.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util/file.h"
#include "util/error.h"
#include "util/size.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: moe-cli chat -m FILE [--system TEXT] [-n N] [-c CTX] [-b BATCH] [-t THREADS] [--chat-template NAME|FILE]\n"
            "                    [--thinking on|off] [sampling flags] [--expert-cache SIZE]\n"
            "       moe-cli run -m FILE (-p TEXT | --tokens ID,ID,...) [-n N] [--stop STR]... [--ignore-eos]\n"
            "                   [--logits-out PATH] [-t THREADS] [-c CTX] [-b BATCH] [sampling flags] [--expert-cache SIZE]\n"
            "       moe-cli perplexity -m FILE -f TEXT [-c CTX] [-b BATCH] [-t THREADS]\n"
            "       moe-cli info -m FILE [--verify] [--tensors]\n"
            "       moe-cli tokenize -m FILE [--pieces] [--no-special] [--jsonl] [TEXT]\n"
            "       moe-cli detokenize -m FILE --tokens ID,ID,... [--skip-special]\n"
            "       moe-cli render -m FILE --messages CONV.json [--no-generation-prompt] [--thinking on|off] [--now UNIX]\n"
            "                      [--chat-template NAME|FILE]\n"
            "  sampling flags: --temp T --top-k K --top-p P --min-p P --repeat-penalty R --repeat-last-n N\n"
            "                  --presence-penalty P --frequency-penalty F --seed S\n"
            "  run is greedy unless --temp > 0 is given; chat samples (--temp 0.8) unless --temp 0.\n"
            "  --expert-cache SIZE: routed experts from a cache of SIZE (6G, 512M, 25%%), with\n"
            "      --cache-policy stats|lru|lfu (default stats), --cache-pin N (the N most-routed stay),\n"
            "      --prefetch on|off (read the next layer's predicted experts in the background; default off)\n"
            "  --trace-experts FILE (run, chat): every routing decision, a line per token and MoE layer\n"
            "  -b BATCH (run, chat, perplexity): prompt tokens per forward chunk (default 512; fewer use less memory)\n"
            "  --kv-type f16|f32 (run, chat, perplexity): the KV cache's values (default f16, half the memory of f32)\n"
            "  --no-mmap: read the model into memory instead of mapping it (faster decode, more memory)\n"
            "  --chat-template: a built-in template (chatml, mistral) or a Jinja file, instead of the model's\n");
}

int cli_parse_tokens(const char *s, int32_t **out, int *n) {
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

moe_model *cli_model_open(const cli_opts *o, moe_error *err) {
    return moe_model_open_with(o->model, (moe_model_params){.no_mmap = o->no_mmap}, err);
}

moe_ctx *cli_ctx_new(const moe_model *m, const cli_opts *o, int n_ctx_fallback, moe_error *err) {
    uint64_t cache_bytes = 0;
    if (o->expert_cache && moe_parse_size(o->expert_cache, moe_model_routed_expert_bytes(m), &cache_bytes)) {
        snprintf(err->msg, sizeof err->msg, "--expert-cache %s: expected a size like 6G, 512M or 25%%", o->expert_cache);
        return NULL;
    }
    if ((o->cache_policy || o->cache_pin || o->cache_prefetch) && !o->expert_cache) {
        snprintf(err->msg, sizeof err->msg, "--cache-policy, --cache-pin and --prefetch go with --expert-cache SIZE");
        return NULL;
    }
    return moe_ctx_new(m, (moe_ctx_params){.n_ctx = o->n_ctx > 0 ? o->n_ctx : n_ctx_fallback, .n_threads = o->n_threads,
                                           .n_batch = o->n_batch,
                                           .isa = getenv("MOE_ISA"), .kv_type = o->kv_type, .expert_cache_bytes = cache_bytes,
                                           .expert_cache_policy = o->cache_policy, .expert_cache_pin = o->cache_pin,
                                           .expert_cache_prefetch = o->cache_prefetch},
                       err);
}

void cli_print_cache_stats(const moe_ctx *c, FILE *f) {
    moe_cache_stats cs;
    if (moe_ctx_cache_stats(c, &cs)) return;
    fprintf(f, "expert cache: %d slots of %.2f MiB, %llu hits, %llu misses (hit rate %.1f%%), %llu bypasses, %.1f MiB read\n",
            cs.slots, cs.slot_bytes / 1048576.0, (unsigned long long)cs.hits, (unsigned long long)cs.misses,
            cs.hits + cs.misses ? 100.0 * cs.hits / (double)(cs.hits + cs.misses) : 0.0,
            (unsigned long long)cs.bypasses, cs.bytes_read / 1048576.0);
    if (cs.prefetch_issued)
        fprintf(f, "prefetch: %llu reads, precision %.1f%%, recall %.1f%%; %.3f s stalled on reads\n",
                (unsigned long long)cs.prefetch_issued, 100.0 * cs.prefetch_useful / (double)cs.prefetch_issued,
                cs.prefetch_useful + cs.misses ? 100.0 * cs.prefetch_useful / (double)(cs.prefetch_useful + cs.misses) : 0.0,
                cs.io_stall_s);
}

static void write_route(void *user, int32_t pos, int32_t layer, int32_t k, const int32_t *experts,
                        const float *weights) {
    FILE *f = user;
    fprintf(f, "%d\t%d\t", pos, layer);
    for (int i = 0; i < k; i++) fprintf(f, "%s%d", i ? "," : "", experts[i]);
    fputc('\t', f);
    for (int i = 0; i < k; i++) fprintf(f, "%s%.6g", i ? "," : "", weights[i]);
    fputc('\n', f);
}

int cli_trace_open(moe_ctx *c, const cli_opts *o, FILE **out, moe_error *err) {
    *out = NULL;
    if (!o->trace_experts) return 0;
    if (!(*out = fopen(o->trace_experts, "w")))
        return moe_fail(err, "--trace-experts %s: cannot create: %s", o->trace_experts, strerror(errno));
    fprintf(*out, "# pos\tlayer\texperts\tweights\n");
    moe_ctx_on_route(c, write_route, *out);
    return 0;
}

int cli_chat_template(const cli_opts *o, char **out, moe_error *err) {
    *out = NULL;
    if (!o->chat_template) return 0;
    const char *builtin = moe_chat_template_builtin(o->chat_template);
    if (builtin) return (*out = strdup(builtin)) ? 0 : moe_fail(err, "out of memory");
    size_t len;
    if ((*out = moe_read_file(o->chat_template, &len, err))) return 0;
    snprintf(err->msg, sizeof err->msg, "--chat-template %s: neither a built-in template (chatml, mistral) nor a readable file",
             o->chat_template);
    return -1;
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
    cli_opts o = {.n_predict = -2, .sampling = moe_sampler_defaults(), .add_generation_prompt = 1, .thinking = -1, .now = -1};
    int temp_given = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (a[0] != '-' && !o.text) { o.text = a; takes = 0; }
        else if (!strcmp(a, "--verify")) { o.verify = 1; takes = 0; }
        else if (!strcmp(a, "--tensors")) { o.tensors = 1; takes = 0; }
        else if (!strcmp(a, "--pieces")) { o.pieces = 1; takes = 0; }
        else if (!strcmp(a, "--no-special")) { o.no_special = 1; takes = 0; }
        else if (!strcmp(a, "--jsonl")) { o.jsonl = 1; takes = 0; }
        else if (!strcmp(a, "--skip-special")) { o.skip_special = 1; takes = 0; }
        else if (!strcmp(a, "--no-generation-prompt")) { o.add_generation_prompt = 0; takes = 0; }
        else if (!strcmp(a, "--ignore-eos")) { o.ignore_eos = 1; takes = 0; }
        else if (!strcmp(a, "--no-mmap")) { o.no_mmap = 1; takes = 0; }
        else if (!strcmp(a, "-i") || !strcmp(a, "--interactive")) { o.interactive = 1; takes = 0; }
        else if (!v) { fprintf(stderr, "moe-cli: %s needs a value\n", a); return 2; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--tokens")) o.tokens = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o.prompt = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) o.file = v;
        else if (!strcmp(a, "--system") || !strcmp(a, "-sys")) o.system = v;
        else if (!strcmp(a, "--chat-template")) o.chat_template = v;
        else if (!strcmp(a, "--stop")) {
            if (o.n_stops == (int)(sizeof o.stops / sizeof *o.stops) || !*v) { fprintf(stderr, "moe-cli: --stop takes a non-empty string, at most 8 times\n"); return 2; }
            o.stops[o.n_stops++] = v;
        }
        else if (!strcmp(a, "--messages")) o.messages = v;
        else if (!strcmp(a, "--expert-cache")) o.expert_cache = v;
        else if (!strcmp(a, "--trace-experts")) o.trace_experts = v;
        else if (!strcmp(a, "--cache-policy")) o.cache_policy = v;
        else if (!strcmp(a, "--cache-pin")) { if (int_arg(a, v, &o.cache_pin)) return 2; }
        else if (!strcmp(a, "--prefetch")) {
            if (strcmp(v, "on") && strcmp(v, "off")) { fprintf(stderr, "moe-cli: --prefetch expects on or off\n"); return 2; }
            o.cache_prefetch = !strcmp(v, "on");
        }
        else if (!strcmp(a, "--kv-type")) {
            if (strcmp(v, "f16") && strcmp(v, "f32")) { fprintf(stderr, "moe-cli: --kv-type expects f16 or f32, got \"%s\"\n", v); return 2; }
            o.kv_type = v;
        }
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
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) { if (int_arg(a, v, &o.n_batch)) return 2; }
        else if (!strcmp(a, "--temp")) { if (float_arg(a, v, &o.sampling.temp)) return 2; temp_given = 1; }
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
    if (!strcmp(cmd, "run") && !temp_given) o.sampling.temp = 0; /* scripted runs are greedy unless asked */
    if (o.n_predict == -2) o.n_predict = !strcmp(cmd, "run") ? 16 : -1;
    if (!strcmp(cmd, "info")) return cmd_info(&o);
    if (!strcmp(cmd, "chat")) return cmd_chat(&o);
    if (!strcmp(cmd, "perplexity")) return cmd_perplexity(&o);
    if (!strcmp(cmd, "render")) return cmd_render(&o);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(&o);
    if (!strcmp(cmd, "detokenize")) return cmd_detokenize(&o);
    if (!strcmp(cmd, "run")) return cmd_run(&o);
    fprintf(stderr, "moe-cli: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
