/*
 * test_template.c — chat templates against the reference. Renders every case
 * of tests/text/templates/golden/ (real model templates x conversations,
 * and small feature templates), each written by gen_golden.mjs with
 * @huggingface/jinja, and requires the same bytes, or the same failure. Cases
 * whose messages are plain {role, content} go through both entry points
 * (moe_template_render and moe_template_render_json). Then a few checks of
 * what the reference cannot tell: error positions, limits, reuse.
 *
 *   test_template TEMPLATES_DIR      (tests/text/templates, with node_modules)
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/template.h"

static int passed, failed;

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        if (k == 0) break;
        n += k;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* chat_template of a tokenizer_config.json (a string, or a list of {name, template}) or a .jinja file */
static char *load_template(const char *dir, const char *source) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, source);
    size_t n;
    char *text = read_file(path, &n);
    if (!text) return NULL;
    size_t sl = strlen(source);
    if (sl > 6 && strcmp(source + sl - 6, ".jinja") == 0) return text;
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    if (!cfg) return NULL;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    char *out = NULL;
    if (cJSON_IsString(ct)) {
        out = strdup(ct->valuestring);
    } else if (cJSON_IsArray(ct)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, ct) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(tpl))
                out = strdup(tpl->valuestring);
        }
    }
    cJSON_Delete(cfg);
    return out;
}

static void put_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c < 0x20) printf("\\x%02x", c);
        else putchar(c);
    }
}

/* the first difference, with the text around it */
static void show_diff(const char *exp, size_t en, const char *got, size_t gn) {
    size_t i = 0;
    while (i < en && i < gn && exp[i] == got[i]) i++;
    int line = 1, col = 1;
    for (size_t k = 0; k < i; k++) {
        if (exp[k] == '\n') { line++; col = 1; }
        else col++;
    }
    size_t from = i > 60 ? i - 60 : 0;
    printf("    first difference at byte %zu (line %d, column %d of the expected text; %zu vs %zu bytes)\n",
           i, line, col, en, gn);
    printf("    - expected: ");
    put_escaped(exp + from, i - from);
    printf(" >>>");
    put_escaped(exp + i, en - i < 60 ? en - i : 60);
    printf("\n    + got:      ");
    put_escaped(got + from, i - from);
    printf(" >>>");
    put_escaped(got + i, gn - i < 60 ? gn - i : 60);
    printf("\n");
}

static int is_syntax_error(const char *m) {
    return !strncmp(m, "Parser Error", 12) || !strncmp(m, "Unexpected", 10) || !strncmp(m, "Unknown statement", 17) ||
           !strncmp(m, "Expected", 8) || strstr(m, "Missing end of comment");
}

/* compares one result with the case's expected output or error */
static int check(const char *label, const cJSON *cs, int rc, const char *out, size_t len, const moe_error *err) {
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(cs, "output");
    const cJSON *want_err = cJSON_GetObjectItemCaseSensitive(cs, "error");
    if (cJSON_IsString(want)) {
        size_t wn = strlen(want->valuestring);
        if (rc != 0) {
            printf("FAIL %s: expected output, got error: %s\n", label, err->msg);
            return 0;
        }
        if (wn != len || memcmp(want->valuestring, out, len) != 0) {
            printf("FAIL %s: output differs from the reference\n", label);
            show_diff(want->valuestring, wn, out, len);
            return 0;
        }
        return 1;
    }
    if (rc == 0) {
        printf("FAIL %s: the reference fails (%s) but we rendered:\n    ", label, want_err->valuestring);
        put_escaped(out, len < 200 ? len : 200);
        printf("\n");
        return 0;
    }
    const char *wm = want_err->valuestring;
    if (strstr(err->msg, wm)) return 1;
    if (is_syntax_error(wm) && strstr(err->msg, "syntax error")) return 1;
    printf("FAIL %s: error differs\n    - expected: %s\n    + got:      %s\n", label, wm, err->msg);
    return 0;
}

