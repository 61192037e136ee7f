/*
 * tmpl_util.c — the chat template interpreter's memory and small helpers: an
 * arena that owns every allocation of a parse or a render, byte buffers,
 * UTF-8 decoding with JavaScript's idea of whitespace and length, and the
 * constructors of runtime values (including conversion from parsed JSON).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tmpl_internal.h"

/* ---- arena ---- */

struct tm_block {
    tm_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

_Noreturn void tm_fail(tm_arena *a, const char *fmt, ...) {
    if (a->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(a->err->msg, sizeof a->err->msg, fmt, ap);
        va_end(ap);
    }
    longjmp(*a->fail, 1);
}

void *tm_alloc(tm_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    tm_block *b = a->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 - sizeof(tm_block) ? n : 65536 - sizeof(tm_block);
        if (a->limit && a->total + cap > a->limit)
            tm_fail(a, "chat template: out of memory (over the %zu MiB a render may use)", a->limit >> 20);
        b = malloc(sizeof(tm_block) + cap);
        if (!b) tm_fail(a, "chat template: out of memory");
        b->next = a->blocks;
        b->used = 0;
        b->cap = cap;
        a->blocks = b;
        a->total += cap;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *tm_memdup(tm_arena *a, const char *s, size_t n) {
    char *p = tm_alloc(a, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void tm_arena_free(tm_arena *a) {
    tm_block *b = a->blocks;
    while (b) {
        tm_block *next = b->next;
        free(b);
        b = next;
    }
    a->blocks = NULL;
    a->total = 0;
}

int tm_str_eq(tm_str a, const char *b) {
    size_t n = strlen(b);
    return a.n == n && memcmp(a.p, b, n) == 0;
}

/* ---- buffers ---- */

void tm_buf_put(tm_arena *a, tm_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = tm_alloc(a, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void tm_buf_puts(tm_arena *a, tm_buf *b, const char *s) { tm_buf_put(a, b, s, strlen(s)); }

void tm_buf_printf(tm_arena *a, tm_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    tm_buf_put(a, b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- unicode ---- */

size_t tm_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) { *cp = 0; return 0; }
    unsigned c = u[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    else if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = 0xDC80 + c; return 1; }
    if (len > n) { *cp = 0xDC80 + c; return 1; }
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) { *cp = 0xDC80 + c; return 1; }
        v = (v << 6) | (u[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = 0xDC80 + c; return 1; }
    *cp = v;
    return len;
}

int tm_js_space(uint32_t c) {
    return c == 0x09 || c == 0x0A || c == 0x0B || c == 0x0C || c == 0x0D || c == 0x20 ||
           c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

size_t tm_utf16_len(const char *s, size_t n) {
    size_t units = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += tm_utf8_next(s + i, n - i, &cp);
        units += cp >= 0x10000 ? 2 : 1;
    }
    return units;
}

/* ---- values ---- */

const tm_value tm_undef = {.type = V_UNDEF};
const tm_value tm_null = {.type = V_NULL};
const tm_value tm_true = {.type = V_BOOL, .b = 1};
const tm_value tm_false = {.type = V_BOOL, .b = 0};

tm_value *tm_v_str_ref(tm_arena *a, const char *p, size_t n) {
    tm_value *v = tm_alloc(a, sizeof *v);
    v->type = V_STR;
    v->s.p = p ? p : "";
    v->s.n = n;
    return v;
}

tm_value *tm_v_str(tm_arena *a, const char *p, size_t n) {
    return tm_v_str_ref(a, tm_memdup(a, p, n), n);
}

tm_value *tm_v_num(tm_arena *a, int type, double x) {
    tm_value *v = tm_alloc(a, sizeof *v);
    v->type = (uint8_t)type;
    v->num = x;
    return v;
}

tm_value *tm_v_array(tm_arena *a, tm_list *l) {
    tm_value *v = tm_alloc(a, sizeof *v);
    v->type = V_ARRAY;
    v->list = l ? l : tm_list_new(a, 0);
    return v;
}

tm_value *tm_v_object(tm_arena *a, tm_map *m) {
    tm_value *v = tm_alloc(a, sizeof *v);
    v->type = V_OBJECT;
    v->map = m ? m : tm_map_new(a);
    return v;
}

tm_list *tm_list_new(tm_arena *a, size_t cap) {
    tm_list *l = tm_alloc(a, sizeof *l);
    if (cap) {
        l->v = tm_alloc(a, cap * sizeof *l->v);
        l->cap = cap;
    }
    return l;
}

void tm_list_push(tm_arena *a, tm_list *l, tm_value *v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        tm_value **nv = tm_alloc(a, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

tm_map *tm_map_new(tm_arena *a) { return tm_alloc(a, sizeof(tm_map)); }

tm_value *tm_map_get(const tm_map *m, const char *k, size_t kn) {
    for (size_t i = 0; i < m->n; i++)
        if (m->k[i].n == kn && memcmp(m->k[i].p, k, kn) == 0) return m->v[i];
    return NULL;
}

void tm_map_set(tm_arena *a, tm_map *m, const char *k, size_t kn, tm_value *v) {
    for (size_t i = 0; i < m->n; i++)
        if (m->k[i].n == kn && memcmp(m->k[i].p, k, kn) == 0) {
            m->v[i] = v;
            return;
        }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        tm_str *nk = tm_alloc(a, cap * sizeof *nk);
        tm_value **nv = tm_alloc(a, cap * sizeof *nv);
        if (m->n) {
            memcpy(nk, m->k, m->n * sizeof *nk);
            memcpy(nv, m->v, m->n * sizeof *nv);
        }
        m->k = nk;
        m->v = nv;
        m->cap = cap;
    }
    m->k[m->n].p = k;
    m->k[m->n].n = kn;
    m->v[m->n] = v;
    m->n++;
}

/* JavaScript enumerates keys that are array indices (canonical decimal
 * integers below 2^32 - 1) first, in ascending order, then the others in
 * insertion order. */
static int array_index(const char *s, double *out) {
    size_t n = strlen(s);
    if (n == 0 || n > 10) return 0;
    if (n > 1 && s[0] == '0') return 0;
    double v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    if (v >= 4294967295.0) return 0;
    *out = v;
    return 1;
}

tm_value *tm_from_json(tm_arena *a, const cJSON *j) {
    if (!j || cJSON_IsNull(j)) return TM_NULL;
    if (cJSON_IsBool(j)) return cJSON_IsTrue(j) ? TM_TRUE : TM_FALSE;
    if (cJSON_IsNumber(j)) {
        double x = j->valuedouble;
        int is_int = isfinite(x) && x == floor(x);
        return tm_v_num(a, is_int ? V_INT : V_FLOAT, x);
    }
    if (cJSON_IsString(j)) {
        const char *s = j->valuestring ? j->valuestring : "";
        return tm_v_str(a, s, strlen(s));
    }
    if (cJSON_IsArray(j)) {
        tm_list *l = tm_list_new(a, 0);
        for (const cJSON *c = j->child; c; c = c->next) tm_list_push(a, l, tm_from_json(a, c));
        return tm_v_array(a, l);
    }
    if (cJSON_IsObject(j)) {
        tm_map *m = tm_map_new(a);
        /* index-like keys first, ascending (insertion sort: objects are small) */
        size_t nidx = 0;
        for (const cJSON *c = j->child; c; c = c->next) {
            double idx;
            if (!c->string || !array_index(c->string, &idx)) continue;
            tm_value *v = tm_from_json(a, c);
            size_t kn = strlen(c->string);
            if (tm_map_get(m, c->string, kn)) {
                tm_map_set(a, m, c->string, kn, v);
                continue;
            }
            tm_map_set(a, m, tm_memdup(a, c->string, kn), kn, v);
            /* move the new key into place among the first nidx */
            size_t pos = m->n - 1;
            while (pos > 0) {
                double prev = 0;
                array_index(m->k[pos - 1].p, &prev);
                if (prev < idx) break;
                tm_str tk = m->k[pos]; m->k[pos] = m->k[pos - 1]; m->k[pos - 1] = tk;
                tm_value *tv = m->v[pos]; m->v[pos] = m->v[pos - 1]; m->v[pos - 1] = tv;
                pos--;
            }
            nidx++;
        }
        for (const cJSON *c = j->child; c; c = c->next) {
            double idx;
            const char *k = c->string ? c->string : "";
            if (array_index(k, &idx)) continue;
            size_t kn = strlen(k);
            tm_value *v = tm_from_json(a, c);
            if (tm_map_get(m, k, kn)) tm_map_set(a, m, k, kn, v);
            else tm_map_set(a, m, tm_memdup(a, k, kn), kn, v);
        }
        (void)nidx;
        return tm_v_object(a, m);
    }
    return TM_UNDEF;
}
