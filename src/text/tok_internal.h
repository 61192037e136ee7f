/*
 * tok_internal.h — what the tokenizer's files share: the "spec" (everything
 * read from tokenizer.json + tokenizer_config.json, which is also exactly what
 * moe_tokenizer_serialize writes), the run-time tables built from it (hash
 * maps, compiled regexes), and the helpers each file offers the others.
 *
 * Files: tokenizer.c (reading the Hugging Face JSON, building, accessors),
 * tok_serial.c (the compact binary form), tok_regex.c (pattern translation and
 * matching with PCRE2), tok_utf8.c (UTF-8 decoding the WHATWG way, the
 * byte-level alphabet, Unicode helpers), tok_encode.c (normalizers, added
 * tokens, pre-tokenizers, BPE, post-processing), tok_decode.c (decoder chain
 * and the streaming decoder).
 */
#ifndef MOE_TEXT_TOK_INTERNAL_H
#define MOE_TEXT_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "text/tokenizer.h"
#include "util/error.h"

/* ---- growable vectors (owned by whoever declares them) ---- */

typedef struct tok_bytes {
    char *p;
    size_t n, cap;
    int oom;
} tok_bytes;

void tok_bytes_put(tok_bytes *b, const void *p, size_t n);
/* Makes room for n more bytes (plus a NUL); -1 (and oom set) if it cannot. */
int tok_bytes_reserve(tok_bytes *b, size_t n);
void tok_bytes_putc(tok_bytes *b, char c);
void tok_bytes_free(tok_bytes *b);

typedef struct tok_ids {
    int32_t *v;
    int n, cap;
    int oom;
} tok_ids;

void tok_ids_push(tok_ids *a, int32_t x);
void tok_ids_free(tok_ids *a);

/* A slice of text that some other buffer owns. */
typedef struct tok_span {
    const char *p;
    size_t n;
} tok_span;

typedef struct tok_spans {
    tok_span *v;
    int n, cap;
    int oom;
} tok_spans;

void tok_spans_push(tok_spans *a, const char *p, size_t n);
void tok_spans_free(tok_spans *a);

/* Bump allocator for the short-lived strings of one encode/decode call. */
typedef struct tok_arena {
    struct tok_arena_block *head;
    int oom;
} tok_arena;

char *tok_arena_alloc(tok_arena *a, size_t n);
char *tok_arena_dup(tok_arena *a, const char *p, size_t n);
void tok_arena_free(tok_arena *a);

/* ---- the spec: what tokenizer.json says, flattened ---- */

typedef struct tok_str {
    char *p; /* NUL-terminated, owned */
    uint32_t n;
} tok_str;

/* A pattern as tokenizer.json gives it: {"String": ...} or {"Regex": ...}. */
enum { TOK_PAT_STRING = 0, TOK_PAT_REGEX = 1 };

typedef struct tok_pattern {
    uint8_t kind;
    tok_str src;
} tok_pattern;

enum tok_norm_type {
    TOK_NORM_NFC, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD,
    TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_STRIP,
};

typedef struct tok_norm_step {
    uint8_t type;
    uint8_t strip_left, strip_right; /* Strip */
    tok_str text;                    /* Prepend: prepend; Replace: content */
    tok_pattern pat;                 /* Replace */
} tok_norm_step;

enum tok_pre_type { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL, TOK_PRE_METASPACE, TOK_PRE_DIGITS };
enum tok_split_behavior { TOK_SPLIT_ISOLATED, TOK_SPLIT_REMOVED };
enum tok_prepend_scheme { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };

typedef struct tok_pre_step {
    uint8_t type;
    uint8_t behavior, invert;          /* Split */
    uint8_t add_prefix_space, use_regex; /* ByteLevel */
    uint8_t prepend_scheme;            /* Metaspace */
    uint8_t individual_digits;         /* Digits */
    tok_pattern pat;                   /* Split */
    tok_str replacement, str_rep;      /* Metaspace */
} tok_pre_step;

enum tok_dec_type {
    TOK_DEC_BYTELEVEL, TOK_DEC_REPLACE, TOK_DEC_BYTEFALLBACK, TOK_DEC_FUSE,
    TOK_DEC_STRIP, TOK_DEC_METASPACE,
};

typedef struct tok_dec_step {
    uint8_t type;
    int32_t start, stop;  /* Strip */
    tok_str text;         /* Replace: content; Strip: content; Metaspace: replacement */
    tok_pattern pat;      /* Replace */
} tok_dec_step;

/* added_tokens[] of tokenizer.json */
typedef struct tok_added {
    tok_str content;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} tok_added;

/* The post-processor as one template: ids, where TOK_TPL_SEQ stands for the
 * encoded text. Applied only with add_special (otherwise the text alone). */
