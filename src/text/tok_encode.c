/*
 * tok_encode.c — text to ids, in the reference's order:
 *
 *   1. invalid UTF-8 becomes U+FFFD (what TextDecoder hands the reference);
 *   2. added tokens that are not normalized are cut out of the raw text
 *      (leftmost, then longest, as DictionarySplitter does), with their
 *      lstrip/rstrip trimming the neighbouring pieces;
 *   3. each other piece is normalized, and normalized added tokens are cut
 *      out of it the same way;
 *   4. each remaining piece is pre-tokenized (Split regexes, ByteLevel,
 *      Metaspace, Digits) into words;
 *   5. each word goes through BPE: the lowest-ranked adjacent pair merges
 *      first, the leftmost among equal ranks, with a heap so that long words
 *      stay O(n log n); pieces outside the vocab fall back to <0xAB> byte
 *      tokens or the unknown token;
 *   6. the post-processor's template adds BOS/EOS when asked to.
 *
 * Byte-level words are kept as raw bytes and mapped to the byte-level
 * alphabet only by table lookup, never materialized, unless a later step
 * needs the mapped text. Everything one call allocates belongs to its
 * enc_ctx and is freed before it returns.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

typedef struct bsym {
    int32_t sidx;        /* string index, -1 if the text is not a known string */
    uint32_t start, len; /* bytes of the word; len 0: merged away */
    int32_t prev, next;
} bsym;

typedef struct bcand {
    uint32_t rank, left, right;
    int32_t result, lsidx, rsidx;
} bcand;

/* Words seen earlier in the same call: their model output, by content. */
typedef struct wc_slot {
    uint64_t hash;
    uint32_t key_off, key_len, val_off, val_len;
} wc_slot;

#define WC_MAX_WORD 64
#define WC_MAX_ENTRIES (1u << 16)

typedef struct enc_ctx {
    const moe_tokenizer *t;
    moe_error *err;
    tok_matcher m;
    tok_arena arena;
    tok_ids *out;
    tok_ids words;    /* string indices produced by the model for one piece of text */
    bsym *syms;
    size_t syms_cap;
    bcand *heap;
    size_t heap_n, heap_cap;
    tok_bytes scratch;
    wc_slot *wc;          /* word cache: open addressing, key_len 0 = empty */
    uint32_t wc_mask, wc_n;
    tok_bytes wc_keys;
    tok_ids wc_vals;
    int oom;
} enc_ctx;

static const wc_slot *wc_find(const enc_ctx *c, const char *w, size_t n, uint64_t h) {
    if (!c->wc) return NULL;
    for (uint32_t i = (uint32_t)h & c->wc_mask;; i = (i + 1) & c->wc_mask) {
        const wc_slot *sl = &c->wc[i];
        if (!sl->key_len) return NULL;
        if (sl->hash == h && sl->key_len == n && memcmp(c->wc_keys.p + sl->key_off, w, n) == 0) return sl;
    }
}

static void wc_insert(enc_ctx *c, const char *w, size_t n, uint64_t h, const int32_t *vals, int nv) {
    if (c->wc_n >= WC_MAX_ENTRIES || n == 0) return;
    if (!c->wc || 2 * (c->wc_n + 1) > c->wc_mask + 1) {
        uint32_t cap = c->wc ? 2 * (c->wc_mask + 1) : 128;
        wc_slot *nw = calloc(cap, sizeof *nw);
        if (!nw) return;
        for (uint32_t i = 0; c->wc && i <= c->wc_mask; i++) {
            if (!c->wc[i].key_len) continue;
            uint32_t j = (uint32_t)c->wc[i].hash & (cap - 1);
            while (nw[j].key_len) j = (j + 1) & (cap - 1);
            nw[j] = c->wc[i];
        }
        free(c->wc);
        c->wc = nw;
        c->wc_mask = cap - 1;
    }
    uint32_t i = (uint32_t)h & c->wc_mask;
    while (c->wc[i].key_len) i = (i + 1) & c->wc_mask;
    wc_slot sl = {h, (uint32_t)c->wc_keys.n, (uint32_t)n, (uint32_t)c->wc_vals.n, (uint32_t)nv};
    tok_bytes_put(&c->wc_keys, w, n);
    for (int k = 0; k < nv; k++) tok_ids_push(&c->wc_vals, vals[k]);
    if (c->wc_keys.oom || c->wc_vals.oom) { c->oom = 1; return; }
    c->wc[i] = sl;
    c->wc_n++;
}

