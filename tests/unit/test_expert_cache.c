/*
 * test_expert_cache.c — the expert cache's invariants on a small random
 * model: never more experts than slots, least-recently-used eviction, an
 * expert in use is never evicted (a miss with every slot in use is served
 * from the mapping instead), a cached expert's bytes equal the file's, and
 * the counters add up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../bench/synthetic.h"
#include "cache/expert_cache.h"
#include "check.h"
#include "quant/quant.h"

static int same_bytes(const moe_weight *a, const moe_weight *b) {
    for (int t = 0; t < ET_COUNT; t++)
        if (memcmp(a[t].data, b[t].data, moe_tensor_bytes(a[t].dtype, (uint64_t)a[t].rows, (uint64_t)a[t].cols)))
            return 0;
    return 1;
}

int main(void) {
    char path[] = "/tmp/moe-test-cache-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 1;
    close(fd);
    moe_hparams hp;
    moe_error err;
    if (moe_synthetic_hparams("olmoe-1b-7b", 2, &hp, &err)) return 1;
    hp.n_embd = 64; hp.n_heads = 4; hp.n_kv_heads = 4; hp.head_dim = 16;
    hp.n_vocab = 100; hp.n_experts = 6; hp.n_experts_used = 2; hp.expert_ffn = 40;
    CHECK(moe_synthetic_write(path, &hp, &moe_recipe_default, "test", &err) == 0, "%s", err.msg);
    moe_model *m = moe_model_open(path, &err);
    CHECK(m != NULL, "%s", err.msg);
    if (!m) return check_done();

    uint64_t len;
    moe_expert_cache *c = NULL;
    {
        /* a budget of 3 experts */
        const moe_weight *w = moe_model_expert(m, 0, 0);
        len = (uint64_t)((const uint8_t *)w[ET_DOWN].data - (const uint8_t *)w[ET_GATE].data) +
              moe_tensor_bytes(w[ET_DOWN].dtype, (uint64_t)w[ET_DOWN].rows, (uint64_t)w[ET_DOWN].cols);
        len = (len + 4095) / 4096 * 4096;
        c = moe_expert_cache_new(m, 3 * len + len / 2, &err);
    }
    CHECK(c != NULL, "%s", err.msg);
    moe_expert_source src = moe_expert_cache_source(c);
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
    src.acquire(src.self, 0, 0);
    src.release(src.self, 0, 0);
    src.acquire(src.self, 1, 5);
    src.release(src.self, 1, 5);
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
    CHECK(st.slots_used == 3 && st.slots_used <= st.slots, "never over budget");

    /* a long random sequence keeps the invariants */
    unsigned s = 1;
    int over = 0;
    for (int i = 0; i < 2000; i++) {
        s = s * 1103515245u + 12345u;
        int l = (int)(s >> 16) % 2, e = (int)(s >> 8) % 6;
        const moe_weight *x = src.acquire(src.self, l, e);
        over |= !same_bytes(x, moe_model_expert(m, l, e));
        src.release(src.self, l, e);
        moe_expert_cache_get_stats(c, &st);
        over |= st.slots_used > st.slots;
    }
    CHECK(!over, "2000 random accesses: right bytes, never over budget");
    moe_expert_cache_free(c);
    moe_model_close(m);
    unlink(path);
    return check_done();
}
