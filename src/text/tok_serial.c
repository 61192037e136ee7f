/*
 * tok_serial.c — the tokenizer's compact binary form, stored by moe-convert
 * inside the .moe file: the spec (tok_internal.h) written field by field,
 * little-endian, with an XXH3-64 of everything before it at the end.
 *
 *   "MOETOK\0\0" u32 version
 *   strings:   u32 n, n x (str, i32 vocab id)
 *   ids:       u32 n, n x i32 string index (-1: none)
 *   merges:    u32 n, n x (u32 left, u32 right, u32 result) in rank order
 *   model:     u8 has_unk, str unk, u8 fuse_unk, u8 byte_fallback, u8 ignore_merges,
 *              str end_of_word_suffix, str continuing_subword_suffix
 *   normalizer: u8 present, u32 n, n x (u8 type, u8 strip_left, u8 strip_right, str text, pattern)
 *   pre-tokenizer: u32 n, n x (u8 type, behavior, invert, add_prefix_space, use_regex,
 *              prepend_scheme, individual_digits, pattern, str replacement, str str_rep)
 *   decoder:   u8 present, u32 n, n x (u8 type, i32 start, i32 stop, str text, pattern)
 *   template:  u32 n, n x i32 (-1: the text)
 *   added:     u32 n, n x (str content, i32 id, u8 special, normalized, lstrip, rstrip, single_word)
 *   config:    u32 n, n x str additional special token; u8 clean_up, u8 remove_space,
 *              i8 add_bos, i8 add_eos, i32 bos, i32 eos, i32 pad
 *   u64 XXH3-64 of all the bytes above
 * where str = u32 length + bytes and pattern = u8 kind + str.
 *
 * Reading checks every count against the bytes left, every index against its
 * table and the checksum first, so a corrupt blob is an error, not a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"
#include "util/buf.h"

#define TOK_MAGIC "MOETOK\0\0"
#define TOK_VERSION 1u

static void put_str(moe_buf *b, const tok_str *s) {
    moe_buf_u32(b, s->n);
    moe_buf_put(b, s->p ? s->p : "", s->n);
}

static void put_pat(moe_buf *b, const tok_pattern *p) {
    moe_buf_u8(b, p->kind);
    put_str(b, &p->src);
}

int moe_tokenizer_serialize(const moe_tokenizer *t, uint8_t **out, size_t *len, moe_error *err) {
    const tok_spec *s = &t->s;
    moe_buf b = {0};
    moe_buf_put(&b, TOK_MAGIC, 8);
    moe_buf_u32(&b, TOK_VERSION);
    moe_buf_u32(&b, s->n_strings);
    for (uint32_t i = 0; i < s->n_strings; i++) {
        put_str(&b, &s->strings[i]);
        moe_buf_u32(&b, (uint32_t)s->string_vocab_id[i]);
    }
    moe_buf_u32(&b, (uint32_t)s->n_ids);
    for (int32_t i = 0; i < s->n_ids; i++) moe_buf_u32(&b, (uint32_t)s->id_string[i]);
    moe_buf_u32(&b, s->n_merges);
    for (uint32_t i = 0; i < 3 * s->n_merges; i++) moe_buf_u32(&b, s->merges[i]);
    moe_buf_u8(&b, s->has_unk);
    put_str(&b, &s->unk_token);
    moe_buf_u8(&b, s->fuse_unk);
    moe_buf_u8(&b, s->byte_fallback);
    moe_buf_u8(&b, s->ignore_merges);
    put_str(&b, &s->end_of_word_suffix);
    put_str(&b, &s->continuing_subword_suffix);
    moe_buf_u8(&b, s->has_normalizer);
    moe_buf_u32(&b, (uint32_t)s->n_norm);
    for (int i = 0; i < s->n_norm; i++) {
        const tok_norm_step *st = &s->norm[i];
        moe_buf_u8(&b, st->type);
        moe_buf_u8(&b, st->strip_left);
        moe_buf_u8(&b, st->strip_right);
        put_str(&b, &st->text);
        put_pat(&b, &st->pat);
    }
    moe_buf_u32(&b, (uint32_t)s->n_pre);
    for (int i = 0; i < s->n_pre; i++) {
        const tok_pre_step *st = &s->pre[i];
        uint8_t f[7] = {st->type, st->behavior, st->invert, st->add_prefix_space, st->use_regex, st->prepend_scheme,
                        st->individual_digits};
        moe_buf_put(&b, f, sizeof f);
        put_pat(&b, &st->pat);
        put_str(&b, &st->replacement);
        put_str(&b, &st->str_rep);
    }
    moe_buf_u8(&b, s->has_decoder);
    moe_buf_u32(&b, (uint32_t)s->n_dec);
    for (int i = 0; i < s->n_dec; i++) {
        const tok_dec_step *st = &s->dec[i];
        moe_buf_u8(&b, st->type);
        moe_buf_u32(&b, (uint32_t)st->start);
        moe_buf_u32(&b, (uint32_t)st->stop);
        put_str(&b, &st->text);
        put_pat(&b, &st->pat);
    }
    moe_buf_u32(&b, (uint32_t)s->n_tpl);
    for (int i = 0; i < s->n_tpl; i++) moe_buf_u32(&b, (uint32_t)s->tpl[i]);
    moe_buf_u32(&b, (uint32_t)s->n_added);
    for (int i = 0; i < s->n_added; i++) {
        const tok_added *a = &s->added[i];
        put_str(&b, &a->content);
        moe_buf_u32(&b, (uint32_t)a->id);
        uint8_t f[5] = {a->special, a->normalized, a->lstrip, a->rstrip, a->single_word};
        moe_buf_put(&b, f, sizeof f);
    }
    moe_buf_u32(&b, (uint32_t)s->n_extra_special);
    for (int i = 0; i < s->n_extra_special; i++) put_str(&b, &s->extra_special[i]);
    moe_buf_u8(&b, s->clean_up_spaces);
    moe_buf_u8(&b, s->remove_space);
    moe_buf_u8(&b, (uint8_t)s->add_bos);
    moe_buf_u8(&b, (uint8_t)s->add_eos);
    moe_buf_u32(&b, (uint32_t)s->bos_id);
    moe_buf_u32(&b, (uint32_t)s->eos_id);
    moe_buf_u32(&b, (uint32_t)s->pad_id);
    if (!b.oom) moe_buf_u64(&b, tok_hash(b.data, b.len));
    if (b.oom) {
        moe_buf_free(&b);
        return moe_fail(err, "out of memory serializing the tokenizer");
    }
    *out = b.data;
    *len = b.len;
    return 0;
}

/* ---- reading ---- */

