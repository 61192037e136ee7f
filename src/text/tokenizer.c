/*
 * tokenizer.c — reads Hugging Face's tokenizer.json (+ tokenizer_config.json)
 * into the tokenizer's spec, builds the run-time tables from a spec (hash
 * maps of strings and merges, the added-token tries, compiled regexes), and
 * answers the small questions (pieces, ids, BOS/EOS).
 *
 * The spec is flat: Sequence normalizers, pre-tokenizers and decoders become
 * lists of steps, the post-processor becomes one template of ids, and every
 * string the BPE model can meet (vocab, added tokens, merge halves and merge
 * results) gets an index in one string table, so that a merge is a pair of
 * indices. Reading follows what the reference does with each field,
 * including its defaults (a missing clean_up_tokenization_spaces is true) and
 * its quirks (Split behaviours other than "Removed" act as "Isolated").
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "text/tok_internal.h"

uint64_t tok_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

/* ---- string maps ---- */

int tok_strmap_get(const tok_strmap *m, const tok_str *keys, const char *p, size_t n) {
    if (!m->slots) return -1;
    uint32_t h = (uint32_t)tok_hash(p, n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t v = m->slots[i];
        if (!v) return -1;
        const tok_str *k = &keys[v - 1];
        if (k->n == n && memcmp(k->p, p, n) == 0) return (int)(v - 1);
    }
}

/* Inserts key index idx (keys[idx] set); returns the index already there for
 * an equal key, or idx. */
static int strmap_insert(tok_strmap *m, const tok_str *keys, uint32_t idx) {
    const tok_str *k = &keys[idx];
    uint32_t h = (uint32_t)tok_hash(k->p, k->n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t v = m->slots[i];
        if (!v) { m->slots[i] = idx + 1; return (int)idx; }
        const tok_str *o = &keys[v - 1];
        if (o->n == k->n && memcmp(o->p, k->p, k->n) == 0) return (int)(v - 1);
    }
}

static int strmap_init(tok_strmap *m, uint32_t n) {
    uint32_t cap = 16;
    while (cap < 2 * n + 16) cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    return m->slots ? 0 : -1;
}

static void strmap_free(tok_strmap *m) {
    free(m->slots);
    *m = (tok_strmap){0};
}

/* ---- spec ---- */

static void str_free(tok_str *s) {
    free(s->p);
    *s = (tok_str){0};
}

static int str_set(tok_str *s, const char *p, size_t n) {
    if (n > UINT32_MAX - 1) return -1;
    s->p = malloc(n + 1);
    if (!s->p) return -1;
    if (n) memcpy(s->p, p, n);
    s->p[n] = 0;
    s->n = (uint32_t)n;
    return 0;
}

void tok_spec_free(tok_spec *s) {
    for (uint32_t i = 0; i < s->n_strings; i++) free(s->strings[i].p);
    free(s->strings);
    free(s->string_vocab_id);
    free(s->id_string);
    free(s->merges);
    str_free(&s->unk_token);
    str_free(&s->end_of_word_suffix);
    str_free(&s->continuing_subword_suffix);
    for (int i = 0; i < s->n_norm; i++) { str_free(&s->norm[i].text); str_free(&s->norm[i].pat.src); }
    free(s->norm);
    for (int i = 0; i < s->n_pre; i++) {
        str_free(&s->pre[i].pat.src);
        str_free(&s->pre[i].replacement);
        str_free(&s->pre[i].str_rep);
    }
    free(s->pre);
    for (int i = 0; i < s->n_dec; i++) { str_free(&s->dec[i].text); str_free(&s->dec[i].pat.src); }
    free(s->dec);
    free(s->tpl);
    for (int i = 0; i < s->n_added; i++) str_free(&s->added[i].content);
    free(s->added);
    for (int i = 0; i < s->n_extra_special; i++) str_free(&s->extra_special[i]);
    free(s->extra_special);
    *s = (tok_spec){0};
}

/* ---- reading tokenizer.json ---- */

typedef struct reader {
    tok_spec *s;
    tok_strmap map; /* while reading: string -> index */
    uint32_t cap_strings;
    moe_error *err;
} reader;

static int oom(reader *r) { return moe_fail(r->err, "out of memory reading tokenizer.json"); }

/* Index of string p[0..n) in the string table, added if new. */
static int intern(reader *r, const char *p, size_t n) {
    tok_spec *s = r->s;
    int found = tok_strmap_get(&r->map, s->strings, p, n);
    if (found >= 0) return found;
    if (s->n_strings == r->cap_strings) {
        uint32_t cap = r->cap_strings ? r->cap_strings * 2 : 1024;
        tok_str *ns = realloc(s->strings, cap * sizeof *ns);
        if (!ns) return -1;
        s->strings = ns;
        int32_t *nv = realloc(s->string_vocab_id, cap * sizeof *nv);
        if (!nv) return -1;
        s->string_vocab_id = nv;
        r->cap_strings = cap;
    }
    if ((uint64_t)(s->n_strings + 1) * 2 + 16 > (uint64_t)r->map.mask + 1) {
        tok_strmap bigger;
        if (strmap_init(&bigger, (s->n_strings + 1) * 2)) return -1;
        for (uint32_t i = 0; i < s->n_strings; i++) strmap_insert(&bigger, s->strings, i);
        strmap_free(&r->map);
        r->map = bigger;
    }
    uint32_t idx = s->n_strings;
    if (str_set(&s->strings[idx], p, n)) return -1;
    s->string_vocab_id[idx] = -1;
    s->n_strings++;
    strmap_insert(&r->map, s->strings, idx);
    return (int)idx;
}

