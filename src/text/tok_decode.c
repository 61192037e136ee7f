/*
 * tok_decode.c — ids to text, and the streaming decoder.
 *
 * decode runs the tokenizer.json decoder chain literally, as the reference
 * does, on a list of strings: ByteLevel (runs of non-added tokens mapped back
 * to bytes, then UTF-8-decoded with U+FFFD for bad bytes), Replace,
 * ByteFallback (runs of <0xAB> tokens decoded as UTF-8), Fuse, Strip,
 * Metaspace; then the reference's clean_up_tokenization when the config asks
 * for it (a missing clean_up_tokenization_spaces means yes).
 *
 * The stream decodes a short window of recent ids the same way, returns only
 * what can no longer change, and starts a new window once the text so far is
 * final: no half character pending, no byte-token run open. The decoder rules
 * that look at the first token (Strip of a leading space, Metaspace's
 * first-token rule) apply only to the first window; clean-up runs over the
 * text as it comes, holding back only what follows the last character no
 * clean-up rule can touch. So the concatenated output equals decoding all ids
 * at once.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

typedef struct elem {
    const char *p;
    size_t n;
    uint8_t added;    /* the string of an added token (ByteLevel keeps it as is) */
    uint8_t at_start; /* begins at the first token of the list */
} elem;

typedef struct elems {
    elem *v;
    int n, cap;
    int oom;
} elems;

static void elems_push(elems *a, elem e) {
    if (a->oom) return;
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 64;
        elem *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) { a->oom = 1; return; }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = e;
}

static int is_added_string(const moe_tokenizer *t, const char *p, size_t n) {
    int k = t->n_added_keys ? tok_strmap_get(&t->added_map, t->added_keys, p, n) : -1;
    if (k < 0) return 0;
    /* the map also holds normalized contents: compare with the contents themselves */
    for (int i = 0; i < t->s.n_added; i++)
        if (t->s.added[i].content.n == n && memcmp(t->s.added[i].content.p, p, n) == 0) return 1;
    return 0;
}

/* parseInt(token.slice(3, 5), 16) for "<0x??>"; -1 for NaN. */
static int byte_token_value(const char *p, size_t n) {
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    const char *d = p + 3;
    int k = 0, sign = 1;
    while (k < 2 && (d[k] == ' ' || (d[k] >= 9 && d[k] <= 13))) k++;
    if (k < 2 && (d[k] == '+' || d[k] == '-')) { if (d[k] == '-') sign = -1; k++; }
    int v = -1;
    for (; k < 2; k++) {
        int c = d[k], x;
        if (c >= '0' && c <= '9') x = c - '0';
        else if ((c | 32) >= 'a' && (c | 32) <= 'f') x = (c | 32) - 'a' + 10;
        else break;
        v = (v < 0 ? 0 : v) * 16 + x;
    }
    if (v < 0) return -1;
    return (sign * v) & 0xFF; /* Uint8Array.from wraps */
}

static void put_whatwg(tok_arena *ar, const char *s, size_t n, int final, int strip_bom, elem *out, size_t *pending) {
    tok_bytes b = {0};
    if (strip_bom && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) { s += 3; n -= 3; }
    tok_utf8_whatwg(s, n, final, &b, pending);
    out->p = tok_arena_dup(ar, b.p ? b.p : "", b.n);
    out->n = out->p ? b.n : 0;
    if (b.oom) ar->oom = 1;
    tok_bytes_free(&b);
}

