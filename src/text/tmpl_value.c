/*
 * tmpl_value.c — how the chat template interpreter's values print, compare
 * and serialize, copying the JavaScript the reference runs on: numbers print
 * as Number.prototype.toString does (whole floats as "3.0" when output, "3"
 * when concatenated or in JSON), == is JavaScript's loose equality, tojson is
 * the reference's JSON.stringify-based writer (", " and ": " separators, non-
 * ASCII left as is), and truthiness is Python's (empty lists are false).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tmpl_internal.h"

_Noreturn void tm_rfail(tm_ctx *c, const tm_node *at, const char *fmt, ...) {
    char msg[MOE_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at && at->line)
        tm_fail(c->a, "chat template error at line %d:%d: %s", at->line, at->col, msg);
    tm_fail(c->a, "chat template error: %s", msg);
}

const char *tm_type_name(const tm_value *v) {
    switch (v->type) {
    case V_UNDEF: return "UndefinedValue";
    case V_NULL: return "NullValue";
    case V_BOOL: return "BooleanValue";
    case V_INT: return "IntegerValue";
    case V_FLOAT: return "FloatValue";
    case V_STR: return "StringValue";
    case V_ARRAY: return v->tuple ? "TupleValue" : "ArrayValue";
    case V_OBJECT: return v->kwargs ? "KeywordArgumentsValue" : "ObjectValue";
    case V_NS: return "NamespaceValue";
    default: return "FunctionValue";
    }
}

int tm_truthy(const tm_value *v) {
    switch (v->type) {
    case V_BOOL: return v->b;
    case V_INT:
    case V_FLOAT: return v->num != 0 && !isnan(v->num);
    case V_STR: return v->s.n > 0;
    case V_ARRAY: return v->list->n > 0;
    case V_OBJECT: return v->map->n > 0;
    case V_NS:
    case V_FUNC: return 1;
    default: return 0;
    }
}

/* ---- numbers ---- */

void tm_js_number(double x, char out[40]) {
    if (isnan(x)) { strcpy(out, "NaN"); return; }
    if (isinf(x)) { strcpy(out, x > 0 ? "Infinity" : "-Infinity"); return; }
    if (x == 0) { strcpy(out, "0"); return; }
    char buf[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x) break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[24];
    int k = 0, neg = 0;
    const char *p = buf;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[k++] = *p;
    while (k > 1 && digits[k - 1] == '0') k--;
    digits[k] = 0;
    int e = atoi(p + 1);
    int n = e + 1; /* value = 0.digits * 10^n */
    char *o = out;
    if (neg) *o++ = '-';
    if (k <= n && n <= 21) {
        memcpy(o, digits, (size_t)k); o += k;
        for (int i = 0; i < n - k; i++) *o++ = '0';
    } else if (0 < n && n <= 21) {
        memcpy(o, digits, (size_t)n); o += n;
        *o++ = '.';
        memcpy(o, digits + n, (size_t)(k - n)); o += k - n;
    } else if (-6 < n && n <= 0) {
        *o++ = '0'; *o++ = '.';
        for (int i = 0; i < -n; i++) *o++ = '0';
        memcpy(o, digits, (size_t)k); o += k;
    } else {
        *o++ = digits[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)(k - 1)); o += k - 1;
        }
        o += sprintf(o, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
    *o = 0;
}

static void float_string(double x, tm_arena *a, tm_buf *out) {
    char tmp[400];
    if (x == 0 && signbit(x)) { tm_buf_puts(a, out, "-0.0"); return; }
    if (isfinite(x) && x == floor(x)) {
        if (fabs(x) < 1e21) {
            snprintf(tmp, sizeof tmp, "%.1f", x);
            tm_buf_puts(a, out, tmp);
            return;
        }
    }
    tm_js_number(x, tmp);
    tm_buf_puts(a, out, tmp);
}

/* ---- strings ---- */