static int set_id(reader *r, int32_t id, int sidx) {
    tok_spec *s = r->s;
    if (id >= s->n_ids) {
        int32_t n = s->n_ids ? s->n_ids : 1024;
        while (n <= id) n *= 2;
        int32_t *ni = realloc(s->id_string, (size_t)n * sizeof *ni);
        if (!ni) return -1;
        for (int32_t i = s->n_ids; i < n; i++) ni[i] = -1;
        s->id_string = ni;
        s->n_ids = n;
    }
    s->id_string[id] = sidx;
    return 0;
}

static const cJSON *field(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int truthy(const cJSON *v) {
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return 0;
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    if (cJSON_IsString(v)) return v->valuestring[0] != 0;
    return 1;
}

/* Optional string field: 0 absent/null, 1 set, -1 wrong type (error set). */
static int get_str(reader *r, const cJSON *o, const char *k, const char *where, tok_str *out) {
    const cJSON *v = field(o, k);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v)) return moe_fail(r->err, "tokenizer.json: %s.%s is not a string", where, k);
    if (str_set(out, v->valuestring, strlen(v->valuestring))) return oom(r);
    return 1;
}

static int get_pattern(reader *r, const cJSON *o, const char *where, tok_pattern *p) {
    const cJSON *pat = field(o, "pattern");
    if (!cJSON_IsObject(pat)) return moe_fail(r->err, "tokenizer.json: %s.pattern is missing", where);
    const cJSON *v;
    if ((v = field(pat, "String")) && cJSON_IsString(v)) p->kind = TOK_PAT_STRING;
    else if ((v = field(pat, "Regex")) && cJSON_IsString(v)) p->kind = TOK_PAT_REGEX;
    else return moe_fail(r->err, "tokenizer.json: %s.pattern is neither {\"String\"} nor {\"Regex\"}", where);
    if (str_set(&p->src, v->valuestring, strlen(v->valuestring))) return oom(r);
    return 0;
}

static int grow_array(void **p, int n, size_t elem) {
    void *q = realloc(*p, (size_t)(n + 1) * elem);
    if (!q) return -1;
    *p = q;
    memset((char *)q + (size_t)n * elem, 0, elem);
    return 0;
}

static const char *type_of(const cJSON *o) {
    const cJSON *t = field(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "";
}

static int read_normalizer(reader *r, const cJSON *o, const char *where) {
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return moe_fail(r->err, "tokenizer.json: %s is not an object", where);
    tok_spec *s = r->s;
    const char *type = type_of(o);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = field(o, "normalizers"), *it;
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char w[160];
            snprintf(w, sizeof w, "%s.normalizers[%d]", where, i++);
            if (read_normalizer(r, it, w)) return -1;
        }
        return 0;
    }
    tok_norm_step st = {0};
    if (strcmp(type, "NFC") == 0) st.type = TOK_NORM_NFC;
    else if (strcmp(type, "NFD") == 0) st.type = TOK_NORM_NFD;
    else if (strcmp(type, "NFKC") == 0) st.type = TOK_NORM_NFKC;
    else if (strcmp(type, "NFKD") == 0) st.type = TOK_NORM_NFKD;
    else if (strcmp(type, "Prepend") == 0) {
        st.type = TOK_NORM_PREPEND;
        if (get_str(r, o, "prepend", where, &st.text) < 0) return -1;
    } else if (strcmp(type, "Replace") == 0) {
        st.type = TOK_NORM_REPLACE;
        if (get_pattern(r, o, where, &st.pat) || get_str(r, o, "content", where, &st.text) < 0) {
            str_free(&st.pat.src);
            return -1;
        }
    } else if (strcmp(type, "Strip") == 0) {
        st.type = TOK_NORM_STRIP;
        st.strip_left = (uint8_t)truthy(field(o, "strip_left"));
        st.strip_right = (uint8_t)truthy(field(o, "strip_right"));
    } else {
        return moe_fail(r->err, "tokenizer.json: %s.type \"%s\" is not a supported normalizer", where, type);
    }
    if (grow_array((void **)&s->norm, s->n_norm, sizeof *s->norm)) return oom(r);
    s->norm[s->n_norm++] = st;
    return 0;
}

