/*
 * template.c — the public face of the chat template interpreter (template.h):
 * parse once into an immutable tree, then render with a fresh arena per call,
 * building the variables transformers.js passes (messages,
 * add_generation_prompt, tools, documents, special tokens) either from C
 * structs or from a JSON object. The pieces: tmpl_lex.c (preprocessing and
 * tokens), tmpl_parse.c (syntax tree), tmpl_eval.c (statements, expressions),
 * tmpl_builtins.c (filters, tests, methods), tmpl_value.c (printing, JSON,
 * equality), tmpl_util.c (memory, UTF-8).
 */
#include "text/template.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "text/tmpl_internal.h"
#include "util/error.h"

#define PARSE_MEMORY_LIMIT ((size_t)256 << 20)
#define RENDER_MEMORY_LIMIT ((size_t)1 << 30)

struct moe_template {
    tm_arena arena; /* owns the tree */
    tm_program *prog;
};

moe_template *moe_template_parse(const char *src, size_t len, moe_error *err) {
    if (!src && len) {
        moe_fail(err, "chat template: no source");
        return NULL;
    }
    if (len > UINT32_MAX / 2) {
        moe_fail(err, "chat template: %zu bytes is too large", len);
        return NULL;
    }
    moe_template *t = calloc(1, sizeof *t);
    if (!t) {
        moe_fail(err, "chat template: out of memory");
        return NULL;
    }
    jmp_buf jb;
    t->arena.fail = &jb;
    t->arena.err = err;
    t->arena.limit = PARSE_MEMORY_LIMIT;
    if (setjmp(jb)) {
        tm_arena_free(&t->arena);
        free(t);
        return NULL;
    }
    tm_token *toks;
    size_t ntoks;
    tm_lex(&t->arena, src ? src : "", len, &toks, &ntoks);
    t->prog = tm_parse(&t->arena, toks, ntoks);
    t->arena.fail = NULL;
    t->arena.err = NULL;
    return t;
}

void moe_template_free(moe_template *t) {
    if (!t) return;
    tm_arena_free(&t->arena);
    free(t);
}

/* Runs the program with the variables in *vars; on success *out is malloc'd. */
static int run(const moe_template *t, tm_arena *a, tm_map *vars, long long now, char **out, size_t *len) {
    tm_render_in in = {.vars = vars, .now = now};
    tm_buf buf = {0};
    tm_eval_program(a, t->prog, &in, &buf);
    char *s = malloc(buf.n + 1);
    if (!s) tm_fail(a, "chat template: out of memory");
    if (buf.n) memcpy(s, buf.p, buf.n);
    s[buf.n] = 0;
    *out = s;
    if (len) *len = buf.n;
    return 0;
}

static tm_value *cstr(tm_arena *a, const char *s) { return s ? tm_v_str(a, s, strlen(s)) : TM_NULL; }

static void set(tm_arena *a, tm_map *m, const char *k, tm_value *v) { tm_map_set(a, m, k, strlen(k), v); }

int moe_template_render(const moe_template *t, const moe_chat_message *msgs, int n,
                        const moe_template_vars *v, char **out, size_t *len, moe_error *err) {
    if (!t || !out || n < 0 || (n > 0 && !msgs)) return moe_fail(err, "chat template: invalid arguments to render");
    *out = NULL;
    if (len) *len = 0;
    tm_arena *a = calloc(1, sizeof *a);
    if (!a) return moe_fail(err, "chat template: out of memory");
    jmp_buf jb;
    a->fail = &jb;
    a->err = err;
    a->limit = RENDER_MEMORY_LIMIT;
    if (setjmp(jb)) {
        tm_arena_free(a);
        free(a);
        return -1;
    }
    tm_map *vars = tm_map_new(a);
    tm_list *list = tm_list_new(a, (size_t)n);
    for (int i = 0; i < n; i++) {
        tm_map *m = tm_map_new(a);
        set(a, m, "role", cstr(a, msgs[i].role));
        set(a, m, "content", cstr(a, msgs[i].content));
        tm_list_push(a, list, tm_v_object(a, m));
    }
    set(a, vars, "messages", tm_v_array(a, list));
    set(a, vars, "add_generation_prompt", v && v->add_generation_prompt ? TM_TRUE : TM_FALSE);
    set(a, vars, "tools", TM_NULL);
    set(a, vars, "documents", TM_NULL);
    if (v && v->bos_token) set(a, vars, "bos_token", cstr(a, v->bos_token));
    if (v && v->eos_token) set(a, vars, "eos_token", cstr(a, v->eos_token));
    if (v && v->enable_thinking >= 0) set(a, vars, "enable_thinking", v->enable_thinking ? TM_TRUE : TM_FALSE);
    run(t, a, vars, v ? v->now_unix : 0, out, len);
    tm_arena_free(a);
    free(a);
    return 0;
}

int moe_template_render_json(const moe_template *t, const char *json, size_t json_len,
                             long long now_unix, char **out, size_t *len, moe_error *err) {
    if (!t || !out || (!json && json_len)) return moe_fail(err, "chat template: invalid arguments to render");
    *out = NULL;
    if (len) *len = 0;
    cJSON *root = cJSON_ParseWithLength(json ? json : "", json_len);
    if (!root) return moe_fail(err, "chat template variables: not valid JSON");
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return moe_fail(err, "chat template variables: expected a JSON object of variables");
    }
    tm_arena *a = calloc(1, sizeof *a);
    if (!a) {
        cJSON_Delete(root);
        return moe_fail(err, "chat template: out of memory");
    }
    jmp_buf jb;
    a->fail = &jb;
    a->err = err;
    a->limit = RENDER_MEMORY_LIMIT;
    if (setjmp(jb)) {
        tm_arena_free(a);
        free(a);
        cJSON_Delete(root);
        return -1;
    }
    tm_value *vars = tm_from_json(a, root);
    run(t, a, vars->map, now_unix, out, len);
    tm_arena_free(a);
    free(a);
    cJSON_Delete(root);
    return 0;
}
