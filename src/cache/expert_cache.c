/*
 * expert_cache.c — see expert_cache.h. Each expert of the file is one byte
 * range (the converter lays out gate, up, down contiguously from a page
 * boundary), so filling a slot is one pread of that range; the file is
 * opened a second time with O_DIRECT where the file system allows it, so the
 * page cache does not become a hidden second copy.
 *
 * Bookkeeping: a [layer][expert] table gives the slot of each resident (or
 * loading) expert; each slot has a state (empty, loading, ready), a pin count
 * and the policy's numbers. A victim is found by scanning the slots: a scan
 * costs microseconds against the milliseconds of the read it precedes, and
 * lets every policy share one code path. One mutex guards all of it; reads
 * run outside the lock, into a slot marked loading, which nobody else may
 * touch until the reader marks it ready and broadcasts.
 */
#include "expert_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quant/quant.h"
#include "util/error.h"

#define NONE (-1)

enum { EMPTY, LOADING, READY };

typedef struct slot {
    int layer, expert;        /* NONE when empty */
    int state;
    int pins;                 /* users between acquire and release */
    int prefetched;           /* read by a prefetch and not looked up since */
    uint64_t last;            /* tick of the last lookup (or of the fill) */
    double freq;              /* lfu: decayed count since it entered the cache, as of tick ftick */
    uint64_t ftick;
    moe_weight w[ET_COUNT];   /* written only by whoever holds the slot loading */
} slot;

struct moe_expert_cache {
    const moe_model *m;
    moe_expert_cache_opts o;
    int fd;
    uint8_t *arena;
    uint64_t slot_bytes;
    slot *slots;
    int n_slots, used, n_experts, total;
    int32_t *where;           /* [layer * n_experts + expert]: slot, or NONE */
    int32_t *bypass_out;      /* [idx]: bypassed acquires not yet released */
    double *rfreq;            /* [idx]: decayed routing frequency as of rtick (every policy keeps it) */
    uint64_t *rtick;
    uint8_t *hot;             /* [idx]: among the pin hottest */
    double *scratch;          /* [idx]: for choosing the hottest */
    uint64_t tick, next_repin;
    double half_life;         /* in lookups */
    moe_cache_stats stats;