int tok_decode_raw(const moe_tokenizer *t, const int32_t *ids, int n, const tok_decode_opts *o, tok_bytes *out,
                   tok_decode_info *info, moe_error *err) {
    const tok_spec *sp = &t->s;
    tok_arena ar = {0};
    elems cur = {0}, nxt = {0};
    tok_matcher m = {0};
    info->pending = 0;
    info->last_is_byte = 0;
    int fused = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        const char *p = NULL;
        size_t pn = 0;
        int skip = 0;
        if (id >= 0 && id < sp->n_ids && sp->id_string[id] >= 0) {
            const tok_str *s = &sp->strings[sp->id_string[id]];
            p = s->p;
            pn = s->n;
            skip = (t->id_flags[id] & TOK_ID_SKIP) != 0;
        } else if (sp->has_unk) {
            p = sp->unk_token.p;
            pn = sp->unk_token.n;
            int32_t k = moe_tokenizer_piece_id(t, p, pn);
            skip = k >= 0 && k < sp->n_ids && (t->id_flags[k] & TOK_ID_SKIP) != 0;
        } else {
            p = "";
        }
        if (o->skip_special && skip) continue;
        elems_push(&cur, (elem){p, pn, 0, (uint8_t)(cur.n == 0)});
    }
    if (!sp->has_decoder) {
        for (int i = 0; i < cur.n; i++) {
            if (i) tok_bytes_putc(out, ' ');
            tok_bytes_put(out, cur.v[i].p, cur.v[i].n);
        }
        goto done;
    }
    for (int si = 0; si < sp->n_dec; si++)
        if (sp->dec[si].type == TOK_DEC_REPLACE && !m.md && tok_matcher_init(&m)) {
            rc = moe_fail(err, "out of memory decoding");
            goto done;
        }
    for (int si = 0; si < sp->n_dec && rc == 0; si++) {
        const tok_dec_step *st = &sp->dec[si];
        nxt.n = 0;
        switch (st->type) {
        case TOK_DEC_BYTELEVEL:
        case TOK_DEC_BYTEFALLBACK: {
            int bl = st->type == TOK_DEC_BYTELEVEL;
            for (int i = 0; i < cur.n;) {
                int in_run = bl ? !is_added_string(t, cur.v[i].p, cur.v[i].n) : byte_token_value(cur.v[i].p, cur.v[i].n) >= 0;
                if (!in_run) { elems_push(&nxt, cur.v[i]); i++; continue; }
                int j = i;
                tok_bytes bytes = {0};
                for (; j < cur.n; j++) {
                    const elem *e = &cur.v[j];
                    if (bl) {
                        if (is_added_string(t, e->p, e->n)) break;
                        for (size_t k = 0; k < e->n;) {
                            uint32_t cp;
                            int l = tok_utf8_next(e->p + k, e->n - k, &cp);
                            int b = tok_cp_to_byte(cp);
                            tok_bytes_putc(&bytes, (char)(b < 0 ? 0 : b));
                            k += (size_t)l;
                        }
                    } else {
                        int b = byte_token_value(e->p, e->n);
                        if (b < 0) break;
                        tok_bytes_putc(&bytes, (char)b);
                    }
                }
                int at_end = j == cur.n;
                elem d = {0};
                d.at_start = cur.v[i].at_start;
                size_t pend = 0;
                put_whatwg(&ar, bytes.p ? bytes.p : "", bytes.n, o->final || !at_end, !bl, &d, &pend);
                if (bytes.oom) ar.oom = 1;
                tok_bytes_free(&bytes);
                if (at_end) {
                    info->pending = pend;
                    if (!bl) info->last_is_byte = 1;
                }
                elems_push(&nxt, d);
                i = j;
            }
            break;
        }
        case TOK_DEC_REPLACE:
            for (int i = 0; i < cur.n; i++) {
                tok_bytes b = {0};
                if (tok_regex_replace_all(&t->dec_re[si], &m, cur.v[i].p ? cur.v[i].p : "", cur.v[i].n, st->text.p,
                                          st->text.n, &b)) {
                    tok_bytes_free(&b);
                    rc = moe_fail(err, "decoder step %d (Replace) failed", si);
                    break;
                }
                elem e = cur.v[i];
                e.p = tok_arena_dup(&ar, b.p ? b.p : "", b.n);
                e.n = b.n;
                tok_bytes_free(&b);
                elems_push(&nxt, e);
            }
            break;
        case TOK_DEC_FUSE: {
            size_t total = 0;
            for (int i = 0; i < cur.n; i++) total += cur.v[i].n;
            char *q = tok_arena_alloc(&ar, total + 1);
            if (!q) break;
            size_t k = 0;
            for (int i = 0; i < cur.n; i++) { memcpy(q + k, cur.v[i].p, cur.v[i].n); k += cur.v[i].n; }
            elems_push(&nxt, (elem){q, total, 0, 1});
            fused = 1;
            break;
        }
        case TOK_DEC_STRIP: {
            /* token[i] === content: content must be one UTF-16 unit */
            uint32_t ccp = 0;
            int cl = st->text.n ? tok_utf8_next(st->text.p, st->text.n, &ccp) : 0;
            int single = cl > 0 && (size_t)cl == st->text.n && ccp < 0x10000;
            for (int i = 0; i < cur.n; i++) {
                elem e = cur.v[i];
                if (single) {
                    int may_strip = o->stream_start || !(fused && e.at_start);
                    for (int k = 0; k < st->start && may_strip && e.n >= (size_t)cl && memcmp(e.p, st->text.p, (size_t)cl) == 0; k++) {
                        e.p += cl;
                        e.n -= (size_t)cl;
                    }
                    for (int k = 0; k < st->stop && e.n >= (size_t)cl && memcmp(e.p + e.n - cl, st->text.p, (size_t)cl) == 0; k++)
                        e.n -= (size_t)cl;
                }
                elems_push(&nxt, e);
            }
            break;
        }
        case TOK_DEC_METASPACE:
            for (int i = 0; i < cur.n; i++) {
                tok_bytes b = {0};
                const elem *e = &cur.v[i];
                size_t last = 0, rn = st->text.n;
                for (size_t k = 0; rn && k + rn <= e->n;) {
                    if (memcmp(e->p + k, st->text.p, rn) == 0) {
                        tok_bytes_put(&b, e->p + last, k - last);
                        tok_bytes_putc(&b, ' ');
                        k += rn;
                        last = k;
                    } else {
                        k++;
                    }
                }
                tok_bytes_put(&b, e->p + last, e->n - last);
                size_t off = (i == 0 && o->stream_start && b.n && b.p[0] == ' ') ? 1 : 0;
                elem d = *e;
                d.p = tok_arena_dup(&ar, b.p ? b.p + off : "", b.n - off);
                d.n = b.n - off;
                tok_bytes_free(&b);
                elems_push(&nxt, d);
            }
            break;
        }
        elems tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    for (int i = 0; i < cur.n && rc == 0; i++) tok_bytes_put(out, cur.v[i].p, cur.v[i].n);
done:
    if (rc == 0 && (cur.oom || nxt.oom || ar.oom || out->oom)) rc = moe_fail(err, "out of memory decoding");
    tok_matcher_free(&m);
    free(cur.v);
    free(nxt.v);
    tok_arena_free(&ar);
    return rc;
}