static int read_pre(reader *r, const cJSON *o, const char *where) {
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return moe_fail(r->err, "tokenizer.json: %s is not an object", where);
    tok_spec *s = r->s;
    const char *type = type_of(o);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = field(o, "pretokenizers"), *it;
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char w[160];
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i++);
            if (read_pre(r, it, w)) return -1;
        }
        return 0;
    }
    tok_pre_step st = {0};
    if (strcmp(type, "Split") == 0) {
        st.type = TOK_PRE_SPLIT;
        const cJSON *b = field(o, "behavior"), *inv = field(o, "invert");
        st.behavior = TOK_SPLIT_ISOLATED;
        if (cJSON_IsString(b)) {
            char low[32] = {0};
            for (size_t i = 0; i < sizeof low - 1 && b->valuestring[i]; i++)
                low[i] = (char)(b->valuestring[i] | (b->valuestring[i] >= 'A' && b->valuestring[i] <= 'Z' ? 32 : 0));
            if (strcmp(low, "removed") == 0) st.behavior = TOK_SPLIT_REMOVED;
        }
        /* 1: invert, 0: explicitly not (string patterns then capture), 2: absent */
        st.invert = (!inv || cJSON_IsNull(inv)) ? 2 : (uint8_t)truthy(inv);
        if (get_pattern(r, o, where, &st.pat)) return -1;
    } else if (strcmp(type, "ByteLevel") == 0) {
        st.type = TOK_PRE_BYTELEVEL;
        const cJSON *ur = field(o, "use_regex");
        st.add_prefix_space = (uint8_t)truthy(field(o, "add_prefix_space"));
        st.use_regex = (!ur || cJSON_IsNull(ur)) ? 1 : (uint8_t)truthy(ur);
    } else if (strcmp(type, "Metaspace") == 0) {
        st.type = TOK_PRE_METASPACE;
        if (get_str(r, o, "replacement", where, &st.replacement) < 0) return -1;
        if (!st.replacement.p && str_set(&st.replacement, "\xe2\x96\x81", 3)) return oom(r);
        int k = get_str(r, o, "str_rep", where, &st.str_rep);
        if (k < 0) { str_free(&st.replacement); return -1; }
        if (!st.str_rep.n) {
            str_free(&st.str_rep);
            if (str_set(&st.str_rep, st.replacement.p, st.replacement.n)) return oom(r);
        }
        const cJSON *ps = field(o, "prepend_scheme");
        st.prepend_scheme = TOK_PREPEND_ALWAYS;
        if (cJSON_IsString(ps) && strcmp(ps->valuestring, "first") == 0) st.prepend_scheme = TOK_PREPEND_FIRST;
        else if (cJSON_IsString(ps) && strcmp(ps->valuestring, "never") == 0) st.prepend_scheme = TOK_PREPEND_NEVER;
    } else if (strcmp(type, "Digits") == 0) {
        st.type = TOK_PRE_DIGITS;
        st.individual_digits = (uint8_t)truthy(field(o, "individual_digits"));
    } else {
        return moe_fail(r->err, "tokenizer.json: %s.type \"%s\" is not a supported pre-tokenizer", where, type);
    }
    if (grow_array((void **)&s->pre, s->n_pre, sizeof *s->pre)) return oom(r);
    s->pre[s->n_pre++] = st;
    return 0;
}

static int read_decoder(reader *r, const cJSON *o, const char *where) {
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return moe_fail(r->err, "tokenizer.json: %s is not an object", where);
    tok_spec *s = r->s;
    const char *type = type_of(o);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = field(o, "decoders"), *it;
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char w[160];
            snprintf(w, sizeof w, "%s.decoders[%d]", where, i++);
            if (read_decoder(r, it, w)) return -1;
        }
        return 0;
    }
    tok_dec_step st = {0};
    if (strcmp(type, "ByteLevel") == 0) st.type = TOK_DEC_BYTELEVEL;
    else if (strcmp(type, "ByteFallback") == 0) st.type = TOK_DEC_BYTEFALLBACK;
    else if (strcmp(type, "Fuse") == 0) st.type = TOK_DEC_FUSE;
    else if (strcmp(type, "Replace") == 0) {
        st.type = TOK_DEC_REPLACE;
        if (get_pattern(r, o, where, &st.pat) || get_str(r, o, "content", where, &st.text) < 0) {
            str_free(&st.pat.src);
            return -1;
        }
    } else if (strcmp(type, "Strip") == 0) {
        st.type = TOK_DEC_STRIP;
        if (get_str(r, o, "content", where, &st.text) < 0) return -1;
        const cJSON *a = field(o, "start"), *b = field(o, "stop");
        st.start = cJSON_IsNumber(a) ? (int32_t)a->valuedouble : 0;
        st.stop = cJSON_IsNumber(b) ? (int32_t)b->valuedouble : 0;
    } else if (strcmp(type, "Metaspace") == 0) {
        st.type = TOK_DEC_METASPACE;
        if (get_str(r, o, "replacement", where, &st.text) < 0) return -1;
        if (!st.text.p && str_set(&st.text, "\xe2\x96\x81", 3)) return oom(r);
    } else {
        return moe_fail(r->err, "tokenizer.json: %s.type \"%s\" is not a supported decoder", where, type);
    }
    if (grow_array((void **)&s->dec, s->n_dec, sizeof *s->dec)) return oom(r);
    s->dec[s->n_dec++] = st;
    return 0;
}

/* tokens_to_ids after the added tokens are set (what the reference's
 * post-processor and config lookups use). */
static int32_t lookup_id(reader *r, const char *p) {
    int k = tok_strmap_get(&r->map, r->s->strings, p, strlen(p));
    return k < 0 ? -1 : r->s->string_vocab_id[k];
}

/* Template composition: applies a processor (prefix ids, the sequence, suffix
 * ids) to the current template. */
static int tpl_wrap(reader *r, const int32_t *items, int n_items) {
    tok_spec *s = r->s;
    int cur_n = s->n_tpl;
    int32_t *cur = s->tpl;
    int32_t base = TOK_TPL_SEQ;
    if (!cur) { cur = &base; cur_n = 1; }
    int total = 0;
    for (int i = 0; i < n_items; i++) total += items[i] == TOK_TPL_SEQ ? cur_n : 1;
    int32_t *out = malloc((size_t)(total ? total : 1) * sizeof *out);
    if (!out) return oom(r);
    int k = 0;
    for (int i = 0; i < n_items; i++) {
        if (items[i] == TOK_TPL_SEQ) { memcpy(out + k, cur, (size_t)cur_n * sizeof *out); k += cur_n; }
        else out[k++] = items[i];
    }
    free(s->tpl);
    s->tpl = out;
    s->n_tpl = total;
    return 0;
}

static int special_id(reader *r, const cJSON *v, const char *where, int32_t *id) {
    const char *name = NULL;
    if (cJSON_IsString(v)) name = v->valuestring;
    else if (cJSON_IsArray(v) && cJSON_IsString(cJSON_GetArrayItem(v, 0))) name = cJSON_GetArrayItem(v, 0)->valuestring;
    if (!name) return moe_fail(r->err, "tokenizer.json: %s is not a token", where);
    *id = lookup_id(r, name);
    if (*id < 0) return moe_fail(r->err, "tokenizer.json: %s names \"%s\", which is not in the vocab", where, name);
    return 0;
}

