/*
 * membw.c — see membw.h. The reading loop keeps four independent
 * accumulators of 32-byte loads (AVX2 where the CPU has it, 16-byte SSE2
 * otherwise) so that the loads, not the adds, are the limit; the result is
 * folded into a value the compiler must compute.
 */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/huge.h"
#include "membw.h"

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v, _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
    return v[0] + v[1] + v[2] + v[3];
}
#endif

static uint64_t read_plain(const uint8_t *p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    const uint64_t *q = (const uint64_t *)p;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        a += q[i];
        b += q[i + 1];
        c += q[i + 2];
        d += q[i + 3];
    }
    return a + b + c + d;
}

static uint64_t read_span(const uint8_t *p, size_t n) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) return read_avx2(p, n);
#endif
    return read_plain(p, n);
}

double moe_measure_read_bandwidth(size_t bytes, int n_threads, int reps) {
    if (n_threads < 1) n_threads = omp_get_max_threads();
    bytes = bytes / (4096 * (size_t)n_threads) * (4096 * (size_t)n_threads);
    /* In 2 MiB pages, as the weights are: in 4 KiB pages each page costs a
     * walk, nested under a VM's hypervisor, and this VM read 3-23 % less on
     * one thread and 6-10 % on two, which overstated every bw %. */
    uint8_t *buf = moe_alloc_huge(bytes);
    if (!buf) return 0;
    /* Distinct values, written by the threads that will read them (first touch). */
    #pragma omp parallel for schedule(static) num_threads(n_threads)
    for (size_t i = 0; i < bytes / 8; i++) ((uint64_t *)buf)[i] = i * 0x9e3779b97f4a7c15ull;
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t sum = 0;
        const double t0 = omp_get_wtime();
        #pragma omp parallel num_threads(n_threads) reduction(+ : sum)
        {
            const int nt = omp_get_num_threads(), id = omp_get_thread_num();
            const size_t chunk = bytes / (size_t)nt;
            sum += read_span(buf + (size_t)id * chunk, chunk);
        }
        const double dt = omp_get_wtime() - t0;
        sink += sum;
        const double gbs = (double)bytes / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    (void)sink;
    free(buf);
    return best;
}