/* ---- clean_up_tokenization ---- */

static const char *const cleanup_rules[][2] = {
    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
    {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
};

int tok_cleanup_barrier(char c) { return !strchr(" .?!,'ntmsver", c) || c == 0; }

void tok_cleanup(const char *s, size_t n, tok_bytes *out) {
    tok_bytes a = {0}, b = {0};
    tok_bytes_put(&a, s, n);
    for (size_t r = 0; r < sizeof cleanup_rules / sizeof cleanup_rules[0]; r++) {
        const char *from = cleanup_rules[r][0], *to = cleanup_rules[r][1];
        size_t fl = strlen(from), tl = strlen(to);
        b.n = 0;
        size_t i = 0, last = 0;
        while (i + fl <= a.n) {
            if (a.p[i] == ' ' && memcmp(a.p + i, from, fl) == 0) {
                tok_bytes_put(&b, a.p + last, i - last);
                tok_bytes_put(&b, to, tl);
                i += fl;
                last = i;
            } else {
                i++;
            }
        }
        tok_bytes_put(&b, a.p + last, a.n - last);
        tok_bytes tmp = a;
        a = b;
        b = tmp;
    }
    tok_bytes_put(out, a.p, a.n);
    if (a.oom || b.oom) out->oom = 1;
    tok_bytes_free(&a);
    tok_bytes_free(&b);
}

/* ---- whole decode ---- */

static int finish_text(const moe_tokenizer *t, int skip_special, const tok_bytes *raw, tok_bytes *out) {
    const tok_spec *sp = &t->s;
    tok_bytes w = {0};
    const char *s = raw->p ? raw->p : "";
    size_t n = raw->n;
    if (sp->end_of_word_suffix.n) {
        /* decoded.replaceAll(end_of_word_suffix, " "), trimmed when skipping special tokens */
        const tok_str *sf = &sp->end_of_word_suffix;
        size_t last = 0;
        for (size_t i = 0; i + sf->n <= n;) {
            if (memcmp(s + i, sf->p, sf->n) == 0) {
                tok_bytes_put(&w, s + last, i - last);
                tok_bytes_putc(&w, ' ');
                i += sf->n;
                last = i;
            } else {
                i++;
            }
        }
        tok_bytes_put(&w, s + last, n - last);
        s = w.p ? w.p : "";
        n = w.n;
        if (skip_special) {
            /* trim() */
            while (n) {
                size_t b = n - 1;
                while (b > 0 && ((uint8_t)s[b] & 0xC0) == 0x80) b--;
                uint32_t cp;
                tok_utf8_next(s + b, n - b, &cp);
                if (!tok_js_space(cp)) break;
                n = b;
            }
            while (n) {
                uint32_t cp;
                int l = tok_utf8_next(s, n, &cp);
                if (!tok_js_space(cp)) break;
                s += l;
                n -= (size_t)l;
            }
        }
    }
    if (sp->clean_up_spaces) tok_cleanup(s, n, out);
    else tok_bytes_put(out, s, n);
    int oom = w.oom || out->oom;
    tok_bytes_free(&w);
    return oom ? -1 : 0;
}

int moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n, int skip_special, char **out, size_t *len,
                         moe_error *err) {
    *out = NULL;
    *len = 0;
    tok_bytes raw = {0}, res = {0};
    tok_decode_opts o = {.skip_special = skip_special, .stream_start = 1, .final = 1};
    tok_decode_info info;
    if (tok_decode_raw(t, ids, n < 0 ? 0 : n, &o, &raw, &info, err)) {
        tok_bytes_free(&raw);
        return -1;
    }
    int rc = finish_text(t, skip_special, &raw, &res);
    tok_bytes_free(&raw);
    if (rc) {
        tok_bytes_free(&res);
        return moe_fail(err, "out of memory decoding");
    }
    if (!res.p) {
        res.p = calloc(1, 1);
        if (!res.p) return moe_fail(err, "out of memory decoding");
    }
    *out = res.p;
    *len = res.n;
    return 0;
}

