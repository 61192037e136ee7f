/*
 * test_kernels.c — every kernel of every ISA this CPU runs, on shapes that
 * are not multiples of any block, group or vector width (1-7, 13, 17, 31, 53, 300 and 512
 * tokens; odd row and column counts), and through a token index:
 *   - the scalar kernels against a double-precision sum of the decoded
 *     weights times the decoded activations;
 *   - each SIMD kernel against the scalar kernel;
 *   - each SIMD activation quantizer bit for bit against the scalar one;
 *   - the reference quantizer's round trip error against its bound.
 * ISAs this machine cannot run are skipped with the reason printed.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels/kernels.h"
#include "quant/quant.h"
#include "util/half.h"

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

typedef struct fixture {
    int64_t rows, cols;
    int n;
    moe_weight w;
    float *wf;      /* the weights as decoded */
    float *x;
    int32_t *idx;   /* a permutation of the tokens */
} fixture;

static moe_act act_new(const fixture *f) {
    moe_act a;
    if (moe_act_alloc(&a, f->x, (size_t)f->n, f->cols)) {
        fprintf(stderr, "test_kernels: out of memory\n");
        exit(1);
    }
    a.n = f->n;
    return a;
}

static fixture make(moe_dtype dt, int64_t rows, int64_t cols, int n, unsigned seed) {
    fixture f = {rows, cols, n, {0}, 0, 0, 0};
    float *src = malloc((size_t)(rows * cols) * 4);
    for (int64_t i = 0; i < rows * cols; i++) src[i] = rnd(&seed) * (1 + (i % 7 == 0) * 3);
    void *data = malloc(moe_tensor_bytes(dt, (uint64_t)rows, (uint64_t)cols));
    moe_quantize(dt, src, rows, cols, data);
    f.w = (moe_weight){data, dt, rows, cols};
    f.wf = malloc((size_t)(rows * cols) * 4);
    moe_dequantize_rows(dt, data, rows, cols, 0, rows, f.wf);
    if (dt == MOE_F32 || dt == MOE_F16 || dt == MOE_BF16) {
        int same = 1;
        for (int64_t i = 0; i < rows * cols && dt == MOE_F32; i++) same &= f.wf[i] == src[i];
        CHECK(same, "f32 round trip");
    } else {
        /* q8: every value is within half a step (max|x| / 127), plus the f16 scale's rounding.
         * q4: the scale search never does worse, per block, than the plain rule that maps the
         * value of largest magnitude to -8 and rounds the rest. */
        double worst = 0;
        int worse_blocks = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < cols; b += MOE_QK) {
                const int64_t e = b + MOE_QK < cols ? b + MOE_QK : cols;
                float amax = 0, smax = 0;
                for (int64_t c = b; c < e; c++)
                    if (fabsf(src[r * cols + c]) > amax) { amax = fabsf(src[r * cols + c]); smax = src[r * cols + c]; }
                const float dn = moe_f16_to_f32(moe_f32_to_f16(smax / -8.0f));
                double err = 0, naive = 0;
                for (int64_t c = b; c < e; c++) {
                    const double v = src[r * cols + c], got = f.wf[r * cols + c];
                    /* half a step, plus what the scale loses to f16 (much, relatively,
                     * where a tiny block's scale is an f16 subnormal) times the 127 steps */
                    const double step = amax / 127.0, step16 = moe_f16_to_f32(moe_f32_to_f16((float)step));
                    worst = fmax(worst, fabs(got - v) / (0.5 * fmax(step, step16) + 127 * fabs(step16 - step) + 1e-30));
                    double q = dn != 0 ? rint(v / dn) : 0;
                    q = q < -8 ? -8 : q > 7 ? 7 : q;
                    err += (got - v) * (got - v);
                    naive += (dn * q - v) * (dn * q - v);
                }
                worse_blocks += err > naive * (1 + 1e-6) + 1e-12;
            }
        if (dt == MOE_Q8)
            CHECK(worst <= 1 + 1e-2, "q8 error %.3f x its bound (rows=%lld cols=%lld)", worst, (long long)rows, (long long)cols);
        else CHECK(worse_blocks == 0, "q4: %d blocks worse than the plain rule (rows=%lld cols=%lld)", worse_blocks,
                   (long long)rows, (long long)cols);
    }
    free(src);
    f.x = malloc((size_t)n * (size_t)cols * 4);
    for (int64_t i = 0; i < (int64_t)n * cols; i++) f.x[i] = rnd(&seed);
    f.idx = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) f.idx[i] = (int32_t)((i * 7 + 3) % n);
    return f;
}

