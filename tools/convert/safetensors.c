/*
 * safetensors.c — see safetensors.h. The format: an 8-byte little-endian
 * header length N, N bytes of JSON mapping each tensor name to its dtype,
 * shape and [begin, end) byte offsets relative to the end of the header, then
 * the data.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "util/file.h"

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int elem_size(st_dtype t) { return t == ST_F32 ? 4 : t == ST_F8_E4M3 ? 1 : 2; }

static st_dtype parse_dtype(const char *s) {
    if (!strcmp(s, "F32")) return ST_F32;
    if (!strcmp(s, "F16")) return ST_F16;
    if (!strcmp(s, "BF16")) return ST_BF16;
    if (!strcmp(s, "F8_E4M3")) return ST_F8_E4M3;
    return ST_OTHER;
}

static int add_tensor(st_checkpoint *ck, int *cap) {
    if (ck->n_tensors == *cap) {
        int c = *cap ? *cap * 2 : 256;
        st_tensor *t = realloc(ck->tensors, (size_t)c * sizeof *t);
        if (!t) return -1;
        ck->tensors = t;
        *cap = c;
    }
    memset(&ck->tensors[ck->n_tensors], 0, sizeof *ck->tensors);
    return ck->n_tensors++;
}

static int open_shard(st_checkpoint *ck, int shard, int *cap, moe_error *err) {
    st_shard *s = &ck->shards[shard];
    int fd = open(s->path, O_RDONLY);
    if (fd < 0) return moe_fail(err, "%s: cannot open: %s", s->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return moe_fail(err, "%s: cannot stat: %s", s->path, strerror(errno));
    }
    s->size = (uint64_t)st.st_size;
    if (s->size < 8) {
        close(fd);
        return moe_fail(err, "%s: truncated safetensors file (%llu bytes)", s->path, (unsigned long long)s->size);
    }
    s->map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        return moe_fail(err, "%s: cannot map: %s", s->path, strerror(errno));
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)s->map[i] << (8 * i);
    if (hlen > s->size - 8)
        return moe_fail(err, "%s: corrupt safetensors header: length %llu exceeds the file", s->path,
                        (unsigned long long)hlen);
    cJSON *root = cJSON_ParseWithLength((const char *)s->map + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return moe_fail(err, "%s: corrupt safetensors header: not a JSON object", s->path);
    }
    const uint64_t data_start = 8 + hlen, data_len = s->size - data_start;
    int rc = 0;
    for (cJSON *e = root->child; e && !rc; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
            cJSON_GetArraySize(offs) != 2 || cJSON_GetArraySize(shape) > 8) {
            rc = moe_fail(err, "%s: corrupt safetensors header: entry for tensor %s is malformed", s->path, e->string);
            break;
        }
        int i = add_tensor(ck, cap);
        if (i < 0) { rc = moe_fail(err, "out of memory"); break; }
        st_tensor *t = &ck->tensors[i];
        t->name = strdup(e->string);
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
        t->dtype = parse_dtype(dt->valuestring);
        t->shard = shard;
        t->n_dims = cJSON_GetArraySize(shape);
        uint64_t elems = 1;
        for (int d = 0; d < t->n_dims; d++) {
            cJSON *v = cJSON_GetArrayItem(shape, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e12) {
                rc = moe_fail(err, "%s: corrupt safetensors header: tensor %s has a bad shape", s->path, t->name);
                break;
            }
            t->shape[d] = (int64_t)v->valuedouble;
            elems *= (uint64_t)t->shape[d];
        }
        if (rc) break;
        double b = cJSON_GetArrayItem(offs, 0)->valuedouble, en = cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (!(b >= 0 && en >= b && en <= (double)data_len)) {
            rc = moe_fail(err, "%s: corrupt safetensors header: tensor %s lies outside the file", s->path, t->name);
            break;
        }
        t->data = s->map + data_start + (uint64_t)b;
        t->size = (uint64_t)en - (uint64_t)b;
        if (t->dtype != ST_OTHER && t->size != elems * (uint64_t)elem_size(t->dtype))
            rc = moe_fail(err, "%s: corrupt safetensors header: tensor %s has %llu bytes, its shape and %s need %llu",
                          s->path, t->name, (unsigned long long)t->size, t->dtype_name,
                          (unsigned long long)(elems * (uint64_t)elem_size(t->dtype)));
    }
    cJSON_Delete(root);
    return rc;
}

static int add_shard(st_checkpoint *ck, char *path) {
    for (int i = 0; i < ck->n_shards; i++)
        if (!strcmp(ck->shards[i].path, path)) {
            free(path);
            return i;
        }
    st_shard *s = realloc(ck->shards, (size_t)(ck->n_shards + 1) * sizeof *s);
    if (!s) {
        free(path);
        return -1;
    }
    ck->shards = s;
    ck->shards[ck->n_shards] = (st_shard){.path = path};
    return ck->n_shards++;
}

/* Reads the index: the set of shards, and checks each named tensor is where
 * the index says once the shards are open. */