#define TOK_TPL_SEQ (-1)

typedef struct tok_spec {
    /* model: BPE. strings[] holds every string the model can meet: the vocab,
     * the added tokens, both halves of each merge and its result. */
    uint32_t n_strings;
    tok_str *strings;
    int32_t *string_vocab_id; /* tokens_to_ids (with added tokens set), -1: none */
    int32_t n_ids;            /* id -> string table length */
    int32_t *id_string;       /* id -> string index, -1: hole */
    uint32_t n_merges;        /* in rank order */
    uint32_t *merges;         /* 3 per merge: left, right, result string index */
    tok_str unk_token;        /* n == 0 && p == NULL: none */
    uint8_t has_unk;
    uint8_t fuse_unk, byte_fallback, ignore_merges;
    tok_str end_of_word_suffix, continuing_subword_suffix;

    uint8_t has_normalizer; /* normalizer is not null (even an empty Sequence) */
    int n_norm;
    tok_norm_step *norm;
    int n_pre;
    tok_pre_step *pre;
    uint8_t has_decoder;
    int n_dec;
    tok_dec_step *dec;
    int n_tpl;
    int32_t *tpl;

    int n_added;
    tok_added *added;
    int n_extra_special;   /* tokenizer_config additional_special_tokens */
    tok_str *extra_special;

    uint8_t clean_up_spaces;  /* clean_up_tokenization_spaces (reference default: true) */
    uint8_t remove_space;     /* tokenizer_config remove_space */
    int8_t add_bos, add_eos;  /* tokenizer_config add_bos_token/add_eos_token, -1: absent */
    int32_t bos_id, eos_id, pad_id; /* from tokenizer_config, -1: none */
} tok_spec;

void tok_spec_free(tok_spec *s);

/* ---- run-time structures ---- */

/* string -> index (open addressing; keys are spec strings) */
typedef struct tok_strmap {
    uint32_t *slots; /* index + 1, 0: empty */
    uint32_t mask;
} tok_strmap;

typedef struct tok_merge_slot {
    uint64_t key;    /* (left << 32 | right) + 1; 0: empty */
    uint32_t rank;
    uint32_t result;
} tok_merge_slot;

/* A byte trie of added-token contents, for the leftmost-longest split. */
typedef struct tok_trie {
    uint32_t *edge_start; /* per node: first edge; edges of a node are contiguous, sorted by byte */
    uint16_t *edge_count;
    uint8_t *edge_byte;
    uint32_t *edge_child;
    int32_t *node_token; /* added token index ending here, -1 */
    uint32_t n_nodes;
    uint8_t first[256];  /* can a content start with this byte */
} tok_trie;

typedef struct tok_regex {
    pcre2_code *code;
    uint32_t capture_count;
} tok_regex;

typedef struct tok_added_rt {
    tok_str norm_content; /* content after the normalizer (normalized tokens only) */
} tok_added_rt;

struct moe_tokenizer {
    tok_spec s;

    tok_strmap strmap;            /* spec strings */
    int32_t *string_final_id;     /* id after the added-token lookup, -1: unknown */
    tok_merge_slot *merge_slots;
    uint32_t merge_mask;

    int32_t byte_string[256];     /* byte-level: string index of the char of each byte, -1 */
    int32_t ascii_string[128];    /* string index of each ASCII character, -1 */
    int32_t byte_token[256];      /* byte fallback: string index of "<0xAB>", -1 */
    int32_t unk_id;               /* final id of the unk token, -1 */
    int byte_level_vocab;         /* decoder or pre-tokenizer is ByteLevel */

    /* added tokens: map from content (and normalized content) to added index */
    tok_added_rt *added_rt;
    tok_strmap added_map;         /* keys: added_keys[] */
    int n_added_keys;
    tok_str *added_keys;          /* borrowed pointers into spec/added_rt */
    int32_t *added_key_token;     /* key -> added index */
    tok_trie trie_raw, trie_norm;

    tok_regex *norm_re;           /* per normalizer step (Replace with Regex) */
    tok_regex *pre_re;            /* per pre-tokenizer step */
    tok_regex bytelevel_re;       /* GPT-2 pattern of the ByteLevel pre-tokenizer */
    tok_regex digits_re, digits1_re;
    tok_regex *dec_re;            /* per decoder step */

    uint8_t *id_flags;            /* per id: TOK_ID_* */
    int32_t n_vocab;              /* one past the largest id with a piece */
};

enum { TOK_ID_SPECIAL = 1, TOK_ID_SKIP = 2, TOK_ID_ADDED = 4 };

