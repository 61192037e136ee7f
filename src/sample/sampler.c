/*
 * sampler.c — drawing the next token from the logits: penalties, top-k,
 * top-p, min-p, temperature, then a seeded draw. Scratch (the candidate list
 * and the history ring) is allocated once with the sampler; sampling
 * allocates nothing.
 *
 * Candidates far below the best logit (more than 40 nats, a relative
 * probability under 1e-17) are dropped before sorting: they could never be
 * drawn, and skipping them keeps a 150k vocabulary cheap.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe.h"
#include "util/error.h"

#define NEGLIGIBLE_LOGIT 40.0f

typedef struct candidate {
    int32_t id;
    float logit, p;
} candidate;

struct moe_sampler {
    moe_sampler_params p;
    int32_t n_vocab;
    candidate *cand;          /* n_vocab */
    int32_t *history;         /* ring of the last repeat_last_n tokens */
    int32_t *counts;          /* n_vocab: occurrences within the ring */
    int n_history, head;
    uint64_t rng[4];          /* xoshiro256** */
};

moe_sampler_params moe_sampler_defaults(void) {
    return (moe_sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .repeat_penalty = 1.0f,
                                .repeat_last_n = 64, .seed = 0x5eed};
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(moe_sampler *s) {
    uint64_t *r = s->rng;
    const uint64_t out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return out;
}

/* Uniform in [0, 1) with 53 bits. */
static double next_unit(moe_sampler *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

moe_sampler *moe_sampler_new(moe_sampler_params p, int32_t n_vocab, moe_error *err) {
    if (n_vocab < 1) {
        moe_fail(err, "sampler: vocabulary of %d tokens", n_vocab);
        return NULL;
    }
    if (p.top_k < 0 || !(p.top_p > 0 && p.top_p <= 1) || !(p.min_p >= 0 && p.min_p <= 1) || !(p.repeat_penalty > 0) ||
        p.repeat_last_n < 0) {
        moe_fail(err, "sampler: invalid settings (top-k %d, top-p %g, min-p %g, repeat penalty %g, last-n %d)", p.top_k,
                 p.top_p, p.min_p, p.repeat_penalty, p.repeat_last_n);
        return NULL;
    }
    moe_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->cand = malloc((size_t)n_vocab * sizeof *s->cand)) ||
        !(s->history = malloc(((size_t)p.repeat_last_n + 1) * sizeof *s->history)) ||
        !(s->counts = calloc((size_t)n_vocab, sizeof *s->counts))) {
        moe_sampler_free(s);
        moe_fail(err, "out of memory");
        return NULL;
    }
    s->p = p;
    s->n_vocab = n_vocab;
    uint64_t z = p.seed; /* splitmix64 expands the seed into the state */
    for (int i = 0; i < 4; i++) {
        z += 0x9e3779b97f4a7c15ull;
        uint64_t x = z;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        s->rng[i] = x ^ (x >> 31);
    }
    return s;
}

void moe_sampler_free(moe_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->history);
    free(s->counts);
    free(s);
}

void moe_sampler_reset(moe_sampler *s) {
    memset(s->counts, 0, (size_t)s->n_vocab * sizeof *s->counts);
    s->n_history = s->head = 0;
}

void moe_sampler_accept(moe_sampler *s, int32_t token) {
    const int cap = s->p.repeat_last_n;
    if (cap == 0 || token < 0 || token >= s->n_vocab) return;
    if (s->n_history == cap) s->counts[s->history[s->head]]--;
    else s->n_history++;
    s->history[s->head] = token;
    s->counts[token]++;
    s->head = (s->head + 1) % cap;
}

static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Moves the k best candidates (in by_logit_desc order) to the front, in any
 * order: quickselect, so a 150k vocabulary is not sorted for top-k 40. */
static void select_best(candidate *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const candidate pivot = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (by_logit_desc(&c[i], &pivot) < 0) i++;
            while (by_logit_desc(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                const candidate t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* Penalized logit of token i. */
static float penalized(const moe_sampler *s, int32_t i, float l) {
    const int c = s->counts[i];
    if (!c) return l;
    if (s->p.repeat_penalty != 1.0f) l = l > 0 ? l / s->p.repeat_penalty : l * s->p.repeat_penalty;
    return l - (float)c * s->p.frequency_penalty - s->p.presence_penalty;
}

int32_t moe_sampler_sample(moe_sampler *s, const float *logits) {
    float max = -INFINITY;
    int32_t best = 0;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        const float l = penalized(s, i, logits[i]);
        if (l > max) { max = l; best = i; }
    }
    if (s->p.temp <= 0) return best;

    int n = 0;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        const float l = penalized(s, i, logits[i]);
        if (l >= max - NEGLIGIBLE_LOGIT * fmaxf(1.0f, s->p.temp)) s->cand[n++] = (candidate){i, l, 0};
    }
    if (s->p.top_k > 0 && s->p.top_k < n) {
        select_best(s->cand, n, s->p.top_k);
        n = s->p.top_k;
    }
    qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit_desc);

    /* probabilities at temperature 1 decide top-p and min-p, as llama.cpp */
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (s->cand[i].p = expf(s->cand[i].logit - max));
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += s->cand[i].p / sum;
            if (cum >= s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        const float floor_p = s->p.min_p * s->cand[0].p;
        int keep = 1;
        while (keep < n && s->cand[keep].p >= floor_p) keep++;
        n = keep;
    }
    sum = 0;
    for (int i = 0; i < n; i++) sum += (s->cand[i].p = expf((s->cand[i].logit - max) / s->p.temp));
    double u = next_unit(s) * sum;
    for (int i = 0; i < n; i++) {
        u -= s->cand[i].p;
        if (u < 0) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
