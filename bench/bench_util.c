/* bench_util.c — see bench_util.h. */
#include <time.h>

#include "bench_util.h"

double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void bench_decode_call(const moe_kernels *k, moe_dtype dt, const uint8_t *w, size_t bytes, int copies, int64_t rows,
                       int64_t cols, const moe_act *a, float *y, int products, long call) {
    moe_weight wt[BENCH_MAX_PRODUCTS];
    moe_mm mm[BENCH_MAX_PRODUCTS];
    if (products > BENCH_MAX_PRODUCTS) products = BENCH_MAX_PRODUCTS;
    for (int p = 0; p < products; p++) {
        wt[p] = (moe_weight){w + bytes * (size_t)((call * products + p) % copies), dt, rows, cols};
        mm[p] = (moe_mm){y + (size_t)p * (size_t)rows * (size_t)a->n, rows, &wt[p], a, NULL, a->n};
    }
    moe_matmul_run(k, mm, products);
}
