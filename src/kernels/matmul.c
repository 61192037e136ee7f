/*
 * matmul.c — ISA selection and the driver that spreads matrix products over
 * the threads. Work is cut into units of ROWS_PER_UNIT weight rows of one
 * product; the units of all products of one call are laid end to end and
 * each thread takes one contiguous run of equal cost, so a call with the 8
 * experts of a token balances as well as one with a single large matrix,
 * and each thread streams long runs of weights. Each unit multiplies its
 * rows into every token of its product: a weight row is read from memory
 * once per call.
 */
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#ifdef MOE_HAVE_BLAS
#include <cblas.h>
#endif
#include "quant/quant.h"
#include "util/error.h"
#include "util/half.h"

#define ROWS_PER_UNIT 32  /* a multiple of MOE_QR */
/* From this many tokens on, a product of f32 weights with contiguous
 * activations goes to OpenBLAS: at 512 x 2048 x 2048 on 2 Zen 3 cores its
 * sgemm reached 140 GFLOP/s against 61 for our AVX2 kernel (bench note in
 * bench/README.md). Below it our kernels win: no packing, and no second
 * thread pool to wake. */
#define BLAS_MIN_TOKENS 32
/* ... and from this many rows: a router's few rows are not worth it, and
 * after each call OpenBLAS's own threads spin (sched_yield) on the cores our
 * threads need next: 2-3 % of a q4 OLMoE prefill went there. */
#define BLAS_MIN_ROWS 256

static int use_blas(const moe_kernels *k, const moe_mm *mm) {
#ifdef MOE_HAVE_BLAS
    return k != &moe_kernels_scalar && mm->w->dtype == MOE_F32 && !mm->idx && mm->n >= BLAS_MIN_TOKENS &&
           mm->w->rows >= BLAS_MIN_ROWS;
#else
    (void)k; (void)mm;
    return 0;
#endif
}

