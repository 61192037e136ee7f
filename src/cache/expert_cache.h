/*
 * expert_cache.h — a fixed budget of whole experts held in memory of our
 * own, filled from the file with pread: the tier between the plain mmap
 * (which leaves eviction to the kernel's page cache, blind to experts) and
 * the compute. It is one implementation of moe_expert_source.
 *
 * Policy: least recently used, never evicting an expert in use. When every
 * slot is in use (a prefill batch touching more experts than fit), the
 * expert is served from the mapping for that call instead: correct, just
 * not cached.
 */
#ifndef MOE_CACHE_EXPERT_CACHE_H
#define MOE_CACHE_EXPERT_CACHE_H

#include "moe/moe.h"

typedef struct moe_expert_cache moe_expert_cache;

/* budget_bytes is rounded down to whole experts (at least one). */
moe_expert_cache *moe_expert_cache_new(const moe_model *m, uint64_t budget_bytes, moe_error *err);
void moe_expert_cache_free(moe_expert_cache *c);
moe_expert_source moe_expert_cache_source(moe_expert_cache *c);

void moe_expert_cache_get_stats(const moe_expert_cache *c, moe_cache_stats *s);
/* Whether expert e of layer l is resident now (for tests and traces). */
int moe_expert_cache_resident(const moe_expert_cache *c, int layer, int expert);

#endif
