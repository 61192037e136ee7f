/*
 * format.h — the .moe file: constants of the layout, the reader (open, validate,
 * look up tensors and metadata) and the writer used by moe-convert.
 * The layout is specified in FORMAT.md beside this file; keep the two in step.
 */
#ifndef MOE_FORMAT_H
#define MOE_FORMAT_H

#include <stdint.h>
#include <stddef.h>

#include "moe.h"

#define MOEF_MAGIC "moe\0\r\n\x1a\n"   /* 8 bytes; catches text-mode mangling like PNG's */
#define MOEF_VERSION 1
#define MOEF_HEADER_SIZE 80
#define MOEF_TENSOR_ALIGN 64
#define MOEF_EXPERT_ALIGN 4096
#define MOEF_MAX_DIMS 4

enum moef_meta_type {
    MOEF_U32 = 0, MOEF_I32 = 1, MOEF_F32 = 2, MOEF_U64 = 3, MOEF_F64 = 4,
    MOEF_BOOL = 5, MOEF_STR = 6, MOEF_ARR = 7, MOEF_META_TYPE_COUNT
};


/* ---- reader ---- */

typedef struct moef_meta {
    char *key;
    uint8_t type, elem_type;     /* elem_type only for MOEF_ARR */
    uint64_t count;              /* array length; 1 otherwise */
    const uint8_t *payload;      /* inside the mapping */
    size_t payload_len;
    char *str;                   /* NUL-terminated copy for MOEF_STR */
} moef_meta;

typedef struct moef_tensor {
    char *name;
    moe_dtype dtype;
    int n_dims;
    int64_t dims[MOEF_MAX_DIMS]; /* dims[0] varies fastest */
    uint64_t offset, size, hash; /* offset from the start of the file */
} moef_tensor;

typedef struct moef_file {
    const char *path;            /* as given to moef_open, for messages */
    uint8_t *map;
    uint64_t size;
    uint32_t version;
    moef_meta *meta;
    int n_meta;
    moef_tensor *tensors;
    int n_tensors;
    int *by_name;                /* tensor indices sorted by name */
} moef_file;

/* Maps the file and validates its whole structure; returns 0 or -1 with err.
 * With load set, the file is read into anonymous memory instead of mapped
 * (see moe_model_params.no_mmap). */
int moef_open(moef_file *f, const char *path, int load, moe_error *err);
void moef_close(moef_file *f);

const moef_tensor *moef_find(const moef_file *f, const char *name);
const void *moef_data(const moef_file *f, const moef_tensor *t);
uint64_t moef_tensor_hash(const moef_file *f, const moef_tensor *t);

const moef_meta *moef_meta_find(const moef_file *f, const char *key);
/* Typed getters: 0 on success, -1 with err naming the key when the key is
 * missing or of another type. Integers of any width convert when they fit. */
int moef_meta_i64(const moef_file *f, const char *key, int64_t *v, moe_error *err);
int moef_meta_f64(const moef_file *f, const char *key, double *v, moe_error *err);
const char *moef_meta_str(const moef_file *f, const char *key);
/* The bytes of a string value in place (it may hold any bytes, NUL included). */
const uint8_t *moef_meta_bytes(const moef_file *f, const char *key, size_t *len);
/* Element i of an integer array (u8 / u32 / i32 / u64 / bool elements). */
int moef_meta_arr_i64(const moef_meta *m, uint64_t i, int64_t *v);

/* ---- writer ---- */

typedef struct moef_writer moef_writer;

/* Output goes to a temporary file beside path; nothing appears at path until
 * moef_writer_commit succeeds. */
moef_writer *moef_writer_new(const char *path, moe_error *err);
/* Path of the temporary file (for a signal handler that must remove it). */
const char *moef_writer_temp_path(const moef_writer *w);

void moef_meta_put_u32(moef_writer *w, const char *key, uint32_t v);
void moef_meta_put_i32(moef_writer *w, const char *key, int32_t v);
void moef_meta_put_f32(moef_writer *w, const char *key, float v);
void moef_meta_put_bool(moef_writer *w, const char *key, int v);
void moef_meta_put_str(moef_writer *w, const char *key, const char *v);
void moef_meta_put_bytes(moef_writer *w, const char *key, const void *v, size_t n);
void moef_meta_put_u8_array(moef_writer *w, const char *key, const uint8_t *v, uint64_t n);

/* Plans one tensor; returns its index. align is MOEF_TENSOR_ALIGN, or
 * MOEF_EXPERT_ALIGN for the first tensor of an expert's byte range. */
int moef_writer_add(moef_writer *w, const char *name, moe_dtype dtype, int n_dims,
                    const int64_t *dims, uint64_t align);
/* Fixes the layout and writes header, metadata and table (hashes follow). */
int moef_writer_layout(moef_writer *w, moe_error *err);
/* Writes the data of planned tensor i (exactly its size in bytes). */
int moef_writer_data(moef_writer *w, int i, const void *data, moe_error *err);
/* Writes the final table and header, fsyncs, renames into place. */
int moef_writer_commit(moef_writer *w, moe_error *err);
/* Removes the temporary file (if not committed) and frees the writer. */
void moef_writer_free(moef_writer *w);

#endif