static void unmake(fixture *f) { free((void *)f->w.data); free(f->wf); free(f->x); free(f->idx); }

/* y for all tokens through the index, and the activations used. */
static void run(const moe_kernels *k, const fixture *f, moe_act *a, float *y) {
    a->n = f->n;
    if (moe_dtype_is_quant(f->w.dtype)) k->quantize_act(a, 0, f->n);
    moe_mm mm = {y, f->rows, &f->w, a, f->idx, f->n};
    moe_matmul_run(k, &mm, 1);
}

static void test_shape(const moe_kernels *simd, moe_dtype dt, int64_t rows, int64_t cols, int n, unsigned seed) {
    fixture f = make(dt, rows, cols, n, seed);
    moe_act a = act_new(&f);
    float *y = malloc((size_t)n * (size_t)rows * 4);
    run(&moe_kernels_scalar, &f, &a, y);

    /* scalar against double precision */
    const int quant = moe_dtype_is_quant(dt);
    double worst = 0;
    float *xd = malloc((size_t)cols * sizeof *xd);
    for (int j = 0; j < n; j++) {
        const float *x = f.x + (size_t)f.idx[j] * (size_t)cols;
        for (int64_t c = 0; c < cols; c++)
            xd[c] = quant ? a.d[f.idx[j] * a.nb + c / MOE_QK] * a.q[(size_t)f.idx[j] * (size_t)(a.nb * MOE_QK) + c] : x[c];
        for (int64_t r = 0; r < rows; r++) {
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; c++) {
                ref += (double)f.wf[r * cols + c] * xd[c];
                mag += fabs((double)f.wf[r * cols + c] * xd[c]);
            }
            worst = fmax(worst, fabs(y[(size_t)j * rows + r] - ref) / (mag + 1e-30));
        }
    }
    free(xd);
    CHECK(worst < 2e-6, "scalar %s rows=%lld cols=%lld n=%d: error %g", moe_dtype_name(dt), (long long)rows,
          (long long)cols, n, worst);

    if (simd) {
        moe_act b = act_new(&f);
        float *z = malloc((size_t)n * (size_t)rows * 4);
        run(simd, &f, &b, z);
        if (dt == MOE_BF16 && simd->bf16_rounds_activations) {
            /* what those kernels compute: the activations rounded to bf16, in double */
            for (int j = 0; j < n; j++) {
                const float *x = f.x + (size_t)f.idx[j] * (size_t)cols;
                for (int64_t r = 0; r < rows; r++) {
                    double ref = 0;
                    for (int64_t c = 0; c < cols; c++) ref += (double)f.wf[r * cols + c] * moe_bf16_to_f32(moe_f32_to_bf16(x[c]));
                    y[(size_t)j * rows + r] = (float)ref;
                }
            }
        }
        if (quant) {
            size_t nq = (size_t)n * (size_t)a.nb;
            CHECK(!memcmp(a.q, b.q, nq * MOE_QK) && !memcmp(a.d, b.d, nq * 4), "%s activation quantization differs",
                  simd->isa);
            CHECK(!memcmp(a.q4_base, b.q4_base, nq * sizeof(int32_t)), "%s activation block sums differ", simd->isa);
        }
        double dz = 0, mag = 0;
        for (size_t i = 0; i < (size_t)n * (size_t)rows; i++) {
            dz = fmax(dz, fabs(z[i] - y[i]));
            mag = fmax(mag, fabs(y[i]));
        }
        CHECK(dz <= 1e-5 * (mag + 1e-3) * sqrt((double)cols), "%s %s rows=%lld cols=%lld n=%d: differs from scalar by %g (max %g)",
              simd->isa, moe_dtype_name(dt), (long long)rows, (long long)cols, n, dz, mag);
        free(z);
        moe_act_free(&b);
    }
    free(y);
    moe_act_free(&a);
    unmake(&f);
}