static int read_post(reader *r, const cJSON *o, const char *where) {
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return moe_fail(r->err, "tokenizer.json: %s is not an object", where);
    const char *type = type_of(o);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = field(o, "processors"), *it;
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char w[160];
            snprintf(w, sizeof w, "%s.processors[%d]", where, i++);
            if (read_post(r, it, w)) return -1;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) return 0;
    if (strcmp(type, "TemplateProcessing") == 0) {
        const cJSON *single = field(o, "single"), *it;
        if (!cJSON_IsArray(single)) return moe_fail(r->err, "tokenizer.json: %s.single is not a list", where);
        int n = cJSON_GetArraySize(single), k = 0;
        int32_t *items = malloc((size_t)(n ? n : 1) * sizeof *items);
        if (!items) return oom(r);
        cJSON_ArrayForEach(it, single) {
            const cJSON *sp = field(it, "SpecialToken"), *sq = field(it, "Sequence");
            char w[200];
            snprintf(w, sizeof w, "%s.single[%d]", where, k);
            if (sp) {
                if (special_id(r, field(sp, "id"), w, &items[k])) { free(items); return -1; }
            } else if (sq) {
                const cJSON *sid = field(sq, "id");
                if (!cJSON_IsString(sid) || strcmp(sid->valuestring, "A") != 0) {
                    free(items);
                    return moe_fail(r->err, "tokenizer.json: %s uses a sequence other than A", w);
                }
                items[k] = TOK_TPL_SEQ;
            } else {
                free(items);
                return moe_fail(r->err, "tokenizer.json: %s is neither SpecialToken nor Sequence", w);
            }
            k++;
        }
        int rc = tpl_wrap(r, items, k);
        free(items);
        return rc;
    }
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        int32_t items[3] = {0, TOK_TPL_SEQ, 0};
        char w[200];
        snprintf(w, sizeof w, "%s.cls", where);
        if (special_id(r, field(o, "cls"), w, &items[0])) return -1;
        snprintf(w, sizeof w, "%s.sep", where);
        if (special_id(r, field(o, "sep"), w, &items[2])) return -1;
        return tpl_wrap(r, items, 3);
    }
    return moe_fail(r->err, "tokenizer.json: %s.type \"%s\" is not a supported post-processor", where, type);
}

static int read_model(reader *r, const cJSON *model) {
    tok_spec *s = r->s;
    if (!cJSON_IsObject(model)) return moe_fail(r->err, "tokenizer.json: model is missing");
    const cJSON *type = field(model, "type"), *vocab = field(model, "vocab"), *merges = field(model, "merges");
    if (cJSON_IsString(type) ? strcmp(type->valuestring, "BPE") != 0 : !merges)
        return moe_fail(r->err, "tokenizer.json: model.type \"%s\" is not supported (only BPE)",
                        cJSON_IsString(type) ? type->valuestring : "?");
    if (!cJSON_IsObject(vocab)) return moe_fail(r->err, "tokenizer.json: model.vocab is not an object");
    if (!cJSON_IsArray(merges)) return moe_fail(r->err, "tokenizer.json: model.merges is not a list");
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e9 ||
            it->valuedouble != (double)(int32_t)it->valuedouble)
            return moe_fail(r->err, "tokenizer.json: model.vocab[\"%.80s\"] is not a token id", it->string);
        int k = intern(r, it->string, strlen(it->string));
        if (k < 0) return oom(r);
        s->string_vocab_id[k] = (int32_t)it->valuedouble;
        if (set_id(r, (int32_t)it->valuedouble, k)) return oom(r);
    }
    int n = cJSON_GetArraySize(merges);
    s->merges = malloc((size_t)(n ? n : 1) * 3 * sizeof *s->merges);
    if (!s->merges) return oom(r);
    int i = 0;
    char *cat = NULL;
    size_t cat_cap = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t an, bn;
        if (cJSON_IsString(it)) {
            /* "a b".split(" ", 2) */
            a = it->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp) { free(cat); return moe_fail(r->err, "tokenizer.json: model.merges[%d] has no space", i); }
            an = (size_t)(sp - a);
            b = sp + 1;
            const char *sp2 = strchr(b, ' ');
            bn = sp2 ? (size_t)(sp2 - b) : strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            an = strlen(a);
            bn = strlen(b);
        } else {
            free(cat);
            return moe_fail(r->err, "tokenizer.json: model.merges[%d] is neither \"a b\" nor [a, b]", i);
        }
        if (an + bn + 1 > cat_cap) {
            cat_cap = (an + bn + 1) * 2;
            char *nc = realloc(cat, cat_cap);
            if (!nc) { free(cat); return oom(r); }
            cat = nc;
        }
        memcpy(cat, a, an);
        memcpy(cat + an, b, bn);
        int ka = intern(r, a, an), kb = intern(r, b, bn), kr = intern(r, cat, an + bn);
        if (ka < 0 || kb < 0 || kr < 0) { free(cat); return oom(r); }
        s->merges[3 * i] = (uint32_t)ka;
        s->merges[3 * i + 1] = (uint32_t)kb;
        s->merges[3 * i + 2] = (uint32_t)kr;
        i++;
    }
    free(cat);
    s->n_merges = (uint32_t)i;
    int k;
    if ((k = get_str(r, model, "unk_token", "model", &s->unk_token)) < 0) return -1;
    s->has_unk = k == 1;
    s->fuse_unk = (uint8_t)truthy(field(model, "fuse_unk"));
    s->byte_fallback = (uint8_t)truthy(field(model, "byte_fallback"));
    s->ignore_merges = (uint8_t)truthy(field(model, "ignore_merges"));
    if (get_str(r, model, "end_of_word_suffix", "model", &s->end_of_word_suffix) < 0) return -1;
    if (get_str(r, model, "continuing_subword_suffix", "model", &s->continuing_subword_suffix) < 0) return -1;
    return 0;
}

