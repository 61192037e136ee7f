/*
 * expert_cache.h — a fixed budget of whole experts held in memory of our
 * own, filled from the file with pread: the tier between the plain mmap
 * (which leaves eviction to the kernel's page cache, blind to experts) and
 * the compute. It is one implementation of moe_expert_source.
 *
 * Policies (which resident expert a miss evicts):
 *   lru    least recently used;
 *   lfu    least frequently used, the count of each resident expert decaying
 *          with a half-life of MOE_CACHE_HALF_LIFE tokens, and reset when the
 *          expert leaves the cache;
 *   stats  the routing statistics: every (layer, expert) keeps a decayed
 *          routing frequency whether it is resident or not, so an expert
 *          that comes back is recognised as hot at once; the lowest
 *          frequency is evicted, ties going to the least recent.
 * With pin N, the N experts of highest routing frequency are not evicted
 * (recomputed every few hundred lookups). An expert in use is never evicted;
 * when every slot is in use (a prefill batch touching more experts than
 * fit) the expert is served from the mapping for that call instead, counted
 * as a bypass: correct, just not cached.
 *
 * Prefetch: with prefetch on, one I/O thread reads predicted experts into
 * free or evictable slots. A prefetch never blocks its caller (a full queue
 * or no evictable slot drops the prediction), never evicts an expert in use,
 * a pinned one, or another prefetched expert not yet used. acquire() of an
 * expert still being read waits for that read; the wait is counted in
 * io_stall_s, as are demand reads. A prediction never used is a wasted read.
 *
 * Thread safety: acquire, release, prefetch and the queries may be called
 * from any threads; one mutex guards the bookkeeping and no I/O is done
 * while holding it.
 */
#ifndef MOE_CACHE_EXPERT_CACHE_H
#define MOE_CACHE_EXPERT_CACHE_H

#include "moe/moe.h"

typedef struct moe_expert_cache moe_expert_cache;

typedef enum moe_cache_policy {
    MOE_CACHE_LRU = 0,
    MOE_CACHE_LFU = 1,
    MOE_CACHE_STATS = 2,
} moe_cache_policy;

/* Half-life of the decayed frequencies, in tokens (one token = one lookup
 * per chosen expert per MoE layer). */
#define MOE_CACHE_HALF_LIFE 64

typedef struct moe_expert_cache_opts {
    uint64_t budget_bytes;     /* rounded down to whole experts (at least one) */
    moe_cache_policy policy;
    int pin;                   /* keep the N hottest experts (at most half the slots) */
    int prefetch;              /* start the I/O thread and offer the prefetch hook */
    int queue;                 /* prefetches in flight at most; 0: 2 x top-k */
} moe_expert_cache_opts;

/* "lru", "lfu", "stats" (NULL: the default, stats); -1 for anything else. */
int moe_cache_policy_from_name(const char *name);
const char *moe_cache_policy_name(moe_cache_policy p);

moe_expert_cache *moe_expert_cache_new_opts(const moe_model *m, const moe_expert_cache_opts *o, moe_error *err);
/* From a context's parameters (expert_cache_bytes, _policy, _pin, _prefetch). */
moe_expert_cache *moe_expert_cache_new_params(const moe_model *m, const moe_ctx_params *p, moe_error *err);
/* The default policy, no pinning, no prefetch. */
moe_expert_cache *moe_expert_cache_new(const moe_model *m, uint64_t budget_bytes, moe_error *err);
/* Stops the I/O thread (waiting for its current read) and frees everything. */
void moe_expert_cache_free(moe_expert_cache *c);
/* acquire/release, and prefetch when the cache was made with prefetch on. */
moe_expert_source moe_expert_cache_source(moe_expert_cache *c);

void moe_expert_cache_get_stats(moe_expert_cache *c, moe_cache_stats *s);
/* Whether expert e of layer l is resident (read complete) now; for tests. */
int moe_expert_cache_resident(moe_expert_cache *c, int layer, int expert);
/* Waits until no prefetch is queued or being read; for tests and benches. */
void moe_expert_cache_drain(moe_expert_cache *c);

/* The k largest of n scores, largest first, into out (ties: lower index);
 * what a predictor hands to the prefetch hook. k <= n. */
void moe_cache_topk(const float *scores, int n, int k, int32_t *out);

#endif
