/*
 * moe-bench — prefill and decode speed, llama-bench style, measured against
 * the machine's own memory bandwidth.
 *
 *   moe-bench -m FILE | --synthetic NAME [--quant Q] [--layers N]
 *             [-p 512] [-n 128] [-t THREADS] [-r REPS] [-o md|json|csv] [--membw]
 *
 * pp<P>: one prompt of P tokens evaluated as a batch. tg<N>: N tokens decoded
 * one at a time from an empty context. Each test runs once to warm up (page
 * the weights in), then REPS times; t/s is reported as mean and standard
 * deviation. For decode, bytes_per_token is the weights a token reads plus
 * the KV cache it reads on average, and bw_fraction is that times t/s over
 * the measured read bandwidth.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "membw.h"
#include "util/size.h"
#include "moe.h"
#include "synthetic.h"

#define MAX_REPS 100

typedef struct opts {
    const char *model, *synthetic, *output, *quant, *cache_dir, *expert_cache;
    int n_prompt, n_gen, n_threads, reps, layers, membw;
} opts;

typedef struct result {
    const char *test;      /* "pp" or "tg" */
    int n_prompt, n_gen;
    double samples_ts[MAX_REPS], samples_ns[MAX_REPS];
    int n;
    double avg_ts, sd_ts, avg_ns, sd_ns;
    double bytes_per_token, bw_fraction; /* tg only; <0 when not applicable */
    int has_cache;
    double cache_hit_rate, bytes_read_per_token; /* with --expert-cache */
} result;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
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

/* One timed run of a test; returns seconds or <0 with err. */
static double run_once(moe_ctx *c, const moe_hparams *hp, int pp, int n, int32_t *tokens, moe_error *err) {
    moe_ctx_reset(c);
    const double t0 = now();
    if (pp) {
        if (moe_eval(c, tokens, n, NULL, err)) return -1;
    } else {
        int32_t tok = hp->bos_id >= 0 ? hp->bos_id : 1;
        for (int i = 0; i < n; i++) {
            if (moe_eval(c, &tok, 1, NULL, err)) return -1;
            const float *l = moe_ctx_logits(c);
            int best = 0;
            for (int v = 1; v < hp->n_vocab; v++) best = l[v] > l[best] ? v : best;
            tok = best;
        }
    }
    return now() - t0;
}

