/*
 * tok_utf8.c — the small pieces of text handling the tokenizer needs: growable
 * vectors and a bump arena, UTF-8 decoding exactly as the WHATWG decoder does
 * it (what TextDecoder gives the reference), the byte-level alphabet of GPT-2
 * (bytes_to_unicode), JavaScript's idea of white space, and Unicode
 * normalization through utf8proc.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "text/tok_internal.h"
#include "text/tok_unicode_data.h"

/* ---- vectors ---- */

static int grow(void **p, size_t elem, size_t need, size_t *cap) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

void tok_bytes_put(tok_bytes *b, const void *p, size_t n) {
    if (b->oom) return;
    if (grow((void **)&b->p, 1, b->n + n + 1, &b->cap)) { b->oom = 1; return; }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
}

int tok_bytes_reserve(tok_bytes *b, size_t n) {
    if (b->oom) return -1;
    if (grow((void **)&b->p, 1, b->n + n + 1, &b->cap)) { b->oom = 1; return -1; }
    return 0;
}

void tok_bytes_putc(tok_bytes *b, char c) {
    if (!b->oom && b->n + 2 <= b->cap) {
        b->p[b->n++] = c;
        b->p[b->n] = 0;
        return;
    }
    tok_bytes_put(b, &c, 1);
}

void tok_bytes_free(tok_bytes *b) {
    free(b->p);
    *b = (tok_bytes){0};
}

void tok_ids_push(tok_ids *a, int32_t x) {
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t cap = (size_t)a->cap;
        if (grow((void **)&a->v, sizeof *a->v, cap + 1, &cap) || cap > INT32_MAX) { a->oom = 1; return; }
        a->cap = (int)cap;
    }
    a->v[a->n++] = x;
}

void tok_ids_free(tok_ids *a) {
    free(a->v);
    *a = (tok_ids){0};
}

void tok_spans_push(tok_spans *a, const char *p, size_t n) {
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t cap = (size_t)a->cap;
        if (grow((void **)&a->v, sizeof *a->v, cap + 1, &cap) || cap > INT32_MAX) { a->oom = 1; return; }
        a->cap = (int)cap;
    }
    a->v[a->n++] = (tok_span){p, n};
}

void tok_spans_free(tok_spans *a) {
    free(a->v);
    *a = (tok_spans){0};
}

/* ---- arena ---- */

typedef struct tok_arena_block {
    struct tok_arena_block *next;
    size_t used, cap;
    char data[];
} tok_arena_block;

char *tok_arena_alloc(tok_arena *a, size_t n) {
    if (a->oom) return NULL;
    tok_arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) { a->oom = 1; return NULL; }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    char *p = b->data + b->used;
    b->used += n;
    return p;
}

char *tok_arena_dup(tok_arena *a, const char *p, size_t n) {
    char *q = tok_arena_alloc(a, n + 1);
    if (!q) return NULL;
    if (n) memcpy(q, p, n);
    q[n] = 0;
    return q;
}

