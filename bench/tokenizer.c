/*
 * moe-bench-tokenizer — how fast the model's tokenizer encodes and decodes.
 *
 *   moe-bench-tokenizer -m FILE -f TEXT [-r REPS] [-o md|json]
 *
 * Encodes the whole TEXT file (no special tokens added) REPS times and
 * decodes the ids back, and reports MB/s and tokens/s as mean ± sd. The
 * point of comparison is prefill: moe-bench's pp t/s for the same model. A
 * tokenizer that encodes many thousand times faster than the model prefills
 * is never the bottleneck.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moe.h"
#include "text/tokenizer.h"
#include "util/file.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) s2 += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *format = "md";
    int reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) model = argv[i + 1];
        else if (!strcmp(argv[i], "-f")) file = argv[i + 1];
        else if (!strcmp(argv[i], "-o")) format = argv[i + 1];
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else break;
    }
    if (!model || !file || reps < 1 || reps > 1000 || (strcmp(format, "md") && strcmp(format, "json")) || argc % 2 == 0) {
        fprintf(stderr, "usage: moe-bench-tokenizer -m FILE -f TEXT [-r REPS (5)] [-o md|json]\n");
        return 2;
    }
    moe_error err = {{0}};
    size_t len = 0;
    char *text = moe_read_file(file, &len, &err);
    moe_model *m = text ? moe_model_open(model, &err) : NULL;
    moe_tokenizer *t = m ? moe_model_tokenizer_new(m, &err) : NULL;
    double *enc = calloc((size_t)reps, sizeof *enc), *dec = calloc((size_t)reps, sizeof *dec);
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    if (!t) goto done;
    for (int r = 0; r < reps; r++) {
        free(ids);
        ids = NULL;
        double t0 = now();
        if (moe_tokenizer_encode(t, text, len, 0, &ids, &n, &err)) goto done;
        double t1 = now();
        char *out = NULL;
        size_t out_len = 0;
        if (moe_tokenizer_decode(t, ids, n, 0, &out, &out_len, &err)) goto done;
        double t2 = now();
        free(out);
        enc[r] = t1 - t0;
        dec[r] = t2 - t1;
    }
    double em, es, dm, ds;
    for (int r = 0; r < reps; r++) enc[r] = len / enc[r] / 1e6, dec[r] = len / dec[r] / 1e6;
    mean_sd(enc, reps, &em, &es);
    mean_sd(dec, reps, &dm, &ds);
    const double tok_per_mb = n / (len / 1e6);
    if (!strcmp(format, "json")) {
        printf("{\"model\": \"%s\", \"text\": \"%s\", \"bytes\": %zu, \"tokens\": %d, \"encode_mbs\": %.3f, "
               "\"encode_mbs_sd\": %.3f, \"encode_tps\": %.0f, \"decode_mbs\": %.3f, \"decode_mbs_sd\": %.3f}\n",
               model, file, len, n, em, es, em * tok_per_mb, dm, ds);
    } else {
        printf("| model | text | bytes | tokens | encode MB/s | encode tokens/s | decode MB/s |\n");
        printf("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        printf("| %s | %s | %zu | %d | %.2f ± %.2f | %.0f | %.2f ± %.2f |\n", model, file, len, n, em, es,
               em * tok_per_mb, dm, ds);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "moe-bench-tokenizer: %s\n", err.msg);
    free(enc);
    free(dec);
    free(ids);
    moe_tokenizer_free(t);
    moe_model_close(m);
    free(text);
    return rc;
}