static int read_added(reader *r, const cJSON *list) {
    tok_spec *s = r->s;
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return moe_fail(r->err, "tokenizer.json: added_tokens is not a list");
    int n = cJSON_GetArraySize(list), i = 0;
    s->added = calloc((size_t)(n ? n : 1), sizeof *s->added);
    if (!s->added) return oom(r);
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const cJSON *id = field(it, "id"), *content = field(it, "content"), *sp = field(it, "special"),
                    *norm = field(it, "normalized");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e9 ||
            id->valuedouble != (double)(int32_t)id->valuedouble)
            return moe_fail(r->err, "tokenizer.json: added_tokens[%d].id is not a token id", i);
        if (!cJSON_IsString(content)) return moe_fail(r->err, "tokenizer.json: added_tokens[%d].content is not a string", i);
        tok_added *a = &s->added[i];
        if (str_set(&a->content, content->valuestring, strlen(content->valuestring))) return oom(r);
        s->n_added = ++i;
        a->id = (int32_t)id->valuedouble;
        a->special = (uint8_t)truthy(sp);
        a->normalized = (!norm || cJSON_IsNull(norm)) ? !a->special : (uint8_t)truthy(norm);
        a->lstrip = (uint8_t)truthy(field(it, "lstrip"));
        a->rstrip = (uint8_t)truthy(field(it, "rstrip"));
        a->single_word = (uint8_t)truthy(field(it, "single_word"));
        int k = intern(r, a->content.p, a->content.n);
        if (k < 0) return oom(r);
        s->string_vocab_id[k] = a->id;
        if (set_id(r, a->id, k)) return oom(r);
    }
    return 0;
}

/* bos_token etc.: a string or {"__type": "AddedToken", "content": ...}; -1 if absent. */
static int config_token(reader *r, const cJSON *cfg, const char *key, int32_t *id) {
    *id = -1;
    const cJSON *v = field(cfg, key);
    if (!truthy(v)) return 0;
    const char *name = NULL;
    if (cJSON_IsString(v)) name = v->valuestring;
    else if (cJSON_IsObject(v)) {
        const cJSON *ty = field(v, "__type"), *c = field(v, "content");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "AddedToken") != 0 || !cJSON_IsString(c))
            return moe_fail(r->err, "tokenizer_config.json: %s is not a token", key);
        name = c->valuestring;
    } else {
        return moe_fail(r->err, "tokenizer_config.json: %s is not a token", key);
    }
    *id = lookup_id(r, name);
    return 0;
}

static int read_config(reader *r, const cJSON *cfg) {
    tok_spec *s = r->s;
    s->clean_up_spaces = 1;
    s->add_bos = s->add_eos = -1;
    s->bos_id = s->eos_id = s->pad_id = -1;
    if (!cfg) return 0;
    if (!cJSON_IsObject(cfg)) return moe_fail(r->err, "tokenizer_config.json is not an object");
    const cJSON *v;
    if ((v = field(cfg, "clean_up_tokenization_spaces")) && !cJSON_IsNull(v)) s->clean_up_spaces = (uint8_t)truthy(v);
    s->remove_space = cJSON_IsTrue(field(cfg, "remove_space"));
    if (cJSON_IsTrue(field(cfg, "do_lowercase_and_remove_accent")))
        return moe_fail(r->err, "tokenizer_config.json: do_lowercase_and_remove_accent is not supported");
    if ((v = field(cfg, "add_bos_token")) && cJSON_IsBool(v)) s->add_bos = (int8_t)cJSON_IsTrue(v);
    if ((v = field(cfg, "add_eos_token")) && cJSON_IsBool(v)) s->add_eos = (int8_t)cJSON_IsTrue(v);
    if (config_token(r, cfg, "bos_token", &s->bos_id) || config_token(r, cfg, "eos_token", &s->eos_id))
        return -1;
    if (config_token(r, cfg, "pad_token", &s->pad_id)) return -1;
    if (s->pad_id < 0 && !truthy(field(cfg, "pad_token")) && config_token(r, cfg, "eos_token", &s->pad_id)) return -1;
    const cJSON *list = field(cfg, "additional_special_tokens"), *it;
    cJSON_ArrayForEach(it, list) {
        if (!cJSON_IsString(it)) continue;
        if (grow_array((void **)&s->extra_special, s->n_extra_special, sizeof *s->extra_special)) return oom(r);
        if (str_set(&s->extra_special[s->n_extra_special], it->valuestring, strlen(it->valuestring))) return oom(r);
        s->n_extra_special++;
    }
    return 0;
}

static cJSON *parse_json(const char *text, size_t len, const char *name, moe_error *err) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) moe_fail(err, "%s is not valid JSON (near byte %ld)", name, end ? (long)(end - text) : -1L);
    return j;
}

