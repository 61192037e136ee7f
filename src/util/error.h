/*
 * error.h — how library code reports failure: it fills a moe_error with one
 * sentence naming what was wrong and returns -1 (or NULL). Only the programs
 * print. A NULL moe_error is allowed and means "caller does not care".
 */
#ifndef MOE_UTIL_ERROR_H
#define MOE_UTIL_ERROR_H

#include "moe.h"

#if defined(__GNUC__)
#define MOE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MOE_PRINTF(a, b)
#endif

/* Sets err->msg and returns -1, so that `return moe_fail(err, ...)` reads well. */
int moe_fail(moe_error *err, const char *fmt, ...) MOE_PRINTF(2, 3);

/* Prefixes the existing message with more context ("reading x: " + old). */
int moe_fail_prefix(moe_error *err, const char *fmt, ...) MOE_PRINTF(2, 3);

#endif