static void record(int ok) {
    if (ok) passed++;
    else failed++;
}

/* renders through the C-struct API when the case allows it; returns -2 when it does not */
static int render_struct(const moe_template *t, const cJSON *vars, long long now, char **out, size_t *len, moe_error *err) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(vars, "messages");
    int n = cJSON_GetArraySize(msgs);
    moe_chat_message *m = calloc((size_t)n + 1, sizeof *m);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        m[i].role = cJSON_IsString(role) ? role->valuestring : NULL;
        m[i].content = cJSON_IsString(content) ? content->valuestring : NULL;
        i++;
    }
    moe_template_vars v = {.enable_thinking = -1, .now_unix = now};
    const cJSON *x;
    if ((x = cJSON_GetObjectItemCaseSensitive(vars, "bos_token")) && cJSON_IsString(x)) v.bos_token = x->valuestring;
    if ((x = cJSON_GetObjectItemCaseSensitive(vars, "eos_token")) && cJSON_IsString(x)) v.eos_token = x->valuestring;
    if ((x = cJSON_GetObjectItemCaseSensitive(vars, "add_generation_prompt"))) v.add_generation_prompt = cJSON_IsTrue(x);
    if ((x = cJSON_GetObjectItemCaseSensitive(vars, "enable_thinking"))) v.enable_thinking = cJSON_IsTrue(x);
    int rc = moe_template_render(t, m, n, &v, out, len, err);
    free(m);
    return rc;
}

static void run_golden(const char *dir, const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/%s", dir, file);
    char *text = read_file(path, NULL);
    cJSON *g = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!g) {
        printf("FAIL %s: cannot read or parse\n", path);
        failed++;
        return;
    }
    const char *name = cJSON_GetObjectItemCaseSensitive(g, "template")->valuestring;
    long long now = (long long)cJSON_GetObjectItemCaseSensitive(g, "now_unix")->valuedouble;
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(g, "cases");
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(g, "source");
    const cJSON *gtext = cJSON_GetObjectItemCaseSensitive(g, "template_text");

    moe_template *shared = NULL;
    int shared_bad = 0;
    if (cJSON_IsString(source)) {
        char *tpl = load_template(dir, source->valuestring);
        moe_error err = {{0}};
        if (!tpl) {
            printf("FAIL %s: cannot load the template from %s (run npm ci --ignore-scripts in %s)\n", name,
                   source->valuestring, dir);
            shared_bad = 1;
        } else if (strcmp(tpl, gtext->valuestring) != 0) {
            printf("FAIL %s: %s is not the template the golden file was made from (rerun gen_golden.mjs)\n", name,
                   source->valuestring);
            shared_bad = 1;
        } else if (!(shared = moe_template_parse(tpl, strlen(tpl), &err))) {
            printf("FAIL %s: parse: %s\n", name, err.msg);
            shared_bad = 1;
        }
        free(tpl);
    }
    int ok_count = 0, n_cases = 0;
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cases) {
        n_cases++;
        const char *conv = cJSON_GetObjectItemCaseSensitive(cs, "conversation")->valuestring;
        char label[256];
        snprintf(label, sizeof label, "%s / %s", name, conv);
        if (shared_bad) {
            record(0);
            continue;
        }
        moe_template *t = shared;
        moe_error err = {{0}};
        const cJSON *want_err = cJSON_GetObjectItemCaseSensitive(cs, "error");
        if (!t) {
            const char *src = cJSON_GetObjectItemCaseSensitive(cs, "template_text")->valuestring;
            t = moe_template_parse(src, strlen(src), &err);
            if (!t) {
                int ok = check(label, cs, -1, NULL, 0, &err);
                if (ok && !cJSON_IsString(want_err)) ok = 0;
                record(ok);
                ok_count += ok;
                continue;
            }
        }
        const cJSON *vars = cJSON_GetObjectItemCaseSensitive(cs, "vars");
        char *vj = cJSON_PrintUnformatted(vars);
        char *out = NULL;
        size_t len = 0;
        int rc = moe_template_render_json(t, vj, strlen(vj), now, &out, &len, &err);
        int ok = check(label, cs, rc, out, len, &err);
        free(out);
        free(vj);
        const cJSON *api = cJSON_GetObjectItemCaseSensitive(cs, "api");
        if (ok && cJSON_IsString(api) && !strcmp(api->valuestring, "struct")) {
            char l2[300];
            snprintf(l2, sizeof l2, "%s (C-struct API)", label);
            out = NULL;
            rc = render_struct(t, vars, now, &out, &len, &err);
            ok = check(l2, cs, rc, out, len, &err);
            free(out);
        }
        if (t != shared) moe_template_free(t);
        record(ok);
        ok_count += ok;
    }
    printf("%-28s %3d/%d cases match the reference\n", name, ok_count, n_cases);
    moe_template_free(shared);
    cJSON_Delete(g);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---- checks the reference cannot make ---- */

