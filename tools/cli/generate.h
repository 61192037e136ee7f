/* generate.h — the decode loop that `run -p` and `chat` share: sample,
 * evaluate, stream the text as it becomes final, and end at an
 * end-of-generation token, a stop string, the token limit, a full context
 * or an interrupt. */
#ifndef MOE_CLI_GENERATE_H
#define MOE_CLI_GENERATE_H

#include <signal.h>

#include "moe.h"
#include "text/tokenizer.h"

typedef enum gen_end { GEN_LIMIT, GEN_END_TOKEN, GEN_STOP_STRING, GEN_INTERRUPTED, GEN_CONTEXT_FULL } gen_end;

typedef struct generator {
    moe_ctx *ctx;
    moe_sampler *sampler;
    const moe_tokenizer *tok;
    moe_detok_stream *detok;
    int32_t end_tokens[16]; /* tokens that end a reply (EOS, <|im_end|>, ...) */
    int n_end_tokens;
    const char *const *stops;
    int n_stops;
    const volatile sig_atomic_t *interrupted; /* set by a signal handler; may be NULL */
    /* The reply so far (text that is final), and how much of it went out:
     * text that could still become a stop string is held back. */
    char *text;
    size_t text_len, text_cap, emitted;
    /* The reply's tokens, as evaluated into the context. */
    int32_t *ids;
    int n_ids, ids_cap;
    /* Counters for /stats, over the generator's life. */
    long long n_prompt_tokens, n_gen_tokens;
    double prompt_s, gen_s;
} generator;

/* Sets up end tokens (unless ignore_eos), the detokenizer and the text buffer. */
int gen_init(generator *g, moe_ctx *ctx, moe_sampler *sampler, const moe_tokenizer *tok, int ignore_eos,
             const char *const *stops, int n_stops, moe_error *err);
void gen_free(generator *g);

/* Evaluates prompt tokens (after what the context holds), counting their time. */
int gen_prefill(generator *g, const int32_t *tokens, int n, moe_error *err);

/* Generates up to n_max tokens (-1: until the context is full) after what
 * the context holds, whose logits must be current. Final text goes to
 * emit(user, text, len) as it comes; the whole reply stays in g->text. An end
 * token is evaluated into the context (the template closes the turn with it)
 * but not printed; a stop string is neither printed nor kept. */
int gen_reply(generator *g, int n_max, void (*emit)(void *user, const char *text, size_t len), void *user,
              gen_end *end, moe_error *err);

#endif