    pthread_mutex_t mu;
    pthread_cond_t done;      /* a read finished */
    pthread_cond_t work;      /* the queue got work, or stop */
    int32_t *queue;           /* ring of slots to read, capacity o.queue */
    int q_head, q_len, reading, stop, has_thread;
    pthread_t thread;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

int moe_cache_policy_from_name(const char *name) {
    if (!name || !strcmp(name, "stats")) return MOE_CACHE_STATS;
    if (!strcmp(name, "lru")) return MOE_CACHE_LRU;
    if (!strcmp(name, "lfu")) return MOE_CACHE_LFU;
    return -1;
}

const char *moe_cache_policy_name(moe_cache_policy p) {
    return p == MOE_CACHE_LRU ? "lru" : p == MOE_CACHE_LFU ? "lfu" : "stats";
}

void moe_cache_topk(const float *scores, int n, int k, int32_t *out) {
    /* k is small (the router's top-k): insertion into a sorted prefix */
    int have = 0;
    for (int i = 0; i < n; i++) {
        if (have == k && !(scores[i] > scores[out[k - 1]])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && scores[i] > scores[out[j - 1]]) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = i;
    }
}

/* Byte range of an expert in the file, and its tensors' offsets in it. */
static uint64_t expert_range(const moe_model *m, int layer, int e, uint64_t *len) {
    const moe_weight *w = moe_model_expert(m, layer, e);
    const uint64_t start = (uint64_t)((const uint8_t *)w[ET_GATE].data - m->file.map);
    const uint64_t end = (uint64_t)((const uint8_t *)w[ET_DOWN].data - m->file.map) +
                         moe_tensor_bytes(w[ET_DOWN].dtype, (uint64_t)w[ET_DOWN].rows, (uint64_t)w[ET_DOWN].cols);
    *len = end - start;
    return start;
}

static void *io_thread(void *arg);
static void cache_prefetch(void *self, int layer, int n, const int32_t *experts);

moe_expert_cache *moe_expert_cache_new_opts(const moe_model *m, const moe_expert_cache_opts *o, moe_error *err) {
    const moe_hparams *hp = &m->hp;
    int first_moe = -1, n_moe = 0;
    for (int l = 0; l < hp->n_layers; l++)
        if (hp->layer_is_moe[l]) {
            if (first_moe < 0) first_moe = l;
            n_moe++;
        }
    if (first_moe < 0) {
        moe_fail(err, "--expert-cache: the model has no routed experts");
        return NULL;
    }
    if (o->policy < MOE_CACHE_LRU || o->policy > MOE_CACHE_STATS) {
        moe_fail(err, "expert cache: unknown policy %d", (int)o->policy);
        return NULL;
    }
    uint64_t len;
    expert_range(m, first_moe, 0, &len);
    const uint64_t slot_bytes = (len + MOEF_EXPERT_ALIGN - 1) / MOEF_EXPERT_ALIGN * MOEF_EXPERT_ALIGN;
    uint64_t n = o->budget_bytes / slot_bytes;
    if (n < 1) n = 1;
    const uint64_t total = (uint64_t)hp->n_layers * (uint64_t)hp->n_experts;
    if (n > total) n = total;

    moe_expert_cache *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    c->m = m;
    c->o = *o;
    /* never pin so many that misses find no room */
    if (c->o.pin < 0) c->o.pin = 0;
    if (c->o.pin > (int)n / 2) c->o.pin = (int)n / 2;
    if (c->o.queue <= 0) c->o.queue = 2 * (hp->n_experts_used > 0 ? hp->n_experts_used : 1);
    if (c->o.queue > (int)n) c->o.queue = (int)n;
    c->slot_bytes = slot_bytes;
    c->n_slots = (int)n;
    c->n_experts = hp->n_experts;
    c->total = (int)total;
    c->half_life = (double)MOE_CACHE_HALF_LIFE * n_moe * (hp->n_experts_used > 0 ? hp->n_experts_used : 1);
    c->fd = open(m->file.path, O_RDONLY | O_DIRECT);
    if (c->fd < 0) c->fd = open(m->file.path, O_RDONLY); /* e.g. tmpfs has no O_DIRECT */
    const int open_errno = errno;
    c->arena = aligned_alloc(MOEF_EXPERT_ALIGN, (size_t)(n * slot_bytes));
    c->slots = calloc((size_t)n, sizeof *c->slots);
    c->where = malloc((size_t)total * sizeof *c->where);
    c->bypass_out = calloc((size_t)total, sizeof *c->bypass_out);
    c->rfreq = calloc((size_t)total, sizeof *c->rfreq);
    c->rtick = calloc((size_t)total, sizeof *c->rtick);
    c->hot = calloc((size_t)total, 1);
    c->scratch = malloc((size_t)total * sizeof *c->scratch);
    c->queue = malloc((size_t)c->o.queue * sizeof *c->queue);
    if (c->fd < 0 || !c->arena || !c->slots || !c->where || !c->bypass_out || !c->rfreq || !c->rtick || !c->hot ||
        !c->scratch || !c->queue) {
        if (c->fd < 0) moe_fail(err, "%s: cannot open for the expert cache: %s", m->file.path, strerror(open_errno));
        else moe_fail(err, "out of memory for an expert cache of %llu slots of %llu bytes", (unsigned long long)n,
                      (unsigned long long)slot_bytes);
        moe_expert_cache_free(c);
        return NULL;
    }
    for (uint64_t i = 0; i < total; i++) c->where[i] = NONE;
    for (int s = 0; s < c->n_slots; s++) c->slots[s] = (slot){.layer = NONE, .expert = NONE, .state = EMPTY};
    c->stats.slots = c->n_slots;
    c->stats.slot_bytes = slot_bytes;
    c->stats.n_layers = hp->n_layers;
    c->next_repin = 1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->done, NULL);
    pthread_cond_init(&c->work, NULL);
    if (c->o.prefetch) {
        int rc = pthread_create(&c->thread, NULL, io_thread, c);
        if (rc) {
            moe_fail(err, "expert cache: cannot start the prefetch thread: %s", strerror(rc));
            moe_expert_cache_free(c);
            return NULL;
        }
        c->has_thread = 1;
    }
    return c;
}