/* A large f32 product with contiguous activations (the BLAS path, when the
 * library has it) against the scalar kernel. */
static void test_contiguous_f32(const moe_kernels *k, unsigned *seed) {
    enum { ROWS = 267 }; /* above BLAS_MIN_ROWS */
    fixture f = make(MOE_F32, ROWS, 129, 100, (*seed)++);
    moe_act a = act_new(&f);
    float *y = malloc(100 * ROWS * 4), *z = malloc(100 * ROWS * 4);
    moe_mm mm = {y, ROWS, &f.w, &a, NULL, 100};
    moe_matmul_run(&moe_kernels_scalar, &mm, 1);
    mm.y = z;
    moe_matmul_run(k, &mm, 1);
    int bad = 0;
    for (int i = 0; i < 100 * ROWS; i++) bad += !(fabsf(z[i] - y[i]) < 1e-4f);
    CHECK(bad == 0, "%s f32 100-token product (BLAS path): %d outputs differ from scalar", k->isa, bad);
    free(y);
    free(z);
    moe_act_free(&a);
    unmake(&f);
}

/* Checks products [first, first + count) of P against want (their first
 * toks rows of outputs) and that the rest of every y is untouched. */
static int split_bad(int P, const int64_t *rows, const int *toks, float *const *y, float *const *want, int first,
                     int count) {
    int bad = 0;
    for (int p = 0; p < P; p++) {
        const int in_call = p >= first && p < first + count;
        for (int64_t i = 0; i < rows[p] * 3; i++)
            bad += in_call && i < rows[p] * toks[p] ? y[p][i] != want[p][i] : y[p][i] != -1234.0f;
    }
    return bad;
}

/* Several products in one call (the experts of a token), split over 1-5
 * threads, each product's rows cut at unit boundaries that fall anywhere:
 * every output equals the product computed alone on one thread. One product
 * has no tokens and must be left untouched.
 *
 * Then the same through moe_matmul_team, as moe_eval runs it: one team
 * stays together over many calls, each on other products (one call has
 * nothing to do at all), so every call starts on the shares the one before
 * left; a chunk lost or run twice shows as a wrong or untouched output. */
static void test_split(const moe_kernels *k, unsigned *seed) {
    enum { P = 5 };
    const int64_t rows[P] = {37, 100, 4, 64, 131};
    const int toks[P] = {1, 2, 0, 3, 1};
    fixture f[P];
    moe_act a[P];
    moe_mm mm[P];
    float *y[P], *want[P];
    for (int p = 0; p < P; p++) {
        f[p] = make(p % 2 ? MOE_Q4 : MOE_Q8, rows[p], 96, toks[p] ? toks[p] : 1, (*seed)++);
        a[p] = act_new(&f[p]);
        k->quantize_act(&a[p], 0, f[p].n);
        f[p].n = toks[p];
        y[p] = malloc((size_t)(rows[p] * 3) * 4);
        want[p] = malloc((size_t)(rows[p] * 3) * 4);
        mm[p] = (moe_mm){want[p], rows[p], &f[p].w, &a[p], f[p].idx, toks[p]};
        if (toks[p]) k->mm[f[p].w.dtype](&mm[p], 0, rows[p]);
    }
    for (int threads = 1; threads <= 5; threads++) {
        omp_set_num_threads(threads);
        for (int p = 0; p < P; p++) {
            for (int64_t i = 0; i < rows[p] * 3; i++) y[p][i] = -1234.0f;
            mm[p].y = y[p];
        }
        moe_matmul_run(k, mm, P);
        const int bad = split_bad(P, rows, toks, y, want, 0, P);
        CHECK(bad == 0, "%s %d threads, %d products: %d outputs differ from the products alone", k->isa, threads, P, bad);

        moe_team_shares *shares = moe_team_shares_new();
        #pragma omp parallel num_threads(threads)
        for (int call = 0; call < 3 * P; call++) {
            const int first = call % P, count = 1 + call / P < P - first ? 1 + call / P : P - first;
            #pragma omp single
            for (int p = 0; p < P; p++)
                for (int64_t i = 0; i < rows[p] * 3; i++) y[p][i] = -1234.0f;
            moe_matmul_team(k, mm + first, count, shares);
            #pragma omp single
            {
                const int bad_team = split_bad(P, rows, toks, y, want, first, count);
                CHECK(bad_team == 0, "%s team of %d, call %d (products %d..%d): %d outputs differ from the products alone",
                      k->isa, threads, call, first, first + count - 1, bad_team);
            }
        }
        moe_team_shares_free(shares);
    }
    omp_set_num_threads(1);
    for (int p = 0; p < P; p++) {
        free(y[p]);
        free(want[p]);
        moe_act_free(&a[p]);
        unmake(&f[p]);
    }
}

