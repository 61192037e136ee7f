/*
 * test_format.c — the writer and reader agree: metadata of every type,
 * tensors with their shapes, alignment (64 bytes; 4096 for the first tensor of
 * an expert), checksums, and that a writer freed without commit leaves
 * nothing behind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "format/format.h"

int main(void) {
    char dir[] = "/tmp/moe-test-format-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[256];
    snprintf(path, sizeof path, "%s/a.moe", dir);
    moe_error err = {{0}};

    moef_writer *w = moef_writer_new(path, &err);
    CHECK(w != NULL, "%s", err.msg);
    moef_meta_put_i32(w, "i", -7);
    moef_meta_put_u32(w, "u", 7);
    moef_meta_put_f32(w, "f", 0.25f);
    moef_meta_put_bool(w, "b", 1);
    moef_meta_put_str(w, "s", "hello");
    const uint8_t arr[3] = {1, 0, 1};
    moef_meta_put_u8_array(w, "a", arr, 3);
    float small[3] = {1, 2, 3}, big[100 * 3];
    for (int i = 0; i < 300; i++) big[i] = (float)i;
    int64_t d1[1] = {3}, d2[2] = {3, 100};
    int i0 = moef_writer_add(w, "small", MOE_F32, 1, d1, MOEF_TENSOR_ALIGN);
    int i1 = moef_writer_add(w, "big", MOE_F32, 2, d2, MOEF_EXPERT_ALIGN);
    CHECK(moef_writer_layout(w, &err) == 0, "%s", err.msg);
    CHECK(moef_writer_data(w, i1, big, &err) == 0, "%s", err.msg);
    CHECK(moef_writer_data(w, i0, small, &err) == 0, "%s", err.msg);
    CHECK(access(path, F_OK) != 0, "nothing at the destination before commit");
    CHECK(moef_writer_commit(w, &err) == 0, "%s", err.msg);
    moef_writer_free(w);

    moef_file f;
    CHECK(moef_open(&f, path, 0, &err) == 0, "%s", err.msg);
    int64_t v;
    double dv;
    CHECK(moef_meta_i64(&f, "i", &v, &err) == 0 && v == -7, "i32");
    CHECK(moef_meta_i64(&f, "u", &v, &err) == 0 && v == 7, "u32");
    CHECK(moef_meta_i64(&f, "b", &v, &err) == 0 && v == 1, "bool");
    CHECK(moef_meta_f64(&f, "f", &dv, &err) == 0 && dv == 0.25, "f32");
    CHECK(moef_meta_str(&f, "s") && !strcmp(moef_meta_str(&f, "s"), "hello"), "str");
    const moef_meta *m = moef_meta_find(&f, "a");
    CHECK(m && m->count == 3 && moef_meta_arr_i64(m, 2, &v) == 0 && v == 1, "array");
    CHECK(moef_meta_i64(&f, "missing", &v, &err) != 0 && strstr(err.msg, "missing"), "missing key named: %s", err.msg);
    CHECK(moef_meta_i64(&f, "s", &v, &err) != 0, "type mismatch is an error");
    const moef_tensor *t = moef_find(&f, "big");
    CHECK(t && t->n_dims == 2 && t->dims[0] == 3 && t->dims[1] == 100, "shape");
    CHECK(t && t->offset % MOEF_EXPERT_ALIGN == 0, "expert alignment");
    CHECK(t && !memcmp(moef_data(&f, t), big, sizeof big), "data");
    CHECK(t && moef_tensor_hash(&f, t) == t->hash, "hash");
    t = moef_find(&f, "small");
    CHECK(t && t->offset % MOEF_TENSOR_ALIGN == 0 && !memcmp(moef_data(&f, t), small, sizeof small), "small");
    CHECK(moef_find(&f, "nope") == NULL, "absent tensor");
    moef_close(&f);

    /* An abandoned writer leaves no file, temporary or final. */
    snprintf(path, sizeof path, "%s/b.moe", dir);
    w = moef_writer_new(path, &err);
    char temp[512];
    snprintf(temp, sizeof temp, "%s", moef_writer_temp_path(w));
    CHECK(access(temp, F_OK) == 0, "temporary file exists while writing");
    moef_writer_free(w);
    CHECK(access(temp, F_OK) != 0 && access(path, F_OK) != 0, "abandoned writer cleans up");

    snprintf(path, sizeof path, "%s/a.moe", dir);
    unlink(path);
    rmdir(dir);
    return check_done();
}
