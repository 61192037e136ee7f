/*
 * tmpl_builtins.c — the chat template interpreter's library: filters (| trim,
 * | tojson, | length, ...), tests (is defined, is string, ...), the methods of
 * strings and mappings (.startswith, .split, .get, .items, ...) and the global
 * functions (namespace, raise_exception, range, strftime_now). Each does what
 * the reference does, including where that differs from Python Jinja2 (for
 * example .strip('\n') strips all whitespace: the reference ignores the
 * argument). Anything else fails with the name of the filter or method.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/tmpl_internal.h"

#define MAX_RANGE 10000000

static tm_value *mkstr(tm_ctx *c, const char *p, size_t n) { return tm_v_str_ref(c->a, p, n); }
static tm_value *mkint(tm_ctx *c, double x) { return tm_v_num(c->a, V_INT, x); }
static tm_value *mkbool(int b) { return b ? TM_TRUE : TM_FALSE; }
static tm_value *arg(tm_list *args, size_t i) { return i < args->n ? args->v[i] : NULL; }

static tm_value *buf_value(tm_ctx *c, tm_buf *b) {
    if (!b->p) tm_buf_put(c->a, b, "", 0);
    return mkstr(c, b->p, b->n);
}

/* ---- whitespace ---- */

static size_t trim_start(const char *s, size_t n) {
    size_t i = 0, k;
    uint32_t cp;
    while (i < n && (k = tm_utf8_next(s + i, n - i, &cp)) && tm_js_space(cp)) i += k;
    return i;
}

static size_t trim_end(const char *s, size_t n, size_t from) {
    size_t j = n;
    while (j > from) {
        size_t back = 0;
        for (size_t b = 1; b <= 4 && b <= j - from; b++) {
            uint32_t cp;
            if (tm_utf8_next(s + j - b, b, &cp) == b && tm_js_space(cp)) { back = b; break; }
        }
        if (!back) break;
        j -= back;
    }
    return j;
}

static tm_value *js_trim(tm_ctx *c, const tm_value *s, int start, int end) {
    size_t i = start ? trim_start(s->s.p, s->s.n) : 0;
    size_t j = end ? trim_end(s->s.p, s->s.n, i) : s->s.n;
    return mkstr(c, s->s.p + i, j - i);
}

static int is_word(unsigned char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static tm_value *title_case(tm_ctx *c, const tm_value *s) {
    char *p = tm_memdup(c->a, s->s.p, s->s.n);
    for (size_t i = 0; i < s->s.n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (is_word(ch) && (i == 0 || !is_word((unsigned char)s->s.p[i - 1])) && ch >= 'a' && ch <= 'z')
            p[i] = (char)(ch - 32);
    }
    return mkstr(c, p, s->s.n);
}

static tm_value *capitalize(tm_ctx *c, const tm_node *at, const tm_value *s) {
    if (s->s.n == 0) return mkstr(c, "", 0);
    uint32_t cp;
    size_t l = tm_utf8_next(s->s.p, s->s.n, &cp);
    tm_value *first = tm_case(c, at, mkstr(c, s->s.p, l), 1, "capitalize");
    tm_buf b = {0};
    tm_buf_put(c->a, &b, first->s.p, first->s.n);
    tm_buf_put(c->a, &b, s->s.p + l, s->s.n - l);
    return buf_value(c, &b);
}

/* ---- parseInt / parseFloat ---- */

static double parse_int(const tm_value *s) {
    size_t i = trim_start(s->s.p, s->s.n), n = s->s.n;
    const char *p = s->s.p;
    int neg = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) neg = p[i++] == '-';
    double v = 0;
    int digits = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        v = v * 10 + (p[i++] - '0');
        digits++;
    }
    if (!digits) return NAN;
    return neg ? -v : v;
}

static double parse_float(const tm_value *s) {
    size_t i = trim_start(s->s.p, s->s.n), n = s->s.n;
    const char *p = s->s.p;
    size_t st = i;
    if (i < n && (p[i] == '+' || p[i] == '-')) i++;
    if (n - i >= 8 && memcmp(p + i, "Infinity", 8) == 0) return (st < n && p[st] == '-') ? -INFINITY : INFINITY;
    size_t q = i;
    int digits = 0;
    while (q < n && p[q] >= '0' && p[q] <= '9') { q++; digits++; }
    if (q < n && p[q] == '.') {
        size_t q2 = q + 1;
        int fd = 0;
        while (q2 < n && p[q2] >= '0' && p[q2] <= '9') { q2++; fd++; }
        if (digits || fd) { q = q2; digits += fd; }
    }
    if (!digits) return NAN;
    if (q < n && (p[q] == 'e' || p[q] == 'E')) {
        size_t q2 = q + 1;
        if (q2 < n && (p[q2] == '+' || p[q2] == '-')) q2++;
        int ed = 0;
        while (q2 < n && p[q2] >= '0' && p[q2] <= '9') { q2++; ed++; }
        if (ed) q = q2;
    }
    char buf[512];
    size_t len = q - st;
    if (len >= sizeof buf) len = sizeof buf - 1;
    memcpy(buf, p + st, len);
    buf[len] = 0;
    return strtod(buf, NULL);
}

/* ---- string methods ---- */

static int str_starts(const tm_value *s, const tm_value *pre) {
    return pre->s.n <= s->s.n && memcmp(s->s.p, pre->s.p, pre->s.n) == 0;
}
static int str_ends(const tm_value *s, const tm_value *suf) {
    return suf->s.n <= s->s.n && memcmp(s->s.p + s->s.n - suf->s.n, suf->s.p, suf->s.n) == 0;
}

