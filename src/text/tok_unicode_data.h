/*
 * tok_unicode_data.h — code points that the reference's Unicode places in a
 * general category (or in Alphabetic) where PCRE2's older tables do not;
 * generated into tok_unicode_data.c by tests/text/tokenizer/gen_unicode_additions.sh.
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

extern const char *const tok_unicode_gc_names[];
extern const char tok_unicode_additions_source[];
extern const tok_urange tok_unicode_additions[];
extern const int tok_unicode_n_additions;

#endif