/* swiglu against the scalar reference (expf), at every tail length and at
 * gates far out in both tails, where silu is g or 0 */
static void test_swiglu(const moe_kernels *k, unsigned *seed) {
    enum { N = 83 };
    float g[N], u[N], want[N];
    for (int n = 1; n <= N; n += n < 40 ? 1 : 21) {
        for (int i = 0; i < n; i++) {
            g[i] = i % 11 == 5 ? (i % 2 ? 120.0f : -120.0f) : 40 * (rnd(seed) - 0.5f);
            u[i] = 4 * (rnd(seed) - 0.5f);
        }
        memcpy(want, g, sizeof g);
        moe_swiglu(want, u, n);
        k->swiglu(g, u, n);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += !(fabs(g[i] - want[i]) <= 1e-6 * fabs(want[i]) + 1e-30);
        CHECK(bad == 0, "%s swiglu n=%d: %d values differ from scalar", k->isa, n, bad);
    }
}

/* softmax_exp against double precision (the scalar reference) and against
 * the scalar kernel (SIMD): every tail length, long rows, scores far below
 * the maximum (some -inf, as a masked position would be), the maximum
 * anywhere in the row, rows of only negative scores. */
static void test_softmax_exp(const moe_kernels *k, unsigned *seed) {
    enum { N = 1031 };
    static float s[N], want[N];
    for (int n = 1; n <= N; n += n < 70 ? 1 : 137) {
        const float shift = n % 2 ? 0.0f : -100.0f; /* every score negative in half the rows */
        for (int i = 0; i < n; i++) {
            s[i] = shift + (i % 13 == 7 ? -200.0f : 30 * rnd(seed));
            if (i % 29 == 11) s[i] = -INFINITY;
        }
        s[(int)((rnd(seed) * 0.5f + 0.5f) * (float)n) % n] = shift + 40.0f; /* the maximum, somewhere */
        memcpy(want, s, sizeof(float) * (size_t)n);
        double max = -INFINITY, exact = 0;
        for (int i = 0; i < n; i++) max = want[i] > max ? want[i] : max;
        for (int i = 0; i < n; i++) exact += exp((double)want[i] - max);
        const float ref = moe_softmax_exp(want, n);
        /* a float sum of n positive terms is within n units of rounding
         * (2^-24) of exact, plus expf's few ulps */
        CHECK(fabs(ref - exact) <= (n + 4) * 0x1p-24 * exact, "moe_softmax_exp n=%d: sum %.9g, exactly %.9g", n, ref, exact);
        if (k == &moe_kernels_scalar) continue;
        const float got = k->softmax_exp(s, n);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += !(fabs(s[i] - want[i]) <= 1e-6 * want[i] + 1e-30);
        CHECK(bad == 0 && fabs(got - ref) <= 1e-6 * ref, "%s softmax_exp n=%d: %d values differ from scalar, sum %g against %g",
              k->isa, n, bad, got, ref);
    }
}