static tm_value *starts_ends(tm_ctx *c, const tm_node *at, tm_value *self, tm_list *args, int ends) {
    const char *name = ends ? "endswith" : "startswith";
    tm_value *p = arg(args, 0);
    if (!p) tm_rfail(c, at, "%s() requires at least one argument", name);
    if (p->type == V_STR) return mkbool(ends ? str_ends(self, p) : str_starts(self, p));
    if (p->type == V_ARRAY) {
        for (size_t i = 0; i < p->list->n; i++) {
            tm_value *it = p->list->v[i];
            if (it->type != V_STR) tm_rfail(c, at, "%s() tuple elements must be strings", name);
            if (ends ? str_ends(self, it) : str_starts(self, it)) return TM_TRUE;
        }
        return TM_FALSE;
    }
    tm_rfail(c, at, "%s() argument must be a string or tuple of strings", name);
}

static tm_value *split(tm_ctx *c, const tm_node *at, tm_value *self, tm_list *args) {
    tm_value *sep = arg(args, 0) ? arg(args, 0) : TM_NULL;
    if (sep->type != V_STR && sep->type != V_NULL) tm_rfail(c, at, "sep argument must be a string or null");
    tm_value *maxv = arg(args, 1);
    if (maxv && maxv->type != V_INT) tm_rfail(c, at, "maxsplit argument must be a number");
    double maxsplit = maxv ? maxv->num : -1;
    tm_list *out = tm_list_new(c->a, 0);
    const char *s = self->s.p;
    size_t n = self->s.n;
    if (sep->type == V_NULL) {
        size_t i = trim_start(s, n);
        while (i < n) {
            size_t st = i, k;
            uint32_t cp;
            while (i < n && (k = tm_utf8_next(s + i, n - i, &cp)) && !tm_js_space(cp)) i += k;
            if (maxsplit != -1 && (double)out->n >= maxsplit) {
                tm_list_push(c->a, out, mkstr(c, s + st, n - st));
                break;
            }
            tm_list_push(c->a, out, mkstr(c, s + st, i - st));
            while (i < n && (k = tm_utf8_next(s + i, n - i, &cp)) && tm_js_space(cp)) i += k;
        }
        return tm_v_array(c->a, out);
    }
    if (sep->s.n == 0) tm_rfail(c, at, "empty separator");
    size_t i = 0;
    for (;;) {
        const char *hit = i <= n ? memmem(s + i, n - i, sep->s.p, sep->s.n) : NULL;
        if (!hit) {
            tm_list_push(c->a, out, mkstr(c, s + i, n - i));
            break;
        }
        tm_list_push(c->a, out, mkstr(c, s + i, (size_t)(hit - (s + i))));
        i = (size_t)(hit - s) + sep->s.n;
    }
    if (maxsplit != -1 && (double)out->n > maxsplit) {
        /* result.push(result.splice(maxsplit).join(sep)) */
        double st = maxsplit < 0 ? fmax((double)out->n + maxsplit, 0) : fmin(maxsplit, (double)out->n);
        size_t k = (size_t)st;
        tm_buf b = {0};
        for (size_t j = k; j < out->n; j++) {
            if (j > k) tm_buf_put(c->a, &b, sep->s.p, sep->s.n);
            tm_buf_put(c->a, &b, out->v[j]->s.p, out->v[j]->s.n);
        }
        out->n = k;
        tm_list_push(c->a, out, buf_value(c, &b));
    }
    return tm_v_array(c->a, out);
}

static tm_value *replace(tm_ctx *c, const tm_node *at, tm_value *self, tm_list *args) {
    if (args->n < 2) tm_rfail(c, at, "replace() requires at least two arguments");
    tm_value *old = args->v[0], *nw = args->v[1];
    if (old->type != V_STR || nw->type != V_STR) tm_rfail(c, at, "replace() arguments must be strings");
    tm_value *count = TM_NULL;
    if (args->n > 2) {
        tm_value *a2 = args->v[2];
        if (a2->type == V_OBJECT && a2->kwargs) {
            count = tm_map_get(a2->map, "count", 5);
            if (!count) count = TM_NULL;
        } else {
            count = a2;
        }
    }
    if (count->type != V_INT && count->type != V_NULL) tm_rfail(c, at, "replace() count argument must be a number or null");
    if (count->type == V_INT && count->num == 0) return self;
    double remaining = count->type == V_NULL || count->num < 0 ? INFINITY : count->num;
    const char *s = self->s.p;
    size_t n = self->s.n;
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    if (old->s.n == 0) {
        /* matches before every code point and at the end */
        size_t i = 0;
        for (;;) {
            if (remaining > 0) {
                tm_buf_put(c->a, &b, nw->s.p, nw->s.n);
                remaining--;
            }
            if (i >= n) break;
            uint32_t cp;
            size_t l = tm_utf8_next(s + i, n - i, &cp);
            tm_buf_put(c->a, &b, s + i, l);
            i += l;
        }
        return buf_value(c, &b);
    }
    size_t i = 0;
    while (i <= n) {
        const char *hit = memmem(s + i, n - i, old->s.p, old->s.n);
        if (!hit) break;
        size_t h = (size_t)(hit - s);
        tm_buf_put(c->a, &b, s + i, h - i);
        if (remaining > 0) {
            tm_buf_put(c->a, &b, nw->s.p, nw->s.n);
            remaining--;
        } else {
            tm_buf_put(c->a, &b, old->s.p, old->s.n);
        }
        i = h + old->s.n;
    }
    tm_buf_put(c->a, &b, s + i, n - i);
    return buf_value(c, &b);
}

/* ---- mapping methods ---- */

static tm_value *items_of(tm_ctx *c, const tm_map *m) {
    tm_list *l = tm_list_new(c->a, m->n);
    for (size_t i = 0; i < m->n; i++) {
        tm_list *pair = tm_list_new(c->a, 2);
        tm_list_push(c->a, pair, mkstr(c, m->k[i].p, m->k[i].n));
        tm_list_push(c->a, pair, m->v[i]);
        tm_list_push(c->a, l, tm_v_array(c->a, pair));
    }
    return tm_v_array(c->a, l);
}

