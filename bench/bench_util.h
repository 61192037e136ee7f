/* bench_util.h — what the benchmarks share: a clock and one decode-style
 * call of the threaded driver. Their buffers come from moe_alloc_huge
 * (util/huge.h), in the page size a loaded model's weights have: in 4 KiB
 * pages this VM streamed a quarter slower, and software prefetch changed
 * its worth. */
#ifndef MOE_BENCH_UTIL_H
#define MOE_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Seconds on a monotonic clock. */
double bench_now(void);

/* Call number `call` of a decode-style run: `products` products of one
 * rows x cols weight of type dt, each on the next of `copies` copies `bytes`
 * apart at w (so the weights come from memory), times the activations a,
 * into y (products x rows x a->n), through moe_matmul_run. At most
 * BENCH_MAX_PRODUCTS products. */
#define BENCH_MAX_PRODUCTS 64
void bench_decode_call(const moe_kernels *k, moe_dtype dt, const uint8_t *w, size_t bytes, int copies, int64_t rows,
                       int64_t cols, const moe_act *a, float *y, int products, long call);

#endif