/* decode attention's dot and axpy against double precision, with the key
 * or value in f32 and in f16: lengths 0..69 and 128..600 (around every
 * vector width, unroll and tail, and MLA's 512 and 576); axpy must leave the
 * values past n alone. */
static void test_attention_ops(const moe_kernels *k, unsigned *seed) {
    enum { MAXD = 600 };
    static float a[MAXD], b[MAXD], y[MAXD + 1], y0[MAXD];
    static uint16_t b16[MAXD];
    for (int n = 0; n <= MAXD; n = n == 69 ? 128 : n < 200 ? n + 1 : n + 47) {
        for (int i = 0; i < n; i++) {
            a[i] = rnd(seed);
            b16[i] = moe_f32_to_f16(rnd(seed) * 3);
            b[i] = moe_f16_to_f32(b16[i]); /* the same values in both types */
            y0[i] = y[i] = rnd(seed);
        }
        double ref = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            ref += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        CHECK(fabs(k->dot(a, b, n) - ref) <= 1e-6 * (mag + 1e-6), "%s dot n=%d", k->isa, n);
        CHECK(fabs(k->dot_half(a, b16, n) - ref) <= 1e-6 * (mag + 1e-6), "%s dot_half n=%d", k->isa, n);
        y[n] = 42.0f;
        k->axpy(y, -0.75f, b, n);
        int bad = y[n] != 42.0f;
        for (int i = 0; i < n; i++) bad += !(fabs(y[i] - (y0[i] - 0.75 * b[i])) <= 1e-6 * (fabs(y0[i]) + fabs(b[i])));
        CHECK(bad == 0, "%s axpy n=%d: %d wrong (or wrote past the end)", k->isa, n, bad);
        memcpy(y, y0, (size_t)n * sizeof *y);
        k->axpy_half(y, -0.75f, b16, n);
        bad = y[n] != 42.0f;
        for (int i = 0; i < n; i++) bad += !(fabs(y[i] - (y0[i] - 0.75 * b[i])) <= 1e-6 * (fabs(y0[i]) + fabs(b[i])));
        CHECK(bad == 0, "%s axpy_half n=%d: %d wrong (or wrote past the end)", k->isa, n, bad);
    }
}

/* the f16 KV cache's conversions, bit for bit against the reference (NaN
 * only as NaN: hardware keeps payloads): every half back to float, and
 * floats of every exponent that halves have (subnormals, saturation beyond
 * the largest half, ties), lengths 0..70 and 1000, nothing written past n. */