/* ---- streaming ---- */

/*
 * Two layers. The first turns ids into raw text (the decoder chain without
 * clean-up) by decoding a short window of ids, and starts a new window as
 * soon as the raw text so far is final. The second applies clean-up to the
 * raw text as it arrives: clean-up can only change text after the last
 * barrier character, so that tail waits (a run of spaces or dots, typically
 * a few bytes) and everything before it goes out. Both are linear in the
 * length of the text.
 */
struct moe_detok_stream {
    const moe_tokenizer *t;
    int skip_special;
    tok_ids window;
    int at_start;
    size_t emitted;   /* bytes of the window's raw text already passed on */
    tok_bytes text;   /* what the last call returned */
    tok_bytes raw;    /* the window's raw text */
    tok_bytes tail;   /* clean-up: raw text after the last barrier, not yet returned */
    int byte_fallback, whole_text;
};

moe_detok_stream *moe_detok_stream_new(const moe_tokenizer *t, int skip_special, moe_error *err) {
    moe_detok_stream *s = calloc(1, sizeof *s);
    if (!s) { moe_fail(err, "out of memory"); return NULL; }
    s->t = t;
    s->skip_special = skip_special;
    s->at_start = 1;
    for (int i = 0; i < t->s.n_dec; i++) {
        if (t->s.dec[i].type == TOK_DEC_BYTEFALLBACK) s->byte_fallback = 1;
        /* a Strip of trailing text, or the end-of-word suffix rule, look at the end of the whole text */
        if (t->s.dec[i].type == TOK_DEC_STRIP && t->s.dec[i].stop > 0) s->whole_text = 1;
    }
    if (t->s.end_of_word_suffix.n) s->whole_text = 1;
    return s;
}

void moe_detok_stream_reset(moe_detok_stream *s) {
    s->window.n = 0;
    s->at_start = 1;
    s->emitted = 0;
    s->text.n = 0;
    s->tail.n = 0;
}