moe_expert_cache *moe_expert_cache_new_params(const moe_model *m, const moe_ctx_params *p, moe_error *err) {
    const int policy = moe_cache_policy_from_name(p->expert_cache_policy);
    if (policy < 0) {
        moe_fail(err, "expert cache policy \"%s\": expected lru, lfu or stats", p->expert_cache_policy);
        return NULL;
    }
    const moe_expert_cache_opts o = {.budget_bytes = p->expert_cache_bytes, .policy = (moe_cache_policy)policy,
                                     .pin = p->expert_cache_pin, .prefetch = p->expert_cache_prefetch != 0};
    return moe_expert_cache_new_opts(m, &o, err);
}

moe_expert_cache *moe_expert_cache_new(const moe_model *m, uint64_t budget_bytes, moe_error *err) {
    const moe_expert_cache_opts o = {.budget_bytes = budget_bytes, .policy = MOE_CACHE_STATS};
    return moe_expert_cache_new_opts(m, &o, err);
}

void moe_expert_cache_free(moe_expert_cache *c) {
    if (!c) return;
    if (c->has_thread) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_cond_broadcast(&c->work);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
    }
    if (c->slots) { /* initialised together with the slots */
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->done);
        pthread_cond_destroy(&c->work);
    }
    if (c->fd >= 0) close(c->fd);
    free(c->arena);
    free(c->slots);
    free(c->where);
    free(c->bypass_out);
    free(c->rfreq);
    free(c->rtick);
    free(c->hot);
    free(c->scratch);
    free(c->queue);
    free(c);
}

static size_t idx_of(const moe_expert_cache *c, int layer, int e) {
    return (size_t)layer * (size_t)c->n_experts + (size_t)e;
}

/* f decayed from tick t to now. */
static double decayed(const moe_expert_cache *c, double f, uint64_t t) {
    return f * exp2(-(double)(c->tick - t) / c->half_life);
}

/* Reads the expert's byte range into slot s, without the lock: the slot is
 * LOADING, so nobody else touches its memory or w[]. 0 or -1. */
static int fill(moe_expert_cache *c, int s, int layer, int e, uint64_t *bytes) {
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
    *bytes = len;
    return 0;
}

/* The k-th largest of v[0..n) (0-based; v is reordered): quickselect. */
static double kth_largest(double *v, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const double p = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > p) i++;
            while (v[j] < p) j--;
            if (i <= j) {
                const double t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return v[k];
}

/* Marks the pin hottest experts by routing frequency (lock held); experts
 * never routed are not pinned. */
static void repin(moe_expert_cache *c) {
    for (int i = 0; i < c->total; i++) c->scratch[i] = decayed(c, c->rfreq[i], c->rtick[i]);
    const double t = kth_largest(c->scratch, c->total, c->o.pin - 1);
    int left = c->o.pin;
    for (int i = 0; i < c->total; i++) {
        const double f = decayed(c, c->rfreq[i], c->rtick[i]);
        c->hot[i] = f > t && f > 0;
        left -= c->hot[i];
    }
    for (int i = 0; i < c->total && left > 0; i++) /* ties at the threshold, lowest index first */
        if (!c->hot[i] && t > 0 && decayed(c, c->rfreq[i], c->rtick[i]) == t) {
            c->hot[i] = 1;
            left--;
        }
}

/* The policy's eviction score of a ready slot: lowest goes first. */
static double score(const moe_expert_cache *c, const slot *x) {
    switch (c->o.policy) {
    case MOE_CACHE_LRU: return (double)x->last;
    case MOE_CACHE_LFU: return decayed(c, x->freq, x->ftick);
    default: {
        const size_t i = idx_of(c, x->layer, x->expert);
        return decayed(c, c->rfreq[i], c->rtick[i]);
    }
    }
}

