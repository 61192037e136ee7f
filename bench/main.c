/*
 * moe-bench — prefill and decode speed, llama-bench style, measured against
 * the machine's own memory bandwidth.
 *
 *   moe-bench -m FILE | --synthetic NAME [--quant Q] [--layers N] [--skew A]
 *             [-p 512] [-n 128] [-d 0] [-t THREADS] [-r REPS] [-o md|json|csv] [--membw] [--kv-type T]
 *             [--expert-cache SIZE [--cache-policy P] [--cache-pin N] [--prefetch on|off]]
 *             [--drop-caches] [--text FILE]
 *
 * -p, -n and -d take comma-separated lists, as llama-bench's do: every
 * prompt length and every generation length is a test, at every depth.
 *
 * pp<P>: one prompt of P tokens evaluated as a batch. tg<N>: N tokens decoded
 * one at a time from an empty context, or with -d DEPTH (llama-bench's
 * n_depth) from a context already holding DEPTH tokens: they are evaluated
 * once, untimed, and every run starts from them again. Each test runs once
 * to warm up (page the weights in), then REPS times; t/s is reported as mean
 * and standard deviation. For decode, bytes_per_token is the weights a token
 * reads plus the KV cache it reads on average, and bw_fraction is that times
 * t/s over the read bandwidth, the best of its measurements before decode and
 * after each decode run.
 *
 * The tokens come from a seeded stream, a different seed for every run, so
 * no run replays the routing of the one before (which would make an expert
 * cache look perfect): each next token is, with probability 0.8, within 16
 * ids of the previous one, else uniform; ids close together share a topic
 * in the --skew synthetic models. Decode feeds this stream (teacher forcing)
 * rather than the argmax, which with random weights falls into a loop.
 * With --text FILE the tokens are instead windows of FILE as the model's
 * tokenizer encodes it (run r starts at a different offset): the routing of
 * real text, for a trained model.
 *
 * --drop-caches makes every run cold: no warm-up, the model file's pages
 * dropped from the page cache and a fresh context (and expert cache) before
 * each run.
 */
#include <math.h>
#include <omp.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"
#include "membw.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/size.h"
#include "moe.h"
#include "synthetic.h"

#define MAX_REPS 100
#define MAX_LIST 16 /* values of one -p, -n or -d list */

typedef struct int_list {
    int v[MAX_LIST];
    int n;
} int_list;

static int list_max(const int_list *l) {
    int m = 0;
    for (int i = 0; i < l->n; i++) m = l->v[i] > m ? l->v[i] : m;
    return m;
}

typedef struct opts {
    const char *model, *synthetic, *output, *quant, *cache_dir, *expert_cache, *cache_policy, *text, *kv_type;
    int_list prompts, gens, depths; /* -p, -n, -d */
    int n_batch, n_threads, reps, layers, membw, cache_pin, prefetch, drop_caches, no_mmap;
    double skew;
} opts;

typedef struct result {
    const char *test;      /* "pp" or "tg" */
    int n_prompt, n_gen, n_depth;
    double samples_ts[MAX_REPS], samples_ns[MAX_REPS];
    int n;
    double avg_ts, sd_ts, avg_ns, sd_ns;
    double bytes_per_token, bw_fraction; /* tg only; <0 when not applicable */
    double membw_seen;                   /* tg: the best read bandwidth measured after each run */
    int has_cache;
    double cache_hit_rate, bytes_read_per_token; /* with --expert-cache */
    double prefetch_precision, prefetch_recall;  /* < 0: no prefetch */
    double io_stall_s;                           /* per run */
    double storage_per_token;  /* bytes the process read from storage (/proc/self/io), any tier; < 0: unknown */
    int n_layers;
    double layer_hit_rate[MOE_MAX_LAYERS];
    double top10_share;        /* routings that went to the 10 % most chosen experts of their layer */
    double overlap;            /* of a token's experts, the share the previous token also chose (same layer) */
} result;

/* Routing statistics gathered through moe_ctx_on_route. */
typedef struct route_tally {
    int n_layers, n_experts, k;
    uint64_t *count;           /* [layer][expert] */
    int32_t *prev;             /* [layer][k]: the previous token's experts */
    int32_t *prev_pos;         /* [layer]: its position, -1 none */
    uint64_t shared, pairs;
} route_tally;

static void tally_free(route_tally *t) {
    free(t->count);
    free(t->prev);
    free(t->prev_pos);
}

static void on_route(void *user, int32_t pos, int32_t layer, int32_t k, const int32_t *experts, const float *w) {
    (void)w;
    route_tally *t = user;
    if (layer >= t->n_layers || k > t->k) return;
    for (int i = 0; i < k; i++) t->count[(size_t)layer * t->n_experts + experts[i]]++;
    int32_t *prev = t->prev + (size_t)layer * t->k;
    if (t->prev_pos[layer] == pos - 1) {
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) t->shared += experts[i] == prev[j];
        t->pairs += (uint64_t)k;
    }
    memcpy(prev, experts, (size_t)k * sizeof *prev);
    t->prev_pos[layer] = pos;
}

