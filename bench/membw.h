/* membw.h — the machine's memory read bandwidth, measured the way decoding
 * reads weights: every thread streams its share of a buffer far larger than
 * the caches. */
#ifndef MOE_BENCH_MEMBW_H
#define MOE_BENCH_MEMBW_H

/* Best of `reps` passes over `bytes` bytes with n_threads threads, in GB/s
 * (1e9 bytes per second); 0 if the buffer cannot be allocated. */
double moe_measure_read_bandwidth(size_t bytes, int n_threads, int reps);

#endif
