/*
 * reader.c — opens a .moe file: maps it read-only and validates its structure
 * before anything trusts it: magic, version, sizes and bounds of every part,
 * the header checksum, every tensor's dtype, shape, size, alignment and range,
 * and that no two tensors overlap. Tensor checksums are left to
 * moef_tensor_hash (moe-cli info --verify): hashing gigabytes on every open
 * would defeat the mmap.
 */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "quant/quant.h"
#include "util/buf.h"
#include "util/error.h"

typedef struct header {
    uint32_t version, header_size;
    uint64_t meta_offset, meta_size, table_offset, table_size, n_tensors, data_offset, file_size, hash;
} header;

static int parse_header(moef_file *f, header *h, moe_error *err) {
    if (f->size < MOEF_HEADER_SIZE)
        return moe_fail(err, "%s: truncated: %llu bytes, smaller than the %d-byte header",
                        f->path, (unsigned long long)f->size, MOEF_HEADER_SIZE);
    if (memcmp(f->map, MOEF_MAGIC, 8))
        return moe_fail(err, "%s: not a .moe file (wrong magic bytes)", f->path);
    moe_cursor c = {f->map + 8, f->map + MOEF_HEADER_SIZE};
    moe_cur_u32(&c, &h->version);
    moe_cur_u32(&c, &h->header_size);
    uint64_t *fields[] = {&h->meta_offset, &h->meta_size, &h->table_offset, &h->table_size,
                          &h->n_tensors, &h->data_offset, &h->file_size, &h->hash};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) moe_cur_u64(&c, fields[i]);
    if (h->version != MOEF_VERSION)
        return moe_fail(err, "%s: unsupported .moe version %u (this build reads version %d)",
                        f->path, h->version, MOEF_VERSION);
    if (h->header_size != MOEF_HEADER_SIZE)
        return moe_fail(err, "%s: header size %u, expected %d", f->path, h->header_size, MOEF_HEADER_SIZE);
    if (h->file_size != f->size)
        return moe_fail(err, "%s: %s: the header says %llu bytes, the file has %llu",
                        f->path, f->size < h->file_size ? "truncated" : "trailing bytes",
                        (unsigned long long)h->file_size, (unsigned long long)f->size);
    if (h->meta_offset != MOEF_HEADER_SIZE || h->meta_size > f->size - h->meta_offset ||
        h->table_offset != h->meta_offset + h->meta_size || h->table_size > f->size - h->table_offset ||
        h->data_offset < h->table_offset + h->table_size || h->data_offset > f->size)
        return moe_fail(err, "%s: corrupt header: metadata, tensor table and data do not fit the file", f->path);

    XXH3_state_t *st = XXH3_createState();
    if (!st) return moe_fail(err, "%s: out of memory", f->path);
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, f->map, MOEF_HEADER_SIZE - 8);
    XXH3_64bits_update(st, f->map + h->meta_offset, h->meta_size + h->table_size);
    uint64_t hash = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (hash != h->hash)
        return moe_fail(err, "%s: header checksum mismatch: metadata or tensor table is corrupt", f->path);
    return 0;
}

static int meta_type_size(uint8_t t) {
    switch (t) {
    case MOEF_BOOL: return 1;
    case MOEF_U32: case MOEF_I32: case MOEF_F32: return 4;
    case MOEF_U64: case MOEF_F64: return 8;
    default: return 0;
    }
}

/* Skips one value of type t (not an array) and returns 0, or -1 if it does not fit. */
static int skip_value(moe_cursor *c, uint8_t t) {
    const uint8_t *s;
    if (t == MOEF_STR) {
        uint32_t n;
        return moe_cur_u32(c, &n) || moe_cur_span(c, n, &s) ? -1 : 0;
    }
    int n = meta_type_size(t);
    return n ? moe_cur_span(c, (size_t)n, &s) : -1;
}

static char *strndup_checked(const uint8_t *p, size_t n) {
    char *s = malloc(n + 1);
    if (s) { memcpy(s, p, n); s[n] = 0; }
    return s;
}