static int open_index(st_checkpoint *ck, const char *dir, const char *index_path, cJSON **map, moe_error *err) {
    size_t len;
    char *text = moe_read_file(index_path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return moe_fail(err, "%s: malformed index: no \"weight_map\" object", index_path);
    }
    for (cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
            cJSON_Delete(root);
            return moe_fail(err, "%s: malformed index: entry for %s is not a shard file name", index_path, e->string);
        }
        char *p = path_join(dir, e->valuestring);
        if (!p || add_shard(ck, p) < 0) {
            cJSON_Delete(root);
            return moe_fail(err, "out of memory");
        }
        if (access(ck->shards[ck->n_shards - 1].path, R_OK)) {
            moe_fail(err, "%s: shard %s (holding tensor %s) is missing", index_path, e->valuestring, e->string);
            cJSON_Delete(root);
            return -1;
        }
    }
    *map = root;
    return 0;
}

int st_open(st_checkpoint *ck, const char *dir, moe_error *err) {
    *ck = (st_checkpoint){0};
    char *index_path = path_join(dir, "model.safetensors.index.json");
    if (!index_path) return moe_fail(err, "out of memory");
    cJSON *index = NULL;
    int rc = 0;
    if (access(index_path, F_OK) == 0) {
        rc = open_index(ck, dir, index_path, &index, err);
    } else {
        char *single = path_join(dir, "model.safetensors");
        if (!single || add_shard(ck, single) < 0) rc = moe_fail(err, "out of memory");
        else if (access(ck->shards[0].path, R_OK))
            rc = moe_fail(err, "%s: no model.safetensors or model.safetensors.index.json found", dir);
    }
    int cap = 0;
    for (int i = 0; !rc && i < ck->n_shards; i++) rc = open_shard(ck, i, &cap, err);
    if (!rc) {
        qsort(ck->tensors, (size_t)ck->n_tensors, sizeof *ck->tensors, cmp_name);
        for (int i = 0; !rc && i + 1 < ck->n_tensors; i++)
            if (!strcmp(ck->tensors[i].name, ck->tensors[i + 1].name))
                rc = moe_fail(err, "%s and %s both contain tensor %s", st_path(ck, &ck->tensors[i]),
                              st_path(ck, &ck->tensors[i + 1]), ck->tensors[i].name);
    }
    if (!rc && index) {
        cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
        for (cJSON *e = wm->child; e && !rc; e = e->next) {
            const st_tensor *t = st_find(ck, e->string);
            const char *shard = t ? strrchr(st_path(ck, t), '/') : NULL;
            if (!t || strcmp(shard ? shard + 1 : st_path(ck, t), e->valuestring)) rc = moe_fail(err, "%s: index names tensor %s in %s, but that shard does not contain it",
                                  index_path, e->string, e->valuestring);
        }
    }
    cJSON_Delete(index);
    free(index_path);
    if (rc) st_close(ck);
    return rc;
}

void st_close(st_checkpoint *ck) {
    for (int i = 0; i < ck->n_shards; i++) {
        if (ck->shards[i].map) munmap(ck->shards[i].map, ck->shards[i].size);
        free(ck->shards[i].path);
    }
    for (int i = 0; i < ck->n_tensors; i++) free(ck->tensors[i].name);
    free(ck->shards);
    free(ck->tensors);
    *ck = (st_checkpoint){0};
}

const st_tensor *st_find(const st_checkpoint *ck, const char *name) {
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, ck->tensors, (size_t)ck->n_tensors, sizeof key, cmp_name);
}

const char *st_path(const st_checkpoint *ck, const st_tensor *t) { return ck->shards[t->shard].path; }

void st_release(const st_checkpoint *ck, const st_tensor *t) {
    const st_shard *s = &ck->shards[t->shard];
    const long page = sysconf(_SC_PAGESIZE);
    uintptr_t b = (uintptr_t)t->data, e = b + t->size;
    uintptr_t base = (uintptr_t)s->map;
    b = base + (b - base + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    e = base + (e - base) / (uintptr_t)page * (uintptr_t)page;
    if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
}