void tm_rv_string(tm_ctx *c, const tm_node *at, const tm_value *v, tm_buf *out) {
    char tmp[40];
    switch (v->type) {
    case V_UNDEF: tm_buf_puts(c->a, out, "undefined"); return;
    case V_NULL: tm_buf_puts(c->a, out, "null"); return;
    case V_BOOL: tm_buf_puts(c->a, out, v->b ? "true" : "false"); return;
    case V_INT: tm_js_number(v->num, tmp); tm_buf_puts(c->a, out, tmp); return;
    case V_FLOAT: float_string(v->num, c->a, out); return;
    case V_STR: tm_buf_put(c->a, out, v->s.p, v->s.n); return;
    case V_ARRAY:
    case V_OBJECT:
    case V_NS: tm_to_json(c, at, v, NULL, 0, 0, out); return;
    default: tm_rfail(c, at, "printing a function is not supported");
    }
}

void tm_js_string(tm_ctx *c, const tm_node *at, const tm_value *v, tm_buf *out) {
    char tmp[40];
    switch (v->type) {
    case V_INT:
    case V_FLOAT: tm_js_number(v->num, tmp); tm_buf_puts(c->a, out, tmp); return;
    case V_ARRAY:
        for (size_t i = 0; i < v->list->n; i++) {
            if (i) tm_buf_put(c->a, out, ",", 1);
            tm_rv_string(c, at, v->list->v[i], out);
        }
        return;
    case V_OBJECT:
    case V_NS: tm_buf_puts(c->a, out, "[object Map]"); return;
    default: tm_rv_string(c, at, v, out); return;
    }
}

/* ---- JSON ---- */

static void json_string(tm_arena *a, const char *s, size_t n, int ascii, tm_buf *out) {
    static const char hex[] = "0123456789abcdef";
    tm_buf_put(a, out, "\"", 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = tm_utf8_next(s + i, n - i, &cp);
        char e[16];
        if (cp == '"') tm_buf_put(a, out, "\\\"", 2);
        else if (cp == '\\') tm_buf_put(a, out, "\\\\", 2);
        else if (cp == '\b') tm_buf_put(a, out, "\\b", 2);
        else if (cp == '\f') tm_buf_put(a, out, "\\f", 2);
        else if (cp == '\n') tm_buf_put(a, out, "\\n", 2);
        else if (cp == '\r') tm_buf_put(a, out, "\\r", 2);
        else if (cp == '\t') tm_buf_put(a, out, "\\t", 2);
        else if (cp < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", cp);
            tm_buf_puts(a, out, e);
        } else if (ascii && cp >= 0x7F && l > 1) {
            uint32_t units[2];
            int nu = 1;
            if (cp >= 0x10000) {
                units[0] = 0xD800 + ((cp - 0x10000) >> 10);
                units[1] = 0xDC00 + ((cp - 0x10000) & 0x3FF);
                nu = 2;
            } else {
                units[0] = cp;
            }
            for (int u = 0; u < nu; u++) {
                char h[7] = {'\\', 'u', hex[units[u] >> 12], hex[(units[u] >> 8) & 15],
                             hex[(units[u] >> 4) & 15], hex[units[u] & 15], 0};
                tm_buf_put(a, out, h, 6);
            }
        } else if (ascii && cp == 0x7F) {
            tm_buf_puts(a, out, "\\u007f");
        } else {
            tm_buf_put(a, out, s + i, l);
        }
        i += l;
    }
    tm_buf_put(a, out, "\"", 1);
}