static void test_half_conversions(const moe_kernels *k, unsigned *seed) {
    enum { MAXN = 1000 };
    static float f[MAXN + 1], back[MAXN + 1];
    static uint16_t h[MAXN + 1];
    int bad = 0;
    for (int n = 0; n <= MAXN; n = n == 70 ? MAXN : n + 1) {
        for (int i = 0; i < n; i++) {
            *seed = *seed * 1664525u + 1013904223u;
            /* exponents 2^-26 .. 2^17, around both ends of f16's range; every
             * 16th value a tie between two halves */
            const uint32_t bits = (*seed & 0x807fffffu) | ((*seed >> 7) % 44 + 101) << 23;
            f[i] = moe_bits_f32(i % 16 == 5 ? (bits & ~0x1fffu) | 0x1000u : bits);
        }
        h[n] = 0xbeef;
        k->to_half(h, f, n);
        uint16_t want[MAXN];
        moe_to_half(want, f, n);
        for (int i = 0; i < n; i++) bad += h[i] != want[i];
        bad += h[n] != 0xbeef;
        back[n] = 42.0f;
        k->from_half(back, h, n);
        for (int i = 0; i < n; i++) bad += moe_f32_bits(back[i]) != moe_f32_bits(moe_f16_to_f32(h[i]));
        bad += back[n] != 42.0f;
    }
    CHECK(bad == 0, "%s to_half/from_half: %d values differ from the reference (or written past n)", k->isa, bad);
    bad = 0;
    for (uint32_t v = 0; v < 65536; v += MAXN) {
        const int n = 65536 - v < MAXN ? (int)(65536 - v) : MAXN;
        for (int i = 0; i < n; i++) h[i] = (uint16_t)(v + (uint32_t)i);
        k->from_half(back, h, n);
        for (int i = 0; i < n; i++) {
            const float want = moe_f16_to_f32(h[i]);
            bad += isnan(want) ? !isnan(back[i]) : moe_f32_bits(back[i]) != moe_f32_bits(want);
        }
    }
    /* and what each special value must become: +-0, saturation, NaN,
     * the smallest subnormal and a tie below it, the smallest normal */
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65519.99f, 65520.0f, -1e9f, 5.9604645e-8f,
                             2.9802322e-8f, 2.9802326e-8f, 6.1035156e-5f};
    const uint16_t expect[] = {0x0000, 0x8000, 0x7bff, 0xfbff, 0x7e00, 0x7bff, 0x7bff, 0x7bff, 0xfbff, 0x0001,
                               0x0000, 0x0001, 0x0400};
    const int ns = (int)(sizeof special / sizeof *special);
    k->to_half(h, special, ns);
    for (int i = 0; i < ns; i++)
        bad += isnan(special[i]) ? (h[i] & 0x7c00u) != 0x7c00u || !(h[i] & 0x3ffu) : h[i] != expect[i];
    CHECK(bad == 0, "%s to_half/from_half: %d of all halves and the special values differ", k->isa, bad);
}

/* wsum_tile and wsum_tile_half against double precision: 1-4 queries, widths around the
 * 64-column step and the vector width, output rows further apart than d;
 * the sums are added to what the outputs held, and nothing is written past
 * each row's d values. */
