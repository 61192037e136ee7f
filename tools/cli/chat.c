/*
 * chat.c — `moe-cli chat`: a conversation with the model.
 *
 * Every turn renders the whole conversation with the chat template and
 * tokenizes it, exactly as the reference frames a conversation; the KV cache
 * keeps what it already holds of that token sequence and only the rest is
 * evaluated. Usually that is just the new user turn, and when a template
 * rewrites earlier turns (Qwen3 drops old thinking) the cache is cut back to
 * where the sequences part, so the result is always what a full prefill of
 * the rendered conversation would give.
 *
 * On a terminal: line editing and history (libedit), a line ending in '\'
 * continues on the next, Ctrl-C stops the reply being generated, and /help
 * lists the commands. With stdin not a terminal, each line is one user
 * message and each reply is printed on stdout followed by a newline; notes
 * and statistics go to stderr, so stdout holds only replies.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <editline/readline.h>

#include "cli.h"
#include "generate.h"
#include "util/error.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct chat {
    const cli_opts *o;
    const moe_model *model;
    moe_ctx *ctx;
    moe_sampler *sampler;
    moe_tokenizer *tok;
    FILE *trace;           /* --trace-experts */
    char *chat_template;   /* --chat-template source, or NULL for the model's */
    generator gen;
    cJSON *messages;       /* the conversation, as the template receives it */
    int32_t *cached;       /* the tokens the KV cache holds, in order */
    int n_cached, cached_cap;
    int tty;
} chat;

static void print_reply_text(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void add_message(chat *ch, const char *role, const char *content) {
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "role", role);
    cJSON_AddStringToObject(msg, "content", content);
    cJSON_AddItemToArray(ch->messages, msg);
}

/* The conversation as the template frames it, ending with the generation prompt. */
static int render_tokens(chat *ch, int32_t **ids, int *n, moe_error *err) {
    char *json = cJSON_PrintUnformatted(ch->messages), *text = NULL;
    size_t len = 0;
    int rc = !json ? moe_fail(err, "out of memory")
                   : moe_chat_render(ch->model, ch->chat_template, json, strlen(json), 1, ch->o->thinking,
                                     ch->o->now >= 0 ? ch->o->now : (long long)time(NULL), &text, &len, err);
    /* The template writes BOS and the other special tokens itself. */
    if (!rc) rc = moe_tokenizer_encode(ch->tok, text, len, 0, ids, n, err);
    free(text);
    free(json);
    return rc;
}

static int remember_tokens(chat *ch, const int32_t *ids, int n, moe_error *err) {
    if (ch->n_cached + n > ch->cached_cap) {
        int cap = 2 * (ch->n_cached + n) + 256;
        int32_t *v = realloc(ch->cached, (size_t)cap * sizeof *v);
        if (!v) return moe_fail(err, "out of memory");
        ch->cached = v;
        ch->cached_cap = cap;
    }
    memcpy(ch->cached + ch->n_cached, ids, (size_t)n * sizeof *ids);
    ch->n_cached += n;
    return 0;
}

static void clear_conversation(chat *ch) {
    while (cJSON_GetArraySize(ch->messages) > (ch->o->system ? 1 : 0))
        cJSON_DeleteItemFromArray(ch->messages, cJSON_GetArraySize(ch->messages) - 1);
    moe_ctx_reset(ch->ctx);
    ch->n_cached = 0;
}

/* Drops the oldest turn after the system prompt; 0 when nothing but the
 * system prompt and the newest message is left. */
static int drop_oldest_turn(chat *ch) {
    const int first = ch->o->system ? 1 : 0;
    if (cJSON_GetArraySize(ch->messages) - first <= 1) return 0;
    cJSON_DeleteItemFromArray(ch->messages, first);
    /* A conversation restarts with a user message. */
    while (cJSON_GetArraySize(ch->messages) - first > 1) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ch->messages, first), "role");
        if (cJSON_IsString(role) && !strcmp(role->valuestring, "user")) break;
        cJSON_DeleteItemFromArray(ch->messages, first);
    }
    return 1;
}

static char *read_line(const chat *ch, const char *prompt) {
    if (ch->tty) return readline(prompt);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
    if (n > 0 && line[n - 1] == '\r') line[--n] = 0;
    return line;
}

/* One user message: on a terminal, lines ending in '\' continue it. */
static char *read_message(chat *ch) {
    char *msg = read_line(ch, "> ");
    while (msg && ch->tty) {
        size_t n = strlen(msg);
        if (!n || msg[n - 1] != '\\') break;
        char *more = read_line(ch, ". ");
        if (!more) break;
        char *joined = malloc(n + strlen(more) + 1);
        if (!joined) { free(more); break; }
        memcpy(joined, msg, n - 1);
        joined[n - 1] = '\n';
        strcpy(joined + n, more);
        free(msg);
        free(more);
        msg = joined;
    }
    if (msg && ch->tty && *msg) add_history(msg);
    return msg;
}