void tm_to_json(tm_ctx *c, const tm_node *at, const tm_value *v, const tm_json_opts *o, int depth,
                int undef_null, tm_buf *out) {
    static const tm_json_opts defaults = {0};
    if (!o) o = &defaults;
    const char *item_sep = o->item_sep ? o->item_sep : o->indent ? "," : ", ";
    const char *key_sep = o->key_sep ? o->key_sep : ": ";
    char tmp[40];
    if (depth > 500) tm_rfail(c, at, "tojson: value nested too deeply");
    switch (v->type) {
    case V_NULL: tm_buf_puts(c->a, out, "null"); return;
    case V_UNDEF: tm_buf_puts(c->a, out, undef_null ? "null" : "undefined"); return;
    case V_INT:
    case V_FLOAT:
        if (!isfinite(v->num)) tm_buf_puts(c->a, out, "null");
        else { tm_js_number(v->num, tmp); tm_buf_puts(c->a, out, tmp); }
        return;
    case V_BOOL: tm_buf_puts(c->a, out, v->b ? "true" : "false"); return;
    case V_STR: json_string(c->a, v->s.p, v->s.n, o->ascii, out); return;
    default: break;
    }
    if ((v->type == V_ARRAY && v->tuple) || (v->type == V_OBJECT && v->kwargs) || v->type == V_FUNC)
        tm_rfail(c, at, "Cannot convert to JSON: %s", tm_type_name(v));
    tm_buf pad = {0}, child = {0};
    if (o->indent) {
        tm_buf_put(c->a, &pad, "\n", 1);
        for (int d = 0; d < depth; d++)
            for (int i = 0; i < o->indent; i++) tm_buf_put(c->a, &pad, " ", 1);
        tm_buf_put(c->a, &child, pad.p, pad.n);
        for (int i = 0; i < o->indent; i++) tm_buf_put(c->a, &child, " ", 1);
    }
    if (v->type == V_ARRAY) {
        size_t n = v->list->n;
        tm_buf_put(c->a, out, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) tm_buf_puts(c->a, out, item_sep);
            if (o->indent) tm_buf_put(c->a, out, child.p, child.n);
            tm_to_json(c, at, v->list->v[i], o, depth + 1, undef_null, out);
        }
        if (o->indent && n) tm_buf_put(c->a, out, pad.p, pad.n);
        tm_buf_put(c->a, out, "]", 1);
        return;
    }
    const tm_map *m = v->map;
    tm_buf_put(c->a, out, "{", 1);
    for (size_t i = 0; i < m->n; i++) {
        if (i) tm_buf_puts(c->a, out, item_sep);
        if (o->indent) tm_buf_put(c->a, out, child.p, child.n);
        json_string(c->a, m->k[i].p, m->k[i].n, o->ascii, out);
        tm_buf_puts(c->a, out, key_sep);
        tm_to_json(c, at, m->v[i], o, depth + 1, undef_null, out);
    }
    if (o->indent && m->n) tm_buf_put(c->a, out, pad.p, pad.n);
    tm_buf_put(c->a, out, "}", 1);
}

/* ---- equality ---- */

enum { JS_UNDEF, JS_NULL, JS_BOOL, JS_NUM, JS_STR, JS_OBJ };

static int js_kind(const tm_value *v) {
    switch (v->type) {
    case V_UNDEF: return JS_UNDEF;
    case V_NULL: return JS_NULL;
    case V_BOOL: return JS_BOOL;
    case V_INT:
    case V_FLOAT: return JS_NUM;
    case V_STR: return JS_STR;
    default: return JS_OBJ;
    }
}

static const void *identity(const tm_value *v) {
    switch (v->type) {
    case V_ARRAY: return v->list;
    case V_OBJECT:
    case V_NS: return v->map;
    default: return v->fn;
    }
}

int tm_strict_eq(const tm_value *x, const tm_value *y) {
    int kx = js_kind(x), ky = js_kind(y);
    if (kx != ky) return 0;
    switch (kx) {
    case JS_UNDEF:
    case JS_NULL: return 1;
    case JS_BOOL: return x->b == y->b;
    case JS_NUM: return x->num == y->num;
    case JS_STR: return x->s.n == y->s.n && memcmp(x->s.p, y->s.p, x->s.n) == 0;
    default: return identity(x) == identity(y);
    }
}