static int cmp_desc(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Share of routings that went to the 10 % most chosen experts, per layer, summed. */
static double top10_share(route_tally *t) {
    uint64_t top = 0, all = 0;
    const int n10 = t->n_experts / 10 > 0 ? t->n_experts / 10 : 1;
    for (int l = 0; l < t->n_layers; l++) {
        uint64_t *c = t->count + (size_t)l * t->n_experts;
        qsort(c, (size_t)t->n_experts, sizeof *c, cmp_desc);
        for (int e = 0; e < t->n_experts; e++) {
            all += c[e];
            top += e < n10 ? c[e] : 0;
        }
    }
    return all ? (double)top / (double)all : 0;
}

/* Bytes this process has read from storage (not the page cache); -1 unknown. */
static long long storage_read_bytes(void) {
    FILE *f = fopen("/proc/self/io", "r");
    if (!f) return -1;
    char line[128];
    long long b = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "read_bytes: %lld", &b) == 1) break;
    fclose(f);
    return b;
}

/* Drops the model file's pages from the page cache. posix_fadvise works for
 * any user on pages no one else maps; /proc/sys/vm/drop_caches (root only)
 * also drops what fadvise cannot. Says which worked, once. */
static void drop_file_pages(const char *path, int *said) {
    int fd = open(path, O_RDONLY);
    int fadv = fd >= 0 ? posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) : -1;
    if (fd >= 0) close(fd);
    int proc = -1;
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f) {
        proc = fputs("1\n", f) < 0 ? -1 : 0;
        if (fclose(f)) proc = -1;
    }
    if (!*said) {
        fprintf(stderr, "moe-bench: dropping the page cache before each run: posix_fadvise(DONTNEED) %s, "
                        "/proc/sys/vm/drop_caches %s\n", fadv == 0 ? "ok" : "failed",
                proc == 0 ? "ok" : "not permitted");
        *said = 1;
    }
}

static void cpu_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *v = strchr(line, ':');
        if (v) {
            v += 1 + (v[1] == ' ');
            v[strcspn(v, "\n")] = 0;
            snprintf(buf, n, "%s", v);
        }
        break;
    }
    fclose(f);
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static void stats(result *r) {
    double s = 0, s2 = 0, t = 0, t2 = 0;
    for (int i = 0; i < r->n; i++) {
        s += r->samples_ts[i];
        t += r->samples_ns[i];
    }
    r->avg_ts = s / r->n;
    r->avg_ns = t / r->n;
    for (int i = 0; i < r->n; i++) {
        s2 += (r->samples_ts[i] - r->avg_ts) * (r->samples_ts[i] - r->avg_ts);
        t2 += (r->samples_ns[i] - r->avg_ns) * (r->samples_ns[i] - r->avg_ns);
    }
    r->sd_ts = r->n > 1 ? sqrt(s2 / (r->n - 1)) : 0;
    r->sd_ns = r->n > 1 ? sqrt(t2 / (r->n - 1)) : 0;
}

/* The tokens of run `run` (see the top comment): a window of the --text
 * tokens when there are any (n_text > n), else the seeded stream. */
static void token_stream(int32_t *tokens, int n, int32_t n_vocab, uint64_t run, const int32_t *text, int n_text) {
    if (n_text > n) {
        const uint64_t start = (run * 7919u * (uint64_t)n) % (uint64_t)(n_text - n);
        memcpy(tokens, text + start, (size_t)n * sizeof *tokens);
        return;
    }
    uint64_t s = 42 + 0x9e3779b97f4a7c15ull * (run + 1);
    int32_t t = 0;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const uint32_t a = (uint32_t)(s >> 33), b = (uint32_t)(s >> 13) & 0xfffff;
        if (i == 0 || a % 10 >= 8) t = (int32_t)(b % (uint32_t)n_vocab);
        else t = (int32_t)((t + (int32_t)(a % 33) - 16 + n_vocab) % n_vocab);
        tokens[i] = t;
    }
}

/* One timed run of a test, from the depth's tokens (see fill_depth);
 * returns seconds or <0 with err. */
static double run_once(moe_ctx *c, int depth, int pp, int n, const int32_t *tokens, moe_error *err) {
    moe_ctx_truncate(c, depth);
    const double t0 = bench_now();
    if (pp) {
        if (moe_eval(c, tokens, n, NULL, err)) return -1;
    } else {
        for (int i = 0; i < n; i++)
            if (moe_eval(c, &tokens[i], 1, NULL, err)) return -1;
    }
    return bench_now() - t0;
}

typedef struct bench_env {
    const opts *o;
    const char *path;
    const moe_model *m;
    moe_ctx_params params;
    moe_ctx *c;
    int said_drop;
    route_tally tally;
    const int32_t *text;  /* --text FILE's tokens, n_text of them */
    int n_text;
} bench_env;