/* ---- added tokens ---- */

/* DictionarySplitter.split: leftmost position first, longest content there. */
static void split_added(const tok_trie *tr, const char *s, size_t n, tok_spans *out) {
    size_t start = 0, i = 0;
    if (tr->n_nodes <= 1) {
        if (n) tok_spans_push(out, s, n);
        return;
    }
    while (i < n) {
        if (!tr->first[(uint8_t)s[i]]) { i++; continue; }
        uint32_t node = 0;
        size_t match_end = 0;
        for (size_t j = i; j < n; j++) {
            uint32_t e0 = tr->edge_start[node], cnt = tr->edge_count[node];
            uint8_t b = (uint8_t)s[j];
            uint32_t lo = 0, hi = cnt, found = UINT32_MAX;
            while (lo < hi) {
                uint32_t mid = (lo + hi) / 2;
                uint8_t eb = tr->edge_byte[e0 + mid];
                if (eb == b) { found = e0 + mid; break; }
                if (eb < b) lo = mid + 1;
                else hi = mid;
            }
            if (found == UINT32_MAX) break;
            node = tr->edge_child[found];
            if (tr->node_token[node] >= 0) match_end = j + 1;
        }
        if (match_end) {
            if (i > start) tok_spans_push(out, s + start, i - start);
            tok_spans_push(out, s + i, match_end - i);
            i = start = match_end;
        } else {
            i++;
        }
    }
    if (start < n) tok_spans_push(out, s + start, n - start);
}

static int added_lookup(const moe_tokenizer *t, const char *p, size_t n) {
    if (!t->n_added_keys) return -1;
    int k = tok_strmap_get(&t->added_map, t->added_keys, p, n);
    return k < 0 ? -1 : t->added_key_token[k];
}

static size_t trim_start_len(const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int l = tok_utf8_next(p + i, n - i, &cp);
        if (!tok_js_space(cp)) break;
        i += (size_t)l;
    }
    return i;
}