void tok_arena_free(tok_arena *a) {
    for (tok_arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    *a = (tok_arena){0};
}

/* ---- UTF-8 ---- */

int tok_utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

int tok_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const uint8_t *u = (const uint8_t *)s;
    if (n == 0) { *cp = 0; return 0; }
    uint8_t b = u[0];
    if (b < 0x80 || n < 2) { *cp = b; return 1; }
    if (b < 0xE0) { *cp = (uint32_t)(b & 0x1F) << 6 | (u[1] & 0x3F); return 2; }
    if (b < 0xF0 || n < 4) {
        if (n < 3) { *cp = b; return 1; }
        *cp = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
        return 3;
    }
    *cp = (uint32_t)(b & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 | (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    return 4;
}

/* The WHATWG "UTF-8 decoder" algorithm (Encoding Standard, 4.1). */
void tok_utf8_whatwg(const char *s, size_t n, int final, tok_bytes *out, size_t *pending) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, run = 0; /* run: start of bytes copied through unchanged */
    int need = 0, seen = 0;
    uint8_t lower = 0x80, upper = 0xBF;
    size_t seq_start = 0;
    if (pending) *pending = 0;
    while (i < n) {
        uint8_t b = u[i];
        if (need == 0) {
            if (b < 0x80) { i++; continue; }
            seq_start = i;
            if (b >= 0xC2 && b <= 0xDF) need = 1;
            else if (b >= 0xE0 && b <= 0xEF) {
                if (b == 0xE0) lower = 0xA0;
                if (b == 0xED) upper = 0x9F;
                need = 2;
            } else if (b >= 0xF0 && b <= 0xF4) {
                if (b == 0xF0) lower = 0x90;
                if (b == 0xF4) upper = 0x8F;
                need = 3;
            } else {
                tok_bytes_put(out, s + run, i - run);
                tok_bytes_put(out, fffd, 3);
                run = ++i;
                continue;
            }
            seen = 0;
            i++;
            continue;
        }
        if (b < lower || b > upper) {
            /* the sequence so far is one error; b is looked at again */
            tok_bytes_put(out, s + run, seq_start - run);
            tok_bytes_put(out, fffd, 3);
            run = i;
            need = seen = 0;
            lower = 0x80; upper = 0xBF;
            continue;
        }
        lower = 0x80; upper = 0xBF;
        i++;
        if (++seen == need) need = seen = 0; /* a whole character: stays in the run */
    }
    if (need) {
        tok_bytes_put(out, s + run, seq_start - run);
        if (final) tok_bytes_put(out, fffd, 3);
        else if (pending) *pending = n - seq_start;
    } else {
        tok_bytes_put(out, s + run, n - run);
    }
}

int tok_utf8_valid(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint8_t b = u[i];
        if (b < 0x80) { i++; continue; }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) { need = 2; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
        else if (b >= 0xF0 && b <= 0xF4) { need = 3; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
        else return 0;
        if (n - i <= (size_t)need) return 0;
        if (u[i + 1] < lo || u[i + 1] > hi) return 0;
        for (int k = 2; k <= need; k++)
            if ((u[i + k] & 0xC0) != 0x80) return 0;
        i += (size_t)need + 1;
    }
    return 1;
}

/* ---- byte-level alphabet ---- */

/* bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes are mapped in order to U+0100 onwards. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    int k = 0; /* rank of b among the unprintable bytes */
    if (b <= 0x20) k = b;                      /* 0x00..0x20: 33 */
    else if (b <= 0xA0) k = 33 + (b - 0x7F);   /* 0x7F..0xA0: 34 */
    else k = 67;                               /* 0xAD */
    return 256u + (uint32_t)k;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) {
        if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE) return (int)cp;
        return -1;
    }
    if (cp >= 256 + 68) return -1;
    int k = (int)cp - 256;
    if (k <= 32) return k;
    if (k <= 66) return 0x7F + (k - 33);
    return 0xAD;
}