static void test_wsum_tile(const moe_kernels *k, unsigned *seed) {
    enum { MAXN = 37, MAXD = 200, LDV = MAXD + 3, LDS = MAXN + 5, LDO = MAXD + 9 };
    static float v[MAXN * LDV], s[4 * LDS], o[4 * LDO], o0[4 * LDO];
    static uint16_t v16[MAXN * LDV];
    const int ds[] = {1, 15, 16, 33, 64, 65, 128, 200}, ns[] = {1, 16, 17, MAXN};
    const float scale[4] = {0.5f, 0.25f, 2.0f, 1.0f};
    for (int i = 0; i < MAXN * LDV; i++) {
        v16[i] = moe_f32_to_f16(rnd(seed));
        v[i] = moe_f16_to_f32(v16[i]); /* the same values in f32 and f16 */
    }
    for (int i = 0; i < 4 * LDS; i++) s[i] = rnd(seed);
    for (int half = 0; half <= 1; half++)
    for (size_t di = 0; di < sizeof ds / sizeof *ds; di++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (int nq = 1; nq <= 4; nq++) {
                const int d = ds[di], n = ns[ni];
                for (int i = 0; i < 4 * LDO; i++) o[i] = o0[i] = rnd(seed) - 0.5f;
                if (half) k->wsum_tile_half(o, LDO, s, LDS, scale, nq, v16, n, LDV, d);
                else k->wsum_tile(o, LDO, s, LDS, scale, nq, v, n, LDV, d);
                int bad = 0;
                for (int q = 0; q < 4; q++)
                    for (int i = 0; i < LDO; i++) {
                        if (q >= nq || i >= d) {
                            bad += o[q * LDO + i] != o0[q * LDO + i];
                            continue;
                        }
                        double r = 0, m = 0;
                        for (int p = 0; p < n; p++) {
                            r += (double)s[q * LDS + p] * v[p * LDV + i];
                            m += fabs((double)s[q * LDS + p] * v[p * LDV + i]);
                        }
                        const double want = o0[q * LDO + i] + scale[q] * r;
                        bad += !(fabs(o[q * LDO + i] - want) <= 1e-6 * (m + 1e-6) * 2 + 0x1p-23 * fabs(want));
                    }
                CHECK(bad == 0, "%s wsum_tile%s d=%d n=%d nq=%d: %d wrong (or written outside)", k->isa,
                      half ? "_half" : "", d, n, nq, bad);
            }
}

/* prefill's scores over transposed keys: 1-4 queries, key counts that end
 * inside a block, rows of scores further apart than the keys. */
static void test_scores_kt(const moe_kernels *k, unsigned *seed) {
    enum { MAXN = 37, MAXD = 200, NPAD = 48, LDS = NPAD + 5, LDQ = MAXD + 7 };
    static float keys[MAXN][MAXD], kt[NPAD * MAXD], q[4 * LDQ], s[4 * LDS];
    const int ds[] = {1, 15, 16, 33, 64, 128, 200}, ns[] = {1, 16, 17, MAXN};
    for (size_t di = 0; di < sizeof ds / sizeof *ds; di++) {
        const int d = ds[di];
        for (int p = 0; p < MAXN; p++)
            for (int j = 0; j < d; j++) keys[p][j] = rnd(seed);
        for (int i = 0; i < 4 * LDQ; i++) q[i] = rnd(seed);
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
            const int n = ns[ni];
            for (int p = 0; p < NPAD; p++)
                for (int j = 0; j < d; j++) kt[moe_kt_index(p, j, d)] = p < n ? keys[p][j] : 0.0f;
            for (int nq = 1; nq <= 4; nq++) {
                for (int i = 0; i < 4 * LDS; i++) s[i] = -7.0f;
                k->scores_kt(s, LDS, q, LDQ, nq, kt, n, d, 0.125f);
                int bad = 0;
                for (int i = 0; i < 4; i++)
                    for (int p = 0; p < LDS; p++) {
                        const int written = i < nq && p < (n + MOE_KT_BLOCK - 1) / MOE_KT_BLOCK * MOE_KT_BLOCK;
                        if (!written) {
                            bad += s[i * LDS + p] != -7.0f;
                            continue;
                        }
                        double r = 0, m = 0;
                        for (int j = 0; j < d; j++) {
                            const double kv = p < n ? keys[p][j] : 0.0;
                            r += (double)q[i * LDQ + j] * kv;
                            m += fabs((double)q[i * LDQ + j] * kv);
                        }
                        bad += !(fabs(s[i * LDS + p] - 0.125 * r) <= 1e-6 * (m + 1e-6));
                    }
                CHECK(bad == 0, "%s scores_kt d=%d n=%d nq=%d: %d wrong (or written outside)", k->isa, d, n, nq, bad);
            }
        }
    }
}

#ifdef MOE_TEST_AVX512_EMULATED
/* tests/meson.build: kernels_avx512.c built against SIMDe, for AVX2 CPUs */
extern const moe_kernels moe_kernels_avx512_emulated, moe_kernels_avx512bf16_emulated;
#endif

