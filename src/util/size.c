/* size.c — see size.h. K, M, G, T are powers of 1024. */
#include "size.h"

#include <math.h>
#include <stdlib.h>

int moe_parse_size(const char *s, uint64_t whole, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v)) return -1;
    double mult = 1;
    switch (*end) {
    case '%': mult = (double)whole / 100.0; break;
    case 'k': case 'K': mult = 1024.0; break;
    case 'm': case 'M': mult = 1024.0 * 1024; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
    case 0: break;
    default: return -1;
    }
    if (*end && end[1] && !((end[1] == 'B' || end[1] == 'i') && (end[2] == 0 || (end[1] == 'i' && end[2] == 'B' && !end[3]))))
        return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}