moe_tokenizer *moe_tokenizer_from_hf(const char *tokenizer_json, size_t len, const char *config_json,
                                     size_t config_len, moe_error *err) {
    if (!tokenizer_json) { moe_fail(err, "tokenizer.json is missing"); return NULL; }
    cJSON *j = parse_json(tokenizer_json, len, "tokenizer.json", err);
    if (!j) return NULL;
    cJSON *cfg = NULL;
    if (config_json && !(cfg = parse_json(config_json, config_len, "tokenizer_config.json", err))) {
        cJSON_Delete(j);
        return NULL;
    }
    moe_tokenizer *t = calloc(1, sizeof *t);
    reader r = {.s = t ? &t->s : NULL, .err = err};
    int rc = -1;
    if (!t) { moe_fail(err, "out of memory"); goto done; }
    if (strmap_init(&r.map, 1024)) { oom(&r); goto done; }
    if (read_model(&r, field(j, "model")) || read_added(&r, field(j, "added_tokens"))) goto done;
    const cJSON *nz = field(j, "normalizer");
    t->s.has_normalizer = nz && !cJSON_IsNull(nz);
    if (read_normalizer(&r, nz, "normalizer") || read_pre(&r, field(j, "pre_tokenizer"), "pre_tokenizer")) goto done;
    const cJSON *dc = field(j, "decoder");
    t->s.has_decoder = dc && !cJSON_IsNull(dc);
    if (read_decoder(&r, dc, "decoder") || read_post(&r, field(j, "post_processor"), "post_processor")) goto done;
    if (t->s.has_unk && intern(&r, t->s.unk_token.p, t->s.unk_token.n) < 0) { oom(&r); goto done; }
    if (read_config(&r, cfg)) goto done;
    rc = 0;
done:
    strmap_free(&r.map);
    cJSON_Delete(j);
    cJSON_Delete(cfg);
    if (rc == 0 && tok_build(t, err) == 0) return t;
    moe_tokenizer_free(t);
    return NULL;
}

/* ---- building the run-time tables ---- */

static int trie_build(tok_trie *tr, const tok_str *const *words, int n) {
    /* Nodes are made level by level from the sorted words, so that the edges
     * of each node are contiguous and sorted. Simple approach: insert into a
     * temporary child-list trie, then flatten. */
    typedef struct tnode { int first_child, next_sibling; uint8_t byte; uint8_t end; } tnode;
    int cap = 64, nn = 1;
    tnode *nodes = calloc((size_t)cap, sizeof *nodes);
    if (!nodes) return -1;
    nodes[0].first_child = nodes[0].next_sibling = -1;
    memset(tr->first, 0, sizeof tr->first);
    for (int w = 0; w < n; w++) {
        const tok_str *s = words[w];
        if (!s->n) continue;
        tr->first[(uint8_t)s->p[0]] = 1;
        int cur = 0;
        for (uint32_t i = 0; i < s->n; i++) {
            uint8_t b = (uint8_t)s->p[i];
            int prev = -1, c = nodes[cur].first_child;
            while (c >= 0 && nodes[c].byte < b) { prev = c; c = nodes[c].next_sibling; }
            if (c < 0 || nodes[c].byte != b) {
                if (nn == cap) {
                    cap *= 2;
                    tnode *nb = realloc(nodes, (size_t)cap * sizeof *nb);
                    if (!nb) { free(nodes); return -1; }
                    nodes = nb;
                }
                int k = nn++;
                nodes[k] = (tnode){.first_child = -1, .next_sibling = c, .byte = b};
                if (prev < 0) nodes[cur].first_child = k;
                else nodes[prev].next_sibling = k;
                c = k;
            }
            cur = c;
        }
        nodes[cur].end = 1;
    }
    tr->n_nodes = (uint32_t)nn;
    tr->edge_start = malloc((size_t)nn * sizeof *tr->edge_start);
    tr->edge_count = malloc((size_t)nn * sizeof *tr->edge_count);
    tr->edge_byte = malloc((size_t)nn * sizeof *tr->edge_byte);
    tr->edge_child = malloc((size_t)nn * sizeof *tr->edge_child);
    tr->node_token = malloc((size_t)nn * sizeof *tr->node_token);
    if (!tr->edge_start || !tr->edge_count || !tr->edge_byte || !tr->edge_child || !tr->node_token) {
        free(nodes);
        return -1;
    }
    uint32_t e = 0;
    for (int k = 0; k < nn; k++) {
        tr->edge_start[k] = e;
        uint16_t cnt = 0;
        for (int c = nodes[k].first_child; c >= 0; c = nodes[c].next_sibling) {
            tr->edge_byte[e] = nodes[c].byte;
            tr->edge_child[e] = (uint32_t)c;
            e++;
            cnt++;
        }
        tr->edge_count[k] = cnt;
        tr->node_token[k] = nodes[k].end ? 1 : -1;
    }
    free(nodes);
    return 0;
}

static void trie_free(tok_trie *tr) {
    free(tr->edge_start);
    free(tr->edge_count);
    free(tr->edge_byte);
    free(tr->edge_child);
    free(tr->node_token);
    *tr = (tok_trie){0};
}

static int merge_table(moe_tokenizer *t) {
    uint32_t n = t->s.n_merges, cap = 16;
    while (cap < 2 * (uint64_t)n + 16) cap *= 2;
    t->merge_slots = calloc(cap, sizeof *t->merge_slots);
    if (!t->merge_slots) return -1;
    t->merge_mask = cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t *m = &t->s.merges[3 * i];
        uint64_t key = ((uint64_t)m[0] << 32 | m[1]) + 1;
        uint64_t h = key * 0x9E3779B97F4A7C15ull;
        for (uint32_t j = (uint32_t)(h >> 32) & t->merge_mask;; j = (j + 1) & t->merge_mask) {
            tok_merge_slot *sl = &t->merge_slots[j];
            if (sl->key == 0 || sl->key == key) { /* a later duplicate wins, as in the reference's Map */
                sl->key = key;
                sl->rank = i;
                sl->result = m[2];
                break;
            }
        }
    }
    return 0;
}