int main(void) {
    enum { N_SIMD = 4 };
    const char *simd_isas[N_SIMD] = {"avx2", "avx512", "avx512bf16", "neon"};
    const moe_kernels *simd[N_SIMD];
    const moe_kernels *any_simd = NULL;
#ifdef MOE_TEST_AVX512_EMULATED
    if (!moe_kernels_for("avx2")) {
        printf("skip: the emulated AVX-512 kernels are built for AVX2, which this CPU lacks\n");
        return 77;
    }
#endif
    for (int i = 0; i < N_SIMD; i++) {
#ifdef MOE_TEST_AVX512_EMULATED
        /* this build tests the emulated AVX-512 kernels only; the plain one the rest */
        simd[i] = !strcmp(simd_isas[i], "avx512")       ? &moe_kernels_avx512_emulated
                  : !strcmp(simd_isas[i], "avx512bf16") ? &moe_kernels_avx512bf16_emulated
                                                        : NULL;
        if (simd[i]) printf("testing %s kernels, emulated by SIMDe, against scalar\n", simd_isas[i]);
        if (simd[i] && !any_simd) any_simd = simd[i];
        continue;
#endif
        simd[i] = moe_kernels_for(simd_isas[i]);
        if (!simd[i]) printf("skip: %s kernels are not built for this target or not supported by this CPU\n", simd_isas[i]);
        else printf("testing %s kernels against scalar\n", simd_isas[i]);
        if (simd[i] && !any_simd) any_simd = simd[i];
    }
    const int64_t rows[] = {1, 5, 37, 64};
    const int64_t cols[] = {1, 31, 33, 64, 257, 300};
    const int toks[] = {1, 2, 3, 5, 6, 7, 13, 17, 31, 53};
    unsigned seed = 1;
    /* s = 0: the scalar kernels alone; s >= 1: each SIMD ISA against them */
    for (int s = 0; s <= N_SIMD; s++)
        for (int d = 0; d < MOE_DTYPE_COUNT; d++)
            for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
                for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
                    for (size_t t = 0; t < sizeof toks / sizeof *toks; t++)
                        if (s == 0 || simd[s - 1]) test_shape(s ? simd[s - 1] : NULL, (moe_dtype)d, rows[r], cols[c], toks[t], seed++);
    for (int i = 0; i < N_SIMD; i++)
        for (int d = 0; d < MOE_DTYPE_COUNT; d++)
            if (simd[i]) {
                test_shape(simd[i], (moe_dtype)d, 41, 96, 512, seed++);
                test_shape(simd[i], (moe_dtype)d, 37, 70, 300, seed++); /* a partial token chunk */
                /* crosses strips of STRIP_BLOCKS (32) column blocks of the AVX2
                 * 16-row kernels, the last partial; rows 16 + 8 + 3 */
                test_shape(simd[i], (moe_dtype)d, 27, 2100, 21, seed++);
            }

    /* Large f32 products with contiguous activations go to BLAS (when built with it). */
    if (any_simd) test_contiguous_f32(any_simd, &seed);

    test_split(&moe_kernels_scalar, &seed);
    for (int i = 0; i < N_SIMD; i++)
        if (simd[i]) test_split(simd[i], &seed);

    /* attention's inner loops, every ISA */
    test_attention_ops(&moe_kernels_scalar, &seed);
    test_softmax_exp(&moe_kernels_scalar, &seed);
    test_scores_kt(&moe_kernels_scalar, &seed);
    test_half_conversions(&moe_kernels_scalar, &seed);
    test_wsum_tile(&moe_kernels_scalar, &seed);
    for (int i = 0; i < N_SIMD; i++)
        if (simd[i]) {
            test_attention_ops(simd[i], &seed);
            test_scores_kt(simd[i], &seed);
            test_swiglu(simd[i], &seed);
            test_softmax_exp(simd[i], &seed);
            test_wsum_tile(simd[i], &seed);
            test_half_conversions(simd[i], &seed);
        }

    float x[5] = {1, -2, 3, 0.5f, -0.25f}, wt[5] = {1, 0.5f, 2, 1, -1}, o[5];
    moe_rmsnorm(o, x, wt, 5, 1e-5f);
    double ms = 0;
    for (int i = 0; i < 5; i++) ms += x[i] * x[i] / 5.0;
    CHECK(fabs(o[2] - 3 * 2 / sqrt(ms + 1e-5)) < 1e-5, "rmsnorm %g", o[2]);
    float g[2] = {1.5f, -3}, u[2] = {2, 0.5f};
    moe_swiglu(g, u, 2);
    CHECK(fabs(g[0] - 1.5 / (1 + exp(-1.5)) * 2) < 1e-6 && fabs(g[1] - (-3 / (1 + exp(3.0))) * 0.5) < 1e-6, "swiglu");
    return check_done();
}