int tok_js_space(uint32_t cp) {
    if (cp == 0x20 || (cp >= 0x09 && cp <= 0x0D)) return 1;
    if (cp < 0xA0) return 0;
    return cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

/* ---- normalization ---- */

/* Decompositions and compositions of the reference's Unicode that utf8proc lacks. */
static const tok_udecomp *new_decomp(uint32_t cp) {
    int lo = 0, hi = tok_unicode_n_decomps;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        uint32_t c = tok_unicode_decomps[mid].cp;
        if (c == cp) return &tok_unicode_decomps[mid];
        if (c < cp) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static uint32_t new_composite(uint32_t a, uint32_t b) {
    for (int i = 0; i < tok_unicode_n_compositions; i++)
        if (tok_unicode_compositions[i].a == a && tok_unicode_compositions[i].b == b) return tok_unicode_compositions[i].cp;
    return 0;
}

static int new_second(uint32_t cp) {
    for (int i = 0; i < tok_unicode_n_compositions; i++)
        if (tok_unicode_compositions[i].b == cp) return 1;
    return 0;
}

/* 1 if no normalization can change s: no combining marks, nothing that
 * decomposes (canonically, or at all for the K forms), no conjoining jamo,
 * and for NFD no precomposed Hangul. Second elements of compositions are all
 * marks or jamo (or in the table of new ones), so such text has nothing to
 * compose either. */
static int normal_already(int form, const char *s, size_t n) {
    int compat = form == TOK_NORM_NFKC || form == TOK_NORM_NFKD;
    for (size_t i = 0; i < n;) {
        uint8_t b = (uint8_t)s[i];
        if (b < 0x80) { i++; continue; }
        uint32_t cp;
        i += (size_t)tok_utf8_next(s + i, n - i, &cp);
        if (cp < 0x300 && form == TOK_NORM_NFC) continue; /* NFD decomposes é; the K forms fold ª, ², ... */
        if (cp >= 0x1100 && cp <= 0x11FF) return 0;
        if (form == TOK_NORM_NFD && cp >= 0xAC00 && cp <= 0xD7A3) return 0;
        if (compat && cp >= 0xAC00 && cp <= 0xD7A3) return 0;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        if (p->combining_class != 0) return 0;
        if (p->category == UTF8PROC_CATEGORY_MN || p->category == UTF8PROC_CATEGORY_MC ||
            p->category == UTF8PROC_CATEGORY_ME)
            return 0;
        if (p->decomp_seqindex != UINT16_MAX && (compat || p->decomp_type == 0)) return 0;
        if (new_decomp(cp) || new_second(cp)) return 0;
    }
    return 1;
}

/* Canonical composition (UAX #15) with the pairs utf8proc does not know, over
 * text utf8proc has already normalized: C composes with the last starter S
 * unless some character between them has combining class 0 or >= C's. */
static void compose_new(tok_bytes *t) {
    uint32_t *cps = malloc((t->n + 1) * sizeof *cps);
    if (!cps) { t->oom = 1; return; }
    size_t n = 0;
    for (size_t i = 0; i < t->n;) i += (size_t)tok_utf8_next(t->p + i, t->n - i, &cps[n++]);
    size_t w = 0;
    long starter = -1;
    int last_cc = -1; /* class of the last character kept after the starter; -1: none */
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cps[i];
        int cc = utf8proc_get_property((utf8proc_int32_t)c)->combining_class;
        if (starter >= 0 && (last_cc < 0 || (last_cc != 0 && last_cc < cc))) {
            uint32_t comp = new_composite(cps[starter], c);
            if (comp) { cps[starter] = comp; continue; }
        }
        if (cc == 0) { starter = (long)w; last_cc = -1; }
        else last_cc = cc;
        cps[w++] = c;
    }
    t->n = 0;
    for (size_t i = 0; i < w; i++) {
        char u[4];
        tok_bytes_put(t, u, (size_t)tok_utf8_encode(cps[i], u));
    }
    free(cps);
}

static int normalize_part(int form, const char *s, size_t n, tok_bytes *out) {
    if (normal_already(form, s, n)) {
        tok_bytes_put(out, s, n);
        return 0;
    }
    int compat = form == TOK_NORM_NFKC || form == TOK_NORM_NFKD, compose = form == TOK_NORM_NFC || form == TOK_NORM_NFKC;
    /* the decompositions utf8proc lacks first (not for NFC: it keeps composites) */
    tok_bytes pre = {0};
    if (form != TOK_NORM_NFC) {
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            int l = tok_utf8_next(s + i, n - i, &cp);
            const tok_udecomp *d = cp >= 0x80 ? new_decomp(cp) : NULL;
            if (d) {
                for (int k = 0; k < 8 && d->map[compat][k]; k++) {
                    char u[4];
                    tok_bytes_put(&pre, u, (size_t)tok_utf8_encode(d->map[compat][k], u));
                }
            } else {
                tok_bytes_put(&pre, s + i, (size_t)l);
            }
            i += (size_t)l;
        }
        if (pre.oom) { tok_bytes_free(&pre); return -1; }
        s = pre.p ? pre.p : "";
        n = pre.n;
    }
    int opt = UTF8PROC_STABLE | (compose ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) | (compat ? UTF8PROC_COMPAT : 0);
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, (utf8proc_option_t)opt);
    tok_bytes_free(&pre);
    if (r < 0) return -1;
    tok_bytes res = {0};
    tok_bytes_put(&res, dst, (size_t)r);
    free(dst);
    if (compose && tok_unicode_n_compositions) compose_new(&res);
    tok_bytes_put(out, res.p, res.n);
    int oom = res.oom;
    tok_bytes_free(&res);
    return oom ? -1 : 0;
}

/* Normalizes s part by part: ASCII characters other than letters and
 * < = > (which compose with U+0338) neither change nor combine with a
 * neighbour, so the text can be cut there and only the parts that need it
 * go through utf8proc. */
int tok_unicode_normalize(int form, const char *s, size_t n, tok_bytes *out) {
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        int cut = i == n;
        if (!cut) {
            uint8_t b = (uint8_t)s[i];
            cut = b < 0x80 && !((b | 32) >= 'a' && (b | 32) <= 'z') && b != '<' && b != '=' && b != '>';
        }
        if (!cut) continue;
        if (i > start && normalize_part(form, s + start, i - start, out)) return -1;
        if (i < n) tok_bytes_putc(out, s[i]);
        start = i + 1;
    }
    return out->oom ? -1 : 0;
}
