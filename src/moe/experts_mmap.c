/*
 * experts_mmap.c — the simplest expert source: the weights are already bound
 * in the mapped file, so acquiring is a lookup and releasing does nothing.
 */
#include "moe.h"

static const moe_weight *mmap_acquire(void *self, int layer, int expert) {
    return moe_model_expert(self, layer, expert);
}

static void mmap_release(void *self, int layer, int expert) {
    (void)self; (void)layer; (void)expert;
}

moe_expert_source moe_expert_source_mmap(const moe_model *m) {
    return (moe_expert_source){(void *)m, mmap_acquire, mmap_release, NULL}; /* no prefetch: the kernel pages in */
}
