/*
 * perplexity.c — `moe-cli perplexity -m FILE -f TEXT [-c N]`, llama.cpp style.
 *
 * The text is tokenized without special tokens and cut into consecutive,
 * non-overlapping windows of N tokens (default 512, or the model's training
 * context if shorter; a last, shorter window is left out).
 * Each window is evaluated from an empty cache; every token but the first of
 * a window is scored by the log-probability the model gave it after the
 * tokens before it in the window. Perplexity is exp of the mean negative
 * log-likelihood over all scored tokens. This is the definition
 * models/train/eval_ppl.py uses for the PyTorch model, so the two compare.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "text/tokenizer.h"
#include "util/file.h"

/* -log softmax(row)[target], in double. */
static double token_nll(const float *row, int n_vocab, int32_t target) {
    float max = row[0];
    for (int v = 1; v < n_vocab; v++)
        if (row[v] > max) max = row[v];
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)row[v] - max);
    return log(sum) + max - (double)row[target];
}

int cmd_perplexity(const cli_opts *o) {
    if (!o->file) {
        fprintf(stderr, "moe-cli perplexity: -f TEXT is required\n");
        return 2;
    }
    moe_error err = {{0}};
    size_t len = 0;
    char *text = moe_read_file(o->file, &len, &err);
    moe_model *m = text ? cli_model_open(o, &err) : NULL;
    moe_tokenizer *t = m ? moe_model_tokenizer_new(m, &err) : NULL;
    moe_ctx *c = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    int n = 0, rc = 1;
    if (!t || moe_tokenizer_encode(t, text, len, 0, &ids, &n, &err)) goto done;
    /* llama.cpp's 512 by default, but never past the context the model was trained on */
    const int n_train = moe_model_hparams(m)->n_ctx_train, n_ctx = o->n_ctx > 0 ? o->n_ctx : n_train < 512 ? n_train : 512;
    if (n < n_ctx) {
        snprintf(err.msg, sizeof err.msg, "%s: %d tokens, fewer than one window of %d (-c)", o->file, n, n_ctx);
        goto done;
    }
    const int n_vocab = moe_model_hparams(m)->n_vocab, n_windows = n / n_ctx;
    if (!(c = cli_ctx_new(m, o, n_ctx, &err))) goto done;
    if (!(logits = malloc((size_t)n_ctx * (size_t)n_vocab * sizeof *logits))) {
        snprintf(err.msg, sizeof err.msg, "out of memory for %d rows of logits", n_ctx);
        goto done;
    }
    double nll = 0, nll2 = 0;
    long long scored = 0;
    for (int w = 0; w < n_windows; w++) {
        const int32_t *win = ids + (size_t)w * n_ctx;
        moe_ctx_reset(c);
        if (moe_eval(c, win, n_ctx, logits, &err)) goto done;
        for (int i = 1; i < n_ctx; i++) {
            double x = token_nll(logits + (size_t)(i - 1) * n_vocab, n_vocab, win[i]);
            nll += x;
            nll2 += x * x;
            scored++;
        }
        fprintf(stderr, "[%d/%d] %.4f\n", w + 1, n_windows, exp(nll / scored));
    }
    const double mean = nll / scored, sd = sqrt(fmax(nll2 / scored - mean * mean, 0) / (double)(scored - 1));
    /* The uncertainty is that of the mean NLL, carried through exp. */
    printf("perplexity %.4f +/- %.4f, mean nll %.6f over %lld tokens (%d windows of %d; %d tokens in %s)\n", exp(mean),
           exp(mean) * sd, mean, scored, n_windows, n_ctx, n, o->file);
    rc = 0;
done:
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    free(logits);
    free(ids);
    moe_ctx_free(c);
    moe_tokenizer_free(t);
    moe_model_close(m);
    free(text);
    return rc;
}