static int parse_meta(moef_file *f, const header *h, moe_error *err) {
    moe_cursor c = {f->map + h->meta_offset, f->map + h->meta_offset + h->meta_size};
    uint32_t n;
    if (moe_cur_u32(&c, &n) || n > h->meta_size / 4)
        return moe_fail(err, "%s: corrupt metadata count", f->path);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) return moe_fail(err, "%s: out of memory", f->path);
    for (uint32_t i = 0; i < n; i++) {
        moef_meta *m = &f->meta[i];
        uint16_t klen;
        const uint8_t *key, *start;
        if (moe_cur_u16(&c, &klen) || moe_cur_span(&c, klen, &key) || moe_cur_u8(&c, &m->type))
            return moe_fail(err, "%s: metadata entry %u is cut short", f->path, i);
        f->n_meta = (int)i + 1;
        if (!(m->key = strndup_checked(key, klen))) return moe_fail(err, "out of memory");
        m->count = 1;
        int bad = 0;
        if (m->type == MOEF_ARR) {
            bad = moe_cur_u8(&c, &m->elem_type) || moe_cur_u64(&c, &m->count) ||
                  m->elem_type == MOEF_ARR || m->elem_type >= MOEF_META_TYPE_COUNT;
            start = c.p;
            for (uint64_t j = 0; !bad && j < m->count; j++) bad = skip_value(&c, m->elem_type);
        } else {
            start = c.p;
            bad = m->type >= MOEF_META_TYPE_COUNT || skip_value(&c, m->type);
        }
        if (bad) return moe_fail(err, "%s: metadata \"%s\" is corrupt", f->path, m->key);
        m->payload = start;
        m->payload_len = (size_t)(c.p - start);
        if (m->type == MOEF_STR && !(m->str = strndup_checked(start + 4, m->payload_len - 4)))
            return moe_fail(err, "out of memory");
    }
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const moef_tensor *const *)a)->name, (*(const moef_tensor *const *)b)->name);
}
static int cmp_offset(const void *a, const void *b) {
    uint64_t x = (*(const moef_tensor *const *)a)->offset, y = (*(const moef_tensor *const *)b)->offset;
    return (x > y) - (x < y);
}

/* Sorts tensor pointers with cmp and checks neighbours with bad(a, b). */
static int check_sorted(moef_file *f, int (*cmp)(const void *, const void *),
                        const moef_tensor **order, moe_error *err) {
    int n = f->n_tensors;
    for (int i = 0; i < n; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)n, sizeof *order, cmp);
    for (int i = 0; i + 1 < n; i++) {
        const moef_tensor *a = order[i], *b = order[i + 1];
        if (cmp == cmp_offset && a->offset + a->size > b->offset)
            return moe_fail(err, "%s: tensors %s and %s overlap", f->path, a->name, b->name);
        if (cmp == cmp_name && !strcmp(a->name, b->name))
            return moe_fail(err, "%s: tensor %s appears twice", f->path, a->name);
    }
    return 0;
}

