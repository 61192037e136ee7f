/*
 * tok_unicode_data.h — what the reference's newer Unicode knows and the
 * libraries' older tables do not: general categories (and Alphabetic) for
 * PCRE2, decompositions and compositions for utf8proc; generated into tok_unicode_data.c by tests/text/tokenizer/gen_unicode_additions.sh.
 */
#ifndef MOE_TEXT_TOK_UNICODE_DATA_H
#define MOE_TEXT_TOK_UNICODE_DATA_H

#include <stdint.h>

typedef struct tok_urange {
    uint32_t lo, hi;
    uint8_t gc;     /* index into tok_unicode_gc_names */
    uint8_t gc_new; /* PCRE2 does not give these the category gc */
    uint8_t alpha;  /* PCRE2 does not give these Alphabetic */
} tok_urange;

/* A decomposition utf8proc does not know: full NFD and NFKD (0-terminated). */
typedef struct tok_udecomp {
    uint32_t cp;
    uint32_t map[2][8]; /* [0]: NFD, [1]: NFKD */
} tok_udecomp;

/* A composition utf8proc does not make: a followed by b composes to cp. */
typedef struct tok_ucompose {
    uint32_t a, b, cp;
} tok_ucompose;

extern const char *const tok_unicode_gc_names[];
extern const char tok_unicode_additions_source[];
extern const tok_urange tok_unicode_additions[];
extern const int tok_unicode_n_additions;
extern const tok_udecomp tok_unicode_decomps[];
extern const int tok_unicode_n_decomps;
extern const tok_ucompose tok_unicode_compositions[];
extern const int tok_unicode_n_compositions;

#endif
