/*
 * test_expert_cache.c — the expert cache's invariants on a small random
 * model: never more experts than slots, each policy's eviction order on
 * crafted sequences (LRU, decayed LFU, routing statistics, pinning of the
 * hottest), an expert in use is never evicted (a miss with every slot in use
 * is served from the mapping instead), a cached expert's bytes equal the
 * file's, the counters add up, and prefetch: useful and wasted reads are
 * counted, a prefetch never evicts an expert in use nor an unused prefetch,
 * and many threads acquiring, releasing and prefetching at once always see
 * the right bytes (tests/test_tsan.sh runs this under ThreadSanitizer).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../bench/synthetic.h"
#include "cache/expert_cache.h"
#include "check.h"
#include "quant/quant.h"

#define N_LAYERS 2
#define N_EXPERTS 6

static int same_bytes(const moe_weight *a, const moe_weight *b) {
    for (int t = 0; t < ET_COUNT; t++)
        if (memcmp(a[t].data, b[t].data, moe_tensor_bytes(a[t].dtype, (uint64_t)a[t].rows, (uint64_t)a[t].cols)))
            return 0;
    return 1;
}

static uint64_t expert_bytes(const moe_model *m) {
    const moe_weight *w = moe_model_expert(m, 0, 0);
    uint64_t len = (uint64_t)((const uint8_t *)w[ET_DOWN].data - (const uint8_t *)w[ET_GATE].data) +
                   moe_tensor_bytes(w[ET_DOWN].dtype, (uint64_t)w[ET_DOWN].rows, (uint64_t)w[ET_DOWN].cols);
    return (len + 4095) / 4096 * 4096;
}

/* A cache of n slots (a budget of n.5 experts, rounded down). */
static moe_expert_cache *make(const moe_model *m, int n, moe_cache_policy p, int pin, int prefetch) {
    moe_error err;
    const uint64_t len = expert_bytes(m);
    const moe_expert_cache_opts o = {.budget_bytes = (uint64_t)n * len + len / 2, .policy = p, .pin = pin,
                                     .prefetch = prefetch};
    moe_expert_cache *c = moe_expert_cache_new_opts(m, &o, &err);
    CHECK(c != NULL, "%s", err.msg);
    return c;
}

/* Acquires and releases each (layer, expert) pair of seq in order. */
static void touch(moe_expert_cache *c, const int (*seq)[2], int n) {
    const moe_expert_source src = moe_expert_cache_source(c);
    for (int i = 0; i < n; i++) {
        src.acquire(src.self, seq[i][0], seq[i][1]);
        src.release(src.self, seq[i][0], seq[i][1]);
    }
}