int tok_build(moe_tokenizer *t, moe_error *err) {
    tok_spec *s = &t->s;
    if (strmap_init(&t->strmap, s->n_strings)) return moe_fail(err, "out of memory building the tokenizer");
    for (uint32_t i = 0; i < s->n_strings; i++) strmap_insert(&t->strmap, s->strings, i);
    if (merge_table(t)) return moe_fail(err, "out of memory building the tokenizer");

    /* normalizer regexes (needed to normalize the added tokens) */
    t->norm_re = calloc((size_t)(s->n_norm + 1), sizeof *t->norm_re);
    t->pre_re = calloc((size_t)(s->n_pre + 1), sizeof *t->pre_re);
    t->dec_re = calloc((size_t)(s->n_dec + 1), sizeof *t->dec_re);
    if (!t->norm_re || !t->pre_re || !t->dec_re) return moe_fail(err, "out of memory building the tokenizer");
    char what[64];
    for (int i = 0; i < s->n_norm; i++) {
        if (s->norm[i].type != TOK_NORM_REPLACE) continue;
        snprintf(what, sizeof what, "normalizer step %d (Replace)", i);
        if (tok_regex_compile_pattern(&t->norm_re[i], &s->norm[i].pat, 0, what, err)) return -1;
    }
    int need_bl = 0;
    for (int i = 0; i < s->n_pre; i++) {
        tok_pre_step *p = &s->pre[i];
        if (p->type == TOK_PRE_SPLIT) {
            snprintf(what, sizeof what, "pre_tokenizer step %d (Split)", i);
            if (tok_regex_compile_pattern(&t->pre_re[i], &p->pat, p->invert == 0, what, err)) return -1;
        }
        if (p->type == TOK_PRE_BYTELEVEL && p->use_regex) need_bl = 1;
        if (p->type == TOK_PRE_BYTELEVEL) t->byte_level_vocab = 1;
    }
    if (need_bl) {
        /* The reference's own GPT-2 pattern, with JavaScript's \s (which has U+FEFF and lacks U+0085). */
#define JSWS "\\t-\\r \\xA0\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"
        static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" JSWS "\\p{L}\\p{N}]+|[" JSWS
                                   "]+(?![^" JSWS "])|[" JSWS "]+";
#undef JSWS
        if (tok_regex_compile_onig(&t->bytelevel_re, gpt2, sizeof gpt2 - 1, "ByteLevel pre-tokenizer", err)) return -1;
    }
    if (tok_regex_compile_raw(&t->digits_re, "[^0-9]+|[0-9]+", err) ||
        tok_regex_compile_raw(&t->digits1_re, "[^0-9]+|[0-9]", err))
        return -1;
    for (int i = 0; i < s->n_dec; i++) {
        if (s->dec[i].type == TOK_DEC_BYTELEVEL) t->byte_level_vocab = 1;
        if (s->dec[i].type != TOK_DEC_REPLACE) continue;
        snprintf(what, sizeof what, "decoder step %d (Replace)", i);
        if (tok_regex_compile_pattern(&t->dec_re[i], &s->dec[i].pat, 0, what, err)) return -1;
    }

    /* added tokens: normalized contents, the content map, the two tries */
    int na = s->n_added;
    t->added_rt = calloc((size_t)(na + 1), sizeof *t->added_rt);
    t->added_keys = calloc((size_t)(2 * na + 1), sizeof *t->added_keys);
    t->added_key_token = calloc((size_t)(2 * na + 1), sizeof *t->added_key_token);
    const tok_str **raw = calloc((size_t)(na + 1), sizeof *raw), **nrm = calloc((size_t)(na + 1), sizeof *nrm);
    int n_raw = 0, n_nrm = 0;
    if (!t->added_rt || !t->added_keys || !t->added_key_token || !raw || !nrm || strmap_init(&t->added_map, (uint32_t)(2 * na))) {
        free(raw);
        free(nrm);
        return moe_fail(err, "out of memory building the tokenizer");
    }
    tok_matcher m;
    if (tok_matcher_init(&m)) { free(raw); free(nrm); return moe_fail(err, "out of memory building the tokenizer"); }
    int rc = 0;
    for (int i = 0; i < na && rc == 0; i++) {
        tok_added *a = &s->added[i];
        if (!tok_utf8_valid(a->content.p, a->content.n)) {
            rc = moe_fail(err, "added token %d is not valid UTF-8", a->id);
            break;
        }
        /* content -> token, then normalized content -> token (a later token wins) */
        int keys[2], nk = 0;
        t->added_keys[t->n_added_keys] = a->content;
        keys[nk++] = t->n_added_keys++;
        if (a->normalized && s->has_normalizer) {
            tok_bytes nb = {0};
            if (tok_normalize(t, &m, a->content.p, a->content.n, &nb, err)) { tok_bytes_free(&nb); rc = -1; break; }
            t->added_rt[i].norm_content.p = nb.p ? nb.p : calloc(1, 1);
            t->added_rt[i].norm_content.n = (uint32_t)nb.n;
            t->added_keys[t->n_added_keys] = t->added_rt[i].norm_content;
            keys[nk++] = t->n_added_keys++;
            nrm[n_nrm++] = &t->added_rt[i].norm_content;
        } else {
            raw[n_raw++] = &a->content;
        }
        for (int k = 0; k < nk; k++) {
            int at = strmap_insert(&t->added_map, t->added_keys, (uint32_t)keys[k]);
            t->added_key_token[at] = i;
            t->added_key_token[keys[k]] = i;
        }
    }
    tok_matcher_free(&m);
    if (rc == 0 && (trie_build(&t->trie_raw, raw, n_raw) || trie_build(&t->trie_norm, nrm, n_nrm)))
        rc = moe_fail(err, "out of memory building the tokenizer");
    free(raw);
    free(nrm);
    if (rc) return rc;

    /* ids: final id per string (added map first), byte tables, flags */
    t->string_final_id = malloc((size_t)(s->n_strings + 1) * sizeof *t->string_final_id);
    if (!t->string_final_id) return moe_fail(err, "out of memory building the tokenizer");
    for (uint32_t i = 0; i < s->n_strings; i++) {
        int k = tok_strmap_get(&t->added_map, t->added_keys, s->strings[i].p, s->strings[i].n);
        t->string_final_id[i] = k >= 0 ? s->added[t->added_key_token[k]].id : s->string_vocab_id[i];
    }
    t->unk_id = -1;
    if (s->has_unk) {
        int k = tok_strmap_get(&t->strmap, s->strings, s->unk_token.p, s->unk_token.n);
        if (k >= 0) t->unk_id = t->string_final_id[k];
    }
    for (int b = 0; b < 128; b++) {
        char u = (char)b;
        t->ascii_string[b] = tok_strmap_get(&t->strmap, s->strings, &u, 1);
    }
    for (int b = 0; b < 256; b++) {
        char u[8];
        int l = tok_utf8_encode(tok_byte_to_cp((uint8_t)b), u);
        t->byte_string[b] = tok_strmap_get(&t->strmap, s->strings, u, (size_t)l);
        snprintf(u, sizeof u, "<0x%02X>", b);
        int k = tok_strmap_get(&t->strmap, s->strings, u, 6);
        t->byte_token[b] = (k >= 0 && s->string_vocab_id[k] >= 0) ? k : -1;
    }
    t->id_flags = calloc((size_t)(s->n_ids + 1), 1);
    if (!t->id_flags) return moe_fail(err, "out of memory building the tokenizer");
    /* flags by string: added contents (ADDED, SKIP when special) and additional_special_tokens (SKIP) */
    int nk = na + s->n_extra_special;
    tok_str *keys = calloc((size_t)(nk + 1), sizeof *keys);
    uint8_t *kf = calloc((size_t)(nk + 1), 1);
    tok_strmap fm = {0};
    if (!keys || !kf || strmap_init(&fm, (uint32_t)nk)) {
        free(keys);
        free(kf);
        return moe_fail(err, "out of memory building the tokenizer");
    }
    for (int i = 0; i < nk; i++) {
        keys[i] = i < na ? s->added[i].content : s->extra_special[i - na];
        uint8_t f = i < na ? (uint8_t)(TOK_ID_ADDED | (s->added[i].special ? TOK_ID_SKIP : 0)) : TOK_ID_SKIP;
        kf[strmap_insert(&fm, keys, (uint32_t)i)] |= f;
    }
    for (int32_t id = 0; id < s->n_ids; id++) {
        int k = s->id_string[id];
        if (k < 0) continue;
        int f = tok_strmap_get(&fm, keys, s->strings[k].p, s->strings[k].n);
        t->id_flags[id] = f >= 0 ? kf[f] : 0;
        t->n_vocab = id + 1;
    }
    strmap_free(&fm);
    free(keys);
    free(kf);
    for (int i = 0; i < na; i++) {
        const tok_added *a = &s->added[i];
        if (a->special && a->id < s->n_ids) t->id_flags[a->id] |= TOK_ID_SPECIAL;
    }
    return 0;
}

