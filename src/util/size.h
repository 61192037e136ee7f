/* size.h — sizes as people write them on a command line. */
#ifndef MOE_UTIL_SIZE_H
#define MOE_UTIL_SIZE_H

#include <stdint.h>

/* "6G", "512M", "1.5G", "4096", "25%" (of `whole`) into bytes; 0 or -1. */
int moe_parse_size(const char *s, uint64_t whole, uint64_t *out);

#endif