typedef struct rd {
    moe_cursor c;
    const char *what; /* the field being read, for the error */
} rd;

static int get_str(rd *r, tok_str *s) {
    uint32_t n;
    const uint8_t *p;
    if (moe_cur_u32(&r->c, &n) || moe_cur_span(&r->c, n, &p)) return -1;
    if (!tok_utf8_valid((const char *)p, n)) return -1;
    s->p = malloc((size_t)n + 1);
    if (!s->p) return -1;
    memcpy(s->p, p, n);
    s->p[n] = 0;
    s->n = n;
    return 0;
}

static int get_i32(rd *r, int32_t *v) {
    uint32_t u;
    if (moe_cur_u32(&r->c, &u)) return -1;
    *v = (int32_t)u;
    return 0;
}

static int get_pat(rd *r, tok_pattern *p) {
    if (moe_cur_u8(&r->c, &p->kind) || p->kind > TOK_PAT_REGEX) return -1;
    return get_str(r, &p->src);
}

/* A count of items of at least min_size bytes each that must fit in what is left. */
static int get_count(rd *r, uint32_t *n, size_t min_size) {
    if (moe_cur_u32(&r->c, n)) return -1;
    if ((uint64_t)*n * min_size > (uint64_t)(r->c.end - r->c.p)) return -1;
    return 0;
}

static void *alloc_n(uint32_t n, size_t elem) { return calloc(n ? n : 1, elem); }