void moe_tokenizer_free(moe_tokenizer *t) {
    if (!t) return;
    strmap_free(&t->strmap);
    free(t->string_final_id);
    free(t->merge_slots);
    if (t->added_rt)
        for (int i = 0; i < t->s.n_added; i++) free(t->added_rt[i].norm_content.p);
    free(t->added_rt);
    strmap_free(&t->added_map);
    free(t->added_keys);
    free(t->added_key_token);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    if (t->norm_re)
        for (int i = 0; i < t->s.n_norm; i++) tok_regex_free(&t->norm_re[i]);
    if (t->pre_re)
        for (int i = 0; i < t->s.n_pre; i++) tok_regex_free(&t->pre_re[i]);
    if (t->dec_re)
        for (int i = 0; i < t->s.n_dec; i++) tok_regex_free(&t->dec_re[i]);
    free(t->norm_re);
    free(t->pre_re);
    free(t->dec_re);
    tok_regex_free(&t->bytelevel_re);
    tok_regex_free(&t->digits_re);
    tok_regex_free(&t->digits1_re);
    free(t->id_flags);
    tok_spec_free(&t->s);
    free(t);
}

/* ---- accessors ---- */

int moe_tokenizer_n_vocab(const moe_tokenizer *t) { return t->n_vocab; }

const char *moe_tokenizer_piece(const moe_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->s.n_ids || t->s.id_string[id] < 0) return NULL;
    const tok_str *s = &t->s.strings[t->s.id_string[id]];
    if (len) *len = s->n;
    return s->p;
}

int32_t moe_tokenizer_piece_id(const moe_tokenizer *t, const char *piece, size_t len) {
    int k = tok_strmap_get(&t->strmap, t->s.strings, piece, len);
    return k < 0 ? -1 : t->s.string_vocab_id[k];
}

int32_t moe_tokenizer_bos(const moe_tokenizer *t) { return t->s.bos_id; }
int32_t moe_tokenizer_eos(const moe_tokenizer *t) { return t->s.eos_id; }
int32_t moe_tokenizer_pad(const moe_tokenizer *t) { return t->s.pad_id; }
int moe_tokenizer_add_bos(const moe_tokenizer *t) { return t->s.add_bos; }
int moe_tokenizer_add_eos(const moe_tokenizer *t) { return t->s.add_eos; }

int moe_tokenizer_is_special(const moe_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->s.n_ids && (t->id_flags[id] & TOK_ID_SPECIAL) != 0;
}
