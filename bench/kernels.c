/*
 * moe-bench-kernels — the matrix-product kernels alone, on one thread.
 *
 *   moe-bench-kernels [-r ROWS] [-c COLS] [-s SECONDS | -i ITERATIONS] [-t TYPE]
 *                     [-j THREADS] [-e PRODUCTS] [-n TOKENS] [-w COPIES]
 *
 * For each ISA this CPU runs and each quantized/float weight type: a
 * ROWS x COLS weight (default 1024 x 2048, an OLMoE expert's gate) times 1
 * token (decode: reported as GB/s of weights streamed) and times TOKENS
 * tokens (default 64; prefill: GOPS, 2 x rows x cols x tokens per second).
 * The weight is cycled through COPIES copies (default 64, ~40-150 MB, in
 * 2 MiB pages) so it comes from memory, as it does in a model, not from
 * cache; -w 1 keeps it in cache and shows what the kernel does with warm
 * weights. Run it pinned to one core (taskset -c 0) on an idle machine; on
 * a shared one, compare two versions of a kernel with bench/kernel-ab.sh.
 *
 * With AVX-512 VNNI, it first measures the core's int8 peak: independent
 * vpdpbusd (64 multiply-adds each, counted as 128 operations) back to back.
 * q4/q8 prefill on avx512 is also given as a fraction of it, the compute
 * counterpart of decode's fraction of the read bandwidth. On this shared
 * host the q4 kernel measured 490 GOPS one day and 270-335 the next, when
 * the peak was 455: a GOPS figure alone does not say what the core could do.
 *
 * With -j THREADS it also times decode through the threaded driver
 * (moe_matmul_run) with the best ISA: PRODUCTS weights per call (default 16,
 * the gate and up of a token's 8 OLMoE experts), each a different copy, as
 * the forward pass issues them. The gap between this and THREADS x the
 * single-thread figure is what splitting the work costs.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "util/huge.h"
#include "kernels/kernels.h"
#include "quant/quant.h"

#define COPIES 64 /* the most copies, and the default */
_Static_assert(COPIES <= BENCH_MAX_PRODUCTS, "-e PRODUCTS is checked against COPIES");

static moe_act act_new(float *x, int n, int64_t cols) {
    moe_act a;
    if (moe_act_alloc(&a, x, (size_t)n, cols)) {
        fprintf(stderr, "moe-bench-kernels: out of memory\n");
        exit(1);
    }
    a.n = n;
    return a;
}

#if defined(__x86_64__)
/* GOPS of vpdpbusd on 512-bit registers: twelve independent chains, more
 * than its latency times its throughput on any core so far. */
__attribute__((target("avx512f,avx512vnni"))) static double int8_peak_gops(double seconds) {
    __m512i acc[12], w = _mm512_set1_epi8(3);
    const __m512i x = _mm512_set1_epi8(5);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
    const long per_round = 1 << 20;
    long rounds = 0;
    const double t0 = bench_now();
    double t1 = t0;
    do {
        for (long r = 0; r < per_round; r++) {
            for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], w, x);
            __asm__ volatile("" : "+v"(w)); /* keeps the loop from being folded */
        }
        rounds++;
        t1 = bench_now();
    } while (t1 - t0 < seconds);
    __m512i sum = acc[0];
    for (int i = 1; i < 12; i++) sum = _mm512_add_epi32(sum, acc[i]);
    __asm__ volatile("" : : "v"(sum));
    return 12.0 * 128.0 * (double)per_round * (double)rounds / (t1 - t0) / 1e9;
}
#endif

/* Decode through moe_matmul_run: `products` copies per call, consecutive
 * calls on the following copies, GB/s of weights streamed. */
static double driver_decode_gbs(const moe_kernels *k, moe_dtype dt, const uint8_t *w, size_t bytes, int64_t rows,
                                int64_t cols, float *x, int threads, int products, double seconds, long iters_fixed) {
    omp_set_num_threads(threads);
    moe_act a = act_new(x, 1, cols);
    if (moe_dtype_is_quant(dt)) moe_act_quantize(k, &a);
    float *y = malloc((size_t)products * (size_t)rows * sizeof(float));
    long calls = 0;
    const double t0 = bench_now();
    double t1 = t0;
    while (iters_fixed ? calls * products < iters_fixed : t1 - t0 < seconds) {
        bench_decode_call(k, dt, w, bytes, COPIES, rows, cols, &a, y, products, calls++);
        t1 = bench_now();
    }
    free(y);
    moe_act_free(&a);
    omp_set_num_threads(1);
    return (double)bytes * (double)(calls * products) / (t1 - t0) / 1e9;
}