/* The slot a new expert goes into (lock held): an empty one, else the
 * policy's victim among ready slots not in use and not pinned hot. A slot
 * holding a prefetch not yet used is taken last (it is most likely the next
 * layer's), and never by another prefetch. NONE if there is none. */
static int victim(const moe_expert_cache *c, int for_prefetch) {
    int best = NONE, best_pf = NONE;
    double bs = 0, bs_pf = 0;
    for (int s = 0; s < c->n_slots; s++) {
        const slot *x = &c->slots[s];
        if (x->state == EMPTY) return s;
        if (x->state != READY || x->pins > 0 || c->hot[idx_of(c, x->layer, x->expert)]) continue;
        const double sc = score(c, x);
        int *b = x->prefetched ? &best_pf : &best;
        double *bsc = x->prefetched ? &bs_pf : &bs;
        if (*b == NONE || sc < *bsc || (sc == *bsc && x->last < c->slots[*b].last)) {
            *b = s;
            *bsc = sc;
        }
    }
    return best != NONE || for_prefetch ? best : best_pf;
}

/* Empties slot s for (layer, e), marks it loading (lock held). */
static void claim(moe_expert_cache *c, int s, int layer, int e, int prefetched) {
    slot *x = &c->slots[s];
    if (x->state == READY) {
        c->where[idx_of(c, x->layer, x->expert)] = NONE;
        if (x->prefetched) c->stats.prefetch_wasted++;
    } else {
        c->used++;
    }
    *x = (slot){.layer = layer, .expert = e, .state = LOADING, .prefetched = prefetched, .last = c->tick,
                .freq = 1, .ftick = c->tick};
    c->where[idx_of(c, layer, e)] = s;
}

/* After a read of slot s (lock held): ready, or empty again on failure. */
static void finish(moe_expert_cache *c, int s, int ok, uint64_t bytes) {
    slot *x = &c->slots[s];
    if (ok) {
        x->state = READY;
        c->stats.bytes_read += bytes;
    } else {
        if (x->prefetched) c->stats.prefetch_wasted++;
        c->where[idx_of(c, x->layer, x->expert)] = NONE;
        *x = (slot){.layer = NONE, .expert = NONE, .state = EMPTY};
        c->used--;
    }
    pthread_cond_broadcast(&c->done);
}

static const moe_weight *bypass(moe_expert_cache *c, size_t i, int layer, int e) {
    c->stats.bypasses++;
    c->bypass_out[i]++;
    return moe_model_expert(c->m, layer, e);
}

static const moe_weight *cache_acquire(void *self, int layer, int e) {
    moe_expert_cache *c = self;
    const size_t i = idx_of(c, layer, e);
    pthread_mutex_lock(&c->mu);
    c->tick++;
    c->rfreq[i] = decayed(c, c->rfreq[i], c->rtick[i]) + 1;
    c->rtick[i] = c->tick;
    if (c->o.pin && c->tick >= c->next_repin) {
        repin(c);
        c->next_repin = c->tick + 256;
    }
    for (;;) {
        const int s = c->where[i];
        if (s == NONE) break;
        slot *x = &c->slots[s];
        if (x->state == LOADING) {
            /* a prefetch (or another thread's miss) is reading it: wait for
             * that read, then look again (it may have failed, or the slot been
             * taken by someone else since) */
            const double t0 = now_s();
            while (c->where[i] == s && x->state == LOADING) pthread_cond_wait(&c->done, &c->mu);
            c->stats.io_stall_s += now_s() - t0;
            continue;
        }
        c->stats.hits++;
        c->stats.layer_hits[layer]++;
        if (x->prefetched) {
            c->stats.prefetch_useful++;
            x->prefetched = 0;
        }
        x->pins++;
        x->last = c->tick;
        x->freq = decayed(c, x->freq, x->ftick) + 1;
        x->ftick = c->tick;
        const moe_weight *w = x->w;
        pthread_mutex_unlock(&c->mu);
        return w;
    }
    const int s = victim(c, 0);
    if (s == NONE) {
        const moe_weight *w = bypass(c, i, layer, e);
        pthread_mutex_unlock(&c->mu);
        return w;
    }
    claim(c, s, layer, e, 0);
    c->slots[s].pins = 1;
    pthread_mutex_unlock(&c->mu);

    const double t0 = now_s();
    uint64_t bytes = 0;
    const int ok = fill(c, s, layer, e, &bytes) == 0;
    const double dt = now_s() - t0;

    pthread_mutex_lock(&c->mu);
    c->stats.io_stall_s += dt;
    const moe_weight *w;
    if (ok) {
        c->stats.misses++;
        c->stats.layer_misses[layer]++;
        w = c->slots[s].w;
    } else { /* an I/O error: serve from the mapping, give the slot back */
        c->slots[s].pins = 0;
        w = bypass(c, i, layer, e);
    }
    finish(c, s, ok, bytes);
    pthread_mutex_unlock(&c->mu);
    return w;
}

