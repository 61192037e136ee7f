/*
 * test_kernels.c — every matmul path against a double-precision reference
 * computed from the same (decoded) weights, on shapes that are not multiples
 * of any block or vector width: 1, 3, 17 and 40 tokens; odd row counts; column
 * counts around the widening chunk.
 */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "kernels/kernels.h"
#include "util/half.h"

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static void test_shape(moe_dtype dt, int rows, int cols, int n_tok, unsigned seed) {
    size_t n = (size_t)rows * cols;
    void *wd = malloc(n * 4);
    float *wf = malloc(n * 4), *x = malloc((size_t)n_tok * cols * 4), *y = malloc((size_t)n_tok * rows * 4);
    for (size_t i = 0; i < n; i++) {
        float v = rnd(&seed);
        if (dt == MOE_F32) ((float *)wd)[i] = wf[i] = v;
        else if (dt == MOE_F16) wf[i] = moe_f16_to_f32(((uint16_t *)wd)[i] = moe_f32_to_f16(v));
        else wf[i] = moe_bf16_to_f32(((uint16_t *)wd)[i] = moe_f32_to_bf16(v));
    }
    for (size_t i = 0; i < (size_t)n_tok * cols; i++) x[i] = rnd(&seed);
    moe_weight w = {wd, dt, rows, cols};
    moe_matmul(y, &w, x, n_tok);
    double worst = 0;
    for (int t = 0; t < n_tok; t++)
        for (int r = 0; r < rows; r++) {
            double ref = 0, mag = 0;
            for (int c = 0; c < cols; c++) {
                ref += (double)wf[(size_t)r * cols + c] * x[(size_t)t * cols + c];
                mag += fabs((double)wf[(size_t)r * cols + c] * x[(size_t)t * cols + c]);
            }
            double e = fabs(y[(size_t)t * rows + r] - ref) / (mag + 1e-30);
            worst = e > worst ? e : worst;
        }
    CHECK(worst < 1e-6, "%s rows=%d cols=%d tokens=%d: relative error %g", moe_dtype_name(dt), rows, cols, n_tok, worst);

    /* moe_weight_row decodes exactly. */
    float *row = malloc((size_t)cols * 4);
    moe_weight_row(&w, rows - 1, row);
    int same = 1;
    for (int c = 0; c < cols; c++) same &= row[c] == wf[(size_t)(rows - 1) * cols + c];
    CHECK(same, "%s weight_row cols=%d", moe_dtype_name(dt), cols);
    free(row);
    free(wd); free(wf); free(x); free(y);
}

int main(void) {
    const int rows[] = {1, 7, 37};
    const int cols[] = {1, 5, 64, 255, 257, 300};
    const int toks[] = {1, 3, 17, 40};
    unsigned seed = 1;
    for (int d = 0; d < MOE_DTYPE_COUNT; d++)
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
            for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
                for (size_t t = 0; t < sizeof toks / sizeof *toks; t++)
                    test_shape((moe_dtype)d, rows[r], cols[c], toks[t], seed++);

    /* rmsnorm and swiglu against their definitions. */
    float x[5] = {1, -2, 3, 0.5f, -0.25f}, wt[5] = {1, 0.5f, 2, 1, -1}, o[5];
    moe_rmsnorm(o, x, wt, 5, 1e-5f);
    double ms = 0;
    for (int i = 0; i < 5; i++) ms += x[i] * x[i] / 5.0;
    CHECK(fabs(o[2] - 3 * 2 / sqrt(ms + 1e-5)) < 1e-5, "rmsnorm %g", o[2]);
    float g[2] = {1.5f, -3}, u[2] = {2, 0.5f};
    moe_swiglu(g, u, 2);
    CHECK(fabs(g[0] - 1.5 / (1 + exp(-1.5)) * 2) < 1e-6 && fabs(g[1] - (-3 / (1 + exp(3.0))) * 0.5) < 1e-6, "swiglu");
    return check_done();
}