/* StringToNumber */
static double str_to_num(const char *s, size_t n) {
    size_t i = 0, j = n, k;
    uint32_t cp;
    while (i < j && (k = tm_utf8_next(s + i, j - i, &cp)) && tm_js_space(cp)) i += k;
    while (j > i) {
        size_t back = 0;
        for (size_t b = 1; b <= 4 && b <= j - i; b++) {
            if (tm_utf8_next(s + j - b, b, &cp) == b && tm_js_space(cp)) { back = b; break; }
        }
        if (!back) break;
        j -= back;
    }
    if (i == j) return 0;
    char buf[400];
    size_t len = j - i;
    if (len >= sizeof buf) return NAN;
    memcpy(buf, s + i, len);
    buf[len] = 0;
    if (!strcmp(buf, "Infinity") || !strcmp(buf, "+Infinity")) return INFINITY;
    if (!strcmp(buf, "-Infinity")) return -INFINITY;
    if (len > 2 && buf[0] == '0' && strchr("xXoObB", buf[1])) {
        int base = (buf[1] == 'x' || buf[1] == 'X') ? 16 : (buf[1] == 'o' || buf[1] == 'O') ? 8 : 2;
        double v = 0;
        for (size_t q = 2; q < len; q++) {
            int d = buf[q] >= '0' && buf[q] <= '9' ? buf[q] - '0'
                  : buf[q] >= 'a' && buf[q] <= 'f' ? buf[q] - 'a' + 10
                  : buf[q] >= 'A' && buf[q] <= 'F' ? buf[q] - 'A' + 10 : 99;
            if (d >= base) return NAN;
            v = v * base + d;
        }
        return v;
    }
    /* decimal literal: [+-] (digits [. digits] | . digits) [e [+-] digits] */
    size_t q = 0;
    int digits = 0;
    if (buf[q] == '+' || buf[q] == '-') q++;
    while (buf[q] >= '0' && buf[q] <= '9') { q++; digits++; }
    if (buf[q] == '.') {
        q++;
        while (buf[q] >= '0' && buf[q] <= '9') { q++; digits++; }
    }
    if (!digits) return NAN;
    if (buf[q] == 'e' || buf[q] == 'E') {
        q++;
        if (buf[q] == '+' || buf[q] == '-') q++;
        int ed = 0;
        while (buf[q] >= '0' && buf[q] <= '9') { q++; ed++; }
        if (!ed) return NAN;
    }
    if (q != len) return NAN;
    return strtod(buf, NULL);
}

/* ToPrimitive of an object, as a string */
static tm_value *to_primitive(tm_ctx *c, const tm_node *at, const tm_value *v) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    if (v->type == V_FUNC) tm_rfail(c, at, "comparing a function is not supported");
    tm_js_string(c, at, v, &b);
    return tm_v_str_ref(c->a, b.p, b.n);
}

int tm_loose_eq(tm_ctx *c, const tm_node *at, const tm_value *x, const tm_value *y) {
    for (int guard = 0; guard < 4; guard++) {
        int kx = js_kind(x), ky = js_kind(y);
        if (kx == ky) return tm_strict_eq(x, y);
        if ((kx == JS_UNDEF || kx == JS_NULL) && (ky == JS_UNDEF || ky == JS_NULL)) return 1;
        if (kx == JS_UNDEF || kx == JS_NULL || ky == JS_UNDEF || ky == JS_NULL) return 0;
        if (kx == JS_NUM && ky == JS_STR) return x->num == str_to_num(y->s.p, y->s.n);
        if (kx == JS_STR && ky == JS_NUM) return str_to_num(x->s.p, x->s.n) == y->num;
        if (kx == JS_BOOL) { x = tm_v_num(c->a, V_INT, x->b); continue; }
        if (ky == JS_BOOL) { y = tm_v_num(c->a, V_INT, y->b); continue; }
        if (kx == JS_OBJ && (ky == JS_NUM || ky == JS_STR)) { x = to_primitive(c, at, x); continue; }
        if (ky == JS_OBJ && (kx == JS_NUM || kx == JS_STR)) { y = to_primitive(c, at, y); continue; }
        return 0;
    }
    return 0;
}

/* ---- ordering (sort, dictsort) ---- */

/* JavaScript compares strings by UTF-16 code units */
static int cmp_utf16(const char *a, size_t an, const char *b, size_t bn) {
    size_t i = 0, j = 0;
    while (i < an && j < bn) {
        uint32_t x, y;
        size_t lx = tm_utf8_next(a + i, an - i, &x), ly = tm_utf8_next(b + j, bn - j, &y);
        if (x != y) {
            uint32_t ux = x >= 0x10000 ? 0xD800 + ((x - 0x10000) >> 10) : x;
            uint32_t uy = y >= 0x10000 ? 0xD800 + ((y - 0x10000) >> 10) : y;
            if (ux != uy) return ux < uy ? -1 : 1;
            uint32_t lx2 = 0xDC00 + ((x - 0x10000) & 0x3FF), ly2 = 0xDC00 + ((y - 0x10000) & 0x3FF);
            return lx2 < ly2 ? -1 : 1;
        }
        i += lx;
        j += ly;
    }
    if (i < an) return 1;
    if (j < bn) return -1;
    return 0;
}

