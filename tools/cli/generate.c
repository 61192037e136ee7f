/*
 * generate.c — the decode loop shared by `run -p` and `chat`.
 *
 * Stop strings are matched on the decoded text, not on tokens: a stop
 * string can start in the middle of a token and span several. Text whose end
 * could still grow into a stop string is held back until the next token
 * settles it, so a stop string is never half printed.
 */
#include "generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/error.h"

/* Added tokens that close a turn in the families we run, besides the EOS. */
static const char *const END_OF_TURN[] = {"<|im_end|>", "<|eot_id|>", "<|end|>", "<|return|>", "<|call|>",
                                          "<|endoftext|>", "<|end_of_text|>", "</s>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void add_end_token(generator *g, int32_t id) {
    if (id < 0 || g->n_end_tokens == (int)(sizeof g->end_tokens / sizeof *g->end_tokens)) return;
    for (int i = 0; i < g->n_end_tokens; i++)
        if (g->end_tokens[i] == id) return;
    g->end_tokens[g->n_end_tokens++] = id;
}

int gen_init(generator *g, moe_ctx *ctx, moe_sampler *sampler, const moe_tokenizer *tok, int ignore_eos,
             const char *const *stops, int n_stops, moe_error *err) {
    *g = (generator){.ctx = ctx, .sampler = sampler, .tok = tok, .stops = stops, .n_stops = n_stops};
    if (!ignore_eos) {
        add_end_token(g, moe_tokenizer_eos(tok));
        for (size_t i = 0; i < sizeof END_OF_TURN / sizeof *END_OF_TURN; i++) {
            int32_t id = moe_tokenizer_piece_id(tok, END_OF_TURN[i], strlen(END_OF_TURN[i]));
            if (id >= 0 && moe_tokenizer_is_special(tok, id)) add_end_token(g, id);
        }
    }
    if (!(g->detok = moe_detok_stream_new(tok, 1, err))) return -1;
    return 0;
}

void gen_free(generator *g) {
    moe_detok_stream_free(g->detok);
    free(g->text);
    free(g->ids);
    g->detok = NULL;
    g->text = NULL;
    g->ids = NULL;
}

int gen_prefill(generator *g, const int32_t *tokens, int n, moe_error *err) {
    double t0 = now_s();
    for (int i = 0; i < n; i++) moe_sampler_accept(g->sampler, tokens[i]);
    if (n > 0 && moe_eval(g->ctx, tokens, n, NULL, err)) return -1;
    g->prompt_s += now_s() - t0;
    g->n_prompt_tokens += n;
    return 0;
}

static int append_id(generator *g, int32_t id, moe_error *err) {
    if (g->n_ids == g->ids_cap) {
        int cap = 2 * g->ids_cap + 64;
        int32_t *v = realloc(g->ids, (size_t)cap * sizeof *v);
        if (!v) return moe_fail(err, "out of memory");
        g->ids = v;
        g->ids_cap = cap;
    }
    g->ids[g->n_ids++] = id;
    return 0;
}

static int append_text(generator *g, const char *s, size_t n, moe_error *err) {
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = 2 * (g->text_len + n + 1) + 64;
        char *t = realloc(g->text, cap);
        if (!t) return moe_fail(err, "out of memory");
        g->text = t;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, s, n);
    g->text_len += n;
    g->text[g->text_len] = 0;
    return 0;
}

/* Cuts the text at the first complete stop string (returns 1), or returns 0. */
static int cut_at_stop(generator *g) {
    size_t first = g->text_len + 1;
    for (int i = 0; i < g->n_stops; i++) {
        const char *hit = strstr(g->text + g->emitted, g->stops[i]);
        if (hit && (size_t)(hit - g->text) < first) first = (size_t)(hit - g->text);
    }
    if (first > g->text_len) return 0;
    g->text_len = first;
    g->text[first] = 0;
    return 1;
}

/* How many bytes at the end of the text could be the start of a stop string. */
static size_t held_back(const generator *g) {
    size_t hold = 0;
    for (int i = 0; i < g->n_stops; i++) {
        size_t n = strlen(g->stops[i]);
        for (size_t k = n - 1; k > hold; k--)
            if (k <= g->text_len - g->emitted && !memcmp(g->text + g->text_len - k, g->stops[i], k)) {
                hold = k;
                break;
            }
    }
    return hold;
}

static void emit_upto(generator *g, size_t end, void (*emit)(void *, const char *, size_t), void *user) {
    if (end > g->emitted && emit) emit(user, g->text + g->emitted, end - g->emitted);
    if (end > g->emitted) g->emitted = end;
}

static int is_end_token(const generator *g, int32_t id) {
    for (int i = 0; i < g->n_end_tokens; i++)
        if (g->end_tokens[i] == id) return 1;
    return 0;
}

int gen_reply(generator *g, int n_max, void (*emit)(void *user, const char *text, size_t len), void *user,
              gen_end *end, moe_error *err) {
    g->text_len = g->emitted = 0;
    g->n_ids = 0;
    if (append_text(g, "", 0, err)) return -1;
    moe_detok_stream_reset(g->detok);
    const double t0 = now_s();
    const char *piece;
    size_t len;
    int rc = 0, n = 0;
    *end = GEN_LIMIT;
    for (;; n++) {
        if (n_max >= 0 && n >= n_max) break;
        if (g->interrupted && *g->interrupted) { *end = GEN_INTERRUPTED; break; }
        if (moe_ctx_pos(g->ctx) >= moe_ctx_n_ctx(g->ctx)) { *end = GEN_CONTEXT_FULL; break; }
        int32_t id = moe_sampler_sample(g->sampler, moe_ctx_logits(g->ctx));
        moe_sampler_accept(g->sampler, id);
        if ((rc = moe_eval(g->ctx, &id, 1, NULL, err)) || (rc = append_id(g, id, err))) break;
        if (is_end_token(g, id)) { *end = GEN_END_TOKEN; n++; break; }
        if ((rc = moe_detok_stream_feed(g->detok, id, &piece, &len, err)) || (rc = append_text(g, piece, len, err))) break;
        if (cut_at_stop(g)) { *end = GEN_STOP_STRING; n++; break; }
        emit_upto(g, g->text_len - held_back(g), emit, user);
    }
    if (!rc && *end != GEN_STOP_STRING) {
        if (!(rc = moe_detok_stream_finish(g->detok, &piece, &len, err)) && !(rc = append_text(g, piece, len, err)) &&
            cut_at_stop(g))
            *end = GEN_STOP_STRING;
    }
    emit_upto(g, g->text_len, emit, user);
    g->gen_s += now_s() - t0;
    g->n_gen_tokens += n;
    return rc;
}