static void test_lru_and_pins(const moe_model *m) {
    moe_expert_cache *c = make(m, 3, MOE_CACHE_LRU, 0, 0);
    if (!c) return;
    moe_expert_source src = moe_expert_cache_source(c);
    CHECK(src.prefetch == NULL, "no prefetch hook without prefetch");
    moe_cache_stats st;
    moe_expert_cache_get_stats(c, &st);
    CHECK(st.slots == 3, "3 slots from a budget of 3.5 experts: %d", st.slots);

    /* fill 3 slots: (0,0) (0,1) (1,2); bytes equal the mapping's */
    const int order[3][2] = {{0, 0}, {0, 1}, {1, 2}};
    for (int i = 0; i < 3; i++) {
        const moe_weight *w = src.acquire(src.self, order[i][0], order[i][1]);
        CHECK(w != moe_model_expert(m, order[i][0], order[i][1]), "served from the cache, not the mapping");
        CHECK(same_bytes(w, moe_model_expert(m, order[i][0], order[i][1])), "cached bytes equal the file's");
        src.release(src.self, order[i][0], order[i][1]);
    }
    /* touch (0,0): now (0,1) is least recently used */
    touch(c, (const int[][2]){{0, 0}, {1, 5}}, 2);
    CHECK(!moe_expert_cache_resident(c, 0, 1), "LRU: (0,1) evicted");
    CHECK(moe_expert_cache_resident(c, 0, 0) && moe_expert_cache_resident(c, 1, 2) && moe_expert_cache_resident(c, 1, 5),
          "the others stay");

    /* pin all three; a fourth expert is served from the mapping, nothing evicted */
    const int pinned[3][2] = {{0, 0}, {1, 2}, {1, 5}};
    for (int i = 0; i < 3; i++) src.acquire(src.self, pinned[i][0], pinned[i][1]);
    const moe_weight *w = src.acquire(src.self, 0, 3);
    CHECK(w == moe_model_expert(m, 0, 3), "all slots in use: bypass to the mapping");
    src.release(src.self, 0, 3);
    for (int i = 0; i < 3; i++) {
        CHECK(moe_expert_cache_resident(c, pinned[i][0], pinned[i][1]), "a pinned expert is never evicted");
        src.release(src.self, pinned[i][0], pinned[i][1]);
    }
    moe_expert_cache_get_stats(c, &st);
    CHECK(st.hits == 4 && st.misses == 4 && st.bypasses == 1, "counters: %llu hits %llu misses %llu bypasses",
          (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.bypasses);
    CHECK(st.layer_hits[0] + st.layer_hits[1] == st.hits && st.layer_misses[0] == 2 && st.layer_misses[1] == 2,
          "per-layer counters add up");
    CHECK(st.bytes_read > 0 && st.io_stall_s > 0, "reads are counted, and their time as stall");
    CHECK(st.slots_used == 3 && st.slots_used <= st.slots, "never over budget");
    moe_expert_cache_free(c);
}

/* The victim chosen for (0,5) after seq, under each policy. */
static void test_policies(const moe_model *m) {
    /* (0,0) three times long ago, (1,2) twice, (0,1) once, most recently */
    const int seq[][2] = {{0, 0}, {0, 0}, {0, 0}, {1, 2}, {1, 2}, {0, 1}};
    moe_expert_cache *lru = make(m, 3, MOE_CACHE_LRU, 0, 0), *lfu = make(m, 3, MOE_CACHE_LFU, 0, 0);
    if (!lru || !lfu) return;
    touch(lru, seq, 6);
    touch(lfu, seq, 6);
    touch(lru, (const int[][2]){{0, 5}}, 1);
    touch(lfu, (const int[][2]){{0, 5}}, 1);
    CHECK(!moe_expert_cache_resident(lru, 0, 0) && moe_expert_cache_resident(lru, 0, 1), "lru evicts the oldest");
    CHECK(!moe_expert_cache_resident(lfu, 0, 1) && moe_expert_cache_resident(lfu, 0, 0), "lfu evicts the rarest");
    moe_expert_cache_free(lru);
    moe_expert_cache_free(lfu);

    /* decay: 10 old uses of (0,0) weigh less than 1000 recent ones of (0,1), (0,2) */
    lfu = make(m, 3, MOE_CACHE_LFU, 0, 0);
    if (!lfu) return;
    for (int i = 0; i < 10; i++) touch(lfu, (const int[][2]){{0, 0}}, 1);
    for (int i = 0; i < 1000; i++) touch(lfu, (const int[][2]){{0, 1}, {0, 2}}, 2);
    touch(lfu, (const int[][2]){{1, 0}}, 1);
    CHECK(!moe_expert_cache_resident(lfu, 0, 0), "lfu: an old count decays away");
    moe_expert_cache_free(lfu);

    /* statistics remember an expert across its eviction; lfu starts it over.
     * A=(0,0) x2, B=(0,1) x2, C=(0,2) x3, D=(0,3) evicts A; A again evicts D;
     * then E=(0,4): lfu evicts A (count 1 since it came back), stats B. */
    const int seq2[][2] = {{0, 0}, {0, 0}, {0, 1}, {0, 1}, {0, 2}, {0, 2}, {0, 2}, {0, 3}, {0, 0}, {0, 4}};
    lfu = make(m, 3, MOE_CACHE_LFU, 0, 0);
    moe_expert_cache *st = make(m, 3, MOE_CACHE_STATS, 0, 0);
    if (!lfu || !st) return;
    touch(lfu, seq2, 10);
    touch(st, seq2, 10);
    CHECK(!moe_expert_cache_resident(lfu, 0, 0) && moe_expert_cache_resident(lfu, 0, 1), "lfu forgets on eviction");
    CHECK(moe_expert_cache_resident(st, 0, 0) && !moe_expert_cache_resident(st, 0, 1), "stats remember the history");
    moe_expert_cache_free(lfu);
    moe_expert_cache_free(st);

    /* pin 1 under lru: the hottest expert survives a scan of new experts */
    moe_expert_cache *pin = make(m, 3, MOE_CACHE_LRU, 1, 0);
    if (!pin) return;
    for (int i = 0; i < 20; i++) touch(pin, (const int[][2]){{1, 1}}, 1);
    for (int e = 0; e < N_EXPERTS; e++) touch(pin, (const int[][2]){{0, e}}, 1);
    CHECK(moe_expert_cache_resident(pin, 1, 1), "a pinned hot expert is not evicted by a scan");
    moe_expert_cache_free(pin);

    /* an unknown policy name is refused */
    CHECK(moe_cache_policy_from_name("mru") < 0 && moe_cache_policy_from_name(NULL) == MOE_CACHE_STATS &&
          moe_cache_policy_from_name("lfu") == MOE_CACHE_LFU, "policy names");
}

static void test_prefetch(const moe_model *m) {
    moe_expert_cache *c = make(m, 3, MOE_CACHE_LRU, 0, 1);
    if (!c) return;
    moe_expert_source src = moe_expert_cache_source(c);
    CHECK(src.prefetch != NULL, "prefetch hook");
    if (!src.prefetch) return;
    src.prefetch(src.self, 1, 2, (const int32_t[]){2, 3});
    moe_expert_cache_drain(c);
    CHECK(moe_expert_cache_resident(c, 1, 2) && moe_expert_cache_resident(c, 1, 3), "prefetched experts are resident");
    const moe_weight *w = src.acquire(src.self, 1, 2);
    CHECK(w != moe_model_expert(m, 1, 2) && same_bytes(w, moe_model_expert(m, 1, 2)), "prefetched bytes equal the file's");
    src.release(src.self, 1, 2);
    /* (1,3) is never used. Misses take the free slot, then (1,2) (an unused
     * prefetch goes last), then, with the others in use, (1,3): wasted. */
    const int hold[3][2] = {{0, 0}, {0, 1}, {0, 2}};
    for (int i = 0; i < 3; i++) {
        src.acquire(src.self, hold[i][0], hold[i][1]);
        CHECK(moe_expert_cache_resident(c, 1, 3) == (i < 2), "the unused prefetch is evicted last (%d)", i);
    }
    for (int i = 0; i < 3; i++) src.release(src.self, hold[i][0], hold[i][1]);
    moe_cache_stats st;
    moe_expert_cache_get_stats(c, &st);
    CHECK(st.prefetch_issued == 2 && st.prefetch_useful == 1 && st.prefetch_wasted == 1,
          "prefetch counters: issued %llu useful %llu wasted %llu", (unsigned long long)st.prefetch_issued,
          (unsigned long long)st.prefetch_useful, (unsigned long long)st.prefetch_wasted);
    CHECK(st.hits == 1 && st.misses == 3, "a prefetched expert is a hit");

    /* all slots in use: a prefetch is dropped, nothing evicted */
    const int use[3][2] = {{0, 0}, {0, 1}, {1, 2}};
    for (int i = 0; i < 3; i++) src.acquire(src.self, use[i][0], use[i][1]);
    src.prefetch(src.self, 1, 2, (const int32_t[]){4, 5});
    moe_expert_cache_drain(c);
    for (int i = 0; i < 3; i++) {
        CHECK(moe_expert_cache_resident(c, use[i][0], use[i][1]), "prefetch never evicts an expert in use");
        src.release(src.self, use[i][0], use[i][1]);
    }
    CHECK(!moe_expert_cache_resident(c, 1, 4) && !moe_expert_cache_resident(c, 1, 5), "dropped");
    /* two in use, one prefetched: a second prefetch may not evict the first */
    src.acquire(src.self, 0, 0);
    src.acquire(src.self, 0, 1);
    src.prefetch(src.self, 1, 1, (const int32_t[]){4});
    moe_expert_cache_drain(c);
    src.prefetch(src.self, 1, 1, (const int32_t[]){5});
    moe_expert_cache_drain(c);
    CHECK(moe_expert_cache_resident(c, 1, 4) && !moe_expert_cache_resident(c, 1, 5),
          "a prefetch does not evict an unused prefetch");
    src.release(src.self, 0, 0);
    src.release(src.self, 0, 1);
    moe_expert_cache_get_stats(c, &st);
    CHECK(st.prefetch_dropped == 3, "dropped counted: %llu", (unsigned long long)st.prefetch_dropped);
    moe_expert_cache_free(c);
}

typedef struct worker {
    const moe_model *m;
    moe_expert_cache *c;
    unsigned seed;
    int iters, bad, over, prefetcher;
    uint64_t lookups;
} worker;

static unsigned next(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

/* Acquires up to 2 experts at once, checks their bytes, releases; or, for the
 * prefetcher, predicts random experts and reads the counters. */
static void *work(void *arg) {
    worker *w = arg;
    const moe_expert_source src = moe_expert_cache_source(w->c);
    for (int i = 0; i < w->iters; i++) {
        if (w->prefetcher) {
            int32_t e[3] = {(int32_t)(next(&w->seed) % N_EXPERTS), (int32_t)(next(&w->seed) % N_EXPERTS),
                            (int32_t)(next(&w->seed) % N_EXPERTS)};
            src.prefetch(src.self, (int)(next(&w->seed) % N_LAYERS), 3, e);
            /* let the reads land now and then, or the queue stays full */
            if (i % 2) moe_expert_cache_drain(w->c);
            moe_cache_stats st;
            moe_expert_cache_get_stats(w->c, &st);
            w->over |= st.slots_used > st.slots;
            continue;
        }
        const int n = 1 + (int)(next(&w->seed) % 2);
        int l[2], e[2];
        const moe_weight *x[2];
        for (int k = 0; k < n; k++) {
            l[k] = (int)(next(&w->seed) % N_LAYERS);
            e[k] = (int)(next(&w->seed) % N_EXPERTS);
            x[k] = src.acquire(src.self, l[k], e[k]);
            w->lookups++;
        }
        for (int k = 0; k < n; k++) w->bad |= !same_bytes(x[k], moe_model_expert(w->m, l[k], e[k]));
        for (int k = n - 1; k >= 0; k--) src.release(src.self, l[k], e[k]);
    }
    return NULL;
}

static void test_concurrent(const moe_model *m, moe_cache_policy p, int pin) {
    moe_expert_cache *c = make(m, 10, p, pin, 1);
    if (!c) return;
    enum { N = 4 };
    worker w[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker){.m = m, .c = c, .seed = 7u + (unsigned)i, .iters = 3000, .prefetcher = i == 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    int bad = 0, over = 0;
    uint64_t lookups = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        bad |= w[i].bad;
        over |= w[i].over;
        lookups += w[i].lookups;
    }
    moe_expert_cache_drain(c);
    moe_cache_stats st;
    moe_expert_cache_get_stats(c, &st);
    CHECK(!bad, "%s: concurrent acquire/prefetch: right bytes every time", moe_cache_policy_name(p));
    CHECK(!over && st.slots_used <= st.slots, "%s: never over budget", moe_cache_policy_name(p));
    CHECK(st.hits + st.misses + st.bypasses == lookups, "%s: every lookup counted once", moe_cache_policy_name(p));
    CHECK(st.prefetch_useful + st.prefetch_wasted <= st.prefetch_issued, "%s: useful + wasted <= issued",
          moe_cache_policy_name(p));
    printf("%s pin %d: %llu hits, %llu misses, %llu bypasses, prefetch %llu issued %llu useful %llu wasted %llu dropped\n",
           moe_cache_policy_name(p), pin, (unsigned long long)st.hits, (unsigned long long)st.misses,
           (unsigned long long)st.bypasses, (unsigned long long)st.prefetch_issued,
           (unsigned long long)st.prefetch_useful, (unsigned long long)st.prefetch_wasted,
           (unsigned long long)st.prefetch_dropped);
    moe_expert_cache_free(c);
}

int main(void) {
    char path[] = "/tmp/moe-test-cache-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 1;
    close(fd);
    moe_hparams hp;
    moe_error err;
    if (moe_synthetic_hparams("olmoe-1b-7b", N_LAYERS, &hp, &err)) return 1;
    hp.n_embd = 64; hp.n_heads = 4; hp.n_kv_heads = 4; hp.head_dim = 16;
    hp.n_vocab = 100; hp.n_experts = N_EXPERTS; hp.n_experts_used = 2; hp.expert_ffn = 40;
    CHECK(moe_synthetic_write(path, &hp, &moe_recipe_default, "test", &err) == 0, "%s", err.msg);
    moe_model *m = moe_model_open(path, &err);
    CHECK(m != NULL, "%s", err.msg);
    if (!m) return check_done();

    test_lru_and_pins(m);
    test_policies(m);
    test_prefetch(m);

    /* a long random sequence keeps the invariants, under every policy */
    for (int p = MOE_CACHE_LRU; p <= MOE_CACHE_STATS; p++) {
        moe_expert_cache *c = make(m, 3, (moe_cache_policy)p, p == MOE_CACHE_STATS, 0);
        if (!c) continue;
        const moe_expert_source src = moe_expert_cache_source(c);
        unsigned s = 1;
        int bad = 0, over = 0;
        moe_cache_stats st;
        for (int i = 0; i < 2000; i++) {
            const int l = (int)(next(&s) % N_LAYERS), e = (int)(next(&s) % N_EXPERTS);
            const moe_weight *x = src.acquire(src.self, l, e);
            bad |= !same_bytes(x, moe_model_expert(m, l, e));
            src.release(src.self, l, e);
            moe_expert_cache_get_stats(c, &st);
            over |= st.slots_used > st.slots;
        }
        CHECK(!bad && !over, "%s: 2000 random accesses: right bytes, never over budget", moe_cache_policy_name(p));
        CHECK(st.hits + st.misses + st.bypasses == 2000, "every lookup counted once");
        moe_expert_cache_free(c);
    }

    for (int p = MOE_CACHE_LRU; p <= MOE_CACHE_STATS; p++) test_concurrent(m, (moe_cache_policy)p, p == MOE_CACHE_STATS);

    moe_model_close(m);
    unlink(path);
    return check_done();
}