/* -d DEPTH: the context's first DEPTH tokens (a stream of their own),
 * evaluated in batches of -b and untimed, their routing not tallied;
 * run_once truncates back to them. */
static int fill_depth(bench_env *b, const moe_hparams *hp, int depth, moe_error *err) {
    moe_ctx_reset(b->c);
    if (!depth) return 0;
    int32_t *tokens = malloc((size_t)depth * sizeof *tokens);
    if (!tokens) return moe_fail(err, "out of memory");
    token_stream(tokens, depth, hp->n_vocab, 2000, b->text, b->n_text);
    moe_ctx_on_route(b->c, NULL, NULL);
    const int rc = moe_eval(b->c, tokens, depth, NULL, err);
    if (b->tally.count) moe_ctx_on_route(b->c, on_route, &b->tally);
    free(tokens);
    return rc;
}

static moe_ctx *new_ctx(bench_env *b, moe_error *err) {
    moe_ctx_free(b->c);
    b->c = moe_ctx_new(b->m, b->params, err);
    if (b->c && b->tally.count) moe_ctx_on_route(b->c, on_route, &b->tally);
    return b->c;
}

static void cache_delta(moe_cache_stats *d, const moe_cache_stats *a, const moe_cache_stats *b) {
    d->hits += b->hits - a->hits;
    d->misses += b->misses - a->misses;
    d->bypasses += b->bypasses - a->bypasses;
    d->bytes_read += b->bytes_read - a->bytes_read;
    d->io_stall_s += b->io_stall_s - a->io_stall_s;
    d->prefetch_issued += b->prefetch_issued - a->prefetch_issued;
    d->prefetch_useful += b->prefetch_useful - a->prefetch_useful;
    d->n_layers = b->n_layers;
    for (int l = 0; l < b->n_layers && l < MOE_MAX_LAYERS; l++) {
        d->layer_hits[l] += b->layer_hits[l] - a->layer_hits[l];
        d->layer_misses[l] += b->layer_misses[l] - a->layer_misses[l];
    }
}

static int run_test(bench_env *b, const moe_hparams *hp, result *r, int pp, int n, int reps, moe_error *err) {
    int32_t *tokens = malloc((size_t)n * sizeof *tokens);
    if (!tokens) return -1;
    int rc = 0;
    uint64_t run = pp ? 1000 : 0;
    const int depth = r->n_depth;
    if (!b->o->drop_caches) { /* warm-up: pages in the weights */
        token_stream(tokens, n, hp->n_vocab, run++, b->text, b->n_text);
        if (fill_depth(b, hp, depth, err) || run_once(b->c, depth, pp, n, tokens, err) < 0) rc = -1;
    }
    if (b->tally.count) { /* the routing statistics of the timed runs only */
        memset(b->tally.count, 0, (size_t)b->tally.n_layers * b->tally.n_experts * sizeof *b->tally.count);
        b->tally.shared = b->tally.pairs = 0;
    }
    moe_cache_stats *d = calloc(1, sizeof *d), *before = malloc(sizeof *before), *after = malloc(sizeof *after);
    if (!d || !before || !after) rc = moe_fail(err, "out of memory");
    long long io_total = 0;
    for (int i = 0; i < reps && !rc; i++) {
        if (b->o->drop_caches) {
            drop_file_pages(b->path, &b->said_drop);
            if (!new_ctx(b, err) || fill_depth(b, hp, depth, err)) {
                rc = -1;
                break;
            }
        }
        token_stream(tokens, n, hp->n_vocab, run++, b->text, b->n_text);
        r->has_cache = !moe_ctx_cache_stats(b->c, before);
        const long long io0 = storage_read_bytes();
        double dt = run_once(b->c, depth, pp, n, tokens, err);
        const long long io1 = storage_read_bytes();
        io_total = io0 < 0 || io1 < 0 || io_total < 0 ? -1 : io_total + (io1 - io0);
        if (dt < 0) rc = -1;
        else {
            r->samples_ns[r->n] = dt * 1e9;
            r->samples_ts[r->n++] = n / dt;
        }
        if (!pp && !rc) { /* the bandwidth of this moment, for bw_fraction (see main) */
            const double bw = moe_measure_read_bandwidth((size_t)1 << 30, b->params.n_threads, 5);
            r->membw_seen = bw > r->membw_seen ? bw : r->membw_seen;
        }
        if (r->has_cache && !moe_ctx_cache_stats(b->c, after)) cache_delta(d, before, after);
    }
    free(tokens);
    const double toks = (double)n * (r->n ? r->n : 1);
    r->storage_per_token = io_total < 0 ? -1 : (double)io_total / toks;
    r->prefetch_precision = r->prefetch_recall = -1;
    if (r->has_cache && d) {
        const double lookups = (double)(d->hits + d->misses + d->bypasses);
        r->cache_hit_rate = lookups > 0 ? (double)d->hits / lookups : 0;
        r->bytes_read_per_token = (double)d->bytes_read / toks;
        r->io_stall_s = d->io_stall_s / (r->n ? r->n : 1);
        if (b->params.expert_cache_prefetch) {
            r->prefetch_precision = d->prefetch_issued ? (double)d->prefetch_useful / (double)d->prefetch_issued : 0;
            const double want = (double)(d->prefetch_useful + d->misses);
            r->prefetch_recall = want > 0 ? (double)d->prefetch_useful / want : 0;
        }
        r->n_layers = d->n_layers;
        for (int l = 0; l < d->n_layers && l < MOE_MAX_LAYERS; l++) {
            const double a = (double)(d->layer_hits[l] + d->layer_misses[l]);
            r->layer_hit_rate[l] = a > 0 ? (double)d->layer_hits[l] / a : -1;
        }
    }
    if (b->tally.count) {
        r->overlap = b->tally.pairs ? (double)b->tally.shared / (double)b->tally.pairs : 0;
        r->top10_share = top10_share(&b->tally);
    }
    free(d);
    free(before);
    free(after);
    if (!rc) stats(r);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: moe-bench (-m FILE | --synthetic NAME [--quant Q] [--layers N]) [-p 512] [-n 128] [-d 0]\n"
            "                 [-b BATCH] [-t THREADS] [-r REPS] [-o md|json|csv] [--membw] [--cache-dir DIR]\n"
            "  --synthetic NAME  random weights with a real model's shapes: %s\n"
            "  --quant Q         q4, q8, f16, bf16, f32 for every matrix (default: the default recipe)\n"
            "  -p, -n, -d        prompt lengths, generation lengths, and depths: comma-separated lists\n"
            "  -d DEPTH          run each test after DEPTH tokens already in the context (default 0)\n"
            "  -b BATCH          tokens per forward chunk (default: the longest prompt, or 512 without one)\n"
            "  --kv-type T       the KV cache's values, f16 or f32 (default f16)\n"
            "  --membw           measure the read bandwidth only (always measured for tg)\n"
            "  --skew A          with --synthetic: skewed routing, Zipf exponent A (e.g. 1; see bench/README.md)\n"
            "  --text FILE       feed windows of FILE's tokens instead of the seeded stream (real routing)\n"
            "  --expert-cache S  routed experts from a cache of S bytes (6G, 512M, 25%%)\n"
            "  --cache-policy P  lru, lfu or stats (default: stats)\n"
            "  --cache-pin N     keep the N experts of highest routing frequency resident\n"
            "  --prefetch on|off read the next layer's predicted experts in the background (default off)\n"
            "  --no-mmap         read the model into memory instead of mapping it\n"
            "  --drop-caches     every run cold: no warm-up, the file's pages dropped, a fresh context\n"
            "  MOE_ISA=scalar|avx2|avx512|avx512bf16|neon forces the kernels.\n",
            moe_synthetic_names());
}

