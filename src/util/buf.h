/*
 * buf.h — a growable byte buffer for building the metadata and tensor table of
 * a .moe file, and a bounds-checked cursor for reading them back. The cursor
 * never reads past its end: every get returns -1 instead, so a truncated or
 * corrupt table becomes an error, not a crash.
 */
#ifndef MOE_UTIL_BUF_H
#define MOE_UTIL_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct moe_buf {
    uint8_t *data;
    size_t len, cap;
    int oom; /* set once an allocation failed; later puts are ignored */
} moe_buf;

void moe_buf_free(moe_buf *b);
void moe_buf_put(moe_buf *b, const void *p, size_t n);
void moe_buf_u8(moe_buf *b, uint8_t v);
void moe_buf_u16(moe_buf *b, uint16_t v);
void moe_buf_u32(moe_buf *b, uint32_t v);
void moe_buf_u64(moe_buf *b, uint64_t v);

typedef struct moe_cursor {
    const uint8_t *p, *end;
} moe_cursor;

int moe_cur_get(moe_cursor *c, void *out, size_t n);
int moe_cur_u8(moe_cursor *c, uint8_t *v);
int moe_cur_u16(moe_cursor *c, uint16_t *v);
int moe_cur_u32(moe_cursor *c, uint32_t *v);
int moe_cur_u64(moe_cursor *c, uint64_t *v);
/* Points *s at n bytes inside the cursor's memory (no copy). */
int moe_cur_span(moe_cursor *c, size_t n, const uint8_t **s);

#endif