/* a stable merge sort whose comparison may fail (and jump) */
typedef struct sort_ctx {
    tm_ctx *c;
    const tm_node *at;
    int case_sensitive, reverse;
    tm_value **keys; /* compare keys[i], move items */
} sort_ctx;

static void merge_sort(sort_ctx *s, size_t *idx, size_t *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(s, idx, tmp, h);
    merge_sort(s, idx + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int r = tm_compare(s->c, s->at, s->keys[idx[j]], s->keys[idx[i]], s->case_sensitive);
        if (s->reverse) r = -r;
        if (r < 0) tmp[k++] = idx[j++];
        else tmp[k++] = idx[i++];
    }
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

static tm_list *sorted(tm_ctx *c, const tm_node *at, tm_list *items, tm_value **keys, int case_sensitive, int reverse) {
    size_t n = items->n;
    size_t *idx = tm_alloc(c->a, (n + 1) * sizeof *idx), *tmp = tm_alloc(c->a, (n + 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    sort_ctx s = {c, at, case_sensitive, reverse, keys};
    merge_sort(&s, idx, tmp, n);
    tm_list *out = tm_list_new(c->a, n);
    for (size_t i = 0; i < n; i++) tm_list_push(c->a, out, items->v[idx[i]]);
    return out;
}

static tm_value *dictsort(tm_ctx *c, const tm_node *at, tm_value *self, tm_list *args) {
    tm_map *kw = NULL;
    tm_list *pos = tm_list_new(c->a, args->n);
    for (size_t i = 0; i < args->n; i++) {
        if (args->v[i]->type == V_OBJECT && args->v[i]->kwargs) kw = args->v[i]->map;
        else tm_list_push(c->a, pos, args->v[i]);
    }
    tm_value *cs = arg(pos, 0), *by = arg(pos, 1), *rev = arg(pos, 2);
    if (!cs && kw) cs = tm_map_get(kw, "case_sensitive", 14);
    if (!by && kw) by = tm_map_get(kw, "by", 2);
    if (!rev && kw) rev = tm_map_get(kw, "reverse", 7);
    if (!cs) cs = TM_FALSE;
    if (!by) by = mkstr(c, "key", 3);
    if (!rev) rev = TM_FALSE;
    if (cs->type != V_BOOL) tm_rfail(c, at, "case_sensitive must be a boolean");
    if (by->type != V_STR) tm_rfail(c, at, "by must be a string");
    if (!tm_str_eq(by->s, "key") && !tm_str_eq(by->s, "value")) tm_rfail(c, at, "by must be either 'key' or 'value'");
    if (rev->type != V_BOOL) tm_rfail(c, at, "reverse must be a boolean");
    tm_value *items = items_of(c, self->map);
    size_t n = items->list->n, which = tm_str_eq(by->s, "key") ? 0 : 1;
    tm_value **keys = tm_alloc(c->a, (n + 1) * sizeof *keys);
    for (size_t i = 0; i < n; i++) keys[i] = items->list->v[i]->list->v[which];
    return tm_v_array(c->a, sorted(c, at, items->list, keys, cs->b, rev->b));
}

static const char *const str_methods[] = {"upper", "lower", "strip", "title", "capitalize", "rstrip", "lstrip",
                                          "startswith", "endswith", "split", "replace", NULL};
static const char *const obj_methods[] = {"get", "items", "keys", "values", "dictsort", NULL};

static tm_value *method(tm_ctx *c, tm_value *self, const char *name) {
    tm_func *f = tm_alloc(c->a, sizeof *f);
    f->kind = F_METHOD;
    f->self = self;
    f->method = (tm_str){name, strlen(name)};
    tm_value *v = tm_alloc(c->a, sizeof *v);
    v->type = V_FUNC;
    v->fn = f;
    return v;
}

tm_value *tm_member_builtin(tm_ctx *c, tm_value *obj, tm_str name) {
    if (obj->type == V_STR) {
        if (tm_str_eq(name, "length")) return mkint(c, (double)tm_utf16_len(obj->s.p, obj->s.n));
        for (const char *const *m = str_methods; *m; m++)
            if (tm_str_eq(name, *m)) return method(c, obj, *m);
    } else if (obj->type == V_ARRAY) {
        if (tm_str_eq(name, "length")) return mkint(c, (double)obj->list->n);
    } else if (obj->type == V_OBJECT) {
        for (const char *const *m = obj_methods; *m; m++)
            if (tm_str_eq(name, *m)) return method(c, obj, *m);
    }
    return NULL;
}

tm_value *tm_call_method(tm_ctx *c, tm_value *fn, tm_list *args, const tm_node *at) {
    tm_value *self = fn->fn->self;
    tm_str m = fn->fn->method;
    if (self->type == V_STR) {
        if (tm_str_eq(m, "upper")) return tm_case(c, at, self, 1, "upper()");
        if (tm_str_eq(m, "lower")) return tm_case(c, at, self, 0, "lower()");
        if (tm_str_eq(m, "strip")) return js_trim(c, self, 1, 1);
        if (tm_str_eq(m, "lstrip")) return js_trim(c, self, 1, 0);
        if (tm_str_eq(m, "rstrip")) return js_trim(c, self, 0, 1);
        if (tm_str_eq(m, "title")) return title_case(c, self);
        if (tm_str_eq(m, "capitalize")) return capitalize(c, at, self);
        if (tm_str_eq(m, "startswith")) return starts_ends(c, at, self, args, 0);
        if (tm_str_eq(m, "endswith")) return starts_ends(c, at, self, args, 1);
        if (tm_str_eq(m, "split")) return split(c, at, self, args);
        if (tm_str_eq(m, "replace")) return replace(c, at, self, args);
    } else {
        if (tm_str_eq(m, "get")) {
            tm_value *k = arg(args, 0);
            if (!k || k->type != V_STR) tm_rfail(c, at, "Object key must be a string: got %s", k ? tm_type_name(k) : "undefined");
            tm_value *v = tm_map_get(self->map, k->s.p, k->s.n);
            if (v) return v;
            return arg(args, 1) ? arg(args, 1) : TM_NULL;
        }
        if (tm_str_eq(m, "items")) return items_of(c, self->map);
        if (tm_str_eq(m, "keys") || tm_str_eq(m, "values")) {
            int keys = tm_str_eq(m, "keys");
            tm_list *l = tm_list_new(c->a, self->map->n);
            for (size_t i = 0; i < self->map->n; i++)
                tm_list_push(c->a, l, keys ? mkstr(c, self->map->k[i].p, self->map->k[i].n) : self->map->v[i]);
            return tm_v_array(c->a, l);
        }
        if (tm_str_eq(m, "dictsort")) return dictsort(c, at, self, args);
    }
    tm_rfail(c, at, "unsupported method %.*s()", (int)m.n, m.p);
}

/* ---- global functions ---- */

static tm_value *fn_namespace(tm_ctx *c, tm_list *args, const tm_node *at) {
    size_t npos = args->n;
    tm_map *kw = NULL;
    if (npos && args->v[npos - 1]->type == V_OBJECT && args->v[npos - 1]->kwargs) kw = args->v[--npos]->map;
    if (npos > 1) tm_rfail(c, at, "namespace expected at most 1 argument, got %zu", npos);
    tm_map *m = tm_map_new(c->a);
    if (npos == 1) {
        tm_value *src = args->v[0];
        if (src->type == V_OBJECT) {
            for (size_t i = 0; i < src->map->n; i++) tm_map_set(c->a, m, src->map->k[i].p, src->map->k[i].n, src->map->v[i]);
        } else if (src->type == V_ARRAY) {
            for (size_t i = 0; i < src->list->n; i++) {
                tm_value *pair = src->list->v[i];
                if (pair->type != V_ARRAY || pair->list->n != 2)
                    tm_rfail(c, at, "namespace expected an object or an iterable of [key, value] pairs");
                if (pair->list->v[0]->type != V_STR) tm_rfail(c, at, "namespace keys must be strings");
                tm_map_set(c->a, m, pair->list->v[0]->s.p, pair->list->v[0]->s.n, pair->list->v[1]);
            }
        } else {
            tm_rfail(c, at, "'%s' object is not iterable", tm_type_name(src));
        }
    }
    if (kw)
        for (size_t i = 0; i < kw->n; i++) tm_map_set(c->a, m, kw->k[i].p, kw->k[i].n, kw->v[i]);
    tm_value *v = tm_v_object(c->a, m);
    v->type = V_NS;
    return v;
}

static tm_value *fn_range(tm_ctx *c, tm_list *args, const tm_node *at) {
    double v[3];
    size_t n = args->n;
    if (n < 1 || n > 3) tm_rfail(c, at, "range() takes 1 to 3 numbers");
    for (size_t i = 0; i < n; i++) {
        if (args->v[i]->type != V_INT && args->v[i]->type != V_FLOAT) tm_rfail(c, at, "range() arguments must be numbers");
        v[i] = args->v[i]->num;
    }
    double start = n == 1 ? 0 : v[0], stop = n == 1 ? v[0] : v[1], step = n == 3 ? v[2] : 1;
    if (step == 0) tm_rfail(c, at, "range() step must not be zero");
    tm_list *l = tm_list_new(c->a, 0);
    for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (l->n >= MAX_RANGE) tm_rfail(c, at, "range() too long");
        tm_list_push(c->a, l, tm_v_num(c->a, i == floor(i) ? V_INT : V_FLOAT, i));
    }
    return tm_v_array(c->a, l);
}

static tm_value *fn_strftime(tm_ctx *c, tm_list *args, const tm_node *at) {
    tm_value *f = arg(args, 0);
    if (!f || f->type != V_STR) tm_rfail(c, at, "strftime_now() needs a format string");
    static const char *const mon_short[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const char *const mon_long[] = {"January", "February", "March", "April", "May", "June", "July",
                                           "August", "September", "October", "November", "December"};
    time_t t = (time_t)c->now;
    struct tm tmv;
    if (!localtime_r(&t, &tmv)) tm_rfail(c, at, "strftime_now(): the time is out of range");
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    const char *s = f->s.p;
    size_t n = f->s.n;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 1 < n && strchr("YmdbBHM%", s[i + 1]) && s[i + 1]) {
            char tmp[32];
            switch (s[i + 1]) {
            case 'Y': snprintf(tmp, sizeof tmp, "%d", tmv.tm_year + 1900); break;
            case 'm': snprintf(tmp, sizeof tmp, "%02d", tmv.tm_mon + 1); break;
            case 'd': snprintf(tmp, sizeof tmp, "%02d", tmv.tm_mday); break;
            case 'b': snprintf(tmp, sizeof tmp, "%s", mon_short[tmv.tm_mon]); break;
            case 'B': snprintf(tmp, sizeof tmp, "%s", mon_long[tmv.tm_mon]); break;
            case 'H': snprintf(tmp, sizeof tmp, "%02d", tmv.tm_hour); break;
            case 'M': snprintf(tmp, sizeof tmp, "%02d", tmv.tm_min); break;
            default: snprintf(tmp, sizeof tmp, "%%"); break;
            }
            tm_buf_puts(c->a, &b, tmp);
            i++;
        } else {
            tm_buf_put(c->a, &b, s + i, 1);
        }
    }
    return buf_value(c, &b);
}

tm_value *tm_call_global(tm_ctx *c, tm_value *fn, tm_list *args, const tm_node *at) {
    switch (fn->fn->kind) {
    case F_NAMESPACE: return fn_namespace(c, args, at);
    case F_RANGE: return fn_range(c, args, at);
    case F_STRFTIME: return fn_strftime(c, args, at);
    case F_RAISE: {
        tm_buf b = {0};
        tm_buf_put(c->a, &b, "", 0);
        tm_value *m = arg(args, 0);
        if (m && m->type != V_UNDEF) tm_js_string(c, at, m, &b);
        if (at && at->line)
            tm_fail(c->a, "%s (raise_exception in the chat template at line %d:%d)", b.p, at->line, at->col);
        tm_fail(c->a, "%s (raise_exception in the chat template)", b.p);
    }
    default: tm_rfail(c, at, "unsupported function");
    }
}

/* ---- tests ---- */

static const char *const test_names[] = {"boolean", "callable", "odd", "even", "false", "true", "none", "string",
                                         "number", "integer", "iterable", "mapping", "sequence", "lower", "upper",
                                         "defined", "undefined", "equalto", "eq", NULL};

int tm_has_test(tm_str name) {
    for (const char *const *t = test_names; *t; t++)
        if (tm_str_eq(name, *t)) return 1;
    return 0;
}

int tm_run_test(tm_ctx *c, const tm_node *at, tm_str name, tm_value *v, tm_value *b) {
    int t = v->type;
    if (tm_str_eq(name, "boolean")) return t == V_BOOL;
    if (tm_str_eq(name, "callable")) return t == V_FUNC;
    if (tm_str_eq(name, "odd") || tm_str_eq(name, "even")) {
        if (t != V_INT) tm_rfail(c, at, "cannot %.*s on %s", (int)name.n, name.p, tm_type_name(v));
        int odd = fmod(v->num, 2) != 0;
        return tm_str_eq(name, "odd") ? odd : !odd;
    }
    if (tm_str_eq(name, "false")) return t == V_BOOL && !v->b;
    if (tm_str_eq(name, "true")) return t == V_BOOL && v->b;
    if (tm_str_eq(name, "none")) return t == V_NULL;
    if (tm_str_eq(name, "string")) return t == V_STR;
    if (tm_str_eq(name, "number")) return t == V_INT || t == V_FLOAT;
    if (tm_str_eq(name, "integer")) return t == V_INT;
    if (tm_str_eq(name, "iterable")) return (t == V_ARRAY && !v->tuple) || t == V_STR;
    if (tm_str_eq(name, "mapping")) return t == V_OBJECT;
    if (tm_str_eq(name, "sequence")) return t == V_ARRAY || t == V_OBJECT || t == V_STR;
    if (tm_str_eq(name, "lower") || tm_str_eq(name, "upper")) {
        if (t != V_STR) return 0;
        tm_value *m = tm_case(c, at, v, tm_str_eq(name, "upper"), "is lower/upper");
        return m->s.n == v->s.n && memcmp(m->s.p, v->s.p, v->s.n) == 0;
    }
    if (tm_str_eq(name, "defined")) return t != V_UNDEF;
    if (tm_str_eq(name, "undefined")) return t == V_UNDEF;
    if (tm_str_eq(name, "equalto") || tm_str_eq(name, "eq")) {
        if (!b) tm_rfail(c, at, "the test '%.*s' needs a value to compare with", (int)name.n, name.p);
        return tm_strict_eq(v, b);
    }
    tm_rfail(c, at, "Unknown test: %.*s", (int)name.n, name.p);
}

/* ---- filters ---- */

/* the pieces Array.prototype.join() makes of raw values */
static void join_piece(tm_ctx *c, const tm_node *at, const tm_value *v, tm_buf *b) {
    if (v->type == V_UNDEF || v->type == V_NULL) return;
    tm_js_string(c, at, v, b);
}

static tm_value *join_list(tm_ctx *c, const tm_node *at, const tm_list *l, const char *sep, size_t sepn) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    for (size_t i = 0; i < l->n; i++) {
        if (i) tm_buf_put(c->a, &b, sep, sepn);
        join_piece(c, at, l->v[i], &b);
    }
    return buf_value(c, &b);
}