static int int_opt(const char *flag, const char *v, int *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : -1;
    if (!v || *end || x < 0 || x > 1 << 24) {
        fprintf(stderr, "moe-bench: %s expects a non-negative integer\n", flag);
        return -1;
    }
    *out = (int)x;
    return 0;
}

/* "512" or "128,512,2048": at most MAX_LIST non-negative integers */
static int list_opt(const char *flag, const char *v, int_list *out) {
    out->n = 0;
    for (const char *s = v; s;) {
        char *end;
        const long x = strtol(s, &end, 10);
        if (end == s || (*end && *end != ',') || x < 0 || x > 1 << 24 || out->n == MAX_LIST) {
            fprintf(stderr, "moe-bench: %s expects non-negative integers separated by commas (at most %d), got \"%s\"\n",
                    flag, MAX_LIST, v);
            return -1;
        }
        out->v[out->n++] = (int)x;
        s = *end ? end + 1 : NULL;
    }
    return 0;
}

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.prompts = {{512}, 1}, .gens = {{128}, 1}, .depths = {{0}, 1}, .reps = 5, .output = "md"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--membw")) { o->membw = 1; takes = 0; }
        else if (!strcmp(a, "--drop-caches")) { o->drop_caches = 1; takes = 0; }
        else if (!strcmp(a, "--no-mmap")) { o->no_mmap = 1; takes = 0; }
        else if (!v) { fprintf(stderr, "moe-bench: %s needs a value\n", a); return -1; }
        else if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "--synthetic")) o->synthetic = v;
        else if (!strcmp(a, "--quant")) o->quant = v;
        else if (!strcmp(a, "--cache-dir")) o->cache_dir = v;
        else if (!strcmp(a, "--text")) o->text = v;
        else if (!strcmp(a, "--kv-type")) {
            if (strcmp(v, "f16") && strcmp(v, "f32")) { fprintf(stderr, "moe-bench: --kv-type expects f16 or f32, got \"%s\"\n", v); return -1; }
            o->kv_type = v;
        }
        else if (!strcmp(a, "--expert-cache")) o->expert_cache = v;
        else if (!strcmp(a, "--cache-policy")) o->cache_policy = v;
        else if (!strcmp(a, "--cache-pin")) rc = int_opt(a, v, &o->cache_pin);
        else if (!strcmp(a, "--prefetch")) {
            if (strcmp(v, "on") && strcmp(v, "off")) { fprintf(stderr, "moe-bench: --prefetch expects on or off\n"); return -1; }
            o->prefetch = !strcmp(v, "on");
        }
        else if (!strcmp(a, "--skew")) {
            char *end;
            o->skew = strtod(v, &end);
            if (*end || !(o->skew >= 0 && o->skew <= 8)) { fprintf(stderr, "moe-bench: --skew expects a number in [0, 8]\n"); return -1; }
        }
        else if (!strcmp(a, "-o")) o->output = v;
        else if (!strcmp(a, "-p")) rc = list_opt(a, v, &o->prompts);
        else if (!strcmp(a, "-n")) rc = list_opt(a, v, &o->gens);
        else if (!strcmp(a, "-d")) rc = list_opt(a, v, &o->depths);
        else if (!strcmp(a, "-b")) rc = int_opt(a, v, &o->n_batch);
        else if (!strcmp(a, "-t")) rc = int_opt(a, v, &o->n_threads);
        else if (!strcmp(a, "-r")) rc = int_opt(a, v, &o->reps);
        else if (!strcmp(a, "--layers")) rc = int_opt(a, v, &o->layers);
        else { fprintf(stderr, "moe-bench: unknown option %s\n", a); usage(stderr); return -1; }
        if (rc) return -1;
        i += takes;
    }
    if (!o->kv_type) o->kv_type = "f16";
    /* without a prompt test, the chunk of -d's fill: the CLI's default */
    if (!o->n_batch) o->n_batch = list_max(&o->prompts) > 0 ? list_max(&o->prompts) : 512;
    if (strcmp(o->output, "md") && strcmp(o->output, "json") && strcmp(o->output, "csv")) {
        fprintf(stderr, "moe-bench: -o %s: expected md, json or csv\n", o->output);
        return -1;
    }
    if (o->reps < 1 || o->reps > MAX_REPS) {
        fprintf(stderr, "moe-bench: -r must be in [1, %d]\n", MAX_REPS);
        return -1;
    }
    if (o->cache_policy && strcmp(o->cache_policy, "lru") && strcmp(o->cache_policy, "lfu") &&
        strcmp(o->cache_policy, "stats")) {
        fprintf(stderr, "moe-bench: --cache-policy %s: expected lru, lfu or stats\n", o->cache_policy);
        return -1;
    }
    if ((o->cache_policy || o->cache_pin || o->prefetch) && !o->expert_cache) {
        fprintf(stderr, "moe-bench: --cache-policy, --cache-pin and --prefetch need --expert-cache\n");
        return -1;
    }
    if (o->skew > 0 && !o->synthetic) {
        fprintf(stderr, "moe-bench: --skew applies to --synthetic models\n");
        return -1;
    }
    if (!o->membw && !o->model == !o->synthetic) {
        fprintf(stderr, "moe-bench: give exactly one of -m FILE and --synthetic NAME\n");
        return -1;
    }
    return 0;
}

