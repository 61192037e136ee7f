/* file.c — see file.h. */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

char *moe_read_file(const char *path, size_t *len, moe_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        moe_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                moe_fail(err, "%s: out of memory", path);
                return NULL;
            }
            buf = b;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f) ? errno : 0;
    fclose(f);
    if (bad) {
        free(buf);
        moe_fail(err, "%s: cannot read: %s", path, strerror(bad));
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}
