/* cli.h — what the moe-cli subcommands share: the parsed options and the
 * few helpers that open a model the same way for every command. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "moe.h"

typedef struct cli_opts {
    const char *model, *tokens, *logits_out, *messages, *prompt, *system, *chat_template, *file;
    const char *stops[8]; /* --stop STR, repeatable */
    int n_stops;
    const char *text;     /* tokenize: the positional TEXT */
    int add_generation_prompt, thinking; /* thinking: -1 unset */
    int pieces, no_special, jsonl, skip_special, verify, tensors, ignore_eos, interactive, no_mmap;
    long long now;        /* render/chat: the template's clock; -1: now */
    int n_predict;        /* run: default 16 tokens; chat: -1, until end of turn */
    int n_threads, n_ctx, n_batch;
    const char *expert_cache; /* --expert-cache SIZE, or NULL */
    const char *cache_policy; /* --cache-policy lru|lfu|stats, or NULL */
    int cache_pin, cache_prefetch;
    const char *trace_experts; /* --trace-experts FILE, or NULL */
    const char *kv_type;       /* --kv-type f16|f32, or NULL (the library's default, f16) */
    moe_sampler_params sampling;
} cli_opts;

int cmd_info(const cli_opts *o);
int cmd_tokenize(const cli_opts *o);
int cmd_detokenize(const cli_opts *o);
int cmd_render(const cli_opts *o);
int cmd_run(const cli_opts *o);
int cmd_chat(const cli_opts *o);
int cmd_perplexity(const cli_opts *o);

/* "1,2,3" into a fresh array; prints why and returns -1 on bad input. */
int cli_parse_tokens(const char *s, int32_t **out, int *n);

/* The model of -m, mapped or with --no-mmap read into memory. */
moe_model *cli_model_open(const cli_opts *o, moe_error *err);

/* A context for m with the options -c (n_ctx, or fallback when 0), -t,
 * --expert-cache and MOE_ISA. */
moe_ctx *cli_ctx_new(const moe_model *m, const cli_opts *o, int n_ctx_fallback, moe_error *err);

/* --trace-experts FILE: opens FILE and has the context write every routing
 * decision to it, one line per token and MoE layer: position, layer, the
 * chosen experts and their weights (tab-separated; lists comma-separated).
 * *out is NULL when the option was not given; the caller closes it after
 * freeing the context. */
int cli_trace_open(moe_ctx *c, const cli_opts *o, FILE **out, moe_error *err);

/* One line of expert-cache counters, when the context has a cache. */
void cli_print_cache_stats(const moe_ctx *c, FILE *f);

/* --chat-template NAME|FILE: *out gets the Jinja source of a built-in
 * template or of the file (the caller frees it), or NULL when the option was
 * not given (the model's own template). */
int cli_chat_template(const cli_opts *o, char **out, moe_error *err);

#endif