/* --text FILE encoded with the model's tokenizer; it must be longer than
 * every test, so that each run can take its own window. */
static int text_tokens(const opts *o, const moe_model *m, int32_t **ids, int *n, moe_error *err) {
    size_t len = 0;
    char *text = moe_read_file(o->text, &len, err);
    if (!text) return -1;
    moe_tokenizer *t = moe_model_tokenizer_new(m, err);
    int rc = !t || moe_tokenizer_encode(t, text, len, 0, ids, n, err) ? -1 : 0;
    const int p = list_max(&o->prompts), g = list_max(&o->gens), d = list_max(&o->depths);
    int need = (p > g ? p : g) + 1;
    if (d >= need) need = d + 1;
    if (!rc && *n < need) {
        rc = moe_fail(err, "--text %s: %d tokens, need at least %d (more than -p and -n)", o->text, *n, need);
        free(*ids);
        *ids = NULL;
    }
    moe_tokenizer_free(t);
    free(text);
    return rc;
}

/* Path of the cached synthetic model, written first if missing. */
static int synthetic_model(const opts *o, char *path, size_t n, moe_error *err) {
    moe_hparams hp;
    if (moe_synthetic_hparams(o->synthetic, o->layers, &hp, err)) return -1;
    moe_recipe recipe = moe_recipe_default;
    if (o->quant) {
        int t = moe_dtype_from_name(o->quant);
        if (t < 0) {
            snprintf(err->msg, sizeof err->msg, "--quant %s: expected f32, f16, bf16, q8 or q4", o->quant);
            return -1;
        }
        for (int c = 0; c < MOE_TC_COUNT; c++) recipe.type[c] = (moe_dtype)t;
    }
    char dir[2048];
    const char *home = getenv("HOME");
    if (o->cache_dir) snprintf(dir, sizeof dir, "%s", o->cache_dir);
    else if (getenv("XDG_CACHE_HOME")) snprintf(dir, sizeof dir, "%s/moe", getenv("XDG_CACHE_HOME"));
    else snprintf(dir, sizeof dir, "%s/.cache/moe", home ? home : "/tmp");
    char parent[2048];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) { *slash = 0; mkdir(parent, 0755); }
    mkdir(dir, 0755);
    char skew[32] = "";
    if (o->skew > 0) snprintf(skew, sizeof skew, "-skew%g", o->skew);
    snprintf(path, n, "%s/synthetic-v3-%s-%s-L%d%s.moe", dir, o->synthetic, o->quant ? o->quant : "default", hp.n_layers,
             skew);
    if (access(path, R_OK) == 0) return 0;
    fprintf(stderr, "moe-bench: writing synthetic %s (%d layers, %s%s) to %s\n", o->synthetic, hp.n_layers,
            o->quant ? o->quant : "default recipe", o->skew > 0 ? ", skewed routing" : "", path);
    return moe_synthetic_write_skewed(path, &hp, &recipe, o->synthetic, o->skew, err);
}

