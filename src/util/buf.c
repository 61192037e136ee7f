/* buf.c — see buf.h. Values are stored little-endian regardless of the host. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void moe_buf_free(moe_buf *b) {
    free(b->data);
    *b = (moe_buf){0};
}

void moe_buf_put(moe_buf *b, const void *p, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) { b->oom = 1; return; }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_le(moe_buf *b, uint64_t v, int n) {
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    moe_buf_put(b, t, (size_t)n);
}

void moe_buf_u8(moe_buf *b, uint8_t v) { put_le(b, v, 1); }
void moe_buf_u16(moe_buf *b, uint16_t v) { put_le(b, v, 2); }
void moe_buf_u32(moe_buf *b, uint32_t v) { put_le(b, v, 4); }
void moe_buf_u64(moe_buf *b, uint64_t v) { put_le(b, v, 8); }

int moe_cur_get(moe_cursor *c, void *out, size_t n) {
    if ((size_t)(c->end - c->p) < n) return -1;
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}

static int get_le(moe_cursor *c, uint64_t *v, int n) {
    if (c->end - c->p < n) return -1;
    uint64_t x = 0;
    for (int i = 0; i < n; i++) x |= (uint64_t)c->p[i] << (8 * i);
    c->p += n;
    *v = x;
    return 0;
}

int moe_cur_u8(moe_cursor *c, uint8_t *v) { uint64_t x; if (get_le(c, &x, 1)) return -1; *v = (uint8_t)x; return 0; }
int moe_cur_u16(moe_cursor *c, uint16_t *v) { uint64_t x; if (get_le(c, &x, 2)) return -1; *v = (uint16_t)x; return 0; }
int moe_cur_u32(moe_cursor *c, uint32_t *v) { uint64_t x; if (get_le(c, &x, 4)) return -1; *v = (uint32_t)x; return 0; }
int moe_cur_u64(moe_cursor *c, uint64_t *v) { return get_le(c, v, 8); }

int moe_cur_span(moe_cursor *c, size_t n, const uint8_t **s) {
    if ((size_t)(c->end - c->p) < n) return -1;
    *s = c->p;
    c->p += n;
    return 0;
}
