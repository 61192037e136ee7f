/*
 * kernel_ab — two builds of one ISA's kernel file, timed against each other
 * in the same process: bench/kernel-ab.sh compiles OLD and NEW with their
 * kernel tables renamed kern_a and kern_b and links them here.
 *
 *   kernel_ab TYPE THREADS ROUNDS TOKENS
 *
 * Each round runs A, then B, for 0.1 s each: 16 products per call of a 1024
 * x 2048 weight (an OLMoE expert's gate; AB_ROWS and AB_COLS change it)
 * cycled through 64 copies, so the weights come from memory, through the
 * threaded driver as decode issues them. On a shared host the bandwidth
 * moves by tens of percent from minute to minute; slices this short see the
 * same neighbours, so B/A is steady where two separate runs of
 * moe-bench-kernels are not.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "util/huge.h"
#include "kernels/kernels.h"
#include "quant/quant.h"

extern const moe_kernels kern_a, kern_b;

enum { PRODUCTS = 16 };

/* The positive count in environment variable `name`, `fallback` when unset;
 * -1 (and a message) when it is set to anything else. */
static int env_count(const char *name, int fallback) {
    const char *v = getenv(name);
    if (!v) return fallback;
    char *end;
    const long n = strtol(v, &end, 10);
    if (end != v && !*end && n >= 1 && n <= 1 << 20) return (int)n;
    fprintf(stderr, "kernel_ab: %s must be a count from 1 to %d, not '%s'\n", name, 1 << 20, v);
    return -1;
}

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

int main(int argc, char **argv) {
    const int dt = argc == 5 ? moe_dtype_from_name(argv[1]) : -1;
    const int threads = argc == 5 ? atoi(argv[2]) : 0, rounds = argc == 5 ? atoi(argv[3]) : 0;
    const int n = argc == 5 ? atoi(argv[4]) : 0;
    if (dt < 0 || threads < 1 || rounds < 1 || n < 1) {
        fprintf(stderr, "usage: kernel_ab TYPE THREADS ROUNDS TOKENS (built by bench/kernel-ab.sh)\n");
        return 2;
    }
    /* AB_COPIES=1 keeps the weights in cache: the kernel's own speed */
    const int copies = env_count("AB_COPIES", 64), rows = env_count("AB_ROWS", 1024), cols = env_count("AB_COLS", 2048);
    if (copies < 0 || rows < 0 || cols < 0) return 2;
    const size_t bytes = moe_tensor_bytes((moe_dtype)dt, rows, cols);
    float *src = malloc((size_t)rows * cols * sizeof(float)), *x = malloc((size_t)n * cols * sizeof(float));
    float *y = malloc((size_t)PRODUCTS * rows * (size_t)n * sizeof(float));
    uint8_t *w = moe_alloc_huge(bytes * copies);
    moe_act a;
    if (!src || !x || !y || !w || moe_act_alloc(&a, x, (size_t)n, cols)) {
        fprintf(stderr, "kernel_ab: out of memory\n");
        return 1;
    }
    unsigned seed = 1;
    for (size_t i = 0; i < (size_t)rows * cols; i++) src[i] = rnd(&seed);
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = rnd(&seed);
    for (int c = 0; c < copies; c++) moe_quantize((moe_dtype)dt, src, rows, cols, w + bytes * c);
    a.n = n;
    if (moe_dtype_is_quant((moe_dtype)dt)) moe_act_quantize(&kern_a, &a);
    omp_set_num_threads(threads);

    const moe_kernels *const kern[2] = {&kern_a, &kern_b};
    double seconds[2] = {0, 0}, streamed[2] = {0, 0};
    long calls = 0;
    for (int r = 0; r < rounds; r++)
        for (int v = 0; v < 2; v++) {
            const double t0 = bench_now();
            double t1 = t0;
            long done = 0;
            while (t1 - t0 < 0.1) {
                bench_decode_call(kern[v], (moe_dtype)dt, w, bytes, copies, rows, cols, &a, y, PRODUCTS, calls++);
                done++;
                t1 = bench_now();
            }
            seconds[v] += t1 - t0;
            streamed[v] += (double)bytes * PRODUCTS * (double)done;
        }
    const double gbs_a = streamed[0] / seconds[0] / 1e9, gbs_b = streamed[1] / seconds[1] / 1e9;
    /* multiply-adds per second: prefill's measure, as GB/s is decode's */
    const double macs_per_byte = (double)rows * cols * n / (double)bytes;
    printf("%s %d x %d, %d thread%s, %d token%s: A %.2f GB/s (%.1f GMAC/s), B %.2f GB/s (%.1f GMAC/s), B/A %.3f\n",
           moe_dtype_name((moe_dtype)dt), rows, cols, threads, threads > 1 ? "s" : "", n, n > 1 ? "s" : "", gbs_a,
           gbs_a * macs_per_byte, gbs_b, gbs_b * macs_per_byte, gbs_b / gbs_a);
    moe_act_free(&a);
    free(src);
    free(x);
    free(y);
    free(w);
    return 0;
}