static tm_value *to_json_value(tm_ctx *c, const tm_node *at, const tm_value *v, const tm_json_opts *o, int undef_null) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    tm_to_json(c, at, v, o, 0, undef_null, &b);
    return buf_value(c, &b);
}

static int raw_truthy(const tm_value *v) {
    switch (v->type) {
    case V_ARRAY:
    case V_OBJECT:
    case V_NS:
    case V_FUNC: return 1; /* JavaScript objects are truthy, even empty */
    default: return tm_truthy(v);
    }
}

static tm_value *indent(tm_ctx *c, const tm_value *s, double width, int first, int blank) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    size_t i = 0, line = 0;
    for (;;) {
        const char *nl = memchr(s->s.p + i, '\n', s->s.n - i);
        size_t end = nl ? (size_t)(nl - s->s.p) : s->s.n;
        int skip = (!first && line == 0) || (!blank && end == i);
        if (!skip)
            for (double k = 0; k < width; k++) tm_buf_put(c->a, &b, " ", 1);
        tm_buf_put(c->a, &b, s->s.p + i, end - i);
        if (!nl) break;
        tm_buf_put(c->a, &b, "\n", 1);
        i = end + 1;
        line++;
    }
    return buf_value(c, &b);
}

static tm_value *attribute_of(tm_ctx *c, tm_value *item, tm_str path) {
    size_t i = 0;
    tm_value *v = item;
    for (;;) {
        const char *dot = memchr(path.p + i, '.', path.n - i);
        size_t end = dot ? (size_t)(dot - path.p) : path.n;
        tm_str part = {path.p + i, end - i};
        if (v->type == V_OBJECT || v->type == V_NS) {
            v = tm_map_get(v->map, part.p, part.n);
            if (!v) v = TM_UNDEF;
        } else if (v->type == V_ARRAY) {
            tm_value tmp = {.type = V_STR, .s = part};
            double idx = parse_int(&tmp);
            if (!isnan(idx) && idx >= 0 && idx < (double)v->list->n) v = v->list->v[(size_t)idx];
            else return TM_UNDEF;
        } else {
            return TM_UNDEF;
        }
        if (!dot) break;
        i = end + 1;
    }
    (void)c;
    return v;
}