void moe_detok_stream_free(moe_detok_stream *s) {
    if (!s) return;
    tok_ids_free(&s->window);
    tok_bytes_free(&s->text);
    tok_bytes_free(&s->raw);
    tok_bytes_free(&s->tail);
    free(s);
}

/* Appends the clean-up layer's output for new raw text to s->text. */
static void cleanup_layer(moe_detok_stream *s, const char *p, size_t n, int final) {
    if (!s->t->s.clean_up_spaces) {
        tok_bytes_put(&s->text, p, n);
        return;
    }
    size_t old = s->tail.n;
    tok_bytes_put(&s->tail, p, n);
    size_t cut = 0; /* everything before cut goes out */
    if (final) cut = s->tail.n;
    else
        for (size_t i = s->tail.n; i > old; i--)
            if (tok_cleanup_barrier(s->tail.p[i - 1])) { cut = i; break; }
    if (!cut) return;
    tok_cleanup(s->tail.p, cut, &s->text);
    memmove(s->tail.p, s->tail.p + cut, s->tail.n - cut);
    s->tail.n -= cut;
}

static int stream_step(moe_detok_stream *s, int final, moe_error *err) {
    const moe_tokenizer *t = s->t;
    tok_decode_opts o = {.skip_special = s->skip_special, .stream_start = s->at_start, .final = final};
    tok_decode_info info;
    s->raw.n = 0;
    s->text.n = 0;
    if (tok_decode_raw(t, s->window.v, s->window.n, &o, &s->raw, &info, err)) return -1;
    if (s->whole_text) {
        /* the decoder looks at the end of the whole text: keep one window, and
         * hold back trailing white space a final strip may remove */
        tok_bytes full = {0};
        if (finish_text(t, s->skip_special, &s->raw, &full)) { tok_bytes_free(&full); return moe_fail(err, "out of memory decoding"); }
        size_t k = full.n;
        if (!final) {
            if (t->s.clean_up_spaces)
                while (k > 0 && !tok_cleanup_barrier(full.p[k - 1])) k--;
            while (k > 0 && tok_js_space((uint8_t)full.p[k - 1])) k--;
        }
        if (k > s->emitted) tok_bytes_put(&s->text, full.p + s->emitted, k - s->emitted);
        if (k > s->emitted) s->emitted = k;
        tok_bytes_free(&full);
        return s->text.oom ? moe_fail(err, "out of memory decoding") : 0;
    }
    if (s->raw.n > s->emitted) cleanup_layer(s, s->raw.p + s->emitted, s->raw.n - s->emitted, final);
    else if (final) cleanup_layer(s, "", 0, 1);
    if (s->raw.n > s->emitted) s->emitted = s->raw.n;
    /* the raw text so far is final: start a new window */
    if (s->raw.n > 0 && info.pending == 0 && !(s->byte_fallback && info.last_is_byte)) {
        s->window.n = 0;
        s->emitted = 0;
        s->at_start = 0;
    }
    return s->text.oom || s->tail.oom ? moe_fail(err, "out of memory decoding") : 0;
}

int moe_detok_stream_feed(moe_detok_stream *s, int32_t id, const char **text, size_t *len, moe_error *err) {
    *text = "";
    *len = 0;
    tok_ids_push(&s->window, id);
    if (s->window.oom) return moe_fail(err, "out of memory decoding");
    if (stream_step(s, 0, err)) return -1;
    tok_bytes_put(&s->text, "", 0);
    if (s->text.oom) return moe_fail(err, "out of memory decoding");
    *text = s->text.p;
    *len = s->text.n;
    return 0;
}

int moe_detok_stream_finish(moe_detok_stream *s, const char **text, size_t *len, moe_error *err) {
    *text = "";
    *len = 0;
    if (stream_step(s, 1, err)) return -1;
    tok_bytes_put(&s->text, "", 0);
    if (s->text.oom) return moe_fail(err, "out of memory decoding");
    *text = s->text.p;
    *len = s->text.n;
    s->window.n = 0;
    s->emitted = 0;
    s->at_start = 1;
    s->tail.n = 0;
    return 0;
}