static void expect_parse_error(const char *label, const char *src, const char *must_contain) {
    moe_error err = {{0}};
    moe_template *t = moe_template_parse(src, strlen(src), &err);
    int ok = !t && strstr(err.msg, must_contain);
    if (!ok) printf("FAIL %s: expected a parse error containing '%s', got: %s\n", label, must_contain, t ? "(parsed)" : err.msg);
    moe_template_free(t);
    record(ok);
}

static void expect_render(const char *label, const char *src, const char *vars, const char *want_out, const char *want_err) {
    moe_error err = {{0}};
    moe_template *t = moe_template_parse(src, strlen(src), &err);
    if (!t) {
        printf("FAIL %s: parse: %s\n", label, err.msg);
        record(0);
        return;
    }
    char *out = NULL;
    size_t len = 0;
    int rc = moe_template_render_json(t, vars, strlen(vars), 0, &out, &len, &err);
    int ok;
    if (want_out) {
        ok = rc == 0 && len == strlen(want_out) && !memcmp(out, want_out, len);
        if (!ok) printf("FAIL %s: got %s\n", label, rc ? err.msg : out);
    } else {
        ok = rc != 0 && strstr(err.msg, want_err);
        if (!ok) printf("FAIL %s: expected an error containing '%s', got %s\n", label, want_err, rc ? err.msg : out);
    }
    free(out);
    moe_template_free(t);
    record(ok);
}