static tm_value *kwarg(tm_map *kw, const char *name) { return tm_map_get(kw, name, strlen(name)); }

static tm_value *filter_ident(tm_ctx *c, tm_env *e, tm_value *v, tm_str name, const tm_node *at) {
    (void)e;
    char fname[64];
    snprintf(fname, sizeof fname, "%.*s", (int)(name.n < 60 ? name.n : 60), name.p);
    if (tm_str_eq(name, "safe")) return v;
    if (tm_str_eq(name, "tojson")) return to_json_value(c, at, v, NULL, 1);
    if (v->type == V_ARRAY) {
        tm_list *l = v->list;
        if (tm_str_eq(name, "list")) return v;
        if (tm_str_eq(name, "first") || tm_str_eq(name, "last")) {
            if (!l->n) tm_rfail(c, at, "%s of an empty list (the reference fails here too)", fname);
            return tm_str_eq(name, "first") ? l->v[0] : l->v[l->n - 1];
        }
        if (tm_str_eq(name, "length")) return mkint(c, (double)l->n);
        if (tm_str_eq(name, "reverse")) {
            tm_list *r = tm_list_new(c->a, l->n);
            for (size_t i = l->n; i > 0; i--) tm_list_push(c->a, r, l->v[i - 1]);
            return tm_v_array(c->a, r);
        }
        if (tm_str_eq(name, "sort")) return tm_v_array(c->a, sorted(c, at, l, l->v, 0, 0));
        if (tm_str_eq(name, "join")) return join_list(c, at, l, "", 0);
        if (tm_str_eq(name, "string")) return to_json_value(c, at, v, NULL, 0);
        if (tm_str_eq(name, "unique")) {
            tm_list *r = tm_list_new(c->a, l->n);
            for (size_t i = 0; i < l->n; i++) {
                int seen = 0;
                for (size_t j = 0; j < r->n && !seen; j++) {
                    const tm_value *a = r->v[j], *b = l->v[i];
                    seen = tm_strict_eq(a, b) || ((a->type == V_INT || a->type == V_FLOAT) &&
                                                  (b->type == V_INT || b->type == V_FLOAT) && isnan(a->num) && isnan(b->num));
                }
                if (!seen) tm_list_push(c->a, r, l->v[i]);
            }
            return tm_v_array(c->a, r);
        }
        tm_rfail(c, at, "Unknown ArrayValue filter: %s", fname);
    }
    if (v->type == V_STR) {
        if (tm_str_eq(name, "length")) return mkint(c, (double)tm_utf16_len(v->s.p, v->s.n));
        if (tm_str_eq(name, "upper")) return tm_case(c, at, v, 1, "upper");
        if (tm_str_eq(name, "lower")) return tm_case(c, at, v, 0, "lower");
        if (tm_str_eq(name, "title")) return title_case(c, v);
        if (tm_str_eq(name, "capitalize")) return capitalize(c, at, v);
        if (tm_str_eq(name, "trim")) return js_trim(c, v, 1, 1);
        if (tm_str_eq(name, "indent")) return indent(c, v, 4, 0, 0);
        if (tm_str_eq(name, "join") || tm_str_eq(name, "string")) return v;
        if (tm_str_eq(name, "int")) {
            double x = parse_int(v);
            return mkint(c, isnan(x) ? 0 : x);
        }
        if (tm_str_eq(name, "float")) {
            double x = parse_float(v);
            return tm_v_num(c->a, V_FLOAT, isnan(x) ? 0 : x);
        }
        tm_rfail(c, at, "Unknown StringValue filter: %s", fname);
    }
    if (v->type == V_INT || v->type == V_FLOAT) {
        if (tm_str_eq(name, "abs")) return tm_v_num(c->a, v->type, fabs(v->num));
        if (tm_str_eq(name, "int")) return mkint(c, floor(v->num));
        if (tm_str_eq(name, "float")) return tm_v_num(c->a, V_FLOAT, v->num);
        if (tm_str_eq(name, "string")) {
            tm_buf b = {0};
            tm_rv_string(c, at, v, &b);
            return buf_value(c, &b);
        }
        tm_rfail(c, at, "Unknown NumericValue filter: %s", fname);
    }
    if (v->type == V_OBJECT) {
        if (tm_str_eq(name, "items")) return items_of(c, v->map);
        if (tm_str_eq(name, "length")) return mkint(c, (double)v->map->n);
        tm_value *b = tm_member_builtin(c, v, name);
        if (b) return tm_call_method(c, b, tm_list_new(c->a, 0), at);
        tm_rfail(c, at, "Unknown ObjectValue filter: %s", fname);
    }
    if (v->type == V_BOOL) {
        if (tm_str_eq(name, "bool")) return v;
        if (tm_str_eq(name, "int")) return mkint(c, v->b);
        if (tm_str_eq(name, "float")) return tm_v_num(c->a, V_FLOAT, v->b);
        if (tm_str_eq(name, "string")) return v->b ? mkstr(c, "true", 4) : mkstr(c, "false", 5);
        tm_rfail(c, at, "Unknown BooleanValue filter: %s", fname);
    }
    tm_rfail(c, at, "Cannot apply filter \"%s\" to type: %s", fname, tm_type_name(v));
}