/* llama-bench's names: pp512, tg128, tg128 @ d4096 */
static void test_name(char *buf, size_t n, const result *r) {
    const int len = snprintf(buf, n, "%s%d", r->test, r->n_prompt + r->n_gen);
    if (r->n_depth && len > 0 && (size_t)len < n) snprintf(buf + len, n - (size_t)len, " @ d%d", r->n_depth);
}

static void print_json_str(const char *k, const char *v, int comma) { printf("\"%s\": \"%s\"%s", k, v, comma ? ", " : ""); }

static void output(const opts *o, const char *path, const char *cpu, const char *isa, int threads, double membw,
                   const moe_model *m, const result *res, int n_res) {
    const moe_hparams *hp = moe_model_hparams(m);
    uint64_t total, active;
    moe_model_param_counts(m, &total, &active);
    const double size_gib = moe_model_file_size(m) / 1073741824.0;
    const long rss = rss_bytes();
    const char *recipe = moe_model_meta_str(m, "general.recipe");
    if (!strcmp(o->output, "md")) {
        printf("cpu: %s | isa: %s | threads: %d | read bandwidth: %.1f GB/s | rss: %.2f GiB | KV cache: %s\n", cpu, isa,
               threads, membw, rss / 1073741824.0, o->kv_type);
        printf("model: %s (%s) | recipe: %s\n\n", path, hp->architecture, recipe ? recipe : "?");
        printf("| model | size | params | active | threads | test | t/s | GB/s | bw %% |\n");
        printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            char test[32], gbs[32] = "", frac[32] = "";
            test_name(test, sizeof test, r);
            if (r->bw_fraction >= 0) {
                snprintf(gbs, sizeof gbs, "%.1f", r->bytes_per_token * r->avg_ts / 1e9);
                snprintf(frac, sizeof frac, "%.0f%%", 100 * r->bw_fraction);
            }
            printf("| %s | %.2f GiB | %.2f B | %.2f B | %d | %s | %.2f ± %.2f | %s | %s |\n", hp->architecture,
                   size_gib, total / 1e9, active / 1e9, threads, test, r->avg_ts, r->sd_ts, gbs, frac);
        }
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            char test[32];
            test_name(test, sizeof test, r);
            printf("\n%s routing: %.1f%% of choices to the top 10%% of experts, %.1f%% of experts shared with the "
                   "previous token", test, 100 * r->top10_share, 100 * r->overlap);
            if (r->storage_per_token >= 0) printf(", %.2f MiB read from storage per token", r->storage_per_token / 1048576.0);
            printf("\n");
            if (!r->has_cache) continue;
            printf("%s expert cache (%s%s): hit rate %.1f%%, %.2f MiB read into the cache per token, I/O stall "
                   "%.3f s per run", test, o->cache_policy ? o->cache_policy : "stats",
                   o->prefetch ? ", prefetch" : "", 100 * r->cache_hit_rate, r->bytes_read_per_token / 1048576.0,
                   r->io_stall_s);
            if (r->prefetch_precision >= 0)
                printf(", prefetch precision %.1f%% recall %.1f%%", 100 * r->prefetch_precision, 100 * r->prefetch_recall);
            printf("\n%s hit rate per layer:", test);
            for (int l = 0; l < r->n_layers; l++)
                if (r->layer_hit_rate[l] >= 0) printf(" %.0f", 100 * r->layer_hit_rate[l]);
            printf(" (%%)\n");
        }
    } else if (!strcmp(o->output, "csv")) {
        printf("model_filename,model_type,model_size,model_n_params,cpu_info,isa,n_threads,n_batch,type_k,type_v,n_prompt,n_gen,n_depth,avg_ns,"
               "stddev_ns,avg_ts,stddev_ts,membw_gbs,bytes_per_token,bw_fraction,rss_bytes\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            printf("\"%s\",\"%s\",%llu,%llu,\"%s\",%s,%d,%d,%s,%s,%d,%d,%d,%.0f,%.0f,%.4f,%.4f,%.2f,%.0f,%.4f,%ld\n", path,
                   hp->architecture, (unsigned long long)moe_model_file_size(m), (unsigned long long)total, cpu, isa,
                   threads, o->n_batch, o->kv_type, o->kv_type, r->n_prompt, r->n_gen, r->n_depth, r->avg_ns, r->sd_ns, r->avg_ts, r->sd_ts, membw,
                   r->bw_fraction >= 0 ? r->bytes_per_token : 0, r->bw_fraction >= 0 ? r->bw_fraction : 0, rss);
        }
    } else {
        printf("[\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            printf("  {");
            print_json_str("model_filename", path, 1);
            print_json_str("model_type", hp->architecture, 1);
            printf("\"model_size\": %llu, \"model_n_params\": %llu, ", (unsigned long long)moe_model_file_size(m),
                   (unsigned long long)total);
            print_json_str("cpu_info", cpu, 1);
            print_json_str("isa", isa, 1);
            printf("\"n_threads\": %d, \"n_batch\": %d, ", threads, o->n_batch);
            print_json_str("type_k", o->kv_type, 1);
            print_json_str("type_v", o->kv_type, 1);
            printf("\"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, ", r->n_prompt, r->n_gen, r->n_depth);
            printf("\"avg_ns\": %.0f, \"stddev_ns\": %.0f, \"avg_ts\": %.6f, \"stddev_ts\": %.6f, ", r->avg_ns, r->sd_ns,
                   r->avg_ts, r->sd_ts);
            printf("\"samples_ns\": [");
            for (int k = 0; k < r->n; k++) printf("%s%.0f", k ? ", " : "", r->samples_ns[k]);
            printf("], \"samples_ts\": [");
            for (int k = 0; k < r->n; k++) printf("%s%.6f", k ? ", " : "", r->samples_ts[k]);
            printf("], \"membw_gbs\": %.3f, ", membw);
            if (r->bw_fraction >= 0)
                printf("\"bytes_per_token\": %.0f, \"bw_fraction\": %.6f, ", r->bytes_per_token, r->bw_fraction);
            else
                printf("\"bytes_per_token\": null, \"bw_fraction\": null, ");
            if (r->has_cache) {
                printf("\"cache_policy\": \"%s\", \"cache_prefetch\": %s, ", o->cache_policy ? o->cache_policy : "stats",
                       o->prefetch ? "true" : "false");
                printf("\"cache_hit_rate\": %.6f, \"bytes_read_per_token\": %.0f, \"io_stall_s\": %.6f, ",
                       r->cache_hit_rate, r->bytes_read_per_token, r->io_stall_s);
                if (r->prefetch_precision >= 0)
                    printf("\"prefetch_precision\": %.6f, \"prefetch_recall\": %.6f, ", r->prefetch_precision,
                           r->prefetch_recall);
                else
                    printf("\"prefetch_precision\": null, \"prefetch_recall\": null, ");
                printf("\"layer_hit_rate\": [");
                for (int l = 0, first = 1; l < r->n_layers; l++)
                    if (r->layer_hit_rate[l] >= 0) {
                        printf("%s%.4f", first ? "" : ", ", r->layer_hit_rate[l]);
                        first = 0;
                    }
                printf("], ");
            }
            if (r->storage_per_token >= 0) printf("\"storage_bytes_per_token\": %.0f, ", r->storage_per_token);
            printf("\"routing_top10_share\": %.4f, \"routing_overlap\": %.4f, \"drop_caches\": %s, ", r->top10_share,
                   r->overlap, o->drop_caches ? "true" : "false");
            printf("\"rss_bytes\": %ld}%s\n", rss, i + 1 < n_res ? "," : "");
        }
        printf("]\n");
    }
}