static void own_checks(void) {
    expect_parse_error("error position", "line one\n{% if x %}\n  {{ y + }}\n{% endif %}", "line 3:");
    expect_parse_error("unknown statement", "{% while true %}{% endwhile %}", "unsupported statement 'while'");
    expect_parse_error("unclosed block", "{% for m in messages %}x", "missing {% endfor %}");
    expect_parse_error("unclosed expression", "{{ x ", "syntax error");
    expect_parse_error("unclosed comment", "{# no end", "missing end of comment");
    expect_parse_error("non-ASCII in a tag", "{{ é }}", "line 1:4");
    {
        /* deep nesting fails cleanly instead of exhausting the stack */
        size_t n = 5000, k = 0;
        char *s = malloc(2 * n + 16);
        k += (size_t)sprintf(s, "{{ ");
        for (size_t i = 0; i < n; i++) s[k++] = '(';
        s[k++] = '1';
        for (size_t i = 0; i < n; i++) s[k++] = ')';
        strcpy(s + k, " }}");
        expect_parse_error("deep nesting", s, "nested too deeply");
        free(s);
    }
    {
        /* a long operator chain makes a deep tree: refused, not a stack overflow */
        size_t n = 100000, k = 0;
        char *s = malloc(2 * n + 16);
        k += (size_t)sprintf(s, "{{ 1");
        for (size_t i = 0; i < n; i++) { s[k++] = '+'; s[k++] = '1'; }
        strcpy(s + k, " }}");
        expect_parse_error("long chain", s, "nested too deeply");
        free(s);
    }
    {
        /* recursion through macros is bounded by the evaluation depth too */
        char src[4096];
        size_t k = (size_t)sprintf(src, "{%% macro f(n) %%}{{ f(n)");
        for (int i = 0; i < 150; i++) k += (size_t)sprintf(src + k, "|trim");
        sprintf(src + k, " }}{%% endmacro %%}{{ f(1) }}");
        expect_render("deep recursion", src, "{}", NULL, "nested too deeply");
    }
    expect_render("unsupported filter names itself", "\n{{ 'a b' | wordcount }}", "{}", NULL, "line 2:12: Unknown StringValue filter: wordcount");
    expect_render("raise_exception names the line", "a\n{{ raise_exception('stop here') }}", "{}", NULL, "stop here (raise_exception in the chat template at line 2:4)");
    expect_render("runaway recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}", NULL, "nested too deeply");
    expect_render("huge range", "{{ range(100000000)|length }}", "{}", NULL, "range() too long");
    expect_render("break outside loop", "{% break %}", "{}", NULL, "outside a for loop");
    expect_render("Latin-1 case change", "{{ 'straße ÿ'|upper }} {{ 'ÀÉ'|lower }}", "{}", "STRASSE Ÿ àé", NULL);
    expect_render("no case tables beyond Latin-1", "{{ 'ελληνικά'|upper }}", "{}", NULL, "non-ASCII text (U+03B5)");
    expect_render("variables must be an object", "x", "[1]", NULL, "JSON object");
    expect_render("bad JSON", "x", "{", NULL, "not valid JSON");
    expect_render("global names are reserved", "x", "{\"namespace\": 1}", NULL, "already declared");
    {
        /* a template renders the same twice (no state kept between renders) */
        const char *src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}";
        moe_error err = {{0}};
        moe_template *t = moe_template_parse(src, strlen(src), &err);
        moe_chat_message m[2] = {{"user", "a"}, {"assistant", NULL}};
        moe_template_vars v = {.enable_thinking = -1};
        char *o1 = NULL, *o2 = NULL;
        int ok = t && moe_template_render(t, m, 2, &v, &o1, NULL, &err) == 0 &&
                 moe_template_render(t, m, 2, &v, &o2, NULL, &err) == 0 && !strcmp(o1, "2") && !strcmp(o2, "2");
        if (!ok) printf("FAIL render twice: %s\n", err.msg);
        free(o1);
        free(o2);
        moe_template_free(t);
        record(ok);
    }
    {
        /* strftime_now reads the caller's clock, in local time (TZ=UTC here) */
        const char *src = "{{ strftime_now('%Y-%m-%d %H:%M') }}";
        moe_error err = {{0}};
        moe_template *t = moe_template_parse(src, strlen(src), &err);
        moe_template_vars v = {.enable_thinking = -1, .now_unix = 86400LL * 365 + 3600};
        char *o = NULL;
        int ok = t && moe_template_render(t, NULL, 0, &v, &o, NULL, &err) == 0 && !strcmp(o, "1971-01-01 01:00");
        if (!ok) printf("FAIL strftime_now clock: %s\n", o ? o : err.msg);
        free(o);
        moe_template_free(t);
        record(ok);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s TEMPLATES_DIR\n", argv[0]);
        return 2;
    }
    setenv("TZ", "UTC", 1);
    tzset();
    const char *dir = argv[1];
    char gdir[1024];
    snprintf(gdir, sizeof gdir, "%s/golden", dir);
    DIR *d = opendir(gdir);
    if (!d) {
        printf("FAIL: cannot open %s\n", gdir);
        return 1;
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".json")) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        run_golden(dir, names[i]);
        free(names[i]);
    }
    own_checks();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
