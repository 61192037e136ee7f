/*
 * huge.h — memory in 2 MiB pages where the kernel gives them: transparent
 * huge pages in madvise mode, as on Debian, leave malloc'd memory in 4 KiB
 * pages, and streaming through those costs a page walk every 4 KiB (nested
 * under a VM's hypervisor). The KV cache and the benchmarks' buffers use it.
 */
#ifndef MOE_UTIL_HUGE_H
#define MOE_UTIL_HUGE_H

#include <stddef.h>

/* `bytes` rounded up to 2 MiB, aligned to 2 MiB and advised into huge
 * pages; NULL if out of memory. free() it. */
void *moe_alloc_huge(size_t bytes);

#endif
