/*
 * writer.c — writes a .moe file atomically. The caller plans every tensor
 * first (name, dtype, shape), so the layout is fixed before any data is
 * written; data then streams in one tensor at a time with pwrite and is hashed
 * on the way. Everything goes to a temporary file in the destination folder,
 * which is fsynced and renamed over the destination only when complete: an
 * interrupted or failed conversion never leaves a partial file at the
 * destination and never harms one that was there.
 */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "quant/quant.h"
#include "util/buf.h"
#include "util/error.h"

typedef struct planned {
    char *name;
    moe_dtype dtype;
    int n_dims;
    int64_t dims[MOEF_MAX_DIMS];
    uint64_t align, offset, size, hash;
    int written;
} planned;

struct moef_writer {
    char *path, *temp_path;
    int fd;
    moe_buf meta;
    uint32_t n_meta;
    planned *tensors;
    int n_tensors, cap_tensors;
    uint64_t meta_size, table_size, data_offset, file_size;
    int laid_out, committed;
};

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

moef_writer *moef_writer_new(const char *path, moe_error *err) {
    moef_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(path);
    if (!w || !(w->path = strdup(path)) || !(w->temp_path = malloc(n + 16))) {
        moef_writer_free(w);
        moe_fail(err, "out of memory");
        return NULL;
    }
    w->fd = -1;
    snprintf(w->temp_path, n + 16, "%s.tmp.XXXXXX", path);
    w->fd = mkstemp(w->temp_path);
    if (w->fd < 0) {
        moe_fail(err, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        w->temp_path[0] = 0;
        moef_writer_free(w);
        return NULL;
    }
    fchmod(w->fd, 0644);
    return w;
}

const char *moef_writer_temp_path(const moef_writer *w) { return w->temp_path; }

static void meta_key(moef_writer *w, const char *key, uint8_t type) {
    size_t n = strlen(key);
    moe_buf_u16(&w->meta, (uint16_t)n);
    moe_buf_put(&w->meta, key, n);
    moe_buf_u8(&w->meta, type);
    w->n_meta++;
}

void moef_meta_put_u32(moef_writer *w, const char *key, uint32_t v) { meta_key(w, key, MOEF_U32); moe_buf_u32(&w->meta, v); }
void moef_meta_put_i32(moef_writer *w, const char *key, int32_t v) { meta_key(w, key, MOEF_I32); moe_buf_u32(&w->meta, (uint32_t)v); }
void moef_meta_put_bool(moef_writer *w, const char *key, int v) { meta_key(w, key, MOEF_BOOL); moe_buf_u8(&w->meta, v != 0); }

void moef_meta_put_f32(moef_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    meta_key(w, key, MOEF_F32);
    moe_buf_u32(&w->meta, u);
}

void moef_meta_put_bytes(moef_writer *w, const char *key, const void *v, size_t n) {
    meta_key(w, key, MOEF_STR);
    moe_buf_u32(&w->meta, (uint32_t)n);
    moe_buf_put(&w->meta, v, n);
}

void moef_meta_put_str(moef_writer *w, const char *key, const char *v) { moef_meta_put_bytes(w, key, v, strlen(v)); }

void moef_meta_put_u8_array(moef_writer *w, const char *key, const uint8_t *v, uint64_t n) {
    meta_key(w, key, MOEF_ARR);
    moe_buf_u8(&w->meta, MOEF_BOOL);
    moe_buf_u64(&w->meta, n);
    moe_buf_put(&w->meta, v, n);
}

int moef_writer_add(moef_writer *w, const char *name, moe_dtype dtype, int n_dims,
                    const int64_t *dims, uint64_t align) {
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        planned *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) return -1;
        w->tensors = t;
        w->cap_tensors = cap;
    }
    planned *t = &w->tensors[w->n_tensors];
    *t = (planned){.name = strdup(name), .dtype = dtype, .n_dims = n_dims, .align = align};
    if (!t->name) return -1;
    uint64_t elems = 1;
    for (int d = 0; d < n_dims; d++) elems *= (uint64_t)(t->dims[d] = dims[d]);
    t->size = moe_tensor_bytes(dtype, elems / (uint64_t)dims[0], (uint64_t)dims[0]);
    return w->n_tensors++;
}