static void cache_release(void *self, int layer, int e) {
    moe_expert_cache *c = self;
    const size_t i = idx_of(c, layer, e);
    pthread_mutex_lock(&c->mu);
    /* Outstanding bypasses are released first: the counts only need to add
     * up, and while any holder is out the slot (if any) stays pinned. */
    if (c->bypass_out[i] > 0) c->bypass_out[i]--;
    else if (c->where[i] != NONE && c->slots[c->where[i]].pins > 0) c->slots[c->where[i]].pins--;
    pthread_mutex_unlock(&c->mu);
}

static void cache_prefetch(void *self, int layer, int n, const int32_t *experts) {
    moe_expert_cache *c = self;
    pthread_mutex_lock(&c->mu);
    int queued = 0;
    for (int k = 0; k < n; k++) {
        const int e = experts[k];
        if (e < 0 || e >= c->n_experts) continue;
        const size_t i = idx_of(c, layer, e);
        if (c->where[i] != NONE) continue; /* resident or on its way */
        if (c->q_len + c->reading >= c->o.queue) {
            c->stats.prefetch_dropped += (uint64_t)(n - k);
            break;
        }
        const int s = victim(c, 1);
        if (s == NONE) {
            c->stats.prefetch_dropped += (uint64_t)(n - k);
            break;
        }
        claim(c, s, layer, e, 1);
        c->queue[(c->q_head + c->q_len++) % c->o.queue] = s;
        c->stats.prefetch_issued++;
        queued = 1;
    }
    if (queued) pthread_cond_signal(&c->work);
    pthread_mutex_unlock(&c->mu);
}

static void *io_thread(void *arg) {
    moe_expert_cache *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->q_len && !c->stop) pthread_cond_wait(&c->work, &c->mu);
        if (c->stop) break;
        const int s = c->queue[c->q_head];
        c->q_head = (c->q_head + 1) % c->o.queue;
        c->q_len--;
        c->reading++;
        const int layer = c->slots[s].layer, e = c->slots[s].expert;
        pthread_mutex_unlock(&c->mu);
        uint64_t bytes = 0;
        const int ok = fill(c, s, layer, e, &bytes) == 0;
        pthread_mutex_lock(&c->mu);
        c->reading--;
        finish(c, s, ok, bytes);
    }
    /* slots still queued stay LOADING; nobody waits on them once we stop */
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

moe_expert_source moe_expert_cache_source(moe_expert_cache *c) {
    return (moe_expert_source){c, cache_acquire, cache_release, c->o.prefetch ? cache_prefetch : NULL};
}

void moe_expert_cache_get_stats(moe_expert_cache *c, moe_cache_stats *s) {
    pthread_mutex_lock(&c->mu);
    *s = c->stats;
    s->slots_used = c->used;
    pthread_mutex_unlock(&c->mu);
}

int moe_expert_cache_resident(moe_expert_cache *c, int layer, int expert) {
    pthread_mutex_lock(&c->mu);
    const int s = c->where[idx_of(c, layer, expert)];
    const int r = s != NONE && c->slots[s].state == READY;
    pthread_mutex_unlock(&c->mu);
    return r;
}

void moe_expert_cache_drain(moe_expert_cache *c) {
    pthread_mutex_lock(&c->mu);
    while (c->q_len || c->reading) pthread_cond_wait(&c->done, &c->mu);
    pthread_mutex_unlock(&c->mu);
}