static int parse_table(moef_file *f, const header *h, moe_error *err) {
    moe_cursor c = {f->map + h->table_offset, f->map + h->table_offset + h->table_size};
    if (h->n_tensors > h->table_size / 16) return moe_fail(err, "%s: corrupt tensor count", f->path);
    int n = (int)h->n_tensors;
    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    f->by_name = calloc(n ? (size_t)n : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) return moe_fail(err, "%s: out of memory", f->path);
    for (int i = 0; i < n; i++) {
        moef_tensor *t = &f->tensors[i];
        uint16_t nlen;
        uint8_t dtype, ndims;
        const uint8_t *name;
        if (moe_cur_u16(&c, &nlen) || moe_cur_span(&c, nlen, &name) || moe_cur_u8(&c, &dtype) ||
            moe_cur_u8(&c, &ndims))
            return moe_fail(err, "%s: tensor table entry %d is cut short", f->path, i);
        f->n_tensors = i + 1;
        if (!(t->name = strndup_checked(name, nlen))) return moe_fail(err, "out of memory");
        if (dtype >= MOE_DTYPE_COUNT)
            return moe_fail(err, "%s: tensor %s has unknown dtype %u", f->path, t->name, dtype);
        if (ndims < 1 || ndims > MOEF_MAX_DIMS)
            return moe_fail(err, "%s: tensor %s has %u dimensions", f->path, t->name, ndims);
        t->dtype = dtype;
        t->n_dims = ndims;
        uint64_t elems = 1;
        for (int d = 0; d < ndims; d++) {
            uint64_t v;
            if (moe_cur_u64(&c, &v)) return moe_fail(err, "%s: tensor %s is cut short", f->path, t->name);
            if (v == 0 || v > ((uint64_t)1 << 40) || elems > ((uint64_t)1 << 40) / v)
                return moe_fail(err, "%s: tensor %s has an impossible shape", f->path, t->name);
            t->dims[d] = (int64_t)v;
            elems *= v;
        }
        for (int d = ndims; d < MOEF_MAX_DIMS; d++) t->dims[d] = 1;
        if (moe_cur_u64(&c, &t->offset) || moe_cur_u64(&c, &t->size) || moe_cur_u64(&c, &t->hash))
            return moe_fail(err, "%s: tensor %s is cut short", f->path, t->name);
        if (moe_dtype_is_quant(t->dtype) && ndims < 2)
            return moe_fail(err, "%s: tensor %s: a quantized tensor must be a matrix", f->path, t->name);
        if (t->size != moe_tensor_bytes(t->dtype, elems / (uint64_t)t->dims[0], (uint64_t)t->dims[0]))
            return moe_fail(err, "%s: tensor %s: %llu bytes do not match its shape and dtype %s",
                            f->path, t->name, (unsigned long long)t->size, moe_dtype_name(t->dtype));
        if (t->offset % MOEF_TENSOR_ALIGN || t->offset < h->data_offset || t->offset > f->size ||
            t->size > f->size - t->offset)
            return moe_fail(err, "%s: tensor %s lies outside the data section or is misaligned",
                            f->path, t->name);
    }
    if (c.p != c.end) return moe_fail(err, "%s: tensor table has trailing bytes", f->path);

    const moef_tensor **order = malloc((n ? (size_t)n : 1) * sizeof *order);
    if (!order) return moe_fail(err, "%s: out of memory", f->path);
    int rc = check_sorted(f, cmp_offset, order, err);
    if (!rc) rc = check_sorted(f, cmp_name, order, err);
    for (int i = 0; !rc && i < n; i++) f->by_name[i] = (int)(order[i] - f->tensors);
    free(order);
    return rc;
}

/* The whole file in anonymous memory (huge pages where the kernel gives
 * them): the weights then stream about 1.5x faster than from page-cache
 * pages on the machines we measured (bench/README.md, "--no-mmap"). */
static uint8_t *read_into_memory(int fd, uint64_t size, const char *path, moe_error *err) {
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        moe_fail(err, "%s: no memory to load %llu bytes (without --no-mmap the file is mapped instead)", path,
                 (unsigned long long)size);
        return NULL;
    }
    madvise(p, size, MADV_HUGEPAGE);
    for (uint64_t done = 0; done < size;) {
        const size_t chunk = size - done < (1u << 30) ? (size_t)(size - done) : (1u << 30);
        const ssize_t got = pread(fd, p + done, chunk, (off_t)done);
        if (got <= 0) {
            moe_fail(err, "%s: read failed at byte %llu: %s", path, (unsigned long long)done,
                     got < 0 ? strerror(errno) : "unexpected end of file");
            munmap(p, size);
            return NULL;
        }
        done += (uint64_t)got;
    }
    mprotect(p, size, PROT_READ);
    return p;
}