int main(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o)) return 2;
    const int threads = o.n_threads > 0 ? o.n_threads : omp_get_max_threads();
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    /* 1 GiB: far beyond any cache, so this is DRAM. */
    double membw = moe_measure_read_bandwidth((size_t)1 << 30, threads, 5);
    if (o.membw && !o.model && !o.synthetic) {
        printf("cpu: %s | threads: %d | read bandwidth: %.1f GB/s\n", cpu, threads, membw);
        return 0;
    }
    moe_error err = {{0}};
    char path[4096];
    if (o.synthetic) {
        if (synthetic_model(&o, path, sizeof path, &err)) {
            fprintf(stderr, "moe-bench: %s\n", err.msg);
            return 1;
        }
    } else {
        snprintf(path, sizeof path, "%s", o.model);
    }
    moe_model *m = moe_model_open_with(path, (moe_model_params){.no_mmap = o.no_mmap}, &err);
    if (!m) {
        fprintf(stderr, "moe-bench: %s\n", err.msg);
        return 1;
    }
    const moe_hparams *hp = moe_model_hparams(m);
    const int longest = list_max(&o.prompts) > list_max(&o.gens) ? list_max(&o.prompts) : list_max(&o.gens);
    const int n_ctx = list_max(&o.depths) + longest + 1;
    uint64_t cache_bytes = 0;
    if (o.expert_cache && moe_parse_size(o.expert_cache, moe_model_routed_expert_bytes(m), &cache_bytes)) {
        fprintf(stderr, "moe-bench: --expert-cache %s: expected a size like 6G, 512M or 25%%\n", o.expert_cache);
        moe_model_close(m);
        return 2;
    }
    bench_env b = {.o = &o, .path = path, .m = m,
                   .params = {.n_ctx = n_ctx, .n_batch = o.n_batch, .n_threads = threads, .isa = getenv("MOE_ISA"),
                              .kv_type = o.kv_type, .expert_cache_bytes = cache_bytes, .expert_cache_policy = o.cache_policy,
                              .expert_cache_pin = o.cache_pin, .expert_cache_prefetch = o.prefetch}};
    /* routing statistics, to say how skewed the routing was */
    b.tally = (route_tally){.n_layers = hp->n_layers, .n_experts = hp->n_experts, .k = hp->n_experts_used};
    if (hp->n_experts > 0) {
        b.tally.count = calloc((size_t)hp->n_layers * hp->n_experts, sizeof *b.tally.count);
        b.tally.prev = calloc((size_t)hp->n_layers * hp->n_experts_used, sizeof *b.tally.prev);
        b.tally.prev_pos = malloc((size_t)hp->n_layers * sizeof *b.tally.prev_pos);
        if (!b.tally.count || !b.tally.prev || !b.tally.prev_pos) {
            fprintf(stderr, "moe-bench: out of memory\n");
            tally_free(&b.tally);
            moe_model_close(m);
            return 1;
        }
        for (int l = 0; l < hp->n_layers; l++) b.tally.prev_pos[l] = -2;
    }
    int32_t *text_ids = NULL;
    if (o.text && text_tokens(&o, m, &text_ids, &b.n_text, &err)) {
        fprintf(stderr, "moe-bench: %s\n", err.msg);
        tally_free(&b.tally);
        moe_model_close(m);
        return 1;
    }
    b.text = text_ids;
    if (o.drop_caches) drop_file_pages(path, &b.said_drop);
    /* large (per-layer arrays): not on the stack */
    result *res = calloc((size_t)o.depths.n * (size_t)(o.prompts.n + o.gens.n), sizeof *res);
    if (!res || !new_ctx(&b, &err)) {
        fprintf(stderr, "moe-bench: %s\n", res ? err.msg : "out of memory");
        free(res);
        free(text_ids);
        tally_free(&b.tally);
        moe_model_close(m);
        return 1;
    }
    /* the KV cache's bytes per position, at its type */
    const double kv_per_pos = (double)moe_ctx_kv_bytes(b.c) / moe_ctx_n_ctx(b.c);
    int n_res = 0, rc = 0;
    for (int di = 0; di < o.depths.n && !rc; di++) {
        for (int i = 0; i < o.prompts.n && !rc; i++) {
            if (!o.prompts.v[i]) continue;
            result *r = &res[n_res++];
            *r = (result){.test = "pp", .n_prompt = o.prompts.v[i], .n_depth = o.depths.v[di], .bw_fraction = -1};
            rc = run_test(&b, hp, r, 1, r->n_prompt, o.reps, &err);
        }
        for (int i = 0; i < o.gens.n && !rc; i++) {
            if (!o.gens.v[i]) continue;
            result *r = &res[n_res++];
            *r = (result){.test = "tg", .n_gen = o.gens.v[i], .n_depth = o.depths.v[di]};
            rc = run_test(&b, hp, r, 0, r->n_gen, o.reps, &err);
            /* Measured again after every decode run, and the best of all used: on
             * a shared host the bandwidth moves (33-62 GB/s within minutes here),
             * and against a reading before and one after decode the fraction still
             * reached 134 % (q8, 34.2 GB/s read twice while decode read 45.7). */
            membw = r->membw_seen > membw ? r->membw_seen : membw;
        }
    }
    for (int i = 0; i < n_res; i++) {
        result *r = &res[i];
        if (strcmp(r->test, "tg")) continue;
        /* on average a decoded token attends over depth + n_gen / 2 earlier positions */
        const double kv = kv_per_pos * (r->n_depth + (r->n_gen + 1) / 2.0);
        r->bytes_per_token = (double)moe_model_bytes_per_token(m) + kv;
        r->bw_fraction = membw > 0 ? r->bytes_per_token * r->avg_ts / (membw * 1e9) : 0;
    }
    if (rc) fprintf(stderr, "moe-bench: %s\n", err.msg);
    else output(&o, path, cpu, moe_ctx_isa(b.c), threads, membw, m, res, n_res);
    moe_ctx_free(b.c);
    free(text_ids);
    free(res);
    tally_free(&b.tally);
    moe_model_close(m);
    return rc ? 1 : 0;
}
