/*
 * run.c — `moe-cli run`: one-shot generation.
 *
 * With --tokens the prompt and the output are token ids (the scripted,
 * tokenizer-free interface the tests use); with -p TEXT the prompt is
 * tokenized as the reference does with add_special_tokens (BOS where the
 * tokenizer's config asks for it), and the generated text streams to stdout
 * until -n tokens, the end-of-sequence token (unless --ignore-eos) or a
 * --stop string.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"

static void print_text(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static const char *const END_NAMES[] = {"length limit", "end of sequence", "stop string", "interrupted", "context full"};

static int run_text(const cli_opts *o, const moe_model *m, moe_ctx **cp, moe_sampler **sp, FILE **trace,
                    moe_error *err) {
    moe_tokenizer *t = moe_model_tokenizer_new(m, err);
    int32_t *ids = NULL;
    int n = 0, rc = -1;
    generator g = {0};
    if (!t || moe_tokenizer_encode(t, o->prompt, strlen(o->prompt), 1, &ids, &n, err)) goto done;
    if (n == 0) {
        snprintf(err->msg, sizeof err->msg, "-p: the prompt has no tokens");
        goto done;
    }
    if (!(*cp = cli_ctx_new(m, o, n + o->n_predict, err)) ||
        !(*sp = moe_sampler_new(o->sampling, moe_model_hparams(m)->n_vocab, err)) || cli_trace_open(*cp, o, trace, err) ||
        gen_init(&g, *cp, *sp, t, o->ignore_eos, o->stops, o->n_stops, err) || gen_prefill(&g, ids, n, err))
        goto done;
    gen_end end;
    if (gen_reply(&g, o->n_predict, print_text, NULL, &end, err)) goto done;
    printf("\n");
    fprintf(stderr, "\n[%lld prompt tokens in %.2f s (%.1f t/s), %lld generated in %.2f s (%.1f t/s); %s]\n",
            g.n_prompt_tokens, g.prompt_s, g.n_prompt_tokens / (g.prompt_s > 0 ? g.prompt_s : 1e-9), g.n_gen_tokens,
            g.gen_s, g.n_gen_tokens / (g.gen_s > 0 ? g.gen_s : 1e-9), END_NAMES[end]);
    rc = 0;
done:
    gen_free(&g);
    free(ids);
    moe_tokenizer_free(t);
    return rc;
}

/* Token ids in, token ids (and optionally every row of logits) out. */
static int run_tokens(const cli_opts *o, const moe_model *m, moe_ctx **cp, moe_sampler **sp, FILE **trace,
                      moe_error *err) {
    int32_t *prompt = NULL;
    int n_prompt = 0, rc = -1;
    float *logits = NULL;
    FILE *lf = NULL;
    char *tmp = NULL;
    if (cli_parse_tokens(o->tokens, &prompt, &n_prompt)) return 2;
    if (n_prompt == 0) {
        free(prompt);
        snprintf(err->msg, sizeof err->msg, "--tokens is empty");
        return -1;
    }
    const int V = moe_model_hparams(m)->n_vocab;
    moe_ctx *c = *cp = cli_ctx_new(m, o, n_prompt + o->n_predict, err);
    moe_sampler *smp = *sp = c ? moe_sampler_new(o->sampling, V, err) : NULL;
    if (!smp || cli_trace_open(c, o, trace, err)) goto done;
    for (int i = 0; i < n_prompt; i++) moe_sampler_accept(smp, prompt[i]);
    if (!(logits = malloc((size_t)n_prompt * (size_t)V * sizeof(float)))) {
        snprintf(err->msg, sizeof err->msg, "out of memory for %d rows of logits", n_prompt);
        goto done;
    }
    if (o->logits_out) {
        size_t n = strlen(o->logits_out) + 8;
        if ((tmp = malloc(n))) snprintf(tmp, n, "%s.tmp", o->logits_out);
        if (!tmp || !(lf = fopen(tmp, "wb"))) {
            snprintf(err->msg, sizeof err->msg, "%s: cannot create: %s", o->logits_out, strerror(errno));
            goto done;
        }
    }
    if (moe_eval(c, prompt, n_prompt, lf ? logits : NULL, err)) goto done;
    if (lf && fwrite(logits, sizeof(float), (size_t)n_prompt * V, lf) != (size_t)n_prompt * V) goto write_fail;
    for (int i = 0; i < o->n_predict; i++) {
        int32_t tok = moe_sampler_sample(smp, moe_ctx_logits(c));
        moe_sampler_accept(smp, tok);
        if (moe_eval(c, &tok, 1, NULL, err)) goto done;
        printf("%s%d", i ? "," : "", tok);
        if (lf && fwrite(moe_ctx_logits(c), sizeof(float), (size_t)V, lf) != (size_t)V) goto write_fail;
    }
    printf("\n");
    if (lf) {
        int bad = fclose(lf);
        lf = NULL;
        if (bad || rename(tmp, o->logits_out)) goto write_fail;
    }
    rc = 0;
    goto done;
write_fail:
    snprintf(err->msg, sizeof err->msg, "%s: write failed: %s", o->logits_out, strerror(errno));
done:
    if (lf) fclose(lf);
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(logits);
    free(prompt);
    return rc;
}

int cmd_run(const cli_opts *o) {
    if (!o->tokens == !o->prompt) {
        fprintf(stderr, "moe-cli run: give the prompt as -p TEXT or as --tokens ID,ID,... (one of them)\n");
        return 2;
    }
    if (o->prompt && o->logits_out) {
        fprintf(stderr, "moe-cli run: --logits-out goes with --tokens\n");
        return 2;
    }
    moe_error err = {{0}};
    moe_ctx *c = NULL;
    moe_sampler *smp = NULL;
    FILE *trace = NULL;
    moe_model *m = cli_model_open(o, &err);
    int rc = !m ? -1 : o->prompt ? run_text(o, m, &c, &smp, &trace, &err) : run_tokens(o, m, &c, &smp, &trace, &err);
    if (rc == 0 && c) cli_print_cache_stats(c, stderr);
    if (rc < 0) fprintf(stderr, "moe-cli: %s\n", err.msg);
    moe_sampler_free(smp);
    moe_ctx_free(c);
    moe_model_close(m);
    if (trace && fclose(trace) && rc == 0) {
        fprintf(stderr, "moe-cli: --trace-experts %s: write failed\n", o->trace_experts);
        rc = -1;
    }
    return rc < 0 ? 1 : rc;
}