static tm_value *filter_call(tm_ctx *c, tm_env *e, tm_value *v, const tm_node *f, const tm_node *at) {
    if (f->a->kind != N_IDENT) tm_rfail(c, at, "unsupported filter expression");
    tm_str name = f->a->s;
    char fname[64];
    snprintf(fname, sizeof fname, "%.*s", (int)(name.n < 60 ? name.n : 60), name.p);
    tm_list *args = tm_list_new(c->a, f->n);
    tm_map *kw = tm_map_new(c->a);
    int evaluated = 0;
#define EVAL_ARGS() do { if (!evaluated) { tm_eval_args(c, e, f->list, f->n, args, kw, f); evaluated = 1; } } while (0)

    if (tm_str_eq(name, "tojson")) {
        EVAL_ARGS();
        tm_value *ind = kwarg(kw, "indent"), *asc = kwarg(kw, "ensure_ascii"), *sk = kwarg(kw, "sort_keys"),
                 *sep = kwarg(kw, "separators");
        tm_json_opts o = {0};
        if (ind && ind->type != V_INT && ind->type != V_NULL) tm_rfail(c, at, "If set, indent must be a number");
        if (ind && ind->type == V_INT) {
            if (ind->num < 0 || ind->num > 64) tm_rfail(c, at, "tojson: indent out of range");
            o.indent = (int)ind->num;
        }
        if (asc && asc->type != V_BOOL) tm_rfail(c, at, "If set, ensure_ascii must be a boolean");
        o.ascii = asc && asc->b;
        if (sk && sk->type != V_BOOL) tm_rfail(c, at, "If set, sort_keys must be a boolean");
        if (sk && sk->b) tm_rfail(c, at, "tojson(sort_keys=true) is not supported (the reference sorts by locale)");
        if (sep && sep->type == V_ARRAY) {
            if (sep->list->n != 2 || sep->list->v[0]->type != V_STR || sep->list->v[1]->type != V_STR)
                tm_rfail(c, at, "separators must be a tuple of two strings");
            o.item_sep = tm_memdup(c->a, sep->list->v[0]->s.p, sep->list->v[0]->s.n);
            o.key_sep = tm_memdup(c->a, sep->list->v[1]->s.p, sep->list->v[1]->s.n);
        } else if (sep && sep->type != V_NULL) {
            tm_rfail(c, at, "If set, separators must be a tuple of two strings");
        }
        return to_json_value(c, at, v, &o, 1);
    }
    if (tm_str_eq(name, "join")) {
        if (v->type != V_STR && v->type != V_ARRAY) tm_rfail(c, at, "Cannot apply filter \"join\" to type: %s", tm_type_name(v));
        EVAL_ARGS();
        tm_value *sep = arg(args, 0) ? arg(args, 0) : kwarg(kw, "separator");
        if (!sep) sep = mkstr(c, "", 0);
        if (sep->type != V_STR) tm_rfail(c, at, "separator must be a string");
        if (v->type == V_ARRAY) return join_list(c, at, v->list, sep->s.p, sep->s.n);
        tm_buf b = {0};
        tm_buf_put(c->a, &b, "", 0);
        for (size_t i = 0; i < v->s.n;) {
            uint32_t cp;
            size_t l = tm_utf8_next(v->s.p + i, v->s.n - i, &cp);
            if (i) tm_buf_put(c->a, &b, sep->s.p, sep->s.n);
            tm_buf_put(c->a, &b, v->s.p + i, l);
            i += l;
        }
        return buf_value(c, &b);
    }
    if (tm_str_eq(name, "int") || tm_str_eq(name, "float")) {
        int is_int = tm_str_eq(name, "int");
        EVAL_ARGS();
        tm_value *def = arg(args, 0) ? arg(args, 0) : kwarg(kw, "default");
        if (!def) def = tm_v_num(c->a, is_int ? V_INT : V_FLOAT, 0);
        if (v->type == V_STR) {
            double x = is_int ? parse_int(v) : parse_float(v);
            return isnan(x) ? def : tm_v_num(c->a, is_int ? V_INT : V_FLOAT, x);
        }
        if (v->type == V_INT || v->type == V_FLOAT) return v;
        if (v->type == V_BOOL) return tm_v_num(c->a, is_int ? V_INT : V_FLOAT, v->b);
        tm_rfail(c, at, "Cannot apply filter \"%s\" to type: %s", fname, tm_type_name(v));
    }
    if (tm_str_eq(name, "default")) {
        EVAL_ARGS();
        tm_value *def = arg(args, 0) ? arg(args, 0) : mkstr(c, "", 0);
        tm_value *boolean = arg(args, 1) ? arg(args, 1) : kwarg(kw, "boolean");
        if (!boolean) boolean = TM_FALSE;
        if (boolean->type != V_BOOL) tm_rfail(c, at, "`default` filter flag must be a boolean");
        if (v->type == V_UNDEF || (boolean->b && !tm_truthy(v))) return def;
        return v;
    }
    if (v->type == V_ARRAY) {
        tm_list *l = v->list;
        if (tm_str_eq(name, "sort")) {
            EVAL_ARGS();
            tm_value *rev = arg(args, 0) ? arg(args, 0) : kwarg(kw, "reverse");
            tm_value *cs = arg(args, 1) ? arg(args, 1) : kwarg(kw, "case_sensitive");
            tm_value *attr = arg(args, 2) ? arg(args, 2) : kwarg(kw, "attribute");
            if (!rev) rev = TM_FALSE;
            if (!cs) cs = TM_FALSE;
            if (!attr) attr = TM_NULL;
            if (rev->type != V_BOOL) tm_rfail(c, at, "reverse must be a boolean");
            if (cs->type != V_BOOL) tm_rfail(c, at, "case_sensitive must be a boolean");
            if (attr->type != V_STR && attr->type != V_INT && attr->type != V_NULL)
                tm_rfail(c, at, "attribute must be a string, integer, or null");
            tm_value **keys = tm_alloc(c->a, (l->n + 1) * sizeof *keys);
            tm_str path = {0};
            if (attr->type == V_STR) path = attr->s;
            if (attr->type == V_INT) {
                char tmp[40];
                tm_js_number(attr->num, tmp);
                path.p = tm_memdup(c->a, tmp, strlen(tmp));
                path.n = strlen(tmp);
            }
            for (size_t i = 0; i < l->n; i++) keys[i] = attr->type == V_NULL ? l->v[i] : attribute_of(c, l->v[i], path);
            return tm_v_array(c->a, sorted(c, at, l, keys, cs->b, rev->b));
        }
        if (tm_str_eq(name, "selectattr") || tm_str_eq(name, "rejectattr")) {
            int select = tm_str_eq(name, "selectattr");
            for (size_t i = 0; i < l->n; i++)
                if (l->v[i]->type != V_OBJECT && l->v[i]->type != V_NS)
                    tm_rfail(c, at, "`%s` can only be applied to array of objects", fname);
            for (size_t i = 0; i < f->n; i++)
                if (f->list[i]->kind != N_STR) tm_rfail(c, at, "arguments of `%s` must be strings", fname);
            tm_value *attr = f->n > 0 ? tm_eval(c, e, f->list[0]) : NULL;
            tm_value *test = f->n > 1 ? tm_eval(c, e, f->list[1]) : NULL;
            tm_value *val = f->n > 2 ? tm_eval(c, e, f->list[2]) : NULL;
            if (!attr) tm_rfail(c, at, "`%s` needs an attribute name", fname);
            if (test && !tm_has_test(test->s)) tm_rfail(c, at, "Unknown test: %.*s", (int)test->s.n, test->s.p);
            tm_list *r = tm_list_new(c->a, l->n);
            for (size_t i = 0; i < l->n; i++) {
                tm_value *a = tm_map_get(l->v[i]->map, attr->s.p, attr->s.n);
                int res = a ? (test ? tm_run_test(c, at, test->s, a, val) : tm_truthy(a)) : 0;
                if (select ? res : !res) tm_list_push(c->a, r, l->v[i]);
            }
            return tm_v_array(c->a, r);
        }
        if (tm_str_eq(name, "map")) {
            EVAL_ARGS();
            tm_value *attr = kwarg(kw, "attribute");
            if (!attr) tm_rfail(c, at, "`map` expressions without `attribute` set are not currently supported.");
            if (attr->type != V_STR) tm_rfail(c, at, "attribute must be a string");
            tm_value *def = kwarg(kw, "default");
            tm_list *r = tm_list_new(c->a, l->n);
            for (size_t i = 0; i < l->n; i++) {
                tm_value *it = l->v[i];
                if (it->type != V_OBJECT && it->type != V_NS) tm_rfail(c, at, "items in map must be an object");
                tm_value *x = attribute_of(c, it, attr->s);
                tm_list_push(c->a, r, x->type == V_UNDEF ? (def ? def : TM_UNDEF) : x);
            }
            return tm_v_array(c->a, r);
        }
        tm_rfail(c, at, "Unknown ArrayValue filter: %s", fname);
    }
    if (v->type == V_STR) {
        if (tm_str_eq(name, "indent")) {
            EVAL_ARGS();
            tm_value *w = arg(args, 0) ? arg(args, 0) : kwarg(kw, "width");
            tm_value *first = arg(args, 1) ? arg(args, 1) : kwarg(kw, "first");
            tm_value *blank = arg(args, 2) ? arg(args, 2) : kwarg(kw, "blank");
            if (w && w->type != V_INT) tm_rfail(c, at, "width must be a number");
            double width = w ? w->num : 4;
            if (width > 1000) tm_rfail(c, at, "indent: width too large");
            return indent(c, v, width, first ? raw_truthy(first) : 0, blank ? raw_truthy(blank) : 0);
        }
        if (tm_str_eq(name, "replace")) {
            EVAL_ARGS();
            tm_list *a2 = tm_list_new(c->a, args->n + 1);
            for (size_t i = 0; i < args->n; i++) tm_list_push(c->a, a2, args->v[i]);
            tm_value *kv = tm_v_object(c->a, kw);
            kv->kwargs = 1;
            tm_list_push(c->a, a2, kv);
            return replace(c, at, v, a2);
        }
        tm_rfail(c, at, "Unknown StringValue filter: %s", fname);
    }
    if (v->type == V_OBJECT) {
        tm_value *b = tm_member_builtin(c, v, name);
        if (b) {
            EVAL_ARGS();
            if (kw->n) {
                tm_value *kv = tm_v_object(c->a, kw);
                kv->kwargs = 1;
                tm_list_push(c->a, args, kv);
            }
            return tm_call_method(c, b, args, at);
        }
        tm_rfail(c, at, "Unknown ObjectValue filter: %s", fname);
    }
    tm_rfail(c, at, "Cannot apply filter \"%s\" to type: %s", fname, tm_type_name(v));
#undef EVAL_ARGS
}

tm_value *tm_apply_filter(tm_ctx *c, tm_env *e, tm_value *operand, const tm_node *filter, const tm_node *at) {
    if (filter->kind == N_IDENT) return filter_ident(c, e, operand, filter->s, at);
    if (filter->kind == N_CALL) return filter_call(c, e, operand, filter, at);
    tm_rfail(c, at, "unsupported filter expression");
}