static int read_spec(rd *r, tok_spec *s) {
    uint8_t magic[8];
    uint32_t ver, n;
    r->what = "header";
    if (moe_cur_get(&r->c, magic, 8) || memcmp(magic, TOK_MAGIC, 8) != 0) return -1;
    if (moe_cur_u32(&r->c, &ver) || ver != TOK_VERSION) { r->what = "version"; return -1; }
    r->what = "strings";
    if (get_count(r, &n, 8)) return -1;
    s->strings = alloc_n(n, sizeof *s->strings);
    s->string_vocab_id = alloc_n(n, sizeof *s->string_vocab_id);
    if (!s->strings || !s->string_vocab_id) return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (get_str(r, &s->strings[i])) return -1;
        s->n_strings = i + 1;
        if (get_i32(r, &s->string_vocab_id[i]) || s->string_vocab_id[i] < -1) return -1;
    }
    r->what = "ids";
    if (get_count(r, &n, 4) || n > INT32_MAX) return -1;
    s->id_string = alloc_n(n, sizeof *s->id_string);
    if (!s->id_string) return -1;
    s->n_ids = (int32_t)n;
    for (uint32_t i = 0; i < n; i++)
        if (get_i32(r, &s->id_string[i]) || s->id_string[i] < -1 || s->id_string[i] >= (int32_t)s->n_strings) return -1;
    for (uint32_t i = 0; i < s->n_strings; i++)
        if (s->string_vocab_id[i] >= s->n_ids) return -1;
    r->what = "merges";
    if (get_count(r, &n, 12)) return -1;
    s->merges = alloc_n(n, 3 * sizeof *s->merges);
    if (!s->merges) return -1;
    s->n_merges = n;
    for (uint32_t i = 0; i < 3 * n; i++)
        if (moe_cur_u32(&r->c, &s->merges[i]) || s->merges[i] >= s->n_strings) return -1;
    r->what = "model";
    if (moe_cur_u8(&r->c, &s->has_unk) || get_str(r, &s->unk_token) || moe_cur_u8(&r->c, &s->fuse_unk) ||
        moe_cur_u8(&r->c, &s->byte_fallback) || moe_cur_u8(&r->c, &s->ignore_merges) ||
        get_str(r, &s->end_of_word_suffix) || get_str(r, &s->continuing_subword_suffix))
        return -1;
    r->what = "normalizer";
    if (moe_cur_u8(&r->c, &s->has_normalizer) || get_count(r, &n, 16)) return -1;
    s->norm = alloc_n(n, sizeof *s->norm);
    if (!s->norm) return -1;
    for (uint32_t i = 0; i < n; i++) {
        tok_norm_step *st = &s->norm[i];
        s->n_norm = (int)i + 1;
        if (moe_cur_u8(&r->c, &st->type) || st->type > TOK_NORM_STRIP || moe_cur_u8(&r->c, &st->strip_left) ||
            moe_cur_u8(&r->c, &st->strip_right) || get_str(r, &st->text) || get_pat(r, &st->pat))
            return -1;
    }
    r->what = "pre-tokenizer";
    if (get_count(r, &n, 20)) return -1;
    s->pre = alloc_n(n, sizeof *s->pre);
    if (!s->pre) return -1;
    for (uint32_t i = 0; i < n; i++) {
        tok_pre_step *st = &s->pre[i];
        uint8_t f[7];
        s->n_pre = (int)i + 1;
        if (moe_cur_get(&r->c, f, sizeof f)) return -1;
        st->type = f[0]; st->behavior = f[1]; st->invert = f[2]; st->add_prefix_space = f[3];
        st->use_regex = f[4]; st->prepend_scheme = f[5]; st->individual_digits = f[6];
        if (st->type > TOK_PRE_DIGITS || st->behavior > TOK_SPLIT_REMOVED || st->invert > 2 ||
            st->prepend_scheme > TOK_PREPEND_NEVER)
            return -1;
        if (get_pat(r, &st->pat) || get_str(r, &st->replacement) || get_str(r, &st->str_rep)) return -1;
    }
    r->what = "decoder";
    if (moe_cur_u8(&r->c, &s->has_decoder) || get_count(r, &n, 18)) return -1;
    s->dec = alloc_n(n, sizeof *s->dec);
    if (!s->dec) return -1;
    for (uint32_t i = 0; i < n; i++) {
        tok_dec_step *st = &s->dec[i];
        s->n_dec = (int)i + 1;
        if (moe_cur_u8(&r->c, &st->type) || st->type > TOK_DEC_METASPACE || get_i32(r, &st->start) ||
            get_i32(r, &st->stop) || get_str(r, &st->text) || get_pat(r, &st->pat))
            return -1;
    }
    r->what = "post-processor";
    if (get_count(r, &n, 4)) return -1;
    s->tpl = alloc_n(n, sizeof *s->tpl);
    if (!s->tpl) return -1;
    s->n_tpl = (int)n;
    for (uint32_t i = 0; i < n; i++)
        if (get_i32(r, &s->tpl[i]) || s->tpl[i] < TOK_TPL_SEQ) return -1;
    r->what = "added tokens";
    if (get_count(r, &n, 13)) return -1;
    s->added = alloc_n(n, sizeof *s->added);
    if (!s->added) return -1;
    for (uint32_t i = 0; i < n; i++) {
        tok_added *a = &s->added[i];
        uint8_t f[5];
        s->n_added = (int)i + 1;
        if (get_str(r, &a->content) || get_i32(r, &a->id) || a->id < 0 || a->id >= s->n_ids ||
            moe_cur_get(&r->c, f, sizeof f))
            return -1;
        a->special = f[0]; a->normalized = f[1]; a->lstrip = f[2]; a->rstrip = f[3]; a->single_word = f[4];
    }
    r->what = "config";
    if (get_count(r, &n, 4)) return -1;
    s->extra_special = alloc_n(n, sizeof *s->extra_special);
    if (!s->extra_special) return -1;
    for (uint32_t i = 0; i < n; i++) {
        s->n_extra_special = (int)i + 1;
        if (get_str(r, &s->extra_special[i])) return -1;
    }
    uint8_t ab, ae;
    if (moe_cur_u8(&r->c, &s->clean_up_spaces) || moe_cur_u8(&r->c, &s->remove_space) || moe_cur_u8(&r->c, &ab) ||
        moe_cur_u8(&r->c, &ae) || get_i32(r, &s->bos_id) || get_i32(r, &s->eos_id) || get_i32(r, &s->pad_id))
        return -1;
    s->add_bos = (int8_t)ab;
    s->add_eos = (int8_t)ae;
    if (s->bos_id < -1 || s->eos_id < -1 || s->pad_id < -1 || s->bos_id >= s->n_ids || s->eos_id >= s->n_ids ||
        s->pad_id >= s->n_ids)
        return -1;
    for (int i = 0; i < s->n_tpl; i++)
        if (s->tpl[i] >= s->n_ids) { r->what = "post-processor"; return -1; }
    r->what = "end";
    return r->c.p == r->c.end ? 0 : -1;
}

moe_tokenizer *moe_tokenizer_deserialize(const uint8_t *data, size_t len, moe_error *err) {
    if (!data || len < 8 + 4 + 8) {
        moe_fail(err, "serialized tokenizer: too short (%zu bytes)", len);
        return NULL;
    }
    uint64_t want = 0;
    for (int i = 0; i < 8; i++) want |= (uint64_t)data[len - 8 + (size_t)i] << (8 * i);
    if (tok_hash(data, len - 8) != want) {
        moe_fail(err, "serialized tokenizer: checksum mismatch (corrupt or truncated)");
        return NULL;
    }
    moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    rd r = {.c = {data, data + len - 8}, .what = "header"};
    if (read_spec(&r, &t->s)) {
        moe_fail(err, "serialized tokenizer: bad or truncated %s", r.what);
        moe_tokenizer_free(t);
        return NULL;
    }
    if (tok_build(t, err)) {
        moe_fail_prefix(err, "serialized tokenizer: ");
        moe_tokenizer_free(t);
        return NULL;
    }
    return t;
}
