/*
 * safetensors.h — reads a Hugging Face checkpoint's weights: one
 * model.safetensors, or the shards named by model.safetensors.index.json.
 * Shards are memory-mapped; a tensor's data is handed out in place, so the
 * converter can stream one tensor at a time.
 */
#ifndef MOE_CONVERT_SAFETENSORS_H
#define MOE_CONVERT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "moe.h"

typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_F8_E4M3, ST_OTHER } st_dtype;

typedef struct st_tensor {
    char *name;
    char dtype_name[16];         /* as written in the header, e.g. "BF16" */
    st_dtype dtype;
    int n_dims;
    int64_t shape[8];            /* as in the header: slowest-varying first */
    const uint8_t *data;
    uint64_t size;
    int shard;
} st_tensor;

typedef struct st_shard {
    char *path;
    uint8_t *map;
    uint64_t size;
} st_shard;

typedef struct st_checkpoint {
    st_shard *shards;
    int n_shards;
    st_tensor *tensors;
    int n_tensors;
} st_checkpoint;

/* Opens DIR/model.safetensors.index.json if present, else DIR/model.safetensors.
 * Validates every header: JSON, dtypes, offsets inside the file, sizes against
 * shapes. Errors name the file and the tensor. */
int st_open(st_checkpoint *ck, const char *dir, moe_error *err);
void st_close(st_checkpoint *ck);
const st_tensor *st_find(const st_checkpoint *ck, const char *name);
const char *st_path(const st_checkpoint *ck, const st_tensor *t);
/* Tells the kernel the tensor's pages are no longer needed (keeps RSS low). */
void st_release(const st_checkpoint *ck, const st_tensor *t);

#endif