int moef_open(moef_file *f, const char *path, int load, moe_error *err) {
    *f = (moef_file){.path = path};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return moe_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return moe_fail(err, "%s: not a regular file", path);
    }
    f->size = (uint64_t)st.st_size;
    if (f->size == 0) {
        close(fd);
        return moe_fail(err, "%s: empty file", path);
    }
    if (load) {
        f->map = read_into_memory(fd, f->size, path, err);
        close(fd);
        if (!f->map) return -1;
    } else {
        f->map = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            return moe_fail(err, "%s: cannot map: %s", path, strerror(errno));
        }
        /* Ask for 2 MiB page-cache folios, mapped whole: with 4 KiB pages the
         * weights streamed ~25 % slower (one thread, OLMoE q4 decode from a
         * cold cache: 22 -> 27.8 t/s on Linux 6.18, where ext4 gives large
         * folios). Pages already cached in small folios stay as they are. */
        madvise(f->map, f->size, MADV_HUGEPAGE);
    }
    header h;
    if (parse_header(f, &h, err) || parse_meta(f, &h, err) || parse_table(f, &h, err)) {
        moef_close(f);
        return -1;
    }
    f->version = h.version;
    return 0;
}

void moef_close(moef_file *f) {
    if (f->map) munmap(f->map, f->size);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].str);
    }
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->meta);
    free(f->tensors);
    free(f->by_name);
    *f = (moef_file){0};
}

const moef_tensor *moef_find(const moef_file *f, const char *name) {
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const moef_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (!c) return t;
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

const void *moef_data(const moef_file *f, const moef_tensor *t) { return f->map + t->offset; }

uint64_t moef_tensor_hash(const moef_file *f, const moef_tensor *t) {
    return XXH3_64bits(f->map + t->offset, t->size);
}

const moef_meta *moef_meta_find(const moef_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key)) return &f->meta[i];
    return NULL;
}

static int64_t read_int(const uint8_t *p, uint8_t type) {
    moe_cursor c = {p, p + 8};
    uint8_t b; uint32_t u; uint64_t q;
    switch (type) {
    case MOEF_BOOL: moe_cur_u8(&c, &b); return b;
    case MOEF_U32: moe_cur_u32(&c, &u); return u;
    case MOEF_I32: moe_cur_u32(&c, &u); return (int32_t)u;
    default: moe_cur_u64(&c, &q); return (int64_t)q;
    }
}

int moef_meta_i64(const moef_file *f, const char *key, int64_t *v, moe_error *err) {
    const moef_meta *m = moef_meta_find(f, key);
    if (!m) return moe_fail(err, "%s: metadata \"%s\" is missing", f->path, key);
    if (m->type != MOEF_U32 && m->type != MOEF_I32 && m->type != MOEF_U64 && m->type != MOEF_BOOL)
        return moe_fail(err, "%s: metadata \"%s\" is not an integer", f->path, key);
    *v = read_int(m->payload, m->type);
    return 0;
}

int moef_meta_f64(const moef_file *f, const char *key, double *v, moe_error *err) {
    const moef_meta *m = moef_meta_find(f, key);
    if (!m) return moe_fail(err, "%s: metadata \"%s\" is missing", f->path, key);
    if (m->type == MOEF_F32) {
        float x;
        uint32_t u = (uint32_t)read_int(m->payload, MOEF_U32);
        memcpy(&x, &u, 4);
        *v = x;
    } else if (m->type == MOEF_F64) {
        uint64_t u = (uint64_t)read_int(m->payload, MOEF_U64);
        memcpy(v, &u, 8);
    } else {
        return moe_fail(err, "%s: metadata \"%s\" is not a number", f->path, key);
    }
    return 0;
}

const uint8_t *moef_meta_bytes(const moef_file *f, const char *key, size_t *len) {
    const moef_meta *m = moef_meta_find(f, key);
    if (!m || m->type != MOEF_STR) return NULL;
    *len = m->payload_len - 4;
    return m->payload + 4;
}

const char *moef_meta_str(const moef_file *f, const char *key) {
    const moef_meta *m = moef_meta_find(f, key);
    return m && m->type == MOEF_STR ? m->str : NULL;
}

int moef_meta_arr_i64(const moef_meta *m, uint64_t i, int64_t *v) {
    if (m->type != MOEF_ARR || i >= m->count) return -1;
    int sz = meta_type_size(m->elem_type);
    if (!sz || m->elem_type == MOEF_F32 || m->elem_type == MOEF_F64) return -1;
    *v = read_int(m->payload + i * (uint64_t)sz, m->elem_type);
    return 0;
}