static void write_table(const moef_writer *w, moe_buf *b) {
    for (int i = 0; i < w->n_tensors; i++) {
        const planned *t = &w->tensors[i];
        size_t n = strlen(t->name);
        moe_buf_u16(b, (uint16_t)n);
        moe_buf_put(b, t->name, n);
        moe_buf_u8(b, (uint8_t)t->dtype);
        moe_buf_u8(b, (uint8_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) moe_buf_u64(b, (uint64_t)t->dims[d]);
        moe_buf_u64(b, t->offset);
        moe_buf_u64(b, t->size);
        moe_buf_u64(b, t->hash);
    }
}

static int pwrite_all(int fd, const void *p, uint64_t n, uint64_t off) {
    const uint8_t *q = p;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t k = pwrite(fd, q, chunk, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        q += k; off += (uint64_t)k; n -= (uint64_t)k;
    }
    return 0;
}

/* Writes the header, metadata and table at the front of the file. Called
 * twice: once at layout (hashes still zero), once at commit. */
static int write_front(moef_writer *w, moe_error *err) {
    moe_buf front = {0};
    moe_buf_put(&front, MOEF_MAGIC, 8);
    moe_buf_u32(&front, MOEF_VERSION);
    moe_buf_u32(&front, MOEF_HEADER_SIZE);
    moe_buf_u64(&front, MOEF_HEADER_SIZE);
    moe_buf_u64(&front, w->meta_size);
    moe_buf_u64(&front, MOEF_HEADER_SIZE + w->meta_size);
    moe_buf_u64(&front, w->table_size);
    moe_buf_u64(&front, (uint64_t)w->n_tensors);
    moe_buf_u64(&front, w->data_offset);
    moe_buf_u64(&front, w->file_size);
    moe_buf_u64(&front, 0); /* header hash, filled below */
    moe_buf_u32(&front, w->n_meta);
    moe_buf_put(&front, w->meta.data, w->meta.len);
    write_table(w, &front);
    int rc = 0;
    if (front.oom || w->meta.oom) {
        rc = moe_fail(err, "out of memory");
    } else {
        XXH3_state_t *st = XXH3_createState();
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, front.data, MOEF_HEADER_SIZE - 8);
        XXH3_64bits_update(st, front.data + MOEF_HEADER_SIZE, front.len - MOEF_HEADER_SIZE);
        uint64_t h = XXH3_64bits_digest(st);
        XXH3_freeState(st);
        for (int i = 0; i < 8; i++) front.data[MOEF_HEADER_SIZE - 8 + i] = (uint8_t)(h >> (8 * i));
        if (pwrite_all(w->fd, front.data, front.len, 0))
            rc = moe_fail(err, "%s: write failed: %s", w->path, strerror(errno));
    }
    moe_buf_free(&front);
    return rc;
}

int moef_writer_layout(moef_writer *w, moe_error *err) {
    moe_buf table = {0};
    write_table(w, &table);
    if (table.oom) return moe_fail(err, "out of memory");
    w->table_size = table.len;
    moe_buf_free(&table);
    w->meta_size = 4 + w->meta.len;
    w->data_offset = align_up(MOEF_HEADER_SIZE + w->meta_size + w->table_size, MOEF_EXPERT_ALIGN);
    uint64_t off = w->data_offset;
    for (int i = 0; i < w->n_tensors; i++) {
        off = align_up(off, w->tensors[i].align);
        w->tensors[i].offset = off;
        off += w->tensors[i].size;
    }
    w->file_size = off;
    w->laid_out = 1;
    if (ftruncate(w->fd, (off_t)w->file_size))
        return moe_fail(err, "%s: cannot size the file to %llu bytes: %s", w->path,
                        (unsigned long long)w->file_size, strerror(errno));
    return write_front(w, err);
}

int moef_writer_data(moef_writer *w, int i, const void *data, moe_error *err) {
    planned *t = &w->tensors[i];
    t->hash = XXH3_64bits(data, t->size);
    if (pwrite_all(w->fd, data, t->size, t->offset))
        return moe_fail(err, "%s: writing tensor %s failed: %s", w->path, t->name, strerror(errno));
    t->written = 1;
    return 0;
}

int moef_writer_commit(moef_writer *w, moe_error *err) {
    for (int i = 0; i < w->n_tensors; i++)
        if (!w->tensors[i].written)
            return moe_fail(err, "%s: internal error: tensor %s was never written", w->path, w->tensors[i].name);
    if (write_front(w, err)) return -1;
    if (fsync(w->fd)) return moe_fail(err, "%s: fsync failed: %s", w->path, strerror(errno));
    /* The written pages sit in the page cache in small folios, and a model
     * mapped from those decoded up to 10x slower (DeepSeek-V2-Lite q4 on this
     * project's VM: 2.8 against 23.8 t/s once the file was read back: reads
     * fill the cache in 2 MiB folios, see moef_open). Now that they are on
     * disk, let them go. */
    posix_fadvise(w->fd, 0, 0, POSIX_FADV_DONTNEED);
    if (rename(w->temp_path, w->path))
        return moe_fail(err, "%s: cannot rename the finished file into place: %s", w->path, strerror(errno));
    w->committed = 1;
    /* Make the rename itself durable. */
    char *dir_copy = strdup(w->path);
    if (dir_copy) {
        int dfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir_copy);
    }
    return 0;
}

void moef_writer_free(moef_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (!w->committed && w->temp_path && w->temp_path[0]) unlink(w->temp_path);
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    moe_buf_free(&w->meta);
    free(w->path);
    free(w->temp_path);
    free(w);
}
