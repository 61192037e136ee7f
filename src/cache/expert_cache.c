/*
 * expert_cache.c — see expert_cache.h. Each expert of the file is one byte
 * range (the converter lays out gate, up, down contiguously from a page
 * boundary), so filling a slot is one pread of that range; the file is
 * opened a second time with O_DIRECT where the file system allows it, so the
 * page cache does not become a hidden second copy. The LRU order is a doubly
 * linked list of slots; lookups go through a [layer][expert] table.
 */
#include "expert_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant/quant.h"
#include "util/error.h"

#define NONE (-1)

typedef struct slot {
    int layer, expert;        /* NONE when empty */
    int pins;
    int prev, next;           /* LRU list: head is the most recently used */
    moe_weight w[ET_COUNT];
} slot;

struct moe_expert_cache {
    const moe_model *m;
    int fd;
    uint8_t *arena;
    uint64_t slot_bytes;
    slot *slots;
    int n_slots, head, tail, used;
    int32_t *where;           /* [layer * n_experts + expert]: slot, or NONE */
    moe_cache_stats stats;
};

/* Byte range of an expert in the file, and its tensors' offsets in it. */
static uint64_t expert_range(const moe_model *m, int layer, int e, uint64_t *len) {
    const moe_weight *w = moe_model_expert(m, layer, e);
    const uint64_t start = (uint64_t)((const uint8_t *)w[ET_GATE].data - m->file.map);
    const uint64_t end = (uint64_t)((const uint8_t *)w[ET_DOWN].data - m->file.map) +
                         moe_tensor_bytes(w[ET_DOWN].dtype, (uint64_t)w[ET_DOWN].rows, (uint64_t)w[ET_DOWN].cols);
    *len = end - start;
    return start;
}

moe_expert_cache *moe_expert_cache_new(const moe_model *m, uint64_t budget_bytes, moe_error *err) {
    const moe_hparams *hp = &m->hp;
    int first_moe = -1;
    for (int l = 0; l < hp->n_layers && first_moe < 0; l++)
        if (hp->layer_is_moe[l]) first_moe = l;
    if (first_moe < 0) {
        moe_fail(err, "--expert-cache: the model has no routed experts");
        return NULL;
    }
    uint64_t len;
    expert_range(m, first_moe, 0, &len);
    const uint64_t slot_bytes = (len + MOEF_EXPERT_ALIGN - 1) / MOEF_EXPERT_ALIGN * MOEF_EXPERT_ALIGN;
    uint64_t n = budget_bytes / slot_bytes;
    if (n < 1) n = 1;
    const uint64_t total = (uint64_t)hp->n_layers * (uint64_t)hp->n_experts;
    if (n > total) n = total;

    moe_expert_cache *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    c->m = m;
    c->slot_bytes = slot_bytes;
    c->n_slots = (int)n;
    c->fd = open(m->file.path, O_RDONLY | O_DIRECT);
    if (c->fd < 0) c->fd = open(m->file.path, O_RDONLY); /* e.g. tmpfs has no O_DIRECT */
    c->arena = aligned_alloc(MOEF_EXPERT_ALIGN, (size_t)(n * slot_bytes));
    c->slots = calloc((size_t)n, sizeof *c->slots);
    c->where = malloc((size_t)total * sizeof *c->where);
    if (c->fd < 0 || !c->arena || !c->slots || !c->where) {
        moe_fail(err, c->fd < 0 ? "%s: cannot open for the expert cache: %s" : "out of memory for an expert cache of %s",
                 c->fd < 0 ? m->file.path : "that size", strerror(errno));
        moe_expert_cache_free(c);
        return NULL;
    }
    for (uint64_t i = 0; i < total; i++) c->where[i] = NONE;
    for (int s = 0; s < c->n_slots; s++)
        c->slots[s] = (slot){.layer = NONE, .expert = NONE, .prev = s - 1, .next = s + 1 < c->n_slots ? s + 1 : NONE};
    c->head = 0;
    c->tail = c->n_slots - 1;
    c->stats.slots = c->n_slots;
    c->stats.slot_bytes = slot_bytes;
    return c;
}