int tm_compare(tm_ctx *c, const tm_node *at, const tm_value *x, const tm_value *y, int case_sensitive) {
    if (x->type == V_NULL && y->type == V_NULL) return 0;
    if (x->type == V_NULL || y->type == V_NULL)
        tm_rfail(c, at, "Cannot compare %s with %s", tm_type_name(x), tm_type_name(y));
    if (x->type == V_UNDEF && y->type == V_UNDEF) return 0;
    if (x->type == V_UNDEF || y->type == V_UNDEF)
        tm_rfail(c, at, "Cannot compare %s with %s", tm_type_name(x), tm_type_name(y));
    int nx = x->type == V_INT || x->type == V_FLOAT || x->type == V_BOOL;
    int ny = y->type == V_INT || y->type == V_FLOAT || y->type == V_BOOL;
    if (nx && ny) {
        double a = x->type == V_BOOL ? x->b : x->num, b = y->type == V_BOOL ? y->b : y->num;
        return a < b ? -1 : a > b ? 1 : 0;
    }
    if (strcmp(tm_type_name(x), tm_type_name(y)) != 0)
        tm_rfail(c, at, "Cannot compare different types: %s and %s", tm_type_name(x), tm_type_name(y));
    if (x->type != V_STR) tm_rfail(c, at, "Cannot compare type: %s", tm_type_name(x));
    if (!case_sensitive) {
        x = tm_case(c, at, x, 0, "sort");
        y = tm_case(c, at, y, 0, "sort");
    }
    return cmp_utf16(x->s.p, x->s.n, y->s.p, y->s.n);
}

/* ---- case ---- */

/* Characters that have no case mapping at all (punctuation, symbols, emoji,
 * and scripts without case), so that changing case leaves them alone. */
static int caseless(uint32_t c) {
    return (c >= 0xA0 && c <= 0xBF && c != 0xB5) || c == 0xD7 || c == 0xF7 || (c >= 0x590 && c <= 0x109F) ||
           (c >= 0x2000 && c <= 0x20CF) || (c >= 0x2190 && c <= 0x245F) || (c >= 0x2500 && c <= 0x2BFF) ||
           (c >= 0x2E80 && c <= 0xA4CF) || (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0xF900 && c <= 0xFAFF) ||
           (c >= 0xFE00 && c <= 0xFE0F) || (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFF20) ||
           (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFFEF) || (c >= 0x1F000 && c <= 0x1FAFF) ||
           (c >= 0x20000 && c <= 0x3FFFF);
}

static void put_cp(tm_arena *a, tm_buf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    }
    tm_buf_put(a, b, u, n);
}

/* JavaScript's toUpperCase/toLowerCase for ASCII and Latin-1; other text with
 * case (Greek, Cyrillic, ...) fails with a clear error rather than print
 * something the reference would not. */
tm_value *tm_case(tm_ctx *c, const tm_node *at, const tm_value *s, int upper, const char *what) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    for (size_t i = 0; i < s->s.n;) {
        uint32_t cp;
        size_t l = tm_utf8_next(s->s.p + i, s->s.n - i, &cp);
        if (cp < 0x80) {
            char ch = (char)cp;
            if (upper && ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
            if (!upper && ch >= 'A' && ch <= 'Z') ch = (char)(ch + 32);
            tm_buf_put(c->a, &b, &ch, 1);
        } else if (l > 1 && caseless(cp)) {
            tm_buf_put(c->a, &b, s->s.p + i, l);
        } else if (l > 1 && cp < 0x100) {
            if (upper) {
                if (cp == 0xDF) tm_buf_put(c->a, &b, "SS", 2);
                else if (cp == 0xB5) put_cp(c->a, &b, 0x39C);
                else if (cp == 0xFF) put_cp(c->a, &b, 0x178);
                else put_cp(c->a, &b, cp >= 0xE0 ? cp - 0x20 : cp);
            } else {
                put_cp(c->a, &b, cp >= 0xC0 && cp <= 0xDE ? cp + 0x20 : cp);
            }
        } else {
            tm_rfail(c, at, "%s: changing the case of non-ASCII text (U+%04X) is not supported", what, cp);
        }
        i += l;
    }
    return tm_v_str_ref(c->a, b.p, b.n);
}