static size_t trim_end_len(const char *p, size_t n) {
    size_t e = n;
    while (e > 0) {
        size_t b = e - 1;
        while (b > 0 && ((uint8_t)p[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        tok_utf8_next(p + b, e - b, &cp);
        if (!tok_js_space(cp)) break;
        e = b;
    }
    return n - e;
}

/* lstrip / rstrip of the added tokens found among the sections. */
static void strip_around(const moe_tokenizer *t, tok_spans *sec) {
    for (int i = 0; i < sec->n; i++) {
        int a = added_lookup(t, sec->v[i].p, sec->v[i].n);
        if (a < 0) continue;
        const tok_added *ad = &t->s.added[a];
        if (ad->lstrip && i > 0) sec->v[i - 1].n -= trim_end_len(sec->v[i - 1].p, sec->v[i - 1].n);
        if (ad->rstrip && i + 1 < sec->n) {
            size_t k = trim_start_len(sec->v[i + 1].p, sec->v[i + 1].n);
            sec->v[i + 1].p += k;
            sec->v[i + 1].n -= k;
        }
    }
}

/* ---- normalizer ---- */

static void js_trim(const char *p, size_t n, int left, int right, tok_bytes *out) {
    size_t a = left ? trim_start_len(p, n) : 0;
    size_t b = right ? trim_end_len(p + a, n - a) : 0;
    tok_bytes_put(out, p + a, n - a - b);
}

int tok_normalize(const moe_tokenizer *t, tok_matcher *m, const char *s, size_t n, tok_bytes *out, moe_error *err) {
    const tok_spec *sp = &t->s;
    tok_bytes a = {0}, b = {0};
    tok_bytes_put(&a, s, n);
    for (int i = 0; i < sp->n_norm; i++) {
        const tok_norm_step *st = &sp->norm[i];
        b.n = 0;
        int rc = 0;
        switch (st->type) {
        case TOK_NORM_NFC: case TOK_NORM_NFD: case TOK_NORM_NFKC: case TOK_NORM_NFKD:
            rc = tok_unicode_normalize(st->type, a.p, a.n, &b);
            break;
        case TOK_NORM_PREPEND:
            tok_bytes_put(&b, st->text.p, st->text.n);
            tok_bytes_put(&b, a.p, a.n);
            break;
        case TOK_NORM_REPLACE:
            rc = tok_regex_replace_all(&t->norm_re[i], m, a.p ? a.p : "", a.n, st->text.p, st->text.n, &b);
            break;
        case TOK_NORM_STRIP:
            js_trim(a.p, a.n, st->strip_left, st->strip_right, &b);
            break;
        }
        if (rc || b.oom) {
            tok_bytes_free(&a);
            tok_bytes_free(&b);
            return moe_fail(err, "normalizer step %d failed (%s)", i, m->error ? "regex error" : "out of memory");
        }
        tok_bytes tmp = a;
        a = b;
        b = tmp;
    }
    tok_bytes_free(&b);
    tok_bytes_put(out, a.p, a.n);
    tok_bytes_free(&a);
    return out->oom ? moe_fail(err, "out of memory normalizing") : 0;
}

/* ---- pre-tokenizers ---- */

typedef struct collect {
    tok_spans *out;
    const char *s;
    size_t last;
    int keep_gaps;
} collect;

static void on_match(void *user, size_t ms, size_t me, tok_matcher *m) {
    (void)m;
    collect *c = user;
    if (c->keep_gaps && ms > c->last) tok_spans_push(c->out, c->s + c->last, ms - c->last);
    if (me > ms) tok_spans_push(c->out, c->s + ms, me - ms);
    c->last = me;
}

static size_t advance_cp(const char *s, size_t n, size_t q) {
    if (q >= n) return q + 1;
    uint8_t b = (uint8_t)s[q];
    return q + (b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4);
}

/* String.prototype.split(regex), then .filter(x => x): captures included. */
static void js_split(enc_ctx *c, const tok_regex *re, const char *s, size_t n, tok_spans *out) {
    size_t p = 0, q = 0, ms, me;
    while (q < n) {
        if (!tok_regex_find(re, &c->m, s, n, q, 1, &ms, &me)) { q = advance_cp(s, n, q); continue; }
        if (me > n) me = n;
        if (me == p) { q = advance_cp(s, n, q); continue; }
        if (q > p) tok_spans_push(out, s + p, q - p);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->m.md);
        for (uint32_t g = 1; g <= re->capture_count; g++)
            if (ov[2 * g] != PCRE2_UNSET && ov[2 * g + 1] > ov[2 * g])
                tok_spans_push(out, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        p = q = me;
    }
    if (n > p) tok_spans_push(out, s + p, n - p);
}

/* Byte-level text of raw bytes, in the arena. */
static tok_span map_bytes(enc_ctx *c, const char *p, size_t n) {
    char *o = tok_arena_alloc(&c->arena, 2 * n + 1);
    if (!o) { c->oom = 1; return (tok_span){"", 0}; }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)tok_utf8_encode(tok_byte_to_cp((uint8_t)p[i]), o + k);
    return (tok_span){o, k};
}

static void materialize(enc_ctx *c, tok_spans *cur, int *mapped) {
    if (!*mapped) return;
    for (int i = 0; i < cur->n; i++) cur->v[i] = map_bytes(c, cur->v[i].p, cur->v[i].n);
    *mapped = 0;
}

/* Pre-tokenizes one piece of text into words (spans); *mapped tells whether
 * the words are raw bytes standing for byte-level text. */
static int pre_tokenize(enc_ctx *c, const char *s, size_t n, int section_index, tok_spans *words, int *mapped) {
    const moe_tokenizer *t = c->t;
    const tok_spec *sp = &t->s;
    tok_spans cur = {0}, nxt = {0};
    tok_spans_push(&cur, s, n);
    *mapped = 0;
    for (int i = 0; i < sp->n_pre; i++) {
        const tok_pre_step *st = &sp->pre[i];
        nxt.n = 0;
        materialize(c, &cur, mapped); /* a step after ByteLevel sees the byte-level text */
        for (int k = 0; k < cur.n; k++) {
            const char *p = cur.v[k].p;
            size_t pn = cur.v[k].n;
            switch (st->type) {
            case TOK_PRE_SPLIT: {
                const tok_regex *re = &t->pre_re[i];
                if (st->invert == 1) {
                    collect col = {&nxt, p, 0, 0};
                    tok_regex_foreach(re, &c->m, p, pn, on_match, &col);
                } else if (st->behavior == TOK_SPLIT_REMOVED) {
                    js_split(c, re, p, pn, &nxt);
                } else {
                    collect col = {&nxt, p, 0, 1};
                    tok_regex_foreach(re, &c->m, p, pn, on_match, &col);
                    if (pn > col.last) tok_spans_push(&nxt, p + col.last, pn - col.last);
                }
                break;
            }
            case TOK_PRE_BYTELEVEL: {
                if (st->add_prefix_space && !(pn > 0 && p[0] == ' ')) {
                    char *q = tok_arena_alloc(&c->arena, pn + 1);
                    if (!q) { c->oom = 1; break; }
                    q[0] = ' ';
                    memcpy(q + 1, p, pn);
                    p = q;
                    pn++;
                }
                if (st->use_regex) {
                    collect col = {&nxt, p, 0, 0};
                    tok_regex_foreach(&t->bytelevel_re, &c->m, p, pn, on_match, &col);
                } else {
                    tok_spans_push(&nxt, p, pn);
                }
                break;
            }
            case TOK_PRE_METASPACE: {
                tok_bytes b = {0};
                size_t last = 0;
                for (size_t j = 0; j < pn; j++)
                    if (p[j] == ' ') {
                        tok_bytes_put(&b, p + last, j - last);
                        tok_bytes_put(&b, st->str_rep.p, st->str_rep.n);
                        last = j + 1;
                    }
                tok_bytes_put(&b, p + last, pn - last);
                int starts = b.n >= st->replacement.n && memcmp(b.p, st->replacement.p, st->replacement.n) == 0;
                int prepend = !starts && (st->prepend_scheme == TOK_PREPEND_ALWAYS ||
                                          (st->prepend_scheme == TOK_PREPEND_FIRST && section_index == 0));
                char *q = tok_arena_alloc(&c->arena, b.n + (prepend ? st->str_rep.n : 0) + 1);
                if (!q || b.oom) { c->oom = 1; tok_bytes_free(&b); break; }
                size_t qn = 0;
                if (prepend) { memcpy(q, st->str_rep.p, st->str_rep.n); qn = st->str_rep.n; }
                if (b.n) memcpy(q + qn, b.p, b.n);
                qn += b.n;
                tok_bytes_free(&b);
                tok_spans_push(&nxt, q, qn);
                break;
            }
            case TOK_PRE_DIGITS: {
                collect col = {&nxt, p, 0, 0};
                tok_regex_foreach(st->individual_digits ? &t->digits1_re : &t->digits_re, &c->m, p, pn, on_match, &col);
                break;
            }
            }
        }
        if (st->type == TOK_PRE_BYTELEVEL) *mapped = 1;
        tok_spans tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    tok_spans_free(&nxt);
    if (cur.oom || c->m.error) {
        tok_spans_free(&cur);
        return c->m.error ? moe_fail(c->err, "pre-tokenizer regex failed (PCRE2 error %d)", c->m.error)
                          : moe_fail(c->err, "out of memory pre-tokenizing");
    }
    *words = cur;
    return 0;
}

/* ---- BPE ---- */

static const tok_merge_slot *merge_get(const moe_tokenizer *t, int32_t a, int32_t b) {
    if (a < 0 || b < 0) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (uint32_t j = (uint32_t)(h >> 32) & t->merge_mask;; j = (j + 1) & t->merge_mask) {
        const tok_merge_slot *sl = &t->merge_slots[j];
        if (sl->key == key) return sl;
        if (sl->key == 0) return NULL;
    }
}

static int cand_less(const bcand *a, const bcand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(enc_ctx *c, bcand x) {
    if (c->heap_n == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 256;
        bcand *h = realloc(c->heap, cap * sizeof *h);
        if (!h) { c->oom = 1; return; }
        c->heap = h;
        c->heap_cap = cap;
    }
    size_t i = c->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&x, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = x;
}

static bcand heap_pop(enc_ctx *c) {
    bcand top = c->heap[0], x = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bcand *best = &x;
        if (l < n && cand_less(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (r < n && cand_less(&c->heap[r], best)) m = r;
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = x;
    return top;
}

static void add_cand(enc_ctx *c, int32_t left) {
    bsym *L = &c->syms[left];
    if (L->next < 0) return;
    bsym *R = &c->syms[L->next];
    const tok_merge_slot *sl = merge_get(c->t, L->sidx, R->sidx);
    if (sl) heap_push(c, (bcand){sl->rank, (uint32_t)left, (uint32_t)L->next, (int32_t)sl->result, L->sidx, R->sidx});
}

/* The text of bytes [start, start + len) of the word as the model sees it;
 * valid until the next call. */
static tok_span sym_text(enc_ctx *c, const char *w, uint32_t start, uint32_t len, int mapped) {
    if (!mapped) return (tok_span){w + start, len};
    tok_bytes *b = &c->scratch;
    b->n = 0;
    if (tok_bytes_reserve(b, 2 * (size_t)len)) {
        c->oom = 1;
        return (tok_span){"", 0};
    }
    size_t k = 0;
    for (uint32_t i = 0; i < len; i++) k += (size_t)tok_utf8_encode(tok_byte_to_cp((uint8_t)w[start + i]), b->p + k);
    return (tok_span){b->p, k};
}

static int32_t lookup_span(const moe_tokenizer *t, tok_span s) {
    return tok_strmap_get(&t->strmap, t->s.strings, s.p, s.n);
}

static int32_t lookup_cat(enc_ctx *c, tok_span a, const tok_str *suffix) {
    char *q = tok_arena_alloc(&c->arena, a.n + suffix->n + 1);
    if (!q) { c->oom = 1; return -1; }
    memcpy(q, a.p, a.n);
    memcpy(q + a.n, suffix->p, suffix->n);
    return lookup_span(c->t, (tok_span){q, a.n + suffix->n});
}

/* Emits the model's tokens for one finished symbol. */
static void emit_symbol(enc_ctx *c, int32_t sidx, tok_span text) {
    const moe_tokenizer *t = c->t;
    const tok_spec *sp = &t->s;
    if (sidx >= 0 && sp->string_vocab_id[sidx] >= 0) { tok_ids_push(&c->words, sidx); return; }
    if (sp->byte_fallback) {
        int ok = 1;
        for (size_t i = 0; i < text.n && ok; i++) ok = t->byte_token[(uint8_t)text.p[i]] >= 0;
        if (ok) {
            for (size_t i = 0; i < text.n; i++) tok_ids_push(&c->words, t->byte_token[(uint8_t)text.p[i]]);
            return;
        }
    }
    if (sp->has_unk) {
        int32_t u = lookup_span(t, (tok_span){sp->unk_token.p, sp->unk_token.n});
        if (u >= 0) tok_ids_push(&c->words, u);
    }
}

static void bpe_word_uncached(enc_ctx *c, const char *w, size_t n, int mapped);

static void bpe_word(enc_ctx *c, const char *w, size_t n, int mapped) {
    if (n == 0) return;
    if (n > WC_MAX_WORD) { bpe_word_uncached(c, w, n, mapped); return; }
    uint64_t h = tok_hash(w, n) ^ (uint64_t)mapped;
    const wc_slot *sl = wc_find(c, w, n, h);
    if (sl) {
        for (uint32_t k = 0; k < sl->val_len; k++) tok_ids_push(&c->words, c->wc_vals.v[sl->val_off + k]);
        return;
    }
    int before = c->words.n;
    bpe_word_uncached(c, w, n, mapped);
    if (!c->words.oom) wc_insert(c, w, n, h, c->words.v + before, c->words.n - before);
}

static void bpe_word_uncached(enc_ctx *c, const char *w, size_t n, int mapped) {
    const moe_tokenizer *t = c->t;
    const tok_spec *sp = &t->s;
    if (sp->ignore_merges) {
        int32_t k = lookup_span(t, sym_text(c, w, 0, (uint32_t)n, mapped));
        if (k >= 0 && sp->string_vocab_id[k] >= 0) { tok_ids_push(&c->words, k); return; }
    }
    /* symbols: one per byte (mapped) or per character */
    if (c->syms_cap < n) {
        bsym *s = realloc(c->syms, n * sizeof *s);
        if (!s) { c->oom = 1; return; }
        c->syms = s;
        c->syms_cap = n;
    }
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t l = 1;
        int32_t sidx;
        if (mapped) {
            sidx = t->byte_string[(uint8_t)w[i]];
        } else {
            uint8_t b = (uint8_t)w[i];
            if (b < 0x80) {
                sidx = t->ascii_string[b];
            } else {
                l = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
                if (i + l > n) l = (uint32_t)(n - i);
                sidx = lookup_span(t, (tok_span){w + i, l});
            }
        }
        c->syms[ns] = (bsym){sidx, (uint32_t)i, l, ns - 1, -1};
        if (ns > 0) c->syms[ns - 1].next = ns;
        ns++;
        i += l;
    }
    if (sp->end_of_word_suffix.n) {
        bsym *last = &c->syms[ns - 1];
        last->sidx = lookup_cat(c, sym_text(c, w, last->start, last->len, mapped), &sp->end_of_word_suffix);
    }
    if (ns > 1) {
        c->heap_n = 0;
        for (int32_t i = 0; i + 1 < ns; i++) add_cand(c, i);
        while (c->heap_n && !c->oom) {
            bcand x = heap_pop(c);
            bsym *L = &c->syms[x.left], *R = &c->syms[x.right];
            if (!L->len || !R->len || L->next != (int32_t)x.right || L->sidx != x.lsidx || R->sidx != x.rsidx) continue;
            L->sidx = x.result;
            L->len += R->len;
            L->next = R->next;
            if (R->next >= 0) c->syms[R->next].prev = (int32_t)x.left;
            R->len = 0;
            if (L->prev >= 0) add_cand(c, L->prev);
            add_cand(c, (int32_t)x.left);
        }
    }
    for (int32_t i = 0; i >= 0; i = c->syms[i].next) {
        bsym *s = &c->syms[i];
        int32_t sidx = s->sidx;
        tok_span text;
        if (sidx >= 0) text = (tok_span){sp->strings[sidx].p, sp->strings[sidx].n};
        else text = sym_text(c, w, s->start, s->len, mapped);
        if (sp->continuing_subword_suffix.n && s->next >= 0) {
            sidx = lookup_cat(c, text, &sp->continuing_subword_suffix);
            if (sidx >= 0) text = (tok_span){sp->strings[sidx].p, sp->strings[sidx].n};
        }
        emit_symbol(c, sidx, text);
    }
}

/* Words of one piece of text -> ids (fuse_unk, then the id lookup). */
static void model_encode(enc_ctx *c, const tok_spans *words, int mapped) {
    const moe_tokenizer *t = c->t;
    const tok_spec *sp = &t->s;
    c->words.n = 0;
    for (int i = 0; i < words->n; i++) bpe_word(c, words->v[i].p, words->v[i].n, mapped);
    int32_t unk_vocab = -1;
    if (sp->fuse_unk && sp->has_unk) {
        int32_t u = lookup_span(t, (tok_span){sp->unk_token.p, sp->unk_token.n});
        unk_vocab = u >= 0 ? sp->string_vocab_id[u] : -1;
    }
    int prev_unk = 0;
    for (int i = 0; i < c->words.n; i++) {
        int32_t sidx = c->words.v[i];
        if (sp->fuse_unk && sp->has_unk) {
            int32_t v = sp->string_vocab_id[sidx];
            int is_unk = v < 0 || v == unk_vocab;
            if (is_unk && prev_unk) continue;
            prev_unk = is_unk;
        }
        int32_t id = t->string_final_id[sidx];
        if (id >= 0) tok_ids_push(c->out, id);
    }
}

/* ---- the whole pipeline ---- */

static int encode_section(enc_ctx *c, const char *s, size_t n, int section_index) {
    const moe_tokenizer *t = c->t;
    const tok_spec *sp = &t->s;
    tok_bytes rs = {0}, norm = {0};
    if (sp->remove_space) {
        /* trim().split(/\s+/).join(" ") */
        size_t a = trim_start_len(s, n), b = trim_end_len(s + a, n - a);
        const char *p = s + a;
        size_t pn = n - a - b;
        for (size_t i = 0; i < pn;) {
            uint32_t cp;
            int l = tok_utf8_next(p + i, pn - i, &cp);
            if (tok_js_space(cp)) {
                while (i < pn && (l = tok_utf8_next(p + i, pn - i, &cp)) > 0 && tok_js_space(cp)) i += (size_t)l;
                tok_bytes_putc(&rs, ' ');
                continue;
            }
            tok_bytes_put(&rs, p + i, (size_t)l);
            i += (size_t)l;
        }
        s = rs.p ? rs.p : "";
        n = rs.n;
    }
    if (sp->has_normalizer) {
        if (tok_normalize(t, &c->m, s, n, &norm, c->err)) { tok_bytes_free(&rs); return -1; }
        s = norm.p ? norm.p : "";
        n = norm.n;
    }
    int rc = 0;
    if (n) {
        tok_spans subs = {0};
        split_added(&t->trie_norm, s, n, &subs);
        strip_around(t, &subs);
        for (int i = 0; i < subs.n && rc == 0; i++) {
            const char *p = subs.v[i].p;
            size_t pn = subs.v[i].n;
            if (!pn) continue;
            int a = added_lookup(t, p, pn);
            if (a >= 0) { tok_ids_push(c->out, sp->added[a].id); continue; }
            tok_spans words = {0};
            int mapped = 0;
            rc = pre_tokenize(c, p, pn, section_index, &words, &mapped);
            if (rc == 0) model_encode(c, &words, mapped);
            tok_spans_free(&words);
        }
        if (subs.oom) rc = moe_fail(c->err, "out of memory encoding");
        tok_spans_free(&subs);
    }
    tok_bytes_free(&norm);
    tok_bytes_free(&rs);
    return rc;
}

int tok_encode(const moe_tokenizer *t, const char *text, size_t len, int add_special, tok_ids *out, moe_error *err) {
    enc_ctx c = {.t = t, .err = err};
    tok_ids body = {0};
    c.out = &body;
    if (tok_matcher_init(&c.m)) return moe_fail(err, "out of memory encoding");
    tok_bytes clean = {0};
    const char *s = text ? text : "";
    if (!tok_utf8_valid(s, len)) {
        tok_utf8_whatwg(s, len, 1, &clean, NULL);
        s = clean.p ? clean.p : "";
        len = clean.n;
    }
    int rc = 0;
    tok_spans sec = {0};
    split_added(&t->trie_raw, s, len, &sec);
    strip_around(t, &sec);
    for (int i = 0; i < sec.n && rc == 0; i++) {
        if (!sec.v[i].n) continue;
        int a = added_lookup(t, sec.v[i].p, sec.v[i].n);
        if (a >= 0) { tok_ids_push(&body, t->s.added[a].id); continue; }
        rc = encode_section(&c, sec.v[i].p, sec.v[i].n, i);
    }
    if (rc == 0 && (sec.oom || clean.oom || body.oom || c.words.oom || c.oom || c.arena.oom))
        rc = moe_fail(err, "out of memory encoding");
    if (rc == 0) {
        const tok_spec *sp = &t->s;
        if (sp->n_tpl == 0) {
            for (int i = 0; i < body.n; i++) tok_ids_push(out, body.v[i]);
        } else {
            for (int k = 0; k < sp->n_tpl; k++) {
                if (sp->tpl[k] == TOK_TPL_SEQ) {
                    for (int i = 0; i < body.n; i++) tok_ids_push(out, body.v[i]);
                } else if (add_special) {
                    tok_ids_push(out, sp->tpl[k]);
                }
            }
        }
        if (out->oom) rc = moe_fail(err, "out of memory encoding");
    }
    tok_spans_free(&sec);
    tok_bytes_free(&clean);
    tok_ids_free(&body);
    tok_ids_free(&c.words);
    free(c.syms);
    free(c.heap);
    tok_bytes_free(&c.scratch);
    free(c.wc);
    tok_bytes_free(&c.wc_keys);
    tok_ids_free(&c.wc_vals);
    tok_arena_free(&c.arena);
    tok_matcher_free(&c.m);
    return rc;
}

int moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                         int *n_ids, moe_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (len > (size_t)INT32_MAX / 2) return moe_fail(err, "text too long to tokenize (%zu bytes)", len);
    tok_ids out = {0};
    if (tok_encode(t, text, len, add_special, &out, err)) {
        tok_ids_free(&out);
        return -1;
    }
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}