void moe_expert_cache_free(moe_expert_cache *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->arena);
    free(c->slots);
    free(c->where);
    free(c);
}

static void unlink_slot(moe_expert_cache *c, int s) {
    slot *x = &c->slots[s];
    if (x->prev != NONE) c->slots[x->prev].next = x->next; else c->head = x->next;
    if (x->next != NONE) c->slots[x->next].prev = x->prev; else c->tail = x->prev;
}

static void push_front(moe_expert_cache *c, int s) {
    slot *x = &c->slots[s];
    x->prev = NONE;
    x->next = c->head;
    if (c->head != NONE) c->slots[c->head].prev = s;
    c->head = s;
    if (c->tail == NONE) c->tail = s;
}

/* Reads the expert's byte range into slot s; 0 or -1. */
static int fill(moe_expert_cache *c, int s, int layer, int e) {
    uint64_t len, start = expert_range(c->m, layer, e, &len);
    uint8_t *dst = c->arena + (size_t)s * c->slot_bytes;
    /* O_DIRECT wants aligned offset, length and buffer: start and the slot are
     * page-aligned; read whole pages (a short read at the end of file is fine). */
    const uint64_t want = (len + MOEF_EXPERT_ALIGN - 1) / MOEF_EXPERT_ALIGN * MOEF_EXPERT_ALIGN;
    uint64_t got = 0;
    while (got < len) {
        ssize_t k = pread(c->fd, dst + got, (size_t)(want - got), (off_t)(start + got));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        got += (uint64_t)k;
    }
    const moe_weight *src = moe_model_expert(c->m, layer, e);
    for (int t = 0; t < ET_COUNT; t++) {
        c->slots[s].w[t] = src[t];
        c->slots[s].w[t].data = dst + ((const uint8_t *)src[t].data - (c->m->file.map + start));
    }
    c->stats.bytes_read += len;
    return 0;
}

static const moe_weight *cache_acquire(void *self, int layer, int e) {
    moe_expert_cache *c = self;
    int32_t *where = &c->where[(size_t)layer * (size_t)c->m->hp.n_experts + (size_t)e];
    if (*where != NONE) {
        c->stats.hits++;
        slot *x = &c->slots[*where];
        x->pins++;
        unlink_slot(c, *where);
        push_front(c, *where);
        return x->w;
    }
    /* the least recently used slot not in use */
    int s = c->tail;
    while (s != NONE && c->slots[s].pins) s = c->slots[s].prev;
    if (s == NONE) {
        c->stats.bypasses++;
        return moe_model_expert(c->m, layer, e);
    }
    slot *x = &c->slots[s];
    if (x->layer != NONE) c->where[(size_t)x->layer * (size_t)c->m->hp.n_experts + (size_t)x->expert] = NONE;
    else c->used++;
    x->layer = x->expert = NONE;
    if (fill(c, s, layer, e)) { /* an I/O error: serve from the mapping, keep the slot free */
        c->stats.bypasses++;
        c->used--;
        return moe_model_expert(c->m, layer, e);
    }
    c->stats.misses++;
    x->layer = layer;
    x->expert = e;
    x->pins = 1;
    *where = s;
    unlink_slot(c, s);
    push_front(c, s);
    return x->w;
}

static void cache_release(void *self, int layer, int e) {
    moe_expert_cache *c = self;
    int32_t s = c->where[(size_t)layer * (size_t)c->m->hp.n_experts + (size_t)e];
    if (s != NONE && c->slots[s].pins > 0) c->slots[s].pins--;
}

moe_expert_source moe_expert_cache_source(moe_expert_cache *c) {
    return (moe_expert_source){c, cache_acquire, cache_release};
}

void moe_expert_cache_get_stats(const moe_expert_cache *c, moe_cache_stats *s) {
    *s = c->stats;
    s->slots_used = c->used;
}

int moe_expert_cache_resident(const moe_expert_cache *c, int layer, int expert) {
    return c->where[(size_t)layer * (size_t)c->m->hp.n_experts + (size_t)expert] != NONE;
}
