/* file.h — small checked file helpers shared by the tools. */
#ifndef MOE_UTIL_FILE_H
#define MOE_UTIL_FILE_H

#include <stddef.h>

#include "moe.h"

/* Reads a whole file into a NUL-terminated buffer the caller frees. */
char *moe_read_file(const char *path, size_t *len, moe_error *err);

#endif