int main(int argc, char **argv) {
    int64_t rows = 1024, cols = 2048;
    double seconds = 1.0;
    int only = -1;        /* -t TYPE: that weight type only */
    long iters_fixed = 0; /* -i N: N products per test instead of -s seconds (for perf stat) */
    int threads = 0, products = 16, T = 64, copies = COPIES;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-r")) rows = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) cols = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-s")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-i")) iters_fixed = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) only = moe_dtype_from_name(argv[i + 1]);
        else if (!strcmp(argv[i], "-j")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-e")) products = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-w")) copies = atoi(argv[i + 1]);
    }
    if (rows < 4 || cols < 32 || argc % 2 == 0 || threads < 0 || products < 1 || products > COPIES || T < 1 ||
        copies < 1 || copies > COPIES) {
        fprintf(stderr, "usage: moe-bench-kernels [-r ROWS] [-c COLS] [-s SECONDS | -i ITERATIONS] [-t TYPE]\n"
                        "                         [-j THREADS] [-e PRODUCTS] [-n TOKENS] [-w COPIES]\n");
        return 2;
    }
    omp_set_num_threads(1);
    float *src = malloc((size_t)(rows * cols) * sizeof(float)), *x = malloc((size_t)(T * cols) * sizeof(float));
    float *y = malloc((size_t)(T * rows) * sizeof(float));
    unsigned seed = 1;
    for (int64_t i = 0; i < rows * cols; i++) src[i] = ((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < T * cols; i++) x[i] = ((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    static const char *const isas[] = {"scalar", "avx2", "avx512", "avx512bf16", "neon"};
    static const moe_dtype types[] = {MOE_Q4, MOE_Q8, MOE_BF16, MOE_F32};
    double peak = 0;
#if defined(__x86_64__)
    if (moe_kernels_for("avx512")) {
        peak = int8_peak_gops(seconds < 0.5 ? seconds : 0.5);
        printf("int8 peak of one core (vpdpbusd): %.1f GOPS\n\n", peak);
    }
#endif
    printf("| isa | weights | decode GB/s (1 token) | prefill GOPS (%d tokens) | of int8 peak |\n"
           "| --- | --- | ---: | ---: | ---: |\n", T);
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        const moe_kernels *k = moe_kernels_for(isas[i]);
        if (!k) continue;
        for (size_t d = 0; d < sizeof types / sizeof *types; d++) {
            const moe_dtype dt = types[d];
            if (only >= 0 && (int)dt != only) continue;
            const size_t bytes = moe_tensor_bytes(dt, (uint64_t)rows, (uint64_t)cols);
            uint8_t *w = moe_alloc_huge(bytes * COPIES);
            if (!w) {
                fprintf(stderr, "moe-bench-kernels: out of memory\n");
                return 1;
            }
            for (int c = 0; c < COPIES; c++) moe_quantize(dt, src, rows, cols, w + bytes * c);
            double result[2];
            for (int pass = 0; pass < 2; pass++) {
                const int n = pass ? T : 1;
                moe_act a = act_new(x, n, cols);
                if (moe_dtype_is_quant(dt)) moe_act_quantize(k, &a);
                long iters = 0;
                const double t0 = bench_now();
                double t1 = t0;
                while (iters_fixed ? iters < iters_fixed : t1 - t0 < seconds) {
                    moe_weight wt = {w + bytes * (size_t)(iters % copies), dt, rows, cols};
                    moe_mm mm = {y, rows, &wt, &a, NULL, n};
                    k->mm[dt](&mm, 0, rows);
                    iters++;
                    t1 = bench_now();
                }
                result[pass] = pass ? 2.0 * rows * cols * n * iters / (t1 - t0) / 1e9 : bytes * iters / (t1 - t0) / 1e9;
                moe_act_free(&a);
            }
            printf("| %s | %s | %.2f | %.1f |", isas[i], moe_dtype_name(dt), result[0], result[1]);
            if (peak > 0 && !strncmp(isas[i], "avx512", 6) && moe_dtype_is_quant(dt)) printf(" %.0f%% |\n", 100 * result[1] / peak);
            else printf(" |\n");
            if (threads && k == moe_kernels_select(NULL, NULL))
                printf("| %s, %d threads, %d products per call | %s | %.2f | | |\n", isas[i], threads, products,
                       moe_dtype_name(dt), driver_decode_gbs(k, dt, w, bytes, rows, cols, x, threads, products,
                                                             seconds, iters_fixed));
            free(w);
        }
    }
    free(src);
    free(x);
    free(y);
    return 0;
}