static void print_stats(const chat *ch) {
    const generator *g = &ch->gen;
    fprintf(stderr, "context: %d of %d positions used (KV cache %s, %.1f MiB)\n", moe_ctx_pos(ch->ctx),
            moe_ctx_n_ctx(ch->ctx), moe_ctx_kv_type(ch->ctx), moe_ctx_kv_bytes(ch->ctx) / 1048576.0);
    fprintf(stderr, "prompt:  %lld tokens evaluated in %.2f s (%.1f t/s)\n", g->n_prompt_tokens, g->prompt_s,
            g->prompt_s > 0 ? g->n_prompt_tokens / g->prompt_s : 0.0);
    fprintf(stderr, "replies: %lld tokens generated in %.2f s (%.1f t/s)\n", g->n_gen_tokens, g->gen_s,
            g->gen_s > 0 ? g->n_gen_tokens / g->gen_s : 0.0);
    cli_print_cache_stats(ch->ctx, stderr);
}

typedef enum { FIT_OK, FIT_DROPPED, FIT_ABORT } fit_result;

/* Makes the rendered conversation fit with room for a reply: the user
 * chooses on a terminal, a script gets the oldest turns dropped. */
static fit_result fit_context(chat *ch, int32_t **ids, int *n, moe_error *err, int *failed) {
    const int n_ctx = moe_ctx_n_ctx(ch->ctx);
    const int reserve = ch->o->n_predict > 0 && ch->o->n_predict < n_ctx / 2 ? ch->o->n_predict : n_ctx / 8;
    fit_result result = FIT_OK;
    int asked = 0;
    while (*n + reserve > n_ctx) {
        if (ch->tty && !asked) {
            fprintf(stderr, "\n[context full: the conversation is %d tokens and the context holds %d.]\n", *n, n_ctx);
            char *answer = readline("[c]lear the conversation, [k]eep the system prompt and the last turns, or [a]bort "
                                    "this message? ");
            char choice = answer && *answer ? answer[0] : 'a';
            free(answer);
            asked = 1;
            if (choice == 'c') {
                cJSON *last = cJSON_DetachItemFromArray(ch->messages, cJSON_GetArraySize(ch->messages) - 1);
                clear_conversation(ch);
                cJSON_AddItemToArray(ch->messages, last);
                fprintf(stderr, "[conversation cleared]\n");
            } else if (choice != 'k') {
                cJSON_DeleteItemFromArray(ch->messages, cJSON_GetArraySize(ch->messages) - 1);
                return FIT_ABORT;
            }
        } else if (!drop_oldest_turn(ch)) {
            fprintf(stderr, "[the message alone is %d tokens: it does not fit a context of %d with room for a reply]\n",
                    *n, n_ctx);
            cJSON_DeleteItemFromArray(ch->messages, cJSON_GetArraySize(ch->messages) - 1);
            return FIT_ABORT;
        }
        result = FIT_DROPPED;
        free(*ids);
        *ids = NULL;
        if (render_tokens(ch, ids, n, err)) {
            *failed = 1;
            return FIT_ABORT;
        }
    }
    if (result == FIT_DROPPED && !ch->tty)
        fprintf(stderr, "[context full: dropped the oldest turns; %d turns kept]\n", cJSON_GetArraySize(ch->messages));
    return result;
}

/* One user message in, one reply out. */
static int take_turn(chat *ch, const char *message, moe_error *err) {
    add_message(ch, "user", message);
    int32_t *ids = NULL;
    int n = 0, failed = 0;
    if (render_tokens(ch, &ids, &n, err)) {
        cJSON_DeleteItemFromArray(ch->messages, cJSON_GetArraySize(ch->messages) - 1);
        return -1;
    }
    if (fit_context(ch, &ids, &n, err, &failed) == FIT_ABORT) {
        free(ids);
        return failed ? -1 : 0;
    }
    int keep = 0;
    while (keep < n && keep < ch->n_cached && ids[keep] == ch->cached[keep]) keep++;
    if (keep == n) keep--; /* the last prompt token is evaluated again for fresh logits */
    moe_ctx_truncate(ch->ctx, keep);
    ch->n_cached = keep;
    moe_sampler_reset(ch->sampler);
    for (int i = 0; i < keep; i++) moe_sampler_accept(ch->sampler, ids[i]);
    int rc = gen_prefill(&ch->gen, ids + keep, n - keep, err) || remember_tokens(ch, ids + keep, n - keep, err);
    free(ids);
    if (rc) return -1;
    gen_end end;
    interrupted = 0;
    rc = gen_reply(&ch->gen, ch->o->n_predict, print_reply_text, NULL, &end, err);
    interrupted = 0;
    if (rc || remember_tokens(ch, ch->gen.ids, ch->gen.n_ids, err)) return -1;
    printf("\n");
    fflush(stdout);
    if (end == GEN_INTERRUPTED) fprintf(stderr, "[interrupted]\n");
    if (end == GEN_CONTEXT_FULL) fprintf(stderr, "[context full: the reply was cut; the next message makes room]\n");
    add_message(ch, "assistant", ch->gen.text);
    return 0;
}