/* tokenizer.c */
int tok_build(moe_tokenizer *t, moe_error *err);
int tok_strmap_get(const tok_strmap *m, const tok_str *keys, const char *p, size_t n);
uint64_t tok_hash(const void *p, size_t n);

/* tok_utf8.c */
/* Decodes s the way the WHATWG UTF-8 decoder does (TextDecoder, fatal: false):
 * each maximal invalid subsequence becomes U+FFFD. With final == 0 an
 * incomplete sequence at the end is not replaced but left out, and *pending
 * gets its length. Appends to out. */
void tok_utf8_whatwg(const char *s, size_t n, int final, tok_bytes *out, size_t *pending);
/* 1 if s is valid UTF-8 (no surrogates, no overlongs, <= U+10FFFF). */
int tok_utf8_valid(const char *s, size_t n);
/* Decodes the code point at s (valid UTF-8 assumed); returns its length. */
int tok_utf8_next(const char *s, size_t n, uint32_t *cp);
int tok_utf8_encode(uint32_t cp, char *out);
/* Byte-level alphabet (GPT-2's bytes_to_unicode). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 if not in the alphabet */
/* JavaScript's WhiteSpace + LineTerminator (String.prototype.trim, regex \s). */
int tok_js_space(uint32_t cp);
/* Unicode normalization (utf8proc). form: TOK_NORM_NFC..NFKD. */
int tok_unicode_normalize(int form, const char *s, size_t n, tok_bytes *out);

/* tok_regex.c */
/* Translates a tokenizer.json regex (Oniguruma syntax, as the reference
 * rewrites it for JavaScript) into PCRE2 and compiles it. */
int tok_regex_compile_onig(tok_regex *re, const char *src, size_t n, const char *what, moe_error *err);
/* Compiles a literal string (capture: wrap it in a group, as the reference does for invert: false). */
int tok_regex_compile_literal(tok_regex *re, const char *s, size_t n, int capture, moe_error *err);
/* Compiles a PCRE2 pattern as is. */
int tok_regex_compile_raw(tok_regex *re, const char *pat, moe_error *err);
int tok_regex_compile_pattern(tok_regex *re, const tok_pattern *p, int capture, const char *what, moe_error *err);
void tok_regex_free(tok_regex *re);

typedef struct tok_matcher {
    pcre2_match_data *md;
    int error;  /* first PCRE2 error met, 0 if none */
} tok_matcher;

int tok_matcher_init(tok_matcher *m);
void tok_matcher_free(tok_matcher *m);
/* Next match at or after pos: 1 with [*s, *e), 0 when none. JavaScript's
 * lastIndex stepping is the caller's (see tok_regex_foreach). */
int tok_regex_find(const tok_regex *re, tok_matcher *m, const char *s, size_t n, size_t pos,
                   int anchored, size_t *ms, size_t *me);
/* All matches, as String.prototype.matchAll with the g and u flags; fn may be NULL. */
typedef void (*tok_match_fn)(void *user, size_t s, size_t e, tok_matcher *m);
int tok_regex_foreach(const tok_regex *re, tok_matcher *m, const char *s, size_t n, tok_match_fn fn, void *user);
/* text.replaceAll(re, content) with JavaScript's $-substitutions. */
int tok_regex_replace_all(const tok_regex *re, tok_matcher *m, const char *s, size_t n,
                          const char *content, size_t cn, tok_bytes *out);

/* tok_encode.c */
int tok_encode(const moe_tokenizer *t, const char *text, size_t len, int add_special, tok_ids *out,
               moe_error *err);
/* Applies the normalizer chain to s (valid UTF-8). */
int tok_normalize(const moe_tokenizer *t, tok_matcher *m, const char *s, size_t n, tok_bytes *out,
                  moe_error *err);

/* tok_decode.c */
typedef struct tok_decode_opts {
    int skip_special;
    int stream_start;  /* the ids begin the text (decoder rules for the first token apply) */
    int final;         /* 0: leave an incomplete UTF-8 tail out and report it */
} tok_decode_opts;

typedef struct tok_decode_info {
    size_t pending;     /* bytes of an incomplete UTF-8 sequence at the end (final == 0) */
    int last_is_byte;   /* the last kept token is a <0xAB> byte token decoded by ByteFallback */
} tok_decode_info;

/* Decodes ids into out (without clean-up; see tok_cleanup). */
int tok_decode_raw(const moe_tokenizer *t, const int32_t *ids, int n, const tok_decode_opts *o,
                   tok_bytes *out, tok_decode_info *info, moe_error *err);
/* clean_up_tokenization of the reference, appended to out. */
void tok_cleanup(const char *s, size_t n, tok_bytes *out);
/* Characters that no clean-up rule can touch: the text splits there. */
int tok_cleanup_barrier(char c);

#endif