static int run_test(moe_ctx *c, const moe_hparams *hp, result *r, int pp, int n, int reps, moe_error *err) {
    int32_t *tokens = malloc((size_t)n * sizeof *tokens);
    if (!tokens) return -1;
    uint64_t s = 42;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)hp->n_vocab);
    }
    int rc = 0;
    if (run_once(c, hp, pp, n, tokens, err) < 0) rc = -1; /* warm-up: pages in the weights */
    moe_cache_stats before, after;
    r->has_cache = !moe_ctx_cache_stats(c, &before);
    for (int i = 0; i < reps && !rc; i++) {
        double dt = run_once(c, hp, pp, n, tokens, err);
        if (dt < 0) rc = -1;
        else {
            r->samples_ns[r->n] = dt * 1e9;
            r->samples_ts[r->n++] = n / dt;
        }
    }
    free(tokens);
    if (r->has_cache && !moe_ctx_cache_stats(c, &after)) {
        const double lookups = (double)(after.hits + after.misses + after.bypasses - before.hits - before.misses - before.bypasses);
        r->cache_hit_rate = lookups > 0 ? (double)(after.hits - before.hits) / lookups : 0;
        r->bytes_read_per_token = (double)(after.bytes_read - before.bytes_read) / ((double)n * (r->n ? r->n : 1));
    }
    if (!rc) stats(r);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: moe-bench (-m FILE | --synthetic NAME [--quant Q] [--layers N]) [-p 512] [-n 128]\n"
            "                 [-t THREADS] [-r REPS] [-o md|json|csv] [--membw] [--cache-dir DIR]\n"
            "  --synthetic NAME  random weights with a real model's shapes: %s\n"
            "  --quant Q         q4, q8, f16, bf16, f32 for every matrix (default: the default recipe)\n"
            "  --membw           measure the read bandwidth only (always measured for tg)\n"
            "  --expert-cache S  routed experts from an LRU cache of S bytes (6G, 512M, 25%%)\n"
            "  MOE_ISA=scalar|avx2|neon forces the kernels.\n",
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

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.n_prompt = 512, .n_gen = 128, .reps = 5, .output = "md"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--membw")) { o->membw = 1; takes = 0; }
        else if (!v) { fprintf(stderr, "moe-bench: %s needs a value\n", a); return -1; }
        else if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "--synthetic")) o->synthetic = v;
        else if (!strcmp(a, "--quant")) o->quant = v;
        else if (!strcmp(a, "--cache-dir")) o->cache_dir = v;
        else if (!strcmp(a, "--expert-cache")) o->expert_cache = v;
        else if (!strcmp(a, "-o")) o->output = v;
        else if (!strcmp(a, "-p")) rc = int_opt(a, v, &o->n_prompt);
        else if (!strcmp(a, "-n")) rc = int_opt(a, v, &o->n_gen);
        else if (!strcmp(a, "-t")) rc = int_opt(a, v, &o->n_threads);
        else if (!strcmp(a, "-r")) rc = int_opt(a, v, &o->reps);
        else if (!strcmp(a, "--layers")) rc = int_opt(a, v, &o->layers);
        else { fprintf(stderr, "moe-bench: unknown option %s\n", a); usage(stderr); return -1; }
        if (rc) return -1;
        i += takes;
    }
    if (strcmp(o->output, "md") && strcmp(o->output, "json") && strcmp(o->output, "csv")) {
        fprintf(stderr, "moe-bench: -o %s: expected md, json or csv\n", o->output);
        return -1;
    }
    if (o->reps < 1 || o->reps > MAX_REPS) {
        fprintf(stderr, "moe-bench: -r must be in [1, %d]\n", MAX_REPS);
        return -1;
    }
    if (!o->membw && !o->model == !o->synthetic) {
        fprintf(stderr, "moe-bench: give exactly one of -m FILE and --synthetic NAME\n");
        return -1;
    }
    return 0;
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
    snprintf(path, n, "%s/synthetic-v1-%s-%s-L%d.moe", dir, o->synthetic, o->quant ? o->quant : "default", hp.n_layers);
    if (access(path, R_OK) == 0) return 0;
    fprintf(stderr, "moe-bench: writing synthetic %s (%d layers, %s) to %s\n", o->synthetic, hp.n_layers,
            o->quant ? o->quant : "default recipe", path);
    return moe_synthetic_write(path, &hp, &recipe, o->synthetic, err);
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
        printf("cpu: %s | isa: %s | threads: %d | read bandwidth: %.1f GB/s | rss: %.2f GiB\n", cpu, isa, threads,
               membw, rss / 1073741824.0);
        printf("model: %s (%s) | recipe: %s\n\n", path, hp->architecture, recipe ? recipe : "?");
        printf("| model | size | params | active | threads | test | t/s | GB/s | bw %% |\n");
        printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            char test[32], gbs[32] = "", frac[32] = "";
            snprintf(test, sizeof test, "%s%d", r->test, r->n_prompt + r->n_gen);
            if (r->bw_fraction >= 0) {
                snprintf(gbs, sizeof gbs, "%.1f", r->bytes_per_token * r->avg_ts / 1e9);
                snprintf(frac, sizeof frac, "%.0f%%", 100 * r->bw_fraction);
            }
            printf("| %s | %.2f GiB | %.2f B | %.2f B | %d | %s | %.2f ± %.2f | %s | %s |\n", hp->architecture,
                   size_gib, total / 1e9, active / 1e9, threads, test, r->avg_ts, r->sd_ts, gbs, frac);
        }
        for (int i = 0; i < n_res; i++)
            if (res[i].has_cache)
                printf("\n%s%d expert cache: hit rate %.1f%%, %.2f MiB read from the file per token\n", res[i].test,
                       res[i].n_prompt + res[i].n_gen, 100 * res[i].cache_hit_rate, res[i].bytes_read_per_token / 1048576.0);
    } else if (!strcmp(o->output, "csv")) {
        printf("model_filename,model_type,model_size,model_n_params,cpu_info,isa,n_threads,n_prompt,n_gen,avg_ns,"
               "stddev_ns,avg_ts,stddev_ts,membw_gbs,bytes_per_token,bw_fraction,rss_bytes\n");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            printf("\"%s\",\"%s\",%llu,%llu,\"%s\",%s,%d,%d,%d,%.0f,%.0f,%.4f,%.4f,%.2f,%.0f,%.4f,%ld\n", path,
                   hp->architecture, (unsigned long long)moe_model_file_size(m), (unsigned long long)total, cpu, isa,
                   threads, r->n_prompt, r->n_gen, r->avg_ns, r->sd_ns, r->avg_ts, r->sd_ts, membw,
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
            printf("\"n_threads\": %d, \"n_prompt\": %d, \"n_gen\": %d, ", threads, r->n_prompt, r->n_gen);
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
            if (r->has_cache)
                printf("\"cache_hit_rate\": %.6f, \"bytes_read_per_token\": %.0f, ", r->cache_hit_rate, r->bytes_read_per_token);
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
    const double membw = moe_measure_read_bandwidth((size_t)1 << 30, threads, 5);
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
    moe_model *m = moe_model_open(path, &err);
    if (!m) {
        fprintf(stderr, "moe-bench: %s\n", err.msg);
        return 1;
    }
    const moe_hparams *hp = moe_model_hparams(m);
    const int n_ctx = (o.n_prompt > o.n_gen ? o.n_prompt : o.n_gen) + 1;
    const int n_batch = o.n_prompt > 0 ? o.n_prompt : 1;
    uint64_t cache_bytes = 0;
    if (o.expert_cache && moe_parse_size(o.expert_cache, moe_model_routed_expert_bytes(m), &cache_bytes)) {
        fprintf(stderr, "moe-bench: --expert-cache %s: expected a size like 6G, 512M or 25%%\n", o.expert_cache);
        moe_model_close(m);
        return 2;
    }
    moe_ctx *c = moe_ctx_new(m, (moe_ctx_params){.n_ctx = n_ctx, .n_batch = n_batch, .n_threads = threads,
                                                  .isa = getenv("MOE_ISA"), .expert_cache_bytes = cache_bytes}, &err);
    if (!c) {
        fprintf(stderr, "moe-bench: %s\n", err.msg);
        moe_model_close(m);
        return 1;
    }
    result res[2];
    int n_res = 0, rc = 0;
    if (o.n_prompt > 0) {
        result *r = &res[n_res++];
        *r = (result){.test = "pp", .n_prompt = o.n_prompt, .bw_fraction = -1};
        rc = run_test(c, hp, r, 1, o.n_prompt, o.reps, &err);
    }
    if (!rc && o.n_gen > 0) {
        result *r = &res[n_res++];
        *r = (result){.test = "tg", .n_gen = o.n_gen};
        rc = run_test(c, hp, r, 0, o.n_gen, o.reps, &err);
        /* on average a decoded token attends over n_gen / 2 earlier positions */
        const double kv = 2.0 * hp->n_layers * hp->n_kv_heads * hp->head_dim * sizeof(float) * (o.n_gen + 1) / 2.0;
        r->bytes_per_token = (double)moe_model_bytes_per_token(m) + kv;
        r->bw_fraction = membw > 0 ? r->bytes_per_token * r->avg_ts / (membw * 1e9) : 0;
    }
    if (rc) fprintf(stderr, "moe-bench: %s\n", err.msg);
    else output(&o, path, cpu, moe_ctx_isa(c), threads, membw, m, res, n_res);
    moe_ctx_free(c);
    moe_model_close(m);
    return rc ? 1 : 0;
}