void moe_blas_threads(int n) {
#ifdef MOE_HAVE_BLAS
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

static int cpu_supports(const char *isa) {
    if (!strcmp(isa, "scalar")) return 1;
#if defined(__x86_64__)
    if (!strcmp(isa, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (!strcmp(isa, "avx512"))
        return cpu_supports("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    if (!strcmp(isa, "avx512bf16")) return cpu_supports("avx512") && __builtin_cpu_supports("avx512bf16");
#endif
#if defined(__aarch64__)
    if (!strcmp(isa, "neon")) return 1;
#endif
    return 0;
}

static const moe_kernels *const all_kernels[] = {
#if defined(__x86_64__)
    &moe_kernels_avx512,
    &moe_kernels_avx512bf16,
    &moe_kernels_avx2,
#endif
#if defined(__aarch64__)
    &moe_kernels_neon,
#endif
    &moe_kernels_scalar,
};
#define N_KERNELS (sizeof all_kernels / sizeof *all_kernels)

const moe_kernels *moe_kernels_for(const char *isa) {
    for (size_t i = 0; i < N_KERNELS; i++)
        if (!strcmp(all_kernels[i]->isa, isa)) return cpu_supports(isa) ? all_kernels[i] : NULL;
    return NULL;
}

const moe_kernels *moe_kernels_select(const char *force, moe_error *err) {
    if (force && *force) {
        const moe_kernels *k = moe_kernels_for(force);
        if (!k) moe_fail(err, "MOE_ISA=%s: not built into this binary or not supported by this CPU", force);
        return k;
    }
    /* Kernels that round bf16 products' activations only when asked for:
     * the end-to-end tests' bf16 models moved 0.5-1.2 % of their largest
     * logit from the reference that way (SIMDe-emulated avx512bf16), twice
     * the usual error, and prefill and decode no longer agree to 1e-4. */
    for (size_t i = 0; i < N_KERNELS; i++)
        if (!all_kernels[i]->bf16_rounds_activations && cpu_supports(all_kernels[i]->isa)) return all_kernels[i];
    return &moe_kernels_scalar;
}

/* The work of one unit of product p, in arbitrary units: streaming a block
 * of weights costs about as much as multiplying it into three tokens (q4 on
 * AVX-512: ~25 GB/s per core against ~290 GOPS), so prefill's products of
 * many tokens weigh more than decode's. */
static int64_t unit_cost(const moe_mm *p) { return (p->w->cols + 31) / 32 * (p->n + 3); }

static int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

static int64_t product_units(const moe_mm *p) { return ceil_div(p->w->rows, ROWS_PER_UNIT); }

/* Runs the units whose cost offset falls in [c0, c1) of the products laid
 * end to end: for each product, one contiguous run of rows. */
static void run_cost_range(const moe_kernels *k, const moe_mm *mm, int n, int64_t c0, int64_t c1) {
    int64_t base = 0; /* cost of the products before p */
    for (int p = 0; p < n && base < c1; p++) {
        if (mm[p].n <= 0 || use_blas(k, &mm[p])) continue;
        const int64_t rows = mm[p].w->rows, pu = product_units(&mm[p]);
        const int64_t w = unit_cost(&mm[p]);
        const int64_t a = ceil_div(c0 - base, w), b0 = ceil_div(c1 - base, w), b = b0 < pu ? b0 : pu;
        if (a < b) {
            const int64_t r1 = b * ROWS_PER_UNIT < rows ? b * ROWS_PER_UNIT : rows;
            k->mm[mm[p].w->dtype](&mm[p], a * ROWS_PER_UNIT, r1);
        }
        base += pu * w;
    }
}

/* A thread's share is cut into this many chunks of equal cost: it runs
 * them front to back, and a thread that is done takes chunks from the back
 * of the others' shares. */
#define CHUNKS_PER_SHARE 16

/* The chunks of one share not yet taken: [front, back), packed in one word
 * so that the owner (front) and a thief (back) can claim them with one CAS.
 * Zero (nothing left) between calls. */
typedef struct {
    _Atomic uint64_t span;
    char pad[64 - sizeof(uint64_t)]; /* one cache line per share */
} share_chunks;

#define MAX_SHARES 256 /* threads of one team that share the work; more wait at the barrier */

struct moe_team_shares {
    share_chunks share[MAX_SHARES];
};

moe_team_shares *moe_team_shares_new(void) { return calloc(1, sizeof(moe_team_shares)); }

void moe_team_shares_free(moe_team_shares *s) { free(s); }

static int take_chunk(share_chunks *s, int from_back) {
    uint64_t v = atomic_load_explicit(&s->span, memory_order_relaxed);
    for (;;) {
        const uint32_t front = (uint32_t)(v >> 32), back = (uint32_t)v;
        if (front >= back) return -1;
        const uint64_t next = from_back ? v - 1 : v + ((uint64_t)1 << 32);
        if (atomic_compare_exchange_weak_explicit(&s->span, &v, next, memory_order_relaxed, memory_order_relaxed))
            return (int)(from_back ? back - 1 : front);
    }
}

void moe_matmul_team(const moe_kernels *k, const moe_mm *mm, int n, moe_team_shares *shares) {
    int64_t units = 0, cost = 0;
    int any_blas = 0;
    for (int p = 0; p < n; p++) {
        if (mm[p].n <= 0) continue;
        if (use_blas(k, &mm[p])) {
            any_blas = 1;
            continue;
        }
        const int64_t pu = product_units(&mm[p]);
        units += pu;
        cost += pu * unit_cost(&mm[p]);
    }
#ifdef MOE_HAVE_BLAS
    /* one thread hands these to OpenBLAS (its own threads); the others start on ours */
    if (any_blas) {
        #pragma omp single nowait
        for (int p = 0; p < n; p++) {
            if (mm[p].n <= 0 || !use_blas(k, &mm[p])) continue;
            /* y (n x rows) = x (n x cols) * w^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mm[p].n, (int)mm[p].w->rows, (int)mm[p].w->cols,
                        1.0f, mm[p].a->x, (int)mm[p].a->cols, mm[p].w->data, (int)mm[p].w->cols, 0.0f, mm[p].y,
                        (int)mm[p].ldy);
        }
    }
#else
    (void)any_blas;
#endif
    if (units) {
        /* Each thread owns one contiguous run of the units of all products
         * together, of equal cost (thread t: cost offsets [cost t / nt,
         * cost (t + 1) / nt)), so it streams long runs of weights: handing
         * out single units in turn made each thread's reads jump every 36 KB,
         * and two threads then streamed no faster than one (31 against 51
         * GB/s in moe-bench-kernels -j 2). Equal cost is not equal time when
         * cores run at different speeds (one of this shared host's two cores
         * runs the q4 kernel 20 % slower), so a thread that finishes early
         * takes chunks from the back of the others' runs.
         *
         * No barrier before the work: each thread opens its own share, and a
         * thief that looks at a share not yet opened finds it empty, as the
         * last call left it, and leaves the chunks to their owner. */
        const int team = omp_get_num_threads() < MAX_SHARES ? omp_get_num_threads() : MAX_SHARES;
        const int me = omp_get_thread_num();
        if (me < team) {
            atomic_store_explicit(&shares->share[me].span, CHUNKS_PER_SHARE, memory_order_relaxed);
            for (int i = 0; i < team; i++) {
                const int owner = (me + i) % team;
                const int64_t s0 = cost * owner / team, s1 = cost * (owner + 1) / team;
                int c;
                while ((c = take_chunk(&shares->share[owner], owner != me)) >= 0)
                    run_cost_range(k, mm, n, s0 + (s1 - s0) * c / CHUNKS_PER_SHARE,
                                   s0 + (s1 - s0) * (c + 1) / CHUNKS_PER_SHARE);
            }
        }
    }
    #pragma omp barrier
}

void moe_matmul_run(const moe_kernels *k, const moe_mm *mm, int n) {
    int64_t units = 0;
    for (int p = 0; p < n; p++)
        if (mm[p].n > 0) units += product_units(&mm[p]);
    const int nt_max = units > 1 ? omp_get_max_threads() : 1, nt = nt_max < MAX_SHARES ? nt_max : MAX_SHARES;
    moe_team_shares shares; /* only the team's shares need to start empty */
    for (int t = 0; t < nt; t++) atomic_init(&shares.share[t].span, 0);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    moe_matmul_team(k, mm, n, &shares);
}

int moe_act_alloc(moe_act *a, const float *x, size_t rows, int64_t cols) {
    *a = (moe_act){.x = x, .cols = cols, .nb = (cols + MOE_QK - 1) / MOE_QK};
    a->q = calloc(rows * (size_t)a->nb, MOE_QK);
    a->d = calloc(rows * (size_t)a->nb, sizeof(float));
    a->q4_base = calloc(rows * (size_t)a->nb, sizeof(int32_t));
    if (a->q && a->d && a->q4_base) return 0;
    moe_act_free(a);
    return -1;
}

void moe_act_free(moe_act *a) {
    free(a->q);
    free(a->d);
    free(a->q4_base);
    a->q = NULL;
    a->d = NULL;
    a->q4_base = NULL;
}

void moe_act_quantize_team(const moe_kernels *k, moe_act *a, int n) {
    #pragma omp for schedule(static)
    for (int t = 0; t < n; t++) k->quantize_act(a, t, t + 1);
}

void moe_act_quantize(const moe_kernels *k, moe_act *a) {
    /* decode's few rows (a token's 8 experts) are not worth waking the threads */
    #pragma omp parallel if ((int64_t)a->n * a->cols >= MOE_PARALLEL_MIN_VALUES)
    moe_act_quantize_team(k, a, a->n);
}

void moe_matmul(const moe_kernels *k, float *y, const moe_weight *w, moe_act *a) {
    if (moe_dtype_is_quant(w->dtype)) moe_act_quantize(k, a);
    moe_mm mm = {y, w->rows, w, a, NULL, a->n};
    moe_matmul_run(k, &mm, 1);
}

void moe_weight_row(const moe_weight *w, int64_t row, float *out) {
    moe_dequantize_rows(w->dtype, w->data, w->rows, w->cols, row, 1, out);
}

void moe_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    /* eight sums in turn: one chain of dependent adds cost four cycles an
     * element, and in decode one thread normalizes while the others wait */
    double part[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) part[j] += (double)x[i + j] * x[i + j];
    double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

float moe_softmax_exp(float *s, int n) {
    float max = -INFINITY, sum = 0;
    for (int p = 0; p < n; p++) max = s[p] > max ? s[p] : max;
    for (int p = 0; p < n; p++) sum += (s[p] = expf(s[p] - max));
    return sum;
}

void moe_swiglu(float *gate_inout, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate_inout[i];
        gate_inout[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void moe_to_half(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = moe_f32_to_f16(src[i] > MOE_HALF_MAX ? MOE_HALF_MAX : src[i] < -MOE_HALF_MAX ? -MOE_HALF_MAX : src[i]);
}

void moe_from_half(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = moe_f16_to_f32(src[i]);
}