static int handle_command(chat *ch, const char *line) {
    if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) return 1;
    if (!strcmp(line, "/reset")) {
        clear_conversation(ch);
        ch->gen.n_prompt_tokens = ch->gen.n_gen_tokens = 0;
        ch->gen.prompt_s = ch->gen.gen_s = 0;
        fprintf(stderr, "[conversation cleared]\n");
    } else if (!strcmp(line, "/stats")) {
        print_stats(ch);
    } else {
        if (strcmp(line, "/help")) fprintf(stderr, "unknown command %s\n", line);
        fprintf(stderr, "/reset  forget the conversation (the system prompt stays)\n"
                        "/stats  context use, prompt and generation speed, expert cache\n"
                        "/exit   quit (also Ctrl-D); Ctrl-C stops a reply\n"
                        "a line ending in \\ continues on the next\n");
    }
    return 0;
}

static int chat_loop(chat *ch, moe_error *err) {
    if (ch->tty)
        fprintf(stderr, "moe chat: %s. /help lists the commands, Ctrl-C stops a reply, Ctrl-D or /exit quits.\n",
                ch->o->model);
    for (;;) {
        interrupted = 0;
        char *line = read_message(ch);
        if (!line) {
            if (ch->tty && interrupted) { /* Ctrl-C at the prompt */
                fprintf(stderr, "\n");
                continue;
            }
            break;
        }
        int rc = 0;
        if (line[0] == '/') rc = handle_command(ch, line);
        else if (*line && take_turn(ch, line, err)) rc = -1;
        free(line);
        if (rc) return rc < 0 ? -1 : 0;
    }
    if (ch->tty) fprintf(stderr, "\n");
    return 0;
}

int cmd_chat(const cli_opts *o) {
    moe_error err = {{0}};
    chat ch = {.o = o, .tty = o->interactive || isatty(STDIN_FILENO)};
    moe_model *m = cli_model_open(o, &err);
    int rc = 1;
    ch.model = m;
    if (!m || !(ch.tok = moe_model_tokenizer_new(m, &err)) || cli_chat_template(o, &ch.chat_template, &err) ||
        !(ch.ctx = cli_ctx_new(m, o, 0, &err)) ||
        !(ch.sampler = moe_sampler_new(o->sampling, moe_model_hparams(m)->n_vocab, &err)) ||
        cli_trace_open(ch.ctx, o, &ch.trace, &err) ||
        gen_init(&ch.gen, ch.ctx, ch.sampler, ch.tok, o->ignore_eos, o->stops, o->n_stops, &err))
        goto done;
    ch.gen.interrupted = &interrupted;
    ch.messages = cJSON_CreateArray();
    if (o->system) add_message(&ch, "system", o->system);
    /* Check the template once before the first message is typed. */
    char *probe = NULL;
    size_t probe_len = 0;
    static const char probe_json[] = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    if (moe_chat_render(m, ch.chat_template, probe_json, sizeof probe_json - 1, 1, o->thinking, 0, &probe, &probe_len,
                        &err)) {
        snprintf(err.msg + strlen(err.msg), sizeof err.msg - strlen(err.msg),
                 " (--chat-template chatml|mistral|FILE chooses another)");
        goto done;
    }
    free(probe);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: Ctrl-C returns from a blocked read */
    if (ch.tty) rl_catch_signals = 0;
    rc = chat_loop(&ch, &err) ? 1 : 0;
done:
    if (rc) fprintf(stderr, "moe-cli: %s\n", err.msg);
    cJSON_Delete(ch.messages);
    gen_free(&ch.gen);
    free(ch.cached);
    free(ch.chat_template);
    moe_sampler_free(ch.sampler);
    moe_ctx_free(ch.ctx);
    moe_tokenizer_free(ch.tok);
    moe_model_close(m);
    if (ch.trace) fclose(ch.trace);
    return rc;
}
